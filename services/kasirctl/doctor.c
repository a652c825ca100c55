/*
 * doctor.c - kasirctl doctor: the SOP's investigation checklist, run from
 * the facts each daemon reports ("doctor.facts", "status").  Every finding
 * has a severity (P0..P3, the SOP's classification) and the SOP action to
 * take; the exit status is 1 when any P0 or P1 is found, so monitoring and
 * people at 2 a.m. read the same verdict.
 *
 * Severities follow ARCHITECTURE.md's alert map: PAID without access = P1,
 * webhook silence = P1, worker down = P1, notification backlog = P2.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "kasirctl.h"
#include "util.h"

#define TEXT_ITEMS_MAX 20 /* ids printed per finding in text mode */

struct doctor {
	struct ctl *c;
	cJSON *findings; /* array */
	cJSON *checks;   /* object: check -> "ok" | "finding" | "skipped" */
	int64_t now_ms;
};

/* Adds a finding; items (may be NULL) is taken over. */
static void finding(struct doctor *d, const char *severity, const char *check,
                    const char *service, cJSON *items, const char *action,
                    const char *fmt, ...) __attribute__((format(printf, 7, 8)));

static void
finding(struct doctor *d, const char *severity, const char *check,
        const char *service, cJSON *items, const char *action, const char *fmt,
        ...)
{
	char title[512];
	cJSON *f = cJSON_CreateObject();
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(title, sizeof(title), fmt, ap);
	va_end(ap);
	if (f == NULL) {
		cJSON_Delete(items);
		return;
	}
	cJSON_AddStringToObject(f, "severity", severity);
	cJSON_AddStringToObject(f, "check", check);
	cJSON_AddStringToObject(f, "service", service);
	cJSON_AddStringToObject(f, "title", title);
	cJSON_AddStringToObject(f, "action", action);
	cJSON_AddItemToObject(f, "items", items ? items : cJSON_CreateArray());
	cJSON_AddItemToArray(d->findings, f);
	cJSON_DeleteItemFromObject(d->checks, check);
	cJSON_AddStringToObject(d->checks, check, "finding");
}

static void
check_ran(struct doctor *d, const char *check)
{
	if (!cJSON_HasObjectItem(d->checks, check))
		cJSON_AddStringToObject(d->checks, check, "ok");
}

static void
check_skipped(struct doctor *d, const char *check)
{
	if (!cJSON_HasObjectItem(d->checks, check))
		cJSON_AddStringToObject(d->checks, check, "skipped");
}

/* Keeps the rows of arr for which keep() says so, as a new array of
 * copies; NULL keep keeps all. */
static cJSON *
filter(const cJSON *arr, bool (*keep)(struct doctor *, const cJSON *),
       struct doctor *d)
{
	cJSON *out = cJSON_CreateArray();
	const cJSON *row;

	cJSON_ArrayForEach(row, arr)
	{
		if (keep == NULL || keep(d, row))
			cJSON_AddItemToArray(out, cJSON_Duplicate(row, true));
	}
	return out;
}

/* Runs a check on an array fact: a finding when it has rows. */
static void
rows_check(struct doctor *d, const cJSON *facts, const char *fact,
           bool (*keep)(struct doctor *, const cJSON *), const char *severity,
           const char *check, const char *service, const char *action,
           const char *what)
{
	const cJSON *arr = cJSON_GetObjectItemCaseSensitive(facts, fact);
	cJSON *items;
	int n;

	if (!cJSON_IsArray(arr)) {
		check_skipped(d, check);
		return;
	}
	items = filter(arr, keep, d);
	n = cJSON_GetArraySize(items);
	if (n == 0) {
		cJSON_Delete(items);
		check_ran(d, check);
		return;
	}
	finding(d, severity, check, service, items, action, "%s: %d", what, n);
}

static bool
recent(struct doctor *d, const char *at)
{
	int64_t t;

	return ts_parse(at, &t) == 0 && d->now_ms - t <= d->c->conf.recent_ms;
}

static bool
keep_overdue(struct doctor *d, const cJSON *row)
{
	return j_num(row, "overdue_s") * 1000.0 >
	       (double)d->c->conf.expiry_grace_ms;
}

static bool
keep_recent_snap(struct doctor *d, const cJSON *row)
{
	return strcmp(j_str(row, "status"), "PENDING") == 0 &&
	       recent(d, j_str(row, "created_at"));
}

static bool
keep_recent_unknown(struct doctor *d, const cJSON *row)
{
	return recent(d, j_str(row, "received_at"));
}

static void
order_checks(struct doctor *d, const cJSON *f)
{
	rows_check(d, f, "paid_without_access", NULL, "P1",
	           "paid_without_access", "kasir-order",
	           "re-issue the entitlement: kasirctl access grant ORDER_ID "
	           "--reason \"...\" --incident INC-ID; then tell the customer",
	           "PAID without access (orders)");
	rows_check(d, f, "access_without_paid", NULL, "P2",
	           "access_without_paid", "kasir-order",
	           "kasirctl order show ORDER_ID: look for refund/chargeback "
	           "evidence; escalate to finance; never set a status by hand",
	           "access without PAID (orders)");
	rows_check(
	    d, f, "pending_past_expiry", keep_overdue, "P2",
	    "pending_past_expiry", "kasir-order",
	    "ask Midtrans: kasirctl reconcile --pending --reason \"...\"",
	    "orders pending past expiry");
	rows_check(d, f, "flagged", NULL, "P2", "amount_mismatch",
	           "kasir-order",
	           "kasirctl order show ORDER_ID; compare amount and status "
	           "with the Midtrans dashboard; finance decides",
	           "flagged orders (amount mismatch, dispute, reversal)");
	rows_check(d, f, "snap_failures", keep_recent_snap, "P2",
	           "snap_failures", "kasir-order",
	           "check Midtrans Snap status and the server key; customers "
	           "cannot pay these orders: kasirctl order show ORDER_ID",
	           "recent orders without a Snap token");
	rows_check(d, f, "unknown_notifications", keep_recent_unknown, "P2",
	           "unknown_orders", "kasir-order",
	           "kasirctl order show ORDER_ID; check whether another system "
	           "uses this Midtrans account or the order was lost",
	           "recent notifications for unknown orders");
}

static void
notifier_checks(struct doctor *d, const cJSON *f)
{
	rows_check(d, f, "receipts_unpaid", NULL, "P1", "receipt_without_paid",
	           "kasir-notifier",
	           "contain: kasirctl reminders pause --reason \"...\"; "
	           "kasirctl order show ORDER_ID; contact the customer",
	           "receipts sent for an order not PAID");
	rows_check(d, f, "dead", NULL, "P2", "dead_jobs", "kasir-notifier",
	           "fix the channel (SMTP / WhatsApp provider), then kasirctl "
	           "notify requeue --dead --reason \"...\"",
	           "dead notification jobs");
	rows_check(d, f, "stuck", NULL, "P2", "stuck_jobs", "kasir-notifier",
	           "check kasir-notifier's workers and the provider; kasirctl "
	           "notify requeue --reason \"...\"",
	           "stuck notification jobs");
	rows_check(
	    d, f, "uncertain", NULL, "P2", "uncertain_sends", "kasir-notifier",
	    "never requeue blindly: ask the customer (or the provider's "
	    "log) whether it arrived, then kasirctl notify decide JOB_ID "
	    "delivered|resend --reason \"...\"",
	    "uncertain sends waiting for an operator's decision (may "
	    "have reached the customer)");
	rows_check(d, f, "paid_no_receipt", NULL, "P2", "paid_without_receipt",
	           "kasir-notifier",
	           "kasirctl notify resend ORDER_ID --kind receipt --reason "
	           "\"...\"",
	           "PAID orders without a sent receipt");
}

static void
reconciler_checks(struct doctor *d, const cJSON *f)
{
	rows_check(d, f, "past_expiry_unchecked", NULL, "P2",
	           "expiry_unchecked", "kasir-reconciler",
	           "kasirctl reconcile --pending --reason \"...\"",
	           "pending orders past expiry never checked with Midtrans");
	if (j_bool(f, "auth_broken"))
		finding(d, "P1", "status_api_auth", "kasir-reconciler", NULL,
		        "check kasir-reconciler's Midtrans server key "
		        "(credential) against the dashboard; rotate per SOP",
		        "the Midtrans Status API refuses our server key");
	else
		check_ran(d, "status_api_auth");
	if (j_bool(f, "webhook_silence")) {
		const cJSON *s = cJSON_GetObjectItemCaseSensitive(f, "silence");
		char age[32];

		fmt_age((int64_t)(j_num(s, "silent_for_s") * 1000), age,
		        sizeof(age));
		finding(d, "P1", "webhook_silence", "kasir-reconciler", NULL,
		        "check the notification URL in the Midtrans dashboard "
		        "and that kasir-ingest is reachable (proxy, TLS); "
		        "kasirctl reconcile-mode on --reason \"...\"",
		        "webhook silence: %.0f order(s) created in %s without "
		        "any notification",
		        j_num(s, "orders_since_notification"), age);
	} else {
		check_ran(d, "webhook_silence");
	}
}

static void
lag_checks(struct doctor *d, const cJSON *lags)
{
	const cJSON *row;
	cJSON *items = cJSON_CreateArray();
	bool known = false;

	cJSON_ArrayForEach(row, lags)
	{
		if (cJSON_IsNull(cJSON_GetObjectItem(row, "lag")))
			continue;
		known = true;
		if (j_num(row, "lag") > (double)d->c->conf.lag_max)
			cJSON_AddItemToArray(items, cJSON_Duplicate(row, true));
	}
	if (cJSON_GetArraySize(items) > 0)
		finding(d, "P2", "stream_lag", "kasirctl", items,
		        "look at the consumer's log (journalctl "
		        "STREAM=...); it catches up by replay; restart it if "
		        "it does not move",
		        "stream consumers behind by more than %lld messages",
		        (long long)d->c->conf.lag_max);
	else if (known) {
		cJSON_Delete(items);
		check_ran(d, "stream_lag");
	} else {
		cJSON_Delete(items);
		check_skipped(d, "stream_lag");
	}
}

static int
severity_rank(const char *s)
{
	return s[0] == 'P' && s[1] >= '0' && s[1] <= '3' ? s[1] - '0' : 9;
}

static int
by_severity(const void *a, const void *b)
{
	const cJSON *x = *(const cJSON *const *)a,
	            *y = *(const cJSON *const *)b;

	return severity_rank(j_str(x, "severity")) -
	       severity_rank(j_str(y, "severity"));
}

/* Item label for text: the order id, or the job id. */
static void
print_items(const cJSON *items)
{
	const cJSON *it;
	int n = 0, total = cJSON_GetArraySize(items);

	if (total == 0)
		return;
	printf("      ");
	cJSON_ArrayForEach(it, items)
	{
		if (n == TEXT_ITEMS_MAX)
			break;
		if (j_str(it, "order_id")[0])
			printf("%s%s", n ? " " : "", j_str(it, "order_id"));
		else if (j_str(it, "consumer")[0])
			printf("%s%s->%s lag %.0f", n ? ", " : "",
			       j_str(it, "stream"), j_str(it, "consumer"),
			       j_num(it, "lag"));
		else
			printf("%s#%.0f", n ? " " : "", j_num(it, "id"));
		n++;
	}
	if (total > n)
		printf(" ... (%d more, see --json)", total - n);
	printf("\n");
}

int
cmd_doctor(struct ctl *c, int argc, char **argv)
{
	static const enum ctl_svc fact_svcs[] = {SVC_ORDER, SVC_NOTIFIER,
	                                         SVC_RECONCILER};
	struct doctor d = {.c = c, .now_ms = now_real_ms()};
	cJSON *st[SVC_COUNT], *facts[SVC_COUNT] = {NULL}, *lags, *out;
	struct ctl_error err[SVC_COUNT], ferr;
	int counts[4] = {0}, total;
	const cJSON *f;

	(void)argv;
	if (argc != 0)
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "usage: kasirctl doctor");
	d.findings = cJSON_CreateArray();
	d.checks = cJSON_CreateObject();
	if (d.findings == NULL || d.checks == NULL) {
		cJSON_Delete(d.findings);
		cJSON_Delete(d.checks);
		return CTL_EXIT_FAILED;
	}
	ctl_collect_status(c, st, err);
	for (int s = 0; s < SVC_COUNT; s++) {
		char check[48];

		snprintf(check, sizeof(check), "%s_answers", ctl_svc_key(s));
		if (c->conf.socket[s] == NULL) {
			check_skipped(&d, check);
			continue;
		}
		if (st[s] != NULL) {
			check_ran(&d, check);
			continue;
		}
		finding(&d, "P1", check, ctl_svc_name(s), NULL,
		        "systemctl status <unit>; journalctl -u <unit>; "
		        "restart it: it catches up from its cursors with no "
		        "other action",
		        "%s", err[s].message);
	}
	for (size_t i = 0; i < ARRAY_SIZE(fact_svcs); i++) {
		enum ctl_svc s = fact_svcs[i];

		if (st[s] == NULL)
			continue; /* reported above */
		if (ctl_call(c, s, "doctor.facts", NULL, 0, &facts[s], &ferr) <
		    0) {
			finding(&d, "P2", "facts", ctl_svc_name(s), NULL,
			        "the daemon answers status but not its "
			        "checklist: look at its log",
			        "%s: doctor.facts failed: %s", ctl_svc_name(s),
			        ferr.message);
			facts[s] = NULL;
		}
	}
	if (facts[SVC_ORDER])
		order_checks(&d, facts[SVC_ORDER]);
	if (facts[SVC_NOTIFIER])
		notifier_checks(&d, facts[SVC_NOTIFIER]);
	if (facts[SVC_RECONCILER])
		reconciler_checks(&d, facts[SVC_RECONCILER]);
	lags = ctl_stream_lags(st);
	lag_checks(&d, lags);

	/* most severe first */
	{
		int n = cJSON_GetArraySize(d.findings);
		cJSON **v = calloc((size_t)n + 1, sizeof(*v));

		if (v != NULL) {
			for (int i = n - 1; i >= 0; i--)
				v[i] = cJSON_DetachItemFromArray(d.findings, i);
			qsort(v, (size_t)n, sizeof(*v), by_severity);
			for (int i = 0; i < n; i++)
				cJSON_AddItemToArray(d.findings, v[i]);
			free(v);
		}
	}
	cJSON_ArrayForEach(f, d.findings)
	{
		int r = severity_rank(j_str(f, "severity"));

		if (r < 4)
			counts[r]++;
	}
	total = cJSON_GetArraySize(d.findings);
	if (!c->json) {
		char now[40];

		time_rfc3339(d.now_ms, now, sizeof(now));
		if (total == 0)
			printf("kasir doctor at %s: no findings (%d checks "
			       "run)\n",
			       now, cJSON_GetArraySize(d.checks));
		else
			printf("kasir doctor at %s: %d finding(s): P0 %d, P1 "
			       "%d, P2 %d, P3 %d\n\n",
			       now, total, counts[0], counts[1], counts[2],
			       counts[3]);
		cJSON_ArrayForEach(f, d.findings)
		{
			printf("%s  %-22s %s\n", j_str(f, "severity"),
			       j_str(f, "check"), j_str(f, "title"));
			print_items(cJSON_GetObjectItem(f, "items"));
			printf("      SOP: %s\n", j_str(f, "action"));
		}
		{
			const cJSON *k;
			bool any = false;

			cJSON_ArrayForEach(k, d.checks)
			{
				if (strcmp(k->valuestring, "skipped") != 0)
					continue;
				printf("%s%s", any ? ", " : "\nnot checked: ",
				       k->string);
				any = true;
			}
			if (any)
				printf("\n");
		}
	}
	out = cJSON_CreateObject();
	cJSON_AddBoolToObject(out, "healthy", counts[0] + counts[1] == 0);
	cJSON_AddNumberToObject(out, "P0", counts[0]);
	cJSON_AddNumberToObject(out, "P1", counts[1]);
	cJSON_AddNumberToObject(out, "P2", counts[2]);
	cJSON_AddNumberToObject(out, "P3", counts[3]);
	cJSON_AddItemToObject(out, "findings", d.findings);
	cJSON_AddItemToObject(out, "checks", d.checks);
	cJSON_AddItemToObject(out, "streams", lags);
	for (int s = 0; s < SVC_COUNT; s++) {
		cJSON_Delete(st[s]);
		cJSON_Delete(facts[s]);
	}
	out_json_ok(c, out);
	return counts[0] + counts[1] > 0 ? CTL_EXIT_FAILED : CTL_EXIT_OK;
}
