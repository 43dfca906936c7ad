#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "proxyproto.h"

/* v2 (proxy-protocol.txt 2.2) */
static const char PP2_SIGNATURE[12] = "\r\n\r\n\0\r\nQUIT\n";
#define PP2_VERSION_PROXY 0x21 /* version 2, command PROXY */
#define PP2_TCP4 0x11
#define PP2_TCP6 0x21
#define PP2_TYPE_AUTHORITY 0x02
#define PP2_TYPE_UNIQUE_ID 0x05
#define PP2_TYPE_SSL 0x20
#define PP2_SUBTYPE_SSL_VERSION 0x21
#define PP2_CLIENT_SSL 0x01
/* a TLV's value is at most this long here: a domain (RFC 1035: 255) */
#define PP2_MAX_TLV 255

/* One endpoint, both IPv4 (an IPv4-mapped IPv6 address counts as IPv4:
 * a dual-stack listener reports IPv4 clients so) or IPv6. */
struct proxyproto_end {
	int family; /* AF_INET, AF_INET6, or 0: neither */
	unsigned char addr[16];
	uint16_t port; /* network order */
};

static void proxyproto_end(const struct sockaddr *sa, struct proxyproto_end *e)
{
	memset(e, 0, sizeof(*e));
	if (sa == NULL)
		return;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
		e->family = AF_INET;
		memcpy(e->addr, &s4->sin_addr, 4);
		e->port = s4->sin_port;
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
		e->port = s6->sin6_port;
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			e->family = AF_INET;
			memcpy(e->addr, s6->sin6_addr.s6_addr + 12, 4);
		} else {
			e->family = AF_INET6;
			memcpy(e->addr, &s6->sin6_addr, 16);
		}
	}
}

/* Both ends of one family, or false (the header then says UNKNOWN/LOCAL). */
static bool proxyproto_ends(const struct proxyproto_info *in, struct proxyproto_end *src,
                            struct proxyproto_end *dst)
{
	proxyproto_end(in->src, src);
	proxyproto_end(in->dst, dst);
	return src->family != 0 && src->family == dst->family;
}

int proxyproto_v1(struct buf *out, const struct proxyproto_info *in)
{
	struct proxyproto_end s, d;
	char sa[INET6_ADDRSTRLEN], da[INET6_ADDRSTRLEN];
	if (!proxyproto_ends(in, &s, &d) || inet_ntop(s.family, s.addr, sa, sizeof(sa)) == NULL ||
	    inet_ntop(d.family, d.addr, da, sizeof(da)) == NULL)
		return buf_adds(out, "PROXY UNKNOWN\r\n");
	return buf_addf(out, "PROXY %s %s %s %u %u\r\n", s.family == AF_INET ? "TCP4" : "TCP6", sa,
	                da, ntohs(s.port), ntohs(d.port));
}

static int proxyproto_tlv(struct buf *b, unsigned char type, const void *v, size_t n)
{
	unsigned char h[3] = {type, (unsigned char)(n >> 8), (unsigned char)n};
	return buf_add(b, h, sizeof(h)) | buf_add(b, v, n);
}

int proxyproto_v2(struct buf *out, const struct proxyproto_info *in)
{
	struct proxyproto_end s, d;
	struct buf body = {0};
	unsigned char fam = 0x00; /* UNSPEC: no addresses (LOCAL's meaning, under PROXY) */
	int rc = 0;

	if (proxyproto_ends(in, &s, &d)) {
		size_t alen = s.family == AF_INET ? 4 : 16;
		fam = s.family == AF_INET ? PP2_TCP4 : PP2_TCP6;
		rc |= buf_add(&body, s.addr, alen);
		rc |= buf_add(&body, d.addr, alen);
		rc |= buf_add(&body, &s.port, 2);
		rc |= buf_add(&body, &d.port, 2);
	}
	if (in->authority != NULL && in->authority[0] != '\0')
		rc |= proxyproto_tlv(&body, PP2_TYPE_AUTHORITY, in->authority,
		                     strnlen(in->authority, PP2_MAX_TLV));
	char id[24];
	int idn = snprintf(id, sizeof(id), "%llu", (unsigned long long)in->sid);
	rc |= proxyproto_tlv(&body, PP2_TYPE_UNIQUE_ID, id, (size_t)idn);
	if (in->tls_version != NULL) {
		/* client flags, then verify (non-zero: no client certificate
		 * was verified), then the version as a sub-TLV */
		struct buf ssl = {0};
		unsigned char head[5] = {PP2_CLIENT_SSL, 0, 0, 0, 1};
		rc |= buf_add(&ssl, head, sizeof(head));
		rc |= proxyproto_tlv(&ssl, PP2_SUBTYPE_SSL_VERSION, in->tls_version,
		                     strnlen(in->tls_version, PP2_MAX_TLV));
		rc |= proxyproto_tlv(&body, PP2_TYPE_SSL, buf_head(&ssl), ssl.len);
		buf_free(&ssl);
	}
	unsigned char head[4] = {PP2_VERSION_PROXY, fam, (unsigned char)(body.len >> 8),
	                         (unsigned char)body.len};
	rc |= buf_add(out, PP2_SIGNATURE, sizeof(PP2_SIGNATURE));
	rc |= buf_add(out, head, sizeof(head));
	rc |= buf_add(out, buf_head(&body), body.len);
	buf_free(&body);
	return rc ? -1 : 0;
}
