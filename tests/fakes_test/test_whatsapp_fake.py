"""whatsapp-fake: the Cloud API message request, one JSON line per accepted
message, 401 on a bad token, and the failure modes."""

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


def main():
    tmp = tempdir("whatsapp-fake-test-")
    out = os.path.join(tmp, "wa", "messages.jsonl")
    tokfile = os.path.join(tmp, "token")
    with open(tokfile, "w") as f:
        f.write(TOKEN + "\n")
    port = free_port()
    proc = start("whatsapp-fake", ["--listen", "127.0.0.1:%d" % port,
                                   "--out", out, "--token-file", tokfile,
                                   "--timeout-delay", "2"], port,
                 os.path.join(tmp, "wa.log"))
    try:
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
        tpl = {"messaging_product": "whatsapp", "to": "+6281234567890",
               "type": "template", "template": {
                   "name": "receipt", "language": {"code": "id"},
                   "components": [{"type": "body", "parameters": [
                       {"type": "text", "text": "Budi"}]}]}}
        st, b, _ = request(port, "POST", PATH, tpl, headers=AUTH)
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

        request(port, "POST", "/_fake/mode", {"mode": "timeout"})
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
