/*
 * http1.h - the HTTP/1.1 client side of kasir-loadgen: one request
 * written into a buffer, one response recognised in a buffer.
 *
 * Only what the benchmark needs: POST with Content-Length, responses
 * delimited by Content-Length or chunked encoding, keep-alive unless
 * the server says "Connection: close".
 */
#ifndef KASIR_LOADGEN_HTTP1_H
#define KASIR_LOADGEN_HTTP1_H

#include <stdbool.h>
#include <stddef.h>

/* Writes a POST of body into out (capacity cap); source, when not NULL,
 * becomes an X-Forwarded-For header.  Returns the length, or -ENOSPC. */
int http1_request(char *out, size_t cap, const char *host_port,
                  const char *path, const char *source, const char *body,
                  size_t body_len);

struct http1_response {
	int status;    /* 100..599 */
	size_t length; /* bytes of buf this response takes, headers included */
	bool keep_alive; /* false: the server closes after it */
};

/* Looks for one whole response at the start of buf.  Returns 1 and fills
 * ret when it is complete, 0 when more bytes are needed, -EPROTO when buf
 * does not hold an HTTP/1.x response. */
int http1_response_parse(const char *buf, size_t len,
                         struct http1_response *ret);

#endif
