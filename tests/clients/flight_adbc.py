"""A notebook user's session against `strata serve`, through ADBC's Flight SQL driver.

Usage: flight_adbc.py PORT [USER PASSWORD]. Prints one JSON object per line for the Rust
test to check.
"""
import json
import sys
import warnings

import adbc_driver_flightsql.dbapi as flightsql

warnings.simplefilter("ignore")
uri = f"grpc://127.0.0.1:{sys.argv[1]}"


def say(**kw):
    print(json.dumps(kw, default=str), flush=True)


def sign_in(user, password):
    return flightsql.connect(uri, db_kwargs={"username": user, "password": password})


if len(sys.argv) > 3:
    user, password = sys.argv[2], sys.argv[3]
    try:
        bad = sign_in(user, password + "-wrong")
        bad.cursor().execute("SELECT 1")
        say(step="wrong_password", error=None)
    except Exception as e:  # the driver's error for a refused sign-in
        say(step="wrong_password", error=str(e))
    conn = sign_in(user, password)
else:
    conn = flightsql.connect(uri)
cur = conn.cursor()


cur.execute("SELECT registration_state, count(*) AS n FROM violations GROUP BY 1 ORDER BY n DESC, 1 LIMIT 3")
say(step="top", rows=[list(r) for r in cur.fetchall()])

cur.execute(
    "SELECT count(*) AS c FROM violations WHERE registration_state = ? AND violation_precinct > ?",
    ("NY", 50),
)
say(step="params", rows=[list(r) for r in cur.fetchall()])

cur.execute("SELECT value FROM generate_series(1, 1000000)")
table = cur.fetch_arrow_table()
say(step="large", rows=table.num_rows, total=sum(table.column(0).to_pylist()))

objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
tables = sorted(
    t["table_name"]
    for catalog in objects
    for schema in catalog["catalog_db_schemas"] or []
    for t in schema["db_schema_tables"] or []
)
say(step="objects", tables=tables)
say(step="schema", columns=conn.adbc_get_table_schema("violations").names)

try:
    cur.execute("SELECT nope FROM violations")
    say(step="error", error=None)
except Exception as e:  # the driver's own error type
    say(step="error", error=str(e).splitlines()[0])
cur.execute("SELECT 1 AS one")
say(step="after-error", rows=[list(r) for r in cur.fetchall()])
conn.close()
