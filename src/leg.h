/*
 * One leg of a session: a socket toward the client or the upstream, its
 * libev watchers, its transport (plain or TLS, swapped at STARTTLS), its
 * output queue with backpressure on the peer leg, and the per-leg state the
 * login code keeps (parser, login state). All I/O is reduced to the data
 * and event callbacks of struct leg_ops.
 */
#ifndef XI_LEG_H
#define XI_LEG_H

#include <ev.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "bounds.h"
#include "buf.h"

enum leg_event {
	LEG_EV_CONNECTED = 0, /* non-blocking connect finished */
	LEG_EV_TLS_DONE,      /* handshake finished */
	LEG_EV_TLS_ERROR,     /* handshake failed; why says how */
	LEG_EV_EOF,           /* the peer closed its side */
	LEG_EV_ERROR,         /* a socket error; why says which */
	LEG_EV_CLOSED,        /* leg_close() or leg_abort() finished: fd closed */
	LEG_EV_TLS_PAUSED,    /* the ClientHello callback paused the handshake */
};

enum leg_io {
	LEG_IO_IDLE = 0,   /* no socket yet */
	LEG_IO_CONNECTING, /* waiting for connect(2) */
	LEG_IO_PEEK_TLS,   /* skipping whitespace before a ClientHello */
	LEG_IO_HANDSHAKE,  /* TLS handshake running */
	LEG_IO_OPEN,       /* exchanging data */
	LEG_IO_CLOSING,    /* flushing output before shutdown */
	LEG_IO_DRAINING,   /* shut down for writing, reading until EOF */
	LEG_IO_CLOSED,
};

struct leg;

struct leg_ops {
	/* Bytes arrived; the data is valid only during the call. */
	void (*data)(struct leg *l, const char *data, size_t len);
	void (*event)(struct leg *l, enum leg_event ev, const char *why);
};

struct leg_transport;

struct leg {
	/* I/O, owned by leg.c */
	struct ev_loop *loop;
	const struct leg_ops *ops;
	const struct leg_transport *tr;
	struct leg *peer;
	void *owner; /* the session */
	int fd;
	ev_io rio, wio;
	SSL *ssl;
	enum leg_io io;
	bool reading; /* the login wants input */
	bool paused;  /* the peer's output is above the high mark */
	bool want_read_for_write, want_write_for_read, hs_want_write;
	bool hs_paused;       /* until leg_resume_tls() */
	bool tls_after_flush; /* TLS starts once the output is flushed */
	bool no_drain;        /* close right after the flush (process stopping) */
	bool tls_skip_ws;
	bool quickack; /* ACK what arrives at once (see leg_quickack) */
	/* on the list of legs flushed before the loop polls (leg_send) */
	struct leg *flush_next, **flush_pprev;
	struct buf out;
	uint64_t bytes_in, bytes_out;
};

/* Sets up a leg on fd (-1: none yet). */
void leg_init(struct leg *l, struct ev_loop *loop, const struct leg_ops *ops, void *owner,
              struct leg *peer, int fd);
/* Starts watching a connected or accepted socket. */
void leg_start(struct leg *l);
/* Starts a non-blocking connect of a fresh socket fd. Returns 0 or -1
 * with errno set (the caller reports). */
int leg_connect(struct leg *l, int fd, const struct sockaddr *sa, socklen_t salen);
/* Runs a TLS handshake with ssl (which now belongs to the leg). With
 * skip_ws, leading whitespace before the ClientHello is dropped. */
void leg_start_tls(struct leg *l, SSL *ssl, bool skip_ws);
/* Goes on with a handshake paused by LEG_EV_TLS_PAUSED, from the loop
 * (never inside the caller's call). */
void leg_resume_tls(struct leg *l);
/* Queues bytes for the peer of this leg's socket. Returns 0 or -1. */
int leg_send(struct leg *l, const char *data, size_t len);
/* As leg_send, but what nothing is queued ahead of is written at once;
 * a write error is reported (LEG_EV_ERROR) before it returns. Only
 * outside parser callbacks. */
int leg_send_now(struct leg *l, const char *data, size_t len);
/* Reading wanted or not (the login stops it while it waits). */
void leg_set_reading(struct leg *l, bool on);
/* Flushes what is queued, then shuts the leg down; CLOSED follows. */
void leg_close(struct leg *l);
/* The process is stopping: flush, but do not wait for the peer's close;
 * a leg already waiting for it is closed now. */
void leg_hurry(struct leg *l);
/* Closes at once, dropping queued output; CLOSED follows. */
void leg_abort(struct leg *l);
/* Frees what leg_init and the transport allocated (after CLOSED). */
void leg_free(struct leg *l);
/* An idle leg gives back its empty output queue's storage. */
void leg_trim(struct leg *l);
/* True if output is queued or being flushed. */
bool leg_busy(const struct leg *l);

#endif
