"""/readyz tells the truth while a COMMIT waits without end (found by an
outside attack, 2026-12-07; docs/failure-model.md, liveness.h "either").

`synchronous_standby_names` names a standby that is not there: every
COMMIT that wrote something waits for it.  No statement_timeout covers
that wait (PostgreSQL turns it off for the commit), and the server is
alive, so nothing fails: kasir-ingest's committer waited inside COMMIT
while /readyz answered 200 and every notification timed out.  Now a
command waited for longer than its loop's bound makes the loop silent:
within the committer's 15 s (plus a poll) /readyz answers 503 naming
it; once the standby requirement is gone the waiting COMMIT returns,
the notification is stored and /readyz is 200 again.
"""

import sys
import threading

import kasirtest

from faultutil import KEY, check, not_ready_within, notification as signed, ready_again


def notification(n):
    return signed("CW", n)


def stored(st, oid):
    return st.sql("SELECT count(*) FROM ingest.payment_event WHERE order_id = %s",
                  (oid,))[0][0]


def main():
    ov = {"INGEST_RATE": "10000", "INGEST_BURST": "10000"}
    hdr = {"Content-Type": "application/json"}
    with kasirtest.Stack.for_test(server_key=KEY, overrides=ov) as st:
        st.start("ingest")
        r = st.notify(notification(0), hdr)
        check(r.status == 200, f"a notification stored ({r.status})")
        check(st.admin("ingest", "/readyz").status == 200, "kasir-ingest ready")
        st.pg.psql("ALTER SYSTEM SET synchronous_standby_names = 'nobody_there'")
        st.pg.psql("SELECT pg_reload_conf()")
        answers = []
        sender = None
        try:
            # one notification, whose COMMIT now waits; its sender gives
            # up long before the COMMIT returns
            sender = threading.Thread(target=lambda: answers.append(
                st.notify(notification(1), hdr, timeout=60)))
            sender.start()
            why = not_ready_within(st, "ingest", 40)
            check(why is not None, "kasir-ingest's /readyz answers 503 while a COMMIT waits")
            secs, text = why
            check("ingest.committer" in text and "waited for" in text,
                  f"/readyz names the waiting committer after {secs:.0f} s: "
                  f"{text.strip()[:140]}")
            check(secs >= 14, f"not before the committer's bound (15 s): {secs:.1f} s")
            check(stored(st, "CW-0001") == 0, "the waiting notification is not stored yet")
        finally:
            st.pg.psql("ALTER SYSTEM RESET synchronous_standby_names")
            st.pg.psql("SELECT pg_reload_conf()")
        if sender is not None:
            sender.join(70)
        check(answers and answers[0].status == 200,
              f"the waiting notification is answered 200 once its COMMIT returns "
              f"({answers[0].status if answers else 'no answer'})")
        check(stored(st, "CW-0001") == 1, "... and stored")
        ready_again(st)
    return 0


if __name__ == "__main__":
    sys.exit(main())
