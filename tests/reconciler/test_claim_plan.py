#!/usr/bin/python3
"""The claim reads a few index entries however many orders are due, with
the plan the scheduler lanes really get.

The lanes' connections plan each prepared statement once, for the life of
the connection (plan_cache_mode = force_generic_plan), with sequential
scans off (services/reconciler/main.c, common/db.h).  A generic plan does
not know the claim's limit ($4), so it must not depend on it to stay
small: each of the claim's five candidate scans (forced, confirmation
asked, next check passed, reconciliation mode, a refund followed: none
here) has to walk its partial index in order and stop at its LIMIT, never read every due row and sort
them.  With 50,000 due orders a plan that sorts reads 50,000 rows per
claim, tens of milliseconds, several times a second per lane.

The claim is taken from services/reconciler/evidence.c (CLAIM_SQL, its C
string pieces joined as the compiler joins them) and prepared in a session
set up as a lane's: once with the plan made while recon.watch is nearly
empty and kept after it grew (what a lane started on a new database does
until autovacuum analyzes the table), once re-planned after ANALYZE, each
in normal and in reconciliation mode.  Every scan of recon.watch together
must read at most a few times the limit, and none may be sequential.  All
of it runs in one transaction that is rolled back: the rows are never
visible to the running daemons.

And what the claim takes first: in reconciliation mode an order not
checked for the mode's interval is due although its next scheduled check
is hours away (a customer who paid while webhooks were down).  With more
than a claim's limit of orders always due by their schedule (a drill's
refused checkouts, asked again "not started yet"), candidates sorted by
next_check_at alone never reached it.  They are taken in the order they
became due.
"""
import json
import os
import re

import kasirtest
import rstack
from rstack import log

DUE = 50000
LIMIT = 16
LEASE_MS = 30000
MODE_INTERVAL_MS = 600000
# 4 candidate scans of at most 2 x LIMIT rows each, their rows fetched
# again through the primary key, and the LIMIT rows updated
READ_BOUND = 4 * 2 * LIMIT * 2 + LIMIT


def claim_sql():
    path = os.path.join(kasirtest.source_dir(), "services", "reconciler",
                        "evidence.c")
    src = open(path).read()
    m = re.search(r"#define CLAIM_SQL\s*\\\n(.*?)\n\n", src, re.S)
    assert m, "CLAIM_SQL not found in %s" % path
    pieces = re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1))
    sql = "".join(pieces)
    assert sql.startswith("UPDATE recon.watch"), sql[:80]
    assert "\\" not in sql, "an escape in CLAIM_SQL: join it like C does"
    return sql


def watch_reads(plan):
    """(rows read by every scan of recon.watch, node types seen)."""
    total, kinds = 0, set()

    def walk(node):
        nonlocal total
        kinds.add(node["Node Type"])
        if node.get("Relation Name") == "watch" and "Scan" in node["Node Type"]:
            total += node.get("Actual Rows", 0) * node.get("Actual Loops", 1)
            # rows a scan read and then filtered out count too
            total += (node.get("Rows Removed by Filter", 0) +
                      node.get("Rows Removed by Index Recheck", 0))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return total, kinds


def explain(cur, reconcile):
    cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE claim(%s, %s, %s, %s)",
                (LEASE_MS, reconcile, MODE_INTERVAL_MS, LIMIT))
    raw = cur.fetchone()[0]
    return (json.loads(raw) if isinstance(raw, str) else raw)[0]


def check(cur, what):
    for reconcile in (False, True):
        plan = explain(cur, reconcile)
        reads, kinds = watch_reads(plan)
        claimed = plan["Plan"].get("Actual Rows", 0)
        log("%s, %s mode: %d rows read from recon.watch, %d claimed; "
            "nodes %s" % (what, "reconciliation" if reconcile else "normal",
                          reads, claimed, sorted(kinds)))
        assert "Seq Scan" not in kinds, (what, kinds)
        assert reads <= READ_BOUND, (
            "%s: the claim read %d rows of recon.watch for a limit of %d "
            "(bound %d): its generic plan reads every due row"
            % (what, reads, LIMIT, READ_BOUND))


def main():
    sql = claim_sql()
    with rstack.stack(name="claim-plan") as st:
        rstack.start(st)  # the reconciler's migrations: recon.watch
        st.stop("reconciler")
        conn = st.pg.connect()
        conn.autocommit = False
        cur = conn.cursor()
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cur.execute("PREPARE claim(bigint, bool, bigint, int) AS " + sql)
        # the plan is made now, on a nearly empty table
        cur.execute("EXECUTE claim(%s, false, %s, %s)",
                    (LEASE_MS, MODE_INTERVAL_MS, LIMIT))
        cur.execute(
            "INSERT INTO recon.watch (order_id, created_at, expires_at,"
            " next_check_at, orders_seq)"
            " SELECT 'due-' || g, now() - interval '2 hours',"
            " now() + interval '1 day', now() - g * interval '1 ms', g"
            " FROM generate_series(1, %s) g", (DUE,))
        # a few forced and a few awaiting a confirmation, as in production
        cur.execute("UPDATE recon.watch SET forced = true"
                    " WHERE order_id IN ('due-1', 'due-2')")
        cur.execute("UPDATE recon.watch SET confirm_seq = 1"
                    " WHERE order_id IN ('due-3', 'due-4', 'due-5')")
        check(cur, "plan made while the table was empty")
        cur.execute("ANALYZE recon.watch")
        check(cur, "plan made again after ANALYZE")
        # the starved order: last checked two mode intervals ago, its next
        # scheduled check an hour away; every other due order was checked
        # a second ago
        cur.execute("UPDATE recon.watch SET last_check_at = now() - interval"
                    " '1 second'")
        cur.execute("UPDATE recon.watch SET last_check_at = now() - 2 * %s *"
                    " interval '1 ms', next_check_at = now() + interval '1 hour'"
                    " WHERE order_id = 'due-40000'", (MODE_INTERVAL_MS,))
        cur.execute("EXECUTE claim(%s, true, %s, %s)",
                    (LEASE_MS, MODE_INTERVAL_MS, LIMIT))
        claimed = {r[0] for r in cur.fetchall()}
        log("reconciliation mode claimed %d, the starved order among them: %s"
            % (len(claimed), "due-40000" in claimed))
        assert "due-40000" in claimed, (
            "reconciliation mode: an order due by the mode's interval was not"
            " claimed before orders due by their schedule (%s)" % sorted(claimed))
        conn.rollback()
        conn.close()
    print("claim plan: all passed")


if __name__ == "__main__":
    main()
