#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "bounds.h"
#include "tickets.h"

/* An upstream's key: its address, port, the name its certificate was
 * checked for, and whether ALPN was offered. */
#define TICKETS_KEY_MAX (INET6_ADDRSTRLEN + 8 + 256 + 4)

struct tickets_upstream {
	char key[TICKETS_KEY_MAX];               /* empty: a free slot */
	SSL_SESSION *sess[TICKETS_PER_UPSTREAM]; /* oldest first */
	int n;
	unsigned long filled; /* when a session last came in (store's clock) */
};

struct tickets_store {
	struct tickets_upstream up[TICKETS_UPSTREAMS];
	unsigned long clock;
};

static int tickets_ctx_idx = -1; /* SSL_CTX ex_data: its store */
static int tickets_ssl_idx = -1; /* SSL ex_data: its upstream's key */

static void tickets_drop(struct tickets_upstream *u)
{
	for (int i = 0; i < u->n; i++)
		SSL_SESSION_free(u->sess[i]);
	memset(u, 0, sizeof(*u));
}

/* Fires when a context (and so its store) is freed. */
static void tickets_store_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                               void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	struct tickets_store *st = ptr;
	if (st == NULL)
		return;
	for (int i = 0; i < TICKETS_UPSTREAMS; i++)
		tickets_drop(&st->up[i]);
	free(st);
}

/* Fires when an SSL (and so its key) is freed. */
static void tickets_key_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                             void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	free(ptr);
}

static struct tickets_upstream *tickets_find(struct tickets_store *st, const char *key)
{
	for (int i = 0; i < TICKETS_UPSTREAMS; i++)
		if (strcmp(st->up[i].key, key) == 0)
			return &st->up[i];
	return NULL;
}

static bool tickets_fresh(SSL_SESSION *sess, time_t now)
{
	long age = (long)(now - (time_t)SSL_SESSION_get_time(sess));
	return SSL_SESSION_is_resumable(sess) && age >= 0 && age < TICKETS_MAX_AGE &&
	       age < SSL_SESSION_get_timeout(sess);
}

/*
 * Fires when the upstream gives ssl a session: a TLS 1.3 NewSessionTicket
 * after the handshake, or a TLS 1.2 handshake's end. Kept (returns 1: the
 * reference is ours) only if the certificate verified, for the name in the
 * key (SSL_set1_host), so that a resumed session, which shows no
 * certificate, stands for one that did: the same name, the same address,
 * a chain the current CA accepted. upstream_verify = no does not matter: a
 * session that did not verify is never kept, one that did may serve both.
 */
static int tickets_new_session(SSL *ssl, SSL_SESSION *sess)
{
	const char *key = SSL_get_ex_data(ssl, tickets_ssl_idx);
	struct tickets_store *st = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tickets_ctx_idx);
	if (key == NULL || st == NULL || SSL_get_verify_result(ssl) != X509_V_OK ||
	    SSL_get0_peer_certificate(ssl) == NULL || !SSL_SESSION_is_resumable(sess))
		return 0;
	struct tickets_upstream *u = tickets_find(st, key);
	if (u == NULL) {
		u = &st->up[0]; /* a free slot, else the least recently filled */
		for (int i = 1; i < TICKETS_UPSTREAMS && u->key[0] != '\0'; i++)
			if (st->up[i].key[0] == '\0' || st->up[i].filled < u->filled)
				u = &st->up[i];
		tickets_drop(u);
		snprintf(u->key, sizeof(u->key), "%s", key);
	}
	if (u->n == TICKETS_PER_UPSTREAM) {
		SSL_SESSION_free(u->sess[0]);
		memmove(u->sess, u->sess + 1, (size_t)(u->n - 1) * sizeof(u->sess[0]));
		u->n--;
	}
	u->sess[u->n++] = sess;
	u->filled = ++st->clock;
	return 1;
}

int tickets_attach(SSL_CTX *ctx)
{
	if (tickets_ctx_idx < 0)
		tickets_ctx_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, tickets_store_free);
	if (tickets_ssl_idx < 0)
		tickets_ssl_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, tickets_key_free);
	if (tickets_ctx_idx < 0 || tickets_ssl_idx < 0)
		return -1;
	struct tickets_store *st = calloc(1, sizeof(*st));
	if (st == NULL || SSL_CTX_set_ex_data(ctx, tickets_ctx_idx, st) != 1) {
		free(st);
		return -1;
	}
	/* the client side of OpenSSL's cache only calls us; its own store
	 * would be looked up by nobody */
	SSL_CTX_set_session_cache_mode(ctx,
	                               SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, tickets_new_session);
	return 0;
}

/* The key of fd's peer toward domain into key; -1 if fd has no IP peer
 * or the key would not fit. */
static int tickets_key(int fd, const char *domain, bool alpn, char *key, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	char addr[INET6_ADDRSTRLEN];
	unsigned port;
	if (getpeername(fd, (struct sockaddr *)&ss, &sslen) < 0)
		return -1;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &in->sin_addr, addr, sizeof(addr));
		port = ntohs(in->sin_port);
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof(addr));
		port = ntohs(in6->sin6_port);
	} else {
		return -1;
	}
	int n = snprintf(key, len, "%s %u %s %d", addr, port, domain, alpn);
	return n > 0 && (size_t)n < len ? 0 : -1;
}

int tickets_offer(SSL *ssl, int fd, const char *domain, bool alpn)
{
	char key[TICKETS_KEY_MAX];
	struct tickets_store *st = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tickets_ctx_idx);
	if (st == NULL || tickets_key(fd, domain, alpn, key, sizeof(key)) < 0)
		return 0; /* nothing kept for this one: a full handshake each time */
	char *mine = strdup(key);
	if (mine == NULL || SSL_set_ex_data(ssl, tickets_ssl_idx, mine) != 1) {
		free(mine);
		return -1;
	}
	struct tickets_upstream *u = tickets_find(st, key);
	time_t now = time(NULL);
	while (u != NULL && u->n > 0) {
		SSL_SESSION *sess = u->sess[--u->n]; /* the newest */
		bool fresh = tickets_fresh(sess, now);
		int ok = fresh ? SSL_set_session(ssl, sess) : 1;
		SSL_SESSION_free(sess); /* ssl holds its own reference */
		if (fresh)
			return ok == 1 ? 0 : -1;
	}
	return 0;
}
