/*
 * be_redis.c - nsbench's Redis store: a redis-server that nsbench starts
 * for the run, reached through hiredis over a unix socket, one connection
 * per worker process.
 *
 * The design measured is the one a PHP-FPM or prefork deployment gets when
 * it moves its shared cache out of process: every get and set is a request
 * and a reply on a socket to a single-threaded server that owns the data.
 * Each operation therefore costs two context switches and the server's
 * command loop, and all processes queue behind that one thread; that, not
 * the hash table, is what this store shows against NameStore.
 *
 * Server settings, and why (redis.conf of Redis 7.0 documents each one):
 *
 *   --port 0 --unixsocket PATH --unixsocketperm 700
 *	a unix socket in the run's private directory and no TCP listener:
 *	the fastest local transport Redis has and the one a same-host cache
 *	would use.
 *   --save "" --appendonly no
 *	no RDB snapshots and no AOF: a cache, not a database, so no fork
 *	for a snapshot and no write(2) per set lands inside the timed loop.
 *   --maxmemory BYTES --maxmemory-policy allkeys-lru
 *	what the Redis documentation tells a cache user to set ("Key
 *	eviction", https://redis.io/docs/reference/eviction/): a bound and
 *	an LRU policy over all keys.  The bound is well above what the key
 *	set needs (see redis_maxmemory()), so nothing is evicted during a
 *	run; teardown checks evicted_keys and says so if that was wrong,
 *	because an eviction would turn hits into misses and flatter Redis.
 *   io-threads left at 1: redis.conf says threaded I/O only pays with
 *	many cores and large replies, and a unix socket with 64-byte values
 *	on a small box gives the extra threads nothing to overlap.
 *
 * The preload pipelines SETs in batches (hiredis README, "Pipelining":
 * redisAppendCommand() queues, redisGetReply() flushes and reads; Redis
 * documentation, "Redis pipelining", https://redis.io/docs/manual/
 * pipelining/), which is how a bulk load is done: about two seconds for a
 * million keys here, instead of a round trip for each.  Every reply is checked and
 * DBSIZE must equal the key count afterwards.
 *
 * hiredis contexts hold a socket and buffers and must not be shared, so the
 * parent closes its own before fork and every child connects on its own
 * (hiredis README: a context is not thread-safe; the same holds across
 * fork, where two processes would interleave on one socket).
 *
 * The memory figure is Redis's own used_memory (INFO memory: bytes handed
 * out by its allocator, jemalloc's usable sizes) after the preload minus
 * the same right after start, both read on a fresh connection so the
 * client's own buffers cancel out: the objects, the keys' and values' sds
 * strings and the main dictionary's entries and table.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "bench.h"

/*
 * Commands in flight per pipelined batch during the preload.  A thousand
 * SETs of a few hundred bytes each fit the server's query buffer and the
 * socket buffers comfortably, and already make the round trip a small
 * share of each batch; larger batches gain nothing measurable.
 */
#define REDIS_BATCH 1000u

/* How long redis-server may take to listen; it starts in milliseconds. */
#define REDIS_START_MS 10000u

struct redis_be {
	pid_t pid;                      /* the redis-server we run, or 0 */
	char sock[PATH_MAX];            /* its unix socket */
	char log[PATH_MAX];             /* its stdout and stderr */
	redisContext *c;                /* the parent's during setup, then
					 * each child's own */
	uint64_t used_base;             /* used_memory right after start */
	uint64_t maxmemory;             /* what we passed as --maxmemory */
	bool complained;                /* this process printed an error */
};

/*
 * A bound for --maxmemory that the key set cannot reach: per key a value
 * and a key twice over (sds headers and jemalloc's size classes round up,
 * by at most a quarter above 64 bytes), plus 128 bytes for the robj, the
 * dictEntry and the table slot, plus 256 MiB for Redis's own start-up use
 * and the clients' buffers.
 */
static uint64_t redis_maxmemory(const struct bench *b)
{
	uint64_t per_key = 2u * (b->cfg.value_size + KEY_STRIDE) + 128u;

	return (uint64_t)b->cfg.keys * per_key + ((uint64_t)256 << 20);
}

/* Print a failure once per process: the first one says what broke. */
static void redis_complain(struct redis_be *r, const char *what,
			   const char *msg)
{
	if (r->complained)
		return;
	r->complained = true;
	fprintf(stderr, "nsbench: redis %s: %s (further errors in this "
		"process are only counted)\n", what, msg);
}

/* The NS_E* code for an error reply; the message is printed once. */
static int redis_reply_error(struct redis_be *r, const char *what,
			     const redisReply *rep)
{
	redis_complain(r, what, rep->str);
	/* "OOM command not allowed when used memory > 'maxmemory'" */
	if (strncmp(rep->str, "OOM", 3) == 0)
		return NS_ENOMEM;
	return NS_EINVAL;
}

/* The NS_E* code for a failed call: the context's I/O or protocol error. */
static int redis_io_error(struct redis_be *r, const char *what)
{
	redis_complain(r, what, r->c && r->c->err ? r->c->errstr
						  : "no reply");
	return NS_EINVAL;
}

static redisContext *redis_connect(struct redis_be *r)
{
	redisContext *c = redisConnectUnix(r->sock);

	if (!c) {
		redis_complain(r, "connect", "out of memory");
		return NULL;
	}
	if (c->err) {
		redis_complain(r, "connect", c->errstr);
		redisFree(c);
		return NULL;
	}
	return c;
}

/*
 * FIELD of INFO SECTION as a number, from the "field:value\r\n" lines of
 * the reply.  0 on success.
 */
static int redis_info_u64(struct redis_be *r, redisContext *c,
			  const char *section, const char *field,
			  uint64_t *out)
{
	redisReply *rep = redisCommand(c, "INFO %s", section);
	size_t flen = strlen(field);
	int rc = NS_EINVAL;

	if (!rep) {
		redis_complain(r, "INFO", c->errstr);
		return NS_EINVAL;
	}
	if (rep->type != REDIS_REPLY_STRING) {
		redis_complain(r, "INFO", rep->type == REDIS_REPLY_ERROR
					  ? rep->str : "unexpected reply");
		goto out;
	}
	for (const char *p = rep->str; p && *p; p = strchr(p, '\n')) {
		if (*p == '\n')
			p++;
		if (strncmp(p, field, flen) == 0 && p[flen] == ':') {
			*out = strtoull(p + flen + 1, NULL, 10);
			rc = 0;
			break;
		}
	}
	if (rc)
		redis_complain(r, "INFO", "field missing");
out:
	freeReplyObject(rep);
	return rc;
}

/*
 * used_memory on a connection of its own: the caller's connection may
 * still hold a grown query buffer from the pipelined preload, which Redis
 * counts in used_memory and would charge to the data.
 */
static int redis_used_memory(struct redis_be *r, uint64_t *out)
{
	redisContext *c = redis_connect(r);
	int rc;

	if (!c)
		return NS_EINVAL;
	rc = redis_info_u64(r, c, "memory", "used_memory", out);
	redisFree(c);
	return rc;
}

static int redis_start(struct bench *b, struct redis_be *r)
{
	char maxmem[32];
	char *argv[] = {
		"redis-server",
		"--port", "0",
		"--unixsocket", r->sock,
		"--unixsocketperm", "700",
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--dir", b->dir,
		"--maxmemory", maxmem,
		"--maxmemory-policy", "allkeys-lru",
		NULL,
	};

	r->maxmemory = redis_maxmemory(b);
	snprintf(maxmem, sizeof(maxmem), "%" PRIu64, r->maxmemory);
	r->pid = bench_spawn("redis-server", argv, r->log);
	if (r->pid < 0) {
		r->pid = 0;
		return NS_EINVAL;
	}
	if (bench_wait_socket(r->sock, r->pid, r->log, REDIS_START_MS))
		return NS_EINVAL;
	return 0;
}

/*
 * Every key, BATCH SETs to a round trip.  The value buffer can be reused
 * at once: redisAppendCommand() formats the command into the context's
 * output buffer.
 */
static int redis_preload(struct bench *b, struct redis_be *r)
{
	size_t vsize = b->cfg.value_size;
	unsigned char *val = malloc(vsize ? vsize : 1);
	uint32_t keys = b->cfg.keys;
	int rc = 0;

	if (!val) {
		fprintf(stderr, "nsbench: out of memory\n");
		return NS_ENOMEM;
	}
	value_fill(val, vsize);
	for (uint32_t k = 0; k < keys && !rc; ) {
		uint32_t n = keys - k < REDIS_BATCH ? keys - k : REDIS_BATCH;

		if (stop_requested) {
			rc = NS_EINVAL;
			break;
		}
		for (uint32_t i = 0; i < n; i++) {
			size_t klen;
			const char *key = key_at(b, k + i, &klen);

			value_stamp(val, vsize, k + i);
			if (redisAppendCommand(r->c, "SET %b %b", key, klen,
					       val, vsize) != REDIS_OK) {
				free(val);
				return redis_io_error(r, "preload");
			}
		}
		/* Read every reply even after a bad one, to keep in step. */
		for (uint32_t i = 0; i < n; i++) {
			redisReply *rep;

			if (redisGetReply(r->c, (void **)&rep) != REDIS_OK) {
				free(val);
				return redis_io_error(r, "preload");
			}
			if (rep->type == REDIS_REPLY_ERROR && !rc)
				rc = redis_reply_error(r, "preload SET", rep);
			freeReplyObject(rep);
		}
		k += n;
	}
	free(val);
	return rc;
}

/* All keys must be there: a silent loss would show as misses later. */
static int redis_check_count(struct bench *b, struct redis_be *r)
{
	redisReply *rep = redisCommand(r->c, "DBSIZE");
	int rc = 0;

	if (!rep)
		return redis_io_error(r, "DBSIZE");
	if (rep->type != REDIS_REPLY_INTEGER ||
	    rep->integer != (long long)b->cfg.keys) {
		fprintf(stderr, "nsbench: redis holds %lld keys after the "
			"preload, expected %" PRIu32 "\n",
			rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1,
			b->cfg.keys);
		rc = NS_ENOMEM;
	}
	freeReplyObject(rep);
	return rc;
}

static int redis_be_setup(struct bench *b)
{
	struct redis_be *r = calloc(1, sizeof(*r));
	int rc;

	b->st = r;
	if (!r) {
		fprintf(stderr, "nsbench: out of memory\n");
		return NS_ENOMEM;
	}
	bench_path(b, "redis.sock", r->sock);
	bench_path(b, "redis.log", r->log);
	rc = redis_start(b, r);
	if (rc)
		return rc;
	rc = redis_used_memory(r, &r->used_base);
	if (rc)
		return rc;
	r->c = redis_connect(r);
	if (!r->c)
		return NS_EINVAL;
	rc = redis_preload(b, r);
	if (rc == 0)
		rc = redis_check_count(b, r);
	/* No client handle may cross fork(). */
	redisFree(r->c);
	r->c = NULL;
	if (rc == 0)
		printf("# backend=redis maxmemory=%" PRIu64 " policy=allkeys-lru"
		       " persistence=off socket=unix\n", r->maxmemory);
	return rc;
}

static int redis_be_child_init(struct bench *b)
{
	struct redis_be *r = b->st;

	r->complained = false;
	r->c = redis_connect(r);
	return r->c ? 0 : NS_EINVAL;
}

static int redis_be_get(struct bench *b, const char *key, size_t klen,
			void *buf, size_t cap, size_t *vlen)
{
	struct redis_be *r = b->st;
	redisReply *rep = redisCommand(r->c, "GET %b", key, klen);
	int rc;

	if (!rep)
		return redis_io_error(r, "GET");
	switch (rep->type) {
	case REDIS_REPLY_STRING:
		*vlen = rep->len;
		if (rep->len <= cap) {
			memcpy(buf, rep->str, rep->len);
			rc = 0;
		} else {
			rc = NS_ERANGE;
		}
		break;
	case REDIS_REPLY_NIL:
		rc = NS_ENOTFOUND;
		break;
	case REDIS_REPLY_ERROR:
		rc = redis_reply_error(r, "GET", rep);
		break;
	default:
		redis_complain(r, "GET", "unexpected reply type");
		rc = NS_EINVAL;
		break;
	}
	freeReplyObject(rep);
	return rc;
}

static int redis_be_set(struct bench *b, const char *key, size_t klen,
			const void *val, size_t vlen)
{
	struct redis_be *r = b->st;
	redisReply *rep = redisCommand(r->c, "SET %b %b", key, klen, val,
				       vlen);
	int rc = 0;

	if (!rep)
		return redis_io_error(r, "SET");
	if (rep->type == REDIS_REPLY_ERROR)
		rc = redis_reply_error(r, "SET", rep);
	else if (rep->type != REDIS_REPLY_STATUS) {
		redis_complain(r, "SET", "unexpected reply type");
		rc = NS_EINVAL;
	}
	freeReplyObject(rep);
	return rc;
}

static void redis_be_child_exit(struct bench *b)
{
	struct redis_be *r = b->st;

	redisFree(r->c);
	r->c = NULL;
}

static int redis_be_memory(struct bench *b, uint64_t *bytes,
			   const char **what)
{
	struct redis_be *r = b->st;
	uint64_t used;
	int rc = redis_used_memory(r, &used);

	if (rc)
		return rc;
	*bytes = used > r->used_base ? used - r->used_base : 0;
	*what = "INFO used_memory after the preload minus right after "
		"start: objects, sds strings, dict entries and table";
	return 0;
}

static void redis_be_teardown(struct bench *b)
{
	struct redis_be *r = b->st;
	uint64_t evicted = 0;

	if (!r)
		return;
	if (r->c)
		redisFree(r->c);
	/*
	 * A server that evicted served misses for keys the other stores
	 * hold; say so instead of letting it look faster.  Not after ^C:
	 * then only stopping the server matters.
	 */
	if (r->pid > 0 && !stop_requested) {
		redisContext *c = redis_connect(r);

		if (c && redis_info_u64(r, c, "stats", "evicted_keys",
					&evicted) == 0 && evicted)
			printf("# backend=redis warning: evicted_keys=%" PRIu64
			       " (maxmemory %" PRIu64 " too small; the run "
			       "had misses it should not have)\n", evicted,
			       r->maxmemory);
		if (c)
			redisFree(c);
	}
	bench_stop_server(r->pid);
	if (r->sock[0])
		unlink(r->sock);
	if (r->log[0])
		unlink(r->log);
	free(r);
	b->st = NULL;
}

const struct backend be_redis = {
	.name = "redis",
	.what = "Redis via hiredis over a unix socket, one connection per "
		"process, no persistence, allkeys-lru with room to spare",
	.setup = redis_be_setup,
	.child_init = redis_be_child_init,
	.get = redis_be_get,
	.set = redis_be_set,
	.child_exit = redis_be_child_exit,
	.memory = redis_be_memory,
	.teardown = redis_be_teardown,
};
