#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addrtab.h"
#include "b64.h"
#include "audit.h"
#include "conf.h"
#include "evlog.h"
#include "log.h"
#include "login.h"
#include "policy.h"
#include "sasl.h"
#include "session.h"
#include "tls.h"
#include "xml.h"

/* One login state per leg; each move goes through login_set_state(). */
enum login_state {
	/* client leg: the proxy is the server */
	CS_TLS_ACCEPT = 0, /* Direct TLS port: handshake first */
	CS_HEADER,         /* waiting for the client's stream header */
	CS_WAIT_UPSTREAM,  /* header answered; features wait for the upstream */
	CS_PREAUTH,        /* features sent: STARTTLS, <auth> or iq expected */
	CS_STARTTLS,       /* <proceed/> sent, TLS handshake running */
	CS_SASL,           /* an exchange is being relayed */
	CS_RELAY,          /* after success: relayed as it is, still parsed */

	/* upstream leg: the proxy is the client */
	US_CONNECTING,  /* TCP connect */
	US_TLS,         /* Direct TLS handshake (upstream_tls = direct) */
	US_WAIT_DOMAIN, /* connected; the client has not said 'to' yet */
	US_HEADER,      /* our header sent; waiting for the server's */
	US_FEATURES,    /* waiting for <features> */
	US_PROCEED,     /* <starttls/> sent */
	US_STARTTLS,    /* TLS handshake after <proceed/> */
	US_READY,       /* post-TLS features known; waiting for the client */
	US_SASL,        /* an exchange is being relayed */
	US_RELAY_HOLD,  /* after success: holding the new header and features */
	US_RELAY,       /* relayed as it is, still parsed */
	US_RELAY_FIRST, /* after a SASL2 success: holding the first element */
	LOGIN_STATE_COUNT,
};

static const char *const login_state_names[LOGIN_STATE_COUNT] = {
    "tls_accept", "header", "wait_upstream", "preauth", "starttls",    "sasl",    "relay",
    "connecting", "tls",    "wait_domain",   "header",  "features",    "proceed", "starttls",
    "ready",      "sasl",   "relay_hold",    "relay",   "relay_first",
};

static struct session *login_session(const struct leg *l)
{
	return l->owner;
}

static bool login_is_client(const struct leg *l)
{
	return l == &login_session(l)->client;
}

static const char *login_leg_name(const struct leg *l)
{
	return login_is_client(l) ? "client" : "upstream";
}

static void login_set_state(struct leg *l, enum login_state st)
{
	log_debug("session %llu: %s leg %s -> %s", (unsigned long long)login_session(l)->id,
	          login_leg_name(l), login_state_names[l->state], login_state_names[st]);
	l->state = (int)st;
}

static const struct conf *login_conf(const struct session *s)
{
	return s->px->conf;
}

/* ---- writing to a leg ---- */

static void login_send(struct leg *l, const char *data, size_t len)
{
	if (leg_send(l, data, len) < 0)
		session_close(login_session(l), "out of memory");
}

static void login_send_buf(struct leg *l, struct buf *b)
{
	login_send(l, buf_head(b), b->len);
	buf_free(b);
}

/* Writes one of our own stream headers to l: its first attribute is
 * attr='value' (id toward the client, to toward the upstream); the
 * client's domain is the from toward the client. The xml:lang is the
 * client's, already checked to be a plain language tag. */
static void login_header(struct leg *l, const char *attr, const char *value, const char *from)
{
	struct session *s = login_session(l);
	const char *lang = s->xml_lang[0] ? s->xml_lang : "en";
	struct buf b = {0};

	buf_addf(&b,
	         "<?xml version='1.0'?><stream:stream xmlns='" XML_NS_CLIENT
	         "' xmlns:stream='" XML_NS_STREAMS "' %s='",
	         attr);
	xml_escape(&b, value, strlen(value));
	if (from != NULL && from[0]) {
		buf_adds(&b, "' from='");
		xml_escape(&b, from, strlen(from));
	}
	buf_adds(&b, "' version='1.0' xml:lang='");
	xml_escape(&b, lang, strlen(lang));
	buf_adds(&b, "'>");
	login_send_buf(l, &b);
	l->hdr_sent = true;
	snprintf(l->out_prefix, sizeof(l->out_prefix), "stream");
}

/* Our own stream header toward the client (the proxy is its server). */
static void login_client_header(struct session *s)
{
	unsigned char rnd[8];
	char id[17];

	RAND_bytes(rnd, sizeof(rnd));
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(id + 2 * i, 3, "%02x", rnd[i]);
	login_header(&s->client, "id", id, s->domain);
}

/* Our own stream header toward the upstream (the proxy is its client),
 * with the domain the client asked for. */
static void login_upstream_header(struct session *s)
{
	login_header(&s->upstream, "to", s->domain, NULL);
	login_set_state(&s->upstream, US_HEADER);
}

/* True if something can still be written into the leg's stream: a header
 * went out and, when relaying, the peer is not in the middle of a stanza
 * (an error injected there would not be well-formed). */
static bool login_can_write_stream(const struct leg *l)
{
	if (!l->hdr_sent || l->io >= LEG_IO_DRAINING)
		return false;
	const struct session *s = login_session(l);
	/* relayed bytes must end between two items, not inside a stanza or
	 * a tag (held features never reached the client) */
	if (s->relay && !l->peer->relay_clean && l->peer->state != US_RELAY_HOLD &&
	    l->peer->state != US_RELAY_FIRST)
		return false;
	return true;
}

/* After success the server's new header waits in the hold buffer with its
 * features; before the proxy says anything to the client, the header it
 * belongs in must go out. */
static void login_release_held_header(struct session *s)
{
	struct leg *u = &s->upstream;
	if (u->state != US_RELAY_HOLD || !s->held_hdr || s->client.hdr_sent)
		return;
	login_send(&s->client, buf_head(&u->hold), (size_t)s->held_hdr_end);
	s->client.hdr_sent = true;
}

static void login_stream_tag(struct buf *b, const struct leg *l, const char *name, bool close)
{
	if (l->out_prefix[0])
		buf_addf(b, "<%s%s:%s>", close ? "/" : "", l->out_prefix, name);
	else if (close)
		buf_addf(b, "</%s>", name);
	else
		buf_addf(b, "<%s xmlns='" XML_NS_STREAMS "'>", name);
}

/* Tells a leg a stream error and ends its stream; logged. */
static void login_stream_error(struct leg *l, const char *condition, const char *text)
{
	struct session *s = login_session(l);
	if (login_is_client(l)) {
		login_release_held_header(s);
		if (!l->hdr_sent && l->io == LEG_IO_OPEN)
			login_client_header(s);
	}
	bool can = login_can_write_stream(l);
	evlog_begin(s->id, "stream_error");
	evlog_str("dir", login_is_client(l) ? "s2c" : "c2s");
	evlog_str("condition", condition);
	evlog_str("text", text);
	evlog_str("by", "proxy");
	if (!can)
		evlog_bool("sent", false); /* the leg could not take it any more */
	evlog_end();
	if (!can)
		return;
	struct buf b = {0};
	login_stream_tag(&b, l, "error", false);
	buf_addf(&b, "<%s xmlns='" XML_NS_STREAM_ERRORS "'/>", condition);
	if (text != NULL) {
		buf_adds(&b, "<text xmlns='" XML_NS_STREAM_ERRORS "'>");
		xml_escape(&b, text, strlen(text));
		buf_adds(&b, "</text>");
	}
	login_stream_tag(&b, l, "error", true);
	login_stream_tag(&b, l, "stream", true);
	login_send_buf(l, &b);
	l->hdr_sent = false;
}

/* Ends a leg's stream cleanly, if one is open toward it. */
static void login_stream_end(struct leg *l)
{
	if (login_is_client(l))
		login_release_held_header(login_session(l));
	if (!login_can_write_stream(l))
		return;
	struct buf b = {0};
	login_stream_tag(&b, l, "stream", true);
	login_send_buf(l, &b);
	l->hdr_sent = false;
}

/* Ends the session now: the client hears condition (NULL: a clean close;
 * with no stream open toward it yet, our header comes first), the
 * upstream's stream ends cleanly. */
static void login_end(struct session *s, const char *condition, const char *text,
                      const char *reason)
{
	if (s->closing)
		return;
	if (condition != NULL)
		login_stream_error(&s->client, condition, text);
	else
		login_stream_end(&s->client);
	login_stream_end(&s->upstream);
	session_close(s, reason);
}

/* Copies src into dst (n bytes) cut, if it must be, before a UTF-8
 * sequence rather than inside one: the copy is written into XML later. */
static void login_copy_text(char *dst, size_t n, const char *src)
{
	size_t len = strlen(src);
	if (len >= n) {
		len = n - 1;
		while (len > 0 && ((unsigned char)src[len] & 0xC0) == 0x80)
			len--;
	}
	memcpy(dst, src, len);
	dst[len] = '\0';
}

/* The session ends because of one leg: tell the client condition (NULL:
 * a clean close), end the upstream's stream cleanly, close. */
static void login_fail(struct session *s, const char *condition, const char *text,
                       const char *reason)
{
	if (s->closing)
		return;
	if (condition != NULL && !s->relay && !s->client.hdr_sent && !s->fail_pending &&
	    s->client.io < LEG_IO_CLOSING) {
		/* The client has not opened its stream yet (it may still be in
		 * a TLS handshake, first or after STARTTLS): an error now could
		 * not be well-formed XMPP. Let go of the upstream and answer the
		 * client's header with the error; the login timer bounds the
		 * wait. */
		s->fail_pending = true;
		login_copy_text(s->fail_condition, sizeof(s->fail_condition), condition);
		login_copy_text(s->fail_text, sizeof(s->fail_text), text ? text : "");
		snprintf(s->fail_reason, sizeof(s->fail_reason), "%s", reason);
		s->upstream_gone = true;
		session_connect_timer(s, false);
		session_login_deadline(s, CLOSE_LINGER);
		login_stream_end(&s->upstream);
		leg_close(&s->upstream);
		return;
	}
	login_end(s, condition, text, reason);
}

/* The server broke a rule: it hears the stream error, the client hears
 * that the server failed. */
static void login_upstream_fault(struct session *s, const char *condition, const char *text)
{
	char reason[160];
	if (s->closing)
		return;
	snprintf(reason, sizeof(reason), "upstream: %s (%s)", condition, text);
	login_stream_error(&s->upstream, condition, text);
	login_stream_error(&s->client, "remote-connection-failed", "the server misbehaved");
	session_close(s, reason);
}

/* ---- SASL payloads ---- */

/* Decodes the payload of a SASL element for the log; secrets stay in the
 * decoder. */
static void login_decode(struct session *s, enum sasl_dir dir, const struct xml_elem *e,
                         struct sasl_fields *f)
{
	memset(f, 0, sizeof(*f));
	if (s->sasl == NULL)
		return;
	const char *text = e != NULL ? e->text : NULL;
	if (sasl_step(s->sasl, dir, text ? text : "", e != NULL ? e->textlen : 0, text != NULL, f) <
	    0)
		f->n = 0;
	const char *v;
	if ((v = sasl_user(s->sasl)) != NULL)
		snprintf(s->user, sizeof(s->user), "%s", v);
	if ((v = sasl_authzid(s->sasl)) != NULL)
		snprintf(s->authzid, sizeof(s->authzid), "%s", v);
	if ((v = sasl_cb_flag(s->sasl)) != NULL)
		login_copy_text(s->cb, sizeof(s->cb), v);
}

/* ---- client features ---- */

static void login_clear_offered(struct session *s)
{
	for (size_t i = 0; i < s->noffered; i++)
		free(s->offered[i]);
	s->noffered = 0;
}

/* Sends the client its features: our own <starttls>, the upstream's
 * post-TLS mechanisms filtered by policy, and what else it offered that
 * the proxy can carry. */
static void login_client_features(struct session *s)
{
	const struct conf *c = login_conf(s);
	bool require = policy_require_tls(c, s->upstream_requires_tls);
	enum streamfeatures_starttls st = SF_STARTTLS_NONE;
	bool sasl_now = true;

	if (!s->client_tls && c->strip_starttls) {
		/* a lab downgrade test: does the client go on in the clear? */
		struct policy_verdict v = {.action = POLICY_STRIP, .rule = "strip_starttls"};
		snprintf(v.detail, sizeof(v.detail),
		         "STARTTLS hidden from the client; the upstream leg keeps TLS");
		audit_policy(s, &v);
		s->starttls_stripped = true;
	} else if (!s->client_tls) {
		st = require ? SF_STARTTLS_REQUIRED : SF_STARTTLS_OFFERED;
		sasl_now = !require;
	}
	login_clear_offered(s);
	if (sasl_now && c->noffer_mechanisms > 0) {
		/* a lab test of what the client accepts: exactly this list */
		struct policy_verdict v = {.action = POLICY_LOG, .rule = "offer_mechanisms"};
		size_t used = (size_t)snprintf(v.detail, sizeof(v.detail), "offered exactly:");
		for (size_t i = 0; i < c->noffer_mechanisms; i++) {
			s->offered[s->noffered++] = strdup(c->offer_mechanisms[i]);
			if (s->offered[s->noffered - 1] == NULL)
				s->noffered--;
			if (used < sizeof(v.detail))
				used += (size_t)snprintf(v.detail + used, sizeof(v.detail) - used,
				                         " %s", c->offer_mechanisms[i]);
		}
		audit_policy(s, &v);
	} else if (sasl_now) {
		for (size_t i = 0; i < s->up.nmechs; i++) {
			struct policy_input in = {.step = POLICY_OFFER,
			                          .mechanism = s->up.mechs[i],
			                          .client_tls = s->client_tls,
			                          .upstream_requires_tls =
			                              s->upstream_requires_tls};
			struct policy_verdict v;
			policy_check(c, &in, &v);
			if (v.action == POLICY_STRIP) {
				audit_policy(s, &v);
				continue;
			}
			char *m = strdup(s->up.mechs[i]);
			if (m != NULL)
				s->offered[s->noffered++] = m;
		}
	}

	/* SASL2 offers the same filtered mechanisms, where the server has them */
	const char *sasl2[MAX_MECHANISMS];
	size_t nsasl2 = 0;
	for (size_t i = 0; i < s->noffered; i++)
		if (streamfeatures_has_sasl2(&s->up, s->offered[i]))
			sasl2[nsasl2++] = s->offered[i];
	struct buf b = {0};
	streamfeatures_write(&b, s->client.out_prefix, st, (const char *const *)s->offered,
	                     s->noffered, sasl2, nsasl2, sasl_now, &s->up);
	login_send_buf(&s->client, &b);

	evlog_begin(s->id, "features");
	evlog_int("n", s->client.stream_n);
	evlog_str("starttls", streamfeatures_starttls_name(st));
	evlog_str("upstream_starttls", streamfeatures_starttls_name(s->upstream_starttls));
	evlog_strlist("mechanisms", (const char *const *)s->up.mechs, s->up.nmechs);
	evlog_strlist("offered", (const char *const *)s->offered, s->noffered);
	evlog_bool("tls", s->client_tls);
	if (s->up.compression)
		evlog_bool("compression_removed", true);
	if (s->up.channel_binding)
		evlog_bool("channel_binding_removed", true);
	if (s->up.sasl2)
		evlog_strlist("sasl2_offered", sasl2, nsasl2);
	evlog_end();
	login_set_state(&s->client, CS_PREAUTH);
}

/* ---- the client leg ---- */

static void login_begin_tls(struct leg *l, const char *rest, size_t len);

/* The upstream stream starts once both the connection and the client's
 * domain are there (with Direct TLS the domain is the SNI). */
static void login_start_upstream_stream(struct session *s)
{
	struct leg *u = &s->upstream;
	if (s->domain[0] == '\0')
		return;
	if (u->state == US_TLS && u->ssl == NULL) {
		session_connect_timer(s, true);
		login_begin_tls(u, NULL, 0);
	} else if (u->state == US_WAIT_DOMAIN) {
		session_connect_timer(s, true);
		login_upstream_header(s);
	}
}

static void login_gate_release(struct session *s, uint64_t upto);

/* Fires for every stream header the client sends; end is the offset just
 * past it. */
static void login_client_open(struct session *s, const struct xml_elem *hdr, uint64_t end)
{
	struct leg *l = &s->client;
	const char *to = xml_attr(hdr, NULL, "to");
	const char *version = xml_attr(hdr, NULL, "version");
	const char *lang = xml_attr(hdr, XML_NS_XML, "lang");

	l->stream_n++;
	audit_stream(l, login_is_client(l), hdr);
	if (s->relay) {
		/* forwarded as it is: remember its prefix for errors we add */
		if (strlen(hdr->prefix) >= sizeof(s->upstream.out_prefix)) {
			login_end(s, "bad-namespace-prefix", "the stream prefix is too long",
			          "client stream prefix too long");
			return;
		}
		snprintf(s->upstream.out_prefix, sizeof(s->upstream.out_prefix), "%s", hdr->prefix);
		s->upstream.hdr_sent = true;
		if (s->gate != SESSION_GATE_OPEN)
			login_gate_release(s, end); /* the header goes on; what follows waits */
		return;
	}

	if (lang != NULL && strlen(lang) < sizeof(s->xml_lang) &&
	    strspn(lang, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") ==
	        strlen(lang))
		snprintf(s->xml_lang, sizeof(s->xml_lang), "%s", lang);
	bool bad_to = to != NULL && (strlen(to) >= sizeof(s->domain) || strchr(to, '@') ||
	                             strchr(to, '/') || to[0] == '\0');
	if (to != NULL && !bad_to && s->domain[0] == '\0')
		snprintf(s->domain, sizeof(s->domain), "%s", to);
	/* the client opened its stream: whatever follows is answered in ours */
	login_client_header(s);
	if (strcmp(xml_default_ns(l->xml), XML_NS_CLIENT) != 0) {
		login_fail(s, "invalid-namespace", "the content namespace must be jabber:client",
		           "client stream not in jabber:client");
		return;
	}
	if (bad_to || s->domain[0] == '\0') {
		login_fail(s, "host-unknown",
		           bad_to ? "bad domain in 'to'" : "the stream has no 'to'",
		           bad_to ? "bad stream 'to'" : "no domain from client");
		return;
	}
	if (s->fail_pending) {
		s->fail_pending = false;
		login_fail(s, s->fail_condition, s->fail_text[0] ? s->fail_text : NULL,
		           s->fail_reason);
		return;
	}
	if (version == NULL || strncmp(version, "1.", 2) != 0) {
		login_fail(s, "unsupported-version", NULL, "client stream version not 1.x");
		return;
	}
	login_start_upstream_stream(s);
	if (s->upstream_ready) {
		login_client_features(s);
	} else {
		login_set_state(l, CS_WAIT_UPSTREAM);
		leg_set_reading(l, false);
	}
}

/* The SASL namespace of the exchange in progress: RFC 6120 or XEP-0388. */
static const char *login_sasl_ns(const struct session *s)
{
	return s->sasl2 ? XML_NS_SASL2 : XML_NS_SASL;
}

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
	if (counts && addrtab_fail(s->px->peers, &s->peer_key, ev_now(s->px->loop),
	                           c->auth_failures_window) < 0) {
		buf_free(b);
		session_close(s, "out of memory");
		return;
	}
	unsigned char r;
	RAND_bytes(&r, 1);
	/* a failure already waiting (a pipelined retry) keeps its place */
	if (s->delayed.len > 0) {
		int rc = buf_add(&s->delayed, buf_head(b), b->len);
		buf_free(b);
		if (rc < 0)
			session_close(s, "out of memory");
		return;
	}
	buf_free(&s->delayed);
	s->delayed = *b;
	memset(b, 0, sizeof(*b));
	leg_set_reading(&s->client, false);
	session_delay(s, AUTH_FAILURE_DELAY_MIN + (AUTH_FAILURE_DELAY_SPREAD * r) / 255.0);
}

void login_resume(struct session *s)
{
	login_send_buf(&s->client, &s->delayed);
	leg_set_reading(&s->client, true);
}

/* A credential-bearing payload reached the server: until the server
 * answers it counts toward auth_failures for its address, so parallel
 * sessions cannot all guess before the first failure is known. Only the
 * server's round trip counts, never the client's own delay. */
static void login_attempt_begin(struct session *s)
{
	if (s->attempt_inflight)
		return;
	s->attempt_inflight = true;
	addrtab_attempt_begin(s->px->peers, &s->peer_key);
}

/* The server answered (or the proxy refused). session_close() counts a
 * payload abandoned in flight as a failure. */
static void login_attempt_end(struct session *s)
{
	if (!s->attempt_inflight)
		return;
	s->attempt_inflight = false;
	addrtab_attempt_end(s->px->peers, &s->peer_key);
}

/* A SASL failure invented by the proxy (policy refused the attempt);
 * counts says whether it is a failed login for auth_failures. */
static void login_refuse(struct session *s, const char *condition, const char *detail, bool counts)
{
	struct buf b = {0};
	/* XEP-0388 keeps RFC 6120's conditions, in their own namespace */
	buf_addf(&b, "<failure xmlns='%s'><%s xmlns='" XML_NS_SASL "'/><text>", login_sasl_ns(s),
	         condition);
	xml_escape(&b, detail, strlen(detail));
	buf_adds(&b, "</text></failure>");
	login_attempt_end(s);
	audit_result(s, false, "proxy", condition, detail);
	login_send_failure(s, &b, counts);
}

/* A policy verdict that refuses the attempt: logged, then refused. */
static void login_refuse_verdict(struct session *s, const struct policy_verdict *v, bool counts)
{
	audit_policy(s, v);
	login_refuse(s, v->condition, v->detail, counts);
}

/* Refuses an exchange the server is in the middle of: it is aborted, and
 * the <failure><aborted/> it answers is dropped (swallow_failure). */
static void login_refuse_midway(struct session *s, const struct policy_verdict *v)
{
	struct buf b = {0};
	buf_addf(&b, "<abort xmlns='%s'/>", login_sasl_ns(s));
	login_send_buf(&s->upstream, &b);
	s->swallow_failure = true;
	login_refuse_verdict(s, v, true);
	login_set_state(&s->client, CS_PREAUTH);
}

static bool login_upstream_offered_plus(const struct session *s)
{
	for (size_t i = 0; i < s->up.nmechs; i++) {
		size_t n = strlen(s->up.mechs[i]);
		if (n > 5 && strcmp(s->up.mechs[i] + n - 5, "-PLUS") == 0)
			return true;
	}
	return false;
}

static void login_check_channel_binding(struct session *s)
{
	struct policy_input in = {.step = POLICY_CHANNEL_BINDING,
	                          .mechanism = s->mechanism,
	                          .cb_flag = s->cb[0] ? s->cb : NULL,
	                          .upstream_offered_plus = login_upstream_offered_plus(s)};
	struct policy_verdict v;
	policy_check(login_conf(s), &in, &v);
	if (v.action != POLICY_ALLOW) {
		audit_policy(s, &v);
		s->cb_downgrade = true;
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
	if (s->sasl == NULL || !policy_checks_identity(c))
		return false;
	enum sasl_identity id = sasl_identity(s->sasl);
	/* once passed, checked again only if a later payload made it unsure */
	if (id == SASL_ID_PENDING || (s->identity_checked && id == SASL_ID_KNOWN))
		return false;
	s->identity_checked = true;
	struct policy_input in = {.step = POLICY_IDENTITY,
	                          .mechanism = s->mechanism,
	                          .client_tls = s->client_tls,
	                          .identity = id == SASL_ID_KNOWN  ? POLICY_ID_KNOWN
	                                      : id == SASL_ID_NONE ? POLICY_ID_NONE
	                                                           : POLICY_ID_AMBIGUOUS,
	                          .user = sasl_user(s->sasl),
	                          .authzid = sasl_authzid(s->sasl),
	                          .domain = s->domain};
	policy_check(c, &in, v);
	if (v->action == POLICY_LOG)
		audit_policy(s, v);
	return v->action == POLICY_REJECT;
}

static bool login_was_offered(const struct session *s, const char *mech)
{
	for (size_t i = 0; i < s->noffered; i++)
		if (strcmp(s->offered[i], mech) == 0)
			return true;
	return false;
}

static void login_forward(struct leg *to, const struct xml_elem *e)
{
	struct buf b = {0};
	if (xml_write(&b, e, XML_NS_CLIENT) < 0) {
		buf_free(&b);
		session_close(login_session(to), "out of memory");
		return;
	}
	login_send_buf(to, &b);
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
                              const struct xml_elem *payload)
{
	struct buf b = {0};
	bool authenticate = xml_is(e, XML_NS_SASL2, "authenticate");
	int rc = 0;

	buf_addf(&b, "<%s xmlns='%s'", e->name, e->ns);
	if (xml_attr(e, NULL, "mechanism") != NULL)
		buf_addf(&b, " mechanism='%s'", s->mechanism); /* checked: [A-Z0-9_-] */
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
	login_send_buf(&s->upstream, &b);
	return 0;
}

/* XEP-0388 <user-agent id=...><software/><device/></user-agent>: what the
 * client says it is, for the audit (client-supplied, not verified). */
static void login_user_agent(const struct xml_elem *e)
{
	const struct xml_elem *ua = xml_child(e, XML_NS_SASL2, "user-agent");
	if (ua == NULL)
		return;
	const struct xml_elem *sw = xml_child(ua, XML_NS_SASL2, "software");
	const struct xml_elem *dev = xml_child(ua, XML_NS_SASL2, "device");
	evlog_str("user_agent_id", xml_attr(ua, NULL, "id"));
	evlog_str("user_agent_software", sw ? sw->text : NULL);
	evlog_str("user_agent_device", dev ? dev->text : NULL);
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

/* A refusal of the proxy's own, not a configured rule. */
static void login_refuse_builtin(struct session *s, const char *rule, const char *condition,
                                 const char *detail)
{
	struct policy_verdict v = {.action = POLICY_REJECT, .rule = rule, .condition = condition};
	snprintf(v.detail, sizeof(v.detail), "%s", detail);
	login_refuse_verdict(s, &v, false);
}

/* <auth> (RFC 6120) or <authenticate> (XEP-0388, payload in
 * <initial-response>): decoded, logged, checked, then relayed as read. */
static void login_client_auth(struct session *s, const struct xml_elem *e, bool sasl2)
{
	const char *mech = xml_attr(e, NULL, "mechanism");
	const struct xml_elem *payload = sasl2 ? xml_child(e, XML_NS_SASL2, "initial-response") : e;
	char name[MAX_MECH_NAME + 1];
	struct sasl_fields f;

	if (++s->auth_attempts > MAX_AUTH_ATTEMPTS) {
		login_fail(s, "policy-violation", "too many authentication attempts",
		           "too many authentication attempts");
		return;
	}
	s->auth_tried = true;
	s->sasl2 = sasl2;
	size_t n = mech ? strlen(mech) : 0;
	if (n == 0 || n > MAX_MECH_NAME) {
		snprintf(s->mechanism, sizeof(s->mechanism), "%s", n ? "(invalid)" : "(none)");
		login_refuse(s, "invalid-mechanism", "no valid mechanism attribute", false);
		return;
	}
	for (size_t i = 0; i <= n; i++)
		name[i] = (char)(mech[i] >= 'a' && mech[i] <= 'z' ? mech[i] - 32 : mech[i]);
	if (!login_mech_name_ok(name)) {
		snprintf(s->mechanism, sizeof(s->mechanism), "%s", "(invalid)");
		login_refuse(s, "invalid-mechanism", "no valid mechanism attribute", false);
		return;
	}
	snprintf(s->mechanism, sizeof(s->mechanism), "%s", name);

	sasl_free(s->sasl);
	s->sasl = sasl_new(name);
	s->steps_c2s = s->steps_s2c = 0;
	s->user[0] = s->authzid[0] = s->cb[0] = '\0';
	s->identity_checked = false;
	login_decode(s, SASL_C2S, payload, &f);

	evlog_begin(s->id, "auth");
	evlog_str("mechanism", name);
	evlog_bool("tls", s->client_tls);
	evlog_bool("sasl2", sasl2);
	evlog_bool("initial_response", payload != NULL && payload->text != NULL);
	if (sasl2)
		login_user_agent(e);
	audit_sasl_fields(&f);
	evlog_end();

	if (s->starttls_stripped && !s->client_tls)
		s->downgrade_accepted = true;
	login_check_channel_binding(s);
	struct policy_input in = {
	    .step = POLICY_AUTH,
	    .mechanism = name,
	    .client_tls = s->client_tls,
	    .upstream_requires_tls = s->upstream_requires_tls,
	    .offered =
	        login_was_offered(s, name) && (!sasl2 || streamfeatures_has_sasl2(&s->up, name)),
	    .starttls_stripped = s->starttls_stripped,
	    .failures = addrtab_failures(s->px->peers, &s->peer_key, ev_now(s->px->loop)),
	    .in_flight = addrtab_inflight(s->px->peers, &s->peer_key),
	};
	struct policy_verdict v;
	policy_check(login_conf(s), &in, &v);
	if (v.action != POLICY_ALLOW)
		audit_policy(s, &v);
	if (v.action == POLICY_REJECT) {
		login_refuse(s, v.condition, v.detail, false);
		return;
	}
	if (s->client.state != CS_PREAUTH) {
		/* pipelined behind the stream header: recorded, refused */
		login_refuse_builtin(s, "sasl_order", "malformed-request",
		                     "authentication before the stream features were sent");
		return;
	}
	if (payload != NULL && payload->textlen > MAX_SASL_PAYLOAD) {
		login_refuse(s, "malformed-request", "SASL payload too large", false);
		return;
	}
	if (sasl2 && login_count_children(e, XML_NS_SASL2, "initial-response") > 1) {
		login_refuse_builtin(s, "sasl_syntax", "malformed-request",
		                     "more than one <initial-response>");
		return;
	}
	if (f.malformed && strcmp(f.reason, "invalid base64") == 0) {
		login_refuse_builtin(s, "sasl_encoding", "incorrect-encoding",
		                     "the payload is not base64 (RFC 6120 6.4.2)");
		return;
	}
	if (login_identity_refused(s, &v)) {
		login_refuse_verdict(s, &v, true);
		return;
	}
	if (login_forward_sasl(s, e, payload) < 0) {
		login_refuse_builtin(s, "sasl_encoding", "incorrect-encoding",
		                     "the payload is not base64 (RFC 6120 6.4.2)");
		return;
	}
	if (payload != NULL && payload->text != NULL)
		login_attempt_begin(s);
	login_set_state(&s->client, CS_SASL);
	login_set_state(&s->upstream, US_SASL);
}

/* Legacy authentication (XEP-0078) before SASL: refused, since it would
 * log in around every SASL rule, but recorded like any attempt, with the
 * identity it names. */
static void login_iq_auth(struct session *s, const struct xml_elem *e, const struct xml_elem *q)
{
	const struct xml_elem *user = xml_child(q, "jabber:iq:auth", "username");
	const char *type = xml_attr(e, NULL, "type");
	s->auth_tried = true;
	snprintf(s->mechanism, sizeof(s->mechanism), "%s", "jabber:iq:auth");
	if (user != NULL && user->text != NULL)
		login_copy_text(s->user, sizeof(s->user), user->text);
	evlog_begin(s->id, "auth");
	evlog_str("mechanism", "jabber:iq:auth");
	evlog_bool("tls", s->client_tls);
	evlog_bool("sasl2", false);
	evlog_bool("legacy", true);
	evlog_str("type", type);
	evlog_str("username", s->user[0] ? s->user : NULL);
	evlog_end();
	struct policy_verdict v = {.action = POLICY_REJECT, .rule = "iq_auth"};
	snprintf(v.detail, sizeof(v.detail),
	         "legacy authentication (XEP-0078) refused: it bypasses SASL");
	audit_policy(s, &v);
	audit_result(s, false, "proxy", "not-authorized", v.detail);
}

/*
 * An iq before authentication. RFC 6120 6.4.1 lets one through: in-band
 * registration (XEP-0077). Servers route an iq by its first child, so it
 * passes only as the iq's one child; legacy iq-auth, alone or smuggled
 * beside a register query, and anything else is refused with the stream.
 */
static void login_client_preauth_iq(struct session *s, const struct xml_elem *e)
{
	const struct xml_elem *auth = NULL;
	size_t n = 0;
	for (const struct xml_elem *c = e->children; c != NULL; c = c->next) {
		n++;
		if (auth == NULL && xml_is(c, "jabber:iq:auth", "query"))
			auth = c;
	}
	bool tls_ok = s->client_tls || !policy_require_tls(login_conf(s), s->upstream_requires_tls);
	bool register_only = n == 1 && xml_is(e->children, "jabber:iq:register", "query");
	if (register_only && tls_ok) {
		login_forward(&s->upstream, e);
		return;
	}
	if (auth != NULL) {
		login_iq_auth(s, e, auth);
	} else {
		struct policy_verdict v = {.action = POLICY_REJECT,
		                           .rule =
		                               register_only ? "require_tls" : "preauth_stanza"};
		snprintf(v.detail, sizeof(v.detail), "%s",
		         register_only
		             ? "in-band registration before TLS refused"
		             : "before login only an iq with one register query may pass");
		audit_policy(s, &v);
	}
	login_fail(s, "not-authorized", "authenticate first", "stanza before authentication");
}

/* A client <response> during an exchange: decoded, checked (the identity
 * may only now be named), relayed as read. */
static void login_client_response(struct session *s, const struct xml_elem *e)
{
	struct sasl_fields f;
	struct policy_verdict v;

	if (++s->steps_c2s > MAX_SASL_STEPS || e->textlen > MAX_SASL_PAYLOAD) {
		login_fail(s, "policy-violation", "SASL exchange too long",
		           "SASL exchange too long");
		return;
	}
	login_decode(s, SASL_C2S, e, &f);
	audit_sasl_step(s, "c2s", s->steps_c2s, "response", &f);
	if (login_identity_refused(s, &v)) {
		login_refuse_midway(s, &v);
		return;
	}
	bool proof = e->text != NULL;
	const struct conf *c = login_conf(s);
	if (proof && policy_auth_failures_reached(
	                 c, addrtab_failures(s->px->peers, &s->peer_key, ev_now(s->px->loop)),
	                 addrtab_inflight(s->px->peers, &s->peer_key))) {
		memset(&v, 0, sizeof(v));
		v.action = POLICY_REJECT;
		v.rule = "auth_failures";
		v.condition = "temporary-auth-failure";
		snprintf(v.detail, sizeof(v.detail),
		         "%s refused: too many recent failures and attempts in flight from this "
		         "address",
		         s->mechanism);
		login_refuse_midway(s, &v);
		return;
	}
	if (login_forward_sasl(s, e, e) < 0) {
		memset(&v, 0, sizeof(v));
		v.action = POLICY_REJECT;
		v.rule = "sasl_encoding";
		v.condition = "incorrect-encoding";
		snprintf(v.detail, sizeof(v.detail), "the payload is not base64 (RFC 6120 6.4.2)");
		login_refuse_midway(s, &v);
		return;
	}
	if (proof)
		login_attempt_begin(s);
}

static void login_client_element(struct session *s, const struct xml_elem *e)
{
	struct leg *l = &s->client;
	struct sasl_fields f;

	if (xml_is(e, XML_NS_STREAMS, "error")) {
		audit_stream_error(s, "c2s", e, NULL, NULL);
		login_fail(s, NULL, NULL, "client sent a stream error");
		return;
	}
	switch ((enum login_state)l->state) {
	case CS_PREAUTH:
		if (xml_is(e, XML_NS_TLS, "starttls")) {
			if (s->client_tls) {
				login_fail(s, "policy-violation", "TLS is already in place",
				           "STARTTLS twice");
				return;
			}
			login_send(l, "<proceed xmlns='" XML_NS_TLS "'/>",
			           sizeof("<proceed xmlns='" XML_NS_TLS "'/>") - 1);
			evlog_begin(s->id, "starttls");
			evlog_str("dir", "c2s");
			evlog_end();
			l->restart = true;
			l->to_tls = true;
			xml_stop(l->xml);
			login_set_state(l, CS_STARTTLS);
			return;
		}
		if (xml_is(e, XML_NS_SASL, "auth") ||
		    (s->up.sasl2 && xml_is(e, XML_NS_SASL2, "authenticate"))) {
			login_client_auth(s, e, strcmp(e->ns, XML_NS_SASL2) == 0);
			return;
		}
		if (xml_is(e, XML_NS_CLIENT, "iq")) {
			login_client_preauth_iq(s, e);
			return;
		}
		break;
	case CS_WAIT_UPSTREAM:
		if (xml_is(e, XML_NS_SASL, "auth") || xml_is(e, XML_NS_SASL2, "authenticate")) {
			login_client_auth(s, e, strcmp(e->ns, XML_NS_SASL2) == 0);
			return;
		}
		break;
	case CS_SASL:
		if (xml_is(e, login_sasl_ns(s), "response")) {
			login_client_response(s, e);
			return;
		}
		if (xml_is(e, login_sasl_ns(s), "abort") ||
		    (s->sasl2 &&
		     (xml_is(e, XML_NS_SASL2, "next") || xml_is(e, XML_NS_SASL2, "task-data")))) {
			/* task data (XEP-0480 upgrades) carries password hashes:
			 * only its element name is logged */
			if (++s->steps_c2s > MAX_SASL_STEPS) {
				login_fail(s, "policy-violation", "SASL exchange too long",
				           "SASL exchange too long");
				return;
			}
			memset(&f, 0, sizeof(f));
			audit_sasl_step(s, "c2s", s->steps_c2s, e->name, &f);
			login_forward(&s->upstream, e);
			return;
		}
		break;
	default:
		break;
	}
	/* RFC 6120 6.4.1: no stanzas before authentication */
	if (strcmp(e->ns, XML_NS_CLIENT) == 0)
		login_fail(s, "not-authorized", "authenticate first",
		           "stanza before authentication");
	else
		login_fail(s, "unsupported-stanza-type", "unexpected element during login",
		           "unexpected client element");
}

/* ---- the upstream leg ---- */

static void login_upstream_open(struct session *s, const struct xml_elem *hdr, uint64_t end)
{
	struct leg *u = &s->upstream;
	const char *version = xml_attr(hdr, NULL, "version");

	u->stream_n++;
	audit_stream(u, login_is_client(u), hdr);
	if (s->relay) {
		/* the header goes to the client as it was: its prefix is the one
		 * our own errors must use. While the features are held, so is the
		 * header (bytes [0, end) of the held stream). */
		if (strlen(hdr->prefix) >= sizeof(s->client.out_prefix)) {
			login_upstream_fault(s, "bad-namespace-prefix",
			                     "the stream prefix is too long");
			return;
		}
		snprintf(s->client.out_prefix, sizeof(s->client.out_prefix), "%s", hdr->prefix);
		if (u->state == US_RELAY_HOLD) {
			s->held_hdr = true;
			s->held_hdr_end = end;
		} else {
			s->client.hdr_sent = true;
		}
		return;
	}
	if (strcmp(xml_default_ns(u->xml), XML_NS_CLIENT) != 0) {
		login_upstream_fault(s, "invalid-namespace",
		                     "the content namespace must be jabber:client");
		return;
	}
	if (version == NULL || strncmp(version, "1.", 2) != 0) {
		login_fail(s, "remote-connection-failed", "the server does not speak XMPP 1.0",
		           "upstream stream version not 1.x");
		return;
	}
	login_set_state(u, US_FEATURES);
}

static void login_upstream_ready(struct session *s)
{
	s->upstream_ready = true;
	session_connect_timer(s, false);
	login_set_state(&s->upstream, US_READY);
	if (s->client.state == CS_WAIT_UPSTREAM) {
		leg_set_reading(&s->client, true);
		login_client_features(s);
	}
}

static void login_upstream_features(struct session *s, const struct xml_elem *e)
{
	struct leg *u = &s->upstream;
	const struct conf *c = login_conf(s);

	if (streamfeatures_parse(&s->up, e) < 0) {
		session_close(s, "out of memory");
		return;
	}
	if (u->stream_n == 1) {
		/* Over Direct TLS the server never says whether it requires TLS
		 * (it has it from the first byte): require_tls = auto takes it
		 * that it does, rather than let PLAIN cross the client leg in
		 * the clear to a server that would have refused it so. */
		s->upstream_starttls = s->up.starttls;
		s->upstream_requires_tls = s->up.starttls == SF_STARTTLS_REQUIRED ||
		                           c->upstream_tls == CONF_UPSTREAM_DIRECT;
	}
	if (c->upstream_tls == CONF_UPSTREAM_STARTTLS && !s->upstream_tls) {
		if (s->up.starttls == SF_STARTTLS_NONE) {
			evlog_begin(s->id, "tls");
			evlog_str("leg", "upstream");
			evlog_bool("ok", false);
			evlog_str("error", "the server does not offer STARTTLS");
			evlog_end();
			login_fail(s, "remote-connection-failed",
			           "the server does not offer STARTTLS",
			           "upstream offers no STARTTLS");
			return;
		}
		login_send(u, "<starttls xmlns='" XML_NS_TLS "'/>",
		           sizeof("<starttls xmlns='" XML_NS_TLS "'/>") - 1);
		evlog_begin(s->id, "starttls");
		evlog_str("dir", "c2s");
		evlog_str("leg", "upstream");
		evlog_end();
		login_set_state(u, US_PROCEED);
		return;
	}
	login_upstream_ready(s);
}

/* After <success>: both legs relay from here on, still parsed. */
static void login_enter_relay(struct session *s)
{
	s->relay = true;
	s->client.relay_clean = true;
	s->upstream.relay_clean = true;
	size_t max = login_conf(s)->max_stanza;
	xml_set_max_stanza(s->client.xml, max);
	xml_set_max_stanza(s->upstream.xml, max);
	login_set_state(&s->client, CS_RELAY);
	/* while users_deny/users_allow wait for the bound JID, the client's
	 * stanzas wait too, and the login timer keeps running */
	if (policy_checks_identity(login_conf(s)) && s->jid == NULL)
		s->gate = SESSION_GATE_UNBOUND;
	else
		session_login_done(s);
}

static void login_set_jid(struct session *s, const char *jid)
{
	free(s->jid);
	s->jid = strdup(jid);
	if (s->jid == NULL)
		session_close(s, "out of memory");
}

/* The server granted what the proxy's rules refuse: the client hears
 * policy-violation instead, the server's stream ends. */
static void login_refuse_granted(struct session *s, const struct policy_verdict *v,
                                 const char *reason)
{
	login_attempt_end(s);
	audit_policy(s, v);
	s->outcome = SESSION_OUTCOME_FAILURE;
	s->outcome_by = "proxy";
	snprintf(s->condition, sizeof(s->condition), "%s", "policy-violation");
	login_end(s, "policy-violation", "this identity is not allowed here", reason);
}

/*
 * users_deny/users_allow once more on the JID the server bound (or
 * granted in SASL2's authorization-identifier), in the server's own
 * normalised form and with its own domain: a name spelled to slip past
 * the check on the SASL identity is caught here, before the client can
 * use the session. Returns false when refused (the session is ending).
 */
static bool login_bound_identity_allowed(struct session *s)
{
	const struct conf *c = login_conf(s);
	if (!policy_checks_identity(c))
		return true;
	const char *jid = s->jid != NULL ? s->jid : "";
	size_t len = strlen(jid), rest = strcspn(jid, "/");
	const char *at = memchr(jid, '@', rest);
	char local[MAX_JID + 1], domain[MAX_JID + 1];
	size_t ll = at ? (size_t)(at - jid) : 0;
	size_t dl = at ? rest - ll - 1 : rest;
	snprintf(local, sizeof(local), "%.*s", (int)(ll < sizeof(local) ? ll : 0), jid);
	snprintf(domain, sizeof(domain), "%.*s", (int)(dl < sizeof(domain) ? dl : 0),
	         at ? at + 1 : jid);
	struct policy_input in = {.step = POLICY_IDENTITY,
	                          .mechanism = s->mechanism,
	                          .client_tls = s->client_tls,
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
	if (s->jid == NULL && xml_child(e, "urn:xmpp:bind:0", "bound") == NULL)
		return true; /* the iq bind will say, and the gate waits for it */
	return login_bound_identity_allowed(s);
}

/* XEP-0388 success: the stream goes on without a restart. The identity
 * the server granted, and an inline Bind2 result, end the login. */
static void login_sasl2_success(struct session *s, const struct xml_elem *e, uint64_t end)
{
	const struct xml_elem *bound = xml_child(e, "urn:xmpp:bind:0", "bound");
	login_enter_relay(s);
	/* No restart: what follows </success> is held until its first element
	 * is known, so that features there can be rewritten (compression). */
	s->upstream.relay_from = end;
	s->first_pending = true;
	login_set_state(&s->upstream, US_RELAY_FIRST);
	if (bound != NULL) {
		evlog_begin(s->id, "bind");
		evlog_bool("ok", true);
		evlog_bool("bind2", true);
		evlog_str("jid", s->jid);
		evlog_end();
		/* bound inline: no iq bind will come, names are enough now */
		xml_set_build(s->client.xml, false);
		xml_set_build(s->upstream.xml, false);
	}
	audit_login(s);
}

/* The server's <success>: checked before the client hears it. An identity
 * rule whose check never ran (no payload ever named anyone) fails closed. */
static void login_upstream_success(struct session *s, const struct xml_elem *e, uint64_t end)
{
	struct sasl_fields f;
	const struct xml_elem *data = s->sasl2 ? xml_child(e, XML_NS_SASL2, "additional-data") : e;
	if (data != NULL && data->text != NULL) {
		login_decode(s, SASL_S2C, data, &f);
		audit_sasl_step(s, "s2c", ++s->steps_s2c, "success", &f);
	}
	if (policy_checks_identity(login_conf(s)) && !s->identity_checked) {
		struct policy_verdict v = {.action = POLICY_REJECT,
		                           .rule = login_conf(s)->nusers_deny ? "users_deny"
		                                                              : "users_allow"};
		snprintf(v.detail, sizeof(v.detail),
		         "%s succeeded without naming an identity the proxy could check",
		         s->mechanism);
		login_refuse_granted(s, &v, "identity never checked");
		return;
	}
	if (s->sasl2 && !login_sasl2_granted(s, e))
		return;
	login_attempt_end(s);
	audit_result(s, true, "upstream", NULL, NULL);
	login_forward(&s->client, e);
	if (s->closing)
		return;
	if (s->sasl2) {
		login_sasl2_success(s, e, end);
		return;
	}
	/* RFC 6120 6.4.6: both streams restart. The client's parser is
	 * idle now; ours is inside this callback. */
	login_enter_relay(s);
	if (xml_reset(s->client.xml) < 0) {
		session_close(s, "out of memory");
		return;
	}
	s->client.hdr_sent = false;
	s->upstream.hdr_sent = false;
	s->upstream.restart = true;
	xml_stop(s->upstream.xml);
	login_set_state(&s->upstream, US_RELAY_HOLD);
}

static void login_upstream_sasl(struct session *s, const struct xml_elem *e, uint64_t end)
{
	struct sasl_fields f;
	const char *ns = login_sasl_ns(s);

	if (xml_is(e, ns, "challenge")) {
		if (++s->steps_s2c > MAX_SASL_STEPS || e->textlen > MAX_SASL_PAYLOAD) {
			login_upstream_fault(s, "policy-violation", "SASL exchange too long");
			return;
		}
		login_attempt_end(s);
		login_decode(s, SASL_S2C, e, &f);
		audit_sasl_step(s, "s2c", s->steps_s2c, "challenge", &f);
		login_forward(&s->client, e);
		return;
	}
	if (xml_is(e, ns, "success")) {
		login_upstream_success(s, e, end);
		return;
	}
	if (s->sasl2 &&
	    (xml_is(e, XML_NS_SASL2, "continue") || xml_is(e, XML_NS_SASL2, "task-data"))) {
		if (++s->steps_s2c > MAX_SASL_STEPS) {
			login_upstream_fault(s, "policy-violation", "SASL exchange too long");
			return;
		}
		login_attempt_end(s);
		memset(&f, 0, sizeof(f));
		audit_sasl_step(s, "s2c", s->steps_s2c, e->name, &f);
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
		if (s->swallow_failure) {
			/* the answer to our own <abort/>; the client may already
			 * have started its next exchange, which goes on */
			s->swallow_failure = false;
			if (s->client.state != CS_SASL)
				login_set_state(&s->upstream, US_READY);
			return;
		}
		login_set_state(&s->upstream, US_READY);
		login_attempt_end(s);
		audit_result(s, false, "upstream", cond, text);
		login_set_state(&s->client, CS_PREAUTH);
		struct buf b = {0};
		if (xml_write(&b, e, XML_NS_CLIENT) < 0) {
			buf_free(&b);
			session_close(s, "out of memory");
			return;
		}
		login_send_failure(s, &b,
		                   cond == NULL || (strcmp(cond, "aborted") != 0 &&
		                                    strcmp(cond, "temporary-auth-failure") != 0));
		return;
	}
	login_fail(s, "remote-connection-failed", "unexpected element from the server",
	           "unexpected upstream element during SASL");
}

/* A stream error condition from the server as the client may hear it: one
 * RFC 6120 4.9.3 defines, else undefined-condition. */
static const char *login_stream_condition(const char *cond)
{
	static const char *const known[] = {
	    "bad-format",
	    "bad-namespace-prefix",
	    "conflict",
	    "connection-timeout",
	    "host-gone",
	    "host-unknown",
	    "improper-addressing",
	    "internal-server-error",
	    "invalid-from",
	    "invalid-namespace",
	    "invalid-xml",
	    "not-authorized",
	    "not-well-formed",
	    "policy-violation",
	    "remote-connection-failed",
	    "reset",
	    "resource-constraint",
	    "restricted-xml",
	    "see-other-host",
	    "system-shutdown",
	    "undefined-condition",
	    "unsupported-encoding",
	    "unsupported-feature",
	    "unsupported-stanza-type",
	    "unsupported-version",
	};
	for (size_t i = 0; cond != NULL && i < sizeof(known) / sizeof(known[0]); i++)
		if (strcmp(cond, known[i]) == 0)
			return known[i];
	return "undefined-condition";
}

static void login_upstream_element(struct session *s, const struct xml_elem *e, uint64_t end)
{
	struct leg *u = &s->upstream;

	if (xml_is(e, XML_NS_STREAMS, "error")) {
		const char *cond, *text;
		audit_stream_error(s, "s2c", e, &cond, &text);
		/* the client hears the server's own condition, if RFC 6120
		 * defines it */
		login_fail(s, login_stream_condition(cond), text, "upstream sent a stream error");
		return;
	}
	switch ((enum login_state)u->state) {
	case US_FEATURES:
		if (xml_is(e, XML_NS_STREAMS, "features")) {
			login_upstream_features(s, e);
			return;
		}
		break;
	case US_PROCEED:
		if (xml_is(e, XML_NS_TLS, "proceed")) {
			u->restart = true;
			u->to_tls = true;
			xml_stop(u->xml);
			login_set_state(u, US_STARTTLS);
			return;
		}
		if (xml_is(e, XML_NS_TLS, "failure")) {
			login_fail(s, "remote-connection-failed", "the server refused STARTTLS",
			           "upstream STARTTLS failure");
			return;
		}
		break;
	case US_READY:
		if (xml_is(e, XML_NS_CLIENT, "iq")) {
			login_forward(&s->client, e);
			return;
		}
		break;
	case US_SASL:
		/* the answer to a registration iq the client sent just before
		 * its <auth> may come in the middle of the exchange */
		if (xml_is(e, XML_NS_CLIENT, "iq")) {
			login_forward(&s->client, e);
			return;
		}
		login_upstream_sasl(s, e, end);
		return;
	default:
		break;
	}
	login_fail(s, "remote-connection-failed", "unexpected element from the server",
	           "unexpected upstream element");
}

/* ---- after success: relayed, still watched ---- */

#define XML_NS_SM_PREFIX "urn:xmpp:sm:"
#define XML_NS_COMPRESS "http://jabber.org/protocol/compress"
#define XML_NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

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
static void login_gate_release(struct session *s, uint64_t upto)
{
	struct leg *c = &s->client;
	size_t n = upto > c->relay_from ? (size_t)(upto - c->relay_from) : 0;
	if (n > c->hold.len)
		n = c->hold.len;
	if (n > 0)
		login_send(&s->upstream, buf_head(&c->hold), n);
	buf_consume(&c->hold, n);
	c->relay_from += n;
	c->relay_clean = true;
}

static void login_gate_refuse(struct session *s, const char *detail, const char *reason)
{
	struct policy_verdict v = {.action = POLICY_REJECT, .rule = "bind_first"};
	snprintf(v.detail, sizeof(v.detail), "%s", detail);
	audit_policy(s, &v);
	login_end(s, "not-authorized", "bind a resource first", reason);
}

/* XEP-0198 resume, while an identity rule waits for a bound JID: the
 * proxy cannot know whose session it restores, so it answers the resume
 * itself as failed (the client then binds anew, XEP-0198 4) and the
 * server never sees it. */
static void login_gate_resume(struct session *s, const struct xml_elem *e, uint64_t start,
                              uint64_t end)
{
	struct leg *c = &s->client;
	login_gate_release(s, start);
	size_t n = (size_t)(end - start) < c->hold.len ? (size_t)(end - start) : c->hold.len;
	buf_consume(&c->hold, n);
	c->relay_from += n;
	if (!login_can_write_stream(c)) {
		login_gate_refuse(s, "XEP-0198 resume while the server's stream was mid-stanza",
		                  "resume before resource binding");
		return;
	}
	struct policy_verdict v = {.action = POLICY_REJECT, .rule = "bind_first"};
	snprintf(v.detail, sizeof(v.detail),
	         "XEP-0198 resume answered as failed: its JID cannot be checked; bind instead");
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
		s->gate = SESSION_GATE_BINDING;
		s->gate_held = false;
		return;
	}
	if (strcmp(e->name, "resume") == 0 &&
	    strncmp(e->ns, XML_NS_SM_PREFIX, strlen(XML_NS_SM_PREFIX)) == 0) {
		login_gate_resume(s, e, start, end);
		return;
	}
	/* RFC 6120 7.1: nothing but the bind before a resource is bound */
	char detail[160];
	snprintf(detail, sizeof(detail), "%.40s before the bound JID was checked (RFC 6120 7.1)",
	         e->name);
	login_gate_refuse(s, detail, "element before resource binding");
}

/* The bound JID passed: what the client sent meanwhile goes to the
 * server, in order, and its input flows again. */
static void login_gate_open(struct session *s)
{
	struct leg *c = &s->client;
	s->gate = SESSION_GATE_OPEN;
	session_login_done(s);
	if (c->hold.len > 0)
		login_send(&s->upstream, buf_head(&c->hold), c->hold.len);
	buf_free(&c->hold);
	c->relay_clean = xml_at_boundary(c->xml);
	leg_set_reading(c, true);
}

/* The bind failed: the client may try again, unless it already pipelined
 * elements behind it, which an unbound session may not send. */
static void login_gate_retry(struct session *s)
{
	if (s->gate_held) {
		login_gate_refuse(s, "elements pipelined behind a bind that failed (RFC 6120 7.1)",
		                  "element pipelined behind a failed bind");
		return;
	}
	/* what is held is whitespace or the start of the next element,
	 * judged when it is complete */
	s->gate = SESSION_GATE_UNBOUND;
	leg_set_reading(&s->client, true);
}

/* After login nothing may authenticate, start TLS or compress again:
 * the server would take a second login that no rule has seen. */
static bool login_is_login_element(const struct xml_elem *e)
{
	return strcmp(e->ns, XML_NS_SASL) == 0 || strcmp(e->ns, XML_NS_SASL2) == 0 ||
	       strcmp(e->ns, XML_NS_TLS) == 0 || strcmp(e->ns, XML_NS_COMPRESS) == 0;
}

static void login_relay_c2s(struct session *s, const struct xml_elem *e, uint64_t start,
                            uint64_t end)
{
	if (xml_is(e, XML_NS_STREAMS, "error")) {
		audit_stream_error(s, "c2s", e, NULL, NULL);
		return;
	}
	if (login_is_login_element(e)) {
		struct policy_verdict v = {.action = POLICY_REJECT, .rule = "after_login"};
		snprintf(v.detail, sizeof(v.detail),
		         "<%.40s> after login: a second login or TLS no rule could see", e->name);
		audit_policy(s, &v);
		login_end(s, "policy-violation", "already authenticated",
		          "login element after login");
		return;
	}
	if (s->gate == SESSION_GATE_BINDING) {
		s->gate_held = true;
		return;
	}
	if (s->gate == SESSION_GATE_UNBOUND) {
		login_gate_unbound(s, e, start, end);
		if (s->closing)
			return;
	}
	if (s->jid != NULL || !xml_is(e, XML_NS_CLIENT, "iq"))
		return;
	const char *type = xml_attr(e, NULL, "type");
	if (login_is_bind(e)) {
		const struct xml_elem *r = xml_child(e->children, XML_NS_BIND, "resource");
		free(s->bind_resource);
		s->bind_resource = r != NULL && r->text != NULL ? strdup(r->text) : NULL;
		s->bind_pending = true;
		if (!login_take_attr(&s->bind_id, e, "id"))
			session_close(s, "out of memory");
	} else if (type != NULL && strcmp(type, "set") == 0 &&
	           xml_child(e, XML_NS_SESSION, "session") != NULL) {
		s->session_pending = true;
		if (!login_take_attr(&s->session_iq_id, e, "id"))
			session_close(s, "out of memory");
	}
}

/* The server answered the bind. */
static void login_bind_answer(struct session *s, const struct xml_elem *e)
{
	const struct xml_elem *b = xml_child(e, XML_NS_BIND, "bind");
	const struct xml_elem *j = b ? xml_child(b, XML_NS_BIND, "jid") : NULL;
	bool ok = strcmp(xml_attr(e, NULL, "type"), "result") == 0;
	s->bind_pending = false;
	if (ok && j != NULL && j->text != NULL) {
		login_set_jid(s, j->text);
		if (s->closing)
			return;
	}
	evlog_begin(s->id, "bind");
	evlog_bool("ok", ok);
	evlog_str("resource", s->bind_resource);
	evlog_str("jid", ok ? s->jid : NULL);
	evlog_end();
	if (!ok) {
		if (s->gate == SESSION_GATE_BINDING)
			login_gate_retry(s);
		return;
	}
	if (!login_bound_identity_allowed(s))
		return;
	audit_login(s);
	/* the login is over: names are enough from now on */
	xml_set_build(s->client.xml, false);
	xml_set_build(s->upstream.xml, false);
	if (s->gate != SESSION_GATE_OPEN)
		login_gate_open(s);
}

static void login_relay_s2c(struct session *s, const struct xml_elem *e)
{
	if (xml_is(e, XML_NS_STREAMS, "error")) {
		audit_stream_error(s, "s2c", e, NULL, NULL);
		return;
	}
	if (s->bind_pending && login_is_answer(e, s->bind_id)) {
		login_bind_answer(s, e);
	} else if (s->session_pending && login_is_answer(e, s->session_iq_id)) {
		evlog_begin(s->id, "session");
		evlog_bool("ok", strcmp(xml_attr(e, NULL, "type"), "result") == 0);
		evlog_end();
		s->session_pending = false;
	}
}

/* The post-login features: held until complete, then rewritten so that
 * compression (which would turn the stream into zlib) is not offered. */
static void login_relay_features(struct session *s, const struct xml_elem *e, uint64_t start,
                                 uint64_t end)
{
	struct leg *u = &s->upstream;
	struct streamfeatures f = {0};

	if (streamfeatures_parse(&f, e) < 0) {
		session_close(s, "out of memory");
		return;
	}
	/* the held bytes begin at offset 0 of this stream; the header may
	 * have gone out already, ahead of an error */
	size_t from = s->client.hdr_sent ? (size_t)s->held_hdr_end : 0;
	login_send(&s->client, buf_head(&u->hold) + from, (size_t)start - from);
	s->client.hdr_sent = true;
	struct buf b = {0};
	streamfeatures_write(&b, s->client.out_prefix, f.starttls, (const char *const *)f.mechs,
	                     f.nmechs, NULL, 0, true, &f);
	login_send_buf(&s->client, &b);
	evlog_begin(s->id, "features");
	evlog_int("n", u->stream_n);
	evlog_bool("tls", s->client_tls);
	evlog_bool("authenticated", true);
	if (f.compression)
		evlog_bool("compression_removed", true);
	evlog_end();
	streamfeatures_free(&f);
	buf_consume(&u->hold, (size_t)end);
	login_set_state(u, US_RELAY);
}

/* The first element after a SASL2 success: features are rewritten like
 * the post-restart ones; anything else goes as it is. login_data() sends
 * the held bytes once this has run. */
static void login_relay_first(struct session *s, const struct xml_elem *e, uint64_t start,
                              uint64_t end)
{
	struct leg *u = &s->upstream;
	s->first_replace = xml_is(e, XML_NS_STREAMS, "features");
	if (s->first_replace) {
		struct streamfeatures f = {0};
		if (streamfeatures_parse(&f, e) < 0) {
			session_close(s, "out of memory");
			return;
		}
		streamfeatures_write(&s->first_repl, s->client.out_prefix, f.starttls,
		                     (const char *const *)f.mechs, f.nmechs, NULL, 0, true, &f);
		evlog_begin(s->id, "features");
		evlog_int("n", u->stream_n);
		evlog_bool("tls", s->client_tls);
		evlog_bool("authenticated", true);
		if (f.compression)
			evlog_bool("compression_removed", true);
		evlog_end();
		streamfeatures_free(&f);
		s->first_start = start;
		s->first_end = end;
	} else {
		login_relay_s2c(s, e);
	}
	login_set_state(u, US_RELAY);
}

/* After a SASL2 success, bytes wait in the hold buffer (hold[0] is
 * stream offset relay_from) until the first element is complete; then
 * they go out, rewritten features in place of the original. */
static void login_release_first(struct leg *l, const char *data, size_t used, uint64_t base)
{
	struct session *s = login_session(l);
	size_t from = l->relay_from > base ? (size_t)(l->relay_from - base) : 0;
	if (from < used && buf_add(&l->hold, data + from, used - from) < 0) {
		session_close(s, "out of memory");
		return;
	}
	if (l->state == US_RELAY_FIRST) {
		if (l->hold.len > login_conf(s)->max_stanza)
			login_fail(s, "remote-connection-failed",
			           "the server's first stanza is too large",
			           "upstream stanza after SASL2 success too large");
		return;
	}
	s->first_pending = false;
	if (s->first_replace) {
		size_t a = (size_t)(s->first_start - l->relay_from);
		size_t b = (size_t)(s->first_end - l->relay_from);
		login_send(l->peer, buf_head(&l->hold), a);
		login_send_buf(l->peer, &s->first_repl);
		login_send(l->peer, buf_head(&l->hold) + b, l->hold.len - b);
	} else {
		login_send(l->peer, buf_head(&l->hold), l->hold.len);
	}
	buf_free(&l->hold);
	l->relay_clean = xml_at_boundary(l->xml);
}

/* ---- parser callbacks ---- */

static void login_on_open(void *ctx, const struct xml_elem *hdr, uint64_t end)
{
	struct leg *l = ctx;
	if (login_is_client(l))
		login_client_open(login_session(l), hdr, end);
	else
		login_upstream_open(login_session(l), hdr, end);
}

static void login_on_element(void *ctx, const struct xml_elem *e, uint64_t start, uint64_t end)
{
	struct leg *l = ctx;
	struct session *s = login_session(l);

	if (s->closing) {
		xml_stop(l->xml);
		return;
	}
	if (login_is_client(l)) {
		if (s->relay)
			login_relay_c2s(s, e, start, end);
		else
			login_client_element(s, e);
	} else if (l->state == US_RELAY_HOLD && xml_is(e, XML_NS_STREAMS, "features")) {
		login_relay_features(s, e, start, end);
	} else if (l->state == US_RELAY_FIRST) {
		login_relay_first(s, e, start, end);
	} else if (l->state == US_RELAY_HOLD) {
		/* not features (a stream error, most likely): nothing to rewrite,
		 * the client gets the held bytes as they are and what follows
		 * (login_data sends them), less a header already released */
		login_relay_s2c(s, e);
		if (s->client.hdr_sent)
			buf_consume(&l->hold, (size_t)s->held_hdr_end);
		s->client.hdr_sent = true;
		login_set_state(l, US_RELAY);
	} else if (s->relay) {
		login_relay_s2c(s, e);
	} else {
		login_upstream_element(s, e, end);
	}
	if (s->closing)
		xml_stop(l->xml);
}

/* Fires on </stream:stream>. */
static void login_on_close(void *ctx)
{
	struct leg *l = ctx;
	struct session *s = login_session(l);

	if (s->relay) {
		/* forwarded as it is; the TCP close that follows ends the session */
		if (s->ended_by == NULL)
			s->ended_by = login_is_client(l) ? "client ended the stream"
			                                 : "server ended the stream";
		return;
	}
	if (login_is_client(l)) {
		login_fail(s, NULL, NULL, "client closed the stream");
	} else {
		evlog_begin(s->id, "stream_error");
		evlog_str("dir", "s2c");
		evlog_str("condition", NULL);
		evlog_str("text", "the server closed the stream during login");
		evlog_end();
		login_fail(s, "remote-connection-failed", "the server closed the stream",
		           "upstream closed the stream");
	}
	xml_stop(l->xml);
}

static const struct xml_handler login_xml_handler = {
    .open = login_on_open,
    .element = login_on_element,
    .close = login_on_close,
};

static const char *login_xml_condition(enum xml_error err)
{
	switch (err) {
	case XML_E_RESTRICTED:
		return "restricted-xml";
	case XML_E_INVALID_NAMESPACE:
		return "invalid-namespace";
	case XML_E_BAD_PREFIX:
		return "bad-namespace-prefix";
	case XML_E_POLICY:
		return "policy-violation";
	case XML_E_NOMEM:
		return "resource-constraint";
	default:
		return "not-well-formed";
	}
}

/* A leg sent XML the proxy cannot accept: that leg hears why; the other
 * leg's stream ends (the client hears the server failed). */
static void login_bad_xml(struct leg *l, enum xml_error err)
{
	struct session *s = login_session(l);
	const char *cond = login_xml_condition(err);
	const char *why = xml_error_text(l->xml);
	char reason[200];

	if (!login_is_client(l)) {
		login_upstream_fault(s, cond, why);
		return;
	}
	snprintf(reason, sizeof(reason), "client sent bad XML: %s (%s)", cond, why);
	login_stream_error(l, cond, why);
	login_stream_end(&s->upstream);
	session_close(s, reason);
}

/* Starts TLS on a leg whose parser just stopped at <starttls/> (client)
 * or <proceed/> (upstream). Whatever followed in the same read must be
 * whitespace: TLS begins right after the '>'. */
static void login_begin_tls(struct leg *l, const char *rest, size_t len)
{
	struct session *s = login_session(l);
	for (size_t i = 0; i < len; i++) {
		if (rest[i] != ' ' && rest[i] != '\t' && rest[i] != '\r' && rest[i] != '\n') {
			if (login_is_client(l))
				login_fail(s, NULL, NULL,
				           "client sent data before the TLS handshake");
			else
				login_fail(s, "remote-connection-failed",
				           "bad STARTTLS from the server",
				           "upstream sent data before the TLS handshake");
			return;
		}
	}
	SSL *ssl = login_is_client(l) ? tls_server_new(s->px->server_ctx, l->fd)
	                              : tls_client_new(s->px->client_ctx, l->fd, s->domain,
	                                               login_conf(s)->upstream_verify,
	                                               l->state == US_TLS /* XEP-0368 ALPN */);
	if (ssl == NULL) {
		login_fail(s, "internal-server-error", NULL, "cannot create TLS session");
		return;
	}
	l->hdr_sent = false;
	leg_start_tls(l, ssl, login_is_client(l));
}

void login_data(struct leg *l, const char *data, size_t len)
{
	struct session *s = login_session(l);

	while (len > 0 && !s->closing) {
		bool relay = l->state == CS_RELAY || l->state == US_RELAY;
		bool hold = l->state == US_RELAY_HOLD;
		bool gated = relay && login_is_client(l) && s->gate != SESSION_GATE_OPEN;
		uint64_t base = xml_offset(l->xml);
		size_t used;

		if (gated && l->hold.len == 0)
			l->relay_from = base;
		if ((hold || gated) && buf_add(&l->hold, data, len) < 0) {
			session_close(s, "out of memory");
			return;
		}
		enum xml_error err = xml_feed(l->xml, data, len, &used);
		if (err != XML_OK) {
			login_bad_xml(l, err);
			return;
		}
		if (s->closing)
			return;
		if (gated) {
			/* the gate released what it let through; the rest waits */
			if (used < len)
				l->hold.len -= len - used < l->hold.len ? len - used : l->hold.len;
			if (l->hold.len > MAX_BIND_HOLD)
				leg_set_reading(l, false);
		} else if (relay) {
			login_send(l->peer, data, used);
			l->relay_clean = xml_at_boundary(l->xml);
		} else if (s->first_pending && !login_is_client(l)) {
			login_release_first(l, data, used, base);
		} else if (hold && l->state == US_RELAY) {
			/* the features were rewritten (or an error came instead):
			 * pass on what followed */
			login_send(l->peer, buf_head(&l->hold), l->hold.len);
			buf_free(&l->hold);
			l->relay_clean = xml_at_boundary(l->xml);
		} else if (hold && l->hold.len > login_conf(s)->max_stanza_prelogin) {
			login_fail(s, "remote-connection-failed",
			           "the server's features are too large",
			           "upstream features too large");
			return;
		}
		data += used;
		len -= used;
		if (l->restart) {
			l->restart = false;
			if (xml_reset(l->xml) < 0) {
				session_close(s, "out of memory");
				return;
			}
			if (l->to_tls) {
				l->to_tls = false;
				login_begin_tls(l, data, len);
				return;
			}
		}
	}
}

static void login_tls_done(struct leg *l)
{
	struct session *s = login_session(l);

	audit_tls(l, login_is_client(l), true, NULL);
	if (login_is_client(l)) {
		/* Direct TLS: the SNI names the domain until the stream header
		 * does (XEP-0368); it goes into our headers and the policy, so
		 * only a plain host name (RFC 6066 3) is taken */
		const char *sni = SSL_get_servername(l->ssl, TLSEXT_NAMETYPE_host_name);
		size_t n = sni ? strlen(sni) : 0;
		if (n > 0 && n < sizeof(s->domain) && s->domain[0] == '\0' &&
		    strspn(sni,
		           "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") == n)
			memcpy(s->domain, sni, n + 1);
		s->client_tls = true;
		login_set_state(l, CS_HEADER);
		return;
	}
	s->upstream_tls = true;
	login_upstream_header(s);
}

static void login_upstream_connected(struct session *s)
{
	struct leg *u = &s->upstream;
	const struct conf *c = login_conf(s);

	evlog_begin(s->id, "upstream");
	evlog_str("addr", s->px->upstream_name);
	evlog_bool("ok", true);
	evlog_end();
	/* until the client names its domain, the client is the slow one */
	session_connect_timer(s, false);
	login_set_state(u, c->upstream_tls == CONF_UPSTREAM_DIRECT ? US_TLS : US_WAIT_DOMAIN);
	login_start_upstream_stream(s);
}

void login_event(struct leg *l, enum leg_event ev, const char *why)
{
	struct session *s = login_session(l);
	bool client = login_is_client(l);
	char reason[300];

	switch (ev) {
	case LEG_EV_CONNECTED:
		login_upstream_connected(s);
		break;
	case LEG_EV_TLS_DONE:
		login_tls_done(l);
		break;
	case LEG_EV_TLS_ERROR:
		audit_tls(l, login_is_client(l), false, why);
		snprintf(reason, sizeof(reason), "%s TLS handshake failed: %s", login_leg_name(l),
		         why);
		if (client)
			login_fail(s, NULL, NULL, reason);
		else
			login_fail(s, "remote-connection-failed", "TLS to the server failed",
			           reason);
		break;
	case LEG_EV_EOF:
	case LEG_EV_ERROR:
		if (!client && l->state == US_CONNECTING) {
			evlog_begin(s->id, "upstream");
			evlog_str("addr", s->px->upstream_name);
			evlog_bool("ok", false);
			evlog_str("error", why);
			evlog_end();
			snprintf(reason, sizeof(reason), "upstream connect failed: %s", why);
			login_fail(s, "remote-connection-failed", "cannot reach the server",
			           reason);
			break;
		}
		snprintf(reason, sizeof(reason), "%s %s%s%s", login_leg_name(l),
		         ev == LEG_EV_EOF ? "closed the connection" : "error", why ? ": " : "",
		         why ? why : "");
		if (s->ended_by != NULL && ev == LEG_EV_EOF)
			snprintf(reason, sizeof(reason), "%s", s->ended_by);
		if (!client && (l->state == US_RELAY_HOLD || l->state == US_RELAY_FIRST)) {
			/* gone before its features: the client hears it in the
			 * server's held header */
			login_fail(s, "remote-connection-failed",
			           "the server closed the connection", reason);
		} else if (client) {
			login_stream_end(&s->upstream);
			session_close(s, reason);
		} else if (s->relay && l->xml != NULL && xml_depth(l->xml) == 0) {
			session_close(s, reason); /* the stream was closed first */
		} else {
			login_fail(s, "remote-connection-failed",
			           "the server closed the connection", reason);
		}
		break;
	default:
		break;
	}
}

void login_timeout(struct session *s, bool connect)
{
	if (s->fail_pending) {
		/* the client never opened its stream to hear why */
		session_close(s, s->fail_reason);
		return;
	}
	if (connect) {
		if (s->upstream.state == US_CONNECTING) {
			evlog_begin(s->id, "upstream");
			evlog_str("addr", s->px->upstream_name);
			evlog_bool("ok", false);
			evlog_str("error", "connect timed out");
			evlog_end();
		}
		login_fail(s, "remote-connection-failed", "the server did not answer in time",
		           "upstream timed out");
		return;
	}
	/* no waiting for a header from a client that is too slow to send one */
	login_end(s, "connection-timeout", "login not completed in time", "login timeout");
}

void login_shutdown(struct session *s)
{
	login_end(s, "system-shutdown", NULL, "proxy shutting down");
}

void login_start(struct session *s)
{
	const struct conf *c = login_conf(s);
	s->client.xml = xml_new(&login_xml_handler, &s->client, c->max_stanza_prelogin);
	s->upstream.xml = xml_new(&login_xml_handler, &s->upstream, c->max_stanza_prelogin);
	if (s->client.xml == NULL || s->upstream.xml == NULL) {
		session_close(s, "out of memory");
		return;
	}
	s->upstream.state = US_CONNECTING;
	if (s->port == SESSION_PORT_DIRECT_TLS) {
		s->client.state = CS_TLS_ACCEPT;
		SSL *ssl = tls_server_new(s->px->server_ctx, s->client.fd);
		if (ssl == NULL) {
			session_close(s, "cannot create TLS session");
			return;
		}
		leg_start_tls(&s->client, ssl, false);
	} else {
		s->client.state = CS_HEADER;
		leg_start(&s->client);
	}
}

void login_free(struct session *s)
{
	xml_free(s->client.xml);
	xml_free(s->upstream.xml);
	s->client.xml = s->upstream.xml = NULL;
	sasl_free(s->sasl);
	s->sasl = NULL;
	streamfeatures_free(&s->up);
	login_clear_offered(s);
	free(s->jid);
	free(s->bind_id);
	free(s->session_iq_id);
	free(s->bind_resource);
	s->jid = s->bind_id = s->session_iq_id = s->bind_resource = NULL;
}
