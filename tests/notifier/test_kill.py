"""kasir-notifier SIGKILLed repeatedly while receipts are being sent: every
receipt reaches the customer exactly once on both channels, and a send that
may have reached the customer (uncertain) is never sent again by itself.

Kills follow conditions, not a clock (issue 12): the notifier is killed
when it has sent a receipt since it was last started AND still has receipts
to send; receipts arrive in waves (orders paid on the orders stream), each
wave published once the previous one was struck by a kill or fully sent,
with more waves (new orders) until MIN_KILLS kills landed.  So the test
kills mid-backlog at least MIN_KILLS times on a machine of any speed.

A kill leaves the jobs it was sending in 'sending'; after their lease they
become 'uncertain' (possibly delivered) and wait for an operator.  The test
plays the operator with the audited command (jobs.decide): 'delivered'
where the provider has the copy, 'resend' where it has none -- and then
every receipt was delivered exactly once."""
import collections
import os
import time

from nstack import Stack, wait_for, paid, granted

WAVE_ORDERS = int(os.environ.get("NOTIFIER_KILL_WAVE", "25"))
WAVES = 8
MIN_KILLS = 5
WAVE_BOUND = 60         # s: a wave is struck or sent within this, or FAIL
KILLS_BOUND = 240       # s: all waves and MIN_KILLS kills within this, or FAIL


def main():
    s = Stack({"NOTIFY_RETRY_SCHEDULE": "1s,1s,2s,2s,2s,2s,2s,2s", "NOTIFY_POLL": "100ms",
               "NOTIFY_LEASE": "3s", "NOTIFY_WA_TIMEOUT": "1s", "NOTIFY_SMTP_TIMEOUT": "1s",
               "NOTIFY_REMIND_AFTER": "", "NOTIFY_REMIND_BEFORE": "", "NOTIFY_WORKERS": "4"},
              "kill")
    try:
        s.start_notifier()
        orders = []

        def publish_wave():
            base = len(orders)
            for i in range(base, base + WAVE_ORDERS):
                oid = "ORD-K-%04d" % i
                snap = dict(email_addr="%s@example.com" % oid.lower(),
                            name="Pelanggan " + oid[-4:])
                s.publish("order.paid", paid(oid, **snap))
                s.publish("access.granted", granted(oid, **snap))
                orders.append(oid)

        def counts():
            r = dict(s.sql("SELECT state IN ('queued', 'retry', 'sending'), count(*)"
                           " FROM notify.job WHERE kind = 'receipt' GROUP BY 1"))
            sent = s.sql("SELECT count(*) FROM notify.job WHERE kind = 'receipt'"
                         " AND state = 'sent'")[0][0]
            return sent, r.get(True, 0)

        kills = []
        t0 = time.monotonic()
        waves = 0
        sent_at_start = counts()[0]
        while waves < WAVES or len(kills) < MIN_KILLS:
            assert time.monotonic() - t0 < KILLS_BOUND, \
                "%d kills in %d waves after %ds: the notifier never had a backlog to be " \
                "killed in" % (len(kills), waves, KILLS_BOUND)
            publish_wave()
            waves += 1
            before = len(kills)

            def struck_or_sent():
                sent, backlog = counts()
                if sent > sent_at_start and backlog > 0:
                    return "kill"
                jobs = s.sql("SELECT count(*) FROM notify.job WHERE kind = 'receipt'")[0][0]
                return "sent" if jobs == 2 * len(orders) and backlog == 0 else None
            what = wait_for(struck_or_sent, WAVE_BOUND,
                            "wave %d: sending with a backlog, or all sent" % waves,
                            interval=0.01)
            if what == "kill":
                s.kill_notifier()
                kills.append(counts())
                sent_at_start = kills[-1][0]
                s.start_notifier(wait_ready=False)
            assert len(kills) >= before
        print("kills %d in %d waves, (sent, backlog) at each: %s" % (len(kills), waves, kills))
        assert len(kills) >= MIN_KILLS
        wait_for(lambda: s.admin_ok(), 30, "notifier up")
        n = len(orders)
        # every receipt is sent, or uncertain (its worker was killed while
        # sending, or the provider timed out after the request went out)
        wait_for(lambda: s.sql("SELECT count(*) FROM notify.job WHERE kind = 'receipt'"
                               " AND state IN ('sent', 'uncertain')")[0][0] == 2 * n,
                 120, "all %d receipts sent or uncertain" % (2 * n), interval=0.5)

        def copies():
            got = collections.Counter()
            for m in s.smtp.messages():
                got[m["Message-ID"]] += 1
            for w in s.wa.messages():
                got["<%s@kasir>" % w["request"]["biz_opaque_callback_data"]] += 1
            return got
        jobs = s.sql("SELECT id, order_id, channel, state FROM notify.job"
                     " WHERE kind = 'receipt' ORDER BY id")
        got = copies()
        uncertain = [j for j in jobs if j[3] == "uncertain"]
        for jid, oid, ch, state in jobs:
            c = got["<job-%d@kasir>" % jid]
            if state == "sent":
                assert c == 1, "%s %s job %d sent, provider has %d copies" % (oid, ch, jid, c)
            else:   # never sent again by itself
                assert c <= 1, "%s %s job %d uncertain, provider has %d copies" % (oid, ch, jid, c)
        print("uncertain after the kills: %d of %d receipts" % (len(uncertain), 2 * n))
        # the operator decides each uncertain send (audited)
        resend = []
        for jid, oid, ch, _ in uncertain:
            decision = "delivered" if got["<job-%d@kasir>" % jid] else "resend"
            r = s.admin("jobs.decide", {"job_id": jid, "decision": decision},
                        reason="provider log checked")
            assert r["ok"], r
            if decision == "resend":
                resend.append(jid)
        wait_for(lambda: s.sql("SELECT count(*) FROM notify.job WHERE id = ANY(%s)"
                               " AND state = 'sent'", (resend,))[0][0] == len(resend),
                 60, "the %d resent receipts sent" % len(resend), interval=0.5)
        got = copies()
        for jid, oid, ch, _ in jobs:
            assert got["<job-%d@kasir>" % jid] == 1, \
                "%s %s job %d: %d copies" % (oid, ch, jid, got["<job-%d@kasir>" % jid])
        aud = s.sql("SELECT count(*) FROM notify.audit WHERE command = 'jobs.decide'"
                    " AND result = 'ok'")[0][0]
        assert aud == len(uncertain), (aud, len(uncertain))
        print("ok: %d receipts each delivered exactly once; %d uncertain decided (%d resent)"
              % (2 * n, len(uncertain), len(resend)))
    finally:
        s.close()


if __name__ == "__main__":
    main()
