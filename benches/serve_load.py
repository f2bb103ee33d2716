#!/usr/bin/env python3
"""Load on `strata serve`: many Flight SQL clients (ADBC) at once, each running a seeded mix
of point lookups with parameters, grouped joins and TPC-H queries over TPC-H Parquet. Every
answer is checked against DuckDB's on the same files.

Reports queries run, errors and wrong answers (both must be 0), throughput, p50 and p99
latency per kind of query, and the server's peak resident memory.

    cargo build --release
    pip install duckdb adbc-driver-flightsql pyarrow tpchgen-cli
    python3 benches/serve_load.py [--clients 64] [--queries 100] [--scale 0.1] [--seed 1]
        [--data DIR] [--binary PATH] [--hog]

With --hog the server gives each query a memory pool (--query-memory 128M), and one more
client runs, for as long as the others do, a query that needs more than that pool: it must
fail with the out-of-memory error each time, and the others must get every answer right.

Without --data, the tables are generated with tpchgen-cli into a temporary folder.
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from processes import Server, release_binary  # noqa: E402
from tpch_files import TABLES, catalog, fmt, generate, normalize, query_sql, same_rows  # noqa: E402

POINT = "SELECT o_orderkey, o_custkey, o_orderstatus, o_totalprice, o_orderdate FROM orders WHERE o_orderkey = ?"
GROUPED = (
    "SELECT n_name, count(*) AS customers, sum(c_acctbal) AS balance FROM customer "
    "JOIN nation ON c_nationkey = n_nationkey WHERE c_acctbal > ? GROUP BY n_name ORDER BY n_name"
)
TPCH = [1, 3, 6, 10]
# Keeps every comment of lineitem, 16 times over, in memory: several hundred MB at SF0.1.
HOG = "SELECT length(string_agg(repeat(l_comment, 16), ',')) FROM lineitem"


def rows_text(rows):
    return [normalize(" ".join(fmt(v) for v in r)) for r in rows]


def plan(rng, n, keys):
    """`n` queries: (kind, sql, params)."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.6:
            out.append(("point", POINT, (rng.choice(keys),)))
        elif r < 0.9:
            out.append(("grouped", GROUPED, (float(rng.randrange(-1000, 9000)),)))
        else:
            q = rng.choice(TPCH)
            out.append((f"q{q:02}", query_sql(q), ()))
    return out


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--queries", type=int, default=100, help="per client")
    p.add_argument("--scale", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data")
    p.add_argument("--binary", default=release_binary())
    p.add_argument("--hog", action="store_true",
                   help="one more client runs a query larger than its memory pool")
    args = p.parse_args()
    warnings.simplefilter("ignore")

    import adbc_driver_flightsql.dbapi as flightsql
    import duckdb

    tmp = tempfile.mkdtemp(prefix="strata-serve-load-")
    data = args.data
    if not data:
        data = os.path.join(tmp, "tpch")
        generate(data, args.scale)
    cat = catalog(data, tmp)

    con = duckdb.connect()
    for t in TABLES:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{data}/{t}/*.parquet')")
    rng = random.Random(args.seed)
    keys = [k for (k,) in con.execute("SELECT o_orderkey FROM orders USING SAMPLE 2000 ROWS (reservoir, 1)").fetchall()]
    plans = [plan(random.Random(rng.random()), args.queries, keys) for _ in range(args.clients)]
    expected = {}
    for queries in plans:
        for _, sql, params in queries:
            if (sql, params) not in expected:
                expected[(sql, params)] = rows_text(con.execute(sql, list(params)).fetchall())

    serve = ["serve", "--flight", "127.0.0.1:0", "--catalog", cat]
    if args.hog:
        serve += ["--query-memory", "128M"]
    server = Server(args.binary, serve, "Flight SQL on grpc://")
    results = []  # (kind, seconds, outcome)
    lock = threading.Lock()

    def client(queries):
        conn = flightsql.connect(f"grpc://{server.addr}")
        cur = conn.cursor()
        for kind, sql, params in queries:
            start = time.perf_counter()
            try:
                cur.execute(sql, params or None)
                rows = rows_text(cur.fetchall())
                outcome = "right" if same_rows(rows, expected[(sql, params)]) else "wrong"
            except Exception as e:  # the driver's own error types
                outcome = f"error: {str(e).splitlines()[0][:160]}"
            with lock:
                results.append((kind, time.perf_counter() - start, outcome))
        conn.close()

    hogging = threading.Event()
    hog_outcomes = []

    def hog():
        conn = flightsql.connect(f"grpc://{server.addr}")
        cur = conn.cursor()
        while hogging.is_set():
            try:
                cur.execute(HOG)
                cur.fetchall()
                hog_outcomes.append("answered")
            except Exception as e:  # the driver's own error types
                message = str(e)
                hog_outcomes.append("out of memory" if "out of memory" in message
                                    else f"error: {message.splitlines()[0][:160]}")
        conn.close()

    threads = [threading.Thread(target=client, args=(q,)) for q in plans]
    began = time.perf_counter()
    hogger = None
    if args.hog:
        hogging.set()
        hogger = threading.Thread(target=hog)
        hogger.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - began
    hogging.clear()
    if hogger:
        hogger.join()
    rss = peak_rss_mb(server.pid)
    server.stop()

    wrong = [r for r in results if r[2] == "wrong"]
    errors = [r for r in results if r[2].startswith("error")]
    print(f"{args.clients} clients x {args.queries} queries: {len(results)} run in {took:.1f} s "
          f"({len(results) / took:.1f} queries/s); wrong {len(wrong)}, errors {len(errors)}; "
          f"server peak RSS {rss:.0f} MB")
    for kind in sorted({r[0] for r in results}):
        times = sorted(r[1] for r in results if r[0] == kind)
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        print(f"  {kind:8} {len(times):6} queries  p50 {statistics.median(times) * 1000:8.1f} ms"
              f"  p99 {p99 * 1000:8.1f} ms")
    for r in (wrong + errors)[:10]:
        print(f"  {r[0]}: {r[2]}")
    hog_failed = [o for o in hog_outcomes if o != "out of memory"]
    if args.hog:
        print(f"  hog: {len(hog_outcomes)} runs of a query larger than its 128 MB pool, "
              f"{len(hog_outcomes) - len(hog_failed)} out of memory, others: {hog_failed[:3]}")
    return 1 if wrong or errors or hog_failed else 0


if __name__ == "__main__":
    sys.exit(main())
