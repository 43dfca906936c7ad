/*
 * What conf.c (the key table, loading, checking) shares with the value
 * parsers in conf_values.c. Nothing outside conf*.c includes it.
 */
#ifndef XI_CONF_INT_H
#define XI_CONF_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "conf.h"

/* A value quoted back in a message is cut here so that one bad line
 * stays one readable message line. */
#define CONF_QUOTE_MAX 64
/* DNS names are at most 253 characters (RFC 1035, without the root dot). */
#define CONF_HOST_MAX 253
/* Room for a value quoted with conf_quote() (at most 4 bytes a character). */
#define CONF_QUOTED (4 * CONF_QUOTE_MAX + 8)
#define MIB (1024 * 1024)

/* One accepted word of a key and the value it stands for. */
struct conf_word {
	const char *word;
	int value;
};

struct conf_key;

/*
 * A key's parser: applies value (never NULL, no control characters but
 * tab) to c. Returns 0, or -1 with a message in msg that does not repeat
 * the key (the caller prefixes "WHERE: KEY: ") and leaves c unchanged.
 */
typedef int conf_parse_fn(struct conf *c, const struct conf_key *k, const char *value, char *msg,
                          size_t msglen);

struct conf_key {
	const char *name;
	bool repeatable;
	conf_parse_fn *parse;
	/* What a value must be, as shown after "expected". */
	const char *help;
	/* For the shared parsers: the field, its counter (lists), its range. */
	size_t off;
	size_t count_off;
	unsigned long long min, max;
	/* For conf_parse_word: the words and the value each stands for. */
	const struct conf_word *words;
	size_t nwords;
};

/* The value parsers (conf_values.c), one per kind of key. */
conf_parse_fn conf_parse_listen, conf_parse_upstream, conf_parse_upstream_tls, conf_parse_word,
    conf_parse_bool, conf_parse_path, conf_parse_mechanisms, conf_parse_number, conf_parse_bytes,
    conf_parse_patterns, conf_parse_rate, conf_parse_domain, conf_parse_shared_state,
    conf_parse_cidrs, conf_parse_addr;

/* Shared with the parsers (conf.c): */
int conf_expected(const struct conf_key *k, const char *value, char *msg, size_t msglen);
void *conf_field(struct conf *c, size_t off);
bool conf_is_alnum(char ch);
/* Formats into msg (msglen may be 0); always NUL-terminated when msglen > 0. */
void conf_msg(char *msg, size_t msglen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
const char *conf_quote(char *out, size_t outlen, const char *v);
void conf_free_list(char **list, size_t n);

#endif
