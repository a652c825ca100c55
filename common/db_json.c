/*
 * db_json.c - query results as JSON, for admin replies.
 */
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "db.h"
#include "db_json.h"

/* PostgreSQL type oids (pg_type.h) this file maps specially. */
enum {
	OID_BOOL = 16,
	OID_INT8 = 20,
	OID_INT2 = 21,
	OID_INT4 = 23,
	OID_JSON = 114,
	OID_FLOAT8 = 701,
	OID_JSONB = 3802,
};

static cJSON *
value_json(const PGresult *res, int row, int col)
{
	const char *v = db_get(res, row, col);
	cJSON *j;

	if (v == NULL)
		return cJSON_CreateNull();
	switch (PQftype(res, col)) {
	case OID_BOOL:
		return cJSON_CreateBool(v[0] == 't');
	case OID_INT2:
	case OID_INT4:
	case OID_INT8:
	case OID_FLOAT8:
		return cJSON_CreateNumber(strtod(v, NULL));
	case OID_JSON:
	case OID_JSONB:
		j = cJSON_Parse(v);
		return j != NULL ? j : cJSON_CreateString(v);
	default:
		return cJSON_CreateString(v);
	}
}

cJSON *
db_rows_json(const PGresult *res)
{
	cJSON *arr = cJSON_CreateArray();

	for (int i = 0; arr != NULL && i < PQntuples(res); i++) {
		cJSON *o = cJSON_CreateObject();

		if (o == NULL || !cJSON_AddItemToArray(arr, o)) {
			cJSON_Delete(o);
			goto nomem;
		}
		for (int c = 0; c < PQnfields(res); c++) {
			cJSON *v = value_json(res, i, c);

			if (v == NULL) {
				goto nomem;
			}
			cJSON_AddItemToObject(o, PQfname(res, c), v);
		}
	}
	return arr;
nomem:
	cJSON_Delete(arr);
	return NULL;
}

cJSON *
db_query_json(struct kasir_db *db, const struct db_stmt *stmt,
              const char *const *params)
{
	PGresult *res = NULL;
	cJSON *j;

	if (db_exec(db, stmt, params, &res) < 0)
		return NULL;
	j = db_rows_json(res);
	PQclear(res);
	return j;
}
