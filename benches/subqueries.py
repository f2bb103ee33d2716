#!/usr/bin/env python3
"""Correlated subqueries on a large outer table: Strata's release binary against DuckDB.

Each shape is a correlated subquery DataFusion alone cannot plan; Strata runs it either as a
join (the correlation lifted to the top of the subquery) or by pushing the outer query's
distinct values into the subquery (UNION, LIMIT, windows, DISTINCT, joins inside it). The
outer table `t` has --rows rows (100,000 by default), the inner `u` --inner rows. Every shape
is wrapped in `SELECT count(*), sum(c)` so answers compare cheaply; Strata's answer must equal
DuckDB's before its time counts.

    cargo build --release
    pip install duckdb==2.0.1
    python3 benches/subqueries.py [--rows 100000] [--inner 10000] [--runs 3] [--shapes a,b]

Prints per shape the median warm time of each engine and Strata's ratio to DuckDB's.
"""

import argparse
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent

SHAPES = [
    # An equality correlation: DataFusion's own decorrelation into a join (the reference).
    ("equality", "SELECT a, (SELECT count(*) FROM u WHERE u.x = t.b) AS c FROM t"),
    # Non-equality correlation, lifted into a join on the outer values.
    ("less_than", "SELECT a, (SELECT count(*) FROM u WHERE u.x < t.b) AS c FROM t"),
    (
        "eq_and_range",
        "SELECT a, (SELECT sum(u.y) FROM u WHERE u.x = t.g AND u.y < t.b % 1000) AS c FROM t",
    ),
    (
        "exists_range",
        "SELECT a, CASE WHEN EXISTS (SELECT 1 FROM u WHERE u.x > t.b + 9000) THEN 1 ELSE 0 END"
        " AS c FROM t",
    ),
    (
        "lateral",
        "SELECT t.a, l.c FROM t, LATERAL (SELECT count(*) AS c FROM u WHERE u.x < t.b) AS l",
    ),
    # Shapes that take the outer query's distinct values down into the subquery.
    (
        "union_all",
        "SELECT a, (SELECT count(*) FROM (SELECT x FROM u WHERE u.x = t.b"
        " UNION ALL SELECT y FROM u WHERE u.y = t.b) s) AS c FROM t",
    ),
    (
        "order_limit",
        "SELECT a, (SELECT u.y FROM u WHERE u.x = t.b ORDER BY u.y LIMIT 1) AS c FROM t",
    ),
    (
        "window",
        "SELECT a, (SELECT max(r) FROM (SELECT rank() OVER (ORDER BY u.y) AS r FROM u"
        " WHERE u.x < t.g) s) AS c FROM t",
    ),
    (
        "distinct",
        "SELECT a, (SELECT count(*) FROM (SELECT DISTINCT u.y % 10 FROM u WHERE u.x < t.g) s)"
        " AS c FROM t",
    ),
    (
        "left_join",
        "SELECT a, (SELECT count(v.y) FROM u LEFT JOIN u AS v ON v.x = u.y AND v.y < t.g"
        " WHERE u.x = t.g) AS c FROM t",
    ),
    (
        "two_levels",
        "SELECT a, (SELECT count(*) FROM u WHERE u.x = t.g AND EXISTS"
        " (SELECT 1 FROM u AS v WHERE v.y = u.y AND v.x < t.b)) AS c FROM t",
    ),
    (
        "outer_aggregate",
        "SELECT g AS a, (SELECT count(*) FROM u WHERE u.x < min(t.b)) AS c FROM t GROUP BY g",
    ),
]


def generate(dir, rows, inner):
    import duckdb

    con = duckdb.connect()
    # Deterministic values: b spreads over 0..10006 with one NULL in 97 rows; g has 100 groups.
    con.execute(
        f"COPY (SELECT a::BIGINT AS a, CASE WHEN a % 97 = 0 THEN NULL ELSE (a * 7919) % 10007"
        f" END::BIGINT AS b, (a % 100)::BIGINT AS g FROM range(1, {rows} + 1) r(a))"
        f" TO '{dir}/t.parquet' (FORMAT parquet)"
    )
    con.execute(
        f"COPY (SELECT ((i * 104729) % 10000)::BIGINT AS x, ((i * 31) % 1000)::BIGINT AS y"
        f" FROM range(0, {inner}) r(i)) TO '{dir}/u.parquet' (FORMAT parquet)"
    )
    con.close()


def wrapped(sql):
    return f"SELECT count(*) AS n, sum(c) AS s FROM ({sql}) AS q"


def duckdb_run(dir, sql, runs):
    import duckdb

    con = duckdb.connect()
    for name in ("t", "u"):
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM '{dir}/{name}.parquet'")
    con.execute(wrapped(sql)).fetchall()  # warm-up
    times, rows = [], None
    for _ in range(runs):
        start = time.perf_counter()
        rows = con.execute(wrapped(sql)).fetchall()
        times.append(time.perf_counter() - start)
    con.close()
    return statistics.median(times), [tuple("NULL" if v is None else str(v) for v in r) for r in rows]


def strata_run(exe, dir, sql, runs, timeout):
    """One process: the tables, a warm-up and `runs` timed runs, read from its timing lines."""
    args = [exe]
    for name in ("t", "u"):
        args += ["-c", f"CREATE EXTERNAL TABLE {name} STORED AS PARQUET LOCATION '{dir}/{name}.parquet'"]
    for _ in range(runs + 1):
        args += ["-c", wrapped(sql)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    times = [float(m) for m in re.findall(r"^\d+ rows? in ([0-9.]+) s$", out.stdout, re.M)]
    cells = [
        tuple(c.strip() for c in line.strip("|").split("|"))
        for line in out.stdout.splitlines()
        if line.startswith("| ")
    ]
    # Each result is a header line and one row; the last one is the answer.
    return statistics.median(times[-runs:]), [cells[-1]]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--inner", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--shapes", help="comma-separated shape names (default: all)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per shape for Strata")
    ap.add_argument(
        "--strata",
        default=os.path.join(
            os.environ.get("CARGO_TARGET_DIR", ROOT / "target"), "release", "strata"
        ),
    )
    args = ap.parse_args()
    shapes = SHAPES
    if args.shapes:
        wanted = args.shapes.split(",")
        shapes = [s for s in SHAPES if s[0] in wanted]
    with tempfile.TemporaryDirectory(prefix="strata-subqueries-") as dir:
        generate(dir, args.rows, args.inner)
        print(f"t: {args.rows} rows, u: {args.inner} rows; median of {args.runs} warm runs")
        print(f"{'shape':<16} {'strata s':>10} {'duckdb s':>10} {'ratio':>8}  answer")
        ratios, failures = [], 0
        for name, sql in shapes:
            d_time, d_rows = duckdb_run(dir, sql, args.runs)
            try:
                s_time, s_rows = strata_run(args.strata, dir, sql, args.runs, args.timeout)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(f"{name:<16} {'failed':>10} {d_time:>10.3f} {'':>8}  {str(e)[:100]}")
                failures += 1
                continue
            if s_rows != d_rows:
                print(f"{name:<16} {'WRONG':>10} {d_time:>10.3f} {'':>8}  strata {s_rows} duckdb {d_rows}")
                failures += 1
                continue
            ratio = s_time / max(d_time, 1e-4)
            ratios.append(ratio)
            print(f"{name:<16} {s_time:>10.3f} {d_time:>10.3f} {ratio:>8.1f}  {' '.join(s_rows[0])}")
        if ratios:
            geo = statistics.geometric_mean(ratios)
            print(f"geometric mean of Strata/DuckDB: {geo:.1f} over {len(ratios)} shapes")
        sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
