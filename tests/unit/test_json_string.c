/*
 * test_json_string.c - common/json_string.c: control characters in JSON
 * strings, on the raw text, for kasir-ingest (allow_controls) and the
 * order API (json_find_control, with the field named).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "err.h"
#include "json_string.h"

static int
scan(const char *lit, bool allow_controls, size_t *ret_used)
{
	const unsigned char *p = (const unsigned char *)lit;
	const unsigned char *end = p + strlen(lit);
	const char *why = NULL;
	int rc = json_scan_string(&p, end, allow_controls, &why);

	if (rc < 0)
		assert_non_null(why);
	else if (ret_used != NULL)
		*ret_used = (size_t)(p - (const unsigned char *)lit);
	return rc;
}

static void
test_scan_string(void **state)
{
	size_t used = 0;

	(void)state;
	assert_int_equal(scan("\"plain\" tail", false, &used), 0);
	assert_int_equal(used, 7);
	assert_int_equal(scan("\"a\\\"b\\\\c\\/\"", false, NULL), 0);
	assert_int_equal(scan("\"caf\\u00e9 \\ud83d\\ude00\"", false, NULL), 0);

	/* \u0000 always refused, in every spelling of the escape */
	assert_int_equal(scan("\"a\\u0000b\"", true, NULL), JSON_STRING_NUL);
	assert_int_equal(scan("\"a\\u0000b\"", false, NULL), JSON_STRING_NUL);
	/* "\\u0000" is a backslash then text: fine */
	assert_int_equal(scan("\"a\\\\u0000b\"", false, NULL), 0);

	/* other controls: refused for the API, kept for notifications */
	static const char *const ctl[] = {
	    "\"a\\u0001\"", "\"a\\u001f\"", "\"a\\u001F\"", "\"a\\n\"",
	    "\"a\\t\"",     "\"a\\r\"",     "\"a\\b\"",     "\"a\\f\"",
	    "\"a\\u007f\"", "\"a\\u0085\"", "\"a\\u009f\"", "\"a\x7f\""};
	for (size_t i = 0; i < sizeof(ctl) / sizeof(ctl[0]); i++) {
		assert_int_equal(scan(ctl[i], false, NULL),
		                 JSON_STRING_CONTROL);
		assert_int_equal(scan(ctl[i], true, NULL), 0);
	}
	assert_int_equal(scan("\"a\\u00a0\"", false, NULL), 0); /* NBSP */

	/* malformed whatever the policy */
	assert_int_equal(scan("\"a\x01\"", true, NULL), JSON_STRING_MALFORMED);
	assert_int_equal(scan("\"a\nb\"", true, NULL), JSON_STRING_MALFORMED);
	assert_int_equal(scan("\"unterminated", true, NULL),
	                 JSON_STRING_MALFORMED);
	assert_int_equal(scan("\"a\\x41\"", true, NULL), JSON_STRING_MALFORMED);
	assert_int_equal(scan("\"a\\u12\"", true, NULL), JSON_STRING_MALFORMED);
	assert_int_equal(scan("\"a\\", true, NULL), JSON_STRING_MALFORMED);
	assert_int_equal(scan("\"\\udc00\"", true, NULL),
	                 JSON_STRING_SURROGATE);
	assert_int_equal(scan("\"\\ud83dx\"", true, NULL),
	                 JSON_STRING_SURROGATE);
}

static const char *
find(const char *text, int want_rc)
{
	static char field[96];

	memset(field, 'X', sizeof(field));
	field[sizeof(field) - 1] = '\0';
	assert_int_equal(
	    json_find_control(text, strlen(text), field, sizeof(field)),
	    want_rc);
	return field;
}

static void
test_find_control(void **state)
{
	(void)state;
	find("{\"course_id\":\"bikin-film-pendek\",\"customer\":{\"name\":"
	     "\"Budi\",\"email\":\"b@x.id\"},\"n\":[1,true,null,-2.5e3]}",
	     0);
	assert_string_equal(
	    find("{\"course_id\":\"bikin-film-pendek\\u0000-premium\"}",
	         KASIR_EREJECT),
	    "course_id");
	assert_string_equal(find("{\"course_id\":\"x\",\"customer\":{\"name\":"
	                         "\"ok\",\"email\":\"b@x.id\\u0000.evil\"}}",
	                         KASIR_EREJECT),
	                    "customer.email");
	assert_string_equal(
	    find("{\"customer\":{\"name\":\"Budi\\nSantoso\"}}", KASIR_EREJECT),
	    "customer.name");
	assert_string_equal(
	    find("{\"a\":[\"x\",{\"b\":[0,\"\\u0007\"]}]}", KASIR_EREJECT),
	    "a[1].b[1]");
	/* a bad key: named by its parent */
	assert_string_equal(
	    find("{\"customer\":{\"na\\u0000me\":\"x\"}}", KASIR_EREJECT),
	    "customer.?");
	/* the member after a bad-free sibling object is named right */
	assert_string_equal(find("{\"customer\":{\"name\":\"x\"},\"order_id\":"
	                         "\"A\\u001fB\"}",
	                         KASIR_EREJECT),
	                    "order_id");
	assert_string_equal(find("[\"\\u0000\"]", KASIR_EREJECT), "[0]");
	/* escaped quote and backslash do not end the string early */
	find("{\"k\":\"a\\\"\\\\\",\"l\":\"\\\\u0000\"}", 0);
	/* a raw NUL byte outside a string: not JSON, and no endless loop */
	{
		char field[16];
		assert_int_equal(
		    json_find_control("{\"a\":1\0}", 8, field, sizeof(field)),
		    -EINVAL);
	}
	/* not JSON after all; the field is still a string (it was left
	 * as it was, and the API printed stack bytes) */
	assert_string_equal(find("{\"a\":\"x\"", -EINVAL), "");
	assert_string_equal(find("}", -EINVAL), "");
	/* U+009B (CSI) and U+0085 written raw in UTF-8, as their escapes */
	assert_string_equal(find("{\"customer\":{\"name\":\"Budi\xc2\x9b"
	                         "2J\"}}",
	                         KASIR_EREJECT),
	                    "customer.name");
	assert_string_equal(find("{\"a\":\"x\xc2\x85"
	                         "y\"}",
	                         KASIR_EREJECT),
	                    "a");
	/* U+00A0 and U+00E9 are not controls */
	find("{\"a\":\"Jos\xc3\xa9\xc2\xa0"
	     "R\"}",
	     0);
}

/* Deep nesting: bounded path, no overflow. */
static void
test_deep(void **state)
{
	char text[2048];
	size_t n = 0;
	const char *f;

	(void)state;
	for (int i = 0; i < 100; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n,
		                      "{\"k%d\":", i);
	n += (size_t)snprintf(text + n, sizeof(text) - n, "\"\\u0000\"");
	for (int i = 0; i < 100; i++)
		text[n++] = '}';
	text[n] = '\0';
	f = find(text, KASIR_EREJECT);
	assert_true(strncmp(f, "k0.k1.k2.", 9) == 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_scan_string),
	    cmocka_unit_test(test_find_control),
	    cmocka_unit_test(test_deep),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
