/*
 * segments.c - nsctl's commands about whole segments: create, destroy,
 * list, info and verify.
 *
 * list looks at every file of /dev/shm but trusts none: it reads the
 * header with pread() and says why a file with the NameStore magic number
 * cannot be attached (format version, layout, state, size) before it tries,
 * and only a file that passes is attached - read-only, which makes the
 * library check the rest of the geometry.  info and verify report from a
 * read-only attachment plus the census of lib/inspect.c, so they too work
 * on any segment, damaged ones included.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nsctl.h"

#define SHM_DIR "/dev/shm"
#define VERIFY_TRIES 3      /* checks of a segment with live writers */
#define VERIFY_PAUSE_US 100000 /* between them: let writes in flight finish */

int cmd_create(struct args *a)
{
	struct ns_attach_opts o = {
		.flags = NS_CREATE | NS_EXCL,
		.size = a->size,
		.max_items = a->items,
		.mode = a->mode ? a->mode : 0600,
	};
	const char *name = a->argv[0];
	char b1[32], b2[32];
	ns_cache *c;
	int err;

	if (!(a->given & O_SIZE)) {
		errmsg("create: --size is required");
		return EX_USAGE;
	}
	if (!ns__valid_name(name, NS_NAME_MAX)) {
		errmsg("'%s' is not a segment name (letters, digits, '.', '_', '-')", name);
		return EX_USAGE;
	}
	err = ns_attach(name, &o, &c);
	if (err == NS_EINVAL) {
		errmsg("%s: --size too small (it must hold the tables and two 1 MiB "
		       "pages) or --items too large", name);
		return EX_USAGE;
	}
	if (err == NS_EEXIST) {
		errmsg("%s: segment already exists", name);
		return EX_FAIL;
	}
	if (err)
		return fail_ns(err, name) == EX_SEGMENT ? EX_SEGMENT : EX_FAIL;
	printf("created segment %s: %s, %" PRIu32 " pages of %s, %" PRIu64
	       " buckets, mode %04o\n", name, fmt_bytes(b1, sizeof(b1), c->size),
	       c->npages, fmt_bytes(b2, sizeof(b2), NS_PAGE_SIZE), c->mask + 1,
	       (unsigned)o.mode);
	ns_detach(c);
	return EX_OK;
}

int cmd_destroy(struct args *a)
{
	const char *name = a->argv[0];
	char path[NS_NAME_MAX + 2];
	uint64_t magic = 0;
	int fd, err;

	if (!ns__valid_name(name, NS_NAME_MAX)) {
		errmsg("'%s' is not a segment name", name);
		return EX_USAGE;
	}
	snprintf(path, sizeof(path), "/%s", name);
	fd = shm_open(path, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0 && errno == ENOENT)
		return fail_ns(NS_ENOENT, name);
	if (fd >= 0) {
		if (pread(fd, &magic, sizeof(magic), 0) != (ssize_t)sizeof(magic))
			magic = 0;
		close(fd);
	}
	if (magic != NS_MAGIC && !(a->given & O_FORCE)) {
		if (fd < 0)
			errmsg("%s: cannot read it to check that it is a segment: %s "
			       "(--force removes it anyway)", name, strerror(errno));
		else
			errmsg("%s: not a NameStore segment (--force removes it anyway)", name);
		return fd < 0 ? EX_SEGMENT : EX_FAIL;
	}
	err = ns_unlink(name);
	if (err)
		return fail_ns(err, name);
	printf("destroyed segment %s (processes still attached keep it until they detach)\n",
	       name);
	return EX_OK;
}

/* ---- list ----------------------------------------------------------------- */

struct seg {
	char name[256];
	uint64_t size;
	bool valid;
	int clients;
	char status[96];
};

static int live_clients(ns_cache *c)
{
	int n = 0;

	for (uint32_t i = 0; i < c->nslots; i++)
		if (ns_load_relaxed(&c->slots[i].state) != NS_SLOT_FREE &&
		    ns__slot_alive(c, -1, i) == 1)
			n++;
	return n;
}

/* Fill S from the open file FD of size SIZE: why it cannot be attached, or
 * that it can.  Returns false if it is not a NameStore file at all. */
static bool look_at(int fd, const char *name, uint64_t size, struct seg *s)
{
	struct ns_hdr_shm h;
	ssize_t n = pread(fd, &h, sizeof(h), 0);
	ns_cache *c;
	int err;

	if (n < (ssize_t)sizeof(h.magic) || h.magic != NS_MAGIC)
		return false;
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->size = size;
	if (n < (ssize_t)sizeof(h)) {
		snprintf(s->status, sizeof(s->status), "corrupt (header cut short)");
	} else if (h.version != NS_FORMAT_VERSION) {
		snprintf(s->status, sizeof(s->status), "incompatible format version %" PRIu32,
			 h.version);
	} else if (h.fingerprint != ns__layout_fingerprint()) {
		snprintf(s->status, sizeof(s->status), "incompatible layout");
	} else if (h.state == NS_SEG_INIT) {
		struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET,
				    .l_start = NS_LOCK_INIT, .l_len = 1 };
		bool held = fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
		snprintf(s->status, sizeof(s->status), "%s", held ? "initializing" :
			 "corrupt (its creator died while initializing)");
	} else if (h.state == NS_SEG_RETIRED) {
		snprintf(s->status, sizeof(s->status), "retired");
	} else if (h.state != NS_SEG_READY) {
		snprintf(s->status, sizeof(s->status), "corrupt (state %" PRIu32 ")", h.state);
	} else if (h.size != size) {
		snprintf(s->status, sizeof(s->status), "corrupt (file is %" PRIu64
			 " bytes, header says %" PRIu64 ")", size, h.size);
	} else if (!ns__valid_name(name, NS_NAME_MAX)) {
		snprintf(s->status, sizeof(s->status), "not attachable (bad name)");
	} else if ((err = ns_attach(name, &(struct ns_attach_opts){ .flags = NS_RDONLY },
				    &c)) != 0) {
		snprintf(s->status, sizeof(s->status), "%s%s",
			 err == NS_ECORRUPT ? "corrupt: " : "", ns_strerror(err));
	} else {
		s->valid = true;
		s->clients = live_clients(c);
		snprintf(s->status, sizeof(s->status), "ok");
		ns_detach(c);
	}
	return true;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct seg *)a)->name, ((const struct seg *)b)->name);
}

int cmd_list(struct args *a)
{
	const char *pattern = a->argc > 0 ? a->argv[0] : NULL;
	struct seg *segs = NULL;
	size_t n = 0, cap = 0;
	struct dirent *e;
	DIR *d = opendir(SHM_DIR);

	if (d == NULL) {
		errmsg("%s: %s", SHM_DIR, strerror(errno));
		return EX_FAIL;
	}
	while ((e = readdir(d)) != NULL) {
		struct stat st;
		int fd;

		if (e->d_name[0] == '.' || (pattern && fnmatch(pattern, e->d_name, 0) != 0))
			continue;
		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		/* Files we may not read cannot be told apart from others'. */
		fd = openat(dirfd(d), e->d_name,
			    O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			segs = realloc(segs, cap * sizeof(*segs));
			if (segs == NULL)
				abort();
		}
		memset(&segs[n], 0, sizeof(segs[n]));
		if (look_at(fd, e->d_name, (uint64_t)st.st_size, &segs[n]))
			n++;
		close(fd);
	}
	closedir(d);
	if (n)
		qsort(segs, n, sizeof(*segs), by_name);

	if (a->json) {
		struct json j;

		j_init(&j, stdout, true);
		j_open(&j, NULL, '{');
		j_open(&j, "segments", '[');
		for (size_t i = 0; i < n; i++) {
			j_open(&j, NULL, '{');
			j_str(&j, "name", segs[i].name);
			j_u64(&j, "size", segs[i].size);
			j_bool(&j, "valid", segs[i].valid);
			j_str(&j, "status", segs[i].status);
			if (segs[i].valid)
				j_u64(&j, "clients", (uint64_t)segs[i].clients);
			else
				j_null(&j, "clients");
			j_close(&j, '}');
		}
		j_close(&j, ']');
		j_close(&j, '}');
		j_end(&j);
	} else {
		static const char *const heads[] = { "NAME", "SIZE", "CLIENTS", "STATUS" };
		struct table *t = tb_new(heads, "lrrl");
		char b[32];

		for (size_t i = 0; i < n; i++) {
			tb_escaped(t, segs[i].name, strlen(segs[i].name));
			tb_cell(t, "%s", fmt_bytes(b, sizeof(b), segs[i].size));
			if (segs[i].valid)
				tb_cell(t, "%d", segs[i].clients);
			else
				tb_cell(t, "-");
			tb_cell(t, "%s", segs[i].status);
		}
		tb_print(t, stdout, "");
		tb_free(t);
	}
	free(segs);
	return EX_OK;
}

/* ---- info ----------------------------------------------------------------- */

static const char *state_name(uint32_t s)
{
	switch (s) {
	case NS_SEG_INIT: return "initializing";
	case NS_SEG_READY: return "ready";
	case NS_SEG_RETIRED: return "retired";
	default: return "unknown";
	}
}

struct janitor {
	bool alive;
	int32_t pid;
	uint64_t beat_ms, age_ms;
};

static void janitor_of(ns_cache *c, struct janitor *jn)
{
	uint64_t now = ns__now_ms();

	jn->alive = ns__janitor_alive(c) == 1;
	jn->pid = ns_load_relaxed(&c->hdr->janitor_pid);
	jn->beat_ms = ns_load_relaxed(&c->hdr->janitor_beat_ms);
	jn->age_ms = jn->beat_ms && now > jn->beat_ms ? now - jn->beat_ms : 0;
}

static void info_json(ns_cache *c, const struct ns_census *cs, const struct janitor *jn,
		      int live, size_t nspaces)
{
	const struct ns_hdr_shm *h = c->hdr;
	struct json j;
	char fp[24];

	snprintf(fp, sizeof(fp), "0x%016" PRIx64, h->fingerprint);
	j_init(&j, stdout, true);
	j_open(&j, NULL, '{');
	j_str(&j, "name", c->name);
	j_u64(&j, "format_version", h->version);
	j_str(&j, "layout_fingerprint", fp);
	j_u64(&j, "hash_id", h->hash_id);
	j_str(&j, "state", state_name(h->state));
	j_u64(&j, "size", h->size);
	j_vol_u64(&j, "created_ms", h->created_ms);
	j_open(&j, "layout", '{');
	j_u64(&j, "header", 0);
	j_u64(&j, "slots", h->slots_off);
	j_u64(&j, "spaces", h->spaces_off);
	j_u64(&j, "flights", h->flights_off);
	j_u64(&j, "classes", h->classes_off);
	j_u64(&j, "pages", h->pages_off);
	j_u64(&j, "audit_map", h->audit_off);
	j_u64(&j, "index", h->index_off);
	j_u64(&j, "overflow", h->over_off);
	j_u64(&j, "data", h->data_off);
	j_close(&j, '}');
	j_open(&j, "index", '{');
	j_u64(&j, "buckets", c->mask + 1);
	j_u64(&j, "overflow_buckets", c->nover);
	j_u64(&j, "overflow_claimed", cs->over_claimed);
	j_u64(&j, "overflow_linked", cs->over_linked);
	j_u64(&j, "longest_chain", cs->longest_chain);
	j_u64(&j, "locked", cs->locked);
	j_close(&j, '}');
	j_open(&j, "slab", '{');
	j_u64(&j, "classes", c->nclasses);
	j_u64(&j, "pages", c->npages);
	j_u64(&j, "pages_in_use", cs->pages_handed);
	j_u64(&j, "page_size", h->page_size);
	j_u64(&j, "smallest_chunk", c->classes[0].size);
	j_u64(&j, "largest_chunk", c->classes[c->nclasses - 1].size);
	j_close(&j, '}');
	j_open(&j, "slots", '{');
	j_u64(&j, "total", c->nslots);
	j_u64(&j, "in_use", cs->slots_used);
	j_u64(&j, "alive", (uint64_t)live);
	j_close(&j, '}');
	j_open(&j, "spaces", '{');
	j_u64(&j, "total", h->nspaces);
	j_u64(&j, "in_use", nspaces);
	j_close(&j, '}');
	j_vol_u64(&j, "epoch", ns_load_relaxed(&h->epoch));
	j_u64(&j, "recoveries", ns_load_relaxed(&h->recoveries));
	j_bool(&j, "audit_wanted", ns_load_relaxed(&h->audit_wanted) != 0);
	j_open(&j, "janitor", '{');
	j_bool(&j, "alive", jn->alive);
	if (jn->pid)
		j_vol_i64(&j, "pid", jn->pid);
	else
		j_i64(&j, "pid", 0);
	if (jn->beat_ms) {
		j_vol_u64(&j, "last_beat_ms", jn->beat_ms);
		j_vol_u64(&j, "beat_age_ms", jn->age_ms);
	} else {
		j_u64(&j, "last_beat_ms", 0);
		j_null(&j, "beat_age_ms");
	}
	j_u64(&j, "expired", ns_load_relaxed(&h->expired));
	j_close(&j, '}');
	j_close(&j, '}');
	j_end(&j);
}

static void info_human(ns_cache *c, const struct ns_census *cs, const struct janitor *jn,
		       int live, size_t nspaces)
{
	const struct ns_hdr_shm *h = c->hdr;
	char b1[48], b2[48], b3[48];
	static const char *const lh[] = { "TABLE", "OFFSET", "SIZE" };
	struct table *t = tb_new(lh, "lrr");
	const struct { const char *name; uint64_t off; } tabs[] = {
		{ "header", 0 }, { "client slots", h->slots_off },
		{ "namespaces", h->spaces_off }, { "flights", h->flights_off },
		{ "slab classes", h->classes_off }, { "page descriptors", h->pages_off },
		{ "audit map", h->audit_off }, { "index buckets", h->index_off }, { "overflow buckets", h->over_off },
		{ "data pages", h->data_off },
	};

	printf("segment    %s\n", c->name);
	printf("format     version %" PRIu32 ", layout fingerprint 0x%016" PRIx64
	       ", hash %" PRIu32 "\n", h->version, h->fingerprint, h->hash_id);
	printf("state      %s\n", state_name(h->state));
	printf("size       %s (%" PRIu64 " bytes)\n", fmt_bytes(b1, sizeof(b1), h->size), h->size);
	uint64_t now = ns__now_ms();
	printf("created    %s (%s ago)\n", VOL(fmt_time(b1, sizeof(b1), h->created_ms)),
	       VOL(fmt_age(b2, sizeof(b2), now > h->created_ms ? now - h->created_ms : 0)));
	printf("index      %" PRIu64 " buckets, %" PRIu64 " overflow buckets (%" PRIu64
	       " claimed, %" PRIu64 " linked), longest chain %" PRIu64 ", %" PRIu64
	       " locks held\n", c->mask + 1, c->nover, cs->over_claimed, cs->over_linked,
	       cs->longest_chain, cs->locked);
	printf("slab       %" PRIu32 " classes of %s to %s, %" PRIu32 " pages of %s (%" PRIu32
	       " in use)\n", c->nclasses, fmt_bytes(b1, sizeof(b1), c->classes[0].size),
	       fmt_bytes(b2, sizeof(b2), c->classes[c->nclasses - 1].size), c->npages,
	       fmt_bytes(b3, sizeof(b3), h->page_size), cs->pages_handed);
	printf("clients    %" PRIu32 " slots, %" PRIu32 " in use, %d alive\n", c->nslots,
	       cs->slots_used, live);
	printf("spaces     %" PRIu32 " entries, %zu in use\n", h->nspaces, nspaces);
	printf("epoch      %s, %" PRIu64 " recoveries, audit %s\n",
	       VOL((snprintf(b1, sizeof(b1), "%" PRIu64, ns_load_relaxed(&h->epoch)), b1)),
	       ns_load_relaxed(&h->recoveries),
	       ns_load_relaxed(&h->audit_wanted) ? "wanted" : "not wanted");
	if (jn->beat_ms == 0)
		snprintf(b2, sizeof(b2), "never");
	else
		snprintf(b2, sizeof(b2), "%s ago", VOL(fmt_age(b3, sizeof(b3), jn->age_ms)));
	snprintf(b1, sizeof(b1), "%d", (int)jn->pid);
	printf("janitor    %s, pid %s, last heartbeat %s, %" PRIu64 " items expired\n",
	       jn->alive ? "alive" : "not running", jn->pid ? VOL(b1) : "0", b2,
	       ns_load_relaxed(&h->expired));
	printf("\nlayout\n");
	for (size_t i = 0; i < sizeof(tabs) / sizeof(tabs[0]); i++) {
		uint64_t end = i + 1 < sizeof(tabs) / sizeof(tabs[0]) ? tabs[i + 1].off : h->size;
		tb_cell(t, "%s", tabs[i].name);
		tb_cell(t, "%" PRIu64, tabs[i].off);
		tb_cell(t, "%s", fmt_bytes(b1, sizeof(b1), end - tabs[i].off));
	}
	tb_print(t, stdout, "  ");
	tb_free(t);
}

int cmd_info(struct args *a)
{
	struct ns_census *cs = malloc(sizeof(*cs));
	struct janitor jn;
	ns_cache *c;
	size_t nspaces = 0;
	int live, r;

	if (cs == NULL)
		abort();
	r = open_segment(a->argv[0], false, &c);
	if (r) {
		free(cs);
		return r;
	}
	r = ns__census(c, 0, cs);
	if (r == 0) {
		janitor_of(c, &jn);
		live = live_clients(c);
		ns_space_list(c, NULL, 0, &nspaces);
		if (a->json)
			info_json(c, cs, &jn, live, nspaces);
		else
			info_human(c, cs, &jn, live, nspaces);
	} else {
		r = fail_ns(r, a->argv[0]);
	}
	ns_detach(c);
	free(cs);
	return r;
}

/* ---- verify --------------------------------------------------------------- */

struct check {
	struct ns_verify_report rep;
	struct ns_census cs;
	bool clean;
	int live;
};

static void verify_human(const char *name, const struct check *k)
{
	const struct ns_verify_report *r = &k->rep;
	struct table *t = tb_new(NULL, "lrl");
	const struct { const char *what; uint64_t n; const char *why; } rows[] = {
		{ "chunks", r->chunks, "carved in all pages" },
		{ "reachable", r->reachable, "published in the index" },
		{ "free", r->free, "on free lists and park lists" },
		{ "cached", r->cached, "in client slots' chunk caches" },
		{ "retired", r->retired, "on retire lists, waiting for readers" },
		{ "in flight", r->in_flight, "held by a write in progress" },
		{ "leaked", r->leaked, "held by nothing" },
		{ "doubled", r->doubled, "found in two places" },
		{ "bad refs", r->bad_refs, "references that are not a chunk" },
		{ "bad items", k->cs.bad_items, "items with impossible lengths or namespace" },
		{ "bad chains", k->cs.bad_chains, "index chains with a bad link or a loop" },
		{ "bad lists", k->cs.bad_lists, "free, park or retire lists that break off" },
		{ "locked", r->locked, "bucket locks held" },
		{ "live clients", (uint64_t)k->live, "attached now" },
	};

	if (k->clean)
		printf("segment %s: consistent\n", name);
	else
		printf("segment %s: NOT consistent: %s\n", name,
		       r->first_error[0] ? r->first_error : k->cs.first_problem);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		tb_cell(t, "%s", rows[i].what);
		tb_cell(t, "%" PRIu64, rows[i].n);
		tb_cell(t, "%s", rows[i].why);
	}
	tb_print(t, stdout, "  ");
	tb_free(t);
}

static void verify_json(const char *name, const struct check *k)
{
	const struct ns_verify_report *r = &k->rep;
	struct json j;

	j_init(&j, stdout, true);
	j_open(&j, NULL, '{');
	j_str(&j, "name", name);
	j_bool(&j, "clean", k->clean);
	j_u64(&j, "live_clients", (uint64_t)k->live);
	j_u64(&j, "chunks", r->chunks);
	j_u64(&j, "reachable", r->reachable);
	j_u64(&j, "free", r->free);
	j_u64(&j, "cached", r->cached);
	j_u64(&j, "retired", r->retired);
	j_u64(&j, "in_flight", r->in_flight);
	j_u64(&j, "leaked", r->leaked);
	j_u64(&j, "doubled", r->doubled);
	j_u64(&j, "bad_refs", r->bad_refs);
	j_u64(&j, "locked", r->locked);
	j_u64(&j, "bad_items", k->cs.bad_items);
	j_u64(&j, "bad_chains", k->cs.bad_chains);
	j_u64(&j, "bad_lists", k->cs.bad_lists);
	if (k->clean)
		j_null(&j, "first_error");
	else
		j_str(&j, "first_error", r->first_error[0] ? r->first_error : k->cs.first_problem);
	j_close(&j, '}');
	j_end(&j);
}

int cmd_verify(struct args *a)
{
	struct check *k = calloc(1, sizeof(*k));
	ns_cache *c;
	int r;

	if (k == NULL)
		abort();
	r = open_segment(a->argv[0], false, &c);
	if (r) {
		free(k);
		return r;
	}
	for (int i = 0; i < VERIFY_TRIES; i++) {
		int v;

		if (i > 0)
			usleep(VERIFY_PAUSE_US);
		k->live = live_clients(c);
		v = ns__verify(c, &k->rep);
		if (v != 0 && v != NS_ECORRUPT) {
			r = fail_ns(v, a->argv[0]);
			goto out;
		}
		v = ns__census(c, 0, &k->cs);
		if (v != 0) {
			r = fail_ns(v, a->argv[0]);
			goto out;
		}
		k->clean = k->rep.leaked == 0 && k->rep.doubled == 0 && k->rep.bad_refs == 0 &&
			   k->cs.bad_items == 0 && k->cs.bad_chains == 0 && k->cs.bad_lists == 0;
		/* Without writers a failure is real; with them it may be a
		 * write in flight, so look again. */
		if (k->clean || k->live == 0)
			break;
	}
	if (a->json)
		verify_json(c->name, k);
	else
		verify_human(c->name, k);
	r = k->clean ? EX_OK : EX_FAIL;
out:
	ns_detach(c);
	free(k);
	return r;
}
