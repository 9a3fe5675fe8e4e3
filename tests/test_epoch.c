/*
 * test_epoch.c - cross-process epoch reclamation: an item retired while a
 * reader in another process is inside its read section is not freed until
 * that reader leaves; a reader killed inside its read section does not
 * block reclamation for ever.  The first scenario runs twice: with the
 * reclaimer's membarrier (when the kernel has it) and, in a re-executed
 * copy of this binary with NS_NO_MEMBARRIER=1, with the reader's fence.
 */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <linux/filter.h>
#include <linux/membarrier.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

#define SEG_SIZE (8u << 20)
#define SEG_ITEMS 1024
#define WAIT_MS 10000
/* Retired items before ns__reclaim checks whether its blocker is dead
 * (NS_RETIRE_MIN_STUCK in epoch.c). */
#define RETIRE_MIN_STUCK 16
#define NO_MB_ARG "--no-membarrier-scenario"
#define SANDBOX_ARG "--reclaim-without-membarrier"

/* ---- helpers ------------------------------------------------------------ */

static ns_off_t find_item(ns_space *s, const char *key)
{
	return t_find_item(s, key, strlen(key));
}

static void set_ok(ns_space *s, const char *key, uint32_t seed)
{
	char val[96];
	size_t vl = t_make_value(val, sizeof(val), key, seed, 40);
	int r = ns_set(s, key, strlen(key), val, vl, 0);
	if (r != 0)
		fail_msg("set %s = %d (%s)", key, r, ns_strerror(r));
}

/* One byte from FD within MS milliseconds, or -1. */
static int read_byte(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char ch;

	for (;;) {
		int r = poll(&p, 1, ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		return read(fd, &ch, 1) == 1 ? (unsigned char)ch : -1;
	}
}

static void write_byte(int fd, char ch)
{
	ssize_t r;
	do
		r = write(fd, &ch, 1);
	while (r < 0 && errno == EINTR);
}

static bool in_cache(struct ns_slot_shm *s, int cls, ns_off_t off)
{
	for (int i = 0; i < s->cache_n[cls]; i++)
		if (s->cache[cls][i] == off)
			return true;
	return false;
}

/* The slot a live process PID is reading in, or NULL. */
static struct ns_slot_shm *reader_slot(ns_cache *c, pid_t pid)
{
	for (uint32_t i = 0; i < c->nslots; i++)
		if (c->slots[i].state == NS_SLOT_ACTIVE && c->slots[i].pid == pid &&
		    c->slots[i].epoch != 0)
			return &c->slots[i];
	return NULL;
}

struct reader {
	pid_t pid;
	int to_child, from_child;
};

/*
 * Fork a reader: it binds a slot of its own (the handle is inherited),
 * enters a read section, says 'e', and waits.  On 'g' it leaves the read
 * section, says 'x' and exits 0.  With HANG it never leaves (to be killed).
 */
static struct reader start_reader(ns_cache *c, bool hang)
{
	int p2c[2], c2p[2];
	struct reader r;

	assert_int_equal(pipe(p2c), 0);
	assert_int_equal(pipe(c2p), 0);
	fflush(stdout);
	fflush(stderr);
	r.pid = fork();
	assert_true(r.pid >= 0);
	if (r.pid == 0) {
		int err = 0;
		close(p2c[1]);
		close(c2p[0]);
		struct ns_thr *t = ns__thr(c, &err);
		if (t == NULL)
			_exit(2);
		ns__read_enter(c, t->slot);
		write_byte(c2p[1], 'e');
		if (hang)
			for (;;)
				pause();
		if (read_byte(p2c[0], WAIT_MS) != 'g')
			_exit(3);
		ns__read_exit(t->slot);
		write_byte(c2p[1], 'x');
		_exit(0);
	}
	close(p2c[0]);
	close(c2p[1]);
	r.to_child = p2c[1];
	r.from_child = c2p[0];
	if (read_byte(r.from_child, WAIT_MS) != 'e') {
		kill(r.pid, SIGKILL);
		t_wait(r.pid, WAIT_MS);
		fail_msg("reader %d never entered its read section", (int)r.pid);
	}
	return r;
}

static void kill_reader(struct reader *r)
{
	kill(r->pid, SIGKILL);
	int st = t_wait(r->pid, WAIT_MS);
	assert_true(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	close(r->to_child);
	close(r->from_child);
}

struct fx {
	char name[64];
	ns_cache *c;
	ns_space *s;
	struct ns_thr *t;
};

static void fx_open(struct fx *f)
{
	int err = 0;
	snprintf(f->name, sizeof(f->name), "%s", t_name("epoch"));
	f->c = t_create(f->name, SEG_SIZE, SEG_ITEMS);
	assert_int_equal(ns_space_open(f->c, "test:epoch", &f->s), 0);
	f->t = ns__thr(f->c, &err);
	assert_non_null(f->t);
}

static void fx_close(struct fx *f)
{
	ns_detach(f->c);
	ns_unlink(f->name);
}

/* ---- the scenarios ------------------------------------------------------ */

static void retired_item_outlives_reader(struct fx *f)
{
	ns_cache *c = f->c;
	struct ns_slot_shm *me = f->t->slot;

	set_ok(f->s, "k", 1);
	ns_off_t old = find_item(f->s, "k");
	int cls = ns__class_of(c, old);
	assert_true(old != 0 && cls >= 0);
	uint32_t csize = c->classes[cls].size;

	struct reader r = start_reader(c, false);
	struct ns_slot_shm *rs = reader_slot(c, r.pid);
	assert_non_null(rs);
	assert_int_equal(me->retire_count, 0);

	/* Overwrite: the old item is unlinked and retired, not freed. */
	set_ok(f->s, "k", 2);
	assert_true(find_item(f->s, "k") != old);
	assert_int_equal(me->retire_count, 1);
	unsigned char *snap = malloc(csize);
	memcpy(snap, c->base + old, csize);

	for (int i = 0; i < 200; i++) {
		size_t freed = ns__reclaim(c, f->t);
		if (freed != 0 || me->retire_count != 1)
			fail_msg("pass %d with reader in epoch %llu (global %llu): freed %zu, "
				 "retire_count %llu", i, (unsigned long long)rs->epoch,
				 (unsigned long long)c->hdr->epoch, freed,
				 (unsigned long long)me->retire_count);
	}
	assert_memory_equal(c->base + old, snap, csize);
	assert_false(in_cache(me, cls, old));
	/* A new item of the same class does not get the old chunk. */
	set_ok(f->s, "k2", 3);
	assert_true(find_item(f->s, "k2") != old);
	assert_memory_equal(c->base + old, snap, csize);

	/* The reader leaves: the next pass frees the chunk, and the next
	 * item of its class reuses it. */
	write_byte(r.to_child, 'g');
	assert_int_equal(read_byte(r.from_child, WAIT_MS), 'x');
	int st = t_wait(r.pid, WAIT_MS);
	assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	close(r.to_child);
	close(r.from_child);
	assert_int_equal(ns__reclaim(c, f->t), 1);
	assert_int_equal(me->retire_count, 0);
	set_ok(f->s, "k3", 4);
	assert_int_equal(find_item(f->s, "k3"), old);

	free(snap);
	ns__recover_dead(c); /* the reader exited without detaching */
	t_assert_consistent(c);
}

static void test_retired_item_outlives_reader_in_other_process(void **state)
{
	struct fx f;
	(void)state;
	fx_open(&f);
	print_message("# membarrier in this process: %s\n",
		      f.c->membarrier_ok ? "yes (reclaimer pays the fence)"
					 : "no (reader pays the fence)");
	assert_int_equal(!!(f.t->slot->flags & NS_SLOTF_MEMBARRIER), f.c->membarrier_ok);
	retired_item_outlives_reader(&f);
	fx_close(&f);
}

/* Run in the re-executed binary, with NS_NO_MEMBARRIER=1 before the first
 * attach: readers pay the full fence themselves. */
static void test_no_membarrier_scenario(void **state)
{
	struct fx f;
	(void)state;
	assert_non_null(getenv("NS_NO_MEMBARRIER"));
	fx_open(&f);
	assert_false(f.c->membarrier_ok);
	assert_int_equal(f.t->slot->flags & NS_SLOTF_MEMBARRIER, 0);
	retired_item_outlives_reader(&f);
	fx_close(&f);
}

static void test_retired_item_outlives_reader_without_membarrier(void **state)
{
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	(void)state;

	assert_true(n > 0);
	self[n] = '\0';
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* Its TAP goes to our stderr, so that our stdout stays one
		 * TAP stream; its exit status is its failure count. */
		dup2(2, 1);
		setenv("NS_NO_MEMBARRIER", "1", 1);
		execl(self, self, NO_MB_ARG, (char *)NULL);
		_exit(127);
	}
	int st = t_wait(pid, 30000);
	if (!(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0))
		fail_msg("%s %s with NS_NO_MEMBARRIER=1: status %#x", self, NO_MB_ARG, st);
}

/*
 * A reclaimer that cannot issue membarrier (a sandbox denies the syscall)
 * while a reader in another process relies on it (its slot has
 * NS_SLOTF_MEMBARRIER: it pays only a compiler barrier on entry).  Such a
 * reader's epoch store may still sit in its store buffer while it loads the
 * index, so the reclaimer cannot know it is outside: it must free nothing
 * (reader_floor documents "0 when that cannot be known").  With no such
 * reader attached the same reclaimer frees.
 *
 * Runs in the re-executed binary: argv = self SANDBOX_ARG name keep|free.
 * Exit 0 when the expectation held, 1 when not, 77 without seccomp.
 */
static int sandboxed_reclaimer(const char *name, bool expect_keep)
{
	struct sock_filter filt[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_membarrier, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(filt) / sizeof(filt[0]), .filter = filt };
	ns_cache *c = NULL;
	ns_space *s = NULL;
	int err = 0;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
		return 77;
	if (syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0) != -1 || errno != EPERM)
		return 77;
	if (ns_attach(name, NULL, &c) != 0 || ns_space_open(c, "test:epoch", &s) != 0)
		return 2;
	struct ns_thr *t = ns__thr(c, &err);
	if (t == NULL || c->membarrier_ok)
		return 2;
	char val[8] = "sandbox";
	if (ns_set(s, "k", 1, val, sizeof(val), 0) != 0 || t->slot->retire_count != 1)
		return 2;
	size_t freed = ns__reclaim(c, t);
	fprintf(stderr, "# reclaimer without membarrier, %s membarrier reader attached: "
		"freed %zu\n", expect_keep ? "a" : "no", freed);
	/* Exit without detaching: the slot and its retire list stay for the
	 * parent's ns__recover_dead. */
	return (expect_keep ? freed == 0 : freed == 1) ? 0 : 1;
}

static int run_sandboxed(const char *name, const char *mode)
{
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	assert_true(n > 0);
	self[n] = '\0';
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(2, 1);
		execl(self, self, SANDBOX_ARG, name, mode, (char *)NULL);
		_exit(127);
	}
	int st = t_wait(pid, 30000);
	assert_true(st != -1 && WIFEXITED(st));
	return WEXITSTATUS(st);
}

static void test_reclaimer_without_membarrier_respects_membarrier_readers(void **state)
{
	struct fx f;
	(void)state;

	fx_open(&f);
	if (!f.c->membarrier_ok) {
		fx_close(&f);
		print_message("# no membarrier here: no reader relies on it\n");
		skip();
	}
	set_ok(f.s, "k", 1);
	assert_true(f.t->slot->flags & NS_SLOTF_MEMBARRIER);
	assert_int_equal(f.t->slot->epoch, 0); /* looks outside: the point */

	/* Control first: with our slot gone, the sandboxed reclaimer frees. */
	char name[64];
	snprintf(name, sizeof(name), "%s", f.name);
	ns_detach(f.c);
	int r = run_sandboxed(name, "free");
	if (r == 77) {
		ns_unlink(name);
		print_message("# seccomp filters unavailable\n");
		skip();
	}
	assert_int_equal(r, 0);

	/* Now with a membarrier reader attached (our slot, outside a read
	 * section as far as anyone can see). */
	assert_int_equal(ns_attach(name, NULL, &f.c), 0);
	assert_int_equal(ns_space_open(f.c, "test:epoch", &f.s), 0);
	int err = 0;
	f.t = ns__thr(f.c, &err);
	assert_non_null(f.t);
	assert_true(f.t->slot->flags & NS_SLOTF_MEMBARRIER);
	r = run_sandboxed(name, "keep");
	ns__recover_dead(f.c);
	t_assert_consistent(f.c);
	fx_close(&f);
	if (r != 0)
		fail_msg("a reclaimer whose membarrier is denied freed an item while a "
			 "reader relying on membarrier was attached (exit %d)", r);
}

/* A reader killed inside its read section: once enough is retired, one
 * ns__reclaim finds the blocker dead, recovers its slot, and frees. */
static void test_dead_reader_does_not_block_reclaim(void **state)
{
	struct fx f;
	char key[32];
	(void)state;

	fx_open(&f);
	ns_cache *c = f.c;
	struct ns_slot_shm *me = f.t->slot;
	for (int i = 0; i < RETIRE_MIN_STUCK; i++) {
		snprintf(key, sizeof(key), "d%d", i);
		set_ok(f.s, key, (uint32_t)i);
	}
	struct reader r = start_reader(c, true);
	struct ns_slot_shm *rs = reader_slot(c, r.pid);
	assert_non_null(rs);

	/* Blocked while the reader lives. */
	set_ok(f.s, "d0", 100);
	assert_int_equal(ns__reclaim(c, f.t), 0);
	assert_int_equal(me->retire_count, 1);

	kill_reader(&r);
	assert_int_equal(rs->state, NS_SLOT_ACTIVE); /* nobody recovered it yet */
	assert_true(rs->epoch != 0);
	for (int i = 1; i < RETIRE_MIN_STUCK; i++) {
		snprintf(key, sizeof(key), "d%d", i);
		set_ok(f.s, key, 100u + (uint32_t)i);
	}
	assert_int_equal(me->retire_count, RETIRE_MIN_STUCK);
	size_t freed = ns__reclaim(c, f.t);
	if (freed != RETIRE_MIN_STUCK || me->retire_count != 0)
		fail_msg("after the reader died: freed %zu of %d, %llu still retired",
			 freed, RETIRE_MIN_STUCK, (unsigned long long)me->retire_count);
	assert_int_equal(rs->epoch, 0);
	assert_int_equal(rs->state, NS_SLOT_FREE);
	t_assert_consistent(c);
	fx_close(&f);
}

/* The same dead reader, taken back by ns__recover_dead instead. */
static void test_recover_dead_releases_dead_readers_epoch(void **state)
{
	struct fx f;
	(void)state;

	fx_open(&f);
	ns_cache *c = f.c;
	struct ns_slot_shm *me = f.t->slot;
	set_ok(f.s, "k", 1);
	struct reader r = start_reader(c, true);
	struct ns_slot_shm *rs = reader_slot(c, r.pid);
	assert_non_null(rs);
	set_ok(f.s, "k", 2);
	assert_int_equal(ns__reclaim(c, f.t), 0);
	assert_int_equal(me->retire_count, 1);

	kill_reader(&r);
	assert_int_equal(ns__recover_dead(c), 1);
	assert_int_equal(rs->epoch, 0);
	assert_int_equal(rs->state, NS_SLOT_FREE);
	assert_int_equal(ns__reclaim(c, f.t), 1);
	assert_int_equal(me->retire_count, 0);
	t_assert_consistent(c);
	fx_close(&f);
}

/*
 * A reader paused inside its read section (here: it leaves PAUSE_MS after
 * being told to; in the torture, a client SIGSTOPped there) holds back
 * every chunk retired meanwhile.  A writer that churns one key retires the
 * whole segment within that pause; the store that then finds no memory
 * must wait for the grace period (bounded, NS_ALLOC_WAIT_MS in slab.c),
 * not fail with NS_ENOMEM: the memory is retired, not live.  Before the
 * wait, ns__alloc gave up after rounds that last well under a millisecond.
 */
#define PAUSE_MS 200
#define BIG_VALUE (100u << 10)

static void test_enomem_while_reader_paused(void **state)
{
	struct fx f;
	(void)state;

	fx_open(&f);
	ns_cache *c = f.c;
	char *val = malloc(BIG_VALUE);
	assert_non_null(val);
	memset(val, 'v', BIG_VALUE);
	int cls = ns__class_for(c, sizeof(struct ns_item_shm) + 1 + BIG_VALUE);
	assert_true(cls >= 0);
	/* Enough stores to retire every chunk of the segment several times. */
	uint64_t chunks = (uint64_t)c->npages * c->classes[cls].per_page;
	assert_int_equal(ns_set(f.s, "k", 1, val, BIG_VALUE, 0), 0);

	/* The reader enters, and leaves PAUSE_MS after 'g' (we are inside
	 * ns_set by then, and cannot tell it to). */
	int p2c[2], c2p[2];
	assert_int_equal(pipe(p2c), 0);
	assert_int_equal(pipe(c2p), 0);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int err = 0;
		struct ns_thr *t = ns__thr(c, &err);

		/* The child does not need the value: memcheck, tracing children,
		 * would count the inherited block as leaked at its exit. */
		free(val);
		if (t == NULL)
			_exit(2);
		ns__read_enter(c, t->slot);
		write_byte(c2p[1], 'e');
		if (read_byte(p2c[0], WAIT_MS) != 'g')
			_exit(3);
		usleep(PAUSE_MS * 1000);
		ns__read_exit(t->slot);
		_exit(0);
	}
	assert_int_equal(read_byte(c2p[0], WAIT_MS), 'e');
	assert_non_null(reader_slot(c, pid));
	write_byte(p2c[1], 'g');

	uint64_t t0 = t_now_ns(), blocked_ns = 0;
	for (uint64_t i = 0; i < 3 * chunks + 8; i++) {
		uint64_t s0 = t_now_ns();
		int r = ns_set(f.s, "k", 1, val, BIG_VALUE, 0);
		if (r != 0)
			fail_msg("set %llu of %llu (%llu chunks of %u bytes), %llu ms after the "
				 "reader's pause began: %d (%s)", (unsigned long long)i,
				 (unsigned long long)(3 * chunks + 8), (unsigned long long)chunks,
				 c->classes[cls].size,
				 (unsigned long long)((t_now_ns() - t0) / 1000000u), r,
				 ns_strerror(r));
		if (t_now_ns() - s0 > blocked_ns)
			blocked_ns = t_now_ns() - s0;
	}
	int st = t_wait(pid, WAIT_MS);
	assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	print_message("# longest store %llu ms (the reader paused %d ms)\n",
		      (unsigned long long)(blocked_ns / 1000000u), PAUSE_MS);
	close(p2c[0]);
	close(p2c[1]);
	close(c2p[0]);
	close(c2p[1]);
	free(val);
	ns__recover_dead(c); /* the reader exited without detaching */
	t_assert_consistent(c);
	fx_close(&f);
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], NO_MB_ARG) == 0) {
		const struct CMUnitTest sub[] = {
			cmocka_unit_test(test_no_membarrier_scenario),
		};
		return cmocka_run_group_tests(sub, NULL, NULL);
	}
	if (argc > 3 && strcmp(argv[1], SANDBOX_ARG) == 0)
		return sandboxed_reclaimer(argv[2], strcmp(argv[3], "keep") == 0);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_retired_item_outlives_reader_in_other_process),
		cmocka_unit_test(test_retired_item_outlives_reader_without_membarrier),
		cmocka_unit_test(test_reclaimer_without_membarrier_respects_membarrier_readers),
		cmocka_unit_test(test_dead_reader_does_not_block_reclaim),
		cmocka_unit_test(test_recover_dead_releases_dead_readers_epoch),
		cmocka_unit_test(test_enomem_while_reader_paused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
