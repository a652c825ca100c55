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
	PGresult *res;
	char *copy;
	int rc;

	if (db_is_prepared(db, stmt->name))
		return 0;
	if (db->nprepared >= DB_MAX_PREPARED)
		return -ENOSPC;
	copy = strdup(stmt->name);
	if (copy == NULL)
		return -ENOMEM;
	res = DB_WAITED(
	    db, PQprepare(db->pg, stmt->name, stmt->sql, stmt->nparams, NULL));
	rc = db_classify(db, res, NULL);
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
		res = DB_WAITED(db, PQgetResult(db->pg));
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
	end = DB_WAITED(db, PQgetResult(db->pg));
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
	/* statements sent after the last sync (a caller that stopped
	 * early): the server flushes their results only at a sync, so
	 * reading them without one would wait for ever */
	if (db->pipe_pending > 0 && db->pg != NULL) {
		if (PQpipelineSync(db->pg) == 1)
			db->pipe_synced++;
		else
			db_mark_broken(db);
	}
	while (db->piping && db->pg != NULL && db->pipe_pending > 0)
		if (db_pipe_result(db, NULL) == KASIR_EDB)
			break;
	while (db->piping && db->pg != NULL && db->pipe_synced > 0) {
		res = DB_WAITED(db, PQgetResult(db->pg));
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
			db_track_state(db); /* its results said what was done */
	}
	db->piping = false;
	db->pipe_pending = db->pipe_synced = 0;
}

int
db_batch_sync(struct db_batch *b, struct kasir_db *db)
{
	int rc = 0, r2;

	if (b->pending == 0)
		return 0;
	if ((rc = db_pipe_sync(db)) < 0)
		return rc;
	for (; b->pending > 0; b->pending--)
		if ((r2 = db_pipe_result(db, NULL)) < 0 && rc == 0)
			rc = r2;
	return rc;
}

int
db_batch_exec(struct db_batch *b, struct kasir_db *db, const struct db_stmt *st,
              const char *const *params)
{
	int rc;

	if (b == NULL)
		return db_exec(db, st, params, NULL);
	if ((rc = db_pipe_send(db, st, params)) < 0)
		return rc;
	/* results wait in socket buffers until read: bounded */
	if (++b->pending >= DB_BATCH_CHUNK)
		return db_batch_sync(b, db);
	return 0;
}

/* Transaction control as prepared statements, named as db_begin()'s and
 * db_commit()'s failpoints. */
static const struct db_stmt st_begin = {.name = "BEGIN", .sql = "BEGIN"};
static const struct db_stmt st_commit = {.name = "COMMIT", .sql = "COMMIT"};

int
db_begin_with(struct kasir_db *db, const struct db_stmt *st,
              const char *const *params, PGresult **ret_res)
{
	const struct db_stmt *const stmts[] = {&st_begin, st};
	PGresult *res = NULL;
	int rc;

	if (db == NULL || st == NULL)
		return -EINVAL;
	/* a new transaction ends a lost one, as in db_begin() */
	if (db->state == DB_TX_LOST)
		db->state = DB_BROKEN;
	if ((rc = db_pipe_begin(db, stmts, 2)) < 0)
		return rc;
	if ((rc = db_pipe_send(db, &st_begin, NULL)) == 0 &&
	    (rc = db_pipe_send(db, st, params)) == 0 &&
	    (rc = db_pipe_sync(db)) == 0 &&
	    (rc = db_pipe_result(db, NULL)) == 0)
		rc = db_pipe_result(db, &res);
	db_pipe_end(db);
	if (rc < 0) {
		PQclear(res);
		db_rollback(db); /* no transaction left open */
		return rc;
	}
	if (ret_res != NULL)
		*ret_res = res;
	else
		PQclear(res);
	return 0;
}

/*
 * [BEGIN,] st[0..n) and COMMIT in one pipeline: db_commit()'s outcomes
 * (see db.h).  res[i] gets st[i]'s result when res is not NULL (caller
 * PQclear()s; NULL after a failure).
 */
static int
tx_pipeline(struct kasir_db *db, bool begin, size_t n,
            const struct db_stmt *const *st, const char *const *const *params,
            PGresult **res)
{
	const struct db_stmt *stmts[DB_COMMIT_WITH_MAX + 2];
	size_t k = 0;
	PGresult *commit = NULL;
	bool sent = false, rolled_back = false;
	int rc = 0;

	if (db == NULL || n == 0 || n > DB_COMMIT_WITH_MAX || st == NULL ||
	    params == NULL)
		return -EINVAL;
	for (size_t i = 0; res != NULL && i < n; i++)
		res[i] = NULL;
	if (begin) {
		/* a new transaction ends a lost one, as in db_begin() */
		if (db->state == DB_TX_LOST)
			db->state = DB_BROKEN;
		stmts[k++] = &st_begin;
	}
	for (size_t i = 0; i < n; i++)
		stmts[k++] = st[i];
	stmts[k++] = &st_commit;
	if ((rc = db_pipe_begin(db, stmts, k)) < 0) {
		db_rollback(db);
		return rc;
	}
	for (size_t i = 0; i < k - 1 && rc == 0; i++)
		rc = db_pipe_send(db, stmts[i],
		                  begin && i == 0 ? NULL : params[i - begin]);
	if (rc == 0)
		rc = db_pipe_send(db, &st_commit, NULL);
	/* from here the COMMIT may reach the server (libpq may flush) */
	sent = rc == 0;
	if (rc == 0)
		rc = db_pipe_sync(db);
	if (rc == 0 && begin)
		rc = db_pipe_result(db, NULL);
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = db_pipe_result(db, res != NULL ? &res[i] : NULL);
	if (rc == 0 && (rc = db_pipe_result(db, &commit)) == 0)
		/* COMMIT of an aborted transaction answers "ROLLBACK" */
		rolled_back = strcmp(PQcmdStatus(commit), "ROLLBACK") == 0;
	PQclear(commit);
	db_pipe_end(db);
	if (rc < 0 || rolled_back)
		for (size_t i = 0; res != NULL && i < n; i++) {
			PQclear(res[i]);
			res[i] = NULL;
		}
	if (rc == KASIR_EDB && sent) {
		/* COMMIT may have reached the server: nobody knows */
		db_set_error(db, "", "connection lost with COMMIT in flight");
		db_rollback(db); /* drops the broken connection */
		return KASIR_EDBUNKNOWN;
	}
	if (rc < 0) {
		db_rollback(db); /* refused: rolled back */
		return rc == KASIR_EDB ? rc : KASIR_ESQL;
	}
	if (rolled_back) {
		db_set_error(db, "25P02",
		             "transaction was aborted and rolled back");
		return KASIR_ESQL;
	}
	return 0;
}

int
db_commit_with(struct kasir_db *db, size_t n, const struct db_stmt *const *st,
               const char *const *const *params)
{
	return tx_pipeline(db, false, n, st, params, NULL);
}

int
db_tx_once(struct kasir_db *db, size_t n, const struct db_stmt *const *st,
           const char *const *const *params, PGresult **res)
{
	return tx_pipeline(db, true, n, st, params, res);
}
