/*
 * The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and
 * 2) the proxy sends first on its connection to the upstream, so that the
 * server sees each client's own address (its per-address limits, its
 * logs, ejabberd's mod_fail2ban) rather than the proxy's.
 */
#ifndef XI_PROXYPROTO_H
#define XI_PROXYPROTO_H

#include <stdint.h>
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

#endif
