"""A TPC-H table in PostgreSQL, read through Strata next to PostgreSQL itself.

Loads `orders` and `lineitem` (TPC-H, tpchgen-cli's Parquet) into a PostgreSQL server it
starts in a temporary folder, with `strata convert` (which gives the write rate), and then
times, warm, median of `--runs`, each query through the `strata` command (`-c`, the whole
process) and through psycopg in PostgreSQL itself:

  count      SELECT count(*) FROM orders
  filter     a selective filter (a few hundred orders)
  join       orders joined with the Parquet `customer`, grouped by market segment
  full read  every column of every lineitem row (max of each column, which Strata
             computes itself), as rows per second
  group      lineitem grouped by return flag and line status within the database

`--no-pushdown` runs the Strata side with `strata.database_pushdown = false` as well.

    python3 benches/databases.py --scale 1
"""

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from processes import ROOT, release_binary  # noqa: E402
from tpch_files import tpchgen_data  # noqa: E402

PG_BIN = "/usr/lib/postgresql/15/bin"

QUERIES = {
    "count": "SELECT count(*) FROM {orders}",
    "filter": "SELECT o_orderkey, o_totalprice FROM {orders} WHERE o_totalprice > 500000",
    "join": "SELECT c_mktsegment, count(*), sum(o_totalprice) FROM {orders} JOIN {customer} "
    "ON o_custkey = c_custkey GROUP BY c_mktsegment",
    "full read": "SELECT max(l_orderkey), max(l_partkey), max(l_suppkey), max(l_linenumber), "
    "max(l_quantity), max(l_extendedprice), max(l_discount), max(l_tax), max(l_returnflag), "
    "max(l_linestatus), max(l_shipdate), max(l_commitdate), max(l_receiptdate), "
    "max(l_shipinstruct), max(l_shipmode), max(l_comment) FROM {lineitem}",
    "group": "SELECT l_returnflag, l_linestatus, count(*), sum(l_quantity), "
    "sum(l_extendedprice) FROM {lineitem} GROUP BY l_returnflag, l_linestatus",
}


def start_postgres(folder, port):
    """A PostgreSQL server in `folder` on 127.0.0.1:`port` (as `nobody` when run as root)."""
    as_user = ["su", "nobody", "-s", "/bin/sh", "-c"] if os.geteuid() == 0 else ["sh", "-c"]
    if os.geteuid() == 0:
        shutil.chown(folder, "nobody")
    data = os.path.join(folder, "data")
    subprocess.run(
        as_user + [f"{PG_BIN}/initdb -D {data} -U postgres -A trust >/dev/null"], check=True
    )
    subprocess.run(
        as_user
        + [
            f"{PG_BIN}/pg_ctl -D {data} -w -l {folder}/log -o "
            f"'-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c shared_buffers=1GB "
            f"-c max_wal_size=8GB' start >/dev/null"
        ],
        check=True,
    )
    return lambda: subprocess.run(
        as_user + [f"{PG_BIN}/pg_ctl -D {data} -m fast stop >/dev/null"], check=False
    )


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(fn, runs):
    fn()  # warm
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", default="1")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--no-pushdown", action="store_true")
    a = p.parse_args()
    import psycopg

    exe = release_binary()
    if not os.path.exists(exe):
        sys.exit(f"{exe} is missing: cargo build --release first")
    data = tpchgen_data(a.scale) / "parquet"
    folder = tempfile.mkdtemp(prefix="strata-pg-")
    port = free_port()
    stop = start_postgres(folder, port)
    try:
        admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute("CREATE DATABASE tpch")
        url = f"postgres://postgres@127.0.0.1:{port}/tpch?sslmode=disable"
        env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD",)}
        print(f"TPC-H SF{a.scale} into PostgreSQL 15 with strata convert:")
        for table in ["orders", "lineitem"]:
            start = time.perf_counter()
            subprocess.run(
                [exe, "convert", str(data / table), f"{url}&table={table}"],
                cwd=ROOT, env=env, check=True, capture_output=True,
            )
            took = time.perf_counter() - start
            with psycopg.connect(url.replace("postgres://", "postgresql://")) as c:
                rows = c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            print(f"  {table}: {rows} rows in {took:.1f} s = {rows / took:,.0f} rows/s")
        with psycopg.connect(url.replace("postgres://", "postgresql://"), autocommit=True) as c:
            c.execute("ALTER TABLE orders ADD PRIMARY KEY (o_orderkey)")
            c.execute("ANALYZE")
        catalog = os.path.join(folder, "strata.toml")
        with open(catalog, "w") as f:
            f.write(f'[databases.pg]\nlocation = "{url}"\n\n')
            f.write(f'[tables.customer]\nlocation = "{data}/customer/"\nformat = "parquet"\n')
        names = {"orders": "pg.orders", "lineitem": "pg.lineitem", "customer": "customer"}

        def strata(sql, settings=()):
            script = "".join(f"SET {s};\n" for s in settings) + sql + ";\n"
            out = subprocess.run(
                [exe, "--catalog", catalog, "-q", "--format", "csv", "-c", script],
                cwd=ROOT, env=env, capture_output=True, text=True,
            )
            if out.returncode != 0:
                raise RuntimeError(out.stderr)
            return out.stdout

        pg = psycopg.connect(url.replace("postgres://", "postgresql://"))
        pg_names = {t: t for t in names}
        # PostgreSQL's own join reads `customer` from a table loaded for it.
        subprocess.run(
            [exe, "convert", str(data / "customer"), f"{url}&table=customer"],
            cwd=ROOT, env=env, check=True, capture_output=True,
        )
        pg.execute("ANALYZE customer")
        pg.commit()
        lineitems = pg.execute("SELECT count(*) FROM lineitem").fetchone()[0]

        engines = [("strata", lambda sql: strata(sql))]
        if a.no_pushdown:
            engines.append(
                ("strata, no pushdown",
                 lambda sql: strata(sql, ["strata.database_pushdown = false"]))
            )
        print(f"\nwarm, median of {a.runs} (s); Strata through the `strata` command, "
              "PostgreSQL through psycopg")
        header = f"{'query':<10}" + "".join(f"{e:>22}" for e, _ in engines) + f"{'PostgreSQL':>12}"
        print(header + f"{'ratio':>8}")
        for name, template in QUERIES.items():
            sql = template.format(**names)
            ours = [timed(lambda: run(sql), a.runs) for _, run in engines]
            theirs = timed(lambda: pg.execute(template.format(**pg_names)).fetchall(), a.runs)
            line = f"{name:<10}" + "".join(f"{t:>22.3f}" for t in ours) + f"{theirs:>12.3f}"
            print(line + f"{ours[0] / theirs:>8.2f}")
            if name == "full read":
                rates = ", ".join(f"{e} {lineitems / t:,.0f}" for (e, _), t in zip(engines, ours))
                print(f"{'':<10}rows/s: {rates}, PostgreSQL {lineitems / theirs:,.0f}")
        print("\nDuckDB's postgres scanner: not installable here (INSTALL postgres needs "
              "extensions.duckdb.org)")
    finally:
        stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
