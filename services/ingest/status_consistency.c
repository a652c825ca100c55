/*
 * status_consistency.c - does a notification's status_code go with its
 * transaction_status (and, for capture, its fraud_status)?
 *
 * Midtrans signs only order_id + status_code + gross_amount.  Every other
 * field can be rewritten by anyone who has seen one genuine body: a
 * pending body (status_code 201) with transaction_status rewritten to
 * settlement still verifies.  status_code is signed and Midtrans sends one
 * per status, so a body whose status_code does not go with its status was
 * rewritten (or Midtrans broke its own contract).  Such a body never
 * reaches kasir-order: main.c quarantines it and answers 400.
 *
 * The table below is the only place that knows which code goes with which
 * status (docs/state-machine.md, "At the door").  It is pure: no I/O, no
 * state, no logging.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "notification.h"
#include "util.h"

/* How a row matches fraud_status.  Midtrans's fraud check matters only for
 * capture (a genuine card deny carries fraud_status accept with 202), so
 * every other status matches any fraud_status, or none. */
enum fraud_match {
	FRAUD_ANY,    /* whatever fraud_status says, or none */
	FRAUD_ABSENT, /* no fraud_status field (or null) */
	FRAUD_IS,     /* fraud_status equals the row's value */
};

struct status_rule {
	const char *transaction_status;
	enum fraud_match fraud_match;
	const char *fraud_status; /* FRAUD_IS only */
	const char *status_code;  /* what Midtrans sends with it */
};

/*
 * Midtrans's documented codes: 200 success (capture accepted, settlement,
 * refunds), 201 pending or challenge (the merchant must review), 202
 * denied, cancelled, expired or failed.  The last three rows are not
 * pinned down by a sample body: authorize is what a card pre-authorisation
 * answers with 200 in Midtrans's status-code table, and a chargeback, like
 * a refund, is a change of a settled transaction (200).  If Midtrans ever
 * sends another code for them, the body lands in quarantine with its
 * reason and kasir_ingest_status_mismatch_total counts it.
 */
static const struct status_rule status_rules[] = {
    {"capture", FRAUD_IS, "accept", "200"},
    {"capture", FRAUD_ABSENT, NULL, "200"}, /* success rule: accept when
                                               present */
    {"capture", FRAUD_IS, "challenge", "201"},
    {"capture", FRAUD_IS, "deny", "202"},
    {"settlement", FRAUD_ANY, NULL, "200"},
    {"refund", FRAUD_ANY, NULL, "200"},
    {"partial_refund", FRAUD_ANY, NULL, "200"},
    {"pending", FRAUD_ANY, NULL, "201"},
    {"deny", FRAUD_ANY, NULL, "202"},
    {"cancel", FRAUD_ANY, NULL, "202"},
    {"expire", FRAUD_ANY, NULL, "202"},
    {"failure", FRAUD_ANY, NULL, "202"},
    {"authorize", FRAUD_ANY, NULL, "200"},
    {"chargeback", FRAUD_ANY, NULL, "200"},
    {"partial_chargeback", FRAUD_ANY, NULL, "200"},
};

size_t
notif_status_rule_count(void)
{
	return ARRAY_SIZE(status_rules);
}

static bool
rule_matches(const struct status_rule *r, const char *tstatus,
             const char *fraud)
{
	if (strcmp(r->transaction_status, tstatus) != 0)
		return false;
	switch (r->fraud_match) {
	case FRAUD_ANY:
		return true;
	case FRAUD_ABSENT:
		return fraud == NULL;
	case FRAUD_IS:
		return fraud != NULL && strcmp(r->fraud_status, fraud) == 0;
	}
	return false;
}

static const struct status_rule *
find_rule(const char *tstatus, const char *fraud)
{
	if (tstatus == NULL)
		return NULL;
	for (size_t i = 0; i < ARRAY_SIZE(status_rules); i++)
		if (rule_matches(&status_rules[i], tstatus, fraud))
			return &status_rules[i];
	return NULL;
}

const char *
notif_expected_status_code(const char *transaction_status,
                           const char *fraud_status)
{
	const struct status_rule *r =
	    find_rule(transaction_status, fraud_status);

	return r != NULL ? r->status_code : NULL;
}

/* A received status_code is quoted back only when it looks like one (three
 * digits): the message never carries other body bytes. */
static bool
three_digits(const char *s)
{
	return strlen(s) == 3 && s[0] >= '0' && s[0] <= '9' && s[1] >= '0' &&
	       s[1] <= '9' && s[2] >= '0' && s[2] <= '9';
}

int
notification_check_status(const struct notification *n,
                          struct notif_reject *why)
{
	const struct status_rule *r =
	    find_rule(n->transaction_status, n->fraud_status);
	const char *got;

	/* No row: a value Midtrans does not document (kasir-order records
	 * it as invalid evidence and moves nothing), or capture with an
	 * unknown fraud_status (likewise). */
	if (r == NULL || strcmp(r->status_code, n->status_code) == 0)
		return 0;
	if (why == NULL)
		return KASIR_EREJECT;
	got = three_digits(n->status_code) ? n->status_code : "another code";
	why->code = NOTIF_INCONSISTENT_STATUS;
	if (r->fraud_match == FRAUD_ANY)
		snprintf(why->message, sizeof(why->message),
		         "status_code %s does not go with transaction_status "
		         "%s: Midtrans sends %s",
		         got, r->transaction_status, r->status_code);
	else
		snprintf(why->message, sizeof(why->message),
		         "status_code %s does not go with transaction_status "
		         "%s and fraud_status %s: Midtrans sends %s",
		         got, r->transaction_status,
		         r->fraud_match == FRAUD_IS ? r->fraud_status
		                                    : "absent",
		         r->status_code);
	return KASIR_EREJECT;
}
