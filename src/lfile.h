/*
 * An append-only file written by a background thread, so that a slow disk
 * never stalls the event loop: the loop appends whole lines to a bounded
 * queue; the writer thread empties it. The file only ever holds whole
 * lines: what a failed write (a full disk, an I/O error) did not write,
 * and the part of a line it cut, stay queued and are tried again. Used by
 * the event log and the TLS key log. "-" means standard output.
 */
#ifndef XI_LFILE_H
#define XI_LFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lfile;

struct lfile_status {
	bool failing;     /* the last write failed (the lines wait in the queue) */
	int err;          /* why, an errno */
	size_t queued;    /* bytes not written yet */
	uint64_t dropped; /* lines refused because the queue was full */
};

/* Opens path for appending (created 0600: a key log is a secret) and
 * starts its writer. NULL with a reason in err. */
struct lfile *lfile_open(const char *path, char *err, size_t errlen);
/* From now on, files opened are written by lfile_write itself, with no
 * writer thread: the workers' supervisor, which forks, and must not fork
 * while another thread holds a lock the child would inherit held; it
 * writes a few lines in its life. */
void lfile_set_threadless(bool on);
/* Other processes (workers) append to the same files: writes to a pipe
 * go out in whole-line pieces of at most PIPE_BUF. */
void lfile_set_shared(bool on);
/* Queues one complete line (with its newline). Returns 0, or -1 when the
 * queue (its bound, DEFAULT_EVENT_LOG_QUEUE unless set, the lines being
 * written included) is full: the line is dropped and counted. Never blocks
 * on I/O. */
int lfile_write(struct lfile *f, const char *line, size_t len);
/* Called by the event loop before it polls: wakes each writer once for
 * the lines queued in that round. From the first call on, a line no
 * longer wakes its writer itself (unless the queue is long). */
void lfile_kick_all(void);
void lfile_set_bound(struct lfile *f, size_t bytes);
void lfile_status(struct lfile *f, struct lfile_status *st);
/* Waits until everything queued is written (or a write fails), stops the
 * writer, closes; lines it could not write are reported on stderr. */
void lfile_close(struct lfile *f);
/* The same, but what could not be written goes in front of next's queue
 * (a reopened log loses nothing); f or next may be NULL. */
void lfile_close_into(struct lfile *f, struct lfile *next);

#endif
