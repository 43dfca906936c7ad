/*
 * metrics.c: what the event log's tap counts, and the exposition text it
 * renders: fixed label sets (a mechanism or rule from elsewhere is
 * "other"), the histogram's cumulative buckets, HELP and TYPE per family.
 * Events are made with evlog_begin/evlog_end and no log file open: the tap
 * sees them all the same.
 */
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "evlog.h"
#include "metrics.h"
#include "session.h"
#include "t.h"

static void login(const char *outcome, const char *mech, long long ms)
{
	evlog_begin(1, "login");
	evlog_str("peer", "192.0.2.1:1");
	evlog_str("mechanism", mech);
	evlog_str("outcome", outcome);
	evlog_int("ms", ms);
	evlog_end();
}

static int has(const struct buf *b, const char *line)
{
	char want[512];
	snprintf(want, sizeof(want), "\n%s\n", line);
	struct buf z = {0};
	buf_add(&z, "\n", 1);
	buf_add(&z, buf_head(b), b->len);
	buf_add(&z, "", 1);
	int r = strstr(buf_head(&z), want) != NULL;
	buf_free(&z);
	return r;
}

static int probe_down(const struct proxy *px)
{
	(void)px;
	return 0;
}

int main(void)
{
	struct proxy px = {0};
	metrics_init(&px, "9.9.9");
	struct buf b = {0};

	T_CHECK(metrics_render(&px, &b) == 0, "render with nothing counted");
	T_CHECK(has(&b, "xmpp_inspect_connections_total 0"), "connections start at 0");
	T_CHECK(has(&b, "# TYPE xmpp_inspect_login_duration_seconds histogram"), "histogram TYPE");
	T_CHECK(has(&b, "xmpp_inspect_shared_state_up 1"), "shared_state_up 1 with no shared state");
	T_CHECK(has(&b, "xmpp_inspect_logins_total{outcome=\"success\",mechanism=\"PLAIN\"} 0"),
	        "the common series exist from the start");
	buf_free(&b);

	evlog_begin(1, "connect");
	evlog_str("peer", "192.0.2.1:1");
	evlog_end();
	evlog_begin(0, "refused");
	evlog_str("peer", "192.0.2.9");
	evlog_str("rule", "proxy_from");
	evlog_end();
	login("success", "PLAIN", 30);
	login("success", "PLAIN", 700);
	login("failure", "X-EVIL-<\"mech\">", 70000);
	login("incomplete", NULL, 10);
	evlog_begin(1, "policy");
	evlog_str("rule", "plain_without_tls");
	evlog_str("action", "reject");
	evlog_end();
	evlog_begin(1, "policy");
	evlog_str("rule", "a rule from the future");
	evlog_str("action", "log");
	evlog_end();
	evlog_begin(1, "tls");
	evlog_str("leg", "client");
	evlog_bool("ok", true);
	evlog_str("version", "TLSv1.3");
	evlog_end();
	evlog_begin(1, "tls");
	evlog_str("leg", "upstream");
	evlog_bool("ok", false);
	evlog_end();
	evlog_begin(1, "upstream");
	evlog_bool("ok", false);
	evlog_str("error", "connect: Connection refused");
	evlog_end();
	evlog_begin(1, "upstream");
	evlog_bool("ok", true);
	evlog_end();

	metrics_render(&px, &b);
	T_CHECK(has(&b, "xmpp_inspect_connections_total 1"), "one connect");
	T_CHECK(has(&b, "xmpp_inspect_refused_total{rule=\"proxy_from\"} 1") &&
	            has(&b, "xmpp_inspect_refused_total{rule=\"max_sessions\"} 0"),
	        "one refusal by its rule");
	T_CHECK(has(&b, "xmpp_inspect_logins_total{outcome=\"success\",mechanism=\"PLAIN\"} 2"),
	        "two PLAIN successes");
	T_CHECK(has(&b, "xmpp_inspect_logins_total{outcome=\"failure\",mechanism=\"other\"} 1"),
	        "a mechanism name not in the set is other (no wire text in a label)");
	T_CHECK(memmem(buf_head(&b), b.len, "EVIL", 4) == NULL, "the unknown name is nowhere");
	T_CHECK(has(&b, "xmpp_inspect_logins_total{outcome=\"incomplete\",mechanism=\"none\"} 1"),
	        "no mechanism: none");
	T_CHECK(has(&b,
	            "xmpp_inspect_policy_actions_total{rule=\"plain_without_tls\",action=\"reject\"} 1"),
	        "a policy reject");
	T_CHECK(has(&b, "xmpp_inspect_policy_actions_total{rule=\"other\",action=\"log\"} 1"),
	        "an unknown rule is other");
	T_CHECK(has(&b, "xmpp_inspect_tls_handshakes_total{leg=\"client\",version=\"TLSv1.3\","
	                "result=\"success\"} 1"),
	        "a client TLS 1.3 handshake");
	T_CHECK(has(&b, "xmpp_inspect_tls_handshakes_total{leg=\"upstream\",version=\"none\","
	                "result=\"failure\"} 1"),
	        "a failed upstream handshake");
	T_CHECK(has(&b, "xmpp_inspect_upstream_errors_total{kind=\"refused\"} 1"),
	        "an upstream refusal; a good upstream is no error");
	T_CHECK(has(&b, "xmpp_inspect_upstream_errors_total{kind=\"tls\"} 1"),
	        "the upstream's failed handshake is an upstream error of kind tls");
	T_CHECK(memmem(buf_head(&b), b.len, "version=\"9.9.9\"", 15) != NULL, "build_info names the version");
	T_CHECK(has(&b, "xmpp_inspect_login_duration_seconds_bucket{le=\"0.05\"} 1") &&
	            has(&b, "xmpp_inspect_login_duration_seconds_bucket{le=\"1\"} 2") &&
	            has(&b, "xmpp_inspect_login_duration_seconds_bucket{le=\"60\"} 2") &&
	            has(&b, "xmpp_inspect_login_duration_seconds_bucket{le=\"+Inf\"} 3") &&
	            has(&b, "xmpp_inspect_login_duration_seconds_count 3"),
	        "histogram: cumulative, outcomes only (incomplete is not a duration)");
	T_CHECK(has(&b, "xmpp_inspect_login_duration_seconds_sum 70.730"), "histogram sum");
	buf_free(&b);

	/* the rules of the policy events the shared state and the admission
	 * make have their own label, as the event log names them */
	evlog_begin(1, "policy");
	evlog_str("rule", "max_per_addr");
	evlog_str("action", "reject");
	evlog_end();
	evlog_begin(1, "policy");
	evlog_str("rule", "shared_state_fail");
	evlog_str("action", "reject");
	evlog_end();
	metrics_render(&px, &b);
	T_CHECK(has(&b, "xmpp_inspect_policy_actions_total{rule=\"max_per_addr\",action=\"reject\"} 1"),
	        "a policy event of rule max_per_addr (the shared admission) is not other");
	T_CHECK(has(&b, "xmpp_inspect_policy_actions_total{rule=\"shared_state_fail\",action=\"reject\"} 1"),
	        "a policy event of rule shared_state_fail is not other");
	T_CHECK(has(&b, "xmpp_inspect_policy_actions_total{rule=\"other\",action=\"log\"} 1") &&
	            memmem(buf_head(&b), b.len, "rule=\"other\",action=\"reject\"", 28) == NULL,
	        "other still counts the unknown rule only");
	buf_free(&b);

	/* a version string with a quote, a backslash and a newline stays in
	 * its label (the exposition format's escapes) */
	metrics_init(&px, "1.0\"} 9\nevil 1\\");
	metrics_render(&px, &b);
	const char *esc = "version=\"1.0\\\"} 9\\nevil 1\\\\\",";
	T_CHECK(memmem(buf_head(&b), b.len, esc, strlen(esc)) != NULL,
	        "build_info escapes its version label");
	T_CHECK(memmem(buf_head(&b), b.len, "\nevil 1", 7) == NULL, "no line of the version's making");
	buf_free(&b);

	metrics_set_shared_state_probe(probe_down);
	metrics_render(&px, &b);
	T_CHECK(has(&b, "xmpp_inspect_shared_state_up 0"), "the shared-state probe sets the gauge");
	buf_free(&b);
	T_DONE();
}
