/*
 * backbone-producer - test producer for the stream backbone (issue 2).
 *
 * Commits test.effect messages n = 1..test.count on stream "bbtest", each
 * in its own transaction together with a row (n, pos) in
 * bb_producer.produced (pos: the message's place in stream_pending),
 * optionally paced.  With test.writers = K > 1, K threads, each with its
 * own connection (named "bb.writer.<i>" for failpoints), commit the n with
 * n % K == i at the same time, so transactions commit out of pos order.
 * Restartable: each writer continues after its highest n committed.  After
 * the last one it keeps serving replay until SIGTERM/SIGINT.  Prints
 * "produced N" on stdout when done.
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
#include "bb_metrics.h"
#include "config.h"
#include "db.h"
#include "envelope.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "stream.h"
#include "util.h"

#include <pthread.h>

#define BB_STREAM      "bbtest"
#define BB_SCHEMA      "bb_producer"
#define BB_WRITERS_MAX 16

struct bb_conf {
	struct base_conf base;
	int64_t count;
	int64_t pace_us;
	char *runtime_role;
	bool fanout;
	int64_t writers;
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
    {.key = "test.writers",
     .type = CONF_INT,
     .offset = offsetof(struct bb_conf, writers),
     .min = 1,
     .max = BB_WRITERS_MAX,
     .defval = "1"},
    {.key = NULL},
};

static volatile sig_atomic_t stop_requested;

static void
on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static const struct db_stmt st_last = {
    .name = "bb_last",
    .sql = "SELECT coalesce(max(n), 0) FROM bb_producer.produced "
           "WHERE writer = $1::int",
    .nparams = 1};
static const struct db_stmt st_produced = {
    .name = "bb_produced",
    .sql = "INSERT INTO bb_producer.produced (n, pos, writer) "
           "VALUES ($1::bigint, $2::bigint, $3::int)",
    .nparams = 3};

/* The highest n writer has committed. */
static int
read_last(struct kasir_db *db, int writer, int64_t *ret)
{
	char w_s[16];
	const char *params[] = {w_s};
	PGresult *res = NULL;
	int rc;

	snprintf(w_s, sizeof(w_s), "%d", writer);
	rc = db_ensure(db);
	if (rc < 0)
		return rc;
	rc = db_exec(db, &st_last, params, &res);
	if (rc < 0)
		return rc;
	*ret = db_get_i64(res, 0, 0);
	PQclear(res);
	return 0;
}

/* One transaction: the producer-side row and its message. */
static int
produce_one(struct stream_producer *p, struct kasir_db *db, int writer,
            int64_t n)
{
	char n_s[24], pos_s[24], w_s[16];
	const char *params[] = {n_s, pos_s, w_s};
	cJSON *data;
	int64_t pos = 0;
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
	rc = stream_append(p, db, MSG_TEST_EFFECT, data, &pos);
	if (rc < 0)
		goto rollback;
	snprintf(n_s, sizeof(n_s), "%lld", (long long)n);
	snprintf(pos_s, sizeof(pos_s), "%lld", (long long)pos);
	snprintf(w_s, sizeof(w_s), "%d", writer);
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

struct bb_writer {
	const struct bb_conf *conf;
	struct stream_producer *p;
	struct db_conf db;
	int index; /* produces n with n % writers == index */
	pthread_t thread;
	int rc;
};

/* One writer: its n, one transaction each, until count or a stop. */
static void *
writer_main(void *arg)
{
	struct bb_writer *w = arg;
	const struct bb_conf *conf = w->conf;
	int64_t k = conf->writers, next = 0, last = 0;
	struct kasir_db *db = NULL;
	char label[32];
	int rc;

	if ((rc = db_open(&w->db, &db)) < 0) {
		w->rc = rc;
		return NULL;
	}
	snprintf(label, sizeof(label), "bb.writer.%d", w->index);
	db_set_label(db, label);
	while (!stop_requested) {
		if (next == 0) {
			/* (re)start: continue after the last committed n */
			if (read_last(db, w->index, &last) < 0) {
				sleep_ms(100);
				continue;
			}
			next = last > 0 ? last + k
			                : (w->index == 0 ? k : w->index);
		}
		if (next > conf->count)
			break;
		rc = produce_one(w->p, db, w->index, next);
		if (rc < 0) {
			/* unknown outcome or failure: re-read, never guess */
			log_info("produce n=%lld failed: %s, retrying",
			         (long long)next, kasir_strerror(rc));
			next = 0;
			sleep_ms(100);
			continue;
		}
		next += k;
		if (conf->pace_us > 0) {
			struct timespec ts = {
			    .tv_sec = conf->pace_us / 1000000,
			    .tv_nsec = (conf->pace_us % 1000000) * 1000L};

			nanosleep(&ts, NULL);
		}
	}
	db_close(db);
	return NULL;
}

int
main(int argc, char **argv)
{
	struct bb_conf conf;
	struct keyring *kr = NULL;
	struct metrics *m = NULL;
	struct stream_producer *p = NULL;
	struct stream_producer_conf pc;
	struct db_conf rt, owner;
	struct sigaction sa;
	char why[512];
	int rc, exit_code = 1;

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
	rc = db_migrate(&owner, BB_SCHEMA, conf.runtime_role, stream_migrations,
	                STREAM_MIGRATIONS, conf.base.db_migrations, why,
	                sizeof(why));
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
	{
		struct bb_writer w[BB_WRITERS_MAX];
		int64_t k = conf.writers, started = 0;

		for (int64_t i = 0; i < k; i++) {
			w[i] = (struct bb_writer){
			    .conf = &conf, .p = p, .db = rt, .index = (int)i};
			/* writer i of K owns n = i (mod K); writer 0 n = K */
			if (pthread_create(&w[i].thread, NULL, writer_main,
			                   &w[i]) != 0)
				break;
			started++;
		}
		for (int64_t i = 0; i < started; i++)
			pthread_join(w[i].thread, NULL);
		if (started == k && !stop_requested) {
			printf("produced %lld\n", (long long)conf.count);
			fflush(stdout);
		}
	}
	while (!stop_requested)
		sleep_ms(50);
	stream_producer_stop(p);
	p = NULL;
	bb_print_metrics(m);
	exit_code = 0;
out:
	stream_producer_stop(p);
	metrics_free(m);
	keyring_free(kr);
	conf_free(bb_keys, &conf);
	return exit_code;
}
