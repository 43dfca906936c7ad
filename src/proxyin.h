/*
 * Connections of a proxy listener (listen ... proxy), from a trusted
 * balancer, before they are sessions: the PROXY header is read first
 * (without a byte of what follows it: the client's stream or ClientHello),
 * bounded in size and time, and the session then starts with the client's
 * own address.
 */
#ifndef XI_PROXYIN_H
#define XI_PROXYIN_H

#include <sys/socket.h>

#include "session.h"

/* Takes over fd, accepted from via (in proxy_from) on local. It becomes
 * a session once its header is read, or is closed with a refused event
 * (rule proxy_header, proxy_timeout or max_per_addr). */
void proxyin_start(struct proxy *px, int fd, enum session_port port, const struct sockaddr *via,
                   const struct sockaddr *local);
/* Closes every connection still reading its header (the proxy stops). */
void proxyin_close_all(struct proxy *px);

#endif
