/*
 * admin_audit.c - one audit row per admin action (see admin_audit.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "admin_audit.h"
#include "db.h"
#include "db_json.h"
#include "err.h"
#include "log.h"
#include "util.h"

int
admin_audit(struct kasir_db *db, const struct db_stmt *st,
            const struct admin_request *req, const char *order_id,
            const cJSON *before, const cJSON *after, const char *result,
            const char *error)
{
	return admin_audit_id(db, st, req, order_id, before, after, result,
	                      error, NULL, 0);
}

int
admin_audit_id(struct kasir_db *db, const struct db_stmt *st,
               const struct admin_request *req, const char *order_id,
               const cJSON *before, const cJSON *after, const char *result,
               const char *error, char *ret_id, size_t id_len)
{
	PGresult *res = NULL;
	char *args = cJSON_PrintUnformatted(req->args);
	char *b = before ? cJSON_PrintUnformatted(before) : NULL;
	char *a = after ? cJSON_PrintUnformatted(after) : NULL;
	const char *p[11] = {req->peer.user,
	                     admin_role_name(req->peer.role),
	                     req->cmd,
	                     args ? args : "{}",
	                     req->reason,
	                     req->incident,
	                     b,
	                     a,
	                     result,
	                     error,
	                     order_id};
	int rc;

	if ((before != NULL && b == NULL) || (after != NULL && a == NULL))
		rc = -ENOMEM;
	else
		rc = db_exec(db, st, p, ret_id != NULL ? &res : NULL);
	if (rc == 0 && ret_id != NULL)
		kasir_strlcpy(ret_id, db_get(res, 0, 0), id_len);
	if (rc == 0 && req->audit_rows != NULL)
		(*req->audit_rows)++;
	PQclear(res);
	cJSON_free(args);
	cJSON_free(b);
	cJSON_free(a);
	return rc;
}

void
admin_audit_refusal(struct kasir_db *db, const struct db_stmt *st,
                    const struct admin_request *req, const char *order_id,
                    const char *why)
{
	db_rollback(db);
	if (db_begin(db) < 0 ||
	    admin_audit(db, st, req, order_id, NULL, NULL, "refused", why) <
	        0 ||
	    db_commit(db) < 0) {
		db_rollback(db);
		log_warning(
		    "admin: auditing the refusal of %s by %s failed: %s",
		    req->cmd, req->peer.user, db_last_error(db));
	}
	log_notice("admin: %s by %s (%s) refused: %s", req->cmd, req->peer.user,
	           admin_role_name(req->peer.role), why);
}

static int
list_refuse(char *code, size_t code_len, char *msg, size_t msg_len,
            const char *m)
{
	snprintf(code, code_len, "%s", ADMIN_E_INVALID_ARGS);
	snprintf(msg, msg_len, "%s", m);
	return -EINVAL;
}

int
admin_audit_list(struct kasir_db *db, const struct db_stmt *st,
                 const struct admin_request *req, cJSON **ret, char *code,
                 size_t code_len, char *msg, size_t msg_len)
{
	const cJSON *jo =
	    cJSON_GetObjectItemCaseSensitive(req->args, "order_id");
	const cJSON *js = cJSON_GetObjectItemCaseSensitive(req->args, "since");
	const cJSON *jl = cJSON_GetObjectItemCaseSensitive(req->args, "limit");
	const cJSON *ji =
	    cJSON_GetObjectItemCaseSensitive(req->args, "incident");
	const cJSON *jb =
	    cJSON_GetObjectItemCaseSensitive(req->args, "before_id");
	int limit = ADMIN_AUDIT_LIST_DEFAULT;
	char limit_s[16], before_s[24];
	const char *p[ADMIN_AUDIT_LIST_NPARAMS];
	PGresult *res = NULL;
	cJSON *rows, *out;
	int rc;

	if (jo != NULL &&
	    (!cJSON_IsString(jo) || !order_id_valid(jo->valuestring, 50)))
		return list_refuse(code, code_len, msg, msg_len,
		                   "args.order_id: an order id");
	if (js != NULL && (!cJSON_IsString(js) || js->valuestring[0] == '\0' ||
	                   strlen(js->valuestring) > 64))
		return list_refuse(code, code_len, msg, msg_len,
		                   "args.since: a timestamp");
	if (ji != NULL && (!cJSON_IsString(ji) || ji->valuestring[0] == '\0' ||
	                   strlen(ji->valuestring) > 64))
		return list_refuse(code, code_len, msg, msg_len,
		                   "args.incident: 1..64 characters");
	if (jl != NULL) {
		if (!cJSON_IsNumber(jl) || jl->valuedouble < 1 ||
		    jl->valuedouble > ADMIN_AUDIT_LIST_MAX)
			return list_refuse(code, code_len, msg, msg_len,
			                   "args.limit: 1..500");
		limit = (int)jl->valuedouble;
	}
	/* the next page: rows older than the last one seen (kasirctl
	 * incident report pages through every row of an incident) */
	if (jb != NULL && (!cJSON_IsNumber(jb) || jb->valuedouble < 1 ||
	                   jb->valuedouble > 9007199254740992.0))
		return list_refuse(code, code_len, msg, msg_len,
		                   "args.before_id: an audit row id");
	snprintf(before_s, sizeof(before_s), "%.0f", jb ? jb->valuedouble : 0);
	snprintf(limit_s, sizeof(limit_s), "%d", limit);
	p[0] = jo ? jo->valuestring : NULL;
	p[1] = js ? js->valuestring : NULL;
	p[2] = limit_s;
	p[3] = ji ? ji->valuestring : NULL;
	p[4] = jb ? before_s : NULL;
	rc = db_exec(db, st, p, &res);
	if (rc == KASIR_ESQL) {
		PQclear(res);
		return list_refuse(code, code_len, msg, msg_len,
		                   "args.since: not a timestamp");
	}
	if (rc < 0) {
		PQclear(res);
		return rc;
	}
	rows = db_rows_json(res);
	PQclear(res);
	if (rows == NULL || (out = cJSON_CreateObject()) == NULL) {
		cJSON_Delete(rows);
		return -ENOMEM;
	}
	cJSON_AddItemToObject(out, "audit", rows);
	*ret = out;
	return 0;
}
