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

enum sasl_mech {
	MECH_OTHER = 0,
	MECH_PLAIN,
	MECH_LOGIN,
	MECH_DIGEST_MD5,
	MECH_SCRAM,
	MECH_ANONYMOUS,
	MECH_EXTERNAL,
	MECH_OAUTHBEARER,
	MECH_X_OAUTH2,
	MECH_HT,
	MECH_CRAM_MD5,
};

struct sasl_state {
	enum sasl_mech mech;
	char name[MAX_MECH_NAME + 1];
	unsigned steps;        /* sasl_step() calls, with or without payload */
	unsigned c2s_n;        /* non-empty payloads from the client so far */
	unsigned s2c_n;        /* non-empty payloads from the server so far */
	unsigned c2s_any;      /* client payloads so far, empty ones included */
	bool login_pass_asked; /* LOGIN: the server's last prompt named the password */
	bool have_user, have_authzid, have_cb;
	bool id_settled;   /* the first non-empty client payload has been decoded */
	bool id_ambiguous; /* ... and it was malformed, or a name in it was cut */
	bool cut;          /* a value kept in the state was cut at SASL_VALUE_MAX */
	bool unsure;       /* a name some servers parse differently (a SCRAM '=' escape) */
	bool id_changed;   /* a later client payload named another user or authzid */
	char user[SASL_VALUE_MAX];
	char authzid[SASL_VALUE_MAX];
	char cb[SASL_VALUE_MAX];
};

/* One decoded payload (ours to modify: quoted strings are unquoted in
 * place) and scratch room for a nested value (a SCRAM salt, channel
 * binding or escaped name), so no decoder allocates. */
struct payload {
	unsigned char *p;
	size_t n;
	unsigned char *scratch; /* at least n + 3 bytes */
};

/* ---- output ---------------------------------------------------------- */

/* Marks the payload malformed; the first reason wins because later ones
 * are usually consequences of it. */
static void out_malformed(struct sasl_fields *out, const char *reason)
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
static void value_copy(char *dst, const unsigned char *v, size_t n)
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
static void out_str(struct sasl_fields *out, const char *key, const void *v, size_t n)
{
	if (memchr(v, '\0', n) != NULL) {
		out_malformed(out, "NUL inside a field");
		return;
	}
	struct sasl_field *f = out_add(out, key, SASL_STR);
	if (f != NULL)
		value_copy(f->str, v, n);
}

static void out_num(struct sasl_fields *out, const char *key, long long v)
{
	struct sasl_field *f = out_add(out, key, SASL_NUM);
	if (f != NULL)
		f->num = v;
}

static void out_bool(struct sasl_fields *out, const char *key, bool v)
{
	struct sasl_field *f = out_add(out, key, SASL_BOOL);
	if (f != NULL)
		f->num = v ? 1 : 0;
}

/* A payload in a step where the mechanism has none: only its length is
 * shown, since we cannot tell what it holds. */
static void out_unexpected(const struct payload *pl, struct sasl_fields *out)
{
	out_num(out, "len", (long long)pl->n);
	out_malformed(out, "unexpected payload for this step");
}

/* ---- state ------------------------------------------------------------ */

/* Keeps a value of the exchange (user, authzid, cb flag) in dst, one of
 * st's fields; a cut one makes the identity ambiguous. */
static void state_set(struct sasl_state *st, char *dst, bool *have, const void *v, size_t n)
{
	/* DIGEST-MD5 with a made-up initial response, then the real one: the
	 * identity checked must be the one the server reads */
	if (st->id_settled && (dst == st->user || dst == st->authzid)) {
		char now[SASL_VALUE_MAX];
		value_copy(now, v, n);
		if (!*have || strcmp(now, dst) != 0)
			st->id_changed = true;
	}
	value_copy(dst, v, n);
	*have = true;
	if (n > SASL_VALUE_MAX - 4)
		st->cut = true;
}

/* ---- small parsing helpers --------------------------------------------- */

static bool is_alpha(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static unsigned char to_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* Whether the n bytes at s equal the lower-case literal lit, ignoring
 * ASCII case (directive names are case-insensitive in RFC 2831). */
static bool eq_nocase(const unsigned char *s, size_t n, const char *lit)
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
		if (eq_nocase(s + i, l, lit))
			return true;
	return false;
}

/*
 * Parses 1 to 18 decimal digits (enough for any real count, no overflow
 * in a long long). Returns false for anything else, leading "+" or "-"
 * included.
 */
static bool parse_num(const unsigned char *s, size_t n, long long *v)
{
	if (n == 0 || n > 18)
		return false;
	long long r = 0;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(s[i]))
			return false;
		r = r * 10 + (s[i] - '0');
	}
	*v = r;
	return true;
}

static bool has_nul(const struct payload *pl)
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
		out_unexpected(pl, out);
		return;
	}
	const unsigned char *nul1 = memchr(p, '\0', pl->n);
	const unsigned char *nul2 = nul1 ? memchr(nul1 + 1, '\0', (size_t)(end - nul1 - 1)) : NULL;
	if (nul2 == NULL) {
		out_malformed(out, "not exactly two NUL separators");
		return;
	}
	/* A third NUL: malformed (and so refused while an identity rule is
	 * set), but authzid and authcid come before the second NUL whatever
	 * follows, so the audit still names them; the tail is never shown. */
	if (memchr(nul2 + 1, '\0', (size_t)(end - nul2 - 1)) != NULL)
		out_malformed(out, "not exactly two NUL separators");
	size_t zlen = (size_t)(nul1 - p), clen = (size_t)(nul2 - nul1 - 1);
	size_t slen = (size_t)(end - nul2 - 1);
	if (zlen > 0) {
		out_str(out, "authzid", p, zlen);
		state_set(st, st->authzid, &st->have_authzid, p, zlen);
	}
	if (clen == 0) {
		out_malformed(out, "empty authcid");
	} else {
		out_str(out, "authcid", nul1 + 1, clen);
		state_set(st, st->user, &st->have_user, nul1 + 1, clen);
	}
	if (secret_name != NULL)
		out_bool(out, secret_name, slen > 0);
	if (slen == 0)
		out_malformed(out, secret_name ? "empty token" : "empty password");
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
		out_unexpected(pl, out);
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
	if (has_nul(pl)) {
		out_malformed(out, "NUL in username");
		return;
	}
	out_str(out, "username", pl->p, pl->n);
	state_set(st, st->user, &st->have_user, pl->p, pl->n);
}

/* The server's prompt ("Username:", "Password:") is not secret. */
static void loginmech_s2c(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	if (pl->n == 0)
		return;
	st->login_pass_asked = contains_nocase(pl->p, pl->n, "pass");
	if (has_nul(pl)) {
		out_malformed(out, "NUL in prompt");
		return;
	}
	out_str(out, "prompt", pl->p, pl->n);
}

/* ---- DIGEST-MD5 (RFC 2831) --------------------------------------------- */

struct kv {
	const unsigned char *key;
	size_t klen;
	const unsigned char *val;
	size_t vlen;
};

static bool digest_is_lws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* RFC 2616 token characters: CHAR except CTLs and separators. */
static bool digest_is_token(unsigned char c)
{
	return c > 0x20 && c < 0x7F && strchr("()<>@,;:\\\"/[]?={}", c) == NULL;
}

/*
 * Reads the next directive of an RFC 2831 §7.1 list starting at *pos in
 * buf[0..n): skips empty list elements (",,") and linear white space,
 * and unquotes a quoted-string value in place (quoted-pair "\x" gives x),
 * which is safe because the unquoted value is never longer and lies at or
 * after where it started. An unquoted value runs to the next comma or
 * white space: stricter than that (token only) would flag real clients
 * that send digest-uri=xmpp/host unquoted. Returns 1 with *kv set, 0 at
 * the end of the list, -1 with *why set on a syntax error. Linear in n
 * however many commas there are.
 */
static int digest_next(unsigned char *buf, size_t n, size_t *pos, struct kv *kv, const char **why)
{
	size_t i = *pos;

	while (i < n && (digest_is_lws(buf[i]) || buf[i] == ','))
		i++;
	if (i == n) {
		*pos = i;
		return 0;
	}
	size_t k = i;
	while (i < n && digest_is_token(buf[i]))
		i++;
	if (i == k) {
		*why = "bad directive name";
		return -1;
	}
	kv->key = buf + k;
	kv->klen = i - k;
	while (i < n && digest_is_lws(buf[i]))
		i++;
	if (i == n || buf[i] != '=') {
		*why = "directive without value";
		return -1;
	}
	i++;
	while (i < n && digest_is_lws(buf[i]))
		i++;
	if (i < n && buf[i] == '"') {
		size_t w = ++i, start = i;
		for (;;) {
			if (i == n) {
				*why = "unterminated quoted string";
				return -1;
			}
			unsigned char c = buf[i++];
			if (c == '"')
				break;
			if (c == '\\') {
				if (i == n) {
					*why = "unterminated quoted string";
					return -1;
				}
				c = buf[i++];
			}
			buf[w++] = c;
		}
		kv->val = buf + start;
		kv->vlen = w - start;
	} else {
		size_t start = i;
		while (i < n && buf[i] != ',' && buf[i] != '"' && !digest_is_lws(buf[i]) &&
		       buf[i] >= 0x20 && buf[i] != 0x7F)
			i++;
		if (i == start) {
			*why = "empty directive value";
			return -1;
		}
		kv->val = buf + start;
		kv->vlen = i - start;
	}
	while (i < n && digest_is_lws(buf[i]))
		i++;
	if (i < n && buf[i] != ',') {
		*why = "junk after directive value";
		return -1;
	}
	*pos = i;
	return 1;
}

/* A directive RFC 2831 allows at most once, remembered by value. */
struct once {
	const char *name;
	const unsigned char *val;
	size_t vlen;
	bool seen;
};

/* Records kv in the table entry named like it. Returns -1 for a second
 * occurrence, 1 if recorded, 0 if the name is not in the table. */
static int once_take(struct once *t, size_t nt, const struct kv *kv)
{
	for (size_t i = 0; i < nt; i++) {
		if (!eq_nocase(kv->key, kv->klen, t[i].name))
			continue;
		if (t[i].seen)
			return -1;
		t[i].seen = true;
		t[i].val = kv->val;
		t[i].vlen = kv->vlen;
		return 1;
	}
	return 0;
}

/* Emits the directive o as a string field named key, if it was present. */
static void once_str(struct sasl_fields *out, const struct once *o, const char *key)
{
	if (o->seen)
		out_str(out, key, o->val, o->vlen);
}

/*
 * Server challenge (RFC 2831 §2.1.1): realm (repeatable, shown
 * comma-joined), nonce (length only: not secret, but noise in a log),
 * qop, charset, algorithm, cipher, maxbuf, stale; or the final
 * "rspauth=..." whose value proves knowledge of the password and is
 * shown only as present.
 */
static void digest_s2c(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	enum { D_NONCE = 0, D_QOP, D_CHARSET, D_ALGORITHM, D_CIPHER, D_MAXBUF, D_STALE, D_RSPAUTH };
	struct once d[] = {
	    [D_NONCE] = {.name = "nonce"},     [D_QOP] = {.name = "qop"},
	    [D_CHARSET] = {.name = "charset"}, [D_ALGORITHM] = {.name = "algorithm"},
	    [D_CIPHER] = {.name = "cipher"},   [D_MAXBUF] = {.name = "maxbuf"},
	    [D_STALE] = {.name = "stale"},     [D_RSPAUTH] = {.name = "rspauth"},
	};
	/* Filled to at most one byte past what value_copy() keeps, so an
	 * overlong list is cut (and gets its "...") there. */
	char realms[SASL_VALUE_MAX - 3];
	size_t rlen = 0, nrealm = 0, pos = 0;
	const char *why = NULL;
	struct kv kv;
	int r;

	(void)st;
	if (pl->n == 0)
		return;
	if (has_nul(pl)) {
		out_malformed(out, "NUL in payload");
		return;
	}
	while ((r = digest_next(pl->p, pl->n, &pos, &kv, &why)) == 1) {
		if (eq_nocase(kv.key, kv.klen, "realm")) {
			if (nrealm++ > 0 && rlen < sizeof(realms))
				realms[rlen++] = ',';
			size_t take = sizeof(realms) - rlen;
			take = kv.vlen < take ? kv.vlen : take;
			memcpy(realms + rlen, kv.val, take);
			rlen += take;
			continue;
		}
		if (once_take(d, sizeof(d) / sizeof(d[0]), &kv) < 0) {
			why = "directive repeated";
			r = -1;
			break;
		}
	}
	if (r < 0) {
		out_malformed(out, why);
		return;
	}
	if (d[D_RSPAUTH].seen) {
		out_bool(out, "rspauth", true);
		return;
	}
	if (nrealm > 0)
		out_str(out, "realm", realms, rlen);
	if (d[D_NONCE].seen)
		out_num(out, "nonce_len", (long long)d[D_NONCE].vlen);
	once_str(out, &d[D_QOP], "qop");
	once_str(out, &d[D_CHARSET], "charset");
	once_str(out, &d[D_ALGORITHM], "algorithm");
	once_str(out, &d[D_CIPHER], "cipher");
	if (d[D_MAXBUF].seen) {
		long long v;
		if (parse_num(d[D_MAXBUF].val, d[D_MAXBUF].vlen, &v))
			out_num(out, "maxbuf", v);
		else
			out_malformed(out, "bad maxbuf");
	}
	if (d[D_STALE].seen)
		out_bool(out, "stale", eq_nocase(d[D_STALE].val, d[D_STALE].vlen, "true"));
	if (!d[D_NONCE].seen)
		out_malformed(out, "challenge without nonce");
	else if (!d[D_ALGORITHM].seen)
		out_malformed(out, "challenge without algorithm");
}

/*
 * Client response (RFC 2831 §2.1.2): username, realm, authzid,
 * digest-uri, qop, nc, the nonce and cnonce by length; never the
 * "response" hash, which allows an offline attack on the password.
 */
static void digest_c2s(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	enum {
		D_USERNAME = 0,
		D_REALM,
		D_AUTHZID,
		D_URI,
		D_QOP,
		D_NC,
		D_NONCE,
		D_CNONCE,
		D_CHARSET,
		D_CIPHER,
		D_MAXBUF,
		D_RESPONSE,
	};
	struct once d[] = {
	    [D_USERNAME] = {.name = "username"}, [D_REALM] = {.name = "realm"},
	    [D_AUTHZID] = {.name = "authzid"},   [D_URI] = {.name = "digest-uri"},
	    [D_QOP] = {.name = "qop"},           [D_NC] = {.name = "nc"},
	    [D_NONCE] = {.name = "nonce"},       [D_CNONCE] = {.name = "cnonce"},
	    [D_CHARSET] = {.name = "charset"},   [D_CIPHER] = {.name = "cipher"},
	    [D_MAXBUF] = {.name = "maxbuf"},     [D_RESPONSE] = {.name = "response"},
	};
	const char *why = NULL;
	size_t pos = 0;
	struct kv kv;
	int r;

	if (pl->n == 0)
		return;
	if (has_nul(pl)) {
		out_malformed(out, "NUL in payload");
		return;
	}
	while ((r = digest_next(pl->p, pl->n, &pos, &kv, &why)) == 1) {
		if (once_take(d, sizeof(d) / sizeof(d[0]), &kv) < 0) {
			why = "directive repeated";
			r = -1;
			break;
		}
	}
	if (r < 0) {
		out_malformed(out, why);
		return;
	}
	if (d[D_USERNAME].seen && d[D_USERNAME].vlen > 0) {
		out_str(out, "username", d[D_USERNAME].val, d[D_USERNAME].vlen);
		state_set(st, st->user, &st->have_user, d[D_USERNAME].val, d[D_USERNAME].vlen);
	}
	once_str(out, &d[D_REALM], "realm");
	if (d[D_AUTHZID].seen && d[D_AUTHZID].vlen > 0) {
		out_str(out, "authzid", d[D_AUTHZID].val, d[D_AUTHZID].vlen);
		state_set(st, st->authzid, &st->have_authzid, d[D_AUTHZID].val, d[D_AUTHZID].vlen);
	}
	once_str(out, &d[D_URI], "digest_uri");
	once_str(out, &d[D_QOP], "qop");
	once_str(out, &d[D_NC], "nc");
	if (d[D_NONCE].seen)
		out_num(out, "nonce_len", (long long)d[D_NONCE].vlen);
	if (d[D_CNONCE].seen)
		out_num(out, "cnonce_len", (long long)d[D_CNONCE].vlen);
	once_str(out, &d[D_CHARSET], "charset");
	once_str(out, &d[D_CIPHER], "cipher");
	if (!d[D_USERNAME].seen || d[D_USERNAME].vlen == 0)
		out_malformed(out, "response without username");
	else if (!d[D_RESPONSE].seen)
		out_malformed(out, "response without response hash");
	else if (!d[D_NONCE].seen || !d[D_CNONCE].seen)
		out_malformed(out, "response without nonce or cnonce");
}

/* ---- GS2 header (RFC 5801 §4), shared by SCRAM and OAUTHBEARER ---------- */

/*
 * Decodes an RFC 5802 saslname ("=2C" for ',', "=3D" for '=') of n bytes
 * at s into dst (room for n). Returns the decoded length, or -1 for any
 * other use of '=' or a truncated escape.
 */
static long saslname_decode(const unsigned char *s, size_t n, unsigned char *dst)
{
	size_t w = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '=') {
			dst[w++] = s[i];
			continue;
		}
		if (n - i < 3)
			return -1;
		/* RFC 5802 5.1 writes them upper case; Prosody takes no other */
		if (s[i + 1] == '2' && s[i + 2] == 'C')
			dst[w++] = ',';
		else if (s[i + 1] == '3' && s[i + 2] == 'D')
			dst[w++] = '=';
		else
			return -1;
		i += 2;
	}
	return (long)w;
}

/* Channel-binding type names (RFC 5056 §7): ALPHA / DIGIT / "." / "-". */
static bool is_cbname_char(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || c == '.' || c == '-';
}

/*
 * Parses the GS2 header "flag,[a=authzid]," at the start of pl and returns
 * the offset just after it, or 0 with the payload marked malformed. The
 * flag is "n", "y" or "p=cb-name"; with want_cb it is emitted as "cb" and
 * kept for sasl_cb_flag(). The authzid is unescaped, emitted and kept;
 * with as_user it is also the exchange's user (OAUTHBEARER carries the
 * user's identity nowhere else).
 */
static size_t gs2_header(struct sasl_state *st, struct payload *pl, struct sasl_fields *out,
                         bool want_cb, bool as_user)
{
	const unsigned char *p = pl->p;
	size_t n = pl->n, i;

	if (n >= 2 && (p[0] == 'n' || p[0] == 'y') && p[1] == ',') {
		i = 2;
	} else if (n >= 2 && p[0] == 'p' && p[1] == '=') {
		i = 2;
		while (i < n && is_cbname_char(p[i]))
			i++;
		if (i == 2 || i == n || p[i] != ',') {
			out_malformed(out, "bad channel-binding type");
			return 0;
		}
		i++;
	} else {
		out_malformed(out, "bad channel-binding flag");
		return 0;
	}
	if (want_cb) {
		out_str(out, "cb", p, i - 1);
		state_set(st, st->cb, &st->have_cb, p, i - 1);
	}
	if (i + 1 < n && p[i] == 'a' && p[i + 1] == '=') {
		size_t start = i + 2;
		const unsigned char *comma = memchr(p + start, ',', n - start);
		if (comma == NULL) {
			out_malformed(out, "unterminated GS2 header");
			return 0;
		}
		long zl = saslname_decode(p + start, (size_t)(comma - p) - start, pl->scratch);
		if (zl < 0) {
			out_malformed(out, "bad '=' escape in authzid");
			return 0;
		}
		if (zl == 0) {
			out_malformed(out, "empty authzid");
			return 0;
		}
		out_str(out, "authzid", pl->scratch, (size_t)zl);
		state_set(st, st->authzid, &st->have_authzid, pl->scratch, (size_t)zl);
		if (as_user)
			state_set(st, st->user, &st->have_user, pl->scratch, (size_t)zl);
		return (size_t)(comma - p) + 1;
	}
	if (i < n && p[i] == ',')
		return i + 1;
	out_malformed(out, "bad GS2 header");
	return 0;
}

/* ---- SCRAM (RFC 5802, RFC 7677, XEP-0474) ------------------------------ */

struct attr {
	unsigned char name;
	const unsigned char *val;
	size_t vlen;
};

/*
 * Reads the attribute "x=value" at *pos of a SCRAM message in buf[0..n)
 * (RFC 5802 §5.1: one letter, '=', a value up to the next comma). *pos
 * ends past n when the message is used up. Returns 1 with *a set, 0 at
 * the end, -1 on a syntax error (a trailing comma included).
 */
static int scram_next(const unsigned char *buf, size_t n, size_t *pos, struct attr *a)
{
	size_t i = *pos;

	if (i > n)
		return 0;
	if (i + 2 > n || !is_alpha(buf[i]) || buf[i + 1] != '=')
		return -1;
	a->name = buf[i];
	a->val = buf + i + 2;
	const unsigned char *comma = memchr(a->val, ',', n - i - 2);
	a->vlen = comma ? (size_t)(comma - a->val) : n - i - 2;
	*pos = comma ? (size_t)(comma - buf) + 1 : n + 1;
	return 1;
}

/* client-first-message: gs2-header [m=ext,] n=username,r=nonce[,ext...] */
static void scram_client_first(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	size_t pos = gs2_header(st, pl, out, true, false);
	struct attr a;
	int r;

	if (pos == 0)
		return;
	r = scram_next(pl->p, pl->n, &pos, &a);
	if (r == 1 && a.name == 'm') {
		out_bool(out, "reserved_mext", true);
		r = scram_next(pl->p, pl->n, &pos, &a);
	}
	if (r != 1 || a.name != 'n') {
		out_malformed(out, "no username (n=)");
		return;
	}
	long ul = saslname_decode(a.val, a.vlen, pl->scratch);
	/* Prosody's pattern takes the text after an "n=" inside an escaped
	 * name ("n=xn=2Cmallory" is "2Cmallory" there): an escaped name is
	 * not one every server reads alike */
	if (memchr(a.val, '=', a.vlen) != NULL)
		st->unsure = true;
	if (ul < 0) {
		out_malformed(out, "bad '=' escape in username");
	} else if (ul == 0) {
		out_malformed(out, "empty username");
	} else {
		out_str(out, "username", pl->scratch, (size_t)ul);
		state_set(st, st->user, &st->have_user, pl->scratch, (size_t)ul);
	}
	if (scram_next(pl->p, pl->n, &pos, &a) != 1 || a.name != 'r') {
		out_malformed(out, "no client nonce (r=)");
		return;
	}
	out_num(out, "cnonce_len", (long long)a.vlen);
	if (a.vlen == 0)
		out_malformed(out, "empty client nonce");
	/* extensions: unknown letters only. A defined one again (a second
	 * n=, as in "n=alice,r=x,n=mallory") is read by some servers in
	 * place of the first: malformed, so identity rules refuse it. */
	while ((r = scram_next(pl->p, pl->n, &pos, &a)) == 1)
		if (strchr("aceimnprsv", a.name) != NULL)
			out_malformed(out, "a defined attribute repeated or out of order");
	if (r < 0)
		out_malformed(out, "bad attribute syntax");
}

/* "e=server-error-value" (RFC 5802 §7): the reason is not secret. */
static void scram_error(const struct payload *pl, struct sasl_fields *out)
{
	const unsigned char *v = pl->p + 2;
	const unsigned char *comma = memchr(v, ',', pl->n - 2);
	out_str(out, "error", v, comma ? (size_t)(comma - v) : pl->n - 2);
}

/*
 * server-first-message: [m=ext,] r=nonce,s=salt,i=count[,ext...]. A "d"
 * or "h" extension is XEP-0474 downgrade protection ("d" up to 0.2,
 * "h" since 0.3): worth logging because a client that checks it fails
 * when the proxy has filtered the mechanism list.
 */
static void scram_server_first(struct payload *pl, struct sasl_fields *out)
{
	size_t pos = 0;
	struct attr a;
	bool dp = false;
	int r = scram_next(pl->p, pl->n, &pos, &a);

	if (r == 1 && a.name == 'm') {
		out_bool(out, "reserved_mext", true);
		r = scram_next(pl->p, pl->n, &pos, &a);
	}
	if (r != 1 || a.name != 'r' || a.vlen == 0) {
		out_malformed(out, "no nonce (r=)");
		return;
	}
	out_num(out, "nonce_len", (long long)a.vlen);
	if (scram_next(pl->p, pl->n, &pos, &a) != 1 || a.name != 's') {
		out_malformed(out, "no salt (s=)");
		return;
	}
	long sl = b64_decode((const char *)a.val, a.vlen, pl->scratch);
	if (sl <= 0) {
		out_malformed(out, sl < 0 ? "salt is not base64" : "empty salt");
		return;
	}
	out_num(out, "salt_len", sl);
	long long iter;
	if (scram_next(pl->p, pl->n, &pos, &a) != 1 || a.name != 'i') {
		out_malformed(out, "no iteration count (i=)");
		return;
	}
	if (!parse_num(a.val, a.vlen, &iter) || iter == 0) {
		out_malformed(out, "bad iteration count");
		return;
	}
	out_num(out, "iterations", iter);
	while ((r = scram_next(pl->p, pl->n, &pos, &a)) == 1)
		if (a.name == 'd' || a.name == 'h')
			dp = true;
	out_bool(out, "downgrade_protection", dp);
	if (r < 0)
		out_malformed(out, "bad attribute syntax");
}

/*
 * client-final-message: c=cbind,r=nonce[,ext...],p=proof. The proof is
 * only reported as present; c= is shown by decoded length (the GS2 header
 * plus any channel-binding data).
 */
static void scram_client_final(struct payload *pl, struct sasl_fields *out)
{
	size_t pos = 0;
	struct attr a;
	bool proof = false;
	int r;

	if (scram_next(pl->p, pl->n, &pos, &a) != 1 || a.name != 'c') {
		out_malformed(out, "no channel binding (c=)");
		return;
	}
	long cl = b64_decode((const char *)a.val, a.vlen, pl->scratch);
	if (cl < 0) {
		out_malformed(out, "channel binding is not base64");
		return;
	}
	out_num(out, "cb_data_len", cl);
	if (scram_next(pl->p, pl->n, &pos, &a) != 1 || a.name != 'r') {
		out_malformed(out, "no nonce (r=)");
		return;
	}
	out_num(out, "nonce_len", (long long)a.vlen);
	while ((r = scram_next(pl->p, pl->n, &pos, &a)) == 1) {
		if (proof) {
			out_malformed(out, "attribute after proof");
			break;
		}
		if (a.name == 'p')
			proof = a.vlen > 0;
	}
	out_bool(out, "proof", proof);
	if (r < 0)
		out_malformed(out, "bad attribute syntax");
	if (!proof)
		out_malformed(out, "no proof (p=)");
}

/* server-final-message: v=signature or e=error. The signature is shown
 * as present only: like the proof, it is derived from the password. */
static void scram_server_final(struct payload *pl, struct sasl_fields *out)
{
	size_t pos = 0;
	struct attr a;

	if (pl->n >= 2 && pl->p[0] == 'e' && pl->p[1] == '=') {
		scram_error(pl, out);
		return;
	}
	if (scram_next(pl->p, pl->n, &pos, &a) == 1 && a.name == 'v' && a.vlen > 0) {
		out_bool(out, "server_signature", true);
		return;
	}
	out_malformed(out, "neither verifier (v=) nor error (e=)");
}

static void scram_c2s(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	if (pl->n == 0)
		return;
	if (st->c2s_n > 2) {
		out_unexpected(pl, out);
		return;
	}
	if (has_nul(pl)) {
		out_malformed(out, "NUL in payload");
		return;
	}
	if (st->c2s_n == 1)
		scram_client_first(st, pl, out);
	else
		scram_client_final(pl, out);
}

static void scram_s2c(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	if (pl->n == 0)
		return;
	if (st->s2c_n > 2) {
		out_unexpected(pl, out);
		return;
	}
	if (has_nul(pl)) {
		out_malformed(out, "NUL in payload");
		return;
	}
	if (st->s2c_n == 1 && !(pl->n >= 2 && pl->p[0] == 'e' && pl->p[1] == '='))
		scram_server_first(pl, out);
	else
		scram_server_final(pl, out);
}

/* ---- ANONYMOUS (RFC 4505) and EXTERNAL (RFC 4422 Appendix A) ----------- */

/* The trace is whatever the client chose to say: flagged as such so no
 * reader mistakes it for an identity the server vouched for. */
static void anonymous_c2s(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	if (pl->n == 0)
		return;
	if (st->c2s_n > 1) {
		out_unexpected(pl, out);
		return;
	}
	if (has_nul(pl)) {
		out_malformed(out, "NUL in trace");
		return;
	}
	out_str(out, "trace", pl->p, pl->n);
	out_bool(out, "client_supplied", true);
}

/* The authzid, empty meaning "derive it from my credentials". */
static void external_c2s(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	if (st->c2s_any > 1) {
		if (pl->n > 0)
			out_unexpected(pl, out);
		return;
	}
	if (has_nul(pl)) {
		out_malformed(out, "NUL in authzid");
		return;
	}
	out_str(out, "authzid", pl->p, pl->n);
	if (pl->n > 0)
		state_set(st, st->authzid, &st->have_authzid, pl->p, pl->n);
}

/* ---- OAUTHBEARER (RFC 7628) -------------------------------------------- */

/*
 * client-resp: gs2-header %x01 *(key=value %x01) %x01, or the lone %x01 a
 * client sends to end the exchange after an error. Known keys host and
 * port are shown; auth ("Bearer <token>") only as present; unknown keys
 * not at all, since they may be credentials too.
 */
static void oauthbearer_c2s(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	const unsigned char *p = pl->p;
	size_t n = pl->n;
	bool token = false;

	if (n == 0)
		return;
	if (n == 1 && p[0] == 0x01) {
		out_bool(out, "dummy_response", true);
		return;
	}
	if (has_nul(pl)) {
		out_malformed(out, "NUL in payload");
		return;
	}
	size_t i = gs2_header(st, pl, out, false, true);
	if (i == 0)
		return;
	if (i == n || p[i] != 0x01) {
		out_malformed(out, "no key/value separator after GS2 header");
		return;
	}
	i++;
	for (;;) {
		if (i == n) {
			out_malformed(out, "unterminated key/value list");
			break;
		}
		if (p[i] == 0x01) {
			if (i + 1 != n)
				out_malformed(out, "data after key/value list");
			break;
		}
		size_t k = i;
		while (i < n && is_alpha(p[i]))
			i++;
		if (i == k || i == n || p[i] != '=') {
			out_malformed(out, "bad key");
			break;
		}
		size_t klen = i - k, v = ++i;
		const unsigned char *sep = memchr(p + v, 0x01, n - v);
		if (sep == NULL) {
			out_malformed(out, "unterminated key/value list");
			break;
		}
		size_t vlen = (size_t)(sep - p) - v;
		i = (size_t)(sep - p) + 1;
		if (eq_nocase(p + k, klen, "auth")) {
			token = true;
		} else if (eq_nocase(p + k, klen, "host")) {
			out_str(out, "host", p + v, vlen);
		} else if (eq_nocase(p + k, klen, "port")) {
			long long port;
			if (parse_num(p + v, vlen, &port) && port <= 65535)
				out_num(out, "port", port);
			else
				out_malformed(out, "bad port");
		}
	}
	if (token)
		out_bool(out, "token", true);
	else
		out_malformed(out, "no auth key");
}

/*
 * Server error (RFC 7628 §3.2.2): a JSON object whose "status" is shown.
 * Not a JSON parser: the first "status" key's plain string value is
 * enough for a log, and anything odd simply leaves it out.
 */
static void oauthbearer_s2c(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	const unsigned char *p = pl->p;
	size_t n = pl->n;
	static const char key[] = "\"status\"";

	(void)st;
	if (n == 0)
		return;
	out_num(out, "len", (long long)n);
	if (has_nul(pl)) {
		out_malformed(out, "NUL in payload");
		return;
	}
	for (size_t i = 0; i + sizeof(key) - 1 <= n; i++) {
		if (memcmp(p + i, key, sizeof(key) - 1) != 0)
			continue;
		size_t j = i + sizeof(key) - 1;
		while (j < n && (p[j] == ' ' || p[j] == '\t' || p[j] == '\r' || p[j] == '\n'))
			j++;
		if (j == n || p[j] != ':')
			continue;
		j++;
		while (j < n && (p[j] == ' ' || p[j] == '\t' || p[j] == '\r' || p[j] == '\n'))
			j++;
		if (j == n || p[j] != '"')
			continue;
		size_t s = ++j;
		while (j < n && p[j] != '"' && p[j] != '\\')
			j++;
		if (j < n && p[j] == '"')
			out_str(out, "status", p + s, j - s);
		break;
	}
}

/* ---- HT-* (XEP-0484 FAST, draft-schmaus-kitten-sasl-ht) ---------------- */

/* initiator-msg = authcid NUL initiator-hashed-token. The hashed token is
 * binary (an HMAC), so only the first NUL separates. */
static void ht_c2s(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	if (pl->n == 0)
		return;
	if (st->c2s_n > 1) {
		out_unexpected(pl, out);
		return;
	}
	const unsigned char *nul = memchr(pl->p, '\0', pl->n);
	if (nul == NULL) {
		out_malformed(out, "no NUL separator");
		return;
	}
	size_t alen = (size_t)(nul - pl->p);
	if (alen == 0) {
		out_malformed(out, "empty authcid");
	} else {
		out_str(out, "authcid", pl->p, alen);
		state_set(st, st->user, &st->have_user, pl->p, alen);
	}
	bool token = pl->n - alen - 1 > 0;
	out_bool(out, "token", token);
	if (!token)
		out_malformed(out, "empty hashed token");
}

/* responder-msg: the server's HMAC, shown only as present. */
static void ht_s2c(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	if (pl->n == 0)
		return;
	if (st->s2c_n > 1) {
		out_unexpected(pl, out);
		return;
	}
	out_bool(out, "responder_proof", true);
}

/* ---- CRAM-MD5 (RFC 2195) ---------------------------------------------- */

/* The server's challenge is a msg-id: its length only (it is a nonce). */
static void cram_s2c(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	(void)st;
	if (pl->n > 0)
		out_num(out, "challenge_len", (long long)pl->n);
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
	if (sp <= 1 || has_nul(pl)) {
		out_malformed(out, "expected \"username digest\"");
		return;
	}
	out_str(out, "username", pl->p, sp - 1);
	state_set(st, st->user, &st->have_user, pl->p, sp - 1);
	out_bool(out, "digest", pl->n - sp == 32);
	if (pl->n - sp != 32)
		out_malformed(out, "digest is not 32 hex digits");
}

/* ---- any other mechanism ----------------------------------------------- */

static void other_any(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	(void)st;
	out_num(out, "len", (long long)pl->n);
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
    [MECH_DIGEST_MD5] = {"DIGEST-MD5", false, digest_c2s, digest_s2c},
    [MECH_SCRAM] = {"SCRAM-", true, scram_c2s, scram_s2c},
    [MECH_ANONYMOUS] = {"ANONYMOUS", false, anonymous_c2s, none_s2c},
    [MECH_EXTERNAL] = {"EXTERNAL", false, external_c2s, none_s2c},
    [MECH_OAUTHBEARER] = {"OAUTHBEARER", false, oauthbearer_c2s, oauthbearer_s2c},
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
		out_malformed(out, "too many steps");
		return 0;
	}
	if (!has_payload)
		return 0;
	if (len > MAX_SASL_PAYLOAD) {
		out_malformed(out, "too large");
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
		out_malformed(out, "invalid base64");
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
