#include <stdio.h>
#include <string.h>

#include "conf.h"
#include "evlog.h"
#include "forge.h"
#include "leg.h"
#include "log.h"
#include "login_forge.h"
#include "login_int.h"

/* The host name of a ClientHello's server_name extension (RFC 6066 3) in
 * out: 1, or 0 if there is none, or -1 (out "") if it is malformed, holds
 * a NUL or is longer than out can take. Only the first entry counts, and
 * only a host_name one. */
static int login_forge_sni(SSL *ssl, char *out, size_t outlen)
{
	const unsigned char *p;
	size_t len;
	out[0] = '\0';
	if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len) != 1)
		return 0;
	if (len < 5)
		return -1;
	size_t list = (size_t)p[0] << 8 | p[1];
	size_t n = (size_t)p[3] << 8 | p[4];
	if (list + 2 != len || p[2] != TLSEXT_NAMETYPE_host_name || n + 5 > len || n == 0 ||
	    n >= outlen || memchr(p + 5, '\0', n) != NULL)
		return -1;
	memcpy(out, p + 5, n);
	out[n] = '\0';
	return 1;
}

/* A refused name is logged as a policy event, with what is used instead. */
static void login_forge_refused(const struct session *s, const char *src, const char *why,
                                const char *instead)
{
	char detail[200];
	snprintf(detail, sizeof(detail), "%s name refused for a certificate: %s; %s", src, why,
	         instead);
	evlog_begin(s->id, "policy");
	evlog_str("rule", "forge_name");
	evlog_str("action", "log");
	evlog_str("detail", detail);
	evlog_end();
	log_debug("session %llu: %s", (unsigned long long)s->id, detail);
}

/* Fires for every ClientHello on a client leg (OpenSSL's client hello
 * callback), before the certificate is chosen. */
static int login_forge_hello(SSL *ssl, int *alert, void *arg)
{
	(void)alert;
	struct proxy *px = arg;
	struct session *s = SSL_get_app_data(ssl);
	char sni[MAX_DOMAIN + 2], name[MAX_DOMAIN + 1], err[300];
	const char *why = NULL, *src;

	if (px->forge == NULL || s == NULL || s->lg == NULL || s->lg->forged != NULL)
		return SSL_CLIENT_HELLO_SUCCESS;
	const struct conf *c = login_conf(s);
	int have_sni = login_forge_sni(ssl, sni, sizeof(sni));
	const char *req;
	if (s->lg->domain[0] != '\0') {
		req = s->lg->domain, src = "stream 'to'";
	} else if (have_sni < 0) {
		/* too long for any domain, or malformed: as a refused name */
		req = "", src = "SNI";
	} else if (sni[0] != '\0') {
		req = sni, src = "SNI";
	} else if (c->default_domain != NULL) {
		req = c->default_domain, src = "default_domain";
	} else {
		login_forge_refused(s, "no", "the client named no domain",
		                    "using the static certificate");
		return SSL_CLIENT_HELLO_SUCCESS;
	}
	if (forge_name(req, name, sizeof(name), &why) < 0) {
		const char *refused = have_sni < 0 && req[0] == '\0'
		                          ? "malformed, or longer than a domain can be"
		                          : why;
		const char *ignored;
		if (c->default_domain == NULL ||
		    forge_name(c->default_domain, name, sizeof(name), &ignored) < 0) {
			login_forge_refused(s, src, refused, "using the static certificate");
			return SSL_CLIENT_HELLO_SUCCESS;
		}
		login_forge_refused(s, src, refused, "using default_domain");
		src = "default_domain";
	}
	X509 *mirror = NULL;
	if (c->forge_mirror && !s->lg->forge_no_mirror) {
		if (s->lg->upstream_tls && s->upstream.ssl != NULL)
			mirror = SSL_get0_peer_certificate(s->upstream.ssl);
		else if (s->lg->upstream_mode != CONF_UPSTREAM_NONE && strcmp(src, "SNI") == 0) {
			/* Direct TLS: the upstream learns the domain from this
			 * SNI; the handshake goes on once it has the server's
			 * certificate (login_forge_resume) */
			snprintf(s->lg->forge_pending, sizeof(s->lg->forge_pending), "%s", name);
			s->lg->forge_waiting = true;
			return SSL_CLIENT_HELLO_RETRY;
		}
	}
	struct forge_leaf *leaf = forge_get(px->forge, name, mirror, err, sizeof(err));
	if (leaf == NULL) {
		login_forge_refused(s, src, err, "using the static certificate");
		return SSL_CLIENT_HELLO_SUCCESS;
	}
	if (forge_use(leaf, ssl) < 0) {
		forge_leaf_unref(leaf);
		login_forge_refused(s, src, "cannot use the forged certificate",
		                    "using the static certificate");
		return SSL_CLIENT_HELLO_SUCCESS;
	}
	s->lg->forged = leaf;
	s->lg->forge_mirrored = mirror != NULL;
	return SSL_CLIENT_HELLO_SUCCESS;
}

void login_forge_install(SSL_CTX *ctx, struct proxy *px)
{
	SSL_CTX_set_client_hello_cb(ctx, login_forge_hello, px);
}

void login_forge_attach(struct session *s, SSL *ssl)
{
	SSL_set_app_data(ssl, s);
}

void login_forge_paused(struct session *s)
{
	if (s->lg->domain[0] == '\0')
		snprintf(s->lg->domain, sizeof(s->lg->domain), "%s", s->lg->forge_pending);
	login_start_upstream_stream(s);
}

void login_forge_resume(struct session *s, bool give_up)
{
	if (s->lg == NULL)
		return;
	if (give_up)
		s->lg->forge_no_mirror = true; /* and a later ClientHello does not wait */
	if (!s->lg->forge_waiting)
		return;
	s->lg->forge_waiting = false;
	leg_resume_tls(&s->client);
}

void login_forge_free(struct session *s)
{
	forge_leaf_unref(s->lg->forged);
	s->lg->forged = NULL;
}

void login_forge_audit(const struct session *s)
{
	if (s->lg->forged == NULL) {
		if (s->px->forge != NULL)
			evlog_bool("forged", false);
		return;
	}
	evlog_bool("forged", true);
	evlog_strlist("names", (const char *const *)s->lg->forged->names, s->lg->forged->nnames);
	if (s->lg->forge_mirrored)
		evlog_bool("mirrored", true);
}
