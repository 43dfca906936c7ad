/* transcript.c's redactor: secret element content and token attributes
 * become "[redacted N bytes]", whatever the prefix, nesting or chunking;
 * everything else is shown as it was. */
#include <stdbool.h>
#include <stdlib.h>

#include "transcript.h"
#include "t.h"

/* Redacts in (split into chunks of size step, 0: whole) and returns the
 * shown text (static). */
static const char *red(const char *in, size_t step)
{
	static char out[8192];
	struct transcript_redactor r;
	struct buf b = {0};
	memset(&r, 0, sizeof(r));
	size_t n = strlen(in);
	if (step == 0)
		step = n;
	for (size_t i = 0; i < n; i += step) {
		size_t k = n - i < step ? n - i : step;
		transcript_redact(&r, in + i, k, &b);
		transcript_redact_flush(&r, &b);
	}
	snprintf(out, sizeof(out), "%.*s", (int)b.len, buf_head(&b));
	buf_free(&b);
	return out;
}

/* The sum of N in every "[redacted N bytes]" of s. */
static size_t redacted_total(const char *s)
{
	size_t total = 0;
	const char *p = s;
	while ((p = strstr(p, "[redacted ")) != NULL) {
		total += strtoul(p + 10, NULL, 10);
		p += 10;
	}
	return total;
}

/* Every chunking of in: the secret never shows, not even 3 bytes of it,
 * and the markers add up to its length. */
static void every_split(const char *in, const char *secret, const char *name)
{
	bool ok = true;
	char piece[4] = {0};
	for (size_t step = 1; step <= strlen(in); step++) {
		char out[8192];
		snprintf(out, sizeof(out), "%s", red(in, step));
		/* the markers' own digits are not the secret's */
		for (char *m = out; (m = strstr(m, "[redacted ")) != NULL;)
			for (; *m != ']' && *m != '\0'; m++)
				*m = '#';
		for (size_t i = 0; i + 3 <= strlen(secret); i++) {
			memcpy(piece, secret + i, 3);
			if (strstr(out, piece) != NULL)
				ok = false;
		}
		if (redacted_total(red(in, step)) < strlen(secret))
			ok = false;
	}
	T_CHECK(ok, name);
}

int main(void)
{
	const char *plain = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
	                    "mechanism='PLAIN'>AGFsaWNlAFhpLWFsaWNlLVB3</auth>";
	T_STREQ(red(plain, 0),
	        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>[redacted 24 "
	        "bytes]</auth>",
	        "PLAIN payload redacted, mechanism shown");
	every_split(plain, "AGFsaWNlAFhpLWFsaWNlLVB3", "PLAIN redacted at every chunking");
	T_STREQ(red("<sasl:response xmlns:sasl='urn:ietf:params:xml:ns:xmpp-sasl'>Yz1iaXdz"
	            "</sasl:response>",
	            0),
	        "<sasl:response xmlns:sasl='urn:ietf:params:xml:ns:xmpp-sasl'>[redacted 8 "
	        "bytes]</sasl:response>",
	        "prefixed response redacted");
	T_STREQ(red("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>cj1meWtv</challenge>"
	            "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>dj1ybUY5</success>",
	            0),
	        "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>[redacted 8 bytes]</challenge>"
	        "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>[redacted 8 bytes]</success>",
	        "challenge and success redacted");
	const char *sasl2 = "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-1'>"
	                    "<initial-response>biwsbj1hbGljZQ==</initial-response>"
	                    "<user-agent id='u1'><software>AwesomeXMPP</software></user-agent>"
	                    "</authenticate>";
	T_STREQ(red(sasl2, 0),
	        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-1'><initial-response>"
	        "[redacted 16 bytes]</initial-response><user-agent id='u1'><software>AwesomeXMPP"
	        "</software></user-agent></authenticate>",
	        "SASL2 initial-response redacted, user-agent shown");
	const char *s2ok = "<success xmlns='urn:xmpp:sasl:2'><additional-data>dj1zZWNy</additional-"
	                   "data><authorization-identifier>alice@lab.test/r</authorization-"
	                   "identifier><token xmlns='urn:xmpp:fast:0' expiry='2026-12-03T00:00:00Z' "
	                   "token='WXYZ-fast-token-1234'/></success>";
	const char *o = red(s2ok, 0);
	T_CHECK(strncmp(o, "<success xmlns='urn:xmpp:sasl:2'>[redacted ", 43) == 0 &&
	            strstr(o, "</success>") != NULL && strstr(o, "fast-token") == NULL &&
	            strstr(o, "dj1z") == NULL,
	        "SASL2 success and all inside it redacted");
	every_split(s2ok, "WXYZ-fast-token-1234", "FAST token in success at every chunking");
	T_STREQ(red("<token xmlns='urn:xmpp:fast:0' expiry='2026' token=\"TOKENVALUE\"/>", 0),
	        "<token xmlns='urn:xmpp:fast:0' expiry='2026' token=\"[redacted 10 bytes]\"/>",
	        "token attribute redacted, expiry shown");
	every_split("<x token='TOKENVALUE' a='b'/>", "TOKENVALUE", "token attribute every chunking");
	T_STREQ(red("<iq type='set' id='a1'><query xmlns='jabber:iq:auth'><username>alice</username>"
	            "<password>Xi-pw</password><digest>abcdef</digest><resource>r</resource>"
	            "</query></iq>",
	            0),
	        "<iq type='set' id='a1'><query xmlns='jabber:iq:auth'><username>alice</username>"
	        "<password>[redacted 5 bytes]</password><digest>[redacted 6 bytes]</digest>"
	        "<resource>r</resource></query></iq>",
	        "iq:auth password and digest redacted, username shown");
	o = red("<auth mechanism='PLAIN'>SEC</x>RET</auth><message>hi</message>", 0);
	T_CHECK(strstr(o, "RET") == NULL && strstr(o, "SEC") == NULL,
	        "a stray end tag does not end the secret");
	T_STREQ(red("<auth mechanism='ANONYMOUS'/><message><body>hi</body></message>", 0),
	        "<auth mechanism='ANONYMOUS'/><message><body>hi</body></message>",
	        "self-closing secret element hides nothing after it");
	T_STREQ(red("<success><a><b>x</b></a><c/></success><body>y</body>", 0),
	        "<success>[redacted 19 bytes]</success><body>y</body>",
	        "nested elements inside a secret");
	T_STREQ(red("<auth mechanism='a>b' x=\"/\">SECRET</auth>", 0),
	        "<auth mechanism='a>b' x=\"/\">[redacted 6 bytes]</auth>",
	        "'>' and '/' inside quoted values");
	every_split("<auth mechanism='a>b'>SECRETPASSWORD</auth>", "SECRETPASSWORD",
	            "quoted '>' at every chunking");
	o = red("<auth>AB<![CDATA[</auth>]]>CDEFGH</auth>", 0);
	T_CHECK(strstr(o, "CDEFGH") == NULL, "CDATA with an end tag inside does not end the secret");
	o = red("<response><!-- c --></response>", 0);
	T_CHECK(strstr(o, "c --") == NULL && strstr(o, "</response>") != NULL,
	        "a comment inside a secret is hidden");
	char longname[400];
	snprintf(longname, sizeof(longname), "<%0120d:auth>PASSWORD</%0120d:auth>", 0, 0);
	o = red(longname, 0);
	T_CHECK(strstr(o, "PASSWORD") == NULL && strstr(o, "</auth>") != NULL,
	        "long prefix: still redacted, end tag rebuilt");
	snprintf(longname, sizeof(longname), "<auth%040d>PASSWORD</auth%040d>", 0, 0);
	T_CHECK(strstr(red(longname, 0), "PASSWORD") != NULL, "a longer name is not a secret one");
	T_STREQ(red("<?xml version='1.0'?><stream:stream xmlns='jabber:client' to='lab.test'>", 0),
	        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' to='lab.test'>",
	        "stream header unchanged");
	T_STREQ(red("<message><body>a &lt; b</body></message>", 1),
	        "<message><body>a &lt; b</body></message>", "ordinary stanza byte by byte");
	T_DONE();
}
