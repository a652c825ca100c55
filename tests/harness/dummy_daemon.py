"""A stand-in daemon for the harness self-tests.

    dummy_daemon.py PORT [--ignore-term] [--die-after S] [--exit-on-term N]
                         [--print TEXT]

Serves GET /readyz (200) on 127.0.0.1:PORT.  --ignore-term: SIGTERM does
nothing (tests the SIGKILL escalation).  --die-after: exits 3 after S s.
--exit-on-term: exit status on SIGTERM (default 0).  --print: writes TEXT to
stderr at start (e.g. a fake sanitizer report).
"""
import argparse
import http.server
import os
import signal
import sys
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("port", type=int)
ap.add_argument("--ignore-term", action="store_true")
ap.add_argument("--die-after", type=float)
ap.add_argument("--exit-on-term", type=int, default=0)
ap.add_argument("--print")
a = ap.parse_args()


class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if self.path == "/readyz" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"ready\n" if code == 200 else b"")

    def log_message(self, *args):
        pass


if a.ignore_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(a.exit_on_term))
if a.print:
    print(a.print, file=sys.stderr, flush=True)
srv = http.server.HTTPServer(("127.0.0.1", a.port), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
print(f"dummy pid {os.getpid()} on {a.port}", flush=True)
if a.die_after:
    time.sleep(a.die_after)
    os._exit(3)
while True:
    time.sleep(1)
