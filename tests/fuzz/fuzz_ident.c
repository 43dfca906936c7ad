/*
 * libFuzzer target for identity folding (ident.c): the input, cut at its
 * first NUL, is folded as a user, a domain and a pattern.
 *
 * Beyond what ASan and UBSan catch: a fold that succeeds is terminated,
 * fits, and is a fixed point (folding it again gives the same string), so
 * a pattern and an identity folded once compare in one spelling; a user
 * fold never holds '@', '/' or a control byte; a domain fold is lower-case
 * ASCII; and a failed fold leaves "" behind.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ident.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_fixed_point(int (*fold)(const char *, char *, size_t), const char *in, size_t max,
                             bool domain)
{
	char *a = malloc(max), *b = malloc(max);
	if (a == NULL || b == NULL)
		abort();
	memset(a, 0x5a, max);
	if (fold(in, a, max) < 0) {
		if (a[0] != '\0')
			abort();
	} else {
		if (memchr(a, '\0', max) == NULL)
			abort();
		if (fold(a, b, max) < 0 || strcmp(a, b) != 0)
			abort();
		for (const unsigned char *p = (const unsigned char *)a; *p; p++) {
			if (*p < 0x20 || *p == 0x7f)
				abort();
			if (domain && (*p >= 0x80 || (*p >= 'A' && *p <= 'Z')))
				abort();
			if (!domain && (*p == '@' || *p == '/'))
				abort();
		}
	}
	free(a);
	free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in = malloc(size + 1);
	if (in == NULL)
		return 0;
	memcpy(in, data, size);
	in[size] = '\0';
	fuzz_fixed_point(ident_fold_user, in, IDENT_USER_MAX, false);
	fuzz_fixed_point(ident_fold_domain, in, IDENT_DOMAIN_MAX, true);
	char out[IDENT_PATTERN_MAX];
	if (ident_fold_pattern(in, out, sizeof(out)) == 0 && memchr(out, '\0', sizeof(out)) == NULL)
		abort();
	/* small outputs: refused, never overrun (ASan watches the heap copy) */
	char *tiny = malloc(4);
	if (tiny != NULL) {
		(void)ident_fold_user(in, tiny, 4);
		(void)ident_fold_domain(in, tiny, 4);
		(void)ident_fold_pattern(in, tiny, 4);
		free(tiny);
	}
	free(in);
	return 0;
}
