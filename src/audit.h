/*
 * The event log's records of a login (CONTRACT.md "Event log"): streams,
 * TLS, SASL steps, results, policy verdicts, stream errors and the closing
 * audit record. No decisions here: login.c decides, this writes.
 */
#ifndef XI_AUDIT_H
#define XI_AUDIT_H

#include <stdbool.h>

struct leg;
struct policy_verdict;
struct sasl_fields;
struct session;
struct xml_elem;

/* A policy verdict; also remembered for the login record's summary. */
void audit_policy(struct session *s, const struct policy_verdict *v);
/* A stream error a leg sent (dir: "c2s" or "s2c"); its condition and text
 * are returned through condp/textp when not NULL. */
void audit_stream_error(struct session *s, const char *dir, const struct xml_elem *e,
                        const char **condp, const char **textp);
/* A stream header a leg sent. */
void audit_stream(const struct leg *l, bool client, const struct xml_elem *hdr);
/* A TLS handshake on a leg, finished (ok) or failed (error); a finished
 * one also records the version for the login record. */
void audit_tls(struct leg *l, bool client, bool ok, const char *error);
/* The decoded fields of a SASL payload, into the line being written. */
void audit_sasl_fields(const struct sasl_fields *f);
/* One SASL step (challenge, response, success data, ...). */
void audit_sasl_step(const struct session *s, const char *dir, unsigned step, const char *what,
                     const struct sasl_fields *f);
/* The outcome the client was told; also recorded for the login record. */
void audit_result(struct session *s, bool success, const char *by, const char *condition,
                  const char *text);
/* The login record, once per session that tried to log in (or was
 * offered a stripped STARTTLS). */
void audit_login(struct session *s);

#endif
