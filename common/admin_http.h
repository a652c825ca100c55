/*
 * admin_http.h - the admin HTTP listener every daemon serves on
 * admin.listen: GET /metrics (Prometheus text), GET /healthz (the process
 * and its main loop are alive: 200 "ok"), GET /readyz (200 "ready" or 503
 * with the reason: database unreachable, migrations not applied, stream lag
 * above threshold...).  Bound to loopback by default; no secrets served.
 */
#ifndef KASIR_ADMIN_HTTP_H
#define KASIR_ADMIN_HTTP_H

#include <stdbool.h>
#include <stddef.h>

struct metrics;
struct http_server;

struct admin_http_hooks {
	/* true while the main loop is ticking (see kasir_sd_watchdog) */
	bool (*healthy)(void *arg);
	/* 0 when ready; otherwise a negative code and why filled */
	int (*ready)(void *arg, char *why, size_t why_len);
	void *arg;
};

int admin_http_start(const char *listen, struct metrics *m,
		     const struct admin_http_hooks *hooks,
		     struct http_server **ret);

#endif
