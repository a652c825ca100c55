/*
 * main.c - kasir-reconciler: start-up, the main loop, shutdown.
 *
 *   --config FILE: load, migrate the recon schema, start the "recon"
 *   stream producer (status.check -> kasir-order, pipeline), the "orders"
 *   stream consumer (watchlist.c), the Status API client (statusapi.c),
 *   the scheduler thread (evidence.c) and the admin socket (admin.c);
 *   loop until SIGTERM; stop in reverse order.
 *
 * Threads: the main loop (daemon_run), the orders consumer (its own
 * connection), the recon producer (publisher + replay threads), the
 * scheduler lanes (schedule.lanes threads, each with its own connection
 * and Status API client: they run every Status API request), the
 * admin socket worker (its own connection) and the metrics scrape (its
 * own connection).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "admin_socket.h"
#include "daemon.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "reconciler.h"
#include "sd.h"
#include "util.h"
#include "stream.h"

static void
register_metrics(struct recon *r, struct metrics *m)
{
	char labels[64];

	for (int v = 0; v < VERDICT_COUNT; v++) {
		snprintf(labels, sizeof(labels), "result=\"%s\"",
		         recon_verdict_name(v));
		r->m.checks[v] =
		    metrics_counter(m, "kasir_reconciler_checks_total", labels,
		                    "Status API answers by result");
	}
	for (int b = 0; b < 5; b++) {
		snprintf(labels, sizeof(labels), "age=\"%s\"",
		         recon_age_buckets[b]);
		r->m.pending[b] =
		    metrics_gauge(m, "kasir_reconciler_pending_orders", labels,
		                  "pending orders by age since creation");
	}
	r->m.oldest_pending =
	    metrics_gauge(m, "kasir_reconciler_oldest_pending_seconds", NULL,
	                  "age of the oldest pending order");
	r->m.past_expiry_unchecked = metrics_gauge(
	    m, "kasir_reconciler_past_expiry_unchecked", NULL,
	    "pending orders past expiry + grace without an expiry check");
	r->m.mode = metrics_gauge(m, "kasir_reconciler_mode", NULL,
	                          "0 normal, 1 reconciliation mode");
	r->m.mode_changes =
	    metrics_counter(m, "kasir_reconciler_mode_changes_total", NULL,
	                    "mode changes (operator and automatic)");
	r->m.auth_failures =
	    metrics_counter(m, "kasir_reconciler_auth_failures_total", NULL,
	                    "Status API answers 401: wrong server key");
	r->m.auth_broken =
	    metrics_gauge(m, "kasir_reconciler_auth_broken", NULL,
	                  "1 while the Status API refuses the server key");
	r->m.published =
	    metrics_counter(m, "kasir_reconciler_published_total", NULL,
	                    "status checks sent to kasir-order (said "
	                    "something new)");
	r->m.stream_lag =
	    metrics_gauge(m, "kasir_reconciler_stream_lag", NULL,
	                  "orders stream messages not yet applied");
	r->m.api.latency =
	    metrics_histogram(m, "kasir_reconciler_api_seconds", NULL,
	                      "Status API request latency",
	                      metrics_latency_bounds, metrics_latency_nbounds);
	r->m.api.errors =
	    metrics_counter(m, "kasir_reconciler_api_errors_total", NULL,
	                    "Status API requests without a usable answer "
	                    "(5xx, timeouts, 401, unexpected)");
	r->m.api.requests =
	    metrics_counter(m, "kasir_reconciler_api_requests_total", NULL,
	                    "Status API requests sent");
}

/* Main loop tick: keeps systemd's STATUS= line current. */
static void
tick(void *arg)
{
	static int64_t last_cur = -1, last_head = -1;
	static int last_mode = -1;
	struct recon *r = arg;
	int64_t cur, head;
	int mode = atomic_load(&r->mode);

	if (r->consumer == NULL)
		return;
	cur = stream_consumer_cursor(r->consumer);
	head = stream_consumer_head(r->consumer);
	if (cur == last_cur && head == last_head && mode == last_mode)
		return;
	last_cur = cur;
	last_head = head;
	last_mode = mode;
	kasir_sd_status("mode %s, orders stream applied %lld of %lld",
	                recon_mode_name((enum recon_mode)mode), (long long)cur,
	                (long long)head);
}

/*
 * The longest a scheduler pass may go without touching the database: its
 * idle poll, plus a claimed batch of Status API calls - batch/concurrency
 * rounds of (retries + 1) whole-request timeouts, and the batch at the
 * global requests-per-second cap.
 */
static int64_t
recon_pass_bound_ms(const struct recon_conf *c)
{
	int64_t conc = c->concurrency > 0 ? c->concurrency : 1;
	int64_t rounds = (c->batch + conc - 1) / conc;
	int64_t rps = c->rps > 0 ? c->rps : 1;

	return c->poll_ms + rounds * c->timeout_ms * (c->retries + 1) +
	       c->batch * 1000 / rps;
}

int
main(int argc, char **argv)
{
	struct recon_conf conf;
	struct recon r;
	struct daemon d;
	struct admin_socket *admin = NULL;
	struct stream_producer_conf pc;
	struct stream_consumer_conf cc;
	struct db_conf dc;
	int rc;

	memset(&conf, 0, sizeof(conf));
	if (!conf_cli(argc, argv, RECON_NAME, recon_conf_keys, &conf, &rc))
		return rc;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "%s: libcurl initialisation failed\n",
		        RECON_NAME);
		conf_free(recon_conf_keys, &conf);
		return 1;
	}

	memset(&r, 0, sizeof(r));
	r.conf = &conf;
	r.d = &d;
	r.sched = (struct sched_conf){
	    .first_check_ms = conf.first_check_ms,
	    .backoff = &conf.backoff,
	    .expiry_grace_ms = conf.expiry_grace_ms,
	    .retry_ms = conf.retry_ms,
	    .retry_max_ms = conf.retry_max_ms,
	};
	atomic_init(&r.stopping, false);
	atomic_init(&r.mode, MODE_NORMAL);
	atomic_init(&r.auth_broken, false);
	atomic_init(&r.auth_paused_until, 0);
	atomic_init(&r.last_check_ms, 0);
	pthread_mutex_init(&r.wake_lock, NULL);
	pthread_mutex_init(&r.scrape_lock, NULL);
	rc = 1;
	if (cond_init_monotonic(&r.wake) < 0)
		goto out_conf;

	if (daemon_init(&d, RECON_NAME, &conf.base, RECON_SCHEMA, RECON_ROLE) <
	    0)
		goto out_conf;
	register_metrics(&r, d.metrics);

	dc = daemon_db_conf(&d);
	r.nlanes = (int)conf.lanes;
	for (int i = 0; i < r.nlanes; i++) {
		struct recon_lane *l = &r.lanes[i];
		char app[64], loop[48];

		l->r = &r;
		l->index = i;
		/* lane 0 keeps the names of the single scheduler */
		if (i == 0) {
			snprintf(app, sizeof(app),
			         "kasir-reconciler-scheduler");
			snprintf(loop, sizeof(loop), "reconciler.scheduler");
		} else {
			snprintf(app, sizeof(app),
			         "kasir-reconciler-scheduler-%d", i);
			snprintf(loop, sizeof(loop), "reconciler.scheduler.%d",
			         i);
		}
		/* the window shared out: the first lanes take the rest */
		l->window = (size_t)(conf.batch / conf.lanes +
		                     (i < conf.batch % conf.lanes ? 1 : 0));
		dc.application_name = app;
		/* Claims and records read a few rows through an index
		 * (db.h), and each statement has one shape: planned once
		 * per connection.  The claim's custom plan took 0.4 ms to
		 * make, more than it took to run; the lanes' PostgreSQL
		 * CPU per payment fell by about a quarter at 100/s
		 * (docs/performance-log.md, "2026-12-07, 23:12-23:25").  The
		 * claim's generic plan stays small without knowing its
		 * limit: tests/reconciler/test_claim_plan.py. */
		dc.index_scans = true;
		dc.generic_plans = true;
		if (db_open(&dc, &l->db) < 0)
			goto out_daemon;
		/* a pass may make window x (retries + 1) Status API calls,
		 * each bounded by the request timeout, between database
		 * passes */
		db_set_loop(l->db, loop, true, recon_pass_bound_ms(&conf));
		if (statusapi_new(&conf, &r.m.api, r.nlanes, &l->api) < 0) {
			log_err("cannot set up the Status API client");
			goto out_daemon;
		}
	}
	dc.index_scans = false;
	dc.generic_plans = false;
	dc.application_name = "kasir-reconciler-admin";
	if (db_open(&dc, &r.admin_db) < 0)
		goto out_daemon;
	dc.application_name = "kasir-reconciler-metrics";
	if (db_open(&dc, &r.scrape_db) < 0)
		goto out_daemon;
	db_set_loop(r.admin_db, "reconciler.admin", false, 0);
	db_set_loop(r.scrape_db, "reconciler.scrape", false, 0);
	if (mode_load(&r, d.db) < 0)
		log_warning("reading the persisted mode failed, starting in "
		            "normal mode until the scheduler reads it");
	metrics_on_scrape(d.metrics, recon_scrape, &r);

	daemon_producer_conf(&d, "recon", false, &pc);
	if ((rc = stream_producer_start(&pc, d.keyring, d.metrics,
	                                &r.producer)) < 0) {
		log_err("starting the recon stream failed: %s",
		        kasir_strerror(rc));
		rc = 1;
		goto out_daemon;
	}
	if (daemon_consumer_conf(&d, "orders", true, &cc) < 0) {
		log_err("no consume entry for the orders stream in the "
		        "configuration");
		rc = 1;
		goto out_producer;
	}
	cc.committed = watchlist_committed;
	/* watchlist_apply appends nothing and keeps no state outside the
	 * transaction (confirm_waiting is only a wake-up hint): a batch is
	 * applied without a SAVEPOINT per message, which keeps the watch
	 * list up with hundreds of payments per second (several orders
	 * stream messages each) */
	cc.optimistic = true;
	cc.apply_batch = watchlist_apply_batch;
	/* its statements join a batch's arrays to recon.watch by primary
	 * key; planned on statistics from before a burst, the join read the
	 * whole table at every batch (24 ms a call at 500 payments/s); and
	 * they have one shape: planned once per connection */
	cc.db.index_scans = true;
	cc.db.generic_plans = true;
	if ((rc = stream_consumer_start(&cc, d.keyring, d.metrics,
	                                watchlist_apply, &r, &r.consumer)) <
	    0) {
		log_err("starting the orders consumer failed: %s",
		        kasir_strerror(rc));
		rc = 1;
		goto out_producer;
	}
	(void)daemon_watch_consumer(&d, r.consumer, "orders");
	if (scheduler_start(&r) < 0) {
		log_err("cannot start the scheduler thread");
		rc = 1;
		goto out_consumer;
	}
	if (conf.base.admin_socket != NULL) {
		struct admin_socket_conf ac = {
		    .url = conf.base.admin_socket,
		    .mode = conf.base.admin_socket_mode,
		    .engineer_group = conf.base.admin_engineer_group,
		    .support_group = conf.base.admin_support_group,
		    .commands = recon_admin_commands,
		    .db = r.admin_db,
		    .audit_stmt = &recon_admin_audit_insert,
		    .refused = admin_log_refused,
		};

		if (admin_socket_start(&ac, &r, &admin) < 0) {
			log_err("cannot start the admin socket on %s",
			        conf.base.admin_socket);
			rc = 1;
			goto out_scheduler;
		}
	}
	log_info("started: mode %s, first check %llds, concurrency %lld, "
	         "%lld requests/s, window %lld in %lld lane(s)",
	         recon_mode_name((enum recon_mode)atomic_load(&r.mode)),
	         (long long)(conf.first_check_ms / 1000),
	         (long long)conf.concurrency, (long long)conf.rps,
	         (long long)conf.batch, (long long)conf.lanes);

	rc = daemon_run(&d, tick, &r) == 0 ? 0 : 1;

	admin_socket_stop(admin);
out_scheduler:
	scheduler_stop(&r);
out_consumer:
	stream_consumer_stop(r.consumer);
	r.consumer = NULL;
out_producer:
	stream_producer_stop(r.producer);
	r.producer = NULL;
out_daemon:
	/* the scrape callback may run until the admin listener stops in
	 * daemon_fini: keep its connection until then */
	daemon_fini(&d, rc);
	for (int i = 0; i < r.nlanes; i++) {
		db_close(r.lanes[i].db);
		statusapi_free(r.lanes[i].api);
	}
	db_close(r.admin_db);
	db_close(r.scrape_db);
out_conf:
	curl_global_cleanup();
	conf_free(recon_conf_keys, &conf);
	pthread_mutex_destroy(&r.scrape_lock);
	pthread_cond_destroy(&r.wake);
	pthread_mutex_destroy(&r.wake_lock);
	return rc;
}
