/*
 * conf.c - kasir-order's configuration table (see config.example.yaml).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "order.h"

#define O(f) offsetof(struct order_conf, f)
#define K(f) offsetof(struct course, f)

static const struct conf_key course_keys[] = {
    {.key = "id", .type = CONF_STRING, .offset = K(id), .required = true},
    {.key = "title", .type = CONF_STRING, .offset = K(title), .required = true},
    {.key = "price",
     .type = CONF_INT,
     .offset = K(price),
     .required = true,
     .min = 1,
     .max = 1000000000000LL},
    {.key = "access",
     .type = CONF_STRING,
     .offset = K(access_text),
     .defval = "lifetime"},
    {.key = "drill", .type = CONF_BOOL, .offset = K(drill), .defval = "false"},
    {.key = NULL},
};

static bool
course_id_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > COURSE_ID_MAX)
		return false;
	for (; *s != '\0'; s++) {
		char ch = *s;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
		      ch == '-'))
			return false;
	}
	return true;
}

/* "lifetime" -> 0; "365d" -> 365 (1..36500). */
static int
parse_access(const char *s, int64_t *ret_days)
{
	char *end;
	long v;

	if (strcmp(s, "lifetime") == 0) {
		*ret_days = 0;
		return 0;
	}
	if (*s < '1' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || strcmp(end, "d") != 0 || v < 1 || v > 36500)
		return -EINVAL;
	*ret_days = v;
	return 0;
}

static int
parse_courses(const struct conf_node *node, void *field,
              struct conf_errors *errs)
{
	struct conf_list *list = field;
	struct course *cs;
	const struct conf_node *item;
	size_t i;
	int rc = 0;

	if (node->kind != CONF_NODE_SEQ) {
		conf_error(errs, node, "courses: expected a list");
		return KASIR_ECONFIG;
	}
	if (conf_parse_list(node, course_keys, sizeof(struct course),
	                    CATALOG_MAX, list, errs) < 0)
		return KASIR_ECONFIG;
	cs = list->items;
	for (i = 0, item = node->child; i < list->count && item != NULL;
	     i++, item = item->next) {
		if (!course_id_ok(cs[i].id)) {
			conf_error(errs, item,
			           "courses: id must be 1..%d of "
			           "[A-Za-z0-9._-]",
			           COURSE_ID_MAX);
			rc = KASIR_ECONFIG;
		}
		if (strlen(cs[i].title) == 0 ||
		    strlen(cs[i].title) > COURSE_TITLE_MAX) {
			conf_error(errs, item,
			           "courses: title must be 1..%d "
			           "bytes",
			           COURSE_TITLE_MAX);
			rc = KASIR_ECONFIG;
		}
		if (parse_access(cs[i].access_text, &cs[i].access_days) < 0) {
			conf_error(errs, item,
			           "courses: access must be \"lifetime\" or a "
			           "number of days like \"365d\"");
			rc = KASIR_ECONFIG;
		}
		for (size_t j = 0; j < i; j++) {
			if (strcmp(cs[i].id, cs[j].id) == 0) {
				conf_error(errs, item,
				           "courses: duplicate id \"%s\"",
				           cs[i].id);
				rc = KASIR_ECONFIG;
			}
		}
	}
	if (list->count == 0) {
		conf_error(errs, node, "courses: at least one course needed");
		rc = KASIR_ECONFIG;
	}
	return rc;
}

static void
free_courses(void *field)
{
	conf_list_free(course_keys, sizeof(struct course), field);
}

/* kasir-order's finish hook (config.h: conf_finish_fn): conf_load() runs
 * it, so --check-config and a start agree.  The ingest and recon consume
 * entries stay optional (a start without them warns). */
static int
order_conf_check(void *base, const struct conf_node *map,
                 struct conf_errors *errs)
{
	const struct order_conf *c = base;
	int rc = 0;

	if (base_conf_need_publish(&c->base, map, errs, "kasir-order",
	                           "orders") < 0)
		rc = KASIR_ECONFIG;
	if (base_conf_check_listen(c->http_listen, map, errs, "http.listen") <
	    0)
		rc = KASIR_ECONFIG;
	return rc;
}

const struct conf_key order_conf_keys[] = {
    BASE_CONF_KEYS_FOR(struct order_conf),
    {.key = "http.listen",
     .type = CONF_STRING,
     .offset = O(http_listen),
     .required = true},
    {.key = "http.threads",
     .type = CONF_INT,
     .offset = O(http_threads),
     .min = 1,
     .max = 16,
     .defval = "4"},
    {.key = "http.max_connections",
     .type = CONF_INT,
     .offset = O(http_max_connections),
     .min = 1,
     .max = 100000,
     .defval = "1000"},
    {.key = "http.per_ip_connections",
     .type = CONF_INT,
     .offset = O(http_per_ip),
     .min = 1,
     .max = 100000,
     .defval = "100"},
    {.key = "http.timeout",
     .type = CONF_DURATION,
     .offset = O(http_timeout_ms),
     .min = 1000,
     .max = 300000,
     .defval = "10s"},
    {.key = "http.body_max",
     .type = CONF_SIZE,
     .offset = O(http_body_max),
     .min = 1024,
     .max = 1024 * 1024,
     .defval = "16KiB"},
    {.key = "http.token_file",
     .type = CONF_SECRET,
     .offset = O(api_token),
     .required = true},
    {.key = "order.expiry",
     .type = CONF_DURATION,
     .offset = O(order_expiry_ms),
     .min = 60000,
     .max = 30LL * 24 * 3600 * 1000,
     .defval = "24h"},
    {.key = "order.signature_only",
     .type = CONF_BOOL,
     .offset = O(signature_only),
     .defval = "false"},
    {.key = "midtrans.snap_url",
     .type = CONF_STRING,
     .offset = O(snap_url),
     .required = true},
    {.key = "midtrans.core_url",
     .type = CONF_STRING,
     .offset = O(core_url),
     .required = true},
    {.key = "midtrans.server_key_file",
     .type = CONF_SECRET,
     .offset = O(server_key),
     .required = true},
    {.key = "midtrans.connect_timeout",
     .type = CONF_DURATION,
     .offset = O(snap_connect_timeout_ms),
     .min = 100,
     .max = 60000,
     .defval = "3s"},
    {.key = "midtrans.timeout",
     .type = CONF_DURATION,
     .offset = O(snap_timeout_ms),
     .min = 500,
     .max = 120000,
     .defval = "10s"},
    {.key = "midtrans.retries",
     .type = CONF_INT,
     .offset = O(snap_retries),
     .min = 0,
     .max = SNAP_RETRIES_MAX,
     .defval = "2"},
    {.key = "courses",
     .type = CONF_CUSTOM,
     .offset = O(courses),
     .required = true,
     .parse = parse_courses,
     .free = free_courses},
    CONF_END(order_conf_check),
};
