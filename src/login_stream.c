/*
 * The proxy's own output on either leg: writes, its stream headers, stream
 * errors and ends, the one rule of where it may add an element
 * (login_can_write_stream), and how a session ends because of one leg.
 */

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "login_forge.h"
#include "login_int.h"
#include "transcript.h"

void login_send(struct leg *l, const char *data, size_t len)
{
	struct session *s = login_session(l);
	if (l->io != LEG_IO_CLOSED && l->io != LEG_IO_DRAINING)
		transcript_chunk(s->transcript,
		                 login_is_client(l) ? TRANSCRIPT_CLIENT : TRANSCRIPT_UPSTREAM, true,
		                 data, len);
	if (leg_send(l, data, len) < 0)
		session_close(s, "out of memory");
}

void login_relay_send(struct leg *l, const char *data, size_t len)
{
	struct session *s = login_session(l);
	if (l->io != LEG_IO_CLOSED && l->io != LEG_IO_DRAINING)
		transcript_chunk(s->transcript,
		                 login_is_client(l) ? TRANSCRIPT_CLIENT : TRANSCRIPT_UPSTREAM, true,
		                 data, len);
	if (leg_send_now(l, data, len) < 0)
		session_close(s, "out of memory");
}

void login_send_buf(struct leg *l, struct buf *b)
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
	const char *lang = s->lg->xml_lang[0] ? s->lg->xml_lang : "en";
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
	login_ll(l)->hdr_sent = true;
	snprintf(login_ll(l)->out_prefix, sizeof(login_ll(l)->out_prefix), "stream");
}

/* Our own stream header toward the client (the proxy is its server). */
void login_client_header(struct session *s)
{
	unsigned char rnd[8];
	char id[17];

	RAND_bytes(rnd, sizeof(rnd));
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(id + 2 * i, 3, "%02x", rnd[i]);
	login_header(&s->client, "id", id, s->lg->domain);
}

/* Our own stream header toward the upstream (the proxy is its client),
 * with the domain the client asked for and, once the upstream leg is
 * encrypted, the client's 'from' (RFC 6120 4.7.1: never in the clear). */
void login_upstream_header(struct session *s)
{
	login_header(&s->upstream, "to", s->lg->domain,
	             s->lg->upstream_tls ? s->lg->client_from : NULL);
}

/* True if something can still be written into the leg's stream: a header
 * went out and, when relaying, the peer is not in the middle of a stanza
 * (an error injected there would not be well-formed). */
bool login_can_write_stream(const struct leg *l)
{
	if (!login_ll(l)->hdr_sent || l->io >= LEG_IO_DRAINING)
		return false;
	const struct session *s = login_session(l);
	/* relayed bytes must end between two items, not inside a stanza or
	 * a tag (held features never reached the client) */
	bool peer_held = login_is_client(l) && s->lg->ustate == US_RELAY_HOLD;
	if (login_relaying(s) && !login_ll(l->peer)->relay_clean && !peer_held)
		return false;
	return true;
}

/* After success the server's new header waits in the hold buffer with its
 * features; before the proxy says anything to the client, the header it
 * belongs in must go out. */
static void login_release_held_header(struct session *s)
{
	struct leg *u = &s->upstream;
	if (s->lg->ustate != US_RELAY_HOLD || s->lg->held_hdr_end == 0 || s->lg->cl.hdr_sent)
		return;
	login_send(&s->client, buf_head(&login_ll(u)->hold),
	           (size_t)(s->lg->held_hdr_end - login_ll(u)->relay_from));
	s->lg->cl.hdr_sent = true;
}

static void login_stream_tag(struct buf *b, const struct leg *l, const char *name, bool close)
{
	if (login_ll(l)->out_prefix[0])
		buf_addf(b, "<%s%s:%s>", close ? "/" : "", login_ll(l)->out_prefix, name);
	else if (close)
		buf_addf(b, "</%s>", name);
	else
		buf_addf(b, "<%s xmlns='" XML_NS_STREAMS "'>", name);
}

/* Tells a leg a stream error and ends its stream; logged. */
void login_stream_error(struct leg *l, const char *condition, const char *text)
{
	struct session *s = login_session(l);
	if (login_is_client(l)) {
		login_release_held_header(s);
		if (!login_ll(l)->hdr_sent && l->io == LEG_IO_OPEN)
			login_client_header(s);
	}
	bool can = login_can_write_stream(l);
	/* not sent when the leg could not take it any more */
	audit_stream_error_sent(s, login_is_client(l) ? "s2c" : "c2s", condition, text, can);
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
	login_ll(l)->hdr_sent = false;
}

/* Ends a leg's stream cleanly, if one is open toward it. */
void login_stream_end(struct leg *l)
{
	if (login_is_client(l))
		login_release_held_header(login_session(l));
	if (!login_can_write_stream(l))
		return;
	struct buf b = {0};
	login_stream_tag(&b, l, "stream", true);
	login_send_buf(l, &b);
	login_ll(l)->hdr_sent = false;
}

/* Ends the session now: the client hears condition (NULL: a clean close;
 * with no stream open toward it yet, our header comes first), the
 * upstream's stream ends cleanly. */
void login_end(struct session *s, const char *condition, const char *text, const char *reason)
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
void login_copy_text(char *dst, size_t n, const char *src)
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

/* *dst becomes a copy of src cut as login_copy_text cuts it into n bytes
 * (the old value freed). Returns false when out of memory (*dst NULL). */
bool login_keep_text(char **dst, const char *src, size_t n)
{
	size_t len = strlen(src) + 1;
	free(*dst);
	*dst = malloc(len < n ? len : n);
	if (*dst == NULL)
		return false;
	login_copy_text(*dst, len < n ? len : n, src);
	return true;
}

/* Keeps a failure for the stream header the client has yet to send: the
 * upstream is let go, and CLOSE_LINGER bounds the wait for that header
 * (login_end_deferred() tells it, login_timeout() gives up on it). */
static void login_fail_deferred(struct session *s, const char *condition, const char *text,
                                const char *reason)
{
	s->lg->fail_deferred = true;
	login_copy_text(s->lg->fail_condition, sizeof(s->lg->fail_condition), condition);
	login_copy_text(s->lg->fail_text, sizeof(s->lg->fail_text), text ? text : "");
	snprintf(s->lg->fail_reason, sizeof(s->lg->fail_reason), "%s", reason);
	s->upstream_gone = true;
	session_connect_timer(s, false);
	session_login_deadline(s, CLOSE_LINGER);
	login_stream_end(&s->upstream);
	leg_close(&s->upstream);
}

/* The client opened the stream a deferred failure waited for. */
void login_end_deferred(struct session *s)
{
	login_end(s, s->lg->fail_condition, s->lg->fail_text[0] ? s->lg->fail_text : NULL,
	          s->lg->fail_reason);
}

/* The session ends because of one leg: tell the client condition (NULL:
 * a clean close), end the upstream's stream cleanly, close. Where the
 * client has no stream open to hear it yet, the failure waits for its
 * header: before login while it is still in a TLS handshake (first or
 * after STARTTLS), and after <success/> before it restarts its stream
 * (RFC 6120 4.2, 6.4.6: a header of ours first would be one the client
 * never asked for; slixmpp stops at it with a parse error). */
void login_fail(struct session *s, const char *condition, const char *text, const char *reason)
{
	if (s->closing)
		return;
	/* a client handshake waiting for the server's certificate finishes
	 * without it, to hear the failure */
	login_forge_resume(s, true);
	if (condition != NULL && !s->lg->fail_deferred && s->client.io < LEG_IO_CLOSING) {
		if (!login_relaying(s) && !s->lg->cl.hdr_sent) {
			login_client_enter(s, CS_FAILING);
			login_fail_deferred(s, condition, text, reason);
			return;
		}
		if (login_relaying(s) && !s->lg->cl.hdr_sent && !s->lg->ul.hdr_sent) {
			login_fail_deferred(s, condition, text, reason);
			return;
		}
	}
	login_end(s, condition, text, reason);
}

/* The server broke a rule: it hears the stream error, the client hears
 * that the server failed. */
void login_upstream_fault(struct session *s, const char *condition, const char *text)
{
	char reason[160];
	if (s->closing)
		return;
	snprintf(reason, sizeof(reason), "upstream: %s (%s)", condition, text);
	login_stream_error(&s->upstream, condition, text);
	login_stream_error(&s->client, "remote-connection-failed", "the server misbehaved");
	session_close(s, reason);
}

void login_forward(struct leg *to, const struct xml_elem *e)
{
	struct buf b = {0};
	if (xml_write(&b, e, XML_NS_CLIENT) < 0) {
		buf_free(&b);
		session_close(login_session(to), "out of memory");
		return;
	}
	login_send_buf(to, &b);
}

/* A stream error condition from the server as the client may hear it: one
 * RFC 6120 4.9.3 defines, else undefined-condition. */
const char *login_stream_condition(const char *cond)
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
