/*
 * db.h - one libpq connection that survives PostgreSQL restarts.
 *
 * A struct kasir_db is used by one thread at a time.  When the server goes
 * away, the next call fails with KASIR_EDB and the connection is marked
 * broken; db_ensure() reconnects with exponential backoff (100 ms doubling
 * to 5 s) and returns KASIR_EDB immediately while the backoff has not
 * elapsed, so callers never sleep inside a request.  A transaction that was
 * open when the connection broke is reported as failed (KASIR_EDB); if the
 * connection broke while COMMIT was in flight, db_commit() returns
 * KASIR_EDBUNKNOWN: the outcome is unknown and the caller must not blindly
 * redo the work (re-read state instead).  Nothing is retried silently.
 *
 * The handle's four states and every transition between them are in
 * docs/failure-model.md and at the top of db.c.  The rule a caller keeps:
 * after KASIR_EDB inside a transaction, end it (db_rollback()) or start
 * the next unit of work with db_begin() / db_ensure(); statements of the
 * lost transaction keep failing until then, and no state refuses to
 * reconnect after that.
 *
 * Statements are always parameterized.  A struct db_stmt is prepared lazily
 * on each connection (and again after a reconnect) under its name.
 */
#ifndef KASIR_DB_H
#define KASIR_DB_H

#include <stdbool.h>
#include <stdint.h>
#include <libpq-fe.h>

struct kasir_db;

enum db_state {
	DB_BROKEN,  /* no connection; reconnects when the backoff allows */
	DB_IDLE,    /* connected, no transaction */
	DB_IN_TX,   /* connected, a transaction is open */
	DB_TX_LOST, /* broke inside a transaction; over at the next boundary */
};

struct db_conf {
	const char *url; /* libpq conninfo string or URI, without password */
	const char *password;         /* may be NULL */
	const char *application_name; /* e.g. "kasir-order" */
	int connect_timeout_s;        /* default 5 */
	int statement_timeout_ms;     /* default 10000; 0 = server default */
	/* plan_cache_mode = force_generic_plan for this connection: its
	 * prepared statements are planned once, not at every execution.
	 * Only where measured better (docs/performance-log.md,
	 * "Generic plans"): kasir-ingest's committers, kasir-order's
	 * evidence consumers, kasir-notifier's consumer, kasir-reconciler's
	 * lanes and consumer.  A generic plan can be much worse: the evidence
	 * lock took 7x longer while its probe was an EXISTS (now a LATERAL with
	 * LIMIT 1), and a search whose plan depends on which optional
	 * filter is NULL would scan the whole table. */
	bool generic_plans;
	/* enable_seqscan = off for this connection: for loops whose every
	 * statement reads a few rows through an index.  The statistics of a
	 * table that grew in a burst lag behind it until autovacuum analyzes
	 * it, and meanwhile the planner takes it for a handful of rows and
	 * scans it whole: kasir-reconciler's claim read all 10,000 rows of
	 * recon.watch for its "forced" candidates (17 ms a claim) twenty
	 * seconds into a 500 payments/s run; with generic_plans a plan made
	 * while the table was small stays for the connection's life
	 * (kasir-order's evidence consumers scanned orders.orders at every
	 * batch).  A statement with no index to use still runs, as a
	 * sequential scan. */
	bool index_scans;
};

struct db_stmt {
	const char *name; /* unique per process, e.g. "order_insert" */
	const char *sql;  /* $1..$n placeholders */
	int nparams;
};

/* Creates a handle and tries to connect once.  Succeeds (returns 0) even
 * when the server is unreachable: the handle reconnects on db_ensure().
 * conf strings are copied.  Free with db_close(). */
int db_open(const struct db_conf *conf, struct kasir_db **ret);
void db_close(struct kasir_db *db);

/* 0 when the connection is usable now; KASIR_EDB otherwise (reconnect
 * attempted when the backoff allows). */
int db_ensure(struct kasir_db *db);
/* True when the last known state of the connection is good (no I/O). */
bool db_is_up(const struct kasir_db *db);
enum db_state db_state(const struct kasir_db *db);
const char *db_state_name(enum db_state st);
/* Names the handle for failpoints ("<label>:<statement>") and logs: the
 * loop that owns it, e.g. "reconciler.scheduler".  Copied; cut at 47. */
void db_set_label(struct kasir_db *db, const char *label);
/* Names the handle after the loop that owns it (db_set_label) and makes
 * every command's outcome that loop's liveness (liveness.h): periodic
 * loops pass every poll_ms, on-demand loops run when asked. */
void db_set_loop(struct kasir_db *db, const char *name, bool periodic,
                 int64_t poll_ms);
/* Raw connection for libpq calls not covered here; NULL when down. */
PGconn *db_pg(struct kasir_db *db);

int db_begin(struct kasir_db *db);
/* 0 committed; KASIR_ESQL the server refused the commit (e.g. deferred
 * constraint; rolled back); KASIR_EDBUNKNOWN connection lost in flight. */
int db_commit(struct kasir_db *db);
/* Never fails from the caller's point of view; a broken connection is
 * simply marked broken. */
void db_rollback(struct kasir_db *db);
/* Savepoints, for applying one item of a batch that may fail. */
int db_savepoint(struct kasir_db *db, const char *name);
int db_release(struct kasir_db *db, const char *name);
int db_rollback_to(struct kasir_db *db, const char *name);

/*
 * Executes stmt with params (text format; NULL entries are SQL NULL).
 * On success returns 0 and, when ret_res is not NULL, *ret_res holds the
 * result (caller PQclear()s it); commands returning no rows are fine.
 * On failure returns KASIR_EDB (connection) or KASIR_ESQL (statement; its
 * SQLSTATE and message are available from db_last_error()).
 */
int db_exec(struct kasir_db *db, const struct db_stmt *stmt,
            const char *const *params, PGresult **ret_res);
/* Same for a fixed SQL string without parameters (BEGIN, DDL, ...). */
int db_exec_sql(struct kasir_db *db, const char *sql);

/*
 * Pipeline (libpq pipeline mode): statements sent one after another
 * without waiting for each answer, inside an open transaction, for a
 * caller that already knows every parameter.  The server still runs them
 * in order, so each sees the effects of the ones before it.
 *   db_pipe_begin(db, stmts, n)  prepares those statements (synchronously,
 *                                 once per connection) and enters the mode;
 *   db_pipe_send(db, stmt, p)    queues one (stmt must be among stmts);
 *   db_pipe_sync(db)             sends everything queued;
 *   db_pipe_result(db, &res)     the next statement's result, in order:
 *                                 0 (*res set when res is not NULL; caller
 *                                 PQclear()s), KASIR_ESQL (it failed, or an
 *                                 earlier one did and it was skipped) or
 *                                 KASIR_EDB;
 *   db_pipe_end(db)              reads what is left and leaves the mode.
 * Any failure aborts the transaction: the caller rolls back.  Keep one
 * sync's worth of statements bounded (results wait in socket buffers
 * until read): a few dozen statements per db_pipe_sync().
 */
int db_pipe_begin(struct kasir_db *db, const struct db_stmt *const *stmts,
                  size_t n);
int db_pipe_send(struct kasir_db *db, const struct db_stmt *stmt,
                 const char *const *params);
int db_pipe_sync(struct kasir_db *db);
int db_pipe_result(struct kasir_db *db, PGresult **ret_res);
void db_pipe_end(struct kasir_db *db);

/*
 * An apply function that runs its statements at once or pipelined: a
 * stream consumer's careful pass (b NULL: db_exec(), one message at a
 * time) and its optimistic batch (b given: queued with db_pipe_send()
 * inside db_pipe_begin()/db_pipe_end(), a sync every DB_BATCH_CHUNK
 * statements).  No result is read back, only errors, so both ways do the
 * same writes in the same order.  db_batch_sync() reads what is left.
 */
struct db_batch {
	int pending; /* statements sent, results not read yet */
};
#define DB_BATCH_CHUNK 48
int db_batch_exec(struct db_batch *b, struct kasir_db *db,
                  const struct db_stmt *st, const char *const *params);
int db_batch_sync(struct db_batch *b, struct kasir_db *db);

/*
 * A transaction's two ends with one round trip each, for loops that run
 * many short transactions (stream consumers):
 *   db_begin_with(db, st, p, &res)  BEGIN and st in one pipeline: 0 with
 *                                   the transaction open and st's result
 *                                   (caller PQclear()s), or the error of
 *                                   either with no transaction open, as
 *                                   db_begin();
 *   db_commit_with(db, n, st, p)    st[0..n) (e.g. a cursor update) and
 *                                   COMMIT in one pipeline, with
 *                                   db_commit()'s outcomes: 0 committed,
 *                                   KASIR_ESQL a statement or the COMMIT
 *                                   refused (rolled back), KASIR_EDB lost
 *                                   before the COMMIT was sent,
 *                                   KASIR_EDBUNKNOWN the connection was
 *                                   lost once it was; n at most
 *                                   DB_COMMIT_WITH_MAX.
 *   db_tx_once(db, n, st, p, res)   BEGIN, st[0..n), COMMIT: a whole
 *                                   short transaction in one round trip,
 *                                   with db_commit_with()'s outcomes;
 *                                   res[i] st[i]'s result on success
 *                                   (caller PQclear()s; NULL otherwise).
 * Their failpoints are "BEGIN" and "COMMIT", as db_begin()'s and
 * db_commit()'s, and each statement's name.
 */
#define DB_COMMIT_WITH_MAX 4
int db_begin_with(struct kasir_db *db, const struct db_stmt *st,
                  const char *const *params, PGresult **ret_res);
int db_commit_with(struct kasir_db *db, size_t n,
                   const struct db_stmt *const *st,
                   const char *const *const *params);
int db_tx_once(struct kasir_db *db, size_t n, const struct db_stmt *const *st,
               const char *const *const *params, PGresult **res);

/*
 * A PostgreSQL array literal built element by element, to pass many values
 * as one parameter ("$1::text[]", "$2::bigint[]"): every element quoted
 * and escaped, NULL for a NULL value.  Zero-initialise; db_array_text()
 * is NULL after an allocation failure; db_array_free() releases it.
 */
struct db_array {
	char *text;
	size_t len, cap, n;
	bool oom;
};
void db_array_add(struct db_array *a, const char *value);
const char *db_array_text(struct db_array *a);
void db_array_free(struct db_array *a);

/*
 * The columns of one array statement ("... FROM unnest($1::text[],
 * $2::bigint[], ...)"), filled row by row: parameter k of stmt is the
 * array a[k].  db_cols_row() adds one row to the first ncols columns (0:
 * every parameter of stmt); a parameter after them is the caller's to
 * fill (db_cols_add(), or db_array_add() on a[k]).  db_cols_params()
 * gives the statement's parameters (-ENOMEM after an allocation failure);
 * db_cols_exec() runs it, db_cols_send() queues it on the pipeline.
 * Zero-initialise with stmt set; db_cols_free() releases the arrays.
 */
#define DB_COLS_MAX 40
struct db_cols {
	const struct db_stmt *stmt;
	int ncols;
	struct db_array a[DB_COLS_MAX];
	size_t rows;
};
void db_cols_row(struct db_cols *c, const char *const *v);
void db_cols_add(struct db_cols *c, int first, const char *const *v, int n);
int db_cols_params(struct db_cols *c, const char *params[DB_COLS_MAX]);
int db_cols_exec(struct kasir_db *db, struct db_cols *c, PGresult **ret_res);
int db_cols_send(struct kasir_db *db, struct db_cols *c);
void db_cols_free(struct db_cols *c);

/* SQLSTATE ("23505", ...) and message of the last KASIR_ESQL; "" if none.
 * Valid until the next call on db. */
const char *db_last_sqlstate(const struct kasir_db *db);
const char *db_last_error(const struct kasir_db *db);

/* Helpers to read a result. */
const char *db_get(const PGresult *res, int row,
                   int col); /* NULL if SQL NULL */
int64_t db_get_i64(const PGresult *res, int row, int col); /* 0 if NULL */

/*
 * A migration built into the binary rather than read from a directory,
 * e.g. the backbone's tables (stream_migration, stream.h).  Its SQL names
 * the schema "{{schema}}" and the runtime role "{{role}}"; the runner puts
 * the validated names there (db_builtin_sql()).  grants (may be NULL) runs
 * after sql, only when a runtime role is given.
 */
struct db_builtin {
	const char *version; /* recorded in schema_migrations: "0000_stream" */
	const char *sql;
	const char *grants;
};

/* The SQL of m for schema and runtime_role (may be NULL: no grants), both
 * checked as identifiers ([a-z_][a-z0-9_]*, at most 63).  0 and *ret_sql
 * (caller frees), or -EINVAL / -ENOMEM. */
int db_builtin_sql(const struct db_builtin *m, const char *schema,
                   const char *runtime_role, char **ret_sql);

/*
 * Applies migrations for schema:
 *  - connects with conf (the owner role), takes
 *    pg_advisory_lock(hashtext('kasir.migrate.' || schema)),
 *  - creates <schema>.schema_migrations(version text primary key,
 *    applied_at timestamptz) if missing,
 *  - applies the nbuiltin built-in migrations (every daemon passes the
 *    backbone's, stream_migration: stream_head, stream_out, stream_cursor,
 *    stream_poison) that are not yet recorded, granting what runtime_role
 *    needs,
 *  - then every "*.sql" file of dir in name order that is not yet recorded,
 *    each in its own transaction together with its schema_migrations row.
 * Returns 0 when everything is applied; on failure *why says which file
 * and the server's message.
 */
int db_migrate(const struct db_conf *conf, const char *schema,
               const char *runtime_role, const struct db_builtin *builtin,
               size_t nbuiltin, const char *dir, char *why, size_t why_len);

/* True when every built-in migration and every *.sql file of dir is
 * recorded in <schema>.schema_migrations (used by /readyz). */
bool db_migrations_applied(struct kasir_db *db, const char *schema,
                           const struct db_builtin *builtin, size_t nbuiltin,
                           const char *dir);

#endif
