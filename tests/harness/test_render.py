"""Config template rendering, port allocation and secrets of kasirtest.Stack
(no PostgreSQL needed)."""

import os
import re
import stat
import sys

import kasirtest
from kasirtest import HarnessError, Stack, render_template, yaml_lookup

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def expect_error(fn, pattern, what):
    try:
        fn()
    except HarnessError as e:
        check(re.search(pattern, str(e)) is not None, f"{what}: {e}")
        return
    check(False, f"{what}: no error raised")


base = os.path.join(kasirtest.build_dir(), "test-runs", f"harness_render-{os.getpid()}")
st = Stack(base, overrides={"ORDER_EXPIRY": "15m", "DB_HOST": "localhost"},
           remove_on_success=True)
st._write_secrets()

# --- the placeholder engine ---------------------------------------------------
expect_error(lambda: st.render_text("a: 1\nb: @NOPE@\n", "t.yaml"),
             r"^t\.yaml:2: unknown placeholder @NOPE@", "unknown placeholder names file:line")
expect_error(lambda: st.render_text("x: @PORTX@\ny: @ALSO_BAD@\n", "u.yaml"),
             r"u\.yaml:1: .*@PORTX@\nu\.yaml:2: .*@ALSO_BAD@", "every unknown placeholder reported")
out = st.render_text("a: @PORT_ORDER_HTTP@\nb: @PORT_ORDER_HTTP@\nc: @PORT_INGEST_HTTP@\n")
a, b, c = (int(x) for x in re.findall(r": (\d+)", out))
check(a == b, "same port name gives the same port in one template")
check(a != c, "different port names give different ports")
out2 = st.render_text("other: @PORT_ORDER_HTTP@\n")
check(out2 == f"other: {a}\n", "same port name gives the same port across templates")
check(st.port("ORDER_HTTP") == a and st.port("PORT_ORDER_HTTP") == a, "port() agrees with templates")
check(st.render_text("e: @ORDER_EXPIRY=24h@ r: @ORDER_RETRY=3@\n") == "e: 15m r: 3\n",
      "tunable: override wins, else default")
check(st.render_text("h: @DB_HOST@ s: @SRC@ v: @VAR@ x: @SECRETS@\n")
      == f"h: localhost s: {st.src} v: {st.dir} x: {st.secrets_dir}\n",
      "built-ins, and overrides may replace a built-in")
check(st.render_text("mail: kasir@example.com # @ alone\n") == "mail: kasir@example.com # @ alone\n",
      "text that is not a placeholder is left alone")
check(render_template("p: @PORT_X@\n", {}, port=lambda n: 4242) == "p: 4242\n",
      "render_template uses the port callback")

# ports persist across Stack objects over the same directory
st_again = Stack(base)
check(st_again.port("PORT_ORDER_HTTP") == a, "ports.json keeps allocations for the next run")

# --- secrets ------------------------------------------------------------------
sd = st.secrets_dir
check(stat.S_IMODE(os.stat(sd).st_mode) == 0o700, "secrets dir is 0700")
names = sorted(os.listdir(sd))
want = sorted(["msg-k1", "midtrans-server-key", "api-token", "smtp-password",
               "whatsapp-token", "evidence-key"] + [f"db-{r}" for r in kasirtest.db_roles()])
check(names == want, f"secret files: {names}")
check(all(stat.S_IMODE(os.stat(os.path.join(sd, n)).st_mode) == 0o600 for n in names),
      "every secret file is 0600")
check(re.fullmatch(r"[0-9a-f]{64}", st.secret("msg-k1")) is not None, "msg-k1 is 64 hex chars")
before = {n: st.secret(n) for n in names}
st_again._write_secrets()
check(before == {n: st_again.secret(n) for n in names}, "secrets are generated once, then kept")
st_key = Stack(base, server_key="askvnoibnosifnboseofinbofinfgbiufglnbfg")
st_key._write_secrets()
check(st_key.secret("midtrans-server-key") == "askvnoibnosifnboseofinbofinfgbiufglnbfg",
      "server_key= sets the Midtrans server key")

# --- yaml_lookup ----------------------------------------------------------------
doc = """log:
  level: info
admin:
  listen: 127.0.0.1:9102   # comment
  socket: "ipc:///run/kasir/order.sock"
database:
  url: "host=x"
"""
check(yaml_lookup(doc, "admin.listen") == "127.0.0.1:9102", "yaml_lookup nested scalar")
check(yaml_lookup(doc, "admin.socket") == "ipc:///run/kasir/order.sock", "yaml_lookup strips quotes")
check(yaml_lookup(doc, "admin.nope") is None, "yaml_lookup absent key")

# --- the real templates of the services render --------------------------------
st.pg = kasirtest.PgCluster(os.path.join(base, "pg"), port=5999)
for svc in list(kasirtest.DAEMONS) + ["kasirctl"]:
    if not os.path.exists(st.template_path(svc)):
        print(f"note {svc}: no config.example.yaml yet")
        continue
    try:
        path = st.render(svc)
    except HarnessError as e:
        check(False, f"{svc} template renders: {e}")
        continue
    text = open(path).read()
    check(not re.search(r"@[A-Z][A-Z0-9_]*(=[^@\n]*)?@", text), f"{svc}: no placeholder left")
    if svc != "kasirctl":
        listen = yaml_lookup(text, "admin.listen")
        check(listen is not None and listen.startswith("127.0.0.1:"),
              f"{svc}: admin.listen rendered ({listen})")

if failures:
    print(f"{len(failures)} failure(s); kept {base}")
    sys.exit(1)
import shutil  # noqa: E402
shutil.rmtree(base)
print("all ok")
