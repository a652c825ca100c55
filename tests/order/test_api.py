"""kasir-order's HTTP API against the fake Midtrans: auth, routes,
validation, the catalog price, idempotency, Snap retries / failures / 406,
order reads and access."""
import json
import time

from ostack import Stack

CUST = {"name": "Siti Rahma", "email": "siti@example.co.id", "phone": "081234567890"}


def order_body(**kw):
    b = {"course_id": "kursus-154600", "customer": dict(CUST)}
    b.update(kw)
    return b


def err(resp, status, code):
    st, j, h = resp
    assert st == status and j["error"]["code"] == code, (st, j)
    return h


def test_routes(s):
    err(s.http("GET", "/v1/courses", token=False), 401, "unauthorized")
    err(s.http("GET", "/v1/courses", token="wrong-" + s.token), 401, "unauthorized")
    err(s.http("GET", "/v1/orders/X", token=s.token[:-1]), 401, "unauthorized")
    err(s.http("GET", "/v1/nothing"), 404, "not_found")
    h = err(s.http("DELETE", "/v1/courses"), 405, "method_not_allowed")
    assert "GET" in h.get("Allow", ""), h
    h = err(s.http("GET", "/v1/orders"), 405, "method_not_allowed")
    assert h.get("Allow") == "POST", h
    st, j, h = s.http("GET", "/v1/courses")
    assert st == 200 and {c["id"] for c in j["courses"]} >= {"kursus-154600"}, j
    c = [c for c in j["courses"] if c["id"] == "kursus-154600"][0]
    assert c["price"] == 154600 and c["currency"] == "IDR" and c["access"] == "365d", c
    assert h.get("X-Content-Type-Options") == "nosniff", h


def test_validation(s):
    p = lambda body, **kw: s.http("POST", "/v1/orders", body, **kw)
    err(p(order_body(price=1)), 400, "unknown_field")
    err(p(order_body(customer=dict(CUST, address="Jl. Sudirman"))), 400, "unknown_field")
    err(p(order_body(course_id="tidak-ada")), 422, "unknown_course")
    err(p(order_body(customer=dict(CUST, phone="12ab5678"))), 400, "invalid_field")
    err(p(order_body(customer=dict(CUST, phone="1234567"))), 400, "invalid_field")
    err(p(order_body(customer=dict(CUST, email="no-at-sign"))), 400, "invalid_field")
    err(p(order_body(customer=dict(CUST, name="x" * 101))), 400, "invalid_field")
    err(p(order_body(order_id="a" * 51)), 400, "invalid_field")
    # dot segments: the Status API's URL /v2/../status would be /status
    err(p(order_body(order_id="..")), 400, "invalid_field")
    err(p(order_body(order_id=".")), 400, "invalid_field")
    err(p(order_body(order_id="has space")), 400, "invalid_field")
    err(p(order_body(order_id="hash#1")), 400, "invalid_field")
    err(p({"customer": CUST}), 400, "missing_field")
    err(s.http("POST", "/v1/orders", raw=b"{not json"), 400, "invalid_json")
    err(s.http("POST", "/v1/orders", raw=b'{"course_id":"x"} trailing'), 400, "invalid_json")
    err(s.http("POST", "/v1/orders", order_body(), headers={"Content-Type": "text/plain"}),
        415, "unsupported_media_type")
    assert s.sql("SELECT count(*) FROM orders.orders")[0][0] == 0


def test_create(s):
    st, j, _ = s.http("POST", "/v1/orders", order_body())
    assert st == 201, (st, j)
    assert j["order_id"].startswith("KSR-") and len(j["order_id"]) <= 50, j
    assert j["status"] == "PENDING" and j["snap_token"] and j["redirect_url"], j
    assert j["expires_at"].endswith("Z"), j
    oid = j["order_id"]
    truth = s.fake("/_fake/orders/" + oid)
    # the price comes from the catalog
    assert int(float(truth.get("gross_amount", truth.get("amount", 0)))) == 154600, truth
    row = s.sql("SELECT amount, status, snap_token, redirect_url, snap_attempts"
                " FROM orders.orders WHERE order_id=%s", (oid,))[0]
    assert row == (154600, "PENDING", j["snap_token"], j["redirect_url"], 1), row
    ev = s.events(oid, "order.created")
    assert len(ev) == 1, ev
    body = ev[0][1] if isinstance(ev[0][1], dict) else json.loads(ev[0][1])
    assert body["data"]["amount"] == 154600 and body["data"]["customer"]["email"] == CUST["email"]
    st, g, _ = s.http("GET", "/v1/orders/" + oid)
    assert st == 200 and g["status"] == "PENDING" and g["amount"] == 154600, g
    assert g["timeline"] == [] and "snap_token" not in g, g
    err(s.http("GET", "/v1/orders/NOPE-1"), 404, "order_not_found")
    # duplicate client order_id
    s.create_order("CLIENT-1", 154600)
    err(s.http("POST", "/v1/orders", order_body(order_id="CLIENT-1")), 409, "order_exists")
    # access: none yet
    st, a, _ = s.http("GET", "/v1/access?customer_email=siti@example.co.id&course_id=kursus-154600")
    assert st == 200 and a == {"active": False, "valid_until": None, "order_id": None}, a
    err(s.http("GET", "/v1/access?customer_email=siti@example.co.id"), 400, "missing_parameter")


def test_idempotency(s):
    h = {"Idempotency-Key": "idem-1"}
    r1 = s.http("POST", "/v1/orders", order_body(), headers=h)
    r2 = s.http("POST", "/v1/orders", order_body(), headers=h)
    assert r1[0] == 201 and r2[0] == 201 and r1[1] == r2[1], (r1, r2)
    assert s.sql("SELECT count(*) FROM orders.orders WHERE idempotency_key='idem-1'")[0][0] == 1
    other = order_body(course_id="kursus-150000")
    err(s.http("POST", "/v1/orders", other, headers=h), 409, "idempotency_conflict")


def test_snap_failures(s):
    # one 5xx: retried with the same order_id
    s.fake("/_fake/snap", {"mode": "5xx", "count": 1, "status": 503})
    j = s.create_order("SNAP-RETRY", 154600)
    assert s.sql("SELECT snap_attempts FROM orders.orders WHERE order_id='SNAP-RETRY'")[0][0] == 2
    assert j["snap_token"]
    # Snap down for longer than the retries: 502, the order stays recorded
    s.fake("/_fake/snap", {"mode": "5xx", "count": 10, "status": 500})
    h = {"Idempotency-Key": "idem-down"}
    err(s.http("POST", "/v1/orders", order_body(order_id="SNAP-DOWN"), headers=h), 502,
        "snap_unavailable")
    row = s.sql("SELECT status, snap_error, snap_token FROM orders.orders WHERE order_id='SNAP-DOWN'")
    assert row[0][0] == "PENDING" and "500" in row[0][1] and row[0][2] is None, row
    facts = s.admin("doctor.facts")["result"]
    assert any(r["order_id"] == "SNAP-DOWN" for r in facts["snap_failures"]), facts
    # Snap back: the same key retries Snap for the same order
    s.fake("/_fake/snap", {"mode": "normal"})
    st, j, _ = s.http("POST", "/v1/orders", order_body(order_id="SNAP-DOWN"), headers=h)
    assert st == 201 and j["order_id"] == "SNAP-DOWN" and j["snap_token"], (st, j)
    # a lost answer: the retry gets 406 -> never a second charge, reconcile
    s.fake("/_fake/snap", {"mode": "lost", "count": 1})
    err(s.http("POST", "/v1/orders", order_body(order_id="SNAP-LOST")), 502, "snap_unavailable")
    row = s.sql("SELECT needs_reconcile, snap_error FROM orders.orders WHERE order_id='SNAP-LOST'")
    assert row[0][0] is True and "406" in row[0][1], row
    s.fake("/_fake/snap", {"mode": "normal"})


def snap_calls(s):
    """Snap requests the fake has answered or dropped, every outcome."""
    st = s.fake("/_fake/stats").get("snap", {})
    return sum(v for v in st.values() if isinstance(v, int))


def order_snap_failed(s, order_id):
    """An order whose create call found Snap down (502); Snap is back
    after it.  Returns the call's body and headers, for the retries."""
    s.fake("/_fake/snap", {"mode": "5xx", "count": 10, "status": 500})
    body = order_body(order_id=order_id)
    h = {"Idempotency-Key": "idem-" + order_id}
    err(s.http("POST", "/v1/orders", body, headers=h), 502, "snap_unavailable")
    s.fake("/_fake/snap", {"mode": "normal"})
    return body, h


def test_snap_once(s):
    """One Snap call at a time per order (migration 0015, api.c).

    A create call repeated with the same Idempotency-Key while the first
    one waits for Snap used to call Snap as well: one call handed a token
    to the customer, the other got 406 (kasir's own id) and marked the
    order as someone else's payment, so the customer's payment was never
    made PAID.  Found by an outside attack, 2026-12-07."""
    import threading
    body = order_body(order_id="SNAP-ONCE")
    h = {"Idempotency-Key": "idem-once"}
    # the first attempt hangs 3 s, then its connection closes: the first
    # call holds the order's Snap lease through it and its retry
    s.fake("/_fake/snap", {"mode": "timeout", "count": 1, "delay_s": 3})
    first = {}
    t = threading.Thread(target=lambda: first.update(
        r=s.http("POST", "/v1/orders", body, headers=h)))
    t.start()
    deadline = time.time() + 10
    while not s.sql("SELECT 1 FROM orders.orders WHERE order_id='SNAP-ONCE'"):
        assert time.time() < deadline, "the first call stored no order"
        time.sleep(0.005)
    second = s.http("POST", "/v1/orders", body, headers=h)
    t.join()
    assert first["r"][0] == 201 and first["r"][1]["snap_token"], first
    # within the first call's 3 s: no second Snap call, no token yet
    err(second, 409, "request_in_progress")
    row = s.sql("SELECT needs_reconcile, snap_lease_until IS NULL, snap_token"
                " FROM orders.orders WHERE order_id='SNAP-ONCE'")[0]
    assert row == (False, True, first["r"][1]["snap_token"]), row
    # the website's retry now gets the stored token, Snap is not called
    n = snap_calls(s)
    st, j, _ = s.http("POST", "/v1/orders", body, headers=h)
    assert st == 201 and j == first["r"][1], (st, j)
    assert snap_calls(s) == n
    # ... and once the order is past its expiry, not even the stored page
    s.sql("UPDATE orders.orders SET expires_at = now() - interval '1 second'"
          " WHERE order_id='SNAP-ONCE'")
    err(s.http("POST", "/v1/orders", body, headers=h), 409, "order_closed")

    # a holder that died: its lease runs out, then a retry calls Snap
    body, h = order_snap_failed(s, "SNAP-DEAD")
    s.sql("UPDATE orders.orders SET snap_lease_until = now() + interval '1 minute'"
          " WHERE order_id='SNAP-DEAD'")
    n = snap_calls(s)
    err(s.http("POST", "/v1/orders", body, headers=h), 409, "request_in_progress")
    assert snap_calls(s) == n
    # (ten minutes left: the retry's page must close by then, not a
    # whole order expiry later)
    s.sql("UPDATE orders.orders SET snap_lease_until = now() - interval '1 second',"
          " expires_at = now() + interval '10 minutes' WHERE order_id='SNAP-DEAD'")
    st, j, _ = s.http("POST", "/v1/orders", body, headers=h)
    assert st == 201 and j["snap_token"] and snap_calls(s) == n + 1, (st, j)
    page_ends = s.fake("/_fake/orders/SNAP-DEAD")["expiry_at"]
    order_ends = s.sql("SELECT to_char(expires_at AT TIME ZONE 'UTC',"
                       " 'YYYY-MM-DD\"T\"HH24:MI:SS') FROM orders.orders"
                       " WHERE order_id='SNAP-DEAD'")[0][0]
    assert page_ends[:19] <= order_ends, (page_ends, order_ends)

    # a holder that overran its lease (a stalled database): a retry took
    # the order over, and the holder's late token is never handed out
    s.fake("/_fake/snap", {"mode": "slow", "count": 1, "delay_s": 4})
    body = order_body(order_id="SNAP-FENCE")
    h = {"Idempotency-Key": "idem-fence"}
    first = {}
    t = threading.Thread(target=lambda: first.update(
        r=s.http("POST", "/v1/orders", body, headers=h)))
    t.start()
    deadline = time.time() + 10
    while "SNAP-FENCE" not in [o["order_id"] for o in s.fake("/_fake/orders")["orders"]]:
        assert time.time() < deadline, "the first call never reached Snap"
        time.sleep(0.01)
    s.sql("UPDATE orders.orders SET snap_lease_until = now() - interval '1 second'"
          " WHERE order_id='SNAP-FENCE'")
    err(s.http("POST", "/v1/orders", body, headers=h), 502, "snap_unavailable")
    t.join()
    err(first["r"], 409, "request_in_progress")
    row = s.sql("SELECT snap_token, needs_reconcile FROM orders.orders"
                " WHERE order_id='SNAP-FENCE'")[0]
    assert row == (None, True), row

    # after a 406 the id is Midtrans's: a retry answers without calling Snap
    s.fake("/_fake/snap", {"mode": "lost", "count": 1})
    body = order_body(order_id="SNAP-406")
    h = {"Idempotency-Key": "idem-406"}
    err(s.http("POST", "/v1/orders", body, headers=h), 502, "snap_unavailable")
    n = snap_calls(s)
    err(s.http("POST", "/v1/orders", body, headers=h), 502, "snap_unavailable")
    assert snap_calls(s) == n

    # past its expiry: no payment page for it, whatever the retry
    body, h = order_snap_failed(s, "SNAP-LATE")
    s.sql("UPDATE orders.orders SET expires_at = now() - interval '1 second'"
          " WHERE order_id='SNAP-LATE'")
    n = snap_calls(s)
    st, j, _ = s.http("POST", "/v1/orders", body, headers=h)
    assert st == 409 and j["error"]["code"] == "order_closed" and \
        "SNAP-LATE is at or near its expiry" in j["error"]["message"], (st, j)
    assert snap_calls(s) == n


def main():
    s = Stack(name="order-api")
    try:
        s.start_order()
        for t in (test_routes, test_validation, test_create, test_idempotency, test_snap_failures,
                  test_snap_once):
            print("==", t.__name__, flush=True)
            t(s)
        # --check-config on the rendered config
        import subprocess
        out = subprocess.run([s.bin["order"], "--check-config", s.config], capture_output=True,
                             text=True)
        assert out.returncode == 0 and "configuration OK" in out.stdout, out
        print("ok")
    except BaseException:
        print("stack kept for inspection: " + s.dir)
        try:
            print(s.log_text()[-6000:])
        except OSError:
            pass
        import os
        os.environ["KASIR_KEEP_TMP"] = "1"
        raise
    finally:
        s.close()


if __name__ == "__main__":
    main()
