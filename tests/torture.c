/*
 * torture.c - a process killed at any instant costs nothing.
 *
 * A controller creates a private segment, forks N client processes that run
 * random operations covering the whole public API on several namespaces,
 * and then spends the run hurting them:
 *
 *   - SIGKILL of a random client at a random moment;
 *   - SIGSTOP of a random client for at most STOP_MAX_MS, then SIGCONT (a
 *     stopped client may hold a bucket lock: the others must wait for it,
 *     not break it, and the wait stays well under the latency bound);
 *   - clients started by exec with $NS_FAULT naming one of the library's
 *     fault points (optionally "@N"), so they die at exactly that step;
 *   - SIGKILL and restart of nsd (sometimes itself started with $NS_FAULT at
 *     a page-move step), or no nsd at all (--no-nsd).
 *
 * Every dead client is replaced, alternately by a child that inherits the
 * controller's handle (attached before fork) and by one that attaches after
 * fork.  What must hold, checked while it runs and again at the end:
 *
 *   1. No read returns a torn or foreign value.  Every value names its key
 *      and carries a checksum (t_make_value); keys name their namespace, so
 *      a value of another key or another namespace is caught too.  A client
 *      that sees one prints the key and the bytes and the run fails.
 *   2. No operation takes longer than BOUND_MS, not counting the time the
 *      controller held the client itself stopped.  Clients time their own
 *      operations; the controller watches a per-client op-start timestamp
 *      in the shared results mapping, so an operation that never returns is
 *      caught too, and then it reports which bucket lock is held by which
 *      slot and pid.
 *   3. After the run (everything stopped, recovery and, if recovery asked
 *      for it, the audit): ns__verify accounts for every chunk (leaked,
 *      doubled, bad_refs and locked all 0) and every stored value is still
 *      well-formed.
 *   4. Counters add up: the final value of every incr/decr counter, and the
 *      hit, miss, set and delete counters of the counted namespace, equal
 *      what the clients report having done, give or take only the one
 *      operation each killed client had in flight (see check_counters()).
 *   5. No memory is lost: with every key deleted, the segment takes as many
 *      fixed-size values as a fresh segment of the same size, less exactly
 *      the pages that the run left assigned to other slab classes (see
 *      check_capacity()).
 *
 * Modes: --ci is the short run registered with meson (TAP); --seconds N or
 * --minutes N runs as long as asked and prints progress every 10 s.  The
 * seed is printed so that a failing run can be replayed with --seed.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define MAX_CLIENTS 32
#define NDATA 3            /* namespaces running every operation */
#define NCTR 16            /* incr/decr counter keys */
#define BATCH_MAX 8        /* keys in one mget/mset/mdel */
#define VAL_MAX 1024       /* value buffers; payloads stay under 600 bytes */
/* No operation may take longer (issue 7): --bound-ms, by default 1000 ms,
 * and 2500 ms in the --ci run.  A CI machine is two shared cores that also
 * run the sanitizer builds, where an operation descheduled for a second is
 * not a stuck lock; a lock that stays held is caught all the same, since
 * its waiters get NS_EBUSY (an unexpected error here) after the library's
 * NS_LOCK_TIMEOUT_MS (2 s), and the watchdog reports its owner. */
#define BOUND_MS cfg.bound_ms
/* A stopped client must not look stuck: its own pause is subtracted, but a
 * client waiting on a lock it holds waits the whole pause, so the pause is
 * kept an order of magnitude under BOUND_MS. */
#define STOP_MAX_MS 100
/* The watchdog reports an operation as stuck only past BOUND_MS plus this,
 * so that a slow operation is reported by the client itself (with its key)
 * and the watchdog reports only those that never come back. */
#define WATCHDOG_SLACK_MS 500
#define END_WAIT_MS 5000   /* clients asked to stop must be gone by then */
#define PROGRESS_S 10
/* An index with room for a smallest chunk in every 64 bytes: the capacity
 * check fills every chunk of the classes the run left the pages in, and the
 * smallest may hold most of them (a quarter of the segment goes to it). */
#define SEG_ITEMS (cfg.seg_size / 64)

/* Every operation of the public API, for the tallies and the messages. */
#define OPS(X)                                                               \
	X(SET, "set") X(SET_EX, "set_ex") X(ADD, "add")                     \
	X(REPLACE, "replace") X(CAS, "cas") X(GETSET, "getset")              \
	X(GET, "get") X(GET_EX, "get_ex") X(STAT, "stat")                   \
	X(EXISTS, "exists") X(TTL, "ttl") X(EXPIRE, "expire")               \
	X(PERSIST, "persist") X(TOUCH, "touch") X(INCR, "incr")             \
	X(DECR, "decr") X(UPDATE, "update") X(MGET, "mget")                 \
	X(MSET, "mset") X(MDEL, "mdel") X(SCAN, "scan")                     \
	X(GET_OR_SET, "get_or_set") X(DEL, "del")
enum op {
#define OP_ENUM(e, s) OP_##e,
	OPS(OP_ENUM)
#undef OP_ENUM
	NOPS
};
static const char *const op_names[] = {
#define OP_NAME(e, s) s,
	OPS(OP_NAME)
#undef OP_NAME
};

/* The library's fault points a client can die at (grep 'NS_FAULT("' lib/;
 * tests/lint.sh fails when one of lib/ is in neither list).
 * create:initialized is left out: clients attach an existing segment.  The
 * page-move points only nsd reaches: they are in nsd_faults. */
static const char *const client_faults[] = {
	"alloc:taken",  "slab:popped",   "set:built",    "lock:taken",
	"over:claimed", "set:intent",    "set:published", "set:unlocked",
	"set:retired",  "del:intent",    "del:unlinked", "del:unlocked",
	"del:retired",  "key:locked",    "flight:claimed", "set:released",
	"del:released", "reclaim:emptied",
};
static const char *const nsd_faults[] = { "move:moving", "move:pushing", "move:unparking",
					   "sift:unlinked" };
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* What one operation on the counted namespace adds to its counters. */
struct tally {
	uint64_t hits, misses, sets, dels;
};

/*
 * One client's record in the results mapping.  The client writes
 * everything but stopped_ns; the controller reads it while the client runs
 * (op_start_ns, for the watchdog; racy and only a hint) and exactly once
 * it is reaped (then every store of the dead process is visible).
 */
struct client_rec {
	int32_t pid;
	uint32_t serial;        /* incarnation number, for messages */
	uint64_t op_start_ns;   /* CLOCK_MONOTONIC when the current op began; 0 idle */
	uint64_t op_stopped_ns; /* stopped_ns when it began */
	uint32_t op;            /* enum op in flight */
	uint32_t pad;
	/* Total time the controller held this client stopped, written by the
	 * controller BEFORE it sends SIGCONT, so a client that resumes always
	 * sees its own pause already counted. */
	uint64_t stopped_ns;
	uint64_t ops[NOPS];     /* operations completed, by kind */
	/* Counted namespace: what completed operations did (done), and the
	 * most that the operation in flight may have done (pend). */
	struct tally done, pend;
	int64_t ctr_done[NCTR]; /* sum of the deltas of completed incr/decr */
	int32_t pend_ctr;       /* counter key of the incr/decr in flight, -1 none */
	int32_t pad2;
	int64_t pend_delta;
};

struct results {
	uint32_t stop;          /* controller: finish the current op and exit */
	uint32_t failures;      /* atomic add by anyone who saw one */
	uint32_t first_taken;
	char first[768];        /* the first failure's message */
	struct client_rec cl[MAX_CLIENTS];
};

/* ---- configuration and shared state ------------------------------------- */

static struct {
	int clients;
	uint64_t seed;
	uint64_t seconds;
	size_t seg_size;
	unsigned keys;          /* keys per namespace */
	const char *nsd;        /* NULL: no nsd */
	bool ci;
	unsigned bound_ms;      /* 0: the default of the mode */
	char name[NS_NAME_MAX + 1];
} cfg = { .clients = 6, .seconds = 45, .seg_size = 64u << 20, .keys = 400 };

static struct results *R;
static int results_fd = -1;

static uint64_t now_ns(void) { return t_now_ns(); }

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64* (Vigna): enough for choosing operations. */
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 2685821657736338717ull;
}

static unsigned rnd(uint64_t *s, unsigned n) { return (unsigned)(rng_next(s) % n); }

__attribute__((format(printf, 1, 2))) static void failure(const char *fmt, ...)
{
	char msg[sizeof(R->first)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "# FAIL (pid %d): %s\n", (int)getpid(), msg);
	ns_add_return(&R->failures, 1u);
	if (ns_cmpxchg(&R->first_taken, 0u, 1u) == 0u)
		memcpy(R->first, msg, sizeof(msg));
}

/* BUF (N bytes) as printable text, for failure messages. */
static const char *show(const void *buf, size_t n)
{
	static char out[4 * 160 + 8];
	const unsigned char *p = buf;
	size_t o = 0;

	for (size_t i = 0; i < n && i < 160; i++) {
		if (p[i] >= 32 && p[i] < 127 && p[i] != '\\')
			out[o++] = (char)p[i];
		else
			o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02x", p[i]);
	}
	if (n > 160)
		o += (size_t)snprintf(out + o, sizeof(out) - o, "...");
	out[o] = '\0';
	return out;
}

/* ---- the client --------------------------------------------------------- */

struct client {
	ns_cache *c;
	ns_space *data[NDATA], *count, *ctr;
	struct client_rec *rec;
	uint64_t rng;
	uint64_t cursor[NDATA];
	bool upd_bad;           /* the update callback saw a bad value */
	char upd_key[40];
	char upd_val[VAL_MAX];
};

static const char *const data_prefix[NDATA] = { "tort:a", "tort:b", "tort:c" };
static const char data_tag[NDATA] = { 'a', 'b', 'c' };

static void key_of(char *k, size_t cap, char tag, unsigned i)
{
	snprintf(k, cap, "%c.k%u", tag, i);
}

/* A TTL: mostly none, sometimes forever, sometimes short enough to expire
 * during the run (so lazy expiry and nsd's active expiry both run). */
static uint64_t pick_ttl(struct client *cl)
{
	unsigned r = rnd(&cl->rng, 10);
	if (r < 5)
		return 0;
	if (r < 6)
		return NS_TTL_NEVER;
	return 50 + rnd(&cl->rng, 3000);
}

static size_t make_val(struct client *cl, char *buf, const char *key)
{
	return t_make_value(buf, VAL_MAX, key, (uint32_t)rng_next(&cl->rng),
			    rnd(&cl->rng, 8) == 0 ? 200 + rnd(&cl->rng, 400)
						  : rnd(&cl->rng, 120));
}

static void check_val(const char *what, const char *key, const void *buf, size_t n)
{
	if (t_check_value(buf, n, key) != 0)
		failure("%s %s: torn or foreign value (%zu bytes): %s", what, key, n,
			show(buf, n));
}

/* An error a well-behaved operation may return: absent key, and the
 * conditional stores' refusals.  Anything else fails the run. */
static void check_rc(const char *what, const char *key, int rc, bool ok_absent)
{
	if (rc == 0 || (ok_absent && (rc == NS_ENOTFOUND || rc == NS_EPRESENT ||
				      rc == NS_ECHANGED)))
		return;
	failure("%s %s: unexpected %d (%s)", what, key, rc, ns_strerror(rc));
}

static int upd_fn(void *arg, const void *old, size_t oldlen,
		  const struct ns_item_info *info, struct ns_value *out)
{
	struct client *cl = arg;
	unsigned r = rnd(&cl->rng, 10);

	(void)info;
	if (old != NULL && t_check_value(old, oldlen, cl->upd_key) != 0) {
		failure("update %s: torn or foreign value (%zu bytes): %s",
			cl->upd_key, oldlen, show(old, oldlen));
		cl->upd_bad = true;
	}
	if (r == 0)
		return NS_UPDATE_KEEP;
	if (r == 1)
		return NS_UPDATE_DELETE;
	out->vlen = make_val(cl, cl->upd_val, cl->upd_key);
	out->val = cl->upd_val;
	out->ttl_ms = pick_ttl(cl);
	out->flags = 7;
	return NS_UPDATE_STORE;
}

static int loader(void *arg, const void *key, size_t klen, struct ns_value *out)
{
	struct client *cl = arg;
	char k[40];

	snprintf(k, sizeof(k), "%.*s", (int)klen, (const char *)key);
	out->vlen = make_val(cl, cl->upd_val, k);
	out->val = cl->upd_val;
	out->ttl_ms = pick_ttl(cl);
	out->flags = 0;
	return 0;
}

/* A key that ns_scan returned must be one of ours in that namespace. */
static void check_scan_key(int d, const struct ns_key *k)
{
	char want[8];
	char *end;

	snprintf(want, sizeof(want), "%c.k", data_tag[d]);
	if (k->klen < 4 || k->klen > 12 || memcmp(k->key, want, 3) != 0 ||
	    strtoul(k->key + 3, &end, 10) >= cfg.keys || *end != '\0')
		failure("scan of %s returned a foreign key: %s", data_prefix[d],
			show(k->key, k->klen));
}

/* One operation on data namespace D: every call of the API, every value
 * checked. */
static void data_op(struct client *cl, int d, enum op op)
{
	ns_space *s = cl->data[d];
	char key[40], val[VAL_MAX], buf[VAL_MAX];
	struct ns_item_info info;
	size_t n = 0, vl;
	uint64_t ver;
	int64_t ttl;
	int rc;

	key_of(key, sizeof(key), data_tag[d], rnd(&cl->rng, cfg.keys));
	switch (op) {
	case OP_SET:
		vl = make_val(cl, val, key);
		check_rc("set", key, ns_set(s, key, strlen(key), val, vl, pick_ttl(cl)), false);
		break;
	case OP_SET_EX:
		vl = make_val(cl, val, key);
		rc = ns_set_ex(s, key, strlen(key), val, vl, pick_ttl(cl), 42, &ver);
		check_rc("set_ex", key, rc, false);
		break;
	case OP_ADD:
		vl = make_val(cl, val, key);
		check_rc("add", key, ns_add(s, key, strlen(key), val, vl, pick_ttl(cl)), true);
		break;
	case OP_REPLACE:
		vl = make_val(cl, val, key);
		check_rc("replace", key, ns_replace(s, key, strlen(key), val, vl, pick_ttl(cl)), true);
		break;
	case OP_CAS:
		rc = ns_get_ex(s, key, strlen(key), buf, sizeof(buf), &n, &info);
		check_rc("cas/get_ex", key, rc, true);
		if (rc == 0) {
			check_val("cas/get_ex", key, buf, n);
			vl = make_val(cl, val, key);
			rc = ns_cas(s, key, strlen(key), val, vl, pick_ttl(cl), info.version);
			check_rc("cas", key, rc, true);
		}
		break;
	case OP_GETSET:
		vl = make_val(cl, val, key);
		rc = ns_getset(s, key, strlen(key), val, vl, pick_ttl(cl), buf, sizeof(buf), &n);
		check_rc("getset", key, rc, true);
		if (rc == 0)
			check_val("getset", key, buf, n);
		break;
	case OP_GET:
		rc = ns_get(s, key, strlen(key), buf, sizeof(buf), &n);
		check_rc("get", key, rc, true);
		if (rc == 0)
			check_val("get", key, buf, n);
		break;
	case OP_GET_EX:
		rc = ns_get_ex(s, key, strlen(key), buf, sizeof(buf), &n, &info);
		check_rc("get_ex", key, rc, true);
		if (rc == 0) {
			check_val("get_ex", key, buf, n);
			if (info.vlen != n)
				failure("get_ex %s: info.vlen %u, value %zu bytes", key, info.vlen, n);
		}
		break;
	case OP_STAT:
		rc = ns_stat(s, key, strlen(key), &info);
		check_rc("stat", key, rc, true);
		if (rc == 0 && (info.vlen < strlen(key) + 10 || info.vlen >= VAL_MAX ||
				info.space_id != (uint32_t)d + 1u))
			failure("stat %s: vlen %u space %u", key, info.vlen, info.space_id);
		break;
	case OP_EXISTS:
		check_rc("exists", key, ns_exists(s, key, strlen(key)), true);
		break;
	case OP_TTL:
		rc = ns_ttl(s, key, strlen(key), &ttl);
		check_rc("ttl", key, rc, true);
		if (rc == 0 && ttl < -1)
			failure("ttl %s: %" PRId64, key, ttl);
		break;
	case OP_EXPIRE:
		/* Sometimes 0, which removes the key. */
		rc = ns_expire(s, key, strlen(key), rnd(&cl->rng, 4) ? 100 + rnd(&cl->rng, 3000) : 0);
		check_rc("expire", key, rc, true);
		break;
	case OP_PERSIST:
		check_rc("persist", key, ns_persist(s, key, strlen(key)), true);
		break;
	case OP_TOUCH:
		check_rc("touch", key, ns_touch(s, key, strlen(key)), true);
		break;
	case OP_UPDATE:
		memcpy(cl->upd_key, key, sizeof(key));
		cl->upd_bad = false;
		check_rc("update", key, ns_update(s, key, strlen(key), upd_fn, cl), true);
		break;
	case OP_SCAN: {
		struct ns_key keys[64];
		/* A few steps per operation; the cursor carries on next time. */
		for (int step = 0; step < 4; step++) {
			rc = ns_scan(s, &cl->cursor[d], rnd(&cl->rng, 2) ? NULL : "*.k1*",
				     32, keys, NELEM(keys), &n);
			check_rc("scan", data_prefix[d], rc, false);
			if (rc != 0)
				break;
			for (size_t i = 0; i < n; i++)
				check_scan_key(d, &keys[i]);
			if (cl->cursor[d] == 0)
				break;
		}
		break;
	}
	case OP_GET_OR_SET: {
		/* Waiting for a loader that is stopped lasts at most its pause;
		 * for one that died, a slice (20 ms) until the takeover. */
		struct ns_load_opts o = { .wait_ms = BOUND_MS / 2, .stale_ms = rnd(&cl->rng, 2) * 500 };
		rc = ns_get_or_set(s, key, strlen(key), buf, sizeof(buf), &n, loader, cl, &o);
		check_rc("get_or_set", key, rc, false);
		if (rc == 0)
			check_val("get_or_set", key, buf, n);
		break;
	}
	case OP_DEL:
		check_rc("del", key, ns_del(s, key, strlen(key)), true);
		break;
	default:
		ns__die("data_op %d", (int)op);
	}
}

/* One operation of the counted namespace, whose counters are compared with
 * the tallies at the end.  Only calls whose effect on the counters is plain
 * from their result: reads count a hit (0) or a miss (NS_ENOTFOUND); stores
 * a set when they stored; deletions a delete when they removed a present
 * key.  PEND is written before the call: the most it may add. */
static void count_op(struct client *cl, enum op op)
{
	ns_space *s = cl->count;
	struct client_rec *r = cl->rec;
	char keys[BATCH_MAX][40], vals[BATCH_MAX][VAL_MAX], bufs[BATCH_MAX][VAL_MAX];
	struct ns_kv kv[BATCH_MAX];
	struct ns_item_info info;
	struct tally t = { 0 };
	size_t nk = 1, n = 0, vl;
	int rc;

	if (op == OP_MGET || op == OP_MSET || op == OP_MDEL)
		nk = 1 + rnd(&cl->rng, BATCH_MAX);
	for (size_t i = 0; i < nk; i++)
		key_of(keys[i], sizeof(keys[i]), 'n', rnd(&cl->rng, cfg.keys));
	memset(kv, 0, sizeof(kv));
	r->pend = (struct tally){ .hits = nk, .misses = nk, .sets = nk, .dels = nk };
	cmm_barrier(); /* the bound is in place before the call can count */

	switch (op) {
	case OP_GET:
	case OP_GET_EX:
	case OP_STAT:
	case OP_EXISTS:
		if (op == OP_GET)
			rc = ns_get(s, keys[0], strlen(keys[0]), bufs[0], VAL_MAX, &n);
		else if (op == OP_GET_EX)
			rc = ns_get_ex(s, keys[0], strlen(keys[0]), bufs[0], VAL_MAX, &n, &info);
		else if (op == OP_STAT)
			rc = ns_stat(s, keys[0], strlen(keys[0]), &info);
		else
			rc = ns_exists(s, keys[0], strlen(keys[0]));
		check_rc(op_names[op], keys[0], rc, true);
		if (rc == 0 && (op == OP_GET || op == OP_GET_EX))
			check_val(op_names[op], keys[0], bufs[0], n);
		t.hits += rc == 0;
		t.misses += rc == NS_ENOTFOUND;
		break;
	case OP_SET:
	case OP_SET_EX:
	case OP_ADD:
	case OP_REPLACE:
	case OP_GETSET:
		vl = make_val(cl, vals[0], keys[0]);
		if (op == OP_SET)
			rc = ns_set(s, keys[0], strlen(keys[0]), vals[0], vl, pick_ttl(cl));
		else if (op == OP_SET_EX)
			rc = ns_set_ex(s, keys[0], strlen(keys[0]), vals[0], vl, pick_ttl(cl), 1, NULL);
		else if (op == OP_ADD)
			rc = ns_add(s, keys[0], strlen(keys[0]), vals[0], vl, pick_ttl(cl));
		else if (op == OP_REPLACE)
			rc = ns_replace(s, keys[0], strlen(keys[0]), vals[0], vl, pick_ttl(cl));
		else
			rc = ns_getset(s, keys[0], strlen(keys[0]), vals[0], vl, pick_ttl(cl),
				       bufs[0], VAL_MAX, &n);
		check_rc(op_names[op], keys[0], rc, true);
		if (op == OP_GETSET && rc == 0)
			check_val("getset", keys[0], bufs[0], n);
		/* A getset of an absent key stores and says NS_ENOTFOUND. */
		t.sets += rc == 0 || (op == OP_GETSET && rc == NS_ENOTFOUND);
		break;
	case OP_CAS:
		/* The read is a get like any other: counted. */
		rc = ns_get_ex(s, keys[0], strlen(keys[0]), bufs[0], VAL_MAX, &n, &info);
		check_rc("cas/get_ex", keys[0], rc, true);
		t.hits += rc == 0;
		t.misses += rc == NS_ENOTFOUND;
		if (rc == 0) {
			check_val("cas/get_ex", keys[0], bufs[0], n);
			vl = make_val(cl, vals[0], keys[0]);
			rc = ns_cas(s, keys[0], strlen(keys[0]), vals[0], vl, pick_ttl(cl),
				    info.version);
			check_rc("cas", keys[0], rc, true);
			t.sets += rc == 0;
		}
		break;
	case OP_DEL:
		rc = ns_del(s, keys[0], strlen(keys[0]));
		check_rc("del", keys[0], rc, true);
		t.dels += rc == 0;
		break;
	case OP_MGET:
	case OP_MSET:
	case OP_MDEL:
		for (size_t i = 0; i < nk; i++) {
			kv[i].key = keys[i];
			kv[i].klen = strlen(keys[i]);
			kv[i].buf = bufs[i];
			kv[i].cap = VAL_MAX;
			if (op == OP_MSET) {
				kv[i].vlen = make_val(cl, vals[i], keys[i]);
				kv[i].val = vals[i];
				kv[i].ttl_ms = pick_ttl(cl);
			}
		}
		rc = op == OP_MGET ? ns_mget(s, kv, nk)
		   : op == OP_MSET ? ns_mset(s, kv, nk) : ns_mdel(s, kv, nk);
		if (rc < 0)
			failure("%s: %d (%s)", op_names[op], rc, ns_strerror(rc));
		for (size_t i = 0; i < nk && rc >= 0; i++) {
			check_rc(op_names[op], keys[i], kv[i].err, op != OP_MSET);
			if (op == OP_MGET) {
				if (kv[i].err == 0)
					check_val("mget", keys[i], bufs[i], kv[i].vlen);
				t.hits += kv[i].err == 0;
				t.misses += kv[i].err == NS_ENOTFOUND;
			} else if (op == OP_MSET) {
				t.sets += kv[i].err == 0;
			} else {
				t.dels += kv[i].err == 0;
			}
		}
		break;
	default:
		ns__die("count_op %d", (int)op);
	}
	/* Done first, then the bound cleared: killed in between, the fold
	 * sees both and only widens the bound. */
	r->done.hits += t.hits;
	r->done.misses += t.misses;
	r->done.sets += t.sets;
	r->done.dels += t.dels;
	cmm_barrier();
	r->pend = (struct tally){ 0 };
}

static void ctr_op(struct client *cl, enum op op)
{
	struct client_rec *r = cl->rec;
	unsigned k = rnd(&cl->rng, NCTR);
	int64_t d = 1 + (int64_t)rnd(&cl->rng, op == OP_INCR ? 5 : 3), res;
	int64_t eff = op == OP_INCR ? d : -d;
	char key[16];
	int rc;

	snprintf(key, sizeof(key), "ctr%u", k);
	r->pend_delta = eff;
	r->pend_ctr = (int32_t)k;
	cmm_barrier();
	/* A missing counter starts at its own first delta, so every counter
	 * is exactly the sum of the deltas applied to it. */
	if (op == OP_INCR)
		rc = ns_incr(cl->ctr, key, strlen(key), d, eff, 0, &res);
	else
		rc = ns_decr(cl->ctr, key, strlen(key), d, eff, 0, &res);
	check_rc(op_names[op], key, rc, false);
	if (rc == 0)
		r->ctr_done[k] += eff;
	cmm_barrier();
	r->pend_ctr = -1;
}

/* Pick an operation.  A tenth go to the counters, a third to the counted
 * namespace (its restricted set of calls), the rest to the data
 * namespaces, each operation of the API about equally often. */
static void one_op(struct client *cl)
{
	static const enum op counted[] = {
		OP_GET, OP_GET_EX, OP_STAT, OP_EXISTS, OP_SET, OP_SET_EX, OP_ADD,
		OP_REPLACE, OP_GETSET, OP_CAS, OP_DEL, OP_MGET, OP_MSET, OP_MDEL,
	};
	static const enum op data[] = {
		OP_SET, OP_SET_EX, OP_ADD, OP_REPLACE, OP_CAS, OP_GETSET, OP_GET,
		OP_GET_EX, OP_STAT, OP_EXISTS, OP_TTL, OP_EXPIRE, OP_PERSIST,
		OP_TOUCH, OP_UPDATE, OP_SCAN, OP_GET_OR_SET, OP_DEL,
	};
	struct client_rec *r = cl->rec;
	unsigned w = rnd(&cl->rng, 100);
	enum op op;
	int d = -1;

	if (w < 10)
		op = rnd(&cl->rng, 2) ? OP_INCR : OP_DECR;
	else if (w < 40)
		op = counted[rnd(&cl->rng, NELEM(counted))];
	else {
		d = (int)rnd(&cl->rng, NDATA);
		op = data[rnd(&cl->rng, NELEM(data))];
	}

	uint64_t st0 = ns_load_relaxed(&r->stopped_ns);
	uint64_t t0 = now_ns();
	r->op = (uint32_t)op;
	ns_store_relaxed(&r->op_stopped_ns, st0);
	ns_store_release(&r->op_start_ns, t0);

	if (op == OP_INCR || op == OP_DECR)
		ctr_op(cl, op);
	else if (d < 0)
		count_op(cl, op);
	else
		data_op(cl, d, op);

	uint64_t t1 = now_ns();
	uint64_t paused = ns_load_acquire(&r->stopped_ns) - st0;
	uint64_t took = t1 - t0 > paused ? t1 - t0 - paused : 0;
	ns_store_relaxed(&r->op_start_ns, 0ull);
	if (took > BOUND_MS * 1000000ull)
		failure("%s on %s took %" PRIu64 " ms (bound %d ms, own pauses %" PRIu64 " ms)",
			op_names[op], d < 0 ? (op == OP_INCR || op == OP_DECR ? "tort:ctr" : "tort:count")
					    : data_prefix[d],
			took / 1000000, BOUND_MS, paused / 1000000);
	r->ops[op]++;
}

static int open_spaces(struct client *cl)
{
	int rc = 0;

	for (int d = 0; d < NDATA && rc == 0; d++)
		rc = ns_space_open(cl->c, data_prefix[d], &cl->data[d]);
	if (rc == 0)
		rc = ns_space_open(cl->c, "tort:count", &cl->count);
	if (rc == 0)
		rc = ns_space_open(cl->c, "tort:ctr", &cl->ctr);
	return rc;
}

/* The body of a client: C is the inherited handle, or NULL to attach. */
static int client_main(ns_cache *inherited, int idx, uint64_t seed)
{
	struct client cl = { .c = inherited, .rec = &R->cl[idx], .rng = seed | 1 };
	int rc;

	if (cl.c == NULL && (rc = ns_attach(cfg.name, NULL, &cl.c)) != 0) {
		failure("client %d: attach %s: %s", idx, cfg.name, ns_strerror(rc));
		return 1;
	}
	if ((rc = open_spaces(&cl)) != 0) {
		failure("client %d: space_open: %s", idx, ns_strerror(rc));
		return 1;
	}
	while (!ns_load_acquire(&R->stop))
		one_op(&cl);
	ns_detach(cl.c);
	return 0;
}

/* ---- the controller ----------------------------------------------------- */

enum death { D_NONE, D_KILLED, D_FAULT, D_STUCK };

struct kid {
	pid_t pid;
	uint32_t serial;
	bool inherited;
	const char *fault;      /* $NS_FAULT it was started with, or NULL */
	enum death why;         /* what the controller did to it */
	uint64_t stop_at_ns;    /* nonzero: stopped since then, until stop_until */
	uint64_t stop_until_ns;
	bool reported;          /* the watchdog already reported it */
};

static struct kid kids[MAX_CLIENTS];
static pid_t nsd_pid;
static bool nsd_killed;         /* we sent the SIGKILL, not its fault point */
static const char *nsd_fault;
static ns_cache *C;
static ns_space *Cs[NDATA + 2];
static volatile sig_atomic_t got_signal;
static uint64_t crng;
static uint32_t serials;
static char self_exe[4096];

/* What reaped clients did, folded in once each is gone. */
static struct {
	uint64_t ops[NOPS];
	struct tally done, pend;
	int64_t ctr_done[NCTR], ctr_lo[NCTR], ctr_hi[NCTR];
	uint64_t clean, killed, fault_deaths, fault_other, stops, nsd_kills,
		 nsd_fault_deaths, spawned, inherited, stuck;
} T;

static void on_signal(int sig) { got_signal = sig; }

/* Every child dies with the controller, however the controller ends. */
static void child_guard(pid_t parent)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
}

static void spawn_client(int i)
{
	struct kid *k = &kids[i];
	struct client_rec *r = &R->cl[i];
	pid_t parent = getpid();
	uint64_t seed = rng_next(&crng);
	/* Every fourth replacement dies at a fault point; of the others, half
	 * inherit the controller's handle and half attach after fork. */
	unsigned how = rnd(&crng, 8);
	const char *fault = NULL;
	char fault_env[64];

	memset(r, 0, sizeof(*r));
	r->pend_ctr = -1;
	r->serial = ++serials;
	if (how < 2) {
		fault = client_faults[rnd(&crng, NELEM(client_faults))];
		if (rnd(&crng, 2))
			snprintf(fault_env, sizeof(fault_env), "%s@%u", fault, 1 + rnd(&crng, 20));
		else
			snprintf(fault_env, sizeof(fault_env), "%s", fault);
	}
	memset(k, 0, sizeof(*k));
	k->serial = r->serial;
	k->fault = fault;
	k->inherited = fault == NULL && how % 2 == 0;

	fflush(NULL);
	pid_t p = fork();
	if (p < 0) {
		failure("fork: %s", strerror(errno));
		return;
	}
	if (p == 0) {
		child_guard(parent);
		r->pid = (int32_t)getpid();
		if (fault) {
			/* The library reads $NS_FAULT when it is loaded: exec. */
			char idx[16], sd[32], fd[16], keys[16], bound[16];
			snprintf(idx, sizeof(idx), "%d", i);
			snprintf(sd, sizeof(sd), "%" PRIu64, seed);
			snprintf(fd, sizeof(fd), "%d", results_fd);
			snprintf(keys, sizeof(keys), "%u", cfg.keys);
			snprintf(bound, sizeof(bound), "%u", cfg.bound_ms);
			setenv("NS_FAULT", fault_env, 1);
			execl(self_exe, self_exe, "--client", idx, "--seed", sd,
			      "--results-fd", fd, "--segment", cfg.name, "--keys", keys,
			      "--bound-ms", bound, (char *)NULL);
			failure("exec %s: %s", self_exe, strerror(errno));
			_exit(1);
		}
		_exit(client_main(k->inherited ? C : NULL, i, seed));
	}
	k->pid = p;
	T.spawned++;
	T.inherited += k->inherited;
}

/* Fold a reaped client's record into the totals.  A client that was killed
 * may have done what it had in flight without reporting it: its pending
 * bound widens the allowed range.  One that exited cleanly has nothing in
 * flight. */
static void fold(int i, int status)
{
	struct kid *k = &kids[i];
	struct client_rec *r = &R->cl[i];
	bool died = WIFSIGNALED(status);

	for (int o = 0; o < NOPS; o++)
		T.ops[o] += r->ops[o];
	T.done.hits += r->done.hits;
	T.done.misses += r->done.misses;
	T.done.sets += r->done.sets;
	T.done.dels += r->done.dels;
	for (int j = 0; j < NCTR; j++)
		T.ctr_done[j] += r->ctr_done[j];
	if (died) {
		T.pend.hits += r->pend.hits;
		T.pend.misses += r->pend.misses;
		T.pend.sets += r->pend.sets;
		T.pend.dels += r->pend.dels;
		if (r->pend_ctr >= 0 && r->pend_ctr < NCTR) {
			if (r->pend_delta < 0)
				T.ctr_lo[r->pend_ctr] += r->pend_delta;
			else
				T.ctr_hi[r->pend_ctr] += r->pend_delta;
		}
	} else if (r->pend_ctr >= 0 || r->pend.hits || r->pend.sets) {
		failure("client #%u exited with an operation in flight", r->serial);
	}

	if (WIFEXITED(status)) {
		if (WEXITSTATUS(status) != 0)
			failure("client #%u (pid %d) exited with status %d", r->serial,
				(int)k->pid, WEXITSTATUS(status));
		else
			T.clean++;
	} else if (died && WTERMSIG(status) == SIGKILL) {
		if (k->why == D_KILLED)
			T.killed++;
		else if (k->why == D_STUCK)
			T.stuck++;
		else if (k->fault)
			T.fault_deaths++;
		else
			failure("client #%u (pid %d) SIGKILLed by nobody", r->serial, (int)k->pid);
	} else if (died) {
		failure("client #%u (pid %d) died of signal %d (%s)", r->serial,
			(int)k->pid, WTERMSIG(status), strsignal(WTERMSIG(status)));
	}
	k->pid = 0;
}

static void start_nsd(void)
{
	pid_t parent = getpid();
	char fault_env[32];

	if (cfg.nsd == NULL)
		return;
	nsd_killed = false;
	nsd_fault = rnd(&crng, 4) == 0 ? nsd_faults[rnd(&crng, NELEM(nsd_faults))] : NULL;
	snprintf(fault_env, sizeof(fault_env), "%s", nsd_fault ? nsd_fault : "");
	fflush(NULL);
	pid_t p = fork();
	if (p == 0) {
		child_guard(parent);
		if (nsd_fault)
			setenv("NS_FAULT", fault_env, 1);
		int null = open("/dev/null", O_RDWR);
		if (null >= 0)
			dup2(null, STDIN_FILENO);
		/* Pages move whether or not memory runs short (nsd's
		 * exercise), so that kills land inside moves.  $NSD_LOG sets
		 * nsd's log level (its log goes to our stderr). */
		const char *lvl = getenv("NSD_LOG");
		execl(cfg.nsd, cfg.nsd, "--foreground", "--segment", cfg.name,
		      "--tick-ms", "50", "--rebalance-ms", "200", "--rebalance-exercise",
		      "--log-level", lvl ? lvl : "error", (char *)NULL);
		_exit(127);
	}
	nsd_pid = p > 0 ? p : 0;
}

/* The owner of every bucket lock (and flight) held right now, for a report
 * of an operation that does not come back. */
static void dump_locks(char *out, size_t cap)
{
	size_t o = 0;
	int shown = 0;

	o += (size_t)snprintf(out + o, cap - o, "locks held:");
	for (uint64_t b = 0; b <= C->mask && o < cap - 100; b++) {
		uint32_t l = ns_load_relaxed(&C->buckets[b].lock);
		if (l == 0)
			continue;
		uint32_t idx = l - 1;
		struct ns_slot_shm *s = idx < C->nslots ? &C->slots[idx] : NULL;
		o += (size_t)snprintf(out + o, cap - o,
				      " bucket %" PRIu64 " by slot %u pid %d (alive %d, phase %u);",
				      b, idx, s ? (int)s->pid : -1,
				      s ? ns__slot_alive(C, -1, idx) : -1,
				      s ? s->in_phase : 0u);
		shown++;
	}
	uint32_t sl = ns_load_relaxed(&C->hdr->spaces_lock);
	if (sl)
		o += (size_t)snprintf(out + o, cap - o, " namespace table by slot %u;", sl - 1);
	if (shown == 0 && sl == 0)
		snprintf(out + o, cap - o, " none");
}

static int find_kid(pid_t p)
{
	for (int i = 0; i < cfg.clients; i++)
		if (kids[i].pid == p)
			return i;
	return -1;
}

/* Reap whatever has ended; replace clients unless the run is ending. */
static void reap(bool replace)
{
	int st;
	pid_t p;

	while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
		if (p == nsd_pid) {
			if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL && !nsd_killed &&
			    nsd_fault)
				T.nsd_fault_deaths++;
			else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL && !nsd_killed)
				failure("nsd (pid %d) SIGKILLed by nobody", (int)p);
			else if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) &&
				 !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
				failure("nsd (pid %d) ended with status %#x", (int)p, st);
			nsd_pid = 0;
			continue;
		}
		int i = find_kid(p);
		if (i < 0)
			continue;
		fold(i, st);
		if (replace)
			spawn_client(i);
	}
}

static void cont(struct kid *k, struct client_rec *r)
{
	uint64_t now = now_ns();
	/* Counted before it runs again (struct client_rec.stopped_ns). */
	ns_add_return(&r->stopped_ns, now - k->stop_at_ns + 1000000ull);
	kill(k->pid, SIGCONT);
	k->stop_at_ns = 0;
}

static void watchdog(void)
{
	uint64_t now = now_ns();

	for (int i = 0; i < cfg.clients; i++) {
		struct kid *k = &kids[i];
		struct client_rec *r = &R->cl[i];
		uint64_t t0 = ns_load_acquire(&r->op_start_ns);

		if (k->pid == 0 || t0 == 0 || k->reported || k->stop_at_ns || now < t0)
			continue;
		uint64_t paused = ns_load_relaxed(&r->stopped_ns) - ns_load_relaxed(&r->op_stopped_ns);
		uint64_t took = now - t0 > paused ? now - t0 - paused : 0;
		if (took <= (BOUND_MS + WATCHDOG_SLACK_MS) * 1000000ull)
			continue;
		char locks[600];
		dump_locks(locks, sizeof(locks));
		failure("client #%u (pid %d) stuck in %s for %" PRIu64 " ms; %s",
			r->serial, (int)k->pid, r->op < NOPS ? op_names[r->op] : "?",
			took / 1000000, locks);
		k->reported = true;
		k->why = D_STUCK;
		kill(k->pid, SIGKILL);
	}
}

/* One tick of mischief.  Rates per 10 ms tick, chosen so that a 2-core
 * machine still gets most of its time for operations: about 4 kills, 3
 * fault-point clients (through the replacements) and 5 stops a second. */
static void mischief(uint64_t now, uint64_t *next_nsd)
{
	int i = (int)rnd(&crng, (unsigned)cfg.clients);
	struct kid *k = &kids[i];
	unsigned r = rnd(&crng, 1000);

	if (k->pid == 0)
		return;
	if (k->stop_at_ns && now >= k->stop_until_ns)
		cont(k, &R->cl[i]);
	if (r < 40 && k->why == D_NONE) {
		if (k->stop_at_ns)
			cont(k, &R->cl[i]);
		k->why = D_KILLED;
		kill(k->pid, SIGKILL);
	} else if (r < 90 && k->stop_at_ns == 0 && k->why == D_NONE) {
		k->stop_at_ns = now;
		k->stop_until_ns = now + (1 + rnd(&crng, STOP_MAX_MS)) * 1000000ull;
		kill(k->pid, SIGSTOP);
		T.stops++;
	}
	if (cfg.nsd && now >= *next_nsd) {
		if (nsd_pid) {
			nsd_killed = true;
			kill(nsd_pid, SIGKILL);
			T.nsd_kills++;
		} else {
			start_nsd();
		}
		/* Up for 0.3 to 3 s, down for up to 0.3 s. */
		*next_nsd = now + (nsd_pid ? 300 + rnd(&crng, 2700) : rnd(&crng, 300)) * 1000000ull;
	}
}

static void progress(uint64_t elapsed_s)
{
	uint64_t ops = 0;

	for (int o = 0; o < NOPS; o++)
		ops += T.ops[o];
	for (int i = 0; i < cfg.clients; i++)
		for (int o = 0; o < NOPS; o++)
			ops += R->cl[i].ops[o];
	printf("# %" PRIu64 " s: %" PRIu64 " ops, clients %" PRIu64 " spawned "
	       "(%" PRIu64 " inherited); kills %" PRIu64 ", fault-point deaths %" PRIu64
	       ", stuck %" PRIu64 "; stops %" PRIu64 "; nsd kills %" PRIu64
	       " (%" PRIu64 " at move faults); failures %u\n",
	       elapsed_s, ops, T.spawned, T.inherited, T.killed, T.fault_deaths,
	       T.stuck, T.stops, T.nsd_kills, T.nsd_fault_deaths, ns_load_relaxed(&R->failures));
	fflush(stdout);
}

static void kill_everything(void)
{
	for (int i = 0; i < cfg.clients; i++)
		if (kids[i].pid > 0) {
			kill(kids[i].pid, SIGKILL);
			kill(kids[i].pid, SIGCONT);
		}
	if (nsd_pid > 0)
		kill(nsd_pid, SIGKILL);
	while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
		;
}

/* ---- the checks at the end ---------------------------------------------- */

static int tap_n, tap_failed;
static bool tap(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool tap(bool ok, const char *fmt, ...)
{
	va_list ap;

	tap_failed += !ok;
	printf("%s %d - ", ok ? "ok" : "not ok", ++tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	return ok;
}

static bool check_verify(const char *when)
{
	struct ns_verify_report rep;
	int r = ns__verify(C, &rep);
	bool ok = r == 0 && rep.leaked == 0 && rep.doubled == 0 && rep.bad_refs == 0 &&
		  rep.locked == 0;

	if (!ok || !cfg.ci)
		printf("# verify %s: chunks %" PRIu64 " reachable %" PRIu64 " free %" PRIu64
		       " cached %" PRIu64 " retired %" PRIu64 " in_flight %" PRIu64
		       " leaked %" PRIu64 " doubled %" PRIu64 " bad_refs %" PRIu64
		       " locked %" PRIu64 " %s\n", when, rep.chunks, rep.reachable,
		       rep.free, rep.cached, rep.retired, rep.in_flight, rep.leaked,
		       rep.doubled, rep.bad_refs, rep.locked, rep.first_error);
	/* Where a leaked chunk lives: its page's move state, and its place
	 * among the page's chunks (the first, the last, one in the middle). */
	unsigned long long off;
	const char *at = strstr(rep.first_error, "at offset ");
	if (!ok && at && sscanf(at, "at offset %llu", &off) == 1) {
		struct ns_page_shm *pg = ns__page_of(C, (ns_off_t)off);
		int k = ns__class_of(C, (ns_off_t)off);
		if (pg && k >= 0) {
			uint64_t base = C->data_off + (uint64_t)(pg - C->pages) * NS_PAGE_SIZE;
			printf("# leaked chunk: page %td (cls %u, carved %u, drain %u, move_to %u, "
			       "park_head %llu), chunk %llu of %u\n", pg - C->pages, pg->cls,
			       pg->carved, pg->drain, pg->move_to,
			       (unsigned long long)pg->park_head,
			       (off - base) / C->classes[k].size, C->classes[k].per_page);
			ns__trace_print(C, (ns_off_t)off, stdout);
		}
	}
	return tap(ok, "consistency %s: every chunk accounted for", when);
}

/* Every key of every namespace still holds a well-formed value, and each
 * counter the sum of its deltas.  Done after the counters were read: these
 * gets count too. */
static bool check_values(int64_t *ctr_val, bool *ctr_present)
{
	char key[40], buf[VAL_MAX];
	size_t n;
	uint64_t bad = 0, seen = 0;

	for (int d = 0; d < NDATA + 1; d++) {
		ns_space *s = Cs[d];
		char tag = d < NDATA ? data_tag[d] : 'n';
		for (unsigned i = 0; i < cfg.keys; i++) {
			key_of(key, sizeof(key), tag, i);
			int rc = ns_get(s, key, strlen(key), buf, sizeof(buf), &n);
			if (rc == NS_ENOTFOUND)
				continue;
			seen++;
			if (rc != 0 || t_check_value(buf, n, key) != 0) {
				printf("# key %s: rc %d value %s\n", key, rc, rc ? "" : show(buf, n));
				bad++;
			}
		}
	}
	for (int j = 0; j < NCTR; j++) {
		snprintf(key, sizeof(key), "ctr%d", j);
		int rc = ns_get(Cs[NDATA + 1], key, strlen(key), buf, sizeof(buf) - 1, &n);
		ctr_present[j] = rc == 0;
		ctr_val[j] = 0;
		if (rc == 0) {
			char *end;
			buf[n] = '\0';
			ctr_val[j] = strtoll(buf, &end, 10);
			if (*end != '\0' || n == 0) {
				printf("# counter %s: not a number: %s\n", key, show(buf, n));
				bad++;
			}
		} else if (rc != NS_ENOTFOUND) {
			bad++;
		}
	}
	return tap(bad == 0, "%" PRIu64 " stored values well-formed after the run (%" PRIu64 " bad)",
		   seen, bad);
}

/*
 * Counters.  Every client reports, in the results mapping, what each
 * completed operation did (done) and, before each call, the most that call
 * may do (pend).  A client that exits cleanly has nothing pending.  A
 * killed one may have done its pending operation, all of it, part of it
 * (a batch) or none, before dying: so the segment's figure F must satisfy
 *
 *     sum(done) <= F <= sum(done) + sum(pend of killed clients).
 *
 * No other slack is needed: hits, misses, sets and deletes of a namespace
 * are counted only by the caller of the operation, in its own slot, and
 * kept there (and summed by ns_space_info) after the slot's owner dies.
 * For a counter key the same holds with signed deltas: lo collects the
 * negative pending deltas and hi the positive ones.  The counters live in
 * their own namespace, without TTL, in a segment far larger than the
 * working set, so they are never evicted or expired; that is checked too,
 * since an evicted counter would restart and lose counts.
 */
/* Evictions by cause, all namespaces, and per class: what to look at
 * first when a counter was evicted. */
static void print_evictions(void)
{
	uint64_t quota = 0;

	for (uint32_t i = 0; i < C->hdr->nspaces; i++)
		quota += ns_load_relaxed(&C->spaces[i].quota_evictions);
	printf("# evictions by cause: index full %" PRIu64 ", quota %" PRIu64 "\n",
	       ns_load_relaxed(&C->hdr->index_evictions), quota);
	for (uint32_t k = 0; k < C->nclasses; k++) {
		struct ns_class_shm *cl = &C->classes[k];
		uint64_t mv = ns_load_relaxed(&cl->move_evictions);
		uint64_t ev = ns_load_relaxed(&cl->evictions);
		if (ev < mv)
			ev = mv; /* nobody writes now; only for safety */
		if (ev == 0 && ns_load_relaxed(&cl->rescues) == 0)
			continue;
		printf("#   class %u (%u B, %u pages): allocation %" PRIu64 ", page move %"
		       PRIu64 " (%" PRIu64 " rescued), enomem %" PRIu64 "\n", k, cl->size,
		       ns_load_relaxed(&cl->npages), ev - mv, mv,
		       ns_load_relaxed(&cl->rescues), ns_load_relaxed(&cl->enomem));
	}
}

static bool check_counters(const struct ns_space_info *ci, const struct ns_space_info *cc,
			   const int64_t *val, const bool *present)
{
	bool ok = true;
	struct {
		const char *name;
		uint64_t got, done, pend;
	} f[] = {
		{ "hits", ci->hits, T.done.hits, T.pend.hits },
		{ "misses", ci->misses, T.done.misses, T.pend.misses },
		{ "sets", ci->sets, T.done.sets, T.pend.sets },
		{ "deletes", ci->deletes, T.done.dels, T.pend.dels },
	};

	for (size_t i = 0; i < NELEM(f); i++) {
		bool in = f[i].got >= f[i].done && f[i].got <= f[i].done + f[i].pend;
		if (!in || !cfg.ci)
			printf("# tort:count %s: segment %" PRIu64 ", clients %" PRIu64
			       " + up to %" PRIu64 " in flight\n", f[i].name, f[i].got,
			       f[i].done, f[i].pend);
		ok &= in;
	}
	ok &= tap(ok, "namespace counters add up (hits %" PRIu64 ", misses %" PRIu64
		  ", sets %" PRIu64 ", deletes %" PRIu64 ")", ci->hits, ci->misses,
		  ci->sets, ci->deletes);

	bool cok = cc->evictions == 0 && cc->expirations == 0;
	if (!cok)
		printf("# tort:ctr lost counters: %" PRIu64 " evictions, %" PRIu64
		       " expirations\n", cc->evictions, cc->expirations);
	if (!cok || !cfg.ci)
		print_evictions();
	for (int j = 0; j < NCTR; j++) {
		int64_t lo = T.ctr_done[j] + T.ctr_lo[j], hi = T.ctr_done[j] + T.ctr_hi[j];
		int64_t v = present[j] ? val[j] : 0;
		/* An absent counter is one never incremented: 0 must fit. */
		bool in = v >= lo && v <= hi;
		if (!in)
			printf("# counter ctr%d = %" PRId64 " (%s), clients report %" PRId64
			       ", allowed [%" PRId64 ", %" PRId64 "]\n", j, v,
			       present[j] ? "present" : "absent", T.ctr_done[j], lo, hi);
		cok &= in;
	}
	return tap(cok, "incr/decr counters equal the sum of reported deltas") && ok;
}

/* Store values that fill a chunk of class CLS exactly, under keys
 * "f<cls>.<n>", until the first eviction in that class or NS_ENOMEM.
 * Returns how many were stored before. */
static uint64_t fill(ns_cache *c, ns_space *s, int cls, uint64_t cap)
{
	size_t size = c->classes[cls].size, klen = 11;
	size_t vlen = size - sizeof(struct ns_item_shm) - klen;
	uint64_t ev0 = ns_load_relaxed(&c->classes[cls].evictions), n;
	char key[32];
	char *val;

	if (ns__class_for(c, sizeof(struct ns_item_shm) + klen + vlen) != cls ||
	    (val = malloc(vlen)) == NULL)
		return 0;
	memset(val, 'v', vlen);
	/* CAP stops a fill that never evicts (a failure, reported by the
	 * caller) before the index runs out. */
	for (n = 0; n < cap; n++) {
		snprintf(key, sizeof(key), "f%02d.%07" PRIu64, cls, n % 10000000);
		int rc = ns_set(s, key, klen, val, vlen, 0);
		if (rc == NS_ENOMEM)
			break;
		if (rc != 0) {
			printf("# fill: set %s: %s\n", key, ns_strerror(rc));
			break;
		}
		if (ns_load_relaxed(&c->classes[cls].evictions) != ev0)
			break;
	}
	free(val);
	return n;
}

/* Remove every key of S: scan and delete until a scan finds none. */
static void empty_space(ns_space *s)
{
	struct ns_key keys[256];
	size_t n;

	for (int round = 0; round < 10; round++) {
		uint64_t cursor = 0, found = 0;
		do {
			if (ns_scan(s, &cursor, NULL, 256, keys, NELEM(keys), &n) != 0)
				break;
			for (size_t i = 0; i < n; i++)
				ns_del(s, keys[i].key, keys[i].klen);
			found += n;
		} while (cursor != 0);
		if (found == 0)
			return;
	}
}

/*
 * No memory lost.  With every key deleted, the dead items unlinked and the
 * retired chunks freed, every page the run handed to a slab class must
 * take a full page of values of that class again, and the pages never
 * handed out must be all the rest:
 *
 *   - for each class that holds pages, in ascending order, store values
 *     that fill its chunks exactly until the first eviction in the class:
 *     the count must be pages * chunks per page, plus, for the first class
 *     filled, the pages nobody had yet (it takes them before it evicts);
 *   - a fresh segment of the same size filled with the first class tells
 *     how many pages a segment of that size has: the tortured one must
 *     still have them all, handed out or not.
 *
 * Exact, no tolerance: after the deletions every chunk is free or in this
 * process's own chunk cache (ns__verify proved it), and our own cache is
 * where our allocations look first.  A leaked chunk shows as a shortfall
 * in its class, a page lost to no class as a shortfall in the page count.
 */
static bool check_capacity(void)
{
	struct ns_census cs;
	struct ns_expire_stats es = { 0 };
	struct ns_thr *t;
	ns_space *fs;
	int err = 0, first = -1;
	char fname[NS_NAME_MAX + 1];
	bool ok = true;

	for (int d = 0; d < NDATA + 2; d++)
		empty_space(Cs[d]);
	t = ns__thr(C, &err);
	if (t == NULL)
		return tap(false, "no client slot for the controller: %s", ns_strerror(err));
	/* Expired items read as absent, so the scans skipped them. */
	ns__expire_step(C, t, C->mask + 1, &es);
	for (int i = 0; i < 4; i++)
		ns__reclaim(C, t);
	if (!check_verify("after deleting everything"))
		return false;
	if (ns_space_open(C, "tort:fill", &fs) != 0 || ns__census(C, 0, &cs) != 0)
		return tap(false, "open tort:fill, census");

	uint64_t unhanded = C->npages - cs.pages_handed, pages = unhanded;
	for (uint32_t k = 0; k < cs.nclasses; k++) {
		if (cs.cls[k].pages == 0 && !(k == cs.nclasses - 1 && first < 0))
			continue;
		if (cs.cls[k].pages == 0) /* nothing handed out: any class */
			k = (uint32_t)ns__class_for(C, 256);
		uint64_t expect = (uint64_t)cs.cls[k].pages * cs.cls[k].per_page;
		if (first < 0) {
			first = (int)k;
			expect += unhanded * cs.cls[k].per_page;
		}
		pages += cs.cls[k].pages;
		uint64_t got = fill(C, fs, (int)k, expect + cs.cls[k].per_page);
		if (got != expect || !cfg.ci)
			printf("# class %u (%u bytes): %u pages%s, filled %" PRIu64
			       " chunks of %" PRIu64 "\n", k, cs.cls[k].size, cs.cls[k].pages,
			       first == (int)k ? " and the unhanded ones" : "", got, expect);
		ok &= got == expect;
		if (first == (int)k && cs.cls[k].pages == 0)
			break;
	}
	tap(ok, "every chunk of every class holds a value again (%" PRIu64 " pages)", pages);

	snprintf(fname, sizeof(fname), "%.50s.fresh", cfg.name);
	ns_unlink(fname);
	struct ns_attach_opts o = { .flags = NS_CREATE | NS_EXCL, .size = cfg.seg_size,
				    .max_items = SEG_ITEMS };
	ns_cache *fc = NULL;
	ns_space *ffs;
	int rc = ns_attach(fname, &o, &fc);
	if (rc != 0)
		return tap(false, "fresh segment: %s", ns_strerror(rc));
	uint64_t fresh = 0;
	if (first >= 0 && ns_space_open(fc, "tort:fill", &ffs) == 0)
		fresh = fill(fc, ffs, first, (pages + 1) * fc->classes[first].per_page);
	uint64_t per = first >= 0 ? fc->classes[first].per_page : 1;
	ns_detach(fc);
	ns_unlink(fname);
	printf("# fresh segment: %" PRIu64 " chunks of class %d = %" PRIu64 " pages\n",
	       fresh, first, fresh / per);
	return tap(fresh == pages * per, "no page lost: %" PRIu64 " pages, as in a fresh segment",
		   pages) && ok;
}

static int controller(void)
{
	struct ns_attach_opts o = { .flags = NS_CREATE | NS_EXCL, .size = cfg.seg_size,
				    .max_items = SEG_ITEMS };
	uint64_t start = now_ns(), end = start + cfg.seconds * 1000000000ull;
	uint64_t next_nsd = start, next_progress = start + PROGRESS_S * 1000000000ull;
	struct sigaction sa = { .sa_handler = on_signal };
	int rc;

	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (!ns__fault_set(NULL, 'k'))
		t_skip_all("fault points are compiled out (release build)");
	ssize_t l = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
	if (l <= 0)
		t_skip_all("no /proc/self/exe");
	self_exe[l] = '\0';

	snprintf(cfg.name, sizeof(cfg.name), "nstorture.%d", (int)getpid());
	ns_unlink(cfg.name);
	printf("# torture: seed %" PRIu64 ", %d clients, %" PRIu64 " s, segment %s (%zu bytes), "
	       "%u keys a namespace, nsd %s\n", cfg.seed, cfg.clients, cfg.seconds,
	       cfg.name, cfg.seg_size, cfg.keys, cfg.nsd ? cfg.nsd : "none");
	printf("# replay: torture --seed %" PRIu64 " --seconds %" PRIu64 " --clients %d\n",
	       cfg.seed, cfg.seconds, cfg.clients);
	fflush(stdout);
	if ((rc = ns_attach(cfg.name, &o, &C)) != 0) {
		printf("1..0 # SKIP cannot create the segment: %s\n", ns_strerror(rc));
		return 77;
	}
	static const char *const all[] = { "tort:a", "tort:b", "tort:c", "tort:count", "tort:ctr" };
	for (int d = 0; d < NDATA + 2; d++)
		if ((rc = ns_space_open(C, all[d], &Cs[d])) != 0) {
			printf("1..0 # SKIP space_open: %s\n", ns_strerror(rc));
			ns_detach(C);
			ns_unlink(cfg.name);
			return 77;
		}

	for (int i = 0; i < cfg.clients; i++)
		spawn_client(i);
	while (!got_signal) {
		uint64_t now = now_ns();
		if (now >= end)
			break;
		reap(true);
		mischief(now, &next_nsd);
		watchdog();
		if (now >= next_progress) {
			progress((now - start) / 1000000000ull);
			next_progress += PROGRESS_S * 1000000000ull;
		}
		usleep(10000);
	}
	if (got_signal) {
		printf("# interrupted by signal %d: killing everything\n", (int)got_signal);
		kill_everything();
		ns_detach(C);
		ns_unlink(cfg.name);
		return 1;
	}

	/* Ask the clients to finish, wake the stopped ones, wait. */
	ns_store_release(&R->stop, 1u);
	for (int i = 0; i < cfg.clients; i++)
		if (kids[i].pid && kids[i].stop_at_ns)
			cont(&kids[i], &R->cl[i]);
	uint64_t deadline = now_ns() + END_WAIT_MS * 1000000ull;
	for (;;) {
		int alive = 0;
		reap(false);
		watchdog();
		for (int i = 0; i < cfg.clients; i++)
			alive += kids[i].pid != 0;
		if (alive == 0 || now_ns() > deadline)
			break;
		usleep(5000);
	}
	for (int i = 0; i < cfg.clients; i++)
		if (kids[i].pid) {
			failure("client #%u (pid %d) did not stop within %d ms", kids[i].serial,
				(int)kids[i].pid, END_WAIT_MS);
			kids[i].why = D_STUCK;
			kill(kids[i].pid, SIGKILL);
		}
	if (nsd_pid)
		kill(nsd_pid, SIGTERM);
	for (int i = 0; i < 2000 && waitpid(-1, NULL, WNOHANG) >= 0; i++) {
		reap(false);
		usleep(1000);
	}
	kill_everything();
	progress((now_ns() - start) / 1000000000ull);

	/* Alone now.  A killed nsd may have left a page move half done: take
	 * the janitor lock and finish or undo it, as a new nsd would. */
	int recovered = ns__recover_dead(C);
	if (cfg.nsd && ns__janitor_lock(C, NULL) == 0)
		ns__pages_resume(C);
	int64_t audited = 0;
	bool asked = ns_load_relaxed(&C->hdr->audit_wanted) != 0;
	if (asked)
		audited = ns__audit(C);
	printf("# recovery: %d dead slot(s) now, %" PRIu64 " in all; ", recovered,
	       (uint64_t)C->hdr->recoveries);
	if (asked)
		printf("the audit took back %" PRId64 " chunk(s)\n", audited);
	else
		printf("no audit was asked for\n");

	uint32_t fails = ns_load_relaxed(&R->failures);
	tap(fails == 0, "no torn or foreign value, no operation over %d ms, no stuck lock "
	    "(%u failure(s))%s%s", BOUND_MS, fails, fails ? ": " : "", fails ? R->first : "");
	uint64_t ops = 0;
	for (int op = 0; op < NOPS; op++)
		ops += T.ops[op];
	bool every = true;
	for (int op = 0; op < NOPS; op++)
		every &= T.ops[op] > 0;
	tap(every && audited >= 0, "%" PRIu64 " operations, every call of the API ran", ops);
	check_verify("after recovery");

	struct ns_space_info ci, cc;
	int64_t ctr_val[NCTR];
	bool ctr_present[NCTR];
	ns_space_info(Cs[NDATA], &ci);
	ns_space_info(Cs[NDATA + 1], &cc);
	check_values(ctr_val, ctr_present);
	check_counters(&ci, &cc, ctr_val, ctr_present);
	check_capacity();

	ns_detach(C);
	ns_unlink(cfg.name);
	printf("1..%d\n", tap_n);
	bool pass = ns_load_relaxed(&R->failures) == fails && fails == 0 && tap_failed == 0;
	return pass ? 0 : 1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: torture [options]\n"
		"  --ci                 the short run for meson test (about 45 s)\n"
		"  --seconds N          run N seconds (default 45)\n"
		"  --minutes N          run N minutes\n"
		"  --clients N          client processes (default 6, at most %d)\n"
		"  --seed S             random seed (printed; replays a run)\n"
		"  --segment-size BYTES segment size (default 64 MiB)\n"
		"  --keys N             keys per namespace (default 400)\n"
		"  --bound-ms N         longest operation allowed (default 1000; --ci 2500)\n"
		"  --nsd PATH           the janitor to kill and restart (default $NSD)\n"
		"  --no-nsd             run without nsd\n", MAX_CLIENTS);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "ci", no_argument, NULL, 'C' },
		{ "seconds", required_argument, NULL, 's' },
		{ "minutes", required_argument, NULL, 'm' },
		{ "clients", required_argument, NULL, 'n' },
		{ "seed", required_argument, NULL, 'S' },
		{ "segment-size", required_argument, NULL, 'z' },
		{ "keys", required_argument, NULL, 'k' },
		{ "bound-ms", required_argument, NULL, 'b' },
		{ "nsd", required_argument, NULL, 'd' },
		{ "no-nsd", no_argument, NULL, 'N' },
		{ "help", no_argument, NULL, 'h' },
		/* Internal: a client started by exec (with $NS_FAULT). */
		{ "client", required_argument, NULL, 'c' },
		{ "results-fd", required_argument, NULL, 'r' },
		{ "segment", required_argument, NULL, 'g' },
		{ NULL, 0, NULL, 0 },
	};
	bool no_nsd = false, seeded = false;
	int client = -1, o;
	char *end;

	cfg.nsd = getenv("NSD");
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'C': cfg.ci = true; break;
		case 's': cfg.seconds = strtoull(optarg, NULL, 10); break;
		case 'm': cfg.seconds = 60 * strtoull(optarg, NULL, 10); break;
		case 'n': cfg.clients = atoi(optarg); break;
		case 'S': cfg.seed = strtoull(optarg, NULL, 0); seeded = true; break;
		case 'z':
			cfg.seg_size = strtoull(optarg, &end, 10);
			if (*end == 'k' || *end == 'K') cfg.seg_size <<= 10;
			if (*end == 'm' || *end == 'M') cfg.seg_size <<= 20;
			if (*end == 'g' || *end == 'G') cfg.seg_size <<= 30;
			break;
		case 'k': cfg.keys = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'b': cfg.bound_ms = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'd': cfg.nsd = optarg; break;
		case 'N': no_nsd = true; break;
		case 'c': client = atoi(optarg); break;
		case 'r': results_fd = atoi(optarg); break;
		case 'g': snprintf(cfg.name, sizeof(cfg.name), "%s", optarg); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (cfg.clients < 1 || cfg.clients > MAX_CLIENTS || cfg.keys < 1 ||
	    cfg.seconds < 1 || cfg.seg_size < (8u << 20)) {
		usage(stderr);
		return 2;
	}

	if (cfg.bound_ms == 0)
		cfg.bound_ms = cfg.ci ? 2500 : 1000;
	if (client >= 0) {
		/* An exec'd client: the controller's results mapping is fd
		 * RESULTS_FD, inherited across exec. */
		if (client >= MAX_CLIENTS || results_fd < 0)
			return 2;
		R = mmap(NULL, sizeof(*R), PROT_READ | PROT_WRITE, MAP_SHARED, results_fd, 0);
		if (R == MAP_FAILED)
			return 2;
		return client_main(NULL, client, cfg.seed);
	}

	if (no_nsd || (cfg.nsd && *cfg.nsd == '\0'))
		cfg.nsd = NULL;
	if (cfg.ci)
		cfg.seconds = 40;
	if (!seeded)
		cfg.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	crng = cfg.seed | 1;
	/* The results live in a memfd so that exec'd clients can map them. */
	results_fd = memfd_create("torture-results", 0);
	if (results_fd < 0 || ftruncate(results_fd, sizeof(*R)) != 0)
		t_skip_all("memfd_create failed");
	R = mmap(NULL, sizeof(*R), PROT_READ | PROT_WRITE, MAP_SHARED, results_fd, 0);
	if (R == MAP_FAILED)
		t_skip_all("mmap of the results failed");
	return controller();
}
