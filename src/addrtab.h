/*
 * Sessions per client address, for the max_per_addr limit: a hash table
 * of counts keyed by the address (IPv4 as v4-mapped IPv6), so the check at
 * accept costs O(1) however many sessions are open.
 */
#ifndef XI_ADDRTAB_H
#define XI_ADDRTAB_H

#include <netinet/in.h>
#include <sys/socket.h>

struct addrtab;

struct addrtab *addrtab_new(void);
void addrtab_free(struct addrtab *t);
/* The key of a peer address (zero for other families). */
struct in6_addr addrtab_key(const struct sockaddr *sa);
/* Sessions open from key. */
unsigned addrtab_count(const struct addrtab *t, const struct in6_addr *key);
/* One more / one fewer. addrtab_add returns -1 on out of memory. */
int addrtab_add(struct addrtab *t, const struct in6_addr *key);
void addrtab_del(struct addrtab *t, const struct in6_addr *key);

#endif
