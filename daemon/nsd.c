/*
 * nsd - the janitor daemon of one NameStore segment.
 *
 * Clients never need it: they expire lazily, reclaim their own retired
 * chunks, and recover a dead client when they trip over it (rule 7).  nsd
 * does the same work in the background so that nobody has to trip first:
 * every tick it
 *
 *   - writes its heartbeat into the header,
 *   - recovers the slots of dead clients (finishing or undoing their write,
 *     releasing their locks, taking back their chunk caches and retire
 *     lists), and logs what it found,
 *   - runs the adaptive active-expiry cycle within its CPU budget,
 *   - advances the epoch and pays the membarrier, publishing the reader
 *     floor so that clients free their retired chunks without a fence or
 *     a scan of their own,
 *   - moves a slab page to a class that is failing or evicting from one
 *     that is not, when the value-size mix shifts (janitor.c),
 *   - and, when recovery asked for it, runs the allocator audit (with
 *     clients attached too: see recover.c).
 *
 * One nsd per segment: the janitor lock in the segment file says who it is;
 * a second nsd refuses to start.  SIGTERM and SIGINT stop it between two
 * ticks, leaving the segment intact; SIGHUP re-reads the config file.  A
 * killed nsd leaves nothing to clean up: everything it was doing is an
 * ordinary client operation, recovered like any other.
 *
 * Configuration: command-line options, or the same settings as
 * "key = value" lines in the file given by --config (options win).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "ns_internal.h"

enum { L_ERR, L_WARN, L_INFO, L_DEBUG };
static const char *const level_names[] = { "error", "warning", "info", "debug" };

struct cfg {
	char segment[NS_NAME_MAX + 1];
	bool create;
	uint64_t size;
	uint64_t items;
	unsigned tick_ms;       /* length of one tick */
	unsigned cpu_pct;       /* expiry budget: percent of one core */
	unsigned rebalance_ms;  /* how often to consider moving a page; 0 never */
	bool rebalance_exercise; /* move one anyway each time (for the torture) */
	int level;              /* log messages up to this level */
	bool syslog;
	bool foreground;
	char config[PATH_MAX];
	/* which settings came from the command line (they beat the file) */
	unsigned set_by_cli;
};

enum { S_SEGMENT = 1, S_SIZE = 2, S_ITEMS = 4, S_TICK = 8, S_CPU = 16,
       S_LEVEL = 32, S_CREATE = 64, S_SYSLOG = 128, S_REBAL = 256 };

static struct cfg cfg = {
	.tick_ms = 100,
	.cpu_pct = 10,
	.rebalance_ms = 1000,
	.level = L_INFO,
};
/* Defaults plus the command line: what a reload starts from, so that a
 * setting removed from the file goes back to its default. */
static struct cfg cli_cfg;

static volatile sig_atomic_t stop_sig, reload_sig;

static void logmsg(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void logmsg(int level, const char *fmt, ...)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	va_list ap;

	if (level > cfg.level)
		return;
	va_start(ap, fmt);
	if (cfg.syslog) {
		vsyslog(prio[level], fmt, ap);
	} else {
		fprintf(stderr, "nsd[%d] %s: ", (int)getpid(), level_names[level]);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	}
	va_end(ap);
}

static void on_signal(int sig)
{
	if (sig == SIGHUP)
		reload_sig = 1;
	else
		stop_sig = sig;
}

/* "1g", "512m", "64k", or bytes. */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -1;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	default: break;
	}
	if (*end != '\0')
		return -1;
	*out = v;
	return 0;
}

static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end != '\0' || v < lo || v > hi)
		return -1;
	*out = (unsigned)v;
	return 0;
}

static int parse_level(const char *s, int *out)
{
	for (int i = 0; i <= L_DEBUG; i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = i;
			return 0;
		}
	}
	return -1;
}

static int parse_bool(const char *s, bool *out)
{
	if (strcmp(s, "yes") == 0 || strcmp(s, "true") == 0 || strcmp(s, "1") == 0)
		*out = true;
	else if (strcmp(s, "no") == 0 || strcmp(s, "false") == 0 || strcmp(s, "0") == 0)
		*out = false;
	else
		return -1;
	return 0;
}

/* The settings, by name: how to parse each and where it goes. */
enum kind { K_NAME, K_SIZE, K_UINT, K_LEVEL, K_BOOL };
static const struct setting {
	const char *name;
	unsigned bit;           /* S_*: set on the command line, the file yields */
	enum kind kind;
	size_t off;             /* offsetof(struct cfg, field) */
	unsigned lo, hi;        /* K_UINT bounds */
} settings[] = {
	{ "segment", S_SEGMENT, K_NAME, offsetof(struct cfg, segment), 0, 0 },
	{ "size", S_SIZE, K_SIZE, offsetof(struct cfg, size), 0, 0 },
	{ "items", S_ITEMS, K_SIZE, offsetof(struct cfg, items), 0, 0 },
	{ "tick_ms", S_TICK, K_UINT, offsetof(struct cfg, tick_ms), 1, 60000 },
	{ "cpu_percent", S_CPU, K_UINT, offsetof(struct cfg, cpu_pct), 1, 100 },
	{ "rebalance_ms", S_REBAL, K_UINT, offsetof(struct cfg, rebalance_ms), 0, 3600000 },
	{ "log_level", S_LEVEL, K_LEVEL, offsetof(struct cfg, level), 0, 0 },
	{ "create", S_CREATE, K_BOOL, offsetof(struct cfg, create), 0, 0 },
	{ "syslog", S_SYSLOG, K_BOOL, offsetof(struct cfg, syslog), 0, 0 },
};

/* Apply one setting KEY = VAL to C unless the command line set it (when
 * FROM_FILE; numbers are still checked).  Returns 0 or -1 with a message
 * in ERR. */
static int apply(struct cfg *c, const char *key, const char *val, bool from_file,
		 char *err, size_t errlen)
{
	const struct setting *st = NULL;
	uint64_t u64;
	unsigned u;
	bool b;
	int lvl, r;

	for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++)
		if (strcmp(key, settings[i].name) == 0)
			st = &settings[i];
	if (st == NULL) {
		snprintf(err, errlen, "unknown setting '%s'", key);
		return -1;
	}
	bool keep = from_file && (c->set_by_cli & st->bit);
	void *field = (char *)c + st->off;
	switch (st->kind) {
	case K_NAME:
		r = keep || strlen(val) <= NS_NAME_MAX ? 0 : -1;
		if (r == 0 && !keep)
			snprintf(field, sizeof(c->segment), "%s", val);
		break;
	case K_SIZE:
		r = parse_size(val, &u64);
		if (r == 0 && !keep)
			*(uint64_t *)field = u64;
		break;
	case K_UINT:
		r = parse_uint(val, st->lo, st->hi, &u);
		if (r == 0 && !keep)
			*(unsigned *)field = u;
		break;
	case K_LEVEL:
		r = parse_level(val, &lvl);
		if (r == 0 && !keep)
			*(int *)field = lvl;
		break;
	default:
		r = parse_bool(val, &b);
		if (r == 0 && !keep)
			*(bool *)field = b;
		break;
	}
	if (r != 0)
		snprintf(err, errlen, "bad value '%s' for %s", val, key);
	else if (!from_file)
		c->set_by_cli |= st->bit;
	return r;
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

/* Read PATH into C.  Lines: "key = value", '#' comments, blank lines. */
static int load_config(struct cfg *c, const char *path)
{
	char line[512], err[256];
	unsigned lineno = 0;
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		logmsg(L_ERR, "cannot open config %s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		char *s, *eq, *hash = strchr(line, '#');
		lineno++;
		if (hash)
			*hash = '\0'; /* comments, also after a value */
		s = trim(line);
		if (*s == '\0' || *s == '#')
			continue;
		eq = strchr(s, '=');
		if (eq == NULL) {
			logmsg(L_ERR, "%s:%u: expected 'key = value'", path, lineno);
			fclose(f);
			return -1;
		}
		*eq = '\0';
		if (apply(c, trim(s), trim(eq + 1), true, err, sizeof(err)) != 0) {
			logmsg(L_ERR, "%s:%u: %s", path, lineno, err);
			fclose(f);
			return -1;
		}
	}
	fclose(f);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: nsd --segment NAME [options]\n"
		"  -s, --segment NAME     segment to look after (/dev/shm/NAME)\n"
		"  -c, --create           create it if absent (with --size, --items)\n"
		"      --size BYTES       size of a new segment (k/m/g suffixes)\n"
		"      --items N          expected items of a new segment\n"
		"  -f, --config FILE      read settings (key = value) from FILE;\n"
		"                         command-line options win; SIGHUP re-reads it\n"
		"      --tick-ms MS       length of a tick (default 100)\n"
		"      --cpu-percent P    active-expiry budget, %% of one core (default 10)\n"
		"      --rebalance-ms MS  how often to consider moving a slab page to a\n"
		"                         class that needs it (default 1000; 0: never)\n"
		"      --rebalance-exercise  test aid: at each look move a page between\n"
		"                         two random classes, needed or not, giving\n"
		"                         up rather than evicting (the torture uses it)\n"
		"      --log-level L      error|warning|info|debug (default info)\n"
		"      --syslog           log to syslog instead of stderr\n"
		"  -F, --foreground       do not detach (for systemd, containers)\n"
		"  -h, --help             this text\n"
		"config keys: segment, create, size, items, tick_ms, cpu_percent,\n"
		"             rebalance_ms, log_level, syslog\n");
}

static int parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "segment", required_argument, NULL, 's' },
		{ "create", no_argument, NULL, 'c' },
		{ "size", required_argument, NULL, 'S' },
		{ "items", required_argument, NULL, 'I' },
		{ "config", required_argument, NULL, 'f' },
		{ "tick-ms", required_argument, NULL, 'T' },
		{ "cpu-percent", required_argument, NULL, 'P' },
		{ "rebalance-ms", required_argument, NULL, 'R' },
		{ "rebalance-exercise", no_argument, NULL, 'X' },
		{ "log-level", required_argument, NULL, 'L' },
		{ "syslog", no_argument, NULL, 'Y' },
		{ "foreground", no_argument, NULL, 'F' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char err[256];
	int o, r = 0;

	while ((o = getopt_long(argc, argv, "s:cf:Fh", opts, NULL)) != -1) {
		switch (o) {
		case 's': r = apply(&cfg, "segment", optarg, false, err, sizeof(err)); break;
		case 'c': r = apply(&cfg, "create", "yes", false, err, sizeof(err)); break;
		case 'S': r = apply(&cfg, "size", optarg, false, err, sizeof(err)); break;
		case 'I': r = apply(&cfg, "items", optarg, false, err, sizeof(err)); break;
		case 'T': r = apply(&cfg, "tick_ms", optarg, false, err, sizeof(err)); break;
		case 'P': r = apply(&cfg, "cpu_percent", optarg, false, err, sizeof(err)); break;
		case 'R': r = apply(&cfg, "rebalance_ms", optarg, false, err, sizeof(err)); break;
		case 'L': r = apply(&cfg, "log_level", optarg, false, err, sizeof(err)); break;
		case 'Y': r = apply(&cfg, "syslog", "yes", false, err, sizeof(err)); break;
		case 'F': cfg.foreground = true; break;
		case 'X': cfg.rebalance_exercise = true; break;
		case 'f':
			if (strlen(optarg) >= sizeof(cfg.config)) {
				fprintf(stderr, "nsd: config path too long\n");
				return 2;
			}
			strcpy(cfg.config, optarg);
			break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return 2;
		}
		if (r != 0) {
			fprintf(stderr, "nsd: %s\n", err);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "nsd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (cfg.config[0]) {
		/* Absolute, so that SIGHUP finds it after daemon() chdir'd. */
		char abs[PATH_MAX];
		if (realpath(cfg.config, abs) == NULL) {
			fprintf(stderr, "nsd: cannot open config %s: %s\n",
				cfg.config, strerror(errno));
			return 2;
		}
		snprintf(cfg.config, sizeof(cfg.config), "%s", abs);
	}
	cli_cfg = cfg;
	if (cfg.config[0] && load_config(&cfg, cfg.config) != 0)
		return 2;
	if (cfg.segment[0] == '\0') {
		fprintf(stderr, "nsd: no segment given (--segment NAME)\n");
		usage(stderr);
		return 2;
	}
	if (cfg.create && cfg.size == 0) {
		fprintf(stderr, "nsd: --create needs --size\n");
		return 2;
	}
	return 0;
}

/* SIGHUP: settings that can change while running. */
static void reload(void)
{
	struct cfg next = cli_cfg;

	if (cfg.config[0] == '\0') {
		logmsg(L_INFO, "SIGHUP: no config file to reload");
		return;
	}
	if (load_config(&next, cfg.config) != 0) {
		logmsg(L_WARN, "SIGHUP: config %s not applied", cfg.config);
		return;
	}
	if (strcmp(next.segment, cfg.segment) != 0)
		logmsg(L_WARN, "SIGHUP: the segment cannot change while running; "
		       "restart nsd to look after '%s'", next.segment);
	cfg.tick_ms = next.tick_ms;
	cfg.cpu_pct = next.cpu_pct;
	cfg.rebalance_ms = next.rebalance_ms;
	cfg.level = next.level;
	logmsg(L_INFO, "config reloaded: tick_ms=%u cpu_percent=%u rebalance_ms=%u log_level=%s",
	       cfg.tick_ms, cfg.cpu_pct, cfg.rebalance_ms, level_names[cfg.level]);
}

static const char *phase_name(uint32_t p)
{
	static const char *const n[] = { "none", "built", "locked", "published", "unlocked" };
	return p < sizeof(n) / sizeof(n[0]) ? n[p] : "?";
}

/* Recover every dead client, logging what each one left behind. */
static unsigned recover_dead(ns_cache *c, struct ns_thr *t)
{
	unsigned n = 0;

	for (uint32_t i = 0; i < c->nslots; i++) {
		struct ns_slot_shm *s = &c->slots[i];
		unsigned cached = 0;

		if (i == t->idx || ns_load_relaxed(&s->state) == NS_SLOT_FREE ||
		    ns__slot_alive(c, t->fd, i) != 0)
			continue;
		/* What is there before recovery touches it, for the log. */
		uint32_t state = ns_load_relaxed(&s->state);
		int32_t pid = s->pid;
		uint32_t phase = s->in_phase;
		uint64_t bucket = s->in_bucket, retired = s->retire_count;
		bool held = bucket && bucket - 1 <= c->mask &&
			    ns_load_relaxed(&c->buckets[bucket - 1].lock) == i + 1;
		for (int k = 0; k < NS_MAX_CLASSES; k++)
			cached += s->cache_n[k] < NS_SLOT_CACHE ? s->cache_n[k] : NS_SLOT_CACHE;
		int r = ns__recover_slot(c, t, i);
		if (r <= 0)
			continue;
		n++;
		if (state == NS_SLOT_ORPHAN && phase == NS_PH_NONE && !held && cached == 0) {
			logmsg(L_DEBUG, "slot %u: reclaimed the retire list of a detached client", i);
			continue;
		}
		logmsg(L_INFO, "recovered slot %u of dead pid %d: intent %s%s, "
		       "%s, %u cached chunks returned, %" PRIu64 " retired chunks taken over%s",
		       i, pid, phase_name(phase),
		       phase != NS_PH_NONE ? " (finished or undone)" : "",
		       held ? "bucket lock released" : "no lock held", cached, retired,
		       ns_load_relaxed(&s->state) == NS_SLOT_ORPHAN ?
		       " (some still in a grace period)" : "");
	}
	return n;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	/* EINTR: a signal came; the loop looks at it. */
	nanosleep(&ts, NULL);
}

static int run(void)
{
	struct ns_attach_opts o = { 0 };
	struct ns_expire_stats st = { 0 };
	struct ns_rebalance rb = { .page = -1 };
	uint64_t ticks = 0, last_report = 0, last_audit = 0;
	ns_cache *c;
	struct ns_thr *t;
	int err = 0, holder = 0;

	if (cfg.create) {
		o.flags = NS_CREATE;
		o.size = cfg.size;
		o.max_items = cfg.items;
	}
	err = ns_attach(cfg.segment, cfg.create ? &o : NULL, &c);
	if (err) {
		logmsg(L_ERR, "cannot attach segment '%s': %s", cfg.segment, ns_strerror(err));
		return 1;
	}
	err = ns__janitor_lock(c, &holder);
	if (err == NS_EBUSY) {
		logmsg(L_ERR, "segment '%s' already has a janitor (nsd pid %d); "
		       "only one nsd may run per segment", cfg.segment, holder);
		ns_detach(c);
		return 1;
	}
	if (err) {
		logmsg(L_ERR, "cannot take the janitor lock: %s", ns_strerror(err));
		ns_detach(c);
		return 1;
	}
	t = ns__thr(c, &err);
	if (t == NULL) {
		logmsg(L_ERR, "no client slot: %s", ns_strerror(err));
		ns_detach(c);
		return 1;
	}
	/* Page moves a killed nsd left halfway (chunks move: a write
	 * section, for an audit another process may run). */
	ns__wsec_enter(c, t->slot);
	ns__pages_resume(c);
	ns__wsec_exit(t->slot);
	logmsg(L_INFO, "janitor of segment '%s' (%zu MiB, %" PRIu64 " buckets), "
	       "tick %u ms, expiry budget %u%% of a core",
	       cfg.segment, c->size >> 20, c->mask + 1, cfg.tick_ms, cfg.cpu_pct);

	while (!stop_sig) {
		if (reload_sig) {
			reload_sig = 0;
			reload();
		}
		ns__janitor_beat(c);
		/* nsd moves chunks too (expiry, page moves, sifting): inside
		 * a write section, for an audit another process may run. */
		ns__wsec_enter(c, t->slot);
		recover_dead(c, t);
		uint64_t budget = (uint64_t)cfg.tick_ms * 1000u * cfg.cpu_pct / 100u;
		err = ns__expire_cycle(c, t, budget, &st);
		if (err && err != NS_EBUSY)
			logmsg(L_WARN, "expiry cycle: %s", ns_strerror(err));
		/* The one membarrier of the tick, for every client. */
		ns__janitor_floor(c);
		if (t->slot->retire_count)
			ns__reclaim_cheap(c, t);
		if (cfg.rebalance_ms) {
			rb.interval_ms = cfg.rebalance_ms;
			rb.exercise = cfg.rebalance_exercise;
			err = ns__rebalance(c, t, &rb);
			if (err == 1)
				logmsg(L_INFO, "moved a page from class %d (%u B) to class %d (%u B); "
				       "%" PRIu64 " moved so far", rb.last_from,
				       c->classes[rb.last_from].size, rb.last_to,
				       c->classes[rb.last_to].size, rb.moved);
			else if (err == 2)
				logmsg(L_WARN, "gave up moving a page of class %d: a chunk "
				       "stayed in use past the time limit", rb.from);
			else if (err < 0)
				logmsg(L_WARN, "page move: %s", ns_strerror(err));
		}
		ns__wsec_exit(t->slot);
		/* Live clients or not (the audit's handshake makes it safe),
		 * at most once a second: a busy client can make it give up. */
		if (ns_load_relaxed(&c->hdr->audit_wanted) &&
		    ticks - last_audit >= 1000u / cfg.tick_ms + 1) {
			last_audit = ticks;
			int64_t n = ns__audit(c);
			if (n >= 0)
				logmsg(L_INFO, "audit: %" PRId64 " lost chunks returned to the free lists", n);
			else if (n == NS_EBUSY)
				logmsg(L_DEBUG, "audit: a client stayed inside a write; will retry");
			else
				logmsg(L_WARN, "audit: %s", ns_strerror((int)n));
		}
		ticks++;
		if (ticks - last_report >= 600u * 1000u / cfg.tick_ms) {
			last_report = ticks;
			logmsg(L_INFO, "expired %" PRIu64 " items in %" PRIu64 " ms of cycles",
			       st.expired, st.us / 1000u);
		}
		sleep_ms(cfg.tick_ms);
	}
	logmsg(L_INFO, "stopping on signal %d; expired %" PRIu64 " items in %" PRIu64
	       " ms of cycles; the segment stays", (int)stop_sig, st.expired, st.us / 1000u);
	ns__wsec_enter(c, t->slot);
	if (rb.page >= 0)
		ns__page_move_abort(c, (uint32_t)rb.page);
	if (t->slot->retire_count)
		ns__reclaim(c, t);
	ns__wsec_exit(t->slot);
	/* Clients go back to paying for their own grace periods. */
	ns_store_relaxed(&c->hdr->safe_epoch, 0ull);
	ns_store_relaxed(&c->hdr->janitor_pid, 0);
	ns_detach(c); /* closes the descriptor: the janitor lock goes with it */
	return 0;
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_signal };
	int r = parse_args(argc, argv);

	if (r)
		return r;
	if (cfg.syslog)
		openlog("nsd", LOG_PID, LOG_DAEMON);
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: a signal cuts the tick's sleep short. */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (!cfg.foreground && daemon(0, cfg.syslog ? 0 : 1) != 0) {
		logmsg(L_ERR, "cannot detach: %s", strerror(errno));
		return 1;
	}
	return run();
}
