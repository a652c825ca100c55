/*
 * http1.c - request writing and response framing for kasir-loadgen.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http1.h"

int
http1_request(char *out, size_t cap, const char *host_port, const char *path,
              const char *source, const char *body, size_t body_len)
{
	int n;

	if (source != NULL)
		n = snprintf(out, cap,
		             "POST %s HTTP/1.1\r\nHost: %s\r\n"
		             "Content-Type: application/json\r\n"
		             "X-Forwarded-For: %s\r\n"
		             "Content-Length: %zu\r\n\r\n",
		             path, host_port, source, body_len);
	else
		n = snprintf(out, cap,
		             "POST %s HTTP/1.1\r\nHost: %s\r\n"
		             "Content-Type: application/json\r\n"
		             "Content-Length: %zu\r\n\r\n",
		             path, host_port, body_len);
	if (n < 0 || (size_t)n + body_len > cap)
		return -ENOSPC;
	memcpy(out + n, body, body_len);
	return n + (int)body_len;
}

/* The value of header `name` in the header block [hdr, end), or NULL;
 * *ret_len is its length without surrounding blanks. */
static const char *
header_value(const char *hdr, const char *end, const char *name,
             size_t *ret_len)
{
	size_t nlen = strlen(name);
	const char *line = hdr;

	while (line < end) {
		const char *eol = memchr(line, '\n', (size_t)(end - line));
		if (eol == NULL)
			eol = end;
		if ((size_t)(eol - line) > nlen && line[nlen] == ':' &&
		    strncasecmp(line, name, nlen) == 0) {
			const char *v = line + nlen + 1;
			const char *ve = eol;
			while (v < ve && (*v == ' ' || *v == '\t'))
				v++;
			while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' ||
			                  ve[-1] == '\t'))
				ve--;
			*ret_len = (size_t)(ve - v);
			return v;
		}
		line = eol + 1;
	}
	return NULL;
}

/* Length of a chunked body starting at p (up to end): 1 and *ret_len when
 * the terminating chunk and its blank line are there, 0 when not yet,
 * -EPROTO on a malformed chunk size.  Trailers are not supported. */
static int
chunked_length(const char *p, const char *end, size_t *ret_len)
{
	const char *start = p;

	for (;;) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		char *num_end;
		unsigned long size;

		if (eol == NULL)
			return 0;
		size = strtoul(p, &num_end, 16);
		if (num_end == p)
			return -EPROTO;
		if (size > (1UL << 30))
			return -EPROTO;
		p = eol + 1;
		if ((size_t)(end - p) < size + 2)
			return 0;
		p += size + 2; /* data and its CRLF */
		if (size == 0) {
			*ret_len = (size_t)(p - start);
			return 1;
		}
	}
}

int
http1_response_parse(const char *buf, size_t len, struct http1_response *ret)
{
	const char *end = buf + len;
	const char *hdr_end, *v;
	size_t head, body = 0, vlen;
	bool keep_alive;
	int status;

	if (len >= 5 && memcmp(buf, "HTTP/", 5) != 0)
		return -EPROTO;
	hdr_end = memmem(buf, len, "\r\n\r\n", 4);
	if (hdr_end == NULL)
		return len > 65536 ? -EPROTO : 0;
	head = (size_t)(hdr_end - buf) + 4;
	if (head < 13 || buf[8] != ' ')
		return -EPROTO;
	status = atoi(buf + 9);
	if (status < 100 || status > 599)
		return -EPROTO;
	keep_alive = buf[7] == '1'; /* HTTP/1.1 keeps alive by default */
	v = header_value(buf, hdr_end, "Connection", &vlen);
	if (v != NULL)
		keep_alive = strncasecmp(v, "close", vlen) != 0;
	v = header_value(buf, hdr_end, "Transfer-Encoding", &vlen);
	if (v != NULL && vlen >= 7 && strncasecmp(v, "chunked", 7) == 0) {
		int r = chunked_length(buf + head, end, &body);
		if (r <= 0)
			return r;
	} else if ((v = header_value(buf, hdr_end, "Content-Length", &vlen)) !=
	           NULL) {
		char *num_end;
		unsigned long n = strtoul(v, &num_end, 10);
		if (num_end == v || n > (1UL << 30))
			return -EPROTO;
		body = n;
		if (len - head < body)
			return 0;
	} else if (status >= 200 && status != 204 && status != 304) {
		return -EPROTO; /* body up to close: not for a benchmark */
	}
	ret->status = status;
	ret->length = head + body;
	ret->keep_alive = keep_alive;
	return 1;
}
