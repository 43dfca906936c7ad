/*
 * Until SASL: the client's and the server's stream headers, the server's
 * features and the proxy's own STARTTLS toward it, the features the client
 * is offered, TLS on either leg, and the one iq allowed before login.
 */

#include <stdio.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "conf.h"
#include "login_forge.h"
#include "login_int.h"
#include "proxyproto.h"
#include "transcript.h"
#include "tls.h"

static void login_clear_fast_offered(struct session *s)
{
	for (size_t i = 0; i < s->lg->ng->nfast_offered; i++)
		free(s->lg->ng->fast_offered[i]);
	s->lg->ng->nfast_offered = 0;
}

void login_clear_offered(struct session *s)
{
	for (size_t i = 0; i < s->lg->ng->noffered; i++)
		free(s->lg->ng->offered[i]);
	s->lg->ng->noffered = 0;
	login_clear_fast_offered(s);
}

/* Adds a copy of mech to a list of what the client is offered. */
static void login_offer(char **list, size_t *n, const char *mech)
{
	char *m = strdup(mech);
	if (m != NULL)
		list[(*n)++] = m;
}

/* Each of the server's mechanisms (mechs) that policy lets the client be
 * offered goes into list; what it removes is logged. */
static void login_filter_offer(struct session *s, char *const *mechs, size_t nmechs, char **list,
                               size_t *n)
{
	const struct conf *c = login_conf(s);
	for (size_t i = 0; i < nmechs; i++) {
		struct policy_input in = {.step = POLICY_OFFER,
		                          .mechanism = mechs[i],
		                          .client_tls = s->lg->client_tls,
		                          .upstream_requires_tls = s->lg->upstream_requires_tls};
		struct policy_verdict v;
		policy_check(c, &in, &v);
		if (v.action == POLICY_STRIP)
			audit_policy(s, &v);
		else
			login_offer(list, n, mechs[i]);
	}
}

/* True when the client is offered SASL mechanisms on its stream as it is
 * now: after TLS, or before it when TLS is not asked of it (or STARTTLS
 * is stripped for a downgrade test). */
bool login_offers_sasl(const struct session *s)
{
	const struct conf *c = login_conf(s);
	return s->lg->client_tls || c->strip_starttls ||
	       !policy_require_tls(c, s->lg->upstream_requires_tls);
}

/* True when the upstream's stream the login happens in is open and
 * between exchanges: what the client sends before login may go there.
 * (Not so while it waits for the client's post-TLS header, however the
 * policy changed on a reload since the client's features went out.) */
bool login_upstream_takes_login(const struct session *s)
{
	return s->lg->ustate == US_READY || s->lg->ustate == US_ABORTING;
}

/* Sends the client its features: our own <starttls>, the upstream's
 * post-TLS mechanisms filtered by policy (SASL1, SASL2 and FAST), and
 * what else it offered that the proxy can carry. */
void login_client_features(struct session *s)
{
	const struct conf *c = login_conf(s);
	struct streamfeatures_offer o = {.starttls = SF_STARTTLS_NONE};
	bool sasl_now = login_offers_sasl(s);

	if (!s->lg->client_tls && c->strip_starttls) {
		/* a lab downgrade test: does the client go on in the clear? */
		struct policy_verdict v;
		policy_rule(c, POLICY_RULE_STRIP_STARTTLS, NULL, &v);
		audit_policy(s, &v);
		s->lg->starttls_stripped = true;
	} else if (!s->lg->client_tls) {
		o.starttls = sasl_now ? SF_STARTTLS_OFFERED : SF_STARTTLS_REQUIRED;
	}
	login_clear_offered(s);
	if (sasl_now && c->noffer_mechanisms > 0) {
		/* a lab test of what the client accepts: exactly this list (and
		 * of FAST's, those of it the server has) */
		struct policy_verdict v;
		for (size_t i = 0; i < c->noffer_mechanisms; i++) {
			login_offer(s->lg->ng->offered, &s->lg->ng->noffered,
			            c->offer_mechanisms[i]);
			if (streamfeatures_has_fast(&s->lg->ng->up, c->offer_mechanisms[i]))
				login_offer(s->lg->ng->fast_offered, &s->lg->ng->nfast_offered,
				            c->offer_mechanisms[i]);
		}
		policy_rule(c, POLICY_RULE_OFFER_LIST, NULL, &v);
		audit_policy(s, &v);
	} else if (sasl_now) {
		login_filter_offer(s, s->lg->ng->up.mechs, s->lg->ng->up.nmechs, s->lg->ng->offered,
		                   &s->lg->ng->noffered);
		login_filter_offer(s, s->lg->ng->up.fast_mechs, s->lg->ng->up.nfast_mechs,
		                   s->lg->ng->fast_offered, &s->lg->ng->nfast_offered);
	}

	/* SASL2 offers the same filtered mechanisms, where the server has them */
	const char *sasl2[MAX_MECHANISMS];
	size_t nsasl2 = 0;
	for (size_t i = 0; i < s->lg->ng->noffered; i++)
		if (streamfeatures_has_sasl2(&s->lg->ng->up, s->lg->ng->offered[i]))
			sasl2[nsasl2++] = s->lg->ng->offered[i];
	/* FAST is written inside SASL2's <authentication><inline>: without
	 * them it is not offered at all (nor accepted, login_was_offered) */
	if (nsasl2 == 0 || !s->lg->ng->up.sasl2_inline)
		login_clear_fast_offered(s);
	o.mechs = (const char *const *)s->lg->ng->offered;
	o.nmechs = s->lg->ng->noffered;
	o.sasl2 = sasl2;
	o.nsasl2 = nsasl2;
	o.fast = (const char *const *)s->lg->ng->fast_offered;
	o.nfast = s->lg->ng->nfast_offered;
	o.others = sasl_now;
	struct buf b = {0};
	streamfeatures_write(&b, s->lg->cl.out_prefix, &o, &s->lg->ng->up);
	transcript_note(s->transcript, "the proxy's own features follow, rewritten by policy from "
	                               "the server's last ones");
	login_send_buf(&s->client, &b);

	audit_features(s, o.starttls, sasl2, nsasl2);
	login_client_enter(s, CS_PREAUTH);
}

/*
 * After the upstream's TLS handshake its next header opens the stream the
 * login happens in, and carries the client's 'from' (RFC 6120 4.7.1: a
 * client sends it once its stream is encrypted; mod_sasl2_fast offers
 * FAST only to a stream with it). So it waits for the client's header on
 * the stream the client logs in on: its first header after TLS, or the
 * one in the clear when the client is offered SASL in the clear (then
 * recorded as that header). True once that header is here.
 */
bool login_client_login_header(struct session *s)
{
	if (!s->lg->client_login_hdr && !s->lg->client_tls && s->lg->cl.stream_n > 0 &&
	    login_offers_sasl(s))
		s->lg->client_login_hdr = true;
	return s->lg->client_login_hdr;
}

/* Keeps the 'from' of the client's stream header for our own header
 * toward the server; one longer than a JID can be is not passed on. */
static void login_keep_client_from(struct session *s, const char *from)
{
	free(s->lg->client_from);
	s->lg->client_from = NULL;
	if (from != NULL && from[0] != '\0' && strlen(from) <= MAX_JID)
		s->lg->client_from = strdup(from);
}

/*
 * upstream_proxy_protocol: the PROXY header, the connection's first bytes,
 * sent as soon as it is up. The connection was made once the client's
 * domain was known (login_start_upstream_stream), so the header can name
 * the domain and, for a Direct TLS client, its TLS version. False if the
 * session ended.
 */
bool login_proxy_header(struct session *s)
{
	const struct conf *c = login_conf(s);
	if (c->upstream_proxy_protocol == CONF_PROXY_OFF)
		return true;
	/* the client's own addresses, also behind a balancer (its header) */
	struct proxyproto_info in = {
	    .src = (const struct sockaddr *)&s->peer_sa,
	    .dst = (const struct sockaddr *)&s->dst_sa,
	    .authority = s->lg->domain,
	    .tls_version = s->lg->client_tls ? s->lg->client_tls_version : NULL,
	    .sid = s->id,
	};
	struct buf b = {0};
	int rc = c->upstream_proxy_protocol == CONF_PROXY_V1 ? proxyproto_v1(&b, &in)
	                                                     : proxyproto_v2(&b, &in);
	if (rc < 0) {
		buf_free(&b);
		session_close(s, "out of memory");
		return false;
	}
	login_send_buf(&s->upstream, &b);
	return !s->closing;
}

/* The upstream stream starts once both the connection and the client's
 * domain are there (with Direct TLS the domain is the SNI). */
void login_start_upstream_stream(struct session *s)
{
	if (s->lg->domain[0] == '\0')
		return;
	if (s->lg->connect_deferred) {
		s->lg->connect_deferred = false;
		session_connect_upstream(s); /* login_upstream_connected() goes on */
		return;
	}
	if (s->lg->ustate == US_TLS_WAIT_DOMAIN)
		login_upstream_enter(s, US_TLS);
	else if (s->lg->ustate == US_WAIT_DOMAIN)
		login_upstream_enter(s, US_HEADER);
}

/* Fires for every stream header the client sends; end is the offset just
 * past it. */
void login_client_open(struct session *s, const struct xml_elem *hdr, uint64_t end)
{
	struct leg *l = &s->client;
	const char *to = xml_attr(hdr, NULL, "to");
	const char *version = xml_attr(hdr, NULL, "version");
	const char *lang = xml_attr(hdr, XML_NS_XML, "lang");

	login_ll(l)->stream_n++;
	audit_stream(l, login_is_client(l), hdr);
	if (login_relaying(s) && s->lg->fail_deferred) {
		login_end_deferred(s); /* the server went away before this header */
		return;
	}
	if (login_relaying(s)) {
		/* forwarded as it is: remember its prefix for errors we add */
		if (strlen(hdr->prefix) >= sizeof(s->lg->ul.out_prefix)) {
			login_end(s, "bad-namespace-prefix", "the stream prefix is too long",
			          "client stream prefix too long");
			return;
		}
		snprintf(s->lg->ul.out_prefix, sizeof(s->lg->ul.out_prefix), "%s", hdr->prefix);
		s->lg->ul.hdr_sent = true;
		if (s->lg->gate != SESSION_GATE_OPEN)
			login_gate_release(s, end); /* the header goes on; what follows waits */
		return;
	}

	if (lang != NULL && strlen(lang) < sizeof(s->lg->xml_lang) &&
	    strspn(lang, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") ==
	        strlen(lang))
		snprintf(s->lg->xml_lang, sizeof(s->lg->xml_lang), "%s", lang);
	bool bad_to = to != NULL && (strlen(to) >= sizeof(s->lg->domain) || strchr(to, '@') ||
	                             strchr(to, '/') || to[0] == '\0');
	if (to != NULL && !bad_to && s->lg->domain[0] == '\0')
		snprintf(s->lg->domain, sizeof(s->lg->domain), "%s", to);
	/* the client opened its stream: whatever follows is answered in ours */
	login_client_header(s);
	if (strcmp(xml_default_ns(login_ll(l)->xml), XML_NS_CLIENT) != 0) {
		login_fail(s, "invalid-namespace", "the content namespace must be jabber:client",
		           "client stream not in jabber:client");
		return;
	}
	if (bad_to || s->lg->domain[0] == '\0') {
		login_fail(s, "host-unknown",
		           bad_to ? "bad domain in 'to'" : "the stream has no 'to'",
		           bad_to ? "bad stream 'to'" : "no domain from client");
		return;
	}
	if (s->lg->fail_deferred) {
		login_end_deferred(s);
		return;
	}
	if (version == NULL || strncmp(version, "1.", 2) != 0) {
		login_fail(s, "unsupported-version", NULL, "client stream version not 1.x");
		return;
	}
	login_keep_client_from(s, xml_attr(hdr, NULL, "from"));
	if (s->lg->client_tls)
		s->lg->client_login_hdr = true;
	login_start_upstream_stream(s);
	if (s->lg->ustate == US_WAIT_CLIENT && login_client_login_header(s))
		login_upstream_enter(s, US_HEADER);
	if (s->lg->ustate == US_READY ||
	    (s->lg->ustate == US_WAIT_CLIENT && !login_offers_sasl(s))) {
		login_client_features(s);
	} else {
		login_client_enter(s, CS_WAIT_UPSTREAM);
		leg_set_reading(l, false);
	}
}

/* Legacy authentication (XEP-0078) before SASL: refused, since it would
 * log in around every SASL rule, but recorded like any attempt, with the
 * identity it names. */
static void login_iq_auth(struct session *s, const struct xml_elem *e, const struct xml_elem *q)
{
	const struct xml_elem *user = xml_child(q, "jabber:iq:auth", "username");
	const char *type = xml_attr(e, NULL, "type");
	s->lg->auth_tried = true;
	snprintf(s->lg->mechanism, sizeof(s->lg->mechanism), "%s", "jabber:iq:auth");
	if (user != NULL && user->text != NULL &&
	    !login_keep_text(&s->lg->user, user->text, SASL_VALUE_MAX)) {
		session_close(s, "out of memory");
		return;
	}
	audit_iq_auth(s, type);
	struct policy_verdict v;
	policy_rule(login_conf(s), POLICY_RULE_IQ_AUTH, NULL, &v);
	audit_policy(s, &v);
	audit_result(s, false, "proxy", v.condition, v.detail);
}

/*
 * An iq before authentication. RFC 6120 6.4.1 lets one through: in-band
 * registration (XEP-0077). Servers route an iq by its first child, so it
 * passes only as the iq's one child; legacy iq-auth, alone or smuggled
 * beside a register query, and anything else is refused with the stream.
 */
void login_client_preauth_iq(struct session *s, const struct xml_elem *e)
{
	const struct xml_elem *auth = NULL;
	size_t n = 0;
	for (const struct xml_elem *c = e->children; c != NULL; c = c->next) {
		n++;
		if (auth == NULL && xml_is(c, "jabber:iq:auth", "query"))
			auth = c;
	}
	bool tls_ok =
	    s->lg->client_tls || !policy_require_tls(login_conf(s), s->lg->upstream_requires_tls);
	bool register_only = n == 1 && xml_is(e->children, "jabber:iq:register", "query");
	if (register_only && tls_ok && login_upstream_takes_login(s)) {
		login_forward(&s->upstream, e);
		return;
	}
	if (auth != NULL) {
		login_iq_auth(s, e, auth);
	} else {
		struct policy_verdict v;
		policy_rule(login_conf(s),
		            register_only && !tls_ok ? POLICY_RULE_REGISTER_BEFORE_TLS
		                                     : POLICY_RULE_PREAUTH_STANZA,
		            NULL, &v);
		audit_policy(s, &v);
	}
	login_fail(s, "not-authorized", "authenticate first", "stanza before authentication");
}

void login_upstream_open(struct session *s, const struct xml_elem *hdr, uint64_t end)
{
	struct leg *u = &s->upstream;
	const char *version = xml_attr(hdr, NULL, "version");

	login_ll(u)->stream_n++;
	audit_stream(u, login_is_client(u), hdr);
	if (login_relaying(s)) {
		/* the header goes to the client as it was: its prefix is the one
		 * our own errors must use. While the features are held, so is the
		 * header (bytes [0, end) of the held stream). */
		if (strlen(hdr->prefix) >= sizeof(s->lg->cl.out_prefix)) {
			login_upstream_fault(s, "bad-namespace-prefix",
			                     "the stream prefix is too long");
			return;
		}
		snprintf(s->lg->cl.out_prefix, sizeof(s->lg->cl.out_prefix), "%s", hdr->prefix);
		if (s->lg->ustate == US_RELAY_HOLD) {
			s->lg->held_hdr_end = end;
		} else {
			s->lg->cl.hdr_sent = true;
		}
		return;
	}
	if (s->lg->ustate != US_HEADER) {
		/* before our own header: a client speaks first (RFC 6120 4.2) */
		login_upstream_fault(s, "bad-format", "the server spoke before the client");
		return;
	}
	if (strcmp(xml_default_ns(login_ll(u)->xml), XML_NS_CLIENT) != 0) {
		login_upstream_fault(s, "invalid-namespace",
		                     "the content namespace must be jabber:client");
		return;
	}
	if (version == NULL || strncmp(version, "1.", 2) != 0) {
		login_fail(s, "remote-connection-failed", "the server does not speak XMPP 1.0",
		           "upstream stream version not 1.x");
		return;
	}
	login_upstream_enter(s, US_FEATURES);
}

void login_upstream_features(struct session *s, const struct xml_elem *e)
{
	struct leg *u = &s->upstream;

	if (streamfeatures_parse(&s->lg->ng->up, e) < 0) {
		session_close(s, "out of memory");
		return;
	}
	if (login_ll(u)->stream_n == 1) {
		/* Over Direct TLS the server never says whether it requires TLS
		 * (it has it from the first byte): require_tls = auto takes it
		 * that it does, rather than let PLAIN cross the client leg in
		 * the clear to a server that would have refused it so. */
		s->lg->upstream_starttls = s->lg->ng->up.starttls;
		s->lg->upstream_requires_tls = s->lg->ng->up.starttls == SF_STARTTLS_REQUIRED ||
		                               s->lg->upstream_mode == CONF_UPSTREAM_DIRECT;
	}
	if (s->lg->upstream_mode == CONF_UPSTREAM_STARTTLS && !s->lg->upstream_tls) {
		if (s->lg->ng->up.starttls == SF_STARTTLS_NONE) {
			audit_tls(u, false, false, "the server does not offer STARTTLS");
			login_fail(s, "remote-connection-failed",
			           "the server does not offer STARTTLS",
			           "upstream offers no STARTTLS");
			return;
		}
		login_upstream_enter(s, US_PROCEED);
		return;
	}
	login_upstream_enter(s, US_READY);
}

/* Starts TLS on a leg whose parser just stopped at <starttls/> (client)
 * or <proceed/> (upstream). Whatever followed in the same read must be
 * whitespace: TLS begins right after the '>'. */
void login_begin_tls(struct leg *l, const char *rest, size_t len)
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
	                              : tls_client_new(s->px->client_ctx, l->fd, s->lg->domain,
	                                               login_conf(s)->upstream_verify,
	                                               s->lg->ustate == US_TLS /* XEP-0368 ALPN */);
	if (ssl == NULL) {
		login_fail(s, "internal-server-error", NULL, "cannot create TLS session");
		return;
	}
	if (login_is_client(l))
		login_forge_attach(s, ssl);
	login_ll(l)->hdr_sent = false;
	leg_start_tls(l, ssl, login_is_client(l));
}
