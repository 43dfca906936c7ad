/*
 * The login state machine of both legs: its entry points (login.h), the
 * parser callbacks and the feeding of bytes, and the legs' I/O events.
 * Beside it: login_state.c (the state table, the moves and the element
 * dispatchers), login_stream.c (the proxy's own output), login_negotiate.c
 * (until SASL), login_sasl.c and login_outcome.c (an attempt and how it
 * ends), login_relay.c (after success).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addrtab.h"
#include "audit.h"
#include "conf.h"
#include "log.h"
#include "login.h"
#include "login_forge.h"
#include "login_int.h"
#include "tls.h"

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
		xml_stop(login_ll(l)->xml);
		return;
	}
	if (login_is_client(l)) {
		if (login_relaying(s))
			login_relay_c2s(s, e, start, end);
		else
			login_client_element(s, e);
	} else if (s->lg->ustate == US_RELAY_HOLD) {
		login_hold_element(s, e, start, end);
	} else if (login_relaying(s)) {
		login_relay_s2c(s, e);
	} else {
		login_upstream_element(s, e, end);
	}
	if (s->closing)
		xml_stop(login_ll(l)->xml);
}

/* Fires on </stream:stream>. */
static void login_on_close(void *ctx)
{
	struct leg *l = ctx;
	struct session *s = login_session(l);

	if (login_relaying(s)) {
		/* forwarded as it is; the TCP close that follows ends the
		 * session. Nothing after it is parsed (login_data) */
		if (s->lg->ended_by == NULL)
			s->lg->ended_by = login_is_client(l) ? "client ended the stream"
			                                     : "server ended the stream";
		login_ll(l)->ended = true;
		xml_stop(login_ll(l)->xml);
		session_login_deadline(s, STREAM_CLOSE_WAIT);
		if (!login_is_client(l) && s->lg->ustate == US_RELAY_HOLD)
			login_hold_stream_end(s);
		return;
	}
	if (login_is_client(l)) {
		login_fail(s, NULL, NULL, "client closed the stream");
	} else {
		audit_stream_closed(s, "s2c", "the server closed the stream during login");
		login_fail(s, "remote-connection-failed", "the server closed the stream",
		           "upstream closed the stream");
	}
	xml_stop(login_ll(l)->xml);
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
	case XML_E_ENCODING:
		return "unsupported-encoding";
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
	const char *why = xml_error_text(login_ll(l)->xml);
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

void login_data(struct leg *l, const char *data, size_t len)
{
	struct session *s = login_session(l);
	struct login_leg *ll = login_ll(l);

	while (len > 0 && !s->closing) {
		if (ll->ended) {
			/* after the peer's </stream:stream>: counted, never parsed,
			 * relayed or answered (RFC 6120 4.4: the stream is over;
			 * xmpp.js sends an SM <a/> after its own, Prosody ignores
			 * such bytes) */
			s->lg->trailing_bytes += len;
			if (s->lg->trailing_bytes > MAX_TRAILING)
				leg_set_reading(l, false); /* STREAM_CLOSE_WAIT ends it */
			return;
		}
		bool client = login_is_client(l);
		if (client && (s->lg->shared_wait || xml_paused(ll->xml))) {
			/* read behind an attempt the shared state is judging:
			 * parsed once it has answered (login_relay_attempt) */
			if (buf_add(&s->lg->shared_in, data, len) < 0)
				session_close(s, "out of memory");
			leg_set_reading(l, false);
			return;
		}
		bool relay = client ? s->lg->cstate == CS_RELAY : s->lg->ustate == US_RELAY;
		bool hold = !client && s->lg->ustate == US_RELAY_HOLD;
		bool gated = relay && client && s->lg->gate != SESSION_GATE_OPEN;
		uint64_t base = xml_offset(ll->xml);
		size_t used;

		/* held bytes are added before the feed, so that a callback can
		 * release them; hold's first byte is stream offset relay_from */
		if ((gated || hold) && ll->hold.len == 0)
			ll->relay_from = base;
		if ((hold || gated) && buf_add(&ll->hold, data, len) < 0) {
			session_close(s, "out of memory");
			return;
		}
		enum xml_error err = xml_feed(ll->xml, data, len, &used);
		if (err != XML_OK) {
			login_bad_xml(l, err);
			return;
		}
		if (s->closing)
			return;
		if ((gated || hold) && used < len) /* bytes not fed are fed again */
			ll->hold.len -= len - used < ll->hold.len ? len - used : ll->hold.len;
		if (gated) {
			/* the gate released what it let through; the rest waits */
			if (ll->hold.len > MAX_BIND_HOLD)
				leg_set_reading(l, false);
		} else if (relay) {
			login_relay_send(l->peer, data, used);
			if (s->closing)
				return;
			ll->relay_clean = xml_at_boundary(ll->xml);
		} else if (!client && s->lg->hold_active) {
			if (!login_hold_flush(s, data, used, base, hold))
				return;
		}
		data += used;
		len -= used;
		if (ll->ended && login_ll(l->peer)->ended) {
			/* both streams are closed (RFC 6120 4.4): the
			 * connections end, once what they were sent is out */
			s->lg->trailing_bytes += len;
			session_close(s, s->lg->ended_by);
			return;
		}
		if (ll->restart) {
			ll->restart = false;
			if (xml_reset(ll->xml) < 0) {
				session_close(s, "out of memory");
				return;
			}
			if (ll->to_tls) {
				ll->to_tls = false;
				login_begin_tls(l, data, len);
				return;
			}
		}
	}
}

/* After a pause of the client's parser (login_relay_attempt): what it
 * holds is parsed. Only STARTTLS restarts the client's parser before
 * login; pipelined behind an attempt, its handshake went to the parser,
 * which no honest client does. */
void login_client_resume(struct session *s)
{
	enum xml_error err = xml_resume(s->lg->cl.xml);
	if (err != XML_OK) {
		login_bad_xml(&s->client, err);
		return;
	}
	if (!s->closing && s->lg->cl.restart) {
		s->lg->cl.restart = s->lg->cl.to_tls = false;
		login_stream_end(&s->upstream);
		session_close(s, "client sent STARTTLS behind an authentication attempt");
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
		if (n > 0 && n < sizeof(s->lg->domain) && s->lg->domain[0] == '\0' &&
		    strspn(sni,
		           "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") == n)
			memcpy(s->lg->domain, sni, n + 1);
		s->lg->client_tls = true;
		if (s->lg->cstate != CS_FAILING) {
			login_client_enter(s, CS_HEADER);
			login_start_upstream_stream(s);
		}
		return;
	}
	s->lg->upstream_tls = true;
	login_upstream_enter(s, login_client_login_header(s) ? US_HEADER : US_WAIT_CLIENT);
	if (!s->closing)
		login_forge_resume(s, false); /* its certificate can be mirrored */
}

static void login_upstream_connected(struct session *s)
{
	audit_upstream(s, true, NULL);
	if (!login_proxy_header(s))
		return;
	/* until the client names its domain, the client is the slow one */
	session_connect_timer(s, false);
	login_upstream_enter(s, s->lg->upstream_mode == CONF_UPSTREAM_DIRECT ? US_TLS_WAIT_DOMAIN
	                                                                     : US_WAIT_DOMAIN);
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
	case LEG_EV_TLS_PAUSED:
		login_forge_paused(s);
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
		if (!client && s->lg->ustate == US_CONNECTING) {
			audit_upstream(s, false, why);
			snprintf(reason, sizeof(reason), "upstream connect failed: %s", why);
			login_fail(s, "remote-connection-failed", "cannot reach the server",
			           reason);
			break;
		}
		snprintf(reason, sizeof(reason), "%s %s%s%s", login_leg_name(l),
		         ev == LEG_EV_EOF ? "closed the connection" : "error", why ? ": " : "",
		         why ? why : "");
		if (s->lg->ended_by != NULL && ev == LEG_EV_EOF)
			snprintf(reason, sizeof(reason), "%s", s->lg->ended_by);
		if (!client && s->lg->ustate == US_RELAY_HOLD) {
			/* gone before its features: the client hears it in the
			 * server's held header */
			login_fail(s, "remote-connection-failed",
			           "the server closed the connection", reason);
		} else if (client) {
			login_stream_end(&s->upstream);
			session_close(s, reason);
		} else if (login_relaying(s) && login_ll(l)->xml != NULL &&
		           xml_depth(login_ll(l)->xml) == 0) {
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
	if (s->lg->fail_deferred) {
		/* the client never opened its stream to hear why */
		session_close(s, s->lg->fail_reason);
		return;
	}
	if (login_relaying(s) && (s->lg->cl.ended || s->lg->ul.ended)) {
		session_close(s, s->lg->cl.ended
		                     ? "the client ended its stream, the server did not"
		                     : "the server ended its stream, the client did not");
		return;
	}
	if (connect) {
		if (s->lg->ustate == US_CONNECTING) {
			audit_upstream(s, false, "connect timed out");
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

/* How a session from a port reaches the upstream. Transparent mode
 * (original-dst) defaults to auto: the client redirected from a server's
 * Direct TLS port (5223) meant that port's protocol, and the server
 * speaks it there; a fixed upstream keeps the configured one. */
static enum conf_upstream_tls login_upstream_mode(const struct conf *c, enum session_port port)
{
	enum conf_upstream_tls m = c->upstream_tls;
	if (!c->upstream_tls_set && c->upstream_original_dst)
		m = CONF_UPSTREAM_AUTO;
	if (m != CONF_UPSTREAM_AUTO)
		return m;
	return port == SESSION_PORT_DIRECT_TLS ? CONF_UPSTREAM_DIRECT : CONF_UPSTREAM_STARTTLS;
}

void login_start(struct session *s)
{
	const struct conf *c = login_conf(s);
	s->lg = calloc(1, sizeof(*s->lg));
	if (s->lg == NULL || (s->lg->ng = calloc(1, sizeof(*s->lg->ng))) == NULL) {
		session_close(s, "out of memory");
		return;
	}
	s->lg->cl.xml = xml_new(&login_xml_handler, &s->client, c->max_stanza_prelogin);
	s->lg->ul.xml = xml_new(&login_xml_handler, &s->upstream, c->max_stanza_prelogin);
	if (s->lg->cl.xml == NULL || s->lg->ul.xml == NULL) {
		session_close(s, "out of memory");
		return;
	}
	s->lg->ustate = US_CONNECTING;
	s->lg->upstream_mode = login_upstream_mode(c, s->port);
	/* over Direct TLS the server never says (see login_upstream_features) */
	s->lg->upstream_requires_tls = s->lg->upstream_mode == CONF_UPSTREAM_DIRECT;
	/* A PROXY header must come at once on a connection (a receiver may
	 * drop one that waits; ejabberd accepts nothing else meanwhile), and
	 * it names the client's domain: with one, the upstream connection
	 * waits for the domain (login_start_upstream_stream). */
	s->lg->connect_deferred = c->upstream_proxy_protocol != CONF_PROXY_OFF;
	/* decided here: a ClientHello already queued at accept is read at
	 * once below, and its SNI may make the deferred connection then */
	bool connect_now = !s->lg->connect_deferred;
	if (s->port == SESSION_PORT_DIRECT_TLS) {
		s->lg->cstate = CS_TLS_ACCEPT;
		SSL *ssl = tls_server_new(s->px->server_ctx, s->client.fd);
		if (ssl == NULL) {
			session_close(s, "cannot create TLS session");
			return;
		}
		login_forge_attach(s, ssl);
		leg_start_tls(&s->client, ssl, false);
	} else {
		s->lg->cstate = CS_HEADER;
		leg_start(&s->client);
	}
	if (connect_now && !s->closing)
		session_connect_upstream(s);
}

void login_close(struct session *s, struct login_summary *out)
{
	struct login *lg = s->lg;
	memset(out, 0, sizeof(*out));
	if (lg == NULL)
		return;
	out->trailing_bytes = lg->trailing_bytes;
	if (lg->attempt_inflight) {
		/* abandoned before its answer: the server may have judged it,
		 * so it counts as a failure (a guesser cannot send and hang up) */
		const struct conf *c = login_conf(s);
		if (c->auth_failures_max > 0)
			login_count_failure(s);
		login_attempt_end(s);
		out->abandoned = c->auth_failures_max > 0;
	}
	audit_login(s);
}

/* The negotiation's state goes (login_idle, login_free). */
static void login_nego_free(struct session *s)
{
	if (s->lg->ng == NULL)
		return;
	login_clear_offered(s);
	streamfeatures_free(&s->lg->ng->up);
	free(s->lg->ng);
	s->lg->ng = NULL;
}

void login_free(struct session *s)
{
	if (s->lg == NULL)
		return;
	xml_free(s->lg->cl.xml);
	xml_free(s->lg->ul.xml);
	buf_free(&s->lg->cl.hold);
	buf_free(&s->lg->ul.hold);
	sasl_free(s->lg->sasl);
	s->lg->sasl = NULL;
	login_forge_free(s);
	login_nego_free(s);
	free(s->lg->jid);
	free(s->lg->user);
	free(s->lg->authzid);
	free(s->lg->client_from);
	free(s->lg->bind_id);
	free(s->lg->session_iq_id);
	free(s->lg->bind_resource);
	buf_free(&s->lg->delayed);
	buf_free(&s->lg->shared_out); /* buf scrubs what it frees */
	buf_free(&s->lg->shared_in);
	buf_free(&s->lg->hold_repl);
	free(s->lg);
	s->lg = NULL;
}

/* One leg's part of login_idle(); true if its parser went. */
static bool login_leg_idle(struct leg *l, struct login_leg *ll)
{
	uint64_t seen = l->bytes_in + l->bytes_out;
	if (seen != ll->idle_seen) {
		ll->idle_seen = seen; /* it moved: idle from the next sweep on */
		return false;
	}
	leg_trim(l);
	return xml_release_idle(ll->xml);
}

void login_idle(struct session *s)
{
	if (s->lg == NULL || s->closing || !login_relaying(s))
		return;
	/* relaying, and the record written: nothing reads the negotiation's
	 * state any more (login_int.h) */
	if (s->lg->login_logged)
		login_nego_free(s);
	bool c = login_leg_idle(&s->client, &s->lg->cl);
	bool u = login_leg_idle(&s->upstream, &s->lg->ul);
	if (c || u)
		log_debug("session %llu: idle, parser released:%s%s", (unsigned long long)s->id,
		          c ? " client" : "", u ? " upstream" : "");
}

bool login_authenticated(const struct session *s)
{
	return s->lg != NULL && s->lg->outcome == SESSION_OUTCOME_SUCCESS;
}
