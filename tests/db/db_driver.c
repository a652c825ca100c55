/*
 * db_driver.c - drives common/db.c one command per stdin line, for
 * db_test.py.  Every command prints exactly one line:
 *   "rc=<int> [key=value...]"
 *
 * Environment: KASIR_TEST_DSN (conninfo without password),
 * KASIR_TEST_PASSWORD (optional), KASIR_TEST_STMT_TIMEOUT_MS (optional).
 *
 * Commands:
 *   q NAME|SQL            db_exec, no parameters; prints rows= v= (first value)
 *   p NAME|SQL|PARAM      db_exec with $1 = PARAM
 *   sql SQL               db_exec_sql
 *   begin | commit | rollback
 *   ensure                db_ensure
 *   pipe NAME|SQL|PARAM   one statement through the pipeline (begin, send,
 *                         sync, result, end)
 *   beginw NAME|SQL|PARAM db_begin_with; prints rows= v= of its result
 *   commitw NAME|SQL|PARAM db_commit_with
 *   txonce NAME|SQL|PARAM  db_tx_once; prints rows= v= of its result
 *   state                 the handle's state
 * Every answer carries db=<state> (broken, idle, in_tx, tx_lost).
 *   up                    db_is_up
 *   ensure_loop N         N x db_ensure back to back; prints ms= elapsed
 *   migrate SCHEMA ROLE DIR     db_migrate with the same DSN; prints why=
 *   applied SCHEMA DIR    db_migrations_applied
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "db.h"
#include "err.h"
#include "liveness.h"
#include "log.h"
#include "stream.h"
#include "util.h"

static void
print_rc(struct kasir_db *db, int rc, PGresult *res)
{
	printf("rc=%d db=%s", rc, db_state_name(db_state(db)));
	if (rc == KASIR_ESQL || rc == KASIR_EDB || rc == KASIR_EDBUNKNOWN)
		printf(" state=%s",
		       db_last_sqlstate(db)[0] ? db_last_sqlstate(db) : "-");
	if (res != NULL) {
		const char *v = db_get(res, 0, 0);
		printf(" rows=%d v=%s", PQntuples(res), v ? v : "NULL");
		PQclear(res);
	}
	printf("\n");
	fflush(stdout);
}

/* Splits "NAME|SQL|PARAM" in place; false when a part is missing. */
static bool
split3(char *arg, char **name, char **sql, char **param)
{
	char *a = arg ? strchr(arg, '|') : NULL, *b;

	if (a == NULL || (b = strchr(a + 1, '|')) == NULL)
		return false;
	*a++ = '\0';
	*b++ = '\0';
	*name = arg;
	*sql = a;
	*param = b;
	return true;
}

int
main(void)
{
	struct db_conf conf = {
	    .url = getenv("KASIR_TEST_DSN"),
	    .password = getenv("KASIR_TEST_PASSWORD"),
	    .application_name = "kasir-db-driver",
	    .connect_timeout_s = 2,
	};
	struct kasir_db *db;
	char line[8192];

	log_open("db-driver", LOG_DEBUG);
	if (conf.url == NULL) {
		fprintf(stderr, "KASIR_TEST_DSN not set\n");
		return 2;
	}
	if (getenv("KASIR_TEST_STMT_TIMEOUT_MS") != NULL)
		conf.statement_timeout_ms =
		    atoi(getenv("KASIR_TEST_STMT_TIMEOUT_MS"));
	conf.generic_plans = getenv("KASIR_TEST_GENERIC_PLANS") != NULL;
	conf.index_scans = getenv("KASIR_TEST_INDEX_SCANS") != NULL;
	if (db_open(&conf, &db) < 0)
		return 2;
	printf("rc=0 up=%d\n", db_is_up(db));
	fflush(stdout);

	while (fgets(line, sizeof(line), stdin) != NULL) {
		char *arg;
		PGresult *res = NULL;
		int rc;

		line[strcspn(line, "\n")] = '\0';
		arg = strchr(line, ' ');
		if (arg != NULL)
			*arg++ = '\0';
		if (strcmp(line, "q") == 0 || strcmp(line, "p") == 0) {
			char *name = arg, *sql = strchr(arg, '|'), *param;
			if (sql == NULL) {
				printf("rc=-22\n");
				continue;
			}
			*sql++ = '\0';
			param = strchr(sql, '|');
			if (param != NULL)
				*param++ = '\0';
			struct db_stmt st = {name, sql, param ? 1 : 0};
			const char *params[1] = {param};
			rc = db_exec(db, &st, param ? params : NULL, &res);
			print_rc(db, rc, rc == 0 ? res : NULL);
		} else if (strcmp(line, "sql") == 0) {
			print_rc(db, db_exec_sql(db, arg), NULL);
		} else if (strcmp(line, "begin") == 0) {
			print_rc(db, db_begin(db), NULL);
		} else if (strcmp(line, "commit") == 0) {
			print_rc(db, db_commit(db), NULL);
		} else if (strcmp(line, "rollback") == 0) {
			db_rollback(db);
			print_rc(db, 0, NULL);
		} else if (strcmp(line, "pipe") == 0) {
			char *name, *sql, *param;
			if (!split3(arg, &name, &sql, &param)) {
				printf("rc=-22\n");
				continue;
			}
			struct db_stmt st = {name, sql, 1};
			const struct db_stmt *stp = &st;
			const char *params[1] = {param};
			if ((rc = db_pipe_begin(db, &stp, 1)) == 0) {
				if ((rc = db_pipe_send(db, &st, params)) == 0 &&
				    (rc = db_pipe_sync(db)) == 0)
					rc = db_pipe_result(db, NULL);
				db_pipe_end(db);
			}
			print_rc(db, rc, NULL);
		} else if (strcmp(line, "beginw") == 0 ||
		           strcmp(line, "commitw") == 0 ||
		           strcmp(line, "txonce") == 0) {
			char *name, *sql, *param;
			if (!split3(arg, &name, &sql, &param)) {
				printf("rc=-22\n");
				continue;
			}
			struct db_stmt st = {name, sql, 1};
			const char *params[1] = {param};
			if (line[0] == 'b') {
				rc = db_begin_with(db, &st, params, &res);
				print_rc(db, rc, rc == 0 ? res : NULL);
			} else if (line[0] == 't') {
				const struct db_stmt *stp = &st;
				const char *const *ps = params;
				rc = db_tx_once(db, 1, &stp, &ps, &res);
				print_rc(db, rc, rc == 0 ? res : NULL);
			} else {
				const struct db_stmt *stp = &st;
				const char *const *ps = params;
				print_rc(db, db_commit_with(db, 1, &stp, &ps),
				         NULL);
			}
		} else if (strcmp(line, "state") == 0) {
			print_rc(db, 0, NULL);
		} else if (strcmp(line, "loop") == 0) {
			/* the handle reports to a periodic loop "db.test" */
			db_set_loop(db, "db.test", true, 1000);
			printf("rc=0\n");
		} else if (strcmp(line, "live") == 0) {
			struct live_status ls[LIVE_LOOPS_MAX];
			size_t n = live_snapshot(ls, LIVE_LOOPS_MAX);
			long long age = -1;
			for (size_t i = 0; i < n; i++)
				if (strcmp(ls[i].name, "db.test") == 0)
					age = (long long)ls[i].ok_age_ms;
			printf("rc=0 ok_age_ms=%lld\n", age);
		} else if (strcmp(line, "sockopt") == 0) {
			/* the client side of the connection: keepalives and
			 * the unacknowledged-data timeout (db_pg_connect) */
			int fd = db_pg(db) ? PQsocket(db_pg(db)) : -1;
			int ka = -1, idle = -1, intvl = -1, cnt = -1, uto = -1;
			socklen_t l = sizeof(int);
			getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &ka, &l);
			getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, &l);
			getsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, &l);
			getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, &l);
			getsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, &l);
			printf("rc=0 keepalive=%d idle=%d intvl=%d cnt=%d "
			       "user_timeout=%d\n",
			       ka, idle, intvl, cnt, uto);
		} else if (strcmp(line, "ensure") == 0) {
			print_rc(db, db_ensure(db), NULL);
		} else if (strcmp(line, "up") == 0) {
			printf("rc=0 up=%d\n", db_is_up(db));
		} else if (strcmp(line, "ensure_loop") == 0) {
			int n = atoi(arg), fails = 0;
			int64_t t0 = now_mono_ms();
			for (int i = 0; i < n; i++)
				if (db_ensure(db) < 0)
					fails++;
			printf("rc=0 ms=%lld fails=%d\n",
			       (long long)(now_mono_ms() - t0), fails);
		} else if (strcmp(line, "migrate") == 0) {
			char schema[64], role[64], dir[4096], why[512] = "";
			if (sscanf(arg, "%63s %63s %4095s", schema, role,
			           dir) != 3) {
				printf("rc=-22\n");
				continue;
			}
			rc = db_migrate(&conf, schema, role, stream_migrations,
			                STREAM_MIGRATIONS, dir, why,
			                sizeof(why));
			for (char *c = why; *c; c++)
				if (*c == '\n')
					*c = ' ';
			printf("rc=%d why=%s\n", rc, why);
		} else if (strcmp(line, "applied") == 0) {
			char schema[64], dir[4096];
			if (sscanf(arg, "%63s %4095s", schema, dir) != 2) {
				printf("rc=-22\n");
				continue;
			}
			printf("rc=0 applied=%d\n",
			       db_migrations_applied(db, schema,
			                             stream_migrations,
			                             STREAM_MIGRATIONS, dir));
		} else {
			printf("rc=-22 unknown=%s\n", line);
		}
		fflush(stdout);
	}
	db_close(db);
	return 0;
}
