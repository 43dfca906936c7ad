/*
 * shared_state: the policy state several proxies share in Redis, so that
 * auth_failures and max_per_addr are one limit for all of them, not one
 * per instance. Through hiredis' asynchronous API on the proxy's own loop
 * (its libev adapter): nothing here blocks, and every lookup is answered
 * exactly once, by Redis or, after SHARED_LOOKUP_TIMEOUT, as DOWN.
 *
 * Each check-and-reserve is one Lua script, which Redis runs alone: two
 * instances racing cannot both pass the last free place. What is kept
 * (sharedconf.h names the keys) expires by itself: failure windows with
 * their window, attempts in flight at the login timeout, an instance's
 * session counts SHARED_INSTANCE_TTL_MS after its last heartbeat, so an
 * instance that is killed leaves nothing behind for long. On every new
 * connection the instance writes its session counts afresh (a Redis that
 * restarted empty, or an outage during which sessions came and went).
 *
 * The link's life is logged as process events "shared_state" (state up
 * or down, once per outage and once per recovery); whether a DOWN answer
 * lets a login go on (with the local counts of addrtab.c, which always
 * run) is the caller's: shared_state_fail.
 */
#ifndef XI_SHAREDSTATE_H
#define XI_SHAREDSTATE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

struct conf;
struct proxy;
struct sharedstate;
struct sharedstate_req;

enum sharedstate_answer {
	SHAREDSTATE_YES = 0, /* below the limit: counted (or reserved) */
	SHAREDSTATE_NO,      /* the limit is reached across the instances */
	SHAREDSTATE_DOWN,    /* no answer: Redis is down, stuck, or said an error */
};

/* Fires once with the answer to a lookup; n is what Redis counted
 * (sessions, or failures plus attempts in flight), 0 with DOWN. */
typedef void sharedstate_cb(void *ctx, enum sharedstate_answer a, unsigned n);

/* Resolves c's shared_state host (at start and reload only: the loop never
 * waits for DNS). Returns 0, or -1 with the reason in err. */
int sharedstate_resolve(struct conf *c, char *err, size_t errlen);
/* Makes px->shared follow px->conf after a (re)load: unchanged, started,
 * moved to another Redis, or stopped. */
void sharedstate_apply(struct proxy *px);
/* At exit: this instance's registration is removed, the link closed;
 * owners of lookups still waiting hear nothing more. */
void sharedstate_free(struct sharedstate *ss);

/* Configured and answering. */
bool sharedstate_up(const struct sharedstate *ss);
/* The gauge xmpp_inspect_shared_state_up (metrics_set_shared_state_probe):
 * 1 when px's shared state answers or none is configured, else 0. */
int sharedstate_probe(const struct proxy *px);

/*
 * A new session from key (max_per_addr): are fewer than max open across
 * the instances? YES has counted it, and set *epoch for sharedstate_leave.
 * Returns NULL when the answer is DOWN at once (no link), else cb fires
 * later, unless sharedstate_cancel() comes first.
 */
struct sharedstate_req *sharedstate_admit(struct sharedstate *ss, const struct in6_addr *key,
                                          unsigned max, unsigned *epoch, sharedstate_cb *cb,
                                          void *ctx);
/* A session counted in epoch is gone. */
void sharedstate_leave(struct sharedstate *ss, const struct in6_addr *key, unsigned epoch);

/*
 * An attempt from key about to reach the server (auth_failures): are its
 * recent failures plus attempts in flight below max? YES has reserved an
 * attempt in flight for sid, until sharedstate_attempt_end() or
 * sharedstate_fail(), or ttl_ms. NULL and callbacks as sharedstate_admit.
 */
struct sharedstate_req *sharedstate_attempt(struct sharedstate *ss, const struct in6_addr *key,
                                            uint64_t sid, unsigned max, long long ttl_ms,
                                            sharedstate_cb *cb, void *ctx);
void sharedstate_attempt_end(struct sharedstate *ss, const struct in6_addr *key, uint64_t sid);
/* A failed login from key in a window of window seconds (started by the
 * first failure). With held, sid's attempt in flight ends in the same
 * script: no other instance ever sees it neither failed nor in flight. */
void sharedstate_fail(struct sharedstate *ss, const struct in6_addr *key, unsigned window,
                      uint64_t sid, bool held);

/* The owner of r is going away: its answer is dropped (a reservation it
 * would have made is given back). NULL is ignored. */
void sharedstate_cancel(struct sharedstate_req *r);

#endif
