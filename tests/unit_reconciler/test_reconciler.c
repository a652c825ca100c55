/*
 * test_reconciler.c - unit tests of kasir-reconciler's pure parts: the
 * schedule (first check, backoff, the check right after expiry, retries,
 * and the rule that no order stays pending past expiry + grace without a
 * check), the interpretation of Status API answers (HTTP status AND body
 * status_code), and the configuration list parsers.
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

#include "err.h"
#include "reconciler.h"

#define SEC  1000LL
#define MIN  (60 * SEC)
#define HOUR (60 * MIN)

static struct recon_durations default_backoff;

static struct sched_conf
default_sched(void)
{
	struct sched_conf c = {
	    .first_check_ms = 10 * MIN,
	    .backoff = &default_backoff,
	    .expiry_grace_ms = 1 * MIN,
	    .retry_ms = 30 * SEC,
	    .retry_max_ms = 10 * MIN,
	};
	return c;
}

static int
setup_backoff(void **state)
{
	(void)state;
	return recon_durations_parse("10m,30m,1h,3h", &default_backoff);
}

/* ---- schedule -------------------------------------------------------- */

static void
test_first_check(void **state)
{
	struct sched_conf c = default_sched();
	struct sched_order o = {.created_ms = 1000 * HOUR,
	                        .expires_ms = 1000 * HOUR + 24 * HOUR};

	(void)state;
	assert_int_equal(sched_first_check(&c, &o), 1000 * HOUR + 10 * MIN);
	/* a GoPay order expiring after 5 minutes: its expiry check comes
	 * first, right after expiry + grace */
	o.expires_ms = o.created_ms + 5 * MIN;
	assert_int_equal(sched_first_check(&c, &o), o.created_ms + 6 * MIN);
}

static void
test_backoff_sequence(void **state)
{
	struct sched_conf c = default_sched();
	struct sched_order o = {.created_ms = 0, .expires_ms = 1000 * HOUR};
	const int64_t want[] = {10 * MIN, 30 * MIN, 1 * HOUR,
	                        3 * HOUR, 3 * HOUR, 3 * HOUR};
	int64_t now = 10 * MIN;

	(void)state;
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		int64_t next;

		o.attempts = (int)i + 1;
		next = sched_after_answer(&c, &o, now);
		assert_int_equal(next - now, want[i]);
		now = next;
	}
}

static void
test_expiry_check_never_skipped(void **state)
{
	struct sched_conf c = default_sched();
	struct sched_order o = {
	    .created_ms = 0, .expires_ms = 24 * HOUR, .attempts = 8};
	int64_t now = 22 * HOUR;

	(void)state;
	/* the backoff (3h) would jump over the expiry: the expiry check
	 * comes first */
	assert_int_equal(sched_after_answer(&c, &o, now), 24 * HOUR + 1 * MIN);
	/* once an answered check was made after expiry, the plain backoff
	 * resumes */
	assert_true(sched_is_expiry_check(&o, 24 * HOUR + 1 * MIN));
	assert_false(sched_is_expiry_check(&o, 24 * HOUR - 1));
	o.expiry_checked = true;
	now = 24 * HOUR + 1 * MIN;
	assert_int_equal(sched_after_answer(&c, &o, now), now + 3 * HOUR);
}

static void
test_failure_retry(void **state)
{
	struct sched_conf c = default_sched();
	struct sched_order o = {.created_ms = 0, .expires_ms = 1000 * HOUR};
	const int64_t want[] = {30 * SEC,  60 * SEC, 120 * SEC, 240 * SEC,
	                        480 * SEC, 10 * MIN, 10 * MIN};

	(void)state;
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		o.failures = (int)i + 1;
		assert_int_equal(sched_after_failure(&c, &o, 100 * HOUR),
		                 100 * HOUR + want[i]);
	}
	/* a retry never goes beyond the owed expiry check */
	o.expires_ms = 100 * HOUR + 2 * MIN;
	o.failures = 6;
	assert_int_equal(sched_after_failure(&c, &o, 100 * HOUR),
	                 100 * HOUR + 3 * MIN);
	/* past that moment: a plain retry */
	assert_int_equal(sched_after_failure(&c, &o, 101 * HOUR),
	                 101 * HOUR + 10 * MIN);
}

/* An accepted refund is asked about at doubling intervals from its
 * acceptance: never sooner than retry, never further apart than the
 * backoff's last step. */
static void
test_refund_follow(void **state)
{
	struct sched_conf c = default_sched();
	int64_t since = 50 * HOUR, t = since + 200; /* the forced check */
	int64_t seen[16];
	int n = 0;

	(void)state;
	while (n < 16 && t < since + 24 * HOUR) {
		seen[n++] = t;
		t = sched_after_refund_answer(&c, since, t);
	}
	/* 30 s after the forced check (retry), then doubling: 1 min, 2, 4...
	 * up to steps of 3 h */
	assert_int_equal(seen[1] - seen[0], 30 * SEC);
	assert_int_equal(seen[2] - seen[1], 30 * SEC + 200);
	assert_int_equal(seen[3] - seen[2], 60 * SEC + 400);
	for (int i = 2; i < n; i++) {
		assert_true(seen[i] - seen[i - 1] <= 3 * HOUR);
		assert_true(seen[i] - seen[i - 1] >= 30 * SEC);
	}
	assert_int_equal(seen[n - 1] - seen[n - 2], 3 * HOUR);
	/* a day of following asks about 15 times, not every 30 s */
	assert_true(n >= 12 && n <= 16);
	/* no backoff list: first_check is the longest step */
	c.backoff = NULL;
	assert_int_equal(sched_after_refund_answer(&c, 0, 10 * HOUR),
	                 10 * HOUR + 10 * MIN);
}

/* Simulation: whatever the expiry, the backoff list and the mix of
 * answers and failures, the first answered check at or after expiry
 * starts no later than expiry + grace + the time failures took. */
static void
test_no_pending_past_expiry_unchecked(void **state)
{
	const char *lists[] = {"10m,30m,1h,3h", "1h", "5m,6h", "2h,2h,24h"};
	unsigned seed = 12345;

	(void)state;
	for (size_t l = 0; l < sizeof(lists) / sizeof(lists[0]); l++) {
		struct recon_durations b;
		struct sched_conf c = default_sched();

		assert_int_equal(recon_durations_parse(lists[l], &b), 0);
		c.backoff = &b;
		for (int run = 0; run < 500; run++) {
			struct sched_order o = {0};
			int64_t t, exp_deadline;
			bool failing;

			seed = seed * 1103515245 + 12345;
			o.created_ms = 0;
			o.expires_ms = (int64_t)(seed % (48 * 60)) * MIN + SEC;
			exp_deadline = o.expires_ms + c.expiry_grace_ms;
			t = sched_first_check(&c, &o);
			assert_true(t <= exp_deadline);
			for (int step = 0; step < 100 && !o.expiry_checked;
			     step++) {
				seed = seed * 1103515245 + 12345;
				failing = (seed >> 16) % 4 == 0;
				if (failing) {
					/* failures delay only by retries,
					 * never past the deadline unless it
					 * has already passed */
					o.failures++;
					t = sched_after_failure(&c, &o, t);
					continue;
				}
				if (sched_is_expiry_check(&o, t)) {
					o.expiry_checked = true;
					/* the check that answered the expiry
					 * question started in time, unless
					 * failures pushed it */
					if (o.failures == 0)
						assert_true(t <= exp_deadline);
					break;
				}
				o.failures = 0;
				o.attempts++;
				t = sched_after_answer(&c, &o, t);
				assert_true(t <= exp_deadline);
			}
			assert_true(o.expiry_checked);
		}
	}
}

/* ---- interpretation -------------------------------------------------- */

struct case_ {
	long http;
	const char *body;
	const char *txn; /* asked by transaction id */
	enum recon_verdict want;
	const char *want_ts;
};

#define SETTLE                                                                 \
	"{\"status_code\":\"200\",\"transaction_status\":\"settlement\","      \
	"\"order_id\":\"ord-1\",\"transaction_id\":\"tx-1\","                  \
	"\"gross_amount\":\"150000.00\",\"payment_type\":\"gopay\"}"

static const struct case_ cases[] = {
    {200, SETTLE, NULL, VERDICT_STATUS, "settlement"},
    {200, SETTLE, "tx-1", VERDICT_STATUS, "settlement"},
    /* an answer about another order/transaction is never acted on */
    {200,
     "{\"status_code\":\"200\",\"transaction_status\":\"settlement\","
     "\"order_id\":\"ord-2\"}",
     NULL, VERDICT_UNEXPECTED, "settlement"},
    {200, SETTLE, "tx-2", VERDICT_UNEXPECTED, "settlement"},
    /* asked by a transaction id (learned from a notification, unsigned):
     * the answer about that transaction names another order, whose
     * settlement must never pay this one */
    {200,
     "{\"status_code\":\"200\",\"transaction_status\":\"settlement\","
     "\"order_id\":\"ord-2\",\"transaction_id\":\"tx-1\"}",
     "tx-1", VERDICT_UNEXPECTED, "settlement"},
    {200,
     "{\"status_code\":\"200\",\"transaction_status\":\"settlement\","
     "\"transaction_id\":\"tx-1\"}",
     "tx-1", VERDICT_UNEXPECTED, "settlement"},
    /* asked by a transaction id, "not found" and "expired" name no order:
     * a junk id must not expire an order */
    {404,
     "{\"status_code\":\"404\",\"status_message\":\"Transaction doesn't "
     "exist.\"}",
     "junk-1", VERDICT_UNEXPECTED, ""},
    {407, "{\"status_code\":\"407\",\"transaction_status\":\"expire\"}", "tx-1",
     VERDICT_UNEXPECTED, "expire"},
    {200,
     "{\"status_code\":\"201\",\"transaction_status\":\"pending\","
     "\"order_id\":\"ord-1\"}",
     NULL, VERDICT_STATUS, "pending"},
    {200,
     "{\"status_code\":\"202\",\"transaction_status\":\"expire\","
     "\"order_id\":\"ord-1\"}",
     NULL, VERDICT_STATUS, "expire"},
    /* 200 with a body that lacks the status: nothing to conclude */
    {200, "{\"status_code\":\"200\",\"order_id\":\"ord-1\"}", NULL,
     VERDICT_UNEXPECTED, ""},
    {200, "<html>ok</html>", NULL, VERDICT_UNEXPECTED, ""},
    {200, SETTLE " trailing", NULL, VERDICT_UNEXPECTED, ""},
    {200, "[1,2]", NULL, VERDICT_UNEXPECTED, ""},
    /* a key twice: kasir (cJSON) would read one status, the stored body
     * (jsonb) show the other */
    {200,
     "{\"status_code\":\"200\",\"transaction_status\":\"settlement\","
     "\"transaction_status\":\"pending\",\"order_id\":\"ord-1\"}",
     NULL, VERDICT_UNEXPECTED, ""},
    {200,
     "{\"status_code\":\"200\",\"transaction_status\":\"settlement\","
     "\"order_id\":\"ord-1\",\"refunds\":[{\"a\":1,\"a\":2}]}",
     NULL, VERDICT_UNEXPECTED, ""},
    /* not started: HTTP 404, or HTTP 200 with body status_code 404 */
    {404,
     "{\"status_code\":\"404\",\"status_message\":\"Transaction doesn't "
     "exist.\",\"id\":\"x\"}",
     NULL, VERDICT_NOT_FOUND, ""},
    {200,
     "{\"status_code\":\"404\",\"status_message\":\"Transaction doesn't "
     "exist.\"}",
     NULL, VERDICT_NOT_FOUND, ""},
    /* a 404 that is not Midtrans speaking (wrong URL, proxy page) must
     * never count as "not started" */
    {404, "<html>Not Found</html>", NULL, VERDICT_UNEXPECTED, ""},
    {404, "", NULL, VERDICT_UNEXPECTED, ""},
    {404, "{\"status_code\":\"200\",\"transaction_status\":\"settlement\"}",
     NULL, VERDICT_UNEXPECTED, "settlement"},
    /* expired */
    {407,
     "{\"status_code\":\"407\",\"status_message\":\"Transaction is "
     "expired\",\"transaction_status\":\"expire\"}",
     NULL, VERDICT_EXPIRED, "expire"},
    {200, "{\"status_code\":\"407\",\"status_message\":\"expired\"}", NULL,
     VERDICT_EXPIRED, ""},
    {407, "<html/>", NULL, VERDICT_UNEXPECTED, ""},
    /* wrong key: HTTP 401 or the body says so */
    {401, "{\"status_code\":\"401\"}", NULL, VERDICT_AUTH, ""},
    {401, "", NULL, VERDICT_AUTH, ""},
    {200, "{\"status_code\":\"401\",\"status_message\":\"Unknown\"}", NULL,
     VERDICT_AUTH, ""},
    /* transient */
    {500, "{\"status_code\":\"500\"}", NULL, VERDICT_HTTP_5XX, ""},
    {503, "<html>busy</html>", NULL, VERDICT_HTTP_5XX, ""},
    {502, NULL, NULL, VERDICT_HTTP_5XX, ""},
    {200, "{\"status_code\":\"500\",\"status_message\":\"recovering\"}", NULL,
     VERDICT_HTTP_5XX, ""},
    {0, NULL, NULL, VERDICT_TIMEOUT, ""},
    /* anything else */
    {400, "{\"status_code\":\"400\"}", NULL, VERDICT_UNEXPECTED, ""},
    {201, SETTLE, NULL, VERDICT_UNEXPECTED, "settlement"},
    {302, "", NULL, VERDICT_UNEXPECTED, ""},
};

static void
test_interpret_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct case_ *c = &cases[i];
		struct status_fields f;
		enum recon_verdict v;

		v = statusapi_interpret(c->http, c->body,
		                        c->body ? strlen(c->body) : 0, "ord-1",
		                        c->txn, &f);
		if (v != c->want)
			fail_msg(
			    "case %zu (http %ld, body %s): got %s, want %s", i,
			    c->http, c->body ? c->body : "(none)",
			    recon_verdict_name(v), recon_verdict_name(c->want));
		assert_string_equal(f.transaction_status, c->want_ts);
	}
}

/* A transaction made before the order existed is not its payment: WIB
 * "YYYY-MM-DD HH:MM:SS" against the order's creation, whole seconds, 2 s
 * of clock slack; unknown times never rule. */
static void
test_predates(void **state)
{
	struct status_fields f;
	/* 2026-12-07 10:00:00 WIB = 03:00:00 UTC */
	const int64_t t = 1796612400000LL;

	(void)state;
	memset(&f, 0, sizeof(f));
	snprintf(f.transaction_time, sizeof(f.transaction_time), "%s",
	         "2026-12-07 10:00:00");
	assert_false(statusapi_predates(&f, t));        /* same second */
	assert_false(statusapi_predates(&f, t + 3000)); /* within slack */
	assert_true(statusapi_predates(&f, t + 3001));  /* before the order */
	assert_true(statusapi_predates(&f, t + 86400000)); /* a day before */
	assert_false(statusapi_predates(&f, t - 60000));   /* after the order */
	assert_false(statusapi_predates(&f, 0)); /* order time unknown */
	snprintf(f.transaction_time, sizeof(f.transaction_time), "%s",
	         "2026-12-07T10:00:00Z");
	assert_false(statusapi_predates(&f, t + 86400000)); /* not Midtrans's */
	f.transaction_time[0] = '\0';
	assert_false(statusapi_predates(&f, t + 86400000));
}

static void
test_interpret_fields(void **state)
{
	struct status_fields f;
	char big[300];

	(void)state;
	assert_int_equal(
	    statusapi_interpret(200, SETTLE, strlen(SETTLE), "ord-1", NULL, &f),
	    VERDICT_STATUS);
	assert_string_equal(f.order_id, "ord-1");
	assert_string_equal(f.transaction_id, "tx-1");
	assert_string_equal(f.gross_amount, "150000.00");
	assert_string_equal(f.payment_type, "gopay");
	assert_string_equal(f.status_code, "200");
	assert_string_equal(f.fraud_status, "");
	assert_string_equal(f.refund_amount, "");
	{
		static const char pr[] =
		    "{\"status_code\":\"200\",\"transaction_status\":"
		    "\"partial_refund\",\"order_id\":\"ord-1\","
		    "\"refund_amount\":\"50000.00\"}";

		assert_int_equal(
		    statusapi_interpret(200, pr, strlen(pr), "ord-1", NULL, &f),
		    VERDICT_STATUS);
		assert_string_equal(f.refund_amount, "50000.00");
	}
	/* a NUL and more after the object: not a Midtrans body */
	{
		static const char nul[] = SETTLE "\0{\"junk\":1}";

		assert_int_equal(statusapi_interpret(200, nul, sizeof(nul) - 1,
		                                     "ord-1", NULL, &f),
		                 VERDICT_UNEXPECTED);
	}
	/* the body need not be NUL-terminated: only body_len counts */
	assert_int_equal(statusapi_interpret(200, SETTLE "XXXX", strlen(SETTLE),
	                                     "ord-1", NULL, NULL),
	                 VERDICT_STATUS);
	/* an over-long field is dropped, not truncated into something
	 * else */
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	{
		char body[600];

		snprintf(body, sizeof(body),
		         "{\"status_code\":\"200\",\"transaction_status\":"
		         "\"%s\",\"order_id\":\"ord-1\"}",
		         big);
		assert_int_equal(statusapi_interpret(200, body, strlen(body),
		                                     "ord-1", NULL, &f),
		                 VERDICT_UNEXPECTED);
		assert_string_equal(f.transaction_status, "");
	}
	{
		/* invalid UTF-8 (a lone continuation byte) in any field: not
		 * a Midtrans body, and its fields could not be stored in
		 * recon.status_check (the answer was then asked again for
		 * ever: an outside review, 2026-12-07) */
		static const char bad[] =
		    "{\"status_code\":\"200\",\"transaction_status\":"
		    "\"settlement\",\"order_id\":\"ord-1\","
		    "\"gross_amount\":\"150000.00\","
		    "\"status_message\":\"ok \x80\"}";

		assert_int_equal(statusapi_interpret(200, bad, strlen(bad),
		                                     "ord-1", NULL, &f),
		                 VERDICT_UNEXPECTED);
		assert_string_equal(f.transaction_status, "");
		assert_string_equal(f.status_message, "");
	}
}

/* The Midtrans notification fixtures (a Status API answer has the same
 * shape), tests/data/midtrans/notifications. */
static void
test_interpret_fixtures(void **state)
{
	const char *dir = KASIR_TEST_DATA_DIR "/midtrans/notifications";
	const struct {
		const char *file;
		const char *ts;
	} samples[] = {
	    {"F_gopay_settlement.json", "settlement"},
	    {"E_gopay_pending.json", "pending"},
	    {"A_card_capture_accept.json", "capture"},
	    {"H_qris_expire.json", "expire"},
	    {"L_alfamart_pending_no_fraud.json", "pending"},
	    {"O_bca_va_refund.json", "refund"},
	    {"Q_card_chargeback.json", "chargeback"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
		char path[1024], body[16384], oid[RECON_ID_MAX];
		struct status_fields f;
		FILE *fp;
		size_t n;

		snprintf(path, sizeof(path), "%s/%s", dir, samples[i].file);
		fp = fopen(path, "r");
		if (fp == NULL)
			fail_msg("fixture %s missing", path);
		n = fread(body, 1, sizeof(body) - 1, fp);
		fclose(fp);
		body[n] = '\0';
		/* learn the sample's order id, then ask about it */
		statusapi_interpret(200, body, n, "", NULL, &f);
		snprintf(oid, sizeof(oid), "%s", f.order_id);
		assert_true(oid[0] != '\0');
		assert_int_equal(
		    statusapi_interpret(200, body, n, oid, NULL, &f),
		    VERDICT_STATUS);
		assert_string_equal(f.transaction_status, samples[i].ts);
		/* asked about another order: never acted on */
		assert_int_equal(
		    statusapi_interpret(200, body, n, "other", NULL, NULL),
		    VERDICT_UNEXPECTED);
		/* the same body behind an HTTP error is not a status */
		assert_int_not_equal(
		    statusapi_interpret(404, body, n, oid, NULL, NULL),
		    VERDICT_STATUS);
	}
}

static void
test_verdict_classes(void **state)
{
	(void)state;
	assert_true(recon_verdict_is_answer(VERDICT_STATUS));
	assert_true(recon_verdict_is_answer(VERDICT_NOT_FOUND));
	assert_true(recon_verdict_is_answer(VERDICT_EXPIRED));
	assert_false(recon_verdict_is_answer(VERDICT_AUTH));
	assert_false(recon_verdict_is_answer(VERDICT_HTTP_5XX));
	assert_false(recon_verdict_is_answer(VERDICT_UNEXPECTED));
	assert_true(recon_verdict_is_transient(VERDICT_HTTP_5XX));
	assert_true(recon_verdict_is_transient(VERDICT_TIMEOUT));
	assert_false(recon_verdict_is_transient(VERDICT_AUTH));
	assert_false(recon_verdict_is_transient(VERDICT_NOT_FOUND));
	assert_string_equal(recon_verdict_name(VERDICT_NOT_FOUND), "not_found");
	assert_string_equal(recon_verdict_name(VERDICT_COUNT), "unexpected");
}

/* ---- configuration lists --------------------------------------------- */

static void
test_durations_parse(void **state)
{
	struct recon_durations d;

	(void)state;
	assert_int_equal(recon_durations_parse("10m, 30m,1h ,3h", &d), 0);
	assert_int_equal(d.n, 4);
	assert_int_equal(d.ms[0], 10 * MIN);
	assert_int_equal(d.ms[3], 3 * HOUR);
	assert_int_equal(recon_durations_parse("", &d), 0);
	assert_int_equal(d.n, 0);
	assert_int_equal(recon_durations_parse("1s", &d), 0);
	assert_int_equal(d.n, 1);
	assert_int_not_equal(recon_durations_parse("1s,,2s", &d), 0);
	assert_int_not_equal(recon_durations_parse("1s,", &d), 0);
	assert_int_not_equal(recon_durations_parse("soon", &d), 0);
	assert_int_not_equal(recon_durations_parse("0s", &d), 0);
	assert_int_not_equal(recon_durations_parse("8d", &d), 0);
	assert_int_equal(recon_durations_parse("1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,"
	                                       "1s,1s,1s,1s,1s,1s,1s",
	                                       &d),
	                 KASIR_ETOOBIG);
	/* d untouched by a failure */
	assert_int_equal(d.n, 1);
}

static void
test_types_parse(void **state)
{
	struct recon_types t;

	(void)state;
	assert_int_equal(recon_types_parse("DANA, bsi_va", &t), 0);
	assert_int_equal(t.n, 2);
	assert_true(recon_types_has(&t, "dana"));
	assert_true(recon_types_has(&t, "BSI_VA"));
	assert_false(recon_types_has(&t, "gopay"));
	assert_false(recon_types_has(&t, NULL));
	assert_int_not_equal(recon_types_parse("dana;bsi", &t), 0);
	assert_int_equal(recon_types_parse("", &t), 0);
	assert_int_equal(t.n, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_first_check),
	    cmocka_unit_test(test_predates),
	    cmocka_unit_test(test_backoff_sequence),
	    cmocka_unit_test(test_expiry_check_never_skipped),
	    cmocka_unit_test(test_failure_retry),
	    cmocka_unit_test(test_refund_follow),
	    cmocka_unit_test(test_no_pending_past_expiry_unchecked),
	    cmocka_unit_test(test_interpret_table),
	    cmocka_unit_test(test_interpret_fields),
	    cmocka_unit_test(test_interpret_fixtures),
	    cmocka_unit_test(test_verdict_classes),
	    cmocka_unit_test(test_durations_parse),
	    cmocka_unit_test(test_types_parse),
	};

	return cmocka_run_group_tests(tests, setup_backoff, NULL);
}
