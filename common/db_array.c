/*
 * db_array.c - PostgreSQL array literals built element by element
 * (struct db_array, db.h), to pass many values as one parameter.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"

static void
array_put(struct db_array *a, const char *s, size_t len)
{
	if (a->oom)
		return;
	if (a->len + len + 2 > a->cap) {
		size_t cap = a->cap ? a->cap : 1024;
		char *p;
		while (a->len + len + 2 > cap)
			cap *= 2;
		p = realloc(a->text, cap);
		if (p == NULL) {
			a->oom = true;
			return;
		}
		a->text = p;
		a->cap = cap;
	}
	memcpy(a->text + a->len, s, len);
	a->len += len;
	a->text[a->len] = 0;
}

void
db_array_add(struct db_array *a, const char *value)
{
	const char *run, *v;

	/* the opening brace may be there already: text() of an empty
	 * array leaves it */
	if (a->len == 0)
		array_put(a, "{", 1);
	if (a->n > 0)
		array_put(a, ",", 1);
	a->n++;
	if (value == NULL) {
		array_put(a, "NULL", 4);
		return;
	}
	array_put(a, "\"", 1);
	for (run = v = value; *v != 0; v++) {
		if (*v == '"' || *v == '\\') {
			array_put(a, run, (size_t)(v - run));
			array_put(a, "\\", 1);
			run = v; /* the character itself starts the next run */
		}
	}
	array_put(a, run, (size_t)(v - run));
	array_put(a, "\"", 1);
}

const char *
db_array_text(struct db_array *a)
{
	if (a->len == 0)
		array_put(a, "{", 1);
	array_put(a, "}", 1);
	a->len--; /* the closing brace is not part of what add() extends */
	return a->oom ? NULL : a->text;
}

void
db_array_free(struct db_array *a)
{
	free(a->text);
	memset(a, 0, sizeof(*a));
}

void
db_cols_add(struct db_cols *c, int first, const char *const *v, int n)
{
	for (int k = 0; k < n && first + k < DB_COLS_MAX; k++)
		db_array_add(&c->a[first + k], v[k]);
}

void
db_cols_row(struct db_cols *c, const char *const *v)
{
	db_cols_add(c, 0, v, c->ncols > 0 ? c->ncols : c->stmt->nparams);
	c->rows++;
}

int
db_cols_params(struct db_cols *c, const char *params[DB_COLS_MAX])
{
	if (c->stmt->nparams > DB_COLS_MAX)
		return -EINVAL;
	for (int k = 0; k < c->stmt->nparams; k++)
		if ((params[k] = db_array_text(&c->a[k])) == NULL)
			return -ENOMEM;
	return 0;
}

int
db_cols_exec(struct kasir_db *db, struct db_cols *c, PGresult **ret_res)
{
	const char *params[DB_COLS_MAX];
	int rc = db_cols_params(c, params);

	return rc < 0 ? rc : db_exec(db, c->stmt, params, ret_res);
}

int
db_cols_send(struct kasir_db *db, struct db_cols *c)
{
	const char *params[DB_COLS_MAX];
	int rc = db_cols_params(c, params);

	return rc < 0 ? rc : db_pipe_send(db, c->stmt, params);
}

void
db_cols_free(struct db_cols *c)
{
	for (int k = 0; k < DB_COLS_MAX; k++)
		db_array_free(&c->a[k]);
	c->rows = 0;
}

/* The failpoint name of a fixed SQL string: its verb ("BEGIN",
 * "SAVEPOINT", "ROLLBACK_TO", "RELEASE", "SELECT"...). */
