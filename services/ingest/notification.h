/*
 * notification.h - parsing, validation and signature check of one Midtrans
 * HTTP notification (the body kasir-ingest receives).
 *
 * Everything here is pure: no I/O, no global state, no logging, so it can
 * be unit tested and fuzzed on its own.
 *
 * notification_parse() refuses, with a stable reason code, anything that is
 * not a well-formed notification: invalid UTF-8, malformed JSON, nesting
 * deeper than NOTIF_MAX_DEPTH, duplicate keys in any object (cJSON accepts
 * both of those silently, so a small bounded scanner runs first), a body
 * that is not an object, a missing or non-string signature field, an
 * order_id outside Midtrans's charset.  Unknown fields are kept.
 *
 * notification_verify() recomputes
 *   hex(SHA512(order_id + status_code + gross_amount + server_key))
 * over the exact strings received and compares it in constant time with
 * signature_key against every configured server key (rotation).
 *
 * notification_check_status() (status_consistency.c) refuses a body whose
 * signed status_code does not go with its unsigned transaction_status (and
 * fraud_status, for capture): the one table of what Midtrans sends.
 */
#ifndef KASIR_INGEST_NOTIFICATION_H
#define KASIR_INGEST_NOTIFICATION_H

#include <stdbool.h>
#include <stddef.h>

struct cJSON;

#define NOTIF_MAX_DEPTH        32  /* objects/arrays nested at most this deep */
#define NOTIF_ORDER_ID_MAX     50  /* Midtrans: [A-Za-z0-9._~-], <= 50 chars */
#define NOTIF_SIGNATURE_HEXLEN 128 /* SHA-512, lower-case hex */
#define NOTIF_FIELD_MAX        128 /* bound on the other parsed fields */

/* Why a body was refused; each maps to one stable code string. */
enum notif_error {
	NOTIF_OK = 0,
	NOTIF_MALFORMED_JSON,        /* "malformed_json" */
	NOTIF_NOT_AN_OBJECT,         /* "not_an_object" */
	NOTIF_MISSING_FIELD,         /* "missing_field" */
	NOTIF_WRONG_TYPE,            /* "wrong_type" */
	NOTIF_INVALID_ORDER_ID,      /* "invalid_order_id" */
	NOTIF_INVALID_UTF8,          /* "invalid_utf8" */
	NOTIF_DUPLICATE_KEY,         /* "duplicate_key" */
	NOTIF_TOO_DEEP,              /* "too_deep" */
	NOTIF_INVALID_STRING,        /* "invalid_string": \u0000 in a string */
	NOTIF_INVALID_FIELD,         /* "invalid_field": empty or too long */
	NOTIF_INVALID_SIGNATURE_KEY, /* "invalid_signature_key": not 128 hex */
	NOTIF_INCONSISTENT_STATUS,   /* "inconsistent_status": status_code
	                                does not go with transaction_status */
};

/* The stable code ("malformed_json", ...); never NULL. */
const char *notif_error_code(enum notif_error e);

struct notif_reject {
	enum notif_error code;
	char message[160]; /* human-readable; never contains body bytes
	                      beyond a field name */
};

/*
 * A parsed notification.  obj is owned; every string points into obj and
 * lives as long as it.  Optional fields are NULL when absent (or null).
 */
struct notification {
	struct cJSON *obj;
	const char *order_id;
	const char *status_code;
	const char *gross_amount;
	const char *signature_key;
	const char *transaction_status;
	const char *fraud_status;
	const char *payment_type;
	const char *transaction_id;
	const char *currency;
	const char *transaction_time;
	const char *settlement_time;
};

/*
 * Scans body (len bytes, need not be NUL-terminated) without building
 * anything: UTF-8, JSON grammar, nesting depth <= max_depth, no \u0000 and
 * no unpaired surrogate escapes.  Returns 0, or KASIR_EREJECT with *why
 * filled.  Runs in O(len) time and O(max_depth) stack.
 */
int notif_prescan(const char *body, size_t len, unsigned max_depth,
                  struct notif_reject *why);

/*
 * Parses and validates body.  On success returns 0 and *ret owns the parsed
 * object (free with notification_fini).  KASIR_EREJECT: the body is not a
 * valid notification, *why says why (*ret untouched).  -ENOMEM.
 */
int notification_parse(const char *body, size_t len, struct notification *ret,
                       struct notif_reject *why);
/* Frees what notification_parse stored; n may be zeroed.  Zeroes n. */
void notification_fini(struct notification *n);

/* One configured Midtrans server key.  id is safe to log and store; the
 * secret never is. */
struct notif_key {
	const char *id;
	const char *secret;
	size_t secret_len;
};

/* hex(SHA512(order_id + status_code + gross_amount + key)) into out
 * (NOTIF_SIGNATURE_HEXLEN + 1 bytes).  0 or -ENOMEM. */
int notif_signature(const char *order_id, const char *status_code,
                    const char *gross_amount, const char *key, size_t key_len,
                    char out[NOTIF_SIGNATURE_HEXLEN + 1]);

/*
 * Checks n->signature_key against every key (all of them are computed and
 * compared in constant time, whichever matches).  Returns 0 and sets
 * *ret_index to the first matching key, or KASIR_ESIG when none matches
 * (or nkeys is 0), or -ENOMEM.
 */
int notification_verify(const struct notification *n,
                        const struct notif_key *keys, size_t nkeys,
                        size_t *ret_index);

/*
 * The status_code Midtrans sends with transaction_status (and, for capture,
 * fraud_status; NULL = absent): "200", "201" or "202".  NULL when the table
 * has no row for it (a value Midtrans does not document).
 */
const char *notif_expected_status_code(const char *transaction_status,
                                       const char *fraud_status);
/* Rows in that table (for the unit test that checks each one). */
size_t notif_status_rule_count(void);

/*
 * 0 when n->status_code is the one Midtrans sends with n's
 * transaction_status / fraud_status, or when the table has no row for them
 * (kasir-order records such evidence as invalid and moves nothing).
 * KASIR_EREJECT with *why (NOTIF_INCONSISTENT_STATUS; the message names
 * the expected code, never body bytes beyond a three-digit status_code).
 */
int notification_check_status(const struct notification *n,
                              struct notif_reject *why);

/*
 * True when a Content-Type header value names JSON: "application/json",
 * case-insensitive, optionally followed by parameters ("; charset=utf-8").
 * NULL is false.
 */
bool notif_content_type_ok(const char *ctype);

#endif
