/*
 * drill.c - kasirctl drill list | run SCENARIO [--auto] (SOP section 9):
 * cause an SOP scenario on a dev or staging deployment, measure what a real
 * incident would show, resolve it, check that no payment was lost and keep
 * the run as an incident record ("Detected By: drill").
 *
 * One run, in order (each step a note of the incident, so `kasirctl
 * incident report` shows the timeline):
 *   1. refuse unless deployment is dev or staging (main.c checked the
 *      engineer role and --reason: drill run is a changing command)
 *   2. doctor must not already name the scenario's finding
 *   3. inject the fault (stop a daemon, or switch a fake to a failure mode)
 *   4. drill orders (the catalog's drill course, marked so finance exports
 *      leave them out) paid at the fake Midtrans
 *   5. detection: the alert's expression evaluated on the scraped /metrics
 *      (the same expression as deploy/prometheus/kasir-alerts.yml, without
 *      its `for:`, which is added to the report), and doctor naming the
 *      finding with its SOP scenario and severity
 *   6. resolution: the finding's command (--auto runs it; otherwise the
 *      operator does and the drill waits)
 *   7. healthy: doctor no longer names it; every drill payment PAID with
 *      access and a sent receipt
 *
 * Scenarios: 6.1 (Snap refuses: all payments failing), 6.2 (a paid drill
 * order's access revoked), 6.3 (the drill payments' notifications dropped:
 * doctor needs the reconciler's auto_silence to pass, so drill.timeout
 * must exceed it), 6.4 (SMTP answers 451), 6.5 (kasir-notifier stopped).
 */
#include <errno.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cJSON.h"
#include "drill.h"
#include "err.h"
#include "util.h"

#define DRILL_ORDERS     2 /* paid drill orders per run (at least) */
#define DRILL_ORDERS_MAX 8
/* 6.1: refused checkouts at most.  doctor's snap_outage reads the latest 50
 * Snap outcomes (kasir-order's admin_doctor_snap_recent): 26 refused ones
 * are most of them whatever traffic came before, so the drill's customers
 * keep trying until doctor names it (or drill.timeout), never further. */
#define DRILL_REFUSED_MAX 60
#define DRILL_POLL_MS     500 /* between two looks at metrics and doctor */
#define DRILL_NOTE_MAX    1000

struct drill;

struct drill_def {
	const char *scenario; /* "6.5" */
	const char *title;    /* what the SOP calls it */
	const char *fault;    /* what the drill does */
	const char *finding;  /* doctor's check id */
	const char *alert;
	int64_t alert_for_ms;            /* the rule's for: */
	const char *needs;               /* kasirctl.yaml keys it needs besides
	                                    drill.api_url, api_token_file, fake_midtrans
	                                    and metrics (configured() checks them) */
	int (*prepare)(struct drill *d); /* before the fault (NULL: none) */
	int (*inject)(struct drill *d);
	int (*traffic)(struct drill *d); /* drill orders during the fault */
	int (*during)(struct drill *d);  /* more traffic until detected */
	/* the alert's expression on now vs. the baseline scrape: 1 holds, 0
	 * not yet; *note says what was read */
	int (*alert_holds)(struct drill *d, char *note, size_t len);
	int (*end_fault)(struct drill *d); /* the fault outside kasir */
	int (*resolve)(struct drill *d);   /* the finding's command */
	/* without --auto: 1 once the operator has run the finding's command
	 * (NULL: nothing to wait for before after()) */
	int (*operator_done)(struct drill *d);
	int (*after)(struct drill *d); /* the customer retries... */
};

struct drill {
	struct ctl *c;
	const struct drill_def *def;
	const struct ctl_finding_def *fdef;
	bool auto_resolve;
	int64_t incident;
	int64_t t0; /* fault injected, real ms */
	int64_t t_alert, t_doctor, t_resolved, t_healthy; /* -1: never */
	double alert_value; /* for threshold-on-age alerts */
	double base[4];     /* baseline counters */
	char orders[DRILL_ORDERS_MAX][64];
	int norders;
	int refused;      /* checkouts refused during the fault (6.1) */
	bool drop_notify; /* pay without a notification (6.3) */
	int lost;
	cJSON *lost_list;
	cJSON *timeline;
};

static void note(struct drill *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
note(struct drill *d, const char *fmt, ...)
{
	char text[DRILL_NOTE_MAX], line[DRILL_NOTE_MAX + 32];
	int64_t at = now_real_ms();
	va_list ap;
	cJSON *e;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (d->t0 > 0)
		snprintf(line, sizeof(line), "drill T+%.1fs: %s",
		         (double)(at - d->t0) / 1000.0, text);
	else
		snprintf(line, sizeof(line), "drill: %s", text);
	if (d->incident > 0 && ops_incident_note(d->c, d->incident, line) < 0)
		fprintf(stderr, "kasirctl: warning: incident note: %s\n",
		        ops_last_error(d->c));
	e = cJSON_CreateObject();
	cJSON_AddNumberToObject(e, "at_ms", (double)at);
	cJSON_AddStringToObject(e, "text", line);
	cJSON_AddItemToArray(d->timeline, e);
	out_text(d->c, "  %s\n", line);
}

/* ---- faults ------------------------------------------------------------- */

/* Runs drill.stop_command / start_command with {service} replaced by the
 * unit name ("kasir-notifier").  The template comes from the config file
 * (root-owned in staging); the name from the table above. */
static int
run_template(struct drill *d, const char *tmpl, const char *service)
{
	char cmd[1024], shell[1040];
	size_t o = 0;
	int st;

	if (tmpl == NULL)
		return -ENOENT;
	for (const char *p = tmpl; *p != '\0' && o + 1 < sizeof(cmd);) {
		if (strncmp(p, "{service}", 9) == 0) {
			o += (size_t)snprintf(cmd + o, sizeof(cmd) - o, "%s",
			                      service);
			p += 9;
		} else {
			cmd[o++] = *p++;
		}
	}
	if (o >= sizeof(cmd) - 1)
		return -E2BIG;
	cmd[o] = '\0';
	/* its output goes to stderr: stdout is --json's */
	if (snprintf(shell, sizeof(shell), "(%s) 1>&2", cmd) >=
	    (int)sizeof(shell))
		return -E2BIG;
	fflush(stdout);
	st = system(shell);
	note(d, "ran `%s`: exit %d", cmd, st == -1 ? -1 : WEXITSTATUS(st));
	return st == 0 ? 0 : KASIR_EPEER;
}

static int
fake_mode(struct drill *d, const char *base, const char *path, const char *body)
{
	char url[512];
	long status = 0;
	int rc;

	if (base == NULL)
		return -ENOENT;
	snprintf(url, sizeof(url), "%s%s", base, path);
	rc = drill_http("POST", url, body, NULL, &status, NULL);
	note(d, "POST %s %s: %s %ld", url, body, rc < 0 ? "failed" : "HTTP",
	     status);
	return rc == 0 && status >= 200 && status < 300 ? 0 : KASIR_EPEER;
}

static int
stop_notifier(struct drill *d)
{
	return run_template(d, d->c->conf.drill.stop_command, "kasir-notifier");
}

static int
start_notifier(struct drill *d)
{
	return run_template(d, d->c->conf.drill.start_command,
	                    "kasir-notifier");
}

static int
smtp_451(struct drill *d)
{
	return fake_mode(d, d->c->conf.drill.smtp_control, "/_fake/mode",
	                 "{\"mode\":\"temp\"}");
}

static int
smtp_normal(struct drill *d)
{
	return fake_mode(d, d->c->conf.drill.smtp_control, "/_fake/mode",
	                 "{\"mode\":\"normal\"}");
}

static int
snap_5xx(struct drill *d)
{
	return fake_mode(d, d->c->conf.drill.fake_midtrans, "/_fake/snap",
	                 "{\"mode\":\"5xx\",\"count\":-1,\"status\":503}");
}

static int
snap_normal(struct drill *d)
{
	return fake_mode(d, d->c->conf.drill.fake_midtrans, "/_fake/snap",
	                 "{\"mode\":\"normal\"}");
}

/* ---- drill orders -------------------------------------------------------- */

/* Creates a drill order; pay: pays it at the fake Midtrans too.  0 when
 * the order exists (even if Snap failed: ret_snap_ok says). */
static int
drill_order(struct drill *d, bool pay, bool *ret_snap_ok)
{
	const struct ctl_drill_conf *dc = &d->c->conf.drill;
	char url[512], name[32], id[64];
	char *resp = NULL, *body;
	long status = 0;
	cJSON *o, *cust;
	int rc;

	*ret_snap_ok = false;
	if (dc->api_url == NULL || dc->api_token.value == NULL ||
	    d->norders >= (int)ARRAY_SIZE(d->orders))
		return -ENOENT;
	snprintf(url, sizeof(url), "%s/v1/orders", dc->api_url);
	snprintf(name, sizeof(name), "Drill %s", d->def->scenario);
	if ((o = cJSON_CreateObject()) == NULL ||
	    !cJSON_AddStringToObject(o, "course_id", dc->course) ||
	    (cust = cJSON_AddObjectToObject(o, "customer")) == NULL ||
	    !cJSON_AddStringToObject(cust, "name", name) ||
	    !cJSON_AddStringToObject(cust, "email", "drill@example.com") ||
	    !cJSON_AddStringToObject(cust, "phone", "+6281200000000") ||
	    (body = cJSON_PrintUnformatted(o)) == NULL) {
		cJSON_Delete(o);
		return -ENOMEM;
	}
	cJSON_Delete(o);
	rc = drill_http("POST", url, body, dc->api_token.value, &status, &resp);
	cJSON_free(body);
	o = resp ? cJSON_Parse(resp) : NULL;
	free(resp);
	kasir_strlcpy(id, j_str(o, "order_id"), sizeof(id));
	cJSON_Delete(o);
	if (rc == 0 && status == 502) {
		/* Snap refused: the customer never sees a payment page (the
		 * order stays unpaid; kasir-order keeps its snap_error) */
		d->refused++;
		note(d, "drill order refused at checkout: HTTP 502 "
		        "snap_unavailable");
		return 0;
	}
	if (rc < 0 || status != 201 || !order_id_valid(id, 50)) {
		note(d, "drill order: POST /v1/orders -> %ld, no order id",
		     status);
		return KASIR_EPEER;
	}
	*ret_snap_ok = true;
	kasir_strlcpy(d->orders[d->norders++], id, sizeof(d->orders[0]));
	note(d, "drill order %s created: HTTP 201", id);
	if (pay && *ret_snap_ok) {
		snprintf(url, sizeof(url), "%s/_fake/orders/%s/pay",
		         dc->fake_midtrans, id);
		rc = drill_http("POST", url,
		                d->drop_notify ? "{\"notify\":\"drop\"}" : "{}",
		                NULL, &status, NULL);
		note(d, "drill order %s paid at the fake Midtrans%s: HTTP %ld",
		     id, d->drop_notify ? ", its notification dropped" : "",
		     status);
		if (rc < 0 || status >= 300)
			return KASIR_EPEER;
	}
	return 0;
}

static int
pay_orders(struct drill *d)
{
	bool ok;

	for (int i = 0; i < DRILL_ORDERS; i++)
		if (drill_order(d, true, &ok) < 0 || !ok)
			return KASIR_EPEER;
	return 0;
}

/* 6.1: customers keep trying; none reaches the payment page. */
static int
snap_attempts(struct drill *d)
{
	bool ok;

	for (int i = 0; i < 3; i++)
		if (drill_order(d, false, &ok) < 0)
			return KASIR_EPEER;
	return 0;
}

/* 6.1: customers keep trying while nobody has noticed (earlier successes
 * in the 30 min window need more failures before most attempts fail: the
 * drill must not depend on how much traffic the stack had just before, so
 * it does not stop after a fixed few; DRILL_REFUSED_MAX bounds it). */
static int
one_more_attempt(struct drill *d)
{
	bool ok;

	if (d->refused >= DRILL_REFUSED_MAX)
		return 0;
	return drill_order(d, false, &ok);
}

/* 6.1 after Snap answers again: every refused customer retries and pays
 * (the refused checkouts are not payments: nothing to lose there). */
static int
customers_retry(struct drill *d)
{
	bool ok;
	int n = d->refused > DRILL_ORDERS ? d->refused : DRILL_ORDERS;

	if (n > DRILL_ORDERS_MAX)
		n = DRILL_ORDERS_MAX;

	for (int i = 0; i < n; i++)
		if (drill_order(d, true, &ok) < 0 || !ok)
			return KASIR_EPEER;
	return 0;
}

/* An admin request to kasir-order about the first drill order (reason and
 * incident: the drill's). */
static int
order_call(struct drill *d, const char *cmd, const char *what)
{
	cJSON *args = cJSON_CreateObject(), *res = NULL;
	struct ctl_error err;
	int rc;

	if (args == NULL || d->norders == 0 ||
	    !cJSON_AddStringToObject(args, "order_id", d->orders[0])) {
		cJSON_Delete(args);
		return -ENOMEM;
	}
	rc = ctl_call(d->c, SVC_ORDER, cmd, args, 0, &res, &err);
	cJSON_Delete(args);
	if (rc < 0) {
		note(d, "%s %s: %s: %s", what, d->orders[0], err.code,
		     err.message);
		return rc;
	}
	note(d, "%s %s: ok", what, d->orders[0]);
	cJSON_Delete(res);
	return 0;
}

/* 6.2, before the fault: drill payments complete (PAID, access, receipt),
 * so the fault is the lost entitlement alone. */
static bool order_whole(struct drill *d, const char *id, char *why, size_t len);

/* Waits (drill.timeout) until every drill payment is whole. */
static int
settle(struct drill *d)
{
	int64_t end = now_real_ms() + d->c->conf.drill.timeout_ms;
	char why[200] = "";
	int whole = 0;

	while (now_real_ms() < end) {
		whole = 0;
		for (int i = 0; i < d->norders; i++)
			whole += order_whole(d, d->orders[i], why, sizeof(why));
		if (whole == d->norders)
			return 0;
		usleep(DRILL_POLL_MS * 1000);
	}
	note(d, "drill payments not complete: %s", why);
	return KASIR_EPEER;
}

static int
pay_and_settle(struct drill *d)
{
	if (pay_orders(d) < 0)
		return KASIR_EPEER;
	return settle(d);
}

/* 6.2: the first drill order's entitlement revoked through kasir-order's
 * audited drill.revoke_access (refused for any order not a drill's). */
static int
revoke_access(struct drill *d)
{
	return order_call(d, "drill.revoke_access",
	                  "kasirctl drill 6.2: "
	                  "access revoked (drill.revoke_access)");
}

/* 6.2's resolution: kasirctl access grant ORDER_ID under the incident. */
static int
grant_access(struct drill *d)
{
	return order_call(d, "access.grant", "kasirctl access grant");
}

static int
no_traffic(struct drill *d)
{
	(void)d;
	return 0;
}

/* 6.3: Midtrans's notifications stop arriving (as with a wrong
 * notification URL): the drill's payments are made, their notifications
 * dropped by the fake Midtrans. */
static int
drop_notifications(struct drill *d)
{
	d->drop_notify = true;
	note(d, "the fake Midtrans drops the notifications of the drill's "
	        "payments");
	return 0;
}

static int
silent_payments(struct drill *d)
{
	bool ok;

	for (int i = 0; i < 3; i++)
		if (drill_order(d, true, &ok) < 0 || !ok)
			return KASIR_EPEER;
	return 0;
}

static int
reconcile_mode(struct drill *d, const char *mode)
{
	cJSON *args = cJSON_CreateObject(), *res = NULL;
	struct ctl_error err;
	int rc;

	if (args == NULL || !cJSON_AddStringToObject(args, "mode", mode)) {
		cJSON_Delete(args);
		return -ENOMEM;
	}
	rc = ctl_call(d->c, SVC_RECONCILER, "mode.set", args, 0, &res, &err);
	cJSON_Delete(args);
	if (rc < 0) {
		note(d, "kasirctl reconcile-mode %s: %s: %s",
		     strcmp(mode, "normal") ? "on" : "off", err.code,
		     err.message);
		return rc;
	}
	note(d, "kasirctl reconcile-mode %s: mode %s (was %s)",
	     strcmp(mode, "normal") ? "on" : "off", j_str(res, "mode"),
	     j_str(res, "was"));
	cJSON_Delete(res);
	return 0;
}

/* 6.3's resolution (SOP step 4): switch to reconciliation. */
static int
reconcile_on(struct drill *d)
{
	return reconcile_mode(d, "reconcile");
}

/* 6.3 without --auto: has the operator switched to reconciliation? */
static int
reconcile_is_on(struct drill *d)
{
	cJSON *res = NULL;
	struct ctl_error err;
	int on;

	if (ctl_call(d->c, SVC_RECONCILER, "status", NULL, 0, &res, &err) < 0)
		return 0;
	on = strcmp(j_str(res, "mode"), "reconcile") == 0;
	cJSON_Delete(res);
	return on;
}

static int settle(struct drill *d);

/* 6.3 once the webhook works again: new payments notify as usual; when
 * reconciliation has completed the silent ones, the mode goes back to
 * normal (SOP: back to normal once webhooks arrive).  Without --auto the
 * operator switched it on and switches it off: the drill says when. */
static int
webhook_back(struct drill *d)
{
	d->drop_notify = false;
	if (pay_orders(d) < 0)
		return KASIR_EPEER;
	(void)settle(d);
	if (!d->auto_resolve) {
		note(d,
		     "webhooks arrive again and the silent payments are "
		     "complete: switch back now: kasirctl reconcile-mode off "
		     "--reason \"...\"");
		return 0;
	}
	return reconcile_mode(d, "normal");
}

/* ---- alert expressions (deploy/prometheus/kasir-alerts.yml) ---------------
 */

/* KasirDaemonDown: up{job="kasir-notifier"} == 0 (the scrape fails). */
static int
alert_daemon_down(struct drill *d, char *n, size_t len)
{
	char *page = NULL;
	int rc = drill_scrape(&d->c->conf, SVC_NOTIFIER, &page);

	free(page);
	if (rc == -ENOENT)
		return -ENOENT;
	snprintf(n, len, "up{job=\"kasir-notifier\"} = %d", rc == 0);
	return rc != 0;
}

/* KasirNotifierProviderFailing: max(kasir_notifier_oldest_failing_seconds)
 * > 600.  The threshold is an age: it holds 600 s after the first failure.
 * The drill measures when the age starts (> 0) and reports when the
 * expression holds (start + 600 s - age then). */
static int
alert_provider_failing(struct drill *d, char *n, size_t len)
{
	char *page = NULL;
	double v;

	if (drill_scrape(&d->c->conf, SVC_NOTIFIER, &page) < 0)
		return -ENOENT;
	v = drill_metric_sum(page, "kasir_notifier_oldest_failing_seconds",
	                     NULL);
	free(page);
	d->alert_value = v;
	/* the condition is the age counting: the rule's > 600 is reached
	 * 600 s after it started ("= 0 (> 600 ...)" read as a contradiction) */
	snprintf(n, len,
	         "kasir_notifier_oldest_failing_seconds started counting "
	         "(%.1f s now); it exceeds 600, so the alert fires, at T+%.0fs",
	         v, (double)(now_real_ms() - d->t0) / 1000.0 + 600.0 - v);
	return v > 0;
}

/* KasirSnapFailing: errors / max(errors + ok, 1) > 0.5 and (errors >= 3 or
 * ok == 0), increase() over the drill (shorter than its 30m window). */
static int
alert_snap_failing(struct drill *d, char *n, size_t len)
{
	char *page = NULL;
	double err, ok, tot;

	if (drill_scrape(&d->c->conf, SVC_ORDER, &page) < 0)
		return -ENOENT;
	err = drill_metric_sum(page, "kasir_snap_errors_total", NULL) -
	      d->base[0];
	ok = drill_metric_sum(page, "kasir_snap_ok_total", NULL) - d->base[1];
	free(page);
	tot = err + ok < 1 ? 1 : err + ok;
	snprintf(n, len,
	         "increase(kasir_snap_errors_total) = %.0f, "
	         "increase(kasir_snap_ok_total) = %.0f",
	         err, ok);
	return err / tot > 0.5 && (err >= 3 || ok == 0);
}

/* KasirPaidWithoutAccess: max(kasir_order_paid_without_access) > 0 (the
 * gauge kasir-order recounts every 15 s). */
static int
alert_paid_without_access(struct drill *d, char *n, size_t len)
{
	char *page = NULL;
	double v;

	if (drill_scrape(&d->c->conf, SVC_ORDER, &page) < 0)
		return -ENOENT;
	v = drill_metric_sum(page, "kasir_order_paid_without_access", NULL);
	free(page);
	snprintf(n, len, "kasir_order_paid_without_access = %.0f", v);
	return v > 0;
}

/* KasirWebhookSilence: increase(kasir_orders_created_total) >= 3 and
 * increase(kasir_ingest_stored_total) == 0, since the drill began (the
 * rule's window is 1h: a stack that stored notifications in the hour
 * before the drill fires later than measured here). */
static int
alert_webhook_silence(struct drill *d, char *n, size_t len)
{
	char *po = NULL, *pi = NULL;
	double created, stored;

	if (drill_scrape(&d->c->conf, SVC_ORDER, &po) < 0 ||
	    drill_scrape(&d->c->conf, SVC_INGEST, &pi) < 0) {
		free(po);
		free(pi);
		return -ENOENT;
	}
	created = drill_metric_sum(po, "kasir_orders_created_total", NULL) -
	          d->base[2];
	stored = drill_metric_sum(pi, "kasir_ingest_stored_total", NULL) -
	         d->base[3];
	free(po);
	free(pi);
	snprintf(n, len,
	         "increase(kasir_orders_created_total) = %.0f, "
	         "increase(kasir_ingest_stored_total) = %.0f",
	         created, stored);
	return created >= 3 && stored == 0;
}

static void
baseline(struct drill *d)
{
	char *page = NULL;

	if (drill_scrape(&d->c->conf, SVC_ORDER, &page) == 0) {
		d->base[0] =
		    drill_metric_sum(page, "kasir_snap_errors_total", NULL);
		d->base[1] =
		    drill_metric_sum(page, "kasir_snap_ok_total", NULL);
		d->base[2] =
		    drill_metric_sum(page, "kasir_orders_created_total", NULL);
	}
	free(page);
	page = NULL;
	if (drill_scrape(&d->c->conf, SVC_INGEST, &page) == 0)
		d->base[3] =
		    drill_metric_sum(page, "kasir_ingest_stored_total", NULL);
	free(page);
}

/* ---- resolutions (the finding's command) -----------------------------------
 */

static int
requeue(struct drill *d)
{
	cJSON *args = cJSON_CreateObject(), *res = NULL;
	struct ctl_error err;
	int rc;

	cJSON_AddBoolToObject(args, "dead", false);
	rc = ctl_call(d->c, SVC_NOTIFIER, "jobs.requeue", args, 0, &res, &err);
	cJSON_Delete(args);
	if (rc < 0) {
		note(d, "kasirctl notify requeue: %s: %s", err.code,
		     err.message);
		return rc;
	}
	note(d, "kasirctl notify requeue: %.0f job(s) requeued",
	     j_num(res, "requeued"));
	cJSON_Delete(res);
	return 0;
}

static int
none(struct drill *d)
{
	(void)d;
	return 0;
}

/* clang-format off */
static const struct drill_def drills[] = {
    {.scenario = "6.1", .title = "all payments failing",
     .fault = "the fake Midtrans answers every Snap request 503",
     .finding = "snap_outage", .alert = "KasirSnapFailing",
     .alert_for_ms = 5 * 60000, .needs = "",
     .inject = snap_5xx, .traffic = snap_attempts, .during = one_more_attempt, .alert_holds = alert_snap_failing,
     .end_fault = snap_normal, .resolve = none, .after = customers_retry},
    {.scenario = "6.2", .title = "paid without access",
     .fault = "a paid drill order's access revoked (kasir-order "
              "drill.revoke_access, audited)",
     .finding = "paid_without_access", .alert = "KasirPaidWithoutAccess",
     .alert_for_ms = 5 * 60000, .needs = "",
     .prepare = pay_and_settle, .inject = revoke_access,
     .traffic = no_traffic, .alert_holds = alert_paid_without_access,
     .resolve = grant_access},
    {.scenario = "6.3", .title = "webhook not arriving",
     .fault = "the fake Midtrans drops the drill payments' notifications",
     .finding = "webhook_silence", .alert = "KasirWebhookSilence",
     .alert_for_ms = 15 * 60000, .needs = "drill.metrics.ingest",
     .inject = drop_notifications, .traffic = silent_payments,
     .alert_holds = alert_webhook_silence, .resolve = reconcile_on,
     .operator_done = reconcile_is_on, .after = webhook_back},
    {.scenario = "6.4", .title = "notification not sent",
     .fault = "smtp-sink answers 451 to every message",
     .finding = "provider_failing", .alert = "KasirNotifierProviderFailing",
     .alert_for_ms = 0, .needs = "drill.smtp_control",
     .inject = smtp_451, .traffic = pay_orders, .alert_holds = alert_provider_failing,
     .end_fault = smtp_normal, .resolve = requeue},
    {.scenario = "6.5", .title = "worker down",
     .fault = "kasir-notifier stopped (drill.stop_command)",
     .finding = "notifier_answers", .alert = "KasirDaemonDown",
     .alert_for_ms = 2 * 60000,
     .needs = "drill.stop_command, drill.start_command",
     .inject = stop_notifier, .traffic = pay_orders, .alert_holds = alert_daemon_down,
     .end_fault = NULL, .resolve = start_notifier},
};
/* clang-format on */

static const struct drill_def *
drill_find(const char *scenario)
{
	for (size_t i = 0; i < ARRAY_SIZE(drills); i++)
		if (strcmp(drills[i].scenario, scenario) == 0)
			return &drills[i];
	return NULL;
}

const char *
drill_scenario_title(const char *scenario)
{
	const struct drill_def *def = drill_find(scenario);

	return def ? def->title : NULL;
}

/* ---- the run ---------------------------------------------------------------
 */

/* Everything def needs is configured (the check is made before any fault
 * is injected). */
static bool
configured(const struct ctl_conf *conf, const struct drill_def *def)
{
	const struct ctl_drill_conf *dc = &conf->drill;

	if (dc->api_url == NULL || dc->api_token.value == NULL ||
	    dc->fake_midtrans == NULL || dc->metrics[SVC_ORDER] == NULL ||
	    dc->metrics[SVC_NOTIFIER] == NULL)
		return false;
	if (strstr(def->needs, "smtp_control") && dc->smtp_control == NULL)
		return false;
	if (strstr(def->needs, "metrics.ingest") &&
	    dc->metrics[SVC_INGEST] == NULL)
		return false;
	if (strstr(def->needs, "stop_command") &&
	    (dc->stop_command == NULL || dc->start_command == NULL))
		return false;
	return true;
}

/* Whether doctor names this drill's finding with the scenario and
 * severity of the findings table; *ret_healthy: no P0/P1 at all. */
static bool
doctor_names(struct drill *d, bool *ret_healthy)
{
	cJSON *res = ctl_doctor_collect(d->c, NULL);
	const cJSON *f, *g;
	bool named = false;

	*ret_healthy = res && j_bool(res, "healthy");
	cJSON_ArrayForEach(f, cJSON_GetObjectItem(res, "findings"))
	{
		if (strcmp(j_str(f, "check"), d->def->finding) == 0 &&
		    strcmp(j_str(f, "scenario"), d->fdef->scenario) == 0 &&
		    strcmp(j_str(f, "severity"), d->fdef->severity) == 0)
			named = true;
		/* findings grouped under a root cause */
		cJSON_ArrayForEach(g, cJSON_GetObjectItem(f, "under"))
		{
			if (strcmp(j_str(g, "check"), d->def->finding) == 0)
				named = true;
		}
	}
	cJSON_Delete(res);
	return named;
}

static int64_t
timeout_at(struct drill *d)
{
	return now_real_ms() + d->c->conf.drill.timeout_ms;
}

/* Waits for detection: the alert expression and doctor. */
static void
detect(struct drill *d)
{
	int64_t end = timeout_at(d);
	char n[300] = "";
	bool healthy;

	while (now_real_ms() < end && (d->t_alert < 0 || d->t_doctor < 0)) {
		if (d->t_alert < 0 &&
		    d->def->alert_holds(d, n, sizeof(n)) == 1) {
			d->t_alert = now_real_ms();
			note(d, "alert %s: condition holds: %s", d->def->alert,
			     n);
		}
		if (d->t_doctor < 0 && doctor_names(d, &healthy)) {
			d->t_doctor = now_real_ms();
			note(d, "doctor names %s (%s, SOP %s)", d->def->finding,
			     d->fdef->severity, d->fdef->scenario);
		}
		if (d->t_alert < 0 || d->t_doctor < 0) {
			if (d->def->during)
				(void)d->def->during(d);
			usleep(DRILL_POLL_MS * 1000);
		}
	}
	if (d->t_alert < 0)
		note(d, "alert %s: expression never held (last: %s)",
		     d->def->alert, n);
	if (d->t_doctor < 0)
		note(d, "doctor never named %s", d->def->finding);
}

/* Every paid drill order: PAID, access active, receipt sent. */
static bool
order_whole(struct drill *d, const char *id, char *why, size_t len)
{
	cJSON *args = cJSON_CreateObject(), *o = NULL, *jobs = NULL;
	const cJSON *e;
	struct ctl_error err;
	bool access = false, receipt = false, paid;

	cJSON_AddStringToObject(args, "order_id", id);
	if (ctl_call(d->c, SVC_ORDER, "order.show", args, 0, &o, &err) < 0)
		o = NULL;
	if (ctl_call(d->c, SVC_NOTIFIER, "jobs.list", args, 0, &jobs, &err) < 0)
		jobs = NULL;
	cJSON_Delete(args);
	paid = strcmp(j_str(o, "status"), "PAID") == 0;
	cJSON_ArrayForEach(e, cJSON_GetObjectItem(o, "entitlements")) access =
	    access || j_bool(e, "active");
	cJSON_ArrayForEach(e, cJSON_GetObjectItem(jobs, "jobs")) receipt =
	    receipt || (strcmp(j_str(e, "kind"), "receipt") == 0 &&
	                strcmp(j_str(e, "state"), "sent") == 0);
	snprintf(why, len, "%s: status %s, access %s, receipt %s", id,
	         o ? j_str(o, "status") : "?", access ? "active" : "none",
	         receipt ? "sent" : "not sent");
	cJSON_Delete(o);
	cJSON_Delete(jobs);
	return paid && access && receipt;
}

/* Without --auto: waits (drill.timeout) until the operator has run the
 * finding's command (def->operator_done). */
static int
wait_operator(struct drill *d)
{
	int64_t end = timeout_at(d);

	while (now_real_ms() < end) {
		if (d->def->operator_done(d) == 1) {
			d->t_resolved = now_real_ms();
			note(d, "the operator resolved it: %s",
			     d->fdef->command);
			return 0;
		}
		usleep(DRILL_POLL_MS * 1000);
	}
	note(d, "the operator did not resolve it within %llds",
	     (long long)d->c->conf.drill.timeout_ms / 1000);
	return -1;
}

static void
wait_healthy(struct drill *d)
{
	int64_t end = timeout_at(d);
	char why[200];
	bool healthy = false, named = true;
	int whole = 0;

	while (now_real_ms() < end) {
		named = doctor_names(d, &healthy);
		whole = 0;
		for (int i = 0; i < d->norders; i++)
			whole += order_whole(d, d->orders[i], why, sizeof(why));
		if (!named && healthy && whole == d->norders)
			break;
		usleep(DRILL_POLL_MS * 1000);
	}
	if (!named && healthy && whole == d->norders) {
		d->t_healthy = now_real_ms();
		note(d,
		     "healthy: doctor has no P0/P1 and no %s; %d drill "
		     "payment(s) PAID with access and receipt",
		     d->def->finding, whole);
	} else {
		note(d,
		     "not healthy after %llds: doctor %s, %d of %d drill "
		     "payment(s) whole",
		     (long long)d->c->conf.drill.timeout_ms / 1000,
		     named ? "still names it" : "has P0/P1 findings", whole,
		     d->norders);
	}
	for (int i = 0; i < d->norders; i++) {
		if (!order_whole(d, d->orders[i], why, sizeof(why))) {
			d->lost++;
			cJSON_AddItemToArray(d->lost_list,
			                     cJSON_CreateString(why));
			note(d, "LOST: %s", why);
		}
	}
}

static void
secs(char *buf, size_t len, int64_t from, int64_t to)
{
	if (from <= 0 || to < 0)
		snprintf(buf, len, "never");
	else
		snprintf(buf, len, "%.1fs", (double)(to - from) / 1000.0);
}

static cJSON *
report(struct drill *d, bool ok)
{
	cJSON *r = cJSON_CreateObject();
	char inc[32], a[32], doc[32], res[32], hl[32], fired[64];

	snprintf(inc, sizeof(inc), "INC-%lld", (long long)d->incident);
	secs(a, sizeof(a), d->t0, d->t_alert);
	secs(doc, sizeof(doc), d->t0, d->t_doctor);
	secs(res, sizeof(res), d->t0, d->t_resolved);
	secs(hl, sizeof(hl), d->t0, d->t_healthy);
	if (d->t_alert < 0)
		snprintf(fired, sizeof(fired), "never");
	else if (strcmp(d->def->alert, "KasirNotifierProviderFailing") == 0)
		snprintf(fired, sizeof(fired), "%.1fs (age threshold 600s)",
		         (double)(d->t_alert - d->t0) / 1000.0 + 600.0 -
		             d->alert_value);
	else
		snprintf(fired, sizeof(fired), "%.1fs (for: %llds)",
		         (double)(d->t_alert - d->t0 + d->def->alert_for_ms) /
		             1000.0,
		         (long long)d->def->alert_for_ms / 1000);
	note(d,
	     "measured: alert condition %s, alert would fire %s, doctor %s, "
	     "resolved %s, healthy %s; drill payments %d, lost %d",
	     a, fired, doc, res, hl, d->norders, d->lost);
	cJSON_AddStringToObject(r, "scenario", d->def->scenario);
	cJSON_AddStringToObject(r, "title", d->def->title);
	cJSON_AddStringToObject(r, "incident", inc);
	cJSON_AddStringToObject(r, "severity", d->fdef->severity);
	cJSON_AddStringToObject(r, "finding", d->def->finding);
	cJSON_AddStringToObject(r, "alert", d->def->alert);
	cJSON_AddStringToObject(r, "command", d->fdef->command);
	cJSON_AddBoolToObject(r, "auto", d->auto_resolve);
#define MS(k, t)                                                               \
	cJSON_AddItemToObject(r, k,                                            \
	                      (t) < 0                                          \
	                          ? cJSON_CreateNull()                         \
	                          : cJSON_CreateNumber((double)((t)-d->t0)))
	MS("alert_condition_ms", d->t_alert);
	MS("doctor_ms", d->t_doctor);
	MS("resolved_ms", d->t_resolved);
	MS("healthy_ms", d->t_healthy);
#undef MS
	cJSON_AddStringToObject(r, "alert_would_fire", fired);
	cJSON_AddNumberToObject(r, "alert_for_ms",
	                        (double)d->def->alert_for_ms);
	cJSON_AddNumberToObject(r, "drill_orders", d->norders);
	cJSON_AddNumberToObject(r, "lost", d->lost);
	cJSON_AddItemToObject(r, "lost_orders", d->lost_list);
	d->lost_list = NULL;
	cJSON_AddBoolToObject(r, "passed", ok);
	cJSON_AddItemToObject(r, "timeline", d->timeline);
	d->timeline = NULL;
	out_text(d->c,
	         "\ndrill %s (%s): %s, %s\n"
	         "  alert %s condition held after %s; with its for: it would "
	         "have fired after %s\n"
	         "  doctor named %s (%s) after %s\n"
	         "  resolution: %s%s; resolved at %s, healthy after %s\n"
	         "  drill payments: %d, lost: %d\n",
	         d->def->scenario, d->def->title, inc, ok ? "PASSED" : "FAILED",
	         d->def->alert, a, fired, d->def->finding, d->fdef->severity,
	         doc, d->fdef->command, d->auto_resolve ? " (--auto)" : "", res,
	         hl, d->norders, d->lost);
	return r;
}

static int
close_incident(struct drill *d, bool ok)
{
	char impact[300], resolution[600], rc_text[300];
	const char *fields[INCIDENT_FIELDS];

	snprintf(rc_text, sizeof(rc_text), "drill: %s", d->def->fault);
	snprintf(impact, sizeof(impact),
	         "drill orders only: %d paid, %d lost%s", d->norders, d->lost,
	         ok ? "" : "; THE DRILL FAILED");
	snprintf(resolution, sizeof(resolution), "%s%s", d->fdef->command,
	         d->auto_resolve ? " (run by --auto)"
	                         : " (run by the operator)");
	fields[0] = rc_text;
	fields[1] = impact;
	fields[2] = resolution;
	fields[3] = "drill again within 90 days (SOP section 9)";
	fields[4] = d->c->user;
	fields[5] = "drill";
	return ops_incident_close(d->c, d->incident, fields);
}

static int
run(struct ctl *c, const struct drill_def *def, bool auto_resolve)
{
	struct drill d = {.c = c,
	                  .def = def,
	                  .auto_resolve = auto_resolve,
	                  .t_alert = -1,
	                  .t_doctor = -1,
	                  .t_resolved = -1,
	                  .t_healthy = -1};
	char title[CTL_TITLE_MAX];
	bool healthy, ok;
	cJSON *r;
	int rc;

	d.fdef = ctl_finding_def(def->finding);
	d.timeline = cJSON_CreateArray();
	d.lost_list = cJSON_CreateArray();
	if (d.fdef == NULL || d.timeline == NULL || d.lost_list == NULL) {
		cJSON_Delete(d.timeline);
		cJSON_Delete(d.lost_list);
		return CTL_EXIT_FAILED;
	}
	if (doctor_names(&d, &healthy)) {
		cJSON_Delete(d.timeline);
		cJSON_Delete(d.lost_list);
		return out_fail_local(c, "drill_not_clean", CTL_EXIT_FAILED,
		                      "doctor already reports %s: resolve it "
		                      "before drilling %s",
		                      def->finding, def->scenario);
	}
	if (!configured(&c->conf, def)) {
		cJSON_Delete(d.timeline);
		cJSON_Delete(d.lost_list);
		return out_fail_local(
		    c, "drill_not_configured", CTL_EXIT_USAGE,
		    "drill %s needs drill.api_url, drill.api_token_file, "
		    "drill.fake_midtrans, drill.metrics.order and "
		    "drill.metrics.notifier%s%s in %s",
		    def->scenario, def->needs[0] ? ", " : "", def->needs,
		    c->conf_source);
	}
	snprintf(title, sizeof(title), "drill %s: %s", def->scenario,
	         def->title);
	if (ops_incident_open(c, d.fdef->severity, title, "drill",
	                      &d.incident) < 0) {
		cJSON_Delete(d.timeline);
		cJSON_Delete(d.lost_list);
		return out_fail_local(c, "database_failed",
		                      CTL_EXIT_UNAVAILABLE, "%s",
		                      ops_last_error(c));
	}
	c->incident_id = d.incident; /* the audit row points to it */
	snprintf(c->incident, sizeof(c->incident), "INC-%lld",
	         (long long)d.incident);
	kasir_strlcpy(c->target, def->scenario, sizeof(c->target));
	out_text(c, "drill %s (%s): INC-%lld\n", def->scenario, def->title,
	         (long long)d.incident);
	note(&d, "scenario %s (%s, %s); fault: %s; reason: %s", def->scenario,
	     def->title, d.fdef->severity, def->fault,
	     c->reason ? c->reason : "-");
	baseline(&d);
	rc = def->prepare ? def->prepare(&d) : 0;
	d.t0 = now_real_ms();
	if (rc == 0)
		rc = def->inject(&d);
	if (rc == 0)
		rc = def->traffic(&d);
	if (rc == 0)
		detect(&d);
	/* the fault outside kasir ends either way; then the resolution */
	if (def->end_fault)
		(void)def->end_fault(&d);
	if (auto_resolve || rc != 0) {
		note(&d, "resolution: %s", d.fdef->command);
		if (def->resolve(&d) == 0)
			d.t_resolved = now_real_ms();
	} else {
		out_text(c,
		         "\n  RESOLVE IT NOW (the drill waits %llds): %s\n\n",
		         (long long)c->conf.drill.timeout_ms / 1000,
		         d.fdef->command);
		/* nothing of the drill's own may clear the finding before the
		 * operator has resolved it (6.3's new payments did at once) */
		if (def->operator_done && wait_operator(&d) < 0)
			rc = KASIR_EPEER;
	}
	if (rc == 0 && def->after && def->after(&d) < 0)
		note(&d, "drill orders after the fault failed");
	wait_healthy(&d);
	if (!auto_resolve && d.t_healthy > 0 && d.t_resolved < 0)
		d.t_resolved = d.t_healthy;
	ok = rc == 0 && d.t_alert > 0 && d.t_doctor > 0 && d.t_healthy > 0 &&
	     d.lost == 0 && d.norders > 0;
	r = report(&d, ok);
	if (close_incident(&d, ok) < 0)
		fprintf(stderr, "kasirctl: warning: INC-%lld not closed: %s\n",
		        (long long)d.incident, ops_last_error(c));
	cJSON_Delete(d.timeline);
	cJSON_Delete(d.lost_list);
	out_json_ok(c, r);
	if (!ok)
		c->result = "failed";
	return ok ? CTL_EXIT_OK : CTL_EXIT_FAILED;
}

int
cmd_drill_run(struct ctl *c, int argc, char **argv)
{
	const struct drill_def *def;
	bool auto_resolve = false;
	const char *scenario = NULL;
	int dep = ctl_deployment_parse(c->conf.deployment);

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--auto") == 0)
			auto_resolve = true;
		else if (scenario == NULL && argv[i][0] != '-')
			scenario = argv[i];
		else
			scenario = NULL, i = argc;
	}
	if (c->role != ADMIN_ROLE_ENGINEER)
		return out_fail_local(c, "role_required", CTL_EXIT_FAILED,
		                      "kasirctl drill run needs the engineer "
		                      "role");
	if (scenario == NULL)
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "usage: kasirctl drill run 6.1|6.2|6.3|"
		                      "6.4|6.5 [--auto] --reason TEXT");
	if (dep != CTL_DEPLOY_DEV && dep != CTL_DEPLOY_STAGING)
		return out_fail_local(
		    c, "drill_refused", CTL_EXIT_FAILED,
		    "refusing to drill: this kasirctl.yaml says deployment: "
		    "%s; drills run only on dev or staging (they stop daemons "
		    "and break the fakes)",
		    c->conf.deployment ? c->conf.deployment : "production");
	if ((def = drill_find(scenario)) == NULL)
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "no drill %.20s (kasirctl drill list)",
		                      scenario);
	/* each line as it happens, also into a pipe or a file (| tee):
	 * stdout is fully buffered there, and an operator saw nothing, not
	 * even RESOLVE IT NOW, until the drill had ended (an outside check,
	 * 2026-12-08).  Nothing was written to stdout before this. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	return run(c, def, auto_resolve);
}

int
cmd_drill_list(struct ctl *c, int argc, char **argv)
{
	cJSON *arr = cJSON_CreateArray();

	(void)argv;
	if (argc != 0)
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "usage: kasirctl drill list");
	out_text(c, "%-4s %-24s %-3s %-20s %-30s %s\n", "SOP", "SCENARIO",
	         "SEV", "FINDING", "ALERT (for:)", "FAULT");
	for (size_t i = 0; i < ARRAY_SIZE(drills); i++) {
		const struct drill_def *def = &drills[i];
		const struct ctl_finding_def *f = ctl_finding_def(def->finding);
		cJSON *o = cJSON_CreateObject();
		char alert[64];

		snprintf(alert, sizeof(alert), "%s (%llds)", def->alert,
		         (long long)def->alert_for_ms / 1000);
		out_text(c, "%-4s %-24s %-3s %-20s %-30s %s\n", def->scenario,
		         def->title, f ? f->severity : "?", def->finding, alert,
		         def->fault);
		cJSON_AddStringToObject(o, "scenario", def->scenario);
		cJSON_AddStringToObject(o, "title", def->title);
		cJSON_AddStringToObject(o, "severity", f ? f->severity : "?");
		cJSON_AddStringToObject(o, "finding", def->finding);
		cJSON_AddStringToObject(o, "alert", def->alert);
		cJSON_AddNumberToObject(o, "alert_for_ms",
		                        (double)def->alert_for_ms);
		cJSON_AddStringToObject(o, "fault", def->fault);
		cJSON_AddBoolToObject(o, "implemented", def->inject != NULL);
		cJSON_AddItemToArray(arr, o);
	}
	return out_json_ok(c, arr);
}
