/*
 * admin_audit.h - the one way a daemon writes an admin audit row.
 *
 * Every daemon's audit statement takes its parameters in this order:
 *   $1 actor, $2 role, $3 command, $4 args (JSON text), $5 reason,
 *   $6 incident, $7 before (JSON), $8 after (JSON), $9 result ("ok",
 *   "refused", ...), $10 error, and $11 order_id when the statement has
 *   eleven parameters.
 * admin_audit() runs inside the caller's open transaction, so the row
 * commits or rolls back with the action it describes (the handler calls it
 * with its own db handle before db_commit()).  admin_audit_refusal() writes
 * a refusal in a transaction of its own (nothing else to commit).
 */
#ifndef KASIR_ADMIN_AUDIT_H
#define KASIR_ADMIN_AUDIT_H

#include <stddef.h>

#include "admin_socket.h"
#include "db_json.h"

struct cJSON;
struct kasir_db;
struct db_stmt;

/* before/after borrowed, may be NULL.  0 or a negative kasir error. */
int admin_audit(struct kasir_db *db, const struct db_stmt *st,
                const struct admin_request *req, const char *order_id,
                const struct cJSON *before, const struct cJSON *after,
                const char *result, const char *error);

/* The same, for a statement that RETURNs the row's id (copied to ret_id,
 * which may be NULL): the action can then name its audit row. */
int admin_audit_id(struct kasir_db *db, const struct db_stmt *st,
                   const struct admin_request *req, const char *order_id,
                   const struct cJSON *before, const struct cJSON *after,
                   const char *result, const char *error, char *ret_id,
                   size_t id_len);

/* Rolls back whatever is open, then audits result "refused" with error
 * why in its own transaction; failures are logged, not returned. */
void admin_audit_refusal(struct kasir_db *db, const struct db_stmt *st,
                         const struct admin_request *req, const char *order_id,
                         const char *why);

/*
 * "audit.list" of every daemon: the newest audit rows first, bounded.
 * args: {order_id?: string, since?: timestamp text, incident?: text,
 * limit?: 1..500 (default 100), before_id?: id (only rows older than it:
 * the next page)}.  st is the daemon's statement over its audit_log view
 * (ADMIN_AUDIT_LIST_SQL, ADMIN_AUDIT_LIST_NPARAMS parameters): $1 order_id
 * or NULL, $2 since (timestamptz) or NULL, $3 limit, $4 incident or NULL,
 * $5 before_id or NULL; it
 * returns the common column names (id, at, actor, role, command, args,
 * reason, incident, order_id, before, after, result, error).  Replies
 * {"audit":[rows]}; a handler of the command table may call it directly.
 */
/* clang-format off */
#define ADMIN_AUDIT_LIST_SQL(schema)                                           \
	"SELECT id, " TS("at") " AS at, actor, role, command, args, reason,"   \
	" incident, order_id, before, after, result, error"                    \
	" FROM " schema ".audit_log"                                           \
	" WHERE ($1::text IS NULL OR order_id = $1::text)"                     \
	" AND ($2::timestamptz IS NULL OR at >= $2::timestamptz)"              \
	" AND ($4::text IS NULL OR incident = $4::text)"                       \
	" AND ($5::bigint IS NULL OR id < $5::bigint)"                         \
	" ORDER BY id DESC LIMIT $3::int"
/* clang-format on */
#define ADMIN_AUDIT_LIST_NPARAMS 5
#define ADMIN_AUDIT_LIST_DEFAULT 100
#define ADMIN_AUDIT_LIST_MAX     500
int admin_audit_list(struct kasir_db *db, const struct db_stmt *st,
                     const struct admin_request *req, struct cJSON **ret,
                     char *code, size_t code_len, char *msg, size_t msg_len);

#endif
