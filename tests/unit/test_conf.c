/*
 * Unit tests of conf.c: the syntax, every key's good and bad values, -o,
 * conf_check and the mechanism lists. Run from the repository root (the
 * example configuration conf/xmpp-inspect.conf is parsed as it is).
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "policy.h"
#include "t.h"

#define EXAMPLE "conf/xmpp-inspect.conf"

static char err[8192];

/* Temporary files made by temp_file(), removed at the end. */
static char temps[16][64];
static size_t ntemps;

/* Writes content to a new temporary file and returns its name. */
static const char *temp_file(const char *content)
{
	const char *dir = getenv("TMPDIR");
	char *path;
	size_t len = strlen(content);
	int fd;

	if (ntemps == sizeof(temps) / sizeof(temps[0]))
		abort();
	path = temps[ntemps];
	snprintf(path, sizeof(temps[0]), "%s/test_conf.XXXXXX", dir != NULL ? dir : "/tmp");
	fd = mkstemp(path);
	if (fd < 0 || write(fd, content, len) != (ssize_t)len || close(fd) < 0) {
		perror("temp_file");
		abort();
	}
	ntemps++;
	return path;
}

static void temp_cleanup(void)
{
	size_t i;

	for (i = 0; i < ntemps; i++)
		unlink(temps[i]);
}

/* Loads text, named "t.conf", into a fresh conf. */
static struct conf *load(const char *text, int *problems)
{
	struct conf *c = conf_new();

	if (c == NULL)
		abort();
	*problems = conf_load_buffer(c, "t.conf", text, strlen(text), err, sizeof(err));
	return c;
}

/* One line of configuration must give exactly one problem, whose message
 * (after "t.conf:1: ") contains expect. */
static void bad(const char *text, const char *expect, const char *name)
{
	int n;
	struct conf *c = load(text, &n);
	char full[512];

	snprintf(full, sizeof(full), "t.conf:1: %s", expect);
	T_CHECK(n == 1 && strncmp(err, "t.conf:1: ", 10) == 0 && strstr(err, full) != NULL &&
	            strchr(err, '\n') == err + strlen(err) - 1,
	        name);
	if (n != 1 || strstr(err, full) == NULL)
		printf("# got %d: %s", n, err);
	conf_free(c);
}

/* text must load without a problem; returns the conf for more checks. */
static struct conf *good(const char *text, const char *name)
{
	int n;
	struct conf *c = load(text, &n);

	T_CHECK(n == 0 && err[0] == '\0', name);
	if (n != 0)
		printf("# got %d: %s", n, err);
	return c;
}

static size_t count_lines(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		n += *s == '\n';
	return n;
}

static void test_defaults(void)
{
	struct conf *c = conf_new();

	T_CHECK(c != NULL, "conf_new returns a conf");
	T_CHECK(c->nlisten == 0 && c->nlisten_tls == 0, "default: no listeners");
	T_CHECK(!c->upstream_set && !c->upstream_original_dst, "default: no upstream");
	T_CHECK(c->upstream_tls == CONF_UPSTREAM_STARTTLS, "default: upstream_tls starttls");
	T_CHECK(c->upstream_verify, "default: upstream_verify yes");
	T_CHECK(c->upstream_ca == NULL && c->cert == NULL && c->key == NULL, "default: no files");
	T_CHECK(c->event_log == NULL && c->keylog == NULL, "default: no logs");
	T_CHECK(c->require_tls == CONF_REQUIRE_AUTO, "default: require_tls auto");
	T_CHECK(c->plain_without_tls == CONF_PLAIN_LOG, "default: plain_without_tls log");
	T_CHECK(c->nmechanisms_allow == 0 && c->nmechanisms_deny == 0, "default: no lists");
	T_CHECK(c->connect_timeout == DEFAULT_CONNECT_TIMEOUT, "default: connect_timeout");
	T_CHECK(c->login_timeout == DEFAULT_LOGIN_TIMEOUT, "default: login_timeout");
	T_CHECK(c->max_stanza_prelogin == DEFAULT_MAX_STANZA_PRELOGIN,
	        "default: max_stanza_prelogin");
	T_CHECK(c->max_stanza == DEFAULT_MAX_STANZA, "default: max_stanza");
	T_CHECK(c->max_sessions == DEFAULT_MAX_SESSIONS, "default: max_sessions");
	T_CHECK(c->max_per_addr == DEFAULT_MAX_PER_ADDR, "default: max_per_addr");
	conf_free(c);
	conf_free(NULL);
	T_CHECK(1, "conf_free(NULL) is harmless");
}

static void test_syntax(void)
{
	struct conf *c;
	int n;

	c = good("", "empty file");
	conf_free(c);
	c = good("\n\n   \n\t\n# comment\n   # indented comment\n", "blank and comment lines");
	conf_free(c);

	c = good("  upstream=host.example:5269  \n", "no spaces around '=', outer whitespace");
	T_STREQ(c->upstream.host, "host.example", "  host read");
	T_STREQ(c->upstream.port, "5269", "  port read");
	conf_free(c);

	c = good("cert\t=\tcert.pem   # the certificate\n", "trailing comment after whitespace");
	T_STREQ(c->cert, "cert.pem", "  trailing comment removed");
	conf_free(c);

	c = good("cert = a#b.pem\n", "'#' inside a word is part of the value");
	T_STREQ(c->cert, "a#b.pem", "  value keeps '#'");
	conf_free(c);

	c = good("cert = my cert.pem\n", "unquoted value keeps inner spaces");
	T_STREQ(c->cert, "my cert.pem", "  inner spaces kept");
	conf_free(c);

	c = good("cert = \"/a b/# c.pem\"  # comment\n", "quoted value with spaces and '#'");
	T_STREQ(c->cert, "/a b/# c.pem", "  quoted value read");
	conf_free(c);

	c = good("cert = \"a\\\"b\\\\c\"\n", "quoted value with escapes");
	T_STREQ(c->cert, "a\"b\\c", "  escapes undone");
	conf_free(c);

	c = good("cert = \"\"\n", "empty quoted value");
	T_CHECK(c->cert == NULL, "  empty quoted value means none");
	conf_free(c);

	c = good("upstream = 127.0.0.1:1\r\nlisten = :2\r\n", "CRLF line ends");
	T_STREQ(c->upstream.port, "1", "  CR not in value");
	conf_free(c);

	c = good("upstream = h:1", "last line without newline");
	T_STREQ(c->upstream.host, "h", "  last line read");
	conf_free(c);

	bad("listen 127.0.0.1:5222\n", "expected KEY = VALUE, found no '=' after \"listen\"",
	    "missing '='");
	bad("listen\n", "expected KEY = VALUE, found no '=' after \"listen\"", "key alone");
	bad("= 127.0.0.1:5222\n", "expected KEY = VALUE, found no key before '='", "missing key");
	bad("foo = bar\n", "unknown key \"foo\"", "unknown key");
	bad("listn = :5222\n", "unknown key \"listn\" (did you mean listen?)",
	    "unknown key suggests the near one");
	bad("Listen = :5222\n", "unknown key \"Listen\"", "keys are case-sensitive");
	bad("ke\"y = x\n", "unknown key \"ke\\\"y\"", "key with a quote is unknown, quoted safely");
	bad("cert = \"a.pem\n", "cert: unterminated quoted value", "unterminated quote");
	bad("cert = \"a.pem\\\"\n", "cert: unterminated quoted value",
	    "escaped closing quote leaves it unterminated");
	bad("cert = \"a.pem\" b\n", "cert: unexpected \"b\" after the closing quote",
	    "text after the closing quote");
	bad("cert = a\x01.pem\n", "cert: control character in the value", "control character");
	c = load("upstream = h:1\n\nupstream = h:2\n", &n);
	T_CHECK(n == 1 && strcmp(err, "t.conf:3: upstream: given twice, first at line 1\n") == 0,
	        "duplicate key names both lines");
	T_STREQ(c->upstream.port, "1", "  the first value stays");
	conf_free(c);

	c = load("cert = a\ncert = b\nkey = a\nkey = \"b\"\n", &n);
	T_CHECK(n == 2 && strstr(err, "t.conf:2: cert: given twice, first at line 1\n") != NULL &&
	            strstr(err, "t.conf:4: key: given twice, first at line 3\n") != NULL,
	        "each duplicate reported");
	conf_free(c);

	{
		static char longline[10000];

		memset(longline, 'a', sizeof(longline) - 1);
		memcpy(longline, "cert = ", 7);
		bad(longline, "line longer than 8191 bytes", "line too long");
	}
	{
		static const char nul[] = "cert = a\0b\nkey = k\n";
		struct conf *d = conf_new();

		n = conf_load_buffer(d, "t.conf", nul, sizeof(nul) - 1, err, sizeof(err));
		T_CHECK(n == 1 && strcmp(err, "t.conf:1: NUL byte in the line\n") == 0,
		        "NUL byte in a line");
		T_STREQ(d->key, "k", "  the next line still read");
		conf_free(d);
	}
	{
		size_t big = 1024 * 1024 + 1;
		char *data = malloc(big);
		struct conf *d = conf_new();

		memset(data, '\n', big);
		n = conf_load_buffer(d, "big.conf", data, big, err, sizeof(err));
		T_CHECK(n == 1 && strstr(err, "big.conf: larger than") != NULL, "file too large");
		free(data);
		conf_free(d);
	}

	/* Every problem is collected, in line order, and good lines apply. */
	c = load("# a config with three mistakes\n"
	         "upstream_tls = foo\n"
	         "cert = c.pem\n"
	         "bogus = 1\n"
	         "connect_timeout = 0\n"
	         "key = k.pem\n",
	         &n);
	T_CHECK(n == 3, "three problems counted");
	T_CHECK(count_lines(err) == 3, "three problem lines");
	T_CHECK(strstr(err, "t.conf:2: upstream_tls: expected starttls, direct, none or auto, got "
	                    "\"foo\"\nt.conf:4: unknown key \"bogus\"\nt.conf:5: connect_timeout: "
	                    "expected seconds, 1 to 3600, got \"0\"\n") == err,
	        "problems in line order with file:line");
	T_STREQ(c->cert, "c.pem", "  good line before a bad one applied");
	T_STREQ(c->key, "k.pem", "  good line after a bad one applied");
	T_CHECK(c->connect_timeout == DEFAULT_CONNECT_TIMEOUT, "  bad value leaves the default");
	conf_free(c);
}

static void test_err_buffer(void)
{
	struct conf *c = conf_new();
	char small[24];
	const char *text = "a = 1\nb = 2\nc = 3\n";
	int n;

	memset(small, 'X', sizeof(small));
	n = conf_load_buffer(c, "t.conf", text, strlen(text), small, sizeof(small));
	T_CHECK(n == 3, "truncated err: problems still counted");
	T_CHECK(memchr(small, '\0', sizeof(small)) != NULL, "truncated err: NUL-terminated");
	T_CHECK(strlen(small) == sizeof(small) - 1 &&
	            strcmp(small + strlen(small) - 4, "...\n") == 0,
	        "truncated err: ends with ...");
	n = conf_load_buffer(c, "t.conf", text, strlen(text), NULL, 0);
	T_CHECK(n == 3, "no err buffer: problems still counted");
	small[0] = 'X';
	n = conf_load_buffer(c, "t.conf", text, strlen(text), small, 1);
	T_CHECK(n == 3 && small[0] == '\0', "one-byte err buffer holds the NUL");
	n = conf_set(c, "nope", "1", "-o", small, 3);
	T_CHECK(n == -1 && strlen(small) == 2, "conf_set truncates to errlen");
	T_CHECK(conf_set_option(c, "x", NULL, 0) == -1, "conf_set_option with no err buffer");
	T_CHECK(conf_check(c, NULL, 0) == -1, "conf_check with no err buffer");
	conf_free(c);
}

static void test_addresses(void)
{
	struct conf *c;
	size_t i;

	c = good("listen = 127.0.0.1:5222\n"
	         "listen = [::1]:5222\n"
	         "listen = host.name:5222\n"
	         "listen = *:5223\n"
	         "listen_tls = :5224\n"
	         "listen_tls = [fe80::1%eth0]:05225\n"
	         "listen_tls = [::ffff:10.0.0.1]:65535\n",
	         "good address forms");
	T_CHECK(c->nlisten == 4 && c->nlisten_tls == 3, "  listeners counted per kind");
	T_CHECK(strcmp(c->listen[0].host, "127.0.0.1") == 0 &&
	            strcmp(c->listen[0].port, "5222") == 0,
	        "  IPv4 address");
	T_STREQ(c->listen[1].host, "::1", "  IPv6 stored without brackets");
	T_STREQ(c->listen[2].host, "host.name", "  host name");
	T_STREQ(c->listen[3].host, "", "  *:PORT is any (host \"\")");
	T_STREQ(c->listen_tls[0].host, "", "  :PORT is any (host \"\")");
	T_STREQ(c->listen_tls[1].host, "fe80::1%eth0", "  IPv6 with zone");
	T_STREQ(c->listen_tls[1].port, "5225", "  port in canonical decimal");
	T_STREQ(c->listen_tls[2].port, "65535", "  port 65535");
	conf_free(c);

	bad("listen = 127.0.0.1\n",
	    "listen: expected ADDR:PORT, as 127.0.0.1:5222, got "
	    "\"127.0.0.1\"",
	    "address without port");
	bad("listen = 127.0.0.1:\n", "listen: port must be a number from 1 to 65535, got \"\"",
	    "empty port");
	bad("listen = 127.0.0.1:0\n", "listen: port must be a number from 1 to 65535, got \"0\"",
	    "port 0");
	bad("listen = 127.0.0.1:65536\n", "listen: port must be a number from 1 to 65535",
	    "port 65536");
	bad("listen = 127.0.0.1:99999999999999999999\n",
	    "listen: port must be a number from 1 to 65535", "huge port");
	bad("listen = 127.0.0.1:xmpp\n",
	    "listen: port must be a number from 1 to 65535, got "
	    "\"xmpp\"",
	    "service name as port");
	bad("listen = 127.0.0.1:+5\n", "listen: port must be", "signed port");
	bad("listen = 127.0.0.1: 5\n", "listen: port must be", "space in port");
	bad("listen = ::1:5222\n", "listen: an IPv6 address needs brackets, as [::1]:5222",
	    "IPv6 without brackets");
	bad("listen = [::1]5222\n", "listen: expected ADDR:PORT, as [::1]:5222, got \"[::1]5222\"",
	    "no ':' after ']'");
	bad("listen = [::1]\n", "listen: expected ADDR:PORT, as [::1]:5222", "IPv6 without port");
	bad("listen = [::1:5222\n", "listen: expected ']' after the IPv6 address",
	    "unclosed bracket");
	bad("listen = [zz::q]:5222\n", "listen: \"zz::q\" is not an IPv6 address",
	    "bad IPv6 literal");
	bad("listen = [127.0.0.1]:5222\n", "listen: \"127.0.0.1\" is not an IPv6 address",
	    "IPv4 in brackets");
	bad("listen = []:5222\n", "listen: \"\" is not an IPv6 address", "empty brackets");
	bad("listen = [fe80::1%]:5222\n", "listen: \"fe80::1%\" is not an IPv6 address",
	    "empty IPv6 zone");
	bad("listen = 999.1.1.1:5222\n", "listen: \"999.1.1.1\" is not an IPv4 address",
	    "bad IPv4 literal");
	bad("listen = 1.2.3:5222\n", "listen: \"1.2.3\" is not an IPv4 address",
	    "short IPv4 literal");
	bad("listen = bad!host:5222\n", "listen: \"bad!host\" is not a host name or address",
	    "bad host characters");
	bad("listen = bad host:5222\n", "listen: \"bad host\" is not a host name or address",
	    "space in host");
	{
		char line[400];

		memset(line, 'h', sizeof(line));
		memcpy(line, "listen = ", 9);
		snprintf(line + 300, sizeof(line) - 300, ":5222\n");
		bad(line, "listen: host name longer than 253 characters", "host too long");
		snprintf(line + 263, sizeof(line) - 263, ":5222\n");
		bad(line, "listen: host name longer than 253 characters", "host of 254 characters");
		snprintf(line + 262, sizeof(line) - 262, ":5222\n");
		c = good(line, "host of 253 characters");
		T_CHECK(strlen(c->listen[0].host) == 253, "  253 characters kept");
		conf_free(c);
	}
	{
		int n;

		c = load("listen = 127.0.0.1:5222\nlisten = 127.0.0.1:5222\n"
		         "listen_tls = 127.0.0.1:5222\n",
		         &n);
		T_CHECK(n == 2 &&
		            strstr(err, "t.conf:2: listen: 127.0.0.1:5222 is already given for "
		                        "listen\n") != NULL &&
		            strstr(err, "t.conf:3: listen_tls: 127.0.0.1:5222 is already given "
		                        "for listen\n") != NULL,
		        "the same address twice, in one list and across lists");
		conf_free(c);
	}

	/* MAX_LISTENERS per kind, then an error on the line that is too many. */
	{
		char text[4096] = "";
		int n;

		for (i = 0; i <= MAX_LISTENERS; i++) {
			size_t l = strlen(text);

			snprintf(text + l, sizeof(text) - l, "listen = 127.0.0.1:%zu\n", 1000 + i);
		}
		c = load(text, &n);
		T_CHECK(n == 1 && c->nlisten == MAX_LISTENERS, "too many listeners: one problem");
		snprintf(text, sizeof(text), "t.conf:%d: listen: too many addresses, at most %d\n",
		         MAX_LISTENERS + 1, MAX_LISTENERS);
		T_STREQ(err, text, "too many listeners: message and line");
		conf_set(c, "listen_tls", ":1", "-o", err, sizeof(err));
		T_CHECK(c->nlisten_tls == 1, "  the other kind has its own room");
		T_CHECK(conf_set(c, "listen", "", "-o", err, sizeof(err)) == 0 && c->nlisten == 0,
		        "  an empty listen removes the listeners");
		conf_free(c);
	}

	/* upstream */
	c = good("upstream = original-dst\n", "upstream original-dst");
	T_CHECK(c->upstream_set && c->upstream_original_dst, "  transparent mode set");
	T_CHECK(conf_set(c, "upstream", "[::1]:5269", "-o", err, sizeof(err)) == 0 &&
	            c->upstream_set && !c->upstream_original_dst &&
	            strcmp(c->upstream.host, "::1") == 0,
	        "  HOST:PORT replaces original-dst");
	T_CHECK(conf_set(c, "upstream", "original-dst", "-o", err, sizeof(err)) == 0 &&
	            c->upstream_original_dst && c->upstream.host[0] == '\0',
	        "  original-dst replaces HOST:PORT");
	conf_free(c);
	bad("upstream = *:5222\n", "upstream: a host is needed, got \"*:5222\"", "upstream *:PORT");
	bad("upstream = :5222\n", "upstream: a host is needed, got \":5222\"", "upstream :PORT");
	bad("upstream =\n", "upstream: expected HOST:PORT or original-dst, got \"\"",
	    "upstream empty");
	bad("upstream = original_dst\n", "upstream: expected ADDR:PORT", "upstream misspelt");
	bad("upstream = h:0\n", "upstream: port must be a number from 1 to 65535",
	    "upstream port 0");
}

static void test_words(void)
{
	struct conf *c;

	c = good("upstream_tls = direct\nupstream_verify = no\nrequire_tls = yes\n"
	         "plain_without_tls = reject\n",
	         "word keys");
	T_CHECK(c->upstream_tls == CONF_UPSTREAM_DIRECT, "  upstream_tls direct");
	T_CHECK(!c->upstream_verify, "  upstream_verify no");
	T_CHECK(c->require_tls == CONF_REQUIRE_YES, "  require_tls yes");
	T_CHECK(c->plain_without_tls == CONF_PLAIN_REJECT, "  plain_without_tls reject");
	conf_free(c);
	c = good("upstream_tls = none\nupstream_verify = true\nrequire_tls = no\n"
	         "plain_without_tls = allow\n",
	         "other word values");
	T_CHECK(c->upstream_tls == CONF_UPSTREAM_NONE, "  upstream_tls none");
	T_CHECK(c->upstream_verify, "  upstream_verify true");
	T_CHECK(c->require_tls == CONF_REQUIRE_NO, "  require_tls no");
	T_CHECK(c->plain_without_tls == CONF_PLAIN_ALLOW, "  plain_without_tls allow");
	conf_free(c);
	/* the transparent keys (issue 11) */
	c = good("upstream = original-dst\n", "transparent defaults");
	T_CHECK(!c->upstream_tls_set && !c->tproxy && c->upstream_source == CONF_SOURCE_PROXY,
	        "  upstream_tls not given, no tproxy, source proxy");
	conf_free(c);
	c = good("upstream_tls = auto\ntproxy = yes\nupstream_source = client\n",
	         "transparent keys");
	T_CHECK(c->upstream_tls == CONF_UPSTREAM_AUTO && c->upstream_tls_set, "  upstream_tls auto");
	T_CHECK(c->tproxy && c->upstream_source == CONF_SOURCE_CLIENT, "  tproxy, source client");
	conf_free(c);
	bad("upstream_source = server\n", "upstream_source: expected proxy or client, got \"server\"",
	    "bad upstream_source");
	bad("tproxy = maybe\n", "tproxy: expected yes or no", "bad tproxy");
	c = good("upstream_verify = false\nupstream_tls = starttls\nrequire_tls = auto\n"
	         "plain_without_tls = log\n",
	         "default word values");
	T_CHECK(!c->upstream_verify, "  upstream_verify false");
	T_CHECK(c->upstream_tls == CONF_UPSTREAM_STARTTLS && c->require_tls == CONF_REQUIRE_AUTO &&
	            c->plain_without_tls == CONF_PLAIN_LOG,
	        "  defaults by name");
	conf_free(c);

	bad("upstream_tls = foo\n", "upstream_tls: expected starttls, direct, none or auto, got \"foo\"",
	    "bad upstream_tls");
	bad("upstream_tls = STARTTLS\n", "upstream_tls: expected", "words are case-sensitive");
	bad("upstream_tls =\n", "upstream_tls: expected starttls, direct, none or auto, got \"\"",
	    "empty upstream_tls");
	bad("upstream_verify = on\n",
	    "upstream_verify: expected yes or no (or true or false), got \"on\"",
	    "upstream_verify on refused");
	bad("upstream_verify = 1\n", "upstream_verify: expected yes or no", "upstream_verify 1");
	bad("upstream_verify =\n", "upstream_verify: expected yes or no", "empty upstream_verify");
	bad("require_tls = maybe\n", "require_tls: expected auto, yes or no, got \"maybe\"",
	    "bad require_tls");
	bad("require_tls = true\n", "require_tls: expected auto, yes or no", "require_tls true");
	bad("plain_without_tls = deny\n",
	    "plain_without_tls: expected allow, log or reject, got \"deny\"",
	    "bad plain_without_tls");
}

static void test_paths(void)
{
	struct conf *c;

	c = good("upstream_ca = ca.pem\ncert = c.pem\nkey = k.pem\nevent_log = -\n"
	         "keylog = /tmp/keys\n",
	         "path keys");
	T_STREQ(c->upstream_ca, "ca.pem", "  upstream_ca");
	T_STREQ(c->cert, "c.pem", "  cert");
	T_STREQ(c->key, "k.pem", "  key");
	T_STREQ(c->event_log, "-", "  event_log -");
	T_STREQ(c->keylog, "/tmp/keys", "  keylog");
	T_CHECK(conf_set(c, "keylog", "", "-o", err, sizeof(err)) == 0 && c->keylog == NULL,
	        "  empty path means none");
	T_CHECK(conf_set(c, "cert", "other.pem", "-o", err, sizeof(err)) == 0 &&
	            strcmp(c->cert, "other.pem") == 0,
	        "  path replaced");
	conf_free(c);
	c = good("event_log =\nupstream_ca =\n", "empty paths in a file");
	T_CHECK(c->event_log == NULL && c->upstream_ca == NULL, "  empty paths are none");
	conf_free(c);
}

static void test_mechanisms(void)
{
	struct conf *c;
	char text[1024];
	size_t i;

	c = good("mechanisms_deny = plain, scram-sha-1  SCRAM-SHA-256,,DIGEST-MD5 ,Plain\n"
	         "mechanisms_allow = X-OAUTH2\n",
	         "mechanism lists");
	T_CHECK(c->nmechanisms_deny == 4, "  separators: commas and/or spaces, duplicates dropped");
	T_CHECK(strcmp(c->mechanisms_deny[0], "PLAIN") == 0 &&
	            strcmp(c->mechanisms_deny[1], "SCRAM-SHA-1") == 0 &&
	            strcmp(c->mechanisms_deny[2], "SCRAM-SHA-256") == 0 &&
	            strcmp(c->mechanisms_deny[3], "DIGEST-MD5") == 0,
	        "  names upper-cased, in order");
	T_CHECK(c->nmechanisms_allow == 1 && strcmp(c->mechanisms_allow[0], "X-OAUTH2") == 0,
	        "  allow list");
	T_CHECK(conf_set(c, "mechanisms_deny", "LOGIN", "-o", err, sizeof(err)) == 0 &&
	            c->nmechanisms_deny == 1 && strcmp(c->mechanisms_deny[0], "LOGIN") == 0,
	        "  a list replaces the old one");
	T_CHECK(conf_set(c, "mechanisms_deny", "GOOD B@D", "-o", err, sizeof(err)) == -1 &&
	            c->nmechanisms_deny == 1 && strcmp(c->mechanisms_deny[0], "LOGIN") == 0,
	        "  a bad list leaves the old one");
	T_CHECK(conf_set(c, "mechanisms_allow", " , ", "-o", err, sizeof(err)) == 0 &&
	            c->nmechanisms_allow == 0,
	        "  a list of separators is empty");
	conf_free(c);

	c = good("mechanisms_deny =\n", "empty mechanism list");
	T_CHECK(c->nmechanisms_deny == 0, "  no mechanisms");
	conf_free(c);

	bad("mechanisms_deny = PLAIN PL@IN\n",
	    "mechanisms_deny: \"PL@IN\" is not a SASL mechanism name (1 to 20 of A-Z, 0-9, - and "
	    "_)",
	    "bad character in a mechanism");
	bad("mechanisms_allow = SCRAM-SHA-1.5\n",
	    "mechanisms_allow: \"SCRAM-SHA-1.5\" is not a SASL mechanism name",
	    "dot in a mechanism");
	bad("mechanisms_allow = ABCDEFGHIJKLMNOPQRSTU\n",
	    "mechanisms_allow: \"ABCDEFGHIJKLMNOPQRSTU\" is not a SASL mechanism name",
	    "mechanism of 21 characters");
	c = good("mechanisms_allow = ABCDEFGHIJKLMNOPQRST\n", "mechanism of 20 characters");
	conf_free(c);
	bad("mechanisms_deny = \"PLAIN;LOGIN\"\n", "mechanisms_deny: \"PLAIN;LOGIN\" is not",
	    "semicolon is no separator");

	strcpy(text, "mechanisms_deny =");
	for (i = 0; i < MAX_MECHANISMS; i++)
		snprintf(text + strlen(text), sizeof(text) - strlen(text), " M%zu", i);
	c = good(text, "MAX_MECHANISMS mechanisms");
	T_CHECK(c->nmechanisms_deny == MAX_MECHANISMS, "  all kept");
	conf_free(c);
	strcat(text, " ONE-MORE\n");
	bad(text, "mechanisms_deny: too many mechanisms, at most 32", "too many mechanisms");
}

static void test_numbers(void)
{
	struct conf *c;

	c = good("connect_timeout = 1\nlogin_timeout = 86400\nmax_stanza_prelogin = 1024\n"
	         "max_stanza = 16M\nmax_sessions = 1000000\nmax_per_addr = 1\n",
	         "numbers at their bounds");
	T_CHECK(c->connect_timeout == 1 && c->login_timeout == 86400, "  timeouts");
	T_CHECK(c->max_stanza_prelogin == 1024 && c->max_stanza == 16 * 1024 * 1024,
	        "  stanza sizes");
	T_CHECK(c->max_sessions == 1000000 && c->max_per_addr == 1, "  session limits");
	conf_free(c);
	c = good("connect_timeout = 3600\nlogin_timeout = 1\nmax_stanza_prelogin = 64k\n"
	         "max_stanza = 300K\nmax_sessions = 1\nmax_per_addr = 1000000\n",
	         "numbers at the other bounds, suffixes");
	T_CHECK(c->connect_timeout == 3600 && c->login_timeout == 1, "  timeouts");
	T_CHECK(c->max_stanza_prelogin == 65536 && c->max_stanza == 300 * 1024, "  k and K");
	T_CHECK(c->max_sessions == 1 && c->max_per_addr == 1000000, "  session limits");
	conf_free(c);
	c = good("max_stanza = 16384k\n", "16384k is 16M");
	conf_free(c);

	bad("connect_timeout = 0\n", "connect_timeout: expected seconds, 1 to 3600, got \"0\"",
	    "connect_timeout 0");
	bad("connect_timeout = 3601\n", "connect_timeout: expected seconds, 1 to 3600",
	    "connect_timeout 3601");
	bad("connect_timeout = -1\n", "connect_timeout: expected", "connect_timeout negative");
	bad("connect_timeout = 10s\n", "connect_timeout: expected", "connect_timeout with unit");
	bad("connect_timeout = ten\n", "connect_timeout: expected", "connect_timeout word");
	bad("connect_timeout =\n", "connect_timeout: expected seconds, 1 to 3600, got \"\"",
	    "connect_timeout empty");
	bad("connect_timeout = 99999999999999999999999999\n", "connect_timeout: expected",
	    "connect_timeout overflow");
	bad("login_timeout = 0\n", "login_timeout: expected seconds, 1 to 86400, got \"0\"",
	    "login_timeout 0");
	bad("login_timeout = 86401\n", "login_timeout: expected seconds, 1 to 86400",
	    "login_timeout 86401");
	bad("login_timeout = 0x10\n", "login_timeout: expected", "login_timeout hex");
	bad("max_stanza_prelogin = 1023\n",
	    "max_stanza_prelogin: expected bytes, 1024 to 16M (suffix k or M), got \"1023\"",
	    "max_stanza_prelogin 1023");
	bad("max_stanza_prelogin = 17M\n", "max_stanza_prelogin: expected bytes",
	    "max_stanza_prelogin 17M");
	bad("max_stanza_prelogin = 64kb\n", "max_stanza_prelogin: expected bytes",
	    "max_stanza_prelogin 64kb");
	bad("max_stanza_prelogin = k\n", "max_stanza_prelogin: expected bytes",
	    "max_stanza_prelogin suffix alone");
	bad("max_stanza = 16385k\n", "max_stanza: expected bytes", "max_stanza 16385k");
	bad("max_stanza = 1G\n", "max_stanza: expected bytes", "max_stanza 1G");
	bad("max_stanza = 1m\n", "max_stanza: expected bytes", "max_stanza lower-case m");
	bad("max_stanza = 0k\n", "max_stanza: expected bytes", "max_stanza 0k");
	bad("max_stanza = 1.5M\n", "max_stanza: expected bytes", "max_stanza fraction");
	bad("max_stanza = 99999999999999999999999M\n", "max_stanza: expected bytes",
	    "max_stanza overflow");
	bad("max_sessions = 0\n", "max_sessions: expected a number, 1 to 1000000, got \"0\"",
	    "max_sessions 0");
	bad("max_sessions = 1000001\n", "max_sessions: expected a number, 1 to 1000000",
	    "max_sessions 1000001");
	bad("max_sessions = 1e3\n", "max_sessions: expected", "max_sessions exponent");
	bad("max_per_addr = 0\n", "max_per_addr: expected a number, 1 to 1000000, got \"0\"",
	    "max_per_addr 0");
	bad("max_per_addr = 1000001\n", "max_per_addr: expected a number", "max_per_addr too big");
	bad("max_per_addr = \" 5\"\n", "max_per_addr: expected", "max_per_addr leading space");
}

static void test_options(void)
{
	struct conf *c;
	int n;

	c = load("upstream_tls = none\nlisten = 127.0.0.1:5222\nkeylog = k.log\n", &n);
	T_CHECK(n == 0, "-o: base file loads");
	T_CHECK(conf_set_option(c, "upstream_tls=direct", err, sizeof(err)) == 0 &&
	            c->upstream_tls == CONF_UPSTREAM_DIRECT,
	        "-o overrides the file");
	T_CHECK(conf_set_option(c, " upstream_tls = starttls ", err, sizeof(err)) == 0 &&
	            c->upstream_tls == CONF_UPSTREAM_STARTTLS,
	        "-o twice: the later wins, spaces trimmed");
	T_CHECK(conf_set_option(c, "listen=127.0.0.1:6222", err, sizeof(err)) == 0 &&
	            c->nlisten == 2,
	        "-o listen appends");
	T_CHECK(conf_set_option(c, "listen=", err, sizeof(err)) == 0 && c->nlisten == 0,
	        "-o listen= removes the listeners");
	T_CHECK(conf_set_option(c, "keylog=", err, sizeof(err)) == 0 && c->keylog == NULL,
	        "-o keylog= turns the key log off");
	T_CHECK(conf_set_option(c, "cert=a b.pem", err, sizeof(err)) == 0 &&
	            strcmp(c->cert, "a b.pem") == 0,
	        "-o value used as given");
	T_CHECK(conf_set_option(c, "mechanisms_deny=plain,login", err, sizeof(err)) == 0 &&
	            c->nmechanisms_deny == 2,
	        "-o list");

	T_CHECK(conf_set_option(c, "upstream_tls", err, sizeof(err)) == -1 &&
	            strcmp(err, "-o: expected KEY=VALUE, got \"upstream_tls\"") == 0,
	        "-o without '='");
	T_CHECK(conf_set_option(c, "=direct", err, sizeof(err)) == -1 &&
	            strcmp(err, "-o: expected KEY=VALUE, got \"=direct\"") == 0,
	        "-o without key");
	T_CHECK(conf_set_option(c, "", err, sizeof(err)) == -1 &&
	            strcmp(err, "-o: expected KEY=VALUE, got \"\"") == 0,
	        "-o empty");
	T_CHECK(conf_set_option(c, "bogus=1", err, sizeof(err)) == -1 &&
	            strcmp(err, "-o: unknown key \"bogus\"") == 0,
	        "-o unknown key");
	T_CHECK(conf_set_option(c, "upstream_tls=foo", err, sizeof(err)) == -1 &&
	            strcmp(err, "-o: upstream_tls: expected starttls, direct, none or auto, got "
	                        "\"foo\"") == 0,
	        "-o bad value: message without newline");
	T_CHECK(c->upstream_tls == CONF_UPSTREAM_STARTTLS, "-o bad value leaves the value");
	T_CHECK(conf_set_option(c, "connect_timeout=0", err, sizeof(err)) == -1 &&
	            strstr(err, "-o: connect_timeout: expected seconds") == err,
	        "-o bad number");
	T_CHECK(conf_set_option(c, "upstream_verify=no\n", err, sizeof(err)) == -1 &&
	            strcmp(err, "-o: upstream_verify: control character in the value") == 0,
	        "-o newline is a control character");
	T_CHECK(conf_set_option(c, "cert=a\x1b[2J", err, sizeof(err)) == -1 &&
	            strcmp(err, "-o: cert: control character in the value") == 0,
	        "-o control character");
	T_CHECK(conf_set(c, "require_tls", "yes", "x.conf:9", err, sizeof(err)) == 0 &&
	            c->require_tls == CONF_REQUIRE_YES && err[0] == '\0',
	        "conf_set ok clears err");
	T_CHECK(conf_set(c, "require_tls", "sure", "x.conf:9", err, sizeof(err)) == -1 &&
	            strcmp(err, "x.conf:9: require_tls: expected auto, yes or no, got \"sure\"") ==
	                0,
	        "conf_set names its origin");
	T_CHECK(conf_set(c, "require_tls", "sure", NULL, err, sizeof(err)) == -1 &&
	            strncmp(err, "-o: ", 4) == 0,
	        "conf_set without origin says -o");
	conf_free(c);

	/* The same key in the file and in -o is no duplicate: -o wins. */
	c = load("connect_timeout = 5\n", &n);
	T_CHECK(conf_set_option(c, "connect_timeout=7", err, sizeof(err)) == 0 &&
	            c->connect_timeout == 7,
	        "-o over a file key");
	conf_free(c);
}

static void test_files(void)
{
	struct conf *c = conf_new();
	const char *path;
	int n;

	n = conf_load_file(c, "/nonexistent/xmpp-inspect.conf", err, sizeof(err));
	T_CHECK(n == -1 && strcmp(err, "/nonexistent/xmpp-inspect.conf: No such file or "
	                               "directory\n") == 0,
	        "file not found");
	n = conf_load_file(c, "/", err, sizeof(err));
	T_CHECK(n == -1 && strncmp(err, "/: ", 3) == 0, "directory as file");
	path = temp_file("upstream = h:1\nupstream_tls = bad\n\nmax_stanza = 1\n");
	n = conf_load_file(c, path, err, sizeof(err));
	{
		char expect[512];

		snprintf(expect, sizeof(expect),
		         "%s:2: upstream_tls: expected starttls, direct, none or auto, got \"bad\"\n"
		         "%s:4: max_stanza: expected bytes, 1024 to 16M (suffix k or M), got "
		         "\"1\"\n",
		         path, path);
		T_CHECK(n == 2, "file: problems counted");
		T_STREQ(err, expect, "file: problems named FILE:LINE");
	}
	T_STREQ(c->upstream.host, "h", "file: good lines applied");
	conf_free(c);
}

/* Every key is in the example with its default, so a user finds them all. */
static void test_example(void)
{
	static const char *const keys[] = {
	    "listen",
	    "listen_tls",
	    "upstream",
	    "upstream_tls",
	    "upstream_verify",
	    "upstream_ca",
	    "cert",
	    "key",
	    "event_log",
	    "keylog",
	    "require_tls",
	    "plain_without_tls",
	    "mechanisms_deny",
	    "mechanisms_allow",
	    "connect_timeout",
	    "login_timeout",
	    "max_stanza_prelogin",
	    "max_stanza",
	    "max_sessions",
	    "max_per_addr",
	};
	struct conf *c = conf_new(), *d = conf_new();
	char *text;
	long len;
	size_t i;
	FILE *f;
	int n;

	n = conf_load_file(c, EXAMPLE, err, sizeof(err));
	T_CHECK(n == 0, "example configuration parses");
	if (n != 0)
		printf("# %s", err);
	T_CHECK(c->nlisten == 1 && strcmp(c->listen[0].host, "127.0.0.1") == 0 &&
	            strcmp(c->listen[0].port, "5222") == 0,
	        "example: listen 127.0.0.1:5222");
	T_CHECK(c->nlisten_tls == 1 && strcmp(c->listen_tls[0].host, "127.0.0.1") == 0 &&
	            strcmp(c->listen_tls[0].port, "5223") == 0,
	        "example: listen_tls 127.0.0.1:5223");
	T_CHECK(c->upstream_set && !c->upstream_original_dst &&
	            strcmp(c->upstream.host, "127.0.0.1") == 0 &&
	            strcmp(c->upstream.port, "15222") == 0,
	        "example: upstream 127.0.0.1:15222");
	T_STREQ(c->cert, "certs/lab/server.pem", "example: cert");
	T_STREQ(c->key, "certs/lab/server.key", "example: key");
	T_STREQ(c->upstream_ca, "certs/lab/ca.pem", "example: upstream_ca");
	T_STREQ(c->event_log, "-", "example: event_log -");
	T_CHECK(c->keylog == NULL, "example: no keylog");
	T_CHECK(c->upstream_tls == d->upstream_tls && c->upstream_verify == d->upstream_verify &&
	            c->require_tls == d->require_tls &&
	            c->plain_without_tls == d->plain_without_tls && c->nmechanisms_deny == 0 &&
	            c->nmechanisms_allow == 0 && c->connect_timeout == d->connect_timeout &&
	            c->login_timeout == d->login_timeout &&
	            c->max_stanza_prelogin == d->max_stanza_prelogin &&
	            c->max_stanza == d->max_stanza && c->max_sessions == d->max_sessions &&
	            c->max_per_addr == d->max_per_addr,
	        "example: the other keys show their defaults");

	f = fopen(EXAMPLE, "r");
	text = NULL;
	if (f != NULL && fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) > 0 &&
	    fseek(f, 0, SEEK_SET) == 0 && (text = calloc(1, (size_t)len + 2)) != NULL) {
		text[0] = '\n';
		if (fread(text + 1, 1, (size_t)len, f) != (size_t)len)
			text[0] = '\0';
	}
	if (f != NULL)
		fclose(f);
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		char a[64], b[64], name[96];

		snprintf(a, sizeof(a), "\n%s =", keys[i]);
		snprintf(b, sizeof(b), "\n#%s =", keys[i]);
		snprintf(name, sizeof(name), "example shows %s", keys[i]);
		T_CHECK(text != NULL && (strstr(text, a) != NULL || strstr(text, b) != NULL), name);
	}
	free(text);

	/* With the lab files in place (stand-ins here: the certificates may
	 * not be made yet) the example passes conf_check. */
	conf_set(c, "cert", temp_file("cert"), "-o", err, sizeof(err));
	conf_set(c, "key", temp_file("key"), "-o", err, sizeof(err));
	conf_set(c, "upstream_ca", temp_file("ca"), "-o", err, sizeof(err));
	n = conf_check(c, err, sizeof(err));
	T_CHECK(n == 0 && err[0] == '\0', "example passes conf_check");
	if (n != 0)
		printf("# %s", err);
	conf_free(c);
	conf_free(d);
}

static void test_check(void)
{
	struct conf *c = conf_new();
	const char *file = temp_file("x");
	int n;

	n = conf_check(c, err, sizeof(err));
	T_CHECK(n == -1, "check: empty conf fails");
	T_STREQ(err,
	        "listen: no listener: set listen or listen_tls\n"
	        "upstream: not set: give HOST:PORT or original-dst\n",
	        "check: no listener, no upstream; cert not needed without listeners");

	conf_set(c, "listen_tls", "127.0.0.1:5223", "-o", err, sizeof(err));
	conf_set(c, "upstream", "original-dst", "-o", err, sizeof(err));
	n = conf_check(c, err, sizeof(err));
	T_CHECK(n == -1 && strcmp(err, "cert: not set: clients are offered TLS on every listener\n"
	                               "key: not set: clients are offered TLS on every "
	                               "listener\n") == 0,
	        "check: listen_tls needs cert and key");
	conf_set(c, "listen_tls", "", "-o", err, sizeof(err));
	conf_set(c, "listen", "127.0.0.1:5222", "-o", err, sizeof(err));
	n = conf_check(c, err, sizeof(err));
	T_CHECK(n == -1 && count_lines(err) == 2 && strstr(err, "cert: not set") == err,
	        "check: listen (STARTTLS) needs cert and key");

	conf_set(c, "cert", "/nonexistent/cert.pem", "-o", err, sizeof(err));
	conf_set(c, "key", file, "-o", err, sizeof(err));
	conf_set(c, "upstream_ca", "/nonexistent/ca.pem", "-o", err, sizeof(err));
	n = conf_check(c, err, sizeof(err));
	T_CHECK(n == -1 &&
	            strcmp(err, "cert: cannot read \"/nonexistent/cert.pem\": No such file or "
	                        "directory\n"
	                        "upstream_ca: cannot read \"/nonexistent/ca.pem\": No such file "
	                        "or directory\n") == 0,
	        "check: unreadable cert and upstream_ca");
	conf_set(c, "cert", "/", "-o", err, sizeof(err));
	conf_set(c, "upstream_ca", file, "-o", err, sizeof(err));
	n = conf_check(c, err, sizeof(err));
	T_CHECK(n == -1 && strcmp(err, "cert: \"/\" is a directory\n") == 0,
	        "check: directory as cert");
	conf_set(c, "cert", file, "-o", err, sizeof(err));
	n = conf_check(c, err, sizeof(err));
	T_CHECK(n == 0 && err[0] == '\0', "check: complete conf passes");
	conf_set(c, "upstream_ca", "", "-o", err, sizeof(err));
	T_CHECK(conf_check(c, err, sizeof(err)) == 0, "check: upstream_ca is optional");
	/* An allow list every entry of which is denied leaves no mechanism;
	 * allowed (the upstream decides what exists), not a problem. */
	conf_set(c, "mechanisms_allow", "PLAIN", "-o", err, sizeof(err));
	conf_set(c, "mechanisms_deny", "PLAIN", "-o", err, sizeof(err));
	T_CHECK(conf_check(c, err, sizeof(err)) == 0, "check: allow and deny may overlap");
	conf_free(c);
}

static void test_permitted(void)
{
	struct conf *c = conf_new();

	T_CHECK(policy_mechanism_permitted(c, "PLAIN") && policy_mechanism_permitted(c, "X-ANY"),
	        "permitted: everything by default");
	T_CHECK(!policy_mechanism_permitted(c, NULL), "permitted: NULL is not");
	conf_set(c, "mechanisms_deny", "plain login", "-o", err, sizeof(err));
	T_CHECK(!policy_mechanism_permitted(c, "PLAIN"), "permitted: denied");
	T_CHECK(!policy_mechanism_permitted(c, "plain") && !policy_mechanism_permitted(c, "Login"),
	        "permitted: deny ignores case");
	T_CHECK(policy_mechanism_permitted(c, "SCRAM-SHA-1"),
	        "permitted: others pass the deny list");
	conf_set(c, "mechanisms_allow", "SCRAM-SHA-1,scram-sha-256,PLAIN", "-o", err, sizeof(err));
	T_CHECK(policy_mechanism_permitted(c, "scram-sha-1"), "permitted: allowed, any case");
	T_CHECK(!policy_mechanism_permitted(c, "DIGEST-MD5"), "permitted: not in the allow list");
	T_CHECK(!policy_mechanism_permitted(c, "PLAIN"), "permitted: deny beats allow");
	T_CHECK(!policy_mechanism_permitted(c, "SCRAM-SHA-1-PLUS"), "permitted: no prefix match");
	conf_free(c);
}

/* users_deny/users_allow patterns must fold as servers compare
 * identities (issue 8): one that cannot could never match. */
static void test_user_patterns(void)
{
	struct conf *c = conf_new();
	char msg[256];
	T_CHECK(conf_set(c, "users_deny", "mallory *@lab.test [mM]al*", "-o", msg, sizeof(msg)) ==
	                0 &&
	            c->nusers_deny == 3,
	        "patterns: plain, domain and bracket patterns load");
	T_CHECK(conf_set(c, "users_deny", "mal<lory", "-o", msg, sizeof(msg)) < 0 &&
	            strstr(msg, "mal<lory") != NULL && c->nusers_deny == 3,
	        "patterns: a character nodeprep prohibits is refused, the old list kept");
	T_CHECK(conf_set(c, "users_allow", "alice@\xef\xbd\x8c\xef\xbd\x81\xef\xbd\x82.test", "-o",
	                 msg, sizeof(msg)) == 0,
	        "patterns: a fullwidth domain folds");
	T_STREQ(c->users_allow[0], "alice@lab.test",
	        "patterns: stored folded, matched without folding again");
	conf_free(c);
}

/* issue 11: forge_* and transcript_* keys */
static void test_forge_keys(void)
{
		struct conf *c = conf_new();
	T_CHECK(c->forge_cache == DEFAULT_FORGE_CACHE && !c->forge_mirror &&
	            c->transcript_max == DEFAULT_TRANSCRIPT_MAX && c->default_domain == NULL,
	        "forge/transcript defaults");
	T_CHECK(conf_set(c, "default_domain", "Lab.TEST.", "-o", err, sizeof err) == 0 &&
	            strcmp(c->default_domain, "lab.test") == 0,
	        "default_domain folded");
	T_CHECK(conf_set(c, "default_domain", "10.0.0.1", "-o", err, sizeof err) == -1 &&
	            strstr(err, "IP address") != NULL && strcmp(c->default_domain, "lab.test") == 0,
	        "default_domain IP refused, old kept");
	T_CHECK(conf_set(c, "default_domain", "*.lab.test", "-o", err, sizeof err) == -1,
	        "default_domain wildcard refused");
	T_CHECK(conf_set(c, "default_domain", "", "-o", err, sizeof err) == 0 &&
	            c->default_domain == NULL,
	        "default_domain unset");
	T_CHECK(conf_set(c, "forge_cache", "0", "-o", err, sizeof err) == -1 &&
	            conf_set(c, "forge_cache", "16385", "-o", err, sizeof err) == -1 &&
	            conf_set(c, "forge_cache", "2", "-o", err, sizeof err) == 0 && c->forge_cache == 2,
	        "forge_cache range");
	T_CHECK(conf_set(c, "transcript_max", "512", "-o", err, sizeof err) == -1 &&
	            conf_set(c, "transcript_max", "64k", "-o", err, sizeof err) == 0 &&
	            c->transcript_max == 64 * 1024,
	        "transcript_max range");
	conf_set(c, "listen", "127.0.0.1:5222", "-o", err, sizeof err);
	conf_set(c, "upstream", "127.0.0.1:5223", "-o", err, sizeof err);
	conf_set(c, "forge_ca", "/etc/passwd", "-o", err, sizeof err);
	T_CHECK(conf_check(c, err, sizeof err) == -1 && strstr(err, "go together") != NULL &&
	            strstr(err, "cert: not set") == NULL,
	        "forge_ca without its key refused; no cert needed with forge_ca");
	conf_set(c, "forge_ca", "", "-o", err, sizeof err);
	conf_set(c, "forge_mirror", "yes", "-o", err, sizeof err);
	T_CHECK(conf_check(c, err, sizeof err) == -1 && strstr(err, "forge_mirror: needs") != NULL,
	        "forge_mirror without forge_ca refused");
	conf_free(c);
}

static bool trusted(const struct conf *c, const char *ip)
{
	struct in6_addr a = {0};
	struct in_addr a4;
	if (inet_pton(AF_INET, ip, &a4) == 1) {
		a.s6_addr[10] = a.s6_addr[11] = 0xff;
		memcpy(a.s6_addr + 12, &a4, 4);
	} else if (inet_pton(AF_INET6, ip, &a) != 1) {
		abort();
	}
	return conf_proxy_trusted(c, &a);
}

/* listen ... proxy, proxy_from and metrics_listen (issue 13). */
static void test_scale(void)
{
	struct conf *c = good("listen = 127.0.0.1:5222 proxy\nlisten = 127.0.0.1:5224\n"
	                      "listen_tls = [::1]:5223\tproxy\n",
	                      "scale: listen ... proxy");
	T_CHECK(c->nlisten == 2 && c->listen[0].proxy && !c->listen[1].proxy &&
	            c->nlisten_tls == 1 && c->listen_tls[0].proxy &&
	            strcmp(c->listen_tls[0].host, "::1") == 0,
	        "scale: the flag is per listener");
	conf_free(c);
	bad("listen = 127.0.0.1:5222 proxi\n", "listen: unknown listener flag \"proxi\"",
	    "scale: a misspelt flag");
	bad("listen = 127.0.0.1:5222 proxy proxy\n", "listen: ", "scale: the flag twice");

	c = good("proxy_from = 10.0.0.0/8, 192.0.2.7 2001:db8::/32 10.1.2.3/8\n",
	         "scale: proxy_from");
	T_CHECK(c->nproxy_from == 4, "scale: proxy_from: four networks");
	T_CHECK(trusted(c, "10.255.0.1") && trusted(c, "192.0.2.7") && !trusted(c, "192.0.2.8") &&
	            trusted(c, "2001:db8:ffff::1") && !trusted(c, "2001:db9::1") &&
	            !trusted(c, "11.0.0.1") && !trusted(c, "::ffff:0:0") && !trusted(c, "127.0.0.1"),
	        "scale: proxy_from matches by prefix, IPv4 and IPv6");
	conf_free(c);
	c = good("proxy_from = 172.16.0.0/12\n", "scale: proxy_from /12");
	T_CHECK(trusted(c, "172.31.255.255") && !trusted(c, "172.32.0.0") &&
	            trusted(c, "::ffff:172.16.0.1"),
	        "scale: /12 cuts inside a byte; an IPv4-mapped address is its IPv4");
	conf_free(c);
	c = good("proxy_from = 0.0.0.0/0\n", "scale: proxy_from 0.0.0.0/0");
	T_CHECK(trusted(c, "1.2.3.4") && !trusted(c, "2001:db8::1"),
	        "scale: 0.0.0.0/0 is every IPv4 address and no IPv6 one");
	conf_free(c);
	bad("proxy_from = 10.0.0.0/33\n", "proxy_from: \"10.0.0.0/33\" is not ADDR or ADDR/BITS",
	    "scale: /33 on IPv4");
	bad("proxy_from = ::/129\n", "proxy_from: \"::/129\"", "scale: /129");
	bad("proxy_from = 10.0.0.0/08\n", "proxy_from: ", "scale: a leading zero in the bits");
	bad("proxy_from = 10.0.0.0/\n", "proxy_from: ", "scale: no bits after /");
	bad("proxy_from = balancer.lan\n", "proxy_from: ", "scale: a name is not a network");
	bad("proxy_from = 10.0.0/8\n", "proxy_from: ", "scale: a short IPv4 literal");

	c = good("metrics_listen = 127.0.0.1:9464\n", "scale: metrics_listen");
	T_CHECK(c->metrics_set && strcmp(c->metrics_listen.port, "9464") == 0,
	        "scale: metrics_listen set");
	conf_set(c, "metrics_listen", "", "-o", err, sizeof(err));
	T_CHECK(!c->metrics_set, "scale: metrics_listen= unsets it");
	conf_free(c);
	bad("metrics_listen = 9464\n", "metrics_listen: expected ADDR:PORT",
	    "scale: metrics_listen needs ADDR:PORT");

	/* a proxy listener with no proxy_from: a configuration error */
	const char *file = temp_file("x");
	c = conf_new();
	conf_set(c, "listen", "127.0.0.1:5222 proxy", "-o", err, sizeof(err));
	conf_set(c, "upstream", "original-dst", "-o", err, sizeof(err));
	conf_set(c, "cert", file, "-o", err, sizeof(err));
	conf_set(c, "key", file, "-o", err, sizeof(err));
	T_CHECK(conf_check(c, err, sizeof(err)) == -1 && strstr(err, "proxy_from: not set") == err &&
	            count_lines(err) == 1,
	        "scale: check: proxy listener without proxy_from");
	conf_set(c, "proxy_from", "127.0.0.1", "-o", err, sizeof(err));
	T_CHECK(conf_check(c, err, sizeof(err)) == 0, "scale: check: with proxy_from it passes");
	conf_set(c, "metrics_listen", "127.0.0.1:5222", "-o", err, sizeof(err));
	T_CHECK(conf_check(c, err, sizeof(err)) == -1 && strstr(err, "metrics_listen:") == err,
	        "scale: check: metrics_listen on a client port");
	conf_free(c);
}

int main(void)
{
	test_user_patterns();
	test_forge_keys();
	test_defaults();
	test_syntax();
	test_err_buffer();
	test_addresses();
	test_words();
	test_paths();
	test_mechanisms();
	test_numbers();
	test_options();
	test_files();
	test_example();
	test_check();
	test_permitted();
	test_scale();
	temp_cleanup();
	T_DONE();
}
