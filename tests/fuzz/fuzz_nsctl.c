/*
 * fuzz_nsctl.c - nsctl's command line and input, in-process.
 *
 * The input is a command line and, optionally, what nsctl reads on stdin:
 *
 *   arg \0 arg \0 ... [\x01 stdin bytes]
 *
 * The arguments follow "nsctl".  An argument "@" stands for the name of a
 * small segment this process made at start (namespace "fz:a" with a few
 * keys).  Every command line goes through nsctl's parser (nsctl_parse:
 * getopt_long, the command table, parse_size, parse_mode, parse_u64,
 * --watch's rewriting).  It is also run whole (nsctl_main) when it can
 * touch nothing but that segment: the command is one of the per-segment
 * ones (not create, destroy or list, which would act on other files of
 * /dev/shm), its segment argument is ours, and it does not --watch (which
 * runs until SIGINT).  stdin is the input's tail, for `set` without VALUE.
 *
 * After each input the parser runs once more on a fixed command line, so
 * that state a call leaves behind (getopt's) is used while the input's
 * arguments are already freed: AddressSanitizer sees a stale pointer.
 * Output goes where the process's stdout and stderr go; run libFuzzer with
 * -close_fd_mask=3.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "nsctl.h"

#define MAX_ARGS 16

static char seg[64];

static void remove_segment(void)
{
	ns_unlink(seg);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct ns_attach_opts o = { .flags = NS_CREATE | NS_EXCL, .size = 4u << 20,
				    .max_items = 64 };
	ns_cache *c;
	ns_space *s;
	int err;

	(void)argc;
	(void)argv;
	snprintf(seg, sizeof(seg), "nsfuzz.ctl.%d", (int)getpid());
	ns_unlink(seg);
	err = ns_attach(seg, &o, &c);
	if (err == 0)
		err = ns_space_open(c, "fz:a", &s);
	if (err)
		fuzz_die("creating %s: %s", seg, ns_strerror(err));
	ns_set(s, "k", 1, "v", 1, 0);
	ns_set(s, "n", 1, "42", 2, 0);
	ns_set(s, "t", 1, "ttl", 3, 60000);
	ns_set(s, "bin\x01", 4, "\x00\xff", 2, 0);
	ns_detach(c);
	atexit(remove_segment);
	return 0;
}

/* Commands that act on the segment named by their first argument only. */
static bool runnable(const struct args *a)
{
	static const char *const ok[] = {
		"info", "stats", "clients", "spaces", "clear", "keys", "get", "set",
		"del", "ttl", "expire", "verify",
	};
	const char *name = a->cmd->name;

	if (strcmp(name, "help") == 0)
		return true;
	if (a->argc < 1 || strcmp(a->argv[0], seg) != 0 || (a->given & O_WATCH))
		return false;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (strcmp(name, ok[i]) == 0)
			return true;
	return false;
}

/* Put LEN bytes of P on fd 0 for the run; returns the saved fd 0. */
static int stdin_from(const uint8_t *p, size_t len)
{
	int saved = dup(STDIN_FILENO);
	int fd = memfd_create("nsctl-stdin", MFD_CLOEXEC);

	if (saved < 0 || fd < 0)
		fuzz_die("stdin: cannot make a memfd");
	for (size_t done = 0; done < len;) {
		ssize_t w = write(fd, p + done, len - done);
		if (w <= 0)
			fuzz_die("stdin: cannot write");
		done += (size_t)w;
	}
	lseek(fd, 0, SEEK_SET);
	dup2(fd, STDIN_FILENO);
	close(fd);
	return saved;
}

/* The parser once more, on a fixed command line. */
static void parse_again(void)
{
	char *argv[] = { strdup("ttl"), strdup("x"), strdup("y:z"), strdup("k"), NULL };
	struct args a;
	const struct cmd *c = nsctl_find_cmd("ttl");

	if (nsctl_parse(c, 4, argv, &a) != -1)
		fuzz_die("a plain command line did not parse");
	nsctl_free_vec(a.vec, 4, argv);
	for (int i = 0; i < 4; i++)
		free(argv[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *sep = memchr(data, 0x01, size);
	size_t alen = sep ? (size_t)(sep - data) : size;
	char *argv[MAX_ARGS + 2] = { 0 };
	int argc = 1;
	int saved_stdin = -1;

	argv[0] = strdup("nsctl");
	/* Each argument its own allocation, exactly as long as it is. */
	for (size_t i = 0; i < alen && argc <= MAX_ARGS;) {
		const uint8_t *end = memchr(data + i, 0, alen - i);
		size_t n = end ? (size_t)(end - (data + i)) : alen - i;
		if (n == 1 && data[i] == '@') {
			argv[argc++] = strdup(seg);
		} else {
			argv[argc] = malloc(n + 1);
			if (argv[argc] == NULL)
				abort();
			memcpy(argv[argc], data + i, n);
			argv[argc++][n] = '\0';
		}
		i += n + 1;
	}
	for (int i = 0; i < argc; i++)
		if (argv[i] == NULL)
			abort();

	if (argc >= 2) {
		const struct cmd *c = nsctl_find_cmd(argv[1]);
		struct args a;
		bool run = false;

		if (c != NULL) {
			/* nsctl_parse may print (usage, errors); it never exits. */
			int r = nsctl_parse(c, argc - 1, argv + 1, &a);
			run = r == -1 && runnable(&a);
			nsctl_free_vec(a.vec, argc - 1, argv + 1);
		} else {
			run = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
			      strcmp(argv[1], "--version") == 0;
		}
		if (run) {
			if (sep)
				saved_stdin = stdin_from(sep + 1, size - alen - 1);
			nsctl_main(argc, argv);
			fflush(stdout);
			if (saved_stdin >= 0) {
				dup2(saved_stdin, STDIN_FILENO);
				close(saved_stdin);
			}
		}
	}
	for (int i = 0; i < argc; i++)
		free(argv[i]);
	parse_again();
	return 0;
}
