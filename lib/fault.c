/*
 * fault.c - fault points for crash tests.
 *
 * NS_FAULT("step") marks the end of a step of a write.  In builds with
 * NS_FAULT_POINTS a process whose $NS_FAULT names that step (or that called
 * ns__fault_set) kills or stops itself right there, so a test can prove
 * that a process dying at that exact point corrupts nothing.  The fast path
 * is one load of a pointer that is NULL in every normal run; release builds
 * compile the macro to nothing (LTTng-UST's TESTPOINT works the same way).
 *
 * $NS_FAULT is "step" (SIGKILL) or "step:stop" (SIGSTOP), optionally
 * followed by "@N": trigger on the Nth time the point is reached.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ns_internal.h"

#ifdef NS_FAULT_POINTS
const char *ns__fault_name;
static char fault_buf[64];
static char fault_action = 'k';
static long fault_countdown = 1;

__attribute__((constructor)) static void fault_from_env(void)
{
	const char *e = getenv("NS_FAULT");
	char *at, *colon;

	if (e == NULL || *e == '\0')
		return;
	strncpy(fault_buf, e, sizeof(fault_buf) - 1);
	if ((at = strchr(fault_buf, '@')) != NULL) {
		*at = '\0';
		fault_countdown = strtol(at + 1, NULL, 10);
		if (fault_countdown < 1)
			fault_countdown = 1;
	}
	if ((colon = strrchr(fault_buf, ':')) != NULL && strcmp(colon, ":stop") == 0) {
		*colon = '\0';
		fault_action = 's';
	}
	ns__fault_name = fault_buf;
}

void ns__fault_hit(const char *name)
{
	if (strcmp(name, ns__fault_name) != 0 || --fault_countdown > 0)
		return;
	raise(fault_action == 's' ? SIGSTOP : SIGKILL);
}

bool ns__fault_set(const char *name, char action)
{
	if (name == NULL) {
		ns__fault_name = NULL;
		return true;
	}
	strncpy(fault_buf, name, sizeof(fault_buf) - 1);
	fault_action = action;
	fault_countdown = 1;
	ns__fault_name = fault_buf;
	return true;
}
#else
bool ns__fault_set(const char *name, char action)
{
	(void)name;
	(void)action;
	return false;
}
#endif
