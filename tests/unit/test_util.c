/*
 * test_util.c - common/util.c and common/err.c.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <cmocka.h>

#include "err.h"
#include "util.h"
#include "testutil.h"

static void
test_hex(void **state)
{
	(void)state;
	const uint8_t in[] = {0x00, 0x01, 0xab, 0xff, 0x7f};
	uint8_t out[8];
	char hex[11];
	size_t n = 99;

	hex_encode(in, sizeof(in), hex);
	assert_string_equal(hex, "0001abff7f");
	assert_int_equal(hex_decode(hex, 10, out, sizeof(out), &n), 0);
	assert_int_equal(n, 5);
	assert_memory_equal(out, in, 5);
	assert_int_equal(hex_decode("0001ABFF7F", 10, out, sizeof(out), &n), 0);
	assert_memory_equal(out, in, 5);
	hex_encode(in, 0, hex);
	assert_string_equal(hex, "");

	n = 99;
	memset(out, 0xee, sizeof(out));
	assert_int_equal(hex_decode("abc", 3, out, sizeof(out), &n), -EINVAL);
	assert_int_equal(hex_decode("zz", 2, out, sizeof(out), &n), -EINVAL);
	assert_int_equal(hex_decode("0g", 2, out, sizeof(out), &n), -EINVAL);
	assert_int_equal(hex_decode("0102", 4, out, 1, &n), -EINVAL);
	assert_int_equal(hex_decode("01 2", 4, out, sizeof(out), &n), -EINVAL);
	assert_int_equal(n, 99); /* untouched on failure */
	assert_int_equal(out[0], 0xee);
}

static void
test_ct_equal(void **state)
{
	(void)state;
	assert_true(ct_equal("abc", 3, "abc", 3));
	assert_false(ct_equal("abc", 3, "abd", 3));
	assert_false(ct_equal("abc", 3, "abcd", 4));
	assert_false(ct_equal("\x00\x01", 2, "\x00\x02", 2));
	assert_true(ct_equal("", 0, "", 0));
	assert_false(ct_equal("x", 1, "", 0));
}

static void
test_order_id(void **state)
{
	(void)state;
	char s50[51], s51[52];

	memset(s50, 'a', 50);
	s50[50] = '\0';
	memset(s51, 'a', 51);
	s51[51] = '\0';
	assert_true(order_id_valid(s50, 50));
	assert_false(order_id_valid(s51, 50));
	assert_true(order_id_valid("ORDER-2026.11_23~x", 50));
	assert_false(order_id_valid("order#1", 50));
	assert_false(order_id_valid("order 1", 50));
	assert_false(order_id_valid("order/1", 50));
	assert_false(order_id_valid("ordér", 50));
	assert_false(order_id_valid("", 50));
	assert_false(order_id_valid(NULL, 50));
	/* dot segments: /v2/../status would ask for /status */
	assert_false(order_id_valid(".", 50));
	assert_false(order_id_valid("..", 50));
	assert_true(order_id_valid("...", 50));
	assert_true(order_id_valid(".a", 50));
}

static void
test_utf8(void **state)
{
	(void)state;
#define OK(s)  assert_true(utf8_valid(s, sizeof(s) - 1))
#define BAD(s) assert_false(utf8_valid(s, sizeof(s) - 1))
	OK("");
	OK("plain ascii");
	OK("Rp 150.000 — kursus ✓");
	OK("\xf0\x9f\x8e\xac");      /* U+1F3AC */
	OK("\xf4\x8f\xbf\xbf");      /* U+10FFFF */
	OK("\xed\x9f\xbf");          /* U+D7FF */
	OK("\xee\x80\x80");          /* U+E000 */
	BAD("\xc0\xaf");             /* overlong '/' */
	BAD("\xc1\xbf");             /* overlong */
	BAD("\xe0\x80\xaf");         /* overlong 3-byte */
	BAD("\xf0\x80\x80\xaf");     /* overlong 4-byte */
	BAD("\xed\xa0\x80");         /* U+D800 surrogate */
	BAD("\xed\xbf\xbf");         /* U+DFFF surrogate */
	BAD("\xf4\x90\x80\x80");     /* > U+10FFFF */
	BAD("\xf8\x88\x80\x80\x80"); /* 5-byte form */
	BAD("\x80");                 /* lone continuation */
	BAD("abc\xe2\x82");          /* truncated */
	BAD("\xe2\x28\xa1");         /* bad continuation */
	BAD("\xff");
#undef OK
#undef BAD
	/* embedded NUL is valid UTF-8 when the length covers it */
	assert_true(utf8_valid("a\0b", 3));
}

static void
test_rfc3339(void **state)
{
	(void)state;
	char buf[32];

	time_rfc3339(0, buf, sizeof(buf));
	assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
	time_rfc3339(1795426399123LL, buf, sizeof(buf));
	assert_string_equal(buf, "2026-11-23T09:33:19.123Z");
	time_rfc3339(-1, buf, sizeof(buf));
	assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
	time_rfc3339(951782400000LL, buf, sizeof(buf)); /* leap day 2000 */
	assert_string_equal(buf, "2000-02-29T00:00:00.000Z");

	int64_t a = now_real_ms(), m1 = now_mono_ms(), m2 = now_mono_ms();
	assert_true(a > 1700000000000LL);
	assert_true(m2 >= m1);
}

static void
test_uuid(void **state)
{
	(void)state;
	char a[37], b[37], small[36];

	assert_int_equal(uuid_v4(a, sizeof(a)), 0);
	assert_int_equal(uuid_v4(b, sizeof(b)), 0);
	assert_int_equal(strlen(a), 36);
	assert_string_not_equal(a, b);
	assert_int_equal(a[8], '-');
	assert_int_equal(a[13], '-');
	assert_int_equal(a[14], '4');
	assert_non_null(strchr("89ab", a[19]));
	assert_int_equal(uuid_v4(small, sizeof(small)), -EINVAL);
	/* the text form, every time: lowercase hex, dashes at 8-4-4-4-12,
	 * version 4, variant 10 */
	for (int n = 0; n < 1000; n++) {
		assert_int_equal(uuid_v4(a, sizeof(a)), 0);
		assert_int_equal(strlen(a), 36);
		for (int i = 0; i < 36; i++) {
			if (i == 8 || i == 13 || i == 18 || i == 23)
				assert_int_equal(a[i], '-');
			else
				assert_non_null(
				    strchr("0123456789abcdef", a[i]));
		}
		assert_int_equal(a[14], '4');
		assert_non_null(strchr("89ab", a[19]));
		assert_string_not_equal(a, b);
		memcpy(b, a, sizeof(a));
	}
}

static void
test_strlcpy(void **state)
{
	(void)state;
	char buf[4];

	assert_int_equal(kasir_strlcpy(buf, "abcdef", sizeof(buf)), 6);
	assert_string_equal(buf, "abc");
	assert_int_equal(kasir_strlcpy(buf, "ab", sizeof(buf)), 2);
	assert_string_equal(buf, "ab");
	assert_int_equal(kasir_strlcpy(buf, "xyz", 0), 3);
	assert_string_equal(buf, "ab");
}

static void
test_backoff(void **state)
{
	(void)state;
	for (int i = 0; i < 200; i++) {
		int64_t v = backoff_ms(0, 100, 10000);
		assert_in_range(v, 50, 100);
		v = backoff_ms(3, 100, 10000);
		assert_in_range(v, 400, 800);
		v = backoff_ms(10, 100, 10000);
		assert_in_range(v, 5000, 10000);
		v = backoff_ms(1000, 100, 10000); /* no overflow */
		assert_in_range(v, 5000, 10000);
		v = backoff_ms(-3, 100, 10000);
		assert_in_range(v, 50, 100);
	}
}

static void
test_strerror(void **state)
{
	(void)state;
	const int codes[] = {KASIR_EDB,     KASIR_EDBUNKNOWN, KASIR_ESQL,
	                     KASIR_ESIG,    KASIR_EPROTO,     KASIR_ETYPE,
	                     KASIR_EKEY,    KASIR_ETOOBIG,    KASIR_ECONFIG,
	                     KASIR_EREJECT, KASIR_ENOTFOUND,  KASIR_ECONFLICT,
	                     KASIR_EPERM,   KASIR_EPEER};
	for (size_t i = 0; i < ARRAY_SIZE(codes); i++) {
		const char *s = kasir_strerror(codes[i]);
		assert_non_null(s);
		assert_null(strstr(s, "unknown error"));
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(s, kasir_strerror(codes[j]));
	}
	assert_string_equal(kasir_strerror(KASIR_ESIG),
	                    "signature does not verify");
	assert_string_equal(kasir_strerror(-ENOENT),
	                    "No such file or directory");
	assert_string_equal(kasir_strerror(-ETIMEDOUT), "Connection timed out");
	assert_string_equal(kasir_strerror(0), "success");
	assert_non_null(strstr(kasir_strerror(-1999), "unknown error -1999"));
	assert_non_null(kasir_strerror(-999));
}

/* cond_init_monotonic: a wait against a CLOCK_MONOTONIC deadline lasts
 * until it (a condition on the wall clock would take that deadline, the
 * time since boot, for one in 1970 and return at once). */
static void
test_cond_monotonic(void **state)
{
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t cv;
	struct timespec ts;
	int64_t t0;
	int rc;

	(void)state;
	assert_int_equal(cond_init_monotonic(&cv), 0);
	pthread_mutex_lock(&mu);
	t0 = now_mono_ms();
	deadline_after_ms(CLOCK_MONOTONIC, 80, &ts);
	do
		rc = pthread_cond_timedwait(&cv, &mu, &ts);
	while (rc == 0); /* spurious wakeups */
	assert_int_equal(rc, ETIMEDOUT);
	assert_true(now_mono_ms() - t0 >= 70);
	pthread_mutex_unlock(&mu);
	pthread_cond_destroy(&cv);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cond_monotonic),
	    cmocka_unit_test(test_hex),
	    cmocka_unit_test(test_ct_equal),
	    cmocka_unit_test(test_order_id),
	    cmocka_unit_test(test_utf8),
	    cmocka_unit_test(test_rfc3339),
	    cmocka_unit_test(test_uuid),
	    cmocka_unit_test(test_strlcpy),
	    cmocka_unit_test(test_backoff),
	    cmocka_unit_test(test_strerror),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
