/*
 * test_base_conf.c - the shared daemon configuration (common/base_conf.c):
 * the committed fixtures, defaults, the key ring checks, the consume list,
 * and that base_conf_keyring() yields a ring that signs and verifies.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base_conf.h"
#include "envelope.h"
#include "err.h"
#include "log.h"
#include "testutil.h"

/* A daemon config embedding the base, as daemons do. */
struct dconf {
	struct base_conf base;
	int64_t extra;
};

static const struct conf_key dkeys[] = {
    BASE_CONF_KEYS_FOR(struct dconf),
    {.key = "extra",
     .type = CONF_INT,
     .offset = offsetof(struct dconf, extra),
     .defval = "5"},
    {.key = NULL},
};

static char tmpdir[256], creds[300];
static const char *srcdir;

#define KEY1 "0123456789abcdef0123456789abcdef-k1"
#define KEY2 "fedcba9876543210fedcba9876543210-k2"

static int
setup(void **state)
{
	(void)state;
	tu_mkdtemp(tmpdir, sizeof(tmpdir));
	snprintf(creds, sizeof(creds), "%s/creds", tmpdir);
	if (mkdir(creds, 0700) < 0)
		return -1;
	tu_write(creds, "msg-k1", KEY1 "\n", 0600);
	tu_write(creds, "msg-k2", KEY2 "\n", 0600);
	tu_write(creds, "msg-short", "tooshort\n", 0600);
	tu_write(creds, "db-kasir_order", "dbpw\n", 0600);
	tu_write(creds, "db-kasir_order_owner", "ownerpw\n", 0600);
	setenv("CREDENTIALS_DIRECTORY", creds, 1);
	srcdir = getenv("KASIR_SOURCE_DIR");
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	tu_rmrf(tmpdir);
	return 0;
}

static const char *
fixture(const char *name)
{
	static char path[512];
	snprintf(path, sizeof(path), "%s/tests/fixtures/config/%s", srcdir,
	         name);
	return path;
}

static void
test_good_fixture(void **state)
{
	(void)state;
	struct dconf c;
	char *errs = NULL;

	if (srcdir == NULL)
		skip();
	memset(&c, 0x5a, sizeof(c));
	int r = conf_load(fixture("base_good.yaml"), dkeys, &c, &errs);
	if (r != 0)
		fail_msg("%s", errs);
	const struct base_conf *b = &c.base;
	assert_int_equal(b->log_level, LOG_DEBUG);
	assert_string_equal(b->log_level_name, "debug");
	assert_string_equal(b->db_url, "host=127.0.0.1 port=5432 dbname=kasir "
	                               "user=kasir_order");
	assert_string_equal(b->db_password.value, "dbpw");
	assert_string_equal(b->db_migrate_password.value, "ownerpw");
	assert_string_equal(b->db_migrations,
	                    "/usr/share/kasir/migrations/order");
	assert_string_equal(b->admin_listen, "127.0.0.1:9102");
	assert_string_equal(b->admin_socket, "ipc:///run/kasir/order.sock");
	assert_string_equal(b->admin_socket_mode, "0660"); /* default */
	assert_string_equal(b->admin_engineer_group, "kasir-engineer");
	assert_int_equal(b->msg_keys.count, 2);
	const struct base_key_conf *k = b->msg_keys.items;
	assert_string_equal(k[0].id, "k1");
	assert_string_equal(k[0].secret.value, KEY1);
	assert_string_equal(k[1].id, "k2.new");
	assert_string_equal(b->msg_sign_with, "k2.new");
	assert_int_equal(b->msg_max_frame, 1024 * 1024); /* default */
	assert_int_equal(b->stream_heartbeat_ms, 1000);  /* default */
	assert_string_equal(b->stream_publish, "tcp://127.0.0.1:7201");
	assert_int_equal(b->consume.count, 2);
	assert_int_equal(c.extra, 5);

	const struct base_consume_conf *in = base_conf_consumer(b, "ingest");
	assert_non_null(in);
	assert_string_equal(in->url, "tcp://127.0.0.1:7101");
	assert_string_equal(in->replay, "tcp://127.0.0.1:7102");
	assert_true(in->fast_path); /* default */
	const struct base_consume_conf *rc = base_conf_consumer(b, "recon");
	assert_non_null(rc);
	assert_null(rc->url);
	assert_false(rc->fast_path);
	assert_null(base_conf_consumer(b, "orders"));

	conf_free(dkeys, &c);
	assert_null(c.base.db_url);
	assert_null(c.base.msg_keys.items);
	assert_null(c.base.log_level_name);
	assert_null(c.base.consume.items);
}

static void
test_minimal_defaults(void **state)
{
	(void)state;
	struct dconf c;
	char *errs = NULL;

	if (srcdir == NULL)
		skip();
	memset(&c, 0x5a, sizeof(c));
	if (conf_load(fixture("base_minimal.yaml"), dkeys, &c, &errs) != 0)
		fail_msg("%s", errs);
	assert_int_equal(c.base.log_level, LOG_INFO);
	assert_string_equal(c.base.log_level_name, "info");
	assert_null(c.base.db_password.value);
	assert_null(c.base.db_migrate_url);
	assert_null(c.base.admin_listen);
	assert_string_equal(c.base.admin_socket_mode, "0660");
	assert_null(c.base.stream_publish);
	assert_int_equal(c.base.consume.count, 0);
	assert_null(c.base.consume.items);
	conf_free(dkeys, &c);
}

static void
test_bad_fixtures(void **state)
{
	(void)state;
	struct dconf c;
	char *errs = NULL, want[600];

	if (srcdir == NULL)
		skip();
	assert_int_equal(
	    conf_load(fixture("bad_signer.yaml"), dkeys, &c, &errs),
	    KASIR_ECONFIG);
	snprintf(want, sizeof(want),
	         "%s:7: 'messages.sign_with': 'k9' is not in messages.keys\n",
	         fixture("bad_signer.yaml"));
	assert_string_equal(errs, want);
	free(errs);
	assert_int_equal(
	    conf_load(fixture("unknown_key.yaml"), dkeys, &c, &errs),
	    KASIR_ECONFIG);
	snprintf(want, sizeof(want),
	         "%s:3: unknown key 'database.pasword_file'\n",
	         fixture("unknown_key.yaml"));
	assert_string_equal(errs, want);
	free(errs);
	assert_null(c.base.db_url);
	assert_null(c.base.msg_keys.items);
}

static void
expect_errors(const char *content, const char *want)
{
	const char *path = tu_write(tmpdir, "b.yaml", content, 0600);
	struct dconf c;
	char *errs = NULL;

	memset(&c, 0x5a, sizeof(c));
	assert_int_equal(conf_load(path, dkeys, &c, &errs), KASIR_ECONFIG);
	if (strstr(errs, want) == NULL)
		fail_msg("expected '%s' in:\n%s", want, errs);
	free(errs);
	assert_null(c.base.db_url);
	assert_null(c.base.log_level_name);
	assert_null(c.base.admin_socket_mode);
	assert_null(c.base.msg_keys.items);
	assert_null(c.base.msg_sign_with);
	assert_int_equal(c.base.msg_max_frame, 0);
	assert_int_equal(c.extra, 0);
}

#define DB   "database:\n  url: x\n"
#define KEYS "messages:\n  keys:\n    - id: k1\n      secret: msg-k1\n"

static void
test_rules(void **state)
{
	(void)state;
	expect_errors(KEYS "  sign_with: k1\n",
	              ":1: missing required key 'database.url'");
	expect_errors(DB, ":1: missing required key 'messages.keys'");
	expect_errors(DB KEYS, ":3: missing required key 'messages.sign_with'");
	expect_errors(DB "messages:\n  keys: []\n  sign_with: k1\n",
	              ":4: 'messages.keys' needs at least one key");
	expect_errors(DB "messages:\n  keys:\n    - id: bad/id\n"
	                 "      secret: msg-k1\n  sign_with: k1\n",
	              ":5: key id 'bad/id'");
	expect_errors(DB "messages:\n  keys:\n    - id: k1\n"
	                 "      secret: msg-short\n  sign_with: k1\n",
	              ":5: key 'k1': secret in ");
	expect_errors(DB "messages:\n  keys:\n    - id: k1\n"
	                 "      secret: msg-k1\n    - id: k1\n"
	                 "      secret: msg-k2\n  sign_with: k1\n",
	              ":7: duplicate key id 'k1'");
	char buf[2048];
	size_t off =
	    (size_t)snprintf(buf, sizeof(buf), DB "messages:\n  keys:\n");
	for (int i = 0; i < 9; i++)
		off += (size_t)snprintf(buf + off, sizeof(buf) - off,
		                        "    - id: k%d\n      secret: msg-k1\n",
		                        i);
	snprintf(buf + off, sizeof(buf) - off, "  sign_with: k1\n");
	expect_errors(buf, "too many items (9, max 8)");
	expect_errors(DB KEYS "  sign_with: k1\nlog:\n  level: loud\n",
	              ":9: 'log.level': expected debug, info");
	expect_errors(DB KEYS "  sign_with: k1\n  max_frame: 1KiB\n",
	              ":8: 'messages.max_frame': 1KiB is out of range");
	expect_errors(DB KEYS "  sign_with: k1\n  max_frame: 17MiB\n",
	              "out of range");
	expect_errors(DB KEYS "  sign_with: k1\nstream:\n  heartbeat: 1h\n",
	              ":9: 'stream.heartbeat': 1h is out of range");
	expect_errors(DB KEYS "  sign_with: k1\nadmin:\n  socket_mode: 0999\n",
	              ":9: 'admin.socket_mode': expected an octal mode");
	/* the shared keys' finish hook: a listen address the listener
	 * cannot use is refused by the load, not at start */
	expect_errors(DB KEYS "  sign_with: k1\nadmin:\n  listen: 127.0.0.1\n",
	              ":9: 'admin.listen': want HOST:PORT, [V6]:PORT or :PORT");
	/* roles come from an ipc socket's peer credentials only */
	expect_errors(DB KEYS
	              "  sign_with: k1\nadmin:\n  socket: tcp://127.0.0.1:7\n",
	              ":9: 'admin.socket': want an ipc:// socket");
	expect_errors(DB KEYS
	              "  sign_with: k1\nadmin:\n  listen: \"h:70000\"\n",
	              ":9: 'admin.listen': want HOST:PORT");
	expect_errors(DB KEYS "  sign_with: k1\nconsume:\n"
	                      "  - stream: a\n    replay: r\n"
	                      "  - stream: a\n    url: u\n    replay: r\n",
	              ":11: stream 'a' consumed twice");
	expect_errors(DB KEYS "  sign_with: k1\nconsume:\n"
	                      "  - stream: a\n    replay: r\n",
	              ":9: consume 'a': 'url' is required when fast_path");
	expect_errors(DB KEYS "  sign_with: k1\nconsume:\n"
	                      "  - stream: a\n    url: u\n    replay: r\n"
	                      "    fast_path: sometimes\n",
	              ":12: 'fast_path': expected true/false");
	expect_errors(DB KEYS "  sign_with: k1\nconsume:\n"
	                      "  - {stream: a, replay: r, fast_path: false}\n"
	                      "  - {stream: b, replay: r, fast_path: false}\n"
	                      "  - {stream: c, replay: r, fast_path: false}\n"
	                      "  - {stream: d, replay: r, fast_path: false}\n"
	                      "  - {stream: e, replay: r, fast_path: false}\n",
	              "too many items (5, max 4)");
}

static void
test_keyring(void **state)
{
	(void)state;
	struct dconf c;
	struct keyring *kr = NULL, *k1only = NULL;
	char *errs = NULL, *frame = NULL;
	const char *body;
	size_t len, blen;

	if (srcdir == NULL)
		skip();
	if (conf_load(fixture("base_good.yaml"), dkeys, &c, &errs) != 0)
		fail_msg("%s", errs);
	assert_int_equal(base_conf_keyring(&c.base, &kr), 0);
	assert_non_null(kr);
	assert_int_equal(envelope_seal(kr, "{}", 2, &frame, &len), 0);
	/* signed with sign_with = k2.new */
	assert_memory_equal(frame, "kasir1 k2.new ", 14);
	assert_int_equal(envelope_open(kr, frame, len, 1 << 20, &body, &blen),
	                 0);
	assert_int_equal(blen, 2);

	/* a ring with only k1 from the minimal config refuses k2 frames */
	struct dconf m;
	if (conf_load(fixture("base_minimal.yaml"), dkeys, &m, &errs) != 0)
		fail_msg("%s", errs);
	assert_int_equal(base_conf_keyring(&m.base, &k1only), 0);
	assert_int_equal(
	    envelope_open(k1only, frame, len, 1 << 20, &body, &blen),
	    KASIR_EKEY);
	free(frame);
	keyring_free(kr);
	keyring_free(k1only);
	conf_free(dkeys, &c);
	conf_free(dkeys, &m);

	/* a zeroed config has no ring */
	memset(&c, 0, sizeof(c));
	assert_int_equal(base_conf_keyring(&c.base, &kr), -EINVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good_fixture),
	    cmocka_unit_test(test_minimal_defaults),
	    cmocka_unit_test(test_bad_fixtures),
	    cmocka_unit_test(test_rules),
	    cmocka_unit_test(test_keyring),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
