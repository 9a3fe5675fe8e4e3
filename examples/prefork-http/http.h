/*
 * http.h - the request parser of the prefork HTTP example (http.c).
 *
 * Only what the example needs of HTTP/1.1 (RFC 9112): a request head
 * (request line and header fields) parsed in place from the bytes a
 * connection has read so far, with the framing facts a server must get
 * right: where the head ends, how long the body is, and whether the
 * connection stays open.  Anything else is refused with the status code
 * that says why, so a bad client gets a clear answer and never a crash.
 */
#ifndef PREFORK_HTTP_H
#define PREFORK_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The largest request head accepted, and the largest body.  8 KiB is the
 * head limit of nginx's default large_client_header_buffers and of most
 * servers; nothing this server routes takes a body, so a small one (a
 * DELETE with a few bytes) is read and ignored, and more is refused with
 * 413 rather than buffered.
 */
#define HTTP_HEAD_MAX 8192u
#define HTTP_BODY_MAX 4096u

/* More header fields than this is 431, like a head over HTTP_HEAD_MAX. */
#define HTTP_FIELDS_MAX 64u

/* One parsed request head; the pointers point into the caller's buffer. */
struct http_req {
	const char *method;     /* a token, e.g. "GET"; not NUL-terminated */
	size_t method_len;
	const char *target;     /* origin-form: starts with '/' */
	size_t target_len;
	unsigned minor;         /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
	bool keep_alive;        /* the connection may serve another request */
	uint64_t content_length; /* bytes of body after the head */
	size_t head_len;        /* bytes of the head, the blank line included */
};

/*
 * http_parse - parse the request head at the start of BUF (LEN bytes read
 * so far).  Empty lines before the request line are skipped (RFC 9112
 * section 2.2) and counted in head_len.
 *
 * Returns 1 with *REQ filled when the head is complete, 0 when more bytes
 * are needed (LEN is below HTTP_HEAD_MAX and nothing seen so far is wrong),
 * or the negated status code to answer with, after which the connection
 * must be closed because its framing is lost:
 *   -400  malformed request line or header field, a bad or conflicting
 *         Content-Length, an HTTP/1.1 request without exactly one Host
 *   -413  Content-Length over HTTP_BODY_MAX
 *   -431  head longer than HTTP_HEAD_MAX, or more than HTTP_FIELDS_MAX fields
 *   -501  a Transfer-Encoding (this server reads no chunked bodies)
 *   -505  an HTTP version other than 1.0 and 1.1
 */
int http_parse(const char *buf, size_t len, struct http_req *req);

/* The reason phrase of STATUS ("OK", "Not Found", ...). */
const char *http_reason(int status);

#endif
