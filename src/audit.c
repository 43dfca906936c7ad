/*
 * The event log's view of a session: each record of CONTRACT.md that
 * describes a login step, written from the facts the session holds. The
 * login state machine (login*.c) decides; this says what happened.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "conf.h"
#include "evlog.h"
#include "policy.h"
#include "sasl.h"
#include "login_forge.h"
#include "login_int.h" /* audit.c writes the login's records */
#include "session.h"
#include "tls.h"
#include "xml.h"

void audit_upstream(const struct session *s, bool ok, const char *error)
{
	evlog_begin(s->id, "upstream");
	evlog_str("addr", s->upstream_addr[0] ? s->upstream_addr : s->px->upstream_name);
	evlog_bool("ok", ok);
	if (!ok)
		evlog_str("error", error);
	evlog_end();
}

void audit_policy(struct session *s, const struct policy_verdict *v)
{
	static char names[64][48]; /* "rule:action" strings shared by all sessions */
	static size_t nnames;
	char key[48];

	evlog_begin(s->id, "policy");
	evlog_str("rule", v->rule);
	evlog_str("action", policy_action_name(v->action));
	evlog_str("detail", v->detail);
	evlog_end();

	snprintf(key, sizeof(key), "%s:%s", v->rule, policy_action_name(v->action));
	for (size_t i = 0; i < s->lg->npolicy; i++)
		if (strcmp(s->lg->policy_rules[i], key) == 0)
			return;
	if (s->lg->npolicy == SESSION_MAX_POLICY)
		return;
	for (size_t i = 0; i < nnames; i++) {
		if (strcmp(names[i], key) == 0) {
			s->lg->policy_rules[s->lg->npolicy++] = names[i];
			return;
		}
	}
	if (nnames < sizeof(names) / sizeof(names[0])) {
		snprintf(names[nnames], sizeof(names[0]), "%s", key);
		s->lg->policy_rules[s->lg->npolicy++] = names[nnames++];
	}
}

/* One stream_error line; "by" only when by is not NULL, "sent" only when
 * false. */
static void audit_stream_error_line(const struct session *s, const char *dir, const char *cond,
                                    const char *text, const char *by, bool sent)
{
	evlog_begin(s->id, "stream_error");
	evlog_str("dir", dir);
	evlog_str("condition", cond);
	evlog_str("text", text);
	if (by != NULL)
		evlog_str("by", by);
	if (!sent)
		evlog_bool("sent", false);
	evlog_end();
}

void audit_stream_error(struct session *s, const char *dir, const struct xml_elem *e,
                        const char **condp, const char **textp)
{
	const char *cond = NULL, *text = NULL;
	for (const struct xml_elem *c = e->children; c != NULL; c = c->next) {
		if (strcmp(c->name, "text") == 0)
			text = c->text;
		else if (cond == NULL && strcmp(c->ns, XML_NS_STREAM_ERRORS) == 0)
			cond = c->name;
	}
	audit_stream_error_line(s, dir, cond, text, NULL, true);
	if (condp != NULL)
		*condp = cond;
	if (textp != NULL)
		*textp = text;
}

void audit_stream_error_sent(const struct session *s, const char *dir, const char *condition,
                             const char *text, bool sent)
{
	audit_stream_error_line(s, dir, condition, text, "proxy", sent);
}

void audit_stream_closed(const struct session *s, const char *dir, const char *text)
{
	audit_stream_error_line(s, dir, NULL, text, NULL, true);
}

void audit_stream(const struct leg *l, bool client, const struct xml_elem *hdr)
{
	const struct session *s = l->owner;
	evlog_begin(s->id, "stream");
	evlog_str("dir", client ? "c2s" : "s2c");
	evlog_int("n", login_ll(l)->stream_n);
	evlog_str("to", xml_attr(hdr, NULL, "to"));
	evlog_str("from", xml_attr(hdr, NULL, "from"));
	evlog_str("id", xml_attr(hdr, NULL, "id"));
	evlog_str("version", xml_attr(hdr, NULL, "version"));
	evlog_bool("tls", client ? s->lg->client_tls : s->lg->upstream_tls);
	evlog_end();
}

void audit_tls(struct leg *l, bool client, bool ok, const char *error)
{
	struct session *s = l->owner;
	struct tls_info info;

	evlog_begin(s->id, "tls");
	evlog_str("leg", client ? "client" : "upstream");
	evlog_bool("ok", ok);
	if (ok) {
		tls_describe(l->ssl, !client, &info);
		evlog_str("version", info.version);
		evlog_str("cipher", info.cipher);
		if (client)
			evlog_str("sni", info.sni[0] ? info.sni : NULL);
		else
			evlog_str("sni", s->lg->domain);
		evlog_str("alpn", info.alpn[0] ? info.alpn : NULL);
		evlog_bool("resumed", info.resumed);
		if (client)
			login_forge_audit(s);
		if (!client) {
			evlog_bool("verified", info.verified);
			if (info.verified && !info.resumed)
				evlog_bool("verify_cached", info.verify_cached);
			if (!info.verified)
				evlog_str("verify_error", info.verify_error);
		}
		snprintf(client ? s->lg->client_tls_version : s->lg->upstream_tls_version,
		         sizeof(s->lg->client_tls_version), "%s", info.version);
	} else {
		evlog_str("error", error);
	}
	evlog_end();
}

void audit_starttls(const struct session *s, bool upstream)
{
	evlog_begin(s->id, "starttls");
	evlog_str("dir", "c2s");
	if (upstream)
		evlog_str("leg", "upstream");
	evlog_end();
}

void audit_features(const struct session *s, enum streamfeatures_starttls st,
                    const char *const *sasl2, size_t nsasl2)
{
	evlog_begin(s->id, "features");
	evlog_int("n", s->lg->cl.stream_n);
	evlog_str("starttls", streamfeatures_starttls_name(st));
	evlog_str("upstream_starttls", streamfeatures_starttls_name(s->lg->upstream_starttls));
	evlog_strlist("mechanisms", (const char *const *)s->lg->ng->up.mechs, s->lg->ng->up.nmechs);
	evlog_strlist("offered", (const char *const *)s->lg->ng->offered, s->lg->ng->noffered);
	evlog_bool("tls", s->lg->client_tls);
	if (s->lg->ng->up.compression)
		evlog_bool("compression_removed", true);
	if (s->lg->ng->up.channel_binding)
		evlog_bool("channel_binding_removed", true);
	if (s->lg->ng->up.sasl2)
		evlog_strlist("sasl2_offered", sasl2, nsasl2);
	if (s->lg->ng->up.ninline > 0)
		evlog_strlist("inline", (const char *const *)s->lg->ng->up.inline_names,
		              s->lg->ng->up.ninline);
	if (s->lg->ng->up.fast) {
		evlog_strlist("fast_mechanisms", (const char *const *)s->lg->ng->up.fast_mechs,
		              s->lg->ng->up.nfast_mechs);
		evlog_strlist("fast_offered", (const char *const *)s->lg->ng->fast_offered,
		              s->lg->ng->nfast_offered);
	}
	evlog_end();
}

void audit_features_relayed(const struct session *s, const struct streamfeatures *f)
{
	evlog_begin(s->id, "features");
	evlog_int("n", s->lg->ul.stream_n);
	evlog_bool("tls", s->lg->client_tls);
	evlog_bool("authenticated", true);
	if (f->compression)
		evlog_bool("compression_removed", true);
	evlog_end();
}

/* XEP-0388 <user-agent id=...><software/><device/></user-agent>: what the
 * client says it is (client-supplied, not verified). */
static void audit_user_agent(const struct xml_elem *ua)
{
	const struct xml_elem *sw = xml_child(ua, XML_NS_SASL2, "software");
	const struct xml_elem *dev = xml_child(ua, XML_NS_SASL2, "device");
	evlog_str("user_agent_id", xml_attr(ua, NULL, "id"));
	evlog_str("user_agent_software", sw ? sw->text : NULL);
	evlog_str("user_agent_device", dev ? dev->text : NULL);
}

static bool audit_has_sm(const struct xml_elem *e)
{
	for (const struct xml_elem *c = e != NULL ? e->children : NULL; c != NULL; c = c->next)
		if (strncmp(c->ns, "urn:xmpp:sm:", 12) == 0)
			return true;
	return false;
}

/* XEP-0388's inline requests in <authenticate>: Bind2 (XEP-0386), stream
 * management (XEP-0198: <resume> beside it, or <enable> inside Bind2's
 * <bind>), FAST (XEP-0484: <request-token mechanism>, or <fast count
 * invalidate> on a token login). Client text is cut to a mechanism name. */
static void audit_sasl2_inline(const struct xml_elem *a)
{
	const struct xml_elem *bind = xml_child(a, XML_NS_BIND2, "bind");
	const struct xml_elem *rt = xml_child(a, XML_NS_FAST, "request-token");
	const struct xml_elem *fast = xml_child(a, XML_NS_FAST, "fast");
	const char *names[3];
	size_t n = 0;
	if (bind != NULL)
		names[n++] = "bind2";
	if (audit_has_sm(a) || audit_has_sm(bind))
		names[n++] = "sm";
	if (rt != NULL || fast != NULL)
		names[n++] = "fast";
	if (n > 0)
		evlog_strlist("inline", names, n);
	if (rt != NULL) {
		const char *m = xml_attr(rt, NULL, "mechanism");
		char mech[MAX_MECH_NAME + 1];
		login_copy_text(mech, sizeof(mech), m != NULL ? m : "");
		evlog_str("fast_request", mech);
	}
	if (fast != NULL) {
		const char *count = xml_attr(fast, NULL, "count");
		const char *inv = xml_attr(fast, NULL, "invalidate");
		char *end = NULL;
		long long c = count != NULL ? strtoll(count, &end, 10) : -1;
		if (count != NULL && end != count && *end == '\0' && c >= 0)
			evlog_int("fast_count", c);
		evlog_bool("fast_invalidate",
		           inv != NULL && (strcmp(inv, "true") == 0 || strcmp(inv, "1") == 0));
	}
}

void audit_auth(const struct session *s, const char *mechanism, bool initial_response,
                const struct xml_elem *authenticate, const struct sasl_fields *f)
{
	evlog_begin(s->id, "auth");
	evlog_str("mechanism", mechanism);
	evlog_bool("tls", s->lg->client_tls);
	evlog_bool("sasl2", authenticate != NULL);
	evlog_bool("initial_response", initial_response);
	if (authenticate != NULL) {
		const struct xml_elem *ua = xml_child(authenticate, XML_NS_SASL2, "user-agent");
		if (ua != NULL)
			audit_user_agent(ua);
		audit_sasl2_inline(authenticate);
	}
	audit_sasl_fields(f);
	evlog_end();
}

void audit_iq_auth(const struct session *s, const char *type)
{
	evlog_begin(s->id, "auth");
	evlog_str("mechanism", "jabber:iq:auth");
	evlog_bool("tls", s->lg->client_tls);
	evlog_bool("sasl2", false);
	evlog_bool("legacy", true);
	evlog_str("type", type);
	evlog_str("username", s->lg->user != NULL && s->lg->user[0] ? s->lg->user : NULL);
	evlog_end();
}

void audit_sasl_fields(const struct sasl_fields *f)
{
	for (size_t i = 0; i < f->n; i++) {
		const struct sasl_field *x = &f->f[i];
		switch (x->type) {
		case SASL_STR:
			evlog_str(x->key, x->str);
			break;
		case SASL_NUM:
			evlog_int(x->key, x->num);
			break;
		case SASL_BOOL:
			evlog_bool(x->key, x->num != 0);
			break;
		}
	}
	if (f->malformed) {
		evlog_bool("malformed", true);
		evlog_str("reason", f->reason);
	}
}

void audit_sasl_step(const struct session *s, const char *dir, unsigned step, const char *what,
                     const struct sasl_fields *f)
{
	evlog_begin(s->id, "sasl_step");
	evlog_str("dir", dir);
	evlog_int("step", step);
	evlog_str("element", what);
	evlog_str("mechanism", s->lg->mechanism);
	audit_sasl_fields(f);
	evlog_end();
}

void audit_result(struct session *s, bool success, const char *by, const char *condition,
                  const char *text)
{
	s->lg->outcome = success ? SESSION_OUTCOME_SUCCESS : SESSION_OUTCOME_FAILURE;
	session_outcome_changed(s, success);
	s->lg->outcome_by = by;
	s->lg->t_outcome = ev_now(s->px->loop);
	snprintf(s->lg->condition, sizeof(s->lg->condition), "%s", condition ? condition : "");
	evlog_begin(s->id, "auth_result");
	evlog_str("outcome", success ? "success" : "failure");
	evlog_str("by", by);
	evlog_str("mechanism", s->lg->mechanism);
	if (!success) {
		evlog_str("condition", condition);
		evlog_str("text", text);
	} else if (s->lg->fast_expiry[0]) {
		evlog_str("token_expiry", s->lg->fast_expiry); /* never the token */
	}
	evlog_end();
}

void audit_bind(const struct session *s, bool ok, bool bind2)
{
	evlog_begin(s->id, "bind");
	evlog_bool("ok", ok);
	if (bind2)
		evlog_bool("bind2", true);
	else
		evlog_str("resource", s->lg->bind_resource);
	evlog_str("jid", ok ? s->lg->jid : NULL);
	evlog_end();
}

void audit_session(const struct session *s, bool ok)
{
	evlog_begin(s->id, "session");
	evlog_bool("ok", ok);
	evlog_end();
}

void audit_login(struct session *s)
{
	if ((!s->lg->auth_tried && !s->lg->starttls_stripped) || s->lg->login_logged)
		return;
	s->lg->login_logged = true;
	evlog_begin(s->id, "login");
	evlog_str("peer", s->peer);
	evlog_str("user", s->lg->user != NULL && s->lg->user[0] ? s->lg->user : NULL);
	evlog_str("authzid", s->lg->authzid != NULL && s->lg->authzid[0] ? s->lg->authzid : NULL);
	evlog_str("jid", s->lg->jid);
	evlog_str("domain", s->lg->domain);
	/* transparent mode: where this login went */
	evlog_str("upstream", s->upstream_addr[0] ? s->upstream_addr : NULL);
	evlog_str("mechanism", s->lg->mechanism);
	if (s->lg->ng != NULL) /* it goes only after this record (login_idle) */
		evlog_strlist("offered", (const char *const *)s->lg->ng->offered,
		              s->lg->ng->noffered);
	if (s->lg->ng != NULL && s->lg->ng->nfast_offered > 0)
		evlog_strlist("fast_offered", (const char *const *)s->lg->ng->fast_offered,
		              s->lg->ng->nfast_offered);
	if (s->lg->client_tls)
		evlog_str("client_tls", s->lg->client_tls_version);
	else
		evlog_bool("client_tls", false);
	if (s->lg->upstream_tls)
		evlog_str("upstream_tls", s->lg->upstream_tls_version);
	else
		evlog_bool("upstream_tls", false);
	evlog_str("cb", s->lg->cb[0] ? s->lg->cb : NULL);
	if (s->lg->cb_downgrade)
		evlog_bool("cb_downgrade", true);
	if (s->px->conf->transcript_dir != NULL) {
		evlog_str("transcript", s->transcript_name[0] ? s->transcript_name : NULL);
		if (s->transcript_name[0] == '\0')
			evlog_str("transcript_error", s->transcript_error);
	}
	evlog_str("outcome", s->lg->outcome == SESSION_OUTCOME_SUCCESS   ? "success"
	                     : s->lg->outcome == SESSION_OUTCOME_FAILURE ? "failure"
	                                                                 : "incomplete");
	evlog_str("by", s->lg->outcome_by);
	evlog_str("condition", s->lg->condition[0] ? s->lg->condition : NULL);
	evlog_int("attempts", s->lg->auth_attempts);
	evlog_strlist("policy", s->lg->policy_rules, s->lg->npolicy);
	if (s->lg->starttls_stripped)
		evlog_str("downgrade", s->lg->downgrade_accepted ? "accepted" : "refused");
	/* a token login outranks the token it may also have been given */
	if (s->lg->fast_used || s->lg->fast_expiry[0] || s->lg->fast_requested)
		evlog_str("fast", s->lg->fast_used        ? "used"
		                  : s->lg->fast_expiry[0] ? "issued"
		                                          : "requested");
	if (s->lg->fast_expiry[0])
		evlog_str("fast_expiry", s->lg->fast_expiry);
	evlog_int("ms", s->lg->outcome != SESSION_OUTCOME_NONE
	                    ? (long long)((s->lg->t_outcome - s->t0) * 1000.0)
	                    : session_ms(s));
	evlog_end();
}
