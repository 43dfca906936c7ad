/* tools/fastupstream: an XMPP server for capacity benchmarks (tools/bench).
 *
 * It answers a client login as fast as it can, so that the relay in front of
 * it is the bottleneck: STARTTLS (required) on --port and Direct TLS on
 * --tls-port with its own certificate, SASL PLAIN and SCRAM-SHA-1 accepted
 * for any user with the one fixed --password (SCRAM's salted password is
 * computed once at start), resource bind, an empty result to any other
 * <iq type='get'|'set'>, and every <message> echoed back to its sender as
 * it came. No roster, no presence, no routing, no storage.
 *
 * This is a benchmark peer, not a conformant server: it finds elements by
 * their literal text (the stream:stream prefix, the element names the
 * clients here send) without a full XML parser. Every buffer is bounded; a
 * peer that sends what it cannot place is disconnected.
 *
 * One process per --procs, each one libev loop on SO_REUSEPORT listeners.
 */
#include "toolwire.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ev.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

/* One stanza must fit: large enough for the relay throughput runs. */
#define IN_MAX (2 * 1024 * 1024)
#define IN_START 4096
/* Echoing stops reading a client whose output is not being taken. */
#define OUT_HIGH (4 * 1024 * 1024)
#define MAX_PROCS 64

struct cfg {
	const char *host;
	int port, tls_port;
	const char *cert, *key, *domain, *password;
	long iterations;
	int procs;
	SSL_CTX *ctx;
	unsigned char salt[16];
	char salt_b64[32];
	unsigned char stored_key[20], server_key[20];
};
static struct cfg cfg = {.host = "127.0.0.1", .domain = "lab.test", .iterations = 4096, .procs = 1};

enum phase { P_PLAIN = 0, P_TLS, P_AUTHED };

struct conn {
	ev_io io;
	struct ev_loop *loop;
	int fd;
	SSL *ssl;
	int handshaking;
	enum phase phase;
	int in_stream; /* the client's stream header came */
	int closing;
	char *in;
	size_t inlen, incap;
	char *out;
	size_t outlen, outcap;
	char user[256];
	char client_first_bare[512];
	char server_first[256];
	int scram_step;
	long serial;
};

static long conns_total;

static void conn_close(struct conn *c)
{
	ev_io_stop(c->loop, &c->io);
	if (c->ssl)
		SSL_free(c->ssl);
	close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
}

/* Queues bytes for the client; -1 if its output is beyond any bound. */
static int conn_out(struct conn *c, const char *p, size_t n)
{
	if (c->outlen + n > c->outcap) {
		size_t cap = c->outcap ? c->outcap : 4096;
		while (cap < c->outlen + n)
			cap *= 2;
		if (cap > 2 * OUT_HIGH + IN_MAX)
			return -1;
		char *b = realloc(c->out, cap);
		if (!b)
			return -1;
		c->out = b;
		c->outcap = cap;
	}
	memcpy(c->out + c->outlen, p, n);
	c->outlen += n;
	return 0;
}

static int conn_printf(struct conn *c, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof buf)
		return -1;
	return conn_out(c, buf, (size_t)n);
}

/* Writes what is queued; 0 or -1 (the connection is broken). */
static int conn_flush(struct conn *c)
{
	while (c->outlen) {
		ssize_t n;
		if (c->ssl) {
			ERR_clear_error();
			int r = SSL_write(c->ssl, c->out, (int)c->outlen);
			if (r <= 0) {
				int e = SSL_get_error(c->ssl, r);
				if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
					return 0;
				return -1;
			}
			n = r;
		} else {
			n = send(c->fd, c->out, c->outlen, MSG_NOSIGNAL);
			if (n < 0)
				return errno == EAGAIN || errno == EINTR ? 0 : -1;
		}
		memmove(c->out, c->out + n, c->outlen - (size_t)n);
		c->outlen -= (size_t)n;
	}
	return 0;
}

/* ------------------------------------------------------------- helpers */

/* The value of attribute name in the start tag [tag, tag+len), copied. */
static int tag_attr(const char *tag, size_t len, const char *name, char *dst, size_t cap)
{
	size_t nl = strlen(name);
	for (size_t i = 1; i + nl + 2 < len; i++) {
		if ((tag[i - 1] == ' ' || tag[i - 1] == '\t' || tag[i - 1] == '\n') &&
		    !memcmp(tag + i, name, nl) && tag[i + nl] == '=' &&
		    (tag[i + nl + 1] == '\'' || tag[i + nl + 1] == '"')) {
			char q = tag[i + nl + 1];
			const char *v = tag + i + nl + 2;
			const char *e = memchr(v, q, len - (size_t)(v - tag));
			if (!e || (size_t)(e - v) >= cap)
				return -1;
			memcpy(dst, v, (size_t)(e - v));
			dst[e - v] = 0;
			return 0;
		}
	}
	return -1;
}

static int sasl_failure(struct conn *c)
{
	return conn_printf(c, "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
	                      "<not-authorized/></failure>");
}

static int sasl_success(struct conn *c, const char *data)
{
	c->phase = P_AUTHED;
	c->in_stream = 0;
	return conn_printf(c, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</success>",
	                   data);
}

/* -------------------------------------------------------------- stanzas */

static int on_auth(struct conn *c, const char *tag, size_t taglen, const char *text, size_t textlen)
{
	char mech[32];
	unsigned char raw[1024];
	if (c->phase != P_TLS || tag_attr(tag, taglen, "mechanism", mech, sizeof mech) < 0)
		return sasl_failure(c);
	int n = toolwire_b64_dec(raw, sizeof raw, text, textlen);
	if (n < 0)
		return sasl_failure(c);
	if (!strcmp(mech, "PLAIN")) {
		/* authzid \0 authcid \0 password */
		const unsigned char *u = memchr(raw, 0, (size_t)n);
		const unsigned char *p = u ? memchr(u + 1, 0, (size_t)(raw + n - u - 1)) : NULL;
		if (!p || (size_t)(p - u - 1) >= sizeof c->user)
			return sasl_failure(c);
		size_t pl = (size_t)(raw + n - p - 1);
		int ok = pl == strlen(cfg.password) && !memcmp(p + 1, cfg.password, pl);
		memcpy(c->user, u + 1, (size_t)(p - u - 1));
		c->user[p - u - 1] = 0;
		OPENSSL_cleanse(raw, sizeof raw);
		return ok ? sasl_success(c, "") : sasl_failure(c);
	}
	if (!strcmp(mech, "SCRAM-SHA-1")) {
		const char *m = (const char *)raw;
		size_t bl = strlen(m);
		if (bl < 3 || bl - 3 >= sizeof c->client_first_bare ||
		    (strncmp(m, "n,,", 3) && strncmp(m, "y,,", 3)))
			return sasl_failure(c);
		memcpy(c->client_first_bare, m + 3, bl - 2);
		size_t ul, rl;
		const char *u = toolwire_scram_attr(c->client_first_bare, 'n', &ul);
		const char *r = toolwire_scram_attr(c->client_first_bare, 'r', &rl);
		if (!u || !r || ul >= sizeof c->user || rl > 100)
			return sasl_failure(c);
		memcpy(c->user, u, ul);
		c->user[ul] = 0;
		unsigned char rnd[18];
		char snonce[32], b64[400];
		RAND_bytes(rnd, sizeof rnd);
		toolwire_b64_enc(snonce, sizeof snonce, rnd, sizeof rnd);
		int sl = snprintf(c->server_first, sizeof c->server_first, "r=%.*s%s,s=%s,i=%ld",
		                  (int)rl, r, snonce, cfg.salt_b64, cfg.iterations);
		toolwire_b64_enc(b64, sizeof b64, (unsigned char *)c->server_first, (size_t)sl);
		c->scram_step = 1;
		return conn_printf(
		    c, "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</challenge>", b64);
	}
	return conn_printf(c, "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
	                      "<invalid-mechanism/></failure>");
}

static int on_response(struct conn *c, const char *text, size_t textlen)
{
	unsigned char raw[1024];
	if (c->scram_step != 1)
		return sasl_failure(c);
	c->scram_step = 0;
	int n = toolwire_b64_dec(raw, sizeof raw, text, textlen);
	if (n < 0)
		return sasl_failure(c);
	const char *m = (const char *)raw;
	const char *pp = strstr(m, ",p=");
	size_t rl, nl;
	const char *r = toolwire_scram_attr(m, 'r', &rl), *sr = toolwire_scram_attr(c->server_first, 'r', &nl);
	if (!pp || !r || !sr || rl != nl || memcmp(r, sr, rl))
		return sasl_failure(c);
	char auth_msg[1200];
	int al = snprintf(auth_msg, sizeof auth_msg, "%s,%s,%.*s", c->client_first_bare,
	                  c->server_first, (int)(pp - m), m);
	if (al < 0 || (size_t)al >= sizeof auth_msg)
		return sasl_failure(c);
	unsigned char proof[24], sig[20], key[20], stored[20], ssig[20];
	if (toolwire_b64_dec(proof, sizeof proof, pp + 3, strlen(pp + 3)) != 20)
		return sasl_failure(c);
	unsigned int hl = 20;
	HMAC(EVP_sha1(), cfg.stored_key, 20, (unsigned char *)auth_msg, (size_t)al, sig, &hl);
	for (int k = 0; k < 20; k++)
		key[k] = proof[k] ^ sig[k];
	SHA1(key, 20, stored);
	if (CRYPTO_memcmp(stored, cfg.stored_key, 20))
		return sasl_failure(c);
	HMAC(EVP_sha1(), cfg.server_key, 20, (unsigned char *)auth_msg, (size_t)al, ssig, &hl);
	char v[40], final[48], b64[80];
	toolwire_b64_enc(v, sizeof v, ssig, 20);
	int fl = snprintf(final, sizeof final, "v=%s", v);
	toolwire_b64_enc(b64, sizeof b64, (unsigned char *) final, (size_t)fl);
	return sasl_success(c, b64);
}

static int on_iq(struct conn *c, const char *tag, size_t taglen, const char *text, size_t textlen)
{
	char id[128], type[16];
	if (tag_attr(tag, taglen, "id", id, sizeof id) < 0 ||
	    tag_attr(tag, taglen, "type", type, sizeof type) < 0)
		return 0;
	if (strcmp(type, "get") && strcmp(type, "set"))
		return 0;
	if (c->phase == P_AUTHED && memmem(text, textlen, "<bind", 5)) {
		char res[256] = "";
		const char *rs = memmem(text, textlen, "<resource>", 10);
		const char *re = memmem(text, textlen, "</resource>", 11);
		if (rs && re && re > rs && (size_t)(re - rs - 10) < sizeof res) {
			memcpy(res, rs + 10, (size_t)(re - rs - 10));
			res[re - rs - 10] = 0;
		} else {
			snprintf(res, sizeof res, "r%ld", c->serial);
		}
		return conn_printf(c,
		                   "<iq type='result' id='%s'><bind xmlns='urn:ietf:params:xml:ns:"
		                   "xmpp-bind'><jid>%s@%s/%s</jid></bind></iq>",
		                   id, c->user, cfg.domain, res);
	}
	return conn_printf(c, "<iq type='result' id='%s'/>", id);
}

static int send_header(struct conn *c)
{
	if (conn_printf(c,
	                "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
	                "xmlns:stream='http://etherx.jabber.org/streams' id='fu%ld' from='%s' "
	                "version='1.0' xml:lang='en'><stream:features>",
	                c->serial, cfg.domain) < 0)
		return -1;
	const char *f = "";
	if (c->phase == P_PLAIN)
		f = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>";
	else if (c->phase == P_TLS)
		f = "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
		    "<mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms>";
	else
		f = "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
		    "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>";
	return conn_printf(c, "%s</stream:features>", f);
}

/* Handles every complete element in the input: 0 to go on, 1 when STARTTLS
 * must begin (the input is empty), -1 to close. */
static int process(struct conn *c)
{
	size_t pos = 0;
	int ret = 0;
	while (pos < c->inlen && !c->closing) {
		char *p = c->in + pos;
		size_t left = c->inlen - pos;
		if (*p != '<') {
			pos++; /* whitespace between elements */
			continue;
		}
		if (left >= 2 && p[1] == '?') {
			char *e = memmem(p, left, "?>", 2);
			if (!e)
				break;
			pos += (size_t)(e + 2 - p);
			continue;
		}
		if (!c->in_stream) {
			if (left < 14)
				break;
			if (memcmp(p, "<stream:stream", 14))
				return -1;
			char *gt = memchr(p, '>', left);
			if (!gt)
				break;
			pos += (size_t)(gt + 1 - p);
			c->in_stream = 1;
			if (send_header(c) < 0)
				return -1;
			continue;
		}
		if (left >= 16 && !memcmp(p, "</stream:stream>", 16)) {
			conn_printf(c, "</stream:stream>");
			c->closing = 1;
			pos += 16;
			break;
		}
		char name[32];
		size_t nl = 0;
		while (nl + 1 < left && nl < sizeof name - 1 && p[nl + 1] != ' ' &&
		       p[nl + 1] != '>' && p[nl + 1] != '/' && p[nl + 1] != '\t' &&
		       p[nl + 1] != '\n') {
			name[nl] = p[nl + 1];
			nl++;
		}
		if (nl + 1 >= left)
			break;
		if (nl == sizeof name - 1)
			return -1;
		name[nl] = 0;
		char *gt = memchr(p, '>', left);
		if (!gt)
			break;
		size_t taglen = (size_t)(gt + 1 - p), elen;
		const char *text;
		size_t textlen;
		if (gt[-1] == '/') {
			elen = taglen;
			text = gt;
			textlen = 0;
		} else {
			char close[40];
			int cl = snprintf(close, sizeof close, "</%s>", name);
			char *e = memmem(gt, left - taglen + 1, close, (size_t)cl);
			if (!e)
				break;
			elen = (size_t)(e + cl - p);
			text = gt + 1;
			textlen = (size_t)(e - gt - 1);
		}
		int r = 0;
		if (!strcmp(name, "starttls")) {
			if (c->phase != P_PLAIN)
				return -1;
			conn_printf(c, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
			pos += elen;
			ret = 1;
			break;
		} else if (!strcmp(name, "auth")) {
			r = on_auth(c, p, taglen, text, textlen);
		} else if (!strcmp(name, "response")) {
			r = on_response(c, text, textlen);
		} else if (!strcmp(name, "iq")) {
			r = on_iq(c, p, taglen, text, textlen);
		} else if (!strcmp(name, "message")) {
			r = conn_out(c, p, elen);
		}
		if (r < 0)
			return -1;
		pos += elen;
		if (c->outlen > OUT_HIGH)
			break;
	}
	memmove(c->in, c->in + pos, c->inlen - pos);
	c->inlen -= pos;
	if (ret == 1 && c->inlen)
		return -1; /* plain text after <starttls/>: no */
	return ret;
}

static void conn_cb(struct ev_loop *loop, ev_io *io, int revents);

static void conn_watch(struct conn *c, int want_write)
{
	int ev = (c->outlen > OUT_HIGH ? 0 : EV_READ) | (want_write || c->outlen ? EV_WRITE : 0);
	if (c->io.events != ev) {
		ev_io_stop(c->loop, &c->io);
		ev_io_set(&c->io, c->fd, ev);
		ev_io_start(c->loop, &c->io);
	}
}

static int start_tls(struct conn *c)
{
	c->ssl = SSL_new(cfg.ctx);
	if (!c->ssl)
		return -1;
	SSL_set_fd(c->ssl, c->fd);
	SSL_set_accept_state(c->ssl);
	c->handshaking = 1;
	c->phase = P_TLS;
	c->in_stream = 0;
	return 0;
}

/* Fires when the client's socket is readable or writable. */
static void conn_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	(void)loop;
	(void)revents;
	struct conn *c = (struct conn *)((char *)io - offsetof(struct conn, io));
	for (;;) {
		if (c->handshaking) {
			ERR_clear_error();
			int r = SSL_do_handshake(c->ssl);
			if (r != 1) {
				int e = SSL_get_error(c->ssl, r);
				if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
					conn_watch(c, e == SSL_ERROR_WANT_WRITE);
					return;
				}
				conn_close(c);
				return;
			}
			c->handshaking = 0;
		}
		if (conn_flush(c) < 0) {
			conn_close(c);
			return;
		}
		if (c->closing && !c->outlen) {
			if (c->ssl)
				SSL_shutdown(c->ssl);
			conn_close(c);
			return;
		}
		int got = 0, eof = 0;
		while (c->outlen <= OUT_HIGH && !c->closing) {
			if (c->inlen == c->incap) {
				if (c->incap >= IN_MAX) {
					conn_close(c);
					return;
				}
				size_t cap = c->incap * 2;
				char *b = realloc(c->in, cap);
				if (!b) {
					conn_close(c);
					return;
				}
				c->in = b;
				c->incap = cap;
			}
			ssize_t n;
			if (c->ssl) {
				ERR_clear_error();
				int r =
				    SSL_read(c->ssl, c->in + c->inlen, (int)(c->incap - c->inlen));
				if (r <= 0) {
					int e = SSL_get_error(c->ssl, r);
					if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
						eof = 1;
					break;
				}
				n = r;
			} else {
				n = recv(c->fd, c->in + c->inlen, c->incap - c->inlen, 0);
				if (n <= 0) {
					if (n == 0 || (errno != EAGAIN && errno != EINTR))
						eof = 1;
					break;
				}
			}
			c->inlen += (size_t)n;
			got = 1;
			/* before TLS, stop at the first read: <starttls/> must not
			 * be followed by buffered plain text we would then miss */
			if (!c->ssl)
				break;
		}
		int r = c->inlen ? process(c) : 0;
		if (r < 0 || (eof && !c->outlen)) {
			conn_close(c);
			return;
		}
		if (r == 1) {
			if (conn_flush(c) < 0 || c->outlen) {
				conn_close(c); /* <proceed/> did not go out whole */
				return;
			}
			if (start_tls(c) < 0) {
				conn_close(c);
				return;
			}
			continue;
		}
		if (eof) {
			conn_close(c);
			return;
		}
		if (conn_flush(c) < 0) {
			conn_close(c);
			return;
		}
		if (c->closing)
			continue;
		if (!got) {
			conn_watch(c, 0);
			return;
		}
	}
}

struct listener {
	ev_io io;
	int direct;
};

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	(void)revents;
	struct listener *l = (struct listener *)io;
	for (int k = 0; k < 64; k++) {
		int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		struct conn *c = calloc(1, sizeof *c);
		if (!c || !(c->in = malloc(IN_START))) {
			free(c);
			close(fd);
			continue;
		}
		c->incap = IN_START;
		c->loop = loop;
		c->fd = fd;
		c->serial = ++conns_total;
		ev_io_init(&c->io, conn_cb, fd, EV_READ);
		ev_io_start(loop, &c->io);
		if (l->direct && start_tls(c) < 0)
			conn_close(c);
	}
}

static int listen_on(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (fd < 0 || inet_pton(AF_INET, cfg.host, &a.sin_addr) != 1)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 4096) < 0) {
		fprintf(stderr, "fastupstream: %s:%d: %s\n", cfg.host, port, strerror(errno));
		return -1;
	}
	return fd;
}

static volatile sig_atomic_t stop_flag;
static void on_term(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static void sig_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(loop, EVBREAK_ALL);
}

static int serve(int fd, int tfd)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct listener l1 = {.direct = 0}, l2 = {.direct = 1};
	if (fd >= 0) {
		ev_io_init(&l1.io, accept_cb, fd, EV_READ);
		ev_io_start(loop, &l1.io);
	}
	if (tfd >= 0) {
		ev_io_init(&l2.io, accept_cb, tfd, EV_READ);
		ev_io_start(loop, &l2.io);
	}
	ev_signal sterm, sint;
	ev_signal_init(&sterm, sig_cb, SIGTERM);
	ev_signal_init(&sint, sig_cb, SIGINT);
	ev_signal_start(loop, &sterm);
	ev_signal_start(loop, &sint);
	ev_run(loop, 0);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: fastupstream --port P [--tls-port P] --cert PEM --key PEM --password PW\n"
	        "       [--host 127.0.0.1] [--domain lab.test] [--iterations 4096] [--procs 1]\n");
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		}
		if (!v) {
			usage(stderr);
			return 2;
		}
		i++;
		if (!strcmp(a, "--port"))
			cfg.port = atoi(v);
		else if (!strcmp(a, "--tls-port"))
			cfg.tls_port = atoi(v);
		else if (!strcmp(a, "--host"))
			cfg.host = v;
		else if (!strcmp(a, "--cert"))
			cfg.cert = v;
		else if (!strcmp(a, "--key"))
			cfg.key = v;
		else if (!strcmp(a, "--domain"))
			cfg.domain = v;
		else if (!strcmp(a, "--password"))
			cfg.password = v;
		else if (!strcmp(a, "--iterations"))
			cfg.iterations = atol(v);
		else if (!strcmp(a, "--procs"))
			cfg.procs = atoi(v);
		else {
			usage(stderr);
			return 2;
		}
	}
	if ((!cfg.port && !cfg.tls_port) || !cfg.cert || !cfg.key || !cfg.password ||
	    cfg.iterations < 1 || cfg.iterations > 1000000 || cfg.procs < 1 ||
	    cfg.procs > MAX_PROCS || strlen(cfg.domain) > 200) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	cfg.ctx = SSL_CTX_new(TLS_server_method());
	if (!cfg.ctx || SSL_CTX_use_certificate_chain_file(cfg.ctx, cfg.cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(cfg.ctx, cfg.key, SSL_FILETYPE_PEM) != 1) {
		fprintf(stderr, "fastupstream: cannot load %s / %s\n", cfg.cert, cfg.key);
		return 1;
	}
	SSL_CTX_set_mode(cfg.ctx, SSL_MODE_RELEASE_BUFFERS);
	RAND_bytes(cfg.salt, sizeof cfg.salt);
	toolwire_b64_enc(cfg.salt_b64, sizeof cfg.salt_b64, cfg.salt, sizeof cfg.salt);
	unsigned char salted[20], ck[20];
	unsigned int hl = 20;
	PKCS5_PBKDF2_HMAC(cfg.password, (int)strlen(cfg.password), cfg.salt, sizeof cfg.salt,
	                  (int)cfg.iterations, EVP_sha1(), 20, salted);
	HMAC(EVP_sha1(), salted, 20, (const unsigned char *)"Client Key", 10, ck, &hl);
	SHA1(ck, 20, cfg.stored_key);
	HMAC(EVP_sha1(), salted, 20, (const unsigned char *)"Server Key", 10, cfg.server_key, &hl);
	OPENSSL_cleanse(salted, sizeof salted);
	OPENSSL_cleanse(ck, sizeof ck);

	int fd = -1, tfd = -1;
	if (cfg.port && (fd = listen_on(cfg.port)) < 0)
		return 1;
	if (cfg.tls_port && (tfd = listen_on(cfg.tls_port)) < 0)
		return 1;
	if (cfg.procs == 1)
		return serve(fd, tfd);
	/* workers share the listeners; the parent relays SIGTERM to them */
	pid_t kids[MAX_PROCS];
	for (int k = 0; k < cfg.procs; k++) {
		kids[k] = fork();
		if (kids[k] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGTERM);
			_exit(serve(fd, tfd));
		}
	}
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	while (!stop_flag)
		pause();
	for (int k = 0; k < cfg.procs; k++)
		if (kids[k] > 0)
			kill(kids[k], SIGTERM);
	for (int k = 0; k < cfg.procs; k++)
		if (kids[k] > 0)
			waitpid(kids[k], NULL, 0);
	return 0;
}
