/*
 * After success: the streams relayed as they are, still parsed; the
 * post-login features held and rewritten; resource binding and the gate
 * that keeps the client's stanzas from the server until the bound JID has
 * passed users_deny/users_allow.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "conf.h"
#include "login_int.h"
#include "transcript.h"

/* After <success>: both legs relay from here on, still parsed. */
void login_enter_relay(struct session *s)
{
	login_client_enter(s, CS_RELAY);
	s->lg->cl.relay_clean = true;
	s->lg->ul.relay_clean = true;
	size_t max = login_conf(s)->max_stanza;
	xml_set_max_stanza(s->lg->cl.xml, max);
	xml_set_max_stanza(s->lg->ul.xml, max);
	/* the SASL decoder's state (its names are copied into the login's
	 * record) has nothing left to decode */
	sasl_free(s->lg->sasl);
	s->lg->sasl = NULL;
	/* while users_deny/users_allow wait for the bound JID, the client's
	 * stanzas wait too, and the login timer keeps running */
	if (policy_checks_identity(login_conf(s)) && s->lg->jid == NULL)
		s->lg->gate = SESSION_GATE_UNBOUND;
	else
		session_login_done(s);
}

void login_set_jid(struct session *s, const char *jid)
{
	free(s->lg->jid);
	s->lg->jid = strdup(jid);
	if (s->lg->jid == NULL)
		session_close(s, "out of memory");
}

/* The server granted what the proxy's rules refuse: the client hears
 * policy-violation instead, the server's stream ends. */
void login_refuse_granted(struct session *s, const struct policy_verdict *v, const char *reason)
{
	login_attempt_end(s);
	audit_policy(s, v);
	s->lg->outcome = SESSION_OUTCOME_FAILURE;
	s->lg->outcome_by = "proxy";
	snprintf(s->lg->condition, sizeof(s->lg->condition), "%s", "policy-violation");
	login_end(s, "policy-violation", "this identity is not allowed here", reason);
}

/*
 * users_deny/users_allow once more on the JID the server bound (or
 * granted in SASL2's authorization-identifier), in the server's own
 * normalised form and with its own domain: a name spelled to slip past
 * the check on the SASL identity is caught here, before the client can
 * use the session. Returns false when refused (the session is ending).
 */
bool login_bound_identity_allowed(struct session *s)
{
	const struct conf *c = login_conf(s);
	if (!policy_checks_identity(c))
		return true;
	const char *jid = s->lg->jid != NULL ? s->lg->jid : "";
	size_t len = strlen(jid), rest = strcspn(jid, "/");
	const char *at = memchr(jid, '@', rest);
	char local[MAX_JID + 1], domain[MAX_JID + 1];
	size_t ll = at ? (size_t)(at - jid) : 0;
	size_t dl = at ? rest - ll - 1 : rest;
	snprintf(local, sizeof(local), "%.*s", (int)(ll < sizeof(local) ? ll : 0), jid);
	snprintf(domain, sizeof(domain), "%.*s", (int)(dl < sizeof(domain) ? dl : 0),
	         at ? at + 1 : jid);
	struct policy_input in = {.step = POLICY_IDENTITY,
	                          .mechanism = s->lg->mechanism,
	                          .client_tls = s->lg->client_tls,
	                          /* no JID, or one longer than RFC 7622 allows */
	                          .identity = len == 0 || len > MAX_JID ? POLICY_ID_AMBIGUOUS
	                                                                : POLICY_ID_KNOWN,
	                          .user = local,
	                          .domain = domain};
	struct policy_verdict v;
	policy_check(c, &in, &v);
	if (v.action != POLICY_REJECT)
		return true;
	size_t used = strlen(v.detail);
	snprintf(v.detail + used, sizeof(v.detail) - used, " (bound as %.60s)",
	         len ? jid : "no JID");
	login_refuse_granted(s, &v, "bound identity refused by policy");
	return false;
}

/* A copy of attribute name of e into *dst (NULL when e has none); false
 * when out of memory. */
static bool login_take_attr(char **dst, const struct xml_elem *e, const char *name)
{
	const char *v = xml_attr(e, NULL, name);
	free(*dst);
	*dst = v != NULL ? strdup(v) : NULL;
	return v == NULL || *dst != NULL;
}

/* An iq that binds a resource (RFC 6120 7): type set, the bind its only
 * child, since servers route an iq by its first child. */
static bool login_is_bind(const struct xml_elem *e)
{
	const char *type = xml_attr(e, NULL, "type");
	return xml_is(e, XML_NS_CLIENT, "iq") && type != NULL && strcmp(type, "set") == 0 &&
	       e->children != NULL && e->children->next == NULL &&
	       xml_is(e->children, XML_NS_BIND, "bind");
}

/* Is e the server's answer (result or error) to the client's iq whose id
 * was id (NULL: it had none, and Prosody answers without one)? */
static bool login_is_answer(const struct xml_elem *e, const char *id)
{
	const char *eid = xml_attr(e, NULL, "id");
	const char *type = xml_attr(e, NULL, "type");
	if (!xml_is(e, XML_NS_CLIENT, "iq") || type == NULL ||
	    (strcmp(type, "result") != 0 && strcmp(type, "error") != 0))
		return false;
	return id == NULL ? eid == NULL : eid != NULL && strcmp(eid, id) == 0;
}

/*
 * The gate. While it waits for the bound JID, every client byte is held
 * (the client leg's hold; its first byte is client stream offset
 * relay_from) and released as the gate judges each element: the stream
 * header and a bind go on, a resume is answered by the proxy, anything
 * else ends the session. Released bytes always end between two items.
 */
void login_gate_release(struct session *s, uint64_t upto)
{
	struct login_leg *cl = &s->lg->cl;
	size_t n = upto > cl->relay_from ? (size_t)(upto - cl->relay_from) : 0;
	if (n > cl->hold.len)
		n = cl->hold.len;
	if (n > 0)
		login_send(&s->upstream, buf_head(&cl->hold), n);
	buf_consume(&cl->hold, n);
	cl->relay_from += n;
	cl->relay_clean = true;
}

static void login_gate_refuse(struct session *s, enum policy_rule r, const char *arg,
                              const char *reason)
{
	struct policy_verdict v;
	policy_rule(login_conf(s), r, arg, &v);
	audit_policy(s, &v);
	login_end(s, v.condition, "bind a resource first", reason);
}

/* XEP-0198 resume, while an identity rule waits for a bound JID: the
 * proxy cannot know whose session it restores, so it answers the resume
 * itself as failed (the client then binds anew, XEP-0198 4) and the
 * server never sees it. */
static void login_gate_resume(struct session *s, const struct xml_elem *e, uint64_t start,
                              uint64_t end)
{
	struct leg *c = &s->client;
	struct login_leg *cl = &s->lg->cl;
	login_gate_release(s, start);
	size_t n = (size_t)(end - start) < cl->hold.len ? (size_t)(end - start) : cl->hold.len;
	buf_consume(&cl->hold, n);
	cl->relay_from += n;
	if (!login_can_write_stream(c)) {
		login_gate_refuse(s, POLICY_RULE_RESUME_MIDSTANZA, NULL,
		                  "resume before resource binding");
		return;
	}
	struct policy_verdict v;
	policy_rule(login_conf(s), POLICY_RULE_RESUME, NULL, &v);
	audit_policy(s, &v);
	struct buf b = {0};
	buf_adds(&b, "<failed xmlns='");
	xml_escape(&b, e->ns, strlen(e->ns));
	buf_adds(&b, "'><item-not-found xmlns='" XML_NS_STANZAS "'/></failed>");
	login_send_buf(c, &b);
}

/* A client element while the gate waits for a bind. */
static void login_gate_unbound(struct session *s, const struct xml_elem *e, uint64_t start,
                               uint64_t end)
{
	if (login_is_bind(e)) {
		login_gate_release(s, end);
		s->lg->gate = SESSION_GATE_BINDING;
		s->lg->gate_held = false;
		return;
	}
	if (strcmp(e->name, "resume") == 0 &&
	    strncmp(e->ns, XML_NS_SM_PREFIX, strlen(XML_NS_SM_PREFIX)) == 0) {
		login_gate_resume(s, e, start, end);
		return;
	}
	/* RFC 6120 7.1: nothing but the bind before a resource is bound */
	login_gate_refuse(s, POLICY_RULE_BIND_FIRST, e->name, "element before resource binding");
}

/* The bound JID passed: what the client sent meanwhile goes to the
 * server, in order, and its input flows again. */
static void login_gate_open(struct session *s)
{
	struct leg *c = &s->client;
	struct login_leg *cl = &s->lg->cl;
	s->lg->gate = SESSION_GATE_OPEN;
	session_login_done(s);
	if (cl->ended || s->lg->ul.ended) /* the close wait goes on */
		session_login_deadline(s, STREAM_CLOSE_WAIT);
	if (cl->hold.len > 0)
		login_send(&s->upstream, buf_head(&cl->hold), cl->hold.len);
	buf_free(&cl->hold);
	cl->relay_clean = xml_at_boundary(cl->xml);
	leg_set_reading(c, true);
}

/* The bind failed: the client may try again, unless it already pipelined
 * elements behind it, which an unbound session may not send. */
static void login_gate_retry(struct session *s)
{
	if (s->lg->gate_held) {
		login_gate_refuse(s, POLICY_RULE_BIND_RETRY, NULL,
		                  "element pipelined behind a failed bind");
		return;
	}
	/* what is held is whitespace or the start of the next element,
	 * judged when it is complete */
	s->lg->gate = SESSION_GATE_UNBOUND;
	leg_set_reading(&s->client, true);
}

/* After login nothing may authenticate, start TLS or compress again:
 * the server would take a second login that no rule has seen. */
static bool login_is_login_element(const struct xml_elem *e)
{
	return strcmp(e->ns, XML_NS_SASL) == 0 || strcmp(e->ns, XML_NS_SASL2) == 0 ||
	       strcmp(e->ns, XML_NS_TLS) == 0 || strcmp(e->ns, XML_NS_COMPRESS) == 0 ||
	       /* a stream opened inside the stream would hide what it holds
	        * from these checks (only a stream error belongs there) */
	       (strcmp(e->ns, XML_NS_STREAMS) == 0 && strcmp(e->name, "error") != 0);
}

void login_relay_c2s(struct session *s, const struct xml_elem *e, uint64_t start, uint64_t end)
{
	if (xml_is(e, XML_NS_STREAMS, "error")) {
		audit_stream_error(s, "c2s", e, NULL, NULL);
		return;
	}
	if (login_is_login_element(e)) {
		struct policy_verdict v;
		policy_rule(login_conf(s), POLICY_RULE_AFTER_LOGIN, e->name, &v);
		audit_policy(s, &v);
		login_end(s, v.condition, "already authenticated", "login element after login");
		return;
	}
	if (s->lg->gate == SESSION_GATE_BINDING) {
		s->lg->gate_held = true;
		return;
	}
	if (s->lg->gate == SESSION_GATE_UNBOUND) {
		login_gate_unbound(s, e, start, end);
		if (s->closing)
			return;
	}
	if (s->lg->bound || !xml_is(e, XML_NS_CLIENT, "iq"))
		return;
	const char *type = xml_attr(e, NULL, "type");
	if (login_is_bind(e)) {
		const struct xml_elem *r = xml_child(e->children, XML_NS_BIND, "resource");
		free(s->lg->bind_resource);
		s->lg->bind_resource = r != NULL && r->text != NULL ? strdup(r->text) : NULL;
		s->lg->bind_pending = true;
		if (!login_take_attr(&s->lg->bind_id, e, "id"))
			session_close(s, "out of memory");
	} else if (type != NULL && strcmp(type, "set") == 0 &&
	           xml_child(e, XML_NS_SESSION, "session") != NULL) {
		s->lg->session_pending = true;
		if (!login_take_attr(&s->lg->session_iq_id, e, "id"))
			session_close(s, "out of memory");
	}
}

/* The server answered the bind. */
static void login_bind_answer(struct session *s, const struct xml_elem *e)
{
	const struct xml_elem *b = xml_child(e, XML_NS_BIND, "bind");
	const struct xml_elem *j = b ? xml_child(b, XML_NS_BIND, "jid") : NULL;
	bool ok = strcmp(xml_attr(e, NULL, "type"), "result") == 0;
	s->lg->bind_pending = false;
	if (ok && j != NULL && j->text != NULL) {
		login_set_jid(s, j->text);
		if (s->closing)
			return;
	}
	audit_bind(s, ok, false);
	if (!ok) {
		if (s->lg->gate == SESSION_GATE_BINDING)
			login_gate_retry(s);
		return;
	}
	if (!login_bound_identity_allowed(s))
		return;
	s->lg->bound = true;
	audit_login(s);
	/* the login is over: names are enough from now on */
	xml_set_build(s->lg->cl.xml, false);
	xml_set_build(s->lg->ul.xml, false);
	if (s->lg->gate != SESSION_GATE_OPEN)
		login_gate_open(s);
}

void login_relay_s2c(struct session *s, const struct xml_elem *e)
{
	if (xml_is(e, XML_NS_STREAMS, "error")) {
		audit_stream_error(s, "s2c", e, NULL, NULL);
		return;
	}
	if (s->lg->bind_pending && login_is_answer(e, s->lg->bind_id)) {
		login_bind_answer(s, e);
	} else if (s->lg->session_pending && login_is_answer(e, s->lg->session_iq_id)) {
		audit_session(s, strcmp(xml_attr(e, NULL, "type"), "result") == 0);
		s->lg->session_pending = false;
	}
}

/*
 * After success the server's bytes are held until its first element is
 * known (RFC 6120: after the restart, a new header and the post-login
 * features; XEP-0388: whatever follows </success>), so that features can
 * be rewritten without compression before the client sees them. One
 * mechanism for both: the upstream leg's hold, whose first byte is stream
 * offset relay_from; after a restart it holds the new header too
 * (up to held_hdr_end), which an error for the client may release early.
 */
void login_upstream_hold(struct session *s, uint64_t from)
{
	struct login_leg *ul = &s->lg->ul;
	buf_free(&ul->hold);
	buf_free(&s->lg->hold_repl);
	ul->relay_from = from;
	s->lg->held_hdr_end = 0;
	s->lg->hold_rewrite = s->lg->hold_released = s->lg->hold_to_end = false;
	s->lg->hold_active = true;
	login_upstream_enter(s, US_RELAY_HOLD);
}

/* The held bytes through the first element go to the client, rewritten
 * features in place of the original, less a header already released. */
static void login_hold_release(struct session *s)
{
	struct login_leg *ul = &s->lg->ul;
	size_t skip = s->lg->held_hdr_end != 0 && s->lg->cl.hdr_sent
	                  ? (size_t)(s->lg->held_hdr_end - ul->relay_from)
	                  : 0;
	size_t a = (size_t)(s->lg->hold_start - ul->relay_from),
	       b = s->lg->hold_to_end ? ul->hold.len : (size_t)(s->lg->hold_end - ul->relay_from);
	if (s->lg->hold_rewrite) {
		login_send(&s->client, buf_head(&ul->hold) + skip, a - skip);
		transcript_note(s->transcript, "the server's features after login (above, upstream "
		                               "recv) go to the client rewritten by policy:");
		login_send_buf(&s->client, &s->lg->hold_repl);
	} else {
		login_send(&s->client, buf_head(&ul->hold) + skip, b - skip);
	}
	buf_consume(&ul->hold, b);
	ul->relay_from += b;
	s->lg->cl.hdr_sent = true;
	s->lg->hold_released = true;
}

/* The first element after success, while held: features are rewritten,
 * anything else (a stream error, most likely) goes as it is. The bytes
 * through it go out now if they are all held already (after a restart),
 * else once login_data() has held them (login_hold_flush()). */
void login_hold_element(struct session *s, const struct xml_elem *e, uint64_t start, uint64_t end)
{
	struct login_leg *ul = &s->lg->ul;
	s->lg->hold_rewrite = xml_is(e, XML_NS_STREAMS, "features");
	if (s->lg->hold_rewrite) {
		struct streamfeatures f = {0};
		if (streamfeatures_parse(&f, e) < 0) {
			session_close(s, "out of memory");
			return;
		}
		struct streamfeatures_offer o = {.starttls = f.starttls,
		                                 .mechs = (const char *const *)f.mechs,
		                                 .nmechs = f.nmechs,
		                                 .others = true};
		streamfeatures_write(&s->lg->hold_repl, s->lg->cl.out_prefix, &o, &f);
		audit_features_relayed(s, &f);
		streamfeatures_free(&f);
	} else {
		login_relay_s2c(s, e);
		if (s->closing)
			return;
	}
	s->lg->hold_start = start;
	s->lg->hold_end = end;
	login_upstream_enter(s, US_RELAY);
	if (end - ul->relay_from <= ul->hold.len)
		login_hold_release(s);
}

/* The server ended its stream before any first element: what is held goes
 * out as it is, its end with it (login_hold_flush(), after the feed). */
void login_hold_stream_end(struct session *s)
{
	s->lg->hold_rewrite = false;
	s->lg->hold_to_end = true;
	login_upstream_enter(s, US_RELAY);
}

/* After a feed of the held upstream leg: bytes [from, used) of data join
 * the hold unless login_data() put them there before the feed
 * (held_before); once the first element has gone by, the rest goes out
 * and the leg relays. Returns false if the session ended. */
bool login_hold_flush(struct session *s, const char *data, size_t used, uint64_t base,
                      bool held_before)
{
	struct login_leg *ul = &s->lg->ul;
	if (!held_before) {
		/* the hold began inside this feed (SASL2 success) */
		size_t from = ul->relay_from > base ? (size_t)(ul->relay_from - base) : 0;
		if (from < used && buf_add(&ul->hold, data + from, used - from) < 0) {
			session_close(s, "out of memory");
			return false;
		}
	}
	if (s->lg->ustate == US_RELAY_HOLD) {
		size_t max =
		    s->lg->sasl2 ? login_conf(s)->max_stanza : login_conf(s)->max_stanza_prelogin;
		if (ul->hold.len > max) {
			login_fail(s, "remote-connection-failed",
			           s->lg->sasl2 ? "the server's first stanza is too large"
			                        : "the server's features are too large",
			           s->lg->sasl2 ? "upstream stanza after SASL2 success too large"
			                        : "upstream features too large");
			return false;
		}
		return true;
	}
	if (!s->lg->hold_released)
		login_hold_release(s);
	login_send(&s->client, buf_head(&ul->hold), ul->hold.len);
	buf_free(&ul->hold);
	buf_free(&s->lg->hold_repl);
	s->lg->hold_active = false;
	ul->relay_clean = xml_at_boundary(ul->xml);
	return true;
}
