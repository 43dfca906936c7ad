/*
 * OpenSSL for both roles: the server context presented to clients, the
 * client context used toward the upstream, the NSS key log of both legs,
 * and descriptions of finished handshakes for the event log.
 */
#ifndef XI_TLS_H
#define XI_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TLS_ALPN_XMPP "xmpp-client"

struct tls_info {
	char version[16];
	char cipher[64];
	char sni[256]; /* empty if none */
	char alpn[32]; /* empty if none */
	bool resumed;
	bool verified;          /* the peer certificate verified (client role) */
	bool verify_cached;     /* verified: by verifycache, not again */
	char verify_error[128]; /* why not, if it was checked */
};

/* Process-wide set-up; call once before anything else here. */
void tls_init(void);

/* The context presented to clients. min_version is a TLS version constant
 * (TLS1_2_VERSION); ciphers NULL keeps OpenSSL's defaults; cert and key
 * NULL leave the certificate to each session (forge_ca). NULL with a
 * reason in err. */
SSL_CTX *tls_server_ctx(const char *cert, const char *key, int min_version, const char *ciphers,
                        char *err, size_t errlen);
/* The context used toward the upstream; ca NULL uses the system store. */
SSL_CTX *tls_client_ctx(const char *ca, char *err, size_t errlen);

/* Opens (or on reload reopens, or with NULL closes) the key log. */
int tls_keylog_open(const char *path, char *err, size_t errlen);
/* Has ctx hand its handshakes' secrets to the key log (only when one is
 * configured: the contexts are rebuilt whenever the configuration is). */
void tls_keylog_use(SSL_CTX *ctx);
/* Key log lines lost because its queue was full. */
uint64_t tls_keylog_dropped(void);
void tls_keylog_close(void);

/* A server-side SSL on fd. */
SSL *tls_server_new(SSL_CTX *ctx, int fd);
/* A client-side SSL on fd toward domain: SNI, and with verify the chain
 * and the host name (RFC 6125 DNS-ID) are checked during the handshake;
 * alpn adds xmpp-client (Direct TLS, XEP-0368). It resumes a session the
 * same upstream gave for the same name earlier, if one is kept (tickets.h). */
SSL *tls_client_new(SSL_CTX *ctx, int fd, const char *domain, bool verify, bool alpn);

/* Fills info from a finished handshake. */
void tls_describe(SSL *ssl, bool client_role, struct tls_info *info);

/* The reason of the last failure: OpenSSL's error queue (emptied), or the
 * verification error, as one short line in buf. */
const char *tls_error(SSL *ssl, char *buf, size_t len);

#endif
