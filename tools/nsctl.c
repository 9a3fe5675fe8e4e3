/*
 * nsctl - inspect and operate NameStore segments from the shell.
 *
 * This file holds the command table (each command's usage, help and JSON
 * shape live in one entry, so `nsctl help CMD`, `nsctl CMD --help` and the
 * README cannot drift from what is parsed), the command line parser, the
 * exit codes, and attaching a segment.  The commands are in segments.c
 * (create, destroy, list, info, verify), report.c (stats, clients, spaces,
 * clear) and keys.c (keys, get, set, del, ttl, expire).
 *
 * Safety.  The reporting commands map the segment read-only (NS_RDONLY), so
 * looking can never damage it, and they read it like any other untrusted
 * input: every offset they follow is checked and every walk bounded (the
 * library's read paths, and the census of lib/inspect.c).  A segment whose
 * file shrinks under the mapping would raise SIGBUS on the next access; the
 * handler turns that into exit status 3 with a message.  Attaching waits at
 * most ATTACH_WAIT_MS for a creator that is still initializing, instead of
 * the library's unbounded wait, so a stopped creator cannot hang nsctl.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nsctl.h"

bool nsctl_stable;

#define ATTACH_WAIT_MS 2000 /* a creator initializes in milliseconds; far longer means it is stopped */

/* ---- the command table --------------------------------------------------- */

#define JSON_NOTE "With --json, one JSON document on stdout:\n"

static int cmd_help(struct args *a);

static const struct cmd cmds[] = {
	{ "create", "NAME --size BYTES [--items N] [--mode MODE]",
	  "create a segment",
	  "Create segment /dev/shm/NAME of BYTES bytes with an index sized for N\n"
	  "items and file permissions MODE.  All of its memory is allocated now, so\n"
	  "a full /dev/shm fails here and never later.  Fails if NAME exists.\n"
	  "options:\n"
	  "  --size BYTES  segment size; suffixes k, m, g, t (powers of 1024)\n"
	  "  --items N     expected number of items; same suffixes\n"
	  "                (default: one per 256 bytes of BYTES)\n"
	  "  --mode MODE   permissions, octal (default 0600)\n"
	  "exit: 0 created; 1 exists or no room in /dev/shm; 2 usage.\n",
	  O_SIZE | O_ITEMS | O_MODE, 1, 1, cmd_create },
	{ "destroy", "NAME [--force]",
	  "remove a segment's name",
	  "Remove the name /dev/shm/NAME.  Processes still attached keep using the\n"
	  "segment until they detach, and its memory is freed then.  A file that\n"
	  "does not start with the NameStore magic number is refused unless\n"
	  "--force is given.\n"
	  "exit: 0 removed; 1 not a segment; 3 no such segment or permission denied.\n",
	  O_FORCE, 1, 1, cmd_destroy },
	{ "list", "[PATTERN] [--json]",
	  "the segments on this host",
	  "The files of /dev/shm that start with the NameStore magic number, sorted\n"
	  "by name, with their size and status; PATTERN, a shell glob, keeps the\n"
	  "matching names.  STATUS is \"ok\" (attachable) or why not: initializing,\n"
	  "incompatible format version N, incompatible layout, retired, corrupt\n"
	  "(with the reason).  CLIENTS counts the live client slots of attachable\n"
	  "segments.  Files this user may not read cannot be checked and are not\n"
	  "shown.\n"
	  JSON_NOTE
	  "  {\"segments\": [{\"name\", \"size\", \"valid\", \"status\",\n"
	  "                 \"clients\" (null when not valid)}]}\n",
	  O_JSON, 0, 1, cmd_list },
	{ "info", "NAME [--json]",
	  "header, layout, geometry, janitor",
	  "The header of segment NAME: format version, layout fingerprint, size and\n"
	  "creation time, the byte offset of every table, the index (buckets,\n"
	  "overflow buckets claimed and linked, longest chain, locks held), the slab\n"
	  "(classes, pages, page size), client slots, namespaces, the epoch, and the\n"
	  "janitor: its pid, the age of its last heartbeat, and whether one is alive\n"
	  "(a live process holds the janitor lock).\n"
	  JSON_NOTE
	  "  {\"name\", \"format_version\", \"layout_fingerprint\" (hex string),\n"
	  "   \"hash_id\", \"state\", \"size\", \"created_ms\",\n"
	  "   \"layout\": {\"header\", \"slots\", \"spaces\", \"flights\", \"classes\",\n"
	  "              \"pages\", \"audit_map\", \"index\", \"overflow\", \"data\"} (byte offsets),\n"
	  "   \"index\": {\"buckets\", \"overflow_buckets\", \"overflow_claimed\",\n"
	  "             \"overflow_linked\", \"longest_chain\", \"locked\"},\n"
	  "   \"slab\": {\"classes\", \"pages\", \"pages_in_use\", \"page_size\",\n"
	  "            \"smallest_chunk\", \"largest_chunk\"},\n"
	  "   \"slots\": {\"total\", \"in_use\", \"alive\"},\n"
	  "   \"spaces\": {\"total\", \"in_use\"},\n"
	  "   \"epoch\", \"recoveries\", \"audit_wanted\",\n"
	  "   \"janitor\": {\"alive\", \"pid\", \"last_beat_ms\" (0: never),\n"
	  "               \"beat_age_ms\" (null: never), \"expired\"}}\n",
	  O_JSON, 1, 1, cmd_info },
	{ "stats", "NAME [--space ROOT:DOMAIN] [--watch [SECONDS]] [--json]",
	  "counters, hit ratio, memory per slab class",
	  "Counters and memory of segment NAME: the totals (items, bytes, hit ratio,\n"
	  "gets, hits, misses, sets, deletes, evictions, expirations), each\n"
	  "namespace, the client slots' own counters (since each slot was claimed),\n"
	  "and memory per slab class: pages, chunk size, chunks carved, in use\n"
	  "(carved less free, parked and cached) and free, the items stored and\n"
	  "their bytes, and the waste (chunk bytes less item bytes).  Counts taken\n"
	  "while clients write are estimates.\n"
	  "options:\n"
	  "  --space ROOT:DOMAIN  that namespace only: its counters, and its items\n"
	  "                       in the class table\n"
	  "  --watch [SECONDS]    refresh every SECONDS (default 2, fractions\n"
	  "                       allowed) until SIGINT, like top; with --json one\n"
	  "                       document per line\n"
	  JSON_NOTE
	  "  {\"name\", \"space\" (null: all),\n"
	  "   \"totals\": {\"items\", \"bytes\", \"gets\", \"hits\", \"misses\",\n"
	  "              \"hit_ratio\" (hits/gets, null before any get), \"sets\",\n"
	  "              \"deletes\", \"evictions\", \"expirations\"},\n"
	  "   \"janitor_expired\",\n"
	  "   \"evictions_by_cause\" (all namespaces): {\"allocation\" (a store out\n"
	  "              of memory), \"page_move\" (nsd giving a page to another\n"
	  "              class), \"index_full\" (the key's index chain was full),\n"
	  "              \"quota\", \"rescued\" (items a page move copied instead)},\n"
	  "   \"clients\": {\"slots\", \"gets\", \"hits\", \"misses\", \"sets\",\n"
	  "               \"deletes\", \"evictions\"},\n"
	  "   \"spaces\": [{\"id\", \"prefix\", \"generation\", \"items\", \"bytes\",\n"
	  "               \"gets\", \"hits\", \"misses\", \"hit_ratio\", \"sets\",\n"
	  "               \"deletes\", \"evictions\", \"expirations\",\n"
	  "               \"default_ttl_ms\", \"quota_bytes\"}],\n"
	  "   \"classes\": [{\"class\", \"chunk_size\", \"pages\", \"chunks\", \"carved\",\n"
	  "                \"used\", \"free\", \"parked\", \"cached\", \"retired\",\n"
	  "                \"items\", \"dead_items\", \"item_bytes\", \"waste_bytes\",\n"
	  "                \"evictions\", \"move_evictions\", \"rescues\", \"enomem\"}],\n"
	  "   \"memory\": {\"data_bytes\", \"pages\", \"pages_in_use\",\n"
	  "              \"chunk_bytes_used\", \"item_bytes\", \"waste_bytes\"}}\n"
	  "\"classes\" lists the classes with pages (with --space, those holding its\n"
	  "items); with --space, items, item bytes and waste count its items only.\n",
	  O_JSON | O_SPACE | O_WATCH, 1, 1, cmd_stats },
	{ "clients", "NAME [--json]",
	  "attached client slots",
	  "The client slots of segment NAME that are not free: index, pid and\n"
	  "command name of the process that claimed it, alive (a live process\n"
	  "holds the slot's lock) or dead (waiting for recovery), state (active,\n"
	  "or orphan: a detached client's retired chunks wait out a grace period),\n"
	  "whether it is inside a read section and at which epoch, how many times\n"
	  "it was claimed and when last, when it last did an operation (to the\n"
	  "second), its write intent, its retired and cached chunks, and its\n"
	  "counters since the claim.\n"
	  JSON_NOTE
	  "  {\"name\", \"clients\": [{\"slot\", \"state\", \"alive\" (null: unknown),\n"
	  "     \"pid\", \"comm\", \"claims\", \"attach_ms\", \"active_ms\", \"in_read\",\n"
	  "     \"epoch\" (0: not reading), \"intent\", \"retired\", \"retired_bytes\",\n"
	  "     \"cached\", \"gets\", \"hits\", \"misses\", \"sets\", \"deletes\",\n"
	  "     \"evictions\"}]}\n",
	  O_JSON, 1, 1, cmd_clients },
	{ "spaces", "NAME [--json]",
	  "namespaces and their settings",
	  "The namespaces of segment NAME: id, prefix, generation (bumped by each\n"
	  "clear), items and bytes stored, default TTL and memory quota.\n"
	  JSON_NOTE
	  "  {\"name\", \"spaces\": [{\"id\", \"prefix\", \"generation\", \"items\",\n"
	  "     \"bytes\", \"default_ttl_ms\", \"quota_bytes\"}]}\n",
	  O_JSON, 1, 1, cmd_spaces },
	{ "clear", "NAME ROOT:DOMAIN",
	  "empty a namespace in constant time",
	  "Empty namespace ROOT:DOMAIN of segment NAME: its generation is bumped, so\n"
	  "every item stored before reads as absent at once; the memory comes back\n"
	  "lazily (writers, eviction, nsd).\n"
	  "exit: 0 cleared; 1 no such namespace.\n",
	  0, 2, 2, cmd_clear },
	{ "keys", "NAME ROOT:DOMAIN [PATTERN] [--json]",
	  "list keys, never blocking writers",
	  "The keys of namespace ROOT:DOMAIN that match the shell glob PATTERN (all\n"
	  "without one), one per line, in index order.  Built on ns_scan over a\n"
	  "read-only mapping: it takes no lock and never blocks a writer; a key\n"
	  "present for the whole scan is listed, keys added or removed meanwhile\n"
	  "may or may not be.  Bytes that are not printable ASCII are shown as\n"
	  "\\xNN and a backslash as \\\\.\n"
	  JSON_NOTE
	  "  {\"name\", \"space\", \"keys\": [key...], \"count\"}\n"
	  "exit: 0 listed (even none); 1 no such namespace.\n",
	  O_JSON, 2, 3, cmd_keys },
	{ "get", "NAME ROOT:DOMAIN KEY [--json]",
	  "write a value to stdout, raw",
	  "Write the value of KEY to stdout byte for byte, with nothing added\n"
	  "(binary-safe).\n"
	  JSON_NOTE
	  "  {\"key\", \"value\", \"vlen\", \"flags\", \"version\", \"created_ms\",\n"
	  "   \"expire_ms\" (0: never), \"ttl_ms\" (the TTL it was stored with; 0 none)}\n"
	  "exit: 0 found; 1 not found.\n",
	  O_JSON, 3, 3, cmd_get },
	{ "set", "NAME ROOT:DOMAIN KEY [VALUE|-] [--ttl MS] [--flags N]",
	  "store a value",
	  "Store VALUE under KEY, creating the namespace if it does not exist.\n"
	  "Without VALUE, or with \"-\", the value is read from stdin byte for byte\n"
	  "(binary-safe).  Put \"--\" before a KEY or VALUE that starts with '-'.\n"
	  "options:\n"
	  "  --ttl MS     time to live in ms; 0 (the default) means the\n"
	  "               namespace's default TTL; \"never\" means no expiry\n"
	  "  --flags N    32-bit user flags stored with the value (decimal, 0x hex)\n"
	  "exit: 0 stored; 1 not stored (too large, no memory left).\n",
	  O_TTL | O_FLAGS, 3, 4, cmd_set },
	{ "del", "NAME ROOT:DOMAIN KEY",
	  "remove a key",
	  "Remove KEY from namespace ROOT:DOMAIN.\n"
	  "exit: 0 removed; 1 not found.\n",
	  0, 3, 3, cmd_del },
	{ "ttl", "NAME ROOT:DOMAIN KEY [--json]",
	  "the time a key has left",
	  "The time KEY has left (\"N ms\", or \"no expiry\"), and the TTL it was\n"
	  "stored with.\n"
	  JSON_NOTE
	  "  {\"key\", \"ttl_ms\" (-1: no expiry), \"stored_ttl_ms\" (0: none),\n"
	  "   \"expire_ms\" (0: never)}\n"
	  "exit: 0 found; 1 not found.\n",
	  O_JSON, 3, 3, cmd_ttl },
	{ "expire", "NAME ROOT:DOMAIN KEY MS",
	  "set the time a key has left",
	  "Make KEY expire MS milliseconds from now (0: now, which removes it).\n"
	  "The value and its version are unchanged.\n"
	  "exit: 0 done; 1 not found.\n",
	  0, 4, 4, cmd_expire },
	{ "verify", "NAME [--json]",
	  "consistency check",
	  "The consistency check of segment NAME: walks the index, the free and park\n"
	  "lists, and every client slot's chunk cache, retire list and intent, and\n"
	  "accounts for every carved chunk (reachable, free, cached, retired, in\n"
	  "flight).  A chunk held twice or by nothing (leaked), a reference that is\n"
	  "not a chunk, an item whose lengths or namespace are impossible, or a\n"
	  "broken chain or list is a problem.  The check is exact only while no\n"
	  "client writes: with live clients a failed check is run again (up to 3\n"
	  "times) and reported only if it fails every time.\n"
	  JSON_NOTE
	  "  {\"name\", \"clean\", \"live_clients\", \"chunks\", \"reachable\", \"free\",\n"
	  "   \"cached\", \"retired\", \"in_flight\", \"leaked\", \"doubled\", \"bad_refs\",\n"
	  "   \"locked\", \"bad_items\", \"bad_chains\", \"bad_lists\",\n"
	  "   \"first_error\" (null when clean)}\n"
	  "exit: 0 clean; 1 problems found (the report says which).\n",
	  O_JSON, 1, 1, cmd_verify },
	{ "help", "[COMMAND]",
	  "this text, or a command's",
	  "Without COMMAND, the list of commands; with one, its usage, options,\n"
	  "JSON shape and exit codes (the same as `nsctl COMMAND --help`).\n",
	  0, 0, 1, cmd_help },
};

#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))

const struct cmd *nsctl_find_cmd(const char *name)
{
	for (size_t i = 0; i < NCMDS; i++)
		if (strcmp(cmds[i].name, name) == 0)
			return &cmds[i];
	return NULL;
}

static void usage_top(FILE *f)
{
	fprintf(f, "usage: nsctl COMMAND [ARGS] [OPTIONS]\n"
		   "Inspect and operate NameStore segments (/dev/shm/NAME).\n\n"
		   "commands:\n");
	for (size_t i = 0; i < NCMDS; i++)
		fprintf(f, "  %-8s %s\n", cmds[i].name, cmds[i].summary);
	fprintf(f,
		"\n"
		"The reporting commands (list info stats clients spaces keys get ttl\n"
		"verify) map the segment read-only, so they cannot damage it, and work\n"
		"while clients run, without nsd, and on segments left by crashed\n"
		"processes.  They take --json: one JSON document on stdout whose shape\n"
		"`nsctl help COMMAND` gives.  JSON strings carry bytes: each byte that\n"
		"is not printable ASCII is written \\u00XX (code point = byte value).\n"
		"Sizes are in bytes in JSON, times in ms since the epoch (UTC).\n\n"
		"exit status: 0 ok; 1 the operation failed (key not found, verify found\n"
		"problems); 2 usage error; 3 segment missing, permission denied,\n"
		"incompatible format or layout, or corrupt.  Messages go to stderr.\n\n"
		"`nsctl help COMMAND` or `nsctl COMMAND --help`: usage of a command.\n");
}

static void usage_cmd(FILE *f, const struct cmd *c)
{
	fprintf(f, "usage: nsctl %s %s\n%s", c->name, c->synopsis, c->help);
}

static int cmd_help(struct args *a)
{
	const struct cmd *c;

	if (a->argc == 0) {
		usage_top(stdout);
		return EX_OK;
	}
	c = nsctl_find_cmd(a->argv[0]);
	if (c == NULL) {
		errmsg("unknown command '%s' (see 'nsctl help')", a->argv[0]);
		return EX_USAGE;
	}
	usage_cmd(stdout, c);
	return EX_OK;
}

/* ---- messages and errors -------------------------------------------------- */

void errmsg(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("nsctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int fail_ns(int err, const char *what)
{
	errmsg("%s: %s", what, ns_strerror(err));
	switch (err) {
	case NS_ENOENT:
	case NS_EVERSION:
	case NS_ECORRUPT:
		return EX_SEGMENT;
	case NS_EINVAL:
		return EX_USAGE;
	default:
		if (err == ns__errno(EACCES) || err == ns__errno(EPERM))
			return EX_SEGMENT;
		return EX_FAIL;
	}
}

static void on_sigbus(int sig)
{
	static const char m[] = "nsctl: the segment file shrank while it was "
				"being read (SIGBUS)\n";
	(void)sig;
	if (write(STDERR_FILENO, m, sizeof(m) - 1) < 0) {
		/* Nothing left to tell anyone. */
	}
	_exit(EX_SEGMENT);
}

/* ---- attaching ----------------------------------------------------------- */

/* Wait, at most ATTACH_WAIT_MS, while a creator holds the init lock of
 * PATH: ns_attach() would wait for it without a bound. */
static int wait_created(const char *name, const char *path)
{
	int fd = shm_open(path, O_RDONLY | O_CLOEXEC, 0);

	if (fd < 0) {
		/* Permission to read is all a read-only attach needs; a
		 * read-write one finds out from ns_attach. */
		if (errno == EACCES)
			return 0;
		return fail_ns(errno == ENOENT ? NS_ENOENT : ns__errno(errno), name);
	}
	for (int waited = 0;; waited += 10) {
		struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET,
				    .l_start = NS_LOCK_INIT, .l_len = 1 };
		if (fcntl(fd, F_OFD_GETLK, &fl) < 0 || fl.l_type == F_UNLCK)
			break;
		if (waited >= ATTACH_WAIT_MS) {
			close(fd);
			errmsg("%s: still being created after %d ms (is its creator stopped?)",
			       name, ATTACH_WAIT_MS);
			return EX_SEGMENT;
		}
		usleep(10000);
	}
	close(fd);
	return 0;
}

int open_segment(const char *name, bool rw, ns_cache **out)
{
	struct ns_attach_opts o = { .flags = rw ? 0 : NS_RDONLY };
	char path[NS_NAME_MAX + 2];
	int err;

	if (!ns__valid_name(name, NS_NAME_MAX)) {
		errmsg("'%s' is not a segment name (letters, digits, '.', '_', '-'; "
		       "at most %d)", name, NS_NAME_MAX);
		return EX_USAGE;
	}
	snprintf(path, sizeof(path), "/%s", name);
	err = wait_created(name, path);
	if (err)
		return err;
	err = ns_attach(name, &o, out);
	if (err)
		return fail_ns(err, name);
	return EX_OK;
}

/* Whether C has namespace PREFIX, found without creating it. */
static bool space_exists(ns_cache *c, const char *prefix)
{
	struct ns_space_info *all;
	size_t n = 0;
	bool found = false;

	if (ns_space_list(c, NULL, 0, &n) != 0)
		return false;
	all = calloc(n + 1, sizeof(*all));
	if (all && ns_space_list(c, all, n + 1, &n) == 0)
		for (size_t i = 0; i < n && !found; i++)
			found = strcmp(all[i].prefix, prefix) == 0;
	free(all);
	return found;
}

int open_space(ns_cache *c, const char *prefix, bool create, ns_space **out)
{
	int err;

	/* On a read-write attachment ns_space_open creates a missing
	 * namespace; a read-only one answers NS_ERDONLY instead. */
	if (!create && !c->rdonly && !space_exists(c, prefix))
		err = strchr(prefix, ':') ? NS_ERDONLY : NS_EINVAL;
	else
		err = ns_space_open(c, prefix, out);
	if (err == NS_ERDONLY) {
		errmsg("%s: no such namespace", prefix);
		return EX_FAIL;
	}
	if (err == NS_EINVAL) {
		errmsg("'%s' is not a namespace prefix (ROOT:DOMAIN, each a short name)",
		       prefix);
		return EX_USAGE;
	}
	if (err)
		return fail_ns(err, prefix);
	return EX_OK;
}

/* ---- parsing ------------------------------------------------------------- */

/* Decimal, or hexadecimal after "0x" (never octal: "010" is ten). */
int parse_u64(const char *s, uint64_t *out)
{
	bool hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
	const char *digits = hex ? s + 2 : s;
	char *end;
	unsigned long long v;

	if (!(*digits >= '0' && *digits <= '9') &&
	    !(hex && ((*digits >= 'a' && *digits <= 'f') || (*digits >= 'A' && *digits <= 'F'))))
		return -1;
	errno = 0;
	v = strtoull(digits, &end, hex ? 16 : 10);
	if (errno || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

static int parse_mode(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;

	if (*s < '0' || *s > '7')
		return -1;
	errno = 0;
	v = strtoul(s, &end, 8);
	if (errno || *end != '\0' || v > 07777)
		return -1;
	*out = (unsigned)v;
	return 0;
}

/* "1g", "512M", "64KiB", "4096": bytes, binary suffixes. */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	int shift = 0;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	default: break;
	}
	if (shift && strcmp(end, "iB") == 0)
		end += 2;
	else if (shift && (*end == 'b' || *end == 'B'))
		end++;
	if (*end != '\0' || (shift && v > (UINT64_MAX >> shift)))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

static bool is_number(const char *s)
{
	bool digit = false, dot = false;

	for (; *s; s++) {
		if (*s >= '0' && *s <= '9')
			digit = true;
		else if (*s == '.' && !dot)
			dot = true;
		else
			return false;
	}
	return digit;
}

/* --watch takes an optional argument; getopt only sees one written
 * "--watch=N", so "--watch N" with N a number is rewritten to that form.
 * (A segment named like a number must then come before --watch.) */
static char **join_watch(int *argcp, char **argv)
{
	int argc = *argcp;
	char **v = calloc((size_t)argc + 1, sizeof(*v));
	int n = 0;

	if (v == NULL)
		abort();
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			while (i < argc)
				v[n++] = argv[i++];
			break;
		}
		if (strcmp(argv[i], "--watch") == 0 && i + 1 < argc && is_number(argv[i + 1])) {
			if (asprintf(&v[n++], "--watch=%s", argv[i + 1]) < 0)
				abort();
			i++;
			continue;
		}
		v[n++] = argv[i];
	}
	v[n] = NULL;
	*argcp = n;
	return v;
}

/* Free what join_watch() made for ARGV. */
void nsctl_free_vec(char **v, int argc, char **argv)
{
	for (int i = 0; v && v[i]; i++) {
		bool own = true;
		for (int k = 0; k < argc && own; k++)
			own = v[i] != argv[k];
		if (own)
			free(v[i]);
	}
	free(v);
}

static const char *opt_name(unsigned bit)
{
	switch (bit) {
	case O_JSON: return "--json";
	case O_SIZE: return "--size";
	case O_ITEMS: return "--items";
	case O_MODE: return "--mode";
	case O_SPACE: return "--space";
	case O_WATCH: return "--watch";
	case O_TTL: return "--ttl";
	case O_FLAGS: return "--flags";
	default: return "--force";
	}
}

/* Parse the options and arguments of command C (ARGV[0] is its name).
 * Returns -1 to go on, or an exit code. */
int nsctl_parse(const struct cmd *c, int argc, char **argv, struct args *a)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, O_JSON },
		{ "size", required_argument, NULL, O_SIZE },
		{ "items", required_argument, NULL, O_ITEMS },
		{ "mode", required_argument, NULL, O_MODE },
		{ "space", required_argument, NULL, O_SPACE },
		{ "watch", optional_argument, NULL, O_WATCH },
		{ "ttl", required_argument, NULL, O_TTL },
		{ "flags", required_argument, NULL, O_FLAGS },
		{ "force", no_argument, NULL, O_FORCE },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char **v = join_watch(&argc, argv);
	uint64_t u;
	int o;

	memset(a, 0, sizeof(*a));
	a->vec = v;
	a->cmd = c;
	a->watch_s = 2;
	opterr = 0;
	optind = 1;
	/* ':' first: a missing value is told apart from an unknown option. */
	while ((o = getopt_long(argc, v, ":h", opts, NULL)) != -1) {
		const char *bad = NULL;

		if (o == 'h') {
			usage_cmd(stdout, c);
			return EX_OK;
		}
		if (o == ':' || o == '?') {
			errmsg("%s: %s '%s' (see 'nsctl %s --help')", c->name,
			       o == ':' ? "no value for option" : "unknown option",
			       v[optind - 1], c->name);
			return EX_USAGE;
		}
		if (!(c->opts & (unsigned)o)) {
			errmsg("%s does not take %s (see 'nsctl %s --help')", c->name,
			       opt_name((unsigned)o), c->name);
			return EX_USAGE;
		}
		switch (o) {
		case O_JSON:
			a->json = true;
			break;
		case O_SIZE:
			if (parse_size(optarg, &a->size) || a->size == 0)
				bad = "a size like 64m or 1g";
			break;
		case O_ITEMS:
			if (parse_size(optarg, &a->items))
				bad = "a count like 100000 or 1m";
			break;
		case O_MODE:
			if (parse_mode(optarg, &a->mode))
				bad = "an octal mode like 0660";
			break;
		case O_SPACE:
			a->space = optarg;
			break;
		case O_WATCH:
			if (optarg && (!is_number(optarg) || (a->watch_s = atof(optarg)) < 0.05))
				bad = "a period of at least 0.05 seconds";
			break;
		case O_TTL:
			if (strcmp(optarg, "never") == 0)
				a->ttl_ms = NS_TTL_NEVER;
			else if (parse_u64(optarg, &a->ttl_ms) || a->ttl_ms == NS_TTL_NEVER)
				bad = "milliseconds, or \"never\"";
			break;
		case O_FLAGS:
			if (parse_u64(optarg, &u) || u > UINT32_MAX)
				bad = "a 32-bit number";
			a->flags = (uint32_t)u;
			break;
		default: /* O_FORCE */
			break;
		}
		if (bad) {
			errmsg("%s: %s wants %s, not '%s'", c->name, opt_name((unsigned)o),
			       bad, optarg);
			return EX_USAGE;
		}
		a->given |= (unsigned)o;
	}
	a->argc = argc - optind;
	a->argv = v + optind;
	if (a->argc < c->min_args || a->argc > c->max_args) {
		errmsg("%s: %s arguments", c->name,
		       a->argc < c->min_args ? "missing" : "too many");
		fprintf(stderr, "usage: nsctl %s %s\n", c->name, c->synopsis);
		return EX_USAGE;
	}
	return -1;
}

int nsctl_main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_sigbus };
	const struct cmd *c;
	struct args a;
	int r;

	nsctl_stable = getenv("NSCTL_TEST_STABLE") != NULL &&
		       strcmp(getenv("NSCTL_TEST_STABLE"), "1") == 0;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);

	if (argc < 2) {
		usage_top(stderr);
		return EX_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage_top(stdout);
		return EX_OK;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("nsctl %s (segment format %u)\n", ns_version(), NS_FORMAT_VERSION);
		return EX_OK;
	}
	c = nsctl_find_cmd(argv[1]);
	if (c == NULL) {
		errmsg("unknown command '%s' (see 'nsctl help')", argv[1]);
		return EX_USAGE;
	}
	r = nsctl_parse(c, argc - 1, argv + 1, &a);
	if (r < 0)
		r = c->run(&a);
	nsctl_free_vec(a.vec, argc - 1, argv + 1);
	/* Output that could not be written is a failure, not a success. */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		if (r == EX_OK)
			errmsg("writing the output: %s", strerror(errno));
		return r == EX_OK ? EX_FAIL : r;
	}
	return r;
}
