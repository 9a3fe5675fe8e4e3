/*
 * keys.c - nsctl's commands on the keys of one namespace: keys, get and ttl
 * (read-only attachment), set, del and expire (read-write, through the
 * ordinary API like any client, so that every write follows the library's
 * intent protocol and a killed nsctl is recovered like any client).
 *
 * Values are bytes: get writes them raw, set reads them raw from stdin when
 * no VALUE argument is given, and both stop at the largest value the
 * segment can hold, so neither can be made to use unbounded memory.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nsctl.h"

/* ns_scan never returns part of a chain, so the array must hold the
 * longest chain the library accepts. */
#define KEYS_CAP ((NS_CHAIN_MAX + 1) * NS_BUCKET_SLOTS)
#define SCAN_COUNT 256     /* keys' worth of buckets per ns_scan call */
#define BUSY_RETRIES 1000  /* x 1 ms: a read-only scan or get racing a writer */

/* Attach NAME and find namespace PREFIX in it. */
static int open_both(const char *name, const char *prefix, bool rw, ns_cache **c,
		     ns_space **s)
{
	int r = open_segment(name, rw, c);

	if (r)
		return r;
	/* A store creates its namespace; nothing else does. */
	r = open_space(*c, prefix, false, s);
	if (r)
		ns_detach(*c);
	return r;
}

/* The exit code of a key operation's error: a miss is a plain failure. */
static int key_fail(int err, const char *key)
{
	char *b = escape_dup(key, strlen(key));
	int r;

	if (err == NS_ENOTFOUND) {
		errmsg("%s: key not found", b);
		r = EX_FAIL;
	} else if (err == NS_EBUSY) {
		errmsg("%s: the key kept changing under a read-only read; try again", b);
		r = EX_FAIL;
	} else if (err == NS_E2BIG || err == NS_EINVAL) {
		errmsg("%s: %s", b, ns_strerror(err));
		r = err == NS_EINVAL ? EX_USAGE : EX_FAIL;
	} else {
		r = fail_ns(err, b);
	}
	free(b);
	return r;
}

int cmd_keys(struct args *a)
{
	const char *pattern = a->argc > 2 ? a->argv[2] : NULL;
	struct ns_key *keys = malloc(KEYS_CAP * sizeof(*keys));
	uint64_t cursor = 0, count = 0;
	struct json j;
	ns_cache *c;
	ns_space *s;
	int r, err = 0;

	if (keys == NULL)
		abort();
	r = open_both(a->argv[0], a->argv[1], false, &c, &s);
	if (r) {
		free(keys);
		return r;
	}
	if (a->json) {
		j_init(&j, stdout, true);
		j_open(&j, NULL, '{');
		j_str(&j, "name", c->name);
		j_str(&j, "space", a->argv[1]);
		j_open(&j, "keys", '[');
	}
	/* The cursor only moves forward, so this ends after at most
	 * buckets / (SCAN_COUNT / 4) calls, plus the retries. */
	for (int busy = 0;;) {
		size_t n = 0;

		err = ns_scan(s, &cursor, pattern, SCAN_COUNT, keys, KEYS_CAP, &n);
		if (err == NS_EBUSY && ++busy < BUSY_RETRIES) {
			usleep(1000);
			continue;
		}
		if (err)
			break;
		busy = 0;
		for (size_t i = 0; i < n; i++) {
			if (a->json) {
				j_bytes(&j, NULL, keys[i].key, keys[i].klen);
			} else {
				put_escaped(stdout, keys[i].key, keys[i].klen);
				putchar('\n');
			}
		}
		count += n;
		if (cursor == 0)
			break;
	}
	if (a->json) {
		j_close(&j, ']');
		j_u64(&j, "count", count);
		j_close(&j, '}');
		j_end(&j);
	}
	if (err == NS_EBUSY) {
		errmsg("%s: writers kept changing the index under the scan; try again",
		       a->argv[1]);
		r = EX_FAIL;
	} else if (err) {
		r = fail_ns(err, a->argv[1]);
	}
	ns_detach(c);
	free(keys);
	return r;
}

int cmd_get(struct args *a)
{
	const char *key = a->argv[2];
	struct ns_item_info in;
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	ns_cache *c;
	ns_space *s;
	int r, err = NS_ERANGE;

	if (buf == NULL)
		abort();
	r = open_both(a->argv[0], a->argv[1], false, &c, &s);
	if (r) {
		free(buf);
		return r;
	}
	/* The value may grow between a too-small read and the next one;
	 * each retry allocates what the last read asked for. */
	for (int i = 0; i < 8 && err == NS_ERANGE; i++) {
		err = ns_get_ex(s, key, strlen(key), buf, cap, &n, &in);
		if (err == NS_ERANGE) {
			cap = n;
			free(buf);
			buf = malloc(cap);
			if (buf == NULL)
				abort();
		}
	}
	if (err) {
		r = key_fail(err, key);
	} else if (a->json) {
		struct json j;

		j_init(&j, stdout, true);
		j_open(&j, NULL, '{');
		j_bytes(&j, "key", key, strlen(key));
		j_bytes(&j, "value", buf, n);
		j_u64(&j, "vlen", n);
		j_u64(&j, "flags", in.flags);
		j_u64(&j, "version", in.version);
		j_vol_u64(&j, "created_ms", in.created_ms);
		if (in.expire_ms)
			j_vol_u64(&j, "expire_ms", in.expire_ms);
		else
			j_u64(&j, "expire_ms", 0);
		j_u64(&j, "ttl_ms", in.ttl_ms);
		j_close(&j, '}');
		j_end(&j);
	} else if (fwrite(buf, 1, n, stdout) != n) {
		errmsg("writing the value: %s", strerror(errno));
		r = EX_FAIL;
	}
	ns_detach(c);
	free(buf);
	return r;
}

int cmd_ttl(struct args *a)
{
	const char *key = a->argv[2];
	struct ns_item_info in;
	ns_cache *c;
	ns_space *s;
	int r = open_both(a->argv[0], a->argv[1], false, &c, &s);
	int err;

	if (r)
		return r;
	err = ns_stat(s, key, strlen(key), &in);
	if (err) {
		r = key_fail(err, key);
	} else {
		uint64_t now = ns__now_ms();
		int64_t left = in.expire_ms == 0 ? -1 :
			       in.expire_ms > now ? (int64_t)(in.expire_ms - now) : 0;
		char b1[48], b2[48];

		if (a->json) {
			struct json j;

			j_init(&j, stdout, true);
			j_open(&j, NULL, '{');
			j_bytes(&j, "key", key, strlen(key));
			if (left >= 0)
				j_vol_i64(&j, "ttl_ms", left);
			else
				j_i64(&j, "ttl_ms", -1);
			j_u64(&j, "stored_ttl_ms", in.ttl_ms);
			if (in.expire_ms)
				j_vol_u64(&j, "expire_ms", in.expire_ms);
			else
				j_u64(&j, "expire_ms", 0);
			j_close(&j, '}');
			j_end(&j);
		} else if (left < 0) {
			printf("no expiry\n");
		} else {
			snprintf(b1, sizeof(b1), "%" PRId64, left);
			printf("%s ms left (stored with a TTL of %s)\n", VOL(b1),
			       in.ttl_ms ? fmt_age(b2, sizeof(b2), in.ttl_ms) : "none");
		}
	}
	ns_detach(c);
	return r;
}

/* Read all of stdin, at most MAX bytes; more is NS_E2BIG. */
static int read_stdin(size_t max, char **out, size_t *len)
{
	size_t cap = 65536, n = 0;
	char *buf = malloc(cap);

	if (buf == NULL)
		abort();
	for (;;) {
		if (n == cap) {
			if (cap > max) {
				free(buf);
				return NS_E2BIG;
			}
			cap *= 2;
			buf = realloc(buf, cap);
			if (buf == NULL)
				abort();
		}
		ssize_t r = read(STDIN_FILENO, buf + n, cap - n);
		if (r == 0)
			break;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			free(buf);
			return ns__errno(e);
		}
		n += (size_t)r;
	}
	if (n > max) {
		free(buf);
		return NS_E2BIG;
	}
	*out = buf;
	*len = n;
	return 0;
}

int cmd_set(struct args *a)
{
	const char *key = a->argv[2];
	size_t klen = strlen(key), vlen = 0;
	char *val = NULL;
	ns_cache *c;
	ns_space *s;
	int r = open_segment(a->argv[0], true, &c);
	int err;

	if (r)
		return r;
	r = open_space(c, a->argv[1], true, &s);
	if (r) {
		ns_detach(c);
		return r;
	}
	if (a->argc == 4 && strcmp(a->argv[3], "-") != 0) {
		err = ns_set_ex(s, key, klen, a->argv[3], strlen(a->argv[3]), a->ttl_ms,
				a->flags, NULL);
	} else {
		err = read_stdin(ns_max_value(c, klen), &val, &vlen);
		if (err == 0)
			err = ns_set_ex(s, key, klen, val, vlen, a->ttl_ms, a->flags, NULL);
	}
	if (err)
		r = key_fail(err, key);
	free(val);
	ns_detach(c);
	return r;
}

int cmd_del(struct args *a)
{
	const char *key = a->argv[2];
	ns_cache *c;
	ns_space *s;
	int r = open_both(a->argv[0], a->argv[1], true, &c, &s);
	int err;

	if (r)
		return r;
	err = ns_del(s, key, strlen(key));
	if (err)
		r = key_fail(err, key);
	ns_detach(c);
	return r;
}

int cmd_expire(struct args *a)
{
	const char *key = a->argv[2];
	uint64_t ms;
	ns_cache *c;
	ns_space *s;
	int r, err;

	if (parse_u64(a->argv[3], &ms) != 0 || ms == NS_TTL_NEVER) {
		errmsg("expire: MS must be a number of milliseconds, not '%s'", a->argv[3]);
		return EX_USAGE;
	}
	r = open_both(a->argv[0], a->argv[1], true, &c, &s);
	if (r)
		return r;
	err = ns_expire(s, key, strlen(key), ms);
	if (err)
		r = key_fail(err, key);
	ns_detach(c);
	return r;
}
