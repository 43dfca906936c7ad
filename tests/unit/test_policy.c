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

int main(void)
{
	test_table();
	test_detail();
	test_require_tls();
	test_names();
	T_DONE();
}
