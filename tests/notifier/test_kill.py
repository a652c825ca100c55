"""kasir-notifier SIGKILLed repeatedly while 200 receipts are being sent:
every receipt is delivered on both channels; a duplicate exists only where
notify.attempt records an 'uncertain' attempt for that job."""
import collections
import os
import random
import time

from nstack import Stack, wait_for, snapshot, paid, granted

N = int(os.environ.get("NOTIFIER_KILL_ORDERS", "200"))


def main():
    seed = int(os.environ.get("SEED", str(int(time.time()))))
    rnd = random.Random(seed)
    print("seed", seed)
    s = Stack({"NOTIFY_RETRY_SCHEDULE": "1s,1s,2s,2s,2s,2s,2s,2s", "NOTIFY_POLL": "100ms",
               "NOTIFY_LEASE": "3s", "NOTIFY_WA_TIMEOUT": "1s", "NOTIFY_SMTP_TIMEOUT": "1s",
               "NOTIFY_REMIND_AFTER": "", "NOTIFY_REMIND_BEFORE": "", "NOTIFY_WORKERS": "4"},
              "kill")
    try:
        s.start_notifier()
        orders = ["ORD-K-%04d" % i for i in range(N)]
        # the orders are paid before the kills start so the notifier has a
        # backlog of 2*N receipts to work through while being killed
        for oid in orders:
            snap = dict(email_addr="%s@example.com" % oid.lower(), name="Pelanggan " + oid[-4:])
            s.publish("order.paid", paid(oid, **snap))
            s.publish("access.granted", granted(oid, **snap))
        kills = 0
        deadline = time.time() + 240

        def done():
            return s.sql("SELECT count(*) FROM notify.job WHERE kind='receipt' AND state='sent'")[0][0]
        while done() < 2 * N and time.time() < deadline and kills < 15:
            time.sleep(rnd.uniform(0.2, 1.0))
            s.kill_notifier()
            kills += 1
            time.sleep(rnd.uniform(0.0, 0.3))
            s.start_notifier(wait_ready=False)
        print("kills", kills, "sent at last kill", done())
        wait_for(lambda: s.admin_ok(), 30, "notifier up")
        wait_for(lambda: done() == 2 * N, 120, "all %d receipts sent" % (2 * N), interval=0.5)
        states = s.sql("SELECT state, count(*) FROM notify.job GROUP BY state")
        assert states == [("sent", 2 * N)], states

        jobs = {(r[1], r[2]): (r[0], r[3]) for r in s.sql(
            "SELECT id, order_id, channel, uncertain FROM notify.job WHERE kind='receipt'")}
        unc_attempts = collections.Counter(r[0] for r in s.sql(
            "SELECT job_id FROM notify.attempt WHERE result='uncertain'"))
        mail = collections.Counter()
        for m in s.smtp.messages():
            mail[m["Message-ID"]] += 1
        wa = collections.Counter()
        for w in s.wa.messages():
            wa[w["request"]["biz_opaque_callback_data"]] += 1
        dup = 0
        for oid in orders:
            jid, _ = jobs[(oid, "email")]
            n = mail["<job-%d@kasir>" % jid]
            assert n >= 1, "no receipt email for %s" % oid
            assert n <= 1 + unc_attempts[jid], \
                "%s: %d emails but %d uncertain attempts" % (oid, n, unc_attempts[jid])
            dup += n - 1
            jid, _ = jobs[(oid, "whatsapp")]
            n = wa["job-%d" % jid]
            assert n >= 1, "no receipt WhatsApp for %s" % oid
            assert n <= 1 + unc_attempts[jid], \
                "%s: %d WhatsApp messages but %d uncertain attempts" % (oid, n, unc_attempts[jid])
            dup += n - 1
        print("kills %d, duplicates %d, uncertain attempts %d" % (kills, dup, sum(unc_attempts.values())))
        assert kills >= 3, "the notifier finished before it could be killed enough"
        print("ok")
    finally:
        s.close()


if __name__ == "__main__":
    main()
