#!/usr/bin/env python3
"""TPC-H under a memory limit, side by side with DuckDB under the same limit: every query
gives DuckDB's answer (spilling where it must) or fails with the one-line out-of-memory error
naming the operator that could not spill; never an abort from the allocator or the
operating system.

    cargo build --release
    pip install duckdb==2.0.1 tpchgen-cli==4.0.0
    python3 benches/memory.py [--scale 1] [--memory-limit 256M] [--data DIR] [--queries 1,2]
        [--no-duckdb] [--json out.json]

The data is the Parquet tpchgen-cli writes by default, made once in bench-data/tpchgen-sf<scale>
(as `compare.py --data tpchgen` uses it), unless `--data` names a folder of TABLE/*.parquet.
Each query runs once in a process of its own, Strata's (`strata -f`, answer written as CSV to
a file) and DuckDB's (`SET memory_limit` to the same number of bytes, `temp_directory` in a
scratch folder). Prints per query the outcome, the query's time (as each engine reports it),
the bytes Strata spilled and the peak resident memory of each process. DuckDB's process is a
Python interpreter, about 60 MiB of it before any query. A query DuckDB cannot answer under
the limit is checked against DuckDB's answer without one.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from processes import ROOT, release_binary  # noqa: E402
from tpch_files import TABLES, catalog, csv_rows, query_path, same_rows, tpchgen_data  # noqa: E402

# The timing line `strata` prints after a result written to a file.
TIMING = re.compile(r"^(\d+) rows? in ([0-9.]+) s(?:, ([0-9.]+) (B|KiB|MiB|GiB|TiB) spilled to disk)?")
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}

# Run by DuckDB's process: argv is data folder, query file, memory limit ('' for none), temp
# folder. Prints {"seconds": s, "rows": [...]} or exits non-zero with DuckDB's error.
DUCKDB = """
import json, sys, time
sys.path.insert(0, %r)
import duckdb
from crosscheck import fmt, normalize
data, query, limit, tmp = sys.argv[1:5]
con = duckdb.connect(config={"temp_directory": tmp})
con.execute("SET enable_progress_bar = false")
if limit:
    con.execute(f"SET memory_limit = '{limit}'")
for t in %r:
    con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{data}/{t}/*.parquet')")
sql = open(query).read()
start = time.perf_counter()
rows = con.execute(sql).fetchall()
took = time.perf_counter() - start
print(json.dumps({"seconds": took, "rows": [normalize(" ".join(fmt(v) for v in r)) for r in rows]}))
""" % (str(ROOT / "sql-tests"), TABLES)


def parse_size(text):
    """Bytes in a size such as 256M or 2G (powers of 1024, as `--memory-limit` reads it)."""
    t = text.strip().upper().rstrip("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    return int(float(t.rstrip("KMGT")) * mult)


def child(args, timeout):
    """(exit code or -signal, stdout, stderr, wall seconds, peak resident MiB) of a process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=err)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        timer.cancel()
        took = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        code = os.waitstatus_to_exitcode(status)
        return code, out.read().decode(), err.read().decode().strip(), took, usage.ru_maxrss / 1024


def run_strata(exe, cat, n, limit, timeout, tmp):
    """A dict: state ('ok', 'error' or 'killed'), detail (the rows, or what went wrong),
    seconds, spilled bytes and peak MiB."""
    answer = os.path.join(tmp, "answer.csv")
    code, out, err, wall, peak = child(
        [exe, "--catalog", cat, "--format", "csv", "-o", answer, "--memory-limit", limit,
         "-f", str(query_path(n))],
        timeout,
    )
    r = {"seconds": wall, "spilled": 0, "peak_mib": peak}
    if code < 0:
        return {**r, "state": "killed", "detail": f"signal {-code} {err}"}
    if code != 0:
        return {**r, "state": "error", "detail": err}
    timing = TIMING.match(out.strip().splitlines()[-1]) if out.strip() else None
    if timing:
        r["seconds"] = float(timing[2])
        if timing[3]:
            r["spilled"] = int(float(timing[3]) * UNITS[timing[4]])
    with open(answer) as f:
        return {**r, "state": "ok", "detail": csv_rows(f.read())}


def run_duckdb(data, n, limit, timeout, tmp):
    """As run_strata, for DuckDB (no spilled bytes)."""
    code, out, err, wall, peak = child(
        [sys.executable, "-c", DUCKDB, data, str(query_path(n)), limit, tmp], timeout
    )
    r = {"seconds": wall, "spilled": None, "peak_mib": peak}
    if code != 0:
        last = err.splitlines()[-1] if err else f"status {code}"
        return {**r, "state": "error" if code > 0 else "killed", "detail": last}
    got = json.loads(out.strip().splitlines()[-1])
    return {**r, "state": "ok", "seconds": got["seconds"], "detail": got["rows"]}


def verdict(r, expected):
    """right, wrong, out of memory (the one-line error) or other; and a note."""
    if r["state"] == "ok":
        return ("right" if same_rows(r["detail"], expected) else "wrong"), ""
    d = r["detail"]
    if r["state"] == "error" and d.startswith("Error: out of memory: ") and "\n" not in d:
        return "out of memory", d[len("Error: out of memory: "):][:160]
    return "other", f"{r['state']}: {d[:300]}"


def mib(n):
    return f"{n / (1 << 20):,.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--data", help="folder with TABLE/*.parquet (default: tpchgen-cli's files)")
    ap.add_argument("--memory-limit", default="256M")
    ap.add_argument("--queries", help="comma-separated query numbers (default: 1-22)")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--strata", default=release_binary())
    ap.add_argument("--no-duckdb", action="store_true",
                    help="run DuckDB only for the answers (no limit), not side by side")
    ap.add_argument("--json", help="write every query's figures to this file")
    args = ap.parse_args()
    queries = [int(q) for q in args.queries.split(",")] if args.queries else list(range(1, 23))
    data = os.path.abspath(args.data or tpchgen_data(args.scale) / "parquet")
    duck_limit = f"{parse_size(args.memory_limit)}B"

    with tempfile.TemporaryDirectory(prefix="strata-memory-") as tmp:
        cat = catalog(data, tmp)
        print(f"TPC-H scale {args.scale:g} ({data}), --memory-limit {args.memory_limit}; "
              f"DuckDB memory_limit {duck_limit}")
        print(f"{'query':<6}{'Strata':<15}{'s':>8}{'spilled MiB':>13}{'peak MiB':>10}   "
              f"{'DuckDB':<15}{'s':>8}{'peak MiB':>10}   note")
        counts = {"right": 0, "out of memory": 0, "wrong": 0, "other": 0}
        report = []
        for n in queries:
            duck = run_duckdb(data, n, "" if args.no_duckdb else duck_limit, args.timeout, tmp)
            if duck["state"] == "ok":
                expected = duck["detail"]
            else:
                expected = run_duckdb(data, n, "", args.timeout, tmp)
                if expected["state"] != "ok":
                    sys.exit(f"q{n:02}: DuckDB gave no answer: {expected['detail']}")
                expected = expected["detail"]
            duck_v = verdict(duck, expected)[0] if duck["state"] == "ok" else duck["detail"][:60]
            got = run_strata(args.strata, cat, n, args.memory_limit, args.timeout, tmp)
            v, note = verdict(got, expected)
            counts[v] += 1
            duck_cols = ("" if args.no_duckdb else
                         f"{duck_v[:15]:<15}{duck['seconds']:>8.2f}{duck['peak_mib']:>10,.0f}")
            print(f"q{n:02}   {v:<15}{got['seconds']:>8.2f}{mib(got['spilled']):>13}"
                  f"{got['peak_mib']:>10,.0f}   {duck_cols:<33}   {note}", flush=True)
            report.append({
                "query": f"q{n:02}", "strata": v, "strata_seconds": got["seconds"],
                "strata_spilled_bytes": got["spilled"], "strata_peak_mib": got["peak_mib"],
                "note": note, "duckdb": None if args.no_duckdb else duck_v,
                "duckdb_seconds": None if args.no_duckdb else duck["seconds"],
                "duckdb_peak_mib": None if args.no_duckdb else duck["peak_mib"],
            })
        print(", ".join(f"{v} {k}" for k, v in counts.items()))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"scale": args.scale, "memory_limit": args.memory_limit,
                           "queries": report}, f, indent=1)
        sys.exit(1 if counts["wrong"] or counts["other"] else 0)


if __name__ == "__main__":
    main()
