/*
 * be_ns.c - nsbench's NameStore store: a private segment created by the
 * parent with ns_attach(NS_CREATE), preloaded, then shared with the
 * children through the handle they inherit across fork(), as a prefork
 * server would use it.  Optionally with nsd running on the segment.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ns_internal.h"
#include "bench.h"

struct ns_be {
	char seg_name[NS_NAME_MAX + 1];
	ns_cache *cache;
	ns_space *space;
	pid_t nsd_pid;                  /* the janitor we started, or 0 */
};

/*
 * A segment for KEYS values of VSIZE bytes when the user gave no size:
 * the index for KEYS (about 64 bytes a key with the overflow area), and
 * chunks of header + key + value rounded up a class, twice over so that
 * eviction never runs during a run, plus 64 MiB for the fixed tables and
 * the page-per-class minimum.
 */
static size_t auto_size(uint32_t keys, size_t vsize)
{
	uint64_t item = sizeof(struct ns_item_shm) + KEY_STRIDE + vsize;

	return (size_t)((uint64_t)keys * (64u + 2u * item + item / 4u) +
			((uint64_t)64 << 20));
}

static void start_nsd(struct bench *b, struct ns_be *n, int *rc)
{
	/* The janitor, as in production: it pays the grace periods'
	 * membarrier, so the clients' sets do not. */
	n->nsd_pid = fork();
	if (n->nsd_pid == 0) {
		execl(b->cfg.nsd, "nsd", "--foreground", "--log-level", "error",
		      "--segment", n->seg_name, (char *)NULL);
		_exit(127);
	}
	if (n->nsd_pid < 0) {
		n->nsd_pid = 0;
		fprintf(stderr, "nsbench: cannot start nsd: %s\n",
			strerror(errno));
		*rc = NS_EINVAL;
		return;
	}
	usleep(300000); /* its first ticks */
	printf("# backend=ns nsd=%s pid=%d\n", b->cfg.nsd, (int)n->nsd_pid);
}

static void ns_be_teardown(struct bench *b);

static int ns_be_setup(struct bench *b)
{
	struct ns_be *n = calloc(1, sizeof(*n));
	struct ns_attach_opts opts = {
		.flags = NS_CREATE | NS_EXCL,
		.size = b->cfg.size ? b->cfg.size
				    : auto_size(b->cfg.keys, b->cfg.value_size),
		.max_items = b->cfg.keys,
		.mode = 0600,
	};
	unsigned char *val = NULL;
	uint64_t failed = 0;
	int first_err = 0, rc = NS_ENOMEM;
	size_t klen, max;

	if (!n)
		return NS_ENOMEM;
	b->st = n;
	snprintf(n->seg_name, sizeof(n->seg_name), "nsbench.%ld",
		 (long)getpid());
	rc = ns_attach(n->seg_name, &opts, &n->cache);
	if (rc == NS_EEXIST) {
		/*
		 * The name carries our pid, so an existing segment is a leftover
		 * of an earlier nsbench that had the same pid and was killed
		 * before it could unlink; it is ours to remove.
		 */
		fprintf(stderr, "nsbench: removing stale segment %s\n",
			n->seg_name);
		ns_unlink(n->seg_name);
		rc = ns_attach(n->seg_name, &opts, &n->cache);
	}
	if (rc) {
		fprintf(stderr, "nsbench: ns_attach(%s, %zu bytes): %s\n",
			n->seg_name, opts.size, ns_strerror(rc));
		n->cache = NULL;
		goto out;
	}
	rc = ns_space_open(n->cache, "bench:kv", &n->space);
	if (rc) {
		fprintf(stderr, "nsbench: ns_space_open(bench:kv): %s\n",
			ns_strerror(rc));
		goto out;
	}
	key_at(b, b->cfg.keys - 1, &klen);
	max = ns_max_value(n->cache, klen);
	if (b->cfg.value_size > max) {
		fprintf(stderr,
			"nsbench: --value-size %zu is over the segment's largest "
			"value, %zu bytes\n", b->cfg.value_size, max);
		rc = NS_E2BIG;
		goto out;
	}

	val = malloc(b->cfg.value_size ? b->cfg.value_size : 1);
	if (!val) {
		rc = NS_ENOMEM;
		fprintf(stderr, "nsbench: out of memory\n");
		goto out;
	}
	value_fill(val, b->cfg.value_size);
	for (uint32_t k = 0; k < b->cfg.keys && !stop_requested; k++) {
		const char *key = key_at(b, k, &klen);
		int err;

		value_stamp(val, b->cfg.value_size, k);
		err = ns_set(n->space, key, klen, val, b->cfg.value_size, 0);
		if (err) {
			failed++;
			if (!first_err)
				first_err = err;
		}
	}
	if (failed)
		printf("# backend=ns preload_failed=%" PRIu64 " first_error=\"%s\""
		       " (those keys start as misses)\n",
		       failed, ns_strerror(first_err));
	rc = stop_requested ? NS_EINVAL : 0;
	if (rc == 0 && b->cfg.nsd)
		start_nsd(b, n, &rc);
out:
	free(val);
	if (rc)
		ns_be_teardown(b);
	return rc;
}

static int ns_be_get(struct bench *b, const char *key, size_t klen,
		     void *buf, size_t cap, size_t *vlen)
{
	struct ns_be *n = b->st;

	return ns_get(n->space, key, klen, buf, cap, vlen);
}

static int ns_be_set(struct bench *b, const char *key, size_t klen,
		     const void *val, size_t vlen)
{
	struct ns_be *n = b->st;

	return ns_set(n->space, key, klen, val, vlen, 0);
}

/*
 * A child gives its client slot back before exiting; the parent's
 * attachment is a separate mapping and is not affected.
 */
static void ns_be_child_exit(struct bench *b)
{
	struct ns_be *n = b->st;

	ns_detach(n->cache);
}

/*
 * Shared memory that holds the data: the index (buckets and overflow
 * buckets) and the data pages handed to a size class, from the census
 * nsctl uses.  The fixed tables before the index (client slots,
 * namespaces, flights, page descriptors, audit map) do not grow with the
 * items and are left out; nsctl info lists them.
 */
static int ns_be_memory(struct bench *b, uint64_t *bytes, const char **what)
{
	struct ns_be *n = b->st;
	struct ns_census *cs = malloc(sizeof(*cs));
	const struct ns_hdr_shm *h = n->cache->hdr;
	int rc;

	if (!cs)
		return NS_ENOMEM;
	rc = ns__census(n->cache, 0, cs);
	if (rc == 0) {
		*bytes = (h->data_off - h->index_off) +
			 (uint64_t)cs->pages_handed * h->page_size;
		*what = "index and overflow buckets + data pages in use";
		b->ns_data_bytes = *bytes;
	}
	free(cs);
	return rc ? NS_ENOMEM : 0;
}

static void ns_be_teardown(struct bench *b)
{
	struct ns_be *n = b->st;

	if (!n)
		return;
	if (n->nsd_pid > 0) {
		kill(n->nsd_pid, SIGTERM);
		waitpid(n->nsd_pid, NULL, 0);
	}
	if (n->cache) {
		ns_detach(n->cache);
		ns_unlink(n->seg_name);
	}
	free(n);
	b->st = NULL;
}

const struct backend be_ns = {
	.name = "ns",
	.what = "NameStore: lock-free index, slab, epochs; attached before fork",
	.setup = ns_be_setup,
	.get = ns_be_get,
	.set = ns_be_set,
	.child_exit = ns_be_child_exit,
	.memory = ns_be_memory,
	.teardown = ns_be_teardown,
};
