#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "addrtab.h"
#include "audit.h"
#include "conf.h"
#include "evlog.h"
#include "log.h"
#include "login.h"
#include "session.h"
#include "sharedstate.h"
#include "transcript.h"
#include "workers.h"
#include "upstream.h"

static void session_leg_data(struct leg *l, const char *data, size_t len)
{
	struct session *s = l->owner;
	transcript_chunk(s->transcript, l == &s->client ? TRANSCRIPT_CLIENT : TRANSCRIPT_UPSTREAM,
	                 false, data, len);
	login_data(l, data, len);
}

/* Seconds between two warnings that a transcript could not be made: one
 * per session would flood the log when the directory goes away. */
#define SESSION_TRANSCRIPT_WARN_EVERY 10

/* transcript_dir: the session's transcript, or the reason it has none (in
 * the login record, and on stderr at most every few seconds). */
static void session_transcript(struct session *s)
{
	static time_t warned;
	const struct conf *c = s->px->conf;
	if (c->transcript_dir == NULL)
		return;
	s->transcript = transcript_open(
	    c->transcript_dir, s->id, s->peer, s->local, c->transcript_max, s->transcript_name,
	    sizeof(s->transcript_name), s->transcript_error, sizeof(s->transcript_error));
	time_t now = time(NULL);
	if (s->transcript == NULL && now - warned >= SESSION_TRANSCRIPT_WARN_EVERY) {
		warned = now;
		log_warnx("session %llu: no transcript: %s", (unsigned long long)s->id,
		          s->transcript_error);
	}
}

/* Fires for every I/O event of either leg. */
static void session_leg_event(struct leg *l, enum leg_event ev, const char *why)
{
	struct session *s = l->owner;

	if (ev != LEG_EV_CLOSED) {
		if (!s->closing)
			login_event(l, ev, why);
		else if (ev != LEG_EV_CONNECTED && ev != LEG_EV_TLS_DONE)
			leg_abort(l); /* an error while closing: nothing left to say */
		else
			leg_close(l);
		return;
	}
	if (!s->closing && !(l == &s->upstream && s->upstream_gone)) {
		/* a leg failed on its own: the session goes with it */
		session_close(s, l == &s->client ? "client connection lost"
		                                 : "upstream connection lost");
		return;
	}
	if (s->client.io == LEG_IO_CLOSED && s->upstream.io == LEG_IO_CLOSED && !s->freed) {
		/* freed by the reaper, after the current callback */
		s->freed = true;
		struct proxy *px = s->px;
		if (s->prev)
			s->prev->next = s->next;
		else
			px->sessions = s->next;
		if (s->next)
			s->next->prev = s->prev;
		s->prev = NULL;
		s->next = px->dead;
		px->dead = s;
		px->ndead++;
		if (s->closing)
			px->nclosing--;
		else if (s->counted_authenticated)
			px->nauthenticated--;
		s->counted_authenticated = false;
		workers_touch();
		ev_timer_stop(px->loop, &s->login_timer);
		ev_timer_stop(px->loop, &s->connect_timer);
		ev_timer_stop(px->loop, &s->delay_timer);
	}
}

static const struct leg_ops session_leg_ops = {
    .data = session_leg_data,
    .event = session_leg_event,
};

long long session_ms(const struct session *s)
{
	return (long long)((ev_now(s->px->loop) - s->t0) * 1000.0);
}

/* Fires at the login timeout, or, once closing, when the legs had long
 * enough to flush. */
static void session_login_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop, (void)revents;
	struct session *s = (struct session *)((char *)w - offsetof(struct session, login_timer));
	if (s->closing) {
		leg_abort(&s->client);
		leg_abort(&s->upstream);
		return;
	}
	if (s->lg == NULL) {
		session_close(s, "login timeout"); /* its admission never answered */
		return;
	}
	login_timeout(s, false);
}

/* Fires when the upstream took too long to connect or negotiate. */
static void session_connect_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop, (void)revents;
	struct session *s = (struct session *)((char *)w - offsetof(struct session, connect_timer));
	if (!s->closing)
		login_timeout(s, true);
}

/* Fires when the pause after a failed login is over. */
static void session_delay_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop, (void)revents;
	struct session *s = (struct session *)((char *)w - offsetof(struct session, delay_timer));
	if (!s->closing)
		login_resume(s);
}

void session_delay(struct session *s, double seconds)
{
	ev_timer_stop(s->px->loop, &s->delay_timer);
	ev_timer_set(&s->delay_timer, seconds, 0.);
	ev_timer_start(s->px->loop, &s->delay_timer);
}

void session_login_deadline(struct session *s, double seconds)
{
	ev_timer_stop(s->px->loop, &s->login_timer);
	ev_timer_set(&s->login_timer, seconds, 0.);
	ev_timer_start(s->px->loop, &s->login_timer);
}

void session_connect_timer(struct session *s, bool on)
{
	ev_timer_stop(s->px->loop, &s->connect_timer);
	if (on && !s->closing) {
		ev_timer_set(&s->connect_timer, s->px->conf->connect_timeout, 0.);
		ev_timer_start(s->px->loop, &s->connect_timer);
	}
}

void session_login_done(struct session *s)
{
	if (s->closing)
		return; /* the login timer is the close linger now */
	ev_timer_stop(s->px->loop, &s->login_timer);
	ev_timer_stop(s->px->loop, &s->connect_timer);
}

static void session_addr(const struct sockaddr *sa, char *ip, size_t iplen, char *out,
                         size_t outlen)
{
	char tmp[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, tmp, sizeof(tmp));
		port = ntohs(in->sin_port);
		snprintf(out, outlen, "%s:%u", tmp, port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, tmp, sizeof(tmp));
		port = ntohs(in6->sin6_port);
		snprintf(out, outlen, "[%s]:%u", tmp, port);
	} else {
		snprintf(out, outlen, "?");
	}
	if (ip != NULL)
		snprintf(ip, iplen, "%s", tmp);
}

/* Fires with the shared state's answer to a new session: max_per_addr
 * across the instances (the local count was checked at accept). DOWN goes
 * on either way: with shared_state_fail = closed the login is refused at
 * its attempt, where the client can be told why. */
static void session_admitted(void *ctx, enum sharedstate_answer a, unsigned open)
{
	struct session *s = ctx;
	s->shared_req = NULL;
	if (a == SHAREDSTATE_NO) {
		char detail[96];
		snprintf(detail, sizeof(detail),
		         "%u sessions open from this address across the instances", open);
		evlog_begin(s->id, "policy");
		evlog_str("rule", "max_per_addr");
		evlog_str("action", "reject");
		evlog_str("detail", detail);
		evlog_end();
		session_close(s, "max_per_addr");
		return;
	}
	login_start(s);
}

void session_new(struct proxy *px, int fd, enum session_port port, const struct sockaddr *peer,
                 const struct sockaddr *local)
{
	struct session_origin o = {.peer = peer, .dst = local};
	session_new_origin(px, fd, port, local, &o);
}

static void session_copy_sa(struct sockaddr_storage *to, const struct sockaddr *sa)
{
	memset(to, 0, sizeof(*to));
	if (sa != NULL && sa->sa_family == AF_INET)
		memcpy(to, sa, sizeof(struct sockaddr_in));
	else if (sa != NULL && sa->sa_family == AF_INET6)
		memcpy(to, sa, sizeof(struct sockaddr_in6));
}

void session_new_origin(struct proxy *px, int fd, enum session_port port,
                        const struct sockaddr *local, const struct session_origin *o)
{
	const struct sockaddr *peer = o->peer;
	struct session *s = calloc(1, sizeof(*s));
	if (s == NULL) {
		log_warnx("out of memory: connection refused");
		close(fd);
		return;
	}
	s->peer_key = addrtab_key(peer);
	/* checked at accept (or after the PROXY header); checked and counted
	 * again in one step, for another worker may have taken the last place */
	int added = addrtab_add_below(px->peers, &s->peer_key, px->conf->max_per_addr);
	if (added != 0) {
		if (added > 0)
			session_refused(peer, o->via, "max_per_addr", NULL);
		else
			log_warnx("%s: connection refused",
			          workers_count() > 1 ? "address table full" : "out of memory");
		free(s);
		close(fd);
		return;
	}
	s->id = workers_next_sid(&px->next_sid);
	s->px = px;
	s->port = port;
	s->t0 = ev_now(px->loop);
	session_addr(peer, s->peer_ip, sizeof(s->peer_ip), s->peer, sizeof(s->peer));
	session_addr(local, NULL, 0, s->local, sizeof(s->local));
	session_copy_sa(&s->peer_sa, peer);
	session_copy_sa(&s->dst_sa, o->dst);
	if (o->via != NULL)
		session_addr(o->via, NULL, 0, s->via, sizeof(s->via));
	leg_init(&s->client, px->loop, &session_leg_ops, s, &s->upstream, fd);
	leg_init(&s->upstream, px->loop, &session_leg_ops, s, &s->client, -1);
	ev_timer_init(&s->login_timer, session_login_timer_cb, px->conf->login_timeout, 0.);
	ev_timer_init(&s->connect_timer, session_connect_timer_cb, px->conf->connect_timeout, 0.);
	ev_timer_init(&s->delay_timer, session_delay_timer_cb, 0., 0.);
	ev_timer_start(px->loop, &s->login_timer);

	s->next = px->sessions;
	if (px->sessions)
		px->sessions->prev = s;
	px->sessions = s;
	px->nsessions++;
	session_count_changed(px);

	evlog_begin(s->id, "connect");
	evlog_str("peer", s->peer);
	evlog_str("local", s->local);
	evlog_str("port_kind", port == SESSION_PORT_DIRECT_TLS ? "direct_tls" : "starttls");
	if (o->via != NULL) {
		evlog_str("via", s->via);
		evlog_str("proxy", o->proxy);
		if (o->cmd != NULL)
			evlog_str("proxy_cmd", o->cmd);
	}
	evlog_end();
	session_transcript(s);

	s->shared_req = sharedstate_admit(px->shared, &s->peer_key, px->conf->max_per_addr,
	                                  &s->shared_epoch, session_admitted, s);
	if (s->shared_req == NULL)
		login_start(s); /* it connects upstream (session_connect_upstream) */
}

/* session_close: the gauge moves s from login or authenticated to
 * closing. */
static void session_gauge_closing(struct session *s)
{
	if (s->counted_authenticated)
		s->px->nauthenticated--;
	s->counted_authenticated = false;
	s->px->nclosing++;
	workers_touch();
}

void session_outcome_changed(struct session *s, bool success)
{
	if (s->closing || s->freed || s->counted_authenticated == success)
		return;
	s->counted_authenticated = success;
	if (success)
		s->px->nauthenticated++;
	else
		s->px->nauthenticated--;
	workers_touch();
}

void session_count_changed(const struct proxy *px)
{
	workers_note_open(px->nsessions, px->npending);
}

void session_refused(const struct sockaddr *peer, const struct sockaddr *via, const char *rule,
                     const char *detail)
{
	char ip[INET6_ADDRSTRLEN] = "?", vbuf[INET6_ADDRSTRLEN + 8];
	session_addr(peer, ip, sizeof(ip), vbuf, sizeof(vbuf));
	evlog_begin(0, "refused");
	evlog_str("peer", ip);
	evlog_str("rule", rule);
	if (via != NULL) {
		session_addr(via, NULL, 0, vbuf, sizeof(vbuf));
		evlog_str("via", vbuf);
	}
	if (detail != NULL)
		evlog_str("detail", detail);
	evlog_end();
}

void session_connect_upstream(struct session *s)
{
	char why[256];
	struct sockaddr_storage dst;
	session_connect_timer(s, true);
	int fd = upstream_connect(s->px, &s->upstream, s->client.fd, &s->peer_sa, &dst, why,
	                          sizeof(why));
	/* in transparent mode each session has its own upstream */
	if (s->px->conf->upstream_original_dst && dst.ss_family != AF_UNSPEC)
		session_addr((struct sockaddr *)&dst, NULL, 0, s->upstream_addr,
		             sizeof(s->upstream_addr));
	char note[sizeof(s->px->upstream_name) + 16];
	snprintf(note, sizeof(note), "upstream %s",
	         s->upstream_addr[0] ? s->upstream_addr : s->px->upstream_name);
	transcript_note(s->transcript, note);
	if (fd < 0) {
		/* failing before any packet is this host's problem (a
		 * capability, an address), not the server's: say it here too */
		log_warnx("session %llu: upstream: %s", (unsigned long long)s->id, why);
		login_event(&s->upstream, LEG_EV_ERROR, why);
	}
}

void session_close(struct session *s, const char *reason)
{
	if (s->closing)
		return;
	s->closing = true;
	session_gauge_closing(s);
	sharedstate_cancel(s->shared_req); /* a late answer must not find it */
	s->shared_req = NULL;
	struct login_summary sum;
	login_close(s, &sum);
	evlog_begin(s->id, "close");
	evlog_str("reason", reason);
	if (sum.abandoned)
		evlog_bool("abandoned_attempt", true); /* counted as a failed login */
	evlog_int("trailing_bytes", (long long)sum.trailing_bytes);
	evlog_int("ms", session_ms(s));
	evlog_int("bytes_c2s", (long long)s->client.bytes_in);
	evlog_int("bytes_s2c", (long long)s->upstream.bytes_in);
	evlog_end();
	log_debug("session %llu closed: %s", (unsigned long long)s->id, reason);

	/* the linger: how long the legs may take to flush what they were told */
	ev_timer_stop(s->px->loop, &s->connect_timer);
	ev_timer_stop(s->px->loop, &s->delay_timer);
	ev_timer_stop(s->px->loop, &s->login_timer);
	ev_timer_set(&s->login_timer, CLOSE_LINGER, 0.);
	ev_timer_start(s->px->loop, &s->login_timer);
	leg_close(&s->client);
	leg_close(&s->upstream);
}

static void session_free(struct session *s)
{
	addrtab_del(s->px->peers, &s->peer_key, ev_now(s->px->loop));
	sharedstate_leave(s->px->shared, &s->peer_key, s->shared_epoch);
	login_free(s);
	transcript_close(s->transcript);
	s->transcript = NULL;
	leg_free(&s->client);
	leg_free(&s->upstream);
	free(s);
}

/* Fires before the loop waits for events: frees the sessions closed by
 * the callbacks of this iteration, and ends the loop when stopping and none
 * is left. A prepare watcher: a check may already have run in the
 * iteration that closed a session (the next one could be far away), and an
 * idle one starves while I/O keeps coming. */
static void session_reaper_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	(void)revents;
	struct proxy *px = w->data;
	while (px->dead != NULL) {
		struct session *s = px->dead;
		px->dead = s->next;
		px->nsessions--;
		px->ndead--;
		session_free(s);
		session_count_changed(px);
	}
	if (px->stopping && px->nsessions == 0)
		ev_break(loop, EVBREAK_ALL);
}

/* Fires every minute: expired failure windows are forgotten. */
static void session_sweeper_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	struct proxy *px = w->data;
	addrtab_sweep(px->peers, ev_now(loop));
}

/* Fires every IDLE_SWEEP seconds: idle logged-in sessions give back their
 * parsers and empty queues (login_idle). */
static void session_idler_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop, (void)revents;
	struct proxy *px = w->data;
	for (struct session *s = px->sessions; s != NULL; s = s->next)
		login_idle(s);
}

void session_proxy_init(struct proxy *px)
{
	void *shared = workers_area(WORKERS_AREA_ADDRTAB);
	px->peers = shared != NULL
	                ? addrtab_new_shared(shared, (unsigned)workers_self(), workers_count())
	                : addrtab_new();
	if (px->peers == NULL)
		fatal("out of memory");
	ev_timer_init(&px->sweeper, session_sweeper_cb, 60., 60.);
	px->sweeper.data = px;
	ev_timer_start(px->loop, &px->sweeper);
	ev_unref(px->loop);
	ev_timer_init(&px->idler, session_idler_cb, IDLE_SWEEP, IDLE_SWEEP);
	px->idler.data = px;
	ev_timer_start(px->loop, &px->idler);
	ev_unref(px->loop);
	ev_prepare_init(&px->reaper, session_reaper_cb);
	px->reaper.data = px;
	ev_prepare_start(px->loop, &px->reaper);
	/* the reaper must not keep the loop alive on its own */
	ev_unref(px->loop);
}

void session_shutdown_all(struct proxy *px)
{
	px->stopping = true;
	for (struct session *s = px->sessions, *next; s != NULL; s = next) {
		next = s->next;
		leg_hurry(&s->client);
		leg_hurry(&s->upstream);
		if (!s->closing && s->lg == NULL)
			session_close(s, "proxy shutting down"); /* its admission pending */
		else if (!s->closing)
			login_shutdown(s);
	}
	/* the reaper ends the loop once no session is left, maybe now */
}
