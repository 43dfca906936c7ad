/*
 * Base64 (RFC 4648 §4) for SASL payloads. Strict about the alphabet and
 * padding, because a payload that is not valid base64 is itself worth
 * logging as malformed; lenient only about whitespace, which XMPP allows.
 */
#include <stdbool.h>

#include "b64.h"

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The 6-bit value of c, or -1 if c is not in the standard alphabet.
 * Ranges rather than a 256-entry table: nothing here is hot. */
static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Whitespace a client may put between base64 characters (line breaks
 * from encoders that wrap at 76 columns, indentation from pretty XML). */
static bool b64_is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

long b64_decode(const char *src, size_t len, unsigned char *dst)
{
	unsigned long acc = 0; /* the sextets of the current quantum */
	int q = 0;             /* sextets in the current quantum */
	int pad = 0;           /* '=' seen in the current quantum */
	bool done = false;     /* a padded quantum ended the input */
	size_t seen = 0;       /* non-space characters so far */
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)src[i];

		if (b64_is_space(c))
			continue;
		seen++;
		if (done)
			return -1;
		if (c == '=') {
			if (q < 2) {
				/* XMPP's lone "=" for an empty payload (RFC 6120
				 * §6.4.2); anywhere else "=" this early is bad. */
				if (q == 0 && seen == 1) {
					done = true;
					continue;
				}
				return -1;
			}
			pad++;
			if (q + pad == 4) {
				if (q == 2) {
					dst[n++] = (unsigned char)(acc >> 4);
				} else {
					dst[n++] = (unsigned char)(acc >> 10);
					dst[n++] = (unsigned char)(acc >> 2);
				}
				done = true;
			}
			continue;
		}
		if (pad)
			return -1; /* data inside the padding: "Zg=g" */
		int v = b64_value(c);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (unsigned long)v;
		if (++q == 4) {
			dst[n++] = (unsigned char)(acc >> 16);
			dst[n++] = (unsigned char)(acc >> 8);
			dst[n++] = (unsigned char)acc;
			acc = 0;
			q = 0;
		}
	}
	if (!done && (q != 0 || pad != 0))
		return -1; /* truncated quantum or half its padding: "Zm9", "Zg=" */
	return (long)n;
}

size_t b64_encode(const unsigned char *src, size_t len, char *dst)
{
	size_t n = 0;
	size_t i = 0;

	for (; i + 3 <= len; i += 3) {
		unsigned long v =
		    (unsigned long)src[i] << 16 | (unsigned long)src[i + 1] << 8 | src[i + 2];
		dst[n++] = b64_alphabet[(v >> 18) & 63];
		dst[n++] = b64_alphabet[(v >> 12) & 63];
		dst[n++] = b64_alphabet[(v >> 6) & 63];
		dst[n++] = b64_alphabet[v & 63];
	}
	if (len - i == 1) {
		unsigned long v = (unsigned long)src[i] << 16;
		dst[n++] = b64_alphabet[(v >> 18) & 63];
		dst[n++] = b64_alphabet[(v >> 12) & 63];
		dst[n++] = '=';
		dst[n++] = '=';
	} else if (len - i == 2) {
		unsigned long v = (unsigned long)src[i] << 16 | (unsigned long)src[i + 1] << 8;
		dst[n++] = b64_alphabet[(v >> 18) & 63];
		dst[n++] = b64_alphabet[(v >> 12) & 63];
		dst[n++] = b64_alphabet[(v >> 6) & 63];
		dst[n++] = '=';
	}
	dst[n] = '\0';
	return n;
}
