/*
 * fuzz_image.c - attaching, verifying and using arbitrary segment images.
 *
 * At start a small valid segment is built as a template: two namespaces,
 * a few hundred items of several classes (so chains reach overflow
 * buckets), deletions (a retire list, free lists, a slot cache) and a
 * cleared namespace; its bytes are copied out and it is detached.  Its
 * client slot stays ACTIVE in the copy with nobody holding the slot lock:
 * every image has a dead client to recover.
 *
 * An input is one of two forms, told by its first byte:
 *
 *   'R' raw      the rest of the input is laid over the start of the
 *                template (a whole image when as long; the file is as long
 *                as the longer of the two)
 *   otherwise    a list of patches applied to the template.  Each patch:
 *                  u8 kind   low 4 bits: the table it lands in (header,
 *                            slots, spaces, classes, pages, index,
 *                            overflow, data, anywhere), high bits: what
 *                            it writes
 *                  u16/u32   offset inside that table
 *                  what      bytes from the input (u8 length, bytes), or
 *                            an 8-byte word from a table of values that
 *                            steer walks (0, ~0, offsets of real chunks,
 *                            the segment size, off-by-one sizes...)
 *                and kind 0xff resizes the file (and the header's size).
 *
 * The patched image is written to /dev/shm/<name> and attached (read-write
 * or read-only, bit 0 of the first byte).  The result must be success or a
 * clean error (NS_EVERSION, NS_ECORRUPT, NS_EINVAL).  On success
 * ns__verify and ns__census must return without crashing or hanging; if
 * verify calls the image consistent with no bucket lock held, a few gets,
 * sets, deletes and a scan must run too, and verify must then still
 * answer.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "namestore.h"
#include "ns_internal.h"

#define TEMPLATE_SIZE (4u << 20) /* the tables and two data pages */
#define TEMPLATE_ITEMS 64        /* 64 buckets: chains of several buckets */
#define NITEMS 600
#define MAX_PATCHES 64
#define MAX_IMAGE (TEMPLATE_SIZE + (1u << 20))

static char name[64];
static uint8_t *tmpl, *img;
static size_t tmpl_size;
static struct ns_hdr_shm th;            /* the template's header */
static uint64_t words[64];              /* values a patch may write */
static size_t nwords;

static void add_word(uint64_t w)
{
	if (nwords < sizeof(words) / sizeof(words[0]))
		words[nwords++] = w;
}

static void key_of(char *buf, size_t cap, int i)
{
	snprintf(buf, cap, "key-%d", i);
}

/* The offset of KEY's item in S's index, or 0 (walked here, not by the
 * library's lookup). */
static ns_off_t t_find_off(ns_space *s, const char *key)
{
	ns_cache *c = s->c;
	size_t klen = strlen(key);
	uint64_t h = ns__hash(c->hdr->hash_seed, s->id, key, klen);
	struct ns_bucket_shm *bk = &c->buckets[h & c->mask];
	int err = 0;

	for (int d = 0; bk && d <= NS_CHAIN_MAX; d++) {
		for (int i = 0; i < NS_BUCKET_SLOTS; i++) {
			ns_off_t off = bk->slot[i] & NS_SLOT_OFF_MASK;
			struct ns_item_shm *it = off ? ns__item(c, off) : NULL;
			if (it && it->klen == klen && memcmp(it + 1, key, klen) == 0)
				return off;
		}
		bk = ns__chain_next(c, bk, &err);
	}
	return 0;
}

static void build_template(void)
{
	struct ns_attach_opts o = { .flags = NS_CREATE | NS_EXCL, .size = TEMPLATE_SIZE,
				    .max_items = TEMPLATE_ITEMS };
	ns_cache *c;
	ns_space *a, *b;
	char key[32], val[3000];
	int err;

	ns_unlink(name);
	err = ns_attach(name, &o, &c);
	if (err == 0)
		err = ns_space_open(c, "fuzz:a", &a);
	if (err == 0)
		err = ns_space_open(c, "fuzz:b", &b);
	if (err)
		fuzz_die("template: %s", ns_strerror(err));
	memset(val, 'v', sizeof(val));
	for (int i = 0; i < NITEMS; i++) {
		key_of(key, sizeof(key), i);
		/* Mostly small items, some of a second class, a few TTLs. */
		size_t vlen = i % 50 == 0 ? 2000 : (size_t)(i % 13);
		err = ns_set(i % 3 ? a : b, key, strlen(key), val, vlen, i % 7 == 0 ? 1000 : 0);
		if (err)
			fuzz_die("template set %d: %s", i, ns_strerror(err));
	}
	for (int i = 0; i < NITEMS; i += 5) {
		key_of(key, sizeof(key), i);
		ns_del(i % 3 ? a : b, key, strlen(key));
	}
	ns_space_clear(b);
	ns_set(b, "after-clear", 11, "x", 1, 0);

	/* Values that steer walks: real chunk offsets, table offsets, edges. */
	add_word(0);
	add_word(UINT64_MAX);
	add_word(1);
	add_word(c->size);
	add_word(c->size - 8);
	add_word(c->size - 64);
	add_word(c->data_off);
	add_word(c->data_off + 8);
	add_word(c->data_off + c->classes[0].size);
	add_word(c->data_off + NS_PAGE_SIZE);
	add_word((uint64_t)1 << 40);
	add_word((uint64_t)1 << 47);
	add_word(NS_SLOT_OFF_MASK);
	add_word(c->hdr->slots_off);
	add_word(c->hdr->index_off);
	add_word(c->hdr->over_off);
	add_word(c->mask + 1);
	add_word(c->mask + 2);
	add_word(c->nover + 1);
	add_word(c->nslots);
	add_word(c->nslots + 1);
	add_word(c->npages);
	add_word(c->npages + 1);
	add_word(c->nclasses);
	add_word(NS_MAX_CLASSES + 1);
	add_word(0x100000001ull);
	add_word(INT64_MAX);
	for (int i = 0; i < 8; i++) {
		key_of(key, sizeof(key), i * 7 + 1);
		ns_space *s = (i * 7 + 1) % 3 ? a : b;
		ns_off_t off = t_find_off(s, key);
		if (off)
			add_word(off);
	}

	tmpl_size = c->size;
	tmpl = malloc(tmpl_size);
	img = malloc(MAX_IMAGE);
	if (tmpl == NULL || img == NULL)
		abort();
	memcpy(tmpl, c->base, tmpl_size);
	memcpy(&th, tmpl, sizeof(th));
	ns_detach(c);
	ns_unlink(name);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	snprintf(name, sizeof(name), "nsfuzz.image.%d", (int)getpid());
	build_template();
	/* Attach waits at most this long for a creator holding the init
	 * lock; nobody ever does here. */
	ns__create_wait_ms = 10;
	return 0;
}

/* The tables of the template a patch may land in: [start, start + len). */
static void region(int r, uint64_t *start, uint64_t *len)
{
	switch (r) {
	case 0: *start = 0; *len = NS_HDR_SIZE; break;
	case 1: *start = th.slots_off; *len = 2 * sizeof(struct ns_slot_shm); break;
	case 2: *start = th.spaces_off; *len = 2 * sizeof(struct ns_space_shm); break;
	case 3: *start = th.classes_off; *len = (uint64_t)th.nclasses * sizeof(struct ns_class_shm); break;
	case 4: *start = th.pages_off; *len = ((uint64_t)th.npages + 1) * sizeof(struct ns_page_shm); break;
	case 5: *start = th.index_off; *len = th.nbuckets * sizeof(struct ns_bucket_shm); break;
	case 6: *start = th.over_off; *len = th.nover * sizeof(struct ns_bucket_shm); break;
	case 7: *start = th.data_off; *len = 64u << 10; break;  /* the first items */
	case 8: *start = th.data_off + NS_PAGE_SIZE; *len = 64u << 10; break;
	default: *start = 0; *len = tmpl_size; break;
	}
}

/* Apply the patches of IN to img; returns the file size. */
static size_t apply_patches(struct rd_in *in)
{
	size_t size = tmpl_size;

	for (int n = 0; n < MAX_PATCHES && in->n > 0; n++) {
		uint8_t kind = in_u8(in);
		uint64_t start, len, off;

		if (kind == 0xff) {
			/* Another file size, told to the header too. */
			int64_t d = (int16_t)in_u16(in) * 4096;
			size_t ns = (int64_t)tmpl_size + d < NS_HDR_SIZE ? NS_HDR_SIZE
									 : (size_t)((int64_t)tmpl_size + d);
			if (ns > MAX_IMAGE)
				ns = MAX_IMAGE;
			if (ns > size)
				memset(img + size, 0, ns - size);
			size = ns;
			uint64_t hs = size;
			memcpy(img + offsetof(struct ns_hdr_shm, size), &hs, sizeof(hs));
			continue;
		}
		region(kind & 15, &start, &len);
		off = len > 0xffff ? in_u64(in) % len : in_u16(in) % len;
		switch (kind >> 4) {
		case 0: case 1: case 2: case 3: { /* bytes from the input */
			size_t k = in_u8(in) % 16 + 1;
			for (size_t i = 0; i < k && start + off + i < size; i++)
				img[start + off + i] = in_u8(in);
			break;
		}
		case 4: case 5: case 6: case 7: case 8: case 9: { /* a steering word */
			uint64_t w = words[in_u8(in) % nwords];
			off &= ~7ull;
			if (start + off + 8 <= size)
				memcpy(img + start + off, &w, 8);
			break;
		}
		case 10: case 11: { /* a 32-bit word: small counts and indexes */
			uint32_t w = (uint32_t)words[in_u8(in) % nwords] + (int8_t)in_u8(in);
			off &= ~3ull;
			if (start + off + 4 <= size)
				memcpy(img + start + off, &w, 4);
			break;
		}
		case 12: { /* flip one bit */
			uint8_t bit = in_u8(in);
			if (start + off < size)
				img[start + off] ^= (uint8_t)(1u << (bit & 7));
			break;
		}
		default: { /* copy 64 bytes from elsewhere in the template */
			uint64_t from = in_u16(in) % (tmpl_size - 64);
			if (start + off + 64 <= size)
				memcpy(img + start + off, tmpl + from, 64);
			break;
		}
		}
	}
	return size;
}

static void write_image(size_t size)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "/dev/shm/%s", name);
	unlink(path);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		fuzz_die("%s: cannot create", path);
	for (size_t done = 0; done < size;) {
		ssize_t w = write(fd, img + done, size - done);
		if (w <= 0)
			fuzz_die("%s: cannot write", path);
		done += (size_t)w;
	}
	close(fd);
}

/* A few operations on a segment verify called consistent. */
static void use(ns_cache *c)
{
	ns_space *s = NULL;
	char key[32], buf[4096];
	size_t vlen;
	int err;

	if (ns_space_open(c, "fuzz:a", &s) != 0)
		return;
	for (int i = 0; i < 24; i++) {
		key_of(key, sizeof(key), i);
		err = ns_get(s, key, strlen(key), buf, sizeof(buf), &vlen);
		if (err == 0 && vlen > sizeof(buf))
			fuzz_die("get: length %zu beyond the buffer", vlen);
		if (i % 3 == 0)
			ns_set(s, key, strlen(key), "new", 3, 0);
		if (i % 4 == 1)
			ns_del(s, key, strlen(key));
		if (i % 8 == 2) {
			int64_t r;
			ns_incr(s, key, strlen(key), 1, 0, 0, &r);
		}
	}
	ns_set(s, "fresh", 5, buf, 3000, 0);
	uint64_t cursor = 0;
	struct ns_key keys[16];
	size_t n;
	for (int i = 0; i < 64; i++) {
		if (ns_scan(s, &cursor, NULL, 0, keys, 16, &n) != 0 || cursor == 0)
			break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rd_in in = { data, size };
	struct ns_attach_opts ro = { .flags = NS_RDONLY };
	struct ns_verify_report rep;
	struct ns_census *cs = malloc(sizeof(*cs));
	uint8_t mode = in_u8(&in);
	size_t isize;
	ns_cache *c = NULL;
	int err;

	if (cs == NULL)
		abort();
	memcpy(img, tmpl, tmpl_size);
	if (mode == 'R') {
		isize = in.n > tmpl_size ? tmpl_size : tmpl_size;
		memcpy(img, in.p, in.n < MAX_IMAGE ? in.n : MAX_IMAGE);
		if (in.n > tmpl_size)
			isize = in.n < MAX_IMAGE ? in.n : MAX_IMAGE;
	} else {
		isize = apply_patches(&in);
	}
	write_image(isize);
	err = ns_attach(name, (mode & 1) ? &ro : NULL, &c);
	if (err != 0 && err != NS_EVERSION && err != NS_ECORRUPT && err != NS_EINVAL)
		fuzz_die("ns_attach: unexpected %d (%s)", err, ns_strerror(err));
	if (err == 0) {
		int v = ns__verify(c, &rep);
		if (v != 0 && v != NS_ECORRUPT)
			fuzz_die("ns__verify: unexpected %d (%s)", v, ns_strerror(v));
		if (ns__census(c, 0, cs) != 0)
			fuzz_die("ns__census failed");
		/* A bucket lock word naming a dead slot whose intent does not
		 * name that bucket is never broken: each write to the bucket
		 * waits NS_LOCK_TIMEOUT_MS for NS_EBUSY (a clean error, but a
		 * slow one), and one naming the slot we claim ends in ns__die.
		 * So writes only where no lock is held. */
		if (v == 0 && rep.locked == 0) {
			use(c);
			v = ns__verify(c, &rep);
			if (v != 0 && v != NS_ECORRUPT)
				fuzz_die("ns__verify after use: %d (%s)", v, ns_strerror(v));
			ns__census(c, 0, cs);
		}
		ns_detach(c);
	}
	ns_unlink(name);
	free(cs);
	return 0;
}
