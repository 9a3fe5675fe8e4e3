/*
 * trace.c - the chunk trace: a debugging aid for leaks and double frees,
 * compiled in only with meson -Dchunk_trace=true.
 *
 * When the consistency check finds a chunk in no record, the question is
 * who touched it last, and how.  With the trace compiled in and
 * $NS_TRACE_DIR set, every process that attaches a segment maps one shared
 * file, DIR/trace-NAME, that keeps the last eight events of every chunk:
 * each NS_TR() site (a push on a free or park list, a pop into a cache, a
 * retire, a free, an unpark, an audit's take-back) records its file and
 * line, the pid, and the time.  tests/torture prints the events of the
 * chunk it finds leaked; a leak in page moves was found this way
 * (tests/README.md).  A build without the option has no trace code at all.
 *
 *   entry of chunk k:  [count][event] x 8
 *   event:  line:16 | file:4 | pid:22 | ms:22 (wall clock, mod 2^22)
 *
 * Events of one chunk are ordered by the count (each takes the next
 * place); the time says which process logs line up with them.
 */
#define _GNU_SOURCE
#include <stdio.h>

#include "ns_internal.h"

#ifdef NS_CHUNK_TRACE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define EVENTS 8

static uint64_t *trace_map;
static uint64_t trace_n;

void ns__trace_open(ns_cache *c)
{
	const char *dir = getenv("NS_TRACE_DIR");
	char path[512];

	if (dir == NULL || trace_map != NULL)
		return; /* one segment a process: the first one attached */
	snprintf(path, sizeof(path), "%s/trace-%s", dir, c->name);
	int fd = open(path, O_RDWR | O_CREAT, 0600);
	if (fd < 0)
		return;
	uint64_t n = (uint64_t)c->npages * (NS_PAGE_SIZE / NS_MIN_CHUNK);
	size_t sz = n * (1 + EVENTS) * sizeof(uint64_t);
	void *m = ftruncate(fd, (off_t)sz) == 0 ?
		  mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
	close(fd);
	if (m != MAP_FAILED) {
		trace_n = n;
		trace_map = m;
	}
}

static uint64_t *entry(ns_cache *c, ns_off_t off)
{
	uint64_t bit;

	if (trace_map == NULL || (bit = ns__chunk_bit(c, off)) >= trace_n)
		return NULL;
	return trace_map + bit * (1 + EVENTS);
}

void ns__trace(ns_cache *c, ns_off_t off, unsigned file, unsigned line)
{
	uint64_t *e = entry(c, off);
	struct timespec ts;

	if (e == NULL)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
	uint64_t w = (line & 0xffffu) | (uint64_t)(file & 15u) << 16 |
		     (uint64_t)((unsigned)getpid() & 0x3fffffu) << 20 | (ms & 0x3fffffu) << 42;
	uint64_t k = __atomic_fetch_add(&e[0], 1, __ATOMIC_RELAXED);
	__atomic_store_n(&e[1 + k % EVENTS], w, __ATOMIC_RELAXED);
}

void ns__trace_print(ns_cache *c, ns_off_t off, FILE *f)
{
	static const char *const files[] = { "?", "slab.c", "janitor.c", "epoch.c",
					     "recover.c" };
	uint64_t *e = entry(c, off);

	if (e == NULL)
		return;
	uint64_t n = e[0];
	fprintf(f, "# trace of chunk %llu: %llu events, the last ones:\n",
		(unsigned long long)off, (unsigned long long)n);
	for (uint64_t i = n > EVENTS ? n - EVENTS : 0; i < n; i++) {
		uint64_t w = e[1 + i % EVENTS];
		unsigned file = (unsigned)(w >> 16) & 15u;
		fprintf(f, "#   %llu: %s:%u by pid %u at ms %llu (mod 2^22)\n",
			(unsigned long long)i, files[file < sizeof(files) / sizeof(files[0]) ? file : 0],
			(unsigned)(w & 0xffffu), (unsigned)(w >> 20) & 0x3fffffu,
			(unsigned long long)(w >> 42));
	}
}
#else
void ns__trace_open(ns_cache *c) { (void)c; }
void ns__trace_print(ns_cache *c, ns_off_t off, FILE *f)
{
	(void)c;
	(void)off;
	(void)f;
}
#endif
