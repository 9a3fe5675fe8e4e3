/*
 * server.c - prefork-http: a prefork HTTP/1.1 server whose workers share
 * one NameStore cache.
 *
 * This is the shape NameStore is built for: a parent opens the listening
 * socket, attaches the cache, and forks N workers that inherit both; a
 * worker that dies (a crash, the OOM killer, an operator's kill -9) is
 * replaced by the parent, and the cache it shared is still there for its
 * successor.  Three modes answer the same routes so that they can be
 * compared under one load:
 *
 *   --mode none       every GET /item/<id> calls the backend
 *   --mode private    each worker keeps its own hash map (the same TTL):
 *                     what a prefork server without a shared cache does
 *   --mode namestore  all workers share one NameStore namespace through
 *                     ns_get_or_set: a key that expires, or that N workers
 *                     miss at once, costs one backend call, not N
 *
 * Routes:
 *
 *   GET /item/<id>     the item rendered by the backend, cached with a TTL;
 *                      X-Cache says hit, miss or none, X-Worker who served
 *   DELETE /item/<id>  invalidate it: {"deleted":true|false}
 *   GET /stats         the counters, as JSON: the server's own (requests,
 *                      backend calls, hits, misses, responses by class,
 *                      summed over the workers), the worker pids and
 *                      restarts, and in namestore mode the namespace's
 *
 * The backend is simulated: it sleeps --backend-us (2 ms by default) and
 * then renders a JSON body of about 600 bytes.  It sleeps rather than
 * spins because what a cache usually stands in front of is a database or
 * another service: the worker waits, the CPU is free for the others.  That
 * wait is also what makes prefork workers scarce (a worker blocked on the
 * backend serves nobody), which is the cost a cache removes.
 *
 * Workers and connections.  One listening socket, shared: each worker has
 * its own epoll instance with the socket in it, and accepts one connection
 * per wake-up.  wrk, like many clients, opens all its connections at once;
 * with EPOLLEXCLUSIVE (one worker woken per connection) one worker took
 * most of such a burst, and the others sat idle.  So every worker is woken
 * for a new connection (4 wake-ups per connection, none per request on a
 * keep-alive connection), and a worker that holds more than its share of
 * the open connections (the average plus one) stops accepting until it is
 * back under it: nginx's accept_disabled idea, with the counts in the
 * shared block.  SO_REUSEPORT (one socket per worker) would spread
 * connections by a hash instead, but the connections queued on a worker's
 * socket die with it, and a restarted worker would have to bind a new
 * socket; with one shared socket a dead worker loses only the connections
 * it had accepted.  Connections are non-blocking and keep-alive; requests
 * are parsed by http.c (pipelining works: every complete request in the
 * buffer is answered in order).
 *
 * Counters.  The parent maps one MAP_SHARED anonymous block before fork:
 * one cache line of counters per worker slot, each written only by the
 * worker in that slot (a restarted worker continues its predecessor's
 * counts), plus the worker pids and the restart count, written only by the
 * parent.  /stats sums them with relaxed loads: a snapshot good to a
 * request or two under load, exact when the server is idle.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <urcu/system.h>

#include "http.h"
#include "namestore.h"

#define MAX_WORKERS 64u

/* Input buffer of one connection: a whole head and body always fit. */
#define IN_CAP (HTTP_HEAD_MAX + HTTP_BODY_MAX)

/* A connection stops reading requests while this much output waits for
 * the peer, so a client that pipelines and never reads cannot make the
 * worker buffer without bound. */
#define OUT_HIGH (64u * 1024u)

/* Bytes of a rendered item, with room to spare (ns_get_or_set's buffer). */
#define BODY_CAP 2048u

/* Events taken per epoll_wait; any number works, this is nginx's 512/8. */
#define MAX_EVENTS 64

/* How often a worker that stopped accepting looks again at its share. */
#define BALANCE_MS 10

/* The private cache: chained buckets, at most PRIV_MAX items (beyond
 * that a miss is served but not stored; the demo's key space is far
 * below it). */
#define PRIV_BUCKETS 8192u
#define PRIV_MAX 65536u

/* How long the parent gives its workers to exit on SIGTERM before it
 * SIGKILLs them: they finish the request at hand, at most one backend
 * call, far below this. */
#define STOP_GRACE_MS 3000

/* A worker slot that dies again within this long of its last start is
 * restarted only after RESTART_DELAY_MS, so a worker that crashes at once
 * cannot make the parent fork in a tight loop. */
#define RESTART_FAST_MS 1000
#define RESTART_DELAY_MS 100

enum mode { MODE_NONE, MODE_PRIVATE, MODE_NAMESTORE };
static const char *const mode_names[] = { "none", "private", "namestore" };

/*
 * One worker slot's counters, in the shared block.  Written only by the
 * worker in that slot (plain increments through CMM_STORE_SHARED: there is
 * one writer), read by any worker for /stats (CMM_LOAD_SHARED, relaxed).
 * A cache line each, so workers never write a shared line.
 */
struct worker_counters {
	_Alignas(64) uint64_t requests;  /* responses sent, errors included */
	uint64_t backend_calls;          /* loads run by this worker */
	uint64_t hits;                   /* GET /item served without a load
					  * of its own (private, namestore) */
	uint64_t misses;                 /* GET /item that ran the backend */
	uint64_t status_2xx, status_4xx, status_5xx;
	uint64_t connections;            /* accepted */
	uint64_t open;                   /* connections open now; reset by a
					  * new worker in the slot */
};

/* The block shared by the parent and every worker (MAP_SHARED). */
struct shared_block {
	uint64_t restarts;               /* parent writes; workers read */
	int32_t pids[MAX_WORKERS];       /* parent writes; workers read */
	struct worker_counters w[MAX_WORKERS];
};

struct options {
	enum mode mode;
	unsigned workers;
	const char *listen_addr;
	unsigned port;                   /* 0: any free port */
	const char *port_file;           /* where to write the port, or NULL */
	const char *segment;             /* namestore mode */
	bool create;
	uint64_t seg_size;
	uint64_t ttl_ms;
	unsigned backend_us;
};

/* One connection, owned by the worker that accepted it. */
struct conn {
	int fd;
	bool closing;        /* read no more; close once out is sent */
	bool want_out;       /* registered for EPOLLOUT instead of EPOLLIN */
	size_t in_len;
	char *out;
	size_t out_len, out_off, out_cap;
	char in[IN_CAP];
};

struct priv_entry {
	struct priv_entry *next;
	uint32_t id;
	uint64_t expire_ms;  /* CLOCK_MONOTONIC */
	size_t len;
	char body[];
};

static struct options opt = {
	.mode = MODE_NAMESTORE,
	.workers = 4,
	.listen_addr = "127.0.0.1",
	.seg_size = 64u << 20,
	.ttl_ms = 5000,
	.backend_us = 2000,
};

static struct shared_block *shm;
static ns_cache *cache;
static ns_space *space;

/* In a worker: its slot, its epoll instance and its private cache. */
static unsigned me;
static int epfd = -1;
static bool accepting;
static struct priv_entry *priv_tab[PRIV_BUCKETS];
static unsigned priv_count;

/* Set by SIGTERM in a worker; its loop looks at it after EINTR.  A
 * volatile sig_atomic_t is what C lets a handler write. */
static volatile sig_atomic_t worker_stop;

static void on_worker_term(int sig)
{
	(void)sig;
	worker_stop = 1;
}

static uint64_t now_ms(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* One writer per counter (this worker): a load and a store suffice. */
static void bump(uint64_t *x)
{
	CMM_STORE_SHARED(*x, CMM_LOAD_SHARED(*x) + 1);
}

/* ---- the backend ---------------------------------------------------- */

/*
 * Render item ID into BUF after --backend-us of simulated work (a sleep;
 * see the top of the file).  The body names who rendered it and when, so a
 * test can tell a cached copy from a fresh one.
 */
static size_t backend_render(uint32_t id, char *buf, size_t cap)
{
	struct timespec ts = { .tv_sec = opt.backend_us / 1000000u,
			       .tv_nsec = (long)(opt.backend_us % 1000000u) * 1000L };
	char text[401];
	uint32_t x = id * 2654435761u; /* Knuth's multiplicative hash */
	int n;

	while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
		;
	bump(&shm->w[me].backend_calls);
	for (size_t i = 0; i < sizeof(text) - 1; i++) {
		x = x * 1103515245u + 12345u; /* the C standard's example LCG */
		text[i] = (char)('a' + (x >> 16) % 26);
	}
	text[sizeof(text) - 1] = '\0';
	n = snprintf(buf, cap,
		     "{\"id\":%" PRIu32 ",\"name\":\"item %" PRIu32 "\","
		     "\"price_cents\":%" PRIu32 ",\"rendered_by\":%d,"
		     "\"rendered_at_ms\":%" PRIu64 ",\"text\":\"%s\"}\n",
		     id, id, (id * 37u) % 10000u, (int)getpid(),
		     now_ms(CLOCK_REALTIME), text);
	return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* ---- the private cache (mode private) -------------------------------- */

static struct priv_entry **priv_slot(uint32_t id)
{
	return &priv_tab[(id * 2654435761u) % PRIV_BUCKETS];
}

/* Unlink and free the entry *PP points at. */
static void priv_drop(struct priv_entry **pp)
{
	struct priv_entry *e = *pp;

	*pp = e->next;
	free(e);
	priv_count--;
}

static bool priv_get(uint32_t id, char *buf, size_t cap, size_t *n)
{
	for (struct priv_entry **pp = priv_slot(id); *pp; pp = &(*pp)->next) {
		struct priv_entry *e = *pp;

		if (e->id != id)
			continue;
		if (now_ms(CLOCK_MONOTONIC) >= e->expire_ms || e->len > cap) {
			priv_drop(pp);
			return false;
		}
		memcpy(buf, e->body, e->len);
		*n = e->len;
		return true;
	}
	return false;
}

static bool priv_del(uint32_t id)
{
	for (struct priv_entry **pp = priv_slot(id); *pp; pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			priv_drop(pp);
			return true;
		}
	}
	return false;
}

static void priv_put(uint32_t id, const char *body, size_t len)
{
	struct priv_entry **pp = priv_slot(id), *e;

	priv_del(id);
	if (priv_count >= PRIV_MAX)
		return;
	e = malloc(sizeof(*e) + len);
	if (e == NULL)
		return;
	e->id = id;
	e->expire_ms = now_ms(CLOCK_MONOTONIC) + opt.ttl_ms;
	e->len = len;
	memcpy(e->body, body, len);
	e->next = *pp;
	*pp = e;
	priv_count++;
}

/* ---- items through the cache of the mode ---------------------------- */

struct load_arg {
	uint32_t id;
	bool called;
	char body[BODY_CAP];
};

/* ns_loader_fn: run the backend for a key NameStore does not have. */
static int load_item(void *arg, const void *key, size_t klen,
		     struct ns_value *out)
{
	struct load_arg *a = arg;

	(void)key;
	(void)klen;
	a->called = true;
	out->vlen = backend_render(a->id, a->body, sizeof(a->body));
	out->val = a->body;
	out->ttl_ms = opt.ttl_ms;
	out->flags = 0;
	return 0;
}

/*
 * Item ID into BUF (BODY_CAP bytes), through the mode's cache.  Sets *CACHE
 * to "hit", "miss" or "none".  Returns 0 or a NameStore error.
 */
static int item_get(uint32_t id, char *buf, size_t *n, const char **state)
{
	struct load_arg a = { .id = id };
	char key[16];
	int klen, r;

	switch (opt.mode) {
	case MODE_NONE:
		*state = "none";
		*n = backend_render(id, buf, BODY_CAP);
		return 0;
	case MODE_PRIVATE:
		if (priv_get(id, buf, BODY_CAP, n)) {
			a.called = false;
		} else {
			a.called = true;
			*n = backend_render(id, buf, BODY_CAP);
			priv_put(id, buf, *n);
		}
		break;
	case MODE_NAMESTORE:
		klen = snprintf(key, sizeof(key), "%" PRIu32, id);
		r = ns_get_or_set(space, key, (size_t)klen, buf, BODY_CAP, n,
				  load_item, &a, NULL);
		if (r != 0)
			return r;
		break;
	}
	*state = a.called ? "miss" : "hit";
	bump(a.called ? &shm->w[me].misses : &shm->w[me].hits);
	return 0;
}

/* Invalidate item ID: 1 if something was cached, 0 if not, or an error. */
static int item_del(uint32_t id)
{
	char key[16];
	int klen, r;

	switch (opt.mode) {
	case MODE_PRIVATE:
		return priv_del(id) ? 1 : 0;
	case MODE_NAMESTORE:
		klen = snprintf(key, sizeof(key), "%" PRIu32, id);
		r = ns_del(space, key, (size_t)klen);
		return r == 0 ? 1 : r == NS_ENOTFOUND ? 0 : r;
	case MODE_NONE:
		break;
	}
	return 0;
}

/* ---- responses ------------------------------------------------------ */

static bool out_reserve(struct conn *c, size_t more)
{
	size_t cap = c->out_cap ? c->out_cap : 4096u;
	char *p;

	if (c->out_len + more <= c->out_cap)
		return true;
	while (cap < c->out_len + more)
		cap *= 2;
	p = realloc(c->out, cap);
	if (p == NULL)
		return false;
	c->out = p;
	c->out_cap = cap;
	return true;
}

/*
 * Queue a response on C.  EXTRA is more header lines, each ending in CRLF
 * (or ""); CLOSE says the connection ends after it.  MINOR is the request's
 * HTTP minor version: an HTTP/1.0 client that asked for keep-alive is told
 * it got it.
 */
static void respond(struct conn *c, int status, const char *extra,
		    const char *body, size_t blen, bool close, unsigned minor)
{
	char head[512];
	int h;

	h = snprintf(head, sizeof(head),
		     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
		     "Content-Length: %zu\r\nX-Worker: %u\r\n%s%s\r\n",
		     status, http_reason(status), blen, me, extra,
		     close ? "Connection: close\r\n" :
		     minor == 0 ? "Connection: keep-alive\r\n" : "");
	if (h < 0 || (size_t)h >= sizeof(head) ||
	    !out_reserve(c, (size_t)h + blen)) {
		c->closing = true; /* out of memory: drop the connection */
		return;
	}
	memcpy(c->out + c->out_len, head, (size_t)h);
	memcpy(c->out + c->out_len + (size_t)h, body, blen);
	c->out_len += (size_t)h + blen;
	if (close)
		c->closing = true;
	bump(&shm->w[me].requests);
	bump(status < 300 ? &shm->w[me].status_2xx :
	     status < 500 ? &shm->w[me].status_4xx : &shm->w[me].status_5xx);
}

static void respond_error(struct conn *c, int status, const char *extra,
			  const char *why, bool close, unsigned minor)
{
	char body[256];
	int n = snprintf(body, sizeof(body),
			 "{\"status\":%d,\"error\":\"%s\"}\n", status, why);

	respond(c, status, extra, body, (size_t)n, close, minor);
}

static void respond_stats(struct conn *c, bool close, unsigned minor)
{
	struct worker_counters sum = { 0 };
	char body[4096];
	size_t n = 0;

#define APPEND(...) \
	n += (size_t)snprintf(body + n, n < sizeof(body) ? sizeof(body) - n : 0, __VA_ARGS__)
	for (unsigned i = 0; i < opt.workers; i++) {
		struct worker_counters *w = &shm->w[i];

		sum.requests += CMM_LOAD_SHARED(w->requests);
		sum.backend_calls += CMM_LOAD_SHARED(w->backend_calls);
		sum.hits += CMM_LOAD_SHARED(w->hits);
		sum.misses += CMM_LOAD_SHARED(w->misses);
		sum.status_2xx += CMM_LOAD_SHARED(w->status_2xx);
		sum.status_4xx += CMM_LOAD_SHARED(w->status_4xx);
		sum.status_5xx += CMM_LOAD_SHARED(w->status_5xx);
		sum.connections += CMM_LOAD_SHARED(w->connections);
	}
	APPEND("{\"mode\":\"%s\",\"workers\":%u,\"worker_restarts\":%" PRIu64
	       ",\"worker_pids\":[", mode_names[opt.mode], opt.workers,
	       CMM_LOAD_SHARED(shm->restarts));
	for (unsigned i = 0; i < opt.workers; i++)
		APPEND("%s%d", i ? "," : "", (int)CMM_LOAD_SHARED(shm->pids[i]));
	APPEND("],\"ttl_ms\":%" PRIu64 ",\"backend_us\":%u,"
	       "\"requests\":%" PRIu64 ",\"backend_calls\":%" PRIu64
	       ",\"hits\":%" PRIu64 ",\"misses\":%" PRIu64
	       ",\"responses_2xx\":%" PRIu64 ",\"responses_4xx\":%" PRIu64
	       ",\"responses_5xx\":%" PRIu64 ",\"errors\":%" PRIu64
	       ",\"connections\":%" PRIu64,
	       opt.ttl_ms, opt.backend_us, sum.requests, sum.backend_calls,
	       sum.hits, sum.misses, sum.status_2xx, sum.status_4xx,
	       sum.status_5xx, sum.status_4xx + sum.status_5xx,
	       sum.connections);
	if (opt.mode == MODE_NAMESTORE) {
		struct ns_space_info si;

		if (ns_space_info(space, &si) == 0)
			APPEND(",\"namestore\":{\"items\":%" PRIu64
			       ",\"hits\":%" PRIu64 ",\"misses\":%" PRIu64
			       ",\"sets\":%" PRIu64 ",\"deletes\":%" PRIu64
			       ",\"evictions\":%" PRIu64
			       ",\"expirations\":%" PRIu64 "}",
			       si.items, si.hits, si.misses, si.sets,
			       si.deletes, si.evictions, si.expirations);
	}
	APPEND("}\n");
#undef APPEND
	if (n >= sizeof(body)) {
		respond_error(c, 500, "", "stats too long", close, minor);
		return;
	}
	respond(c, 200, "", body, n, close, minor);
}

/* The id of a target "/item/<id>[?query]": 1 to 9 digits.  -1 if not. */
static int64_t item_id(const char *t, size_t n)
{
	size_t i = 6, digits = 0;
	int64_t id = 0;

	if (n < 6 || memcmp(t, "/item/", 6) != 0)
		return -1;
	for (; i < n && t[i] >= '0' && t[i] <= '9'; i++, digits++)
		id = id * 10 + (t[i] - '0');
	if (digits == 0 || digits > 9 || (i < n && t[i] != '?'))
		return -1;
	return id;
}

static bool method_is(const struct http_req *req, const char *m)
{
	return req->method_len == strlen(m) &&
	       memcmp(req->method, m, req->method_len) == 0;
}

/* Answer one complete request. */
static void handle(struct conn *c, const struct http_req *req)
{
	bool close = !req->keep_alive;
	size_t plen = req->target_len;
	const char *q = memchr(req->target, '?', req->target_len);
	int64_t id;

	if (q != NULL)
		plen = (size_t)(q - req->target);
	if (plen == 6 && memcmp(req->target, "/stats", 6) == 0) {
		if (!method_is(req, "GET"))
			respond_error(c, 405, "Allow: GET\r\n",
				      "method not allowed", close, req->minor);
		else
			respond_stats(c, close, req->minor);
		return;
	}
	id = item_id(req->target, req->target_len);
	if (id < 0) {
		respond_error(c, 404, "", "no such route", close, req->minor);
		return;
	}
	if (method_is(req, "GET")) {
		char body[BODY_CAP], extra[64];
		const char *state = "none";
		size_t n = 0;
		int r = item_get((uint32_t)id, body, &n, &state);

		if (r != 0) {
			respond_error(c, 503, "", ns_strerror(r), close,
				      req->minor);
			return;
		}
		snprintf(extra, sizeof(extra), "X-Cache: %s\r\n", state);
		respond(c, 200, extra, body, n, close, req->minor);
	} else if (method_is(req, "DELETE")) {
		int r = item_del((uint32_t)id);

		if (r < 0)
			respond_error(c, 503, "", ns_strerror(r), close,
				      req->minor);
		else
			respond(c, 200, "", r ? "{\"deleted\":true}\n" :
				"{\"deleted\":false}\n", r ? 17 : 18, close,
				req->minor);
	} else {
		respond_error(c, 405, "Allow: GET, DELETE\r\n",
			      "method not allowed", close, req->minor);
	}
}

/* ---- connections ---------------------------------------------------- */

static const char *error_why(int status)
{
	switch (status) {
	case 413: return "request body too large";
	case 431: return "request head too large";
	case 501: return "transfer codings are not supported";
	case 505: return "only HTTP/1.0 and HTTP/1.1 are supported";
	default: return "malformed request";
	}
}

/* Answer every complete request buffered on C.  Returns how many. */
static unsigned conn_process(struct conn *c)
{
	unsigned done = 0;

	while (!c->closing && c->out_len - c->out_off < OUT_HIGH) {
		struct http_req req;
		int r = http_parse(c->in, c->in_len, &req);
		size_t total;

		if (r == 0)
			break;
		if (r < 0) {
			respond_error(c, -r, "", error_why(-r), true, 1);
			done++;
			break;
		}
		total = req.head_len + (size_t)req.content_length;
		if (c->in_len < total)
			break; /* the body is still arriving */
		handle(c, &req);
		memmove(c->in, c->in + total, c->in_len - total);
		c->in_len -= total;
		done++;
	}
	return done;
}

/* Read what the socket has.  Returns 0, 1 at end of stream, -1 on error. */
static int conn_read(struct conn *c)
{
	while (c->in_len < IN_CAP) {
		ssize_t n = read(c->fd, c->in + c->in_len, IN_CAP - c->in_len);

		if (n > 0) {
			c->in_len += (size_t)n;
		} else if (n == 0) {
			return 1;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			return 0;
		} else if (errno != EINTR) {
			return -1;
		}
	}
	return 0;
}

/* Send queued output.  Returns 1 when all is sent, 0 when the socket is
 * full, -1 on error. */
static int conn_flush(struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off,
				 c->out_len - c->out_off, MSG_NOSIGNAL);

		if (n > 0)
			c->out_off += (size_t)n;
		else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		else if (n < 0 && errno == EINTR)
			continue;
		else
			return -1;
	}
	c->out_off = c->out_len = 0;
	return 1;
}

static void conn_close(struct conn *c)
{
	CMM_STORE_SHARED(shm->w[me].open, CMM_LOAD_SHARED(shm->w[me].open) - 1);
	epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->out);
	free(c);
}

static void conn_want(struct conn *c, bool out)
{
	struct epoll_event ev = { .events = out ? EPOLLOUT : EPOLLIN,
				  .data.ptr = c };

	if (c->want_out != out) {
		epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
		c->want_out = out;
	}
}

static void conn_event(struct conn *c, uint32_t events)
{
	bool eof = false;
	int r;

	if (!c->closing && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
		r = conn_read(c);
		if (r < 0) {
			conn_close(c);
			return;
		}
		eof = r == 1;
	}
	for (;;) {
		unsigned done = conn_process(c);

		r = conn_flush(c);
		if (r < 0) {
			conn_close(c);
			return;
		}
		if (r == 0) {
			conn_want(c, true);
			return;
		}
		if (c->closing || (eof && done == 0)) {
			conn_close(c);
			return;
		}
		if (done == 0)
			break;
	}
	conn_want(c, false);
}

static void accept_one(int lfd)
{
	int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	int one = 1;
	struct conn *c;
	struct epoll_event ev = { .events = EPOLLIN };

	if (fd < 0)
		return; /* EAGAIN: another worker took it; EMFILE: retry later */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		close(fd);
		return;
	}
	c->fd = fd;
	ev.data.ptr = c;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
		close(fd);
		free(c);
		return;
	}
	bump(&shm->w[me].connections);
	bump(&shm->w[me].open);
}

/*
 * Accept only while this worker holds at most the average number of open
 * connections plus one (the worker with the fewest always qualifies, so
 * somebody always accepts).
 */
static void balance(int lfd)
{
	uint64_t total = 0, mine = CMM_LOAD_SHARED(shm->w[me].open);
	struct epoll_event ev = { .data.ptr = NULL };
	bool want;

	for (unsigned i = 0; i < opt.workers; i++)
		total += CMM_LOAD_SHARED(shm->w[i].open);
	want = mine * opt.workers <= total + opt.workers;
	if (want != accepting) {
		ev.events = want ? EPOLLIN : 0;
		epoll_ctl(epfd, EPOLL_CTL_MOD, lfd, &ev);
		accepting = want;
	}
}

static void worker_main(unsigned slot, int lfd, pid_t parent)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	struct epoll_event evs[MAX_EVENTS];
	struct sigaction sa = { .sa_handler = on_worker_term };
	sigset_t none;

	me = slot;
	CMM_STORE_SHARED(shm->w[me].open, 0); /* the dead one's are closed */
	/* Die with the parent, whatever kills it: no orphaned workers. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev) != 0) {
		perror("prefork-http: epoll");
		_exit(1);
	}
	accepting = true;
	while (!worker_stop) {
		int n;

		balance(lfd);
		n = epoll_wait(epfd, evs, MAX_EVENTS, accepting ? -1 : BALANCE_MS);

		for (int i = 0; i < n; i++) {
			if (evs[i].data.ptr == NULL)
				accept_one(lfd);
			else
				conn_event(evs[i].data.ptr, evs[i].events);
		}
	}
	/* Give this worker's client slot back, so that nobody has to
	 * recover it as a dead client's (a SIGKILLed worker leaves that to
	 * nsd or to whoever trips over it).  NULL in the other modes. */
	ns_detach(cache);
	_exit(0);
}

/* ---- the parent ----------------------------------------------------- */

static pid_t start_worker(unsigned slot, int lfd)
{
	pid_t parent = getpid();
	pid_t pid = fork();

	if (pid == 0)
		worker_main(slot, lfd, parent);
	if (pid > 0)
		CMM_STORE_SHARED(shm->pids[slot], (int32_t)pid);
	return pid;
}

static int listen_socket(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons((uint16_t)opt.port) };
	socklen_t len = sizeof(sa);
	int one = 1;
	int fd;

	if (inet_pton(AF_INET, opt.listen_addr, &sa.sin_addr) != 1) {
		fprintf(stderr, "prefork-http: bad --listen address %s\n",
			opt.listen_addr);
		return -1;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    listen(fd, 1024) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
		fprintf(stderr, "prefork-http: listen on %s:%u: %s\n",
			opt.listen_addr, opt.port, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	opt.port = ntohs(sa.sin_port);
	return fd;
}

/* Write the port to --port-file atomically (a reader never sees half). */
static int write_port_file(void)
{
	char tmp[4096];
	FILE *f;

	if (opt.port_file == NULL)
		return 0;
	snprintf(tmp, sizeof(tmp), "%s.tmp", opt.port_file);
	f = fopen(tmp, "w");
	if (f == NULL || fprintf(f, "%u\n", opt.port) < 0 || fclose(f) != 0 ||
	    rename(tmp, opt.port_file) != 0) {
		fprintf(stderr, "prefork-http: %s: %s\n", opt.port_file,
			strerror(errno));
		return -1;
	}
	return 0;
}

static int attach_cache(void)
{
	struct ns_attach_opts o = { .flags = opt.create ? NS_CREATE : 0,
				    .size = opt.seg_size };
	int r;

	if (opt.segment == NULL) {
		fprintf(stderr, "prefork-http: --mode namestore needs --segment\n");
		return -1;
	}
	r = ns_attach(opt.segment, &o, &cache);
	if (r == 0)
		r = ns_space_open(cache, "http:items", &space);
	if (r != 0) {
		fprintf(stderr, "prefork-http: segment %s: %s\n", opt.segment,
			ns_strerror(r));
		return -1;
	}
	return 0;
}

static void stop_workers(pid_t *pids)
{
	uint64_t end = now_ms(CLOCK_MONOTONIC) + STOP_GRACE_MS;
	unsigned left = 0;

	for (unsigned i = 0; i < opt.workers; i++) {
		if (pids[i] > 0) {
			kill(pids[i], SIGTERM);
			left++;
		}
	}
	while (left > 0) {
		pid_t p = waitpid(-1, NULL, WNOHANG);

		if (p > 0) {
			for (unsigned i = 0; i < opt.workers; i++) {
				if (pids[i] == p) {
					pids[i] = 0;
					left--;
				}
			}
			continue;
		}
		if (p < 0 && errno == ECHILD)
			break;
		if (now_ms(CLOCK_MONOTONIC) >= end) {
			for (unsigned i = 0; i < opt.workers; i++) {
				if (pids[i] > 0)
					kill(pids[i], SIGKILL);
			}
			end = UINT64_MAX;
		}
		usleep(10000);
	}
}

static void describe_exit(unsigned slot, pid_t pid, int status)
{
	if (WIFSIGNALED(status))
		fprintf(stderr, "prefork-http: worker %u (pid %d) killed by "
			"signal %d; restarting it\n", slot, (int)pid,
			WTERMSIG(status));
	else
		fprintf(stderr, "prefork-http: worker %u (pid %d) exited with "
			"status %d; restarting it\n", slot, (int)pid,
			WEXITSTATUS(status));
}

/*
 * The parent's loop: wait for signals (all blocked, taken with
 * sigwaitinfo, so nothing runs in a handler), restart dead workers, and
 * stop everything on SIGTERM or SIGINT.
 */
static int supervise(int lfd)
{
	pid_t pids[MAX_WORKERS] = { 0 };
	uint64_t started[MAX_WORKERS] = { 0 };
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	for (unsigned i = 0; i < opt.workers; i++) {
		pids[i] = start_worker(i, lfd);
		started[i] = now_ms(CLOCK_MONOTONIC);
		if (pids[i] < 0) {
			perror("prefork-http: fork");
			stop_workers(pids);
			return 1;
		}
	}
	for (;;) {
		int sig = sigwaitinfo(&set, NULL);
		pid_t p;
		int st;

		if (sig == SIGTERM || sig == SIGINT) {
			stop_workers(pids);
			return 0;
		}
		while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
			for (unsigned i = 0; i < opt.workers; i++) {
				if (pids[i] != p)
					continue;
				describe_exit(i, p, st);
				if (now_ms(CLOCK_MONOTONIC) - started[i] <
				    RESTART_FAST_MS)
					usleep(RESTART_DELAY_MS * 1000);
				pids[i] = start_worker(i, lfd);
				started[i] = now_ms(CLOCK_MONOTONIC);
				CMM_STORE_SHARED(shm->restarts,
						 CMM_LOAD_SHARED(shm->restarts) + 1);
				if (pids[i] < 0)
					perror("prefork-http: fork");
			}
		}
	}
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: prefork-http [options]\n"
		"  --mode none|private|namestore  cache of GET /item/<id> "
		"(default namestore)\n"
		"  --workers N        worker processes (default 4, at most %u)\n"
		"  --listen ADDR      IPv4 address to listen on (default 127.0.0.1)\n"
		"  --port N           port (default 0: any free one)\n"
		"  --port-file PATH   write the port there once listening\n"
		"  --segment NAME     NameStore segment (/dev/shm/NAME), namestore mode\n"
		"  --create           create the segment if absent\n"
		"  --size BYTES       size of a created segment (default 64 MiB)\n"
		"  --ttl-ms MS        TTL of a cached item (default 5000)\n"
		"  --backend-us US    simulated backend time per item (default 2000)\n"
		"  -h, --help         this text\n", MAX_WORKERS);
}

/* A decimal option in [MIN, MAX]; exits with status 2 otherwise. */
static uint64_t number(const char *name, const char *s, uint64_t min,
		       uint64_t max)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, "prefork-http: --%s: want a number in "
			"%" PRIu64 "..%" PRIu64 ", got '%s'\n", name, min, max, s);
		exit(2);
	}
	return v;
}

static void parse_options(int argc, char **argv)
{
	static const struct option longs[] = {
		{ "mode", required_argument, NULL, 'm' },
		{ "workers", required_argument, NULL, 'w' },
		{ "listen", required_argument, NULL, 'l' },
		{ "port", required_argument, NULL, 'p' },
		{ "port-file", required_argument, NULL, 'P' },
		{ "segment", required_argument, NULL, 's' },
		{ "create", no_argument, NULL, 'c' },
		{ "size", required_argument, NULL, 'S' },
		{ "ttl-ms", required_argument, NULL, 't' },
		{ "backend-us", required_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	while ((ch = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
		switch (ch) {
		case 'm':
			if (strcmp(optarg, "none") == 0)
				opt.mode = MODE_NONE;
			else if (strcmp(optarg, "private") == 0)
				opt.mode = MODE_PRIVATE;
			else if (strcmp(optarg, "namestore") == 0)
				opt.mode = MODE_NAMESTORE;
			else {
				fprintf(stderr, "prefork-http: --mode: none, "
					"private or namestore, not '%s'\n", optarg);
				exit(2);
			}
			break;
		case 'w':
			opt.workers = (unsigned)number("workers", optarg, 1, MAX_WORKERS);
			break;
		case 'l': opt.listen_addr = optarg; break;
		case 'p':
			opt.port = (unsigned)number("port", optarg, 0, 65535);
			break;
		case 'P': opt.port_file = optarg; break;
		case 's': opt.segment = optarg; break;
		case 'c': opt.create = true; break;
		case 'S':
			opt.seg_size = number("size", optarg, 1u << 20, UINT64_MAX);
			break;
		case 't':
			opt.ttl_ms = number("ttl-ms", optarg, 1, UINT32_MAX);
			break;
		case 'b':
			opt.backend_us = (unsigned)number("backend-us", optarg, 0,
							  10000000);
			break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(2);
		}
	}
	if (optind != argc) {
		usage(stderr);
		exit(2);
	}
}

int main(int argc, char **argv)
{
	sigset_t set;
	int lfd, status;

	parse_options(argc, argv);
	/* Block the parent's signals before anything can send them; the
	 * workers unblock them after fork. */
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	shm = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shm == MAP_FAILED) {
		perror("prefork-http: mmap");
		return 1;
	}
	/* Attach before fork: every worker inherits the attachment and gets
	 * its own client slot on first use. */
	if (opt.mode == MODE_NAMESTORE && attach_cache() != 0)
		return 1;
	lfd = listen_socket();
	if (lfd < 0 || write_port_file() != 0)
		return 1;
	printf("prefork-http: mode %s, %u workers, listening on %s:%u\n",
	       mode_names[opt.mode], opt.workers, opt.listen_addr, opt.port);
	fflush(stdout);
	status = supervise(lfd);
	close(lfd);
	ns_detach(cache);
	return status;
}
