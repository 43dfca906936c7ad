/*
 * The value parsers of the configuration: addresses, words, booleans,
 * paths, lists of mechanisms and identity patterns, numbers, sizes and
 * rates. Each applies one value to the conf or leaves it unchanged with a
 * message (conf_parse_fn in conf_int.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bounds.h"
#include "conf.h"
#include "conf_int.h"
#include "forge.h"
#include "ident.h"

/* "*:5222", "[::1]:5222" or "host:5222", for messages. */
static const char *conf_addr_format(char *out, size_t outlen, const struct conf_addr *a)
{
	if (a->host[0] == '\0')
		snprintf(out, outlen, "*:%s", a->port);
	else if (strchr(a->host, ':') != NULL)
		snprintf(out, outlen, "[%s]:%s", a->host, a->port);
	else
		snprintf(out, outlen, "%s:%s", a->host, a->port);
	return out;
}

/* True if s is an IPv6 literal, with an optional "%zone" (link-local). */
static bool conf_is_ipv6(const char *s)
{
	char buf[INET6_ADDRSTRLEN + 1];
	unsigned char bin[16];
	const char *pct = strchr(s, '%');
	size_t n = pct != NULL ? (size_t)(pct - s) : strlen(s);

	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (inet_pton(AF_INET6, buf, bin) != 1)
		return false;
	if (pct != NULL) {
		const char *z = pct + 1;

		if (*z == '\0')
			return false;
		for (; *z != '\0'; z++)
			if (!conf_is_alnum(*z) && *z != '_' && *z != '-' && *z != '.')
				return false;
	}
	return true;
}

/*
 * Checks a host that is not bracketed: a DNS name, or an IPv4 literal
 * when it is all digits and dots (so "999.1.1.1" is refused here rather
 * than sent to DNS). Returns 0 or -1 with a message.
 */
static int conf_check_host(const char *h, char *msg, size_t msglen)
{
	char q[CONF_QUOTED];
	bool numeric = true;
	size_t i;

	if (strlen(h) > CONF_HOST_MAX) {
		conf_msg(msg, msglen, "host name longer than %d characters", CONF_HOST_MAX);
		return -1;
	}
	for (i = 0; h[i] != '\0'; i++) {
		if (!conf_is_alnum(h[i]) && h[i] != '-' && h[i] != '.' && h[i] != '_') {
			conf_msg(msg, msglen, "%s is not a host name or address",
			         conf_quote(q, sizeof(q), h));
			return -1;
		}
		if (!(h[i] >= '0' && h[i] <= '9') && h[i] != '.')
			numeric = false;
	}
	if (numeric) {
		struct in_addr in;

		if (inet_pton(AF_INET, h, &in) != 1) {
			conf_msg(msg, msglen, "%s is not an IPv4 address",
			         conf_quote(q, sizeof(q), h));
			return -1;
		}
	}
	return 0;
}

/*
 * Parses ADDR:PORT into a: "host:port", "1.2.3.4:port", "[v6]:port", and
 * with any_ok also "*:port" and ":port" (host ""). Returns 0, or -1 with a
 * message and a unchanged.
 */
static int conf_addr_parse(const char *v, bool any_ok, struct conf_addr *a, char *msg,
                           size_t msglen)
{
	char q[CONF_QUOTED];
	char host[sizeof(a->host)];
	const char *colon, *p;
	unsigned long port = 0;
	size_t hl;

	if (v[0] == '[') {
		const char *close = strchr(v, ']');

		if (close == NULL) {
			conf_msg(msg, msglen, "expected ']' after the IPv6 address in %s",
			         conf_quote(q, sizeof(q), v));
			return -1;
		}
		if (close[1] != ':') {
			conf_msg(msg, msglen, "expected ADDR:PORT, as [::1]:5222, got %s",
			         conf_quote(q, sizeof(q), v));
			return -1;
		}
		hl = (size_t)(close - (v + 1));
		if (hl >= sizeof(host)) {
			conf_msg(msg, msglen, "%s is not an IPv6 address",
			         conf_quote(q, sizeof(q), v));
			return -1;
		}
		memcpy(host, v + 1, hl);
		host[hl] = '\0';
		if (!conf_is_ipv6(host)) {
			conf_msg(msg, msglen, "%s is not an IPv6 address",
			         conf_quote(q, sizeof(q), host));
			return -1;
		}
		colon = close + 1;
	} else {
		colon = strrchr(v, ':');
		if (colon == NULL) {
			conf_msg(msg, msglen, "expected ADDR:PORT, as 127.0.0.1:5222, got %s",
			         conf_quote(q, sizeof(q), v));
			return -1;
		}
		if (memchr(v, ':', (size_t)(colon - v)) != NULL) {
			conf_msg(msg, msglen,
			         "an IPv6 address needs brackets, as [::1]:5222, got %s",
			         conf_quote(q, sizeof(q), v));
			return -1;
		}
		hl = (size_t)(colon - v);
		if (hl >= sizeof(host)) {
			conf_msg(msg, msglen, "host name longer than %d characters", CONF_HOST_MAX);
			return -1;
		}
		memcpy(host, v, hl);
		host[hl] = '\0';
		if (strcmp(host, "*") == 0)
			host[0] = '\0';
		if (host[0] == '\0') {
			if (!any_ok) {
				conf_msg(msg, msglen, "a host is needed, got %s",
				         conf_quote(q, sizeof(q), v));
				return -1;
			}
		} else if (conf_check_host(host, msg, msglen) < 0) {
			return -1;
		}
	}

	/* Digits only: strtoul would take signs, spaces and "0x". */
	p = colon + 1;
	if (*p == '\0')
		goto bad_port;
	for (; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			goto bad_port;
		port = port * 10 + (unsigned long)(*p - '0');
		if (port > 65535)
			goto bad_port;
	}
	if (port == 0)
		goto bad_port;
	snprintf(a->host, sizeof(a->host), "%s", host);
	snprintf(a->port, sizeof(a->port), "%lu", port);
	a->proxy = false;
	return 0;
bad_port:
	conf_msg(msg, msglen, "port must be a number from 1 to 65535, got %s",
	         conf_quote(q, sizeof(q), colon + 1));
	return -1;
}

/* Parses listen and listen_tls: appends, or with "" removes them all. */
int conf_parse_listen(struct conf *c, const struct conf_key *k, const char *value, char *msg,
                      size_t msglen)
{
	struct conf_addr *list = conf_field(c, k->off);
	size_t *n = conf_field(c, k->count_off);
	struct conf_addr a;
	char f[sizeof(a.host) + sizeof(a.port) + 4];
	size_t i;

	if (value[0] == '\0') {
		*n = 0;
		return 0;
	}
	/* "ADDR:PORT proxy": the one flag a listener takes, its last word (a
	 * last word of anything but letters belongs to the address, however
	 * bad, and is reported as such) */
	const char *sp = strrchr(value, ' '), *tab = strrchr(value, '\t');
	if (tab != NULL && (sp == NULL || tab > sp))
		sp = tab;
	const char *addr = value;
	char cut[sizeof(a.host) + sizeof(a.port) + 4];
	if (sp != NULL && sp[1] != '\0' &&
	    strspn(sp + 1, "abcdefghijklmnopqrstuvwxyz") == strlen(sp + 1)) {
		char q[CONF_QUOTED];
		if (strcmp(sp + 1, "proxy") != 0) {
			conf_msg(msg, msglen, "unknown listener flag %s (expected proxy)",
			         conf_quote(q, sizeof(q), sp + 1));
			return -1;
		}
		size_t alen = (size_t)(sp - value);
		while (alen > 0 && (value[alen - 1] == ' ' || value[alen - 1] == '\t'))
			alen--;
		if (alen >= sizeof(cut))
			return conf_expected(k, value, msg, msglen);
		memcpy(cut, value, alen);
		cut[alen] = '\0';
		addr = cut;
	}
	if (conf_addr_parse(addr, true, &a, msg, msglen) < 0)
		return -1;
	a.proxy = addr == cut;
	if (*n >= MAX_LISTENERS) {
		conf_msg(msg, msglen, "too many addresses, at most %d", MAX_LISTENERS);
		return -1;
	}
	/* The same address twice can never bind; say so here, with the line. */
	for (i = 0; i < c->nlisten + c->nlisten_tls; i++) {
		const struct conf_addr *o =
		    i < c->nlisten ? &c->listen[i] : &c->listen_tls[i - c->nlisten];

		if (strcmp(o->host, a.host) == 0 && strcmp(o->port, a.port) == 0) {
			conf_msg(msg, msglen, "%s is already given for %s",
			         conf_addr_format(f, sizeof(f), &a),
			         i < c->nlisten ? "listen" : "listen_tls");
			return -1;
		}
	}
	list[(*n)++] = a;
	return 0;
}

int conf_parse_upstream(struct conf *c, const struct conf_key *k, const char *value, char *msg,
                        size_t msglen)
{
	struct conf_addr a;

	if (strcmp(value, "original-dst") == 0) {
		memset(&c->upstream, 0, sizeof(c->upstream));
		c->upstream_original_dst = true;
		c->upstream_set = true;
		return 0;
	}
	if (value[0] == '\0')
		return conf_expected(k, value, msg, msglen);
	if (conf_addr_parse(value, false, &a, msg, msglen) < 0)
		return -1;
	c->upstream = a;
	c->upstream_original_dst = false;
	c->upstream_set = true;
	return 0;
}

/* Finds value among n words. Returns the word's value or -1 with msg. */
static int conf_word(const struct conf_key *k, const struct conf_word *w, size_t n,
                     const char *value, char *msg, size_t msglen)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(w[i].word, value) == 0)
			return w[i].value;
	return conf_expected(k, value, msg, msglen);
}

/* yes/no and true/false only: "on", "1" and the like are refused so that
 * a file reads one way. */
/* A key whose value is one word of k->words, stored in an enum field
 * (enums here are int-sized, with values from 0). */
int conf_parse_word(struct conf *c, const struct conf_key *k, const char *value, char *msg,
                    size_t msglen)
{
	int v = conf_word(k, k->words, k->nwords, value, msg, msglen);

	if (v < 0)
		return -1;
	*(int *)conf_field(c, k->off) = v;
	return 0;
}

/* upstream_tls: a word, and that it was given (its default depends on
 * upstream: auto for original-dst, starttls otherwise). */
int conf_parse_upstream_tls(struct conf *c, const struct conf_key *k, const char *value, char *msg,
                            size_t msglen)
{
	if (conf_parse_word(c, k, value, msg, msglen) < 0)
		return -1;
	c->upstream_tls_set = true;
	return 0;
}

int conf_parse_bool(struct conf *c, const struct conf_key *k, const char *value, char *msg,
                    size_t msglen)
{
	static const struct conf_word w[] = {
	    {"yes", 1},
	    {"no", 0},
	    {"true", 1},
	    {"false", 0},
	};
	int v = conf_word(k, w, sizeof(w) / sizeof(w[0]), value, msg, msglen);

	if (v < 0)
		return -1;
	*(bool *)conf_field(c, k->off) = v != 0;
	return 0;
}

/* A file name as given ("" = none); opened and checked later, by
 * conf_check and by the module that uses it. */
int conf_parse_path(struct conf *c, const struct conf_key *k, const char *value, char *msg,
                    size_t msglen)
{
	char **field = conf_field(c, k->off);
	char *copy = NULL;

	if (value[0] != '\0') {
		copy = strdup(value);
		if (copy == NULL) {
			conf_msg(msg, msglen, "out of memory");
			return -1;
		}
	}
	free(*field);
	*field = copy;
	return 0;
}

static bool conf_is_sep(char ch)
{
	return ch == ',' || ch == ' ' || ch == '\t';
}

void conf_free_list(char **list, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(list[i]);
		list[i] = NULL;
	}
}

/*
 * Copies the len bytes at s upper-cased into name (MAX_MECH_NAME + 1
 * bytes) if they form a SASL mechanism name (RFC 4422 3.1: 1 to 20 of
 * A-Z, 0-9, '-' and '_'). Returns 0, or -1 with a message.
 */
static int conf_mech_name(const char *s, size_t len, char *name, char *msg, size_t msglen)
{
	char tok[CONF_QUOTE_MAX + 1], q[CONF_QUOTED];
	size_t i, tl;

	if (len <= MAX_MECH_NAME) {
		for (i = 0; i < len; i++) {
			char ch = s[i];

			if (ch >= 'a' && ch <= 'z')
				ch = (char)(ch - 'a' + 'A');
			if (!conf_is_alnum(ch) && ch != '-' && ch != '_')
				break;
			name[i] = ch;
		}
		if (i == len) {
			name[len] = '\0';
			return 0;
		}
	}
	tl = len < CONF_QUOTE_MAX ? len : CONF_QUOTE_MAX;
	memcpy(tok, s, tl);
	tok[tl] = '\0';
	conf_msg(msg, msglen, "%s%s is not a SASL mechanism name (1 to %d of A-Z, 0-9, - and _)",
	         conf_quote(q, sizeof(q), tok), len > tl ? "..." : "", MAX_MECH_NAME);
	return -1;
}

/*
 * Parses a mechanism list: names separated by runs of commas and spaces,
 * upper-cased, duplicates dropped. The list replaces the old one only when
 * every name is good, so a bad -o leaves the file's list in force.
 */
/* Turns one item of a list into its stored form (malloc'd, into *out), or
 * fails with a message. */
typedef int conf_item_fn(const char *s, size_t len, char **out, char *msg, size_t msglen);

static int conf_item_mechanism(const char *s, size_t len, char **out, char *msg, size_t msglen)
{
	char name[MAX_MECH_NAME + 1];
	if (conf_mech_name(s, len, name, msg, msglen) < 0)
		return -1;
	*out = strdup(name);
	return 0;
}

/* A pattern for users_allow/users_deny: printable, no quotes, bounded,
 * kept folded in the spelling servers compare (ident.c), so policy.c
 * matches folded identities against it without folding it per login. */
static int conf_item_pattern(const char *s, size_t len, char **out, char *msg, size_t msglen)
{
	if (len > MAX_USER_PATTERN_LEN) {
		conf_msg(msg, msglen, "a pattern is longer than %d characters",
		         MAX_USER_PATTERN_LEN);
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch < 0x21 || ch == 0x7f || ch == '"' || ch == '\'') {
			conf_msg(msg, msglen,
			         "patterns may not contain spaces, quotes or controls");
			return -1;
		}
	}
	char raw[MAX_USER_PATTERN_LEN + 1], folded[IDENT_PATTERN_MAX];
	memcpy(raw, s, len);
	raw[len] = '\0';
	/* one that cannot be folded could never match */
	if (ident_fold_pattern(raw, folded, sizeof(folded)) < 0) {
		conf_msg(msg, msglen,
		         "pattern %s is not a user or user@domain servers would accept", raw);
		return -1;
	}
	*out = strdup(folded);
	return 0;
}

/* The next word of a list separated by commas and/or spaces: its start
 * and length, *p moved past it; false at the end. */
static bool conf_next_word(const char **p, const char **start, size_t *len)
{
	while (conf_is_sep(**p))
		(*p)++;
	if (**p == '\0')
		return false;
	*start = *p;
	while (**p != '\0' && !conf_is_sep(**p))
		(*p)++;
	*len = (size_t)(*p - *start);
	return true;
}

/* A list separated by commas and/or spaces into the char *[max] field at
 * k->off with its count at k->count_off; duplicates are dropped. The old
 * list is replaced only when the whole new one is good. */
static int conf_parse_list(struct conf *c, const struct conf_key *k, const char *value,
                           conf_item_fn *item, size_t max, const char *what, char *msg,
                           size_t msglen)
{
	char **field = conf_field(c, k->off);
	size_t *count = conf_field(c, k->count_off);
	char *list[MAX_MECHANISMS > MAX_USER_PATTERNS ? MAX_MECHANISMS : MAX_USER_PATTERNS];
	size_t n = 0, i;
	const char *p = value;

	const char *start;
	size_t len;
	while (conf_next_word(&p, &start, &len)) {
		char *one = NULL;
		bool dup = false;

		if (item(start, len, &one, msg, msglen) < 0)
			goto fail;
		if (one == NULL) {
			conf_msg(msg, msglen, "out of memory");
			goto fail;
		}
		for (i = 0; i < n; i++)
			dup |= strcmp(list[i], one) == 0;
		if (dup) {
			free(one);
			continue;
		}
		if (n >= max) {
			free(one);
			conf_msg(msg, msglen, "too many %s, at most %zu", what, max);
			goto fail;
		}
		list[n++] = one;
	}
	conf_free_list(field, *count);
	for (i = 0; i < n; i++)
		field[i] = list[i];
	*count = n;
	return 0;
fail:
	conf_free_list(list, n);
	return -1;
}

int conf_parse_mechanisms(struct conf *c, const struct conf_key *k, const char *value, char *msg,
                          size_t msglen)
{
	return conf_parse_list(c, k, value, conf_item_mechanism, MAX_MECHANISMS, "mechanisms", msg,
	                       msglen);
}

/*
 * Reads decimal digits from *p into *v, stopping at the first non-digit.
 * Returns false when there is no digit or the number exceeds max, which
 * also keeps the arithmetic far from overflow.
 */
static bool conf_digits(const char **p, unsigned long long max, unsigned long long *v)
{
	const char *s = *p;

	*v = 0;
	if (*s < '0' || *s > '9')
		return false;
	for (; *s >= '0' && *s <= '9'; s++) {
		*v = *v * 10 + (unsigned long long)(*s - '0');
		if (*v > max)
			return false;
	}
	*p = s;
	return true;
}

int conf_parse_number(struct conf *c, const struct conf_key *k, const char *value, char *msg,
                      size_t msglen)
{
	const char *p = value;
	unsigned long long v;

	if (!conf_digits(&p, k->max, &v) || *p != '\0' || v < k->min)
		return conf_expected(k, value, msg, msglen);
	*(unsigned *)conf_field(c, k->off) = (unsigned)v;
	return 0;
}

/* Bytes with an optional k/K (KiB) or M (MiB) suffix, as in "64k". */
int conf_parse_bytes(struct conf *c, const struct conf_key *k, const char *value, char *msg,
                     size_t msglen)
{
	const char *p = value;
	unsigned long long v;

	if (!conf_digits(&p, k->max, &v))
		return conf_expected(k, value, msg, msglen);
	if (*p == 'k' || *p == 'K') {
		v *= 1024;
		p++;
	} else if (*p == 'M') {
		v *= MIB;
		p++;
	}
	if (*p != '\0' || v < k->min || v > k->max)
		return conf_expected(k, value, msg, msglen);
	*(size_t *)conf_field(c, k->off) = (size_t)v;
	return 0;
}

int conf_parse_patterns(struct conf *c, const struct conf_key *k, const char *value, char *msg,
                        size_t msglen)
{
	return conf_parse_list(c, k, value, conf_item_pattern, MAX_USER_PATTERNS, "patterns", msg,
	                       msglen);
}

/* auth_failures: "N/SECONDS" or "off". */
int conf_parse_rate(struct conf *c, const struct conf_key *k, const char *value, char *msg,
                    size_t msglen)
{
	const char *p = value;
	unsigned long long n, secs;

	if (strcmp(value, "off") == 0 || value[0] == '\0') {
		c->auth_failures_max = 0;
		c->auth_failures_window = 0;
		return 0;
	}
	if (!conf_digits(&p, 10000, &n) || n < 1 || *p++ != '/' || !conf_digits(&p, 86400, &secs) ||
	    secs < 1 || *p != '\0')
		return conf_expected(k, value, msg, msglen);
	c->auth_failures_max = (unsigned)n;
	c->auth_failures_window = (unsigned)secs;
	return 0;
}

/* default_domain: one domain a certificate can name (forge_name), kept
 * folded; empty unsets it. */
int conf_parse_domain(struct conf *c, const struct conf_key *k, const char *value, char *msg,
                      size_t msglen)
{
	char **field = conf_field(c, k->off);
	char folded[MAX_DOMAIN + 1];
	const char *why;
	char *copy = NULL;

	if (value[0] != '\0') {
		if (forge_name(value, folded, sizeof(folded), &why) < 0) {
			char q[CONF_QUOTED];
			conf_msg(msg, msglen, "%s: %s", conf_quote(q, sizeof(q), value), why);
			return -1;
		}
		if ((copy = strdup(folded)) == NULL) {
			conf_msg(msg, msglen, "out of memory");
			return -1;
		}
	}
	free(*field);
	*field = copy;
	return 0;
}

/* shared_state: a Redis URL (sharedconf.h), or empty for none. */
int conf_parse_shared_state(struct conf *c, const struct conf_key *k, const char *value, char *msg,
                            size_t msglen)
{
	struct sharedconf_url u;
	char why[160], q[CONF_QUOTED];

	(void)k;
	if (value[0] == '\0') {
		c->shared_state_set = false;
		memset(&c->shared_state, 0, sizeof(c->shared_state));
		return 0;
	}
	if (sharedconf_parse_url(value, &u, why, sizeof(why)) < 0) {
		conf_msg(msg, msglen, "%s: %s", conf_quote(q, sizeof(q), value), why);
		return -1;
	}
	c->shared_state = u;
	c->shared_state_set = true;
	return 0;
}
/* metrics_listen: one address, or "" for none. */
int conf_parse_addr(struct conf *c, const struct conf_key *k, const char *value, char *msg,
                    size_t msglen)
{
	struct conf_addr *a = conf_field(c, k->off);
	bool *set = conf_field(c, k->count_off);
	struct conf_addr tmp;

	if (value[0] == '\0') {
		*set = false;
		return 0;
	}
	if (conf_addr_parse(value, true, &tmp, msg, msglen) < 0)
		return -1;
	*a = tmp;
	*set = true;
	return 0;
}

/* One network: ADDR or ADDR/BITS, host bits zeroed (so 10.1.2.3/8 is
 * 10.0.0.0/8, as HAProxy reads it), IPv4 kept IPv4-mapped. */
static int conf_cidr_parse(const char *s, size_t len, struct conf_cidr *out, char *msg,
                           size_t msglen)
{
	char tok[INET6_ADDRSTRLEN + 8], q[CONF_QUOTED];
	if (len >= sizeof(tok))
		goto bad;
	memcpy(tok, s, len);
	tok[len] = '\0';
	char *slash = strchr(tok, '/');
	if (slash != NULL)
		*slash = '\0';
	unsigned max;
	struct in6_addr a6 = {0};
	struct in_addr a4;
	if (inet_pton(AF_INET, tok, &a4) == 1) {
		a6.s6_addr[10] = a6.s6_addr[11] = 0xff;
		memcpy(a6.s6_addr + 12, &a4, 4);
		max = 32;
	} else if (inet_pton(AF_INET6, tok, &a6) == 1) {
		max = 128;
	} else {
		goto bad;
	}
	unsigned long long bits = max;
	const char *p = slash != NULL ? slash + 1 : tok;
	if (slash != NULL && (!conf_digits(&p, max, &bits) || *p != '\0' ||
	                      (p - (slash + 1) > 1 && slash[1] == '0')))
		goto bad;
	out->bits = (unsigned)bits + (max == 32 ? 96 : 0);
	for (unsigned i = out->bits; i < 128; i++)
		a6.s6_addr[i / 8] &= (unsigned char)~(0x80u >> (i % 8));
	out->net = a6;
	return 0;
bad:
	memcpy(tok, s, len < sizeof(tok) ? len : sizeof(tok) - 1);
	tok[len < sizeof(tok) ? len : sizeof(tok) - 1] = '\0';
	conf_msg(msg, msglen, "%s is not ADDR or ADDR/BITS (IPv4 or IPv6)",
	         conf_quote(q, sizeof(q), tok));
	return -1;
}

/* proxy_from: networks separated by commas and/or spaces, replacing the
 * list only when all are good; "" empties it. */
int conf_parse_cidrs(struct conf *c, const struct conf_key *k, const char *value, char *msg,
                     size_t msglen)
{
	(void)k;
	struct conf_cidr list[MAX_PROXY_FROM];
	size_t n = 0;
	const char *p = value, *start;
	size_t len;
	while (conf_next_word(&p, &start, &len)) {
		if (n >= MAX_PROXY_FROM) {
			conf_msg(msg, msglen, "too many networks, at most %d", MAX_PROXY_FROM);
			return -1;
		}
		if (conf_cidr_parse(start, len, &list[n], msg, msglen) < 0)
			return -1;
		n++;
	}
	memcpy(c->proxy_from, list, n * sizeof(list[0]));
	c->nproxy_from = n;
	return 0;
}

bool conf_proxy_trusted(const struct conf *c, const struct in6_addr *a)
{
	for (size_t i = 0; i < c->nproxy_from; i++) {
		const struct conf_cidr *r = &c->proxy_from[i];
		unsigned full = r->bits / 8, rest = r->bits % 8;
		if (memcmp(a->s6_addr, r->net.s6_addr, full) != 0)
			continue;
		if (rest == 0 || ((a->s6_addr[full] ^ r->net.s6_addr[full]) &
		                  (unsigned char)(0xff00u >> rest)) == 0)
			return true;
	}
	return false;
}
