"""An application's session against `strata serve --postgres`, through psycopg.

Usage: postgres_psycopg.py PORT USER PASSWORD TOKEN. Prints one JSON object per line for the
Rust test to check.
"""
import datetime
import decimal
import json
import sys
import threading
import time

import psycopg

port, user, password, token = sys.argv[1:5]


def say(**kw):
    print(json.dumps(kw, default=str), flush=True)


def connect(secret):
    return psycopg.connect(host="127.0.0.1", port=port, user=user, password=secret,
                           dbname="strata", connect_timeout=10)


try:
    connect(password + "-wrong").close()
    say(step="wrong_password", error=None)
except psycopg.OperationalError as e:
    say(step="wrong_password", error=str(e))

with connect(token) as by_token:
    say(step="token", rows=by_token.execute("SELECT 1 AS one").fetchall())

# psycopg opens a transaction (BEGIN) before the first statement, and ends it on commit.
with connect(password) as conn:
    cur = conn.cursor()
    cur.execute("SELECT registration_state, count(*) AS n FROM violations "
                "GROUP BY 1 ORDER BY n DESC, 1 LIMIT 3")
    say(step="top", rows=cur.fetchall(), columns=[d.name for d in cur.description])
    # Parameters go through the extended protocol.
    cur.execute("SELECT count(*) FROM violations WHERE registration_state = %s "
                "AND violation_precinct > %s", ("NY", 50))
    say(step="params", rows=cur.fetchall())
    conn.commit()

    typed = ("SELECT CAST(1.5 AS DECIMAL(5, 2)) AS d, CAST(2.5 AS DOUBLE) AS f, true AS b, "
             "CAST(NULL AS INT) AS n, TIMESTAMP '2024-01-02 03:04:05' AS ts, "
             "DATE '2024-01-02' AS day, 'héllo' AS s, CAST(%s AS BIGINT) + 1 AS p")
    for binary in (False, True):
        row = conn.cursor(binary=binary).execute(typed, (41,)).fetchone()
        expected = (decimal.Decimal("1.50"), 2.5, True, None,
                    datetime.datetime(2024, 1, 2, 3, 4, 5), datetime.date(2024, 1, 2),
                    "héllo", 42)
        say(step="binary" if binary else "text", same=row == expected, row=row)

    try:
        cur.execute("SELECT nope FROM violations")
        say(step="error", error=None)
    except psycopg.Error as e:
        say(step="error", sqlstate=e.sqlstate, error=str(e))
    conn.rollback()
    try:
        cur.execute("CREATE TABLE t AS SELECT 1 AS x")
        say(step="write", error=None)
    except psycopg.Error as e:
        say(step="write", sqlstate=e.sqlstate, error=str(e))
    conn.rollback()
    cur.execute("SELECT 1")
    say(step="after-error", rows=cur.fetchall())
    cur.execute("SELECT user_name, state FROM strata.queries "
                "WHERE sql LIKE '%violation_precinct >%' AND state = 'finished'")
    say(step="log", rows=cur.fetchall())

# A cancel request (sent on a connection of its own) stops the statement under way; the
# session goes on. Cancel requests go out until the statement ends: one that comes before it
# starts finds nothing to cancel.
with connect(password) as conn:
    conn.autocommit = True
    done = threading.Event()

    def cancel():
        while not done.is_set():
            conn.cancel_safe()
            done.wait(0.2)

    canceller = threading.Thread(target=cancel)
    canceller.start()
    try:
        rows = conn.execute("SELECT count(*) FROM generate_series(1, 10000000000)").fetchall()
        say(step="cancel", rows=rows, error=None)
    except psycopg.Error as e:
        say(step="cancel", sqlstate=e.sqlstate, error=str(e))
    done.set()
    canceller.join()
    say(step="after-cancel", rows=conn.execute("SELECT 2").fetchall())

    # The extended protocol streams rows: the first ones of an endless query arrive.
    rows = 0
    try:
        for _ in conn.cursor().stream("SELECT value FROM generate_series(1, 10000000000)"):
            rows += 1
            if rows == 3:
                conn.cancel_safe()
        say(step="stream", rows=rows, error=None)
    except psycopg.Error as e:
        say(step="stream", rows=rows, sqlstate=e.sqlstate)
    # The stream's entry is ended when the server drops it, which may come just after the
    # client sees the error: look again until both entries are there (5 s at most).
    log = "SELECT state FROM strata.queries WHERE sql LIKE '%10000000000%' " \
          "AND sql NOT LIKE '%strata.queries%'"
    deadline = time.monotonic() + 5
    while True:
        states = conn.execute(log).fetchall()
        if len(states) >= 2 and all(s == ("cancelled",) for s in states) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    entries = conn.execute("SELECT id, state, error, sql FROM strata.queries "
                           "WHERE sql NOT LIKE '%strata.queries%' ORDER BY id").fetchall()
    say(step="cancel-log", rows=states, entries=entries)
