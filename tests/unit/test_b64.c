/*
 * Known answers for b64.c: the RFC 4648 §10 vectors both ways, XMPP's
 * lone "=", whitespace, and every way a payload can be malformed.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "b64.h"
#include "t.h"

/* Decodes a C string; returns the length or -1. The output lands in out
 * (room for 256 bytes, NUL-terminated for comparison). */
static long dec(const char *s, unsigned char *out)
{
	long n = b64_decode(s, strlen(s), out);
	if (n >= 0)
		out[n] = '\0';
	return n;
}

static void test_rfc4648(void)
{
	static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *const enc[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
	                                  "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	char e[64], name[96];
	unsigned char d[256];

	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
		size_t n = b64_encode((const unsigned char *)plain[i], strlen(plain[i]), e);
		snprintf(name, sizeof(name), "b64: encode \"%s\" gives \"%s\"", plain[i], enc[i]);
		T_CHECK(n == strlen(enc[i]) && strcmp(e, enc[i]) == 0, name);
		long m = dec(enc[i], d);
		snprintf(name, sizeof(name), "b64: decode \"%s\" gives \"%s\"", enc[i], plain[i]);
		T_CHECK(m == (long)strlen(plain[i]) && strcmp((char *)d, plain[i]) == 0, name);
	}
}

static void test_xmpp_forms(void)
{
	unsigned char d[256];

	T_CHECK(dec("=", d) == 0, "b64: lone \"=\" is the empty payload");
	T_CHECK(dec(" = \n", d) == 0, "b64: lone \"=\" with whitespace around");
	T_CHECK(dec("", d) == 0, "b64: empty text decodes to nothing");
	T_CHECK(dec("Zm9v\r\nYmFy", d) == 6 && strcmp((char *)d, "foobar") == 0,
	        "b64: CRLF between quanta is skipped");
	T_CHECK(dec(" Z m 9 v\tY m E = ", d) == 5 && strcmp((char *)d, "fooba") == 0,
	        "b64: spaces and tabs anywhere are skipped");
	T_CHECK(dec("Zm9vYg=\n=", d) == 4 && strcmp((char *)d, "foob") == 0,
	        "b64: line break inside the padding is skipped");
}

static void test_malformed(void)
{
	static const char *const bad[] = {
	    "Zm9",          /* truncated quantum */
	    "Zg",           /* unpadded */
	    "Zg=",          /* half the padding */
	    "Zg===",        /* too much padding */
	    "Z===",         /* padding after one sextet */
	    "Zm=v",         /* data inside padding */
	    "Zm9v=",        /* padding after a full quantum */
	    "Zg==Zg==",     /* data after the end */
	    "==",           /* two pads, no data */
	    "=Zm9v",        /* lone "=" followed by data */
	    "Zm-v",         /* base64url alphabet */
	    "Zm_v",         /* base64url alphabet */
	    "Zm9v!",        /* punctuation */
	    "Zm9v\x01",     /* control character */
	    "Zm9v\xc3\xa9", /* non-ASCII */
	};
	unsigned char d[256];
	char name[96];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(name, sizeof(name), "b64: rejects malformed case %zu", i);
		T_CHECK(dec(bad[i], d) == -1, name);
	}
	/* A NUL in the text is an invalid character, not the end of it. */
	T_CHECK(b64_decode("Zm9v\0YmFy", 9, d) == -1, "b64: rejects an embedded NUL");
	/* Length is honoured: the bytes after len are not read. */
	T_CHECK(b64_decode("Zm9v!!!!", 4, d) == 3, "b64: reads only len bytes");
}

static void test_binary_roundtrip(void)
{
	unsigned char src[256], d[256 + 3];
	char e[4 * ((256 + 2) / 3) + 1];
	bool ok = true;

	for (int i = 0; i < 256; i++)
		src[i] = (unsigned char)(255 - i);
	for (size_t len = 0; len <= 256; len++) {
		size_t n = b64_encode(src, len, e);
		if (n != 4 * ((len + 2) / 3) || e[n] != '\0') {
			ok = false;
			break;
		}
		long m = b64_decode(e, n, d);
		if (m != (long)len || memcmp(d, src, len) != 0) {
			ok = false;
			break;
		}
	}
	T_CHECK(ok, "b64: every prefix of all 256 byte values round-trips");
}

int main(void)
{
	test_rfc4648();
	test_xmpp_forms();
	test_malformed();
	test_binary_roundtrip();
	T_DONE();
}
