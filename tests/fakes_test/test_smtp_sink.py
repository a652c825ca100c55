"""smtp-sink: a real SMTP server storing one .eml file per message, with
AUTH, and modes that refuse connections or answer 4xx/5xx."""

import email
import email.policy
import glob
import os
import smtplib
import socket

from fakeutil import (check, finish, free_port, request, start, stop,
                      tempdir, wait_for)

PASSWORD = "s3cret-smtp"
MSG = ("From: Kasir <kasir@example.id>\r\nTo: budi@example.id\r\n"
       "Subject: =?utf-8?q?Pembayaran_diterima?=\r\n"
       "Message-ID: <job-42@kasir>\r\n\r\nTerima kasih, Rp150.000\r\n")


def send(port, rcpt="budi@example.id", login=True, password=PASSWORD):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("test")
        if login:
            s.login("kasir", password)
        return s.sendmail("kasir@example.id", [rcpt], MSG)


def code_of(fn):
    try:
        fn()
        return 250
    except smtplib.SMTPRecipientsRefused as e:
        return list(e.recipients.values())[0][0]
    except smtplib.SMTPResponseException as e:
        return e.smtp_code
    except (OSError, smtplib.SMTPException) as e:
        return type(e).__name__


def main():
    tmp = tempdir("smtp-sink-test-")
    maildir = os.path.join(tmp, "mail")
    pwfile = os.path.join(tmp, "pw")
    with open(pwfile, "w") as f:
        f.write(PASSWORD + "\n")
    port, cport = free_port(), free_port()
    proc = start("smtp-sink", ["--listen", "127.0.0.1:%d" % port,
                               "--control", "127.0.0.1:%d" % cport,
                               "--maildir", maildir,
                               "--auth-password-file", pwfile], port,
                 os.path.join(tmp, "sink.log"))
    try:
        def emls():
            return sorted(glob.glob(os.path.join(maildir, "*.eml")))

        check(code_of(lambda: send(port)) == 250, "authenticated send ok")
        files = emls()
        check(len(files) == 1, "one message -> one .eml file", files)
        if files:
            with open(files[0], "rb") as f:
                msg = email.message_from_bytes(f.read(),
                                               policy=email.policy.default)
            check(str(msg["Subject"]) == "Pembayaran diterima" and
                  msg["Message-ID"] == "<job-42@kasir>" and
                  "Rp150.000" in msg.get_content() and
                  msg["X-Smtp-Sink-Rcpt-To"] == "budi@example.id",
                  "stored message intact with envelope", dict(msg))
        check(not [n for n in os.listdir(maildir) if not n.endswith(".eml")],
              "no temp files left", os.listdir(maildir))
        check(code_of(lambda: send(port, password="wrong")) == 535,
              "wrong password -> 535")
        def login_mech(mech):
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                s.ehlo("test")
                s.user, s.password = "kasir", PASSWORD
                return s.auth(mech, getattr(s, "auth_" + mech.lower()))[0]
        check(login_mech("LOGIN") == 235 and login_mech("PLAIN") == 235,
              "AUTH LOGIN and PLAIN accepted")
        check(code_of(lambda: send(port, login=False)) == 530,
              "no AUTH -> 530")
        check(len(emls()) == 1, "rejected sends store nothing")
        st, b, _ = request(cport, "GET", "/_fake/messages")
        check(st == 200 and len(b["messages"]) == 1 and
              b["messages"][0]["headers"]["Subject"] ==
              "Pembayaran diterima", "GET /_fake/messages", b)

        # 4xx: transient failure at MAIL
        st, _, _ = request(cport, "POST", "/_fake/mode", {"mode": "4xx"})
        check(st == 200 and code_of(lambda: send(port)) == 451,
              "mode 4xx answers 451")
        request(cport, "POST", "/_fake/mode", {"mode": "5xx"})
        check(code_of(lambda: send(port)) == 554, "mode 5xx answers 554")
        request(cport, "POST", "/_fake/mode", {"mode": "temp"})
        check(code_of(lambda: send(port)) == 451, "alias temp answers 451")
        check(len(emls()) == 1, "failing modes store nothing")

        # refuse: the port is closed
        request(cport, "POST", "/_fake/mode", {"mode": "refuse"})
        refused = wait_for(lambda: code_of(lambda: socket.create_connection(
            ("127.0.0.1", port), 1).close()) == "ConnectionRefusedError", 5)
        check(refused, "mode refuse: connection refused")
        st, _, _ = request(cport, "POST", "/_fake/mode", {"mode": "normal"})
        check(code_of(lambda: send(port)) == 250 and len(emls()) == 2,
              "back to normal: delivered again")
        st, b, _ = request(cport, "POST", "/_fake/mode", {"mode": "bogus"})
        check(st == 400, "unknown mode -> 400", st)
    finally:
        stop(proc)
    finish()


if __name__ == "__main__":
    main()
