/*
 * TLS session resumption on the upstream leg: the tickets (TLS 1.3) or
 * sessions (TLS 1.2) an upstream gave us, kept per upstream address, name
 * and ALPN, so that the next connection to the same upstream skips the
 * certificate chain (its parsing and verification were a third of the
 * proxy's CPU per login). Only a session whose certificate verified for
 * that name is kept, each is used once (RFC 8446 C.4), and the store lives
 * in the client context: a reload (a new CA, a new upstream) starts empty.
 */
#ifndef XI_TICKETS_H
#define XI_TICKETS_H

#include <openssl/ssl.h>
#include <stdbool.h>

/* Gives ctx (a client context) an empty store and the callback that fills
 * it. -1 if OpenSSL has no memory. */
int tickets_attach(SSL_CTX *ctx);

/* Before ssl's handshake toward domain over the connected fd: keys ssl to
 * its upstream and, if the store holds a session for it, sets it for
 * resumption (taking it out: a ticket is used once). -1 if OpenSSL has no
 * memory (ssl then simply does a full handshake). */
int tickets_offer(SSL *ssl, int fd, const char *domain, bool alpn);

#endif
