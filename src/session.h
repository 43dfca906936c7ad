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
#include "login.h"
#include "sasl.h"
#include "streamfeatures.h"

struct conf;
struct sasl_state;

/* What the process shares with its sessions. Reload replaces conf and the
 * contexts; a session reads them afresh at each step. */
struct proxy {
	struct ev_loop *loop;
	struct conf *conf;
	SSL_CTX *server_ctx, *client_ctx;
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
	bool stopping;
};

enum session_port {
	SESSION_PORT_STARTTLS = 0,
	SESSION_PORT_DIRECT_TLS,
};

enum session_outcome {
	SESSION_OUTCOME_NONE = 0,
	SESSION_OUTCOME_SUCCESS,
	SESSION_OUTCOME_FAILURE,
};

#define SESSION_MAX_POLICY 8

/* After SASL success, while users_deny/users_allow wait for the JID the
 * server binds: the client's stanzas do not reach the server before it is
 * checked (login_relay_c2s). */
enum session_gate {
	SESSION_GATE_OPEN = 0, /* no rule waits (or the JID passed) */
	SESSION_GATE_UNBOUND,  /* only a bind may pass (a resume is answered failed) */
	SESSION_GATE_BINDING,  /* sent; the client's input is held until the answer */
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
	struct in6_addr peer_key; /* in px->peers */
	bool closing, freed;
	bool upstream_gone; /* closed on purpose, the client still served */

	/* the login state of each leg (login.h) */
	enum client_state cstate;
	enum upstream_state ustate;

	/* CS_FAILING: the failure the client's stream header will hear */
	char fail_condition[40], fail_text[96], fail_reason[160];

	/* the login, as login.c follows it */
	char domain[256];  /* the client's 'to' */
	char xml_lang[36]; /* the client's xml:lang */
	bool client_tls;   /* client leg encrypted */
	bool upstream_tls; /* upstream leg encrypted */
	char client_tls_version[16], upstream_tls_version[16];
	bool upstream_requires_tls;
	enum streamfeatures_starttls upstream_starttls; /* as first offered */
	struct streamfeatures up;                       /* post-TLS features */
	char *offered[MAX_MECHANISMS];                  /* what the client was last offered */
	size_t noffered;
	char mechanism[MAX_MECH_NAME + 1];
	struct sasl_state *sasl;
	unsigned steps_c2s, steps_s2c, auth_attempts;
	bool auth_tried, login_logged;
	bool sasl2; /* the exchange in progress is XEP-0388's */
	/* US_RELAY_HOLD, after success: the server's bytes are held (the
	 * upstream leg's hold; its first byte is stream offset relay_from)
	 * until its first element is known, and rewritten if it is features */
	bool held_hdr;                 /* after a restart: the server's new header is held */
	uint64_t held_hdr_end;         /* ... up to this offset */
	bool hold_active;              /* from success until the held bytes have gone out */
	bool hold_rewrite;             /* the first element is features: hold_repl replaces it */
	bool hold_released;            /* bytes through it went out */
	uint64_t hold_start, hold_end; /* the first element's bytes */
	struct buf hold_repl;          /* the rewritten features */
	const char *ended_by;          /* who sent </stream:stream> after login */
	enum session_gate gate;
	bool gate_held;        /* a whole element is among the held bytes */
	bool attempt_inflight; /* an attempt reached the server, unanswered (addrtab) */
	bool identity_checked; /* users_allow/deny applied to this attempt */
	bool starttls_stripped, downgrade_accepted;
	bool cb_downgrade;  /* GS2 "y" to a server that offered -PLUS */
	struct buf delayed; /* a failure held back by the auth_failures pause */
	enum session_outcome outcome;
	const char *outcome_by; /* "upstream" or "proxy" */
	char condition[40];     /* last failure condition */
	ev_tstamp t_outcome;
	char user[SASL_VALUE_MAX], authzid[SASL_VALUE_MAX], cb[32];
	char *jid; /* bound (or SASL2-granted), NULL until known */
	/* an iq bind or session in flight; its id, NULL when it had none */
	bool bind_pending, session_pending;
	bool bound; /* a resource is bound (iq bind or Bind2): no more to follow */
	char *bind_id, *session_iq_id, *bind_resource;
	const char *policy_rules[SESSION_MAX_POLICY]; /* "rule:action", static strings */
	size_t npolicy;
};

/* Takes over an accepted, non-blocking client socket. */
void session_new(struct proxy *px, int fd, enum session_port port, const struct sockaddr *peer,
                 const struct sockaddr *local);
/* Ends the session: logs close (and the login record if due), closes both
 * legs after their queued output. Idempotent. */
void session_close(struct session *s, const char *reason);
/* Milliseconds since the client connected. */
long long session_ms(const struct session *s);
/* Starts or stops the connect timer. */
void session_connect_timer(struct session *s, bool on);
/* Re-arms the login timer to fire in seconds. */
void session_login_deadline(struct session *s, double seconds);
/* Holds the client's input for seconds, then calls login_resume(). */
void session_delay(struct session *s, double seconds);
/* Stops the login timer (the login is over). */
void session_login_done(struct session *s);
/* Set-up of px (the reaper); once before the loop runs. */
void session_proxy_init(struct proxy *px);
/* Graceful stop: every session is told the server is shutting down. */
void session_shutdown_all(struct proxy *px);

#endif
