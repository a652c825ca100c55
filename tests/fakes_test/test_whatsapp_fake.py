"""whatsapp-fake: the Cloud API message request, one JSON line per accepted
message, 401 on a bad token, the failure modes, and the Cloud API's rules
for a business that starts the conversation: free text only inside the
customer's 24-hour window (else 131047), templates only when registered
(else 132001) and with their parameter count (else 132000)."""

import json
import os
import socket

from fakeutil import (check, finish, free_port, request, start, stop,
                      tempdir, wait_for)

TOKEN = "EAAG-test-token"
PATH = "/v21.0/1234567890/messages"
AUTH = {"Authorization": "Bearer " + TOKEN}


def msg(to="628123456789", text="Pembayaran Rp150.000 diterima"):
    return {"messaging_product": "whatsapp", "recipient_type": "individual",
            "to": to, "type": "text", "text": {"body": text}}


def lines(out):
    try:
        with open(out) as f:
            return [json.loads(x) for x in f if x.strip()]
    except FileNotFoundError:
        return []


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return False
    except ConnectionRefusedError:
        return True
    except OSError:  # e.g. reset while the listener is being closed
        return False


TEMPLATES = {"templates": [
    {"kind": "receipt", "name": "kasir_bukti_pembayaran", "language": "id",
     "category": "UTILITY", "parameters": ["customer_name", "amount"],
     "body": "Halo {{1}}, pembayaran {{2}} sudah kami terima. Terima kasih!"},
]}


def template(name="kasir_bukti_pembayaran", lang="id",
             params=("Budi Santoso", "Rp150.000"), to="+6281234567890"):
    return {"messaging_product": "whatsapp", "to": to, "type": "template",
            "template": {"name": name, "language": {"code": lang},
                         "components": [{"type": "body", "parameters": [
                             {"type": "text", "text": p} for p in params]}]}}


def rules(port, out):
    """The Cloud API's rules, answered as the real API does."""
    n0 = len(lines(out))
    st, b, _ = request(port, "POST", PATH, msg(to="6289900000001"),
                       headers=AUTH)
    check(st == 400 and b["error"]["code"] == 131047 and
          b["error"]["message"] == "(#131047) Re-engagement message" and
          b["error"]["type"] == "OAuthException" and
          b["error"]["error_data"]["messaging_product"] == "whatsapp" and
          "24 hours" in b["error"]["error_data"]["details"] and
          b["error"]["fbtrace_id"],
          "free text outside the customer-service window -> 131047", st, b)
    st, b, _ = request(port, "POST", PATH, template(), headers=AUTH)
    check(st == 200, "registered template, right parameters -> 200", st, b)
    ls = lines(out)
    check(ls[-1]["text"] == "Halo Budi Santoso, pembayaran Rp150.000 sudah "
          "kami terima. Terima kasih!" and
          ls[-1]["request"]["template"]["name"] == "kasir_bukti_pembayaran",
          "the recorded text is the registered body with its parameters",
          ls[-1])
    for body, code, what in (
            (template(name="kasir_tidak_ada"), 132001, "unknown name"),
            (template(lang="en_US"), 132001, "unregistered language"),
            (template(params=("Budi",)), 132000, "too few parameters"),
            (template(params=("a", "b", "c")), 132000,
             "too many parameters"),
            (template(params=("Budi\nSantoso", "x")), 132018,
             "a newline in a parameter")):
        st, b, _ = request(port, "POST", PATH, body, headers=AUTH)
        check(st == 400 and b["error"]["code"] == code,
              "%s -> %d" % (what, code), st, b)
    st, b, _ = request(port, "POST", PATH, template(name="kasir_tidak_ada"),
                       headers=AUTH)
    check(b["error"]["message"] == "(#132001) Template name does not exist "
          "in the translation" and b["error"]["error_data"]["details"] ==
          "template name (kasir_tidak_ada) does not exist in id",
          "132001 names the template and the language", b)
    check(len(lines(out)) == n0 + 1, "refused messages are not recorded")
    # the template deleted at Meta, then registered again
    st, b, _ = request(port, "POST", "/_fake/templates", {"templates": []})
    check(st == 200, "templates replaced", st, b)
    st, b, _ = request(port, "POST", PATH, template(), headers=AUTH)
    check(st == 400 and b["error"]["code"] == 132001,
          "a template no longer registered -> 132001", st, b)
    request(port, "POST", "/_fake/templates", TEMPLATES)
    st, b, _ = request(port, "POST", "/_fake/mode", {"mode": "error",
                                                     "code": 131047})
    check(st == 200, "mode error", st, b)
    st, b, _ = request(port, "POST", PATH, template(), headers=AUTH)
    check(st == 400 and b["error"]["code"] == 131047,
          "mode error answers the code asked for", st, b)
    st, b, _ = request(port, "POST", "/_fake/mode", {"mode": "error"})
    check(st == 400, "mode error without a code is refused", st, b)
    request(port, "POST", "/_fake/mode", {"mode": "normal"})
    check(len(lines(out)) == n0 + 1, "refused messages are not recorded")
    # the customer writes: free text is allowed for 24 hours
    st, b, _ = request(port, "POST", "/_fake/inbound",
                       {"from": "6289900000001"})
    check(st == 200, "inbound opens the window", st, b)
    st, b, _ = request(port, "POST", PATH, msg(to="+6289900000001",
                                               text="Balasan"),
                       headers=AUTH)
    check(st == 200 and lines(out)[-1]["text"] == "Balasan",
          "free text inside the window -> 200", st, b)


def main():
    tmp = tempdir("whatsapp-fake-test-")
    out = os.path.join(tmp, "wa", "messages.jsonl")
    tokfile = os.path.join(tmp, "token")
    tplfile = os.path.join(tmp, "templates.json")
    with open(tokfile, "w") as f:
        f.write(TOKEN + "\n")
    with open(tplfile, "w") as f:
        json.dump(TEMPLATES, f)
    port = free_port()
    proc = start("whatsapp-fake", ["--listen", "127.0.0.1:%d" % port,
                                   "--out", out, "--token-file", tokfile,
                                   "--templates", tplfile,
                                   "--timeout-delay", "2"], port,
                 os.path.join(tmp, "wa.log"))
    try:
        rules(port, out)
        request(port, "POST", "/_fake/reset", {})
        # the rest sends free text to a customer who wrote first
        request(port, "POST", "/_fake/inbound", {"from": "628123456789"})
        st, b, _ = request(port, "POST", PATH, msg(),
                           headers=dict(AUTH, **{"X-Idempotency-Key":
                                                 "job-7"}))
        check(st == 200 and b["messaging_product"] == "whatsapp" and
              b["contacts"][0]["wa_id"] == "628123456789" and
              b["messages"][0]["id"].startswith("wamid."),
              "accepted -> 200 Cloud API answer", st, b)
        ls = lines(out)
        check(len(ls) == 1 and ls[0]["request"] == msg() and
              ls[0]["phone_number_id"] == "1234567890" and
              ls[0]["idempotency"] == "job-7" and ls[0]["received_at"],
              "one JSON line per accepted message", ls)
        st, b, _ = request(port, "POST", PATH, template(), headers=AUTH)
        check(st == 200 and len(lines(out)) == 2, "template accepted", st, b)

        st, b, _ = request(port, "POST", PATH, msg(), headers={
            "Authorization": "Bearer wrong"})
        check(st == 401 and b["error"]["code"] == 190, "bad token -> 401",
              st, b)
        st, b, _ = request(port, "POST", PATH, msg())
        check(st == 401, "no token -> 401", st)
        for body, code, what in (
                (dict(msg(), messaging_product="sms"), 100, "product"),
                ({"messaging_product": "whatsapp", "to": "628123456789",
                  "type": "text", "text": {}}, 100, "text body"),
                (dict(msg(), type="sticker"), 100, "type"),
                (msg(to="12345"), 131026, "short recipient"),
                (msg(to="62812abc4567"), 131026, "non-digit recipient")):
            st, b, _ = request(port, "POST", PATH, body, headers=AUTH)
            check(st == 400 and b["error"]["code"] == code,
                  "400 for bad %s" % what, st, b)
        st, b, _ = request(port, "POST", "/v21.0/abc/messages", msg(),
                           headers=AUTH)
        check(st == 400, "bad path -> 400", st)
        check(len(lines(out)) == 2, "rejected requests not recorded")

        request(port, "POST", "/_fake/mode", {"mode": "5xx"})
        st, b, _ = request(port, "POST", PATH, msg(), headers=AUTH)
        check(st == 503, "mode 5xx -> 503", st, b)
        request(port, "POST", "/_fake/mode", {"mode": "4xx"})
        st, b, _ = request(port, "POST", PATH, msg(), headers=AUTH)
        check(st == 400 and b["error"]["code"] == 131026,
              "mode 4xx -> 400 invalid recipient", st, b)
        check(len(lines(out)) == 2, "failing modes record nothing")

        request(port, "POST", "/_fake/mode", {"mode": "timeout",
                                              "delay_s": 1.5})
        try:
            request(port, "POST", PATH, msg(text="late"), headers=AUTH,
                    timeout=0.5)
            timed_out = False
        except (socket.timeout, TimeoutError):
            timed_out = True
        check(timed_out and lines(out)[-1]["request"]["text"]["body"] ==
              "late", "timeout mode: recorded, answer too late")
        request(port, "POST", "/_fake/mode", {"mode": "normal"})

        st, b, _ = request(port, "POST", "/_fake/mode", {"mode": "refuse"})
        check(st == 400, "refuse on the shared port needs for_s", st, b)
        st, b, _ = request(port, "POST", "/_fake/mode", {"mode": "refuse",
                                                         "for_s": 1.5})
        check(st == 200 and wait_for(lambda: refused(port), 1.2),
              "refuse: connections refused", st)
        check(wait_for(lambda: not refused(port), 5),
              "refuse ends after for_s")
        st, b, _ = request(port, "POST", PATH, msg(), headers=AUTH)
        check(st == 200, "normal again after refuse", st)
        st, b, _ = request(port, "GET", "/_fake/messages")
        check(st == 200 and len(b["messages"]) == len(lines(out)) == 4,
              "GET /_fake/messages", st, b and len(b["messages"]))
    finally:
        stop(proc)
    finish()


if __name__ == "__main__":
    main()
