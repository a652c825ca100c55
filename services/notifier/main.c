/*
 * main.c - kasir-notifier: start-up, the main loop, shutdown.
 *
 *   --config FILE: load, migrate the notify schema, start the orders
 *   stream consumer (jobs.c), the channel tables (email.c, whatsapp.c),
 *   the workers (worker.c) and the admin socket (admin.c); loop until
 *   SIGTERM; stop in reverse order.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "admin_socket.h"
#include "channel.h"
#include "daemon.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "notifier.h"
#include "util.h"
#include "sd.h"
#include "stream.h"

static void
register_metrics(struct notifier *n)
{
	struct metrics *m = n->metrics;
	char labels[64];

	for (int s = 0; s < 7; s++)
		for (int c = 0; c < CHANNEL_COUNT; c++) {
			snprintf(labels, sizeof(labels),
			         "state=\"%s\",channel=\"%s\"",
			         notify_job_states[s], notify_channel_name(c));
			n->m.jobs[s][c] = metrics_gauge(
			    m, "kasir_notifier_jobs", labels,
			    "notification jobs by state and channel");
		}
	for (int c = 0; c < CHANNEL_COUNT; c++) {
		snprintf(labels, sizeof(labels), "channel=\"%s\"",
		         notify_channel_name(c));
		n->m.latency[c] = metrics_histogram(
		    m, "kasir_notifier_send_seconds", labels,
		    "provider call latency", metrics_latency_bounds,
		    metrics_latency_nbounds);
		n->m.sent[c] = metrics_counter(m, "kasir_notifier_sent_total",
		                               labels, "messages sent");
		n->m.uncertain[c] = metrics_counter(
		    m, "kasir_notifier_uncertain_total", labels,
		    "sends whose outcome is unknown (possible duplicates)");
	}
	n->m.oldest_queued =
	    metrics_gauge(m, "kasir_notifier_oldest_queued_seconds", NULL,
	                  "age of the oldest due job not yet sent");
	n->m.oldest_waiting = metrics_gauge(
	    m, "kasir_notifier_oldest_waiting_seconds", NULL,
	    "age of the oldest job not yet sent, from its first attempt or due "
	    "time (retries do not reset it)");
	n->m.oldest_failing = metrics_gauge(
	    m, "kasir_notifier_oldest_failing_seconds", NULL,
	    "time since the first provider failure of the oldest job still "
	    "waiting after one (0: none)");
	n->m.guard_blocked = metrics_counter(
	    m, "kasir_notifier_receipt_guard_blocked_total", NULL,
	    "receipt jobs cancelled because the order was not PAID");
	n->m.cancelled =
	    metrics_counter(m, "kasir_notifier_cancelled_total", NULL,
	                    "jobs cancelled at send time (order "
	                    "no longer pending...)");
	n->m.stream_lag =
	    metrics_gauge(m, "kasir_notifier_stream_lag", NULL,
	                  "orders stream messages not yet applied");
	n->m.paused = metrics_gauge(m, "kasir_notifier_reminders_paused", NULL,
	                            "1 while reminders are paused");
}

static void
consumer_committed(void *arg)
{
	workers_wake(arg);
}

/* Main loop tick: keeps systemd's STATUS= line current. */
static void
tick(void *arg)
{
	static int64_t last_cur = -1, last_head = -1;
	struct notifier *n = arg;
	int64_t cur, head;

	if (n->consumer == NULL)
		return;
	cur = stream_consumer_cursor(n->consumer);
	head = stream_consumer_head(n->consumer);
	if (cur == last_cur && head == last_head)
		return;
	last_cur = cur;
	last_head = head;
	kasir_sd_status("orders stream applied %lld of %lld", (long long)cur,
	                (long long)head);
}

int
main(int argc, char **argv)
{
	struct notifier_conf conf;
	struct notifier n;
	struct daemon d;
	struct admin_socket *admin = NULL;
	struct stream_consumer_conf cc;
	struct admin_socket_conf ac;
	struct db_conf dc;
	int rc = 1;

	memset(&conf, 0, sizeof(conf));
	if (!conf_cli(argc, argv, NOTIFIER_NAME, notifier_conf_keys, &conf,
	              &rc))
		return rc;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "%s: libcurl initialisation failed\n",
		        NOTIFIER_NAME);
		conf_free(notifier_conf_keys, &conf);
		return 1;
	}

	memset(&n, 0, sizeof(n));
	n.conf = &conf;
	n.d = &d;
	pthread_mutex_init(&n.wake_lock, NULL);
	/* monotonic: the workers' idle waits and rate-limit waits must not
	 * stretch when the wall clock is set back */
	if (cond_init_monotonic(&n.wake) < 0) {
		fprintf(stderr, "kasir-notifier: cannot create a condition\n");
		return 1;
	}
	pthread_mutex_init(&n.scrape_lock, NULL);
	rc = 1;

	if (daemon_init(&d, NOTIFIER_NAME, &conf.base, NOTIFIER_SCHEMA,
	                NOTIFIER_ROLE) < 0)
		goto out_conf;
	n.metrics = d.metrics;
	register_metrics(&n);

	n.ops[CHANNEL_EMAIL] = &email_channel_ops;
	n.ops[CHANNEL_WHATSAPP] = &whatsapp_channel_ops;
	n.chan_enabled[CHANNEL_EMAIL] = conf.email_enabled;
	n.chan_enabled[CHANNEL_WHATSAPP] = conf.whatsapp_enabled;
	for (int c = 0; c < CHANNEL_COUNT; c++) {
		int r;

		if (!n.chan_enabled[c] || n.ops[c]->init == NULL)
			continue;
		r = n.ops[c]->init(&conf, &n.chan_state[c]);
		if (r < 0) {
			log_err("channel %s: set-up failed: %s", n.ops[c]->name,
			        kasir_strerror(r));
			goto out_channels;
		}
	}

	dc = daemon_db_conf(&d);
	dc.application_name = "kasir-notifier-admin";
	if (db_open(&dc, &n.admin_db) < 0)
		goto out_channels;
	dc.application_name = "kasir-notifier-metrics";
	if (db_open(&dc, &n.scrape_db) < 0)
		goto out_channels;
	db_set_loop(n.admin_db, "notifier.admin", false, 0);
	db_set_loop(n.scrape_db, "notifier.scrape", false, 0);
	metrics_on_scrape(d.metrics, notifier_scrape, &n);

	if (daemon_consumer_conf(&d, "orders", true, &cc) < 0) {
		log_err("no consume entry for the orders stream in the "
		        "configuration");
		goto out_channels;
	}
	cc.committed = consumer_committed;
	/* jobs_apply keeps nothing outside the transaction: no SAVEPOINT
	 * per message unless one fails (stream.h), and a batch is three
	 * array statements in one pipeline (jobs_apply_batch) */
	cc.optimistic = true;
	cc.apply_batch = jobs_apply_batch;
	/* the batch's array statements have one shape, and their custom
	 * plans hashed whole tables (notify.orders) or read every job
	 * waiting to be sent (job_due) for a batch's few dozen orders:
	 * planned once per connection, through the order_id indexes (db.h) */
	cc.db.generic_plans = true;
	cc.db.index_scans = true;
	if (stream_consumer_start(&cc, d.keyring, d.metrics, jobs_apply, &n,
	                          &n.consumer) < 0) {
		log_err("cannot start the orders stream consumer");
		goto out_channels;
	}
	(void)daemon_watch_consumer(&d, n.consumer, "orders");
	if (workers_start(&n) < 0)
		goto out_workers;

	if (conf.base.admin_socket != NULL) {
		ac = (struct admin_socket_conf){
		    .url = conf.base.admin_socket,
		    .mode = conf.base.admin_socket_mode,
		    .engineer_group = conf.base.admin_engineer_group,
		    .support_group = conf.base.admin_support_group,
		    .commands = notifier_admin_commands,
		    .db = n.admin_db,
		    .audit_stmt = &notifier_admin_audit_insert,
		    .refused = admin_log_refused,
		};
		if (admin_socket_start(&ac, &n, &admin) < 0) {
			log_err("cannot start the admin socket on %s",
			        conf.base.admin_socket);
			goto out_workers;
		}
	}
	log_info("started: %lld worker(s), email %s, whatsapp %s",
	         (long long)conf.workers, conf.email_enabled ? "on" : "off",
	         conf.whatsapp_enabled ? "on" : "off");

	rc = daemon_run(&d, tick, &n);

	admin_socket_stop(admin);
out_workers:
	workers_stop(&n);
	stream_consumer_stop(n.consumer);
	n.consumer = NULL;
out_channels:
	/* the scrape callback may still run until the admin listener stops
	 * in daemon_fini: keep its connection until then */
	daemon_fini(&d, rc);
	db_close(n.admin_db);
	db_close(n.scrape_db);
	for (int c = 0; c < CHANNEL_COUNT; c++)
		if (n.chan_state[c] && n.ops[c]->fini)
			n.ops[c]->fini(n.chan_state[c]);
out_conf:
	curl_global_cleanup();
	conf_free(notifier_conf_keys, &conf);
	pthread_mutex_destroy(&n.scrape_lock);
	pthread_cond_destroy(&n.wake);
	pthread_mutex_destroy(&n.wake_lock);
	return rc;
}
