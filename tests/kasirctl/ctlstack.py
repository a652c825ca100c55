"""ctlstack - helpers for kasirctl's integration tests: the whole stack
(tests/lib/kasirtest.py: PostgreSQL, the four daemons, the fakes), and
kasirctl run as a person would run it, in text and in --json."""

import json
import os
import subprocess

import kasirtest

DAEMONS = ["ingest", "order", "notifier", "reconciler"]

CUSTOMER = {"name": "Budi Santoso", "email": "budi@example.com",
            "phone": "+6281234567890"}


class Ctl:
    """Runs kasirctl against a kasirtest.Stack."""

    def __init__(self, st):
        self.st = st
        self.config = st.render("kasirctl")
        self.binary = st.binary("kasirctl")
        if not os.access(self.binary, os.X_OK):
            raise kasirtest.HarnessError(f"{self.binary}: build kasirctl first")

    def run(self, *args, role=None, env=None, config=True, cwd=None, timeout=60):
        """(returncode, stdout, stderr)."""
        e = dict(os.environ)
        for k in ("KASIR_ROLE", "KASIRCTL_CONFIG", "KASIR_DEV_ENV"):
            e.pop(k, None)
        if role:
            e["KASIR_ROLE"] = role
        e.update(env or {})
        argv = [self.binary] + (["--config", self.config] if config else []) + list(args)
        r = subprocess.run(argv, capture_output=True, text=True, env=e,
                           cwd=cwd or self.st.dir, timeout=timeout)
        print(f"$ kasirctl {' '.join(args)}{' (as ' + role + ')' if role else ''}"
              f" -> {r.returncode}\n{r.stdout[:3000]}{r.stderr[:2000]}", flush=True)
        return r.returncode, r.stdout, r.stderr

    def json(self, *args, role=None, env=None, expect=0):
        """Runs with --json; checks the exit status (expect=None: any);
        returns the object."""
        rc, out, err = self.run("--json", *args, role=role, env=env)
        assert expect is None or rc == expect, \
            f"kasirctl {args}: exit {rc}, want {expect}\n{out}{err}"
        try:
            obj = json.loads(out)
        except ValueError as e:
            raise AssertionError(f"kasirctl --json {args}: not JSON ({e}): {out!r}")
        assert isinstance(obj, dict) and "ok" in obj, obj
        return obj

    def text(self, *args, role=None, env=None, expect=0):
        rc, out, err = self.run(*args, role=role, env=env)
        assert rc == expect, f"kasirctl {args}: exit {rc}, want {expect}\n{out}{err}"
        return out, err


def start(name, overrides=None):
    """A Stack with every daemon; the caller uses it as a context manager."""
    st = kasirtest.Stack.for_test(name=name, overrides=overrides)
    return st


def create_order(st, course="bikin-film-pendek", customer=None):
    r = st.api("POST", "/v1/orders", {"course_id": course,
                                      "customer": customer or CUSTOMER})
    assert r.status == 201, r
    return r.body["order_id"]


def pay(st, order_id):
    r = st.fake("POST", f"/_fake/orders/{order_id}/pay")
    assert r.status in (200, 202), r
    st.wait_until(lambda: st.sql("SELECT status FROM orders.orders WHERE order_id = %s",
                                 (order_id,)) == [("PAID",)],
                  timeout=30, what=f"{order_id} PAID")
    st.wait_until(lambda: active_entitlements(st, order_id) == 1, timeout=30,
                  what=f"{order_id} entitlement")


def active_entitlements(st, order_id):
    """Entitlements that give access now (what GET /v1/access answers)."""
    return st.sql("SELECT count(*) FROM orders.entitlements WHERE order_id = %s"
                  " AND revoked_at IS NULL AND (valid_until IS NULL"
                  " OR valid_until > now())", (order_id,))[0][0]


def ops_audit(st, command, target=None):
    """ops.audit rows for command (and target): (actor, role, result,
    reason, incident_id, error)."""
    q = ("SELECT actor, role, result, reason, incident_id, error FROM ops.audit"
         " WHERE command = %s")
    p = [command]
    if target is not None:
        q += " AND target = %s"
        p.append(target)
    return st.sql(q + " ORDER BY id", tuple(p))
