/*
 * Known answers for proxyproto.c: version 1 lines and version 2 headers
 * byte for byte (proxy-protocol.txt 2.1 and 2.2), for IPv4, IPv6, an
 * IPv4-mapped client on a dual-stack listener, and ends that do not match.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "bounds.h"
#include "buf.h"
#include "proxyproto.h"
#include "t.h"

static struct sockaddr_in v4(const char *ip, unsigned short port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, ip, &a.sin_addr);
	return a;
}

static struct sockaddr_in6 v6(const char *ip, unsigned short port)
{
	struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
	inet_pton(AF_INET6, ip, &a.sin6_addr);
	return a;
}

static bool same(const struct buf *b, const void *want, size_t n)
{
	return b->len == n && memcmp(buf_head(b), want, n) == 0;
}

static void test_v1(void)
{
	struct sockaddr_in c = v4("127.0.0.2", 40000), l = v4("127.0.0.1", 5222);
	struct sockaddr_in6 c6 = v6("2001:db8::1", 40001), l6 = v6("2001:db8::2", 5223);
	struct sockaddr_in6 m = v6("::ffff:192.0.2.7", 40002), lm = v6("::ffff:192.0.2.1", 5222);
	struct buf b = {0};

	struct proxyproto_info in = {(struct sockaddr *)&c, (struct sockaddr *)&l, NULL, NULL, 1};
	proxyproto_v1(&b, &in);
	buf_add(&b, "", 1);
	T_STREQ(buf_head(&b), "PROXY TCP4 127.0.0.2 127.0.0.1 40000 5222\r\n", "v1: IPv4");
	buf_free(&b);

	in.src = (struct sockaddr *)&c6, in.dst = (struct sockaddr *)&l6;
	proxyproto_v1(&b, &in);
	buf_add(&b, "", 1);
	T_STREQ(buf_head(&b), "PROXY TCP6 2001:db8::1 2001:db8::2 40001 5223\r\n", "v1: IPv6");
	buf_free(&b);

	in.src = (struct sockaddr *)&m, in.dst = (struct sockaddr *)&lm;
	proxyproto_v1(&b, &in);
	buf_add(&b, "", 1);
	T_STREQ(buf_head(&b), "PROXY TCP4 192.0.2.7 192.0.2.1 40002 5222\r\n",
	        "v1: an IPv4-mapped client is written as IPv4");
	buf_free(&b);

	in.src = (struct sockaddr *)&c, in.dst = (struct sockaddr *)&l6;
	proxyproto_v1(&b, &in);
	buf_add(&b, "", 1);
	T_STREQ(buf_head(&b), "PROXY UNKNOWN\r\n", "v1: mixed families: UNKNOWN");
	buf_free(&b);
}

static void test_v2(void)
{
	struct sockaddr_in c = v4("127.0.0.2", 40000), l = v4("127.0.0.1", 5222);
	struct buf b = {0};
	struct proxyproto_info in = {(struct sockaddr *)&c, (struct sockaddr *)&l, "lab.test",
	                             "TLSv1.3", 42};
	T_CHECK(proxyproto_v2(&b, &in) == 0, "v2: built");
	static const unsigned char want[] = {
	    '\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n', /* signature */
	    0x21, 0x11, 0, 12 + 11 + 5 + 18,                                 /* v2 PROXY, TCP4 */
	    127, 0, 0, 2, 127, 0, 0, 1, 0x9c, 0x40, 0x14, 0x66,              /* addresses, ports */
	    0x02, 0, 8, 'l', 'a', 'b', '.', 't', 'e', 's', 't',              /* authority */
	    0x05, 0, 2, '4', '2',                                            /* unique id */
	    0x20, 0, 15, 0x01, 0, 0, 0, 1,                                   /* SSL: client, verify */
	    0x21, 0, 7, 'T', 'L', 'S', 'v', '1', '.', '3'};                  /* SSL version */
	T_CHECK(same(&b, want, sizeof(want)), "v2: IPv4 with authority, unique id and SSL");
	buf_free(&b);

	/* in the clear, no domain: addresses and the unique id only */
	struct sockaddr_in6 c6 = v6("2001:db8::1", 1), l6 = v6("2001:db8::2", 2);
	struct proxyproto_info in6 = {(struct sockaddr *)&c6, (struct sockaddr *)&l6, NULL, NULL, 7};
	proxyproto_v2(&b, &in6);
	T_CHECK(b.len == 16 + 36 + 4 && (unsigned char)buf_head(&b)[13] == 0x21 &&
	            buf_head(&b)[15] == 36 + 4 && buf_head(&b)[16 + 36] == 0x05,
	        "v2: IPv6, TCP6, no SSL or authority");
	buf_free(&b);

	/* mixed families: UNSPEC, no addresses, TLVs still there */
	struct proxyproto_info mixed = {(struct sockaddr *)&c, (struct sockaddr *)&l6, NULL, NULL, 7};
	proxyproto_v2(&b, &mixed);
	T_CHECK(b.len == 16 + 4 && buf_head(&b)[13] == 0x00 && buf_head(&b)[15] == 4,
	        "v2: mixed families: UNSPEC with no addresses");
	buf_free(&b);
}

/* Parses all n bytes of p and wants length want (0: more, -1: invalid). */
static long parse(const void *p, size_t n, struct proxyproto_hdr *h)
{
	const char *why = "";
	long r = proxyproto_parse(p, n, h, &why);
	if (r < 0 && why == NULL)
		return -2; /* an invalid header must say why */
	return r;
}

static const char *ip_of(const struct sockaddr_storage *ss, char *out, size_t n)
{
	unsigned port = 0;
	char ip[INET6_ADDRSTRLEN] = "?";
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		port = ntohs(a->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
		port = ntohs(a->sin6_port);
	}
	snprintf(out, n, "%s %u", ip, port);
	return out;
}

static void test_parse_v1(void)
{
	struct proxyproto_hdr h;
	char a[80];
	const char *l4 = "PROXY TCP4 192.0.2.7 198.51.100.1 40000 5222\r\n<stream";
	size_t n4 = strlen("PROXY TCP4 192.0.2.7 198.51.100.1 40000 5222\r\n");
	T_CHECK(parse(l4, strlen(l4), &h) == (long)n4 && h.version == 1 &&
	            h.cmd == PROXYPROTO_PROXY,
	        "parse v1: TCP4 line, its length (the client's bytes after it are not taken)");
	T_STREQ(ip_of(&h.src, a, sizeof(a)), "192.0.2.7 40000", "parse v1: TCP4 source");
	T_STREQ(ip_of(&h.dst, a, sizeof(a)), "198.51.100.1 5222", "parse v1: TCP4 destination");
	const char *l6 = "PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
	T_CHECK(parse(l6, strlen(l6), &h) == (long)strlen(l6), "parse v1: TCP6 line");
	T_STREQ(ip_of(&h.src, a, sizeof(a)), "2001:db8::1 1", "parse v1: TCP6 source");
	T_CHECK(parse("PROXY UNKNOWN\r\n", 15, &h) == 15 && h.cmd == PROXYPROTO_UNKNOWN,
	        "parse v1: UNKNOWN");
	const char *uk = "PROXY UNKNOWN ffff::1 whatever 1 2\r\n";
	T_CHECK(parse(uk, strlen(uk), &h) == (long)strlen(uk) && h.cmd == PROXYPROTO_UNKNOWN,
	        "parse v1: UNKNOWN, the rest of the line ignored");

	/* every prefix of a valid line asks for more, never fails */
	int ok = 1;
	for (size_t i = 0; i < n4; i++)
		ok &= parse(l4, i, &h) == 0;
	T_CHECK(ok, "parse v1: each prefix of a line needs more");

	static const char *bad[] = {
	    "PROXY TCP4 192.0.2.7 198.51.100.1 40000 5222\n",      /* LF alone */
	    "PROXY TCP4 192.0.2.7  198.51.100.1 40000 5222\r\n",   /* two spaces */
	    "PROXY TCP4 192.0.2.7 198.51.100.1 40000 5222 \r\n",   /* trailing space */
	    "PROXY TCP4 192.0.2.7 198.51.100.1 40000 5222 9\r\n",  /* seven fields */
	    "PROXY TCP4 192.0.2.7 198.51.100.1 40000\r\n",         /* five */
	    "PROXY TCP4 2001:db8::1 198.51.100.1 40000 5222\r\n",  /* v6 in TCP4 */
	    "PROXY TCP6 192.0.2.7 2001:db8::2 1 2\r\n",            /* v4 in TCP6 */
	    "PROXY TCP4 192.0.2.7 198.51.100.1 65536 5222\r\n",    /* port too big */
	    "PROXY TCP4 192.0.2.7 198.51.100.1 -1 5222\r\n",       /* sign */
	    "PROXY TCP4 192.0.2.7 198.51.100.1 0080 5222\r\n",     /* leading zero */
	    "PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n",           /* not TCP */
	    "PROXY tcp4 192.0.2.7 198.51.100.1 1 2\r\n",           /* case matters */
	    "PROXY \r\n",
	    "PROXY UNKNOWNX\r\n",
	    "GET / HTTP/1.0\r\n",
	    "<?xml version='1.0'?>",
	    "\x16\x03\x01\x02\x00", /* a TLS ClientHello: the balancer sent no header */
	};
	ok = 1;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (parse(bad[i], strlen(bad[i]), &h) != -1) {
			printf("  accepted: %s\n", bad[i]);
			ok = 0;
		}
	T_CHECK(ok, "parse v1: malformed lines and other protocols are refused, with a reason");
	char nul[] = "PROXY TCP4 192.0.2.7\0198.51.100.1 1 2\r\n";
	T_CHECK(parse(nul, sizeof(nul) - 1, &h) == -1, "parse v1: a NUL in the line");

	/* 107 bytes with no CRLF: refused; 106 bytes: still waiting */
	char longl[200];
	memset(longl, '1', sizeof(longl));
	memcpy(longl, "PROXY UNKNOWN ", 14);
	T_CHECK(parse(longl, PROXY_V1_MAX - 1, &h) == 0, "parse v1: 106 bytes, no CRLF: more");
	T_CHECK(parse(longl, PROXY_V1_MAX, &h) == -1, "parse v1: 107 bytes without CRLF: refused");
	memcpy(longl + PROXY_V1_MAX - 2, "\r\n", 2);
	T_CHECK(parse(longl, PROXY_V1_MAX, &h) == PROXY_V1_MAX,
	        "parse v1: a line of exactly 107 bytes is taken");
	memcpy(longl + PROXY_V1_MAX - 2, "11\r\n", 4);
	T_CHECK(parse(longl, PROXY_V1_MAX + 2, &h) == -1, "parse v1: a line of 109 bytes: refused");
}

static size_t v2hdr(unsigned char *out, unsigned char vc, unsigned char fam, const void *body,
                    size_t n)
{
	memcpy(out, "\r\n\r\n\0\r\nQUIT\n", 12);
	out[12] = vc, out[13] = fam, out[14] = (unsigned char)(n >> 8), out[15] = (unsigned char)n;
	memcpy(out + 16, body, n);
	return 16 + n;
}

static void test_parse_v2(void)
{
	struct proxyproto_hdr h;
	char a[80];
	unsigned char m[2048];

	/* round trip: what proxyproto_v2 writes (with its TLVs) reads back */
	struct sockaddr_in c = v4("192.0.2.7", 40000), l = v4("198.51.100.1", 5223);
	struct proxyproto_info in = {(struct sockaddr *)&c, (struct sockaddr *)&l, "lab.test",
	                             "TLSv1.3", 42};
	struct buf b = {0};
	proxyproto_v2(&b, &in);
	buf_add(&b, "\x16\x03\x01", 3); /* the ClientHello that follows */
	T_CHECK(parse(buf_head(&b), b.len, &h) == (long)b.len - 3 && h.version == 2 &&
	            h.cmd == PROXYPROTO_PROXY && h.ntlv == 3,
	        "parse v2: TCP4 with three TLVs, the bytes after it left alone");
	T_STREQ(ip_of(&h.src, a, sizeof(a)), "192.0.2.7 40000", "parse v2: TCP4 source");
	T_STREQ(ip_of(&h.dst, a, sizeof(a)), "198.51.100.1 5223", "parse v2: TCP4 destination");
	int ok = 1;
	for (size_t i = 0; i < b.len - 3; i++)
		ok &= parse(buf_head(&b), i, &h) == 0;
	T_CHECK(ok, "parse v2: each prefix needs more (a header split across reads)");
	buf_free(&b);

	struct sockaddr_in6 c6 = v6("2001:db8::1", 1), l6 = v6("2001:db8::2", 2);
	struct proxyproto_info in6 = {(struct sockaddr *)&c6, (struct sockaddr *)&l6, NULL, NULL, 7};
	proxyproto_v2(&b, &in6);
	T_CHECK(parse(buf_head(&b), b.len, &h) == (long)b.len && h.cmd == PROXYPROTO_PROXY,
	        "parse v2: TCP6");
	T_STREQ(ip_of(&h.src, a, sizeof(a)), "2001:db8::1 1", "parse v2: TCP6 source");
	buf_free(&b);

	size_t n = v2hdr(m, 0x20, 0x00, "", 0);
	T_CHECK(parse(m, n, &h) == 16 && h.cmd == PROXYPROTO_LOCAL, "parse v2: LOCAL (health check)");
	n = v2hdr(m, 0x20, 0x11, "\1\2\3\4\5\6\7\10\0\1\0\2", 12);
	T_CHECK(parse(m, n, &h) == 28 && h.cmd == PROXYPROTO_LOCAL,
	        "parse v2: LOCAL with addresses: they are ignored");
	n = v2hdr(m, 0x21, 0x00, "", 0);
	T_CHECK(parse(m, n, &h) == 16 && h.cmd == PROXYPROTO_UNKNOWN, "parse v2: PROXY UNSPEC");
	unsigned char unixbody[216] = {0};
	n = v2hdr(m, 0x21, 0x31, unixbody, sizeof(unixbody));
	T_CHECK(parse(m, n, &h) == (long)n && h.cmd == PROXYPROTO_UNKNOWN,
	        "parse v2: UNIX stream: unknown (no TCP address)");
	n = v2hdr(m, 0x21, 0x12, "\1\2\3\4\5\6\7\10\0\1\0\2", 12);
	T_CHECK(parse(m, n, &h) == (long)n && h.cmd == PROXYPROTO_UNKNOWN,
	        "parse v2: UDP over IPv4: unknown");

	n = v2hdr(m, 0x21, 0x11, "\1\2\3\4\5\6\7\10\0\1", 10);
	T_CHECK(parse(m, n, &h) == -1, "parse v2: body shorter than the IPv4 addresses");
	n = v2hdr(m, 0x21, 0x21, "\1\2\3\4\5\6\7\10\0\1\0\2", 12);
	T_CHECK(parse(m, n, &h) == -1, "parse v2: body shorter than the IPv6 addresses");
	n = v2hdr(m, 0x21, 0x11, "\1\2\3\4\5\6\7\10\0\1\0\2\x05\0\x09zz", 17);
	T_CHECK(parse(m, n, &h) == -1, "parse v2: a TLV longer than what is left");
	n = v2hdr(m, 0x21, 0x11, "\1\2\3\4\5\6\7\10\0\1\0\2\x05\0", 14);
	T_CHECK(parse(m, n, &h) == -1, "parse v2: a cut TLV header");
	n = v2hdr(m, 0x21, 0x11, "\1\2\3\4\5\6\7\10\0\1\0\2\x04\0\0", 15);
	T_CHECK(parse(m, n, &h) == (long)n && h.ntlv == 1, "parse v2: an empty TLV (NOOP)");
	n = v2hdr(m, 0x11, 0x11, "\1\2\3\4\5\6\7\10\0\1\0\2", 12);
	T_CHECK(parse(m, n, &h) == -1, "parse v2: version 1 in the binary form");
	n = v2hdr(m, 0x22, 0x11, "\1\2\3\4\5\6\7\10\0\1\0\2", 12);
	T_CHECK(parse(m, n, &h) == -1, "parse v2: command 2");
	n = v2hdr(m, 0x21, 0x41, "\1\2\3\4\5\6\7\10\0\1\0\2", 12);
	T_CHECK(parse(m, n, &h) == -1, "parse v2: family 4");
	n = v2hdr(m, 0x21, 0x13, "\1\2\3\4\5\6\7\10\0\1\0\2", 12);
	T_CHECK(parse(m, n, &h) == -1, "parse v2: transport 3");

	/* the stated length is checked before the body is waited for */
	v2hdr(m, 0x21, 0x11, "", 0);
	m[14] = (PROXY_V2_MAX - 16 + 1) >> 8, m[15] = (PROXY_V2_MAX - 16 + 1) & 0xff;
	T_CHECK(parse(m, 16, &h) == -1, "parse v2: a stated length past PROXY_V2_MAX, refused at once");
	m[14] = 0xff, m[15] = 0xff;
	T_CHECK(parse(m, 16, &h) == -1, "parse v2: length 65535: refused at once");
	unsigned char big[PROXY_V2_MAX - 16];
	memset(big, 0, sizeof(big));
	memcpy(big, "\1\2\3\4\5\6\7\10\0\1\0\2", 12);
	big[12] = 0x04, big[13] = (sizeof(big) - 15) >> 8, big[14] = (sizeof(big) - 15) & 0xff;
	unsigned char mm[PROXY_V2_MAX];
	n = v2hdr(mm, 0x21, 0x11, big, sizeof(big));
	T_CHECK(parse(mm, n, &h) == PROXY_V2_MAX, "parse v2: a header of exactly PROXY_V2_MAX");

	unsigned char sig[12];
	memcpy(sig, "\r\n\r\n\0\r\nQUIT\n", 12);
	sig[11] = 'X';
	T_CHECK(parse(sig, 12, &h) == -1, "parse v2: a signature off by its last byte");
	T_CHECK(parse(sig, 11, &h) == 0, "parse v2: eleven bytes of the signature: more");
	T_CHECK(parse("", 0, &h) == 0, "parse: nothing yet: more");
}

int main(void)
{
	test_v1();
	test_v2();
	test_parse_v1();
	test_parse_v2();
	T_DONE();
}
