"""deploy/dev/demo.py - one purchase through the running dev stack.

Reads var/dev.env (written by deploy/dev/up), then:
  1. GET  /v1/courses                         pick a course (KASIR_DEMO_COURSE or the first)
  2. POST /v1/orders                          create the order (Snap token from the fake)
  3. POST /_fake/orders/{id}/pay              the customer pays at "Midtrans": the fake
                                              sends a signed settlement notification to
                                              kasir-ingest; kasir-order holds it until
                                              kasir-reconciler's Status API answer
                                              confirms the payment
  4. GET  /v1/orders/{id}                     until status PAID
  5. GET  /v1/access?customer_email=&course_id=  access granted
and prints the order's timeline.  Exit 0 only when the order is PAID and
access is active.
"""

import json
import os
import shlex
import sys
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "lib"))

import kasirtest  # noqa: E402

VAR = os.path.abspath(os.environ.get("KASIR_DEV_VAR") or os.path.join(SRC, "var"))
TIMEOUT = float(os.environ.get("KASIR_DEMO_TIMEOUT", "30"))


def load_env():
    path = os.path.join(VAR, "dev.env")
    if not os.path.exists(path):
        sys.exit(f"demo: {path} missing: run deploy/dev/up first")
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                env[k] = (shlex.split(v) or [""])[0]
    return env


def fail(msg, resp=None):
    print(f"demo: FAILED: {msg}" + (f"\n  {resp!r}" if resp is not None else ""), file=sys.stderr)
    sys.exit(1)


def step(msg):
    print(f"\n== {msg}", flush=True)


def show_timeline(order):
    rows = order.get("timeline") or []
    if not rows:
        print("  (no transitions)")
    for r in rows:
        at = r.get("at", "")
        frm = r.get("from_status") or r.get("from") or ""
        to = r.get("to_status") or r.get("to") or r.get("status") or ""
        rest = {k: v for k, v in r.items()
                if k not in ("at", "from_status", "to_status", "from", "to", "status", "order_id")
                and v not in (None, "")}
        arrow = f"{frm or '-'} -> {to}" if (frm or to) else ""
        print(f"  {at}  {arrow}  {json.dumps(rest, ensure_ascii=False)}")
    for e in order.get("entitlements") or []:
        print(f"  access: {json.dumps(e, ensure_ascii=False)}")


def main():
    env = load_env()
    api, token = env["KASIR_API_URL"], env["KASIR_API_TOKEN"]
    fake = env["KASIR_FAKE_MIDTRANS_URL"]
    try:
        r = kasirtest.http("GET", api + "/v1/courses", token=token)
    except OSError as e:
        fail(f"kasir-order API at {api} not reachable ({e}); is kasir-order built and up?")
    if r.status != 200:
        fail("GET /v1/courses", r)
    courses = r.body.get("courses") if isinstance(r.body, dict) else r.body
    if not courses:
        fail("the catalog is empty", r)
    want = os.environ.get("KASIR_DEMO_COURSE")
    course = next((c for c in courses if c.get("id") == want), courses[0])
    price = course.get("price")
    rupiah = f"Rp{price:,}".replace(",", ".") if isinstance(price, int) else f"Rp{price}"
    step(f"course: {course.get('id')} - {course.get('title')} ({rupiah})")

    email = f"demo+{uuid.uuid4().hex[:8]}@example.com"
    order_req = {"course_id": course["id"],
                 "customer": {"name": "Budi Santoso", "email": email, "phone": "+6281234567890"}}
    r = kasirtest.http("POST", api + "/v1/orders", order_req, token=token,
                       headers={"Idempotency-Key": str(uuid.uuid4())})
    if r.status not in (200, 201) or not isinstance(r.body, dict) or "order_id" not in r.body:
        fail("POST /v1/orders", r)
    oid = r.body["order_id"]
    step(f"order {oid} created: status {r.body.get('status')}, pay at {r.body.get('redirect_url')}")

    r = kasirtest.http("POST", f"{fake}/_fake/orders/{oid}/pay", {"payment_type": "bank_transfer"})
    if r.status // 100 != 2:
        fail(f"POST /_fake/orders/{oid}/pay", r)
    step("paid at the fake Midtrans (bank_transfer); waiting for kasir to see the settlement")

    deadline = time.monotonic() + TIMEOUT
    order = None
    while time.monotonic() < deadline:
        r = kasirtest.http("GET", f"{api}/v1/orders/{oid}", token=token)
        if r.status == 200 and isinstance(r.body, dict):
            order = r.body
            if order.get("status") == "PAID":
                break
        time.sleep(0.3)
    if not order or order.get("status") != "PAID":
        fail(f"order not PAID after {TIMEOUT:.0f}s", r)

    q = urllib.parse.urlencode({"customer_email": email, "course_id": course["id"]})
    r = kasirtest.http("GET", f"{api}/v1/access?{q}", token=token)
    access = r.body if r.status == 200 and isinstance(r.body, dict) else {}
    step(f"order {oid}: {order.get('status')}")
    show_timeline(order)
    if not access.get("active"):
        fail("access is not active", r)
    until = access.get("valid_until") or "lifetime"
    step(f"access granted: {email} -> {course['id']} (until {until})")
    show_receipts(env, oid)
    return 0


def show_receipts(env, oid):
    """The receipt by email (SMTP sink) and WhatsApp (fake API), when
    kasir-notifier runs; informative only (the notifier has its own tests)."""
    if "KASIR_NOTIFIER_ADMIN_URL" not in env:
        return
    maildir, wa = env.get("KASIR_SMTP_MAILDIR"), env.get("KASIR_WHATSAPP_LOG")
    found = {}
    deadline = time.monotonic() + float(os.environ.get("KASIR_DEMO_RECEIPT_WAIT", "15"))
    while time.monotonic() < deadline and len(found) < 2:
        if maildir and os.path.isdir(maildir) and "email" not in found:
            for n in sorted(os.listdir(maildir)):
                path = os.path.join(maildir, n)
                with open(path, "rb") as f:
                    if oid.encode() in f.read():
                        found["email"] = path
        if wa and os.path.exists(wa) and "whatsapp" not in found:
            with open(wa, "rb") as f:
                if oid.encode() in f.read():
                    found["whatsapp"] = wa
        time.sleep(0.3)
    for kind in ("email", "whatsapp"):
        where = found.get(kind)
        print(f"   {kind} about this order: {'received, in ' + where if where else 'not seen yet (is kasir-notifier up?)'}")


if __name__ == "__main__":
    sys.exit(main())
