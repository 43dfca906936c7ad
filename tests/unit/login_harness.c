/*
 * The fakes of leg.c and session.c for a login without a server (see
 * login_harness.h). Each fake does what its original does to the fields
 * the login reads (leg.h's io, reading, ssl; session.h's closing), and
 * nothing with sockets or timers.
 */
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addrtab.h"
#include "audit.h"
#include "conf.h"
#include "evlog.h"
#include "login.h"
#include "login_harness.h"

static struct ev_loop *harness_loop;

static struct harness_session *harness_of(const struct session *s)
{
	return (struct harness_session *)(uintptr_t)s; /* s is the first member */
}

static struct harness_leg_rec *harness_rec(struct leg *l)
{
	struct harness_session *ls = harness_of(l->owner);
	return &ls->leg[l == &ls->s.client ? HARNESS_CLIENT : HARNESS_UPSTREAM];
}

static void harness_oom(void)
{
	fprintf(stderr, "login_harness: out of memory\n");
	abort();
}

/* ---- leg.h ---- */

void leg_init(struct leg *l, struct ev_loop *loop, const struct leg_ops *ops, void *owner,
              struct leg *peer, int fd)
{
	memset(l, 0, sizeof(*l));
	l->loop = loop;
	l->ops = ops;
	l->owner = owner;
	l->peer = peer;
	l->fd = fd;
	l->reading = true;
}

void leg_start(struct leg *l)
{
	l->io = LEG_IO_OPEN;
}

int leg_connect(struct leg *l, int fd, const struct sockaddr *sa, socklen_t salen)
{
	(void)sa, (void)salen;
	if (harness_of(l->owner)->fail_connect)
		return -1;
	l->fd = fd;
	l->io = LEG_IO_CONNECTING;
	return 0;
}

/* the harness never pauses a handshake (no forge_mirror) */
void leg_resume_tls(struct leg *l)
{
	l->hs_paused = false;
}

void leg_start_tls(struct leg *l, SSL *ssl, bool skip_ws)
{
	struct harness_leg_rec *r = harness_rec(l);
	if (l->ssl != NULL)
		SSL_free(l->ssl); /* not in leg.c: STARTTLS twice is refused before */
	l->ssl = ssl;
	l->io = LEG_IO_HANDSHAKE;
	r->tls_starts++;
	r->tls_skip_ws = skip_ws;
	struct harness_session *ls = harness_of(l->owner);
	if (ls->hp->sni_at_start != NULL && l == &ls->s.client && r->tls_starts == 1) {
		SSL_set_tlsext_host_name(ssl, ls->hp->sni_at_start);
		harness_tls_done(ls, HARNESS_CLIENT);
	}
}

int leg_send(struct leg *l, const char *data, size_t len)
{
	struct harness_leg_rec *r = harness_rec(l);
	if (l->io == LEG_IO_CLOSED || l->io == LEG_IO_DRAINING) {
		r->dropped += len;
		return 0;
	}
	if (buf_add(&r->out, data, len) < 0 || buf_add(&r->out, "", 1) < 0)
		harness_oom();
	r->out.len--; /* a NUL after the data, for harness_peek */
	l->bytes_out += len;
	return 0;
}

/* The relay's write-through: to the login, the same as a queued send. */
int leg_send_now(struct leg *l, const char *data, size_t len)
{
	return leg_send(l, data, len);
}

void leg_set_reading(struct leg *l, bool on)
{
	l->reading = on;
}

/* Output is written at once here, so a close shuts the leg for writing
 * at once, as leg.c does when nothing is queued. */
void leg_close(struct leg *l)
{
	harness_rec(l)->closes++;
	switch (l->io) {
	case LEG_IO_OPEN:
	case LEG_IO_CLOSING:
		l->io = LEG_IO_DRAINING;
		break;
	case LEG_IO_DRAINING:
	case LEG_IO_CLOSED:
		break;
	default:
		l->io = LEG_IO_CLOSED;
	}
}

void leg_hurry(struct leg *l)
{
	harness_rec(l)->hurries++;
	l->no_drain = true;
}

void leg_abort(struct leg *l)
{
	harness_rec(l)->aborts++;
	l->io = LEG_IO_CLOSED;
}

/* As leg.c's leg_free. */
void leg_free(struct leg *l)
{
	if (l->ssl != NULL)
		SSL_free(l->ssl);
	l->ssl = NULL;
	buf_free(&l->out);
}

bool leg_busy(const struct leg *l)
{
	(void)l;
	return false; /* everything is written at once */
}

/* As leg.c's leg_trim. */
void leg_trim(struct leg *l)
{
	if (l->out.len == 0)
		buf_free(&l->out);
}

/* ---- session.h ---- */

void session_new(struct proxy *px, int fd, enum session_port port, const struct sockaddr *peer,
                 const struct sockaddr *local)
{
	(void)px, (void)fd, (void)port, (void)peer, (void)local;
	fprintf(stderr, "login_harness: session_new is not faked: use harness_session_new\n");
	abort();
}

/* As session.c's: the login's close (an abandoned attempt counted, the
 * login record), the close event once, both legs closed. */
void session_close(struct session *s, const char *reason)
{
	struct harness_session *ls = harness_of(s);
	ls->close_calls++;
	if (s->closing)
		return;
	s->closing = true;
	snprintf(ls->close_reason, sizeof(ls->close_reason), "%s", reason);
	struct login_summary sum;
	login_close(s, &sum);
	evlog_begin(s->id, "close");
	evlog_str("reason", reason);
	if (sum.abandoned)
		evlog_bool("abandoned_attempt", true);
	evlog_int("trailing_bytes", (long long)sum.trailing_bytes);
	evlog_int("ms", session_ms(s));
	evlog_int("bytes_c2s", (long long)s->client.bytes_in);
	evlog_int("bytes_s2c", (long long)s->upstream.bytes_in);
	evlog_end();
	ls->connect_timer = false;
	leg_close(&s->client);
	leg_close(&s->upstream);
}

/* the sessions gauge: the harness has no metrics */
void session_outcome_changed(struct session *s, bool success)
{
	(void)s, (void)success;
}

long long session_ms(const struct session *s)
{
	return (long long)((ev_now(s->px->loop) - s->t0) * 1000.0);
}

void session_connect_timer(struct session *s, bool on)
{
	harness_of(s)->connect_timer = on && !s->closing;
}

void session_connect_upstream(struct session *s)
{
	harness_of(s)->connects++;
	session_connect_timer(s, true);
	/* upstream_connect(): a fresh socket, a non-blocking connect */
	if (leg_connect(&s->upstream, -1, NULL, 0) < 0)
		login_event(&s->upstream, LEG_EV_ERROR, "connect: refused by the harness");
}

void session_login_deadline(struct session *s, double seconds)
{
	harness_of(s)->deadlines++;
	harness_of(s)->deadline = seconds;
}

void session_delay(struct session *s, double seconds)
{
	harness_of(s)->delays++;
	harness_of(s)->delay = seconds;
}

void session_login_done(struct session *s)
{
	if (s->closing)
		return;
	harness_of(s)->login_done++;
	harness_of(s)->connect_timer = false;
}

void session_proxy_init(struct proxy *px)
{
	px->peers = addrtab_new();
	if (px->peers == NULL)
		harness_oom();
}

void session_shutdown_all(struct proxy *px)
{
	px->stopping = true;
	for (struct session *s = px->sessions; s != NULL; s = s->next)
		if (!s->closing)
			login_shutdown(s);
}

/* ---- the harness ---- */

int harness_conf_set(struct harness_proxy *hp, const char *key, const char *value)
{
	char err[256];
	if (conf_set(hp->px.conf, key, value, "test", err, sizeof(err)) < 0) {
		fprintf(stderr, "login_harness: %s\n", err);
		return -1;
	}
	return 0;
}

struct harness_proxy *harness_proxy_new(const char *const *kv)
{
	struct harness_proxy *hp = calloc(1, sizeof(*hp));
	if (hp == NULL)
		harness_oom();
	if (harness_loop == NULL && (harness_loop = ev_loop_new(EVFLAG_AUTO)) == NULL)
		harness_oom();
	hp->px.loop = harness_loop;
	if ((hp->px.conf = conf_new()) == NULL)
		harness_oom();
	for (size_t i = 0; kv != NULL && kv[i] != NULL; i++) {
		char key[64];
		const char *eq = strchr(kv[i], '=');
		size_t n = eq ? (size_t)(eq - kv[i]) : 0;
		if (eq == NULL || n >= sizeof(key)) {
			fprintf(stderr, "login_harness: bad option %s\n", kv[i]);
			exit(2);
		}
		memcpy(key, kv[i], n);
		key[n] = '\0';
		if (harness_conf_set(hp, key, eq + 1) < 0)
			exit(2);
	}
	hp->px.server_ctx = SSL_CTX_new(TLS_server_method());
	hp->px.client_ctx = SSL_CTX_new(TLS_client_method());
	if (hp->px.server_ctx == NULL || hp->px.client_ctx == NULL)
		harness_oom();
	snprintf(hp->px.upstream_name, sizeof(hp->px.upstream_name), "upstream.test:5222");
	session_proxy_init(&hp->px);
	return hp;
}

void harness_proxy_free(struct harness_proxy *hp)
{
	if (hp == NULL)
		return;
	addrtab_free(hp->px.peers);
	SSL_CTX_free(hp->px.server_ctx);
	SSL_CTX_free(hp->px.client_ctx);
	conf_free(hp->px.conf);
	free(hp);
}

struct harness_session *harness_session_new(struct harness_proxy *hp, enum session_port port)
{
	struct proxy *px = &hp->px;
	struct harness_session *ls = calloc(1, sizeof(*ls));
	if (ls == NULL)
		harness_oom();
	struct session *s = &ls->s;
	struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(40000)};
	peer.sin_addr.s_addr = htonl(0xC0000201); /* 192.0.2.1 */

	ls->hp = hp;
	s->peer_key = addrtab_key((const struct sockaddr *)&peer);
	if (addrtab_add(px->peers, &s->peer_key) < 0)
		harness_oom();
	s->id = ++px->next_sid;
	s->px = px;
	s->port = port;
	s->t0 = ev_now(px->loop);
	snprintf(s->peer_ip, sizeof(s->peer_ip), "192.0.2.1");
	snprintf(s->peer, sizeof(s->peer), "192.0.2.1:40000");
	snprintf(s->local, sizeof(s->local), "198.51.100.1:5222");
	leg_init(&s->client, px->loop, NULL, s, &s->upstream, -1);
	leg_init(&s->upstream, px->loop, NULL, s, &s->client, -1);
	ls->connect_timer = true;
	s->next = px->sessions;
	if (px->sessions)
		px->sessions->prev = s;
	px->sessions = s;
	px->nsessions++;

	evlog_begin(s->id, "connect");
	evlog_str("peer", s->peer);
	evlog_str("local", s->local);
	evlog_str("port_kind", port == SESSION_PORT_DIRECT_TLS ? "direct_tls" : "starttls");
	evlog_end();

	login_start(s); /* it connects upstream: session_connect_upstream() */
	return ls;
}

/* As session.c's session_free (after the reaper took it off the list);
 * login_free() frees everything the login kept. */
void harness_session_free(struct harness_session *ls)
{
	if (ls == NULL)
		return;
	struct session *s = &ls->s;
	struct proxy *px = s->px;
	if (s->prev)
		s->prev->next = s->next;
	else
		px->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	px->nsessions--;
	addrtab_del(px->peers, &s->peer_key, ev_now(px->loop));
	login_free(s);
	leg_free(&s->client);
	leg_free(&s->upstream);
	for (int i = 0; i < 2; i++) {
		buf_free(&ls->leg[i].out);
		buf_free(&ls->leg[i].pending);
	}
	free(ls);
}

static bool harness_can_read(struct harness_session *ls, struct leg *l)
{
	return !ls->s.closing && l->reading && l->io == LEG_IO_OPEN;
}

void harness_pump(struct harness_session *ls)
{
	for (bool again = true; again;) {
		again = false;
		for (int i = 0; i < 2; i++) {
			struct leg *l = harness_leg(ls, (enum harness_side)i);
			struct harness_leg_rec *r = &ls->leg[i];
			if (r->pending.len == 0 || !harness_can_read(ls, l))
				continue;
			/* one read of everything waiting; the copy, since the
			 * login may feed more into pending meanwhile */
			struct buf b = r->pending;
			memset(&r->pending, 0, sizeof(r->pending));
			login_data(l, buf_head(&b), b.len);
			buf_free(&b);
			again = true;
		}
		for (int i = 0; i < 2; i++) {
			struct leg *l = harness_leg(ls, (enum harness_side)i);
			struct harness_leg_rec *r = &ls->leg[i];
			if (!r->eof_pending || r->pending.len > 0 || !harness_can_read(ls, l))
				continue;
			r->eof_pending = false;
			login_event(l, LEG_EV_EOF, NULL);
			again = true;
		}
	}
}

void harness_feed(struct harness_session *ls, enum harness_side side, const char *data, size_t len)
{
	struct leg *l = harness_leg(ls, side);
	struct harness_leg_rec *r = &ls->leg[side];
	if (ls->s.closing || l->io >= LEG_IO_CLOSED || len == 0 || r->eof_pending)
		return; /* nobody reads any more, or the peer has closed */
	l->bytes_in += len;
	if (r->pending.len > 0 || !harness_can_read(ls, l)) {
		if (buf_add(&r->pending, data, len) < 0)
			harness_oom();
	} else {
		login_data(l, data, len);
	}
	harness_pump(ls);
}

void harness_feeds(struct harness_session *ls, enum harness_side side, const char *str)
{
	harness_feed(ls, side, str, strlen(str));
}

void harness_feed_bytewise(struct harness_session *ls, enum harness_side side, const char *data,
                           size_t len)
{
	for (size_t i = 0; i < len; i++)
		harness_feed(ls, side, data + i, 1);
}

static void harness_event(struct harness_session *ls, enum harness_side side, enum leg_event ev,
                          const char *why)
{
	if (ls->s.closing)
		return; /* session.c does not pass events on once closing */
	login_event(harness_leg(ls, side), ev, why);
	harness_pump(ls);
}

void harness_connected(struct harness_session *ls)
{
	struct leg *u = &ls->s.upstream;
	if (ls->s.closing || u->io != LEG_IO_CONNECTING)
		return;
	u->io = LEG_IO_OPEN;
	harness_event(ls, HARNESS_UPSTREAM, LEG_EV_CONNECTED, NULL);
}

void harness_tls_done(struct harness_session *ls, enum harness_side side)
{
	struct leg *l = harness_leg(ls, side);
	if (ls->s.closing || l->io != LEG_IO_HANDSHAKE)
		return;
	l->io = LEG_IO_OPEN;
	harness_event(ls, side, LEG_EV_TLS_DONE, NULL);
}

void harness_tls_error(struct harness_session *ls, enum harness_side side, const char *why)
{
	struct leg *l = harness_leg(ls, side);
	if (ls->s.closing || l->io != LEG_IO_HANDSHAKE)
		return;
	harness_event(ls, side, LEG_EV_TLS_ERROR, why);
}

/* An EOF on an open leg comes after the input the login has not read
 * yet (leg.c sees it only when it reads again). */
void harness_eof(struct harness_session *ls, enum harness_side side)
{
	struct leg *l = harness_leg(ls, side);
	struct harness_leg_rec *r = &ls->leg[side];
	if (l->io == LEG_IO_IDLE || l->io >= LEG_IO_CLOSED || r->eof_pending)
		return;
	if (l->io == LEG_IO_OPEN && (r->pending.len > 0 || !harness_can_read(ls, l))) {
		r->eof_pending = true;
		return;
	}
	harness_event(ls, side, LEG_EV_EOF, NULL);
}

void harness_error(struct harness_session *ls, enum harness_side side, const char *why)
{
	struct leg *l = harness_leg(ls, side);
	if (l->io == LEG_IO_IDLE || l->io >= LEG_IO_CLOSED)
		return;
	harness_event(ls, side, LEG_EV_ERROR, why);
}

void harness_timeout(struct harness_session *ls, bool connect)
{
	if (ls->s.closing)
		return;
	login_timeout(&ls->s, connect);
	harness_pump(ls);
}

void harness_resume(struct harness_session *ls)
{
	if (ls->s.closing)
		return;
	login_resume(&ls->s);
	harness_pump(ls);
}

const char *harness_peek(struct harness_session *ls, enum harness_side side)
{
	struct harness_leg_rec *r = &ls->leg[side];
	return r->out.len == 0 ? "" : buf_head(&r->out) + r->taken;
}

const char *harness_take(struct harness_session *ls, enum harness_side side)
{
	const char *p = harness_peek(ls, side);
	ls->leg[side].taken = ls->leg[side].out.len;
	return p;
}

const char *harness_all(struct harness_session *ls, enum harness_side side)
{
	struct harness_leg_rec *r = &ls->leg[side];
	return r->out.len == 0 ? "" : buf_head(&r->out);
}

bool harness_reading(struct harness_session *ls, enum harness_side side)
{
	return harness_leg(ls, side)->reading;
}

bool harness_closed(struct harness_session *ls)
{
	return ls->s.closing;
}

static char harness_log_path[256];

void harness_log_start(const char *dir)
{
	char err[256];
	snprintf(harness_log_path, sizeof(harness_log_path), "%s/xi-login-XXXXXX",
	         dir ? dir : "/tmp");
	int fd = mkstemp(harness_log_path);
	if (fd < 0) {
		perror("login_harness: mkstemp");
		exit(2);
	}
	close(fd);
	if (evlog_open(harness_log_path, err, sizeof(err)) < 0) {
		fprintf(stderr, "login_harness: %s\n", err);
		exit(2);
	}
}

char *harness_log_stop(void)
{
	evlog_close(); /* waits for the writer */
	FILE *f = fopen(harness_log_path, "rb");
	struct buf b = {0};
	char tmp[4096];
	size_t n;
	while (f != NULL && (n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		if (buf_add(&b, tmp, n) < 0)
			harness_oom();
	if (f != NULL)
		fclose(f);
	unlink(harness_log_path);
	char *out = malloc(b.len + 1);
	if (out == NULL)
		harness_oom();
	memcpy(out, buf_head(&b), b.len);
	out[b.len] = '\0';
	buf_free(&b);
	return out;
}
