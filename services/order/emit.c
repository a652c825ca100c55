/*
 * emit.c - the order events (orders stream): one snapshot of the order
 * plus the fields of the event, appended in the caller's transaction.
 * Every writer of kasir-order emits through here (evidence.c, confirm.c,
 * api.c, admin.c) after store.c wrote the change: store.c only speaks SQL
 * and calls nothing above it, so one settlement goes evidence -> store,
 * then evidence -> emit (-> store for the snapshot), never back.
 */
#include <errno.h>

#include <cjson/cJSON.h>

#include "err.h"
#include "order.h"
#include "stream.h"

int
order_emit_snap(struct order_service *s, struct kasir_db *db, int type,
                const char *order_id, const struct cJSON *cur,
                struct cJSON *extra)
{
	cJSON *snap = NULL, *item;
	int rc = 0;

	if (cur != NULL)
		snap = cJSON_Duplicate(cur, true);
	else
		rc = store_order_snapshot(db, order_id, &snap);
	if (rc == 0 && snap == NULL)
		rc = -ENOMEM;
	if (rc < 0)
		goto out;
	while (extra != NULL && (item = extra->child) != NULL) {
		cJSON_DetachItemViaPointer(extra, item);
		cJSON_DeleteItemFromObjectCaseSensitive(snap, item->string);
		cJSON_AddItemToObject(snap, item->string, item);
	}
	rc = stream_append(s->producer, db, (enum msg_type)type, snap, NULL);
out:
	cJSON_Delete(snap);
	cJSON_Delete(extra);
	return rc;
}

int
order_emit(struct order_service *s, struct kasir_db *db, int type,
           const char *order_id, struct cJSON *extra)
{
	return order_emit_snap(s, db, type, order_id, NULL, extra);
}

int
order_emit_granted(struct order_service *s, struct kasir_db *db,
                   const char *order_id, const PGresult *res,
                   const struct cJSON *snap)
{
	cJSON *extra;

	if (res == NULL || PQntuples(res) != 1) /* not PAID: a bug */
		return KASIR_ECONFLICT;
	extra = cJSON_CreateObject();
	if (extra == NULL)
		return -ENOMEM;
	cJSON_AddStringToObject(extra, "customer_email", db_get(res, 0, 0));
	if (db_get(res, 0, 1) != NULL)
		cJSON_AddStringToObject(extra, "valid_until",
		                        db_get(res, 0, 1));
	return order_emit_snap(s, db, MSG_ACCESS_GRANTED, order_id, snap,
	                       extra);
}

int
order_emit_revoked(struct order_service *s, struct kasir_db *db,
                   const struct order_row *o, const char *reason,
                   const struct cJSON *snap)
{
	cJSON *extra;

	extra = cJSON_CreateObject();
	if (extra == NULL)
		return -ENOMEM;
	cJSON_AddStringToObject(extra, "customer_email", o->customer_email);
	cJSON_AddStringToObject(extra, "reason", reason);
	return order_emit_snap(s, db, MSG_ACCESS_REVOKED, o->order_id, snap,
	                       extra);
}
