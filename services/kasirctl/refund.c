/*
 * refund.c - kasirctl refund ORDER_ID [--amount N] --reason TEXT
 * [--incident INC-n]: asks kasir-reconciler, which owns every call to
 * Midtrans and its server key, to call the Refund API with a refund key it
 * stored first (a retry never refunds twice).  The reconciler refuses and
 * audits: the support role, an order that is not PAID, an amount above what
 * is left, another refund of the order still unclear.  Nothing changes the
 * order here: it becomes REFUNDED (or stays PAID, partially refunded) and
 * access is revoked only when Midtrans's notification and Status API
 * answer confirm it (docs/kasirctl.md, "refund").
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "kasirctl.h"
#include "util.h"

#define ORDER_ID_MAX 50
#define AMOUNT_MAX   10000000000000LL

int
cmd_refund(struct ctl *c, int argc, char **argv)
{
	const char *id = NULL, *amount_s = NULL;
	long long amount = 0;
	cJSON *args, *res = NULL;
	int rc;

	for (int i = 0; i < argc; i++) {
		const char *v;

		if ((v = opt_value(argc, argv, &i, "--amount")))
			amount_s = v;
		else if (id == NULL && argv[i][0] != '-')
			id = argv[i];
		else
			id = "";
	}
	if (amount_s != NULL) {
		char *end;

		errno = 0;
		amount = strtoll(amount_s, &end, 10);
		if (errno != 0 || *end != '\0' || amount <= 0 ||
		    amount > AMOUNT_MAX)
			id = "";
	}
	if (id == NULL || !order_id_valid(id, ORDER_ID_MAX))
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "usage: kasirctl refund ORDER_ID "
		                      "[--amount RUPIAH] --reason TEXT "
		                      "[--incident INC-n]");
	kasir_strlcpy(c->target, id, sizeof(c->target));
	if ((args = cJSON_CreateObject()) == NULL ||
	    !cJSON_AddStringToObject(args, "order_id", id) ||
	    (amount > 0 &&
	     !cJSON_AddNumberToObject(args, "amount", (double)amount))) {
		cJSON_Delete(args);
		return CTL_EXIT_FAILED;
	}
	rc = ctl_change(c, SVC_RECONCILER, "refund.order", args,
	                c->conf.slow_timeout_ms, &res);
	if (rc != CTL_EXIT_OK)
		return rc;
	out_text(c,
	         "Midtrans accepted the refund of %.0f for %s%s (refund key "
	         "%s: %s)\n"
	         "The order changes (REFUNDED, or PAID and partially "
	         "refunded) and access is revoked only when Midtrans's "
	         "notification and Status API confirm it; follow it with: "
	         "kasirctl order show %s\n",
	         j_num(res, "amount"), id,
	         j_bool(res, "retry") ? ", a retry of the same request" : "",
	         j_str(res, "refund_key"), j_str(res, "status_message"), id);
	return out_json_ok(c, res);
}
