/*
 * The DIGEST-MD5 decoder (RFC 2831): key=value lists, the response hash
 * never shown. Part of sasl.c's decoder table.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sasl_int.h"

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
		if (!sasl_eq_nocase(kv->key, kv->klen, t[i].name))
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
		sasl_out_str(out, key, o->val, o->vlen);
}

/*
 * Server challenge (RFC 2831 §2.1.1): realm (repeatable, shown
 * comma-joined), nonce (length only: not secret, but noise in a log),
 * qop, charset, algorithm, cipher, maxbuf, stale; or the final
 * "rspauth=..." whose value proves knowledge of the password and is
 * shown only as present.
 */
void sasl_digest_s2c(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	enum { D_NONCE = 0, D_QOP, D_CHARSET, D_ALGORITHM, D_CIPHER, D_MAXBUF, D_STALE, D_RSPAUTH };
	struct once d[] = {
	    [D_NONCE] = {.name = "nonce"},     [D_QOP] = {.name = "qop"},
	    [D_CHARSET] = {.name = "charset"}, [D_ALGORITHM] = {.name = "algorithm"},
	    [D_CIPHER] = {.name = "cipher"},   [D_MAXBUF] = {.name = "maxbuf"},
	    [D_STALE] = {.name = "stale"},     [D_RSPAUTH] = {.name = "rspauth"},
	};
	/* Filled to at most one byte past what sasl_value_copy() keeps, so an
	 * overlong list is cut (and gets its "...") there. */
	char realms[SASL_VALUE_MAX - 3];
	size_t rlen = 0, nrealm = 0, pos = 0;
	const char *why = NULL;
	struct kv kv;
	int r;

	(void)st;
	if (pl->n == 0)
		return;
	if (sasl_has_nul(pl)) {
		sasl_out_malformed(out, "NUL in payload");
		return;
	}
	while ((r = digest_next(pl->p, pl->n, &pos, &kv, &why)) == 1) {
		if (sasl_eq_nocase(kv.key, kv.klen, "realm")) {
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
		sasl_out_malformed(out, why);
		return;
	}
	if (d[D_RSPAUTH].seen) {
		sasl_out_bool(out, "rspauth", true);
		return;
	}
	if (nrealm > 0)
		sasl_out_str(out, "realm", realms, rlen);
	if (d[D_NONCE].seen)
		sasl_out_num(out, "nonce_len", (long long)d[D_NONCE].vlen);
	once_str(out, &d[D_QOP], "qop");
	once_str(out, &d[D_CHARSET], "charset");
	once_str(out, &d[D_ALGORITHM], "algorithm");
	once_str(out, &d[D_CIPHER], "cipher");
	if (d[D_MAXBUF].seen) {
		long long v;
		if (sasl_parse_num(d[D_MAXBUF].val, d[D_MAXBUF].vlen, &v))
			sasl_out_num(out, "maxbuf", v);
		else
			sasl_out_malformed(out, "bad maxbuf");
	}
	if (d[D_STALE].seen)
		sasl_out_bool(out, "stale",
		              sasl_eq_nocase(d[D_STALE].val, d[D_STALE].vlen, "true"));
	if (!d[D_NONCE].seen)
		sasl_out_malformed(out, "challenge without nonce");
	else if (!d[D_ALGORITHM].seen)
		sasl_out_malformed(out, "challenge without algorithm");
}

/*
 * Client response (RFC 2831 §2.1.2): username, realm, authzid,
 * digest-uri, qop, nc, the nonce and cnonce by length; never the
 * "response" hash, which allows an offline attack on the password.
 */
void sasl_digest_c2s(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
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
	if (sasl_has_nul(pl)) {
		sasl_out_malformed(out, "NUL in payload");
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
		sasl_out_malformed(out, why);
		return;
	}
	if (d[D_USERNAME].seen && d[D_USERNAME].vlen > 0) {
		sasl_out_str(out, "username", d[D_USERNAME].val, d[D_USERNAME].vlen);
		sasl_state_set(st, st->user, &st->have_user, d[D_USERNAME].val, d[D_USERNAME].vlen);
	}
	once_str(out, &d[D_REALM], "realm");
	if (d[D_AUTHZID].seen && d[D_AUTHZID].vlen > 0) {
		sasl_out_str(out, "authzid", d[D_AUTHZID].val, d[D_AUTHZID].vlen);
		sasl_state_set(st, st->authzid, &st->have_authzid, d[D_AUTHZID].val,
		               d[D_AUTHZID].vlen);
	}
	once_str(out, &d[D_URI], "digest_uri");
	once_str(out, &d[D_QOP], "qop");
	once_str(out, &d[D_NC], "nc");
	if (d[D_NONCE].seen)
		sasl_out_num(out, "nonce_len", (long long)d[D_NONCE].vlen);
	if (d[D_CNONCE].seen)
		sasl_out_num(out, "cnonce_len", (long long)d[D_CNONCE].vlen);
	once_str(out, &d[D_CHARSET], "charset");
	once_str(out, &d[D_CIPHER], "cipher");
	if (!d[D_USERNAME].seen || d[D_USERNAME].vlen == 0)
		sasl_out_malformed(out, "response without username");
	else if (!d[D_RESPONSE].seen)
		sasl_out_malformed(out, "response without response hash");
	else if (!d[D_NONCE].seen || !d[D_CNONCE].seen)
		sasl_out_malformed(out, "response without nonce or cnonce");
}
