//! Writing into database tables: `INSERT INTO` (and `INSERT OVERWRITE`) a PostgreSQL,
//! MariaDB or SQLite table, and `strata convert` into one, which creates it when missing.
//! Every write is one transaction: what the database then holds is checked with its own
//! client, after writes that succeed and after writes that fail half-way.

#[path = "common/databases.rs"]
mod databases;
#[path = "common/sessions.rs"]
mod sessions;
#[path = "common/skip.rs"]
mod skip;

use std::path::{Path, PathBuf};
use std::process::Output;

use databases::{MariaDb, PG_USER, Postgres, sqlite_file};
use sessions::{answer, engine, failure};
use skip::skip;

fn strata(args: &[&str]) -> Output {
    sessions::strata(args, &[])
}

fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Twenty thousand rows: more than two batches, so a write that fails at the end has
/// already sent rows.
const MANY: &str = "SELECT value AS n FROM generate_series(1, 20000)";

/// A CSV file whose line 20002 has a field too many: reading it fails after 20000 rows.
fn ragged_csv(dir: &Path) -> PathBuf {
    let path = dir.join("ragged.csv");
    let mut text = String::from("n,label\n");
    for i in 0..20_000 {
        text.push_str(&format!("{i},row {i}\n"));
    }
    text.push_str("20000,one,too many\n");
    std::fs::write(&path, text).unwrap();
    path
}

/// The number of rows in `data/people`.
const PEOPLE: &str = "80";

#[tokio::test]
async fn postgres_writes_are_one_transaction_and_keep_every_type() {
    let test = "postgres_writes_are_one_transaction_and_keep_every_type";
    let pg = match Postgres::start() {
        Ok(pg) => pg,
        Err(reason) => return skip(test, &reason),
    };
    pg.psql(
        "CREATE TABLE kinds (id integer PRIMARY KEY, big bigint, flag boolean,
           price numeric(12,2), ratio double precision, name text, day date, at timestamp,
           at_tz timestamptz, clock time, uid uuid, doc jsonb, raw bytea, tags text[]);
         INSERT INTO kinds VALUES
           (1, 9000000000, true, 1234567890.12, 0.5, 'it''s', '2024-02-29',
            '2024-02-29 12:34:56.789', '2024-02-29 12:34:56+00', '12:34:56',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": [1, \"x\"]}', '\\x01ff',
            ARRAY['a', 'b,c']),
           (2, -1, false, -0.01, -1.25, '', '1999-12-31', '1999-12-31 23:59:59',
            '1999-12-31 23:59:59+00', '00:00:01', 'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a22',
            '[]', '\\x', ARRAY[]::text[]),
           (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
         CREATE TABLE copy (LIKE kinds INCLUDING ALL);
         CREATE TABLE nums (n integer PRIMARY KEY CHECK (n < 20000));",
    )
    .unwrap();
    let url = pg.url(PG_USER);
    let engine = engine().await;
    for (name, table) in [("copy", "public.copy"), ("nums", "nums")] {
        answer(
            &engine,
            &format!(
                "CREATE EXTERNAL TABLE {name} STORED AS postgres LOCATION '{url}' \
                 OPTIONS ('table' '{table}')"
            ),
        )
        .await;
    }

    // Every type comes back as it was: PostgreSQL itself finds no row that differs.
    let sql = format!("INSERT INTO copy SELECT * FROM postgres_scan('{url}', 'kinds')");
    assert!(answer(&engine, &sql).await.contains("| 3     |"));
    let differ = pg
        .psql(
            "SELECT count(*) FROM ((SELECT * FROM kinds EXCEPT SELECT * FROM copy)
                                   UNION ALL (SELECT * FROM copy EXCEPT SELECT * FROM kinds)) d",
        )
        .unwrap();
    assert_eq!(differ.trim(), "0");
    assert_eq!(pg.psql("SELECT count(*) FROM copy").unwrap().trim(), "3");

    // A duplicate key: nothing of the write stays, and the error says so in one line.
    let e = failure(&engine, &sql).await;
    assert!(
        e.contains("PostgreSQL") && e.contains("writing 'public.copy'"),
        "{e}"
    );
    assert!(
        e.contains("duplicate key") && e.contains("the table is unchanged"),
        "{e}"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM copy").unwrap().trim(), "3");

    // The last row breaks a CHECK after two batches were sent: none of them stays.
    let e = failure(&engine, &format!("INSERT INTO nums {MANY}")).await;
    assert!(e.contains("nums_n_check"), "{e}");
    assert_eq!(pg.psql("SELECT count(*) FROM nums").unwrap().trim(), "0");
    // The rows fail to come (a division by zero at row 15000): none stays either.
    let e = failure(
        &engine,
        "INSERT INTO nums SELECT n + 1 / (n - 15000) - 1 / (n - 15000) FROM \
         (SELECT value AS n FROM generate_series(1, 19999))",
    )
    .await;
    assert!(e.to_lowercase().contains("divide by zero"), "{e}");
    assert_eq!(pg.psql("SELECT count(*) FROM nums").unwrap().trim(), "0");
    let sql = "INSERT INTO nums SELECT value FROM generate_series(1, 19999)";
    assert!(answer(&engine, sql).await.contains("| 19999 |"));
    assert_eq!(
        pg.psql("SELECT count(*), sum(n) FROM nums").unwrap().trim(),
        "19999|199990000"
    );

    // INSERT OVERWRITE replaces the rows, in the same transaction as the new ones.
    let explained = answer(&engine, "EXPLAIN INSERT OVERWRITE nums VALUES (1), (2)").await;
    assert!(
        explained.contains("DatabaseSink: PostgreSQL") && explained.contains("overwrite"),
        "{explained}"
    );
    answer(&engine, "INSERT OVERWRITE nums VALUES (1), (2)").await;
    assert_eq!(pg.psql("SELECT count(*) FROM nums").unwrap().trim(), "2");
    let e = failure(&engine, "INSERT OVERWRITE nums VALUES (3), (3)").await;
    assert!(e.contains("duplicate key"), "{e}");
    assert_eq!(pg.psql("SELECT count(*) FROM nums").unwrap().trim(), "2");
}

#[tokio::test]
async fn convert_creates_or_appends_to_a_postgres_table_and_reads_one_back() {
    let test = "convert_creates_or_appends_to_a_postgres_table_and_reads_one_back";
    let pg = match Postgres::start() {
        Ok(pg) => pg,
        Err(reason) => return skip(test, &reason),
    };
    let dest = format!("{}&table=people", pg.url(PG_USER));

    // A new table, with the columns and types of the files.
    let out = succeeded(&strata(&["convert", "data/people", &dest]));
    assert!(
        out.contains(&format!("Converted {PEOPLE} rows")) && out.contains("(created)"),
        "{out}"
    );
    let columns = pg
        .psql(
            "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position)
             FROM information_schema.columns WHERE table_name = 'people'",
        )
        .unwrap();
    assert_eq!(
        columns.trim(),
        "person_id bigint, last_name text, first_name text, date_of_birth date"
    );
    // Appended the second time: PostgreSQL's answer equals the files' doubled.
    let out = succeeded(&strata(&["convert", "data/people", &dest]));
    assert!(out.contains("(appended to)"), "{out}");
    let local = succeeded(&strata(&[
        "--format",
        "csv",
        "-c",
        "SELECT count(*), sum(person_id), max(date_of_birth) FROM 'data/people'",
    ]));
    let row: Vec<&str> = local.lines().nth(1).unwrap().split(',').collect();
    let doubled = format!(
        "{}|{}|{}",
        2 * row[0].parse::<i64>().unwrap(),
        2 * row[1].parse::<i64>().unwrap(),
        row[2]
    );
    let held = pg
        .psql("SELECT count(*), sum(person_id), max(date_of_birth) FROM people")
        .unwrap();
    assert_eq!(held.trim(), doubled);

    // Columns go by name; one the table lacks is refused before anything is written.
    let out = strata(&[
        "convert",
        "data/events",
        &format!("{}&table=people", pg.url(PG_USER)),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no column"), "{err}");
    assert_eq!(
        pg.psql("SELECT count(*) FROM people").unwrap().trim(),
        (2 * PEOPLE.parse::<i64>().unwrap()).to_string()
    );
    let out = strata(&["convert", "data/people", &pg.url(PG_USER)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("?table=NAME"),
        "{err}"
    );

    // From the database to a file, the table named the same way.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("people.parquet");
    let out = succeeded(&strata(&["convert", &dest, file.to_str().unwrap()]));
    assert!(out.contains("read back 160 rows"), "{out}");

    // On a cluster, the write runs in the client, one transaction as locally.
    let sql = format!(
        "CREATE EXTERNAL TABLE p STORED AS postgres LOCATION '{}' OPTIONS ('table' 'people');
         INSERT INTO p SELECT * FROM 'data/people';",
        pg.url(PG_USER)
    );
    succeeded(&strata(&["--cluster", "local:2", "-c", &sql]));
    assert_eq!(
        pg.psql("SELECT count(*) FROM people").unwrap().trim(),
        (3 * PEOPLE.parse::<i64>().unwrap()).to_string()
    );
}

#[tokio::test]
async fn mariadb_writes_are_one_transaction_and_a_table_made_for_a_failed_one_is_dropped() {
    let test = "mariadb_writes_are_one_transaction_and_a_table_made_for_a_failed_one_is_dropped";
    let db = match MariaDb::start() {
        Ok(db) => db,
        Err(reason) => return skip(test, &reason),
    };
    db.sql(
        "CREATE TABLE shop.nums (n INT PRIMARY KEY, label VARCHAR(10),
                                 price DECIMAL(10,2), day DATE, CHECK (n < 20000));",
    )
    .unwrap();
    let engine = engine().await;
    answer(
        &engine,
        &format!(
            "CREATE EXTERNAL TABLE nums STORED AS mysql LOCATION '{}' OPTIONS ('table' 'nums')",
            db.url()
        ),
    )
    .await;
    let sql = "INSERT INTO nums VALUES (1, 'it''s', 1.50, DATE '2024-02-29'), \
               (2, NULL, NULL, NULL), (3, 'Ünï', -0.01, DATE '1999-12-31')";
    assert!(answer(&engine, sql).await.contains("| 3     |"));
    assert_eq!(
        db.sql("SELECT n, label, price, day FROM shop.nums ORDER BY n")
            .unwrap(),
        "1\tit's\t1.50\t2024-02-29\n2\tNULL\tNULL\tNULL\n3\tÜnï\t-0.01\t1999-12-31\n"
    );
    let e = failure(
        &engine,
        "INSERT INTO nums SELECT value + 3, NULL AS l, NULL AS p, NULL AS d FROM generate_series(1, 20000)",
    )
    .await;
    assert!(
        e.contains("MySQL") && e.contains("writing 'nums'") && e.contains("unchanged"),
        "{e}"
    );
    assert_eq!(
        db.sql("SELECT count(*) FROM shop.nums").unwrap().trim(),
        "3"
    );

    // convert makes a table; when the write then fails, the table is dropped again.
    let dest = format!("{}?table=people", db.url());
    let out = succeeded(&strata(&["convert", "data/people", &dest]));
    assert!(out.contains("(created)"), "{out}");
    assert_eq!(
        db.sql("SELECT count(*) FROM shop.people").unwrap().trim(),
        PEOPLE
    );
    let dir = tempfile::tempdir().unwrap();
    let ragged = ragged_csv(dir.path());
    let bad = format!("{}?table=broken", db.url());
    let out = strata(&["convert", ragged.to_str().unwrap(), &bad]);
    assert!(!out.status.success());
    assert_eq!(
        db.sql("SELECT count(*) FROM information_schema.TABLES WHERE TABLE_NAME = 'broken'")
            .unwrap()
            .trim(),
        "0"
    );
}

#[tokio::test]
async fn sqlite_writes_are_one_transaction_and_convert_makes_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.db");
    sqlite_file(
        &file,
        "CREATE TABLE nums (n INTEGER PRIMARY KEY, label TEXT);
         INSERT INTO nums VALUES (1, 'one');",
    );
    let engine = engine().await;
    answer(
        &engine,
        &format!(
            "CREATE EXTERNAL TABLE nums STORED AS sqlite LOCATION '{}' \
             OPTIONS ('table' 'nums')",
            file.display()
        ),
    )
    .await;
    // The write reads the table it writes: the rows it reads are those before it.
    let sql = "INSERT INTO nums SELECT n + 1, label || '+' FROM nums";
    assert!(answer(&engine, sql).await.contains("| 1     |"));
    // The last row repeats a key.
    let sql = format!("INSERT INTO nums SELECT n + 2, 'x' FROM ({MANY}) UNION ALL SELECT 1, 'x'");
    let e = failure(&engine, &sql).await;
    assert!(
        e.contains("SQLite") && e.contains("UNIQUE") && e.contains("unchanged"),
        "{e}"
    );
    assert!(
        answer(&engine, "SELECT count(*) AS c, max(label) AS m FROM nums")
            .await
            .contains("| 2 | one+ |")
    );

    // convert makes the file and the table; a failed one leaves no file behind.
    let made = dir.path().join("new.db");
    let dest = format!("sqlite:{}?table=people", made.display());
    let out = succeeded(&strata(&["convert", "data/people", &dest]));
    assert!(out.contains("(created)"), "{out}");
    let read = succeeded(&strata(&[
        "--format",
        "csv",
        "-c",
        &format!(
            "SELECT count(*) FROM sqlite_scan('{}', 'people')",
            made.display()
        ),
    ]));
    assert!(read.contains(PEOPLE), "{read}");
    let never = dir.path().join("never.db");
    let ragged = ragged_csv(dir.path());
    let out = strata(&[
        "convert",
        ragged.to_str().unwrap(),
        &format!("sqlite:{}?table=t", never.display()),
    ]);
    assert!(!out.status.success());
    assert!(!Path::new(&never).exists());
}
