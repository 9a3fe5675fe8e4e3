/*
 * test_nsctl.c - the shell tool, run as a child process ($NSCTL).
 *
 * Golden output: a segment with fixed content (fixed keys, values, TTLs,
 * flags, namespaces, counters, and a fixed hash seed so that keys come out
 * of the index in the same order every run) is built here, and every
 * reporting command's human and JSON output is compared byte for byte with
 * the expected files in tests/golden/ (util-linux's tests/expected idea).
 * Two normalizations make that possible, both documented in the README:
 * nsctl runs with NSCTL_TEST_STABLE=1, which prints "*" for times, ages,
 * pids, slot indexes and epochs, and the segment's name ends in our pid,
 * zero-padded to 7 digits, which is masked with '*' in the output (same
 * length, so columns stay aligned).  NSCTL_GOLDEN_UPDATE=1 rewrites the
 * files from the current output instead of comparing (then read the diff).
 *
 * Robustness: corrupt segment images (random bytes, a truncated file, an
 * overflow chain that loops, a bucket word pointing outside the segment,
 * items with huge lengths, and structured fuzz of every table) must give
 * every reporting command an exit status of 0, 1 or 3 within a time bound,
 * never a signal or a hang.  Safety: reporting commands leave every byte of
 * the segment as it was, work on a segment whose client died holding a
 * bucket lock, and work while another process writes; a file cut short
 * under nsctl ends it with status 3.  Also: every command has a complete
 * --help, the write commands do what they say (checked through the
 * library), --watch refreshes until SIGINT, nsd shows as alive while it
 * runs, and a user who may not read the segment gets status 3.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

#ifndef GOLDEN_DIR
#error "GOLDEN_DIR must name tests/golden"
#endif

#define RUN_MS 20000    /* hang guard for one nsctl run (a healthy one takes ms) */
#define BAD_RUN_MS 10000 /* the bound a run on a corrupt image must meet */
#define SEG "@SEG"      /* in an argument list: the segment under test */
#define PID_DIGITS 7    /* pid_max is at most 4194304 */

static const char *nsctl_bin;

/* ---- running nsctl ------------------------------------------------------ */

struct res {
	int status;     /* wait status; -1 if it had to be killed */
	char *out, *err;
	size_t outlen, errlen;
};

static void res_free(struct res *r)
{
	free(r->out);
	free(r->err);
	memset(r, 0, sizeof(*r));
}

static void append(char **buf, size_t *len, const char *p, size_t n)
{
	*buf = realloc(*buf, *len + n + 1);
	assert_non_null(*buf);
	memcpy(*buf + *len, p, n);
	*len += n;
	(*buf)[*len] = '\0';
}

/* A segment name for TAG that ends in our pid, zero-padded to a fixed
 * width so that every run's output has the same column widths. */
static const char *seg_name(char *buf, size_t cap, const char *tag)
{
	snprintf(buf, cap, "nstest.%s.%0*d", tag, PID_DIGITS, (int)getpid());
	ns_unlink(buf);
	return buf;
}

/* Mask the pid in every NAME in BUF: NAME's last PID_DIGITS bytes become
 * '*', which keeps the length (and so the alignment) of the output. */
static void normalize(char *buf, size_t len, const char *name)
{
	size_t nl = name ? strlen(name) : 0;

	if (nl <= PID_DIGITS)
		return;
	for (char *p = buf; (p = memmem(p, len - (size_t)(p - buf), name, nl)) != NULL;
	     p += nl)
		memset(p + nl - PID_DIGITS, '*', PID_DIGITS);
}

struct run_opts {
	const void *in;  /* stdin bytes (NULL: empty stdin) */
	size_t inlen;
	int sigint_ms;   /* > 0: send SIGINT after this long */
	uid_t uid;       /* != 0: run as this user (we are root) */
	int limit_ms;    /* 0: RUN_MS */
};

/* Run nsctl ARGV (NULL-ended, SEG replaced by SEGNAME), with its output
 * normalized for SEGNAME.  Never blocks longer than the limit. */
static void run_opts(const char *segname, const char *const *argv,
		     const struct run_opts *o, struct res *r)
{
	const char *av[32] = { nsctl_bin };
	int in[2], out[2], err[2], n = 1;
	size_t written = 0;
	bool out_open = true, err_open = true, in_open, sent = false;
	int limit = o->limit_ms ? o->limit_ms : RUN_MS;
	uint64_t start = t_now_ns();

	memset(r, 0, sizeof(*r));
	for (; *argv && n < 31; argv++)
		av[n++] = strcmp(*argv, SEG) == 0 && segname ? segname : *argv;
	av[n] = NULL;
	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	assert_int_equal(pipe2(err, O_CLOEXEC), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(in[0], STDIN_FILENO);
		dup2(out[1], STDOUT_FILENO);
		dup2(err[1], STDERR_FILENO);
		signal(SIGPIPE, SIG_DFL);
		if (o->uid && (setgid(o->uid) != 0 || setuid(o->uid) != 0))
			_exit(126);
		execv(av[0], (char *const *)av);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	close(err[1]);
	fcntl(in[1], F_SETFL, O_NONBLOCK);
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	fcntl(err[0], F_SETFL, O_NONBLOCK);
	in_open = true;
	if (o->in == NULL || o->inlen == 0) {
		close(in[1]);
		in_open = false;
	}
	r->out = calloc(1, 1);
	r->err = calloc(1, 1);
	while (out_open || err_open) {
		struct pollfd p[3] = { { out[0], POLLIN, 0 }, { err[0], POLLIN, 0 },
				       { in_open ? in[1] : -1, POLLOUT, 0 } };
		uint64_t ms = (t_now_ns() - start) / 1000000u;
		char buf[65536];
		ssize_t k;

		if (ms > (uint64_t)limit)
			break;
		if (o->sigint_ms > 0 && !sent && ms >= (uint64_t)o->sigint_ms) {
			kill(pid, SIGINT);
			sent = true;
		}
		poll(p, 3, 10);
		if (out_open && (k = read(out[0], buf, sizeof(buf))) >= 0) {
			if (k == 0)
				out_open = false;
			else
				append(&r->out, &r->outlen, buf, (size_t)k);
		}
		if (err_open && (k = read(err[0], buf, sizeof(buf))) >= 0) {
			if (k == 0)
				err_open = false;
			else
				append(&r->err, &r->errlen, buf, (size_t)k);
		}
		if (in_open) {
			k = write(in[1], (const char *)o->in + written, o->inlen - written);
			if (k > 0)
				written += (size_t)k;
			if ((k < 0 && errno != EAGAIN) || written == o->inlen) {
				close(in[1]);
				in_open = false;
			}
		}
	}
	if (in_open)
		close(in[1]);
	close(out[0]);
	close(err[0]);
	uint64_t used = (t_now_ns() - start) / 1000000u;
	r->status = t_wait(pid, used < (uint64_t)limit ? limit - (int)used : 1);
	normalize(r->out, r->outlen, segname);
	normalize(r->err, r->errlen, segname);
}

static void run(const char *segname, const char *const *argv, struct res *r)
{
	struct run_opts o = { 0 };
	run_opts(segname, argv, &o, r);
}

static const char *show_args(const char *const *argv)
{
	static char b[512];
	size_t n = 0;

	b[0] = '\0';
	for (; *argv && n + 2 < sizeof(b); argv++)
		n += (size_t)snprintf(b + n, sizeof(b) - n, " %s", *argv);
	return b;
}

/* Assert that R exited normally with CODE. */
static void expect_exit(const char *const *argv, const struct res *r, int code)
{
	if (r->status == -1 || !WIFEXITED(r->status) || WEXITSTATUS(r->status) != code) {
		print_error("nsctl%s: status %#x (want exit %d)\nstdout: %s\nstderr: %s\n",
			    show_args(argv), (unsigned)r->status, code, r->out, r->err);
		fail();
	}
}

/* ---- golden files ------------------------------------------------------- */

static bool read_file(const char *path, char **buf, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char chunk[4096];
	size_t k;

	*buf = calloc(1, 1);
	*len = 0;
	if (f == NULL)
		return false;
	while ((k = fread(chunk, 1, sizeof(chunk), f)) > 0)
		append(buf, len, chunk, k);
	fclose(f);
	return true;
}

/* Compare GOT with golden file FILE (absent = empty when OPTIONAL). */
static void golden(const char *file, const char *got, size_t len, bool optional)
{
	char path[512], *want;
	size_t wlen;

	snprintf(path, sizeof(path), "%s/%s", GOLDEN_DIR, file);
	if (getenv("NSCTL_GOLDEN_UPDATE")) {
		if (optional && len == 0) {
			unlink(path);
			return;
		}
		FILE *f = fopen(path, "wb");
		assert_non_null(f);
		assert_int_equal(fwrite(got, 1, len, f), len);
		fclose(f);
		return;
	}
	if (!read_file(path, &want, &wlen) && !optional) {
		print_error("golden file %s is missing; output was:\n%s\n", path, got);
		free(want);
		fail();
	}
	if (wlen != len || memcmp(want, got, len) != 0) {
		size_t i = 0, line = 1;
		while (i < len && i < wlen && want[i] == got[i])
			line += got[i++] == '\n';
		print_error("output differs from %s at line %zu\n--- expected\n%s\n--- got\n%s\n",
			    path, line, want, got);
		free(want);
		fail();
	}
	free(want);
}

/* ---- the fixture --------------------------------------------------------- */

struct fx {
	char name[64];
	ns_cache *c;
	ns_space *users, *sessions, *pages, *tmp;
};

static struct fx fx;
static char extra[8][64]; /* other segment names a test made */
static pid_t kids[4];

static const char *extra_name(const char *tag)
{
	for (size_t i = 0; i < 8; i++) {
		if (extra[i][0] == '\0') {
			return seg_name(extra[i], sizeof(extra[i]), tag);
		}
	}
	fail_msg("too many segments");
	return NULL;
}

static void put(ns_space *s, const char *key, size_t klen, const void *val, size_t vlen,
		uint64_t ttl, uint32_t flags)
{
	int r = ns_set_ex(s, key, klen, val, vlen, ttl, flags, NULL);
	if (r != 0)
		fail_msg("set %s: %s", key, ns_strerror(r));
}

static void pattern(char *buf, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (char)('a' + (seed + i * 7) % 26);
}

/* The segment every golden file describes.  Everything in it is fixed:
 * the hash seed, so bucket order; the operations, so the counters, the
 * chunks carved and the versions. */
static void build_fixture(struct fx *f, const char *tag)
{
	char big[4000], buf[64];
	size_t n;

	seg_name(f->name, sizeof(f->name), tag);
	f->c = t_create(f->name, 16u << 20, 1000);
	f->c->hdr->hash_seed = 0x6e7363746c2d3031ull;
	assert_int_equal(ns_space_open(f->c, "app:users", &f->users), 0);
	assert_int_equal(ns_space_open(f->c, "app:sessions", &f->sessions), 0);
	assert_int_equal(ns_space_open(f->c, "web:pages", &f->pages), 0);
	assert_int_equal(ns_space_open(f->c, "tmp:cleared", &f->tmp), 0);

	put(f->users, "alice", 5, "hello world", 11, 0, 0);
	put(f->users, "bob", 3, "bin\0ary\n", 8, 0, 0);
	put(f->users, "carol", 5, "{\"id\":3}", 8, 3600000, 42);
	put(f->users, "we\\ird\x01\xff", 8, "odd key", 7, 0, 0);
	put(f->users, "temp", 4, "x", 1, 0, 0);
	assert_int_equal(ns_del(f->users, "temp", 4), 0);
	assert_int_equal(ns_get(f->users, "alice", 5, buf, sizeof(buf), &n), 0);
	assert_int_equal(ns_get(f->users, "nobody", 6, buf, sizeof(buf), &n), NS_ENOTFOUND);

	/* Values of growing size, so several slab classes have pages. */
	assert_int_equal(ns_space_config(f->sessions, 600000, 0), 0);
	for (int i = 1; i <= 6; i++) {
		char key[8];
		snprintf(key, sizeof(key), "s%d", i);
		pattern(big, (size_t)(100 * i * i), (unsigned)i);
		put(f->sessions, key, strlen(key), big, (size_t)(100 * i * i), 0, 0);
	}
	assert_int_equal(ns_space_config(f->pages, 0, 1u << 20), 0);
	pattern(big, 2000, 9);
	put(f->pages, "index.html", 10, big, 2000, 0, 0);

	put(f->tmp, "a", 1, "1", 1, 0, 0);
	put(f->tmp, "b", 1, "2", 1, 0, 0);
	assert_int_equal(ns_space_clear(f->tmp), 0);
}

static void drop_fixture(struct fx *f)
{
	if (f->c) {
		ns_detach(f->c);
		ns_unlink(f->name);
	}
	memset(f, 0, sizeof(*f));
}

static int teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(kids) / sizeof(kids[0]); i++) {
		if (kids[i] > 0) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], NULL, 0);
			kids[i] = 0;
		}
	}
	drop_fixture(&fx);
	for (size_t i = 0; i < 8; i++) {
		if (extra[i][0])
			ns_unlink(extra[i]);
		extra[i][0] = '\0';
	}
	return 0;
}

/* ---- golden-output tests ------------------------------------------------- */

struct gcase {
	const char *file;        /* golden stdout; FILE.err holds stderr if any */
	const char *argv[8];
	int code;
};

static const struct gcase gcases[] = {
	{ "list.txt", { "list", SEG }, 0 },
	{ "list.json", { "list", SEG, "--json" }, 0 },
	{ "info.txt", { "info", SEG }, 0 },
	{ "info.json", { "info", SEG, "--json" }, 0 },
	{ "stats.txt", { "stats", SEG }, 0 },
	{ "stats.json", { "stats", SEG, "--json" }, 0 },
	{ "stats-space.txt", { "stats", SEG, "--space", "app:sessions" }, 0 },
	{ "stats-space.json", { "stats", "--json", "--space=app:sessions", SEG }, 0 },
	{ "clients.txt", { "clients", SEG }, 0 },
	{ "clients.json", { "clients", SEG, "--json" }, 0 },
	{ "spaces.txt", { "spaces", SEG }, 0 },
	{ "spaces.json", { "spaces", SEG, "--json" }, 0 },
	{ "keys.txt", { "keys", SEG, "app:users" }, 0 },
	{ "keys.json", { "keys", SEG, "app:users", "--json" }, 0 },
	{ "keys-glob.txt", { "keys", SEG, "app:sessions", "s[2-4]" }, 0 },
	{ "keys-cleared.txt", { "keys", SEG, "tmp:cleared" }, 0 },
	{ "get.txt", { "get", SEG, "app:users", "alice" }, 0 },
	{ "get-binary.bin", { "get", SEG, "app:users", "bob" }, 0 },
	{ "get.json", { "get", SEG, "app:users", "carol", "--json" }, 0 },
	{ "get-odd.json", { "get", SEG, "app:users", "bob", "--json" }, 0 },
	{ "get-missing.txt", { "get", SEG, "app:users", "nobody" }, 1 },
	{ "ttl.txt", { "ttl", SEG, "app:users", "carol" }, 0 },
	{ "ttl-none.txt", { "ttl", SEG, "app:users", "alice" }, 0 },
	{ "ttl.json", { "ttl", SEG, "app:users", "carol", "--json" }, 0 },
	{ "verify.txt", { "verify", SEG }, 0 },
	{ "verify.json", { "verify", SEG, "--json" }, 0 },
	{ "no-segment.txt", { "info", "nstest.nsctl.none" }, 3 },
	{ "no-space.txt", { "keys", SEG, "app:nope" }, 1 },
	{ "missing-arg.txt", { "get", SEG, "app:users" }, 2 },
	{ "bad-option.txt", { "info", SEG, "--ttl", "5" }, 2 },
};

/* Every reporting command, human and JSON, against the expected files. */
static void golden_outputs(void **state)
{
	(void)state;
	build_fixture(&fx, "nsctl");
	for (size_t i = 0; i < sizeof(gcases) / sizeof(gcases[0]); i++) {
		const struct gcase *g = &gcases[i];
		char errfile[128];
		struct res r;

		run(fx.name, g->argv, &r);
		expect_exit(g->argv, &r, g->code);
		golden(g->file, r.out, r.outlen, false);
		snprintf(errfile, sizeof(errfile), "%s.err", g->file);
		golden(errfile, r.err, r.errlen, true);
		res_free(&r);
	}
}

/* Looking never writes: every byte of the segment is the same after all
 * the reporting commands ran (no client is active meanwhile). */
static void reporting_writes_nothing(void **state)
{
	static const char *const cmds[][6] = {
		{ "list", SEG }, { "info", SEG }, { "stats", SEG }, { "stats", SEG, "--json" },
		{ "clients", SEG }, { "spaces", SEG }, { "keys", SEG, "app:users" },
		{ "get", SEG, "app:users", "alice" }, { "ttl", SEG, "app:users", "carol" },
		{ "verify", SEG },
	};
	(void)state;
	build_fixture(&fx, "ro");
	uint8_t *copy = malloc(fx.c->size);
	assert_non_null(copy);
	memcpy(copy, fx.c->base, fx.c->size);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		struct res r;
		run(fx.name, cmds[i], &r);
		expect_exit(cmds[i], &r, 0);
		res_free(&r);
	}
	for (size_t off = 0; off < fx.c->size; off++) {
		if (copy[off] != fx.c->base[off]) {
			print_error("byte %zu changed: %#x -> %#x\n", off, copy[off],
				    fx.c->base[off]);
			fail();
		}
	}
	free(copy);
}

/* ---- help ---------------------------------------------------------------- */

/* Every command listed by `nsctl help` has a complete usage text. */
static void every_command_has_help(void **state)
{
	static const char *const spec[] = { "create", "destroy", "list", "info", "stats",
					     "clients", "spaces", "clear", "keys", "get",
					     "set", "del", "ttl", "expire", "verify", "help" };
	const char *const top[] = { "help", NULL };
	char names[32][16];
	int n = 0;
	struct res r;

	(void)state;
	run(NULL, top, &r);
	expect_exit(top, &r, 0);
	char *p = strstr(r.out, "commands:\n");
	assert_non_null(p);
	for (p = strchr(p, '\n') + 1; p[0] == ' ' && p[1] == ' ' && n < 32; n++) {
		assert_int_equal(sscanf(p, " %15s", names[n]), 1);
		p = strchr(p, '\n');
		assert_non_null(p);
		p++;
	}
	res_free(&r);
	/* The table holds at least what the spec asks for. */
	for (size_t i = 0; i < sizeof(spec) / sizeof(spec[0]); i++) {
		bool found = false;
		for (int k = 0; k < n; k++)
			found |= strcmp(names[k], spec[i]) == 0;
		if (!found)
			fail_msg("`nsctl help` does not list %s", spec[i]);
	}
	for (int k = 0; k < n; k++) {
		const char *a1[] = { names[k], "--help", NULL };
		const char *a2[] = { "help", names[k], NULL };
		char want[640];
		struct res h1, h2;

		run(NULL, a1, &h1);
		run(NULL, a2, &h2);
		expect_exit(a1, &h1, 0);
		expect_exit(a2, &h2, 0);
		snprintf(want, sizeof(want), "usage: nsctl %s", names[k]);
		if (strncmp(h1.out, want, strlen(want)) != 0 || h1.outlen < 100)
			fail_msg("`nsctl %s --help` gave: %s", names[k], h1.out);
		assert_string_equal(h1.out, h2.out);
		/* Reporting commands document their JSON shape. */
		if (strstr(h1.out, "--json") && !strstr(h1.out, "JSON"))
			fail_msg("`nsctl %s --help` takes --json but shows no shape", names[k]);
		res_free(&h1);
		res_free(&h2);
	}
	const char *none[] = { NULL }, *bad[] = { "frobnicate", NULL },
		   *top2[] = { "--help", NULL };
	run(NULL, none, &r);
	expect_exit(none, &r, 2);
	res_free(&r);
	run(NULL, bad, &r);
	expect_exit(bad, &r, 2);
	assert_non_null(strstr(r.err, "nsctl: unknown command 'frobnicate'"));
	res_free(&r);
	run(NULL, top2, &r);
	expect_exit(top2, &r, 0);
	assert_non_null(strstr(r.out, "exit status: 0 ok; 1"));
	res_free(&r);
}

/* ---- the write commands -------------------------------------------------- */

static void write_commands(void **state)
{
	const char *name = extra_name("nsctlw");
	struct ns_item_info in;
	struct res r;
	struct stat st;
	char path[128], buf[256];
	size_t n;
	ns_cache *c;
	ns_space *s;

	(void)state;
	const char *create[] = { "create", SEG, "--size", "8m", "--items", "1k", "--mode",
				 "0640", NULL };
	run(name, create, &r);
	expect_exit(create, &r, 0);
	golden("create.txt", r.out, r.outlen, false);
	res_free(&r);
	snprintf(path, sizeof(path), "/dev/shm/%s", name);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(st.st_size, 8u << 20);
	run(name, create, &r);
	expect_exit(create, &r, 1); /* exists */
	golden("create-exists.txt.err", r.err, r.errlen, false);
	res_free(&r);
	const char *tiny[] = { "create", "nstest.nsctl.tiny", "--size", "64k", NULL };
	run(name, tiny, &r);
	expect_exit(tiny, &r, 2);
	res_free(&r);

	const char *set1[] = { "set", SEG, "a:b", "k1", "v1", "--ttl", "60000", "--flags",
			       "0x2a", NULL };
	run(name, set1, &r);
	expect_exit(set1, &r, 0);
	assert_int_equal(r.outlen + r.errlen, 0); /* silent, like cp */
	res_free(&r);
	assert_int_equal(ns_attach(name, NULL, &c), 0);
	assert_int_equal(ns_space_open(c, "a:b", &s), 0);
	assert_int_equal(ns_get_ex(s, "k1", 2, buf, sizeof(buf), &n, &in), 0);
	assert_int_equal(n, 2);
	assert_memory_equal(buf, "v1", 2);
	assert_int_equal(in.flags, 42);
	assert_int_equal(in.ttl_ms, 60000);

	/* Binary-safe both ways: every byte value, through stdin and stdout. */
	size_t blen = 200000;
	char *bin = malloc(blen);
	assert_non_null(bin);
	for (size_t i = 0; i < blen; i++)
		bin[i] = (char)(i * 131 + i / 256);
	const char *set2[] = { "set", SEG, "a:b", "bin", NULL };
	struct run_opts o = { .in = bin, .inlen = blen };
	run_opts(name, set2, &o, &r);
	expect_exit(set2, &r, 0);
	res_free(&r);
	const char *get2[] = { "get", SEG, "a:b", "bin", NULL };
	run(name, get2, &r);
	expect_exit(get2, &r, 0);
	assert_int_equal(r.outlen, blen);
	assert_memory_equal(r.out, bin, blen);
	res_free(&r);
	const char *set3[] = { "set", SEG, "a:b", "dash", "-", NULL };
	o.inlen = 10;
	run_opts(name, set3, &o, &r);
	expect_exit(set3, &r, 0);
	res_free(&r);
	assert_int_equal(ns_get(s, "dash", 4, buf, sizeof(buf), &n), 0);
	assert_int_equal(n, 10);
	assert_memory_equal(buf, bin, 10);
	free(bin);
	/* A value over the largest class is refused, not truncated. */
	size_t over = ns_max_value(c, 3) + 1;
	char *huge = calloc(1, over);
	assert_non_null(huge);
	const char *set4[] = { "set", SEG, "a:b", "big", NULL };
	o.in = huge;
	o.inlen = over;
	run_opts(name, set4, &o, &r);
	expect_exit(set4, &r, 1);
	res_free(&r);
	free(huge);
	assert_int_equal(ns_exists(s, "big", 3), NS_ENOTFOUND);
	/* A value that starts with '-' comes after "--". */
	const char *set5[] = { "set", SEG, "a:b", "neg", "--", "-5", NULL };
	run(name, set5, &r);
	expect_exit(set5, &r, 0);
	res_free(&r);
	assert_int_equal(ns_get(s, "neg", 3, buf, sizeof(buf), &n), 0);
	assert_memory_equal(buf, "-5", 2);

	const char *exp1[] = { "expire", SEG, "a:b", "k1", "100000", NULL };
	run(name, exp1, &r);
	expect_exit(exp1, &r, 0);
	assert_int_equal(r.outlen + r.errlen, 0);
	res_free(&r);
	int64_t ttl;
	assert_int_equal(ns_ttl(s, "k1", 2, &ttl), 0);
	assert_true(ttl > 60000 && ttl <= 100000);
	const char *exp0[] = { "expire", SEG, "a:b", "k1", "0", NULL };
	run(name, exp0, &r);
	expect_exit(exp0, &r, 0);
	res_free(&r);
	assert_int_equal(ns_exists(s, "k1", 2), NS_ENOTFOUND);
	run(name, exp0, &r);
	expect_exit(exp0, &r, 1);
	res_free(&r);

	const char *del1[] = { "del", SEG, "a:b", "neg", NULL };
	run(name, del1, &r);
	expect_exit(del1, &r, 0);
	assert_int_equal(r.outlen + r.errlen, 0);
	res_free(&r);
	assert_int_equal(ns_exists(s, "neg", 3), NS_ENOTFOUND);
	run(name, del1, &r);
	expect_exit(del1, &r, 1);
	assert_non_null(strstr(r.err, "nsctl: neg: key not found"));
	res_free(&r);

	/* Commands that must not create a namespace do not. */
	size_t before, after;
	assert_int_equal(ns_space_list(c, NULL, 0, &before), 0);
	const char *del2[] = { "del", SEG, "no:such", "k", NULL };
	const char *clr2[] = { "clear", SEG, "no:such", NULL };
	run(name, del2, &r);
	expect_exit(del2, &r, 1);
	res_free(&r);
	run(name, clr2, &r);
	expect_exit(clr2, &r, 1);
	res_free(&r);
	assert_int_equal(ns_space_list(c, NULL, 0, &after), 0);
	assert_int_equal(before, after);

	const char *clr[] = { "clear", SEG, "a:b", NULL };
	run(name, clr, &r);
	expect_exit(clr, &r, 0);
	golden("clear.txt", r.out, r.outlen, false);
	res_free(&r);
	assert_int_equal(ns_exists(s, "bin", 3), NS_ENOTFOUND);
	struct ns_space_info si;
	assert_int_equal(ns_space_info(s, &si), 0);
	assert_int_equal(si.generation, 1);
	/* nsctl gave back the slots it used for its writes: ours is the
	 * only one taken. */
	uint32_t taken = 0;
	for (uint32_t i = 0; i < c->nslots; i++)
		taken += c->slots[i].state != NS_SLOT_FREE;
	assert_int_equal(taken, 1);
	t_assert_consistent(c);
	ns_detach(c);

	const char *des[] = { "destroy", SEG, NULL };
	run(name, des, &r);
	expect_exit(des, &r, 0);
	golden("destroy.txt", r.out, r.outlen, false);
	res_free(&r);
	assert_int_equal(stat(path, &st), -1);
	run(name, des, &r);
	expect_exit(des, &r, 3);
	res_free(&r);
	/* A file of somebody else's is not removed without --force. */
	int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "not ours", 8), 8);
	close(fd);
	run(name, des, &r);
	expect_exit(des, &r, 1);
	golden("destroy-foreign.txt.err", r.err, r.errlen, false);
	res_free(&r);
	const char *desf[] = { "destroy", SEG, "--force", NULL };
	run(name, desf, &r);
	expect_exit(desf, &r, 0);
	res_free(&r);
	assert_int_equal(stat(path, &st), -1);
}

/* ---- corrupt segments ----------------------------------------------------- */

/* Write IMG (LEN bytes) as a new segment file NAME. */
static void write_image(const char *name, const void *img, size_t len)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "/%s", name);
	shm_unlink(path);
	fd = shm_open(path, O_CREAT | O_EXCL | O_RDWR, 0600);
	assert_true(fd >= 0);
	for (size_t k = 0; k < len;) {
		ssize_t w = write(fd, (const char *)img + k, len - k);
		assert_true(w > 0);
		k += (size_t)w;
	}
	close(fd);
}

static uint64_t rnd_state = 88172645463325252ull;
static uint64_t rnd(void)
{
	/* xorshift64 (Marsaglia): a fixed sequence, so a failure repeats. */
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

/* The bucket word of KEY in namespace S of the fixture's copy IMG. */
static uint64_t *word_of(uint8_t *img, ns_space *s, const char *key)
{
	ns_cache *c = fx.c;
	ns_off_t off = t_find_item(s, key, strlen(key));
	uint64_t h = ns__hash(c->hdr->hash_seed, s->id, key, strlen(key));
	struct ns_bucket_shm *bk = (struct ns_bucket_shm *)(img + c->hdr->index_off) +
				   (h & c->mask);

	assert_true(off != 0);
	for (int i = 0; i < NS_BUCKET_SLOTS; i++)
		if ((bk->slot[i] & NS_SLOT_OFF_MASK) == off)
			return &bk->slot[i];
	fail_msg("%s is not in its primary bucket", key);
	return NULL;
}

/* Every reporting command on segment NAME exits 0, 1 or 3 in time. */
static void survive(const char *name, const char *what, int verify_code, int get_code)
{
	static const char *const cmds[][6] = {
		{ "info", SEG }, { "info", SEG, "--json" }, { "stats", SEG },
		{ "stats", SEG, "--json" }, { "stats", SEG, "--space", "app:users" },
		{ "clients", SEG }, { "clients", SEG, "--json" }, { "spaces", SEG },
		{ "spaces", SEG, "--json" }, { "keys", SEG, "app:users" },
		{ "keys", SEG, "app:sessions", "--json" }, { "get", SEG, "app:users", "alice" },
		{ "get", SEG, "app:users", "nobody", "--json" },
		{ "ttl", SEG, "app:users", "bob" }, { "verify", SEG },
		{ "verify", SEG, "--json" }, { "list", SEG },
	};
	struct run_opts o = { .limit_ms = BAD_RUN_MS };

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		struct res r;
		uint64_t t0 = t_now_ns();

		run_opts(name, cmds[i], &o, &r);
		if (r.status == -1 || !WIFEXITED(r.status) ||
		    (WEXITSTATUS(r.status) != 0 && WEXITSTATUS(r.status) != 1 &&
		     WEXITSTATUS(r.status) != 3)) {
			print_error("%s: nsctl%s: status %#x after %llu ms (-1: killed after "
				    "%d ms)\nstderr: %s\n", what, show_args(cmds[i]),
				    (unsigned)r.status,
				    (unsigned long long)((t_now_ns() - t0) / 1000000u),
				    BAD_RUN_MS, r.err);
			fail();
		}
		int code = WEXITSTATUS(r.status);
		if (strcmp(cmds[i][0], "list") == 0 && code != 0)
			fail_msg("%s: list exited %d", what, code);
		if (strcmp(cmds[i][0], "verify") == 0 && verify_code >= 0 && code != verify_code)
			fail_msg("%s: verify exited %d, not %d: %s%s", what, code, verify_code,
				 r.out, r.err);
		if (strcmp(cmds[i][0], "get") == 0 && cmds[i][4] == NULL && get_code >= 0 &&
		    code != get_code)
			fail_msg("%s: get alice exited %d, not %d: %s", what, code, get_code,
				 r.err);
		if (code != 0 && r.errlen == 0 && !(strcmp(cmds[i][0], "verify") == 0))
			fail_msg("%s: nsctl%s failed without a message", what,
				 show_args(cmds[i]));
		res_free(&r);
	}
}

/* A copy of the fixture with FN applied, as segment NAME. */
static void corrupt_copy(const char *name, const char *tag, void (*fn)(uint8_t *img),
			 int verify_code, int get_code)
{
	size_t size = fx.c->size;
	uint8_t *img = malloc(size);

	assert_non_null(img);
	memcpy(img, fx.c->base, size);
	fn(img);
	write_image(name, img, size);
	free(img);
	survive(name, tag, verify_code, get_code);
	ns_unlink(name);
}

static void chain_loop(uint8_t *img)
{
	ns_cache *c = fx.c;
	uint64_t *w = word_of(img, fx.users, "alice");
	/* The bucket whose slot array W is in. */
	uint64_t b = (uint64_t)((uint8_t *)w - img - c->hdr->index_off) /
		     sizeof(struct ns_bucket_shm);
	struct ns_bucket_shm *bk = (struct ns_bucket_shm *)(img + c->hdr->index_off) + b;
	struct ns_bucket_shm *ob = (struct ns_bucket_shm *)(img + c->hdr->over_off);
	bk->next = 1;
	ob->lock = (uint32_t)(b + 1);
	ob->next = 1; /* itself */
}

static void slot_outside(uint8_t *img)
{
	uint64_t *w = word_of(img, fx.users, "alice");
	*w = (*w & ~NS_SLOT_OFF_MASK) | (fx.c->size + 4096);
}

static void slot_inside_page(uint8_t *img)
{
	/* Inside the data area, but not the start of a chunk. */
	uint64_t *w = word_of(img, fx.users, "alice");
	*w = (*w & ~NS_SLOT_OFF_MASK) | (fx.c->hdr->data_off + 8);
}

static void huge_lengths(uint8_t *img)
{
	struct ns_item_shm *a = (struct ns_item_shm *)(img + t_find_item(fx.users, "alice", 5));
	struct ns_item_shm *b = (struct ns_item_shm *)(img + t_find_item(fx.users, "bob", 3));
	a->vlen = 0xfffffff0u;
	b->klen = 0xffff;
}

static void lists_loop(uint8_t *img)
{
	ns_cache *c = fx.c;
	/* A retire list and a free list that point back at themselves. */
	ns_off_t off = t_find_item(fx.sessions, "s1", 2);
	struct ns_item_shm *it = (struct ns_item_shm *)(img + off);
	struct ns_slot_shm *s = (struct ns_slot_shm *)(img + c->hdr->slots_off);
	struct ns_class_shm *cl = (struct ns_class_shm *)(img + c->hdr->classes_off);
	int k = ns__class_of(c, off);

	it->next = off;
	for (uint32_t i = 0; i < c->nslots; i++)
		if (s[i].state == NS_SLOT_ACTIVE)
			s[i].retire_head = off;
	cl[k].free_head = (off >> 3) | (1ull << 40);
}

/* Structured fuzz: plausible and implausible values in every table the
 * readers follow (index words, chain links, page descriptors, slot caches
 * and lists, namespace entries, free heads and items), but the class sizes
 * that ns_attach checks, so that the readers see the damage. */
static int fuzz_n; /* mutations per image */

static void fuzz(uint8_t *img)
{
	ns_cache *c = fx.c;
	const struct ns_hdr_shm *h = c->hdr;
	uint64_t data = h->data_off, span = c->size - data;

	for (int i = 0; i < fuzz_n; i++) {
		uint64_t v, r = rnd();
		/* An offset: a chunk start of the fixture, anywhere in the data
		 * area, just outside, or garbage. */
		switch (r % 4) {
		case 0: v = data + (rnd() % (span / 8)) * 8; break;
		case 1: v = data + (rnd() % 4) * NS_PAGE_SIZE + (rnd() % 64) * 88; break;
		case 2: v = c->size - (rnd() % 128); break;
		default: v = rnd(); break;
		}
		switch ((r >> 8) % 8) {
		case 0: case 1: { /* index word */
			uint64_t b = rnd() % (c->mask + 1 + c->nover);
			uint64_t *w = (uint64_t *)(img + h->index_off + b * 64 + 8 + 8 * (rnd() % 7));
			*w = (rnd() << 48) | (v & NS_SLOT_OFF_MASK);
			break;
		}
		case 2: { /* chain link and owner */
			struct ns_bucket_shm *bk = (struct ns_bucket_shm *)(img + h->index_off) +
						   rnd() % (c->mask + 1 + c->nover);
			bk->next = (uint32_t)(rnd() % (c->nover + 3));
			bk->lock = (uint32_t)rnd() % 4;
			break;
		}
		case 3: { /* page descriptor */
			struct ns_page_shm *pg = (struct ns_page_shm *)(img + h->pages_off) +
						 rnd() % c->npages;
			pg->cls = (uint32_t)(rnd() % (c->nclasses + 2));
			pg->carved = (uint32_t)rnd() % 20000;
			pg->drain = (uint32_t)(rnd() % 3);
			pg->park_head = v;
			break;
		}
		case 4: { /* slot */
			struct ns_slot_shm *s = (struct ns_slot_shm *)(img + h->slots_off) +
						rnd() % c->nslots;
			s->state = (uint32_t)(rnd() % 3);
			s->retire_head = v;
			s->cache_n[rnd() % NS_MAX_CLASSES] = (uint8_t)rnd();
			s->cache[rnd() % NS_MAX_CLASSES][rnd() % NS_SLOT_CACHE] = v;
			s->in_new = rnd() % 2 ? v : 0;
			s->sctr[rnd() % NS_SLOT_SCTR].space = (uint32_t)(rnd() % 300);
			s->epoch = rnd() % 3;
			break;
		}
		case 5: { /* namespace entry, but the two the commands name */
			struct ns_space_shm *sp = (struct ns_space_shm *)(img + h->spaces_off) +
						  2 + rnd() % 6;
			sp->state = (uint32_t)(rnd() % 3);
			sp->gen = (uint32_t)rnd() % 3;
			sp->prefix[rnd() % sizeof(sp->prefix)] = (char)rnd();
			sp->items = (int64_t)rnd();
			break;
		}
		case 6: { /* free head */
			struct ns_class_shm *cl = (struct ns_class_shm *)(img + h->classes_off) +
						  rnd() % c->nclasses;
			cl->free_head = (v >> 3) | (rnd() << 40);
			break;
		}
		default: { /* item header or link, at a plausible offset */
			uint64_t o = data + (rnd() % (span / 8)) * 8;
			if (o + sizeof(struct ns_item_shm) <= c->size) {
				struct ns_item_shm *it = (struct ns_item_shm *)(img + o);
				it->next = v;
				it->klen = (uint16_t)rnd();
				it->vlen = (uint32_t)rnd();
				it->space = (uint16_t)(rnd() % 6);
			}
			break;
		}
		}
	}
}

static void corrupt_segments(void **state)
{
	size_t size;
	uint8_t *img;
	const char *name;

	(void)state;
	build_fixture(&fx, "bad");
	size = fx.c->size;
	img = malloc(size);
	assert_non_null(img);

	/* Random bytes, without and with the magic number in front. */
	for (size_t i = 0; i < size; i += 8) {
		uint64_t v = rnd();
		memcpy(img + i, &v, 8);
	}
	name = extra_name("img");
	write_image(name, img, size);
	survive(name, "random bytes", 3, 3);
	uint64_t magic = NS_MAGIC;
	memcpy(img, &magic, 8);
	write_image(name, img, size);
	survive(name, "random bytes after the magic", 3, 3);
	/* A valid header in front of random tables. */
	memcpy(img, fx.c->base, NS_HDR_SIZE);
	write_image(name, img, size);
	survive(name, "random tables", 3, 3);
	/* Truncated: the first half of a valid segment. */
	write_image(name, fx.c->base, size / 2);
	survive(name, "truncated", 3, 3);
	/* Only part of a header. */
	write_image(name, fx.c->base, 100);
	survive(name, "header cut short", 3, 3);
	free(img);

	corrupt_copy(name, "chain loop", chain_loop, 1, -1);
	corrupt_copy(name, "word outside", slot_outside, 1, 3);
	corrupt_copy(name, "word inside a chunk", slot_inside_page, 1, -1);
	corrupt_copy(name, "huge lengths", huge_lengths, 1, 3);
	corrupt_copy(name, "list loops", lists_loop, 1, 0);
	/* Light damage leaves most paths working, so the readers go deep;
	 * heavy damage breaks everything at once. */
	for (int round = 0; round < 16; round++) {
		fuzz_n = round < 12 ? 400 : 5000;
		corrupt_copy(name, "fuzz", fuzz, -1, -1);
	}
}

/* ---- live and crashed clients -------------------------------------------- */

/* The number on the line "  WHAT   N ..." of a verify report, or -1. */
static long report_value(const char *out, const char *what)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\n  %s ", what);
	p = strstr(out, pat);
	return p ? strtol(p + strlen(pat), NULL, 10) : -1;
}

/* A client killed holding a bucket lock leaves a dead slot, a held lock and
 * a chunk in flight; nsctl reports all of it and still reads everything.
 * Without fault points (release builds) the client is killed between two
 * writes instead: a dead slot with a retire list, and no lock. */
static void crashed_client(void **state)
{
	const char *clients[] = { "clients", SEG, NULL }, *verify[] = { "verify", SEG, NULL },
		   *get[] = { "get", SEG, "app:users", "alice", NULL },
		   *stats[] = { "stats", SEG, NULL }, *info[] = { "info", SEG, "--json", NULL },
		   *keys[] = { "keys", SEG, "app:users", NULL };
	bool faults = ns__fault_set(NULL, 0);
	struct res r;

	(void)state;
	build_fixture(&fx, "crash");
	pid_t p = fork();
	assert_true(p >= 0);
	if (p == 0) {
		ns_cache *c;
		ns_space *s;
		if (ns_attach(fx.name, NULL, &c) || ns_space_open(c, "app:users", &s) ||
		    ns_set(s, "dave", 4, "x", 1, 0) || ns_set(s, "dave", 4, "y", 1, 0))
			_exit(2);
		if (faults)
			ns__fault_set("set:intent", 'k');
		else
			raise(SIGKILL);
		ns_set(s, "alice", 5, "changed", 7, 0);
		_exit(3); /* the fault point should have killed us */
	}
	kids[0] = p;
	int st = t_wait(p, 10000);
	kids[0] = 0;
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

	run(fx.name, clients, &r);
	expect_exit(clients, &r, 0);
	if (!strstr(r.out, " dead ") || (faults && !strstr(r.out, " locked ")))
		fail_msg("no dead slot (with a locked intent) in:\n%s", r.out);
	res_free(&r);
	run(fx.name, verify, &r);
	expect_exit(verify, &r, 0);
	if (faults && (report_value(r.out, "locked") != 1 ||
		       report_value(r.out, "in flight") != 1))
		fail_msg("no held lock and chunk in flight in:\n%s", r.out);
	res_free(&r);
	run(fx.name, get, &r);
	expect_exit(get, &r, 0);
	assert_string_equal(r.out, "hello world");
	res_free(&r);
	run(fx.name, stats, &r);
	expect_exit(stats, &r, 0);
	res_free(&r);
	run(fx.name, keys, &r);
	expect_exit(keys, &r, 0);
	res_free(&r);
	run(fx.name, info, &r);
	expect_exit(info, &r, 0);
	assert_non_null(strstr(r.out, faults ? "\"locked\": 1" : "\"locked\": 0"));
	res_free(&r);
}

/* Reporting commands while another process writes: they finish, in time,
 * with an ordinary exit status. */
static void while_clients_write(void **state)
{
	static const char *const cmds[][6] = {
		{ "stats", SEG }, { "keys", SEG, "churn:x" }, { "clients", SEG },
		{ "info", SEG }, { "spaces", SEG }, { "get", SEG, "churn:x", "k7" },
		{ "verify", SEG },
	};
	(void)state;
	build_fixture(&fx, "live");
	pid_t p = fork();
	assert_true(p >= 0);
	if (p == 0) {
		ns_cache *c;
		ns_space *s;
		char key[16], val[600];
		if (ns_attach(fx.name, NULL, &c) || ns_space_open(c, "churn:x", &s))
			_exit(2);
		memset(val, 'v', sizeof(val));
		for (uint64_t i = 0;; i++) {
			int n = snprintf(key, sizeof(key), "k%llu", (unsigned long long)(i % 3000));
			if (i % 5 == 4)
				ns_del(s, key, (size_t)n);
			else
				ns_set(s, key, (size_t)n, val, i % sizeof(val), 0);
		}
	}
	kids[0] = p;
	usleep(200000);
	for (int round = 0; round < 3; round++) {
		for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
			struct res r;
			run(fx.name, cmds[i], &r);
			int code = r.status != -1 && WIFEXITED(r.status) ? WEXITSTATUS(r.status) : -1;
			bool ok = code == 0 ||
				  (code == 1 && (strcmp(cmds[i][0], "verify") == 0 ||
						 strcmp(cmds[i][0], "get") == 0));
			if (!ok)
				fail_msg("nsctl%s under writes: status %#x: %s", show_args(cmds[i]),
					 (unsigned)r.status, r.err);
			res_free(&r);
		}
	}
	kill(p, SIGKILL);
	waitpid(p, NULL, 0);
	kids[0] = 0;
}

/* --watch refreshes until SIGINT, then exits 0; with --json a line each. */
static void watch_until_sigint(void **state)
{
	const char *human[] = { "stats", SEG, "--watch", "0.1", NULL };
	const char *json[] = { "stats", SEG, "--json", "--watch=0.1", NULL };
	struct run_opts o = { .sigint_ms = 700 };
	struct res r;
	int n = 0;

	(void)state;
	build_fixture(&fx, "watch");
	run_opts(fx.name, human, &o, &r);
	expect_exit(human, &r, 0);
	for (char *p = r.out; (p = strstr(p, " every 0.1 s, ")); p++)
		n++;
	if (n < 3)
		fail_msg("%d screens in 700 ms: %s", n, r.out);
	assert_non_null(strstr(r.out, "per second:"));
	res_free(&r);
	run_opts(fx.name, json, &o, &r);
	expect_exit(json, &r, 0);
	n = 0;
	for (char *p = r.out; (p = strchr(p, '\n')); p++) {
		n++;
		assert_true(p[1] == '\0' || p[1] == '{');
	}
	if (n < 3 || r.out[0] != '{')
		fail_msg("%d JSON lines in 700 ms: %s", n, r.out);
	res_free(&r);
}

/* A segment file cut short under a running nsctl (which would fault on
 * the next read of the lost pages) ends it with status 3 and a message. */
static void file_shrinks_while_watched(void **state)
{
	const char *watch[] = { "stats", SEG, "--watch", "0.05", NULL };
	struct run_opts o = { .sigint_ms = 5000 };
	const char *name;
	char path[128];
	struct res r;

	(void)state;
	build_fixture(&fx, "shrink");
	/* A copy: our own mapping of the fixture must stay whole. */
	name = extra_name("shrunk");
	write_image(name, fx.c->base, fx.c->size);
	snprintf(path, sizeof(path), "/dev/shm/%s", name);
	pid_t p = fork();
	assert_true(p >= 0);
	if (p == 0) {
		usleep(500000);
		_exit(truncate(path, NS_HDR_SIZE) == 0 ? 0 : 1);
	}
	kids[0] = p;
	run_opts(name, watch, &o, &r);
	assert_int_equal(t_wait(p, 5000), 0);
	kids[0] = 0;
	expect_exit(watch, &r, 3);
	assert_non_null(strstr(r.err, "nsctl: the segment file shrank"));
	res_free(&r);
}

/* nsd, when it runs, shows as an alive janitor with a recent heartbeat. */
static void janitor_alive(void **state)
{
	const char *nsd = getenv("NSD");
	const char *info[] = { "info", SEG, "--json", NULL };
	struct res r;

	(void)state;
	if (nsd == NULL || access(nsd, X_OK) != 0)
		skip();
	build_fixture(&fx, "jan");
	run(fx.name, info, &r);
	expect_exit(info, &r, 0);
	assert_non_null(strstr(r.out, "\"alive\": false"));
	res_free(&r);
	pid_t p = fork();
	assert_true(p >= 0);
	if (p == 0) {
		int devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, STDERR_FILENO);
		execl(nsd, nsd, "--foreground", "--segment", fx.name, "--tick-ms", "20",
		      (char *)NULL);
		_exit(127);
	}
	kids[0] = p;
	uint64_t end = t_now_ns() + 5000000000ull;
	while (ns_load_relaxed(&fx.c->hdr->janitor_pid) != p && t_now_ns() < end)
		usleep(2000);
	assert_int_equal(ns_load_relaxed(&fx.c->hdr->janitor_pid), p);
	run(fx.name, info, &r);
	expect_exit(info, &r, 0);
	assert_non_null(strstr(r.out, "\"alive\": true"));
	res_free(&r);
}

/* Permission denied is exit 3 with a message, for a user who may not read. */
static void permission_denied(void **state)
{
	const char *info[] = { "info", SEG, NULL };
	struct run_opts o = { 0 };
	char path[128];
	struct res r;

	(void)state;
	build_fixture(&fx, "perm");
	snprintf(path, sizeof(path), "/dev/shm/%s", fx.name);
	assert_int_equal(chmod(path, 0600), 0);
	if (geteuid() == 0)
		o.uid = 65534; /* nobody */
	else
		assert_int_equal(chmod(path, 0000), 0);
	run_opts(fx.name, info, &o, &r);
	expect_exit(info, &r, 3);
	assert_non_null(strstr(r.err, ": Permission denied"));
	res_free(&r);
}

int main(void)
{
	nsctl_bin = getenv("NSCTL");
	if (nsctl_bin == NULL || access(nsctl_bin, X_OK) != 0)
		t_skip_all("$NSCTL does not name the nsctl binary");
	/* Placeholders for volatile fields: see the file comment. */
	setenv("NSCTL_TEST_STABLE", "1", 1);
	signal(SIGPIPE, SIG_IGN);

	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(golden_outputs, teardown),
		cmocka_unit_test_teardown(reporting_writes_nothing, teardown),
		cmocka_unit_test_teardown(every_command_has_help, teardown),
		cmocka_unit_test_teardown(write_commands, teardown),
		cmocka_unit_test_teardown(corrupt_segments, teardown),
		cmocka_unit_test_teardown(crashed_client, teardown),
		cmocka_unit_test_teardown(while_clients_write, teardown),
		cmocka_unit_test_teardown(watch_until_sigint, teardown),
		cmocka_unit_test_teardown(file_shrinks_while_watched, teardown),
		cmocka_unit_test_teardown(janitor_alive, teardown),
		cmocka_unit_test_teardown(permission_denied, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
