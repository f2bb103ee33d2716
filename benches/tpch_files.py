"""TPC-H files for the Python benches: generated with tpchgen-cli, a Strata catalog over them,
DuckDB's answers, and a query run through the `strata` command."""

import csv
import io
import os
import subprocess
import sys

from processes import ROOT

sys.path.insert(0, str(ROOT / "sql-tests"))
from crosscheck import fmt, normalize, same_rows  # noqa: E402,F401

TABLES = ["region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem"]


def query_path(n):
    return ROOT / "benches" / "tpch" / f"q{n:02}.sql"


def query_sql(n):
    return query_path(n).read_text()


def generate(dir, scale):
    # Each table in a folder of its own, in two files, so scans split into tasks.
    subprocess.run(
        ["tpchgen-cli", "parquet", "--scale-factor", str(scale), "--parts", "2",
         "--output-dir", dir],
        check=True,
    )


def tpchgen_data(scale):
    """bench-data/tpchgen-sf<scale>: the Parquet tpchgen-cli writes by default (snappy, row
    groups of about 7 MiB), 4 files per table in `parquet/<table>/`, made on first use."""
    data = ROOT / "bench-data" / f"tpchgen-sf{float(scale):g}"
    if not (data / "parquet" / "lineitem").is_dir():
        subprocess.run(
            ["tpchgen-cli", "parquet", "-s", f"{float(scale):g}", "--parts", "4",
             "--output-dir", str(data / "parquet")],
            check=True,
        )
    return data


def catalog(data, folder):
    """A catalog file in `folder` naming the tables in `data`."""
    path = os.path.join(folder, "strata.toml")
    with open(path, "w") as f:
        for t in TABLES:
            f.write(f'[tables.{t}]\nlocation = "{data}/{t}/"\nformat = "parquet"\n\n')
    return path


def duckdb_answers(dir, queries):
    import duckdb

    con = duckdb.connect()
    for t in TABLES:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{dir}/{t}/*.parquet')")
    out = {}
    for n in queries:
        rows = con.execute(query_sql(n)).fetchall()
        out[n] = [normalize(" ".join(fmt(v) for v in r)) for r in rows]
    return out


def run_strata(exe, cat, n, timeout, cluster=None, extra=()):
    """('ok', rows) or ('failed', what it printed on standard error): query `n` in one
    `strata -c`."""
    args = [exe, "--catalog", cat, "-q", "--format", "csv", *extra, "-f", str(query_path(n))]
    if cluster:
        args += ["--cluster", f"df://{cluster}"]
    try:
        out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "failed", f"no answer within {timeout} s"
    if out.returncode != 0:
        return "failed", out.stderr.strip() or f"status {out.returncode}"
    return "ok", csv_rows(out.stdout)


def csv_rows(text):
    """Rows of Strata's CSV output, as `normalize` writes DuckDB's: an empty field is NULL
    (TPC-H answers hold no empty strings), and a row that is a lone NULL is an empty line."""
    header, *rows = list(csv.reader(io.StringIO(text)))
    cells = [[c if c != "" else "NULL" for c in (r or [""] * len(header))] for r in rows]
    return [normalize(" ".join(r)) for r in cells]
