#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
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

/* Where the client meant to go before an iptables REDIRECT sent it here. */
static int upstream_original_dst(int client_fd, struct sockaddr_storage *ss, socklen_t *len)
{
	*len = sizeof(*ss);
	if (getsockopt(client_fd, SOL_IP, SO_ORIGINAL_DST, ss, len) == 0)
		return 0;
	*len = sizeof(*ss);
	return getsockopt(client_fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, ss, len);
}

int upstream_connect(struct proxy *px, struct leg *l, int client_fd, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len = px->upstream_salen;
	const int one = 1;

	memcpy(&ss, &px->upstream_sa, sizeof(ss));
	if (px->conf->upstream_original_dst) {
		struct sockaddr_storage local;
		socklen_t llen = sizeof(local);
		if (upstream_original_dst(client_fd, &ss, &len) < 0) {
			snprintf(err, errlen, "no original destination: %s", strerror(errno));
			return -1;
		}
		/* a connection made to our port directly, not redirected, would
		 * have us connect to ourselves, again and again */
		if (getsockname(client_fd, (struct sockaddr *)&local, &llen) == 0 && llen == len &&
		    memcmp(&local, &ss, len) == 0) {
			snprintf(err, errlen, "original destination is the proxy itself (not redirected)");
			return -1;
		}
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	/* a login is many small messages in lock-step: Nagle would add
	 * delayed-ACK waits to each */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	l->quickack = true; /* and so would the server's, see leg_quickack */
	if (leg_connect(l, fd, (struct sockaddr *)&ss, len) < 0) {
		snprintf(err, errlen, "connect: %s", strerror(errno));
		close(fd);
		l->fd = -1;
		return -1;
	}
	return fd;
}
