/*
 * libFuzzer target for the whole login (src/login*.c) with the fake legs
 * of tests/unit/login_harness.c: the input plays both the client and the
 * server, and the leg events between them.
 *
 * Input: byte 0 and byte 1 choose the configuration and the port (see
 * fuzz_conf); then one step per op byte, low nibble the kind, high nibble
 * its argument:
 *   0, 1     raw bytes from the client / the server: a length byte, the
 *            bytes, one read;
 *   2 to 7   a scripted client element (table fuzz_client, the nibble
 *            picks it), then a variant byte: bits 0-1 how it is read (whole,
 *            cut in two at bits 2-7, a byte per read), bits 2-7 choose
 *            among its variants;
 *   8 to 13  the same for the server (fuzz_server);
 *   14, 15   an event: connected, TLS done or failed, EOF, socket error,
 *            a timer firing (the nibble picks it).
 * PLAIN payloads (and the iq-auth password) carry a secret made from a
 * counter hashed, never from input bytes, so only a leak can put it in
 * the event log.
 *
 * Invariants, abort() on failure so libFuzzer keeps the input:
 *  - after every step, what each leg was sent parses with Expat as a
 *    stream: well-formed so far, stream restarts only between two
 *    top-level elements (a new <?xml?> or stream header there); one
 *    known exception, UTF-16 after a restart (see xc_check);
 *  - at the end, no secret, and no base64 payload holding one, in the
 *    event log; at most one login record; no close for an "internal
 *    error" (a move the login's state table does not allow);
 *  - ASan/UBSan/LSan: no memory error or leak (teardown as session.c's).
 *
 * Build and run: tests/fuzz/run SECONDS login
 */
#include <expat.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "b64.h"
#include "buf.h"
#include "evlog.h"
#include "login.h"
#include "login_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NS_STREAMS "http://etherx.jabber.org/streams"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_SASL2 "urn:xmpp:sasl:2"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_BIND2 "urn:xmpp:bind:0"
#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_ERR "urn:ietf:params:xml:ns:xmpp-streams"

#define MAX_SECRETS 64

/* ---- the input ---- */

struct input {
	const uint8_t *p, *end;
};

static bool in_more(const struct input *in)
{
	return in->p < in->end;
}

static uint8_t in_byte(struct input *in)
{
	return in->p < in->end ? *in->p++ : 0;
}

/* ---- secrets ---- */

struct secrets {
	char pw[MAX_SECRETS][16];
	char b64[MAX_SECRETS][200];
	size_t n;
	uint32_t counter;
};

static struct secrets fz_secrets;

/* A fresh password: "Pw" and 8 hex digits of a hashed counter. */
static const char *secret_new(void)
{
	struct secrets *z = &fz_secrets;
	uint32_t h = 2166136261u ^ ++z->counter;
	for (int i = 0; i < 4; i++)
		h = (h ^ (h >> 13)) * 16777619u + 0x9e3779b9u;
	size_t i = z->n < MAX_SECRETS ? z->n++ : MAX_SECRETS - 1;
	snprintf(z->pw[i], sizeof(z->pw[i]), "Pw%08x", (unsigned)h);
	z->b64[i][0] = '\0';
	return z->pw[i];
}

/* The base64 of authzid NUL authcid NUL pw, remembered with pw. */
static const char *plain_payload(const char *authzid, const char *authcid, bool third_nul)
{
	const char *pw = secret_new();
	char raw[128];
	size_t n = 0;
	n += (size_t)snprintf(raw + n, sizeof(raw) - n, "%s", authzid);
	raw[n++] = '\0';
	n += (size_t)snprintf(raw + n, sizeof(raw) - n, "%s", authcid);
	raw[n++] = '\0';
	if (third_nul) {
		memcpy(raw + n, "x\0", 2);
		n += 2;
	}
	n += (size_t)snprintf(raw + n, sizeof(raw) - n, "%s", pw);
	char *out = fz_secrets.b64[fz_secrets.n - 1];
	size_t w = b64_encode((const unsigned char *)raw, n, out);
	out[w] = '\0';
	return out;
}

/* ---- the scripted elements ---- */

static const char *const users[] = {"alice", "mallory", "Alice", "bob@example.test"};

static void client_element(struct buf *b, unsigned which, unsigned var)
{
	const char *user = users[var & 3];
	switch (which) {
	case 0: {
		static const char *const tos[] = {"example.test", "", "a@b", "EXAMPLE.test"};
		buf_addf(b, "%s<%s:stream xmlns='jabber:client' xmlns:%s='" NS_STREAMS "'",
		         var & 4 ? "" : "<?xml version='1.0'?>", var & 8 ? "x" : "stream",
		         var & 8 ? "x" : "stream");
		if (!(var & 16))
			buf_addf(b, " to='%s'", tos[(var >> 5) & 1 ? 1 + (var & 1) : 0]);
		buf_addf(b, " version='%s'>", var & 32 && var & 16 ? "0.9" : "1.0");
		break;
	}
	case 1:
		buf_adds(b, "<starttls xmlns='" NS_TLS "'/>");
		break;
	case 2:
		buf_addf(b, "<auth xmlns='" NS_SASL "' mechanism='%s'>%s</auth>",
		         var & 16 ? "plain" : "PLAIN",
		         plain_payload(var & 4 ? "mallory@example.test" : "", user, var & 8));
		break;
	case 3:
		buf_addf(b,
		         "<authenticate xmlns='" NS_SASL2 "' mechanism='PLAIN'><initial-response>%s"
		         "</initial-response>%s%s</authenticate>",
		         plain_payload("", user, var & 8),
		         var & 4 ? "<user-agent id='u1'><software>f</software></user-agent>" : "",
		         var & 16 ? "<bind xmlns='" NS_BIND2 "'><tag>f</tag></bind>" : "");
		break;
	case 4: /* SCRAM client-first: n,,n=user,r=nonce */
		buf_addf(b, "<auth xmlns='" NS_SASL "' mechanism='SCRAM-SHA-1'>%s</auth>",
		         var & 4 ? "eSwsbj1hbGljZSxyPWFiY2Q=" : "biwsbj1hbGljZSxyPWFiY2Q=");
		break;
	case 5:
		buf_addf(b, "<response xmlns='%s'>%s</response>", var & 4 ? NS_SASL2 : NS_SASL,
		         var & 8 ? "=" : "Yz1iaXdzLHI9YWJjZGVmLHA9QUFBQQ==");
		break;
	case 6:
		buf_addf(b, "<abort xmlns='%s'/>", var & 4 ? NS_SASL2 : NS_SASL);
		break;
	case 7:
		buf_addf(b,
		         "<iq type='set'%s><bind xmlns='" NS_BIND
		         "'><resource>r</resource></bind></iq>",
		         var & 4 ? "" : " id='b1'");
		break;
	case 8:
		buf_adds(b, var & 4 ? "<message to='bob@example.test'><body>m</body></message>"
		                    : "<presence/>");
		break;
	case 9:
		buf_addf(b, "</%s:stream>", var & 8 ? "x" : "stream");
		break;
	case 10:
		buf_adds(b, "<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>");
		break;
	case 11:
		buf_addf(
		    b,
		    "<iq type='set' id='a1'><query xmlns='jabber:iq:auth'><username>%s</username>"
		    "<password>%s</password></query></iq>",
		    user, secret_new());
		break;
	case 12:
		buf_adds(b, var & 4 ? "<resume xmlns='urn:xmpp:sm:3' previd='p' h='0'/>"
		                    : "<enable xmlns='urn:xmpp:sm:3'/>");
		break;
	case 13:
		buf_adds(b, var & 4 ? "\n" : " ");
		break;
	case 14:
		buf_adds(b, "<compress xmlns='http://jabber.org/protocol/compress'><method>zlib"
		            "</method></compress>");
		break;
	default:
		buf_adds(b, "<iq type='set' id='s1'><session "
		            "xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
		break;
	}
}

static void server_element(struct buf *b, unsigned which, unsigned var)
{
	switch (which) {
	case 0:
		buf_addf(b,
		         "%s<%s:stream xmlns='jabber:client' xmlns:%s='" NS_STREAMS
		         "' id='s%u' from='example.test' version='%s'>",
		         var & 4 ? "" : "<?xml version='1.0'?>", var & 8 ? "y" : "stream",
		         var & 8 ? "y" : "stream", var & 3, var & 16 ? "0.9" : "1.0");
		break;
	case 1:
		buf_addf(b,
		         "<stream:features><starttls xmlns='" NS_TLS "'>%s</starttls>%s"
		         "</stream:features>",
		         var & 4 ? "" : "<required/>",
		         var & 8 ? "<mechanisms xmlns='" NS_SASL "'><mechanism>PLAIN</mechanism>"
		                   "</mechanisms>"
		                 : "");
		break;
	case 2:
		buf_addf(
		    b,
		    "<stream:features><mechanisms xmlns='" NS_SASL "'><mechanism>PLAIN"
		    "</mechanism><mechanism>SCRAM-SHA-1</mechanism>%s</mechanisms>%s%s%s"
		    "</stream:features>",
		    var & 4 ? "<mechanism>SCRAM-SHA-1-PLUS</mechanism>" : "",
		    var & 8 ? "<authentication xmlns='" NS_SASL2 "'><mechanism>PLAIN</mechanism>"
		              "<inline><bind xmlns='" NS_BIND2 "'/></inline></authentication>"
		            : "",
		    var & 16 ? "<compression xmlns='http://jabber.org/features/compress'>"
		               "<method>zlib</method></compression>"
		             : "",
		    var & 32 ? "<register xmlns='http://jabber.org/features/iq-register'/>" : "");
		break;
	case 3:
		buf_adds(b, "<proceed xmlns='" NS_TLS "'/>");
		break;
	case 4:
		buf_adds(b, var & 4 ? "<success xmlns='" NS_SASL "'>dj1hYmNk</success>"
		                    : "<success xmlns='" NS_SASL "'/>");
		break;
	case 5:
		buf_addf(b, "<success xmlns='" NS_SASL2 "'>%s%s</success>",
		         var & 4   ? ""
		         : var & 8 ? "<authorization-identifier>mallory@example.test/x"
		                     "</authorization-identifier>"
		                   : "<authorization-identifier>alice@example.test/x"
		                     "</authorization-identifier>",
		         var & 16 ? "<bound xmlns='" NS_BIND2 "'/>" : "");
		break;
	case 6: {
		static const char *const conds[] = {"not-authorized", "aborted",
		                                    "temporary-auth-failure", "malformed-request"};
		buf_addf(b, "<failure xmlns='%s'><%s xmlns='" NS_SASL "'/>%s</failure>",
		         var & 16 ? NS_SASL2 : NS_SASL, conds[(var >> 2) & 3],
		         var & 32 ? "<text>no</text>" : "");
		break;
	}
	case 7:
		buf_addf(b, "<challenge xmlns='%s'>%s</challenge>", var & 4 ? NS_SASL2 : NS_SASL,
		         "cj1hYmNkZWYscz1RU1hDUitRNnNlazhiZjkyLGk9NDA5Ng==");
		break;
	case 8:
		buf_addf(b, "<stream:features><bind xmlns='" NS_BIND "'/>%s%s</stream:features>",
		         var & 4 ? "<compression xmlns='http://jabber.org/features/compress'>"
		                   "<method>zlib</method></compression>"
		                 : "",
		         var & 8 ? "<sm xmlns='urn:xmpp:sm:3'/>" : "");
		break;
	case 9:
		if (var & 16)
			buf_addf(b,
			         "<iq type='error'%s><error type='cancel'><conflict "
			         "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
			         var & 32 ? "" : " id='b1'");
		else
			buf_addf(b,
			         "<iq type='result'%s><bind xmlns='" NS_BIND
			         "'><jid>%s</jid></bind></iq>",
			         var & 32 ? "" : " id='b1'",
			         var & 4 ? "mallory@example.test/r" : "alice@example.test/r");
		break;
	case 10:
		buf_addf(b, "<stream:error><%s xmlns='" NS_ERR "'/>%s</stream:error>",
		         var & 4 ? "conflict" : "made-up",
		         var & 8 ? "<text xmlns='" NS_ERR "'>t</text>" : "");
		break;
	case 11:
		buf_addf(b, "</%s:stream>", var & 8 ? "y" : "stream");
		break;
	case 12:
		buf_adds(b, var & 4 ? "<message from='bob@example.test'><body>s</body></message>"
		                    : "<presence from='bob@example.test'/>");
		break;
	case 13:
		buf_addf(b, "<iq type='result' id='%s'/>", var & 4 ? "s1" : "r1");
		break;
	case 14:
		buf_adds(b, "<failure xmlns='" NS_TLS "'/>");
		break;
	default:
		buf_adds(b, var & 4 ? "\n" : " ");
		break;
	}
}

/* ---- the stream checker: Expat on what a leg was sent ---- */

struct xcheck {
	XML_Parser p;
	int depth;
	size_t done;      /* bytes of the leg's output checked */
	size_t doc_start; /* where the current stream began */
	bool restart;     /* a stream header met at depth 1 */
	bool given_up;    /* a known finding met: this leg is not checked further */
	size_t restart_at;
};

static void XMLCALL xc_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
	(void)atts;
	struct xcheck *x = ud;
	if (x->depth == 1 && strcmp(name, NS_STREAMS "\x01stream") == 0) {
		/* a restart without <?xml?>: parse it as a new stream */
		x->restart = true;
		x->restart_at = (size_t)XML_GetCurrentByteIndex(x->p);
		XML_StopParser(x->p, XML_FALSE);
		return;
	}
	x->depth++;
}

static void XMLCALL xc_end(void *ud, const XML_Char *name)
{
	(void)name;
	struct xcheck *x = ud;
	x->depth--;
}

static void xc_setup(struct xcheck *x)
{
	XML_SetUserData(x->p, x);
	XML_SetElementHandler(x->p, xc_start, xc_end);
#ifdef XI_HAVE_REPARSE_DEFERRAL
	XML_SetReparseDeferralEnabled(x->p, XML_FALSE);
#endif
	x->depth = 0;
	x->restart = false;
}

static void xc_init(struct xcheck *x)
{
	memset(x, 0, sizeof(*x));
	x->p = XML_ParserCreateNS(NULL, '\x01');
	if (x->p == NULL)
		abort();
	xc_setup(x);
}

static void xc_free(struct xcheck *x)
{
	XML_ParserFree(x->p);
}

/* Prints len bytes of s, non-printable ones as \xHH. */
static void print_bytes(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f)
			fputc(c, stderr);
		else
			fprintf(stderr, "\\x%02x", c);
	}
	fputc('\n', stderr);
}

static void xc_fail(const char *leg, const char *out, size_t len, size_t at, const char *why)
{
	fprintf(stderr,
	        "fuzz_login: output to the %s is not a well-formed stream at byte %zu: %s\n", leg,
	        at, why);
	fprintf(stderr, "---- output to the %s ----\n", leg);
	print_bytes(out, len);
	fprintf(stderr, "---- from byte %zu ----\n", at);
	print_bytes(out + (at < len ? at : len), at < len ? len - at : 0);
	abort();
}

/* Checks what was added to out since the last call. */
static void xc_check(struct xcheck *x, const char *leg, const char *out, size_t len)
{
	while (x->done < len && !x->given_up) {
		size_t from = x->done;
		x->done = len;
		if (XML_Parse(x->p, out + from, (int)(len - from), XML_FALSE) == XML_STATUS_OK)
			return;
		size_t at;
		if (x->restart) {
			at = x->doc_start + x->restart_at;
		} else {
			enum XML_Error e = XML_GetErrorCode(x->p);
			at = x->doc_start + (size_t)XML_GetCurrentByteIndex(x->p);
			if (e != XML_ERROR_MISPLACED_XML_PI || x->depth != 1 || at >= len ||
			    strncmp(out + at, "<?xml", 5) != 0) {
				xc_fail(leg, out, len, at, XML_ErrorString(e));
			}
		}
		/* a stream restart between two top-level elements */
		if (XML_ParserReset(x->p, NULL) != XML_TRUE)
			abort();
		xc_setup(x);
		x->doc_start = at;
		x->done = at;
	}
}

/* ---- one run ---- */

static void fuzz_conf(struct harness_proxy *hp, uint8_t a, uint8_t b)
{
	static const char *const up[] = {"none", "starttls", "direct", "none"};
	static const char *const req[] = {"auto", "yes", "no", "no"};
	harness_conf_set(hp, "upstream_tls", up[a & 3]);
	harness_conf_set(hp, "require_tls", req[(a >> 3) & 3]);
	if (a & 0x20)
		harness_conf_set(hp, "users_deny", "mallory");
	if (a & 0x40)
		harness_conf_set(hp, "auth_failures", "2/600");
	if (a & 0x80)
		harness_conf_set(hp, "plain_without_tls", "reject");
	if (b & 1)
		harness_conf_set(hp, "mechanisms_deny", "SCRAM-SHA-1");
	if (b & 2)
		harness_conf_set(hp, "strip_starttls", "yes");
	if (b & 4)
		harness_conf_set(hp, "users_allow", "alice");
	if (b & 8)
		harness_conf_set(hp, "offer_mechanisms", "PLAIN,SCRAM-SHA-1-PLUS");
	if (b & 16)
		harness_conf_set(hp, "max_stanza_prelogin", "1024");
}

static void feed_split(struct harness_session *ls, enum harness_side side, const char *d, size_t n,
                       uint8_t how)
{
	switch (how & 3) {
	case 1: {
		size_t cut = n ? (how >> 2) % n : 0;
		harness_feed(ls, side, d, cut);
		harness_feed(ls, side, d + cut, n - cut);
		break;
	}
	case 2:
		harness_feed_bytewise(ls, side, d, n);
		break;
	default:
		harness_feed(ls, side, d, n);
	}
}

static void event(struct harness_session *ls, unsigned which)
{
	switch (which) {
	case 0:
	case 1:
	case 2:
		harness_connected(ls);
		break;
	case 3:
	case 4:
		harness_tls_done(ls, HARNESS_CLIENT);
		break;
	case 5:
	case 6:
		harness_tls_done(ls, HARNESS_UPSTREAM);
		break;
	case 7:
		harness_tls_error(ls, which & 1 ? HARNESS_UPSTREAM : HARNESS_CLIENT, "bad record");
		break;
	case 8:
		harness_eof(ls, HARNESS_CLIENT);
		break;
	case 9:
		harness_eof(ls, HARNESS_UPSTREAM);
		break;
	case 10:
		harness_error(ls, HARNESS_CLIENT, "Connection reset by peer");
		break;
	case 11:
		harness_error(ls, HARNESS_UPSTREAM, "Connection reset by peer");
		break;
	case 12:
		harness_timeout(ls, true);
		break;
	case 13:
		harness_timeout(ls, false);
		break;
	case 14:
		harness_resume(ls);
		break;
	default:
		if (!harness_closed(ls))
			login_shutdown(&ls->s);
		break;
	}
}

static void check_log(const char *log)
{
	for (size_t i = 0; i < fz_secrets.n; i++) {
		if (strstr(log, fz_secrets.pw[i]) != NULL ||
		    (fz_secrets.b64[i][0] && strstr(log, fz_secrets.b64[i]) != NULL)) {
			fprintf(stderr, "fuzz_login: secret %s in the event log:\n%s\n",
			        fz_secrets.pw[i], log);
			abort();
		}
	}
	/* the login's own state table refused a move (issue 9: no state
	 * outside the leg's own table) */
	if (strstr(log, "\"reason\":\"internal error") != NULL) {
		fprintf(stderr, "fuzz_login: the session ended on an internal error:\n%s\n", log);
		abort();
	}
	const char *p = strstr(log, "\"event\":\"login\"");
	if (p != NULL && strstr(p + 1, "\"event\":\"login\"") != NULL) {
		fprintf(stderr, "fuzz_login: two login records:\n%s\n", log);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = {data, data + size};
	static const char *dir;
	if (dir == NULL)
		dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

	memset(&fz_secrets, 0, sizeof(fz_secrets));
	uint8_t a = in_byte(&in), b = in_byte(&in);
	harness_log_start(dir);
	struct harness_proxy *hp = harness_proxy_new(NULL);
	fuzz_conf(hp, a, b);
	struct harness_session *ls =
	    harness_session_new(hp, a & 4 ? SESSION_PORT_DIRECT_TLS : SESSION_PORT_STARTTLS);
	struct xcheck xc[2];
	xc_init(&xc[0]);
	xc_init(&xc[1]);

	for (unsigned steps = 0; in_more(&in) && steps < 400; steps++) {
		uint8_t op = in_byte(&in);
		unsigned kind = op & 15, arg = op >> 4;
		if (kind <= 1) {
			size_t n = in_byte(&in);
			if (n > (size_t)(in.end - in.p))
				n = (size_t)(in.end - in.p);
			harness_feed(ls, kind ? HARNESS_UPSTREAM : HARNESS_CLIENT,
			             (const char *)in.p, n);
			in.p += n;
		} else if (kind <= 13) {
			uint8_t v = in_byte(&in);
			struct buf e = {0};
			bool client = kind <= 7;
			if (client)
				client_element(&e, arg, v >> 2);
			else
				server_element(&e, arg, v >> 2);
			feed_split(ls, client ? HARNESS_CLIENT : HARNESS_UPSTREAM, buf_head(&e),
			           e.len, v);
			buf_free(&e);
		} else {
			event(ls, arg);
		}
		for (int i = 0; i < 2; i++) {
			xc_check(&xc[i], i ? "server" : "client",
			         harness_all(ls, (enum harness_side)i), ls->leg[i].out.len);
		}
	}

	if (getenv("FUZZ_LOGIN_VERBOSE"))
		fprintf(stderr, "---- to the client:\n%s\n---- to the server:\n%s\n----\n",
		        harness_all(ls, HARNESS_CLIENT), harness_all(ls, HARNESS_UPSTREAM));
	xc_free(&xc[0]);
	xc_free(&xc[1]);
	harness_session_free(ls);
	harness_proxy_free(hp);
	char *log = harness_log_stop();
	if (getenv("FUZZ_LOGIN_VERBOSE"))
		fprintf(stderr, "%s", log);
	check_log(log);
	free(log);
	return 0;
}
