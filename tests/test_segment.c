/*
 * test_segment.c - the segment header and bad input.
 *
 * Every error code of NS_ERRORS that the API can produce is produced here
 * at least once, from the cheapest input that causes it, and every damaged
 * segment file is rejected at attach without a crash.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

#define SEG_SIZE (4u << 20) /* 1 MiB of tables + two 1 MiB data pages fit */
#define CHILD_WAIT_MS 10000

/* ---- helpers ------------------------------------------------------------ */

static int attach_opts(const char *name, unsigned flags, size_t size, mode_t mode,
		       ns_cache **out)
{
	struct ns_attach_opts o = { .flags = flags, .size = size, .mode = mode };
	return ns_attach(name, &o, out);
}

static void shm_file(char *buf, size_t cap, const char *name)
{
	snprintf(buf, cap, "/dev/shm/%s", name);
}

/* The whole file /dev/shm/NAME in a malloc'd buffer; *LEN gets its size. */
static uint8_t *read_segment(const char *name, size_t *len)
{
	char path[128];
	struct stat st;
	uint8_t *buf;
	int fd;

	shm_file(path, sizeof(path), name);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size);
	assert_non_null(buf);
	assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

/* Write LEN bytes as a new file /dev/shm/NAME, as a foreign writer would. */
static void write_segment(const char *name, const void *data, size_t len)
{
	char path[128];
	int fd;

	shm_file(path, sizeof(path), name);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	if (len)
		assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

/* A copy of a freshly created valid segment (SEG_SIZE bytes). */
static uint8_t *valid_image(size_t *len)
{
	const char *name = t_name("image");
	ns_cache *c = t_create(name, SEG_SIZE, 0);
	uint8_t *img;

	ns_detach(c);
	img = read_segment(name, len);
	assert_int_equal(ns_unlink(name), 0);
	return img;
}

/* Attach IMG (LEN bytes) written under a fresh name; returns the code. */
static int attach_image(const void *img, size_t len)
{
	const char *name = t_name("bad");
	ns_cache *c = NULL;
	int r;

	write_segment(name, img, len);
	r = ns_attach(name, NULL, &c);
	if (r == 0)
		ns_detach(c);
	else
		assert_null(c);
	ns_unlink(name);
	return r;
}

/* In a forked child: cmocka's handlers would catch a crash and go on
 * running the parent's remaining tests, so crash for real instead. */
static void child_default_signals(void)
{
	static const int sigs[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT };
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		signal(sigs[i], SIG_DFL);
}

#define assert_code(expr, want)                                              \
	do {                                                                 \
		int r_ = (expr);                                             \
		if (r_ != (want))                                            \
			fail_msg("%s = %d (%s), want %d (%s)", #expr, r_,     \
				 ns_strerror(r_), (int)(want),               \
				 ns_strerror(want));                         \
	} while (0)

/* ---- version and messages ----------------------------------------------- */

static void version_matches_header(void **state)
{
	(void)state;
	assert_non_null(ns_version());
	assert_string_equal(ns_version(), NS_VERSION_STRING);
}

static void strerror_is_distinct_for_every_code(void **state)
{
	static const int codes[] = {
#define CODE(name, value, msg) name,
		NS_ERRORS(CODE)
#undef CODE
	};
	size_t n = sizeof(codes) / sizeof(codes[0]);
	const char *unknown = ns_strerror(-999);
	(void)state;

	assert_non_null(unknown);
	assert_true(strlen(unknown) > 0);
	for (size_t i = 0; i < n; i++) {
		const char *m = ns_strerror(codes[i]);
		assert_non_null(m);
		assert_true(strlen(m) > 0);
		assert_string_not_equal(m, unknown);
		assert_string_not_equal(m, ns_strerror(0));
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(m, ns_strerror(codes[j]));
	}
	/* Unknown codes, positive and negative, and the extremes of int. */
	assert_string_equal(ns_strerror(-100), unknown);
	assert_string_equal(ns_strerror(7), unknown);
	assert_non_null(ns_strerror(INT_MAX));
	assert_non_null(ns_strerror(INT_MIN));
	/* System errors carry the errno message. */
	assert_string_equal(ns_strerror(-(NS__ERRNO_BASE + ENOENT)), strerror(ENOENT));
	assert_string_equal(ns_strerror(-(NS__ERRNO_BASE + EACCES)), strerror(EACCES));
}

/* ---- NS_EINVAL ---------------------------------------------------------- */

static void attach_rejects_bad_names(void **state)
{
	static const char *bad[] = { "", "a/b", "/abs", ".", "..", "a b", "tab\t",
				     "semi;colon", "colon:name", "\xc3\xa9" };
	char longname[NS_NAME_MAX + 2];
	ns_cache *c = (ns_cache *)&c; /* must be reset to NULL */
	(void)state;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_code(attach_opts(bad[i], NS_CREATE, SEG_SIZE, 0, &c), NS_EINVAL);
		assert_code(ns_unlink(bad[i]), NS_EINVAL);
	}
	memset(longname, 'x', NS_NAME_MAX + 1);
	longname[NS_NAME_MAX + 1] = '\0';
	assert_code(attach_opts(longname, NS_CREATE, SEG_SIZE, 0, &c), NS_EINVAL);
	assert_code(ns_unlink(longname), NS_EINVAL);
	assert_code(ns_attach(NULL, NULL, &c), NS_EINVAL);
	assert_code(ns_unlink(NULL), NS_EINVAL);
	assert_code(ns_attach(t_name("nullout"), NULL, NULL), NS_EINVAL);

	/* NS_NAME_MAX bytes exactly is a valid name. */
	longname[NS_NAME_MAX] = '\0';
	ns_unlink(longname);
	assert_code(attach_opts(longname, NS_CREATE | NS_EXCL, SEG_SIZE, 0, &c), 0);
	ns_detach(c);
	assert_code(ns_unlink(longname), 0);
}

static void attach_rejects_bad_options(void **state)
{
	const char *name = t_name("opts");
	struct ns_attach_opts o = { .flags = NS_CREATE, .size = SEG_SIZE,
				    .max_items = (1ull << 32) + 1 };
	ns_cache *c = NULL;
	(void)state;

	assert_code(attach_opts(name, 0x8u, SEG_SIZE, 0, &c), NS_EINVAL);
	assert_code(attach_opts(name, NS_CREATE | 0x100u, SEG_SIZE, 0, &c), NS_EINVAL);
	assert_code(attach_opts(name, NS_CREATE | NS_RDONLY, SEG_SIZE, 0, &c), NS_EINVAL);
	/* Too small for the tables plus two data pages. */
	assert_code(attach_opts(name, NS_CREATE, 0, 0, &c), NS_EINVAL);
	assert_code(attach_opts(name, NS_CREATE, 1u << 20, 0, &c), NS_EINVAL);
	assert_code(ns_attach(name, &o, &c), NS_EINVAL);
	assert_null(c);
	/* None of these left a file behind. */
	assert_code(ns_unlink(name), NS_ENOENT);
}

static void space_open_rejects_bad_prefixes(void **state)
{
	static const char *bad[] = { "nocolon", ":x", "x:", ":", "a:b:c", "a/b:c",
				     "a:b/c", "a b:c", "..:x", "x:..", ".:x", "" };
	const char *name = t_name("prefix");
	ns_cache *c = t_create(name, SEG_SIZE, 0);
	char p[NS_PREFIX_MAX + 8];
	ns_space *s = NULL;
	(void)state;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = ns_space_open(c, bad[i], &s);
		if (r != NS_EINVAL)
			fail_msg("ns_space_open(\"%s\") = %d, want NS_EINVAL", bad[i], r);
	}
	assert_code(ns_space_open(c, NULL, &s), NS_EINVAL);
	assert_code(ns_space_open(c, "a:b", NULL), NS_EINVAL);
	assert_code(ns_space_open(NULL, "a:b", &s), NS_EINVAL);

	/* A root half of NS_NAME_MAX + 1 bytes is too long. */
	memset(p, 'r', NS_NAME_MAX + 1);
	strcpy(p + NS_NAME_MAX + 1, ":d");
	assert_code(ns_space_open(c, p, &s), NS_EINVAL);
	/* NS_NAME_MAX + ':' + 31 is NS_PREFIX_MAX exactly: valid; one more is not. */
	memset(p, 'r', NS_NAME_MAX);
	p[NS_NAME_MAX] = ':';
	memset(p + NS_NAME_MAX + 1, 'd', NS_PREFIX_MAX - NS_NAME_MAX - 1);
	p[NS_PREFIX_MAX] = '\0';
	assert_code(ns_space_open(c, p, &s), 0);
	p[NS_PREFIX_MAX] = 'd';
	p[NS_PREFIX_MAX + 1] = '\0';
	assert_code(ns_space_open(c, p, &s), NS_EINVAL);

	ns_detach(c);
	ns_unlink(name);
}

static void key_and_value_arguments_are_checked(void **state)
{
	const char *name = t_name("args");
	ns_cache *c = t_create(name, SEG_SIZE, 0);
	ns_space *s;
	char buf[16];
	size_t vlen;
	(void)state;

	assert_code(ns_space_open(c, "t:args", &s), 0);
	assert_code(ns_set(s, "", 0, "v", 1, 0), NS_EINVAL);
	assert_code(ns_set(s, NULL, 3, "v", 1, 0), NS_EINVAL);
	assert_code(ns_set(s, "k", 1, NULL, 1, 0), NS_EINVAL);
	assert_code(ns_set(NULL, "k", 1, "v", 1, 0), NS_EINVAL);
	assert_code(ns_get(s, "", 0, buf, sizeof(buf), &vlen), NS_EINVAL);
	assert_code(ns_get(s, NULL, 1, buf, sizeof(buf), &vlen), NS_EINVAL);
	assert_code(ns_get(s, "k", 1, buf, sizeof(buf), NULL), NS_EINVAL);
	assert_code(ns_get(s, "k", 1, NULL, 4, &vlen), NS_EINVAL);
	assert_code(ns_get(NULL, "k", 1, buf, sizeof(buf), &vlen), NS_EINVAL);
	assert_code(ns_del(s, "", 0), NS_EINVAL);
	assert_code(ns_del(s, NULL, 1), NS_EINVAL);
	assert_code(ns_del(NULL, "k", 1), NS_EINVAL);

	/* A NULL value of length zero is an empty value, not an error. */
	assert_code(ns_set(s, "k", 1, NULL, 0, 0), 0);
	vlen = 99;
	assert_code(ns_get(s, "k", 1, NULL, 0, &vlen), 0);
	assert_int_equal(vlen, 0);

	ns_detach(c);
	ns_unlink(name);
}

/* ---- NS_ENOENT, NS_EEXIST ----------------------------------------------- */

static void missing_segment_is_enoent(void **state)
{
	const char *name = t_name("missing");
	ns_cache *c = NULL;
	(void)state;

	assert_code(ns_attach(name, NULL, &c), NS_ENOENT);
	assert_null(c);
	assert_code(attach_opts(name, 0, 0, 0, &c), NS_ENOENT);
	assert_code(attach_opts(name, NS_RDONLY, 0, 0, &c), NS_ENOENT);
	assert_code(ns_unlink(name), NS_ENOENT);
}

static void create_excl_on_existing_is_eexist(void **state)
{
	const char *name = t_name("exist");
	ns_cache *c = t_create(name, SEG_SIZE, 0), *c2 = NULL;
	ns_space *s, *s2;
	char buf[8];
	size_t vlen;
	(void)state;

	assert_code(ns_space_open(c, "t:exist", &s), 0);
	assert_code(ns_set(s, "k", 1, "first", 5, 0), 0);
	assert_code(attach_opts(name, NS_CREATE | NS_EXCL, SEG_SIZE, 0, &c2), NS_EEXIST);
	assert_null(c2);

	/* Without NS_EXCL it attaches the existing segment, whatever the size. */
	assert_code(attach_opts(name, NS_CREATE, 2 * SEG_SIZE, 0, &c2), 0);
	assert_int_equal(c2->hdr->size, SEG_SIZE);
	assert_code(ns_space_open(c2, "t:exist", &s2), 0);
	assert_code(ns_get(s2, "k", 1, buf, sizeof(buf), &vlen), 0);
	assert_int_equal(vlen, 5);
	assert_memory_equal(buf, "first", 5);
	ns_detach(c2);
	ns_detach(c);
	assert_code(ns_unlink(name), 0);
	assert_code(ns_unlink(name), NS_ENOENT);
}

/* A creator stopped in the middle of initializing holds the init lock for
 * ever; an attacher must give up with NS_EBUSY, not hang (rule 7). */
static void stopped_creator_gives_ebusy(void **state)
{
	const char *name = t_name("stopped");
	ns_cache *c = NULL;
	pid_t pid;
	int st;
	(void)state;

	if (!ns__fault_set(NULL, 'k'))
		skip(); /* fault points compiled out */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		ns__fault_set("create:initialized", 's');
		_exit(attach_opts(name, NS_CREATE, SEG_SIZE, 0, &c) == 0 ? 0 : 1);
	}
	/* Wait until it is stopped at the point, holding the lock. */
	assert_int_equal(waitpid(pid, &st, WUNTRACED), pid);
	assert_true(WIFSTOPPED(st));
	ns__create_wait_ms = 300;
	uint64_t t0 = t_now_ns();
	assert_code(ns_attach(name, NULL, &c), NS_EBUSY);
	uint64_t ms = (t_now_ns() - t0) / 1000000u;
	ns__create_wait_ms = 30000;
	assert_null(c);
	assert_true(ms >= 250 && ms < 5000);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	ns_unlink(name);
}

/* ---- file mode and header ----------------------------------------------- */

static mode_t file_mode(const char *name)
{
	char path[128];
	struct stat st;

	shm_file(path, sizeof(path), name);
	assert_int_equal(stat(path, &st), 0);
	return st.st_mode & 07777;
}

static void create_uses_requested_mode(void **state)
{
	const char *name = t_name("mode");
	/* A strict umask proves the mode is set, not merely masked. */
	mode_t old = umask(077);
	ns_cache *c = NULL;
	(void)state;

	assert_code(attach_opts(name, NS_CREATE | NS_EXCL, SEG_SIZE, 0640, &c), 0);
	assert_int_equal(file_mode(name), 0640);
	ns_detach(c);
	ns_unlink(name);

	umask(0);
	assert_code(attach_opts(name, NS_CREATE | NS_EXCL, SEG_SIZE, 0, &c), 0);
	assert_int_equal(file_mode(name), 0600);
	ns_detach(c);
	ns_unlink(name);
	umask(old);
}

static void header_fields_are_right(void **state)
{
	const char *name = t_name("hdr");
	ns_cache *c = t_create(name, SEG_SIZE, 1000);
	const struct ns_hdr_shm *h = c->hdr;
	char path[128];
	struct stat st;
	(void)state;

	shm_file(path, sizeof(path), name);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(h->magic, NS_MAGIC);
	assert_int_equal(h->version, NS_FORMAT_VERSION);
	assert_int_equal(h->fingerprint, ns__layout_fingerprint());
	assert_int_equal(h->state, NS_SEG_READY);
	assert_int_equal(h->size, SEG_SIZE);
	assert_int_equal(st.st_size, SEG_SIZE);
	assert_int_equal(h->page_size, NS_PAGE_SIZE);
	assert_int_equal(h->hash_id, NS_HASH_ID);
	assert_string_equal(h->name, name);
	assert_int_equal(h->slots_off, NS_HDR_SIZE);
	assert_int_equal(h->data_off % NS_PAGE_SIZE, 0);
	assert_true(h->npages >= 2);
	assert_true(h->data_off + (uint64_t)h->npages * NS_PAGE_SIZE <= SEG_SIZE);
	assert_int_equal(h->nbuckets & (h->nbuckets - 1), 0);
	/* 1000 items at 4 per bucket need at least 250 buckets. */
	assert_true(h->nbuckets * 4 >= 1000);
	assert_true(h->nclasses > 0 && h->nclasses <= NS_MAX_CLASSES);
	assert_int_equal(h->epoch, 1);
	assert_true(h->created_ms > 0);
	ns_detach(c);
	ns_unlink(name);
}

/* ---- NS_E2BIG, NS_ERANGE, NS_ENOTFOUND ---------------------------------- */

static void oversized_key_is_e2big(void **state)
{
	const char *name = t_name("bigkey");
	ns_cache *c = t_create(name, SEG_SIZE, 0);
	char key[NS_KEY_MAX + 1], buf[8];
	ns_space *s;
	size_t vlen;
	(void)state;

	memset(key, 'k', sizeof(key));
	assert_code(ns_space_open(c, "t:bigkey", &s), 0);
	assert_code(ns_set(s, key, NS_KEY_MAX + 1, "v", 1, 0), NS_E2BIG);
	assert_code(ns_get(s, key, NS_KEY_MAX + 1, buf, sizeof(buf), &vlen), NS_E2BIG);
	assert_code(ns_del(s, key, NS_KEY_MAX + 1), NS_E2BIG);
	/* NS_KEY_MAX itself is allowed. */
	assert_code(ns_set(s, key, NS_KEY_MAX, "v", 1, 0), 0);
	assert_code(ns_get(s, key, NS_KEY_MAX, buf, sizeof(buf), &vlen), 0);
	assert_int_equal(vlen, 1);
	assert_code(ns_del(s, key, NS_KEY_MAX), 0);
	ns_detach(c);
	ns_unlink(name);
}

static void value_over_max_is_e2big_and_max_fits(void **state)
{
	const char *name = t_name("bigval");
	ns_cache *c = t_create(name, 16u << 20, 0);
	static const size_t klens[] = { 1, 17, NS_KEY_MAX };
	char key[NS_KEY_MAX];
	ns_space *s;
	(void)state;

	memset(key, 'k', sizeof(key));
	assert_code(ns_space_open(c, "t:bigval", &s), 0);
	for (size_t i = 0; i < sizeof(klens) / sizeof(klens[0]); i++) {
		size_t kl = klens[i], max = ns_max_value(c, kl), vlen = 0;
		uint8_t *val = malloc(max + 1), *out = malloc(max + 1);

		assert_non_null(val);
		assert_non_null(out);
		assert_true(max > 0 && max < NS_PAGE_SIZE);
		for (size_t j = 0; j <= max; j++)
			val[j] = (uint8_t)(j * 31 + kl);
		assert_code(ns_set(s, key, kl, val, max + 1, 0), NS_E2BIG);
		assert_code(ns_set(s, key, kl, val, max, 0), 0);
		assert_code(ns_get(s, key, kl, out, max + 1, &vlen), 0);
		assert_int_equal(vlen, max);
		assert_memory_equal(out, val, max);
		assert_code(ns_del(s, key, kl), 0);
		free(val);
		free(out);
	}
	/* Larger keys leave less room for the value. */
	assert_int_equal(ns_max_value(c, 1) - ns_max_value(c, NS_KEY_MAX), NS_KEY_MAX - 1);
	t_assert_consistent(c);
	ns_detach(c);
	ns_unlink(name);
}

static void small_buffer_is_erange_with_needed_length(void **state)
{
	const char *name = t_name("range");
	ns_cache *c = t_create(name, SEG_SIZE, 0);
	char buf[16], canary[16];
	ns_space *s;
	size_t vlen = 0;
	(void)state;

	assert_code(ns_space_open(c, "t:range", &s), 0);
	assert_code(ns_set(s, "k", 1, "0123456789", 10, 0), 0);
	memset(buf, '#', sizeof(buf));
	memcpy(canary, buf, sizeof(buf));
	assert_code(ns_get(s, "k", 1, buf, 9, &vlen), NS_ERANGE);
	assert_int_equal(vlen, 10);
	assert_memory_equal(buf, canary, sizeof(buf));
	vlen = 0;
	assert_code(ns_get(s, "k", 1, NULL, 0, &vlen), NS_ERANGE);
	assert_int_equal(vlen, 10);
	/* Exactly the length is enough. */
	assert_code(ns_get(s, "k", 1, buf, 10, &vlen), 0);
	assert_int_equal(vlen, 10);
	assert_memory_equal(buf, "0123456789", 10);
	assert_int_equal(buf[10], '#');
	ns_detach(c);
	ns_unlink(name);
}

static void missing_key_is_enotfound(void **state)
{
	const char *name = t_name("notfound");
	ns_cache *c = t_create(name, SEG_SIZE, 0);
	ns_space *a, *b;
	char buf[8];
	size_t vlen;
	(void)state;

	assert_code(ns_space_open(c, "t:a", &a), 0);
	assert_code(ns_space_open(c, "t:b", &b), 0);
	assert_code(ns_get(a, "nope", 4, buf, sizeof(buf), &vlen), NS_ENOTFOUND);
	assert_code(ns_del(a, "nope", 4), NS_ENOTFOUND);
	assert_code(ns_set(a, "k", 1, "v", 1, 0), 0);
	/* The same key in another namespace is another key. */
	assert_code(ns_get(b, "k", 1, buf, sizeof(buf), &vlen), NS_ENOTFOUND);
	assert_code(ns_del(b, "k", 1), NS_ENOTFOUND);
	assert_code(ns_del(a, "k", 1), 0);
	assert_code(ns_get(a, "k", 1, buf, sizeof(buf), &vlen), NS_ENOTFOUND);
	assert_code(ns_del(a, "k", 1), NS_ENOTFOUND);
	ns_detach(c);
	ns_unlink(name);
}

/* ---- NS_ERDONLY --------------------------------------------------------- */

static void rdonly_attach_reads_but_refuses_writes(void **state)
{
	const char *name = t_name("rdonly");
	ns_cache *c = t_create(name, SEG_SIZE, 0), *ro = NULL;
	ns_space *s, *rs, *tmp;
	char buf[16];
	size_t vlen;
	(void)state;

	assert_code(ns_space_open(c, "t:ro", &s), 0);
	assert_code(ns_set(s, "k", 1, "written", 7, 0), 0);
	assert_code(attach_opts(name, NS_RDONLY, 0, 0, &ro), 0);
	assert_code(ns_space_open(ro, "t:ro", &rs), 0);
	assert_code(ns_get(rs, "k", 1, buf, sizeof(buf), &vlen), 0);
	assert_int_equal(vlen, 7);
	assert_memory_equal(buf, "written", 7);
	assert_code(ns_get(rs, "x", 1, buf, sizeof(buf), &vlen), NS_ENOTFOUND);
	assert_code(ns_set(rs, "k", 1, "v", 1, 0), NS_ERDONLY);
	assert_code(ns_del(rs, "k", 1), NS_ERDONLY);
	/* Creating a namespace is a write; opening an existing one is not. */
	assert_code(ns_space_open(ro, "t:new", &tmp), NS_ERDONLY);

	/* A later write by the read-write handle is seen. */
	assert_code(ns_set(s, "k", 1, "changed", 7, 0), 0);
	assert_code(ns_get(rs, "k", 1, buf, sizeof(buf), &vlen), 0);
	assert_memory_equal(buf, "changed", 7);
	/* The value is untouched by the refused writes. */
	assert_code(ns_get(s, "k", 1, buf, sizeof(buf), &vlen), 0);
	assert_int_equal(vlen, 7);
	ns_detach(ro);
	ns_detach(c);
	ns_unlink(name);
}

/* ---- NS_EVERSION, NS_ECORRUPT ------------------------------------------- */

static void newer_format_version_is_eversion(void **state)
{
	size_t len;
	uint8_t *img = valid_image(&len);
	struct ns_hdr_shm *h = (struct ns_hdr_shm *)img;
	(void)state;

	h->version = NS_FORMAT_VERSION + 1;
	assert_code(attach_image(img, len), NS_EVERSION);
	h->version = 0;
	assert_code(attach_image(img, len), NS_EVERSION);
	free(img);
}

static void other_layout_fingerprint_is_eversion(void **state)
{
	size_t len;
	uint8_t *img = valid_image(&len);
	struct ns_hdr_shm *h = (struct ns_hdr_shm *)img;
	(void)state;

	h->fingerprint ^= 1;
	assert_code(attach_image(img, len), NS_EVERSION);
	free(img);
}

static void unmodified_copy_attaches(void **state)
{
	size_t len;
	uint8_t *img = valid_image(&len);
	(void)state;

	/* The control for the damaged copies below. */
	assert_code(attach_image(img, len), 0);
	free(img);
}

static void wrong_magic_is_ecorrupt(void **state)
{
	size_t len;
	uint8_t *img = valid_image(&len);
	struct ns_hdr_shm *h = (struct ns_hdr_shm *)img;
	(void)state;

	h->magic ^= 0x100;
	assert_code(attach_image(img, len), NS_ECORRUPT);
	h->magic = 0;
	assert_code(attach_image(img, len), NS_ECORRUPT);
	free(img);
}

static void truncated_segment_is_ecorrupt(void **state)
{
	const char *name = t_name("trunc");
	ns_cache *c = t_create(name, SEG_SIZE, 0);
	char path[128];
	int fd;
	(void)state;

	ns_detach(c);
	shm_file(path, sizeof(path), name);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, SEG_SIZE / 2), 0);
	assert_code(ns_attach(name, NULL, &c), NS_ECORRUPT);
	/* Grown past the size in the header is as wrong as shrunk. */
	assert_int_equal(ftruncate(fd, SEG_SIZE + NS_PAGE_SIZE), 0);
	assert_code(ns_attach(name, NULL, &c), NS_ECORRUPT);
	/* Shorter than the header itself. */
	assert_int_equal(ftruncate(fd, 100), 0);
	assert_code(ns_attach(name, NULL, &c), NS_ECORRUPT);
	close(fd);
	ns_unlink(name);
}

static void random_bytes_are_ecorrupt(void **state)
{
	size_t len = 1u << 20;
	uint8_t *img = malloc(len);
	uint64_t x = 0x2545f4914f6cdd1dull;
	(void)state;

	assert_non_null(img);
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		img[i] = (uint8_t)x;
	}
	assert_code(attach_image(img, len), NS_ECORRUPT);
	free(img);
}

static void random_header_behind_good_magic_is_ecorrupt(void **state)
{
	size_t len;
	uint8_t *img = valid_image(&len);
	struct ns_hdr_shm *h = (struct ns_hdr_shm *)img;
	uint64_t x = 88172645463325252ull;
	(void)state;

	/* Everything after the identity fields random: geometry must catch it. */
	for (int round = 0; round < 50; round++) {
		uint8_t *p = (uint8_t *)&h->hash_seed;
		for (size_t i = 0; i < offsetof(struct ns_hdr_shm, epoch) -
					   offsetof(struct ns_hdr_shm, hash_seed); i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			p[i] = (uint8_t)x;
		}
		h->state = NS_SEG_READY;
		h->size = len;
		assert_code(attach_image(img, len), NS_ECORRUPT);
	}
	free(img);
}

static void empty_file_is_ecorrupt_after_retry(void **state)
{
	uint64_t t0 = t_now_ns(), ms;
	(void)state;

	/* A zero-size file looks like a creator between open and lock; the
	 * attacher waits NS_ATTACH_RETRY_MS (1 s) before calling it corrupt. */
	assert_code(attach_image(NULL, 0), NS_ECORRUPT);
	ms = (t_now_ns() - t0) / 1000000u;
	if (ms > 5000)
		fail_msg("empty file took %llu ms to reject", (unsigned long long)ms);
}

static void segment_left_in_init_is_ecorrupt(void **state)
{
	size_t len;
	uint8_t *img = valid_image(&len);
	struct ns_hdr_shm *h = (struct ns_hdr_shm *)img;
	(void)state;

	/* INIT and nobody holding the init lock: the creator died. */
	h->state = NS_SEG_INIT;
	assert_code(attach_image(img, len), NS_ECORRUPT);
	h->state = 0;
	assert_code(attach_image(img, len), NS_ECORRUPT);
	h->state = NS_SEG_RETIRED;
	assert_code(attach_image(img, len), NS_ECORRUPT);
	free(img);
}

static void bad_geometry_is_ecorrupt(void **state)
{
	size_t len;
	uint8_t *img = valid_image(&len);
	struct ns_hdr_shm *h = (struct ns_hdr_shm *)img, good = *h;
	(void)state;

#define DAMAGED(field, value)                                                \
	do {                                                                 \
		*h = good;                                                   \
		h->field = (value);                                          \
		int r_ = attach_image(img, len);                             \
		if (r_ != NS_ECORRUPT)                                       \
			fail_msg("%s = %s: attach %d, want NS_ECORRUPT",      \
				 #field, #value, r_);                        \
	} while (0)
	DAMAGED(size, len + 4096);
	DAMAGED(size, 0);
	DAMAGED(page_size, 4096);
	DAMAGED(hash_id, NS_HASH_ID + 1);
	DAMAGED(nbuckets, 0);
	DAMAGED(nbuckets, good.nbuckets + 1);
	DAMAGED(nbuckets, 1ull << 40);
	DAMAGED(nover, 1ull << 40);
	DAMAGED(nslots, 0);
	DAMAGED(nslots, 70000);
	DAMAGED(nspaces, 0);
	DAMAGED(nclasses, 0);
	DAMAGED(nclasses, NS_MAX_CLASSES + 1);
	DAMAGED(npages, good.npages + 1);
	DAMAGED(npages, 0xffffffffu);
	DAMAGED(slots_off, 0);
	DAMAGED(spaces_off, good.slots_off);
	DAMAGED(classes_off, good.spaces_off);
	DAMAGED(pages_off, good.classes_off);
	DAMAGED(index_off, good.pages_off);
	DAMAGED(over_off, good.over_off + 64);
	DAMAGED(data_off, good.data_off + 64);
	DAMAGED(data_off, len);
	free(img);
}

static void data_off_that_wraps_is_ecorrupt(void **state)
{
	size_t len;
	uint8_t *img = valid_image(&len);
	struct ns_hdr_shm *h = (struct ns_hdr_shm *)img, good = *h;
	(void)state;

	/* Page-aligned, past every table, and data_off + npages pages wraps
	 * around 2^64 to less than the file size. */
	DAMAGED(data_off, 0ull - NS_PAGE_SIZE);
#undef DAMAGED
	free(img);
}

/* Found by fuzz_image (regress/fuzz_image/table-offset-wraps): a table
 * offset near 2^64 plus the table's length wrapped around to a small sum,
 * passed the "after the previous table" test, and the view pointed far
 * outside the mapping. */
static void test_table_offset_that_wraps_is_ecorrupt(void **state)
{
	size_t len;
	uint8_t *img = valid_image(&len);
	struct ns_hdr_shm *h = (struct ns_hdr_shm *)img, good = *h;
	static const size_t fields[] = {
		offsetof(struct ns_hdr_shm, spaces_off), offsetof(struct ns_hdr_shm, flights_off),
		offsetof(struct ns_hdr_shm, classes_off), offsetof(struct ns_hdr_shm, pages_off),
		offsetof(struct ns_hdr_shm, audit_off), offsetof(struct ns_hdr_shm, audit_bytes),
		offsetof(struct ns_hdr_shm, index_off),
	};
	(void)state;

	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		for (uint64_t v = 0; v < 4; v++) {
			uint64_t w = UINT64_MAX - v * 4096;
			*h = good;
			memcpy(img + fields[i], &w, sizeof(w));
			int r = attach_image(img, len);
			if (r != NS_ECORRUPT)
				fail_msg("header field at %zu = %llu: attach %d, want NS_ECORRUPT",
					 fields[i], (unsigned long long)w, r);
		}
	}
	free(img);
}

/* Child: attach NAME and write; any return code is fine, a signal is not. */
static int use_damaged(const char *name)
{
	ns_cache *c = NULL;
	ns_space *s;
	char key[16], buf[16];
	size_t vlen;

	if (ns_attach(name, NULL, &c) != 0)
		return 0;
	if (ns_space_open(c, "t:damaged", &s) != 0)
		return 0;
	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		ns_set(s, key, strlen(key), "v", 1, 0);
		ns_get(s, key, strlen(key), buf, sizeof(buf), &vlen);
	}
	return 0;
}

static void damaged_class_table_does_not_crash(void **state)
{
	const char *name = t_name("classes");
	size_t len;
	uint8_t *img = valid_image(&len);
	struct ns_hdr_shm *h = (struct ns_hdr_shm *)img;
	struct ns_class_shm *cl = (struct ns_class_shm *)(img + h->classes_off);
	pid_t pid;
	int st;
	(void)state;

	/* The class table is written once at creation; a damaged one must
	 * give an error code (at attach or on use), never a wild write. */
	cl[0].size = 1u << 30;
	write_segment(name, img, len);
	free(img);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		child_default_signals();
		_exit(use_damaged(name));
	}
	st = t_wait(pid, CHILD_WAIT_MS);
	ns_unlink(name);
	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("class 0 of size 1 GiB: child %s %d",
			 st != -1 && WIFSIGNALED(st) ? "killed by signal" : "status",
			 st != -1 && WIFSIGNALED(st) ? WTERMSIG(st) : st);
}

/* ---- NS_ENOSPC ---------------------------------------------------------- */

static void segment_larger_than_shm_is_enospc(void **state)
{
	const char *name = t_name("nospc");
	struct statvfs vfs;
	char path[128];
	struct stat st;
	ns_cache *c = NULL;
	uint64_t free_b, total_b, want;
	(void)state;

	assert_int_equal(statvfs("/dev/shm", &vfs), 0);
	free_b = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	total_b = (uint64_t)vfs.f_blocks * vfs.f_frsize;
	if (total_b == 0)
		skip(); /* an unlimited tmpfs would fill memory instead */
	/* More than the whole file system too, so that tmpfs refuses before
	 * it allocates anything rather than filling /dev/shm and undoing. */
	want = free_b + (1ull << 30);
	if (want <= total_b)
		want = total_b + (1ull << 30);
	assert_code(attach_opts(name, NS_CREATE | NS_EXCL, (size_t)want, 0, &c), NS_ENOSPC);
	assert_null(c);
	shm_file(path, sizeof(path), name);
	assert_int_equal(stat(path, &st), -1);
	assert_int_equal(errno, ENOENT);
}

/* ---- NS_ESPACES --------------------------------------------------------- */

static void full_namespace_table_is_espaces(void **state)
{
	const char *name = t_name("spaces");
	ns_cache *c = t_create(name, SEG_SIZE, 0);
	uint32_t n = c->hdr->nspaces;
	ns_space *s, *first = NULL;
	char p[32];
	(void)state;

	assert_int_equal(n, 256);
	for (uint32_t i = 0; i < n; i++) {
		snprintf(p, sizeof(p), "root:d%u", i);
		int r = ns_space_open(c, p, &s);
		if (r != 0)
			fail_msg("namespace %u of %u: %d (%s)", i, n, r, ns_strerror(r));
		if (i == 0)
			first = s;
	}
	assert_code(ns_space_open(c, "root:onemore", &s), NS_ESPACES);
	/* Existing ones still open, and to the same handle. */
	assert_code(ns_space_open(c, "root:d0", &s), 0);
	assert_ptr_equal(s, first);
	assert_code(ns_set(s, "k", 1, "v", 1, 0), 0);
	ns_detach(c);
	ns_unlink(name);
}

/* ---- NS_ENOMEM ---------------------------------------------------------- */

static void no_page_for_a_new_class_is_enomem(void **state)
{
	const char *name = t_name("nomem");
	ns_cache *c = t_create(name, 16u << 20, 1000);
	size_t size;
	ns_space *s;
	char val[4096];
	(void)state;

	/* Rebuild with exactly two data pages; a smaller file needs fewer
	 * page descriptors, so the tables may shrink: repeat until it fits. */
	for (int i = 0; c->hdr->npages != 2; i++) {
		assert_true(i < 4);
		size = c->hdr->data_off + 2 * NS_PAGE_SIZE;
		ns_detach(c);
		ns_unlink(name);
		c = t_create(name, size, 1000);
	}
	memset(val, 'v', sizeof(val));
	assert_code(ns_space_open(c, "t:nomem", &s), 0);
	/* Two classes take the two pages; a third class has nothing to evict. */
	assert_code(ns_set(s, "a", 1, val, 8, 0), 0);
	assert_code(ns_set(s, "b", 1, val, 1000, 0), 0);
	assert_code(ns_set(s, "c", 1, val, 4000, 0), NS_ENOMEM);
	/* What was there is intact. */
	size_t vlen;
	char out[4096];
	assert_code(ns_get(s, "a", 1, out, sizeof(out), &vlen), 0);
	assert_int_equal(vlen, 8);
	assert_code(ns_get(s, "b", 1, out, sizeof(out), &vlen), 0);
	assert_int_equal(vlen, 1000);
	t_assert_consistent(c);
	ns_detach(c);
	ns_unlink(name);
}

/* ---- NS_EBUSY ----------------------------------------------------------- */

static void bucket_lock_held_by_live_process_is_ebusy(void **state)
{
	const char *name = t_name("busy");
	ns_cache *c = t_create(name, SEG_SIZE, 0);
	ns_space *s;
	int st;
	pid_t pid;
	(void)state;

	assert_code(ns_space_open(c, "t:busy", &s), 0);
	assert_code(ns_set(s, "k", 1, "old", 3, 0), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		child_default_signals();
		/* Stop while holding the bucket lock of "k". */
		if (!ns__fault_set("set:intent", 's'))
			_exit(77);
		ns_set(s, "k", 1, "new", 3, 0);
		_exit(1); /* not reached: stopped, then killed */
	}
	if (waitpid(pid, &st, WUNTRACED) != pid || !WIFSTOPPED(st)) {
		if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
			skip(); /* fault points compiled out */
		fail_msg("child did not stop at the fault point: status %#x", st);
	}
	uint64_t t0 = t_now_ns();
	assert_code(ns_set(s, "k", 1, "mine", 4, 0), NS_EBUSY);
	uint64_t ms = (t_now_ns() - t0) / 1000000u;
	if (ms < NS_LOCK_TIMEOUT_MS || ms > 4 * NS_LOCK_TIMEOUT_MS)
		fail_msg("NS_EBUSY after %llu ms, want about %d",
			 (unsigned long long)ms, NS_LOCK_TIMEOUT_MS);
	assert_code(ns_del(s, "k", 1), NS_EBUSY);

	/* Once the holder is dead the lock is recovered, and its set either
	 * happened or did not. */
	kill(pid, SIGKILL);
	assert_true(t_wait(pid, CHILD_WAIT_MS) != -1);
	char buf[8];
	size_t vlen;
	assert_code(ns_set(s, "k", 1, "mine", 4, 0), 0);
	assert_code(ns_get(s, "k", 1, buf, sizeof(buf), &vlen), 0);
	assert_int_equal(vlen, 4);
	assert_memory_equal(buf, "mine", 4);
	ns__recover_dead(c);
	t_assert_consistent(c);
	ns_detach(c);
	ns_unlink(name);
}

/* ---- NS_ESLOTS ---------------------------------------------------------- */

struct slot_arg {
	ns_space *s;
	pthread_barrier_t *bar; /* NULL: exit right after the set */
	int result;
};

static void *slot_thread(void *p)
{
	struct slot_arg *a = p;
	char key[32];

	snprintf(key, sizeof(key), "thr%p", (void *)a);
	a->result = ns_set(a->s, key, strlen(key), "v", 1, 0);
	if (a->bar)
		pthread_barrier_wait(a->bar);
	return NULL;
}

static pthread_t spawn(struct slot_arg *a)
{
	pthread_attr_t at;
	pthread_t th;

	pthread_attr_init(&at);
	pthread_attr_setstacksize(&at, 1u << 18);
	assert_int_equal(pthread_create(&th, &at, slot_thread, a), 0);
	pthread_attr_destroy(&at);
	return th;
}

static void more_live_threads_than_slots_is_eslots(void **state)
{
	const char *name = t_name("slots");
	ns_cache *c = t_create(name, SEG_SIZE, 0);
	enum { EXTRA = 4 };
	uint32_t n = c->hdr->nslots, ok = 0, full = 0;
	struct slot_arg *args;
	pthread_t *th;
	pthread_barrier_t bar;
	ns_space *s;
	(void)state;

	/* This thread takes one slot; N - 1 more threads fit. */
	assert_code(ns_space_open(c, "t:slots", &s), 0);
	assert_code(ns_set(s, "main", 4, "v", 1, 0), 0);
	args = calloc(n + EXTRA, sizeof(*args));
	th = calloc(n + EXTRA, sizeof(*th));
	assert_non_null(args);
	assert_non_null(th);
	pthread_barrier_init(&bar, NULL, n + EXTRA + 1);
	for (uint32_t i = 0; i < n + EXTRA; i++) {
		args[i] = (struct slot_arg){ .s = s, .bar = &bar };
		th[i] = spawn(&args[i]);
	}
	pthread_barrier_wait(&bar);
	for (uint32_t i = 0; i < n + EXTRA; i++) {
		pthread_join(th[i], NULL);
		if (args[i].result == 0)
			ok++;
		else if (args[i].result == NS_ESLOTS)
			full++;
		else
			fail_msg("thread %u: %d (%s)", i, args[i].result,
				 ns_strerror(args[i].result));
	}
	pthread_barrier_destroy(&bar);
	free(args);
	free(th);
	if (ok != n - 1 || full != EXTRA + 1)
		fail_msg("%u threads got a slot and %u NS_ESLOTS; want %u and %u",
			 ok, full, n - 1, EXTRA + 1);
	ns_detach(c);

	/* Detach gave every slot back. */
	c = NULL;
	assert_code(ns_attach(name, NULL, &c), 0);
	assert_code(ns_space_open(c, "t:slots", &s), 0);
	assert_code(ns_set(s, "again", 5, "v", 1, 0), 0);
	t_assert_consistent(c);
	ns_detach(c);
	ns_unlink(name);
}

static void exited_threads_give_back_their_slots(void **state)
{
	const char *name = t_name("threxit");
	ns_cache *c = t_create(name, SEG_SIZE, 0);
	uint32_t n = c->hdr->nslots;
	struct slot_arg a;
	ns_space *s;
	(void)state;

	/* A thread pool that replaces its threads must not run out of slots:
	 * more threads than slots, one after another, each using the cache
	 * once and exiting. */
	assert_code(ns_space_open(c, "t:threxit", &s), 0);
	uint32_t i;
	for (i = 0; i < n + 16; i++) {
		a = (struct slot_arg){ .s = s };
		pthread_join(spawn(&a), NULL);
		if (a.result != 0)
			break;
	}
	ns_detach(c);
	ns_unlink(name);
	if (i < n + 16)
		fail_msg("thread %u of %u (one at a time, %u slots): %d (%s)",
			 i + 1, n + 16, n, a.result, ns_strerror(a.result));
}

/* ---- concurrent creation ------------------------------------------------ */

/* Child I of a creation race: create-or-attach, write k<I>, read k<1-I>. */
static int race_child(const char *name, int gate, int i)
{
	char key[8], other[8], want[8], buf[16];
	ns_cache *c = NULL;
	ns_space *s;
	size_t vlen;
	int r;

	if (read(gate, buf, 1) < 0) /* returns 0 at EOF: the start signal */
		return 2;
	r = attach_opts(name, NS_CREATE, SEG_SIZE, 0, &c);
	if (r != 0) {
		fprintf(stderr, "child %d: attach %d (%s)\n", i, r, ns_strerror(r));
		return 3;
	}
	if (ns_space_open(c, "race:t", &s) != 0)
		return 4;
	snprintf(key, sizeof(key), "k%d", i);
	snprintf(other, sizeof(other), "k%d", 1 - i);
	snprintf(want, sizeof(want), "v%d", 1 - i);
	if (ns_set(s, key, strlen(key), key + 1, strlen(key + 1), 0) != 0)
		return 5;
	for (int waited = 0; waited < 5000; waited++) {
		r = ns_get(s, other, strlen(other), buf, sizeof(buf), &vlen);
		if (r == 0) {
			/* Value "1" or "0": the other child's index. */
			return (vlen == 1 && buf[0] == want[1]) ? 0 : 6;
		}
		if (r != NS_ENOTFOUND)
			return 7;
		usleep(1000);
	}
	fprintf(stderr, "child %d never saw %s: two segments?\n", i, other);
	return 8;
}

static void concurrent_creators_agree_on_one_segment(void **state)
{
	(void)state;

	for (int round = 0; round < 20; round++) {
		const char *name = t_name("race");
		int gate[2];
		pid_t pid[2];

		assert_int_equal(pipe(gate), 0);
		for (int i = 0; i < 2; i++) {
			pid[i] = fork();
			assert_true(pid[i] >= 0);
			if (pid[i] == 0) {
				close(gate[1]);
				child_default_signals();
				_exit(race_child(name, gate[0], i));
			}
		}
		close(gate[0]);
		close(gate[1]); /* both children start now */
		for (int i = 0; i < 2; i++) {
			int st = t_wait(pid[i], CHILD_WAIT_MS);
			if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
				fail_msg("round %d child %d: status %#x", round, i, st);
		}
		/* And the parent sees the same one segment. */
		ns_cache *c = NULL;
		ns_space *s;
		char buf[4];
		size_t vlen;
		assert_code(ns_attach(name, NULL, &c), 0);
		assert_code(ns_space_open(c, "race:t", &s), 0);
		assert_code(ns_get(s, "k0", 2, buf, sizeof(buf), &vlen), 0);
		assert_code(ns_get(s, "k1", 2, buf, sizeof(buf), &vlen), 0);
		ns__recover_dead(c);
		t_assert_consistent(c);
		ns_detach(c);
		assert_code(ns_unlink(name), 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(version_matches_header),
		cmocka_unit_test(strerror_is_distinct_for_every_code),
		cmocka_unit_test(attach_rejects_bad_names),
		cmocka_unit_test(attach_rejects_bad_options),
		cmocka_unit_test(stopped_creator_gives_ebusy),
		cmocka_unit_test(space_open_rejects_bad_prefixes),
		cmocka_unit_test(key_and_value_arguments_are_checked),
		cmocka_unit_test(missing_segment_is_enoent),
		cmocka_unit_test(create_excl_on_existing_is_eexist),
		cmocka_unit_test(create_uses_requested_mode),
		cmocka_unit_test(header_fields_are_right),
		cmocka_unit_test(oversized_key_is_e2big),
		cmocka_unit_test(value_over_max_is_e2big_and_max_fits),
		cmocka_unit_test(small_buffer_is_erange_with_needed_length),
		cmocka_unit_test(missing_key_is_enotfound),
		cmocka_unit_test(rdonly_attach_reads_but_refuses_writes),
		cmocka_unit_test(unmodified_copy_attaches),
		cmocka_unit_test(newer_format_version_is_eversion),
		cmocka_unit_test(other_layout_fingerprint_is_eversion),
		cmocka_unit_test(wrong_magic_is_ecorrupt),
		cmocka_unit_test(truncated_segment_is_ecorrupt),
		cmocka_unit_test(random_bytes_are_ecorrupt),
		cmocka_unit_test(random_header_behind_good_magic_is_ecorrupt),
		cmocka_unit_test(empty_file_is_ecorrupt_after_retry),
		cmocka_unit_test(segment_left_in_init_is_ecorrupt),
		cmocka_unit_test(bad_geometry_is_ecorrupt),
		cmocka_unit_test(data_off_that_wraps_is_ecorrupt),
		cmocka_unit_test(test_table_offset_that_wraps_is_ecorrupt),
		cmocka_unit_test(damaged_class_table_does_not_crash),
		cmocka_unit_test(segment_larger_than_shm_is_enospc),
		cmocka_unit_test(full_namespace_table_is_espaces),
		cmocka_unit_test(no_page_for_a_new_class_is_enomem),
		cmocka_unit_test(bucket_lock_held_by_live_process_is_ebusy),
		cmocka_unit_test(more_live_threads_than_slots_is_eslots),
		cmocka_unit_test(exited_threads_give_back_their_slots),
		cmocka_unit_test(concurrent_creators_agree_on_one_segment),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
