/*
 * fuzz_ops.c - sequences of API operations against a plain model map.
 *
 * The input is read front to back as a list of operations; each starts
 * with one opcode byte and takes its arguments from the bytes after it
 * (see the table in run_op()).  Arguments are small indexes into tables,
 * so that short inputs reach every interesting case:
 *
 *   key byte     bit 7: namespace (two of them); the rest mod NKEYS + 2:
 *                one of NKEYS fixed keys (1 to NS_KEY_MAX bytes, binary
 *                ones included), an empty key, or a key one byte too long
 *   value        a length class (empty, tiny, a few KiB, up to exactly the
 *                largest value the key allows, one byte more) and a fill
 *                byte; or a decimal text for the counters
 *   ttl          0 (the default), NS_TTL_NEVER, 1 ms, 10 ms, the limits of
 *                the TTL encoding, a near-overflow value, or a byte
 *   clock        ns__test_clock drives time; one opcode advances it
 *
 * Every result is compared with the model: return code, value bytes and
 * length, flags, TTL and expiry, and a version once the model has seen it.
 * A difference aborts.  At the end of each input ns__verify must report a
 * consistent segment with no lock held.
 *
 * One segment serves the whole process.  An input starts from an empty
 * state: every key of the key space is deleted, the namespaces' default
 * TTLs are reset and the caller's retired chunks reclaimed.  The model
 * holds only while nothing is evicted, so the segment is large for what
 * one input can store (NKEYS keys in two namespaces, each at most a page),
 * and it is made anew before an input whenever fewer than RESERVE_PAGES
 * pages are left unassigned: pages stay with the class that took them.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "namestore.h"
#include "ns_internal.h"

#define NKEYS 8               /* keys per namespace: overwrites and deletes hit */
#define NSPACES 2
#define SEG_SIZE (96u << 20)  /* ~90 pages of 1 MiB */
#define SEG_ITEMS 1024        /* a small index: ns__verify walks it each input */
/* Fresh pages one input can need: a chunk per live key, the chunks
 * retired by one batch before they are reclaimed, a slot cache's worth. */
#define RESERVE_PAGES 48
#define MAX_OPS 200           /* operations of one input; more are ignored */
#define START_MS 1700000000000ull

struct entry {
	bool present;
	uint64_t expire_ms;   /* 0: never */
	uint32_t ttl_code;    /* what ns_touch restarts */
	uint32_t flags;
	uint64_t version;     /* 0: not seen yet */
	size_t vlen;
	const uint8_t *val;   /* vlen bytes: small[], or a window of pattern */
	uint8_t small[32];
};

static struct {
	char name[64];
	ns_cache *c;
	ns_space *sp[NSPACES];
	uint32_t space_id[NSPACES];
	uint64_t default_ttl[NSPACES];
	uint8_t key[NKEYS][NS_KEY_MAX + 1];
	size_t klen[NKEYS];
	struct entry e[NSPACES][NKEYS];
	uint64_t now;
	uint64_t evictions;   /* the segment's eviction count at the start */
	size_t top;           /* the largest chunk: an item's header+key+value */
	int op;
	const char *what;
} m;

/* Values stored are windows of PATTERN (never written after start, so the
 * model keeps a pointer, not a copy) or short texts in TEXT (rotating, so
 * that a batch's values stay put); GBUF is where values are read. */
static uint8_t *gbuf, *pattern;
static uint8_t text[8][32];
static unsigned ntext;
static const uint8_t *vptr; /* the value get_value() chose */
static uint8_t *mbuf[4];    /* ns_mget's buffers */
#define BUF_SIZE (NS_PAGE_SIZE + 64)

#define check(cond, ...)                                                     \
	do {                                                                 \
		if (!(cond))                                                 \
			fuzz_die("op %d (%s): " __VA_ARGS__);                \
	} while (0)
#define check_rc(got, want)                                                  \
	do {                                                                 \
		int g_ = (got), w_ = (want);                                 \
		if (g_ != w_)                                                \
			fuzz_die("op %d (%s): got %d (%s), model says %d (%s)", \
				 m.op, m.what, g_, ns_strerror(g_), w_,      \
				 ns_strerror(w_));                           \
	} while (0)

/* ---- the segment -------------------------------------------------------- */

static uint64_t evictions_now(void)
{
	uint64_t n = 0;

	for (uint32_t k = 0; k < m.c->nclasses; k++)
		n += ns_load_relaxed(&m.c->classes[k].evictions);
	return n;
}

static void make_segment(void)
{
	struct ns_attach_opts o = { .flags = NS_CREATE | NS_EXCL, .size = SEG_SIZE,
				    .max_items = SEG_ITEMS };
	int err;

	if (m.c)
		ns_detach(m.c);
	snprintf(m.name, sizeof(m.name), "nsfuzz.ops.%d", (int)getpid());
	ns_unlink(m.name);
	ns__test_clock(START_MS);
	err = ns_attach(m.name, &o, &m.c);
	if (err)
		fuzz_die("creating %s: %s", m.name, ns_strerror(err));
	/* Attached processes keep the segment; a crash leaves no file. */
	ns_unlink(m.name);
	for (int n = 0; n < NSPACES; n++) {
		struct ns_space_info info;
		err = ns_space_open(m.c, n ? "fuzz:b" : "fuzz:a", &m.sp[n]);
		if (err == 0)
			err = ns_space_info(m.sp[n], &info);
		if (err)
			fuzz_die("namespace: %s", ns_strerror(err));
		m.space_id[n] = info.id;
	}
	m.top = m.c->classes[m.c->nclasses - 1].size;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	gbuf = malloc(BUF_SIZE);
	pattern = malloc(BUF_SIZE + 256 * 61);
	if (gbuf == NULL || pattern == NULL)
		abort();
	for (int i = 0; i < 4; i++)
		if ((mbuf[i] = malloc(BUF_SIZE)) == NULL)
			abort();
	for (size_t j = 0; j < BUF_SIZE + 256 * 61; j++)
		pattern[j] = (uint8_t)(j * 31 + (j >> 8) + (j >> 16));
	/* Fixed keys: lengths 1 to NS_KEY_MAX, NUL bytes, a shared prefix. */
	static const size_t lens[NKEYS] = { 1, 2, 8, 16, 17, 100, NS_KEY_MAX - 1, NS_KEY_MAX };
	for (int k = 0; k < NKEYS; k++) {
		m.klen[k] = lens[k];
		for (size_t j = 0; j < lens[k]; j++)
			m.key[k][j] = (uint8_t)(k == 1 ? 0 : 'a' + (j * 7 + (size_t)k) % 26);
	}
	m.key[1][1] = (uint8_t)'\xff';
	make_segment();
	return 0;
}

/* Start an input from nothing: no key, no default TTL, clock at START. */
static void reset(void)
{
	struct ns_thr *t;
	int err = 0;

	if (m.c->npages - ns_load_relaxed(&m.c->hdr->next_page) < RESERVE_PAGES)
		make_segment();
	m.now = START_MS;
	ns__test_clock(m.now);
	for (int n = 0; n < NSPACES; n++) {
		m.default_ttl[n] = 0;
		if (ns_space_config(m.sp[n], 0, 0) != 0)
			fuzz_die("ns_space_config failed");
		for (int k = 0; k < NKEYS; k++) {
			struct entry *e = &m.e[n][k];
			int r = ns_del(m.sp[n], m.key[k], m.klen[k]);
			if (r != 0 && r != NS_ENOTFOUND)
				fuzz_die("reset: ns_del: %s", ns_strerror(r));
			memset(e, 0, sizeof(*e));
		}
	}
	t = ns__thr(m.c, &err);
	if (t == NULL)
		fuzz_die("no slot: %s", ns_strerror(err));
	ns__reclaim(m.c, t);
	m.evictions = evictions_now();
}

/* ---- the model ---------------------------------------------------------- */

static bool live(const struct entry *e)
{
	return e->present && (e->expire_ms == 0 || e->expire_ms > m.now);
}

/* expiry_of() of the API: TTL 0 is the namespace's default; NEVER none. */
static uint64_t expiry(int n, uint64_t ttl)
{
	if (ttl == 0)
		ttl = m.default_ttl[n];
	if (ttl == 0 || ttl == NS_TTL_NEVER)
		return 0;
	return ttl > UINT64_MAX - m.now ? UINT64_MAX : m.now + ttl;
}

static void model_store(struct entry *e, int n, const void *val, size_t vlen,
			uint64_t ttl, uint32_t flags, uint64_t version)
{
	if (vlen <= sizeof(e->small)) {
		memcpy(e->small, val, vlen);
		e->val = e->small;
	} else if ((const uint8_t *)val >= pattern &&
		   (const uint8_t *)val + vlen <= pattern + BUF_SIZE + 256 * 61) {
		e->val = val;
	} else {
		fuzz_die("a long value not cut from the pattern");
	}
	e->vlen = vlen;
	e->present = true;
	e->expire_ms = expiry(n, ttl);
	e->ttl_code = e->expire_ms ? ns__ttl_encode(e->expire_ms - m.now) : 0;
	e->flags = flags;
	e->version = version;
}

static void model_remove(struct entry *e)
{
	memset(e, 0, sizeof(*e));
}

/* The answer for a key the API rejects before looking: 0 if KLEN is fine. */
static int key_error(size_t klen)
{
	return klen == 0 ? NS_EINVAL : klen > NS_KEY_MAX ? NS_E2BIG : 0;
}

/* The model's parse of a counter: an optional '-' and 1 to 19 or 20
 * digits, at most 20 bytes, within int64_t. */
static bool parse_counter(const uint8_t *p, size_t n, int64_t *out)
{
	size_t i = 0;
	bool neg;
	uint64_t v = 0; /* magnitude; 20 digits may exceed it: checked */

	if (n == 0 || n > 20)
		return false;
	neg = p[0] == '-';
	i = neg;
	if (i == n)
		return false;
	for (; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		if (__builtin_mul_overflow(v, 10u, &v) ||
		    __builtin_add_overflow(v, (uint64_t)(p[i] - '0'), &v))
			return false;
	}
	if (neg ? v > (uint64_t)INT64_MAX + 1 : v > (uint64_t)INT64_MAX)
		return false;
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return true;
}

/* ---- decoding ----------------------------------------------------------- */

struct key {
	int n, k;             /* namespace, key index (k < 0: an invalid key) */
	const uint8_t *p;
	size_t len;
};

static struct key get_key(struct rd_in *in)
{
	static const uint8_t toolong[NS_KEY_MAX + 1] = { 'x' };
	uint8_t b = in_u8(in);
	struct key k = { .n = b >> 7, .k = (b & 0x7f) % (NKEYS + 2) };

	if (k.k < NKEYS) {
		k.p = m.key[k.k];
		k.len = m.klen[k.k];
	} else {
		k.p = toolong;
		k.len = k.k == NKEYS ? 0 : NS_KEY_MAX + 1;
		k.k = -1;
	}
	return k;
}

static uint64_t get_ttl(struct rd_in *in)
{
	static const uint64_t ttls[] = {
		0, NS_TTL_NEVER, 1, 10, 100, 1000, 60000,
		(1ull << 31) - 1, 1ull << 31, (1ull << 31) + 999,
		UINT64_MAX - 1, UINT64_MAX - START_MS,
	};
	uint8_t b = in_u8(in);

	if (b < 2 * sizeof(ttls) / sizeof(ttls[0]))
		return ttls[b % (sizeof(ttls) / sizeof(ttls[0]))];
	return b; /* a few ms */
}

static size_t counter_text(struct rd_in *in, uint8_t *out)
{
	static const char *const fixed[] = {
		"0", "-0", "007", "-", "", "+1", "1 ", " 1", "12a",
		"9223372036854775807", "-9223372036854775808",
		"9223372036854775808", "-9223372036854775809",
		"99999999999999999999", "00000000000000000001",
		"000000000000000000001", "18446744073709551616",
	};
	uint8_t b = in_u8(in);
	int n;

	if (b < sizeof(fixed) / sizeof(fixed[0])) {
		n = (int)strlen(fixed[b]);
		memcpy(out, fixed[b], (size_t)n);
		return (size_t)n;
	}
	if (b < 128)
		n = sprintf((char *)out, "%d", (int8_t)in_u8(in));
	else
		n = sprintf((char *)out, "%" PRId64, (int64_t)in_u64(in));
	return (size_t)n;
}

/* A value for KLEN-byte keys in vptr; returns its length. */
static size_t get_value(struct rd_in *in, size_t klen)
{
	uint8_t sel = in_u8(in), fill = in_u8(in);
	size_t max = klen <= NS_KEY_MAX ? m.top - sizeof(struct ns_item_shm) - klen
					: 1000;
	size_t len;

	switch (sel % 16) {
	case 0: len = 0; break;
	case 1: len = 1; break;
	case 2: len = 8; break;
	case 3: len = in_u8(in); break;
	case 4: len = in_u16(in) % 4096; break;
	case 5: len = 4096 - sizeof(struct ns_item_shm); break;
	case 6: len = 65536 + in_u8(in); break;
	case 7: len = (size_t)in_u8(in) * 4000; break;
	case 8: len = max - 1; break;
	case 9: len = max; break;
	case 10: len = max + 1; break;
	case 11: case 12:
		vptr = text[ntext++ % 8];
		return counter_text(in, text[(ntext - 1) % 8]);
	default: len = (size_t)(sel >> 4) * 3; break;
	}
	if (len > max + 1)
		len = max + 1;
	/* A window of the pattern, so values differ by where they start
	 * (a byte loop over a page per value would be most of the time). */
	vptr = pattern + (size_t)fill * 61;
	return len;
}

/* What a store of VLEN bytes under KEY must answer before any lookup. */
static int store_error(const struct key *k, size_t vlen)
{
	int e = key_error(k->len);

	if (e)
		return e;
	return sizeof(struct ns_item_shm) + k->len + vlen > m.top ? NS_E2BIG : 0;
}

/* ---- checks ------------------------------------------------------------- */

static void check_info(const struct entry *e, const struct ns_item_info *in, int n)
{
	check(in->vlen == e->vlen, "vlen %u, model %zu", m.op, m.what, in->vlen, e->vlen);
	check(in->flags == e->flags, "flags %u, model %u", m.op, m.what, in->flags, e->flags);
	check(in->expire_ms == e->expire_ms, "expire %" PRIu64 ", model %" PRIu64,
	      m.op, m.what, in->expire_ms, e->expire_ms);
	check(in->ttl_ms == ns__ttl_decode(e->ttl_code), "ttl %" PRIu64, m.op, m.what,
	      in->ttl_ms);
	check(in->space_id == m.space_id[n], "space id %u", m.op, m.what, in->space_id);
	check(e->version == 0 || in->version == e->version,
	      "version %" PRIu64 ", model %" PRIu64, m.op, m.what, in->version, e->version);
}

static void check_value(const struct entry *e, const void *buf, size_t vlen)
{
	check(vlen == e->vlen, "length %zu, model %zu", m.op, m.what, vlen, e->vlen);
	check(vlen == 0 || memcmp(buf, e->val, vlen) == 0, "value of %zu bytes differs",
	      m.op, m.what, vlen);
}

/* A read of K with a buffer of CAP bytes (from the input). */
static size_t get_cap(struct rd_in *in, const struct entry *e)
{
	uint8_t b = in_u8(in);

	if (b < 200 || e->vlen == 0)
		return BUF_SIZE;
	/* Exactly enough, one byte short, or none. */
	return b % 3 == 0 ? e->vlen : b % 3 == 1 ? e->vlen - 1 : 0;
}

static void op_get(struct rd_in *in, bool ex)
{
	struct key k = get_key(in);
	struct entry *e = k.k >= 0 ? &m.e[k.n][k.k] : NULL;
	size_t cap = get_cap(in, e ? e : &(struct entry){ 0 });
	size_t vlen = 12345;
	struct ns_item_info info;
	int r, want;

	m.what = ex ? "get_ex" : "get";
	memset(gbuf, 0xa5, 16);
	r = ex ? ns_get_ex(m.sp[k.n], k.p, k.len, gbuf, cap, &vlen, &info)
	       : ns_get(m.sp[k.n], k.p, k.len, gbuf, cap, &vlen);
	want = e == NULL ? key_error(k.len) : !live(e) ? NS_ENOTFOUND
					       : cap < e->vlen ? NS_ERANGE : 0;
	check_rc(r, want);
	if (r == NS_ERANGE) {
		check(vlen == e->vlen, "ERANGE length %zu", m.op, m.what, vlen);
		check(gbuf[0] == 0xa5, "ERANGE wrote the buffer", m.op, m.what);
	} else if (r == 0) {
		check_value(e, gbuf, vlen);
		if (ex) {
			check_info(e, &info, k.n);
			e->version = info.version;
		}
	}
}

static void op_meta(struct rd_in *in, int which)
{
	struct key k = get_key(in);
	struct entry *e = k.k >= 0 ? &m.e[k.n][k.k] : NULL;
	int want = e == NULL ? key_error(k.len) : live(e) ? 0 : NS_ENOTFOUND;

	if (which == 0) {
		m.what = "exists";
		check_rc(ns_exists(m.sp[k.n], k.p, k.len), want);
	} else if (which == 1) {
		struct ns_item_info info;
		m.what = "stat";
		check_rc(ns_stat(m.sp[k.n], k.p, k.len, &info), want);
		if (want == 0) {
			check_info(e, &info, k.n);
			e->version = info.version;
		}
	} else {
		int64_t ttl = 777;
		m.what = "ttl";
		check_rc(ns_ttl(m.sp[k.n], k.p, k.len, &ttl), want);
		if (want == 0) {
			int64_t t = e->expire_ms == 0 ? -1 : (int64_t)(e->expire_ms - m.now);
			check(ttl == t, "ttl %" PRId64 ", model %" PRId64, m.op, m.what, ttl, t);
		}
	}
}

/* set, set_ex, add, replace, cas: MODE 0..4. */
static void op_store(struct rd_in *in, int mode)
{
	static const char *const names[] = { "set", "set_ex", "add", "replace", "cas" };
	struct key k = get_key(in);
	size_t vlen = get_value(in, k.len);
	uint64_t ttl = get_ttl(in), version = 0, newver = 0;
	uint32_t flags = mode == 1 ? (uint32_t)in_u8(in) * 0x01010101u : 0;
	struct entry *e = k.k >= 0 ? &m.e[k.n][k.k] : NULL;
	int want = store_error(&k, vlen), r;

	m.what = names[mode];
	if (mode == 4) {
		uint8_t b = in_u8(in);
		/* The version the model saw, a wrong one, or 0 (never one). */
		if (e && live(e) && e->version == 0) {
			struct ns_item_info info;
			check_rc(ns_stat(m.sp[k.n], k.p, k.len, &info), 0);
			e->version = info.version;
		}
		version = e == NULL ? b : b % 4 == 0 ? 0 : b % 4 == 1 ? e->version + 1
								 : e->version;
	}
	if (want == 0) {
		bool vis = live(e);
		if ((mode == 2 && vis))
			want = NS_EPRESENT;
		else if ((mode == 3 || mode == 4) && !vis)
			want = NS_ENOTFOUND;
		else if (mode == 4 && version != e->version)
			want = NS_ECHANGED;
	}
	switch (mode) {
	case 0: r = ns_set(m.sp[k.n], k.p, k.len, vptr, vlen, ttl); break;
	case 1: r = ns_set_ex(m.sp[k.n], k.p, k.len, vptr, vlen, ttl, flags, &newver); break;
	case 2: r = ns_add(m.sp[k.n], k.p, k.len, vptr, vlen, ttl); break;
	case 3: r = ns_replace(m.sp[k.n], k.p, k.len, vptr, vlen, ttl); break;
	default: r = ns_cas(m.sp[k.n], k.p, k.len, vptr, vlen, ttl, version); break;
	}
	check_rc(r, want);
	if (r == 0) {
		check(mode != 1 || (newver != 0 && newver != e->version),
		      "new version %" PRIu64, m.op, m.what, newver);
		model_store(e, k.n, vptr, vlen, ttl, flags, newver);
	}
}

static void op_getset(struct rd_in *in)
{
	struct key k = get_key(in);
	size_t vlen = get_value(in, k.len);
	uint64_t ttl = get_ttl(in);
	struct entry *e = k.k >= 0 ? &m.e[k.n][k.k] : NULL;
	size_t cap = get_cap(in, e ? e : &(struct entry){ 0 }), oldlen = 999;
	int want = store_error(&k, vlen), r;
	bool vis = e && live(e);

	m.what = "getset";
	if (want == 0)
		want = !vis ? NS_ENOTFOUND : cap < e->vlen ? NS_ERANGE : 0;
	r = ns_getset(m.sp[k.n], k.p, k.len, vptr, vlen, ttl, gbuf, cap, &oldlen);
	check_rc(r, want);
	if (r == NS_ERANGE)
		check(oldlen == e->vlen, "ERANGE length %zu", m.op, m.what, oldlen);
	if (r == 0)
		check_value(e, gbuf, oldlen);
	if (r == 0 || r == NS_ENOTFOUND)
		model_store(e, k.n, vptr, vlen, ttl, 0, 0);
}

static void op_incr(struct rd_in *in, bool sub)
{
	struct key k = get_key(in);
	uint8_t b = in_u8(in);
	int64_t delta = b & 1 ? (int64_t)in_u64(in) : (int8_t)in_u8(in);
	int64_t initial = b & 2 ? (int64_t)in_u64(in) : (int8_t)in_u8(in);
	uint64_t ttl = get_ttl(in);
	struct entry *e = k.k >= 0 ? &m.e[k.n][k.k] : NULL;
	int64_t res = 42, cur = 0, v = initial;
	int want = key_error(k.len), r;

	if (b & 4)
		delta = b & 8 ? INT64_MIN : INT64_MAX;
	m.what = sub ? "decr" : "incr";
	if (want == 0 && live(e)) {
		if (!parse_counter(e->val, e->vlen, &cur))
			want = NS_ENOTNUM;
		else if (sub ? __builtin_sub_overflow(cur, delta, &v)
			     : __builtin_add_overflow(cur, delta, &v))
			want = NS_EOVERFLOW;
	}
	r = sub ? ns_decr(m.sp[k.n], k.p, k.len, delta, initial, ttl, &res)
		: ns_incr(m.sp[k.n], k.p, k.len, delta, initial, ttl, &res);
	check_rc(r, want);
	if (r != 0)
		return;
	check(res == v, "result %" PRId64 ", model %" PRId64, m.op, m.what, res, v);
	char txt[32];
	int n = sprintf(txt, "%" PRId64, v);
	if (live(e)) {
		/* The counter keeps its expiry, TTL and flags. */
		memcpy(e->small, txt, (size_t)n);
		e->val = e->small;
		e->vlen = (size_t)n;
		e->version = 0;
	} else {
		model_store(e, k.n, txt, (size_t)n, ttl, 0, 0);
	}
}

/* del, expire, persist, touch: WHICH 0..3. */
static void op_keyop(struct rd_in *in, int which)
{
	static const char *const names[] = { "del", "expire", "persist", "touch" };
	struct key k = get_key(in);
	uint64_t ttl = which == 1 ? get_ttl(in) : 0;
	struct entry *e = k.k >= 0 ? &m.e[k.n][k.k] : NULL;
	int want = e == NULL ? key_error(k.len) : live(e) ? 0 : NS_ENOTFOUND, r;

	m.what = names[which];
	switch (which) {
	case 0: r = ns_del(m.sp[k.n], k.p, k.len); break;
	case 1: r = ns_expire(m.sp[k.n], k.p, k.len, ttl); break;
	case 2: r = ns_persist(m.sp[k.n], k.p, k.len); break;
	default: r = ns_touch(m.sp[k.n], k.p, k.len); break;
	}
	check_rc(r, want);
	if (e == NULL)
		return;
	if (want != 0 || which == 0 || (which == 1 && ttl == 0)) {
		model_remove(e); /* a dead item is unlinked by any of them */
		return;
	}
	if (which == 1) {
		e->ttl_code = ns__ttl_encode(ttl);
		e->expire_ms = ttl > UINT64_MAX - m.now ? UINT64_MAX : m.now + ttl;
	} else if (which == 2) {
		e->ttl_code = 0;
		e->expire_ms = 0;
	} else if (e->ttl_code) {
		e->expire_ms = m.now + ns__ttl_decode(e->ttl_code);
	}
}

#define NBATCH 4

static void op_batch(struct rd_in *in, int which)
{
	struct ns_kv kv[NBATCH];
	struct key keys[NBATCH];
	const uint8_t *vals[NBATCH] = { 0 };
	uint64_t ttls[NBATCH] = { 0 };
	size_t n = in_u8(in) % (NBATCH + 1);
	int want_done = 0, r, space = 0;

	m.what = which == 0 ? "mget" : which == 1 ? "mset" : "mdel";
	memset(kv, 0, sizeof(kv));
	/* One namespace per batch: the first key's. */
	for (size_t i = 0; i < n; i++) {
		keys[i] = get_key(in);
		if (i == 0)
			space = keys[0].n;
		keys[i].n = space;
		kv[i].key = keys[i].p;
		kv[i].klen = keys[i].len;
		if (which == 0) {
			struct entry *e = keys[i].k >= 0 ? &m.e[space][keys[i].k] : NULL;
			kv[i].cap = get_cap(in, e ? e : &(struct entry){ 0 });
			kv[i].buf = mbuf[i];
		} else if (which == 1) {
			size_t vlen = get_value(in, keys[i].len);
			vals[i] = vptr;
			kv[i].val = vals[i];
			kv[i].vlen = vlen;
			kv[i].ttl_ms = ttls[i] = get_ttl(in);
			kv[i].flags = in_u8(in);
		}
	}
	r = which == 0 ? ns_mget(m.sp[space], kv, n) : which == 1 ? ns_mset(m.sp[space], kv, n)
								   : ns_mdel(m.sp[space], kv, n);
	/* Each key as the single call, in order (a key may repeat). */
	for (size_t i = 0; i < n; i++) {
		struct key *k = &keys[i];
		struct entry *e = k->k >= 0 ? &m.e[space][k->k] : NULL;
		int want;

		if (which == 0) {
			want = e == NULL ? key_error(k->len) : !live(e) ? NS_ENOTFOUND
					: kv[i].cap < e->vlen ? NS_ERANGE : 0;
			check_rc(kv[i].err, want);
			if (want == NS_ERANGE)
				check(kv[i].vlen == e->vlen, "ERANGE length", m.op, m.what);
			if (want == 0) {
				check_value(e, kv[i].buf, kv[i].vlen);
				check(kv[i].flags == e->flags, "flags %u", m.op, m.what,
				      kv[i].flags);
			}
		} else if (which == 1) {
			want = store_error(k, kv[i].vlen);
			check_rc(kv[i].err, want);
			if (want == 0)
				model_store(e, space, vals[i], kv[i].vlen, ttls[i],
					    kv[i].flags, 0);
		} else {
			want = e == NULL ? key_error(k->len) : live(e) ? 0 : NS_ENOTFOUND;
			check_rc(kv[i].err, want);
			if (e)
				model_remove(e);
		}
		want_done += want == 0;
	}
	check_rc(r, want_done);
	for (size_t i = 0; i < n; i++) {
	}
}

/* ns_update: the callback checks what it is shown against the model and
 * answers what the input says. */
struct upd {
	struct entry *e;
	int n;
	int action;           /* NS_UPDATE_* or a negative error */
	const uint8_t *val;
	size_t vlen;
	uint64_t ttl;
	uint32_t flags;
	int calls;
};

static int update_fn(void *arg, const void *old, size_t oldlen,
		     const struct ns_item_info *info, struct ns_value *out)
{
	struct upd *u = arg;

	u->calls++;
	if (u->e && live(u->e)) {
		check(old != NULL && info != NULL, "callback saw no value", m.op, m.what);
		check_value(u->e, old, oldlen);
		check_info(u->e, info, u->n);
	} else {
		check(old == NULL && info == NULL && oldlen == 0, "callback saw a value",
		      m.op, m.what);
	}
	out->val = u->val;
	out->vlen = u->vlen;
	out->ttl_ms = u->ttl;
	out->flags = u->flags;
	return u->action;
}

static void op_update(struct rd_in *in)
{
	struct key k = get_key(in);
	uint8_t b = in_u8(in);
	struct upd u = {
		.e = k.k >= 0 ? &m.e[k.n][k.k] : NULL,
		.n = k.n,
	};
	int want, r;

	switch (b % 4) {
	case 0: u.action = NS_UPDATE_STORE; break;
	case 1: u.action = NS_UPDATE_DELETE; break;
	case 2: u.action = NS_UPDATE_KEEP; break;
	default: u.action = -1000 - b; break; /* the callback's own error */
	}
	u.vlen = get_value(in, k.len);
	u.val = vptr;
	u.ttl = get_ttl(in);
	u.flags = in_u8(in);
	m.what = "update";
	want = key_error(k.len);
	if (want == 0 && u.action < 0)
		want = u.action;
	else if (want == 0 && u.action == NS_UPDATE_STORE)
		want = store_error(&k, u.vlen);
	r = ns_update(m.sp[k.n], k.p, k.len, update_fn, &u);
	check_rc(r, want);
	check(u.calls == (key_error(k.len) ? 0 : 1), "callback ran %d times", m.op,
	      m.what, u.calls);
	if (r != 0)
		return;
	if (u.action == NS_UPDATE_STORE)
		model_store(u.e, k.n, u.val, u.vlen, u.ttl, u.flags, 0);
	else if (u.action == NS_UPDATE_DELETE)
		model_remove(u.e);
}

static int loader_fn(void *arg, const void *key, size_t klen, struct ns_value *out)
{
	struct upd *u = arg;

	(void)key;
	(void)klen;
	u->calls++;
	out->val = u->val;
	out->vlen = u->vlen;
	out->ttl_ms = u->ttl;
	out->flags = u->flags;
	return u->action;
}

static void op_get_or_set(struct rd_in *in)
{
	struct key k = get_key(in);
	struct entry *e = k.k >= 0 ? &m.e[k.n][k.k] : NULL;
	uint8_t b = in_u8(in);
	struct upd u = { .action = b < 16 ? -2000 - b : 0 };
	size_t cap, vlen = 5;
	int want, r;

	u.vlen = get_value(in, k.len);
	u.val = vptr;
	u.ttl = get_ttl(in);
	u.flags = in_u8(in);
	cap = get_cap(in, e && live(e) ? e : &(struct entry){ .vlen = u.vlen });
	m.what = "get_or_set";
	want = key_error(k.len);
	if (want == 0 && live(e))
		want = cap < e->vlen ? NS_ERANGE : 0;
	else if (want == 0 && u.action < 0)
		want = u.action;
	else if (want == 0)
		want = store_error(&k, u.vlen) ? store_error(&k, u.vlen)
					       : cap < u.vlen ? NS_ERANGE : 0;
	r = ns_get_or_set(m.sp[k.n], k.p, k.len, gbuf, cap, &vlen, loader_fn, &u, NULL);
	check_rc(r, want);
	if (e && !live(e) && u.action == 0 && store_error(&k, u.vlen) == 0)
		model_store(e, k.n, u.val, u.vlen, u.ttl, u.flags, 0);
	if (r == 0)
		check_value(e, gbuf, vlen);
	else if (r == NS_ERANGE)
		check(vlen == e->vlen, "ERANGE length %zu", m.op, m.what, vlen);
}

static void op_clock(struct rd_in *in)
{
	static const uint64_t steps[] = { 1, 9, 10, 99, 100, 999, 1000, 60000,
					  1ull << 31, 86400000ull * 30 };
	uint8_t b = in_u8(in);

	m.now += b < 2 * sizeof(steps) / sizeof(steps[0])
			 ? steps[b % (sizeof(steps) / sizeof(steps[0]))] : b;
	ns__test_clock(m.now);
}

/* To the very millisecond an entry expires. */
static void op_clock_to_expiry(struct rd_in *in)
{
	struct key k = get_key(in);

	if (k.k >= 0 && live(&m.e[k.n][k.k]) && m.e[k.n][k.k].expire_ms != 0 &&
	    m.e[k.n][k.k].expire_ms < UINT64_MAX / 2) {
		m.now = m.e[k.n][k.k].expire_ms - (in_u8(in) & 1);
		ns__test_clock(m.now);
	}
}

static void op_space(struct rd_in *in)
{
	uint8_t b = in_u8(in);
	int n = b & 1;

	if (b & 2) {
		m.what = "space_clear";
		check_rc(ns_space_clear(m.sp[n]), 0);
		for (int k = 0; k < NKEYS; k++)
			model_remove(&m.e[n][k]);
	} else {
		uint64_t ttl = get_ttl(in);
		m.what = "space_config";
		/* A default of NS_TTL_NEVER is refused: 0 says "none". */
		check_rc(ns_space_config(m.sp[n], ttl, 0), ttl == NS_TTL_NEVER ? NS_EINVAL : 0);
		if (ttl != NS_TTL_NEVER)
			m.default_ttl[n] = ttl;
	}
}

static void run_op(struct rd_in *in)
{
	uint8_t op = in_u8(in);

	switch (op % 28) {
	case 0: case 1: op_get(in, false); break;
	case 2: op_get(in, true); break;
	case 3: op_meta(in, 0); break;
	case 4: op_meta(in, 1); break;
	case 5: op_meta(in, 2); break;
	case 6: case 7: op_store(in, 0); break;
	case 8: op_store(in, 1); break;
	case 9: op_store(in, 2); break;
	case 10: op_store(in, 3); break;
	case 11: op_store(in, 4); break;
	case 12: op_getset(in); break;
	case 13: op_incr(in, false); break;
	case 14: op_incr(in, true); break;
	case 15: op_keyop(in, 0); break;
	case 16: op_keyop(in, 1); break;
	case 17: op_keyop(in, 2); break;
	case 18: op_keyop(in, 3); break;
	case 19: op_batch(in, 0); break;
	case 20: op_batch(in, 1); break;
	case 21: op_batch(in, 2); break;
	case 22: op_update(in); break;
	case 23: op_get_or_set(in); break;
	case 24: case 25: op_clock(in); break;
	case 26: op_clock_to_expiry(in); break;
	default: op_space(in); break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rd_in in = { data, size };
	struct ns_verify_report rep;
	int err;

	reset();
	for (m.op = 0; in.n > 0 && m.op < MAX_OPS; m.op++) {
		run_op(&in);
		if (evictions_now() != m.evictions)
			fuzz_die("op %d (%s): an eviction; the model no longer holds",
				 m.op, m.what);
	}
	err = ns__verify(m.c, &rep);
	if (err != 0 || rep.locked != 0)
		fuzz_die("after %d ops: ns__verify %s, %" PRIu64 " locks held: %s", m.op,
			 ns_strerror(err), rep.locked, rep.first_error);
	return 0;
}
