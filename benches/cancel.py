#!/usr/bin/env python3
"""Ctrl-C on CPU-bound queries: how long each operator takes to stop, locally and on a cluster.

Each query runs in the release `strata -c`, with standard error on a pseudo-terminal (so the
progress line is drawn as at the prompt). Once the query has burnt --busy seconds of CPU, the
client gets SIGINT; the bench measures the time until it exits (status 130, `Error: query
cancelled`), and on a cluster also until the executors' CPU use stops growing. It also checks
that a progress line with a growing row count was drawn while the query ran.

    cargo build --release
    python3 benches/cancel.py [--busy 2] [--only local|cluster] [--queries name,...]

Exits non-zero if any query took longer than --limit seconds (1 by default) to stop, failed
otherwise, finished before it was interrupted, or drew no progress.
"""

import argparse
import os
import re
import select
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from processes import ROOT, cpu_seconds, executor, release_binary, scheduler  # noqa: E402

# (name, operator that is busy when interrupted, SQL, runs on a cluster too)
QUERIES = [
    (
        "nested_loop_join",
        "NestedLoopJoinExec",
        "SELECT count(*), sum(length(a.street_name || b.street_name)) FROM violations a,"
        " violations b, people c WHERE a.plate_id <> b.plate_id",
        True,
    ),
    (
        "hash_join",
        "HashJoinExec",
        "SELECT count(*) FROM violations a JOIN violations b ON a.registration_state ="
        " b.registration_state JOIN violations c ON b.registration_state = c.registration_state",
        True,
    ),
    (
        "sort",
        "SortExec",
        "SELECT k FROM (SELECT (a.summons_number * b.summons_number) % 1000003 AS k"
        " FROM violations a, violations b, people c) s ORDER BY k LIMIT 1 OFFSET 100000000",
        True,
    ),
    (
        "aggregate",
        "AggregateExec",
        "SELECT a.summons_number % 100003 AS g, b.violation_precinct AS p, count(*) AS n"
        " FROM violations a, violations b, people c GROUP BY 1, 2 ORDER BY n DESC LIMIT 1",
        True,
    ),
    (
        "window",
        "BoundedWindowAggExec",
        "SELECT max(r) FROM (SELECT row_number() OVER (PARTITION BY a.registration_state"
        " ORDER BY b.summons_number, c.person_id) AS r FROM violations a, violations b, people c) s",
        True,
    ),
    (
        "recursive_cte",
        "RecursiveQueryExec",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 1000000000)"
        " SELECT count(*) FROM r",
        False,
    ),
    (
        "series_aggregate",
        "AggregateExec",
        "SELECT sum(value % 7) FROM generate_series(1, 500000000000)",
        False,
    ),
]

PROGRESS_ROWS = re.compile(r"([0-9,]+) rows(?: processed)?")


def read_ready(fd, wait):
    """What `fd` has to read within `wait` seconds (b"" when nothing, or once it is closed)."""
    ready, _, _ = select.select([fd], [], [], wait)
    if not ready:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""


def interrupt(exe, sql, busy, cluster=None, executors=()):
    """Run `sql`, interrupt it once busy, and return what happened."""
    args = [exe, "-c", sql]
    if cluster:
        args += ["--cluster", f"df://{cluster}"]
    master, slave = os.openpty()
    proc = subprocess.Popen(
        args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave
    )
    os.close(slave)
    watched = [proc.pid] + [e.pid for e in executors]
    base = sum(cpu_seconds(p) for p in watched)
    err = b""
    started = time.monotonic()
    finished_early = False
    while True:
        err += read_ready(master, 0.05)
        if proc.poll() is not None:
            finished_early = True
            break
        # Past the second after which the progress line appears, and busy.
        if time.monotonic() - started >= 1.6 and sum(cpu_seconds(p) for p in watched) - base >= busy:
            break
        if time.monotonic() - started > 120:
            break
    ran = time.monotonic() - started
    sent = time.monotonic()
    if not finished_early:
        proc.send_signal(signal.SIGINT)
    while proc.poll() is None:
        err += read_ready(master, 0.01)
    exited = time.monotonic() - sent
    # The executors have stopped when their CPU time stops growing for 0.3 s.
    idle = None
    if executors and not finished_early:
        last, still, t = None, 0.0, sent
        while time.monotonic() - sent < 30:
            now = sum(cpu_seconds(e.pid) for e in executors)
            if last is not None and now - last < 0.02:
                still += 0.1
                if still >= 0.3:
                    idle = t - sent
                    break
            else:
                still, t = 0.0, time.monotonic()
            last = now
            time.sleep(0.1)
    while chunk := read_ready(master, 0.05):
        err += chunk
    os.close(master)
    proc.stdout.read()
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", err.decode(errors="replace"))
    counts = [int(m.replace(",", "")) for m in PROGRESS_ROWS.findall(text)]
    progress = "stages" in text or (len(counts) >= 2 and max(counts) > 0)
    final = text.replace("\r", "\n").strip().splitlines()
    message = next((line for line in reversed(final) if line.startswith("Error")), "")
    return {
        "ran": ran,
        "finished_early": finished_early,
        "code": proc.returncode,
        "exited": exited,
        "idle": idle,
        "progress": progress,
        "message": message,
    }


def report(where, name, operator, r, limit):
    ok = (
        not r["finished_early"]
        and r["code"] == 130
        and r["message"] == "Error: query cancelled"
        and r["exited"] <= limit
        and (r["idle"] is None or r["idle"] <= limit)
        and r["progress"]
    )
    idle = "" if r["idle"] is None else f"{r['idle']:.2f}"
    state = "ok" if ok else "FAIL (too slow)"
    if r["finished_early"]:
        state = "FAIL (finished before the interrupt)"
    elif not r["progress"]:
        state = "FAIL (no progress line)"
    elif r["code"] != 130 or r["message"] != "Error: query cancelled":
        state = f"FAIL (status {r['code']}: {r['message']})"
    print(
        f"{where:<8} {name:<18} {operator:<22} {r['ran']:>7.1f} {r['exited']:>9.3f} {idle:>10}  {state}",
        flush=True,
    )
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--busy", type=float, default=2.0, help="CPU seconds before the interrupt")
    ap.add_argument("--limit", type=float, default=1.0, help="seconds allowed to stop")
    ap.add_argument("--only", choices=["local", "cluster"])
    ap.add_argument("--queries", help="comma-separated names (default: all)")
    ap.add_argument("--strata", default=release_binary())
    args = ap.parse_args()
    queries = QUERIES
    if args.queries:
        queries = [q for q in QUERIES if q[0] in args.queries.split(",")]
    print(f"{'where':<8} {'query':<18} {'operator':<22} {'ran s':>7} {'stopped s':>9} {'executors s':>10}")
    failures = 0
    if args.only in (None, "local"):
        for name, operator, sql, _ in queries:
            r = interrupt(args.strata, sql, args.busy)
            failures += not report("local", name, operator, r, args.limit)
    if args.only in (None, "cluster"):
        sched = scheduler(args.strata)
        execs = [executor(args.strata, sched.addr) for _ in range(2)]
        try:
            for name, operator, sql, on_cluster in queries:
                if not on_cluster:
                    continue
                r = interrupt(args.strata, sql, args.busy, sched.addr, execs)
                failures += not report("cluster", name, operator, r, args.limit)
            # The scheduler still serves after all of that.
            out = subprocess.run(
                [args.strata, "--cluster", f"df://{sched.addr}", "-q", "--format", "csv", "-c",
                 "SELECT count(*) FROM violations"],
                cwd=ROOT, capture_output=True, text=True, timeout=60,
            )
            served = out.stdout.strip().splitlines()[-1:] == ["7123"]
            print(f"cluster answers afterwards: {'yes' if served else 'NO: ' + out.stderr.strip()}")
            failures += not served
        finally:
            for e in execs:
                e.stop()
            sched.stop()
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
