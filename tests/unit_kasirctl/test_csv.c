/*
 * test_csv.c - services/kasirctl/csv.c: every text cell quoted, formula
 * starts guarded at the start and after any separator.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "csv.h"

static char *
cell(const char *s)
{
	static char out[256];
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	csv_write_text(f, s);
	assert_int_equal(fclose(f), 0);
	assert_true(len < sizeof(out));
	memcpy(out, buf, len + 1);
	free(buf);
	return out;
}

static void
test_quoted(void **state)
{
	(void)state;
	assert_string_equal(cell("Budi Santoso"), "\"Budi Santoso\"");
	assert_string_equal(cell(""), "\"\"");
	assert_string_equal(cell("PAID"), "\"PAID\"");
	assert_string_equal(cell("a,b"), "\"a,b\"");
	assert_string_equal(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
	assert_string_equal(cell("two\r\nlines"), "\"two\r\nlines\"");
	/* separators followed by harmless text: quoted, not guarded */
	assert_string_equal(cell("Jl. Merdeka 1; Jakarta"),
	                    "\"Jl. Merdeka 1; Jakarta\"");
	assert_string_equal(cell("a-b=c"), "\"a-b=c\""); /* not at a start */
	assert_string_equal(cell("budi@example.com"), "\"budi@example.com\"");
}

static void
test_guarded(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
	    {"=1+1", "\"'=1+1\""},
	    {"+6281234567890", "\"'+6281234567890\""},
	    {"-2+3", "\"'-2+3\""},
	    {"@SUM(A1)", "\"'@SUM(A1)\""},
	    {"\t=1", "\"'\t=1\""},
	    {"\r=1", "\"'\r=1\""},
	    /* after a separator: the case and its relatives */
	    {"Budi;=1+1", "\"'Budi;=1+1\""},
	    {"Budi,=1+1", "\"'Budi,=1+1\""},
	    {"Budi\t=1+1", "\"'Budi\t=1+1\""},
	    {"Budi;+1", "\"'Budi;+1\""},
	    {"Budi;-1", "\"'Budi;-1\""},
	    {"Budi;@x", "\"'Budi;@x\""},
	    {"Budi;\t=1", "\"'Budi;\t=1\""},
	    {"Budi;\r=1", "\"'Budi;\r=1\""},
	    {"x,y;z\t=HYPERLINK(\"http://e\")",
	     "\"'x,y;z\t=HYPERLINK(\"\"http://e\"\")\""},
	    {"=\"quoted\"", "\"'=\"\"quoted\"\"\""},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_true(csv_needs_guard(cases[i].in));
		assert_string_equal(cell(cases[i].in), cases[i].out);
	}
	assert_false(csv_needs_guard("Budi; Santoso"));
	assert_false(csv_needs_guard("trailing;"));
	assert_false(csv_needs_guard(""));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_quoted),
	    cmocka_unit_test(test_guarded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
