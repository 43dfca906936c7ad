/*
 * Certificates made on the fly for the domain a client asks for, signed by
 * a lab CA its clients trust (SSLsplit's forging): an ECDSA P-256 leaf per
 * name, with the dNSName and id-on-xmppAddr (RFC 6120 13.7.1.4) names a
 * client checks, kept in a bounded LRU cache. Keys live only in memory.
 * Pure OpenSSL: no sockets, no session, so it is unit-tested alone.
 */
#ifndef XI_FORGE_H
#define XI_FORGE_H

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

#include "bounds.h"

struct forge;

/* One forged certificate: shared by the cache and the sessions using it. */
struct forge_leaf {
	X509 *cert;
	EVP_PKEY *key;
	X509 *ca; /* the chain sent after it */
	/* dNSNames, in the certificate's order (the requested domain first) */
	char *names[MAX_FORGE_NAMES];
	size_t nnames;
	/* private to forge.c */
	unsigned refs;
	char *cache_key;
	struct forge_leaf *prev, *next; /* LRU */
	struct forge_leaf *hnext;       /* hash chain */
	uint32_t hash;
};

struct forge_stats {
	uint64_t made, hits, evicted;
	size_t cached;
};

/* Loads the CA certificate and its key (PEM) and checks they match.
 * cache_max is at least 1. NULL with a reason in err. */
struct forge *forge_new(const char *ca_file, const char *key_file, size_t cache_max, char *err,
                        size_t errlen);
/* Frees the CA and the cache; leaves still referenced live on until
 * their last forge_leaf_unref(). NULL is ignored. */
void forge_free(struct forge *f);

/*
 * Checks a name a client asked for and writes the domain a certificate
 * may carry into out (at least MAX_DOMAIN + 1 bytes): folded as a server
 * finds a virtual host (ident_fold_domain: lower case, IDNs as A-labels,
 * one trailing dot removed). Refused (-1, with a short reason in *why):
 * empty or longer than MAX_DOMAIN, a label empty, longer than
 * MAX_DOMAIN_LABEL or starting or ending in '-', a character other than
 * letters, digits, '-' and '.' (so no '*', '_', ':' or brackets), a last
 * label of digits only (an IPv4 address), bytes that are not UTF-8.
 */
int forge_name(const char *in, char *out, size_t outlen, const char **why);

/*
 * A leaf for domain (already checked by forge_name): from the cache, or
 * made now and cached (the least recently used one leaves when full).
 * With mirror (the real server's certificate), the leaf also copies its
 * subject and its dNSName and xmppAddr names (plain host names or "*."
 * wildcards; others are skipped, as are those past MAX_FORGE_NAMES); the
 * requested domain is always the first name. The caller owns one
 * reference. NULL with a reason in err.
 */
struct forge_leaf *forge_get(struct forge *f, const char *domain, X509 *mirror, char *err,
                             size_t errlen);
void forge_leaf_unref(struct forge_leaf *leaf);

/* Presents leaf (and the CA after it) on a server-side ssl. 0 or -1. */
int forge_use(const struct forge_leaf *leaf, SSL *ssl);

void forge_stats(const struct forge *f, struct forge_stats *st);

#endif
