"""kasir-fake-midtrans speaks the Midtrans wire formats: Snap, Status API,
signed notifications with retries and the notify modes."""

import os
import time

from fakeutil import (Receiver, basic, check, finish, free_port, request,
                      sha512_sig, start, stop, tempdir, wait_for)

KEY = "fake-test-server-key-0001"
AUTH = {"Authorization": basic(KEY)}


def snap(port, order_id, amount, headers=AUTH, **extra):
    body = {"transaction_details": {"order_id": order_id,
                                    "gross_amount": amount}}
    body.update(extra)
    return request(port, "POST", "/snap/v1/transactions", body,
                   headers=headers)


def act(port, order_id, action, **params):
    return request(port, "POST", "/_fake/orders/%s/%s" % (order_id, action),
                   params)


def truth(port, order_id):
    return request(port, "GET", "/_fake/orders/%s" % order_id)[1]


def status_api(port, ident, headers=AUTH):
    return request(port, "GET", "/v2/%s/status" % ident, headers=headers)


def refund_api(port, ident, body, headers=AUTH):
    return request(port, "POST", "/v2/%s/refund" % ident, body, headers=headers)[:2]


def sig_ok(b, key=KEY):
    return isinstance(b, dict) and b.get("signature_key") == sha512_sig(
        b["order_id"], b["status_code"], b["gross_amount"], key)


def all_strings(b):
    return all(isinstance(v, str) for k, v in b.items()
               if k not in ("va_numbers", "payment_amounts", "refunds"))


def main():
    tmp = tempdir("fake-midtrans-test-")
    keyfile = os.path.join(tmp, "key")
    with open(keyfile, "w") as f:
        f.write(KEY + "\n")
    state = os.path.join(tmp, "state.json")
    rcv = Receiver()
    port = free_port()
    argv = ["--listen", "127.0.0.1:%d" % port, "--server-key-file", keyfile,
            "--notify-url", rcv.url, "--retry-schedule", "0.2,0.2,0.3,0.3",
            "--notify-timeout", "3", "--state-file", state,
            "--card-settle-ms", "300", "--duplicate-later-ms", "400",
            "--snap-base-url", "http://snap.example"]
    log = os.path.join(tmp, "fake.log")
    proc = start("kasir-fake-midtrans", argv, port, log)
    try:
        run(port, rcv, state)
        # ---- restart: the truth survives through --state-file
        paid_before = truth(port, "ord-pay-1")
        stop(proc)
        check(os.path.exists(state), "state file written")
        proc = start("kasir-fake-midtrans", argv, port, log)
        after = truth(port, "ord-pay-1")
        check(after and after["status"] == "PAID" and
              after["transaction_id"] == paid_before["transaction_id"],
              "truth survives a restart", after)
        st, b, _ = status_api(port, "ord-pay-1")
        check(st == 200 and b["transaction_status"] == "settlement",
              "Status API after restart", st, b)
        st, b, _ = snap(port, "ord-pay-1", 150000)
        check(st == 406, "order_id still used after restart", st)
        # ---- reset
        st, _, _ = request(port, "POST", "/_fake/reset", {})
        st, lst, _ = request(port, "GET", "/_fake/orders")
        check(st == 200 and lst["orders"] == [], "reset empties the truth")
    finally:
        stop(proc)
        rcv.close()
    with open(log, "rb") as f:
        text = f.read().decode(errors="replace")
    check(KEY not in text, "server key never logged")
    check('"POST /snap/v1/transactions" 201' in text,
          "one log line per request")
    finish()


def run(port, rcv, state):
    # ---------------- Snap
    st, b, _ = snap(port, "ord-a", 1000, headers={})
    check(st == 401 and isinstance(b.get("error_messages"), list),
          "Snap without auth -> 401 error_messages", st, b)
    st, b, _ = snap(port, "ord-a", 1000,
                    headers={"Authorization": basic("wrong")})
    check(st == 401, "Snap wrong key -> 401", st)
    st, b, _ = snap(port, "ord-pay-1", 150000, item_details=[
        {"id": "c1", "name": "Kursus", "price": 150000, "quantity": 1}],
        customer_details={"first_name": "Budi"})
    check(st == 201 and len(b.get("token", "")) >= 32 and
          b["redirect_url"] == "http://snap.example/snap/v4/redirection/" +
          b["token"], "Snap -> 201 token + redirect_url", st, b)
    st, b, _ = snap(port, "ord-pay-1", 150000)
    check(st == 406 and any("sudah digunakan" in m
                            for m in b["error_messages"]),
          "Snap reused order_id -> 406", st, b)
    for oid, amount, extra, what in (
            ("bad#id", 1000, {}, "order_id charset"),
            ("x" * 51, 1000, {}, "order_id > 50"),
            ("ord-b", "1000", {}, "gross_amount string"),
            ("ord-b", 0, {}, "gross_amount zero"),
            ("ord-b", 1000.5, {}, "gross_amount fraction"),
            ("ord-b", 1000, {"item_details": [
                {"name": "a", "price": 900, "quantity": 1}]},
             "item_details sum"),
            ("ord-b", 1000, {"expiry": {"unit": "week", "duration": 1}},
             "expiry unit")):
        st, b, _ = snap(port, oid, amount, **extra)
        check(st == 400 and b.get("error_messages"), "Snap 400: " + what,
              st, b)
    st, b, _ = snap(port, "x" * 50, 1000)
    check(st == 201, "order_id of exactly 50 accepted", st, b)
    st, b, _ = request(port, "POST", "/snap/v1/transactions",
                       raw=b"x" * (64 * 1024 + 1),
                       headers=dict(AUTH, **{"Content-Type":
                                             "application/json"}))
    check(st == 413, "body over 64 KiB -> 413", st)

    # Snap fault injection: 5xx once, then normal again
    request(port, "POST", "/_fake/snap", {"mode": "5xx", "count": 1,
                                          "status": 503})
    st1, b1, _ = snap(port, "ord-retry", 5000)
    st2, b2, _ = snap(port, "ord-retry", 5000)
    check(st1 == 503 and st2 == 201, "Snap 5xx injected once", st1, st2)
    # lost answer: order created, the retry gets 406
    request(port, "POST", "/_fake/snap", {"mode": "lost", "count": 1})
    try:
        st1, _, _ = snap(port, "ord-lost", 5000)
    except Exception:
        st1 = "closed"
    st2, _, _ = snap(port, "ord-lost", 5000)
    check(st1 == "closed" and st2 == 406,
          "Snap 'lost' mode: created, retry sees 406", st1, st2)

    # ---------------- Status API before payment
    st, b, _ = status_api(port, "ord-pay-1", headers={
        "Authorization": basic("nope")})
    check(st == 401 and b["status_code"] == "401", "Status API bad key", st,
          b)
    st, b, _ = status_api(port, "ord-pay-1")
    check(st == 404 and b["status_code"] == "404" and
          b["status_message"] == "Transaction doesn't exist.",
          "Status API 404 before a method is chosen", st, b)
    st, b, _ = status_api(port, "no-such-order")
    check(st == 404, "Status API 404 for unknown order", st)

    # ---------------- pay, normal delivery
    st, t, _ = act(port, "ord-pay-1", "pay", payment_type="bank_transfer")
    check(st == 200 and t["status"] == "PAID" and t["paid"] and
          t["transaction_status"] == "settlement", "pay -> truth PAID", st, t)
    got = wait_for(lambda: rcv.bodies("ord-pay-1"), 5)
    check(len(got) == 1, "one settlement notification delivered", got)
    if got:
        n = got[0]
        check(n["transaction_status"] == "settlement" and
              n["status_code"] == "200" and n["gross_amount"] == "150000.00"
              and n["currency"] == "IDR" and n["payment_type"] ==
              "bank_transfer" and n["fraud_status"] == "accept",
              "settlement body fields", n)
        check(sig_ok(n), "settlement signature verifies", n)
        check(all_strings(n), "all scalar values are strings", n)
        check(n["va_numbers"][0]["va_number"].isdigit() and
              n["payment_amounts"][0]["amount"] == "150000.00" and
              n["settlement_time"], "bank_transfer fields", n)
        hdrs = rcv.entries("ord-pay-1")[0][2]
        check(hdrs.get("Content-Type") == "application/json",
              "notification Content-Type", hdrs)
    t = wait_for(lambda: truth(port, "ord-pay-1")["notifications"][0][
        "delivered"] and truth(port, "ord-pay-1"), 5)
    check(t and t["notifications"][0]["attempts"][0]["http_status"] == 200,
          "truth records the delivery attempt", t and t["notifications"])
    st, b, _ = status_api(port, "ord-pay-1")
    check(st == 200 and b["transaction_status"] == "settlement" and
          b["status_code"] == "200" and b["gross_amount"] == "150000.00" and
          sig_ok(b) and b["transaction_id"] == t["transaction_id"],
          "Status API 200 after pay, signature verifies", st, b)
    st2, b2, _ = status_api(port, t["transaction_id"])
    check(st2 == 200 and b2["order_id"] == "ord-pay-1",
          "Status API by transaction_id", st2, b2)
    st, b, _ = act(port, "ord-pay-1", "pay")
    check(st == 409, "paying twice -> 409", st, b)

    # ---------------- a chosen transaction id (a recorded notification's)
    snap(port, "ord-txn-1", 30000)
    st, b, _ = act(port, "ord-txn-1", "pay", transaction_id="tx-chosen-1",
                   notify="drop")
    check(st == 200 and truth(port, "ord-txn-1")["transaction_id"] == "tx-chosen-1",
          "the transaction gets the chosen id", st, b)
    st, b, _ = status_api(port, "tx-chosen-1")
    check(st == 200 and b["order_id"] == "ord-txn-1",
          "Status API by the chosen transaction id", st, b)
    st, b, _ = act(port, "ord-txn-1", "refund", transaction_id="tx-other",
                   notify="drop")
    check(st == 409, "another id for an existing transaction -> 409", st, b)
    st, b, _ = act(port, "ord-txn-1", "refund", transaction_id="x" * 65)
    check(st == 400, "a transaction id over 64 characters -> 400", st, b)

    # ---------------- retries on 500 until 2xx; 302 not followed
    snap(port, "ord-retry-1", 20000)
    with rcv.lock:
        rcv.script = [500, 302, 503]
    act(port, "ord-retry-1", "pay", payment_type="gopay")
    t = wait_for(lambda: (lambda t: t if t["notifications"][0]["delivered"]
                          else None)(truth(port, "ord-retry-1")), 10)
    codes = [a["http_status"] for a in t["notifications"][0]["attempts"]] \
        if t else None
    check(codes == [500, 302, 503, 200], "retried on 500/302/503 until 200",
          codes)
    got = rcv.bodies("ord-retry-1")
    check(len(got) == 4 and all(g == got[0] for g in got) and sig_ok(got[0]),
          "identical signed body on every retry", len(got))
    with rcv.lock:
        paths = [p for _, p, _, _ in rcv.received]
    check("/moved" not in paths, "302 Location never followed", paths)
    # gives up after the schedule
    snap(port, "ord-giveup", 20000)
    with rcv.lock:
        rcv.script = [500] * 5
    act(port, "ord-giveup", "pay")
    t = wait_for(lambda: (lambda t: t if t["notifications"][0]["gave_up"]
                          else None)(truth(port, "ord-giveup")), 10)
    check(t and len(t["notifications"][0]["attempts"]) == 5 and
          not t["notifications"][0]["delivered"],
          "gives up after 1 + len(schedule) attempts", t and t["notifications"])

    # ---------------- drop
    snap(port, "ord-drop", 30000)
    st, t, _ = act(port, "ord-drop", "pay", notify="drop")
    time.sleep(1.0)
    check(rcv.bodies("ord-drop") == [], "drop: nothing sent")
    check(t["status"] == "PAID" and t["notifications"][0]["dropped"],
          "drop: truth still PAID, notification marked dropped", t)
    st, b, _ = status_api(port, "ord-drop")
    check(st == 200 and b["transaction_status"] == "settlement",
          "drop: Status API knows it is paid", st, b)

    # ---------------- duplicate
    snap(port, "ord-dup", 40000)
    act(port, "ord-dup", "pay", notify="duplicate")
    got = wait_for(lambda: len(rcv.bodies("ord-dup")) >= 3 and
                   rcv.entries("ord-dup"), 5)
    time.sleep(0.5)
    ent = rcv.entries("ord-dup")
    check(len(ent) == 3 and all(e[3] == ent[0][3] for e in ent) and
          sig_ok(ent[0][3]), "duplicate: three identical deliveries",
          len(ent))
    if len(ent) == 3:
        check(ent[2][0] - ent[1][0] >= 0.3, "duplicate: third copy later",
              ent[2][0] - ent[1][0])

    # ---------------- reorder
    snap(port, "ord-reorder", 50000)
    act(port, "ord-reorder", "pay", payment_type="qris", notify="reorder")
    got = wait_for(lambda: len(rcv.bodies("ord-reorder")) >= 2 and
                   rcv.bodies("ord-reorder"), 5)
    check(got and [g["transaction_status"] for g in got] ==
          ["settlement", "pending"] and all(sig_ok(g) for g in got) and
          got[1]["status_code"] == "201",
          "reorder: settlement, then stale pending",
          got and [g["transaction_status"] for g in got])
    t = truth(port, "ord-reorder")
    check(t["status"] == "PAID" and t["notifications"][1]["stale"],
          "reorder: truth PAID, pending marked stale", t["status"])

    # ---------------- expire without a method: no notification, 407
    snap(port, "ord-exp", 60000)
    st, t, _ = act(port, "ord-exp", "expire")
    time.sleep(0.5)
    check(st == 200 and t["status"] == "EXPIRED" and
          rcv.bodies("ord-exp") == [],
          "expire without method: EXPIRED, no notification", st, t)
    st, b, _ = status_api(port, "ord-exp")
    check(st == 407 and b["status_code"] == "407" and
          b["transaction_status"] == "expire",
          "Status API 407 after expiry without method", st, b)
    st, b, _ = act(port, "ord-exp", "pay")
    check(st == 409, "paying an expired order -> 409", st)
    # Snap expiry passing by itself: a one-minute expiry that started 56 s
    # ago (start_time has whole seconds, so the order expires at the
    # second `expires`).  Asked before that second: 404; then 407, not
    # before it.  The 4 s margin is for a loaded machine: a 1 s margin
    # once failed a suite run (the first question came after expiry).
    expires = int(time.time()) + 4
    start_time = time.strftime("%Y-%m-%d %H:%M:%S +0700",
                               time.gmtime(expires - 60 + 7 * 3600))
    snap(port, "ord-exp-auto", 1000, expiry={"start_time": start_time,
                                             "unit": "minute", "duration": 1})
    st1, _, _ = status_api(port, "ord-exp-auto")
    asked = time.time()
    seen = wait_for(lambda: status_api(port, "ord-exp-auto")[0] == 407
                    and time.time(), 15)
    check(asked < expires, "Snap expiry: first asked before it "
          "(else the machine is too slow for this check)", asked, expires)
    check(st1 == 404 and seen and seen >= expires,
          "Snap expiry: 404 then 407, not before it", st1, seen, expires)
    # expire after a method was chosen: notification 202
    snap(port, "ord-exp-va", 70000)
    act(port, "ord-exp-va", "pending", payment_type="bank_transfer")
    act(port, "ord-exp-va", "expire")
    got = wait_for(lambda: len(rcv.bodies("ord-exp-va")) >= 2 and
                   rcv.bodies("ord-exp-va"), 5)
    check(got and [(g["transaction_status"], g["status_code"]) for g in got]
          == [("pending", "201"), ("expire", "202")] and
          all(sig_ok(g) for g in got), "pending then expire notifications",
          got)
    st, b, _ = status_api(port, "ord-exp-va")
    check(st == 200 and b["transaction_status"] == "expire",
          "Status API expire after a method", st, b)

    # ---------------- deny on pending, then pay, then reverse
    snap(port, "ord-deny", 80000)
    st, t, _ = act(port, "ord-deny", "deny", payment_type="echannel")
    check(t["status"] == "PENDING" and not t["paid"],
          "deny before pay keeps the order open", t)
    st, t, _ = act(port, "ord-deny", "pay")
    check(st == 200 and t["status"] == "PAID", "pay after deny", st, t)
    st, t, _ = act(port, "ord-deny", "reverse")
    check(st == 200 and t["status"] == "REVERSED" and not t["paid"],
          "reverse after settlement", st, t)
    got = wait_for(lambda: len(rcv.bodies("ord-deny")) >= 3 and
                   rcv.bodies("ord-deny"), 5)
    check(got and [g["transaction_status"] for g in got] ==
          ["deny", "settlement", "deny"] and all(sig_ok(g) for g in got) and
          got[0]["bill_key"] and got[2]["status_code"] == "202" and
          len({g["transaction_id"] for g in got}) == 1,
          "deny/settlement/deny, one transaction_id", got)

    # ---------------- credit card: capture+accept, later settlement
    snap(port, "ord-card", 90000)
    act(port, "ord-card", "pay", payment_type="credit_card")
    got = wait_for(lambda: len(rcv.bodies("ord-card")) >= 2 and
                   rcv.bodies("ord-card"), 5)
    check(got and [(g["transaction_status"], g.get("fraud_status"))
                   for g in got] == [("capture", "accept"),
                                     ("settlement", "accept")] and
          all(sig_ok(g) for g in got) and got[0]["masked_card"],
          "card: capture+accept then settlement", got)
    # challenge
    snap(port, "ord-chal", 91000)
    act(port, "ord-chal", "challenge")
    got = wait_for(lambda: rcv.bodies("ord-chal"), 5)
    check(got and got[0]["transaction_status"] == "capture" and
          got[0]["fraud_status"] == "challenge" and
          got[0]["status_code"] == "201" and sig_ok(got[0]),
          "challenge: capture+challenge 201", got)
    check(truth(port, "ord-chal")["status"] == "PENDING",
          "challenge stays PENDING")

    # ---------------- refund: two notifications, the last bank-confirmed
    snap(port, "ord-refund", 92000)
    act(port, "ord-refund", "pay", payment_type="gopay")
    act(port, "ord-refund", "refund")
    got = wait_for(lambda: len(rcv.bodies("ord-refund")) >= 3 and
                   rcv.bodies("ord-refund"), 5)
    check(got and [g["transaction_status"] for g in got] ==
          ["settlement", "refund", "refund"] and
          got[1]["refund_amount"] == "92000.00" and
          "bank_confirmed_at" not in got[1]["refunds"][0] and
          "bank_confirmed_at" in got[2]["refunds"][0] and
          all(sig_ok(g) for g in got), "refund notifications", got)
    check(truth(port, "ord-refund")["status"] == "REFUNDED", "truth REFUNDED")

    # ---------------- chargeback: a settled payment disputed in full
    snap(port, "ord-cb", 93000)
    act(port, "ord-cb", "pay", payment_type="credit_card")
    act(port, "ord-cb", "chargeback")
    got = wait_for(lambda: len(rcv.bodies("ord-cb")) >= 2 and
                   rcv.bodies("ord-cb"), 5)
    check(got and [g["transaction_status"] for g in got][:2] ==
          ["capture", "chargeback"] and got[1]["status_code"] == "200" and
          all(sig_ok(g) for g in got), "chargeback notification", got)
    st, b = status_api(port, "ord-cb")[:2]
    check(st == 200 and b["transaction_status"] == "chargeback" and
          truth(port, "ord-cb")["status"] == "REFUNDED",
          "chargeback: the Status API and the truth say so", st, b)
    sc = act(port, "ord-cb", "chargeback")[0]
    check(sc == 409, "a second chargeback: 409", sc)

    # ---------------- the Refund API: partial, full, idempotent key, errors
    snap(port, "ord-rapi", 100000)
    st, b = refund_api(port, "ord-rapi", {"refund_key": "k-0", "amount": 1})
    check(st == 404 and b["status_code"] == "404", "refund before payment: 404", st, b)
    act(port, "ord-rapi", "pay", payment_type="gopay")
    st, b = refund_api(port, "ord-rapi", {"refund_key": "k-1"}, headers={})
    check(st == 401, "refund without auth: 401", st, b)
    st, b = refund_api(port, "ord-rapi", {"refund_key": "k-1", "amount": 100001})
    check(st == 412 and "remaining" in b["status_message"],
          "refund above the amount: 412", st, b)
    st, b = refund_api(port, "ord-rapi", {"refund_key": "k-1", "amount": 30000,
                                          "reason": "half"})
    check(st == 200 and b["status_code"] == "200" and
          b["transaction_status"] == "partial_refund" and
          b["refund_amount"] == "30000.00" and b["refund_key"] == "k-1",
          "partial refund accepted", st, b)
    st2, b2 = refund_api(port, "ord-rapi", {"refund_key": "k-1", "amount": 30000})
    check(st2 == 200 and b2 == b and len(truth(port, "ord-rapi")["refunds"]) == 1,
          "the same refund_key refunds once and answers the same", b2)
    st, b = refund_api(port, "ord-rapi", {"refund_key": "k-2"})
    check(st == 200 and b["transaction_status"] == "refund" and
          b["refund_amount"] == "70000.00", "the rest refunded", st, b)
    check(truth(port, "ord-rapi")["status"] == "REFUNDED", "truth REFUNDED after API")
    def refund_statuses():
        return [g["transaction_status"] for g in rcv.bodies("ord-rapi")
                if g["transaction_status"] != "settlement"]
    # both notifications: the first alone must not end the wait
    wait_for(lambda: "refund" in refund_statuses(), 10)
    got = refund_statuses()
    check(got and got[0] == "partial_refund" and "refund" in got,
          "partial_refund and refund notifications sent", got)
    snap(port, "ord-rapi-va", 50000)
    act(port, "ord-rapi-va", "pay", payment_type="bank_transfer")
    st, b = refund_api(port, "ord-rapi-va", {"refund_key": "k-3"})
    check(st == 412 and "does not support refund" in b["status_message"],
          "bank transfer: not refundable", st, b)
    st, b = refund_api(port, "ord-rapi-va", {"refund_key": "bad key!"})
    check(st == 400, "a refund_key outside [A-Za-z0-9_-]: 400", st, b)

    # ---------------- cstore has no fraud_status
    snap(port, "ord-cstore", 93000)
    act(port, "ord-cstore", "pending", payment_type="cstore")
    got = wait_for(lambda: rcv.bodies("ord-cstore"), 5)
    check(got and "fraud_status" not in got[0] and got[0]["store"] and
          got[0]["payment_code"] and sig_ok(got[0]),
          "cstore pending without fraud_status", got)

    # ---------------- tampering helpers
    snap(port, "ord-tamper", 100000)
    act(port, "ord-tamper", "pay", gross_amount="1.00")
    act(port, "ord-tamper", "reverse", sign_gross_amount="100000")
    got = wait_for(lambda: len(rcv.bodies("ord-tamper")) >= 2 and
                   rcv.bodies("ord-tamper"), 5)
    check(got and got[0]["gross_amount"] == "1.00" and sig_ok(got[0]),
          "gross_amount override is signed", got)
    check(got and got[1]["gross_amount"] == "100000.00" and
          not sig_ok(got[1]) and got[1]["signature_key"] ==
          sha512_sig("ord-tamper", "202", "100000", KEY),
          "sign_gross_amount signs another string", got)
    check(truth(port, "ord-tamper")["gross_amount"] == "100000.00",
          "override does not change the truth")

    # ---------------- notify_raw
    raw = {"order_id": "raw-1", "status_code": "200",
           "gross_amount": "5.00", "transaction_status": "settlement",
           "signature_key": "forged"}
    st, r, _ = request(port, "POST", "/_fake/notify_raw",
                       {"body": raw, "sign": True})
    st2, r2, _ = request(port, "POST", "/_fake/notify_raw",
                         {"body": dict(raw, order_id="raw-2"), "sign": False})
    got1 = wait_for(lambda: rcv.bodies("raw-1"), 5)
    got2 = wait_for(lambda: rcv.bodies("raw-2"), 5)
    check(st == 200 and got1 and sig_ok(got1[0]), "notify_raw signed",
          got1)
    check(st2 == 200 and got2 and got2[0]["signature_key"] == "forged",
          "notify_raw unsigned keeps the given signature", got2)

    # ---------------- Status API fault injection and stats
    request(port, "POST", "/_fake/stats/reset", {})
    request(port, "POST", "/_fake/status_api", {"mode": "5xx", "count": 2})
    codes = [status_api(port, "ord-pay-1")[0] for _ in range(3)]
    check(codes == [500, 500, 200], "Status API 5xx twice then normal",
          codes)
    request(port, "POST", "/_fake/status_api", {"mode": "5xx", "count": -1,
                                                "status": 503})
    codes = [status_api(port, "ord-pay-1")[0] for _ in range(3)]
    request(port, "POST", "/_fake/status_api", {"mode": "normal"})
    codes.append(status_api(port, "ord-pay-1")[0])
    check(codes == [503, 503, 503, 200], "Status API 5xx until reset", codes)
    request(port, "POST", "/_fake/status_api", {"mode": "timeout",
                                                "count": 1, "delay_s": 2})
    try:
        status_api(port, "ord-pay-1")  # default client timeout 10 s
        to = "answered"
    except Exception as e:
        to = type(e).__name__
    check(to != "answered", "Status API timeout mode gives no answer", to)
    st, s, _ = request(port, "GET", "/_fake/stats")
    check(st == 200 and s["status_api"]["requests"] == 8 and
          s["status_api"]["by_status"].get("500") == 2 and
          s["status_api"]["by_status"].get("503") == 3,
          "stats count Status API requests", s.get("status_api"))
    # fixed latency (benchmarks): every answer waits latency_ms, kept
    # across mode changes until set again
    st, f, _ = request(port, "POST", "/_fake/status_api",
                       {"mode": "normal", "latency_ms": 300})
    check(st == 200 and f.get("latency_ms") == 300, "latency_ms set", st, f)
    t0 = time.monotonic()
    code = status_api(port, "ord-pay-1")[0]
    slow = time.monotonic() - t0
    request(port, "POST", "/_fake/status_api", {"mode": "normal"})
    t0 = time.monotonic()
    status_api(port, "ord-pay-1")
    still = time.monotonic() - t0
    request(port, "POST", "/_fake/status_api", {"mode": "normal",
                                                "latency_ms": 0})
    t0 = time.monotonic()
    status_api(port, "ord-pay-1")
    fast = time.monotonic() - t0
    check(code == 200 and slow >= 0.3 and still >= 0.3 and fast < 0.3,
          "Status API fixed latency", code, slow, still, fast)
    st, _, _ = request(port, "POST", "/_fake/status_api",
                       {"mode": "normal", "latency_ms": -1})
    check(st == 400, "latency_ms out of range -> 400", st)
    st, b, _ = act(port, "nope", "pay")
    check(st == 404, "action on unknown order -> 404", st)
    st, b, _ = act(port, "implicit-1", "pay", amount=12000)
    check(st == 200 and b["gross_amount"] == "12000.00",
          "action with amount creates the order", st, b)
    st, b, _ = act(port, "ord-pay-1", "explode")
    check(st == 404, "unknown action -> 404", st)
    st, b, _ = act(port, "ord-b", "pay", payment_type="bitcoin", amount=5)
    check(st == 400, "unknown payment_type -> 400", st)
    wait_for(lambda: os.path.exists(state), 2)


if __name__ == "__main__":
    main()
