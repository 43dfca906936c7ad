#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "transcript.h"

/* ------------------------------------------------------------ redactor */

enum {
	R_TEXT = 0,
	R_TAG_START, /* just after '<' */
	R_NAME,      /* the element's name */
	R_IN_TAG,    /* between attributes */
	R_ATTR,      /* an attribute's name */
	R_VALUE,     /* inside a quoted value */
};

/* Elements whose content is a secret or carries one, by local name in
 * any namespace: SASL (RFC 6120 6.4) and SASL2 (XEP-0388) payloads and
 * outcomes (SCRAM proofs and signatures, PLAIN passwords, FAST tokens
 * inside SASL2 <success>), XEP-0480 task data (password hashes),
 * XEP-0078 iq:auth, XEP-0045 room passwords. A namespace-blind match
 * over-redacts an unrelated <response> rather than miss a prefixed one. */
static const char *const transcript_secret_names[] = {
    "auth",      "response", "challenge", "success", "initial-response", "additional-data",
    "task-data", "password", "digest",
};

static bool transcript_is_secret(const char *name)
{
	for (size_t i = 0; i < sizeof(transcript_secret_names) / sizeof(transcript_secret_names[0]);
	     i++)
		if (strcmp(name, transcript_secret_names[i]) == 0)
			return true;
	return false;
}

static bool transcript_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int transcript_redact_flush(struct transcript_redactor *r, struct buf *out)
{
	if (r->redacted == 0)
		return 0;
	int rc = buf_addf(out, "[redacted %zu bytes]", r->redacted);
	r->redacted = 0;
	return rc < 0 ? -1 : 0;
}

/* One byte of the stream as it is shown: inside a secret element, a tag
 * is held (to find the one that ends it) and text is counted; outside,
 * it is shown, but for a secret attribute value's, which is counted. */
static int transcript_put(struct transcript_redactor *r, char c, struct buf *out)
{
	if (r->depth > 0) {
		if (r->st == R_TEXT) {
			r->redacted++;
		} else if (r->tlen < sizeof(r->tag)) {
			r->tag[r->tlen++] = c;
		} else {
			r->tag_long = true;
			r->redacted++;
		}
		return 0;
	}
	if (r->st == R_VALUE && r->value_secret && c != r->quote) {
		r->redacted++;
		return 0;
	}
	return buf_add(out, &c, 1);
}

/* A tag ended ('>' was put): secret elements start and end here. */
static int transcript_tag_end(struct transcript_redactor *r, struct buf *out)
{
	r->name[r->nlen] = '\0';
	if (r->depth == 0) {
		if (!r->bang && !r->end_tag && !r->self_closing && !r->name_long &&
		    transcript_is_secret(r->name)) {
			memcpy(r->secret, r->name, r->nlen + 1);
			r->depth = 1;
		}
		return 0;
	}
	if (!r->bang && r->end_tag && r->depth == 1 && !r->name_long &&
	    strcmp(r->name, r->secret) == 0) {
		/* the secret's own end tag: the marker, then the tag */
		r->depth = 0;
		if (transcript_redact_flush(r, out) < 0)
			return -1;
		if (r->tag_long)
			return buf_addf(out, "</%s>", r->secret) < 0 ? -1 : 0;
		return buf_add(out, r->tag, r->tlen);
	}
	if (!r->bang && r->end_tag && r->depth > 1)
		r->depth--;
	else if (!r->bang && !r->end_tag && !r->self_closing)
		r->depth++;
	r->redacted += r->tlen;
	return 0;
}

static void transcript_name_add(char *name, size_t *n, bool *too_long, char c)
{
	if (c == ':') { /* a prefix: the local name follows */
		*n = 0;
		*too_long = false;
		return;
	}
	if (*n < TRANSCRIPT_NAME_MAX)
		name[(*n)++] = c;
	else
		*too_long = true;
}

int transcript_redact(struct transcript_redactor *r, const char *data, size_t len, struct buf *out)
{
	for (size_t i = 0; i < len; i++) {
		char c = data[i];
	again:
		switch (r->st) {
		case R_TEXT:
			if (c == '<') {
				r->st = R_TAG_START;
				r->end_tag = r->self_closing = r->bang = r->name_long = false;
				r->tag_long = false;
				r->nlen = r->tlen = r->alen = 0;
			}
			break;
		case R_TAG_START:
			if (c == '/') {
				r->end_tag = true;
				r->st = R_NAME;
			} else if (c == '!' || c == '?') {
				r->bang = true;
				r->st = R_IN_TAG;
			} else {
				r->st = R_NAME;
				goto again;
			}
			break;
		case R_NAME:
			if (transcript_space(c) || c == '/' || c == '>') {
				r->st = R_IN_TAG;
				goto again;
			}
			transcript_name_add(r->name, &r->nlen, &r->name_long, c);
			break;
		case R_IN_TAG:
			if (c == '>') {
				if (transcript_put(r, c, out) < 0)
					return -1;
				r->st = R_TEXT;
				if (transcript_tag_end(r, out) < 0)
					return -1;
				continue;
			}
			if (c == '/') {
				r->self_closing = true;
			} else if (c == '\'' || c == '"') {
				r->quote = c;
				r->attr[r->alen] = '\0';
				/* FAST (XEP-0484) hands out its token in an attribute */
				r->value_secret = r->depth == 0 && strcmp(r->attr, "token") == 0;
				r->st = R_VALUE;
			} else if (!transcript_space(c) && c != '=') {
				r->self_closing = false;
				r->alen = 0;
				bool ignored = false;
				transcript_name_add(r->attr, &r->alen, &ignored, c);
				r->st = R_ATTR;
			}
			break;
		case R_ATTR:
			if (transcript_space(c) || c == '=' || c == '>' || c == '/') {
				r->st = R_IN_TAG;
				goto again;
			}
			{
				bool ignored = false;
				transcript_name_add(r->attr, &r->alen, &ignored, c);
			}
			break;
		case R_VALUE:
			if (c == r->quote) {
				if (r->value_secret && transcript_redact_flush(r, out) < 0)
					return -1;
				r->value_secret = false;
				r->st = R_IN_TAG;
				if (transcript_put(r, c, out) < 0)
					return -1;
				continue;
			}
			break;
		default:
			break;
		}
		if (transcript_put(r, c, out) < 0)
			return -1;
	}
	return 0;
}

/* ------------------------------------------------------------ the writer */

/* One thread writes every transcript: a queue of lines, each naming its
 * file, oldest first; a close record closes the file after its lines. */
struct transcript_rec {
	struct transcript_rec *next;
	int fd;
	bool close;
	size_t len;
	char data[];
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool started, stop;
	struct transcript_rec *head, *tail;
	size_t queued;
	uint64_t dropped;
} tw = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void *transcript_writer(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&tw.lock);
	for (;;) {
		while (tw.head == NULL && !tw.stop)
			pthread_cond_wait(&tw.cond, &tw.lock);
		if (tw.head == NULL && tw.stop)
			break;
		struct transcript_rec *batch = tw.head;
		tw.head = tw.tail = NULL;
		pthread_mutex_unlock(&tw.lock);
		size_t done = 0;
		while (batch != NULL) {
			struct transcript_rec *r = batch;
			batch = r->next;
			for (size_t off = 0; off < r->len;) {
				ssize_t n = write(r->fd, r->data + off, r->len - off);
				if (n < 0 && errno == EINTR)
					continue;
				if (n <= 0)
					break; /* a full disk: the line is lost */
				off += (size_t)n;
			}
			if (r->close)
				close(r->fd);
			done += r->len;
			free(r);
		}
		pthread_mutex_lock(&tw.lock);
		tw.queued -= done;
	}
	pthread_mutex_unlock(&tw.lock);
	return NULL;
}

/* Queues len bytes for fd (close: then closes it). A line that does not
 * fit in TRANSCRIPT_QUEUE is dropped (-1); a close is always queued. */
static int transcript_queue(int fd, const char *data, size_t len, bool close_after)
{
	struct transcript_rec *r = malloc(sizeof(*r) + len);
	if (r == NULL) {
		if (close_after)
			close(fd); /* nothing of it is queued any more */
		return -1;
	}
	r->next = NULL;
	r->fd = fd;
	r->close = close_after;
	r->len = len;
	memcpy(r->data, data, len);
	pthread_mutex_lock(&tw.lock);
	if (!close_after && tw.queued + len > TRANSCRIPT_QUEUE) {
		tw.dropped++;
		pthread_mutex_unlock(&tw.lock);
		free(r);
		return -1;
	}
	if (!tw.started) {
		if (pthread_create(&tw.thread, NULL, transcript_writer, NULL) != 0) {
			pthread_mutex_unlock(&tw.lock);
			free(r);
			if (close_after)
				close(fd);
			return -1;
		}
		tw.started = true;
	}
	if (tw.tail)
		tw.tail->next = r;
	else
		tw.head = r;
	tw.tail = r;
	tw.queued += len;
	pthread_cond_signal(&tw.cond);
	pthread_mutex_unlock(&tw.lock);
	return 0;
}

void transcript_shutdown(void)
{
	pthread_mutex_lock(&tw.lock);
	bool started = tw.started;
	tw.stop = true;
	pthread_cond_signal(&tw.cond);
	pthread_mutex_unlock(&tw.lock);
	if (started)
		pthread_join(tw.thread, NULL);
	pthread_mutex_lock(&tw.lock);
	tw.started = tw.stop = false;
	pthread_mutex_unlock(&tw.lock);
}

uint64_t transcript_dropped(void)
{
	pthread_mutex_lock(&tw.lock);
	uint64_t n = tw.dropped;
	pthread_mutex_unlock(&tw.lock);
	return n;
}

/* ------------------------------------------------------------ a session's file */

struct transcript {
	int fd;
	size_t max, written;
	bool full;
	uint64_t lost;                        /* lines the writer's queue could not take */
	struct transcript_redactor red[2][2]; /* [leg][sent] */
	struct buf shown, line;
};

static void transcript_time(char *out, size_t len, bool compact)
{
	struct timespec ts;
	struct tm tm;
	char when[40];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), compact ? "%Y%m%dT%H%M%S" : "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, len, "%.24s.%03dZ", when, (int)(ts.tv_nsec / 1000000) % 1000);
}

/* Sends the line being built (t->line) to the file, within max: the line
 * that would pass it is replaced by the marker, and nothing follows. */
static void transcript_emit(struct transcript *t)
{
	if (t->full) {
		buf_reset(&t->line);
		return;
	}
	if (t->written + t->line.len > t->max) {
		char ts[40];
		transcript_time(ts, sizeof(ts), false);
		buf_reset(&t->line);
		buf_addf(&t->line,
		         "%s note - - transcript_max (%zu bytes) reached: nothing more "
		         "of this session is recorded\n",
		         ts, t->max);
		t->full = true;
	}
	if (t->line.len > 0 && transcript_queue(t->fd, buf_head(&t->line), t->line.len, false) == 0)
		t->written += t->line.len;
	else if (t->line.len > 0)
		t->lost++;
	buf_reset(&t->line);
}

/* Appends p as one line's TEXT: control bytes and '\' escaped. */
static void transcript_escape(struct buf *line, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		switch (c) {
		case '\\':
			buf_add(line, "\\\\", 2);
			break;
		case '\n':
			buf_add(line, "\\n", 2);
			break;
		case '\r':
			buf_add(line, "\\r", 2);
			break;
		case '\t':
			buf_add(line, "\\t", 2);
			break;
		default:
			if (c < 0x20 || c == 0x7f)
				buf_addf(line, "\\x%02x", c);
			else
				buf_add(line, &p[i], 1);
		}
	}
}

/* Checks that dir is a directory of the proxy's user that no one else
 * may write to; its descriptor, or -1 with the reason in err. */
static int transcript_dir(const char *dir, char *err, size_t errlen)
{
	struct stat st;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0) {
		snprintf(err, errlen, "transcript_dir %s: %s", dir, strerror(errno));
		return -1;
	}
	if (fstat(dfd, &st) < 0 || st.st_uid != geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH))) {
		snprintf(err, errlen,
		         "transcript_dir %s: not owned by the proxy's user, or writable by others",
		         dir);
		close(dfd);
		return -1;
	}
	return dfd;
}

int transcript_check_dir(const char *dir, char *err, size_t errlen)
{
	int dfd = transcript_dir(dir, err, errlen);
	if (dfd < 0)
		return -1;
	close(dfd);
	return 0;
}

struct transcript *transcript_open(const char *dir, uint64_t sid, const char *peer,
                                   const char *local, size_t max, char *name, size_t namelen,
                                   char *err, size_t errlen)
{
	char ts[40], started[40];
	name[0] = '\0';
	int dfd = transcript_dir(dir, err, errlen);
	if (dfd < 0)
		return NULL;
	transcript_time(ts, sizeof(ts), true);
	transcript_time(started, sizeof(started), false);
	snprintf(name, namelen, "%s-%llu.txt", ts, (unsigned long long)sid);
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	int saved = errno;
	close(dfd);
	if (fd < 0) {
		snprintf(err, errlen, "transcript %s/%s: %s", dir, name, strerror(saved));
		name[0] = '\0';
		return NULL;
	}
	struct transcript *t = calloc(1, sizeof(*t));
	if (t == NULL) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		name[0] = '\0';
		return NULL;
	}
	t->fd = fd;
	t->max = max;
	buf_addf(&t->line,
	         "# xmpp-inspect transcript of session %llu: client %s, proxy %s, started %s\n"
	         "# TIME LEG DIR BYTES TEXT: LEG client|upstream, DIR recv (read from the leg) or "
	         "send (written to it), BYTES as it crossed the leg, TEXT with \\n \\r \\t \\\\ "
	         "\\xHH escapes; secrets as [redacted N bytes]\n",
	         (unsigned long long)sid, peer, local, started);
	transcript_emit(t);
	return t;
}

void transcript_chunk(struct transcript *t, enum transcript_leg leg, bool sent, const char *data,
                      size_t len)
{
	char ts[40];
	if (t == NULL || t->full || len == 0)
		return;
	struct transcript_redactor *r = &t->red[leg == TRANSCRIPT_UPSTREAM][sent];
	buf_reset(&t->shown);
	if (transcript_redact(r, data, len, &t->shown) < 0 ||
	    transcript_redact_flush(r, &t->shown) < 0) {
		buf_reset(&t->shown);
		buf_adds(&t->shown, "[not recorded: out of memory]");
	}
	transcript_time(ts, sizeof(ts), false);
	buf_addf(&t->line, "%s %s %s %zu ", ts, leg == TRANSCRIPT_CLIENT ? "client" : "upstream",
	         sent ? "send" : "recv", len);
	if (t->lost > 0) {
		buf_addf(&t->line, "[%llu earlier lines lost: the writer was behind] ",
		         (unsigned long long)t->lost);
		t->lost = 0;
	}
	transcript_escape(&t->line, buf_head(&t->shown), t->shown.len);
	buf_add(&t->line, "\n", 1);
	buf_reset(&t->shown);
	transcript_emit(t);
}

void transcript_note(struct transcript *t, const char *text)
{
	char ts[40];
	if (t == NULL || t->full)
		return;
	transcript_time(ts, sizeof(ts), false);
	buf_addf(&t->line, "%s note - - ", ts);
	transcript_escape(&t->line, text, strlen(text));
	buf_add(&t->line, "\n", 1);
	transcript_emit(t);
}

void transcript_close(struct transcript *t)
{
	if (t == NULL)
		return;
	transcript_queue(t->fd, "", 0, true);
	buf_free(&t->shown);
	buf_free(&t->line);
	free(t);
}
