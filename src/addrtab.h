/*
 * What the proxy remembers per client address: open sessions (for
 * max_per_addr) and recent authentication failures (for auth_failures).
 * A hash table keyed by the address (IPv4 as v4-mapped IPv6), so each check
 * costs O(1) however many sessions are open. An entry lives while it has
 * sessions or a failure window that has not expired.
 */
#ifndef XI_ADDRTAB_H
#define XI_ADDRTAB_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct addrtab;

/* This process's own table (one worker): it grows as needed. */
struct addrtab *addrtab_new(void);
/* With workers = N: the table in shared memory (area, addrtab_shared_size
 * bytes, set up once by addrtab_shared_init before the fork), seen by
 * worker (0..nworkers-1); every call below then takes its robust lock,
 * counts over all the workers, and the table has a fixed size
 * (ADDRTAB_SHARED_SLOTS): full, adding fails (-1) and the caller refuses. */
size_t addrtab_shared_size(void);
int addrtab_shared_init(void *area);
struct addrtab *addrtab_new_shared(void *area, unsigned worker, unsigned nworkers);
/* The supervisor, after worker died: its sessions and attempts are gone
 * (failure windows stay: they belong to the address). */
void addrtab_forget_worker(struct addrtab *t, unsigned worker);
/* Entries in the shared table (0 for a private one). */
unsigned addrtab_entries(const struct addrtab *t);

void addrtab_free(struct addrtab *t);
/* The key of a peer address (zero for other families). */
struct in6_addr addrtab_key(const struct sockaddr *sa);
/* Sessions open from key. */
unsigned addrtab_count(const struct addrtab *t, const struct in6_addr *key);
/* One more / one fewer. addrtab_add returns -1 on out of memory. */
int addrtab_add(struct addrtab *t, const struct in6_addr *key);
/* One more, unless key has max sessions already (max 0: no limit): the
 * check and the add are one step across the workers. 0 added, 1 at the
 * limit, -1 out of memory or the shared table full. */
int addrtab_add_below(struct addrtab *t, const struct in6_addr *key, unsigned max);
void addrtab_del(struct addrtab *t, const struct in6_addr *key, double now);

/* Drops every entry with nothing left to remember at now (expired
 * failure windows of addresses with no session). */
void addrtab_sweep(struct addrtab *t, double now);

/* Failures from key in the window that began with the first of them
 * (0 once it has expired at now). */
unsigned addrtab_failures(const struct addrtab *t, const struct in6_addr *key, double now);
/* One more failure; a new window of window seconds starts if none is
 * running. Returns -1 on out of memory. */
int addrtab_fail(struct addrtab *t, const struct in6_addr *key, double now, double window);

/* Attempts from key that reached the server and are not answered yet.
 * auth_failures counts them as failures to come, so parallel sessions
 * cannot all guess before the first answer arrives. An entry with
 * attempts in flight has sessions, so it is never pruned under them. */
unsigned addrtab_inflight(const struct addrtab *t, const struct in6_addr *key);
/* One more attempt in flight (key must have a session: addrtab_add). */
void addrtab_attempt_begin(struct addrtab *t, const struct in6_addr *key);
/* The same, unless failures (at now) plus attempts in flight from key have
 * reached limit (0: no limit), checked and counted in one step across the
 * workers: false, and nothing counted. */
bool addrtab_attempt_begin_below(struct addrtab *t, const struct in6_addr *key, double now,
                                 unsigned limit);
/* The attempt was answered (or abandoned). */
void addrtab_attempt_end(struct addrtab *t, const struct in6_addr *key);

#endif
