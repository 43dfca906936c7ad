#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "secmem.h"

/*
 * A leg's output carries credentials (the <auth> relayed upstream), so a
 * buf holds no byte outside its unconsumed ones: consumed bytes are
 * scrubbed as they are consumed, and every move or release scrubs what it
 * leaves behind. Each byte is scrubbed once, as it leaves, never a whole
 * capacity.
 */

/* Makes room for n more bytes at the tail, first by moving the unconsumed
 * bytes to the front, then by doubling. */
static int buf_reserve(struct buf *b, size_t n)
{
	if (b->off + b->len + n <= b->cap)
		return 0;
	if (b->len + n <= b->cap && b->off > 0) {
		memmove(b->data, b->data + b->off, b->len);
		/* the part of the old copy the move did not overwrite */
		size_t keep = b->off > b->len ? b->off : b->len;
		secmem_wipe(b->data + keep, b->off + b->len - keep);
		b->off = 0;
		return 0;
	}
	size_t cap = b->cap ? b->cap : 1024;
	while (cap < b->len + n)
		cap *= 2;
	/* not realloc: a block it moves is freed unscrubbed */
	char *d = malloc(cap);
	if (d == NULL)
		return -1;
	if (b->len) {
		memcpy(d, b->data + b->off, b->len);
		secmem_wipe(b->data + b->off, b->len);
	}
	free(b->data);
	b->data = d;
	b->off = 0;
	b->cap = cap;
	return 0;
}

int buf_add(struct buf *b, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	if (buf_reserve(b, n) < 0)
		return -1;
	memcpy(b->data + b->off + b->len, p, n);
	b->len += n;
	return 0;
}

int buf_adds(struct buf *b, const char *s)
{
	return buf_add(b, s, strlen(s));
}

int buf_addf(struct buf *b, const char *fmt, ...)
{
	char small[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	/* what was formatted may be a secret too */
	size_t used = (size_t)n < sizeof(small) ? (size_t)n : sizeof(small) - 1;
	if ((size_t)n < sizeof(small)) {
		int rc = buf_add(b, small, (size_t)n);
		secmem_wipe(small, used);
		return rc;
	}
	secmem_wipe(small, used);
	if (buf_reserve(b, (size_t)n + 1) < 0)
		return -1;
	va_start(ap, fmt);
	vsnprintf(b->data + b->off + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

const char *buf_head(const struct buf *b)
{
	/* NULL + 0 is undefined behaviour: an empty buffer has no storage */
	return b->data != NULL ? b->data + b->off : "";
}

void buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		buf_reset(b);
		return;
	}
	secmem_wipe(b->data + b->off, n);
	b->off += n;
	b->len -= n;
}

void buf_reset(struct buf *b)
{
	if (b->len)
		secmem_wipe(b->data + b->off, b->len);
	b->off = 0;
	b->len = 0;
}

void buf_free(struct buf *b)
{
	buf_reset(b);
	free(b->data);
	memset(b, 0, sizeof(*b));
}
