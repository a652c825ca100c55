/*
 * order_show.c - kasirctl order show ID: one timeline of an order across
 * the services: notifications received with their signature result
 * (kasir-ingest), evidence, transitions, access grants and revocations and
 * manual actions (kasir-order), status checks and refunds started from
 * kasir (kasir-reconciler),
 * notification jobs and attempts (kasir-notifier) and kasirctl's own
 * record (ops.audit).  A service that does not answer leaves a gap that is
 * named, never a silent hole.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "err.h"
#include "kasirctl.h"
#include "util.h"

#define ORDER_ID_MAX 50
#define SUMMARY_MAX  400

/* Appends one timeline entry {at, at_ms, service, kind, summary}. */
static void entry(cJSON *tl, const char *at, const char *service,
                  const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void
entry(cJSON *tl, const char *at, const char *service, const char *kind,
      const char *fmt, ...)
{
	char summary[SUMMARY_MAX];
	int64_t ms = 0;
	cJSON *e;
	va_list ap;

	if (at == NULL || at[0] == '\0')
		return;
	va_start(ap, fmt);
	vsnprintf(summary, sizeof(summary), fmt, ap);
	va_end(ap);
	if ((e = cJSON_CreateObject()) == NULL)
		return;
	/* one notation for every service: RFC 3339 UTC, milliseconds */
	if (ts_parse(at, &ms) == 0) {
		char norm[40];

		time_rfc3339(ms, norm, sizeof(norm));
		cJSON_AddStringToObject(e, "at", norm);
	} else {
		cJSON_AddStringToObject(e, "at", at);
	}
	cJSON_AddNumberToObject(e, "at_ms", (double)ms);
	cJSON_AddStringToObject(e, "service", service);
	cJSON_AddStringToObject(e, "kind", kind);
	cJSON_AddStringToObject(e, "summary", summary);
	cJSON_AddItemToArray(tl, e);
}

static const char *
dash(const char *s)
{
	return s[0] ? s : "-";
}

static void
from_ingest(cJSON *tl, const cJSON *r)
{
	const cJSON *e;

	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "events"))
	    entry(tl, j_str(e, "received_at"), "kasir-ingest", "notification",
	          "notification #%.0f: %s (status_code %s, gross_amount %s, "
	          "%s, fraud %s) signature %s, from %s",
	          j_num(e, "id"), dash(j_str(e, "transaction_status")),
	          dash(j_str(e, "status_code")), dash(j_str(e, "gross_amount")),
	          dash(j_str(e, "payment_type")),
	          dash(j_str(e, "fraud_status")), dash(j_str(e, "signature")),
	          dash(j_str(e, "source")));
	cJSON_ArrayForEach(e,
	                   cJSON_GetObjectItemCaseSensitive(r, "quarantined"))
	    entry(tl, j_str(e, "received_at"), "kasir-ingest",
	          "notification_refused",
	          "notification REFUSED (%s), signature %s, %.0f bytes from %s",
	          dash(j_str(e, "reason")), dash(j_str(e, "signature")),
	          j_num(e, "body_bytes"), dash(j_str(e, "source")));
}

static void
from_order(cJSON *tl, const cJSON *o)
{
	const cJSON *e;

	entry(tl, j_str(o, "created_at"), "kasir-order", "created",
	      "order created: %s, %.0f %s, customer %s", j_str(o, "course_id"),
	      j_num(o, "amount"), j_str(o, "currency"),
	      j_str(o, "customer_email"));
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(o, "evidence"))
	    entry(tl, j_str(e, "recorded_at"), "kasir-order", "evidence",
	          "evidence %s#%.0f (%s %s): %s%s%s", j_str(e, "source"),
	          j_num(e, "ref"), dash(j_str(e, "kind")),
	          dash(j_str(e, "transaction_status")),
	          dash(j_str(e, "result")), j_str(e, "reason")[0] ? ", " : "",
	          j_str(e, "reason"));
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(o, "timeline"))
	    entry(tl, j_str(e, "at"), "kasir-order", "transition",
	          "%s -> %s (%s) evidence %s#%.0f", j_str(e, "from"),
	          j_str(e, "to"), dash(j_str(e, "reason")),
	          dash(j_str(e, "source")), j_num(e, "ref"));
	cJSON_ArrayForEach(
	    e, cJSON_GetObjectItemCaseSensitive(o, "entitlement_history"))
	    entry(tl, j_str(e, "at"), "kasir-order", "access",
	          "access %s: %s for %s (source %s, reason: %s)",
	          j_str(e, "action"), j_str(e, "course_id"),
	          j_str(e, "customer_email"), dash(j_str(e, "source")),
	          dash(j_str(e, "reason")));
	cJSON_ArrayForEach(
	    e, cJSON_GetObjectItemCaseSensitive(o, "unknown_notifications"))
	    entry(
	        tl, j_str(e, "received_at"), "kasir-order", "unknown_order",
	        "evidence for an order kasir-order does not know: %s (%s#%.0f)",
	        dash(j_str(e, "transaction_status")), j_str(e, "source"),
	        j_num(e, "ref"));
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(o, "audit"))
	    entry(tl, j_str(e, "at"), "kasir-order", "manual",
	          "manual %s by %s (%s): %s; reason: %s%s%s%s%s",
	          j_str(e, "cmd"), j_str(e, "actor"), j_str(e, "role"),
	          j_str(e, "result"), dash(j_str(e, "reason")),
	          j_str(e, "incident")[0] ? "; incident " : "",
	          j_str(e, "incident"), j_str(e, "error")[0] ? "; " : "",
	          j_str(e, "error"));
}

static void
from_reconciler(cJSON *tl, const cJSON *r)
{
	const cJSON *e;

	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "checks"))
	    entry(tl,
	          j_str(e, "checked_at")[0] ? j_str(e, "checked_at")
	                                    : j_str(e, "requested_at"),
	          "kasir-reconciler", "status_check",
	          "Status API check #%.0f (%s): HTTP %.0f, %s, "
	          "transaction_status %s%s%s",
	          j_num(e, "id"), dash(j_str(e, "reason")),
	          j_num(e, "http_status"), dash(j_str(e, "verdict")),
	          dash(j_str(e, "transaction_status")),
	          j_str(e, "error")[0] ? ", error: " : "", j_str(e, "error"));
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "refunds"))
	{
		const cJSON *a;

		entry(tl, j_str(e, "created_at"), "kasir-reconciler", "refund",
		      "refund of %.0f requested by %s (refund key %s): %s",
		      j_num(e, "amount"), j_str(e, "actor"),
		      j_str(e, "refund_key"), dash(j_str(e, "reason")));
		cJSON_ArrayForEach(
		    a, cJSON_GetObjectItemCaseSensitive(e, "attempts"))
		    entry(
		        tl, j_str(a, "at"), "kasir-reconciler", "refund_answer",
		        "Refund API (key %s): %s, HTTP %.0f, status_code %s "
		        "%s%s%s",
		        j_str(e, "refund_key"), j_str(a, "outcome"),
		        j_num(a, "http_status"), dash(j_str(a, "status_code")),
		        j_str(a, "status_message"),
		        j_str(a, "error")[0] ? ", error: " : "",
		        j_str(a, "error"));
	}
}

static void
from_notifier(cJSON *tl, const cJSON *r)
{
	const cJSON *j, *a;

	cJSON_ArrayForEach(j, cJSON_GetObjectItemCaseSensitive(r, "jobs"))
	{
		entry(tl, j_str(j, "created_at"), "kasir-notifier", "job",
		      "%s job #%.0f by %s to %s (%s): now %s after %.0f "
		      "attempt(s)",
		      j_str(j, "kind"), j_num(j, "id"), j_str(j, "channel"),
		      dash(j_str(j, "recipient")), dash(j_str(j, "origin")),
		      j_str(j, "state"), j_num(j, "attempts"));
		cJSON_ArrayForEach(
		    a, cJSON_GetObjectItemCaseSensitive(j, "attempts_log"))
		    entry(tl, j_str(a, "at"), "kasir-notifier", "attempt",
		          "%s #%.0f attempt %.0f by %s: %s (order %s)%s%s",
		          j_str(j, "kind"), j_num(j, "id"), j_num(a, "attempt"),
		          j_str(j, "channel"), dash(j_str(a, "result")),
		          dash(j_str(a, "order_status")),
		          j_str(a, "error")[0] ? ", error: " : "",
		          j_str(a, "error"));
	}
}

static void
from_ops(cJSON *tl, const cJSON *rows)
{
	const cJSON *e;

	cJSON_ArrayForEach(e, rows)
	{
		char inc[CTL_INCIDENT_MAX + 16] = "";

		/* no incident: nothing (it printed "0" after the reason) */
		if (j_num(e, "incident_id") > 0)
			snprintf(inc, sizeof(inc), "; incident INC-%.0f",
			         j_num(e, "incident_id"));
		entry(tl, j_str(e, "at"), "kasirctl", "manual",
		      "kasirctl %s by %s (%s): %s; reason: %s%s%s%s",
		      j_str(e, "command"), j_str(e, "actor"), j_str(e, "role"),
		      j_str(e, "result"), dash(j_str(e, "reason")), inc,
		      j_str(e, "error")[0] ? "; " : "", j_str(e, "error"));
	}
}

/* By time, then by insertion order ("_i"): a stable order. */
static int
by_time(const void *a, const void *b)
{
	const cJSON *x = *(const cJSON *const *)a,
	            *y = *(const cJSON *const *)b;
	double d = j_num(x, "at_ms") - j_num(y, "at_ms");

	if (d == 0)
		d = j_num(x, "_i") - j_num(y, "_i");
	return d < 0 ? -1 : d > 0 ? 1 : 0;
}

/* Sorts the timeline in place by time. */
static void
sort_timeline(cJSON *tl)
{
	int n = cJSON_GetArraySize(tl);
	cJSON **v = calloc((size_t)n + 1, sizeof(*v));

	if (v == NULL)
		return; /* left unsorted rather than lost */
	for (int i = n - 1; i >= 0; i--)
		v[i] = cJSON_DetachItemFromArray(tl, i);
	for (int i = 0; i < n; i++)
		cJSON_AddNumberToObject(v[i], "_i", i);
	qsort(v, (size_t)n, sizeof(*v), by_time);
	for (int i = 0; i < n; i++) {
		cJSON_DeleteItemFromObject(v[i], "_i");
		cJSON_AddItemToArray(tl, v[i]);
	}
	free(v);
}

int
cmd_order_show(struct ctl *c, int argc, char **argv)
{
	static const struct {
		enum ctl_svc svc;
		const char *cmd;
		const char *key;
	} asks[] = {
	    {SVC_ORDER, "order.show", "order"},
	    {SVC_INGEST, "events.list", "notifications"},
	    {SVC_RECONCILER, "checks.list", "status_checks"},
	    {SVC_NOTIFIER, "jobs.list", "notifications_sent"},
	};
	const char *id;
	cJSON *args, *out, *tl, *missing, *r[ARRAY_SIZE(asks)] = {NULL};
	struct ctl_error err[ARRAY_SIZE(asks)];
	cJSON *ops_rows = NULL;
	bool order_known, unknown, seen_elsewhere = false;
	size_t denied = 0;
	char why[256];
	int rc = CTL_EXIT_OK;

	if (argc != 1 || !order_id_valid(argv[0], ORDER_ID_MAX))
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "usage: kasirctl order show ORDER_ID "
		                      "(1..50 of [A-Za-z0-9._~-])");
	id = argv[0];
	kasir_strlcpy(c->target, id, sizeof(c->target));
	c->target_service = ctl_svc_name(SVC_ORDER);
	if ((args = cJSON_CreateObject()) == NULL ||
	    !cJSON_AddStringToObject(args, "order_id", id)) {
		cJSON_Delete(args);
		return CTL_EXIT_FAILED;
	}
	for (size_t i = 0; i < ARRAY_SIZE(asks); i++) {
		memset(&err[i], 0, sizeof(err[i]));
		if (ctl_call(c, asks[i].svc, asks[i].cmd, args, 0, &r[i],
		             &err[i]) < 0)
			r[i] = NULL;
	}
	cJSON_Delete(args);
	if (ops_open(c, why, sizeof(why)) == 0)
		(void)ops_audit_for_order(c, id, &ops_rows);

	/* kasir-order answers {"status": null, "unknown_notifications"}
	 * for an id only notifications name: not an order either (it printed
	 * an empty header and exited 0) */
	order_known =
	    r[0] != NULL &&
	    !cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r[0], "status"));
	unknown = (r[0] == NULL && strstr(err[0].code, "not_found") != NULL) ||
	          (r[0] != NULL && !order_known);
	seen_elsewhere =
	    cJSON_GetArraySize(cJSON_GetObjectItem(r[1], "events")) > 0 ||
	    cJSON_GetArraySize(cJSON_GetObjectItem(r[1], "quarantined")) > 0 ||
	    cJSON_GetArraySize(
	        cJSON_GetObjectItem(r[0], "unknown_notifications")) > 0;
	for (size_t i = 0; i < ARRAY_SIZE(asks); i++)
		denied += r[i] == NULL && ctl_error_access(&err[i]);
	if (denied == ARRAY_SIZE(asks)) {
		for (size_t i = 0; i < ARRAY_SIZE(asks); i++)
			cJSON_Delete(r[i]);
		cJSON_Delete(ops_rows);
		return out_fail(c, &err[0]); /* no access: nothing to show */
	}
	if (unknown && !seen_elsewhere) {
		for (size_t i = 0; i < ARRAY_SIZE(asks); i++)
			cJSON_Delete(r[i]);
		cJSON_Delete(ops_rows);
		return out_fail_local(c, ADMIN_E_ORDER_NOT_FOUND,
		                      CTL_EXIT_FAILED,
		                      "unknown order %s: kasir-order has no "
		                      "such order and kasir-ingest no "
		                      "notification for it",
		                      id);
	}

	out = cJSON_CreateObject();
	tl = cJSON_CreateArray();
	missing = cJSON_CreateArray();
	if (r[0])
		from_order(tl, r[0]);
	if (r[1])
		from_ingest(tl, r[1]);
	if (r[2])
		from_reconciler(tl, r[2]);
	if (r[3])
		from_notifier(tl, r[3]);
	from_ops(tl, ops_rows);
	sort_timeline(tl);
	for (size_t i = 0; i < ARRAY_SIZE(asks); i++) {
		if (r[i] != NULL || strstr(err[i].code, "not_found") != NULL)
			continue;
		cJSON *m = cJSON_CreateObject();

		cJSON_AddStringToObject(m, "service", err[i].service);
		cJSON_AddStringToObject(m, "code", err[i].code);
		cJSON_AddStringToObject(m, "message", err[i].message);
		cJSON_AddItemToArray(missing, m);
		if (err[i].exit == CTL_EXIT_UNAVAILABLE)
			rc = CTL_EXIT_UNAVAILABLE;
		else if (rc == CTL_EXIT_OK && err[i].exit != CTL_EXIT_OK)
			rc = err[i].exit; /* no access to it: refused */
	}

	if (!c->json) {
		const cJSON *o = r[0], *e;

		printf("order %s\n", id);
		if (unknown) {
			printf("  NOT FOUND: kasir-order has no such order; "
			       "below is what the other services hold about "
			       "this id\n");
		} else if (o != NULL) {
			printf("  status    %s%s\n", j_str(o, "status"),
			       j_bool(o, "flagged") ? "  FLAGGED" : "");
			if (j_bool(o, "flagged"))
				printf("  flag      %s\n",
				       j_str(o, "flag_reason"));
			if (j_str(o, "confirmation")[0] != '\0')
				printf("  confirm   %s (the notification said "
				       "%s; the Midtrans Status API has not "
				       "answered yet)\n",
				       j_str(o, "confirmation"),
				       j_str(o, "awaiting_status"));
			if (j_str(o, "contradicted_at")[0] != '\0')
				printf("  CONTRADICTED by Midtrans at %s: "
				       "possible forgery or key leak\n",
				       j_str(o, "contradicted_at"));
			printf("  course    %s (%s), %.0f %s, access %s\n",
			       j_str(o, "course_id"), j_str(o, "course_title"),
			       j_num(o, "amount"), j_str(o, "currency"),
			       j_str(o, "access"));
			printf("  customer  %s <%s> %s\n",
			       j_str(o, "customer_name"),
			       j_str(o, "customer_email"),
			       j_str(o, "customer_phone"));
			printf("  created   %s, expires %s, paid %s\n",
			       j_str(o, "created_at"),
			       dash(j_str(o, "expires_at")),
			       dash(j_str(o, "paid_at")));
			printf("  payment   %s %s\n",
			       dash(j_str(o, "payment_type")),
			       dash(j_str(o, "transaction_id")));
			cJSON_ArrayForEach(
			    e, cJSON_GetObjectItem(o, "entitlements"))
			{
				printf("  access    %s %s (granted %s, until "
				       "%s%s%s)\n",
				       j_str(e, "course_id"),
				       j_bool(e, "active") ? "ACTIVE"
				                           : "inactive",
				       j_str(e, "granted_at"),
				       j_str(e, "valid_until")[0]
				           ? j_str(e, "valid_until")
				           : "lifetime",
				       j_str(e, "revoked_at")[0] ? ", revoked "
				                                 : "",
				       j_str(e, "revoked_at"));
			}
			if (cJSON_GetArraySize(
			        cJSON_GetObjectItem(o, "entitlements")) == 0)
				printf("  access    none\n");
		} else {
			printf("  kasir-order: %s\n", err[0].message);
		}
		printf("\ntimeline (UTC):\n");
		cJSON_ArrayForEach(e, tl)
		    printf("  %-24s %-16s %s\n", j_str(e, "at"),
		           j_str(e, "service"), j_str(e, "summary"));
		cJSON_ArrayForEach(e, missing) fprintf(
		    stderr, "kasirctl: warning: timeline incomplete: %s\n",
		    j_str(e, "message"));
	}
	cJSON_AddStringToObject(out, "order_id", id);
	for (size_t i = 0; i < ARRAY_SIZE(asks); i++)
		cJSON_AddItemToObject(out, asks[i].key,
		                      r[i] ? r[i] : cJSON_CreateNull());
	cJSON_AddItemToObject(out, "manual_actions",
	                      ops_rows ? ops_rows : cJSON_CreateArray());
	cJSON_AddItemToObject(out, "timeline", tl);
	cJSON_AddItemToObject(out, "missing", missing);
	if (unknown) {
		struct ctl_error nf;

		memset(&nf, 0, sizeof(nf));
		kasir_strlcpy(nf.service, CTL_NAME, sizeof(nf.service));
		kasir_strlcpy(nf.code, ADMIN_E_ORDER_NOT_FOUND,
		              sizeof(nf.code));
		snprintf(nf.message, sizeof(nf.message),
		         "unknown order %s: kasir-order has no such order; "
		         "only notifications name it (another system on this "
		         "Midtrans account, or a lost order)",
		         id);
		nf.exit = CTL_EXIT_FAILED;
		return out_fail_result(c, &nf, out);
	}
	out_json_ok(c, out);
	return rc;
}
