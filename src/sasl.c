/*
 * Pure decoders of SASL mechanism payloads, one per mechanism family.
 *
 * Every payload is base64-decoded into one heap buffer sized from the
 * (already bounded) input, parsed there, and scrubbed with OPENSSL_cleanse
 * before it is freed: passwords, SCRAM proofs, DIGEST-MD5 response hashes
 * and tokens live nowhere else. Decoders copy out only named, non-secret
 * fields; anything they do not recognise (unknown SCRAM extensions,
 * OAUTHBEARER keys, a payload in an unexpected step) is reported by length
 * at most, because it might carry a secret.
 *
 * Which message of an exchange a payload is comes from counting the
 * non-empty payloads in each direction, not from the step number: an
 * <auth/> without initial response followed by an empty challenge is the
 * same exchange as an <auth> with one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "b64.h"
#include "bounds.h"
#include "sasl.h"
#include "sasl_int.h"

/* ---- output ---------------------------------------------------------- */

/* Marks the payload malformed; the first reason wins because later ones
 * are usually consequences of it. */
void sasl_out_malformed(struct sasl_fields *out, const char *reason)
{
	if (out->malformed)
		return;
	out->malformed = true;
	snprintf(out->reason, sizeof(out->reason), "%s", reason);
}

/* The next free field, or NULL when all SASL_MAX_FIELDS are used (no
 * decoder emits that many; the bound only keeps a bug from overflowing). */
static struct sasl_field *out_add(struct sasl_fields *out, const char *key, enum sasl_type type)
{
	if (out->n >= SASL_MAX_FIELDS)
		return NULL;
	struct sasl_field *f = &out->f[out->n++];
	snprintf(f->key, sizeof(f->key), "%s", key);
	f->type = type;
	f->str[0] = '\0';
	f->num = 0;
	return f;
}

/*
 * Copies n bytes of v into dst (SASL_VALUE_MAX bytes) as a C string. A value
 * longer than SASL_VALUE_MAX - 4 is cut there, backed up over at most three
 * UTF-8 continuation bytes so a valid UTF-8 value stays valid, and ends in
 * "...". v must hold no NUL (callers check).
 */
void sasl_value_copy(char *dst, const unsigned char *v, size_t n)
{
	if (n > SASL_VALUE_MAX - 4) {
		size_t cut = SASL_VALUE_MAX - 4;
		for (int k = 0; k < 3 && cut > 0 && (v[cut] & 0xC0) == 0x80; k++)
			cut--;
		memcpy(dst, v, cut);
		memcpy(dst + cut, "...", 4);
		return;
	}
	memcpy(dst, v, n);
	dst[n] = '\0';
}

/* Adds a string field. A NUL in the value makes the payload malformed
 * instead, since the field could not hold it. */
void sasl_out_str(struct sasl_fields *out, const char *key, const void *v, size_t n)
{
	if (memchr(v, '\0', n) != NULL) {
		sasl_out_malformed(out, "NUL inside a field");
		return;
	}
	struct sasl_field *f = out_add(out, key, SASL_STR);
	if (f != NULL)
		sasl_value_copy(f->str, v, n);
}

void sasl_out_num(struct sasl_fields *out, const char *key, long long v)
{
	struct sasl_field *f = out_add(out, key, SASL_NUM);
	if (f != NULL)
		f->num = v;
}

void sasl_out_bool(struct sasl_fields *out, const char *key, bool v)
{
	struct sasl_field *f = out_add(out, key, SASL_BOOL);
	if (f != NULL)
		f->num = v ? 1 : 0;
}

/* A payload in a step where the mechanism has none: only its length is
 * shown, since we cannot tell what it holds. */
void sasl_out_unexpected(const struct payload *pl, struct sasl_fields *out)
{
	sasl_out_num(out, "len", (long long)pl->n);
	sasl_out_malformed(out, "unexpected payload for this step");
}

/* ---- state ------------------------------------------------------------ */

/* Keeps a value of the exchange (user, authzid, cb flag) in dst, one of
 * st's fields; a cut one makes the identity ambiguous. */
void sasl_state_set(struct sasl_state *st, char *dst, bool *have, const void *v, size_t n)
{
	/* DIGEST-MD5 with a made-up initial response, then the real one: the
	 * identity checked must be the one the server reads */
	if (st->id_settled && (dst == st->user || dst == st->authzid)) {
		char now[SASL_VALUE_MAX];
		sasl_value_copy(now, v, n);
		if (!*have || strcmp(now, dst) != 0)
			st->id_changed = true;
	}
	sasl_value_copy(dst, v, n);
	*have = true;
	if (n > SASL_VALUE_MAX - 4)
		st->cut = true;
}

/* ---- small parsing helpers --------------------------------------------- */

bool sasl_is_alpha(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

bool sasl_is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static unsigned char to_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* Whether the n bytes at s equal the lower-case literal lit, ignoring
 * ASCII case (directive names are case-insensitive in RFC 2831). */
bool sasl_eq_nocase(const unsigned char *s, size_t n, const char *lit)
{
	size_t l = strlen(lit);
	if (n != l)
		return false;
	for (size_t i = 0; i < n; i++)
		if (to_lower(s[i]) != (unsigned char)lit[i])
			return false;
	return true;
}

/* Whether the lower-case literal lit occurs in the n bytes at s, ignoring
 * ASCII case. */
static bool contains_nocase(const unsigned char *s, size_t n, const char *lit)
{
	size_t l = strlen(lit);
	for (size_t i = 0; i + l <= n; i++)
		if (sasl_eq_nocase(s + i, l, lit))
			return true;
	return false;
}

/*
 * Parses 1 to 18 decimal digits (enough for any real count, no overflow
 * in a long long). Returns false for anything else, leading "+" or "-"
 * included.
 */
bool sasl_parse_num(const unsigned char *s, size_t n, long long *v)
{
	if (n == 0 || n > 18)
		return false;
	long long r = 0;
	for (size_t i = 0; i < n; i++) {
		if (!sasl_is_digit(s[i]))
			return false;
		r = r * 10 + (s[i] - '0');
	}
	*v = r;
	return true;
}

bool sasl_has_nul(const struct payload *pl)
{
	return memchr(pl->p, '\0', pl->n) != NULL;
}

/* ---- PLAIN and X-OAUTH2: authzid NUL authcid NUL secret ---------------- */

/*
 * RFC 4616 §2: exactly two NULs, non-empty authcid and password. Google's
 * X-OAUTH2 has the same shape with a token for the password. Nothing is
 * shown with fewer than two NULs, so a password can never land in the
 * authcid field.
 */
static void plain_like(struct sasl_state *st, const struct payload *pl, struct sasl_fields *out,
                       const char *secret_name)
{
	const unsigned char *p = pl->p, *end = pl->p + pl->n;

	if (pl->n == 0)
		return;
	if (st->c2s_n > 1) {
		sasl_out_unexpected(pl, out);
		return;
	}
	const unsigned char *nul1 = memchr(p, '\0', pl->n);
	const unsigned char *nul2 = nul1 ? memchr(nul1 + 1, '\0', (size_t)(end - nul1 - 1)) : NULL;
	if (nul2 == NULL) {
		sasl_out_malformed(out, "not exactly two NUL separators");
		return;
	}
	/* A third NUL: malformed (and so refused while an identity rule is
	 * set), but authzid and authcid come before the second NUL whatever
	 * follows, so the audit still names them; the tail is never shown. */
	if (memchr(nul2 + 1, '\0', (size_t)(end - nul2 - 1)) != NULL)
		sasl_out_malformed(out, "not exactly two NUL separators");
	size_t zlen = (size_t)(nul1 - p), clen = (size_t)(nul2 - nul1 - 1);
	size_t slen = (size_t)(end - nul2 - 1);
	if (zlen > 0) {
		sasl_out_str(out, "authzid", p, zlen);
		sasl_state_set(st, st->authzid, &st->have_authzid, p, zlen);
	}
	if (clen == 0) {
		sasl_out_malformed(out, "empty authcid");
	} else {
		sasl_out_str(out, "authcid", nul1 + 1, clen);
		sasl_state_set(st, st->user, &st->have_user, nul1 + 1, clen);
	}
	if (secret_name != NULL)
		sasl_out_bool(out, secret_name, slen > 0);
	if (slen == 0)
		sasl_out_malformed(out, secret_name ? "empty token" : "empty password");
}

static void plain_c2s(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	plain_like(st, pl, out, NULL);
}

static void xoauth2_c2s(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	plain_like(st, pl, out, "token");
}

/* Server data in a client-only mechanism: shown by length. */
static void none_s2c(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	(void)st;
	if (pl->n > 0)
		sasl_out_unexpected(pl, out);
}

/* ---- LOGIN (draft-murchison-sasl-login) -------------------------------- */

/*
 * The first client payload is the username when it comes before the
 * second server prompt and the last prompt did not ask for the password;
 * every other client payload is the password and yields no field at all.
 * The rule errs toward silence: a server that prompts twice for the
 * username only loses us the username, never leaks the password.
 */
static void loginmech_c2s(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	if (pl->n == 0)
		return;
	if (st->c2s_n != 1 || st->s2c_n > 1 || st->login_pass_asked)
		return;
	if (sasl_has_nul(pl)) {
		sasl_out_malformed(out, "NUL in username");
		return;
	}
	sasl_out_str(out, "username", pl->p, pl->n);
	sasl_state_set(st, st->user, &st->have_user, pl->p, pl->n);
}

/* The server's prompt ("Username:", "Password:") is not secret. */
static void loginmech_s2c(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	if (pl->n == 0)
		return;
	st->login_pass_asked = contains_nocase(pl->p, pl->n, "pass");
	if (sasl_has_nul(pl)) {
		sasl_out_malformed(out, "NUL in prompt");
		return;
	}
	sasl_out_str(out, "prompt", pl->p, pl->n);
}

/* ---- ANONYMOUS (RFC 4505) and EXTERNAL (RFC 4422 Appendix A) ----------- */

/* The trace is whatever the client chose to say: flagged as such so no
 * reader mistakes it for an identity the server vouched for. */
static void anonymous_c2s(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	if (pl->n == 0)
		return;
	if (st->c2s_n > 1) {
		sasl_out_unexpected(pl, out);
		return;
	}
	if (sasl_has_nul(pl)) {
		sasl_out_malformed(out, "NUL in trace");
		return;
	}
	sasl_out_str(out, "trace", pl->p, pl->n);
	sasl_out_bool(out, "client_supplied", true);
}

/* The authzid, empty meaning "derive it from my credentials". */
static void external_c2s(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	if (st->c2s_any > 1) {
		if (pl->n > 0)
			sasl_out_unexpected(pl, out);
		return;
	}
	if (sasl_has_nul(pl)) {
		sasl_out_malformed(out, "NUL in authzid");
		return;
	}
	sasl_out_str(out, "authzid", pl->p, pl->n);
	if (pl->n > 0)
		sasl_state_set(st, st->authzid, &st->have_authzid, pl->p, pl->n);
}

/* ---- HT-* (XEP-0484 FAST, draft-schmaus-kitten-sasl-ht) ---------------- */

/* initiator-msg = authcid NUL initiator-hashed-token. The hashed token is
 * binary (an HMAC), so only the first NUL separates. */
static void ht_c2s(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	if (pl->n == 0)
		return;
	if (st->c2s_n > 1) {
		sasl_out_unexpected(pl, out);
		return;
	}
	const unsigned char *nul = memchr(pl->p, '\0', pl->n);
	if (nul == NULL) {
		sasl_out_malformed(out, "no NUL separator");
		return;
	}
	size_t alen = (size_t)(nul - pl->p);
	if (alen == 0) {
		sasl_out_malformed(out, "empty authcid");
	} else {
		sasl_out_str(out, "authcid", pl->p, alen);
		sasl_state_set(st, st->user, &st->have_user, pl->p, alen);
	}
	bool token = pl->n - alen - 1 > 0;
	sasl_out_bool(out, "token", token);
	if (!token)
		sasl_out_malformed(out, "empty hashed token");
}

/* responder-msg: the server's HMAC, shown only as present. */
static void ht_s2c(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	if (pl->n == 0)
		return;
	if (st->s2c_n > 1) {
		sasl_out_unexpected(pl, out);
		return;
	}
	sasl_out_bool(out, "responder_proof", true);
}

/* ---- CRAM-MD5 (RFC 2195) ---------------------------------------------- */

/* The server's challenge is a msg-id: its length only (it is a nonce). */
static void cram_s2c(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	(void)st;
	if (pl->n > 0)
		sasl_out_num(out, "challenge_len", (long long)pl->n);
}

/* "username SP digest": the username; the HMAC is never written (it
 * answers one challenge only, but is a password-derived value). */
static void cram_c2s(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	size_t sp = pl->n;
	if (pl->n == 0)
		return;
	while (sp > 0 && pl->p[sp - 1] != ' ')
		sp--;
	if (sp <= 1 || sasl_has_nul(pl)) {
		sasl_out_malformed(out, "expected \"username digest\"");
		return;
	}
	sasl_out_str(out, "username", pl->p, sp - 1);
	sasl_state_set(st, st->user, &st->have_user, pl->p, sp - 1);
	sasl_out_bool(out, "digest", pl->n - sp == 32);
	if (pl->n - sp != 32)
		sasl_out_malformed(out, "digest is not 32 hex digits");
}

/* ---- any other mechanism ----------------------------------------------- */

static void other_any(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	(void)st;
	sasl_out_num(out, "len", (long long)pl->n);
}

/* ---- dispatch ---------------------------------------------------------- */

typedef void sasl_decoder(struct sasl_state *st, struct payload *pl, struct sasl_fields *out);

static const struct sasl_mech_ops {
	const char *name; /* upper case */
	bool prefix;      /* a family: the name is a prefix */
	sasl_decoder *c2s, *s2c;
} sasl_mechs[] = {
    [MECH_OTHER] = {"", false, other_any, other_any},
    [MECH_PLAIN] = {"PLAIN", false, plain_c2s, none_s2c},
    [MECH_LOGIN] = {"LOGIN", false, loginmech_c2s, loginmech_s2c},
    [MECH_DIGEST_MD5] = {"DIGEST-MD5", false, sasl_digest_c2s, sasl_digest_s2c},
    [MECH_SCRAM] = {"SCRAM-", true, sasl_scram_c2s, sasl_scram_s2c},
    [MECH_ANONYMOUS] = {"ANONYMOUS", false, anonymous_c2s, none_s2c},
    [MECH_EXTERNAL] = {"EXTERNAL", false, external_c2s, none_s2c},
    [MECH_OAUTHBEARER] = {"OAUTHBEARER", false, sasl_oauthbearer_c2s, sasl_oauthbearer_s2c},
    [MECH_X_OAUTH2] = {"X-OAUTH2", false, xoauth2_c2s, none_s2c},
    [MECH_HT] = {"HT-", true, ht_c2s, ht_s2c},
    [MECH_CRAM_MD5] = {"CRAM-MD5", false, cram_c2s, cram_s2c},
};

/* A name longer than RFC 4422 allows is kept cut and decoded as an
 * unknown mechanism, so a cut name can never select a decoder. */
struct sasl_state *sasl_new(const char *mechanism)
{
	struct sasl_state *st = calloc(1, sizeof(*st));
	size_t len = strlen(mechanism);

	if (st == NULL)
		return NULL;
	for (size_t i = 0; i < len && i < MAX_MECH_NAME; i++) {
		unsigned char c = (unsigned char)mechanism[i];
		st->name[i] = (char)((c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c);
	}
	st->mech = MECH_OTHER;
	if (len > MAX_MECH_NAME)
		return st;
	for (size_t m = 1; m < sizeof(sasl_mechs) / sizeof(sasl_mechs[0]); m++) {
		const struct sasl_mech_ops *o = &sasl_mechs[m];
		size_t ol = strlen(o->name);
		if (o->prefix ? (len > ol && strncmp(st->name, o->name, ol) == 0)
		              : strcmp(st->name, o->name) == 0) {
			st->mech = (enum sasl_mech)m;
			break;
		}
	}
	return st;
}

void sasl_free(struct sasl_state *st)
{
	if (st == NULL)
		return;
	free(st);
}

int sasl_step(struct sasl_state *st, enum sasl_dir dir, const char *b64, size_t len,
              bool has_payload, struct sasl_fields *out)
{
	memset(out, 0, sizeof(*out));
	if (++st->steps > MAX_SASL_STEPS) {
		sasl_out_malformed(out, "too many steps");
		return 0;
	}
	if (!has_payload)
		return 0;
	if (len > MAX_SASL_PAYLOAD) {
		sasl_out_malformed(out, "too large");
		return 0;
	}
	/* One block: the decoded payload, then scratch for a nested value,
	 * which never decodes to more than the payload's length + 3. */
	size_t cap = len / 4 * 3 + 3;
	size_t total = cap + cap + 3;
	unsigned char *buf = malloc(total);
	if (buf == NULL)
		return -1;
	long dn = b64_decode(b64, len, buf);
	if (dn < 0) {
		sasl_out_malformed(out, "invalid base64");
		if (dir == SASL_C2S && !st->id_settled)
			st->id_settled = st->id_ambiguous = true;
	} else {
		struct payload pl = {.p = buf, .n = (size_t)dn, .scratch = buf + cap};
		const struct sasl_mech_ops *o = &sasl_mechs[st->mech];
		if (dir == SASL_C2S) {
			st->c2s_n += dn > 0;
			st->c2s_any++;
			o->c2s(st, &pl, out);
			/* every decoder finds the identity in the first non-empty
			 * client payload, or nowhere */
			if (dn > 0 && !st->id_settled) {
				st->id_settled = true;
				st->id_ambiguous = out->malformed || st->cut || st->unsure;
			}
		} else {
			st->s2c_n += dn > 0;
			o->s2c(st, &pl, out);
		}
	}
	OPENSSL_cleanse(buf, total);
	free(buf);
	return 0;
}

enum sasl_identity sasl_identity(const struct sasl_state *st)
{
	if (st->mech == MECH_OTHER || st->mech == MECH_ANONYMOUS || st->mech == MECH_EXTERNAL)
		return SASL_ID_NONE;
	if (!st->id_settled)
		return SASL_ID_PENDING;
	if (st->id_ambiguous || st->id_changed)
		return SASL_ID_AMBIGUOUS;
	if (st->have_user)
		return SASL_ID_KNOWN;
	/* OAUTHBEARER names the user only in its optional a= */
	return st->mech == MECH_OAUTHBEARER ? SASL_ID_NONE : SASL_ID_AMBIGUOUS;
}

const char *sasl_user(const struct sasl_state *st)
{
	return st->have_user ? st->user : NULL;
}

const char *sasl_authzid(const struct sasl_state *st)
{
	return st->have_authzid ? st->authzid : NULL;
}

const char *sasl_cb_flag(const struct sasl_state *st)
{
	return st->have_cb ? st->cb : NULL;
}

const char *sasl_mechanism(const struct sasl_state *st)
{
	return st->name;
}
