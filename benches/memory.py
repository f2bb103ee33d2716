#!/usr/bin/env python3
"""TPC-H under a small memory limit: every query gives DuckDB's answer (spilling where it
must) or fails with the one-line out-of-memory error naming the operator that could not
spill; never an abort from the allocator or the operating system.

    cargo build --release
    pip install duckdb==2.0.1 tpchgen-cli==4.0.0
    python3 benches/memory.py [--scale 1] [--memory-limit 256M] [--data DIR] [--queries 1,2]

Prints per query the outcome, the time and the peak resident memory of the process.
"""

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from processes import ROOT, release_binary  # noqa: E402
from tpch_files import catalog, csv_rows, duckdb_answers, generate, query_path, same_rows  # noqa: E402


def run(exe, cat, n, limit, timeout):
    """(state, detail, seconds, peak resident MiB) for query n in a process of its own."""
    args = [exe, "--catalog", cat, "-q", "--format", "csv", "--memory-limit", limit,
            "-f", str(query_path(n))]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=err)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        took = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode().strip()
    peak = usage.ru_maxrss / 1024
    if proc.returncode < 0:
        return "killed", f"signal {-proc.returncode} {stderr}", took, peak
    if proc.returncode != 0:
        return "error", stderr, took, peak
    return "ok", stdout, took, peak


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--data", help="folder with TABLE/*.parquet (default: generate)")
    ap.add_argument("--memory-limit", default="256M")
    ap.add_argument("--queries", help="comma-separated query numbers (default: 1-22)")
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--strata", default=release_binary())
    args = ap.parse_args()
    queries = [int(q) for q in args.queries.split(",")] if args.queries else list(range(1, 23))

    with tempfile.TemporaryDirectory(prefix="strata-memory-") as tmp:
        data = args.data or tmp
        if not args.data:
            generate(data, args.scale)
        data = os.path.abspath(data)
        cat = catalog(data, tmp)
        # In a process of its own: a child's peak memory counts its parent's at the fork.
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            expected = pool.apply(duckdb_answers, (data, queries))
        print(f"TPC-H scale {args.scale} under --memory-limit {args.memory_limit}")
        counts = {"right": 0, "out of memory": 0, "wrong": 0, "other": 0}
        for n in queries:
            state, detail, took, peak = run(args.strata, cat, n, args.memory_limit, args.timeout)
            if state == "ok":
                got = csv_rows(detail)
                verdict = "right" if same_rows(got, expected[n]) else "wrong"
                note = ""
            elif state == "error" and detail.startswith("Error: out of memory: ") and "\n" not in detail:
                verdict, note = "out of memory", detail[len("Error: out of memory: "):][:110]
            else:
                verdict, note = "other", f"{state}: {detail[:200]}"
            counts[verdict] += 1
            print(f"q{n:02} {verdict:<14} {took:>7.1f} s {peak:>7.0f} MiB peak  {note}", flush=True)
        print(", ".join(f"{v} {k}" for k, v in counts.items()))
        sys.exit(1 if counts["wrong"] or counts["other"] else 0)


if __name__ == "__main__":
    main()
