/*
 * Prometheus metrics (metrics_listen): GET /metrics in the text exposition
 * format 0.0.4, served on the proxy's event loop by a tiny HTTP/1.x server
 * (bounded request, connections and time; never blocking). The counters
 * are counted from the event log's tap (evlog_set_tap), so they count what
 * the event log records, also lines a full disk lost. Every label takes
 * its value from a fixed set: a name from the wire that is not in it is
 * "other". upstream_errors counts the upstream events that are not ok
 * (kind timeout, refused, unreachable, other) and the upstream leg's
 * failed TLS handshakes (kind tls).
 */
#ifndef XI_METRICS_H
#define XI_METRICS_H

#include <stdbool.h>
#include <stddef.h>

struct conf_addr;
struct proxy;

/* Counting starts (the tap); once, before the loop runs. version is the
 * proxy's, for build_info. */
void metrics_init(struct proxy *px, const char *version);
/* Binds and listens on a; -1 with a one-line reason in err. */
int metrics_listen(struct proxy *px, const struct conf_addr *a, char *err, size_t errlen);
/* Stops serving and closes every scrape connection. */
void metrics_close(void);

/* xmpp_inspect_shared_state_up: 1 with no shared state configured; a
 * shared-state module sets the probe that says whether it is up. */
typedef int metrics_probe_fn(const struct proxy *px);
void metrics_set_shared_state_probe(metrics_probe_fn *fn);

/* The exposition text, appended to out (for the server and the unit
 * test). Returns 0 or -1 on out of memory. */
/* workers = N: the counters in the shared region (metrics_shared_size
 * bytes, zeroed by metrics_shared_init before the fork), added to by every
 * worker. */
size_t metrics_shared_size(void);
void metrics_shared_init(void *area);
void metrics_use_shared(void *area);
/* This process's sessions by state, for the gauges (workers_publish). */
struct workers_gauges;
void metrics_gauges(const struct proxy *px, struct workers_gauges *g);
/* A listening socket for metrics_listen's address, not yet served (the
 * supervisor binds one per worker, with SO_REUSEPORT); -1 with err. */
int metrics_bind(const struct conf_addr *a, bool reuseport, char *err, size_t errlen);
/* Serves /metrics on fd (from metrics_bind). */
void metrics_serve(struct proxy *px, int fd);

struct buf;
int metrics_render(const struct proxy *px, struct buf *out);

#endif
