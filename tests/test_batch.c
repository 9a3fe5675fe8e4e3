/*
 * test_batch.c - ns_mget, ns_mset, ns_mdel: each key of a batch gets the
 * result its single-key call would, one bad key does not spoil the rest,
 * the return value counts the successes, a key twice in a batch acts like
 * two calls in order, and batches agree with ns_get on a random mix, also
 * while other processes write.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

#define JUNK_ERR 12345 /* what err holds before the call: must be written */

struct fx {
	char name[64];
	ns_cache *c;
	ns_space *a, *b;
	uint64_t t0;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	snprintf(f->name, sizeof(f->name), "%s", t_name("batch"));
	f->c = t_create(f->name, 32u << 20, 20000);
	assert_int_equal(ns_space_open(f->c, "test:a", &f->a), 0);
	assert_int_equal(ns_space_open(f->c, "test:b", &f->b), 0);
	f->t0 = f->c->hdr->created_ms + 60000;
	ns__test_clock(f->t0);
	*state = f;
	return 0;
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

/* The return value is the number of keys whose err is 0. */
static void assert_count(int r, const struct ns_kv *kv, size_t n)
{
	int ok = 0;
	for (size_t i = 0; i < n; i++)
		ok += kv[i].err == 0;
	if (r != ok)
		fail_msg("batch returned %d, %d keys have err 0", r, ok);
}

static void set_ok(ns_space *s, const char *key, const void *val, size_t vl)
{
	int r = ns_set(s, key, strlen(key), val, vl, 0);
	if (r != 0)
		fail_msg("set %s = %d (%s)", key, r, ns_strerror(r));
}

/* ---- the plain case ----------------------------------------------------- */

#define NKEYS 100

struct batch {
	char key[NKEYS][32];
	char val[NKEYS][512];
	size_t vlen[NKEYS];
	char buf[NKEYS][512];
	struct ns_kv kv[NKEYS];
};

static void test_mset_then_mget_100(void **state)
{
	struct fx *f = *state;
	struct batch *b = calloc(1, sizeof(*b));
	int r;

	for (int i = 0; i < NKEYS; i++) {
		snprintf(b->key[i], 32, "key:%03d", i);
		b->vlen[i] = t_make_value(b->val[i], 512, b->key[i], (uint32_t)i,
					  (size_t)(i * 4));
		b->kv[i] = (struct ns_kv){ .key = b->key[i], .klen = strlen(b->key[i]),
					   .val = b->val[i], .vlen = b->vlen[i],
					   .flags = 0x1000u + (uint32_t)i * 7, .err = JUNK_ERR };
	}
	r = ns_mset(f->a, b->kv, NKEYS);
	assert_int_equal(r, NKEYS);
	assert_count(r, b->kv, NKEYS);

	/* Every key reads back alone. */
	for (int i = 0; i < NKEYS; i++) {
		char buf[512];
		size_t vl = 0;
		assert_int_equal(ns_get(f->a, b->key[i], strlen(b->key[i]), buf,
					sizeof(buf), &vl), 0);
		assert_int_equal(vl, b->vlen[i]);
		assert_memory_equal(buf, b->val[i], vl);
		/* Not in the other namespace. */
		assert_int_equal(ns_get(f->b, b->key[i], strlen(b->key[i]), buf,
					sizeof(buf), &vl), NS_ENOTFOUND);
	}

	/* And together, with their flags. */
	for (int i = 0; i < NKEYS; i++)
		b->kv[i] = (struct ns_kv){ .key = b->key[i], .klen = strlen(b->key[i]),
					   .buf = b->buf[i], .cap = 512,
					   .vlen = 999999, .flags = 0xdeadbeef,
					   .err = JUNK_ERR };
	r = ns_mget(f->a, b->kv, NKEYS);
	assert_int_equal(r, NKEYS);
	assert_count(r, b->kv, NKEYS);
	for (int i = 0; i < NKEYS; i++) {
		struct ns_kv *k = &b->kv[i];
		assert_int_equal(k->err, 0);
		assert_int_equal(k->vlen, b->vlen[i]);
		assert_memory_equal(b->buf[i], b->val[i], b->vlen[i]);
		assert_int_equal(k->flags, 0x1000u + (uint32_t)i * 7);
		/* Inputs stay as they were. */
		assert_ptr_equal(k->key, b->key[i]);
		assert_ptr_equal(k->buf, b->buf[i]);
		assert_int_equal(k->cap, 512);
	}

	/* B, empty, misses them all. */
	for (int i = 0; i < NKEYS; i++)
		b->kv[i].err = JUNK_ERR;
	assert_int_equal(ns_mget(f->b, b->kv, NKEYS), 0);
	for (int i = 0; i < NKEYS; i++)
		assert_int_equal(b->kv[i].err, NS_ENOTFOUND);
	t_assert_consistent(f->c);
	free(b);
}

/* ---- per-key errors ----------------------------------------------------- */

static void test_mget_per_key_errors(void **state)
{
	struct fx *f = *state;
	char v0[64], v1[64], v2[64], long_key[NS_KEY_MAX + 1];
	char b0[64], b1[64], b2[64], b5[64];
	size_t l0 = t_make_value(v0, sizeof(v0), "k0", 0, 20);
	size_t l1 = t_make_value(v1, sizeof(v1), "k1", 1, 30);
	size_t l2 = t_make_value(v2, sizeof(v2), "k2", 2, 10);

	set_ok(f->a, "k0", v0, l0);
	set_ok(f->a, "k1", v1, l1);
	set_ok(f->a, "k2", v2, l2);
	memset(long_key, 'x', sizeof(long_key));
	memset(b1, '#', sizeof(b1));

	struct ns_kv kv[] = {
		{ .key = "k0", .klen = 2, .buf = b0, .cap = sizeof(b0) },
		{ .key = "missing", .klen = 7, .buf = b5, .cap = sizeof(b5) },
		{ .key = "k1", .klen = 2, .buf = b1, .cap = 3 },         /* too small */
		{ .key = long_key, .klen = NS_KEY_MAX + 1, .buf = b5, .cap = sizeof(b5) },
		{ .key = "k2", .klen = 2, .buf = NULL, .cap = 0 },       /* length only */
		{ .key = "k1", .klen = 2, .buf = b2, .cap = sizeof(b2) },
	};
	size_t n = sizeof(kv) / sizeof(kv[0]);
	for (size_t i = 0; i < n; i++)
		kv[i].err = JUNK_ERR;
	int r = ns_mget(f->a, kv, n);
	assert_int_equal(r, 2);
	assert_count(r, kv, n);
	assert_int_equal(kv[0].err, 0);
	assert_int_equal(kv[0].vlen, l0);
	assert_memory_equal(b0, v0, l0);
	assert_int_equal(kv[1].err, NS_ENOTFOUND);
	assert_int_equal(kv[2].err, NS_ERANGE);
	assert_int_equal(kv[2].vlen, l1); /* the length needed */
	for (size_t i = 0; i < sizeof(b1); i++)
		assert_int_equal(b1[i], '#'); /* untouched */
	assert_int_equal(kv[3].err, NS_E2BIG);
	assert_int_equal(kv[4].err, NS_ERANGE);
	assert_int_equal(kv[4].vlen, l2);
	assert_int_equal(kv[5].err, 0);
	assert_int_equal(kv[5].vlen, l1);
	assert_memory_equal(b2, v1, l1);

	/* The results agree with the single-key calls. */
	for (size_t i = 0; i < n; i++) {
		size_t vl = 0;
		int e = ns_get(f->a, kv[i].key, kv[i].klen, kv[i].buf, kv[i].cap, &vl);
		assert_int_equal(e, kv[i].err);
	}
}

/* A bad key (empty, NULL) is that key's NS_EINVAL, not the batch's. */
static void test_bad_key_is_per_key(void **state)
{
	struct fx *f = *state;
	char buf[2][64];

	struct ns_kv set[] = {
		{ .key = "a", .klen = 1, .val = "1", .vlen = 1 },
		{ .key = "e", .klen = 0, .val = "2", .vlen = 1 },
		{ .key = NULL, .klen = 3, .val = "3", .vlen = 1 },
		{ .key = "b", .klen = 1, .val = NULL, .vlen = 5 }, /* NULL value */
		{ .key = "c", .klen = 1, .val = "4", .vlen = 1 },
	};
	for (size_t i = 0; i < 5; i++)
		set[i].err = JUNK_ERR;
	int r = ns_mset(f->a, set, 5);
	assert_int_equal(r, 2);
	assert_int_equal(set[0].err, 0);
	assert_int_equal(set[1].err, NS_EINVAL);
	assert_int_equal(set[2].err, NS_EINVAL);
	assert_int_equal(set[3].err, NS_EINVAL);
	assert_int_equal(set[4].err, 0);
	assert_int_equal(ns_exists(f->a, "b", 1), NS_ENOTFOUND);

	struct ns_kv get[] = {
		{ .key = "a", .klen = 1, .buf = buf[0], .cap = 64 },
		{ .key = "a", .klen = 0, .buf = buf[1], .cap = 64 },
		{ .key = NULL, .klen = 1, .buf = buf[1], .cap = 64 },
		{ .key = "c", .klen = 1, .buf = NULL, .cap = 64 }, /* NULL with a cap */
		{ .key = "c", .klen = 1, .buf = buf[1], .cap = 64 },
	};
	for (size_t i = 0; i < 5; i++)
		get[i].err = JUNK_ERR;
	r = ns_mget(f->a, get, 5);
	assert_int_equal(r, 2);
	assert_int_equal(get[0].err, 0);
	assert_int_equal(get[1].err, NS_EINVAL);
	assert_int_equal(get[2].err, NS_EINVAL);
	assert_int_equal(get[3].err, NS_EINVAL);
	assert_int_equal(get[4].err, 0);
	assert_memory_equal(buf[1], "4", 1);

	struct ns_kv del[] = {
		{ .key = "a", .klen = 1 },
		{ .key = "a", .klen = 0 },
		{ .key = NULL, .klen = 1 },
		{ .key = "c", .klen = 1 },
	};
	for (size_t i = 0; i < 4; i++)
		del[i].err = JUNK_ERR;
	r = ns_mdel(f->a, del, 4);
	assert_int_equal(r, 2);
	assert_int_equal(del[0].err, 0);
	assert_int_equal(del[1].err, NS_EINVAL);
	assert_int_equal(del[2].err, NS_EINVAL);
	assert_int_equal(del[3].err, 0);
	t_assert_consistent(f->c);
}

static void test_mset_per_key_errors(void **state)
{
	struct fx *f = *state;
	char long_key[NS_KEY_MAX + 1];
	size_t big = ns_max_value(f->c, 3) + 1;
	char *huge = malloc(big);

	assert_non_null(huge);
	memset(huge, 'h', big);
	memset(long_key, 'x', sizeof(long_key));
	struct ns_kv kv[] = {
		{ .key = "one", .klen = 3, .val = "v1", .vlen = 2, .flags = 11 },
		{ .key = long_key, .klen = NS_KEY_MAX + 1, .val = "v", .vlen = 1 },
		{ .key = "big", .klen = 3, .val = huge, .vlen = big },
		{ .key = "two", .klen = 3, .val = "v2", .vlen = 2, .flags = 22 },
		{ .key = "max", .klen = 3, .val = huge, .vlen = big - 1, .flags = 33 },
		{ .key = "nil", .klen = 3, .val = NULL, .vlen = 0, .flags = 44 },
	};
	size_t n = sizeof(kv) / sizeof(kv[0]);
	for (size_t i = 0; i < n; i++)
		kv[i].err = JUNK_ERR;
	int r = ns_mset(f->a, kv, n);
	assert_int_equal(r, 4);
	assert_count(r, kv, n);
	assert_int_equal(kv[0].err, 0);
	assert_int_equal(kv[1].err, NS_E2BIG);
	assert_int_equal(kv[2].err, NS_E2BIG);
	assert_int_equal(kv[3].err, 0);
	assert_int_equal(kv[4].err, 0);
	assert_int_equal(kv[5].err, 0);

	char b[4][8];
	char *maxbuf = malloc(big);
	struct ns_kv get[] = {
		{ .key = "one", .klen = 3, .buf = b[0], .cap = 8 },
		{ .key = "big", .klen = 3, .buf = b[1], .cap = 8 },
		{ .key = "two", .klen = 3, .buf = b[2], .cap = 8 },
		{ .key = "max", .klen = 3, .buf = maxbuf, .cap = big },
		{ .key = "nil", .klen = 3, .buf = b[3], .cap = 8 },
	};
	for (size_t i = 0; i < 5; i++)
		get[i].err = JUNK_ERR;
	assert_int_equal(ns_mget(f->a, get, 5), 4);
	assert_int_equal(get[0].err, 0);
	assert_int_equal(get[0].flags, 11);
	assert_memory_equal(b[0], "v1", 2);
	assert_int_equal(get[1].err, NS_ENOTFOUND);
	assert_int_equal(get[2].err, 0);
	assert_int_equal(get[2].flags, 22);
	assert_int_equal(get[3].err, 0);
	assert_int_equal(get[3].vlen, big - 1);
	assert_int_equal(get[3].flags, 33);
	assert_memory_equal(maxbuf, huge, big - 1);
	assert_int_equal(get[4].err, 0);
	assert_int_equal(get[4].vlen, 0);
	assert_int_equal(get[4].flags, 44);
	free(maxbuf);
	free(huge);
	t_assert_consistent(f->c);
}

/* TTL per key (0: the namespace default), and flags are replaced by every
 * store (ns_set stores flags 0). */
static void test_mset_ttl_and_flags(void **state)
{
	struct fx *f = *state;
	uint64_t t0 = f->t0;
	char b[4][8];

	assert_int_equal(ns_space_config(f->a, 5000, 0), 0);
	struct ns_kv kv[] = {
		{ .key = "short", .klen = 5, .val = "1", .vlen = 1, .ttl_ms = 1000, .flags = 1 },
		{ .key = "never", .klen = 5, .val = "2", .vlen = 1, .ttl_ms = NS_TTL_NEVER, .flags = 2 },
		{ .key = "dflt", .klen = 4, .val = "3", .vlen = 1, .ttl_ms = 0, .flags = 3 },
		{ .key = "plain", .klen = 5, .val = "4", .vlen = 1, .ttl_ms = NS_TTL_NEVER, .flags = 4 },
	};
	assert_int_equal(ns_mset(f->a, kv, 4), 4);
	assert_int_equal(ns_set(f->a, "plain", 5, "5", 1, NS_TTL_NEVER), 0);

	struct ns_kv get[4];
	for (int i = 0; i < 4; i++)
		get[i] = (struct ns_kv){ .key = kv[i].key, .klen = kv[i].klen,
					 .buf = b[i], .cap = 8, .flags = 77 };
	ns__test_clock(t0 + 999);
	assert_int_equal(ns_mget(f->a, get, 4), 4);
	assert_int_equal(get[0].flags, 1);
	assert_int_equal(get[1].flags, 2);
	assert_int_equal(get[2].flags, 3);
	assert_int_equal(get[3].flags, 0);
	assert_memory_equal(b[3], "5", 1);

	ns__test_clock(t0 + 1000);
	assert_int_equal(ns_mget(f->a, get, 4), 3);
	assert_int_equal(get[0].err, NS_ENOTFOUND);
	ns__test_clock(t0 + 4999);
	assert_int_equal(ns_mget(f->a, get, 4), 3);
	assert_int_equal(get[2].err, 0);
	ns__test_clock(t0 + 5000);
	assert_int_equal(ns_mget(f->a, get, 4), 2);
	assert_int_equal(get[2].err, NS_ENOTFOUND);
	ns__test_clock(t0 + 10ull * 365 * 86400 * 1000);
	assert_int_equal(ns_mget(f->a, get, 4), 2);
	assert_int_equal(get[1].err, 0);
	assert_int_equal(get[3].err, 0);
}

/* ---- empty and bad arrays ----------------------------------------------- */

static void test_n_zero_and_bad_arrays(void **state)
{
	struct fx *f = *state;
	char buf[8];
	struct ns_kv kv = { .key = "k", .klen = 1, .val = "v", .vlen = 1,
			    .buf = buf, .cap = sizeof(buf), .err = JUNK_ERR };

	assert_int_equal(ns_mset(f->a, &kv, 0), 0);
	assert_int_equal(ns_mget(f->a, &kv, 0), 0);
	assert_int_equal(ns_mdel(f->a, &kv, 0), 0);
	assert_int_equal(kv.err, JUNK_ERR); /* nothing looked at */
	assert_int_equal(ns_exists(f->a, "k", 1), NS_ENOTFOUND);

	assert_int_equal(ns_mset(f->a, NULL, 3), NS_EINVAL);
	assert_int_equal(ns_mget(f->a, NULL, 3), NS_EINVAL);
	assert_int_equal(ns_mdel(f->a, NULL, 3), NS_EINVAL);
	assert_int_equal(ns_mset(NULL, &kv, 1), NS_EINVAL);
	assert_int_equal(ns_mget(NULL, &kv, 1), NS_EINVAL);
	assert_int_equal(ns_mdel(NULL, &kv, 1), NS_EINVAL);
	assert_int_equal(ns_exists(f->a, "k", 1), NS_ENOTFOUND);
}

/* ---- mdel --------------------------------------------------------------- */

static void test_mdel(void **state)
{
	struct fx *f = *state;
	char key[10][8];

	for (int i = 0; i < 10; i++) {
		snprintf(key[i], 8, "d%d", i);
		set_ok(f->a, key[i], "v", 1);
	}
	set_ok(f->b, "d0", "b", 1);
	struct ns_kv kv[] = {
		{ .key = "d0", .klen = 2 },
		{ .key = "d1", .klen = 2 },
		{ .key = "zz", .klen = 2 },
		{ .key = "d2", .klen = 2 },
		{ .key = "d0", .klen = 2 }, /* gone by now */
	};
	for (int i = 0; i < 5; i++)
		kv[i].err = JUNK_ERR;
	int r = ns_mdel(f->a, kv, 5);
	assert_int_equal(r, 3);
	assert_count(r, kv, 5);
	assert_int_equal(kv[0].err, 0);
	assert_int_equal(kv[1].err, 0);
	assert_int_equal(kv[2].err, NS_ENOTFOUND);
	assert_int_equal(kv[3].err, 0);
	assert_int_equal(kv[4].err, NS_ENOTFOUND);
	for (int i = 0; i < 10; i++)
		assert_int_equal(ns_exists(f->a, key[i], 2), i < 3 ? NS_ENOTFOUND : 0);
	assert_int_equal(ns_exists(f->b, "d0", 2), 0);

	/* Again: all absent now. */
	assert_int_equal(ns_mdel(f->a, kv, 5), 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(kv[i].err, NS_ENOTFOUND);

	/* An expired key reads as absent to mdel too. */
	assert_int_equal(ns_set(f->a, "exp", 3, "v", 1, 100), 0);
	ns__test_clock(f->t0 + 100);
	struct ns_kv e = { .key = "exp", .klen = 3, .err = JUNK_ERR };
	assert_int_equal(ns_mdel(f->a, &e, 1), 0);
	assert_int_equal(e.err, NS_ENOTFOUND);
	t_assert_consistent(f->c);
}

/* ---- one key twice ------------------------------------------------------ */

static void test_same_key_twice_in_order(void **state)
{
	struct fx *f = *state;
	char b0[16], b1[16], v[16];
	size_t vl;
	size_t big = ns_max_value(f->c, 1) + 1;
	char *huge = calloc(1, big);

	struct ns_kv set[] = {
		{ .key = "k", .klen = 1, .val = "first", .vlen = 5, .flags = 1 },
		{ .key = "k", .klen = 1, .val = "second", .vlen = 6, .flags = 2 },
	};
	assert_int_equal(ns_mset(f->a, set, 2), 2);
	assert_int_equal(ns_get(f->a, "k", 1, v, sizeof(v), &vl), 0);
	assert_int_equal(vl, 6);
	assert_memory_equal(v, "second", 6);

	struct ns_kv get[] = {
		{ .key = "k", .klen = 1, .buf = b0, .cap = sizeof(b0) },
		{ .key = "k", .klen = 1, .buf = b1, .cap = sizeof(b1) },
	};
	assert_int_equal(ns_mget(f->a, get, 2), 2);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(get[i].err, 0);
		assert_int_equal(get[i].vlen, 6);
		assert_int_equal(get[i].flags, 2);
	}
	assert_memory_equal(b0, "second", 6);
	assert_memory_equal(b1, "second", 6);

	/* A failing second store leaves the first. */
	struct ns_kv set2[] = {
		{ .key = "k", .klen = 1, .val = "third", .vlen = 5, .flags = 3 },
		{ .key = "k", .klen = 1, .val = huge, .vlen = big, .flags = 4 },
	};
	assert_int_equal(ns_mset(f->a, set2, 2), 1);
	assert_int_equal(set2[0].err, 0);
	assert_int_equal(set2[1].err, NS_E2BIG);
	assert_int_equal(ns_get(f->a, "k", 1, v, sizeof(v), &vl), 0);
	assert_memory_equal(v, "third", 5);

	/* Stored and deleted, in that order, in two batches; and deleted
	 * twice in one. */
	struct ns_kv del[] = { { .key = "k", .klen = 1 }, { .key = "k", .klen = 1 } };
	assert_int_equal(ns_mdel(f->a, del, 2), 1);
	assert_int_equal(del[0].err, 0);
	assert_int_equal(del[1].err, NS_ENOTFOUND);
	assert_int_equal(ns_get(f->a, "k", 1, v, sizeof(v), &vl), NS_ENOTFOUND);
	free(huge);
	t_assert_consistent(f->c);
}

/* ---- random mix against ns_get ------------------------------------------ */

#define MIX_KEYS 500
#define MIX_BATCH 64

struct model {
	int present;
	char val[300];
	size_t vlen;
	uint32_t flags;
};

static void test_random_mix_matches_get(void **state)
{
	struct fx *f = *state;
	struct model *m = calloc(MIX_KEYS, sizeof(*m));
	char key[MIX_BATCH][16], vals[MIX_BATCH][300], bufs[MIX_BATCH][300];
	struct ns_kv kv[MIX_BATCH];
	int idx[MIX_BATCH];
	uint64_t hits = 0, checked = 0;

	srand(42);
	for (int round = 0; round < 600; round++) {
		int n = 1 + rand() % MIX_BATCH, op = rand() % 3;
		memset(kv, 0, sizeof(kv));
		for (int i = 0; i < n; i++) {
			idx[i] = rand() % MIX_KEYS;
			snprintf(key[i], 16, "m%d", idx[i]);
			kv[i].key = key[i];
			kv[i].klen = strlen(key[i]);
			kv[i].err = JUNK_ERR;
			if (op == 0) {
				kv[i].vlen = t_make_value(vals[i], 300, key[i], (uint32_t)rand(),
							  (size_t)(rand() % 200));
				kv[i].val = vals[i];
				kv[i].flags = (uint32_t)rand();
			} else if (op == 2) {
				kv[i].buf = bufs[i];
				/* Now and then too small. */
				kv[i].cap = rand() % 8 ? 300 : (size_t)(rand() % 40);
			}
		}
		int r;
		if (op == 0) {
			r = ns_mset(f->a, kv, (size_t)n);
			assert_int_equal(r, n);
			for (int i = 0; i < n; i++) {
				struct model *e = &m[idx[i]];
				e->present = 1;
				memcpy(e->val, vals[i], kv[i].vlen);
				e->vlen = kv[i].vlen;
				e->flags = kv[i].flags;
			}
		} else if (op == 1) {
			/* Half of the deletes go through ns_del instead. */
			if (rand() % 2) {
				r = ns_mdel(f->a, kv, (size_t)n);
				assert_count(r, kv, (size_t)n);
				for (int i = 0; i < n; i++) {
					struct model *e = &m[idx[i]];
					assert_int_equal(kv[i].err, e->present ? 0 : NS_ENOTFOUND);
					e->present = 0;
				}
			} else {
				for (int i = 0; i < n && i < 4; i++) {
					int e = ns_del(f->a, key[i], kv[i].klen);
					assert_int_equal(e, m[idx[i]].present ? 0 : NS_ENOTFOUND);
					m[idx[i]].present = 0;
				}
			}
		} else {
			r = ns_mget(f->a, kv, (size_t)n);
			assert_count(r, kv, (size_t)n);
			for (int i = 0; i < n; i++) {
				struct model *e = &m[idx[i]];
				char one[300];
				size_t vl = 0;
				int g = ns_get(f->a, key[i], kv[i].klen, one, kv[i].cap, &vl);
				checked++;
				if (g != kv[i].err)
					fail_msg("round %d %s: mget err %d, get %d", round,
						 key[i], kv[i].err, g);
				if (!e->present) {
					assert_int_equal(g, NS_ENOTFOUND);
					continue;
				}
				assert_int_equal(kv[i].vlen, e->vlen);
				assert_int_equal(vl, e->vlen);
				if (g == 0) {
					hits++;
					assert_memory_equal(bufs[i], e->val, e->vlen);
					assert_memory_equal(one, e->val, e->vlen);
					assert_int_equal(kv[i].flags, e->flags);
				} else {
					assert_int_equal(g, NS_ERANGE);
				}
			}
		}
	}
	print_message("# %llu mget keys checked, %llu hits\n",
		      (unsigned long long)checked, (unsigned long long)hits);
	assert_true(hits > 100);
	free(m);
	t_assert_consistent(f->c);
}

/* ---- counters ----------------------------------------------------------- */

/* A batch moves a namespace's counters as its single calls would. */
static void test_batches_count_like_single_calls(void **state)
{
	struct fx *f = *state;
	struct ns_space_info i0, i1;
	char buf[5][8];

	assert_int_equal(ns_space_info(f->a, &i0), 0);
	struct ns_kv set[] = {
		{ .key = "x", .klen = 1, .val = "1", .vlen = 1 },
		{ .key = "y", .klen = 1, .val = "2", .vlen = 1 },
		{ .key = "z", .klen = 1, .val = "3", .vlen = 1 },
	};
	assert_int_equal(ns_mset(f->a, set, 3), 3);
	struct ns_kv get[5] = {
		{ .key = "x", .klen = 1 }, { .key = "q", .klen = 1 },
		{ .key = "y", .klen = 1 }, { .key = "r", .klen = 1 },
		{ .key = "z", .klen = 1 },
	};
	for (int i = 0; i < 5; i++) {
		get[i].buf = buf[i];
		get[i].cap = 8;
	}
	assert_int_equal(ns_mget(f->a, get, 5), 3);
	struct ns_kv del[] = {
		{ .key = "x", .klen = 1 }, { .key = "q", .klen = 1 },
		{ .key = "y", .klen = 1 },
	};
	assert_int_equal(ns_mdel(f->a, del, 3), 2);
	assert_int_equal(ns_space_info(f->a, &i1), 0);
	assert_int_equal(i1.sets - i0.sets, 3);
	assert_int_equal(i1.hits - i0.hits, 3);
	assert_int_equal(i1.misses - i0.misses, 2);
	assert_int_equal(i1.deletes - i0.deletes, 2);
	assert_int_equal(i1.items - i0.items, 1);
}

/* ---- read-only ---------------------------------------------------------- */

static void test_read_only(void **state)
{
	struct fx *f = *state;
	struct ns_attach_opts o = { .flags = NS_RDONLY };
	ns_cache *ro;
	ns_space *s;
	char buf[8];

	set_ok(f->a, "k", "v", 1);
	assert_int_equal(ns_attach(f->name, &o, &ro), 0);
	assert_int_equal(ns_space_open(ro, "test:a", &s), 0);
	struct ns_kv kv[] = {
		{ .key = "k", .klen = 1, .val = "w", .vlen = 1, .buf = buf, .cap = 8 },
		{ .key = "n", .klen = 1, .val = "w", .vlen = 1, .buf = buf, .cap = 8 },
	};
	kv[0].err = kv[1].err = JUNK_ERR;
	/* Per key, as ns_set and ns_del say it; the batch itself is fine. */
	assert_int_equal(ns_mset(s, kv, 2), 0);
	assert_int_equal(kv[0].err, NS_ERDONLY);
	assert_int_equal(kv[1].err, NS_ERDONLY);
	kv[0].err = kv[1].err = JUNK_ERR;
	assert_int_equal(ns_mdel(s, kv, 2), 0);
	assert_int_equal(kv[0].err, NS_ERDONLY);
	assert_int_equal(kv[1].err, NS_ERDONLY);
	assert_int_equal(ns_mget(s, kv, 2), 1);
	assert_int_equal(kv[0].err, 0);
	assert_int_equal(kv[0].vlen, 1);
	assert_memory_equal(buf, "v", 1);
	assert_int_equal(kv[1].err, NS_ENOTFOUND);
	ns_detach(ro);
}

/* ---- batches while others write ----------------------------------------- */

#define CONC_KEYS 1000
#define CONC_MS 1500

/* Flags derived from the value: a torn pair shows. */
static uint32_t flags_for(size_t vlen, const char *val)
{
	return (uint32_t)vlen * 2654435761u ^ (uint8_t)val[vlen - 1];
}

static int writer(ns_space *s, unsigned seed)
{
	char key[MIX_BATCH][16], vals[MIX_BATCH][400];
	struct ns_kv kv[MIX_BATCH];
	uint64_t end = t_now_ns() + CONC_MS * 1000000ull;

	srand(seed);
	while (t_now_ns() < end) {
		int n = 1 + rand() % MIX_BATCH, del = rand() % 5 == 0;
		memset(kv, 0, sizeof(kv));
		for (int i = 0; i < n; i++) {
			snprintf(key[i], 16, "c%d", rand() % CONC_KEYS);
			kv[i].key = key[i];
			kv[i].klen = strlen(key[i]);
			kv[i].vlen = t_make_value(vals[i], 400, key[i], (uint32_t)rand(),
						  (size_t)(rand() % 300));
			kv[i].val = vals[i];
			kv[i].flags = flags_for(kv[i].vlen, vals[i]);
		}
		int r = del ? ns_mdel(s, kv, (size_t)n) : ns_mset(s, kv, (size_t)n);
		if (r < 0)
			return 1;
		for (int i = 0; i < n; i++)
			if (kv[i].err != 0 && !(del && kv[i].err == NS_ENOTFOUND))
				return 2;
	}
	return 0;
}

static void test_mget_while_others_mset(void **state)
{
	struct fx *f = *state;
	char key[MIX_BATCH][16], bufs[MIX_BATCH][400];
	struct ns_kv kv[MIX_BATCH];
	pid_t pid[2];
	uint64_t hits = 0, bad = 0, errors = 0;

	for (int i = 0; i < 2; i++) {
		pid[i] = fork();
		assert_true(pid[i] >= 0);
		if (pid[i] == 0)
			_exit(writer(f->a, 5u + (unsigned)i));
	}
	uint64_t end = t_now_ns() + CONC_MS * 1000000ull;
	srand(3);
	while (t_now_ns() < end) {
		int n = 1 + rand() % MIX_BATCH;
		memset(kv, 0, sizeof(kv));
		for (int i = 0; i < n; i++) {
			snprintf(key[i], 16, "c%d", rand() % CONC_KEYS);
			kv[i].key = key[i];
			kv[i].klen = strlen(key[i]);
			kv[i].buf = bufs[i];
			kv[i].cap = sizeof(bufs[i]);
			kv[i].err = JUNK_ERR;
		}
		int r = ns_mget(f->a, kv, (size_t)n);
		int ok = 0;
		for (int i = 0; i < n; i++) {
			if (kv[i].err == 0) {
				ok++;
				hits++;
				if (t_check_value(bufs[i], kv[i].vlen, key[i]) != 0 ||
				    kv[i].flags != flags_for(kv[i].vlen, bufs[i]))
					bad++;
			} else if (kv[i].err != NS_ENOTFOUND) {
				errors++;
			}
		}
		if (r != ok)
			errors++;
	}
	for (int i = 0; i < 2; i++) {
		int st = t_wait(pid[i], 30000);
		assert_true(st != -1 && WIFEXITED(st));
		if (WEXITSTATUS(st) != 0)
			fail_msg("writer %d exited %d", i, WEXITSTATUS(st));
	}
	print_message("# %llu hits, %llu bad, %llu errors\n", (unsigned long long)hits,
		      (unsigned long long)bad, (unsigned long long)errors);
	assert_int_equal(bad, 0);
	assert_int_equal(errors, 0);
	assert_true(hits > 0);
	ns__recover_dead(f->c);
	t_assert_consistent(f->c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_mset_then_mget_100, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mget_per_key_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_key_is_per_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mset_per_key_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mset_ttl_and_flags, setup, teardown),
		cmocka_unit_test_setup_teardown(test_n_zero_and_bad_arrays, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mdel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_same_key_twice_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_random_mix_matches_get, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batches_count_like_single_calls, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mget_while_others_mset, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
