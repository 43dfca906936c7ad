#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bounds.h"
#include "verifycache.h"

/* A verified chain: the digest of what it was verified for and of the
 * chain as sent, and until when the result stands. */
struct verifycache_entry {
	unsigned char key[EVP_MAX_MD_SIZE];
	time_t until; /* 0: a free slot */
};

struct verifycache {
	EVP_MD *md; /* fetched once, not per handshake */
	struct verifycache_entry e[VERIFY_CACHE_ENTRIES];
};

static int verifycache_ctx_idx = -1; /* SSL_CTX ex_data: its cache */
static int verifycache_ssl_idx = -1; /* SSL ex_data: set on a hit */
static char verifycache_hit_mark;

static void verifycache_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                             void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	struct verifycache *vc = ptr;
	if (vc == NULL)
		return;
	EVP_MD_free(vc->md);
	free(vc);
}

static int verifycache_digest_cert(EVP_MD_CTX *mc, X509 *x)
{
	unsigned char *der = NULL;
	int n = i2d_X509(x, &der);
	if (n <= 0)
		return -1;
	/* the length first, so that no two chains read as one */
	unsigned char len[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
	                        (unsigned char)(n >> 8), (unsigned char)n};
	int ok = EVP_DigestUpdate(mc, len, sizeof(len)) && EVP_DigestUpdate(mc, der, (size_t)n);
	OPENSSL_free(der);
	return ok ? 0 : -1;
}

/* The entry's key: the verification parameters that vary per session (the
 * name and its flags), then every certificate the server sent, in order. */
static int verifycache_key(const struct verifycache *vc, X509_STORE_CTX *xs,
                           unsigned char key[EVP_MAX_MD_SIZE])
{
	X509_VERIFY_PARAM *p = X509_STORE_CTX_get0_param(xs);
	const char *host = X509_VERIFY_PARAM_get0_host(p, 0);
	unsigned long flags[2] = {X509_VERIFY_PARAM_get_hostflags(p),
	                          X509_VERIFY_PARAM_get_flags(p)};
	STACK_OF(X509) *sent = X509_STORE_CTX_get0_untrusted(xs);
	X509 *leaf = X509_STORE_CTX_get0_cert(xs);
	int ok = -1;

	if (host == NULL || X509_VERIFY_PARAM_get0_host(p, 1) != NULL || leaf == NULL)
		return -1; /* nothing to key on, or more than one name */
	EVP_MD_CTX *mc = EVP_MD_CTX_new();
	if (mc == NULL || !EVP_DigestInit_ex(mc, vc->md, NULL) ||
	    !EVP_DigestUpdate(mc, host, strlen(host) + 1) ||
	    !EVP_DigestUpdate(mc, flags, sizeof(flags)) || verifycache_digest_cert(mc, leaf) < 0)
		goto done;
	for (int i = 0; i < sk_X509_num(sent); i++)
		if (verifycache_digest_cert(mc, sk_X509_value(sent, i)) < 0)
			goto done;
	memset(key, 0, EVP_MAX_MD_SIZE);
	if (EVP_DigestFinal_ex(mc, key, NULL))
		ok = 0;
done:
	EVP_MD_CTX_free(mc);
	return ok;
}

/* Until when a chain just verified may be taken as verified: the earliest
 * notAfter in it, and at most VERIFY_CACHE_TTL from now. */
static time_t verifycache_until(X509_STORE_CTX *xs, time_t now)
{
	STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(xs);
	time_t until = now + VERIFY_CACHE_TTL;

	if (chain == NULL || sk_X509_num(chain) == 0)
		return 0;
	for (int i = 0; i < sk_X509_num(chain); i++) {
		struct tm tm;
		if (ASN1_TIME_to_tm(X509_get0_notAfter(sk_X509_value(chain, i)), &tm) != 1)
			return 0;
		time_t t = timegm(&tm);
		if (t < until)
			until = t;
	}
	return until > now ? until : 0;
}

static void verifycache_put(struct verifycache *vc, const unsigned char *key, time_t until,
                            time_t now)
{
	struct verifycache_entry *slot = &vc->e[0];
	for (size_t i = 0; i < VERIFY_CACHE_ENTRIES; i++) {
		struct verifycache_entry *e = &vc->e[i];
		if (e->until <= now) {
			slot = e; /* free or expired */
			break;
		}
		if (e->until < slot->until)
			slot = e; /* else the one expiring first makes way */
	}
	memcpy(slot->key, key, EVP_MAX_MD_SIZE);
	slot->until = until;
}

/* OpenSSL's certificate verification for the context's sessions: the
 * cache, else X509_verify_cert() as OpenSSL itself would call it. */
static int verifycache_verify(X509_STORE_CTX *xs, void *arg)
{
	struct verifycache *vc = arg;
	unsigned char key[EVP_MAX_MD_SIZE];
	time_t now = time(NULL);
	bool keyed = verifycache_key(vc, xs, key) == 0;

	if (keyed)
		for (size_t i = 0; i < VERIFY_CACHE_ENTRIES; i++) {
			const struct verifycache_entry *e = &vc->e[i];
			if (e->until > now && memcmp(e->key, key, EVP_MAX_MD_SIZE) == 0) {
				SSL *ssl = X509_STORE_CTX_get_ex_data(
				    xs, SSL_get_ex_data_X509_STORE_CTX_idx());
				if (ssl != NULL)
					SSL_set_ex_data(ssl, verifycache_ssl_idx,
					                &verifycache_hit_mark);
				X509_STORE_CTX_set_error(xs, X509_V_OK);
				return 1;
			}
		}
	int ok = X509_verify_cert(xs);
	if (ok == 1 && keyed && X509_STORE_CTX_get_error(xs) == X509_V_OK) {
		time_t until = verifycache_until(xs, now);
		if (until != 0)
			verifycache_put(vc, key, until, now);
	}
	return ok;
}

int verifycache_attach(SSL_CTX *ctx)
{
	if (verifycache_ctx_idx < 0)
		verifycache_ctx_idx =
		    SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, verifycache_free);
	if (verifycache_ssl_idx < 0)
		verifycache_ssl_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	if (verifycache_ctx_idx < 0 || verifycache_ssl_idx < 0)
		return -1;
	struct verifycache *vc = calloc(1, sizeof(*vc));
	if (vc == NULL)
		return -1;
	vc->md = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (vc->md == NULL || SSL_CTX_set_ex_data(ctx, verifycache_ctx_idx, vc) != 1) {
		EVP_MD_free(vc->md);
		free(vc);
		return -1;
	}
	SSL_CTX_set_cert_verify_callback(ctx, verifycache_verify, vc);
	return 0;
}

bool verifycache_hit(const SSL *ssl)
{
	return verifycache_ssl_idx >= 0 && SSL_get_ex_data(ssl, verifycache_ssl_idx) != NULL;
}
