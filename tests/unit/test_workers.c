/*
 * Unit tests of workers.c, the region the workers share: session ids
 * unique across forked processes, max_sessions admitted in one step
 * across them (exactly the limit, however they race), a dead worker's
 * open sessions forgotten while its log totals are kept, the gauges of
 * the others, and the reload handshake. Without a region every call acts
 * on this process alone.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "t.h"
#include "workers.h"

enum { KIDS = 3, SIDS = 3000, TRIES = 500, LIMIT = 700 };

int main(void)
{
	uint64_t local = 41;
	T_CHECK(workers_next_sid(&local) == 42 && local == 42, "no region: the local counter");
	T_CHECK(workers_admit(2, 3) && !workers_admit(3, 3), "no region: open < max");
	T_CHECK(workers_count() == 1 && workers_area(0) == NULL, "no region: one, no areas");

	char err[128];
	size_t sizes[WORKERS_AREAS] = {100, 200};
	T_CHECK(workers_setup(KIDS, sizes, err, sizeof(err)) == 0, "region mapped");
	T_CHECK(workers_count() == KIDS && workers_area(0) != NULL && workers_area(1) != NULL &&
	            (char *)workers_area(1) >= (char *)workers_area(0) + 100,
	        "areas apart");

	uint64_t *sids = mmap(NULL, sizeof(uint64_t) * KIDS * SIDS, PROT_READ | PROT_WRITE,
	                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	unsigned *admitted = mmap(NULL, sizeof(unsigned) * KIDS, PROT_READ | PROT_WRITE,
	                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t pids[KIDS];
	for (unsigned w = 0; w < KIDS; w++) {
		if ((pids[w] = fork()) == 0) {
			workers_become(w);
			uint64_t unused = 0;
			for (unsigned i = 0; i < SIDS; i++)
				sids[w * SIDS + i] = workers_next_sid(&unused);
			unsigned open = 0;
			for (unsigned i = 0; i < TRIES; i++)
				if (workers_admit(open, LIMIT))
					open++;
			workers_note_open(open - 1, 1); /* one of them a PROXY header */
			admitted[w] = open;
			struct workers_gauges g = {.login = w + 1, .events_lost = 10 * (w + 1)};
			workers_publish(&g);
			workers_reload_done(7, w != 1);
			_exit(0);
		}
	}
	for (unsigned w = 0; w < KIDS; w++)
		waitpid(pids[w], NULL, 0);

	/* every id drawn once: a sorted copy has no repeat and runs 1..N */
	static uint64_t seen[KIDS * SIDS + 1];
	bool unique = true;
	for (unsigned i = 0; i < KIDS * SIDS; i++) {
		uint64_t s = sids[i];
		unique &= s >= 1 && s <= KIDS * SIDS && seen[s]++ == 0;
	}
	T_CHECK(unique, "sids unique across 3 processes x 3000");
	unsigned sum = admitted[0] + admitted[1] + admitted[2];
	T_CHECK(sum == LIMIT, "max_sessions: exactly the limit admitted across racing workers");

	struct workers_gauges g;
	workers_others(&g); /* the supervisor (-1): every worker is "other" */
	T_CHECK(g.login == 1 + 2 + 3 && g.events_lost == 60, "gauges summed");
	T_CHECK(g.header == 3, "the PROXY headers: live, not as last published");
	workers_become(0);
	workers_others(&g);
	T_CHECK(g.login == 2 + 3, "a worker's others leave it out");
	T_CHECK(!workers_admit(admitted[0], LIMIT), "the others' open sessions count");

	bool ok;
	T_CHECK(workers_reload_acked(0, 7, &ok) && ok, "reload ack ok");
	T_CHECK(workers_reload_acked(1, 7, &ok) && !ok, "reload ack failed");
	T_CHECK(!workers_reload_acked(2, 8, &ok), "no ack for a later generation");
	T_CHECK(workers_reload_begin() == 1 && workers_reload_gen() == 1, "reload generations");

	workers_become(2);
	workers_set_log_trouble(true);
	T_CHECK(!workers_log_trouble_elsewhere(), "log trouble: its own is not elsewhere");
	workers_become(0);
	T_CHECK(workers_log_trouble_elsewhere(), "log trouble: worker 2's failing log seen by 0");
	workers_forget(1);
	workers_forget(2);
	T_CHECK(!workers_log_trouble_elsewhere(), "log trouble: a dead worker's is forgotten");
	T_CHECK(workers_admit(admitted[0], LIMIT), "a dead worker's sessions are forgotten");
	workers_totals(&g);
	T_CHECK(g.events_lost == 60 && g.login == 1, "totals keep the dead workers' log losses");
	T_DONE();
}
