/*
 * http.c - the request parser of the prefork HTTP example.
 *
 * A request head is parsed where it lies, in the connection's input buffer,
 * each time more bytes arrive; nothing is copied and no state is kept
 * between calls (the head is small and re-scanning it is cheaper than a
 * resumable state machine is to get right).  The grammar is RFC 9112's,
 * minus what this server never needs:
 *
 *   request   = *( CRLF ) request-line *( field-line CRLF ) CRLF
 *   req-line  = method SP origin-form SP "HTTP/" DIGIT "." DIGIT CRLF
 *   field     = token ":" OWS *( VCHAR / SP / HTAB / obs-text ) OWS
 *
 * It is strict where leniency would be a risk: bare LF, whitespace before
 * the colon, folded lines and control bytes are errors (they are how
 * request smuggling starts), a Transfer-Encoding is refused, and two
 * Content-Length fields must agree.  It is lenient where RFC 9112 says a
 * server should be: empty lines before the request line are skipped and
 * HTTP/1.2 and later minor versions are served as 1.1.
 *
 * The request line is checked as soon as it is complete, or while it is
 * still arriving if a byte cannot belong to one, so garbage gets its 400
 * at once instead of after HTTP_HEAD_MAX bytes.
 */
#define _GNU_SOURCE
#include <string.h>
#include <strings.h>

#include "http.h"

/* tchar of RFC 9110 section 5.6.2: the bytes of a method or field name. */
static bool is_tchar(unsigned char c)
{
	if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
	    (c >= 'A' && c <= 'Z'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A byte of a field value: VCHAR, SP, HTAB or obs-text (0x80-0xff). */
static bool is_field_byte(unsigned char c)
{
	return c == ' ' || c == '\t' || (c >= 0x21 && c != 0x7f);
}

/* A byte that may appear in a request line: VCHAR or SP (the target is
 * checked more closely once the line is complete). */
static bool is_line_byte(unsigned char c)
{
	return c == ' ' || (c >= 0x21 && c < 0x7f);
}

static bool name_is(const char *name, size_t n, const char *want)
{
	return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

/* The request line P[0..N) without its CRLF.  Returns 0, -400 or -505. */
static int parse_request_line(const char *p, size_t n, struct http_req *req)
{
	size_t i = 0, t;

	while (i < n && is_tchar((unsigned char)p[i]))
		i++;
	if (i == 0 || i == n || p[i] != ' ')
		return -400;
	req->method = p;
	req->method_len = i;
	t = ++i;
	while (i < n && p[i] != ' ') {
		if (!is_line_byte((unsigned char)p[i]))
			return -400;
		i++;
	}
	if (i == t || i == n || p[t] != '/')
		return -400;
	req->target = p + t;
	req->target_len = i - t;
	i++;
	/* "HTTP/" DIGIT "." DIGIT and nothing after it. */
	if (n - i != 8 || memcmp(p + i, "HTTP/", 5) != 0 ||
	    p[i + 5] < '0' || p[i + 5] > '9' || p[i + 6] != '.' ||
	    p[i + 7] < '0' || p[i + 7] > '9')
		return -400;
	if (p[i + 5] != '1')
		return -505;
	req->minor = p[i + 7] == '0' ? 0u : 1u;
	return 0;
}

/* The tokens of a Connection value V[0..N): sets *CLOSE and *KEEP. */
static void parse_connection(const char *v, size_t n, bool *close,
			     bool *keep)
{
	size_t i = 0;

	while (i < n) {
		size_t s, e;

		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		s = i;
		while (i < n && v[i] != ',')
			i++;
		e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (name_is(v + s, e - s, "close"))
			*close = true;
		else if (name_is(v + s, e - s, "keep-alive"))
			*keep = true;
	}
}

/* A Content-Length value: 1 to 19 digits (so it fits in 64 bits). */
static int parse_length(const char *v, size_t n, uint64_t *out)
{
	uint64_t x = 0;

	if (n == 0 || n > 19)
		return -400;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -400;
		x = x * 10u + (uint64_t)(v[i] - '0');
	}
	*out = x;
	return 0;
}

/* The field lines P[0..N), each ending in CRLF.  Returns 0 or -status. */
static int parse_fields(const char *p, size_t n, struct http_req *req)
{
	bool close = false, keep = false, have_length = false, te = false;
	unsigned fields = 0, hosts = 0;
	size_t i = 0;

	while (i < n) {
		const char *line = p + i;
		const char *eol = memmem(line, n - i, "\r\n", 2);
		size_t len, k = 0, vs, ve;

		/* Every line of the region ends in CRLF (http_parse cut
		 * it at the blank line), so eol is never NULL here. */
		if (eol == NULL)
			return -400;
		len = (size_t)(eol - line);
		i += len + 2;
		if (++fields > HTTP_FIELDS_MAX)
			return -431;
		/* A line starting with whitespace is an obsolete fold. */
		while (k < len && is_tchar((unsigned char)line[k]))
			k++;
		if (k == 0 || k == len || line[k] != ':')
			return -400;
		vs = k + 1;
		ve = len;
		while (vs < ve && (line[vs] == ' ' || line[vs] == '\t'))
			vs++;
		while (ve > vs && (line[ve - 1] == ' ' || line[ve - 1] == '\t'))
			ve--;
		for (size_t j = vs; j < ve; j++) {
			if (!is_field_byte((unsigned char)line[j]))
				return -400;
		}
		if (name_is(line, k, "content-length")) {
			uint64_t cl;

			if (parse_length(line + vs, ve - vs, &cl) != 0)
				return -400;
			if (have_length && cl != req->content_length)
				return -400;
			have_length = true;
			req->content_length = cl;
		} else if (name_is(line, k, "transfer-encoding")) {
			te = true;
		} else if (name_is(line, k, "connection")) {
			parse_connection(line + vs, ve - vs, &close, &keep);
		} else if (name_is(line, k, "host")) {
			hosts++;
		}
	}
	if (te)
		return -501;
	if (req->minor >= 1 && hosts != 1)
		return -400;
	if (req->content_length > HTTP_BODY_MAX)
		return -413;
	req->keep_alive = !close && (req->minor >= 1 || keep);
	return 0;
}

int http_parse(const char *buf, size_t len, struct http_req *req)
{
	size_t start = 0, n, line_len;
	const char *p, *eol, *end;
	int r;

	memset(req, 0, sizeof(*req));
	while (start + 1 < len && buf[start] == '\r' && buf[start + 1] == '\n')
		start += 2;
	p = buf + start;
	n = len - start;
	eol = memmem(p, n, "\r\n", 2);
	if (eol == NULL) {
		/* The request line is still arriving: refuse it now if a
		 * byte cannot belong to one (a lone CR may be half a CRLF). */
		for (size_t i = 0; i < n; i++) {
			if (!is_line_byte((unsigned char)p[i]) &&
			    !(p[i] == '\r' && i + 1 == n))
				return -400;
		}
		return len >= HTTP_HEAD_MAX ? -431 : 0;
	}
	line_len = (size_t)(eol - p);
	if (start + line_len + 2 > HTTP_HEAD_MAX)
		return -431;
	r = parse_request_line(p, line_len, req);
	if (r != 0)
		return r;
	end = memmem(eol, n - line_len, "\r\n\r\n", 4);
	if (end == NULL)
		return len >= HTTP_HEAD_MAX ? -431 : 0;
	req->head_len = (size_t)(end - buf) + 4;
	if (req->head_len > HTTP_HEAD_MAX)
		return -431;
	r = parse_fields(eol + 2, (size_t)(end - eol), req);
	return r != 0 ? r : 1;
}

const char *http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 413: return "Content Too Large";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}
