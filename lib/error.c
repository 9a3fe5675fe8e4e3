/*
 * error.c - error messages, the version, and the one way to abort.
 *
 * The messages come from the NS_ERRORS table in namestore.h, the same table
 * that defines the codes, so the two cannot drift apart.  ns__die() is only
 * for states this process itself made impossible; anything another process
 * can cause is an error code (STYLE.md).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_internal.h"

const char *ns_version(void) { return NS_VERSION_STRING; }

const char *ns_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
#define NS__ERR_CASE(name, value, msg)                                       \
	case name:                                                           \
		return msg;
		NS_ERRORS(NS__ERR_CASE)
#undef NS__ERR_CASE
	default:
		break;
	}
	if (err <= -NS__ERRNO_BASE && (long long)err > -(NS__ERRNO_BASE + 4096LL))
		return strerror((int)(-(long long)err - NS__ERRNO_BASE));
	return "unknown error";
}

void ns__die_at(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "namestore: fatal: %s:%d: ", file, line);
	va_start(ap, fmt);
	/* clang 14's analyzer loses va_start here (valist.Uninitialized);
	 * the va_list is plainly started on the line above. */
	vfprintf(stderr, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
	va_end(ap);
	fputc('\n', stderr);
	abort();
}
