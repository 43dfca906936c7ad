/*
 * Unit tests of addrtab.c: the same checks on this process's own table
 * and on the workers' shared one (in a MAP_SHARED region), plus what only
 * the shared one has: counts summed over workers, one step check-and-add
 * across processes (forked children racing for the last place), a dead
 * worker forgotten, probe runs surviving deletions (backward shift), the
 * table full (fail closed), and a worker that dies holding the lock.
 */
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "addrtab.h"
#include "bounds.h"
#include "shm.h"
#include "t.h"

static struct in6_addr key4(const char *ip)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	inet_pton(AF_INET, ip, &sa.sin_addr);
	return addrtab_key((struct sockaddr *)&sa);
}

static struct in6_addr keyn(unsigned n)
{
	struct in6_addr k;
	memset(&k, 0, sizeof(k));
	k.s6_addr[0] = 0x20;
	k.s6_addr[1] = 0x01;
	memcpy(&k.s6_addr[12], &n, sizeof(n));
	return k;
}

/* What both tables must do alike; tag names the table in the output. */
static void common(struct addrtab *t, const char *tag)
{
	char name[128];
	struct in6_addr a = key4("192.0.2.1"), b = key4("192.0.2.2");
#define NAME(s) (snprintf(name, sizeof(name), "%s: %s", tag, s), name)
	T_CHECK(addrtab_count(t, &a) == 0, NAME("empty"));
	T_CHECK(addrtab_add(t, &a) == 0 && addrtab_add(t, &a) == 0, NAME("add twice"));
	T_CHECK(addrtab_count(t, &a) == 2 && addrtab_count(t, &b) == 0, NAME("counted per address"));
	T_CHECK(addrtab_add_below(t, &a, 2) == 1, NAME("add_below at the limit refuses"));
	T_CHECK(addrtab_count(t, &a) == 2, NAME("a refused add counts nothing"));
	T_CHECK(addrtab_add_below(t, &a, 3) == 0 && addrtab_count(t, &a) == 3,
	        NAME("add_below under the limit adds"));
	addrtab_del(t, &a, 0.);
	T_CHECK(addrtab_count(t, &a) == 2, NAME("del"));

	T_CHECK(addrtab_fail(t, &a, 100., 10.) == 0 && addrtab_fail(t, &a, 101., 10.) == 0,
	        NAME("fail twice"));
	T_CHECK(addrtab_failures(t, &a, 105.) == 2, NAME("failures in the window"));
	T_CHECK(addrtab_failures(t, &a, 110.) == 0, NAME("window expired"));
	T_CHECK(addrtab_fail(t, &a, 111., 10.) == 0 && addrtab_failures(t, &a, 111.) == 1,
	        NAME("a new window after expiry"));

	addrtab_attempt_begin(t, &a);
	T_CHECK(addrtab_inflight(t, &a) == 1, NAME("attempt in flight"));
	/* limit 3: one failure + one in flight < 3, so one more may begin */
	T_CHECK(addrtab_attempt_begin_below(t, &a, 111., 3), NAME("begin_below under the limit"));
	T_CHECK(!addrtab_attempt_begin_below(t, &a, 111., 3), NAME("begin_below at the limit"));
	T_CHECK(addrtab_inflight(t, &a) == 2, NAME("a refused begin counts nothing"));
	T_CHECK(addrtab_attempt_begin_below(t, &a, 200., 3) && addrtab_inflight(t, &a) == 3,
	        NAME("the expired window no longer counts"));
	addrtab_attempt_end(t, &a);
	addrtab_attempt_end(t, &a);
	addrtab_attempt_end(t, &a);
	addrtab_attempt_end(t, &a); /* one too many: stays at 0 */
	T_CHECK(addrtab_inflight(t, &a) == 0, NAME("attempts ended"));

	addrtab_fail(t, &b, 300., 10.);
	addrtab_sweep(t, 305.);
	T_CHECK(addrtab_failures(t, &b, 305.) == 1, NAME("sweep keeps a running window"));
	addrtab_sweep(t, 311.);
	T_CHECK(addrtab_failures(t, &b, 305.) == 0, NAME("sweep drops an expired window"));
	addrtab_del(t, &a, 400.);
	addrtab_del(t, &a, 400.);
	T_CHECK(addrtab_count(t, &a) == 0, NAME("all sessions gone"));
#undef NAME
}

static void *shared_area(void)
{
	char err[128];
	void *area = shm_map(addrtab_shared_size(), err, sizeof(err));
	if (area == NULL || addrtab_shared_init(area) < 0) {
		fprintf(stderr, "%s\n", err);
		exit(1);
	}
	return area;
}

static void test_workers_sum(void)
{
	void *area = shared_area();
	struct addrtab *w0 = addrtab_new_shared(area, 0, 2), *w1 = addrtab_new_shared(area, 1, 2);
	struct in6_addr a = key4("198.51.100.7");
	addrtab_add(w0, &a);
	addrtab_add(w1, &a);
	T_CHECK(addrtab_count(w0, &a) == 2 && addrtab_count(w1, &a) == 2,
	        "shared: both workers see the sum");
	T_CHECK(addrtab_add_below(w1, &a, 2) == 1, "shared: the limit holds across workers");
	addrtab_attempt_begin(w0, &a);
	addrtab_fail(w1, &a, 10., 60.);
	T_CHECK(!addrtab_attempt_begin_below(w1, &a, 10., 2),
	        "shared: one failure in w1 + one attempt in w0 reach a limit of 2");
	addrtab_forget_worker(w0, 0);
	T_CHECK(addrtab_count(w1, &a) == 1 && addrtab_inflight(w1, &a) == 0,
	        "shared: a dead worker's sessions and attempts are forgotten");
	T_CHECK(addrtab_failures(w1, &a, 10.) == 1, "shared: the address's failures stay");
	addrtab_free(w0);
	addrtab_free(w1);
}

/* Many entries, deleted in a scattered order: every remaining one is
 * still found (the probe runs survive the backward shifts). */
static void test_probe_runs(void)
{
	void *area = shared_area();
	struct addrtab *t = addrtab_new_shared(area, 0, 1);
	const unsigned n = 20000;
	bool ok = true;
	for (unsigned i = 0; i < n; i++) {
		struct in6_addr k = keyn(i);
		ok &= addrtab_add(t, &k) == 0;
	}
	T_CHECK(ok && addrtab_entries(t) == n, "shared: 20000 entries");
	for (unsigned i = 0; i < n; i += 3) {
		struct in6_addr k = keyn(i);
		addrtab_del(t, &k, 0.);
	}
	for (unsigned i = 0; i < n; i++) {
		struct in6_addr k = keyn(i);
		ok &= addrtab_count(t, &k) == (i % 3 == 0 ? 0u : 1u);
	}
	T_CHECK(ok, "shared: every entry found after scattered deletions");
	T_CHECK(addrtab_entries(t) == n - (n + 2) / 3, "shared: deleted entries freed");
	addrtab_free(t);
}

static void test_full(void)
{
	void *area = shared_area();
	struct addrtab *t = addrtab_new_shared(area, 0, 1);
	unsigned i = 0;
	for (; i < ADDRTAB_SHARED_SLOTS; i++) {
		struct in6_addr k = keyn(i);
		if (addrtab_add(t, &k) < 0)
			break;
	}
	T_CHECK(i == ADDRTAB_SHARED_SLOTS / 4 * 3, "shared: fills to three quarters");
	struct in6_addr k = keyn(i + 1), old = keyn(0);
	T_CHECK(addrtab_add(t, &k) < 0 && addrtab_fail(t, &k, 1., 10.) < 0,
	        "shared: full, a new address is refused (fail closed)");
	T_CHECK(addrtab_add(t, &old) == 0 && addrtab_count(t, &old) == 2,
	        "shared: full, a known address still counts");
	addrtab_del(t, &old, 0.);
	addrtab_del(t, &old, 0.);
	T_CHECK(addrtab_add(t, &k) == 0, "shared: room again once one entry is gone");
	addrtab_free(t);
}

/* Forked workers race for the last places of one address: exactly the
 * limit get in. */
static void test_race(void)
{
	void *area = shared_area();
	enum { KIDS = 4, TRIES = 2000, LIMIT = 1000 };
	_Atomic unsigned *won = mmap(NULL, sizeof(*won) * KIDS, PROT_READ | PROT_WRITE,
	                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct in6_addr a = key4("203.0.113.9");
	pid_t pids[KIDS];
	for (unsigned w = 0; w < KIDS; w++) {
		if ((pids[w] = fork()) == 0) {
			struct addrtab *t = addrtab_new_shared(area, w, KIDS);
			for (unsigned i = 0; i < TRIES; i++)
				if (addrtab_add_below(t, &a, LIMIT) == 0)
					won[w]++;
			_exit(0);
		}
	}
	for (unsigned w = 0; w < KIDS; w++)
		waitpid(pids[w], NULL, 0);
	unsigned sum = 0;
	for (unsigned w = 0; w < KIDS; w++)
		sum += won[w];
	struct addrtab *t = addrtab_new_shared(area, 0, KIDS);
	T_CHECK(sum == LIMIT && addrtab_count(t, &a) == LIMIT,
	        "shared: 4 processes x 2000 tries, exactly the limit of 1000 admitted");
	addrtab_free(t);
}

/* A worker dies holding the lock: the next caller gets the lock (robust
 * mutex), the table is rebuilt, and its counts are intact. */
static void test_owner_dead(void)
{
	void *area = shared_area();
	struct addrtab *t = addrtab_new_shared(area, 0, 2);
	struct in6_addr a = key4("192.0.2.77");
	addrtab_add(t, &a);
	pid_t pid = fork();
	if (pid == 0) {
		/* the lock is the table's first member */
		shm_lock((pthread_mutex_t *)area);
		_exit(0); /* dies holding it */
	}
	waitpid(pid, NULL, 0);
	T_CHECK(addrtab_count(t, &a) == 1, "shared: a lock whose owner died is taken over");
	T_CHECK(addrtab_add(t, &a) == 0 && addrtab_count(t, &a) == 2,
	        "shared: the table works after the rebuild");
	addrtab_free(t);
}

int main(void)
{
	struct addrtab *local = addrtab_new();
	common(local, "local");
	addrtab_free(local);
	struct addrtab *sh = addrtab_new_shared(shared_area(), 0, 1);
	common(sh, "shared");
	addrtab_free(sh);
	test_workers_sum();
	test_probe_runs();
	test_full();
	test_race();
	test_owner_dead();
	T_DONE();
}
