/*
 * conf.c - kasir-reconciler's configuration table and list parsers.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "reconciler.h"

/* Calls item(s, n, arg) for every comma-separated, trimmed, non-empty item
 * of s.  "" has no items; an empty item between commas is -EINVAL. */
static int
split_list(const char *s, int (*item)(const char *p, size_t n, void *arg),
           void *arg)
{
	int r;

	if (s == NULL)
		return -EINVAL;
	while (isspace((unsigned char)*s))
		s++;
	if (*s == '\0')
		return 0;
	for (;;) {
		const char *comma = strchr(s, ',');
		size_t n = comma ? (size_t)(comma - s) : strlen(s);
		size_t a = 0, b = n;

		while (a < b && isspace((unsigned char)s[a]))
			a++;
		while (b > a && isspace((unsigned char)s[b - 1]))
			b--;
		if (a == b)
			return -EINVAL;
		if ((r = item(s + a, b - a, arg)) < 0)
			return r;
		if (comma == NULL)
			return 0;
		s = comma + 1;
	}
}

static int
duration_item(const char *p, size_t n, void *arg)
{
	struct recon_durations *d = arg;
	char buf[32];
	int64_t ms;
	int r;

	if (n >= sizeof(buf))
		return -EINVAL;
	if (d->n >= RECON_BACKOFF_MAX)
		return KASIR_ETOOBIG;
	memcpy(buf, p, n);
	buf[n] = '\0';
	if ((r = conf_parse_duration(buf, &ms)) < 0)
		return r;
	if (ms <= 0 || ms > 7LL * 24 * 3600 * 1000)
		return -ERANGE;
	d->ms[d->n++] = ms;
	return 0;
}

int
recon_durations_parse(const char *s, struct recon_durations *d)
{
	struct recon_durations out = {.n = 0};
	int r;

	if ((r = split_list(s, duration_item, &out)) < 0)
		return r;
	*d = out;
	return 0;
}

static int
type_item(const char *p, size_t n, void *arg)
{
	struct recon_types *t = arg;

	if (n >= sizeof(t->name[0]))
		return -EINVAL;
	if (t->n >= RECON_TXN_TYPES_MAX)
		return KASIR_ETOOBIG;
	for (size_t i = 0; i < n; i++) {
		if (!isalnum((unsigned char)p[i]) && p[i] != '_' && p[i] != '-')
			return -EINVAL;
		t->name[t->n][i] = (char)tolower((unsigned char)p[i]);
	}
	t->name[t->n][n] = '\0';
	t->n++;
	return 0;
}

int
recon_types_parse(const char *s, struct recon_types *t)
{
	struct recon_types out;
	int r;

	memset(&out, 0, sizeof(out));
	if ((r = split_list(s, type_item, &out)) < 0)
		return r;
	*t = out;
	return 0;
}

bool
recon_types_has(const struct recon_types *t, const char *name)
{
	if (name == NULL)
		return false;
	for (size_t i = 0; i < t->n; i++)
		if (strcasecmp(t->name[i], name) == 0)
			return true;
	return false;
}

/* CONF_CUSTOM parsers: errors with file:line like every other key. */
static int
parse_backoff(const struct conf_node *node, void *field,
              struct conf_errors *errs)
{
	struct recon_durations *d = field;

	if (node->kind != CONF_NODE_SCALAR ||
	    recon_durations_parse(node->value, d) < 0 || d->n == 0) {
		conf_error(errs, node,
		           "want 1..%d durations like \"10m,30m,1h,3h\", each "
		           "up to 7d",
		           RECON_BACKOFF_MAX);
		return KASIR_ECONFIG;
	}
	return 0;
}

static int
parse_types(const struct conf_node *node, void *field, struct conf_errors *errs)
{
	if (node->kind != CONF_NODE_SCALAR ||
	    recon_types_parse(node->value, field) < 0) {
		conf_error(errs, node,
		           "want a comma-separated list of at most %d payment "
		           "types like \"dana,bsi\"",
		           RECON_TXN_TYPES_MAX);
		return KASIR_ECONFIG;
	}
	return 0;
}

#define F(x) offsetof(struct recon_conf, x)
#define DUR(k, f, lo, hi, def)                                                 \
	{                                                                      \
		.key = k, .type = CONF_DURATION, .offset = F(f), .min = lo,    \
		.max = hi, .defval = def                                       \
	}
#define INT(k, f, lo, hi, def)                                                 \
	{                                                                      \
		.key = k, .type = CONF_INT, .offset = F(f), .min = lo,         \
		.max = hi, .defval = def                                       \
	}

static int recon_conf_check(void *base, const struct conf_node *map,
                            struct conf_errors *errs);

const struct conf_key recon_conf_keys[] = {
    BASE_CONF_KEYS_FOR(struct recon_conf),

    {.key = "midtrans.core_url",
     .type = CONF_STRING,
     .offset = F(core_url),
     .required = true},
    {.key = "midtrans.server_key_file",
     .type = CONF_SECRET,
     .offset = F(server_key),
     .required = true},
    DUR("midtrans.connect_timeout", connect_timeout_ms, 100, 60000, "3s"),
    DUR("midtrans.timeout", timeout_ms, 100, 120000, "10s"),
    INT("midtrans.retries", retries, 0, RECON_TRIES_MAX - 1, "2"),
    DUR("midtrans.retry_backoff", retry_backoff_ms, 10, 60000, "1s"),
    INT("midtrans.concurrency", concurrency, 1, RECON_CONCURRENCY_MAX, "4"),
    INT("midtrans.rps", rps, 1, 1000, "10"),
    {.key = "midtrans.by_transaction_id",
     .type = CONF_CUSTOM,
     .offset = F(by_txn_types),
     .parse = parse_types,
     .size = sizeof(struct recon_types),
     .defval = "dana,bsi"},

    DUR("schedule.first_check", first_check_ms, 1000, 7LL * 24 * 3600000,
        "10m"),
    {.key = "schedule.backoff",
     .type = CONF_CUSTOM,
     .offset = F(backoff),
     .parse = parse_backoff,
     .size = sizeof(struct recon_durations),
     .defval = "10m,30m,1h,3h"},
    DUR("schedule.expiry_grace", expiry_grace_ms, 0, 24LL * 3600000, "1m"),
    DUR("schedule.retry", retry_ms, 100, 3600000, "30s"),
    DUR("schedule.retry_max", retry_max_ms, 100, 24LL * 3600000, "10m"),
    DUR("schedule.lease", lease_ms, 1000, 6LL * 3600000, "5m"),
    DUR("schedule.poll", poll_ms, 10, 60000, "1s"),
    INT("schedule.batch", batch, 1, RECON_BATCH_MAX, "8"),
    INT("schedule.lanes", lanes, 1, RECON_LANES_MAX, "1"),
    DUR("schedule.auth_pause", auth_pause_ms, 1000, 24LL * 3600000, "30m"),

    {.key = "mode.auto",
     .type = CONF_BOOL,
     .offset = F(auto_mode),
     .defval = "true"},
    DUR("mode.interval", mode_interval_ms, 100, 24LL * 3600000, "1m"),
    DUR("mode.auto_silence", auto_silence_ms, 100, 7LL * 24 * 3600000, "15m"),
    DUR("mode.activity_window", activity_window_ms, 100, 7LL * 24 * 3600000,
        "2h"),
    CONF_END(recon_conf_check),
};

#undef INT
#undef DUR
#undef F

/*
 * The reconciler's finish hook (config.h: conf_finish_fn): the rules
 * between keys (the lease against the timeouts, the backoff list, the
 * streams it needs).  conf_load() runs it, so --check-config and a start
 * agree.
 */
static int
recon_conf_check(void *base, const struct conf_node *map,
                 struct conf_errors *errs)
{
	struct recon_conf *c = base;
	int64_t worst, lanes, window, conc, rps;
	int rc = 0;

	if (base_conf_need_publish(&c->base, map, errs, RECON_NAME, "recon") <
	    0)
		rc = KASIR_ECONFIG;
	if (base_conf_need_consume(&c->base, map, errs, RECON_NAME, "orders") <
	    0)
		rc = KASIR_ECONFIG;
	if (strncmp(c->core_url, "http://", 7) != 0 &&
	    strncmp(c->core_url, "https://", 8) != 0) {
		conf_error_key(errs, map, "midtrans.core_url",
		               "midtrans.core_url: want http(s)://host[:port]");
		rc = KASIR_ECONFIG;
	} else if (strlen(c->core_url) > 200 || strchr(c->core_url, '?') ||
	           strchr(c->core_url, '#')) {
		conf_error_key(errs, map, "midtrans.core_url",
		               "midtrans.core_url: a base URL without query, "
		               "at most 200 characters");
		rc = KASIR_ECONFIG;
	}
	/* "https://api.midtrans.com/" and "https://api.midtrans.com" alike */
	for (size_t n = strlen(c->core_url); n > 8 && c->core_url[n - 1] == '/';
	     n--)
		c->core_url[n - 1] = '\0';
	if (c->server_key.len == 0) {
		conf_error_key(errs, map, "midtrans.server_key_file",
		               "midtrans.server_key_file is empty");
		rc = KASIR_ECONFIG;
	}
	if (c->backoff.n == 0) {
		conf_error_key(errs, map, "schedule.backoff",
		               "schedule.backoff is empty");
		rc = KASIR_ECONFIG;
	}
	if (c->retry_max_ms < c->retry_ms) {
		conf_error_key(errs, map, "schedule.retry_max",
		               "schedule.retry_max must not be below "
		               "schedule.retry");
		rc = KASIR_ECONFIG;
	}
	if (c->lanes > c->batch || c->lanes > c->concurrency) {
		conf_error_key(errs, map, "schedule.lanes",
		               "schedule.lanes must not exceed schedule.batch "
		               "nor midtrans.concurrency (each lane gets its "
		               "share of both)");
		rc = KASIR_ECONFIG;
	}
	/* A claimed row waits behind at most its lane's window (its share
	 * of schedule.batch, rounded up) of others, run the lane's share of
	 * concurrency (rounded down) at a time under its share of the rps
	 * cap, every attempt and backoff of each: that must end well before
	 * its lease does, or the row would be claimed twice. */
	lanes = c->lanes >= 1 ? c->lanes : 1;
	window = (c->batch + lanes - 1) / lanes;
	conc = c->concurrency / lanes >= 1 ? c->concurrency / lanes : 1;
	rps = c->rps / lanes >= 1 ? c->rps / lanes : 1;
	worst = (c->timeout_ms + c->connect_timeout_ms) * (c->retries + 1);
	for (int64_t i = 0, b = c->retry_backoff_ms; i < c->retries;
	     i++, b *= 2)
		worst += b;
	worst *= (window + conc - 1) / conc;
	worst += window * (c->retries + 1) * 1000 / rps;
	if (worst * 2 > c->lease_ms) {
		conf_error_key(errs, map, "schedule.lease",
		               "schedule.lease must be at least twice the "
		               "longest batch (%lld ms: timeouts and backoffs "
		               "of every attempt of schedule.batch checks); "
		               "raise the lease or lower the batch",
		               (long long)worst);
		rc = KASIR_ECONFIG;
	}
	return rc;
}
