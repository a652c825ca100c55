/*
 * test_db_array.c - common/db_array.c: binary text[] parameters built
 * element by element (struct db_array) and the columns of an array statement
 * built row by row (struct db_cols), as every batched consumer passes them.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "db.h"

static uint32_t
get_u32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;

	return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 |
	       (uint32_t)u[2] << 8 | u[3];
}

/*
 * Reads back the binary text[] param (as array_recv() does) into
 * "[e1|e2|NULL]" and checks its header and length; the element texts
 * are joined with '|'.
 */
static void
array_read(const char *param, char *out, size_t outlen)
{
	const struct db_array *a = (const struct db_array *)param;
	const char *p = a->buf, *end;
	uint32_t ndim, n;
	size_t o = 0;

	assert_non_null(p);
	end = p + a->wire_len;
	ndim = get_u32(p);
	assert_int_equal(get_u32(p + 8), 25); /* text */
	if (ndim == 0) {
		assert_int_equal(a->wire_len, 12);
		assert_int_equal(get_u32(p + 4), 0);
		snprintf(out, outlen, "[]");
		return;
	}
	assert_int_equal(ndim, 1);
	n = get_u32(p + 12);
	assert_int_equal(get_u32(p + 16), 1); /* lower bound */
	p += 20;
	o += (size_t)snprintf(out + o, outlen - o, "[");
	for (uint32_t i = 0; i < n; i++) {
		uint32_t len;

		assert_true(end - p >= 4);
		len = get_u32(p);
		p += 4;
		if (i > 0)
			o += (size_t)snprintf(out + o, outlen - o, "|");
		if (len == UINT32_MAX) {
			assert_int_equal(get_u32(a->buf + 4), 1); /* has NULL */
			o += (size_t)snprintf(out + o, outlen - o, "NULL");
			continue;
		}
		assert_true((size_t)(end - p) >= len);
		o += (size_t)snprintf(out + o, outlen - o, "%.*s", (int)len, p);
		p += len;
	}
	assert_ptr_equal(p, end); /* nothing after the last element */
	snprintf(out + o, outlen - o, "]");
}

static void
test_array_binary(void **state)
{
	struct db_array a = {0};
	char got[256];

	(void)state;
	array_read(db_array_param(&a), got, sizeof(got));
	assert_string_equal(got, "[]");
	db_array_add(&a, "plain");
	db_array_add(&a, NULL);
	db_array_add(&a, "say \"hi\" \\ there {,}");
	db_array_add(&a, "");
	array_read(db_array_param(&a), got, sizeof(got));
	assert_string_equal(got, "[plain|NULL|say \"hi\" \\ there {,}|]");
	/* param() may be asked again, and add() extends it */
	db_array_add(&a, "NULL");
	array_read(db_array_param(&a), got, sizeof(got));
	assert_string_equal(got, "[plain|NULL|say \"hi\" \\ there {,}||NULL]");
	assert_int_equal(a.n, 5);
	db_array_free(&a);
	assert_null(a.buf);

	/* no NULL element: the flag stays clear */
	db_array_add(&a, "x");
	array_read(db_array_param(&a), got, sizeof(got));
	assert_int_equal(get_u32(a.buf + 4), 0);
	assert_string_equal(got, "[x]");
	db_array_free(&a);
}

/* A large array grows its buffer and keeps every element intact. */
static void
test_array_grows(void **state)
{
	struct db_array a = {0};
	char v[32], got[32];
	const struct db_array *p;

	(void)state;
	for (int i = 0; i < 5000; i++) {
		snprintf(v, sizeof(v), "element-%d", i);
		db_array_add(&a, v);
	}
	p = (const struct db_array *)db_array_param(&a);
	assert_non_null(p);
	assert_int_equal(get_u32(p->buf + 12), 5000);
	/* the last element is where it should be */
	snprintf(v, sizeof(v), "element-%d", 4999);
	assert_int_equal(get_u32(p->buf + p->wire_len - strlen(v) - 4),
	                 strlen(v));
	memcpy(got, p->buf + p->wire_len - strlen(v), strlen(v));
	got[strlen(v)] = 0;
	assert_string_equal(got, v);
	db_array_free(&a);
}

static const struct db_stmt st3 = {
    .name = "t3", .sql = "", .nparams = 3, .arrays = DB_ARRAY_PARAMS(1, 3)};

static void
assert_col(const char *param, const char *want)
{
	char got[256];

	array_read(param, got, sizeof(got));
	assert_string_equal(got, want);
}

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
	assert_col(p[0], "[a|b]");
	assert_col(p[1], "[1|2]");
	assert_col(p[2], "[NULL|x]");
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
	assert_col(p[0], "[a]");
	assert_col(p[1], "[1|9]");
	assert_col(p[2], "[payload]");
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

/* Every parameter of an array statement must be declared an array: one
 * that is not would be prepared without the text[] type. */
static void
test_cols_undeclared(void **state)
{
	static const struct db_stmt half = {.name = "half",
	                                    .sql = "",
	                                    .nparams = 3,
	                                    .arrays = DB_ARRAY_PARAMS(1, 2)};
	struct db_cols c = {.stmt = &half};
	const char *p[DB_COLS_MAX];

	(void)state;
	assert_int_equal(DB_ARRAY_PARAMS(1, 3), 7);
	assert_int_equal(DB_ARRAY_PARAMS(2, 5), 30);
	assert_int_equal(DB_ARRAY_PARAMS(1, 64), UINT64_MAX);
	db_cols_row(&c, (const char *const[]){"a", "1", "x"});
	assert_int_equal(db_cols_params(&c, p), -EINVAL);
	db_cols_free(&c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_array_binary),
	    cmocka_unit_test(test_array_grows),
	    cmocka_unit_test(test_cols_rows),
	    cmocka_unit_test(test_cols_partial),
	    cmocka_unit_test(test_cols_too_many_params),
	    cmocka_unit_test(test_cols_undeclared),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
