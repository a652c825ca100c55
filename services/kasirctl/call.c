/*
 * call.c - one admin request to one daemon (common/admin_socket.h).
 *
 * The daemon decides the role from the socket's peer credentials; the
 * request carries "as_role" so that a user can act with LESS than that
 * (KASIR_ROLE=support): daemons honour it as a downgrade only.  "actor" is
 * informational over ipc:// (the daemon takes the peer's user name).
 */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "err.h"
#include "kasirctl.h"
#include "util.h"

static void
err_set(struct ctl_error *err, enum ctl_svc svc, const char *url,
        const char *code, int exit, const char *msg)
{
	memset(err, 0, sizeof(*err));
	kasir_strlcpy(err->service, ctl_svc_name(svc), sizeof(err->service));
	kasir_strlcpy(err->socket, url ? url : "", sizeof(err->socket));
	kasir_strlcpy(err->code, code, sizeof(err->code));
	kasir_strlcpy(err->message, msg, sizeof(err->message));
	text_terminal_safe(err->message);
	err->exit = exit;
}

bool
ctl_error_access(const struct ctl_error *err)
{
	return strcmp(err->code, CTL_E_PERMISSION_DENIED) == 0 ||
	       strcmp(err->code, ADMIN_E_ROLE_REQUIRED) == 0;
}

/*
 * Why the socket of url refused this user: the deepest part of its path
 * that can be looked at (the socket itself, or the directory that cannot
 * be entered: /run/kasir/<svc> is 0750), its group and mode, and the group
 * that would give access.  "" for a url that is not ipc://.
 */
static void
access_why(const char *url, char *out, size_t len)
{
	char path[256], grp[64];
	struct stat sb;
	struct group *g;
	char *slash;
	int n;

	out[0] = '\0';
	if (strncmp(url, "ipc://", 6) != 0)
		return;
	kasir_strlcpy(path, url + 6, sizeof(path));
	while (stat(path, &sb) < 0) {
		if (errno != EACCES || (slash = strrchr(path, '/')) == NULL ||
		    slash == path)
			return;
		*slash = '\0'; /* a directory on the way denies it */
	}
	if ((g = getgrgid(sb.st_gid)) != NULL)
		kasir_strlcpy(grp, g->gr_name, sizeof(grp));
	else
		snprintf(grp, sizeof(grp), "%lu", (unsigned long)sb.st_gid);
	/* a socket needs write, a directory search permission */
	/* (cut when too long: the socket and the group come first) */
	if (sb.st_mode & (S_ISDIR(sb.st_mode) ? S_IXGRP : S_IWGRP))
		n = snprintf(
		    out, len,
		    "%s is group %s, mode %04o: you need to be in group "
		    "%s",
		    path, grp, (unsigned)(sb.st_mode & 07777), grp);
	else
		n = snprintf(out, len,
		             "%s is group %s, mode %04o: no group has access; "
		             "the socket's permissions need fixing",
		             path, grp, (unsigned)(sb.st_mode & 07777));
	if (n < 0 || (size_t)n >= len)
		out[len - 1] = '\0';
}

bool
ctl_error_unknown_command(const struct ctl_error *err)
{
	return strcmp(err->code, ADMIN_E_UNKNOWN_COMMAND) == 0;
}

bool
ctl_error_database(const struct ctl_error *err)
{
	/* "db_unavailable": what kasir-notifier and kasir-reconciler said
	 * before issue 15; kasirctl may be newer than a daemon (a fleet of
	 * mixed versions), so the old spelling stays understood */
	return strcmp(err->code, ADMIN_E_DATABASE_UNAVAILABLE) == 0 ||
	       strcmp(err->code, "db_unavailable") == 0;
}

static cJSON *
build_request(const struct ctl *c, const char *cmd, const cJSON *args)
{
	cJSON *req = cJSON_CreateObject(), *a;

	if (req == NULL)
		return NULL;
	a = args ? cJSON_Duplicate(args, true) : cJSON_CreateObject();
	if (a == NULL ||
	    !cJSON_AddNumberToObject(req, "v", ADMIN_PROTO_VERSION) ||
	    !cJSON_AddStringToObject(req, "cmd", cmd)) {
		cJSON_Delete(a);
		cJSON_Delete(req);
		return NULL;
	}
	cJSON_AddItemToObject(req, "args", a);
	if (!cJSON_AddStringToObject(req, "actor", c->user) ||
	    !cJSON_AddStringToObject(req, "as_role",
	                             admin_role_name(c->role)) ||
	    (c->reason != NULL &&
	     !cJSON_AddStringToObject(req, "reason", c->reason)) ||
	    (c->incident[0] != '\0' &&
	     !cJSON_AddStringToObject(req, "incident", c->incident))) {
		cJSON_Delete(req);
		return NULL;
	}
	return req;
}

int
ctl_call(struct ctl *c, enum ctl_svc svc, const char *cmd, const cJSON *args,
         int64_t timeout_ms, cJSON **ret_result, struct ctl_error *err)
{
	const char *url = c->conf.socket[svc];
	cJSON *req, *reply = NULL, *v, *ok, *res;
	char msg[512];
	int r;

	if (url == NULL) {
		snprintf(msg, sizeof(msg),
		         "%s has no admin socket in %s (sockets.%s)",
		         ctl_svc_name(svc), c->conf_source, ctl_svc_key(svc));
		err_set(err, svc, NULL, "service_not_configured",
		        CTL_EXIT_USAGE, msg);
		return -ENOENT;
	}
	if ((req = build_request(c, cmd, args)) == NULL) {
		err_set(err, svc, url, "internal", CTL_EXIT_FAILED,
		        "out of memory");
		return -ENOMEM;
	}
	if (timeout_ms <= 0)
		timeout_ms = c->conf.timeout_ms;
	r = admin_call(url, req, (int)timeout_ms, &reply);
	cJSON_Delete(req);
	if (r == -EACCES || r == -EPERM) {
		char why[300];

		/* not "down": this user may not open the socket, and the
		 * daemon was never asked (an outside check, 2026-12-08: every
		 * daemon DOWN, "systemctl restart" as the fix) */
		access_why(url, why, sizeof(why));
		snprintf(msg, sizeof(msg),
		         "permission denied opening %s's admin socket %s as "
		         "user %s%s%s; %s was not asked, this says nothing "
		         "about whether it runs",
		         ctl_svc_name(svc), url, c->user, why[0] ? ": " : "",
		         why, ctl_svc_name(svc));
		err_set(err, svc, url, CTL_E_PERMISSION_DENIED, CTL_EXIT_FAILED,
		        msg);
		return r;
	}
	if (r < 0) {
		snprintf(msg, sizeof(msg), "%s is not answering on %s: %s",
		         ctl_svc_name(svc), url,
		         r == -ETIMEDOUT ? "no reply in time"
		                         : kasir_strerror(r));
		err_set(err, svc, url, "service_unavailable",
		        CTL_EXIT_UNAVAILABLE, msg);
		return r;
	}
	v = cJSON_GetObjectItemCaseSensitive(reply, "v");
	ok = cJSON_GetObjectItemCaseSensitive(reply, "ok");
	if (!cJSON_IsNumber(v) || v->valuedouble != ADMIN_PROTO_VERSION ||
	    !cJSON_IsBool(ok)) {
		snprintf(msg, sizeof(msg),
		         "%s answered on %s with an unsupported reply "
		         "(want {\"v\":%d,\"ok\":...})",
		         ctl_svc_name(svc), url, ADMIN_PROTO_VERSION);
		err_set(err, svc, url, "bad_reply", CTL_EXIT_FAILED, msg);
		cJSON_Delete(reply);
		return KASIR_EPROTO;
	}
	if (cJSON_IsFalse(ok)) {
		const cJSON *e =
		    cJSON_GetObjectItemCaseSensitive(reply, "error");
		const char *code = j_str(e, "code"), *m = j_str(e, "message");
		bool unavailable = strstr(code, "unavailable") != NULL;

		err_set(err, svc, url, code[0] ? code : "error",
		        unavailable ? CTL_EXIT_UNAVAILABLE : CTL_EXIT_FAILED,
		        m[0] ? m : code);
		cJSON_Delete(reply); /* code and m point into it: use err */
		return strcmp(err->code, ADMIN_E_ROLE_REQUIRED) == 0
		           ? KASIR_EPERM
		       : strstr(err->code, "not_found") != NULL
		           ? KASIR_ENOTFOUND
		           : KASIR_EREJECT;
	}
	res = cJSON_DetachItemFromObjectCaseSensitive(reply, "result");
	cJSON_Delete(reply);
	if (res == NULL && (res = cJSON_CreateObject()) == NULL) {
		err_set(err, svc, url, "internal", CTL_EXIT_FAILED,
		        "out of memory");
		return -ENOMEM;
	}
	if (!c->raw_replies)
		json_terminal_safe(res, !c->json); /* --json escapes C0 */
	*ret_result = res;
	return 0;
}

int
ctl_change(struct ctl *c, enum ctl_svc svc, const char *cmd, cJSON *args,
           int64_t timeout_ms, cJSON **ret_result)
{
	struct ctl_error err;
	cJSON *res = NULL;

	c->target_service = ctl_svc_name(svc);
	cJSON_Delete(c->audit_args);
	c->audit_args = args; /* the audit record owns it now */
	if (ctl_call(c, svc, cmd, args, timeout_ms, &res, &err) < 0)
		return out_fail(c, &err);
	*ret_result = res;
	return CTL_EXIT_OK;
}
