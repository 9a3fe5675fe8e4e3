/*
 * test_prefork_http.c - the prefork HTTP example ($PREFORK_HTTP), run
 * briefly: the short version of ./setup.sh demo.
 *
 * One server in namestore mode (4 workers, a private segment, a port the
 * kernel picks, which the server writes to a file) serves every subtest;
 * a tiny HTTP client here talks to it over raw sockets, and the server's
 * own /stats counters (backend calls, hits, restarts) are the evidence:
 *
 *   - a few hundred requests over 50 keys: exactly one backend call per
 *     key, every other request a hit, the same cached bytes whichever
 *     worker answers;
 *   - 16 concurrent requests for one cold key, answered by several
 *     workers: exactly one backend call (single flight across processes);
 *     the same against a private-cache server makes several;
 *   - DELETE invalidates: the next GET calls the backend again;
 *   - an item expires after its TTL and is loaded once more;
 *   - a worker killed with SIGKILL is restarted by the parent, and the
 *     cache it shared still answers every warmed key without a backend
 *     call;
 *   - every error path of the parser and the router answers over the wire
 *     with its status (400, 404, 405, 413, 431, 501, 505), closing the
 *     connection when the framing is lost and keeping it otherwise, and no
 *     worker crashes.
 *
 * The server runs with PR_SET_PDEATHSIG (and its workers with their own),
 * so nothing outlives the test even if it is killed; the group teardown
 * stops it and removes the segment on failure too.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

/* The backend's simulated time: long enough that 16 requests sent at once
 * all arrive while the first one's load is in flight. */
#define BACKEND_US "20000"
/* Long enough that a subtest's requests for a key all come before it
 * expires, even on a loaded machine; test_ttl_expiry waits it out once. */
#define TTL_MS 3000
#define TTL_MS_STR "3000"
/* Above the server's 8 KiB head limit (HTTP_HEAD_MAX of http.h). */
#define HUGE_HEAD 9000
#define CLIENT_TIMEOUT_S 10
#define START_TIMEOUT_MS 10000

struct server {
	pid_t pid;
	unsigned port;
	char port_file[64];
};

static const char *server_bin;
static const char *seg;
static struct server main_srv, priv_srv;

struct resp {
	int status;
	char head[2048];
	char body[8192];
	size_t body_len;
	char raw[65536];
	size_t raw_len;
};

/* Start $PREFORK_HTTP with ARGS (NULL-ended) and wait for its port. */
static int server_start(struct server *s, const char *tag,
			const char *const *args)
{
	const char *argv[32] = { server_bin, "--port", "0", "--port-file" };
	int n = 4;
	uint64_t end = t_now_ns() + (uint64_t)START_TIMEOUT_MS * 1000000u;
	pid_t parent = getpid();

	snprintf(s->port_file, sizeof(s->port_file), "/tmp/nstest.%s.%d.port",
		 tag, (int)parent);
	unlink(s->port_file);
	argv[n++] = s->port_file;
	while (*args && n < 31)
		argv[n++] = *args++;
	argv[n] = NULL;
	s->pid = fork();
	if (s->pid < 0)
		return -1;
	if (s->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		int null = open("/dev/null", O_WRONLY);
		dup2(null, STDOUT_FILENO);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	while (t_now_ns() < end) {
		FILE *f = fopen(s->port_file, "r");

		if (f != NULL) {
			int ok = fscanf(f, "%u", &s->port);
			fclose(f);
			if (ok == 1)
				return 0;
		}
		if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
			s->pid = 0;
			return -1;
		}
		usleep(10000);
	}
	return -1;
}

static void server_stop(struct server *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGTERM);
		if (t_wait(s->pid, 8000) == -1)
			print_error("# server %d had to be killed\n", (int)s->pid);
	}
	s->pid = 0;
	if (s->port_file[0])
		unlink(s->port_file);
}

static int connect_to(unsigned port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons((uint16_t)port) };
	struct timeval tv = { .tv_sec = CLIENT_TIMEOUT_S };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		fail_msg("connect to port %u: %s", port, strerror(errno));
	return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w <= 0)
			fail_msg("send: %s", strerror(errno));
		p += w;
		n -= (size_t)w;
	}
}

/* Read FD to end of stream (the server closes) into R and split the first
 * response into status, head and body. */
static void read_resp(int fd, struct resp *r)
{
	char *sep;
	ssize_t n;

	memset(r, 0, sizeof(*r));
	while ((n = read(fd, r->raw + r->raw_len,
			 sizeof(r->raw) - 1 - r->raw_len)) > 0)
		r->raw_len += (size_t)n;
	if (n < 0)
		fail_msg("read: %s (after %zu bytes)", strerror(errno), r->raw_len);
	close(fd);
	r->raw[r->raw_len] = '\0';
	if (sscanf(r->raw, "HTTP/1.1 %d", &r->status) != 1)
		fail_msg("not an HTTP response: \"%.200s\"", r->raw);
	sep = strstr(r->raw, "\r\n\r\n");
	assert_non_null(sep);
	memcpy(r->head, r->raw, (size_t)(sep - r->raw) < sizeof(r->head) - 1 ?
	       (size_t)(sep - r->raw) : sizeof(r->head) - 1);
	r->body_len = r->raw_len - (size_t)(sep + 4 - r->raw);
	if (r->body_len >= sizeof(r->body))
		r->body_len = sizeof(r->body) - 1;
	memcpy(r->body, sep + 4, r->body_len);
}

/* Send RAW on a new connection and read until the server closes. */
static void raw_request(unsigned port, const char *raw, struct resp *r)
{
	int fd = connect_to(port);

	send_all(fd, raw, strlen(raw));
	read_resp(fd, r);
}

static void request(unsigned port, const char *method, const char *path,
		    struct resp *r)
{
	char raw[512];

	snprintf(raw, sizeof(raw), "%s %s HTTP/1.1\r\nHost: test\r\n"
		 "Connection: close\r\n\r\n", method, path);
	raw_request(port, raw, r);
}

/* The value of header NAME in R (its first line), or -1. */
static long header_num(const struct resp *r, const char *name)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\r\n%s: ", name);
	p = strstr(r->head, pat);
	return p ? strtol(p + strlen(pat), NULL, 10) : -1;
}

static bool header_is(const struct resp *r, const char *line)
{
	char pat[128];

	snprintf(pat, sizeof(pat), "\r\n%s\r\n", line);
	return strstr(r->raw, pat) != NULL;
}

/* The X-Worker of R, as a bit for a set of workers. */
static unsigned worker_bit(const struct resp *r)
{
	long w = header_num(r, "X-Worker");

	if (w < 0 || w > 31)
		fail_msg("bad X-Worker in \"%s\"", r->head);
	return 1u << w;
}

/* "KEY":NUMBER from /stats of the server on PORT. */
static long long stat_num(unsigned port, const char *key)
{
	struct resp r;
	char pat[64];
	const char *p;

	request(port, "GET", "/stats", &r);
	assert_int_equal(r.status, 200);
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(r.body, pat);
	if (p == NULL)
		fail_msg("/stats has no %s: %s", key, r.body);
	return strtoll(p + strlen(pat), NULL, 10);
}

/* Worker I's pid from /stats. */
static pid_t worker_pid(unsigned port, unsigned i)
{
	struct resp r;
	const char *p;

	request(port, "GET", "/stats", &r);
	p = strstr(r.body, "\"worker_pids\":[");
	assert_non_null(p);
	p += strlen("\"worker_pids\":[");
	while (i-- > 0) {
		p = strchr(p, ',');
		assert_non_null(p);
		p++;
	}
	return (pid_t)strtol(p, NULL, 10);
}

static void get_item(unsigned port, unsigned id, struct resp *r)
{
	char path[32];

	snprintf(path, sizeof(path), "/item/%u", id);
	request(port, "GET", path, r);
	if (r->status != 200)
		fail_msg("GET %s: %d %s", path, r->status, r->body);
}

static int group_setup(void **state)
{
	const char *args[] = { "--mode", "namestore", "--workers", "4",
			       "--segment", NULL, "--create", "--size",
			       "33554432", "--ttl-ms", TTL_MS_STR,
			       "--backend-us", BACKEND_US, NULL };

	(void)state;
	server_bin = getenv("PREFORK_HTTP");
	if (server_bin == NULL || access(server_bin, X_OK) != 0)
		t_skip_all("$PREFORK_HTTP does not name the prefork-http binary");
	signal(SIGPIPE, SIG_IGN);
	seg = t_name("http");
	args[5] = seg;
	if (server_start(&main_srv, "main", args) != 0) {
		print_error("# prefork-http did not start\n");
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	server_stop(&main_srv);
	server_stop(&priv_srv);
	ns_unlink(seg);
	return 0;
}

/* 300 requests over 50 keys, each key's six in a row (so that none can
 * expire between them): one backend call per key, the rest hits, and the
 * same bytes from every worker. */
static void test_hit_ratio(void **state)
{
	unsigned port = main_srv.port;
	long long calls0 = stat_num(port, "backend_calls");
	long long hits0 = stat_num(port, "hits");
	unsigned workers_seen = 0;

	(void)state;
	for (unsigned id = 1; id <= 50; id++) {
		struct resp first, r;

		get_item(port, id, &first);
		assert_true(header_is(&first, "X-Cache: miss"));
		for (int k = 0; k < 5; k++) {
			get_item(port, id, &r);
			assert_true(header_is(&r, "X-Cache: hit"));
			if (r.body_len != first.body_len ||
			    memcmp(r.body, first.body, r.body_len) != 0)
				fail_msg("id %u: worker %ld gave \"%s\", worker "
					 "%ld gave \"%s\"", id,
					 header_num(&first, "X-Worker"), first.body,
					 header_num(&r, "X-Worker"), r.body);
			workers_seen |= worker_bit(&r);
		}
	}
	long long calls = stat_num(port, "backend_calls") - calls0;
	long long hits = stat_num(port, "hits") - hits0;
	print_message("# 300 requests: %lld backend calls, %lld hits (ratio %.3f), "
		      "workers seen %#x\n", calls, hits, (double)hits / 300.0,
		      workers_seen);
	assert_int_equal(calls, 50);
	assert_int_equal(hits, 250);
	/* The same bytes from more than one worker: one shared cache. */
	assert_true(__builtin_popcount(workers_seen) >= 2);
}

/*
 * N connections each send GET /item/ID at once; returns the backend calls
 * they cost and sets *WORKERS to the set of workers that answered.
 */
static long long concurrent_gets(unsigned port, unsigned id, unsigned *workers)
{
	enum { N = 16 };
	int fds[N];
	char raw[128];
	long long calls0 = stat_num(port, "backend_calls");

	*workers = 0;
	snprintf(raw, sizeof(raw), "GET /item/%u HTTP/1.1\r\nHost: test\r\n"
		 "Connection: close\r\n\r\n", id);
	for (int i = 0; i < N; i++)
		fds[i] = connect_to(port);
	for (int i = 0; i < N; i++)
		send_all(fds[i], raw, strlen(raw));
	for (int i = 0; i < N; i++) {
		struct resp r;

		read_resp(fds[i], &r);
		assert_int_equal(r.status, 200);
		*workers |= worker_bit(&r);
	}
	return stat_num(port, "backend_calls") - calls0;
}

static void test_single_flight(void **state)
{
	unsigned workers;
	long long calls = concurrent_gets(main_srv.port, 1000, &workers);

	(void)state;
	print_message("# 16 concurrent GETs of a cold key: %lld backend call(s), "
		      "workers %#x\n", calls, workers);
	assert_int_equal(calls, 1);
	assert_true(__builtin_popcount(workers) >= 2);
}

/* The same with a cache per worker: each worker that misses loads. */
static void test_private_cache_loads_per_worker(void **state)
{
	const char *args[] = { "--mode", "private", "--workers", "4",
			       "--backend-us", BACKEND_US, NULL };
	unsigned workers;
	long long calls;

	(void)state;
	assert_int_equal(server_start(&priv_srv, "priv", args), 0);
	calls = concurrent_gets(priv_srv.port, 1000, &workers);
	print_message("# private mode, 16 concurrent GETs: %lld backend calls, "
		      "workers %#x\n", calls, workers);
	assert_int_equal(calls, __builtin_popcount(workers));
	assert_true(calls >= 2);
	server_stop(&priv_srv);
}

static void test_delete_invalidates(void **state)
{
	unsigned port = main_srv.port;
	long long calls0 = stat_num(port, "backend_calls");
	struct resp r;

	(void)state;
	get_item(port, 3000, &r);
	assert_true(header_is(&r, "X-Cache: miss"));
	get_item(port, 3000, &r);
	assert_true(header_is(&r, "X-Cache: hit"));
	request(port, "DELETE", "/item/3000", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"deleted\":true}\n");
	request(port, "DELETE", "/item/3000", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"deleted\":false}\n");
	get_item(port, 3000, &r);
	assert_true(header_is(&r, "X-Cache: miss"));
	assert_int_equal(stat_num(port, "backend_calls") - calls0, 2);
}

static void test_ttl_expiry(void **state)
{
	unsigned port = main_srv.port;
	long long calls0 = stat_num(port, "backend_calls");
	struct resp r;

	(void)state;
	get_item(port, 3500, &r);
	get_item(port, 3500, &r);
	assert_true(header_is(&r, "X-Cache: hit"));
	usleep((TTL_MS + 500) * 1000);
	get_item(port, 3500, &r);
	assert_true(header_is(&r, "X-Cache: miss"));
	assert_int_equal(stat_num(port, "backend_calls") - calls0, 2);
}

static void test_worker_restart_keeps_cache(void **state)
{
	unsigned port = main_srv.port;
	long long restarts0 = stat_num(port, "worker_restarts");
	pid_t victim = worker_pid(port, 1), now = victim;
	uint64_t end;
	long long calls0;
	struct resp r;

	(void)state;
	for (unsigned id = 4000; id < 4020; id++)
		get_item(port, id, &r);
	calls0 = stat_num(port, "backend_calls");
	assert_int_equal(kill(victim, SIGKILL), 0);
	end = t_now_ns() + 5000000000ull;
	while (t_now_ns() < end) {
		now = worker_pid(port, 1);
		if (now != victim && now > 0 &&
		    stat_num(port, "worker_restarts") == restarts0 + 1)
			break;
		usleep(20000);
	}
	print_message("# worker 1: pid %d killed, now pid %d\n", (int)victim,
		      (int)now);
	assert_int_not_equal(now, victim);
	assert_int_equal(stat_num(port, "worker_restarts"), restarts0 + 1);
	/* Every warmed key, asked again and again (the new worker among
	 * those answering): all hits.  The TTL is far above what these
	 * 80 requests take. */
	for (int k = 0; k < 4; k++) {
		for (unsigned id = 4000; id < 4020; id++)
			get_item(port, id, &r);
	}
	assert_int_equal(stat_num(port, "backend_calls") - calls0, 0);
}

struct bad_case {
	const char *raw;
	int status;
	bool closes;
	const char *header;   /* a header line the response must carry, or NULL */
};

static void test_errors_over_the_wire(void **state)
{
	static char huge[HUGE_HEAD];
	static const struct bad_case cases[] = {
		{ "garbage\r\n\r\n", 400, true, NULL },
		{ "\x01\x02\x03", 400, true, NULL },
		{ "GET /item/1 HTTP/1.1\r\n\r\n", 400, true, NULL },
		{ "GET /item/1 HTTP/1.1\r\nHost: t\r\nBad Field: x\r\n\r\n", 400, true, NULL },
		{ "GET /item/1 HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n", 400, true, NULL },
		{ "GET /item/1 HTTP/2.0\r\nHost: t\r\n\r\n", 505, true, NULL },
		{ "POST /item/1 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
		  501, true, NULL },
		{ "DELETE /item/1 HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n",
		  413, true, NULL },
		{ "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", 404, false, NULL },
		{ "GET /item/abc HTTP/1.1\r\nHost: t\r\n\r\n", 404, false, NULL },
		{ "GET /item/1234567890 HTTP/1.1\r\nHost: t\r\n\r\n", 404, false, NULL },
		{ "PUT /item/1 HTTP/1.1\r\nHost: t\r\n\r\n", 405, false, "Allow: GET, DELETE" },
		{ "POST /stats HTTP/1.1\r\nHost: t\r\n\r\n", 405, false, "Allow: GET" },
	};
	unsigned port = main_srv.port;
	long long restarts0 = stat_num(port, "worker_restarts");
	long long errors0 = stat_num(port, "errors");
	struct resp r;
	int fd;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct bad_case *c = &cases[i];
		char raw[512];

		/* A case that keeps the connection gets a second request
		 * after it, which closes: two responses, in order. */
		snprintf(raw, sizeof(raw), "%s%s", c->raw, c->closes ? "" :
			 "GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
		raw_request(port, raw, &r);
		if (r.status != c->status)
			fail_msg("case %zu: status %d, want %d: %s", i, r.status,
				 c->status, r.raw);
		assert_true(strstr(r.body, "\"error\"") != NULL);
		if (c->closes) {
			assert_true(header_is(&r, "Connection: close"));
		} else {
			const char *second = strstr(r.body, "HTTP/1.1 200 OK");
			if (second == NULL)
				fail_msg("case %zu: no second response: %s", i, r.raw);
		}
		if (c->header != NULL)
			assert_true(header_is(&r, c->header));
	}
	/* A head over 8 KiB. */
	memset(huge, 'a', sizeof(huge) - 1);
	memcpy(huge, "GET /item/1 HTTP/1.1\r\nHost: t\r\nX: ", 34);
	memcpy(huge + sizeof(huge) - 5, "\r\n\r\n", 5);
	raw_request(port, huge, &r);
	assert_int_equal(r.status, 431);

	/* A body is read and skipped, and the next request is framed right;
	 * pipelined requests are answered in order; HTTP/1.0 closes. */
	raw_request(port, "DELETE /item/1 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n"
		    "helloGET /item/2 HTTP/1.1\r\nHost: t\r\n\r\n"
		    "GET /item/2 HTTP/1.0\r\n\r\n", &r);
	assert_int_equal(r.status, 200);
	{
		const char *second = strstr(r.body, "HTTP/1.1 200 OK");
		assert_non_null(second);
		assert_non_null(strstr(second + 1, "HTTP/1.1 200 OK"));
	}
	/* A client that sends half a request and goes away. */
	fd = connect_to(port);
	send_all(fd, "GET /item/1 HTT", 15);
	close(fd);

	/* Nothing crashed, and every error was counted (13 cases and 431). */
	assert_int_equal(stat_num(port, "worker_restarts"), restarts0);
	assert_int_equal(stat_num(port, "errors") - errors0, 14);
	get_item(port, 1, &r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hit_ratio),
		cmocka_unit_test(test_single_flight),
		cmocka_unit_test(test_private_cache_loads_per_worker),
		cmocka_unit_test(test_delete_invalidates),
		cmocka_unit_test(test_ttl_expiry),
		cmocka_unit_test(test_worker_restart_keeps_cache),
		cmocka_unit_test(test_errors_over_the_wire),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
