/*
 * Diagnostics for the operator on stderr (the event log is evlog.c).
 * fatal() is for start-up only, before the event loop runs.
 */
#ifndef XI_LOG_H
#define XI_LOG_H

#include <stdbool.h>

void log_init(const char *progname, bool verbose);
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
