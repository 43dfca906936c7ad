#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "bounds.h"
#include "shm.h"
#include "workers.h"

struct workers_slot {
	_Atomic unsigned open;    /* sessions and PROXY headers of this worker */
	_Atomic unsigned pending; /* of which PROXY headers (a live gauge) */
	struct workers_gauges g;
	_Atomic uint64_t reload_gen;
	_Atomic bool reload_ok;
};

struct workers_region {
	pthread_mutex_t lock; /* admission: the sum of open and the add are one step */
	_Atomic uint64_t sid;
	_Atomic uint64_t reload_gen;
	_Atomic unsigned alive;       /* workers running, as the supervisor counts them */
	_Atomic uint64_t log_trouble; /* a bit per worker whose event log fails */
	unsigned n;
	struct workers_gauges retired; /* log totals of the workers that exited */
	struct workers_slot slot[WORKERS_MAX];
	size_t area_off[WORKERS_AREAS];
};

static struct workers_region *wr;
static int workers_me = -1;
static bool workers_dirty; /* this worker's gauges may have changed */

void workers_touch(void)
{
	workers_dirty = true;
}

bool workers_touched(void)
{
	bool was = workers_dirty;
	workers_dirty = false;
	return was;
}

/* Offsets in the region, each area aligned for anything. */
static size_t workers_align(size_t n)
{
	return (n + 63) & ~(size_t)63;
}

int workers_setup(unsigned n, const size_t area_size[WORKERS_AREAS], char *err, size_t errlen)
{
	if (n <= 1)
		return 0;
	size_t off[WORKERS_AREAS], total = workers_align(sizeof(struct workers_region));
	for (size_t i = 0; i < WORKERS_AREAS; i++) {
		off[i] = total;
		total += workers_align(area_size[i]);
	}
	struct workers_region *r = shm_map(total, err, errlen);
	if (r == NULL)
		return -1;
	r->n = n;
	memcpy(r->area_off, off, sizeof(off));
	if (shm_mutex_init(&r->lock) < 0) {
		snprintf(err, errlen, "shared memory: no robust process-shared mutex");
		return -1;
	}
	wr = r;
	return 0;
}

unsigned workers_count(void)
{
	return wr != NULL ? wr->n : 1;
}

int workers_self(void)
{
	return workers_me;
}

void workers_become(unsigned i)
{
	workers_me = (int)i;
}

void *workers_area(unsigned which)
{
	return wr != NULL && which < WORKERS_AREAS ? (char *)wr + wr->area_off[which] : NULL;
}

void workers_set_alive(unsigned n)
{
	if (wr != NULL)
		atomic_store(&wr->alive, n);
}

unsigned workers_alive(void)
{
	return wr != NULL ? atomic_load(&wr->alive) : 1;
}

uint64_t workers_next_sid(uint64_t *local)
{
	if (wr == NULL)
		return ++*local;
	return atomic_fetch_add(&wr->sid, 1) + 1;
}

bool workers_admit(unsigned open, unsigned max)
{
	if (wr == NULL || workers_me < 0)
		return open < max;
	shm_lock(&wr->lock); /* an owner that died left nothing half-done: one store */
	unsigned sum = 0;
	for (unsigned i = 0; i < wr->n; i++)
		sum += i == (unsigned)workers_me ? open : atomic_load(&wr->slot[i].open);
	bool ok = sum < max;
	if (ok)
		atomic_store(&wr->slot[workers_me].open, open + 1);
	shm_unlock(&wr->lock);
	return ok;
}

void workers_note_open(unsigned sessions, unsigned pending)
{
	workers_dirty = true;
	if (wr != NULL && workers_me >= 0) {
		atomic_store(&wr->slot[workers_me].open, sessions + pending);
		atomic_store(&wr->slot[workers_me].pending, pending);
	}
}

void workers_publish(const struct workers_gauges *g)
{
	if (wr == NULL || workers_me < 0)
		return;
	shm_lock(&wr->lock);
	wr->slot[workers_me].g = *g;
	shm_unlock(&wr->lock);
}

static void workers_add(struct workers_gauges *to, const struct workers_gauges *g)
{
	to->header += g->header;
	to->login += g->login;
	to->authenticated += g->authenticated;
	to->closing += g->closing;
	to->events_lost += g->events_lost;
	to->log_gaps += g->log_gaps;
	to->keys_lost += g->keys_lost;
}

void workers_others(struct workers_gauges *sum)
{
	memset(sum, 0, sizeof(*sum));
	if (wr == NULL)
		return;
	shm_lock(&wr->lock);
	for (unsigned i = 0; i < wr->n; i++)
		if ((int)i != workers_me) {
			workers_add(sum, &wr->slot[i].g);
			sum->header += atomic_load(&wr->slot[i].pending) - wr->slot[i].g.header;
		}
	shm_unlock(&wr->lock);
}

void workers_totals(struct workers_gauges *sum)
{
	memset(sum, 0, sizeof(*sum));
	if (wr == NULL)
		return;
	shm_lock(&wr->lock);
	for (unsigned i = 0; i < wr->n; i++)
		workers_add(sum, &wr->slot[i].g);
	workers_add(sum, &wr->retired);
	shm_unlock(&wr->lock);
}

void workers_forget(unsigned i)
{
	if (wr == NULL || i >= wr->n)
		return;
	shm_lock(&wr->lock);
	struct workers_gauges logs = {.events_lost = wr->slot[i].g.events_lost,
	                              .log_gaps = wr->slot[i].g.log_gaps,
	                              .keys_lost = wr->slot[i].g.keys_lost};
	workers_add(&wr->retired, &logs);
	memset(&wr->slot[i].g, 0, sizeof(wr->slot[i].g));
	atomic_store(&wr->slot[i].open, 0);
	atomic_store(&wr->slot[i].pending, 0);
	atomic_fetch_and(&wr->log_trouble, ~((uint64_t)1 << i));
	shm_unlock(&wr->lock);
}

void workers_set_log_trouble(bool on)
{
	if (wr == NULL || workers_me < 0)
		return;
	uint64_t bit = (uint64_t)1 << workers_me;
	if (on)
		atomic_fetch_or(&wr->log_trouble, bit);
	else
		atomic_fetch_and(&wr->log_trouble, ~bit);
}

bool workers_log_trouble_elsewhere(void)
{
	if (wr == NULL)
		return false;
	uint64_t mine = workers_me >= 0 ? (uint64_t)1 << workers_me : 0;
	return (atomic_load(&wr->log_trouble) & ~mine) != 0;
}

uint64_t workers_reload_begin(void)
{
	return wr != NULL ? atomic_fetch_add(&wr->reload_gen, 1) + 1 : 0;
}

uint64_t workers_reload_gen(void)
{
	return wr != NULL ? atomic_load(&wr->reload_gen) : 0;
}

void workers_reload_done(uint64_t gen, bool ok)
{
	if (wr == NULL || workers_me < 0)
		return;
	atomic_store(&wr->slot[workers_me].reload_ok, ok);
	atomic_store(&wr->slot[workers_me].reload_gen, gen);
}

bool workers_reload_acked(unsigned i, uint64_t gen, bool *ok)
{
	if (wr == NULL || i >= wr->n || atomic_load(&wr->slot[i].reload_gen) < gen)
		return false;
	*ok = atomic_load(&wr->slot[i].reload_ok);
	return true;
}
