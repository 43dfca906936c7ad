/*
 * libFuzzer target for the configuration parser: the input is a file as
 * conf_load_buffer sees it, and (when it holds no NUL) one -o argument.
 * conf_check runs too, so its file checks see fuzzed paths (access(2)
 * and stat(2) only: nothing is opened or written).
 *
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -Isrc tests/fuzz/fuzz_conf.c src/conf.c -o fuzz_conf
 *   ./fuzz_conf -max_total_time=60 tests/fuzz/corpus/conf
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check_addr(const struct conf_addr *a)
{
	long port = strtol(a->port, NULL, 10);

	if (memchr(a->host, '\0', sizeof(a->host)) == NULL || strlen(a->host) > 253 || port < 1 ||
	    port > 65535)
		abort();
}

static void fuzz_check_mech(const char *m)
{
	size_t n = strlen(m);

	if (n == 0 || n > MAX_MECH_NAME || strspn(m, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != n)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A small err buffer on purpose: truncation is a path to exercise. */
	char err[256];
	struct conf *c = conf_new();
	size_t i;

	if (c == NULL)
		return 0;
	conf_load_buffer(c, "fuzz.conf", (const char *)data, size, err, sizeof(err));
	if (memchr(err, '\0', sizeof(err)) == NULL)
		abort();
	if (memchr(data, '\0', size) == NULL) {
		char *kv = malloc(size + 1);

		if (kv != NULL) {
			memcpy(kv, data, size);
			kv[size] = '\0';
			conf_set_option(c, kv, err, sizeof(err));
			if (memchr(err, '\0', sizeof(err)) == NULL)
				abort();
			free(kv);
		}
	}
	conf_check(c, err, sizeof(err));
	if (memchr(err, '\0', sizeof(err)) == NULL)
		abort();
	/* What the parser promises to the rest of the proxy. */
	if (c->nlisten > MAX_LISTENERS || c->nlisten_tls > MAX_LISTENERS ||
	    c->nmechanisms_deny > MAX_MECHANISMS || c->nmechanisms_allow > MAX_MECHANISMS)
		abort();
	for (i = 0; i < c->nlisten; i++)
		fuzz_check_addr(&c->listen[i]);
	for (i = 0; i < c->nlisten_tls; i++)
		fuzz_check_addr(&c->listen_tls[i]);
	if (c->upstream_set && !c->upstream_original_dst) {
		fuzz_check_addr(&c->upstream);
		if (c->upstream.host[0] == '\0')
			abort();
	}
	for (i = 0; i < c->nmechanisms_deny; i++) {
		fuzz_check_mech(c->mechanisms_deny[i]);
		if (policy_mechanism_permitted(c, c->mechanisms_deny[i]))
			abort();
	}
	for (i = 0; i < c->nmechanisms_allow; i++)
		fuzz_check_mech(c->mechanisms_allow[i]);
	policy_mechanism_permitted(c, "PLAIN");
	conf_free(c);
	return 0;
}
