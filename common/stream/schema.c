/*
 * schema.c - the backbone's tables (see stream.h), for db_migrate().
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "stream_impl.h"

static bool
role_valid(const char *s)
{
	return stream_schema_valid(s); /* same rule: [a-z_][a-z0-9_]*, <= 63 */
}

int
stream_migration_sql(const char *schema, const char *runtime_role,
                     char **ret_sql)
{
	char *tables = NULL, *grants = NULL, *sql = NULL;
	int n;

	if (!stream_schema_valid(schema) || ret_sql == NULL ||
	    (runtime_role != NULL && !role_valid(runtime_role)))
		return -EINVAL;
	/* %1$s is the schema; it and the role were validated above, and come
	 * from code, never from input. */
	n = asprintf(
	    &tables,
	    "DO $kasir$ BEGIN\n"
	    "  IF NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n\n"
	    "      ON n.oid = p.pronamespace\n"
	    "      WHERE n.nspname = '%1$s' AND p.proname = 'refuse_change')\n"
	    "  THEN\n"
	    "    CREATE FUNCTION %1$s.refuse_change() RETURNS trigger\n"
	    "    LANGUAGE plpgsql AS $f$\n"
	    "    BEGIN\n"
	    "      RAISE EXCEPTION 'append-only table %%', TG_TABLE_NAME;\n"
	    "    END $f$;\n"
	    "  END IF;\n"
	    "END $kasir$;\n"
	    "\n"
	    "-- producer: gap-free counter and the append-only log\n"
	    "CREATE TABLE IF NOT EXISTS %1$s.stream_head (\n"
	    "  stream text PRIMARY KEY,\n"
	    "  seq bigint NOT NULL CHECK (seq >= 0)\n"
	    ");\n"
	    "CREATE TABLE IF NOT EXISTS %1$s.stream_out (\n"
	    "  stream text NOT NULL,\n"
	    "  seq bigint NOT NULL CHECK (seq > 0),\n"
	    "  id uuid NOT NULL UNIQUE,\n"
	    "  type text NOT NULL,\n"
	    "  at timestamptz NOT NULL,\n"
	    "  body text NOT NULL,\n"
	    "  PRIMARY KEY (stream, seq)\n"
	    ");\n"
	    "DROP TRIGGER IF EXISTS stream_out_append_only ON "
	    "%1$s.stream_out;\n"
	    "CREATE TRIGGER stream_out_append_only BEFORE UPDATE OR DELETE\n"
	    "  ON %1$s.stream_out FOR EACH ROW\n"
	    "  EXECUTE FUNCTION %1$s.refuse_change();\n"
	    "DROP TRIGGER IF EXISTS stream_out_no_truncate ON "
	    "%1$s.stream_out;\n"
	    "CREATE TRIGGER stream_out_no_truncate BEFORE TRUNCATE\n"
	    "  ON %1$s.stream_out FOR EACH STATEMENT\n"
	    "  EXECUTE FUNCTION %1$s.refuse_change();\n"
	    "\n"
	    "-- consumer: last applied seq per producer stream, and what was\n"
	    "-- refused for good\n"
	    "CREATE TABLE IF NOT EXISTS %1$s.stream_cursor (\n"
	    "  stream text PRIMARY KEY,\n"
	    "  seq bigint NOT NULL CHECK (seq >= 0),\n"
	    "  updated_at timestamptz NOT NULL DEFAULT now()\n"
	    ");\n"
	    "CREATE TABLE IF NOT EXISTS %1$s.stream_poison (\n"
	    "  stream text NOT NULL,\n"
	    "  seq bigint NOT NULL,\n"
	    "  type text NOT NULL,\n"
	    "  error text NOT NULL,\n"
	    "  body text NOT NULL,\n"
	    "  recorded_at timestamptz NOT NULL DEFAULT now(),\n"
	    "  PRIMARY KEY (stream, seq)\n"
	    ");\n"
	    "DROP TRIGGER IF EXISTS stream_poison_append_only\n"
	    "  ON %1$s.stream_poison;\n"
	    "CREATE TRIGGER stream_poison_append_only BEFORE UPDATE OR DELETE\n"
	    "  ON %1$s.stream_poison FOR EACH ROW\n"
	    "  EXECUTE FUNCTION %1$s.refuse_change();\n"
	    "DROP TRIGGER IF EXISTS stream_poison_no_truncate\n"
	    "  ON %1$s.stream_poison;\n"
	    "CREATE TRIGGER stream_poison_no_truncate BEFORE TRUNCATE\n"
	    "  ON %1$s.stream_poison FOR EACH STATEMENT\n"
	    "  EXECUTE FUNCTION %1$s.refuse_change();\n",
	    schema);
	if (n < 0)
		return -ENOMEM;
	if (runtime_role != NULL) {
		n = asprintf(
		    &grants,
		    "GRANT USAGE ON SCHEMA %1$s TO \"%2$s\";\n"
		    "GRANT SELECT, INSERT ON %1$s.stream_out,\n"
		    "  %1$s.stream_poison TO \"%2$s\";\n"
		    "GRANT SELECT, INSERT, UPDATE ON %1$s.stream_head,\n"
		    "  %1$s.stream_cursor TO \"%2$s\";\n",
		    schema, runtime_role);
		if (n < 0) {
			free(tables);
			return -ENOMEM;
		}
	}
	n = asprintf(&sql, "%s%s", tables, grants != NULL ? grants : "");
	free(tables);
	free(grants);
	if (n < 0)
		return -ENOMEM;
	*ret_sql = sql;
	return 0;
}
