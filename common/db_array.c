/*
 * db_array.c - PostgreSQL array literals built element by element
 * (struct db_array, db.h), to pass many values as one parameter.
 */
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

	array_put(a, a->n == 0 ? "{" : ",", 1);
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
	if (a->n == 0 && a->len == 0)
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

/* The failpoint name of a fixed SQL string: its verb ("BEGIN",
 * "SAVEPOINT", "ROLLBACK_TO", "RELEASE", "SELECT"...). */
