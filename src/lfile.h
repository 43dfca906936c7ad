/*
 * An append-only file written by a background thread, so that a slow disk
 * never stalls the event loop: the loop appends whole lines to a bounded
 * queue; the writer thread empties it. Used by the event log and the TLS
 * key log. "-" means standard output.
 */
#ifndef XI_LFILE_H
#define XI_LFILE_H

#include <stddef.h>
#include <stdint.h>

struct lfile;

/* Opens path for appending (created 0600: a key log is a secret) and
 * starts its writer. NULL with a reason in err. */
struct lfile *lfile_open(const char *path, char *err, size_t errlen);
/* Queues one complete line (with its newline). Past the queue bound the
 * line is dropped and counted. Never blocks on I/O. */
void lfile_write(struct lfile *f, const char *line, size_t len);
/* Lines dropped so far because the disk could not keep up. */
uint64_t lfile_dropped(const struct lfile *f);
/* Waits until everything queued is written, stops the writer, closes. */
void lfile_close(struct lfile *f);

#endif
