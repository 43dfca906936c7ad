/*
 * A decrypted transcript of one session: what each leg sent and received,
 * as the proxy saw it after TLS, one time-stamped line per chunk, with
 * every secret replaced by "[redacted N bytes]" (SSLsplit's content log
 * carries the password; this one must not). One file per session in
 * transcript_dir, created 0600 with O_EXCL|O_NOFOLLOW in a directory the
 * proxy's user owns, named so that names sort by time; at most
 * transcript_max bytes, then one marker line and nothing more. Lines are
 * written by one background thread for all sessions (the event loop never
 * waits for a disk); only the file's creation happens in the loop.
 *
 * The format, one line per chunk (documented in the README):
 *   TIME LEG DIR BYTES TEXT
 *   2026-12-02T02:15:00.123Z client recv 44 <auth xmlns='...' mechanism='PLAIN'>[redacted 24
 * bytes]</auth> TIME is UTC with milliseconds; LEG is client or upstream; DIR is recv (the proxy
 * read it from that leg) or send (the proxy wrote it to that leg); BYTES is the chunk's length as
 * it crossed the leg; TEXT is the chunk with \\ \n \r \t and other control bytes escaped (\xHH), so
 * one chunk is one line. Lines starting "#" and lines with LEG "note" are the proxy's own remarks.
 */
#ifndef XI_TRANSCRIPT_H
#define XI_TRANSCRIPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bounds.h"
#include "buf.h"

/*
 * The redactor of one direction of one leg: fed the stream's bytes in
 * order, it writes them to out with the content of secret elements
 * (SASL auth/response/challenge/success, SASL2 initial-response,
 * additional-data and task-data, iq:auth password and digest, MUC
 * password; any namespace or prefix) and the values of "token"
 * attributes (FAST) replaced by "[redacted N bytes]". A secret split
 * between chunks gives one marker per chunk (transcript_redact_flush at
 * the end of each). Secret content is never copied, only counted.
 */
struct transcript_redactor {
	unsigned char st;                   /* private: where in the markup */
	bool end_tag, self_closing, bang;   /* the tag being read */
	char name[TRANSCRIPT_NAME_MAX + 1]; /* its local name (cut: never secret) */
	size_t nlen;
	bool name_long;
	char attr[TRANSCRIPT_NAME_MAX + 1]; /* the attribute being read */
	size_t alen;
	char quote;                           /* inside a value: ' or " */
	bool value_secret;                    /* that value is redacted */
	char secret[TRANSCRIPT_NAME_MAX + 1]; /* the secret element we are in */
	unsigned depth;                       /* elements open inside it (0: not in one) */
	char tag[TRANSCRIPT_NAME_MAX + 8];    /* a tag inside a secret, held */
	size_t tlen;
	bool tag_long;
	size_t redacted; /* bytes counted since the last marker */
};

/* Appends what of data (len bytes) may be shown to out. -1 on no memory. */
int transcript_redact(struct transcript_redactor *r, const char *data, size_t len, struct buf *out);
/* Writes the marker for secret bytes counted and not yet marked. */
int transcript_redact_flush(struct transcript_redactor *r, struct buf *out);

struct transcript;

enum transcript_leg {
	TRANSCRIPT_CLIENT = 0,
	TRANSCRIPT_UPSTREAM,
};

/*
 * Creates the transcript of session sid in dir (peer and local for its
 * first line) with at most max bytes. The file's name (no directory) goes
 * to name. NULL with the reason in err: the directory is missing, not a
 * directory, not owned by the proxy's user, writable by others, or the
 * file cannot be created.
 */
struct transcript *transcript_open(const char *dir, uint64_t sid, const char *peer,
                                   const char *local, size_t max, char *name, size_t namelen,
                                   char *err, size_t errlen);
/* Whether dir can take transcripts now (as transcript_open checks it):
 * 0, or -1 with the reason in err. */
int transcript_check_dir(const char *dir, char *err, size_t errlen);
/* Records one chunk the proxy read from (sent false) or wrote to (sent
 * true) a leg. t NULL is ignored. */
void transcript_chunk(struct transcript *t, enum transcript_leg leg, bool sent, const char *data,
                      size_t len);
/* Records one of the proxy's remarks. t NULL is ignored. */
void transcript_note(struct transcript *t, const char *text);
/* Ends the file (its writer closes it once the lines are out). */
void transcript_close(struct transcript *t);
/* Writes everything queued and stops the writer: at exit. */
void transcript_shutdown(void);
/* Chunks lost because the writer's queue was full, over the run. */
uint64_t transcript_dropped(void);

#endif
