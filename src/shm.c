#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "log.h"
#include "shm.h"

void *shm_map(size_t size, char *err, size_t errlen)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		snprintf(err, errlen, "shared memory (%zu bytes): %s", size, strerror(errno));
		return NULL;
	}
	return p;
}

int shm_mutex_init(pthread_mutex_t *m)
{
	pthread_mutexattr_t a;
	if (pthread_mutexattr_init(&a) != 0)
		return -1;
	int rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) != 0 ||
	                 pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) != 0 ||
	                 pthread_mutex_init(m, &a) != 0
	             ? -1
	             : 0;
	pthread_mutexattr_destroy(&a);
	return rc;
}

int shm_lock(pthread_mutex_t *m)
{
	int rc = pthread_mutex_lock(m);
	if (rc == 0)
		return 0;
	if (rc == EOWNERDEAD) {
		pthread_mutex_consistent(m);
		return 1;
	}
	/* ENOTRECOVERABLE cannot happen: every owner-dead lock is made
	 * consistent above before it is let go; anything else is a bug, and
	 * going on unlocked would break the limits: this worker ends, and
	 * its supervisor forks another */
	log_warnx("shared lock: %s", strerror(rc));
	abort();
}

void shm_unlock(pthread_mutex_t *m)
{
	pthread_mutex_unlock(m);
}
