/*
 * Memory the workers share (workers = N): one MAP_SHARED anonymous mapping
 * made by the supervisor before it forks, so every worker sees the same
 * pages at the same address, and the process-shared, robust mutexes that
 * guard what lives in it. A worker that dies holding a lock does not stop
 * the others: the next locker is told (shm_lock returns 1), repairs what
 * the lock guards and goes on.
 */
#ifndef XI_SHM_H
#define XI_SHM_H

#include <pthread.h>
#include <stddef.h>

/* size bytes of zeroed memory shared with the children forked after it;
 * NULL with a reason in err. Never unmapped (it lives as the process). */
void *shm_map(size_t size, char *err, size_t errlen);
/* Initializes m in shared memory: PTHREAD_PROCESS_SHARED and
 * PTHREAD_MUTEX_ROBUST. -1 if the system refuses either. */
int shm_mutex_init(pthread_mutex_t *m);
/* Locks m. 0: locked; 1: locked, but its last owner died holding it (the
 * mutex is marked consistent again; what it guards may be half-changed
 * and must be repaired by the caller before it unlocks). */
int shm_lock(pthread_mutex_t *m);
void shm_unlock(pthread_mutex_t *m);

#endif
