"""promrules - the alert rules of deploy/prometheus run by `promtool test
rules` on series a test chooses, typically the values the real daemons
exported on /metrics during the test (scraped(), then grown over time as
the fault goes on), so an alert is proven to fire on what the stack
really exports.
"""
import json
import os
import shutil
import subprocess
import tempfile

import kasirtest

RULES = os.path.join(kasirtest.source_dir(), "deploy", "prometheus", "kasir-alerts.yml")
JOBS = {"ingest": "kasir-ingest", "order": "kasir-order", "notifier": "kasir-notifier",
        "reconciler": "kasir-reconciler"}


def promtool():
    p = shutil.which("promtool")
    if not p:
        kasirtest.skip("promtool is not installed (Debian package prometheus)")
    return p


def scraped(st, svc, name):
    """[(series selector, value)] for every sample of metric `name` on svc's
    /metrics, labelled with job and instance as the scrape config does."""
    out = []
    for (n, labels), v in st.metrics(svc).items():
        if n != name:
            continue
        ls = dict(labels)
        ls.update(job=JOBS[svc], instance=f"{svc}:9100")
        sel = ",".join(f'{k}={json.dumps(str(val))}' for k, val in sorted(ls.items()))
        out.append((f"{name}{{{sel}}}", v))
    if not out:
        raise AssertionError(f"{svc} does not export {name}")
    return out


def fired(alert, series, eval_time):
    """True when `alert` is firing at eval_time (e.g. "40m") over series
    [(selector, promtool values string)], evaluated every minute.  Asks
    promtool to expect nothing: it fails and prints what fired otherwise."""
    test = {"rule_files": [RULES], "evaluation_interval": "1m",
            "tests": [{"interval": "1m",
                       "input_series": [{"series": s, "values": v} for s, v in series],
                       "alert_rule_test": [{"eval_time": eval_time, "alertname": alert,
                                            "exp_alerts": []}]}]}
    with tempfile.TemporaryDirectory(prefix="kasir-promtool-") as tmp:
        path = os.path.join(tmp, "t.yml")
        with open(path, "w") as f:
            json.dump(test, f)  # JSON is YAML
        r = subprocess.run([promtool(), "test", "rules", path], capture_output=True,
                           text=True, timeout=60)
    text = r.stdout + r.stderr
    print(f"promtool {alert} at {eval_time}: rc {r.returncode}\n{text.strip()[-1500:]}",
          flush=True)
    if r.returncode == 0:
        return False
    if f"alertname: {alert}" in text and "got:" in text:
        return True
    raise AssertionError(f"promtool failed for another reason:\n{text}")
