/*
 * reconcile.c - kasirctl reconcile ORDER_ID | --pending and
 * reconcile-mode on|off: requests to kasir-reconciler, which asks the
 * Midtrans Status API and stores every answer as evidence (it never sets
 * a status itself: kasir-order applies the evidence).  The reconciler
 * audits each request, and each refusal, in recon.audit.
 */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "kasirctl.h"
#include "util.h"

#define ORDER_ID_MAX 50

int
cmd_reconcile(struct ctl *c, int argc, char **argv)
{
	cJSON *args, *res = NULL;
	bool pending;
	int rc;

	if (argc != 1 || (strcmp(argv[0], "--pending") != 0 &&
	                  !order_id_valid(argv[0], ORDER_ID_MAX)))
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "usage: kasirctl reconcile ORDER_ID | "
		                      "--pending  --reason TEXT");
	pending = strcmp(argv[0], "--pending") == 0;
	kasir_strlcpy(c->target, pending ? "pending" : argv[0],
	              sizeof(c->target));
	if ((args = cJSON_CreateObject()) == NULL ||
	    (!pending && !cJSON_AddStringToObject(args, "order_id", argv[0]))) {
		cJSON_Delete(args);
		return CTL_EXIT_FAILED;
	}
	rc = ctl_change(c, SVC_RECONCILER,
	                pending ? "reconcile.pending" : "reconcile.order", args,
	                c->conf.slow_timeout_ms, &res);
	if (rc != CTL_EXIT_OK)
		return rc;
	if (pending)
		out_text(c,
		         "%.0f pending order(s) queued for a Midtrans status "
		         "check now\n",
		         j_num(res, "queued"));
	else
		out_text(c,
		         "order %s queued for a Midtrans status check now "
		         "(reconciler sees it as %s%s)\n"
		         "follow it with: kasirctl order show %s\n",
		         argv[0], j_str(res, "status"),
		         j_bool(res, "final") ? ", final" : "", argv[0]);
	return out_json_ok(c, res);
}

int
cmd_reconcile_mode(struct ctl *c, int argc, char **argv)
{
	cJSON *args, *res = NULL;
	const char *mode;
	int rc;

	if (argc != 1 ||
	    (strcmp(argv[0], "on") != 0 && strcmp(argv[0], "off") != 0))
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "usage: kasirctl reconcile-mode on|off "
		                      "--reason TEXT");
	mode = strcmp(argv[0], "on") == 0 ? "reconcile" : "normal";
	kasir_strlcpy(c->target, mode, sizeof(c->target));
	if ((args = cJSON_CreateObject()) == NULL ||
	    !cJSON_AddStringToObject(args, "mode", mode)) {
		cJSON_Delete(args);
		return CTL_EXIT_FAILED;
	}
	rc = ctl_change(c, SVC_RECONCILER, "mode.set", args, 0, &res);
	if (rc != CTL_EXIT_OK)
		return rc;
	out_text(c, "reconciliation mode: %s (was %s)\n", j_str(res, "mode"),
	         j_str(res, "was"));
	return out_json_ok(c, res);
}
