/*
 * The GS2 header (RFC 5801) and the decoders that start with one: SCRAM
 * (RFC 5802, RFC 7677, XEP-0474) and OAUTHBEARER (RFC 7628). Part of
 * sasl.c's decoder table.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "b64.h"
#include "sasl_int.h"

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
	return sasl_is_alpha(c) || sasl_is_digit(c) || c == '.' || c == '-';
}

/*
 * Parses the GS2 header "flag,[a=authzid]," at the start of pl and returns
 * the offset just after it, or 0 with the payload marked malformed. The
 * flag is "n", "y" or "p=cb-name"; with want_cb it is emitted as "cb" and
 * kept for sasl_cb_flag(). The authzid is unescaped, emitted and kept;
 * with as_user it is also the exchange's user (OAUTHBEARER carries the
 * user's identity nowhere else).
 */
size_t sasl_gs2_header(struct sasl_state *st, struct payload *pl, struct sasl_fields *out,
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
			sasl_out_malformed(out, "bad channel-binding type");
			return 0;
		}
		i++;
	} else {
		sasl_out_malformed(out, "bad channel-binding flag");
		return 0;
	}
	if (want_cb) {
		sasl_out_str(out, "cb", p, i - 1);
		sasl_state_set(st, st->cb, &st->have_cb, p, i - 1);
	}
	if (i + 1 < n && p[i] == 'a' && p[i + 1] == '=') {
		size_t start = i + 2;
		const unsigned char *comma = memchr(p + start, ',', n - start);
		if (comma == NULL) {
			sasl_out_malformed(out, "unterminated GS2 header");
			return 0;
		}
		long zl = saslname_decode(p + start, (size_t)(comma - p) - start, pl->scratch);
		if (zl < 0) {
			sasl_out_malformed(out, "bad '=' escape in authzid");
			return 0;
		}
		if (zl == 0) {
			sasl_out_malformed(out, "empty authzid");
			return 0;
		}
		sasl_out_str(out, "authzid", pl->scratch, (size_t)zl);
		sasl_state_set(st, st->authzid, &st->have_authzid, pl->scratch, (size_t)zl);
		if (as_user)
			sasl_state_set(st, st->user, &st->have_user, pl->scratch, (size_t)zl);
		return (size_t)(comma - p) + 1;
	}
	if (i < n && p[i] == ',')
		return i + 1;
	sasl_out_malformed(out, "bad GS2 header");
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
	if (i + 2 > n || !sasl_is_alpha(buf[i]) || buf[i + 1] != '=')
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
	size_t pos = sasl_gs2_header(st, pl, out, true, false);
	struct attr a;
	int r;

	if (pos == 0)
		return;
	r = scram_next(pl->p, pl->n, &pos, &a);
	if (r == 1 && a.name == 'm') {
		sasl_out_bool(out, "reserved_mext", true);
		r = scram_next(pl->p, pl->n, &pos, &a);
	}
	if (r != 1 || a.name != 'n') {
		sasl_out_malformed(out, "no username (n=)");
		return;
	}
	long ul = saslname_decode(a.val, a.vlen, pl->scratch);
	/* Prosody's pattern takes the text after an "n=" inside an escaped
	 * name ("n=xn=2Cmallory" is "2Cmallory" there): an escaped name is
	 * not one every server reads alike */
	if (memchr(a.val, '=', a.vlen) != NULL)
		st->unsure = true;
	if (ul < 0) {
		sasl_out_malformed(out, "bad '=' escape in username");
	} else if (ul == 0) {
		sasl_out_malformed(out, "empty username");
	} else {
		sasl_out_str(out, "username", pl->scratch, (size_t)ul);
		sasl_state_set(st, st->user, &st->have_user, pl->scratch, (size_t)ul);
	}
	if (scram_next(pl->p, pl->n, &pos, &a) != 1 || a.name != 'r') {
		sasl_out_malformed(out, "no client nonce (r=)");
		return;
	}
	sasl_out_num(out, "cnonce_len", (long long)a.vlen);
	if (a.vlen == 0)
		sasl_out_malformed(out, "empty client nonce");
	/* extensions: unknown letters only. A defined one again (a second
	 * n=, as in "n=alice,r=x,n=mallory") is read by some servers in
	 * place of the first: malformed, so identity rules refuse it. */
	while ((r = scram_next(pl->p, pl->n, &pos, &a)) == 1)
		if (strchr("aceimnprsv", a.name) != NULL)
			sasl_out_malformed(out, "a defined attribute repeated or out of order");
	if (r < 0)
		sasl_out_malformed(out, "bad attribute syntax");
}

/* "e=server-error-value" (RFC 5802 §7): the reason is not secret. */
static void scram_error(const struct payload *pl, struct sasl_fields *out)
{
	const unsigned char *v = pl->p + 2;
	const unsigned char *comma = memchr(v, ',', pl->n - 2);
	sasl_out_str(out, "error", v, comma ? (size_t)(comma - v) : pl->n - 2);
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
		sasl_out_bool(out, "reserved_mext", true);
		r = scram_next(pl->p, pl->n, &pos, &a);
	}
	if (r != 1 || a.name != 'r' || a.vlen == 0) {
		sasl_out_malformed(out, "no nonce (r=)");
		return;
	}
	sasl_out_num(out, "nonce_len", (long long)a.vlen);
	if (scram_next(pl->p, pl->n, &pos, &a) != 1 || a.name != 's') {
		sasl_out_malformed(out, "no salt (s=)");
		return;
	}
	long sl = b64_decode((const char *)a.val, a.vlen, pl->scratch);
	if (sl <= 0) {
		sasl_out_malformed(out, sl < 0 ? "salt is not base64" : "empty salt");
		return;
	}
	sasl_out_num(out, "salt_len", sl);
	long long iter;
	if (scram_next(pl->p, pl->n, &pos, &a) != 1 || a.name != 'i') {
		sasl_out_malformed(out, "no iteration count (i=)");
		return;
	}
	if (!sasl_parse_num(a.val, a.vlen, &iter) || iter == 0) {
		sasl_out_malformed(out, "bad iteration count");
		return;
	}
	sasl_out_num(out, "iterations", iter);
	while ((r = scram_next(pl->p, pl->n, &pos, &a)) == 1)
		if (a.name == 'd' || a.name == 'h')
			dp = true;
	sasl_out_bool(out, "downgrade_protection", dp);
	if (r < 0)
		sasl_out_malformed(out, "bad attribute syntax");
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
		sasl_out_malformed(out, "no channel binding (c=)");
		return;
	}
	long cl = b64_decode((const char *)a.val, a.vlen, pl->scratch);
	if (cl < 0) {
		sasl_out_malformed(out, "channel binding is not base64");
		return;
	}
	sasl_out_num(out, "cb_data_len", cl);
	if (scram_next(pl->p, pl->n, &pos, &a) != 1 || a.name != 'r') {
		sasl_out_malformed(out, "no nonce (r=)");
		return;
	}
	sasl_out_num(out, "nonce_len", (long long)a.vlen);
	while ((r = scram_next(pl->p, pl->n, &pos, &a)) == 1) {
		if (proof) {
			sasl_out_malformed(out, "attribute after proof");
			break;
		}
		if (a.name == 'p')
			proof = a.vlen > 0;
	}
	sasl_out_bool(out, "proof", proof);
	if (r < 0)
		sasl_out_malformed(out, "bad attribute syntax");
	if (!proof)
		sasl_out_malformed(out, "no proof (p=)");
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
		sasl_out_bool(out, "server_signature", true);
		return;
	}
	sasl_out_malformed(out, "neither verifier (v=) nor error (e=)");
}

void sasl_scram_c2s(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	if (pl->n == 0)
		return;
	if (st->c2s_n > 2) {
		sasl_out_unexpected(pl, out);
		return;
	}
	if (sasl_has_nul(pl)) {
		sasl_out_malformed(out, "NUL in payload");
		return;
	}
	if (st->c2s_n == 1)
		scram_client_first(st, pl, out);
	else
		scram_client_final(pl, out);
}

void sasl_scram_s2c(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	if (pl->n == 0)
		return;
	if (st->s2c_n > 2) {
		sasl_out_unexpected(pl, out);
		return;
	}
	if (sasl_has_nul(pl)) {
		sasl_out_malformed(out, "NUL in payload");
		return;
	}
	if (st->s2c_n == 1 && !(pl->n >= 2 && pl->p[0] == 'e' && pl->p[1] == '='))
		scram_server_first(pl, out);
	else
		scram_server_final(pl, out);
}

/* ---- OAUTHBEARER (RFC 7628) -------------------------------------------- */

/*
 * client-resp: gs2-header %x01 *(key=value %x01) %x01, or the lone %x01 a
 * client sends to end the exchange after an error. Known keys host and
 * port are shown; auth ("Bearer <token>") only as present; unknown keys
 * not at all, since they may be credentials too.
 */
void sasl_oauthbearer_c2s(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	const unsigned char *p = pl->p;
	size_t n = pl->n;
	bool token = false;

	if (n == 0)
		return;
	if (n == 1 && p[0] == 0x01) {
		sasl_out_bool(out, "dummy_response", true);
		return;
	}
	if (sasl_has_nul(pl)) {
		sasl_out_malformed(out, "NUL in payload");
		return;
	}
	size_t i = sasl_gs2_header(st, pl, out, false, true);
	if (i == 0)
		return;
	if (i == n || p[i] != 0x01) {
		sasl_out_malformed(out, "no key/value separator after GS2 header");
		return;
	}
	i++;
	for (;;) {
		if (i == n) {
			sasl_out_malformed(out, "unterminated key/value list");
			break;
		}
		if (p[i] == 0x01) {
			if (i + 1 != n)
				sasl_out_malformed(out, "data after key/value list");
			break;
		}
		size_t k = i;
		while (i < n && sasl_is_alpha(p[i]))
			i++;
		if (i == k || i == n || p[i] != '=') {
			sasl_out_malformed(out, "bad key");
			break;
		}
		size_t klen = i - k, v = ++i;
		const unsigned char *sep = memchr(p + v, 0x01, n - v);
		if (sep == NULL) {
			sasl_out_malformed(out, "unterminated key/value list");
			break;
		}
		size_t vlen = (size_t)(sep - p) - v;
		i = (size_t)(sep - p) + 1;
		if (sasl_eq_nocase(p + k, klen, "auth")) {
			token = true;
		} else if (sasl_eq_nocase(p + k, klen, "host")) {
			sasl_out_str(out, "host", p + v, vlen);
		} else if (sasl_eq_nocase(p + k, klen, "port")) {
			long long port;
			if (sasl_parse_num(p + v, vlen, &port) && port <= 65535)
				sasl_out_num(out, "port", port);
			else
				sasl_out_malformed(out, "bad port");
		}
	}
	if (token)
		sasl_out_bool(out, "token", true);
	else
		sasl_out_malformed(out, "no auth key");
}

/*
 * Server error (RFC 7628 §3.2.2): a JSON object whose "status" is shown.
 * Not a JSON parser: the first "status" key's plain string value is
 * enough for a log, and anything odd simply leaves it out.
 */
void sasl_oauthbearer_s2c(struct sasl_state *st, struct payload *pl, struct sasl_fields *out)
{
	const unsigned char *p = pl->p;
	size_t n = pl->n;
	static const char key[] = "\"status\"";

	(void)st;
	if (n == 0)
		return;
	sasl_out_num(out, "len", (long long)n);
	if (sasl_has_nul(pl)) {
		sasl_out_malformed(out, "NUL in payload");
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
			sasl_out_str(out, "status", p + s, j - s);
		break;
	}
}
