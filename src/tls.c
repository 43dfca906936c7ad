#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#include "lfile.h"
#include "tickets.h"
#include "verifycache.h"
#include "tls.h"

static struct lfile *tls_keylog;

void tls_init(void)
{
	OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
}

/* Fires for every secret OpenSSL derives, on either leg. */
static void tls_keylog_cb(const SSL *ssl, const char *line)
{
	(void)ssl;
	if (tls_keylog == NULL)
		return;
	char tmp[512];
	int n = snprintf(tmp, sizeof(tmp), "%s\n", line);
	if (n > 0 && (size_t)n < sizeof(tmp))
		lfile_write(tls_keylog, tmp, (size_t)n);
}

int tls_keylog_open(const char *path, char *err, size_t errlen)
{
	struct lfile *f = NULL;
	if (path != NULL && (f = lfile_open(path, err, errlen)) == NULL)
		return -1;
	lfile_close_into(tls_keylog, f);
	tls_keylog = f;
	return 0;
}

/* Only a context with the callback has OpenSSL format its secrets (in hex,
 * a sprintf per byte, each secret of each handshake: 2 % of the CPU per
 * login for a key log nobody asked for). */
void tls_keylog_use(SSL_CTX *ctx)
{
	SSL_CTX_set_keylog_callback(ctx, tls_keylog_cb);
}

uint64_t tls_keylog_dropped(void)
{
	struct lfile_status st = {0};
	if (tls_keylog != NULL)
		lfile_status(tls_keylog, &st);
	return st.dropped;
}

void tls_keylog_close(void)
{
	lfile_close(tls_keylog);
	tls_keylog = NULL;
}

static const char *tls_queue_error(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();
	unsigned long last;
	if (e == 0) {
		snprintf(buf, len, "unknown TLS error");
		return buf;
	}
	/* the first error is the root cause; drop the rest */
	while ((last = ERR_get_error()) != 0)
		;
	ERR_error_string_n(e, buf, len);
	return buf;
}

/* Fires when a client offers ALPN: take xmpp-client, ignore the rest. */
static int tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                           const unsigned char *in, unsigned int inlen, void *arg)
{
	(void)ssl, (void)arg;
	const size_t n = sizeof(TLS_ALPN_XMPP) - 1;
	for (unsigned i = 0; i < inlen; i += 1u + in[i]) {
		if (in[i] == n && i + 1 + n <= inlen && memcmp(in + i + 1, TLS_ALPN_XMPP, n) == 0) {
			*out = in + i + 1;
			*outlen = in[i];
			return SSL_TLSEXT_ERR_OK;
		}
	}
	return SSL_TLSEXT_ERR_NOACK;
}

/* Fires with the client's SNI. Accepting it makes OpenSSL keep the name
 * for SSL_get_servername() after the handshake (TLS 1.3 included); one
 * certificate serves every name. */
static int tls_servername_cb(SSL *ssl, int *alert, void *arg)
{
	(void)ssl, (void)alert, (void)arg;
	return SSL_TLSEXT_ERR_OK;
}

SSL_CTX *tls_server_ctx(const char *cert, const char *key, int min_version, const char *ciphers,
                        char *err, size_t errlen)
{
	char why[256];
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		snprintf(err, errlen, "TLS: %s", tls_queue_error(why, sizeof(why)));
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, min_version ? min_version : TLS1_2_VERSION);
	/* a peer that just closes TCP has ended the stream, not attacked it */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
	                             SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	                          SSL_MODE_RELEASE_BUFFERS);
	if (ciphers != NULL && SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
		snprintf(err, errlen, "tls_ciphers: %s", tls_queue_error(why, sizeof(why)));
		goto fail;
	}
	if (cert == NULL || key == NULL)
		goto done; /* forge_ca: certificates come per session */
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		snprintf(err, errlen, "cert %s: %s", cert, tls_queue_error(why, sizeof(why)));
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		snprintf(err, errlen, "key %s: %s", key, tls_queue_error(why, sizeof(why)));
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errlen, "key %s does not match cert %s", key, cert);
		goto fail;
	}
done:
	/* The chain sent to clients is the one given (the file's, or a forged
	 * leaf's), as it is. Without this, a file with the leaf alone had
	 * OpenSSL build a chain for every handshake (an X509_STORE_CTX and a
	 * verify against this context's store, which is empty: it only ever
	 * found the leaf). */
	SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN);
	SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, NULL);
	SSL_CTX_set_tlsext_servername_callback(ctx, tls_servername_cb);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

SSL_CTX *tls_client_ctx(const char *ca, char *err, size_t errlen)
{
	char why[256];
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		snprintf(err, errlen, "TLS: %s", tls_queue_error(why, sizeof(why)));
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	                          SSL_MODE_RELEASE_BUFFERS);
	int ok = ca != NULL ? SSL_CTX_load_verify_locations(ctx, ca, NULL)
	                    : SSL_CTX_set_default_verify_paths(ctx);
	if (ok != 1) {
		snprintf(err, errlen, "upstream_ca %s: %s", ca ? ca : "(system)",
		         tls_queue_error(why, sizeof(why)));
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (tickets_attach(ctx) < 0 || verifycache_attach(ctx) < 0) {
		snprintf(err, errlen, "TLS: out of memory");
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

SSL *tls_server_new(SSL_CTX *ctx, int fd)
{
	SSL *ssl = SSL_new(ctx);
	if (ssl == NULL)
		return NULL;
	if (SSL_set_fd(ssl, fd) != 1) {
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_accept_state(ssl);
	return ssl;
}

SSL *tls_client_new(SSL_CTX *ctx, int fd, const char *domain, bool verify, bool alpn)
{
	static const unsigned char protos[] = "\x0bxmpp-client";
	SSL *ssl = SSL_new(ctx);
	if (ssl == NULL)
		return NULL;
	if (SSL_set_fd(ssl, fd) != 1)
		goto fail;
	if (domain[0] != '\0') {
		if (SSL_set_tlsext_host_name(ssl, domain) != 1)
			goto fail;
		/* checked even without verify, so the log can say whether
		 * the certificate would have passed */
		if (SSL_set1_host(ssl, domain) != 1)
			goto fail;
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	}
	SSL_set_verify(ssl, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	if (alpn && SSL_set_alpn_protos(ssl, protos, sizeof(protos) - 1) != 0)
		goto fail;
	SSL_set_connect_state(ssl);
	if (tickets_offer(ssl, fd, domain, alpn) < 0)
		goto fail;
	return ssl;
fail:
	SSL_free(ssl);
	return NULL;
}

void tls_describe(SSL *ssl, bool client_role, struct tls_info *info)
{
	const unsigned char *alpn = NULL;
	unsigned alpnlen = 0;
	const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	memset(info, 0, sizeof(*info));
	snprintf(info->version, sizeof(info->version), "%s", SSL_get_version(ssl));
	snprintf(info->cipher, sizeof(info->cipher), "%s", SSL_get_cipher_name(ssl));
	snprintf(info->sni, sizeof(info->sni), "%s", sni ? sni : "");
	SSL_get0_alpn_selected(ssl, &alpn, &alpnlen);
	if (alpn != NULL && alpnlen < sizeof(info->alpn)) {
		memcpy(info->alpn, alpn, alpnlen);
		info->alpn[alpnlen] = '\0';
	}
	info->resumed = SSL_session_reused(ssl) == 1;
	if (client_role) {
		long v = SSL_get_verify_result(ssl);
		info->verified = v == X509_V_OK && SSL_get0_peer_certificate(ssl) != NULL;
		info->verify_cached = info->verified && verifycache_hit(ssl);
		if (!info->verified)
			snprintf(info->verify_error, sizeof(info->verify_error), "%s",
			         X509_verify_cert_error_string(v));
	}
}

const char *tls_error(SSL *ssl, char *buf, size_t len)
{
	long v = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
	if (v != X509_V_OK && SSL_get_verify_mode(ssl) != SSL_VERIFY_NONE) {
		ERR_clear_error();
		snprintf(buf, len, "certificate verification failed: %s",
		         X509_verify_cert_error_string(v));
		return buf;
	}
	return tls_queue_error(buf, len);
}
