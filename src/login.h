/*
 * The login state machine of both legs: what each step means, what is
 * forwarded, rewritten or answered by the proxy itself, and which events
 * are logged. session.c owns the session's lifetime; this owns its
 * protocol.
 */
#ifndef XI_LOGIN_H
#define XI_LOGIN_H

#include "leg.h"

struct session;

/* The session's legs exist; the client leg is accepted, the upstream not
 * yet connected. */
void login_start(struct session *s);
/* Bytes from a leg. */
void login_data(struct leg *l, const char *data, size_t len);
/* An I/O event on a leg (all but LEG_EV_CLOSED). */
void login_event(struct leg *l, enum leg_event ev, const char *why);
/* The login timeout or the upstream connect timeout expired. */
void login_timeout(struct session *s, bool connect);
/* The pause after a failed login is over: the held answer goes out. */
void login_resume(struct session *s);
/* The proxy is stopping: end both streams politely. */
void login_shutdown(struct session *s);
/* Frees what the login kept (features, SASL state, parsers). */
void login_free(struct session *s);

#endif
