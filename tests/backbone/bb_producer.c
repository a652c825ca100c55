/*
 * backbone-producer - test producer for the stream backbone (issue 2).
 *
 * Commits test.effect messages n = 1..test.count on stream "bbtest", each
 * in its own transaction together with a row (n, seq) in
 * bb_producer.produced, optionally paced.  Restartable: it continues after
 * the highest n committed.  After the last one it keeps serving replay
 * until SIGTERM/SIGINT.  Prints "produced N" on stdout when done.
 *
 *   backbone-producer --config FILE
 */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "base_conf.h"
#include "config.h"
#include "db.h"
#include "envelope.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "stream.h"
#include "util.h"

#define BB_STREAM "bbtest"
#define BB_SCHEMA "bb_producer"

struct bb_conf {
	struct base_conf base;
	int64_t count;
	int64_t pace_us;
	char *runtime_role;
	bool fanout;
};

static const struct conf_key bb_keys[] = {
    BASE_CONF_KEYS_FOR(struct bb_conf),
    {.key = "test.count",
     .type = CONF_INT,
     .offset = offsetof(struct bb_conf, count),
     .required = true,
     .min = 0,
     .max = 100000000},
    {.key = "test.pace_us",
     .type = CONF_INT,
     .offset = offsetof(struct bb_conf, pace_us),
     .min = 0,
     .max = 10000000,
     .defval = "0"},
    {.key = "test.runtime_role",
     .type = CONF_STRING,
     .offset = offsetof(struct bb_conf, runtime_role)},
    {.key = "test.fanout",
     .type = CONF_BOOL,
     .offset = offsetof(struct bb_conf, fanout),
     .defval = "true"},
    {.key = NULL},
};

static volatile sig_atomic_t stop_requested;

static void
on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void
sleep_ms(int64_t ms)
{
	struct timespec ts = {.tv_sec = ms / 1000,
	                      .tv_nsec = (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

static const struct db_stmt st_last = {
    .name = "bb_last",
    .sql = "SELECT coalesce(max(n), 0) FROM bb_producer.produced",
    .nparams = 0};
static const struct db_stmt st_produced = {
    .name = "bb_produced",
    .sql = "INSERT INTO bb_producer.produced (n, seq) "
           "VALUES ($1::bigint, $2::bigint)",
    .nparams = 2};

static int
read_last(struct kasir_db *db, int64_t *ret)
{
	PGresult *res = NULL;
	int rc;

	rc = db_ensure(db);
	if (rc < 0)
		return rc;
	rc = db_exec(db, &st_last, NULL, &res);
	if (rc < 0)
		return rc;
	*ret = db_get_i64(res, 0, 0);
	PQclear(res);
	return 0;
}

/* One transaction: the producer-side row and its message. */
static int
produce_one(struct stream_producer *p, struct kasir_db *db, int64_t n)
{
	char n_s[24], seq_s[24];
	const char *params[] = {n_s, seq_s};
	cJSON *data;
	int64_t seq = 0;
	int rc;

	data = cJSON_CreateObject();
	if (data == NULL ||
	    cJSON_AddNumberToObject(data, "n", (double)n) == NULL) {
		cJSON_Delete(data);
		return -ENOMEM;
	}
	rc = db_begin(db);
	if (rc < 0)
		goto out;
	rc = stream_append(p, db, MSG_TEST_EFFECT, data, &seq);
	if (rc < 0)
		goto rollback;
	snprintf(n_s, sizeof(n_s), "%lld", (long long)n);
	snprintf(seq_s, sizeof(seq_s), "%lld", (long long)seq);
	rc = db_exec(db, &st_produced, params, NULL);
	if (rc < 0)
		goto rollback;
	rc = db_commit(db);
	if (rc == 0)
		stream_producer_kick(p);
	goto out;
rollback:
	db_rollback(db);
out:
	cJSON_Delete(data);
	return rc;
}

int
main(int argc, char **argv)
{
	struct bb_conf conf;
	struct keyring *kr = NULL;
	struct metrics *m = NULL;
	struct stream_producer *p = NULL;
	struct kasir_db *db = NULL;
	struct stream_producer_conf pc;
	struct db_conf rt, owner;
	struct sigaction sa;
	char why[512];
	int64_t next = 0, last = 0;
	int rc, exit_code = 1;
	bool done = false;

	memset(&conf, 0, sizeof(conf));
	if (!conf_cli(argc, argv, "backbone-producer", bb_keys, &conf, &rc))
		return rc;
	log_open("backbone-producer", (int)conf.base.log_level);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	rt = (struct db_conf){.url = conf.base.db_url,
	                      .password = conf.base.db_password.value,
	                      .application_name = "backbone-producer"};
	owner = (struct db_conf){
	    .url = conf.base.db_migrate_url ? conf.base.db_migrate_url
	                                    : conf.base.db_url,
	    .password = conf.base.db_migrate_url
	                    ? conf.base.db_migrate_password.value
	                    : conf.base.db_password.value,
	    .application_name = "backbone-producer-migrate"};
	rc = db_migrate(&owner, BB_SCHEMA, conf.runtime_role, &stream_migration,
	                1, conf.base.db_migrations, why, sizeof(why));
	if (rc < 0) {
		log_err("migration failed: %s", why);
		goto out;
	}
	rc = base_conf_keyring(&conf.base, &kr);
	if (rc == 0)
		rc = metrics_new(&m);
	if (rc < 0) {
		log_err("set-up failed: %s", kasir_strerror(rc));
		goto out;
	}
	pc = (struct stream_producer_conf){
	    .stream = BB_STREAM,
	    .schema = BB_SCHEMA,
	    .publish_url = conf.base.stream_publish,
	    .replay_url = conf.base.stream_replay,
	    .fanout = conf.fanout,
	    .heartbeat_ms = conf.base.stream_heartbeat_ms,
	    .max_frame = (size_t)conf.base.msg_max_frame,
	    .db = rt};
	rc = stream_producer_start(&pc, kr, m, &p);
	if (rc < 0) {
		log_err("producer start failed: %s", kasir_strerror(rc));
		goto out;
	}
	rc = db_open(&rt, &db);
	if (rc < 0)
		goto out;

	while (!stop_requested) {
		if (done) {
			sleep_ms(50);
			continue;
		}
		if (next == 0) {
			/* (re)start: continue after the last committed n */
			if (read_last(db, &last) < 0) {
				sleep_ms(100);
				continue;
			}
			next = last + 1;
		}
		if (next > conf.count) {
			printf("produced %lld\n", (long long)conf.count);
			fflush(stdout);
			done = true;
			continue;
		}
		rc = produce_one(p, db, next);
		if (rc < 0) {
			/* unknown outcome or failure: re-read, never guess */
			log_info("produce n=%lld failed: %s, retrying",
			         (long long)next, kasir_strerror(rc));
			next = 0;
			sleep_ms(100);
			continue;
		}
		next++;
		if (conf.pace_us > 0) {
			struct timespec ts = {
			    .tv_sec = conf.pace_us / 1000000,
			    .tv_nsec = (conf.pace_us % 1000000) * 1000L};

			nanosleep(&ts, NULL);
		}
	}
	exit_code = 0;
out:
	stream_producer_stop(p);
	db_close(db);
	metrics_free(m);
	keyring_free(kr);
	conf_free(bb_keys, &conf);
	return exit_code;
}
