/*
 * config_apply.c - a key table applied to a conf_node tree (config.h).
 *
 * Every table key is looked up by its dotted path, parsed by its type into
 * base+offset, defaults are applied to absent keys and missing required
 * keys reported; a walk over the tree reports every key no table entry
 * knows.  When all that went without an error, the tables' finish hooks
 * run the checks between keys (conf_finish_fn), while the tree still gives
 * their lines.  On any error what was stored is freed and the fields are
 * zeroed again.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_impl.h"
#include "err.h"

/* Joins prefix and key with a dot into buf; false when too long. */
static bool
path_join(char *buf, size_t size, const char *prefix, const char *key)
{
	int n;

	if (prefix[0] == '\0')
		n = snprintf(buf, size, "%s", key);
	else if (key[0] == '\0')
		n = snprintf(buf, size, "%s", prefix);
	else
		n = snprintf(buf, size, "%s.%s", prefix, key);
	return n >= 0 && (size_t)n < size;
}

/* Finds the node at dotted path under map.  *ret_parent is the deepest
 * mapping found on the way (for "missing" messages).  Returns NULL when
 * absent or when something on the way is not a mapping (*ret_blocked). */
static const struct conf_node *
lookup(const struct conf_node *map, const char *path,
       const struct conf_node **ret_parent, bool *ret_blocked)
{
	const char *p = path;

	*ret_parent = map;
	*ret_blocked = false;
	while (map != NULL) {
		const char *dot = strchr(p, '.');
		size_t n = dot ? (size_t)(dot - p) : strlen(p);
		const struct conf_node *c;

		if (map->kind != CONF_NODE_MAP) {
			*ret_blocked = true;
			return NULL;
		}
		*ret_parent = map;
		for (c = map->child; c != NULL; c = c->next)
			if (strncmp(c->key, p, n) == 0 && c->key[n] == '\0')
				break;
		if (c == NULL || dot == NULL)
			return c;
		map = c;
		p = dot + 1;
	}
	return NULL;
}

void
conf_error_key(struct conf_errors *errs, const struct conf_node *map,
               const char *key, const char *fmt, ...)
{
	const struct conf_node *n, *parent;
	bool blocked;
	va_list ap;

	n = lookup(map, key, &parent, &blocked);
	/* absent: the mapping it would be in ("stream:"), unless that is the
	 * whole file */
	if (n == NULL && parent != map)
		n = parent;
	va_start(ap, fmt);
	conf_verror(errs, n, fmt, ap);
	va_end(ap);
}

static int
parse_int(const char *s, int64_t *ret)
{
	char *end;
	long long v;

	if (s[0] == '\0' || s[0] == ' ' || s[0] == '+')
		return -EINVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (*end != '\0' || end == s)
		return -EINVAL;
	*ret = v;
	return 0;
}

/* Digits then a unit from units[] (NULL-terminated name/multiplier). */
struct unit {
	const char *name;
	int64_t mult;
};

static int
parse_with_unit(const char *s, const struct unit *units, bool unit_optional,
                int64_t *ret)
{
	int64_t v = 0;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (INT64_MAX - (*p - '0')) / 10)
			return -ERANGE;
		v = v * 10 + (*p - '0');
	}
	if (*p == '\0') {
		if (unit_optional || v == 0) {
			*ret = v;
			return 0;
		}
		return -EINVAL;
	}
	for (const struct unit *u = units; u->name != NULL; u++)
		if (strcmp(p, u->name) == 0) {
			if (v > INT64_MAX / u->mult)
				return -ERANGE;
			*ret = v * u->mult;
			return 0;
		}
	return -EINVAL;
}

int
conf_parse_duration(const char *s, int64_t *ret_ms)
{
	static const struct unit units[] = {
	    {"ms", 1},          {"s", 1000},       {"m", 60 * 1000},
	    {"h", 3600 * 1000}, {"d", 86400000LL}, {NULL, 0},
	};
	return s ? parse_with_unit(s, units, false, ret_ms) : -EINVAL;
}

int
conf_parse_size(const char *s, int64_t *ret_bytes)
{
	static const struct unit units[] = {
	    {"B", 1},           {"KiB", 1LL << 10}, {"MiB", 1LL << 20},
	    {"GiB", 1LL << 30}, {"TiB", 1LL << 40}, {NULL, 0},
	};
	return s ? parse_with_unit(s, units, true, ret_bytes) : -EINVAL;
}

struct apply {
	struct conf_errors *errs;
	const struct conf_node *root; /* MAP (or NULL: empty file) */
	int root_line;
};

static void
zero_field(const struct conf_key *k, char *f)
{
	switch (k->type) {
	case CONF_STRING:
		*(char **)(void *)f = NULL;
		break;
	case CONF_INT:
	case CONF_DURATION:
	case CONF_SIZE:
		memset(f, 0, sizeof(int64_t));
		break;
	case CONF_BOOL:
		memset(f, 0, sizeof(bool));
		break;
	case CONF_SECRET:
		memset(f, 0, sizeof(struct conf_secret));
		break;
	case CONF_CUSTOM:
		if (k->size > 0)
			memset(f, 0, k->size);
		break;
	case CONF_INCLUDE:
		break;
	}
}

static void
zero_table(const struct conf_key *table, char *base, int depth)
{
	for (const struct conf_key *k = table; k->key != NULL; k++) {
		if (k->type == CONF_INCLUDE) {
			if (depth < CONF_INCLUDE_DEPTH && k->sub != NULL)
				zero_table(k->sub, base + k->offset, depth + 1);
		} else {
			zero_field(k, base + k->offset);
		}
	}
}

static void
free_table(const struct conf_key *table, char *base, int depth)
{
	for (const struct conf_key *k = table; k->key != NULL; k++) {
		char *f = base + k->offset;
		switch (k->type) {
		case CONF_STRING: {
			char **sp = (char **)(void *)f;
			free(*sp);
			*sp = NULL;
			break;
		}
		case CONF_SECRET:
			conf_secret_wipe((struct conf_secret *)(void *)f);
			break;
		case CONF_CUSTOM:
			if (k->free != NULL)
				k->free(f);
			zero_field(k, f);
			break;
		case CONF_INCLUDE:
			if (depth < CONF_INCLUDE_DEPTH && k->sub != NULL)
				free_table(k->sub, f, depth + 1);
			break;
		default:
			zero_field(k, f);
			break;
		}
	}
}

void
conf_free(const struct conf_key *table, void *base)
{
	if (table == NULL || base == NULL)
		return;
	free_table(table, base, 0);
}

static bool
check_range(struct apply *a, const struct conf_key *k, const char *path,
            const struct conf_node *n, int64_t v)
{
	if ((k->min != 0 || k->max != 0) && (v < k->min || v > k->max)) {
		conf_error(a->errs, n,
		           "'%s': %.*s is out of range [%lld, %lld]%s", path,
		           CONF_SHOW_MAX, n->value, (long long)k->min,
		           (long long)k->max,
		           k->type == CONF_DURATION ? " ms"
		           : k->type == CONF_SIZE   ? " bytes"
		                                    : "");
		return false;
	}
	return true;
}

/* Parses one present (or defaulted) node n into field f. */
static bool
apply_node(struct apply *a, const struct conf_key *k, const char *path,
           const struct conf_node *n, char *f)
{
	int64_t v;
	int r;

	if (k->type == CONF_CUSTOM) {
		unsigned before = a->errs->count;
		if (k->parse == NULL) {
			conf_error(a->errs, n, "'%s': no parser", path);
			return false;
		}
		if (k->parse(n, f, a->errs) < 0) {
			if (a->errs->count == before)
				conf_error(a->errs, n, "invalid value for '%s'",
				           path);
			/* The callback may have stored part of it. */
			if (k->free != NULL)
				k->free(f);
			zero_field(k, f);
			return false;
		}
		return true;
	}
	if (n->kind != CONF_NODE_SCALAR) {
		conf_error(a->errs, n, "'%s' must be a single value, not a %s",
		           path, n->kind == CONF_NODE_MAP ? "mapping" : "list");
		return false;
	}
	if (n->value[0] == '\0') {
		conf_error(a->errs, n, "'%s' has no value", path);
		return false;
	}
	switch (k->type) {
	case CONF_STRING: {
		if (strlen(n->value) > CONF_STRING_MAX) {
			conf_error(a->errs, n, "'%s': value too long (max %d)",
			           path, CONF_STRING_MAX);
			return false;
		}
		char *s = strdup(n->value);
		if (s == NULL) {
			conf_error(a->errs, n, "out of memory");
			return false;
		}
		*(char **)(void *)f = s;
		return true;
	}
	case CONF_INT:
		if ((r = parse_int(n->value, &v)) < 0) {
			conf_error(a->errs, n, "'%s': %s: '%.*s'", path,
			           r == -ERANGE ? "integer overflow"
			                        : "not an integer",
			           CONF_SHOW_MAX, n->value);
			return false;
		}
		if (!check_range(a, k, path, n, v))
			return false;
		*(int64_t *)(void *)f = v;
		return true;
	case CONF_BOOL: {
		const char *s = n->value;
		bool b;
		if (strcasecmp(s, "true") == 0 || strcasecmp(s, "yes") == 0)
			b = true;
		else if (strcasecmp(s, "false") == 0 ||
		         strcasecmp(s, "no") == 0)
			b = false;
		else {
			conf_error(a->errs, n,
			           "'%s': expected true/false/yes/no, got "
			           "'%.*s'",
			           path, CONF_SHOW_MAX, s);
			return false;
		}
		*(bool *)(void *)f = b;
		return true;
	}
	case CONF_DURATION:
		if ((r = conf_parse_duration(n->value, &v)) < 0) {
			conf_error(a->errs, n,
			           r == -ERANGE
			               ? "'%s': duration overflow: '%.*s'"
			               : "'%s': bad duration '%.*s' (use "
			                 "500ms, 30s, 10m, 2h, 1d)",
			           path, CONF_SHOW_MAX, n->value);
			return false;
		}
		if (!check_range(a, k, path, n, v))
			return false;
		*(int64_t *)(void *)f = v;
		return true;
	case CONF_SIZE:
		if ((r = conf_parse_size(n->value, &v)) < 0) {
			conf_error(a->errs, n,
			           r == -ERANGE
			               ? "'%s': size overflow: '%.*s'"
			               : "'%s': bad size '%.*s' (use a "
			                 "number of bytes or 64KiB, 1MiB, "
			                 "1GiB)",
			           path, CONF_SHOW_MAX, n->value);
			return false;
		}
		if (!check_range(a, k, path, n, v))
			return false;
		*(int64_t *)(void *)f = v;
		return true;
	case CONF_SECRET: {
		char why[300];
		struct conf_secret s;
		if (conf_read_secret(n->value, &s, why, sizeof(why)) < 0) {
			conf_error(a->errs, n, "secret '%s': %s", path, why);
			return false;
		}
		*(struct conf_secret *)(void *)f = s;
		return true;
	}
	default:
		conf_error(a->errs, n, "'%s': bad table entry", path);
		return false;
	}
}

/* Applies every entry of table (recursing into includes). */
static void
apply_entries(struct apply *a, const struct conf_key *table, char *base,
              const char *prefix, int depth)
{
	char path[CONF_PATH_MAX];

	for (const struct conf_key *k = table; k->key != NULL; k++) {
		char *f = base + k->offset;
		const struct conf_node *n, *parent;
		bool blocked;

		if (!path_join(path, sizeof(path), prefix, k->key)) {
			conf_error(a->errs, NULL, "key path too long: '%s'",
			           k->key);
			continue;
		}
		if (k->type == CONF_INCLUDE) {
			if (depth >= CONF_INCLUDE_DEPTH || k->sub == NULL)
				conf_error(a->errs, NULL, "bad include at '%s'",
				           path);
			else
				apply_entries(a, k->sub, f, path, depth + 1);
			continue;
		}
		n = lookup(a->root, path, &parent, &blocked);
		if (n != NULL) {
			(void)apply_node(a, k, path, n, f);
		} else if (blocked) {
			/* reported by check_keys: "'x' must be a mapping" */
		} else if (k->defval != NULL && k->type != CONF_SECRET) {
			struct conf_node d = {
			    .kind = CONF_NODE_SCALAR,
			    .line = parent ? parent->line : a->root_line,
			    .value = k->defval,
			};
			(void)apply_node(a, k, path, &d, f);
		} else if (k->required) {
			struct conf_node at = {.line = parent ? parent->line
			                                      : a->root_line};
			conf_error(a->errs, &at, "missing required key '%s'",
			           path);
		}
	}
}

/* How path relates to table: 2 = a key, 1 = a proper prefix of keys,
 * 0 = unknown. */
static int
key_kind(const struct conf_key *table, const char *prefix, const char *path,
         int depth)
{
	char full[CONF_PATH_MAX];
	size_t plen = strlen(path);
	int best = 0;

	for (const struct conf_key *k = table; k->key != NULL; k++) {
		if (!path_join(full, sizeof(full), prefix, k->key))
			continue;
		if (k->type == CONF_INCLUDE) {
			if (depth < CONF_INCLUDE_DEPTH && k->sub != NULL) {
				int r = key_kind(k->sub, full, path, depth + 1);
				if (r > best)
					best = r;
				/* the include's own prefix is a mapping */
				if (full[0] != '\0' &&
				    strncmp(full, path, plen) == 0 &&
				    (full[plen] == '\0' || full[plen] == '.') &&
				    best < 1)
					best = 1;
			}
			continue;
		}
		if (strcmp(full, path) == 0)
			return 2;
		if (strncmp(full, path, plen) == 0 && full[plen] == '.')
			best = 1;
	}
	return best;
}

/* Reports every key of the tree that the table does not know. */
static void
check_keys(struct apply *a, const struct conf_key *table,
           const struct conf_node *map, const char *prefix)
{
	char path[CONF_PATH_MAX];

	for (const struct conf_node *c = map->child; c != NULL; c = c->next) {
		if (!path_join(path, sizeof(path), prefix, c->key) ||
		    strchr(c->key, '.') != NULL) {
			conf_error(a->errs, c, "unknown key '%.*s%s%.*s'",
			           CONF_SHOW_MAX, prefix, prefix[0] ? "." : "",
			           CONF_SHOW_MAX, c->key);
			continue;
		}
		switch (key_kind(table, "", path, 0)) {
		case 2:
			break;
		case 1:
			if (c->kind == CONF_NODE_MAP)
				check_keys(a, table, c, path);
			else
				conf_error(a->errs, c, "'%s' must be a mapping",
				           path);
			break;
		default:
			conf_error(a->errs, c, "unknown key '%s'", path);
			break;
		}
	}
}

/* Runs the finish hooks of table's includes (innermost first), then its
 * own (config.h: conf_finish_fn). */
static void
finish_entries(struct apply *a, const struct conf_key *table, char *base,
               const char *prefix, int depth)
{
	const struct conf_key *k;
	const struct conf_node *map = a->root, *parent;
	char path[CONF_PATH_MAX];
	unsigned before;
	bool blocked;

	for (k = table; k->key != NULL; k++)
		if (k->type == CONF_INCLUDE && depth < CONF_INCLUDE_DEPTH &&
		    k->sub != NULL &&
		    path_join(path, sizeof(path), prefix, k->key))
			finish_entries(a, k->sub, base + k->offset, path,
			               depth + 1);
	if (k->finish == NULL)
		return;
	if (prefix[0] != '\0')
		map = lookup(a->root, prefix, &parent, &blocked);
	before = a->errs->count;
	if (k->finish(base, map, a->errs) < 0 && a->errs->count == before)
		conf_error(a->errs, map, "rejected by its cross-field check");
}

/* Zeroes, applies, checks and finishes; on any error frees and zeroes
 * again. */
static int
apply_table(const struct conf_node *map, int root_line,
            const struct conf_key *table, void *base, struct conf_errors *errs)
{
	struct apply a = {.errs = errs, .root = map, .root_line = root_line};
	unsigned before = errs->count;

	zero_table(table, base, 0);
	if (map != NULL && map->kind != CONF_NODE_MAP) {
		conf_error(errs, map, "expected a mapping of keys, not a %s",
		           map->kind == CONF_NODE_SEQ ? "list" : "value");
		return KASIR_ECONFIG;
	}
	apply_entries(&a, table, base, "", 0);
	if (map != NULL)
		check_keys(&a, table, map, "");
	/* cross-field checks see only a struct every key of which parsed */
	if (errs->count == before && !errs->oom)
		finish_entries(&a, table, base, "", 0);
	if (errs->count != before || errs->oom) {
		free_table(table, base, 0);
		zero_table(table, base, 0);
		return KASIR_ECONFIG;
	}
	return 0;
}

int
conf_apply_table(const struct conf_node *map, const struct conf_key *table,
                 void *base, struct conf_errors *errs)
{
	if (map == NULL) {
		zero_table(table, base, 0);
		conf_error(errs, NULL, "expected a mapping");
		return KASIR_ECONFIG;
	}
	return apply_table(map, map->line, table, base, errs);
}

int
conf_parse_list(const struct conf_node *seq, const struct conf_key *table,
                size_t elem_size, size_t max_items, struct conf_list *list,
                struct conf_errors *errs)
{
	const struct conf_node *c;
	size_t count = 0, i = 0;
	char *items;
	bool bad = false;

	memset(list, 0, sizeof(*list));
	if (seq == NULL || seq->kind != CONF_NODE_SEQ) {
		if (seq != NULL && seq->kind == CONF_NODE_SCALAR &&
		    seq->value[0] == '\0')
			return 0; /* "key:" with no value: an empty list */
		conf_error(errs, seq, "'%s' must be a list",
		           seq && seq->key ? seq->key : "value");
		return KASIR_ECONFIG;
	}
	for (c = seq->child; c != NULL; c = c->next)
		count++;
	if (count > max_items) {
		conf_error(errs, seq, "'%s': too many items (%zu, max %zu)",
		           seq->key ? seq->key : "list", count, max_items);
		return KASIR_ECONFIG;
	}
	if (count == 0)
		return 0;
	if ((items = calloc(count, elem_size)) == NULL) {
		conf_error(errs, seq, "out of memory");
		return KASIR_ECONFIG;
	}
	for (c = seq->child; c != NULL; c = c->next, i++)
		if (apply_table(c, c->line, table, items + i * elem_size,
		                errs) < 0)
			bad = true; /* item i already freed and zeroed */
	if (bad) {
		for (i = 0; i < count; i++)
			free_table(table, items + i * elem_size, 0);
		free(items);
		return KASIR_ECONFIG;
	}
	list->items = items;
	list->count = count;
	return 0;
}

void
conf_list_free(const struct conf_key *table, size_t elem_size,
               struct conf_list *list)
{
	if (list == NULL)
		return;
	for (size_t i = 0; list->items != NULL && i < list->count; i++)
		free_table(table, (char *)list->items + i * elem_size, 0);
	free(list->items);
	list->items = NULL;
	list->count = 0;
}

void
conf_table_zero(const struct conf_key *table, void *base)
{
	zero_table(table, base, 0);
}

int
conf_apply_root(const struct conf_node *root, const struct conf_key *table,
                void *base, struct conf_errors *errs)
{
	return apply_table(root, root ? root->line : 1, table, base, errs);
}
