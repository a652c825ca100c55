/*
 * kasir-order: orders, the payment state machine and course access.
 *
 * Threads: the main loop (daemon_run), the HTTP API (libmicrohttpd
 * threads, a pool of database connections), the admin socket worker (its
 * own connection), two stream consumers ("ingest" and "recon", each with
 * its own connection) that apply evidence, and the "orders" producer
 * (publisher + replay threads).  Every state change and the message it
 * causes commit together; see evidence.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "admin_socket.h"
#include "daemon.h"
#include "err.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "evidence.h"
#include "order.h"
#include "stream.h"
#include "util.h"

static void
kick_orders(void *arg)
{
	struct order_service *s = arg;
	stream_producer_kick(s->producer);
}

static const char *const consumed[] = {"ingest", "recon"};

#define CONSISTENCY_EVERY_MS 15000

/* PAID orders without an active entitlement: the SOP's P1 "paid but access
 * inactive", exported for the alert rules.  Counted on the main loop's own
 * connection (never on the scrape thread). */
static const struct db_stmt st_count_paid_no_access = {
    .name = "main_count_paid_no_access",
    .sql = "SELECT count(*) FROM orders.orders o"
           " WHERE " ORDER_PAID_WITHOUT_ACCESS,
    .nparams = 0,
};

/* Orders whose held notification has waited for the Status API for more
 * than a minute (confirm.c): the Status API is down or slow, customers
 * who paid wait for their access.  A scan of the table every
 * CONSISTENCY_EVERY_MS, like the count above: awaiting_since has no index
 * on purpose (migration 0012: it made every payment's two updates of its
 * order row non-HOT). */
static const struct db_stmt st_count_awaiting = {
    .name = "main_count_awaiting",
    .sql = "SELECT count(*) FROM orders.orders WHERE awaiting_since <"
           " now() - interval '1 minute'",
    .nparams = 0,
};

/* The mode, for the database's transition guard (migrations/0003). */
static const struct db_stmt st_settings = {
    .name = "main_settings",
    .sql = "UPDATE orders.settings SET signature_only = $1::bool,"
           " written_at = now(), written_by = 'kasir-order start'"
           " WHERE id = 1",
    .nparams = 1,
};

/* Tells the database the mode and warns when it is signature_only. */
static int
write_mode(struct daemon *d, const struct order_conf *conf)
{
	const char *p[1] = {conf->signature_only ? "true" : "false"};
	int rc;

	if (conf->signature_only)
		log_warning(
		    "order.signature_only is on: a signed notification moves "
		    "orders without a Midtrans Status API confirmation; its "
		    "unsigned fields (transaction_status, fraud_status...) can "
		    "be rewritten by anyone who saw one genuine notification");
	else
		log_info("notifications are confirmed with the Midtrans Status "
		         "API before they move an order");
	if ((rc = db_ensure(d->db)) < 0 ||
	    (rc = db_exec(d->db, &st_settings, p, NULL)) < 0)
		log_err("writing order.signature_only to orders.settings "
		        "failed: %s",
		        kasir_strerror(rc));
	return rc;
}

struct order_tick {
	struct daemon *d;
	struct metric *paid_no_access;
	struct metric *awaiting;
	int64_t last_ms;
};

static void
order_tick(void *arg)
{
	struct order_tick *t = arg;
	PGresult *res = NULL;
	int64_t now = now_mono_ms();

	if (now - t->last_ms < CONSISTENCY_EVERY_MS)
		return;
	t->last_ms = now;
	if (db_ensure(t->d->db) < 0 || store_facts_begin(t->d->db) < 0)
		return;
	if (db_exec(t->d->db, &st_count_paid_no_access, NULL, &res) == 0)
		metric_set(t->paid_no_access, (double)db_get_i64(res, 0, 0));
	PQclear(res);
	res = NULL;
	if (db_exec(t->d->db, &st_count_awaiting, NULL, &res) == 0)
		metric_set(t->awaiting, (double)db_get_i64(res, 0, 0));
	PQclear(res);
	db_rollback(t->d->db);
}

int
main(int argc, char **argv)
{
	struct order_conf conf;
	struct order_service svc;
	struct daemon d;
	struct db_conf dbc;
	struct stream_producer_conf pc;
	struct stream_consumer *cons[2] = {NULL, NULL};
	struct http_server *http = NULL;
	struct admin_socket *adm = NULL;
	int rc, exit_code = 1;

	memset(&conf, 0, sizeof(conf));
	if (!conf_cli(argc, argv, "kasir-order", order_conf_keys, &conf, &rc))
		return rc;
	memset(&svc, 0, sizeof(svc));
	svc.conf = &conf;
	if (snap_global_init() < 0)
		goto out_conf;
	if (daemon_init(&d, "kasir-order", &conf.base, "orders",
	                "kasir_order") < 0)
		goto out_conf;
	order_metrics_init(&svc.m, d.metrics);
	if (write_mode(&d, &conf) < 0)
		goto out_daemon;
	dbc = daemon_db_conf(&d);
	dbc.application_name = "kasir-order";

	daemon_producer_conf(&d, "orders", true, &pc);
	if ((rc = stream_producer_start(&pc, d.keyring, d.metrics,
	                                &svc.producer)) < 0) {
		log_err("starting the orders stream failed: %s",
		        kasir_strerror(rc));
		goto out_daemon;
	}
	if ((rc = db_pool_init(&svc.pool, &dbc, (unsigned)conf.http_threads)) <
	        0 ||
	    (rc = db_open(&dbc, &svc.admin_db)) < 0) {
		log_err("opening database connections failed: %s",
		        kasir_strerror(rc));
		goto out_producer;
	}
	db_set_loop(svc.admin_db, "order.admin", false, 0);
	for (size_t i = 0; i < 2; i++) {
		struct stream_consumer_conf cc;
		rc = daemon_consumer_conf(&d, consumed[i], false, &cc);
		if (rc == -ENOENT) {
			log_warning("no consume entry for stream %s, not "
			            "applying its evidence",
			            consumed[i]);
			continue;
		}
		if (rc < 0)
			goto out_consumers;
		cc.committed = kick_orders;
		/* the evidence path's statements have one shape: planned once
		 * per connection, not at every execution (db.h) */
		cc.db.generic_plans = true;
		/* ...and through the indexes: a generic plan made while
		 * orders.orders was small scanned it whole for every batch
		 * for the life of the connection (100 payments/s, 1,500
		 * orders: 6,449 scans, 1.4 ms an UPDATE of one row;
		 * docs/performance.md (f)).  Every statement of the path
		 * finds its orders by order_id. */
		cc.db.index_scans = true;
		/* evidence.c keeps nothing outside the transaction: apply
		 * each batch without a savepoint per message and write its
		 * order events with one statement (stream.h) */
		cc.defer = svc.producer;
		cc.apply_batch = order_apply_evidence_batch;
		rc =
		    stream_consumer_start(&cc, d.keyring, d.metrics,
		                          order_apply_evidence, &svc, &cons[i]);
		if (rc < 0) {
			log_err("starting the %s consumer failed: %s",
			        consumed[i], kasir_strerror(rc));
			goto out_consumers;
		}
		(void)daemon_watch_consumer(&d, cons[i], consumed[i]);
	}
	{
		struct http_server_conf hc = {
		    .listen = conf.http_listen,
		    .max_connections = (unsigned)conf.http_max_connections,
		    .per_ip_connections = (unsigned)conf.http_per_ip,
		    .timeout_s = (unsigned)(conf.http_timeout_ms / 1000),
		    .body_max = (size_t)conf.http_body_max,
		    .threads = (unsigned)conf.http_threads,
		    .name = "api",
		};
		if ((rc = http_server_start(&hc, api_handle, &svc, &http)) <
		    0) {
			log_err("listening on %s failed: %s", conf.http_listen,
			        kasir_strerror(rc));
			goto out_consumers;
		}
	}
	if (conf.base.admin_socket != NULL) {
		struct admin_socket_conf ac = {
		    .url = conf.base.admin_socket,
		    .mode = conf.base.admin_socket_mode,
		    .engineer_group = conf.base.admin_engineer_group,
		    .support_group = conf.base.admin_support_group,
		    .commands = order_admin_commands,
		    .db = svc.admin_db,
		    .audit_stmt = &order_admin_audit_insert,
		    .refused = admin_log_refused,
		};
		if ((rc = admin_socket_start(&ac, &svc, &adm)) < 0) {
			log_err("admin socket %s failed: %s",
			        conf.base.admin_socket, kasir_strerror(rc));
			goto out_http;
		}
	}
	log_info("kasir-order ready: api on %s, %zu courses", conf.http_listen,
	         conf.courses.count);
	{
		struct order_tick t = {
		    .d = &d,
		    .paid_no_access = metrics_gauge(
		        d.metrics, "kasir_order_paid_without_access", NULL,
		        "PAID orders without an active entitlement (SOP P1)"),
		    .awaiting = metrics_gauge(
		        d.metrics, "kasir_order_awaiting_confirmation", NULL,
		        "orders whose notification has waited more than a "
		        "minute for the Midtrans Status API's confirmation"),
		    .last_ms = 0,
		};
		exit_code = daemon_run(&d, order_tick, &t) == 0 ? 0 : 1;
	}

	admin_socket_stop(adm);
out_http:
	http_server_stop(http);
out_consumers:
	for (size_t i = 0; i < 2; i++)
		stream_consumer_stop(cons[i]);
	db_close(svc.admin_db);
	if (svc.pool.n > 0)
		db_pool_fini(&svc.pool);
out_producer:
	stream_producer_stop(svc.producer);
out_daemon:
	daemon_fini(&d, exit_code);
out_conf:
	conf_free(order_conf_keys, &conf);
	return exit_code;
}
