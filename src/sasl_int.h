/*
 * What sasl.c shares with the decoders in sasl_digest.c and sasl_scram.c:
 * the exchange's state, one decoded payload, and the output and parsing
 * helpers every decoder uses. Nothing outside sasl*.c includes it.
 */
#ifndef XI_SASL_INT_H
#define XI_SASL_INT_H

#include <stdbool.h>
#include <stddef.h>

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

bool sasl_eq_nocase(const unsigned char *s, size_t n, const char *lit);
bool sasl_has_nul(const struct payload *pl);
bool sasl_is_alpha(unsigned char c);
bool sasl_is_digit(unsigned char c);
void sasl_out_bool(struct sasl_fields *out, const char *key, bool v);
void sasl_out_malformed(struct sasl_fields *out, const char *reason);
void sasl_out_num(struct sasl_fields *out, const char *key, long long v);
void sasl_out_str(struct sasl_fields *out, const char *key, const void *v, size_t n);
void sasl_out_unexpected(const struct payload *pl, struct sasl_fields *out);
bool sasl_parse_num(const unsigned char *s, size_t n, long long *v);
void sasl_state_set(struct sasl_state *st, char *dst, bool *have, const void *v, size_t n);
void sasl_value_copy(char *dst, const unsigned char *v, size_t n);
size_t sasl_gs2_header(struct sasl_state *st, struct payload *pl, struct sasl_fields *out,
                       bool want_cb, bool as_user);
void sasl_digest_c2s(struct sasl_state *st, struct payload *pl, struct sasl_fields *out);
void sasl_digest_s2c(struct sasl_state *st, struct payload *pl, struct sasl_fields *out);
void sasl_scram_c2s(struct sasl_state *st, struct payload *pl, struct sasl_fields *out);
void sasl_scram_s2c(struct sasl_state *st, struct payload *pl, struct sasl_fields *out);
void sasl_oauthbearer_c2s(struct sasl_state *st, struct payload *pl, struct sasl_fields *out);
void sasl_oauthbearer_s2c(struct sasl_state *st, struct payload *pl, struct sasl_fields *out);

#endif
