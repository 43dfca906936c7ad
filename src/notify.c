#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "notify.h"

static int notify_fd = -1;
static const char *notify_name; /* $NOTIFY_SOCKET, for the warning */
static struct sockaddr_un notify_addr;
static socklen_t notify_addrlen;
static bool notify_warned;

static void notify_warn(const char *what, int err)
{
	if (notify_warned)
		return;
	notify_warned = true;
	log_warnx("NOTIFY_SOCKET: %s: %s (the service manager is not told)", what, strerror(err));
}

void notify_init(void)
{
	const char *path = getenv("NOTIFY_SOCKET");
	if (path == NULL || path[0] == '\0')
		return;
	size_t len = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || len >= sizeof(notify_addr.sun_path)) {
		notify_warn(path, EINVAL);
		return;
	}
	notify_name = path;
	notify_addr.sun_family = AF_UNIX;
	memcpy(notify_addr.sun_path, path, len);
	if (path[0] == '@')
		notify_addr.sun_path[0] = '\0'; /* abstract: the length counts, no NUL */
	notify_addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (notify_fd < 0)
		notify_warn("socket", errno);
}

void notify_send(const char *state)
{
	if (notify_fd < 0)
		return;
	/* MSG_DONTWAIT: a busy manager never stalls the event loop */
	if (sendto(notify_fd, state, strlen(state), MSG_DONTWAIT | MSG_NOSIGNAL,
	           (const struct sockaddr *)&notify_addr, notify_addrlen) < 0)
		notify_warn(notify_name, errno);
}

void notify_reloading(void)
{
	struct timespec t;
	char msg[64];
	clock_gettime(CLOCK_MONOTONIC, &t);
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
	         (unsigned long long)t.tv_sec * 1000000ULL + (unsigned long long)t.tv_nsec / 1000);
	notify_send(msg);
}

void notify_close(void)
{
	if (notify_fd >= 0)
		close(notify_fd);
	notify_fd = -1;
}
