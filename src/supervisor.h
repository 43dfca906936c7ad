/*
 * workers = N: the supervisor, the process the user started (the one
 * systemd, the pidfile and signals talk to). It forks the workers, passes
 * SIGHUP and SIGTERM/SIGINT on to them, forks a worker again when one dies
 * (with a growing pause, logged), and ends once every worker has ended
 * after a stop. Each worker dies with it (PR_SET_PDEATHSIG).
 */
#ifndef XI_SUPERVISOR_H
#define XI_SUPERVISOR_H

#include <ev.h>
#include <stdbool.h>

struct supervisor_ops {
	void *ctx;
	/* SIGHUP, in the supervisor, before the workers are told: its own
	 * reload (what a worker forked later will run); false if refused */
	bool (*reload)(void *ctx);
	/* every worker said how its reload went (or WORKER_RELOAD_WAIT
	 * passed): ok only if all of them and the supervisor's own were */
	void (*reloaded)(void *ctx, bool ok);
	/* worker i ended (before it is forked again, or at the stop) */
	void (*exited)(void *ctx, unsigned i);
	/* SIGTERM or SIGINT came: no worker will be forked again */
	void (*stopping)(void *ctx);
};

/*
 * Forks n workers on loop (the default loop) and supervises them. Returns
 * in each worker its index, 0..n-1, with the supervisor's watchers gone
 * and the loop ready for the worker's own (ev_loop_fork); returns -1 in
 * the supervisor once a stop has ended every worker.
 */
int supervisor_run(struct ev_loop *loop, unsigned n, const struct supervisor_ops *ops);

#endif
