/*
 * What the login's files share: the login's state of a session (struct
 * login, the per-leg state enums in login.h) and the functions one phase
 * calls in another. Only login*.c and audit.c (the login's writer, which
 * records these fields) include it.
 */
#ifndef XI_LOGIN_INT_H
#define XI_LOGIN_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "conf.h"
#include "leg.h"
#include "login.h"
#include "policy.h"
#include "sasl.h"
#include "session.h"
#include "streamfeatures.h"
#include "xml.h"

struct forge_leaf;

/* What only the negotiation needs (login_negotiate.c, login_sasl.c, the
 * login record): the upstream's features, what the client was offered.
 * Allocated with struct login; freed by login_idle() once the session
 * relays and audit_login() has written the record (no code after that
 * point reads it), so a held session does not keep its 1.5 KiB. */
struct login_nego {
	struct streamfeatures up;      /* post-TLS features */
	char *offered[MAX_MECHANISMS]; /* what the client was last offered */
	size_t noffered;
	char *fast_offered[MAX_MECHANISMS]; /* of it, FAST's (XEP-0484, SASL2 inline) */
	size_t nfast_offered;
};

/* The login's state of one session: what login*.c follow and audit.c
 * records (session.h keeps only a pointer to it). */
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

/* The login's side of one leg: its parser and its stream as the login
 * follows it (struct leg keeps only the I/O). */
struct login_leg {
	struct xml_parser *xml;
	unsigned stream_n;                  /* streams opened on this leg (1, 2, ...) */
	bool hdr_sent;                      /* a stream header went out to this leg */
	char out_prefix[MAX_STREAM_PREFIX]; /* prefix of that header's stream element */
	bool restart;                       /* reset the parser once xml_feed returns */
	bool to_tls;                        /* after the restart, start TLS on this leg */
	struct buf hold;                    /* bytes held back (the gate, the post-login hold) */
	bool relay_clean;                   /* what was relayed to the peer ends between items */
	bool ended;                         /* the peer's </stream:stream> came (after login) */
	uint64_t relay_from;                /* stream offset of hold's first byte */
	uint64_t idle_seen;                 /* the leg's bytes at the last idle sweep */
};

struct login {
	struct login_leg cl, ul; /* the client's and the upstream's */
	/* the login state of each leg (login.h) */
	enum client_state cstate;
	enum upstream_state ustate;

	/* a failure the client's next stream header will hear (before login
	 * with CS_FAILING, or after <success/>): login_fail() */
	bool fail_deferred;
	char fail_condition[40], fail_text[96], fail_reason[160];

	/* the login, as login.c follows it */
	char domain[256];      /* the client's 'to' */
	char *client_from;     /* the 'from' of its last stream header, NULL if none */
	bool connect_deferred; /* the upstream connection waits for the domain */
	bool client_login_hdr; /* the client's header on the stream it logs in on came */
	char xml_lang[36];     /* the client's xml:lang */
	bool client_tls;       /* client leg encrypted */
	bool upstream_tls;     /* upstream leg encrypted */
	char client_tls_version[16], upstream_tls_version[16];
	bool upstream_requires_tls;
	/* how this session reaches the upstream (conf upstream_tls, auto
	 * resolved by the client's listener at the start) */
	enum conf_upstream_tls upstream_mode;
	enum streamfeatures_starttls upstream_starttls; /* as first offered */
	/* the negotiation's state (struct login_nego), NULL once the session
	 * relays and its login record is written (login_idle) */
	struct login_nego *ng;
	char mechanism[MAX_MECH_NAME + 1];
	struct sasl_state *sasl;
	unsigned steps_c2s, steps_s2c, auth_attempts;
	bool auth_tried, login_logged;
	bool sasl2; /* the exchange in progress is XEP-0388's */
	/* FAST (XEP-0484) in the attempt, for the log: a token asked for,
	 * logged in with (HT-*), and the expiry of one the server issued */
	bool fast_requested, fast_used;
	char fast_expiry[40];
	uint64_t trailing_bytes; /* read after a peer's </stream:stream> */
	/* US_RELAY_HOLD, after success: the server's bytes are held (the
	 * upstream leg's hold; its first byte is stream offset relay_from)
	 * until its first element is known, and rewritten if it is features */
	uint64_t held_hdr_end;         /* after a restart: the server's new header is held up to
	                                  this offset (0: no header held) */
	bool hold_active;              /* from success until the held bytes have gone out */
	bool hold_rewrite;             /* the first element is features: hold_repl replaces it */
	bool hold_released;            /* bytes through it went out */
	bool hold_to_end;              /* no first element: the stream ended, all of it goes */
	uint64_t hold_start, hold_end; /* the first element's bytes */
	struct buf hold_repl;          /* the rewritten features */
	const char *ended_by;          /* who sent </stream:stream> after login */
	enum session_gate gate;
	bool gate_held;        /* a whole element is among the held bytes */
	bool attempt_inflight; /* an attempt reached the server, unanswered (addrtab) */
	/* shared_state: an attempt waits for Redis' verdict (shared_out is what
	 * goes to the server if allowed, secret; shared_in the client's bytes
	 * read behind it, parsed after), or holds a reservation there */
	struct buf shared_out, shared_in;
	bool shared_wait, shared_midway, shared_held;
	bool identity_checked; /* users_allow/deny applied to this attempt */
	bool starttls_stripped, downgrade_accepted;
	bool cb_downgrade;  /* GS2 "y" to a server that offered -PLUS */
	struct buf delayed; /* a failure held back by the auth_failures pause */
	enum session_outcome outcome;
	const char *outcome_by; /* "upstream" or "proxy" */
	char condition[40];     /* last failure condition */
	ev_tstamp t_outcome;
	/* the names the attempt's payloads gave (login_keep_text: at most
	 * SASL_VALUE_MAX - 1 bytes), NULL when none; on the heap, for a held
	 * session's sake (two fixed fields were 1 KiB of it) */
	char *user, *authzid;
	char cb[32];
	char *jid; /* bound (or SASL2-granted), NULL until known */
	/* an iq bind or session in flight; its id, NULL when it had none */
	bool bind_pending, session_pending;
	bool bound; /* a resource is bound (iq bind or Bind2): no more to follow */
	char *bind_id, *session_iq_id, *bind_resource;
	const char *policy_rules[SESSION_MAX_POLICY]; /* "rule:action", static strings */
	size_t npolicy;
	/* forge_ca (login_forge.c): the client leg's forged certificate; a
	 * handshake paused for forge_mirror, and the name it waits with */
	struct forge_leaf *forged;
	bool forge_waiting, forge_no_mirror, forge_mirrored;
	char forge_pending[MAX_DOMAIN + 1];
};

static inline struct session *login_session(const struct leg *l)
{
	return l->owner;
}

static inline bool login_is_client(const struct leg *l)
{
	return l == &login_session(l)->client;
}

/* The login's side of leg l. */
static inline struct login_leg *login_ll(const struct leg *l)
{
	struct session *s = login_session(l);
	return login_is_client(l) ? &s->lg->cl : &s->lg->ul;
}

static inline const char *login_leg_name(const struct leg *l)
{
	return login_is_client(l) ? "client" : "upstream";
}

static inline const struct conf *login_conf(const struct session *s)
{
	return s->px->conf;
}

/* namespaces only the login needs (xml.h has the stream ones) */
#define XML_NS_SM_PREFIX "urn:xmpp:sm:"
#define XML_NS_COMPRESS "http://jabber.org/protocol/compress"
#define XML_NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

/* Functions one phase calls in another; each one's contract stands above
 * its definition. */

/* login_state.c */
void login_client_element(struct session *s, const struct xml_elem *e);
void login_upstream_element(struct session *s, const struct xml_elem *e, uint64_t end);

void login_client_enter(struct session *s, enum client_state st);
void login_upstream_enter(struct session *s, enum upstream_state st);
/* After success: both legs relay. */
bool login_relaying(const struct session *s);

/* login_stream.c */

void login_send(struct leg *l, const char *data, size_t len);
/* The relay's bytes after login: as login_send, written at once when
 * nothing is queued (leg_send_now); only from login_data, after a feed.
 * The session may be closing when it returns. */
void login_relay_send(struct leg *l, const char *data, size_t len);
void login_send_buf(struct leg *l, struct buf *b);
void login_client_header(struct session *s);
void login_upstream_header(struct session *s);
bool login_can_write_stream(const struct leg *l);
void login_stream_error(struct leg *l, const char *condition, const char *text);
void login_stream_end(struct leg *l);
void login_end(struct session *s, const char *condition, const char *text, const char *reason);
void login_copy_text(char *dst, size_t n, const char *src);
bool login_keep_text(char **dst, const char *src, size_t n);
void login_fail(struct session *s, const char *condition, const char *text, const char *reason);
void login_end_deferred(struct session *s);
void login_upstream_fault(struct session *s, const char *condition, const char *text);
void login_forward(struct leg *to, const struct xml_elem *e);
const char *login_stream_condition(const char *cond);

/* login_negotiate.c */

void login_clear_offered(struct session *s);
bool login_offers_sasl(const struct session *s);
bool login_upstream_takes_login(const struct session *s);
void login_client_features(struct session *s);
bool login_client_login_header(struct session *s);
bool login_proxy_header(struct session *s);
void login_start_upstream_stream(struct session *s);
void login_client_open(struct session *s, const struct xml_elem *hdr, uint64_t end);
void login_client_preauth_iq(struct session *s, const struct xml_elem *e);
void login_upstream_open(struct session *s, const struct xml_elem *hdr, uint64_t end);
void login_upstream_features(struct session *s, const struct xml_elem *e);
void login_begin_tls(struct leg *l, const char *rest, size_t len);

/* login_sasl.c */

void login_decode(struct session *s, enum sasl_dir dir, const struct xml_elem *e,
                  struct sasl_fields *f);
const char *login_sasl_ns(const struct session *s);
void login_client_auth(struct session *s, const struct xml_elem *e, bool sasl2);
void login_client_response(struct session *s, const struct xml_elem *e);

/* login_outcome.c */

bool login_attempt_begin(struct session *s);
void login_attempt_end(struct session *s);
void login_relay_attempt(struct session *s, struct buf *b, bool proof, bool midway);
/* login.c: the client's parser goes on after the attempt's pause */
void login_client_resume(struct session *s);
void login_count_failure(struct session *s);
void login_refuse(struct session *s, const char *condition, const char *detail, bool counts);
void login_refuse_verdict(struct session *s, const struct policy_verdict *v, bool counts);
void login_refuse_midway(struct session *s, const struct policy_verdict *v);
void login_refuse_rule(struct session *s, enum policy_rule r);
void login_upstream_sasl(struct session *s, const struct xml_elem *e, uint64_t end);

/* login_relay.c */

void login_enter_relay(struct session *s);
void login_set_jid(struct session *s, const char *jid);
void login_refuse_granted(struct session *s, const struct policy_verdict *v, const char *reason);
bool login_bound_identity_allowed(struct session *s);
void login_gate_release(struct session *s, uint64_t upto);
void login_relay_c2s(struct session *s, const struct xml_elem *e, uint64_t start, uint64_t end);
void login_relay_s2c(struct session *s, const struct xml_elem *e);
void login_upstream_hold(struct session *s, uint64_t from);
void login_hold_element(struct session *s, const struct xml_elem *e, uint64_t start, uint64_t end);
void login_hold_stream_end(struct session *s);
bool login_hold_flush(struct session *s, const char *data, size_t used, uint64_t base,
                      bool held_before);

#endif
