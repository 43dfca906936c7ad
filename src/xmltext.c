#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "xmltext.h"

#define XT_ONES 0x0101010101010101ULL
#define XT_HIGHS 0x8080808080808080ULL

bool xmltext_plain(unsigned char c)
{
	return c >= 0x20 && c < 0x80 && c != '<' && c != '&' && c != ']';
}

/* Non-zero if some byte of x is zero (exact as a yes/no; Hacker's
 * Delight 6-1). */
static uint64_t xmltext_has_zero(uint64_t x)
{
	return (x - XT_ONES) & ~x & XT_HIGHS;
}

/* True if all eight bytes of x are plain: eight bytes per step, where a
 * byte-at-a-time loop is what makes Expat cost what it does. */
static bool xmltext_word_plain(uint64_t x)
{
	if (x & XT_HIGHS)
		return false; /* a byte >= 0x80 */
	/* with every byte < 0x80, a borrow into a high bit means a byte < 0x20 */
	if ((x - 0x20 * XT_ONES) & ~x & XT_HIGHS)
		return false;
	return !(xmltext_has_zero(x ^ ('<' * XT_ONES)) | xmltext_has_zero(x ^ ('&' * XT_ONES)) |
	         xmltext_has_zero(x ^ (']' * XT_ONES)));
}

size_t xmltext_plain_run(const char *p, size_t n)
{
	size_t i = 0;
#ifdef __SSE2__
	/* sixteen bytes per step: a signed compare catches both the control
	 * characters and every byte >= 0x80 */
	const __m128i lo = _mm_set1_epi8(0x20), lt = _mm_set1_epi8('<'), amp = _mm_set1_epi8('&'),
	              rsqb = _mm_set1_epi8(']');
	for (; i + 16 <= n; i += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
		__m128i bad =
		    _mm_or_si128(_mm_or_si128(_mm_cmplt_epi8(v, lo), _mm_cmpeq_epi8(v, lt)),
		                 _mm_or_si128(_mm_cmpeq_epi8(v, amp), _mm_cmpeq_epi8(v, rsqb)));
		int m = _mm_movemask_epi8(bad);
		if (m != 0)
			return i + (size_t)__builtin_ctz((unsigned)m);
	}
#endif
	for (; i + 8 <= n; i += 8) {
		uint64_t x;
		memcpy(&x, p + i, 8);
		if (!xmltext_word_plain(x))
			break;
	}
	while (i < n && xmltext_plain((unsigned char)p[i]))
		i++;
	return i;
}

size_t xmltext_next_run(const char *p, size_t n, size_t min)
{
	size_t i = 0;
	while (i < n) {
		/* a run is known to be long enough after min bytes of it: the
		 * rest is scanned once, where it is passed over */
		size_t r = xmltext_plain_run(p + i, n - i < min ? n - i : min);
		if (r >= min && r > 0)
			return i;
		i += r + 1; /* past the byte that ended the run */
	}
	return n;
}

size_t xmltext_token_end(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] == '>' || p[i] == ';')
			return i + 1;
	return 0;
}
