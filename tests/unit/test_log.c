/*
 * test_log.c - the logfmt output of common/log.c (stderr captured in a
 * temp file), level filtering and parsing, escaping and the line bound.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "log.h"
#include "testutil.h"

static struct tu_capture cap;

static void
begin(void)
{
	tu_capture_begin(&cap, STDERR_FILENO);
}

static char *
end(void)
{
	return tu_capture_end(&cap);
}

static int
setup(void **state)
{
	(void)state;
	unsetenv("JOURNAL_STREAM");
	log_open("kasir-test", LOG_INFO);
	return 0;
}

/* Returns the line without its "ts=... " prefix, after checking it. */
static const char *
after_ts(const char *line)
{
	/* ts=2026-11-23T09:33:19.123Z */
	assert_memory_equal(line, "ts=", 3);
	assert_int_equal(strlen(line) > 28, 1);
	assert_int_equal(line[13], 'T');
	assert_int_equal(line[26], 'Z');
	assert_int_equal(line[27], ' ');
	return line + 28;
}

static void
test_basic_line(void **state)
{
	(void)state;
	begin();
	log_info("order %s created", "A-1");
	char *out = end();
	assert_string_equal(after_ts(out),
	                    "level=info proc=kasir-test msg=\"order A-1 "
	                    "created\"\n");
	free(out);
}

static void
test_fields_and_escaping(void **state)
{
	(void)state;
	begin();
	log_fields(LOG_WARNING,
	           LOG_F({"ORDER_ID", "ORD-7"}, {"SKIPPED", NULL},
	                 {"NOTE", "a b\"c=d\\e\nf\t\x01"}, {"EMPTY", ""},
	                 {"SEQ", "42"}, {"BAD_UTF8", "x\xffy"},
	                 {"UNICODE", "kursus✓"}),
	           "say \"hi\"");
	char *out = end();
	assert_string_equal(
	    after_ts(out),
	    "level=warning proc=kasir-test msg=\"say \\\"hi\\\"\" "
	    "ORDER_ID=ORD-7 NOTE=\"a b\\\"c=d\\\\e\\nf\\t\\x01\" EMPTY=\"\" "
	    "SEQ=42 BAD_UTF8=\"x\\xffy\" UNICODE=kursus✓\n");
	free(out);

	begin();
	log_order(LOG_ERR, "ORD-8", "payment %d failed", 3);
	out = end();
	assert_string_equal(after_ts(out),
	                    "level=err proc=kasir-test msg=\"payment 3 "
	                    "failed\" ORDER_ID=ORD-8\n");
	free(out);
}

static void
test_levels(void **state)
{
	(void)state;
	int level = -1;

	begin();
	log_debug("hidden");
	log_set_level(LOG_DEBUG);
	log_debug("shown");
	log_set_level(LOG_ERR);
	log_warning("hidden too");
	log_err("error shown");
	log_set_level(LOG_INFO);
	char *out = end();
	assert_null(strstr(out, "hidden"));
	assert_non_null(
	    strstr(out, "level=debug proc=kasir-test msg=\"shown\""));
	assert_non_null(strstr(out, "level=err proc=kasir-test msg=\"error "
	                            "shown\""));
	free(out);

	assert_int_equal(log_level_parse("debug", &level), 0);
	assert_int_equal(level, LOG_DEBUG);
	assert_int_equal(log_level_parse("info", &level), 0);
	assert_int_equal(level, LOG_INFO);
	assert_int_equal(log_level_parse("notice", &level), 0);
	assert_int_equal(level, LOG_NOTICE);
	assert_int_equal(log_level_parse("warning", &level), 0);
	assert_int_equal(level, LOG_WARNING);
	assert_int_equal(log_level_parse("err", &level), 0);
	assert_int_equal(level, LOG_ERR);
	level = 99;
	assert_int_equal(log_level_parse("verbose", &level), -EINVAL);
	assert_int_equal(log_level_parse("INFO", &level), -EINVAL);
	assert_int_equal(log_level_parse(NULL, &level), -EINVAL);
	assert_int_equal(level, 99);
}

static void
test_line_bound(void **state)
{
	(void)state;
	char *big = malloc(20001);

	memset(big, 'v', 20000);
	big[20000] = '\0';
	begin();
	log_fields(LOG_INFO, LOG_F({"BIG", big}), "short");
	big[3] = ' '; /* quoted value cut: the closing quote is kept */
	log_fields(LOG_INFO, LOG_F({"BIG", big}), "short");
	log_info("%s", big); /* message itself above its bound */
	log_info("after");
	char *out = end();
	char *l1 = out, *l2 = strchr(l1, '\n') + 1, *l3 = strchr(l2, '\n') + 1;
	char *l4 = strchr(l3, '\n') + 1;
	assert_in_range(l2 - l1, 8100, 8192); /* cut, not dropped */
	assert_non_null(strstr(l1, " BIG=vvvv"));
	assert_memory_equal(l2 - 4, "…\n", 4);
	assert_in_range(l3 - l2, 8100, 8192);
	assert_memory_equal(l3 - 5, "…\"\n", 5);
	assert_in_range(l4 - l3, 3000, 8192);
	assert_memory_equal(l4 - 5, "…\"\n", 5);
	assert_non_null(strstr(l4, "msg=\"after\"\n"));
	free(out);
	free(big);
}

static void
test_errno_kept(void **state)
{
	(void)state;
	begin();
	errno = EAGAIN;
	log_info("x");
	assert_int_equal(errno, EAGAIN);
	errno = ENOENT;
	log_info("open: %m");
	char *out = end();
	assert_non_null(strstr(out, "msg=\"open: No such file or directory\""));
	free(out);
}

static void
test_journal_detection(void **state)
{
	(void)state;
	struct stat st;
	char buf[64];

	/* JOURNAL_STREAM naming another stream: stay on stderr */
	setenv("JOURNAL_STREAM", "1:1", 1);
	log_open("kasir-test", LOG_INFO);
	begin();
	log_info("still stderr");
	char *out = end();
	assert_non_null(strstr(out, "msg=\"still stderr\""));
	free(out);

	/* JOURNAL_STREAM naming our stderr: goes to the journal, nothing
	 * on stderr (sd_journal_send fails quietly without journald). */
	begin();
	assert_int_equal(fstat(STDERR_FILENO, &st), 0);
	snprintf(buf, sizeof(buf), "%llu:%llu", (unsigned long long)st.st_dev,
	         (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", buf, 1);
	log_open("kasir-test", LOG_INFO);
	log_info("to the journal");
	unsetenv("JOURNAL_STREAM");
	log_open("kasir-test", LOG_INFO);
	out = end();
	assert_null(strstr(out, "to the journal"));
	free(out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_basic_line),
	    cmocka_unit_test(test_fields_and_escaping),
	    cmocka_unit_test(test_levels),
	    cmocka_unit_test(test_line_bound),
	    cmocka_unit_test(test_errno_kept),
	    cmocka_unit_test(test_journal_detection),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
