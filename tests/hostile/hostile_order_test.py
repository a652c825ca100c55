"""Hostile input against kasir-order's HTTP API (issue 8, item 2), with
the real daemon and the fake Midtrans:

- bad tokens (none, wrong, truncated, padded, another scheme, 10 KB,
  control characters) -> 401 on every route
- injection strings in course_id, order_id, email, the path and the query
- negative, fractional and absurd amounts (the client never sets a price:
  refused as unknown fields), unknown courses -> 422
- oversized fields, oversized and 10 MB bodies, deep nesting, wrong types,
  duplicate keys, invalid UTF-8
Each gets a clear 4xx with a JSON error code; orders.orders holds only the
orders created on purpose (an injection string that is a legal customer
name is stored verbatim, by parameterized SQL, and the tables survive);
the daemon keeps its pid and /healthz 200.
"""

import json
import socket
import sys
import urllib.parse

import kasirtest
from hostile_util import Alive, check, error_code, raw_http, request_bytes

CUST = {"name": "Siti Rahma", "email": "siti@example.co.id", "phone": "081234567890"}
COURSE = "agentbar-dasar"  # services/order/config.example.yaml: 154600
INJECT = ["' OR '1'='1", "'; DROP TABLE orders.orders; --", "\" OR \"\"=\"",
          "1; SELECT pg_sleep(5)", "${jndi:ldap://x}", "<script>alert(1)</script>",
          "../../etc/passwd", "%00", "\\x00", "admin'--"]


def body(**kw):
    b = {"course_id": COURSE, "customer": dict(CUST)}
    b.update(kw)
    return b


def api(st, method, path, payload=None, token=True, headers=None, raw=None):
    tok = st.secret("api-token") if token is True else token
    h = {}
    if payload is not None or raw is not None:
        h["Content-Type"] = "application/json"
    if tok is not None:
        h["Authorization"] = f"Bearer {tok}"
    h.update(headers or {})
    data = raw if raw is not None else (json.dumps(payload).encode() if payload is not None
                                        else b"")
    if data or method == "POST":
        h["Content-Length"] = str(len(data))
    status, head, rbody = raw_http(st.port("ORDER_HTTP"),
                                   request_bytes(method, path, h, data))
    return status, rbody


def expect(st, name, res, allowed, code=None):
    status, rbody = res
    check(status in allowed, f"{name} -> {sorted(allowed)} (got {status}: {rbody[:160]!r})")
    if code is not None:
        check(error_code(rbody) == code, f"{name}: error code {code}")
    elif status != 413 or rbody:
        check(error_code(rbody) is not None, f"{name}: JSON error with a code")


def orders_count(st):
    return st.sql("SELECT count(*) FROM orders.orders")[0][0]


def bad_tokens(st):
    tok = st.secret("api-token")
    cases = [("no Authorization", None, {}),
             ("wrong token", "wrong-" + tok, {}),
             ("truncated token", tok[:-1], {}),
             ("token plus a byte", tok + "x", {}),
             ("10 KB token", "t" * 10000, {}),
             ("empty token", "", {}),
             ("token with a tab", tok[:4] + "\t" + tok[4:], {}),
             ("Basic scheme", None, {"Authorization": "Basic " + tok}),
             ("token in lower-case scheme twice", None,
              {"Authorization": f"Bearer Bearer {tok}"}),
             ("SQL in the token", "' OR '1'='1", {})]
    routes = [("GET", "/v1/courses", None), ("POST", "/v1/orders", body()),
              ("GET", "/v1/orders/ORD-1", None),
              ("GET", "/v1/access?customer_email=siti%40example.co.id&course_id=" + COURSE,
               None)]
    for name, t, h in cases:
        for method, path, payload in routes:
            expect(st, f"{name}: {method} {path.split('?')[0]}",
                   api(st, method, path, payload, token=t, headers=h), {401}, "unauthorized")


def hostile_orders(st):
    p = lambda payload=None, **kw: api(st, "POST", "/v1/orders", payload, **kw)
    for s in INJECT:
        expect(st, f"course_id {s!r}", p(body(course_id=s)), {400, 422})
        expect(st, f"order_id {s!r}", p(body(order_id=s)), {400}, "invalid_field")
        expect(st, f"email {s!r}", p(body(customer=dict(CUST, email=s))), {400})
        expect(st, f"phone {s!r}", p(body(customer=dict(CUST, phone=s))), {400})
        q = urllib.parse.quote(s, safe="")
        expect(st, f"GET /v1/orders/{s!r}", api(st, "GET", "/v1/orders/" + q), {400, 404})
        res = api(st, "GET", f"/v1/access?customer_email={q}&course_id={COURSE}")
        if res[0] == 200:
            check(json.loads(res[1]).get("active") is False,
                  f"access query with customer_email {s!r}: not active")
        else:
            expect(st, f"access query with customer_email {s!r}", res, {400})
    for amount in (-1, -154600, 0, 0.5, 1e308, 10**30, "154600", "-1", None):
        for field in ("price", "amount", "gross_amount"):
            expect(st, f"{field} {amount!r} from the client", p(body(**{field: amount})),
                   {400}, "unknown_field")
    for course in ("tidak-ada", "", "AGENTBAR-DASAR", "agentbar-dasar ", "x" * 5000):
        expect(st, f"course_id {course[:40]!r}", p(body(course_id=course)), {400, 422})
    expect(st, "unknown course", p(body(course_id="kursus-palsu")), {422}, "unknown_course")
    # wrong types
    for k, v in (("course_id", 154600), ("course_id", None), ("course_id", ["a"]),
                 ("customer", "Siti"), ("customer", []), ("order_id", 12345)):
        expect(st, f"{k} = {v!r}", p(body(**{k: v})), {400})
    expect(st, "customer.name a number", p(body(customer=dict(CUST, name=5))), {400})
    # oversized
    expect(st, "name 10 KB", p(body(customer=dict(CUST, name="n" * 10000))), {400, 413})
    expect(st, "email 10 KB", p(body(customer=dict(CUST, email="e" * 10000 + "@x.id"))),
           {400, 413})
    expect(st, "order_id 51", p(body(order_id="a" * 51)), {400}, "invalid_field")
    expect(st, "Idempotency-Key 10 KB", p(body(), headers={"Idempotency-Key": "k" * 10000}),
           {400, 413, 431})
    expect(st, "body 20 KB (cap 16 KiB)",
           p(raw=json.dumps(body(pad="x" * 20000)).encode()), {413})
    expect(st, "10 MB body", p(raw=b'{"course_id":"' + b"x" * (10 * 1024 * 1024) + b'"}'),
           {413})
    # structure
    expect(st, "deep nesting", p(raw=b'{"customer":' + b"[" * 7000 + b"]" * 7000 + b"}"),
           {400})
    expect(st, "invalid UTF-8 in name",
           p(raw=json.dumps(body()).encode().replace(b"Siti", b"S\xff\xfeti")), {400})
    expect(st, "not an object", p(raw=b"[1,2]"), {400})
    expect(st, "empty body", p(raw=b""), {400})
    expect(st, "text/plain", p(body(), headers={"Content-Type": "text/plain"}), {415})


def control_characters(st):
    """\u0000 and the other control characters in every string field, and
    %00 in the query or the path: 400 naming the field, nothing stored (cJSON alone
    read "bikin-film-pendek\u0000-premium" as "bikin-film-pendek")."""
    p = lambda raw: api(st, "POST", "/v1/orders", raw=raw)
    good = json.dumps(body(course_id="bikin-film-pendek")).encode()
    cases = [("course_id", b'"bikin-film-pendek"', b'"bikin-film-pendek\\u0000-premium"'),
             ("customer.name", b'"Siti Rahma"', b'"Siti\\u0000Rahma"'),
             ("customer.email", b'"siti@example.co.id"', b'"siti@example.co.id\\u0000x"'),
             ("customer.phone", b'"081234567890"', b'"081234567890\\u0000"')]
    for field, old, new in cases:
        for esc in (b"\\u0000", b"\\u0001", b"\\u001f", b"\\n", b"\\t", b"\\u007f",
                    b"\\u0085"):
            raw = good.replace(old, new.replace(b"\\u0000", esc))
            assert raw != good, (field, raw)
            status, rbody = p(raw)
            msg = json.loads(rbody)["error"]["message"] if status == 400 else ""
            check(status == 400 and error_code(rbody) == "invalid_field"
                  and f'"{field}"' in msg,
                  f"{field} with {esc.decode()} -> 400 naming it ({status} {rbody[:160]!r})")
    raw = json.dumps(body(order_id="ORD-1")).encode().replace(b'"ORD-1"', b'"ORD\\u0000-1"')
    status, rbody = p(raw)
    check(status == 400 and '"order_id"' in json.loads(rbody)["error"]["message"],
          "order_id with \\u0000 -> 400 naming it")
    raw = good.replace(b'"name"', b'"na\\u0000me"')
    status, rbody = p(raw)
    check(status == 400 and error_code(rbody) == "invalid_field",
          f"a key with \\u0000 -> 400 ({status} {rbody[:160]!r})")
    for q in ("customer_email=siti%40example.co.id%00x&course_id=" + COURSE,
              "customer_email=siti%40example.co.id&course_id=" + COURSE + "%00-premium",
              "customer_email=siti%40example.co.id&course_id=" + COURSE + "%0a"):
        status, rbody = api(st, "GET", "/v1/access?" + q)
        check(status == 400 and error_code(rbody) == "invalid_parameter",
              f"/v1/access?{q} -> 400 invalid_parameter ({status} {rbody[:160]!r})")


def path_control(st):
    """In the path, libmicrohttpd's decoded "%00" ended the string:
    /v1/orders/ID%00/../../x answered the order (an outside attack,
    2026-12-07).  A control character escaped in the path is 400."""
    good = json.dumps(body(course_id="bikin-film-pendek")).encode()
    status, rbody = api(st, "POST", "/v1/orders", raw=good)
    check(status == 201, f"an order to read ({status})")
    oid = json.loads(rbody)["order_id"]
    status, _ = api(st, "GET", f"/v1/orders/{oid}")
    check(status == 200, f"GET /v1/orders/{oid} -> 200")
    for tail in ("%00/../../x", "%00", "%0a", "%1F", "%7f"):
        status, rbody = api(st, "GET", f"/v1/orders/{oid}{tail}")
        check(status == 400 and error_code(rbody) == "invalid_path",
              f"GET /v1/orders/{oid}{tail} -> 400 invalid_path ({status} {rbody[:120]!r})")
    # the same characters sent raw (the attack on the fix: they reached the
    # handler); a raw NUL ends the C string libmicrohttpd hands over, so
    # it is left to the front (nginx refuses it)
    port = urllib.parse.urlparse(st.url("api")).port
    for raw in (b"\x01", b"\x1b[2J", b"\x7f"):
        req = (b"GET /v1/orders/" + oid.encode() + raw + b" HTTP/1.1\r\nHost: x\r\n"
               b"Authorization: Bearer " + st.secret("api-token").encode() +
               b"\r\nConnection: close\r\n\r\n")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(req)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        check(data.startswith(b"HTTP/1.1 400") and b"invalid_path" in data,
              f"GET /v1/orders/{oid}{raw!r} sent raw -> 400 invalid_path ({data[:60]!r})")


def auth_before_routing(st):
    """Without the token nothing tells which paths exist: 401 everywhere."""
    for method, path in (("GET", "/"), ("GET", "/nope"), ("GET", "/v1/admin"),
                         ("DELETE", "/v1/orders/ORD-1"), ("GET", "/v1/orders/a/b"),
                         ("POST", "/v1/courses"), ("GET", "/.env"), ("PUT", "/v2/orders")):
        status, rbody = api(st, method, path, token=None)
        check(status == 401 and error_code(rbody) == "unauthorized",
              f"{method} {path} without a token -> 401 ({status})")
    status, rbody = api(st, "GET", "/nope")
    check(status == 404, f"GET /nope with the token -> 404 ({status})")


def main():
    with kasirtest.Stack.for_test() as st:
        for d in ("order",):
            if not st.available(d):
                raise AssertionError(f"bin/kasir-{d} not built")
        st.start("fake-midtrans")
        st.start("order")
        alive = Alive(st, ["order"])
        check(orders_count(st) == 0, "no orders to start with")

        bad_tokens(st)
        check(orders_count(st) == 0, "nothing stored by requests with bad tokens")
        alive.check("after the bad tokens")

        auth_before_routing(st)
        control_characters(st)
        check(orders_count(st) == 0, "nothing stored by control characters")
        hostile_orders(st)
        check(orders_count(st) == 0, "nothing stored by the hostile order requests")
        alive.check("after the hostile order requests")

        # Duplicate keys: ambiguous input (a proxy may read the last one,
        # cJSON the first) is refused, like kasir-ingest does.
        before = orders_count(st)
        status, rbody = api(st, "POST", "/v1/orders",
                            raw=b'{"course_id":"agentbar-dasar","course_id":'
                                b'"bikin-film-pendek","customer":' +
                                json.dumps(CUST).encode() + b"}")
        check(status == 400 and error_code(rbody) == "duplicate_key",
              f"duplicate course_id key -> 400 duplicate_key ({status} {rbody[:200]!r})")
        status, rbody = api(st, "POST", "/v1/orders",
                            raw=b'{"course_id":"agentbar-dasar","customer":'
                                b'{"name":"A","name":"B","email":"a@example.com",'
                                b'"phone":"081234567890"}}')
        check(status == 400 and error_code(rbody) == "duplicate_key",
              f"duplicate nested key -> 400 duplicate_key ({status})")
        dup_orders = orders_count(st) - before
        check(dup_orders == 0, f"no order stored from duplicate-key bodies ({dup_orders})")

        # A legal order whose customer name is an injection string: stored
        # verbatim (parameterized SQL), the tables survive.
        name = "Robert'); DROP TABLE orders.orders; --"
        status, rbody = api(st, "POST", "/v1/orders", body(customer=dict(CUST, name=name)))
        check(status in (200, 201), f"an injection string as a customer name is a legal "
                                    f"order ({status}: {rbody[:200]!r})")
        oid = json.loads(rbody)["order_id"]
        rows = st.sql("SELECT count(*) FROM orders.orders WHERE order_id = %s", (oid,))
        check(rows[0][0] == 1 and orders_count(st) == 1 + dup_orders,
              "orders.orders intact and holds exactly that one order")
        stored = st.sql("SELECT customer_name FROM orders.orders WHERE order_id = %s",
                        (oid,))[0][0]
        check(stored == name, f"the name is stored verbatim ({stored!r})")
        price = st.sql("SELECT amount FROM orders.orders WHERE order_id = %s", (oid,))
        check(int(price[0][0]) == 154600, f"the price came from the catalog ({price})")
        path_control(st)
        alive.check("at the end")
    print("hostile_order: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
