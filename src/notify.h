/*
 * The service manager's readiness protocol (sd_notify(3)) without
 * libsystemd: one datagram per state change to the AF_UNIX socket named
 * by $NOTIFY_SOCKET (a path, or an abstract name written with '@'). With
 * no $NOTIFY_SOCKET it does nothing. It never blocks and never fails the
 * caller: the first failure is reported on stderr, later ones are not.
 */
#ifndef XI_NOTIFY_H
#define XI_NOTIFY_H

/* Reads $NOTIFY_SOCKET and opens the socket; called once at start,
 * before privileges are dropped. */
void notify_init(void);
/* Sends state, newline-separated VAR=value lines ("READY=1"). */
void notify_send(const char *state);
/* RELOADING=1 with the MONOTONIC_USEC=... that systemd 253 wants with it;
 * READY=1 ends the reload. */
void notify_reloading(void);
/* A worker (workers = N): only the supervisor talks to the service
 * manager; from now on this process sends nothing. */
void notify_close(void);

#endif
