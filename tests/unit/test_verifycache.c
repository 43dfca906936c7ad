/*
 * verifycache.c: real handshakes over a socketpair, the proxy's client
 * context (tls_client_ctx) against servers made here. A chain verified for
 * a name is taken from the cache only for the same name, host flags and
 * bytes: another name the certificate also holds, a name it does not hold,
 * another leaf with the same names, the same leaf with its CA sent along,
 * an untrusted issuer, other host flags, TLS 1.2, a new context (a reload)
 * and no name at all are each verified again (or refused), never answered
 * from the entry. On a hit OpenSSL keeps no verified chain
 * (SSL_get0_verified_chain is NULL), which nothing in the proxy reads.
 */
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tls.h"
#include "verifycache.h"
#include "t.h"

static X509 *make_cert(EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, const char *cn,
                       const char *san, long serial)
{
	X509 *x = X509_new();
	X509V3_CTX ctx;
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
	X509_set_pubkey(x, key);
	X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
	X509_EXTENSION *e;
	if (issuer == NULL) {
		e = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
		X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
	} else {
		e = X509V3_EXT_conf_nid(NULL, &ctx, NID_ext_key_usage, "serverAuth");
		X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
		e = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
		X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
	}
	X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256());
	return x;
}

struct server {
	X509 *leaf;
	EVP_PKEY *key;
	X509 *extra; /* sent after the leaf, or NULL */
	int max_version;
};

struct result {
	bool done;     /* the client finished its handshake */
	bool verified; /* tls_describe's verified */
	bool cached;   /* and verify_cached */
	bool no_chain; /* SSL_get0_verified_chain is NULL */
};

/* One handshake of a client SSL from cctx toward name (hostflags -1: the
 * proxy's own) with srv. */
static struct result handshake(SSL_CTX *cctx, const struct server *srv, const char *name,
                               bool verify, int hostflags)
{
	struct result r = {0};
	int fd[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, fd) < 0)
		return r;
	fcntl(fd[0], F_SETFL, O_NONBLOCK);
	fcntl(fd[1], F_SETFL, O_NONBLOCK);
	SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
	SSL_CTX_use_certificate(sctx, srv->leaf);
	SSL_CTX_use_PrivateKey(sctx, srv->key);
	if (srv->extra != NULL)
		SSL_CTX_add1_chain_cert(sctx, srv->extra);
	if (srv->max_version)
		SSL_CTX_set_max_proto_version(sctx, srv->max_version);
	SSL *s = SSL_new(sctx);
	SSL_set_fd(s, fd[1]);
	SSL_set_accept_state(s);
	SSL *c = tls_client_new(cctx, fd[0], name, verify, false);
	if (c != NULL && hostflags >= 0)
		SSL_set_hostflags(c, (unsigned)hostflags);
	bool cdone = false, sdone = false, failed = c == NULL;
	for (int i = 0; i < 200 && !failed && !(cdone && sdone); i++) {
		if (!cdone) {
			int rc = SSL_do_handshake(c);
			int e = SSL_get_error(c, rc);
			cdone = rc == 1;
			failed = rc != 1 && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE;
		}
		if (!sdone && !failed) {
			int rc = SSL_do_handshake(s);
			int e = SSL_get_error(s, rc);
			sdone = rc == 1;
			/* a client that refused the chain alerts; the server fails */
			if (rc != 1 && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
				break;
		}
	}
	ERR_clear_error();
	if (cdone) {
		struct tls_info info;
		tls_describe(c, true, &info);
		r.done = true;
		r.verified = info.verified;
		r.cached = info.verify_cached;
		r.no_chain = SSL_get0_verified_chain(c) == NULL;
	}
	SSL_free(c);
	SSL_free(s);
	SSL_CTX_free(sctx);
	close(fd[0]);
	close(fd[1]);
	return r;
}

int main(void)
{
	tls_init();
	EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *k1 = EVP_EC_gen("P-256"), *k2 = EVP_EC_gen("P-256"),
	         *other_key = EVP_EC_gen("P-256");
	X509 *ca = make_cert(ca_key, NULL, NULL, "lab CA", NULL, 1);
	X509 *other_ca = make_cert(other_key, NULL, NULL, "lab CA", NULL, 1);
	const char *san = "DNS:a.test,DNS:b.test";
	struct server one = {make_cert(k1, ca, ca_key, "a.test", san, 2), k1, NULL, 0};
	struct server two = {make_cert(k2, ca, ca_key, "a.test", san, 3), k2, NULL, 0};
	struct server with_ca = {one.leaf, k1, ca, 0};
	struct server untrusted = {make_cert(k1, other_ca, other_key, "a.test", san, 2), k1, NULL, 0};
	struct server tls12 = {one.leaf, k1, NULL, TLS1_2_VERSION};

	char ca_path[] = "/tmp/test_verifycache_ca_XXXXXX";
	int fd = mkstemp(ca_path);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (f == NULL || PEM_write_X509(f, ca) != 1) {
		T_CHECK(false, "verifycache: the CA file");
		T_DONE();
	}
	fclose(f);
	char err[256];
	SSL_CTX *cctx = tls_client_ctx(ca_path, err, sizeof(err));
	T_CHECK(cctx != NULL, "verifycache: the client context");
	if (cctx == NULL)
		T_DONE();

	struct result r = handshake(cctx, &one, "a.test", true, -1);
	T_CHECK(r.done && r.verified && !r.cached, "verifycache: first handshake verified, not cached");
	r = handshake(cctx, &one, "a.test", true, -1);
	T_CHECK(r.done && r.verified && r.cached, "verifycache: the same name and chain hit");
	T_CHECK(r.no_chain, "verifycache: a hit leaves no verified chain (nothing reads it)");
	r = handshake(cctx, &one, "b.test", true, -1);
	T_CHECK(r.done && r.verified && !r.cached,
	        "verifycache: another name of the same certificate is verified again");
	r = handshake(cctx, &one, "c.test", false, -1);
	T_CHECK(r.done && !r.verified, "verifycache: a name the cached chain lacks is refused");
	r = handshake(cctx, &one, "c.test", true, -1);
	T_CHECK(!r.done, "verifycache: ... and with upstream_verify the handshake fails");
	r = handshake(cctx, &two, "a.test", true, -1);
	T_CHECK(r.done && r.verified && !r.cached,
	        "verifycache: another leaf with the same names is verified again");
	r = handshake(cctx, &with_ca, "a.test", true, -1);
	T_CHECK(r.done && r.verified && !r.cached,
	        "verifycache: the same leaf sent with another chain is verified again");
	r = handshake(cctx, &untrusted, "a.test", false, -1);
	T_CHECK(r.done && !r.verified, "verifycache: the same names from an untrusted CA are refused");
	r = handshake(cctx, &untrusted, "a.test", false, -1);
	T_CHECK(r.done && !r.verified && !r.cached, "verifycache: ... and a failure is never kept");
	r = handshake(cctx, &one, "a.test", true, 0);
	T_CHECK(r.done && r.verified && !r.cached,
	        "verifycache: other host flags (partial wildcards allowed) are verified again");
	r = handshake(cctx, &one, "a.test", false, -1);
	T_CHECK(r.done && r.verified && r.cached,
	        "verifycache: upstream_verify off reads the same entry (the same verdict)");
	r = handshake(cctx, &tls12, "a.test", true, -1);
	T_CHECK(r.done && r.verified && r.cached, "verifycache: a TLS 1.2 server goes through it too");
	r = handshake(cctx, &one, "", false, -1);
	struct result r2 = handshake(cctx, &one, "", false, -1);
	T_CHECK(r.done && r2.done && !r.cached && !r2.cached,
	        "verifycache: without a name nothing is cached");

	SSL_CTX *reloaded = tls_client_ctx(ca_path, err, sizeof(err));
	r = handshake(reloaded, &one, "a.test", true, -1);
	T_CHECK(r.done && r.verified && !r.cached, "verifycache: a new context (reload) starts empty");
	SSL_CTX_free(reloaded);

	SSL_CTX_free(cctx);
	unlink(ca_path);
	X509_free(ca);
	X509_free(other_ca);
	X509_free(one.leaf);
	X509_free(two.leaf);
	X509_free(untrusted.leaf);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(k1);
	EVP_PKEY_free(k2);
	EVP_PKEY_free(other_key);
	T_DONE();
}
