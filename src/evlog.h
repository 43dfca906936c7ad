/*
 * The JSON-lines event log of CONTRACT.md. One line is built at a time
 * (the proxy is single-threaded): evlog_begin(), fields, evlog_end().
 * Strings are escaped so that any bytes from the wire give valid JSON
 * (invalid UTF-8 becomes U+FFFD). Lines are written by lfile.c without
 * blocking the event loop.
 */
#ifndef XI_EVLOG_H
#define XI_EVLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

/* Opens (or on reload, reopens) the log; path NULL disables it. Returns 0
 * or -1 with a reason in err; on failure the previous log stays open. */
int evlog_open(const char *path, char *err, size_t errlen);
void evlog_close(void);

/* Starts a line with "ts", "sid" and "event". */
void evlog_begin(uint64_t sid, const char *event);
/* A string field; NULL writes null. */
void evlog_str(const char *key, const char *val);
void evlog_strn(const char *key, const char *val, size_t len);
void evlog_int(const char *key, long long val);
void evlog_bool(const char *key, bool val);
void evlog_null(const char *key);
void evlog_strlist(const char *key, const char *const *vals, size_t n);
/* Ends the line and queues it. */
void evlog_end(void);

/* True while the event log cannot take what happens: its last write
 * failed (lines wait queued) or lines were lost and the log_gap line
 * that says so is not written yet (event_log_full = refuse acts on it). */
bool evlog_trouble(void);
/* Writes a pending log_gap line if the log takes it now (main.c calls it
 * once a second, so a gap is reported without waiting for an event). */
void evlog_flush_gap(void);
/* How many bytes of lines may wait for the disk (event_log_queue). */
void evlog_queue_bound(size_t bytes);
/* Event lines lost since start, and log_gap lines written about them. */
void evlog_totals(uint64_t *lost, uint64_t *gaps);

/*
 * The tap: one place that sees every event as it is made, written to the
 * file or not (metrics.c counts from it, so its counters are the event
 * log's). It gets the event's name and the few fields below, each cut at
 * EVLOG_TAP_VALUE bytes, "" when absent; "ok" is -1 when absent.
 */
#define EVLOG_TAP_VALUE 48
struct evlog_tap {
	const char *event;
	char outcome[EVLOG_TAP_VALUE], mechanism[EVLOG_TAP_VALUE], rule[EVLOG_TAP_VALUE],
	    action[EVLOG_TAP_VALUE], leg[EVLOG_TAP_VALUE], version[EVLOG_TAP_VALUE],
	    error[EVLOG_TAP_VALUE];
	int ok;
	long long ms;
};
typedef void evlog_tap_fn(const struct evlog_tap *t);
void evlog_set_tap(evlog_tap_fn *fn);

/* Appends s (len bytes, any content) to out as a JSON string with quotes.
 * Exposed for the unit tests and for the key log's neighbours. */
int evlog_json_string(struct buf *out, const char *s, size_t len);

#endif
