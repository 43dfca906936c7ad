/*
 * How an attempt ends: the server's challenges, success and failure (the
 * granted identity checked before the client hears it), the proxy's own
 * refusals, the pause after a failure, and attempts in flight for
 * auth_failures.
 */

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addrtab.h"
#include "audit.h"
#include "conf.h"
#include "login.h"
#include "login_int.h"
#include "sharedstate.h"

/* Sends the client the outcome of a failed attempt. With auth_failures
 * set it goes out after a short random pause (as OpenSMTPD does), during
 * which the client's input waits: guessing gets slow. */
static void login_send_failure(struct session *s, struct buf *b, bool counts)
{
	const struct conf *c = login_conf(s);
	if (c->auth_failures_max == 0) {
		login_send_buf(&s->client, b);
		return;
	}
	if (counts)
		login_count_failure(s);
	if (s->closing) {
		buf_free(b);
		return;
	}
	unsigned char r;
	RAND_bytes(&r, 1);
	/* a failure already waiting (a pipelined retry) keeps its place */
	if (s->lg->delayed.len > 0) {
		int rc = buf_add(&s->lg->delayed, buf_head(b), b->len);
		buf_free(b);
		if (rc < 0)
			session_close(s, "out of memory");
		return;
	}
	buf_free(&s->lg->delayed);
	s->lg->delayed = *b;
	memset(b, 0, sizeof(*b));
	leg_set_reading(&s->client, false);
	session_delay(s, AUTH_FAILURE_DELAY_MIN + (AUTH_FAILURE_DELAY_SPREAD * r) / 255.0);
}

void login_resume(struct session *s)
{
	login_send_buf(&s->client, &s->lg->delayed);
	leg_set_reading(&s->client, !s->lg->shared_wait);
}

/* A failed login for auth_failures: here, and in the shared state, where
 * an attempt this session still holds ends in the same script (other
 * instances never see it neither failed nor in flight). */
void login_count_failure(struct session *s)
{
	const struct conf *c = login_conf(s);
	sharedstate_fail(s->px->shared, &s->peer_key, c->auth_failures_window, s->id,
	                 s->lg->shared_held);
	s->lg->shared_held = false;
	if (addrtab_fail(s->px->peers, &s->peer_key, ev_now(s->px->loop), c->auth_failures_window) <
	    0)
		session_close(s, "out of memory");
}

/* A credential-bearing payload reached the server: until the server
 * answers it counts toward auth_failures for its address, so parallel
 * sessions cannot all guess before the first failure is known. Only the
 * server's round trip counts, never the client's own delay. */
bool login_attempt_begin(struct session *s)
{
	if (s->lg->attempt_inflight)
		return true;
	/* checked when the payload was read; checked and counted again here
	 * in one step, for with workers = N another worker's attempt from the
	 * same address may have taken the last place in between */
	if (!addrtab_attempt_begin_below(s->px->peers, &s->peer_key, ev_now(s->px->loop),
	                                 login_conf(s)->auth_failures_max))
		return false;
	s->lg->attempt_inflight = true;
	return true;
}

/* The server answered (or the proxy refused). session_close() counts a
 * payload abandoned in flight as a failure. */
void login_attempt_end(struct session *s)
{
	if (!s->lg->attempt_inflight)
		return;
	s->lg->attempt_inflight = false;
	addrtab_attempt_end(s->px->peers, &s->peer_key);
	if (s->lg->shared_held)
		sharedstate_attempt_end(s->px->shared, &s->peer_key, s->id);
	s->lg->shared_held = false;
}

/* The credential payload b (login_forward_sasl) goes to the server, and
 * the exchange's moves follow (midway: a <response>, else an <auth>). */
static void login_relay_now(struct session *s, struct buf *b, bool proof, bool midway)
{
	if (proof && !login_attempt_begin(s)) {
		struct policy_verdict v;
		buf_free(b);
		if (s->lg->shared_held)
			sharedstate_attempt_end(s->px->shared, &s->peer_key, s->id);
		s->lg->shared_held = false;
		policy_rule(login_conf(s), POLICY_RULE_FAILURES_IN_FLIGHT, s->lg->mechanism, &v);
		if (midway)
			login_refuse_midway(s, &v);
		else
			login_refuse_verdict(s, &v, false);
		return;
	}
	login_send_buf(&s->upstream, b);
	if (!midway) {
		login_client_enter(s, CS_SASL);
		login_upstream_enter(s, s->lg->ustate == US_ABORTING ? US_ABORTING_SASL : US_SASL);
	}
}

/* The client's bytes read behind the attempt, parsed now: those its
 * parser holds, then any the leg delivered after (login_data). Another
 * attempt among them pauses the client again. */
static void login_shared_input(struct session *s)
{
	if (s->lg->delayed.len == 0)
		leg_set_reading(&s->client, true); /* else login_resume() does */
	login_client_resume(s);
	if (s->closing || s->lg->shared_wait)
		return;
	struct buf in = s->lg->shared_in;
	memset(&s->lg->shared_in, 0, sizeof(in));
	if (in.len > 0)
		login_data(&s->client, buf_head(&in), in.len);
	buf_free(&in);
}

/* The shared state's verdict on the waiting attempt: YES relays it (with
 * a reservation in Redis if reserved); DOWN with shared_state_fail = open
 * relays it on the local counts alone (the outage is logged once, by
 * sharedstate.c); NO, or DOWN when closed, refuses it with
 * <temporary-auth-failure/>. After a wait the local counts are checked
 * again: the attempts from the address that reached the server meanwhile
 * were not in flight when this one was checked (answered DOWN together at
 * the end of a bounded wait, all would go). */
static void login_shared_verdict(struct session *s, enum sharedstate_answer a, bool reserved)
{
	const struct conf *c = login_conf(s);
	bool waited = s->lg->shared_wait;
	struct buf out = s->lg->shared_out;
	memset(&s->lg->shared_out, 0, sizeof(out));
	s->shared_req = NULL;
	s->lg->shared_wait = false;
	bool go = a == SHAREDSTATE_YES ||
	          (a == SHAREDSTATE_DOWN && c->shared_state_fail == CONF_SHARED_OPEN);
	enum policy_rule rule =
	    a == SHAREDSTATE_NO ? POLICY_RULE_SHARED_FAILURES : POLICY_RULE_SHARED_DOWN;
	if (go && waited &&
	    policy_auth_failures_reached(
	        c, addrtab_failures(s->px->peers, &s->peer_key, ev_now(s->px->loop)),
	        addrtab_inflight(s->px->peers, &s->peer_key))) {
		if (reserved)
			sharedstate_attempt_end(s->px->shared, &s->peer_key, s->id);
		go = false;
		rule = POLICY_RULE_FAILURES_IN_FLIGHT;
	}
	if (go) {
		s->lg->shared_held = reserved; /* before: a close on the way gives it back */
		login_relay_now(s, &out, true, s->lg->shared_midway);
	} else {
		struct policy_verdict v;
		buf_free(&out);
		policy_rule(c, rule, s->lg->mechanism, &v);
		if (s->lg->shared_midway)
			login_refuse_midway(s, &v);
		else
			login_refuse_verdict(s, &v, false);
	}
	if (waited && !s->closing)
		login_shared_input(s);
}

/* Fires with Redis' answer to the attempt (sharedstate_attempt). */
static void login_shared_answer(void *ctx, enum sharedstate_answer a, unsigned n)
{
	(void)n;
	login_shared_verdict(ctx, a, a == SHAREDSTATE_YES);
}

/*
 * Relays an attempt's payload b (taken over) once auth_failures allows
 * it. Without shared state, or for a payload that carries no credential,
 * at once; without auth_failures, at once unless Redis is down and
 * shared_state_fail is closed. Else the shared state is asked first; meanwhile the
 * client's parser stops after this element and its leg stops reading, so
 * nothing the client sends behind the attempt is judged before it.
 */
void login_relay_attempt(struct session *s, struct buf *b, bool proof, bool midway)
{
	const struct conf *c = login_conf(s);
	if (s->px->shared == NULL || !proof) {
		login_relay_now(s, b, proof, midway);
		return;
	}
	s->lg->shared_out = *b;
	memset(b, 0, sizeof(*b));
	s->lg->shared_midway = midway;
	if (c->auth_failures_max == 0) {
		/* nothing to count here; only whether max_per_addr could be
		 * judged matters, for shared_state_fail = closed */
		login_shared_verdict(
		    s, sharedstate_up(s->px->shared) ? SHAREDSTATE_YES : SHAREDSTATE_DOWN, false);
		return;
	}
	s->shared_req =
	    sharedstate_attempt(s->px->shared, &s->peer_key, s->id, c->auth_failures_max,
	                        (long long)c->login_timeout * 1000, login_shared_answer, s);
	if (s->shared_req == NULL) {
		login_shared_verdict(s, SHAREDSTATE_DOWN, false);
		return;
	}
	s->lg->shared_wait = true;
	leg_set_reading(&s->client, false);
	xml_pause(s->lg->cl.xml);
}

/* A SASL failure invented by the proxy (policy refused the attempt);
 * counts says whether it is a failed login for auth_failures. */
void login_refuse(struct session *s, const char *condition, const char *detail, bool counts)
{
	struct buf b = {0};
	/* XEP-0388 keeps RFC 6120's conditions, in their own namespace */
	buf_addf(&b, "<failure xmlns='%s'><%s xmlns='" XML_NS_SASL "'/><text>", login_sasl_ns(s),
	         condition);
	xml_escape(&b, detail, strlen(detail));
	buf_adds(&b, "</text></failure>");
	audit_result(s, false, "proxy", condition, detail);
	/* counted before its attempt in flight ends (login_count_failure) */
	login_send_failure(s, &b, counts);
	login_attempt_end(s);
}

/* A policy verdict that refuses the attempt: logged, then refused. */
void login_refuse_verdict(struct session *s, const struct policy_verdict *v, bool counts)
{
	audit_policy(s, v);
	login_refuse(s, v->condition, v->detail, counts);
}

/* Refuses an exchange the server is in the middle of: it is aborted, and
 * the <failure><aborted/> it answers is dropped (US_ABORTING). */
void login_refuse_midway(struct session *s, const struct policy_verdict *v)
{
	struct buf b = {0};
	buf_addf(&b, "<abort xmlns='%s'/>", login_sasl_ns(s));
	login_send_buf(&s->upstream, &b);
	login_upstream_enter(s, US_ABORTING);
	login_refuse_verdict(s, v, true);
	login_client_enter(s, CS_PREAUTH);
}

/* A refusal by one of the fixed rules (policy_rule()). */
void login_refuse_rule(struct session *s, enum policy_rule r)
{
	struct policy_verdict v;
	policy_rule(login_conf(s), r, s->lg->mechanism, &v);
	login_refuse_verdict(s, &v, false);
}

/* The SASL2 identity rule before the client hears <success>: it may carry
 * a FAST token (a long-lived credential) and the Bind2 result. */
static bool login_sasl2_granted(struct session *s, const struct xml_elem *e)
{
	const struct xml_elem *id = xml_child(e, XML_NS_SASL2, "authorization-identifier");
	if (id != NULL && id->text != NULL) {
		login_set_jid(s, id->text);
		if (s->closing)
			return false;
	}
	if (!policy_checks_identity(login_conf(s)))
		return true;
	if (s->lg->jid == NULL && xml_child(e, "urn:xmpp:bind:0", "bound") == NULL)
		return true; /* the iq bind will say, and the gate waits for it */
	return login_bound_identity_allowed(s);
}

/* A FAST token in a SASL2 success (XEP-0484 <token expiry token>): the
 * token is a long-lived credential and goes to the client only; its
 * expiry (an XEP-0082 date-time) is kept for the log, if it is one. */
static void login_fast_token(struct session *s, const struct xml_elem *e)
{
	const struct xml_elem *t = xml_child(e, XML_NS_FAST, "token");
	if (t == NULL)
		return;
	const char *exp = xml_attr(t, NULL, "expiry");
	size_t n = exp != NULL ? strlen(exp) : 0;
	bool ok = n > 0 && n < sizeof(s->lg->fast_expiry) && strspn(exp, "0123456789-:.+TZtz") == n;
	snprintf(s->lg->fast_expiry, sizeof(s->lg->fast_expiry), "%s",
	         ok       ? exp
	         : n == 0 ? "(none)"
	                  : "(invalid)");
}

/* XEP-0388 success: the stream goes on without a restart. The identity
 * the server granted, and an inline Bind2 result, end the login. */
static void login_sasl2_success(struct session *s, const struct xml_elem *e, uint64_t end)
{
	const struct xml_elem *bound = xml_child(e, "urn:xmpp:bind:0", "bound");
	login_enter_relay(s);
	/* No restart: what follows </success> is held until its first element
	 * is known, so that features there can be rewritten (compression). */
	login_upstream_hold(s, end);
	if (bound != NULL) {
		audit_bind(s, true, true);
		s->lg->bound = true;
		/* bound inline: no iq bind will come, names are enough now */
		xml_set_build(s->lg->cl.xml, false);
		xml_set_build(s->lg->ul.xml, false);
	}
	audit_login(s);
}

/* The server's <success>: checked before the client hears it. An identity
 * rule whose check never ran (no payload ever named anyone) fails closed. */
static void login_upstream_success(struct session *s, const struct xml_elem *e, uint64_t end)
{
	struct sasl_fields f;
	const struct xml_elem *data =
	    s->lg->sasl2 ? xml_child(e, XML_NS_SASL2, "additional-data") : e;
	if (data != NULL && data->text != NULL) {
		login_decode(s, SASL_S2C, data, &f);
		audit_sasl_step(s, "s2c", ++s->lg->steps_s2c, "success", &f);
	}
	if (policy_checks_identity(login_conf(s)) && !s->lg->identity_checked) {
		struct policy_verdict v;
		policy_rule(login_conf(s), POLICY_RULE_IDENTITY_UNCHECKED, s->lg->mechanism, &v);
		login_refuse_granted(s, &v, "identity never checked");
		return;
	}
	if (s->lg->sasl2 && !login_sasl2_granted(s, e))
		return;
	if (s->lg->sasl2)
		login_fast_token(s, e);
	login_attempt_end(s);
	audit_result(s, true, "upstream", NULL, NULL);
	login_forward(&s->client, e);
	if (s->closing)
		return;
	if (s->lg->sasl2) {
		login_sasl2_success(s, e, end);
		return;
	}
	/* RFC 6120 6.4.6: both streams restart. The client's parser is
	 * idle now; ours is inside this callback. */
	login_enter_relay(s);
	if (xml_reset(s->lg->cl.xml) < 0) {
		session_close(s, "out of memory");
		return;
	}
	s->lg->cl.hdr_sent = false;
	s->lg->ul.hdr_sent = false;
	s->lg->ul.restart = true;
	xml_stop(s->lg->ul.xml);
	login_upstream_hold(s, end);
}

void login_upstream_sasl(struct session *s, const struct xml_elem *e, uint64_t end)
{
	struct sasl_fields f;
	const char *ns = login_sasl_ns(s);

	if ((s->lg->ustate == US_ABORTING || s->lg->ustate == US_ABORTING_SASL) &&
	    !xml_is(e, ns, "failure")) {
		/* a challenge sent before the server saw our <abort/> is
		 * dropped; a success for the refused exchange is a fault */
		if (xml_is(e, ns, "success"))
			login_upstream_fault(s, "undefined-condition",
			                     "success for an exchange the client aborted");
		return;
	}
	if (xml_is(e, ns, "challenge")) {
		if (++s->lg->steps_s2c > MAX_SASL_STEPS || e->textlen > MAX_SASL_PAYLOAD) {
			login_upstream_fault(s, "policy-violation", "SASL exchange too long");
			return;
		}
		login_attempt_end(s);
		login_decode(s, SASL_S2C, e, &f);
		audit_sasl_step(s, "s2c", s->lg->steps_s2c, "challenge", &f);
		login_forward(&s->client, e);
		return;
	}
	if (xml_is(e, ns, "success")) {
		login_upstream_success(s, e, end);
		return;
	}
	if (s->lg->sasl2 &&
	    (xml_is(e, XML_NS_SASL2, "continue") || xml_is(e, XML_NS_SASL2, "task-data"))) {
		if (++s->lg->steps_s2c > MAX_SASL_STEPS) {
			login_upstream_fault(s, "policy-violation", "SASL exchange too long");
			return;
		}
		login_attempt_end(s);
		memset(&f, 0, sizeof(f));
		audit_sasl_step(s, "s2c", s->lg->steps_s2c, e->name, &f);
		login_forward(&s->client, e);
		return;
	}
	if (xml_is(e, ns, "failure")) {
		const char *cond = NULL;
		const char *text = NULL;
		for (const struct xml_elem *c = e->children; c != NULL; c = c->next) {
			if (strcmp(c->name, "text") == 0)
				text = c->text;
			else if (cond == NULL && strcmp(c->ns, XML_NS_SASL) == 0)
				cond = c->name;
		}
		if (s->lg->ustate == US_ABORTING || s->lg->ustate == US_ABORTING_SASL) {
			/* the answer to our own <abort/>; the client may already
			 * have started its next exchange, which goes on */
			login_upstream_enter(s, s->lg->ustate == US_ABORTING ? US_READY : US_SASL);
			return;
		}
		login_upstream_enter(s, US_READY);
		audit_result(s, false, "upstream", cond, text);
		login_client_enter(s, CS_PREAUTH);
		struct buf b = {0};
		if (xml_write(&b, e, XML_NS_CLIENT) < 0) {
			buf_free(&b);
			login_attempt_end(s);
			session_close(s, "out of memory");
			return;
		}
		/* counted before its attempt in flight ends (login_count_failure) */
		login_send_failure(s, &b,
		                   cond == NULL || (strcmp(cond, "aborted") != 0 &&
		                                    strcmp(cond, "temporary-auth-failure") != 0));
		login_attempt_end(s);
		return;
	}
	login_fail(s, "remote-connection-failed", "unexpected element from the server",
	           "unexpected upstream element during SASL");
}
