/*
 * Unit tests of the login state machine (src/login*.c) without a server:
 * the client's and the server's bytes are scripted through fake legs
 * (login_harness.c), and each test checks what each leg was sent and the
 * event log. Nothing here reads the login's own state: only bytes out and
 * events.
 *
 * Every success path is run twice, each scripted message in one read and
 * one byte per read; both runs must give the same bytes to each leg and
 * the same events (less timestamps and the random stream id).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "login_harness.h"
#include "login_int.h"
#include "t.h"

#define NS_STREAMS "http://etherx.jabber.org/streams"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_SASL2 "urn:xmpp:sasl:2"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_BIND2 "urn:xmpp:bind:0"
#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"

#define C_HDR                                                                                      \
	"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='" NS_STREAMS      \
	"' to='example.test' version='1.0' xml:lang='en'>"
/* a client's header once its stream is encrypted (RFC 6120 4.7.1) */
#define C_HDR_FROM                                                                                 \
	"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='" NS_STREAMS      \
	"' to='example.test' from='alice@example.test' version='1.0' xml:lang='en'>"
#define S_HDR(id)                                                                                  \
	"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='" NS_STREAMS      \
	"' id='" id "' from='example.test' version='1.0' xml:lang='en'>"
#define MECHS                                                                                      \
	"<mechanisms xmlns='" NS_SASL "'><mechanism>PLAIN</mechanism>"                             \
	"<mechanism>SCRAM-SHA-1</mechanism></mechanisms>"
#define S_FEATURES "<stream:features>" MECHS "</stream:features>"
#define S_FEATURES_SASL2                                                                           \
	"<stream:features>" MECHS "<authentication xmlns='" NS_SASL2 "'>"                          \
	"<mechanism>PLAIN</mechanism><inline><bind xmlns='" NS_BIND2 "'/></inline>"                \
	"</authentication></stream:features>"
#define S_FEATURES_STARTTLS                                                                        \
	"<stream:features><starttls xmlns='" NS_TLS "'><required/></starttls></stream:features>"
/* post-login features: bind, and compression the proxy must remove */
#define S_FEATURES_BIND                                                                            \
	"<stream:features><bind xmlns='" NS_BIND "'/>"                                             \
	"<compression xmlns='http://jabber.org/features/compress'><method>zlib</method>"           \
	"</compression></stream:features>"

/* \0alice\0s3cretPW */
#define PLAIN_ALICE "AGFsaWNlAHMzY3JldFBX"
#define SECRET "s3cretPW"
#define C_AUTH "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>" PLAIN_ALICE "</auth>"
#define S_SUCCESS "<success xmlns='" NS_SASL "'/>"
#define C_BIND                                                                                     \
	"<iq type='set' id='b1'><bind xmlns='" NS_BIND "'><resource>phone</resource></bind></iq>"
#define S_BOUND(jid)                                                                               \
	"<iq type='result' id='b1'><bind xmlns='" NS_BIND "'><jid>" jid "</jid></bind></iq>"
#define C_PRESENCE "<presence/>"

static const char *const CONF_PLAIN[] = {"upstream_tls=none", "require_tls=no", NULL};

/* ---- helpers ---- */

struct run {
	struct harness_proxy *hp;
	struct harness_session *ls;
	bool bytewise;
};

static void feed(struct run *r, enum harness_side side, const char *s)
{
	if (r->bytewise)
		harness_feed_bytewise(r->ls, side, s, strlen(s));
	else
		harness_feeds(r->ls, side, s);
}

static void run_begin(struct run *r, const char *const *conf, enum session_port port, bool bytewise)
{
	harness_log_start(NULL);
	r->hp = harness_proxy_new(conf);
	r->bytewise = bytewise;
	r->ls = harness_session_new(r->hp, port);
}

/* The results of a run, normalised for comparison. */
struct result {
	char *client, *upstream; /* everything each leg was sent */
	char *log;               /* the event log, without ts and ms */
	char *events;            /* "connect upstream stream ...": the event names */
	bool closed;
	char reason[200];
};

static void result_free(struct result *x)
{
	free(x->client);
	free(x->upstream);
	free(x->log);
	free(x->events);
}

/* The proxy's stream id toward the client is random: id='16 hex'. */
static char *normalise_ids(const char *s)
{
	char *out = strdup(s);
	for (char *p = out; (p = strstr(p, " id='")) != NULL; p += 5) {
		size_t n = strspn(p + 5, "0123456789abcdef");
		if (n == 16 && p[5 + 16] == '\'')
			memset(p + 5, 'X', 16);
	}
	return out;
}

/* Drops "ts":"...", and ,"ms":N from each line. */
static char *normalise_log(const char *log)
{
	char *out = malloc(strlen(log) + 1);
	char *w = out;
	for (const char *p = log; *p;) {
		if (strncmp(p, "\"ts\":\"", 6) == 0) {
			const char *q = strchr(p + 6, '"');
			p = q ? q + 1 : p + 6;
			if (*p == ',')
				p++;
			continue;
		}
		if (strncmp(p, ",\"ms\":", 6) == 0) {
			p += 6;
			p += strspn(p, "-0123456789");
			continue;
		}
		*w++ = *p++;
	}
	*w = '\0';
	return out;
}

static char *event_names(const char *log)
{
	size_t cap = strlen(log) + 1;
	char *out = calloc(1, cap);
	for (const char *p = log; (p = strstr(p, "\"event\":\"")) != NULL;) {
		p += 9;
		size_t n = strcspn(p, "\"");
		if (out[0])
			strcat(out, " ");
		strncat(out, p, n);
		p += n;
	}
	return out;
}

static void run_end(struct run *r, struct result *x)
{
	x->client = normalise_ids(harness_all(r->ls, HARNESS_CLIENT));
	x->upstream = normalise_ids(harness_all(r->ls, HARNESS_UPSTREAM));
	x->closed = harness_closed(r->ls);
	snprintf(x->reason, sizeof(x->reason), "%s", r->ls->close_reason);
	harness_session_free(r->ls);
	harness_proxy_free(r->hp);
	char *raw = harness_log_stop();
	x->log = normalise_log(raw);
	x->events = event_names(raw);
	free(raw);
}

static bool has(const char *hay, const char *needle)
{
	return hay != NULL && strstr(hay, needle) != NULL;
}

/* The part of s after the first occurrence of mark ("" if none). */
static const char *after(const char *s, const char *mark)
{
	const char *p = strstr(s, mark);
	return p ? p + strlen(mark) : "";
}

static void check_no_secret(const struct result *x, const char *name)
{
	char t[200];
	snprintf(t, sizeof(t), "%s: no password or PLAIN payload in the event log", name);
	T_CHECK(!has(x->log, SECRET) && !has(x->log, PLAIN_ALICE), t);
}

typedef void (*scenario)(struct run *r);

/* Runs sc whole and byte by byte: both must give the same bytes and
 * events. The whole run's result is returned. */
static void run_both(const char *name, const char *const *conf, enum session_port port, scenario sc,
                     struct result *whole)
{
	struct run r;
	struct result bw;
	char t[200];

	run_begin(&r, conf, port, false);
	sc(&r);
	run_end(&r, whole);
	run_begin(&r, conf, port, true);
	sc(&r);
	run_end(&r, &bw);
	snprintf(t, sizeof(t), "%s: byte at a time, the same bytes to the client", name);
	T_STREQ(whole->client, bw.client, t);
	snprintf(t, sizeof(t), "%s: byte at a time, the same bytes to the server", name);
	T_STREQ(whole->upstream, bw.upstream, t);
	snprintf(t, sizeof(t), "%s: byte at a time, the same events", name);
	T_STREQ(whole->log, bw.log, t);
	if (getenv("XI_TEST_VERBOSE") && strcmp(whole->log, bw.log) != 0)
		fprintf(stderr, "whole:\n%s\nbytewise:\n%s\n", whole->log, bw.log);
	check_no_secret(whole, name);
	result_free(&bw);
}

static void dump(const char *name, const struct result *x)
{
	if (getenv("XI_TEST_VERBOSE"))
		fprintf(stderr, "== %s\n-- to client:\n%s\n-- to server:\n%s\n-- events: %s\n%s\n",
		        name, x->client, x->upstream, x->events, x->log);
}

/* ---- scripts ---- */

/* Up to the client's features (no TLS on either leg). */
static void sc_preauth(struct run *r, const char *features)
{
	harness_connected(r->ls);
	feed(r, HARNESS_CLIENT, C_HDR);
	feed(r, HARNESS_UPSTREAM, S_HDR("s1"));
	feed(r, HARNESS_UPSTREAM, features);
}

/* RFC 6120: PLAIN, <success/>, both streams restart, features, iq bind. */
static void sc_plain(struct run *r)
{
	sc_preauth(r, S_FEATURES);
	feed(r, HARNESS_CLIENT, C_AUTH);
	feed(r, HARNESS_UPSTREAM, S_SUCCESS);
	feed(r, HARNESS_CLIENT, C_HDR);
	feed(r, HARNESS_UPSTREAM, S_HDR("s2"));
	feed(r, HARNESS_UPSTREAM, S_FEATURES_BIND);
	feed(r, HARNESS_CLIENT, C_BIND);
	feed(r, HARNESS_UPSTREAM, S_BOUND("alice@example.test/phone"));
	feed(r, HARNESS_CLIENT, C_PRESENCE);
}

static void test_plain(void)
{
	struct result x;
	run_both("plain", CONF_PLAIN, SESSION_PORT_STARTTLS, sc_plain, &x);
	dump("plain", &x);
	T_CHECK(!x.closed, "plain: the session stays open");
	T_STREQ(x.events,
	        "connect upstream stream stream features auth policy auth_result stream "
	        "stream features bind login",
	        "plain: events");
	/* the client hears our header, then features with the server's
	 * mechanisms and no STARTTLS (the client leg cannot have TLS) */
	T_CHECK(has(x.client, "<stream:stream xmlns='jabber:client' xmlns:stream='" NS_STREAMS
	                      "' id='XXXXXXXXXXXXXXXX' from='example.test' version='1.0'"),
	        "plain: our header to the client, with an id");
	T_CHECK(has(x.client, "<mechanism>PLAIN</mechanism>") &&
	            has(x.client, "<starttls xmlns='" NS_TLS "'/>"),
	        "plain: the client is offered PLAIN, and STARTTLS not required");
	/* our header toward the server, with the client's domain */
	T_CHECK(has(x.upstream, "<stream:stream xmlns='jabber:client' xmlns:stream='" NS_STREAMS
	                        "' to='example.test' version='1.0'"),
	        "plain: our header to the server names the client's domain");
	T_CHECK(has(x.upstream, C_AUTH), "plain: the <auth> reaches the server as read");
	T_CHECK(has(x.client, S_SUCCESS), "plain: the client hears <success/>");
	/* after the restart: the client's header and bind go as they are */
	T_CHECK(has(after(x.upstream, C_AUTH), C_HDR C_BIND C_PRESENCE),
	        "plain: the restarted stream, the bind and the presence reach the server as sent");
	T_CHECK(has(after(x.client, S_SUCCESS), S_HDR("s2")),
	        "plain: the server's new header reaches the client");
	T_CHECK(has(x.client, "<bind xmlns='" NS_BIND "'/>") && !has(x.client, "compress"),
	        "plain: post-login features rewritten: bind kept, compression removed");
	T_CHECK(has(x.log, "\"compression_removed\":true"),
	        "plain: the removed compression is logged");
	T_CHECK(has(x.client, S_BOUND("alice@example.test/phone")), "plain: the bind result");
	T_CHECK(has(x.log, "\"event\":\"bind\",\"ok\":true,\"resource\":\"phone\","
	                   "\"jid\":\"alice@example.test/phone\""),
	        "plain: bind logged with the JID");
	T_CHECK(has(x.log, "\"event\":\"auth\",\"mechanism\":\"PLAIN\",\"tls\":false") &&
	            has(x.log, "\"authcid\":\"alice\""),
	        "plain: auth logged with the authcid");
	T_CHECK(has(x.log, "\"event\":\"login\"") && has(x.log, "\"outcome\":\"success\""),
	        "plain: login record says success");
	result_free(&x);
}

/* XEP-0388 with Bind2 inline: no restart, no iq bind. */
#define C_AUTHENTICATE_BIND2                                                                       \
	"<authenticate xmlns='" NS_SASL2 "' mechanism='PLAIN'><initial-response>" PLAIN_ALICE      \
	"</initial-response><user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'>"                \
	"<software>unit</software></user-agent><bind xmlns='" NS_BIND2 "'><tag>unit</tag></bind>"  \
	"</authenticate>"
#define S_SUCCESS2_BOUND                                                                           \
	"<success xmlns='" NS_SASL2 "'><authorization-identifier>alice@example.test/unit-1"        \
	"</authorization-identifier><bound xmlns='" NS_BIND2 "'/></success>"

static void sc_sasl2_bind2(struct run *r)
{
	sc_preauth(r, S_FEATURES_SASL2);
	feed(r, HARNESS_CLIENT, C_AUTHENTICATE_BIND2);
	feed(r, HARNESS_UPSTREAM, S_SUCCESS2_BOUND);
	feed(r, HARNESS_UPSTREAM, S_FEATURES_BIND);
	feed(r, HARNESS_CLIENT, C_PRESENCE);
	feed(r, HARNESS_UPSTREAM, "<message from='bob@example.test'><body>hi</body></message>");
}

static void test_sasl2_bind2(void)
{
	struct result x;
	run_both("sasl2+bind2", CONF_PLAIN, SESSION_PORT_STARTTLS, sc_sasl2_bind2, &x);
	dump("sasl2+bind2", &x);
	T_CHECK(!x.closed, "sasl2+bind2: the session stays open");
	T_STREQ(
	    x.events,
	    "connect upstream stream stream features auth policy auth_result bind login features",
	    "sasl2+bind2: events");
	T_CHECK(has(x.client, "<authentication xmlns='" NS_SASL2 "'>"),
	        "sasl2+bind2: the client is offered SASL2");
	T_CHECK(has(x.upstream, "<authenticate xmlns='" NS_SASL2 "' mechanism='PLAIN'>"
	                        "<initial-response>" PLAIN_ALICE "</initial-response>"),
	        "sasl2+bind2: <authenticate> relayed with the payload");
	T_CHECK(has(x.upstream, "<bind xmlns='" NS_BIND2 "'><tag>unit</tag></bind>"),
	        "sasl2+bind2: the Bind2 request goes with it");
	T_CHECK(has(x.client, S_SUCCESS2_BOUND), "sasl2+bind2: the client hears the success");
	T_CHECK(!has(after(x.client, S_SUCCESS2_BOUND), "<?xml") &&
	            !has(after(x.upstream, "</authenticate>"), "<stream:stream"),
	        "sasl2+bind2: no stream restart on either leg");
	T_CHECK(has(after(x.client, S_SUCCESS2_BOUND), "<bind xmlns='" NS_BIND "'/>") &&
	            !has(after(x.client, S_SUCCESS2_BOUND), "compress"),
	        "sasl2+bind2: features after success rewritten, compression removed");
	T_CHECK(has(x.client, "<message from='bob@example.test'><body>hi</body></message>") &&
	            has(after(x.upstream, "</authenticate>"), C_PRESENCE),
	        "sasl2+bind2: stanzas flow both ways after");
	T_CHECK(has(x.log, "\"event\":\"bind\",\"ok\":true,\"bind2\":true"),
	        "sasl2+bind2: the inline bind is logged");
	T_CHECK(has(x.log, "\"user_agent_software\":\"unit\""),
	        "sasl2+bind2: the user agent is logged");
	result_free(&x);
}

/* XEP-0388 without Bind2: success, features, then the iq bind. */
#define C_AUTHENTICATE                                                                             \
	"<authenticate xmlns='" NS_SASL2 "' mechanism='PLAIN'><initial-response>" PLAIN_ALICE      \
	"</initial-response></authenticate>"
#define S_SUCCESS2                                                                                 \
	"<success xmlns='" NS_SASL2 "'><authorization-identifier>alice@example.test"               \
	"</authorization-identifier></success>"

static void sc_sasl2_iq(struct run *r)
{
	sc_preauth(r, S_FEATURES_SASL2);
	feed(r, HARNESS_CLIENT, C_AUTHENTICATE);
	feed(r, HARNESS_UPSTREAM, S_SUCCESS2);
	feed(r, HARNESS_UPSTREAM, S_FEATURES_BIND);
	feed(r, HARNESS_CLIENT, C_BIND);
	feed(r, HARNESS_UPSTREAM, S_BOUND("alice@example.test/phone"));
	feed(r, HARNESS_CLIENT, C_PRESENCE);
}

static void test_sasl2_iq(void)
{
	struct result x;
	run_both("sasl2+iq bind", CONF_PLAIN, SESSION_PORT_STARTTLS, sc_sasl2_iq, &x);
	dump("sasl2+iq bind", &x);
	T_CHECK(!x.closed, "sasl2+iq bind: the session stays open");
	/* the iq bind is followed even though SASL2's authorization-identifier
	 * already gave the JID (it was not, before issue 9's fuzzing) */
	T_STREQ(x.events,
	        "connect upstream stream stream features auth policy auth_result login features "
	        "bind",
	        "sasl2+iq bind: events");
	T_CHECK(has(after(x.upstream, "</authenticate>"), C_BIND C_PRESENCE),
	        "sasl2+iq bind: the bind and the presence reach the server");
	T_CHECK(has(after(x.client, S_SUCCESS2), "<bind xmlns='" NS_BIND "'/>") &&
	            !has(x.client, "compress"),
	        "sasl2+iq bind: features after success rewritten");
	T_CHECK(has(x.client, S_BOUND("alice@example.test/phone")), "sasl2+iq bind: bind result");
	result_free(&x);
}

/* XEP-0484 FAST as mod_sasl2_fast offers it, inline in SASL2, with the
 * channel-bound variants the proxy must strip and a tls-0rtt it cannot
 * honour (the client's TLS ends at the proxy). */
#define NS_FAST "urn:xmpp:fast:0"
#define S_FEATURES_FAST                                                                            \
	"<stream:features>" MECHS "<authentication xmlns='" NS_SASL2 "'>"                          \
	"<mechanism>PLAIN</mechanism><inline><bind xmlns='" NS_BIND2 "'/>"                         \
	"<sm xmlns='urn:xmpp:sm:3'/><fast xmlns='" NS_FAST "' tls-0rtt='true'>"                    \
	"<mechanism>HT-SHA-256-NONE</mechanism><mechanism>HT-SHA-256-EXPR</mechanism>"             \
	"<mechanism>HT-SHA-256-UNIQ</mechanism></fast></inline></authentication>"                  \
	"</stream:features>"
#define USER_AGENT "<user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'/>"
#define C_AUTHENTICATE_TOKEN_REQUEST                                                               \
	"<authenticate xmlns='" NS_SASL2 "' mechanism='PLAIN'><initial-response>" PLAIN_ALICE      \
	"</initial-response>" USER_AGENT "<bind xmlns='" NS_BIND2 "'/>"                            \
	"<request-token xmlns='" NS_FAST "' mechanism='HT-SHA-256-NONE'/></authenticate>"
#define FAST_TOKEN "secret-token:fast-UNITTOKEN"
#define S_SUCCESS2_TOKEN                                                                           \
	"<success xmlns='" NS_SASL2 "'><authorization-identifier>alice@example.test/unit-1"        \
	"</authorization-identifier><bound xmlns='" NS_BIND2 "'/><token xmlns='" NS_FAST           \
	"' expiry='2026-12-22T00:00:00Z' token='" FAST_TOKEN "'/></success>"
/* "alice" NUL HMAC-SHA-256(FAST_TOKEN, "Initiator") */
#define HT_ALICE "YWxpY2UAIt3QsIq/E/JUIn6NZTi9jdhnDWq7IqQ8ytu097Fw+bw="
#define HT_HEX "22ddd0b08abf13f254227e8d6538bd8dd8670d6abb22a43ccadbb4f7b170f9bc"
#define C_AUTHENTICATE_TOKEN(mech)                                                                 \
	"<authenticate xmlns='" NS_SASL2 "' mechanism='" mech "'><initial-response>" HT_ALICE      \
	"</initial-response>" USER_AGENT "<fast xmlns='" NS_FAST "' count='3'/></authenticate>"
#define SM_ACK "<a xmlns='urn:xmpp:sm:3' h='1'/>"

/* A password login asking for a token, then the client's close with an
 * SM ack behind it (as xmpp.js sends), in the same read and in the next. */
static void sc_fast_token(struct run *r)
{
	sc_preauth(r, S_FEATURES_FAST);
	feed(r, HARNESS_CLIENT, C_AUTHENTICATE_TOKEN_REQUEST);
	feed(r, HARNESS_UPSTREAM, S_SUCCESS2_TOKEN);
	feed(r, HARNESS_UPSTREAM, S_FEATURES_BIND);
	feed(r, HARNESS_CLIENT, C_PRESENCE "</stream:stream>" SM_ACK);
	feed(r, HARNESS_CLIENT, SM_ACK);
	feed(r, HARNESS_UPSTREAM, "</stream:stream>");
	harness_eof(r->ls, HARNESS_UPSTREAM);
}

static void test_fast_token(void)
{
	struct result x;
	run_both("fast token", CONF_PLAIN, SESSION_PORT_STARTTLS, sc_fast_token, &x);
	dump("fast token", &x);
	T_CHECK(has(x.client, "<inline><bind xmlns='" NS_BIND2 "'/><sm xmlns='urn:xmpp:sm:3'/>"
	                      "<fast xmlns='" NS_FAST "'><mechanism>HT-SHA-256-NONE</mechanism>"
	                      "</fast></inline>"),
	        "fast token: FAST offered inline with -NONE only, no tls-0rtt");
	T_CHECK(!has(x.client, "HT-SHA-256-EXPR") && !has(x.client, "HT-SHA-256-UNIQ"),
	        "fast token: the channel-bound variants are stripped");
	T_CHECK(has(x.log, "\"rule\":\"channel_binding\",\"action\":\"strip\",\"detail\":\"HT-SHA-"
	                   "256-EXPR removed") &&
	            has(x.log, "\"detail\":\"HT-SHA-256-UNIQ removed"),
	        "fast token: each strip logged");
	T_CHECK(has(x.log, "\"inline\":[\"bind2\",\"sm\",\"fast\"],\"fast_mechanisms\":[\"HT-SHA-256-"
	                   "NONE\",\"HT-SHA-256-EXPR\",\"HT-SHA-256-UNIQ\"],\"fast_offered\":[\"HT-"
	                   "SHA-256-NONE\"]"),
	        "fast token: features event names the inline features and both FAST lists");
	T_CHECK(has(x.log, "\"inline\":[\"bind2\",\"fast\"],\"fast_request\":\"HT-SHA-256-NONE\""),
	        "fast token: auth event names what the client asked for inline");
	T_CHECK(has(x.log, "\"event\":\"auth_result\",\"outcome\":\"success\",\"by\":\"upstream\","
	                   "\"mechanism\":\"PLAIN\",\"token_expiry\":\"2026-12-22T00:00:00Z\""),
	        "fast token: the token's expiry is logged");
	T_CHECK(has(x.log, "\"fast\":\"issued\",\"fast_expiry\":\"2026-12-22T00:00:00Z\""),
	        "fast token: the login record says issued");
	T_CHECK(has(x.client, "token='" FAST_TOKEN "'"), "fast token: the client gets its token");
	T_CHECK(!has(x.log, FAST_TOKEN) && !has(x.log, "UNITTOKEN"),
	        "fast token: the token is in no event");
	T_CHECK(has(x.upstream, C_PRESENCE "</stream:stream>") && !has(x.upstream, "<a "),
	        "fast token: the close reaches the server, the ack behind it does not");
	T_CHECK(!has(x.client, "stream:error") && !has(x.client, "not-well-formed"),
	        "fast token: bytes after the close are not answered");
	char want[64];
	snprintf(want, sizeof(want), "\"trailing_bytes\":%zu", 2 * strlen(SM_ACK));
	T_CHECK(x.closed && has(x.log, want), "fast token: trailing bytes counted at close");
	result_free(&x);
}

/* A token login: first with a stripped channel-bound variant (refused,
 * never relayed), then with the -NONE one the client was offered. */
static void sc_fast_login(struct run *r)
{
	sc_preauth(r, S_FEATURES_FAST);
	feed(r, HARNESS_CLIENT, C_AUTHENTICATE_TOKEN("HT-SHA-256-EXPR"));
	feed(r, HARNESS_CLIENT, C_AUTHENTICATE_TOKEN("HT-SHA-256-NONE"));
	feed(r, HARNESS_UPSTREAM,
	     "<success xmlns='" NS_SASL2 "'><additional-data>" HT_ALICE "</additional-data>"
	     "<authorization-identifier>alice@example.test/unit-1</authorization-identifier>"
	     "<bound xmlns='" NS_BIND2 "'/></success>");
	feed(r, HARNESS_UPSTREAM, S_FEATURES_BIND);
}

static const char *const CONF_DENY_MALLORY[] = {"upstream_tls=none", "require_tls=no",
                                                "users_deny=mallory@*", NULL};

static void test_fast_login(void)
{
	struct result x;
	run_both("fast login", CONF_PLAIN, SESSION_PORT_STARTTLS, sc_fast_login, &x);
	dump("fast login", &x);
	T_CHECK(!x.closed, "fast login: the session stays open");
	T_CHECK(has(x.log, "\"rule\":\"not_offered\",\"action\":\"reject\",\"detail\":\"HT-SHA-256-"
	                   "EXPR was not offered"),
	        "fast login: a stripped variant is refused");
	T_CHECK(!has(x.upstream, "HT-SHA-256-EXPR") &&
	            has(x.upstream, "<authenticate xmlns='" NS_SASL2 "' mechanism='HT-SHA-256-NONE'>"
	                            "<initial-response>" HT_ALICE "</initial-response>" USER_AGENT
	                            "<fast xmlns='" NS_FAST "' count='3'/></authenticate>"),
	        "fast login: only the offered one reaches the server, as sent");
	T_CHECK(has(x.log, "\"mechanism\":\"HT-SHA-256-NONE\",\"tls\":false,\"sasl2\":true,"
	                   "\"initial_response\":true") &&
	            has(x.log, "\"inline\":[\"fast\"],\"fast_count\":3,\"fast_invalidate\":false,"
	                       "\"authcid\":\"alice\""),
	        "fast login: auth event with the count and the user");
	T_CHECK(has(x.log, "\"rule\":\"plain_without_tls\",\"action\":\"log\",\"detail\":\"HT-SHA-256-"
	                   "NONE without TLS: a replayable token hash"),
	        "fast login: a token hash in the clear is logged as such");
	T_CHECK(has(x.log, "\"fast\":\"used\"") && has(x.log, "\"outcome\":\"success\""),
	        "fast login: the login record says used");
	T_CHECK(!has(x.log, HT_ALICE) && !has(x.log, HT_HEX) && !has(x.log, "Iu3QsIq"),
	        "fast login: the token hash is in no event");
	result_free(&x);

	/* identity rules read the token login's user too */
	run_both("fast deny", CONF_DENY_MALLORY, SESSION_PORT_STARTTLS, sc_fast_login, &x);
	T_CHECK(has(x.upstream, "mechanism='HT-SHA-256-NONE'"), "fast deny: alice may");
	result_free(&x);
	struct run r;
	run_begin(&r, CONF_DENY_MALLORY, SESSION_PORT_STARTTLS, false);
	sc_preauth(&r, S_FEATURES_FAST);
	feed(&r, HARNESS_CLIENT,
	     "<authenticate xmlns='" NS_SASL2 "' mechanism='HT-SHA-256-NONE'><initial-response>"
	     "bWFsbG9yeQAi3dCwir8T8lQifo1lOL2N2GcNarsipDzK27T3sXD5vA==</initial-response>" USER_AGENT
	     "<fast xmlns='" NS_FAST "' count='4'/></authenticate>");
	feed(&r, HARNESS_CLIENT,
	     "<authenticate xmlns='" NS_SASL2 "' mechanism='HT-SHA-256-NONE'><initial-response>"
	     "bWFsbG9yeQ==</initial-response>" USER_AGENT "<fast xmlns='" NS_FAST "'/></authenticate>");
	run_end(&r, &x);
	T_CHECK(!has(x.upstream, "HT-SHA-256-NONE"), "fast deny: mallory's token login never relayed");
	T_CHECK(has(x.log, "\"rule\":\"users_deny\",\"action\":\"reject\""),
	        "fast deny: refused by users_deny");
	T_CHECK(has(x.log, "\"malformed\":true,\"reason\":\"no NUL separator\"") &&
	            !has(after(x.log, "no NUL separator"), "\"outcome\":\"success\""),
	        "fast deny: a payload without a NUL fails closed");
	result_free(&x);
}

static const char *const CONF_ALLOW_HT[] = {"upstream_tls=none", "require_tls=no",
                                            "mechanisms_allow=HT-SHA-256-NONE", NULL};

/* What the review of the FAST change found (helper review, issue 10). */
static void test_fast_review(void)
{
	struct run r;
	struct result x;

	/* FAST lives inside SASL2's <authentication>: with no SASL2 mechanism
	 * left to offer, FAST is not offered either, nor accepted */
	run_begin(&r, CONF_ALLOW_HT, SESSION_PORT_STARTTLS, false);
	sc_preauth(&r, S_FEATURES_FAST);
	feed(&r, HARNESS_CLIENT, C_AUTHENTICATE_TOKEN("HT-SHA-256-NONE"));
	run_end(&r, &x);
	T_CHECK(!has(x.client, "<mechanism>HT-SHA-256-NONE") && !has(x.upstream, "HT-SHA-256-NONE"),
	        "fast review: no SASL2 left: FAST neither offered nor relayed");
	T_CHECK(has(x.log, "\"rule\":\"not_offered\"") && has(x.log, "\"fast_offered\":[]"),
	        "fast review: refused as not offered, and the log claims no offer");
	result_free(&x);

	/* FAST outside <inline>, or in another version: never passed on */
	run_begin(&r, CONF_PLAIN, SESSION_PORT_STARTTLS, false);
	sc_preauth(&r, "<stream:features>" MECHS "<authentication xmlns='" NS_SASL2 "'>"
	               "<mechanism>PLAIN</mechanism><fast xmlns='" NS_FAST "' tls-0rtt='true'>"
	               "<mechanism>HT-SHA-256-UNIQ</mechanism></fast><inline><fast "
	               "xmlns='urn:xmpp:fast:1'><mechanism>HT-SHA-256-ENDP</mechanism></fast>"
	               "</inline></authentication><fast xmlns='" NS_FAST "'><mechanism>"
	               "HT-SHA-256-EXPR</mechanism></fast></stream:features>");
	run_end(&r, &x);
	T_CHECK(!has(x.client, "urn:xmpp:fast") && !has(x.client, "tls-0rtt") &&
	            !has(x.client, "HT-SHA-256"),
	        "fast review: FAST copies outside <inline> or of other versions are dropped");
	T_CHECK(has(x.log, "\"inline\":[\"fast_unsupported\"]"),
	        "fast review: an unsupported FAST version is named as such");
	result_free(&x);

	/* the server ends its stream right after the SASL2 success, before any
	 * first element: the close reaches the client */
	run_begin(&r, CONF_PLAIN, SESSION_PORT_STARTTLS, false);
	sc_preauth(&r, S_FEATURES_SASL2);
	feed(&r, HARNESS_CLIENT, C_AUTHENTICATE);
	feed(&r, HARNESS_UPSTREAM, S_SUCCESS2 "</stream:stream>");
	T_CHECK(has(harness_peek(r.ls, HARNESS_CLIENT), S_SUCCESS2 "</stream:stream>"),
	        "fast review: a stream end in the held bytes reaches the client");
	/* the client does not answer it: the close wait ends the session */
	T_CHECK(!harness_closed(r.ls), "fast review: open while the client may still close");
	harness_timeout(r.ls, false);
	T_CHECK(harness_closed(r.ls), "fast review: closed when the close wait is over");
	run_end(&r, &x);
	T_CHECK(has(x.log, "\"reason\":\"the server ended its stream, the client did not\""),
	        "fast review: the close says who did not end its stream");
	result_free(&x);

	/* a client that ends its stream and goes on sending: counted, and past
	 * MAX_TRAILING its leg stops being read */
	run_begin(&r, CONF_PLAIN, SESSION_PORT_STARTTLS, false);
	sc_preauth(&r, S_FEATURES_SASL2);
	feed(&r, HARNESS_CLIENT, C_AUTHENTICATE);
	feed(&r, HARNESS_UPSTREAM, S_SUCCESS2 S_FEATURES_BIND);
	feed(&r, HARNESS_CLIENT, "</stream:stream>");
	static char junk[4096];
	memset(junk, 'x', sizeof(junk));
	junk[sizeof(junk) - 1] = '\0';
	for (int i = 0; i < 20; i++)
		feed(&r, HARNESS_CLIENT, junk);
	T_CHECK(!harness_reading(r.ls, HARNESS_CLIENT),
	        "fast review: trailing bytes past the bound stop the reading");
	T_CHECK(!has(harness_peek(r.ls, HARNESS_UPSTREAM), "xxxx"),
	        "fast review: trailing bytes never reach the server");
	run_end(&r, &x);
	result_free(&x);
}

/* The server goes away right after <success/>, before the client's new
 * stream header (found by tools/soak --faults): the client hears nothing
 * until it opens its stream, then our header and the error. */
static void test_gone_after_success(void)
{
	struct run r;
	struct result x;
	run_begin(&r, CONF_PLAIN, SESSION_PORT_STARTTLS, false);
	sc_preauth(&r, S_FEATURES);
	feed(&r, HARNESS_CLIENT, C_AUTH);
	feed(&r, HARNESS_UPSTREAM, S_SUCCESS);
	harness_take(r.ls, HARNESS_CLIENT);
	harness_eof(r.ls, HARNESS_UPSTREAM);
	T_CHECK(!harness_closed(r.ls) && strcmp(harness_peek(r.ls, HARNESS_CLIENT), "") == 0,
	        "gone after success: nothing the client did not ask for");
	feed(&r, HARNESS_CLIENT, C_HDR);
	const char *c = harness_peek(r.ls, HARNESS_CLIENT);
	T_CHECK(strncmp(c, "<?xml version='1.0'?><stream:stream ", 36) == 0 &&
	            has(c, "<stream:error><remote-connection-failed") && harness_closed(r.ls),
	        "gone after success: the client's new stream hears the failure");
	run_end(&r, &x);
	result_free(&x);

	/* and a client that never opens it: the linger ends the session */
	run_begin(&r, CONF_PLAIN, SESSION_PORT_STARTTLS, false);
	sc_preauth(&r, S_FEATURES);
	feed(&r, HARNESS_CLIENT, C_AUTH);
	feed(&r, HARNESS_UPSTREAM, S_SUCCESS);
	harness_eof(r.ls, HARNESS_UPSTREAM);
	harness_timeout(r.ls, false);
	T_CHECK(harness_closed(r.ls), "gone after success: a silent client is closed by the timer");
	run_end(&r, &x);
	result_free(&x);
}

/* STARTTLS on both legs (the handshakes faked: see login_harness.h). The
 * upstream's post-TLS header waits for the client's, whose from it
 * carries; the client is told to STARTTLS meanwhile. */
static void sc_starttls(struct run *r)
{
	harness_connected(r->ls);
	feed(r, HARNESS_CLIENT, C_HDR);
	feed(r, HARNESS_UPSTREAM, S_HDR("s1"));
	feed(r, HARNESS_UPSTREAM, S_FEATURES_STARTTLS);
	feed(r, HARNESS_UPSTREAM, "<proceed xmlns='" NS_TLS "'/>");
	harness_tls_done(r->ls, HARNESS_UPSTREAM);
	feed(r, HARNESS_CLIENT, "<starttls xmlns='" NS_TLS "'/>");
	harness_tls_done(r->ls, HARNESS_CLIENT);
	feed(r, HARNESS_CLIENT, C_HDR_FROM);
	feed(r, HARNESS_UPSTREAM, S_HDR("s2"));
	feed(r, HARNESS_UPSTREAM, S_FEATURES);
	feed(r, HARNESS_CLIENT, C_AUTH);
	feed(r, HARNESS_UPSTREAM, S_SUCCESS);
	feed(r, HARNESS_CLIENT, C_HDR);
	feed(r, HARNESS_UPSTREAM, S_HDR("s3"));
	feed(r, HARNESS_UPSTREAM, S_FEATURES_BIND);
	feed(r, HARNESS_CLIENT, C_BIND);
	feed(r, HARNESS_UPSTREAM, S_BOUND("alice@example.test/phone"));
}

static void test_starttls(void)
{
	struct result x;
	run_both("starttls", NULL, SESSION_PORT_STARTTLS, sc_starttls, &x);
	dump("starttls", &x);
	T_CHECK(!x.closed, "starttls: the session stays open");
	T_STREQ(x.events,
	        "connect upstream stream stream starttls tls features starttls tls stream "
	        "stream features auth auth_result stream stream features bind login",
	        "starttls: events");
	const char *first = strstr(x.upstream, "<stream:stream");
	const char *second = first ? strstr(first + 1, "<stream:stream") : NULL;
	const char *from = strstr(x.upstream, "from='alice@example.test'");
	T_CHECK(second != NULL && from != NULL && from > second && from < strchr(second, '>'),
	        "starttls: the client's from goes in the post-TLS header only");
	T_CHECK(has(x.upstream, "<starttls xmlns='" NS_TLS "'/>"),
	        "starttls: the proxy starts TLS toward the server");
	T_CHECK(has(x.client, "<starttls xmlns='" NS_TLS "'><required/></starttls>") &&
	            strstr(x.client, "<mechanism>") > strstr(x.client, "<proceed"),
	        "starttls: the client is first offered STARTTLS required, no mechanisms");
	T_CHECK(has(x.client, "<proceed xmlns='" NS_TLS "'/>"),
	        "starttls: the client hears proceed");
	T_CHECK(has(after(x.client, "<proceed"), "<mechanism>PLAIN</mechanism>"),
	        "starttls: after TLS the client is offered PLAIN");
	T_CHECK(has(x.log, "\"event\":\"auth\",\"mechanism\":\"PLAIN\",\"tls\":true"),
	        "starttls: the auth is logged with tls true");
	result_free(&x);
}

/* Direct TLS on both legs (XEP-0368): no STARTTLS anywhere. */
static void sc_direct(struct run *r)
{
	harness_tls_done(r->ls, HARNESS_CLIENT);
	harness_connected(r->ls);
	feed(r, HARNESS_CLIENT, C_HDR_FROM);
	harness_tls_done(r->ls, HARNESS_UPSTREAM);
	feed(r, HARNESS_UPSTREAM, S_HDR("s1"));
	feed(r, HARNESS_UPSTREAM, S_FEATURES);
	feed(r, HARNESS_CLIENT, C_AUTH);
	feed(r, HARNESS_UPSTREAM, S_SUCCESS);
	feed(r, HARNESS_CLIENT, C_HDR);
	feed(r, HARNESS_UPSTREAM, S_HDR("s2"));
	feed(r, HARNESS_UPSTREAM, S_FEATURES_BIND);
	feed(r, HARNESS_CLIENT, C_BIND);
	feed(r, HARNESS_UPSTREAM, S_BOUND("alice@example.test/phone"));
}

static const char *const CONF_DIRECT[] = {"upstream_tls=direct", NULL};

static void test_direct_tls(void)
{
	struct result x;
	run_both("direct tls", CONF_DIRECT, SESSION_PORT_DIRECT_TLS, sc_direct, &x);
	dump("direct tls", &x);
	T_CHECK(!x.closed, "direct tls: the session stays open");
	T_STREQ(x.events,
	        "connect tls upstream stream tls stream features auth auth_result stream "
	        "stream features bind login",
	        "direct tls: events");
	T_CHECK(!has(x.client, "starttls") && !has(x.upstream, "starttls"),
	        "direct tls: no STARTTLS on either leg");
	T_CHECK(has(x.upstream, "' from='alice@example.test' version='1.0'"),
	        "direct tls: the client's from goes to the server");
	T_CHECK(has(x.log, "\"event\":\"auth\",\"mechanism\":\"PLAIN\",\"tls\":true"),
	        "direct tls: the auth is over TLS");
	T_CHECK(has(x.log, "\"client_tls\":\"TLSv1.3\"") || has(x.log, "\"client_tls\":\"TLSv"),
	        "direct tls: the login record names the client's TLS");
	result_free(&x);
}

/* Transparent mode (upstream = original-dst) without upstream_tls: the
 * upstream mode follows the listener, so a client redirected from a
 * server's 5223 reaches that port as Direct TLS and one from 5222 as
 * STARTTLS; a value given still applies to every connection. */
static const char *const CONF_TRANSPARENT[] = {"upstream=original-dst", NULL};
static const char *const CONF_TRANSPARENT_STARTTLS[] = {"upstream=original-dst",
                                                        "upstream_tls=starttls", NULL};

static void test_upstream_mode(void)
{
	struct result x;
	run_both("transparent direct", CONF_TRANSPARENT, SESSION_PORT_DIRECT_TLS, sc_direct, &x);
	T_CHECK(!x.closed && !has(x.upstream, "starttls"),
	        "transparent: a listen_tls connection goes upstream as Direct TLS");
	T_CHECK(has(x.log, "\"event\":\"login\""), "transparent direct: the login completes");
	result_free(&x);
	run_both("transparent starttls", CONF_TRANSPARENT, SESSION_PORT_STARTTLS, sc_starttls, &x);
	T_CHECK(!x.closed && has(x.upstream, "<starttls xmlns='" NS_TLS "'/>"),
	        "transparent: a listen connection goes upstream as STARTTLS");
	result_free(&x);
	struct run r;
	run_begin(&r, CONF_TRANSPARENT_STARTTLS, SESSION_PORT_DIRECT_TLS, false);
	harness_tls_done(r.ls, HARNESS_CLIENT);
	harness_connected(r.ls);
	feed(&r, HARNESS_CLIENT, C_HDR_FROM);
	T_CHECK(has(harness_all(r.ls, HARNESS_UPSTREAM), "<stream:stream") && r.ls->leg[HARNESS_UPSTREAM].tls_starts == 0,
	        "transparent, upstream_tls given: the server gets a plaintext header first");
	run_end(&r, &x);
	result_free(&x);
}

/* ---- refusals ---- */

/* One run, whole, of a script from the features on (config conf). */
static void refusal(const char *name, const char *const *conf, const char *features,
                    const char *client_msg, struct result *x)
{
	struct run r;
	run_begin(&r, conf, SESSION_PORT_STARTTLS, false);
	sc_preauth(&r, features);
	harness_take(r.ls, HARNESS_UPSTREAM);
	feed(&r, HARNESS_CLIENT, client_msg);
	run_end(&r, x);
	dump(name, x);
	check_no_secret(x, name);
}

#define FAILURE(cond) "<failure xmlns='" NS_SASL "'><" cond " xmlns='" NS_SASL "'/>"

static void test_refusals(void)
{
	struct result x;
	char t[160];

	static const char *const deny[] = {"upstream_tls=none", "require_tls=no",
	                                   "mechanisms_deny=PLAIN", NULL};
	refusal("mechanisms_deny", deny, S_FEATURES, C_AUTH, &x);
	T_CHECK(has(x.log, "\"rule\":\"mechanisms_deny\",\"action\":\"strip\""),
	        "mechanisms_deny: PLAIN stripped from the offer, logged");
	T_CHECK(has(x.log, "\"offered\":[\"SCRAM-SHA-1\"]"), "mechanisms_deny: only SCRAM offered");
	T_CHECK(has(x.client, FAILURE("invalid-mechanism")),
	        "mechanisms_deny: the client hears invalid-mechanism");
	T_CHECK(!has(x.upstream, "<auth"), "mechanisms_deny: the server never sees the <auth>");
	T_CHECK(!x.closed, "mechanisms_deny: the client may try again");
	T_CHECK(has(x.log, "\"event\":\"auth_result\",\"outcome\":\"failure\",\"by\":\"proxy\""),
	        "mechanisms_deny: the result is the proxy's");
	result_free(&x);

	static const char *const plain_rej[] = {"upstream_tls=none", "require_tls=no",
	                                        "plain_without_tls=reject", NULL};
	refusal("plain_without_tls", plain_rej, S_FEATURES, C_AUTH, &x);
	T_CHECK(has(x.log, "\"rule\":\"plain_without_tls\",\"action\":\"strip\"") &&
	            has(x.log, "\"rule\":\"plain_without_tls\",\"action\":\"reject\""),
	        "plain_without_tls: stripped from the offer, then the attempt refused");
	T_CHECK(has(x.client, "<failure xmlns='" NS_SASL "'>") && !has(x.upstream, "<auth"),
	        "plain_without_tls: the client hears a failure, the server nothing");
	result_free(&x);

	static const char *const users[] = {"upstream_tls=none", "require_tls=no",
	                                    "users_deny=mallory", NULL};
	refusal("users_deny", users, S_FEATURES,
	        "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>AG1hbGxvcnkAczNjcmV0UFc=</auth>", &x);
	T_CHECK(has(x.log, "\"rule\":\"users_deny\",\"action\":\"reject\""),
	        "users_deny: mallory refused, logged");
	T_CHECK(has(x.client, "<failure xmlns='" NS_SASL "'><not-authorized") &&
	            !has(x.upstream, "<auth"),
	        "users_deny: the client hears not-authorized, the server nothing");
	T_CHECK(!has(x.log, "AG1hbGxvcnkAczNjcmV0UFc="), "users_deny: the payload is not logged");
	result_free(&x);

	/* a third NUL: the server might read the identity otherwise */
	refusal("malformed PLAIN", users, S_FEATURES,
	        "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>AGFsAGljZQBzM2NyZXRQVw==</auth>", &x);
	T_CHECK(has(x.log, "\"rule\":\"users_deny\",\"action\":\"reject\"") &&
	            !has(x.upstream, "<auth"),
	        "malformed PLAIN: refused while an identity rule is set");
	T_CHECK(has(x.log, "\"malformed\":true"), "malformed PLAIN: logged as malformed");
	result_free(&x);
	/* one NUL: names nobody */
	refusal("PLAIN with one NUL", users, S_FEATURES,
	        "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>YWxpY2UAczNjcmV0UFc=</auth>", &x);
	T_CHECK(has(x.client, "<failure xmlns='" NS_SASL "'>") && !has(x.upstream, "<auth"),
	        "PLAIN with one NUL: refused while an identity rule is set");
	T_CHECK(!has(x.log, "czNjcmV0UFc") && !has(x.log, "alice\\u0000"),
	        "PLAIN with one NUL: nothing of the payload logged");
	result_free(&x);
	/* not base64 */
	refusal("PLAIN not base64", CONF_PLAIN, S_FEATURES,
	        "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>!!!!</auth>", &x);
	T_CHECK(has(x.client, FAILURE("incorrect-encoding")) && !has(x.upstream, "<auth"),
	        "PLAIN not base64: incorrect-encoding, the server sees nothing");
	result_free(&x);

	refusal("iq-auth", CONF_PLAIN, S_FEATURES,
	        "<iq type='set' id='a1'><query xmlns='jabber:iq:auth'><username>alice</username>"
	        "<password>" SECRET "</password><resource>r</resource></query></iq>",
	        &x);
	T_CHECK(has(x.log, "\"legacy\":true") && has(x.log, "\"username\":\"alice\"") &&
	            has(x.log, "\"rule\":\"iq_auth\",\"action\":\"reject\""),
	        "iq-auth: recorded with its username and refused");
	T_CHECK(x.closed && has(x.client, "<stream:error><not-authorized") &&
	            has(x.client, "</stream:stream>"),
	        "iq-auth: the client hears not-authorized and the stream ends");
	T_CHECK(!has(x.upstream, "jabber:iq:auth") && has(x.upstream, "</stream:stream>"),
	        "iq-auth: the server never sees it; its stream ends cleanly");
	result_free(&x);

	refusal("stanza before auth", CONF_PLAIN, S_FEATURES,
	        "<message to='bob@example.test'><body>hello</body></message>", &x);
	T_CHECK(x.closed && has(x.client, "<stream:error><not-authorized") &&
	            !has(x.upstream, "<message"),
	        "stanza before auth: not-authorized, nothing reaches the server");
	T_CHECK(has(x.reason, "stanza before authentication"),
	        "stanza before auth: the close says why");
	result_free(&x);

	refusal("unknown element", CONF_PLAIN, S_FEATURES, "<foo xmlns='urn:x'/>", &x);
	T_CHECK(x.closed && has(x.client, "<stream:error><unsupported-stanza-type"),
	        "unknown element before auth: unsupported-stanza-type");
	result_free(&x);

	/* in-band registration is the one iq that passes */
	refusal("register", CONF_PLAIN, S_FEATURES,
	        "<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>", &x);
	T_CHECK(!x.closed && has(x.upstream, "jabber:iq:register"),
	        "register: an iq with one register query reaches the server");
	result_free(&x);

	snprintf(t, sizeof(t), "refusals done");
	(void)t;
}

/* auth_failures = 1/600: the server's failure is held for a pause; then
 * the address is refused by the proxy (this session and the next). */
static void test_auth_failures(void)
{
	static const char *const conf[] = {"upstream_tls=none", "require_tls=no",
	                                   "auth_failures=1/600", NULL};
	struct run r;
	struct result x;
	run_begin(&r, conf, SESSION_PORT_STARTTLS, false);
	sc_preauth(&r, S_FEATURES);
	feed(&r, HARNESS_CLIENT, C_AUTH);
	harness_take(r.ls, HARNESS_CLIENT);
	feed(&r, HARNESS_UPSTREAM, FAILURE("not-authorized") "</failure>");
	T_CHECK(r.ls->delays == 1 && r.ls->delay >= 0.2 && r.ls->delay <= 1.0,
	        "auth_failures: a pause of 0.2 to 1 s is asked for");
	T_CHECK(strcmp(harness_peek(r.ls, HARNESS_CLIENT), "") == 0 &&
	            !harness_reading(r.ls, HARNESS_CLIENT),
	        "auth_failures: during the pause the client hears nothing and is not read");
	feed(&r, HARNESS_CLIENT, C_AUTH); /* a retry, waiting in the kernel */
	T_CHECK(strcmp(harness_peek(r.ls, HARNESS_CLIENT), "") == 0,
	        "auth_failures: a retry sent in the pause waits");
	harness_take(r.ls, HARNESS_UPSTREAM);
	harness_resume(r.ls);
	const char *c = harness_take(r.ls, HARNESS_CLIENT);
	T_CHECK(has(c, "<failure xmlns='" NS_SASL "'><not-authorized/></failure>"),
	        "auth_failures: after the pause, the server's failure");
	T_CHECK(!has(harness_peek(r.ls, HARNESS_UPSTREAM), "<auth"),
	        "auth_failures: the retry does not reach the server");
	T_CHECK(r.ls->delays == 2, "auth_failures: the refused retry is paused too");
	harness_resume(r.ls);
	T_CHECK(has(harness_take(r.ls, HARNESS_CLIENT), FAILURE("temporary-auth-failure")),
	        "auth_failures: the retry is refused with temporary-auth-failure");

	/* a new session from the same address */
	struct harness_session *s2 = harness_session_new(r.hp, SESSION_PORT_STARTTLS);
	harness_connected(s2);
	harness_feeds(s2, HARNESS_CLIENT, C_HDR);
	harness_feeds(s2, HARNESS_UPSTREAM, S_HDR("t1") S_FEATURES);
	harness_take(s2, HARNESS_UPSTREAM);
	harness_feeds(s2, HARNESS_CLIENT, C_AUTH);
	harness_resume(s2);
	T_CHECK(has(harness_take(s2, HARNESS_CLIENT), FAILURE("temporary-auth-failure")) &&
	            !has(harness_peek(s2, HARNESS_UPSTREAM), "<auth"),
	        "auth_failures: the next session from the address is refused by the proxy");
	harness_session_free(s2);
	run_end(&r, &x);
	dump("auth_failures", &x);
	T_CHECK(has(x.log, "\"rule\":\"auth_failures\",\"action\":\"reject\""),
	        "auth_failures: the refusal is logged");
	check_no_secret(&x, "auth_failures");
	result_free(&x);
}

/* ---- the deferred failure ---- */

static void test_deferred_failure(void)
{
	struct run r;
	struct result x;

	/* the upstream cannot be reached before the client said anything */
	run_begin(&r, CONF_PLAIN, SESSION_PORT_STARTTLS, false);
	harness_error(r.ls, HARNESS_UPSTREAM, "connect: Connection refused");
	T_CHECK(!harness_closed(r.ls) && strcmp(harness_peek(r.ls, HARNESS_CLIENT), "") == 0,
	        "deferred: nothing to the client before its header");
	T_CHECK(r.ls->leg[HARNESS_UPSTREAM].closes >= 1 && r.ls->deadlines == 1,
	        "deferred: the upstream is let go, a linger bounds the wait");
	feed(&r, HARNESS_CLIENT, C_HDR);
	const char *c = harness_peek(r.ls, HARNESS_CLIENT);
	T_CHECK(strncmp(c, "<?xml version='1.0'?><stream:stream ", 36) == 0 &&
	            has(c, "<stream:error><remote-connection-failed") &&
	            has(c, "cannot reach the server") && has(c, "</stream:stream>"),
	        "deferred: after its header the client hears our header and the error");
	T_CHECK(harness_closed(r.ls) && has(r.ls->close_reason, "upstream connect failed"),
	        "deferred: then the session closes with the upstream's reason");
	run_end(&r, &x);
	dump("deferred", &x);
	T_STREQ(x.events, "connect upstream stream stream_error close", "deferred: events");
	result_free(&x);

	/* the same, with the header fed a byte at a time */
	run_begin(&r, CONF_PLAIN, SESSION_PORT_STARTTLS, true);
	harness_timeout(r.ls, true);
	feed(&r, HARNESS_CLIENT, C_HDR);
	T_CHECK(
	    has(harness_peek(r.ls, HARNESS_CLIENT), "<stream:error><remote-connection-failed") &&
	        harness_closed(r.ls),
	    "deferred: a connect timeout, told after a header fed byte by byte");
	run_end(&r, &x);
	result_free(&x);

	/* the client never sends its header: the linger closes */
	run_begin(&r, CONF_PLAIN, SESSION_PORT_STARTTLS, false);
	harness_timeout(r.ls, true);
	harness_timeout(r.ls, false);
	T_CHECK(harness_closed(r.ls) && strcmp(harness_all(r.ls, HARNESS_CLIENT), "") == 0,
	        "deferred: a client that never opens its stream hears nothing");
	run_end(&r, &x);
	result_free(&x);

	/* a server that fails while the client is in its STARTTLS handshake */
	run_begin(&r, NULL, SESSION_PORT_STARTTLS, false);
	harness_connected(r.ls);
	feed(&r, HARNESS_CLIENT, C_HDR);
	feed(&r, HARNESS_UPSTREAM, S_HDR("s1") S_FEATURES_STARTTLS);
	feed(&r, HARNESS_UPSTREAM, "<proceed xmlns='" NS_TLS "'/>");
	harness_tls_done(r.ls, HARNESS_UPSTREAM);
	feed(&r, HARNESS_CLIENT, "<starttls xmlns='" NS_TLS "'/>");
	harness_take(r.ls, HARNESS_CLIENT);
	harness_eof(r.ls, HARNESS_UPSTREAM);
	T_CHECK(!harness_closed(r.ls) && strcmp(harness_peek(r.ls, HARNESS_CLIENT), "") == 0,
	        "deferred: the upstream goes during the client's handshake: nothing yet");
	harness_tls_done(r.ls, HARNESS_CLIENT);
	feed(&r, HARNESS_CLIENT, C_HDR);
	T_CHECK(
	    has(harness_peek(r.ls, HARNESS_CLIENT), "<stream:error><remote-connection-failed") &&
	        harness_closed(r.ls),
	    "deferred: told in the stream the client opens over TLS");
	run_end(&r, &x);
	result_free(&x);
}

/* ---- the held header ---- */

static void test_held_header(void)
{
	struct run r;
	struct result x;

	/* the server's post-login header and features come before the
	 * client's new header, in pieces: nothing of them reaches the client
	 * until the features are complete, and then rewritten */
	run_begin(&r, CONF_PLAIN, SESSION_PORT_STARTTLS, false);
	sc_preauth(&r, S_FEATURES);
	feed(&r, HARNESS_CLIENT, C_AUTH);
	feed(&r, HARNESS_UPSTREAM, S_SUCCESS);
	harness_take(r.ls, HARNESS_CLIENT);
	feed(&r, HARNESS_CLIENT, C_HDR);
	feed(&r, HARNESS_UPSTREAM, S_HDR("s2") "<stream:features><bind xmlns='" NS_BIND "'/>");
	T_CHECK(strcmp(harness_peek(r.ls, HARNESS_CLIENT), "") == 0,
	        "held header: header and partial features held");
	feed(&r, HARNESS_UPSTREAM,
	     "<compression xmlns='http://jabber.org/features/compress'><method>zlib</method>"
	     "</compression></stream:features><message><body>early</body></message>");
	T_STREQ(harness_peek(r.ls, HARNESS_CLIENT),
	        S_HDR("s2") "<stream:features><bind xmlns='" NS_BIND "'/></stream:features>"
	                    "<message><body>early</body></message>",
	        "held header: released with the features rewritten, what followed after");
	run_end(&r, &x);
	result_free(&x);

	/* a stream error instead of features: the client gets the held
	 * header, then the error as the server wrote it */
	run_begin(&r, CONF_PLAIN, SESSION_PORT_STARTTLS, false);
	sc_preauth(&r, S_FEATURES);
	feed(&r, HARNESS_CLIENT, C_AUTH);
	feed(&r, HARNESS_UPSTREAM, S_SUCCESS);
	harness_take(r.ls, HARNESS_CLIENT);
	feed(&r, HARNESS_CLIENT, C_HDR);
	feed(&r, HARNESS_UPSTREAM,
	     S_HDR(
	         "s2") "<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
	               "</stream:error></stream:stream>");
	T_STREQ(harness_peek(r.ls, HARNESS_CLIENT),
	        S_HDR("s2") "<stream:error><not-authorized "
	                    "xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
	                    "</stream:stream>",
	        "held header: a stream error in place of features goes as it is");
	run_end(&r, &x);
	result_free(&x);

	/* the server goes before its features: the client hears it in the
	 * server's held header */
	run_begin(&r, CONF_PLAIN, SESSION_PORT_STARTTLS, false);
	sc_preauth(&r, S_FEATURES);
	feed(&r, HARNESS_CLIENT, C_AUTH);
	feed(&r, HARNESS_UPSTREAM, S_SUCCESS);
	harness_take(r.ls, HARNESS_CLIENT);
	feed(&r, HARNESS_CLIENT, C_HDR);
	feed(&r, HARNESS_UPSTREAM, S_HDR("s2"));
	harness_eof(r.ls, HARNESS_UPSTREAM);
	const char *c = harness_peek(r.ls, HARNESS_CLIENT);
	T_CHECK(strncmp(c, S_HDR("s2"), strlen(S_HDR("s2"))) == 0 &&
	            has(c, "<stream:error><remote-connection-failed") && harness_closed(r.ls),
	        "held header: EOF before the features: the error in the server's header");
	run_end(&r, &x);
	result_free(&x);
}

/* ---- the bind gate ---- */

static const char *const CONF_GATE[] = {"upstream_tls=none", "require_tls=no", "users_deny=mallory",
                                        NULL};

static void gate_to_bind(struct run *r)
{
	sc_preauth(r, S_FEATURES);
	feed(r, HARNESS_CLIENT, C_AUTH);
	feed(r, HARNESS_UPSTREAM, S_SUCCESS);
	/* the client pipelines its header, the bind and a presence */
	feed(r, HARNESS_CLIENT, C_HDR C_BIND C_PRESENCE);
	feed(r, HARNESS_UPSTREAM, S_HDR("s2") S_FEATURES_BIND);
}

static void test_gate(void)
{
	struct run r;
	struct result x;

	for (int bw = 0; bw <= 1; bw++) {
		const char *name = bw ? "gate (byte at a time)" : "gate";
		char t[160];
		run_begin(&r, CONF_GATE, SESSION_PORT_STARTTLS, bw);
		gate_to_bind(&r);
		const char *u = after(harness_all(r.ls, HARNESS_UPSTREAM), C_AUTH);
		snprintf(t, sizeof(t), "%s: the header and the bind reach the server", name);
		T_CHECK(has(u, C_HDR C_BIND), t);
		snprintf(t, sizeof(t), "%s: the pipelined presence waits for the bind result",
		         name);
		T_CHECK(!has(u, C_PRESENCE), t);
		feed(&r, HARNESS_UPSTREAM, S_BOUND("alice@example.test/phone"));
		u = after(harness_all(r.ls, HARNESS_UPSTREAM), C_AUTH);
		snprintf(t, sizeof(t), "%s: released after the bind result, in order", name);
		T_CHECK(has(u, C_HDR C_BIND C_PRESENCE), t);
		feed(&r, HARNESS_CLIENT, "<message to='bob@example.test'><body>x</body></message>");
		snprintf(t, sizeof(t), "%s: then the stream flows", name);
		T_CHECK(has(harness_all(r.ls, HARNESS_UPSTREAM), "<body>x</body>") &&
		            !harness_closed(r.ls) && r.ls->login_done >= 1,
		        t);
		run_end(&r, &x);
		result_free(&x);
	}

	/* the server binds a JID the rules refuse: the presence never goes */
	run_begin(&r, CONF_GATE, SESSION_PORT_STARTTLS, false);
	gate_to_bind(&r);
	feed(&r, HARNESS_UPSTREAM, S_BOUND("mallory@example.test/phone"));
	T_CHECK(harness_closed(r.ls) && !has(harness_all(r.ls, HARNESS_UPSTREAM), C_PRESENCE),
	        "gate: a denied bound JID ends the session; the presence never reaches the server");
	T_CHECK(has(harness_all(r.ls, HARNESS_CLIENT), "<stream:error><policy-violation"),
	        "gate: the client hears policy-violation");
	T_CHECK(!has(harness_all(r.ls, HARNESS_CLIENT), "mallory@example.test/phone"),
	        "gate: the refused bind result is not relayed");
	run_end(&r, &x);
	dump("gate denied", &x);
	T_CHECK(has(x.log, "\"rule\":\"users_deny\",\"action\":\"reject\""),
	        "gate: the refusal is logged");
	result_free(&x);

	/* a stanza instead of the bind */
	run_begin(&r, CONF_GATE, SESSION_PORT_STARTTLS, false);
	sc_preauth(&r, S_FEATURES);
	feed(&r, HARNESS_CLIENT, C_AUTH);
	feed(&r, HARNESS_UPSTREAM, S_SUCCESS);
	feed(&r, HARNESS_CLIENT, C_HDR C_PRESENCE);
	feed(&r, HARNESS_UPSTREAM, S_HDR("s2") S_FEATURES_BIND);
	T_CHECK(harness_closed(r.ls) && !has(harness_all(r.ls, HARNESS_UPSTREAM), C_PRESENCE) &&
	            has(harness_all(r.ls, HARNESS_CLIENT), "<stream:error><not-authorized"),
	        "gate: a stanza before the bind ends the session, unsent");
	run_end(&r, &x);
	result_free(&x);
}

/* With upstream_proxy_protocol the upstream connection waits for the
 * client's domain. A Direct TLS handshake that ends inside login_start()
 * (the ClientHello and the client's Finished already queued at accept)
 * names it there, and the connection made then is the only one: once,
 * login_start() connected a second time, leaking a socket that sent
 * nothing (ejabberd's accept loop waited 10 s on it). */
static void test_deferred_connect_once(void)
{
	static const char *const kv[] = {"upstream_tls=direct", "upstream_proxy_protocol=v2", NULL};
	struct harness_proxy *hp = harness_proxy_new(kv);
	hp->sni_at_start = "example.test";
	struct harness_session *ls = harness_session_new(hp, SESSION_PORT_DIRECT_TLS);
	T_CHECK(ls->connects == 1, "deferred connect: one upstream connection");
	harness_session_free(ls);
	hp->sni_at_start = NULL;
	ls = harness_session_new(hp, SESSION_PORT_DIRECT_TLS);
	T_CHECK(ls->connects == 0, "deferred connect: none before the domain is known");
	harness_session_free(ls);
	harness_proxy_free(hp);
}


/* ---- idle sweeps after login (login_idle) ---- */

#define C_MSG "<message to='bob@example.test' type='chat'><body>hi</body></message>"
#define S_MSG "<message from='bob@example.test/x' type='chat'><body>yo</body></message>"

static unsigned idle_released; /* parsers found released after the sweeps */

/* Two sweeps: a leg that moved no byte between them gives back its
 * parser if its stream is idle. */
static void sweep_twice(struct run *r)
{
	struct session *s = harness_leg(r->ls, HARNESS_CLIENT)->owner;
	login_idle(s);
	login_idle(s);
	idle_released += xml_released(s->lg->cl.xml) + xml_released(s->lg->ul.xml);
}

/* sc_plain, then stanzas both ways with idle sweeps between them (or
 * none), a half-sent stanza across sweeps, and the client's stream end. */
static void sc_relay(struct run *r, bool idle)
{
	sc_plain(r);
	if (idle)
		sweep_twice(r);
	feed(r, HARNESS_CLIENT, C_MSG);
	feed(r, HARNESS_UPSTREAM, S_MSG);
	if (idle)
		sweep_twice(r);
	feed(r, HARNESS_CLIENT, " <message to='bob@example.test'><bo");
	if (idle)
		sweep_twice(r);
	feed(r, HARNESS_CLIENT, "dy>two</body></message>\r");
	if (idle)
		sweep_twice(r);
	feed(r, HARNESS_CLIENT, "\n</stream:stream>");
	feed(r, HARNESS_UPSTREAM, "</stream:stream>");
}

static void sc_relay_idle(struct run *r)
{
	sc_relay(r, true);
}

static void sc_relay_busy(struct run *r)
{
	sc_relay(r, false);
}

static void test_idle(void)
{
	struct result a, b;
	run_both("idle", CONF_PLAIN, SESSION_PORT_STARTTLS, sc_relay_idle, &a);
	unsigned released = idle_released;
	run_both("busy", CONF_PLAIN, SESSION_PORT_STARTTLS, sc_relay_busy, &b);
	T_CHECK(released > 0, "idle: the sweeps released parsers");
	T_STREQ(a.client, b.client, "idle: the client is sent the same bytes as without sweeps");
	T_STREQ(a.upstream, b.upstream, "idle: the server is sent the same bytes as without sweeps");
	T_STREQ(a.log, b.log, "idle: the same events as without sweeps");
	T_CHECK(has(a.upstream, C_MSG " <message to='bob@example.test'><body>two</body></message>"),
	        "idle: the stanzas reach the server as sent, the split one whole");
	T_CHECK(has(a.client, S_MSG), "idle: the server's message reaches the client");
	T_CHECK(a.closed && strcmp(a.reason, "client ended the stream") == 0,
	        "idle: both streams ended, the session closes");
	result_free(&a);
	result_free(&b);
}

int main(void)
{
	test_idle();
	test_plain();
	test_upstream_mode();
	test_deferred_connect_once();
	test_sasl2_bind2();
	test_sasl2_iq();
	test_fast_token();
	test_fast_login();
	test_fast_review();
	test_gone_after_success();
	test_starttls();
	test_direct_tls();
	test_refusals();
	test_auth_failures();
	test_deferred_failure();
	test_held_header();
	test_gate();
	T_DONE();
}
