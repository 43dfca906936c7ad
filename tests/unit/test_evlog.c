/*
 * Unit tests of evlog.c. evlog_json_string() must turn any bytes from the
 * wire into one valid JSON string of valid UTF-8: every output here is
 * checked by a small JSON parser written for the test (RFC 8259 strings,
 * objects, arrays, numbers, literals) and a UTF-8 validator that follows
 * the table of RFC 3629 section 4, independent of evlog.c's own. Then a
 * real log file: each line one JSON object with ts, sid, event, fields.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "evlog.h"
#include "t.h"

/* ---- UTF-8 validation (RFC 3629 section 4, well-formed sequences) ---- */

static bool in(unsigned char c, unsigned lo, unsigned hi)
{
	return c >= lo && c <= hi;
}

static bool utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned char c = s[i];
		size_t need;
		unsigned lo = 0x80, hi = 0xbf; /* bounds of the second byte */
		if (c <= 0x7f) {
			i++;
			continue;
		} else if (in(c, 0xc2, 0xdf)) {
			need = 1;
		} else if (c == 0xe0) {
			need = 2, lo = 0xa0;
		} else if (in(c, 0xe1, 0xec) || in(c, 0xee, 0xef)) {
			need = 2;
		} else if (c == 0xed) {
			need = 2, hi = 0x9f;
		} else if (c == 0xf0) {
			need = 3, lo = 0x90;
		} else if (in(c, 0xf1, 0xf3)) {
			need = 3;
		} else if (c == 0xf4) {
			need = 3, hi = 0x8f;
		} else {
			return false;
		}
		if (n - i - 1 < need || !in(s[i + 1], lo, hi))
			return false;
		for (size_t k = 2; k <= need; k++)
			if (!in(s[i + k], 0x80, 0xbf))
				return false;
		i += need + 1;
	}
	return true;
}

/* ---- a small JSON parser ---- */

struct json {
	const unsigned char *p, *end;
	bool ok;
};

static void put_utf8(struct buf *b, unsigned long cp)
{
	unsigned char u[4];
	size_t n;
	if (cp < 0x80)
		u[0] = (unsigned char)cp, n = 1;
	else if (cp < 0x800)
		u[0] = (unsigned char)(0xc0 | cp >> 6), u[1] = (unsigned char)(0x80 | (cp & 0x3f)), n = 2;
	else if (cp < 0x10000)
		u[0] = (unsigned char)(0xe0 | cp >> 12), u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f)),
		u[2] = (unsigned char)(0x80 | (cp & 0x3f)), n = 3;
	else
		u[0] = (unsigned char)(0xf0 | cp >> 18), u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f)),
		u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f)), u[3] = (unsigned char)(0x80 | (cp & 0x3f)),
		n = 4;
	buf_add(b, u, n);
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static long hex4(struct json *j)
{
	if (j->end - j->p < 4)
		return -1;
	long v = 0;
	for (int i = 0; i < 4; i++) {
		int h = hexval(j->p[i]);
		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	j->p += 4;
	return v;
}

/* A string at j->p (its opening quote); the decoded bytes go to out (may be
 * NULL). Lone surrogate escapes are refused: evlog must never make them. */
static bool json_string(struct json *j, struct buf *out)
{
	if (j->p >= j->end || *j->p != '"')
		return false;
	j->p++;
	const unsigned char *start = j->p;
	while (j->p < j->end && *j->p != '"') {
		unsigned char c = *j->p;
		if (c < 0x20)
			return false;
		if (c != '\\') {
			if (out)
				buf_add(out, j->p, 1);
			j->p++;
			continue;
		}
		if (++j->p >= j->end)
			return false;
		c = *j->p++;
		const char *simple = "\"\\/bfnrt", *value = "\"\\/\b\f\n\r\t";
		const char *k = c ? strchr(simple, c) : NULL;
		if (k != NULL) {
			if (out)
				buf_add(out, value + (k - simple), 1);
			continue;
		}
		if (c != 'u')
			return false;
		long cp = hex4(j);
		if (cp < 0 || (cp >= 0xdc00 && cp <= 0xdfff))
			return false;
		if (cp >= 0xd800 && cp <= 0xdbff) {
			if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u')
				return false;
			j->p += 2;
			long lo = hex4(j);
			if (lo < 0xdc00 || lo > 0xdfff)
				return false;
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
		}
		if (out)
			put_utf8(out, (unsigned long)cp);
	}
	if (j->p >= j->end)
		return false;
	bool utf8 = utf8_valid(start, (size_t)(j->p - start));
	j->p++;
	return utf8;
}

static void json_ws(struct json *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static bool json_lit(struct json *j, const char *lit)
{
	size_t n = strlen(lit);
	if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
		return false;
	j->p += n;
	return true;
}

static bool digit(const struct json *j)
{
	return j->p < j->end && *j->p >= '0' && *j->p <= '9';
}

static bool json_number(struct json *j)
{
	if (j->p < j->end && *j->p == '-')
		j->p++;
	if (!digit(j))
		return false;
	if (*j->p == '0')
		j->p++;
	else
		while (digit(j))
			j->p++;
	if (j->p < j->end && *j->p == '.') {
		j->p++;
		if (!digit(j))
			return false;
		while (digit(j))
			j->p++;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (!digit(j))
			return false;
		while (digit(j))
			j->p++;
	}
	return true;
}

static bool json_value(struct json *j, int depth);

static bool json_array(struct json *j, int depth)
{
	j->p++;
	json_ws(j);
	if (j->p < j->end && *j->p == ']') {
		j->p++;
		return true;
	}
	for (;;) {
		if (!json_value(j, depth + 1))
			return false;
		json_ws(j);
		if (j->p >= j->end)
			return false;
		if (*j->p == ']') {
			j->p++;
			return true;
		}
		if (*j->p++ != ',')
			return false;
	}
}

static bool json_object(struct json *j, int depth)
{
	j->p++;
	json_ws(j);
	if (j->p < j->end && *j->p == '}') {
		j->p++;
		return true;
	}
	for (;;) {
		json_ws(j);
		if (!json_string(j, NULL))
			return false;
		json_ws(j);
		if (j->p >= j->end || *j->p++ != ':')
			return false;
		if (!json_value(j, depth + 1))
			return false;
		json_ws(j);
		if (j->p >= j->end)
			return false;
		if (*j->p == '}') {
			j->p++;
			return true;
		}
		if (*j->p++ != ',')
			return false;
	}
}

static bool json_value(struct json *j, int depth)
{
	if (depth > 32)
		return false;
	json_ws(j);
	if (j->p >= j->end)
		return false;
	switch (*j->p) {
	case '"':
		return json_string(j, NULL);
	case '{':
		return json_object(j, depth);
	case '[':
		return json_array(j, depth);
	case 't':
		return json_lit(j, "true");
	case 'f':
		return json_lit(j, "false");
	case 'n':
		return json_lit(j, "null");
	default:
		return json_number(j);
	}
}

/* True if s[0..n) is exactly one JSON string; its decoded bytes go to out. */
static bool is_json_string(const char *s, size_t n, struct buf *out)
{
	struct json j = {(const unsigned char *)s, (const unsigned char *)s + n, true};
	return json_string(&j, out) && j.p == j.end;
}

/* ---- evlog_json_string ---- */

/* Escapes n bytes; returns the output NUL-terminated in a static buffer. */
static const char *esc(const char *s, size_t n)
{
	static struct buf b;
	buf_reset(&b);
	if (evlog_json_string(&b, s, n) != 0)
		return "(error)";
	buf_add(&b, "", 1);
	return buf_head(&b);
}

#define ESC(lit) esc((lit), sizeof(lit) - 1)

/* Escapes, checks validity, decodes; true if the decoded text is want. */
static bool decodes_to(const char *s, size_t n, const char *want, size_t wlen)
{
	struct buf b = {0}, dec = {0};
	evlog_json_string(&b, s, n);
	bool ok = is_json_string(buf_head(&b), b.len, &dec) && dec.len == wlen &&
		  (wlen == 0 || memcmp(buf_head(&dec), want, wlen) == 0);
	buf_free(&b);
	buf_free(&dec);
	return ok;
}

#define DECODES(lit, want) decodes_to((lit), sizeof(lit) - 1, (want), sizeof(want) - 1)
#define FFFD "\xef\xbf\xbd"

/* The checker must refuse what evlog must never write, or the checks
 * below would prove nothing. */
static void test_checker(void)
{
	T_CHECK(!is_json_string("\"\xff\"", 3, NULL), "checker: refuses raw FF");
	T_CHECK(!is_json_string("\"\xc0\x80\"", 4, NULL), "checker: refuses overlong");
	T_CHECK(!is_json_string("\"\xed\xa0\x80\"", 5, NULL), "checker: refuses a surrogate");
	T_CHECK(!is_json_string("\"a\x01\"", 4, NULL), "checker: refuses a raw control");
	T_CHECK(!is_json_string("\"\\ud800\"", 8, NULL), "checker: refuses a lone \\ud800");
	T_CHECK(!is_json_string("\"\\x41\"", 6, NULL), "checker: refuses a bad escape");
	T_CHECK(!is_json_string("\"ab", 3, NULL), "checker: refuses an open string");
	T_CHECK(!is_json_string("\"a\"b", 4, NULL), "checker: refuses trailing bytes");
	T_CHECK(is_json_string("\"\\ud83d\\ude00\"", 14, NULL), "checker: accepts a pair");
}

static void test_escapes(void)
{
	T_STREQ(ESC(""), "\"\"", "json: empty string");
	T_STREQ(ESC("plain text 123"), "\"plain text 123\"", "json: plain ASCII unchanged");
	T_STREQ(ESC("a\"b"), "\"a\\\"b\"", "json: quote");
	T_STREQ(ESC("a\\b"), "\"a\\\\b\"", "json: backslash");
	T_STREQ(ESC("\\\""), "\"\\\\\\\"\"", "json: backslash then quote");
	T_STREQ(ESC("a\nb\rc\td"), "\"a\\nb\\rc\\td\"", "json: \\n \\r \\t");
	T_STREQ(ESC("\x01"), "\"\\u0001\"", "json: \\x01 -> \\u0001");
	T_STREQ(ESC("\x1f\x08\x0c"), "\"\\u001f\\u0008\\u000c\"", "json: other controls as \\u");
	T_STREQ(ESC("\x7f"), "\"\x7f\"", "json: DEL kept (valid in JSON)");
	T_STREQ(ESC("/"), "\"/\"", "json: slash unchanged");
	T_STREQ(ESC("\xc3\xa9t\xc3\xa9"), "\"\xc3\xa9t\xc3\xa9\"", "json: 2-byte UTF-8 kept");
	T_STREQ(ESC("\xe2\x82\xac"), "\"\xe2\x82\xac\"", "json: 3-byte UTF-8 kept");
	T_STREQ(ESC("\xf0\x9f\x98\x80"), "\"\xf0\x9f\x98\x80\"", "json: 4-byte UTF-8 kept");
	T_STREQ(ESC("\xf4\x8f\xbf\xbf"), "\"\xf4\x8f\xbf\xbf\"", "json: U+10FFFF kept");
	T_STREQ(ESC("\xef\xbf\xbf"), "\"\xef\xbf\xbf\"", "json: U+FFFF kept");
	T_STREQ(ESC("\xed\x9f\xbf"), "\"\xed\x9f\xbf\"", "json: U+D7FF kept");
	T_STREQ(ESC("\xee\x80\x80"), "\"\xee\x80\x80\"", "json: U+E000 kept");

	/* invalid UTF-8 becomes U+FFFD, the text around it is kept */
	T_STREQ(ESC("a\x80z"), "\"a\\ufffdz\"", "json: lone continuation byte");
	T_STREQ(ESC("\xff"), "\"\\ufffd\"", "json: byte FF");
	T_STREQ(ESC("\xfe"), "\"\\ufffd\"", "json: byte FE");
	T_STREQ(ESC("\xc0\x80"), "\"\\ufffd\\ufffd\"", "json: overlong C0 80 (NUL)");
	T_STREQ(ESC("\xc1\xbf"), "\"\\ufffd\\ufffd\"", "json: overlong C1 BF");
	T_STREQ(ESC("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"", "json: surrogate ED A0 80");
	T_STREQ(ESC("\xed\xbf\xbf"), "\"\\ufffd\\ufffd\\ufffd\"", "json: surrogate ED BF BF");
	T_STREQ(ESC("\xf5\x80\x80\x80"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\"", "json: lead byte F5");
	T_CHECK(strstr(ESC("\xf4\x90\x80\x80"), "\\ufffd") != NULL &&
			strchr(ESC("\xf4\x90\x80\x80"), '\xf4') == NULL,
		"json: F4 90 80 80 (past U+10FFFF)");
	T_CHECK(strstr(ESC("\xe0\x80\xaf"), "\\ufffd") != NULL &&
			strchr(ESC("\xe0\x80\xaf"), '\xe0') == NULL,
		"json: overlong E0 80 AF");
	T_CHECK(strstr(ESC("\xf0\x80\x80\xaf"), "\\ufffd") != NULL &&
			strchr(ESC("\xf0\x80\x80\xaf"), '\xf0') == NULL,
		"json: overlong F0 80 80 AF");
	const char *t = ESC("ab\xe2\x82");
	T_CHECK(strncmp(t, "\"ab\\ufffd", 9) == 0 && strchr(t, '\xe2') == NULL &&
			strchr(t, '\x82') == NULL,
		"json: truncated sequence at the end");
	t = ESC("\xf0\x9f\x98");
	T_CHECK(strncmp(t, "\"\\ufffd", 7) == 0 && strchr(t, '\xf0') == NULL,
		"json: truncated 4-byte sequence at the end");
	t = ESC("\xe2\x82z");
	T_CHECK(strstr(t, "\\ufffd") != NULL && strstr(t, "z\"") != NULL,
		"json: truncated sequence before ASCII keeps the ASCII");
	t = ESC("\xc3\xc3\xa9");
	T_CHECK(strcmp(t, "\"\\ufffd\xc3\xa9\"") == 0, "json: bad lead then a valid sequence");

	/* embedded NUL: the length is what counts */
	T_STREQ(esc("a\0b", 3), "\"a\\u0000b\"", "json: embedded NUL given len");
	T_STREQ(esc("abc", 1), "\"a\"", "json: len shorter than the string");
	T_STREQ(esc(NULL, 0), "\"\"", "json: NULL with len 0");

	T_CHECK(DECODES("q\"b\\s\x01\n\t\x7f\xc3\xa9", "q\"b\\s\x01\n\t\x7f\xc3\xa9"),
		"json: decodes back to the input");
	T_CHECK(DECODES("x\xc0\x80y", "x" FFFD FFFD "y"), "json: decodes with U+FFFD");

	/* appends, never replaces */
	struct buf b = {0};
	buf_adds(&b, "k=");
	evlog_json_string(&b, "v", 1);
	T_CHECK(b.len == 5 && memcmp(buf_head(&b), "k=\"v\"", 5) == 0, "json: appends");
	buf_free(&b);
}

/* A xorshift generator: the same sequence on every run. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Every 1- and 2-byte input, and many random ones: valid JSON of valid
 * UTF-8, and valid UTF-8 input comes back unchanged. */
static void test_all_inputs(void)
{
	struct buf b = {0}, dec = {0};
	unsigned bad = 0, changed = 0;
	unsigned char s[64];

	for (unsigned x = 0; x < 65536 + 256; x++) {
		size_t n = x < 256 ? 1 : 2;
		s[0] = (unsigned char)(x < 256 ? x : (x - 256) >> 8);
		s[1] = (unsigned char)((x - 256) & 0xff);
		buf_reset(&b), buf_reset(&dec);
		evlog_json_string(&b, (const char *)s, n);
		if (!is_json_string(buf_head(&b), b.len, &dec) || !utf8_valid((const unsigned char *)buf_head(&b), b.len))
			bad++;
		else if (utf8_valid(s, n) && (dec.len != n || memcmp(buf_head(&dec), s, n) != 0))
			changed++;
	}
	T_CHECK(bad == 0, "json: all 1- and 2-byte inputs give valid JSON and UTF-8");
	T_CHECK(changed == 0, "json: all valid 1- and 2-byte inputs decode unchanged");

	bad = changed = 0;
	unsigned valid_inputs = 0;
	for (unsigned iter = 0; iter < 200000; iter++) {
		size_t n = (size_t)(rng() % sizeof(s));
		uint64_t mode = rng() % 4;
		for (size_t i = 0; i < n; i++) {
			uint64_t r = rng();
			/* mostly high bytes and control characters: the hard cases */
			s[i] = (unsigned char)(mode == 0 ? r : mode == 1 ? 0x80 | (r & 0x7f)
						       : mode == 2 ? (r & 1 ? 0xe0 | (r >> 8 & 0x1f) : 0x80 | (r >> 8 & 0x3f))
								   : (r & 0x3f));
		}
		buf_reset(&b), buf_reset(&dec);
		evlog_json_string(&b, (const char *)s, n);
		if (!is_json_string(buf_head(&b), b.len, &dec) || !utf8_valid((const unsigned char *)buf_head(&b), b.len))
			bad++;
		else if (utf8_valid(s, n)) {
			valid_inputs++;
			if (dec.len != n || memcmp(buf_head(&dec), s, n) != 0)
				changed++;
		}
	}
	T_CHECK(bad == 0, "json: 200000 random inputs give valid JSON and UTF-8");
	T_CHECK(changed == 0 && valid_inputs > 1000, "json: random valid UTF-8 decodes unchanged");

	/* valid random code points, encoded by the test */
	changed = 0;
	for (unsigned iter = 0; iter < 20000; iter++) {
		buf_reset(&dec);
		struct buf src = {0};
		for (int k = 0; k < 8; k++) {
			unsigned long cp = (unsigned long)(rng() % 0x110000);
			if (cp >= 0xd800 && cp <= 0xdfff)
				cp = 0xfffd;
			put_utf8(&src, cp);
		}
		buf_reset(&b);
		evlog_json_string(&b, buf_head(&src), src.len);
		if (!is_json_string(buf_head(&b), b.len, &dec) || dec.len != src.len ||
		    memcmp(buf_head(&dec), buf_head(&src), src.len) != 0)
			changed++;
		buf_free(&src);
	}
	T_CHECK(changed == 0, "json: random code points round trip");
	buf_free(&b);
	buf_free(&dec);
}

/* ---- the log file ---- */

/* One field of a parsed line: key, and the value as written. */
struct field {
	char key[64];
	char raw[256];
};

/* Parses one line as a JSON object; fills fields with the raw text of each
 * top-level value. Returns the number of fields, or -1. */
static int parse_line(const char *line, size_t len, struct field *f, int max)
{
	struct json j = {(const unsigned char *)line, (const unsigned char *)line + len, true};
	int n = 0;
	json_ws(&j);
	if (j.p >= j.end || *j.p != '{')
		return -1;
	j.p++;
	json_ws(&j);
	if (j.p < j.end && *j.p == '}')
		return j.p + 1 == j.end ? 0 : -1;
	for (;;) {
		if (n == max)
			return -1;
		struct buf key = {0};
		json_ws(&j);
		bool ok = json_string(&j, &key) && key.len < sizeof(f[n].key);
		if (ok) {
			memcpy(f[n].key, buf_head(&key), key.len);
			f[n].key[key.len] = '\0';
		}
		buf_free(&key);
		if (!ok)
			return -1;
		json_ws(&j);
		if (j.p >= j.end || *j.p++ != ':')
			return -1;
		json_ws(&j);
		const unsigned char *v = j.p;
		if (!json_value(&j, 1))
			return -1;
		size_t vl = (size_t)(j.p - v);
		if (vl >= sizeof(f[n].raw))
			return -1;
		memcpy(f[n].raw, v, vl);
		f[n].raw[vl] = '\0';
		n++;
		json_ws(&j);
		if (j.p >= j.end)
			return -1;
		if (*j.p == '}') {
			j.p++;
			return j.p == j.end ? n : -1;
		}
		if (*j.p++ != ',')
			return -1;
	}
}

static const char *get(const struct field *f, int n, const char *key)
{
	for (int i = 0; i < n; i++)
		if (strcmp(f[i].key, key) == 0)
			return f[i].raw;
	return NULL;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" with quotes, and close to now. */
static bool ts_ok(const char *raw, time_t before, time_t after)
{
	const char *pat = "\"dddd-dd-ddTdd:dd:dd.dddZ\"";
	if (raw == NULL || strlen(raw) != strlen(pat))
		return false;
	for (size_t i = 0; pat[i]; i++) {
		if (pat[i] == 'd' ? !(raw[i] >= '0' && raw[i] <= '9') : raw[i] != pat[i])
			return false;
	}
	struct tm tm = {0};
	if (sscanf(raw + 1, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
		   &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
		return false;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	time_t t = timegm(&tm);
	return t >= before - 1 && t <= after + 1;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	if (fp == NULL)
		return NULL;
	struct buf b = {0};
	char tmp[4096];
	size_t n;
	while ((n = fread(tmp, 1, sizeof(tmp), fp)) > 0)
		buf_add(&b, tmp, n);
	fclose(fp);
	buf_add(&b, "", 1);
	*len = b.len - 1;
	char *r = malloc(b.len);
	memcpy(r, buf_head(&b), b.len);
	buf_free(&b);
	return r;
}

static void test_file(void)
{
	char path[256], path2[300], err[256] = "";
	const char *dir = getenv("TMPDIR");
	snprintf(path, sizeof(path), "%s/test_evlog.XXXXXX", dir ? dir : "/tmp");
	int fd = mkstemp(path);
	if (fd < 0) {
		perror("mkstemp");
		abort();
	}
	close(fd);
	snprintf(path2, sizeof(path2), "%s.second", path);

	time_t before = time(NULL);
	T_CHECK(evlog_open(path, err, sizeof(err)) == 0, "file: evlog_open");
	evlog_begin(7, "session_start");
	evlog_str("client", "192.0.2.1:5222");
	evlog_str("hostile", "a\"b\\c\n\x01\xff");
	evlog_str("missing", NULL);
	evlog_strn("nul", "x\0y", 3);
	evlog_int("negative", -42);
	evlog_int("big", 9007199254740993LL);
	evlog_bool("yes", true);
	evlog_bool("no", false);
	evlog_null("nothing");
	const char *const mechs[] = {"PLAIN", "SCRAM-SHA-1", "bad\"\xc0"};
	evlog_strlist("mechanisms", mechs, 3);
	evlog_strlist("empty", NULL, 0);
	evlog_end();

	evlog_begin(18446744073709551615ULL, "weird \"event\"\n");
	evlog_end();

	evlog_begin(0, "three");
	evlog_str("k\"ey", "v");
	evlog_end();

	/* a failed reopen keeps the old log */
	char err2[256] = "";
	T_CHECK(evlog_open("/nonexistent-dir-xi/x.log", err2, sizeof(err2)) == -1 && err2[0],
		"file: reopen on a bad path fails with a reason");
	evlog_begin(9, "after_failed_reopen");
	evlog_end();

	/* reopen on another file: later lines go there */
	T_CHECK(evlog_open(path2, err, sizeof(err)) == 0, "file: reopen elsewhere");
	evlog_begin(10, "second_file");
	evlog_end();
	/* disabled: lines go nowhere */
	T_CHECK(evlog_open(NULL, err, sizeof(err)) == 0, "file: evlog_open(NULL) disables");
	evlog_begin(11, "nowhere");
	evlog_str("k", "v");
	evlog_end();
	evlog_close();
	time_t after = time(NULL);

	size_t len = 0;
	char *text = read_file(path, &len);
	T_CHECK(text != NULL, "file: readable");
	if (text == NULL)
		return;
	T_CHECK(len > 0 && text[len - 1] == '\n', "file: ends with a newline");
	T_CHECK(utf8_valid((const unsigned char *)text, len), "file: valid UTF-8");

	struct field f[32];
	char *line = text;
	int lineno = 0;
	const char *events[] = {"\"session_start\"", "\"weird \\\"event\\\"\\n\"", "\"three\"",
				"\"after_failed_reopen\""};
	const char *sids[] = {"7", "18446744073709551615", "0", "9"};
	while (line < text + len) {
		char *nl = memchr(line, '\n', (size_t)(text + len - line));
		if (nl == NULL)
			break;
		int n = parse_line(line, (size_t)(nl - line), f, 32);
		char name[96];
		snprintf(name, sizeof(name), "file: line %d is one JSON object", lineno + 1);
		T_CHECK(n >= 3, name);
		if (n >= 3 && lineno < 4) {
			snprintf(name, sizeof(name), "file: line %d starts with ts, sid, event",
				 lineno + 1);
			T_CHECK(strcmp(f[0].key, "ts") == 0 && strcmp(f[1].key, "sid") == 0 &&
					strcmp(f[2].key, "event") == 0,
				name);
			snprintf(name, sizeof(name), "file: line %d ts is RFC 3339 UTC with ms",
				 lineno + 1);
			T_CHECK(ts_ok(f[0].raw, before, after), name);
			snprintf(name, sizeof(name), "file: line %d sid", lineno + 1);
			T_STREQ(f[1].raw, sids[lineno], name);
			snprintf(name, sizeof(name), "file: line %d event", lineno + 1);
			T_STREQ(f[2].raw, events[lineno], name);
		}
		if (lineno == 0 && n >= 3) {
			T_STREQ(get(f, n, "client"), "\"192.0.2.1:5222\"", "file: str field");
			T_STREQ(get(f, n, "hostile"), "\"a\\\"b\\\\c\\n\\u0001\\ufffd\"",
				"file: hostile str field escaped");
			T_STREQ(get(f, n, "missing"), "null", "file: NULL str is null");
			T_STREQ(get(f, n, "nul"), "\"x\\u0000y\"", "file: strn with a NUL");
			T_STREQ(get(f, n, "negative"), "-42", "file: negative int");
			T_STREQ(get(f, n, "big"), "9007199254740993", "file: big int");
			T_STREQ(get(f, n, "yes"), "true", "file: bool true");
			T_STREQ(get(f, n, "no"), "false", "file: bool false");
			T_STREQ(get(f, n, "nothing"), "null", "file: null field");
			T_STREQ(get(f, n, "mechanisms"), "[\"PLAIN\",\"SCRAM-SHA-1\",\"bad\\\"\\ufffd\"]",
				"file: strlist");
			T_STREQ(get(f, n, "empty"), "[]", "file: empty strlist");
			T_CHECK(n == 14, "file: line 1 has exactly its 14 fields");
		}
		if (lineno == 2 && n >= 4)
			T_CHECK(strcmp(f[3].key, "k\"ey") == 0 && strcmp(f[3].raw, "\"v\"") == 0,
				"file: key escaped");
		lineno++;
		line = nl + 1;
	}
	T_CHECK(lineno == 4, "file: four lines in the first file");
	free(text);

	text = read_file(path2, &len);
	T_CHECK(text != NULL && strstr(text, "\"second_file\"") != NULL &&
			strstr(text, "nowhere") == NULL && strchr(text, '\n') == text + len - 1,
		"file: reopened file has the one line written to it");
	free(text);
	unlink(path);
	unlink(path2);
}

/* Polls cond for up to 3 s (the writer thread works apart). */
static bool eventually(bool (*cond)(void))
{
	for (int i = 0; i < 300; i++) {
		if (cond())
			return true;
		usleep(10000);
	}
	return cond();
}

static bool trouble(void)
{
	return evlog_trouble();
}

/*
 * A log that cannot be written (/dev/full: every write is ENOSPC): lines
 * wait queued, past the queue bound they are counted lost, and a reopen on
 * a writable file hands the queued ones over and reports the lost ones in
 * one log_gap line, before anything later: nothing is lost silently.
 */
static void test_full_disk(void)
{
	char path[256], err[256] = "";
	const char *dir = getenv("TMPDIR");
	snprintf(path, sizeof(path), "%s/test_evlog_full.XXXXXX", dir ? dir : "/tmp");
	int fd = mkstemp(path);
	if (fd < 0) {
		perror("mkstemp");
		abort();
	}
	close(fd);
	if (access("/dev/full", W_OK) != 0) {
		printf("SKIP: full disk: no /dev/full\n");
		return;
	}
	T_CHECK(evlog_open("/dev/full", err, sizeof(err)) == 0, "full disk: open /dev/full");
	evlog_queue_bound(16 * 1024);
	evlog_begin(1, "queued");
	evlog_end();
	T_CHECK(eventually(trouble), "full disk: the log reports trouble once a write fails");
	/* ~200 bytes each: the 16 KiB queue takes some, the rest are lost */
	char pad[160];
	memset(pad, 'p', sizeof(pad) - 1);
	pad[sizeof(pad) - 1] = '\0';
	for (unsigned i = 0; i < 200; i++) {
		evlog_begin(100 + i % 3, "filler");
		evlog_str("pad", pad);
		evlog_end();
	}
	uint64_t lost, gaps;
	evlog_totals(&lost, &gaps);
	T_CHECK(lost > 0 && gaps == 0, "full disk: lines past the bound are counted lost");
	/* a reopen (SIGHUP) on a writable file: the queued lines go there */
	T_CHECK(evlog_open(path, err, sizeof(err)) == 0, "full disk: reopen on a writable file");
	evlog_flush_gap();
	evlog_begin(2, "after");
	evlog_end();
	uint64_t lost2, gaps2;
	evlog_totals(&lost2, &gaps2);
	evlog_close();

	size_t len = 0;
	char *text = read_file(path, &len);
	T_CHECK(text != NULL && len > 0 && text[len - 1] == '\n', "full disk: whole lines");
	if (text == NULL)
		return;
	char *gap = strstr(text, "\"event\":\"log_gap\"");
	char *queued = strstr(text, "\"event\":\"queued\"");
	char *after = strstr(text, "\"event\":\"after\"");
	T_CHECK(queued != NULL && gap != NULL && after != NULL && queued < gap && gap < after,
	        "full disk: the queued line, then the gap, then what came after");
	char want[64];
	snprintf(want, sizeof(want), "\"events\":%llu,", (unsigned long long)lost);
	T_CHECK(gap != NULL && strstr(gap, want) != NULL && gaps2 == 1 && lost2 == lost,
	        "full disk: the gap counts every lost line");
	char *sessions = gap != NULL ? strstr(gap, "\"sessions\":[") : NULL;
	char *end = sessions != NULL ? strchr(sessions, ']') : NULL;
	T_CHECK(end != NULL && end - sessions == (long)strlen("\"sessions\":[100,101,102") &&
	            memmem(sessions, (size_t)(end - sessions), "100", 3) &&
	            memmem(sessions, (size_t)(end - sessions), "101", 3) &&
	            memmem(sessions, (size_t)(end - sessions), "102", 3),
	        "full disk: the gap names the sessions that lost lines, each once");
	size_t fillers = 0;
	for (char *p = text; (p = strstr(p, "\"event\":\"filler\"")) != NULL; p++)
		fillers++;
	T_CHECK(fillers + lost == 200, "full disk: every filler is written or counted lost");
	free(text);
	unlink(path);
}

int main(void)
{
	test_checker();
	test_escapes();
	test_all_inputs();
	test_file();
	test_full_disk();
	T_DONE();
}
