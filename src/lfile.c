#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bounds.h"
#include "buf.h"
#include "lfile.h"
#include "log.h"

struct lfile {
	char path[256]; /* for the warnings */
	int fd;
	bool own_fd;
	bool regular; /* a regular file: a cut line can be truncated away */
	pthread_t thread;
	bool threadless; /* written by lfile_write itself (lfile_set_threadless) */
	pthread_mutex_t lock;
	pthread_cond_t cond; /* signalled on stop, and when the queue gains data while waiting */
	/* guarded by lock: */
	struct buf queue;   /* whole lines, oldest first */
	size_t bound;       /* queue + inflight may not pass it */
	size_t inflight;    /* bytes the writer holds outside the lock */
	bool busy;          /* the writer is in write(2) */
	bool waiting;       /* the writer sleeps on cond until the queue gains data */
	struct lfile *next; /* in lfile_all */
	bool stop;
	bool failing; /* the last write failed; what it held is queued again */
	int err;      /* its errno */
	uint64_t dropped, dropped_bytes;
	time_t warned, warned_full; /* last warnings on stderr (one per LFILE_WARN_EVERY) */
};

/* Seconds between two warnings about the same failing file. */
#define LFILE_WARN_EVERY 10
/* After a failed write the writer waits this long before the next try,
 * doubling up to the maximum: a full disk is retried, not hammered. */
#define LFILE_RETRY_MIN_MS 50
#define LFILE_RETRY_MAX_MS 1000
/* Queued bytes past which a line wakes the writer at once, kicks or not. */
#define LFILE_KICK_BYTES (64 * 1024)

/*
 * Waking the writer for every line (a futex call, two context switches, a
 * lock the loop then waited on) cost a fifth of the proxy's CPU per login.
 * Once the event loop kicks (lfile_kick_all, before each poll), a line
 * only joins the queue and the kick wakes the writer once for all the
 * lines of that loop round: they reach the file as soon as before, the
 * round's I/O done. Before the first kick (start-up, tools, unit tests)
 * each line wakes the writer itself.
 */
static bool lfile_kicked;
static struct lfile *lfile_all; /* every open lfile, for the kick */
static bool lfile_no_threads;

void lfile_set_threadless(bool on)
{
	lfile_no_threads = on;
}

/* Writes what it can of p; returns the bytes written, with *err the errno
 * that stopped it (0: all of it). */
static size_t lfile_write_some(int fd, const char *p, size_t n, int *err)
{
	size_t done = 0;
	unsigned spins = 0;
	*err = 0;
	while (done < n) {
		ssize_t w = write(fd, p + done, n - done);
		if (w > 0) {
			done += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN && ++spins < 1000) {
			/* stdout may be a non-blocking pipe shared with us */
			usleep(1000);
			continue;
		}
		*err = w < 0 ? errno : ENOSPC;
		break;
	}
	return done;
}

/* Bytes of p up to and with its last newline: the whole lines in it. */
static size_t lfile_whole(const char *p, size_t n)
{
	while (n > 0 && p[n - 1] != '\n')
		n--;
	return n;
}

/*
 * With workers = N every worker appends to the same files. On a regular
 * file opened O_APPEND one write(2) is one piece (the kernel holds the
 * inode for it), so a batch of whole lines never interleaves with
 * another's. A pipe (event_log = -) keeps a write whole only up to
 * PIPE_BUF bytes: then the batch goes out in whole-line pieces of at most
 * that (a single line longer than PIPE_BUF goes alone, and could still be
 * cut by another worker's line: a reason to log to a file with workers).
 */
static bool lfile_multi;

void lfile_set_shared(bool on)
{
	lfile_multi = on;
}

static size_t lfile_write_batch(const struct lfile *f, const char *p, size_t n, int *err)
{
	if (!lfile_multi || f->regular)
		return lfile_write_some(f->fd, p, n, err);
	size_t done = 0;
	*err = 0;
	while (done < n && *err == 0) {
		size_t piece = lfile_whole(p + done, n - done < PIPE_BUF ? n - done : PIPE_BUF);
		if (piece == 0) { /* one line longer than PIPE_BUF */
			const char *nl = memchr(p + done, '\n', n - done);
			piece = nl != NULL ? (size_t)(nl - (p + done)) + 1 : n - done;
		}
		done += lfile_write_some(f->fd, p + done, piece, err);
	}
	return done;
}

/*
 * After a write that stopped inside a line (a short write, then ENOSPC):
 * the cut tail is cut off the file again, so that the file holds whole
 * lines only (cut bytes of the file's end: the line's written part).
 */
static void lfile_cut_tail(struct lfile *f, size_t cut)
{
	struct stat st;
	if (cut == 0 || !f->regular || fstat(f->fd, &st) < 0 || (size_t)st.st_size < cut)
		return;
	/* with workers = N others append to the same file: the cut is ours
	 * only while our write still ends the file (O_APPEND leaves the
	 * offset at its end); else it stays, and the reader meets one torn
	 * line, which is said here */
	off_t end = lseek(f->fd, 0, SEEK_CUR);
	if (end != st.st_size) {
		log_warnx("%s: a partial line stays (another writer appended after it)", f->path);
		return;
	}
	if (ftruncate(f->fd, st.st_size - (off_t)cut) < 0)
		log_warnx("%s: cannot cut a partial line off: %s", f->path, strerror(errno));
}

/* A warning about f into msg (under the lock), at most one per
 * LFILE_WARN_EVERY for each kind (last); msg stays empty otherwise. It is
 * printed once the lock is let go: stderr may block, the loop must not. */
static void lfile_warn(struct lfile *f, time_t *last, const char *what, char *msg, size_t n)
{
	time_t now = time(NULL);
	msg[0] = '\0';
	if (now - *last < LFILE_WARN_EVERY)
		return;
	*last = now;
	snprintf(msg, n, "%s: %s: %s; %zu bytes queued, %llu lines dropped so far", f->path, what,
	         strerror(f->err), f->queue.len + f->inflight, (unsigned long long)f->dropped);
}

/* Prints msg (if any) with the lock let go for it (the writer thread). */
static void lfile_say(struct lfile *f, const char *msg)
{
	if (msg[0] == '\0')
		return;
	pthread_mutex_unlock(&f->lock);
	log_warnx("%s", msg);
	pthread_mutex_lock(&f->lock);
}

/* Puts the unwritten tail of a batch back in front of the queue (what
 * came in meanwhile stays behind it). */
static void lfile_requeue(struct lfile *f, const char *p, size_t n)
{
	if (n == 0)
		return;
	struct buf b = {0};
	if (buf_add(&b, p, n) < 0 || buf_add(&b, buf_head(&f->queue), f->queue.len) < 0) {
		f->dropped_bytes += n; /* out of memory: counted, lines are whole */
		buf_free(&b);
		return;
	}
	buf_free(&f->queue);
	f->queue = b;
}

static void lfile_sleep(struct lfile *f, unsigned ms)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	while (!f->stop && pthread_cond_timedwait(&f->cond, &f->lock, &t) == 0)
		;
}

/*
 * The writer thread: takes the queue out under the lock and writes it
 * outside. What a failed write (disk full, I/O error) did not put on the
 * file goes back in front of the queue, the file is cut back to whole
 * lines, and the write is tried again after a pause. Once stopped it
 * writes what is queued, unless a write fails: then what is left stays in
 * the queue for lfile_close() to count or hand on.
 */
static void *lfile_writer(void *arg)
{
	struct lfile *f = arg;
	struct buf batch = {0};
	unsigned backoff = LFILE_RETRY_MIN_MS;

	pthread_mutex_lock(&f->lock);
	for (;;) {
		while (f->queue.len == 0 && !f->stop) {
			f->waiting = true;
			pthread_cond_wait(&f->cond, &f->lock);
			f->waiting = false;
		}
		if (f->queue.len == 0 || (f->stop && f->failing))
			break;
		struct buf t = batch;
		batch = f->queue;
		f->queue = t;
		buf_reset(&f->queue);
		f->inflight = batch.len;
		f->busy = true;
		pthread_mutex_unlock(&f->lock);

		int err;
		size_t done = lfile_write_batch(f, buf_head(&batch), batch.len, &err);
		size_t whole = lfile_whole(buf_head(&batch), done);
		if (err != 0)
			lfile_cut_tail(f, done - whole);

		pthread_mutex_lock(&f->lock);
		f->busy = false;
		f->inflight = 0;
		char msg[512] = "";
		if (err == 0) {
			if (f->failing)
				snprintf(msg, sizeof(msg),
				         "%s: writing again (%llu lines dropped while it failed)",
				         f->path, (unsigned long long)f->dropped);
			f->failing = false;
			backoff = LFILE_RETRY_MIN_MS;
			buf_reset(&batch);
			lfile_say(f, msg);
			continue;
		}
		lfile_requeue(f, buf_head(&batch) + whole, batch.len - whole);
		buf_reset(&batch);
		bool first = !f->failing;
		f->failing = true;
		f->err = err;
		if (first)
			f->warned = 0;
		lfile_warn(f, &f->warned, "write failed", msg, sizeof(msg));
		lfile_say(f, msg);
		lfile_sleep(f, backoff);
		backoff = backoff * 2 > LFILE_RETRY_MAX_MS ? LFILE_RETRY_MAX_MS : backoff * 2;
	}
	pthread_mutex_unlock(&f->lock);
	buf_free(&batch);
	return NULL;
}

static int lfile_open_fd(const char *path, bool *own, bool *regular, char *err, size_t errlen)
{
	struct stat st;
	int fd = STDOUT_FILENO;
	*own = false;
	if (strcmp(path, "-") != 0) {
		fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (fd < 0) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			return -1;
		}
		*own = true;
	}
	*regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
	return fd;
}

struct lfile *lfile_open(const char *path, char *err, size_t errlen)
{
	struct lfile *f = calloc(1, sizeof(*f));
	if (f == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	snprintf(f->path, sizeof(f->path), "%s", strcmp(path, "-") == 0 ? "standard output" : path);
	f->fd = lfile_open_fd(path, &f->own_fd, &f->regular, err, errlen);
	if (f->fd < 0) {
		free(f);
		return NULL;
	}
	f->bound = DEFAULT_EVENT_LOG_QUEUE;
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	f->threadless = lfile_no_threads;
	if (!f->threadless && pthread_create(&f->thread, NULL, lfile_writer, f) != 0) {
		snprintf(err, errlen, "%s: cannot start writer thread", path);
		if (f->own_fd)
			close(f->fd);
		pthread_mutex_destroy(&f->lock);
		pthread_cond_destroy(&f->cond);
		free(f);
		return NULL;
	}
	f->next = lfile_all;
	lfile_all = f;
	return f;
}

/* A threadless file's line, written at once: whole, or cut back off. */
static int lfile_write_now(struct lfile *f, const char *line, size_t len)
{
	int err;
	size_t done = lfile_write_some(f->fd, line, len, &err);
	if (err == 0)
		return 0;
	lfile_cut_tail(f, done);
	f->failing = true;
	f->err = err;
	f->dropped++;
	f->dropped_bytes += len;
	return -1;
}

int lfile_write(struct lfile *f, const char *line, size_t len)
{
	int rc = 0;
	char msg[512] = "";
	if (f->threadless)
		return lfile_write_now(f, line, len);
	pthread_mutex_lock(&f->lock);
	if (f->queue.len + f->inflight + len > f->bound || buf_add(&f->queue, line, len) < 0) {
		f->dropped++;
		f->dropped_bytes += len;
		rc = -1;
		lfile_warn(f, &f->warned_full,
		           f->failing ? "queue full, lines dropped" : "queue full (disk too slow)",
		           msg, sizeof(msg));
	} else if (f->waiting && (!lfile_kicked || f->queue.len >= LFILE_KICK_BYTES)) {
		/* a busy writer takes the line on its next round anyway */
		pthread_cond_signal(&f->cond);
	}
	pthread_mutex_unlock(&f->lock);
	if (msg[0])
		log_warnx("%s", msg);
	return rc;
}

void lfile_kick_all(void)
{
	lfile_kicked = true;
	for (struct lfile *f = lfile_all; f != NULL; f = f->next) {
		pthread_mutex_lock(&f->lock);
		if (f->waiting && f->queue.len > 0)
			pthread_cond_signal(&f->cond);
		pthread_mutex_unlock(&f->lock);
	}
}

void lfile_set_bound(struct lfile *f, size_t bytes)
{
	pthread_mutex_lock(&f->lock);
	f->bound = bytes;
	pthread_mutex_unlock(&f->lock);
}

void lfile_status(struct lfile *f, struct lfile_status *st)
{
	pthread_mutex_lock(&f->lock);
	st->failing = f->failing;
	st->err = f->err;
	st->queued = f->queue.len + f->inflight;
	st->dropped = f->dropped;
	pthread_mutex_unlock(&f->lock);
}

/* Stops the writer; what it could not write is left in f->queue. */
static void lfile_stop(struct lfile *f)
{
	if (f->threadless)
		return;
	pthread_mutex_lock(&f->lock);
	f->stop = true;
	pthread_cond_signal(&f->cond);
	pthread_mutex_unlock(&f->lock);
	pthread_join(f->thread, NULL);
}

static void lfile_free(struct lfile *f)
{
	for (struct lfile **p = &lfile_all; *p != NULL; p = &(*p)->next)
		if (*p == f) {
			*p = f->next;
			break;
		}
	if (f->own_fd)
		close(f->fd);
	pthread_mutex_destroy(&f->lock);
	pthread_cond_destroy(&f->cond);
	buf_free(&f->queue);
	free(f);
}

static uint64_t lfile_count_lines(const struct buf *b)
{
	uint64_t n = 0;
	for (size_t i = 0; i < b->len; i++)
		n += buf_head(b)[i] == '\n';
	return n;
}

void lfile_close_into(struct lfile *f, struct lfile *next)
{
	if (f == NULL)
		return;
	lfile_stop(f);
	if (f->queue.len > 0 && next != NULL) {
		/* the old file's unwritten lines go first into the new one */
		pthread_mutex_lock(&next->lock);
		lfile_requeue(next, buf_head(&f->queue), f->queue.len);
		next->dropped += f->dropped;
		next->dropped_bytes += f->dropped_bytes;
		pthread_cond_signal(&next->cond);
		pthread_mutex_unlock(&next->lock);
	} else if (f->queue.len > 0) {
		log_warnx("%s: %llu lines (%zu bytes) could not be written: %s", f->path,
		          (unsigned long long)lfile_count_lines(&f->queue), f->queue.len,
		          strerror(f->err));
	}
	lfile_free(f);
}

void lfile_close(struct lfile *f)
{
	lfile_close_into(f, NULL);
}
