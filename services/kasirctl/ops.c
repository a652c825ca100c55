/*
 * ops.c - the "ops" schema, kasirctl's own: ops.audit (every command run),
 * ops.incident and ops.incident_note.  Parameterized SQL only, as the
 * runtime role kasir_ctl.  The schema's migrations (services/kasirctl/
 * migrations) are applied on first use as kasir_ctl_owner when
 * database.migrate_url is configured.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "db.h"
#include "db_json.h"
#include "err.h"
#include "kasirctl.h"
#include "stream.h"
#include "util.h"

#define OPS_STR_(x)  #x
#define OPS_STR(x)   OPS_STR_(x)
#define OPS_LIST_MAX OPS_STR(CTL_LIST_MAX) /* rows of one listing */

int
ops_open(struct ctl *c, char *why, size_t why_len)
{
	struct db_conf dc = {
	    .url = c->conf.db_url,
	    .password = c->conf.db_password.value,
	    .application_name = CTL_NAME,
	    .connect_timeout_s = 5,
	    .statement_timeout_ms = 10000,
	};
	int r;

	if (c->ops_tried) {
		if (!c->ops_ok)
			snprintf(why, why_len,
			         "the ops database is unavailable");
		return c->ops_ok ? 0 : KASIR_EDB;
	}
	c->ops_tried = true;
	if (c->conf.db_url == NULL) {
		snprintf(why, why_len, "no ops database in %s (database.url)",
		         c->conf_source);
		return -ENOENT;
	}
	if ((r = db_open(&dc, &c->ops)) < 0 || (r = db_ensure(c->ops)) < 0) {
		/* the URL itself is not printed: it may hold a password */
		snprintf(why, why_len,
		         "ops database (database.url in %s) unreachable%s%s",
		         c->conf_source, c->ops ? ": " : "",
		         c->ops ? db_last_error(c->ops) : "");
		return KASIR_EDB;
	}
	if (c->conf.db_migrations != NULL &&
	    !db_migrations_applied(c->ops, CTL_SCHEMA, stream_migrations,
	                           STREAM_MIGRATIONS, c->conf.db_migrations)) {
		struct db_conf mc = dc;

		if (c->conf.db_migrate_url == NULL) {
			snprintf(why, why_len,
			         "the ops schema is not migrated and no "
			         "database.migrate_url is configured");
			return KASIR_EDB;
		}
		mc.url = c->conf.db_migrate_url;
		mc.password = c->conf.db_migrate_password.value;
		r = db_migrate(&mc, CTL_SCHEMA, CTL_ROLE, stream_migrations,
		               STREAM_MIGRATIONS, c->conf.db_migrations, why,
		               why_len);
		if (r < 0)
			return r;
	}
	c->ops_ok = true;
	return 0;
}

const char *
ops_last_error(struct ctl *c)
{
	return c->ops ? db_last_error(c->ops) : "no database";
}

static int
query_rows(struct ctl *c, const struct db_stmt *st, const char *const *p,
           cJSON **ret)
{
	PGresult *res = NULL;
	cJSON *rows;
	int r;

	if ((r = db_exec(c->ops, st, p, &res)) < 0)
		return r;
	rows = db_rows_json(res);
	PQclear(res);
	if (rows == NULL)
		return -ENOMEM;
	*ret = rows;
	return 0;
}

static const struct db_stmt st_audit = {
    .name = "ops_audit_insert",
    .sql = "INSERT INTO ops.audit (actor, role, command, changing, service,"
           " target, args, reason, incident_id, result, error)"
           " VALUES ($1, $2, $3, $4::bool, $5, $6, $7::jsonb, $8,"
           " $9::bigint, $10, $11)",
    .nparams = 11,
};

int
ops_audit(struct ctl *c)
{
	char why[256], inc[24];
	char *args = NULL;
	int r;

	if ((r = ops_open(c, why, sizeof(why))) < 0)
		return r;
	if (c->audit_args != NULL &&
	    (args = cJSON_PrintUnformatted(c->audit_args)) == NULL)
		return -ENOMEM;
	snprintf(inc, sizeof(inc), "%" PRId64, c->incident_id);
	{
		const char *p[11] = {
		    c->user,
		    admin_role_name(c->role),
		    c->command,
		    c->changing ? "true" : "false",
		    c->target_service,
		    c->target[0] ? c->target : NULL,
		    args,
		    c->reason,
		    c->incident_id > 0 ? inc : NULL,
		    c->result ? c->result : "failed",
		    c->error[0] ? c->error : NULL,
		};
		r = db_exec(c->ops, &st_audit, p, NULL);
	}
	free(args);
	return r;
}

/* clang-format off */
#define AUDIT_COLS                                                             \
	"id, " TS("at") " AS at, actor, role, command, changing, service,"     \
	" target, args, reason, incident_id, result, error"
/* clang-format on */

static const struct db_stmt st_audit_order = {
    .name = "ops_audit_order",
    .sql = "SELECT " AUDIT_COLS " FROM ops.audit WHERE target = $1"
           " AND changing ORDER BY id LIMIT " OPS_LIST_MAX,
    .nparams = 1,
};

int
ops_audit_for_order(struct ctl *c, const char *order_id, cJSON **ret)
{
	const char *p[1] = {order_id};

	return query_rows(c, &st_audit_order, p, ret);
}

static const struct db_stmt st_audit_incident = {
    .name = "ops_audit_incident",
    .sql = "SELECT " AUDIT_COLS " FROM ops.audit WHERE incident_id = $1"
           " ORDER BY id LIMIT " OPS_LIST_MAX,
    .nparams = 1,
};

int
ops_audit_for_incident(struct ctl *c, int64_t id, cJSON **ret)
{
	char s[24];
	const char *p[1] = {s};

	snprintf(s, sizeof(s), "%" PRId64, id);
	return query_rows(c, &st_audit_incident, p, ret);
}

int
ops_incident_parse(const char *s, int64_t *ret_id)
{
	char *end;
	long long v;

	if (s == NULL)
		return -EINVAL;
	if (strncmp(s, "INC-", 4) == 0 || strncmp(s, "inc-", 4) == 0)
		s += 4;
	if (*s < '1' || *s > '9' || strlen(s) > 15)
		return -EINVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v <= 0)
		return -EINVAL;
	*ret_id = (int64_t)v;
	return 0;
}

/* clang-format off */
static const struct db_stmt st_incident_get = {
    .name = "ops_incident_get",
    .sql = "SELECT 'INC-' || id AS id, severity, title,"
           " " TS("opened_at") " AS opened_at, opened_by,"
           " " TS("closed_at") " AS closed_at,"
           " closed_by, detected_by, root_cause, impact, resolution,"
           " preventive, owner,"
           " CASE WHEN closed_at IS NULL THEN 'open' ELSE 'closed'"
           " END AS state"
           " FROM ops.incident WHERE id = $1::bigint",
    .nparams = 1,
};
/* clang-format on */

int
ops_incident_get(struct ctl *c, int64_t id, cJSON **ret)
{
	char s[24];
	const char *p[1] = {s};
	cJSON *rows = NULL, *o;
	int r;

	snprintf(s, sizeof(s), "%" PRId64, id);
	if ((r = query_rows(c, &st_incident_get, p, &rows)) < 0)
		return r;
	o = cJSON_DetachItemFromArray(rows, 0);
	cJSON_Delete(rows);
	if (o == NULL)
		return KASIR_ENOTFOUND;
	*ret = o;
	return 0;
}

static const struct db_stmt st_incident_open = {
    .name = "ops_incident_open",
    .sql = "INSERT INTO ops.incident (severity, title, opened_by,"
           " detected_by) VALUES ($1, $2, $3, $4) RETURNING id",
    .nparams = 4,
};

int
ops_incident_open(struct ctl *c, const char *severity, const char *title,
                  const char *detected_by, int64_t *ret_id)
{
	const char *p[4] = {severity, title, c->user, detected_by};
	PGresult *res = NULL;
	int r;

	if ((r = db_exec(c->ops, &st_incident_open, p, &res)) < 0)
		return r;
	*ret_id = db_get_i64(res, 0, 0);
	PQclear(res);
	return 0;
}

static const struct db_stmt st_incident_note = {
    .name = "ops_incident_note",
    .sql = "INSERT INTO ops.incident_note (incident_id, actor, role, text)"
           " VALUES ($1::bigint, $2, $3, $4)",
    .nparams = 4,
};

int
ops_incident_note(struct ctl *c, int64_t id, const char *text)
{
	char s[24];
	const char *p[4] = {s, c->user, admin_role_name(c->role), text};

	snprintf(s, sizeof(s), "%" PRId64, id);
	return db_exec(c->ops, &st_incident_note, p, NULL);
}

static const struct db_stmt st_incident_close = {
    .name = "ops_incident_close",
    .sql = "UPDATE ops.incident SET closed_at = now(), closed_by = $2,"
           " root_cause = $3, impact = $4, resolution = $5, preventive = $6,"
           " owner = $7, detected_by = coalesce(detected_by, $8)"
           " WHERE id = $1::bigint AND closed_at IS NULL",
    .nparams = 8,
};

int
ops_incident_close(struct ctl *c, int64_t id,
                   const char *const fields[INCIDENT_FIELDS])
{
	char s[24];
	const char *p[8] = {s,         c->user,   fields[0], fields[1],
	                    fields[2], fields[3], fields[4], fields[5]};
	PGresult *res = NULL;
	int r;

	snprintf(s, sizeof(s), "%" PRId64, id);
	if ((r = db_exec(c->ops, &st_incident_close, p, &res)) < 0)
		return r;
	r = strcmp(PQcmdTuples(res), "1") == 0 ? 0 : KASIR_ECONFLICT;
	PQclear(res);
	return r;
}

/* clang-format off */
static const struct db_stmt st_incident_notes = {
    .name = "ops_incident_notes",
    .sql = "SELECT id, " TS("at") " AS at, actor, role, text"
           " FROM ops.incident_note WHERE incident_id = $1::bigint"
           " ORDER BY id LIMIT " OPS_LIST_MAX,
    .nparams = 1,
};
/* clang-format on */

int
ops_incident_notes(struct ctl *c, int64_t id, cJSON **ret)
{
	char s[24];
	const char *p[1] = {s};

	snprintf(s, sizeof(s), "%" PRId64, id);
	return query_rows(c, &st_incident_notes, p, ret);
}

/* clang-format off */
static const struct db_stmt st_incident_list = {
    .name = "ops_incident_list",
    .sql = "SELECT 'INC-' || id AS id, severity, title,"
           " " TS("opened_at") " AS opened_at, opened_by,"
           " " TS("closed_at") " AS closed_at, detected_by,"
           " CASE WHEN closed_at IS NULL THEN 'open' ELSE 'closed'"
           " END AS state"
           " FROM ops.incident WHERE $1::bool OR closed_at IS NULL"
           " ORDER BY id DESC LIMIT " OPS_LIST_MAX,
    .nparams = 1,
};
/* clang-format on */

int
ops_incident_list(struct ctl *c, bool all, cJSON **ret)
{
	const char *p[1] = {all ? "true" : "false"};

	return query_rows(c, &st_incident_list, p, ret);
}

/* Incidents naming an order: in their title, in a note, or through a
 * kasirctl command on the order run under them. */
static const struct db_stmt st_incidents_naming = {
    .name = "ops_incidents_naming",
    .sql = "SELECT i.id FROM ops.incident i"
           " WHERE strpos(i.title, $1) > 0"
           " OR EXISTS (SELECT 1 FROM ops.incident_note n"
           "  WHERE n.incident_id = i.id AND strpos(n.text, $1) > 0)"
           " OR EXISTS (SELECT 1 FROM ops.audit a"
           "  WHERE a.incident_id = i.id AND a.target = $1)"
           " ORDER BY i.id LIMIT 50",
    .nparams = 1,
};

int
ops_incidents_naming(struct ctl *c, const char *order_id, cJSON **ret)
{
	const char *p[1] = {order_id};

	return query_rows(c, &st_incidents_naming, p, ret);
}
