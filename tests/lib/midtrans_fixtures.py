"""The Midtrans notification fixtures every test uses.

tests/data/midtrans/notifications/*.json, written and checked by
tests/data/midtrans/make-fixtures (signed with TEST_KEY, the public example
key of Midtrans's documentation).  They are part of the repository: a
missing directory is a broken checkout, so this fails instead of skipping.
"""

import os

TEST_KEY = "askvnoibnosifnboseofinbofinfgbiufglnbfg"


def directory():
    src = os.environ.get("KASIR_SOURCE_DIR") or os.path.normpath(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    return os.path.join(src, "tests", "data", "midtrans", "notifications")


def notifications():
    """[(file name, raw bytes)] in file-name order (the order tests POST
    them: each order's notifications in the order Midtrans sends them)."""
    d = directory()
    names = sorted(n for n in os.listdir(d) if n.endswith(".json")) \
        if os.path.isdir(d) else []
    if not names:
        raise AssertionError(f"no Midtrans fixtures in {d} "
                             "(tests/data/midtrans/make-fixtures writes them)")
    out = []
    for n in names:
        with open(os.path.join(d, n), "rb") as f:
            out.append((n, f.read()))
    return out
