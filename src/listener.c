#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addrtab.h"
#include "conf.h"
#include "evlog.h"
#include "listener.h"
#include "log.h"
#include "proxyin.h"
#include "workers.h"

#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19 /* <linux/in.h> */
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75 /* <linux/in6.h> */
#endif

/* Connections accepted per wakeup: enough to drain a burst, few enough
 * to let established sessions run in between. */
#define LISTENER_ACCEPTS_PER_WAKEUP 64

struct listener {
	ev_io io;
	int fd;
	enum session_port port;
	bool proxy; /* a PROXY header first, from proxy_from only */
	struct proxy *px;
	char name[300];
};

/* One descriptor kept open so that, when accept fails with EMFILE, it can
 * be closed to accept and drop the waiting connection instead of leaving
 * it to wake us again and again. */
static int listener_reserve_fd = -1;

static void listener_take_reserve(void)
{
	if (listener_reserve_fd < 0)
		listener_reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void listener_shed(int lfd)
{
	if (listener_reserve_fd >= 0) {
		close(listener_reserve_fd);
		listener_reserve_fd = -1;
	}
	int fd = accept(lfd, NULL, NULL);
	if (fd >= 0)
		close(fd);
	listener_take_reserve();
}

/* Why a new connection from peer must be refused at once, or NULL. On a
 * proxy listener peer is the balancer: it must be trusted, and the
 * client's max_per_addr waits for its header (proxyin.c). */
static const char *listener_refusal(const struct listener *ls, const struct sockaddr *peer)
{
	const struct proxy *px = ls->px;
	if (px->stopping)
		return "stopping";
	/* across the workers, and counted at once (one place, one step):
	 * a refusal below gives it back (session_count_changed) */
	unsigned open = px->nsessions + px->npending;
	if (px->conf->worker_max_sessions > 0 && open >= px->conf->worker_max_sessions)
		return "max_sessions";
	if (!workers_admit(open, px->conf->max_sessions))
		return "max_sessions";
	if (px->conf->event_log_full == CONF_LOG_FULL_REFUSE && evlog_trouble())
		return "event_log_full"; /* no session the audit cannot record */
	struct in6_addr key = addrtab_key(peer);
	if (ls->proxy)
		return conf_proxy_trusted(px->conf, &key) ? NULL : "proxy_from";
	if (addrtab_count(px->peers, &key) >= px->conf->max_per_addr)
		return "max_per_addr";
	return NULL;
}

/* Fires when connections are waiting. */
static void listener_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop, (void)revents;
	struct listener *ls = (struct listener *)w;
	const int one = 1;

	for (int i = 0; i < LISTENER_ACCEPTS_PER_WAKEUP; i++) {
		struct sockaddr_storage peer, local;
		socklen_t plen = sizeof(peer), llen = sizeof(local);
		int fd =
		    accept4(ls->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				log_warnx("out of file descriptors: connection dropped");
				listener_shed(ls->fd);
			}
			return; /* EAGAIN, or a transient error: come back later */
		}
		const char *refused = listener_refusal(ls, (struct sockaddr *)&peer);
		if (refused != NULL) {
			session_refused((struct sockaddr *)&peer, NULL, refused, NULL);
			close(fd);
			session_count_changed(ls->px);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (getsockname(fd, (struct sockaddr *)&local, &llen) < 0)
			memset(&local, 0, sizeof(local));
		if (ls->proxy)
			proxyin_start(ls->px, fd, ls->port, (struct sockaddr *)&peer,
			              (struct sockaddr *)&local);
		else
			session_new(ls->px, fd, ls->port, (struct sockaddr *)&peer,
			            (struct sockaddr *)&local);
	}
}

/* Whether ai's address can be bound by this process alone (not in use);
 * -1 with the reason. Needs the same options as the real socket. */
static int listener_probe(const struct addrinfo *ai, bool v6only, const char *name, char *err,
                          size_t errlen)
{
	const int one = 1;
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "listen %s: %s", name, strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (v6only)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	int rc = bind(fd, ai->ai_addr, ai->ai_addrlen);
	if (rc < 0)
		snprintf(err, errlen, "listen %s: %s", name, strerror(errno));
	close(fd);
	return rc;
}

struct listener *listener_open(struct proxy *px, const struct conf_addr *a, enum session_port port,
                               enum listener_share share, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	struct addrinfo *res = NULL;
	const int one = 1;
	const char *host = a->host[0] ? a->host : NULL;

	int rc = getaddrinfo(host, a->port, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "listen %s:%s: %s", a->host, a->port, gai_strerror(rc));
		return NULL;
	}
	/* with no host, prefer the IPv6 wildcard (dual-stack) if present */
	struct addrinfo *ai = res;
	for (struct addrinfo *p = res; host == NULL && p != NULL; p = p->ai_next)
		if (p->ai_family == AF_INET6)
			ai = p;

	struct listener *ls = calloc(1, sizeof(*ls));
	if (ls == NULL) {
		freeaddrinfo(res);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	snprintf(ls->name, sizeof(ls->name), "%s%s%s:%s", strchr(a->host, ':') ? "[" : "",
	         a->host[0] ? a->host : "*", strchr(a->host, ':') ? "]" : "", a->port);
	ls->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ls->fd < 0) {
		snprintf(err, errlen, "listen %s: %s", ls->name, strerror(errno));
		goto fail;
	}
	setsockopt(ls->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* workers = N: one socket per worker on the same address, the kernel
	 * spreading new connections over them. Before the first, the port is
	 * bound once without SO_REUSEPORT, so that a port another process
	 * holds is refused as "in use" (with the option on both, a second
	 * proxy of the same user would share the port silently). */
	if (share == LISTENER_SHARED_FIRST && !px->conf->tproxy &&
	    listener_probe(ai, ai->ai_family == AF_INET6 && host != NULL, ls->name, err, errlen) <
	        0)
		goto fail;
	if (share != LISTENER_ALONE &&
	    setsockopt(ls->fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
		snprintf(err, errlen, "listen %s: SO_REUSEPORT: %s", ls->name, strerror(errno));
		goto fail;
	}
	/* tproxy: accept connections TPROXY'd to any address (without it the
	 * kernel drops their SYNs silently) */
	if (px->conf->tproxy &&
	    (ai->ai_family == AF_INET
	         ? setsockopt(ls->fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one))
	         : setsockopt(ls->fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one))) < 0) {
		snprintf(err, errlen, "listen %s: tproxy: IP_TRANSPARENT: %s%s", ls->name,
		         strerror(errno),
		         errno == EPERM ? " (needs CAP_NET_ADMIN; CAP_NET_RAW also does)" : "");
		goto fail;
	}
	if (ai->ai_family == AF_INET6 && host != NULL)
		setsockopt(ls->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(ls->fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(ls->fd, 1024) < 0) {
		snprintf(err, errlen, "listen %s: %s", ls->name, strerror(errno));
		goto fail;
	}
	freeaddrinfo(res);
	ls->px = px;
	ls->port = port;
	ls->proxy = a->proxy;
	ev_io_init(&ls->io, listener_accept_cb, ls->fd, EV_READ);
	listener_take_reserve();
	return ls;
fail:
	if (ls->fd >= 0)
		close(ls->fd);
	free(ls);
	freeaddrinfo(res);
	return NULL;
}

void listener_start(struct listener *ls)
{
	ev_io_start(ls->px->loop, &ls->io);
}

void listener_close(struct listener *ls)
{
	if (ls == NULL)
		return;
	ev_io_stop(ls->px->loop, &ls->io);
	close(ls->fd);
	free(ls);
}

const char *listener_name(const struct listener *ls)
{
	return ls->name;
}
