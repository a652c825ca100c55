/*
 * base_conf.h - the configuration every daemon shares.
 *
 * Each daemon's config struct embeds struct base_conf as its first member
 * named "base" and includes BASE_CONF_KEYS(struct its_conf) in its table:
 *
 *   log:
 *     level: info                      # debug|info|notice|warning|err
 *   database:
 *     url: "host=127.0.0.1 port=5432 dbname=kasir user=kasir_order"
 *     password_file: /etc/kasir/secrets/db-order   # optional (CONF_SECRET)
 *     migrate_url: "... user=kasir_order_owner"   # owner role for migrations
 *     migrate_password_file: ...                   # optional
 *     migrations: /usr/share/kasir/migrations/order
 *   admin:
 *     listen: 127.0.0.1:9102           # HTTP: /metrics /healthz /readyz
 *                                      # (host:port, [v6]:port or :port)
 *     socket: ipc:///run/kasir/order.sock   # nng req/rep admin socket
 *     socket_mode: "0660"
 *     engineer_group: kasir-engineer    # unix groups -> kasirctl roles
 *     support_group: kasir-support
 *   messages:
 *     keys:                            # key ring: every key accepted
 *       - id: k1
 *         secret: /etc/kasir/secrets/msg-k1   # or a credential name
 *     sign_with: k1                    # key id used to sign
 *     max_frame: 1MiB
 *   stream:                            # this daemon's own stream, if any
 *     publish: tcp://127.0.0.1:7201    # pub (fan-out) or push (pipeline)
 *     replay: tcp://127.0.0.1:7202     # req/rep replay server
 *     heartbeat: 1s
 *     ready_max_lag: 10000             # /readyz fails while a consumed
 *                                      # stream lags more than this
 *   consume:                           # streams this daemon consumes
 *     - stream: ingest
 *       url: tcp://127.0.0.1:7101
 *       replay: tcp://127.0.0.1:7102
 *       fast_path: true                # false: replay only (tests)
 */
#ifndef KASIR_BASE_CONF_H
#define KASIR_BASE_CONF_H

#include <stddef.h>
#include <stdint.h>
#include "config.h"

#define BASE_MAX_KEYS	   8
#define BASE_MAX_CONSUMERS 4

struct base_key_conf {
	char *id;		   /* [A-Za-z0-9._-], <= 32 chars */
	struct conf_secret secret; /* >= 32 bytes */
};

struct base_consume_conf {
	char *stream;	/* producer stream name: "ingest", "orders", "recon" */
	char *url;	/* producer's publish socket (we dial) */
	char *replay;	/* producer's replay socket (we dial) */
	bool fast_path; /* default true */
};

struct base_conf {
	int64_t log_level; /* parsed with log_level_parse(); LOG_INFO default */
	char *log_level_name;

	char *db_url;
	struct conf_secret db_password;
	char *db_migrate_url; /* NULL: use db_url */
	struct conf_secret db_migrate_password;
	char *db_migrations; /* directory of this service's *.sql */

	char *admin_listen;
	char *admin_socket;
	char *admin_socket_mode;
	char *admin_engineer_group;
	char *admin_support_group;

	struct conf_list msg_keys; /* of struct base_key_conf */
	char *msg_sign_with;
	int64_t msg_max_frame;

	char *stream_publish; /* NULL when the daemon produces no stream */
	char *stream_replay;
	int64_t stream_heartbeat_ms;
	int64_t stream_ready_max_lag; /* messages; default 10000 */

	struct conf_list consume; /* of struct base_consume_conf */
};

/* Table entries for struct T that embeds "struct base_conf base". */
extern const struct conf_key base_conf_keys[];
#define BASE_CONF_KEYS_FOR(T)                                                  \
	{.key = "", .type = CONF_INCLUDE, .offset = offsetof(T, base),         \
	 .sub = base_conf_keys}

/* Finds the consume entry for stream name, or NULL. */
const struct base_consume_conf *base_conf_consumer(const struct base_conf *c,
						   const char *stream);

/* For a daemon's finish hook (config.h: conf_finish_fn): the checks of
 * the shared keys that depend on what the daemon does.  Each reports (at
 * the line of the key, or of its mapping) and returns KASIR_ECONFIG when
 * the file does not give what the daemon needs, 0 otherwise.
 *   need_publish: the daemon publishes stream: stream.publish and
 *                 stream.replay are required.
 *   need_consume: the daemon cannot run without consuming stream: a
 *                 consume entry for it is required. */
int base_conf_need_publish(const struct base_conf *c,
			   const struct conf_node *map,
			   struct conf_errors *errs, const char *daemon,
			   const char *stream);
int base_conf_need_consume(const struct base_conf *c,
			   const struct conf_node *map,
			   struct conf_errors *errs, const char *daemon,
			   const char *stream);
/* An HTTP listen address (key names it) has a form the listener can use:
 * host:port, [v6]:port or :port.  NULL (not configured) is fine. */
int base_conf_check_listen(const char *addr, const struct conf_node *map,
			   struct conf_errors *errs, const char *key);

struct keyring;
/* Builds a key ring from messages.keys / messages.sign_with.  On success
 * *ret (caller frees with keyring_free) holds copies of the keys. */
int base_conf_keyring(const struct base_conf *c, struct keyring **ret);

#endif
