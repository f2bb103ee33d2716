#!/usr/bin/env python3
"""Differential SQL testing: random queries, Strata's answers against DuckDB's and its own.

Makes two tables t1 and t2 — seeded random rows (NULLs, negative numbers, decimals, dates,
empty and repeated strings), or views over files: TPC-H Parquet (`--data tpch:DIR`), or the
hive-partitioned Parquet and CSV of data/ (`--data sample`) — generates random SELECTs over
them (joins, filters, CASE, casts, COALESCE, aggregates with GROUP BY and HAVING, window
functions, correlated and uncorrelated subqueries in SELECT, WHERE and GROUP BY, nested two
levels, with UNION, windows, LIMIT and outer joins inside them, LATERAL, set operations) and
checks each three ways:

1. against DuckDB, an independent engine (differences that are deliberate semantics are in
   ALLOWED, each with its reason);
2. by query partitioning: `count(*)` of a query equals the sum of the counts with `WHERE p`,
   `WHERE NOT p` and `WHERE p IS NULL`;
3. at 1 and 8 partitions, and in the other modes --modes names (the answers must be
   identical): a number of threads and partitions, `local:N`, a cluster of N executors
   started in the process, or `mem:SIZE`, four threads under a memory limit (where failing
   with the out-of-memory error is the one other outcome allowed).

    pip install duckdb
    python3 benches/differential.py --queries 10000 --seed 7 [--strata PATH] [--show 5]
        [--modes 1,2,8,local:2,mem:1M] [--data synthetic|sample|tpch:DIR]

Exit status 1 when any query differs without an allowance; every difference is printed with
its seed and number, so `--seed S --only N` replays it.
"""

import argparse
import datetime
import decimal
import json
import math
import os
import pathlib
import random
import subprocess
import sys
import tempfile

import duckdb

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Deliberate differences, as (substring of the query, reason). Generated queries avoid most
# of them; the rest are named here.
ALLOWED = [
    (" / ", "integer division truncates in Strata, as in PostgreSQL; DuckDB's `/` is a real division"),
]

WORDS = ["apple", "Apple", "banana", "", "cherry", "date", "a b", "zeta", "Éclair", "x"]


def make_tables(rng):
    """CREATE TABLE statements for t1 (200 rows) and t2 (60 rows), the same in both engines."""
    def value(kind):
        if rng.random() < 0.12:
            return "NULL"
        if kind == "int":
            return str(rng.randint(-20, 40))
        if kind == "dec":
            return f"CAST({rng.randint(-50000, 50000) / 100:.2f} AS DECIMAL(10, 2))"
        if kind == "str":
            return "'" + rng.choice(WORDS).replace("'", "''") + "'"
        if kind == "date":
            day = datetime.date(2023, 1, 1) + datetime.timedelta(days=rng.randint(0, 700))
            return f"DATE '{day.isoformat()}'"
        if kind == "bool":
            return rng.choice(["true", "false"])
        raise ValueError(kind)

    def table(name, rows, keys):
        kinds = [("k", None), ("a", "int"), ("b", "int"), ("d", "dec"), ("s", "str"),
                 ("dt", "date"), ("f", "bool")]
        body = []
        for i in range(rows):
            cells = [str(rng.randint(1, keys))] + [value(k) for _, k in kinds[1:]]
            body.append("(" + ", ".join(cells) + ")")
        # The first row fixes the column types in both engines.
        typed = ("(CAST(0 AS BIGINT), CAST(0 AS BIGINT), CAST(0 AS BIGINT), "
                 "CAST(0 AS DECIMAL(10, 2)), CAST('' AS VARCHAR), DATE '2023-01-01', false)")
        cols = ", ".join(c for c, _ in kinds)
        return (f"CREATE TABLE {name} AS SELECT * FROM (VALUES {typed}, {', '.join(body)}) "
                f"AS v({cols}) WHERE k > 0")

    return [table("t1", 200, 30), table("t2", 60, 30)]


COLUMNS = {"k": "int", "a": "int", "b": "int", "d": "dec", "s": "str", "dt": "date", "f": "bool"}

# The columns of t1 and t2 made from files, as (column, expression): the same expressions in
# both engines over the same files, so the generated queries read real files (Parquet with
# row groups and hive partitions, CSV) through each engine's own reader, with its pruning.
TPCH = {
    "t1": ("lineitem", "l_orderkey <= 200", [
        ("k", "CAST(l_suppkey % 30 + 1 AS BIGINT)"),
        ("a", "CAST(NULLIF(l_linenumber, 7) AS BIGINT) - 2"),
        ("b", "CAST(l_quantity AS BIGINT) - 25"),
        ("d", "CAST(l_extendedprice AS DECIMAL(10, 2))"),
        ("s", "CASE WHEN l_partkey % 9 = 0 THEN NULL ELSE l_shipmode END"),
        ("dt", "l_shipdate"),
        ("f", "l_returnflag = 'R'"),
    ]),
    "t2": ("orders", "o_orderkey <= 240", [
        ("k", "CAST(o_custkey % 30 + 1 AS BIGINT)"),
        ("a", "CAST(o_orderkey % 50 AS BIGINT) - 10"),
        ("b", "CAST(NULLIF(o_custkey % 40, 3) AS BIGINT) - 10"),
        ("d", "CAST(o_totalprice AS DECIMAL(10, 2))"),
        ("s", "o_orderpriority"),
        ("dt", "o_orderdate"),
        ("f", "o_orderstatus = 'F'"),
    ]),
}
SAMPLE = {
    "t1": ("violations", "year = 2024 AND month = 1", [
        ("k", "CAST(violation_code % 30 + 1 AS BIGINT)"),
        ("a", "violation_precinct % 60 - 20"),
        ("b", "CAST(summons_number % 41 AS BIGINT) - 20"),
        ("d", "CAST(summons_number % 20000 - 10000 AS DECIMAL(10, 2))"),
        ("s", "vehicle_make"),
        ("dt", "issue_date"),
        ("f", "registration_state = 'NY'"),
    ]),
    "t2": ("people", "person_id <= 60", [
        ("k", "CAST(person_id % 30 + 1 AS BIGINT)"),
        ("a", "CAST(length(last_name) AS BIGINT) - 5"),
        ("b", "CAST(NULLIF(person_id % 7, 3) AS BIGINT)"),
        ("d", "CAST(person_id * 37 % 1000 AS DECIMAL(10, 2))"),
        ("s", "first_name"),
        ("dt", "date_of_birth"),
        ("f", "person_id % 2 = 0"),
    ]),
}


def file_tables(layout, strata_source, duck_source):
    """CREATE VIEW statements for t1 and t2 from `layout`, for Strata and for DuckDB; the
    source functions name a table's files in each engine."""
    def views(source):
        out = []
        for name, (table, where, cols) in layout.items():
            select = ", ".join(f"{e} AS {c}" for c, e in cols)
            out.append(f"CREATE VIEW {name} AS SELECT {select} FROM {source(table)} WHERE {where}")
        return out
    return views(strata_source), views(duck_source)


def tables(data, rng):
    """The setup statements for Strata and for DuckDB: `synthetic` (random rows), `sample`
    (data/: hive-partitioned Parquet and CSV) or `tpch:DIR` (TPC-H Parquet files)."""
    if data == "synthetic":
        setup = make_tables(rng)
        return setup, setup
    if data == "sample":
        duck = {"violations": f"read_parquet('{ROOT}/data/violations/**/*.parquet', hive_partitioning = true)",
                "people": f"read_csv('{ROOT}/data/people/*.csv')"}
        return file_tables(SAMPLE, lambda t: t, duck.get)
    if data.startswith("tpch:"):
        d = os.path.abspath(data[len("tpch:"):])
        return file_tables(TPCH, lambda t: f"'{d}/{t}/'",
                           lambda t: f"read_parquet('{d}/{t}/*.parquet')")
    raise SystemExit(f"--data: synthetic, sample or tpch:DIR, not {data!r}")


class Gen:
    def __init__(self, rng):
        self.r = rng

    def col(self, alias, kind=None):
        names = [c for c, k in COLUMNS.items() if kind is None or k == kind]
        return f"{alias}.{self.r.choice(names)}"

    def num(self, alias, depth=0):
        r = self.r
        choice = r.randint(0, 9 if depth < 2 else 3)
        if choice <= 2:
            return self.col(alias, r.choice(["int", "int", "dec"]))
        if choice == 3:
            return str(r.randint(-5, 10)) if r.random() < 0.7 else f"{r.randint(-500, 500) / 10:.1f}"
        if choice == 4:
            op = r.choice(["+", "-", "*"])
            return f"({self.num(alias, depth + 1)} {op} {self.num(alias, depth + 1)})"
        if choice == 5:
            return f"abs({self.num(alias, depth + 1)})"
        if choice == 6:
            return f"coalesce({self.num(alias, depth + 1)}, {r.randint(0, 9)})"
        if choice == 7:
            return f"CASE WHEN {self.pred(alias, depth + 1)} THEN {self.num(alias, depth + 1)} ELSE {self.num(alias, depth + 1)} END"
        if choice == 8:
            return f"CAST({self.col(alias, 'dec')} AS BIGINT)" if r.random() < 0.5 else f"length({self.col(alias, 'str')})"
        return f"({self.num(alias, depth + 1)} % {r.randint(2, 7)})"

    def text(self, alias):
        r = self.r
        c = self.col(alias, "str")
        return r.choice([c, f"upper({c})", f"coalesce({c}, 'none')", f"{c} || '-'",
                         f"substr({c}, 1, 2)", f"CAST({self.col(alias, 'int')} AS VARCHAR)"])

    def pred(self, alias, depth=0):
        r = self.r
        choice = r.randint(0, 9 if depth < 2 else 5)
        if choice <= 2:
            op = r.choice(["=", "<>", "<", "<=", ">", ">="])
            return f"{self.num(alias, depth + 1)} {op} {self.num(alias, depth + 1)}"
        if choice == 3:
            return f"{self.col(alias)} IS {r.choice(['', 'NOT '])}NULL"
        if choice == 4:
            vals = ", ".join(str(r.randint(-5, 30)) for _ in range(r.randint(1, 4)))
            if r.random() < 0.3:
                vals += ", NULL"
            return f"{self.col(alias, 'int')} {r.choice(['', 'NOT '])}IN ({vals})"
        if choice == 5:
            lo = r.randint(-10, 20)
            return f"{self.num(alias, depth + 1)} BETWEEN {lo} AND {lo + r.randint(0, 20)}"
        if choice == 6:
            return f"({self.pred(alias, depth + 1)} {r.choice(['AND', 'OR'])} {self.pred(alias, depth + 1)})"
        if choice == 7:
            return f"NOT ({self.pred(alias, depth + 1)})"
        if choice == 8:
            return f"{self.col(alias, 'str')} {r.choice(['=', '<', '>'])} '{r.choice(WORDS)}'"
        return f"{self.col(alias, 'date')} {r.choice(['<', '>='])} DATE '2024-0{r.randint(1, 9)}-1{r.randint(0, 9)}'"

    def subquery(self, outer):
        """A subquery over t2 AS z, correlated with `outer` or not."""
        r = self.r
        corr = ""
        if r.random() < 0.8:
            op = r.choice(["=", "<", ">", "<>", "<="])
            corr = f" AND z.{r.choice(['k', 'a', 'b'])} {op} {outer}.{r.choice(['k', 'a', 'b'])}"
        where = f"WHERE {self.pred('z')}{corr}"
        kind = r.randint(0, 10)
        op = r.choice(["=", "<", ">", "<>"])
        if kind == 6:
            # Two levels down, referring to the outermost query.
            return f"(SELECT count(*) FROM t2 AS z {where} AND z.a < (SELECT max(w.b) FROM t1 AS w WHERE w.k {op} {outer}.k))"
        if kind == 7:
            return f"(SELECT sum(v) FROM (SELECT z.a AS v FROM t2 AS z {where} UNION ALL SELECT w.b FROM t1 AS w WHERE w.k {op} {outer}.a) AS s)"
        if kind == 8:
            return f"(SELECT max(rk) FROM (SELECT rank() OVER (PARTITION BY z.k ORDER BY z.a) AS rk FROM t2 AS z {where}) AS s)"
        if kind == 9:
            order = "z.a NULLS FIRST, z.b NULLS FIRST, z.d NULLS FIRST, z.s NULLS FIRST, z.dt NULLS FIRST, z.f NULLS FIRST"
            return f"(SELECT z.k FROM t2 AS z WHERE {self.pred('z')} ORDER BY abs(z.b - {outer}.b) NULLS FIRST, z.k, {order} LIMIT 1 OFFSET {r.randint(0, 1)})"
        if kind == 10:
            return f"EXISTS (SELECT 1 FROM t2 AS z LEFT JOIN t1 AS w ON w.k = z.k AND w.a {op} {outer}.a WHERE {self.pred('z')} AND w.k IS NULL)"
        if kind == 0:
            agg = r.choice(["count(*)", "count(z.a)", "sum(z.b)", "min(z.d)", "max(z.a)"])
            return f"(SELECT {agg} FROM t2 AS z {where})"
        if kind == 1:
            return f"EXISTS (SELECT 1 FROM t2 AS z {where})"
        if kind == 2:
            return f"NOT EXISTS (SELECT 1 FROM t2 AS z {where})"
        if kind == 3:
            return f"{outer}.{r.choice(['a', 'b'])} {r.choice(['', 'NOT '])}IN (SELECT z.{r.choice(['a', 'b'])} FROM t2 AS z {where})"
        if kind == 4:
            return f"{outer}.a {r.choice(['>', '<', '='])} {r.choice(['ALL', 'ANY'])} (SELECT z.b FROM t2 AS z {where})"
        return f"(SELECT z.b FROM t2 AS z {where} ORDER BY z.b NULLS FIRST, z.a NULLS FIRST, z.d NULLS FIRST, z.s NULLS FIRST, z.dt NULLS FIRST LIMIT 1)"

    def query(self):
        """(sql, predicate or None, from_where) — the predicate lets a query be partitioned."""
        r = self.r
        join = r.randint(0, 3)
        if join == 0:
            frm = "t1 AS x"
        elif join == 1:
            frm = f"t1 AS x JOIN t2 AS y ON x.k = y.k"
        elif join == 2:
            frm = f"t1 AS x LEFT JOIN t2 AS y ON x.k = y.k AND {self.pred('y')}"
        else:
            frm = f"t1 AS x, LATERAL (SELECT count(*) AS n, max(z.a) AS m FROM t2 AS z WHERE z.k {r.choice(['<', '=', '>'])} x.k) AS y"
        pred = self.pred("x") if r.random() < 0.8 else None
        if r.random() < 0.35:
            sub = self.subquery("x")
            sub_pred = sub if not sub.startswith("(SELECT") else f"{sub} {r.choice(['>', '<', '=', 'IS NULL OR 1 ='])} {r.randint(0, 5)}"
            pred = f"({pred}) AND ({sub_pred})" if pred else sub_pred
        shape = r.randint(0, 3)
        if shape == 0:
            items = [self.num("x"), self.text("x"), self.col("x")]
            if r.random() < 0.4:
                items.append(self.subquery("x"))
            if r.random() < 0.3:
                items.append(f"row_number() OVER (PARTITION BY x.k ORDER BY x.a NULLS FIRST, x.b NULLS FIRST, x.d NULLS FIRST, x.s NULLS FIRST, x.dt NULLS FIRST, x.f NULLS FIRST)")
            select = ", ".join(f"{e} AS c{i}" for i, e in enumerate(items))
            body = f"SELECT {select} FROM {frm}"
        elif shape == 1:
            key = r.choice([self.col("x"), self.text("x"), f"({self.num('x')} % 3)",
                            f"(SELECT count(*) FROM t2 AS z WHERE z.k {r.choice(['<', '='])} x.k)"])
            aggs = [r.choice(["count(*)", f"sum({self.num('x')})", f"min({self.col('x')})",
                              f"max({self.text('x')})", f"count(DISTINCT {self.col('x', 'int')})",
                              f"avg({self.col('x', 'int')})"]) for _ in range(r.randint(1, 3))]
            select = ", ".join([f"{key} AS g"] + [f"{a} AS c{i}" for i, a in enumerate(aggs)])
            having = f" HAVING count(*) > {r.randint(0, 3)}" if r.random() < 0.3 else ""
            body = f"SELECT {select} FROM {frm}{{where}} GROUP BY 1{having}"
            sql = body.replace("{where}", f" WHERE {pred}" if pred else "")
            return sql, None, None
        elif shape == 2:
            body = f"SELECT count(*) AS n, sum({self.num('x')}) AS s FROM {frm}"
        else:
            left = f"SELECT {self.col('x', 'int')} AS c0 FROM {frm}"
            right = f"SELECT {self.col('y' if join in (1, 2) else 'x', 'int')} AS c0 FROM {frm}"
            op = r.choice(["UNION", "UNION ALL", "INTERSECT", "EXCEPT"])
            return f"{left} {op} {right}", None, None
        sql = body + (f" WHERE {pred}" if pred else "")
        return sql, pred, (body if shape == 0 else None)


def norm(v):
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, decimal.Decimal)):
        f = float(v)
        if math.isfinite(f) and f == int(f) and abs(f) < 1e15:
            return str(int(f))
        return f"{f:.9g}"
    if isinstance(v, (datetime.date, datetime.datetime)):
        return v.isoformat()
    return str(v)


# Errors other than running out of memory in the runs under a memory limit.
MEMORY_FAILURES = []


def mode_args(mode):
    """The command line options of a mode: `N` threads and partitions, `local:N`, or
    `mem:SIZE` (4 threads under a memory limit of SIZE)."""
    if mode.startswith("local:"):
        return ["--cluster", mode]
    if mode.startswith("mem:"):
        return ["--threads", "4", "--memory-limit", mode[4:]]
    return ["--threads", mode]


def strata_answers(strata, setup, queries, mode):
    """Run every query in one Strata process in `mode`; the answer of each is a sorted list of
    rows, or None when it failed."""
    lines = [s + ";" for s in setup]
    for i, q in enumerate(queries):
        lines.append(f"SELECT {i} AS __strata_query;")
        lines.append(q + ";")
        # An empty answer and a failure print alike; the count tells them apart.
        lines.append(f"SELECT count(*) AS __strata_rows FROM ({q}) AS __q;")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write("\n".join(lines))
        path = f.name
    try:
        p = subprocess.run([strata, "-q", "--format", "ndjson", "--continue-on-error",
                            *mode_args(mode), "-f", path],
                           capture_output=True, text=True, cwd=ROOT, timeout=3600)
    finally:
        os.unlink(path)
    if mode.startswith("mem:"):
        # Under a memory limit, failing is allowed only with the out-of-memory error.
        for line in p.stderr.splitlines():
            if line.startswith("Error") and "out of memory" not in line:
                print(f"FAILS in {mode} (not for want of memory): {line[:300]}")
                MEMORY_FAILURES.append(line)
    answers = [None] * len(queries)
    current, rows = None, []
    for line in p.stdout.splitlines():
        obj = json.loads(line)
        if "__strata_query" in obj:
            current, rows = obj["__strata_query"], []
        elif "__strata_rows" in obj:
            if current is not None and obj["__strata_rows"] == len(rows):
                answers[current] = sorted(tuple(norm(v) for v in r.values()) for r in rows)
        else:
            rows.append(obj)
    return answers


def strata_error(strata, setup, q):
    """The error Strata gives for one query, run on its own."""
    p = subprocess.run([strata, "-q", "-c", ";\n".join(setup + [q])],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    lines = p.stderr.strip().splitlines()
    return "failed: " + (lines[-1] if lines else f"exit status {p.returncode}")


def duck_answer(con, q):
    try:
        return sorted(tuple(norm(v) for v in row) for row in con.execute(q).fetchall())
    except Exception:
        return None


def close(a, b):
    if a == b:
        return True
    if a is None or b is None or len(a) != len(b):
        return False
    for ra, rb in zip(a, b):
        if len(ra) != len(rb):
            return False
        for x, y in zip(ra, rb):
            if x == y:
                continue
            try:
                fx, fy = float(x), float(y)
            except ValueError:
                return False
            if not math.isclose(fx, fy, rel_tol=1e-6, abs_tol=1e-6):
                return False
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--strata", default=None, help="the strata binary (default: target/debug)")
    ap.add_argument("--only", type=int, default=None, help="run only query number N")
    ap.add_argument("--show", type=int, default=10, help="print at most this many differences")
    ap.add_argument("--modes", default="1,8",
                    help="modes whose answers must agree: N threads, local:N executors, or "
                         "mem:SIZE (4 threads under a memory limit; failing with the "
                         "out-of-memory error is allowed)")
    ap.add_argument("--data", default="synthetic",
                    help="the tables: synthetic (random rows), sample (data/), or tpch:DIR "
                         "(TPC-H Parquet files in DIR/TABLE/)")
    a = ap.parse_args()
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    strata = a.strata or str(target / "debug" / "strata")

    rng = random.Random(a.seed)
    setup, duck_setup = tables(a.data, rng)
    gen = Gen(rng)
    generated = [gen.query() for _ in range(a.queries)]
    numbered = list(enumerate(generated))
    if a.only is not None:
        numbered = [numbered[a.only]]

    # Query partitioning: count(*) of the query, and of its three partitions.
    checks = []
    for n, (sql, pred, body) in numbered:
        checks.append((n, "duckdb", sql))
        if pred and body:
            whole = f"SELECT count(*) FROM ({body}) AS w"
            parts = [f"SELECT count(*) FROM ({body} WHERE {p}) AS w"
                     for p in (f"({pred})", f"NOT ({pred})", f"({pred}) IS NULL")]
            checks.append((n, "partitions", [whole] + parts))
    flat = []
    for n, kind, q in checks:
        flat.extend(q if isinstance(q, list) else [q])
    modes = a.modes.split(",")
    answers = {m: strata_answers(strata, setup, flat, m) for m in modes}
    one = answers[modes[0]]

    con = duckdb.connect()
    for s in duck_setup:
        con.execute(s)
    ran = differ = allowed = failed_both = 0
    out_of_memory = {}
    shown = 0
    at = 0
    for n, kind, q in checks:
        if kind == "duckdb":
            mine = one[at]
            ran += 1
            theirs = duck_answer(con, q)
            problems = []
            for m in modes[1:]:
                again = answers[m][at]
                if again is None and mine is not None and m.startswith("mem:"):
                    # Under a memory limit a query (or the count of its rows) may fail with
                    # the out-of-memory error; any other error of that run is reported above.
                    out_of_memory[m] = out_of_memory.get(m, 0) + 1
                    continue
                if mine != again and not close(mine, again):
                    problems.append(f"{modes[0]} vs {m}: {str(mine)[:200]} / {str(again)[:200]}")
            at += 1
            if mine is None and theirs is None:
                failed_both += 1
            elif not close(mine, theirs):
                reason = next((why for k, why in ALLOWED if k in q), None)
                if reason:
                    allowed += 1
                else:
                    said = strata_error(strata, setup, q) if mine is None else str(mine)[:300]
                    problems.append(f"strata {said}\n    duckdb {str(theirs)[:300]}")
        else:
            counts = [one[at + i] for i in range(4)]
            at += 4
            problems = []
            if all(c is not None for c in counts):
                whole, p, notp, null = (int(c[0][0]) for c in counts)
                if whole != p + notp + null:
                    problems.append(f"partitioning: {whole} != {p} + {notp} + {null}")
        if problems:
            differ += 1
            if shown < a.show:
                shown += 1
                print(f"DIFFERS seed {a.seed} query {n}:\n  {generated[n][0]}")
                for pr in problems:
                    print("    " + pr)
    print(f"differential: {ran} queries (seed {a.seed}, {a.data} tables), {differ} differ, "
          f"{allowed} allowed, "
          f"{failed_both} rejected by both engines")
    for m in modes:
        if m.startswith("mem:"):
            print(f"differential: under {m[4:]}, {ran - out_of_memory.get(m, 0)} of {ran} "
                  f"queries answered, {out_of_memory.get(m, 0)} ran out of memory")
    if MEMORY_FAILURES:
        print(f"differential: {len(MEMORY_FAILURES)} errors under a memory limit other than "
              "running out of memory")
    sys.exit(1 if differ or MEMORY_FAILURES else 0)


if __name__ == "__main__":
    main()
