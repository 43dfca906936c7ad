#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bounds.h"
#include "sharedconf.h"

/* A decimal number of at most 9 digits, all of s up to end; -1 if not. */
static long sharedconf_number(const char *s, const char *end)
{
	long v = 0;
	if (s == end || end - s > 9)
		return -1;
	for (const char *p = s; p < end; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		v = v * 10 + (*p - '0');
	}
	return v;
}

static int sharedconf_db(const char *s, const char *end, struct sharedconf_url *u, char *err,
                         size_t errlen)
{
	long db = sharedconf_number(s, end);
	if (db < 0 || db > SHARED_DB_MAX) {
		snprintf(err, errlen, "the database must be a number, 0 to %d", SHARED_DB_MAX);
		return -1;
	}
	u->db = (unsigned)db;
	return 0;
}

/* unix:///PATH[?db=N] */
static int sharedconf_parse_unix(const char *s, struct sharedconf_url *u, char *err, size_t errlen)
{
	const char *q = strchr(s, '?');
	size_t n = q ? (size_t)(q - s) : strlen(s);
	if (n < 2 || s[0] != '/') {
		snprintf(err, errlen, "a UNIX socket needs an absolute path (unix:///PATH)");
		return -1;
	}
	if (n >= sizeof(u->path)) {
		snprintf(err, errlen, "the socket path is longer than %zu bytes",
		         sizeof(u->path) - 1);
		return -1;
	}
	memcpy(u->path, s, n);
	u->path[n] = '\0';
	u->unix_socket = true;
	if (q == NULL)
		return 0;
	if (strncmp(q, "?db=", 4) != 0) {
		snprintf(err, errlen, "the only parameter is ?db=N");
		return -1;
	}
	return sharedconf_db(q + 4, q + strlen(q), u, err, errlen);
}

/* redis://HOST[:PORT][/DB] */
static int sharedconf_parse_tcp(const char *s, struct sharedconf_url *u, char *err, size_t errlen)
{
	const char *host = s, *hend, *p;
	if (strpbrk(s, "@?#") != NULL) {
		snprintf(err, errlen, "no user, password, parameter or fragment in a redis:// URL");
		return -1;
	}
	if (*s == '[') {
		host = s + 1;
		hend = strchr(host, ']');
		if (hend == NULL) {
			snprintf(err, errlen, "an IPv6 address must be closed by ]");
			return -1;
		}
		p = hend + 1;
	} else {
		hend = host + strcspn(host, ":/");
		p = hend;
	}
	size_t n = (size_t)(hend - host);
	if (n == 0 || n > 253) {
		snprintf(err, errlen, "expected a host name or address");
		return -1;
	}
	memcpy(u->host, host, n);
	u->host[n] = '\0';
	if (*s == '[') {
		struct in6_addr a;
		if (inet_pton(AF_INET6, u->host, &a) != 1) {
			snprintf(err, errlen, "not an IPv6 address between [ and ]");
			return -1;
		}
	} else if (u->host[strspn(u->host, "abcdefghijklmnopqrstuvwxyz"
	                                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")] != '\0') {
		snprintf(err, errlen, "a host name has letters, digits, dots and hyphens only");
		return -1;
	}
	u->port = SHAREDCONF_DEFAULT_PORT;
	if (*p == ':') {
		const char *pend = p + 1 + strcspn(p + 1, "/");
		long port = sharedconf_number(p + 1, pend);
		if (port < 1 || port > 65535) {
			snprintf(err, errlen, "the port must be a number, 1 to 65535");
			return -1;
		}
		u->port = (unsigned)port;
		p = pend;
	}
	if (*p == '\0' || (p[0] == '/' && p[1] == '\0'))
		return 0;
	if (*p != '/') {
		snprintf(err, errlen, "expected :PORT or /DB after the host");
		return -1;
	}
	return sharedconf_db(p + 1, p + strlen(p), u, err, errlen);
}

int sharedconf_parse_url(const char *s, struct sharedconf_url *u, char *err, size_t errlen)
{
	struct sharedconf_url tmp;
	int rc;
	memset(&tmp, 0, sizeof(tmp));
	if (strncmp(s, "redis://", 8) == 0) {
		rc = sharedconf_parse_tcp(s + 8, &tmp, err, errlen);
	} else if (strncmp(s, "unix://", 7) == 0) {
		rc = sharedconf_parse_unix(s + 7, &tmp, err, errlen);
	} else {
		snprintf(err, errlen, "expected redis://HOST[:PORT][/DB] or unix:///PATH[?db=N]");
		return -1;
	}
	if (rc == 0)
		*u = tmp;
	return rc;
}

void sharedconf_format_url(const struct sharedconf_url *u, char *out, size_t outlen)
{
	if (u->unix_socket)
		snprintf(out, outlen, "unix://%s?db=%u", u->path, u->db);
	else if (strchr(u->host, ':') != NULL)
		snprintf(out, outlen, "redis://[%s]:%u/%u", u->host, u->port, u->db);
	else
		snprintf(out, outlen, "redis://%s:%u/%u", u->host, u->port, u->db);
}

bool sharedconf_url_equal(const struct sharedconf_url *a, const struct sharedconf_url *b)
{
	return a->unix_socket == b->unix_socket && a->db == b->db &&
	       (a->unix_socket ? strcmp(a->path, b->path) == 0
	                       : strcmp(a->host, b->host) == 0 && a->port == b->port);
}

void sharedconf_addr(const struct in6_addr *key, char *out, size_t outlen)
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	if (outlen == 0)
		return;
	if (memcmp(key->s6_addr, mapped, sizeof(mapped)) == 0) {
		if (inet_ntop(AF_INET, &key->s6_addr[12], out, (socklen_t)outlen) == NULL)
			out[0] = '\0';
	} else if (inet_ntop(AF_INET6, key, out, (socklen_t)outlen) == NULL) {
		out[0] = '\0';
	}
}

int sharedconf_key(char *out, size_t outlen, const char *kind, const char *name)
{
	int n = snprintf(out, outlen, SHAREDCONF_PREFIX "%s:%s", kind, name);
	return n < 0 || (size_t)n >= outlen ? -1 : 0;
}
