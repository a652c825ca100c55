"""Request smuggling against every HTTP listener (issue 13, item 4):
kasir-ingest's notification listener, kasir-order's API and the admin
listeners (/healthz, /readyz, /metrics) of all four daemons.

Each ambiguous framing (Content-Length with Transfer-Encoding in both
orders, several Content-Length headers, equal or not, a Content-Length
that is not a plain number, whitespace before a header's colon, a
transfer coding other than chunked) is sent on a raw socket with a second,
validly signed notification hidden behind it.  Every listener must answer
exactly one 4xx (400; libmicrohttpd's own 413 for an overflowing number),
never a 2xx, and close the connection; the hidden notification must not
be stored.  The same notification sent on its own afterwards is stored,
which proves it was valid and that the test would see it.
"""

import json
import socket
import sys
import urllib.parse

import kasirtest
from hostile_util import DOCS_KEY, check, notif

DAEMONS = ("ingest", "order", "notifier", "reconciler")
HIDDEN_ORDER = "smuggle-hidden-1"

SHAPES = [
    ("CL.TE", "Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n"),
    ("TE.CL", "Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n"),
    ("CL+TE identity", "Content-Length: {n}\r\nTransfer-Encoding: identity\r\n"),
    ("two CL differing", "Content-Length: 5\r\nContent-Length: {n}\r\n"),
    ("two CL equal", "Content-Length: {n}\r\nContent-Length: {n}\r\n"),
    ("CL list", "Content-Length: {n}, {n}\r\n"),
    ("CL signed", "Content-Length: +{n}\r\n"),
    ("CL negative", "Content-Length: -{n}\r\n"),
    ("CL hex", "Content-Length: 0x10\r\n"),
    ("CL overflow", "Content-Length: 184467440737095516160\r\n"),
    # found by an outside attack, 2026-12-07: whitespace before the colon
    # hid the header from the check (RFC 9112 5.1: 400), and a coding
    # other than chunked was neither refused nor answered
    ("TE with space before colon, CL", "Transfer-Encoding : chunked\r\nContent-Length: {n}\r\n"),
    ("CL with space before colon, TE", "Content-Length : {n}\r\nTransfer-Encoding: chunked\r\n"),
    ("TE xchunked alone", "Transfer-Encoding: xchunked\r\n"),
    ("TE chunked, identity alone", "Transfer-Encoding: chunked, identity\r\n"),
    # the attack on that fix: a folded TE line (libmicrohttpd names it
    # "Transfer-Encodingchunked") and a vertical tab before the colon
    ("TE obs-fold, CL", "Transfer-Encoding:\r\n chunked\r\nContent-Length: {n}\r\n"),
    ("TE with VT before colon, CL", "Transfer-Encoding\x0b: chunked\r\nContent-Length: {n}\r\n"),
]


def hidden_request(path):
    body = notif(HIDDEN_ORDER)
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"\r\n").encode() + body


def exchange(port, data, timeout=10):
    """Sends data, reads until the server closes; (all bytes, closed)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    buf, closed = b"", False
    try:
        s.sendall(data)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            buf += chunk
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = True
    finally:
        s.close()
    return buf, closed


def attack(port, method, path, hidden, name, fmt):
    # The outer body reads as the hidden request to a Content-Length
    # reader and as an empty chunked body ("0\r\n\r\n") to a TE reader.
    outer = b"0\r\n\r\n" + hidden
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\n" + fmt.format(n=5) + "\r\n")
    data, closed = exchange(port, head.encode() + outer)
    text = data.decode("latin-1")
    statuses = [line.split()[1] for line in text.split("\r\n")
                if line.startswith("HTTP/1.")]
    check(closed, f"{port} {name}: connection closed")
    check(statuses and statuses[0] in ("400", "413") and
          not any(s.startswith("2") for s in statuses),
          f"{port} {name}: refused, nothing answered 2xx ({statuses})")
    return text


def stored(st):
    return st.sql("SELECT count(*) FROM ingest.payment_event WHERE order_id = %s",
                  (HIDDEN_ORDER,))[0][0]


def main():
    with kasirtest.Stack.for_test(name="hostile_framing", server_key=DOCS_KEY) as st:
        st.start_all(services=list(DAEMONS))
        ingest_path = urllib.parse.urlparse(st.url("ingest")).path
        hidden = hidden_request(ingest_path)
        listeners = [("ingest notifications", st.port("INGEST_HTTP"), "POST", ingest_path),
                     ("order API", st.port("ORDER_HTTP"), "POST", "/v1/orders")]
        for svc in DAEMONS:
            u = urllib.parse.urlparse(st.url(f"{svc}_admin"))
            listeners.append((f"{svc} admin", u.port, "GET", "/healthz"))
        ours = 0
        for what, port, method, path in listeners:
            for name, fmt in SHAPES:
                text = attack(port, method, path, hidden, f"{what} {name}", fmt)
                if "bad_framing" in text:
                    ours += 1
                    check("X-Content-Type-Options: nosniff" in text and
                          "Content-Type: application/json" in text,
                          f"{what} {name}: JSON 400 with nosniff")
        check(ours >= 5 * len(listeners),
              f"the CL/TE and repeated-CL shapes are refused by kasir ({ours})")
        check(stored(st) == 0, "no smuggled notification stored")

        # control: the hidden request on its own is a valid notification
        data, _ = exchange(st.port("INGEST_HTTP"),
                           hidden.replace(b"HTTP/1.1\r\n",
                                          b"HTTP/1.1\r\nConnection: close\r\n", 1))
        check(data.startswith(b"HTTP/1.1 200"), f"the hidden notification alone -> 200 "
              f"({data[:40]!r})")
        check(stored(st) == 1, "and is stored")
    print("hostile_framing: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
