/*
 * Pure decoders of SASL payloads: base64 in, non-secret fields out. No I/O,
 * no logging. Secrets (passwords, SCRAM proofs, DIGEST-MD5 response hashes,
 * tokens) are never copied out of the decoder's stack frame, and scrubbed
 * there with OPENSSL_cleanse.
 */
#ifndef XI_SASL_H
#define XI_SASL_H

#include <stdbool.h>
#include <stddef.h>

#define SASL_MAX_FIELDS 20
#define SASL_KEY_MAX 24
#define SASL_VALUE_MAX 512 /* longer values are cut and end in "..." */

enum sasl_dir {
	SASL_C2S = 0, /* auth (initial response) and response */
	SASL_S2C,     /* challenge, success (additional data) */
};

enum sasl_type {
	SASL_STR = 0,
	SASL_NUM,
	SASL_BOOL,
};

struct sasl_field {
	char key[SASL_KEY_MAX];
	enum sasl_type type;
	char str[SASL_VALUE_MAX]; /* SASL_STR: NUL-terminated, may hold any byte but NUL */
	long long num;            /* SASL_NUM; SASL_BOOL: 0 or 1 */
};

/* What one payload revealed, in the order fields should be logged. */
struct sasl_fields {
	struct sasl_field f[SASL_MAX_FIELDS];
	size_t n;
	bool malformed;
	char reason[96]; /* why malformed, no payload bytes in it */
};

struct sasl_state;

/* State for one exchange of mechanism (any case; kept upper-cased).
 * NULL on out of memory. */
struct sasl_state *sasl_new(const char *mechanism);
void sasl_free(struct sasl_state *st);

/*
 * Decodes the next payload of the exchange (b64 as it appeared in the
 * element's text, possibly empty, "=" for an empty payload; has_payload is
 * false when the element had no text at all). Fills out (reset first) with
 * the fields of this step. Never fails on hostile input: a malformed
 * payload sets out->malformed and out->reason. Returns 0, or -1 when out
 * of memory.
 */
int sasl_step(struct sasl_state *st, enum sasl_dir dir, const char *b64, size_t len,
              bool has_payload, struct sasl_fields *out);

/* What the proxy can tell of the identity the server will see. Policy on
 * identities is only sound on SASL_ID_KNOWN: servers decode more loosely
 * than these decoders (Prosody ignores a third NUL in PLAIN, reads SCRAM
 * GS2 headers like "n,x,"), so a payload they reject may still log
 * someone in there. */
enum sasl_identity {
	SASL_ID_PENDING = 0, /* no client payload has carried it yet */
	SASL_ID_KNOWN,       /* sasl_user() (and sasl_authzid()) as the server reads them */
	SASL_ID_NONE,        /* the mechanism names nobody the proxy can check: ANONYMOUS,
	                        EXTERNAL (the certificate is the proxy's), unknown ones,
	                        OAUTHBEARER without a=, */
	SASL_ID_AMBIGUOUS,   /* the payload that should name it was malformed, the name
	                        was cut at SASL_VALUE_MAX or escaped (SCRAM '='), or a
	                        later payload named someone else */
};
enum sasl_identity sasl_identity(const struct sasl_state *st);

/* The identity the exchange revealed so far, for the login record and
 * policy: authcid/username, or NULL. */
const char *sasl_user(const struct sasl_state *st);
/* The authzid revealed so far, or NULL. */
const char *sasl_authzid(const struct sasl_state *st);
/* The SCRAM GS2 channel-binding flag ("n", "y", "p=tls-exporter"), or NULL. */
const char *sasl_cb_flag(const struct sasl_state *st);
/* The mechanism, upper-cased. */
const char *sasl_mechanism(const struct sasl_state *st);

#endif
