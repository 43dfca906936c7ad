#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "lfile.h"
#include "bounds.h"

struct lfile {
	int fd;
	bool own_fd;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* signalled when the queue gains data or on stop */
	struct buf queue;    /* guarded by lock */
	bool stop;
	uint64_t dropped;
};

static void lfile_write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				/* stdout may be a non-blocking pipe shared with us */
				usleep(1000);
				continue;
			}
			return; /* disk full or closed: nothing sensible left */
		}
		p += w;
		n -= (size_t)w;
	}
}

/* The writer thread: swaps the queue out under the lock, writes it
 * outside. */
static void *lfile_writer(void *arg)
{
	struct lfile *f = arg;
	struct buf batch = {0};

	pthread_mutex_lock(&f->lock);
	for (;;) {
		while (f->queue.len == 0 && !f->stop)
			pthread_cond_wait(&f->cond, &f->lock);
		if (f->queue.len == 0 && f->stop)
			break;
		struct buf t = batch;
		batch = f->queue;
		f->queue = t;
		buf_reset(&f->queue);
		pthread_mutex_unlock(&f->lock);
		lfile_write_all(f->fd, buf_head(&batch), batch.len);
		buf_reset(&batch);
		pthread_mutex_lock(&f->lock);
	}
	pthread_mutex_unlock(&f->lock);
	buf_free(&batch);
	return NULL;
}

struct lfile *lfile_open(const char *path, char *err, size_t errlen)
{
	struct lfile *f = calloc(1, sizeof(*f));
	if (f == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (strcmp(path, "-") == 0) {
		f->fd = STDOUT_FILENO;
	} else {
		f->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (f->fd < 0) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			free(f);
			return NULL;
		}
		f->own_fd = true;
	}
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	if (pthread_create(&f->thread, NULL, lfile_writer, f) != 0) {
		snprintf(err, errlen, "%s: cannot start writer thread", path);
		if (f->own_fd)
			close(f->fd);
		free(f);
		return NULL;
	}
	return f;
}

void lfile_write(struct lfile *f, const char *line, size_t len)
{
	pthread_mutex_lock(&f->lock);
	if (f->queue.len + len > EVLOG_QUEUE_MAX || buf_add(&f->queue, line, len) < 0)
		f->dropped++;
	else
		pthread_cond_signal(&f->cond);
	pthread_mutex_unlock(&f->lock);
}

uint64_t lfile_dropped(const struct lfile *f)
{
	return f->dropped;
}

void lfile_close(struct lfile *f)
{
	if (f == NULL)
		return;
	pthread_mutex_lock(&f->lock);
	f->stop = true;
	pthread_cond_signal(&f->cond);
	pthread_mutex_unlock(&f->lock);
	pthread_join(f->thread, NULL);
	if (f->own_fd)
		close(f->fd);
	pthread_mutex_destroy(&f->lock);
	pthread_cond_destroy(&f->cond);
	buf_free(&f->queue);
	free(f);
}
