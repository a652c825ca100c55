/*
 * test_stream_sql.c - stream_migration_sql(): names come from code and are
 * validated; the SQL has the append-only triggers and only the grants the
 * runtime role needs; db_builtin_sql() replaces exactly the two
 * placeholders.  (The SQL itself runs against PostgreSQL in tests/backbone.)
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "stream.h"

static void
test_names_validated(void **state)
{
	static const char *const bad[] = {
	    "",
	    "Orders",
	    "orders;",
	    "or ders",
	    "1orders",
	    "orders\"",
	    "a-b",
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
	char *sql = NULL;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(
		    stream_migration_sql(bad[i], "kasir_order", &sql), -EINVAL);
		assert_int_equal(stream_migration_sql("orders", bad[i], &sql),
		                 -EINVAL);
	}
	assert_int_equal(stream_migration_sql(NULL, "kasir_order", &sql),
	                 -EINVAL);
	assert_null(sql);
}

static void
test_sql_content(void **state)
{
	char *sql = NULL, *nogrant = NULL;

	(void)state;
	assert_int_equal(stream_migration_sql("orders", "kasir_order", &sql),
	                 0);
	assert_non_null(
	    strstr(sql, "CREATE TABLE IF NOT EXISTS orders.stream_head"));
	assert_non_null(
	    strstr(sql, "CREATE TABLE IF NOT EXISTS orders.stream_out"));
	assert_non_null(
	    strstr(sql, "CREATE TABLE IF NOT EXISTS orders.stream_cursor"));
	assert_non_null(
	    strstr(sql, "CREATE TABLE IF NOT EXISTS orders.stream_poison"));
	assert_non_null(strstr(sql, "'append-only table %'"));
	assert_non_null(
	    strstr(sql, "BEFORE UPDATE OR DELETE\n  ON orders.stream_out"));
	assert_non_null(strstr(sql, "BEFORE TRUNCATE\n  ON orders.stream_out"));
	assert_non_null(
	    strstr(sql, "BEFORE UPDATE OR DELETE\n  ON orders.stream_poison"));
	assert_non_null(
	    strstr(sql, "BEFORE TRUNCATE\n  ON orders.stream_poison"));
	assert_non_null(
	    strstr(sql, "GRANT USAGE ON SCHEMA orders TO \"kasir_order\""));
	/* append-only tables: never UPDATE/DELETE for the runtime role */
	assert_non_null(strstr(sql,
	                       "GRANT SELECT, INSERT ON orders.stream_out,\n"
	                       "  orders.stream_poison TO"));
	assert_null(strstr(sql, "DELETE ON"));
	assert_null(strstr(sql, "TRUNCATE ON"));
	assert_null(strstr(sql, "%1$s"));
	assert_null(strstr(sql, "{{")); /* every placeholder replaced */
	assert_int_equal(stream_migration_sql("orders", NULL, &nogrant), 0);
	assert_null(strstr(nogrant, "GRANT"));
	free(sql);
	free(nogrant);
}

static void
test_placeholders(void **state)
{
	static const struct db_builtin ok = {.version = "t",
	                                     .sql = "A {{schema}}.t {",
	                                     .grants = "\"{{role}}\""};
	static const struct db_builtin unknown = {.version = "t",
	                                          .sql = "{{schema}} {{x}}"};
	static const struct db_builtin role_only = {.version = "t",
	                                            .sql = "TO {{role}}"};
	char *sql = NULL;

	(void)state;
	assert_int_equal(db_builtin_sql(&ok, "s", "r", &sql), 0);
	assert_string_equal(sql, "A s.t {\"r\"");
	free(sql);
	sql = NULL;
	assert_int_equal(db_builtin_sql(&ok, "s", NULL, &sql), 0);
	assert_string_equal(sql, "A s.t {");
	free(sql);
	sql = NULL;
	/* a placeholder the runner does not know, or a role that is not
	 * given, is an error rather than text sent to the server */
	assert_int_equal(db_builtin_sql(&unknown, "s", "r", &sql), -EINVAL);
	assert_null(sql);
	assert_int_equal(db_builtin_sql(&role_only, "s", NULL, &sql), -EINVAL);
	assert_null(sql);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_names_validated),
	    cmocka_unit_test(test_sql_content),
	    cmocka_unit_test(test_placeholders),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
