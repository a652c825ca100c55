/*
 * db_json.h - query results as JSON, for admin replies (kasirctl).
 *
 * Column types map as: int2/int4/int8/float8 -> number, bool -> true/false,
 * json/jsonb -> parsed JSON, SQL NULL -> null, everything else (numeric,
 * text, timestamps formatted by the query) -> string.  Like cJSON's own
 * builders these return the new tree (the caller owns it and frees it with
 * cJSON_Delete) or NULL on failure.
 */
#ifndef KASIR_DB_JSON_H
#define KASIR_DB_JSON_H

#include <libpq-fe.h>

/* SQL text: a timestamptz expression as UTC ISO-8601 with milliseconds,
 * "2026-01-31T23:59:59.123Z", the one format admin replies carry. */
#define TS(x)                                                                  \
	"to_char((" x ") AT TIME ZONE 'UTC', "                                 \
	"'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

struct cJSON;
struct kasir_db;
struct db_stmt;

/* The rows of res as an array of objects keyed by column name; NULL only
 * when out of memory. */
struct cJSON *db_rows_json(const PGresult *res);
/* Runs stmt and returns db_rows_json() of its result; NULL when the query
 * failed (db_last_error() says why) or out of memory. */
struct cJSON *db_query_json(struct kasir_db *db, const struct db_stmt *stmt,
                            const char *const *params);

#endif
