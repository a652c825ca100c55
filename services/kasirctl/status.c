/*
 * status.c - kasirctl status: one screen for the first minute of an
 * incident.  Asks every configured daemon for "status" and puts the
 * answers together: up/down and version, stream lags, notification
 * backlog (and how long the oldest job has waited, provider failures
 * included), reconciliation mode, pending orders by age, orders paid in the
 * last hour, the last notification received.  Exits 3 (unavailable) when
 * any configured daemon does not answer, after printing everything.  A
 * daemon this user may not ask (socket permission, role none) is not
 * down: it is "no access" (exit 1), and when that is every daemon status
 * fails with that one message (ctl_no_access).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "kasirctl.h"
#include "util.h"

void
ctl_collect_status(struct ctl *c, cJSON *st[SVC_COUNT],
                   struct ctl_error err[SVC_COUNT])
{
	for (int s = 0; s < SVC_COUNT; s++) {
		st[s] = NULL;
		memset(&err[s], 0, sizeof(err[s]));
		if (c->conf.socket[s] == NULL)
			continue;
		if (ctl_call(c, (enum ctl_svc)s, "status", NULL, 0, &st[s],
		             &err[s]) < 0)
			st[s] = NULL;
	}
}

int
ctl_no_access(struct ctl *c, const struct ctl_error err[SVC_COUNT])
{
	const struct ctl_error *first = NULL;
	int configured = 0, denied = 0;
	struct ctl_error all;

	for (int s = 0; s < SVC_COUNT; s++) {
		if (c->conf.socket[s] == NULL)
			continue;
		configured++;
		if (ctl_error_access(&err[s])) {
			denied++;
			if (first == NULL)
				first = &err[s];
		}
	}
	if (configured == 0 || denied < configured)
		return -1;
	if (!c->json)
		for (int s = 0; s < SVC_COUNT; s++)
			if (c->conf.socket[s] != NULL && &err[s] != first)
				fprintf(stderr, "kasirctl: %s: %s [%s]\n",
				        err[s].service, err[s].message,
				        err[s].code);
	all = *first;
	kasir_strlcpy(all.service, CTL_NAME, sizeof(all.service));
	if (snprintf(all.message, sizeof(all.message),
	             "no access to the kasir daemons as %s (role %s): %s",
	             c->user, admin_role_name(c->role),
	             first->message) >= (int)sizeof(all.message))
		all.message[sizeof(all.message) - 1] = '\0'; /* cut */
	return out_fail(c, &all);
}

/* "down" or "no access" for what st[s] == NULL means in the text. */
static const char *
why_unknown(const struct ctl_error *err)
{
	return ctl_error_access(err) ? "no access" : "down";
}

/* One stream edge: producer head (as the producer says) vs the consumer's
 * cursor. */
static cJSON *
lag_row(const char *stream, enum ctl_svc prod, enum ctl_svc cons,
        const cJSON *head, const cJSON *cursor, bool consumer_up)
{
	cJSON *o = cJSON_CreateObject(), *zero = NULL;

	if (o == NULL)
		return NULL;
	/* a consumer that answers but has no cursor row yet has applied
	 * nothing: cursor 0 */
	if (consumer_up && !cJSON_IsNumber(cursor))
		cursor = zero = cJSON_CreateNumber(0);
	cJSON_AddStringToObject(o, "stream", stream);
	cJSON_AddStringToObject(o, "producer", ctl_svc_name(prod));
	cJSON_AddStringToObject(o, "consumer", ctl_svc_name(cons));
	if (cJSON_IsNumber(head) && cJSON_IsNumber(cursor)) {
		double lag = head->valuedouble - cursor->valuedouble;

		cJSON_AddNumberToObject(o, "head", head->valuedouble);
		cJSON_AddNumberToObject(o, "cursor", cursor->valuedouble);
		cJSON_AddNumberToObject(o, "lag", lag > 0 ? lag : 0);
	} else {
		cJSON_AddNullToObject(o, "head");
		cJSON_AddNullToObject(o, "cursor");
		cJSON_AddNullToObject(o, "lag");
	}
	cJSON_Delete(zero);
	return o;
}

cJSON *
ctl_stream_lags(cJSON *const st[SVC_COUNT])
{
	const cJSON *cursors =
	    cJSON_GetObjectItemCaseSensitive(st[SVC_ORDER], "stream_cursors");
	const cJSON *orders_head = cJSON_GetObjectItemCaseSensitive(
	    st[SVC_ORDER], "orders_stream_head");
	cJSON *arr = cJSON_CreateArray();

	if (arr == NULL)
		return NULL;
	cJSON_AddItemToArray(
	    arr, lag_row("ingest", SVC_INGEST, SVC_ORDER,
	                 cJSON_GetObjectItemCaseSensitive(st[SVC_INGEST],
	                                                  "stream_head"),
	                 cJSON_GetObjectItemCaseSensitive(cursors, "ingest"),
	                 st[SVC_ORDER] != NULL));
	cJSON_AddItemToArray(
	    arr, lag_row("recon", SVC_RECONCILER, SVC_ORDER,
	                 cJSON_GetObjectItemCaseSensitive(st[SVC_RECONCILER],
	                                                  "recon_head"),
	                 cJSON_GetObjectItemCaseSensitive(cursors, "recon"),
	                 st[SVC_ORDER] != NULL));
	for (int s = SVC_NOTIFIER; s <= SVC_RECONCILER; s++) {
		const cJSON *head = orders_head;

		if (!cJSON_IsNumber(head)) /* order down: what s heard */
			head = cJSON_GetObjectItemCaseSensitive(st[s],
			                                        "orders_head");
		cJSON_AddItemToArray(
		    arr, lag_row("orders", SVC_ORDER, (enum ctl_svc)s, head,
		                 cJSON_GetObjectItemCaseSensitive(
		                     st[s], "orders_cursor"),
		                 false));
	}
	return arr;
}

/* Sums the notifier's backlog rows {state, channel, jobs} per state. */
static double
backlog_count(const cJSON *notifier, const char *state)
{
	const cJSON *row;
	double n = 0;

	cJSON_ArrayForEach(
	    row, cJSON_GetObjectItemCaseSensitive(notifier, "backlog"))
	{
		if (strcmp(j_str(row, "state"), state) == 0)
			n += j_num(row, "jobs");
	}
	return n;
}

static void
print_text(struct ctl *c, cJSON *const st[SVC_COUNT],
           const struct ctl_error err[SVC_COUNT], const cJSON *lags)
{
	const cJSON *o = st[SVC_ORDER], *n = st[SVC_NOTIFIER];
	const cJSON *r = st[SVC_RECONCILER], *row, *w;
	char now[40], age[32];
	int64_t now_ms = now_real_ms(), t;

	time_rfc3339(now_ms, now, sizeof(now));
	printf("kasir status at %s (%s)\n\n", now, c->conf_source);
	printf("%-18s %-6s %-9s %s\n", "SERVICE", "STATE", "VERSION", "DETAIL");
	for (int s = 0; s < SVC_COUNT; s++) {
		if (c->conf.socket[s] == NULL)
			printf("%-18s %-6s %-9s %s\n", ctl_svc_name(s), "-",
			       "-", "not configured");
		else if (st[s] == NULL)
			printf("%-18s %-6s %-9s %s\n", ctl_svc_name(s),
			       ctl_error_access(&err[s]) ? "DENIED" : "DOWN",
			       "-", err[s].message);
		else
			printf("%-18s %-6s %-9s %s\n", ctl_svc_name(s), "up",
			       j_str(st[s], "version")[0]
			           ? j_str(st[s], "version")
			           : "-",
			       c->conf.socket[s]);
	}
	printf("\nstreams:\n");
	cJSON_ArrayForEach(row, lags)
	{
		if (cJSON_IsNull(cJSON_GetObjectItem(row, "lag")))
			printf("  %-7s %-16s -> %-16s unknown\n",
			       j_str(row, "stream"), j_str(row, "producer"),
			       j_str(row, "consumer"));
		else
			printf("  %-7s %-16s -> %-16s head %.0f cursor %.0f "
			       "lag %.0f\n",
			       j_str(row, "stream"), j_str(row, "producer"),
			       j_str(row, "consumer"), j_num(row, "head"),
			       j_num(row, "cursor"), j_num(row, "lag"));
	}
	if (n != NULL) {
		fmt_age((int64_t)(j_num(n, "oldest_due_s") * 1000), age,
		        sizeof(age));
		printf("\nnotifications: queued %.0f, retry %.0f, uncertain "
		       "%.0f, sending %.0f, dead %.0f; oldest due %s; "
		       "reminders %s\n",
		       backlog_count(n, "queued"), backlog_count(n, "retry"),
		       backlog_count(n, "uncertain"),
		       backlog_count(n, "sending"), backlog_count(n, "dead"),
		       age,
		       j_bool(n, "reminders_paused") ? "PAUSED" : "running");
		w = cJSON_GetObjectItemCaseSensitive(n, "waiting");
		if (j_num(w, "waiting_jobs") > 0) {
			fmt_age((int64_t)(j_num(w, "oldest_waiting_s") * 1000),
			        age, sizeof(age));
			printf("  waiting to go out: %.0f job(s), the oldest "
			       "for %s",
			       j_num(w, "waiting_jobs"), age);
			if (j_num(w, "failing_jobs") > 0) {
				fmt_age((int64_t)(j_num(w, "oldest_failing_s") *
				                  1000),
				        age, sizeof(age));
				printf("; %.0f after a provider failure, the "
				       "first %s ago: %.200s",
				       j_num(w, "failing_jobs"), age,
				       j_str(w, "first_error"));
			}
			printf("\n");
		}
	} else {
		printf("\nnotifications: unknown (kasir-notifier %s)\n",
		       why_unknown(&err[SVC_NOTIFIER]));
	}
	if (r != NULL) {
		const cJSON *p = cJSON_GetObjectItemCaseSensitive(r, "pending");

		fmt_age((int64_t)(j_num(p, "oldest_pending_s") * 1000), age,
		        sizeof(age));
		printf("reconciliation mode: %s%s\n", j_str(r, "mode"),
		       j_bool(r, "auth_broken")
		           ? " -- Status API REFUSES the server key"
		           : "");
		printf("pending orders: %.0f (<10m %.0f, 10m-1h %.0f, 1h-6h "
		       "%.0f, 6h-24h %.0f, >=24h %.0f; oldest %s)\n",
		       j_num(p, "pending"), j_num(p, "lt_10m"),
		       j_num(p, "10m_1h"), j_num(p, "1h_6h"),
		       j_num(p, "6h_24h"), j_num(p, "ge_24h"), age);
	} else {
		printf("reconciliation mode: unknown (kasir-reconciler "
		       "%s)\n",
		       why_unknown(&err[SVC_RECONCILER]));
	}
	if (o != NULL) {
		const char *last = j_str(o, "last_notification");

		printf("pending past expiry: %.0f\n",
		       j_num(o, "pending_past_expiry"));
		printf("orders paid in the last hour: %.0f\n",
		       j_num(o, "paid_last_hour"));
		if (last[0] != '\0' && ts_parse(last, &t) == 0) {
			fmt_age(now_ms - t, age, sizeof(age));
			printf("last notification received: %s (%s ago)\n",
			       last, age);
		} else {
			printf("last notification received: never\n");
		}
	} else {
		printf("orders: unknown (kasir-order %s)\n",
		       why_unknown(&err[SVC_ORDER]));
	}
}

int
cmd_status(struct ctl *c, int argc, char **argv)
{
	cJSON *st[SVC_COUNT], *out, *svcs, *lags;
	struct ctl_error err[SVC_COUNT];
	int down = 0, denied = 0, rc;

	(void)argv;
	if (argc != 0)
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "usage: kasirctl status");
	ctl_collect_status(c, st, err);
	if ((rc = ctl_no_access(c, err)) >= 0)
		return rc; /* nothing was asked: nothing else to print */
	lags = ctl_stream_lags(st);
	out = cJSON_CreateObject();
	svcs = cJSON_AddObjectToObject(out, "services");
	for (int s = 0; s < SVC_COUNT; s++) {
		cJSON *e = cJSON_AddObjectToObject(svcs, ctl_svc_name(s));

		if (c->conf.socket[s] == NULL) {
			cJSON_AddStringToObject(e, "state", "not_configured");
			continue;
		}
		cJSON_AddStringToObject(e, "socket", c->conf.socket[s]);
		if (st[s] == NULL && ctl_error_access(&err[s])) {
			denied++;
			cJSON_AddStringToObject(e, "state", "no_access");
			cJSON_AddStringToObject(e, "code", err[s].code);
			cJSON_AddStringToObject(e, "error", err[s].message);
			continue;
		}
		if (st[s] == NULL) {
			down++;
			cJSON_AddStringToObject(e, "state", "down");
			cJSON_AddStringToObject(e, "error", err[s].message);
			continue;
		}
		cJSON_AddStringToObject(e, "state", "up");
		cJSON_AddStringToObject(e, "version", j_str(st[s], "version"));
	}
	if (!c->json)
		print_text(c, st, err, lags);
	cJSON_AddItemToObject(out, "streams", lags);
	cJSON_AddNumberToObject(out, "services_down", down);
	cJSON_AddNumberToObject(out, "services_no_access", denied);
	for (int s = 0; s < SVC_COUNT; s++) {
		if (st[s] == NULL)
			continue;
		cJSON_AddItemToObject(
		    cJSON_GetObjectItem(svcs, ctl_svc_name(s)), "status",
		    st[s]);
	}
	if (!c->json && down > 0)
		printf(
		    "\n%d service(s) DOWN: kasirctl doctor says what to do\n",
		    down);
	if (!c->json && denied > 0)
		printf("\nno access to %d service(s) as %s (role %s): not "
		       "down, refused to you (DENIED above)\n",
		       denied, c->user, admin_role_name(c->role));
	rc = out_json_ok(c, out);
	/* anything down is not "ok" for scripts and monitoring; a daemon
	 * refused to this user is a refusal, not an outage */
	if (rc == CTL_EXIT_OK && down > 0)
		return CTL_EXIT_UNAVAILABLE;
	return rc == CTL_EXIT_OK && denied > 0 ? CTL_EXIT_FAILED : rc;
}
