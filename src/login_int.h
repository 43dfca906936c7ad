/*
 * What the login's files share, and nothing outside them includes: the
 * per-leg login state and the functions one phase calls in another.
 */
#ifndef XI_LOGIN_INT_H
#define XI_LOGIN_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "leg.h"
#include "login.h"
#include "policy.h"
#include "sasl.h"
#include "session.h"
#include "xml.h"

static inline struct session *login_session(const struct leg *l)
{
	return l->owner;
}

static inline bool login_is_client(const struct leg *l)
{
	return l == &login_session(l)->client;
}

static inline const char *login_leg_name(const struct leg *l)
{
	return login_is_client(l) ? "client" : "upstream";
}

static inline const struct conf *login_conf(const struct session *s)
{
	return s->px->conf;
}

/* namespaces only the login needs (xml.h has the stream ones) */
#define XML_NS_SM_PREFIX "urn:xmpp:sm:"
#define XML_NS_COMPRESS "http://jabber.org/protocol/compress"
#define XML_NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

/* Functions one phase calls in another; each one's contract stands above
 * its definition. */

/* login.c */

void login_client_enter(struct session *s, enum client_state st);
void login_upstream_enter(struct session *s, enum upstream_state st);
/* After success: both legs relay. */
bool login_relaying(const struct session *s);

/* login_stream.c */

void login_send(struct leg *l, const char *data, size_t len);
void login_send_buf(struct leg *l, struct buf *b);
void login_client_header(struct session *s);
void login_upstream_header(struct session *s);
bool login_can_write_stream(const struct leg *l);
void login_stream_error(struct leg *l, const char *condition, const char *text);
void login_stream_end(struct leg *l);
void login_end(struct session *s, const char *condition, const char *text, const char *reason);
void login_copy_text(char *dst, size_t n, const char *src);
void login_fail(struct session *s, const char *condition, const char *text, const char *reason);
void login_upstream_fault(struct session *s, const char *condition, const char *text);
void login_forward(struct leg *to, const struct xml_elem *e);
const char *login_stream_condition(const char *cond);

/* login_negotiate.c */

void login_clear_offered(struct session *s);
void login_client_features(struct session *s);
void login_start_upstream_stream(struct session *s);
void login_client_open(struct session *s, const struct xml_elem *hdr, uint64_t end);
void login_client_preauth_iq(struct session *s, const struct xml_elem *e);
void login_upstream_open(struct session *s, const struct xml_elem *hdr, uint64_t end);
void login_upstream_features(struct session *s, const struct xml_elem *e);
void login_begin_tls(struct leg *l, const char *rest, size_t len);

/* login_sasl.c */

void login_decode(struct session *s, enum sasl_dir dir, const struct xml_elem *e,
                  struct sasl_fields *f);
const char *login_sasl_ns(const struct session *s);
void login_client_auth(struct session *s, const struct xml_elem *e, bool sasl2);
void login_client_response(struct session *s, const struct xml_elem *e);

/* login_outcome.c */

void login_attempt_begin(struct session *s);
void login_attempt_end(struct session *s);
void login_refuse(struct session *s, const char *condition, const char *detail, bool counts);
void login_refuse_verdict(struct session *s, const struct policy_verdict *v, bool counts);
void login_refuse_midway(struct session *s, const struct policy_verdict *v);
void login_refuse_rule(struct session *s, enum policy_rule r);
void login_upstream_sasl(struct session *s, const struct xml_elem *e, uint64_t end);

/* login_relay.c */

void login_enter_relay(struct session *s);
void login_set_jid(struct session *s, const char *jid);
void login_refuse_granted(struct session *s, const struct policy_verdict *v, const char *reason);
bool login_bound_identity_allowed(struct session *s);
void login_gate_release(struct session *s, uint64_t upto);
void login_relay_c2s(struct session *s, const struct xml_elem *e, uint64_t start, uint64_t end);
void login_relay_s2c(struct session *s, const struct xml_elem *e);
void login_upstream_hold(struct session *s, uint64_t from);
void login_hold_element(struct session *s, const struct xml_elem *e, uint64_t start, uint64_t end);
bool login_hold_flush(struct session *s, const char *data, size_t used, uint64_t base,
                      bool held_before);

#endif
