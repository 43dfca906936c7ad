/*
 * A session is two legs, client and upstream, each pointing at the other
 * (OpenBSD relayd's se_in/se_out). session_close() is the only way out: it
 * logs once, closes both legs after flushing what they were told, and the
 * session is freed after the current callback returns, so any callback may
 * close its own session safely.
 */
#ifndef XI_SESSION_H
#define XI_SESSION_H

#include <ev.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "bounds.h"
#include "buf.h"
#include "leg.h"

struct conf;
struct forge;
struct transcript;
struct login;
struct proxyin;

/* What the process shares with its sessions. Reload replaces conf and the
 * contexts; a session reads them afresh at each step. */
struct proxy {
	struct ev_loop *loop;
	struct conf *conf;
	SSL_CTX *server_ctx, *client_ctx;
	struct forge *forge; /* forge_ca: certificates per domain; NULL: none */
	struct sockaddr_storage upstream_sa;
	socklen_t upstream_salen;
	char upstream_name[300]; /* for the log */
	uint64_t next_sid;
	unsigned nsessions;
	struct addrtab *peers;    /* sessions per client address */
	struct session *sessions; /* live */
	struct session *dead;     /* closed, freed by the reaper */
	ev_prepare reaper;        /* frees px->dead */
	ev_timer sweeper;         /* forgets expired per-address failure windows */
	ev_timer idler;           /* idle logged-in sessions give back memory */
	struct proxyin *pending;  /* proxy listeners' connections reading their header */
	unsigned npending;
	/* the sessions gauge, kept as sessions change (O(1) to read, for a
	 * worker publishing it at every change): of nsessions, those closing,
	 * those whose login succeeded (not closing), those unlinked for the
	 * reaper */
	unsigned nclosing, nauthenticated, ndead;
	bool stopping;
	/* shared_state (sharedstate.h): the limits kept across instances;
	 * NULL when unset */
	struct sharedstate *shared;
};

enum session_port {
	SESSION_PORT_STARTTLS = 0,
	SESSION_PORT_DIRECT_TLS,
};

struct session {
	uint64_t id;
	struct proxy *px;
	struct session *next, *prev; /* px->sessions, or px->dead */
	struct leg client, upstream;
	ev_timer login_timer;   /* login timeout, then close linger */
	ev_timer connect_timer; /* upstream connect and handshakes */
	ev_timer delay_timer;   /* the pause after a failed login */
	ev_tstamp t0;
	enum session_port port;
	char peer[INET6_ADDRSTRLEN + 8], local[INET6_ADDRSTRLEN + 8];
	char peer_ip[INET6_ADDRSTRLEN];
	char upstream_addr[INET6_ADDRSTRLEN + 8]; /* original-dst's, "" otherwise */
	struct in6_addr peer_key;                 /* in px->peers */
	/* shared_state: the lookup this session waits for (its admission or
	 * an attempt), and the link epoch that counted it (sharedstate.h) */
	struct sharedstate_req *shared_req;
	unsigned shared_epoch;
	/* the client and the address it connected to; behind a balancer
	 * (listen ... proxy) both from its PROXY header, and via is the
	 * balancer ("" when the client connected directly) */
	struct sockaddr_storage peer_sa, dst_sa;
	char via[INET6_ADDRSTRLEN + 8];
	bool closing, freed;
	bool counted_authenticated; /* in px->nauthenticated */
	bool upstream_gone;         /* closed on purpose, the client still served */
	/* transcript_dir: this session's file, its name for the login record,
	 * or why there is none */
	struct transcript *transcript;
	char transcript_name[64];
	char transcript_error[200];

	/* the login's own state (login_int.h): allocated by login_start(),
	 * freed by login_free() */
	struct login *lg;
};

/* Takes over an accepted, non-blocking client socket. */
void session_new(struct proxy *px, int fd, enum session_port port, const struct sockaddr *peer,
                 const struct sockaddr *local);
/* Where a connection through a balancer came from: the client (peer) and
 * the address it asked for (dst), as its PROXY header says (or the
 * connection's own for a LOCAL or UNKNOWN header), and the balancer. */
struct session_origin {
	const struct sockaddr *peer, *dst, *via;
	const char *proxy; /* "v1" or "v2" */
	const char *cmd;   /* NULL, or "local"/"unknown": peer is the balancer */
};
/* session_new for a connection of a proxy listener, its header read. */
void session_new_origin(struct proxy *px, int fd, enum session_port port,
                        const struct sockaddr *local, const struct session_origin *o);
/* A connection closed before it became a session: the process event
 * refused (sid 0) with the peer's address, the rule that refused it, and
 * for one through a balancer the balancer's address and what was wrong. */
void session_refused(const struct sockaddr *peer, const struct sockaddr *via, const char *rule,
                     const char *detail);
/* Ends the session: logs close (and the login record if due), closes both
 * legs after their queued output. Idempotent. */
void session_close(struct session *s, const char *reason);
/* Milliseconds since the client connected. */
long long session_ms(const struct session *s);
/* Starts or stops the connect timer. */
void session_connect_timer(struct session *s, bool on);
/* Starts the upstream connection (and its connect timer); its outcome
 * comes as a leg event. */
void session_connect_upstream(struct session *s);
/* Re-arms the login timer to fire in seconds. */
void session_login_deadline(struct session *s, double seconds);
/* Holds the client's input for seconds, then calls login_resume(). */
void session_delay(struct session *s, double seconds);
/* Stops the login timer (the login is over). */
void session_login_done(struct session *s);
/* Set-up of px (the reaper); once before the loop runs. */
void session_proxy_init(struct proxy *px);
/* px->nsessions or px->npending changed: told to the other workers
 * (max_sessions is one limit across them). */
void session_count_changed(const struct proxy *px);
/* The login's outcome was recorded (audit_result): the sessions gauge's
 * authenticated count follows it. */
void session_outcome_changed(struct session *s, bool success);
/* Graceful stop: every session is told the server is shutting down. */
void session_shutdown_all(struct proxy *px);

#endif
