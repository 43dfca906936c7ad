/*
 * The client leg's certificate when forge_ca is set: which name a client
 * asked for (its stream's 'to' on STARTTLS, the SNI on Direct TLS, else
 * default_domain), checked, and the forged leaf for it presented from
 * OpenSSL's ClientHello callback. With forge_mirror the client's
 * handshake waits there until the upstream's certificate is known.
 */
#ifndef XI_LOGIN_FORGE_H
#define XI_LOGIN_FORGE_H

#include <openssl/ssl.h>

struct session;
struct proxy;

/* Makes ctx (the server context) choose certificates per session. */
void login_forge_install(SSL_CTX *ctx, struct proxy *px);
/* A client-leg SSL of session s (before its handshake starts). */
void login_forge_attach(struct session *s, SSL *ssl);
/* The client's handshake paused for the mirror: the upstream is told the
 * domain (the SNI) so it can get the server's certificate. */
void login_forge_paused(struct session *s);
/* The upstream's certificate is known, or will never be (give_up: the
 * login failed; no handshake waits for it from now on): a paused client
 * handshake goes on. */
void login_forge_resume(struct session *s, bool give_up);
/* Drops the session's reference to its leaf. */
void login_forge_free(struct session *s);
/* The tls event's fields for the client leg: forged, names. */
void login_forge_audit(const struct session *s);

#endif
