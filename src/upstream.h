/*
 * Reaching the upstream: resolving its address once (at start-up and on
 * reload, never on the event loop), the transparent mode's original
 * destination (REDIRECT or TPROXY), the client's own source address
 * (upstream_source = client), and the non-blocking connect of a session's
 * upstream leg.
 */
#ifndef XI_UPSTREAM_H
#define XI_UPSTREAM_H

#include <stddef.h>
#include <sys/socket.h>

struct conf_addr;
struct leg;
struct proxy;

/* Resolves host:port (blocking: only before the loop runs or on reload).
 * Returns 0 or -1 with a reason in err. */
int upstream_resolve(const struct conf_addr *a, struct sockaddr_storage *ss, socklen_t *len,
                     char *err, size_t errlen);

/* Starts connecting leg l. client_fd is the accepted client socket (for
 * upstream = original-dst), client the client's address (for
 * upstream_source = client). dst gets the address connected to
 * (AF_UNSPEC when none was found). Returns the new fd, or -1 with a
 * reason. */
int upstream_connect(struct proxy *px, struct leg *l, int client_fd,
                     const struct sockaddr_storage *client, struct sockaddr_storage *dst, char *err,
                     size_t errlen);

#endif
