/*
 * daemon.h - the start-up and main loop every kasir daemon shares.
 *
 *   int main(int argc, char **argv) {
 *       struct order_conf conf;  int rc;
 *       if (!conf_cli(argc, argv, "kasir-order", order_conf_keys, &conf, &rc))
 *           return rc;
 *       struct daemon d;
 *       if (daemon_init(&d, "kasir-order", &conf.base, "orders", "kasir_order")
 * < 0) return 1;          // logged: migrations failed, keys unreadable...
 *       ... start producer / consumers / listeners using d.keyring, d.metrics,
 *           daemon_db_conf(&d) ...
 *       rc = daemon_run(&d, tick, arg);   // READY=1, loop, STOPPING=1
 *       ... stop listeners, consumers, producer ...
 *       daemon_fini(&d, rc);  conf_free(...);
 *       return rc;
 *   }
 *
 * daemon_init: log_open, ignore SIGPIPE, block SIGINT/SIGTERM/SIGHUP for
 * all threads (the main loop takes them through signalfd), build the key
 * ring, run db_migrate (owner DSN) and retry it with backoff while the
 * database is unreachable (logging once per state change, STATUS= says
 * "waiting for database"), open the main loop's own db connection, create
 * the metrics registry and start the admin HTTP listener (/metrics,
 * /healthz, /readyz).
 *
 * daemon_run: sends READY=1, then every tick_ms (default 500) calls tick
 * (may be NULL), pings the database (SELECT 1) at most once a second and
 * feeds the systemd watchdog only when the loop ran and the ping succeeded;
 * returns 0 after SIGTERM/SIGINT (sending STOPPING=1), non-zero on a fatal
 * error.  /healthz fails when the loop has not ticked for 5 s; /readyz
 * fails while the database is down, migrations are missing, or the
 * optional ready hook says so.
 */
#ifndef KASIR_DAEMON_H
#define KASIR_DAEMON_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include "base_conf.h"
#include "db.h"

struct keyring;
struct metrics;
struct http_server;
struct stream_consumer;

#define DAEMON_MAX_WATCHED 4

struct daemon {
	const char *name;   /* "kasir-order" */
	const char *schema; /* "orders" */
	const struct base_conf *conf;
	struct keyring *keyring;        /* owned */
	struct metrics *metrics;        /* owned */
	struct kasir_db *db;            /* main loop's connection; owned */
	struct http_server *admin_http; /* owned */
	int sigfd;
	volatile int64_t last_tick_ms;
	bool db_ok;
	bool migrations_ok; /* every *.sql recorded (main loop) */
	/* optional extra readiness check (stream lag...), set before run */
	int (*ready_hook)(void *arg, char *why, size_t why_len);
	void *ready_arg;
	int64_t tick_ms;
	/* consumers whose lag /readyz checks; see daemon_watch_consumer() */
	pthread_mutex_t watch_lock;
	struct stream_consumer *watched[DAEMON_MAX_WATCHED];
	char watched_name[DAEMON_MAX_WATCHED][32];
	int nwatched;
};

int daemon_init(struct daemon *d, const char *name,
                const struct base_conf *conf, const char *schema,
                const char *runtime_role);
/* A db_conf for this daemon's runtime role (url + password from conf).
 * Pointers refer to conf; valid while conf lives. */
struct db_conf daemon_db_conf(const struct daemon *d);
/* A producer/consumer config pre-filled from conf (stream publish/replay
 * urls, max_frame, heartbeat, the consume entry for stream). */
struct stream_producer_conf;
struct stream_consumer_conf;
void daemon_producer_conf(const struct daemon *d, const char *stream,
                          bool fanout, struct stream_producer_conf *out);
/* -ENOENT when conf has no consume entry for stream. */
int daemon_consumer_conf(const struct daemon *d, const char *stream,
                         bool fanout, struct stream_consumer_conf *out);

/* Makes /readyz fail ("stream X lags N messages") while c's lag (producer
 * head as last heard minus cursor) exceeds stream.ready_max_lag.  c is
 * borrowed: daemon_run() forgets every watched consumer before it returns,
 * so stop consumers only after daemon_run().  -ENOSPC when 4 are watched. */
int daemon_watch_consumer(struct daemon *d, struct stream_consumer *c,
                          const char *stream);

typedef void (*daemon_tick_fn)(void *arg);
int daemon_run(struct daemon *d, daemon_tick_fn tick, void *arg);
/* Frees what daemon_init() made and logs "<name> stopped": call it after
 * every thread the daemon started is stopped.  When a socket's close was
 * left unfinished (sock_close_left_wedged()), nng cannot be shut down:
 * it logs so and ends the process at once with _exit(exit_code), so the
 * caller's last frees do not run. */
void daemon_fini(struct daemon *d, int exit_code);

#endif
