"""Issue 3, end to end: every Midtrans notification fixture
(tests/data/midtrans), POSTed to the real kasir-ingest for an order created
through kasir-order's API with the fixture's order_id and gross_amount, gets the right HTTP answer and leaves
the order in the right state; the same samples signed with any key but the
configured one are refused 403 and change nothing; the docs' "100000" vs
"100000.00" must-reject case; a valid signature with a changed amount.

Default mode (issue 13): before each fixture is POSTed, what it tells
happens at the fake Midtrans (SAMPLE_TRUTH), so the reconciler's Status API
answer agrees with it; every decisive transition names that answer (source
recon) as its evidence, never the fixture."""

from paystack import (DOCS_KEY, OTHER_KEY, PayStack, check, course_for,
                      main_wrapper, notification, samples, signature, signed)

# What each fixture, POSTed in file order, leaves its order in
# (docs/state-machine.md).
EXPECTED = {
    "A_card_capture_accept.json": "PAID",          # capture + accept
    "B_card_capture_challenge.json": "PENDING",    # merchant review
    "C_card_deny.json": "PENDING",                 # deny on a pending order: may retry
    "D_card_cancel.json": "CANCELLED",
    "E_gopay_pending.json": "PENDING",
    "F_gopay_settlement.json": "PAID",
    "G_qris_pending.json": "PENDING",              # order03 again
    "H_qris_expire.json": "EXPIRED",               # order03
    "K_bni_va_settlement.json": "PAID",
    "L_alfamart_pending_no_fraud.json": "PENDING",
    "M_bca_va_settlement.json": "PAID",
    "N_bca_va_partial_refund.json": "PAID",         # flag partial_refund, access kept
    "O_bca_va_refund.json": "REFUNDED",             # access revoked
    "P_card_settlement.json": "PAID",               # the capture's settlement: a no-op
    "Q_card_chargeback.json": "REFUNDED",           # disputed, access revoked
}

# What happens at the fake Midtrans before each fixture is POSTed (its
# notification dropped): the payment the fixture tells about.  P is the
# card's settlement, which the fake makes by itself after the capture.
SAMPLE_TRUTH = {
    "A_card_capture_accept.json": ("pay", {"payment_type": "credit_card"}),
    "B_card_capture_challenge.json": ("challenge", {}),
    "C_card_deny.json": ("deny", {}),
    "D_card_cancel.json": ("cancel", {"payment_type": "credit_card"}),
    "E_gopay_pending.json": ("pending", {"payment_type": "gopay"}),
    "F_gopay_settlement.json": ("pay", {"payment_type": "gopay"}),
    "G_qris_pending.json": ("pending", {"payment_type": "qris"}),
    "H_qris_expire.json": ("expire", {"payment_type": "qris"}),
    "K_bni_va_settlement.json": ("pay", {"payment_type": "bank_transfer", "bank": "bni"}),
    "L_alfamart_pending_no_fraud.json": ("pending", {"payment_type": "cstore",
                                                     "store": "alfamart"}),
    "M_bca_va_settlement.json": ("pay", {"payment_type": "bank_transfer", "bank": "bca"}),
    "N_bca_va_partial_refund.json": ("refund", {"refund_amount": 25000}),
    "O_bca_va_refund.json": ("refund", {}),
    "P_card_settlement.json": None,
    "Q_card_chargeback.json": ("chargeback", {}),
}

# The docs' worked example (midtrans/README.md): order 1111, status 200,
# amount "100000.00", the docs key.
DOCS_EXAMPLE_SIG = ("edc076b21793ebe3e17926350f5b8ae67d902fe657b3d0aa31b932d5c127e2375d308a2b"
                    "c94f3265ac2d80a1f181a79b997ac178a236fcff35af263fc4d4c231")


def count(st, table, where="TRUE", params=None):
    return st.sql(f"SELECT count(*) FROM {table} WHERE {where}", params)[0][0]


def test_forged(st, smp):
    """Signatures not made with the configured key: 403, nothing stored,
    nothing applied."""
    for name, _, body in smp:
        for why, forged in (
                ("signed with another key", signed(body, OTHER_KEY)),
                ("signature of another order", dict(body, signature_key=signature(
                    "X" + body["order_id"], body["status_code"], body["gross_amount"]))),
                ("signature with one hex digit changed", dict(body, signature_key=(
                    body["signature_key"][:-1] + ("0" if body["signature_key"][-1] != "0"
                                                  else "1"))))):
            r = st.post(forged)
            if r.status != 403:
                raise AssertionError(f"{name} {why}: want 403, got {r}")
    check(True, f"{3 * len(smp)} samples with a signature not made with the configured key -> 403")
    check(count(st, "ingest.payment_event") == 0, "no forged notification stored as evidence")
    st.wait_until(lambda: count(st, "ingest.quarantine") > 0, 5, "quarantine rows")
    check(all(st.status(b["order_id"]) == "PENDING" for _, _, b in smp),
          "every sample's order still PENDING after the forged ones")


def test_samples(st, smp):
    ingest_ev = "order_id = %s AND source = 'ingest'"
    # The fake's transaction gets the samples' id where all of an order's
    # samples name one: a refund or chargeback must be about the
    # transaction that paid (order03 switches methods: one transaction
    # each at Midtrans, one at the fake, never asked about a reversal).
    ids = {}
    for _, _, body in smp:
        ids.setdefault(body["order_id"], set()).add(body["transaction_id"])
    for name, raw, body in smp:
        oid = body["order_id"]
        if SAMPLE_TRUTH[name] is not None:
            action, opts = SAMPLE_TRUTH[name]
            if len(ids[oid]) == 1:
                opts = dict(opts, transaction_id=body["transaction_id"])
            st.truth(oid, action, **opts)
        before = count(st, "orders.evidence", ingest_ev, (oid,))
        r = st.post(raw)  # byte for byte as published
        check(r.status == 200, f"{name}: 200 from kasir-ingest ({r.status})")
        st.wait_applied()
        got = st.status(oid)
        check(got == EXPECTED[name], f"{name}: order {oid} is {got}, want {EXPECTED[name]}")
        check(count(st, "orders.evidence", ingest_ev, (oid,)) == before + 1,
              f"{name}: recorded once as evidence of {oid}")
        check(not st.contradicted(oid), f"{name}: the Status API agreed")
        stored = st.sql("SELECT raw FROM ingest.payment_event WHERE order_id = %s"
                        " ORDER BY id DESC LIMIT 1", (oid,))
        check(bytes(stored[0][0]) == raw, f"{name}: raw body stored byte for byte")
    final, was_paid = {}, {}
    for name, _, body in smp:  # file order: the last fixture of an order wins
        oid = body["order_id"]
        final[oid] = EXPECTED[name]
        was_paid[oid] = was_paid.get(oid, False) or EXPECTED[name] == "PAID"
    for oid, status in final.items():
        access = 1 if status == "PAID" else 0
        paid = 1 if was_paid[oid] else 0
        check(st.entitlements(oid) == access and st.paid_transitions(oid) == paid
              and st.messages(oid, "order.paid") == paid,
              f"{oid} ({status}): {access} active entitlement, {paid} PAID transition "
              "and order.paid")
    moved = st.sql("SELECT to_status, evidence_source FROM orders.transitions"
                   " WHERE evidence_source <> 'recon'")
    check(moved == [], f"every transition's evidence is a Status API answer ({moved})")
    r = st.api("GET", "/v1/orders/Order-5100")
    tl = r.body.get("timeline", []) if isinstance(r.body, dict) else []
    check(r.status == 200 and r.body["status"] == "PAID" and len(tl) == 1
          and tl[0]["to"] == "PAID" and tl[0]["source"] == "recon",
          f"GET /v1/orders/Order-5100: PAID with its Status API evidence ({r.status} {tl})")
    a = st.access("budi@example.com", course_for(154600))
    check(a["active"] is True and a["order_id"] == "Order-5100",
          f"GET /v1/access: course access active ({a})")


def test_amount_strings(st):
    """The docs' must-reject case and changed amounts."""
    st.create_order("1111", 100000, email="docs@example.com")
    body = {"transaction_time": "2026-11-23 16:00:00", "transaction_status": "settlement",
            "transaction_id": "tx-1111", "status_code": "200", "order_id": "1111",
            "gross_amount": "100000.00", "currency": "IDR", "payment_type": "bank_transfer",
            "fraud_status": "accept"}
    events = count(st, "ingest.payment_event")
    r = st.post(signed(body, DOCS_KEY, sign_amount="100000"))
    check(r.status == 403, f'gross_amount "100000.00" signed as "100000": 403 ({r.status})')
    r = st.post(dict(signed(body), gross_amount="100000"))
    check(r.status == 403, f'signed "100000.00", body changed to "100000": 403 ({r.status})')
    r = st.post(dict(signed(body), gross_amount="1000.00"))
    check(r.status == 403, f"valid signature, amount changed to 1000.00: 403 ({r.status})")
    r = st.post(dict(signed(body), order_id="1112"))
    check(r.status == 403, f"valid signature, order_id changed: 403 ({r.status})")
    check(count(st, "ingest.payment_event") == events, "none of them stored")
    check(st.status("1111") == "PENDING", "order 1111 still PENDING")

    # Correctly signed but for another amount: stored (it is Midtrans's
    # word), never PAID: the order is flagged for operators.  (Never paid
    # at the fake either: the amount alone must stop it.)
    st.create_order("1113", 100000, email="docs@example.com")
    st.deliver(notification("1113", "settlement", "1000.00"))
    row = st.sql("SELECT status, flagged, flag_reason FROM orders.orders WHERE order_id = '1113'")
    check(row[0][0] == "PENDING" and row[0][1] is True and "mismatch" in row[0][2],
          f"signed notification with another amount: order flagged, not PAID ({row})")
    check(st.entitlements("1113", active_only=False) == 0, "no access for it")

    # the docs' own worked example is accepted and, paid at Midtrans, pays
    # order 1111
    check(signature("1111", "200", "100000.00") == DOCS_EXAMPLE_SIG,
          "test signature function gives the docs' worked example")
    st.truth("1111", "pay")
    st.deliver(dict(body, signature_key=DOCS_EXAMPLE_SIG))
    check(st.status("1111") == "PAID" and st.entitlements("1111") == 1,
          "the docs' worked example: 200, order 1111 PAID with access")


def main():
    smp = samples()
    with PayStack.for_payment() as st:
        st.start_payment_path()
        for oid in dict.fromkeys(b["order_id"] for _, _, b in smp):
            amount = next(b["gross_amount"] for _, _, b in smp if b["order_id"] == oid)
            st.create_order(oid, amount)
        check(True, "an order per sample order_id created through the API")
        test_forged(st, smp)
        test_samples(st, smp)
        test_amount_strings(st)
        check(st.metric("ingest", "kasir_ingest_requests_total", outcome="403") >= 3 * len(smp) + 4,
              "403s counted in kasir-ingest's metrics")


if __name__ == "__main__":
    main_wrapper(main)
