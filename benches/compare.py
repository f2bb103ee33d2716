#!/usr/bin/env python3
"""TPC-H side by side: Strata against DuckDB, stock DataFusion and Polars on the same files.

Engines are interleaved per query (each run of a query goes round every engine), so machine
noise hits them alike. Every engine's answer is checked against DuckDB's before its time counts.

    pip install duckdb==2.0.1 datafusion==55.0.0 polars==2.1.0
    cargo bench --bench tpch -- gen --scale 1 --parts 4
    python3 benches/compare.py --scale 1 [--runs 3] [--queries 1,6] [--engines strata,duckdb]
        [--strata-set key=value ...] [--cluster-set key=value ...] [--json out.json]

`--engines` may also name `strata-stock`: Strata with DataFusion's defaults in place of the
ones Strata sets for speed (see STOCK_SETTINGS), as a before/after in the same run; and
`strata-cli`: the `strata` command as a user runs it, one process per run
(`strata --catalog tpch.toml -f qNN.sql`, table output), timed by the `N rows in X s` line it
prints, so table registration, footers read by a fresh process and printing all count.

`strata-variant`: the same engine as `strata` with `--variant-set` settings on top, to measure
one setting side by side; with `--variant-profile P`, built with cargo profile P (e.g. `dist`,
the release binaries' profile) to measure a build profile side by side. `strata-cli-variant`
is the `strata` command built with that profile, or the executable `--variant-exe` names (one
built with other compiler flags, say). `--variant-env KEY=VALUE` sets an environment variable
for the variant engines alone (an allocator option, say).

`strata-dashboard`: the same engine as `strata`, with its dashboard served and polled the way
open pages poll it (the Queries page and the Query page of every running query, plan drawing
included, once a second), to measure what watching a query costs it.

`cluster`: the same engine as `strata`, its queries run on a scheduler and two executors
started as processes on loopback (`strata scheduler`, `strata executor`); `cluster-variant`
is a second such cluster with the `--variant-set` settings on top, its scheduler and
executors started with the `--variant-env` variables (`TMPDIR=/dev/shm`: shuffle files on
tmpfs).

`--format csv` reads the bench's CSV files instead (`gen --csv`), each engine inferring
their types as it does for any CSV file.

`--data tpchgen` runs on the Parquet that `tpchgen-cli` writes with its defaults (snappy, row
groups of about 7 MiB, here 4 files per table), generated into bench-data/tpchgen-sf<scale> on
first use (`pip install tpchgen-cli`), instead of the bench's own zstd files.

Prints per query the median warm time of each engine and Strata's ratio to it, then the
geometric mean of the ratios per peer (below 1 means Strata is faster).
"""

import argparse
import atexit
import csv
import functools
import json
import math
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "sql-tests"))
from crosscheck import fmt, normalize, same_rows  # noqa: E402
from tpch_files import tpchgen_data  # noqa: E402

TABLES = ["region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem"]


def query_sql(n):
    return (ROOT / "benches" / "tpch" / f"q{n:02}.sql").read_text()


class DuckDB:
    name = "duckdb"

    def __init__(self, data, fmt):
        import duckdb

        self.version = duckdb.__version__
        self.con = duckdb.connect()
        for t in TABLES:
            self.con.execute(
                f"CREATE VIEW {t} AS SELECT * FROM read_{fmt}('{data}/{fmt}/{t}/*.{fmt}')"
            )

    def run(self, n):
        start = time.perf_counter()
        rows = self.con.execute(query_sql(n)).fetchall()
        return time.perf_counter() - start, [normalize(" ".join(fmt(v) for v in r)) for r in rows]


class DataFusion:
    name = "datafusion"

    def __init__(self, data, fmt):
        import datafusion

        self.version = datafusion.__version__
        self.ctx = datafusion.SessionContext()
        for t in TABLES:
            register = self.ctx.register_csv if fmt == "csv" else self.ctx.register_parquet
            register(t, f"{data}/{fmt}/{t}/")

    def run(self, n):
        start = time.perf_counter()
        batches = self.ctx.sql(query_sql(n)).collect()
        elapsed = time.perf_counter() - start
        rows = []
        for b in batches:
            cols = [c.to_pylist() for c in b.columns]
            rows.extend(zip(*cols))
        return elapsed, [normalize(" ".join(fmt(v) for v in r)) for r in rows]


class Polars:
    name = "polars"

    def __init__(self, data, fmt):
        import polars as pl

        self.version = pl.__version__
        # Dates in CSV are parsed as dates, as the other engines' CSV readers do.
        scan = (
            functools.partial(pl.scan_csv, try_parse_dates=True)
            if fmt == "csv"
            else pl.scan_parquet
        )
        self.ctx = pl.SQLContext({t: scan(f"{data}/{fmt}/{t}/*.{fmt}") for t in TABLES})

    def run(self, n):
        start = time.perf_counter()
        df = self.ctx.execute(query_sql(n), eager=False).collect()
        elapsed = time.perf_counter() - start
        return elapsed, [normalize(" ".join(fmt(v) for v in r)) for r in df.rows()]


def with_env(pairs):
    """This process's environment with `KEY=VALUE` pairs on top (None: unchanged)."""
    if not pairs:
        return None
    env = dict(os.environ)
    env.update(pair.split("=", 1) for pair in pairs)
    return env


class Strata:
    """The `tpch` bench binary in `serve` mode: one engine for the whole comparison."""


    def __init__(
        self, data, fmt, scale, settings, profile, name="strata", extra=(), stderr=None,
        env=None,
    ):
        self.name = name
        exe = cargo_executable(["bench", "--bench", "tpch", "--no-run"], "tpch", profile)
        self.version = "main"
        args = [exe, "serve", "--scale", str(scale), "--dir", str(data), "--format", fmt]
        for s in settings:
            args += ["--set", s]
        args += extra
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
            cwd=ROOT, env=with_env(env),
        )
        self.tmp = tempfile.mkdtemp(prefix="strata-compare-")

    def run(self, n):
        out = os.path.join(self.tmp, f"q{n:02}.csv")
        return ask_serve(self.proc, f"q{n:02}", out), csv_answer(out)


class StrataDashboard(Strata):
    """`strata` with its dashboard open: a thread asks for what the open pages ask for, every
    `period` seconds, for as long as the comparison runs."""

    def __init__(self, data, fmt, scale, settings, profile, period=1.0):
        log = tempfile.NamedTemporaryFile("w+", prefix="strata-dashboard-", suffix=".log")
        super().__init__(
            data, fmt, scale, settings, profile, "strata-dashboard",
            ["--dashboard", "127.0.0.1:0"], log,
        )
        deadline = time.monotonic() + 120
        url = None
        while url is None:
            found = re.search(r"^dashboard: (\S+)", pathlib.Path(log.name).read_text(), re.M)
            url = found and found.group(1).rstrip("/")
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the dashboard did not start")
            time.sleep(0.05)
        self.url, self.period, self.requests, self.failures = url, period, 0, 0
        threading.Thread(target=self.poll, daemon=True).start()

    def get(self, path):
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as r:
                body = r.read()
            self.requests += 1
            return body
        except urllib.error.HTTPError as e:
            # A query that ended between the list and this request: not a failure.
            if e.code != 404 or "/api/queries/" not in path:
                self.failures += 1
                print(f"dashboard {path}: {e.code} {e.read()[:200]!r}", file=sys.stderr)
            return None
        except OSError as e:
            self.failures += 1
            print(f"dashboard {path}: {e}", file=sys.stderr)
            return None

    def poll(self):
        while True:
            started = time.monotonic()
            listed = self.get("/api/queries")
            for q in json.loads(listed) if listed else []:
                if q["state"] in ("planning", "running"):
                    self.get(f"/api/queries/{q['id']}")
                    self.get(f"/api/queries/{q['id']}/plan.svg")
            time.sleep(max(0.0, self.period - (time.monotonic() - started)))


def ask_serve(proc, name, out):
    """Ask a bench binary in `serve` mode (benches/common/mod.rs) to run statement `name` and
    write its answer to `out` (`-`: nowhere); the seconds it took, or the engine's error."""
    proc.stdin.write(f"{name} {out}\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("strata serve ended")
    report = json.loads(line)
    if "error" in report:
        raise RuntimeError(report["error"])
    return report["seconds"]


class Cluster(Strata):
    """The `tpch` bench's `serve` on a cluster: a `strata scheduler` and two `strata executor`
    processes on loopback (slots: one per core each), started here and stopped at exit; their
    logs go to files in a temporary folder."""

    def __init__(self, data, fmt, scale, settings, profile, name="cluster", env=None, exe=None):
        exe = exe or cargo_executable(["build", "--bin", "strata"], "strata", profile)
        self.env = with_env(env)
        self.logs = pathlib.Path(tempfile.mkdtemp(prefix=f"strata-{name}-"))
        log = self.start([exe, "scheduler", "--bind", "127.0.0.1:0"], "scheduler")
        addr = None
        deadline = time.monotonic() + 60
        while addr is None:
            found = re.search(r"listening on df://(\S+)", log.read_text())
            addr = found and found.group(1)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the scheduler did not start: {log.read_text()}")
            time.sleep(0.05)
        for i in range(2):
            self.start([exe, "executor", "--scheduler", addr, "--bind", "127.0.0.1:0"],
                       f"executor{i}")
        while executors(addr) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the executors did not register with the scheduler")
            time.sleep(0.1)
        super().__init__(
            data, fmt, scale, settings, profile, name, ["--cluster", f"df://{addr}"]
        )

    def start(self, args, name):
        log = self.logs / f"{name}.log"
        with open(log, "w") as f:
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=f, env=self.env)
        atexit.register(proc.terminate)
        return log


def executors(addr):
    """How many executors the scheduler at `addr` knows."""
    try:
        with urllib.request.urlopen(f"http://{addr}/api/executors", timeout=5) as r:
            return len(json.load(r))
    except OSError:
        return 0


def csv_answer(path):
    """The rows of a CSV answer Strata wrote, as compared with DuckDB's."""
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    # An empty field is taken as NULL (TPC-H answers hold no empty strings); a row that is
    # a lone NULL is an empty line.
    cells = [[c if c != "" else "NULL" for c in (r or [""] * len(header))] for r in rows]
    return [normalize(" ".join(r)) for r in cells]


class StrataCli:
    """The `strata` command, one process per run, tables from a catalog file."""

    def __init__(self, data, fmt, settings, profile, name="strata-cli", exe=None, env=None):
        self.name = name
        self.env = with_env(env)
        self.exe = exe or cargo_executable(["build", "--bin", "strata"], "strata", profile)
        self.version = "main"
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="strata-cli-"))
        catalog = "".join(
            f'[tables.{t}]\nlocation = "{data}/{fmt}/{t}/"\nformat = "{fmt}"\n\n' for t in TABLES
        )
        (self.tmp / "tpch.toml").write_text(catalog)
        self.settings = "".join(f"SET {s.replace('=', ' = ', 1)};\n" for s in settings)
        self.checked = set()

    def run(self, n):
        query = self.tmp / f"q{n:02}.sql"
        query.write_text(self.settings + query_sql(n))
        # The first run of each query prints CSV for the answer check; the timed ones print
        # the table a user sees.
        first = n not in self.checked
        answer = self.tmp / "out.csv"
        fmt_args = ["--format", "csv", "-o", str(answer)] if first else []
        out = subprocess.run(
            [self.exe, "--catalog", str(self.tmp / "tpch.toml"), "--no-progress", "-f",
             str(query), *fmt_args],
            capture_output=True, text=True, env=self.env,
        )
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip() or "strata failed")
        timings = re.findall(r"^\d+ rows? in ([0-9.]+) s", out.stdout, re.M)
        if not timings:
            raise RuntimeError("no timing line in strata's output")
        self.checked.add(n)
        return float(timings[-1]), csv_answer(answer) if first else None


# Strata with DataFusion's own defaults where Strata sets its own for speed: the engine as it
# ran before those defaults (`--engines strata,strata-stock,...` runs both).
STOCK_SETTINGS = [
    "strata.share_subplans=false",
    "strata.join_filters_at_scan=false",
    "strata.decimal_literals_at_scale=false",
    "strata.decimal_products=false",
    "strata.join_sides_by_rows=false",
    "strata.build_side_join_filters=false",
    "strata.cheap_filters_first=false",
    "datafusion.optimizer.hash_join_single_partition_threshold=1048576",
    "datafusion.optimizer.hash_join_single_partition_threshold_rows=131072",
    f"datafusion.execution.target_partitions={os.cpu_count()}",
]


def cargo_executable(command, name, profile):
    """Build with `cargo COMMAND` and return the executable of target `name`."""
    # cargo's own output is captured for the artifact's path: say what the wait is for.
    print(f"building: cargo {' '.join(command)} --profile {profile}", file=sys.stderr, flush=True)
    out = subprocess.run(
        ["cargo", *command, "--profile", profile, "--message-format=json"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == name:
            if msg.get("executable"):
                return msg["executable"]
    raise RuntimeError(f"could not find the {name} executable")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", default="1")
    p.add_argument("--dir")
    p.add_argument("--data", choices=["bench", "tpchgen"], default="bench")
    p.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--queries", default="")
    p.add_argument("--engines", default="strata,duckdb,datafusion,polars")
    p.add_argument("--strata-set", action="append", default=[])
    p.add_argument(
        "--cluster-set", action="append", default=[], help="for the cluster engine alone"
    )
    p.add_argument(
        "--variant-set", action="append", default=[],
        help="settings of the strata-variant engine: strata with these on top, side by side",
    )
    p.add_argument(
        "--variant-env", action="append", default=[],
        help="KEY=VALUE in the environment of the variant engines alone (e.g. allocator options)",
    )
    p.add_argument(
        "--dashboard-period", type=float, default=1.0,
        help="seconds between the strata-dashboard engine's polls (the pages': 1)",
    )
    p.add_argument("--json")
    p.add_argument("--cargo-profile", default="bench", help="dev for a quick check")
    p.add_argument(
        "--variant-profile", help="the cargo profile of the variant engines (default: the same)"
    )
    p.add_argument(
        "--variant-exe",
        help="a strata executable built elsewhere (e.g. with other RUSTFLAGS, or an earlier "
        "commit) for strata-cli-variant, and for the scheduler and executors of cluster-variant",
    )
    a = p.parse_args()
    variant_profile = a.variant_profile or a.cargo_profile
    scale = float(a.scale)
    if a.dir:
        data = pathlib.Path(a.dir)
    elif a.data == "tpchgen":
        data = tpchgen_data(scale)
    else:
        data = ROOT / "bench-data" / f"tpch-sf{scale:g}"
    if not (data / a.format).is_dir():
        csv = " --csv" if a.format == "csv" else ""
        sys.exit(f"no data in {data}: cargo bench --bench tpch -- gen --scale {a.scale}{csv}")
    queries = [int(q) for q in a.queries.split(",") if q] or list(range(1, 23))
    f = a.format
    makers = {
        "strata": lambda: Strata(data, f, a.scale, a.strata_set, a.cargo_profile),
        "strata-stock": lambda: Strata(
            data, f, a.scale, STOCK_SETTINGS + a.strata_set, a.cargo_profile, "strata-stock"
        ),
        "strata-dashboard": lambda: StrataDashboard(
            data, f, a.scale, a.strata_set, a.cargo_profile, a.dashboard_period
        ),
        "strata-variant": lambda: Strata(
            data, f, a.scale, a.strata_set + a.variant_set, variant_profile, "strata-variant",
            env=a.variant_env,
        ),
        "strata-cli": lambda: StrataCli(data, f, a.strata_set, a.cargo_profile),
        "strata-cli-variant": lambda: StrataCli(
            data, f, a.strata_set + a.variant_set, variant_profile, "strata-cli-variant",
            a.variant_exe, a.variant_env,
        ),
        "cluster": lambda: Cluster(
            data, f, a.scale, a.strata_set + a.cluster_set, a.cargo_profile
        ),
        "cluster-variant": lambda: Cluster(
            data, f, a.scale, a.strata_set + a.cluster_set + a.variant_set, variant_profile,
            "cluster-variant", env=a.variant_env, exe=a.variant_exe,
        ),
        "duckdb": lambda: DuckDB(data, f),
        "datafusion": lambda: DataFusion(data, f),
        "polars": lambda: Polars(data, f),
    }
    names = [e for e in a.engines.split(",") if e]
    if "duckdb" not in names:
        names.append("duckdb")  # the reference answers
    engines = [makers[n]() for n in names]

    results = {}
    for q in queries:
        times = {e.name: [] for e in engines}
        answers = {}
        for run in range(1 + a.runs):
            for e in engines:
                try:
                    t, rows = e.run(q)
                except Exception as ex:  # an engine that cannot run the query
                    answers[e.name] = f"error: {str(ex).splitlines()[0][:100]}"
                    continue
                times[e.name].append(t)
                if run == 0:
                    answers[e.name] = rows
        ref = answers.get("duckdb")
        row = {}
        for e in engines:
            ans = answers.get(e.name)
            ok = isinstance(ans, list) and isinstance(ref, list) and same_rows(ans, ref)
            warm = times[e.name][1:] or times[e.name]
            row[e.name] = {
                "first": times[e.name][0] if times[e.name] else None,
                "median": statistics.median(warm) if warm and ok else None,
                "min": min(warm) if warm and ok else None,
                "status": "ok" if ok else (ans if isinstance(ans, str) else "WRONG ANSWER"),
            }
        results[f"q{q:02}"] = row
        cells = []
        for e in engines:
            r = row[e.name]
            cells.append(f"{e.name} {r['median'] * 1e3:8.1f} ms" if r["median"] else f"{e.name} {r['status'][:30]}")
        print(f"q{q:02}  " + "  ".join(cells), flush=True)

    print()
    summary = {}
    # Strata's engines, each against the other engines and against the `strata` engine.
    subjects = [n for n in names if n.startswith("strata") or n == "cluster"]
    for s in subjects:
        print(f"geometric mean of {s} / peer (median warm times, queries both answered correctly):")
        for e in engines:
            if e.name == s or (e.name in subjects and e.name != "strata"):
                continue
            ratios = [
                r[s]["median"] / r[e.name]["median"]
                for r in results.values()
                if r[s]["median"] and r[e.name]["median"]
            ]
            if ratios:
                g = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
                summary.setdefault(s, {})[e.name] = {"geomean_ratio": g, "queries": len(ratios)}
                print(f"  vs {e.name} {e.version}: {g:.2f} over {len(ratios)} queries")
    for e in engines:
        if isinstance(e, StrataDashboard):
            print(f"  the dashboard answered {e.requests} requests ({e.failures} failed)")
    wrong = [(q, n) for q, r in results.items() for n, v in r.items() if v["status"] != "ok"]
    for q, n in wrong:
        print(f"  {q} {n}: {results[q][n]['status']}")
    if a.json:
        pathlib.Path(a.json).write_text(
            json.dumps(
                {
                    "scale": scale,
                    "runs": a.runs,
                    "versions": {e.name: e.version for e in engines},
                    "queries": results,
                    "summary": summary,
                },
                indent=1,
            )
        )
    sys.exit(1 if any(n in subjects for _, n in wrong) else 0)


if __name__ == "__main__":
    main()
