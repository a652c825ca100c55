/*
 * order_find.c - kasirctl order find --email ADDR | --phone NUMBER |
 * --name TEXT [--limit N]: a customer's orders, newest first, from
 * kasir-order ("orders.find", support role).  Customers rarely know
 * their order id; support asks for the email or phone they paid with and
 * goes on with `kasirctl order show ID`, which the output names.
 *
 * The daemon decides what matches (email case-insensitive, phone with
 * +62 / 62 / 0 alike, name as a case-insensitive part) and bounds the
 * answer (20 by default, at most 100).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "kasirctl.h"
#include "util.h"

#define FIND_ARG_MAX 254

int
cmd_order_find(struct ctl *c, int argc, char **argv)
{
	static const char *const keys[] = {"email", "phone", "name"};
	const char *val[3] = {NULL, NULL, NULL}, *v, *limit = NULL;
	struct ctl_error err = {0};
	cJSON *args, *res = NULL, *rows;
	const cJSON *o;
	char *end = NULL;
	long lim = 0;
	int n, rc, cut;

	for (int i = 0; i < argc; i++) {
		bool matched = false;

		for (size_t k = 0; k < ARRAY_SIZE(keys) && !matched; k++) {
			char opt[16];

			snprintf(opt, sizeof(opt), "--%s", keys[k]);
			if ((v = opt_value(argc, argv, &i, opt)) != NULL) {
				val[k] = v;
				matched = true;
			}
		}
		if (matched)
			continue;
		if ((v = opt_value(argc, argv, &i, "--limit")) != NULL) {
			limit = v;
			continue;
		}
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "unexpected argument: %.64s", argv[i]);
	}
	if (val[0] == NULL && val[1] == NULL && val[2] == NULL)
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "usage: kasirctl order find --email ADDR "
		                      "| --phone NUMBER | --name TEXT "
		                      "[--limit 1..100]");
	for (size_t k = 0; k < ARRAY_SIZE(keys); k++)
		if (val[k] != NULL && !text_ok(val[k], FIND_ARG_MAX))
			return out_fail_local(c, "usage", CTL_EXIT_USAGE,
			                      "--%s: at most %d bytes of text",
			                      keys[k], FIND_ARG_MAX);
	if (limit != NULL) {
		lim = strtol(limit, &end, 10);
		if (end == limit || *end != '\0' || lim < 1 || lim > 100)
			return out_fail_local(c, "usage", CTL_EXIT_USAGE,
			                      "--limit: 1..100");
	}
	/* the audit row's target, a summary: cut to fit when it must (the
	 * result is taken so that GCC's -Wformat-truncation lets the cut be) */
	cut =
	    snprintf(c->target, sizeof(c->target), "find%s%.80s%s%.40s%s%.80s",
	             val[0] ? " email=" : "", val[0] ? val[0] : "",
	             val[1] ? " phone=" : "", val[1] ? val[1] : "",
	             val[2] ? " name=" : "", val[2] ? val[2] : "");
	(void)cut;
	c->target_service = ctl_svc_name(SVC_ORDER);
	if ((args = cJSON_CreateObject()) == NULL)
		return CTL_EXIT_FAILED;
	for (size_t k = 0; k < ARRAY_SIZE(keys); k++)
		if (val[k] != NULL &&
		    !cJSON_AddStringToObject(args, keys[k], val[k])) {
			cJSON_Delete(args);
			return CTL_EXIT_FAILED;
		}
	if (lim > 0 && !cJSON_AddNumberToObject(args, "limit", (double)lim)) {
		cJSON_Delete(args);
		return CTL_EXIT_FAILED;
	}
	rc = ctl_call(c, SVC_ORDER, "orders.find", args, 0, &res, &err);
	cJSON_Delete(args);
	if (rc < 0)
		return out_fail(c, &err);
	rows = cJSON_GetObjectItemCaseSensitive(res, "orders");
	n = cJSON_GetArraySize(rows);
	if (!c->json) {
		if (n == 0)
			printf("no order matches\n");
		else
			printf("%-24s %-10s %-22s %10s  %-24s %s\n", "ORDER",
			       "STATUS", "COURSE", "AMOUNT", "CREATED (UTC)",
			       "CUSTOMER");
		cJSON_ArrayForEach(o, rows)
		{
			printf("%-24s %-10s %-22s %10.0f  %-24s %s <%s> %s\n",
			       j_str(o, "order_id"), j_str(o, "status"),
			       j_str(o, "course_id"), j_num(o, "amount"),
			       j_str(o, "created_at"),
			       j_str(o, "customer_name"),
			       j_str(o, "customer_email"),
			       j_str(o, "customer_phone"));
		}
		if (j_bool(res, "more"))
			printf("(the newest %d shown; more match: narrow the "
			       "search or --limit 100)\n",
			       n);
		if (n > 0)
			printf("\ntimeline of one: kasirctl order show %s\n",
			       j_str(cJSON_GetArrayItem(rows, 0), "order_id"));
	}
	cJSON_AddStringToObject(res, "next",
	                        n > 0 ? "kasirctl order show ORDER_ID" : "");
	return out_json_ok(c, res);
}
