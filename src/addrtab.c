#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "addrtab.h"

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

struct addrtab {
	struct addrtab_node *bucket[ADDRTAB_BUCKETS];
	uint32_t seed; /* so a client cannot aim its addresses at one chain */
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

unsigned addrtab_count(const struct addrtab *t, const struct in6_addr *key)
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

int addrtab_add(struct addrtab *t, const struct in6_addr *key)
{
	struct addrtab_node *n = addrtab_make(t, key);
	if (n == NULL)
		return -1;
	n->count++;
	return 0;
}

void addrtab_del(struct addrtab *t, const struct in6_addr *key, double now)
{
	struct addrtab_node **p = addrtab_find(t, key);
	if (*p == NULL)
		return;
	if ((*p)->count > 0)
		(*p)->count--;
	addrtab_prune(p, now);
}

unsigned addrtab_failures(const struct addrtab *t, const struct in6_addr *key, double now)
{
	const struct addrtab_node *n = addrtab_get(t, key);
	return n != NULL && now < n->fail_until ? n->failures : 0;
}

int addrtab_fail(struct addrtab *t, const struct in6_addr *key, double now, double window)
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

unsigned addrtab_inflight(const struct addrtab *t, const struct in6_addr *key)
{
	const struct addrtab_node *n = addrtab_get(t, key);
	return n ? n->inflight : 0;
}

void addrtab_attempt_begin(struct addrtab *t, const struct in6_addr *key)
{
	struct addrtab_node **p = addrtab_find(t, key);
	if (*p != NULL)
		(*p)->inflight++;
}

void addrtab_attempt_end(struct addrtab *t, const struct in6_addr *key)
{
	struct addrtab_node **p = addrtab_find(t, key);
	if (*p != NULL && (*p)->inflight > 0)
		(*p)->inflight--;
}

void addrtab_sweep(struct addrtab *t, double now)
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
