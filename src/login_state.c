/*
 * The state of each leg: the state table (what each state accepts and
 * where it may go), the one place a leg changes state with its entry
 * actions, and the two element dispatchers, whose switch on (state,
 * element) is that table in code.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "log.h"
#include "login.h"
#include "login_int.h"

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
 *   tls            the Direct TLS handshake                    header, wait_client
 *   wait_domain    the client's 'to'                           header
 *   header         the server's stream header                  features
 *   features       <features>                                  proceed, ready
 *   proceed        <proceed/> or <failure/>                    starttls
 *   starttls       the TLS handshake                           header, wait_client
 *   wait_client    the client's header on the leg it logs in   header
 *                  on (our header carries its 'from')
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
    [US_TLS] = {"tls", B(US_HEADER) | B(US_WAIT_CLIENT)},
    [US_WAIT_DOMAIN] = {"wait_domain", B(US_HEADER)},
    [US_HEADER] = {"header", B(US_FEATURES)},
    [US_FEATURES] = {"features", B(US_PROCEED) | B(US_READY)},
    [US_PROCEED] = {"proceed", B(US_STARTTLS)},
    [US_STARTTLS] = {"starttls", B(US_HEADER) | B(US_WAIT_CLIENT)},
    [US_WAIT_CLIENT] = {"wait_client", B(US_HEADER)},
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
 * the parser into TLS after <proceed/>, wait_client stops the connect
 * timer (the client is the slow one) and lets a client in the clear go on
 * to STARTTLS, ready stops the connect timer and answers a client waiting
 * for its features.
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
		session_connect_timer(s, true);
		login_upstream_header(s);
		break;
	case US_WAIT_CLIENT:
		session_connect_timer(s, false);
		if (s->lg->cstate == CS_WAIT_UPSTREAM) {
			/* in the clear, told to STARTTLS: that needs no server */
			leg_set_reading(&s->client, true);
			login_client_features(s);
		}
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

void login_client_element(struct session *s, const struct xml_elem *e)
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
		    (s->lg->ng->up.sasl2 && xml_is(e, XML_NS_SASL2, "authenticate"))) {
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

void login_upstream_element(struct session *s, const struct xml_elem *e, uint64_t end)
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
