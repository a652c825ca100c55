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
 *
 * The range: --from is inclusive, --to exclusive, each one of
 *   YYYY-MM-DD     a day in Asia/Jakarta (WIB, UTC+7, like the order ids
 *                  KSR-YYYYMMDD-...) or in UTC with --utc; as --to, the
 *                  whole day is included (--from 2026-12-06 --to
 *                  2026-12-06 is that one day)
 *   RFC 3339       with Z or an offset: that instant
 *   now, -24h, -7d the current time, or that long before it
 * resolved here to RFC 3339 UTC instants, so the daemon's session time
 * zone never matters.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "csv.h"
#include "kasirctl.h"
#include "util.h"

#define TIME_ARG_MAX    40
#define WIB_OFFSET_MS   (7LL * 3600 * 1000) /* Asia/Jakarta: no DST */
#define DAY_MS          (24LL * 3600 * 1000)
#define RELATIVE_MAX_MS (3660LL * DAY_MS) /* -10y and a bit */

/*
 * Resolves one --from/--to argument (see the head of this file) to unix
 * ms.  end: the argument is --to (a date then means the end of that day).
 * utc: dates are UTC days, else WIB days.  0 or -EINVAL.
 */
static int
export_time(const char *s, bool end, bool utc, int64_t now_ms, int64_t *ret_ms)
{
	char buf[TIME_ARG_MAX + 16];
	int64_t ms;
	size_t l = strlen(s);

	if (l == 0 || l > TIME_ARG_MAX)
		return -EINVAL;
	if (strcmp(s, "now") == 0) {
		*ret_ms = now_ms;
		return 0;
	}
	if (s[0] == '-') { /* -24h, -7d, -90m */
		if (conf_parse_duration(s + 1, &ms) < 0 || ms <= 0 ||
		    ms > RELATIVE_MAX_MS)
			return -EINVAL;
		*ret_ms = now_ms - ms;
		return 0;
	}
	if (l == 10) { /* a date: 2026-12-06, midnight where the day is */
		snprintf(buf, sizeof(buf), "%sT00:00:00Z", s);
		if (ts_parse(buf, &ms) < 0)
			return -EINVAL;
		ms -= utc ? 0 : WIB_OFFSET_MS;
		*ret_ms = end ? ms + DAY_MS : ms;
		return 0;
	}
	if (ts_parse(s, &ms) < 0)
		return -EINVAL;
	*ret_ms = ms;
	return 0;
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
	char from_ts[40], to_ts[40];
	int64_t from_ms, to_ms, now_ms = now_real_ms();
	bool utc = false;
	enum ctl_svc svc;
	const char *cmd, *key;
	cJSON *args, *res = NULL;
	int rc;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--utc") == 0)
			utc = true;
		else if ((v = opt_value(argc, argv, &i, "--from")))
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
		                      "--from TIME --to TIME [--utc] "
		                      "--format csv");
	if (strcmp(format, "csv") != 0)
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "--format %.16s: only csv (or --json)",
		                      format);
	if (export_time(from, false, utc, now_ms, &from_ms) < 0 ||
	    export_time(to, true, utc, now_ms, &to_ms) < 0)
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "--from/--to: YYYY-MM-DD (a day in WIB, "
		                      "UTC with --utc), RFC 3339 with a zone "
		                      "(2026-11-01T00:00:00+07:00), now, or a "
		                      "time before now (-24h, -7d)");
	if (to_ms <= from_ms)
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "--to is not after --from");
	time_rfc3339(from_ms, from_ts, sizeof(from_ts));
	time_rfc3339(to_ms, to_ts, sizeof(to_ts));
	if (strcmp(what, "orders") == 0) {
		svc = SVC_ORDER;
		cmd = "export.orders";
		key = "orders";
	} else {
		svc = SVC_INGEST;
		cmd = "export.events";
		key = "events";
	}
	snprintf(c->target, sizeof(c->target), "%s %s..%s", what, from_ts,
	         to_ts);
	args = cJSON_CreateObject();
	if (args == NULL || !cJSON_AddStringToObject(args, "from", from_ts) ||
	    !cJSON_AddStringToObject(args, "to", to_ts)) {
		cJSON_Delete(args);
		return CTL_EXIT_FAILED;
	}
	rc = ctl_change(c, svc, cmd, args, c->conf.slow_timeout_ms, &res);
	if (rc != CTL_EXIT_OK)
		return rc;
	if (!c->json) {
		const cJSON *rows = cJSON_GetObjectItemCaseSensitive(res, key);

		csv_write(rows);
		fprintf(stderr,
		        "kasirctl: exported %d %s from %s to %s (UTC; %s "
		        "days)\n",
		        cJSON_GetArraySize(rows), what, from_ts, to_ts,
		        utc ? "UTC" : "WIB");
	}
	cJSON_AddStringToObject(res, "from", from_ts);
	cJSON_AddStringToObject(res, "to", to_ts);
	cJSON_AddStringToObject(res, "days", utc ? "UTC" : "Asia/Jakarta");
	return out_json_ok(c, res);
}
