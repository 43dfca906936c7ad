/*
 * The login state machine of both legs: its entry points (login.h), the
 * state names and the one place a leg changes state, the two element
 * dispatchers (what each state accepts), the parser callbacks and the
 * feeding of bytes, and the legs' I/O events. The phases live beside it:
 * login_stream.c (the proxy's own output), login_negotiate.c (until SASL),
 * login_sasl.c and login_outcome.c (an attempt and how it ends),
 * login_relay.c (after success).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addrtab.h"
#include "audit.h"
#include "conf.h"
#include "log.h"
#include "login.h"
#include "login_int.h"
#include "tls.h"

/*
 * The state table. Each row: a state, what it accepts (the dispatchers
 * below and login_data), and where it may go. A move not listed is a bug:
 * the session is closed rather than left in a state nobody planned.
 *
 * client leg                  accepts                         -> next
 *   tls_accept     Direct TLS handshake                        header, failing
 *   header         the stream header                           wait_upstream, preauth, failing
 *   wait_upstream  nothing (reading stops; a pipelined         preauth, failing
 *                  <auth> is recorded and refused)
 *   preauth        <starttls/>, <auth>/<authenticate>,         starttls, sasl
 *                  a register-only iq
 *   starttls       the TLS handshake                           header, failing
 *   sasl           <response>, <abort/>, SASL2 <next>/<task-data>  preauth, relay
 *   relay          anything; bind gate and login elements      -
 *   failing        the stream header, to hear the failure      -
 *
 * upstream leg
 *   connecting     the TCP connect                             tls_wait_domain, wait_domain
 *   tls_wait_domain the client's domain (SNI or 'to')          tls
 *   tls            the Direct TLS handshake                    header
 *   wait_domain    the client's 'to'                           header
 *   header         the server's stream header                  features
 *   features       <features>                                  proceed, ready
 *   proceed        <proceed/> or <failure/>                    starttls
 *   starttls       the TLS handshake                           header
 *   ready          an iq (answer to a register iq)             sasl, aborting_sasl
 *   sasl           challenge/success/failure, SASL2 continue,  ready, aborting, relay_hold
 *                  task-data; an iq
 *   aborting       the <failure> answering our <abort/>        ready, aborting_sasl
 *   aborting_sasl  the same, the client's next exchange behind  sasl
 *   relay_hold     the first element after success (after a    relay
 *                  restart: the new header, then features)
 *   relay          anything                                    -
 */
#define B(x) (1u << (x))
struct login_state_row {
	const char *name;
	unsigned next; /* bit n: state n may follow */
};
static const struct login_state_row login_client_states[CS_STATE_COUNT] = {
    [CS_TLS_ACCEPT] = {"tls_accept", B(CS_HEADER) | B(CS_FAILING)},
    [CS_HEADER] = {"header", B(CS_WAIT_UPSTREAM) | B(CS_PREAUTH) | B(CS_FAILING)},
    [CS_WAIT_UPSTREAM] = {"wait_upstream", B(CS_PREAUTH) | B(CS_FAILING)},
    [CS_PREAUTH] = {"preauth", B(CS_STARTTLS) | B(CS_SASL)},
    [CS_STARTTLS] = {"starttls", B(CS_HEADER) | B(CS_FAILING)},
    [CS_SASL] = {"sasl", B(CS_PREAUTH) | B(CS_RELAY)},
    [CS_RELAY] = {"relay", 0},
    [CS_FAILING] = {"failing", 0},
};
static const struct login_state_row login_upstream_states[US_STATE_COUNT] = {
    [US_CONNECTING] = {"connecting", B(US_TLS_WAIT_DOMAIN) | B(US_WAIT_DOMAIN)},
    [US_TLS_WAIT_DOMAIN] = {"tls_wait_domain", B(US_TLS)},
    [US_TLS] = {"tls", B(US_HEADER)},
    [US_WAIT_DOMAIN] = {"wait_domain", B(US_HEADER)},
    [US_HEADER] = {"header", B(US_FEATURES)},
    [US_FEATURES] = {"features", B(US_PROCEED) | B(US_READY)},
    [US_PROCEED] = {"proceed", B(US_STARTTLS)},
    [US_STARTTLS] = {"starttls", B(US_HEADER)},
    [US_READY] = {"ready", B(US_SASL) | B(US_ABORTING_SASL)},
    [US_SASL] = {"sasl", B(US_READY) | B(US_ABORTING) | B(US_RELAY_HOLD)},
    [US_ABORTING] = {"aborting", B(US_READY) | B(US_ABORTING_SASL)},
    [US_ABORTING_SASL] = {"aborting_sasl", B(US_SASL)},
    [US_RELAY_HOLD] = {"relay_hold", B(US_RELAY)},
    [US_RELAY] = {"relay", 0},
};
#undef B

/* Logs the move of one leg from old to st; a move the table does not
 * list closes the session (false). */
static bool login_move(struct session *s, const char *leg, const struct login_state_row *table,
                       unsigned old, unsigned st)
{
	log_debug("session %llu: %s leg %s -> %s", (unsigned long long)s->id, leg, table[old].name,
	          table[st].name);
	if (table[old].next & (1u << st))
		return true;
	log_warnx("session %llu: %s leg %s -> %s is not in the state table",
	          (unsigned long long)s->id, leg, table[old].name, table[st].name);
	session_close(s, "internal error: unplanned state");
	return false;
}

/*
 * Entry actions: what the proxy itself does on entering a state, in one
 * place, so that no state is entered without its step nor the step taken
 * without the state. Client leg: starttls sends <proceed/> (TLS begins
 * right after its '>', once the parser has returned). Upstream leg: tls
 * and header start the stream (the connect timer runs until the server's
 * features are known), proceed sends our <starttls/>, starttls restarts
 * the parser into TLS after <proceed/>, ready stops the connect timer and
 * answers a client waiting for its features.
 */
static void login_client_entry(struct session *s, enum client_state st)
{
	struct leg *l = &s->client;
	if (st == CS_STARTTLS) {
		login_send(l, "<proceed xmlns='" XML_NS_TLS "'/>",
		           sizeof("<proceed xmlns='" XML_NS_TLS "'/>") - 1);
		audit_starttls(s, false);
		login_ll(l)->restart = true;
		login_ll(l)->to_tls = true;
		xml_stop(login_ll(l)->xml);
	}
}

static void login_upstream_entry(struct session *s, enum upstream_state st)
{
	struct leg *u = &s->upstream;
	switch (st) {
	case US_TLS:
		session_connect_timer(s, true);
		login_begin_tls(u, NULL, 0);
		break;
	case US_HEADER:
		if (!s->lg->upstream_tls)
			session_connect_timer(s, true);
		login_upstream_header(s);
		break;
	case US_PROCEED:
		login_send(u, "<starttls xmlns='" XML_NS_TLS "'/>",
		           sizeof("<starttls xmlns='" XML_NS_TLS "'/>") - 1);
		audit_starttls(s, true);
		break;
	case US_STARTTLS:
		login_ll(u)->restart = true;
		login_ll(u)->to_tls = true;
		xml_stop(login_ll(u)->xml);
		break;
	case US_READY:
		session_connect_timer(s, false);
		if (s->lg->cstate == CS_WAIT_UPSTREAM) {
			leg_set_reading(&s->client, true);
			login_client_features(s);
		}
		break;
	default:
		break;
	}
}

void login_client_enter(struct session *s, enum client_state st)
{
	enum client_state old = s->lg->cstate;
	if (st == old)
		return;
	s->lg->cstate = st;
	if (login_move(s, "client", login_client_states, old, st))
		login_client_entry(s, st);
}

void login_upstream_enter(struct session *s, enum upstream_state st)
{
	enum upstream_state old = s->lg->ustate;
	if (st == old)
		return;
	s->lg->ustate = st;
	if (login_move(s, "upstream", login_upstream_states, old, st))
		login_upstream_entry(s, st);
}

bool login_relaying(const struct session *s)
{
	return s->lg->cstate == CS_RELAY;
}

static void login_client_element(struct session *s, const struct xml_elem *e)
{
	struct sasl_fields f;

	if (xml_is(e, XML_NS_STREAMS, "error")) {
		audit_stream_error(s, "c2s", e, NULL, NULL);
		login_fail(s, NULL, NULL, "client sent a stream error");
		return;
	}
	switch (s->lg->cstate) {
	case CS_PREAUTH:
		if (xml_is(e, XML_NS_TLS, "starttls")) {
			if (s->lg->client_tls) {
				login_fail(s, "policy-violation", "TLS is already in place",
				           "STARTTLS twice");
				return;
			}
			login_client_enter(s, CS_STARTTLS);
			return;
		}
		if (xml_is(e, XML_NS_SASL, "auth") ||
		    (s->lg->up.sasl2 && xml_is(e, XML_NS_SASL2, "authenticate"))) {
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
		    (s->lg->sasl2 &&
		     (xml_is(e, XML_NS_SASL2, "next") || xml_is(e, XML_NS_SASL2, "task-data")))) {
			/* task data (XEP-0480 upgrades) carries password hashes:
			 * only its element name is logged */
			if (++s->lg->steps_c2s > MAX_SASL_STEPS) {
				login_fail(s, "policy-violation", "SASL exchange too long",
				           "SASL exchange too long");
				return;
			}
			memset(&f, 0, sizeof(f));
			audit_sasl_step(s, "c2s", s->lg->steps_c2s, e->name, &f);
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

static void login_upstream_element(struct session *s, const struct xml_elem *e, uint64_t end)
{
	if (xml_is(e, XML_NS_STREAMS, "error")) {
		const char *cond, *text;
		audit_stream_error(s, "s2c", e, &cond, &text);
		/* the client hears the server's own condition, if RFC 6120
		 * defines it */
		login_fail(s, login_stream_condition(cond), text, "upstream sent a stream error");
		return;
	}
	switch (s->lg->ustate) {
	case US_FEATURES:
		if (xml_is(e, XML_NS_STREAMS, "features")) {
			login_upstream_features(s, e);
			return;
		}
		break;
	case US_PROCEED:
		if (xml_is(e, XML_NS_TLS, "proceed")) {
			login_upstream_enter(s, US_STARTTLS);
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
	case US_ABORTING:
	case US_ABORTING_SASL:
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
		/* forwarded as it is; the TCP close that follows ends the session */
		if (s->lg->ended_by == NULL)
			s->lg->ended_by = login_is_client(l) ? "client ended the stream"
			                                     : "server ended the stream";
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
		bool client = login_is_client(l);
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
			login_send(l->peer, data, used);
			ll->relay_clean = xml_at_boundary(ll->xml);
		} else if (!client && s->lg->hold_active) {
			if (!login_hold_flush(s, data, used, base, hold))
				return;
		}
		data += used;
		len -= used;
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
		if (s->lg->cstate != CS_FAILING)
			login_client_enter(s, CS_HEADER);
		return;
	}
	s->lg->upstream_tls = true;
	login_upstream_enter(s, US_HEADER);
}

static void login_upstream_connected(struct session *s)
{
	const struct conf *c = login_conf(s);

	audit_upstream(s, true, NULL);
	/* until the client names its domain, the client is the slow one */
	session_connect_timer(s, false);
	login_upstream_enter(s, c->upstream_tls == CONF_UPSTREAM_DIRECT ? US_TLS_WAIT_DOMAIN
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
	if (s->lg->cstate == CS_FAILING) {
		/* the client never opened its stream to hear why */
		session_close(s, s->lg->fail_reason);
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

void login_start(struct session *s)
{
	const struct conf *c = login_conf(s);
	s->lg = calloc(1, sizeof(*s->lg));
	if (s->lg == NULL) {
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
	if (s->port == SESSION_PORT_DIRECT_TLS) {
		s->lg->cstate = CS_TLS_ACCEPT;
		SSL *ssl = tls_server_new(s->px->server_ctx, s->client.fd);
		if (ssl == NULL) {
			session_close(s, "cannot create TLS session");
			return;
		}
		leg_start_tls(&s->client, ssl, false);
	} else {
		s->lg->cstate = CS_HEADER;
		leg_start(&s->client);
	}
}

bool login_close(struct session *s)
{
	struct login *lg = s->lg;
	if (lg == NULL)
		return false;
	bool abandoned = false;
	if (lg->attempt_inflight) {
		/* abandoned before its answer: the server may have judged it,
		 * so it counts as a failure (a guesser cannot send and hang up) */
		const struct conf *c = login_conf(s);
		login_attempt_end(s);
		if (c->auth_failures_max > 0)
			(void)addrtab_fail(s->px->peers, &s->peer_key, ev_now(s->px->loop),
			                   c->auth_failures_window);
		abandoned = c->auth_failures_max > 0;
	}
	audit_login(s);
	return abandoned;
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
	streamfeatures_free(&s->lg->up);
	login_clear_offered(s);
	free(s->lg->jid);
	free(s->lg->bind_id);
	free(s->lg->session_iq_id);
	free(s->lg->bind_resource);
	buf_free(&s->lg->delayed);
	buf_free(&s->lg->hold_repl);
	free(s->lg);
	s->lg = NULL;
}
