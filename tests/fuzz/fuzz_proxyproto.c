/*
 * libFuzzer target for the PROXY protocol header reader (proxyproto.c):
 * the input is what a balancer's connection delivers first.
 *
 * Beyond what ASan and UBSan catch: the answer for the whole input agrees
 * with the answers for its prefixes, as the listener sees it arrive in
 * pieces (a prefix of a complete header needs more, every prefix of the
 * input before the header's end needs more, a refusal stays a refusal
 * with a reason); a length never exceeds the input nor the bounds; a
 * PROXY answer holds two addresses of one family, and written back with
 * proxyproto_v1/_v2 and read again gives the same addresses.
 */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bounds.h"
#include "buf.h"
#include "proxyproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		abort();
	size_t n = a->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	if (memcmp(a, b, n) != 0)
		abort();
}

static void fuzz_round_trip(const struct proxyproto_hdr *h)
{
	struct proxyproto_info in = {(const struct sockaddr *)&h->src,
	                             (const struct sockaddr *)&h->dst, "a.example", "TLSv1.3", 1};
	for (int v = 1; v <= 2; v++) {
		struct buf b = {0};
		if ((v == 1 ? proxyproto_v1(&b, &in) : proxyproto_v2(&b, &in)) < 0)
			abort();
		struct proxyproto_hdr back;
		const char *why;
		long r = proxyproto_parse((const unsigned char *)buf_head(&b), b.len, &back, &why);
		if (r != (long)b.len)
			abort();
		/* an IPv4-mapped IPv6 pair is written as IPv4: compare only
		 * what stays one family */
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&h->src;
		const struct sockaddr_in6 *d6 = (const struct sockaddr_in6 *)&h->dst;
		int mapped = h->src.ss_family == AF_INET6 &&
		             (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr) || IN6_IS_ADDR_V4MAPPED(&d6->sin6_addr));
		if (!mapped) {
			if (back.cmd != PROXYPROTO_PROXY)
				abort();
			fuzz_same_addr(&h->src, &back.src);
			fuzz_same_addr(&h->dst, &back.dst);
		}
		buf_free(&b);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxyproto_hdr h;
	const char *why;
	long r = proxyproto_parse(data, size, &h, &why);
	size_t max = PROXY_V2_MAX > PROXY_V1_MAX ? PROXY_V2_MAX : PROXY_V1_MAX;

	if (r < -1 || r > (long)size || r > (long)max)
		abort();
	if (r < 0 && why == NULL)
		abort();
	if (r == 0 && size >= max)
		abort(); /* "more" past every bound: a reader would wait forever */
	/* the reader's view: the input arriving one byte more at a time */
	size_t upto = size < max + 1 ? size : max + 1;
	for (size_t k = 0; k < upto; k++) {
		struct proxyproto_hdr hk;
		const char *wk;
		long rk = proxyproto_parse(data, k, &hk, &wk);
		if (r > 0 && k < (size_t)r && rk != 0)
			abort(); /* a prefix of a complete header must need more */
		if (r > 0 && k >= (size_t)r && rk != r)
			abort(); /* the header ends where it ends */
		if (r == 0 && rk != 0)
			abort();
		if (rk < 0 && r >= 0)
			abort(); /* a refusal cannot be undone by more bytes */
	}
	if (r > 0 && h.cmd == PROXYPROTO_PROXY) {
		if ((h.src.ss_family != AF_INET && h.src.ss_family != AF_INET6) ||
		    h.src.ss_family != h.dst.ss_family)
			abort();
		fuzz_round_trip(&h);
	}
	return 0;
}
