/*
 * Unit tests of buf.c: append, consume, compaction (unconsumed bytes moved
 * to the front before growing), growth, formatted appends longer than the
 * stack buffer buf_addf uses, scrubbing of the bytes a buf lets go, and a
 * long random run against a plain model.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "t.h"

static bool holds(const struct buf *b, const char *s, size_t n)
{
	return b->len == n && (n == 0 || memcmp(buf_head(b), s, n) == 0);
}

static bool invariants(const struct buf *b)
{
	return b->off + b->len <= b->cap && (b->cap == 0) == (b->data == NULL);
}

static void test_basic(void)
{
	struct buf b = {0};
	T_CHECK(buf_add(&b, "", 0) == 0 && b.len == 0 && b.data == NULL,
		"add: nothing to an empty buf allocates nothing");
	T_CHECK(buf_add(&b, "hello", 5) == 0 && holds(&b, "hello", 5), "add: five bytes");
	T_CHECK(buf_adds(&b, " world") == 0 && holds(&b, "hello world", 11), "adds: appends");
	T_CHECK(buf_add(&b, "\0x", 2) == 0 && holds(&b, "hello world\0x", 13),
		"add: binary bytes");
	buf_consume(&b, 6);
	T_CHECK(holds(&b, "world\0x", 7) && b.off == 6, "consume: from the head");
	buf_consume(&b, 0);
	T_CHECK(holds(&b, "world\0x", 7), "consume: zero");
	buf_consume(&b, 7);
	T_CHECK(b.len == 0 && b.off == 0, "consume: everything resets the offset");
	buf_add(&b, "abc", 3);
	buf_consume(&b, 100);
	T_CHECK(b.len == 0 && b.off == 0, "consume: more than len empties");
	T_CHECK(invariants(&b), "basic: invariants");

	buf_add(&b, "xyz", 3);
	size_t cap = b.cap;
	buf_reset(&b);
	T_CHECK(b.len == 0 && b.off == 0 && b.cap == cap && b.data != NULL,
		"reset: empty, storage kept");
	buf_free(&b);
	T_CHECK(b.data == NULL && b.len == 0 && b.off == 0 && b.cap == 0, "free: all zero");
	T_CHECK(buf_adds(&b, "again") == 0 && holds(&b, "again", 5), "free: reusable");
	buf_free(&b);
	buf_free(&b);
	T_CHECK(b.data == NULL, "free: twice is harmless");
}

static void test_compaction(void)
{
	struct buf b = {0};
	char block[1024];
	memset(block, 'a', sizeof(block));
	buf_add(&b, block, 1000);
	size_t cap = b.cap;
	char *data = b.data;
	T_CHECK(cap >= 1000, "compaction: initial capacity");
	buf_consume(&b, 900);
	/* 100 left at offset 900: adding cap - 100 bytes fits only after moving */
	char *more = malloc(cap);
	for (size_t i = 0; i < cap; i++)
		more[i] = (char)('A' + i % 26);
	T_CHECK(buf_add(&b, more, cap - 100) == 0, "compaction: add");
	T_CHECK(b.cap == cap && b.data == data && b.off == 0,
		"compaction: moved to the front, no growth");
	T_CHECK(b.len == cap && memcmp(buf_head(&b), block, 100) == 0 &&
			memcmp(buf_head(&b) + 100, more, cap - 100) == 0,
		"compaction: contents intact");
	/* one more byte must grow */
	T_CHECK(buf_add(&b, "!", 1) == 0 && b.cap > cap && b.len == cap + 1 &&
			buf_head(&b)[cap] == '!' && memcmp(buf_head(&b), block, 100) == 0,
		"growth: past capacity, contents intact");
	T_CHECK(invariants(&b), "compaction: invariants");
	free(more);
	buf_free(&b);

	/* growth with consumed bytes at the head drops them */
	buf_add(&b, block, 1000);
	buf_consume(&b, 10);
	char big[5000];
	memset(big, 'z', sizeof(big));
	T_CHECK(buf_add(&b, big, sizeof(big)) == 0 && b.off == 0 && b.len == 990 + sizeof(big) &&
			buf_head(&b)[989] == 'a' && buf_head(&b)[990] == 'z',
		"growth: consumed bytes dropped, order kept");
	T_CHECK((b.cap & (b.cap - 1)) == 0 && b.cap >= b.len, "growth: doubling capacity");
	buf_free(&b);

	/* a single huge add */
	size_t n = 3u << 20;
	char *huge = malloc(n);
	for (size_t i = 0; i < n; i++)
		huge[i] = (char)(i * 7);
	T_CHECK(buf_add(&b, huge, n) == 0 && holds(&b, huge, n), "growth: 3 MiB at once");
	buf_consume(&b, n - 1);
	T_CHECK(b.len == 1 && buf_head(&b)[0] == huge[n - 1], "growth: consume to the last byte");
	free(huge);
	buf_free(&b);
}

static void test_addf(void)
{
	struct buf b = {0};
	T_CHECK(buf_addf(&b, "%d-%s-%c", 42, "x", 'y') == 0 && holds(&b, "42-x-y", 6),
		"addf: short");
	T_CHECK(buf_addf(&b, "%s", "") == 0 && b.len == 6, "addf: empty result");
	buf_reset(&b);

	/* lengths around the 256-byte stack buffer, and far past it */
	static const size_t lens[] = {254, 255, 256, 257, 1000, 4095, 70000};
	for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
		size_t n = lens[k];
		char *s = malloc(n + 1);
		for (size_t i = 0; i < n; i++)
			s[i] = (char)('a' + i % 23);
		s[n] = '\0';
		buf_reset(&b);
		buf_adds(&b, "<");
		buf_consume(&b, 1); /* an offset: the tail is not at data */
		buf_adds(&b, "[");
		int rc = buf_addf(&b, "%s|%zu", s, n);
		char want_tail[32];
		int tl = snprintf(want_tail, sizeof(want_tail), "|%zu", n);
		bool ok = rc == 0 && b.len == 1 + n + (size_t)tl && buf_head(&b)[0] == '[' &&
			  memcmp(buf_head(&b) + 1, s, n) == 0 &&
			  memcmp(buf_head(&b) + 1 + n, want_tail, (size_t)tl) == 0;
		char name[64];
		snprintf(name, sizeof(name), "addf: %zu-byte string", n);
		T_CHECK(ok, name);
		/* the bytes after the string stay usable */
		buf_add(&b, "]", 1);
		snprintf(name, sizeof(name), "addf: %zu-byte string, then add", n);
		T_CHECK(buf_head(&b)[b.len - 1] == ']' && b.len == 2 + n + (size_t)tl, name);
		T_CHECK(invariants(&b), "addf: invariants");
		free(s);
	}
	buf_free(&b);

	/* a long formatted append into a buf that must both compact and grow */
	buf_add(&b, "0123456789", 10);
	buf_consume(&b, 9);
	char *s = malloc(2000);
	memset(s, 'q', 1999);
	s[1999] = '\0';
	T_CHECK(buf_addf(&b, "%s%s", s, "!") == 0 && b.len == 2001 && buf_head(&b)[0] == '9' &&
			buf_head(&b)[2000] == '!',
		"addf: long, after a consume");
	free(s);
	buf_free(&b);
}

static bool zeroes(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return false;
	return true;
}

/* Bytes a buf no longer holds are scrubbed: consumed, reset, or left
 * behind by compaction (growth and free scrub blocks no test can read). */
static void test_scrub(void)
{
	struct buf b = {0};
	buf_adds(&b, "password=Xi-secret");
	buf_consume(&b, 9);
	T_CHECK(zeroes(b.data, 9) && holds(&b, "Xi-secret", 9), "scrub: consumed head");
	buf_consume(&b, 9);
	T_CHECK(zeroes(b.data, 18) && b.off == 0, "scrub: consume of everything");
	buf_adds(&b, "Xi-secret");
	buf_consume(&b, 3);
	buf_reset(&b);
	T_CHECK(zeroes(b.data, 9), "scrub: reset");

	/* 100 live bytes at 900 move to the front; 30 more end at 130: the
	 * old copy at 900..1000 must not survive the move */
	char block[1000];
	memset(block, 's', sizeof(block));
	buf_add(&b, block, sizeof(block));
	size_t cap = b.cap;
	buf_consume(&b, 900);
	T_CHECK(buf_add(&b, "0123456789012345678901234567890", 30) == 0 && b.off == 0 &&
			b.cap == cap,
		"scrub: compaction happened");
	T_CHECK(zeroes(b.data + 130, 870) && buf_head(&b)[99] == 's' && buf_head(&b)[100] == '0',
		"scrub: compaction leaves no stale tail");
	/* a move that overlaps itself: 600 live bytes at 400 */
	buf_reset(&b);
	buf_add(&b, block, sizeof(block));
	buf_consume(&b, 400);
	char bang[64];
	memset(bang, '!', sizeof(bang));
	size_t n = cap - 1000 + 1; /* one byte more than the free tail */
	T_CHECK(n <= sizeof(bang) && buf_add(&b, bang, n) == 0 && b.off == 0 && b.cap == cap,
		"scrub: overlapping compaction happened");
	T_CHECK(b.len == 600 + n && buf_head(&b)[599] == 's' && buf_head(&b)[600] == '!' &&
			zeroes(b.data + b.len, 1000 - b.len),
		"scrub: overlapping compaction leaves no stale tail");
	buf_free(&b);
}

static uint64_t rng_state = 88172645463325252ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Random adds, addfs and consumes against a flat model. */
static void test_model(void)
{
	struct buf b = {0};
	size_t mcap = 1 << 22, mlen = 0, mstart = 0;
	char *model = malloc(mcap);
	char tmp[3000];
	bool ok = true;
	for (int step = 0; step < 20000 && ok; step++) {
		uint64_t r = rng();
		size_t n = (size_t)(r >> 8) % (r % 5 == 0 ? sizeof(tmp) : 64);
		switch (r % 4) {
		case 0:
		case 1:
			for (size_t i = 0; i < n; i++)
				tmp[i] = (char)rng();
			ok = buf_add(&b, tmp, n) == 0;
			break;
		case 2: {
			for (size_t i = 0; i < n; i++)
				tmp[i] = (char)('A' + rng() % 26);
			tmp[n] = '\0';
			ok = buf_addf(&b, "%s", tmp) == 0;
			break;
		}
		default:
			n = b.len ? (size_t)(r >> 8) % (b.len + 1) : 0;
			buf_consume(&b, n);
			mstart += n;
			if (mstart > mlen)
				mstart = mlen;
			continue;
		}
		if (mlen + n > mcap) {
			memmove(model, model + mstart, mlen - mstart);
			mlen -= mstart, mstart = 0;
		}
		memcpy(model + mlen, tmp, n);
		mlen += n;
		ok = ok && invariants(&b) && b.len == mlen - mstart &&
		     memcmp(buf_head(&b), model + mstart, b.len) == 0;
	}
	T_CHECK(ok, "model: 20000 random operations match a flat buffer");
	free(model);
	buf_free(&b);
}

int main(void)
{
	test_basic();
	test_compaction();
	test_addf();
	test_scrub();
	test_model();
	T_DONE();
}
