#include <fnmatch.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "conf.h"
#include "ident.h"
#include "policy.h"

/* Mechanism names are stored upper-cased; the comparison still ignores
 * case so a caller may pass the name as the client sent it. */
static bool policy_in_list(char *const *list, size_t n, const char *mech)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(list[i], mech) == 0)
			return true;
	return false;
}

/* The key that refuses mech ("mechanisms_deny" or "mechanisms_allow"), or
 * NULL if it is permitted. */
static const char *policy_mechanism_refusal(const struct conf *c, const char *mech)
{
	if (mech == NULL || policy_in_list(c->mechanisms_deny, c->nmechanisms_deny, mech))
		return "mechanisms_deny";
	if (c->nmechanisms_allow > 0 &&
	    !policy_in_list(c->mechanisms_allow, c->nmechanisms_allow, mech))
		return "mechanisms_allow";
	return NULL;
}

bool policy_mechanism_permitted(const struct conf *c, const char *mech)
{
	return policy_mechanism_refusal(c, mech) == NULL;
}

static bool policy_has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n > m && strcmp(s + n - m, suffix) == 0;
}

/* FAST's token mechanisms (XEP-0484): HT-<hash>-<channel binding>. */
static bool policy_is_fast(const char *mech)
{
	return strncmp(mech, "HT-", 3) == 0;
}

/* A mechanism whose payload, once seen, logs in again: a password, or a
 * FAST token's hash bound to no channel (HT-*-NONE), which anyone who
 * reads it can replay. */
static bool policy_is_plaintext_mech(const char *mech)
{
	return strcmp(mech, "PLAIN") == 0 || strcmp(mech, "LOGIN") == 0 ||
	       (policy_is_fast(mech) && policy_has_suffix(mech, "-NONE"));
}

/* SCRAM-*-PLUS and FAST's HT-*-UNIQ/-EXPR/-ENDP bind the TLS channel
 * (tls-unique, tls-exporter, tls-server-end-point); the proxy's two TLS
 * sessions differ, so such a login can never succeed through it. Only
 * HT-*-NONE crosses it. */
static bool policy_is_channel_bound(const char *mech)
{
	return policy_has_suffix(mech, "-PLUS") ||
	       (policy_is_fast(mech) && !policy_has_suffix(mech, "-NONE"));
}

bool policy_require_tls(const struct conf *c, bool upstream_requires_tls)
{
	switch (c->require_tls) {
	case CONF_REQUIRE_YES:
		return true;
	case CONF_REQUIRE_NO:
		return false;
	default:
		return upstream_requires_tls;
	}
}

static void policy_set(struct policy_verdict *v, enum policy_action a, const char *rule,
                       const char *condition, const char *fmt, const char *mech)
{
	v->action = a;
	v->rule = rule;
	v->condition = condition;
	snprintf(v->detail, sizeof(v->detail), fmt, mech);
}

static void policy_offer(const struct conf *c, const struct policy_input *in,
                         struct policy_verdict *v)
{
	if (c->noffer_mechanisms > 0)
		return; /* the lab asked for exactly its list: see login.c */
	if (policy_is_channel_bound(in->mechanism))
		policy_set(v, POLICY_STRIP, "channel_binding", NULL,
		           "%s removed: channel binding cannot cross the proxy", in->mechanism);
	else if (policy_mechanism_refusal(c, in->mechanism) != NULL)
		policy_set(v, POLICY_STRIP, policy_mechanism_refusal(c, in->mechanism), NULL,
		           "%s removed from the offer", in->mechanism);
	else if (!in->client_tls && policy_is_plaintext_mech(in->mechanism) &&
	         c->plain_without_tls == CONF_PLAIN_REJECT)
		policy_set(v, POLICY_STRIP, "plain_without_tls", NULL,
		           "%s not offered on a client leg without TLS", in->mechanism);
}

static void policy_auth(const struct conf *c, const struct policy_input *in,
                        struct policy_verdict *v)
{
	if (in->log_full && c->event_log_full == CONF_LOG_FULL_REFUSE)
		policy_set(v, POLICY_REJECT, "event_log_full", "temporary-auth-failure",
		           "%s refused: the event log cannot record it now", in->mechanism);
	else if (policy_auth_failures_reached(c, in->failures, in->in_flight))
		policy_set(v, POLICY_REJECT, "auth_failures", "temporary-auth-failure",
		           in->failures >= c->auth_failures_max
		               ? "%s refused: too many recent failures from this address"
		               : "%s refused: too many recent failures and attempts in flight from "
		                 "this address",
		           in->mechanism);
	else if (!in->client_tls && !in->starttls_stripped &&
	         policy_require_tls(c, in->upstream_requires_tls))
		policy_set(v, POLICY_REJECT, "require_tls", "encryption-required",
		           "%s before TLS refused", in->mechanism);
	else if (policy_mechanism_refusal(c, in->mechanism) != NULL)
		policy_set(v, POLICY_REJECT, policy_mechanism_refusal(c, in->mechanism),
		           "invalid-mechanism", "%s is not permitted", in->mechanism);
	else if (!in->client_tls && policy_is_plaintext_mech(in->mechanism) &&
	         c->plain_without_tls == CONF_PLAIN_REJECT)
		policy_set(v, POLICY_REJECT, "plain_without_tls", "encryption-required",
		           "%s without TLS refused", in->mechanism);
	else if (!in->offered && c->noffer_mechanisms == 0)
		policy_set(v, POLICY_REJECT, "not_offered", "invalid-mechanism",
		           "%s was not offered to the client", in->mechanism);
	else if (!in->client_tls && policy_is_plaintext_mech(in->mechanism) &&
	         c->plain_without_tls == CONF_PLAIN_LOG)
		policy_set(
		    v, POLICY_LOG, "plain_without_tls", NULL,
		    policy_is_fast(in->mechanism)
		        ? "%s without TLS: a replayable token hash crossed the client leg in "
		          "the clear"
		        : "%s without TLS: the password crossed the client leg in the clear",
		    in->mechanism);
}

bool policy_checks_identity(const struct conf *c)
{
	return c->nusers_deny > 0 || c->nusers_allow > 0;
}

/* Does identity (folded) match one of the patterns? conf stores them
 * folded the same way (conf_values.c), so both are in the spelling
 * servers compare. */
static bool policy_matches(char *const *patterns, size_t n, const char *identity)
{
	for (size_t i = 0; i < n; i++)
		if (fnmatch(patterns[i], identity, FNM_CASEFOLD) == 0)
			return true;
	return false;
}

/* One identity, localpart and domain, folded as the server compares them
 * (PRECIS/nodeprep for the user, UTS #46 for the domain). deny and allow
 * say whether it matched each list; false when it cannot be folded. */
static bool policy_match_one(const struct conf *c, const char *user, const char *domain, bool *deny,
                             bool *allow)
{
	char fu[IDENT_USER_MAX], fd[IDENT_DOMAIN_MAX], full[IDENT_USER_MAX + IDENT_DOMAIN_MAX + 1];
	if (ident_fold_user(user, fu, sizeof(fu)) < 0)
		return false;
	fd[0] = '\0';
	if (domain != NULL && domain[0] && ident_fold_domain(domain, fd, sizeof(fd)) < 0)
		return false;
	snprintf(full, sizeof(full), "%s@%s", fu, fd);
	*deny = policy_matches(c->users_deny, c->nusers_deny, fu) ||
	        policy_matches(c->users_deny, c->nusers_deny, full);
	*allow = policy_matches(c->users_allow, c->nusers_allow, fu) ||
	         policy_matches(c->users_allow, c->nusers_allow, full);
	return true;
}

/*
 * policy_match_one() on an identity written as localpart@domain[/resource],
 * or as a bare localpart on the session's domain. A server may take the
 * written domain or its own (ejabberd drops the one in a PLAIN authcid),
 * so both are checked: denied if either is, allowed only if both are.
 * False when it cannot be compared.
 */
static bool policy_match_jid(const struct conf *c, const char *jid, const char *session_domain,
                             bool *deny, bool *allow)
{
	char local[IDENT_USER_MAX], dom[IDENT_DOMAIN_MAX];
	size_t rest = strcspn(jid, "/");
	const char *at = memchr(jid, '@', rest);
	if (at == NULL)
		return rest < sizeof(local) && jid[rest] == '\0' &&
		       policy_match_one(c, jid, session_domain, deny, allow);
	size_t ll = (size_t)(at - jid), dl = rest - ll - 1;
	if (ll >= sizeof(local) || dl >= sizeof(dom))
		return false;
	memcpy(local, jid, ll);
	local[ll] = '\0';
	memcpy(dom, at + 1, dl);
	dom[dl] = '\0';
	bool d2 = false, a2 = true;
	if (!policy_match_one(c, local, dom, deny, allow))
		return false;
	if (session_domain != NULL && session_domain[0] &&
	    !policy_match_one(c, local, session_domain, &d2, &a2))
		return false;
	*deny = *deny || d2;
	*allow = *allow && a2;
	return true;
}

bool policy_auth_failures_reached(const struct conf *c, unsigned failures, unsigned in_flight)
{
	return c->auth_failures_max > 0 && failures + in_flight >= c->auth_failures_max;
}

/*
 * users_deny and users_allow match the identity alone and as
 * identity@domain, so both "mallory" and "*@lab.test" patterns work; an
 * authcid written as a JID (ejabberd takes "user@domain") is read as
 * one. An authzid (the JID the client asks to act as) must pass too: a
 * server that grants it logs the client in as that JID. What the proxy
 * cannot read as the server will is refused: fail closed.
 */
static void policy_identity(const struct conf *c, const struct policy_input *in,
                            struct policy_verdict *v)
{
	if (!policy_checks_identity(c))
		return;
	const char *rule = c->nusers_deny > 0 ? "users_deny" : "users_allow";
	if (in->identity == POLICY_ID_NONE) {
		policy_set(v, POLICY_REJECT, rule, "invalid-mechanism",
		           "%s names no identity for users_deny/users_allow to check",
		           in->mechanism);
		return;
	}
	if (in->identity == POLICY_ID_AMBIGUOUS) {
		policy_set(v, POLICY_REJECT, rule, "malformed-request",
		           "%s payload the server could read as another identity", in->mechanism);
		if (in->user != NULL && in->user[0]) {
			size_t used = strlen(v->detail);
			snprintf(v->detail + used, sizeof(v->detail) - used, " (last named %.60s)",
			         in->user);
		}
		return;
	}
	const char *user = in->user ? in->user : "";
	bool deny = false, allow = false;
	bool ok = strchr(user, '@') != NULL ? policy_match_jid(c, user, in->domain, &deny, &allow)
	                                    : policy_match_one(c, user, in->domain, &deny, &allow);
	if (!ok) {
		policy_set(v, POLICY_REJECT, rule, "malformed-request",
		           "identity %.100s cannot be compared as the server would", user);
		return;
	}
	const char *shown = user, *what = "identity";
	if (in->authzid != NULL && in->authzid[0]) {
		bool zdeny = false, zallow = false;
		if (!policy_match_jid(c, in->authzid, in->domain, &zdeny, &zallow)) {
			policy_set(v, POLICY_REJECT, rule, "invalid-authzid",
			           "authzid %.100s cannot be compared as the server would",
			           in->authzid);
			return;
		}
		if (zdeny || (c->nusers_allow > 0 && !zallow)) {
			shown = in->authzid;
			what = "authzid";
		}
		deny = deny || zdeny;
		allow = allow && zallow;
	}
	if (deny || (c->nusers_allow > 0 && !allow)) {
		v->action = POLICY_REJECT;
		v->rule = deny ? "users_deny" : "users_allow";
		v->condition = "not-authorized";
		snprintf(v->detail, sizeof(v->detail), "%s %.100s is %s", what, shown,
		         deny ? "denied" : "not allowed");
	}
}

/* RFC 5802 6: "y" means "I support channel binding but think you do
 * not". The server did offer -PLUS; the proxy hid it. A server that
 * checks refuses the login: a downgrade, detected and logged. */
static void policy_channel_binding(const struct policy_input *in, struct policy_verdict *v)
{
	if (in->cb_flag != NULL && strcmp(in->cb_flag, "y") == 0 && in->upstream_offered_plus)
		policy_set(v, POLICY_LOG, "channel_binding", NULL,
		           "%s with GS2 flag y after the proxy removed -PLUS: a downgrade "
		           "the server may refuse (RFC 5802 6)",
		           in->mechanism);
}

void policy_check(const struct conf *c, const struct policy_input *in, struct policy_verdict *out)
{
	memset(out, 0, sizeof(*out));
	out->action = POLICY_ALLOW;
	out->rule = "";
	switch (in->step) {
	case POLICY_OFFER:
		policy_offer(c, in, out);
		break;
	case POLICY_AUTH:
		policy_auth(c, in, out);
		break;
	case POLICY_IDENTITY:
		policy_identity(c, in, out);
		break;
	case POLICY_CHANNEL_BINDING:
		policy_channel_binding(in, out);
		break;
	}
}

static const struct {
	enum policy_action action;
	const char *rule, *condition, *detail; /* detail: at most one %s, the arg */
} policy_rules[POLICY_RULE_COUNT] = {
    [POLICY_RULE_STRIP_STARTTLS] = {POLICY_STRIP, "strip_starttls", NULL,
                                    "STARTTLS hidden from the client; the upstream leg keeps "
                                    "TLS"},
    [POLICY_RULE_OFFER_LIST] = {POLICY_LOG, "offer_mechanisms", NULL, "offered exactly:"},
    [POLICY_RULE_IQ_AUTH] = {POLICY_REJECT, "iq_auth", "not-authorized",
                             "legacy authentication (XEP-0078) refused: it bypasses SASL"},
    [POLICY_RULE_REGISTER_BEFORE_TLS] = {POLICY_REJECT, "require_tls", "not-authorized",
                                         "in-band registration before TLS refused"},
    [POLICY_RULE_PREAUTH_STANZA] = {POLICY_REJECT, "preauth_stanza", "not-authorized",
                                    "before login only an iq with one register query may "
                                    "pass"},
    [POLICY_RULE_SASL_ENCODING] = {POLICY_REJECT, "sasl_encoding", "incorrect-encoding",
                                   "the payload is not base64 (RFC 6120 6.4.2)"},
    [POLICY_RULE_SASL_SYNTAX] = {POLICY_REJECT, "sasl_syntax", "malformed-request",
                                 "more than one <initial-response>"},
    [POLICY_RULE_SASL_ORDER] = {POLICY_REJECT, "sasl_order", "malformed-request",
                                "authentication before the stream features were sent"},
    [POLICY_RULE_FAILURES_IN_FLIGHT] = {POLICY_REJECT, "auth_failures", "temporary-auth-failure",
                                        "%s refused: too many recent failures and attempts in "
                                        "flight from this address"},
    [POLICY_RULE_IDENTITY_UNCHECKED] = {POLICY_REJECT, NULL, "policy-violation",
                                        "%s succeeded without naming an identity the proxy "
                                        "could check"},
    [POLICY_RULE_BIND_FIRST] = {POLICY_REJECT, "bind_first", "not-authorized",
                                "%.40s before the bound JID was checked (RFC 6120 7.1)"},
    [POLICY_RULE_BIND_RETRY] = {POLICY_REJECT, "bind_first", "not-authorized",
                                "elements pipelined behind a bind that failed (RFC 6120 7.1)"},
    [POLICY_RULE_RESUME] = {POLICY_REJECT, "bind_first", NULL,
                            "XEP-0198 resume answered as failed: its JID cannot be checked; "
                            "bind instead"},
    [POLICY_RULE_RESUME_MIDSTANZA] = {POLICY_REJECT, "bind_first", "not-authorized",
                                      "XEP-0198 resume while the server's stream was "
                                      "mid-stanza"},
    [POLICY_RULE_AFTER_LOGIN] = {POLICY_REJECT, "after_login", "policy-violation",
                                 "<%.40s> after login: a second login or TLS no rule could "
                                 "see"},
    [POLICY_RULE_SHARED_FAILURES] = {POLICY_REJECT, "auth_failures", "temporary-auth-failure",
                                     "%s refused: too many recent failures and attempts in "
                                     "flight from this address, across the instances"},
    [POLICY_RULE_SHARED_DOWN] = {POLICY_REJECT, "shared_state_fail", "temporary-auth-failure",
                                 "%s refused: the shared state (Redis) is unavailable and "
                                 "shared_state_fail is closed"},
};

void policy_rule(const struct conf *c, enum policy_rule r, const char *arg,
                 struct policy_verdict *out)
{
	memset(out, 0, sizeof(*out));
	out->action = policy_rules[r].action;
	out->rule = policy_rules[r].rule;
	out->condition = policy_rules[r].condition;
	if (r == POLICY_RULE_IDENTITY_UNCHECKED)
		out->rule = c->nusers_deny > 0 ? "users_deny" : "users_allow";
	snprintf(out->detail, sizeof(out->detail), policy_rules[r].detail, arg ? arg : "");
	if (r == POLICY_RULE_OFFER_LIST) {
		size_t used = strlen(out->detail);
		for (size_t i = 0; i < c->noffer_mechanisms && used < sizeof(out->detail); i++)
			used += (size_t)snprintf(out->detail + used, sizeof(out->detail) - used,
			                         " %s", c->offer_mechanisms[i]);
	}
}

bool policy_offered_plus(char *const *mechs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (policy_is_channel_bound(mechs[i]))
			return true;
	return false;
}

const char *policy_action_name(enum policy_action a)
{
	switch (a) {
	case POLICY_LOG:
		return "log";
	case POLICY_STRIP:
		return "strip";
	case POLICY_REJECT:
		return "reject";
	default:
		return "allow";
	}
}
