#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "bounds.h"
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

/* v1 (2.1): "PROXY" SP proto SP src SP dst SP sport SP dport CRLF */
static const char PP1_PREFIX[6] = "PROXY ";
#define PP2_HEADER 16
#define PP2_CMD_LOCAL 0x0
#define PP2_CMD_PROXY 0x1
#define PP2_FAM_INET 0x1
#define PP2_FAM_INET6 0x2
#define PP2_FAM_UNIX 0x3
#define PP2_TRANS_STREAM 0x1
#define PP2_TRANS_DGRAM 0x2

/* A port: 1 to 5 decimal digits, no sign, no leading zero, <= 65535. */
static bool proxyproto_port(const char *s, uint16_t *port)
{
	size_t n = strlen(s);
	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return false;
	unsigned long v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > 65535)
		return false;
	*port = htons((uint16_t)v);
	return true;
}

static void proxyproto_sa(struct sockaddr_storage *ss, int family, const void *addr, uint16_t port)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)ss;
		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, addr, 4);
		s4->sin_port = port;
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)(void *)ss;
		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, addr, 16);
		s6->sin6_port = port;
	}
}

/* One complete v1 line of len bytes (CRLF included, nothing after). */
static long proxyproto_parse_v1(const unsigned char *p, size_t len, struct proxyproto_hdr *h,
                                const char **why)
{
	char line[PROXY_V1_MAX + 1];
	memcpy(line, p, len - 2);
	line[len - 2] = '\0';
	if (memchr(line, '\0', len - 2) != NULL || strchr(line, '\n') != NULL) {
		*why = "v1: NUL or LF inside the line";
		return -1;
	}
	h->version = 1;
	/* UNKNOWN: the rest of the line is to be ignored (2.1) */
	if (strncmp(line + 6, "UNKNOWN", 7) == 0 && (line[13] == '\0' || line[13] == ' ')) {
		h->cmd = PROXYPROTO_UNKNOWN;
		return (long)len;
	}
	/* exactly six fields, one space apart: no empty field, no trailing space */
	char *f[6];
	size_t nf = 0;
	char *q = line;
	while (q != NULL && nf < 6) {
		f[nf++] = q;
		char *sp = strchr(q, ' ');
		if (sp != NULL)
			*sp++ = '\0';
		q = sp;
	}
	for (size_t i = 0; i < nf; i++)
		if (f[i][0] == '\0') {
			*why = "v1: empty field or extra spaces";
			return -1;
		}
	if (nf != 6 || q != NULL) {
		*why = "v1: expected PROXY TCP4|TCP6 SRC DST SPORT DPORT";
		return -1;
	}
	int family = strcmp(f[1], "TCP4") == 0 ? AF_INET : strcmp(f[1], "TCP6") == 0 ? AF_INET6 : 0;
	if (family == 0) {
		*why = "v1: protocol is not TCP4, TCP6 or UNKNOWN";
		return -1;
	}
	unsigned char sa[16], da[16];
	uint16_t sp, dp;
	if (inet_pton(family, f[2], sa) != 1 || inet_pton(family, f[3], da) != 1) {
		*why = "v1: an address is not one of the protocol's family";
		return -1;
	}
	if (!proxyproto_port(f[4], &sp) || !proxyproto_port(f[5], &dp)) {
		*why = "v1: a port is not a number from 0 to 65535";
		return -1;
	}
	h->cmd = PROXYPROTO_PROXY;
	proxyproto_sa(&h->src, family, sa, sp);
	proxyproto_sa(&h->dst, family, da, dp);
	return (long)len;
}

static long proxyproto_want_v1(const unsigned char *p, size_t n, struct proxyproto_hdr *h,
                               const char **why)
{
	size_t lim = n < PROXY_V1_MAX ? n : PROXY_V1_MAX;
	for (size_t i = 0; i < lim; i++) {
		if (p[i] == '\n') {
			if (i == 0 || p[i - 1] != '\r') {
				*why = "v1: line ends without CRLF";
				return -1;
			}
			return proxyproto_parse_v1(p, i + 1, h, why);
		}
	}
	if (n >= PROXY_V1_MAX) {
		*why = "v1: line longer than 107 bytes";
		return -1;
	}
	return 0;
}

/* The TLVs of a v2 body (after the addresses): well formed, each within. */
static long proxyproto_tlvs(const unsigned char *p, size_t n, unsigned *count)
{
	size_t i = 0;
	*count = 0;
	while (i < n) {
		if (n - i < 3)
			return -1;
		size_t len = ((size_t)p[i + 1] << 8) | p[i + 2];
		if (len > n - i - 3)
			return -1;
		i += 3 + len;
		(*count)++;
	}
	return 0;
}

static long proxyproto_want_v2(const unsigned char *p, size_t n, struct proxyproto_hdr *h,
                               const char **why)
{
	if (n < PP2_HEADER)
		return 0;
	unsigned ver = p[12] >> 4, cmd = p[12] & 0xf, fam = p[13] >> 4, trans = p[13] & 0xf;
	size_t len = ((size_t)p[14] << 8) | p[15];
	if (ver != 2) {
		*why = "v2: version is not 2";
		return -1;
	}
	if (cmd != PP2_CMD_LOCAL && cmd != PP2_CMD_PROXY) {
		*why = "v2: command is neither LOCAL nor PROXY";
		return -1;
	}
	/* 2.2: other families and transports "must be rejected as invalid" */
	if (fam > PP2_FAM_UNIX || trans > PP2_TRANS_DGRAM) {
		*why = "v2: unknown address family or transport";
		return -1;
	}
	if (PP2_HEADER + len > PROXY_V2_MAX) {
		*why = "v2: header longer than PROXY_V2_MAX";
		return -1;
	}
	if (n < PP2_HEADER + len)
		return 0;
	const unsigned char *b = p + PP2_HEADER;
	size_t alen = 0;
	h->version = 2;
	h->cmd = cmd == PP2_CMD_LOCAL ? PROXYPROTO_LOCAL : PROXYPROTO_UNKNOWN;
	if (cmd == PP2_CMD_PROXY && trans == PP2_TRANS_STREAM &&
	    (fam == PP2_FAM_INET || fam == PP2_FAM_INET6)) {
		size_t one = fam == PP2_FAM_INET ? 4 : 16;
		alen = 2 * one + 4;
		if (len < alen) {
			*why = "v2: body shorter than its addresses";
			return -1;
		}
		uint16_t sp, dp;
		memcpy(&sp, b + 2 * one, 2);
		memcpy(&dp, b + 2 * one + 2, 2);
		int family = fam == PP2_FAM_INET ? AF_INET : AF_INET6;
		proxyproto_sa(&h->src, family, b, sp);
		proxyproto_sa(&h->dst, family, b + one, dp);
		h->cmd = PROXYPROTO_PROXY;
	} else if (cmd == PP2_CMD_PROXY) {
		/* UNSPEC, UNIX, or a datagram: no TCP address to take; the
		 * addresses' length is known for UNIX only (216), and TLVs
		 * after an unknown block are not read */
		h->ntlv = 0;
		return (long)(PP2_HEADER + len);
	}
	if (cmd == PP2_CMD_LOCAL) {
		/* a LOCAL header's address block, if any, is to be ignored;
		 * its TLVs cannot be told from it, so they are not read */
		return (long)(PP2_HEADER + len);
	}
	if (proxyproto_tlvs(b + alen, len - alen, &h->ntlv) < 0) {
		*why = "v2: a TLV runs past the header";
		return -1;
	}
	return (long)(PP2_HEADER + len);
}

long proxyproto_parse(const unsigned char *p, size_t n, struct proxyproto_hdr *h, const char **why)
{
	memset(h, 0, sizeof(*h));
	*why = NULL;
	size_t k1 = n < sizeof(PP1_PREFIX) ? n : sizeof(PP1_PREFIX);
	size_t k2 = n < sizeof(PP2_SIGNATURE) ? n : sizeof(PP2_SIGNATURE);
	if (n > 0 && memcmp(p, PP1_PREFIX, k1) == 0)
		return k1 < sizeof(PP1_PREFIX) ? 0 : proxyproto_want_v1(p, n, h, why);
	if (n > 0 && memcmp(p, PP2_SIGNATURE, k2) == 0)
		return k2 < sizeof(PP2_SIGNATURE) ? 0 : proxyproto_want_v2(p, n, h, why);
	if (n == 0)
		return 0;
	*why = "not a PROXY protocol header";
	return -1;
}
