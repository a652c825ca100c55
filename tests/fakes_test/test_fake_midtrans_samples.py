"""The fake's notifications match the Midtrans notification fixtures
(tests/data/midtrans/notifications, written from Midtrans's documented wire
format by tests/data/midtrans/make-fixtures): same signature algorithm (a
body generated for a fixture's order_id and amount, signed with the docs
key, carries exactly the fixture's signature_key), same status_code /
fraud_status rules, and at least the fixture's field set for that payment
type.  Every fixture the fake can produce is compared; the chargeback and
the card's next-day settlement are not actions of the fake (listed in
NOT_FAKED)."""

import glob
import json
import os

from fakeutil import (DOCS_KEY, Receiver, check, finish, free_port, request,
                      sha512_sig, fixtures_dir, start, stop, tempdir,
                      wait_for)

# sample file -> actions that must produce a body like it
# (action, params); the sample is compared with the last body received
SCENARIOS = {
    "A_card_capture_accept.json": [("pay", {"payment_type": "credit_card"})],
    "B_card_capture_challenge.json": [("challenge", {})],
    "C_card_deny.json": [("deny", {"payment_type": "credit_card"})],
    "D_card_cancel.json": [("cancel", {"payment_type": "credit_card",
                                       "bank": "bca"})],
    "E_gopay_pending.json": [("pending", {"payment_type": "gopay"})],
    "F_gopay_settlement.json": [("pay", {"payment_type": "gopay"})],
    "G_qris_pending.json": [("pending", {"payment_type": "qris"})],
    "H_qris_expire.json": [("expire", {"payment_type": "qris"})],
    "K_bni_va_settlement.json": [("pay", {"payment_type": "bank_transfer",
                                          "bank": "bni"})],
    "L_alfamart_pending_no_fraud.json": [("pending", {"payment_type":
                                                      "cstore"})],
    "M_bca_va_settlement.json": [("pay", {"payment_type": "bank_transfer",
                                          "bank": "bca"})],
    "N_bca_va_partial_refund.json": [
        ("pay", {"payment_type": "bank_transfer", "bank": "bca"}),
        ("refund", {"refund_amount": 25000})],
    "O_bca_va_refund.json": [
        ("pay", {"payment_type": "bank_transfer", "bank": "bca"}),
        ("refund", {"refund_amount": 25000}), ("refund", {})],
}
# fixtures the fake has no action for (compared by signature only)
NOT_FAKED = {"P_card_settlement.json", "Q_card_chargeback.json"}
SAME_VALUE = ("order_id", "gross_amount", "status_code", "transaction_status",
              "payment_type", "signature_key", "currency")


def main():
    samples = {}
    for path in sorted(glob.glob(os.path.join(fixtures_dir(), "*.json"))):
        with open(path) as f:
            samples[os.path.basename(path)] = json.load(f)
    check(len(samples) >= 15, "fixtures found", len(samples))
    check(set(samples) == set(SCENARIOS) | NOT_FAKED,
          "every fixture has a fake scenario or is listed as not faked",
          sorted(set(samples) ^ (set(SCENARIOS) | NOT_FAKED)))

    # the algorithm itself, on the docs' worked example and on every sample
    check(sha512_sig("1111", "200", "100000.00", DOCS_KEY) ==
          "edc076b21793ebe3e17926350f5b8ae67d902fe657b3d0aa31b932d5c127e237"
          "5d308a2bc94f3265ac2d80a1f181a79b997ac178a236fcff35af263fc4d4c231",
          "docs worked example")
    for name, s in samples.items():
        check(sha512_sig(s["order_id"], s["status_code"], s["gross_amount"],
                         DOCS_KEY) == s["signature_key"],
              "recomputed signature of %s" % name)

    tmp = tempdir("fake-midtrans-samples-")
    keyfile = os.path.join(tmp, "key")
    with open(keyfile, "w") as f:
        f.write(DOCS_KEY)
    rcv = Receiver()
    port = free_port()
    proc = start("kasir-fake-midtrans",
                 ["--listen", "127.0.0.1:%d" % port, "--server-key-file",
                  keyfile, "--notify-url", rcv.url, "--retry-schedule",
                  "0.2", "--card-settle-ms", "60000"], port,
                 os.path.join(tmp, "fake.log"))
    try:
        for name, steps in SCENARIOS.items():
            if name not in samples:
                check(False, "sample %s present" % name)
                continue
            s = samples[name]
            request(port, "POST", "/_fake/reset", {})
            amount = int(s["gross_amount"].split(".")[0])
            for action, params in steps:
                st, t, _ = request(port, "POST", "/_fake/orders/%s/%s" % (
                    s["order_id"], action), dict(params, amount=amount))
                check(st == 200, "%s: %s accepted" % (name, action), st, t)
            got = wait_for(lambda: [
                b for b in rcv.bodies(s["order_id"])
                if b["transaction_status"] == s["transaction_status"]], 5)
            if not check(got, "%s: notification received" % name):
                continue
            b = got[-1]
            for k in SAME_VALUE:
                if k in s:
                    check(b.get(k) == s[k], "%s: %s" % (name, k),
                          b.get(k), s[k])
            check(b.get("fraud_status") == s.get("fraud_status"),
                  "%s: fraud_status (present iff in the sample)" % name,
                  b.get("fraud_status"), s.get("fraud_status"))
            missing = sorted(set(s) - set(b))
            check(not missing, "%s: generated body has the sample's fields"
                  % name, missing)
            for k, v in s.items():
                if k in b and isinstance(v, str):
                    check(isinstance(b[k], str), "%s: %s is a string" %
                          (name, k))
            with rcv.lock:
                rcv.received.clear()
    finally:
        stop(proc)
        rcv.close()
    finish()


if __name__ == "__main__":
    main()
