/*
 * conf.c - kasir-ingest's configuration table (see config.example.yaml).
 *
 * Everything a caller controls has a bound here: connections, body size,
 * queue length and bytes, batch size, rate, quarantine budget.  Midtrans
 * server keys are secrets (files or credential names), several for
 * rotation; their ids are what the database records.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "ingest.h"

/* ---- trusted proxies: a list of addresses or CIDR networks ---- */

int
ingest_cidr_parse(const char *s, struct ingest_cidr *ret)
{
	struct ingest_cidr c = {0};
	char buf[INET6_ADDRSTRLEN + 8];
	char *slash, *end;
	unsigned maxp;
	long p;

	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	slash = strchr(buf, '/');
	if (slash != NULL)
		*slash++ = '\0';
	if (inet_pton(AF_INET, buf, c.addr) == 1) {
		c.family = AF_INET;
		maxp = 32;
	} else if (inet_pton(AF_INET6, buf, c.addr) == 1) {
		c.family = AF_INET6;
		maxp = 128;
	} else {
		return -EINVAL;
	}
	c.prefix = maxp;
	if (slash != NULL) {
		errno = 0;
		p = strtol(slash, &end, 10);
		if (*slash == '\0' || *end != '\0' || errno != 0 || p < 0 ||
		    p > (long)maxp)
			return -EINVAL;
		c.prefix = (unsigned)p;
	}
	*ret = c;
	return 0;
}

static int
parse_proxies(const struct conf_node *n, void *field, struct conf_errors *errs)
{
	struct ingest_proxies *px = field;
	const struct conf_node *c;
	size_t count = 0, i = 0;
	bool bad = false;

	memset(px, 0, sizeof(*px));
	if (n->kind == CONF_NODE_SCALAR && n->value[0] == '\0')
		return 0; /* "trusted_proxies:" - none */
	if (n->kind != CONF_NODE_SEQ) {
		conf_error(errs, n, "'ingest.trusted_proxies' must be a list");
		return KASIR_ECONFIG;
	}
	for (c = n->child; c != NULL; c = c->next)
		count++;
	if (count > INGEST_PROXIES_MAX) {
		conf_error(errs, n,
		           "'ingest.trusted_proxies': too many (%zu, max %d)",
		           count, INGEST_PROXIES_MAX);
		return KASIR_ECONFIG;
	}
	if (count == 0)
		return 0;
	px->items = calloc(count, sizeof(*px->items));
	if (px->items == NULL) {
		conf_error(errs, n, "out of memory");
		return -ENOMEM;
	}
	for (c = n->child; c != NULL; c = c->next, i++) {
		if (c->kind != CONF_NODE_SCALAR ||
		    ingest_cidr_parse(c->value, &px->items[i]) < 0) {
			conf_error(errs, c,
			           "'ingest.trusted_proxies': '%.64s' is not "
			           "an address or CIDR network",
			           c->kind == CONF_NODE_SCALAR
			               ? c->value
			               : "(not a value)");
			bad = true;
		}
	}
	if (bad) {
		free(px->items);
		memset(px, 0, sizeof(*px));
		return KASIR_ECONFIG;
	}
	px->count = count;
	return 0;
}

static void
free_proxies(void *field)
{
	struct ingest_proxies *px = field;

	free(px->items);
	memset(px, 0, sizeof(*px));
}

/* ---- midtrans.server_keys ---- */

static const struct conf_key server_key_keys[] = {
    {.key = "id",
     .type = CONF_STRING,
     .offset = offsetof(struct ingest_server_key, id),
     .required = true},
    {.key = "secret",
     .type = CONF_SECRET,
     .offset = offsetof(struct ingest_server_key, secret),
     .required = true},
    {.key = NULL},
};

static bool
key_id_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 32)
		return false;
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                 "0123456789._-") == n;
}

static int
parse_server_keys(const struct conf_node *n, void *field,
                  struct conf_errors *errs)
{
	struct conf_list *list = field;
	const struct conf_node *item;
	const struct ingest_server_key *keys;
	bool bad = false;
	size_t i;

	if (conf_parse_list(n, server_key_keys,
	                    sizeof(struct ingest_server_key),
	                    INGEST_SERVER_KEYS_MAX, list, errs) < 0)
		return KASIR_ECONFIG;
	if (list->count == 0) {
		conf_error(errs, n, "'midtrans.server_keys' needs a key");
		return KASIR_ECONFIG;
	}
	keys = list->items;
	for (i = 0, item = n->child; i < list->count; i++, item = item->next) {
		if (!key_id_ok(keys[i].id)) {
			conf_error(errs, item,
			           "server key id '%.40s': 1..32 characters "
			           "of A-Z a-z 0-9 . _ -",
			           keys[i].id);
			bad = true;
		}
		if (keys[i].secret.len < 8) {
			conf_error(errs, item,
			           "server key '%.40s': the secret in %s is "
			           "too short to be a Midtrans server key",
			           keys[i].id, keys[i].secret.origin);
			bad = true;
		}
		for (size_t j = 0; j < i; j++) {
			if (strcmp(keys[i].id, keys[j].id) == 0) {
				conf_error(errs, item,
				           "duplicate server key id '%s'",
				           keys[i].id);
				bad = true;
			}
		}
	}
	if (bad) {
		conf_list_free(server_key_keys,
		               sizeof(struct ingest_server_key), list);
		return KASIR_ECONFIG;
	}
	return 0;
}

static void
free_server_keys(void *field)
{
	conf_list_free(server_key_keys, sizeof(struct ingest_server_key),
	               field);
}

/* ingest.path: an absolute path without a query; no redirect ever means
 * exactly this path is served, so it must be written exactly. */
static int
parse_path(const struct conf_node *n, void *field, struct conf_errors *errs)
{
	char **out = field;
	size_t len;

	if (n->kind != CONF_NODE_SCALAR) {
		conf_error(errs, n, "'ingest.path' must be a single value");
		return KASIR_ECONFIG;
	}
	len = strlen(n->value);
	if (len < 2 || len > 200 || n->value[0] != '/' ||
	    strcspn(n->value, "?# \t") != len) {
		conf_error(errs, n,
		           "'ingest.path' must be an absolute URL path like "
		           "/midtrans/notification");
		return KASIR_ECONFIG;
	}
	if ((*out = strdup(n->value)) == NULL) {
		conf_error(errs, n, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

static void
free_path(void *field)
{
	char **s = field;

	free(*s);
	*s = NULL;
}

/* What a notification's message adds to its body: the parsed fields
 * (each bounded by notification.c) and the envelope around them
 * (ingest.stream_source_ingest renders the body itself into the message,
 * where stream_append's size check never sees it). */
#define INGEST_MESSAGE_OVERHEAD (16 * 1024)

/* kasir-ingest's finish hook (config.h: conf_finish_fn): conf_load()
 * runs it, so --check-config and a start agree. */
static int
ingest_conf_check(void *base, const struct conf_node *map,
                  struct conf_errors *errs)
{
	const struct ingest_conf *c = base;
	int rc = 0;

	/* A stored notification whose message a consumer refuses as too
	 * large stops the ingest stream at it for good (a consumer never
	 * skips a message): every body ingest accepts must fit a frame. */
	if (c->body_max + INGEST_MESSAGE_OVERHEAD > c->base.msg_max_frame) {
		conf_error_key(
		    errs, map, "ingest.body_max",
		    "'ingest.body_max' (%lld bytes) plus %d bytes "
		    "for its message must fit "
		    "'messages.max_frame' (%lld bytes): lower it, or "
		    "raise max_frame in every daemon",
		    (long long)c->body_max, INGEST_MESSAGE_OVERHEAD,
		    (long long)c->base.msg_max_frame);
		rc = KASIR_ECONFIG;
	}

	/* kasir-order consumes the ingest stream */
	if (base_conf_need_publish(&c->base, map, errs, "kasir-ingest",
	                           "ingest") < 0)
		rc = KASIR_ECONFIG;
	if (base_conf_check_listen(c->listen, map, errs, "ingest.listen") < 0)
		rc = KASIR_ECONFIG;
	return rc;
}

#define F(m) offsetof(struct ingest_conf, m)

const struct conf_key ingest_conf_keys[] = {
    BASE_CONF_KEYS_FOR(struct ingest_conf),
    {.key = "ingest.listen",
     .type = CONF_STRING,
     .offset = F(listen),
     .required = true},
    {.key = "ingest.path",
     .type = CONF_CUSTOM,
     .offset = F(path),
     .size = sizeof(((struct ingest_conf *)0)->path),
     .parse = parse_path,
     .free = free_path,
     .defval = INGEST_DEFAULT_PATH},
    {.key = "ingest.max_connections",
     .type = CONF_INT,
     .offset = F(max_connections),
     .min = 1,
     .max = 100000,
     .defval = "1000"},
    {.key = "ingest.per_ip_connections",
     .type = CONF_INT,
     .offset = F(per_ip_connections),
     .min = 1,
     .max = 100000,
     .defval = "100"},
    {.key = "ingest.timeout",
     .type = CONF_DURATION,
     .offset = F(timeout_ms),
     .min = 1000,
     .max = 300000,
     .defval = "10s"},
    {.key = "ingest.threads",
     .type = CONF_INT,
     .offset = F(threads),
     .min = 1,
     .max = 64,
     .defval = "2"},
    {.key = "ingest.body_max",
     .type = CONF_SIZE,
     .offset = F(body_max),
     .min = 1024,
     .max = 1024 * 1024,
     .defval = "64KiB"},
    {.key = "ingest.trusted_proxies",
     .type = CONF_CUSTOM,
     .offset = F(trusted_proxies),
     .size = sizeof(((struct ingest_conf *)0)->trusted_proxies),
     .parse = parse_proxies,
     .free = free_proxies},
    {.key = "ingest.rate_limit.rate",
     .type = CONF_INT,
     .offset = F(rate_per_s),
     .min = 1,
     .max = 1000000,
     .defval = "50"},
    {.key = "ingest.rate_limit.burst",
     .type = CONF_INT,
     .offset = F(rate_burst),
     .min = 1,
     .max = 1000000,
     .defval = "100"},
    {.key = "ingest.rate_limit.max_sources",
     .type = CONF_INT,
     .offset = F(rate_max_sources),
     .min = 16,
     .max = 10000000,
     .defval = "65536"},
    {.key = "ingest.commit.queue_max",
     .type = CONF_INT,
     .offset = F(queue_max),
     .min = 1,
     .max = 1000000,
     .defval = "4096"},
    {.key = "ingest.commit.queue_max_bytes",
     .type = CONF_SIZE,
     .offset = F(queue_max_bytes),
     .min = 64 * 1024,
     .max = 4LL * 1024 * 1024 * 1024,
     .defval = "32MiB"},
    {.key = "ingest.commit.batch_max",
     .type = CONF_INT,
     .offset = F(batch_max),
     .min = 1,
     .max = 4096,
     .defval = "64"},
    {.key = "ingest.commit.batch_wait",
     .type = CONF_DURATION,
     .offset = F(batch_wait_ms),
     .min = 0,
     .max = 100,
     .defval = "0ms"},
    {.key = "ingest.commit.committers",
     .type = CONF_INT,
     .offset = F(committers),
     .min = 1,
     .max = INGEST_COMMITTERS_MAX,
     .defval = "2"},
    {.key = "ingest.commit.statement_timeout",
     .type = CONF_DURATION,
     .offset = F(statement_timeout_ms),
     .min = 100,
     .max = 60000,
     .defval = "4s"},
    {.key = "ingest.quarantine.per_minute",
     .type = CONF_INT,
     .offset = F(quarantine_per_minute),
     .min = 0,
     .max = 100000,
     .defval = "60"},
    {.key = "ingest.quarantine.max_rows",
     .type = CONF_INT,
     .offset = F(quarantine_max_rows),
     .min = 0,
     .max = 100000000,
     .defval = "100000"},
    {.key = "midtrans.server_keys",
     .type = CONF_CUSTOM,
     .offset = F(server_keys),
     .size = sizeof(((struct ingest_conf *)0)->server_keys),
     .required = true,
     .parse = parse_server_keys,
     .free = free_server_keys},
    CONF_END(ingest_conf_check),
};
