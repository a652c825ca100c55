/*
 * notify.c - kasirctl notify resend|requeue|decide and reminders
 * pause|resume: requests to kasir-notifier, which refuses a receipt for an
 * order that is not PAID and audits every change and refusal in
 * notify.audit.  An uncertain send (it may have reached the customer) is
 * never requeued in bulk: `notify decide JOB_ID resend|delivered` decides
 * one job at a time.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "kasirctl.h"
#include "util.h"

#define ORDER_ID_MAX 50

int
cmd_notify_resend(struct ctl *c, int argc, char **argv)
{
	const char *order_id = NULL, *kind = NULL, *v;
	cJSON *args, *res = NULL;
	const cJSON *j;
	int rc;

	for (int i = 0; i < argc; i++) {
		if ((v = opt_value(argc, argv, &i, "--kind")))
			kind = v;
		else if (order_id == NULL && argv[i][0] != '-')
			order_id = argv[i];
		else
			return out_fail_local(c, "usage", CTL_EXIT_USAGE,
			                      "unexpected argument: %.64s",
			                      argv[i]);
	}
	if (order_id == NULL || !order_id_valid(order_id, ORDER_ID_MAX) ||
	    kind == NULL)
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "usage: kasirctl notify resend ORDER_ID "
		                      "--kind receipt --reason TEXT");
	kasir_strlcpy(c->target, order_id, sizeof(c->target));
	if (strcmp(kind, "receipt") != 0)
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "--kind %.32s: only receipts are resent "
		                      "by hand (--kind receipt)",
		                      kind);
	if ((args = cJSON_CreateObject()) == NULL ||
	    !cJSON_AddStringToObject(args, "order_id", order_id)) {
		cJSON_Delete(args);
		return CTL_EXIT_FAILED;
	}
	rc = ctl_change(c, SVC_NOTIFIER, "receipt.resend", args, 0, &res);
	if (rc != CTL_EXIT_OK)
		return rc;
	if (!c->json) {
		printf("receipt of order %s queued again:\n", order_id);
		cJSON_ArrayForEach(
		    j, cJSON_GetObjectItemCaseSensitive(res, "jobs"))
		    printf("  job %.0f  %s (variant %.0f)\n", j_num(j, "id"),
		           j_str(j, "channel"), j_num(j, "variant"));
	}
	return out_json_ok(c, res);
}

/*
 * --dead found nothing, but jobs failing against a provider that refuses
 * for now (SMTP 451) are in "retry", not "dead": say so and give the
 * command that retries them (the runbook once said --dead there, which
 * requeued 0 and exited 0: an outside check, 2026-12-08).  Adds
 * "retry_waiting" to res; a notifier that does not answer status adds
 * nothing.
 */
static void
retry_hint(struct ctl *c, cJSON *res, const char *channel)
{
	struct ctl_error err;
	cJSON *st = NULL;
	const cJSON *row;
	double n = 0;

	if (ctl_call(c, SVC_NOTIFIER, "status", NULL, 0, &st, &err) < 0)
		return;
	cJSON_ArrayForEach(row, cJSON_GetObjectItemCaseSensitive(st, "backlog"))
	{
		if (strcmp(j_str(row, "state"), "retry") == 0 &&
		    (channel == NULL ||
		     strcmp(j_str(row, "channel"), channel) == 0))
			n += j_num(row, "jobs");
	}
	cJSON_Delete(st);
	cJSON_AddNumberToObject(res, "retry_waiting", n);
	if (n > 0 && !c->json)
		fprintf(stderr,
		        "kasirctl: no dead job, but %.0f job(s)%s%s wait for a "
		        "retry (state retry, not dead: a provider failure "
		        "that is retried); to retry them now: kasirctl notify "
		        "requeue%s%s --reason \"...\" (without --dead)\n",
		        n, channel ? " on " : "", channel ? channel : "",
		        channel ? " --channel " : "", channel ? channel : "");
}

int
cmd_notify_requeue(struct ctl *c, int argc, char **argv)
{
	const char *order_id = NULL, *channel = NULL, *v;
	bool dead = false;
	cJSON *args, *res = NULL;
	int rc;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--dead") == 0)
			dead = true;
		else if ((v = opt_value(argc, argv, &i, "--order")))
			order_id = v;
		else if ((v = opt_value(argc, argv, &i, "--channel")))
			channel = v;
		else
			return out_fail_local(
			    c, "usage", CTL_EXIT_USAGE,
			    "usage: kasirctl notify requeue [--dead] "
			    "[--order ID] [--channel email|whatsapp] "
			    "--reason TEXT");
	}
	if ((order_id && !order_id_valid(order_id, ORDER_ID_MAX)) ||
	    (channel && strcmp(channel, "email") != 0 &&
	     strcmp(channel, "whatsapp") != 0))
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "--order: an order id; --channel: email "
		                      "or whatsapp");
	if (order_id)
		kasir_strlcpy(c->target, order_id, sizeof(c->target));
	args = cJSON_CreateObject();
	if (args == NULL || !cJSON_AddBoolToObject(args, "dead", dead) ||
	    (order_id &&
	     !cJSON_AddStringToObject(args, "order_id", order_id)) ||
	    (channel && !cJSON_AddStringToObject(args, "channel", channel))) {
		cJSON_Delete(args);
		return CTL_EXIT_FAILED;
	}
	rc = ctl_change(c, SVC_NOTIFIER, "jobs.requeue", args, 0, &res);
	if (rc != CTL_EXIT_OK)
		return rc;
	out_text(c, "%.0f %s job(s) requeued%s%s%s%s\n", j_num(res, "requeued"),
	         dead ? "dead" : "waiting (retry)",
	         order_id ? " for order " : "", order_id ? order_id : "",
	         channel ? " on " : "", channel ? channel : "");
	if (dead && j_num(res, "requeued") == 0)
		retry_hint(c, res, channel);
	return out_json_ok(c, res);
}

int
cmd_notify_decide(struct ctl *c, int argc, char **argv)
{
	const char *job = NULL, *decision = NULL;
	cJSON *args, *res = NULL;
	char *end = NULL;
	long long id = 0;
	int rc;

	if (argc == 2) {
		job = argv[0];
		decision = argv[1];
	}
	if (job != NULL) {
		errno = 0;
		id = strtoll(job, &end, 10);
	}
	if (job == NULL || decision == NULL || errno != 0 || end == job ||
	    *end != '\0' || id < 1 || id > 9007199254740991LL ||
	    (strcmp(decision, "resend") != 0 &&
	     strcmp(decision, "delivered") != 0))
		return out_fail_local(
		    c, "usage", CTL_EXIT_USAGE,
		    "usage: kasirctl notify decide JOB_ID resend|delivered "
		    "--reason TEXT (an uncertain send: resend it once more, "
		    "or close it as delivered)");
	kasir_strlcpy(c->target, job, sizeof(c->target));
	if ((args = cJSON_CreateObject()) == NULL ||
	    !cJSON_AddNumberToObject(args, "job_id", (double)id) ||
	    !cJSON_AddStringToObject(args, "decision", decision)) {
		cJSON_Delete(args);
		return CTL_EXIT_FAILED;
	}
	rc = ctl_change(c, SVC_NOTIFIER, "jobs.decide", args, 0, &res);
	if (rc != CTL_EXIT_OK)
		return rc;
	out_text(c, "job %s of order %s: %s (now %s)\n", job,
	         j_str(res, "order_id"), decision, j_str(res, "state"));
	return out_json_ok(c, res);
}

int
cmd_reminders(struct ctl *c, int argc, char **argv)
{
	cJSON *res = NULL;
	bool pause;
	int rc;

	if (argc != 1 ||
	    (strcmp(argv[0], "pause") != 0 && strcmp(argv[0], "resume") != 0))
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "usage: kasirctl reminders pause|resume "
		                      "--reason TEXT");
	pause = strcmp(argv[0], "pause") == 0;
	kasir_strlcpy(c->target, argv[0], sizeof(c->target));
	rc = ctl_change(c, SVC_NOTIFIER,
	                pause ? "reminders.pause" : "reminders.resume", NULL, 0,
	                &res);
	if (rc != CTL_EXIT_OK)
		return rc;
	out_text(c, "payment reminders %s (were %s)\n",
	         j_bool(res, "reminders_paused") ? "paused" : "running",
	         j_bool(res, "was_paused") ? "paused" : "running");
	return out_json_ok(c, res);
}
