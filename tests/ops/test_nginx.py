"""deploy/nginx: the reverse proxy sample.

`nginx -t` on deploy/nginx/kasir.conf (+ kasir-notification.inc) inside a
minimal nginx.conf in a temp prefix, with a generated self-signed
certificate; then the same config actually runs (listen ports moved to free
local ports, the upstreams to a recording Python HTTP server) and:
  - POST /midtrans/notification over https with TLS 1.2 reaches the
    upstream with X-Real-IP and X-Forwarded-For ending in the client
    address (a spoofed X-Forwarded-For stays in front);
  - the same path over plain http is proxied too: no redirect;
  - any other http path redirects to https; other https paths are 404;
  - a body over 64 KiB is refused with 413 and never reaches the upstream;
  - /v1/ on the API server name reaches the order API upstream.
Skips (77) when nginx or openssl is not installed.
"""
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading

import kasirtest

SRC = kasirtest.source_dir()
NGX = os.path.join(SRC, "deploy", "nginx")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


class Recorder(http.server.BaseHTTPRequestHandler):
    seen = []

    def _any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        Recorder.seen.append({"port": self.server.server_port, "path": self.path,
                              "method": self.command, "len": len(body),
                              "headers": {k.lower(): v for k, v in self.headers.items()}})
        out = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _any

    def log_message(self, *a):
        pass


def serve():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def request(port, method, path, host, body=None, tls=False, headers=None):
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    else:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = {"Host": host, **(headers or {})}
    if body is not None:
        h["Content-Type"] = "application/json"
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    ver = c.sock.version() if tls and c.sock else None
    c.close()
    return r.status, dict(r.getheaders()), data, ver


def main():
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)
    openssl = shutil.which("openssl")
    if not nginx or not openssl:
        kasirtest.skip("nginx or openssl not installed (apt-get install nginx-light openssl)")
    with tempfile.TemporaryDirectory(prefix="kasir-nginx-") as p:
        for d in ("logs", "tmp", "conf"):
            os.makedirs(os.path.join(p, d))
        crt, key = os.path.join(p, "conf", "fullchain.pem"), os.path.join(p, "conf", "privkey.pem")
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=pay.example.com", "-keyout", key, "-out", crt],
                       check=True, capture_output=True, timeout=60)
        ingest, api = serve(), serve()
        http_port, https_port = kasirtest.free_port(), None
        https_port = kasirtest.free_port(avoid=(http_port,))
        with open(os.path.join(NGX, "kasir.conf")) as f:
            conf = f.read()
        conf = conf.replace("/etc/ssl/kasir/fullchain.pem", crt) \
                   .replace("/etc/ssl/kasir/privkey.pem", key) \
                   .replace("/etc/nginx/kasir-notification.inc",
                            os.path.join(NGX, "kasir-notification.inc")) \
                   .replace("server 127.0.0.1:8101;", f"server 127.0.0.1:{ingest.server_port};") \
                   .replace("server 127.0.0.1:8102;", f"server 127.0.0.1:{api.server_port};")
        conf = re.sub(r"^\s*listen \[::\]:\d+.*\n", "", conf, flags=re.M)
        conf = re.sub(r"listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;", conf)
        conf = re.sub(r"listen 80;", f"listen 127.0.0.1:{http_port};", conf)
        with open(os.path.join(p, "conf", "kasir.conf"), "w") as f:
            f.write(conf)
        tmp = os.path.join(p, "tmp")
        main_conf = os.path.join(p, "conf", "nginx.conf")
        with open(main_conf, "w") as f:
            f.write(f"""daemon off;
master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/logs/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {p}/logs/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {p}/conf/kasir.conf;
}}
""")
        r = subprocess.run([nginx, "-t", "-p", p, "-c", main_conf, "-e", f"{p}/logs/error.log"],
                           capture_output=True, text=True, timeout=30)
        out = (r.stdout + r.stderr).strip()
        print(f"$ nginx -t -> {r.returncode}\n{out}", flush=True)
        check(r.returncode == 0 and "test is successful" in out, "nginx -t on the sample")

        proc = subprocess.Popen([nginx, "-p", p, "-c", main_conf, "-e", f"{p}/logs/error.log"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            kasirtest.wait_until(lambda: kasirtest.probe_ok([("tcp", http_port),
                                                             ("tcp", https_port)]),
                                 15, "nginx listening")
            body = json.dumps({"order_id": "X", "transaction_status": "settlement"})
            st, _, _, ver = request(https_port, "POST", "/midtrans/notification",
                                    "pay.example.com", body, tls=True,
                                    headers={"X-Forwarded-For": "6.6.6.6"})
            got = [s for s in Recorder.seen if s["port"] == ingest.server_port]
            check(st == 200 and ver == "TLSv1.2" and len(got) == 1,
                  f"https + TLS 1.2 POST reaches kasir-ingest ({st}, {ver}, {len(got)})")
            if got:
                h = got[-1]["headers"]
                check(h.get("x-real-ip") == "127.0.0.1", f"X-Real-IP {h.get('x-real-ip')}")
                xff = [x.strip() for x in h.get("x-forwarded-for", "").split(",")]
                check(xff[-1] == "127.0.0.1" and xff[0] == "6.6.6.6",
                      f"X-Forwarded-For ends with the client ({xff})")
                check(got[-1]["path"] == "/midtrans/notification", "path passed unchanged")

            st, hdrs, _, _ = request(http_port, "POST", "/midtrans/notification",
                                     "pay.example.com", body)
            check(st == 200, f"plain http POST on the notification path is proxied, no redirect ({st})")
            st, hdrs, _, _ = request(http_port, "GET", "/anything", "pay.example.com")
            check(st == 301 and hdrs.get("Location", "").startswith("https://"),
                  f"other http paths redirect to https ({st} {hdrs.get('Location')})")
            st, _, _, _ = request(https_port, "GET", "/v1/orders", "pay.example.com", tls=True)
            check(st == 404, f"the order API is not on the public name ({st})")

            n = len(Recorder.seen)
            st, _, _, _ = request(https_port, "POST", "/midtrans/notification", "pay.example.com",
                                  "x" * (64 * 1024 + 1), tls=True)
            check(st == 413 and len(Recorder.seen) == n,
                  f"a body over 64 KiB: 413, never reaches kasir-ingest ({st})")

            st, _, _, _ = request(https_port, "GET", "/v1/courses", "api.pay.example.com", tls=True)
            got = [s for s in Recorder.seen if s["port"] == api.server_port]
            check(st == 200 and got and got[-1]["path"] == "/v1/courses",
                  f"/v1/ on the API name reaches kasir-order ({st})")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            ingest.shutdown()
            api.shutdown()
    if failures:
        print(f"\n{len(failures)} FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nall nginx checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
