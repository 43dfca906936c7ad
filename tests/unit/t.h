/*
 * The unit tests' whole framework: each check prints one line,
 * "PASS: name" or "FAIL: name (file:line)", which tests/run counts.
 */
#ifndef XI_T_H
#define XI_T_H

#include <stdio.h>
#include <string.h>

static int t_failed;

#define T_CHECK(cond, name)                                                                       \
	do {                                                                                      \
		if (cond) {                                                                       \
			printf("PASS: %s\n", (name));                                             \
		} else {                                                                          \
			printf("FAIL: %s (%s:%d: %s)\n", (name), __FILE__, __LINE__, #cond);      \
			t_failed++;                                                               \
		}                                                                                 \
	} while (0)

#define T_STREQ(a, b, name) T_CHECK((a) != NULL && (b) != NULL && strcmp((a), (b)) == 0, name)

#define T_DONE() return t_failed ? 1 : 0

#endif
