/*
 * tools/relayfloor: what relaying one large stanza costs at least, per
 * byte, without the proxy around it: Expat tokenizing it (fed as the proxy
 * feeds it, 16 KiB at a time through XML_GetBuffer/XML_ParseBuffer, with a
 * character-data handler that only counts), the plain-text scan that
 * spares Expat the message body after login (src/xmltext.c), and one
 * memcpy. The AEAD's own floor is `openssl speed -evp aes-256-gcm -bytes
 * 16384`. Usage: relayfloor [stanza bytes (200000)] [repetitions (200)].
 */
#include <expat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/xmltext.h"

#define CHUNK 16384

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t text_bytes;
static void XMLCALL on_text(void *d, const XML_Char *s, int len)
{
	(void)d, (void)s;
	text_bytes += (size_t)len;
}
static void XMLCALL on_start(void *d, const XML_Char *n, const XML_Char **a)
{
	(void)d, (void)n, (void)a;
}
static void XMLCALL on_end(void *d, const XML_Char *n)
{
	(void)d, (void)n;
}

int main(int argc, char **argv)
{
	size_t size = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
	int reps = argc > 2 ? atoi(argv[2]) : 200;
	const char *head = "<message to='alice@lab.test/r' type='chat' id='m1'><body>";
	const char *tail = "</body></message>";
	size_t hl = strlen(head), tl = strlen(tail);
	size_t len = hl + size + tl;
	char *st = malloc(len), *dst = malloc(len);
	if (st == NULL || dst == NULL)
		return 1;
	memcpy(st, head, hl);
	memset(st + hl, 'x', size);
	memcpy(st + hl + size, tail, tl);

	for (int handler = 1; handler >= 0; handler--) {
		XML_Parser x = XML_ParserCreateNS("UTF-8", ' ');
		XML_SetElementHandler(x, on_start, on_end);
		if (handler)
			XML_SetCharacterDataHandler(x, on_text);
		const char *open = "<stream:stream xmlns='jabber:client' "
		                   "xmlns:stream='http://etherx.jabber.org/streams'>";
		XML_Parse(x, open, (int)strlen(open), XML_FALSE);
		double t0 = now();
		for (int r = 0; r < reps; r++)
			for (size_t off = 0; off < len; off += CHUNK) {
				size_t n = len - off < CHUNK ? len - off : CHUNK;
				void *b = XML_GetBuffer(x, (int)n);
				memcpy(b, st + off, n);
				if (XML_ParseBuffer(x, (int)n, XML_FALSE) != XML_STATUS_OK) {
					fprintf(stderr, "expat: %s\n", XML_ErrorString(XML_GetErrorCode(x)));
					return 1;
				}
			}
		double t = now() - t0;
		printf("expat, 16 KiB feeds, %s character-data handler: %.3f ns/byte\n",
		       handler ? "a counting" : "no", t * 1e9 / ((double)len * reps));
		XML_ParserFree(x);
	}
	size_t sum = 0;
	double t0 = now();
	for (int r = 0; r < reps; r++)
		for (size_t off = 0; off < len; off += CHUNK) {
			size_t n = len - off < CHUNK ? len - off : CHUNK;
			sum += xmltext_plain_run(st + off, n);
		}
	double t = now() - t0;
	printf("xmltext_plain_run, 16 KiB chunks: %.3f ns/byte (%zu plain)\n",
	       t * 1e9 / ((double)len * reps), sum / (size_t)reps);
	t0 = now();
	for (int r = 0; r < reps; r++) {
		memcpy(dst, st, len);
		__asm__ volatile("" : : "r"(dst) : "memory");
	}
	t = now() - t0;
	printf("memcpy of the stanza: %.3f ns/byte\n", t * 1e9 / ((double)len * reps));
	free(st);
	free(dst);
	return 0;
}
