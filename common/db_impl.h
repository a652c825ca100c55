/*
 * db_impl.h - what the parts of common/db share (private; the API is
 * db.h): the handle, and the connection side used by the pipeline
 * (db_pipe.c) and the migration runner (db_migrate.c).  The handle's
 * states and their transitions are described at the top of db.c.
 */
#ifndef KASIR_DB_IMPL_H
#define KASIR_DB_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "db.h"
#include "liveness.h"

#define DB_MAX_PREPARED 256
#define DB_ERRMSG_MAX   512
#define DB_IDENT_MAX    63
#define DB_LABEL_MAX    48

struct kasir_db {
	char *url;
	char *password;
	char *appname;
	int connect_timeout_s;
	int statement_timeout_ms;
	bool generic_plans;
	bool index_scans;

	char label[DB_LABEL_MAX]; /* failpoint prefix: "reconciler.scheduler" */
	struct live_loop *live; /* the loop that owns the handle; may be NULL */

	enum db_state state;
	PGconn *pg;          /* NULL in BROKEN and TX_LOST */
	int64_t next_try_ms; /* monotonic: earliest reconnect attempt */
	int64_t backoff_ms;  /* next delay after a failed attempt */
	bool logged_down;    /* one debug line per outage */
	/* the server refused work for a reason that is not the statement's
	 * (read-only, disk full, no privilege, a statement timeout): until a
	 * transaction commits, a write succeeds, or a statement outside a
	 * transaction does, the loop's other commands (BEGIN, a SELECT,
	 * ROLLBACK) are no sign of life (db_track_tx) */
	bool refused;

	char *prepared[DB_MAX_PREPARED]; /* names prepared on pg */
	size_t nprepared;

	bool piping;         /* in pipeline mode (db_pipe_begin) */
	bool pipe_failed;    /* a piped statement failed */
	size_t pipe_pending; /* statements sent, result not read */
	size_t pipe_synced;  /* syncs sent, PGRES_PIPELINE_SYNC not read */

	char sqlstate[6];
	char errmsg[DB_ERRMSG_MAX];
};

/* Connects synchronously (bounded by connect_timeout).  Returns the
 * connection or NULL; on failure why gets libpq's message. */
PGconn *db_pg_connect(const struct db_conf *conf, char *why, size_t why_len);

/* The connection broke: BROKEN, or TX_LOST inside a transaction. */
void db_mark_broken(struct kasir_db *db);

/* After a command that succeeded on a live connection. */
void db_track_tx(struct kasir_db *db);
void db_track_state(struct kasir_db *db);

/*
 * The failpoint named "<label>:<what>", hit just before the command is
 * sent on a live connection.  When it fires with the "break" action the
 * socket is shut down, so the command sees a dead session exactly as it
 * would after a backend kill or a server crash.
 */
bool db_failpoint(struct kasir_db *db, const char *what);

/* Records what db_last_sqlstate() / db_last_error() report. */
void db_set_error(struct kasir_db *db, const char *sqlstate, const char *msg);

/* SQLSTATEs that mean the session is gone even if libpq has not noticed
 * yet: connection exceptions (08xxx) and operator intervention
 * (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now). */
bool db_sqlstate_is_connection(const char *st);

/*
 * Classifies the result of a command on db->pg.  Takes over res: on
 * success it is stored in *ret_res (or cleared when ret_res is NULL); on
 * failure it is cleared.  Returns 0, KASIR_EDB or KASIR_ESQL.
 */
int db_classify(struct kasir_db *db, PGresult *res, PGresult **ret_res);

/* Makes sure a statement can run now: inside a transaction only on the
 * same, live connection; outside one, reconnecting if allowed. */
int db_ready(struct kasir_db *db);

/* True when name was prepared on the current connection. */
bool db_is_prepared(const struct kasir_db *db, const char *name);

/* A schema, role or savepoint name: [a-z_][a-z0-9_]*, at most 63. */
bool db_ident_valid(const char *s);

/* Every libpq call that blocks on the server goes through this: the wait
 * is marked on the handle's loop while it lasts, and a wait past the
 * loop's bound makes it silent (liveness.h).  Evaluates call once. */
#define DB_WAITED(db, call)                                                    \
	(live_wait_begin((db)->live), db_waited((db), (call)))

static inline PGresult *
db_waited(struct kasir_db *db, PGresult *res)
{
	live_wait_end(db->live);
	return res;
}

#endif
