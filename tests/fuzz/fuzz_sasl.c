/*
 * libFuzzer target for the SASL decoders (sasl.c, b64.c).
 *
 * Input: byte 0 selects the mechanism (low 4 bits) and how steps are fed:
 *   bit 4 set: each step's bytes are base64-encoded first, so the decoders
 *              see arbitrary payloads rather than mostly invalid base64;
 *   bit 4 clear: the bytes are the element text as is (b64_decode's input);
 *   bit 5 set: an empty step is an element without text (has_payload false).
 * The rest is split on 0xFF into steps that alternate client, server,
 * client, ... (0xFF is never valid base64 nor UTF-8, so seeds stay readable).
 *
 * Beyond what ASan and UBSan catch, every step checks the output contract
 * (terminated strings, bounded counts, a reason when malformed) and, for
 * PLAIN and X-OAUTH2, that the secret after the second NUL shows up in no
 * output when the two identities do not already contain it.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *        tests/fuzz/fuzz_sasl.c src/sasl*.c src/b64.c -lcrypto
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "b64.h"
#include "sasl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const fuzz_mechs[16] = {
    "PLAIN",
    "LOGIN",
    "DIGEST-MD5",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-512",
    "ANONYMOUS",
    "EXTERNAL",
    "OAUTHBEARER",
    "X-OAUTH2",
    "HT-SHA-256-NONE",
    "ht-sha-512-endp",
    "CRAM-MD5",
    "GSSAPI",
    "scram-sha-1",
    "SCRAM-SHA-1-PLUS-TOO-LONG-NAME",
};

static bool fuzz_terminated(const char *s, size_t size)
{
	return memchr(s, '\0', size) != NULL;
}

/* The output contract of sasl_step(); abort() so libFuzzer keeps the input. */
static void fuzz_check_fields(const struct sasl_fields *out)
{
	if (out->n > SASL_MAX_FIELDS || !fuzz_terminated(out->reason, sizeof(out->reason)))
		abort();
	if (out->malformed != (out->reason[0] != '\0'))
		abort();
	for (size_t i = 0; i < out->n; i++) {
		const struct sasl_field *f = &out->f[i];
		if (!fuzz_terminated(f->key, SASL_KEY_MAX) || f->key[0] == '\0')
			abort();
		if (!fuzz_terminated(f->str, SASL_VALUE_MAX))
			abort();
		if (f->type == SASL_BOOL && f->num != 0 && f->num != 1)
			abort();
	}
}

static bool fuzz_mem_has(const char *hay, size_t hl, const uint8_t *needle, size_t nl)
{
	for (size_t i = 0; i + nl <= hl; i++)
		if (memcmp(hay + i, needle, nl) == 0)
			return true;
	return false;
}

/*
 * For PLAIN-shaped payloads with exactly two NULs: the secret (after the
 * second) must not appear in any field unless it is inside the authzid or
 * authcid the client sent, where showing it is correct. Skipped when a
 * value was cut, since the "..." added then is not from the payload. The
 * reason is a constant string, so it is not searched.
 */
static void fuzz_check_plain(const uint8_t *p, size_t n, const struct sasl_fields *out)
{
	const uint8_t *nul1 = memchr(p, 0, n);
	const uint8_t *nul2 = nul1 ? memchr(nul1 + 1, 0, (size_t)(p + n - nul1 - 1)) : NULL;
	if (nul2 == NULL || memchr(nul2 + 1, 0, (size_t)(p + n - nul2 - 1)) != NULL)
		return;
	const uint8_t *sec = nul2 + 1;
	size_t sl = (size_t)(p + n - sec);
	if (sl < 4 || fuzz_mem_has((const char *)p, (size_t)(nul2 - p), sec, sl))
		return;
	for (size_t i = 0; i < out->n; i++) {
		size_t l = strlen(out->f[i].str);
		if (l >= 3 && memcmp(out->f[i].str + l - 3, "...", 3) == 0)
			return;
	}
	for (size_t i = 0; i < out->n; i++)
		if (fuzz_mem_has(out->f[i].str, strlen(out->f[i].str), sec, sl))
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct sasl_fields out;

	if (size == 0)
		return 0;
	uint8_t sel = data[0];
	const char *mech = fuzz_mechs[sel & 15];
	bool encode = sel & 0x10, absent_empty = sel & 0x20;
	bool plain_like = strcmp(mech, "PLAIN") == 0 || strcmp(mech, "X-OAUTH2") == 0;
	struct sasl_state *st = sasl_new(mech);
	if (st == NULL)
		return 0;

	const uint8_t *p = data + 1, *end = data + size;
	enum sasl_dir dir = SASL_C2S;
	unsigned c2s_steps = 0;
	for (;;) {
		const uint8_t *sep = memchr(p, 0xFF, (size_t)(end - p));
		size_t n = (size_t)((sep ? sep : end) - p);
		bool has = n > 0 || !absent_empty;
		if (encode) {
			char *enc = malloc(4 * ((n + 2) / 3) + 1);
			if (enc == NULL)
				break;
			size_t el = b64_encode(p, n, enc);
			if (sasl_step(st, dir, enc, el, has, &out) != 0)
				abort(); /* only on out of memory, which a fuzzer does not cause */
			free(enc);
		} else if (sasl_step(st, dir, (const char *)p, n, has, &out) != 0) {
			abort();
		}
		fuzz_check_fields(&out);
		if (encode && plain_like && dir == SASL_C2S && n > 0 && c2s_steps++ == 0)
			fuzz_check_plain(p, n, &out);
		dir = dir == SASL_C2S ? SASL_S2C : SASL_C2S;
		if (sep == NULL)
			break;
		p = sep + 1;
	}
	const char *ids[] = {sasl_user(st), sasl_authzid(st), sasl_cb_flag(st), sasl_mechanism(st)};
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		if (ids[i] != NULL && !fuzz_terminated(ids[i], SASL_VALUE_MAX))
			abort();
	sasl_free(st);
	return 0;
}
