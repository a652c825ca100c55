"""The real chain: fake Midtrans -> kasir-ingest -> kasir-order -> orders
stream -> kasir-notifier -> SMTP sink + fake WhatsApp (all through the team
harness tests/lib/kasirtest.py).  A paid order gets exactly one receipt
email and one receipt WhatsApp with the customer's name, the course title
and the amount in rupiah; an order left unpaid gets its payment
instructions and never a receipt."""
import email
import email.policy
import time

import kasirtest

RECEIPT_SUBJECT = "Pembayaran diterima"
RECEIPT_WA = "sudah kami terima"
COURSE = "Kelas Bikin Film Pendek dengan Ponsel"


def mails(st):
    out = []
    for path in st.mail_messages():
        if not path.endswith(".eml"):
            continue
        with open(path, "rb") as f:
            out.append(email.message_from_bytes(f.read(), policy=email.policy.default))
    return out


def receipts_mail(st, oid):
    return [m for m in mails(st) if m.get("X-Kasir-Order") == oid
            and RECEIPT_SUBJECT in str(m["Subject"])]


def receipts_wa(st, oid):
    return [w for w in st.whatsapp_messages()
            if oid in w["text"] and RECEIPT_WA in w["text"]]


def create(st, name, email_addr, phone):
    r = st.api("POST", "/v1/orders", {"course_id": "bikin-film-pendek",
                                      "customer": {"name": name, "email": email_addr,
                                                   "phone": phone}})
    assert r.status in (200, 201), r
    return r.body["order_id"]


def main():
    with kasirtest.Stack.for_test(name="notifier-chain",
                                  overrides={"NOTIFY_POLL": "200ms"}) as st:
        # the reconciler confirms each payment with the Status API
        for svc in ("ingest", "order", "notifier", "reconciler"):
            if not st.available(svc):
                raise AssertionError("kasir-%s is not built or has no config template" % svc)
        st.start_all(services=["ingest", "order", "notifier", "reconciler"])

        paid_oid = create(st, "Budi Santoso", "budi@example.com", "+6281211112222")
        unpaid_oid = create(st, "Ani Wijaya", "ani@example.com", "081233334444")
        r = st.fake("POST", "/_fake/orders/%s/pay" % paid_oid, {"payment_type": "bank_transfer"})
        assert r.status in (200, 201, 202), r

        st.wait_until(lambda: len(receipts_mail(st, paid_oid)) == 1, 60, "receipt email")
        st.wait_until(lambda: len(receipts_wa(st, paid_oid)) == 1, 60, "receipt WhatsApp")
        m = receipts_mail(st, paid_oid)[0]
        body = m.get_content()
        for want in ("Budi Santoso", COURSE, "Rp150.000", paid_oid):
            assert want in body, "receipt email lacks %r:\n%s" % (want, body)
        assert "budi@example.com" in str(m["To"]), m["To"]
        assert COURSE in str(m["Subject"]), str(m["Subject"])
        w = receipts_wa(st, paid_oid)[0]
        assert w["request"]["to"] == "6281211112222", w["request"]["to"]
        assert w["request"]["type"] == "template", w["request"]
        for want in ("Budi Santoso", COURSE, "Rp150.000"):
            assert want in w["text"], w["text"]

        # the unpaid order: instructions with the Snap link, never a receipt
        st.wait_until(lambda: [m for m in mails(st) if m.get("X-Kasir-Order") == unpaid_oid],
                      60, "instructions email of the unpaid order")
        instr = [m for m in mails(st) if m.get("X-Kasir-Order") == unpaid_oid][0]
        assert "Ani Wijaya" in instr.get_content() and "Rp150.000" in instr.get_content()
        # the instructions carry the Snap payment link (order.payment_link)
        assert "/snap/v4/redirection/" in instr.get_content(), instr.get_content()
        time.sleep(3)
        assert receipts_mail(st, unpaid_oid) == [] and receipts_wa(st, unpaid_oid) == []
        # nothing more than one receipt per channel for the paid order
        assert len(receipts_mail(st, paid_oid)) == 1 and len(receipts_wa(st, paid_oid)) == 1
        print("ok")


if __name__ == "__main__":
    main()
