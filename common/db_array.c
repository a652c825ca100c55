/*
 * db_array.c - PostgreSQL array literals built element by element
 * (struct db_array, db.h), to pass many values as one parameter.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"

/* Makes room for `more` bytes after len, and for what db_array_text()
 * adds (the closing brace and the NUL); false when out of memory. */
static bool
array_reserve(struct db_array *a, size_t more)
{
	size_t cap;
	char *p;

	if (a->oom)
		return false;
	if (a->len > SIZE_MAX / 4 || more > SIZE_MAX / 4 - a->len) {
		a->oom = true;
		return false;
	}
	if (a->len + more + 2 <= a->cap)
		return true;
	cap = a->cap ? a->cap : 1024;
	while (a->len + more + 2 > cap)
		cap *= 2;
	p = realloc(a->text, cap);
	if (p == NULL) {
		a->oom = true;
		return false;
	}
	a->text = p;
	a->cap = cap;
	return true;
}

static void
array_put(struct db_array *a, const char *s, size_t len)
{
	if (!array_reserve(a, len))
		return;
	memcpy(a->text + a->len, s, len);
	a->len += len;
	a->text[a->len] = 0;
}

/*
 * One element: NULL, or the value in double quotes with every '"' and
 * '\\' escaped by a backslash.  Room for the worst case (every byte
 * escaped) is made once; the runs between escapes are copied whole.
 */
void
db_array_add(struct db_array *a, const char *value)
{
	size_t vlen;
	char *w;

	if (value == NULL) {
		/* the opening brace may be there already: text() of an
		 * empty array leaves it */
		if (a->len == 0)
			array_put(a, "{", 1);
		if (a->n > 0)
			array_put(a, ",", 1);
		array_put(a, "NULL", 4);
		a->n++;
		return;
	}
	vlen = strlen(value);
	if (vlen > SIZE_MAX / 4 || !array_reserve(a, 2 * vlen + 4)) {
		a->oom = true;
		return;
	}
	w = a->text + a->len;
	if (a->len == 0)
		*w++ = '{';
	if (a->n > 0)
		*w++ = ',';
	*w++ = '"';
	for (const char *v = value;;) {
		size_t run = strcspn(v, "\"\\");

		memcpy(w, v, run);
		w += run;
		v += run;
		if (*v == 0)
			break;
		*w++ = '\\';
		*w++ = *v++;
	}
	*w++ = '"';
	*w = 0;
	a->len = (size_t)(w - a->text);
	a->n++;
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
