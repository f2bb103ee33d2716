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
    def connect():
        return sign_in(user, password)
else:
    def connect():
        return flightsql.connect(uri)
conn = connect()
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

# Cancel a query while its rows are being read.
endless = conn.cursor()
endless.execute("SELECT value FROM generate_series(1, 10000000000)")
reader = endless.fetch_record_batch()
first = reader.read_next_batch().num_rows
endless.adbc_cancel()
try:
    while True:
        reader.read_next_batch()
except StopIteration:
    say(step="cancel", first=first, error=None)
except Exception as e:  # the driver's error for a cancelled query
    say(step="cancel", first=first, error=str(e).splitlines()[0])
endless.close()

try:
    cur.execute("SELECT nope FROM violations")
    say(step="error", error=None)
except Exception as e:  # the driver's own error type
    say(step="error", error=str(e).splitlines()[0])
cur.execute("SELECT 1 AS one")
say(step="after-error", rows=[list(r) for r in cur.fetchall()])

# Session options and SET: this connection's own settings, not another's.
SESSION = "adbc.flight.sql.session.option."
conn.adbc_connection.set_options(**{SESSION + "batch_size": "99"})
options = json.loads(conn.adbc_connection.get_option("adbc.flight.sql.session.options"))
cur.execute("SET datafusion.execution.time_zone = '+05:00'")
cur.execute("SHOW datafusion.execution.batch_size")
mine = [list(r) for r in cur.fetchall()]
other = connect()
other_cur = other.cursor()
other_cur.execute("SHOW datafusion.execution.batch_size")
theirs = [list(r) for r in other_cur.fetchall()]
other_cur.execute("SHOW datafusion.execution.time_zone")
their_zone = [list(r) for r in other_cur.fetchall()]
other.close()
cur.execute("SHOW datafusion.execution.time_zone")
my_zone = [list(r) for r in cur.fetchall()]
try:
    conn.adbc_connection.set_options(**{SESSION + "datafusion.runtime.memory_limit": "1T"})
    refused = None
except Exception as e:  # the driver's error naming the option
    refused = str(e).splitlines()[0]
say(
    step="session",
    options=options,
    mine=mine,
    theirs=theirs,
    my_zone=my_zone,
    their_zone=their_zone,
    catalog=conn.adbc_current_catalog,
    schema=conn.adbc_current_db_schema,
    refused=refused,
)
conn.close()
