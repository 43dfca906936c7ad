/* forge.c: names refused and folded, the leaf's extensions and validity,
 * the chain verifying against the CA, mirroring, the LRU bound. */
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "forge.h"
#include "t.h"

static char ca_path[] = "/tmp/test_forge_ca_XXXXXX";
static char key_path[] = "/tmp/test_forge_key_XXXXXX";

/* A self-signed lab CA (and with names, a server leaf signed by it). */
static X509 *make_cert(EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, const char *cn,
                       const char *san)
{
	X509 *x = X509_new();
	X509V3_CTX ctx;
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"lab", -1, -1, 0);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
	X509_set_pubkey(x, key);
	X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
	X509_EXTENSION *e;
	if (issuer == NULL) {
		e = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
		X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
		e = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_key_identifier, "hash");
		X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
	}
	if (san != NULL) {
		e = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
		X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
	}
	X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256());
	return x;
}

static int count_ext(X509 *x, int nid, int *crit)
{
	int i = X509_get_ext_by_NID(x, nid, -1);
	if (i < 0)
		return 0;
	if (crit)
		*crit = X509_EXTENSION_get_critical(X509_get_ext(x, i));
	return 1;
}

/* The SANs of x: "DNS:a,XMPP:a,..." */
static void sans(X509 *x, char *out, size_t len)
{
	GENERAL_NAMES *g = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	out[0] = '\0';
	for (int i = 0; g && i < sk_GENERAL_NAME_num(g); i++) {
		const GENERAL_NAME *n = sk_GENERAL_NAME_value(g, i);
		char one[300] = "";
		if (n->type == GEN_DNS)
			snprintf(one, sizeof(one), "DNS:%s,", ASN1_STRING_get0_data(n->d.dNSName));
		else if (n->type == GEN_OTHERNAME) {
			char oid[64];
			OBJ_obj2txt(oid, sizeof(oid), n->d.otherName->type_id, 1);
			if (strcmp(oid, "1.3.6.1.5.5.7.8.5") == 0 &&
			    n->d.otherName->value->type == V_ASN1_UTF8STRING)
				snprintf(one, sizeof(one), "XMPP:%s,",
				         ASN1_STRING_get0_data(n->d.otherName->value->value.utf8string));
		}
		strncat(out, one, len - strlen(out) - 1);
	}
	GENERAL_NAMES_free(g);
}

static bool verifies(X509 *ca, X509 *leaf, const char *host)
{
	X509_STORE *st = X509_STORE_new();
	X509_STORE_add_cert(st, ca);
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	X509_STORE_CTX_init(ctx, st, leaf, NULL);
	X509_VERIFY_PARAM *p = X509_STORE_CTX_get0_param(ctx);
	X509_VERIFY_PARAM_set_purpose(p, X509_PURPOSE_SSL_SERVER);
	X509_VERIFY_PARAM_set1_host(p, host, 0);
	int ok = X509_verify_cert(ctx);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(st);
	return ok == 1;
}

static void test_names(void)
{
	char out[MAX_DOMAIN + 1];
	const char *why;
	T_CHECK(forge_name("a.test", out, sizeof(out), &why) == 0 && strcmp(out, "a.test") == 0,
	        "name plain");
	T_CHECK(forge_name("A.TeSt.", out, sizeof(out), &why) == 0 && strcmp(out, "a.test") == 0,
	        "name folded, trailing dot");
	T_CHECK(forge_name("b\xc3\xbc" "cher.test", out, sizeof(out), &why) == 0 &&
	            strcmp(out, "xn--bcher-kva.test") == 0,
	        "name IDN to A-label");
	T_CHECK(forge_name("*", out, sizeof(out), &why) < 0 && out[0] == '\0', "name * refused");
	T_CHECK(forge_name("*.a.test", out, sizeof(out), &why) < 0, "name wildcard refused");
	T_CHECK(forge_name("10.0.0.1", out, sizeof(out), &why) < 0 &&
	            strcmp(why, "an IP address") == 0,
	        "name IPv4 refused");
	T_CHECK(forge_name("[::1]", out, sizeof(out), &why) < 0, "name IPv6 refused");
	T_CHECK(forge_name("::1", out, sizeof(out), &why) < 0, "name bare IPv6 refused");
	T_CHECK(forge_name("", out, sizeof(out), &why) < 0, "name empty refused");
	T_CHECK(forge_name("a..test", out, sizeof(out), &why) < 0, "name empty label refused");
	T_CHECK(forge_name(".a.test", out, sizeof(out), &why) < 0, "name leading dot refused");
	T_CHECK(forge_name("-a.test", out, sizeof(out), &why) < 0, "name leading hyphen refused");
	T_CHECK(forge_name("a-.test", out, sizeof(out), &why) < 0, "name trailing hyphen refused");
	T_CHECK(forge_name("a_b.test", out, sizeof(out), &why) < 0, "name underscore refused");
	T_CHECK(forge_name("a b.test", out, sizeof(out), &why) < 0, "name space refused");
	T_CHECK(forge_name("a.test\xff", out, sizeof(out), &why) < 0, "name bad UTF-8 refused");
	T_CHECK(forge_name("a\ncn=x.test", out, sizeof(out), &why) < 0, "name newline refused");
	char big[2048];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	for (size_t i = 60; i < sizeof(big) - 1; i += 61)
		big[i] = '.';
	T_CHECK(forge_name(big, out, sizeof(out), &why) < 0 && strcmp(why, "name too long") == 0,
	        "name 2 KB refused");
	char label[80];
	memset(label, 'a', 64);
	strcpy(label + 64, ".test");
	T_CHECK(forge_name(label, out, sizeof(out), &why) < 0, "name 64-byte label refused");
	label[63] = '.';
	strcpy(label + 64, "test");
	T_CHECK(forge_name(label, out, sizeof(out), &why) == 0, "name 63-byte label taken");
	/* exactly 253 characters is the longest */
	char max[300];
	memset(max, 'a', 253);
	max[253] = '\0';
	for (size_t i = 50; i < 253; i += 51)
		max[i] = '.';
	T_CHECK(forge_name(max, out, sizeof(out), &why) == 0, "name 253 taken");
	max[253] = 'a';
	max[254] = '\0';
	T_CHECK(forge_name(max, out, sizeof(out), &why) < 0, "name 254 refused");
}

int main(void)
{
	char err[512];
	EVP_PKEY *cakey = EVP_EC_gen("P-256");
	X509 *ca = make_cert(cakey, NULL, NULL, "forge test CA", NULL);
	int fd1 = mkstemp(ca_path), fd2 = mkstemp(key_path);
	FILE *f1 = fdopen(fd1, "w"), *f2 = fdopen(fd2, "w");
	PEM_write_X509(f1, ca);
	PEM_write_PrivateKey(f2, cakey, NULL, NULL, 0, NULL, NULL);
	fclose(f1);
	fclose(f2);

	test_names();

	T_CHECK(forge_new("/nonexistent", key_path, 4, err, sizeof(err)) == NULL &&
	            strstr(err, "forge_ca") != NULL,
	        "missing CA refused");
	T_CHECK(forge_new(ca_path, ca_path, 4, err, sizeof(err)) == NULL, "CA as key refused");
	/* a key that is not the CA's */
	char other_path[] = "/tmp/test_forge_other_XXXXXX";
	EVP_PKEY *other = EVP_EC_gen("P-256");
	FILE *f3 = fdopen(mkstemp(other_path), "w");
	PEM_write_PrivateKey(f3, other, NULL, NULL, 0, NULL, NULL);
	fclose(f3);
	T_CHECK(forge_new(ca_path, other_path, 4, err, sizeof(err)) == NULL &&
	            strstr(err, "does not match") != NULL,
	        "mismatched key refused");
	unlink(other_path);

	struct forge *fg = forge_new(ca_path, key_path, 3, err, sizeof(err));
	T_CHECK(fg != NULL, "forge_new");
	if (fg == NULL)
		T_DONE();
	struct forge_leaf *a = forge_get(fg, "a.test", NULL, err, sizeof(err));
	T_CHECK(a != NULL && a->nnames == 1 && strcmp(a->names[0], "a.test") == 0, "leaf names");
	X509 *x = a->cert;
	char buf[1024];
	sans(x, buf, sizeof(buf));
	T_STREQ(buf, "DNS:a.test,XMPP:a.test,", "leaf SANs dNSName + xmppAddr");
	X509_NAME_oneline(X509_get_subject_name(x), buf, sizeof(buf));
	T_STREQ(buf, "/CN=a.test", "leaf subject CN");
	T_CHECK(verifies(ca, x, "a.test"), "leaf verifies for a.test");
	T_CHECK(!verifies(ca, x, "b.test"), "leaf does not verify for b.test");
	int crit = 0;
	T_CHECK(count_ext(x, NID_basic_constraints, &crit) && crit, "basicConstraints critical");
	T_CHECK(X509_check_ca(x) == 0, "leaf is not a CA");
	T_CHECK(count_ext(x, NID_key_usage, &crit) && crit &&
	            X509_get_key_usage(x) == KU_DIGITAL_SIGNATURE,
	        "keyUsage digitalSignature only");
	T_CHECK(X509_get_extended_key_usage(x) == XKU_SSL_SERVER, "extendedKeyUsage serverAuth");
	T_CHECK(X509_get0_subject_key_id(x) != NULL, "SKI present");
	T_CHECK(X509_get0_authority_key_id(x) != NULL &&
	            ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(x),
	                                  X509_get0_subject_key_id(ca)) == 0,
	        "AKI is the CA's SKI");
	EVP_PKEY *pk = X509_get0_pubkey(x);
	char group[32] = "";
	size_t glen = 0;
	EVP_PKEY_get_group_name(pk, group, sizeof(group), &glen);
	T_CHECK(EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC && strcmp(group, "prime256v1") == 0,
	        "ECDSA P-256 key");
	T_CHECK(X509_check_private_key(x, a->key) == 1, "key matches");
	const ASN1_INTEGER *ser = X509_get0_serialNumber(x);
	BIGNUM *bn = ASN1_INTEGER_to_BN(ser, NULL);
	T_CHECK(BN_num_bits(bn) >= 64 && !BN_is_negative(bn), "serial >= 64 random bits");
	BN_free(bn);
	int days, secs;
	ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x));
	T_CHECK((long)days * 86400 + secs == FORGE_VALIDITY + FORGE_BACKDATE, "validity span");
	time_t now = time(NULL);
	T_CHECK(X509_cmp_time(X509_get0_notBefore(x), &now) < 0 &&
	            X509_cmp_time(X509_get0_notAfter(x), &now) > 0,
	        "valid now");
	time_t skew = now - FORGE_BACKDATE / 2;
	T_CHECK(X509_cmp_time(X509_get0_notBefore(x), &skew) < 0, "backdated for clock skew");

	struct forge_leaf *a2 = forge_get(fg, "a.test", NULL, err, sizeof(err));
	T_CHECK(a2 == a, "cache hit gives the same leaf");
	struct forge_leaf *b = forge_get(fg, "b.test", NULL, err, sizeof(err));
	T_CHECK(b != NULL && b != a && ASN1_INTEGER_cmp(X509_get0_serialNumber(b->cert), ser) != 0,
	        "another name, another serial");
	struct forge_stats st;
	forge_stats(fg, &st);
	T_CHECK(st.made == 2 && st.hits == 1 && st.cached == 2, "stats");

	/* LRU: capacity 3; touch a, add c and d: b (least recent) leaves */
	forge_leaf_unref(forge_get(fg, "a.test", NULL, err, sizeof(err)));
	struct forge_leaf *c = forge_get(fg, "c.test", NULL, err, sizeof(err));
	struct forge_leaf *d = forge_get(fg, "d.test", NULL, err, sizeof(err));
	forge_stats(fg, &st);
	T_CHECK(st.cached == 3 && st.evicted == 1, "LRU bound kept");
	struct forge_leaf *a3 = forge_get(fg, "a.test", NULL, err, sizeof(err));
	T_CHECK(a3 == a, "recently used a stays");
	struct forge_leaf *b2 = forge_get(fg, "b.test", NULL, err, sizeof(err));
	T_CHECK(b2 != b, "least recently used b was evicted, made again");
	/* an evicted leaf still in use stays valid */
	T_CHECK(X509_check_private_key(b->cert, b->key) == 1, "evicted leaf still usable");

	/* mirror: subject and names of the server's certificate */
	EVP_PKEY *skey = EVP_EC_gen("P-256");
	X509 *srv = make_cert(skey, ca, cakey, "real server",
	                      "DNS:a.test,DNS:*.a.test,DNS:conference.a.test,DNS:bad_name.test,"
	                      "IP:127.0.0.1,otherName:1.3.6.1.5.5.7.8.5;UTF8:a.test,"
	                      "otherName:1.3.6.1.5.5.7.8.5;UTF8:upload.a.test");
	struct forge_leaf *m = forge_get(fg, "chat.a.test", srv, err, sizeof(err));
	T_CHECK(m != NULL, "mirror leaf");
	sans(m->cert, buf, sizeof(buf));
	T_STREQ(buf,
	        "DNS:chat.a.test,DNS:a.test,DNS:*.a.test,DNS:conference.a.test,XMPP:chat.a.test,"
	        "XMPP:a.test,XMPP:upload.a.test,",
	        "mirror copies names, requested first, bad ones and IPs skipped");
	X509_NAME_oneline(X509_get_subject_name(m->cert), buf, sizeof(buf));
	T_STREQ(buf, "/O=lab/CN=real server", "mirror copies the subject");
	T_CHECK(m->nnames == 4, "mirror names listed");
	T_CHECK(verifies(ca, m->cert, "conference.a.test"), "mirror verifies for a copied name");
	struct forge_leaf *m2 = forge_get(fg, "chat.a.test", NULL, err, sizeof(err));
	T_CHECK(m2 != m, "mirror and plain leaves are cached apart");

	/* a server certificate naming more than a leaf may carry: the first
	 * MAX_FORGE_NAMES - 1 after the requested one; and one naming none */
	char many[4096] = "";
	for (int i = 0; i < MAX_FORGE_NAMES + 8; i++) {
		char one[40];
		snprintf(one, sizeof(one), "%sDNS:n%d.a.test", i ? "," : "", i);
		strcat(many, one);
	}
	X509 *srv2 = make_cert(skey, ca, cakey, "many", many);
	struct forge_leaf *m3 = forge_get(fg, "x.a.test", srv2, err, sizeof(err));
	T_CHECK(m3 != NULL && m3->nnames == MAX_FORGE_NAMES &&
	            strcmp(m3->names[0], "x.a.test") == 0 &&
	            strcmp(m3->names[MAX_FORGE_NAMES - 1], "n30.a.test") == 0,
	        "mirror names capped at MAX_FORGE_NAMES");
	X509 *srv3 = make_cert(skey, ca, cakey, "nameless", NULL);
	struct forge_leaf *m4 = forge_get(fg, "y.a.test", srv3, err, sizeof(err));
	T_CHECK(m4 != NULL && m4->nnames == 1 && verifies(ca, m4->cert, "y.a.test"),
	        "mirror of a certificate without SANs names the requested domain");
	forge_leaf_unref(m3);
	forge_leaf_unref(m4);
	X509_free(srv2);
	X509_free(srv3);

	SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
	SSL *ssl = SSL_new(sctx);
	T_CHECK(forge_use(a, ssl) == 0 && SSL_get_certificate(ssl) != NULL &&
	            X509_cmp(SSL_get_certificate(ssl), a->cert) == 0,
	        "forge_use presents the leaf");
	SSL_free(ssl);
	SSL_CTX_free(sctx);

	struct forge_leaf *all[] = {a, a2, a3, b, b2, c, d, m, m2};
	forge_free(fg); /* leaves outlive the cache */
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		forge_leaf_unref(all[i]);
	X509_free(srv);
	EVP_PKEY_free(skey);
	X509_free(ca);
	EVP_PKEY_free(cakey);
	EVP_PKEY_free(other);
	unlink(ca_path);
	unlink(key_path);
	T_DONE();
}
