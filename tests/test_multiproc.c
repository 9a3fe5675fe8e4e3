/*
 * test_multiproc.c - several processes hammer one key set.
 *
 * Two workers use the handle their parent attached before fork(), two
 * attach on their own after fork() and first map some memory so that the
 * segment lands at a different address; one more process runs four threads
 * (one client slot each).  Every value names its key and carries a
 * checksum: not one read may return a torn or foreign value.
 */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

#define KEYS 1000
#define RUN_MS 1500

struct result {
	uint64_t ops, hits, misses, bad, errors;
	uintptr_t base;
};

static void hammer(ns_space *s, unsigned seed, uint64_t run_ms, struct result *r)
{
	char key[32], val[1024], buf[1024];
	uint64_t end = t_now_ns() + run_ms * 1000000ull;

	srand(seed);
	while (t_now_ns() < end) {
		for (int i = 0; i < 64; i++) {
			int k = rand() % KEYS, op = rand() % 100, e;
			size_t n;
			snprintf(key, sizeof(key), "k%d", k);
			if (op < 60) {
				e = ns_get(s, key, strlen(key), buf, sizeof(buf), &n);
				if (e == 0) {
					r->hits++;
					if (t_check_value(buf, n, key) != 0)
						r->bad++;
				} else if (e == NS_ENOTFOUND) {
					r->misses++;
				} else {
					r->errors++;
				}
			} else if (op < 90) {
				n = t_make_value(val, sizeof(val), key, (unsigned)rand(),
						 (size_t)(rand() % 600));
				e = ns_set(s, key, strlen(key), val, n, 0);
				if (e != 0)
					r->errors++;
			} else {
				e = ns_del(s, key, strlen(key));
				if (e != 0 && e != NS_ENOTFOUND)
					r->errors++;
			}
			r->ops++;
		}
	}
}

static void child(ns_cache *inherited, const char *name, int fd, unsigned seed)
{
	struct result r = { 0 };
	ns_cache *c = inherited;
	ns_space *s;

	if (c == NULL) {
		/* Push the mapping elsewhere: map some memory of a size no
		 * other process uses first. */
		void *junk = mmap(NULL, (size_t)(seed % 7 + 1) << 22, PROT_READ,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		(void)junk;
		if (ns_attach(name, NULL, &c) != 0)
			_exit(3);
	}
	if (ns_space_open(c, "test:multi", &s) != 0)
		_exit(4);
	r.base = (uintptr_t)c->base;
	hammer(s, seed, RUN_MS, &r);
	if (write(fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
		_exit(5);
	_exit(r.bad || r.errors ? 1 : 0);
}

struct thr_arg {
	ns_space *s;
	unsigned seed;
	struct result r;
};

static void *thr_main(void *p)
{
	struct thr_arg *a = p;
	hammer(a->s, a->seed, RUN_MS, &a->r);
	return NULL;
}

static void threaded_child(ns_cache *c, int fd)
{
	pthread_t th[4];
	struct thr_arg a[4];
	struct result r = { 0 };
	ns_space *s;

	if (ns_space_open(c, "test:multi", &s) != 0)
		_exit(4);
	for (int i = 0; i < 4; i++) {
		memset(&a[i], 0, sizeof(a[i]));
		a[i].s = s;
		a[i].seed = 100u + (unsigned)i;
		pthread_create(&th[i], NULL, thr_main, &a[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		r.ops += a[i].r.ops;
		r.hits += a[i].r.hits;
		r.misses += a[i].r.misses;
		r.bad += a[i].r.bad;
		r.errors += a[i].r.errors;
	}
	r.base = (uintptr_t)c->base;
	if (write(fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
		_exit(5);
	_exit(r.bad || r.errors ? 1 : 0);
}

static void five_processes_no_torn_values(void **state)
{
	(void)state;
	const char *name = t_name("multi");
	ns_cache *c = t_create(name, 32u << 20, 20000);
	ns_space *s;
	pid_t pid[5];
	int fds[5][2];
	struct result r[5];

	assert_int_equal(ns_space_open(c, "test:multi", &s), 0);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(pipe(fds[i]), 0);
		pid[i] = fork();
		assert_true(pid[i] >= 0);
		if (pid[i] == 0) {
			close(fds[i][0]);
			if (i == 4)
				threaded_child(c, fds[i][1]);
			child(i < 2 ? c : NULL, name, fds[i][1], 7u + (unsigned)i);
		}
		close(fds[i][1]);
	}
	uint64_t total = 0, hits = 0;
	for (int i = 0; i < 5; i++) {
		int st = t_wait(pid[i], 60000);
		ssize_t n = read(fds[i][0], &r[i], sizeof(r[i]));
		close(fds[i][0]);
		if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || n != sizeof(r[i]))
			print_error("worker %d: status %d read %zd bad %llu errors %llu\n", i,
				    st, n, (unsigned long long)r[i].bad,
				    (unsigned long long)r[i].errors);
		assert_true(st != -1 && WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 0);
		assert_int_equal(n, sizeof(r[i]));
		assert_int_equal(r[i].bad, 0);
		assert_int_equal(r[i].errors, 0);
		assert_true(r[i].ops > 1000);
		total += r[i].ops;
		hits += r[i].hits;
	}
	print_message("# %llu ops, %llu hits across 5 processes (8 slots)\n",
		      (unsigned long long)total, (unsigned long long)hits);
	assert_true(hits > 0);
	/* The workers that attached after fork mapped it elsewhere. */
	assert_true(r[2].base != (uintptr_t)c->base || r[3].base != (uintptr_t)c->base);
	assert_int_equal(r[0].base, (uintptr_t)c->base);
	ns__recover_dead(c);
	t_assert_consistent(c);
	ns_detach(c);
	ns_unlink(name);
}

/* Every thread and every child gets a slot of its own, and gives it back. */
static void slots_follow_threads_and_children(void **state)
{
	(void)state;
	const char *name = t_name("slots");
	ns_cache *c = t_create(name, 8u << 20, 1000);
	ns_space *s;
	int err = 0;

	assert_int_equal(ns_space_open(c, "test:slots", &s), 0);
	assert_int_equal(ns_set(s, "a", 1, "1", 1, 0), 0);
	struct ns_thr *mine = ns__thr(c, &err);
	assert_non_null(mine);
	pid_t p = fork();
	if (p == 0) {
		char buf[8];
		size_t n;
		struct ns_thr *t = ns__thr(c, &err);
		int ok = t != NULL && t != mine && t->idx != mine->idx &&
			 ns_get(s, "a", 1, buf, sizeof(buf), &n) == 0;
		_exit(ok ? 0 : 1);
	}
	int st = t_wait(p, 10000);
	assert_true(st != -1 && WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	/* The child's slot is dead now; recovery frees it. */
	ns__recover_dead(c);
	uint32_t active = 0;
	for (uint32_t i = 0; i < c->nslots; i++)
		active += c->slots[i].state != NS_SLOT_FREE;
	assert_int_equal(active, 1);
	ns_detach(c);
	ns_unlink(name);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(five_processes_no_torn_values),
		cmocka_unit_test(slots_follow_threads_and_children),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
