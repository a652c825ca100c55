/*
 * access.c - kasirctl access grant ORDER_ID: re-issues a missing course
 * entitlement.  kasir-order decides (access.grant): only for an order PAID
 * with Midtrans evidence and without an active entitlement; it audits the
 * grant, or the refusal, in orders.audit.  There is deliberately no
 * command that sets an order PAID.
 */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "kasirctl.h"
#include "util.h"

#define ORDER_ID_MAX 50

int
cmd_access_grant(struct ctl *c, int argc, char **argv)
{
	cJSON *args, *res = NULL;
	int rc;

	if (argc != 1 || !order_id_valid(argv[0], ORDER_ID_MAX))
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "usage: kasirctl access grant ORDER_ID "
		                      "--reason TEXT [--incident INC-ID]");
	kasir_strlcpy(c->target, argv[0], sizeof(c->target));
	if ((args = cJSON_CreateObject()) == NULL ||
	    !cJSON_AddStringToObject(args, "order_id", argv[0])) {
		cJSON_Delete(args);
		return CTL_EXIT_FAILED;
	}
	rc = ctl_change(c, SVC_ORDER, "access.grant", args, 0, &res);
	if (rc != CTL_EXIT_OK)
		return rc;
	if (!c->json) {
		const cJSON *ents =
		    cJSON_GetObjectItemCaseSensitive(res, "entitlements");
		const cJSON *e;

		printf("access granted for order %s (%s, %s)\n", argv[0],
		       j_str(res, "course_id"), j_str(res, "customer_email"));
		cJSON_ArrayForEach(e, ents)
		{
			if (j_bool(e, "active"))
				printf("  entitlement: %s until %s\n",
				       j_str(e, "course_id"),
				       j_str(e, "valid_until")[0]
				           ? j_str(e, "valid_until")
				           : "lifetime");
		}
		printf("recorded: by %s (%s), reason: %s%s%s\n", c->user,
		       admin_role_name(c->role), c->reason ? c->reason : "-",
		       c->incident[0] ? ", incident " : "", c->incident);
	}
	return out_json_ok(c, res);
}
