#!/usr/bin/python3
"""A message the watch list refuses in C (order.created with unusable
times, watchlist.c add_created) that is not the first message of its order
in a consumer batch: the optimistic pass has already queued the earlier
rounds' statements on the pipeline (no sync sent) when add_one() refuses,
and watchlist_apply_batch() goes straight to db_pipe_end(), which waits
for results the server never flushes.  Expected: the batch falls back to
the careful pass, the bad message is poisoned alone, the cursor reaches
the head."""
import time

import kasirtest
import rstack
from rstack import log
from test_watch_batch import (write, head, cursor, created, evidence,
                              snapshot, R1)


def bad_created(oid):
    d = snapshot(oid, "PENDING")
    d["created_at"] = "not a time"
    return ("order.created", d)


def main():
    with rstack.stack({"RECON_FIRST_CHECK": "1h"}) as st:
        rstack.start(st)
        st.stop("fake-midtrans")
        st.stop("reconciler")
        # round 0: evidence for X and a good order; round 1: X's bad created
        msgs = [evidence("rf-x", "pending", R1), created("rf-good"),
                bad_created("rf-x"), created("rf-after")]
        write(st, msgs)
        st.wait_until(lambda: st.sql(
            f"SELECT {kasirtest.unsequenced_sql('orders')}")[0][0] == 0,
            timeout=30, what="sequenced")
        h = head(st)
        st.start("reconciler")
        t0 = time.time()
        ok = True
        try:
            st.wait_until(lambda: cursor(st) >= h, timeout=40,
                          what="the reconciler's cursor at the head %d" % h)
        except Exception as e:  # noqa
            ok = False
            log("cursor stuck at %d (head %d) after %.0f s: %s"
                % (cursor(st), h, time.time() - t0, e))
            log("backends: %r" % st.sql(
                "SELECT application_name, state, wait_event, left(query, 60)"
                " FROM pg_stat_activity WHERE application_name LIKE"
                " 'kasir-reconciler%%'"))
        assert ok, "the orders consumer is stuck behind a refused message"
        assert st.sql("SELECT count(*) FROM recon.stream_poison")[0][0] == 1
        assert st.sql("SELECT count(*) FROM recon.watch WHERE order_id"
                      " IN ('rf-good', 'rf-after')")[0][0] == 2
        log("ok: refused alone, cursor at the head")


if __name__ == "__main__":
    main()
