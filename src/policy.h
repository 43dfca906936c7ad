/*
 * Policy as a pure function: a const description of one login step in, a
 * verdict and its reason out. No sockets, no logging: the login code acts
 * on the verdict and writes the policy event.
 */
#ifndef XI_POLICY_H
#define XI_POLICY_H

#include <stdbool.h>
#include <stddef.h>

struct conf;

enum policy_step {
	POLICY_OFFER = 0,       /* may this mechanism be offered to the client? */
	POLICY_AUTH,            /* the client sent <auth mechanism=...> */
	POLICY_IDENTITY,        /* the exchange revealed who authenticates */
	POLICY_CHANNEL_BINDING, /* the client's SCRAM GS2 flag is known */
};

enum policy_action {
	POLICY_ALLOW = 0, /* silently */
	POLICY_LOG,       /* allowed, with a policy event */
	POLICY_STRIP,     /* removed from what the client is offered */
	POLICY_REJECT,    /* refused by the proxy; the server never sees it */
};

/* How well the exchange named who authenticates (POLICY_IDENTITY). */
enum policy_identity {
	POLICY_ID_KNOWN = 0, /* user (and authzid) are what the server will read */
	POLICY_ID_NONE,      /* the mechanism names nobody the proxy can check */
	POLICY_ID_AMBIGUOUS, /* the server might read another identity than the proxy */
};

struct policy_input {
	enum policy_step step;
	const char *mechanism; /* upper-cased */
	bool client_tls;       /* the client leg is encrypted */
	bool upstream_requires_tls;
	bool offered;           /* POLICY_AUTH: the mechanism was offered to the client */
	bool starttls_stripped; /* strip_starttls hid STARTTLS from this client */
	unsigned failures;      /* POLICY_AUTH: recent failures from the client address */
	unsigned in_flight;     /* POLICY_AUTH: attempts from the address not answered yet */
	bool log_full;          /* POLICY_AUTH: the event log cannot record (evlog_trouble) */
	enum policy_identity identity; /* POLICY_IDENTITY */
	const char *user;              /* POLICY_IDENTITY: authcid/username, or a JID's localpart */
	const char *authzid;           /* POLICY_IDENTITY: the JID asked to act as, or NULL */
	const char *domain;            /* POLICY_IDENTITY: the identity's domain */
	const char *cb_flag;           /* POLICY_CHANNEL_BINDING: "n", "y" or "p=..." */
	bool upstream_offered_plus;    /* the server offered a -PLUS mechanism */
};

struct policy_verdict {
	enum policy_action action;
	const char *rule;      /* configuration key or built-in rule name */
	const char *condition; /* POLICY_REJECT: the SASL failure condition */
	char detail[160];
};

void policy_check(const struct conf *c, const struct policy_input *in, struct policy_verdict *out);

/* The rules the login applies at one fixed point of the exchange, with no
 * input to weigh: their names, actions, conditions and details live here
 * with the others, the login only acts on them. */
enum policy_rule {
	POLICY_RULE_STRIP_STARTTLS = 0,  /* strip_starttls: STARTTLS hidden from the client */
	POLICY_RULE_OFFER_LIST,          /* offer_mechanisms: the lab's own list offered */
	POLICY_RULE_IQ_AUTH,             /* legacy iq-auth (XEP-0078) before SASL */
	POLICY_RULE_REGISTER_BEFORE_TLS, /* in-band registration on a clear leg, TLS required */
	POLICY_RULE_PREAUTH_STANZA,      /* any other iq before login */
	POLICY_RULE_SASL_ENCODING,       /* a payload that is not base64 */
	POLICY_RULE_SASL_SYNTAX,         /* two SASL2 <initial-response>s */
	POLICY_RULE_SASL_ORDER,          /* <auth> pipelined before the features */
	POLICY_RULE_FAILURES_IN_FLIGHT,  /* auth_failures, checked again at a response */
	POLICY_RULE_IDENTITY_UNCHECKED,  /* success for an exchange that named nobody */
	POLICY_RULE_BIND_FIRST,          /* an element before the bound JID (arg: its name) */
	POLICY_RULE_BIND_RETRY,          /* elements pipelined behind a bind that failed */
	POLICY_RULE_RESUME,              /* an XEP-0198 resume while the JID is unknown */
	POLICY_RULE_RESUME_MIDSTANZA,    /* ... that cannot even be answered */
	POLICY_RULE_AFTER_LOGIN,         /* a login element after login (arg: its name) */
	POLICY_RULE_SHARED_FAILURES,     /* auth_failures reached across instances (shared_state) */
	POLICY_RULE_SHARED_DOWN,         /* shared_state_fail = closed, and Redis did not answer */
	POLICY_RULE_COUNT,
};

/* The verdict of rule r; arg fills the detail where the rule names
 * something (a mechanism, an element), else NULL. */
void policy_rule(const struct conf *c, enum policy_rule r, const char *arg,
                 struct policy_verdict *out);

/* Does any rule depend on who authenticates (users_deny, users_allow)?
 * Then an attempt whose identity the proxy cannot read is refused. */
bool policy_checks_identity(const struct conf *c);

/* auth_failures: have the address's recent failures and its credential
 * proofs awaiting the server's answer reached the limit? */
bool policy_auth_failures_reached(const struct conf *c, unsigned failures, unsigned in_flight);

/* Must the client complete TLS before SASL? */
bool policy_require_tls(const struct conf *c, bool upstream_requires_tls);

const char *policy_action_name(enum policy_action a);

/* True if mech (case-insensitive) is offered to and accepted from clients
 * under mechanisms_allow/mechanisms_deny. */
bool policy_mechanism_permitted(const struct conf *c, const char *mech);

/* Did the server offer a channel-bound (-PLUS) mechanism among these? */
bool policy_offered_plus(char *const *mechs, size_t n);

#endif
