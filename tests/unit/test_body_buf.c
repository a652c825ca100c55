/*
 * test_body_buf.c - common/body_buf.c: the bounded response body every
 * libcurl client reads into (abort or truncate past the bound).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "body_buf.h"

/* libcurl hands the body over in pieces: feeds s in chunks of k bytes
 * and returns what the last call returned (k, or 0 to abort). */
static size_t
feed(struct body_buf *b, const char *s, size_t k)
{
	size_t n = strlen(s), r = 0;
	char *m = strdup(s); /* libcurl's buffer is not const */

	assert_non_null(m);
	for (size_t i = 0; i < n; i += k) {
		size_t len = n - i < k ? n - i : k;

		r = body_buf_write(m + i, 1, len, b);
		if (r != len)
			break;
	}
	free(m);
	return r;
}

static void
test_within_bound(void **state)
{
	struct body_buf b;
	char big[10000];

	(void)state;
	body_buf_init(&b, 64, BODY_ABORT);
	assert_null(b.data);
	assert_int_equal(feed(&b, "{\"status_code\":\"200\"}", 5), 1);
	assert_string_equal(b.data, "{\"status_code\":\"200\"}");
	assert_int_equal(b.len, 21);
	assert_false(b.overflow);
	body_buf_free(&b);
	assert_null(b.data);

	/* exactly the bound is kept whole; growth past 4 KiB */
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	body_buf_init(&b, sizeof(big) - 1, BODY_ABORT);
	assert_int_equal(feed(&b, big, 1000), 999);
	assert_int_equal(b.len, sizeof(big) - 1);
	assert_string_equal(b.data, big);
	assert_false(b.overflow);
	body_buf_free(&b);
}

static void
test_abort(void **state)
{
	struct body_buf b;

	(void)state;
	body_buf_init(&b, 8, BODY_ABORT);
	assert_int_equal(feed(&b, "0123456789", 4), 0); /* aborted */
	assert_true(b.overflow);
	assert_int_equal(b.len, 8);
	assert_string_equal(b.data, "01234567");
	body_buf_free(&b);
}

static void
test_truncate(void **state)
{
	struct body_buf b;

	(void)state;
	body_buf_init(&b, 8, BODY_TRUNCATE);
	/* every piece is taken (the transfer goes on), the rest dropped */
	assert_int_equal(feed(&b, "0123456789abcdef", 3), 1);
	assert_true(b.overflow);
	assert_int_equal(b.len, 8);
	assert_string_equal(b.data, "01234567");
	body_buf_free(&b);
}

static void
test_take(void **state)
{
	struct body_buf b;
	char *s;

	(void)state;
	body_buf_init(&b, 8, BODY_ABORT);
	s = body_buf_take(&b); /* nothing came: "" */
	assert_string_equal(s, "");
	free(s);
	feed(&b, "abc", 3);
	s = body_buf_take(&b);
	assert_string_equal(s, "abc");
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	free(s);
	body_buf_free(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_within_bound),
	    cmocka_unit_test(test_abort),
	    cmocka_unit_test(test_truncate),
	    cmocka_unit_test(test_take),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
