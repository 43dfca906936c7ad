/*
 * A byte queue: append at the tail, consume at the head. Used for each
 * leg's output and for the event log. Memory grows on demand; callers
 * bound it (the legs by their high/low watermarks, see bounds.h).
 */
#ifndef XI_BUF_H
#define XI_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct buf {
	char *data;
	size_t off; /* first unconsumed byte */
	size_t len; /* unconsumed bytes, from data + off */
	size_t cap;
};

/* Appends n bytes. Returns 0, or -1 on out of memory (buf unchanged). */
int buf_add(struct buf *b, const void *p, size_t n);
/* Appends a NUL-terminated string. */
int buf_adds(struct buf *b, const char *s);
/* Appends formatted text. */
int buf_addf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops n bytes from the head (n <= len). */
void buf_consume(struct buf *b, size_t n);
/* The unconsumed bytes (a valid pointer even before any storage). */
const char *buf_head(const struct buf *b);
void buf_reset(struct buf *b);
/* Frees the storage; the buf is empty and reusable. */
void buf_free(struct buf *b);

#endif
