/*
 * out.c - how nsctl writes: sizes and times for humans, bytes escaped so
 * that a key holding anything cannot garble a terminal, aligned tables, and
 * a small streaming JSON writer.
 *
 * JSON strings hold bytes, not text: keys and values may be any bytes, so
 * every byte outside printable ASCII is written as \u00XX.  Code point i
 * then stands for byte i (the Latin-1 mapping), which a reader can undo
 * exactly; valid UTF-8 keys come out as \u00XX sequences too, by design.
 *
 * Volatile fields (times, ages, pids, epochs) go through j_vol_* and the
 * callers' equivalents, which print "*" when $NSCTL_TEST_STABLE is set, so
 * that the golden-output tests compare everything else exactly.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nsctl.h"

const char *fmt_bytes(char *buf, size_t cap, uint64_t v)
{
	static const char *const unit[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	double d = (double)v;
	int u = -1;

	if (v < 1024) {
		snprintf(buf, cap, "%" PRIu64 " B", v);
		return buf;
	}
	while (d >= 1024 && u < 5) {
		d /= 1024;
		u++;
	}
	snprintf(buf, cap, "%.1f %s", d, unit[u]);
	return buf;
}

const char *fmt_age(char *buf, size_t cap, uint64_t ms)
{
	if (ms < 1000)
		snprintf(buf, cap, "%" PRIu64 " ms", ms);
	else if (ms < 60000)
		snprintf(buf, cap, "%.1f s", (double)ms / 1000);
	else if (ms < 3600000)
		snprintf(buf, cap, "%" PRIu64 " min", ms / 60000);
	else if (ms < 86400000)
		snprintf(buf, cap, "%" PRIu64 " h", ms / 3600000);
	else
		snprintf(buf, cap, "%" PRIu64 " d", ms / 86400000);
	return buf;
}

const char *fmt_time(char *buf, size_t cap, uint64_t ms)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(buf, cap, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		snprintf(buf, cap, "%" PRIu64 " ms", ms);
	return buf;
}

const char *fmt_pct(char *buf, size_t cap, uint64_t part, uint64_t whole)
{
	if (whole == 0)
		snprintf(buf, cap, "-");
	else
		snprintf(buf, cap, "%.1f%%", 100.0 * (double)part / (double)whole);
	return buf;
}

static bool printable(uint8_t ch) { return ch >= 0x20 && ch < 0x7f; }

const char *fmt_escaped(char *buf, size_t cap, const void *p, size_t n)
{
	const uint8_t *s = p;
	size_t k = 0;

	for (size_t i = 0; i < n && k + 5 < cap; i++) {
		if (s[i] == '\\') {
			buf[k++] = '\\';
			buf[k++] = '\\';
		} else if (printable(s[i])) {
			buf[k++] = (char)s[i];
		} else {
			k += (size_t)snprintf(buf + k, cap - k, "\\x%02x", s[i]);
		}
	}
	buf[k < cap ? k : cap - 1] = '\0';
	return buf;
}

char *escape_dup(const void *p, size_t n)
{
	size_t cap = 4 * n + 8; /* \xNN is the longest form of a byte */
	char *buf = malloc(cap);

	if (buf == NULL)
		abort();
	return (char *)fmt_escaped(buf, cap, p, n);
}

void put_escaped(FILE *f, const void *p, size_t n)
{
	char buf[4 * 256 + 8];
	const uint8_t *s = p;

	/* In pieces, so that any length fits the buffer. */
	for (size_t i = 0; i < n; i += 256)
		fputs(fmt_escaped(buf, sizeof(buf), s + i, n - i < 256 ? n - i : 256), f);
}

/* ---- tables ------------------------------------------------------------- */

#define TB_COLS 24 /* more than any table of nsctl has */

struct table {
	int ncols;
	const char *align;
	size_t ncells, cap;
	char **cells; /* row-major, heads first */
};

struct table *tb_new(const char *const *heads, const char *align)
{
	struct table *t = calloc(1, sizeof(*t));

	if (t == NULL || strlen(align) > TB_COLS)
		abort();
	t->ncols = (int)strlen(align);
	t->align = align;
	for (int i = 0; heads && i < t->ncols; i++)
		tb_cell(t, "%s", heads[i]);
	return t;
}

void tb_cell(struct table *t, const char *fmt, ...)
{
	va_list ap;
	char *s;

	if (t->ncells == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 64;
		t->cells = realloc(t->cells, t->cap * sizeof(*t->cells));
		if (t->cells == NULL)
			abort();
	}
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	t->cells[t->ncells++] = s;
}

void tb_escaped(struct table *t, const void *p, size_t n)
{
	char *s = escape_dup(p, n);

	tb_cell(t, "%s", s);
	free(s);
}

void tb_print(struct table *t, FILE *f, const char *indent)
{
	size_t w[TB_COLS] = { 0 };

	for (size_t i = 0; i < t->ncells; i++) {
		size_t l = strlen(t->cells[i]), col = i % (size_t)t->ncols;
		if (l > w[col])
			w[col] = l;
	}
	for (size_t i = 0; i < t->ncells; i++) {
		int col = (int)(i % (size_t)t->ncols);
		bool last = col == t->ncols - 1 || i + 1 == t->ncells;

		if (col == 0)
			fputs(indent, f);
		if (t->align[col] == 'r')
			fprintf(f, "%*s", (int)w[col], t->cells[i]);
		else if (last)
			fputs(t->cells[i], f); /* no trailing blanks */
		else
			fprintf(f, "%-*s", (int)w[col], t->cells[i]);
		fputs(last ? "\n" : "  ", f);
	}
}

void tb_free(struct table *t)
{
	for (size_t i = 0; i < t->ncells; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t);
}

/* ---- JSON --------------------------------------------------------------- */

void j_init(struct json *j, FILE *f, bool pretty)
{
	memset(j, 0, sizeof(*j));
	j->f = f;
	j->pretty = pretty;
	j->first[0] = true;
}

static void raw_string(FILE *f, const void *p, size_t n)
{
	const uint8_t *s = p;

	fputc('"', f);
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '"' || s[i] == '\\')
			fprintf(f, "\\%c", s[i]);
		else if (printable(s[i]))
			fputc(s[i], f);
		else
			fprintf(f, "\\u%04x", s[i]);
	}
	fputc('"', f);
}

/* The separator, indentation and key before a value. */
static void lead(struct json *j, const char *key)
{
	if (!j->first[j->depth])
		fputc(',', j->f);
	j->first[j->depth] = false;
	if (j->pretty && j->depth > 0) {
		fputc('\n', j->f);
		for (int i = 0; i < j->depth; i++)
			fputs("  ", j->f);
	}
	if (key) {
		raw_string(j->f, key, strlen(key));
		fputs(j->pretty ? ": " : ":", j->f);
	}
}

void j_open(struct json *j, const char *key, char bracket)
{
	lead(j, key);
	fputc(bracket, j->f);
	if (j->depth + 1 < JSON_DEPTH)
		j->depth++;
	j->first[j->depth] = true;
}

void j_close(struct json *j, char bracket)
{
	bool empty = j->first[j->depth];

	if (j->depth > 0)
		j->depth--;
	if (j->pretty && !empty) {
		fputc('\n', j->f);
		for (int i = 0; i < j->depth; i++)
			fputs("  ", j->f);
	}
	fputc(bracket, j->f);
}

void j_u64(struct json *j, const char *key, uint64_t v)
{
	lead(j, key);
	fprintf(j->f, "%" PRIu64, v);
}

void j_i64(struct json *j, const char *key, int64_t v)
{
	lead(j, key);
	fprintf(j->f, "%" PRId64, v);
}

void j_bool(struct json *j, const char *key, bool v)
{
	lead(j, key);
	fputs(v ? "true" : "false", j->f);
}

void j_null(struct json *j, const char *key)
{
	lead(j, key);
	fputs("null", j->f);
}

void j_str(struct json *j, const char *key, const char *s)
{
	lead(j, key);
	raw_string(j->f, s, strlen(s));
}

void j_bytes(struct json *j, const char *key, const void *p, size_t n)
{
	lead(j, key);
	raw_string(j->f, p, n);
}

void j_ratio(struct json *j, const char *key, uint64_t part, uint64_t whole)
{
	lead(j, key);
	if (whole == 0)
		fputs("null", j->f);
	else
		fprintf(j->f, "%.4f", (double)part / (double)whole);
}

void j_vol_u64(struct json *j, const char *key, uint64_t v)
{
	if (nsctl_stable)
		j_str(j, key, "*");
	else
		j_u64(j, key, v);
}

void j_vol_i64(struct json *j, const char *key, int64_t v)
{
	if (nsctl_stable)
		j_str(j, key, "*");
	else
		j_i64(j, key, v);
}

void j_end(struct json *j)
{
	fputc('\n', j->f);
}
