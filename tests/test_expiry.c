/*
 * test_expiry.c - lazy expiry under the fake clock: an item with a TTL reads
 * until its expiry instant and is a miss from then on; TTL 0 never expires;
 * an overwrite starts a new TTL; deleting an expired key reports it absent;
 * and when memory runs out, expired items are evicted before live ones.
 */
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct fx {
	char name[64];
	ns_cache *c;
	ns_space *s;
	uint64_t t0; /* a fake "now" some seconds after creation */
};

static int setup_sized(void **state, size_t size, uint64_t items)
{
	struct fx *f = calloc(1, sizeof(*f));
	snprintf(f->name, sizeof(f->name), "%s", t_name("expiry"));
	f->c = t_create(f->name, size, items);
	assert_int_equal(ns_space_open(f->c, "test:expiry", &f->s), 0);
	f->t0 = f->c->hdr->created_ms + 60000;
	ns__test_clock(f->t0);
	*state = f;
	return 0;
}

static int setup(void **state) { return setup_sized(state, 8u << 20, 4096); }

static int teardown(void **state)
{
	struct fx *f = *state;
	ns__test_clock(0);
	ns_detach(f->c);
	ns_unlink(f->name);
	free(f);
	return 0;
}

static void set_ok(ns_space *s, const char *key, uint32_t seed, uint64_t ttl)
{
	char val[256];
	size_t vl = t_make_value(val, sizeof(val), key, seed, 100);
	int r = ns_set(s, key, strlen(key), val, vl, ttl);
	if (r != 0)
		fail_msg("set %s = %d (%s)", key, r, ns_strerror(r));
}

static int get_at(struct fx *f, const char *key, uint64_t at_ms)
{
	char buf[256];
	size_t vl = 0;
	ns__test_clock(at_ms);
	int r = ns_get(f->s, key, strlen(key), buf, sizeof(buf), &vl);
	if (r == 0 && t_check_value(buf, vl, key) != 0)
		fail_msg("get %s: bad value", key);
	return r;
}

static uint64_t reachable(ns_cache *c)
{
	struct ns_verify_report rep;
	assert_int_equal(ns__verify(c, &rep), 0);
	return rep.reachable;
}

static void test_ttl_item_is_a_miss_from_its_expiry_instant(void **state)
{
	struct fx *f = *state;
	uint64_t t0 = f->t0;

	set_ok(f->s, "k", 1, 1000);
	assert_int_equal(get_at(f, "k", t0), 0);
	assert_int_equal(get_at(f, "k", t0 + 500), 0);
	assert_int_equal(get_at(f, "k", t0 + 999), 0);
	assert_int_equal(get_at(f, "k", t0 + 1000), NS_ENOTFOUND);
	assert_int_equal(get_at(f, "k", t0 + 1001), NS_ENOTFOUND);
	assert_int_equal(get_at(f, "k", t0 + 3600 * 1000), NS_ENOTFOUND);
	/* Lazy: still in the index, only reads as a miss. */
	assert_int_equal(reachable(f->c), 1);
	t_assert_consistent(f->c);
}

static void test_ttl_zero_never_expires(void **state)
{
	struct fx *f = *state;
	uint64_t t0 = f->t0;

	set_ok(f->s, "forever", 1, 0);
	set_ok(f->s, "short", 2, 1);
	assert_int_equal(get_at(f, "short", t0 + 1), NS_ENOTFOUND);
	assert_int_equal(get_at(f, "forever", t0 + 1), 0);
	assert_int_equal(get_at(f, "forever", t0 + 86400ull * 1000), 0);
	assert_int_equal(get_at(f, "forever", t0 + 10 * 365 * 86400ull * 1000), 0);
	t_assert_consistent(f->c);
}

static void test_overwrite_resets_ttl(void **state)
{
	struct fx *f = *state;
	uint64_t t0 = f->t0;

	set_ok(f->s, "k", 1, 1000);
	ns__test_clock(t0 + 900);
	set_ok(f->s, "k", 2, 1000); /* now expires at t0 + 1900 */
	assert_int_equal(get_at(f, "k", t0 + 1000), 0);
	assert_int_equal(get_at(f, "k", t0 + 1899), 0);
	assert_int_equal(get_at(f, "k", t0 + 1900), NS_ENOTFOUND);

	/* An expired key set again reads again. */
	ns__test_clock(t0 + 2000);
	set_ok(f->s, "k", 3, 500);
	assert_int_equal(get_at(f, "k", t0 + 2499), 0);
	assert_int_equal(get_at(f, "k", t0 + 2500), NS_ENOTFOUND);

	/* An overwrite with TTL 0 removes the expiry. */
	ns__test_clock(t0 + 3000);
	set_ok(f->s, "k", 4, 100);
	ns__test_clock(t0 + 3050);
	set_ok(f->s, "k", 5, 0);
	assert_int_equal(get_at(f, "k", t0 + 3100), 0);
	assert_int_equal(get_at(f, "k", t0 + 1000000), 0);

	/* And a TTL on a key that had none adds one. */
	set_ok(f->s, "k", 6, 10);
	assert_int_equal(get_at(f, "k", t0 + 1000009), 0);
	assert_int_equal(get_at(f, "k", t0 + 1000010), NS_ENOTFOUND);
	t_assert_consistent(f->c);
}

static void test_del_of_expired_key_is_not_found(void **state)
{
	struct fx *f = *state;
	uint64_t t0 = f->t0;

	set_ok(f->s, "old", 1, 1000);
	set_ok(f->s, "live", 2, 1000);
	assert_int_equal(reachable(f->c), 2);
	ns__test_clock(t0 + 999);
	assert_int_equal(ns_del(f->s, "live", 4), 0);
	ns__test_clock(t0 + 1000);
	assert_int_equal(ns_del(f->s, "old", 3), NS_ENOTFOUND);
	/* The expired item was taken out of the index all the same. */
	assert_int_equal(reachable(f->c), 0);
	assert_int_equal(ns_del(f->s, "old", 3), NS_ENOTFOUND);
	t_assert_consistent(f->c);
}

/* ---- expired items go first --------------------------------------------- */

#define LIVE_KEYS 200

/*
 * A small segment: LIVE_KEYS keys with no TTL, then (a second later)
 * expiring keys until every chunk of the class is used, then the clock
 * passes their expiry and new keys are written.  Every new set must succeed
 * by evicting.  The live keys have the oldest access hints of all, so a
 * policy that looked at the hints alone would take them first; expired
 * items must go first instead.  An eighth as many new keys as expired ones
 * keeps expired items the large majority of any eviction sample (a live key
 * could go only if a sample of 8 held no expired item: about 0.13^8).
 */
static int setup_small(void **state) { return setup_sized(state, 8u << 20, 65536); }

static void test_expired_items_are_evicted_before_live_ones(void **state)
{
	struct fx *f = *state;
	ns_cache *c = f->c;
	char key[32];
	uint64_t t0 = f->t0;

	for (int i = 0; i < LIVE_KEYS; i++) {
		snprintf(key, sizeof(key), "live-%d", i);
		set_ok(f->s, key, (uint32_t)i, 0);
	}
	ns_off_t any = 0;
	{
		/* The class every item here uses (they all have one size). */
		uint64_t h = ns__hash(c->hdr->hash_seed, f->s->id, "live-0", 6);
		struct ns_bucket_shm *bk = &c->buckets[h & c->mask];
		for (int i = 0; i < NS_BUCKET_SLOTS && !any; i++)
			any = bk->slot[i] & NS_SLOT_OFF_MASK;
	}
	int cls = ns__class_of(c, any);
	assert_true(cls >= 0);
	uint64_t capacity = (uint64_t)c->npages * c->classes[cls].per_page;
	uint64_t fill = capacity - LIVE_KEYS;
	assert_true(fill > 10 * LIVE_KEYS);

	int err = 0;
	struct ns_thr *t = ns__thr(c, &err);
	assert_non_null(t);
	ns__test_clock(t0 + 1000);
	for (uint64_t i = 0; i < fill; i++) {
		snprintf(key, sizeof(key), "exp-%llu", (unsigned long long)i);
		set_ok(f->s, key, (uint32_t)i, 5000);
	}
	/* Full: every page belongs to the class and is carved to the end,
	 * and nothing was evicted to get there. */
	assert_int_equal(c->hdr->next_page, c->npages);
	assert_int_equal(c->classes[cls].npages, c->npages);
	assert_int_equal(c->classes[cls].evictions, 0);
	assert_int_equal(reachable(c), capacity);

	/* Expire the fill (at t0 + 6000); the live keys stay unread, the
	 * coldest items by their hints. */
	uint64_t t1 = t0 + 10000;
	ns__test_clock(t1);
	uint64_t nnew = fill / 8;
	for (uint64_t i = 0; i < nnew; i++) {
		snprintf(key, sizeof(key), "new-%llu", (unsigned long long)i);
		set_ok(f->s, key, (uint32_t)i, 0);
	}
	/* The victims were expired items: counted as expirations, and
	 * not one as an eviction (issue 7 counts evictions by cause). */
	struct ns_space_info si;
	assert_int_equal(ns_space_info(f->s, &si), 0);
	assert_true(si.expirations >= nnew - NS_SLOT_CACHE);
	assert_int_equal(c->classes[cls].evictions, 0);
	assert_int_equal(c->hdr->next_page, c->npages);

	int lost = 0;
	for (int i = 0; i < LIVE_KEYS; i++) {
		snprintf(key, sizeof(key), "live-%d", i);
		if (get_at(f, key, t1) != 0)
			lost++;
	}
	if (lost)
		fail_msg("%d of %d live keys evicted while %llu expired items were there",
			 lost, LIVE_KEYS, (unsigned long long)fill);
	int new_lost = 0;
	for (uint64_t i = 0; i < nnew; i++) {
		snprintf(key, sizeof(key), "new-%llu", (unsigned long long)i);
		if (get_at(f, key, t1) != 0)
			new_lost++;
	}
	print_message("# capacity %llu, %llu expired, %llu new: %llu expirations, "
		      "%d new keys lost\n", (unsigned long long)capacity,
		      (unsigned long long)fill, (unsigned long long)nnew,
		      (unsigned long long)si.expirations, new_lost);
	assert_true(new_lost * 100 < (int)nnew); /* the new keys stay too */
	t_assert_consistent(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ttl_item_is_a_miss_from_its_expiry_instant, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ttl_zero_never_expires, setup, teardown),
		cmocka_unit_test_setup_teardown(test_overwrite_resets_ttl, setup, teardown),
		cmocka_unit_test_setup_teardown(test_del_of_expired_key_is_not_found, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expired_items_are_evicted_before_live_ones, setup_small, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
