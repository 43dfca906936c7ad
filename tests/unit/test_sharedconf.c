/* sharedconf: the shared_state URL forms and the names of the keys. */
#include <arpa/inet.h>
#include <string.h>

#include "sharedconf.h"
#include "t.h"

static int parse(const char *s, struct sharedconf_url *u)
{
	char err[160];
	memset(u, 0x55, sizeof(*u)); /* nothing may be left from before */
	return sharedconf_parse_url(s, u, err, sizeof(err));
}

static const char *format(const char *s)
{
	static char out[200];
	struct sharedconf_url u;
	if (parse(s, &u) < 0)
		return "(refused)";
	sharedconf_format_url(&u, out, sizeof(out));
	return out;
}

static void test_good(void)
{
	struct sharedconf_url u;
	T_CHECK(parse("redis://127.0.0.1", &u) == 0 && !u.unix_socket && u.port == 6379 &&
	            u.db == 0 && strcmp(u.host, "127.0.0.1") == 0,
	        "redis://HOST: default port and db");
	T_CHECK(parse("redis://redis.example.net:6380/7", &u) == 0 && u.port == 6380 && u.db == 7 &&
	            strcmp(u.host, "redis.example.net") == 0,
	        "redis://NAME:PORT/DB");
	T_CHECK(parse("redis://[2001:db8::1]:7000/", &u) == 0 && u.port == 7000 && u.db == 0 &&
	            strcmp(u.host, "2001:db8::1") == 0,
	        "redis://[IPv6]:PORT/ (empty db)");
	T_CHECK(parse("redis://h/65535", &u) == 0 && u.db == 65535, "the highest db");
	T_CHECK(parse("unix:///run/redis/redis.sock", &u) == 0 && u.unix_socket && u.db == 0 &&
	            strcmp(u.path, "/run/redis/redis.sock") == 0,
	        "unix:///PATH");
	T_CHECK(parse("unix:///tmp/r.sock?db=12", &u) == 0 && u.unix_socket && u.db == 12 &&
	            strcmp(u.path, "/tmp/r.sock") == 0,
	        "unix:///PATH?db=N");
	T_STREQ(format("redis://h"), "redis://h:6379/0", "format: canonical TCP");
	T_STREQ(format("redis://[::1]:1/2"), "redis://[::1]:1/2", "format: IPv6 in brackets");
	T_STREQ(format("unix:///s"), "unix:///s?db=0", "format: canonical UNIX");
}

static void test_bad(void)
{
	static const char *const bad[] = {
	    "",
	    "redis://",
	    "redis://:6379",
	    "redis://h:",
	    "redis://h:0",
	    "redis://h:65536",
	    "redis://h:12a",
	    "redis://h/x",
	    "redis://h/-1",
	    "redis://h/65536",
	    "redis://h/1/2",
	    "redis://h/1?x=y",
	    "redis://user:pw@h",
	    "redis://:pw@h:6379",
	    "redis://h#frag",
	    "redis://[::1",
	    "redis://[not-v6]:1",
	    "redis://h_x",
	    "redis://h x",
	    "redis://h:1234567890123",
	    "rediss://h",
	    "REDIS://h",
	    "http://h",
	    "unix://",
	    "unix://relative/path",
	    "unix:///",
	    "unix:///s?db=",
	    "unix:///s?db=x",
	    "unix:///s?x=1",
	    "unix:///s?db=99999999999",
	};
	struct sharedconf_url u;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char name[96];
		snprintf(name, sizeof(name), "refused: \"%s\"", bad[i]);
		T_CHECK(parse(bad[i], &u) < 0, name);
	}
	char longpath[200] = "unix:///";
	memset(longpath + 8, 'a', 110);
	longpath[118] = '\0';
	T_CHECK(parse(longpath, &u) < 0, "refused: a socket path longer than sun_path");
	char longhost[300] = "redis://";
	memset(longhost + 8, 'a', 254);
	longhost[262] = '\0';
	T_CHECK(parse(longhost, &u) < 0, "refused: a host name longer than 253");
	char err[160] = "";
	T_CHECK(sharedconf_parse_url("redis://u:p@h", &u, err, sizeof(err)) < 0 &&
	            strstr(err, "password") != NULL,
	        "a password in the URL is refused and said so");
}

static void test_equal(void)
{
	struct sharedconf_url a, b;
	parse("redis://h:6379/0", &a);
	parse("redis://h", &b);
	T_CHECK(sharedconf_url_equal(&a, &b), "equal: defaults written or not");
	parse("redis://h/1", &b);
	T_CHECK(!sharedconf_url_equal(&a, &b), "not equal: another db");
	parse("unix:///h", &b);
	T_CHECK(!sharedconf_url_equal(&a, &b), "not equal: TCP and UNIX");
}

static void test_keys(void)
{
	struct in6_addr k;
	char addr[INET6_ADDRSTRLEN], key[96];

	inet_pton(AF_INET6, "::ffff:192.0.2.7", &k);
	sharedconf_addr(&k, addr, sizeof(addr));
	T_STREQ(addr, "192.0.2.7", "addr: v4-mapped is dotted IPv4");
	inet_pton(AF_INET6, "2001:0db8:0000:0000:0000:0000:0000:0001", &k);
	sharedconf_addr(&k, addr, sizeof(addr));
	T_STREQ(addr, "2001:db8::1", "addr: IPv6 compressed (RFC 5952)");
	memset(&k, 0, sizeof(k));
	sharedconf_addr(&k, addr, sizeof(addr));
	T_STREQ(addr, "::", "addr: an unknown family's zero key");

	T_CHECK(sharedconf_key(key, sizeof(key), "fail", "192.0.2.7") == 0, "key fits");
	T_STREQ(key, "xmpp-inspect:fail:192.0.2.7", "key: prefix, kind, address");
	T_CHECK(sharedconf_key(key, 20, "inflight", "2001:db8::1") < 0, "key: too long is refused");
	inet_pton(AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", &k);
	sharedconf_addr(&k, addr, sizeof(addr));
	T_CHECK(sharedconf_key(key, sizeof(key), "inflight", addr) == 0,
	        "key: the longest address fits the module's key buffer");
}

int main(void)
{
	test_good();
	test_bad();
	test_equal();
	test_keys();
	T_DONE();
}
