/* tools/loadgen: an XMPP login load generator for tools/bench.
 *
 * N full client logins at concurrency C against one address: TCP connect,
 * stream header, features, STARTTLS and the TLS handshake (or Direct TLS),
 * restart, SASL PLAIN or SCRAM-SHA-1, restart, resource bind; then optional
 * message round trips (a message to its own full JID, awaited), then
 * `</stream:stream>` and close. Afterwards, optionally, H more logins that
 * stay open (held) until every process holds its share, to measure the
 * server's (or relay's) memory per held session.
 *
 * One process per core (fork), each one libev loop with its share of the
 * connections; no thread per connection. Results go to shared memory and the
 * parent prints one human line and one JSON line. Given --pid, the parent
 * reads the utime+stime of each process and its descendants (a proxy's
 * workers; /proc/PID/stat) before and after the
 * login phase (CPU µs per login) and VmRSS (/proc/PID/status) before and
 * after the hold phase (KiB per held session).
 *
 * This is a benchmark client, not a conformant XMPP parser: it finds the
 * server's replies by their literal text (`</stream:features>`, `<success`,
 * `</iq>`...), which is what Prosody, xmpp-inspect and tools/fastupstream
 * send. Anything unexpected ends that login as a failure of a named kind;
 * a login not done within --timeout is a stall. Every buffer is bounded.
 *
 * SCRAM-SHA-1: the salted password (PBKDF2) is computed once per
 * (salt, iteration count) in each process and cached, as real clients cache
 * it; the proofs are computed per login.
 */
#include "toolwire.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

/* The server's features after TLS (Prosody's are ~600 bytes) and any one
 * reply must fit, plus an echoed message (--msg-size and its markup); more
 * without the awaited text is a protocol failure. */
#define IN_BASE (16 * 1024)
#define IN_MAX(o) (IN_BASE + 2 * (size_t)(o)->msg_size)
/* Our own requests are short; a message adds its body size. */
#define OUT_BASE 2048
#define MAX_PROCS 64
#define MAX_PIDS 16
#define MAX_MSG_SIZE (1024 * 1024)
#define MAX_LOGINS 10000000
#define SCRAM_CACHE 8

enum fail_kind {
	F_CONNECT = 0,
	F_TLS,
	F_STREAM_ERROR,
	F_AUTH,
	F_BIND,
	F_CLOSED,
	F_PROTO,
	F_STALL,
	F_NKINDS
};
static const char *const step_names[] = {"connect",       "direct_tls", "features",  "proceed",
                                         "starttls_tls",  "mechanisms", "challenge", "sasl_result",
                                         "bind_features", "bind",       "message",   "held"};
static const char *const fail_names[F_NKINDS] = {"connect", "tls",    "stream_error", "auth",
                                                 "bind",    "closed", "proto",        "stall"};

enum step {
	S_CONNECT = 0,
	S_DIRECT_TLS, /* Direct TLS handshake before any XML */
	S_FEAT0,      /* awaiting the features before TLS */
	S_PROCEED,    /* awaiting <proceed/> */
	S_TLS,        /* STARTTLS handshake */
	S_FEAT1,      /* awaiting the features after TLS (mechanisms) */
	S_CHALLENGE,  /* SCRAM: awaiting the server-first message */
	S_RESULT,     /* awaiting <success/> (or SCRAM's final challenge) */
	S_FEAT2,      /* awaiting the features after authentication */
	S_BIND,       /* awaiting the bind result */
	S_MSG,        /* awaiting our own message back */
	S_HELD,       /* logged in and held open */
};

struct opts {
	const char *host;
	int port;
	int direct_tls;
	int scram;
	const char *user;
	const char *password;
	const char *domain;
	const char *ca;
	int insecure;
	long logins;
	long conc;
	long msgs;
	long msg_size;
	long hold;
	long linger; /* seconds the held sessions stay open after the measure */
	long settle; /* seconds between all held and the measure */
	double timeout;
	int procs;
	int pids[MAX_PIDS];
	int npids;
	const char *label;
	int nodelay;
};

/* Per-process counters in shared memory (written by that child only). */
struct wstats {
	long ok, failed, held, held_failed;
	long fail[F_NKINDS];
	double cpu_s; /* this process's own CPU over the login phase */
	long nlat, nrtt;
	long stall_step[S_HELD + 1]; /* where the stalls stopped */
};

struct shared {
	struct wstats w[MAX_PROCS];
};

struct worker {
	struct ev_loop *loop;
	struct opts *o;
	SSL_CTX *ctx;
	struct sockaddr_in addr;
	int id;
	long quota, started, done; /* login phase */
	long hquota, hstarted, hdone;
	long active, conc;
	int holding;       /* phase 2 */
	int hold_reported; /* 'H' sent */
	double *lat;
	long lat_cap;
	double *rtt;
	long rtt_cap;
	struct wstats *st;
	struct conn **held;
	long nheld;
	int release_fd;
	ev_io release_io;
	int report_fd;
	char *msg_body;
	struct {
		char key[160];
		unsigned char client_key[20], stored_key[20], server_key[20];
	} scram[SCRAM_CACHE];
	int nscram;
};

struct conn {
	ev_io io;
	ev_timer timer;
	struct worker *w;
	int fd;
	SSL *ssl;
	enum step step;
	int hold;
	int eof; /* the peer closed: what came before it is handled first */
	long idx;
	double t0, mt0;
	long msgs_left;
	char *in;
	size_t inlen;
	char *out;
	size_t outlen, outcap;
	char jid[512];
	char cnonce[40];
	char auth_msg[1024];
	unsigned char server_sig[20];
};

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void start_conn(struct worker *w, int hold);
static void conn_io_cb(struct ev_loop *loop, ev_io *io, int revents);

/* ---------------------------------------------------------------- output */

static void conn_put(struct conn *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(c->out + c->outlen, c->outcap - c->outlen, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= c->outcap - c->outlen) {
		fprintf(stderr, "loadgen: output buffer too small\n");
		abort(); /* our own requests: a bug here, not the peer's */
	}
	c->outlen += (size_t)n;
}

static void put_header(struct conn *c)
{
	conn_put(c,
	         "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
	         "xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>",
	         c->w->o->domain);
}

/* ------------------------------------------------------------- lifecycle */

static void conn_free(struct conn *c)
{
	struct worker *w = c->w;
	ev_io_stop(w->loop, &c->io);
	ev_timer_stop(w->loop, &c->timer);
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->fd >= 0)
		close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
}

static void worker_next(struct worker *w);

/* The end of one login (ok or not): counts it, frees or holds it, and
 * starts the next. */
static void conn_done(struct conn *c, int kind)
{
	struct worker *w = c->w;
	int hold = c->hold;
	w->active--;
	if (hold)
		w->hdone++;
	else
		w->done++;
	if (kind < 0) {
		if (hold) {
			w->st->held++;
			/* keep the TCP connection only: the client's TLS state is
			 * not needed to hold the session open */
			ev_io_stop(w->loop, &c->io);
			ev_timer_stop(w->loop, &c->timer);
			SSL_free(c->ssl);
			c->ssl = NULL;
			free(c->in);
			free(c->out);
			c->in = c->out = NULL;
			c->step = S_HELD;
			w->held[w->nheld++] = c;
		} else {
			w->st->ok++;
			conn_free(c);
		}
	} else {
		if (hold)
			w->st->held_failed++;
		else
			w->st->failed++;
		w->st->fail[kind]++;
		conn_free(c);
	}
	worker_next(w);
}

static void conn_fail(struct conn *c, int kind)
{
	conn_done(c, kind);
}

/* Sends `</stream:stream>` and a TLS close_notify, then closes: the login
 * is over. A relay sees the usual end of a session. */
static void conn_finish(struct conn *c)
{
	if (c->ssl) {
		static const char end[] = "</stream:stream>";
		ERR_clear_error();
		(void)SSL_write(c->ssl, end, sizeof end - 1);
		(void)SSL_shutdown(c->ssl);
	}
	conn_done(c, -1);
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop;
	(void)revents;
	struct conn *c = (struct conn *)((char *)t - offsetof(struct conn, timer));
	c->w->st->stall_step[c->step]++;
	conn_fail(c, F_STALL);
}

/* --------------------------------------------------------------- SASL */

static void send_plain(struct conn *c)
{
	struct opts *o = c->w->o;
	unsigned char raw[600];
	size_t ul = strlen(o->user), pl = strlen(o->password);
	if (ul + pl + 2 > sizeof raw) {
		fprintf(stderr, "loadgen: user/password too long\n");
		exit(2);
	}
	raw[0] = 0;
	memcpy(raw + 1, o->user, ul);
	raw[1 + ul] = 0;
	memcpy(raw + 2 + ul, o->password, pl);
	char b64[900];
	toolwire_b64_enc(b64, sizeof b64, raw, ul + pl + 2);
	OPENSSL_cleanse(raw, sizeof raw);
	conn_put(c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>",
	         b64);
	OPENSSL_cleanse(b64, sizeof b64);
}

static void send_scram_first(struct conn *c)
{
	unsigned char rnd[18];
	RAND_bytes(rnd, sizeof rnd);
	toolwire_b64_enc(c->cnonce, sizeof c->cnonce, rnd, sizeof rnd);
	char bare[400], b64[600];
	snprintf(bare, sizeof bare, "n=%s,r=%s", c->w->o->user, c->cnonce);
	snprintf(c->auth_msg, sizeof c->auth_msg, "%s", bare);
	char first[420];
	int n = snprintf(first, sizeof first, "n,,%s", bare);
	toolwire_b64_enc(b64, sizeof b64, (unsigned char *)first, (size_t)n);
	conn_put(c,
	         "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>%s</auth>",
	         b64);
}

/* Answers the server-first message; 0 or -1 (a bad challenge). */
static int send_scram_final(struct conn *c, const char *sfirst)
{
	struct worker *w = c->w;
	size_t rl, sl, il;
	const char *r = toolwire_scram_attr(sfirst, 'r', &rl), *s = toolwire_scram_attr(sfirst, 's', &sl),
	           *i = toolwire_scram_attr(sfirst, 'i', &il);
	size_t cl = strlen(c->cnonce);
	if (!r || !s || !i || rl <= cl || memcmp(r, c->cnonce, cl) || sl > 100 || il > 10)
		return -1;
	char key[160];
	snprintf(key, sizeof key, "%.*s,%.*s", (int)sl, s, (int)il, i);
	int slot = -1;
	for (int k = 0; k < w->nscram; k++)
		if (!strcmp(w->scram[k].key, key))
			slot = k;
	if (slot < 0) {
		unsigned char salt[80], salted[20];
		char sb[101];
		memcpy(sb, s, sl);
		sb[sl] = 0;
		int saltlen = toolwire_b64_dec(salt, sizeof salt, sb, sl);
		long iter = strtol(i, NULL, 10);
		if (saltlen <= 0 || iter <= 0 || iter > 10000000)
			return -1;
		const char *pw = w->o->password;
		if (!PKCS5_PBKDF2_HMAC(pw, (int)strlen(pw), salt, saltlen, (int)iter, EVP_sha1(),
		                       20, salted))
			return -1;
		slot = w->nscram < SCRAM_CACHE ? w->nscram++ : 0;
		snprintf(w->scram[slot].key, sizeof w->scram[slot].key, "%s", key);
		unsigned int hl = 20;
		HMAC(EVP_sha1(), salted, 20, (const unsigned char *)"Client Key", 10,
		     w->scram[slot].client_key, &hl);
		SHA1(w->scram[slot].client_key, 20, w->scram[slot].stored_key);
		HMAC(EVP_sha1(), salted, 20, (const unsigned char *)"Server Key", 10,
		     w->scram[slot].server_key, &hl);
		OPENSSL_cleanse(salted, sizeof salted);
	}
	char without_proof[300];
	snprintf(without_proof, sizeof without_proof, "c=biws,r=%.*s", (int)rl, r);
	size_t al = strlen(c->auth_msg);
	int n =
	    snprintf(c->auth_msg + al, sizeof c->auth_msg - al, ",%s,%s", sfirst, without_proof);
	if (n < 0 || (size_t)n >= sizeof c->auth_msg - al)
		return -1;
	unsigned char sig[20], proof[20];
	unsigned int hl = 20;
	HMAC(EVP_sha1(), w->scram[slot].stored_key, 20, (unsigned char *)c->auth_msg,
	     strlen(c->auth_msg), sig, &hl);
	for (int k = 0; k < 20; k++)
		proof[k] = w->scram[slot].client_key[k] ^ sig[k];
	HMAC(EVP_sha1(), w->scram[slot].server_key, 20, (unsigned char *)c->auth_msg,
	     strlen(c->auth_msg), c->server_sig, &hl);
	char pb[40], final[400], b64[600];
	toolwire_b64_enc(pb, sizeof pb, proof, 20);
	n = snprintf(final, sizeof final, "%s,p=%s", without_proof, pb);
	toolwire_b64_enc(b64, sizeof b64, (unsigned char *) final, (size_t)n);
	conn_put(c, "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</response>", b64);
	return 0;
}

/* Checks the server-final "v=" against the expected signature. */
static int scram_verify(struct conn *c, const char *sfinal)
{
	size_t vl;
	const char *v = toolwire_scram_attr(sfinal, 'v', &vl);
	char want[40];
	size_t wl = toolwire_b64_enc(want, sizeof want, c->server_sig, 20);
	return v && vl == wl && !memcmp(v, want, wl) ? 0 : -1;
}

/* ------------------------------------------------------------- parsing */

/* Finds the element <name ...> starting at or after the buffer's start:
 * returns its start offset and sets *end past its end (self-closing or its
 * `</name>`), and its text content; -1 if absent, -2 if not complete. */
static long find_elem(struct conn *c, const char *name, size_t *end, const char **text,
                      size_t *textlen)
{
	char open[64], close[64];
	int ol = snprintf(open, sizeof open, "<%s", name);
	int cl = snprintf(close, sizeof close, "</%s>", name);
	const char *buf = c->in, *p = buf;
	size_t len = c->inlen;
	for (;;) {
		p = memmem(p, len - (size_t)(p - buf), open, (size_t)ol);
		if (!p)
			return -1;
		char after = p + ol < buf + len ? p[ol] : 0;
		if (after == ' ' || after == '>' || after == '/' || after == '\t' ||
		    after == '\n' || after == '\r' || after == 0)
			break;
		p += ol;
	}
	const char *gt = memchr(p, '>', len - (size_t)(p - buf));
	if (!gt)
		return -2;
	if (gt[-1] == '/') {
		*end = (size_t)(gt + 1 - buf);
		if (text) {
			*text = gt;
			*textlen = 0;
		}
		return p - buf;
	}
	const char *e = memmem(gt, len - (size_t)(gt - buf), close, (size_t)cl);
	if (!e)
		return -2;
	*end = (size_t)(e + cl - buf);
	if (text) {
		*text = gt + 1;
		*textlen = (size_t)(e - gt - 1);
	}
	return p - buf;
}

static void consume(struct conn *c, size_t n)
{
	memmove(c->in, c->in + n, c->inlen - n);
	c->inlen -= n;
}

/* Waits for the stream features; returns 1 when consumed (with a copy of
 * their first bytes in feat), 0 if incomplete. */
static int take_features(struct conn *c, char *feat, size_t cap)
{
	size_t end;
	const char *t;
	size_t tl;
	long at = find_elem(c, "stream:features", &end, &t, &tl);
	if (at < 0)
		return 0;
	size_t n = tl < cap - 1 ? tl : cap - 1;
	memcpy(feat, t, n);
	feat[n] = 0;
	consume(c, end);
	return 1;
}

/* Puts a client TLS object on the connection; 0, or -1 if it failed (c is
 * gone). */
static int start_tls(struct conn *c)
{
	c->ssl = SSL_new(c->w->ctx);
	if (!c->ssl) {
		conn_fail(c, F_TLS);
		return -1;
	}
	SSL_set_fd(c->ssl, c->fd);
	SSL_set_tlsext_host_name(c->ssl, c->w->o->domain);
	if (!c->w->o->insecure)
		SSL_set1_host(c->ssl, c->w->o->domain);
	SSL_set_connect_state(c->ssl);
	return 0;
}

static void send_bind(struct conn *c)
{
	conn_put(c,
	         "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
	         "<resource>lg%d-%ld-%d</resource></bind></iq>",
	         c->w->id, c->idx, c->hold);
}

static void send_msg(struct conn *c)
{
	c->mt0 = mono();
	conn_put(c, "<message to='%s' type='chat' id='m%ld'><body>%s</body></message>", c->jid,
	         c->msgs_left, c->w->msg_body);
}

/* Moves the login on with what has arrived: returns 0 to keep going, -1 if
 * the connection was finished or failed (c is gone). */
static int advance(struct conn *c)
{
	struct worker *w = c->w;
	char feat[2048];
	size_t end;
	const char *t;
	size_t tl;
	for (;;) {
		if (c->step != S_MSG && memmem(c->in, c->inlen, "<stream:error", 13)) {
			conn_fail(c, F_STREAM_ERROR);
			return -1;
		}
		switch (c->step) {
		case S_FEAT0:
			if (!take_features(c, feat, sizeof feat))
				goto incomplete;
			if (!strstr(feat, "<starttls")) {
				conn_fail(c, F_PROTO);
				return -1;
			}
			conn_put(c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
			c->step = S_PROCEED;
			break;
		case S_PROCEED: {
			long at = find_elem(c, "proceed", &end, NULL, NULL);
			if (at == -1 && find_elem(c, "failure", &end, NULL, NULL) >= 0) {
				conn_fail(c, F_TLS);
				return -1;
			}
			if (at < 0)
				goto incomplete;
			c->inlen = 0; /* nothing may follow <proceed/> in plain text */
			if (start_tls(c) < 0)
				return -1;
			c->step = S_TLS;
			return 0;
		}
		case S_FEAT1: {
			if (!take_features(c, feat, sizeof feat))
				goto incomplete;
			const char *mech = w->o->scram ? ">SCRAM-SHA-1<" : ">PLAIN<";
			if (!strstr(feat, mech)) {
				conn_fail(c, F_AUTH);
				return -1;
			}
			if (w->o->scram) {
				send_scram_first(c);
				c->step = S_CHALLENGE;
			} else {
				send_plain(c);
				c->step = S_RESULT;
			}
			break;
		}
		case S_CHALLENGE: {
			if (find_elem(c, "failure", &end, NULL, NULL) >= 0) {
				conn_fail(c, F_AUTH);
				return -1;
			}
			long at = find_elem(c, "challenge", &end, &t, &tl);
			if (at < 0)
				goto incomplete;
			char msg[512];
			if (toolwire_b64_dec((unsigned char *)msg, sizeof msg, t, tl) < 0 ||
			    send_scram_final(c, msg) < 0) {
				conn_fail(c, F_AUTH);
				return -1;
			}
			consume(c, end);
			c->step = S_RESULT;
			break;
		}
		case S_RESULT: {
			if (find_elem(c, "failure", &end, NULL, NULL) >= 0) {
				conn_fail(c, F_AUTH);
				return -1;
			}
			char msg[512];
			long at = find_elem(c, "challenge", &end, &t, &tl);
			if (at >= 0 && w->o->scram) {
				/* the server-final in a challenge, then an empty success */
				if (toolwire_b64_dec((unsigned char *)msg, sizeof msg, t, tl) < 0 ||
				    scram_verify(c, msg) < 0) {
					conn_fail(c, F_AUTH);
					return -1;
				}
				consume(c, end);
				memset(c->server_sig, 0, sizeof c->server_sig);
				conn_put(c, "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
				break;
			}
			at = find_elem(c, "success", &end, &t, &tl);
			if (at < 0)
				goto incomplete;
			if (w->o->scram && tl > 0 &&
			    (toolwire_b64_dec((unsigned char *)msg, sizeof msg, t, tl) < 0 ||
			     scram_verify(c, msg) < 0)) {
				conn_fail(c, F_AUTH);
				return -1;
			}
			consume(c, end);
			put_header(c);
			c->step = S_FEAT2;
			break;
		}
		case S_FEAT2:
			if (!take_features(c, feat, sizeof feat))
				goto incomplete;
			if (!strstr(feat, "<bind")) {
				conn_fail(c, F_BIND);
				return -1;
			}
			send_bind(c);
			c->step = S_BIND;
			break;
		case S_BIND: {
			long at = find_elem(c, "iq", &end, &t, &tl);
			if (at < 0)
				goto incomplete;
			const char *head = c->in + at;
			size_t hl = (size_t)(t - head);
			const char *js = memmem(t, tl, "<jid>", 5),
			           *je = memmem(t, tl, "</jid>", 6);
			if ((!memmem(head, hl, "type='result'", 13) &&
			     !memmem(head, hl, "type=\"result\"", 13)) ||
			    !js || !je || je < js || (size_t)(je - js - 5) >= sizeof c->jid) {
				conn_fail(c, F_BIND);
				return -1;
			}
			memcpy(c->jid, js + 5, (size_t)(je - js - 5));
			c->jid[je - js - 5] = 0;
			consume(c, end);
			if (w->lat && w->st->nlat < w->lat_cap)
				w->lat[w->st->nlat++] = mono() - c->t0;
			if (c->hold) {
				conn_done(c, -1);
				return -1;
			}
			if (c->msgs_left > 0) {
				send_msg(c);
				c->step = S_MSG;
				break;
			}
			conn_finish(c);
			return -1;
		}
		case S_MSG: {
			long at = find_elem(c, "message", &end, NULL, NULL);
			if (at < 0) {
				if (memmem(c->in, c->inlen, "<stream:error", 13)) {
					conn_fail(c, F_STREAM_ERROR);
					return -1;
				}
				goto incomplete;
			}
			consume(c, end);
			if (w->rtt && w->st->nrtt < w->rtt_cap)
				w->rtt[w->st->nrtt++] = mono() - c->mt0;
			if (--c->msgs_left > 0) {
				send_msg(c);
				break;
			}
			conn_finish(c);
			return -1;
		}
		default:
			return 0;
		}
	}
incomplete:
	if (c->inlen >= IN_MAX(c->w->o)) {
		conn_fail(c, F_PROTO);
		return -1;
	}
	return 0;
}

/* ----------------------------------------------------------------- I/O */

/* Writes what is queued; 0, or -1 if the connection failed (c is gone). */
static int conn_flush(struct conn *c)
{
	while (c->outlen > 0) {
		ssize_t n;
		if (c->ssl) {
			ERR_clear_error();
			int r = SSL_write(c->ssl, c->out, (int)c->outlen);
			if (r <= 0) {
				int e = SSL_get_error(c->ssl, r);
				if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
					return 0;
				conn_fail(c, F_CLOSED);
				return -1;
			}
			n = r;
		} else {
			n = send(c->fd, c->out, c->outlen, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EAGAIN || errno == EINTR)
					return 0;
				conn_fail(c, F_CLOSED);
				return -1;
			}
		}
		memmove(c->out, c->out + n, c->outlen - (size_t)n);
		c->outlen -= (size_t)n;
	}
	return 0;
}

static void conn_watch(struct conn *c, int want_write)
{
	int ev = EV_READ | (want_write || c->outlen ? EV_WRITE : 0);
	if ((c->io.events & (EV_READ | EV_WRITE)) != ev) {
		ev_io_stop(c->w->loop, &c->io);
		ev_io_set(&c->io, c->fd, ev);
		ev_io_start(c->w->loop, &c->io);
	}
}

/* Reads what is there into the input buffer; 1 if something came, 0 if
 * nothing, -1 if the connection failed (c is gone). */
static int conn_read(struct conn *c)
{
	int got = 0;
	while (c->inlen < IN_MAX(c->w->o)) {
		if (c->ssl) {
			ERR_clear_error();
			int r =
			    SSL_read(c->ssl, c->in + c->inlen, (int)(IN_MAX(c->w->o) - c->inlen));
			if (r <= 0) {
				int e = SSL_get_error(c->ssl, r);
				if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
					break;
				c->eof = 1;
				break;
			}
			c->inlen += (size_t)r;
		} else {
			ssize_t r = recv(c->fd, c->in + c->inlen, IN_MAX(c->w->o) - c->inlen, 0);
			if (r == 0) {
				c->eof = 1;
				break;
			}
			if (r < 0) {
				if (errno == EAGAIN || errno == EINTR)
					break;
				conn_fail(c, errno == ECONNREFUSED ? F_CONNECT : F_CLOSED);
				return -1;
			}
			c->inlen += (size_t)r;
		}
		got = 1;
	}
	return got;
}

/* Drives the TLS handshake; 1 when done, 0 if waiting, -1 failed. */
static int conn_handshake(struct conn *c)
{
	ERR_clear_error();
	int r = SSL_do_handshake(c->ssl);
	if (r == 1)
		return 1;
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		conn_watch(c, 0);
		return 0;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		conn_watch(c, 1);
		return 0;
	}
	conn_fail(c, F_TLS);
	return -1;
}

/* Fires when the socket is readable or writable. */
static void conn_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	(void)loop;
	(void)revents;
	struct conn *c = (struct conn *)((char *)io - offsetof(struct conn, io));
	if (c->step == S_CONNECT) {
		int err = 0;
		socklen_t el = sizeof err;
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
		if (err) {
			conn_fail(c, F_CONNECT);
			return;
		}
		if (c->w->o->direct_tls) {
			if (start_tls(c) < 0)
				return;
			c->step = S_DIRECT_TLS;
		} else {
			put_header(c);
			c->step = S_FEAT0;
		}
	}
	for (;;) {
		if (c->step == S_DIRECT_TLS || c->step == S_TLS) {
			int r = conn_handshake(c);
			if (r <= 0)
				return;
			put_header(c);
			c->step = S_FEAT1;
		}
		if (conn_flush(c) < 0)
			return;
		int r = conn_read(c);
		if (r < 0)
			return;
		enum step before = c->step;
		if (r > 0 || c->inlen > 0) {
			if (advance(c) < 0)
				return;
		}
		if (c->eof) {
			int err = memmem(c->in, c->inlen, "<stream:error", 13) != NULL;
			conn_fail(c, err ? F_STREAM_ERROR : F_CLOSED);
			return;
		}
		if (c->step == S_TLS)
			continue; /* <proceed/> came: handshake now */
		if (conn_flush(c) < 0)
			return;
		if (c->ssl && SSL_pending(c->ssl) > 0)
			continue;
		if (r == 0 || c->step == before) {
			conn_watch(c, 0);
			return;
		}
	}
}

static void start_conn(struct worker *w, int hold)
{
	struct conn *c = calloc(1, sizeof *c);
	if (!c) {
		fprintf(stderr, "loadgen: out of memory\n");
		exit(1);
	}
	c->w = w;
	c->hold = hold;
	c->idx = hold ? w->hstarted++ : w->started++;
	c->msgs_left = hold ? 0 : w->o->msgs;
	c->outcap = OUT_BASE + (size_t)w->o->msg_size;
	c->in = malloc(IN_MAX(w->o));
	c->out = malloc(c->outcap);
	if (!c->in || !c->out) {
		fprintf(stderr, "loadgen: out of memory\n");
		exit(1);
	}
	c->t0 = mono();
	w->active++;
	ev_timer_init(&c->timer, timer_cb, w->o->timeout, 0);
	ev_timer_start(w->loop, &c->timer);
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		conn_fail(c, F_CONNECT);
		return;
	}
	if (w->o->nodelay) {
		int one = 1;
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
	if (connect(c->fd, (struct sockaddr *)&w->addr, sizeof w->addr) < 0 &&
	    errno != EINPROGRESS) {
		conn_fail(c, F_CONNECT);
		return;
	}
	c->step = S_CONNECT;
	ev_io_init(&c->io, conn_io_cb, c->fd, EV_WRITE);
	ev_io_start(w->loop, &c->io);
}

static void report(struct worker *w, char what)
{
	if (write(w->report_fd, &what, 1) != 1)
		_exit(3);
}

static void release_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	(void)revents;
	struct worker *w = (struct worker *)((char *)io - offsetof(struct worker, release_io));
	char b;
	if (read(w->release_fd, &b, 1) > 0)
		return;
	ev_io_stop(loop, io);
	for (long i = 0; i < w->nheld; i++) {
		struct conn *c = w->held[i];
		close(c->fd); /* its TLS state was dropped when it was held */
		c->fd = -1;
		conn_free(c);
	}
	w->nheld = 0;
	ev_break(loop, EVBREAK_ALL);
}

/* Starts connections up to the concurrency; moves from the login phase to
 * the hold phase and reports each phase's end to the parent. */
static void worker_next(struct worker *w)
{
	if (!w->holding) {
		while (w->started < w->quota && w->active < w->conc)
			start_conn(w, 0);
		if (w->done < w->quota)
			return;
		struct rusage ru;
		getrusage(RUSAGE_SELF, &ru);
		w->st->cpu_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
		               (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
		w->holding = 1;
		report(w, 'L');
	}
	while (w->hstarted < w->hquota && w->active < w->conc)
		start_conn(w, 1);
	if (w->hdone == w->hquota && !w->hold_reported) {
		w->hold_reported = 1;
		report(w, 'H');
		ev_io_start(w->loop, &w->release_io);
	}
}

static int worker_run(struct opts *o, int id, struct shared *sh, double *lat, long lat_cap,
                      double *rtt, long rtt_cap, int report_fd, int release_fd)
{
	struct worker w;
	memset(&w, 0, sizeof w);
	w.o = o;
	w.id = id;
	w.st = &sh->w[id];
	w.lat = lat;
	w.lat_cap = lat_cap;
	w.rtt = rtt;
	w.rtt_cap = rtt_cap;
	w.report_fd = report_fd;
	w.release_fd = release_fd;
	w.quota = o->logins / o->procs + (id < o->logins % o->procs);
	w.hquota = o->hold / o->procs + (id < o->hold % o->procs);
	w.conc = o->conc / o->procs + (id < o->conc % o->procs);
	if (w.conc < 1)
		w.conc = 1;
	w.held = calloc((size_t)w.hquota + 1, sizeof *w.held);
	w.msg_body = malloc((size_t)o->msg_size + 1);
	if (!w.held || !w.msg_body)
		return 1;
	memset(w.msg_body, 'x', (size_t)o->msg_size);
	w.msg_body[o->msg_size] = 0;
	w.addr.sin_family = AF_INET;
	w.addr.sin_port = htons((uint16_t)o->port);
	if (inet_pton(AF_INET, o->host, &w.addr.sin_addr) != 1) {
		fprintf(stderr, "loadgen: bad --host %s (an IPv4 address)\n", o->host);
		return 2;
	}
	w.ctx = SSL_CTX_new(TLS_client_method());
	if (!w.ctx)
		return 1;
	SSL_CTX_set_session_cache_mode(w.ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(w.ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_mode(w.ctx, SSL_MODE_RELEASE_BUFFERS);
	if (!o->insecure) {
		if (!o->ca || SSL_CTX_load_verify_locations(w.ctx, o->ca, NULL) != 1) {
			fprintf(stderr, "loadgen: cannot load --ca %s\n", o->ca ? o->ca : "(none)");
			return 2;
		}
		SSL_CTX_set_verify(w.ctx, SSL_VERIFY_PEER, NULL);
	}
	w.loop = ev_loop_new(EVFLAG_AUTO);
	ev_io_init(&w.release_io, release_cb, release_fd, EV_READ);
	worker_next(&w);
	ev_run(w.loop, 0);
	ev_loop_destroy(w.loop);
	SSL_CTX_free(w.ctx);
	free(w.held);
	free(w.msg_body);
	return 0;
}

/* ---------------------------------------------------------------- parent */

/* One process's utime+stime+cutime+cstime in clock ticks: its own CPU
 * and that of its children it reaped. */
static int proc_ticks(int pid, unsigned long long *ticks)
{
	char path[64], buf[2048];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	unsigned long long ut, st, cut, cst;
	/* after ")": state ppid pgrp session tty tpgid flags minflt cminflt
	 * majflt cmajflt utime stime cutime cstime */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %llu %llu", &ut,
	           &st, &cut, &cst) != 4)
		return -1;
	*ticks = ut + st + cut + cst;
	return 0;
}

/* pid and its descendants (a proxy with workers = N is a supervisor and
 * its workers), from /proc/PID/task/TID/children; at most max. */
#define TREE_MAX 256
static size_t proc_tree(int pid, int *out, size_t max)
{
	size_t n = 0, next = 0;
	out[n++] = pid;
	while (next < n) {
		int p = out[next++];
		char path[64];
		snprintf(path, sizeof path, "/proc/%d/task", p);
		DIR *d = opendir(path);
		if (!d)
			continue;
		struct dirent *de;
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			char cpath[300];
			snprintf(cpath, sizeof cpath, "/proc/%d/task/%s/children", p, de->d_name);
			FILE *f = fopen(cpath, "r");
			if (!f)
				continue;
			int c;
			while (n < max && fscanf(f, "%d", &c) == 1)
				out[n++] = c;
			fclose(f);
		}
		closedir(d);
	}
	return n;
}

/* CPU of pid and its descendants, live or reaped, in µs: a live process's
 * time is in its own stat, a reaped one's in its parent's cutime. */
static int proc_cpu_us(int pid, double *us)
{
	int tree[TREE_MAX];
	size_t n = proc_tree(pid, tree, TREE_MAX);
	unsigned long long total = 0, t;
	if (proc_ticks(pid, &t) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (proc_ticks(tree[i], &t) == 0)
			total += t;
	*us = (double)total * 1e6 / (double)sysconf(_SC_CLK_TCK);
	return 0;
}

static long proc_rss_one(int pid)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	long kib = -1;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, "VmRSS:", 6))
			kib = strtol(line + 6, NULL, 10);
	fclose(f);
	return kib;
}

/* VmRSS of pid and its descendants, summed (pages they share since a fork
 * count in each: the figures that matter are differences). */
static long proc_rss_kib(int pid)
{
	int tree[TREE_MAX];
	size_t n = proc_tree(pid, tree, TREE_MAX);
	long total = -1;
	for (size_t i = 0; i < n; i++) {
		long k = proc_rss_one(tree[i]);
		if (k >= 0)
			total = (total < 0 ? 0 : total) + k;
	}
	return total;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(const double *v, long n, double p)
{
	if (n == 0)
		return 0;
	long i = (long)(p * (double)(n - 1) + 0.5);
	return v[i];
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: loadgen --port PORT [options]\n"
	        "  --host ADDR        IPv4 address (127.0.0.1)\n"
	        "  --port PORT        STARTTLS port, or Direct TLS port with --direct-tls\n"
	        "  --direct-tls       TLS from the first byte (XEP-0368) instead of STARTTLS\n"
	        "  --mech plain|scram SASL PLAIN (default) or SCRAM-SHA-1\n"
	        "  --user U --password P --domain D   (alice, required, lab.test)\n"
	        "  --ca FILE          CA to verify the server's certificate (for D)\n"
	        "  --insecure         no certificate verification\n"
	        "  --logins N         full logins, closed after login (100)\n"
	        "  --concurrency C    logins in flight at once, over all processes (10)\n"
	        "  --msgs K           message round trips per login (0)\n"
	        "  --msg-size B       message body bytes (16)\n"
	        "  --hold H           after the logins, H more held open until all are in\n"
	        "  --settle S         measure the held RSS S seconds after all are in (0)\n"
	        "  --linger S         keep the held ones open S more seconds (0; a heap profile)\n"
	        "  --timeout S        a login not done in S seconds is a stall (10)\n"
	        "  --procs P          processes (default: the number of cores)\n"
	        "  --pid PID          measure this process too (repeatable, up to %d)\n"
	        "  --label TEXT       copied into the JSON line\n"
	        "  --no-nodelay       leave Nagle on for the client's sockets\n"
	        "Prints a human line and a JSON line; exit 0 if every login succeeded.\n",
	        MAX_PIDS);
}

static long num_arg(const char *s, long lo, long hi, const char *what)
{
	char *e;
	long v = strtol(s, &e, 10);
	if (*s == 0 || *e || v < lo || v > hi) {
		fprintf(stderr, "loadgen: bad %s '%s' (%ld..%ld)\n", what, s, lo, hi);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	struct opts o = {.host = "127.0.0.1",
	                 .user = "alice",
	                 .domain = "lab.test",
	                 .logins = 100,
	                 .conc = 10,
	                 .msg_size = 16,
	                 .timeout = 10,
	                 .nodelay = 1};
	long nproc = sysconf(_SC_NPROCESSORS_ONLN);
	o.procs = nproc > 0 ? (int)nproc : 1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED()                                                                                     \
	do {                                                                                       \
		if (!v) {                                                                          \
			fprintf(stderr, "loadgen: %s needs a value\n", a);                         \
			return 2;                                                                  \
		}                                                                                  \
		i++;                                                                               \
	} while (0)
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--host")) {
			NEED();
			o.host = v;
		} else if (!strcmp(a, "--port")) {
			NEED();
			o.port = (int)num_arg(v, 1, 65535, a);
		} else if (!strcmp(a, "--direct-tls")) {
			o.direct_tls = 1;
		} else if (!strcmp(a, "--mech")) {
			NEED();
			if (!strcmp(v, "plain"))
				o.scram = 0;
			else if (!strcmp(v, "scram") || !strcmp(v, "scram-sha-1"))
				o.scram = 1;
			else {
				fprintf(stderr, "loadgen: --mech plain or scram\n");
				return 2;
			}
		} else if (!strcmp(a, "--user")) {
			NEED();
			o.user = v;
		} else if (!strcmp(a, "--password")) {
			NEED();
			o.password = v;
		} else if (!strcmp(a, "--domain")) {
			NEED();
			o.domain = v;
		} else if (!strcmp(a, "--ca")) {
			NEED();
			o.ca = v;
		} else if (!strcmp(a, "--insecure")) {
			o.insecure = 1;
		} else if (!strcmp(a, "--logins")) {
			NEED();
			o.logins = num_arg(v, 0, MAX_LOGINS, a);
		} else if (!strcmp(a, "--concurrency")) {
			NEED();
			o.conc = num_arg(v, 1, 100000, a);
		} else if (!strcmp(a, "--msgs")) {
			NEED();
			o.msgs = num_arg(v, 0, 1000000, a);
		} else if (!strcmp(a, "--msg-size")) {
			NEED();
			o.msg_size = num_arg(v, 1, MAX_MSG_SIZE, a);
		} else if (!strcmp(a, "--settle")) {
			NEED();
			o.settle = num_arg(v, 0, 3600, a);
		} else if (!strcmp(a, "--linger")) {
			NEED();
			o.linger = num_arg(v, 0, 3600, a);
		} else if (!strcmp(a, "--hold")) {
			NEED();
			o.hold = num_arg(v, 0, 1000000, a);
		} else if (!strcmp(a, "--timeout")) {
			NEED();
			o.timeout = (double)num_arg(v, 1, 3600, a);
		} else if (!strcmp(a, "--procs")) {
			NEED();
			o.procs = (int)num_arg(v, 1, MAX_PROCS, a);
		} else if (!strcmp(a, "--pid")) {
			NEED();
			if (o.npids == MAX_PIDS) {
				fprintf(stderr, "loadgen: at most %d --pid\n", MAX_PIDS);
				return 2;
			}
			o.pids[o.npids++] = (int)num_arg(v, 1, 1 << 30, a);
		} else if (!strcmp(a, "--label")) {
			NEED();
			o.label = v;
		} else if (!strcmp(a, "--no-nodelay")) {
			o.nodelay = 0;
		} else {
			fprintf(stderr, "loadgen: unknown option %s\n", a);
			usage(stderr);
			return 2;
		}
	}
	if (!o.port || !o.password) {
		usage(stderr);
		return 2;
	}
	if (strlen(o.user) > 200 || strlen(o.domain) > 200 || strchr(o.user, '\'') ||
	    strchr(o.domain, '\'') || strchr(o.user, ',') || strchr(o.user, '=')) {
		fprintf(stderr, "loadgen: --user/--domain too long or with ' , =\n");
		return 2;
	}
	if (o.procs > o.conc)
		o.procs = (int)o.conc;
	signal(SIGPIPE, SIG_IGN);

	long rtt_cap = o.logins * o.msgs;
	if (rtt_cap > 4000000)
		rtt_cap = 4000000;
	long lat_total = o.logins + o.hold;
	size_t shsize = sizeof(struct shared) + (size_t)lat_total * sizeof(double) +
	                (size_t)rtt_cap * sizeof(double);
	struct shared *sh =
	    mmap(NULL, shsize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("loadgen: mmap");
		return 1;
	}
	double *lat = (double *)(sh + 1), *rtt = lat + lat_total;

	int release[2];
	if (pipe(release) < 0) {
		perror("loadgen: pipe");
		return 1;
	}
	double cpu0[MAX_PIDS], cpu1[MAX_PIDS];
	long rss0[MAX_PIDS], rss1[MAX_PIDS];
	for (int k = 0; k < o.npids; k++)
		if (proc_cpu_us(o.pids[k], &cpu0[k]) < 0) {
			fprintf(stderr, "loadgen: no process %d\n", o.pids[k]);
			return 2;
		}
	int reports[MAX_PROCS];
	pid_t kids[MAX_PROCS];
	long lat_off = 0, rtt_off = 0;
	double t0 = mono();
	for (int id = 0; id < o.procs; id++) {
		long quota = o.logins / o.procs + (id < o.logins % o.procs);
		long hquota = o.hold / o.procs + (id < o.hold % o.procs);
		long rq = rtt_cap / o.procs;
		int rp[2];
		if (pipe(rp) < 0) {
			perror("loadgen: pipe");
			return 1;
		}
		pid_t pid = fork();
		if (pid < 0) {
			perror("loadgen: fork");
			return 1;
		}
		if (pid == 0) {
			/* no worker outlives a killed parent */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			close(rp[0]);
			close(release[1]);
			_exit(worker_run(&o, id, sh, lat + lat_off, quota + hquota, rtt + rtt_off,
			                 rq, rp[1], release[0]));
		}
		close(rp[1]);
		reports[id] = rp[0];
		kids[id] = pid;
		lat_off += quota + hquota;
		rtt_off += rq;
	}
	close(release[0]);
	/* phase ends, as each child reports them ('L' then 'H'); a child that
	 * died reports nothing more (EOF) */
	int dead = 0;
	for (int id = 0; id < o.procs; id++) {
		char b = 0;
		if (read(reports[id], &b, 1) != 1 || b != 'L')
			dead++;
	}
	double t1 = mono();
	for (int k = 0; k < o.npids; k++) {
		proc_cpu_us(o.pids[k], &cpu1[k]);
		rss0[k] = proc_rss_kib(o.pids[k]);
	}
	for (int id = 0; id < o.procs; id++) {
		char b = 0;
		if (read(reports[id], &b, 1) != 1 || b != 'H')
			dead++;
	}
	if (o.settle > 0)
		sleep((unsigned)o.settle);
	for (int k = 0; k < o.npids; k++)
		rss1[k] = proc_rss_kib(o.pids[k]);
	if (o.linger > 0)
		sleep((unsigned)o.linger);
	close(release[1]);
	for (int id = 0; id < o.procs; id++) {
		int status;
		waitpid(kids[id], &status, 0);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			dead++;
		close(reports[id]);
	}

	/* the latencies of the login phase only: each child's slice starts with
	 * them; the held logins' latencies follow */
	struct wstats tot;
	memset(&tot, 0, sizeof tot);
	double *all = malloc(((size_t)lat_total + 1) * sizeof(double));
	double *rtts = malloc(((size_t)rtt_cap + 1) * sizeof(double));
	if (!all || !rtts)
		return 1;
	long nl = 0, nr = 0;
	lat_off = rtt_off = 0;
	for (int id = 0; id < o.procs; id++) {
		struct wstats *s = &sh->w[id];
		long quota = o.logins / o.procs + (id < o.logins % o.procs);
		long hquota = o.hold / o.procs + (id < o.hold % o.procs);
		long rq = rtt_cap / o.procs;
		long logged = s->nlat - s->held; /* login-phase latencies first */
		for (long i = 0; i < logged && i < quota; i++)
			all[nl++] = lat[lat_off + i];
		for (long i = 0; i < s->nrtt; i++)
			rtts[nr++] = rtt[rtt_off + i];
		lat_off += quota + hquota;
		rtt_off += rq;
		tot.ok += s->ok;
		tot.failed += s->failed;
		tot.held += s->held;
		tot.held_failed += s->held_failed;
		tot.cpu_s += s->cpu_s;
		for (int k = 0; k < F_NKINDS; k++)
			tot.fail[k] += s->fail[k];
		for (int k = 0; k <= S_HELD; k++)
			tot.stall_step[k] += s->stall_step[k];
	}
	qsort(all, (size_t)nl, sizeof(double), cmp_double);
	qsort(rtts, (size_t)nr, sizeof(double), cmp_double);
	double wall = t1 - t0;
	double rate = wall > 0 ? (double)tot.ok / wall : 0;
	double p50 = pct(all, nl, .5) * 1e3, p90 = pct(all, nl, .9) * 1e3,
	       p99 = pct(all, nl, .99) * 1e3, mx = nl ? all[nl - 1] * 1e3 : 0;

	printf("%s: %ld/%ld logins ok in %.2f s: %.1f logins/s, p50 %.2f p90 %.2f p99 %.2f max "
	       "%.2f ms; failed %ld",
	       o.label ? o.label : "loadgen", tot.ok, o.logins, wall, rate, p50, p90, p99, mx,
	       tot.failed);
	for (int k = 0; k < F_NKINDS; k++)
		if (tot.fail[k])
			printf(" %s=%ld", fail_names[k], tot.fail[k]);
	if (nr)
		printf("; msg rtt p50 %.2f ms", pct(rtts, nr, .5) * 1e3);
	if (o.hold)
		printf("; held %ld/%ld", tot.held, o.hold);
	printf("; loadgen CPU %.0f us/login", tot.ok ? tot.cpu_s * 1e6 / (double)tot.ok : 0);
	for (int k = 0; k < o.npids; k++) {
		printf("; pid %d: %.0f us/login", o.pids[k],
		       tot.ok ? (cpu1[k] - cpu0[k]) / (double)tot.ok : 0);
		if (o.hold && tot.held)
			printf(", %.1f KiB/held", (double)(rss1[k] - rss0[k]) / (double)tot.held);
	}
	printf("\n");

	printf("{\"label\":\"%s\",\"logins\":%ld,\"concurrency\":%ld,\"procs\":%d,\"mech\":\"%s\","
	       "\"tls\":\"%s\",\"msgs\":%ld,\"ok\":%ld,\"failed\":%ld,\"fail\":{",
	       o.label ? o.label : "", o.logins, o.conc, o.procs, o.scram ? "scram-sha-1" : "plain",
	       o.direct_tls ? "direct" : "starttls", o.msgs, tot.ok, tot.failed);
	for (int k = 0; k < F_NKINDS; k++)
		printf("%s\"%s\":%ld", k ? "," : "", fail_names[k], tot.fail[k]);
	printf("},\"stalled_at\":{");
	for (int k = 0, first = 1; k <= S_HELD; k++)
		if (tot.stall_step[k]) {
			printf("%s\"%s\":%ld", first ? "" : ",", step_names[k], tot.stall_step[k]);
			first = 0;
		}
	printf("},\"stalls\":%ld,\"wall_s\":%.4f,\"logins_per_s\":%.2f,\"p50_ms\":%.3f,"
	       "\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"msg_rtt_p50_ms\":%.3f,"
	       "\"msg_rtt_p99_ms\":%.3f,\"msgs_done\":%ld,\"msg_size\":%ld,"
	       "\"msg_mib_per_s\":%.2f,\"loadgen_cpu_us_per_login\":%.1f,\"hold\":%ld,"
	       "\"held\":%ld,\"held_failed\":%ld,\"procs_died\":%d,\"pids\":[",
	       tot.fail[F_STALL], wall, rate, p50, p90, p99, mx, pct(rtts, nr, .5) * 1e3,
	       pct(rtts, nr, .99) * 1e3, nr, o.msg_size,
	       wall > 0 ? (double)nr * (double)o.msg_size / wall / (1024.0 * 1024.0) : 0,
	       tot.ok ? tot.cpu_s * 1e6 / (double)tot.ok : 0, o.hold, tot.held, tot.held_failed,
	       dead);
	for (int k = 0; k < o.npids; k++)
		printf("%s{\"pid\":%d,\"cpu_us\":%.0f,\"cpu_us_per_login\":%.1f,\"rss_before_kib\":"
		       "%ld,"
		       "\"rss_held_kib\":%ld,\"kib_per_held\":%.2f}",
		       k ? "," : "", o.pids[k], cpu1[k] - cpu0[k],
		       tot.ok ? (cpu1[k] - cpu0[k]) / (double)tot.ok : 0, rss0[k], rss1[k],
		       tot.held ? (double)(rss1[k] - rss0[k]) / (double)tot.held : 0);
	printf("]}\n");
	fflush(stdout);
	free(all);
	free(rtts);
	munmap(sh, shsize);
	return tot.failed || tot.held_failed || dead ? 1 : 0;
}
