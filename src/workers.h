/*
 * workers = N: what the worker processes share, in one MAP_SHARED region
 * made before the first fork (shm.c): session ids drawn from one counter,
 * the sessions open in each worker (max_sessions is one limit), the
 * address table (addrtab.c) and the metrics counters (metrics.c), each
 * worker's gauges and log totals, and the reload handshake with the
 * supervisor. With one worker there is no region: every call here then
 * acts on this process alone, as before workers existed.
 */
#ifndef XI_WORKERS_H
#define XI_WORKERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a worker publishes for the others and the supervisor. */
struct workers_gauges {
	unsigned header, login, authenticated, closing; /* xmpp_inspect_sessions */
	uint64_t events_lost, log_gaps, keys_lost;      /* for the stop event */
};

/* The areas of the region other modules keep their shared tables in. */
enum workers_area_id { WORKERS_AREA_ADDRTAB = 0, WORKERS_AREA_METRICS, WORKERS_AREAS };

/* The supervisor, before it forks: maps the region for n > 1 workers,
 * with room for each area (zeroed; their modules set them up). */
int workers_setup(unsigned n, const size_t area_size[WORKERS_AREAS], char *err, size_t errlen);
/* 1 without a region. */
unsigned workers_count(void);
/* This process's worker index, -1 in the supervisor (or with one). */
int workers_self(void);
/* In a forked worker: it is worker i from now on. */
void workers_become(unsigned i);
/* An area of the region, NULL without one. */
void *workers_area(unsigned which);
/* Workers running (the supervisor counts them; 1 without a region). */
void workers_set_alive(unsigned n);
unsigned workers_alive(void);

/* The next session id: unique over every worker (and over respawns). */
uint64_t workers_next_sid(uint64_t *local);
/* Whether one more connection fits max across the workers, given this
 * worker's open ones (sessions and PROXY headers being read); if so it is
 * counted at once, so two workers cannot both take the last place. The
 * worker then calls workers_note_open with its real counts (the PROXY
 * headers being read are also the live proxy_header gauge). */
bool workers_admit(unsigned open, unsigned max);
void workers_note_open(unsigned sessions, unsigned pending);

/* Something this worker's gauges count may have changed (an event, a
 * session more or fewer); workers_touched says so once, and forgets. */
void workers_touch(void);
bool workers_touched(void);
void workers_publish(const struct workers_gauges *g);
/* The sum of the other workers' last published gauges (this one's own are
 * counted live by the caller). */
void workers_others(struct workers_gauges *sum);
/* The supervisor: the sum over every worker that ever ran. */
void workers_totals(struct workers_gauges *sum);
/* The supervisor, after worker i exited: its open sessions and gauges are
 * forgotten (its attempts: addrtab_forget_worker); its log totals are
 * kept for the stop event. */
void workers_forget(unsigned i);

/* event_log_full: whether this worker's event log fails (its last write
 * failed, or lines lost not yet reported), and whether another's does
 * (the same file on the same disk). Each worker says so at every check
 * and once a second (its gap timer). */
void workers_set_log_trouble(bool on);
bool workers_log_trouble_elsewhere(void);

/* Reloads: the supervisor starts one (a new generation) before it sends
 * SIGHUP; each worker says it applied it, ok or not. */
uint64_t workers_reload_begin(void);
uint64_t workers_reload_gen(void);
void workers_reload_done(uint64_t gen, bool ok);
/* Whether worker i applied gen (and *ok, how). */
bool workers_reload_acked(unsigned i, uint64_t gen, bool *ok);

#endif
