/*
 * kasir-ingest - the public endpoint Midtrans posts payment notifications
 * to (ARCHITECTURE.md, issue 3).
 *
 * One request, in this order: body cap (413, enforced by the http helper
 * while reading), JSON content type (415), a well-formed notification (400
 * with a stable reason code), the signature against every configured
 * server key (403, counted, the body quarantined), the status_code against
 * transaction_status (400 inconsistent_status, counted, the body
 * quarantined; status_consistency.c), the per-source rate limit (429 +
 * Retry-After) - checked before anything reaches the database - then the
 * request is deferred and handed to the committer, which answers 200
 * {"status":"ok","event_id":N} only after its payment_event row (which is
 * also its ingest stream message: store.c) is committed, or 503 when it
 * could not be.
 *
 * Start-up and shutdown follow common/daemon.h.  Shutdown order matters:
 * the committer drains first (every deferred request gets its answer),
 * then the listener stops, then what the handlers used.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "admin_socket.h"
#include "daemon.h"
#include "err.h"
#include "http.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "sd.h"
#include "stream.h"
#include "util.h"

struct ingest {
	const struct ingest_conf *conf;
	struct ingest_metrics im;
	struct notif_key keys[INGEST_SERVER_KEYS_MAX];
	size_t nkeys;
	struct ratelimit_table *rl;
	struct ingest_store *store;
	struct ingest_quarantine *quarantine;
	struct tbucket log_budget; /* refusal log lines: an attacker must not
	                              flood the journal */
	atomic_uint_fast64_t log_suppressed;
	atomic_bool serving; /* public listener up: /readyz may say ready */
	atomic_bool closing;
};

int
ingest_metrics_register(struct metrics *m, struct ingest_metrics *im)
{
	static const char *const outcome[OUT_COUNT] = {
	    [OUT_2XX] = "outcome=\"2xx\"", [OUT_400] = "outcome=\"400\"",
	    [OUT_403] = "outcome=\"403\"", [OUT_404] = "outcome=\"404\"",
	    [OUT_405] = "outcome=\"405\"", [OUT_413] = "outcome=\"413\"",
	    [OUT_415] = "outcome=\"415\"", [OUT_429] = "outcome=\"429\"",
	    [OUT_5XX] = "outcome=\"5xx\"",
	};
	static const double batch_bounds[] = {1,  2,  4,   8,   16,
	                                      32, 64, 128, 256, 512};

	memset(im, 0, sizeof(*im));
	for (int i = 0; i < OUT_COUNT; i++)
		im->requests[i] = metrics_counter(
		    m, "kasir_ingest_requests_total", outcome[i],
		    "notification requests by answer");
	im->commit_seconds = metrics_histogram(
	    m, "kasir_ingest_commit_seconds", NULL,
	    "time to write and commit one batch of notifications",
	    metrics_latency_bounds, metrics_latency_nbounds);
	im->batch_size =
	    metrics_histogram(m, "kasir_ingest_batch_size", NULL,
	                      "notifications committed per transaction",
	                      batch_bounds, ARRAY_SIZE(batch_bounds));
	im->signature_failures =
	    metrics_counter(m, "kasir_ingest_signature_failures_total", NULL,
	                    "notifications refused for a bad signature");
	im->status_mismatches = metrics_counter(
	    m, "kasir_ingest_status_mismatch_total", NULL,
	    "signed notifications refused because status_code does not go "
	    "with transaction_status (a rewritten body)");
	im->quarantine_dropped = metrics_counter(
	    m, "kasir_ingest_quarantine_dropped_total", NULL,
	    "refused bodies not kept (budget, cap or database down)");
	im->quarantine_stored =
	    metrics_counter(m, "kasir_ingest_quarantine_stored_total", NULL,
	                    "refused bodies kept in ingest.quarantine");
	im->queue_depth =
	    metrics_gauge(m, "kasir_ingest_queue_depth", NULL,
	                  "verified notifications waiting for the committer");
	im->last_notification =
	    metrics_gauge(m, "kasir_ingest_last_notification_timestamp_seconds",
	                  NULL, "unix time of the last stored notification");
	im->stored = metrics_counter(m, "kasir_ingest_stored_total", NULL,
	                             "notifications stored in payment_event");
	im->commit_failures =
	    metrics_counter(m, "kasir_ingest_commit_failures_total", NULL,
	                    "batches that could not be committed");
	for (int i = 0; i < OUT_COUNT; i++)
		if (im->requests[i] == NULL)
			return -ENOMEM;
	if (im->commit_seconds == NULL || im->batch_size == NULL ||
	    im->signature_failures == NULL || im->status_mismatches == NULL ||
	    im->quarantine_dropped == NULL || im->quarantine_stored == NULL ||
	    im->queue_depth == NULL || im->last_notification == NULL ||
	    im->stored == NULL || im->commit_failures == NULL)
		return -ENOMEM;
	return 0;
}

#define REFUSAL_LOG_RATE  5.0 /* lines per second */
#define REFUSAL_LOG_BURST 20.0

/* May a refusal be logged now?  Says once how many were not. */
static bool
refusal_log_ok(struct ingest *g)
{
	uint64_t n;

	if (!tbucket_take(&g->log_budget, NULL)) {
		atomic_fetch_add(&g->log_suppressed, 1);
		return false;
	}
	n = atomic_exchange(&g->log_suppressed, 0);
	if (n > 0)
		log_notice("%llu refusal log line(s) suppressed (rate limit)",
		           (unsigned long long)n);
	return true;
}

static int
answer(struct ingest *g, struct http_response *resp, enum ingest_outcome o,
       int status, const char *code, const char *message)
{
	metric_inc(g->im.requests[o]);
	return http_error(resp, status, code, message);
}

/* The notification endpoint.  Runs on MHD's threads, concurrently. */
static int
handle_request(void *arg, const struct http_request *req,
               struct http_response *resp)
{
	struct ingest *g = arg;
	struct notification n = {0};
	struct notif_reject why = {0};
	struct ingest_item *it;
	char source[64];
	int64_t received_ms = now_real_ms(), wait_ms = 0;
	size_t key;
	int r;

	if (strcmp(req->path, g->conf->path) != 0)
		return answer(g, resp, OUT_404, 404, "not_found",
		              "no such endpoint");
	if (strcmp(req->method, "POST") != 0) {
		http_add_header(resp, "Allow", "POST");
		return answer(g, resp, OUT_405, 405, "method_not_allowed",
		              "notifications are POSTed");
	}
	if (req->body_len > (size_t)g->conf->body_max)
		return answer(g, resp, OUT_413, 413, "body_too_large",
		              "the body exceeds the limit");
	if (!notif_content_type_ok(http_header(req, "Content-Type")))
		return answer(g, resp, OUT_415, 415, "unsupported_media_type",
		              "Content-Type must be application/json");

	ingest_source_addr(&g->conf->trusted_proxies, req->client_ip,
	                   http_header(req, "X-Forwarded-For"),
	                   http_header(req, "X-Real-IP"), source,
	                   sizeof(source));

	r = notification_parse(req->body, req->body_len, &n, &why);
	if (r == KASIR_EREJECT) {
		if (refusal_log_ok(g))
			log_fields(LOG_INFO, LOG_F({"SOURCE", source}),
			           "notification refused: %s: %s",
			           notif_error_code(why.code), why.message);
		return answer(g, resp, OUT_400, 400, notif_error_code(why.code),
		              why.message);
	}
	if (r < 0)
		return answer(g, resp, OUT_5XX, 503, "overloaded",
		              "out of memory");

	r = notification_verify(&n, g->keys, g->nkeys, &key);
	if (r == KASIR_ESIG) {
		metric_inc(g->im.signature_failures);
		if (refusal_log_ok(g))
			log_fields(
			    LOG_WARNING,
			    LOG_F({"ORDER_ID", n.order_id}, {"SOURCE", source}),
			    "notification refused: invalid signature");
		ingest_quarantine_add(g->quarantine, "invalid_signature",
		                      n.order_id, source, received_ms,
		                      req->body, req->body_len);
		notification_fini(&n);
		return answer(g, resp, OUT_403, 403, "invalid_signature",
		              "the signature does not verify");
	}
	if (r < 0) {
		notification_fini(&n);
		return answer(g, resp, OUT_5XX, 503, "overloaded",
		              "out of memory");
	}

	/* Signed, but does its signed status_code go with its unsigned
	 * transaction_status?  If not, the body was rewritten: kept as
	 * evidence, never stored as a payment event. */
	if (notification_check_status(&n, &why) == KASIR_EREJECT) {
		metric_inc(g->im.status_mismatches);
		if (refusal_log_ok(g))
			log_fields(
			    LOG_WARNING,
			    LOG_F({"ORDER_ID", n.order_id}, {"SOURCE", source}),
			    "notification refused: %s: %s",
			    notif_error_code(why.code), why.message);
		ingest_quarantine_add(g->quarantine, notif_error_code(why.code),
		                      n.order_id, source, received_ms,
		                      req->body, req->body_len);
		notification_fini(&n);
		return answer(g, resp, OUT_400, 400, notif_error_code(why.code),
		              why.message);
	}

	/* Rate limit last (issue 3's order) but before any database work. */
	if (!ratelimit_take(g->rl, source, &wait_ms)) {
		int64_t secs = (wait_ms + 999) / 1000;

		notification_fini(&n);
		http_add_header(resp, "Retry-After", "%lld",
		                (long long)(secs < 1 ? 1 : secs));
		return answer(g, resp, OUT_429, 429, "rate_limited",
		              "too many notifications from this address");
	}

	if (atomic_load(&g->closing)) {
		notification_fini(&n);
		return answer(g, resp, OUT_5XX, 503, "shutting_down",
		              "the service is stopping; retry");
	}
	r = ingest_store_reserve(g->store, req->body_len);
	if (r < 0) {
		notification_fini(&n);
		return answer(g, resp, OUT_5XX, 503,
		              r == -EAGAIN ? "overloaded" : "shutting_down",
		              "cannot take the notification now; retry");
	}
	it = calloc(1, sizeof(*it));
	if (it == NULL)
		goto fail_reserved;
	it->n = n;
	it->body = req->body;
	it->body_len = req->body_len;
	it->key_id = g->keys[key].id;
	kasir_strlcpy(it->source, source, sizeof(it->source));
	it->received_ms = received_ms;
	if (http_defer(req, &it->pending) < 0) {
		free(it);
		goto fail_reserved;
	}
	ingest_store_submit(g->store, it); /* answers and frees it */
	return HTTP_DEFERRED;

fail_reserved:
	ingest_store_unreserve(g->store, req->body_len);
	notification_fini(&n);
	return answer(g, resp, OUT_5XX, 503, "overloaded",
	              "cannot take the notification now; retry");
}

/* /readyz: not ready before the public listener and the committer run
 * (daemon_init serves /readyz earlier), nor while stopping. */
static int
ready_hook(void *arg, char *why, size_t why_len)
{
	struct ingest *g = arg;

	if (!atomic_load(&g->serving) || atomic_load(&g->closing)) {
		kasir_strlcpy(why, "notification listener not running",
		              why_len);
		return -EAGAIN;
	}
	return 0;
}

static void
tick(void *arg)
{
	struct ingest *g = arg;
	static int64_t last_status_ms;
	int64_t now = now_mono_ms();

	if (now - last_status_ms < 10000)
		return;
	last_status_ms = now;
	kasir_sd_status("stored %.0f notifications, queue %zu",
	                metric_value(g->im.stored),
	                ingest_store_depth(g->store));
}

int
main(int argc, char **argv)
{
	struct ingest_conf conf;
	struct ingest g = {.conf = &conf};
	struct daemon d;
	struct stream_producer_conf pc;
	struct stream_producer *producer = NULL;
	struct http_server *http = NULL;
	struct admin_socket *admin = NULL;
	struct ingest_admin_ctx actx = {0};
	char buf[160];
	int rc = 1, r;

	memset(&conf, 0, sizeof(conf));
	if (!conf_cli(argc, argv, "kasir-ingest", ingest_conf_keys, &conf, &rc))
		return rc;
	rc = 1;
	if (daemon_init(&d, "kasir-ingest", &conf.base, "ingest",
	                "kasir_ingest") < 0)
		goto out_conf;
	/* Not ready until the public listener runs (see ready_hook). */
	d.ready_arg = &g;
	d.ready_hook = ready_hook;
	if ((r = ingest_metrics_register(d.metrics, &g.im)) < 0) {
		log_err("registering metrics failed: %s", kasir_strerror(r));
		goto out_daemon;
	}
	{
		const struct ingest_server_key *k = conf.server_keys.items;

		for (size_t i = 0; i < conf.server_keys.count; i++)
			g.keys[g.nkeys++] = (struct notif_key){
			    .id = k[i].id,
			    .secret = k[i].secret.value,
			    .secret_len = k[i].secret.len,
			};
	}
	tbucket_init(&g.log_budget, REFUSAL_LOG_RATE, REFUSAL_LOG_BURST);
	if ((r = ratelimit_table_new(
	         (double)conf.rate_per_s, (double)conf.rate_burst,
	         (unsigned)conf.rate_max_sources, &g.rl)) < 0) {
		log_err("rate limit table: %s", kasir_strerror(r));
		goto out_daemon;
	}

	daemon_producer_conf(&d, "ingest", false, &pc);
	pc.db.application_name = "kasir-ingest-publisher";
	/* the payment_event rows are the stream's messages (store.c) */
	pc.source = "stream_source_ingest";
	if ((r = stream_producer_start(&pc, d.keyring, d.metrics, &producer)) <
	    0) {
		log_err("starting the ingest stream producer failed: %s",
		        kasir_strerror(r));
		goto out_rl;
	}

	{
		struct ingest_store_conf sc = {
		    .db = daemon_db_conf(&d),
		    .committers = (unsigned)conf.committers,
		    .batch_max = (unsigned)conf.batch_max,
		    .batch_wait_ms = conf.batch_wait_ms,
		    .queue_max = (unsigned)conf.queue_max,
		    .queue_max_bytes = (size_t)conf.queue_max_bytes,
		};
		struct ingest_quarantine_conf qc = {
		    .db = daemon_db_conf(&d),
		    .per_minute = (unsigned)conf.quarantine_per_minute,
		    .max_rows = conf.quarantine_max_rows,
		};

		sc.db.application_name = "kasir-ingest-committer";
		sc.db.statement_timeout_ms = (int)conf.statement_timeout_ms;
		sc.db.generic_plans = true;
		qc.db.application_name = "kasir-ingest-quarantine";
		qc.db.statement_timeout_ms = (int)conf.statement_timeout_ms;
		if ((r = ingest_store_start(&sc, producer, &g.im, &g.store)) <
		    0) {
			log_err("starting the committer failed: %s",
			        kasir_strerror(r));
			goto out_producer;
		}
		if ((r = ingest_quarantine_start(&qc, &g.im, &g.quarantine)) <
		    0) {
			log_err("starting the quarantine writer failed: %s",
			        kasir_strerror(r));
			goto out_store;
		}
	}

	{
		struct http_server_conf hc = {
		    .listen = conf.listen,
		    .max_connections = (unsigned)conf.max_connections,
		    .per_ip_connections = (unsigned)conf.per_ip_connections,
		    .timeout_s = (unsigned)((conf.timeout_ms + 999) / 1000),
		    .body_max = (size_t)conf.body_max,
		    .threads = (unsigned)conf.threads,
		    .name = "ingest",
		};

		if ((r = http_server_start(&hc, handle_request, &g, &http)) <
		    0) {
			log_err("listening on %s failed: %s", conf.listen,
			        kasir_strerror(r));
			goto out_quarantine;
		}
	}

	if (conf.base.admin_socket != NULL) {
		struct db_conf ac = daemon_db_conf(&d);
		struct admin_socket_conf asc = {
		    .url = conf.base.admin_socket,
		    .mode = conf.base.admin_socket_mode,
		    .engineer_group = conf.base.admin_engineer_group,
		    .support_group = conf.base.admin_support_group,
		    .commands = ingest_admin_commands,
		    .audit_stmt = &ingest_admin_audit_insert,
		    .db_lazy = true,
		    .refused = admin_log_refused,
		};

		ac.application_name = "kasir-ingest-admin";
		actx.store = g.store;
		actx.im = &g.im;
		actx.producer = producer;
		actx.started_ms = now_mono_ms();
		if ((r = db_open(&ac, &actx.db)) == 0)
			db_set_loop(actx.db, "ingest.admin", false, 0);
		asc.db = actx.db;
		if (r < 0 ||
		    (r = admin_socket_start(&asc, &actx, &admin)) < 0) {
			log_err("admin socket %s: %s", conf.base.admin_socket,
			        kasir_strerror(r));
			goto out_http;
		}
	}

	snprintf(buf, sizeof(buf), "listening on %s%s", conf.listen, conf.path);
	log_notice("%s, %zu server key(s), batch up to %lld", buf, g.nkeys,
	           (long long)conf.batch_max);
	atomic_store(&g.serving, true);
	rc = daemon_run(&d, tick, &g) == 0 ? 0 : 1;
	log_notice("stopping: draining %zu queued notification(s)",
	           ingest_store_depth(g.store));

	if (admin != NULL)
		admin_socket_stop(admin);
out_http:
	/* Refuse new work, answer everything deferred, then stop listening:
	 * no request is left without its answer. */
	atomic_store(&g.closing, true);
	ingest_store_drain(g.store);
	http_server_stop(http);
	db_close(actx.db);
out_quarantine:
	ingest_quarantine_stop(g.quarantine);
out_store:
	ingest_store_free(g.store);
out_producer:
	stream_producer_stop(producer);
out_rl:
	ratelimit_table_free(g.rl);
out_daemon:
	daemon_fini(&d, rc);
out_conf:
	conf_free(ingest_conf_keys, &conf);
	return rc;
}
