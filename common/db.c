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
 * there, and after a COMMIT the server made ("<label>:COMMIT-reply": the
 * answer lost); they cost one branch when KASIR_FAILPOINTS is not set.
 *
 * This file: the connection and the transactions.  The pipeline is in
 * db_pipe.c, array literals in db_array.c, the migration runner in
 * db_migrate.c; db_impl.h holds the handle and what they share.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "db_impl.h"
#include "err.h"
#include "failpoint.h"
#include "liveness.h"
#include "log.h"
#include "util.h"

#define DB_BACKOFF_MIN_MS 100
#define DB_BACKOFF_MAX_MS 5000

static void
notice_sink(void *arg, const char *message)
{
	(void)arg;
	log_debug("postgresql: %.*s", (int)strcspn(message, "\n"), message);
}

/* Connects synchronously (bounded by connect_timeout).  Returns the
 * connection or NULL; on failure why gets libpq's message. */
PGconn *
db_pg_connect(const struct db_conf *conf, char *why, size_t why_len)
{
	const char *keys[14], *vals[14];
	char timeout[16], options[128];
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
	/* A server that vanishes without a FIN or RST (a network partition,
	 * a host that died) must not leave a loop blocked in libpq for the
	 * kernel's 2 hours: TCP keepalives after 10 s of silence, 3 probes
	 * 5 s apart, and sent data unacknowledged for 20 s, end the wait
	 * with a broken connection the loop reconnects from.  (A query that
	 * runs long is unaffected: the server's kernel answers both.)
	 * Ignored on a unix socket. */
	keys[n] = "keepalives";
	vals[n++] = "1";
	keys[n] = "keepalives_idle";
	vals[n++] = "10";
	keys[n] = "keepalives_interval";
	vals[n++] = "5";
	keys[n] = "keepalives_count";
	vals[n++] = "3";
	keys[n] = "tcp_user_timeout";
	vals[n++] = "20000";
	/* No JIT, on every connection: kasir's statements each touch a few
	 * rows, and a plan whose estimate crosses jit_above_cost would be
	 * compiled at every execution.  The ingest stream's reader
	 * (producer.c) does cross it with a custom plan: estimate 105,000
	 * for a 3 ms query, 18 ms of JIT in an EXPLAIN.  kasir-ingest's own
	 * sessions were not JIT-compiling it (pg_stat_statements), but that
	 * must not depend on which plan the cache picks. */
	snprintf(options, sizeof(options), "-c jit=off ");
	if (conf->statement_timeout_ms > 0)
		snprintf(options + strlen(options),
		         sizeof(options) - strlen(options),
		         "-c statement_timeout=%d ",
		         conf->statement_timeout_ms);
	/* PostgreSQL plans a prepared statement anew at every execution
	 * while a plan for its parameters looks cheaper than the generic
	 * one, which is always so for the batch statements (unnest of
	 * array parameters): 0.15 ms of planning per execution measured on
	 * ingest's event insert, against 0.02 ms with a generic plan */
	if (conf->generic_plans)
		strcat(options, "-c plan_cache_mode=force_generic_plan ");
	if (conf->index_scans)
		strcat(options, "-c enable_seqscan=off");
	keys[n] = "options";
	vals[n++] = options;
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

void
db_mark_broken(struct kasir_db *db)
{
	drop_connection(db, false);
}

/* The transaction state after a command on a live connection. */
void
db_track_state(struct kasir_db *db)
{
	db->state =
	    PQtransactionStatus(db->pg) != PQTRANS_IDLE ? DB_IN_TX : DB_IDLE;
}

/* After a command that succeeded on a live connection: a sign of life
 * of the loop, unless the server refused its work since and nothing has
 * been done yet inside this transaction (a COMMIT or a write clears
 * db->refused in db_classify; a statement outside a transaction counts
 * here): a loop whose every write is refused must turn silent, though
 * its BEGIN and SELECTs succeed. */
void
db_track_tx(struct kasir_db *db)
{
	db_track_state(db);
	if (db->refused && db->state == DB_IN_TX)
		return;
	db->refused = false;
	live_ok(db->live);
}

/* A command tag that shows the server doing work again after it refused
 * some: a COMMIT, or a write (even of no row: a read-only server refuses
 * an UPDATE before it looks for rows), so that an idle loop whose passes
 * end in ROLLBACK (a claim that found nothing) comes back too. */
static bool
db_tag_is_work(const char *tag)
{
	return strcmp(tag, "COMMIT") == 0 || strncmp(tag, "INSERT ", 7) == 0 ||
	       strncmp(tag, "UPDATE ", 7) == 0 ||
	       strncmp(tag, "DELETE ", 7) == 0 ||
	       strncmp(tag, "MERGE ", 6) == 0;
}

/* An SQLSTATE saying the server cannot do the loop's work at all, for
 * any message: a read-only server (a failover to a standby), disk full
 * or out of resources, a privilege revoked, a statement timeout (a
 * lock held), an I/O error.  Anything else is the statement's own. */
static bool
db_sqlstate_is_refusal(const char *st)
{
	return st != NULL &&
	       (strcmp(st, "25006") == 0 || strncmp(st, "53", 2) == 0 ||
	        strcmp(st, "42501") == 0 || strcmp(st, "57014") == 0 ||
	        strncmp(st, "58", 2) == 0);
}

/*
 * The failpoint named "<label>:<what>", hit just before the command is
 * sent on a live connection.  When it fires with the "break" action the
 * socket is shut down, so the command sees a dead session exactly as it
 * would after a backend kill or a server crash; true then.
 */
bool
db_failpoint(struct kasir_db *db, const char *what)
{
	char name[FAILPOINT_NAME_MAX];

	if (!failpoint_enabled() || db->pg == NULL)
		return false;
	snprintf(name, sizeof(name), "%s:%s", db->label[0] ? db->label : "db",
	         what);
	if (failpoint_hit(name) != FAILPOINT_BREAK)
		return false;
	(void)shutdown(PQsocket(db->pg), SHUT_RDWR);
	return true;
}

void
db_set_error(struct kasir_db *db, const char *sqlstate, const char *msg)
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
	db->generic_plans = conf->generic_plans;
	db->index_scans = conf->index_scans;
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
		db_mark_broken(db);
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
	    .generic_plans = db->generic_plans,
	    .index_scans = db->index_scans,
	};
	db->pg = db_pg_connect(&c, why, sizeof(why));
	if (db->pg == NULL) {
		if (!db->logged_down)
			log_debug("database connection failed: %s", why);
		db->logged_down = true;
		db_set_error(db, "", why);
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
bool
db_sqlstate_is_connection(const char *st)
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
int
db_classify(struct kasir_db *db, PGresult *res, PGresult **ret_res)
{
	ExecStatusType st;
	const char *state;

	if (res == NULL) {
		if (PQstatus(db->pg) != CONNECTION_OK) {
			db_set_error(db, "", PQerrorMessage(db->pg));
			db_mark_broken(db);
			return KASIR_EDB;
		}
		db_set_error(db, "", PQerrorMessage(db->pg));
		return KASIR_ESQL;
	}
	st = PQresultStatus(res);
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ||
	    st == PGRES_EMPTY_QUERY) {
		/* a ROLLBACK, or the COMMIT of an aborted transaction, is
		 * no work done */
		if (strcmp(PQcmdStatus(res), "ROLLBACK") == 0) {
			db_track_state(db);
		} else {
			if (db_tag_is_work(PQcmdStatus(res)))
				db->refused = false;
			db_track_tx(db);
		}
		clear_error(db);
		if (ret_res != NULL)
			*ret_res = res;
		else
			PQclear(res);
		return 0;
	}
	state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (st == PGRES_FATAL_ERROR && (PQstatus(db->pg) != CONNECTION_OK ||
	                                db_sqlstate_is_connection(state))) {
		db_set_error(db, state, PQresultErrorMessage(res));
		PQclear(res);
		db_mark_broken(db);
		return KASIR_EDB;
	}
	{
		const char *primary =
		    PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
		db_set_error(db, state,
		             primary ? primary : PQresultErrorMessage(res));
	}
	db_track_state(db);
	if (db_sqlstate_is_refusal(state)) {
		db->refused = true;
		live_fail(db->live);
	}
	PQclear(res);
	return KASIR_ESQL;
}

/* Makes sure a statement can run now: inside a transaction only on the
 * same, live connection; outside one, reconnecting if allowed. */
int
db_ready(struct kasir_db *db)
{
	if (db->state == DB_TX_LOST) {
		live_fail(db->live);
		return KASIR_EDB; /* a statement of the lost transaction */
	}
	if (db->state == DB_IN_TX) {
		if (db->pg == NULL || PQstatus(db->pg) != CONNECTION_OK) {
			db_mark_broken(db);
			return KASIR_EDB;
		}
		return 0;
	}
	return db_ensure(db);
}

bool
db_is_prepared(const struct kasir_db *db, const char *name)
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
	if (!db_is_prepared(db, stmt->name) &&
	    db->nprepared < DB_MAX_PREPARED) {
		char *copy = strdup(stmt->name);
		if (copy == NULL)
			return -ENOMEM;
		res = DB_WAITED(db, PQprepare(db->pg, stmt->name, stmt->sql,
		                              stmt->nparams, NULL));
		if ((rc = db_classify(db, res, NULL)) < 0) {
			free(copy);
			return rc;
		}
		db->prepared[db->nprepared++] = copy;
	}
	if (db_is_prepared(db, stmt->name))
		res = DB_WAITED(db, PQexecPrepared(db->pg, stmt->name,
		                                   stmt->nparams, params, NULL,
		                                   NULL, 0));
	else /* table full: run it unnamed */
		res =
		    DB_WAITED(db, PQexecParams(db->pg, stmt->sql, stmt->nparams,
		                               NULL, params, NULL, NULL, 0));
	return db_classify(db, res, ret_res);
}

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
	PGresult *res;
	int rc;

	if (db == NULL || sql == NULL)
		return -EINVAL;
	if ((rc = db_ready(db)) < 0)
		return rc;
	sql_verb(sql, verb, sizeof(verb));
	db_failpoint(db, verb);
	res = DB_WAITED(db, PQexec(db->pg, sql));
	return db_classify(db, res, NULL);
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
		db_set_error(db, "", "connection lost inside the transaction");
		return KASIR_EDB;
	}
	if (db->pg == NULL || PQstatus(db->pg) != CONNECTION_OK) {
		/* nothing was sent: whatever was open is rolled back */
		drop_connection(db, true);
		db_set_error(db, "", "connection lost before COMMIT");
		return KASIR_EDB;
	}
	db_failpoint(db, "COMMIT");
	/* no statement_timeout covers a COMMIT waiting for a synchronous
	 * standby: the wait itself is judged (liveness.h) */
	res = DB_WAITED(db, PQexec(db->pg, "COMMIT"));
	st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	if (res == NULL || PQstatus(db->pg) != CONNECTION_OK ||
	    (st == PGRES_FATAL_ERROR && db_sqlstate_is_connection(state))) {
		db_set_error(db, state,
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
		if (rolled_back) {
			db_track_state(db);
		} else {
			db->refused = false; /* work was done */
			db_track_tx(db);
		}
		if (rolled_back) {
			db_set_error(db, "25P02",
			             "transaction was aborted and rolled back");
			return KASIR_ESQL;
		}
		/* "<label>:COMMIT-reply": the server committed and the
		 * connection dies before the answer is read, as after a
		 * crash right after the commit reached the disk.  The caller
		 * must settle the outcome itself (read back, or make the
		 * retry harmless). */
		if (db_failpoint(db, "COMMIT-reply")) {
			db_set_error(db, "", "connection lost during COMMIT");
			drop_connection(db, true);
			return KASIR_EDBUNKNOWN;
		}
		clear_error(db);
		return 0;
	}
	/* refused (deferred constraint, serialization): rolled back */
	(void)db_classify(db, res, NULL);
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
	res = DB_WAITED(db, PQexec(db->pg, "ROLLBACK"));
	if (res == NULL || PQstatus(db->pg) != CONNECTION_OK ||
	    PQresultStatus(res) != PGRES_COMMAND_OK) {
		db_set_error(db, "",
		             res ? PQresultErrorMessage(res)
		                 : PQerrorMessage(db->pg));
		PQclear(res);
		drop_connection(db, true);
		return;
	}
	PQclear(res);
	db_track_state(db); /* a ROLLBACK is no work done */
}

bool
db_ident_valid(const char *s)
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

	if (db == NULL || !db_ident_valid(name))
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
