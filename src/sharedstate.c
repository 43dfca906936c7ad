#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>
#include <hiredis/adapters/libev.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "bounds.h"
#include "conf.h"
#include "evlog.h"
#include "log.h"
#include "session.h"
#include "sharedconf.h"
#include "sharedstate.h"

/*
 * The scripts. Each starts by reading Redis' own clock (one clock for
 * every instance; replicate_commands lets a script that read the clock
 * write, on Redis before 5, and does nothing after). Instances and
 * attempts in flight are sorted sets scored by their expiry in ms.
 */
#define SS_NOW                                                                                     \
	"if redis.replicate_commands then redis.replicate_commands() end "                         \
	"local t = redis.call('TIME') "                                                            \
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
/* KEYS instances, sessions:ME; ARGV ME, ttl: this instance is alive. */
#define SS_REGISTER                                                                                \
	"redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) "                                    \
	"redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) "                           \
	"redis.call('PEXPIRE', KEYS[1], ARGV[2]) "                                                 \
	"redis.call('PEXPIRE', KEYS[2], ARGV[2]) "

/* ARGV[3...]: one address per open session of this instance. */
static const char ss_lua_resync[] =
    SS_NOW "redis.call('DEL', KEYS[2]) "
           "for i = 3, #ARGV do "
           "redis.call('HINCRBY', KEYS[2], ARGV[i], 1) end " SS_REGISTER "return #ARGV - 2";
static const char ss_lua_heartbeat[] = SS_NOW SS_REGISTER "return 1";
/* ARGV ME, ttl, ADDR, max, the sessions key prefix: the sessions from
 * ADDR of every live instance, and one more if below max. */
static const char ss_lua_admit[] =
    SS_NOW SS_REGISTER "local total = 0 "
                       "for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do "
                       "local n = redis.call('HGET', ARGV[5] .. id, ARGV[3]) "
                       "if n then total = total + tonumber(n) end end "
                       "if total >= tonumber(ARGV[4]) then return {0, total} end "
                       "redis.call('HINCRBY', KEYS[2], ARGV[3], 1) "
                       "redis.call('PEXPIRE', KEYS[2], ARGV[2]) "
                       "return {1, total}";
/* KEYS sessions:ME; ARGV ADDR. */
static const char ss_lua_leave[] = "local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1) "
                                   "if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end "
                                   "return n";
/* KEYS fail:ADDR, inflight:ADDR; ARGV member, ttl, max: failures plus
 * the others' attempts in flight, and this one reserved if below max. */
static const char ss_lua_attempt[] =
    SS_NOW "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) "
           "local f = tonumber(redis.call('GET', KEYS[1]) or '0') "
           "local n = redis.call('ZCARD', KEYS[2]) "
           "if redis.call('ZSCORE', KEYS[2], ARGV[1]) then n = n - 1 end "
           "if f + n >= tonumber(ARGV[3]) then return {0, f + n} end "
           "redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1]) "
           "redis.call('PEXPIRE', KEYS[2], ARGV[2]) "
           "return {1, f + n}";
/* KEYS fail:ADDR, inflight:ADDR; ARGV window ms, member or "": the
 * window starts with its first failure (as addrtab.c's). */
static const char ss_lua_fail[] = "local n = redis.call('INCR', KEYS[1]) "
                                  "if redis.call('PTTL', KEYS[1]) < 0 then "
                                  "redis.call('PEXPIRE', KEYS[1], ARGV[1]) end "
                                  "if ARGV[2] ~= '' then redis.call('ZREM', KEYS[2], ARGV[2]) end "
                                  "return n";

/* Room for a key: the prefix, a kind and an IPv6 address or instance id. */
#define SS_KEY_MAX 96

struct sharedstate {
	struct proxy *px;
	struct sharedconf_url url;
	char ip[INET6_ADDRSTRLEN]; /* the host, resolved at (re)load */
	char name[160];            /* the URL, for the log */
	char me[17];               /* this instance's id: random hex */
	char sessions_key[SS_KEY_MAX], instances_key[SS_KEY_MAX];
	redisAsyncContext *ac; /* NULL while down */
	unsigned epoch;        /* of ac (one per connection) */
	bool up;               /* ac's first script was answered */
	bool outage;           /* a "down" was logged, and no "up" since */
	ev_tstamp outage_t0;
	unsigned long long outage_failed; /* lookups answered DOWN in the outage */
	const char *refused;              /* why ac's reader refused what Redis sent, or NULL */
	double backoff;
	ev_timer retry, heartbeat;
	struct sharedstate_req *reqs; /* sent, waiting for their reply */
};

enum ss_kind {
	SS_INTERNAL = 0, /* the link's own: handshake, heartbeat */
	SS_ADMIT,
	SS_ATTEMPT,
};

/* One command waiting for Redis. It belongs to hiredis from the send to
 * its reply callback, which hiredis always calls (with NULL when the
 * connection goes), and which frees it. */
struct sharedstate_req {
	struct sharedstate *ss;
	struct sharedstate_req *next, *prev;
	enum ss_kind kind;
	unsigned epoch;     /* ss->epoch when sent */
	sharedstate_cb *cb; /* the owner; NULL once answered or cancelled */
	void *ctx;
	unsigned *epoch_out;
	struct in6_addr key; /* what a cancelled reservation gives back */
	uint64_t sid;
	ev_timer timer;
};

/* Every connection of the process gets a new epoch, also across a reload
 * to another Redis, so that a session never matches a link that did not
 * count it. */
static unsigned ss_epochs;

static void ss_connect(struct sharedstate *ss);

/*
 * What hiredis' reader makes of Redis' bytes is checked as it is made: a
 * reply no command waits for (hiredis asserts on one, so a hostile or
 * wrong server would abort the process), and a multi-bulk that is nested
 * or longer than SHARED_REPLY_MAX_ELEMENTS (allocated whole before its
 * elements came), are refused. The reader then fails, and the link with
 * it, for the reason in ss->refused.
 */
static redisReplyObjectFunctions ss_hiredis_fns; /* hiredis' own, for the rest */

static bool ss_reply_ok(const redisReadTask *t, bool array, long long n)
{
	redisAsyncContext *ac = t->privdata;
	struct sharedstate *ss = ac->data;
	const char *why = NULL;
	if (t->parent == NULL && ac->replies.head == NULL)
		why = "Redis sent a reply to no command";
	else if (array && (t->parent != NULL || n > SHARED_REPLY_MAX_ELEMENTS))
		why = "Redis sent a reply longer than any script's";
	if (why != NULL && ss != NULL)
		ss->refused = why;
	return why == NULL;
}

static void *ss_reply_string(const redisReadTask *t, char *str, size_t len)
{
	return ss_reply_ok(t, false, 0) ? ss_hiredis_fns.createString(t, str, len) : NULL;
}

#if HIREDIS_MAJOR >= 1 /* its counts are size_t, and RESP3 has doubles and booleans */
static void *ss_reply_array(const redisReadTask *t, size_t n)
{
	return ss_reply_ok(t, true,
	                   n > SHARED_REPLY_MAX_ELEMENTS ? SHARED_REPLY_MAX_ELEMENTS + 1
	                                                 : (long long)n)
	           ? ss_hiredis_fns.createArray(t, n)
	           : NULL;
}

static void *ss_reply_double(const redisReadTask *t, double d, char *str, size_t len)
{
	return ss_reply_ok(t, false, 0) ? ss_hiredis_fns.createDouble(t, d, str, len) : NULL;
}

static void *ss_reply_bool(const redisReadTask *t, int b)
{
	return ss_reply_ok(t, false, 0) ? ss_hiredis_fns.createBool(t, b) : NULL;
}
#else
static void *ss_reply_array(const redisReadTask *t, int n)
{
	return ss_reply_ok(t, true, n) ? ss_hiredis_fns.createArray(t, n) : NULL;
}
#endif

static void *ss_reply_integer(const redisReadTask *t, long long v)
{
	return ss_reply_ok(t, false, 0) ? ss_hiredis_fns.createInteger(t, v) : NULL;
}

static void *ss_reply_nil(const redisReadTask *t)
{
	return ss_reply_ok(t, false, 0) ? ss_hiredis_fns.createNil(t) : NULL;
}

static void ss_guard_reader(redisAsyncContext *ac)
{
	static redisReplyObjectFunctions checked;
	if (checked.freeObject == NULL) {
		ss_hiredis_fns = *ac->c.reader->fn;
		checked = ss_hiredis_fns;
		checked.createString = ss_reply_string;
		checked.createArray = ss_reply_array;
		checked.createInteger = ss_reply_integer;
		checked.createNil = ss_reply_nil;
#if HIREDIS_MAJOR >= 1
		checked.createDouble = ss_reply_double;
		checked.createBool = ss_reply_bool;
#endif
	}
	ac->c.reader->fn = &checked;
	ac->c.reader->privdata = ac;
}

/* Why ac went, for the log. */
static const char *ss_lost(const struct sharedstate *ss, const redisAsyncContext *ac,
                           const char *otherwise)
{
	return ss->refused ? ss->refused : ac->errstr[0] ? ac->errstr : otherwise;
}

static void ss_event(struct sharedstate *ss, const char *state, const char *reason)
{
	evlog_begin(0, "shared_state");
	evlog_str("state", state);
	evlog_str("server", ss->name);
	evlog_str("instance", ss->me);
	if (reason != NULL)
		evlog_str("reason", reason);
	if (strcmp(state, "down") == 0)
		evlog_str("mode", ss->px->conf->shared_state_fail == CONF_SHARED_CLOSED ? "closed"
		                                                                        : "open");
	if (strcmp(state, "up") == 0 && ss->outage_t0 > 0) {
		evlog_int("outage_ms", (long long)((ev_now(ss->px->loop) - ss->outage_t0) * 1000));
		evlog_int("lookups_failed", (long long)ss->outage_failed);
	}
	evlog_end();
}

/* The link is down (ac is gone or going): logged once per outage, and a
 * new connection tried after the back-off. */
static void ss_down(struct sharedstate *ss, const char *reason)
{
	ss->up = false;
	ev_timer_stop(ss->px->loop, &ss->heartbeat);
	if (!ss->outage) {
		ss->outage = true;
		ss->outage_t0 = ev_now(ss->px->loop);
		ss->outage_failed = 0;
		ss_event(ss, "down", reason);
		log_warnx("shared state %s: %s", ss->name, reason);
	}
	if (!ev_is_active(&ss->retry)) {
		ev_timer_set(&ss->retry, ss->backoff, 0.);
		ev_timer_start(ss->px->loop, &ss->retry);
		ss->backoff =
		    ss->backoff * 2 < SHARED_RECONNECT_MAX ? ss->backoff * 2 : SHARED_RECONNECT_MAX;
	}
}

/* The link failed while hiredis still holds it: it is dropped, and every
 * command waiting on it is answered DOWN (through its reply callback). */
static void ss_fail(struct sharedstate *ss, const char *reason)
{
	redisAsyncContext *ac = ss->ac;
	ss->ac = NULL;
	ss_down(ss, reason);
	if (ac != NULL)
		redisAsyncFree(ac); /* in a hiredis callback: done once it returns */
}

static void ss_up(struct sharedstate *ss)
{
	if (ss->up)
		return;
	ss->up = true;
	ss->backoff = SHARED_RECONNECT_MIN;
	if (ss->outage || ss->outage_t0 == 0) {
		ss_event(ss, "up", NULL);
		if (ss->outage)
			log_info("shared state %s: back", ss->name);
	}
	ss->outage = false;
	ss->outage_t0 = 0;
	ev_timer_again(ss->px->loop, &ss->heartbeat);
}

/* The owner hears a; a reservation nobody owns any more is given back. */
static void ss_answer(struct sharedstate_req *r, enum sharedstate_answer a, unsigned n)
{
	struct sharedstate *ss = r->ss;
	if (a == SHAREDSTATE_DOWN && r->kind != SS_INTERNAL)
		ss->outage_failed++;
	if (r->cb == NULL) {
		if (a == SHAREDSTATE_YES && r->kind == SS_ADMIT)
			sharedstate_leave(ss, &r->key, r->epoch);
		else if (a == SHAREDSTATE_YES && r->kind == SS_ATTEMPT)
			sharedstate_attempt_end(ss, &r->key, r->sid);
		return;
	}
	sharedstate_cb *cb = r->cb;
	r->cb = NULL;
	if (a == SHAREDSTATE_YES && r->epoch_out != NULL)
		*r->epoch_out = r->epoch;
	cb(r->ctx, a, n);
}

/* Fires with Redis' reply to r, or NULL when the connection went. */
static void ss_reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct sharedstate_req *r = privdata;
	struct sharedstate *ss = r->ss;
	const redisReply *rep = reply;
	char reason[160];

	ev_timer_stop(ss->px->loop, &r->timer);
	if (r->prev != NULL)
		r->prev->next = r->next;
	else
		ss->reqs = r->next;
	if (r->next != NULL)
		r->next->prev = r->prev;

	if (rep == NULL) {
		/* hiredis is freeing ac (it failed, or we dropped it) */
		if (ac == ss->ac) {
			ss->ac = NULL;
			ss_down(ss, ss_lost(ss, ac, "connection lost"));
		}
		ss_answer(r, SHAREDSTATE_DOWN, 0);
	} else if (rep->type == REDIS_REPLY_ERROR) {
		snprintf(reason, sizeof(reason), "Redis said: %.120s", rep->str);
		if (ac == ss->ac)
			ss_fail(ss, reason);
		ss_answer(r, SHAREDSTATE_DOWN, 0);
	} else if (r->kind == SS_INTERNAL) {
		if (rep->type == REDIS_REPLY_INTEGER)
			ss_up(ss); /* the resync (or a heartbeat) was answered */
	} else if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 ||
	           rep->element[0]->type != REDIS_REPLY_INTEGER ||
	           rep->element[1]->type != REDIS_REPLY_INTEGER) {
		if (ac == ss->ac)
			ss_fail(ss, "unexpected reply from Redis");
		ss_answer(r, SHAREDSTATE_DOWN, 0);
	} else {
		long long n = rep->element[1]->integer;
		ss_up(ss);
		ss_answer(r, rep->element[0]->integer == 1 ? SHAREDSTATE_YES : SHAREDSTATE_NO,
		          n < 0            ? 0
		          : n > 1000000000 ? 1000000000u
		                           : (unsigned)n);
	}
	free(r);
}

/* Fires when Redis took longer than SHARED_LOOKUP_TIMEOUT: it counts as
 * a failure of the link (a Redis that is stuck answers nobody). */
static void ss_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop, (void)revents;
	struct sharedstate_req *r = w->data;
	char reason[96];
	snprintf(reason, sizeof(reason), "no answer within %.1f s", SHARED_LOOKUP_TIMEOUT);
	if (r->epoch == r->ss->epoch && r->ss->ac != NULL)
		ss_fail(r->ss, reason); /* r is answered and freed through it */
}

/* Sends argv (NUL-terminated strings) with a reply owned by a new request
 * of kind. Returns it, or NULL if it could not be sent (no link). */
static struct sharedstate_req *ss_send(struct sharedstate *ss, enum ss_kind kind, int argc,
                                       const char **argv)
{
	if (ss == NULL || ss->ac == NULL)
		return NULL;
	struct sharedstate_req *r = calloc(1, sizeof(*r));
	size_t *lens = calloc((size_t)argc, sizeof(*lens));
	if (r == NULL || lens == NULL) {
		free(r);
		free(lens);
		return NULL;
	}
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	r->ss = ss;
	r->kind = kind;
	r->epoch = ss->epoch;
	if (redisAsyncCommandArgv(ss->ac, ss_reply_cb, r, argc, argv, lens) != REDIS_OK) {
		free(lens);
		free(r);
		return NULL;
	}
	free(lens);
	ev_timer_init(&r->timer, ss_timeout_cb, SHARED_LOOKUP_TIMEOUT, 0.);
	r->timer.data = r;
	ev_timer_start(ss->px->loop, &r->timer);
	r->next = ss->reqs;
	if (ss->reqs != NULL)
		ss->reqs->prev = r;
	ss->reqs = r;
	return r;
}

/* A command whose reply nobody waits for (counts given back, failures):
 * a stuck Redis is noticed by the lookups and the heartbeat. */
static void ss_send_quiet(struct sharedstate *ss, int argc, const char **argv)
{
	size_t lens[8];
	if (ss == NULL || ss->ac == NULL || argc > 8)
		return;
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	(void)redisAsyncCommandArgv(ss->ac, NULL, NULL, argc, argv, lens);
}

/* The first script of a connection: this instance's open sessions,
 * counted afresh (every session then belongs to this connection's
 * epoch), and its registration. */
static void ss_resync(struct sharedstate *ss)
{
	struct proxy *px = ss->px;
	size_t n = 0;
	for (struct session *s = px->sessions; s != NULL; s = s->next)
		n++;
	for (struct session *s = px->dead; s != NULL; s = s->next)
		n++;
	const char **argv = calloc(n + 7, sizeof(*argv));
	char(*addrs)[INET6_ADDRSTRLEN] = calloc(n + 1, sizeof(*addrs));
	char ttl[24];
	if (argv == NULL || addrs == NULL) {
		free(argv);
		free(addrs);
		ss_fail(ss, "out of memory");
		return;
	}
	snprintf(ttl, sizeof(ttl), "%d", SHARED_INSTANCE_TTL_MS);
	argv[0] = "EVAL";
	argv[1] = ss_lua_resync;
	argv[2] = "2";
	argv[3] = ss->instances_key;
	argv[4] = ss->sessions_key;
	argv[5] = ss->me;
	argv[6] = ttl;
	size_t i = 0;
	for (int k = 0; k < 2; k++) {
		for (struct session *s = k == 0 ? px->sessions : px->dead; s != NULL; s = s->next) {
			sharedconf_addr(&s->peer_key, addrs[i], sizeof(addrs[i]));
			s->shared_epoch = ss->epoch;
			argv[7 + i] = addrs[i];
			i++;
		}
	}
	if (ss_send(ss, SS_INTERNAL, (int)(7 + n), argv) == NULL)
		ss_fail(ss, "cannot send to Redis");
	free(argv);
	free(addrs);
}

/* Fires when the TCP (or UNIX) connection is made or failed. */
static void ss_connect_cb(const redisAsyncContext *ac, int status)
{
	struct sharedstate *ss = ac->data;
	if (status == REDIS_OK || ac != ss->ac)
		return;
	/* hiredis frees ac after this callback */
	ss->ac = NULL;
	ss_down(ss, ss_lost(ss, ac, "cannot connect"));
}

/* Fires when an established connection ends (hiredis frees ac). */
static void ss_disconnect_cb(const redisAsyncContext *ac, int status)
{
	(void)status;
	struct sharedstate *ss = ac->data;
	if (ac != ss->ac)
		return; /* dropped on purpose */
	ss->ac = NULL;
	ss_down(ss, ss_lost(ss, ac, "Redis closed the connection"));
}

static void ss_connect(struct sharedstate *ss)
{
	redisAsyncContext *ac = ss->url.unix_socket ? redisAsyncConnectUnix(ss->url.path)
	                                            : redisAsyncConnect(ss->ip, (int)ss->url.port);
	char reason[160];
	if (ac == NULL || ac->err) {
		snprintf(reason, sizeof(reason), "%s", ac ? ac->errstr : "out of memory");
		if (ac != NULL)
			redisAsyncFree(ac);
		ss_down(ss, reason);
		return;
	}
	ac->data = ss;
	ss->refused = NULL;
	ss_guard_reader(ac);
	if (redisLibevAttach(ss->px->loop, ac) != REDIS_OK) {
		redisAsyncFree(ac);
		ss_down(ss, "cannot attach to the event loop");
		return;
	}
	redisAsyncSetConnectCallback(ac, ss_connect_cb);
	redisAsyncSetDisconnectCallback(ac, ss_disconnect_cb);
	ss->ac = ac;
	ss->epoch = ++ss_epochs;
	if (ss->url.db != 0) {
		char db[16];
		snprintf(db, sizeof(db), "%u", ss->url.db);
		const char *argv[] = {"SELECT", db};
		if (ss_send(ss, SS_INTERNAL, 2, argv) == NULL) {
			ss_fail(ss, "cannot send to Redis");
			return;
		}
	}
	ss_resync(ss);
}

/* Fires after the back-off: a new connection. */
static void ss_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop, (void)revents;
	struct sharedstate *ss = w->data;
	if (ss->ac == NULL)
		ss_connect(ss);
}

/* Fires every SHARED_HEARTBEAT while up: the registration and the session
 * counts are renewed (and a Redis that stopped answering is noticed). */
static void ss_heartbeat_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop, (void)revents;
	struct sharedstate *ss = w->data;
	char ttl[24];
	snprintf(ttl, sizeof(ttl), "%d", SHARED_INSTANCE_TTL_MS);
	const char *argv[] = {"EVAL",           ss_lua_heartbeat, "2", ss->instances_key,
	                      ss->sessions_key, ss->me,           ttl};
	if (ss_send(ss, SS_INTERNAL, 7, argv) == NULL && ss->ac != NULL)
		ss_fail(ss, "cannot send to Redis");
}

int sharedstate_resolve(struct conf *c, char *err, size_t errlen)
{
	if (!c->shared_state_set || c->shared_state.unix_socket)
		return 0;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	int rc = getaddrinfo(c->shared_state.host, NULL, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "shared_state %s: %s", c->shared_state.host,
		         gai_strerror(rc));
		return -1;
	}
	const void *a = res->ai_family == AF_INET6
	                    ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
	                    : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
	if (inet_ntop(res->ai_family, a, c->shared_state_ip, sizeof(c->shared_state_ip)) == NULL) {
		snprintf(err, errlen, "shared_state %s: no address", c->shared_state.host);
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	return 0;
}

/* This instance counts for nothing any more in this Redis (best effort:
 * one write attempt; its TTLs clean up otherwise). */
static void ss_goodbye(struct sharedstate *ss)
{
	if (!ss->up)
		return;
	const char *del[] = {"DEL", ss->sessions_key};
	const char *zrem[] = {"ZREM", ss->instances_key, ss->me};
	ss_send_quiet(ss, 2, del);
	ss_send_quiet(ss, 3, zrem);
	redisAsyncHandleWrite(ss->ac);
}

/* Drops the link; with answer, waiting owners hear DOWN, else nothing. */
static void ss_stop(struct sharedstate *ss, bool answer)
{
	for (struct sharedstate_req *r = ss->reqs; r != NULL && !answer; r = r->next)
		r->cb = NULL;
	ev_timer_stop(ss->px->loop, &ss->retry);
	ev_timer_stop(ss->px->loop, &ss->heartbeat);
	redisAsyncContext *ac = ss->ac;
	ss->ac = NULL;
	ss->up = false;
	if (ac != NULL)
		redisAsyncFree(ac); /* every reply callback runs, and frees its request */
}

void sharedstate_apply(struct proxy *px)
{
	const struct conf *c = px->conf;
	struct sharedstate *ss = px->shared;
	if (ss != NULL && c->shared_state_set && sharedconf_url_equal(&ss->url, &c->shared_state) &&
	    strcmp(ss->ip, c->shared_state_ip) == 0)
		return; /* shared_state_fail is read where it applies */
	if (ss != NULL) {
		/* another Redis, or none: the lookups waiting here are answered
		 * DOWN now, then judged by the new shared_state_fail; its
		 * sessions leave the old Redis (a reload back to it within
		 * SHARED_INSTANCE_TTL_MS would count them twice) */
		px->shared = NULL;
		ss_event(ss, "off", "reload");
		ss_goodbye(ss);
		ss_stop(ss, true);
		free(ss);
	}
	if (!c->shared_state_set)
		return;
	ss = calloc(1, sizeof(*ss));
	if (ss == NULL) {
		log_warnx("shared state: out of memory, local counts only");
		return;
	}
	unsigned char id[8];
	if (RAND_bytes(id, sizeof(id)) != 1)
		memset(id, 0, sizeof(id));
	for (size_t i = 0; i < sizeof(id); i++)
		snprintf(ss->me + 2 * i, 3, "%02x", id[i]);
	ss->px = px;
	ss->url = c->shared_state;
	snprintf(ss->ip, sizeof(ss->ip), "%s", c->shared_state_ip);
	sharedconf_format_url(&ss->url, ss->name, sizeof(ss->name));
	(void)sharedconf_key(ss->sessions_key, sizeof(ss->sessions_key), "sessions", ss->me);
	(void)sharedconf_key(ss->instances_key, sizeof(ss->instances_key), "instances", "all");
	ss->backoff = SHARED_RECONNECT_MIN;
	ev_timer_init(&ss->retry, ss_retry_cb, 0., 0.);
	ss->retry.data = ss;
	ev_timer_init(&ss->heartbeat, ss_heartbeat_cb, 0., SHARED_HEARTBEAT);
	ss->heartbeat.data = ss;
	px->shared = ss;
	ss_connect(ss);
}

void sharedstate_free(struct sharedstate *ss)
{
	if (ss == NULL)
		return;
	ss_goodbye(ss);
	ss->px->shared = NULL;
	ss_stop(ss, false);
	free(ss);
}

bool sharedstate_up(const struct sharedstate *ss)
{
	return ss != NULL && ss->up;
}

int sharedstate_probe(const struct proxy *px)
{
	return px->shared == NULL || px->shared->up;
}

void sharedstate_cancel(struct sharedstate_req *r)
{
	if (r != NULL) {
		r->cb = NULL;
		r->epoch_out = NULL;
	}
}

/* The keys of kind for key's address. */
static void ss_addr_key(char *out, const char *kind, const struct in6_addr *key, char *addr)
{
	sharedconf_addr(key, addr, INET6_ADDRSTRLEN);
	(void)sharedconf_key(out, SS_KEY_MAX, kind, addr);
}

struct sharedstate_req *sharedstate_admit(struct sharedstate *ss, const struct in6_addr *key,
                                          unsigned max, unsigned *epoch, sharedstate_cb *cb,
                                          void *ctx)
{
	char addr[INET6_ADDRSTRLEN], smax[16], ttl[24], prefix[SS_KEY_MAX];
	if (ss == NULL)
		return NULL;
	sharedconf_addr(key, addr, sizeof(addr));
	snprintf(smax, sizeof(smax), "%u", max);
	snprintf(ttl, sizeof(ttl), "%d", SHARED_INSTANCE_TTL_MS);
	(void)sharedconf_key(prefix, sizeof(prefix), "sessions", "");
	const char *argv[] = {
	    "EVAL", ss_lua_admit, "2",   ss->instances_key, ss->sessions_key, ss->me, ttl,
	    addr,   smax,         prefix};
	struct sharedstate_req *r = ss_send(ss, SS_ADMIT, 10, argv);
	if (r == NULL) {
		ss->outage_failed++;
		return NULL;
	}
	r->cb = cb;
	r->ctx = ctx;
	r->epoch_out = epoch;
	r->key = *key;
	return r;
}

void sharedstate_leave(struct sharedstate *ss, const struct in6_addr *key, unsigned epoch)
{
	char addr[INET6_ADDRSTRLEN];
	if (ss == NULL || epoch != ss->epoch)
		return; /* not counted on this connection: its resync did not see it */
	sharedconf_addr(key, addr, sizeof(addr));
	const char *argv[] = {"EVAL", ss_lua_leave, "1", ss->sessions_key, addr};
	ss_send_quiet(ss, 5, argv);
}

static void ss_member(char *out, size_t n, const struct sharedstate *ss, uint64_t sid)
{
	snprintf(out, n, "%s:%llu", ss->me, (unsigned long long)sid);
}

struct sharedstate_req *sharedstate_attempt(struct sharedstate *ss, const struct in6_addr *key,
                                            uint64_t sid, unsigned max, long long ttl_ms,
                                            sharedstate_cb *cb, void *ctx)
{
	char addr[INET6_ADDRSTRLEN], fkey[SS_KEY_MAX], ikey[SS_KEY_MAX], member[48], smax[16],
	    ttl[24];
	if (ss == NULL)
		return NULL;
	ss_addr_key(fkey, "fail", key, addr);
	ss_addr_key(ikey, "inflight", key, addr);
	ss_member(member, sizeof(member), ss, sid);
	snprintf(smax, sizeof(smax), "%u", max);
	snprintf(ttl, sizeof(ttl), "%lld", ttl_ms);
	const char *argv[] = {"EVAL", ss_lua_attempt, "2", fkey, ikey, member, ttl, smax};
	struct sharedstate_req *r = ss_send(ss, SS_ATTEMPT, 8, argv);
	if (r == NULL) {
		ss->outage_failed++;
		return NULL;
	}
	r->cb = cb;
	r->ctx = ctx;
	r->key = *key;
	r->sid = sid;
	return r;
}

void sharedstate_attempt_end(struct sharedstate *ss, const struct in6_addr *key, uint64_t sid)
{
	char addr[INET6_ADDRSTRLEN], ikey[SS_KEY_MAX], member[48];
	if (ss == NULL)
		return;
	ss_addr_key(ikey, "inflight", key, addr);
	ss_member(member, sizeof(member), ss, sid);
	const char *argv[] = {"ZREM", ikey, member};
	ss_send_quiet(ss, 3, argv);
}

void sharedstate_fail(struct sharedstate *ss, const struct in6_addr *key, unsigned window,
                      uint64_t sid, bool held)
{
	char addr[INET6_ADDRSTRLEN], fkey[SS_KEY_MAX], ikey[SS_KEY_MAX], member[48] = "", ms[24];
	if (ss == NULL)
		return;
	ss_addr_key(fkey, "fail", key, addr);
	ss_addr_key(ikey, "inflight", key, addr);
	if (held)
		ss_member(member, sizeof(member), ss, sid);
	snprintf(ms, sizeof(ms), "%llu", (unsigned long long)window * 1000);
	const char *argv[] = {"EVAL", ss_lua_fail, "2", fkey, ikey, ms, member};
	ss_send_quiet(ss, 7, argv);
}
