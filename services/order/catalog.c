/*
 * catalog.c - the course catalog (config "courses:") and the service's
 * counters.
 */
#include <stdio.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "metrics.h"
#include "order.h"

const struct course *
catalog_find(const struct order_conf *c, const char *id)
{
	const struct course *cs = c->courses.items;

	if (id == NULL)
		return NULL;
	for (size_t i = 0; i < c->courses.count; i++) {
		if (strcmp(cs[i].id, id) == 0)
			return &cs[i];
	}
	return NULL;
}

struct cJSON *
catalog_json(const struct order_conf *c)
{
	const struct course *cs = c->courses.items;
	cJSON *root = cJSON_CreateObject(), *arr;

	if (root == NULL)
		return NULL;
	arr = cJSON_AddArrayToObject(root, "courses");
	if (arr == NULL)
		goto fail;
	for (size_t i = 0; i < c->courses.count; i++) {
		cJSON *o;

		if (cs[i].drill)
			continue; /* kasirctl drill's course: not for sale */
		o = cJSON_CreateObject();
		if (o == NULL)
			goto fail;
		cJSON_AddItemToArray(arr, o);
		if (cJSON_AddStringToObject(o, "id", cs[i].id) == NULL ||
		    cJSON_AddStringToObject(o, "title", cs[i].title) == NULL ||
		    cJSON_AddNumberToObject(o, "price", (double)cs[i].price) ==
		        NULL ||
		    cJSON_AddStringToObject(o, "currency", "IDR") == NULL ||
		    cJSON_AddStringToObject(o, "access", cs[i].access_text) ==
		        NULL)
			goto fail;
	}
	return root;
fail:
	cJSON_Delete(root);
	return NULL;
}

void
order_metrics_init(struct order_metrics *om, struct metrics *m)
{
	static const char *const results[] = {"applied", "noop", "ignored",
	                                      "flagged", "invalid"};
	char labels[64];

	memset(om, 0, sizeof(*om));
	if (m == NULL)
		return;
	om->created = metrics_counter(m, "kasir_orders_created_total", NULL,
	                              "orders created through the API");
	for (unsigned i = 0; i < ORDER_STATUS_COUNT; i++) {
		snprintf(labels, sizeof(labels), "to=\"%s\"",
		         order_status_name(i));
		om->transitions[i] =
		    metrics_counter(m, "kasir_order_transitions_total", labels,
		                    "order status transitions by target state");
	}
	for (unsigned i = 0; i < 5; i++) {
		snprintf(labels, sizeof(labels), "result=\"%s\"", results[i]);
		om->evidence[i] =
		    metrics_counter(m, "kasir_order_evidence_total", labels,
		                    "payment evidence by result");
	}
	om->unknown = metrics_counter(
	    m, "kasir_order_unknown_notifications_total", NULL,
	    "notifications and status checks for unknown order ids");
	om->flags = metrics_counter(m, "kasir_order_flags_total", NULL,
	                            "orders flagged for operators");
	om->poison = metrics_counter(m, "kasir_order_poison_total", NULL,
	                             "stream messages refused for good");
	om->snap_latency = metrics_histogram(
	    m, "kasir_snap_request_seconds", NULL, "Snap API call latency",
	    metrics_latency_bounds, metrics_latency_nbounds);
	om->snap_errors = metrics_counter(m, "kasir_snap_errors_total", NULL,
	                                  "Snap transactions not created");
	om->snap_ok = metrics_counter(m, "kasir_snap_ok_total", NULL,
	                              "Snap transactions created");
	{
		static const char *const confirm[] = {"held", "agreed",
		                                      "contradicted"};
		for (unsigned i = 0; i < 3; i++) {
			snprintf(labels, sizeof(labels), "result=\"%s\"",
			         confirm[i]);
			om->confirm[i] = metrics_counter(
			    m, "kasir_order_confirmations_total", labels,
			    "notifications held for a status api confirmation, "
			    "and the answers: agreed, contradicted (possible "
			    "forgery or key leak)");
		}
	}
}

int
db_pool_init(struct db_pool *p, const struct db_conf *conf, unsigned n)
{
	int rc;

	memset(p, 0, sizeof(*p));
	if (n == 0 || n > sizeof(p->dbs) / sizeof(p->dbs[0]))
		n = 4;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	for (unsigned i = 0; i < n; i++) {
		char loop[32];

		rc = db_open(conf, &p->dbs[i]);
		if (rc < 0) {
			db_pool_fini(p);
			return rc;
		}
		/* each slot is judged alone: a wedged one must show */
		snprintf(loop, sizeof(loop), "order.api.%u", i);
		db_set_loop(p->dbs[i], loop, false, 0);
		p->n++;
	}
	return 0;
}

void
db_pool_fini(struct db_pool *p)
{
	for (unsigned i = 0; i < p->n; i++)
		db_close(p->dbs[i]);
	p->n = 0;
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
}

struct kasir_db *
db_pool_get(struct db_pool *p)
{
	struct kasir_db *db = NULL;

	pthread_mutex_lock(&p->lock);
	while (db == NULL) {
		for (unsigned i = 0; i < p->n; i++) {
			if (!p->busy[i]) {
				p->busy[i] = true;
				db = p->dbs[i];
				break;
			}
		}
		if (db == NULL)
			pthread_cond_wait(&p->cond, &p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	return db;
}

void
db_pool_put(struct db_pool *p, struct kasir_db *db)
{
	pthread_mutex_lock(&p->lock);
	for (unsigned i = 0; i < p->n; i++) {
		if (p->dbs[i] == db)
			p->busy[i] = false;
	}
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
}
