#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"

static const char *log_prog = "xmpp-inspect";
static bool log_verbose;

void log_init(const char *progname, bool verbose)
{
	log_prog = progname;
	log_verbose = verbose;
}

/* One line, whole: the log files' writer threads warn here too. */
static void log_vprint(const char *fmt, va_list ap)
{
	flockfile(stderr);
	fprintf(stderr, "%s: ", log_prog);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	funlockfile(stderr);
}

void log_warnx(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vprint(fmt, ap);
	va_end(ap);
}

void log_info(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vprint(fmt, ap);
	va_end(ap);
}

void log_debug(const char *fmt, ...)
{
	va_list ap;
	if (!log_verbose)
		return;
	va_start(ap, fmt);
	log_vprint(fmt, ap);
	va_end(ap);
}

void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vprint(fmt, ap);
	va_end(ap);
	exit(1);
}
