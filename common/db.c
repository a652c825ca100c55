/*
 * db.c - one libpq connection that survives PostgreSQL restarts.
 *
 * A handle is always in one of four states (enum db_state; the diagram
 * and the rules are in docs/failure-model.md):
 *
 *   BROKEN   no connection.  db_ensure() (and every statement outside a
 *            transaction) reconnects once the backoff has elapsed -> IDLE.
 *   IDLE     connected, no transaction.  BEGIN -> IN_TX.
 *   IN_TX    connected, a transaction is open (read from libpq after every
 *            command).  COMMIT / ROLLBACK -> IDLE.
 *   TX_LOST  the connection broke while a statement of an open transaction
 *            ran; that statement returned KASIR_EDB (the caller has been
 *            told).  Further statements of the lost transaction fail with
 *            KASIR_EDB without I/O, so none of them runs in autocommit on a
 *            fresh connection.  The lost transaction is over at the
 *            caller's next transaction boundary: db_rollback(), db_commit()
 *            (KASIR_EDB), db_begin() or db_ensure() -> BROKEN, and from
 *            there the usual reconnect.
 *
 * A break seen by COMMIT ends in BROKEN with KASIR_EDBUNKNOWN; a break
 * seen by ROLLBACK ends in BROKEN (the server rolled the transaction back
 * when the session died); a break seen by a pipeline result or sync inside
 * a transaction is TX_LOST like any statement.  No state refuses to
 * reconnect: TX_LOST lasts only until the next boundary, BROKEN only until
 * the backoff (at most 5 s) has elapsed.
 *
 * Failpoints (failpoint.h) sit at every command a handle sends, named
 * "<label>:<statement>" so that tests can break the connection exactly
 * there; they cost one branch when KASIR_FAILPOINTS is not set.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db.h"
#include "err.h"
#include "failpoint.h"
#include "liveness.h"
#include "log.h"
#include "util.h"

#define DB_BACKOFF_MIN_MS 100
#define DB_BACKOFF_MAX_MS 5000
#define DB_MAX_PREPARED   256
#define DB_ERRMSG_MAX     512
#define DB_MIGRATION_MAX  (1024 * 1024) /* bytes per migration file */
#define DB_MIGRATIONS_MAX 1000          /* files per directory */
#define DB_IDENT_MAX      63
#define DB_LABEL_MAX      48

struct kasir_db {
	char *url;
	char *password;
	char *appname;
	int connect_timeout_s;
	int statement_timeout_ms;

	char label[DB_LABEL_MAX]; /* failpoint prefix: "reconciler.scheduler" */
	struct live_loop *live; /* the loop that owns the handle; may be NULL */

	enum db_state state;
	PGconn *pg;          /* NULL in BROKEN and TX_LOST */
	int64_t next_try_ms; /* monotonic: earliest reconnect attempt */
	int64_t backoff_ms;  /* next delay after a failed attempt */
	bool logged_down;    /* one debug line per outage */

	char *prepared[DB_MAX_PREPARED]; /* names prepared on pg */
	size_t nprepared;

	bool piping;         /* in pipeline mode (db_pipe_begin) */
	bool pipe_failed;    /* a piped statement failed */
	size_t pipe_pending; /* statements sent, result not read */
	size_t pipe_synced;  /* syncs sent, PGRES_PIPELINE_SYNC not read */

	char sqlstate[6];
	char errmsg[DB_ERRMSG_MAX];
};

static void
notice_sink(void *arg, const char *message)
{
	(void)arg;
	log_debug("postgresql: %.*s", (int)strcspn(message, "\n"), message);
}

/* Connects synchronously (bounded by connect_timeout).  Returns the
 * connection or NULL; on failure why gets libpq's message. */
static PGconn *
pg_connect(const struct db_conf *conf, char *why, size_t why_len)
{
	const char *keys[8], *vals[8];
	char timeout[16], options[64];
	int n = 0;
	PGconn *pg;

	snprintf(timeout, sizeof(timeout), "%d",
	         conf->connect_timeout_s > 0 ? conf->connect_timeout_s : 5);
	keys[n] = "dbname";
	vals[n++] = conf->url ? conf->url : "";
	if (conf->password != NULL) {
		keys[n] = "password";
		vals[n++] = conf->password;
	}
	if (conf->application_name != NULL) {
		keys[n] = "application_name";
		vals[n++] = conf->application_name;
	}
	keys[n] = "connect_timeout";
	vals[n++] = timeout;
	if (conf->statement_timeout_ms > 0) {
		snprintf(options, sizeof(options), "-c statement_timeout=%d",
		         conf->statement_timeout_ms);
		keys[n] = "options";
		vals[n++] = options;
	}
	keys[n] = NULL;
	vals[n] = NULL;

	pg = PQconnectdbParams(keys, vals, 1);
	if (pg == NULL) {
		snprintf(why, why_len, "out of memory");
		return NULL;
	}
	if (PQstatus(pg) != CONNECTION_OK) {
		const char *m = PQerrorMessage(pg);
		snprintf(why, why_len, "%.*s", (int)strcspn(m, "\n"), m);
		PQfinish(pg);
		return NULL;
	}
	PQsetNoticeProcessor(pg, notice_sink, NULL);
	return pg;
}

static void
forget_prepared(struct kasir_db *db)
{
	for (size_t i = 0; i < db->nprepared; i++)
		free(db->prepared[i]);
	db->nprepared = 0;
}

/*
 * The connection is gone: drop it and schedule a reconnect.  A statement
 * that saw the break inside a transaction leaves the handle in TX_LOST
 * (its caller is being told KASIR_EDB); COMMIT and ROLLBACK, which end
 * the transaction themselves, pass tx_over and leave it BROKEN.
 */
static void
drop_connection(struct kasir_db *db, bool tx_over)
{
	bool was_up = db->pg != NULL;

	live_fail(db->live);
	if (was_up) {
		PQfinish(db->pg);
		db->pg = NULL;
	}
	db->state = db->state == DB_IN_TX && !tx_over ? DB_TX_LOST : DB_BROKEN;
	db->piping = false; /* the pipeline died with the connection */
	db->pipe_pending = db->pipe_synced = 0;
	forget_prepared(db);
	if (was_up) {
		/* the first reconnect after a break may happen right away;
		 * a handle already down keeps its backoff */
		db->next_try_ms = now_mono_ms();
		db->backoff_ms = DB_BACKOFF_MIN_MS;
	}
}

static void
mark_broken(struct kasir_db *db)
{
	drop_connection(db, false);
}

/* After a command that succeeded on a live connection. */
static void
track_tx(struct kasir_db *db)
{
	live_ok(db->live);
	db->state =
	    PQtransactionStatus(db->pg) != PQTRANS_IDLE ? DB_IN_TX : DB_IDLE;
}

/*
 * The failpoint named "<label>:<what>", hit just before the command is
 * sent on a live connection.  When it fires with the "break" action the
 * socket is shut down, so the command sees a dead session exactly as it
 * would after a backend kill or a server crash.
 */
static void
db_failpoint(struct kasir_db *db, const char *what)
{
	char name[FAILPOINT_NAME_MAX];

	if (!failpoint_enabled() || db->pg == NULL)
		return;
	snprintf(name, sizeof(name), "%s:%s", db->label[0] ? db->label : "db",
	         what);
	if (failpoint_hit(name) == FAILPOINT_BREAK)
		(void)shutdown(PQsocket(db->pg), SHUT_RDWR);
}

static void
set_error(struct kasir_db *db, const char *sqlstate, const char *msg)
{
	snprintf(db->sqlstate, sizeof(db->sqlstate), "%s",
	         sqlstate ? sqlstate : "");
	snprintf(db->errmsg, sizeof(db->errmsg), "%.*s",
	         msg ? (int)strcspn(msg, "\n") : 0, msg ? msg : "");
}

static void
clear_error(struct kasir_db *db)
{
	db->sqlstate[0] = '\0';
	db->errmsg[0] = '\0';
}

static char *
strdup_or_null(const char *s, bool *failed)
{
	char *c;

	if (s == NULL)
		return NULL;
	c = strdup(s);
	if (c == NULL)
		*failed = true;
	return c;
}

int
db_open(const struct db_conf *conf, struct kasir_db **ret)
{
	struct kasir_db *db;
	bool failed = false;

	if (conf == NULL || conf->url == NULL || ret == NULL)
		return -EINVAL;
	db = calloc(1, sizeof(*db));
	if (db == NULL)
		return -ENOMEM;
	db->url = strdup_or_null(conf->url, &failed);
	db->password = strdup_or_null(conf->password, &failed);
	db->appname = strdup_or_null(conf->application_name, &failed);
	if (failed) {
		db_close(db);
		return -ENOMEM;
	}
	db->connect_timeout_s =
	    conf->connect_timeout_s > 0 ? conf->connect_timeout_s : 5;
	/* 0 (or negative): the server's default */
	db->statement_timeout_ms =
	    conf->statement_timeout_ms > 0 ? conf->statement_timeout_ms : 0;
	db->backoff_ms = DB_BACKOFF_MIN_MS;
	db->next_try_ms = 0;
	(void)db_ensure(db);
	*ret = db;
	return 0;
}

void
db_close(struct kasir_db *db)
{
	if (db == NULL)
		return;
	if (db->pg != NULL)
		PQfinish(db->pg);
	forget_prepared(db);
	if (db->password != NULL) {
		explicit_bzero(db->password, strlen(db->password));
		free(db->password);
	}
	free(db->url);
	free(db->appname);
	free(db);
}

int
db_ensure(struct kasir_db *db)
{
	struct db_conf c;
	char why[256];
	int64_t now;

	if (db == NULL)
		return -EINVAL;
	if (db->pg != NULL) {
		if (PQstatus(db->pg) == CONNECTION_OK)
			return 0;
		mark_broken(db);
	}
	/* a caller asking for a usable connection is past any transaction
	 * it lost: that transaction is over (TX_LOST -> BROKEN) */
	db->state = DB_BROKEN;
	now = now_mono_ms();
	if (now < db->next_try_ms) {
		live_fail(db->live);
		return KASIR_EDB;
	}
	c = (struct db_conf){
	    .url = db->url,
	    .password = db->password,
	    .application_name = db->appname,
	    .connect_timeout_s = db->connect_timeout_s,
	    .statement_timeout_ms = db->statement_timeout_ms,
	};
	db->pg = pg_connect(&c, why, sizeof(why));
	if (db->pg == NULL) {
		if (!db->logged_down)
			log_debug("database connection failed: %s", why);
		db->logged_down = true;
		set_error(db, "", why);
		live_fail(db->live);
		db->next_try_ms = now_mono_ms() + db->backoff_ms;
		db->backoff_ms *= 2;
		if (db->backoff_ms > DB_BACKOFF_MAX_MS)
			db->backoff_ms = DB_BACKOFF_MAX_MS;
		return KASIR_EDB;
	}
	if (db->logged_down)
		log_debug("database connection re-established");
	db->logged_down = false;
	db->backoff_ms = DB_BACKOFF_MIN_MS;
	db->state = DB_IDLE;
	forget_prepared(db);
	return 0;
}

bool
db_is_up(const struct kasir_db *db)
{
	return db != NULL && db->pg != NULL &&
	       (db->state == DB_IDLE || db->state == DB_IN_TX) &&
	       PQstatus(db->pg) == CONNECTION_OK;
}

enum db_state
db_state(const struct kasir_db *db)
{
	return db != NULL ? db->state : DB_BROKEN;
}

const char *
db_state_name(enum db_state st)
{
	switch (st) {
	case DB_BROKEN:
		return "broken";
	case DB_IDLE:
		return "idle";
	case DB_IN_TX:
		return "in_tx";
	case DB_TX_LOST:
		return "tx_lost";
	}
	return "?";
}

void
db_set_label(struct kasir_db *db, const char *label)
{
	if (db != NULL)
		snprintf(db->label, sizeof(db->label), "%s",
		         label != NULL ? label : "");
}

void
db_set_loop(struct kasir_db *db, const char *name, bool periodic,
            int64_t poll_ms)
{
	if (db == NULL || name == NULL)
		return;
	db_set_label(db, name);
	db->live = live_register(
	    name, periodic ? LIVE_PERIODIC : LIVE_ON_DEMAND, poll_ms);
	if (db->pg != NULL && PQstatus(db->pg) == CONNECTION_OK)
		live_ok(db->live); /* db_open() connected it */
}

PGconn *
db_pg(struct kasir_db *db)
{
	if (db == NULL || db->pg == NULL || PQstatus(db->pg) != CONNECTION_OK)
		return NULL;
	return db->pg;
}

/* SQLSTATEs that mean the session is gone even if libpq has not noticed
 * yet: connection exceptions (08xxx) and operator intervention
 * (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now). */
static bool
sqlstate_is_connection(const char *st)
{
	if (st == NULL)
		return false;
	return strncmp(st, "08", 2) == 0 || strcmp(st, "57P01") == 0 ||
	       strcmp(st, "57P02") == 0 || strcmp(st, "57P03") == 0;
}

/*
 * Classifies the result of a command on db->pg.  Takes over res: on
 * success it is stored in *ret_res (or cleared when ret_res is NULL); on
 * failure it is cleared.  Returns 0, KASIR_EDB or KASIR_ESQL.
 */
static int
classify(struct kasir_db *db, PGresult *res, PGresult **ret_res)
{
	ExecStatusType st;
	const char *state;

	if (res == NULL) {
		if (PQstatus(db->pg) != CONNECTION_OK) {
			set_error(db, "", PQerrorMessage(db->pg));
			mark_broken(db);
			return KASIR_EDB;
		}
		set_error(db, "", PQerrorMessage(db->pg));
		return KASIR_ESQL;
	}
	st = PQresultStatus(res);
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ||
	    st == PGRES_EMPTY_QUERY) {
		track_tx(db);
		clear_error(db);
		if (ret_res != NULL)
			*ret_res = res;
		else
			PQclear(res);
		return 0;
	}
	state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (st == PGRES_FATAL_ERROR && (PQstatus(db->pg) != CONNECTION_OK ||
	                                sqlstate_is_connection(state))) {
		set_error(db, state, PQresultErrorMessage(res));
		PQclear(res);
		mark_broken(db);
		return KASIR_EDB;
	}
	{
		const char *primary =
		    PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
		set_error(db, state,
		          primary ? primary : PQresultErrorMessage(res));
	}
	track_tx(db);
	PQclear(res);
	return KASIR_ESQL;
}

/* Makes sure a statement can run now: inside a transaction only on the
 * same, live connection; outside one, reconnecting if allowed. */
static int
db_ready(struct kasir_db *db)
{
	if (db->state == DB_TX_LOST) {
		live_fail(db->live);
		return KASIR_EDB; /* a statement of the lost transaction */
	}
	if (db->state == DB_IN_TX) {
		if (db->pg == NULL || PQstatus(db->pg) != CONNECTION_OK) {
			mark_broken(db);
			return KASIR_EDB;
		}
		return 0;
	}
	return db_ensure(db);
}

static bool
is_prepared(const struct kasir_db *db, const char *name)
{
	for (size_t i = 0; i < db->nprepared; i++)
		if (strcmp(db->prepared[i], name) == 0)
			return true;
	return false;
}

int
db_exec(struct kasir_db *db, const struct db_stmt *stmt,
        const char *const *params, PGresult **ret_res)
{
	PGresult *res;
	int rc;

	if (db == NULL || stmt == NULL || stmt->name == NULL ||
	    stmt->sql == NULL || stmt->nparams < 0 ||
	    (stmt->nparams > 0 && params == NULL))
		return -EINVAL;
	if ((rc = db_ready(db)) < 0)
		return rc;
	db_failpoint(db, stmt->name);
	if (!is_prepared(db, stmt->name) && db->nprepared < DB_MAX_PREPARED) {
		char *copy = strdup(stmt->name);
		if (copy == NULL)
			return -ENOMEM;
		res = PQprepare(db->pg, stmt->name, stmt->sql, stmt->nparams,
		                NULL);
		if ((rc = classify(db, res, NULL)) < 0) {
			free(copy);
			return rc;
		}
		db->prepared[db->nprepared++] = copy;
	}
	if (is_prepared(db, stmt->name))
		res = PQexecPrepared(db->pg, stmt->name, stmt->nparams, params,
		                     NULL, NULL, 0);
	else /* table full: run it unnamed */
		res = PQexecParams(db->pg, stmt->sql, stmt->nparams, NULL,
		                   params, NULL, NULL, 0);
	return classify(db, res, ret_res);
}

/* Prepares stmt on db->pg unless done; 0 or a KASIR_E* code. */
static int
prepare_once(struct kasir_db *db, const struct db_stmt *stmt)
{
	char *copy;
	int rc;

	if (is_prepared(db, stmt->name))
		return 0;
	if (db->nprepared >= DB_MAX_PREPARED)
		return -ENOSPC;
	copy = strdup(stmt->name);
	if (copy == NULL)
		return -ENOMEM;
	rc = classify(
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
		set_error(db, "", PQerrorMessage(db->pg));
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
	if (!is_prepared(db, stmt->name))
		return -EINVAL; /* not given to db_pipe_begin() */
	db_failpoint(db, stmt->name);
	if (PQsendQueryPrepared(db->pg, stmt->name, stmt->nparams, params, NULL,
	                        NULL, 0) != 1) {
		set_error(db, "", PQerrorMessage(db->pg));
		if (PQstatus(db->pg) != CONNECTION_OK) {
			mark_broken(db);
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
		set_error(db, "", PQerrorMessage(db->pg));
		mark_broken(db);
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
			set_error(db, "", PQerrorMessage(db->pg));
			mark_broken(db);
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
		rc = classify(db, res, ret_res);
		if (rc == KASIR_EDB)
			return rc; /* connection gone: nothing more to read */
	}
	/* each statement's results end with a NULL */
	end = PQgetResult(db->pg);
	if (end != NULL) {
		PQclear(end);
		mark_broken(db); /* protocol out of step: start afresh */
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
			mark_broken(db);
			break;
		}
		if (PQresultStatus(res) == PGRES_PIPELINE_SYNC)
			db->pipe_synced--;
		PQclear(res);
	}
	if (db->piping && db->pg != NULL) {
		/* a NULL may still separate the last sync from idle */
		if (PQexitPipelineMode(db->pg) != 1)
			mark_broken(db); /* out of step: start afresh */
		else
			track_tx(db);
	}
	db->piping = false;
	db->pipe_pending = db->pipe_synced = 0;
}

static void
array_put(struct db_array *a, const char *s, size_t len)
{
	if (a->oom)
		return;
	if (a->len + len + 2 > a->cap) {
		size_t cap = a->cap ? a->cap : 1024;
		char *p;
		while (a->len + len + 2 > cap)
			cap *= 2;
		p = realloc(a->text, cap);
		if (p == NULL) {
			a->oom = true;
			return;
		}
		a->text = p;
		a->cap = cap;
	}
	memcpy(a->text + a->len, s, len);
	a->len += len;
	a->text[a->len] = 0;
}

void
db_array_add(struct db_array *a, const char *value)
{
	const char *run, *v;

	array_put(a, a->n == 0 ? "{" : ",", 1);
	a->n++;
	if (value == NULL) {
		array_put(a, "NULL", 4);
		return;
	}
	array_put(a, "\"", 1);
	for (run = v = value; *v != 0; v++) {
		if (*v == '"' || *v == '\\') {
			array_put(a, run, (size_t)(v - run));
			array_put(a, "\\", 1);
			run = v; /* the character itself starts the next run */
		}
	}
	array_put(a, run, (size_t)(v - run));
	array_put(a, "\"", 1);
}

const char *
db_array_text(struct db_array *a)
{
	if (a->n == 0 && a->len == 0)
		array_put(a, "{", 1);
	array_put(a, "}", 1);
	a->len--; /* the closing brace is not part of what add() extends */
	return a->oom ? NULL : a->text;
}

void
db_array_free(struct db_array *a)
{
	free(a->text);
	memset(a, 0, sizeof(*a));
}

/* The failpoint name of a fixed SQL string: its verb ("BEGIN",
 * "SAVEPOINT", "ROLLBACK_TO", "RELEASE", "SELECT"...). */
static void
sql_verb(const char *sql, char *out, size_t len)
{
	size_t n = strcspn(sql, " ;\n");

	if (strncmp(sql, "ROLLBACK TO ", 12) == 0)
		snprintf(out, len, "ROLLBACK_TO");
	else
		snprintf(out, len, "%.*s", (int)(n < 24 ? n : 24), sql);
}

int
db_exec_sql(struct kasir_db *db, const char *sql)
{
	char verb[32];
	int rc;

	if (db == NULL || sql == NULL)
		return -EINVAL;
	if ((rc = db_ready(db)) < 0)
		return rc;
	sql_verb(sql, verb, sizeof(verb));
	db_failpoint(db, verb);
	return classify(db, PQexec(db->pg, sql), NULL);
}

int
db_begin(struct kasir_db *db)
{
	if (db == NULL)
		return -EINVAL;
	/* a new transaction ends a lost one: TX_LOST -> BROKEN, and
	 * db_exec_sql() reconnects from there */
	if (db->state == DB_TX_LOST)
		db->state = DB_BROKEN;
	return db_exec_sql(db, "BEGIN");
}

int
db_commit(struct kasir_db *db)
{
	PGresult *res;
	ExecStatusType st;
	const char *state;

	if (db == NULL)
		return -EINVAL;
	if (db->state == DB_TX_LOST) {
		/* broke before COMMIT was sent: the server rolled it back */
		db->state = DB_BROKEN;
		set_error(db, "", "connection lost inside the transaction");
		return KASIR_EDB;
	}
	if (db->pg == NULL || PQstatus(db->pg) != CONNECTION_OK) {
		/* nothing was sent: whatever was open is rolled back */
		drop_connection(db, true);
		set_error(db, "", "connection lost before COMMIT");
		return KASIR_EDB;
	}
	db_failpoint(db, "COMMIT");
	res = PQexec(db->pg, "COMMIT");
	st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	if (res == NULL || PQstatus(db->pg) != CONNECTION_OK ||
	    (st == PGRES_FATAL_ERROR && sqlstate_is_connection(state))) {
		set_error(db, state,
		          res ? PQresultErrorMessage(res)
		              : PQerrorMessage(db->pg));
		PQclear(res);
		drop_connection(db, true);
		return KASIR_EDBUNKNOWN;
	}
	if (st == PGRES_COMMAND_OK) {
		/* COMMIT of an aborted transaction answers "ROLLBACK" */
		bool rolled_back = strcmp(PQcmdStatus(res), "ROLLBACK") == 0;
		PQclear(res);
		track_tx(db);
		if (rolled_back) {
			set_error(db, "25P02",
			          "transaction was aborted and rolled back");
			return KASIR_ESQL;
		}
		clear_error(db);
		return 0;
	}
	/* refused (deferred constraint, serialization): rolled back */
	(void)classify(db, res, NULL);
	return KASIR_ESQL;
}

/*
 * Ends the transaction, whatever state it is in.  A break seen by the
 * ROLLBACK itself ends in BROKEN, never TX_LOST: the server rolls back a
 * session that dies, so the transaction is over either way.
 */
void
db_rollback(struct kasir_db *db)
{
	PGresult *res;

	if (db == NULL)
		return;
	if (db->state == DB_TX_LOST || db->pg == NULL ||
	    PQstatus(db->pg) != CONNECTION_OK) {
		drop_connection(db, true);
		return;
	}
	if (PQtransactionStatus(db->pg) == PQTRANS_IDLE) {
		db->state = DB_IDLE;
		return;
	}
	db_failpoint(db, "ROLLBACK");
	res = PQexec(db->pg, "ROLLBACK");
	if (res == NULL || PQstatus(db->pg) != CONNECTION_OK ||
	    PQresultStatus(res) != PGRES_COMMAND_OK) {
		set_error(db, "",
		          res ? PQresultErrorMessage(res)
		              : PQerrorMessage(db->pg));
		PQclear(res);
		drop_connection(db, true);
		return;
	}
	PQclear(res);
	track_tx(db);
}

static bool
ident_valid(const char *s)
{
	size_t n;

	if (s == NULL || !(islower((unsigned char)s[0]) || s[0] == '_'))
		return false;
	n = strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_");
	return s[n] == '\0' && n <= DB_IDENT_MAX;
}

static int
savepoint_cmd(struct kasir_db *db, const char *verb, const char *name)
{
	char sql[128];

	if (db == NULL || !ident_valid(name))
		return -EINVAL;
	snprintf(sql, sizeof(sql), "%s %s", verb, name);
	return db_exec_sql(db, sql);
}

int
db_savepoint(struct kasir_db *db, const char *name)
{
	return savepoint_cmd(db, "SAVEPOINT", name);
}

int
db_release(struct kasir_db *db, const char *name)
{
	return savepoint_cmd(db, "RELEASE SAVEPOINT", name);
}

int
db_rollback_to(struct kasir_db *db, const char *name)
{
	return savepoint_cmd(db, "ROLLBACK TO SAVEPOINT", name);
}

const char *
db_last_sqlstate(const struct kasir_db *db)
{
	return db != NULL ? db->sqlstate : "";
}

const char *
db_last_error(const struct kasir_db *db)
{
	return db != NULL ? db->errmsg : "";
}

const char *
db_get(const PGresult *res, int row, int col)
{
	if (res == NULL || row < 0 || col < 0 || row >= PQntuples(res) ||
	    col >= PQnfields(res) || PQgetisnull(res, row, col))
		return NULL;
	return PQgetvalue(res, row, col);
}

int64_t
db_get_i64(const PGresult *res, int row, int col)
{
	const char *v = db_get(res, row, col);

	return v != NULL ? strtoll(v, NULL, 10) : 0;
}

/* ---- migrations ------------------------------------------------------ */

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
	ssize_t got;
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
		            sqlstate_is_connection(state);
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
	static const char open[] = "{{";

	while (*tmpl != '\0') {
		const char *p = strstr(tmpl, open);

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
	    !ident_valid(schema) ||
	    (runtime_role != NULL && !ident_valid(runtime_role)))
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
	if (conf == NULL || !ident_valid(schema) ||
	    (runtime_role != NULL && !ident_valid(runtime_role))) {
		snprintf(why, why_len, "invalid schema or role name");
		return -EINVAL;
	}
	if ((rc = list_migrations(dir, &names, &nnames)) < 0) {
		snprintf(why, why_len, "%s: %s", dir, kasir_strerror(rc));
		return rc;
	}
	pg = pg_connect(conf, why, why_len);
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

	if (db == NULL || !ident_valid(schema) || db->state != DB_IDLE ||
	    db_ensure(db) < 0)
		return false;
	if (list_migrations(dir, &names, &nnames) < 0)
		return false;
	snprintf(sql, sizeof(sql),
	         "SELECT version FROM \"%s\".schema_migrations", schema);
	res = PQexec(db->pg, sql);
	if (classify(db, res, &res) < 0)
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
