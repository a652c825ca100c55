/*
 * json.c - checks on parsed JSON that cJSON does not make.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "err.h"
#include "json.h"

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int
json_check_unique_keys(const cJSON *node, const char **ret_dup)
{
	const cJSON *c;
	const char **keys;
	size_t n = 0, i;
	int r;

	if (!cJSON_IsObject(node) && !cJSON_IsArray(node))
		return 0;
	for (c = node->child; c != NULL; c = c->next) {
		n++;
		if ((r = json_check_unique_keys(c, ret_dup)) < 0)
			return r;
	}
	if (!cJSON_IsObject(node) || n < 2)
		return 0;
	keys = calloc(n, sizeof(*keys));
	if (keys == NULL)
		return -ENOMEM;
	for (i = 0, c = node->child; c != NULL; c = c->next)
		keys[i++] = c->string != NULL ? c->string : "";
	qsort(keys, n, sizeof(*keys), cmp_str);
	r = 0;
	for (i = 1; i < n; i++) {
		if (strcmp(keys[i - 1], keys[i]) == 0) {
			if (ret_dup != NULL)
				*ret_dup = keys[i];
			r = KASIR_EREJECT;
			break;
		}
	}
	free(keys);
	return r;
}
