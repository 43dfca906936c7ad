#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bounds.h"
#include "leg.h"
#include "secmem.h"
#include "tls.h"

/* A transport moves bytes: >0 bytes moved, 0 end of stream (read), -1
 * would block, -2 error (why filled). */
struct leg_transport {
	const char *name;
	ssize_t (*read)(struct leg *l, char *p, size_t n, char *why, size_t whylen);
	ssize_t (*write)(struct leg *l, const char *p, size_t n, char *why, size_t whylen);
};

/* Chunks read per wakeup from one leg, so one busy leg cannot starve the
 * others sharing the loop. */
#define LEG_READS_PER_WAKEUP 4

/* Every leg reads into this one buffer; what was read (an <auth> with a
 * password) is scrubbed once delivered, or it would stay until a later
 * read happens to overwrite it. */
static char leg_rbuf[READ_CHUNK];

static ssize_t leg_plain_read(struct leg *l, char *p, size_t n, char *why, size_t whylen)
{
	ssize_t r = recv(l->fd, p, n, 0);
	if (r >= 0)
		return r;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return -1;
	snprintf(why, whylen, "%s", strerror(errno));
	return -2;
}

static ssize_t leg_plain_write(struct leg *l, const char *p, size_t n, char *why, size_t whylen)
{
	ssize_t r = send(l->fd, p, n, MSG_NOSIGNAL);
	if (r >= 0)
		return r;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return -1;
	snprintf(why, whylen, "%s", strerror(errno));
	return -2;
}

static ssize_t leg_tls_read(struct leg *l, char *p, size_t n, char *why, size_t whylen)
{
	l->want_write_for_read = false;
	ERR_clear_error(); /* SSL_get_error reads the thread's whole queue */
	int r = SSL_read(l->ssl, p, (int)n);
	if (r > 0)
		return r;
	switch (SSL_get_error(l->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return -1;
	case SSL_ERROR_WANT_WRITE:
		l->want_write_for_read = true;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		if (errno == 0 || errno == ECONNRESET || errno == EPIPE) {
			ERR_clear_error();
			return 0;
		}
		snprintf(why, whylen, "%s", strerror(errno));
		ERR_clear_error();
		return -2;
	default:
		tls_error(l->ssl, why, whylen);
		return -2;
	}
}

static ssize_t leg_tls_write(struct leg *l, const char *p, size_t n, char *why, size_t whylen)
{
	l->want_read_for_write = false;
	ERR_clear_error();
	int r = SSL_write(l->ssl, p, (int)n);
	if (r > 0)
		return r;
	switch (SSL_get_error(l->ssl, r)) {
	case SSL_ERROR_WANT_WRITE:
		return -1;
	case SSL_ERROR_WANT_READ:
		l->want_read_for_write = true;
		return -1;
	case SSL_ERROR_SYSCALL:
		snprintf(why, whylen, "%s", errno ? strerror(errno) : "connection closed");
		ERR_clear_error();
		return -2;
	default:
		tls_error(l->ssl, why, whylen);
		return -2;
	}
}

static const struct leg_transport leg_plain = {"plain", leg_plain_read, leg_plain_write};
static const struct leg_transport leg_tls = {"tls", leg_tls_read, leg_tls_write};

/*
 * Legs given output (leg_send) since the loop last polled. One prepare
 * watcher writes it out just before the loop polls again, so that output
 * that fits in the socket goes without a write watcher: started by
 * leg_send and stopped by the flush before libev tells the kernel, it
 * costs no epoll_ctl, and no poll round to learn the socket is writable.
 * (Writing inside leg_send itself is not safe: it runs in the middle of
 * the login's parser callbacks, and a failed write closes the session.)
 */
static struct leg *leg_flushq;
static ev_prepare leg_flush_prepare;

static void leg_unqueue(struct leg *l)
{
	if (l->flush_pprev == NULL)
		return;
	*l->flush_pprev = l->flush_next;
	if (l->flush_next != NULL)
		l->flush_next->flush_pprev = l->flush_pprev;
	l->flush_next = NULL;
	l->flush_pprev = NULL;
}

static void leg_enqueue(struct leg *l)
{
	if (l->flush_pprev != NULL)
		return;
	l->flush_next = leg_flushq;
	if (leg_flushq != NULL)
		leg_flushq->flush_pprev = &l->flush_next;
	leg_flushq = l;
	l->flush_pprev = &leg_flushq;
}

static bool leg_flush(struct leg *l);
static void leg_update(struct leg *l);

/* Fires before the loop polls: flushes the queued legs. A flush may close
 * sessions (theirs or, through events, others): each leg leaves the list
 * before it is flushed, and a closed leg leaves it in leg_finish. */
static void leg_flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	(void)loop, (void)w, (void)revents;
	struct leg *l;
	while ((l = leg_flushq) != NULL) {
		leg_unqueue(l);
		if ((l->io != LEG_IO_OPEN && l->io != LEG_IO_CLOSING) || l->out.len == 0 ||
		    l->want_read_for_write)
			continue;
		leg_flush(l);
		if (l->io != LEG_IO_CLOSED)
			leg_update(l);
	}
}

static void leg_watch(struct leg *l, ev_io *w, bool on)
{
	if (on && !ev_is_active(w))
		ev_io_start(l->loop, w);
	else if (!on && ev_is_active(w))
		ev_io_stop(l->loop, w);
}

/* Sets the watchers to what the leg waits for now. */
static void leg_update(struct leg *l)
{
	bool r = false, w = false;
	switch (l->io) {
	case LEG_IO_CONNECTING:
		w = true;
		break;
	case LEG_IO_PEEK_TLS:
	case LEG_IO_DRAINING:
		r = true;
		break;
	case LEG_IO_HANDSHAKE:
		r = !l->hs_paused && !l->hs_want_write;
		w = !l->hs_paused && l->hs_want_write;
		break;
	case LEG_IO_OPEN:
	case LEG_IO_CLOSING:
		r = (l->io == LEG_IO_OPEN && l->reading && !l->paused && !l->tls_after_flush) ||
		    (l->out.len > 0 && l->want_read_for_write);
		w = (l->out.len > 0 && !l->want_read_for_write) || l->want_write_for_read;
		break;
	default:
		break;
	}
	leg_watch(l, &l->rio, r);
	leg_watch(l, &l->wio, w);
}

/* The socket is gone: stop everything and tell the owner once. */
static void leg_finish(struct leg *l)
{
	if (l->io == LEG_IO_CLOSED)
		return;
	leg_watch(l, &l->rio, false);
	leg_watch(l, &l->wio, false);
	leg_unqueue(l);
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	l->io = LEG_IO_CLOSED;
	buf_free(&l->out);
	l->ops->event(l, LEG_EV_CLOSED, NULL);
}

/* Output is flushed on a closing leg: send close_notify and FIN, then
 * read until the peer closes too, so our last bytes are not destroyed by
 * a reset for unread input. */
static void leg_shutdown(struct leg *l)
{
	if (l->ssl != NULL && l->tr == &leg_tls) {
		SSL_shutdown(l->ssl); /* one try: the FIN follows regardless */
		ERR_clear_error();
	}
	if (l->fd >= 0 && !l->no_drain && shutdown(l->fd, SHUT_WR) == 0) {
		l->io = LEG_IO_DRAINING;
		leg_update(l);
		return;
	}
	leg_finish(l);
}

/* Resumes the peer leg's reading once our output is low again. */
static void leg_unblock_peer(struct leg *l)
{
	struct leg *p = l->peer;
	if (p != NULL && p->paused && l->out.len <= OUTBUF_LOW) {
		p->paused = false;
		leg_update(p);
		/* TLS may hold decrypted bytes that no poll will announce */
		if (p->io == LEG_IO_OPEN && p->reading)
			ev_feed_event(p->loop, &p->rio, EV_READ);
	}
}

/* Writes what is queued. Returns false if the leg failed (and was
 * reported). */
static void leg_tls_begin(struct leg *l);

static bool leg_flush(struct leg *l)
{
	char why[256];
	while (l->out.len > 0) {
		ssize_t n = l->tr->write(l, buf_head(&l->out), l->out.len, why, sizeof(why));
		if (n == -1)
			break;
		if (n == -2) {
			buf_reset(&l->out);
			l->ops->event(l, LEG_EV_ERROR, why);
			return false;
		}
		buf_consume(&l->out, (size_t)n);
		l->bytes_out += (uint64_t)n;
	}
	/* A drained queue that grew past its first size gives the storage
	 * back: one large stanza would otherwise keep up to OUTBUF_HIGH per
	 * leg for the session's life. The first size stays (freeing it after
	 * each flush measured 4 % more CPU per login for 1 KiB per leg; an
	 * idle leg's goes with leg_trim). */
	if (l->out.len == 0 && l->out.cap > OUTBUF_KEEP)
		buf_free(&l->out);
	leg_unblock_peer(l);
	if (l->out.len == 0 && l->io == LEG_IO_CLOSING)
		leg_shutdown(l);
	else if (l->out.len == 0 && l->tls_after_flush)
		leg_tls_begin(l);
	return true;
}

/*
 * A peer that writes with Nagle (Prosody does) holds its next small
 * segment until the last is ACKed, and Linux delays that ACK up to 40 ms
 * when it has nothing to send back: a login, all small messages in
 * lock-step, met that wait on most steps. TCP_QUICKACK sends the pending
 * ACK now; it is not permanent, so it is set again on each wake-up to
 * read, whatever the bytes turn out to be (a TLS post-handshake message
 * gives the login no data but must be ACKed as soon).
 */
static void leg_quickack(struct leg *l)
{
	static const int one = 1;
	if (l->quickack)
		setsockopt(l->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

static void leg_read(struct leg *l)
{
	char why[256];
	for (int i = 0; l->io == LEG_IO_OPEN && l->reading && !l->paused && !l->tls_after_flush;
	     i++) {
		if (i >= LEG_READS_PER_WAKEUP) {
			/* come back after the other legs had their turn */
			if (l->tr == &leg_tls && SSL_pending(l->ssl) > 0)
				ev_feed_event(l->loop, &l->rio, EV_READ);
			return;
		}
		ssize_t n = l->tr->read(l, leg_rbuf, sizeof(leg_rbuf), why, sizeof(why));
		if (n == -1)
			return;
		if (n == 0) {
			l->ops->event(l, LEG_EV_EOF, NULL);
			return;
		}
		if (n == -2) {
			l->ops->event(l, LEG_EV_ERROR, why);
			return;
		}
		l->bytes_in += (uint64_t)n;
		l->ops->data(l, leg_rbuf, (size_t)n);
		secmem_wipe(leg_rbuf, (size_t)n);
	}
}

/* Reads and drops input on a shut-down leg until the peer closes. */
static void leg_drain(struct leg *l)
{
	for (int i = 0; i < LEG_READS_PER_WAKEUP; i++) {
		ssize_t n = recv(l->fd, leg_rbuf, sizeof(leg_rbuf), 0);
		if (n > 0) {
			secmem_wipe(leg_rbuf, (size_t)n);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		leg_finish(l);
		return;
	}
}

static void leg_handshake(struct leg *l)
{
	char why[256];
	ERR_clear_error();
	int r = SSL_do_handshake(l->ssl);
	if (r == 1) {
		l->io = LEG_IO_OPEN;
		l->tr = &leg_tls;
		l->hs_want_write = false;
		l->ops->event(l, LEG_EV_TLS_DONE, NULL);
		return;
	}
	switch (SSL_get_error(l->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		l->hs_want_write = false;
		return;
	case SSL_ERROR_WANT_WRITE:
		l->hs_want_write = true;
		return;
	case SSL_ERROR_WANT_CLIENT_HELLO_CB:
		l->hs_paused = true;
		l->ops->event(l, LEG_EV_TLS_PAUSED, NULL);
		return;
	case SSL_ERROR_ZERO_RETURN:
		snprintf(why, sizeof(why), "connection closed during the TLS handshake");
		break;
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() != 0)
			tls_error(l->ssl, why, sizeof(why));
		else
			snprintf(why, sizeof(why), "%s",
			         errno ? strerror(errno)
			               : "connection closed during the TLS handshake");
		break;
	default:
		tls_error(l->ssl, why, sizeof(why));
		break;
	}
	l->io = LEG_IO_CLOSING;
	l->ops->event(l, LEG_EV_TLS_ERROR, why);
}

/* Drops whitespace a client may send after <proceed/>, then expects a
 * TLS handshake record (0x16). */
static void leg_peek_tls(struct leg *l)
{
	unsigned char peek[64];
	ssize_t n = recv(l->fd, peek, sizeof(peek), MSG_PEEK);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		l->io = LEG_IO_CLOSING;
		l->ops->event(l, LEG_EV_TLS_ERROR,
		              n == 0 ? "connection closed before the TLS handshake"
		                     : strerror(errno));
		return;
	}
	ssize_t ws = 0;
	while (ws < n &&
	       (peek[ws] == ' ' || peek[ws] == '\t' || peek[ws] == '\r' || peek[ws] == '\n'))
		ws++;
	if (ws > 0 && recv(l->fd, peek, (size_t)ws, 0) != ws) {
		l->io = LEG_IO_CLOSING;
		l->ops->event(l, LEG_EV_TLS_ERROR, "read error before the TLS handshake");
		return;
	}
	if (ws == n)
		return;
	if (peek[ws] != 0x16) {
		l->io = LEG_IO_CLOSING;
		l->ops->event(l, LEG_EV_TLS_ERROR, "not a TLS handshake (no ClientHello)");
		return;
	}
	l->io = LEG_IO_HANDSHAKE;
	leg_handshake(l);
}

static void leg_connected(struct leg *l)
{
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err != 0) {
		l->io = LEG_IO_CLOSING;
		l->ops->event(l, LEG_EV_ERROR, strerror(err));
		return;
	}
	l->io = LEG_IO_OPEN;
	l->ops->event(l, LEG_EV_CONNECTED, NULL);
}

/* Fires when the socket is readable or writable; does whatever the
 * leg's I/O state is waiting for. */
static void leg_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	struct leg *l = w->data;

	if (revents & EV_READ)
		leg_quickack(l);
	switch (l->io) {
	case LEG_IO_CONNECTING:
		leg_connected(l);
		break;
	case LEG_IO_PEEK_TLS:
		leg_peek_tls(l);
		break;
	case LEG_IO_HANDSHAKE:
		leg_handshake(l);
		break;
	case LEG_IO_OPEN:
	case LEG_IO_CLOSING:
		if ((revents & EV_WRITE) || l->want_read_for_write || l->out.len > 0) {
			if (!leg_flush(l))
				break;
		}
		if (l->io == LEG_IO_OPEN && !l->tls_after_flush &&
		    (revents & EV_READ || l->want_write_for_read))
			leg_read(l);
		break;
	case LEG_IO_DRAINING:
		leg_drain(l);
		break;
	default:
		break;
	}
	if (l->io != LEG_IO_CLOSED)
		leg_update(l);
}

void leg_init(struct leg *l, struct ev_loop *loop, const struct leg_ops *ops, void *owner,
              struct leg *peer, int fd)
{
	memset(l, 0, sizeof(*l));
	l->loop = loop;
	l->ops = ops;
	l->owner = owner;
	l->peer = peer;
	l->fd = fd;
	l->tr = &leg_plain;
	l->reading = true;
	ev_io_init(&l->rio, leg_io_cb, fd, EV_READ);
	ev_io_init(&l->wio, leg_io_cb, fd, EV_WRITE);
	if (!ev_is_active(&leg_flush_prepare)) {
		ev_prepare_init(&leg_flush_prepare, leg_flush_cb);
		ev_prepare_start(loop, &leg_flush_prepare);
		ev_unref(loop); /* it alone keeps no loop running */
	}
	l->rio.data = l;
	l->wio.data = l;
}

void leg_start(struct leg *l)
{
	l->io = LEG_IO_OPEN;
	leg_update(l);
}

int leg_connect(struct leg *l, int fd, const struct sockaddr *sa, socklen_t salen)
{
	l->fd = fd;
	ev_io_set(&l->rio, fd, EV_READ);
	ev_io_set(&l->wio, fd, EV_WRITE);
	if (connect(fd, sa, salen) < 0 && errno != EINPROGRESS)
		return -1;
	l->io = LEG_IO_CONNECTING;
	leg_update(l);
	return 0;
}

/* Moves to the TLS handshake once the plain output (<proceed/>) is out. */
static void leg_tls_begin(struct leg *l)
{
	l->tls_after_flush = false;
	l->io = l->tls_skip_ws ? LEG_IO_PEEK_TLS : LEG_IO_HANDSHAKE;
	l->hs_want_write = false;
	if (!l->tls_skip_ws)
		leg_handshake(l);
	if (l->io != LEG_IO_CLOSED)
		leg_update(l);
}

void leg_resume_tls(struct leg *l)
{
	if (!l->hs_paused || l->io != LEG_IO_HANDSHAKE)
		return;
	l->hs_paused = false;
	leg_update(l);
	ev_feed_event(l->loop, &l->rio, EV_READ);
}

void leg_start_tls(struct leg *l, SSL *ssl, bool skip_ws)
{
	l->ssl = ssl;
	l->tls_skip_ws = skip_ws;
	if (l->out.len > 0) {
		l->tls_after_flush = true;
		if (!leg_flush(l) || l->tls_after_flush == false)
			return;
		leg_update(l);
		return;
	}
	leg_tls_begin(l);
}

int leg_send(struct leg *l, const char *data, size_t len)
{
	if (l->io == LEG_IO_CLOSED || l->io == LEG_IO_DRAINING)
		return 0;
	if (buf_add(&l->out, data, len) < 0)
		return -1;
	/* Backpressure: the leg that feeds us stops until we drain. */
	if (l->out.len > OUTBUF_HIGH && l->peer != NULL && !l->peer->paused) {
		l->peer->paused = true;
		leg_update(l->peer);
	}
	if (l->io == LEG_IO_OPEN || l->io == LEG_IO_CLOSING) {
		leg_enqueue(l);
		leg_update(l);
	}
	return 0;
}

/*
 * Relayed bytes, written straight from the caller's buffer when nothing
 * is queued ahead of them: no copy into the queue, no queue storage grown
 * and given back for each large stanza. What the socket does not take is
 * queued as by leg_send (after a would-block, the record TLS built from
 * the first of those bytes is retried from the queue, which starts with
 * them: SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER). A write error is reported
 * through the leg's event now, so this is called only where a closing
 * session is expected (after the parser returned, never inside one of
 * its callbacks).
 */
int leg_send_now(struct leg *l, const char *data, size_t len)
{
	char why[256];
	if (l->io != LEG_IO_OPEN || l->out.len > 0 || l->want_read_for_write || l->tls_after_flush)
		return leg_send(l, data, len);
	while (len > 0) {
		ssize_t n = l->tr->write(l, data, len, why, sizeof(why));
		if (n == -1)
			break;
		if (n == -2) {
			l->ops->event(l, LEG_EV_ERROR, why);
			return 0;
		}
		data += n;
		len -= (size_t)n;
		l->bytes_out += (uint64_t)n;
	}
	return len > 0 ? leg_send(l, data, len) : 0;
}

void leg_set_reading(struct leg *l, bool on)
{
	l->reading = on;
	if (l->io != LEG_IO_CLOSED && l->io != LEG_IO_IDLE)
		leg_update(l);
	/* bytes TLS already decrypted get no poll event of their own */
	if (on && l->io == LEG_IO_OPEN && l->tr == &leg_tls && SSL_pending(l->ssl) > 0)
		ev_feed_event(l->loop, &l->rio, EV_READ);
}

void leg_close(struct leg *l)
{
	switch (l->io) {
	case LEG_IO_OPEN:
	case LEG_IO_CLOSING:
		l->io = LEG_IO_CLOSING;
		if (l->out.len == 0)
			leg_shutdown(l);
		else
			leg_update(l);
		break;
	case LEG_IO_DRAINING:
	case LEG_IO_CLOSED:
		break;
	default:
		leg_finish(l);
	}
}

void leg_hurry(struct leg *l)
{
	l->no_drain = true;
	if (l->io == LEG_IO_DRAINING)
		leg_finish(l);
}

void leg_abort(struct leg *l)
{
	if (l->io == LEG_IO_CLOSED)
		return;
	buf_reset(&l->out);
	leg_finish(l);
}

void leg_free(struct leg *l)
{
	leg_unqueue(l);
	if (l->ssl != NULL)
		SSL_free(l->ssl);
	l->ssl = NULL;
	buf_free(&l->out);
}

void leg_trim(struct leg *l)
{
	if (l->out.len == 0)
		buf_free(&l->out);
}

bool leg_busy(const struct leg *l)
{
	return l->out.len > 0;
}
