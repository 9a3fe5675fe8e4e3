/*
 * test_index.c - the hash index: overflow chains keep every key until the
 * overflow pool is used up, then a full chain gives up its coldest item;
 * tags never confuse two keys; deletes; namespaces; and a get writes neither
 * the bucket line nor (within a second) the item.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

#define SEG_SIZE (8u << 20)

struct fx {
	char name[64];
	ns_cache *c;
	ns_space *s;
};

static int setup_items(void **state, uint64_t items)
{
	struct fx *f = calloc(1, sizeof(*f));
	snprintf(f->name, sizeof(f->name), "%s", t_name("index"));
	f->c = t_create(f->name, SEG_SIZE, items);
	assert_int_equal(ns_space_open(f->c, "test:index", &f->s), 0);
	*state = f;
	return 0;
}

/* 64 expected items: the smallest index, 64 buckets. */
static int setup_tiny(void **state) { return setup_items(state, 64); }
static int setup(void **state) { return setup_items(state, 4096); }

static int teardown(void **state)
{
	struct fx *f = *state;
	ns__test_clock(0);
	ns_detach(f->c);
	ns_unlink(f->name);
	free(f);
	return 0;
}

static uint64_t key_hash(ns_space *s, const char *key)
{
	return ns__hash(s->c->hdr->hash_seed, s->id, key, strlen(key));
}

static ns_off_t find_item(ns_space *s, const char *key)
{
	return t_find_item(s, key, strlen(key));
}

static int chain_len(ns_cache *c, uint64_t b)
{
	struct ns_bucket_shm *bk = &c->buckets[b];
	int n = 0, err = 0;
	while (bk && n <= NS_CHAIN_MAX) {
		n++;
		bk = ns__chain_next(c, bk, &err);
	}
	assert_int_equal(err, 0);
	return n;
}

static void set_ok(ns_space *s, const char *key, uint32_t seed)
{
	char val[96];
	size_t vl = t_make_value(val, sizeof(val), key, seed, 20);
	int r = ns_set(s, key, strlen(key), val, vl, 0);
	if (r != 0)
		fail_msg("set %s = %d (%s)", key, r, ns_strerror(r));
}

static int get_check(ns_space *s, const char *key)
{
	char buf[128];
	size_t vl = 0;
	int r = ns_get(s, key, strlen(key), buf, sizeof(buf), &vl);
	if (r == 0 && t_check_value(buf, vl, key) != 0)
		fail_msg("get %s: wrong value %.*s", key, (int)vl, buf);
	return r;
}

/* ---- overflow chains ---------------------------------------------------- */

#define OV_KEYS 2000
#define T0_MS(c) ((c)->hdr->created_ms + 10000)

/*
 * Keys are written one fake second apart, so every item has its own access
 * hint and "coldest" is well defined: the key written first.  While the
 * overflow pool lasts, no key may be lost; afterwards each set into a full
 * chain replaces the coldest item of that chain, so a bucket keeps exactly
 * the last keys written to it that its chain has room for.
 */
static void test_overflow_chains_keep_keys_until_pool_exhausted(void **state)
{
	struct fx *f = *state;
	ns_cache *c = f->c;
	uint64_t nb = c->mask + 1, used_over = 0;
	int *cnt = calloc(nb, sizeof(int));
	int *bucket_of = calloc(OV_KEYS, sizeof(int));
	char key[32];
	int n1 = -1;

	assert_int_equal(nb, 64);
	assert_true(c->nover > 0);
	for (int i = 0; i < OV_KEYS; i++) {
		snprintf(key, sizeof(key), "ov-%d", i);
		uint64_t b = key_hash(f->s, key) & c->mask;
		bucket_of[i] = (int)b;
		/* Does this key need an overflow bucket the pool no longer has? */
		int k = cnt[b] + 1;
		if (n1 < 0 && k > NS_BUCKET_SLOTS && (k - 1) % NS_BUCKET_SLOTS == 0 &&
		    used_over + 1 > c->nover)
			n1 = i;
		if (n1 < 0 && k > NS_BUCKET_SLOTS && (k - 1) % NS_BUCKET_SLOTS == 0)
			used_over++;
		cnt[b]++;
		if (n1 == i || (n1 < 0 && i % 100 == 0)) {
			/* Before the first forced replacement (and every 100
			 * keys until then): no key written so far is lost. */
			for (int j = 0; j < i; j++) {
				snprintf(key, sizeof(key), "ov-%d", j);
				if (find_item(f->s, key) == 0)
					fail_msg("key %d of %d lost with %llu of %llu overflow "
						 "buckets in use", j, i,
						 (unsigned long long)used_over,
						 (unsigned long long)c->nover);
			}
			snprintf(key, sizeof(key), "ov-%d", i);
		}
		if (n1 == i) {
			struct ns_verify_report rep;
			int err = 0;
			struct ns_thr *t = ns__thr(c, &err);
			assert_int_equal(ns__verify(c, &rep), 0);
			assert_int_equal(rep.reachable, (uint64_t)i);
			assert_int_equal(t->slot->evictions, 0);
		}
		ns__test_clock(T0_MS(c) + (uint64_t)i * 1000);
		set_ok(f->s, key, (uint32_t)i);
	}
	if (n1 < 0)
		fail_msg("%d keys never exhausted %llu overflow buckets", OV_KEYS,
			 (unsigned long long)c->nover);
	print_message("# %d keys stored before the %llu overflow buckets ran out\n",
		      n1, (unsigned long long)c->nover);

	/* Every overflow bucket is claimed, linked, and owned by its chain's
	 * primary (ns__verify checks links and owners). */
	uint64_t claimed = 0;
	for (uint64_t i = 0; i < c->nover; i++)
		claimed += c->over[i].lock != 0;
	assert_int_equal(claimed, c->nover);
	t_assert_consistent(c);

	/* Which keys survive: per bucket, the last cap(b) written to it. */
	int hits = 0, misses = 0, expect_hits = 0;
	int *seen = calloc(nb, sizeof(int));
	for (uint64_t b = 0; b < nb; b++) {
		int cap = chain_len(c, b) * NS_BUCKET_SLOTS;
		expect_hits += cnt[b] < cap ? cnt[b] : cap;
	}
	for (int i = OV_KEYS - 1; i >= 0; i--) {
		int b = bucket_of[i];
		int cap = chain_len(c, (uint64_t)b) * NS_BUCKET_SLOTS;
		snprintf(key, sizeof(key), "ov-%d", i);
		/* Read at the key's own write time: the hint stays as it was. */
		ns__test_clock(T0_MS(c) + (uint64_t)i * 1000);
		int r = get_check(f->s, key);
		bool want = seen[b]++ < cap;
		if (r == 0)
			hits++;
		else if (r == NS_ENOTFOUND)
			misses++;
		else
			fail_msg("get %s = %d", key, r);
		if (want != (r == 0))
			fail_msg("key %d in bucket %d (chain of %d slots, %d keys): %s", i, b,
				 cap, cnt[b], want ? "lost though among the newest"
						   : "kept though older than the chain holds");
	}
	struct ns_verify_report rep;
	assert_int_equal(ns__verify(c, &rep), 0);
	assert_int_equal(hits, expect_hits);
	assert_int_equal(rep.reachable, (uint64_t)hits);
	assert_true(hits <= (int)((nb + c->nover) * NS_BUCKET_SLOTS));
	/* The misses are the replacements counted as evictions. */
	assert_int_equal(hits + misses, OV_KEYS);
	int err = 0;
	struct ns_thr *t = ns__thr(c, &err);
	assert_non_null(t);
	assert_int_equal(t->slot->evictions, (uint64_t)misses);
	assert_true(misses > 0);
	/* ...and named for their cause: nothing else evicted. */
	assert_int_equal(c->hdr->index_evictions, (uint64_t)misses);
	for (uint32_t k = 0; k < c->nclasses; k++)
		assert_int_equal(c->classes[k].evictions, 0);
	free(seen);
	free(cnt);
	free(bucket_of);
	t_assert_consistent(c);
}

/* ---- tags --------------------------------------------------------------- */

/* Two keys of one bucket with one tag: only the key compare tells them apart. */
static void find_tag_twins(ns_space *s, char *a, char *b, size_t cap)
{
	ns_cache *c = s->c;
	unsigned bbits = (unsigned)__builtin_popcountll(c->mask);
	size_t n = (size_t)1 << (16 + bbits);
	uint32_t *seen = calloc(n, sizeof(uint32_t));
	char key[32];

	assert_non_null(seen);
	for (uint32_t i = 1;; i++) {
		if (i > 50u * 1000u * 1000u)
			fail_msg("no two keys share bucket and tag");
		snprintf(key, sizeof(key), "tag-%u", i);
		uint64_t h = key_hash(s, key);
		size_t id = (size_t)((h >> 48) << bbits | (h & c->mask));
		if (seen[id]) {
			snprintf(a, cap, "tag-%u", seen[id]);
			snprintf(b, cap, "%s", key);
			break;
		}
		seen[id] = i;
	}
	free(seen);
}

static void test_keys_with_same_bucket_and_tag_both_readable(void **state)
{
	struct fx *f = *state;
	ns_cache *c = f->c;
	char a[32], b[32], other[32];

	find_tag_twins(f->s, a, b, sizeof(a));
	uint64_t ha = key_hash(f->s, a), hb = key_hash(f->s, b);
	assert_string_not_equal(a, b);
	assert_true((ha & c->mask) == (hb & c->mask) && (ha >> 48) == (hb >> 48));

	/* A third key in the same bucket with another tag. */
	for (uint32_t i = 0;; i++) {
		snprintf(other, sizeof(other), "oth-%u", i);
		uint64_t h = key_hash(f->s, other);
		if ((h & c->mask) == (ha & c->mask) && (h >> 48) != (ha >> 48))
			break;
	}

	/* A stored, B absent: B's lookup finds A's tag and must not match. */
	set_ok(f->s, a, 1);
	assert_int_equal(get_check(f->s, b), NS_ENOTFOUND);
	assert_int_equal(ns_del(f->s, b, strlen(b)), NS_ENOTFOUND);
	assert_int_equal(get_check(f->s, a), 0);

	set_ok(f->s, b, 2);
	set_ok(f->s, other, 3);
	assert_int_equal(get_check(f->s, a), 0);
	assert_int_equal(get_check(f->s, b), 0);
	assert_int_equal(get_check(f->s, other), 0);
	assert_true(find_item(f->s, a) != find_item(f->s, b));

	/* Overwriting one leaves the other. */
	set_ok(f->s, b, 4);
	assert_int_equal(get_check(f->s, a), 0);
	assert_int_equal(get_check(f->s, b), 0);
	assert_int_equal(ns_del(f->s, a, strlen(a)), 0);
	assert_int_equal(get_check(f->s, a), NS_ENOTFOUND);
	assert_int_equal(get_check(f->s, b), 0);
	assert_int_equal(get_check(f->s, other), 0);
	t_assert_consistent(c);
}

/* ---- misses, deletes, namespaces ---------------------------------------- */

static void test_get_missing_key_is_a_miss(void **state)
{
	struct fx *f = *state;
	char buf[16] = "untouched";
	size_t vl = 12345;

	assert_int_equal(ns_get(f->s, "nope", 4, buf, sizeof(buf), &vl), NS_ENOTFOUND);
	assert_string_equal(buf, "untouched");
	set_ok(f->s, "yes", 1);
	assert_int_equal(get_check(f->s, "yes"), 0);
	assert_int_equal(ns_get(f->s, "nope", 4, buf, sizeof(buf), &vl), NS_ENOTFOUND);
	assert_int_equal(ns_get(f->s, "ye", 2, buf, sizeof(buf), &vl), NS_ENOTFOUND);
	assert_int_equal(ns_get(f->s, "yess", 4, buf, sizeof(buf), &vl), NS_ENOTFOUND);
	t_assert_consistent(f->c);
}

static void test_del_then_get_is_a_miss(void **state)
{
	struct fx *f = *state;
	struct ns_verify_report rep;

	set_ok(f->s, "gone", 1);
	set_ok(f->s, "kept", 2);
	assert_int_equal(get_check(f->s, "gone"), 0);
	assert_int_equal(ns__verify(f->c, &rep), 0);
	assert_int_equal(rep.reachable, 2);
	assert_int_equal(ns_del(f->s, "gone", 4), 0);
	assert_int_equal(get_check(f->s, "gone"), NS_ENOTFOUND);
	assert_int_equal(ns_del(f->s, "gone", 4), NS_ENOTFOUND);
	assert_int_equal(get_check(f->s, "kept"), 0);
	assert_int_equal(find_item(f->s, "gone"), 0);
	assert_int_equal(ns__verify(f->c, &rep), 0);
	assert_int_equal(rep.reachable, 1);
	/* And it can come back. */
	set_ok(f->s, "gone", 3);
	assert_int_equal(get_check(f->s, "gone"), 0);
	t_assert_consistent(f->c);
}

static void test_same_key_in_two_namespaces_is_two_items(void **state)
{
	struct fx *f = *state;
	ns_space *a, *b;
	char buf[32];
	size_t vl;

	assert_int_equal(ns_space_open(f->c, "app:one", &a), 0);
	assert_int_equal(ns_space_open(f->c, "app:two", &b), 0);
	assert_true(a->id != b->id);
	assert_int_equal(ns_set(a, "k", 1, "value-a", 7, 0), 0);
	assert_int_equal(ns_get(b, "k", 1, buf, sizeof(buf), &vl), NS_ENOTFOUND);
	assert_int_equal(ns_set(b, "k", 1, "value-bb", 8, 0), 0);
	assert_int_equal(ns_get(a, "k", 1, buf, sizeof(buf), &vl), 0);
	assert_int_equal(vl, 7);
	assert_memory_equal(buf, "value-a", 7);
	assert_int_equal(ns_get(b, "k", 1, buf, sizeof(buf), &vl), 0);
	assert_int_equal(vl, 8);
	assert_memory_equal(buf, "value-bb", 8);
	assert_true(find_item(a, "k") != 0 && find_item(b, "k") != 0);
	assert_true(find_item(a, "k") != find_item(b, "k"));

	assert_int_equal(ns_del(a, "k", 1), 0);
	assert_int_equal(ns_get(a, "k", 1, buf, sizeof(buf), &vl), NS_ENOTFOUND);
	assert_int_equal(ns_get(b, "k", 1, buf, sizeof(buf), &vl), 0);
	assert_memory_equal(buf, "value-bb", 8);
	t_assert_consistent(f->c);
}

/* ---- what a get writes -------------------------------------------------- */

/*
 * In a child, map the 4 KiB pages of KEY's bucket and item read-only and
 * run GETS gets of KEY.  Returns the child's wait status: exit 0 when no
 * get wrote either page, SIGSEGV when one did.
 */
static int gets_in_readonly_child(struct fx *f, const char *key, int gets,
				  uint64_t clock_ms)
{
	ns_cache *c = f->c;
	uint64_t b = key_hash(f->s, key) & c->mask;
	ns_off_t off = find_item(f->s, key);
	long pg = sysconf(_SC_PAGESIZE);

	assert_true(off != 0);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int err = 0;
		signal(SIGSEGV, SIG_DFL); /* not cmocka's handler */
		if (ns__thr(c, &err) == NULL) /* claim a slot before protecting */
			_exit(3);
		ns__test_clock(clock_ms);
		uintptr_t bp = (uintptr_t)&c->buckets[b] & ~(uintptr_t)(pg - 1);
		uintptr_t ip = (uintptr_t)(c->base + off) & ~(uintptr_t)(pg - 1);
		if (mprotect((void *)bp, (size_t)pg, PROT_READ) != 0 ||
		    mprotect((void *)ip, (size_t)pg, PROT_READ) != 0)
			_exit(4);
		for (int i = 0; i < gets; i++) {
			char buf[128];
			size_t vl;
			if (ns_get(f->s, key, strlen(key), buf, sizeof(buf), &vl) != 0)
				_exit(5);
		}
		_exit(0);
	}
	return t_wait(pid, 10000);
}

static void test_get_writes_no_bucket_line(void **state)
{
	struct fx *f = *state;
	ns_cache *c = f->c;
	uint64_t t0 = T0_MS(c);
	unsigned char before[sizeof(struct ns_bucket_shm)];

	ns__test_clock(t0);
	set_ok(f->s, "hot", 1);
	set_ok(f->s, "neighbour", 2);
	uint64_t b = key_hash(f->s, "hot") & c->mask;
	struct ns_bucket_shm *bk = &c->buckets[b];
	assert_int_equal(sizeof(*bk), 64);
	memcpy(before, bk, sizeof(before));
	for (int i = 0; i < 1000; i++) {
		/* Across several fake seconds, so the item's hint is written. */
		ns__test_clock(t0 + (uint64_t)i * 10);
		assert_int_equal(get_check(f->s, "hot"), 0);
		assert_int_equal(get_check(f->s, "nothere"), NS_ENOTFOUND);
	}
	assert_memory_equal(before, bk, sizeof(before));

	/* No store at all to the bucket's page or the item's page within one
	 * second: a write there kills the child with SIGSEGV. */
	int st = gets_in_readonly_child(f, "hot", 1000, t0 + 9990);
	if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
		fail_msg("child doing gets with read-only bucket/item pages: status %#x "
			 "(signal %d)", st, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	/* The same child one second later must write the hint, and trap: this
	 * shows the read-only check above can fail. */
	st = gets_in_readonly_child(f, "hot", 1, t0 + 11000);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
	t_assert_consistent(c);
}

static void test_get_writes_atime_at_most_once_per_second(void **state)
{
	struct fx *f = *state;
	ns_cache *c = f->c;
	uint64_t t0 = T0_MS(c);

	ns__test_clock(t0);
	set_ok(f->s, "k", 1);
	struct ns_item_shm *it = ns__item(c, find_item(f->s, "k"));
	assert_non_null(it);
	uint32_t a0 = it->atime;
	assert_int_equal(a0, (uint32_t)((t0 - c->hdr->created_ms) / 1000));

	ns__test_clock(t0 + 999);
	assert_int_equal(get_check(f->s, "k"), 0);
	assert_int_equal(it->atime, a0);
	ns__test_clock(t0 + 1000);
	assert_int_equal(get_check(f->s, "k"), 0);
	assert_int_equal(it->atime, a0 + 1);
	for (int i = 0; i < 100; i++) {
		ns__test_clock(t0 + 1000 + (uint64_t)i * 9);
		assert_int_equal(get_check(f->s, "k"), 0);
		assert_int_equal(it->atime, a0 + 1);
	}
	ns__test_clock(t0 + 5500);
	assert_int_equal(get_check(f->s, "k"), 0);
	assert_int_equal(it->atime, a0 + 5);
	t_assert_consistent(c);
}

/* A bucket lock word naming a slot that no live process holds, and that
 * the slot's intent does not name (only a damaged segment has one: the
 * fuzzer made it), was never broken: every write to the bucket waited
 * NS_LOCK_TIMEOUT_MS and failed with NS_EBUSY.  It must be broken at once. */
static void test_stale_lock_of_a_free_slot_is_broken(void **state)
{
	struct fx *f = *state;
	ns_cache *c = f->c;
	uint64_t b = key_hash(f->s, "stale") & c->mask;
	uint32_t other = c->nslots - 1;
	uint64_t t0;

	assert_int_equal(c->slots[other].state, NS_SLOT_FREE);
	ns_store_relaxed(&c->buckets[b].lock, other + 1);
	t0 = t_now_ns();
	set_ok(f->s, "stale", 1);
	assert_true(t_now_ns() - t0 < NS_LOCK_TIMEOUT_MS * 1000000ull / 4);
	assert_int_equal(get_check(f->s, "stale"), 0);
	assert_int_equal(c->buckets[b].lock, 0);
	/* The delete path takes the same lock. */
	ns_store_relaxed(&c->buckets[b].lock, other + 1);
	assert_int_equal(ns_del(f->s, "stale", 5), 0);
	assert_int_equal(c->buckets[b].lock, 0);
	t_assert_consistent(c);
}

/* A lock word naming the caller's own slot made the caller abort ("taken
 * twice"): a process dying for what a segment holds.  Our slot is ours
 * while we live and no path nests a lock, so the word is a leftover. */
static void test_stale_lock_naming_own_slot_is_taken(void **state)
{
	struct fx *f = *state;
	ns_cache *c = f->c;
	uint64_t b = key_hash(f->s, "mine") & c->mask;
	int err = 0;
	struct ns_thr *t = ns__thr(c, &err);

	assert_non_null(t);
	ns_store_relaxed(&c->buckets[b].lock, t->idx + 1);
	set_ok(f->s, "mine", 2);
	assert_int_equal(get_check(f->s, "mine"), 0);
	assert_int_equal(c->buckets[b].lock, 0);
	t_assert_consistent(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_overflow_chains_keep_keys_until_pool_exhausted, setup_tiny, teardown),
		cmocka_unit_test_setup_teardown(test_keys_with_same_bucket_and_tag_both_readable, setup_tiny, teardown),
		cmocka_unit_test_setup_teardown(test_get_missing_key_is_a_miss, setup, teardown),
		cmocka_unit_test_setup_teardown(test_del_then_get_is_a_miss, setup, teardown),
		cmocka_unit_test_setup_teardown(test_same_key_in_two_namespaces_is_two_items, setup, teardown),
		cmocka_unit_test_setup_teardown(test_get_writes_no_bucket_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_get_writes_atime_at_most_once_per_second, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_lock_of_a_free_slot_is_broken, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_lock_naming_own_slot_is_taken, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
