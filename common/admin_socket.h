/*
 * admin_socket.h - the operator's door into a daemon (used by kasirctl).
 *
 * nng req/rep on admin.socket (normally ipc:///run/kasir/<svc>.sock, file
 * mode admin.socket_mode so only the operators' group can connect).
 * Requests and replies are JSON objects:
 *   request: {"v":1, "cmd":"order.show", "args":{...},
 *             "reason":"...", "incident":"INC-...", "actor":"alice",
 *             "as_role":"support"}
 *   reply:   {"v":1, "ok":true, "result":{...}}
 *         or {"v":1, "ok":false, "error":{"code":"...", "message":"..."}}
 * The peer's identity is taken from the ipc socket (uid, gid via
 * NNG_OPT_IPC_PEER_UID/GID), never from the request: the user name and the
 * role (engineer / support / none, from the unix groups named in
 * admin.engineer_group / admin.support_group; root is engineer) are given
 * to the handler.  The optional "as_role" (engineer / support / none) can
 * only LOWER that role (kasirctl with KASIR_ROLE=support), never raise it;
 * any other value is refused ("bad_request").  Over tcp:// (tests only) the
 * actor in the request is used and the role is support unless the daemon is
 * configured otherwise. Requests are bounded to 64 KiB.  One worker thread
 * answers requests in order.
 *
 * Two rules live here and nowhere else, so that a new command cannot
 * forget them:
 *   - role "none" is refused ("role_required") whatever the command, even
 *     an unknown one, before the daemon's handler runs;
 *   - the daemon registers a command table (conf.commands: name, minimum
 *     role, handler, audited); any other name is answered
 *     "unknown_command" without calling a handler, and a caller below the
 *     command's minimum role is answered "role_required" (for an audited
 *     command that refusal is written to the daemon's audit table first,
 *     conf.db / conf.audit_stmt);
 *   - a changing command (needs_reason) without a reason is answered
 *     "reason_required", the refusal audited, before its handler runs.
 * The table is the dispatch: no daemon compares names. The built-in
 * "admin.commands" lists the table (name, min_role, audited, needs_reason)
 * to support and engineer, so tools and tests learn what a daemon answers
 * from the daemon itself.  conf.refused is told of every refusal made here
 * (the daemon logs them).  Finer checks (arguments, state) stay in the
 * handlers, which audit their refusals (admin_audit.h).
 *
 * Error codes: one vocabulary for every daemon (ADMIN_E_* below).  kasirctl
 * also accepts the older spellings "db_unavailable" and "bad_args" so that
 * a fleet with daemons of mixed versions stays readable.
 */
#ifndef KASIR_ADMIN_SOCKET_H
#define KASIR_ADMIN_SOCKET_H

#include <stdbool.h>

struct cJSON;
struct admin_socket;
struct kasir_db;
struct db_stmt;

#define ADMIN_PROTO_VERSION 1

enum admin_role {
	ADMIN_ROLE_NONE = 0,
	ADMIN_ROLE_SUPPORT,
	ADMIN_ROLE_ENGINEER
};
/* "engineer" / "support" / "none" (also for an out-of-range value). */
const char *admin_role_name(enum admin_role r);
/* The reverse: 0 and *ret set, or -EINVAL for any other text. */
int admin_role_parse(const char *s, enum admin_role *ret);

/* The error vocabulary of every daemon's admin replies. */
#define ADMIN_E_DATABASE_UNAVAILABLE "database_unavailable"
#define ADMIN_E_INVALID_ARGS         "invalid_args"
#define ADMIN_E_ROLE_REQUIRED        "role_required"
#define ADMIN_E_REASON_REQUIRED      "reason_required"
#define ADMIN_E_NOT_FOUND            "not_found"
#define ADMIN_E_ORDER_NOT_FOUND      "order_not_found"
#define ADMIN_E_UNKNOWN_COMMAND      "unknown_command"
#define ADMIN_E_CONFLICT             "conflict"
#define ADMIN_E_TOO_BIG              "too_big"
#define ADMIN_E_INTERNAL             "internal"

struct admin_peer {
	char user[64]; /* unix user name (or uid as text) */
	enum admin_role role;
};

struct admin_request {
	const char *cmd;          /* e.g. "notify.requeue" */
	const struct cJSON *args; /* object; never NULL (empty object) */
	const char *reason;       /* NULL if absent */
	const char *incident;     /* NULL if absent */
	struct admin_peer peer;
	/* audit rows written for this request (admin_audit.h counts them;
	 * NULL: not counted) */
	unsigned *audit_rows;
};

/*
 * Handler: on success returns 0 and sets *ret_result (an object the socket
 * takes over and frees).  On failure returns a negative kasir error and may
 * fill err_code (stable code like "order_not_found", "role_required") and
 * err_msg; the socket sends them in the error reply.
 */
typedef int (*admin_handler_fn)(void *arg, const struct admin_request *req,
                                struct cJSON **ret_result, char *err_code,
                                size_t code_len, char *err_msg, size_t msg_len);

/*
 * One row of a daemon's command table (designated initializers; the table
 * ends with an entry whose name is NULL).  min_role is SUPPORT or
 * ENGINEER; audited says the handler writes an audit row (admin_audit.h)
 * and that a refusal at the role gate is audited too; so is a failure the
 * handler returns without having audited it (invalid arguments, an order
 * not found: the attempt is recorded).
 */
struct admin_command {
	const char *name;
	enum admin_role min_role;
	admin_handler_fn handler;
	bool audited;
	/* A changing command: without a reason it is refused here,
	 * "reason_required", and the refusal audited, before the handler
	 * runs (needs audited). */
	bool needs_reason;
	/* Its answer carries customer data (name, email, phone): the read
	 * is audited ("ok", the args say what was asked) before the handler
	 * runs, and refused when it cannot be, so that customer data never
	 * leaves a daemon unrecorded, whoever asks (kasirctl records it in
	 * ops.audit too). */
	bool personal;
};

/*
 * Told of a request refused before the handler ran ("role_required" for
 * role none or below the command's minimum role, "unknown_command"), with
 * the handler's arg, so the daemon logs it (every daemon passes
 * admin_log_refused).  req->cmd is 1..64 of
 * [A-Za-z0-9._-] (anything else is "bad_request" earlier).
 */
typedef void (*admin_refused_fn)(void *arg, const struct admin_request *req,
                                 const char *code);

struct admin_socket_conf {
	const char *url;            /* ipc:///... or tcp://127.0.0.1:port */
	const char *mode;           /* "0660"; ipc only */
	const char *engineer_group; /* unix group names; may be NULL */
	const char *support_group;
	/* The daemon's command table, ended by a NULL name; must outlive
	 * the socket (a static table).  Required. */
	const struct admin_command *commands;
	/* The daemon's admin connection (used only on the socket's thread)
	 * and its audit INSERT (admin_audit.h).  With both set, the role-gate
	 * refusal of an audited command is audited (order_id from
	 * args.order_id when valid) and, unless db_lazy, the connection is
	 * ensured before every command (else "database_unavailable").
	 * db_lazy: the handlers connect when they need to (kasir-ingest's
	 * status answers with the database down).  May be NULL (tests). */
	struct kasir_db *db;
	const struct db_stmt *audit_stmt;
	bool db_lazy;
	admin_refused_fn refused; /* may be NULL; admin_log_refused logs */
};

/* For a handler whose reply is a query's JSON: out NULL means the query
 * failed (the database went away under a connection that looked alive):
 * "database_unavailable", KASIR_EDB; else *ret = out and 0. */
int admin_result(struct cJSON *out, struct cJSON **ret, char *code,
                 size_t code_len, char *msg, size_t msg_len);

/* The usual conf.refused: logs "admin: CMD by USER (role R) refused:
 * CODE, ignoring" at notice level (arg unused). */
void admin_log_refused(void *arg, const struct admin_request *req,
                       const char *code);

/* arg is handed to every handler and hook. */
int admin_socket_start(const struct admin_socket_conf *conf, void *arg,
                       struct admin_socket **ret);
void admin_socket_stop(struct admin_socket *s);

/* Client side (kasirctl): sends request, waits up to timeout_ms for the
 * reply.  On success *ret_reply (caller cJSON_Delete()s) is the whole reply
 * object.  -ECONNREFUSED / -ETIMEDOUT when the daemon does not answer. */
int admin_call(const char *url, const struct cJSON *request, int timeout_ms,
               struct cJSON **ret_reply);

#endif
