#include <stdio.h>
#include <string.h>

#include "conf.h"
#include "policy.h"

/* Room for any identity the SASL decoders return (SASL_VALUE_MAX), folded
 * (folding never lengthens it). */
#define SASL_VALUE_MAX_FOLD 1024

static bool policy_is_plaintext_mech(const char *mech)
{
	return strcmp(mech, "PLAIN") == 0 || strcmp(mech, "LOGIN") == 0;
}

/* SCRAM-*-PLUS binds the TLS channel; the proxy's two TLS sessions differ,
 * so such a login can never succeed through it. */
static bool policy_is_channel_bound(const char *mech)
{
	size_t n = strlen(mech);
	return n > 5 && strcmp(mech + n - 5, "-PLUS") == 0;
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
	else if (conf_mechanism_refusal(c, in->mechanism) != NULL)
		policy_set(v, POLICY_STRIP, conf_mechanism_refusal(c, in->mechanism), NULL,
		           "%s removed from the offer", in->mechanism);
	else if (!in->client_tls && policy_is_plaintext_mech(in->mechanism) &&
	         c->plain_without_tls == CONF_PLAIN_REJECT)
		policy_set(v, POLICY_STRIP, "plain_without_tls", NULL,
		           "%s not offered on a client leg without TLS", in->mechanism);
}

static void policy_auth(const struct conf *c, const struct policy_input *in,
                        struct policy_verdict *v)
{
	if (c->auth_failures_max > 0 && in->failures >= c->auth_failures_max)
		policy_set(v, POLICY_REJECT, "auth_failures", "temporary-auth-failure",
		           "%s refused: too many recent failures from this address", in->mechanism);
	else if (!in->client_tls && !in->starttls_stripped &&
	         policy_require_tls(c, in->upstream_requires_tls))
		policy_set(v, POLICY_REJECT, "require_tls", "encryption-required",
		           "%s before TLS refused", in->mechanism);
	else if (conf_mechanism_refusal(c, in->mechanism) != NULL)
		policy_set(v, POLICY_REJECT, conf_mechanism_refusal(c, in->mechanism),
		           "invalid-mechanism", "%s is not permitted", in->mechanism);
	else if (!in->client_tls && policy_is_plaintext_mech(in->mechanism) &&
	         c->plain_without_tls == CONF_PLAIN_REJECT)
		policy_set(v, POLICY_REJECT, "plain_without_tls", "encryption-required",
		           "%s without TLS refused", in->mechanism);
	else if (c->nusers_allow > 0 && strcmp(in->mechanism, "ANONYMOUS") == 0)
		policy_set(v, POLICY_REJECT, "users_allow", "not-authorized",
		           "%s has no identity to allow", in->mechanism);
	else if (!in->offered && c->noffer_mechanisms == 0)
		policy_set(v, POLICY_REJECT, "not_offered", "invalid-mechanism",
		           "%s was not offered to the client", in->mechanism);
	else if (!in->client_tls && policy_is_plaintext_mech(in->mechanism) &&
	         c->plain_without_tls == CONF_PLAIN_LOG)
		policy_set(v, POLICY_LOG, "plain_without_tls", NULL,
		           "%s without TLS: the password crossed the client leg in the clear",
		           in->mechanism);
}

/* Code points stringprep maps to nothing (RFC 3454 table B.1): a name
 * with them is the same account to a server that applies nodeprep. */
static bool policy_ignorable(unsigned cp)
{
	return cp == 0xAD || cp == 0x34F || cp == 0x1806 || (cp >= 0x180B && cp <= 0x180D) ||
	       (cp >= 0x200B && cp <= 0x200D) || cp == 0x2060 || (cp >= 0xFE00 && cp <= 0xFE0F) ||
	       cp == 0xFEFF;
}

/*
 * The identity as a nodeprep/PRECIS server would see it, as far as an
 * ASCII pattern can tell: fullwidth forms (U+FF01-FF5E) become ASCII and
 * ignorable code points vanish; other bytes stay (case is folded by the
 * match). Not a full NFKC: the bound JID is checked again after login
 * (login.c), in the server's own normalised form.
 */
static void policy_fold_identity(const char *in, char *out, size_t outlen)
{
	const unsigned char *p = (const unsigned char *)in;
	size_t o = 0;
	while (*p && o + 4 < outlen) {
		unsigned cp = *p, len = 1;
		if (cp >= 0xC2 && cp <= 0xDF && (p[1] & 0xC0) == 0x80)
			cp = ((cp & 0x1F) << 6) | (p[1] & 0x3F), len = 2;
		else if (cp >= 0xE0 && cp <= 0xEF && (p[1] & 0xC0) == 0x80 && (p[2] & 0xC0) == 0x80)
			cp = ((cp & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F), len = 3;
		if (len > 1 && policy_ignorable(cp)) {
			p += len;
			continue;
		}
		if (cp >= 0xFF01 && cp <= 0xFF5E) {
			out[o++] = (char)(cp - 0xFF01 + 0x21);
			p += len;
			continue;
		}
		for (unsigned i = 0; i < len && *p; i++)
			out[o++] = (char)*p++;
	}
	out[o] = '\0';
}

/* users_deny and users_allow match the identity alone and as
 * identity@domain, so both "mallory" and "*@lab.test" patterns work. */
static void policy_identity(const struct conf *c, const struct policy_input *in,
                            struct policy_verdict *v)
{
	char folded[SASL_VALUE_MAX_FOLD], full[SASL_VALUE_MAX_FOLD + 300];
	policy_fold_identity(in->user ? in->user : "", folded, sizeof(folded));
	const char *user = folded;
	snprintf(full, sizeof(full), "%s@%s", user, in->domain ? in->domain : "");
	bool deny = conf_user_matches(c->users_deny, c->nusers_deny, user) ||
	            conf_user_matches(c->users_deny, c->nusers_deny, full);
	bool allow = conf_user_matches(c->users_allow, c->nusers_allow, user) ||
	             conf_user_matches(c->users_allow, c->nusers_allow, full);
	if (deny)
		policy_set(v, POLICY_REJECT, "users_deny", "not-authorized",
		           "identity %.100s is denied", user);
	else if (c->nusers_allow > 0 && !allow)
		policy_set(v, POLICY_REJECT, "users_allow", "not-authorized",
		           "identity %.100s is not allowed", user);
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
