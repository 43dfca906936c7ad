/*
 * The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and
 * 2) the proxy sends first on its connection to the upstream, so that the
 * server sees each client's own address (its per-address limits, its
 * logs, ejabberd's mod_fail2ban) rather than the proxy's.
 */
#ifndef XI_PROXYPROTO_H
#define XI_PROXYPROTO_H

#include <stdint.h>
#include <stddef.h>
#include <sys/socket.h>

struct buf;

/* What the header says of one client connection. */
struct proxyproto_info {
	const struct sockaddr *src; /* the client's address */
	const struct sockaddr *dst; /* the address it connected to */
	const char *authority;      /* v2: the domain the client asked for, or NULL */
	const char *tls_version;    /* v2: the client leg's TLS version, NULL if in the clear */
	uint64_t sid;               /* v2: the session's number in the event log */
};

/* Appends a version 1 header: one text line. Addresses that are not both
 * IPv4 or both IPv6 give "PROXY UNKNOWN" (the server then uses the
 * connection's own). Returns 0, or -1 on out of memory. */
int proxyproto_v1(struct buf *out, const struct proxyproto_info *in);
/* Appends a version 2 header: binary, with the TLVs PP2_TYPE_AUTHORITY
 * (the domain), PP2_TYPE_UNIQUE_ID (the sid, in decimal: the server's
 * log and the proxy's event log can be joined on it) and, for a client
 * leg in TLS, PP2_TYPE_SSL with its version. Returns 0 or -1. */
int proxyproto_v2(struct buf *out, const struct proxyproto_info *in);

/*
 * Reading a header (a listener marked proxy, behind a balancer).
 * PROXYPROTO_PROXY carries both ends; LOCAL (v2: the balancer's own health
 * check) and UNKNOWN (v1 UNKNOWN; v2 PROXY for a family or transport other
 * than TCP over IPv4/IPv6) carry none: the connection's own addresses
 * stand, as the specification says a receiver should do.
 */
enum proxyproto_cmd {
	PROXYPROTO_PROXY = 0,
	PROXYPROTO_LOCAL,
	PROXYPROTO_UNKNOWN,
};

struct proxyproto_hdr {
	int version; /* 1 or 2 */
	enum proxyproto_cmd cmd;
	struct sockaddr_storage src, dst; /* PROXYPROTO_PROXY only */
	unsigned ntlv;                    /* v2: TLVs that followed the addresses */
};

/*
 * Parses the header at the start of p[0..n). Returns its length when it is
 * complete and valid (the bytes after it are the client's), 0 when more is
 * needed (then every byte of p belongs to the header, so a reader may take
 * them all), or -1 with the reason in *why when p cannot begin a valid
 * header. Reads nothing past n, nor past PROXY_V1_MAX / PROXY_V2_MAX.
 */
long proxyproto_parse(const unsigned char *p, size_t n, struct proxyproto_hdr *h, const char **why);

#endif
