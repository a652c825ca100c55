/*
 * backbone-consumer - test consumer for the stream backbone (issue 2).
 *
 * Applies test.effect messages of stream "bbtest" by inserting (n, seq)
 * into bb_consumer.effects, in the same transaction as the cursor.  The
 * effects table has no unique constraint on n and a serial applied_order,
 * so a duplicate or an out-of-order application shows in the data.
 * test.reject_n makes the message with that n be refused for good
 * (KASIR_EREJECT: it must land in stream_poison and the stream go on);
 * test.fail_every makes the first attempt to apply every message whose
 * seq is a multiple of N fail transiently (rolled back, retried).
 * With stream.publish/stream.replay set, every applied message is also
 * appended to this consumer's own stream "bbecho" (schema bb_consumer) in
 * the same transaction, and the consumer runs optimistically
 * (stream_consumer_conf.defer): the echo must hold exactly the applied
 * messages, gap-free and in order, whatever failed and was retried.
 *
 *   backbone-consumer --config FILE
 */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

#define BB_STREAM "bbtest"
#define BB_SCHEMA "bb_consumer"

struct bb_conf {
	struct base_conf base;
	char *runtime_role;
	bool fanout;
	int64_t poll_ms;
	int64_t batch_max;
	int64_t reject_n;
	int64_t fail_every;
};

static const struct conf_key bb_keys[] = {
    BASE_CONF_KEYS_FOR(struct bb_conf),
    {.key = "test.runtime_role",
     .type = CONF_STRING,
     .offset = offsetof(struct bb_conf, runtime_role)},
    {.key = "test.fanout",
     .type = CONF_BOOL,
     .offset = offsetof(struct bb_conf, fanout),
     .defval = "true"},
    {.key = "test.poll",
     .type = CONF_DURATION,
     .offset = offsetof(struct bb_conf, poll_ms),
     .min = 10,
     .max = 60000,
     .defval = "2s"},
    {.key = "test.batch_max",
     .type = CONF_INT,
     .offset = offsetof(struct bb_conf, batch_max),
     .min = 1,
     .max = 10000,
     .defval = "256"},
    {.key = "test.reject_n",
     .type = CONF_INT,
     .offset = offsetof(struct bb_conf, reject_n),
     .min = 0,
     .max = 100000000,
     .defval = "0"},
    {.key = "test.fail_every",
     .type = CONF_INT,
     .offset = offsetof(struct bb_conf, fail_every),
     .min = 0,
     .max = 100000000,
     .defval = "0"},
    {.key = NULL},
};

struct bb_state {
	const struct bb_conf *conf;
	struct stream_producer *echo; /* NULL: no echo */
	int64_t last_failed;          /* seq of the last injected failure */
	uint64_t commits;
};

static volatile sig_atomic_t stop_requested;

static void
on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static const struct db_stmt st_effect = {
    .name = "bb_effect",
    .sql = "INSERT INTO bb_consumer.effects (n, seq) "
           "VALUES ($1::bigint, $2::bigint)",
    .nparams = 2};

static int
apply_effect(void *arg, struct kasir_db *db, const struct kasir_msg *msg)
{
	struct bb_state *st = arg;
	char n_s[24], seq_s[24];
	const char *params[] = {n_s, seq_s};
	int64_t n;
	int rc;

	if (msg->type != MSG_TEST_EFFECT)
		return KASIR_EREJECT;
	n = msg_int(msg, "n");
	if (st->conf->fail_every > 0 && msg->seq % st->conf->fail_every == 0 &&
	    msg->seq > st->last_failed) {
		st->last_failed = msg->seq;
		return KASIR_EPEER; /* transient: rolled back and retried */
	}
	if (st->conf->reject_n > 0 && n == st->conf->reject_n)
		return KASIR_EREJECT;
	snprintf(n_s, sizeof(n_s), "%lld", (long long)n);
	snprintf(seq_s, sizeof(seq_s), "%lld", (long long)msg->seq);
	rc = db_exec(db, &st_effect, params, NULL);
	if (rc == 0 && st->echo != NULL)
		rc = stream_append(st->echo, db, MSG_TEST_EFFECT, msg->data,
		                   NULL);
	return rc;
}

static void
echo_kick(struct bb_state *st)
{
	if (st->echo != NULL)
		stream_producer_kick(st->echo);
}

static void
on_committed(void *arg)
{
	struct bb_state *st = arg;

	st->commits++;
	echo_kick(st);
}

int
main(int argc, char **argv)
{
	struct bb_conf conf;
	struct bb_state st;
	struct keyring *kr = NULL;
	struct metrics *m = NULL;
	struct stream_consumer *c = NULL;
	const struct base_consume_conf *cc;
	struct stream_consumer_conf sc;
	struct db_conf rt, owner;
	struct sigaction sa;
	char why[512];
	int rc, exit_code = 1;

	memset(&conf, 0, sizeof(conf));
	if (!conf_cli(argc, argv, "backbone-consumer", bb_keys, &conf, &rc))
		return rc;
	log_open("backbone-consumer", (int)conf.base.log_level);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	memset(&st, 0, sizeof(st));
	st.conf = &conf;

	cc = base_conf_consumer(&conf.base, BB_STREAM);
	if (cc == NULL) {
		log_err("no consume entry for stream %s", BB_STREAM);
		goto out;
	}
	rt = (struct db_conf){.url = conf.base.db_url,
	                      .password = conf.base.db_password.value,
	                      .application_name = "backbone-consumer"};
	owner = (struct db_conf){
	    .url = conf.base.db_migrate_url ? conf.base.db_migrate_url
	                                    : conf.base.db_url,
	    .password = conf.base.db_migrate_url
	                    ? conf.base.db_migrate_password.value
	                    : conf.base.db_password.value,
	    .application_name = "backbone-consumer-migrate"};
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
	if (conf.base.stream_publish != NULL) {
		struct stream_producer_conf pc = {
		    .stream = "bbecho",
		    .schema = BB_SCHEMA,
		    .publish_url = conf.base.stream_publish,
		    .replay_url = conf.base.stream_replay,
		    .fanout = true,
		    .max_frame = (size_t)conf.base.msg_max_frame,
		    .db = rt};
		rc = stream_producer_start(&pc, kr, m, &st.echo);
		if (rc < 0) {
			log_err("echo producer start failed: %s",
			        kasir_strerror(rc));
			goto out;
		}
	}
	sc = (struct stream_consumer_conf){
	    .stream = BB_STREAM,
	    .schema = BB_SCHEMA,
	    .url = cc->url,
	    .replay_url = cc->replay,
	    .fanout = conf.fanout,
	    .fast_path = cc->fast_path,
	    .batch_max = (unsigned)conf.batch_max,
	    .poll_ms = conf.poll_ms,
	    .max_frame = (size_t)conf.base.msg_max_frame,
	    .db = rt,
	    .committed = on_committed,
	    .defer = st.echo};
	rc = stream_consumer_start(&sc, kr, m, apply_effect, &st, &c);
	if (rc < 0) {
		log_err("consumer start failed: %s", kasir_strerror(rc));
		goto out;
	}
	while (!stop_requested) {
		struct timespec ts = {.tv_sec = 0, .tv_nsec = 50 * 1000000L};

		nanosleep(&ts, NULL);
	}
	stream_consumer_stop(c);
	c = NULL;
	bb_print_metrics(m);
	exit_code = 0;
out:
	stream_consumer_stop(c);
	stream_producer_stop(st.echo);
	metrics_free(m);
	keyring_free(kr);
	conf_free(bb_keys, &conf);
	return exit_code;
}
