#!/usr/bin/env python3
"""The h2o.ai groupby/join questions and the partition-pruning questions side by side: Strata
against DuckDB and Polars on the same Parquet files.

    pip install duckdb==2.0.1 polars==2.1.0 pyarrow
    cargo bench --bench h2o -- gen [--rows 10000000]
    cargo bench --bench pruning -- gen
    python3 benches/side_by_side.py [--suites groupby,join,pruning] [--rows 10000000]
        [--runs 3] [--engines strata,duckdb,polars] [--json out.json]

What is timed is each engine computing the whole answer into its own memory, as the h2o.ai
benchmark does: Strata keeps the answer's Arrow batches (the bench's `serve` mode, one engine
per suite), DuckDB creates a temporary table of it (`CREATE TEMP TABLE ans AS ...`), Polars
collects a DataFrame (`SQLContext` over `scan_parquet`). Engines are interleaved per question
(each run goes round every engine), so machine noise hits them alike; the first run is left
out and the median of the others reported.

Answers are checked against DuckDB's before a time counts, by a digest computed alike for
every engine from its answer as Arrow: the number of rows and, per column (by position), its
nulls (NaN counted as NULL) and, for numbers, their sum (to a relative 1e-9), for other types
the number of distinct values, the least and the greatest. A question an engine cannot run is
reported with its error.
"""

import argparse
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))
from compare import ask_serve, cargo_executable  # noqa: E402

# The tables of each suite: name -> (folder under the data folder, hive-partitioned).
SUITES = {
    "groupby": {"x": ("groupby/x", False)},
    "join": {t: (f"join/{t}", False) for t in ["x", "small", "medium", "big"]},
    "pruning": {"events": (".", True)},
}


def statements(path):
    """The statements of a `.sql` file (each ending with `;` at the end of a line) with their
    titles: the last `--` line before each, or its position."""
    out, title, body = [], None, []
    for line in path.read_text().splitlines():
        if line.strip().startswith("--"):
            title = line.strip()[2:].strip()
            continue
        body.append(line)
        if line.rstrip().endswith(";"):
            sql = "\n".join(body).strip().rstrip(";")
            if sql:
                out.append((title or str(len(out) + 1), sql))
            title, body = None, []
    return out


def suite_sql(suite):
    if suite == "pruning":
        items = statements(ROOT / "benches" / "pruning" / "queries.sql")
    else:
        # The h2o files' only comment is their heading: questions go by number.
        items = [(f"q{i + 1}", s) for i, (_, s) in enumerate(statements(ROOT / "benches" / "h2o" / f"{suite}.sql"))]
    return items


def data_dir(suite, rows):
    if suite == "pruning":
        return ROOT / "bench-data" / "pruning-days"
    return ROOT / "bench-data" / f"h2o-{rows}"


class Strata:
    """A bench binary in `serve` mode (see benches/common/mod.rs): one engine per suite."""

    name = "strata"
    version = "main"

    def __init__(self, suite, rows, profile):
        if suite == "pruning":
            exe = cargo_executable(["bench", "--bench", "pruning", "--no-run"], "pruning", profile)
            args = [exe, "serve"]
        else:
            exe = cargo_executable(["bench", "--bench", "h2o", "--no-run"], "h2o", profile)
            args = [exe, "serve", "--only", suite, "--rows", str(rows)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="strata-side-"))

    def run(self, number, sql, keep):
        import pyarrow.ipc

        out = self.tmp / "answer.arrow"
        seconds = ask_serve(self.proc, number, out if keep else "-")
        return seconds, lambda: pyarrow.ipc.open_file(out).read_all()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


class DuckDB:
    name = "duckdb"

    def __init__(self, suite, rows):
        import duckdb

        self.version = duckdb.__version__
        self.con = duckdb.connect()
        for t, (folder, hive) in SUITES[suite].items():
            files = data_dir(suite, rows) / folder / ("*/*.parquet" if hive else "*.parquet")
            self.con.execute(
                f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{files}', hive_partitioning = {str(hive).lower()})"
            )

    def run(self, number, sql, keep):
        start = time.perf_counter()
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE ans AS {sql}")
        elapsed = time.perf_counter() - start
        return elapsed, lambda: self.con.sql("SELECT * FROM ans").to_arrow_table()

    def close(self):
        self.con.close()


class Polars:
    name = "polars"

    def __init__(self, suite, rows):
        import polars as pl

        self.version = pl.__version__
        frames = {}
        for t, (folder, hive) in SUITES[suite].items():
            files = data_dir(suite, rows) / folder / ("*/*.parquet" if hive else "*.parquet")
            frames[t] = pl.scan_parquet(str(files), hive_partitioning=hive)
        self.ctx = pl.SQLContext(frames)

    def run(self, number, sql, keep):
        start = time.perf_counter()
        df = self.ctx.execute(sql, eager=False).collect()
        elapsed = time.perf_counter() - start
        return elapsed, df.to_arrow

    def close(self):
        pass


def digest(table):
    """What is compared of an answer (see the module's doc)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cols = []
    for col in table.columns:
        t = col.type
        if pa.types.is_floating(t):
            # NaN counts as NULL: where PostgreSQL (and Strata) answer NULL, as for the
            # correlation of a constant column, DuckDB and Polars answer NaN.
            col = pc.if_else(pc.is_nan(col), pa.scalar(None, t), col)
        nulls = col.null_count
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            total = pc.sum(col.cast(pa.float64())).as_py()
            cols.append(("number", nulls, total or 0.0))
        else:
            text = col.cast(pa.string())
            minmax = pc.min_max(text).as_py()
            cols.append(("other", nulls, pc.count_distinct(text).as_py(), minmax["min"], minmax["max"]))
    return table.num_rows, cols


def same_digest(a, b):
    if a[0] != b[0]:
        return f"{a[0]} rows, not {b[0]}"
    if len(a[1]) != len(b[1]):
        return f"{len(a[1])} columns, not {len(b[1])}"
    for i, (x, y) in enumerate(zip(a[1], b[1])):
        if x[0] != y[0]:
            return f"column {i + 1} is of another kind"
        if x[0] == "number":
            if x[1] != y[1] or not math.isclose(x[2], y[2], rel_tol=1e-9, abs_tol=1e-6):
                return f"column {i + 1}: sum {x[2]!r}, not {y[2]!r}"
        elif x != y:
            return f"column {i + 1}: {x[1:]} not {y[1:]}"
    return None


def run_suite(suite, a, results):
    sqls = suite_sql(suite)
    makers = {
        "strata": lambda: Strata(suite, a.rows, a.cargo_profile),
        "duckdb": lambda: DuckDB(suite, a.rows),
        "polars": lambda: Polars(suite, a.rows),
    }
    names = [e for e in a.engines.split(",") if e]
    if "duckdb" not in names:
        names.append("duckdb")  # the reference answers
    engines = [makers[n]() for n in names]
    versions = {e.name: e.version for e in engines}
    for i, (title, sql) in enumerate(sqls):
        times = {e.name: [] for e in engines}
        digests = {}
        for run in range(1 + a.runs):
            for e in engines:
                if isinstance(digests.get(e.name), str):
                    continue  # it failed on the first run
                try:
                    t, answer = e.run(i + 1, sql, keep=run == 0)
                except Exception as ex:  # an engine that cannot run the question
                    digests[e.name] = "error: " + (str(ex).strip().splitlines() or ["?"])[0][:120]
                    continue
                times[e.name].append(t)
                if run == 0:
                    digests[e.name] = digest(answer())
        ref = digests.get("duckdb")
        row = {}
        for e in engines:
            d = digests.get(e.name)
            if isinstance(d, str):
                status = d
            elif isinstance(ref, str) or ref is None:
                status = "no reference answer"
            else:
                wrong = same_digest(d, ref)
                status = f"WRONG ANSWER: {wrong}" if wrong else "ok"
            warm = times[e.name][1:] or times[e.name]
            row[e.name] = {
                "median": statistics.median(warm) if warm and status == "ok" else None,
                "rows": d[0] if isinstance(d, tuple) else None,
                "status": status,
            }
        results[f"{suite} {title}"] = row
        cells = []
        for e in engines:
            r = row[e.name]
            cells.append(f"{e.name} {r['median'] * 1e3:9.1f} ms" if r["median"] else f"{e.name} {r['status'][:60]}")
        print(f"{suite:>7} {title:<22} " + "  ".join(cells), flush=True)
    for e in engines:
        e.close()
    return versions


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suites", default="groupby,join,pruning")
    p.add_argument("--rows", type=int, default=10_000_000, help="rows of the h2o data")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--engines", default="strata,duckdb,polars")
    p.add_argument("--json")
    p.add_argument("--cargo-profile", default="bench", help="dev for a quick check")
    a = p.parse_args()
    suites = [s for s in a.suites.split(",") if s]
    for s in suites:
        if s not in SUITES:
            sys.exit(f"unknown suite {s}: use groupby, join or pruning")
        d = data_dir(s, a.rows)
        stamp = d.with_suffix(".generated") if s == "pruning" else d / "GENERATED"
        if not stamp.exists():
            gen = "pruning -- gen" if s == "pruning" else f"h2o -- gen --rows {a.rows}"
            sys.exit(f"no data in {d}: cargo bench --bench {gen}")
    results, versions = {}, {}
    for s in suites:
        versions.update(run_suite(s, a, results))

    print()
    names = list(versions)
    summary = {}
    for s in suites:
        for peer in names:
            if peer == "strata" or "strata" not in names:
                continue
            ratios = [
                r["strata"]["median"] / r[peer]["median"]
                for q, r in results.items()
                if q.startswith(s + " ") and r["strata"]["median"] and r[peer]["median"]
            ]
            if ratios:
                g = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
                summary.setdefault(s, {})[peer] = {"geomean_ratio": g, "questions": len(ratios)}
                print(f"{s}: strata / {peer} {versions[peer]} = {g:.2f} (geometric mean over {len(ratios)} questions)")
    wrong = [(q, n, v["status"]) for q, r in results.items() for n, v in r.items() if v["status"] != "ok"]
    for q, n, status in wrong:
        print(f"  {q} {n}: {status}")
    if a.json:
        pathlib.Path(a.json).write_text(
            json.dumps(
                {"rows": a.rows, "runs": a.runs, "cpus": os.cpu_count(), "versions": versions,
                 "questions": results, "summary": summary},
                indent=1,
            )
        )
    sys.exit(1 if any(n == "strata" for _, n, _ in wrong) else 0)


if __name__ == "__main__":
    main()
