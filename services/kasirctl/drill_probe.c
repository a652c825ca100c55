/*
 * drill_probe.c - what kasirctl drill reaches outside the admin sockets:
 * plain HTTP to the fakes' control URLs and kasir-order's public API (drill
 * orders), and the daemons' /metrics, read the way Prometheus reads them.
 *
 * The alert conditions the drills measure are the expressions of
 * deploy/prometheus/kasir-alerts.yml, evaluated here on scraped values
 * (drill.c: one function per alert a drill uses).  This file only fetches
 * and sums samples.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "body_buf.h"
#include "drill.h"
#include "err.h"

#define HTTP_BODY_MAX (4 * 1024 * 1024) /* a /metrics page is far smaller */
/* each request: 5 s (a scrape of a hung daemon fails as Prometheus's
 * would) */

int
drill_http(const char *method, const char *url, const char *json_body,
           const char *bearer, long *ret_status, char **ret_body)
{
	CURL *h = curl_easy_init();
	struct curl_slist *hdr = NULL;
	struct body_buf b;
	char auth[600];
	CURLcode cc;
	int rc = 0;

	*ret_status = 0;
	if (ret_body)
		*ret_body = NULL;
	if (h == NULL)
		return -ENOMEM;
	body_buf_init(&b, HTTP_BODY_MAX, BODY_ABORT);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_buf_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	if (json_body != NULL) {
		hdr = curl_slist_append(hdr, "Content-Type: application/json");
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, json_body);
	}
	if (bearer != NULL) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s",
		         bearer);
		hdr = curl_slist_append(hdr, auth);
	}
	if (hdr != NULL)
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
	cc = curl_easy_perform(h);
	if (cc != CURLE_OK) {
		rc = KASIR_EPEER;
	} else {
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, ret_status);
		if (ret_body && (*ret_body = body_buf_take(&b)) == NULL)
			rc = -ENOMEM;
	}
	body_buf_free(&b);
	curl_slist_free_all(hdr);
	curl_easy_cleanup(h);
	return rc;
}

int
drill_scrape(const struct ctl_conf *conf, enum ctl_svc svc, char **ret_page)
{
	long status;
	int rc;

	*ret_page = NULL;
	if (conf->drill.metrics[svc] == NULL)
		return -ENOENT;
	rc = drill_http("GET", conf->drill.metrics[svc], NULL, NULL, &status,
	                ret_page);
	if (rc == 0 && status != 200) {
		free(*ret_page);
		*ret_page = NULL;
		rc = KASIR_EPEER;
	}
	return rc;
}

double
drill_metric_sum(const char *page, const char *name, const char *label)
{
	size_t nl = strlen(name);
	double sum = 0;

	for (const char *l = page; l != NULL && *l != '\0';) {
		const char *end = strchr(l, '\n');
		size_t len = end ? (size_t)(end - l) : strlen(l);

		if (len > nl && strncmp(l, name, nl) == 0 &&
		    (l[nl] == ' ' || l[nl] == '{')) {
			char line[1024];
			const char *v;

			if (len >= sizeof(line))
				len = sizeof(line) - 1;
			memcpy(line, l, len);
			line[len] = '\0';
			v = strrchr(line, ' ');
			if (v != NULL && (label == NULL || strstr(line, label)))
				sum += strtod(v + 1, NULL);
		}
		l = end ? end + 1 : NULL;
	}
	return sum;
}
