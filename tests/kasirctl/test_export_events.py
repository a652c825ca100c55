"""kasirctl export events: the stored Midtrans notifications of a period as
CSV, from kasir-ingest ("export.events" {from, to} -> {"events": [...]},
engineer role, audited).  Needs that admin command in kasir-ingest."""

import csv
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kasirtest  # noqa: E402
from ctlstack import Ctl, create_order, pay  # noqa: E402


def main():
    with kasirtest.Stack.for_test(name="kasirctl_export_events") as st:
        # the reconciler confirms the payment with the Status API
        st.start_all(services=["ingest", "order", "reconciler"])
        ctl = Ctl(st)
        oid = create_order(st)
        pay(st, oid)
        rc, out, err = ctl.run("export", "events", "--from", "2000-01-01", "--to",
                               "2100-01-01", "--format", "csv", "--reason", "audit")
        assert rc == 0, f"export events failed ({rc}): {err}"
        rows = list(csv.DictReader(io.StringIO(out, newline="")))
        assert any(r.get("order_id") == oid for r in rows), rows
        # every text cell quoted (services/kasirctl/csv.c), the header too
        head = out.split("\r\n", 1)[0]
        assert head.startswith('"event_id","received_at","order_id"'), head
        line = next(ln for ln in out.split("\r\n") if f'"{oid}"' in ln)
        assert f',"{oid}",' in line, line
        r = ctl.json("export", "events", "--from", "2000-01-01", "--to", "2100-01-01",
                     role="support", expect=1)
        assert r["error"]["code"] == "role_required", r
    print("kasirctl export events test passed")


if __name__ == "__main__":
    main()
