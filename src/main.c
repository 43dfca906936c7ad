/*
 * xmpp-inspect: command line, configuration, listeners, signals and the
 * event loop. Everything before ev_run() may fatal(); nothing after.
 */
#include <ev.h>
#include <expat.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <pwd.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "addrtab.h"
#include "conf.h"
#include "evlog.h"
#include "lfile.h"
#include "forge.h"
#include "listener.h"
#include "login_forge.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "proxyin.h"
#include "secmem.h"
#include "session.h"
#include "sharedstate.h"
#include "supervisor.h"
#include "tls.h"
#include "transcript.h"
#include "upstream.h"
#include "workers.h"

#define XI_VERSION "0.1.0"
#define DEFAULT_CONF "conf/xmpp-inspect.conf"

struct main_state {
	struct proxy px;
	const char *conf_path;
	char **overrides;
	size_t noverrides;
	/* this process's listeners; the supervisor (workers = N) keeps every
	 * worker's, in worker order, nlisteners each */
	struct listener *listeners[2 * MAX_LISTENERS];
	size_t nlisteners;
	struct listener *all[WORKERS_MAX][2 * MAX_LISTENERS];
	int metrics_fd[WORKERS_MAX];
	unsigned nworkers; /* 1: no supervisor, no fork */
	bool worker;       /* this process is one of several workers */
	ev_signal sigterm, sigint, sighup;
	ev_timer stop_timer;
	ev_timer gap_timer;    /* writes a pending log_gap once the log takes it */
	ev_prepare gauge_prep; /* a worker's gauges, for the others' /metrics */
	ev_prepare log_kick;   /* wakes the log writers once per loop round */
};

/* Once a second: lines lost to a full event log are reported (log_gap) as
 * soon as the log takes lines again, even if nothing else happens. */
static void main_gap_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop, (void)w, (void)revents;
	evlog_flush_gap();
	(void)evlog_trouble(); /* told to the other workers, failing or not */
}

/* Fires before each poll: the lines this round queued go to their files. */
static void main_log_kick_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	(void)loop, (void)w, (void)revents;
	lfile_kick_all();
}

static void main_usage(FILE *f)
{
	fprintf(f, "usage: xmpp-inspect [-c FILE] [-o KEY=VALUE]... [-t] [-V] [-v] [-h]\n"
	           "  -c FILE        configuration file (default: " DEFAULT_CONF ")\n"
	           "  -o KEY=VALUE   set any configuration key, overriding the file\n"
	           "  -t             check the configuration and exit 0 (ok) or 1\n"
	           "  -V             print version and library versions\n"
	           "  -v             debug messages on stderr\n"
	           "  -h             this help\n");
}

static void main_version(void)
{
	printf("xmpp-inspect %s\n", XI_VERSION);
	printf("OpenSSL %s (built with %s)\n", OpenSSL_version(OPENSSL_VERSION),
	       OPENSSL_VERSION_TEXT);
	printf("libev %d.%d\n", ev_version_major(), ev_version_minor());
	printf("Expat %s\n", XML_ExpatVersion());
}

/* Loads the file and the -o overrides, and checks the whole. NULL with
 * every problem in err. */
static struct conf *main_load(const struct main_state *m, char *err, size_t errlen)
{
	struct conf *c = conf_new();
	if (c == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	err[0] = '\0';
	int problems = conf_load_file(c, m->conf_path, err, errlen);
	for (size_t i = 0; i < m->noverrides; i++) {
		size_t used = strlen(err);
		if (conf_set_option(c, m->overrides[i], err + used, errlen - used) < 0) {
			problems++;
			used = strlen(err);
			if (used + 1 < errlen && used > 0 && err[used - 1] != '\n')
				strcat(err, "\n");
		}
	}
	if (problems == 0) {
		size_t used = strlen(err);
		if (conf_check(c, err + used, errlen - used) < 0)
			problems++;
	}
	if (problems != 0) {
		conf_free(c);
		return NULL;
	}
	return c;
}

/* -t: what only OpenSSL can judge (the certificate and key, that they
 * match, the CA bundle, the cipher list), by building the contexts once. */
static int main_check_tls(const struct conf *c, char *err, size_t errlen)
{
	SSL_CTX *sctx = tls_server_ctx(
	    c->cert, c->key, c->tls_min_version == CONF_TLS_1_3 ? TLS1_3_VERSION : TLS1_2_VERSION,
	    c->tls_ciphers, err, errlen);
	if (sctx == NULL)
		return -1;
	SSL_CTX_free(sctx);
	SSL_CTX *cctx = tls_client_ctx(c->upstream_ca, err, errlen);
	if (cctx == NULL)
		return -1;
	SSL_CTX_free(cctx);
	if (c->forge_ca != NULL) {
		struct forge *f = forge_new(c->forge_ca, c->forge_ca_key, 1, err, errlen);
		if (f == NULL)
			return -1;
		forge_free(f);
	}
	return 0;
}

/* Builds what a configuration needs besides itself: the upstream address
 * and the TLS contexts. Nothing in px changes unless all succeed. */
static int main_apply(struct proxy *px, struct conf *c, char *err, size_t errlen)
{
	struct sockaddr_storage ss = {0};
	socklen_t sslen = 0;
	char name[300];

	if (sharedstate_resolve(c, err, errlen) < 0)
		return -1;
	if (!c->upstream_original_dst) {
		if (upstream_resolve(&c->upstream, &ss, &sslen, err, errlen) < 0)
			return -1;
		snprintf(name, sizeof(name), "%s%s%s:%s", strchr(c->upstream.host, ':') ? "[" : "",
		         c->upstream.host, strchr(c->upstream.host, ':') ? "]" : "",
		         c->upstream.port);
	} else {
		snprintf(name, sizeof(name), "original-dst");
	}
	SSL_CTX *sctx = tls_server_ctx(
	    c->cert, c->key, c->tls_min_version == CONF_TLS_1_3 ? TLS1_3_VERSION : TLS1_2_VERSION,
	    c->tls_ciphers, err, errlen);
	if (sctx == NULL)
		return -1;
	SSL_CTX *cctx = tls_client_ctx(c->upstream_ca, err, errlen);
	if (cctx == NULL) {
		SSL_CTX_free(sctx);
		return -1;
	}
	if (c->keylog != NULL) {
		tls_keylog_use(sctx);
		tls_keylog_use(cctx);
	}
	/* a reload makes a new CA and an empty cache; sessions keep their
	 * leaves */
	struct forge *fg = NULL;
	if (c->forge_ca != NULL &&
	    (fg = forge_new(c->forge_ca, c->forge_ca_key, c->forge_cache, err, errlen)) == NULL)
		goto fail;
	if (fg != NULL)
		login_forge_install(sctx, px);
	/* sessions go on without one, each saying why in its login record */
	char terr[300];
	if (c->transcript_dir != NULL &&
	    transcript_check_dir(c->transcript_dir, terr, sizeof(terr)) < 0)
		log_warnx("%s: sessions will have no transcript", terr);
	if (evlog_open(c->event_log, err, errlen) < 0)
		goto fail;
	evlog_queue_bound(c->event_log_queue);
	if (tls_keylog_open(c->keylog, err, errlen) < 0) {
		/* a failed reload leaves the running logs as they were */
		char ignored[256];
		if (px->conf != NULL &&
		    evlog_open(px->conf->event_log, ignored, sizeof(ignored)) == 0)
			evlog_queue_bound(px->conf->event_log_queue);
		goto fail;
	}
	/* sessions keep their own references to the old contexts */
	SSL_CTX_free(px->server_ctx);
	SSL_CTX_free(px->client_ctx);
	forge_free(px->forge);
	px->server_ctx = sctx;
	px->client_ctx = cctx;
	px->forge = fg;
	px->upstream_sa = ss;
	px->upstream_salen = sslen;
	snprintf(px->upstream_name, sizeof(px->upstream_name), "%s", name);
	conf_free(px->conf);
	px->conf = c;
	return 0;
fail:
	forge_free(fg);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	return -1;
}

/* start, stop and reload: one of each for the proxy, written by the
 * supervisor with workers = N (the workers write none). */
static void main_lifecycle_event(const struct main_state *m, const char *event, const char *detail)
{
	if (m->worker)
		return;
	evlog_begin(0, event);
	evlog_str("version", XI_VERSION);
	if (detail != NULL)
		evlog_str("detail", detail);
	if (m->nworkers > 1)
		evlog_int("workers", (long long)m->nworkers);
	if (strcmp(event, "stop") == 0) {
		/* what the logs could not keep, over the whole run (and over
		 * every worker that ran) */
		uint64_t lost, gaps;
		evlog_totals(&lost, &gaps);
		uint64_t keys = tls_keylog_dropped();
		struct workers_gauges t;
		workers_totals(&t);
		evlog_int("events_lost", (long long)(lost + t.events_lost));
		evlog_int("log_gaps", (long long)(gaps + t.log_gaps));
		evlog_int("keys_lost", (long long)(keys + t.keys_lost));
	}
	evlog_end();
}

/*
 * Makes room for c->max_sessions sessions beside nlisteners listeners: the soft RLIMIT_NOFILE is
 * raised toward the hard limit. Where the hard limit is too low,
 * max_sessions is capped to what fits, so that the connections past it
 * are refused at accept (rule max_sessions) instead of failing mid-login
 * for want of a descriptor; said on stderr once per configured value.
 */
static void main_fit_nofile(struct conf *c, size_t nlisteners)
{
	if (c->metrics_set)
		nlisteners += 1 + METRICS_MAX_CLIENTS; /* its socket and its scrapers */
	static unsigned warned_for;
	const rlim_t fixed = nlisteners + NOFILE_FIXED;
	/* workers = N: the limit is per process. The soft limit goes up as for
	 * one process (room for every session in any worker, the kernel's
	 * spread being even only on average); where that does not fit, each
	 * worker takes at most what fits it (refusing the rest at accept) and
	 * max_sessions is what N of them fit. Each worker's listeners are its
	 * own: it closes the others' (the supervisor holds all N sets, and no
	 * session). */
	const rlim_t need = 2 * (rlim_t)c->max_sessions + fixed;
	c->worker_max_sessions = 0;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur >= need)
		return;
	struct rlimit up = {rl.rlim_max < need ? rl.rlim_max : need, rl.rlim_max};
	if (setrlimit(RLIMIT_NOFILE, &up) == 0)
		rl.rlim_cur = up.rlim_cur;
	if (rl.rlim_cur >= need)
		return;
	unsigned fit = rl.rlim_cur >= fixed + 2 ? (unsigned)((rl.rlim_cur - fixed) / 2) : 1;
	if (c->workers > 1) {
		c->worker_max_sessions = fit; /* an uneven spread is refused, not starved of fds */
		unsigned total = fit * c->workers;
		if (total >= c->max_sessions)
			return; /* the workers' caps together hold max_sessions */
		fit = total;
	}
	if (warned_for != c->max_sessions)
		log_warnx("max_sessions %u needs %llu file descriptors%s, the limit is %llu (hard "
		          "%llu): max_sessions lowered to %u%s",
		          c->max_sessions, (unsigned long long)need,
		          c->workers > 1 ? " in one process" : "", (unsigned long long)rl.rlim_cur,
		          (unsigned long long)rl.rlim_max, fit,
		          c->workers > 1 ? ", what the workers fit together" : "");
	warned_for = c->max_sessions;
	c->max_sessions = fit;
}

/* A SIGHUP whose configuration is refused still reopens the running logs:
 * logrotate sent it, and the rotated files must not go on taking lines
 * (the next rotation compresses and deletes them). */
static void main_reopen_logs(const struct conf *c)
{
	char err[512];
	if (evlog_open(c->event_log, err, sizeof(err)) == 0)
		evlog_queue_bound(c->event_log_queue);
	else
		log_warnx("%s", err);
	if (tls_keylog_open(c->keylog, err, sizeof(err)) < 0)
		log_warnx("%s", err);
}

/* A new configuration for new sessions and new steps; established
 * sessions go on. A bad one is reported (once: by the supervisor with
 * workers = N) and the old kept. false if refused. */
static bool main_reload(struct main_state *m)
{
	char err[4096];
	struct conf *c = main_load(m, err, sizeof(err));
	if (c != NULL) {
		c->workers = m->nworkers; /* read at start only */
		main_fit_nofile(c, m->nlisteners);
	}
	if (c == NULL || main_apply(&m->px, c, err, sizeof(err)) < 0) {
		if (c != NULL)
			conf_free(c);
		if (m->worker)
			log_debug("reload failed, keeping the running configuration:\n%s", err);
		else
			log_warnx("reload failed, keeping the running configuration:\n%s", err);
		main_reopen_logs(m->px.conf);
		return false;
	}
	if (m->nworkers == 1 || m->worker)
		sharedstate_apply(&m->px); /* the supervisor serves no session */
	if (!m->worker)
		log_info("configuration reloaded");
	return true;
}

static void main_reloaded(const struct main_state *m, bool ok)
{
	main_lifecycle_event(m, "reload", ok ? "ok" : "failed");
	notify_send(ok ? "READY=1\nSTATUS=configuration reloaded"
	               : "READY=1\nSTATUS=reload failed, running configuration kept");
}

/* Fires on SIGHUP (in a worker: passed on by the supervisor, which logs
 * the one reload event once every worker said how it went). */
static void main_sighup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)loop, (void)revents;
	struct main_state *m = w->data;
	if (m->worker) {
		uint64_t gen = workers_reload_gen();
		workers_reload_done(gen, main_reload(m));
		return;
	}
	notify_reloading();
	main_reloaded(m, main_reload(m));
}

/* Fires when the graceful stop took too long. */
static void main_stop_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w, (void)revents;
	ev_break(loop, EVBREAK_ALL);
}

/* Fires on SIGTERM and SIGINT: stop accepting, end every session. */
static void main_stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)revents;
	struct main_state *m = w->data;
	if (m->px.stopping)
		return;
	if (m->worker) {
		log_debug("worker %d stopping", workers_self()); /* the supervisor said it */
	} else {
		log_info("stopping");
		notify_send("STOPPING=1");
	}
	for (size_t i = 0; i < m->nlisteners; i++)
		listener_close(m->listeners[i]);
	m->nlisteners = 0;
	ev_timer_init(&m->stop_timer, main_stop_timer_cb, CLOSE_LINGER + 1, 0.);
	ev_timer_start(loop, &m->stop_timer);
	ev_unref(loop);
	metrics_close();
	proxyin_close_all(&m->px);
	session_shutdown_all(&m->px);
}

/*
 * A core dump would carry the private key and the credentials of recent
 * logins, and so would /proc/PID/mem or ptrace to another process of the
 * same user: no core (hard limit 0) and not dumpable, always; no setting
 * turns it back on. To debug a crash, start the proxy under gdb (gdb
 * --args xmpp-inspect ...): a tracer attached from the start stays; only
 * attaching later needs root.
 */
static void main_no_core_dumps(void)
{
	struct rlimit none = {0, 0};
	if (setrlimit(RLIMIT_CORE, &none) < 0)
		fatal("cannot turn core dumps off: %s", strerror(errno));
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		fatal("cannot make the process non-dumpable: %s", strerror(errno));
}

/* Keeps only CAP_NET_ADMIN, permitted and effective: what IP_TRANSPARENT
 * needs for each upstream_source = client connection. The raw syscall, as
 * libcap would only wrap it. */
static void main_keep_net_admin(void)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = {{0}};
	d[CAP_TO_INDEX(CAP_NET_ADMIN)].permitted = CAP_TO_MASK(CAP_NET_ADMIN);
	d[CAP_TO_INDEX(CAP_NET_ADMIN)].effective = CAP_TO_MASK(CAP_NET_ADMIN);
	if (syscall(SYS_capset, &h, d) < 0)
		fatal("cannot keep CAP_NET_ADMIN (for upstream_source = client): %s",
		      strerror(errno));
}

/* After the ports are bound and the keys read, root is no longer needed:
 * become c->user for good (groups, gid, uid, in that order). With
 * upstream_source = client, CAP_NET_ADMIN stays (and no other): every
 * upstream connection from the client's address needs IP_TRANSPARENT.
 * tproxy alone does not keep it: the listening sockets have theirs, and
 * accepted sockets inherit it. */
static void main_drop_privileges(const struct conf *c)
{
	if (c->user == NULL)
		return;
	struct passwd *pw = getpwnam(c->user);
	if (pw == NULL)
		fatal("user %s: no such user", c->user);
	bool keep = c->upstream_source == CONF_SOURCE_CLIENT;
	if (keep && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
		fatal("cannot keep capabilities: %s", strerror(errno));
	if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
	    setuid(pw->pw_uid) < 0)
		fatal("cannot become user %s: %s", c->user, strerror(errno));
	if (keep) {
		main_keep_net_admin();
		prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
	}
	if (pw->pw_uid != 0 && setuid(0) == 0)
		fatal("could regain root after becoming %s", c->user);
	/* a change of credentials resets dumpability to fs.suid_dumpable */
	main_no_core_dumps();
	log_info("running as %s (uid %u)", pw->pw_name, (unsigned)pw->pw_uid);
}

/* Binds every listener, nworkers sockets per address (SO_REUSEPORT with
 * several); a port that cannot be bound ends the start. */
static void main_listen(struct main_state *m)
{
	const struct conf *c = m->px.conf;
	char err[512];
	for (size_t k = 0; k < 2; k++) {
		const struct conf_addr *addrs = k == 0 ? c->listen : c->listen_tls;
		size_t n = k == 0 ? c->nlisten : c->nlisten_tls;
		for (size_t i = 0; i < n; i++) {
			struct listener *ls = NULL;
			for (unsigned w = 0; w < m->nworkers; w++) {
				enum listener_share share = m->nworkers == 1 ? LISTENER_ALONE
				                            : w == 0         ? LISTENER_SHARED_FIRST
				                                             : LISTENER_SHARED;
				ls = listener_open(&m->px, &addrs[i],
				                   k == 0 ? SESSION_PORT_STARTTLS
				                          : SESSION_PORT_DIRECT_TLS,
				                   share, err, sizeof(err));
				if (ls == NULL)
					fatal("%s", err);
				m->all[w][m->nlisteners] = ls;
			}
			m->listeners[m->nlisteners] = m->all[0][m->nlisteners];
			m->nlisteners++;
			log_info("listening on %s (%s%s)", listener_name(ls),
			         k == 0 ? "starttls" : "direct_tls",
			         addrs[i].proxy ? ", PROXY header from proxy_from" : "");
		}
	}
}

/* A worker's gauges and log totals, for the /metrics another worker
 * serves and the supervisor's stop. */
static void main_publish(struct main_state *m)
{
	struct workers_gauges g;
	metrics_gauges(&m->px, &g);
	evlog_totals(&g.events_lost, &g.log_gaps);
	g.keys_lost = tls_keylog_dropped();
	workers_publish(&g);
}

/* Fires before each poll in a worker, after every other watcher of the
 * round (the lowest priority): what the round changed is published. */
static void main_gauge_prep_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	(void)loop, (void)revents;
	if (workers_touched())
		main_publish(w->data);
}

/* The event loop of one process that serves sessions (the only one, or a
 * worker), from the listeners bound to the end of the drain. */
static void main_serve(struct main_state *m)
{
	for (size_t i = 0; i < m->nlisteners; i++)
		listener_start(m->listeners[i]);

	ev_signal_init(&m->sigterm, main_stop_cb, SIGTERM);
	ev_signal_init(&m->sigint, main_stop_cb, SIGINT);
	ev_signal_init(&m->sighup, main_sighup_cb, SIGHUP);
	m->sigterm.data = m->sigint.data = m->sighup.data = m;
	ev_signal_start(m->px.loop, &m->sigterm);
	ev_signal_start(m->px.loop, &m->sigint);
	ev_signal_start(m->px.loop, &m->sighup);
	ev_timer_init(&m->gap_timer, main_gap_cb, 1., 1.);
	ev_timer_start(m->px.loop, &m->gap_timer);
	ev_unref(m->px.loop); /* it keeps no loop alive */
	ev_prepare_init(&m->log_kick, main_log_kick_cb);
	ev_prepare_start(m->px.loop, &m->log_kick);
	ev_unref(m->px.loop);
	if (m->worker) {
		ev_prepare_init(&m->gauge_prep, main_gauge_prep_cb);
		m->gauge_prep.data = m;
		/* the lowest priority: after the session reaper's frees */
		ev_set_priority(&m->gauge_prep, EV_MINPRI);
		ev_prepare_start(m->px.loop, &m->gauge_prep);
		ev_unref(m->px.loop);
	}
	main_lifecycle_event(m, "start", NULL);
	if (!m->worker)
		notify_send("READY=1"); /* the ports are bound and accepting */

	ev_run(m->px.loop, 0);

	main_lifecycle_event(m, "stop", NULL);
	sharedstate_free(m->px.shared);
	metrics_close();
	proxyin_close_all(&m->px);
	for (size_t i = 0; i < m->nlisteners; i++)
		listener_close(m->listeners[i]);
	if (m->worker)
		evlog_flush_gap(); /* no stop event of its own carries it */
	evlog_close();
	tls_keylog_close();
	if (m->worker)
		main_publish(m); /* the final totals */
	SSL_CTX_free(m->px.server_ctx);
	forge_free(m->px.forge);
	transcript_shutdown();
	SSL_CTX_free(m->px.client_ctx);
	conf_free(m->px.conf);
	free(m->overrides);
	log_debug("stopped");
}

/* Forked worker i: keeps its own sockets (the others' would take their
 * share of connections and never accept them), writes its own log
 * writers onto the same files, and serves. */
static void main_worker(struct main_state *m, unsigned i)
{
	workers_become(i);
	m->worker = true;
	notify_close();
	lfile_set_threadless(false);
	lfile_set_shared(true);
	for (unsigned w = 0; w < m->nworkers; w++) {
		if (w == i)
			continue;
		for (size_t k = 0; k < m->nlisteners; k++)
			listener_close(m->all[w][k]);
		if (m->metrics_fd[w] >= 0)
			close(m->metrics_fd[w]);
	}
	for (size_t k = 0; k < m->nlisteners; k++)
		m->listeners[k] = m->all[i][k];
	main_reopen_logs(m->px.conf); /* its own writer threads */
	session_proxy_init(&m->px);
	sharedstate_apply(&m->px);
	metrics_init(&m->px, XI_VERSION);
	metrics_set_shared_state_probe(sharedstate_probe);
	if (m->metrics_fd[i] >= 0)
		metrics_serve(&m->px, m->metrics_fd[i]);
	main_serve(m);
}

/* The supervisor's side of the reload, and of a worker's end. */
static bool main_sv_reload(void *ctx)
{
	struct main_state *m = ctx;
	notify_reloading();
	return main_reload(m);
}

static void main_sv_reloaded(void *ctx, bool ok)
{
	main_reloaded(ctx, ok);
}

static void main_sv_exited(void *ctx, unsigned i)
{
	struct main_state *m = ctx;
	workers_forget(i);
	static struct addrtab *t;
	if (t == NULL)
		t = addrtab_new_shared(workers_area(WORKERS_AREA_ADDRTAB), 0, m->nworkers);
	if (t != NULL)
		addrtab_forget_worker(t, i);
}

/* The supervisor's copies of the listening sockets go at the stop, as
 * the workers close theirs: a connection made during the drain is
 * refused, not left in a backlog no one will accept from. */
static void main_sv_stopping(void *ctx)
{
	struct main_state *m = ctx;
	for (unsigned w = 0; w < m->nworkers; w++) {
		for (size_t k = 0; k < m->nlisteners; k++)
			listener_close(m->all[w][k]);
		if (m->metrics_fd[w] >= 0)
			close(m->metrics_fd[w]);
		m->metrics_fd[w] = -1;
	}
	m->nlisteners = 0;
}

/*
 * workers = N: the shared region, then the forks. Returns in the
 * supervisor once every worker has ended after a stop (a worker never
 * returns: it serves, and exits).
 */
static void main_supervise(struct main_state *m)
{
	char err[512];
	size_t sizes[WORKERS_AREAS] = {addrtab_shared_size(), metrics_shared_size()};
	if (workers_setup(m->nworkers, sizes, err, sizeof(err)) < 0 ||
	    addrtab_shared_init(workers_area(WORKERS_AREA_ADDRTAB)) < 0)
		fatal("%s", err[0] ? err : "shared memory: no robust process-shared mutex");
	metrics_shared_init(workers_area(WORKERS_AREA_METRICS));
	metrics_use_shared(workers_area(WORKERS_AREA_METRICS));
	main_lifecycle_event(m, "start", NULL);
	static const struct supervisor_ops ops = {.reload = main_sv_reload,
	                                          .reloaded = main_sv_reloaded,
	                                          .exited = main_sv_exited,
	                                          .stopping = main_sv_stopping};
	struct supervisor_ops o = ops;
	o.ctx = m;
	notify_send("READY=1"); /* the ports are bound: the workers accept */
	int i = supervisor_run(m->px.loop, m->nworkers, &o);
	if (i >= 0) {
		main_worker(m, (unsigned)i);
		exit(0);
	}
	main_lifecycle_event(m, "stop", NULL);
	evlog_close();
	tls_keylog_close();
	log_info("stopped");
}

int main(int argc, char **argv)
{
	static struct main_state m;
	bool check = false, verbose = false;
	int ch;

	/* before anything else touches OpenSSL, which then refuses new hooks */
	if (secmem_init() < 0) {
		fprintf(stderr,
		        "xmpp-inspect: OpenSSL allocated before its memory hooks were set\n");
		return 1;
	}
	main_no_core_dumps();
	m.conf_path = DEFAULT_CONF;
	m.overrides = calloc((size_t)argc, sizeof(char *));
	while ((ch = getopt(argc, argv, "c:o:tVvh")) != -1) {
		switch (ch) {
		case 'c':
			m.conf_path = optarg;
			break;
		case 'o':
			m.overrides[m.noverrides++] = optarg;
			break;
		case 't':
			check = true;
			break;
		case 'V':
			main_version();
			return 0;
		case 'v':
			verbose = true;
			break;
		case 'h':
			main_usage(stdout);
			return 0;
		default:
			main_usage(stderr);
			return 1;
		}
	}
	if (optind != argc) {
		main_usage(stderr);
		return 1;
	}
	log_init("xmpp-inspect", verbose);
	tls_init();
	signal(SIGPIPE, SIG_IGN);

	char err[8192];
	struct conf *c = main_load(&m, err, sizeof(err));
	if (check) {
		if (c != NULL && main_check_tls(c, err, sizeof(err)) < 0) {
			conf_free(c);
			c = NULL;
		}
		if (c == NULL) {
			fputs(err, stderr);
			if (err[0] && err[strlen(err) - 1] != '\n')
				fputc('\n', stderr);
			return 1;
		}
		printf("%s: configuration OK\n", m.conf_path);
		conf_free(c);
		return 0;
	}
	if (c == NULL) {
		char *nl = strchr(err, '\n');
		if (nl != NULL && nl[1] != '\0')
			fputs(err, stderr); /* several problems: show them all */
		else
			fatal("%s", strtok(err, "\n"));
		return 1;
	}

	notify_init();
	m.px.loop = EV_DEFAULT;
	m.nworkers = c->workers;
	for (size_t i = 0; i < WORKERS_MAX; i++)
		m.metrics_fd[i] = -1;
	if (m.nworkers > 1)
		lfile_set_threadless(true); /* the supervisor forks: no thread, ever */
	if (main_apply(&m.px, c, err, sizeof(err)) < 0)
		fatal("%s", err);
	if (m.nworkers == 1) {
		session_proxy_init(&m.px);
		sharedstate_apply(&m.px);
		metrics_init(&m.px, XI_VERSION);
		metrics_set_shared_state_probe(sharedstate_probe);
	}
	main_listen(&m);
	if (m.px.conf->metrics_set) {
		const struct conf_addr *a = &m.px.conf->metrics_listen;
		if (m.nworkers == 1 && metrics_listen(&m.px, a, err, sizeof(err)) < 0)
			fatal("%s", err);
		for (unsigned w = 0; m.nworkers > 1 && w < m.nworkers; w++)
			if ((m.metrics_fd[w] = metrics_bind(a, true, err, sizeof(err))) < 0)
				fatal("%s", err);
		log_info("metrics on %s:%s", a->host, a->port);
	}
	main_fit_nofile(m.px.conf, m.nlisteners); /* once the start cannot fail on a port */
	main_drop_privileges(m.px.conf);
	if (m.nworkers > 1) {
		main_supervise(&m);
		SSL_CTX_free(m.px.server_ctx);
		forge_free(m.px.forge);
		SSL_CTX_free(m.px.client_ctx);
		conf_free(m.px.conf);
		free(m.overrides);
		return 0;
	}
	main_serve(&m);
	log_info("stopped");
	return 0;
}
