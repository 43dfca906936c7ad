/*
 * Stream features: reading the upstream's <features> and writing the ones
 * the client sees. The proxy rebuilds <starttls> and <mechanisms> itself
 * (they depend on the client leg and on policy) and drops what it cannot
 * carry: compression (XEP-0138: the stream would become zlib), the SASL
 * channel-binding types (its two TLS sessions differ) and legacy iq-auth
 * (a login without SASL). SASL2 (XEP-0388) <authentication> is rebuilt
 * like <mechanisms>, its <inline> features kept.
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
	struct buf *sasl2_kept; /* its other children (<inline>), serialised */
};

/* Reads a <features> element into f (previous content freed). Returns 0
 * or -1 on out of memory. */
int streamfeatures_parse(struct streamfeatures *f, const struct xml_elem *e);
void streamfeatures_free(struct streamfeatures *f);

/* Writes the client's <PREFIX:features>: starttls as given, the listed
 * mechanisms (none: no <mechanisms> element), the listed SASL2 mechanisms
 * (none: no <authentication>), and with others the kept children. prefix
 * is the stream prefix in scope ("" for none). */
int streamfeatures_write(struct buf *out, const char *prefix, enum streamfeatures_starttls starttls,
                         const char *const *mechs, size_t nmechs, const char *const *sasl2_mechs,
                         size_t nsasl2, bool others, const struct streamfeatures *f);

/* True if the server offered mech over SASL2. */
bool streamfeatures_has_sasl2(const struct streamfeatures *f, const char *mech);

const char *streamfeatures_starttls_name(enum streamfeatures_starttls s);

#endif
