/*
 * evidence_admin.c - kasir-reconciler's part of an evidence bundle
 * (kasirctl evidence ORDER_ID): every Status API answer stored for one
 * order, raw body included (recon.status_check keeps up to 64 KiB of it
 * and says when it was truncated), newest last, and every refund request
 * made through kasir (recon.refund, refund.c), and the operator commands
 * that named the order (recon.audit: refunds, refusals, checks forced).
 *
 * Bounds, so that the reply fits the 16 MiB admin reply: the latest
 * EVIDENCE_CHECKS_MAX answers (x 64 KiB), the refunds as refund.c bounds
 * them (at most 8 MiB of bodies), the latest 200 audit rows.  Read-only; any
 * role but none (checked by admin.c).
 */
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "db.h"
#include "db_json.h"
#include "reconciler.h"

#define EVIDENCE_CHECKS_MAX "80"

/* clang-format off */
static const struct db_stmt st_evidence_checks = {
    .name = "recon_evidence_checks",
    .sql = "SELECT * FROM (SELECT id, attempt, asked, by_transaction_id,"
           " http_status, verdict, transaction_status, status_code,"
           " status_message, fraud_status, gross_amount, currency,"
           " payment_type, transaction_id, past_expiry, published, reason,"
           " mode, latency_ms, error,"
           " " TS("requested_at") " AS requested_at,"
           " " TS("checked_at") " AS checked_at,"
           " body_truncated, body"
           " FROM recon.status_check WHERE order_id = $1"
           " ORDER BY id DESC LIMIT " EVIDENCE_CHECKS_MAX ") c ORDER BY id",
    .nparams = 1,
};

static const struct db_stmt st_evidence_audit = {
    .name = "recon_evidence_audit",
    .sql = "SELECT * FROM (SELECT id, " TS("at") " AS at, actor, role,"
           " command, args, reason, incident, before, after, result, error"
           " FROM recon.audit WHERE args->>'order_id' = $1"
           " ORDER BY id DESC LIMIT 200) a ORDER BY id",
    .nparams = 1,
};
/* clang-format on */

cJSON *
recon_admin_evidence(struct kasir_db *db, const char *order_id)
{
	const char *p[1] = {order_id};
	cJSON *out, *checks, *refunds, *audit;

	if ((checks = db_query_json(db, &st_evidence_checks, p)) == NULL)
		return NULL;
	if ((refunds = recon_refunds_json(db, order_id)) == NULL) {
		cJSON_Delete(checks);
		return NULL;
	}
	if ((audit = db_query_json(db, &st_evidence_audit, p)) == NULL) {
		cJSON_Delete(checks);
		cJSON_Delete(refunds);
		return NULL;
	}
	if ((out = cJSON_CreateObject()) == NULL ||
	    !cJSON_AddStringToObject(out, "order_id", order_id) ||
	    !cJSON_AddNumberToObject(out, "checks_max",
	                             atoi(EVIDENCE_CHECKS_MAX))) {
		cJSON_Delete(out);
		cJSON_Delete(checks);
		cJSON_Delete(refunds);
		cJSON_Delete(audit);
		return NULL;
	}
	cJSON_AddItemToObject(out, "status_checks", checks);
	cJSON_AddItemToObject(out, "refunds", refunds);
	cJSON_AddItemToObject(out, "audit", audit);
	return out;
}
