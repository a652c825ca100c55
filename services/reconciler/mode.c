/*
 * mode.c - normal and reconciliation mode.
 *
 * In reconciliation mode (the SOP's answer to a webhook outage) every
 * pending order is checked every mode.interval (evidence.c's claim).  The
 * mode lives in recon.settings so it survives restarts.
 *
 *   operator   "mode.set" on the admin socket (engineer, reason, audited).
 *              An operator's reconcile mode stays until an operator leaves
 *              it; an operator's "normal" restarts the silence count.
 *   automatic  (mode.auto) enter when an order was created at least
 *              mode.auto_silence ago (within mode.activity_window) and no
 *              webhook notification has said anything new since it was
 *              created; leave an automatically entered mode as soon as
 *              one has since the mode's start.  "New": the first
 *              notification its order ever hears (watchlist.c,
 *              st_evidence), so that replaying old genuine bodies,
 *              rewritten or not, neither keeps the mode off nor ends
 *              it.
 * Every change is logged, audited (actor "kasir-reconciler", role "auto"
 * for automatic ones) and counted; the kasir_reconciler_mode gauge shows
 * the current mode.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "db.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "reconciler.h"
#include "sd.h"
#include "util.h"

const char *
recon_mode_name(enum recon_mode m)
{
	return m == MODE_RECONCILE ? "reconcile" : "normal";
}

static const struct db_stmt st_load = {
    .name = "recon_mode_load",
    .sql = "SELECT mode FROM recon.settings WHERE id = 1",
};

/* Everything the automatic rule needs.  It is read without a lock at
 * every poll (the orders consumer updates the row's last_ingest_at, and a
 * lock here would make the two wait for each other's COMMIT), and read
 * again with the row locked only when the rule wants a change. */
#define MODE_FACTS_SQL                                                         \
	"SELECT s.mode, s.mode_auto,"                                          \
	" (extract(epoch FROM s.mode_since) * 1000)::bigint,"                  \
	" (extract(epoch FROM s.last_ingest_at) * 1000)::bigint,"              \
	" (SELECT (extract(epoch FROM min(w.created_at)) * 1000)::bigint"      \
	"  FROM recon.watch w WHERE w.created_at > greatest("                  \
	"   s.last_ingest_at, s.silence_ref,"                                  \
	"   now() - $1::bigint * interval '1 millisecond')),"                  \
	" (extract(epoch FROM now()) * 1000)::bigint"                          \
	" FROM recon.settings s WHERE s.id = 1"

static const struct db_stmt st_facts = {
    .name = "recon_mode_facts",
    .sql = MODE_FACTS_SQL,
    .nparams = 1,
};

static const struct db_stmt st_facts_locked = {
    .name = "recon_mode_facts_locked",
    .sql = MODE_FACTS_SQL " FOR UPDATE OF s",
    .nparams = 1,
};

static const struct db_stmt st_set = {
    .name = "recon_mode_set",
    .sql = "UPDATE recon.settings SET mode = $1, mode_since = now(),"
           " mode_auto = $2::bool, mode_by = $3,"
           " silence_ref = CASE WHEN $1 = 'normal' AND NOT $2::bool"
           "  THEN now() ELSE silence_ref END,"
           " updated_at = now() WHERE id = 1 RETURNING mode",
    .nparams = 3,
};

static const struct db_stmt st_lock = {
    .name = "recon_mode_lock",
    .sql = "SELECT mode FROM recon.settings WHERE id = 1 FOR UPDATE",
};

static const struct db_stmt st_audit_auto = {
    .name = "recon_mode_audit_auto",
    .sql = "INSERT INTO recon.audit (actor, role, command, args, reason,"
           " before, after, result)"
           " VALUES ('kasir-reconciler', 'auto', 'mode.auto', '{}'::jsonb, $1,"
           "  jsonb_build_object('mode', $2::text),"
           "  jsonb_build_object('mode', $3::text), 'ok')",
    .nparams = 3,
};

static enum recon_mode
parse_mode(const char *s)
{
	return s != NULL && strcmp(s, "reconcile") == 0 ? MODE_RECONCILE
	                                                : MODE_NORMAL;
}

int
mode_load(struct recon *r, struct kasir_db *db)
{
	PGresult *res = NULL;
	int rc;

	if ((rc = db_exec(db, &st_load, NULL, &res)) < 0)
		return rc;
	if (PQntuples(res) == 1)
		atomic_store(&r->mode, (int)parse_mode(db_get(res, 0, 0)));
	PQclear(res);
	metric_set(r->m.mode, (double)atomic_load(&r->mode));
	return 0;
}

void
mode_committed(struct recon *r, enum recon_mode before, enum recon_mode after,
               const char *by, const char *why)
{
	atomic_store(&r->mode, (int)after);
	metric_set(r->m.mode, (double)after);
	if (before == after)
		return;
	metric_inc(r->m.mode_changes);
	log_fields(LOG_WARNING, LOG_F({"RECON_MODE", recon_mode_name(after)}),
	           "mode %s -> %s by %s: %s", recon_mode_name(before),
	           recon_mode_name(after), by, why);
	kasir_sd_status("mode %s", recon_mode_name(after));
}

int
mode_set_locked(struct recon *r, struct kasir_db *db, enum recon_mode m,
                const char *by, enum recon_mode *ret_before)
{
	PGresult *res = NULL;
	enum recon_mode before;
	int rc;

	(void)r;
	if ((rc = db_exec(db, &st_lock, NULL, &res)) < 0)
		return rc;
	before =
	    PQntuples(res) == 1 ? parse_mode(db_get(res, 0, 0)) : MODE_NORMAL;
	PQclear(res);
	{
		const char *p[3] = {recon_mode_name(m), "false", by};

		if ((rc = db_exec(db, &st_set, p, NULL)) < 0)
			return rc;
	}
	*ret_before = before;
	return 0;
}

/* Applies an automatic change in its own transaction. */
static int
auto_change(struct recon *r, struct kasir_db *db, enum recon_mode before,
            enum recon_mode after, const char *why)
{
	const char *p[3] = {recon_mode_name(after), "true", "auto"};
	const char *a[3] = {why, recon_mode_name(before),
	                    recon_mode_name(after)};
	int rc;

	if ((rc = db_exec(db, &st_set, p, NULL)) < 0 ||
	    (rc = db_exec(db, &st_audit_auto, a, NULL)) < 0)
		return rc;
	if ((rc = db_commit(db)) < 0)
		return rc;
	mode_committed(r, before, after, "auto", why);
	return 0;
}

struct mode_facts {
	enum recon_mode cur;
	bool is_auto;
	int64_t since, last_ingest, first_unanswered, now;
};

static int
mode_read(struct kasir_db *db, const struct db_stmt *st, int64_t window_ms,
          struct mode_facts *f)
{
	PGresult *res = NULL;
	char window[24];
	const char *p[1] = {window};
	int rc;

	snprintf(window, sizeof(window), "%" PRId64, window_ms);
	if ((rc = db_exec(db, st, p, &res)) < 0)
		return rc;
	if (PQntuples(res) != 1) {
		PQclear(res);
		return KASIR_ENOTFOUND;
	}
	f->cur = parse_mode(db_get(res, 0, 0));
	f->is_auto = db_get(res, 0, 1)[0] == 't';
	f->since = db_get_i64(res, 0, 2);
	f->last_ingest = db_get(res, 0, 3) ? db_get_i64(res, 0, 3) : -1;
	f->first_unanswered = db_get(res, 0, 4) ? db_get_i64(res, 0, 4) : -1;
	f->now = db_get_i64(res, 0, 5);
	PQclear(res);
	return 0;
}

/* The automatic rule: true and the mode to change to when one is due. */
static bool
mode_rule(const struct recon_conf *c, const struct mode_facts *f,
          enum recon_mode *to, char *why, size_t whylen)
{
	if (!c->auto_mode)
		return false;
	if (f->cur == MODE_NORMAL && f->first_unanswered >= 0 &&
	    f->now - f->first_unanswered >= c->auto_silence_ms) {
		snprintf(why, whylen,
		         "orders created for %llds without any webhook "
		         "notification",
		         (long long)((f->now - f->first_unanswered) / 1000));
		*to = MODE_RECONCILE;
		return true;
	}
	if (f->cur == MODE_RECONCILE && f->is_auto &&
	    f->last_ingest > f->since) {
		snprintf(why, whylen, "webhook notifications flow again");
		*to = MODE_NORMAL;
		return true;
	}
	return false;
}

void
mode_evaluate(struct recon *r, struct kasir_db *db)
{
	const struct recon_conf *c = r->conf;
	struct mode_facts f;
	enum recon_mode to;
	char why[160];

	if (db_begin(db) < 0)
		return;
	if (mode_read(db, &st_facts, c->activity_window_ms, &f) < 0)
		goto rollback;
	/* the persisted mode wins (another instance, an operator) */
	if (f.cur != (enum recon_mode)atomic_load(&r->mode))
		mode_committed(r, (enum recon_mode)atomic_load(&r->mode), f.cur,
		               "database", "mode changed elsewhere");
	if (!mode_rule(c, &f, &to, why, sizeof(why)))
		goto rollback;
	/* a change is due: decide again on the locked row */
	if (mode_read(db, &st_facts_locked, c->activity_window_ms, &f) < 0 ||
	    !mode_rule(c, &f, &to, why, sizeof(why)))
		goto rollback;
	if (auto_change(r, db, f.cur, to, why) < 0)
		goto rollback;
	return;
rollback:
	db_rollback(db);
}
