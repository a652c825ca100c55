/*
 * drill.h - kasirctl drill (SOP section 9): internals shared by drill.c
 * (the scenarios and the run), drill_probe.c (HTTP, /metrics) and
 * drill_history.c (the incident record and `drill history`).
 */
#ifndef KASIR_KASIRCTL_DRILL_H
#define KASIR_KASIRCTL_DRILL_H

#include <stdbool.h>
#include <stdint.h>

#include "kasirctl.h"

#define DRILL_STALE_DAYS 90 /* SOP section 9: at least once every 3 months */

/* One HTTP request (json_body NULL: none; bearer NULL: no token).  0 with
 * *ret_status (and *ret_body when asked, caller frees), or KASIR_EPEER when
 * nothing answered. */
int drill_http(const char *method, const char *url, const char *json_body,
               const char *bearer, long *ret_status, char **ret_body);
/* GET drill.metrics.<svc>: 0 and the page (caller frees); -ENOENT when not
 * configured; KASIR_EPEER when the scrape fails (Prometheus: up == 0). */
int drill_scrape(const struct ctl_conf *conf, enum ctl_svc svc,
                 char **ret_page);
/* Sum of the samples of metric `name` whose line contains label (NULL:
 * all), as PromQL's sum() would. */
double drill_metric_sum(const char *page, const char *name, const char *label);

/* The SOP's name of a drill scenario ("worker down"), or NULL. */
const char *drill_scenario_title(const char *scenario);

#endif
