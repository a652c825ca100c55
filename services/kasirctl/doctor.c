/*
 * doctor.c - kasirctl doctor: the SOP's investigation checklist, run from
 * the facts each daemon reports ("doctor.facts", "status").  Every kind of
 * finding is declared once in findings.c with its SOP severity (P0..P3),
 * scenario (6.1..6.5), step and the command that resolves it; this file
 * only decides which findings the facts show.
 *
 * Root cause first: when a finding whose row says root_cause is found
 * (PostgreSQL down), it is the one finding and every other is listed under
 * it, since they clear with it.
 *
 * Exit status: 1 when any P0 or P1 is found (monitoring and people at
 * 2 a.m. read the same verdict), 0 otherwise.  `doctor --table` prints the
 * table itself.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "kasirctl.h"
#include "util.h"

#define TEXT_ITEMS_MAX 20 /* ids printed per finding in text mode */
/* orders in an hour, none PAID: P0 (the same minimum as KasirNoPayments) */
#define NO_PAYMENT_MIN_ORDERS 3

struct doctor {
	struct ctl *c;
	cJSON *findings; /* array */
	cJSON *checks;   /* object: check -> "ok" | "finding" | "skipped" */
	int64_t now_ms;
};

/* Adds a finding of kind id (a row of findings.c); items (may be NULL) is
 * taken over. */
static void finding(struct doctor *d, const char *id, const char *service,
                    cJSON *items, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void
finding(struct doctor *d, const char *id, const char *service, cJSON *items,
        const char *fmt, ...)
{
	const struct ctl_finding_def *def = ctl_finding_def(id);
	char title[512];
	cJSON *f = cJSON_CreateObject();
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(title, sizeof(title), fmt, ap);
	va_end(ap);
	if (def == NULL) {
		/* a programmer error: every id must be a row of findings.c;
		 * still say what was found rather than drop it */
		fprintf(stderr,
		        "kasirctl: internal: finding %s has no row in "
		        "findings.c: %s\n",
		        id, title);
		def = ctl_finding_def("facts");
	}
	if (f == NULL) {
		cJSON_Delete(items);
		return;
	}
	cJSON_AddStringToObject(f, "severity", def->severity);
	cJSON_AddStringToObject(f, "check", id);
	cJSON_AddStringToObject(f, "scenario", def->scenario);
	cJSON_AddStringToObject(f, "service", service);
	cJSON_AddStringToObject(f, "title", title);
	cJSON_AddStringToObject(f, "step", def->step);
	cJSON_AddStringToObject(f, "command", def->command);
	if (def->alert != NULL)
		cJSON_AddStringToObject(f, "alert", def->alert);
	else
		cJSON_AddNullToObject(f, "alert");
	cJSON_AddItemToObject(f, "items", items ? items : cJSON_CreateArray());
	cJSON_AddItemToArray(d->findings, f);
	cJSON_DeleteItemFromObject(d->checks, id);
	cJSON_AddStringToObject(d->checks, id, "finding");
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
           bool (*keep)(struct doctor *, const cJSON *), const char *check,
           const char *service, const char *what)
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
	finding(d, check, service, items, "%s: %d", what, n);
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

/*
 * SOP 6.1, Snap availability, the same condition as the KasirSnapFailing
 * alert over doctor.snap_window: most attempts failed and either at least
 * three did or every one did, however few there were (a quiet shop with
 * one failure in ten minutes has nobody able to pay; a busy shop whose
 * Snap broke after earlier successes in the window is named at once, not
 * when those successes leave the window: kasirctl drill 6.1 found that).
 * Returns true when it found that.
 */
static bool
snap_outage_check(struct doctor *d, const cJSON *f)
{
	const cJSON *rows = cJSON_GetObjectItemCaseSensitive(f, "snap_recent");
	const cJSON *row;
	cJSON *items;
	int attempts = 0, failed = 0;
	int64_t t;
	char win[32];

	if (!cJSON_IsArray(rows)) {
		check_skipped(d, "snap_outage");
		return false;
	}
	cJSON_ArrayForEach(row, rows)
	{
		if (ts_parse(j_str(row, "created_at"), &t) < 0 ||
		    d->now_ms - t > d->c->conf.snap_window_ms)
			continue;
		attempts++;
		if (!j_bool(row, "ok"))
			failed++;
	}
	if (attempts == 0 || failed * 2 <= attempts ||
	    (failed < 3 && failed < attempts)) {
		check_ran(d, "snap_outage");
		return false;
	}
	items = cJSON_CreateArray();
	cJSON_ArrayForEach(row, rows)
	{
		if (ts_parse(j_str(row, "created_at"), &t) == 0 &&
		    d->now_ms - t <= d->c->conf.snap_window_ms)
			cJSON_AddItemToArray(items, cJSON_Duplicate(row, true));
	}
	fmt_age(d->c->conf.snap_window_ms, win, sizeof(win));
	finding(d, "snap_outage", "kasir-order", items,
	        "Snap attempts in the last %s failing (%d of %d); last "
	        "error: %.200s",
	        win, failed, attempts,
	        j_str(cJSON_GetArrayItem(rows, 0), "snap_error"));
	return true;
}

/* SOP 6.1 "paid rate = 0": orders keep coming, none gets PAID. */
static void
no_payments_check(struct doctor *d, const cJSON *f)
{
	const cJSON *h = cJSON_GetArrayItem(
	    cJSON_GetObjectItemCaseSensitive(f, "last_hour"), 0);

	if (h == NULL) {
		check_skipped(d, "no_payments");
		return;
	}
	if (j_num(h, "created") >= NO_PAYMENT_MIN_ORDERS &&
	    j_num(h, "paid") == 0)
		finding(d, "no_payments", "kasir-order", NULL,
		        "%.0f orders created in the last hour, none PAID",
		        j_num(h, "created"));
	else
		check_ran(d, "no_payments");
}

static bool
keep_recent_contradiction(struct doctor *d, const cJSON *row)
{
	return recent(d, j_str(row, "contradicted_at"));
}

static void
order_checks(struct doctor *d, const cJSON *f)
{
	bool outage;

	rows_check(d, f, "contradicted", keep_recent_contradiction,
	           "midtrans_contradicted", "kasir-order",
	           "notifications contradicted by Midtrans (possible forgery "
	           "or key leak)");
	rows_check(d, f, "awaiting_confirmation", NULL, "awaiting_confirmation",
	           "kasir-order",
	           "orders awaiting confirmation by the Midtrans Status API");
	rows_check(d, f, "paid_without_access", NULL, "paid_without_access",
	           "kasir-order", "PAID without access (orders)");
	rows_check(d, f, "access_without_paid", NULL, "access_without_paid",
	           "kasir-order", "access without PAID (orders)");
	rows_check(d, f, "pending_past_expiry", keep_overdue,
	           "pending_past_expiry", "kasir-order",
	           "orders pending past expiry");
	rows_check(d, f, "flagged", NULL, "amount_mismatch", "kasir-order",
	           "flagged orders (amount mismatch, dispute, reversal)");
	outage = snap_outage_check(d, f);
	if (!outage)
		rows_check(d, f, "snap_failures", keep_recent_snap,
		           "snap_failures", "kasir-order",
		           "recent orders without a Snap token");
	no_payments_check(d, f);
	rows_check(d, f, "unknown_notifications", keep_recent_unknown,
	           "unknown_orders", "kasir-order",
	           "recent notifications for unknown orders");
}

/* SOP 6.3 step 2: notifications refused for a bad signature. */
static void
ingest_checks(struct doctor *d, const cJSON *f)
{
	const cJSON *s =
	    cJSON_GetObjectItemCaseSensitive(f, "signature_failures");
	const char *order = j_str(s, "last_order_id");

	if (!cJSON_IsObject(s)) {
		check_skipped(d, "signature_failures");
		return;
	}
	if (j_num(s, "quarantined_last_hour") == 0) {
		check_ran(d, "signature_failures");
		return;
	}
	finding(
	    d, "signature_failures", "kasir-ingest", NULL,
	    "%.0f notification(s) refused for a bad signature in the last "
	    "hour (%.0f since kasir-ingest started); last at %s from %s%s%s",
	    j_num(s, "quarantined_last_hour"), j_num(s, "since_start"),
	    j_str(s, "last_at"), j_str(s, "last_source"),
	    order[0] ? ", claiming order " : "", order);
}

static void
notifier_checks(struct doctor *d, const cJSON *f)
{
	const cJSON *w = cJSON_GetObjectItemCaseSensitive(f, "waiting");

	rows_check(d, f, "receipts_unpaid", NULL, "receipt_without_paid",
	           "kasir-notifier", "receipts sent for an order not PAID");
	rows_check(d, f, "dead", NULL, "dead_jobs", "kasir-notifier",
	           "dead notification jobs");
	rows_check(d, f, "stuck", NULL, "stuck_jobs", "kasir-notifier",
	           "stuck notification jobs");
	rows_check(d, f, "uncertain", NULL, "uncertain_sends", "kasir-notifier",
	           "uncertain sends waiting for an operator's decision (may "
	           "have reached the customer)");
	rows_check(d, f, "paid_no_receipt", NULL, "paid_without_receipt",
	           "kasir-notifier", "PAID orders without a sent receipt");
	if (!cJSON_IsObject(w)) {
		check_skipped(d, "provider_failing");
	} else if (j_num(w, "failing_jobs") > 0) {
		char age[32];

		fmt_age((int64_t)(j_num(w, "oldest_failing_s") * 1000), age,
		        sizeof(age));
		finding(d, "provider_failing", "kasir-notifier", NULL,
		        "%.0f notification job(s) waiting after a provider "
		        "failure, the first failed %s ago: %.200s",
		        j_num(w, "failing_jobs"), age, j_str(w, "first_error"));
	} else {
		check_ran(d, "provider_failing");
	}
}

static void
reconciler_checks(struct doctor *d, const cJSON *f)
{
	rows_check(d, f, "past_expiry_unchecked", NULL, "expiry_unchecked",
	           "kasir-reconciler",
	           "pending orders past expiry never checked with Midtrans");
	if (j_bool(f, "auth_broken"))
		finding(d, "status_api_auth", "kasir-reconciler", NULL,
		        "the Midtrans Status API refuses our server key");
	else
		check_ran(d, "status_api_auth");
	if (j_bool(f, "webhook_silence")) {
		const cJSON *s = cJSON_GetObjectItemCaseSensitive(f, "silence");
		char age[32];

		fmt_age((int64_t)(j_num(s, "silent_for_s") * 1000), age,
		        sizeof(age));
		finding(d, "webhook_silence", "kasir-reconciler", NULL,
		        "webhook silence: %.0f order(s) created in %s without "
		        "any notification",
		        j_num(s, "orders_since_notification"), age);
	} else {
		check_ran(d, "webhook_silence");
	}
}

/* SOP 6.5: a loop that owns a database handle had no successful pass past
 * its bound while its daemon answers (every daemon's status lists its
 * loops: common/liveness.c). */
static void
loop_checks(struct doctor *d, cJSON *const st[SVC_COUNT])
{
	cJSON *items = cJSON_CreateArray();
	char names[256] = "";
	bool known = false;

	for (int s = 0; s < SVC_COUNT; s++) {
		const cJSON *loops =
		    cJSON_GetObjectItemCaseSensitive(st[s], "loops");
		const cJSON *l;

		if (!cJSON_IsArray(loops))
			continue;
		known = true;
		cJSON_ArrayForEach(l, loops)
		{
			cJSON *it;
			size_t len = strlen(names);

			if (!j_bool(l, "silent"))
				continue;
			it = cJSON_Duplicate(l, true);
			cJSON_AddStringToObject(it, "service", ctl_svc_name(s));
			cJSON_AddItemToArray(items, it);
			snprintf(names + len, sizeof(names) - len, "%s%s",
			         len ? ", " : "", j_str(l, "loop"));
		}
	}
	if (cJSON_GetArraySize(items) > 0) {
		finding(d, "loop_silent",
		        j_str(cJSON_GetArrayItem(items, 0), "service"), items,
		        "silent past their bound: %s", names);
		return;
	}
	cJSON_Delete(items);
	if (known)
		check_ran(d, "loop_silent");
	else
		check_skipped(d, "loop_silent");
}

/* Checks on what "status" said (no facts needed). */
static void
status_checks(struct doctor *d, cJSON *const st[SVC_COUNT])
{
	loop_checks(d, st);
	if (st[SVC_NOTIFIER] == NULL)
		check_skipped(d, "reminders_paused");
	else if (j_bool(st[SVC_NOTIFIER], "reminders_paused"))
		finding(d, "reminders_paused", "kasir-notifier", NULL,
		        "payment reminders are paused");
	else
		check_ran(d, "reminders_paused");
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
		finding(d, "stream_lag", "kasirctl", items,
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

/* "kasir-reconciler: reconciler.scheduler, last good pass 41s ago
 * (bound 22s)" */
static void
print_loop(const cJSON *it, int n)
{
	char age[32] = "never", bound[32];

	if (j_num(it, "ok_age_s") >= 0)
		fmt_age((int64_t)(j_num(it, "ok_age_s") * 1000), age,
		        sizeof(age));
	fmt_age((int64_t)(j_num(it, "bound_s") * 1000), bound, sizeof(bound));
	printf("%s%s: %s, last good pass %s%s (bound %s)", n ? "\n      " : "",
	       j_str(it, "service"), j_str(it, "loop"), age,
	       j_num(it, "ok_age_s") >= 0 ? " ago" : "", bound);
}

/* Item label for text: a job (its id, which `notify decide JOB_ID` needs,
 * with its order), the order id, the stream edge, the service (with its
 * error), or the id. */
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
		if (cJSON_IsNumber(cJSON_GetObjectItem(it, "job_id")))
			printf("%sjob %.0f (order %s, %s by %s)",
			       n ? "\n      " : "", j_num(it, "job_id"),
			       j_str(it, "order_id"), j_str(it, "kind"),
			       j_str(it, "channel"));
		else if (j_str(it, "order_id")[0])
			printf("%s%s", n ? " " : "", j_str(it, "order_id"));
		else if (j_str(it, "consumer")[0])
			printf("%s%s->%s lag %.0f", n ? ", " : "",
			       j_str(it, "stream"), j_str(it, "consumer"),
			       j_num(it, "lag"));
		else if (j_str(it, "loop")[0])
			print_loop(it, n);
		else if (j_str(it, "service")[0])
			printf("%s%s: %s", n ? "\n      " : "",
			       j_str(it, "service"), j_str(it, "error"));
		else
			printf("%s#%.0f", n ? " " : "", j_num(it, "id"));
		n++;
	}
	if (total > n)
		printf(" ... (%d more, see --json)", total - n);
	printf("\n");
}

/* Sorts d->findings, most severe first. */
static void
sort_findings(struct doctor *d)
{
	int n = cJSON_GetArraySize(d->findings);
	cJSON **v = calloc((size_t)n + 1, sizeof(*v));

	if (v == NULL)
		return;
	for (int i = n - 1; i >= 0; i--)
		v[i] = cJSON_DetachItemFromArray(d->findings, i);
	qsort(v, (size_t)n, sizeof(*v), by_severity);
	for (int i = 0; i < n; i++)
		cJSON_AddItemToArray(d->findings, v[i]);
	free(v);
}

/* Root cause first: when a root-cause finding is present, the others move
 * into its "under" array (they clear with it). */
static void
group_under_root(struct doctor *d)
{
	cJSON *root = NULL, *f, *under;

	cJSON_ArrayForEach(f, d->findings)
	{
		const struct ctl_finding_def *def =
		    ctl_finding_def(j_str(f, "check"));

		if (def != NULL && def->root_cause) {
			root = f;
			break;
		}
	}
	if (root == NULL)
		return;
	/* take every finding out in order; the root goes back alone */
	under = cJSON_CreateArray();
	while (cJSON_GetArraySize(d->findings) > 0) {
		cJSON *x = cJSON_DetachItemFromArray(d->findings, 0);

		if (x != root)
			cJSON_AddItemToArray(under, x);
	}
	cJSON_AddItemToObject(root, "under", under);
	cJSON_AddItemToArray(d->findings, root);
}

static void
print_finding(const cJSON *f, const char *indent)
{
	const cJSON *under = cJSON_GetObjectItem(f, "under"), *u;

	printf("%s%s  %-22s %s\n", indent, j_str(f, "severity"),
	       j_str(f, "check"), j_str(f, "title"));
	if (indent[0] != '\0')
		return; /* listed under its root cause: the title is enough */
	print_items(cJSON_GetObjectItem(f, "items"));
	printf("      SOP %s: %s\n", j_str(f, "scenario"), j_str(f, "step"));
	printf("      run: %s\n", j_str(f, "command"));
	if (cJSON_GetArraySize(under) > 0) {
		printf("      caused by it (they clear with it):\n");
		cJSON_ArrayForEach(u, under) print_finding(u, "        ");
	}
}

/* kasirctl doctor --table: the findings table of findings.c. */
static int
print_table(struct ctl *c)
{
	size_t n;
	const struct ctl_finding_def *t = ctl_finding_defs(&n);
	cJSON *out = cJSON_CreateObject(), *rows;

	if (out == NULL ||
	    (rows = cJSON_AddArrayToObject(out, "findings")) == NULL) {
		cJSON_Delete(out);
		return CTL_EXIT_FAILED;
	}
	for (size_t i = 0; i < n; i++) {
		cJSON *r = cJSON_CreateObject();

		cJSON_AddItemToArray(rows, r);
		cJSON_AddStringToObject(r, "check", t[i].id);
		cJSON_AddStringToObject(r, "severity", t[i].severity);
		cJSON_AddStringToObject(r, "scenario", t[i].scenario);
		cJSON_AddStringToObject(r, "step", t[i].step);
		cJSON_AddStringToObject(r, "command", t[i].command);
		if (t[i].alert != NULL)
			cJSON_AddStringToObject(r, "alert", t[i].alert);
		else
			cJSON_AddNullToObject(r, "alert");
		cJSON_AddBoolToObject(r, "root_cause", t[i].root_cause);
		if (!c->json)
			printf("%s  %-5s %-26s %s\n      run: %s\n",
			       t[i].severity, t[i].scenario, t[i].id, t[i].step,
			       t[i].command);
	}
	return out_json_ok(c, out);
}

/* Asks every configured daemon for status; a daemon that cannot reach its
 * database is not "down": it names the root cause. */
static void
answer_checks(struct doctor *d, cJSON *const st[SVC_COUNT],
              const struct ctl_error err[SVC_COUNT], cJSON *no_access)
{
	cJSON *db_items = cJSON_CreateArray();

	for (int s = 0; s < SVC_COUNT; s++) {
		char check[48];

		snprintf(check, sizeof(check), "%s_answers", ctl_svc_key(s));
		if (d->c->conf.socket[s] == NULL) {
			check_skipped(d, check);
			continue;
		}
		if (st[s] != NULL) {
			check_ran(d, check);
			continue;
		}
		if (ctl_error_access(&err[s])) {
			/* refused to this user (socket permission, role
			 * none): not down, nothing to restart; its checks
			 * are "skipped" and the run fails as refused */
			cJSON *it = cJSON_CreateObject();

			cJSON_AddStringToObject(it, "service", ctl_svc_name(s));
			cJSON_AddStringToObject(it, "socket", err[s].socket);
			cJSON_AddStringToObject(it, "code", err[s].code);
			cJSON_AddStringToObject(it, "message", err[s].message);
			cJSON_AddItemToArray(no_access, it);
			check_skipped(d, check);
			continue;
		}
		if (ctl_error_database(&err[s])) {
			cJSON *it = cJSON_CreateObject();

			cJSON_AddStringToObject(it, "service", ctl_svc_name(s));
			cJSON_AddStringToObject(it, "error", err[s].message);
			cJSON_AddItemToArray(db_items, it);
			check_ran(d, check);
			continue;
		}
		finding(d, check, ctl_svc_name(s), NULL, "%s", err[s].message);
	}
	if (cJSON_GetArraySize(db_items) > 0) {
		char names[256] = "";
		const cJSON *it;

		cJSON_ArrayForEach(it, db_items)
		{
			size_t len = strlen(names);

			snprintf(names + len, sizeof(names) - len, "%s%s",
			         len ? ", " : "", j_str(it, "service"));
		}
		finding(d, "database_down", "postgresql", db_items,
		        "PostgreSQL unreachable: %s cannot reach the database",
		        names);
	} else {
		cJSON_Delete(db_items);
		check_ran(d, "database_down");
	}
}

struct cJSON *
ctl_doctor_collect(struct ctl *c, struct ctl_error err_out[SVC_COUNT])
{
	static const enum ctl_svc fact_svcs[] = {SVC_INGEST, SVC_ORDER,
	                                         SVC_NOTIFIER, SVC_RECONCILER};
	struct doctor d = {.c = c, .now_ms = now_real_ms()};
	cJSON *st[SVC_COUNT], *facts[SVC_COUNT] = {NULL}, *lags, *out;
	cJSON *no_access = cJSON_CreateArray();
	struct ctl_error err[SVC_COUNT], ferr;
	int counts[4] = {0};
	const cJSON *f;

	d.findings = cJSON_CreateArray();
	d.checks = cJSON_CreateObject();
	if (d.findings == NULL || d.checks == NULL || no_access == NULL) {
		cJSON_Delete(d.findings);
		cJSON_Delete(d.checks);
		cJSON_Delete(no_access);
		return NULL;
	}
	ctl_collect_status(c, st, err);
	if (err_out != NULL)
		memcpy(err_out, err, sizeof(err));
	answer_checks(&d, st, err, no_access);
	for (size_t i = 0; i < ARRAY_SIZE(fact_svcs); i++) {
		enum ctl_svc s = fact_svcs[i];

		if (st[s] == NULL)
			continue; /* reported above */
		if (ctl_call(c, s, "doctor.facts", NULL, 0, &facts[s], &ferr) <
		    0) {
			facts[s] = NULL;
			if (ctl_error_unknown_command(&ferr))
				continue; /* an older daemon: its checks are
				             "skipped" */
			finding(&d, "facts", ctl_svc_name(s), NULL,
			        "%s: doctor.facts failed: %s", ctl_svc_name(s),
			        ferr.message);
		}
	}
	if (facts[SVC_INGEST])
		ingest_checks(&d, facts[SVC_INGEST]);
	else
		check_skipped(&d, "signature_failures");
	if (facts[SVC_ORDER])
		order_checks(&d, facts[SVC_ORDER]);
	if (facts[SVC_NOTIFIER])
		notifier_checks(&d, facts[SVC_NOTIFIER]);
	if (facts[SVC_RECONCILER])
		reconciler_checks(&d, facts[SVC_RECONCILER]);
	status_checks(&d, st);
	lags = ctl_stream_lags(st);
	lag_checks(&d, lags);

	sort_findings(&d);
	group_under_root(&d);
	cJSON_ArrayForEach(f, d.findings)
	{
		int r = severity_rank(j_str(f, "severity"));

		if (r < 4)
			counts[r]++;
	}
	out = cJSON_CreateObject();
	cJSON_AddNumberToObject(out, "at_ms", (double)d.now_ms);
	cJSON_AddBoolToObject(out, "healthy", counts[0] + counts[1] == 0);
	cJSON_AddNumberToObject(out, "P0", counts[0]);
	cJSON_AddNumberToObject(out, "P1", counts[1]);
	cJSON_AddNumberToObject(out, "P2", counts[2]);
	cJSON_AddNumberToObject(out, "P3", counts[3]);
	cJSON_AddItemToObject(out, "findings", d.findings);
	cJSON_AddItemToObject(out, "checks", d.checks);
	cJSON_AddItemToObject(out, "streams", lags);
	cJSON_AddItemToObject(out, "no_access", no_access);
	for (int s = 0; s < SVC_COUNT; s++) {
		cJSON_Delete(st[s]);
		cJSON_Delete(facts[s]);
	}
	return out;
}

int
cmd_doctor(struct ctl *c, int argc, char **argv)
{
	struct ctl_error err[SVC_COUNT];
	cJSON *out;
	const cJSON *f;
	int p0, p1, total, denied, rc;

	if (argc == 1 && strcmp(argv[0], "--table") == 0)
		return print_table(c);
	if (argc != 0)
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "usage: kasirctl doctor [--table]");
	if ((out = ctl_doctor_collect(c, err)) == NULL)
		return CTL_EXIT_FAILED;
	/* every configured daemon refused this user: that is the one
	 * answer, not a finding per daemon */
	if ((rc = ctl_no_access(c, err)) >= 0) {
		cJSON_Delete(out);
		return rc;
	}
	denied = cJSON_GetArraySize(cJSON_GetObjectItem(out, "no_access"));
	p0 = (int)j_num(out, "P0");
	p1 = (int)j_num(out, "P1");
	total = cJSON_GetArraySize(cJSON_GetObjectItem(out, "findings"));
	if (!c->json) {
		char now[40];

		time_rfc3339((int64_t)j_num(out, "at_ms"), now, sizeof(now));
		if (total == 0)
			printf("kasir doctor at %s: no findings (%d checks "
			       "run)\n",
			       now,
			       cJSON_GetArraySize(
			           cJSON_GetObjectItem(out, "checks")));
		else
			printf("kasir doctor at %s: %d finding(s): P0 %d, P1 "
			       "%d, P2 %d, P3 %d\n\n",
			       now, total, p0, p1, (int)j_num(out, "P2"),
			       (int)j_num(out, "P3"));
		cJSON_ArrayForEach(f, cJSON_GetObjectItem(out, "findings"))
		    print_finding(f, "");
		{
			const cJSON *k;
			bool any = false;

			cJSON_ArrayForEach(k,
			                   cJSON_GetObjectItem(out, "checks"))
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
		cJSON_ArrayForEach(f, cJSON_GetObjectItem(out, "no_access"))
		{
			printf(
			    "%s%s: %s [%s]\n",
			    f == cJSON_GetArrayItem(
			             cJSON_GetObjectItem(out, "no_access"), 0)
			        ? "\nNO ACCESS (not down; nothing to "
			          "restart), not checked:\n  "
			        : "  ",
			    j_str(f, "service"), j_str(f, "message"),
			    j_str(f, "code"));
		}
	}
	cJSON_DeleteItemFromObject(out, "at_ms");
	out_json_ok(c, out);
	/* a check this user could not run is no verdict: refused */
	return p0 + p1 > 0 || denied > 0 ? CTL_EXIT_FAILED : CTL_EXIT_OK;
}
