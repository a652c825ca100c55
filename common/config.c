/*
 * config.c - one YAML file parsed whole into one struct (config.h).
 *
 * Three steps.  First libyaml's event parser builds a small tree of
 * struct conf_node, refusing anything the tables cannot mean: anchors and
 * aliases, tags, several documents, duplicate keys, non-scalar keys, and
 * anything beyond the bounds (file size, depth, node count).  Then the
 * table is applied: every table key is looked up by its dotted path, parsed
 * by its type into base+offset, defaults are applied to absent keys and
 * missing required keys reported; a walk over the tree reports every key
 * no table entry knows.  When all that went without an error, the tables'
 * finish hooks run the checks between keys (conf_finish_fn), while the
 * tree still gives their lines.  Every problem is collected as
 * "FILE:LINE: message" and any one of them rejects the whole file: what
 * was stored is freed and the fields are zeroed again.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "config.h"
#include "err.h"
#include "util.h"

#define CONF_FILE_MAX      (1024 * 1024) /* bytes of YAML */
#define CONF_DEPTH_MAX     16            /* nested mappings/sequences */
#define CONF_NODES_MAX     10000         /* nodes in the tree */
#define CONF_ERRORS_MAX    50            /* messages kept; then "too many" */
#define CONF_STRING_MAX    4096          /* bytes of a CONF_STRING value */
#define CONF_PATH_MAX      256           /* bytes of a dotted key path */
#define CONF_INCLUDE_DEPTH 4             /* nested CONF_INCLUDE */
#define CONF_SECRET_MAX    4096          /* bytes of a secret file */
#define CONF_SHOW_MAX      64            /* bytes of a bad value echoed back */

struct conf_errors {
	const char *file;
	char *buf; /* "FILE:LINE: msg\n"...; NULL until the first error */
	size_t len, cap;
	unsigned count;
	bool oom;
};

static void conf_verror(struct conf_errors *errs, const struct conf_node *at,
                        const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

void
conf_error(struct conf_errors *errs, const struct conf_node *at,
           const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	conf_verror(errs, at, fmt, ap);
	va_end(ap);
}

static void
conf_verror(struct conf_errors *errs, const struct conf_node *at,
            const char *fmt, va_list ap)
{
	char msg[512], line[700];
	int n;

	errs->count++;
	if (errs->count > CONF_ERRORS_MAX + 1)
		return;
	if (errs->count == CONF_ERRORS_MAX + 1) {
		snprintf(line, sizeof(line), "%s: too many errors, giving up\n",
		         errs->file);
	} else {
		vsnprintf(msg, sizeof(msg), fmt, ap);
		if (at != NULL && at->line > 0)
			snprintf(line, sizeof(line), "%s:%d: %s\n", errs->file,
			         at->line, msg);
		else
			snprintf(line, sizeof(line), "%s: %s\n", errs->file,
			         msg);
	}
	n = (int)strlen(line);
	if (errs->len + (size_t)n + 1 > errs->cap) {
		size_t cap = errs->cap ? errs->cap * 2 : 1024;
		while (cap < errs->len + (size_t)n + 1)
			cap *= 2;
		char *b = realloc(errs->buf, cap);
		if (b == NULL) {
			errs->oom = true;
			return;
		}
		errs->buf = b;
		errs->cap = cap;
	}
	memcpy(errs->buf + errs->len, line, (size_t)n + 1);
	errs->len += (size_t)n;
}

/* ---- the YAML tree ---------------------------------------------------- */

static void
node_free(struct conf_node *n)
{
	while (n != NULL) {
		struct conf_node *next = n->next;
		node_free(n->child);
		/* const for the callbacks' sake; the tree owns them */
		free((void *)(uintptr_t)n->value);
		free((void *)(uintptr_t)n->key);
		free(n);
		n = next;
	}
}

struct frame {
	struct conf_node *node; /* MAP or SEQ being filled */
	struct conf_node *last; /* its last child */
	char *pending_key;      /* MAP: key read, value not yet */
	int key_line;
};

struct builder {
	struct conf_errors *errs;
	struct conf_node *root;
	struct frame stack[CONF_DEPTH_MAX + 1];
	int depth; /* frames in use */
	size_t nodes;
	int documents;
	bool failed;
};

static void build_fail(struct builder *b, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
build_fail(struct builder *b, int line, const char *fmt, ...)
{
	struct conf_node at = {.line = line};
	char msg[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	conf_error(b->errs, &at, "%s", msg);
	b->failed = true;
}

/* Plain ~, null and empty mean "no value"; they become "". */
static bool
is_null_scalar(const yaml_event_t *ev)
{
	const char *v = (const char *)ev->data.scalar.value;

	if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
	       strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

/* Attaches a new node (scalar value, or NULL for MAP/SEQ) where the parser
 * is, or records a pending key.  Returns the node, or NULL when the event
 * was a key or an error was recorded. */
static struct conf_node *
build_add(struct builder *b, enum conf_node_kind kind, const yaml_event_t *ev)
{
	int line = (int)ev->start_mark.line + 1;
	struct frame *f = b->depth > 0 ? &b->stack[b->depth - 1] : NULL;
	struct conf_node *n;

	if (f != NULL && f->node->kind == CONF_NODE_MAP &&
	    f->pending_key == NULL) {
		/* This event is a key. */
		if (kind != CONF_NODE_SCALAR) {
			build_fail(b, line, "mapping keys must be plain text");
			return NULL;
		}
		const char *k = (const char *)ev->data.scalar.value;
		if (ev->data.scalar.length != strlen(k) || k[0] == '\0') {
			build_fail(b, line, "invalid mapping key");
			return NULL;
		}
		for (n = f->node->child; n != NULL; n = n->next)
			if (strcmp(n->key, k) == 0) {
				build_fail(b, line,
				           "duplicate key '%.*s' (first on "
				           "line %d)",
				           CONF_SHOW_MAX, k, n->line);
				return NULL;
			}
		if ((f->pending_key = strdup(k)) == NULL) {
			build_fail(b, line, "out of memory");
			return NULL;
		}
		f->key_line = line;
		return NULL;
	}
	if (++b->nodes > CONF_NODES_MAX) {
		build_fail(b, line, "too many nodes (max %d)", CONF_NODES_MAX);
		return NULL;
	}
	if ((n = calloc(1, sizeof(*n))) == NULL) {
		build_fail(b, line, "out of memory");
		return NULL;
	}
	n->kind = kind;
	n->line = line;
	if (kind == CONF_NODE_SCALAR) {
		const char *v = (const char *)ev->data.scalar.value;
		if (ev->data.scalar.length != strlen(v)) {
			free(n);
			build_fail(b, line, "NUL byte in value");
			return NULL;
		}
		n->value = strdup(is_null_scalar(ev) ? "" : v);
		if (n->value == NULL) {
			free(n);
			build_fail(b, line, "out of memory");
			return NULL;
		}
	}
	if (f == NULL) {
		b->root = n;
		return n;
	}
	if (f->node->kind == CONF_NODE_MAP) {
		n->key = f->pending_key;
		n->line = f->key_line; /* "database:" rather than its body */
		f->pending_key = NULL;
	}
	if (f->last != NULL)
		f->last->next = n;
	else
		f->node->child = n;
	f->last = n;
	return n;
}

static void
build_push(struct builder *b, enum conf_node_kind kind, const yaml_event_t *ev)
{
	struct conf_node *n;

	if (b->depth >= CONF_DEPTH_MAX) {
		build_fail(b, (int)ev->start_mark.line + 1,
		           "nesting too deep (max %d)", CONF_DEPTH_MAX);
		return;
	}
	if ((n = build_add(b, kind, ev)) == NULL)
		return;
	b->stack[b->depth++] = (struct frame){.node = n};
}

/* Parses buf into b->root; false with errors recorded otherwise. */
static bool
build_tree(struct builder *b, const char *buf, size_t len)
{
	yaml_parser_t p;
	yaml_event_t ev;
	bool done = false;

	if (!yaml_parser_initialize(&p)) {
		build_fail(b, 0, "out of memory");
		return false;
	}
	yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
	while (!done && !b->failed) {
		if (!yaml_parser_parse(&p, &ev)) {
			build_fail(b, (int)p.problem_mark.line + 1,
			           "syntax error: %s%s%s",
			           p.problem ? p.problem : "malformed YAML",
			           p.context ? " " : "",
			           p.context ? p.context : "");
			break;
		}
		int line = (int)ev.start_mark.line + 1;
		const yaml_char_t *anchor = NULL, *tag = NULL;
		switch (ev.type) {
		case YAML_SCALAR_EVENT:
			anchor = ev.data.scalar.anchor;
			tag = ev.data.scalar.tag;
			break;
		case YAML_MAPPING_START_EVENT:
			anchor = ev.data.mapping_start.anchor;
			tag = ev.data.mapping_start.tag;
			break;
		case YAML_SEQUENCE_START_EVENT:
			anchor = ev.data.sequence_start.anchor;
			tag = ev.data.sequence_start.tag;
			break;
		default:
			break;
		}
		if (anchor != NULL || ev.type == YAML_ALIAS_EVENT) {
			build_fail(b, line,
			           "anchors and aliases are not allowed");
		} else if (tag != NULL) {
			build_fail(b, line, "tags are not allowed");
		} else {
			switch (ev.type) {
			case YAML_STREAM_END_EVENT:
				done = true;
				break;
			case YAML_DOCUMENT_START_EVENT:
				if (++b->documents > 1)
					build_fail(b, line,
					           "only one YAML document "
					           "allowed");
				break;
			case YAML_SCALAR_EVENT:
				(void)build_add(b, CONF_NODE_SCALAR, &ev);
				break;
			case YAML_MAPPING_START_EVENT:
				build_push(b, CONF_NODE_MAP, &ev);
				break;
			case YAML_SEQUENCE_START_EVENT:
				build_push(b, CONF_NODE_SEQ, &ev);
				break;
			case YAML_MAPPING_END_EVENT:
			case YAML_SEQUENCE_END_EVENT:
				if (b->depth > 0)
					b->depth--;
				break;
			default:
				break;
			}
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&p);
	for (int i = 0; i < CONF_DEPTH_MAX; i++) {
		free(b->stack[i].pending_key);
		b->stack[i].pending_key = NULL;
	}
	return !b->failed;
}

/* ---- applying a table ------------------------------------------------- */

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

/* ---- secrets ---------------------------------------------------------- */

void
conf_secret_wipe(struct conf_secret *s)
{
	if (s == NULL)
		return;
	if (s->value != NULL) {
		explicit_bzero(s->value, s->len);
		free(s->value);
	}
	free(s->origin);
	memset(s, 0, sizeof(*s));
}

/* A credential name: one path component, no dot-dot tricks. */
static bool
credential_name_valid(const char *s)
{
	if (s[0] == '\0' || s[0] == '.' || strlen(s) > NAME_MAX)
		return false;
	for (; *s != '\0'; s++)
		if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' ||
		      *s == '-' || *s == '@' || *s == ':'))
			return false;
	return true;
}

int
conf_read_secret(const char *name, struct conf_secret *ret, char *why,
                 size_t why_len)
{
	char path[PATH_MAX], buf[CONF_SECRET_MAX + 1];
	struct stat st;
	size_t len = 0;
	int fd, r;

	if (name == NULL || name[0] == '\0') {
		snprintf(why, why_len, "no file or credential name given");
		return -EINVAL;
	}
	if (name[0] == '/') {
		if (strlen(name) >= sizeof(path)) {
			snprintf(why, why_len, "path too long");
			return -ENAMETOOLONG;
		}
		kasir_strlcpy(path, name, sizeof(path));
	} else if (strchr(name, '/') != NULL) {
		snprintf(why, why_len,
		         "'%.*s' must be an absolute path or a credential name",
		         CONF_SHOW_MAX, name);
		return -EINVAL;
	} else {
		const char *dir = getenv("CREDENTIALS_DIRECTORY");
		if (!credential_name_valid(name)) {
			snprintf(why, why_len, "invalid credential name '%.*s'",
			         CONF_SHOW_MAX, name);
			return -EINVAL;
		}
		if (dir == NULL || dir[0] != '/') {
			snprintf(why, why_len,
			         "credential '%s' named but "
			         "$CREDENTIALS_DIRECTORY is not set (use "
			         "LoadCredential= or an absolute path)",
			         name);
			return -ENOENT;
		}
		r = snprintf(path, sizeof(path), "%s/%s", dir, name);
		if (r < 0 || (size_t)r >= sizeof(path)) {
			snprintf(why, why_len, "path too long");
			return -ENAMETOOLONG;
		}
	}

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		r = -errno;
		snprintf(why, why_len, "cannot open %s: %s", path,
		         strerror(-r));
		return r;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		snprintf(why, why_len, "cannot stat %s: %s", path,
		         strerror(-r));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		snprintf(why, why_len, "%s is not a regular file", path);
		goto out_close;
	}
	if ((st.st_mode & 007) != 0) {
		r = -EPERM;
		snprintf(why, why_len,
		         "%s is accessible by others (mode %04o); "
		         "run chmod o-rwx on it",
		         path, (unsigned)(st.st_mode & 07777));
		goto out_close;
	}
	if (st.st_size > CONF_SECRET_MAX) {
		r = -EFBIG;
		snprintf(why, why_len, "%s is larger than %d bytes", path,
		         CONF_SECRET_MAX);
		goto out_close;
	}
	/* Read to EOF (the size may change under us), bounded by buf. */
	while (len < sizeof(buf)) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			snprintf(why, why_len, "cannot read %s: %s", path,
			         strerror(-r));
			goto out_wipe;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > CONF_SECRET_MAX) {
		r = -EFBIG;
		snprintf(why, why_len, "%s is larger than %d bytes", path,
		         CONF_SECRET_MAX);
		goto out_wipe;
	}
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	if (len == 0) {
		r = -EINVAL;
		snprintf(why, why_len, "%s is empty", path);
		goto out_wipe;
	}
	struct conf_secret s = {.len = len};
	if ((s.value = malloc(len + 1)) == NULL ||
	    (s.origin = strdup(path)) == NULL) {
		free(s.value);
		r = -ENOMEM;
		snprintf(why, why_len, "out of memory");
		goto out_wipe;
	}
	memcpy(s.value, buf, len);
	s.value[len] = '\0';
	*ret = s;
	r = 0;
out_wipe:
	explicit_bzero(buf, sizeof(buf));
out_close:
	close(fd);
	return r;
}

/* ---- loading a file ---------------------------------------------------- */

/* Reads the whole file (bounded); errors go to errs. */
static char *
read_file(struct conf_errors *errs, const char *file, size_t *ret_len)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	int fd;

	if ((fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) <
	    0) {
		conf_error(errs, NULL, "cannot open: %s", strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		conf_error(errs, NULL, "not a regular file");
		goto fail;
	}
	if (st.st_size > CONF_FILE_MAX) {
		conf_error(errs, NULL, "file too large (max %d bytes)",
		           CONF_FILE_MAX);
		goto fail;
	}
	if ((buf = malloc(CONF_FILE_MAX + 1)) == NULL) {
		conf_error(errs, NULL, "out of memory");
		goto fail;
	}
	while (len <= CONF_FILE_MAX) {
		ssize_t n = read(fd, buf + len, CONF_FILE_MAX + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			conf_error(errs, NULL, "cannot read: %s",
			           strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > CONF_FILE_MAX) {
		conf_error(errs, NULL, "file too large (max %d bytes)",
		           CONF_FILE_MAX);
		goto fail;
	}
	close(fd);
	*ret_len = len;
	return buf;
fail:
	free(buf);
	close(fd);
	return NULL;
}

int
conf_load(const char *file, const struct conf_key *table, void *base,
          char **ret_errors)
{
	struct conf_errors errs = {.file = file ? file : "(null)"};
	struct builder b = {.errs = &errs};
	char *buf = NULL;
	size_t len = 0;
	int r = KASIR_ECONFIG;

	zero_table(table, base, 0);
	if (file != NULL && (buf = read_file(&errs, file, &len)) != NULL &&
	    build_tree(&b, buf, len))
		r = apply_table(b.root, b.root ? b.root->line : 1, table, base,
		                &errs);
	free(buf);
	node_free(b.root);
	if (r == 0 && errs.count == 0 && !errs.oom) {
		free(errs.buf);
		return 0;
	}
	/* apply_table already freed whatever it had stored. */
	zero_table(table, base, 0);
	if (ret_errors != NULL) {
		if (errs.buf == NULL)
			errs.buf =
			    strdup(errs.oom ? "out of memory\n"
			                    : "configuration rejected\n");
		*ret_errors = errs.buf;
	} else {
		free(errs.buf);
	}
	return KASIR_ECONFIG;
}

/* ---- command line ------------------------------------------------------ */

static void
usage(FILE *out, const char *progname)
{
	fprintf(out,
	        "usage: %s --config FILE\n"
	        "       %s --check-config FILE\n"
	        "       %s --version\n"
	        "       %s --help\n",
	        progname, progname, progname, progname);
}

bool
conf_cli(int argc, char **argv, const char *progname,
         const struct conf_key *table, void *base, int *ret_exit)
{
	const char *file = NULL;
	bool check = false;
	char *errors = NULL;

	zero_table(table, base, 0);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		bool is_config = false, is_check = false;

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout, progname);
			*ret_exit = 0;
			return false;
		}
		if (strcmp(a, "--version") == 0) {
			printf("%s %s\n", progname, KASIR_VERSION);
			*ret_exit = 0;
			return false;
		}
		if (strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0)
			is_config = true;
		else if (strcmp(a, "--check-config") == 0)
			is_check = true;
		else if (strncmp(a, "--config=", 9) == 0)
			is_config = true, v = a + 9;
		else if (strncmp(a, "--check-config=", 15) == 0)
			is_check = true, v = a + 15;
		if (!is_config && !is_check) {
			fprintf(stderr, "%s: unknown argument '%s'\n", progname,
			        a);
			usage(stderr, progname);
			*ret_exit = 2;
			return false;
		}
		if (v == NULL) {
			if (i + 1 >= argc) {
				fprintf(stderr, "%s: %s needs a FILE\n",
				        progname, a);
				usage(stderr, progname);
				*ret_exit = 2;
				return false;
			}
			v = argv[++i];
		}
		if (file != NULL) {
			fprintf(stderr, "%s: only one configuration file\n",
			        progname);
			*ret_exit = 2;
			return false;
		}
		file = v;
		check = is_check;
	}
	if (file == NULL) {
		usage(stderr, progname);
		*ret_exit = 2;
		return false;
	}
	if (conf_load(file, table, base, &errors) < 0) {
		fputs(errors ? errors : "configuration rejected\n", stderr);
		free(errors);
		*ret_exit = 1;
		return false;
	}
	if (check) {
		conf_free(table, base);
		printf("configuration OK\n");
		fflush(stdout);
		*ret_exit = 0;
		return false;
	}
	return true;
}
