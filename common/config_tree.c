/*
 * config_tree.c - a YAML file read (bounded) into a tree of conf_node.
 *
 * libyaml's event parser builds a small tree, refusing anything the tables
 * cannot mean: anchors and aliases, tags, several documents, duplicate
 * keys, non-scalar keys, and anything beyond the bounds (file size, depth,
 * node count).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "config_impl.h"
#include "err.h"

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
conf_tree_read(struct conf_errors *errs, const char *file,
               struct conf_node **ret_root)
{
	struct builder b = {.errs = errs};
	char *buf;
	size_t len = 0;
	bool ok;

	*ret_root = NULL;
	if ((buf = read_file(errs, file, &len)) == NULL)
		return KASIR_ECONFIG;
	ok = build_tree(&b, buf, len);
	free(buf);
	if (!ok) {
		node_free(b.root);
		return KASIR_ECONFIG;
	}
	*ret_root = b.root;
	return 0;
}

void
conf_tree_free(struct conf_node *root)
{
	node_free(root);
}
