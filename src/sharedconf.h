/*
 * What shared_state names, without any I/O: the Redis URL it is given and
 * the keys the proxies share there. Pure, so it is unit-tested whole.
 *
 * URL forms:
 *   redis://HOST[:PORT][/DB]     HOST a name, an IPv4 address or [IPv6];
 *                                PORT defaults to 6379, DB to 0
 *   unix:///PATH[?db=DB]         a UNIX socket (the path is absolute)
 * No user or password in the URL: a password would reach the
 * configuration's readers and the log; use a UNIX socket (its file
 * permissions) or a private network.
 *
 * Keys (all under SHAREDCONF_PREFIX, so one Redis can hold other data):
 *   xmpp-inspect:fail:ADDR        failures in the window (a counter with
 *                                 the window as its TTL)
 *   xmpp-inspect:inflight:ADDR    attempts waiting for the server (a sorted
 *                                 set: member INSTANCE:SID, score = expiry)
 *   xmpp-inspect:sessions:INST    open sessions of one instance per address
 *                                 (a hash; its TTL refreshed by a heartbeat)
 *   xmpp-inspect:instances:all    live instances (a sorted set, score = expiry)
 * ADDR is the client address as text: IPv4 dotted (also for v4-mapped
 * IPv6), else IPv6 in its compressed form (RFC 5952).
 */
#ifndef XI_SHAREDCONF_H
#define XI_SHAREDCONF_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>

#define SHAREDCONF_PREFIX "xmpp-inspect:"
#define SHAREDCONF_DEFAULT_PORT 6379

struct sharedconf_url {
	bool unix_socket;
	char host[256]; /* name or literal (IPv6 without brackets) */
	unsigned port;
	char path[108]; /* sizeof(sun_path) */
	unsigned db;
};

/* Parses s into u. Returns 0, or -1 with the reason in err. */
int sharedconf_parse_url(const char *s, struct sharedconf_url *u, char *err, size_t errlen);
/* The URL as the log names it (canonical: port and db always written). */
void sharedconf_format_url(const struct sharedconf_url *u, char *out, size_t outlen);
bool sharedconf_url_equal(const struct sharedconf_url *a, const struct sharedconf_url *b);

/* The text of a client address key (addrtab_key()): dotted IPv4 for a
 * v4-mapped address, else compressed IPv6. out needs INET6_ADDRSTRLEN. */
void sharedconf_addr(const struct in6_addr *key, char *out, size_t outlen);
/* PREFIX KIND ":" NAME into out. Returns 0, or -1 if it does not fit. */
int sharedconf_key(char *out, size_t outlen, const char *kind, const char *name);

#endif
