/*
 * base_conf.c - the configuration every daemon shares (base_conf.h).
 *
 * Plain keys go straight through the config table; the structured ones
 * (log level, the message key ring, the consume list) have CONF_CUSTOM
 * parsers that also check what a table cannot: key ids and lengths, that
 * sign_with names a key of the ring, unique stream names.  Cross-field
 * checks rely on conf_load applying entries in table order.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base_conf.h"
#include "envelope.h"
#include "err.h"
#include "http.h"
#include "log.h"

/* The struct base_conf a field of it belongs to. */
#define BASE_OF(field, member)                                                 \
	((struct base_conf *)(void *)((char *)(field)-offsetof(                \
	    struct base_conf, member)))

static bool
scalar_ok(const struct conf_node *n, struct conf_errors *errs, const char *what)
{
	if (n->kind != CONF_NODE_SCALAR || n->value[0] == '\0') {
		conf_error(errs, n, "'%s' must be a single value", what);
		return false;
	}
	return true;
}

/* log.level: the name, and the syslog level it means. */
static int
parse_log_level(const struct conf_node *n, void *field,
                struct conf_errors *errs)
{
	struct base_conf *c = BASE_OF(field, log_level);
	int level;

	if (!scalar_ok(n, errs, "log.level"))
		return KASIR_ECONFIG;
	if (log_level_parse(n->value, &level) < 0) {
		conf_error(errs, n,
		           "'log.level': expected debug, info, notice, "
		           "warning or err, got '%.32s'",
		           n->value);
		return KASIR_ECONFIG;
	}
	if ((c->log_level_name = strdup(n->value)) == NULL) {
		conf_error(errs, n, "out of memory");
		return -ENOMEM;
	}
	c->log_level = level;
	return 0;
}

static void
free_log_level(void *field)
{
	struct base_conf *c = BASE_OF(field, log_level);

	free(c->log_level_name);
	c->log_level_name = NULL;
	c->log_level = 0;
}

static const struct conf_key key_item_keys[] = {
    {.key = "id",
     .type = CONF_STRING,
     .offset = offsetof(struct base_key_conf, id),
     .required = true},
    {.key = "secret",
     .type = CONF_SECRET,
     .offset = offsetof(struct base_key_conf, secret),
     .required = true},
    {.key = NULL},
};

static bool
key_id_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > ENVELOPE_KEY_ID_MAX)
		return false;
	for (; *s != '\0'; s++)
		if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' ||
		      *s == '-'))
			return false;
	return true;
}

/* messages.keys: 1..BASE_MAX_KEYS of {id, secret}, ids unique. */
static int
parse_keys(const struct conf_node *n, void *field, struct conf_errors *errs)
{
	struct conf_list *list = field;
	const struct conf_node *item;
	bool bad = false;
	size_t i;

	if (conf_parse_list(n, key_item_keys, sizeof(struct base_key_conf),
	                    BASE_MAX_KEYS, list, errs) < 0)
		return KASIR_ECONFIG;
	if (list->count == 0) {
		conf_error(errs, n, "'messages.keys' needs at least one key");
		return KASIR_ECONFIG;
	}
	const struct base_key_conf *keys = list->items;
	for (i = 0, item = n->child; i < list->count; i++, item = item->next) {
		if (!key_id_valid(keys[i].id)) {
			conf_error(errs, item,
			           "key id '%.40s': 1..%d characters of "
			           "A-Z a-z 0-9 . _ -",
			           keys[i].id, ENVELOPE_KEY_ID_MAX);
			bad = true;
		}
		if (keys[i].secret.len < ENVELOPE_KEY_MIN) {
			conf_error(errs, item,
			           "key '%.40s': secret in %s is %zu bytes, "
			           "at least %d needed",
			           keys[i].id, keys[i].secret.origin,
			           keys[i].secret.len, ENVELOPE_KEY_MIN);
			bad = true;
		}
		for (size_t j = 0; j < i; j++)
			if (strcmp(keys[i].id, keys[j].id) == 0) {
				conf_error(errs, item, "duplicate key id '%s'",
				           keys[i].id);
				bad = true;
			}
	}
	if (bad) {
		conf_list_free(key_item_keys, sizeof(struct base_key_conf),
		               list);
		return KASIR_ECONFIG;
	}
	return 0;
}

static void
free_keys(void *field)
{
	conf_list_free(key_item_keys, sizeof(struct base_key_conf), field);
}

/* messages.sign_with: must name a key of messages.keys (parsed before). */
static int
parse_sign_with(const struct conf_node *n, void *field,
                struct conf_errors *errs)
{
	struct base_conf *c = BASE_OF(field, msg_sign_with);
	const struct base_key_conf *keys = c->msg_keys.items;
	bool found = false;

	if (!scalar_ok(n, errs, "messages.sign_with"))
		return KASIR_ECONFIG;
	for (size_t i = 0; i < c->msg_keys.count; i++)
		if (strcmp(keys[i].id, n->value) == 0)
			found = true;
	/* With no keys the keys entry already reported its error. */
	if (!found && c->msg_keys.count > 0) {
		conf_error(errs, n,
		           "'messages.sign_with': '%.40s' is not in "
		           "messages.keys",
		           n->value);
		return KASIR_ECONFIG;
	}
	if ((c->msg_sign_with = strdup(n->value)) == NULL) {
		conf_error(errs, n, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

static void
free_string(void *field)
{
	char **s = field;

	free(*s);
	*s = NULL;
}

/* admin.socket_mode: octal permission bits, e.g. "0660". */
static int
parse_socket_mode(const struct conf_node *n, void *field,
                  struct conf_errors *errs)
{
	const char *s;
	size_t len;

	if (!scalar_ok(n, errs, "admin.socket_mode"))
		return KASIR_ECONFIG;
	s = n->value;
	len = strlen(s);
	if (len < 3 || len > 4 || strspn(s, "01234567") != len ||
	    (len == 4 && s[0] != '0')) {
		conf_error(errs, n,
		           "'admin.socket_mode': expected an octal mode like "
		           "\"0660\", got '%.16s'",
		           s);
		return KASIR_ECONFIG;
	}
	if ((*(char **)field = strdup(s)) == NULL) {
		conf_error(errs, n, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

static const struct conf_key consume_item_keys[] = {
    {.key = "stream",
     .type = CONF_STRING,
     .offset = offsetof(struct base_consume_conf, stream),
     .required = true},
    {.key = "url",
     .type = CONF_STRING,
     .offset = offsetof(struct base_consume_conf, url)},
    {.key = "replay",
     .type = CONF_STRING,
     .offset = offsetof(struct base_consume_conf, replay),
     .required = true},
    {.key = "fast_path",
     .type = CONF_BOOL,
     .offset = offsetof(struct base_consume_conf, fast_path),
     .defval = "true"},
    {.key = NULL},
};

/* consume: up to BASE_MAX_CONSUMERS of {stream, url, replay, fast_path}. */
static int
parse_consume(const struct conf_node *n, void *field, struct conf_errors *errs)
{
	struct conf_list *list = field;
	const struct conf_node *item;
	bool bad = false;
	size_t i;

	if (conf_parse_list(n, consume_item_keys,
	                    sizeof(struct base_consume_conf),
	                    BASE_MAX_CONSUMERS, list, errs) < 0)
		return KASIR_ECONFIG;
	const struct base_consume_conf *cs = list->items;
	for (i = 0, item = n->child; i < list->count; i++, item = item->next) {
		if (cs[i].fast_path && cs[i].url == NULL) {
			conf_error(errs, item,
			           "consume '%.40s': 'url' is required when "
			           "fast_path is true",
			           cs[i].stream);
			bad = true;
		}
		for (size_t j = 0; j < i; j++)
			if (strcmp(cs[i].stream, cs[j].stream) == 0) {
				conf_error(errs, item,
				           "stream '%.40s' consumed twice",
				           cs[i].stream);
				bad = true;
			}
	}
	if (bad) {
		conf_list_free(consume_item_keys,
		               sizeof(struct base_consume_conf), list);
		return KASIR_ECONFIG;
	}
	return 0;
}

static void
free_consume(void *field)
{
	conf_list_free(consume_item_keys, sizeof(struct base_consume_conf),
	               field);
}

int
base_conf_check_listen(const char *addr, const struct conf_node *map,
                       struct conf_errors *errs, const char *key)
{
	if (addr == NULL || http_listen_valid(addr))
		return 0;
	conf_error_key(errs, map, key,
	               "'%s': want HOST:PORT, [V6]:PORT or :PORT, got '%.64s'",
	               key, addr);
	return KASIR_ECONFIG;
}

/* The finish hook of the shared keys (config.h: conf_finish_fn); what
 * depends on the daemon is in its own hook (base_conf_need_*). */
static int
base_conf_check(void *base, const struct conf_node *map,
                struct conf_errors *errs)
{
	const struct base_conf *c = base;
	int rc =
	    base_conf_check_listen(c->admin_listen, map, errs, "admin.listen");

	/* The caller's role comes from the ipc socket's peer credentials
	 * (admin_socket.c); over any other transport a caller would name
	 * itself, with the support role. */
	if (c->admin_socket != NULL &&
	    strncmp(c->admin_socket, "ipc://", 6) != 0) {
		conf_error_key(errs, map, "admin.socket",
		               "'admin.socket': want an ipc:// socket (the "
		               "caller's role comes from its credentials), got "
		               "'%.64s'",
		               c->admin_socket);
		rc = KASIR_ECONFIG;
	}
	return rc;
}

#define F(member) offsetof(struct base_conf, member)

const struct conf_key base_conf_keys[] = {
    {.key = "log.level",
     .type = CONF_CUSTOM,
     .offset = F(log_level),
     /* the parser also sets log_level_name, declared right after */
     .size = F(log_level_name) + sizeof(char *) - F(log_level),
     .parse = parse_log_level,
     .free = free_log_level,
     .defval = "info"},

    {.key = "database.url",
     .type = CONF_STRING,
     .offset = F(db_url),
     .required = true},
    {.key = "database.password_file",
     .type = CONF_SECRET,
     .offset = F(db_password)},
    {.key = "database.migrate_url",
     .type = CONF_STRING,
     .offset = F(db_migrate_url)},
    {.key = "database.migrate_password_file",
     .type = CONF_SECRET,
     .offset = F(db_migrate_password)},
    {.key = "database.migrations",
     .type = CONF_STRING,
     .offset = F(db_migrations)},

    {.key = "admin.listen", .type = CONF_STRING, .offset = F(admin_listen)},
    {.key = "admin.socket", .type = CONF_STRING, .offset = F(admin_socket)},
    {.key = "admin.socket_mode",
     .type = CONF_CUSTOM,
     .offset = F(admin_socket_mode),
     .size = sizeof(char *),
     .parse = parse_socket_mode,
     .free = free_string,
     .defval = "0660"},
    {.key = "admin.engineer_group",
     .type = CONF_STRING,
     .offset = F(admin_engineer_group)},
    {.key = "admin.support_group",
     .type = CONF_STRING,
     .offset = F(admin_support_group)},

    /* keys before sign_with: parse_sign_with looks the id up. */
    {.key = "messages.keys",
     .type = CONF_CUSTOM,
     .offset = F(msg_keys),
     .size = sizeof(struct conf_list),
     .required = true,
     .parse = parse_keys,
     .free = free_keys},
    {.key = "messages.sign_with",
     .type = CONF_CUSTOM,
     .offset = F(msg_sign_with),
     .size = sizeof(char *),
     .required = true,
     .parse = parse_sign_with,
     .free = free_string},
    {.key = "messages.max_frame",
     .type = CONF_SIZE,
     .offset = F(msg_max_frame),
     .min = 4096,
     .max = 16 * 1024 * 1024,
     .defval = "1MiB"},

    {.key = "stream.publish", .type = CONF_STRING, .offset = F(stream_publish)},
    {.key = "stream.replay", .type = CONF_STRING, .offset = F(stream_replay)},
    {.key = "stream.heartbeat",
     .type = CONF_DURATION,
     .offset = F(stream_heartbeat_ms),
     .min = 100,
     .max = 60 * 1000,
     .defval = "1s"},
    {.key = "stream.ready_max_lag",
     .type = CONF_INT,
     .offset = F(stream_ready_max_lag),
     .min = 1,
     .max = INT64_C(1) << 40,
     .defval = "10000"},

    {.key = "consume",
     .type = CONF_CUSTOM,
     .offset = F(consume),
     .size = sizeof(struct conf_list),
     .parse = parse_consume,
     .free = free_consume},
    CONF_END(base_conf_check),
};

const struct base_consume_conf *
base_conf_consumer(const struct base_conf *c, const char *stream)
{
	const struct base_consume_conf *cs = c->consume.items;

	for (size_t i = 0; stream != NULL && i < c->consume.count; i++)
		if (strcmp(cs[i].stream, stream) == 0)
			return &cs[i];
	return NULL;
}

int
base_conf_need_publish(const struct base_conf *c, const struct conf_node *map,
                       struct conf_errors *errs, const char *daemon,
                       const char *stream)
{
	int rc = 0;

	if (c->stream_publish == NULL) {
		conf_error_key(errs, map, "stream.publish",
		               "missing 'stream.publish': %s publishes the %s "
		               "stream",
		               daemon, stream);
		rc = KASIR_ECONFIG;
	}
	if (c->stream_replay == NULL) {
		conf_error_key(errs, map, "stream.replay",
		               "missing 'stream.replay': %s serves replays of "
		               "the %s stream",
		               daemon, stream);
		rc = KASIR_ECONFIG;
	}
	return rc;
}

int
base_conf_need_consume(const struct base_conf *c, const struct conf_node *map,
                       struct conf_errors *errs, const char *daemon,
                       const char *stream)
{
	if (base_conf_consumer(c, stream) != NULL)
		return 0;
	conf_error_key(errs, map, "consume",
	               "'consume' has no entry for the %s stream: %s cannot "
	               "run without it",
	               stream, daemon);
	return KASIR_ECONFIG;
}

int
base_conf_keyring(const struct base_conf *c, struct keyring **ret)
{
	const struct base_key_conf *keys = c->msg_keys.items;
	struct keyring *kr = NULL;
	int r;

	if (c->msg_keys.count == 0 || c->msg_sign_with == NULL)
		return -EINVAL;
	if ((r = keyring_new(&kr)) < 0)
		return r;
	for (size_t i = 0; i < c->msg_keys.count; i++)
		if ((r = keyring_add(kr, keys[i].id,
		                     (const uint8_t *)keys[i].secret.value,
		                     keys[i].secret.len)) < 0)
			goto fail;
	if ((r = keyring_set_signer(kr, c->msg_sign_with)) < 0)
		goto fail;
	*ret = kr;
	return 0;
fail:
	keyring_free(kr);
	return r;
}
