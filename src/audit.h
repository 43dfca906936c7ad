/*
 * The event log's records of a login (CONTRACT.md "Event log"): streams,
 * TLS, SASL steps, results, policy verdicts, stream errors and the closing
 * audit record. No decisions here: login*.c decides, this writes.
 */
#ifndef XI_AUDIT_H
#define XI_AUDIT_H

#include <stdbool.h>
#include <stddef.h>

#include "streamfeatures.h"

struct leg;
struct policy_verdict;
struct sasl_fields;
struct session;
struct xml_elem;

/* The TCP connection to the upstream: made (ok), or failed with error
 * (written only when !ok). */
void audit_upstream(const struct session *s, bool ok, const char *error);
/* A policy verdict; also remembered for the login record's summary. */
void audit_policy(struct session *s, const struct policy_verdict *v);
/* A stream error a leg sent (dir: "c2s" or "s2c"); its condition and text
 * are returned through condp/textp when not NULL. */
void audit_stream_error(struct session *s, const char *dir, const struct xml_elem *e,
                        const char **condp, const char **textp);
/* A stream error the proxy wrote to a leg (dir: "c2s" toward the server,
 * "s2c" toward the client), or tried to: sent is false when the leg could
 * no longer take it. */
void audit_stream_error_sent(const struct session *s, const char *dir, const char *condition,
                             const char *text, bool sent);
/* A leg ended its stream during login without a stream error: recorded as
 * one with no condition and the text given (dir as above). */
void audit_stream_closed(const struct session *s, const char *dir, const char *text);
/* A stream header a leg sent. */
void audit_stream(const struct leg *l, bool client, const struct xml_elem *hdr);
/* A TLS handshake on a leg, finished (ok) or failed (error); a finished
 * one also records the version for the login record. */
void audit_tls(struct leg *l, bool client, bool ok, const char *error);
/* STARTTLS begun: the client's <starttls/> answered with <proceed/>
 * (upstream false), or the proxy's own <starttls/> sent to the server
 * (upstream true). */
void audit_starttls(const struct session *s, bool upstream);
/* The features the client was offered before login: st as written, the
 * mechanisms in s->offered, the SASL2 ones in sasl2 (written only if the
 * server offers SASL2), and what was removed from the server's s->up. */
void audit_features(const struct session *s, enum streamfeatures_starttls st,
                    const char *const *sasl2, size_t nsasl2);
/* The server's post-login features f, relayed to the client rewritten
 * (compression removed). */
void audit_features_relayed(const struct session *s, const struct streamfeatures *f);
/* A SASL attempt the client began: the mechanism as read, whether a
 * payload came with it, the payload's decoded fields f, and for XEP-0388
 * (authenticate: the <authenticate> element; NULL for RFC 6120's <auth>)
 * the client's <user-agent> and what it asks for inline: Bind2, stream
 * management, a FAST token (<request-token>) or a token login (<fast>). */
void audit_auth(const struct session *s, const char *mechanism, bool initial_response,
                const struct xml_elem *authenticate, const struct sasl_fields *f);
/* A legacy iq-auth (XEP-0078) attempt: the iq's type and the username in
 * s->user (empty: none). */
void audit_iq_auth(const struct session *s, const char *type);
/* The decoded fields of a SASL payload, into the line being written. */
void audit_sasl_fields(const struct sasl_fields *f);
/* One SASL step (challenge, response, success data, ...). */
void audit_sasl_step(const struct session *s, const char *dir, unsigned step, const char *what,
                     const struct sasl_fields *f);
/* The outcome the client was told; also recorded for the login record. */
void audit_result(struct session *s, bool success, const char *by, const char *condition,
                  const char *text);
/* Resource binding answered: through an iq (bind2 false: the resource
 * asked for, and the JID if ok) or inline in a XEP-0388 success (bind2,
 * always ok). The JID is s->jid. */
void audit_bind(const struct session *s, bool ok, bool bind2);
/* The server's answer to the client's legacy session iq (RFC 3921). */
void audit_session(const struct session *s, bool ok);
/* The login record, once per session that tried to log in (or was
 * offered a stripped STARTTLS). */
void audit_login(struct session *s);

#endif
