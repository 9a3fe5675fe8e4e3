/*
 * test_crash.c - a process killed at any step of a write corrupts nothing.
 *
 * For every fault point of the write path, a victim process runs sets and
 * deletes until it SIGKILLs itself at that point, while two survivors keep
 * working on the same keys and time every operation.  Afterwards: the
 * victim really died at the point, no survivor operation waited longer than
 * a bound well under a second (a dead lock owner is detected and its work
 * recovered), recovery leaves a segment whose every chunk is accounted for,
 * and the whole key set fits again.  Then: a lock holder that is stopped
 * (alive) makes waiters fail with NS_EBUSY instead of hanging, and random
 * kills at arbitrary instants leave the segment consistent as well.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

#define KEYS 300
#define PRELOAD 200
#define SURVIVE_MS 700
#define LATENCY_BOUND_MS 500 /* "well under a second"; takeover needs ~2 ms */

static const char *points[] = {
	"alloc:taken",   "slab:popped",  "set:built",     "lock:taken",
	"over:claimed",  "set:intent",   "set:published", "set:unlocked",
	"set:retired",   "del:intent",   "del:unlinked",  "del:unlocked",
	"del:retired",   "key:locked",
};

static void key_of(char *k, size_t cap, int i) { snprintf(k, cap, "key%d", i); }

/* Keys a worker draws from; the victim uses twice as many, so its sets
 * keep growing chains and claiming overflow buckets. */
static int key_range = KEYS;

/* Run mixed ops; return the worst latency in ns, or UINT64_MAX on a bad
 * value or an unexpected error. */
static uint64_t work(ns_space *s, unsigned seed, uint64_t ms, int del_pct)
{
	char key[32], val[512], buf[512];
	uint64_t end = t_now_ns() + ms * 1000000ull, worst = 0;

	srand(seed);
	while (t_now_ns() < end) {
		int k = rand() % key_range, op = rand() % 100, e;
		size_t n;
		uint64_t t0 = t_now_ns();

		key_of(key, sizeof(key), k);
		if (op < 35) {
			e = ns_get(s, key, strlen(key), buf, sizeof(buf), &n);
			if (e == 0 && t_check_value(buf, n, key) != 0) {
				fprintf(stderr, "bad value for %s\n", key);
				return UINT64_MAX;
			}
			if (e != 0 && e != NS_ENOTFOUND) {
				fprintf(stderr, "get %s: %s\n", key, ns_strerror(e));
				return UINT64_MAX;
			}
		} else if (op < 40) {
			/* TTL changes and counters: the other writes that
			 * hold a bucket lock (ns_incr is a set inside). */
			char ctr[40];
			snprintf(ctr, sizeof(ctr), "ctr%d", k % 16);
			if (op < 38)
				e = (op & 1) ? ns_expire(s, key, strlen(key), 3600000)
					     : ns_persist(s, key, strlen(key));
			else
				e = ns_incr(s, ctr, strlen(ctr), 1, 0, 0, NULL);
			if (e != 0 && e != NS_ENOTFOUND) {
				fprintf(stderr, "ttl/incr %s: %s\n", key, ns_strerror(e));
				return UINT64_MAX;
			}
		} else if (op < 100 - del_pct) {
			n = t_make_value(val, sizeof(val), key, (unsigned)rand(),
					 (size_t)(rand() % 300));
			e = ns_set(s, key, strlen(key), val, n, 0);
			if (e != 0) {
				fprintf(stderr, "set %s: %s\n", key, ns_strerror(e));
				return UINT64_MAX;
			}
		} else {
			e = ns_del(s, key, strlen(key));
			if (e != 0 && e != NS_ENOTFOUND) {
				fprintf(stderr, "del %s: %s\n", key, ns_strerror(e));
				return UINT64_MAX;
			}
		}
		uint64_t dt = t_now_ns() - t0;
		if (dt > worst)
			worst = dt;
	}
	return worst;
}

static ns_cache *setup(const char *name, ns_space **s)
{
	/* A small index (64 buckets + 24 overflow) so chains overflow. */
	ns_cache *c = t_create(name, 32u << 20, 256);
	char key[32], val[512];

	assert_int_equal(ns_space_open(c, "crash:test", s), 0);
	for (int i = 0; i < PRELOAD; i++) {
		key_of(key, sizeof(key), i);
		size_t n = t_make_value(val, sizeof(val), key, (unsigned)i, 100);
		assert_int_equal(ns_set(*s, key, strlen(key), val, n, 0), 0);
	}
	return c;
}

static pid_t spawn_survivor(ns_cache *c, int fd, unsigned seed)
{
	pid_t p = fork();
	if (p == 0) {
		ns_space *s;
		uint64_t worst = UINT64_MAX;
		if (ns_space_open(c, "crash:test", &s) == 0)
			worst = work(s, seed, SURVIVE_MS, 20);
		if (write(fd, &worst, sizeof(worst)) != (ssize_t)sizeof(worst))
			_exit(2);
		_exit(worst == UINT64_MAX ? 1 : 0);
	}
	return p;
}

/* After the crash: recover, audit if a window was hit, check, refill. */
static void check_after(ns_cache *c, ns_space *s, const char *point)
{
	char key[32], val[512], buf[512];
	size_t n;

	ns__recover_dead(c);
	if (ns_load_relaxed(&c->hdr->audit_wanted)) {
		int64_t got = ns__audit(c);
		print_message("# %s: audit took back %lld chunk(s)\n", point, (long long)got);
		assert_true(got >= 0);
	}
	t_assert_consistent(c);
	/* Memory and locks are fully usable again: the whole key set fits. */
	for (int i = 0; i < KEYS; i++) {
		key_of(key, sizeof(key), i);
		n = t_make_value(val, sizeof(val), key, 99u, 200);
		assert_int_equal(ns_set(s, key, strlen(key), val, n, 0), 0);
	}
	for (int i = 0; i < KEYS; i++) {
		key_of(key, sizeof(key), i);
		int e = ns_get(s, key, strlen(key), buf, sizeof(buf), &n);
		if (e != 0)
			print_error("%s: key %s after refill: %s\n", point, key, ns_strerror(e));
		assert_int_equal(e, 0);
		assert_int_equal(t_check_value(buf, n, key), 0);
	}
	t_assert_consistent(c);
}

static void kill_at_each_fault_point(void **state)
{
	(void)state;
	if (!ns__fault_set(NULL, 'k'))
		skip(); /* release build: no fault points compiled in */

	for (size_t pi = 0; pi < sizeof(points) / sizeof(points[0]); pi++) {
		const char *point = points[pi];
		const char *name = t_name("crash");
		ns_space *s;
		ns_cache *c = setup(name, &s);
		int fds[2][2];
		pid_t surv[2], victim;

		for (int i = 0; i < 2; i++) {
			assert_int_equal(pipe(fds[i]), 0);
			surv[i] = spawn_survivor(c, fds[i][1], 11u + (unsigned)i);
			close(fds[i][1]);
		}
		victim = fork();
		if (victim == 0) {
			ns__fault_set(point, 'k');
			key_range = 2 * KEYS;
			/* Mostly sets of new keys (overflow claims), many
			 * deletes (free-list traffic), until the point fires. */
			work(s, 3u, 10000, 45);
			_exit(0); /* not reached if the point fired */
		}
		int st = t_wait(victim, 15000);
		if (!(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL))
			print_error("victim at %s: status %d\n", point, st);
		assert_true(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

		for (int i = 0; i < 2; i++) {
			uint64_t worst = UINT64_MAX;
			st = t_wait(surv[i], 20000);
			ssize_t rd = read(fds[i][0], &worst, sizeof(worst));
			close(fds[i][0]);
			assert_true(st != -1 && WIFEXITED(st));
			assert_int_equal(WEXITSTATUS(st), 0);
			assert_int_equal(rd, sizeof(worst));
			if (worst > LATENCY_BOUND_MS * 1000000ull)
				print_error("%s: survivor waited %llu ms\n", point,
					    (unsigned long long)(worst / 1000000));
			assert_true(worst <= LATENCY_BOUND_MS * 1000000ull);
		}
		check_after(c, s, point);
		print_message("# %s: ok (recoveries so far %llu)\n", point,
			      (unsigned long long)c->hdr->recoveries);
		ns_detach(c);
		ns_unlink(name);
	}
}

/* A lock owner that is alive but stopped: waiters give up with NS_EBUSY
 * after NS_LOCK_TIMEOUT_MS instead of hanging; once it is killed, the next
 * operation takes the lock over at once. */
static void stopped_owner_gives_ebusy_then_takeover(void **state)
{
	(void)state;
	if (!ns__fault_set(NULL, 'k'))
		skip();
	const char *name = t_name("stop");
	ns_space *s;
	ns_cache *c = setup(name, &s);
	char val[256];

	pid_t p = fork();
	if (p == 0) {
		ns__fault_set("set:intent", 's');
		size_t n = t_make_value(val, sizeof(val), "key1", 1u, 50);
		ns_set(s, "key1", 4, val, n, 0);
		_exit(0);
	}
	int st = t_wait(p, 10000); /* returns when it stops (WUNTRACED) */
	assert_true(st != -1 && WIFSTOPPED(st));

	size_t n = t_make_value(val, sizeof(val), "key1", 2u, 50);
	uint64_t t0 = t_now_ns();
	assert_int_equal(ns_set(s, "key1", 4, val, n, 0), NS_EBUSY);
	uint64_t waited = (t_now_ns() - t0) / 1000000;
	assert_true(waited >= NS_LOCK_TIMEOUT_MS);

	kill(p, SIGKILL);
	waitpid(p, &st, 0);
	t0 = t_now_ns();
	assert_int_equal(ns_set(s, "key1", 4, val, n, 0), 0);
	waited = (t_now_ns() - t0) / 1000000;
	print_message("# takeover after the owner died: %llu ms\n", (unsigned long long)waited);
	assert_true(waited < LATENCY_BOUND_MS);
	check_after(c, s, "stopped owner");
	ns_detach(c);
	ns_unlink(name);
}

/* A chunk leaked by a client killed between popping it off a free list and
 * recording it comes back through the audit while other clients keep
 * writing (the live audit's handshake), nothing in use is taken, and the
 * audit finishes while they write. */
static void live_audit_takes_back_a_leak(void **state)
{
	(void)state;
	if (!ns__fault_set(NULL, 'k'))
		skip();
	const char *name = t_name("live");
	ns_space *s;
	ns_cache *c = setup(name, &s);
	int st = 0, fds[2];

	for (int tries = 0; tries < 5; tries++) {
		pid_t v = fork();
		if (v == 0) {
			ns__fault_set("slab:popped", 'k');
			work(s, 77u + (unsigned)tries, 3000, 45);
			_exit(0);
		}
		st = t_wait(v, 10000);
		if (st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
			break;
	}
	assert_true(WIFSIGNALED(st));
	ns__recover_dead(c);
	assert_true(ns_load_relaxed(&c->hdr->audit_wanted) != 0);
	/* The check names the leaked chunk and what it last was: popped off
	 * a free list, so free. */
	struct ns_verify_report rep;
	assert_int_equal(ns__verify(c, &rep), NS_ECORRUPT);
	assert_int_equal(rep.leaked, 1);
	print_message("# verify: %s\n", rep.first_error);
	assert_non_null(strstr(rep.first_error, "the first at offset"));
	assert_non_null(strstr(rep.first_error, "state free)"));

	assert_int_equal(pipe(fds), 0);
	pid_t w[2] = { spawn_survivor(c, fds[1], 5u), spawn_survivor(c, fds[1], 6u) };
	/* Both writers attached (and this process): the audit runs live. */
	int64_t got = t_audit_live(c, 3);
	print_message("# live audit took back %lld chunk(s)\n", (long long)got);
	assert_true(got >= 1);
	/* With nothing leaked, audits during the writes take nothing: a
	 * chunk in use taken back would also show as a bad value below. */
	int clean = 0, busy = 0;
	for (int i = 0; i < 200 && clean < 20; i++) {
		int64_t again = ns__audit(c);
		if (again == NS_EBUSY) {
			busy++;
			continue;
		}
		assert_int_equal(again, 0);
		clean++;
	}
	print_message("# %d more live audits took nothing (%d gave up)\n", clean, busy);
	/* Writers at work must not keep the audit from finishing: it gave
	 * up 4 times in 5 when it needed every list to hold still. */
	assert_true(busy * 4 <= clean);
	for (int i = 0; i < 2; i++) {
		uint64_t worst;
		assert_int_equal(read(fds[0], &worst, sizeof(worst)), (ssize_t)sizeof(worst));
		assert_true(worst != UINT64_MAX); /* no torn or foreign value */
		st = t_wait(w[i], 10000);
		assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	close(fds[0]);
	close(fds[1]);
	/* Alone now: every chunk accounted for, none twice. */
	check_after(c, s, "live audit");
	ns_detach(c);
	ns_unlink(name);
}

/* Kills at arbitrary instants, not only at fault points. */
static void random_kills_leave_segment_consistent(void **state)
{
	(void)state;
	const char *name = t_name("rand");
	ns_space *s;
	ns_cache *c = setup(name, &s);

	srand(12345);
	for (int round = 0; round < 30; round++) {
		pid_t p = fork();
		if (p == 0) {
			work(s, (unsigned)round, 10000, 30);
			_exit(0);
		}
		usleep(2000 + (useconds_t)(rand() % 20000));
		kill(p, SIGKILL);
		int st = t_wait(p, 10000);
		assert_true(st != -1);
		ns__recover_dead(c);
	}
	check_after(c, s, "random kills");
	ns_detach(c);
	ns_unlink(name);
}

/* Regression: a write or delete killed after it released the bucket lock
 * but before its intent said UNLOCKED left phase PUBLISHED with the lock
 * no longer naming its slot.  Recovery then trusted neither the chain nor
 * the phase, did not retire the unlinked old item, cleared the intent, and
 * nobody named the chunk again: leaked = 1 with no audit requested (the
 * 1-in-4 failure of random_kills_leave_segment_consistent under valgrind).
 * Killed at exactly that point, recovery alone must account for it. */
static void test_old_item_leaked_when_killed_after_unlock(void **state)
{
	(void)state;
	if (!ns__fault_set(NULL, 'k'))
		skip();
	static const char *const at[] = { "set:released", "del:released" };

	for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		const char *name = t_name("released");
		ns_space *s;
		ns_cache *c = setup(name, &s);
		struct ns_verify_report rep;
		char val[256];

		pid_t p = fork();
		if (p == 0) {
			ns__fault_set(at[i], 'k');
			/* key7 exists (preloaded): both ops unlink an old item. */
			if (at[i][0] == 's') {
				size_t n = t_make_value(val, sizeof(val), "key7", 5u, 80);
				ns_set(s, "key7", 4, val, n, 0);
			} else {
				ns_del(s, "key7", 4);
			}
			_exit(0); /* not reached: the point fires */
		}
		int st = t_wait(p, 10000);
		assert_true(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
		ns__recover_dead(c);
		int r = ns__verify(c, &rep);
		print_message("# %s: leaked %llu, audit wanted %u\n", at[i],
			      (unsigned long long)rep.leaked,
			      ns_load_relaxed(&c->hdr->audit_wanted));
		/* Recovery itself names the old item: no leak, no audit. */
		assert_int_equal(rep.leaked, 0);
		assert_int_equal(r, 0);
		assert_int_equal(ns_load_relaxed(&c->hdr->audit_wanted), 0);
		check_after(c, s, at[i]);
		ns_detach(c);
		ns_unlink(name);
	}
}

/* Regression: a client killed in reclaim after it took the last chunk off
 * its retire list's head but before it cleared the tail left an empty list
 * whose tail named a chunk that was free again.  Recovery kept that tail,
 * so the slot's next owner appended its first retired item to the free
 * chunk (rewriting its link) instead of to its list, and lost it. */
static void test_stale_retire_tail_after_reclaim_kill(void **state)
{
	(void)state;
	if (!ns__fault_set(NULL, 'k'))
		skip();
	const char *name = t_name("tail");
	ns_space *s;
	ns_cache *c = setup(name, &s);
	char key[32], val[256];

	pid_t p = fork();
	if (p == 0) {
		ns__fault_set("reclaim:emptied", 'k');
		/* Replacing sets retire old items; a full batch reclaims. */
		for (int i = 0; i < 4096; i++) {
			key_of(key, sizeof(key), i % PRELOAD);
			size_t n = t_make_value(val, sizeof(val), key, (unsigned)i, 60);
			ns_set(s, key, strlen(key), val, n, 0);
		}
		_exit(0); /* not reached: the point fires */
	}
	int st = t_wait(p, 10000);
	assert_true(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	uint32_t victim = UINT32_MAX;
	for (uint32_t i = 0; i < c->nslots; i++)
		if (c->slots[i].pid == (int32_t)p)
			victim = i;
	assert_true(victim != UINT32_MAX);
	struct ns_slot_shm *sl = &c->slots[victim];
	assert_true(sl->retire_head == 0 && sl->retire_tail != 0); /* the window */
	ns__recover_dead(c);
	assert_int_equal(ns_load_relaxed(&sl->state), NS_SLOT_FREE);
	/* What the next owner of the slot appends to. */
	assert_int_equal(sl->retire_head, 0);
	assert_int_equal(sl->retire_tail, 0);
	assert_int_equal(sl->retire_count, 0);
	check_after(c, s, "reclaim:emptied");
	ns_detach(c);
	ns_unlink(name);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(kill_at_each_fault_point),
		cmocka_unit_test(stopped_owner_gives_ebusy_then_takeover),
		cmocka_unit_test(live_audit_takes_back_a_leak),
		cmocka_unit_test(random_kills_leave_segment_consistent),
		cmocka_unit_test(test_old_item_leaked_when_killed_after_unlock),
		cmocka_unit_test(test_stale_retire_tail_after_reclaim_kill),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
