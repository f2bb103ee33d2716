#!/usr/bin/env python3
"""Cross-check sql-tests expectations against DuckDB, an independent engine.

Runs every `query` record of sql-tests/*.slt in DuckDB (with the catalog's tables defined as
views over the same files) and compares DuckDB's rows with the expected rows in the file.
Records DuckDB cannot run (Strata-only functions, scratch files) are counted as skipped.

    pip install duckdb && python3 sql-tests/crosscheck.py [FILTER]

Exit status 1 when any comparable record disagrees.
"""

import datetime
import decimal
import math
import pathlib
import re
import sys

import duckdb

ROOT = pathlib.Path(__file__).resolve().parent.parent

VIEWS = {
    "violations": "read_parquet('data/violations/**/*.parquet', hive_partitioning = true)",
    "violations_csv": "read_csv('data/violations_csv/**/*.csv.gz', hive_partitioning = true)",
    "people": "read_csv('data/people/*.csv')",
    "events": "read_json('data/events/*.ndjson', format = 'newline_delimited')",
    "violations_arrow": "read_parquet('data/violations/year=2023/month=1/part-0.parquet')",
    "violations_avro": "read_parquet('data/violations/year=2023/month=1/part-0.parquet')",
}

# TPC-H at scale factor 0.01, as the sql-tests runner generates it.
TPCH = ROOT / "sql-tests" / "scratch" / "tpch-sf0.01" / "parquet"
TPCH_TABLES = ["region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem"]


# Differences that are presentation or a deliberate choice, not wrong answers: the SQL text
# that identifies the record, and why.
KNOWN = {
    "SELECT 7 / 2": "integer division truncates, as in PostgreSQL",
    "SELECT x FROM n ORDER BY x DESC": "NULLs sort first in descending order, as in PostgreSQL",
    "CAST('2024-02-29' AS DATE) + INTERVAL": "date + interval stays a date",
    "DATE '2024-03-01' - INTERVAL": "date - interval stays a date",
    "information_schema": "type names and catalogs are DataFusion's",
    "SHOW TABLES": "type names and catalogs are DataFusion's",
    "DESCRIBE": "type names are Arrow's",
    "SELECT event_id, tags FROM events": "lists print without quotes",
    "array_sort(array_distinct": "lists print without quotes",
}


def statements(text):
    """The `CREATE TABLE` and `INSERT` statements of a file, each with its line."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.strip() == "statement ok" and i + 1 < len(lines):
            sql = []
            for follow in lines[i + 1 :]:
                if follow.strip() == "":
                    break
                sql.append(follow)
            text_sql = "\n".join(sql)
            if re.match(r"\s*(CREATE TABLE|INSERT INTO) ", text_sql, re.IGNORECASE):
                yield i + 1, text_sql


def records(text):
    """Yield (line, sort_mode, sql, expected_rows) for each query record."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("query ") and " error" not in line:
            parts = line.split()
            sort_mode = parts[2] if len(parts) > 2 else None
            start = i + 1
            j = start
            while j < len(lines) and lines[j] != "----":
                j += 1
            sql = "\n".join(lines[start:j])
            k = j + 1
            rows = []
            while k < len(lines) and lines[k].strip() != "":
                rows.append(lines[k])
                k += 1
            yield i + 1, sort_mode, sql, rows
            i = k
        else:
            i += 1


def fmt(v):
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
            return str(int(v))
        digits = 12 - (int(math.floor(math.log10(abs(v)))) + 1) if v else 0
        s = f"{v:.{max(0, min(15, digits))}f}"
        # Trailing zeros go only after a decimal point (1e17 is not "1").
        return s.rstrip("0").rstrip(".") if "." in s else s
    if isinstance(v, decimal.Decimal):
        return fmt(float(v))
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None and v.utcoffset() == datetime.timedelta(0):
            return v.replace(tzinfo=None).isoformat() + "Z"
        return v.isoformat()
    if isinstance(v, datetime.date):
        return v.isoformat()
    if v == "":
        return "(empty)"
    return str(v)


def normalize(row_text):
    return " ".join(row_text.split())


def number(token):
    try:
        return float(token)
    except ValueError:
        return None


def decimals(token):
    return len(token.split(".", 1)[1]) if "." in token and "e" not in token.lower() else 0


def same_rows(actual, expected):
    """Rows agree when their words agree, and numbers agree to the precision the less precise
    of the two prints (a decimal average has 6 places in Strata, a double in DuckDB)."""
    if len(actual) != len(expected):
        return False
    for a, e in zip(actual, expected):
        aw, ew = a.split(), e.split()
        if len(aw) != len(ew):
            return False
        for x, y in zip(aw, ew):
            if x == y:
                continue
            nx, ny = number(x), number(y)
            if nx is None or ny is None:
                return False
            dx, dy = decimals(x), decimals(y)
            if dx == 0 and dy == 0:
                return False  # different integers
            # A number printed without decimals is exact (trailing zeros dropped).
            places = min(dx, dy) if dx and dy else max(dx, dy)
            if not math.isclose(nx, ny, rel_tol=1e-9, abs_tol=10.0 ** -places):
                return False
    return True


def sql_of(text):
    """The SQL a record runs: `INCLUDE 'file'` stands for the file's text."""
    m = re.fullmatch(r"\s*INCLUDE '([^']+)'\s*", text)
    return (ROOT / m.group(1)).read_text() if m else text


def connect():
    """A DuckDB connection with the catalog's tables (and TPC-H's, when generated) as views."""
    con = duckdb.connect()
    for name, src in VIEWS.items():
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM {src}")
    if TPCH.is_dir():
        for t in TPCH_TABLES:
            con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{TPCH / t}/*.parquet')")
    return con


def main():
    filters = sys.argv[1:]
    import os

    os.chdir(ROOT)
    if not TPCH.is_dir():
        print(f"no TPC-H data in {TPCH} (cargo test --test sql-tests -- tpch makes it)")
    agree = disagree = skipped = 0
    for path in sorted((ROOT / "sql-tests").glob("*.slt")):
        if filters and not any(f in path.name for f in filters):
            continue
        # Each file has its own connection, with the tables the file makes from VALUES or
        # queries (a statement DuckDB cannot run leaves its table out, and the queries that
        # read it are skipped).
        con = connect()
        text = path.read_text()
        pending = list(statements(text))
        for line, sort_mode, sql, expected in records(text):
            # The file's statements before this query, in order.
            while pending and pending[0][0] < line:
                try:
                    con.execute(pending.pop(0)[1])
                except Exception:
                    pass
            sql = sql_of(sql)
            if "__SCRATCH__" in sql or "EXPLAIN" in sql.upper():
                skipped += 1
                continue
            try:
                got = con.execute(sql).fetchall()
            except Exception:
                skipped += 1
                continue
            actual = [normalize(" ".join(fmt(v) for v in r)) for r in got]
            exp = [normalize(r) for r in expected]
            if sort_mode == "rowsort":
                actual.sort()
                exp.sort()
            if actual == exp or same_rows(actual, exp):
                agree += 1
            elif any(k in sql for k in KNOWN):
                skipped += 1
            else:
                disagree += 1
                print(f"DIFFERS {path.name}:{line}\n  {sql}\n  strata: {exp[:5]}\n  duckdb: {actual[:5]}")
    print(f"crosscheck: {agree} agree, {disagree} differ, {skipped} skipped")
    sys.exit(1 if disagree else 0)


if __name__ == "__main__":
    main()
