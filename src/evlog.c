#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bounds.h"
#include "buf.h"
#include "evlog.h"
#include "lfile.h"
#include "workers.h"

static struct lfile *evlog_file;
static struct buf evlog_line;
static uint64_t evlog_sid; /* of the line being built */
static char evlog_ts[32];  /* its time stamp */

/* Lines the queue refused (lfile_write), since the last log_gap line:
 * written as one log_gap before the first line the queue takes again. */
static struct {
	uint64_t events;
	uint64_t sids[EVLOG_GAP_SESSIONS]; /* distinct, in the order lost */
	size_t nsids;
	bool more; /* more sessions lost than listed */
	char since[32], until[32];
} evlog_gap;
static uint64_t evlog_lost_total, evlog_gaps_total;

int evlog_open(const char *path, char *err, size_t errlen)
{
	struct lfile *f = NULL;
	if (path != NULL && (f = lfile_open(path, err, errlen)) == NULL)
		return -1;
	lfile_close_into(evlog_file, f); /* a reopened log loses nothing queued */
	evlog_file = f;
	return 0;
}

void evlog_close(void)
{
	lfile_close(evlog_file);
	evlog_file = NULL;
	buf_free(&evlog_line);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if the
 * bytes there are not one (overlong forms, surrogates and values past
 * U+10FFFF are invalid, RFC 3629). */
static size_t evlog_utf8_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t len;
	unsigned min, cp;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2, min = 0x80, cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3, min = 0x800, cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4, min = 0x10000, cp = c & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

int evlog_json_string(struct buf *out, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	int rc = buf_add(out, "\"", 1);
	size_t i = 0;
	while (i < len && rc == 0) {
		size_t run = i;
		/* copy runs of plain bytes at once */
		while (run < len && p[run] >= 0x20 && p[run] < 0x80 && p[run] != '"' &&
		       p[run] != '\\')
			run++;
		if (run > i) {
			rc = buf_add(out, s + i, run - i);
			i = run;
			continue;
		}
		unsigned char c = p[i];
		size_t ulen;
		switch (c) {
		case '"':
			rc = buf_add(out, "\\\"", 2);
			i++;
			break;
		case '\\':
			rc = buf_add(out, "\\\\", 2);
			i++;
			break;
		case '\n':
			rc = buf_add(out, "\\n", 2);
			i++;
			break;
		case '\r':
			rc = buf_add(out, "\\r", 2);
			i++;
			break;
		case '\t':
			rc = buf_add(out, "\\t", 2);
			i++;
			break;
		default:
			if (c < 0x20) {
				rc = buf_addf(out, "\\u%04x", c);
				i++;
			} else if ((ulen = evlog_utf8_len(p + i, len - i)) > 0) {
				rc = buf_add(out, s + i, ulen);
				i += ulen;
			} else {
				rc = buf_add(out, "\\ufffd", 6);
				i++;
			}
		}
	}
	if (rc == 0)
		rc = buf_add(out, "\"", 1);
	return rc;
}

static void evlog_key(const char *key)
{
	buf_add(&evlog_line, ",", 1);
	evlog_json_string(&evlog_line, key, strlen(key));
	buf_add(&evlog_line, ":", 1);
}

/* The time of the line being built, into evlog_ts (UTC, milliseconds). */
static void evlog_stamp(void)
{
	struct timespec ts;
	struct tm tm;
	char when[40];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(evlog_ts, sizeof(evlog_ts), "%.24s.%03dZ", when,
	         (int)(ts.tv_nsec / 1000000) % 1000);
}

static evlog_tap_fn *evlog_tap_cb;
static struct evlog_tap evlog_cur;

void evlog_set_tap(evlog_tap_fn *fn)
{
	evlog_tap_cb = fn;
}

/* Keeps the fields the tap wants of the event being made. */
static void evlog_tap_str(const char *key, const char *val, size_t len)
{
	static const struct {
		const char *key;
		size_t off;
	} want[] = {
	    {"outcome", offsetof(struct evlog_tap, outcome)},
	    {"mechanism", offsetof(struct evlog_tap, mechanism)},
	    {"rule", offsetof(struct evlog_tap, rule)},
	    {"action", offsetof(struct evlog_tap, action)},
	    {"leg", offsetof(struct evlog_tap, leg)},
	    {"version", offsetof(struct evlog_tap, version)},
	    {"error", offsetof(struct evlog_tap, error)},
	};
	if (evlog_tap_cb == NULL)
		return;
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		if (strcmp(key, want[i].key) == 0) {
			char *f = (char *)&evlog_cur + want[i].off;
			size_t n = len < EVLOG_TAP_VALUE - 1 ? len : EVLOG_TAP_VALUE - 1;
			memcpy(f, val, n);
			f[n] = '\0';
		}
	}
}

void evlog_begin(uint64_t sid, const char *event)
{
	memset(&evlog_cur, 0, sizeof(evlog_cur));
	evlog_cur.event = event;
	evlog_cur.ok = -1;
	buf_reset(&evlog_line);
	if (evlog_file == NULL)
		return;
	evlog_stamp();
	evlog_sid = sid;
	buf_addf(&evlog_line, "{\"ts\":\"%s\",\"sid\":%llu,\"event\":", evlog_ts,
	         (unsigned long long)sid);
	evlog_json_string(&evlog_line, event, strlen(event));
}

void evlog_strn(const char *key, const char *val, size_t len)
{
	evlog_tap_str(key, val, len);
	if (evlog_file == NULL)
		return;
	evlog_key(key);
	evlog_json_string(&evlog_line, val, len);
}

void evlog_str(const char *key, const char *val)
{
	if (val == NULL)
		evlog_null(key);
	else
		evlog_strn(key, val, strlen(val));
}

void evlog_int(const char *key, long long val)
{
	if (strcmp(key, "ms") == 0)
		evlog_cur.ms = val;
	if (evlog_file == NULL)
		return;
	evlog_key(key);
	buf_addf(&evlog_line, "%lld", val);
}

void evlog_bool(const char *key, bool val)
{
	if (strcmp(key, "ok") == 0)
		evlog_cur.ok = val;
	if (evlog_file == NULL)
		return;
	evlog_key(key);
	buf_adds(&evlog_line, val ? "true" : "false");
}

void evlog_null(const char *key)
{
	if (evlog_file == NULL)
		return;
	evlog_key(key);
	buf_adds(&evlog_line, "null");
}

void evlog_strlist(const char *key, const char *const *vals, size_t n)
{
	if (evlog_file == NULL)
		return;
	evlog_key(key);
	buf_add(&evlog_line, "[", 1);
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			buf_add(&evlog_line, ",", 1);
		evlog_json_string(&evlog_line, vals[i], strlen(vals[i]));
	}
	buf_add(&evlog_line, "]", 1);
}

/* The line being built could not be queued: it joins the gap. */
static void evlog_lost(void)
{
	if (evlog_gap.events++ == 0)
		snprintf(evlog_gap.since, sizeof(evlog_gap.since), "%s", evlog_ts);
	snprintf(evlog_gap.until, sizeof(evlog_gap.until), "%s", evlog_ts);
	evlog_lost_total++;
	for (size_t i = evlog_gap.nsids; i > 0; i--)
		if (evlog_gap.sids[i - 1] == evlog_sid)
			return;
	if (evlog_gap.nsids < EVLOG_GAP_SESSIONS)
		evlog_gap.sids[evlog_gap.nsids++] = evlog_sid;
	else
		evlog_gap.more = true;
}

/* The log_gap line for the lines lost so far, then the line being built
 * (with_line), queued together or not at all. */
static int evlog_write_after_gap(bool with_line)
{
	struct buf g = {0};
	buf_addf(&g,
	         "{\"ts\":\"%s\",\"sid\":0,\"event\":\"log_gap\",\"events\":%llu,\"since\":\"%s\","
	         "\"until\":\"%s\",\"sessions\":[",
	         evlog_ts, (unsigned long long)evlog_gap.events, evlog_gap.since, evlog_gap.until);
	for (size_t i = 0; i < evlog_gap.nsids; i++)
		buf_addf(&g, "%s%llu", i ? "," : "", (unsigned long long)evlog_gap.sids[i]);
	buf_addf(&g, "],\"sessions_truncated\":%s}\n", evlog_gap.more ? "true" : "false");
	int rc = with_line ? buf_add(&g, buf_head(&evlog_line), evlog_line.len) : 0;
	if (rc == 0)
		rc = lfile_write(evlog_file, buf_head(&g), g.len);
	buf_free(&g);
	if (rc == 0) {
		evlog_gaps_total++;
		memset(&evlog_gap, 0, sizeof(evlog_gap));
	}
	return rc;
}

void evlog_end(void)
{
	if (evlog_tap_cb != NULL && evlog_cur.event != NULL)
		evlog_tap_cb(&evlog_cur);
	evlog_cur.event = NULL;
	if (evlog_file == NULL)
		return;
	buf_add(&evlog_line, "}\n", 2);
	int rc = evlog_gap.events > 0
	             ? evlog_write_after_gap(true)
	             : lfile_write(evlog_file, buf_head(&evlog_line), evlog_line.len);
	if (rc < 0)
		evlog_lost();
	buf_reset(&evlog_line);
}

void evlog_flush_gap(void)
{
	if (evlog_file == NULL || evlog_gap.events == 0)
		return;
	evlog_stamp();
	(void)evlog_write_after_gap(false);
}

void evlog_queue_bound(size_t bytes)
{
	if (evlog_file != NULL)
		lfile_set_bound(evlog_file, bytes);
}

bool evlog_trouble(void)
{
	if (evlog_file == NULL)
		return false;
	struct lfile_status st;
	lfile_status(evlog_file, &st);
	bool mine = st.failing || evlog_gap.events > 0;
	/* workers = N write the same file: one worker's failed write is the
	 * disk's, and the others may have nothing queued to find it out */
	workers_set_log_trouble(mine);
	return mine || workers_log_trouble_elsewhere();
}

void evlog_totals(uint64_t *lost, uint64_t *gaps)
{
	*lost = evlog_lost_total;
	*gaps = evlog_gaps_total;
}
