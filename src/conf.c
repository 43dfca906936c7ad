/*
 * Configuration parsing, HAProxy style: one table of keys, each with its
 * parser, so that adding a key is one line and every key is parsed, reset
 * and reported the same way. Nothing here prints or exits: problems are
 * returned as text for main.c to show (on -t, at start and on SIGHUP).
 */
#include "conf.h"
#include "conf_int.h"
#include "ident.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* One line holds one key and one value; a path may be PATH_MAX (4096)
 * long, so twice that leaves room for the key, quotes and a comment. */
#define CONF_LINE_MAX 8192
/* A real configuration is a few KiB; a megabyte means -c was given the
 * wrong file (a log, a binary), which we say at once instead of listing a
 * thousand bad lines. */
#define CONF_FILE_MAX (1024 * 1024)
/* Room for one message, the longest being "expected ..." with a quoted
 * value (at most 4 * CONF_QUOTE_MAX after escaping) and a help text. */
#define CONF_MSG_MAX 1024

static const struct conf_word conf_words_upstream_tls[] = {
    {"starttls", CONF_UPSTREAM_STARTTLS},
    {"direct", CONF_UPSTREAM_DIRECT},
    {"none", CONF_UPSTREAM_NONE},
    {"auto", CONF_UPSTREAM_AUTO},
};
static const struct conf_word conf_words_upstream_source[] = {
    {"proxy", CONF_SOURCE_PROXY},
    {"client", CONF_SOURCE_CLIENT},
};
static const struct conf_word conf_words_require_tls[] = {
    {"auto", CONF_REQUIRE_AUTO},
    {"yes", CONF_REQUIRE_YES},
    {"no", CONF_REQUIRE_NO},
};
static const struct conf_word conf_words_plain[] = {
    {"allow", CONF_PLAIN_ALLOW},
    {"log", CONF_PLAIN_LOG},
    {"reject", CONF_PLAIN_REJECT},
};
static const struct conf_word conf_words_proxy_protocol[] = {
    {"off", CONF_PROXY_OFF},
    {"v1", CONF_PROXY_V1},
    {"v2", CONF_PROXY_V2},
};
static const struct conf_word conf_words_log_full[] = {
    {"continue", CONF_LOG_FULL_CONTINUE},
    {"refuse", CONF_LOG_FULL_REFUSE},
};
static const struct conf_word conf_words_shared_fail[] = {
    {"open", CONF_SHARED_OPEN},
    {"closed", CONF_SHARED_CLOSED},
};
static const struct conf_word conf_words_tls_version[] = {
    {"TLSv1.2", CONF_TLS_1_2},
    {"TLSv1.3", CONF_TLS_1_3},
    {"1.2", CONF_TLS_1_2},
    {"1.3", CONF_TLS_1_3},
};

#define F(f) offsetof(struct conf, f)
#define WORDS(w) (w), sizeof(w) / sizeof((w)[0])
#define BYTES_HELP "bytes, 1024 to 16M (suffix k or M)"
#define MECH_HELP "SASL mechanism names separated by commas or spaces"
#define PATTERN_HELP "identity patterns (* ? [..]) separated by commas or spaces"

/* One entry per key, as HAProxy's keyword tables: name, repeatable,
 * parser, help ("expected ..."), then field, counter field and range for
 * the shared parsers. The layout is a table, so clang-format keeps off. */
/* clang-format off */
static const struct conf_key conf_keys[] = {
	{"listen",		true,	conf_parse_listen,	"ADDR:PORT [proxy]",
		F(listen), F(nlisten), 0, 0, NULL, 0},
	{"listen_tls",		true,	conf_parse_listen,	"ADDR:PORT [proxy]",
		F(listen_tls), F(nlisten_tls), 0, 0, NULL, 0},
	{"upstream",		false,	conf_parse_upstream,	"HOST:PORT or original-dst",
		0, 0, 0, 0, NULL, 0},
	{"upstream_tls",	false,	conf_parse_upstream_tls, "starttls, direct, none or auto",
		F(upstream_tls), 0, 0, 0, WORDS(conf_words_upstream_tls)},
	{"upstream_source",	false,	conf_parse_word,	"proxy or client",
		F(upstream_source), 0, 0, 0, WORDS(conf_words_upstream_source)},
	{"tproxy",		false,	conf_parse_bool,	"yes or no (or true or false)",
		F(tproxy), 0, 0, 0, NULL, 0},
	{"upstream_verify",	false,	conf_parse_bool,	"yes or no (or true or false)",
		F(upstream_verify), 0, 0, 0, NULL, 0},
	{"upstream_ca",		false,	conf_parse_path,	"a file name",
		F(upstream_ca), 0, 0, 0, NULL, 0},
	{"cert",		false,	conf_parse_path,	"a file name",
		F(cert), 0, 0, 0, NULL, 0},
	{"key",			false,	conf_parse_path,	"a file name",
		F(key), 0, 0, 0, NULL, 0},
	{"event_log",		false,	conf_parse_path,	"a file name or -",
		F(event_log), 0, 0, 0, NULL, 0},
	{"keylog",		false,	conf_parse_path,	"a file name",
		F(keylog), 0, 0, 0, NULL, 0},
	{"require_tls",		false,	conf_parse_word,	"auto, yes or no",
		F(require_tls), 0, 0, 0, WORDS(conf_words_require_tls)},
	{"upstream_proxy_protocol", false, conf_parse_word,	"off, v1 or v2",
		F(upstream_proxy_protocol), 0, 0, 0, WORDS(conf_words_proxy_protocol)},
	{"event_log_queue",	false,	conf_parse_bytes,	"bytes, 16k to 1024M (suffix k or M)",
		F(event_log_queue), 0, 16 * 1024, 1024 * MIB, NULL, 0},
	{"event_log_full",	false,	conf_parse_word,	"continue or refuse",
		F(event_log_full), 0, 0, 0, WORDS(conf_words_log_full)},
	{"plain_without_tls",	false,	conf_parse_word,	"allow, log or reject",
		F(plain_without_tls), 0, 0, 0, WORDS(conf_words_plain)},
	{"mechanisms_deny",	false,	conf_parse_mechanisms,	MECH_HELP,
		F(mechanisms_deny), F(nmechanisms_deny), 0, 0, NULL, 0},
	{"mechanisms_allow",	false,	conf_parse_mechanisms,	MECH_HELP,
		F(mechanisms_allow), F(nmechanisms_allow), 0, 0, NULL, 0},
	{"connect_timeout",	false,	conf_parse_number,	"seconds, 1 to 3600",
		F(connect_timeout), 0, 1, 3600, NULL, 0},
	{"login_timeout",	false,	conf_parse_number,	"seconds, 1 to 86400",
		F(login_timeout), 0, 1, 86400, NULL, 0},
	{"max_stanza_prelogin",	false,	conf_parse_bytes,	BYTES_HELP,
		F(max_stanza_prelogin), 0, 1024, 16 * MIB, NULL, 0},
	{"max_stanza",		false,	conf_parse_bytes,	BYTES_HELP,
		F(max_stanza), 0, 1024, 16 * MIB, NULL, 0},
	{"max_sessions",	false,	conf_parse_number,	"a number, 1 to 1000000",
		F(max_sessions), 0, 1, 1000000, NULL, 0},
	{"max_per_addr",	false,	conf_parse_number,	"a number, 1 to 1000000",
		F(max_per_addr), 0, 1, 1000000, NULL, 0},
	{"workers",		false,	conf_parse_number,	"a number, 1 to 64",
		F(workers), 0, 1, WORKERS_MAX, NULL, 0},
	{"tls_min_version",	false,	conf_parse_word,	"TLSv1.2 or TLSv1.3",
		F(tls_min_version), 0, 0, 0, WORDS(conf_words_tls_version)},
	{"tls_ciphers",		false,	conf_parse_path,	"an OpenSSL cipher list",
		F(tls_ciphers), 0, 0, 0, NULL, 0},
	{"users_deny",		false,	conf_parse_patterns,	PATTERN_HELP,
		F(users_deny), F(nusers_deny), 0, 0, NULL, 0},
	{"users_allow",		false,	conf_parse_patterns,	PATTERN_HELP,
		F(users_allow), F(nusers_allow), 0, 0, NULL, 0},
	{"auth_failures",	false,	conf_parse_rate,	"N/SECONDS (1 to 10000 failures per 1 to 86400 s), or off",
		0, 0, 0, 0, NULL, 0},
	{"strip_starttls",	false,	conf_parse_bool,	"yes or no (or true or false)",
		F(strip_starttls), 0, 0, 0, NULL, 0},
	{"offer_mechanisms",	false,	conf_parse_mechanisms,	MECH_HELP,
		F(offer_mechanisms), F(noffer_mechanisms), 0, 0, NULL, 0},
	{"user",		false,	conf_parse_path,	"a user name",
		F(user), 0, 0, 0, NULL, 0},
	{"forge_ca",		false,	conf_parse_path,	"a file name",
		F(forge_ca), 0, 0, 0, NULL, 0},
	{"forge_ca_key",	false,	conf_parse_path,	"a file name",
		F(forge_ca_key), 0, 0, 0, NULL, 0},
	{"forge_mirror",	false,	conf_parse_bool,	"yes or no (or true or false)",
		F(forge_mirror), 0, 0, 0, NULL, 0},
	{"forge_cache",		false,	conf_parse_number,	"a number, 1 to 16384",
		F(forge_cache), 0, 1, MAX_FORGE_CACHE, NULL, 0},
	{"default_domain",	false,	conf_parse_domain,	"a domain name (letters, digits, '-', '.')",
		F(default_domain), 0, 0, 0, NULL, 0},
	{"transcript_dir",	false,	conf_parse_path,	"a directory name",
		F(transcript_dir), 0, 0, 0, NULL, 0},
	{"transcript_max",	false,	conf_parse_bytes,	"bytes, 1k to 1024M (suffix k or M)",
		F(transcript_max), 0, 1024, 1024 * MIB, NULL, 0},
	{"shared_state",	false,	conf_parse_shared_state, "redis://HOST[:PORT][/DB] or unix:///PATH[?db=N]",
		0, 0, 0, 0, NULL, 0},
	{"shared_state_fail",	false,	conf_parse_word,	"open or closed",
		F(shared_state_fail), 0, 0, 0, WORDS(conf_words_shared_fail)},
	{"proxy_from",		false,	conf_parse_cidrs,	"networks (ADDR or ADDR/BITS, IPv4 or IPv6) separated by commas or spaces",
		0, 0, 0, 0, NULL, 0},
	{"metrics_listen",	false,	conf_parse_addr,	"ADDR:PORT, or empty for none",
		F(metrics_listen), F(metrics_set), 0, 0, NULL, 0},
};
/* clang-format on */

#undef F
#undef WORDS
#undef MECH_HELP
#undef PATTERN_HELP
#undef BYTES_HELP

#define CONF_NKEYS (sizeof(conf_keys) / sizeof(conf_keys[0]))

/* The field of c at off (from the table), typed by the caller's pointer:
 * the offsets come from offsetof on fields of exactly that type. */
void *conf_field(struct conf *c, size_t off)
{
	return (char *)c + off;
}

/* Formats into msg (msglen may be 0); always NUL-terminated when msglen > 0. */
void conf_msg(char *msg, size_t msglen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void conf_msg(char *msg, size_t msglen, const char *fmt, ...)
{
	va_list ap;

	if (msg == NULL || msglen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, msglen, fmt, ap);
	va_end(ap);
}

/*
 * Appends one formatted line to err. When it does not fit, the line is cut
 * and err ends with "...\n" so a reader sees that problems are missing;
 * later lines are dropped. err stays NUL-terminated.
 */
static void conf_append(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void conf_append(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	size_t used;
	int n;

	if (err == NULL || errlen == 0)
		return;
	used = strnlen(err, errlen);
	if (used >= errlen - 1) {
		err[errlen - 1] = '\0';
		return;
	}
	va_start(ap, fmt);
	n = vsnprintf(err + used, errlen - used, fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < errlen - used)
		return;
	if (errlen >= 5)
		memcpy(err + errlen - 5, "...\n", 5);
	else
		err[errlen - 1] = '\0';
}

/*
 * Writes v as a double-quoted string a terminal shows safely: quotes,
 * backslashes and non-printable bytes escaped, cut after CONF_QUOTE_MAX
 * bytes with "...". out must hold 4 * CONF_QUOTE_MAX + 8 bytes.
 */
const char *conf_quote(char *out, size_t outlen, const char *v)
{
	size_t o = 0, i;

	out[o++] = '"';
	for (i = 0; v[i] != '\0' && i < CONF_QUOTE_MAX && o + 6 < outlen; i++) {
		unsigned char ch = (unsigned char)v[i];

		if (ch == '"' || ch == '\\') {
			out[o++] = '\\';
			out[o++] = (char)ch;
		} else if (ch < 0x20 || ch >= 0x7f) {
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", ch);
		} else {
			out[o++] = (char)ch;
		}
	}
	out[o++] = '"';
	if (v[i] != '\0' && o + 4 <= outlen) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return out;
}

/* The usual message for a value a key cannot take. Returns -1. */
int conf_expected(const struct conf_key *k, const char *value, char *msg, size_t msglen)
{
	char q[CONF_QUOTED];

	conf_msg(msg, msglen, "expected %s, got %s", k->help, conf_quote(q, sizeof(q), value));
	return -1;
}

static bool conf_is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' || ch == '\f';
}

bool conf_is_alnum(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

static const struct conf_key *conf_find_key(const char *name)
{
	size_t i;

	for (i = 0; i < CONF_NKEYS; i++)
		if (strcmp(conf_keys[i].name, name) == 0)
			return &conf_keys[i];
	return NULL;
}

/*
 * Edit distance between a and b, for "did you mean": only short words are
 * compared (keys are under 20 characters), longer input gives a large
 * distance.
 */
static size_t conf_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), i, j;
	size_t row[32];

	if (la >= 32 || lb >= 32)
		return (size_t)-1;
	for (j = 0; j <= lb; j++)
		row[j] = j;
	for (i = 1; i <= la; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);

			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* The known key closest to name if it is a likely typo, else NULL. */
static const char *conf_suggest(const char *name)
{
	const char *best = NULL;
	size_t bestd = 3, i;

	for (i = 0; i < CONF_NKEYS; i++) {
		size_t d = conf_distance(name, conf_keys[i].name);

		if (d < bestd) {
			bestd = d;
			best = conf_keys[i].name;
		}
	}
	return best;
}

/* The online cores, within 1..WORKERS_MAX. */
static unsigned conf_default_workers(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > WORKERS_MAX ? WORKERS_MAX : (unsigned)n;
}

struct conf *conf_new(void)
{
	struct conf *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->upstream_tls = CONF_UPSTREAM_STARTTLS;
	c->upstream_verify = true;
	c->require_tls = CONF_REQUIRE_AUTO;
	c->plain_without_tls = CONF_PLAIN_LOG;
	c->connect_timeout = DEFAULT_CONNECT_TIMEOUT;
	c->login_timeout = DEFAULT_LOGIN_TIMEOUT;
	c->max_stanza_prelogin = DEFAULT_MAX_STANZA_PRELOGIN;
	c->max_stanza = DEFAULT_MAX_STANZA;
	c->event_log_queue = DEFAULT_EVENT_LOG_QUEUE;
	c->max_sessions = DEFAULT_MAX_SESSIONS;
	c->max_per_addr = DEFAULT_MAX_PER_ADDR;
	c->forge_cache = DEFAULT_FORGE_CACHE;
	c->workers = conf_default_workers();
	c->transcript_max = DEFAULT_TRANSCRIPT_MAX;
	return c;
}

void conf_free(struct conf *c)
{
	if (c == NULL)
		return;
	free(c->upstream_ca);
	free(c->cert);
	free(c->key);
	free(c->event_log);
	free(c->keylog);
	conf_free_list(c->mechanisms_deny, c->nmechanisms_deny);
	conf_free_list(c->mechanisms_allow, c->nmechanisms_allow);
	conf_free_list(c->offer_mechanisms, c->noffer_mechanisms);
	conf_free_list(c->users_deny, c->nusers_deny);
	conf_free_list(c->users_allow, c->nusers_allow);
	free(c->tls_ciphers);
	free(c->user);
	free(c->forge_ca);
	free(c->forge_ca_key);
	free(c->default_domain);
	free(c->transcript_dir);
	free(c);
}

int conf_set(struct conf *c, const char *key, const char *value, const char *where, char *err,
             size_t errlen)
{
	const struct conf_key *k;
	char q[CONF_QUOTED];
	char msg[CONF_MSG_MAX];
	const char *p;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (where == NULL)
		where = "-o";
	if (c == NULL || key == NULL || value == NULL) {
		conf_msg(err, errlen, "%s: no key or value", where);
		return -1;
	}
	k = conf_find_key(key);
	if (k == NULL) {
		const char *hint = conf_suggest(key);

		conf_msg(err, errlen, "%s: unknown key %s%s%s%s", where,
		         conf_quote(q, sizeof(q), key), hint != NULL ? " (did you mean " : "",
		         hint != NULL ? hint : "", hint != NULL ? "?)" : "");
		return -1;
	}
	/* Values end up in file names and log lines: no terminal controls. */
	for (p = value; *p != '\0'; p++) {
		if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f) {
			conf_msg(err, errlen, "%s: %s: control character in the value", where,
			         k->name);
			return -1;
		}
	}
	msg[0] = '\0';
	if (k->parse(c, k, value, msg, sizeof(msg)) < 0) {
		conf_msg(err, errlen, "%s: %s: %s", where, k->name, msg);
		return -1;
	}
	return 0;
}

/* Cuts the whitespace around s, in place; returns the new start. */
static char *conf_trim(char *s)
{
	size_t n;

	while (conf_is_space(*s))
		s++;
	n = strlen(s);
	while (n > 0 && conf_is_space(s[n - 1]))
		s[--n] = '\0';
	return s;
}

int conf_set_option(struct conf *c, const char *kv, char *err, size_t errlen)
{
	char q[CONF_QUOTED];
	char *copy, *key, *eq;
	int rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	copy = strdup(kv != NULL ? kv : "");
	if (copy == NULL) {
		conf_msg(err, errlen, "-o: out of memory");
		return -1;
	}
	eq = strchr(copy, '=');
	if (eq != NULL)
		*eq = '\0';
	key = conf_trim(copy);
	if (eq == NULL || *key == '\0') {
		conf_msg(err, errlen, "-o: expected KEY=VALUE, got %s",
		         conf_quote(q, sizeof(q), kv != NULL ? kv : ""));
		free(copy);
		return -1;
	}
	/* The shell has done the quoting: the value is used as given, only
	 * the whitespace around it goes. */
	rc = conf_set(c, key, conf_trim(eq + 1), "-o", err, errlen);
	free(copy);
	return rc;
}

/* True if s may be a key: letters, digits, '_', '-' and '.'. */
static bool conf_is_key(const char *s)
{
	for (; *s != '\0'; s++)
		if (!conf_is_alnum(*s) && *s != '_' && *s != '-' && *s != '.')
			return false;
	return true;
}

/*
 * Splits one line (NUL-terminated, writable) into key and value, in
 * place. Returns 0 for a blank or comment line, 1 with *key and *value
 * set, or -1 with a message.
 */
static int conf_split_line(char *line, char **key, char **value, char *msg, size_t msglen)
{
	char q[CONF_QUOTED];
	char *p = line, *k, *v;
	size_t klen;

	while (conf_is_space(*p))
		p++;
	if (*p == '\0' || *p == '#')
		return 0;
	if (*p == '=') {
		conf_msg(msg, msglen, "expected KEY = VALUE, found no key before '='");
		return -1;
	}
	k = p;
	while (*p != '\0' && *p != '=' && !conf_is_space(*p))
		p++;
	klen = (size_t)(p - k);
	while (conf_is_space(*p))
		p++;
	if (*p != '=') {
		k[klen] = '\0';
		conf_msg(msg, msglen, "expected KEY = VALUE, found no '=' after %s",
		         conf_quote(q, sizeof(q), k));
		return -1;
	}
	k[klen] = '\0';
	/* Keys are words; anything else cannot be one, and must not reach the
	 * messages below unquoted. */
	if (!conf_is_key(k)) {
		conf_msg(msg, msglen, "unknown key %s", conf_quote(q, sizeof(q), k));
		return -1;
	}
	p++;
	while (conf_is_space(*p))
		p++;

	if (*p == '"') {
		char *o;

		v = o = ++p;
		for (;;) {
			if (*p == '\0') {
				conf_msg(msg, msglen, "%s: unterminated quoted value", k);
				return -1;
			}
			if (*p == '"')
				break;
			if (*p == '\\' && p[1] != '\0')
				p++;
			*o++ = *p++;
		}
		*o = '\0';
		p++;
		while (conf_is_space(*p))
			p++;
		if (*p != '\0' && *p != '#') {
			conf_msg(msg, msglen, "%s: unexpected %s after the closing quote", k,
			         conf_quote(q, sizeof(q), p));
			return -1;
		}
	} else {
		char *end;

		v = p;
		/* '#' starts a comment only after whitespace, so "a#b" stays
		 * one value (a file name may hold a '#'). */
		for (; *p != '\0'; p++)
			if (*p == '#' && p > line && conf_is_space(p[-1]))
				break;
		end = p;
		while (end > v && conf_is_space(end[-1]))
			end--;
		*end = '\0';
	}
	*key = k;
	*value = v;
	return 1;
}

int conf_load_buffer(struct conf *c, const char *name, const char *data, size_t len, char *err,
                     size_t errlen)
{
	unsigned first[CONF_NKEYS] = {0};
	char *line = NULL, *where = NULL, *msg = NULL;
	size_t pos = 0, wlen, mlen;
	unsigned lineno = 0;
	int problems = 0;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (name == NULL)
		name = "(config)";
	if (data == NULL)
		len = 0;
	if (len > CONF_FILE_MAX) {
		conf_append(err, errlen, "%s: larger than %d bytes, not a configuration file\n",
		            name, CONF_FILE_MAX);
		return 1;
	}
	wlen = strlen(name) + 16;
	mlen = wlen + CONF_MSG_MAX + 64;
	line = malloc(CONF_LINE_MAX);
	where = malloc(wlen);
	msg = malloc(mlen);
	if (line == NULL || where == NULL || msg == NULL) {
		conf_append(err, errlen, "%s: out of memory\n", name);
		problems = 1;
		goto out;
	}

	while (pos < len) {
		const char *start = data + pos;
		const char *nl = memchr(start, '\n', len - pos);
		size_t n = nl != NULL ? (size_t)(nl - start) : len - pos;
		const struct conf_key *k;
		char *key, *value;
		int r;

		pos += n + (nl != NULL);
		lineno++;
		if (n >= CONF_LINE_MAX) {
			conf_append(err, errlen, "%s:%u: line longer than %d bytes\n", name, lineno,
			            CONF_LINE_MAX - 1);
			problems++;
			continue;
		}
		if (memchr(start, '\0', n) != NULL) {
			conf_append(err, errlen, "%s:%u: NUL byte in the line\n", name, lineno);
			problems++;
			continue;
		}
		memcpy(line, start, n);
		line[n] = '\0';
		r = conf_split_line(line, &key, &value, msg, mlen);
		if (r == 0)
			continue;
		if (r < 0) {
			conf_append(err, errlen, "%s:%u: %s\n", name, lineno, msg);
			problems++;
			continue;
		}
		k = conf_find_key(key);
		if (k != NULL && !k->repeatable) {
			size_t i = (size_t)(k - conf_keys);

			if (first[i] != 0) {
				conf_append(err, errlen,
				            "%s:%u: %s: given twice, first at line %u\n", name,
				            lineno, k->name, first[i]);
				problems++;
				continue;
			}
			first[i] = lineno;
		}
		snprintf(where, wlen, "%s:%u", name, lineno);
		if (conf_set(c, key, value, where, msg, mlen) < 0) {
			conf_append(err, errlen, "%s\n", msg);
			problems++;
		}
	}
out:
	free(line);
	free(where);
	free(msg);
	return problems;
}

int conf_load_file(struct conf *c, const char *path, char *err, size_t errlen)
{
	char *data = NULL;
	size_t len = 0, cap = 0;
	FILE *f;
	int rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	f = fopen(path, "r");
	if (f == NULL) {
		conf_append(err, errlen, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	/* Read to EOF, growing, but never past CONF_FILE_MAX + 1 so that an
	 * endless file (a FIFO, /dev/zero) ends and is reported as too big. */
	for (;;) {
		size_t got;

		if (len == cap) {
			size_t ncap = cap == 0 ? 4096 : cap * 2;
			char *nd;

			if (ncap > CONF_FILE_MAX + 1)
				ncap = CONF_FILE_MAX + 1;
			if (ncap == cap)
				break;
			nd = realloc(data, ncap);
			if (nd == NULL) {
				conf_append(err, errlen, "%s: out of memory\n", path);
				free(data);
				fclose(f);
				return -1;
			}
			data = nd;
			cap = ncap;
		}
		got = fread(data + len, 1, cap - len, f);
		len += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		conf_append(err, errlen, "%s: %s\n", path, strerror(errno));
		free(data);
		fclose(f);
		return -1;
	}
	fclose(f);
	rc = conf_load_buffer(c, path, data, len, err, errlen);
	free(data);
	return rc;
}

/* Appends a problem unless path names a readable regular file. */
static int conf_check_file(const char *key, const char *path, char *err, size_t errlen)
{
	char q[CONF_QUOTED];
	struct stat st;

	if (access(path, R_OK) < 0 || stat(path, &st) < 0) {
		conf_append(err, errlen, "%s: cannot read %s: %s\n", key,
		            conf_quote(q, sizeof(q), path), strerror(errno));
		return 1;
	}
	if (S_ISDIR(st.st_mode)) {
		conf_append(err, errlen, "%s: %s is a directory\n", key,
		            conf_quote(q, sizeof(q), path));
		return 1;
	}
	return 0;
}

/* A proxy listener believes headers from proxy_from only: with none, it
 * would refuse everyone, which is a mistake better said at -t than found
 * in the log. metrics_listen cannot share a client port. */
static int conf_check_proxy(const struct conf *c, char *err, size_t errlen)
{
	int problems = 0;
	for (size_t i = 0; i < c->nlisten + c->nlisten_tls; i++) {
		const struct conf_addr *a =
		    i < c->nlisten ? &c->listen[i] : &c->listen_tls[i - c->nlisten];
		if (a->proxy && c->nproxy_from == 0 && problems++ == 0)
			conf_append(err, errlen,
			            "proxy_from: not set: a listener marked proxy needs the "
			            "balancers it may trust\n");
		if (c->metrics_set && strcmp(a->host, c->metrics_listen.host) == 0 &&
		    strcmp(a->port, c->metrics_listen.port) == 0) {
			conf_append(err, errlen,
			            "metrics_listen: the address of a client listener\n");
			problems++;
		}
	}
	return problems;
}

int conf_check(const struct conf *c, char *err, size_t errlen)
{
	int problems = 0;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (c->nlisten + c->nlisten_tls == 0) {
		conf_append(err, errlen, "listen: no listener: set listen or listen_tls\n");
		problems++;
	}
	if (!c->upstream_set) {
		conf_append(err, errlen, "upstream: not set: give HOST:PORT or original-dst\n");
		problems++;
	}
	/* Both kinds of listener need them: listen offers STARTTLS, listen_tls
	 * is TLS from the first byte. */
	if (c->nlisten + c->nlisten_tls > 0 && c->forge_ca == NULL) {
		if (c->cert == NULL) {
			conf_append(err, errlen,
			            "cert: not set: clients are offered TLS on every listener\n");
			problems++;
		}
		if (c->key == NULL) {
			conf_append(err, errlen,
			            "key: not set: clients are offered TLS on every listener\n");
			problems++;
		}
	}
	if (c->cert != NULL)
		problems += conf_check_file("cert", c->cert, err, errlen);
	if (c->key != NULL)
		problems += conf_check_file("key", c->key, err, errlen);
	if (c->upstream_ca != NULL)
		problems += conf_check_file("upstream_ca", c->upstream_ca, err, errlen);
	if ((c->forge_ca == NULL) != (c->forge_ca_key == NULL)) {
		conf_append(err, errlen, "%s: not set: forge_ca and forge_ca_key go together\n",
		            c->forge_ca == NULL ? "forge_ca" : "forge_ca_key");
		problems++;
	}
	if (c->forge_ca != NULL)
		problems += conf_check_file("forge_ca", c->forge_ca, err, errlen);
	if (c->forge_ca_key != NULL)
		problems += conf_check_file("forge_ca_key", c->forge_ca_key, err, errlen);
	if (c->forge_mirror && c->forge_ca == NULL) {
		conf_append(err, errlen, "forge_mirror: needs forge_ca and forge_ca_key\n");
		problems++;
	}
	problems += conf_check_proxy(c, err, errlen);
	if (c->user != NULL && getpwnam(c->user) == NULL) {
		conf_append(err, errlen, "user: no such user\n");
		problems++;
	}
	return problems == 0 ? 0 : -1;
}
