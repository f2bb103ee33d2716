//! Joins and aggregations sent whole to PostgreSQL, MariaDB and SQLite give the rows Strata
//! gives computing them itself: a grid of generated queries (join kinds, group keys of every
//! type, aggregates, filters, HAVING) runs with `strata.database_pushdown` on and off over
//! the same tables in each backend, and every answer must agree.

#[path = "common/databases.rs"]
mod databases;
#[path = "common/sessions.rs"]
mod sessions;
#[path = "common/skip.rs"]
mod skip;

use databases::{MariaDb, PG_USER, Postgres, sqlite_file};
use sessions::{answer, engine};
use skip::skip;
use strata::Engine;

/// Two tables with NULLs in every column but the keys, text that differs only in case or a
/// trailing blank, orders of people who do not exist and people without orders.
fn tables() -> String {
    let mut sql = String::from(
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name VARCHAR(20), city VARCHAR(20),
           age INTEGER, born DATE, active BOOLEAN);
         CREATE TABLE orders (id INTEGER PRIMARY KEY, person_id INTEGER, amount DECIMAL(10,2),
           qty BIGINT, note VARCHAR(20));\n",
    );
    let cities = ["'Oslo'", "'oslo'", "'Oslo '", "'Bergen'", "NULL"];
    for i in 1..=14 {
        let age = if i % 5 == 0 {
            "NULL".to_string()
        } else {
            (20 + i * 3 % 17).to_string()
        };
        let born = match i % 4 {
            0 => "NULL".to_string(),
            k => format!("'19{}-0{k}-1{}'", 70 + i, i % 10),
        };
        let active = ["true", "false", "NULL"][i % 3];
        sql.push_str(&format!(
            "INSERT INTO people VALUES ({i}, 'p{}', {}, {age}, {born}, {active});\n",
            i % 9,
            cities[i % cities.len()]
        ));
    }
    for i in 1..=60 {
        let person = if i % 11 == 0 {
            "NULL".to_string()
        } else {
            (i * 7 % 17).to_string()
        };
        let amount = if i % 13 == 0 {
            "NULL".to_string()
        } else {
            format!("{}.{:02}", i * 3 % 40, i * 17 % 100)
        };
        let qty = if i % 8 == 0 {
            "NULL".to_string()
        } else {
            (i % 6).to_string()
        };
        let note = ["'a'", "'A'", "'b'", "NULL"][i % 4];
        sql.push_str(&format!(
            "INSERT INTO orders VALUES ({i}, {person}, {amount}, {qty}, {note});\n"
        ));
    }
    sql
}

/// The queries: every join kind (and none) with group keys of each type, aggregates over
/// both tables, filters each backend takes or leaves to Strata, and HAVING.
fn queries() -> Vec<String> {
    let froms = [
        "shop.orders o JOIN shop.people p ON o.person_id = p.id",
        "shop.orders o LEFT JOIN shop.people p ON o.person_id = p.id",
        "shop.orders o RIGHT JOIN shop.people p ON o.person_id = p.id",
        "shop.orders o FULL JOIN shop.people p ON o.person_id = p.id",
        "shop.orders o JOIN shop.people p ON o.person_id = p.id AND p.age > 25",
    ];
    let keys = [
        "",
        "p.city",
        "o.person_id",
        "p.active",
        "p.born",
        "o.note",
        "p.city, p.active",
    ];
    let aggregates = [
        "count(*)",
        "count(o.qty), sum(o.qty)",
        "count(DISTINCT o.person_id), avg(o.qty)",
        "sum(o.amount), min(o.amount), max(o.amount)",
        "min(p.name), max(p.born), count(DISTINCT p.city)",
        "max(o.id), min(p.age), avg(p.age)",
    ];
    let filters = [
        "",
        "o.qty > 2",
        "p.city = 'Oslo'",
        "o.amount BETWEEN 1 AND 20",
        "p.age IS NULL OR o.note = 'a'",
    ];
    let mut queries = Vec::new();
    for (f, from) in froms.iter().enumerate() {
        for (k, key) in keys.iter().enumerate() {
            for (a, aggregate) in aggregates.iter().enumerate() {
                let filter = filters[(f + k + a) % filters.len()];
                let mut sql = match key.is_empty() {
                    true => format!("SELECT {aggregate} FROM {from}"),
                    false => format!("SELECT {key}, {aggregate} FROM {from}"),
                };
                if !filter.is_empty() {
                    sql.push_str(&format!(" WHERE {filter}"));
                }
                if !key.is_empty() {
                    sql.push_str(&format!(" GROUP BY {key}"));
                    if (f + a) % 3 == 0 {
                        sql.push_str(" HAVING count(*) > 1");
                    }
                }
                queries.push(sql);
            }
        }
    }
    // One table, and the join's rows themselves.
    for key in ["", "note", "person_id", "qty"] {
        let group = if key.is_empty() { "" } else { " GROUP BY " };
        let select = if key.is_empty() { "" } else { ", " };
        queries.push(format!(
            "SELECT {key}{select}count(*), sum(amount), max(qty) FROM shop.orders WHERE id > 5{group}{key}"
        ));
    }
    for from in froms {
        queries.push(format!("SELECT o.id, p.id, p.city, o.amount FROM {from}"));
    }
    queries
}

/// `sql`'s rows, sorted (the queries give no order), with numbers that have a fraction
/// rounded to 9 digits: SQLite keeps decimals as doubles, whose sums depend on the order
/// the rows come in.
async fn rows(engine: &Engine, sql: &str) -> Vec<String> {
    let text = answer(engine, sql).await;
    let rounded = |cell: &str| match cell.trim().parse::<f64>() {
        Ok(v) if cell.contains('.') => format!("{v:.9}"),
        _ => cell.trim().to_string(),
    };
    let mut lines: Vec<String> = text
        .lines()
        .skip(3)
        .filter(|l| l.starts_with('|'))
        .map(|l| l.split('|').map(rounded).collect::<Vec<_>>().join("|"))
        .collect();
    lines.sort();
    lines
}

/// Every query agrees with pushdown on and off; returns how many sent a join or GROUP BY.
async fn agree(url: &str) -> (usize, usize) {
    let on = engine().await;
    let off = engine().await;
    answer(&off, "SET strata.database_pushdown = false").await;
    for engine in [&on, &off] {
        answer(engine, &format!("ATTACH '{url}' AS shop")).await;
    }
    let (mut joins, mut groups) = (0, 0);
    for sql in queries() {
        assert_eq!(rows(&on, &sql).await, rows(&off, &sql).await, "{sql}");
        let plan = answer(&on, &format!("EXPLAIN {sql}")).await;
        let sent = plan
            .lines()
            .filter(|l| l.contains("DatabaseScanExec"))
            .collect::<String>();
        joins += usize::from(sent.contains(" JOIN "));
        groups += usize::from(sent.contains("GROUP BY"));
        let off_plan = answer(&off, &format!("EXPLAIN {sql}")).await;
        assert!(
            !off_plan.contains(" JOIN ") && !off_plan.contains("GROUP BY"),
            "{off_plan}"
        );
    }
    (joins, groups)
}

/// Groups of text that differ in case or a trailing blank stay apart on every backend.
async fn text_groups_stay_apart(url: &str) {
    let engine = engine().await;
    answer(&engine, &format!("ATTACH '{url}' AS shop")).await;
    let cities = rows(
        &engine,
        "SELECT '[' || city || ']' AS c, count(*) AS n FROM shop.people GROUP BY city",
    )
    .await;
    assert_eq!(cities.len(), 5, "{cities:?}");
    assert!(cities.iter().any(|l| l.contains("[Oslo ]")), "{cities:?}");
}

/// [`agree`] on `backend`'s tables at `url`, with at least `joins` and `groups` of the
/// queries sending a join and a GROUP BY, and text groups kept apart.
async fn check(backend: &str, url: &str, joins: usize, groups: usize) {
    let (sent_joins, sent_groups) = agree(url).await;
    let total = queries().len();
    println!("{backend}: {sent_joins} of {total} queries sent a join, {sent_groups} a GROUP BY");
    assert!(
        sent_joins >= joins && sent_groups >= groups,
        "{sent_joins} joins, {sent_groups} groups"
    );
    text_groups_stay_apart(url).await;
}

#[tokio::test]
async fn postgres_joins_and_aggregates_give_strata_answers() {
    let test = "postgres_joins_and_aggregates_give_strata_answers";
    let pg = match Postgres::start() {
        Ok(pg) => pg,
        Err(reason) => return skip(test, &reason),
    };
    pg.psql(&tables()).unwrap();
    // Every join kind and most groups are sent; groups of text in PostgreSQL are too.
    check("PostgreSQL", &pg.url(PG_USER), 200, 150).await;
}

#[tokio::test]
async fn mariadb_joins_and_aggregates_give_strata_answers() {
    let test = "mariadb_joins_and_aggregates_give_strata_answers";
    let db = match MariaDb::start() {
        Ok(db) => db,
        Err(reason) => return skip(test, &reason),
    };
    db.sql(&format!("USE shop; {}", tables())).unwrap();
    // No FULL JOIN in MySQL, and no group or DISTINCT of text (compared without case).
    check("MariaDB", &db.url(), 120, 40).await;
}

#[tokio::test]
async fn sqlite_joins_and_aggregates_give_strata_answers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.db");
    sqlite_file(&file, &tables());
    check("SQLite", &format!("sqlite:{}", file.display()), 100, 80).await;
}
