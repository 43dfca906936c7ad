/*
 * A login without a server: fake legs and a fake session layer for the
 * real login state machine (src/login*.c), shared by tests/unit/test_login.c
 * and tests/fuzz/fuzz_login.c.
 *
 * login_harness.c defines every function leg.o and session.o export, so
 * that the linker never takes those objects from libxi.a: no socket, no
 * timer, no libev watcher. What the login asks of them is recorded:
 * leg_send() appends to the leg's captured output, leg_set_reading() sets
 * the flag (input fed while it is off waits, as the kernel would keep it),
 * leg_start_tls()/leg_close()/leg_abort() and the session timers are
 * counted. Timers never fire: a test calls harness_timeout()/harness_resume().
 *
 * TLS: leg_start_tls() keeps the real SSL object the login made (from
 * real SSL_CTXs without certificates) and no handshake runs; harness_tls_done()
 * then reports LEG_EV_TLS_DONE, and audit_tls describes the unused SSL
 * ("(NONE)" cipher). Enough for the login, which sees only the event.
 *
 * The event log is the real evlog.c writing to a temporary file:
 * harness_log_start() before, harness_log_stop() reads it back.
 */
#ifndef XI_LOGIN_HARNESS_H
#define XI_LOGIN_HARNESS_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "leg.h"
#include "session.h"

enum harness_side {
	HARNESS_CLIENT = 0,
	HARNESS_UPSTREAM,
};

/* What the fakes recorded for one leg. */
struct harness_leg_rec {
	struct buf out;     /* every byte leg_send() was given, in order */
	size_t taken;       /* out[0, taken) was returned by harness_take() */
	size_t dropped;     /* bytes sent after the leg was shut for writing */
	struct buf pending; /* input fed while the login did not read */
	unsigned tls_starts;
	bool tls_skip_ws;
	bool eof_pending; /* an EOF behind that input */
	unsigned closes, aborts, hurries;
};

struct harness_proxy {
	struct proxy px; /* first: the login sees only this */
	/* when set, a client's first handshake ends inside leg_start_tls()
	 * with this SNI, as a real one may when the whole ClientHello and the
	 * client's Finished were there to read at once */
	const char *sni_at_start;
};

struct harness_session {
	struct session s; /* first: the fakes find the rest from &s */
	struct harness_proxy *hp;
	struct harness_leg_rec leg[2];
	bool connect_timer; /* armed */
	unsigned deadlines; /* session_login_deadline() calls */
	double deadline;    /* the last one's seconds */
	unsigned delays;    /* session_delay() calls */
	double delay;
	unsigned login_done;
	unsigned close_calls;
	char close_reason[200]; /* the first session_close() reason */
	bool fail_connect;      /* the next leg_connect() fails */
	unsigned connects;      /* session_connect_upstream() calls */
};

/* A proxy with a real conf (conf_new() then each "key=value" of kv, a
 * NULL-terminated list; NULL: none), a real addrtab, real SSL contexts
 * and a libev loop (shared by all). Exits on a bad key: tests are
 * written with valid ones. */
struct harness_proxy *harness_proxy_new(const char *const *kv);
void harness_proxy_free(struct harness_proxy *hp);
/* Sets one more key; 0 or -1. */
int harness_conf_set(struct harness_proxy *hp, const char *key, const char *value);

/* A session as session_new() makes one (id, px, port, legs wired as each
 * other's peer, t0, peer 192.0.2.1:40000), then login_start(), then, if
 * still open, the upstream connect begun as upstream_connect() would. */
struct harness_session *harness_session_new(struct harness_proxy *hp, enum session_port port);
/* Frees what session.c's session_free() would: the login's, the legs'. */
void harness_session_free(struct harness_session *ls);

static inline struct leg *harness_leg(struct harness_session *ls, enum harness_side side)
{
	return side == HARNESS_CLIENT ? &ls->s.client : &ls->s.upstream;
}

/* Bytes arrive on a leg, in one read; delivered to login_data() at once
 * if the leg is reading, else kept until it is (harness_pump). */
void harness_feed(struct harness_session *ls, enum harness_side side, const char *data, size_t len);
void harness_feeds(struct harness_session *ls, enum harness_side side, const char *str);
/* The same, one byte per read. */
void harness_feed_bytewise(struct harness_session *ls, enum harness_side side, const char *data,
                           size_t len);
/* Delivers input kept while a leg was not reading, now that it is. */
void harness_pump(struct harness_session *ls);

/* leg.c's events, as it would report them. */
void harness_connected(struct harness_session *ls);
void harness_tls_done(struct harness_session *ls, enum harness_side side);
void harness_tls_error(struct harness_session *ls, enum harness_side side, const char *why);
void harness_eof(struct harness_session *ls, enum harness_side side);
void harness_error(struct harness_session *ls, enum harness_side side, const char *why);
/* session.c's timers, fired by hand. */
void harness_timeout(struct harness_session *ls, bool connect);
void harness_resume(struct harness_session *ls);

/* The output to a leg not yet taken, NUL-terminated (valid until the next
 * send); harness_take marks it taken. */
const char *harness_peek(struct harness_session *ls, enum harness_side side);
const char *harness_take(struct harness_session *ls, enum harness_side side);
/* Everything sent to the leg so far. */
const char *harness_all(struct harness_session *ls, enum harness_side side);
bool harness_reading(struct harness_session *ls, enum harness_side side);
bool harness_closed(struct harness_session *ls);

/* The event log into a fresh temporary file (dir: where; NULL: /tmp). */
void harness_log_start(const char *dir);
/* Stops it; returns what was written (malloc'd, the caller frees). */
char *harness_log_stop(void);

#endif
