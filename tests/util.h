/*
 * util.h - helpers shared by the tests: unique segment names, forking
 * helpers with timeouts, and a checked value format.
 */
#ifndef NS_TEST_UTIL_H
#define NS_TEST_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <cmocka.h>

#include "namestore.h"
#include "ns_internal.h"

/* A segment name unique to this process and tag; unlinked first. */
const char *t_name(const char *tag);
/* Create a fresh segment of SIZE bytes for ITEMS items. */
ns_cache *t_create(const char *name, size_t size, uint64_t items);
/* Wait for PID at most MS milliseconds; returns the wait status, or -1 on
 * timeout (the child is then killed). */
int t_wait(pid_t pid, int ms);
/* Monotonic nanoseconds. */
uint64_t t_now_ns(void);
/* A value that names its key and carries a checksum: "key|len|payload|sum". */
size_t t_make_value(char *buf, size_t cap, const char *key, uint32_t seed, size_t len);
/* 0 if BUF (N bytes) is a well-formed value for KEY, else -1. */
int t_check_value(const char *buf, size_t n, const char *key);
/* Assert the consistency check passes, printing the report otherwise. */
void t_assert_consistent(ns_cache *c);
/* Offset of the item KEY points at in S's index (walked here, not through
 * the library's lookup, so tests check the index independently), or 0. */
ns_off_t t_find_item(ns_space *s, const void *key, size_t klen);
/* Wait (at most 2 s) until N slots are held by live processes (asserted),
 * then run the audit, live, retrying while it gives up (NS_EBUSY) for at most
 * half a second.  Returns what ns__audit returned last. */
int64_t t_audit_live(ns_cache *c, int n);
/* Skip the whole test binary (exit 77) with a reason. */
void t_skip_all(const char *why) __attribute__((noreturn));

#endif
