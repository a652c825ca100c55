/*
 * schema.c - the backbone's tables (see stream.h): migrations
 * "0000_stream" (schema.sql, grants.sql), "0001_stream_pending"
 * (pending.sql, pending_grants.sql), "0002_stream_source" (source.sql),
 * "0003_stream_tick" (tick.sql, tick_grants.sql) and "0004_stream_log"
 * (log.sql, log_grants.sql), built into the library
 * (cmake/EmbedText.cmake) and run by db_migrate() in this order.
 */
#include "stream_impl.h"
#include "stream_grants_sql.h"
#include "stream_log_grants_sql.h"
#include "stream_log_sql.h"
#include "stream_pending_grants_sql.h"
#include "stream_pending_sql.h"
#include "stream_schema_sql.h"
#include "stream_source_sql.h"
#include "stream_tick_grants_sql.h"
#include "stream_tick_sql.h"

const struct db_builtin stream_migrations[STREAM_MIGRATIONS] = {
    {
        .version = "0000_stream",
        .sql = stream_schema_sql,
        .grants = stream_grants_sql,
    },
    {
        .version = "0001_stream_pending",
        .sql = stream_pending_sql,
        .grants = stream_pending_grants_sql,
    },
    {
        .version = "0002_stream_source",
        .sql = stream_source_sql,
        .grants = NULL, /* stream_head's grants of 0000_stream hold */
    },
    {
        .version = "0003_stream_tick",
        .sql = stream_tick_sql,
        .grants = stream_tick_grants_sql,
    },
    {
        .version = "0004_stream_log",
        .sql = stream_log_sql,
        .grants = stream_log_grants_sql,
    },
};

int
stream_migration_sql(const char *schema, const char *runtime_role,
                     char **ret_sql)
{
	return db_builtin_sql(&stream_migrations[0], schema, runtime_role,
	                      ret_sql);
}
