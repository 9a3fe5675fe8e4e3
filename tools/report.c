/*
 * report.c - nsctl's reports on what a segment holds and who uses it:
 * stats (counters, hit ratio, memory per slab class, optionally refreshed
 * like top), clients (the client slots), spaces (the namespace table), and
 * clear, the one namespace operation that writes.
 *
 * Counters come from where the library keeps them: namespace counters from
 * ns_space_list() (the shared totals plus every slot's per-namespace set),
 * client counters from the slots themselves (reset when a slot is
 * claimed), and memory from the census of lib/inspect.c.  A snapshot is
 * not atomic: each number is read once, while clients may be writing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nsctl.h"

/* Everything one screen of `nsctl stats` shows. */
struct snap {
	struct ns_space_info *sp; /* the namespaces shown */
	size_t nsp;
	uint32_t space_id;        /* --space: its id; 0: all */
	struct ns_space_info tot; /* sums over sp */
	struct {
		uint64_t slots, gets, hits, misses, sets, dels, evictions;
	} cl;
	uint64_t janitor_expired;
	struct ns_census cs;
};

/* All namespaces of C, or only the one named PREFIX (which must exist). */
static int space_infos(ns_cache *c, const char *prefix, struct ns_space_info **out,
		       size_t *n)
{
	size_t cap = 0;
	int err;

	*out = NULL;
	if (prefix) {
		ns_space *s;
		int r = open_space(c, prefix, false, &s);
		if (r)
			return r;
		*out = calloc(1, sizeof(**out));
		if (*out == NULL)
			abort();
		ns_space_info(s, *out);
		*n = 1;
		return EX_OK;
	}
	/* The table may grow between the two calls: ask until it fits. */
	for (int i = 0; i < 8; i++) {
		err = ns_space_list(c, *out, cap, n);
		if (err)
			return fail_ns(err, c->name);
		if (*n <= cap)
			return EX_OK;
		cap = *n + 8;
		free(*out);
		*out = calloc(cap, sizeof(**out));
		if (*out == NULL)
			abort();
	}
	if (*n > cap)
		*n = cap;
	return EX_OK;
}

static int take_snap(ns_cache *c, const char *prefix, struct snap *s)
{
	int r;

	free(s->sp);
	memset(s, 0, sizeof(*s));
	r = space_infos(c, prefix, &s->sp, &s->nsp);
	if (r)
		return r;
	s->space_id = prefix ? s->sp[0].id : 0;
	for (size_t i = 0; i < s->nsp; i++) {
		const struct ns_space_info *p = &s->sp[i];
		s->tot.items += p->items;
		s->tot.bytes += p->bytes;
		s->tot.hits += p->hits;
		s->tot.misses += p->misses;
		s->tot.sets += p->sets;
		s->tot.deletes += p->deletes;
		s->tot.evictions += p->evictions;
		s->tot.expirations += p->expirations;
	}
	for (uint32_t i = 0; i < c->nslots; i++) {
		const struct ns_slot_shm *sl = &c->slots[i];
		if (ns_load_relaxed(&sl->state) == NS_SLOT_FREE)
			continue;
		s->cl.slots++;
		s->cl.gets += ns_load_relaxed(&sl->gets);
		s->cl.hits += ns_load_relaxed(&sl->hits);
		s->cl.misses += ns_load_relaxed(&sl->misses);
		s->cl.sets += ns_load_relaxed(&sl->sets);
		s->cl.dels += ns_load_relaxed(&sl->dels);
		s->cl.evictions += ns_load_relaxed(&sl->evictions);
	}
	s->janitor_expired = ns_load_relaxed(&c->hdr->expired);
	r = ns__census(c, s->space_id, &s->cs);
	return r ? fail_ns(r, c->name) : EX_OK;
}

/* Whether the class table shows class K: one with pages; with --space,
 * one holding items of that namespace. */
static bool shown(const struct snap *s, const struct ns_census_class *k)
{
	return k->pages != 0 && (s->space_id == 0 || k->items != 0);
}

/* A class's figures, derived from the census. */
struct class_fig {
	uint64_t chunks, used, waste;
};

static struct class_fig class_fig(const struct ns_census_class *k)
{
	struct class_fig f;
	uint64_t held = k->free + k->parked + k->cached;

	f.chunks = (uint64_t)k->pages * k->per_page;
	f.used = k->carved > held ? k->carved - held : 0;
	f.waste = k->items * k->size > k->item_bytes ? k->items * k->size - k->item_bytes : 0;
	return f;
}

/* The memory line: chunk bytes in use over every class; item bytes and
 * waste of the items the census counted (one namespace's with --space). */
struct mem {
	uint64_t used_bytes, item_bytes, waste;
};

static struct mem mem_of(const struct snap *s)
{
	struct mem m = { 0 };

	for (uint32_t k = 0; k < s->cs.nclasses; k++) {
		const struct ns_census_class *cl = &s->cs.cls[k];
		struct class_fig f = class_fig(cl);
		m.used_bytes += f.used * cl->size;
		m.item_bytes += cl->item_bytes;
		m.waste += f.waste;
	}
	return m;
}

/* Evictions by cause, every class (so every namespace) together. */
struct evs {
	uint64_t alloc, move, rescued;
};

static struct evs evs_of(const struct snap *s)
{
	struct evs e = { 0, 0, 0 };

	for (uint32_t k = 0; k < s->cs.nclasses; k++) {
		const struct ns_census_class *cl = &s->cs.cls[k];
		e.move += cl->move_evictions;
		e.alloc += cl->evictions - (cl->move_evictions < cl->evictions ?
					    cl->move_evictions : cl->evictions);
		e.rescued += cl->rescues;
	}
	return e;
}

static void stats_json(ns_cache *c, const char *prefix, const struct snap *s, bool pretty)
{
	struct mem m = mem_of(s);
	struct evs ev = evs_of(s);
	struct json j;

	j_init(&j, stdout, pretty);
	j_open(&j, NULL, '{');
	j_str(&j, "name", c->name);
	if (prefix)
		j_str(&j, "space", prefix);
	else
		j_null(&j, "space");
	j_open(&j, "totals", '{');
	j_u64(&j, "items", s->tot.items);
	j_u64(&j, "bytes", s->tot.bytes);
	j_u64(&j, "gets", s->tot.hits + s->tot.misses);
	j_u64(&j, "hits", s->tot.hits);
	j_u64(&j, "misses", s->tot.misses);
	j_ratio(&j, "hit_ratio", s->tot.hits, s->tot.hits + s->tot.misses);
	j_u64(&j, "sets", s->tot.sets);
	j_u64(&j, "deletes", s->tot.deletes);
	j_u64(&j, "evictions", s->tot.evictions);
	j_u64(&j, "expirations", s->tot.expirations);
	j_close(&j, '}');
	j_u64(&j, "janitor_expired", s->janitor_expired);
	j_open(&j, "evictions_by_cause", '{');
	j_u64(&j, "allocation", ev.alloc);
	j_u64(&j, "page_move", ev.move);
	j_u64(&j, "index_full", s->cs.index_evictions);
	j_u64(&j, "quota", s->cs.quota_evictions);
	j_u64(&j, "rescued", ev.rescued);
	j_close(&j, '}');
	j_open(&j, "clients", '{');
	j_u64(&j, "slots", s->cl.slots);
	j_u64(&j, "gets", s->cl.gets);
	j_u64(&j, "hits", s->cl.hits);
	j_u64(&j, "misses", s->cl.misses);
	j_u64(&j, "sets", s->cl.sets);
	j_u64(&j, "deletes", s->cl.dels);
	j_u64(&j, "evictions", s->cl.evictions);
	j_close(&j, '}');
	j_open(&j, "spaces", '[');
	for (size_t i = 0; i < s->nsp; i++) {
		const struct ns_space_info *p = &s->sp[i];
		j_open(&j, NULL, '{');
		j_u64(&j, "id", p->id);
		j_bytes(&j, "prefix", p->prefix, strlen(p->prefix));
		j_u64(&j, "generation", p->generation);
		j_u64(&j, "items", p->items);
		j_u64(&j, "bytes", p->bytes);
		j_u64(&j, "gets", p->hits + p->misses);
		j_u64(&j, "hits", p->hits);
		j_u64(&j, "misses", p->misses);
		j_ratio(&j, "hit_ratio", p->hits, p->hits + p->misses);
		j_u64(&j, "sets", p->sets);
		j_u64(&j, "deletes", p->deletes);
		j_u64(&j, "evictions", p->evictions);
		j_u64(&j, "expirations", p->expirations);
		j_u64(&j, "default_ttl_ms", p->default_ttl_ms);
		j_u64(&j, "quota_bytes", p->quota_bytes);
		j_close(&j, '}');
	}
	j_close(&j, ']');
	j_open(&j, "classes", '[');
	for (uint32_t k = 0; k < s->cs.nclasses; k++) {
		const struct ns_census_class *cl = &s->cs.cls[k];
		struct class_fig f = class_fig(cl);
		if (!shown(s, cl))
			continue;
		j_open(&j, NULL, '{');
		j_u64(&j, "class", k);
		j_u64(&j, "chunk_size", cl->size);
		j_u64(&j, "pages", cl->pages);
		j_u64(&j, "chunks", f.chunks);
		j_u64(&j, "carved", cl->carved);
		j_u64(&j, "used", f.used);
		j_u64(&j, "free", cl->free);
		j_u64(&j, "parked", cl->parked);
		j_u64(&j, "cached", cl->cached);
		j_u64(&j, "retired", cl->retired);
		j_u64(&j, "items", cl->items);
		j_u64(&j, "dead_items", cl->dead);
		j_u64(&j, "item_bytes", cl->item_bytes);
		j_u64(&j, "waste_bytes", f.waste);
		j_u64(&j, "evictions", cl->evictions);
		j_u64(&j, "move_evictions", cl->move_evictions);
		j_u64(&j, "rescues", cl->rescues);
		j_u64(&j, "enomem", cl->enomem);
		j_close(&j, '}');
	}
	j_close(&j, ']');
	j_open(&j, "memory", '{');
	j_u64(&j, "data_bytes", (uint64_t)c->npages * NS_PAGE_SIZE);
	j_u64(&j, "pages", c->npages);
	j_u64(&j, "pages_in_use", s->cs.pages_handed);
	j_u64(&j, "chunk_bytes_used", m.used_bytes);
	j_u64(&j, "item_bytes", m.item_bytes);
	j_u64(&j, "waste_bytes", m.waste);
	j_close(&j, '}');
	j_close(&j, '}');
	j_end(&j);
}

static void stats_human(ns_cache *c, const char *prefix, const struct snap *s)
{
	static const char *const sh[] = { "ID", "PREFIX", "ITEMS", "BYTES", "GETS", "HIT%",
					  "SETS", "DELETES", "EVICTIONS", "EXPIRATIONS" };
	static const char *const kh[] = { "CLASS", "CHUNK", "PAGES", "CHUNKS", "USED",
					  "FREE", "ITEMS", "DEAD", "ITEM BYTES", "WASTE",
					  "WASTE%", "EVICTIONS" };
	const struct ns_space_info *t = &s->tot;
	struct mem m = mem_of(s);
	struct evs ev = evs_of(s);
	char b1[48], b2[48], b3[48], b4[48], b5[48];
	struct table *tb;

	printf("segment %s, %s\n", c->name, prefix ? prefix : "all namespaces");
	printf("  items %" PRIu64 ", %s in chunks; hit ratio %s (gets %" PRIu64 ": hits %"
	       PRIu64 ", misses %" PRIu64 ")\n", t->items, fmt_bytes(b1, sizeof(b1), t->bytes),
	       fmt_pct(b2, sizeof(b2), t->hits, t->hits + t->misses), t->hits + t->misses,
	       t->hits, t->misses);
	printf("  sets %" PRIu64 ", deletes %" PRIu64 ", evictions %" PRIu64
	       ", expirations %" PRIu64 " (%" PRIu64 " by the janitor, all namespaces)\n",
	       t->sets, t->deletes, t->evictions, t->expirations, s->janitor_expired);
	printf("  evictions by cause, all namespaces: allocation %" PRIu64 ", page move %"
	       PRIu64 " (%" PRIu64 " items rescued), index full %" PRIu64 ", quota %" PRIu64
	       "\n", ev.alloc, ev.move, ev.rescued, s->cs.index_evictions,
	       s->cs.quota_evictions);
	printf("  client slots in use %" PRIu64 ": gets %" PRIu64 ", hits %" PRIu64
	       ", misses %" PRIu64 ", sets %" PRIu64 ", deletes %" PRIu64 ", evictions %" PRIu64
	       " (since each claim)\n", s->cl.slots, s->cl.gets, s->cl.hits, s->cl.misses,
	       s->cl.sets, s->cl.dels, s->cl.evictions);

	printf("\nnamespaces\n");
	tb = tb_new(sh, "rlrrrrrrrr");
	for (size_t i = 0; i < s->nsp; i++) {
		const struct ns_space_info *p = &s->sp[i];
		tb_cell(tb, "%" PRIu32, p->id);
		tb_escaped(tb, p->prefix, strlen(p->prefix));
		tb_cell(tb, "%" PRIu64, p->items);
		tb_cell(tb, "%s", fmt_bytes(b1, sizeof(b1), p->bytes));
		tb_cell(tb, "%" PRIu64, p->hits + p->misses);
		tb_cell(tb, "%s", fmt_pct(b1, sizeof(b1), p->hits, p->hits + p->misses));
		tb_cell(tb, "%" PRIu64, p->sets);
		tb_cell(tb, "%" PRIu64, p->deletes);
		tb_cell(tb, "%" PRIu64, p->evictions);
		tb_cell(tb, "%" PRIu64, p->expirations);
	}
	tb_print(tb, stdout, "  ");
	tb_free(tb);

	tb = tb_new(kh, "rrrrrrrrrrrr");
	for (uint32_t k = 0; k < s->cs.nclasses; k++) {
		const struct ns_census_class *cl = &s->cs.cls[k];
		struct class_fig f = class_fig(cl);
		if (!shown(s, cl))
			continue;
		tb_cell(tb, "%" PRIu32, k);
		tb_cell(tb, "%s", fmt_bytes(b1, sizeof(b1), cl->size));
		tb_cell(tb, "%" PRIu32, cl->pages);
		tb_cell(tb, "%" PRIu64, f.chunks);
		tb_cell(tb, "%" PRIu64, f.used);
		tb_cell(tb, "%" PRIu64, f.chunks - f.used);
		tb_cell(tb, "%" PRIu64, cl->items);
		tb_cell(tb, "%" PRIu64, cl->dead);
		tb_cell(tb, "%s", fmt_bytes(b1, sizeof(b1), cl->item_bytes));
		tb_cell(tb, "%s", fmt_bytes(b1, sizeof(b1), f.waste));
		tb_cell(tb, "%s", fmt_pct(b1, sizeof(b1), f.waste, cl->items * cl->size));
		tb_cell(tb, "%" PRIu64, cl->evictions);
	}
	printf("\nmemory: %" PRIu32 " pages of %s, %" PRIu32 " in use; chunks in use %s; "
	       "%sitems %s, waste %s (%s of their chunks)\n", c->npages,
	       fmt_bytes(b1, sizeof(b1), NS_PAGE_SIZE), s->cs.pages_handed,
	       fmt_bytes(b2, sizeof(b2), m.used_bytes), prefix ? "its " : "",
	       fmt_bytes(b3, sizeof(b3), m.item_bytes),
	       fmt_bytes(b4, sizeof(b4), m.waste),
	       fmt_pct(b5, sizeof(b5), m.waste, m.item_bytes + m.waste));
	printf("slab classes %s (USED: carved less free, parked and cached)\n",
	       prefix ? "holding items of this namespace; ITEMS, BYTES and WASTE are its own"
		      : "with pages");
	tb_print(tb, stdout, "  ");
	tb_free(tb);
}

static volatile sig_atomic_t stop_watch;

static void on_interrupt(int sig) { stop_watch = sig; }

static void sleep_s(double s)
{
	struct timespec ts = { .tv_sec = (time_t)s,
			       .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
	/* A signal cuts it short (no SA_RESTART); the loop looks at it. */
	nanosleep(&ts, NULL);
}

/* --watch: a screen (or, with --json, a line) per period until SIGINT. */
static int watch(ns_cache *c, struct args *a, struct snap *s)
{
	struct sigaction sa = { .sa_handler = on_interrupt };
	bool tty = isatty(STDOUT_FILENO);
	struct ns_space_info prev = { 0 };
	uint64_t prev_ns = 0;
	int r = EX_OK;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	while (!stop_watch) {
		struct timespec now;
		char when[48];

		r = take_snap(c, a->space, s);
		if (r)
			break;
		clock_gettime(CLOCK_MONOTONIC, &now);
		uint64_t ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
		if (a->json) {
			stats_json(c, a->space, s, false);
		} else {
			fputs(tty ? "\033[H\033[2J" : "\n", stdout);
			printf("nsctl stats %s every %g s, %s; Ctrl-C to stop\n", c->name,
			       a->watch_s, fmt_time(when, sizeof(when), ns__now_ms()));
			if (prev_ns) {
				double dt = (double)(ns - prev_ns) / 1e9;
				printf("  per second: %.0f gets, %.0f sets, %.0f deletes, "
				       "%.0f evictions\n",
				       (double)(s->tot.hits + s->tot.misses - prev.hits -
						prev.misses) / dt,
				       (double)(s->tot.sets - prev.sets) / dt,
				       (double)(s->tot.deletes - prev.deletes) / dt,
				       (double)(s->tot.evictions - prev.evictions) / dt);
			}
			stats_human(c, a->space, s);
		}
		if (fflush(stdout) != 0)
			break;
		prev = s->tot;
		prev_ns = ns;
		sleep_s(a->watch_s);
	}
	return r;
}

int cmd_stats(struct args *a)
{
	struct snap *s = calloc(1, sizeof(*s));
	ns_cache *c;
	int r;

	if (s == NULL)
		abort();
	r = open_segment(a->argv[0], false, &c);
	if (r) {
		free(s);
		return r;
	}
	if (a->given & O_WATCH) {
		r = watch(c, a, s);
	} else {
		r = take_snap(c, a->space, s);
		if (r == EX_OK && a->json)
			stats_json(c, a->space, s, true);
		else if (r == EX_OK)
			stats_human(c, a->space, s);
	}
	ns_detach(c);
	free(s->sp);
	free(s);
	return r;
}

/* ---- clients -------------------------------------------------------------- */

static const char *phase_name(uint32_t p)
{
	static const char *const n[] = { "none", "built", "locked", "published", "unlocked" };
	return p < sizeof(n) / sizeof(n[0]) ? n[p] : "invalid";
}

static const char *slot_state(uint32_t s)
{
	return s == NS_SLOT_ACTIVE ? "active" : s == NS_SLOT_ORPHAN ? "orphan" : "invalid";
}

static const char *alive_name(int r)
{
	return r == 1 ? "alive" : r == 0 ? "dead" : "unknown";
}

static unsigned cached_chunks(const struct ns_slot_shm *sl)
{
	unsigned n = 0;

	for (int k = 0; k < NS_MAX_CLASSES; k++) {
		uint8_t m = ns_load_relaxed(&sl->cache_n[k]);
		n += m < NS_SLOT_CACHE ? m : NS_SLOT_CACHE;
	}
	return n;
}

int cmd_clients(struct args *a)
{
	static const char *const heads[] = { "SLOT", "PID", "COMMAND", "STATE", "LIVENESS",
					     "READING", "CLAIMS", "ATTACHED", "ACTIVE", "INTENT",
					     "RETIRED", "CACHED", "GETS", "HITS", "MISSES",
					     "SETS", "DELS", "EVICTIONS" };
	uint64_t now = ns__now_ms();
	struct table *t = NULL;
	struct json j;
	ns_cache *c;
	int r = open_segment(a->argv[0], false, &c);

	if (r)
		return r;
	if (a->json) {
		j_init(&j, stdout, true);
		j_open(&j, NULL, '{');
		j_str(&j, "name", c->name);
		j_open(&j, "clients", '[');
	} else {
		t = tb_new(heads, "rrllllrrrlrrrrrrrr");
	}
	for (uint32_t i = 0; i < c->nslots; i++) {
		const struct ns_slot_shm *sl = &c->slots[i];
		uint32_t state = ns_load_relaxed(&sl->state);
		uint64_t epoch = ns_load_relaxed(&sl->epoch), attach = sl->attach_ms;
		/* Last operation, to the second; never before the attach. */
		uint64_t active = c->hdr->created_ms +
				  (uint64_t)ns_load_relaxed(&sl->active_s) * 1000u;
		if (active < attach)
			active = attach;
		uint32_t phase = ns_load_relaxed(&sl->in_phase);
		char comm[sizeof(sl->comm)], b1[48], b2[48];

		if (state == NS_SLOT_FREE)
			continue;
		memcpy(comm, sl->comm, sizeof(comm));
		int alive = ns__slot_alive(c, -1, i);
		size_t cl = strnlen(comm, sizeof(comm));
		if (a->json) {
			j_open(&j, NULL, '{');
			j_vol_u64(&j, "slot", i);
			j_str(&j, "state", slot_state(state));
			if (alive < 0)
				j_null(&j, "alive");
			else
				j_bool(&j, "alive", alive == 1);
			j_vol_i64(&j, "pid", sl->pid);
			j_bytes(&j, "comm", comm, cl);
			j_u64(&j, "claims", sl->claims);
			j_vol_u64(&j, "attach_ms", attach);
			j_vol_u64(&j, "active_ms", active);
			j_bool(&j, "in_read", epoch != 0);
			if (epoch)
				j_vol_u64(&j, "epoch", epoch);
			else
				j_u64(&j, "epoch", 0);
			j_str(&j, "intent", phase_name(phase));
			j_u64(&j, "retired", ns_load_relaxed(&sl->retire_count));
			j_u64(&j, "retired_bytes", ns_load_relaxed(&sl->retire_bytes));
			j_u64(&j, "cached", cached_chunks(sl));
			j_u64(&j, "gets", ns_load_relaxed(&sl->gets));
			j_u64(&j, "hits", ns_load_relaxed(&sl->hits));
			j_u64(&j, "misses", ns_load_relaxed(&sl->misses));
			j_u64(&j, "sets", ns_load_relaxed(&sl->sets));
			j_u64(&j, "deletes", ns_load_relaxed(&sl->dels));
			j_u64(&j, "evictions", ns_load_relaxed(&sl->evictions));
			j_close(&j, '}');
			continue;
		}
		snprintf(b1, sizeof(b1), "%" PRIu32, i);
		tb_cell(t, "%s", VOL(b1));
		snprintf(b1, sizeof(b1), "%" PRId32, sl->pid);
		tb_cell(t, "%s", VOL(b1));
		tb_escaped(t, comm, cl);
		tb_cell(t, "%s", slot_state(state));
		tb_cell(t, "%s", alive_name(alive));
		snprintf(b1, sizeof(b1), "epoch %" PRIu64, epoch);
		tb_cell(t, "%s", epoch ? VOL(b1) : "no");
		tb_cell(t, "%" PRIu32, sl->claims);
		snprintf(b1, sizeof(b1), "%s ago",
			 fmt_age(b2, sizeof(b2), now > attach ? now - attach : 0));
		tb_cell(t, "%s", VOL(b1));
		snprintf(b1, sizeof(b1), "%s ago",
			 fmt_age(b2, sizeof(b2), now > active ? now - active : 0));
		tb_cell(t, "%s", VOL(b1));
		tb_cell(t, "%s", phase_name(phase));
		tb_cell(t, "%" PRIu64, ns_load_relaxed(&sl->retire_count));
		tb_cell(t, "%u", cached_chunks(sl));
		tb_cell(t, "%" PRIu64, ns_load_relaxed(&sl->gets));
		tb_cell(t, "%" PRIu64, ns_load_relaxed(&sl->hits));
		tb_cell(t, "%" PRIu64, ns_load_relaxed(&sl->misses));
		tb_cell(t, "%" PRIu64, ns_load_relaxed(&sl->sets));
		tb_cell(t, "%" PRIu64, ns_load_relaxed(&sl->dels));
		tb_cell(t, "%" PRIu64, ns_load_relaxed(&sl->evictions));
	}
	if (a->json) {
		j_close(&j, ']');
		j_close(&j, '}');
		j_end(&j);
	} else {
		tb_print(t, stdout, "");
		tb_free(t);
	}
	ns_detach(c);
	return EX_OK;
}

/* ---- spaces, clear -------------------------------------------------------- */

int cmd_spaces(struct args *a)
{
	static const char *const heads[] = { "ID", "PREFIX", "GENERATION", "ITEMS", "BYTES",
					     "DEFAULT TTL", "QUOTA" };
	struct ns_space_info *sp;
	size_t n;
	ns_cache *c;
	int r = open_segment(a->argv[0], false, &c);

	if (r)
		return r;
	r = space_infos(c, NULL, &sp, &n);
	if (r) {
		ns_detach(c);
		return r;
	}
	if (a->json) {
		struct json j;

		j_init(&j, stdout, true);
		j_open(&j, NULL, '{');
		j_str(&j, "name", c->name);
		j_open(&j, "spaces", '[');
		for (size_t i = 0; i < n; i++) {
			j_open(&j, NULL, '{');
			j_u64(&j, "id", sp[i].id);
			j_bytes(&j, "prefix", sp[i].prefix, strlen(sp[i].prefix));
			j_u64(&j, "generation", sp[i].generation);
			j_u64(&j, "items", sp[i].items);
			j_u64(&j, "bytes", sp[i].bytes);
			j_u64(&j, "default_ttl_ms", sp[i].default_ttl_ms);
			j_u64(&j, "quota_bytes", sp[i].quota_bytes);
			j_close(&j, '}');
		}
		j_close(&j, ']');
		j_close(&j, '}');
		j_end(&j);
	} else {
		struct table *t = tb_new(heads, "rlrrrrr");
		char b[48];

		for (size_t i = 0; i < n; i++) {
			tb_cell(t, "%" PRIu32, sp[i].id);
			tb_escaped(t, sp[i].prefix, strlen(sp[i].prefix));
			tb_cell(t, "%" PRIu32, sp[i].generation);
			tb_cell(t, "%" PRIu64, sp[i].items);
			tb_cell(t, "%s", fmt_bytes(b, sizeof(b), sp[i].bytes));
			tb_cell(t, "%s", sp[i].default_ttl_ms ?
				fmt_age(b, sizeof(b), sp[i].default_ttl_ms) : "none");
			tb_cell(t, "%s", sp[i].quota_bytes ?
				fmt_bytes(b, sizeof(b), sp[i].quota_bytes) : "none");
		}
		tb_print(t, stdout, "");
		tb_free(t);
	}
	free(sp);
	ns_detach(c);
	return EX_OK;
}

int cmd_clear(struct args *a)
{
	struct ns_space_info in;
	ns_space *s;
	ns_cache *c;
	int r = open_segment(a->argv[0], true, &c);

	if (r)
		return r;
	r = open_space(c, a->argv[1], false, &s);
	if (r == EX_OK) {
		int err = ns_space_clear(s);
		if (err) {
			r = fail_ns(err, a->argv[1]);
		} else {
			ns_space_info(s, &in);
			printf("cleared namespace %s (generation %" PRIu32 ")\n", a->argv[1],
			       in.generation);
		}
	}
	ns_detach(c);
	return r;
}
