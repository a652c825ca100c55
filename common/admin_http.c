/*
 * admin_http.c - /metrics, /healthz and /readyz on top of http.c.
 *
 * GET (and HEAD, which MHD answers without a body) only; any other method
 * is 405, any other path 404.  Nothing here reads the request body, so the
 * listener's body cap is kept tiny.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin_http.h"
#include "err.h"
#include "http.h"
#include "metrics.h"

#define ADMIN_HTTP_BODY_MAX 1024
#define ADMIN_HTTP_WHY_MAX  256
#define ADMIN_HTTP_THREADS  4 /* scrapes, /readyz, /healthz */

struct admin_http {
	struct metrics *metrics;
	struct admin_http_hooks hooks;
};

static int
admin_handle(void *arg, const struct http_request *req,
             struct http_response *resp)
{
	struct admin_http *a = arg;
	bool is_metrics = strcmp(req->path, "/metrics") == 0;
	bool is_health = strcmp(req->path, "/healthz") == 0;
	bool is_ready = strcmp(req->path, "/readyz") == 0;

	if (!is_metrics && !is_health && !is_ready)
		return http_error(resp, 404, "not_found", "no such path");
	if (strcmp(req->method, "GET") != 0 &&
	    strcmp(req->method, "HEAD") != 0) {
		http_add_header(resp, "Allow", "GET, HEAD");
		return http_error(resp, 405, "method_not_allowed",
		                  "only GET is allowed");
	}
	if (is_metrics) {
		char *text;
		size_t len;
		int rc;

		if (a->metrics == NULL)
			return http_text(resp, 200, "text/plain; version=0.0.4",
			                 "");
		if ((rc = metrics_render(a->metrics, &text, &len)) < 0)
			return rc;
		/* hand the rendered buffer over without copying */
		free(resp->body);
		resp->body = text;
		resp->body_len = len;
		resp->status = 200;
		resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
		return 0;
	}
	if (is_health) {
		if (a->hooks.healthy != NULL && !a->hooks.healthy(a->hooks.arg))
			return http_text(resp, 503, NULL,
			                 "main loop not ticking\n");
		return http_text(resp, 200, NULL, "ok\n");
	}
	/* readyz */
	if (a->hooks.ready != NULL) {
		char why[ADMIN_HTTP_WHY_MAX] = "";
		char line[ADMIN_HTTP_WHY_MAX + 2];

		if (a->hooks.ready(a->hooks.arg, why, sizeof(why)) < 0) {
			snprintf(line, sizeof(line), "%s\n",
			         why[0] ? why : "not ready");
			return http_text(resp, 503, NULL, line);
		}
	}
	return http_text(resp, 200, NULL, "ready\n");
}

int
admin_http_start(const char *listen, struct metrics *m,
                 const struct admin_http_hooks *hooks, struct http_server **ret)
{
	struct http_server_conf hc = {
	    .listen = listen,
	    .max_connections = 64,
	    .per_ip_connections = 16,
	    .timeout_s = 10,
	    .body_max = ADMIN_HTTP_BODY_MAX,
	    /* more than one: a scrape waiting in a frozen database
	     * session held the only thread, and /readyz and /healthz
	     * waited behind it */
	    .threads = ADMIN_HTTP_THREADS,
	    .name = "admin",
	};
	struct admin_http *a;
	int rc;

	if (listen == NULL || ret == NULL)
		return -EINVAL;
	a = calloc(1, sizeof(*a));
	if (a == NULL)
		return -ENOMEM;
	a->metrics = m;
	if (hooks != NULL)
		a->hooks = *hooks;
	if ((rc = http_server_start(&hc, admin_handle, a, ret)) < 0) {
		free(a);
		return rc;
	}
	http_server_free_arg_on_stop(*ret, free);
	return 0;
}
