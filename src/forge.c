#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forge.h"
#include "ident.h"

/* id-on-xmppAddr, RFC 6120 13.7.1.4 */
#define FORGE_OID_XMPPADDR "1.3.6.1.5.5.7.8.5"
/* Random serial bytes: 128 bits (CA/B Forum asks for at least 64). */
#define FORGE_SERIAL_BYTES 16

struct forge {
	X509 *ca;
	EVP_PKEY *ca_key;
	size_t max;
	struct forge_leaf *head, *tail; /* most recently used first */
	struct forge_leaf **buckets;    /* by cache key: nbuckets, a power of two */
	size_t nbuckets;
	struct forge_stats st;
};

/* FNV-1a: the keys are names a client chose, but a bucket holds what
 * the LRU bound lets in, so a crafted collision costs a walk of at most
 * forge_cache entries, as a plain list would. */
static uint32_t forge_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static const char *forge_ssl_error(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();
	ERR_clear_error();
	if (e == 0)
		snprintf(buf, len, "unknown error");
	else
		ERR_error_string_n(e, buf, len);
	return buf;
}

struct forge *forge_new(const char *ca_file, const char *key_file, size_t cache_max, char *err,
                        size_t errlen)
{
	char why[256];
	struct forge *f = calloc(1, sizeof(*f));
	if (f == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	f->max = cache_max > 0 ? cache_max : 1;
	for (f->nbuckets = 16; f->nbuckets < 2 * f->max; f->nbuckets *= 2)
		;
	f->buckets = calloc(f->nbuckets, sizeof(*f->buckets));
	if (f->buckets == NULL) {
		snprintf(err, errlen, "out of memory");
		free(f);
		return NULL;
	}
	FILE *fp = fopen(ca_file, "r");
	if (fp == NULL || (f->ca = PEM_read_X509(fp, NULL, NULL, NULL)) == NULL) {
		snprintf(err, errlen, "forge_ca %s: %s", ca_file,
		         fp == NULL ? "cannot open" : forge_ssl_error(why, sizeof(why)));
		goto fail;
	}
	fclose(fp);
	fp = fopen(key_file, "r");
	if (fp == NULL || (f->ca_key = PEM_read_PrivateKey(fp, NULL, NULL, NULL)) == NULL) {
		snprintf(err, errlen, "forge_ca_key %s: %s", key_file,
		         fp == NULL ? "cannot open" : forge_ssl_error(why, sizeof(why)));
		goto fail;
	}
	fclose(fp);
	fp = NULL;
	if (X509_check_private_key(f->ca, f->ca_key) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "forge_ca_key %s does not match forge_ca %s", key_file,
		         ca_file);
		goto fail;
	}
	if (X509_check_ca(f->ca) == 0) {
		snprintf(err, errlen, "forge_ca %s is not a CA certificate", ca_file);
		goto fail;
	}
	return f;
fail:
	if (fp != NULL)
		fclose(fp);
	forge_free(f);
	return NULL;
}

static void forge_leaf_free(struct forge_leaf *leaf)
{
	X509_free(leaf->cert);
	EVP_PKEY_free(leaf->key); /* OpenSSL clears the key's memory */
	X509_free(leaf->ca);
	for (size_t i = 0; i < leaf->nnames; i++)
		free(leaf->names[i]);
	free(leaf->cache_key);
	free(leaf);
}

void forge_leaf_unref(struct forge_leaf *leaf)
{
	if (leaf != NULL && --leaf->refs == 0)
		forge_leaf_free(leaf);
}

/* Takes leaf out of the LRU list (and, with drop, out of the table). */
static void forge_unlink(struct forge *f, struct forge_leaf *leaf, bool drop)
{
	if (drop) {
		struct forge_leaf **pp = &f->buckets[leaf->hash & (f->nbuckets - 1)];
		while (*pp != leaf)
			pp = &(*pp)->hnext;
		*pp = leaf->hnext;
		leaf->hnext = NULL;
	}
	if (leaf->prev)
		leaf->prev->next = leaf->next;
	else
		f->head = leaf->next;
	if (leaf->next)
		leaf->next->prev = leaf->prev;
	else
		f->tail = leaf->prev;
	leaf->prev = leaf->next = NULL;
	f->st.cached--;
}

static void forge_push(struct forge *f, struct forge_leaf *leaf)
{
	leaf->prev = NULL;
	leaf->next = f->head;
	if (f->head)
		f->head->prev = leaf;
	f->head = leaf;
	if (f->tail == NULL)
		f->tail = leaf;
	f->st.cached++;
}

void forge_free(struct forge *f)
{
	if (f == NULL)
		return;
	while (f->head != NULL) {
		struct forge_leaf *leaf = f->head;
		forge_unlink(f, leaf, true);
		forge_leaf_unref(leaf);
	}
	free(f->buckets);
	X509_free(f->ca);
	EVP_PKEY_free(f->ca_key);
	free(f);
}

void forge_stats(const struct forge *f, struct forge_stats *st)
{
	*st = f->st;
}

int forge_name(const char *in, char *out, size_t outlen, const char **why)
{
	char folded[IDENT_DOMAIN_MAX];
	*why = NULL;
	if (outlen > 0)
		out[0] = '\0';
	size_t inlen = strnlen(in, MAX_DOMAIN + 2);
	if (inlen == 0) {
		*why = "empty name";
		return -1;
	}
	/* one trailing dot may follow the longest name */
	if (inlen > MAX_DOMAIN + 1 || (inlen == MAX_DOMAIN + 1 && in[MAX_DOMAIN] != '.')) {
		*why = "name too long";
		return -1;
	}
	if (ident_fold_domain(in, folded, sizeof(folded)) < 0) {
		*why = "not a valid domain name";
		return -1;
	}
	size_t n = strlen(folded);
	if (n == 0 || n > MAX_DOMAIN || n >= outlen) {
		*why = n == 0 ? "empty name" : "name too long";
		return -1;
	}
	/* letters, digits and '-' in labels of 1..63 not starting or ending
	 * in '-' (RFC 1123 2.1; A-labels included) */
	size_t label = 0;
	bool digits_only = true;
	for (size_t i = 0; i <= n; i++) {
		char ch = folded[i];
		if (ch == '.' || ch == '\0') {
			if (label == 0 || folded[i - 1] == '-') {
				*why = label == 0 ? "empty label" : "label ends in '-'";
				return -1;
			}
			if (ch == '\0')
				break;
			label = 0;
			digits_only = true;
			continue;
		}
		bool digit = ch >= '0' && ch <= '9';
		if (!(digit || (ch >= 'a' && ch <= 'z') || ch == '-')) {
			*why = ch == '[' || ch == ':' ? "an IP address" : "character not allowed";
			return -1;
		}
		if (ch == '-' && label == 0) {
			*why = "label starts with '-'";
			return -1;
		}
		if (++label > MAX_DOMAIN_LABEL) {
			*why = "label too long";
			return -1;
		}
		digits_only = digits_only && digit;
	}
	if (digits_only) {
		*why = "an IP address"; /* no top-level domain is all digits */
		return -1;
	}
	memcpy(out, folded, n + 1);
	return 0;
}

/* A name copied from a server's certificate: a host name (as forge_name
 * accepts it, already folded) or one leading "*." wildcard label. */
static bool forge_mirror_name_ok(const unsigned char *p, int len)
{
	char name[MAX_DOMAIN + 1], out[MAX_DOMAIN + 1];
	const char *why;
	if (len <= 0 || len > MAX_DOMAIN || memchr(p, '\0', (size_t)len) != NULL)
		return false;
	memcpy(name, p, (size_t)len);
	name[len] = '\0';
	const char *host = strncmp(name, "*.", 2) == 0 ? name + 2 : name;
	for (const char *q = host; *q; q++)
		if ((unsigned char)*q >= 0x80 || (*q >= 'A' && *q <= 'Z'))
			return false;
	return forge_name(host, out, sizeof(out), &why) == 0 && strcmp(out, host) == 0;
}

static bool forge_has(char *const *list, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i], name) == 0)
			return true;
	return false;
}

static int forge_add_name(char **list, size_t *n, const char *name, size_t len)
{
	if (*n >= MAX_FORGE_NAMES)
		return 0;
	char *copy = strndup(name, len);
	if (copy == NULL)
		return -1;
	if (forge_has(list, *n, copy)) {
		free(copy);
		return 0;
	}
	list[(*n)++] = copy;
	return 0;
}

/* The names of mirror (dNSName and xmppAddr) appended to dns and xmpp. */
static int forge_mirror_names(X509 *mirror, char **dns, size_t *ndns, char **xmpp, size_t *nxmpp)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(mirror, NID_subject_alt_name, NULL, NULL);
	ASN1_OBJECT *xmppaddr = OBJ_txt2obj(FORGE_OID_XMPPADDR, 1);
	int rc = xmppaddr == NULL ? -1 : 0;
	for (int i = 0; rc == 0 && gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		if (g->type == GEN_DNS) {
			const unsigned char *p = ASN1_STRING_get0_data(g->d.dNSName);
			int len = ASN1_STRING_length(g->d.dNSName);
			if (forge_mirror_name_ok(p, len))
				rc = forge_add_name(dns, ndns, (const char *)p, (size_t)len);
		} else if (g->type == GEN_OTHERNAME &&
		           OBJ_cmp(g->d.otherName->type_id, xmppaddr) == 0 &&
		           g->d.otherName->value->type == V_ASN1_UTF8STRING) {
			const ASN1_UTF8STRING *u = g->d.otherName->value->value.utf8string;
			const unsigned char *p = ASN1_STRING_get0_data(u);
			int len = ASN1_STRING_length(u);
			if (forge_mirror_name_ok(p, len))
				rc = forge_add_name(xmpp, nxmpp, (const char *)p, (size_t)len);
		}
	}
	ASN1_OBJECT_free(xmppaddr);
	GENERAL_NAMES_free(gens);
	return rc;
}

static int forge_push_dns(GENERAL_NAMES *gens, const char *name)
{
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();
	if (g == NULL || s == NULL || ASN1_STRING_set(s, name, (int)strlen(name)) != 1)
		goto fail;
	GENERAL_NAME_set0_value(g, GEN_DNS, s);
	if (sk_GENERAL_NAME_push(gens, g) <= 0) {
		GENERAL_NAME_free(g);
		return -1;
	}
	return 0;
fail:
	ASN1_IA5STRING_free(s);
	GENERAL_NAME_free(g);
	return -1;
}

static int forge_push_xmpp(GENERAL_NAMES *gens, const char *name)
{
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_OBJECT *oid = OBJ_txt2obj(FORGE_OID_XMPPADDR, 1);
	ASN1_TYPE *v = ASN1_TYPE_new();
	ASN1_UTF8STRING *u = ASN1_UTF8STRING_new();
	if (g == NULL || oid == NULL || v == NULL || u == NULL ||
	    ASN1_STRING_set(u, name, (int)strlen(name)) != 1)
		goto fail;
	ASN1_TYPE_set(v, V_ASN1_UTF8STRING, u);
	u = NULL;
	if (GENERAL_NAME_set0_othername(g, oid, v) != 1)
		goto fail;
	oid = NULL;
	v = NULL;
	if (sk_GENERAL_NAME_push(gens, g) <= 0)
		goto fail;
	return 0;
fail:
	ASN1_UTF8STRING_free(u);
	ASN1_TYPE_free(v);
	ASN1_OBJECT_free(oid);
	GENERAL_NAME_free(g);
	return -1;
}

static int forge_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	if (ext == NULL)
		return -1;
	int ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok == 1 ? 0 : -1;
}

static int forge_serial(X509 *x)
{
	unsigned char b[FORGE_SERIAL_BYTES];
	if (RAND_bytes(b, sizeof(b)) != 1)
		return -1;
	b[0] &= 0x7f; /* positive */
	b[0] |= 0x40; /* and always the full length */
	BIGNUM *bn = BN_bin2bn(b, sizeof(b), NULL);
	int rc = bn != NULL && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL ? 0 : -1;
	BN_free(bn);
	return rc;
}

/* The certificate for a leaf whose names are set: NULL on failure. */
static X509 *forge_make_cert(struct forge *f, struct forge_leaf *leaf, X509 *mirror,
                             char *const *xmpp, size_t nxmpp)
{
	X509 *x = X509_new();
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	X509_NAME *subj = NULL;
	X509V3_CTX ctx;
	if (x == NULL || gens == NULL || X509_set_version(x, 2) != 1 || forge_serial(x) < 0)
		goto fail;
	if (X509_gmtime_adj(X509_getm_notBefore(x), -(long)FORGE_BACKDATE) == NULL ||
	    X509_gmtime_adj(X509_getm_notAfter(x), (long)FORGE_VALIDITY) == NULL)
		goto fail;
	if (mirror != NULL) {
		subj = X509_NAME_dup(X509_get_subject_name(mirror));
	} else if ((subj = X509_NAME_new()) != NULL &&
	           X509_NAME_add_entry_by_txt(subj, "CN", MBSTRING_UTF8,
	                                      (const unsigned char *)leaf->names[0], -1, -1,
	                                      0) != 1) {
		X509_NAME_free(subj);
		subj = NULL;
	}
	if (subj == NULL || X509_set_subject_name(x, subj) != 1 ||
	    X509_set_issuer_name(x, X509_get_subject_name(f->ca)) != 1 ||
	    X509_set_pubkey(x, leaf->key) != 1)
		goto fail;
	X509V3_set_ctx(&ctx, f->ca, x, NULL, NULL, 0);
	if (forge_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
	    forge_ext(x, &ctx, NID_key_usage, "critical,digitalSignature") < 0 ||
	    forge_ext(x, &ctx, NID_ext_key_usage, "serverAuth") < 0 ||
	    forge_ext(x, &ctx, NID_subject_key_identifier, "hash") < 0 ||
	    forge_ext(x, &ctx, NID_authority_key_identifier, "keyid") < 0)
		goto fail;
	for (size_t i = 0; i < leaf->nnames; i++)
		if (forge_push_dns(gens, leaf->names[i]) < 0)
			goto fail;
	for (size_t i = 0; i < nxmpp; i++)
		if (forge_push_xmpp(gens, xmpp[i]) < 0)
			goto fail;
	if (X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) != 1)
		goto fail;
	/* Ed25519/Ed448 CAs sign without a separate digest */
	int id = EVP_PKEY_get_base_id(f->ca_key);
	const EVP_MD *md = id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448 ? NULL : EVP_sha256();
	if (X509_sign(x, f->ca_key, md) <= 0)
		goto fail;
	X509_NAME_free(subj);
	GENERAL_NAMES_free(gens);
	return x;
fail:
	X509_NAME_free(subj);
	GENERAL_NAMES_free(gens);
	X509_free(x);
	return NULL;
}

/* The cache key: the domain, and for a mirror the digest of what it
 * copies from (a server that changes its certificate gets a new leaf). */
static char *forge_cache_key(const char *domain, X509 *mirror)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	char hex[2 * EVP_MAX_MD_SIZE + 1] = "";
	if (mirror != NULL) {
		if (X509_digest(mirror, EVP_sha256(), md, &mdlen) != 1)
			return NULL;
		for (unsigned i = 0; i < mdlen; i++)
			snprintf(hex + 2 * i, 3, "%02x", md[i]);
	}
	size_t n = strlen(domain) + 2 + strlen(hex);
	char *key = malloc(n);
	if (key != NULL)
		snprintf(key, n, "%s %s", domain, hex);
	return key;
}

static struct forge_leaf *forge_make(struct forge *f, const char *domain, X509 *mirror, char *key)
{
	char *xmpp[MAX_FORGE_NAMES];
	size_t nxmpp = 0;
	struct forge_leaf *leaf = calloc(1, sizeof(*leaf));
	if (leaf == NULL)
		return NULL;
	leaf->refs = 1;
	leaf->cache_key = key;
	if (forge_add_name(leaf->names, &leaf->nnames, domain, strlen(domain)) < 0 ||
	    forge_add_name(xmpp, &nxmpp, domain, strlen(domain)) < 0)
		goto fail;
	if (mirror != NULL &&
	    forge_mirror_names(mirror, leaf->names, &leaf->nnames, xmpp, &nxmpp) < 0)
		goto fail;
	if ((leaf->key = EVP_EC_gen("P-256")) == NULL)
		goto fail;
	if ((leaf->cert = forge_make_cert(f, leaf, mirror, xmpp, nxmpp)) == NULL)
		goto fail;
	X509_up_ref(f->ca);
	leaf->ca = f->ca;
	for (size_t i = 0; i < nxmpp; i++)
		free(xmpp[i]);
	return leaf;
fail:
	for (size_t i = 0; i < nxmpp; i++)
		free(xmpp[i]);
	forge_leaf_free(leaf);
	return NULL;
}

struct forge_leaf *forge_get(struct forge *f, const char *domain, X509 *mirror, char *err,
                             size_t errlen)
{
	char why[256];
	char *key = forge_cache_key(domain, mirror);
	if (key == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	uint32_t h = forge_hash(key);
	for (struct forge_leaf *leaf = f->buckets[h & (f->nbuckets - 1)]; leaf != NULL;
	     leaf = leaf->hnext) {
		if (leaf->hash == h && strcmp(leaf->cache_key, key) == 0) {
			free(key);
			forge_unlink(f, leaf, false);
			forge_push(f, leaf);
			f->st.hits++;
			leaf->refs++;
			return leaf;
		}
	}
	ERR_clear_error();
	struct forge_leaf *leaf = forge_make(f, domain, mirror, key);
	if (leaf == NULL) {
		snprintf(err, errlen, "cannot make a certificate for %s: %s", domain,
		         forge_ssl_error(why, sizeof(why)));
		return NULL;
	}
	f->st.made++;
	while (f->st.cached >= f->max && f->tail != NULL) {
		struct forge_leaf *old = f->tail;
		forge_unlink(f, old, true);
		forge_leaf_unref(old);
		f->st.evicted++;
	}
	forge_push(f, leaf);
	leaf->hash = h;
	leaf->hnext = f->buckets[h & (f->nbuckets - 1)];
	f->buckets[h & (f->nbuckets - 1)] = leaf;
	leaf->refs++; /* the cache's and the caller's */
	return leaf;
}

int forge_use(const struct forge_leaf *leaf, SSL *ssl)
{
	STACK_OF(X509) *chain = sk_X509_new_null();
	if (chain == NULL || sk_X509_push(chain, leaf->ca) <= 0) {
		sk_X509_free(chain);
		return -1;
	}
	int ok = SSL_use_cert_and_key(ssl, leaf->cert, leaf->key, chain, 1);
	sk_X509_free(chain); /* SSL took its own references */
	return ok == 1 ? 0 : -1;
}
