/*
 * test_db_array.c - common/db_array.c: array literals built element by
 * element (struct db_array) and the columns of an array statement built
 * row by row (struct db_cols), as every batched consumer passes them.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "db.h"

static void
test_array_literal(void **state)
{
	struct db_array a = {0};

	(void)state;
	assert_string_equal(db_array_text(&a), "{}");
	db_array_add(&a, "plain");
	db_array_add(&a, NULL);
	db_array_add(&a, "say \"hi\" \\ there");
	db_array_add(&a, "");
	assert_string_equal(
	    db_array_text(&a),
	    "{\"plain\",NULL,\"say \\\"hi\\\" \\\\ there\",\"\"}");
	/* text() may be asked again, and add() extends it */
	db_array_add(&a, "{,}");
	assert_string_equal(
	    db_array_text(&a),
	    "{\"plain\",NULL,\"say \\\"hi\\\" \\\\ there\",\"\",\"{,}\"}");
	assert_int_equal(a.n, 5);
	db_array_free(&a);
	assert_null(a.text);
}

/* Values that need many escapes, and ones that outgrow the first
 * allocation: every byte of the worst case escaped, nothing lost. */
static void
test_array_escapes_and_growth(void **state)
{
	struct db_array a = {0};
	char worst[3001], want[6100], *w = want;
	const char *text;

	(void)state;
	for (size_t i = 0; i < sizeof(worst) - 1; i++)
		worst[i] = i % 2 ? '"' : '\\';
	worst[sizeof(worst) - 1] = 0;
	db_array_add(&a, "{\"a\":\"b\\\\c\"}");
	db_array_add(&a, worst);
	*w++ = '{';
	w += sprintf(w, "\"{\\\"a\\\":\\\"b\\\\\\\\c\\\"}\",\"");
	for (size_t i = 0; i < sizeof(worst) - 1; i++) {
		*w++ = '\\';
		*w++ = worst[i];
	}
	*w++ = '"';
	*w++ = '}';
	*w = 0;
	text = db_array_text(&a);
	assert_non_null(text);
	assert_string_equal(text, want);
	assert_int_equal(a.n, 2);
	db_array_free(&a);
}

static const struct db_stmt st3 = {.name = "t3", .sql = "", .nparams = 3};

static void
test_cols_rows(void **state)
{
	struct db_cols c = {.stmt = &st3};
	const char *p[DB_COLS_MAX];

	(void)state;
	db_cols_row(&c, (const char *const[]){"a", "1", NULL});
	db_cols_row(&c, (const char *const[]){"b", "2", "x"});
	assert_int_equal(c.rows, 2);
	assert_int_equal(db_cols_params(&c, p), 0);
	assert_string_equal(p[0], "{\"a\",\"b\"}");
	assert_string_equal(p[1], "{\"1\",\"2\"}");
	assert_string_equal(p[2], "{NULL,\"x\"}");
	db_cols_free(&c);
	assert_int_equal(c.rows, 0);
	assert_ptr_equal(c.stmt, &st3);
}

/* ncols: the row fills the first columns; the caller fills the rest
 * (the notifier's payloads), or adds at an offset (the reconciler's
 * answers and watch rows of one statement). */
static void
test_cols_partial(void **state)
{
	struct db_cols c = {.stmt = &st3, .ncols = 2};
	const char *p[DB_COLS_MAX];

	(void)state;
	db_cols_row(&c, (const char *const[]){"a", "1"});
	db_array_add(&c.a[2], "payload");
	db_cols_add(&c, 1, (const char *const[]){"9"}, 1);
	assert_int_equal(c.rows, 1);
	assert_int_equal(db_cols_params(&c, p), 0);
	assert_string_equal(p[0], "{\"a\"}");
	assert_string_equal(p[1], "{\"1\",\"9\"}");
	assert_string_equal(p[2], "{\"payload\"}");
	/* a column past the bound is never written */
	db_cols_add(&c, DB_COLS_MAX - 1, (const char *const[]){"x", "y"}, 2);
	assert_int_equal(c.a[DB_COLS_MAX - 1].n, 1);
	db_cols_free(&c);
}

static void
test_cols_too_many_params(void **state)
{
	static const struct db_stmt big = {
	    .name = "big", .sql = "", .nparams = DB_COLS_MAX + 1};
	struct db_cols c = {.stmt = &big};
	const char *p[DB_COLS_MAX];

	(void)state;
	assert_int_equal(db_cols_params(&c, p), -EINVAL);
	db_cols_free(&c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_array_literal),
	    cmocka_unit_test(test_array_escapes_and_growth),
	    cmocka_unit_test(test_cols_rows),
	    cmocka_unit_test(test_cols_partial),
	    cmocka_unit_test(test_cols_too_many_params),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
