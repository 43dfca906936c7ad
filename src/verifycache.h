#ifndef XI_VERIFYCACHE_H
#define XI_VERIFYCACHE_H

#include <openssl/ssl.h>
#include <stdbool.h>

/*
 * Upstream certificate chains already verified, so that a server that
 * gives no session tickets (Prosody's default) does not cost a full chain
 * verification on every login. A hit needs the same name (and host flags)
 * and byte for byte the same chain the server sent, within the chain's
 * validity and VERIFY_CACHE_TTL; only successes are kept. Each login's
 * handshake still proves the server holds the leaf's key (its
 * CertificateVerify is checked by OpenSSL whatever this says). The cache
 * belongs to the client context: a reload, which builds a new context
 * from upstream_ca, starts an empty one.
 */

/* Installs the cache as ctx's certificate verification. -1 if out of
 * memory. */
int verifycache_attach(SSL_CTX *ctx);

/* Whether ssl's upstream chain was accepted from the cache rather than
 * verified again. */
bool verifycache_hit(const SSL *ssl);

#endif
