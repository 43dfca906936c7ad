/*
 * The login state machine of both legs: what each step means, what is
 * forwarded, rewritten or answered by the proxy itself, and which events
 * are logged. session.c owns the session's lifetime; this owns its
 * protocol.
 */
#ifndef XI_LOGIN_H
#define XI_LOGIN_H

#include <stdbool.h>
#include <stdint.h>

#include "leg.h"

struct session;

/* The login state of each leg, one enum per leg so that nothing can put
 * a client state on the upstream leg; each move goes through
 * login_client_enter()/login_upstream_enter(), which check it against the
 * state table in login.c. */
enum client_state {
	/* the proxy is the client's server */
	CS_TLS_ACCEPT = 0, /* Direct TLS port: handshake first */
	CS_HEADER,         /* waiting for the client's stream header */
	CS_WAIT_UPSTREAM,  /* header answered; features wait for the upstream */
	CS_PREAUTH,        /* features sent: STARTTLS, <auth> or iq expected */
	CS_STARTTLS,       /* <proceed/> sent, TLS handshake running */
	CS_SASL,           /* an exchange is being relayed */
	CS_RELAY,          /* after success: relayed as it is, still parsed */
	CS_FAILING,        /* a failure waits for the client's stream header */
	CS_STATE_COUNT,
};

enum upstream_state {
	/* the proxy is the server's client */
	US_CONNECTING = 0,  /* TCP connect */
	US_TLS_WAIT_DOMAIN, /* connected for Direct TLS; the client has not named the domain */
	US_TLS,             /* Direct TLS handshake (upstream_tls = direct) */
	US_WAIT_DOMAIN,     /* connected; the client has not said 'to' yet */
	US_HEADER,          /* our header sent; waiting for the server's */
	US_FEATURES,        /* waiting for <features> */
	US_PROCEED,         /* <starttls/> sent */
	US_STARTTLS,        /* TLS handshake after <proceed/> */
	US_WAIT_CLIENT,     /* TLS up; our next header waits for the client's, whose
	                       'from' it carries */
	US_READY,           /* post-TLS features known; waiting for the client */
	US_SASL,            /* an exchange is being relayed */
	US_ABORTING,        /* our <abort/> sent; the <failure> answering it is dropped */
	US_ABORTING_SASL,   /* ... and the client's next exchange is already behind it */
	US_RELAY_HOLD,      /* after success: holding the server's bytes up to its first
	                       element (after a restart: the new header and features) */
	US_RELAY,           /* relayed as it is, still parsed */
	US_STATE_COUNT,
};

/* The session's legs exist; the client leg is accepted, the upstream not
 * yet connected. */
void login_start(struct session *s);
/* Bytes from a leg. */
void login_data(struct leg *l, const char *data, size_t len);
/* An I/O event on a leg (all but LEG_EV_CLOSED). */
void login_event(struct leg *l, enum leg_event ev, const char *why);
/* The login timeout or the upstream connect timeout expired. */
void login_timeout(struct session *s, bool connect);
/* The pause after a failed login is over: the held answer goes out. */
void login_resume(struct session *s);
/* From the idle sweep (session.c, every IDLE_SWEEP): a logged-in leg that
 * moved no byte since the last sweep and is between stanzas gives back
 * its parser and its empty output queue. */
void login_idle(struct session *s);
/* The proxy is stopping: end both streams politely. */
void login_shutdown(struct session *s);
/* True once the login succeeded (for the sessions gauge). */
bool login_authenticated(const struct session *s);
/* What the close event says of the login. */
struct login_summary {
	bool abandoned;          /* a credential payload was in flight: counted as a failure */
	uint64_t trailing_bytes; /* read after a peer's </stream:stream>, ignored */
};
/* The session is closing: a credential payload still in flight counts as
 * a failure for auth_failures, and the login record is written. */
void login_close(struct session *s, struct login_summary *out);
/* Frees what the login kept (features, SASL state, parsers). */
void login_free(struct session *s);

#endif
