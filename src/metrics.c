#include <errno.h>
#include <ev.h>
#include <expat.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bounds.h"
#include "buf.h"
#include "conf.h"
#include "evlog.h"
#include "login.h"
#include "metrics.h"
#include "session.h"
#include "workers.h"

/* ---------------------------------------------------------------- labels */

/* The fixed label values; index 0 of each is the catch-all. */
static const char *const metrics_outcomes[] = {"other", "success", "failure", "incomplete"};
static const char *const metrics_mechs[] = {"other",           "none",
                                            "PLAIN",           "LOGIN",
                                            "SCRAM-SHA-1",     "SCRAM-SHA-1-PLUS",
                                            "SCRAM-SHA-256",   "SCRAM-SHA-256-PLUS",
                                            "SCRAM-SHA-512",   "SCRAM-SHA-512-PLUS",
                                            "DIGEST-MD5",      "CRAM-MD5",
                                            "EXTERNAL",        "ANONYMOUS",
                                            "GSSAPI",          "OAUTHBEARER",
                                            "X-OAUTH2",        "HT-SHA-256-NONE",
                                            "HT-SHA-256-ENDP", "HT-SHA-256-UNIQ"};
static const char *const metrics_rules[] = {
    "other",          "after_login",      "auth_failures",
    "authzid",        "bind_first",       "channel_binding",
    "event_log_full", "identity",         "iq_auth",
    "max_per_addr",   "mechanisms_allow", "mechanisms_deny",
    "not_offered",    "offer_mechanisms", "plain_without_tls",
    "preauth_stanza", "require_tls",      "sasl_encoding",
    "sasl_order",     "sasl_syntax",      "shared_state_fail",
    "strip_starttls", "users_allow",      "users_deny"};
static const char *const metrics_refusals[] = {"other",        "max_sessions",   "max_per_addr",
                                               "stopping",     "event_log_full", "proxy_from",
                                               "proxy_header", "proxy_timeout"};
static const char *const metrics_actions[] = {"other", "log", "strip", "reject"};
static const char *const metrics_legs[] = {"other", "client", "upstream"};
static const char *const metrics_versions[] = {"other", "none", "TLSv1.2", "TLSv1.3"};
static const char *const metrics_results[] = {"success", "failure"};
static const char *const metrics_kinds[] = {"other", "timeout", "refused", "unreachable", "tls"};

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define NOUT N(metrics_outcomes)
#define NMECH N(metrics_mechs)
#define NRULE N(metrics_rules)
#define NREFUSE N(metrics_refusals)
#define NACT N(metrics_actions)
#define NLEG N(metrics_legs)
#define NVER N(metrics_versions)
#define NKIND N(metrics_kinds)

/* Seconds from connect to the login's outcome. */
static const double metrics_buckets[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
#define NBUCKET N(metrics_buckets)

/* The counters. With workers = N they live in the shared region
 * (metrics_use_shared) and every worker adds to the same ones, atomically,
 * so whichever worker serves /metrics tells the whole proxy's. */
struct metrics_counts {
	uint64_t connections;
	uint64_t refused[NREFUSE];
	uint64_t logins[NOUT][NMECH];
	uint64_t policy[NRULE][NACT];
	uint64_t tls[NLEG][NVER][2];
	uint64_t upstream_errors[NKIND];
	uint64_t duration[NBUCKET + 1]; /* per bucket, the last is +Inf */
	uint64_t duration_sum_ms;
	uint64_t duration_count;
};

static struct metrics_counts metrics_local;
static struct metrics_counts *mc = &metrics_local;

#define METRICS_ADD(field, n) __atomic_fetch_add(&mc->field, (n), __ATOMIC_RELAXED)
#define METRICS_INC(field) METRICS_ADD(field, 1)
#define METRICS_GET(field) ((unsigned long long)__atomic_load_n(&mc->field, __ATOMIC_RELAXED))

size_t metrics_shared_size(void)
{
	return sizeof(struct metrics_counts);
}

void metrics_shared_init(void *area)
{
	memset(area, 0, sizeof(struct metrics_counts));
}

void metrics_use_shared(void *area)
{
	if (area != NULL)
		mc = area;
}

static metrics_probe_fn *metrics_shared_probe;
static const char *metrics_version = "?";

/* The index of v in a fixed set (case-sensitive), else 0. */
static size_t metrics_index(const char *const *set, size_t n, const char *v)
{
	for (size_t i = 1; i < n; i++)
		if (strcmp(set[i], v) == 0)
			return i;
	return 0;
}

/* What kind of failure an upstream error says (audit_upstream's text). */
static size_t metrics_kind(const char *error)
{
	if (strstr(error, "timed out") != NULL)
		return 1;
	if (strstr(error, "refused") != NULL)
		return 2;
	if (strstr(error, "unreachable") != NULL || strstr(error, "No route") != NULL)
		return 3;
	if (strstr(error, "TLS") != NULL || strstr(error, "certificate") != NULL ||
	    strstr(error, "verify") != NULL)
		return 4;
	return 0;
}

/* The tap: fires for every event the proxy makes. */
static void metrics_tap(const struct evlog_tap *t)
{
	workers_touch(); /* a login, a close: the sessions gauge may move */
	if (strcmp(t->event, "connect") == 0) {
		METRICS_INC(connections);
	} else if (strcmp(t->event, "refused") == 0) {
		METRICS_INC(refused[metrics_index(metrics_refusals, NREFUSE, t->rule)]);
	} else if (strcmp(t->event, "login") == 0) {
		size_t o = metrics_index(metrics_outcomes, NOUT, t->outcome);
		size_t m = t->mechanism[0] ? metrics_index(metrics_mechs, NMECH, t->mechanism) : 1;
		METRICS_INC(logins[o][m]);
		if (o == 1 || o == 2) {
			double sec = (double)t->ms / 1000.0;
			size_t b = 0;
			while (b < NBUCKET && sec > metrics_buckets[b])
				b++;
			METRICS_INC(duration[b]);
			METRICS_ADD(duration_sum_ms, t->ms > 0 ? (uint64_t)t->ms : 0);
			METRICS_INC(duration_count);
		}
	} else if (strcmp(t->event, "policy") == 0) {
		METRICS_INC(policy[metrics_index(metrics_rules, NRULE, t->rule)]
		                  [metrics_index(metrics_actions, NACT, t->action)]);
	} else if (strcmp(t->event, "tls") == 0) {
		size_t v = t->ok == 1 ? metrics_index(metrics_versions, NVER, t->version) : 1;
		size_t leg = metrics_index(metrics_legs, NLEG, t->leg);
		METRICS_INC(tls[leg][v][t->ok == 1 ? 0 : 1]);
		if (leg == 2 && t->ok == 0)
			METRICS_INC(upstream_errors[4]); /* the server's TLS failed */
	} else if (strcmp(t->event, "upstream") == 0 && t->ok == 0) {
		METRICS_INC(upstream_errors[metrics_kind(t->error)]);
	}
}

void metrics_set_shared_state_probe(metrics_probe_fn *fn)
{
	metrics_shared_probe = fn;
}

/* ---------------------------------------------------------------- render */

/* A label value from outside the fixed sets (build_info's versions), in
 * the exposition format's escapes: a backslash, a quote or a newline in a
 * version string must not end the label early. */
static int metrics_label(struct buf *b, const char *v)
{
	int rc = 0;
	for (; *v != '\0'; v++)
		rc |= *v == '\\'   ? buf_adds(b, "\\\\")
		      : *v == '"'  ? buf_adds(b, "\\\"")
		      : *v == '\n' ? buf_adds(b, "\\n")
		                   : buf_add(b, v, 1);
	return rc;
}

static int metrics_head(struct buf *b, const char *name, const char *type, const char *help)
{
	return buf_addf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_gauges(const struct proxy *px, struct workers_gauges *g)
{
	memset(g, 0, sizeof(*g));
	g->header = px->npending;
	g->closing = px->nclosing;
	g->authenticated = px->nauthenticated;
	g->login = px->nsessions - px->ndead - px->nclosing - px->nauthenticated;
}

int metrics_render(const struct proxy *px, struct buf *b)
{
	int rc = 0;
	const char *n;

	n = "xmpp_inspect_connections_total";
	rc |= metrics_head(b, n, "counter",
	                   "Client connections that became sessions (connect events).");
	rc |= buf_addf(b, "%s %llu\n", n, METRICS_GET(connections));

	n = "xmpp_inspect_refused_total";
	rc |= metrics_head(
	    b, n, "counter",
	    "Connections closed before they became sessions, by rule (refused events).");
	for (size_t r = 0; r < NREFUSE; r++)
		rc |= buf_addf(b, "%s{rule=\"%s\"} %llu\n", n, metrics_refusals[r],
		               METRICS_GET(refused[r]));

	n = "xmpp_inspect_logins_total";
	rc |=
	    metrics_head(b, n, "counter", "Login records by outcome and mechanism (login events).");
	for (size_t o = 0; o < NOUT; o++)
		for (size_t m = 0; m < NMECH; m++)
			if (METRICS_GET(logins[o][m]) > 0 || (o == 1 && m == 2) ||
			    (o == 2 && m == 2))
				rc |= buf_addf(b, "%s{outcome=\"%s\",mechanism=\"%s\"} %llu\n", n,
				               metrics_outcomes[o], metrics_mechs[m],
				               METRICS_GET(logins[o][m]));

	n = "xmpp_inspect_policy_actions_total";
	rc |= metrics_head(b, n, "counter", "Policy actions by rule and action (policy events).");
	for (size_t r = 0; r < NRULE; r++)
		for (size_t a = 0; a < NACT; a++)
			if (METRICS_GET(policy[r][a]) > 0)
				rc |= buf_addf(b, "%s{rule=\"%s\",action=\"%s\"} %llu\n", n,
				               metrics_rules[r], metrics_actions[a],
				               METRICS_GET(policy[r][a]));

	n = "xmpp_inspect_tls_handshakes_total";
	rc |= metrics_head(b, n, "counter",
	                   "TLS handshakes by leg, version and result (tls events).");
	for (size_t l = 0; l < NLEG; l++)
		for (size_t v = 0; v < NVER; v++)
			for (size_t r = 0; r < 2; r++)
				if (METRICS_GET(tls[l][v][r]) > 0)
					rc |= buf_addf(
					    b, "%s{leg=\"%s\",version=\"%s\",result=\"%s\"} %llu\n",
					    n, metrics_legs[l], metrics_versions[v],
					    metrics_results[r], METRICS_GET(tls[l][v][r]));

	n = "xmpp_inspect_upstream_errors_total";
	rc |= metrics_head(b, n, "counter",
	                   "Failed upstream connections by kind (upstream events, ok false).");
	for (size_t k = 0; k < NKIND; k++)
		rc |= buf_addf(b, "%s{kind=\"%s\"} %llu\n", n, metrics_kinds[k],
		               METRICS_GET(upstream_errors[k]));

	/* the other workers' gauges as they published them after their last
	 * loop round that changed them, this one's as it is now */
	struct workers_gauges others;
	workers_others(&others);
	uint64_t lost, gaps;
	evlog_totals(&lost, &gaps);
	lost += others.events_lost;
	n = "xmpp_inspect_event_log_dropped_total";
	rc |= metrics_head(b, n, "counter", "Event log lines lost (the disk could not take them).");
	rc |= buf_addf(b, "%s %llu\n", n, (unsigned long long)lost);

	struct workers_gauges g;
	metrics_gauges(px, &g);
	unsigned header = g.header + others.header, login = g.login + others.login,
	         authenticated = g.authenticated + others.authenticated,
	         closing = g.closing + others.closing;
	n = "xmpp_inspect_sessions";
	rc |= metrics_head(b, n, "gauge", "Open connections by state.");
	rc |= buf_addf(b,
	               "%s{state=\"proxy_header\"} %u\n%s{state=\"login\"} %u\n"
	               "%s{state=\"authenticated\"} %u\n%s{state=\"closing\"} %u\n",
	               n, header, n, login, n, authenticated, n, closing);

	n = "xmpp_inspect_workers";
	rc |= metrics_head(b, n, "gauge", "Worker processes running (the workers key).");
	rc |= buf_addf(b, "%s %u\n", n, workers_alive());

	n = "xmpp_inspect_shared_state_up";
	rc |= metrics_head(b, n, "gauge",
	                   "1 if the shared policy state answers (or none is configured).");
	rc |= buf_addf(b, "%s %d\n", n, metrics_shared_probe ? metrics_shared_probe(px) : 1);

	n = "xmpp_inspect_login_duration_seconds";
	rc |= metrics_head(b, n, "histogram", "Seconds from connect to a login's outcome.");
	uint64_t cum = 0;
	for (size_t i = 0; i < NBUCKET; i++) {
		cum += METRICS_GET(duration[i]);
		rc |= buf_addf(b, "%s_bucket{le=\"%g\"} %llu\n", n, metrics_buckets[i],
		               (unsigned long long)cum);
	}
	cum += METRICS_GET(duration[NBUCKET]);
	rc |= buf_addf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.3f\n%s_count %llu\n", n,
	               (unsigned long long)cum, n, (double)METRICS_GET(duration_sum_ms) / 1000.0, n,
	               METRICS_GET(duration_count));

	n = "xmpp_inspect_build_info";
	rc |= metrics_head(b, n, "gauge", "The build: 1, with versions as labels.");
	rc |= buf_addf(b, "%s{version=\"", n);
	rc |= metrics_label(b, metrics_version);
	rc |= buf_adds(b, "\",openssl=\"");
	rc |= metrics_label(b, OpenSSL_version(OPENSSL_VERSION_STRING));
	rc |= buf_addf(b, "\",libev=\"%d.%d\",expat=\"", ev_version_major(), ev_version_minor());
	rc |= metrics_label(b, XML_ExpatVersion());
	rc |= buf_adds(b, "\"} 1\n");
	return rc ? -1 : 0;
}

/* ---------------------------------------------------------------- server */

struct metrics_conn {
	ev_io io; /* first: recovered from the watcher */
	ev_timer timer;
	int fd;
	bool writing;  /* the answer is queued */
	bool draining; /* answered: input is read and dropped until EOF */
	size_t have;
	char req[METRICS_REQUEST_MAX];
	struct buf out;
};

static struct {
	struct proxy *px;
	int fd;
	ev_io io;
	struct metrics_conn *conns[METRICS_MAX_CLIENTS];
} metrics_srv = {.fd = -1};

static void metrics_conn_free(struct metrics_conn *c)
{
	struct ev_loop *loop = metrics_srv.px->loop;
	ev_io_stop(loop, &c->io);
	ev_timer_stop(loop, &c->timer);
	close(c->fd);
	buf_free(&c->out);
	for (size_t i = 0; i < METRICS_MAX_CLIENTS; i++)
		if (metrics_srv.conns[i] == c)
			metrics_srv.conns[i] = NULL;
	free(c);
}

/* Writes what is queued; frees c once all of it went (Connection: close). */
static void metrics_flush(struct metrics_conn *c)
{
	while (c->out.len > 0) {
		ssize_t n = send(c->fd, buf_head(&c->out), c->out.len, MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		if (n <= 0) {
			metrics_conn_free(c);
			return;
		}
		buf_consume(&c->out, (size_t)n);
	}
	/* A close with unread input (a request body, the rest of a request
	 * too large) would send a reset that can destroy the answer before
	 * the client reads it: end our side, and read until the client ends
	 * its own, within the connection's METRICS_TIMEOUT. */
	shutdown(c->fd, SHUT_WR);
	c->writing = false;
	c->draining = true;
	ev_io_stop(metrics_srv.px->loop, &c->io);
	ev_io_set(&c->io, c->fd, EV_READ);
	ev_io_start(metrics_srv.px->loop, &c->io);
}

static void metrics_reply(struct metrics_conn *c, const char *status, const char *type,
                          const char *extra, const struct buf *body)
{
	size_t len = body != NULL ? body->len : strlen(status) + 1;
	int rc = buf_addf(&c->out,
	                  "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
	                  "Connection: close\r\n\r\n",
	                  status, type, len, extra);
	if (body != NULL)
		rc |= buf_add(&c->out, buf_head(body), body->len);
	else
		rc |= buf_addf(&c->out, "%s\n", status);
	if (rc < 0) {
		metrics_conn_free(c);
		return;
	}
	c->writing = true;
	ev_io_stop(metrics_srv.px->loop, &c->io);
	ev_io_set(&c->io, c->fd, EV_WRITE);
	ev_io_start(metrics_srv.px->loop, &c->io);
	metrics_flush(c);
}

/* The request is in (its blank line seen): answer it. */
static void metrics_answer(struct metrics_conn *c)
{
	char *eol = memchr(c->req, '\n', c->have);
	*eol = '\0';
	char method[16], target[256], version[16];
	if (sscanf(c->req, "%15s %255s %15s", method, target, version) != 3 ||
	    strncmp(version, "HTTP/1.", 7) != 0) {
		metrics_reply(c, "400 Bad Request", "text/plain", "", NULL);
		return;
	}
	char *query = strchr(target, '?');
	if (query != NULL)
		*query = '\0';
	if (strcmp(target, "/metrics") != 0) {
		metrics_reply(c, "404 Not Found", "text/plain", "", NULL);
		return;
	}
	if (strcmp(method, "GET") != 0) {
		metrics_reply(c, "405 Method Not Allowed", "text/plain", "Allow: GET\r\n", NULL);
		return;
	}
	struct buf body = {0};
	if (metrics_render(metrics_srv.px, &body) < 0) {
		buf_free(&body);
		metrics_reply(c, "500 Internal Server Error", "text/plain", "", NULL);
		return;
	}
	metrics_reply(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", "", &body);
	buf_free(&body);
}

/* Fires when a scrape connection can be read (request) or written. */
static void metrics_conn_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop, (void)revents;
	struct metrics_conn *c = (struct metrics_conn *)w;
	if (c->writing) {
		metrics_flush(c);
		return;
	}
	if (c->draining) {
		char sink[4096];
		ssize_t n = recv(c->fd, sink, sizeof(sink), 0);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			metrics_conn_free(c);
		return;
	}
	ssize_t n = recv(c->fd, c->req + c->have, sizeof(c->req) - c->have, 0);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		metrics_conn_free(c);
		return;
	}
	c->have += (size_t)n;
	/* the end of the headers: a blank line, CRLF or bare LF */
	for (size_t i = 1; i < c->have; i++) {
		if (c->req[i] == '\n' &&
		    (c->req[i - 1] == '\n' ||
		     (i >= 2 && c->req[i - 1] == '\r' && c->req[i - 2] == '\n'))) {
			metrics_answer(c);
			return;
		}
	}
	if (c->have == sizeof(c->req))
		metrics_reply(c, "431 Request Header Fields Too Large", "text/plain", "", NULL);
}

/* Fires METRICS_TIMEOUT after the connection came: whatever it is doing,
 * it is over. */
static void metrics_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop, (void)revents;
	metrics_conn_free(
	    (struct metrics_conn *)((char *)w - offsetof(struct metrics_conn, timer)));
}

/* Fires when scrapers connect. Past METRICS_MAX_CLIENTS, closed at once. */
static void metrics_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)w, (void)revents;
	for (int k = 0; k < METRICS_MAX_CLIENTS; k++) {
		int fd = accept4(metrics_srv.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		/* workers = N: each worker its share of the bound, so that the
		 * proxy as a whole holds at most METRICS_MAX_CLIENTS */
		unsigned n = workers_count();
		size_t share = n > 1 ? (METRICS_MAX_CLIENTS + n - 1) / n : METRICS_MAX_CLIENTS;
		if (n > 1 && share * n > METRICS_MAX_CLIENTS)
			share = METRICS_MAX_CLIENTS / n > 0 ? METRICS_MAX_CLIENTS / n : 1;
		size_t slot = METRICS_MAX_CLIENTS;
		for (size_t i = 0; i < share; i++)
			if (metrics_srv.conns[i] == NULL) {
				slot = i;
				break;
			}
		struct metrics_conn *c = slot < METRICS_MAX_CLIENTS ? calloc(1, sizeof(*c)) : NULL;
		if (c == NULL) {
			close(fd);
			continue;
		}
		c->fd = fd;
		metrics_srv.conns[slot] = c;
		ev_io_init(&c->io, metrics_conn_cb, fd, EV_READ);
		ev_timer_init(&c->timer, metrics_timer_cb, METRICS_TIMEOUT, 0.);
		ev_io_start(loop, &c->io);
		ev_timer_start(loop, &c->timer);
	}
}

void metrics_init(struct proxy *px, const char *version)
{
	metrics_srv.px = px;
	metrics_version = version;
	evlog_set_tap(metrics_tap);
}

int metrics_bind(const struct conf_addr *a, bool reuseport, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	struct addrinfo *res = NULL;
	const int one = 1;
	int rc = getaddrinfo(a->host[0] ? a->host : NULL, a->port, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "metrics_listen %s:%s: %s", a->host, a->port,
		         gai_strerror(rc));
		return -1;
	}
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd >= 0 && reuseport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0) {
		snprintf(err, errlen, "metrics_listen %s:%s: %s", a->host, a->port,
		         strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	return fd;
}

void metrics_serve(struct proxy *px, int fd)
{
	metrics_srv.px = px;
	metrics_srv.fd = fd;
	ev_io_init(&metrics_srv.io, metrics_accept_cb, fd, EV_READ);
	ev_io_start(px->loop, &metrics_srv.io);
}

int metrics_listen(struct proxy *px, const struct conf_addr *a, char *err, size_t errlen)
{
	int fd = metrics_bind(a, false, err, errlen);
	if (fd < 0)
		return -1;
	metrics_serve(px, fd);
	return 0;
}

void metrics_close(void)
{
	if (metrics_srv.fd < 0)
		return;
	ev_io_stop(metrics_srv.px->loop, &metrics_srv.io);
	close(metrics_srv.fd);
	metrics_srv.fd = -1;
	for (size_t i = 0; i < METRICS_MAX_CLIENTS; i++)
		if (metrics_srv.conns[i] != NULL)
			metrics_conn_free(metrics_srv.conns[i]);
}
