#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bounds.h"
#include "log.h"
#include "notify.h"
#include "supervisor.h"
#include "workers.h"

struct supervisor_worker {
	pid_t pid; /* 0: not running */
	double started;
	double pause; /* before the next fork, if it dies soon after this one */
	ev_timer respawn;
};

static struct {
	struct ev_loop *loop;
	const struct supervisor_ops *ops;
	unsigned n;
	pid_t self;
	struct supervisor_worker w[WORKERS_MAX];
	ev_signal sigterm, sigint, sighup;
	ev_child child;
	ev_timer stop_timer;
	ev_timer reload_timer;
	bool stopping;
	int forked; /* in a child: its index; -1 in the supervisor */
	/* the reload under way: its generation, start, own outcome */
	uint64_t reload_gen;
	double reload_t0;
	bool reload_ok;
	bool reloading;
	unsigned reloads_queued; /* SIGHUPs that came during one */
} sv = {.forked = -1};

static unsigned supervisor_alive(void)
{
	unsigned n = 0;
	for (unsigned i = 0; i < sv.n; i++)
		n += sv.w[i].pid > 0;
	return n;
}

/* In a new child: none of the supervisor's watchers stays. */
static void supervisor_leave(void)
{
	ev_loop_fork(sv.loop);
	ev_signal_stop(sv.loop, &sv.sigterm);
	ev_signal_stop(sv.loop, &sv.sigint);
	ev_signal_stop(sv.loop, &sv.sighup);
	ev_child_stop(sv.loop, &sv.child);
	ev_timer_stop(sv.loop, &sv.stop_timer);
	ev_timer_stop(sv.loop, &sv.reload_timer);
	for (unsigned i = 0; i < sv.n; i++)
		ev_timer_stop(sv.loop, &sv.w[i].respawn);
}

/* Forks worker i. In the child: returns true (sv.forked set); in the
 * supervisor false. */
static bool supervisor_fork(unsigned i)
{
	pid_t pid = fork();
	if (pid < 0) {
		log_warnx("worker %u: fork: %s; trying again in %.1f s", i, strerror(errno),
		          WORKER_RESPAWN_MAX);
		ev_timer_set(&sv.w[i].respawn, WORKER_RESPAWN_MAX, 0.);
		ev_timer_start(sv.loop, &sv.w[i].respawn);
		return false;
	}
	if (pid == 0) {
		sv.forked = (int)i;
		supervisor_leave();
		/* SIGTERM: a worker whose supervisor is gone drains and ends;
		 * the check covers a supervisor that died before the prctl */
		if (prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0) < 0 || getppid() != sv.self)
			_exit(0);
		return true;
	}
	sv.w[i].pid = pid;
	sv.w[i].started = ev_now(sv.loop);
	workers_set_alive(supervisor_alive());
	return false;
}

/* Fires when a dead worker's pause is over. */
static void supervisor_respawn_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	struct supervisor_worker *sw =
	    (struct supervisor_worker *)((char *)w - offsetof(struct supervisor_worker, respawn));
	unsigned i = (unsigned)(sw - sv.w);
	if (sv.stopping || sw->pid > 0)
		return;
	if (supervisor_fork(i))
		ev_break(loop, EVBREAK_ALL); /* the child returns from supervisor_run */
	else if (sw->pid > 0)
		log_info("worker %u forked again (pid %d)", i, (int)sw->pid);
}

static void supervisor_describe(int status, char *out, size_t n)
{
	if (WIFSIGNALED(status))
		snprintf(out, n, "killed by signal %d (%s)", WTERMSIG(status),
		         strsignal(WTERMSIG(status)));
	else
		snprintf(out, n, "exited with status %d", WEXITSTATUS(status));
}

/* Fires when a child ends. */
static void supervisor_child_cb(struct ev_loop *loop, ev_child *c, int revents)
{
	(void)revents;
	unsigned i;
	for (i = 0; i < sv.n && sv.w[i].pid != c->rpid; i++)
		;
	if (i == sv.n)
		return; /* not a worker */
	struct supervisor_worker *sw = &sv.w[i];
	sw->pid = 0;
	workers_set_alive(supervisor_alive());
	sv.ops->exited(sv.ops->ctx, i);
	if (sv.stopping) {
		if (supervisor_alive() == 0)
			ev_break(loop, EVBREAK_ALL);
		return;
	}
	char how[96];
	supervisor_describe(c->rstatus, how, sizeof(how));
	double lived = ev_now(loop) - sw->started;
	sw->pause = lived >= WORKER_STABLE               ? WORKER_RESPAWN_MIN
	            : sw->pause * 2 > WORKER_RESPAWN_MAX ? WORKER_RESPAWN_MAX
	                                                 : sw->pause * 2;
	log_warnx("worker %u (pid %d) %s after %.1f s: its sessions are lost; forking another in "
	          "%.1f s",
	          i, (int)c->rpid, how, lived, sw->pause);
	ev_timer_set(&sw->respawn, sw->pause, 0.);
	ev_timer_start(loop, &sw->respawn);
}

/* Fires when the workers took too long to drain. */
static void supervisor_stop_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop, (void)w, (void)revents;
	for (unsigned i = 0; i < sv.n; i++)
		if (sv.w[i].pid > 0) {
			log_warnx("worker %u (pid %d) still running: killed", i, (int)sv.w[i].pid);
			kill(sv.w[i].pid, SIGKILL);
		}
}

/* Fires on SIGTERM and SIGINT: every worker drains (as one process would),
 * none is forked again. */
static void supervisor_stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)revents;
	if (sv.stopping)
		return;
	sv.stopping = true;
	log_info("stopping");
	notify_send("STOPPING=1");
	sv.ops->stopping(sv.ops->ctx);
	for (unsigned i = 0; i < sv.n; i++) {
		ev_timer_stop(loop, &sv.w[i].respawn);
		if (sv.w[i].pid > 0)
			kill(sv.w[i].pid, w->signum);
	}
	ev_timer_stop(loop, &sv.reload_timer);
	if (supervisor_alive() == 0) {
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	ev_timer_set(&sv.stop_timer, CLOSE_LINGER + WORKER_STOP_GRACE, 0.);
	ev_timer_start(loop, &sv.stop_timer);
}

static void supervisor_reload_start(void)
{
	sv.reloading = true;
	sv.reload_ok = sv.ops->reload(sv.ops->ctx);
	sv.reload_gen = workers_reload_begin();
	sv.reload_t0 = ev_now(sv.loop);
	for (unsigned i = 0; i < sv.n; i++)
		if (sv.w[i].pid > 0)
			kill(sv.w[i].pid, SIGHUP);
	ev_timer_start(sv.loop, &sv.reload_timer);
}

/* Fires every 20 ms during a reload, until each running worker says how
 * its own went. A worker forked meanwhile started from the supervisor's
 * reloaded state, and one that died has nothing to say. */
static void supervisor_reload_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	bool all = true, ok = sv.reload_ok;
	for (unsigned i = 0; i < sv.n; i++) {
		bool wok;
		if (sv.w[i].pid <= 0 || sv.w[i].started > sv.reload_t0)
			continue;
		if (workers_reload_acked(i, sv.reload_gen, &wok))
			ok = ok && wok;
		else
			all = false;
	}
	bool late = ev_now(loop) - sv.reload_t0 > WORKER_RELOAD_WAIT;
	if (!all && !late)
		return;
	if (late && !all)
		log_warnx("reload: not every worker answered within %.0f s", WORKER_RELOAD_WAIT);
	ev_timer_stop(loop, w);
	sv.reloading = false;
	sv.ops->reloaded(sv.ops->ctx, ok && all);
	if (sv.reloads_queued > 0 && !sv.stopping) {
		sv.reloads_queued--;
		supervisor_reload_start();
	}
}

/* Fires on SIGHUP: the supervisor reloads, then every worker does. */
static void supervisor_hup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)loop, (void)w, (void)revents;
	if (sv.stopping)
		return;
	if (sv.reloading) {
		sv.reloads_queued++;
		return;
	}
	supervisor_reload_start();
}

int supervisor_run(struct ev_loop *loop, unsigned n, const struct supervisor_ops *ops)
{
	sv.loop = loop;
	sv.ops = ops;
	sv.n = n;
	sv.self = getpid();
	for (unsigned i = 0; i < n; i++) {
		sv.w[i].pause = WORKER_RESPAWN_MIN / 2; /* doubled at the first death */
		ev_timer_init(&sv.w[i].respawn, supervisor_respawn_cb, 0., 0.);
	}
	ev_signal_init(&sv.sigterm, supervisor_stop_cb, SIGTERM);
	ev_signal_init(&sv.sigint, supervisor_stop_cb, SIGINT);
	ev_signal_init(&sv.sighup, supervisor_hup_cb, SIGHUP);
	ev_child_init(&sv.child, supervisor_child_cb, 0, 0);
	ev_timer_init(&sv.stop_timer, supervisor_stop_timer_cb, 0., 0.);
	ev_timer_init(&sv.reload_timer, supervisor_reload_timer_cb, 0.02, 0.02);
	/* the signals are watched before the first fork: one that comes
	 * while the workers start is passed on, not lost */
	ev_signal_start(loop, &sv.sigterm);
	ev_signal_start(loop, &sv.sigint);
	ev_signal_start(loop, &sv.sighup);
	ev_child_start(loop, &sv.child);
	for (unsigned i = 0; i < n; i++)
		if (supervisor_fork(i))
			return (int)i;
	log_info("%u workers started", n);
	ev_run(loop, 0);
	if (sv.forked >= 0)
		return sv.forked;
	ev_timer_stop(loop, &sv.stop_timer);
	return -1;
}
