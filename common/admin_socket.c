/*
 * admin_socket.c - nng req/rep admin door of a daemon, and its client.
 *
 * One worker thread receives a request, identifies the peer from the ipc
 * socket credentials (never from the request), checks the protocol
 * version, calls the handler and sends the reply, in order.  nng drops
 * anything above ADMIN_SOCKET_RECV_MAX; requests between ADMIN_REQUEST_MAX
 * and that are answered "too_big" so the operator learns why.
 */
#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "admin_audit.h"
#include "admin_socket.h"
#include "db.h"
#include "liveness.h"
#include "err.h"
#include "log.h"
#include "sock_close.h"
#include "util.h"

#define ADMIN_REQUEST_MAX     (64 * 1024)
#define ADMIN_SOCKET_RECV_MAX (2 * ADMIN_REQUEST_MAX)
#define ADMIN_REPLY_MAX       (16 * 1024 * 1024) /* client side */
#define ADMIN_ERRCODE_MAX     64
#define ADMIN_ERRMSG_MAX      512
#define ADMIN_GROUPS_MAX      256
#define ADMIN_PWBUF           16384
#define ADMIN_CMD_CHARS                                                        \
	"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"

struct admin_socket {
	nng_socket sock;
	nng_listener listener;
	nng_aio *aio; /* the worker's; admin_socket_stop() stops it */
	pthread_t thread;
	bool thread_started;
	bool is_ipc;
	char *engineer_group;
	char *support_group;
	const struct admin_command *commands; /* the daemon's table */
	struct kasir_db *db;                  /* may be NULL */
	const struct db_stmt *audit_stmt;     /* may be NULL */
	bool db_lazy;
	admin_refused_fn refused; /* may be NULL */
	void *arg;
};

static int
nng_to_errno(int rv)
{
	switch (rv) {
	case 0:
		return 0;
	case NNG_ENOMEM:
		return -ENOMEM;
	case NNG_EINVAL:
	case NNG_EADDRINVAL:
		return -EINVAL;
	case NNG_ETIMEDOUT:
		return -ETIMEDOUT;
	case NNG_ECONNREFUSED:
	case NNG_ENOENT:
		return -ECONNREFUSED;
	case NNG_EADDRINUSE:
		return -EADDRINUSE;
	case NNG_EPERM:
		return -EACCES;
	case NNG_ECLOSED:
		return -ESHUTDOWN;
	case NNG_EMSGSIZE:
		return KASIR_ETOOBIG;
	default:
		return -EIO;
	}
}

/* True when user (with primary gid) belongs to group gname. */
static bool
in_group(const char *user, gid_t primary, gid_t peer_gid, const char *gname)
{
	struct group gr, *grp = NULL;
	char buf[ADMIN_PWBUF];
	gid_t groups[ADMIN_GROUPS_MAX];
	int ngroups = ADMIN_GROUPS_MAX;

	if (gname == NULL || gname[0] == '\0')
		return false;
	if (getgrnam_r(gname, &gr, buf, sizeof(buf), &grp) != 0 || grp == NULL)
		return false;
	if (grp->gr_gid == primary || grp->gr_gid == peer_gid)
		return true;
	if (user == NULL)
		return false;
	if (getgrouplist(user, primary, groups, &ngroups) < 0)
		ngroups = ADMIN_GROUPS_MAX; /* truncated: check what we got */
	for (int i = 0; i < ngroups; i++)
		if (groups[i] == grp->gr_gid)
			return true;
	return false;
}

/* Fills peer from the ipc credentials of the pipe. */
static int
peer_from_pipe(const struct admin_socket *s, nng_pipe pipe,
               struct admin_peer *peer)
{
	uint64_t uid64, gid64;
	struct passwd pw, *pwp = NULL;
	char buf[ADMIN_PWBUF];
	uid_t uid;
	gid_t gid;

	if (nng_pipe_get_uint64(pipe, NNG_OPT_IPC_PEER_UID, &uid64) != 0 ||
	    nng_pipe_get_uint64(pipe, NNG_OPT_IPC_PEER_GID, &gid64) != 0)
		return -EPERM;
	uid = (uid_t)uid64;
	gid = (gid_t)gid64;
	memset(peer, 0, sizeof(*peer));
	peer->role = ADMIN_ROLE_NONE;
	if (getpwuid_r(uid, &pw, buf, sizeof(buf), &pwp) == 0 && pwp != NULL)
		kasir_strlcpy(peer->user, pwp->pw_name, sizeof(peer->user));
	else
		snprintf(peer->user, sizeof(peer->user), "%lu",
		         (unsigned long)uid);
	if (uid == 0) {
		peer->role = ADMIN_ROLE_ENGINEER;
		return 0;
	}
	if (in_group(pwp ? pwp->pw_name : NULL, pwp ? pwp->pw_gid : gid, gid,
	             s->engineer_group))
		peer->role = ADMIN_ROLE_ENGINEER;
	else if (in_group(pwp ? pwp->pw_name : NULL, pwp ? pwp->pw_gid : gid,
	                  gid, s->support_group))
		peer->role = ADMIN_ROLE_SUPPORT;
	return 0;
}

static const char *
default_code(int rc)
{
	switch (rc) {
	case KASIR_ENOTFOUND:
		return ADMIN_E_NOT_FOUND;
	case KASIR_EPERM:
		return ADMIN_E_ROLE_REQUIRED;
	case KASIR_ECONFLICT:
		return ADMIN_E_CONFLICT;
	case KASIR_EREJECT:
	case -EINVAL:
		return ADMIN_E_INVALID_ARGS;
	case KASIR_EDB:
	case KASIR_EDBUNKNOWN:
		return ADMIN_E_DATABASE_UNAVAILABLE;
	case KASIR_ETOOBIG:
		return ADMIN_E_TOO_BIG;
	default:
		return ADMIN_E_INTERNAL;
	}
}

/* Builds {"v":1,"ok":false,"error":{...}}; NULL on allocation failure. */
static cJSON *
error_reply(const char *code, const char *msg)
{
	cJSON *r = cJSON_CreateObject(), *e;

	if (r == NULL)
		return NULL;
	if (cJSON_AddNumberToObject(r, "v", ADMIN_PROTO_VERSION) == NULL ||
	    cJSON_AddFalseToObject(r, "ok") == NULL ||
	    (e = cJSON_AddObjectToObject(r, "error")) == NULL ||
	    cJSON_AddStringToObject(e, "code", code) == NULL ||
	    cJSON_AddStringToObject(e, "message", msg) == NULL) {
		cJSON_Delete(r);
		return NULL;
	}
	return r;
}

const char *
admin_role_name(enum admin_role r)
{
	switch (r) {
	case ADMIN_ROLE_ENGINEER:
		return "engineer";
	case ADMIN_ROLE_SUPPORT:
		return "support";
	default:
		return "none";
	}
}

int
admin_role_parse(const char *s, enum admin_role *ret)
{
	if (strcmp(s, "engineer") == 0)
		*ret = ADMIN_ROLE_ENGINEER;
	else if (strcmp(s, "support") == 0)
		*ret = ADMIN_ROLE_SUPPORT;
	else if (strcmp(s, "none") == 0)
		*ret = ADMIN_ROLE_NONE;
	else
		return -EINVAL;
	return 0;
}

/* The daemon's table entry for cmd, or NULL. */
static const struct admin_command *
command_find(const struct admin_socket *s, const char *cmd)
{
	for (const struct admin_command *c = s->commands; c->name != NULL; c++)
		if (strcmp(c->name, cmd) == 0)
			return c;
	return NULL;
}

/* The built-in "admin.commands": {"commands":[names], "table":[{name,
 * min_role, audited, needs_reason, personal}]}; NULL on ENOMEM. */
static cJSON *
commands_result(const struct admin_socket *s)
{
	cJSON *r = cJSON_CreateObject(), *list, *table;

	if (r == NULL ||
	    (list = cJSON_AddArrayToObject(r, "commands")) == NULL ||
	    (table = cJSON_AddArrayToObject(r, "table")) == NULL) {
		cJSON_Delete(r);
		return NULL;
	}
	for (const struct admin_command *c = s->commands; c->name != NULL;
	     c++) {
		cJSON *name = cJSON_CreateString(c->name);
		cJSON *row = cJSON_CreateObject();

		if (name == NULL || !cJSON_AddItemToArray(list, name)) {
			cJSON_Delete(name);
			cJSON_Delete(row);
			cJSON_Delete(r);
			return NULL;
		}
		if (row == NULL || !cJSON_AddItemToArray(table, row) ||
		    cJSON_AddStringToObject(row, "name", c->name) == NULL ||
		    cJSON_AddStringToObject(row, "min_role",
		                            admin_role_name(c->min_role)) ==
		        NULL ||
		    cJSON_AddBoolToObject(row, "audited", c->audited) == NULL ||
		    cJSON_AddBoolToObject(row, "needs_reason",
		                          c->needs_reason) == NULL ||
		    cJSON_AddBoolToObject(row, "personal", c->personal) ==
		        NULL) {
			cJSON_Delete(r);
			return NULL;
		}
	}
	return r;
}

int
admin_result(cJSON *out, cJSON **ret, char *code, size_t code_len, char *msg,
             size_t msg_len)
{
	if (out == NULL) {
		snprintf(code, code_len, "%s", ADMIN_E_DATABASE_UNAVAILABLE);
		snprintf(msg, msg_len, "database query failed");
		return KASIR_EDB;
	}
	*ret = out;
	return 0;
}

void
admin_log_refused(void *arg, const struct admin_request *req, const char *code)
{
	(void)arg;
	log_notice("admin: %s by %s (role %s) refused: %s, ignoring", req->cmd,
	           req->peer.user, admin_role_name(req->peer.role), code);
}

/* The order an audit row names: args.order_id when it is a valid id. */
static const char *
args_order_id(const struct admin_request *req)
{
	const cJSON *o =
	    cJSON_GetObjectItemCaseSensitive(req->args, "order_id");

	return cJSON_IsString(o) && order_id_valid(o->valuestring, 50)
	           ? o->valuestring
	           : NULL;
}

/* Audits a refusal made here of an audited command (error: the row's
 * error text), naming the order when the arguments name a valid one. */
static void
audit_refusal(struct admin_socket *s, const struct admin_request *req,
              const char *error)
{
	const char *order_id = args_order_id(req);

	if (s->db == NULL || s->audit_stmt == NULL || db_ensure(s->db) < 0)
		return;
	admin_audit_refusal(s->db, s->audit_stmt, req, order_id, error);
}

/* The arguments of a personal read as its audit row keeps them: what a
 * search named (an e-mail, a phone, a name) only by its first two
 * characters, since audit.list shows the rows to every support user (an
 * attack, 2026-12-07: orders.find's e-mail and phone read back there).
 * NULL on ENOMEM. */
static cJSON *
args_masked(const cJSON *args)
{
	cJSON *m = cJSON_Duplicate(args, true), *v;

	if (m == NULL)
		return NULL;
	cJSON_ArrayForEach(v, m)
	{
		char buf[48];

		if (!cJSON_IsString(v) || v->string == NULL ||
		    (strstr(v->string, "email") == NULL &&
		     strstr(v->string, "phone") == NULL &&
		     strstr(v->string, "name") == NULL))
			continue;
		snprintf(buf, sizeof(buf), "%.2s... (%zu)", v->valuestring,
		         strlen(v->valuestring));
		if (cJSON_SetValuestring(v, buf) == NULL) {
			cJSON_Delete(m);
			return NULL;
		}
	}
	return m;
}

/* The read of a personal command, audited in a transaction of its own
 * before the answer is made: 0, or <0 when it could not be. */
static int
audit_read(struct admin_socket *s, const struct admin_request *req)
{
	struct admin_request masked = *req;
	cJSON *args = NULL;
	const char *order_id = args_order_id(req);
	int rc;

	if (s->db == NULL || s->audit_stmt == NULL)
		return 0; /* a test's socket without a database */
	if ((args = args_masked(req->args)) == NULL)
		return -ENOMEM;
	masked.args = args;
	if ((rc = db_ensure(s->db)) < 0 || (rc = db_begin(s->db)) < 0)
		goto out;
	if ((rc = admin_audit(s->db, s->audit_stmt, &masked, order_id, NULL,
	                      NULL, "ok", NULL)) < 0 ||
	    (rc = db_commit(s->db)) < 0)
		db_rollback(s->db);
out:
	cJSON_Delete(args);
	return rc < 0 ? rc : 0;
}

/* Runs the command found in the table: the minimum role, the reason of
 * a changing command, the admin connection, the audit of a personal
 * read, then the handler, and the audit of a failure an audited
 * command's handler did not record itself. */
static int
dispatch(struct admin_socket *s, const struct admin_command *c,
         const struct admin_request *req, cJSON **result, char *code,
         size_t code_len, char *emsg, size_t msg_len)
{
	int rc;

	if (req->peer.role < c->min_role) {
		char why[128];

		snprintf(why, sizeof(why), "%s needs the %s role", c->name,
		         admin_role_name(c->min_role));
		if (c->audited) {
			char e[192];

			snprintf(e, sizeof(e), "%s: %s", ADMIN_E_ROLE_REQUIRED,
			         why);
			audit_refusal(s, req, e);
		}
		if (s->refused != NULL)
			s->refused(s->arg, req, ADMIN_E_ROLE_REQUIRED);
		snprintf(code, code_len, "%s", ADMIN_E_ROLE_REQUIRED);
		snprintf(emsg, msg_len, "%s", why);
		return KASIR_EPERM;
	}
	if (c->needs_reason &&
	    (req->reason == NULL || req->reason[0] == '\0')) {
		const char *why = "a changing command needs a reason";

		audit_refusal(s, req, why);
		if (s->refused != NULL)
			s->refused(s->arg, req, ADMIN_E_REASON_REQUIRED);
		snprintf(code, code_len, "%s", ADMIN_E_REASON_REQUIRED);
		snprintf(emsg, msg_len, "%s", why);
		return KASIR_EPERM;
	}
	if (s->db != NULL && !s->db_lazy && db_ensure(s->db) < 0) {
		snprintf(code, code_len, "%s", ADMIN_E_DATABASE_UNAVAILABLE);
		snprintf(emsg, msg_len, "the daemon's database is unreachable");
		return KASIR_EDB;
	}
	if (c->personal && audit_read(s, req) < 0) {
		log_warning("admin: %s by %s refused: its read of customer "
		            "data could not be audited: %s",
		            req->cmd, req->peer.user, db_last_error(s->db));
		snprintf(code, code_len, "%s", ADMIN_E_DATABASE_UNAVAILABLE);
		snprintf(emsg, msg_len,
		         "the read could not be audited (database)");
		return KASIR_EDB;
	}
	rc = c->handler(s->arg, req, result, code, code_len, emsg, msg_len);
	if (rc < 0 && c->audited && req->audit_rows != NULL &&
	    *req->audit_rows == 0 && rc != KASIR_EDB) {
		/* "invalid_args", "order_not_found"...: the attempt of a
		 * changing command is recorded too (an outside attack,
		 * 2026-12-07: a refund of -5 left no row) */
		char e[ADMIN_ERRCODE_MAX + ADMIN_ERRMSG_MAX + 4];

		snprintf(e, sizeof(e), "%s: %s", code[0] ? code : "failed",
		         emsg);
		audit_refusal(s, req, e);
	}
	return rc;
}

static const char *
opt_string(const cJSON *req, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(req, key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Answers one request; returns the reply object (NULL only on ENOMEM). */
static cJSON *
handle(struct admin_socket *s, nng_msg *msg)
{
	char code[ADMIN_ERRCODE_MAX] = "", emsg[ADMIN_ERRMSG_MAX] = "";
	struct admin_request req;
	unsigned audit_rows = 0;
	const struct admin_command *c;
	const cJSON *v, *cmd, *args;
	cJSON *root = NULL, *empty = NULL, *result = NULL, *reply;
	size_t len = nng_msg_len(msg);
	int rc;

	memset(&req, 0, sizeof(req));
	req.audit_rows = &audit_rows;
	if (len > ADMIN_REQUEST_MAX)
		return error_reply("too_big", "request exceeds 64 KiB");
	if (s->is_ipc) {
		if (peer_from_pipe(s, nng_msg_get_pipe(msg), &req.peer) < 0)
			return error_reply("no_credentials",
			                   "peer credentials unavailable");
	}
	root = cJSON_ParseWithLength(nng_msg_body(msg), len);
	if (!cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return error_reply("bad_request",
		                   "request is not a JSON object");
	}
	v = cJSON_GetObjectItemCaseSensitive(root, "v");
	if (!cJSON_IsNumber(v) || v->valuedouble != ADMIN_PROTO_VERSION) {
		cJSON_Delete(root);
		return error_reply("bad_version",
		                   "unsupported admin protocol version");
	}
	cmd = cJSON_GetObjectItemCaseSensitive(root, "cmd");
	if (!cJSON_IsString(cmd) || cmd->valuestring[0] == '\0' ||
	    strlen(cmd->valuestring) > 64 ||
	    strspn(cmd->valuestring, ADMIN_CMD_CHARS) !=
	        strlen(cmd->valuestring)) {
		cJSON_Delete(root);
		return error_reply("bad_request",
		                   "cmd: 1..64 of A-Z a-z 0-9 . _ -");
	}
	args = cJSON_GetObjectItemCaseSensitive(root, "args");
	if (args != NULL && !cJSON_IsObject(args)) {
		cJSON_Delete(root);
		return error_reply("bad_request", "args must be an object");
	}
	if (args == NULL) {
		empty = cJSON_CreateObject();
		if (empty == NULL) {
			cJSON_Delete(root);
			return NULL;
		}
		args = empty;
	}
	req.cmd = cmd->valuestring;
	req.args = args;
	req.reason = opt_string(root, "reason");
	req.incident = opt_string(root, "incident");
	if (!s->is_ipc) {
		/* tcp: tests only; trust the stated actor, role support */
		const char *actor = opt_string(root, "actor");
		kasir_strlcpy(req.peer.user, actor ? actor : "unknown",
		              sizeof(req.peer.user));
		req.peer.role = ADMIN_ROLE_SUPPORT;
	}
	/* "as_role" lowers the role (kasirctl with KASIR_ROLE=support);
	 * it can never raise it */
	{
		const cJSON *as =
		    cJSON_GetObjectItemCaseSensitive(root, "as_role");
		enum admin_role want;

		if (as != NULL) {
			if (!cJSON_IsString(as) ||
			    admin_role_parse(as->valuestring, &want) < 0) {
				cJSON_Delete(empty);
				cJSON_Delete(root);
				return error_reply("bad_request",
				                   "as_role: engineer, support "
				                   "or none");
			}
			if (want < req.peer.role)
				req.peer.role = want;
		}
	}

	/* The one role gate of every daemon: role none reads nothing, not
	 * even which commands exist. */
	if (req.peer.role == ADMIN_ROLE_NONE) {
		if (s->refused != NULL)
			s->refused(s->arg, &req, "role_required");
		cJSON_Delete(empty);
		cJSON_Delete(root);
		return error_reply("role_required",
		                   "every admin command needs the support or "
		                   "engineer role");
	}
	if (strcmp(req.cmd, "admin.commands") == 0) {
		result = commands_result(s);
		rc = result != NULL ? 0 : -ENOMEM;
	} else if ((c = command_find(s, req.cmd)) == NULL) {
		if (s->refused != NULL)
			s->refused(s->arg, &req, ADMIN_E_UNKNOWN_COMMAND);
		snprintf(code, sizeof(code), ADMIN_E_UNKNOWN_COMMAND);
		snprintf(emsg, sizeof(emsg),
		         "no such command (admin.commands lists them)");
		rc = -ENOTSUP;
	} else {
		rc = dispatch(s, c, &req, &result, code, sizeof(code), emsg,
		              sizeof(emsg));
	}
	if (rc < 0) {
		cJSON_Delete(result);
		reply = error_reply(code[0] ? code : default_code(rc),
		                    emsg[0] ? emsg : kasir_strerror(rc));
	} else {
		reply = cJSON_CreateObject();
		if (reply != NULL &&
		    (cJSON_AddNumberToObject(reply, "v", ADMIN_PROTO_VERSION) ==
		         NULL ||
		     cJSON_AddTrueToObject(reply, "ok") == NULL)) {
			cJSON_Delete(reply);
			reply = NULL;
		}
		if (reply != NULL) {
			if (result == NULL)
				result = cJSON_CreateObject();
			/* every daemon's status names its loops (liveness.h) */
			if (result != NULL && strcmp(req.cmd, "status") == 0)
				(void)live_to_json(result);
			if (result != NULL)
				cJSON_AddItemToObject(reply, "result", result);
			result = NULL;
		}
		cJSON_Delete(result);
	}
	cJSON_Delete(empty);
	cJSON_Delete(root);
	return reply;
}

static void *
worker(void *arg)
{
	struct admin_socket *s = arg;

	for (;;) {
		nng_msg *msg = NULL, *out = NULL;
		cJSON *reply;
		char *text;
		int rv;

		nng_recv_aio(s->sock, s->aio);
		nng_aio_wait(s->aio);
		rv = nng_aio_result(s->aio);
		if (rv == NNG_ECANCELED || rv == NNG_ECLOSED)
			break;
		if (rv != 0)
			continue;
		msg = nng_aio_get_msg(s->aio);
		nng_aio_set_msg(s->aio, NULL);
		reply = handle(s, msg);
		nng_msg_free(msg);
		if (reply == NULL)
			reply = error_reply("internal", "out of memory");
		text = reply ? cJSON_PrintUnformatted(reply) : NULL;
		cJSON_Delete(reply);
		if (text == NULL)
			continue; /* the client times out */
		if (nng_msg_alloc(&out, 0) == 0 &&
		    nng_msg_append(out, text, strlen(text)) == 0) {
			nng_aio_set_msg(s->aio, out);
			nng_send_aio(s->sock, s->aio);
			nng_aio_wait(s->aio);
			if (nng_aio_result(s->aio) != 0)
				nng_msg_free(out); /* still ours */
			nng_aio_set_msg(s->aio, NULL);
		} else if (out != NULL) {
			nng_msg_free(out);
		}
		cJSON_free(text);
	}
	return NULL;
}

/* Parses an octal mode "0660". */
static int
parse_mode(const char *s, int *ret)
{
	char *end;
	long v;

	if (s == NULL) {
		*ret = 0660;
		return 0;
	}
	errno = 0;
	v = strtol(s, &end, 8);
	if (errno != 0 || end == s || *end != '\0' || v < 0 || v > 0777)
		return -EINVAL;
	*ret = (int)v;
	return 0;
}

/*
 * Removes the ipc socket file of url when nobody listens on it (a daemon
 * that was killed leaves it behind).  The probe is an nng dial: a raw
 * connect() that closes without the SP handshake was seen to stall the
 * live listener's next connection for seconds.
 */
static int
remove_stale_socket(const char *url)
{
	const char *path = url + strlen("ipc://");
	struct stat sb;
	nng_socket probe;
	int rv, rc = 0;

	if (lstat(path, &sb) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(sb.st_mode))
		return -EEXIST;
	if ((rv = nng_req0_open(&probe)) != 0)
		return nng_to_errno(rv);
	rv = nng_dial(probe, url, NULL, 0);
	if (rv == 0)
		rc = -EADDRINUSE; /* somebody is serving it */
	else if (rv == NNG_ECONNREFUSED && unlink(path) < 0 && errno != ENOENT)
		rc = -errno;
	nng_close(probe);
	return rc;
}

int
admin_socket_start(const struct admin_socket_conf *conf, void *arg,
                   struct admin_socket **ret)
{
	struct admin_socket *s;
	int rv, rc, mode = 0;

	if (conf == NULL || conf->url == NULL || conf->commands == NULL ||
	    ret == NULL)
		return -EINVAL;
	for (const struct admin_command *c = conf->commands; c->name != NULL;
	     c++)
		if (c->handler == NULL || c->min_role < ADMIN_ROLE_SUPPORT ||
		    (c->needs_reason && !c->audited))
			return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->commands = conf->commands;
	s->db = conf->db;
	s->audit_stmt = conf->audit_stmt;
	s->db_lazy = conf->db_lazy;
	s->refused = conf->refused;
	s->arg = arg;
	s->is_ipc = strncmp(conf->url, "ipc://", 6) == 0;
	if (conf->engineer_group != NULL &&
	    (s->engineer_group = strdup(conf->engineer_group)) == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	if (conf->support_group != NULL &&
	    (s->support_group = strdup(conf->support_group)) == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	if (s->is_ipc) {
		if ((rc = parse_mode(conf->mode, &mode)) < 0)
			goto fail;
		if ((rc = remove_stale_socket(conf->url)) < 0)
			goto fail;
	}
	if ((rv = nng_aio_alloc(&s->aio, NULL, NULL)) != 0 ||
	    (rv = nng_rep0_open(&s->sock)) != 0) {
		rc = nng_to_errno(rv);
		goto fail;
	}
	if ((rv = nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ,
	                              ADMIN_SOCKET_RECV_MAX)) != 0 ||
	    (rv = nng_listener_create(&s->listener, s->sock, conf->url)) != 0 ||
	    (s->is_ipc &&
	     (rv = nng_listener_set_int(s->listener, NNG_OPT_IPC_PERMISSIONS,
	                                mode)) != 0) ||
	    (rv = nng_listener_start(s->listener, 0)) != 0) {
		rc = nng_to_errno(rv);
		nng_close(s->sock);
		goto fail;
	}
	if ((rv = pthread_create(&s->thread, NULL, worker, s)) != 0) {
		rc = -rv;
		nng_close(s->sock);
		goto fail;
	}
	s->thread_started = true;
	*ret = s;
	return 0;
fail:
	nng_aio_free(s->aio); /* NULL is fine */
	free(s->engineer_group);
	free(s->support_group);
	free(s);
	return rc;
}

void
admin_socket_stop(struct admin_socket *s)
{
	if (s == NULL)
		return;
	/* Never close the socket under the worker (libnng 1.5.2 may then
	 * lock the socket's destroyed mutex from its timer thread: SIGABRT,
	 * see stream_aio_recvmsg() in common/stream/transport.c).  Stopping
	 * the aio ends the pending receive or send with NNG_ECANCELED and
	 * fails any later one; close after the join and nng_aio_free(). */
	nng_aio_stop(s->aio);
	if (s->thread_started)
		pthread_join(s->thread, NULL);
	nng_aio_free(s->aio);
	sock_close_bounded(s->sock, NULL, "admin");
	free(s->engineer_group);
	free(s->support_group);
	free(s);
}

int
admin_call(const char *url, const cJSON *request, int timeout_ms,
           cJSON **ret_reply)
{
	nng_socket sock;
	nng_msg *msg = NULL;
	char *text;
	cJSON *reply;
	int rv, rc;

	if (url == NULL || request == NULL || ret_reply == NULL)
		return -EINVAL;
	if (timeout_ms <= 0)
		timeout_ms = 10000;
	text = cJSON_PrintUnformatted(request);
	if (text == NULL)
		return -ENOMEM;
	if ((rv = nng_req0_open(&sock)) != 0) {
		cJSON_free(text);
		return nng_to_errno(rv);
	}
	if ((rv = nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, timeout_ms)) !=
	        0 ||
	    (rv = nng_socket_set_ms(sock, NNG_OPT_SENDTIMEO, timeout_ms)) !=
	        0 ||
	    (rv = nng_socket_set_size(sock, NNG_OPT_RECVMAXSZ,
	                              ADMIN_REPLY_MAX)) != 0 ||
	    /* no silent re-send: an admin action must not run twice */
	    (rv = nng_socket_set_ms(sock, NNG_OPT_REQ_RESENDTIME,
	                            NNG_DURATION_INFINITE)) != 0 ||
	    (rv = nng_dial(sock, url, NULL, 0)) != 0 ||
	    (rv = nng_send(sock, text, strlen(text), 0)) != 0 ||
	    (rv = nng_recvmsg(sock, &msg, 0)) != 0) {
		rc = nng_to_errno(rv);
		goto out;
	}
	reply = cJSON_ParseWithLength(nng_msg_body(msg), nng_msg_len(msg));
	nng_msg_free(msg);
	if (!cJSON_IsObject(reply)) {
		cJSON_Delete(reply);
		rc = KASIR_EPROTO;
		goto out;
	}
	*ret_reply = reply;
	rc = 0;
out:
	cJSON_free(text);
	nng_close(sock);
	return rc;
}
