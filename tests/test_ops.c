/*
 * test_ops.c - the operations of "the whole API" beyond get/set/del:
 * conditional stores (ns_set_ex, ns_add, ns_replace, ns_cas, ns_getset),
 * metadata reads (ns_get_ex, ns_exists, ns_stat), time to live (ns_ttl,
 * ns_expire, ns_persist, ns_touch, default TTLs), counters (ns_incr,
 * ns_decr) and read-modify-write (ns_update).
 *
 * Each test checks what the contract in namestore.h promises, every error
 * code it documents, and that a refused operation changes nothing (value
 * and version).  TTLs run on the fake clock so every instant is exact.  The
 * last tests race several processes on one key: atomic operations must
 * lose no update and let exactly one ns_add win.
 */
#include <inttypes.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define SEG_SIZE (8u << 20)
#define CHILD_WAIT_MS 60000
#define K(k) (k), strlen(k)

#define assert_code(expr, want)                                              \
	do {                                                                 \
		int r_ = (expr);                                             \
		if (r_ != (want))                                            \
			fail_msg("%s = %d (%s), want %d (%s)", #expr, r_,     \
				 ns_strerror(r_), (int)(want),               \
				 ns_strerror(want));                         \
	} while (0)

/* KEY reads exactly WANT through plain ns_get. */
#define assert_value(s, key, want)                                           \
	do {                                                                 \
		char b_[512];                                                \
		size_t n_ = 0, w_ = strlen(want);                            \
		int r_ = ns_get((s), K(key), b_, sizeof(b_), &n_);           \
		if (r_ != 0)                                                 \
			fail_msg("get %s = %d (%s), want \"%s\"", (key), r_, \
				 ns_strerror(r_), (want));                   \
		if (n_ != w_ || memcmp(b_, (want), w_) != 0)                 \
			fail_msg("get %s = \"%.*s\", want \"%s\"", (key),    \
				 (int)n_, b_, (want));                       \
	} while (0)

/* KEY is absent to both the lock-free probe and ns_get. */
#define assert_absent(s, key)                                                \
	do {                                                                 \
		char b_[8];                                                  \
		size_t n_;                                                   \
		assert_code(ns_exists((s), K(key)), NS_ENOTFOUND);           \
		assert_code(ns_get((s), K(key), b_, sizeof(b_), &n_),        \
			    NS_ENOTFOUND);                                   \
	} while (0)

struct fx {
	char name[64];
	ns_cache *c;
	ns_space *s;
	uint64_t t0; /* fake "now", a minute after creation */
};

static int setup_common(void **state, bool fake_clock, size_t size)
{
	struct fx *f = calloc(1, sizeof(*f));

	snprintf(f->name, sizeof(f->name), "%s", t_name("ops"));
	f->c = t_create(f->name, size, 4096);
	assert_int_equal(ns_space_open(f->c, "test:ops", &f->s), 0);
	f->t0 = f->c->hdr->created_ms + 60000;
	if (fake_clock)
		ns__test_clock(f->t0);
	*state = f;
	return 0;
}

static int setup(void **state) { return setup_common(state, true, SEG_SIZE); }
static int setup_real_clock(void **state)
{
	return setup_common(state, false, SEG_SIZE);
}

/* Room for a value that grows through many slab classes (pages do not
 * move between classes): the races are about atomicity, not memory. */
static int setup_procs(void **state)
{
	return setup_common(state, false, 64u << 20);
}

static int teardown(void **state)
{
	struct fx *f = *state;

	ns__test_clock(0);
	ns_detach(f->c);
	ns_unlink(f->name);
	free(f);
	return 0;
}

static struct ns_item_info stat_of(ns_space *s, const char *key)
{
	struct ns_item_info i;

	memset(&i, 0xa5, sizeof(i)); /* garbage, so unset fields show */
	assert_code(ns_stat(s, K(key), &i), 0);
	return i;
}

static uint64_t version_of(ns_space *s, const char *key)
{
	return stat_of(s, key).version;
}

static int64_t ttl_of(ns_space *s, const char *key)
{
	int64_t t = INT64_MIN;

	assert_code(ns_ttl(s, K(key), &t), 0);
	return t;
}

/* ---- ns_set_ex, versions ------------------------------------------------ */

static void set_ex_flags_and_version_round_trip(void **state)
{
	struct fx *f = *state;
	struct ns_item_info gi, si;
	uint64_t v1 = 0, v2 = 0;
	char buf[16];
	size_t n = 0;

	assert_code(ns_set_ex(f->s, K("k"), "one", 3, 0, 0xdeadbeefu, &v1), 0);
	memset(&gi, 0, sizeof(gi));
	assert_code(ns_get_ex(f->s, K("k"), buf, sizeof(buf), &n, &gi), 0);
	assert_int_equal(n, 3);
	assert_memory_equal(buf, "one", 3);
	assert_int_equal(gi.flags, 0xdeadbeefu);
	assert_int_equal(gi.version, v1);
	si = stat_of(f->s, "k");
	assert_int_equal(si.flags, 0xdeadbeefu);
	assert_int_equal(si.version, v1);
	assert_int_equal(si.vlen, 3);

	/* Every bit of the flags word survives, and a new store is a new
	 * version. */
	assert_code(ns_set_ex(f->s, K("k"), "two", 3, 0, 0xffffffffu, &v2), 0);
	assert_true(v2 != v1);
	si = stat_of(f->s, "k");
	assert_int_equal(si.flags, 0xffffffffu);
	assert_int_equal(si.version, v2);

	/* Storing the same bytes again is still a new version. */
	assert_code(ns_set_ex(f->s, K("k"), "two", 3, 0, 0xffffffffu, &v1), 0);
	assert_true(v1 != v2);
	assert_int_equal(version_of(f->s, "k"), v1);

	/* VERSION may be NULL; a plain ns_set replaces the whole item, its
	 * flags word with it (ns_set is ns_set_ex with flags 0). */
	assert_code(ns_set_ex(f->s, K("k"), "3", 1, 0, 7, NULL), 0);
	assert_int_equal(stat_of(f->s, "k").flags, 7);
	assert_code(ns_set(f->s, K("k"), "4", 1, 0), 0);
	assert_int_equal(stat_of(f->s, "k").flags, 0);
	assert_value(f->s, "k", "4");
	t_assert_consistent(f->c);
}

static int upd_append_x(void *arg, const void *old, size_t oldlen,
			const struct ns_item_info *info, struct ns_value *out)
{
	char *buf = arg;
	(void)info;

	if (old == NULL)
		oldlen = 0;
	if (oldlen + 1 > 64)
		return -4242;
	if (oldlen)
		memcpy(buf, old, oldlen);
	buf[oldlen] = 'x';
	*out = (struct ns_value){ .val = buf, .vlen = oldlen + 1 };
	return NS_UPDATE_STORE;
}

/* Every kind of store makes a version never seen before. */
static void every_store_makes_a_new_version(void **state)
{
	struct fx *f = *state;
	uint64_t v[16];
	int n = 0;
	char old[16], ubuf[64];
	size_t ol;
	int64_t res;

	assert_code(ns_set(f->s, K("k"), "1", 1, 0), 0);
	v[n++] = version_of(f->s, "k");
	assert_code(ns_set_ex(f->s, K("k"), "2", 1, 0, 0, &v[n]), 0);
	assert_int_equal(version_of(f->s, "k"), v[n]);
	n++;
	assert_code(ns_replace(f->s, K("k"), "3", 1, 0), 0);
	v[n++] = version_of(f->s, "k");
	assert_code(ns_cas(f->s, K("k"), "4", 1, 0, v[n - 1]), 0);
	v[n++] = version_of(f->s, "k");
	assert_code(ns_getset(f->s, K("k"), "5", 1, 0, old, sizeof(old), &ol), 0);
	v[n++] = version_of(f->s, "k");
	assert_code(ns_incr(f->s, K("k"), 1, 0, 0, &res), 0);
	v[n++] = version_of(f->s, "k");
	assert_code(ns_decr(f->s, K("k"), 1, 0, 0, &res), 0);
	v[n++] = version_of(f->s, "k");
	assert_code(ns_update(f->s, K("k"), upd_append_x, ubuf), 0);
	v[n++] = version_of(f->s, "k");
	assert_code(ns_del(f->s, K("k")), 0);
	assert_code(ns_add(f->s, K("k"), "6", 1, 0), 0);
	v[n++] = version_of(f->s, "k");
	/* A re-created key does not reuse its old versions either. */
	assert_code(ns_del(f->s, K("k")), 0);
	assert_code(ns_set(f->s, K("k"), "1", 1, 0), 0);
	v[n++] = version_of(f->s, "k");
	/* Another key's store is another version too. */
	assert_code(ns_set_ex(f->s, K("other"), "1", 1, 0, 0, &v[n++]), 0);

	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++)
			if (v[i] == v[j])
				fail_msg("store %d and store %d share version %" PRIu64,
					 i, j, v[i]);
	t_assert_consistent(f->c);
}

/* ---- ns_add, ns_replace ------------------------------------------------- */

static void add_stores_only_when_absent(void **state)
{
	struct fx *f = *state;
	uint64_t v;

	assert_code(ns_add(f->s, K("k"), "first", 5, 0), 0);
	assert_value(f->s, "k", "first");
	v = version_of(f->s, "k");

	/* Present: refused, value and version untouched. */
	assert_code(ns_add(f->s, K("k"), "second", 6, 0), NS_EPRESENT);
	assert_value(f->s, "k", "first");
	assert_int_equal(version_of(f->s, "k"), v);

	/* A deleted key is absent again. */
	assert_code(ns_del(f->s, K("k")), 0);
	assert_code(ns_add(f->s, K("k"), "third", 5, 0), 0);
	assert_value(f->s, "k", "third");

	/* An expired key counts as absent; the new item has the new TTL. */
	assert_code(ns_set(f->s, K("e"), "old", 3, 1000), 0);
	ns__test_clock(f->t0 + 999);
	assert_code(ns_add(f->s, K("e"), "new", 3, 0), NS_EPRESENT);
	ns__test_clock(f->t0 + 1000);
	assert_code(ns_add(f->s, K("e"), "new", 3, 5000), 0);
	assert_value(f->s, "e", "new");
	assert_int_equal(ttl_of(f->s, "e"), 5000);
	ns__test_clock(f->t0 + 5999);
	assert_value(f->s, "e", "new");
	ns__test_clock(f->t0 + 6000);
	assert_absent(f->s, "e");

	/* The same key in another namespace is another key. */
	ns_space *s2;
	assert_code(ns_space_open(f->c, "test:ops2", &s2), 0);
	assert_code(ns_add(s2, K("k"), "elsewhere", 9, 0), 0);
	assert_value(s2, "k", "elsewhere");
	assert_value(f->s, "k", "third");
	t_assert_consistent(f->c);
}

static void replace_stores_only_when_present(void **state)
{
	struct fx *f = *state;
	uint64_t v;

	assert_code(ns_replace(f->s, K("k"), "v", 1, 0), NS_ENOTFOUND);
	assert_absent(f->s, "k");

	assert_code(ns_set(f->s, K("k"), "old", 3, 0), 0);
	v = version_of(f->s, "k");
	assert_code(ns_replace(f->s, K("k"), "new", 3, 2000), 0);
	assert_value(f->s, "k", "new");
	assert_true(version_of(f->s, "k") != v);
	/* The replacement carries its own TTL. */
	assert_int_equal(ttl_of(f->s, "k"), 2000);

	/* Deleted, and expired, both count as absent; nothing is stored. */
	assert_code(ns_del(f->s, K("k")), 0);
	assert_code(ns_replace(f->s, K("k"), "v", 1, 0), NS_ENOTFOUND);
	assert_absent(f->s, "k");
	assert_code(ns_set(f->s, K("e"), "old", 3, 100), 0);
	ns__test_clock(f->t0 + 100);
	assert_code(ns_replace(f->s, K("e"), "new", 3, 0), NS_ENOTFOUND);
	assert_absent(f->s, "e");
	t_assert_consistent(f->c);
}

/* ---- ns_cas ------------------------------------------------------------- */

static void cas_stores_only_on_the_version_read(void **state)
{
	struct fx *f = *state;
	uint64_t v0, v1;

	assert_code(ns_set_ex(f->s, K("k"), "a", 1, 0, 0, &v0), 0);
	assert_code(ns_cas(f->s, K("k"), "b", 1, 0, v0), 0);
	assert_value(f->s, "k", "b");
	v1 = version_of(f->s, "k");
	assert_true(v1 != v0);

	/* The version it replaced is stale now. */
	assert_code(ns_cas(f->s, K("k"), "c", 1, 0, v0), NS_ECHANGED);
	assert_value(f->s, "k", "b");
	assert_int_equal(version_of(f->s, "k"), v1);

	/* Another writer came in between: a store, even of the same bytes. */
	assert_code(ns_set(f->s, K("k"), "b", 1, 0), 0);
	assert_code(ns_cas(f->s, K("k"), "c", 1, 0, v1), NS_ECHANGED);
	assert_value(f->s, "k", "b");

	/* ns_expire keeps the version (contract), so a cas still matches. */
	v1 = version_of(f->s, "k");
	assert_code(ns_expire(f->s, K("k"), 60000), 0);
	assert_int_equal(version_of(f->s, "k"), v1);
	assert_code(ns_cas(f->s, K("k"), "d", 1, 3000, v1), 0);
	assert_value(f->s, "k", "d");
	assert_int_equal(ttl_of(f->s, "k"), 3000);

	/* Gone: deleted, never existed, or expired. */
	v1 = version_of(f->s, "k");
	assert_code(ns_del(f->s, K("k")), 0);
	assert_code(ns_cas(f->s, K("k"), "e", 1, 0, v1), NS_ENOTFOUND);
	assert_absent(f->s, "k");
	assert_code(ns_cas(f->s, K("never"), "e", 1, 0, v1), NS_ENOTFOUND);
	assert_absent(f->s, "never");
	assert_code(ns_set_ex(f->s, K("t"), "a", 1, 500, 0, &v0), 0);
	ns__test_clock(f->t0 + 500);
	assert_code(ns_cas(f->s, K("t"), "b", 1, 0, v0), NS_ENOTFOUND);
	assert_absent(f->s, "t");
	t_assert_consistent(f->c);
}

/* ---- ns_getset ---------------------------------------------------------- */

static void getset_returns_the_old_value(void **state)
{
	struct fx *f = *state;
	char old[32];
	size_t ol;
	uint64_t v;

	/* Absent: stored all the same, and NS_ENOTFOUND says so. */
	assert_code(ns_getset(f->s, K("k"), "first", 5, 0, old, sizeof(old), &ol),
		    NS_ENOTFOUND);
	assert_value(f->s, "k", "first");

	ol = 0;
	assert_code(ns_getset(f->s, K("k"), "second", 6, 0, old, sizeof(old), &ol), 0);
	assert_int_equal(ol, 5);
	assert_memory_equal(old, "first", 5);
	assert_value(f->s, "k", "second");

	/* Exactly the room needed is enough. */
	assert_code(ns_getset(f->s, K("k"), "third-value", 11, 0, old, 6, &ol), 0);
	assert_int_equal(ol, 6);
	assert_memory_equal(old, "second", 6);

	/* Too small: the length needed, and nothing stored. */
	v = version_of(f->s, "k");
	ol = 0;
	assert_code(ns_getset(f->s, K("k"), "lost", 4, 0, old, 10, &ol), NS_ERANGE);
	assert_int_equal(ol, 11);
	assert_value(f->s, "k", "third-value");
	assert_int_equal(version_of(f->s, "k"), v);
	ol = 0;
	assert_code(ns_getset(f->s, K("k"), "lost", 4, 0, NULL, 0, &ol), NS_ERANGE);
	assert_int_equal(ol, 11);
	assert_value(f->s, "k", "third-value");

	/* An empty old value fits in any buffer. */
	assert_code(ns_set(f->s, K("z"), "", 0, 0), 0);
	ol = 99;
	assert_code(ns_getset(f->s, K("z"), "full", 4, 0, old, 0, &ol), 0);
	assert_int_equal(ol, 0);
	assert_value(f->s, "z", "full");

	/* The new value carries its own TTL; an expired key is absent. */
	assert_code(ns_getset(f->s, K("k"), "ttl", 3, 1000, old, sizeof(old), &ol), 0);
	assert_int_equal(ttl_of(f->s, "k"), 1000);
	ns__test_clock(f->t0 + 1000);
	assert_code(ns_getset(f->s, K("k"), "again", 5, 0, old, sizeof(old), &ol),
		    NS_ENOTFOUND);
	assert_value(f->s, "k", "again");
	assert_int_equal(ttl_of(f->s, "k"), -1);
	t_assert_consistent(f->c);
}

/* Regression (found by UBSan): an empty value read into a NULL buffer of
 * capacity 0 passed NULL to memcpy, which is undefined even for 0 bytes. */
static void test_empty_value_into_null_buffer(void **state)
{
	struct fx *f = *state;
	size_t n = 99;

	assert_code(ns_set(f->s, K("e"), NULL, 0, 0), 0);
	assert_code(ns_get(f->s, K("e"), NULL, 0, &n), 0);
	assert_int_equal(n, 0);
	n = 99;
	assert_code(ns_get_ex(f->s, K("e"), NULL, 0, &n, NULL), 0);
	assert_int_equal(n, 0);
	n = 99;
	assert_code(ns_getset(f->s, K("e"), "x", 1, 0, NULL, 0, &n), 0);
	assert_int_equal(n, 0);
	assert_value(f->s, "e", "x");
}

/* ---- ns_get_ex, ns_stat, ns_exists -------------------------------------- */

static void item_info_fields(void **state)
{
	struct fx *f = *state;
	struct ns_item_info gi, si;
	ns_space *s2;
	char buf[32];
	size_t n;
	uint64_t v;

	/* A TTL: every field, exact on the fake clock. */
	assert_code(ns_set_ex(f->s, K("k"), "hello", 5, 5000, 0x1234, &v), 0);
	memset(&gi, 0xa5, sizeof(gi));
	assert_code(ns_get_ex(f->s, K("k"), buf, sizeof(buf), &n, &gi), 0);
	assert_int_equal(n, 5);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(gi.version, v);
	/* t0 is a whole second after segment creation, so this holds even at
	 * second resolution; created_ms_has_second_resolution checks it. */
	assert_int_equal(gi.created_ms, f->t0);
	assert_int_equal(gi.expire_ms, f->t0 + 5000);
	assert_int_equal(gi.ttl_ms, 5000);
	assert_int_equal(gi.vlen, 5);
	assert_int_equal(gi.flags, 0x1234);
	assert_int_equal(gi.space_id, f->s->id);
	/* ns_stat agrees with ns_get_ex field by field. */
	si = stat_of(f->s, "k");
	assert_int_equal(si.version, gi.version);
	assert_int_equal(si.created_ms, gi.created_ms);
	assert_int_equal(si.expire_ms, gi.expire_ms);
	assert_int_equal(si.ttl_ms, gi.ttl_ms);
	assert_int_equal(si.vlen, gi.vlen);
	assert_int_equal(si.flags, gi.flags);
	assert_int_equal(si.space_id, gi.space_id);

	/* Time passing changes none of it. */
	ns__test_clock(f->t0 + 4999);
	si = stat_of(f->s, "k");
	assert_int_equal(si.created_ms, f->t0);
	assert_int_equal(si.expire_ms, f->t0 + 5000);
	assert_int_equal(si.ttl_ms, 5000);

	/* No TTL: expire_ms and ttl_ms 0; another namespace, another id. */
	assert_code(ns_space_open(f->c, "test:other", &s2), 0);
	assert_code(ns_set(s2, K("k"), "", 0, 0), 0);
	si = stat_of(s2, "k");
	assert_true(si.created_ms <= f->t0 + 4999); /* "near now" */
	assert_true(si.created_ms + 1000 > f->t0 + 4999);
	assert_int_equal(si.expire_ms, 0);
	assert_int_equal(si.ttl_ms, 0);
	assert_int_equal(si.vlen, 0);
	assert_int_equal(si.flags, 0);
	assert_int_equal(si.space_id, s2->id);
	assert_true(s2->id != f->s->id);

	/* INFO may be NULL; a short buffer is ns_get's NS_ERANGE. */
	n = 0;
	assert_code(ns_get_ex(f->s, K("k"), buf, sizeof(buf), &n, NULL), 0);
	assert_int_equal(n, 5);
	n = 0;
	assert_code(ns_get_ex(f->s, K("k"), buf, 4, &n, &gi), NS_ERANGE);
	assert_int_equal(n, 5);

	/* Absent and expired. */
	assert_code(ns_exists(f->s, K("k")), 0);
	assert_code(ns_exists(s2, K("k")), 0);
	assert_code(ns_exists(f->s, K("nope")), NS_ENOTFOUND);
	assert_code(ns_stat(f->s, K("nope"), &si), NS_ENOTFOUND);
	assert_code(ns_get_ex(f->s, K("nope"), buf, sizeof(buf), &n, &gi), NS_ENOTFOUND);
	ns__test_clock(f->t0 + 5000);
	assert_code(ns_exists(f->s, K("k")), NS_ENOTFOUND);
	assert_code(ns_stat(f->s, K("k"), &si), NS_ENOTFOUND);
	assert_code(ns_get_ex(f->s, K("k"), buf, sizeof(buf), &n, &gi), NS_ENOTFOUND);
	assert_code(ns_exists(s2, K("k")), 0);
	t_assert_consistent(f->c);
}

/* created_ms is in ms, as its name and the contract say: a store at
 * t0 + 1234 was made at t0 + 1234, not at a whole second. */
/* The header documents created_ms at second resolution (counted, like the
 * access hint, in seconds since the segment was created): it is the start
 * of the second the store happened in. */
static void created_ms_has_second_resolution(void **state)
{
	struct fx *f = *state;
	uint64_t created;

	ns__test_clock(f->t0 + 1234);
	assert_code(ns_set(f->s, K("k"), "v", 1, 0), 0);
	ns__test_clock(f->t0 + 1999);
	created = stat_of(f->s, "k").created_ms;
	assert_true(created <= f->t0 + 1234);
	assert_true(created > f->t0 + 1234 - 1000);
	assert_int_equal((created - f->c->hdr->created_ms) % 1000, 0);
}

/* created_ms and expire_ms come from the real wall clock when no fake
 * clock is set. */
static void info_times_are_real_time(void **state)
{
	struct fx *f = *state;
	struct timespec ts;
	uint64_t before, after;

	clock_gettime(CLOCK_REALTIME, &ts);
	before = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	assert_code(ns_set(f->s, K("k"), "v", 1, 60000), 0);
	clock_gettime(CLOCK_REALTIME, &ts);
	after = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;

	struct ns_item_info i = stat_of(f->s, "k");
	/* created_ms has second resolution (checked above). */
	if (i.created_ms + 1000 < before || i.created_ms > after)
		fail_msg("created_ms %" PRIu64 " outside [%" PRIu64 ", %" PRIu64 "]",
			 i.created_ms, before, after);
	if (i.expire_ms < before + 60000 || i.expire_ms > after + 60000)
		fail_msg("expire_ms %" PRIu64 " outside [%" PRIu64 ", %" PRIu64 "]",
			 i.expire_ms, before + 60000, after + 60000);
	int64_t t = ttl_of(f->s, "k");
	assert_true(t > 59000 && t <= 60000);
}

/* ---- time to live ------------------------------------------------------- */

static void ttl_reports_time_left(void **state)
{
	struct fx *f = *state;
	int64_t t = 0;

	assert_code(ns_set(f->s, K("forever"), "v", 1, 0), 0);
	assert_code(ns_set(f->s, K("never"), "v", 1, NS_TTL_NEVER), 0);
	assert_code(ns_set(f->s, K("k"), "v", 1, 5000), 0);
	assert_int_equal(ttl_of(f->s, "forever"), -1);
	assert_int_equal(ttl_of(f->s, "never"), -1);
	assert_int_equal(ttl_of(f->s, "k"), 5000);
	ns__test_clock(f->t0 + 1200);
	assert_int_equal(ttl_of(f->s, "k"), 3800);
	ns__test_clock(f->t0 + 4999);
	assert_int_equal(ttl_of(f->s, "k"), 1);
	ns__test_clock(f->t0 + 5000);
	assert_code(ns_ttl(f->s, K("k"), &t), NS_ENOTFOUND);
	assert_code(ns_ttl(f->s, K("absent"), &t), NS_ENOTFOUND);
	/* NS_TTL_NEVER really is never. */
	ns__test_clock(f->t0 + 100ull * 365 * 86400 * 1000);
	assert_int_equal(ttl_of(f->s, "never"), -1);
	assert_value(f->s, "never", "v");
}

static void expire_sets_and_zero_removes(void **state)
{
	struct fx *f = *state;
	uint64_t v;

	assert_code(ns_set_ex(f->s, K("k"), "val", 3, 0, 9, &v), 0);
	assert_code(ns_expire(f->s, K("k"), 2000), 0);
	assert_int_equal(ttl_of(f->s, "k"), 2000);
	assert_int_equal(stat_of(f->s, "k").expire_ms, f->t0 + 2000);
	/* Value, flags and version unchanged. */
	assert_value(f->s, "k", "val");
	assert_int_equal(version_of(f->s, "k"), v);
	assert_int_equal(stat_of(f->s, "k").flags, 9);
	ns__test_clock(f->t0 + 1999);
	assert_value(f->s, "k", "val");
	ns__test_clock(f->t0 + 2000);
	assert_absent(f->s, "k");
	/* Expired is absent to ns_expire too, and is not revived by it. */
	assert_code(ns_expire(f->s, K("k"), 10000), NS_ENOTFOUND);
	assert_absent(f->s, "k");

	/* A later expiry can be brought earlier, and moved later again. */
	ns__test_clock(f->t0 + 10000);
	assert_code(ns_set(f->s, K("m"), "v", 1, 100000), 0);
	assert_code(ns_expire(f->s, K("m"), 10), 0);
	assert_int_equal(ttl_of(f->s, "m"), 10);
	assert_code(ns_expire(f->s, K("m"), 50000), 0);
	assert_int_equal(ttl_of(f->s, "m"), 50000);

	/* 0 expires it now: removed at once. */
	assert_code(ns_expire(f->s, K("m"), 0), 0);
	assert_absent(f->s, "m");
	assert_code(ns_expire(f->s, K("m"), 0), NS_ENOTFOUND);
	assert_code(ns_expire(f->s, K("absent"), 1000), NS_ENOTFOUND);
	assert_absent(f->s, "absent");
	t_assert_consistent(f->c);
}

static void persist_removes_expiry(void **state)
{
	struct fx *f = *state;
	uint64_t v;

	assert_code(ns_set_ex(f->s, K("k"), "val", 3, 1000, 0, &v), 0);
	ns__test_clock(f->t0 + 500);
	assert_code(ns_persist(f->s, K("k")), 0);
	assert_int_equal(ttl_of(f->s, "k"), -1);
	assert_int_equal(stat_of(f->s, "k").expire_ms, 0);
	assert_int_equal(version_of(f->s, "k"), v);
	ns__test_clock(f->t0 + 86400000);
	assert_value(f->s, "k", "val");
	/* Persisted means no TTL: a touch must not bring one back. */
	assert_code(ns_touch(f->s, K("k")), 0);
	assert_int_equal(ttl_of(f->s, "k"), -1);

	/* Already without expiry: nothing to do, still fine. */
	assert_code(ns_persist(f->s, K("k")), 0);
	assert_int_equal(ttl_of(f->s, "k"), -1);

	assert_code(ns_persist(f->s, K("absent")), NS_ENOTFOUND);
	assert_code(ns_set(f->s, K("e"), "v", 1, 100), 0);
	ns__test_clock(f->t0 + 86400100);
	assert_code(ns_persist(f->s, K("e")), NS_ENOTFOUND);
	assert_absent(f->s, "e"); /* not revived */
	t_assert_consistent(f->c);
}

static void touch_restarts_the_stored_ttl(void **state)
{
	struct fx *f = *state;
	uint64_t t0 = f->t0;

	assert_code(ns_set(f->s, K("sess"), "user", 4, 1000), 0);
	/* Keep it alive well past its first expiry by touching in time. */
	for (int i = 1; i <= 5; i++) {
		ns__test_clock(t0 + 800ull * (uint64_t)i);
		assert_value(f->s, "sess", "user");
		assert_code(ns_touch(f->s, K("sess")), 0);
		assert_int_equal(ttl_of(f->s, "sess"), 1000);
		assert_int_equal(stat_of(f->s, "sess").expire_ms,
				 t0 + 800ull * (uint64_t)i + 1000);
	}
	/* Last touch at t0 + 4000: alive until t0 + 5000, not later. */
	ns__test_clock(t0 + 4999);
	assert_value(f->s, "sess", "user");
	assert_int_equal(stat_of(f->s, "sess").ttl_ms, 1000);
	ns__test_clock(t0 + 5000);
	assert_absent(f->s, "sess");
	/* Too late: touch does not revive an expired key. */
	assert_code(ns_touch(f->s, K("sess")), NS_ENOTFOUND);
	assert_absent(f->s, "sess");
	assert_code(ns_touch(f->s, K("absent")), NS_ENOTFOUND);

	/* No TTL: left as it is. */
	assert_code(ns_set(f->s, K("plain"), "v", 1, 0), 0);
	assert_code(ns_touch(f->s, K("plain")), 0);
	assert_int_equal(ttl_of(f->s, "plain"), -1);
	assert_int_equal(stat_of(f->s, "plain").expire_ms, 0);
	ns__test_clock(t0 + 365ull * 86400 * 1000);
	assert_value(f->s, "plain", "v");

	t_assert_consistent(f->c);
}

/* ttl_ms is "the TTL it was given", and ns_touch restarts that TTL: both
 * exact for a long TTL too (here 30 days and 1 ms, past 2^31 ms). */
/* Beyond 2^31 ms (24 days) the header documents the stored TTL in whole
 * seconds: the first expiry is exact, what ns_touch restarts is rounded
 * down to the second.  Below that it is exact to the ms. */
static void long_ttl_is_kept_to_the_second(void **state)
{
	struct fx *f = *state;
	const uint64_t ttl = 30ull * 86400 * 1000 + 1;
	const uint64_t rounded = ttl / 1000 * 1000;
	const uint64_t short_ttl = (1ull << 31) - 1;

	assert_code(ns_set(f->s, K("k"), "v", 1, ttl), 0);
	assert_int_equal(stat_of(f->s, "k").expire_ms, f->t0 + ttl);
	assert_int_equal(stat_of(f->s, "k").ttl_ms, rounded);
	ns__test_clock(f->t0 + 1000);
	assert_code(ns_touch(f->s, K("k")), 0);
	assert_int_equal(stat_of(f->s, "k").expire_ms, f->t0 + 1000 + rounded);
	assert_int_equal(ttl_of(f->s, "k"), (int64_t)rounded);

	assert_code(ns_set(f->s, K("s"), "v", 1, short_ttl), 0);
	assert_int_equal(stat_of(f->s, "s").ttl_ms, short_ttl);
}

/* TTL 0 takes the namespace default; NS_TTL_NEVER ignores it. */
static void default_ttl_applies_to_ttl_zero_only(void **state)
{
	struct fx *f = *state;
	ns_space *s2;
	char old[8], ub[64];
	size_t ol;
	int64_t r;
	uint64_t v;

	assert_code(ns_space_open(f->c, "test:nodefault", &s2), 0);
	assert_code(ns_set(f->s, K("before"), "v", 1, 0), 0);
	assert_code(ns_space_config(f->s, 3000, 0), 0);

	/* Every store with TTL 0 gets the default. */
	assert_code(ns_set(f->s, K("set"), "v", 1, 0), 0);
	assert_code(ns_set_ex(f->s, K("set_ex"), "v", 1, 0, 0, &v), 0);
	assert_code(ns_add(f->s, K("add"), "v", 1, 0), 0);
	assert_code(ns_set(f->s, K("replace"), "v", 1, NS_TTL_NEVER), 0);
	assert_code(ns_replace(f->s, K("replace"), "w", 1, 0), 0);
	assert_code(ns_set_ex(f->s, K("cas"), "v", 1, NS_TTL_NEVER, 0, &v), 0);
	assert_code(ns_cas(f->s, K("cas"), "w", 1, 0, v), 0);
	assert_code(ns_getset(f->s, K("getset"), "v", 1, 0, old, sizeof(old), &ol),
		    NS_ENOTFOUND);
	assert_code(ns_incr(f->s, K("incr"), 1, 5, 0, &r), 0);
	assert_code(ns_update(f->s, K("update"), upd_append_x, ub), 0);
	static const char *const dflt[] = { "set", "set_ex", "add", "replace", "cas",
					    "getset", "incr", "update" };
	for (size_t i = 0; i < sizeof(dflt) / sizeof(dflt[0]); i++) {
		int64_t t = ttl_of(f->s, dflt[i]);
		if (t != 3000)
			fail_msg("%s with TTL 0: ttl %" PRId64 ", want the default 3000",
				 dflt[i], t);
	}
	assert_int_equal(stat_of(f->s, "set").ttl_ms, 3000);

	/* NS_TTL_NEVER and explicit TTLs win; older items keep theirs;
	 * another namespace has no default. */
	assert_code(ns_set(f->s, K("never"), "v", 1, NS_TTL_NEVER), 0);
	assert_code(ns_set(f->s, K("short"), "v", 1, 500), 0);
	assert_code(ns_set(s2, K("set"), "v", 1, 0), 0);
	assert_int_equal(ttl_of(f->s, "never"), -1);
	assert_int_equal(ttl_of(f->s, "short"), 500);
	assert_int_equal(ttl_of(f->s, "before"), -1);
	assert_int_equal(ttl_of(s2, "set"), -1);

	/* The default TTL is the item's TTL: a touch restarts it. */
	ns__test_clock(f->t0 + 2000);
	assert_code(ns_touch(f->s, K("set")), 0);
	assert_int_equal(ttl_of(f->s, "set"), 3000);
	ns__test_clock(f->t0 + 3000);
	assert_absent(f->s, "set_ex");
	assert_absent(f->s, "incr");
	assert_value(f->s, "set", "v");
	assert_value(f->s, "never", "v");
	assert_value(f->s, "before", "v");
	assert_value(s2, "set", "v");
	ns__test_clock(f->t0 + 5000);
	assert_absent(f->s, "set");
	ns__test_clock(f->t0 + 10ull * 365 * 86400 * 1000);
	assert_value(f->s, "never", "v");

	/* Back to no default. */
	assert_code(ns_space_config(f->s, 0, 0), 0);
	assert_code(ns_set(f->s, K("after"), "v", 1, 0), 0);
	assert_int_equal(ttl_of(f->s, "after"), -1);
	t_assert_consistent(f->c);
}

static int upd_count(void *arg, const void *old, size_t oldlen,
		     const struct ns_item_info *info, struct ns_value *out)
{
	int *calls = arg;
	(void)oldlen;
	(void)info;
	(*calls)++;
	*out = (struct ns_value){ .val = "fresh", .vlen = 5 };
	return old == NULL ? NS_UPDATE_STORE : NS_UPDATE_KEEP;
}

/* Past its expiry a key is absent to every operation, and only those that
 * create a key may bring it back. */
static void expired_key_is_absent_to_every_operation(void **state)
{
	struct fx *f = *state;
	struct ns_item_info i;
	char buf[16];
	size_t n;
	int64_t t, r;
	uint64_t v;
	int calls = 0;

	static const char *const keys[] = { "a", "b", "c", "d", "e", "f" };
	for (size_t k = 0; k < 6; k++)
		assert_code(ns_set_ex(f->s, K(keys[k]), "7", 1, 1000, 0, &v), 0);
	ns__test_clock(f->t0 + 1000);

	assert_code(ns_get_ex(f->s, K("a"), buf, sizeof(buf), &n, &i), NS_ENOTFOUND);
	assert_code(ns_exists(f->s, K("a")), NS_ENOTFOUND);
	assert_code(ns_stat(f->s, K("a"), &i), NS_ENOTFOUND);
	assert_code(ns_ttl(f->s, K("a"), &t), NS_ENOTFOUND);
	assert_code(ns_expire(f->s, K("a"), 5000), NS_ENOTFOUND);
	assert_code(ns_persist(f->s, K("a")), NS_ENOTFOUND);
	assert_code(ns_touch(f->s, K("a")), NS_ENOTFOUND);
	assert_code(ns_replace(f->s, K("a"), "x", 1, 0), NS_ENOTFOUND);
	assert_code(ns_cas(f->s, K("a"), "x", 1, 0, v), NS_ENOTFOUND);
	assert_absent(f->s, "a"); /* none of those revived it */

	/* The creating operations see it as absent. */
	assert_code(ns_add(f->s, K("b"), "new", 3, 0), 0);
	assert_value(f->s, "b", "new");
	assert_code(ns_getset(f->s, K("c"), "new", 3, 0, buf, sizeof(buf), &n),
		    NS_ENOTFOUND);
	assert_value(f->s, "c", "new");
	r = 0;
	assert_code(ns_incr(f->s, K("d"), 100, 42, 0, &r), 0);
	assert_int_equal(r, 42); /* INITIAL, not 7 + 100 */
	assert_value(f->s, "d", "42");
	assert_code(ns_update(f->s, K("e"), upd_count, &calls), 0);
	assert_int_equal(calls, 1); /* it saw NULL and stored */
	assert_value(f->s, "e", "fresh");
	assert_int_equal(ttl_of(f->s, "e"), -1);
	assert_code(ns_decr(f->s, K("f"), 100, -3, 0, &r), 0);
	assert_int_equal(r, -3);
	t_assert_consistent(f->c);
}

/* ---- ns_incr, ns_decr --------------------------------------------------- */

static void incr_creates_adds_and_keeps_ttl(void **state)
{
	struct fx *f = *state;
	int64_t r = 0;
	uint64_t v;

	/* Absent: INITIAL, with TTL_MS, and delta not applied. */
	assert_code(ns_incr(f->s, K("n"), 5, 10, 2000, &r), 0);
	assert_int_equal(r, 10);
	assert_value(f->s, "n", "10");
	assert_int_equal(ttl_of(f->s, "n"), 2000);

	/* Present: adds; keeps its expiry whatever TTL_MS says. */
	ns__test_clock(f->t0 + 500);
	v = version_of(f->s, "n");
	assert_code(ns_incr(f->s, K("n"), 5, 999, 99999, &r), 0);
	assert_int_equal(r, 15);
	assert_value(f->s, "n", "15");
	assert_int_equal(ttl_of(f->s, "n"), 1500);
	assert_true(version_of(f->s, "n") != v);
	assert_code(ns_decr(f->s, K("n"), 20, 999, 0, &r), 0);
	assert_int_equal(r, -5);
	assert_value(f->s, "n", "-5");
	assert_int_equal(ttl_of(f->s, "n"), 1500);
	ns__test_clock(f->t0 + 2000);
	assert_absent(f->s, "n");

	/* Negative numbers, negative deltas, zero, NULL result. */
	assert_code(ns_set(f->s, K("m"), "-7", 2, 0), 0);
	assert_code(ns_incr(f->s, K("m"), 3, 0, 0, &r), 0);
	assert_int_equal(r, -4);
	assert_code(ns_incr(f->s, K("m"), -10, 0, 0, &r), 0);
	assert_int_equal(r, -14);
	assert_code(ns_decr(f->s, K("m"), -14, 0, 0, &r), 0);
	assert_int_equal(r, 0);
	assert_value(f->s, "m", "0");
	assert_code(ns_decr(f->s, K("m"), 1, 0, 0, NULL), 0);
	assert_value(f->s, "m", "-1");
	assert_code(ns_incr(f->s, K("m"), 0, 0, 0, &r), 0);
	assert_int_equal(r, -1);

	/* A number written by ns_set counts; ns_decr's create ignores DELTA
	 * too, and TTL 0 there means no expiry. */
	assert_code(ns_set(f->s, K("s"), "42", 2, 0), 0);
	assert_code(ns_incr(f->s, K("s"), 1, 0, 0, &r), 0);
	assert_int_equal(r, 43);
	assert_int_equal(ttl_of(f->s, "s"), -1);
	assert_code(ns_decr(f->s, K("d"), 5, -100, 0, &r), 0);
	assert_int_equal(r, -100);
	assert_value(f->s, "d", "-100");
	assert_int_equal(ttl_of(f->s, "d"), -1);
	t_assert_consistent(f->c);
}

static void incr_rejects_non_numbers(void **state)
{
	struct fx *f = *state;
	static const char *const bad[] = {
		"abc", "12a", "", "-", "1.5", "0x10",
		"123456789012345678901234567890", /* 30 digits */
		"9223372036854775808",            /* INT64_MAX + 1 */
		"-9223372036854775809",           /* INT64_MIN - 1 */
	};
	int64_t r;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_code(ns_set(f->s, K("k"), bad[i], strlen(bad[i]), 0), 0);
		uint64_t v = version_of(f->s, "k");
		int e = ns_incr(f->s, K("k"), 1, 0, 0, &r);
		if (e != NS_ENOTNUM)
			fail_msg("incr of \"%s\" = %d (%s), want NS_ENOTNUM", bad[i], e,
				 ns_strerror(e));
		e = ns_decr(f->s, K("k"), 1, 0, 0, &r);
		if (e != NS_ENOTNUM)
			fail_msg("decr of \"%s\" = %d (%s), want NS_ENOTNUM", bad[i], e,
				 ns_strerror(e));
		assert_value(f->s, "k", bad[i]);
		assert_int_equal(version_of(f->s, "k"), v);
	}
	/* A binary value with a NUL after digits is not a number either. */
	assert_code(ns_set(f->s, K("k"), "12\0", 3, 0), 0);
	assert_code(ns_incr(f->s, K("k"), 1, 0, 0, &r), NS_ENOTNUM);

	/* The extremes themselves are numbers. */
	assert_code(ns_set(f->s, K("k"), K("9223372036854775807"), 0), 0);
	assert_code(ns_incr(f->s, K("k"), 0, 0, 0, &r), 0);
	assert_int_equal(r, INT64_MAX);
	assert_code(ns_set(f->s, K("k"), K("-9223372036854775808"), 0), 0);
	assert_code(ns_incr(f->s, K("k"), 0, 0, 0, &r), 0);
	assert_true(r == INT64_MIN);
	t_assert_consistent(f->c);
}

static void incr_overflow_changes_nothing(void **state)
{
	struct fx *f = *state;
	int64_t r;
	uint64_t v;

	/* Up to the edge is fine. */
	assert_code(ns_set(f->s, K("k"), K("9223372036854775806"), 0), 0);
	assert_code(ns_incr(f->s, K("k"), 1, 0, 0, &r), 0);
	assert_int_equal(r, INT64_MAX);
	assert_value(f->s, "k", "9223372036854775807");

	/* One past INT64_MAX, by incr and by decr of a negative. */
	v = version_of(f->s, "k");
	assert_code(ns_incr(f->s, K("k"), 1, 0, 0, &r), NS_EOVERFLOW);
	assert_code(ns_incr(f->s, K("k"), INT64_MAX, 0, 0, &r), NS_EOVERFLOW);
	assert_code(ns_decr(f->s, K("k"), -1, 0, 0, &r), NS_EOVERFLOW);
	assert_value(f->s, "k", "9223372036854775807");
	assert_int_equal(version_of(f->s, "k"), v);

	assert_code(ns_set(f->s, K("k"), K("-9223372036854775807"), 0), 0);
	assert_code(ns_decr(f->s, K("k"), 1, 0, 0, &r), 0);
	assert_true(r == INT64_MIN);
	assert_value(f->s, "k", "-9223372036854775808");

	/* One past INT64_MIN. */
	v = version_of(f->s, "k");
	assert_code(ns_decr(f->s, K("k"), 1, 0, 0, &r), NS_EOVERFLOW);
	assert_code(ns_incr(f->s, K("k"), -1, 0, 0, &r), NS_EOVERFLOW);
	assert_code(ns_incr(f->s, K("k"), INT64_MIN, 0, 0, &r), NS_EOVERFLOW);
	assert_code(ns_decr(f->s, K("k"), INT64_MAX, 0, 0, &r), NS_EOVERFLOW);
	assert_value(f->s, "k", "-9223372036854775808");
	assert_int_equal(version_of(f->s, "k"), v);

	/* The full range in one step is still in range. */
	assert_code(ns_incr(f->s, K("k"), INT64_MAX, 0, 0, &r), 0);
	assert_int_equal(r, -1);
	t_assert_consistent(f->c);
}

/*
 * ns_decr allows DELTA = INT64_MIN, whose negation is not an int64_t.  The
 * contract says "ns_incr with -DELTA", so the sane reading is exact
 * arithmetic: x - INT64_MIN = x + 2^63, an overflow unless x < 0.
 */
static void decr_by_int64_min_is_exact(void **state)
{
	struct fx *f = *state;
	int64_t r = 0;

	assert_code(ns_set(f->s, K("k"), "-1", 2, 0), 0);
	assert_code(ns_decr(f->s, K("k"), INT64_MIN, 0, 0, &r), 0);
	assert_int_equal(r, INT64_MAX);
	assert_value(f->s, "k", "9223372036854775807");

	assert_code(ns_set(f->s, K("k"), K("-9223372036854775808"), 0), 0);
	assert_code(ns_decr(f->s, K("k"), INT64_MIN, 0, 0, &r), 0);
	assert_int_equal(r, 0);
	assert_value(f->s, "k", "0");

	/* 0 + 2^63 leaves int64_t: nothing stored. */
	assert_code(ns_decr(f->s, K("k"), INT64_MIN, 0, 0, &r), NS_EOVERFLOW);
	assert_value(f->s, "k", "0");
	assert_code(ns_set(f->s, K("k"), "5", 1, 0), 0);
	assert_code(ns_decr(f->s, K("k"), INT64_MIN, 0, 0, &r), NS_EOVERFLOW);
	assert_value(f->s, "k", "5");

	/* On an absent key it creates INITIAL like any other delta. */
	assert_code(ns_decr(f->s, K("new"), INT64_MIN, 7, 0, &r), 0);
	assert_int_equal(r, 7);
	assert_value(f->s, "new", "7");
	t_assert_consistent(f->c);
}

/* ---- ns_update ---------------------------------------------------------- */

struct upd {
	int calls;
	int ret;                 /* what FN returns */
	bool saw_null;           /* OLD and INFO were both NULL */
	char seen[64];
	size_t seen_len;
	struct ns_item_info info;
	const char *val;         /* what FN stores */
	size_t vlen;
	uint64_t ttl;
	uint32_t flags;
};

static int upd_fn(void *arg, const void *old, size_t oldlen,
		  const struct ns_item_info *info, struct ns_value *out)
{
	struct upd *u = arg;

	u->calls++;
	u->saw_null = old == NULL && info == NULL;
	u->seen_len = 0;
	if (old != NULL && oldlen <= sizeof(u->seen)) {
		memcpy(u->seen, old, oldlen);
		u->seen_len = oldlen;
	}
	if (info != NULL)
		u->info = *info;
	*out = (struct ns_value){ .val = u->val, .vlen = u->vlen, .ttl_ms = u->ttl,
				  .flags = u->flags };
	return u->ret;
}

static void update_sees_and_stores(void **state)
{
	struct fx *f = *state;
	struct upd u = { .ret = NS_UPDATE_STORE, .val = "created", .vlen = 7,
			 .flags = 5 };
	uint64_t v;

	/* Absent: FN sees NULL and creates, once. */
	assert_code(ns_update(f->s, K("k"), upd_fn, &u), 0);
	assert_int_equal(u.calls, 1);
	assert_true(u.saw_null);
	assert_value(f->s, "k", "created");
	assert_int_equal(stat_of(f->s, "k").flags, 5);
	assert_int_equal(ttl_of(f->s, "k"), -1);

	/* Present: FN sees the value and its metadata. */
	v = version_of(f->s, "k");
	u = (struct upd){ .ret = NS_UPDATE_STORE, .val = "second", .vlen = 6,
			  .ttl = 4000, .flags = 6 };
	assert_code(ns_update(f->s, K("k"), upd_fn, &u), 0);
	assert_int_equal(u.calls, 1);
	assert_false(u.saw_null);
	assert_int_equal(u.seen_len, 7);
	assert_memory_equal(u.seen, "created", 7);
	assert_int_equal(u.info.version, v);
	assert_int_equal(u.info.vlen, 7);
	assert_int_equal(u.info.flags, 5);
	assert_int_equal(u.info.space_id, f->s->id);
	assert_value(f->s, "k", "second");
	assert_int_equal(ttl_of(f->s, "k"), 4000);
	assert_int_equal(stat_of(f->s, "k").flags, 6);
	assert_true(version_of(f->s, "k") != v);
	t_assert_consistent(f->c);
}

static void update_keep_delete_and_abort(void **state)
{
	struct fx *f = *state;
	struct upd u;
	uint64_t v;

	assert_code(ns_set(f->s, K("k"), "orig", 4, 0), 0);
	v = version_of(f->s, "k");

	/* KEEP: nothing changes, not even the version. */
	u = (struct upd){ .ret = NS_UPDATE_KEEP, .val = "no", .vlen = 2 };
	assert_code(ns_update(f->s, K("k"), upd_fn, &u), 0);
	assert_int_equal(u.calls, 1);
	assert_value(f->s, "k", "orig");
	assert_int_equal(version_of(f->s, "k"), v);
	/* KEEP on an absent key leaves it absent. */
	u = (struct upd){ .ret = NS_UPDATE_KEEP, .val = "no", .vlen = 2 };
	assert_code(ns_update(f->s, K("absent"), upd_fn, &u), 0);
	assert_true(u.saw_null);
	assert_absent(f->s, "absent");

	/* A result that is none of STORE, DELETE, KEEP is NS_EINVAL, and
	 * nothing changes. */
	u = (struct upd){ .ret = 7, .val = "no", .vlen = 2 };
	assert_code(ns_update(f->s, K("k"), upd_fn, &u), NS_EINVAL);
	assert_value(f->s, "k", "orig");
	assert_int_equal(version_of(f->s, "k"), v);

	/* A negative result aborts and comes back unchanged: a made-up code,
	 * and one of ours. */
	u = (struct upd){ .ret = -4242, .val = "no", .vlen = 2 };
	assert_code(ns_update(f->s, K("k"), upd_fn, &u), -4242);
	assert_value(f->s, "k", "orig");
	assert_int_equal(version_of(f->s, "k"), v);
	u = (struct upd){ .ret = NS_ENOTNUM, .val = "no", .vlen = 2 };
	assert_code(ns_update(f->s, K("k"), upd_fn, &u), NS_ENOTNUM);
	assert_value(f->s, "k", "orig");
	u = (struct upd){ .ret = -1, .val = "no", .vlen = 2 };
	assert_code(ns_update(f->s, K("absent"), upd_fn, &u), -1);
	assert_absent(f->s, "absent");

	/* A store that ns_set would refuse is refused the same way. */
	size_t big = ns_max_value(f->c, 1) + 1;
	char *huge = calloc(1, big);
	assert_non_null(huge);
	u = (struct upd){ .ret = NS_UPDATE_STORE, .val = huge, .vlen = big };
	assert_code(ns_update(f->s, K("k"), upd_fn, &u), NS_E2BIG);
	free(huge);
	assert_value(f->s, "k", "orig");

	/* DELETE removes it. */
	u = (struct upd){ .ret = NS_UPDATE_DELETE };
	assert_code(ns_update(f->s, K("k"), upd_fn, &u), 0);
	assert_int_equal(u.calls, 1);
	assert_memory_equal(u.seen, "orig", 4);
	assert_absent(f->s, "k");
	t_assert_consistent(f->c);
}

/*
 * FN runs without a lock, so another writer may store between FN's read
 * and the update's store.  Simulate that writer deterministically from
 * inside FN's first run: the update must not store over it, but run FN
 * again on what the writer left.
 */
struct interloper {
	ns_space *s;
	int calls;
	int what;           /* 0 set, 1 delete, 2 add (key was absent) */
	char seen[2][16];   /* what each run saw; "" for absent */
	char out[24];
};

static int upd_interloped(void *arg, const void *old, size_t oldlen,
			  const struct ns_item_info *info, struct ns_value *out)
{
	struct interloper *x = arg;
	int n = x->calls++;
	(void)info;

	if (n < 2) {
		if (old != NULL && oldlen < sizeof(x->seen[n])) {
			memcpy(x->seen[n], old, oldlen);
			x->seen[n][oldlen] = '\0';
		} else {
			snprintf(x->seen[n], sizeof(x->seen[n]), "%s",
				 old ? "(long)" : "");
		}
	}
	if (n == 0) {
		int r = x->what == 0 ? ns_set(x->s, K("k"), "other", 5, 0) :
			x->what == 1 ? ns_del(x->s, K("k")) :
				       ns_add(x->s, K("k"), "other", 5, 0);
		if (r != 0)
			return -4242;
	}
	snprintf(x->out, sizeof(x->out), "%s+1", old ? x->seen[n < 2 ? n : 1] : "none");
	*out = (struct ns_value){ .val = x->out, .vlen = strlen(x->out) };
	return NS_UPDATE_STORE;
}

static void update_reruns_when_the_key_changed(void **state)
{
	struct fx *f = *state;
	struct interloper x = { .s = f->s, .what = 0 };

	/* Changed under it: FN runs again on the new value. */
	assert_code(ns_set(f->s, K("k"), "orig", 4, 0), 0);
	assert_code(ns_update(f->s, K("k"), upd_interloped, &x), 0);
	assert_int_equal(x.calls, 2);
	assert_string_equal(x.seen[0], "orig");
	assert_string_equal(x.seen[1], "other");
	assert_value(f->s, "k", "other+1");

	/* Deleted under it: the second run sees the absence. */
	x = (struct interloper){ .s = f->s, .what = 1 };
	assert_code(ns_update(f->s, K("k"), upd_interloped, &x), 0);
	assert_int_equal(x.calls, 2);
	assert_string_equal(x.seen[0], "other+1");
	assert_string_equal(x.seen[1], "");
	assert_value(f->s, "k", "none+1");

	/* Created under it while FN saw it absent: not overwritten blindly. */
	assert_code(ns_del(f->s, K("k")), 0);
	x = (struct interloper){ .s = f->s, .what = 2 };
	assert_code(ns_update(f->s, K("k"), upd_interloped, &x), 0);
	assert_int_equal(x.calls, 2);
	assert_string_equal(x.seen[0], "");
	assert_string_equal(x.seen[1], "other");
	assert_value(f->s, "k", "other+1");
	t_assert_consistent(f->c);
}

/* ---- bad input, read-only ----------------------------------------------- */

enum op {
	OP_SET_EX, OP_ADD, OP_REPLACE, OP_CAS, OP_GETSET, OP_EXPIRE, OP_PERSIST,
	OP_TOUCH, OP_INCR, OP_DECR, OP_UPDATE,
	OP_NWRITE, /* reads follow */
	OP_GET_EX = OP_NWRITE, OP_EXISTS, OP_STAT, OP_TTL,
	OP_N
};

static const char *const op_name[OP_N] = {
	"ns_set_ex", "ns_add", "ns_replace", "ns_cas", "ns_getset", "ns_expire",
	"ns_persist", "ns_touch", "ns_incr", "ns_decr", "ns_update",
	"ns_get_ex", "ns_exists", "ns_stat", "ns_ttl",
};

/* One call of OP on KEY with harmless arguments; VERSION for ns_cas. */
static int call_op(enum op op, ns_space *s, const void *key, size_t klen,
		   uint64_t version)
{
	struct ns_item_info i;
	char buf[64];
	size_t n;
	int64_t t;
	struct upd u = { .ret = NS_UPDATE_STORE, .val = "8", .vlen = 1 };

	switch (op) {
	case OP_SET_EX: return ns_set_ex(s, key, klen, "8", 1, 0, 0, NULL);
	case OP_ADD: return ns_add(s, key, klen, "8", 1, 0);
	case OP_REPLACE: return ns_replace(s, key, klen, "8", 1, 0);
	case OP_CAS: return ns_cas(s, key, klen, "8", 1, 0, version);
	case OP_GETSET: return ns_getset(s, key, klen, "8", 1, 0, buf, sizeof(buf), &n);
	case OP_EXPIRE: return ns_expire(s, key, klen, 1000);
	case OP_PERSIST: return ns_persist(s, key, klen);
	case OP_TOUCH: return ns_touch(s, key, klen);
	case OP_INCR: return ns_incr(s, key, klen, 1, 0, 0, &t);
	case OP_DECR: return ns_decr(s, key, klen, 1, 0, 0, &t);
	case OP_UPDATE: return ns_update(s, key, klen, upd_fn, &u);
	case OP_GET_EX: return ns_get_ex(s, key, klen, buf, sizeof(buf), &n, &i);
	case OP_EXISTS: return ns_exists(s, key, klen);
	case OP_STAT: return ns_stat(s, key, klen, &i);
	case OP_TTL: return ns_ttl(s, key, klen, &t);
	default: return 1;
	}
}

static void expect_op(enum op op, const char *what, int got, int want)
{
	if (got != want)
		fail_msg("%s with %s = %d (%s), want %d (%s)", op_name[op], what, got,
			 ns_strerror(got), want, ns_strerror(want));
}

static void bad_keys_are_refused(void **state)
{
	struct fx *f = *state;
	char big[NS_KEY_MAX + 2];
	uint64_t v;

	memset(big, 'k', sizeof(big));
	assert_code(ns_set_ex(f->s, K("k"), "5", 1, 0, 0, &v), 0);
	for (enum op op = 0; op < OP_N; op++) {
		expect_op(op, "NULL space", call_op(op, NULL, "k", 1, v), NS_EINVAL);
		expect_op(op, "NULL key", call_op(op, f->s, NULL, 1, v), NS_EINVAL);
		expect_op(op, "klen 0", call_op(op, f->s, "k", 0, v), NS_EINVAL);
		expect_op(op, "klen NS_KEY_MAX + 1",
			  call_op(op, f->s, big, NS_KEY_MAX + 1, v), NS_E2BIG);
	}
	/* None of that touched the key, nor stored a truncated one. */
	assert_value(f->s, "k", "5");
	assert_int_equal(version_of(f->s, "k"), v);
	for (size_t l = NS_KEY_MAX - 1; l <= NS_KEY_MAX + 1; l++)
		assert_code(ns_exists(f->s, big, l), l > NS_KEY_MAX ? NS_E2BIG
								: NS_ENOTFOUND);

	/* NS_KEY_MAX itself is a key for all of them. */
	for (enum op op = 0; op < OP_N; op++) {
		int r = call_op(op, f->s, big, NS_KEY_MAX, v);
		if (r != 0 && r != NS_ENOTFOUND && r != NS_EPRESENT && r != NS_ECHANGED)
			fail_msg("%s with a NS_KEY_MAX key = %d (%s)", op_name[op], r,
				 ns_strerror(r));
	}
	assert_code(ns_exists(f->s, big, NS_KEY_MAX), 0);

	/* NULL value with a length, as ns_set; NULL callback. */
	assert_code(ns_set_ex(f->s, K("n"), NULL, 1, 0, 0, NULL), NS_EINVAL);
	assert_code(ns_add(f->s, K("n"), NULL, 1, 0), NS_EINVAL);
	assert_code(ns_replace(f->s, K("k"), NULL, 1, 0), NS_EINVAL);
	assert_code(ns_cas(f->s, K("k"), NULL, 1, 0, v), NS_EINVAL);
	{
		char o[8];
		size_t ol;
		assert_code(ns_getset(f->s, K("k"), NULL, 1, 0, o, sizeof(o), &ol),
			    NS_EINVAL);
	}
	assert_code(ns_update(f->s, K("k"), NULL, NULL), NS_EINVAL);
	assert_absent(f->s, "n");
	assert_value(f->s, "k", "5");
	assert_int_equal(version_of(f->s, "k"), v);

	/* A value over the largest slab class, as ns_set. */
	size_t max = ns_max_value(f->c, 1);
	char *huge = calloc(1, max + 1);
	char old[8];
	size_t ol;
	assert_non_null(huge);
	assert_code(ns_set_ex(f->s, K("h"), huge, max + 1, 0, 0, NULL), NS_E2BIG);
	assert_code(ns_add(f->s, K("h"), huge, max + 1, 0), NS_E2BIG);
	assert_code(ns_replace(f->s, K("k"), huge, max + 1, 0), NS_E2BIG);
	assert_code(ns_cas(f->s, K("k"), huge, max + 1, 0, v), NS_E2BIG);
	assert_code(ns_getset(f->s, K("k"), huge, max + 1, 0, old, sizeof(old), &ol),
		    NS_E2BIG);
	assert_absent(f->s, "h");
	assert_value(f->s, "k", "5");
	assert_int_equal(version_of(f->s, "k"), v);
	/* ...while the largest value fits. */
	assert_code(ns_set_ex(f->s, K("h"), huge, max, 0, 0, NULL), 0);
	free(huge);
	t_assert_consistent(f->c);
}

static void rdonly_refuses_every_write(void **state)
{
	struct fx *f = *state;
	struct ns_attach_opts o = { .flags = NS_RDONLY };
	ns_cache *ro = NULL;
	ns_space *rs;
	struct ns_item_info i;
	uint64_t v;

	assert_code(ns_set_ex(f->s, K("k"), "5", 1, 60000, 3, &v), 0);
	assert_code(ns_attach(f->name, &o, &ro), 0);
	assert_code(ns_space_open(ro, "test:ops", &rs), 0);

	/* Every write, on the arguments that would succeed read-write. */
	for (enum op op = 0; op < OP_NWRITE; op++) {
		const char *key = op == OP_ADD ? "absent" : "k";
		expect_op(op, "a read-only attachment",
			  call_op(op, rs, key, strlen(key), v), NS_ERDONLY);
	}
	assert_code(ns_expire(rs, K("k"), 0), NS_ERDONLY);
	assert_value(f->s, "k", "5");
	i = stat_of(f->s, "k");
	assert_int_equal(i.version, v);
	assert_int_equal(i.expire_ms, f->t0 + 60000);
	assert_absent(f->s, "absent");

	/* Reads work, and see what the writer stored. */
	for (enum op op = OP_NWRITE; op < OP_N; op++)
		expect_op(op, "a read-only attachment", call_op(op, rs, K("k"), v), 0);
	memset(&i, 0, sizeof(i));
	assert_code(ns_stat(rs, K("k"), &i), 0);
	assert_int_equal(i.version, v);
	assert_int_equal(i.flags, 3);
	assert_int_equal(i.space_id, f->s->id);
	assert_code(ns_exists(rs, K("absent")), NS_ENOTFOUND);
	ns_detach(ro);
	t_assert_consistent(f->c);
}

/* ---- several processes on one key --------------------------------------- */

typedef int child_fn(ns_space *s, int idx, int fd);

/* A child's exit status for an unexpected result R: 50 + -R for our codes,
 * so the parent's message names the error. */
static int child_err(int r) { return r < 0 && r > -50 ? 50 - r : 1; }

/*
 * Fork N children that re-open the space and wait at a gate so they start
 * together; each runs FN and exits with its result (0 good).  RFD, if not
 * NULL, gets the read end of a pipe each child may write to.
 */
static void run_children(struct fx *f, int n, child_fn *fn, int *rfd)
{
	int gate[2], out[16][2];
	pid_t pid[16];

	assert_true(n <= 16);
	assert_int_equal(pipe(gate), 0);
	for (int i = 0; i < n; i++) {
		assert_int_equal(pipe(out[i]), 0);
		pid[i] = fork();
		assert_true(pid[i] >= 0);
		if (pid[i] == 0) {
			ns_space *s;
			char b;
			close(gate[1]);
			close(out[i][0]);
			if (ns_space_open(f->c, "test:ops", &s) != 0)
				_exit(100);
			if (read(gate[0], &b, 1) != 0) /* EOF: go */
				_exit(101);
			_exit(fn(s, i, out[i][1]));
		}
		close(out[i][1]);
		if (rfd)
			rfd[i] = out[i][0];
		else
			close(out[i][0]);
	}
	close(gate[0]);
	close(gate[1]);
	for (int i = 0; i < n; i++) {
		int st = t_wait(pid[i], CHILD_WAIT_MS);
		if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			fail_msg("child %d: %s %d%s%s", i,
				 st == -1 ? "timed out" :
				 WIFEXITED(st) ? "exit status" : "signal",
				 st == -1 ? 0 : WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
				 WIFEXITED(st) && WEXITSTATUS(st) > 50 ? ": " : "",
				 WIFEXITED(st) && WEXITSTATUS(st) > 50 &&
				 WEXITSTATUS(st) < 100 ? ns_strerror(50 - WEXITSTATUS(st)) : "");
	}
}

#define INCR_PROCS 4
#define INCR_EACH 10000

static int incr_child(ns_space *s, int idx, int fd)
{
	int64_t r, last = 0;
	(void)idx;
	(void)fd;

	for (int i = 0; i < INCR_EACH; i++) {
		/* The first incr of all creates the key holding 1. */
		int e = ns_incr(s, K("ctr"), 1, 1, 0, &r);
		if (e != 0)
			return child_err(e);
		if (r <= last || r > INCR_PROCS * INCR_EACH)
			return 2; /* others only add: our view only grows */
		last = r;
	}
	return 0;
}

static void incr_from_four_processes_is_exact(void **state)
{
	struct fx *f = *state;

	run_children(f, INCR_PROCS, incr_child, NULL);
	assert_value(f->s, "ctr", "40000");
	t_assert_consistent(f->c);
}

#define APP_PROCS 4
#define APP_EACH 500
#define APP_TOK 5 /* "Annn;" */

struct app {
	uint64_t calls; /* FN runs, to report how often updates collided */
	char tok[APP_TOK + 1];
	char buf[APP_PROCS * APP_EACH * APP_TOK];
};

static int app_fn(void *arg, const void *old, size_t oldlen,
		  const struct ns_item_info *info, struct ns_value *out)
{
	struct app *a = arg;
	(void)info;

	a->calls++;
	sched_yield(); /* widen the window for another writer to come in */
	if (old == NULL)
		oldlen = 0;
	if (oldlen + APP_TOK > sizeof(a->buf))
		return -4242;
	if (oldlen)
		memcpy(a->buf, old, oldlen);
	memcpy(a->buf + oldlen, a->tok, APP_TOK);
	*out = (struct ns_value){ .val = a->buf, .vlen = oldlen + APP_TOK };
	return NS_UPDATE_STORE;
}

static int app_child(ns_space *s, int idx, int fd)
{
	static struct app a;
	(void)fd;

	for (int i = 0; i < APP_EACH; i++) {
		snprintf(a.tok, sizeof(a.tok), "%c%03d;", 'A' + idx, i);
		int e = ns_update(s, K("log"), app_fn, &a);
		if (e != 0)
			return child_err(e);
	}
	return write(fd, &a.calls, sizeof(a.calls)) == (ssize_t)sizeof(a.calls) ? 0 : 3;
}

static void update_append_from_four_processes_loses_nothing(void **state)
{
	struct fx *f = *state;
	static char val[APP_PROCS * APP_EACH * APP_TOK + 16];
	int next[APP_PROCS] = { 0 }, rfd[APP_PROCS];
	uint64_t calls = 0, c;
	size_t n = 0;

	assert_true(ns_max_value(f->c, 3) >= sizeof(val));
	run_children(f, APP_PROCS, app_child, rfd);
	for (int i = 0; i < APP_PROCS; i++) {
		assert_int_equal(read(rfd[i], &c, sizeof(c)), sizeof(c));
		close(rfd[i]);
		calls += c;
	}
	print_message("# %d updates, %llu runs of FN\n", APP_PROCS * APP_EACH,
		      (unsigned long long)calls);
	assert_code(ns_get(f->s, K("log"), val, sizeof(val), &n), 0);
	assert_int_equal(n, APP_PROCS * APP_EACH * APP_TOK);
	/* Each process's tokens appear once each, in the order it made them. */
	for (size_t o = 0; o < n; o += APP_TOK) {
		int p = val[o] - 'A', i = atoi(val + o + 1);
		if (p < 0 || p >= APP_PROCS || val[o + APP_TOK - 1] != ';' ||
		    i != next[p])
			fail_msg("at %zu: \"%.*s\", expected token %d of process %d",
				 o, APP_TOK, val + o, p >= 0 && p < APP_PROCS ? next[p] : -1,
				 p);
		next[p]++;
	}
	for (int p = 0; p < APP_PROCS; p++)
		assert_int_equal(next[p], APP_EACH);
	t_assert_consistent(f->c);
}

#define ADD_PROCS 8
#define ADD_KEYS 200

static int add_child(ns_space *s, int idx, int fd)
{
	char key[16], val[16];
	uint8_t won[ADD_KEYS];

	snprintf(val, sizeof(val), "winner-%d", idx);
	for (int k = 0; k < ADD_KEYS; k++) {
		snprintf(key, sizeof(key), "race-%d", k);
		int r = ns_add(s, K(key), K(val), 0);
		if (r != 0 && r != NS_EPRESENT)
			return child_err(r);
		won[k] = r == 0;
	}
	return write(fd, won, sizeof(won)) == (ssize_t)sizeof(won) ? 0 : 2;
}

static void add_race_has_one_winner(void **state)
{
	struct fx *f = *state;
	int rfd[ADD_PROCS], winner[ADD_KEYS];
	uint8_t won[ADD_KEYS];

	for (int k = 0; k < ADD_KEYS; k++)
		winner[k] = -1;
	run_children(f, ADD_PROCS, add_child, rfd);
	for (int i = 0; i < ADD_PROCS; i++) {
		assert_int_equal(read(rfd[i], won, sizeof(won)), sizeof(won));
		close(rfd[i]);
		for (int k = 0; k < ADD_KEYS; k++) {
			if (!won[k])
				continue;
			if (winner[k] != -1)
				fail_msg("race-%d: both %d and %d got 0 from ns_add", k,
					 winner[k], i);
			winner[k] = i;
		}
	}
	for (int k = 0; k < ADD_KEYS; k++) {
		char key[16], want[16];
		if (winner[k] == -1)
			fail_msg("race-%d: nobody won", k);
		snprintf(key, sizeof(key), "race-%d", k);
		snprintf(want, sizeof(want), "winner-%d", winner[k]);
		assert_value(f->s, key, want); /* and nobody overwrote the winner */
	}
	t_assert_consistent(f->c);
}

#define CAS_PROCS 4
#define CAS_EACH 2000

static int cas_child(ns_space *s, int idx, int fd)
{
	char buf[32], nv[32];
	struct ns_item_info info;
	size_t n;
	uint64_t retries = 0;
	(void)idx;

	for (int i = 0; i < CAS_EACH; i++) {
		for (;;) {
			int e = ns_get_ex(s, K("cas"), buf, sizeof(buf) - 1, &n, &info);
			if (e != 0)
				return child_err(e);
			buf[n] = '\0';
			sched_yield(); /* let the others race us to the store */
			int l = snprintf(nv, sizeof(nv), "%lld", atoll(buf) + 1);
			int r = ns_cas(s, K("cas"), nv, (size_t)l, 0, info.version);
			if (r == 0)
				break;
			if (r != NS_ECHANGED)
				return child_err(r);
			retries++;
		}
	}
	return write(fd, &retries, sizeof(retries)) == (ssize_t)sizeof(retries) ? 0 : 3;
}

static void cas_loop_from_four_processes_is_exact(void **state)
{
	struct fx *f = *state;
	int rfd[CAS_PROCS];
	uint64_t retries = 0, r;

	assert_code(ns_set(f->s, K("cas"), "0", 1, 0), 0);
	run_children(f, CAS_PROCS, cas_child, rfd);
	for (int i = 0; i < CAS_PROCS; i++) {
		assert_int_equal(read(rfd[i], &r, sizeof(r)), sizeof(r));
		close(rfd[i]);
		retries += r;
	}
	print_message("# %d cas increments, %llu NS_ECHANGED retries\n",
		      CAS_PROCS * CAS_EACH, (unsigned long long)retries);
	assert_value(f->s, "cas", "8000");
	t_assert_consistent(f->c);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define TR(fn) cmocka_unit_test_setup_teardown(fn, setup_real_clock, teardown)
#define TP(fn) cmocka_unit_test_setup_teardown(fn, setup_procs, teardown)
	const struct CMUnitTest tests[] = {
		T(set_ex_flags_and_version_round_trip),
		T(every_store_makes_a_new_version),
		T(add_stores_only_when_absent),
		T(replace_stores_only_when_present),
		T(cas_stores_only_on_the_version_read),
		T(getset_returns_the_old_value),
		T(test_empty_value_into_null_buffer),
		T(item_info_fields),
		T(created_ms_has_second_resolution),
		TR(info_times_are_real_time),
		T(ttl_reports_time_left),
		T(expire_sets_and_zero_removes),
		T(persist_removes_expiry),
		T(touch_restarts_the_stored_ttl),
		T(long_ttl_is_kept_to_the_second),
		T(default_ttl_applies_to_ttl_zero_only),
		T(expired_key_is_absent_to_every_operation),
		T(incr_creates_adds_and_keeps_ttl),
		T(incr_rejects_non_numbers),
		T(incr_overflow_changes_nothing),
		T(decr_by_int64_min_is_exact),
		T(update_sees_and_stores),
		T(update_keep_delete_and_abort),
		T(update_reruns_when_the_key_changed),
		T(bad_keys_are_refused),
		T(rdonly_refuses_every_write),
		TP(incr_from_four_processes_is_exact),
		TP(update_append_from_four_processes_loses_nothing),
		TP(add_race_has_one_winner),
		TP(cas_loop_from_four_processes_is_exact),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
