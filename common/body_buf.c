/*
 * body_buf.c - a bounded HTTP response body (body_buf.h).
 */
#include <stdlib.h>
#include <string.h>

#include "body_buf.h"

void
body_buf_init(struct body_buf *b, size_t max, enum body_overflow mode)
{
	*b = (struct body_buf){.max = max, .on_overflow = mode};
}

size_t
body_buf_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct body_buf *b = arg;
	size_t n = size * nmemb, keep = n, cap;
	char *p;

	if (keep > b->max - b->len) {
		b->overflow = true;
		if (b->on_overflow == BODY_ABORT)
			return 0; /* libcurl: CURLE_WRITE_ERROR */
		keep = b->max - b->len;
	}
	if (keep == 0)
		return n;
	/* doubling from 4 KiB, never beyond max + 1 */
	for (cap = 4096; cap < b->len + keep + 1; cap *= 2)
		;
	if (cap > b->max + 1)
		cap = b->max + 1;
	if ((p = realloc(b->data, cap)) == NULL)
		return 0;
	memcpy(p + b->len, ptr, keep);
	b->data = p;
	b->len += keep;
	b->data[b->len] = '\0';
	return n;
}

char *
body_buf_take(struct body_buf *b)
{
	char *d = b->data != NULL ? b->data : strdup("");

	b->data = NULL;
	b->len = 0;
	return d;
}

void
body_buf_free(struct body_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
}
