/*
 * be_memcached.c - nsbench's memcached store: a memcached that nsbench
 * starts for the run, reached through libmemcached over a unix socket, one
 * connection per worker process.
 *
 * The design measured is the classic out-of-process cache: a multi-threaded
 * server (libevent worker threads, each connection owned by one of them)
 * over a slab allocator and one hash table with striped item locks.  Unlike
 * Redis the server spreads connections over threads, so several processes
 * can be served at once; like Redis every operation is a request and a
 * reply on a socket, two context switches and a wake-up of a server thread.
 *
 * Server settings, and why (memcached -h and doc/protocol.txt of 1.6):
 *
 *   -s PATH -a 0700 -U 0
 *	a unix socket in the run's private directory, no TCP, no UDP: the
 *	fastest local transport and the one a same-host cache would use.
 *   -t N (--server-threads, default the online CPUs)
 *	a worker thread per CPU: fewer leave CPUs idle while processes
 *	wait, more only add context switches.
 *   -m MB
 *	room for the whole key set twice over (mc_memory_mb()), so the LRU
 *	never evicts during a run; teardown checks the "evictions" stat and
 *	says so if that was wrong, because evictions turn hits into misses.
 *   -o hashpower=N
 *	the hash table sized for the key set up front, as memcached -h
 *	suggests for a known size ("set based on STAT hash_power_level"),
 *	instead of growing it (and moving every item) during the preload.
 *   -c CONNS
 *	only raised above the default 1024 when the processes need it.
 *   -I SIZE
 *	only raised above the default 1 MiB item when the value needs it.
 *   -u root
 *	memcached refuses to run as root without it.
 *
 * Client settings.  The ASCII protocol: memcached 1.6 declared the
 * binary protocol deprecated (release notes of 1.6.0, https://github.com/
 * memcached/memcached/wiki/ReleaseNotes160), and it buys nothing here:
 * one request and one reply per operation either way.  (Tried with
 * libmemcached 1.1.4: in binary mode a set that followed the get below
 * failed with "SERVER END", the end marker of the get read as the set's
 * reply.)  Otherwise libmemcached's defaults.  A get is memcached_mget() of one key and memcached_fetch_result() into
 * a result this process keeps, which is what memcached_get() does minus
 * the malloc'd copy of the value it hands back (libmemcached documents
 * memcached_fetch_result() for reusing a result structure); the value is
 * then copied into the caller's buffer, as the other stores do.
 *
 * The preload sets every key with MEMCACHED_BEHAVIOR_NOREPLY and
 * MEMCACHED_BEHAVIOR_BUFFER_REQUESTS (libmemcached's memcached_behavior_set
 * documentation: requests are buffered and sent without waiting for a
 * reply), the bulk load libmemcached offers, then flushes.  A stats request
 * on the same connection is answered only after every set before it was
 * processed, so its curr_items must equal the key count, and it is checked.
 * It must be the same connection: see mc_preload() for the trap.
 *
 * libmemcached handles hold sockets and buffers and must not be shared, so
 * the parent frees its own before fork and each child connects on its own.
 *
 * The memory figure is total_malloced from "stats slabs" (protocol.txt:
 * "Total amount of memory allocated to slab pages") plus hash_bytes from
 * "stats" (the hash table).  That is the memory memcached holds for the
 * items: whole slab pages with the chunk rounding of their size class, and
 * the index; "bytes" alone would count only the items' exact sizes, which
 * is less than any allocator can hold them in.  It is the same kind of
 * figure NameStore reports (data pages in use plus its index).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libmemcached/memcached.h>

#include "bench.h"

/* How long memcached may take to listen; it starts in milliseconds. */
#define MC_START_MS 10000u

/* memcached's defaults for -c and -I (memcached -h). */
#define MC_DEFAULT_CONNS 1024u
#define MC_DEFAULT_ITEM_MAX ((size_t)1 << 20)

/*
 * An item's overhead besides key and value, generously: the item header
 * (about 50 bytes with CAS on 64-bit), the "\r\n" memcached keeps after
 * the value, and the chunk rounding of the slab classes (growth factor
 * 1.25, so up to a fifth of the chunk).  -m gets twice this per key.
 */
#define MC_ITEM_OVERHEAD 128u

struct mc_be {
	pid_t pid;                      /* the memcached we run, or 0 */
	char sock[PATH_MAX];            /* its unix socket */
	char log[PATH_MAX];             /* its stdout and stderr */
	memcached_st *mc;               /* the parent's during setup, then
					 * each child's own */
	memcached_result_st res;        /* a child's gets land here */
	bool res_ready;                 /* res was created on mc */
	bool complained;                /* this process printed an error */
	unsigned memory_mb;             /* -m we passed */
	unsigned hashpower;             /* -o hashpower we passed */
};

/* The stats this store reads, from "stats" and "stats slabs". */
struct mc_stats {
	uint64_t curr_items;
	uint64_t bytes;                 /* exact item sizes */
	uint64_t hash_bytes;            /* the hash table */
	uint64_t evictions;
	uint64_t total_malloced;        /* slab pages ("stats slabs") */
};

/* Room for the key set twice over plus 64 MiB for the per-class pages. */
static unsigned mc_memory_mb(const struct bench *b)
{
	uint64_t item = KEY_STRIDE + b->cfg.value_size + MC_ITEM_OVERHEAD;

	return (unsigned)((2u * (uint64_t)b->cfg.keys * item >> 20) + 64u);
}

/*
 * memcached grows its table when it holds more than 1.5 items per bucket
 * (assoc.c); start at the power of two that holds the key set below that,
 * and never under its default of 16.
 */
static unsigned mc_hashpower(uint32_t keys)
{
	unsigned hp = 16;

	while (((uint64_t)1 << hp) * 3u / 2u < keys)
		hp++;
	return hp;
}

static void mc_complain(struct mc_be *m, const char *what, const char *msg)
{
	if (m->complained)
		return;
	m->complained = true;
	fprintf(stderr, "nsbench: memcached %s: %s (further errors in this "
		"process are only counted)\n", what, msg);
}

/* The NS_E* code for a libmemcached failure; the message is printed once. */
static int mc_error(struct mc_be *m, memcached_st *mc, const char *what,
		    memcached_return_t rc)
{
	char msg[512];

	/*
	 * The code's own text always; the handle's last error only adds
	 * the detail (an errno, the server's words) when it has one.
	 */
	snprintf(msg, sizeof(msg), "%s; last error: %s",
		 memcached_strerror(mc, rc),
		 mc ? memcached_last_error_message(mc) : "none");
	mc_complain(m, what, msg);
	switch (rc) {
	case MEMCACHED_E2BIG:
	case MEMCACHED_KEY_TOO_BIG:
		return NS_E2BIG;
	case MEMCACHED_MEMORY_ALLOCATION_FAILURE:
	case MEMCACHED_SERVER_MEMORY_ALLOCATION_FAILURE:
		return NS_ENOMEM;
	default:
		return NS_EINVAL;
	}
}

static memcached_st *mc_connect(struct mc_be *m)
{
	memcached_st *mc = memcached_create(NULL);
	memcached_return_t rc;

	if (!mc) {
		mc_complain(m, "connect", "out of memory");
		return NULL;
	}
	rc = memcached_server_add_unix_socket(mc, m->sock);
	if (rc != MEMCACHED_SUCCESS) {
		mc_error(m, mc, "server_add_unix_socket", rc);
		memcached_free(mc);
		return NULL;
	}
	return mc;
}

/* A stat's value as a number: libmemcached passes it as a counted string. */
static uint64_t mc_stat_u64(const char *val, size_t len)
{
	char tmp[32];

	if (len >= sizeof(tmp))
		len = sizeof(tmp) - 1;
	memcpy(tmp, val, len);
	tmp[len] = '\0';
	return strtoull(tmp, NULL, 10);
}

static memcached_return_t mc_stat_cb(const memcached_instance_st *server,
				     const char *key, size_t klen,
				     const char *val, size_t vlen, void *ctx)
{
	static const struct {
		const char *name;
		size_t off;
	} want[] = {
		{ "curr_items", offsetof(struct mc_stats, curr_items) },
		{ "bytes", offsetof(struct mc_stats, bytes) },
		{ "hash_bytes", offsetof(struct mc_stats, hash_bytes) },
		{ "evictions", offsetof(struct mc_stats, evictions) },
		{ "total_malloced", offsetof(struct mc_stats, total_malloced) },
	};

	(void)server;
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		if (strlen(want[i].name) == klen &&
		    memcmp(want[i].name, key, klen) == 0) {
			uint64_t *f = (uint64_t *)((char *)ctx + want[i].off);

			*f = mc_stat_u64(val, vlen);
			break;
		}
	}
	return MEMCACHED_SUCCESS;
}

/* "stats" and "stats slabs" from the server behind MC into *ST. */
static int mc_read_stats(struct mc_be *m, memcached_st *mc,
			 struct mc_stats *st)
{
	memcached_return_t rc;

	memset(st, 0, sizeof(*st));
	rc = memcached_stat_execute(mc, NULL, mc_stat_cb, st);
	if (rc == MEMCACHED_SUCCESS)
		rc = memcached_stat_execute(mc, "slabs", mc_stat_cb, st);
	return rc == MEMCACHED_SUCCESS ? 0 : mc_error(m, mc, "stats", rc);
}

static int mc_start(struct bench *b, struct mc_be *m)
{
	char mem[16], threads[16], conns[16], hashpower[32], item_max[24];
	char *argv[24];
	unsigned argc = 0;
	size_t item = KEY_STRIDE + b->cfg.value_size + MC_ITEM_OVERHEAD;

	m->memory_mb = mc_memory_mb(b);
	m->hashpower = mc_hashpower(b->cfg.keys);
	snprintf(mem, sizeof(mem), "%u", m->memory_mb);
	snprintf(threads, sizeof(threads), "%u", b->cfg.server_threads);
	snprintf(hashpower, sizeof(hashpower), "hashpower=%u", m->hashpower);

	argv[argc++] = "memcached";
	argv[argc++] = "-s";
	argv[argc++] = m->sock;
	argv[argc++] = "-a";
	argv[argc++] = "0700";
	argv[argc++] = "-U";
	argv[argc++] = "0";
	argv[argc++] = "-m";
	argv[argc++] = mem;
	argv[argc++] = "-t";
	argv[argc++] = threads;
	argv[argc++] = "-o";
	argv[argc++] = hashpower;
	/* A connection per process, plus the parent's and some spare. */
	if (b->cfg.procs + 16u > MC_DEFAULT_CONNS) {
		snprintf(conns, sizeof(conns), "%u", b->cfg.procs + 16u);
		argv[argc++] = "-c";
		argv[argc++] = conns;
	}
	if (item > MC_DEFAULT_ITEM_MAX) {
		/* Whole MiB above the item; -m is far larger, as -I needs. */
		snprintf(item_max, sizeof(item_max), "%zum", (item >> 20) + 1u);
		argv[argc++] = "-I";
		argv[argc++] = item_max;
	}
	if (geteuid() == 0) {
		argv[argc++] = "-u";
		argv[argc++] = "root";
	}
	argv[argc] = NULL;

	m->pid = bench_spawn("memcached", argv, m->log);
	if (m->pid < 0) {
		m->pid = 0;
		return NS_EINVAL;
	}
	if (bench_wait_socket(m->sock, m->pid, m->log, MC_START_MS))
		return NS_EINVAL;
	return 0;
}

/*
 * Every key, buffered and without replies, then one flush.  A failed
 * memcached_set() here is a client-side failure (the server's answers are
 * not read); what the server did is checked by the count afterwards.
 */
static int mc_preload(struct bench *b, struct mc_be *m)
{
	size_t vsize = b->cfg.value_size;
	unsigned char *val = malloc(vsize ? vsize : 1);
	memcached_return_t rc;
	int err = 0;

	if (!val) {
		fprintf(stderr, "nsbench: out of memory\n");
		return NS_ENOMEM;
	}
	value_fill(val, vsize);
	rc = memcached_behavior_set(m->mc, MEMCACHED_BEHAVIOR_NOREPLY, 1);
	if (rc == MEMCACHED_SUCCESS)
		rc = memcached_behavior_set(m->mc,
					    MEMCACHED_BEHAVIOR_BUFFER_REQUESTS, 1);
	if (rc != MEMCACHED_SUCCESS) {
		err = mc_error(m, m->mc, "behavior_set", rc);
		goto out;
	}
	for (uint32_t k = 0; k < b->cfg.keys; k++) {
		size_t klen;
		const char *key = key_at(b, k, &klen);

		/* Checked now and then: the loop is short between checks. */
		if ((k & 0xffffu) == 0 && stop_requested) {
			err = NS_EINVAL;
			goto out;
		}
		value_stamp(val, vsize, k);
		rc = memcached_set(m->mc, key, klen, (const char *)val, vsize,
				   0, 0);
		if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_BUFFERED) {
			err = mc_error(m, m->mc, "preload set", rc);
			goto out;
		}
	}
	/*
	 * Replies back on for the stats that follow, but BUFFER_REQUESTS is
	 * left on: switching it off makes libmemcached close the connection
	 * and open a new one, whose requests the server may then answer
	 * before it has worked through the sets still queued on the old one.
	 */
	rc = memcached_flush_buffers(m->mc);
	if (rc == MEMCACHED_SUCCESS)
		rc = memcached_behavior_set(m->mc, MEMCACHED_BEHAVIOR_NOREPLY, 0);
	if (rc != MEMCACHED_SUCCESS)
		err = mc_error(m, m->mc, "preload flush", rc);
out:
	free(val);
	return err;
}

static int mc_be_setup(struct bench *b)
{
	struct mc_be *m = calloc(1, sizeof(*m));
	struct mc_stats st;
	int rc;

	b->st = m;
	if (!m) {
		fprintf(stderr, "nsbench: out of memory\n");
		return NS_ENOMEM;
	}
	bench_path(b, "memcached.sock", m->sock);
	bench_path(b, "memcached.log", m->log);
	rc = mc_start(b, m);
	if (rc)
		return rc;
	m->mc = mc_connect(m);
	if (!m->mc)
		return NS_EINVAL;
	rc = mc_preload(b, m);
	/* Same connection: answered after every set above was processed. */
	if (rc == 0)
		rc = mc_read_stats(m, m->mc, &st);
	if (rc == 0 && (st.curr_items != b->cfg.keys || st.evictions)) {
		fprintf(stderr, "nsbench: memcached holds %" PRIu64 " items "
			"after the preload (evictions %" PRIu64 "), expected %"
			PRIu32 "\n", st.curr_items, st.evictions, b->cfg.keys);
		rc = NS_ENOMEM;
	}
	/* No client handle may cross fork(). */
	memcached_free(m->mc);
	m->mc = NULL;
	if (rc == 0)
		printf("# backend=memcached threads=%u memory_mb=%u hashpower=%u"
		       " protocol=ascii socket=unix items=%" PRIu64
		       " item_bytes=%" PRIu64 " total_malloced=%" PRIu64
		       " hash_bytes=%" PRIu64 "\n", b->cfg.server_threads,
		       m->memory_mb, m->hashpower, st.curr_items, st.bytes,
		       st.total_malloced, st.hash_bytes);
	return rc;
}

static int mc_be_child_init(struct bench *b)
{
	struct mc_be *m = b->st;

	m->complained = false;
	m->mc = mc_connect(m);
	if (!m->mc)
		return NS_EINVAL;
	if (!memcached_result_create(m->mc, &m->res)) {
		mc_complain(m, "result_create", "out of memory");
		memcached_free(m->mc);
		m->mc = NULL;
		return NS_ENOMEM;
	}
	m->res_ready = true;
	return 0;
}

static int mc_be_get(struct bench *b, const char *key, size_t klen,
		     void *buf, size_t cap, size_t *vlen)
{
	struct mc_be *m = b->st;
	memcached_return_t rc;
	memcached_result_st *res;
	size_t len;

	rc = memcached_mget(m->mc, &key, &klen, 1);
	if (rc != MEMCACHED_SUCCESS)
		return mc_error(m, m->mc, "get", rc);
	res = memcached_fetch_result(m->mc, &m->res, &rc);
	if (!res) {
		/* END without a VALUE: the key is not there. */
		if (rc == MEMCACHED_END || rc == MEMCACHED_NOTFOUND)
			return NS_ENOTFOUND;
		return mc_error(m, m->mc, "get", rc);
	}
	len = memcached_result_length(res);
	*vlen = len;
	if (len > cap)
		return NS_ERANGE;
	memcpy(buf, memcached_result_value(res), len);
	return 0;
}

static int mc_be_set(struct bench *b, const char *key, size_t klen,
		     const void *val, size_t vlen)
{
	struct mc_be *m = b->st;
	memcached_return_t rc;

	rc = memcached_set(m->mc, key, klen, val, vlen, 0, 0);
	if (rc != MEMCACHED_SUCCESS)
		return mc_error(m, m->mc, "set", rc);
	return 0;
}

static void mc_be_child_exit(struct bench *b)
{
	struct mc_be *m = b->st;

	if (m->res_ready)
		memcached_result_free(&m->res);
	m->res_ready = false;
	memcached_free(m->mc);
	m->mc = NULL;
}

static int mc_be_memory(struct bench *b, uint64_t *bytes, const char **what)
{
	struct mc_be *m = b->st;
	memcached_st *mc = mc_connect(m);
	struct mc_stats st;
	int rc;

	if (!mc)
		return NS_EINVAL;
	rc = mc_read_stats(m, mc, &st);
	memcached_free(mc);
	if (rc)
		return rc;
	*bytes = st.total_malloced + st.hash_bytes;
	*what = "stats slabs total_malloced (slab pages) + stats hash_bytes "
		"(hash table)";
	return 0;
}

static void mc_be_teardown(struct bench *b)
{
	struct mc_be *m = b->st;

	if (!m)
		return;
	if (m->mc)
		memcached_free(m->mc);
	/*
	 * A server that evicted served misses for keys the other stores
	 * hold; say so instead of letting it look faster.  Not after ^C:
	 * then only stopping the server matters.
	 */
	if (m->pid > 0 && !stop_requested) {
		memcached_st *mc = mc_connect(m);
		struct mc_stats st;

		if (mc && mc_read_stats(m, mc, &st) == 0 && st.evictions)
			printf("# backend=memcached warning: evictions=%" PRIu64
			       " (-m %u too small; the run had misses it "
			       "should not have)\n", st.evictions, m->memory_mb);
		if (mc)
			memcached_free(mc);
	}
	bench_stop_server(m->pid);
	if (m->sock[0])
		unlink(m->sock);
	if (m->log[0])
		unlink(m->log);
	free(m);
	b->st = NULL;
}

const struct backend be_memcached = {
	.name = "memcached",
	.what = "memcached via libmemcached over a unix socket, one connection "
		"per process, ASCII protocol, no evictions",
	.setup = mc_be_setup,
	.child_init = mc_be_child_init,
	.get = mc_be_get,
	.set = mc_be_set,
	.child_exit = mc_be_child_exit,
	.memory = mc_be_memory,
	.teardown = mc_be_teardown,
};
