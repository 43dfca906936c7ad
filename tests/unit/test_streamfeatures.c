/*
 * Unit tests of streamfeatures.c: reading a server's <features> (as
 * Prosody and ejabberd send them) and writing the client's, which must
 * parse back with xml.c and carry exactly what the proxy meant to offer.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bounds.h"
#include "buf.h"
#include "streamfeatures.h"
#include "xml.h"
#include "t.h"

#define HDR                                                                                        \
	"<stream:stream xmlns='jabber:client' xmlns:stream='" XML_NS_STREAMS "' id='x1' "          \
	"from='lab.test' version='1.0' xml:lang='en'>"

/* Prosody 0.12 with mod_compression, mod_register, SASL2 and iq-auth. */
static const char prosody[] =
	"<stream:features>"
	"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
	"<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
	"<mechanism>PLAIN</mechanism><mechanism>SCRAM-SHA-1</mechanism>"
	"<mechanism>SCRAM-SHA-1-PLUS</mechanism></mechanisms>"
	"<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>"
	"<channel-binding type='tls-exporter'/><channel-binding type='tls-server-end-point'/>"
	"</sasl-channel-binding>"
	"<compression xmlns='http://jabber.org/features/compress'><method>zlib</method>"
	"</compression>"
	"<register xmlns='http://jabber.org/features/iq-register'/>"
	"<authentication xmlns='urn:xmpp:sasl:2'><mechanism>PLAIN</mechanism>"
	"<inline><bind xmlns='urn:xmpp:bind:0'/></inline></authentication>"
	"<auth xmlns='http://jabber.org/features/iq-auth'/>"
	"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://prosody.im' "
	"ver='a&amp;b='/>"
	"</stream:features>";

/* What a features element turned into, and the written output re-read. */
struct capture {
	struct streamfeatures f;
	int parsed; /* features elements seen */
	int rc;
	bool other; /* some other element was seen */
	char trace[2048];
};

/* Fires for the header. */
static void cap_open(void *ctx, const struct xml_elem *h, uint64_t end)
{
	(void)ctx, (void)h, (void)end;
}

/* Appends a compact dump of e ("{ns}name(children)") to s. */
static void dump(char *s, size_t size, const struct xml_elem *e)
{
	size_t n = strlen(s);
	snprintf(s + n, size - n, "{%s}%s", e->ns, e->name);
	for (size_t i = 0; i < e->nattrs; i++) {
		n = strlen(s);
		snprintf(s + n, size - n, " %s=%s", e->attrs[i].name, e->attrs[i].value);
	}
	if (e->textlen) {
		n = strlen(s);
		snprintf(s + n, size - n, " \"%s\"", e->text);
	}
	if (e->children) {
		n = strlen(s);
		snprintf(s + n, size - n, "(");
		for (const struct xml_elem *c = e->children; c; c = c->next) {
			dump(s, size, c);
			if (c->next) {
				n = strlen(s);
				snprintf(s + n, size - n, " ");
			}
		}
		n = strlen(s);
		snprintf(s + n, size - n, ")");
	}
}

/* Fires for each depth-1 element: features are parsed into cap->f. */
static void cap_element(void *ctx, const struct xml_elem *e, uint64_t s, uint64_t end)
{
	struct capture *cap = ctx;
	(void)s, (void)end;
	if (!xml_is(e, XML_NS_STREAMS, "features")) {
		cap->other = true;
		return;
	}
	cap->parsed++;
	cap->rc = streamfeatures_parse(&cap->f, e);
	cap->trace[0] = '\0';
	dump(cap->trace, sizeof(cap->trace), e);
}

static void cap_close(void *ctx)
{
	(void)ctx;
}

static const struct xml_handler cap_handler = {cap_open, cap_element, cap_close};

/* Parses header + body; true if it parsed with one features element. */
static bool parse(struct capture *cap, const char *header, const char *body, size_t len)
{
	struct xml_parser *p = xml_new(&cap_handler, cap, 1 << 20);
	size_t used;
	cap->parsed = 0;
	cap->other = false;
	enum xml_error e = xml_feed(p, header, strlen(header), &used);
	if (e == XML_OK)
		e = xml_feed(p, body, len, &used);
	if (e != XML_OK)
		printf("# parse error %d: %s\n", (int)e, xml_error_text(p));
	xml_free(p);
	return e == XML_OK && cap->parsed == 1 && cap->rc == 0 && !cap->other;
}

static bool kept_is(const struct streamfeatures *f, const char *want)
{
	return f->kept != NULL && f->kept->len == strlen(want) &&
	       (f->kept->len == 0 || memcmp(buf_head(f->kept), want, f->kept->len) == 0);
}

static bool has(const char *trace, const char *s)
{
	return strstr(trace, s) != NULL;
}

static void test_prosody(void)
{
	struct capture cap = {0};
	T_CHECK(parse(&cap, HDR, prosody, strlen(prosody)), "prosody: parses");
	struct streamfeatures *f = &cap.f;
	T_CHECK(f->starttls == SF_STARTTLS_REQUIRED, "prosody: starttls required");
	T_STREQ(streamfeatures_starttls_name(f->starttls), "required", "prosody: starttls name");
	T_CHECK(f->nmechs == 3, "prosody: three mechanisms");
	if (f->nmechs == 3) {
		T_STREQ(f->mechs[0], "PLAIN", "prosody: mechanism 1");
		T_STREQ(f->mechs[1], "SCRAM-SHA-1", "prosody: mechanism 2");
		T_STREQ(f->mechs[2], "SCRAM-SHA-1-PLUS", "prosody: mechanism 3");
	}
	T_CHECK(f->compression, "prosody: compression seen");
	T_CHECK(f->channel_binding, "prosody: channel binding seen");
	T_CHECK(f->sasl2, "prosody: sasl2 seen");
	T_CHECK(f->iq_auth, "prosody: iq-auth seen");
	T_CHECK(!f->mechs_truncated && !f->sasl2_truncated, "prosody: not truncated");
	T_CHECK(kept_is(f, "<register xmlns='http://jabber.org/features/iq-register'/>"
			   "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
			   "node='http://prosody.im' ver='a&amp;b='/>"),
		"prosody: register and caps kept, serialised");

	/* what the proxy offers: PLUS removed, no TLS left to offer */
	const char *offer[] = {"PLAIN", "SCRAM-SHA-1"};
	struct buf out = {0};
	struct streamfeatures_offer o = {.mechs = offer, .nmechs = 2, .others = true};
	T_CHECK(streamfeatures_write(&out, "stream", &o, f) == 0, "prosody: write");
	struct capture back = {0};
	T_CHECK(parse(&back, HDR, buf_head(&out), out.len), "prosody: written features parse back");
	const char *t = back.trace;
	T_CHECK(back.f.starttls == SF_STARTTLS_NONE && !has(t, "starttls"),
		"prosody: written, no starttls");
	T_CHECK(back.f.nmechs == 2 && strcmp(back.f.mechs[0], "PLAIN") == 0 &&
			strcmp(back.f.mechs[1], "SCRAM-SHA-1") == 0,
		"prosody: written, mechanisms as given");
	T_CHECK(!back.f.compression && !has(t, "compress"), "prosody: written, no compression");
	T_CHECK(!back.f.channel_binding && !has(t, "sasl-cb"),
		"prosody: written, no channel binding");
	T_CHECK(!back.f.sasl2 && !has(t, "urn:xmpp:sasl:2"), "prosody: written, no sasl2");
	T_CHECK(!back.f.iq_auth && !has(t, "iq-auth"), "prosody: written, no iq-auth");
	T_CHECK(has(t, "{http://jabber.org/features/iq-register}register"),
		"prosody: written, register kept");
	T_CHECK(has(t, "{http://jabber.org/protocol/caps}c hash=sha-1 node=http://prosody.im "
		       "ver=a&b="),
		"prosody: written, caps kept with its attributes");
	T_CHECK(back.f.kept != NULL && back.f.kept->len == f->kept->len && f->kept->len > 0 &&
			memcmp(buf_head(back.f.kept), buf_head(f->kept), f->kept->len) == 0,
		"prosody: kept survives a second pass");
	T_CHECK(out.len > 17 && memcmp(buf_head(&out), "<stream:features>", 17) == 0,
		"prosody: written with the stream prefix");

	/* parsing again into the same struct frees the old content */
	T_CHECK(parse(&cap, HDR, "<stream:features/>", 18), "reparse: empty features");
	T_CHECK(f->nmechs == 0 && f->starttls == SF_STARTTLS_NONE && !f->compression &&
			!f->channel_binding && !f->sasl2 && !f->iq_auth && kept_is(f, ""),
		"reparse: old content gone");
	streamfeatures_free(&cap.f);
	streamfeatures_free(&back.f);
	buf_free(&out);
}

/* Writes with the given arguments and parses the result back. */
static void check_write(const char *name, const char *header, const char *prefix,
			enum streamfeatures_starttls st, const char *const *mechs, size_t n,
			bool others, const struct streamfeatures *f, const char *want_trace)
{
	struct buf out = {0};
	char nm[160];
	struct streamfeatures_offer o = {
	    .starttls = st, .mechs = mechs, .nmechs = n, .others = others};
	int rc = streamfeatures_write(&out, prefix, &o, f);
	struct capture back = {0};
	bool ok = rc == 0 && parse(&back, header, buf_head(&out), out.len);
	snprintf(nm, sizeof(nm), "write: %s: parses back", name);
	T_CHECK(ok, nm);
	snprintf(nm, sizeof(nm), "write: %s: content", name);
	T_STREQ(back.trace, want_trace, nm);
	if (strcmp(back.trace, want_trace) != 0)
		printf("#   got:  %s\n#   want: %s\n#   written: %.*s\n", back.trace, want_trace,
		       (int)out.len, buf_head(&out));
	streamfeatures_free(&back.f);
	buf_free(&out);
}

#define FS "{" XML_NS_STREAMS "}features"
#define TLS "{" XML_NS_TLS "}"
#define SASL "{" XML_NS_SASL "}"

static void test_write(void)
{
	struct capture cap = {0};
	parse(&cap, HDR, prosody, strlen(prosody));
	const char *two[] = {"SCRAM-SHA-1", "PLAIN"};
	const char *kept = "{http://jabber.org/features/iq-register}register "
			   "{http://jabber.org/protocol/caps}c hash=sha-1 node=http://prosody.im "
			   "ver=a&b=";

	check_write("nothing", HDR, "stream", SF_STARTTLS_NONE, NULL, 0, false, &cap.f, FS);
	check_write("starttls offered", HDR, "stream", SF_STARTTLS_OFFERED, NULL, 0, false, &cap.f,
		    FS "(" TLS "starttls)");
	check_write("starttls required", HDR, "stream", SF_STARTTLS_REQUIRED, NULL, 0, false,
		    &cap.f, FS "(" TLS "starttls(" TLS "required))");
	check_write("mechanisms in the order given", HDR, "stream", SF_STARTTLS_NONE, two, 2, false,
		    &cap.f,
		    FS "(" SASL "mechanisms(" SASL "mechanism \"SCRAM-SHA-1\" " SASL
		       "mechanism \"PLAIN\"))");
	char want[1024];
	snprintf(want, sizeof(want), FS "(" TLS "starttls " SASL "mechanisms(" SASL
					"mechanism \"PLAIN\") %s)",
		 kept);
	check_write("everything", HDR, "stream", SF_STARTTLS_OFFERED, two + 1, 1, true, &cap.f,
		    want);
	snprintf(want, sizeof(want), FS "(%s)", kept);
	check_write("others only", HDR, "stream", SF_STARTTLS_NONE, NULL, 0, true, &cap.f, want);
	check_write("others with f NULL", HDR, "stream", SF_STARTTLS_NONE, NULL, 0, true, NULL, FS);

	/* prefix "": a default-namespace features element */
	snprintf(want, sizeof(want), FS "(" TLS "starttls(" TLS "required) %s)", kept);
	check_write("no prefix", HDR, "", SF_STARTTLS_REQUIRED, NULL, 0, true, &cap.f, want);
	/* another prefix in scope */
	check_write("prefix s",
		    "<s:stream xmlns='jabber:client' xmlns:s='" XML_NS_STREAMS "' version='1.0'>",
		    "s", SF_STARTTLS_OFFERED, two, 1, false, &cap.f,
		    FS "(" TLS "starttls " SASL "mechanisms(" SASL "mechanism \"SCRAM-SHA-1\"))");

	struct buf out = {0};
	struct streamfeatures_offer none = {.starttls = SF_STARTTLS_NONE};
	streamfeatures_write(&out, "", &none, NULL);
	buf_add(&out, "", 1);
	T_STREQ(buf_head(&out), "<features xmlns='" XML_NS_STREAMS "'></features>",
		"write: empty, no prefix, exact bytes");
	buf_free(&out);
	T_STREQ(streamfeatures_starttls_name(SF_STARTTLS_NONE), "none", "name: none");
	T_STREQ(streamfeatures_starttls_name(SF_STARTTLS_OFFERED), "offered", "name: offered");
	streamfeatures_free(&cap.f);
}

static void test_mechanisms(void)
{
	struct capture cap = {0};
	const char junk[] = "<features xmlns='" XML_NS_STREAMS "'>"
			    "<starttls xmlns='" XML_NS_TLS "'/>"
			    "<mechanisms xmlns='" XML_NS_SASL "'>"
			    "<mechanism>scram-sha-256</mechanism>"
			    "<mechanism>  Digest-MD5\n</mechanism>"
			    "<mechanism></mechanism>"
			    "<mechanism/>"
			    "<mechanism>   </mechanism>"
			    "<mechanism>PLAIN LOGIN</mechanism>"
			    "<mechanism>PL&lt;AIN</mechanism>"
			    "<mechanism>PLAIN\"</mechanism>"
			    "<mechanism>PL\xc3\x84IN</mechanism>"
			    "<mechanism>ABCDEFGHIJKLMNOPQRSTU</mechanism>"
			    "<mechanism>ABCDEFGHIJKLMNOPQRST</mechanism>"
			    "<mechanism>X_OAUTH-2</mechanism>"
			    "<mechanism xmlns='urn:other'>OTHER</mechanism>"
			    "<other>NOTAMECH</other>"
			    "</mechanisms></features>";
	T_CHECK(parse(&cap, HDR, junk, strlen(junk)), "mechanisms: parses");
	struct streamfeatures *f = &cap.f;
	T_CHECK(f->starttls == SF_STARTTLS_OFFERED, "mechanisms: starttls offered");
	const char *want[] = {"SCRAM-SHA-256", "DIGEST-MD5", "ABCDEFGHIJKLMNOPQRST", "X_OAUTH-2"};
	bool same = f->nmechs == 4;
	for (size_t i = 0; same && i < 4; i++)
		same = strcmp(f->mechs[i], want[i]) == 0;
	T_CHECK(same, "mechanisms: junk dropped, lower case upper-cased, spaces trimmed, 20 chars "
		      "kept, 21 dropped");
	if (!same)
		for (size_t i = 0; i < f->nmechs; i++)
			printf("#   mech %zu: [%s]\n", i, f->mechs[i]);
	T_CHECK(!f->mechs_truncated, "mechanisms: junk does not count towards truncation");
	T_CHECK(kept_is(f, ""), "mechanisms: nothing else kept");

	/* two <mechanisms> elements: the lists are joined */
	const char twice[] = "<stream:features><mechanisms xmlns='" XML_NS_SASL "'>"
			     "<mechanism>PLAIN</mechanism></mechanisms>"
			     "<mechanisms xmlns='" XML_NS_SASL "'><mechanism>EXTERNAL</mechanism>"
			     "</mechanisms></stream:features>";
	T_CHECK(parse(&cap, HDR, twice, strlen(twice)) && f->nmechs == 2 &&
			strcmp(f->mechs[1], "EXTERNAL") == 0,
		"mechanisms: two lists joined");

	/* mechanisms in the wrong namespace are not SASL's */
	const char wrongns[] = "<stream:features><mechanisms xmlns='urn:other'>"
			       "<mechanism>PLAIN</mechanism></mechanisms></stream:features>";
	T_CHECK(parse(&cap, HDR, wrongns, strlen(wrongns)) && f->nmechs == 0 &&
			kept_is(f, "<mechanisms xmlns='urn:other'><mechanism>PLAIN</mechanism>"
				   "</mechanisms>"),
		"mechanisms: other namespace is kept as an unknown feature");

	/* exactly MAX_MECHANISMS, then more */
	for (int total = MAX_MECHANISMS; total <= MAX_MECHANISMS + 8; total += 8) {
		struct buf b = {0};
		buf_adds(&b, "<stream:features><mechanisms xmlns='" XML_NS_SASL "'>");
		for (int i = 0; i < total; i++)
			buf_addf(&b, "<mechanism>M-%d</mechanism><mechanism>bad!</mechanism>", i);
		buf_adds(&b, "</mechanisms></stream:features>");
		char nm[96];
		bool ok = parse(&cap, HDR, buf_head(&b), b.len);
		bool order = f->nmechs == MAX_MECHANISMS;
		for (size_t i = 0; order && i < MAX_MECHANISMS; i++) {
			char w[16];
			snprintf(w, sizeof(w), "M-%zu", i);
			order = strcmp(f->mechs[i], w) == 0;
		}
		snprintf(nm, sizeof(nm), "mechanisms: %d offered -> first %d kept in order", total,
			 MAX_MECHANISMS);
		T_CHECK(ok && order, nm);
		snprintf(nm, sizeof(nm), "mechanisms: %d offered -> truncated %s", total,
			 total > MAX_MECHANISMS ? "set" : "clear");
		T_CHECK(f->mechs_truncated == (total > MAX_MECHANISMS) && !f->sasl2_truncated, nm);
		buf_free(&b);
	}
	streamfeatures_free(&cap.f);
	streamfeatures_free(&cap.f); /* twice is harmless */
}

/* Both lists of one features element: SASL1 in n1 <mechanisms> blocks,
 * SASL2 in n2 <authentication> blocks (each with an <inline>), one
 * mechanism per block, all named "PLAIN" or each its own. */
struct lists_row {
	const char *name;
	int n1;
	bool same1;
	int n2;
	bool same2;
	size_t want_n1;
	bool want_t1;
	size_t want_n2;
	bool want_t2;
};

static const struct lists_row lists_rows[] = {
	/* the fuzz finding: many SASL2 blocks repeating PLAIN, no SASL1 list;
	 * one flag for both lists was set with nmechs 0 */
	{"sasl2 repeated 40x, no sasl1", 0, false, 40, true, 0, false, 1, false},
	{"sasl2 repeated 40x, sasl1 3", 3, false, 40, true, 3, false, 1, false},
	{"sasl2 40 distinct, sasl1 3", 3, false, 40, false, 3, false, MAX_MECHANISMS, true},
	{"sasl2 exactly full, sasl1 3", 3, false, MAX_MECHANISMS, false, 3, false,
	 MAX_MECHANISMS, false},
	{"sasl1 40 distinct, sasl2 1", 40, false, 1, false, MAX_MECHANISMS, true, 1, false},
	{"sasl1 repeated 40x, sasl2 1", 40, true, 1, false, 1, false, 1, false},
	{"both 40 distinct", 40, false, 40, false, MAX_MECHANISMS, true, MAX_MECHANISMS, true},
	{"both repeated 40x", 40, true, 40, true, 1, false, 1, false},
};

static void test_lists(void)
{
	struct capture cap = {0};
	struct streamfeatures *f = &cap.f;
	for (size_t r = 0; r < sizeof(lists_rows) / sizeof(lists_rows[0]); r++) {
		const struct lists_row *w = &lists_rows[r];
		struct buf b = {0};
		buf_adds(&b, "<stream:features>");
		for (int i = 0; i < w->n1; i++)
			buf_addf(&b, "<mechanisms xmlns='" XML_NS_SASL "'><mechanism>%s-%d</mechanism>"
				     "</mechanisms>",
				 w->same1 ? "PLAIN" : "A", w->same1 ? 0 : i);
		for (int i = 0; i < w->n2; i++)
			buf_addf(&b, "<authentication xmlns='" XML_NS_SASL2 "'><mechanism>%s-%d"
				     "</mechanism><inline><sm xmlns='urn:xmpp:sm:3'/></inline>"
				     "</authentication>",
				 w->same2 ? "PLAIN" : "B", w->same2 ? 0 : i);
		buf_adds(&b, "</stream:features>");
		bool ok = parse(&cap, HDR, buf_head(&b), b.len);
		buf_free(&b);
		char nm[160];
		snprintf(nm, sizeof(nm), "lists: %s: parses", w->name);
		T_CHECK(ok, nm);
		snprintf(nm, sizeof(nm), "lists: %s: sasl1 %zu kept, truncated %s", w->name,
			 w->want_n1, w->want_t1 ? "set" : "clear");
		T_CHECK(f->nmechs == w->want_n1 && f->mechs_truncated == w->want_t1, nm);
		if (f->nmechs != w->want_n1 || f->mechs_truncated != w->want_t1)
			printf("#   got nmechs %zu truncated %d\n", f->nmechs, f->mechs_truncated);
		snprintf(nm, sizeof(nm), "lists: %s: sasl2 %zu kept, truncated %s", w->name,
			 w->want_n2, w->want_t2 ? "set" : "clear");
		T_CHECK(f->nsasl2_mechs == w->want_n2 && f->sasl2_truncated == w->want_t2 &&
				f->sasl2 == (w->n2 > 0),
			nm);
		if (f->nsasl2_mechs != w->want_n2 || f->sasl2_truncated != w->want_t2)
			printf("#   got nsasl2 %zu truncated %d\n", f->nsasl2_mechs,
			       f->sasl2_truncated);
		/* each list in order, each name once: the first of each kept */
		bool order = true;
		for (size_t i = 0; order && i < f->nmechs; i++) {
			char want[32];
			snprintf(want, sizeof(want), "%s-%zu", w->same1 ? "PLAIN" : "A",
				 w->same1 ? 0 : i);
			order = strcmp(f->mechs[i], want) == 0;
		}
		for (size_t i = 0; order && i < f->nsasl2_mechs; i++) {
			char want[32];
			snprintf(want, sizeof(want), "%s-%zu", w->same2 ? "PLAIN" : "B",
				 w->same2 ? 0 : i);
			order = strcmp(f->sasl2_mechs[i], want) == 0;
		}
		snprintf(nm, sizeof(nm), "lists: %s: first names kept in order, once", w->name);
		T_CHECK(order, nm);
		if (w->n2 > 0) {
			snprintf(nm, sizeof(nm), "lists: %s: has_sasl2 sees the first name", w->name);
			T_CHECK(streamfeatures_has_sasl2(f, w->same2 ? "PLAIN-0" : "B-0"), nm);
		}
	}
	streamfeatures_free(&cap.f);
}

static void test_ejabberd(void)
{
	/* ejabberd after TLS: default-namespace children, no starttls */
	const char ej[] = "<stream:features>"
			  "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
			  "node='http://www.process-one.net/en/ejabberd/' ver='x='/>"
			  "<register xmlns='http://jabber.org/features/iq-register'/>"
			  "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
			  "<mechanism>SCRAM-SHA-512-PLUS</mechanism>"
			  "<mechanism>SCRAM-SHA-512</mechanism>"
			  "<mechanism>X-OAUTH2</mechanism></mechanisms>"
			  "<sm xmlns='urn:xmpp:sm:3'/><csi xmlns='urn:xmpp:csi:0'/>"
			  "<ver xmlns='urn:xmpp:features:rosterver'/>"
			  "</stream:features>";
	struct capture cap = {0};
	T_CHECK(parse(&cap, HDR, ej, strlen(ej)), "ejabberd: parses");
	T_CHECK(cap.f.starttls == SF_STARTTLS_NONE && cap.f.nmechs == 3,
		"ejabberd: no starttls, three mechanisms");
	T_CHECK(kept_is(&cap.f, "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
				"node='http://www.process-one.net/en/ejabberd/' ver='x='/>"
				"<register xmlns='http://jabber.org/features/iq-register'/>"
				"<sm xmlns='urn:xmpp:sm:3'/><csi xmlns='urn:xmpp:csi:0'/>"
				"<ver xmlns='urn:xmpp:features:rosterver'/>"),
		"ejabberd: unknown features kept in order");

	/* a kept child in the streams namespace must stay in it when written
	 * under a prefixed <stream:features> whose default namespace is
	 * jabber:client */
	const char sns[] = "<stream:features><stream:foo/><bar xmlns='urn:bar'/></stream:features>";
	T_CHECK(parse(&cap, HDR, sns, strlen(sns)), "streams-namespace child: parses");
	check_write("streams-namespace child under stream:features", HDR, "stream",
		    SF_STARTTLS_NONE, NULL, 0, true, &cap.f,
		    FS "({" XML_NS_STREAMS "}foo {urn:bar}bar)");
	check_write("streams-namespace child under default-namespace features", HDR, "",
		    SF_STARTTLS_NONE, NULL, 0, true, &cap.f,
		    FS "({" XML_NS_STREAMS "}foo {urn:bar}bar)");
	/* an unqualified child (a stream without a default namespace) */
	const char nodef[] = "<stream:features><foo/></stream:features>";
	T_CHECK(parse(&cap, "<stream:stream xmlns:stream='" XML_NS_STREAMS "'>", nodef,
		      strlen(nodef)),
		"unqualified child: parses");
	check_write("unqualified child", HDR, "stream", SF_STARTTLS_NONE, NULL, 0, true, &cap.f,
		    FS "({}foo)");
	streamfeatures_free(&cap.f);
}

int main(void)
{
	test_prosody();
	test_write();
	test_mechanisms();
	test_lists();
	test_ejabberd();
	T_DONE();
}
