/*
 * test_http_parse.c - the request parser of examples/prefork-http (http.c):
 * every status it can refuse a request with, and the framing facts it
 * must get right (head length, body length, keep-alive).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "http.h"

static int parse(const char *s, struct http_req *r)
{
	return http_parse(s, strlen(s), r);
}

static void check_status(const char *s, int want)
{
	struct http_req r;
	int got = parse(s, &r);

	if (got != want)
		fail_msg("http_parse(\"%s\") = %d, want %d", s, got, want);
}

static void test_simple_get(void **state)
{
	const char *s = "GET /item/42?x=1 HTTP/1.1\r\nHost: a\r\n"
			"User-Agent: t\r\n\r\nNEXT";
	struct http_req r;

	(void)state;
	assert_int_equal(parse(s, &r), 1);
	assert_int_equal(r.method_len, 3);
	assert_memory_equal(r.method, "GET", 3);
	assert_int_equal(r.target_len, strlen("/item/42?x=1"));
	assert_memory_equal(r.target, "/item/42?x=1", r.target_len);
	assert_int_equal(r.minor, 1);
	assert_true(r.keep_alive);
	assert_int_equal(r.content_length, 0);
	assert_int_equal(r.head_len, strlen(s) - 4);
}

static void test_incomplete(void **state)
{
	(void)state;
	check_status("", 0);
	check_status("GE", 0);
	check_status("GET /item/1 HTTP/1.1\r", 0);
	check_status("GET /item/1 HTTP/1.1\r\nHost: a\r\n", 0);
	check_status("GET /item/1 HTTP/1.1\r\nHost: a\r\n\r", 0);
}

static void test_leading_empty_lines(void **state)
{
	const char *s = "\r\n\r\nGET / HTTP/1.0\r\n\r\n";
	struct http_req r;

	(void)state;
	assert_int_equal(parse(s, &r), 1);
	assert_int_equal(r.head_len, strlen(s));
	assert_memory_equal(r.method, "GET", 3);
}

static void test_keep_alive(void **state)
{
	struct http_req r;

	(void)state;
	assert_int_equal(parse("GET / HTTP/1.0\r\n\r\n", &r), 1);
	assert_false(r.keep_alive);
	assert_int_equal(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &r), 1);
	assert_true(r.keep_alive);
	assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &r), 1);
	assert_false(r.keep_alive);
	assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade, CLOSE \r\n\r\n", &r), 1);
	assert_false(r.keep_alive);
	/* HTTP/1.2 is served as the highest 1.x this server knows. */
	assert_int_equal(parse("GET / HTTP/1.2\r\nHost: a\r\n\r\n", &r), 1);
	assert_int_equal(r.minor, 1);
	assert_true(r.keep_alive);
}

static void test_garbage_is_400(void **state)
{
	(void)state;
	check_status("garbage\r\n\r\n", -400);
	check_status("\x01\x02\x03", -400);           /* refused before any CRLF */
	check_status("GET / HTTP/1.1\n\n", -400);     /* bare LF */
	check_status("GET\r\n\r\n", -400);
	check_status("GET /\r\n\r\n", -400);
	check_status(" GET / HTTP/1.1\r\n\r\n", -400);
	check_status("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", -400);
	check_status("GET item HTTP/1.1\r\nHost: a\r\n\r\n", -400);
	check_status("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", -400);
	check_status("GET / FTP/1.1\r\nHost: a\r\n\r\n", -400);
	check_status("GET / HTTP/1.x\r\nHost: a\r\n\r\n", -400);
	check_status("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", -400);
}

static void test_bad_fields_are_400(void **state)
{
	(void)state;
	check_status("GET / HTTP/1.1\r\nHost a\r\n\r\n", -400);       /* no colon */
	check_status("GET / HTTP/1.1\r\nHost : a\r\n\r\n", -400);     /* space before colon */
	check_status("GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", -400); /* obs-fold */
	check_status("GET / HTTP/1.1\r\nHost: a\x01z\r\n\r\n", -400);  /* control byte */
	check_status("GET / HTTP/1.1\r\n: a\r\n\r\n", -400);           /* empty name */
}

static void test_host(void **state)
{
	struct http_req r;

	(void)state;
	check_status("GET / HTTP/1.1\r\n\r\n", -400);
	check_status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", -400);
	assert_int_equal(parse("GET / HTTP/1.0\r\n\r\n", &r), 1); /* 1.0 needs none */
}

static void test_content_length(void **state)
{
	struct http_req r;

	(void)state;
	assert_int_equal(parse("DELETE /item/1 HTTP/1.1\r\nHost: a\r\n"
			       "Content-Length: 5\r\n\r\nhello", &r), 1);
	assert_int_equal(r.content_length, 5);
	assert_int_equal(parse("DELETE /item/1 HTTP/1.1\r\nHost: a\r\n"
			       "Content-Length: 5\r\ncontent-length: 5\r\n\r\n", &r), 1);
	check_status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", -400);
	check_status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", -400);
	check_status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", -400);
	check_status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
		     "Content-Length: 6\r\n\r\n", -400);
	check_status("GET / HTTP/1.1\r\nHost: a\r\n"
		     "Content-Length: 123456789012345678901\r\n\r\n", -400);
	check_status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 4097\r\n\r\n", -413);
}

static void test_transfer_encoding_is_501(void **state)
{
	(void)state;
	check_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", -501);
}

static void test_version_is_505(void **state)
{
	(void)state;
	check_status("GET / HTTP/2.0\r\nHost: a\r\n\r\n", -505);
	check_status("GET / HTTP/0.9\r\n\r\n", -505);
}

static void test_too_large_is_431(void **state)
{
	static char buf[HTTP_HEAD_MAX * 2];
	size_t n;

	(void)state;
	/* A request line that never ends. */
	n = (size_t)snprintf(buf, sizeof(buf), "GET /");
	memset(buf + n, 'a', HTTP_HEAD_MAX);
	buf[n + HTTP_HEAD_MAX] = '\0';
	check_status(buf, -431);
	/* A complete head over the limit. */
	n = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nX: ");
	memset(buf + n, 'a', HTTP_HEAD_MAX);
	memcpy(buf + n + HTTP_HEAD_MAX, "\r\n\r\n", 5);
	check_status(buf, -431);
	/* Fields that never end. */
	buf[n + HTTP_HEAD_MAX] = '\0';
	check_status(buf, -431);
	/* Too many fields, in a small head. */
	n = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\n");
	for (unsigned i = 0; i < HTTP_FIELDS_MAX; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "X%u: y\r\n", i);
	snprintf(buf + n, sizeof(buf) - n, "\r\n");
	check_status(buf, -431);
}

static void test_reasons(void **state)
{
	(void)state;
	assert_string_equal(http_reason(200), "OK");
	assert_string_equal(http_reason(404), "Not Found");
	assert_string_equal(http_reason(405), "Method Not Allowed");
	assert_string_equal(http_reason(431), "Request Header Fields Too Large");
	assert_string_equal(http_reason(999), "Unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple_get),
		cmocka_unit_test(test_incomplete),
		cmocka_unit_test(test_leading_empty_lines),
		cmocka_unit_test(test_keep_alive),
		cmocka_unit_test(test_garbage_is_400),
		cmocka_unit_test(test_bad_fields_are_400),
		cmocka_unit_test(test_host),
		cmocka_unit_test(test_content_length),
		cmocka_unit_test(test_transfer_encoding_is_501),
		cmocka_unit_test(test_version_is_505),
		cmocka_unit_test(test_too_large_is_431),
		cmocka_unit_test(test_reasons),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
