/*
 * test_scan.c - cursor iteration: a full scan returns every key of the
 * namespace at least once and ends with cursor 0; glob patterns filter;
 * other namespaces never show; a too-small array is NS_ERANGE without
 * losing the cursor; and keys present for a whole scan are returned even
 * while two other processes write around them.
 */
#include <fnmatch.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

#define MAX_CALLS 10000000 /* a scan that never ends fails instead */

struct fx {
	char name[64];
	ns_cache *c;
	ns_space *a, *b;
	uint64_t t0;
};

static int setup_sized(void **state, size_t size, uint64_t items)
{
	struct fx *f = calloc(1, sizeof(*f));
	snprintf(f->name, sizeof(f->name), "%s", t_name("scan"));
	f->c = t_create(f->name, size, items);
	assert_int_equal(ns_space_open(f->c, "test:a", &f->a), 0);
	assert_int_equal(ns_space_open(f->c, "test:b", &f->b), 0);
	f->t0 = f->c->hdr->created_ms + 60000;
	ns__test_clock(f->t0);
	*state = f;
	return 0;
}

static int setup(void **state) { return setup_sized(state, 16u << 20, 20000); }
static int setup_big(void **state) { return setup_sized(state, 32u << 20, 60000); }

/* Writers of the concurrent test, stopped here if it fails midway. */
static pid_t churners[2];

static int teardown(void **state)
{
	struct fx *f = *state;
	for (int i = 0; i < 2; i++) {
		if (churners[i] > 0) {
			kill(churners[i], SIGKILL);
			waitpid(churners[i], NULL, 0);
			churners[i] = 0;
		}
	}
	ns__test_clock(0);
	ns_detach(f->c);
	ns_unlink(f->name);
	free(f);
	return 0;
}

/* ---- a set of expected keys, and what a scan saw of it ------------------ */

struct ent {
	size_t klen;
	char key[NS_KEY_MAX + 1];
	unsigned seen;
};

struct keyset {
	struct ent *e;
	size_t n, cap;
	size_t foreign;              /* returned, not expected */
	char first_foreign[NS_KEY_MAX + 1];
	uint64_t calls, returned;
};

static int ent_cmp(const void *x, const void *y)
{
	const struct ent *a = x, *b = y;
	size_t m = a->klen < b->klen ? a->klen : b->klen;
	int r = memcmp(a->key, b->key, m);
	if (r)
		return r;
	return (a->klen > b->klen) - (a->klen < b->klen);
}

static void ks_add(struct keyset *ks, const void *key, size_t klen)
{
	if (ks->n == ks->cap) {
		ks->cap = ks->cap ? 2 * ks->cap : 1024;
		ks->e = realloc(ks->e, ks->cap * sizeof(*ks->e));
		assert_non_null(ks->e);
	}
	struct ent *e = &ks->e[ks->n++];
	memset(e, 0, sizeof(*e));
	memcpy(e->key, key, klen);
	e->klen = klen;
}

static void ks_seal(struct keyset *ks)
{
	if (ks->n > 1) /* qsort's array must not be NULL, even when empty */
		qsort(ks->e, ks->n, sizeof(*ks->e), ent_cmp);
}

static struct ent *ks_find(struct keyset *ks, const void *key, size_t klen)
{
	struct ent k;
	k.klen = klen;
	memcpy(k.key, key, klen);
	return bsearch(&k, ks->e, ks->n, sizeof(*ks->e), ent_cmp);
}

static void ks_reset(struct keyset *ks)
{
	for (size_t i = 0; i < ks->n; i++)
		ks->e[i].seen = 0;
	ks->foreign = 0;
	ks->calls = ks->returned = 0;
}

static size_t ks_missing(struct keyset *ks, const char **first)
{
	size_t m = 0;
	for (size_t i = 0; i < ks->n; i++) {
		if (!ks->e[i].seen) {
			if (m++ == 0 && first)
				*first = ks->e[i].key;
		}
	}
	return m;
}

static void ks_free(struct keyset *ks) { free(ks->e); memset(ks, 0, sizeof(*ks)); }

/* Keys that may show without being expected (written during the scan);
 * NULL: none may. */
typedef int tolerate_fn(const char *key, size_t klen);

/*
 * A full scan from cursor 0 to cursor 0, marking what it returns in KS.
 * Starts with an array of CAP keys; on NS_ERANGE the cursor must not have
 * moved, and the call is retried with a larger array.
 */
static int scan_all(ns_space *s, const char *pat, size_t count, size_t cap,
		    struct keyset *ks, tolerate_fn *ok)
{
	uint64_t cursor = 0;
	struct ns_key *keys = calloc(cap ? cap : 1, sizeof(*keys));

	ks_reset(ks);
	for (;;) {
		uint64_t before = cursor;
		size_t n = (size_t)-1;
		int r = ns_scan(s, &cursor, pat, count, keys, cap, &n);
		ks->calls++;
		if (ks->calls > MAX_CALLS)
			fail_msg("scan did not end after %d calls", MAX_CALLS);
		if (r == NS_ERANGE) {
			if (cursor != before)
				fail_msg("NS_ERANGE moved the cursor %llu -> %llu",
					 (unsigned long long)before,
					 (unsigned long long)cursor);
			cap = cap ? 2 * cap : 1;
			if (cap > 1u << 16)
				fail_msg("NS_ERANGE even with %zu keys", cap);
			keys = realloc(keys, cap * sizeof(*keys));
			continue;
		}
		if (r != 0) {
			free(keys);
			return r;
		}
		if (n > cap)
			fail_msg("ns_scan returned n %zu > cap %zu", n, cap);
		for (size_t i = 0; i < n; i++) {
			struct ns_key *k = &keys[i];
			if (k->klen == 0 || k->klen > NS_KEY_MAX || k->key[k->klen] != '\0')
				fail_msg("bad key returned: klen %zu", k->klen);
			struct ent *e = ks_find(ks, k->key, k->klen);
			ks->returned++;
			if (e) {
				e->seen++;
			} else if (ok == NULL || !ok(k->key, k->klen)) {
				if (ks->foreign++ == 0)
					memcpy(ks->first_foreign, k->key, k->klen + 1);
			}
		}
		if (cursor == 0)
			break;
	}
	free(keys);
	return 0;
}

static void assert_scan_exact(ns_space *s, const char *pat, size_t count, size_t cap,
			      struct keyset *ks)
{
	const char *miss = NULL;
	int r = scan_all(s, pat, count, cap, ks, NULL);
	if (r != 0)
		fail_msg("scan %s = %d (%s)", pat ? pat : "(all)", r, ns_strerror(r));
	size_t m = ks_missing(ks, &miss);
	if (m)
		fail_msg("scan %s count %zu: %zu of %zu keys missing, e.g. '%s'",
			 pat ? pat : "(all)", count, m, ks->n, miss);
	if (ks->foreign)
		fail_msg("scan %s count %zu: %zu foreign keys, e.g. '%s'",
			 pat ? pat : "(all)", count, ks->foreign, ks->first_foreign);
}

static void set_ok(ns_space *s, const void *key, size_t klen, uint32_t seed, uint64_t ttl)
{
	char val[512], k[NS_KEY_MAX + 1];
	memcpy(k, key, klen);
	k[klen] = '\0';
	size_t vl = t_make_value(val, sizeof(val), k, seed, 20 + seed % 100);
	int r = ns_set(s, key, klen, val, vl, ttl);
	if (r != 0)
		fail_msg("set %s = %d (%s)", k, r, ns_strerror(r));
}

static void set_str(ns_space *s, const char *key, uint32_t seed)
{
	set_ok(s, key, strlen(key), seed, 0);
}

/* ---- full scan ---------------------------------------------------------- */

#define FULL_KEYS 5000

static void test_full_scan_returns_every_key(void **state)
{
	struct fx *f = *state;
	struct keyset ks = { 0 };
	char key[NS_KEY_MAX + 1];

	for (int i = 0; i < FULL_KEYS; i++) {
		snprintf(key, sizeof(key), "user:%d", i);
		set_str(f->a, key, (uint32_t)i);
		ks_add(&ks, key, strlen(key));
	}
	/* Keys are bytes: an embedded NUL, high bytes, the longest key. */
	static const char bin[] = { 'n', 'u', 0, 'l', (char)0xff, (char)0x80 };
	set_ok(f->a, bin, sizeof(bin), 1, 0);
	ks_add(&ks, bin, sizeof(bin));
	memset(key, 'L', NS_KEY_MAX);
	set_ok(f->a, key, NS_KEY_MAX, 2, 0);
	ks_add(&ks, key, NS_KEY_MAX);
	/* Another namespace, with keys the patterns below would match. */
	for (int i = 0; i < 500; i++) {
		snprintf(key, sizeof(key), "user:b%d", i);
		set_str(f->b, key, (uint32_t)i);
	}
	set_str(f->b, "user:0", 1); /* B's own "user:0" is B's, not A's */
	ks_seal(&ks);

	static const size_t counts[] = { 1, 10, 0, 100, 1u << 20 };
	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		assert_scan_exact(f->a, NULL, counts[i], 256, &ks);
		print_message("# count %zu: %llu calls, %llu keys returned for %zu\n",
			      counts[i], (unsigned long long)ks.calls,
			      (unsigned long long)ks.returned, ks.n);
		/* A small count gives several steps. */
		if (counts[i] == 10)
			assert_true(ks.calls > 10);
	}
	/* "*" is everything, like NULL. */
	assert_scan_exact(f->a, "*", 50, 256, &ks);
	/* Starting with a one-key array goes through NS_ERANGE retries. */
	assert_scan_exact(f->a, NULL, 20, 1, &ks);
	ks_free(&ks);
}

static void test_empty_namespace(void **state)
{
	struct fx *f = *state;
	struct keyset ks = { 0 };

	ks_seal(&ks);
	/* A segment without a key: every step returns nothing, even into
	 * an empty array, and the scan ends. */
	struct ns_key one[1];
	uint64_t cursor = 0;
	int calls = 0;
	do {
		size_t n = (size_t)-1;
		assert_int_equal(ns_scan(f->a, &cursor, NULL, 10, one, 0, &n), 0);
		assert_int_equal(n, 0);
		assert_true(++calls < MAX_CALLS);
	} while (cursor != 0);
	assert_scan_exact(f->a, NULL, 10, 16, &ks);
	/* Another namespace's keys do not show in A's. */
	for (int i = 0; i < 1000; i++) {
		char key[32];
		snprintf(key, sizeof(key), "b%d", i);
		set_str(f->b, key, (uint32_t)i);
	}
	assert_scan_exact(f->a, NULL, 10, 16, &ks);
	assert_scan_exact(f->a, NULL, 0, 16, &ks);
	assert_int_equal(ks.returned, 0);
	ks_free(&ks);
}

/* ---- patterns ----------------------------------------------------------- */

static void test_glob_patterns(void **state)
{
	struct fx *f = *state;
	static const char *extra[] = { "ax1", "bx2", "xx", "x", "xa", "cat", "cot",
				       "cut", "c1t", "ct", "caat", "9lives", "0",
				       "user:", "User:9", "user:1x", "a*b", "a?b" };
	char key[64];
	const char **all = calloc(400, sizeof(*all));
	size_t nall = 0;

	for (int i = 0; i < 300; i++) {
		snprintf(key, sizeof(key), "user:%d", i);
		all[nall++] = strdup(key);
	}
	for (int i = 0; i < 50; i++) {
		snprintf(key, sizeof(key), "admin:%d", i);
		all[nall++] = strdup(key);
	}
	for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++)
		all[nall++] = strdup(extra[i]);
	for (size_t i = 0; i < nall; i++)
		set_str(f->a, all[i], (uint32_t)i);
	/* B holds keys that match every pattern. */
	for (size_t i = 0; i < nall; i++)
		set_str(f->b, all[i], (uint32_t)i);
	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "user:b%d", i);
		set_str(f->b, key, (uint32_t)i);
	}

	static const char *pats[] = { "user:*", "?x*", "c[ao]t", "c[!a-o]t",
				      "[[:digit:]]*", "user:1?", "*:4*", "x",
				      "a\\*b", "nomatch*", "*" };
	for (size_t p = 0; p < sizeof(pats) / sizeof(pats[0]); p++) {
		struct keyset ks = { 0 };
		for (size_t i = 0; i < nall; i++)
			if (fnmatch(pats[p], all[i], 0) == 0)
				ks_add(&ks, all[i], strlen(all[i]));
		ks_seal(&ks);
		assert_scan_exact(f->a, pats[p], 16, 64, &ks);
		print_message("# '%s': %zu keys\n", pats[p], ks.n);
		ks_free(&ks);
	}
	for (size_t i = 0; i < nall; i++)
		free((void *)all[i]);
	free(all);
}

/* ---- what is not there is not returned ---------------------------------- */

static void test_absent_keys_not_returned(void **state)
{
	struct fx *f = *state;
	struct keyset ks = { 0 };
	char key[32];
	ns_space *c;

	for (int i = 0; i < 300; i++) {
		snprintf(key, sizeof(key), "live:%d", i);
		set_str(f->a, key, (uint32_t)i);
		ks_add(&ks, key, strlen(key));
		snprintf(key, sizeof(key), "del:%d", i);
		set_str(f->a, key, (uint32_t)i);
		assert_int_equal(ns_del(f->a, key, strlen(key)), 0);
	}
	ks_seal(&ks);
	assert_scan_exact(f->a, NULL, 10, 64, &ks);

	/* Expired keys read as absent, and scan as absent. */
	for (int i = 0; i < 300; i++) {
		snprintf(key, sizeof(key), "exp:%d", i);
		set_ok(f->a, key, strlen(key), (uint32_t)i, 1000);
	}
	ns__test_clock(f->t0 + 1000);
	assert_scan_exact(f->a, NULL, 10, 64, &ks);
	ks_free(&ks);

	/* So do cleared ones. */
	assert_int_equal(ns_space_open(f->c, "test:c", &c), 0);
	for (int i = 0; i < 300; i++) {
		snprintf(key, sizeof(key), "old:%d", i);
		set_str(c, key, (uint32_t)i);
	}
	assert_int_equal(ns_space_clear(c), 0);
	for (int i = 0; i < 10; i++) {
		snprintf(key, sizeof(key), "new:%d", i);
		set_str(c, key, (uint32_t)i);
		ks_add(&ks, key, strlen(key));
	}
	ks_seal(&ks);
	assert_scan_exact(c, NULL, 10, 64, &ks);
	ks_free(&ks);
}

/* ---- errors ------------------------------------------------------------- */

static void test_erange_and_einval(void **state)
{
	struct fx *f = *state;
	struct ns_key keys[512];
	uint64_t cursor = 0;
	size_t n;
	char key[32];

	for (int i = 0; i < FULL_KEYS; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		set_str(f->a, key, (uint32_t)i);
	}
	/* No room at all: steps over empty buckets may return nothing, but
	 * the first with keys is NS_ERANGE and keeps the cursor. */
	int r;
	for (int calls = 0;; calls++) {
		uint64_t before = cursor;
		n = (size_t)-1;
		r = ns_scan(f->a, &cursor, NULL, 100, keys, 0, &n);
		if (r == NS_ERANGE) {
			assert_int_equal(cursor, before);
			break;
		}
		assert_int_equal(r, 0);
		assert_int_equal(n, 0);
		if (cursor == 0 || calls > MAX_CALLS)
			fail_msg("a scan with cap 0 over %d keys never said NS_ERANGE",
				 FULL_KEYS);
	}
	/* Retrying the same cursor with room works. */
	n = 0;
	assert_int_equal(ns_scan(f->a, &cursor, NULL, 100, keys, 512, &n), 0);
	assert_true(n > 0);
	for (size_t i = 0; i < n; i++)
		assert_true(keys[i].klen > 1 && keys[i].key[0] == 'k');

	/* A cap too small somewhere along a scan of one-key arrays. */
	cursor = 0;
	int erange = 0;
	for (int calls = 0; calls < MAX_CALLS; calls++) {
		uint64_t before = cursor;
		r = ns_scan(f->a, &cursor, NULL, 50, keys, 1, &n);
		if (r == NS_ERANGE) {
			erange++;
			assert_int_equal(cursor, before);
			r = ns_scan(f->a, &cursor, NULL, 50, keys, 512, &n);
		}
		assert_int_equal(r, 0);
		if (cursor == 0)
			break;
	}
	assert_int_equal(cursor, 0);
	assert_true(erange > 0); /* 5000 keys do not sit one per step */

	cursor = 0;
	assert_int_equal(ns_scan(NULL, &cursor, NULL, 10, keys, 512, &n), NS_EINVAL);
	assert_int_equal(ns_scan(f->a, NULL, NULL, 10, keys, 512, &n), NS_EINVAL);
	assert_int_equal(ns_scan(f->a, &cursor, NULL, 10, keys, 512, NULL), NS_EINVAL);
	assert_int_equal(ns_scan(f->a, &cursor, NULL, 10, NULL, 512, &n), NS_EINVAL);
}

/* ---- while others write ------------------------------------------------- */

#define STABLE 2000
#define OTHER 20000
#define CHURN_MS 20000 /* a child's upper bound if the parent never stops it */

struct shared {
	volatile int stop;
	volatile int started;
	uint64_t ops[2], errors[2], bad[2];
};

static void churn(ns_space *s, struct shared *sh, int me)
{
	char key[32], val[512], buf[512];
	uint64_t end = t_now_ns() + CHURN_MS * 1000000ull;
	size_t n;

	srand(1000u + (unsigned)me);
	__sync_fetch_and_add(&sh->started, 1);
	while (!sh->stop && t_now_ns() < end) {
		for (int i = 0; i < 64; i++) {
			int op = rand() % 100, e;
			if (op < 40) {
				/* Overwrite a stable key: it stays present. */
				snprintf(key, sizeof(key), "s:%05d", rand() % STABLE);
				n = t_make_value(val, sizeof(val), key, (unsigned)rand(),
						 (size_t)(rand() % 300));
				e = ns_set(s, key, strlen(key), val, n, 0);
				if (e)
					sh->errors[me]++;
				continue;
			}
			snprintf(key, sizeof(key), "o:%05d", rand() % OTHER);
			if (op < 75) {
				n = t_make_value(val, sizeof(val), key, (unsigned)rand(),
						 (size_t)(rand() % 300));
				e = ns_set(s, key, strlen(key), val, n, 0);
				if (e)
					sh->errors[me]++;
			} else if (op < 90) {
				e = ns_del(s, key, strlen(key));
				if (e != 0 && e != NS_ENOTFOUND)
					sh->errors[me]++;
			} else {
				e = ns_get(s, key, strlen(key), buf, sizeof(buf), &n);
				if (e == 0 && t_check_value(buf, n, key) != 0)
					sh->bad[me]++;
				else if (e != 0 && e != NS_ENOTFOUND)
					sh->errors[me]++;
			}
		}
		sh->ops[me] += 64;
	}
}

static int other_key(const char *key, size_t klen)
{
	return klen == 7 && memcmp(key, "o:", 2) == 0;
}

static void test_scan_under_concurrent_writes(void **state)
{
	struct fx *f = *state;
	struct keyset ks = { 0 }, only = { 0 };
	char key[32];
	pid_t pid[2];

	for (int i = 0; i < STABLE; i++) {
		snprintf(key, sizeof(key), "s:%05d", i);
		set_str(f->a, key, (uint32_t)i);
		ks_add(&ks, key, strlen(key));
		ks_add(&only, key, strlen(key));
	}
	/* Some churn keys exist from the start too. */
	for (int i = 0; i < OTHER; i += 2) {
		snprintf(key, sizeof(key), "o:%05d", i);
		set_str(f->a, key, (uint32_t)i);
	}
	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "s:%05d", i); /* same names in B */
		set_str(f->b, key, (uint32_t)i);
	}
	ks_seal(&ks);
	ks_seal(&only);

	struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(sh != MAP_FAILED);
	memset(sh, 0, sizeof(*sh));
	for (int i = 0; i < 2; i++) {
		pid[i] = fork();
		assert_true(pid[i] >= 0);
		if (pid[i] == 0) {
			churn(f->a, sh, i);
			_exit(0);
		}
		churners[i] = pid[i];
	}
	while (sh->started < 2)
		usleep(1000);

	static const size_t counts[] = { 1, 7, 16, 100, 0 };
	uint64_t end = t_now_ns() + 3000 * 1000000ull;
	int scans = 0;
	const char *miss = NULL;
	while (scans < 5 || (t_now_ns() < end && scans < 150)) {
		size_t count = counts[scans % 5];
		const char *pat = scans % 2 ? "s:*" : NULL;
		struct keyset *k = pat ? &only : &ks;
		int r = scan_all(f->a, pat, count, 64, k, pat ? NULL : other_key);
		if (r != 0)
			fail_msg("scan %d = %d (%s)", scans, r, ns_strerror(r));
		size_t m = ks_missing(k, &miss);
		if (m)
			fail_msg("scan %d (count %zu, %s): %zu of %d stable keys "
				 "missing, e.g. %s", scans, count, pat ? pat : "all",
				 m, STABLE, miss);
		if (k->foreign)
			fail_msg("scan %d: foreign key %s", scans, k->first_foreign);
		scans++;
	}
	sh->stop = 1;
	for (int i = 0; i < 2; i++) {
		int st = t_wait(pid[i], 30000);
		churners[i] = 0;
		assert_true(st != -1 && WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 0);
		print_message("# child %d: %llu ops, %llu errors, %llu bad\n", i,
			      (unsigned long long)sh->ops[i],
			      (unsigned long long)sh->errors[i],
			      (unsigned long long)sh->bad[i]);
		assert_int_equal(sh->errors[i], 0);
		assert_int_equal(sh->bad[i], 0);
		assert_true(sh->ops[i] > 0);
	}
	print_message("# %d full scans during the writes\n", scans);
	munmap(sh, sizeof(*sh));
	ks_free(&ks);
	ks_free(&only);
	ns__recover_dead(f->c);
	t_assert_consistent(f->c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_full_scan_returns_every_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_namespace, setup, teardown),
		cmocka_unit_test_setup_teardown(test_glob_patterns, setup, teardown),
		cmocka_unit_test_setup_teardown(test_absent_keys_not_returned, setup, teardown),
		cmocka_unit_test_setup_teardown(test_erange_and_einval, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scan_under_concurrent_writes, setup_big, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
