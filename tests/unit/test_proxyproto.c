/*
 * Known answers for proxyproto.c: version 1 lines and version 2 headers
 * byte for byte (proxy-protocol.txt 2.1 and 2.2), for IPv4, IPv6, an
 * IPv4-mapped client on a dual-stack listener, and ends that do not match.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

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

int main(void)
{
	test_v1();
	test_v2();
	T_DONE();
}
