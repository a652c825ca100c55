/*
 * test_status_consistency.c - the table of which status_code Midtrans sends
 * with which transaction_status / fraud_status
 * (services/ingest/status_consistency.c), row by row, and genuine bodies
 * whose unsigned fields were rewritten: the signature still verifies (that
 * is the attack), the consistency check refuses them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"
#include "notification.h"

#define DOCS_KEY "askvnoibnosifnboseofinbofinfgbiufglnbfg"

static const struct notif_key docs_key[] = {
    {.id = "docs", .secret = DOCS_KEY, .secret_len = sizeof(DOCS_KEY) - 1},
};

/* The table as the docs state it (docs/state-machine.md, "At the door"),
 * written out again so that a changed row in the code fails here.  fraud
 * NULL = no fraud_status field. */
static const struct {
	const char *tstatus;
	const char *fraud;
	const char *code;
} rows[] = {
    {"capture", "accept", "200"},
    {"capture", NULL, "200"},
    {"capture", "challenge", "201"},
    {"capture", "deny", "202"},
    {"settlement", "accept", "200"},
    {"refund", "accept", "200"},
    {"partial_refund", "accept", "200"},
    {"pending", "accept", "201"},
    {"deny", "accept", "202"},
    {"cancel", "accept", "202"},
    {"expire", "accept", "202"},
    {"failure", "accept", "202"},
    {"authorize", "accept", "200"},
    {"chargeback", "accept", "200"},
    {"partial_chargeback", "accept", "200"},
};

static const char *const codes[] = {"200", "201", "202"};

/*
 * A notification body signed with the docs key over (order, code, amount),
 * carrying tstatus and fraud (NULL: no field).  Caller frees.
 */
static char *
signed_body(const char *order_id, const char *code, const char *tstatus,
            const char *fraud)
{
	char sig[NOTIF_SIGNATURE_HEXLEN + 1], fraud_field[64] = "";
	char *out = malloc(1024);

	assert_non_null(out);
	assert_int_equal(notif_signature(order_id, code, "150000.00", DOCS_KEY,
	                                 strlen(DOCS_KEY), sig),
	                 0);
	if (fraud != NULL)
		snprintf(fraud_field, sizeof(fraud_field),
		         ",\"fraud_status\":\"%s\"", fraud);
	snprintf(out, 1024,
	         "{\"order_id\":\"%s\",\"status_code\":\"%s\","
	         "\"gross_amount\":\"150000.00\",\"transaction_status\":"
	         "\"%s\",\"signature_key\":\"%s\",\"currency\":\"IDR\"%s}",
	         order_id, code, tstatus, sig, fraud_field);
	return out;
}

/* Parses, verifies (must verify) and checks one body: the check's result,
 * with *why filled on a refusal. */
static int
check_body(const char *body, struct notif_reject *why)
{
	struct notification n;
	size_t idx = 99;
	int r;

	memset(why, 0, sizeof(*why));
	assert_int_equal(notification_parse(body, strlen(body), &n, why), 0);
	assert_int_equal(notification_verify(&n, docs_key, 1, &idx), 0);
	r = notification_check_status(&n, why);
	notification_fini(&n);
	return r;
}

/* Replaces the first occurrence of from (a whole JSON fragment) with to,
 * the way an attacker edits a genuine body: the signature is untouched. */
static char *
rewrite(const char *body, const char *from, const char *to)
{
	const char *at = strstr(body, from);
	size_t pre, len = strlen(body) - strlen(from) + strlen(to) + 1;
	char *out = malloc(len);

	assert_non_null(at);
	assert_non_null(out);
	pre = (size_t)(at - body);
	memcpy(out, body, pre);
	strcpy(out + pre, to);
	strcat(out, at + strlen(from));
	return out;
}

/* ---- the table, row by row ---- */

static void
test_every_row(void **state)
{
	(void)state;
	assert_int_equal(notif_status_rule_count(),
	                 sizeof(rows) / sizeof(rows[0]));
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const char *want =
		    notif_expected_status_code(rows[i].tstatus, rows[i].fraud);

		if (want == NULL || strcmp(want, rows[i].code) != 0)
			fail_msg("%s/%s: table says %s, docs say %s",
			         rows[i].tstatus,
			         rows[i].fraud ? rows[i].fraud : "(absent)",
			         want ? want : "(no row)", rows[i].code);
		for (size_t c = 0; c < sizeof(codes) / sizeof(codes[0]); c++) {
			struct notif_reject why;
			char *b = signed_body("ROW-1", codes[c],
			                      rows[i].tstatus, rows[i].fraud);
			int r = check_body(b, &why);
			bool ok = strcmp(codes[c], rows[i].code) == 0;

			if (ok && r != 0)
				fail_msg("%s/%s with %s refused: %s",
				         rows[i].tstatus,
				         rows[i].fraud ? rows[i].fraud : "-",
				         codes[c], why.message);
			if (!ok && r != KASIR_EREJECT)
				fail_msg("%s/%s with %s accepted",
				         rows[i].tstatus,
				         rows[i].fraud ? rows[i].fraud : "-",
				         codes[c]);
			if (!ok) {
				assert_int_equal(why.code,
				                 NOTIF_INCONSISTENT_STATUS);
				assert_non_null(
				    strstr(why.message, rows[i].code));
			}
			free(b);
		}
	}
}

/* fraud_status matters only with capture: a genuine card deny carries
 * fraud accept with 202; a settlement's fraud_status is not looked at. */
static void
test_fraud_only_for_capture(void **state)
{
	struct notif_reject why;
	const char *fraud[] = {"accept", "challenge", "deny", NULL};

	(void)state;
	for (size_t i = 0; i < sizeof(fraud) / sizeof(fraud[0]); i++) {
		char *b = signed_body("C17550", "202", "deny", fraud[i]);

		assert_int_equal(check_body(b, &why), 0);
		free(b);
		b = signed_body("C17550", "200", "settlement", fraud[i]);
		assert_int_equal(check_body(b, &why), 0);
		free(b);
	}
	assert_string_equal(notif_expected_status_code("capture", "accept"),
	                    "200");
	assert_string_equal(notif_expected_status_code("capture", "challenge"),
	                    "201");
}

/* Values the table does not know pass to kasir-order, which records them
 * as invalid evidence and moves nothing. */
static void
test_unknown_values_pass(void **state)
{
	struct notif_reject why;
	char *b;

	(void)state;
	assert_null(notif_expected_status_code("expired", NULL));
	assert_null(notif_expected_status_code("Settlement", NULL));
	assert_null(notif_expected_status_code("capture", "review"));
	assert_null(notif_expected_status_code(NULL, NULL));
	b = signed_body("U-1", "200", "future_status", NULL);
	assert_int_equal(check_body(b, &why), 0);
	free(b);
	b = signed_body("U-2", "201", "capture", "review");
	assert_int_equal(check_body(b, &why), 0);
	free(b);
}

/* ---- genuine bodies with an unsigned field rewritten ---- */

struct rewrite_case {
	const char *what;
	const char *code, *tstatus, *fraud; /* the genuine body */
	const char *from, *to;              /* the attacker's edit */
};

static const struct rewrite_case rewrites[] = {
    {"pending 201 rewritten to settlement", "201", "pending", NULL,
     "\"transaction_status\":\"pending\"",
     "\"transaction_status\":\"settlement\""},
    {"pending 201 rewritten to capture (no fraud_status)", "201", "pending",
     NULL, "\"transaction_status\":\"pending\"",
     "\"transaction_status\":\"capture\""},
    {"capture/challenge 201 with fraud_status rewritten to accept", "201",
     "capture", "challenge", "\"fraud_status\":\"challenge\"",
     "\"fraud_status\":\"accept\""},
    {"capture/challenge 201 with fraud_status removed", "201", "capture",
     "challenge", ",\"fraud_status\":\"challenge\"", ""},
    {"capture/challenge 201 with fraud_status rewritten to deny", "201",
     "capture", "challenge", "\"fraud_status\":\"challenge\"",
     "\"fraud_status\":\"deny\""},
    {"settlement 200 rewritten to deny", "200", "settlement", "accept",
     "\"transaction_status\":\"settlement\"",
     "\"transaction_status\":\"deny\""},
    {"settlement 200 rewritten to cancel", "200", "settlement", "accept",
     "\"transaction_status\":\"settlement\"",
     "\"transaction_status\":\"cancel\""},
    {"settlement 200 rewritten to pending", "200", "settlement", "accept",
     "\"transaction_status\":\"settlement\"",
     "\"transaction_status\":\"pending\""},
    {"capture/accept 200 with fraud_status rewritten to challenge", "200",
     "capture", "accept", "\"fraud_status\":\"accept\"",
     "\"fraud_status\":\"challenge\""},
    {"deny 202 rewritten to settlement", "202", "deny", "accept",
     "\"transaction_status\":\"deny\"",
     "\"transaction_status\":\"settlement\""},
    {"deny 202 rewritten to refund", "202", "deny", "accept",
     "\"transaction_status\":\"deny\"", "\"transaction_status\":\"refund\""},
    {"expire 202 rewritten to capture/accept", "202", "expire", "accept",
     "\"transaction_status\":\"expire\"", "\"transaction_status\":\"capture\""},
    {"refund 200 rewritten to expire", "200", "refund", "accept",
     "\"transaction_status\":\"refund\"", "\"transaction_status\":\"expire\""},
    {"pending 201 rewritten to chargeback", "201", "pending", NULL,
     "\"transaction_status\":\"pending\"",
     "\"transaction_status\":\"chargeback\""},
};

static void
test_rewritten_fields(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(rewrites) / sizeof(rewrites[0]); i++) {
		const struct rewrite_case *c = &rewrites[i];
		struct notif_reject why;
		char *genuine =
		    signed_body("RW-1", c->code, c->tstatus, c->fraud);
		char *forged;

		if (check_body(genuine, &why) != 0)
			fail_msg("%s: the genuine body is refused: %s", c->what,
			         why.message);
		forged = rewrite(genuine, c->from, c->to);
		/* check_body asserts the signature still verifies */
		if (check_body(forged, &why) != KASIR_EREJECT)
			fail_msg("%s: accepted", c->what);
		assert_int_equal(why.code, NOTIF_INCONSISTENT_STATUS);
		assert_string_equal(notif_error_code(why.code),
		                    "inconsistent_status");
		free(forged);
		free(genuine);
	}
}

/* Rewrites that stay consistent (same code on both sides) are not this
 * check's business: they need Midtrans's own answer (the Status API). */
static void
test_same_code_rewrites_pass(void **state)
{
	struct notif_reject why;
	char *genuine = signed_body("SC-1", "202", "deny", "accept");
	char *forged = rewrite(genuine, "\"transaction_status\":\"deny\"",
	                       "\"transaction_status\":\"expire\"");

	(void)state;
	assert_int_equal(check_body(forged, &why), 0);
	free(forged);
	free(genuine);
}

/* The message quotes a received status_code only when it has three
 * digits: other body bytes never reach the answer or the log. */
static void
test_message_carries_no_body_bytes(void **state)
{
	struct notif_reject why;
	char *b;

	(void)state;
	b = signed_body("M-1", "201", "settlement", "accept");
	assert_int_equal(check_body(b, &why), KASIR_EREJECT);
	assert_string_equal(
	    why.message, "status_code 201 does not go with "
	                 "transaction_status settlement: Midtrans sends 200");
	free(b);
	b = signed_body("M-2", "<script>", "settlement", NULL);
	assert_int_equal(check_body(b, &why), KASIR_EREJECT);
	assert_null(strstr(why.message, "<script>"));
	assert_non_null(strstr(why.message, "another code"));
	free(b);
	b = signed_body("M-3", "200", "capture", "challenge");
	assert_int_equal(check_body(b, &why), KASIR_EREJECT);
	assert_string_equal(why.message,
	                    "status_code 200 does not go with "
	                    "transaction_status capture and fraud_status "
	                    "challenge: Midtrans sends 201");
	free(b);
	/* why may be NULL */
	{
		struct notification n;
		struct notif_reject w;

		b = signed_body("M-4", "202", "settlement", NULL);
		assert_int_equal(notification_parse(b, strlen(b), &n, &w), 0);
		assert_int_equal(notification_check_status(&n, NULL),
		                 KASIR_EREJECT);
		notification_fini(&n);
		free(b);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_row),
	    cmocka_unit_test(test_fraud_only_for_capture),
	    cmocka_unit_test(test_unknown_values_pass),
	    cmocka_unit_test(test_rewritten_fields),
	    cmocka_unit_test(test_same_code_rewrites_pass),
	    cmocka_unit_test(test_message_carries_no_body_bytes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
