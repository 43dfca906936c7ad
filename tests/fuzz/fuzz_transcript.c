/*
 * libFuzzer target for the transcript's redactor (transcript.c): the
 * input is one direction of a stream, fed whole and again in chunks whose
 * sizes come from its first byte.
 *
 * Beyond what ASan and UBSan catch: chunking changes nothing but where
 * the markers fall (with every "[redacted N bytes]" taken out, both
 * outputs are the same text, and their N add up to the same count), and
 * what is shown is never more than what came in.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "transcript.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Takes the markers out of b (in place); returns the sum of their N. */
static size_t fuzz_strip(struct buf *b, size_t *len)
{
	*len = 0;
	if (b->data == NULL)
		return 0;
	char *p = b->data + b->off;
	size_t n = b->len, out = 0, total = 0;
	static const char mark[] = "[redacted ";
	for (size_t i = 0; i < n;) {
		if (n - i >= sizeof(mark) - 1 && memcmp(p + i, mark, sizeof(mark) - 1) == 0) {
			size_t j = i + sizeof(mark) - 1, v = 0;
			while (j < n && p[j] >= '0' && p[j] <= '9')
				v = v * 10 + (size_t)(p[j++] - '0');
			if (n - j >= 7 && memcmp(p + j, " bytes]", 7) == 0) {
				total += v;
				i = j + 7;
				continue;
			}
		}
		p[out++] = p[i++];
	}
	*len = out;
	return total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t step = (size_t)data[0] % 17 + 1;
	const char *in = (const char *)data + 1;
	size_t n = size - 1;
	struct transcript_redactor a, b;
	struct buf whole = {0}, parts = {0};
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	if (transcript_redact(&a, in, n, &whole) < 0 || transcript_redact_flush(&a, &whole) < 0)
		abort();
	for (size_t i = 0; i < n; i += step) {
		size_t k = n - i < step ? n - i : step;
		if (transcript_redact(&b, in + i, k, &parts) < 0 ||
		    transcript_redact_flush(&b, &parts) < 0)
			abort();
	}
	size_t lw, lp;
	size_t rw = fuzz_strip(&whole, &lw), rp = fuzz_strip(&parts, &lp);
	if (lw != lp || (lw > 0 && memcmp(whole.data + whole.off, parts.data + parts.off, lw) != 0))
		abort();
	/* literal marker text in the input is taken out too: compare after */
	if (rw != rp || lw > n)
		abort();
	buf_free(&whole);
	buf_free(&parts);
	return 0;
}
