/*
 * db_pipe.c - libpq pipeline mode on a handle (db_pipe_*, db.h):
 * statements sent one after another inside an open transaction, results
 * read in order.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "db_impl.h"
#include "err.h"

/* Prepares stmt on db->pg unless done; 0 or a KASIR_E* code. */
static int
prepare_once(struct kasir_db *db, const struct db_stmt *stmt)
{
	char *copy;
	int rc;

	if (db_is_prepared(db, stmt->name))
		return 0;
	if (db->nprepared >= DB_MAX_PREPARED)
		return -ENOSPC;
	copy = strdup(stmt->name);
	if (copy == NULL)
		return -ENOMEM;
	rc = db_classify(
	    db, PQprepare(db->pg, stmt->name, stmt->sql, stmt->nparams, NULL),
	    NULL);
	if (rc < 0) {
		free(copy);
		return rc;
	}
	db->prepared[db->nprepared++] = copy;
	return 0;
}

int
db_pipe_begin(struct kasir_db *db, const struct db_stmt *const *stmts, size_t n)
{
	int rc;

	if (db == NULL || (n > 0 && stmts == NULL) || db->piping)
		return -EINVAL;
	if ((rc = db_ready(db)) < 0)
		return rc;
	for (size_t i = 0; i < n; i++)
		if ((rc = prepare_once(db, stmts[i])) < 0)
			return rc;
	if (PQenterPipelineMode(db->pg) != 1) {
		db_set_error(db, "", PQerrorMessage(db->pg));
		return KASIR_ESQL;
	}
	db->piping = true;
	db->pipe_pending = 0;
	db->pipe_synced = 0;
	db->pipe_failed = false;
	return 0;
}

int
db_pipe_send(struct kasir_db *db, const struct db_stmt *stmt,
             const char *const *params)
{
	if (db == NULL || !db->piping || stmt == NULL ||
	    (stmt->nparams > 0 && params == NULL))
		return -EINVAL;
	if (db->pg == NULL)
		return KASIR_EDB;
	if (!db_is_prepared(db, stmt->name))
		return -EINVAL; /* not given to db_pipe_begin() */
	db_failpoint(db, stmt->name);
	if (PQsendQueryPrepared(db->pg, stmt->name, stmt->nparams, params, NULL,
	                        NULL, 0) != 1) {
		db_set_error(db, "", PQerrorMessage(db->pg));
		if (PQstatus(db->pg) != CONNECTION_OK) {
			db_mark_broken(db);
			return KASIR_EDB;
		}
		return KASIR_ESQL;
	}
	db->pipe_pending++;
	return 0;
}

int
db_pipe_sync(struct kasir_db *db)
{
	if (db == NULL || !db->piping)
		return -EINVAL;
	if (db->pg == NULL)
		return KASIR_EDB;
	db_failpoint(db, "pipeline_sync");
	if (PQpipelineSync(db->pg) != 1) {
		db_set_error(db, "", PQerrorMessage(db->pg));
		db_mark_broken(db);
		return KASIR_EDB;
	}
	db->pipe_synced++;
	return 0;
}

int
db_pipe_result(struct kasir_db *db, PGresult **ret_res)
{
	PGresult *res, *end;
	int rc;

	if (db == NULL || !db->piping || db->pipe_pending == 0)
		return -EINVAL;
	if (db->pg == NULL)
		return KASIR_EDB;
	for (;;) {
		res = PQgetResult(db->pg);
		if (res == NULL) {
			db_set_error(db, "", PQerrorMessage(db->pg));
			db_mark_broken(db);
			return KASIR_EDB;
		}
		if (PQresultStatus(res) != PGRES_PIPELINE_SYNC)
			break;
		/* the end of an earlier sync group (not followed by NULL) */
		PQclear(res);
		if (db->pipe_synced > 0)
			db->pipe_synced--;
	}
	db->pipe_pending--;
	if (PQresultStatus(res) == PGRES_PIPELINE_ABORTED) {
		PQclear(res);
		rc = KASIR_ESQL; /* db->errmsg keeps the failing statement's */
	} else {
		rc = db_classify(db, res, ret_res);
		if (rc == KASIR_EDB)
			return rc; /* connection gone: nothing more to read */
	}
	/* each statement's results end with a NULL */
	end = PQgetResult(db->pg);
	if (end != NULL) {
		PQclear(end);
		db_mark_broken(db); /* protocol out of step: start afresh */
		return KASIR_EDB;
	}
	if (rc < 0)
		db->pipe_failed = true;
	return rc;
}

void
db_pipe_end(struct kasir_db *db)
{
	PGresult *res;

	if (db == NULL || !db->piping)
		return;
	while (db->piping && db->pg != NULL && db->pipe_pending > 0)
		if (db_pipe_result(db, NULL) == KASIR_EDB)
			break;
	while (db->piping && db->pg != NULL && db->pipe_synced > 0) {
		res = PQgetResult(db->pg);
		if (res == NULL) { /* a sync is owed: the connection failed */
			db_mark_broken(db);
			break;
		}
		if (PQresultStatus(res) == PGRES_PIPELINE_SYNC)
			db->pipe_synced--;
		PQclear(res);
	}
	if (db->piping && db->pg != NULL) {
		/* a NULL may still separate the last sync from idle */
		if (PQexitPipelineMode(db->pg) != 1)
			db_mark_broken(db); /* out of step: start afresh */
		else
			db_track_tx(db);
	}
	db->piping = false;
	db->pipe_pending = db->pipe_synced = 0;
}
