/*
 * body_buf.h - a bounded HTTP response body, filled by libcurl.
 *
 * Every libcurl client of kasir (Snap, the Status and Refund APIs, the
 * WhatsApp Cloud API, kasirctl's probes) reads its answer into one of
 * these: at most `max` bytes are kept, NUL-terminated, and what happens to
 * a longer answer is the caller's stated choice:
 *
 *   BODY_ABORT     the transfer is aborted (libcurl reports a write error,
 *                  CURLE_WRITE_ERROR): the answer is unusable whole;
 *   BODY_TRUNCATE  the first max bytes are kept, the rest is read and
 *                  dropped, and the answer still counts (it is evidence as
 *                  received, cut).
 *
 * Either way `overflow` says that more was sent.  An allocation failure
 * aborts the transfer.
 *
 *	struct body_buf b;
 *	body_buf_init(&b, 64 * 1024, BODY_ABORT);
 *	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_buf_write);
 *	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
 *	...
 *	body_buf_free(&b);
 *
 * Ownership: data belongs to the buffer until body_buf_take() hands it
 * over or body_buf_free() frees it.
 */
#ifndef KASIR_BODY_BUF_H
#define KASIR_BODY_BUF_H

#include <stdbool.h>
#include <stddef.h>

enum body_overflow {
	BODY_ABORT,
	BODY_TRUNCATE,
};

struct body_buf {
	char *data; /* NUL-terminated; NULL until the first byte */
	size_t len;
	size_t max;
	enum body_overflow on_overflow;
	bool overflow; /* the answer was longer than max */
};

void body_buf_init(struct body_buf *b, size_t max, enum body_overflow mode);
/* libcurl's CURLOPT_WRITEFUNCTION, with CURLOPT_WRITEDATA the body_buf. */
size_t body_buf_write(char *ptr, size_t size, size_t nmemb, void *arg);
/* The body ("" when nothing came), NULL only when no memory; the buffer
 * is empty afterwards. */
char *body_buf_take(struct body_buf *b);
void body_buf_free(struct body_buf *b);

#endif
