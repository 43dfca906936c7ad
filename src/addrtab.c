#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "addrtab.h"
#include "bounds.h"
#include "log.h"
#include "shm.h"

/* A power of two; chains stay short for the few thousand addresses a lab
 * sees, and grow gracefully beyond. */
#define ADDRTAB_BUCKETS 4096

struct addrtab_node {
	struct addrtab_node *next;
	struct in6_addr key;
	unsigned count;    /* open sessions */
	unsigned failures; /* authentication failures until fail_until */
	unsigned inflight; /* attempts sent to the server, not answered yet */
	double fail_until;
};

/*
 * The workers' table (workers = N), in the shared region: open addressing
 * with linear probing and backward-shift deletion (no tombstones), fixed
 * size. Sessions and attempts in flight are kept per (address, worker),
 * so the supervisor can forget a dead worker's share at once; the failure
 * window is kept once per address (worker ADDRTAB_ADDR). The count of an
 * address is the sum over the workers: nworkers + 1 probes under the lock.
 */
#define ADDRTAB_ADDR 0xffffu
#define ADDRTAB_SHARED_FILL (ADDRTAB_SHARED_SLOTS / 4 * 3)

struct addrtab_slot {
	struct in6_addr key;
	uint16_t worker;
	uint16_t used;
	unsigned count, inflight, failures;
	double fail_until;
};

struct addrtab_shared {
	pthread_mutex_t lock;
	uint32_t seed;
	unsigned used;
	struct addrtab_slot slot[ADDRTAB_SHARED_SLOTS];
};

struct addrtab {
	struct addrtab_node *bucket[ADDRTAB_BUCKETS];
	uint32_t seed;             /* so a client cannot aim its addresses at one chain */
	struct addrtab_shared *sh; /* NULL: this process's own table */
	unsigned worker, nworkers;
};

struct addrtab *addrtab_new(void)
{
	struct addrtab *t = calloc(1, sizeof(*t));
	if (t != NULL)
		t->seed = (uint32_t)random() | 1u;
	return t;
}

void addrtab_free(struct addrtab *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < ADDRTAB_BUCKETS; i++) {
		for (struct addrtab_node *n = t->bucket[i], *next; n != NULL; n = next) {
			next = n->next;
			free(n);
		}
	}
	free(t);
}

struct in6_addr addrtab_key(const struct sockaddr *sa)
{
	struct in6_addr k;
	memset(&k, 0, sizeof(k));
	if (sa->sa_family == AF_INET6) {
		k = ((const struct sockaddr_in6 *)sa)->sin6_addr;
	} else if (sa->sa_family == AF_INET) {
		k.s6_addr[10] = 0xff;
		k.s6_addr[11] = 0xff;
		memcpy(&k.s6_addr[12], &((const struct sockaddr_in *)sa)->sin_addr, 4);
	}
	return k;
}

static size_t addrtab_hash(const struct addrtab *t, const struct in6_addr *key)
{
	uint32_t h = t->seed;
	for (size_t i = 0; i < sizeof(key->s6_addr); i++)
		h = (h ^ key->s6_addr[i]) * 16777619u; /* FNV-1a step */
	return h & (ADDRTAB_BUCKETS - 1);
}

static struct addrtab_node **addrtab_find(struct addrtab *t, const struct in6_addr *key)
{
	struct addrtab_node **p = &t->bucket[addrtab_hash(t, key)];
	while (*p != NULL && memcmp(&(*p)->key, key, sizeof(*key)) != 0)
		p = &(*p)->next;
	return p;
}

static const struct addrtab_node *addrtab_get(const struct addrtab *t, const struct in6_addr *key)
{
	for (const struct addrtab_node *n = t->bucket[addrtab_hash(t, key)]; n; n = n->next)
		if (memcmp(&n->key, key, sizeof(*key)) == 0)
			return n;
	return NULL;
}

static unsigned local_count(const struct addrtab *t, const struct in6_addr *key)
{
	const struct addrtab_node *n = addrtab_get(t, key);
	return n ? n->count : 0;
}

/* The entry for key, created if missing; NULL on out of memory. */
static struct addrtab_node *addrtab_make(struct addrtab *t, const struct in6_addr *key)
{
	struct addrtab_node **p = addrtab_find(t, key);
	if (*p == NULL) {
		struct addrtab_node *n = calloc(1, sizeof(*n));
		if (n == NULL)
			return NULL;
		n->key = *key;
		*p = n;
	}
	return *p;
}

/* Drops the entry at *p if it has nothing left to remember at now. */
static void addrtab_prune(struct addrtab_node **p, double now)
{
	struct addrtab_node *n = *p;
	if (n->count == 0 && (n->failures == 0 || now >= n->fail_until)) {
		*p = n->next;
		free(n);
	}
}

static int local_add(struct addrtab *t, const struct in6_addr *key)
{
	struct addrtab_node *n = addrtab_make(t, key);
	if (n == NULL)
		return -1;
	n->count++;
	return 0;
}

static void local_del(struct addrtab *t, const struct in6_addr *key, double now)
{
	struct addrtab_node **p = addrtab_find(t, key);
	if (*p == NULL)
		return;
	if ((*p)->count > 0)
		(*p)->count--;
	addrtab_prune(p, now);
}

static unsigned local_failures(const struct addrtab *t, const struct in6_addr *key, double now)
{
	const struct addrtab_node *n = addrtab_get(t, key);
	return n != NULL && now < n->fail_until ? n->failures : 0;
}

static int local_fail(struct addrtab *t, const struct in6_addr *key, double now, double window)
{
	struct addrtab_node *n = addrtab_make(t, key);
	if (n == NULL)
		return -1;
	if (now >= n->fail_until) {
		n->failures = 0;
		n->fail_until = now + window;
	}
	n->failures++;
	return 0;
}

static unsigned local_inflight(const struct addrtab *t, const struct in6_addr *key)
{
	const struct addrtab_node *n = addrtab_get(t, key);
	return n ? n->inflight : 0;
}

static void local_attempt_begin(struct addrtab *t, const struct in6_addr *key)
{
	struct addrtab_node **p = addrtab_find(t, key);
	if (*p != NULL)
		(*p)->inflight++;
}

static void local_attempt_end(struct addrtab *t, const struct in6_addr *key)
{
	struct addrtab_node **p = addrtab_find(t, key);
	if (*p != NULL && (*p)->inflight > 0)
		(*p)->inflight--;
}

static void local_sweep(struct addrtab *t, double now)
{
	for (size_t i = 0; i < ADDRTAB_BUCKETS; i++) {
		struct addrtab_node **p = &t->bucket[i];
		while (*p != NULL) {
			struct addrtab_node *n = *p;
			addrtab_prune(p, now);
			if (*p == n)
				p = &n->next;
		}
	}
}

/* ---------------------------------------------------- the shared table */

static size_t sh_home(const struct addrtab_shared *sh, const struct in6_addr *key, unsigned w)
{
	uint32_t h = sh->seed;
	for (size_t i = 0; i < sizeof(key->s6_addr); i++)
		h = (h ^ key->s6_addr[i]) * 16777619u;
	h = (h ^ (w & 0xff)) * 16777619u;
	h = (h ^ (w >> 8)) * 16777619u;
	return h & (ADDRTAB_SHARED_SLOTS - 1);
}

/* The slot of (key, w), or NULL. */
static struct addrtab_slot *sh_get(struct addrtab_shared *sh, const struct in6_addr *key,
                                   unsigned w)
{
	for (size_t i = sh_home(sh, key, w);; i = (i + 1) & (ADDRTAB_SHARED_SLOTS - 1)) {
		struct addrtab_slot *e = &sh->slot[i];
		if (!e->used)
			return NULL;
		if (e->worker == w && memcmp(&e->key, key, sizeof(*key)) == 0)
			return e;
	}
}

/* The slot of (key, w), made if missing; NULL when the table is full. */
static struct addrtab_slot *sh_make(struct addrtab_shared *sh, const struct in6_addr *key,
                                    unsigned w)
{
	size_t i = sh_home(sh, key, w);
	for (;; i = (i + 1) & (ADDRTAB_SHARED_SLOTS - 1)) {
		struct addrtab_slot *e = &sh->slot[i];
		if (!e->used)
			break;
		if (e->worker == w && memcmp(&e->key, key, sizeof(*key)) == 0)
			return e;
	}
	if (sh->used >= ADDRTAB_SHARED_FILL)
		return NULL;
	struct addrtab_slot *e = &sh->slot[i];
	memset(e, 0, sizeof(*e));
	e->key = *key;
	e->worker = (uint16_t)w;
	e->used = 1;
	sh->used++;
	return e;
}

/* Empties slot i, moving back the entries of its probe run that it would
 * cut off from their home (backward-shift deletion). */
static void sh_remove(struct addrtab_shared *sh, size_t i)
{
	const size_t mask = ADDRTAB_SHARED_SLOTS - 1;
	size_t j = i;
	sh->used--;
	for (;;) {
		sh->slot[i].used = 0;
		for (;;) {
			j = (j + 1) & mask;
			if (!sh->slot[j].used)
				return;
			size_t k = sh_home(sh, &sh->slot[j].key, sh->slot[j].worker);
			/* stays if its home lies cyclically in (i, j] */
			if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
				continue;
			break;
		}
		sh->slot[i] = sh->slot[j];
		i = j;
	}
}

static bool sh_idle(const struct addrtab_slot *e, double now)
{
	return e->worker == ADDRTAB_ADDR ? now >= e->fail_until : e->count == 0 && e->inflight == 0;
}

static void sh_remove_slot(struct addrtab_shared *sh, struct addrtab_slot *e)
{
	sh_remove(sh, (size_t)(e - sh->slot));
}

/* Puts every entry back where a probe finds it: after a worker died
 * holding the lock, maybe in the middle of a backward shift (an entry
 * then sits twice, and one copy is dropped). */
static void sh_rebuild(struct addrtab_shared *sh)
{
	size_t n = 0;
	struct addrtab_slot *keep = malloc(sizeof(*keep) * ADDRTAB_SHARED_FILL);
	for (size_t i = 0; keep != NULL && i < ADDRTAB_SHARED_SLOTS; i++)
		if (sh->slot[i].used && n < ADDRTAB_SHARED_FILL)
			keep[n++] = sh->slot[i];
	memset(sh->slot, 0, sizeof(sh->slot));
	sh->used = 0;
	for (size_t i = 0; i < n; i++) {
		struct addrtab_slot *e = sh_make(sh, &keep[i].key, keep[i].worker);
		if (e != NULL && e->count == 0 && e->inflight == 0 && e->failures == 0)
			*e = keep[i];
	}
	free(keep);
	log_warnx("a worker died holding the address table: table rebuilt (%u entries)", sh->used);
}

static struct addrtab_shared *sh_lock(const struct addrtab *t)
{
	if (shm_lock(&t->sh->lock) == 1)
		sh_rebuild(t->sh);
	return t->sh;
}

static void sh_unlock(const struct addrtab *t)
{
	shm_unlock(&t->sh->lock);
}

/* Under the lock: sessions (or attempts) of key over every worker. */
static unsigned sh_sum(const struct addrtab *t, const struct in6_addr *key, bool inflight)
{
	unsigned n = 0;
	for (unsigned w = 0; w < t->nworkers; w++) {
		const struct addrtab_slot *e = sh_get(t->sh, key, w);
		if (e != NULL)
			n += inflight ? e->inflight : e->count;
	}
	return n;
}

static unsigned sh_failures_locked(struct addrtab_shared *sh, const struct in6_addr *key,
                                   double now)
{
	const struct addrtab_slot *e = sh_get(sh, key, ADDRTAB_ADDR);
	return e != NULL && now < e->fail_until ? e->failures : 0;
}

size_t addrtab_shared_size(void)
{
	return sizeof(struct addrtab_shared);
}

int addrtab_shared_init(void *area)
{
	struct addrtab_shared *sh = area;
	memset(sh, 0, sizeof(*sh));
	sh->seed = (uint32_t)random() | 1u;
	return shm_mutex_init(&sh->lock);
}

struct addrtab *addrtab_new_shared(void *area, unsigned worker, unsigned nworkers)
{
	struct addrtab *t = calloc(1, sizeof(*t));
	if (t != NULL) {
		t->sh = area;
		t->worker = worker;
		t->nworkers = nworkers;
	}
	return t;
}

void addrtab_forget_worker(struct addrtab *t, unsigned worker)
{
	if (t->sh == NULL)
		return;
	struct addrtab_shared *sh = sh_lock(t);
	for (size_t i = 0; i < ADDRTAB_SHARED_SLOTS;)
		if (sh->slot[i].used && sh->slot[i].worker == worker)
			sh_remove(sh, i); /* another entry may have moved into i */
		else
			i++;
	sh_unlock(t);
}

/* ------------------------------------------------- one API, both tables */

unsigned addrtab_count(const struct addrtab *t, const struct in6_addr *key)
{
	if (t->sh == NULL)
		return local_count(t, key);
	sh_lock(t);
	unsigned n = sh_sum(t, key, false);
	sh_unlock(t);
	return n;
}

int addrtab_add(struct addrtab *t, const struct in6_addr *key)
{
	return addrtab_add_below(t, key, 0) == 0 ? 0 : -1;
}

int addrtab_add_below(struct addrtab *t, const struct in6_addr *key, unsigned max)
{
	if (t->sh == NULL) {
		if (max > 0 && local_count(t, key) >= max)
			return 1;
		return local_add(t, key);
	}
	struct addrtab_shared *sh = sh_lock(t);
	int rc = 1;
	if (max == 0 || sh_sum(t, key, false) < max) {
		struct addrtab_slot *e = sh_make(sh, key, t->worker);
		rc = e != NULL ? (e->count++, 0) : -1;
	}
	sh_unlock(t);
	return rc;
}

void addrtab_del(struct addrtab *t, const struct in6_addr *key, double now)
{
	if (t->sh == NULL) {
		local_del(t, key, now);
		return;
	}
	struct addrtab_shared *sh = sh_lock(t);
	struct addrtab_slot *e = sh_get(sh, key, t->worker);
	if (e != NULL && e->count > 0)
		e->count--;
	if (e != NULL && sh_idle(e, now))
		sh_remove_slot(sh, e);
	sh_unlock(t);
}

unsigned addrtab_failures(const struct addrtab *t, const struct in6_addr *key, double now)
{
	if (t->sh == NULL)
		return local_failures(t, key, now);
	struct addrtab_shared *sh = sh_lock(t);
	unsigned n = sh_failures_locked(sh, key, now);
	sh_unlock(t);
	return n;
}

int addrtab_fail(struct addrtab *t, const struct in6_addr *key, double now, double window)
{
	if (t->sh == NULL)
		return local_fail(t, key, now, window);
	struct addrtab_shared *sh = sh_lock(t);
	struct addrtab_slot *e = sh_make(sh, key, ADDRTAB_ADDR);
	if (e != NULL) {
		if (now >= e->fail_until) {
			e->failures = 0;
			e->fail_until = now + window;
		}
		e->failures++;
	}
	sh_unlock(t);
	return e != NULL ? 0 : -1;
}

unsigned addrtab_inflight(const struct addrtab *t, const struct in6_addr *key)
{
	if (t->sh == NULL)
		return local_inflight(t, key);
	sh_lock(t);
	unsigned n = sh_sum(t, key, true);
	sh_unlock(t);
	return n;
}

void addrtab_attempt_begin(struct addrtab *t, const struct in6_addr *key)
{
	(void)addrtab_attempt_begin_below(t, key, 0., 0);
}

bool addrtab_attempt_begin_below(struct addrtab *t, const struct in6_addr *key, double now,
                                 unsigned limit)
{
	if (t->sh == NULL) {
		if (limit > 0 && local_failures(t, key, now) + local_inflight(t, key) >= limit)
			return false;
		local_attempt_begin(t, key);
		return true;
	}
	struct addrtab_shared *sh = sh_lock(t);
	bool ok = limit == 0 || sh_failures_locked(sh, key, now) + sh_sum(t, key, true) < limit;
	struct addrtab_slot *e = ok ? sh_get(sh, key, t->worker) : NULL;
	if (e != NULL)
		e->inflight++;
	sh_unlock(t);
	return ok;
}

void addrtab_attempt_end(struct addrtab *t, const struct in6_addr *key)
{
	if (t->sh == NULL) {
		local_attempt_end(t, key);
		return;
	}
	struct addrtab_shared *sh = sh_lock(t);
	struct addrtab_slot *e = sh_get(sh, key, t->worker);
	if (e != NULL && e->inflight > 0)
		e->inflight--;
	sh_unlock(t);
}

void addrtab_sweep(struct addrtab *t, double now)
{
	if (t->sh == NULL) {
		local_sweep(t, now);
		return;
	}
	struct addrtab_shared *sh = sh_lock(t);
	for (size_t i = 0; i < ADDRTAB_SHARED_SLOTS;)
		if (sh->slot[i].used && sh_idle(&sh->slot[i], now))
			sh_remove(sh, i);
		else
			i++;
	sh_unlock(t);
}

unsigned addrtab_entries(const struct addrtab *t)
{
	if (t->sh == NULL)
		return 0;
	sh_lock(t);
	unsigned n = t->sh->used;
	sh_unlock(t);
	return n;
}
