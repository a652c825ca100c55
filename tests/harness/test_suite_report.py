"""tests/suite-report: the budget table and the skipped-test check of
tests/run-all.  Under CI=true a run fails when any test was skipped: a
ctest Skipped/Not Run/Disabled, a cmocka "[  SKIPPED ]" line or a "SKIP:"
line in a test's output; a clean report passes."""

import os
import shutil
import subprocess
import sys

import kasirtest

REPORT = os.path.join(kasirtest.source_dir(), "tests", "suite-report")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def case(name, secs, status="run", out="", skipped=None):
    sk = f'<skipped message="{skipped}"/>' if skipped else ""
    return (f'<testcase name="{name}" classname="{name}" time="{secs}" status="{status}">'
            f"{sk}<system-out>{out}</system-out></testcase>")


def junit(path, cases):
    with open(path, "w") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="x">'
                + "".join(cases) + "</testsuite>\n")


def report(d, files, *flags):
    steps = os.path.join(d, "steps.tsv")
    with open(steps, "w") as f:
        f.write("build build\t20\t\n")
        for i, p in enumerate(files):
            f.write(f"step{i}\t100\t{p}\n")
    return subprocess.run([sys.executable, REPORT, *flags, "--total", "130", steps],
                          capture_output=True, text=True)


d = os.path.join(kasirtest.build_dir(), "test-runs", f"harness_suite_report-{os.getpid()}")
shutil.rmtree(d, ignore_errors=True)
os.makedirs(d)
clean = os.path.join(d, "clean.xml")
junit(clean, [case(f"t{i}", i) for i in range(12)] +
      [case("cm", 0.1, out="[==========] 1 test(s) run.\n[  PASSED  ] 1 test(s).\n"),
       case("py", 0.2, out="mentions SKIP: mid-line is not a skip\n")])
r = report(d, [clean], "--fail-on-skip")
check(r.returncode == 0, f"a clean run passes under --fail-on-skip ({r.returncode}: {r.stdout[-300:]})")
check("no test skipped" in r.stdout, "says no test was skipped")
slow = [l.split()[1] for l in r.stdout.split("ten slowest tests\n", 1)[1].splitlines()[:10]]
check(slow == [f"t{i}" for i in range(11, 1, -1)], f"the ten slowest, slowest first ({slow})")
check("130s  (within the 900 s budget)" in r.stdout, "the total against the budget")
check(r.stdout.strip().splitlines()[-1].startswith("suite-report: 130 s (within 900 s), 14 tests, 0 skipped"),
      "a one-line summary last")

for name, cases in {
        "exit 77": [case("s77", 1, status="notrun", out="SKIP: no samples\n",
                         skipped="SKIP_RETURN_CODE=77")],
        "disabled": [case("dis", 0, status="disabled", out="Disabled")],
        "cmocka skip": [case("cm", 1, out="[ RUN      ] a\n[  SKIPPED ] a\n")],
        "partial SKIP: line": [case("py", 1, out="part one ok\nSKIP: part two needs X\n")]}.items():
    p = os.path.join(d, "skip.xml")
    junit(p, [case("fine", 2)] + cases)
    r = report(d, [clean, p], "--fail-on-skip")
    check(r.returncode == 1, f"{name}: fails the run under --fail-on-skip ({r.returncode})")
    check("skipped tests (FAILED" in r.stdout, f"{name}: named in the report")
    r = report(d, [clean, p])
    check(r.returncode == 0 and "skipped tests (note)" in r.stdout,
          f"{name}: only a note without --fail-on-skip")

r = report(d, [clean, os.path.join(d, "missing.xml")])
check(r.returncode == 1 and "no test report" in r.stdout, "a missing JUnit report fails")

if failures:
    print(f"{len(failures)} failure(s); kept {d}")
    sys.exit(1)
shutil.rmtree(d)
print("all ok")
