/*
 * json.h - checks on parsed JSON that cJSON does not make.
 */
#ifndef KASIR_JSON_H
#define KASIR_JSON_H

struct cJSON;

/*
 * Every object in the tree under node, at every depth, must have unique
 * keys (cJSON keeps duplicates and readers see the first one, while a proxy
 * or another parser may see the last: ambiguous input is refused).
 * Returns 0 when unique; KASIR_EREJECT when not, *ret_dup (may be NULL)
 * then points at the duplicated key inside the tree; -ENOMEM.
 * O(n log n) per object; recursion depth is the tree's (cJSON bounds it).
 */
int json_check_unique_keys(const struct cJSON *node, const char **ret_dup);

#endif
