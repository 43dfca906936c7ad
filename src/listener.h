/*
 * Listening sockets: bind, listen, accept, and hand each connection to a
 * new session. A reserve fd keeps accept(2) from spinning when the
 * process runs out of descriptors.
 */
#ifndef XI_LISTENER_H
#define XI_LISTENER_H

#include <stddef.h>

#include "session.h"

struct conf_addr;
struct listener;

/* How a listening socket is shared (workers = N: one per worker). */
enum listener_share {
	LISTENER_ALONE = 0,
	LISTENER_SHARED_FIRST, /* SO_REUSEPORT; the port must be free before it */
	LISTENER_SHARED,       /* SO_REUSEPORT, beside the first */
};

/* Binds and listens on a; NULL with a one-line reason in err. */
struct listener *listener_open(struct proxy *px, const struct conf_addr *a, enum session_port port,
                               enum listener_share share, char *err, size_t errlen);
void listener_start(struct listener *ls);
/* Stops accepting and closes the socket; frees ls. */
void listener_close(struct listener *ls);
/* The address it listens on, for messages. */
const char *listener_name(const struct listener *ls);

#endif
