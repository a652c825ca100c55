/*
 * config.c - one YAML file parsed whole into one struct (config.h): the
 * error sink every step writes to, and conf_load() that runs the steps.
 *
 * Two steps.  config_tree.c reads the file (bounded) and builds a tree of
 * struct conf_node, refusing what the tables cannot mean; config_apply.c
 * applies the key table to it (values, defaults, unknown and missing keys)
 * and then, when that went without an error, the tables' finish hooks
 * (the checks between keys).  Every problem is collected as
 * "FILE:LINE: message" and any one of them rejects the whole file: what
 * was stored is freed and the fields are zeroed again.  Secrets:
 * config_secret.c; the daemons' command line: config_cli.c.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_impl.h"
#include "err.h"

void
conf_error(struct conf_errors *errs, const struct conf_node *at,
           const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	conf_verror(errs, at, fmt, ap);
	va_end(ap);
}

void
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

int
conf_load(const char *file, const struct conf_key *table, void *base,
          char **ret_errors)
{
	struct conf_errors errs = {.file = file ? file : "(null)"};
	struct conf_node *root = NULL;
	int r = KASIR_ECONFIG;

	conf_table_zero(table, base);
	if (file != NULL && conf_tree_read(&errs, file, &root) == 0)
		r = conf_apply_root(root, table, base, &errs);
	conf_tree_free(root);
	if (r == 0 && errs.count == 0 && !errs.oom) {
		free(errs.buf);
		return 0;
	}
	/* conf_apply_root already freed whatever it had stored. */
	conf_table_zero(table, base);
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
