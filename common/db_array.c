/*
 * db_array.c - array parameters built element by element (struct
 * db_array, db.h) in PostgreSQL's binary array format, and the columns of
 * an array statement (struct db_cols).
 *
 * The binary text[] a statement receives (array_recv() in PostgreSQL's
 * arrayfuncs.c), every integer 32-bit big-endian:
 *   ndim (1; 0 for an empty array, which then ends after elemtype),
 *   flags (1 when an element is NULL), elemtype (25, text),
 *   the dimension's length (n) and lower bound (1),
 *   then each element: its length in bytes (-1 for NULL) and its bytes.
 * The elements are written as they are added, after room for the header;
 * db_array_param() writes the header for the elements so far.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "db_impl.h"

#define ARRAY_HEADER 20 /* ndim, flags, elemtype, length, lower bound */
#define ARRAY_EMPTY  12 /* ndim 0: no dimension */
#define TEXT_OID     25

static void
put_u32(char *p, uint32_t v)
{
	p[0] = (char)(v >> 24);
	p[1] = (char)(v >> 16);
	p[2] = (char)(v >> 8);
	p[3] = (char)v;
}

/* Makes room for len more bytes; false (and oom) when it cannot. */
static bool
array_room(struct db_array *a, size_t len)
{
	size_t cap;
	char *p;

	if (a->oom)
		return false;
	if (a->len + len <= a->cap)
		return true;
	cap = a->cap ? a->cap : 1024;
	while (a->len + len > cap) {
		if (cap > SIZE_MAX / 2) {
			a->oom = true;
			return false;
		}
		cap *= 2;
	}
	if ((p = realloc(a->buf, cap)) == NULL) {
		a->oom = true;
		return false;
	}
	a->buf = p;
	a->cap = cap;
	return true;
}

static void
array_start(struct db_array *a)
{
	a->magic = DB_ARRAY_MAGIC;
	if (a->len == 0 && array_room(a, ARRAY_HEADER))
		a->len = ARRAY_HEADER;
}

void
db_array_add(struct db_array *a, const char *value)
{
	size_t vlen = value != NULL ? strlen(value) : 0;

	array_start(a);
	if (vlen > INT32_MAX) {
		a->oom = true; /* no element is that long: refuse the array */
		return;
	}
	if (!array_room(a, 4 + vlen))
		return;
	if (value == NULL) {
		put_u32(a->buf + a->len, UINT32_MAX); /* -1: NULL */
		a->has_null = true;
	} else {
		put_u32(a->buf + a->len, (uint32_t)vlen);
		memcpy(a->buf + a->len + 4, value, vlen);
	}
	a->len += 4 + vlen;
	a->n++;
}

const char *
db_array_param(struct db_array *a)
{
	array_start(a);
	if (a->oom || a->n > INT32_MAX)
		return NULL;
	put_u32(a->buf, a->n > 0 ? 1 : 0);
	put_u32(a->buf + 4, a->has_null ? 1 : 0);
	put_u32(a->buf + 8, TEXT_OID);
	put_u32(a->buf + 12, (uint32_t)a->n);
	put_u32(a->buf + 16, 1);
	a->wire_len = a->n > 0 ? a->len : ARRAY_EMPTY;
	return (const char *)a;
}

void
db_array_free(struct db_array *a)
{
	free(a->buf);
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
	int n = c->stmt->nparams;

	if (n > DB_COLS_MAX || n < 1 ||
	    c->stmt->arrays != DB_ARRAY_PARAMS(1, n))
		return -EINVAL;
	for (int k = 0; k < n; k++)
		if ((params[k] = db_array_param(&c->a[k])) == NULL)
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
