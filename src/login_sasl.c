/*
 * A SASL attempt from the client (RFC 6120 and XEP-0388): decoded, logged,
 * checked against policy, and relayed as the proxy read it (canonical
 * base64, the mechanism as checked).
 */

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addrtab.h"
#include "b64.h"
#include "audit.h"
#include "evlog.h"
#include "login_int.h"

/* Decodes the payload of a SASL element for the log; secrets stay in the
 * decoder. */
void login_decode(struct session *s, enum sasl_dir dir, const struct xml_elem *e,
                  struct sasl_fields *f)
{
	memset(f, 0, sizeof(*f));
	if (s->lg->sasl == NULL)
		return;
	const char *text = e != NULL ? e->text : NULL;
	if (sasl_step(s->lg->sasl, dir, text ? text : "", e != NULL ? e->textlen : 0, text != NULL,
	              f) < 0)
		f->n = 0;
	const char *v;
	if (((v = sasl_user(s->lg->sasl)) != NULL &&
	     !login_keep_text(&s->lg->user, v, SASL_VALUE_MAX)) ||
	    ((v = sasl_authzid(s->lg->sasl)) != NULL &&
	     !login_keep_text(&s->lg->authzid, v, SASL_VALUE_MAX)))
		session_close(s, "out of memory");
	if ((v = sasl_cb_flag(s->lg->sasl)) != NULL)
		login_copy_text(s->lg->cb, sizeof(s->lg->cb), v);
}

/* The SASL namespace of the exchange in progress: RFC 6120 or XEP-0388. */
const char *login_sasl_ns(const struct session *s)
{
	return s->lg->sasl2 ? XML_NS_SASL2 : XML_NS_SASL;
}

static void login_check_channel_binding(struct session *s)
{
	struct policy_input in = {.step = POLICY_CHANNEL_BINDING,
	                          .mechanism = s->lg->mechanism,
	                          .cb_flag = s->lg->cb[0] ? s->lg->cb : NULL,
	                          .upstream_offered_plus = policy_offered_plus(
	                              s->lg->ng->up.mechs, s->lg->ng->up.nmechs)};
	struct policy_verdict v;
	policy_check(login_conf(s), &in, &v);
	if (v.action != POLICY_ALLOW) {
		audit_policy(s, &v);
		s->lg->cb_downgrade = true;
	}
}

/*
 * users_deny/users_allow on the attempt in progress, once its payloads
 * have named who authenticates or shown that they will not. Fails closed:
 * a mechanism that names nobody, or a payload the server could read as
 * someone else, is refused while an identity rule is set. Returns true
 * with v filled when the attempt must be refused.
 */
static bool login_identity_refused(struct session *s, struct policy_verdict *v)
{
	const struct conf *c = login_conf(s);
	if (s->lg->sasl == NULL || !policy_checks_identity(c))
		return false;
	enum sasl_identity id = sasl_identity(s->lg->sasl);
	/* once passed, checked again only if a later payload made it unsure */
	if (id == SASL_ID_PENDING || (s->lg->identity_checked && id == SASL_ID_KNOWN))
		return false;
	s->lg->identity_checked = true;
	struct policy_input in = {.step = POLICY_IDENTITY,
	                          .mechanism = s->lg->mechanism,
	                          .client_tls = s->lg->client_tls,
	                          .identity = id == SASL_ID_KNOWN  ? POLICY_ID_KNOWN
	                                      : id == SASL_ID_NONE ? POLICY_ID_NONE
	                                                           : POLICY_ID_AMBIGUOUS,
	                          .user = sasl_user(s->lg->sasl),
	                          .authzid = sasl_authzid(s->lg->sasl),
	                          .domain = s->lg->domain};
	policy_check(c, &in, v);
	if (v->action == POLICY_LOG)
		audit_policy(s, v);
	return v->action == POLICY_REJECT;
}

static bool login_listed(char *const *list, size_t n, const char *mech)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i], mech) == 0)
			return true;
	return false;
}

/* Was mech offered to the client in the form it uses: SASL1's list, or
 * over SASL2 its <authentication> list or FAST's inline one. */
static bool login_was_offered(const struct session *s, const char *mech, bool sasl2)
{
	if (!sasl2)
		return login_listed(s->lg->ng->offered, s->lg->ng->noffered, mech);
	return (login_listed(s->lg->ng->offered, s->lg->ng->noffered, mech) &&
	        streamfeatures_has_sasl2(&s->lg->ng->up, mech)) ||
	       login_listed(s->lg->ng->fast_offered, s->lg->ng->nfast_offered, mech);
}

/*
 * Appends the canonical base64 of a SASL payload (payload: the element
 * holding it): what the decoder read, re-encoded, so the server cannot
 * read the bytes differently (padding mid-string, whitespace, characters
 * outside the alphabet). "=" stays "=" (an empty response); text that is
 * all whitespace stays no payload. Returns 0, or -1 when the text is not
 * base64 (RFC 6120 6.4.2: <incorrect-encoding/>); both plain and encoded
 * forms are scrubbed before they are freed.
 */
static int login_canonical_payload(struct buf *out, const struct xml_elem *payload)
{
	if (payload == NULL || payload->text == NULL)
		return 0;
	const char *t = payload->text;
	size_t n = payload->textlen;
	size_t lead = strspn(t, " \t\r\n");
	if (lead == n)
		return 0;
	size_t cap = n / 4 * 3 + 3;
	unsigned char *plain = malloc(cap);
	if (plain == NULL)
		return -1;
	long dn = b64_decode(t, n, plain);
	int rc = -1;
	if (dn == 0) {
		rc = buf_adds(out, "=");
	} else if (dn > 0) {
		size_t elen = 4 * (((size_t)dn + 2) / 3) + 1;
		char *enc = malloc(elen);
		if (enc != NULL) {
			size_t w = b64_encode(plain, (size_t)dn, enc);
			rc = buf_add(out, enc, w);
			OPENSSL_cleanse(enc, elen);
			free(enc);
		}
	}
	OPENSSL_cleanse(plain, cap);
	free(plain);
	return rc;
}

/*
 * Writes a client SASL element (<auth>, <response>, SASL2's <authenticate>
 * and <response>) to the upstream as the proxy read it: the mechanism as
 * checked (upper case), the payload in canonical base64, no other
 * attribute or text. SASL2's other children (user-agent, Bind2, FAST) go as
 * they are, in their order. Returns 0, or -1 when the payload is not
 * base64 (nothing is sent then).
 */
static int login_forward_sasl(struct session *s, const struct xml_elem *e,
                              const struct xml_elem *payload, struct buf *out)
{
	struct buf b = {0};
	bool authenticate = xml_is(e, XML_NS_SASL2, "authenticate");
	int rc = 0;

	buf_addf(&b, "<%s xmlns='%s'", e->name, e->ns);
	if (xml_attr(e, NULL, "mechanism") != NULL)
		buf_addf(&b, " mechanism='%s'", s->lg->mechanism); /* checked: [A-Z0-9_-] */
	buf_adds(&b, ">");
	if (!authenticate) {
		rc = login_canonical_payload(&b, payload);
	} else {
		for (const struct xml_elem *c = e->children; c != NULL && rc == 0; c = c->next) {
			if (c != payload) {
				rc = xml_write(&b, c, XML_NS_SASL2);
				continue;
			}
			buf_adds(&b, "<initial-response>");
			rc = login_canonical_payload(&b, payload);
			buf_adds(&b, "</initial-response>");
		}
	}
	buf_addf(&b, "</%s>", e->name);
	if (rc < 0) {
		OPENSSL_cleanse(b.data, b.cap);
		buf_free(&b);
		return -1;
	}
	*out = b;
	return 0;
}

/* The mechanism name may only hold what RFC 4422 3.1 allows (upper-case
 * letters, digits, '-' and '_'), after upper-casing. */
static bool login_mech_name_ok(const char *name)
{
	return name[strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")] == '\0';
}

/* How many children e has named ns:name (a hostile SASL2 client sends
 * two <initial-response>s: the proxy would read one, a server the other). */
static size_t login_count_children(const struct xml_elem *e, const char *ns, const char *name)
{
	size_t n = 0;
	for (const struct xml_elem *c = e->children; c != NULL; c = c->next)
		n += xml_is(c, ns, name);
	return n;
}

/* <auth> (RFC 6120) or <authenticate> (XEP-0388, payload in
 * <initial-response>): decoded, logged, checked, then relayed as read. */
void login_client_auth(struct session *s, const struct xml_elem *e, bool sasl2)
{
	const char *mech = xml_attr(e, NULL, "mechanism");
	const struct xml_elem *payload = sasl2 ? xml_child(e, XML_NS_SASL2, "initial-response") : e;
	char name[MAX_MECH_NAME + 1];
	struct sasl_fields f;

	if (++s->lg->auth_attempts > MAX_AUTH_ATTEMPTS) {
		login_fail(s, "policy-violation", "too many authentication attempts",
		           "too many authentication attempts");
		return;
	}
	s->lg->auth_tried = true;
	s->lg->sasl2 = sasl2;
	size_t n = mech ? strlen(mech) : 0;
	if (n == 0 || n > MAX_MECH_NAME) {
		snprintf(s->lg->mechanism, sizeof(s->lg->mechanism), "%s",
		         n ? "(invalid)" : "(none)");
		login_refuse(s, "invalid-mechanism", "no valid mechanism attribute", false);
		return;
	}
	for (size_t i = 0; i <= n; i++)
		name[i] = (char)(mech[i] >= 'a' && mech[i] <= 'z' ? mech[i] - 32 : mech[i]);
	if (!login_mech_name_ok(name)) {
		snprintf(s->lg->mechanism, sizeof(s->lg->mechanism), "%s", "(invalid)");
		login_refuse(s, "invalid-mechanism", "no valid mechanism attribute", false);
		return;
	}
	snprintf(s->lg->mechanism, sizeof(s->lg->mechanism), "%s", name);

	sasl_free(s->lg->sasl);
	s->lg->sasl = sasl_new(name);
	s->lg->steps_c2s = s->lg->steps_s2c = 0;
	free(s->lg->user);
	free(s->lg->authzid);
	s->lg->user = s->lg->authzid = NULL;
	s->lg->cb[0] = '\0';
	s->lg->identity_checked = false;
	s->lg->fast_used = strncmp(name, "HT-", 3) == 0;
	s->lg->fast_requested = sasl2 && xml_child(e, XML_NS_FAST, "request-token") != NULL;
	s->lg->fast_expiry[0] = '\0';
	login_decode(s, SASL_C2S, payload, &f);

	/* XEP-0388: what the client says it is and asks for inline */
	audit_auth(s, name, payload != NULL && payload->text != NULL, sasl2 ? e : NULL, &f);

	if (s->lg->starttls_stripped && !s->lg->client_tls)
		s->lg->downgrade_accepted = true;
	login_check_channel_binding(s);
	struct policy_input in = {
	    .step = POLICY_AUTH,
	    .mechanism = name,
	    .client_tls = s->lg->client_tls,
	    .upstream_requires_tls = s->lg->upstream_requires_tls,
	    .offered = login_was_offered(s, name, sasl2),
	    .starttls_stripped = s->lg->starttls_stripped,
	    .failures = addrtab_failures(s->px->peers, &s->peer_key, ev_now(s->px->loop)),
	    .in_flight = addrtab_inflight(s->px->peers, &s->peer_key),
	    .log_full = evlog_trouble(),
	};
	struct policy_verdict v;
	policy_check(login_conf(s), &in, &v);
	if (v.action != POLICY_ALLOW)
		audit_policy(s, &v);
	if (v.action == POLICY_REJECT) {
		login_refuse(s, v.condition, v.detail, false);
		return;
	}
	if (s->lg->cstate != CS_PREAUTH || !login_upstream_takes_login(s)) {
		/* pipelined behind the stream header (or the features held no
		 * SASL and a reload would now let it pass): recorded, refused */
		login_refuse_rule(s, POLICY_RULE_SASL_ORDER);
		return;
	}
	if (payload != NULL && payload->textlen > MAX_SASL_PAYLOAD) {
		login_refuse(s, "malformed-request", "SASL payload too large", false);
		return;
	}
	if (sasl2 && login_count_children(e, XML_NS_SASL2, "initial-response") > 1) {
		login_refuse_rule(s, POLICY_RULE_SASL_SYNTAX);
		return;
	}
	if (f.malformed && strcmp(f.reason, "invalid base64") == 0) {
		login_refuse_rule(s, POLICY_RULE_SASL_ENCODING);
		return;
	}
	if (login_identity_refused(s, &v)) {
		login_refuse_verdict(s, &v, true);
		return;
	}
	struct buf b;
	if (login_forward_sasl(s, e, payload, &b) < 0) {
		login_refuse_rule(s, POLICY_RULE_SASL_ENCODING);
		return;
	}
	login_relay_attempt(s, &b, payload != NULL && payload->text != NULL, false);
}

/* A client <response> during an exchange: decoded, checked (the identity
 * may only now be named), relayed as read. */
void login_client_response(struct session *s, const struct xml_elem *e)
{
	struct sasl_fields f;
	struct policy_verdict v;

	if (++s->lg->steps_c2s > MAX_SASL_STEPS || e->textlen > MAX_SASL_PAYLOAD) {
		login_fail(s, "policy-violation", "SASL exchange too long",
		           "SASL exchange too long");
		return;
	}
	login_decode(s, SASL_C2S, e, &f);
	audit_sasl_step(s, "c2s", s->lg->steps_c2s, "response", &f);
	if (login_identity_refused(s, &v)) {
		login_refuse_midway(s, &v);
		return;
	}
	bool proof = e->text != NULL;
	const struct conf *c = login_conf(s);
	if (proof && policy_auth_failures_reached(
	                 c, addrtab_failures(s->px->peers, &s->peer_key, ev_now(s->px->loop)),
	                 addrtab_inflight(s->px->peers, &s->peer_key))) {
		policy_rule(c, POLICY_RULE_FAILURES_IN_FLIGHT, s->lg->mechanism, &v);
		login_refuse_midway(s, &v);
		return;
	}
	struct buf b;
	if (login_forward_sasl(s, e, e, &b) < 0) {
		policy_rule(login_conf(s), POLICY_RULE_SASL_ENCODING, NULL, &v);
		login_refuse_midway(s, &v);
		return;
	}
	login_relay_attempt(s, &b, proof, true);
}
