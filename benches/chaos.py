#!/usr/bin/env python3
"""Cluster chaos: the TPC-H queries on a scheduler and executors (separate processes) while
executors are killed (SIGKILL) and restarted at random moments, from a seed.

Every answer must equal DuckDB's on the same files, or the query must fail with one clear
line; the scheduler must keep serving. Reports queries run, executor kills, wrong answers
(must be 0), failures and their causes.

    cargo build --release
    pip install duckdb==2.0.1 tpchgen-cli==4.0.0
    python3 benches/chaos.py [--scale 0.1] [--rounds 2] [--executors 3] [--seed 1]
        [--kill-every 6] [--data DIR]

Without --data, the tables are generated with tpchgen-cli into a temporary folder.
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from processes import executor, release_binary, scheduler  # noqa: E402
from tpch_files import catalog, duckdb_answers, generate, run_strata, same_rows  # noqa: E402

class Chaos:
    """Kills a random executor every so often and starts a new one a moment later."""

    def __init__(self, exe, sched, executors, seed, every):
        self.exe, self.sched, self.executors = exe, sched, executors
        self.rng = random.Random(seed)
        self.every = every
        self.kills = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop.wait(self.rng.uniform(0.3, 2 * self.every)):
            i = self.rng.randrange(len(self.executors))
            self.executors[i].stop()  # SIGKILL
            self.kills += 1
            if self.stop.wait(self.rng.uniform(0.0, 3.0)):
                break
            self.executors[i] = executor(self.exe, self.sched.addr)


def cause(message):
    """A failure's cause, without the parts that vary between runs (ids, addresses)."""
    words = []
    for w in message.split():
        if any(c.isdigit() for c in w) and len(w) > 3:
            w = "#"
        words.append(w)
    return " ".join(words)[:140]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--data", help="folder with TABLE/*.parquet (default: generate)")
    ap.add_argument("--rounds", type=int, default=2, help="times the 22 queries run")
    ap.add_argument("--queries", help="comma-separated query numbers (default: 1-22)")
    ap.add_argument("--executors", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kill-every", type=float, default=6.0, help="mean seconds between kills")
    ap.add_argument("--timeout", type=int, default=180, help="seconds per query")
    ap.add_argument("--strata", default=release_binary())
    args = ap.parse_args()
    queries = [int(q) for q in args.queries.split(",")] if args.queries else list(range(1, 23))

    tmp = tempfile.TemporaryDirectory(prefix="strata-chaos-")
    data = args.data
    if not data:
        data = tmp.name
        generate(data, args.scale)
    data = os.path.abspath(data)
    cat = catalog(data, tmp.name)
    expected = duckdb_answers(data, queries)

    sched = scheduler(args.strata)
    executors = [executor(args.strata, sched.addr) for _ in range(args.executors)]
    chaos = Chaos(args.strata, sched, executors, args.seed, args.kill_every)
    order = [n for _ in range(args.rounds) for n in queries]
    random.Random(args.seed + 1).shuffle(order)
    ran, wrong, failures = 0, [], {}
    started = time.monotonic()
    chaos.thread.start()
    try:
        for n in order:
            t0 = time.monotonic()
            state, got = run_strata(args.strata, cat, n, args.timeout, cluster=sched.addr)
            ran += 1
            took = time.monotonic() - t0
            if state == "ok" and not same_rows(got, expected[n]):
                wrong.append(n)
                print(f"q{n:02} WRONG in {took:.1f} s: {len(got)} rows, expected "
                      f"{len(expected[n])}; first differing row: "
                      f"{next((g, e) for g, e in zip(got + [None] * len(expected[n]), expected[n] + [None] * len(got)) if g != e)}",
                      flush=True)
            elif state == "failed":
                got = got.splitlines()[-1]
                failures.setdefault(cause(got), []).append(n)
                print(f"q{n:02} failed in {took:.1f} s: {got}", flush=True)
            else:
                print(f"q{n:02} ok in {took:.1f} s", flush=True)
    finally:
        chaos.stop.set()
        chaos.thread.join()
    # With the executors back, the scheduler still answers.
    missing = [i for i, e in enumerate(executors) if e.proc.poll() is not None]
    for i in missing:
        executors[i] = executor(args.strata, sched.addr)
    state, got = run_strata(args.strata, cat, queries[0], args.timeout, cluster=sched.addr)
    serving = state == "ok" and same_rows(got, expected[queries[0]])
    for e in executors:
        e.stop()
    sched.stop()
    tmp.cleanup()

    elapsed = time.monotonic() - started
    print()
    print(f"scale {args.scale}, {args.executors} executors, seed {args.seed}, {elapsed:.0f} s")
    print(f"queries run: {ran}; executor kills: {chaos.kills}")
    print(f"correct: {ran - len(wrong) - sum(len(v) for v in failures.values())}")
    print(f"wrong answers: {len(wrong)} {wrong if wrong else ''}")
    print(f"failures: {sum(len(v) for v in failures.values())}")
    for c, ns in sorted(failures.items(), key=lambda kv: -len(kv[1])):
        print(f"  {len(ns)} x {c} (queries {', '.join(f'q{n:02}' for n in ns)})")
    print(f"scheduler serves afterwards: {'yes' if serving else 'NO: ' + str(got)[:200]}")
    sys.exit(1 if wrong or not serving else 0)


if __name__ == "__main__":
    main()
