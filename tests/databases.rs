//! Tables in databases next to files: SQLite files made here and a real PostgreSQL server
//! started for the tests, read through `sqlite_scan`, `postgres_scan`, `CREATE EXTERNAL TABLE`
//! and the catalog file; types, the filters sent to the database, joins with files, and one
//! clear line for each failure.

#[path = "common/databases.rs"]
mod databases;
#[path = "common/sessions.rs"]
mod sessions;
#[path = "common/skip.rs"]
mod skip;

use std::path::{Path, PathBuf};

use databases::{MariaDb, PG_GUARDED, PG_PASSWORD, PG_USER, Postgres, sqlite_file};
use sessions::{answer, engine, failure, root, strata};
use skip::skip;
use strata::datafusion::arrow::array::{Array, AsArray};
use strata::datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};
use strata::datafusion::arrow::util::display::array_value_to_string;
use strata::{Engine, Error};

/// The columns of `table` and their types, in the table's order.
async fn column_types(engine: &Engine, table: &str) -> Vec<(String, DataType)> {
    let result = engine.sql(&format!("SELECT * FROM {table}")).await.unwrap();
    result
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect()
}

/// The physical plan's text.
async fn plan(engine: &Engine, sql: &str) -> String {
    answer(engine, &format!("EXPLAIN {sql}")).await
}

fn shop_sqlite(dir: &Path) -> PathBuf {
    let path = dir.join("shop.db");
    sqlite_file(
        &path,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL, \
                             stock INTEGER, photo BLOB);
         INSERT INTO items VALUES (1, 'apple', 0.5, 10, x'01ff'), (2, 'Apricot', 1.25, NULL, NULL),
                                  (3, 'banana', 0.25, 0, NULL), (4, 'avocado', 2.0, 3, x'');
         CREATE TABLE accounts (person_id INTEGER, balance REAL);
         INSERT INTO accounts VALUES (1, 10.5), (2, -3.0), (3, 7.25), (99, 1.0);",
    );
    path
}

#[tokio::test]
async fn sqlite_tables_read_with_their_types_and_only_same_meaning_filters_sent() {
    let dir = tempfile::tempdir().unwrap();
    let db = shop_sqlite(dir.path());
    let db = db.display();
    let engine = engine().await;

    let table = format!("sqlite_scan('{db}', 'items')");
    let types: Vec<DataType> = column_types(&engine, &table)
        .await
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(
        types[..4],
        [
            DataType::Int64,
            DataType::Utf8,
            DataType::Float64,
            DataType::Int64
        ],
        "{types:?}"
    );
    assert!(
        matches!(types[4], DataType::Binary | DataType::LargeBinary),
        "{types:?}"
    );

    // A numeric filter and the projection are the database's work, and show in the plan.
    let sql = format!("SELECT name FROM {table} WHERE stock > 1 ORDER BY name");
    let explained = plan(&engine, &sql).await;
    assert!(
        explained.contains("DatabaseScanExec: SQLite") && explained.contains("sql=SELECT"),
        "{explained}"
    );
    assert!(explained.contains("WHERE"), "{explained}");
    assert!(!explained.contains("FilterExec"), "{explained}");
    assert_eq!(
        answer(&engine, &sql).await,
        "+---------+\n| name    |\n+---------+\n| apple   |\n| avocado |\n+---------+"
    );

    // SQLite's LIKE ignores case, Strata's does not: the filter stays here, and 'Apricot'
    // is not an 'a%' name.
    let sql = format!("SELECT name FROM {table} WHERE name LIKE 'a%' ORDER BY name");
    let explained = plan(&engine, &sql).await;
    assert!(explained.contains("FilterExec"), "{explained}");
    assert_eq!(
        answer(&engine, &sql).await,
        "+---------+\n| name    |\n+---------+\n| apple   |\n| avocado |\n+---------+"
    );

    // NULLs come through as NULL; a LIMIT reaches the database.
    let sql = format!("SELECT count(*) AS n, count(stock) AS known FROM {table}");
    assert!(answer(&engine, &sql).await.contains("| 4 | 3     |"));
    let explained = plan(&engine, &format!("SELECT id FROM {table} LIMIT 2")).await;
    assert!(explained.contains("LIMIT 2"), "{explained}");
}

#[tokio::test]
async fn a_database_table_joins_a_csv_dataset_as_the_same_rows_would() {
    let dir = tempfile::tempdir().unwrap();
    let db = shop_sqlite(dir.path());
    let engine = engine().await;
    let people = root().join("data/people/*.csv");
    let people = people.display();
    let join = |accounts: &str| {
        format!(
            "SELECT p.last_name, a.balance FROM read_csv('{people}') p \
             JOIN {accounts} ON a.person_id = p.person_id ORDER BY p.person_id"
        )
    };
    let from_db = answer(
        &engine,
        &join(&format!("sqlite_scan('{}', 'accounts') a", db.display())),
    )
    .await;
    let from_values = answer(
        &engine,
        &join(
            "(SELECT column1 AS person_id, CAST(column2 AS DOUBLE) AS balance \
              FROM (VALUES (1, 10.5), (2, -3.0), (3, 7.25), (99, 1.0))) a",
        ),
    )
    .await;
    assert_eq!(from_db, from_values);
    assert_eq!(from_db.lines().count(), 3 + 4, "{from_db}");
}

#[tokio::test]
async fn sqlite_failures_are_one_line_naming_the_file_or_table() {
    let dir = tempfile::tempdir().unwrap();
    let db = shop_sqlite(dir.path());
    let engine = engine().await;

    let missing = dir.path().join("nope.db");
    let e = failure(
        &engine,
        &format!(
            "SELECT * FROM sqlite_scan('{}', 'items')",
            missing.display()
        ),
    )
    .await;
    assert!(e.contains("SQLite") && e.contains("nope.db"), "{e}");
    assert!(!missing.exists(), "reading must not create the file");

    let e = failure(
        &engine,
        &format!("SELECT * FROM sqlite_scan('{}', 'nothing')", db.display()),
    )
    .await;
    assert!(
        e.contains("table 'nothing'") && e.contains("shop.db"),
        "{e}"
    );

    let not_sqlite = dir.path().join("text.db");
    std::fs::write(
        &not_sqlite,
        "this is not a database, just some text that is long enough",
    )
    .unwrap();
    let e = failure(
        &engine,
        &format!(
            "SELECT * FROM sqlite_scan('{}', 'items')",
            not_sqlite.display()
        ),
    )
    .await;
    assert!(e.contains("text.db"), "{e}");

    let e = failure(&engine, "SELECT * FROM sqlite_scan('x.db')").await;
    assert!(e.contains("sqlite_scan('file.db', 'table')"), "{e}");
    let e = failure(
        &engine,
        "SELECT * FROM postgres_scan('mysql://h/db', 'orders')",
    )
    .await;
    assert!(e.contains("reads PostgreSQL tables"), "{e}");
    let e = failure(
        &engine,
        "SELECT * FROM postgres_scan('postgres://u:hunter2@h/db', 'orders')",
    )
    .await;
    assert!(e.contains("PGPASSWORD") && !e.contains("hunter2"), "{e}");
}

#[tokio::test]
async fn sqlite_files_are_tables_in_the_catalog_and_in_create_external_table() {
    let dir = tempfile::tempdir().unwrap();
    shop_sqlite(dir.path());
    std::fs::write(
        dir.path().join("strata.toml"),
        "[tables.items]\nlocation = \"sqlite:shop.db\"\ntable = \"items\"\n\n\
         [tables.broken]\nlocation = \"sqlite:shop.db\"\n",
    )
    .unwrap();
    let engine = Engine::builder()
        .catalog(dir.path().join("strata.toml"))
        .build()
        .await
        .unwrap();
    assert!(
        answer(&engine, "SELECT sum(stock) AS s FROM items")
            .await
            .contains("| 13 |")
    );
    let e = failure(&engine, "SELECT * FROM broken").await;
    assert!(e.contains("broken") && e.contains("table = 'name'"), "{e}");

    let db = dir.path().join("shop.db");
    engine
        .sql(&format!(
            "CREATE EXTERNAL TABLE acc STORED AS sqlite LOCATION '{}' OPTIONS ('table' 'accounts')",
            db.display()
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(
        answer(&engine, "SELECT count(*) AS n FROM acc")
            .await
            .contains("| 4 |")
    );
}

/// A PostgreSQL server for one test, or `None` (with the reason printed) where none can be.
fn postgres(test: &str) -> Option<Postgres> {
    match Postgres::start() {
        Ok(pg) => Some(pg),
        Err(reason) => {
            skip(test, &reason);
            None
        }
    }
}

const PG_TYPES: &str = "CREATE TABLE public.kinds (
    id integer PRIMARY KEY, small smallint, big bigint, flag boolean, price numeric(12,2),
    ratio double precision, real4 real, name text COLLATE \"und-x-icu\", code varchar(8), letter char(2),
    day date, at timestamp, at_tz timestamptz, clock time, uid uuid, doc jsonb, raw bytea,
    tags text[]);
INSERT INTO public.kinds VALUES
  (1, 1, 9000000000, true, 1234567890.12, 0.5, 1.5, 'apple', 'A1', 'x', '2024-02-29',
   '2024-02-29 12:34:56.789', '2024-02-29 12:34:56+00', '12:34:56', 
   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": 1}', '\\x01ff', ARRAY['a','b']),
  (2, -2, -1, false, -0.01, -1.25, -2.5, 'Banana', 'B2', 'yz', '1999-12-31',
   '1999-12-31 23:59:59', '1999-12-31 23:59:59+00', '00:00:01',
   'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a22', '[]', '\\x', ARRAY[]::text[]),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL);";

#[tokio::test]
async fn postgres_tables_map_their_types_send_their_filters_and_join_files() {
    let Some(pg) = postgres("postgres_tables_map_their_types_send_their_filters_and_join_files")
    else {
        return;
    };
    pg.psql(PG_TYPES).unwrap();
    let url = pg.url(PG_USER);
    let engine = engine().await;
    let kinds = format!("postgres_scan('{url}', 'public', 'kinds')");

    let types = column_types(&engine, &kinds).await;
    let ty = |name: &str| {
        types
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("no column {name}: {types:?}"))
    };
    assert_eq!(ty("id"), DataType::Int32);
    assert_eq!(ty("small"), DataType::Int16);
    assert_eq!(ty("big"), DataType::Int64);
    assert_eq!(ty("flag"), DataType::Boolean);
    assert_eq!(ty("price"), DataType::Decimal128(12, 2));
    assert_eq!(ty("ratio"), DataType::Float64);
    assert_eq!(ty("real4"), DataType::Float32);
    assert_eq!(ty("name"), DataType::Utf8);
    assert_eq!(ty("day"), DataType::Date32);
    assert!(
        matches!(ty("at"), DataType::Timestamp(_, None)),
        "{types:?}"
    );
    assert!(
        matches!(ty("at_tz"), DataType::Timestamp(_, Some(_))),
        "{types:?}"
    );
    assert_eq!(ty("clock"), DataType::Time64(TimeUnit::Nanosecond));
    assert!(
        matches!(ty("raw"), DataType::Binary | DataType::LargeBinary),
        "{types:?}"
    );
    assert!(matches!(ty("tags"), DataType::List(_)), "{types:?}");

    let values = answer(
        &engine,
        &format!(
            "SELECT id, price, day, at, CAST(uid AS VARCHAR) AS uid, tags FROM {kinds} ORDER BY id"
        ),
    )
    .await;
    assert!(
        values.contains("| 1  | 1234567890.12 | 2024-02-29 | 2024-02-29T12:34:56.789 |"),
        "{values}"
    );
    assert!(
        values.contains("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        "{values}"
    );
    assert!(values.contains("[a, b]"), "{values}");
    assert!(values.contains("| 3  |               |"), "{values}");

    // Comparisons of numbers and text equality are sent; the text order is the server's
    // collation, so a text range stays in Strata.
    let sql = format!("SELECT id FROM {kinds} WHERE big > 0 AND code = 'A1'");
    let explained = plan(&engine, &sql).await;
    assert!(
        explained.contains("DatabaseScanExec: PostgreSQL"),
        "{explained}"
    );
    assert!(
        explained.contains("WHERE") && explained.contains("'A1'"),
        "{explained}"
    );
    assert!(!explained.contains("FilterExec"), "{explained}");
    assert!(answer(&engine, &sql).await.contains("| 1  |"));
    let sql = format!("SELECT id FROM {kinds} WHERE name < 'a' ORDER BY id");
    let explained = plan(&engine, &sql).await;
    assert!(explained.contains("FilterExec"), "{explained}");
    // Bytewise, 'Banana' < 'a'; in the column's collation, nothing is.
    assert_eq!(
        answer(&engine, &sql).await,
        "+----+\n| id |\n+----+\n| 2  |\n+----+"
    );

    // Joined with a CSV dataset, the same answer as with the same rows in VALUES.
    pg.psql(
        "CREATE TABLE accounts (person_id bigint, balance numeric(10,2));
         INSERT INTO accounts VALUES (1, 10.50), (2, -3.00), (3, 7.25), (99, 1.00);",
    )
    .unwrap();
    let people = root().join("data/people/*.csv");
    let join = |accounts: &str| {
        format!(
            "SELECT p.last_name, a.balance FROM read_csv('{}') p \
             JOIN {accounts} ON a.person_id = p.person_id ORDER BY p.person_id",
            people.display()
        )
    };
    let from_db = answer(
        &engine,
        &join(&format!("postgres_scan('{url}', 'accounts') a")),
    )
    .await;
    let from_values = answer(
        &engine,
        &join(
            "(VALUES (1, CAST(10.50 AS DECIMAL(10,2))), (2, -3.00), (3, 7.25), (99, 1.00)) \
             AS a(person_id, balance)",
        ),
    )
    .await;
    assert_eq!(from_db, from_values);

    // On a cluster, the executors read the table themselves: the same answer.
    let query = join(&format!("postgres_scan('{url}', 'accounts') a"));
    let local = strata(&["--format", "csv", "-c", &query], &[]);
    let cluster = strata(
        &["--cluster", "local:2", "--format", "csv", "-c", &query],
        &[],
    );
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );
    assert!(
        cluster.status.success(),
        "{}",
        String::from_utf8_lossy(&cluster.stderr)
    );
    assert_eq!(local.stdout, cluster.stdout);
    assert_eq!(String::from_utf8_lossy(&local.stdout).lines().count(), 4);
}

#[tokio::test]
async fn postgres_failures_are_one_line_naming_the_server_and_table() {
    let Some(pg) = postgres("postgres_failures_are_one_line_naming_the_server_and_table") else {
        return;
    };
    pg.psql("CREATE TABLE secret (x int); INSERT INTO secret VALUES (1);")
        .unwrap();
    let engine = engine().await;
    let url = pg.url(PG_USER);
    let target = format!("127.0.0.1:{}", pg.port);

    let e = failure(
        &engine,
        &format!("SELECT * FROM postgres_scan('{url}', 'missing')"),
    )
    .await;
    assert!(
        e.contains("PostgreSQL") && e.contains(&target) && e.contains("table 'missing'"),
        "{e}"
    );

    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let e = failure(
        &engine,
        &format!(
            "SELECT * FROM postgres_scan('postgres://u@127.0.0.1:{port}/db?sslmode=disable', 't')"
        ),
    )
    .await;
    assert!(
        e.contains("cannot connect") && e.contains(&format!(":{port}")),
        "{e}"
    );

    // Passwords come from the environment, as for psql; a wrong one and a missing
    // privilege each give one line from `strata`, which exits non-zero.
    let guarded = pg.url(PG_GUARDED);
    let query = format!("SELECT * FROM postgres_scan('{guarded}', 'secret')");
    let out = strata(&["-c", &query], &[("PGPASSWORD", "wrong")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot connect") && err.contains("password"),
        "{err}"
    );
    assert!(!err.contains("wrong"), "{err}");

    let out = strata(&["-c", &query], &[("PGPASSWORD", PG_PASSWORD)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("permission denied"), "{err}");

    pg.psql(&format!("GRANT SELECT ON secret TO {PG_GUARDED};"))
        .unwrap();
    let out = strata(&["-c", &query], &[("PGPASSWORD", PG_PASSWORD)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A password file works as for psql.
    let dir = tempfile::tempdir().unwrap();
    let pgpass = dir.path().join("pgpass");
    std::fs::write(
        &pgpass,
        format!("127.0.0.1:{}:*:{PG_GUARDED}:{PG_PASSWORD}\n", pg.port),
    )
    .unwrap();
    let out = strata(&["-c", &query], &[("PGPASSFILE", pgpass.to_str().unwrap())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn postgres_tables_in_the_catalog_are_listed_and_described() {
    let Some(pg) = postgres("postgres_tables_in_the_catalog_are_listed_and_described") else {
        return;
    };
    pg.psql(
        "CREATE SCHEMA shop; CREATE TABLE shop.orders (id bigint, total numeric(8,2));
         INSERT INTO shop.orders SELECT g, g * 1.5 FROM generate_series(1, 100) g;",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("strata.toml"),
        format!(
            "[tables.orders]\nlocation = \"{}\"\ntable = \"shop.orders\"\n",
            pg.url(PG_USER)
        ),
    )
    .unwrap();
    let engine = Engine::builder()
        .catalog(dir.path().join("strata.toml"))
        .build()
        .await
        .unwrap();
    assert!(engine.table_names().contains(&"orders".to_string()));
    let described = answer(&engine, "DESCRIBE orders").await;
    assert!(
        described.contains("id") && described.contains("total"),
        "{described}"
    );
    assert!(
        answer(
            &engine,
            "SELECT count(*) AS n, sum(total) AS s FROM orders WHERE id <= 10"
        )
        .await
        .contains("| 10 | 82.50 |")
    );
    let e: Error = engine.sql("SELECT nothing FROM orders").await.unwrap_err();
    assert!(e.to_string().contains("nothing"), "{e}");
}

/// The rows of `sql` as `psql -At` prints them: values joined by `|`, NULL as nothing.
async fn rows(engine: &Engine, sql: &str) -> String {
    let batches = engine.sql(sql).await.unwrap().collect().await.unwrap();
    let mut out = String::new();
    for batch in &batches {
        for row in 0..batch.num_rows() {
            let values: Vec<String> = batch
                .columns()
                .iter()
                .map(|c| match c.is_null(row) {
                    true => String::new(),
                    false => array_value_to_string(c, row).unwrap(),
                })
                .collect();
            out.push_str(&values.join("|"));
            out.push('\n');
        }
    }
    out
}

#[tokio::test]
async fn postgres_types_its_driver_cannot_read_come_as_numbers_or_their_text() {
    let Some(pg) = postgres("postgres_types_its_driver_cannot_read_come_as_numbers_or_their_text")
    else {
        return;
    };
    pg.psql(
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE DOMAIN price AS money;
         CREATE TABLE odd (id int PRIMARY KEY, m money, p price, c char(6), ip inet,
             mac8 macaddr8, md mood, r int4range, u uuid, jb jsonb, names varchar[], x xml);
         INSERT INTO odd VALUES
           (1, '12.34', '0.10', 'ab', '192.168.1.5', '08:00:2b:01:02:03:04:05', 'happy',
            '[1,5)', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '{\"b\":  2}', '{x,y}', '<a/>'),
           (2, '-1000.5', '99999.99', 'abcdef', '10.1.0.0/16', NULL, 'sad', 'empty', NULL,
            '[]', '{}', NULL),
           (3, '12.34', NULL, 'ab', NULL, NULL, 'ok', NULL, NULL, NULL, NULL, NULL),
           (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
    )
    .unwrap();
    let url = pg.url(PG_USER);
    let engine = engine().await;
    let odd = format!("postgres_scan('{url}', 'odd')");

    // money (and a domain over it) as numeric(19,2), not its cents; the rest as text.
    let types = column_types(&engine, &odd).await;
    for (name, ty) in &types {
        let expected = match name.as_str() {
            "id" => DataType::Int32,
            "m" | "p" => DataType::Decimal128(19, 2),
            _ => DataType::Utf8,
        };
        assert_eq!(ty, &expected, "{name}: {types:?}");
    }

    // Each value as PostgreSQL casts it (char(n) without its trailing blanks).
    let all = "SELECT id, m, p, c, ip, mac8, md, r, u, jb, names, x FROM odd ORDER BY id";
    let theirs = pg
        .psql(
            "SELECT id, m::numeric(19,2), p::numeric(19,2), c::text, ip::text, mac8::text, \
             md::text, r::text, u::text, jb::text, names::text, x::text FROM odd ORDER BY id",
        )
        .unwrap();
    assert_eq!(
        rows(&engine, &all.replace("odd", &odd)).await,
        theirs,
        "{all}"
    );
    assert!(
        theirs.starts_with("1|12.34|0.10|ab|192.168.1.5/32|"),
        "{theirs}"
    );

    // Filters, groups and joins over them, sent or not, give PostgreSQL's answers on the
    // values as read.
    for (ours, theirs) in [
        (
            "SELECT count(*) FROM odd WHERE m > 10",
            "SELECT count(*) FROM odd WHERE m > 10::money",
        ),
        (
            "SELECT count(*) FROM odd WHERE m = 12.34",
            "SELECT count(*) FROM odd WHERE m = '12.34'",
        ),
        (
            "SELECT count(*) FROM odd WHERE c = 'ab'",
            "SELECT count(*) FROM odd WHERE c = 'ab'",
        ),
        (
            "SELECT count(*) FROM odd WHERE md = 'happy'",
            "SELECT count(*) FROM odd WHERE md = 'happy'",
        ),
        (
            "SELECT sum(m), sum(p), count(DISTINCT m) FROM odd",
            "SELECT sum(m::numeric), sum(p::numeric), count(DISTINCT m) FROM odd",
        ),
        (
            "SELECT c, count(*), sum(m) FROM odd GROUP BY c ORDER BY c",
            "SELECT c::text, count(*), sum(m::numeric) FROM odd GROUP BY c ORDER BY c",
        ),
        (
            "SELECT a.id, b.id FROM odd a JOIN odd b ON a.c = b.c AND a.m = b.m ORDER BY 1, 2",
            "SELECT a.id, b.id FROM odd a JOIN odd b ON a.c = b.c AND a.m = b.m ORDER BY 1, 2",
        ),
    ] {
        let expected = pg.psql(theirs).unwrap();
        for pushdown in ["true", "false"] {
            answer(
                &engine,
                &format!("SET strata.database_pushdown = {pushdown}"),
            )
            .await;
            let got = rows(&engine, &ours.replace("odd", &odd)).await;
            assert_eq!(got, expected, "{ours} (pushdown {pushdown})");
        }
    }
    // The casts are in the SQL sent.
    let sent = plan(&engine, &format!("SELECT c FROM {odd} WHERE m > 10")).await;
    assert!(
        sent.contains("CAST(\"odd\".\"m\" AS DECIMAL(19,2))") && !sent.contains("FilterExec"),
        "{sent}"
    );
}

#[tokio::test]
async fn mariadb_tables_map_their_types_and_keep_text_comparisons_in_strata() {
    let test = "mariadb_tables_map_their_types_and_keep_text_comparisons_in_strata";
    let db = match MariaDb::start() {
        Ok(db) => db,
        Err(reason) => return skip(test, &reason),
    };
    db.sql(
        "CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(20), price DECIMAL(10,2),
                                  qty BIGINT, ok BOOLEAN, day DATE, at DATETIME(3), raw BLOB,
                                  ratio DOUBLE);
         INSERT INTO shop.items VALUES
           (1, 'apple', 1.50, 10, TRUE, '2024-02-29', '2024-02-29 12:34:56.789', x'01ff', 0.5),
           (2, 'Apple ', 2.25, NULL, FALSE, '1999-12-31', '1999-12-31 23:59:59', NULL, -1.5),
           (3, NULL, NULL, 0, NULL, NULL, NULL, NULL, NULL);",
    )
    .unwrap();
    let engine = engine().await;
    let items = format!("mysql_scan('{}', 'items')", db.url());
    let types: Vec<DataType> = column_types(&engine, &items)
        .await
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(types[0], DataType::Int32, "{types:?}");
    assert_eq!(types[2], DataType::Decimal128(10, 2), "{types:?}");
    assert_eq!(types[3], DataType::Int64, "{types:?}");
    assert_eq!(types[5], DataType::Date32, "{types:?}");
    assert!(
        matches!(types[6], DataType::Timestamp(_, None)),
        "{types:?}"
    );

    // MySQL compares text without case and ignores trailing blanks; Strata does neither, so
    // the comparison stays here: only 'apple' is 'apple'.
    let sql = format!("SELECT id FROM {items} WHERE name = 'apple'");
    let explained = plan(&engine, &sql).await;
    assert!(explained.contains("FilterExec"), "{explained}");
    assert_eq!(
        answer(&engine, &sql).await,
        "+----+\n| id |\n+----+\n| 1  |\n+----+"
    );
    // A numeric filter is the database's.
    let sql = format!("SELECT id, price FROM {items} WHERE qty >= 0 ORDER BY id");
    let explained = plan(&engine, &sql).await;
    assert!(
        explained.contains("DatabaseScanExec: MySQL") && explained.contains("WHERE"),
        "{explained}"
    );
    assert!(!explained.contains("FilterExec"), "{explained}");
    assert_eq!(
        answer(&engine, &sql).await,
        "+----+-------+\n| id | price |\n+----+-------+\n| 1  | 1.50  |\n| 3  |       |\n+----+-------+"
    );
    // A large table is read in ranges of its primary key, as in PostgreSQL.
    db.sql(
        "CREATE TABLE shop.big (id BIGINT PRIMARY KEY, v INT)
           SELECT seq AS id, seq % 7 AS v FROM shop.seq_1_to_600000;
         ANALYZE TABLE shop.big;",
    )
    .unwrap();
    let big = format!("mysql_scan('{}', 'big')", db.url());
    let explained = plan(&engine, &format!("SELECT v FROM {big}")).await;
    assert!(
        explained.contains("partitions=2 by ranges of id"),
        "{explained}"
    );
    let sql = format!("SELECT count(*) AS n, CAST(sum(v) AS BIGINT) AS s FROM {big}");
    for pushdown in ["true", "false"] {
        answer(
            &engine,
            &format!("SET strata.database_pushdown = {pushdown}"),
        )
        .await;
        let got = answer(&engine, &sql).await;
        assert!(got.contains("| 600000 | 1799997 |"), "{got}");
    }

    let e = failure(
        &engine,
        &format!("SELECT * FROM mysql_scan('{}', 'missing')", db.url()),
    )
    .await;
    assert!(e.contains("MySQL") && e.contains("table 'missing'"), "{e}");
}

#[tokio::test]
async fn mariadb_types_its_driver_cannot_read_come_as_their_text_or_fail_naming_the_column() {
    let test = "mariadb_types_its_driver_cannot_read_come_as_their_text_or_fail_naming_the_column";
    let db = match MariaDb::start() {
        Ok(db) => db,
        Err(reason) => return skip(test, &reason),
    };
    db.sql(
        "CREATE TABLE shop.odd (id INT PRIMARY KEY, yr YEAR, u UUID, ip INET6, js JSON,
             en ENUM('a', 'b'), st SET('x', 'y'), bt BIT(4), wide DECIMAL(40,5),
             big BIGINT UNSIGNED, lt LONGTEXT, g POINT);
         INSERT INTO shop.odd VALUES
           (1, 2024, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '::1', '{\"a\": 1}', 'b', 'x,y',
            b'1010', 123456789012345678901234567890.12345, 18000000000000000000, 'long',
            POINT(1, 2)),
           (2, NULL, NULL, '::ffff:192.168.1.5', NULL, NULL, '', NULL, -0.5, 0, NULL, NULL);",
    )
    .unwrap();
    let engine = engine().await;
    let odd = format!("mysql_scan('{}', 'odd')", db.url());
    let readable = format!("(SELECT * EXCLUDE (g) FROM {odd})");
    let types = column_types(&engine, &readable).await;
    let expected = [
        DataType::Int32,
        DataType::Int16,
        DataType::Utf8,
        DataType::Utf8,
        DataType::Utf8,
        DataType::Utf8,
        DataType::Utf8,
        DataType::UInt64,
        DataType::Decimal256(40, 5),
        DataType::UInt64,
        DataType::Utf8,
    ];
    let got: Vec<DataType> = types.iter().map(|(_, t)| t.clone()).collect();
    assert_eq!(got, expected, "{types:?}");

    // Each value as MariaDB gives it (NULL as its client prints it).
    let columns = "id, yr, u, ip, js, en, st, bt, wide, big, lt";
    let ours = rows(&engine, &format!("SELECT {columns} FROM {odd} ORDER BY id")).await;
    let ours: String = ours
        .lines()
        .map(|l| {
            let values: Vec<&str> = l
                .split('|')
                .map(|v| if v.is_empty() { "NULL" } else { v })
                .collect();
            values.join("\t") + "\n"
        })
        .collect();
    let theirs = db
        .sql(&format!(
            "SELECT {} FROM shop.odd ORDER BY id",
            columns.replace("bt", "bt + 0")
        ))
        .unwrap();
    // The second row's empty SET reads as the empty text, which `rows` prints as NULL.
    assert_eq!(ours, theirs.replace("\t\t", "\tNULL\t"));

    // A spatial column is one clear error when a query reads it, and only then.
    let e = failure(&engine, &format!("SELECT * FROM {odd}")).await;
    assert!(
        e.contains("column 'g' is of type point") && e.contains("table 'odd'"),
        "{e}"
    );
    assert!(
        answer(&engine, &format!("SELECT count(*) FROM {odd}"))
            .await
            .contains("| 2 ")
    );
}

#[tokio::test]
async fn a_large_postgres_table_is_read_in_ranges_of_its_key_at_once() {
    let Some(pg) = postgres("a_large_postgres_table_is_read_in_ranges_of_its_key_at_once") else {
        return;
    };
    pg.psql(
        "CREATE TABLE big (id bigint PRIMARY KEY, v int);
         INSERT INTO big SELECT g, g % 7 FROM generate_series(1, 600000) g; ANALYZE big;
         CREATE TABLE small (id bigint PRIMARY KEY); INSERT INTO small VALUES (1), (2);",
    )
    .unwrap();
    let expected = pg
        .psql("SELECT count(*) || ' ' || sum(v) FROM big")
        .unwrap();
    let engine = engine().await;
    let big = format!("postgres_scan('{}', 'big')", pg.url(PG_USER));

    let explained = plan(&engine, &format!("SELECT v FROM {big}")).await;
    assert!(
        explained.contains("partitions=2 by ranges of id"),
        "{explained}"
    );
    // Counted by the database (one SELECT), then here from the ranges: every row once.
    let sql = format!("SELECT count(*) AS n, CAST(sum(v) AS BIGINT) AS s FROM {big}");
    assert!(plan(&engine, &sql).await.contains("count(1)"));
    for pushdown in ["true", "false"] {
        answer(
            &engine,
            &format!("SET strata.database_pushdown = {pushdown}"),
        )
        .await;
        let result = engine.sql(&sql).await.unwrap().collect().await.unwrap();
        let got = format!(
            "{} {}",
            result[0].column(0).as_primitive::<Int64Type>().value(0),
            result[0].column(1).as_primitive::<Int64Type>().value(0)
        );
        assert_eq!(got, expected.trim());
    }

    // A key filter and a LIMIT are the database's; a LIMIT reads one range.
    let sql = format!("SELECT count(*) AS n FROM {big} WHERE id > 599990");
    assert!(answer(&engine, &sql).await.contains("| 10 |"));
    let explained = plan(&engine, &format!("SELECT * FROM {big} LIMIT 5")).await;
    assert!(
        !explained.contains("partitions=") && explained.contains("LIMIT 5"),
        "{explained}"
    );
    // A small table is one SELECT.
    let small = format!(
        "SELECT * FROM postgres_scan('{}', 'small')",
        pg.url(PG_USER)
    );
    assert!(!plan(&engine, &small).await.contains("partitions="));
}

#[tokio::test]
async fn attached_databases_show_every_table_under_their_name() {
    let test = "attached_databases_show_every_table_under_their_name";
    let Some(pg) = postgres(test) else {
        return;
    };
    pg.psql(
        "CREATE TABLE items (id int PRIMARY KEY, name text);
         INSERT INTO items VALUES (1, 'apple'), (2, 'pear');
         CREATE SCHEMA sales;
         CREATE TABLE sales.\"Orders\" (item_id int, qty int);
         INSERT INTO sales.\"Orders\" VALUES (1, 3), (1, 4), (2, 5);",
    )
    .unwrap();
    let url = pg.url(PG_USER);
    let engine = engine().await;
    answer(&engine, &format!("ATTACH '{url}' AS shop")).await;

    // Every schema's tables, listed in the information schema; the default schema's also
    // by the database's name alone. SQL's lower-case names find a table spelled otherwise.
    let listed = answer(
        &engine,
        "SELECT table_schema, table_name FROM information_schema.tables \
         WHERE table_catalog = 'shop' AND table_schema <> 'information_schema' ORDER BY 1, 2",
    )
    .await;
    assert_eq!(
        listed,
        "+--------------+------------+\n| table_schema | table_name |\n+--------------+------------+\n\
         | public       | items      |\n| sales        | Orders     |\n+--------------+------------+"
    );
    let sql = "SELECT i.name, sum(o.qty) AS qty FROM shop.items i \
               JOIN shop.sales.orders o ON o.item_id = i.id GROUP BY i.name ORDER BY i.name";
    assert_eq!(
        answer(&engine, sql).await,
        "+-------+-----+\n| name  | qty |\n+-------+-----+\n| apple | 7   |\n| pear  | 5   |\n+-------+-----+"
    );
    assert_eq!(
        answer(&engine, "SELECT count(*) AS n FROM shop.public.items").await,
        "+---+\n| n |\n+---+\n| 2 |\n+---+"
    );
    let e = failure(&engine, "SELECT * FROM shop.itemz").await;
    assert!(e.contains("did you mean 'items'"), "{e}");
    let e = failure(&engine, "ATTACH 'postgres://strata@127.0.0.1:1/x' AS gone").await;
    assert!(
        e.contains("PostgreSQL") && e.contains("cannot connect"),
        "{e}"
    );
    let e = failure(&engine, &format!("ATTACH '{url}' AS public")).await;
    assert!(e.contains("cannot name an attached database"), "{e}");

    // In the catalog file; a relative SQLite path is the catalog folder's.
    let dir = tempfile::tempdir().unwrap();
    shop_sqlite(dir.path());
    let catalog = dir.path().join("strata.toml");
    std::fs::write(
        &catalog,
        format!(
            "[databases.pg]\nlocation = \"{url}\"\n\n[databases.lite]\nlocation = \"sqlite:shop.db\"\n"
        ),
    )
    .unwrap();
    let out = strata(
        &[
            "--catalog",
            catalog.to_str().unwrap(),
            "--format",
            "csv",
            "-c",
            "SELECT p.name, l.price FROM pg.items p JOIN lite.main.items l ON l.id = p.id \
             ORDER BY p.id",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "name,price\napple,0.5\npear,1.25\n"
    );
    // A database that cannot be reached is one line naming the catalog's section.
    std::fs::write(
        &catalog,
        "[databases.gone]\nlocation = \"postgres://strata@127.0.0.1:1/x\"\n",
    )
    .unwrap();
    let out = strata(
        &["--catalog", catalog.to_str().unwrap(), "-c", "SELECT 1"],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("database 'gone'") && err.contains("cannot connect"),
        "{err}"
    );
}

#[tokio::test]
async fn an_attached_mariadb_database_is_its_one_schema() {
    let test = "an_attached_mariadb_database_is_its_one_schema";
    let db = match MariaDb::start() {
        Ok(db) => db,
        Err(reason) => return skip(test, &reason),
    };
    db.sql(
        "CREATE TABLE shop.Items (id INT PRIMARY KEY, name VARCHAR(10));
         INSERT INTO shop.Items VALUES (1, 'apple'), (2, 'pear');",
    )
    .unwrap();
    let engine = engine().await;
    answer(&engine, &format!("ATTACH '{}' AS m", db.url())).await;
    assert_eq!(
        answer(&engine, "SELECT name FROM m.shop.items WHERE id = 2").await,
        "+------+\n| name |\n+------+\n| pear |\n+------+"
    );
    assert_eq!(
        answer(&engine, "SELECT count(*) AS n FROM m.items").await,
        "+---+\n| n |\n+---+\n| 2 |\n+---+"
    );
}

/// A server that takes connections and never answers (a blackholed host, or one too busy
/// to speak): every backend gives up after `connect_timeout` with one line naming it, for
/// a scan and for ATTACH, and never hangs.
#[tokio::test]
async fn a_server_that_never_answers_times_out_in_one_line() {
    // Never accepted: the kernel completes each connection, and nothing is ever said on it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let engine = engine().await;
    for (backend, url) in [
        (
            "PostgreSQL",
            format!("postgres://u@127.0.0.1:{port}/db?sslmode=disable&connect_timeout=1"),
        ),
        (
            "MySQL",
            format!("mysql://u@127.0.0.1:{port}/db?connect_timeout=1"),
        ),
    ] {
        let scan = format!(
            "SELECT * FROM {}_scan('{url}', 't')",
            backend.to_lowercase().replace("postgresql", "postgres")
        );
        for sql in [scan, format!("ATTACH '{url}' AS silent")] {
            let started = std::time::Instant::now();
            let e =
                tokio::time::timeout(std::time::Duration::from_secs(30), failure(&engine, &sql))
                    .await
                    .unwrap_or_else(|_| panic!("{sql}: still waiting after 30 s"));
            assert!(
                e.contains(backend)
                    && e.contains(&format!("127.0.0.1:{port}"))
                    && e.contains("no answer within 1 s"),
                "{sql}: {e}"
            );
            // Within the timeout and its retry, not the drivers' own minutes.
            assert!(started.elapsed().as_secs() < 10, "{sql}: {e}");
        }
    }
    drop(silent);
}
