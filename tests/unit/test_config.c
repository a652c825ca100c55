/*
 * test_config.c - the config loader (common/config.c) against a test table:
 * values, defaults, includes, lists, every kind of error with its
 * FILE:LINE, the bounds, secrets, the finish hooks (cross-field checks)
 * and the --check-config command line.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"
#include "err.h"
#include "testutil.h"

struct inc_conf {
	char *host;
	int64_t weight;
};

struct item_conf {
	char *id;
	int64_t n;
};

struct tconf {
	char *name;
	int64_t port;
	bool flag;
	int64_t timeout_ms;
	int64_t size;
	struct conf_secret secret;
	char *db_url;
	int64_t db_pool;
	struct inc_conf inc;
	struct conf_list items;
};

static const struct conf_key inc_keys[] = {
    {.key = "host",
     .type = CONF_STRING,
     .offset = offsetof(struct inc_conf, host),
     .required = true},
    {.key = "weight",
     .type = CONF_INT,
     .offset = offsetof(struct inc_conf, weight),
     .min = 1,
     .max = 10,
     .defval = "1"},
    {.key = NULL},
};

static int item_finish_calls;

/* A list item's finish hook: runs once per item, with the item's map. */
static int
item_finish(void *base, const struct conf_node *map, struct conf_errors *errs)
{
	const struct item_conf *it = base;

	item_finish_calls++;
	if (strcmp(it->id, "bad") == 0) {
		conf_error_key(errs, map, "id", "item id 'bad' is reserved");
		return KASIR_ECONFIG;
	}
	return 0;
}

static const struct conf_key item_keys[] = {
    {.key = "id",
     .type = CONF_STRING,
     .offset = offsetof(struct item_conf, id),
     .required = true},
    {.key = "n",
     .type = CONF_INT,
     .offset = offsetof(struct item_conf, n),
     .defval = "7"},
    CONF_END(item_finish),
};

static int
parse_items(const struct conf_node *n, void *field, struct conf_errors *errs)
{
	return conf_parse_list(n, item_keys, sizeof(struct item_conf), 3, field,
	                       errs);
}

static void
free_items(void *field)
{
	conf_list_free(item_keys, sizeof(struct item_conf), field);
}

#define O(m) offsetof(struct tconf, m)
static const struct conf_key tkeys[] = {
    {.key = "name", .type = CONF_STRING, .offset = O(name), .required = true},
    {.key = "port",
     .type = CONF_INT,
     .offset = O(port),
     .min = 1,
     .max = 65535,
     .defval = "8080"},
    {.key = "flag", .type = CONF_BOOL, .offset = O(flag), .defval = "false"},
    {.key = "timeout",
     .type = CONF_DURATION,
     .offset = O(timeout_ms),
     .min = 1,
     .max = 86400000,
     .defval = "30s"},
    {.key = "size", .type = CONF_SIZE, .offset = O(size), .defval = "1MiB"},
    {.key = "secret", .type = CONF_SECRET, .offset = O(secret)},
    {.key = "db.url",
     .type = CONF_STRING,
     .offset = O(db_url),
     .required = true},
    {.key = "db.pool",
     .type = CONF_INT,
     .offset = O(db_pool),
     .min = 1,
     .max = 100,
     .defval = "4"},
    {.key = "inc", .type = CONF_INCLUDE, .offset = O(inc), .sub = inc_keys},
    {.key = "items",
     .type = CONF_CUSTOM,
     .offset = O(items),
     .size = sizeof(struct conf_list),
     .parse = parse_items,
     .free = free_items},
    {.key = NULL},
};

/* The same struct through a table with a finish hook of its own; tkeys is
 * included at the root. */
static int finish_calls;

static int
tconf_finish(void *base, const struct conf_node *map, struct conf_errors *errs)
{
	struct tconf *c = base;
	int rc = 0;

	finish_calls++;
	/* the struct is complete: defaults applied, includes filled */
	assert_non_null(c->name);
	assert_int_not_equal(c->inc.weight, 0);
	if (c->flag && c->port < 1024 && c->secret.value == NULL) {
		conf_error_key(errs, map, "secret",
		               "'secret' is required below port 1024");
		rc = KASIR_ECONFIG;
	}
	if (c->db_pool == c->port) {
		conf_error_key(errs, map, "db.pool",
		               "db.pool must differ from port (%lld)",
		               (long long)c->port);
		rc = KASIR_ECONFIG;
	}
	if (rc == 0)
		c->size += 1; /* a derived field: kept on success */
	return rc;
}

static const struct conf_key fkeys[] = {
    {.key = "", .type = CONF_INCLUDE, .offset = 0, .sub = tkeys},
    CONF_END(tconf_finish),
};

static char tmpdir[256];

static int
setup(void **state)
{
	(void)state;
	tu_mkdtemp(tmpdir, sizeof(tmpdir));
	unsetenv("CREDENTIALS_DIRECTORY");
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	tu_rmrf(tmpdir);
	return 0;
}

/* Asserts every table field is zero and no memory is held. */
static void
assert_all_zero(const struct tconf *c)
{
	/* Field by field: padding is not the loader's to know. */
	assert_null(c->name);
	assert_int_equal(c->port, 0);
	assert_false(c->flag);
	assert_int_equal(c->timeout_ms, 0);
	assert_int_equal(c->size, 0);
	assert_null(c->secret.value);
	assert_int_equal(c->secret.len, 0);
	assert_null(c->secret.origin);
	assert_null(c->db_url);
	assert_int_equal(c->db_pool, 0);
	assert_null(c->inc.host);
	assert_int_equal(c->inc.weight, 0);
	assert_null(c->items.items);
	assert_int_equal(c->items.count, 0);
}

/* Loads content; expects failure and that errors contain each of the
 * NULL-terminated expected substrings. */
static void
expect_errors(const char *content, ...)
{
	const char *path = tu_write(tmpdir, "t.yaml", content, 0600);
	struct tconf c;
	char *errs = NULL;
	va_list ap;
	const char *want;

	memset(&c, 0xa5, sizeof(c)); /* garbage must not matter */
	assert_int_equal(conf_load(path, tkeys, &c, &errs), KASIR_ECONFIG);
	assert_non_null(errs);
	va_start(ap, content);
	while ((want = va_arg(ap, const char *)) != NULL) {
		char full[700];
		/* "@N: text" means "PATH:N: text" */
		if (want[0] == '@')
			snprintf(full, sizeof(full), "%s:%s", path, want + 1);
		else
			snprintf(full, sizeof(full), "%s", want);
		if (strstr(errs, full) == NULL)
			fail_msg("expected '%s' in errors:\n%s", full, errs);
	}
	va_end(ap);
	assert_all_zero(&c);
	free(errs);
}

static const char good_yaml[] = "name: shop\n"
                                "port: 9000\n"
                                "flag: yes\n"
                                "timeout: 2m\n"
                                "size: 64KiB\n"
                                "db:\n"
                                "  url: \"host=x dbname=y\"\n"
                                "  pool: 10\n"
                                "inc:\n"
                                "  host: example.org\n"
                                "  weight: 3\n"
                                "items:\n"
                                "  - id: a\n"
                                "    n: 1\n"
                                "  - id: b\n";

static void
test_good_file(void **state)
{
	(void)state;
	const char *path = tu_write(tmpdir, "good.yaml", good_yaml, 0600);
	struct tconf c;
	char *errs = NULL;

	memset(&c, 0xa5, sizeof(c));
	assert_int_equal(conf_load(path, tkeys, &c, &errs), 0);
	assert_null(errs);
	assert_string_equal(c.name, "shop");
	assert_int_equal(c.port, 9000);
	assert_true(c.flag);
	assert_int_equal(c.timeout_ms, 120000);
	assert_int_equal(c.size, 65536);
	assert_string_equal(c.db_url, "host=x dbname=y");
	assert_int_equal(c.db_pool, 10);
	assert_string_equal(c.inc.host, "example.org");
	assert_int_equal(c.inc.weight, 3);
	assert_int_equal(c.items.count, 2);
	const struct item_conf *it = c.items.items;
	assert_string_equal(it[0].id, "a");
	assert_int_equal(it[0].n, 1);
	assert_string_equal(it[1].id, "b");
	assert_int_equal(it[1].n, 7); /* default inside a list item */
	assert_null(c.secret.value);
	conf_free(tkeys, &c);
	assert_all_zero(&c);
	conf_free(tkeys, &c); /* twice is fine */
}

static void
test_defaults(void **state)
{
	(void)state;
	const char *path =
	    tu_write(tmpdir, "min.yaml",
	             "name: n\ndb: {url: u}\ninc: {host: h}\n", 0600);
	struct tconf c;
	char *errs = NULL;

	assert_int_equal(conf_load(path, tkeys, &c, &errs), 0);
	assert_int_equal(c.port, 8080);
	assert_false(c.flag);
	assert_int_equal(c.timeout_ms, 30000);
	assert_int_equal(c.size, 1024 * 1024);
	assert_int_equal(c.db_pool, 4);
	assert_int_equal(c.inc.weight, 1);
	assert_int_equal(c.items.count, 0);
	assert_null(c.items.items);
	conf_free(tkeys, &c);
}

static void
test_malformed(void **state)
{
	(void)state;
	expect_errors("name: shop\n"
	              "db:\n"
	              "  url: [unclosed\n"
	              "inc: {host: h}\n",
	              "@4: syntax error", NULL);
	expect_errors("name: shop\n  bad indent: 1\n", "@2: syntax error",
	              NULL);
	expect_errors("name: \"unterminated\n", "syntax error", NULL);
}

static void
test_unknown_keys(void **state)
{
	(void)state;
	expect_errors("name: n\n"
	              "db:\n"
	              "  url: u\n"
	              "  extra: 1\n"
	              "inc: {host: h}\n"
	              "bogus: 2\n",
	              "@4: unknown key 'db.extra'", "@6: unknown key 'bogus'",
	              NULL);
	/* a dotted key in the YAML itself is not the nested key */
	expect_errors("name: n\ndb.url: u\ninc: {host: h}\n",
	              "@2: unknown key 'db.url'", NULL);
	/* a prefix of keys must be a mapping */
	expect_errors("name: n\ndb: u\ninc: {host: h}\n",
	              "@2: 'db' must be a mapping", NULL);
	/* unknown key inside a list item */
	expect_errors("name: n\ndb: {url: u}\ninc: {host: h}\n"
	              "items:\n  - id: a\n    zap: 1\n",
	              "@6: unknown key 'zap'", NULL);
}

static void
test_required(void **state)
{
	(void)state;
	expect_errors("port: 1\n\n"
	              "db:\n"
	              "  pool: 2\n"
	              "inc:\n"
	              "  weight: 2\n",
	              "@1: missing required key 'name'",
	              "@3: missing required key 'db.url'",
	              "@5: missing required key 'inc.host'", NULL);
	/* empty file: everything missing, reported at line 1 */
	expect_errors("", "@1: missing required key 'name'",
	              "@1: missing required key 'db.url'", NULL);
	/* empty value counts as an error, not as absent */
	expect_errors("name:\ndb: {url: u}\ninc: {host: h}\n",
	              "@1: 'name' has no value", NULL);
	/* top level must be a mapping */
	expect_errors("- a\n- b\n", "@1: expected a mapping", NULL);
	/* list item missing its required key */
	expect_errors("name: n\ndb: {url: u}\ninc: {host: h}\n"
	              "items:\n  - n: 3\n",
	              "@5: missing required key 'id'", NULL);
}

static void
test_types_and_ranges(void **state)
{
	(void)state;
	const char *tail = "db: {url: u}\ninc: {host: h}\n";
	char buf[512];

#define BAD(line1, want)                                                       \
	do {                                                                   \
		snprintf(buf, sizeof(buf), "name: n\n%s%s", line1, tail);      \
		expect_errors(buf, want, NULL);                                \
	} while (0)
	BAD("port: abc\n", "@2: 'port': not an integer: 'abc'");
	BAD("port: 70000\n", "@2: 'port': 70000 is out of range [1, 65535]");
	BAD("port: 0\n", "out of range");
	BAD("port: 99999999999999999999\n", "@2: 'port': integer overflow");
	BAD("port: 12abc\n", "not an integer");
	BAD("port: [1, 2]\n", "@2: 'port' must be a single value, not a list");
	BAD("flag: maybe\n", "@2: 'flag': expected true/false/yes/no");
	BAD("timeout: 5x\n", "@2: 'timeout': bad duration '5x'");
	BAD("timeout: 30\n", "bad duration");
	BAD("timeout: -5s\n", "bad duration");
	BAD("timeout: 2d\n", "out of range");
	BAD("timeout: 106751991167301d\n", "@2: 'timeout': duration overflow");
	BAD("size: 10XB\n", "@2: 'size': bad size '10XB'");
	BAD("size: 9999999TiB\n", "@2: 'size': size overflow");
	BAD("size: 99999999999999999999\n", "size overflow");
	BAD("items: scalar\n", "must be a list");
	BAD("items:\n  - id: a\n  - id: b\n  - id: c\n  - id: d\n",
	    "@2: 'items': too many items (4, max 3)");
#undef BAD
	expect_errors("name: n\ndb: {url: u}\ninc: {host: h, weight: 11}\n",
	              "@3: 'inc.weight': 11 is out of range [1, 10]", NULL);
}

static void
test_scalar_parsers(void **state)
{
	(void)state;
	int64_t v;

	assert_int_equal(conf_parse_duration("500ms", &v), 0);
	assert_int_equal(v, 500);
	assert_int_equal(conf_parse_duration("30s", &v), 0);
	assert_int_equal(v, 30000);
	assert_int_equal(conf_parse_duration("10m", &v), 0);
	assert_int_equal(v, 600000);
	assert_int_equal(conf_parse_duration("2h", &v), 0);
	assert_int_equal(v, 7200000);
	assert_int_equal(conf_parse_duration("1d", &v), 0);
	assert_int_equal(v, 86400000);
	assert_int_equal(conf_parse_duration("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(conf_parse_duration("5", &v), -EINVAL);
	assert_int_equal(conf_parse_duration("", &v), -EINVAL);
	assert_int_equal(conf_parse_duration("s", &v), -EINVAL);
	assert_int_equal(conf_parse_duration("1.5s", &v), -EINVAL);
	assert_int_equal(conf_parse_duration("1 s", &v), -EINVAL);
	assert_int_equal(conf_parse_duration("9223372036854775807ms", &v), 0);
	assert_int_equal(conf_parse_duration("9223372036854775808ms", &v),
	                 -ERANGE);
	assert_int_equal(conf_parse_duration("9223372036854776s", &v), -ERANGE);
	assert_int_equal(conf_parse_duration(NULL, &v), -EINVAL);

	assert_int_equal(conf_parse_size("4096", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(conf_parse_size("64KiB", &v), 0);
	assert_int_equal(v, 65536);
	assert_int_equal(conf_parse_size("1MiB", &v), 0);
	assert_int_equal(v, 1048576);
	assert_int_equal(conf_parse_size("2GiB", &v), 0);
	assert_int_equal(v, 2147483648LL);
	assert_int_equal(conf_parse_size("10B", &v), 0);
	assert_int_equal(v, 10);
	assert_int_equal(conf_parse_size("1MB", &v), -EINVAL);
	assert_int_equal(conf_parse_size("-1", &v), -EINVAL);
	assert_int_equal(conf_parse_size("8388608TiB", &v), -ERANGE);
	assert_int_equal(conf_parse_size("8388607TiB", &v), 0);
}

static void
test_duplicate_keys(void **state)
{
	(void)state;
	expect_errors("name: a\ndb: {url: u}\nname: b\ninc: {host: h}\n",
	              "@3: duplicate key 'name' (first on line 1)", NULL);
	expect_errors("name: a\ndb:\n  url: u\n  url: v\ninc: {host: h}\n",
	              "@4: duplicate key 'url'", NULL);
}

static void
test_yaml_features_refused(void **state)
{
	(void)state;
	expect_errors("name: &x n\ndb: {url: *x}\ninc: {host: h}\n",
	              "@1: anchors and aliases are not allowed", NULL);
	expect_errors("name: !!str n\ndb: {url: u}\ninc: {host: h}\n",
	              "@1: tags are not allowed", NULL);
	expect_errors("name: n\ndb: {url: u}\ninc: {host: h}\n---\nname: m\n",
	              "@4: only one YAML document allowed", NULL);
	expect_errors("name: n\ndb: {url: u}\ninc: {host: h}\n[a]: 1\n",
	              "@4: mapping keys must be plain text", NULL);
}

static void
test_bounds(void **state)
{
	(void)state;
	char *buf;
	size_t off = 0, cap = 2 * 1024 * 1024;

	/* depth: 17 nested mappings */
	buf = calloc(1, cap);
	assert_non_null(buf);
	off += (size_t)sprintf(buf, "name: n\ndb: {url: u}\ninc: {host: h}\n");
	for (int i = 0; i < 17; i++)
		off += (size_t)sprintf(buf + off, "%*sk%d:\n", 2 * i, "", i);
	sprintf(buf + off, "%*sleaf: 1\n", 34, "");
	expect_errors(buf, "nesting too deep (max 16)", NULL);

	/* nodes: 10,001 list items */
	off = (size_t)sprintf(buf, "name: n\ndb: {url: u}\ninc: {host: h}\n"
	                           "items:\n");
	for (int i = 0; i < 10001; i++)
		off += (size_t)sprintf(buf + off, "  - %d\n", i);
	expect_errors(buf, "too many nodes (max 10000)", NULL);

	/* file size: 1 MiB + 1 */
	memset(buf, '#', 1024 * 1024 + 1);
	buf[1024 * 1024 + 1] = '\0';
	expect_errors(buf, "file too large", NULL);
	free(buf);

	/* a file that is not there */
	struct tconf c;
	char *errs = NULL;
	assert_int_equal(conf_load("/nonexistent/x.yaml", tkeys, &c, &errs),
	                 KASIR_ECONFIG);
	assert_non_null(strstr(errs, "/nonexistent/x.yaml: cannot open"));
	free(errs);
	assert_all_zero(&c);
}

/* One bad key anywhere: nothing of the good ones survives. */
static void
test_nothing_half_applied(void **state)
{
	(void)state;
	const char *sec = tu_write(tmpdir, "sec", "s3cr3t\n", 0600);
	char buf[1024], *p;

	/* every other key good; port (line 3) out of range */
	snprintf(buf, sizeof(buf), "secret: %s\n%s", sec, good_yaml);
	p = strstr(buf, "port: 9000");
	memcpy(p, "port: 0000", 10);
	/* expect_errors checks every field is zero afterwards (and ASan
	 * that the strings, list and secret were freed). */
	expect_errors(buf, "@3: 'port': 0000 is out of range", NULL);
	/* the last list item bad: the earlier items are freed too */
	snprintf(buf, sizeof(buf), "secret: %s\n%s  - id: c\n    n: x\n", sec,
	         good_yaml);
	expect_errors(buf, "not an integer", NULL);
}

static void
test_secrets(void **state)
{
	(void)state;
	char cred[300], buf[1024];
	struct tconf c;
	char *errs = NULL;
	const char *base = "name: n\ndb: {url: u}\ninc: {host: h}\n";

	/* absolute path, trailing CRLF stripped */
	const char *p = tu_write(tmpdir, "s1", "topsecret\r\n", 0640);
	snprintf(buf, sizeof(buf), "%ssecret: %s\n", base, p);
	const char *cfg = tu_write(tmpdir, "c.yaml", buf, 0600);
	assert_int_equal(conf_load(cfg, tkeys, &c, &errs), 0);
	assert_string_equal(c.secret.value, "topsecret");
	assert_int_equal(c.secret.len, 9);
	assert_string_equal(c.secret.origin, p);
	conf_free(tkeys, &c);
	assert_null(c.secret.value);

	/* missing file */
	snprintf(buf, sizeof(buf), "%ssecret: %s/nope\n", base, tmpdir);
	expect_errors(buf, "@4: secret 'secret': cannot open",
	              "nope: No such file", NULL);

	/* world-readable file */
	p = tu_write(tmpdir, "s2", "topsecret\n", 0644);
	snprintf(buf, sizeof(buf), "%ssecret: %s\n", base, p);
	expect_errors(buf, "@4: secret 'secret':",
	              "is accessible by others (mode 0644)", NULL);
	p = tu_write(tmpdir, "s2", "topsecret\n", 0602);
	snprintf(buf, sizeof(buf), "%ssecret: %s\n", base, p);
	expect_errors(buf, "accessible by others", NULL);

	/* empty, too large, a directory, a relative path */
	p = tu_write(tmpdir, "s3", "\n\n", 0600);
	snprintf(buf, sizeof(buf), "%ssecret: %s\n", base, p);
	expect_errors(buf, "is empty", NULL);
	char *big = malloc(5000);
	memset(big, 'x', 4097);
	big[4097] = '\0';
	p = tu_write(tmpdir, "s4", big, 0600);
	free(big);
	snprintf(buf, sizeof(buf), "%ssecret: %s\n", base, p);
	expect_errors(buf, "larger than 4096 bytes", NULL);
	snprintf(buf, sizeof(buf), "%ssecret: %s\n", base, tmpdir);
	expect_errors(buf, "not a regular file", NULL);
	snprintf(buf, sizeof(buf), "%ssecret: rel/path\n", base);
	expect_errors(buf, "must be an absolute path or a credential name",
	              NULL);

	/* credential name without $CREDENTIALS_DIRECTORY */
	snprintf(buf, sizeof(buf), "%ssecret: msg-k1\n", base);
	expect_errors(buf, "$CREDENTIALS_DIRECTORY is not set", NULL);

	/* credential name resolved in $CREDENTIALS_DIRECTORY */
	snprintf(cred, sizeof(cred), "%s/creds", tmpdir);
	assert_int_equal(mkdir(cred, 0700), 0);
	tu_write(cred, "msg-k1", "credvalue\n", 0400);
	setenv("CREDENTIALS_DIRECTORY", cred, 1);
	cfg = tu_write(tmpdir, "c.yaml", buf, 0600);
	assert_int_equal(conf_load(cfg, tkeys, &c, &errs), 0);
	assert_string_equal(c.secret.value, "credvalue");
	conf_free(tkeys, &c);
	/* ".." is not a credential name */
	snprintf(buf, sizeof(buf), "%ssecret: ..\n", base);
	expect_errors(buf, "invalid credential name", NULL);
	unsetenv("CREDENTIALS_DIRECTORY");

	/* a secret pasted where its file or credential name goes is not
	 * echoed either, whatever the error (an outside attack) */
	{
		static const char *const pasted[] = {
		    /* a Midtrans-key-shaped value, split so that no scanner
		     * takes the test for a leaked key */
		    "SB-Mid-ser"
		    "ver-PASTEDSECRETVALUE1",
		    "PASTEDSECRET+VALUE2/xyz==", /* base64-like */
		    "EAAGPASTEDSECRETVALUE3",
		};
		for (size_t i = 0; i < 3; i++) {
			char *e = NULL;

			if (i == 2)
				setenv("CREDENTIALS_DIRECTORY", cred, 1);
			snprintf(buf, sizeof(buf), "%ssecret: %s\n", base,
			         pasted[i]);
			cfg = tu_write(tmpdir, "c.yaml", buf, 0600);
			assert_int_equal(conf_load(cfg, tkeys, &c, &e),
			                 KASIR_ECONFIG);
			assert_non_null(e);
			assert_null(strstr(e, "PASTEDSECRET"));
			assert_non_null(strstr(e, "characters)"));
			free(e);
			unsetenv("CREDENTIALS_DIRECTORY");
		}
	}

	/* the value is never echoed into an error message */
	p = tu_write(tmpdir, "s5", "SUPERSECRETVALUE\n", 0644);
	snprintf(buf, sizeof(buf), "%ssecret: %s\n", base, p);
	cfg = tu_write(tmpdir, "c.yaml", buf, 0600);
	assert_int_equal(conf_load(cfg, tkeys, &c, &errs), KASIR_ECONFIG);
	assert_null(strstr(errs, "SUPERSECRETVALUE"));
	free(errs);
}

static const struct conf_key *cli_table = tkeys;

/* Runs conf_cli with args and cli_table, capturing stdout and stderr. */
static bool
run_cli(int *ret_exit, char **ret_out, char **ret_err, struct tconf *c, ...)
{
	char *argv[8] = {"kasir-test"};
	int argc = 1;
	struct tu_capture o, e;
	va_list ap;
	bool run;

	va_start(ap, c);
	while ((argv[argc] = va_arg(ap, char *)) != NULL)
		argc++;
	va_end(ap);
	tu_capture_begin(&o, STDOUT_FILENO);
	tu_capture_begin(&e, STDERR_FILENO);
	run = conf_cli(argc, argv, "kasir-test", cli_table, c, ret_exit);
	*ret_err = tu_capture_end(&e);
	*ret_out = tu_capture_end(&o);
	return run;
}

static void
test_cli(void **state)
{
	(void)state;
	char *good = strdup(tu_write(tmpdir, "good.yaml", good_yaml, 0600));
	char *bad = strdup(tu_write(tmpdir, "bad.yaml",
	                            "name: n\ndb: {url: u}\ninc: {host: h}\n"
	                            "nope: 1\n",
	                            0600));
	char *broken =
	    strdup(tu_write(tmpdir, "broken.yaml", "name: [\n", 0600));
	char *out, *err, want[600];
	struct tconf c;
	int rc = -1;

	assert_false(
	    run_cli(&rc, &out, &err, &c, "--check-config", good, NULL));
	assert_int_equal(rc, 0);
	assert_string_equal(out, "configuration OK\n");
	assert_string_equal(err, "");
	assert_all_zero(&c);
	free(out), free(err);

	assert_false(run_cli(&rc, &out, &err, &c, "--check-config", bad, NULL));
	assert_int_not_equal(rc, 0);
	assert_string_equal(out, "");
	snprintf(want, sizeof(want), "%s:4: unknown key 'nope'\n", bad);
	assert_string_equal(err, want);
	free(out), free(err);

	assert_false(
	    run_cli(&rc, &out, &err, &c, "--check-config", broken, NULL));
	assert_int_equal(rc, 1);
	snprintf(want, sizeof(want), "%s:", broken);
	assert_non_null(strstr(err, want));
	assert_non_null(strstr(err, "syntax error"));
	assert_null(strstr(out, "configuration OK"));
	free(out), free(err);

	/* --config: loads and says run */
	assert_true(run_cli(&rc, &out, &err, &c, "--config", good, NULL));
	assert_string_equal(c.name, "shop");
	conf_free(tkeys, &c);
	free(out), free(err);
	assert_false(run_cli(&rc, &out, &err, &c, "--config", bad, NULL));
	assert_int_equal(rc, 1);
	assert_non_null(strstr(err, "unknown key 'nope'"));
	free(out), free(err);

	assert_false(run_cli(&rc, &out, &err, &c, "--version", NULL));
	assert_int_equal(rc, 0);
	assert_non_null(strstr(out, "kasir-test "));
	free(out), free(err);

	assert_false(run_cli(&rc, &out, &err, &c, NULL));
	assert_int_equal(rc, 2);
	assert_non_null(strstr(err, "usage:"));
	free(out), free(err);
	assert_false(run_cli(&rc, &out, &err, &c, "--frobnicate", NULL));
	assert_int_equal(rc, 2);
	free(out), free(err);
	assert_false(run_cli(&rc, &out, &err, &c, "--config", NULL));
	assert_int_equal(rc, 2);
	free(out), free(err);
	assert_false(run_cli(&rc, &out, &err, &c, "--help", NULL));
	assert_int_equal(rc, 0);
	assert_non_null(strstr(out, "--check-config FILE"));
	free(out), free(err);

	free(good), free(bad), free(broken);
}

/* Finish hooks: run once after every key applied, never on a file with a
 * key error; their errors carry the key's line (none when it is absent)
 * and reject the whole file. */
static void
test_finish(void **state)
{
	(void)state;
	const char *path;
	struct tconf c;
	char *errs = NULL, want[700];

	/* the good file: the hook runs once and may derive fields */
	path = tu_write(tmpdir, "f.yaml", good_yaml, 0600);
	finish_calls = item_finish_calls = 0;
	memset(&c, 0xa5, sizeof(c));
	assert_int_equal(conf_load(path, fkeys, &c, &errs), 0);
	assert_int_equal(finish_calls, 1);
	assert_int_equal(item_finish_calls, 2); /* once per list item */
	assert_int_equal(c.size, 64 * 1024 + 1);
	conf_free(fkeys, &c);

	/* present key: its line; absent key: the file only */
	path = tu_write(tmpdir, "f.yaml",
	                "name: n\n"
	                "port: 4\n"
	                "flag: true\n"
	                "db:\n"
	                "  url: u\n"
	                "  pool: 4\n"
	                "inc: {host: h}\n",
	                0600);
	finish_calls = 0;
	memset(&c, 0xa5, sizeof(c));
	assert_int_equal(conf_load(path, fkeys, &c, &errs), KASIR_ECONFIG);
	assert_int_equal(finish_calls, 1);
	snprintf(want, sizeof(want),
	         "%s: 'secret' is required below port 1024\n"
	         "%s:6: db.pool must differ from port (4)\n",
	         path, path);
	assert_string_equal(errs, want);
	assert_all_zero(&c); /* nothing half-applied */
	free(errs);
	errs = NULL;

	/* a key error: the hook does not run on a half-read struct */
	path = tu_write(tmpdir, "f.yaml",
	                "name: n\nport: 4\ndb: {url: u, pool: 4}\n"
	                "inc: {host: h}\nnope: 1\n",
	                0600);
	finish_calls = 0;
	assert_int_equal(conf_load(path, fkeys, &c, &errs), KASIR_ECONFIG);
	assert_int_equal(finish_calls, 0);
	assert_null(strstr(errs, "db.pool must differ"));
	assert_non_null(strstr(errs, "unknown key 'nope'"));
	assert_all_zero(&c);
	free(errs);
	errs = NULL;

	/* a list item's hook, at the item's line */
	path = tu_write(tmpdir, "f.yaml",
	                "name: n\n"
	                "db: {url: u}\n"
	                "inc: {host: h}\n"
	                "items:\n"
	                "  - id: a\n"
	                "  - n: 2\n"
	                "    id: bad\n",
	                0600);
	assert_int_equal(conf_load(path, fkeys, &c, &errs), KASIR_ECONFIG);
	snprintf(want, sizeof(want), "%s:7: item id 'bad' is reserved\n", path);
	assert_string_equal(errs, want);
	assert_all_zero(&c);
	free(errs);
}

/* --check-config FILE, --check-config=FILE and --config FILE all run the
 * finish hook and say the same. */
static void
test_cli_finish(void **state)
{
	(void)state;
	char *bad = strdup(tu_write(tmpdir, "fbad.yaml",
	                            "name: n\nport: 4\ndb: {url: u, pool: 4}\n"
	                            "inc: {host: h}\n",
	                            0600));
	char *good = strdup(tu_write(tmpdir, "fgood.yaml", good_yaml, 0600));
	char arg[600], want[700], *out, *err;
	struct tconf c;
	int rc = -1;

	cli_table = fkeys;
	snprintf(want, sizeof(want),
	         "%s:3: db.pool must differ from port (4)\n", bad);
	assert_false(run_cli(&rc, &out, &err, &c, "--check-config", bad, NULL));
	assert_int_equal(rc, 1);
	assert_string_equal(err, want);
	assert_string_equal(out, "");
	free(out), free(err);

	snprintf(arg, sizeof(arg), "--check-config=%s", bad);
	assert_false(run_cli(&rc, &out, &err, &c, arg, NULL));
	assert_int_equal(rc, 1);
	assert_string_equal(err, want);
	assert_string_equal(out, "");
	free(out), free(err);

	assert_false(run_cli(&rc, &out, &err, &c, "--config", bad, NULL));
	assert_int_equal(rc, 1);
	assert_string_equal(err, want);
	free(out), free(err);

	snprintf(arg, sizeof(arg), "--check-config=%s", good);
	assert_false(run_cli(&rc, &out, &err, &c, arg, NULL));
	assert_int_equal(rc, 0);
	assert_string_equal(out, "configuration OK\n");
	free(out), free(err);
	assert_true(run_cli(&rc, &out, &err, &c, "-c", good, NULL));
	assert_int_equal(c.size, 64 * 1024 + 1); /* the hook ran */
	conf_free(fkeys, &c);
	free(out), free(err);

	cli_table = tkeys;
	free(bad), free(good);
}

/* The committed fixtures: the good one passes, the bad ones fail with
 * FILE:LINE. */
static void
test_fixtures(void **state)
{
	(void)state;
	const char *src = getenv("KASIR_SOURCE_DIR");
	char path[512];
	struct tconf c;
	char *errs = NULL;

	if (src == NULL)
		skip();
	snprintf(path, sizeof(path), "%s/tests/fixtures/config/malformed.yaml",
	         src);
	assert_int_equal(conf_load(path, tkeys, &c, &errs), KASIR_ECONFIG);
	strcat(path, ":");
	assert_ptr_equal(strstr(errs, path), errs);
	free(errs);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good_file),
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_unknown_keys),
	    cmocka_unit_test(test_required),
	    cmocka_unit_test(test_types_and_ranges),
	    cmocka_unit_test(test_scalar_parsers),
	    cmocka_unit_test(test_duplicate_keys),
	    cmocka_unit_test(test_yaml_features_refused),
	    cmocka_unit_test(test_bounds),
	    cmocka_unit_test(test_nothing_half_applied),
	    cmocka_unit_test(test_secrets),
	    cmocka_unit_test(test_cli),
	    cmocka_unit_test(test_finish),
	    cmocka_unit_test(test_cli_finish),
	    cmocka_unit_test(test_fixtures),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
