/*
 * conf.c - where kasirctl finds the daemons and its database.
 *
 * Production: /etc/kasir/kasirctl.yaml (or --config FILE):
 *
 *   sockets:                      # admin sockets (admin.socket of each daemon)
 *     ingest: ipc:///run/kasir/ingest.sock
 *     order: ipc:///run/kasir/order.sock
 *     notifier: ipc:///run/kasir/notifier.sock
 *     reconciler: ipc:///run/kasir/reconciler.sock
 *   timeout: 10s                  # one admin request
 *   slow_timeout: 60s             # reconcile (asks Midtrans), export
 *   database:                     # the ops schema (audit, incidents)
 *     url: "host=... dbname=kasir user=kasir_ctl"
 *     password_file: /etc/kasir/secrets/db-kasir_ctl
 *     migrate_url: "host=... dbname=kasir user=kasir_ctl_owner"   # optional
 *     migrate_password_file: /etc/kasir/secrets/db-kasir_ctl_owner
 *     migrations: /usr/share/kasir/migrations/ops
 *   roles:
 *     engineer_group: kasir-engineer
 *     support_group: kasir-support
 *   doctor:
 *     lag_max: 100                # stream lag (messages) reported as P1
 *     expiry_grace: 15m           # PENDING this long past expiry: P2
 *     snap_window: 30m            # most Snap attempts failed (>= 3 or all): P0
 *     recent: 24h                 # Snap failures / unknown notifications
 *
 * Dev stack: var/dev.env (written by deploy/dev/up) names the rendered
 * kasirctl.yaml (KASIRCTL_CONFIG) and the sockets (KASIR_<SVC>_SOCKET).
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "kasirctl.h"
#include "util.h"

#define F(x)           offsetof(struct ctl_conf, x)
#define DEFAULT_CONFIG "/etc/kasir/kasirctl.yaml"
#define DEVENV_DEPTH   32 /* directories walked up looking for var/dev.env */

static const char *const svc_names[SVC_COUNT] = {
    [SVC_INGEST] = "kasir-ingest",
    [SVC_ORDER] = "kasir-order",
    [SVC_NOTIFIER] = "kasir-notifier",
    [SVC_RECONCILER] = "kasir-reconciler",
};
static const char *const svc_keys[SVC_COUNT] = {
    [SVC_INGEST] = "ingest",
    [SVC_ORDER] = "order",
    [SVC_NOTIFIER] = "notifier",
    [SVC_RECONCILER] = "reconciler",
};

const char *
ctl_svc_name(enum ctl_svc s)
{
	return s < SVC_COUNT ? svc_names[s] : "?";
}

const char *
ctl_svc_key(enum ctl_svc s)
{
	return s < SVC_COUNT ? svc_keys[s] : "?";
}

static int ctl_conf_check(void *base, const struct conf_node *map,
                          struct conf_errors *errs);

static const struct conf_key ctl_conf_keys[] = {
    {.key = "sockets.ingest",
     .type = CONF_STRING,
     .offset = F(socket[SVC_INGEST])},
    {.key = "sockets.order",
     .type = CONF_STRING,
     .offset = F(socket[SVC_ORDER])},
    {.key = "sockets.notifier",
     .type = CONF_STRING,
     .offset = F(socket[SVC_NOTIFIER])},
    {.key = "sockets.reconciler",
     .type = CONF_STRING,
     .offset = F(socket[SVC_RECONCILER])},
    {.key = "timeout",
     .type = CONF_DURATION,
     .offset = F(timeout_ms),
     .min = 100,
     .max = 600000,
     .defval = "10s"},
    {.key = "slow_timeout",
     .type = CONF_DURATION,
     .offset = F(slow_timeout_ms),
     .min = 100,
     .max = 3600000,
     .defval = "60s"},
    {.key = "database.url", .type = CONF_STRING, .offset = F(db_url)},
    {.key = "database.password_file",
     .type = CONF_SECRET,
     .offset = F(db_password)},
    {.key = "database.migrate_url",
     .type = CONF_STRING,
     .offset = F(db_migrate_url)},
    {.key = "database.migrate_password_file",
     .type = CONF_SECRET,
     .offset = F(db_migrate_password)},
    {.key = "database.migrations",
     .type = CONF_STRING,
     .offset = F(db_migrations)},
    {.key = "roles.engineer_group",
     .type = CONF_STRING,
     .offset = F(engineer_group)},
    {.key = "roles.support_group",
     .type = CONF_STRING,
     .offset = F(support_group)},
    {.key = "evidence.key_file",
     .type = CONF_SECRET,
     .offset = F(evidence_key)},
    {.key = "evidence.key_id",
     .type = CONF_STRING,
     .offset = F(evidence_key_id),
     .defval = "ev1"},
    {.key = "deployment",
     .type = CONF_STRING,
     .offset = F(deployment),
     .defval = "production"},
    {.key = "drill.stop_command",
     .type = CONF_STRING,
     .offset = F(drill.stop_command)},
    {.key = "drill.start_command",
     .type = CONF_STRING,
     .offset = F(drill.start_command)},
    {.key = "drill.api_url", .type = CONF_STRING, .offset = F(drill.api_url)},
    {.key = "drill.api_token_file",
     .type = CONF_SECRET,
     .offset = F(drill.api_token)},
    {.key = "drill.course",
     .type = CONF_STRING,
     .offset = F(drill.course),
     .defval = "drill"},
    {.key = "drill.fake_midtrans",
     .type = CONF_STRING,
     .offset = F(drill.fake_midtrans)},
    {.key = "drill.smtp_control",
     .type = CONF_STRING,
     .offset = F(drill.smtp_control)},
    {.key = "drill.metrics.ingest",
     .type = CONF_STRING,
     .offset = F(drill.metrics[SVC_INGEST])},
    {.key = "drill.metrics.order",
     .type = CONF_STRING,
     .offset = F(drill.metrics[SVC_ORDER])},
    {.key = "drill.metrics.notifier",
     .type = CONF_STRING,
     .offset = F(drill.metrics[SVC_NOTIFIER])},
    {.key = "drill.metrics.reconciler",
     .type = CONF_STRING,
     .offset = F(drill.metrics[SVC_RECONCILER])},
    {.key = "drill.timeout",
     .type = CONF_DURATION,
     .offset = F(drill.timeout_ms),
     .min = 1000,
     .max = 3600000,
     .defval = "120s"},
    {.key = "doctor.lag_max",
     .type = CONF_INT,
     .offset = F(lag_max),
     .min = 1,
     .max = 100000000,
     .defval = "100"},
    {.key = "doctor.expiry_grace",
     .type = CONF_DURATION,
     .offset = F(expiry_grace_ms),
     .min = 0,
     .max = 7 * 86400000LL,
     .defval = "15m"},
    {.key = "doctor.recent",
     .type = CONF_DURATION,
     .offset = F(recent_ms),
     .min = 60000,
     .max = 90 * 86400000LL,
     .defval = "24h"},
    {.key = "doctor.snap_window",
     .type = CONF_DURATION,
     .offset = F(snap_window_ms),
     .min = 60000,
     .max = 86400000LL,
     .defval = "30m"},
    CONF_END(ctl_conf_check),
};

int
ctl_deployment_parse(const char *s)
{
	if (s == NULL || strcmp(s, "production") == 0)
		return CTL_DEPLOY_PRODUCTION;
	if (strcmp(s, "staging") == 0)
		return CTL_DEPLOY_STAGING;
	if (strcmp(s, "dev") == 0)
		return CTL_DEPLOY_DEV;
	return -EINVAL;
}

void
ctl_conf_free(struct ctl_conf *conf)
{
	if (conf != NULL)
		conf_free(ctl_conf_keys, conf);
}

/* An admin socket url must be ipc:// or tcp:// and reasonably short. */
static bool
socket_url_ok(const char *u)
{
	return u != NULL && strlen(u) < 240 &&
	       (strncmp(u, "ipc://", 6) == 0 || strncmp(u, "tcp://", 6) == 0);
}

/*
 * kasirctl's rules between keys, in one place: the finish hook of its table
 * (a YAML file, through conf_load) and the dev.env path (sockets only) both
 * ask it.  NULL when conf is fine; otherwise the message, and *ret_key the
 * key it is about (for the line number).
 */
static const char *
conf_problem(const struct ctl_conf *conf, const char **ret_key, char *buf,
             size_t len)
{
	int n = 0;

	for (int s = 0; s < SVC_COUNT; s++) {
		if (conf->socket[s] == NULL)
			continue;
		n++;
		if (!socket_url_ok(conf->socket[s])) {
			snprintf(buf, len,
			         "sockets.%s: want ipc://PATH or "
			         "tcp://HOST:PORT",
			         svc_keys[s]);
			*ret_key = "sockets";
			return buf;
		}
	}
	if (n == 0) {
		*ret_key = "sockets";
		return "no admin socket configured";
	}
	if (ctl_deployment_parse(conf->deployment) < 0) {
		*ret_key = "deployment";
		return "deployment: want dev, staging or production";
	}
	if (conf->db_url == NULL && conf->db_migrate_url != NULL) {
		*ret_key = "database.migrate_url";
		return "database.migrate_url without database.url";
	}
	return NULL;
}

/* The finish hook of ctl_conf_keys (config.h: conf_finish_fn). */
static int
ctl_conf_check(void *base, const struct conf_node *map,
               struct conf_errors *errs)
{
	const char *msg, *key = NULL;
	char buf[160];

	if ((msg = conf_problem(base, &key, buf, sizeof(buf))) == NULL)
		return 0;
	conf_error_key(errs, map, key, "%s", msg);
	return KASIR_ECONFIG;
}

/* The same for a configuration that is not a YAML file. */
static int
conf_check(const struct ctl_conf *conf, const char *file, char *why,
           size_t why_len)
{
	const char *msg, *key = NULL;
	char buf[160];

	if ((msg = conf_problem(conf, &key, buf, sizeof(buf))) == NULL)
		return 0;
	snprintf(why, why_len, "%s: %s", file, msg);
	return KASIR_ECONFIG;
}

int
ctl_conf_load_file(const char *file, struct ctl_conf *conf, char *why,
                   size_t why_len)
{
	char *errors = NULL;
	int r;

	memset(conf, 0, sizeof(*conf));
	r = conf_load(file, ctl_conf_keys, conf, &errors);
	if (r < 0) {
		snprintf(why, why_len, "%s", errors ? errors : "unreadable");
		/* drop the trailing newline of the last message */
		size_t l = strlen(why);
		if (l > 0 && why[l - 1] == '\n')
			why[l - 1] = '\0';
		free(errors);
		return r;
	}
	return 0;
}

int
ctl_shell_unquote(const char *in, char *out, size_t out_len)
{
	size_t o = 0;

	if (out_len == 0)
		return -EINVAL;
	while (*in != '\0') {
		if (*in == '\'') {
			const char *end = strchr(in + 1, '\'');

			if (end == NULL)
				return -EINVAL;
			for (const char *p = in + 1; p < end; p++) {
				if (o + 1 >= out_len)
					return -EINVAL;
				out[o++] = *p;
			}
			in = end + 1;
		} else if (*in == '"') {
			in++;
			while (*in != '"') {
				if (*in == '\0')
					return -EINVAL;
				if (*in == '\\' && in[1] != '\0')
					in++;
				if (o + 1 >= out_len)
					return -EINVAL;
				out[o++] = *in++;
			}
			in++;
		} else if (*in == ' ' || *in == '\t' || *in == '\n' ||
		           *in == '\r') {
			break; /* end of the word (trailing comment...) */
		} else {
			if (*in == '\\' && in[1] != '\0')
				in++;
			if (o + 1 >= out_len)
				return -EINVAL;
			out[o++] = *in++;
		}
	}
	out[o] = '\0';
	return 0;
}

int
ctl_devenv_load(const char *file, struct ctl_conf *conf, char *why,
                size_t why_len)
{
	char line[CTL_LINE_MAX], value[CTL_LINE_MAX], ctlconf[PATH_MAX] = "";
	char *sock[SVC_COUNT] = {NULL};
	FILE *f;
	int lineno = 0, r = 0;

	f = fopen(file, "re");
	if (f == NULL) {
		snprintf(why, why_len, "%s: %s", file, strerror(errno));
		return -errno;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		char *eq;
		size_t l = strlen(line);

		lineno++;
		if (l == sizeof(line) - 1 && line[l - 1] != '\n') {
			snprintf(why, why_len, "%s:%d: line too long", file,
			         lineno);
			r = KASIR_ECONFIG;
			goto out;
		}
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if ((eq = strchr(line, '=')) == NULL)
			continue;
		*eq = '\0';
		if (ctl_shell_unquote(eq + 1, value, sizeof(value)) < 0) {
			snprintf(why, why_len, "%s:%d: %s: bad quoting", file,
			         lineno, line);
			r = KASIR_ECONFIG;
			goto out;
		}
		if (strcmp(line, "KASIRCTL_CONFIG") == 0) {
			kasir_strlcpy(ctlconf, value, sizeof(ctlconf));
			continue;
		}
		for (int s = 0; s < SVC_COUNT; s++) {
			char key[64];

			snprintf(key, sizeof(key), "KASIR_%s_SOCKET",
			         svc_keys[s]);
			for (char *p = key; *p; p++)
				if (*p >= 'a' && *p <= 'z')
					*p = (char)(*p - 'a' + 'A');
			if (strcmp(line, key) != 0)
				continue;
			free(sock[s]);
			if ((sock[s] = strdup(value)) == NULL) {
				r = -ENOMEM;
				goto out;
			}
		}
	}
	if (ferror(f)) {
		snprintf(why, why_len, "%s: read error", file);
		r = -EIO;
		goto out;
	}
	if (ctlconf[0] != '\0') {
		r = ctl_conf_load_file(ctlconf, conf, why, why_len);
		goto out;
	}
	memset(conf, 0, sizeof(*conf));
	/* no kasirctl.yaml: sockets only, defaults for the rest, no ops
	 * database (nothing recorded; incident commands unavailable) */
	conf->timeout_ms = 10000;
	conf->slow_timeout_ms = 60000;
	conf->lag_max = 100;
	conf->expiry_grace_ms = 15 * 60000;
	conf->recent_ms = 86400000;
	conf->snap_window_ms = 30 * 60000;
	for (int s = 0; s < SVC_COUNT; s++) {
		conf->socket[s] = sock[s];
		sock[s] = NULL;
	}
	if ((r = conf_check(conf, file, why, why_len)) < 0)
		ctl_conf_free(conf);
out:
	for (int s = 0; s < SVC_COUNT; s++)
		free(sock[s]);
	fclose(f);
	return r;
}

/* Looks for var/dev.env in the cwd and its parents. */
static bool
find_devenv(char *buf, size_t len)
{
	char dir[PATH_MAX];

	if (getcwd(dir, sizeof(dir)) == NULL)
		return false;
	for (int depth = 0; depth < DEVENV_DEPTH; depth++) {
		char *slash;

		if (snprintf(buf, len, "%s/var/dev.env",
		             strcmp(dir, "/") == 0 ? "" : dir) < (int)len &&
		    access(buf, R_OK) == 0)
			return true;
		if (strcmp(dir, "/") == 0)
			break;
		slash = strrchr(dir, '/');
		if (slash == dir)
			slash[1] = '\0';
		else if (slash != NULL)
			*slash = '\0';
		else
			break;
	}
	return false;
}

int
ctl_conf_find_load(const char *path, struct ctl_conf *conf, char **ret_source,
                   char *why, size_t why_len)
{
	char devenv[PATH_MAX];
	const char *env;
	char *src;
	int r;

	if (path == NULL && (env = getenv("KASIRCTL_CONFIG")) != NULL &&
	    env[0] != '\0')
		path = env;
	if (path != NULL) {
		r = ctl_conf_load_file(path, conf, why, why_len);
		src = strdup(path);
	} else if (((env = getenv("KASIR_DEV_ENV")) != NULL && env[0] != '\0' &&
	            kasir_strlcpy(devenv, env, sizeof(devenv)) <
	                sizeof(devenv)) ||
	           find_devenv(devenv, sizeof(devenv))) {
		r = ctl_devenv_load(devenv, conf, why, why_len);
		src = strdup(devenv);
	} else if (access(DEFAULT_CONFIG, F_OK) == 0) {
		r = ctl_conf_load_file(DEFAULT_CONFIG, conf, why, why_len);
		src = strdup(DEFAULT_CONFIG);
	} else {
		snprintf(why, why_len,
		         "no configuration: pass --config FILE, set "
		         "KASIRCTL_CONFIG or KASIR_DEV_ENV, run inside a dev "
		         "stack (var/dev.env) or install %s",
		         DEFAULT_CONFIG);
		return -ENOENT;
	}
	if (r < 0) {
		free(src);
		return r;
	}
	if (src == NULL) {
		ctl_conf_free(conf);
		return -ENOMEM;
	}
	*ret_source = src;
	return 0;
}
