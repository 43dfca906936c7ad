#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "leg.h"
#include "session.h"
#include "upstream.h"

/* from <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h>,
 * which clash with the libc socket headers */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif
/* from <linux/in.h> and <linux/in6.h>, for older libc headers */
#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif

int upstream_resolve(const struct conf_addr *a, struct sockaddr_storage *ss, socklen_t *len,
                     char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG};
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(a->host, a->port, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "upstream %s:%s: %s", a->host, a->port, gai_strerror(rc));
		return -1;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* A v4-mapped IPv6 address (a dual-stack listener's view of an IPv4
 * client) as the IPv4 address it is, so that both ends of the upstream
 * connection are of one family. */
static void upstream_unmap(struct sockaddr_storage *ss, socklen_t *len)
{
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
	if (ss->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
		return;
	struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = in6->sin6_port};
	memcpy(&in.sin_addr, &in6->sin6_addr.s6_addr[12], 4);
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, &in, sizeof(in));
	*len = sizeof(in);
}

/* Whether addr is one of this host's own addresses: binding a plain
 * socket to it (without IP_TRANSPARENT) succeeds only then. */
static bool upstream_is_local(const struct sockaddr_storage *addr, socklen_t len)
{
	struct sockaddr_storage a = *addr;
	int fd = socket(a.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	if (a.ss_family == AF_INET)
		((struct sockaddr_in *)&a)->sin_port = 0;
	else
		((struct sockaddr_in6 *)&a)->sin6_port = 0;
	bool local = bind(fd, (struct sockaddr *)&a, len) == 0;
	close(fd);
	return local;
}

static unsigned upstream_port(const struct sockaddr_storage *ss)
{
	return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
	                                      : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* Same family, address and port (the rest of a sockaddr may differ). */
static bool upstream_same(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family || upstream_port(a) != upstream_port(b))
		return false;
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
	              &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
}

/*
 * Where the client meant to go: with tproxy the accepted socket's own
 * address (TPROXY keeps it), else what an iptables REDIRECT rewrote
 * (SO_ORIGINAL_DST). A connection made to our port directly, not
 * redirected, would have us connect to ourselves, again and again: with
 * REDIRECT the original destination is then our own address; with TPROXY
 * it is one of this host's addresses on one of our listening ports.
 */
static int upstream_original_dst(const struct conf *c, int client_fd, struct sockaddr_storage *ss,
                                 socklen_t *len, char *err, size_t errlen)
{
	struct sockaddr_storage local;
	socklen_t llen = sizeof(local);
	if (getsockname(client_fd, (struct sockaddr *)&local, &llen) < 0) {
		snprintf(err, errlen, "getsockname: %s", strerror(errno));
		return -1;
	}
	if (c->tproxy) {
		*ss = local;
		*len = llen;
		upstream_unmap(ss, len);
		for (size_t i = 0; i < c->nlisten + c->nlisten_tls; i++) {
			const struct conf_addr *a =
			    i < c->nlisten ? &c->listen[i] : &c->listen_tls[i - c->nlisten];
			if ((unsigned)atoi(a->port) == upstream_port(ss) &&
			    upstream_is_local(ss, *len)) {
				snprintf(err, errlen,
				         "original destination is the proxy itself (not TPROXY'd)");
				return -1;
			}
		}
		return 0;
	}
	*len = sizeof(*ss);
	if (getsockopt(client_fd, SOL_IP, SO_ORIGINAL_DST, ss, len) < 0) {
		*len = sizeof(*ss);
		if (getsockopt(client_fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, ss, len) < 0) {
			snprintf(err, errlen, "no original destination: %s", strerror(errno));
			return -1;
		}
	}
	upstream_unmap(ss, len);
	upstream_unmap(&local, &llen);
	if (upstream_same(&local, ss)) {
		snprintf(err, errlen, "original destination is the proxy itself (not redirected)");
		return -1;
	}
	return 0;
}

/* upstream_source = client: fd leaves from the client's own address
 * (behind a proxy listener, the one its balancer's header gave), the
 * kernel picking the port, so that the server sees and logs it. Binding
 * to an address not of this host takes IP_TRANSPARENT, so CAP_NET_ADMIN;
 * the server's answers come back only if the host routes them to the
 * proxy (README: the socket match and the policy route). */
static int upstream_bind_client(int fd, const struct sockaddr_storage *client, sa_family_t family,
                                char *err, size_t errlen)
{
	struct sockaddr_storage src = *client;
	socklen_t slen =
	    src.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	const int one = 1;
	upstream_unmap(&src, &slen);
	if (src.ss_family != family) {
		snprintf(err, errlen,
		         "upstream_source = client: the client is IPv%c, the server IPv%c",
		         src.ss_family == AF_INET ? '4' : '6', family == AF_INET ? '4' : '6');
		return -1;
	}
	int rc = family == AF_INET ? setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one))
	                           : setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one));
	if (rc < 0) {
		snprintf(err, errlen, "upstream_source = client: IP_TRANSPARENT: %s%s",
		         strerror(errno),
		         errno == EPERM ? " (needs CAP_NET_ADMIN; CAP_NET_RAW also does)" : "");
		return -1;
	}
	if (family == AF_INET)
		((struct sockaddr_in *)&src)->sin_port = 0;
	else
		((struct sockaddr_in6 *)&src)->sin6_port = 0;
	if (bind(fd, (struct sockaddr *)&src, slen) < 0) {
		snprintf(err, errlen, "upstream_source = client: bind: %s", strerror(errno));
		return -1;
	}
	return 0;
}

int upstream_connect(struct proxy *px, struct leg *l, int client_fd,
                     const struct sockaddr_storage *client, struct sockaddr_storage *dst, char *err,
                     size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len = px->upstream_salen;
	const int one = 1;

	memcpy(&ss, &px->upstream_sa, sizeof(ss));
	dst->ss_family = AF_UNSPEC;
	if (px->conf->upstream_original_dst &&
	    upstream_original_dst(px->conf, client_fd, &ss, &len, err, errlen) < 0)
		return -1;
	*dst = ss;
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	/* a login is many small messages in lock-step: Nagle would add
	 * delayed-ACK waits to each */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	l->quickack = true; /* and so would the server's, see leg_quickack */
	if (px->conf->upstream_source == CONF_SOURCE_CLIENT &&
	    upstream_bind_client(fd, client, ss.ss_family, err, errlen) < 0) {
		close(fd);
		return -1;
	}
	if (leg_connect(l, fd, (struct sockaddr *)&ss, len) < 0) {
		snprintf(err, errlen, "connect: %s", strerror(errno));
		close(fd);
		l->fd = -1;
		return -1;
	}
	return fd;
}
