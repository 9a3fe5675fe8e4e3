/*
 * fuzz.h - what the fuzz targets share: the libFuzzer entry points, the
 * byte reader that turns an input into decisions, and how a target
 * reports a finding.
 *
 * Each target is built twice: with clang's -fsanitize=fuzzer (the fuzz
 * build, meson -Dfuzz=enabled), and in every build against driver.c, a
 * main of our own that runs the target over files and directories, so that
 * the seed corpus and the regression inputs are replayed by the normal
 * test suite (fuzz_replay) wherever clang is missing.
 */
#ifndef NS_FUZZ_H
#define NS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A finding: print why and abort, which libFuzzer and the driver both
 * report as a crash with the input that caused it. */
#define fuzz_die(...)                                                        \
	do {                                                                 \
		fprintf(stderr, "fuzz: %s:%d: ", __FILE__, __LINE__);        \
		fprintf(stderr, __VA_ARGS__);                                \
		fputc('\n', stderr);                                         \
		abort();                                                     \
	} while (0)

/* Decisions are taken from the input front to back; an exhausted input
 * reads as zeros, so every prefix of an input is an input too. */
struct rd_in {
	const uint8_t *p;
	size_t n;
};

static inline uint8_t in_u8(struct rd_in *in)
{
	if (in->n == 0)
		return 0;
	in->n--;
	return *in->p++;
}

static inline uint16_t in_u16(struct rd_in *in)
{
	return (uint16_t)(in_u8(in) | (unsigned)in_u8(in) << 8);
}

static inline uint64_t in_u64(struct rd_in *in)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v |= (uint64_t)in_u8(in) << (8 * i);
	return v;
}

#endif
