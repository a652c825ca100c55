/*
 * drill_history.c - kasirctl drill history: the last drill of each SOP
 * scenario, read from the incident records drills leave (detected_by
 * "drill", title "drill 6.N: ..."), and which are older than 90 days (SOP
 * section 9: drill at least once every three months) or never ran.
 * A drill that failed (its incident's impact says "THE DRILL FAILED", or
 * it was never closed: the drill did not finish) is shown as FAILED and
 * does not count: a scenario is overdue when its last PASSED drill is
 * older than 90 days.  Exit 1 when any scenario is overdue or its last
 * drill failed, so a timer can page on it.
 */
#include <stdio.h>
#include <string.h>

#include "cJSON.h"
#include "db.h"
#include "db_json.h"
#include "drill.h"
#include "util.h"

/* clang-format off */
static const struct db_stmt st_last_drills = {
    .name = "drill_history",
    .sql = "SELECT scenario, id, severity, title,"
           " to_char(opened_at AT TIME ZONE 'UTC',"
           "  'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS opened_at,"
           " closed_at IS NOT NULL AS closed, impact,"
           " (closed_at IS NOT NULL AND coalesce(impact, '')"
           "  NOT LIKE '%THE DRILL FAILED%') AS passed,"
           " floor(extract(epoch FROM now() - opened_at) / 86400)::int"
           "  AS age_days"
           " FROM (SELECT substring(title FROM '^drill (6\\.[1-5]):')"
           "  AS scenario, * FROM ops.incident WHERE detected_by = 'drill')"
           " AS d WHERE scenario IS NOT NULL"
           " ORDER BY scenario, opened_at DESC, id DESC",
    .nparams = 0,
};
/* clang-format on */

int
cmd_drill_history(struct ctl *c, int argc, char **argv)
{
	static const char *const scenarios[] = {"6.1", "6.2", "6.3", "6.4",
	                                        "6.5"};
	cJSON *rows, *out;
	int overdue = 0, failures = 0;

	(void)argv;
	if (argc != 0)
		return out_fail_local(c, "usage", CTL_EXIT_USAGE,
		                      "usage: kasirctl drill history");
	if ((rows = db_query_json(c->ops, &st_last_drills, NULL)) == NULL)
		return out_fail_local(c, "database_failed",
		                      CTL_EXIT_UNAVAILABLE, "%s",
		                      ops_last_error(c));
	out = cJSON_CreateArray();
	out_text(c, "%-4s %-22s %-10s %-21s %-6s %s\n", "SOP", "SCENARIO",
	         "INCIDENT", "LAST DRILL (UTC)", "AGE", "");
	for (size_t i = 0; i < ARRAY_SIZE(scenarios); i++) {
		const cJSON *r, *last = NULL, *passed = NULL;
		cJSON *o = cJSON_CreateObject();
		char inc[32] = "-", age[16] = "-", verdict[96];
		bool stale, failed;

		/* newest first: the last drill, and the last that passed */
		cJSON_ArrayForEach(r, rows)
		{
			if (strcmp(j_str(r, "scenario"), scenarios[i]) != 0)
				continue;
			if (last == NULL)
				last = r;
			if (passed == NULL && j_bool(r, "passed"))
				passed = r;
		}
		failed = last != NULL && last != passed;
		stale = passed == NULL ||
		        j_num(passed, "age_days") > DRILL_STALE_DAYS;
		overdue += stale;
		failures += failed;
		if (last) {
			snprintf(inc, sizeof(inc), "INC-%.0f",
			         j_num(last, "id"));
			snprintf(age, sizeof(age), "%.0fd",
			         j_num(last, "age_days"));
		}
		if (failed && passed != NULL)
			snprintf(verdict, sizeof(verdict),
			         "FAILED (last passed: INC-%.0f, %s)%s",
			         j_num(passed, "id"),
			         j_str(passed, "opened_at"),
			         stale ? "; OVERDUE (> 90 days)" : "");
		else if (failed)
			snprintf(verdict, sizeof(verdict),
			         "FAILED (none passed); OVERDUE");
		else
			snprintf(verdict, sizeof(verdict), "%s",
			         stale ? "OVERDUE (> 90 days)" : "ok");
		out_text(c, "%-4s %-22s %-10s %-21s %-6s %s\n", scenarios[i],
		         drill_scenario_title(scenarios[i]), inc,
		         last ? j_str(last, "opened_at") : "never", age,
		         verdict);
		cJSON_AddStringToObject(o, "scenario", scenarios[i]);
		cJSON_AddStringToObject(o, "title",
		                        drill_scenario_title(scenarios[i]));
		if (last) {
			cJSON_AddStringToObject(o, "incident", inc);
			cJSON_AddStringToObject(o, "at",
			                        j_str(last, "opened_at"));
			cJSON_AddNumberToObject(o, "age_days",
			                        j_num(last, "age_days"));
			cJSON_AddStringToObject(o, "impact",
			                        j_str(last, "impact"));
			cJSON_AddBoolToObject(o, "passed", !failed);
		} else {
			cJSON_AddNullToObject(o, "incident");
		}
		if (passed) {
			char pinc[32];

			snprintf(pinc, sizeof(pinc), "INC-%.0f",
			         j_num(passed, "id"));
			cJSON_AddStringToObject(o, "last_passed", pinc);
			cJSON_AddStringToObject(o, "last_passed_at",
			                        j_str(passed, "opened_at"));
		} else {
			cJSON_AddNullToObject(o, "last_passed");
		}
		cJSON_AddBoolToObject(o, "overdue", stale);
		cJSON_AddItemToArray(out, o);
	}
	cJSON_Delete(rows);
	out_json_ok(c, out);
	return overdue || failures ? CTL_EXIT_FAILED : CTL_EXIT_OK;
}
