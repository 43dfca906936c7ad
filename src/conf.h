/*
 * Configuration: KEY = VALUE lines, # comments, -o KEY=VALUE overrides.
 * Parsing is table-driven; every error names its origin ("file:line" or
 * "-o") and is returned as text, never printed here.
 *
 * File syntax: one "KEY = VALUE" per line (spaces around '=' optional);
 * '#' starts a comment at the start of a line or after whitespace; values
 * may be double-quoted (inside quotes '\' escapes the next character and
 * '#' is literal). A non-repeatable key given twice in one file is an
 * error; conf_set (and so -o) replaces. Booleans are yes/no or true/false.
 * An empty value means "none" for the keys that may be unset: paths
 * (cert, key, upstream_ca, event_log, keylog, forge_ca, forge_ca_key,
 * transcript_dir, default_domain), mechanism lists, and
 * listen/listen_tls, where it removes every address given before (so
 * "-o listen= -o listen=ADDR:PORT" replaces the file's listeners, which a
 * lone "-o listen=ADDR:PORT" would extend). Relative paths are relative to
 * the working directory. Callers load into a fresh conf and discard it on
 * error: a failed key leaves its field unchanged, the others are applied.
 */
#ifndef XI_CONF_H
#define XI_CONF_H

#include <stdbool.h>
#include <netinet/in.h>
#include <stddef.h>

#include "bounds.h"
#include "sharedconf.h"

enum conf_upstream_tls {
	CONF_UPSTREAM_STARTTLS = 0,
	CONF_UPSTREAM_DIRECT,
	CONF_UPSTREAM_NONE,
	CONF_UPSTREAM_AUTO, /* as the client's listener: listen_tls direct, listen starttls */
};

/* upstream_source: the upstream connection leaves from the proxy's own
 * address, or from the client's (IP_TRANSPARENT, needs CAP_NET_ADMIN). */
enum conf_upstream_source {
	CONF_SOURCE_PROXY = 0,
	CONF_SOURCE_CLIENT,
};

enum conf_require_tls {
	CONF_REQUIRE_AUTO = 0,
	CONF_REQUIRE_YES,
	CONF_REQUIRE_NO,
};

/* upstream_proxy_protocol: a PROXY header first toward the upstream. */
enum conf_proxy_protocol {
	CONF_PROXY_OFF = 0,
	CONF_PROXY_V1,
	CONF_PROXY_V2,
};

/* event_log_full: what the proxy does while its event log cannot take
 * what happens (a full disk): go on, or refuse logins and connections
 * (as auditd's disk_full_action). */
enum conf_log_full {
	CONF_LOG_FULL_CONTINUE = 0,
	CONF_LOG_FULL_REFUSE,
};

/* shared_state_fail: what a login meets while Redis does not answer. */
enum conf_shared_fail {
	CONF_SHARED_OPEN = 0, /* the local counts decide (addrtab.c), as without shared_state */
	CONF_SHARED_CLOSED,   /* refused with <temporary-auth-failure/> */
};

enum conf_plain {
	CONF_PLAIN_LOG = 0,
	CONF_PLAIN_ALLOW,
	CONF_PLAIN_REJECT,
};

enum conf_tls_version {
	CONF_TLS_1_2 = 0,
	CONF_TLS_1_3,
};

/*
 * host is a name or a literal address (IPv6 without brackets); "" means
 * any address (written "*:PORT" or ":PORT", listeners only). port is the
 * number in canonical decimal, 1..65535.
 */
struct conf_addr {
	char host[256];
	char port[8];
	bool proxy; /* listen ... proxy: a PROXY header from a balancer first */
};

/* proxy_from: one network, IPv4 as IPv4-mapped IPv6 (as addrtab keys). */
struct conf_cidr {
	struct in6_addr net; /* host bits zero */
	unsigned bits;       /* 0..128 */
};

struct conf {
	struct conf_addr listen[MAX_LISTENERS];
	size_t nlisten;
	struct conf_addr listen_tls[MAX_LISTENERS];
	size_t nlisten_tls;

	struct conf_addr upstream;
	bool upstream_set;
	bool upstream_original_dst;
	enum conf_upstream_tls upstream_tls;
	bool upstream_tls_set; /* given: else auto with original-dst, starttls otherwise */
	bool tproxy;           /* listeners take TPROXY'd connections (IP_TRANSPARENT) */
	enum conf_upstream_source upstream_source;
	bool upstream_verify;
	char *upstream_ca; /* NULL: system default store */

	char *cert, *key;
	char *event_log; /* "-" is stdout; NULL: no event log */
	char *keylog;    /* NULL: none */
	enum conf_log_full event_log_full;
	enum conf_proxy_protocol upstream_proxy_protocol;
	size_t event_log_queue; /* bytes of lines that may wait for the disk */

	enum conf_require_tls require_tls;
	enum conf_plain plain_without_tls;
	char *mechanisms_deny[MAX_MECHANISMS]; /* upper-cased names */
	size_t nmechanisms_deny;
	char *mechanisms_allow[MAX_MECHANISMS];
	size_t nmechanisms_allow;

	/* client leg TLS */
	enum conf_tls_version tls_min_version;
	char *tls_ciphers; /* OpenSSL cipher list for TLS <= 1.2; NULL: defaults */

	/* identities (fnmatch patterns, case-insensitive) refused or allowed */
	/* fnmatch patterns, stored folded as servers compare identities */
	char *users_deny[MAX_USER_PATTERNS];
	size_t nusers_deny;
	char *users_allow[MAX_USER_PATTERNS];
	size_t nusers_allow;

	/* auth_failures N/SECONDS: past N failures from one address within
	 * SECONDS, attempts are refused; 0 = off */
	unsigned auth_failures_max;
	unsigned auth_failures_window;

	/* lab downgrade tests */
	bool strip_starttls;
	char *offer_mechanisms[MAX_MECHANISMS]; /* offered exactly, if set */
	size_t noffer_mechanisms;

	char *user; /* drop root to this user after start-up; NULL: stay */

	unsigned connect_timeout; /* seconds */
	unsigned login_timeout;   /* seconds */
	size_t max_stanza_prelogin;
	size_t max_stanza;
	unsigned max_sessions;
	unsigned max_per_addr;
	unsigned workers; /* forked event loops sharing the ports; read at start only */
	/* not a key: what one worker's descriptors hold (main_fit_nofile), 0
	 * for no cap below max_sessions */
	unsigned worker_max_sessions;

	/* transparent interception (forge.c, transcript.c) */
	char *forge_ca, *forge_ca_key; /* NULL: the one cert/key for every name */
	bool forge_mirror;             /* copy the server certificate's subject and names */
	unsigned forge_cache;          /* forged certificates kept (LRU) */
	char *default_domain;          /* folded; NULL: none */
	char *transcript_dir;          /* NULL: no transcripts */
	size_t transcript_max;         /* bytes per transcript file */
	/* shared_state: auth_failures and max_per_addr kept in Redis */
	bool shared_state_set;
	struct sharedconf_url shared_state;
	char shared_state_ip[46]; /* the host resolved at (re)load (sharedstate_resolve) */
	enum conf_shared_fail shared_state_fail;
	/* the balancers whose PROXY headers proxy listeners believe */
	struct conf_cidr proxy_from[MAX_PROXY_FROM];
	size_t nproxy_from;
	struct conf_addr metrics_listen; /* Prometheus /metrics */
	bool metrics_set;
};

/* A new configuration with every default set. NULL on out of memory. */
struct conf *conf_new(void);
void conf_free(struct conf *c);

/*
 * Reads FILE into c. Every problem is appended to err (emptied first) as
 * one line "FILE:LINE: message\n" (err is always NUL-terminated; when
 * truncated to errlen it ends with "...\n"). Returns the number of
 * problems (0 = ok, -1 = cannot open or read, with the reason in err).
 */
int conf_load_file(struct conf *c, const char *path, char *err, size_t errlen);

/*
 * As conf_load_file, from len bytes of data (no NUL needed) named name in
 * messages. Returns the number of problems, never -1.
 */
int conf_load_buffer(struct conf *c, const char *name, const char *data, size_t len, char *err,
                     size_t errlen);

/*
 * Sets one key. where names the origin for messages ("file:12", "-o").
 * Repeatable keys (listen, listen_tls) append; others replace. Returns 0,
 * or -1 with the one line "WHERE: message" (no newline) in err.
 */
int conf_set(struct conf *c, const char *key, const char *value, const char *where, char *err,
             size_t errlen);

/* Parses "KEY=VALUE" as given to -o and applies it with where "-o". The
 * shell has done the quoting: the value is used as given, less the
 * whitespace around key and value. */
int conf_set_option(struct conf *c, const char *kv, char *err, size_t errlen);

/*
 * Checks the whole: at least one listener, an upstream, cert and key when a
 * client leg can use TLS, readable files. Returns 0 or -1 with the problems
 * in err, one per line.
 */
int conf_check(const struct conf *c, char *err, size_t errlen);

/* True if a (an addrtab key: IPv4 as IPv4-mapped) is in proxy_from. */
bool conf_proxy_trusted(const struct conf *c, const struct in6_addr *a);

#endif
