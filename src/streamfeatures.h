/*
 * Stream features: reading the upstream's <features> and writing the ones
 * the client sees. The proxy rebuilds <starttls> and <mechanisms> itself
 * (they depend on the client leg and on policy) and drops what it cannot
 * carry: compression (XEP-0138: the stream would become zlib), the SASL
 * channel-binding types (its two TLS sessions differ) and legacy iq-auth
 * (a login without SASL). SASL2 (XEP-0388) <authentication> is rebuilt
 * like <mechanisms>, its <inline> features kept but FAST (XEP-0484),
 * whose mechanisms are rebuilt like the others.
 */
#ifndef XI_STREAMFEATURES_H
#define XI_STREAMFEATURES_H

#include <stdbool.h>
#include <stddef.h>

#include "bounds.h"

struct buf;
struct xml_elem;

enum streamfeatures_starttls {
	SF_STARTTLS_NONE = 0,
	SF_STARTTLS_OFFERED,
	SF_STARTTLS_REQUIRED,
};

/* Each bounded list has its own truncation flag: the two lists are
 * offered, filtered and logged apart, so one flag for both could not say
 * which list lost a name. A list holds each name once (a server repeating
 * <mechanisms> or <authentication> joins them); its flag means a distinct
 * valid name was cut, so it is set only with the list full. */
struct streamfeatures {
	enum streamfeatures_starttls starttls;
	char *mechs[MAX_MECHANISMS]; /* SASL1, as the server offered them, in order */
	size_t nmechs;
	bool mechs_truncated; /* more distinct SASL1 names than MAX_MECHANISMS */
	bool compression, channel_binding, sasl2, iq_auth;
	struct buf *kept;                  /* other children, serialised, for the client */
	char *sasl2_mechs[MAX_MECHANISMS]; /* SASL2 <authentication> mechanisms, in order */
	size_t nsasl2_mechs;
	bool sasl2_truncated;   /* more distinct SASL2 names than MAX_MECHANISMS */
	struct buf *sasl2_kept; /* its other children but <inline>, serialised */
	/* SASL2 <inline>: what the server offers to do within the login */
	bool sasl2_inline;
	char *inline_names[MAX_INLINE]; /* "bind2", "sm", "fast", or the local name */
	size_t ninline;
	struct buf *inline_kept; /* its children but <fast>, serialised */
	bool fast;               /* <fast xmlns='urn:xmpp:fast:0'> was inline */
	char *fast_mechs[MAX_MECHANISMS];
	size_t nfast_mechs;
	bool fast_truncated;
};

/* What the client is offered: streamfeatures_write() writes each list
 * given (an empty one: no element), FAST inside SASL2's <inline>, and
 * with others the children kept from the server's features. */
struct streamfeatures_offer {
	enum streamfeatures_starttls starttls;
	const char *const *mechs; /* SASL1 <mechanisms> */
	size_t nmechs;
	const char *const *sasl2; /* SASL2 <authentication> */
	size_t nsasl2;
	const char *const *fast; /* FAST, written only with SASL2 */
	size_t nfast;
	bool others;
};

/* Reads a <features> element into f (previous content freed). Returns 0
 * or -1 on out of memory. */
int streamfeatures_parse(struct streamfeatures *f, const struct xml_elem *e);
void streamfeatures_free(struct streamfeatures *f);

/* Writes the client's <PREFIX:features> as o says, with what f kept
 * (f may be NULL: nothing kept). prefix is the stream prefix in scope
 * ("" for none). */
int streamfeatures_write(struct buf *out, const char *prefix, const struct streamfeatures_offer *o,
                         const struct streamfeatures *f);

/* True if the server offered mech over SASL2. */
bool streamfeatures_has_sasl2(const struct streamfeatures *f, const char *mech);
/* True if the server offered mech for FAST (XEP-0484), inline in SASL2. */
bool streamfeatures_has_fast(const struct streamfeatures *f, const char *mech);

const char *streamfeatures_starttls_name(enum streamfeatures_starttls s);

#endif
