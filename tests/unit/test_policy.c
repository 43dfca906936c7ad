/*
 * Unit tests of policy.c: a table of configuration x step x input ->
 * verdict that takes every branch of policy_check() and its order of
 * precedence, plus policy_require_tls() for each require_tls value.
 * Configurations are made with conf_new() and set field by field, so the
 * test depends on the verdict logic only, not on the config parser.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "policy.h"
#include "t.h"

/* A configuration in one line of the table. */
struct cfg {
	enum conf_require_tls require;
	enum conf_plain plain;
	const char *deny[4]; /* mechanisms_deny, NULL-terminated */
	const char *allow[4];
};

static struct conf *make_conf(const struct cfg *k)
{
	struct conf *c = conf_new();
	if (c == NULL)
		abort();
	c->require_tls = k->require;
	c->plain_without_tls = k->plain;
	for (size_t i = 0; i < 4 && k->deny[i]; i++)
		c->mechanisms_deny[c->nmechanisms_deny++] = strdup(k->deny[i]);
	for (size_t i = 0; i < 4 && k->allow[i]; i++)
		c->mechanisms_allow[c->nmechanisms_allow++] = strdup(k->allow[i]);
	return c;
}

/* Named configurations. */
static const struct cfg DEF = {CONF_REQUIRE_AUTO, CONF_PLAIN_LOG, {NULL}, {NULL}};
static const struct cfg REQ_YES = {CONF_REQUIRE_YES, CONF_PLAIN_LOG, {NULL}, {NULL}};
static const struct cfg REQ_NO = {CONF_REQUIRE_NO, CONF_PLAIN_LOG, {NULL}, {NULL}};
static const struct cfg PLAIN_REJ = {CONF_REQUIRE_NO, CONF_PLAIN_REJECT, {NULL}, {NULL}};
static const struct cfg PLAIN_ALLOW = {CONF_REQUIRE_NO, CONF_PLAIN_ALLOW, {NULL}, {NULL}};
static const struct cfg DENY = {CONF_REQUIRE_NO, CONF_PLAIN_LOG, {"DIGEST-MD5", "plain"}, {NULL}};
static const struct cfg ALLOW = {CONF_REQUIRE_NO, CONF_PLAIN_LOG, {NULL},
				 {"SCRAM-SHA-1", "scram-sha-256", "PLAIN"}};
static const struct cfg BOTH = {CONF_REQUIRE_NO, CONF_PLAIN_REJECT, {"PLAIN"},
				{"PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"}};
static const struct cfg STRICT = {CONF_REQUIRE_YES, CONF_PLAIN_REJECT, {"CRAM-MD5"}, {NULL}};

enum { NOTLS = 0, TLS = 1 };
enum { UP_OPT = 0, UP_REQ = 1 };
enum { NOT_OFFERED = 0, OFFERED = 1 };

struct row {
	const char *name;
	const struct cfg *cfg;
	enum policy_step step;
	const char *mech;
	bool client_tls, upstream_requires_tls, offered;
	enum policy_action action;
	const char *rule;      /* "" for POLICY_ALLOW */
	const char *condition; /* NULL unless POLICY_REJECT */
};

static const struct row rows[] = {
	/* ---- offer ---- */
	{"offer SCRAM-SHA-1, defaults", &DEF, POLICY_OFFER, "SCRAM-SHA-1", NOTLS, UP_OPT, 0,
	 POLICY_ALLOW, "", NULL},
	{"offer PLAIN without TLS, plain log", &DEF, POLICY_OFFER, "PLAIN", NOTLS, UP_OPT, 0,
	 POLICY_ALLOW, "", NULL},
	{"offer SCRAM-SHA-1-PLUS", &DEF, POLICY_OFFER, "SCRAM-SHA-1-PLUS", TLS, UP_OPT, 0,
	 POLICY_STRIP, "channel_binding", NULL},
	{"offer SCRAM-SHA-512-PLUS", &PLAIN_ALLOW, POLICY_OFFER, "SCRAM-SHA-512-PLUS", TLS, UP_REQ,
	 0, POLICY_STRIP, "channel_binding", NULL},
	{"offer -PLUS allowed by the list is still stripped", &BOTH, POLICY_OFFER,
	 "SCRAM-SHA-1-PLUS", TLS, UP_OPT, 0, POLICY_STRIP, "channel_binding", NULL},
	{"offer a name that is only -PLUS", &DEF, POLICY_OFFER, "-PLUS", TLS, UP_OPT, 0,
	 POLICY_ALLOW, "", NULL},
	{"offer PLUS without the dash", &DEF, POLICY_OFFER, "XPLUS", TLS, UP_OPT, 0, POLICY_ALLOW,
	 "", NULL},
	{"offer denied DIGEST-MD5", &DENY, POLICY_OFFER, "DIGEST-MD5", TLS, UP_OPT, 0, POLICY_STRIP,
	 "mechanisms_deny", NULL},
	{"offer denied PLAIN (deny list in lower case)", &DENY, POLICY_OFFER, "PLAIN", TLS, UP_OPT,
	 0, POLICY_STRIP, "mechanisms_deny", NULL},
	{"offer not denied SCRAM-SHA-1", &DENY, POLICY_OFFER, "SCRAM-SHA-1", TLS, UP_OPT, 0,
	 POLICY_ALLOW, "", NULL},
	{"offer outside the allow list", &ALLOW, POLICY_OFFER, "DIGEST-MD5", TLS, UP_OPT, 0,
	 POLICY_STRIP, "mechanisms_allow", NULL},
	{"offer in the allow list (lower case in list)", &ALLOW, POLICY_OFFER, "SCRAM-SHA-256", TLS,
	 UP_OPT, 0, POLICY_ALLOW, "", NULL},
	{"offer in both lists: the deny list removed it", &BOTH, POLICY_OFFER, "PLAIN", TLS, UP_OPT,
	 0, POLICY_STRIP, "mechanisms_deny", NULL},
	{"offer PLAIN without TLS, plain reject", &PLAIN_REJ, POLICY_OFFER, "PLAIN", NOTLS, UP_OPT,
	 0, POLICY_STRIP, "plain_without_tls", NULL},
	{"offer LOGIN without TLS, plain reject", &PLAIN_REJ, POLICY_OFFER, "LOGIN", NOTLS, UP_OPT,
	 0, POLICY_STRIP, "plain_without_tls", NULL},
	{"offer PLAIN with TLS, plain reject", &PLAIN_REJ, POLICY_OFFER, "PLAIN", TLS, UP_OPT, 0,
	 POLICY_ALLOW, "", NULL},
	{"offer SCRAM without TLS, plain reject", &PLAIN_REJ, POLICY_OFFER, "SCRAM-SHA-1", NOTLS,
	 UP_OPT, 0, POLICY_ALLOW, "", NULL},
	{"offer X-PLAIN is not PLAIN", &PLAIN_REJ, POLICY_OFFER, "X-PLAIN", NOTLS, UP_OPT, 0,
	 POLICY_ALLOW, "", NULL},
	{"offer PLAIN without TLS, plain allow", &PLAIN_ALLOW, POLICY_OFFER, "PLAIN", NOTLS, UP_OPT,
	 0, POLICY_ALLOW, "", NULL},
	{"offer ignores require_tls", &REQ_YES, POLICY_OFFER, "SCRAM-SHA-1", NOTLS, UP_REQ, 0,
	 POLICY_ALLOW, "", NULL},
	{"offer: deny before plain reject", &STRICT, POLICY_OFFER, "CRAM-MD5", NOTLS, UP_OPT, 0,
	 POLICY_STRIP, "mechanisms_deny", NULL},

	/* ---- auth: require_tls ---- */
	{"auth without TLS, require yes", &REQ_YES, POLICY_AUTH, "SCRAM-SHA-1", NOTLS, UP_OPT,
	 OFFERED, POLICY_REJECT, "require_tls", "encryption-required"},
	{"auth with TLS, require yes", &REQ_YES, POLICY_AUTH, "SCRAM-SHA-1", TLS, UP_OPT, OFFERED,
	 POLICY_ALLOW, "", NULL},
	{"auth without TLS, require auto, upstream requires", &DEF, POLICY_AUTH, "SCRAM-SHA-1",
	 NOTLS, UP_REQ, OFFERED, POLICY_REJECT, "require_tls", "encryption-required"},
	{"auth without TLS, require auto, upstream optional", &DEF, POLICY_AUTH, "SCRAM-SHA-1",
	 NOTLS, UP_OPT, OFFERED, POLICY_ALLOW, "", NULL},
	{"auth without TLS, require no, upstream requires", &REQ_NO, POLICY_AUTH, "SCRAM-SHA-1",
	 NOTLS, UP_REQ, OFFERED, POLICY_ALLOW, "", NULL},
	{"auth: require_tls before everything", &STRICT, POLICY_AUTH, "CRAM-MD5", NOTLS, UP_OPT,
	 NOT_OFFERED, POLICY_REJECT, "require_tls", "encryption-required"},

	/* ---- auth: mechanism lists ---- */
	{"auth denied mechanism", &DENY, POLICY_AUTH, "DIGEST-MD5", TLS, UP_OPT, OFFERED,
	 POLICY_REJECT, "mechanisms_deny", "invalid-mechanism"},
	{"auth outside the allow list", &ALLOW, POLICY_AUTH, "ANONYMOUS", TLS, UP_OPT, OFFERED,
	 POLICY_REJECT, "mechanisms_allow", "invalid-mechanism"},
	{"auth in the allow list", &ALLOW, POLICY_AUTH, "SCRAM-SHA-1", TLS, UP_OPT, OFFERED,
	 POLICY_ALLOW, "", NULL},
	{"auth in both lists: the deny list refused it", &BOTH, POLICY_AUTH, "PLAIN", TLS, UP_OPT,
	 OFFERED, POLICY_REJECT, "mechanisms_deny", "invalid-mechanism"},
	{"auth: deny before plain reject", &STRICT, POLICY_AUTH, "CRAM-MD5", TLS, UP_OPT, OFFERED,
	 POLICY_REJECT, "mechanisms_deny", "invalid-mechanism"},
	{"auth: deny before not offered", &DENY, POLICY_AUTH, "DIGEST-MD5", TLS, UP_OPT,
	 NOT_OFFERED, POLICY_REJECT, "mechanisms_deny", "invalid-mechanism"},

	/* ---- auth: plaintext mechanisms without TLS ---- */
	{"auth PLAIN without TLS, plain reject", &PLAIN_REJ, POLICY_AUTH, "PLAIN", NOTLS, UP_OPT,
	 OFFERED, POLICY_REJECT, "plain_without_tls", "encryption-required"},
	{"auth LOGIN without TLS, plain reject", &PLAIN_REJ, POLICY_AUTH, "LOGIN", NOTLS, UP_OPT,
	 OFFERED, POLICY_REJECT, "plain_without_tls", "encryption-required"},
	{"auth: plain reject before not offered", &PLAIN_REJ, POLICY_AUTH, "PLAIN", NOTLS, UP_OPT,
	 NOT_OFFERED, POLICY_REJECT, "plain_without_tls", "encryption-required"},
	{"auth PLAIN with TLS, plain reject", &PLAIN_REJ, POLICY_AUTH, "PLAIN", TLS, UP_OPT,
	 OFFERED, POLICY_ALLOW, "", NULL},
	{"auth PLAIN without TLS, plain log", &REQ_NO, POLICY_AUTH, "PLAIN", NOTLS, UP_REQ, OFFERED,
	 POLICY_LOG, "plain_without_tls", NULL},
	{"auth LOGIN without TLS, plain log", &DEF, POLICY_AUTH, "LOGIN", NOTLS, UP_OPT, OFFERED,
	 POLICY_LOG, "plain_without_tls", NULL},
	{"auth PLAIN with TLS, plain log", &DEF, POLICY_AUTH, "PLAIN", TLS, UP_REQ, OFFERED,
	 POLICY_ALLOW, "", NULL},
	{"auth PLAIN without TLS, plain allow", &PLAIN_ALLOW, POLICY_AUTH, "PLAIN", NOTLS, UP_OPT,
	 OFFERED, POLICY_ALLOW, "", NULL},
	{"auth SCRAM without TLS, plain reject", &PLAIN_REJ, POLICY_AUTH, "SCRAM-SHA-1", NOTLS,
	 UP_OPT, OFFERED, POLICY_ALLOW, "", NULL},

	/* ---- auth: not offered ---- */
	{"auth not offered", &DEF, POLICY_AUTH, "SCRAM-SHA-256", TLS, UP_OPT, NOT_OFFERED,
	 POLICY_REJECT, "not_offered", "invalid-mechanism"},
	{"auth -PLUS (never offered)", &DEF, POLICY_AUTH, "SCRAM-SHA-1-PLUS", TLS, UP_OPT,
	 NOT_OFFERED, POLICY_REJECT, "not_offered", "invalid-mechanism"},
	{"auth: not offered before plain log", &DEF, POLICY_AUTH, "PLAIN", NOTLS, UP_OPT,
	 NOT_OFFERED, POLICY_REJECT, "not_offered", "invalid-mechanism"},
	{"auth PLAIN not offered, plain allow", &PLAIN_ALLOW, POLICY_AUTH, "PLAIN", NOTLS, UP_OPT,
	 NOT_OFFERED, POLICY_REJECT, "not_offered", "invalid-mechanism"},
};

static void test_table(void)
{
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		struct conf *c = make_conf(r->cfg);
		struct policy_input in = {.step = r->step,
					  .mechanism = r->mech,
					  .client_tls = r->client_tls,
					  .upstream_requires_tls = r->upstream_requires_tls,
					  .offered = r->offered};
		struct policy_verdict v;
		memset(&v, 0xa5, sizeof(v)); /* policy_check must set every field */
		policy_check(c, &in, &v);
		char name[200];
		snprintf(name, sizeof(name), "%s -> %s %s (got %s %s)", r->name,
			 policy_action_name(r->action), r->rule, policy_action_name(v.action),
			 v.action == r->action && v.rule ? v.rule : "?");
		bool cond_ok = r->condition == NULL
				       ? v.condition == NULL
				       : v.condition != NULL && strcmp(v.condition, r->condition) == 0;
		bool detail_ok = r->action == POLICY_ALLOW
					 ? v.detail[0] == '\0'
					 : memchr(v.detail, '\0', sizeof(v.detail)) != NULL &&
						   strstr(v.detail, r->mech) != NULL;
		T_CHECK(v.action == r->action && v.rule != NULL && strcmp(v.rule, r->rule) == 0 &&
				cond_ok && detail_ok,
			name);
		conf_free(c);
	}
}

/*
 * The rules of issue 4, in a second table (the first one's rows stay as
 * they are): users_deny/users_allow at POLICY_IDENTITY, auth_failures,
 * strip_starttls and offer_mechanisms at POLICY_OFFER/POLICY_AUTH.
 */
struct cfg2 {
	enum conf_require_tls require;
	enum conf_plain plain;
	const char *deny[4];	   /* mechanisms_deny */
	const char *users_deny[4]; /* fnmatch patterns */
	const char *users_allow[4];
	unsigned failures_max, failures_window; /* auth_failures N/SECONDS; 0 = off */
	const char *offer[4];			/* offer_mechanisms */
};

static struct conf *make_conf2(const struct cfg2 *k)
{
	struct conf *c = conf_new();
	if (c == NULL)
		abort();
	c->require_tls = k->require;
	c->plain_without_tls = k->plain;
	for (size_t i = 0; i < 4 && k->deny[i]; i++)
		c->mechanisms_deny[c->nmechanisms_deny++] = strdup(k->deny[i]);
	for (size_t i = 0; i < 4 && k->users_deny[i]; i++)
		c->users_deny[c->nusers_deny++] = strdup(k->users_deny[i]);
	for (size_t i = 0; i < 4 && k->users_allow[i]; i++)
		c->users_allow[c->nusers_allow++] = strdup(k->users_allow[i]);
	c->auth_failures_max = k->failures_max;
	c->auth_failures_window = k->failures_window;
	for (size_t i = 0; i < 4 && k->offer[i]; i++)
		c->offer_mechanisms[c->noffer_mechanisms++] = strdup(k->offer[i]);
	return c;
}

static const struct cfg2 NONE2 = {CONF_REQUIRE_AUTO, CONF_PLAIN_LOG, {NULL}, {NULL}, {NULL}, 0, 0,
				  {NULL}};
static const struct cfg2 UDENY = {CONF_REQUIRE_AUTO, CONF_PLAIN_LOG, {NULL},
				  {"mallory", "b?b", "*@evil.test", "[x-z]*"}, {NULL}, 0, 0, {NULL}};
static const struct cfg2 UDENY_CASE = {CONF_REQUIRE_AUTO, CONF_PLAIN_LOG, {NULL},
				       {"ALICE@LAB.TEST"}, {NULL}, 0, 0, {NULL}};
static const struct cfg2 UALLOW = {CONF_REQUIRE_AUTO, CONF_PLAIN_LOG, {NULL}, {NULL},
				   {"alice", "*@staff.test"}, 0, 0, {NULL}};
static const struct cfg2 UBOTH = {CONF_REQUIRE_AUTO, CONF_PLAIN_LOG, {NULL}, {"bob"}, {"*"}, 0, 0,
				  {NULL}};
static const struct cfg2 FAIL3 = {CONF_REQUIRE_AUTO, CONF_PLAIN_LOG, {NULL}, {NULL}, {NULL}, 3, 60,
				  {NULL}};
static const struct cfg2 FAIL1_STRICT = {CONF_REQUIRE_YES, CONF_PLAIN_REJECT, {"PLAIN"}, {NULL},
					 {NULL}, 1, 2, {NULL}};
static const struct cfg2 PLAIN_REJ2 = {CONF_REQUIRE_AUTO, CONF_PLAIN_REJECT, {NULL}, {NULL},
				       {NULL}, 0, 0, {NULL}};
static const struct cfg2 REQ_YES2 = {CONF_REQUIRE_YES, CONF_PLAIN_LOG, {NULL}, {NULL}, {NULL}, 0, 0,
				     {NULL}};
static const struct cfg2 DENY_SCRAM2 = {CONF_REQUIRE_AUTO, CONF_PLAIN_LOG, {"SCRAM-SHA-1"}, {NULL},
					{NULL}, 0, 0, {NULL}};
static const struct cfg2 OFFER = {CONF_REQUIRE_AUTO, CONF_PLAIN_LOG, {NULL}, {NULL}, {NULL}, 0, 0,
				  {"PLAIN", "X-FAKE"}};
static const struct cfg2 OFFER_DENY = {CONF_REQUIRE_AUTO, CONF_PLAIN_REJECT, {"DIGEST-MD5"}, {NULL},
				       {NULL}, 0, 0, {"DIGEST-MD5", "PLAIN"}};

enum { NOSTRIP = 0, STRIPPED = 1 };

struct row2 {
	const char *name;
	const struct cfg2 *cfg;
	enum policy_step step;
	const char *mech;
	bool client_tls, upstream_requires_tls, offered, stripped;
	unsigned failures;
	const char *user, *domain; /* POLICY_IDENTITY */
	enum policy_action action;
	const char *rule;
	const char *condition;
	const char *detail; /* a substring of the detail, NULL for POLICY_ALLOW */
};

static const struct row2 rows2[] = {
	/* ---- identity: users_deny ---- */
	{"identity, no lists", &NONE2, POLICY_IDENTITY, "PLAIN", TLS, UP_REQ, OFFERED, NOSTRIP, 0,
	 "alice", "lab.test", POLICY_ALLOW, "", NULL, NULL},
	{"identity denied by name", &UDENY, POLICY_IDENTITY, "PLAIN", TLS, UP_REQ, OFFERED, NOSTRIP,
	 0, "mallory", "lab.test", POLICY_REJECT, "users_deny", "not-authorized", "mallory"},
	{"identity denied, other case", &UDENY, POLICY_IDENTITY, "SCRAM-SHA-1", TLS, UP_REQ, OFFERED,
	 NOSTRIP, 0, "MalLory", "lab.test", POLICY_REJECT, "users_deny", "not-authorized",
	 "MalLory"},
	{"identity denied by ?", &UDENY, POLICY_IDENTITY, "PLAIN", TLS, UP_REQ, OFFERED, NOSTRIP, 0,
	 "bob", "lab.test", POLICY_REJECT, "users_deny", "not-authorized", "bob"},
	{"identity: ? is one character", &UDENY, POLICY_IDENTITY, "PLAIN", TLS, UP_REQ, OFFERED,
	 NOSTRIP, 0, "boob", "lab.test", POLICY_ALLOW, "", NULL, NULL},
	{"identity denied by user@domain pattern", &UDENY, POLICY_IDENTITY, "PLAIN", TLS, UP_REQ,
	 OFFERED, NOSTRIP, 0, "alice", "evil.test", POLICY_REJECT, "users_deny", "not-authorized",
	 "alice"},
	{"identity: domain pattern, other domain", &UDENY, POLICY_IDENTITY, "PLAIN", TLS, UP_REQ,
	 OFFERED, NOSTRIP, 0, "alice", "lab.test", POLICY_ALLOW, "", NULL, NULL},
	{"identity: domain pattern, domain case", &UDENY, POLICY_IDENTITY, "PLAIN", TLS, UP_REQ,
	 OFFERED, NOSTRIP, 0, "alice", "EVIL.test", POLICY_REJECT, "users_deny", "not-authorized",
	 "alice"},
	{"identity denied by a bracket range", &UDENY, POLICY_IDENTITY, "PLAIN", TLS, UP_REQ,
	 OFFERED, NOSTRIP, 0, "yves", "lab.test", POLICY_REJECT, "users_deny", "not-authorized",
	 "yves"},
	{"identity: bracket range, other letter", &UDENY, POLICY_IDENTITY, "PLAIN", TLS, UP_REQ,
	 OFFERED, NOSTRIP, 0, "walter", "lab.test", POLICY_ALLOW, "", NULL, NULL},
	{"identity: a pattern is not a substring", &UDENY, POLICY_IDENTITY, "PLAIN", TLS, UP_REQ,
	 OFFERED, NOSTRIP, 0, "mallory2", "lab.test", POLICY_ALLOW, "", NULL, NULL},
	{"identity: full-JID pattern, other case", &UDENY_CASE, POLICY_IDENTITY, "PLAIN", TLS, UP_REQ,
	 OFFERED, NOSTRIP, 0, "alice", "lab.test", POLICY_REJECT, "users_deny", "not-authorized",
	 "alice"},
	{"identity: full-JID pattern, other user", &UDENY_CASE, POLICY_IDENTITY, "PLAIN", TLS,
	 UP_REQ, OFFERED, NOSTRIP, 0, "bob", "lab.test", POLICY_ALLOW, "", NULL, NULL},
	{"identity: the check ignores TLS and mechanism", &UDENY, POLICY_IDENTITY, "X-ANY", NOTLS,
	 UP_OPT, NOT_OFFERED, NOSTRIP, 0, "mallory", "lab.test", POLICY_REJECT, "users_deny",
	 "not-authorized", "mallory"},
	{"identity: no domain, name pattern", &UDENY, POLICY_IDENTITY, "PLAIN", TLS, UP_REQ, OFFERED,
	 NOSTRIP, 0, "mallory", NULL, POLICY_REJECT, "users_deny", "not-authorized", "mallory"},

	/* ---- identity: users_allow ---- */
	{"identity allowed by name", &UALLOW, POLICY_IDENTITY, "PLAIN", TLS, UP_REQ, OFFERED, NOSTRIP,
	 0, "alice", "lab.test", POLICY_ALLOW, "", NULL, NULL},
	{"identity allowed, other case", &UALLOW, POLICY_IDENTITY, "PLAIN", TLS, UP_REQ, OFFERED,
	 NOSTRIP, 0, "ALICE", "lab.test", POLICY_ALLOW, "", NULL, NULL},
	{"identity not in the allow list", &UALLOW, POLICY_IDENTITY, "PLAIN", TLS, UP_REQ, OFFERED,
	 NOSTRIP, 0, "bob", "lab.test", POLICY_REJECT, "users_allow", "not-authorized", "bob"},
	{"identity allowed by domain pattern", &UALLOW, POLICY_IDENTITY, "PLAIN", TLS, UP_REQ,
	 OFFERED, NOSTRIP, 0, "bob", "staff.test", POLICY_ALLOW, "", NULL, NULL},
	{"identity: deny wins over allow", &UBOTH, POLICY_IDENTITY, "PLAIN", TLS, UP_REQ, OFFERED,
	 NOSTRIP, 0, "bob", "lab.test", POLICY_REJECT, "users_deny", "not-authorized", "bob"},
	{"identity: allow * lets the others in", &UBOTH, POLICY_IDENTITY, "PLAIN", TLS, UP_REQ,
	 OFFERED, NOSTRIP, 0, "carol", "lab.test", POLICY_ALLOW, "", NULL, NULL},
	{"identity: lists do not act at auth", &UDENY, POLICY_AUTH, "PLAIN", TLS, UP_REQ, OFFERED,
	 NOSTRIP, 0, "mallory", "lab.test", POLICY_ALLOW, "", NULL, NULL},

	/* ---- auth_failures ---- */
	{"auth_failures: below the limit", &FAIL3, POLICY_AUTH, "PLAIN", TLS, UP_REQ, OFFERED,
	 NOSTRIP, 2, NULL, NULL, POLICY_ALLOW, "", NULL, NULL},
	{"auth_failures: at the limit", &FAIL3, POLICY_AUTH, "PLAIN", TLS, UP_REQ, OFFERED, NOSTRIP,
	 3, NULL, NULL, POLICY_REJECT, "auth_failures", "temporary-auth-failure", "PLAIN"},
	{"auth_failures: past the limit", &FAIL3, POLICY_AUTH, "SCRAM-SHA-1", TLS, UP_REQ, OFFERED,
	 NOSTRIP, 1000, NULL, NULL, POLICY_REJECT, "auth_failures", "temporary-auth-failure",
	 "SCRAM-SHA-1"},
	{"auth_failures off: any count", &NONE2, POLICY_AUTH, "PLAIN", TLS, UP_REQ, OFFERED, NOSTRIP,
	 100000, NULL, NULL, POLICY_ALLOW, "", NULL, NULL},
	{"auth_failures before require_tls/deny/plain", &FAIL1_STRICT, POLICY_AUTH, "PLAIN", NOTLS,
	 UP_OPT, NOT_OFFERED, NOSTRIP, 1, NULL, NULL, POLICY_REJECT, "auth_failures",
	 "temporary-auth-failure", "PLAIN"},
	{"auth_failures under the limit: next rule", &FAIL1_STRICT, POLICY_AUTH, "PLAIN", NOTLS,
	 UP_OPT, OFFERED, NOSTRIP, 0, NULL, NULL, POLICY_REJECT, "require_tls",
	 "encryption-required", "PLAIN"},
	{"auth_failures do not act at offer", &FAIL3, POLICY_OFFER, "PLAIN", TLS, UP_REQ, 0, NOSTRIP,
	 50, NULL, NULL, POLICY_ALLOW, "", NULL, NULL},
	{"auth_failures do not act at identity", &FAIL3, POLICY_IDENTITY, "PLAIN", TLS, UP_REQ,
	 OFFERED, NOSTRIP, 50, "alice", "lab.test", POLICY_ALLOW, "", NULL, NULL},

	/* ---- strip_starttls: the client was never offered TLS ---- */
	{"stripped: upstream requires TLS, not enforced", &NONE2, POLICY_AUTH, "SCRAM-SHA-1", NOTLS,
	 UP_REQ, OFFERED, STRIPPED, 0, NULL, NULL, POLICY_ALLOW, "", NULL, NULL},
	{"stripped: require_tls yes, not enforced", &REQ_YES2, POLICY_AUTH, "SCRAM-SHA-1", NOTLS,
	 UP_REQ, OFFERED, STRIPPED, 0, NULL, NULL, POLICY_ALLOW, "", NULL, NULL},
	{"stripped: PLAIN in clear is logged", &NONE2, POLICY_AUTH, "PLAIN", NOTLS, UP_REQ, OFFERED,
	 STRIPPED, 0, NULL, NULL, POLICY_LOG, "plain_without_tls", NULL, "PLAIN"},
	{"stripped: plain reject still refuses", &PLAIN_REJ2, POLICY_AUTH, "PLAIN", NOTLS, UP_REQ,
	 OFFERED, STRIPPED, 0, NULL, NULL, POLICY_REJECT, "plain_without_tls",
	 "encryption-required", "PLAIN"},
	{"stripped: mechanisms_deny still refuses", &DENY_SCRAM2, POLICY_AUTH, "SCRAM-SHA-1", NOTLS,
	 UP_REQ, OFFERED, STRIPPED, 0, NULL, NULL, POLICY_REJECT, "mechanisms_deny",
	 "invalid-mechanism", "SCRAM-SHA-1"},
	{"stripped: not offered still refused", &NONE2, POLICY_AUTH, "SCRAM-SHA-256", NOTLS, UP_REQ,
	 NOT_OFFERED, STRIPPED, 0, NULL, NULL, POLICY_REJECT, "not_offered", "invalid-mechanism",
	 "SCRAM-SHA-256"},
	{"stripped: auth_failures still first", &FAIL3, POLICY_AUTH, "PLAIN", NOTLS, UP_REQ, OFFERED,
	 STRIPPED, 3, NULL, NULL, POLICY_REJECT, "auth_failures", "temporary-auth-failure",
	 "PLAIN"},
	{"not stripped, TLS skipped: require_tls refuses", &NONE2, POLICY_AUTH, "SCRAM-SHA-1", NOTLS,
	 UP_REQ, OFFERED, NOSTRIP, 0, NULL, NULL, POLICY_REJECT, "require_tls",
	 "encryption-required", "SCRAM-SHA-1"},

	/* ---- offer_mechanisms: the lab's list, offered as it is ---- */
	{"offer list: offer step keeps out of it", &OFFER, POLICY_OFFER, "SCRAM-SHA-1", TLS, UP_REQ,
	 0, NOSTRIP, 0, NULL, NULL, POLICY_ALLOW, "", NULL, NULL},
	{"offer list: -PLUS not stripped at offer", &OFFER, POLICY_OFFER, "SCRAM-SHA-1-PLUS", TLS,
	 UP_REQ, 0, NOSTRIP, 0, NULL, NULL, POLICY_ALLOW, "", NULL, NULL},
	{"offer list: denied not stripped at offer", &OFFER_DENY, POLICY_OFFER, "DIGEST-MD5", TLS,
	 UP_REQ, 0, NOSTRIP, 0, NULL, NULL, POLICY_ALLOW, "", NULL, NULL},
	{"offer list: a made-up mechanism is relayed", &OFFER, POLICY_AUTH, "X-FAKE", TLS, UP_REQ,
	 OFFERED, NOSTRIP, 0, NULL, NULL, POLICY_ALLOW, "", NULL, NULL},
	{"offer list: not offered is relayed too", &OFFER, POLICY_AUTH, "SCRAM-SHA-1", TLS, UP_REQ,
	 NOT_OFFERED, NOSTRIP, 0, NULL, NULL, POLICY_ALLOW, "", NULL, NULL},
	{"offer list: mechanisms_deny still refuses", &OFFER_DENY, POLICY_AUTH, "DIGEST-MD5", TLS,
	 UP_REQ, OFFERED, NOSTRIP, 0, NULL, NULL, POLICY_REJECT, "mechanisms_deny",
	 "invalid-mechanism", "DIGEST-MD5"},
	{"offer list: plain reject still refuses", &OFFER_DENY, POLICY_AUTH, "PLAIN", NOTLS, UP_OPT,
	 OFFERED, NOSTRIP, 0, NULL, NULL, POLICY_REJECT, "plain_without_tls", "encryption-required",
	 "PLAIN"},
};

static void test_table2(void)
{
	for (size_t i = 0; i < sizeof(rows2) / sizeof(rows2[0]); i++) {
		const struct row2 *r = &rows2[i];
		struct conf *c = make_conf2(r->cfg);
		struct policy_input in = {.step = r->step,
					  .mechanism = r->mech,
					  .client_tls = r->client_tls,
					  .upstream_requires_tls = r->upstream_requires_tls,
					  .offered = r->offered,
					  .starttls_stripped = r->stripped,
					  .failures = r->failures,
					  .user = r->user,
					  .domain = r->domain};
		struct policy_verdict v;
		memset(&v, 0xa5, sizeof(v));
		policy_check(c, &in, &v);
		char name[240];
		bool detail_terminated = memchr(v.detail, '\0', sizeof(v.detail)) != NULL;
		snprintf(name, sizeof(name), "%s -> %s %s (got %s %s: %s)", r->name,
			 policy_action_name(r->action), r->rule, policy_action_name(v.action),
			 v.action == r->action && v.rule ? v.rule : "?",
			 detail_terminated ? v.detail : "(unterminated)");
		bool cond_ok = r->condition == NULL
				       ? v.condition == NULL
				       : v.condition != NULL && strcmp(v.condition, r->condition) == 0;
		bool detail_ok = r->detail == NULL ? v.detail[0] == '\0'
						   : detail_terminated && strstr(v.detail, r->detail) != NULL;
		T_CHECK(v.action == r->action && v.rule != NULL && strcmp(v.rule, r->rule) == 0 &&
				cond_ok && detail_ok,
			name);
		conf_free(c);
	}
}

/* An identity longer than the detail and the user@domain buffer: cut,
 * terminated, and still matched by a name pattern. */
static void test_identity_long(void)
{
	struct conf *c = make_conf2(&UDENY);
	char user[700];
	memset(user, 'z', sizeof(user) - 1);
	user[sizeof(user) - 1] = '\0';
	struct policy_input in = {.step = POLICY_IDENTITY,
				  .mechanism = "PLAIN",
				  .client_tls = true,
				  .user = user,
				  .domain = "lab.test"};
	struct policy_verdict v;
	policy_check(c, &in, &v);
	T_CHECK(v.action == POLICY_REJECT && strcmp(v.rule, "users_deny") == 0 &&
			strlen(v.detail) < sizeof(v.detail),
		"identity: a 699-character name is denied by [x-z]*, detail cut and terminated");
	conf_free(c);
	struct cfg2 pct = UDENY;
	pct.users_deny[0] = "%s*";
	c = make_conf2(&pct);
	in.user = "%s%n%s";
	policy_check(c, &in, &v);
	T_CHECK(v.action == POLICY_REJECT && strstr(v.detail, "%s%n%s") != NULL,
		"identity: a name with % is text, not a format");
	conf_free(c);
}

/* A long mechanism name must not overflow the detail text. */
static void test_detail(void)
{
	struct conf *c = make_conf(&DEF);
	char mech[400];
	memset(mech, 'A', sizeof(mech) - 6);
	strcpy(mech + sizeof(mech) - 6, "-PLUS");
	struct policy_input in = {.step = POLICY_OFFER, .mechanism = mech, .client_tls = true};
	struct policy_verdict v;
	policy_check(c, &in, &v);
	T_CHECK(v.action == POLICY_STRIP && strlen(v.detail) == sizeof(v.detail) - 1,
		"detail: a long name is cut, terminated");
	in.mechanism = "%s%n%s";
	in.step = POLICY_AUTH;
	policy_check(c, &in, &v);
	T_CHECK(v.action == POLICY_REJECT && strstr(v.detail, "%s%n%s") != NULL,
		"detail: a name with % is text, not a format");
	conf_free(c);
}

static void test_require_tls(void)
{
	struct {
		enum conf_require_tls req;
		bool upstream, want;
		const char *name;
	} t[] = {
		{CONF_REQUIRE_AUTO, false, false, "require_tls auto, upstream optional -> no"},
		{CONF_REQUIRE_AUTO, true, true, "require_tls auto, upstream requires -> yes"},
		{CONF_REQUIRE_YES, false, true, "require_tls yes, upstream optional -> yes"},
		{CONF_REQUIRE_YES, true, true, "require_tls yes, upstream requires -> yes"},
		{CONF_REQUIRE_NO, false, false, "require_tls no, upstream optional -> no"},
		{CONF_REQUIRE_NO, true, false, "require_tls no, upstream requires -> no"},
	};
	struct conf *c = conf_new();
	T_CHECK(c->require_tls == CONF_REQUIRE_AUTO, "require_tls: default is auto");
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		c->require_tls = t[i].req;
		T_CHECK(policy_require_tls(c, t[i].upstream) == t[i].want, t[i].name);
	}
	conf_free(c);
}

static void test_names(void)
{
	T_STREQ(policy_action_name(POLICY_ALLOW), "allow", "action name: allow");
	T_STREQ(policy_action_name(POLICY_LOG), "log", "action name: log");
	T_STREQ(policy_action_name(POLICY_STRIP), "strip", "action name: strip");
	T_STREQ(policy_action_name(POLICY_REJECT), "reject", "action name: reject");
}

/* Spellings a nodeprep server treats as the same account are folded
 * before users_deny matches; other scripts stay other names. */
static void test_identity_fold(void)
{
	static const struct {
		const char *user;
		enum policy_action want;
		const char *name;
	} folds[] = {
	    {"\xef\xbd\x81\xef\xbd\x8c\xef\xbd\x89\xef\xbd\x83\xef\xbd\x85", POLICY_REJECT,
	     "fold: fullwidth alice is alice"},
	    {"ali\xc2\xad"
	     "ce",
	     POLICY_REJECT, "fold: a soft hyphen vanishes"},
	    {"al\xe2\x80\x8b"
	     "ice",
	     POLICY_REJECT, "fold: a zero-width space vanishes"},
	    {"\xef\xbb\xbf"
	     "ALICE",
	     POLICY_REJECT, "fold: BOM and upper case"},
	    {"\xd0\xb0"
	     "lice",
	     POLICY_ALLOW, "fold: Cyrillic a is another name"},
	    {"bob", POLICY_ALLOW, "fold: another user passes"},
	    /* issue 8: what the server cannot be shown to read as the
	     * proxy does is refused, not guessed at */
	    {"\xef\xbd", POLICY_REJECT, "fold: a truncated sequence fails closed"},
	    {"ali\x01" "ce", POLICY_REJECT, "fold: a control character fails closed"},
	    {"\xe2\x93\x90" "lice", POLICY_REJECT, "fold: circled a (NFKC) is alice"},
	    {"\xf0\x9d\x90\x9a\xf0\x9d\x90\xa5\xf0\x9d\x90\xa2\xf0\x9d\x90\x9c\xf0\x9d\x90\x9e",
	     POLICY_REJECT, "fold: math bold alice is alice"},
	};
	struct conf *c = conf_new();
	char err[256];
	conf_set(c, "users_deny", "alice", "test", err, sizeof(err));
	for (size_t i = 0; i < sizeof(folds) / sizeof(folds[0]); i++) {
		struct policy_input in = {.step = POLICY_IDENTITY,
					  .mechanism = "PLAIN",
					  .client_tls = true,
					  .user = folds[i].user,
					  .domain = "lab.test"};
		struct policy_verdict v;
		policy_check(c, &in, &v);
		T_CHECK(v.action == folds[i].want, folds[i].name);
	}
	conf_free(c);
}

/* Issue 8: the identity rules fail closed, check the authzid and fold
 * the domain; auth_failures counts attempts in flight. */
static void test_identity_closed(void)
{
	struct conf *c = conf_new();
	char err[256];
	conf_set(c, "users_deny", "mallory, kiss, *@evil.test", "test", err, sizeof(err));
	static const struct {
		enum policy_identity id;
		const char *user, *authzid, *domain;
		enum policy_action want;
		const char *condition, *name;
	} closed[] = {
	    {POLICY_ID_NONE, NULL, NULL, "lab.test", POLICY_REJECT, "invalid-mechanism",
	     "closed: a mechanism that names nobody"},
	    {POLICY_ID_AMBIGUOUS, "alice", NULL, "lab.test", POLICY_REJECT, "malformed-request",
	     "closed: an ambiguous payload, even naming alice"},
	    {POLICY_ID_KNOWN, "\xe2\x84\xaaI\xc5\xbf\xc5\xbf", NULL, "lab.test", POLICY_REJECT,
	     "not-authorized", "closed: Kelvin sign and long s fold to kiss"},
	    {POLICY_ID_KNOWN, "alice", "mallory@lab.test", "lab.test", POLICY_REJECT,
	     "not-authorized", "closed: a denied authzid"},
	    {POLICY_ID_KNOWN, "alice", "alice@lab.test", "lab.test", POLICY_ALLOW, NULL,
	     "closed: the authcid's own JID as authzid"},
	    {POLICY_ID_KNOWN, "alice", "x@\xef\xbd\x85vil.test", "lab.test", POLICY_REJECT,
	     "not-authorized", "closed: authzid with a fullwidth domain"},
	    {POLICY_ID_KNOWN, "alice", NULL, "\xef\xbd\x85\xef\xbd\x96il.test", POLICY_REJECT,
	     "not-authorized", "closed: fullwidth domain folds to evil.test"},
	    {POLICY_ID_KNOWN, "alice", NULL, "EVIL.test.", POLICY_REJECT, "not-authorized",
	     "closed: domain case and trailing dot"},
	    {POLICY_ID_KNOWN, "alice", NULL, "bad domain", POLICY_REJECT, "malformed-request",
	     "closed: a domain that does not fold"},
	    {POLICY_ID_KNOWN, "alice", NULL, "lab.test", POLICY_ALLOW, NULL,
	     "closed: alice passes"},
	    {POLICY_ID_KNOWN, "mallory@lab.test", NULL, "lab.test", POLICY_REJECT,
	     "not-authorized", "closed: an authcid written as a JID"},
	    {POLICY_ID_KNOWN, "alice@\xef\xbd\x85vil.test", NULL, "lab.test", POLICY_REJECT,
	     "not-authorized", "closed: an authcid JID's own domain is folded and used"},
	    {POLICY_ID_KNOWN, "alice@lab.test", NULL, "lab.test", POLICY_ALLOW, NULL,
	     "closed: alice as a JID passes"},
	    {POLICY_ID_KNOWN, "alice", "mallory", "lab.test", POLICY_REJECT, "not-authorized",
	     "closed: an authzid without @ is a localpart on the session's domain"},
	    {POLICY_ID_KNOWN, "x@other.example", NULL, "evil.test", POLICY_REJECT,
	     "not-authorized", "closed: an authcid JID is checked on the session's domain too"},
	};
	for (size_t i = 0; i < sizeof(closed) / sizeof(closed[0]); i++) {
		struct policy_input in = {.step = POLICY_IDENTITY,
					  .mechanism = "PLAIN",
					  .identity = closed[i].id,
					  .user = closed[i].user,
					  .authzid = closed[i].authzid,
					  .domain = closed[i].domain};
		struct policy_verdict v;
		policy_check(c, &in, &v);
		T_CHECK(v.action == closed[i].want &&
				(closed[i].condition == NULL ||
				 (v.condition && strcmp(v.condition, closed[i].condition) == 0)),
			closed[i].name);
	}
	/* no identity rule: nothing to fail closed for */
	struct conf *none = conf_new();
	struct policy_input any = {.step = POLICY_IDENTITY, .mechanism = "EXTERNAL",
				   .identity = POLICY_ID_NONE};
	struct policy_verdict v;
	policy_check(none, &any, &v);
	T_CHECK(v.action == POLICY_ALLOW, "closed: no rule, EXTERNAL passes");
	T_CHECK(!policy_checks_identity(none) && policy_checks_identity(c),
		"closed: policy_checks_identity");
	/* auth_failures: two failures and one attempt in flight reach 3 */
	conf_set(none, "auth_failures", "3/60", "test", err, sizeof(err));
	struct policy_input a = {.step = POLICY_AUTH, .mechanism = "PLAIN", .client_tls = true,
				 .offered = true, .failures = 2, .in_flight = 1};
	policy_check(none, &a, &v);
	T_CHECK(v.action == POLICY_REJECT && strcmp(v.rule, "auth_failures") == 0 &&
			strstr(v.detail, "in flight") != NULL,
		"auth_failures: attempts in flight count");
	a.in_flight = 0;
	policy_check(none, &a, &v);
	T_CHECK(v.action == POLICY_ALLOW, "auth_failures: two failures, none in flight pass");
	a.failures = 0;
	a.in_flight = 3;
	policy_check(none, &a, &v);
	T_CHECK(v.action == POLICY_REJECT, "auth_failures: three in flight, no failure yet");
	conf_free(none);
	conf_free(c);
}

/* GS2 "y" is a downgrade only when the server offered -PLUS. */
static void test_channel_binding(void)
{
	struct conf *c = conf_new();
	struct policy_input in = {.step = POLICY_CHANNEL_BINDING,
				  .mechanism = "SCRAM-SHA-1",
				  .cb_flag = "y",
				  .upstream_offered_plus = true};
	struct policy_verdict v;
	policy_check(c, &in, &v);
	T_CHECK(v.action == POLICY_LOG && strcmp(v.rule, "channel_binding") == 0,
		"cb: y after -PLUS was removed is logged");
	in.upstream_offered_plus = false;
	policy_check(c, &in, &v);
	T_CHECK(v.action == POLICY_ALLOW, "cb: y with no -PLUS offered is fine");
	in.upstream_offered_plus = true;
	in.cb_flag = "n";
	policy_check(c, &in, &v);
	T_CHECK(v.action == POLICY_ALLOW, "cb: n is fine");
	in.cb_flag = NULL;
	policy_check(c, &in, &v);
	T_CHECK(v.action == POLICY_ALLOW, "cb: no flag (not SCRAM) is fine");
	conf_free(c);
}

/* The fixed rules: each has a name, an action, and a condition when it
 * refuses; details are bounded and name what they are given. */
static void test_fixed_rules(void)
{
	struct conf *c = conf_new();
	char err[256];
	conf_set(c, "offer_mechanisms", "PLAIN X-FAKE", "test", err, sizeof(err));
	for (int r = 0; r < POLICY_RULE_COUNT; r++) {
		struct policy_verdict v;
		memset(&v, 0xa5, sizeof(v));
		policy_rule(c, (enum policy_rule)r, "X", &v);
		char name[80];
		snprintf(name, sizeof(name), "fixed rule %d: named, terminated, refusals say why", r);
		T_CHECK(v.rule != NULL && v.rule[0] && memchr(v.detail, '\0', sizeof(v.detail)) &&
		            v.detail[0] && (v.action != POLICY_REJECT || r == POLICY_RULE_RESUME ||
		                            v.condition != NULL),
		        name);
	}
	struct policy_verdict v;
	policy_rule(c, POLICY_RULE_OFFER_LIST, NULL, &v);
	T_STREQ(v.detail, "offered exactly: PLAIN X-FAKE", "fixed rule: the offer list names it");
	char longname[300];
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	policy_rule(c, POLICY_RULE_AFTER_LOGIN, longname, &v);
	T_CHECK(strlen(v.detail) < 100, "fixed rule: an element name is cut to 40 in the detail");
	policy_rule(c, POLICY_RULE_IDENTITY_UNCHECKED, "PLAIN", &v);
	T_STREQ(v.rule, "users_allow", "fixed rule: unchecked identity names the rule in force");
	char *plus[] = {"PLAIN", "SCRAM-SHA-1-PLUS"}, *none[] = {"PLAIN", "PLUS"};
	T_CHECK(policy_offered_plus(plus, 2) && !policy_offered_plus(none, 2) &&
	            !policy_offered_plus(NULL, 0),
	        "offered_plus: only a -PLUS suffix counts");
	conf_free(c);
}

int main(void)
{
	test_fixed_rules();
	test_identity_fold();
	test_identity_closed();
	test_channel_binding();
	test_table();
	test_table2();
	test_identity_long();
	test_detail();
	test_require_tls();
	test_names();
	T_DONE();
}
