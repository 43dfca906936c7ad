#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addrtab.h"
#include "bounds.h"
#include "conf.h"
#include "log.h"
#include "proxyin.h"
#include "proxyproto.h"

struct proxyin {
	ev_io io; /* first: recovered from the watcher */
	ev_timer timer;
	int fd;
	enum session_port port;
	struct proxy *px;
	struct proxyin *next, *prev;
	struct sockaddr_storage via, local;
	size_t have; /* header bytes taken so far, in buf */
	unsigned char buf[PROXY_V2_MAX > PROXY_V1_MAX ? PROXY_V2_MAX : PROXY_V1_MAX];
};

static void proxyin_copy(struct sockaddr_storage *to, const struct sockaddr *sa)
{
	memset(to, 0, sizeof(*to));
	if (sa->sa_family == AF_INET)
		memcpy(to, sa, sizeof(struct sockaddr_in));
	else if (sa->sa_family == AF_INET6)
		memcpy(to, sa, sizeof(struct sockaddr_in6));
}

static void proxyin_unlink(struct proxyin *p)
{
	struct proxy *px = p->px;
	ev_io_stop(px->loop, &p->io);
	ev_timer_stop(px->loop, &p->timer);
	if (p->prev)
		p->prev->next = p->next;
	else
		px->pending = p->next;
	if (p->next)
		p->next->prev = p->prev;
	px->npending--; /* told by the callers: a session may take its place */
}

/* Refused: logged as the connection it was (the balancer's address). */
static void proxyin_fail(struct proxyin *p, const char *rule, const char *detail)
{
	session_refused((struct sockaddr *)&p->via, NULL, rule, detail);
	if (strcmp(rule, "proxy_header") == 0)
		log_warnx("PROXY header from a trusted balancer refused: %s", detail);
	proxyin_unlink(p);
	close(p->fd);
	session_count_changed(p->px);
	free(p);
}

/* The header is read: the session starts with the client's addresses
 * (the connection's own for LOCAL, the balancer's health check, and for
 * UNKNOWN, as the specification says a receiver should). */
static void proxyin_done(struct proxyin *p, const struct proxyproto_hdr *h)
{
	struct proxy *px = p->px;
	int fd = p->fd;
	enum session_port port = p->port;
	struct sockaddr_storage via = p->via, local = p->local;
	proxyin_unlink(p);
	free(p);

	bool real = h->cmd == PROXYPROTO_PROXY;
	struct session_origin o = {
	    .peer = (const struct sockaddr *)(real ? &h->src : &via),
	    .dst = (const struct sockaddr *)(real ? &h->dst : &local),
	    .via = (const struct sockaddr *)&via,
	    .proxy = h->version == 1 ? "v1" : "v2",
	    .cmd = real                         ? NULL
	           : h->cmd == PROXYPROTO_LOCAL ? "local"
	                                        : "unknown",
	};
	/* max_per_addr counts clients, so it is checked once the client is known */
	struct in6_addr key = addrtab_key(o.peer);
	if (addrtab_count(px->peers, &key) >= px->conf->max_per_addr) {
		session_refused(o.peer, o.via, "max_per_addr", NULL);
		close(fd);
		session_count_changed(px);
		return;
	}
	session_new_origin(px, fd, port, (const struct sockaddr *)&local, &o);
	session_count_changed(px);
}

/*
 * Fires when the balancer's bytes arrive. They are peeked, and only what
 * belongs to the header is taken: when proxyproto_parse needs more, every
 * byte so far is header, so all are taken (a level-triggered watcher must
 * not wake again for bytes left in the socket); when it is complete, its
 * length is, and what follows stays for the session.
 */
static void proxyin_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop, (void)revents;
	struct proxyin *p = (struct proxyin *)w;
	ssize_t got = recv(p->fd, p->buf + p->have, sizeof(p->buf) - p->have, MSG_PEEK);
	if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (got <= 0) {
		proxyin_fail(p, "proxy_header",
		             got == 0 ? "closed before the header ended" : strerror(errno));
		return;
	}
	struct proxyproto_hdr h;
	const char *why = NULL;
	long r = proxyproto_parse(p->buf, p->have + (size_t)got, &h, &why);
	if (r < 0) {
		proxyin_fail(p, "proxy_header", why);
		return;
	}
	size_t take = r > 0 ? (size_t)r - p->have : (size_t)got;
	ssize_t t = recv(p->fd, p->buf + p->have, take, 0);
	if (t != (ssize_t)take) {
		proxyin_fail(p, "proxy_header", t < 0 ? strerror(errno) : "short read");
		return;
	}
	p->have += take;
	if (r > 0)
		proxyin_done(p, &h);
}

/* Fires when the header took longer than PROXY_HEADER_TIMEOUT. */
static void proxyin_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop, (void)revents;
	struct proxyin *p = (struct proxyin *)((char *)w - offsetof(struct proxyin, timer));
	proxyin_fail(p, "proxy_timeout", p->have ? "header incomplete" : "no header");
}

void proxyin_start(struct proxy *px, int fd, enum session_port port, const struct sockaddr *via,
                   const struct sockaddr *local)
{
	struct proxyin *p = calloc(1, sizeof(*p));
	if (p == NULL) {
		log_warnx("out of memory: connection refused");
		close(fd);
		return;
	}
	p->fd = fd;
	p->port = port;
	p->px = px;
	proxyin_copy(&p->via, via);
	proxyin_copy(&p->local, local);
	p->next = px->pending;
	if (px->pending)
		px->pending->prev = p;
	px->pending = p;
	px->npending++;
	session_count_changed(px);
	ev_io_init(&p->io, proxyin_read_cb, fd, EV_READ);
	ev_timer_init(&p->timer, proxyin_timer_cb, PROXY_HEADER_TIMEOUT, 0.);
	ev_io_start(px->loop, &p->io);
	ev_timer_start(px->loop, &p->timer);
}

void proxyin_close_all(struct proxy *px)
{
	while (px->pending != NULL)
		proxyin_fail(px->pending, "stopping", NULL);
}
