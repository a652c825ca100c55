/*
 * schema.c - the backbone's tables (see stream.h): migration "0000_stream",
 * whose SQL is common/stream/schema.sql and grants.sql, built into the
 * library (cmake/EmbedText.cmake) and run by db_migrate().
 */
#include "stream_impl.h"
#include "stream_grants_sql.h"
#include "stream_schema_sql.h"

const struct db_builtin stream_migration = {
    .version = "0000_stream",
    .sql = stream_schema_sql,
    .grants = stream_grants_sql,
};

int
stream_migration_sql(const char *schema, const char *runtime_role,
                     char **ret_sql)
{
	return db_builtin_sql(&stream_migration, schema, runtime_role, ret_sql);
}
