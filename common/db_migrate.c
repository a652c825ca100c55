/*
 * db_migrate.c - the migration runner (db_migrate, db.h): built-in
 * migrations handed over by the caller (the backbone's, stream.h), then
 * the *.sql files of a directory, each once, under an advisory lock.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db_impl.h"
#include "err.h"
#include "log.h"

#define DB_MIGRATION_MAX  (1024 * 1024) /* bytes per migration file */
#define DB_MIGRATIONS_MAX 1000          /* files per directory */

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* The versions (file names without ".sql") of dir's regular *.sql files,
 * sorted by strcmp.  On success *ret_names (free_names) and *ret_n. */
static int
list_migrations(const char *dir, char ***ret_names, size_t *ret_n)
{
	DIR *d;
	struct dirent *e;
	char **names = NULL;
	size_t n = 0;
	int rc = 0;

	if (dir == NULL) {
		*ret_names = NULL;
		*ret_n = 0;
		return 0;
	}
	d = opendir(dir);
	if (d == NULL)
		return -errno;
	names = calloc(DB_MIGRATIONS_MAX, sizeof(*names));
	if (names == NULL) {
		closedir(d);
		return -ENOMEM;
	}
	while ((e = readdir(d)) != NULL) {
		size_t len = strlen(e->d_name);
		struct stat sb;

		if (len <= 4 || strcmp(e->d_name + len - 4, ".sql") != 0 ||
		    e->d_name[0] == '.')
			continue;
		if (fstatat(dirfd(d), e->d_name, &sb, 0) < 0 ||
		    !S_ISREG(sb.st_mode))
			continue;
		if (n == DB_MIGRATIONS_MAX) {
			rc = KASIR_ETOOBIG;
			break;
		}
		names[n] = strndup(e->d_name, len - 4);
		if (names[n] == NULL) {
			rc = -ENOMEM;
			break;
		}
		n++;
	}
	closedir(d);
	if (rc < 0) {
		free_names(names, n);
		return rc;
	}
	qsort(names, n, sizeof(*names), cmp_names);
	*ret_names = names;
	*ret_n = n;
	return 0;
}

static int
read_file(const char *dir, const char *version, char **ret)
{
	char path[4096];
	struct stat sb;
	char *buf;
	ssize_t got = 0;
	size_t off = 0;
	int fd, rc;

	snprintf(path, sizeof(path), "%s/%s.sql", dir, version);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &sb) < 0) {
		rc = -errno;
		goto out_close;
	}
	if (sb.st_size > DB_MIGRATION_MAX) {
		rc = KASIR_ETOOBIG;
		goto out_close;
	}
	buf = malloc((size_t)sb.st_size + 1);
	if (buf == NULL) {
		rc = -ENOMEM;
		goto out_close;
	}
	while (off < (size_t)sb.st_size) {
		got = read(fd, buf + off, (size_t)sb.st_size - off);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		off += (size_t)got;
	}
	/* A read error or a file shorter than it said: never run (and
	 * record as applied) part of a migration. */
	if (off != (size_t)sb.st_size) {
		rc = got < 0 ? -errno : -EIO;
		free(buf);
		goto out_close;
	}
	buf[off] = '\0';
	*ret = buf;
	rc = 0;
out_close:
	close(fd);
	return rc;
}

/* Runs sql on pg; 0, KASIR_EDB (connection) or KASIR_ESQL with why set. */
static int
mig_exec(PGconn *pg, const char *sql, int nparams, const char *const *params,
         PGresult **ret_res, char *why, size_t why_len, const char *what)
{
	PGresult *res;
	ExecStatusType st;

	if (nparams > 0)
		res =
		    PQexecParams(pg, sql, nparams, NULL, params, NULL, NULL, 0);
	else
		res = PQexec(pg, sql);
	st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ||
	    st == PGRES_EMPTY_QUERY) {
		if (ret_res != NULL)
			*ret_res = res;
		else
			PQclear(res);
		return 0;
	}
	{
		const char *state =
		    res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
		const char *m =
		    res ? PQresultErrorMessage(res) : PQerrorMessage(pg);
		bool conn = PQstatus(pg) != CONNECTION_OK ||
		            db_sqlstate_is_connection(state);
		snprintf(why, why_len, "%s: %s%s%.*s", what, state ? state : "",
		         state ? " " : "", (int)strcspn(m, "\n"), m);
		PQclear(res);
		return conn ? KASIR_EDB : KASIR_ESQL;
	}
}

/* Applies one migration and its record in one transaction. */
static int
apply_one(PGconn *pg, const char *qschema, const char *version, const char *sql,
          char *why, size_t why_len)
{
	char ins[256];
	const char *params[1] = {version};
	int rc;

	snprintf(ins, sizeof(ins),
	         "INSERT INTO %s.schema_migrations (version, applied_at) "
	         "VALUES ($1, now())",
	         qschema);
	if ((rc = mig_exec(pg, "BEGIN", 0, NULL, NULL, why, why_len, version)) <
	    0)
		return rc;
	if ((rc = mig_exec(pg, sql, 0, NULL, NULL, why, why_len, version)) <
	        0 ||
	    (rc = mig_exec(pg, ins, 1, params, NULL, why, why_len, version)) <
	        0 ||
	    (rc = mig_exec(pg, "COMMIT", 0, NULL, NULL, why, why_len,
	                   version)) < 0) {
		PQclear(PQexec(pg, "ROLLBACK"));
		return rc;
	}
	return 0;
}

static bool
recorded(PGresult *res, const char *version)
{
	for (int i = 0; i < PQntuples(res); i++)
		if (strcmp(PQgetvalue(res, i, 0), version) == 0)
			return true;
	return false;
}

/* Appends tmpl to *out with "{{schema}}" and "{{role}}" replaced (role
 * NULL: a "{{role}}" is an error).  The names were validated. */
static int
render(FILE *out, const char *tmpl, const char *schema, const char *role)
{
	while (*tmpl != '\0') {
		const char *p = strstr(tmpl, "{{");

		if (p == NULL) {
			fputs(tmpl, out);
			break;
		}
		fwrite(tmpl, 1, (size_t)(p - tmpl), out);
		if (strncmp(p, "{{schema}}", 10) == 0) {
			fputs(schema, out);
			tmpl = p + 10;
		} else if (strncmp(p, "{{role}}", 8) == 0 && role != NULL) {
			fputs(role, out);
			tmpl = p + 8;
		} else {
			return -EINVAL; /* unknown placeholder, or no role */
		}
	}
	return 0;
}

int
db_builtin_sql(const struct db_builtin *m, const char *schema,
               const char *runtime_role, char **ret_sql)
{
	char *sql = NULL;
	size_t len = 0;
	FILE *out;
	int rc;

	if (m == NULL || m->sql == NULL || ret_sql == NULL ||
	    !db_ident_valid(schema) ||
	    (runtime_role != NULL && !db_ident_valid(runtime_role)))
		return -EINVAL;
	out = open_memstream(&sql, &len);
	if (out == NULL)
		return -ENOMEM;
	rc = render(out, m->sql, schema, runtime_role);
	if (rc == 0 && runtime_role != NULL && m->grants != NULL)
		rc = render(out, m->grants, schema, runtime_role);
	if (fclose(out) != 0 && rc == 0)
		rc = -ENOMEM;
	if (rc < 0) {
		free(sql);
		return rc;
	}
	*ret_sql = sql;
	return 0;
}

int
db_migrate(const struct db_conf *conf, const char *schema,
           const char *runtime_role, const struct db_builtin *builtin,
           size_t nbuiltin, const char *dir, char *why, size_t why_len)
{
	char qschema[2 * DB_IDENT_MAX + 3], sql[512], lockkey[96];
	char **names = NULL;
	size_t nnames = 0;
	PGconn *pg;
	PGresult *res = NULL;
	const char *params[1];
	int rc;
	char dummy[1];

	if (why == NULL || why_len == 0) {
		why = dummy;
		why_len = sizeof(dummy);
	}
	why[0] = '\0';
	if (conf == NULL || !db_ident_valid(schema) ||
	    (runtime_role != NULL && !db_ident_valid(runtime_role))) {
		snprintf(why, why_len, "invalid schema or role name");
		return -EINVAL;
	}
	if ((rc = list_migrations(dir, &names, &nnames)) < 0) {
		snprintf(why, why_len, "%s: %s", dir, kasir_strerror(rc));
		return rc;
	}
	pg = db_pg_connect(conf, why, why_len);
	if (pg == NULL) {
		free_names(names, nnames);
		return KASIR_EDB;
	}
	/* schema is validated lower-case: quoting is for clarity only */
	snprintf(qschema, sizeof(qschema), "\"%s\"", schema);
	snprintf(lockkey, sizeof(lockkey), "kasir.migrate.%s", schema);
	params[0] = lockkey;
	if ((rc = mig_exec(pg, "SELECT pg_advisory_lock(hashtext($1))", 1,
	                   params, NULL, why, why_len, "advisory lock")) < 0)
		goto out;

	/* the schema is normally created by deploy/sql/bootstrap.sql; create
	 * it only when missing (the owner may lack CREATE on the database) */
	params[0] = schema;
	if ((rc = mig_exec(pg, "SELECT 1 FROM pg_namespace WHERE nspname = $1",
	                   1, params, &res, why, why_len, "schema lookup")) < 0)
		goto out_unlock;
	if (PQntuples(res) == 0) {
		snprintf(sql, sizeof(sql), "CREATE SCHEMA %s", qschema);
		if ((rc = mig_exec(pg, sql, 0, NULL, NULL, why, why_len,
		                   "create schema")) < 0)
			goto out_unlock;
	}
	PQclear(res);
	res = NULL;
	snprintf(sql, sizeof(sql),
	         "CREATE TABLE IF NOT EXISTS %s.schema_migrations ("
	         "version text PRIMARY KEY, "
	         "applied_at timestamptz NOT NULL DEFAULT now())",
	         qschema);
	if ((rc = mig_exec(pg, sql, 0, NULL, NULL, why, why_len,
	                   "schema_migrations")) < 0)
		goto out_unlock;
	snprintf(sql, sizeof(sql), "SELECT version FROM %s.schema_migrations",
	         qschema);
	if ((rc = mig_exec(pg, sql, 0, NULL, &res, why, why_len,
	                   "schema_migrations")) < 0)
		goto out_unlock;

	for (size_t i = 0; i < nbuiltin; i++) {
		const char *version = builtin[i].version;
		char *text = NULL;

		if (recorded(res, version))
			continue;
		if ((rc = db_builtin_sql(&builtin[i], schema, runtime_role,
		                         &text)) < 0) {
			snprintf(why, why_len, "%s: %s", version,
			         kasir_strerror(rc));
			goto out_unlock;
		}
		rc = apply_one(pg, qschema, version, text, why, why_len);
		free(text);
		if (rc < 0)
			goto out_unlock;
		log_debug("migration %s.%s applied", schema, version);
	}
	for (size_t i = 0; i < nnames; i++) {
		char *text = NULL;

		if (recorded(res, names[i]))
			continue;
		if ((rc = read_file(dir, names[i], &text)) < 0) {
			snprintf(why, why_len, "%s/%s.sql: %s", dir, names[i],
			         kasir_strerror(rc));
			goto out_unlock;
		}
		rc = apply_one(pg, qschema, names[i], text, why, why_len);
		free(text);
		if (rc < 0)
			goto out_unlock;
		log_debug("migration %s.%s applied", schema, names[i]);
	}
	rc = 0;
out_unlock:
	PQclear(res);
	params[0] = lockkey;
	if (PQstatus(pg) == CONNECTION_OK)
		PQclear(PQexecParams(pg,
		                     "SELECT pg_advisory_unlock(hashtext($1))",
		                     1, NULL, params, NULL, NULL, 0));
out:
	PQfinish(pg);
	free_names(names, nnames);
	return rc;
}

bool
db_migrations_applied(struct kasir_db *db, const char *schema,
                      const struct db_builtin *builtin, size_t nbuiltin,
                      const char *dir)
{
	char **names = NULL;
	size_t nnames = 0;
	char sql[256];
	PGresult *res;
	bool ok = false;

	if (db == NULL || !db_ident_valid(schema) || db->state != DB_IDLE ||
	    db_ensure(db) < 0)
		return false;
	if (list_migrations(dir, &names, &nnames) < 0)
		return false;
	snprintf(sql, sizeof(sql),
	         "SELECT version FROM \"%s\".schema_migrations", schema);
	res = PQexec(db->pg, sql);
	if (db_classify(db, res, &res) < 0)
		goto out;
	ok = true;
	for (size_t i = 0; ok && i < nbuiltin; i++)
		ok = recorded(res, builtin[i].version);
	for (size_t i = 0; ok && i < nnames; i++)
		ok = recorded(res, names[i]);
	PQclear(res);
out:
	free_names(names, nnames);
	return ok;
}
