/*
 * config_impl.h - what the files of the config loader share (config.h is
 * the interface).  One job per file:
 *   config.c         the error sink and conf_load(): file -> tree -> struct
 *   config_tree.c    the file read (bounded) into a tree of conf_node
 *   config_apply.c   a key table applied to a tree: values, defaults,
 *                    unknown and missing keys, finish hooks
 *   config_secret.c  secrets read from files or credentials
 *   config_cli.c     the command line every daemon shares
 */
#ifndef KASIR_CONFIG_IMPL_H
#define KASIR_CONFIG_IMPL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"

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

/* conf_error() with a va_list (config.c). */
void conf_verror(struct conf_errors *errs, const struct conf_node *at,
                 const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* config_tree.c: reads file (bounded) and parses it into *ret_root (NULL
 * for an empty file).  0, or KASIR_ECONFIG with the errors recorded. */
int conf_tree_read(struct conf_errors *errs, const char *file,
                   struct conf_node **ret_root);
void conf_tree_free(struct conf_node *root);

/* config_apply.c: zeroes every field of table in base. */
void conf_table_zero(const struct conf_key *table, void *base);
/* Zeroes, applies table to root (a MAP, or NULL: empty file), checks for
 * unknown keys and runs the finish hooks; on any error frees and zeroes
 * again.  0 or KASIR_ECONFIG. */
int conf_apply_root(const struct conf_node *root, const struct conf_key *table,
                    void *base, struct conf_errors *errs);

#endif
