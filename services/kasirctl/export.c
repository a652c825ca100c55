/*
 * export.c - kasirctl export orders|events --from T --to T --format csv:
 * data for finance and audit, from the owning daemon (kasir-order
 * "export.orders", kasir-ingest "export.events"), engineer role (the
 * daemon checks it and audits the export).
 *
 * CSV (RFC 4180): a header row with the daemon's column names, CRLF line
 * ends, every text cell quoted and guarded against formulas (csv.c:
 * phone numbers "+62..." read '+62..., "Budi;=1+1" reads 'Budi;=1+1);
 * numbers and booleans bare.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "csv.h"
#include "kasirctl.h"
#include "util.h"

#define TIME_ARG_MAX 40

/* A time for the daemon's ::timestamptz: a date or RFC 3339. */
static bool
time_arg_ok(const char *s)
{
	char buf[TIME_ARG_MAX + 16];
	int64_t ms;
	size_t l = strlen(s);

	if (l > TIME_ARG_MAX)
		return false;
	if (l == 10) { /* a date: 2026-11-01 */
		snprintf(buf, sizeof(buf), "%sT00:00:00Z", s);
		return ts_parse(buf, &ms) == 0;
	}
	return ts_parse(s, &ms) == 0;
}

static void
csv_field(const cJSON *v)
{
	if (v == NULL || cJSON_IsNull(v))
		return;
	if (cJSON_IsBool(v)) {
		fputs(cJSON_IsTrue(v) ? "true" : "false", stdout);
	} else if (cJSON_IsNumber(v)) {
		double d = v->valuedouble;

		if (d == floor(d) && fabs(d) < 9e15)
			printf("%.0f", d);
		else
			printf("%.17g", d);
	} else if (cJSON_IsString(v)) {
		csv_write_text(stdout, v->valuestring);
	} else {
		/* nested JSON: as its text, quoted */
		char *t = cJSON_PrintUnformatted(v);
		cJSON *tmp = t ? cJSON_CreateString(t) : NULL;

		csv_field(tmp);
		cJSON_Delete(tmp);
		cJSON_free(t);
	}
}

static void
csv_write(const cJSON *rows)
{
	const cJSON *first = cJSON_GetArrayItem(rows, 0), *col, *row;

	if (first == NULL)
		return;
	cJSON_ArrayForEach(col, first)
	{
		cJSON *name = cJSON_CreateString(col->string);

		if (col != first->child)
			fputc(',', stdout);
		csv_field(name);
		cJSON_Delete(name);
	}
	fputs("\r\n", stdout);
	cJSON_ArrayForEach(row, rows)
	{
		cJSON_ArrayForEach(col, first)
		{
			if (col != first->child)
				fputc(',', stdout);
			csv_field(
			    cJSON_GetObjectItemCaseSensitive(row, col->string));
		}
		fputs("\r\n", stdout);
	}
}

int
cmd_export(struct ctl *c, int argc, char **argv)
{
	const char *what = NULL, *from = NULL, *to = NULL, *format = "csv", *v;
	enum ctl_svc svc;
	const char *cmd, *key;
	cJSON *args, *res = NULL;
	int rc;

	for (int i = 0; i < argc; i++) {
		if ((v = opt_value(argc, argv, &i, "--from")))
			from = v;
		else if ((v = opt_value(argc, argv, &i, "--to")))
			to = v;
		else if ((v = opt_value(argc, argv, &i, "--format")))
			format = v;
		else if (what == NULL && argv[i][0] != '-')
			what = argv[i];
		else
			return out_fail_local(c, "usage", CTL_EXIT_USAGE,
			                      "unexpected argument: %.64s",
			                      argv[i]);
	}
	if (what == NULL || from == NULL || to == NULL ||
	    (strcmp(what, "orders") != 0 && strcmp(what, "events") != 0))
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "usage: kasirctl export orders|events "
		                      "--from TIME --to TIME --format csv");
	if (strcmp(format, "csv") != 0)
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "--format %.16s: only csv (or --json)",
		                      format);
	if (!time_arg_ok(from) || !time_arg_ok(to))
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "--from/--to: YYYY-MM-DD or RFC 3339 "
		                      "(2026-11-01T00:00:00Z)");
	if (strcmp(what, "orders") == 0) {
		svc = SVC_ORDER;
		cmd = "export.orders";
		key = "orders";
	} else {
		svc = SVC_INGEST;
		cmd = "export.events";
		key = "events";
	}
	snprintf(c->target, sizeof(c->target), "%s %s..%s", what, from, to);
	args = cJSON_CreateObject();
	if (args == NULL || !cJSON_AddStringToObject(args, "from", from) ||
	    !cJSON_AddStringToObject(args, "to", to)) {
		cJSON_Delete(args);
		return CTL_EXIT_FAILED;
	}
	rc = ctl_change(c, svc, cmd, args, c->conf.slow_timeout_ms, &res);
	if (rc != CTL_EXIT_OK)
		return rc;
	if (!c->json) {
		const cJSON *rows = cJSON_GetObjectItemCaseSensitive(res, key);

		csv_write(rows);
		fprintf(stderr, "kasirctl: exported %d %s\n",
		        cJSON_GetArraySize(rows), what);
	}
	return out_json_ok(c, res);
}
