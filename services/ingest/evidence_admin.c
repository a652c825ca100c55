/*
 * evidence_admin.c - kasir-ingest's part of an evidence bundle (kasirctl
 * evidence ORDER_ID): every notification stored for one order, the
 * verified ones (ingest.payment_event: signature valid, the key id that
 * verified it) and the refused ones (ingest.quarantine: why), each with
 * its source address and its raw body byte for byte (hex: bodies are bytes,
 * not necessarily text).
 *
 * Bounds: at most EVIDENCE_ROWS_MAX rows of each table; bodies until
 * EVIDENCE_BODY_BUDGET raw bytes per table, after which a row says
 * "raw_hex": null, "body_omitted": true (the admin reply is at most
 * 16 MiB).  Read-only; support or engineer role (checked by admin.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "db.h"
#include "db_json.h"
#include "err.h"
#include "ingest.h"
#include "util.h"

#define EVIDENCE_ROWS_MAX    "500"
#define EVIDENCE_BODY_BUDGET "3145728" /* raw bytes per table (hex doubles) */

/* clang-format off */
static const struct db_stmt stmt_evidence_events = {
    .name = "ingest_evidence_events",
    .sql = "SELECT id, " TS("received_at") " AS received_at,"
           " host(source_addr) AS source, 'valid' AS signature,"
           " signature_key_id, transaction_status, status_code,"
           " gross_amount, payment_type, fraud_status, transaction_id,"
           " currency, length(raw) AS body_bytes,"
           " CASE WHEN sum(length(raw)) OVER (ORDER BY id) <= $2::bigint"
           "  THEN encode(raw, 'hex') END AS raw_hex"
           " FROM ingest.payment_event WHERE order_id = $1"
           " ORDER BY id LIMIT " EVIDENCE_ROWS_MAX,
    .nparams = 2,
};

static const struct db_stmt stmt_evidence_quarantine = {
    .name = "ingest_evidence_quarantine",
    .sql = "SELECT id, " TS("received_at") " AS received_at,"
           " host(source_addr) AS source, 'invalid' AS signature, reason,"
           " length(raw) AS body_bytes,"
           " CASE WHEN sum(length(raw)) OVER (ORDER BY id) <= $2::bigint"
           "  THEN encode(raw, 'hex') END AS raw_hex"
           " FROM ingest.quarantine WHERE order_id = $1"
           " ORDER BY id LIMIT " EVIDENCE_ROWS_MAX,
    .nparams = 2,
};
/* clang-format on */

/* Marks rows whose body did not fit the budget. */
static void
mark_omitted(cJSON *rows)
{
	cJSON *e;

	cJSON_ArrayForEach(e, rows) cJSON_AddBoolToObject(
	    e, "body_omitted",
	    cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(e, "raw_hex")));
}

int
ingest_admin_evidence(struct ingest_admin_ctx *c, const cJSON *args,
                      cJSON **ret, char *code, size_t code_len, char *msg,
                      size_t msg_len)
{
	const cJSON *oid = cJSON_GetObjectItemCaseSensitive(args, "order_id");
	const char *p[2];
	cJSON *o = NULL, *ev = NULL, *qu = NULL;
	int r;

	if (!cJSON_IsString(oid) ||
	    !order_id_valid(oid->valuestring, NOTIF_ORDER_ID_MAX)) {
		kasir_strlcpy(code, ADMIN_E_INVALID_ARGS, code_len);
		kasir_strlcpy(msg,
		              "args.order_id: 1..50 characters of "
		              "[A-Za-z0-9._~-]",
		              msg_len);
		return -EINVAL;
	}
	p[0] = oid->valuestring;
	p[1] = EVIDENCE_BODY_BUDGET;
	if ((r = db_ensure(c->db)) < 0 ||
	    (ev = db_query_json(c->db, &stmt_evidence_events, p)) == NULL ||
	    (qu = db_query_json(c->db, &stmt_evidence_quarantine, p)) == NULL) {
		kasir_strlcpy(code, ADMIN_E_DATABASE_UNAVAILABLE, code_len);
		kasir_strlcpy(msg, db_last_error(c->db), msg_len);
		cJSON_Delete(ev);
		return KASIR_EDB;
	}
	mark_omitted(ev);
	mark_omitted(qu);
	if ((o = cJSON_CreateObject()) == NULL ||
	    !cJSON_AddStringToObject(o, "order_id", oid->valuestring) ||
	    !cJSON_AddNumberToObject(o, "rows_max", atoi(EVIDENCE_ROWS_MAX))) {
		cJSON_Delete(o);
		cJSON_Delete(ev);
		cJSON_Delete(qu);
		return -ENOMEM;
	}
	cJSON_AddItemToObject(o, "notifications", ev);
	cJSON_AddItemToObject(o, "quarantined", qu);
	*ret = o;
	return 0;
}
