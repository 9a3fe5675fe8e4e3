/*
 * nsctl.h - what the files of nsctl share: the command table's shape, the
 * parsed command line, exit codes, segment attachment, and the output
 * helpers of out.c (human units, escaping, aligned tables, JSON).
 */
#ifndef NSCTL_H
#define NSCTL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ns_internal.h"

/* Exit codes (documented in `nsctl help` and the README). */
enum {
	EX_OK = 0,      /* done */
	EX_FAIL = 1,    /* the operation failed: key not found, verify found problems */
	EX_USAGE = 2,   /* bad command line */
	EX_SEGMENT = 3, /* segment missing, permission denied, incompatible or corrupt */
};

/* Options a command may accept (struct cmd.opts). */
enum {
	O_JSON = 1 << 0,
	O_SIZE = 1 << 1,
	O_ITEMS = 1 << 2,
	O_MODE = 1 << 3,
	O_SPACE = 1 << 4,
	O_WATCH = 1 << 5,
	O_TTL = 1 << 6,
	O_FLAGS = 1 << 7,
	O_FORCE = 1 << 8,
};

/* The command line after parsing. */
struct args {
	const struct cmd *cmd;
	int argc;             /* positional arguments after the command name */
	char **argv;
	char **vec;           /* the argument vector parsed (owned) */
	unsigned given;       /* O_* seen */
	bool json;
	uint64_t size, items; /* create */
	unsigned mode;
	const char *space;    /* stats --space */
	double watch_s;       /* stats --watch: refresh period in seconds */
	uint64_t ttl_ms;      /* set --ttl */
	uint32_t flags;       /* set --flags */
};

struct cmd {
	const char *name;
	const char *synopsis; /* arguments and options, for the usage line */
	const char *summary;  /* one line, for `nsctl help` */
	const char *help;     /* the rest of `nsctl help CMD` */
	unsigned opts;        /* O_* it accepts */
	int min_args, max_args;
	int (*run)(struct args *a);
};

/* ---- nsctl.c ------------------------------------------------------------ */
/* The whole of nsctl, called by main() (main.c) and by the fuzz target
 * tests/fuzz/fuzz_nsctl.c, which runs it in-process: so it keeps no state
 * between calls that a second call could trip on. */
int nsctl_main(int argc, char **argv);
/* The command named NAME, or NULL. */
const struct cmd *nsctl_find_cmd(const char *name);
/* Parse the options and arguments of command C (ARGV[0] is its name) into
 * *A.  Returns -1 to go on and run it, or an exit code.  Either way
 * nsctl_free_vec(a->vec, ARGC, ARGV) frees what it made. */
int nsctl_parse(const struct cmd *c, int argc, char **argv, struct args *a);
void nsctl_free_vec(char **v, int argc, char **argv);
extern bool nsctl_stable; /* $NSCTL_TEST_STABLE: placeholders for volatile fields */
/* A volatile field for a human: S, or "*" under $NSCTL_TEST_STABLE. */
#define VOL(s) (nsctl_stable ? "*" : (s))

__attribute__((format(printf, 1, 2))) void errmsg(const char *fmt, ...);
/* Report library error ERR about WHAT and return the exit code it maps to. */
int fail_ns(int err, const char *what);
/* Attach segment NAME read-only (RW false) or read-write.  On failure the
 * message is printed and the exit code returned. */
int open_segment(const char *name, bool rw, ns_cache **out);
/* Find namespace PREFIX of C without creating it (CREATE false) or
 * creating it.  Prints and returns an exit code on failure. */
int open_space(ns_cache *c, const char *prefix, bool create, ns_space **out);
int parse_u64(const char *s, uint64_t *out);

/* ---- out.c -------------------------------------------------------------- */
/* "512 B", "1.5 KiB", "8.0 MiB", "1.0 GiB" */
const char *fmt_bytes(char *buf, size_t cap, uint64_t v);
/* "850 ms", "12.5 s", "3 min", "5 h", "2 d" */
const char *fmt_age(char *buf, size_t cap, uint64_t ms);
/* "2024-05-01 12:00:00 UTC" from CLOCK_REALTIME ms */
const char *fmt_time(char *buf, size_t cap, uint64_t ms);
/* "66.7%", or "-" when there is nothing to divide */
const char *fmt_pct(char *buf, size_t cap, uint64_t part, uint64_t whole);
/* Bytes for a human: printable ASCII as is, '\\' doubled, others \xNN. */
const char *fmt_escaped(char *buf, size_t cap, const void *p, size_t n);
char *escape_dup(const void *p, size_t n); /* the same, malloc'd whole */
void put_escaped(FILE *f, const void *p, size_t n);

/* An aligned table: columns named by HEADS (NULL: no heading line), ALIGN
 * 'l' or 'r' per column. */
struct table;
struct table *tb_new(const char *const *heads, const char *align);
__attribute__((format(printf, 2, 3))) void tb_cell(struct table *t, const char *fmt, ...);
void tb_escaped(struct table *t, const void *p, size_t n); /* a cell of bytes */
void tb_print(struct table *t, FILE *f, const char *indent);
void tb_free(struct table *t);

/* A JSON writer: pretty (two-space indent) or one line per document. */
#define JSON_DEPTH 16
struct json {
	FILE *f;
	bool pretty;
	int depth;
	bool first[JSON_DEPTH];
};
void j_init(struct json *j, FILE *f, bool pretty);
void j_open(struct json *j, const char *key, char bracket); /* '{' or '[' */
void j_close(struct json *j, char bracket);
void j_u64(struct json *j, const char *key, uint64_t v);
void j_i64(struct json *j, const char *key, int64_t v);
void j_bool(struct json *j, const char *key, bool v);
void j_null(struct json *j, const char *key);
void j_str(struct json *j, const char *key, const char *s);
/* Bytes as a JSON string, each byte that is not printable ASCII as \u00XX,
 * so that code point i stands for byte i (Latin-1): reversible. */
void j_bytes(struct json *j, const char *key, const void *p, size_t n);
void j_ratio(struct json *j, const char *key, uint64_t part, uint64_t whole);
/* A volatile field (time, pid, age): "*" under $NSCTL_TEST_STABLE. */
void j_vol_u64(struct json *j, const char *key, uint64_t v);
void j_vol_i64(struct json *j, const char *key, int64_t v);
void j_end(struct json *j); /* newline after the document */

/* ---- the commands ------------------------------------------------------- */
int cmd_create(struct args *a);
int cmd_destroy(struct args *a);
int cmd_list(struct args *a);
int cmd_info(struct args *a);
int cmd_verify(struct args *a);
int cmd_stats(struct args *a);
int cmd_clients(struct args *a);
int cmd_spaces(struct args *a);
int cmd_clear(struct args *a);
int cmd_keys(struct args *a);
int cmd_get(struct args *a);
int cmd_set(struct args *a);
int cmd_del(struct args *a);
int cmd_ttl(struct args *a);
int cmd_expire(struct args *a);

#endif /* NSCTL_H */
