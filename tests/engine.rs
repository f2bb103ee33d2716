//! The library API end to end: registering datasets, streaming and cancelling queries, the
//! catalog file, scan metrics proving partition pruning, memory limits, and error paths.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata::datafusion::arrow::array::{AsArray, RecordBatch};
use strata::datafusion::arrow::datatypes::Int64Type;
use strata::datafusion::physical_plan::ExecutionPlan;
use strata::{DatasetSpec, Engine, Error};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn engine() -> Engine {
    Engine::builder()
        .target_partitions(2)
        .catalog(root().join("strata.toml"))
        .build()
        .await
        .expect("engine with the sample catalog")
}

fn single_i64(batches: &[RecordBatch]) -> i64 {
    assert_eq!(batches.len(), 1, "{batches:?}");
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

async fn count(engine: &Engine, sql: &str) -> i64 {
    let batches = engine.sql(sql).await.unwrap().collect().await.unwrap();
    single_i64(&batches)
}

#[tokio::test]
async fn registered_datasets_are_queryable_by_name() {
    let engine = Engine::builder().build().await.unwrap();
    let ds = engine
        .register(
            "v",
            DatasetSpec::new("data/violations/").with_base_dir(root()),
        )
        .await
        .unwrap();
    assert_eq!(ds.format, strata::Format::Parquet);
    let names: Vec<_> = ds.partitions.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["year", "month"]);
    assert_eq!(count(&engine, "SELECT count(*) FROM v").await, 7123);
    assert_eq!(engine.table_names(), vec!["v".to_string()]);
}

#[tokio::test]
async fn results_stream_batch_by_batch() {
    let engine = Engine::builder().batch_size(1000).build().await.unwrap();
    let mut result = engine
        .sql("SELECT * FROM generate_series(1, 10000)")
        .await
        .unwrap();
    let mut batches = 0;
    let mut rows = 0;
    while let Some(batch) = result.next_batch().await {
        let batch = batch.unwrap();
        batches += 1;
        rows += batch.num_rows();
    }
    assert_eq!(rows, 10000);
    assert!(batches >= 10, "{batches} batches");
}

#[tokio::test]
async fn partition_pruning_skips_whole_directories() {
    let engine = engine().await;
    let all = {
        let mut r = engine
            .sql("SELECT CAST(sum(length(plate_id)) AS BIGINT) FROM violations")
            .await
            .unwrap();
        r.collect().await.unwrap();
        r.scan_stats()
    };
    let pruned = {
        let mut r = engine
            .sql("SELECT CAST(sum(length(plate_id)) AS BIGINT) FROM violations WHERE year = 2024 AND month = 7")
            .await
            .unwrap();
        let b = r.collect().await.unwrap();
        assert!(single_i64(&b) > 0);
        r.scan_stats()
    };
    // 2 years x 12 months x 2 files; the filter leaves one partition's 2 files.
    assert_eq!(all.files, 48, "{all:?}");
    assert_eq!(pruned.files, 2, "{pruned:?}");
    assert!(
        pruned.file_bytes * 10 < all.file_bytes,
        "{pruned:?} vs {all:?}"
    );
    assert!(
        pruned.bytes_scanned * 10 < all.bytes_scanned,
        "{pruned:?} vs {all:?}"
    );

    // A range on an integer partition column prunes too (it is not compared as a string).
    let mut r = engine
        .sql("SELECT CAST(sum(length(plate_id)) AS BIGINT) FROM violations WHERE month >= 11")
        .await
        .unwrap();
    r.collect().await.unwrap();
    assert_eq!(r.scan_stats().files, 8);
}

#[tokio::test]
async fn row_group_statistics_prune_within_files() {
    let engine = engine().await;
    let mut full = engine
        .sql("SELECT CAST(sum(length(plate_id)) AS BIGINT) FROM violations WHERE year = 2023 AND month = 1")
        .await
        .unwrap();
    full.collect().await.unwrap();
    let mut point = engine
        .sql("SELECT plate_id FROM violations WHERE year = 2023 AND month = 1 AND summons_number = 1000000010")
        .await
        .unwrap();
    point.collect().await.unwrap();
    let (full, point) = (full.scan_stats(), point.scan_stats());
    assert!(
        point.rows < full.rows,
        "row groups were not pruned: {point:?} vs {full:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_can_be_cancelled_from_another_thread() {
    let engine = Engine::builder()
        .target_partitions(2)
        .build()
        .await
        .unwrap();
    let mut result = engine
        .sql("SELECT sum(value % 7) FROM generate_series(1, 5000000000)")
        .await
        .unwrap();
    let handle = result.cancel_handle();
    // As Ctrl-C does: cancel from a plain thread while the query runs.
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        handle.cancel();
        Instant::now()
    });
    let outcome = result.next_batch().await;
    let returned = Instant::now();
    let cancelled_at = canceller.join().unwrap();
    assert!(
        matches!(outcome, Some(Err(Error::Cancelled))),
        "{outcome:?}"
    );
    let latency = returned.saturating_duration_since(cancelled_at);
    assert!(latency < Duration::from_secs(1), "cancel took {latency:?}");
    assert!(result.next_batch().await.is_none());
    // The work stopped: the engine answers at once afterwards.
    let again = Instant::now();
    assert_eq!(
        count(&engine, "SELECT count(*) FROM (VALUES (1), (2))").await,
        2
    );
    assert!(
        again.elapsed() < Duration::from_secs(2),
        "{:?}",
        again.elapsed()
    );
}

#[tokio::test]
async fn sorts_spill_under_a_memory_limit() {
    let spill = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .target_partitions(1)
        .memory_limit(32 << 20)
        .spill_dir(spill.path())
        .build()
        .await
        .unwrap();
    let mut r = engine
        .sql("SELECT (value * 7919) % 1000003 AS v FROM generate_series(1, 4000000) ORDER BY v")
        .await
        .unwrap();
    let (mut rows, mut last, mut sorted) = (0, i64::MIN, true);
    while let Some(b) = r.next_batch().await {
        let b = b.unwrap();
        for v in b.column(0).as_primitive::<Int64Type>().values().iter() {
            sorted &= *v >= last;
            last = *v;
        }
        rows += b.num_rows();
    }
    assert_eq!(rows, 4_000_000);
    assert!(sorted);
    let plan = r.physical_plan().unwrap().clone();
    let spilled = spill_count(plan.as_ref());
    assert!(spilled > 0, "no spill under a 32 MiB limit");
}

#[tokio::test]
async fn a_limit_of_millions_of_rows_sorts_with_spilling_under_a_memory_limit() {
    let spill = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .target_partitions(1)
        .memory_limit(10 << 20)
        .spill_dir(spill.path())
        .build()
        .await
        .unwrap();
    // The 2,000,000 best rows (16 MB of BIGINT) do not fit in 10 MiB: kept in memory as a
    // TopK they ran out of it; sorted with spilling, the last three come back. (One
    // partition: with several, DataFusion's sorts under so small a limit sometimes fail to
    // reserve memory for merging their spilled runs.)
    let query = "SELECT v FROM (SELECT (value * 7919) % 2000003 AS v FROM generate_series(1, 2000000)) \
                 ORDER BY v LIMIT 3 OFFSET 1999997";
    let mut r = engine.sql(query).await.unwrap();
    let mut got = Vec::new();
    while let Some(b) = r.next_batch().await {
        let b = b.unwrap();
        got.extend(
            b.column(0)
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .copied(),
        );
    }
    // 2000003 is prime, so the values are 2,000,000 distinct residues between 1 and 2000002.
    let mut expected: Vec<i64> = (1..=2_000_000i64).map(|i| (i * 7919) % 2_000_003).collect();
    expected.sort_unstable();
    assert_eq!(got, expected[1_999_997..].to_vec());
    let plan = r.physical_plan().unwrap().clone();
    assert!(
        spill_count(plan.as_ref()) > 0,
        "no spill under a 10 MiB limit"
    );

    // With the threshold raised, the same query is a TopK again and fails in one line.
    let engine = Engine::builder()
        .target_partitions(1)
        .memory_limit(10 << 20)
        .spill_dir(spill.path())
        .setting("strata.topk_max_bytes", "1000000000")
        .build()
        .await
        .unwrap();
    let failed = match engine.sql(query).await {
        Err(e) => e.to_string(),
        Ok(mut r) => loop {
            match r.next_batch().await {
                Some(Err(e)) => break e.to_string(),
                Some(Ok(_)) => continue,
                None => panic!("a TopK of 2,000,000 rows fitted in 10 MiB"),
            }
        },
    };
    assert!(failed.contains("TopK"), "{failed}");
}

fn spill_count(plan: &dyn strata::datafusion::physical_plan::ExecutionPlan) -> usize {
    let own = plan
        .metrics()
        .and_then(|m| m.spill_count())
        .unwrap_or_default();
    own + plan
        .children()
        .iter()
        .map(|c| spill_count(c.as_ref()))
        .sum::<usize>()
}

#[tokio::test]
async fn the_catalog_file_registers_tables_relative_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(
        root().join("data/people/people-1.csv"),
        data.join("people.csv"),
    )
    .unwrap();
    let catalog = dir.path().join("cat.toml");
    std::fs::write(
        &catalog,
        "[tables.p]\nlocation = \"d/people.csv\"\n\n[tables.p2]\nlocations = [\"d/*.csv\"]\nformat = \"csv\"\nheader = true\n",
    )
    .unwrap();
    // Run from another folder: locations must not depend on the working directory.
    let engine = Engine::builder().catalog(&catalog).build().await.unwrap();
    assert_eq!(count(&engine, "SELECT count(*) FROM p").await, 40);
    assert_eq!(count(&engine, "SELECT count(*) FROM p2").await, 40);
    assert_eq!(engine.table_names(), vec!["p", "p2"]);
}

#[tokio::test]
async fn catalog_errors_name_the_file_line_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("bad.toml");
    std::fs::write(
        &catalog,
        "[tables.t]\nlocation = \"x.csv\"\nlocaton = \"y\"\n",
    )
    .unwrap();
    let err = Engine::builder()
        .catalog(&catalog)
        .build()
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("bad.toml:3:"), "{msg}");
    assert!(msg.contains("locaton"), "{msg}");

    // A table that cannot be resolved fails when it is used, naming the catalog and table;
    // the other tables work, and start-up does not touch any of them.
    std::fs::write(
        &catalog,
        format!(
            "[tables.t]\nlocation = \"missing/*.csv\"\n\n[tables.people]\nlocation = \"{}\"\n",
            root().join("data/people").display()
        ),
    )
    .unwrap();
    let engine = Engine::builder().catalog(&catalog).build().await.unwrap();
    assert_eq!(engine.table_names(), vec!["people", "t"]);
    assert!(engine.loaded_table_schema("people").await.is_none());
    let msg = engine.sql("SELECT * FROM t").await.unwrap_err().to_string();
    assert!(msg.contains("bad.toml"), "{msg}");
    assert!(msg.contains("table 't'"), "{msg}");
    assert!(msg.contains("missing/*.csv"), "{msg}");
    let n = engine
        .sql("SELECT count(*) FROM people")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(n[0].num_rows(), 1);
    let people = engine.loaded_table_schema("people").await.unwrap();
    assert_eq!(people.field(0).name(), "person_id");

    let msg = Engine::builder()
        .catalog(dir.path().join("nope.toml"))
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("cannot read catalog"), "{msg}");
}

#[tokio::test]
async fn syntax_errors_carry_line_and_column() {
    let engine = Engine::new().await.unwrap();
    let err = engine.sql("SELECT a,\n  b FROMM t").await.unwrap_err();
    assert_eq!(
        err.position(),
        Some(strata::error::Position {
            line: 2,
            column: 11
        }),
        "{err}"
    );
}

#[tokio::test]
async fn files_that_cannot_be_read_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.csv"), "x\n1\n").unwrap();
    std::fs::write(dir.path().join("b.csv"), "x\n2\n").unwrap();
    let engine = Engine::new().await.unwrap();
    engine
        .register_location("t", &format!("{}/*.csv", dir.path().display()))
        .await
        .unwrap();
    // Unreadable once the query is planned (its files listed): without permission where that
    // applies (not to root), else gone.
    let b = dir.path().join("b.csv");
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(true);
    let planned = engine.sql("SELECT sum(x) FROM t").await;
    if is_root {
        std::fs::remove_file(&b).unwrap();
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let err = match planned {
        Ok(mut r) => r.collect().await.unwrap_err(),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.contains("b.csv"), "{msg}");
}

#[tokio::test]
async fn an_unreachable_store_fails_within_the_timeout() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let engine = Engine::builder()
        .store(
            "s3://nowhere",
            [
                ("endpoint", format!("http://127.0.0.1:{port}")),
                ("access_key_id", "k".into()),
                ("secret_access_key", "s".into()),
            ],
        )
        .store_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let started = Instant::now();
    let err = engine
        .sql("SELECT * FROM 's3://nowhere/data/*.parquet'")
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    let msg = err.to_string();
    assert!(msg.contains("s3://nowhere/data/*.parquet"), "{msg}");
}

#[tokio::test]
async fn no_input_makes_it_panic() {
    let engine = engine().await;
    let inputs = [
        "",
        ";",
        "SELECT",
        "SELECT * FROM",
        "SELECT * FROM ''",
        "SELECT * FROM '/'",
        "SELECT * FROM read_csv('')",
        "SELECT * FROM read_csv([])",
        "SELECT * FROM read_parquet(1)",
        "SELECT * FROM list_files('')",
        "SELECT * FROM parquet_metadata('data/people/people-1.csv')",
        "SELECT * FROM read_csv('data/people/*.csv', delim = '')",
        "COPY (SELECT 1) TO ''",
        "COPY (SELECT 1) TO '/dev/null/x' (FORMAT parquet)",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION ''",
        "SELECT 1 / 0",
        "SELECT CAST('x' AS INT)",
        "SELECT [1, 2][5]",
        "SELECT * FROM 's3:///'",
        "SELECT * FROM 'http://'",
        "SELECT * FROM violations WHERE month = 'x'",
        "SELECT unnest(1)",
        "'; DROP TABLE violations; --",
        "SELECT \u{0}",
    ];
    // A panic anywhere below fails the test; every input must come back as Ok or Err.
    for sql in inputs {
        match engine.sql(sql).await {
            Ok(mut r) => {
                let _ = r.collect().await;
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    // Still alive and correct.
    assert_eq!(
        count(&engine, "SELECT count(*) FROM violations").await,
        7123
    );
}

#[test]
fn paths_in_messages_are_as_written() {
    let e = strata::dataset::Location::parse("nope/x.csv", Path::new("/tmp")).unwrap_err();
    assert_eq!(e.to_string(), "no such file or directory: nope/x.csv");
}

#[tokio::test]
async fn describe_takes_a_path() {
    let engine = Engine::new().await.unwrap();
    let sql = format!("DESCRIBE '{}/data/people/people-1.csv'", root().display());
    let batches = engine.sql(&sql).await.unwrap().collect().await.unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 4);
}

/// Sums the named metric over every node called `name` in `plan`.
fn node_metric(plan: &dyn ExecutionPlan, name: &str, metric: &str) -> Option<usize> {
    let own = (plan.name() == name)
        .then(|| {
            plan.metrics().and_then(|m| match metric {
                "output_rows" => m.output_rows(),
                _ => m.sum_by_name(metric).map(|v| v.as_usize()),
            })
        })
        .flatten();
    plan.children()
        .iter()
        .filter_map(|c| node_metric(c.as_ref(), name, metric))
        .chain(own)
        .reduce(|a, b| a + b)
}

/// Writes each `(table, sql)`'s rows to `dir/<table>.parquet`.
async fn write_tables(dir: &Path, tables: &[(&str, &str)]) {
    let engine = Engine::builder()
        .target_partitions(2)
        .build()
        .await
        .unwrap();
    for (table, sql) in tables {
        let file = dir.join(format!("{table}.parquet"));
        engine
            .sql(&format!("COPY ({sql}) TO '{}'", file.display()))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
    }
}

/// Runs `sql` on two partitions over the tables in `dir`, with the boolean `setting` on or
/// off: the answer as a table, and the plan as it ran.
async fn run_with(
    dir: &Path,
    setting: &str,
    on: bool,
    sql: &str,
) -> (String, Arc<dyn ExecutionPlan>) {
    let engine = Engine::builder()
        .target_partitions(2)
        .setting(setting, on.to_string())
        .build()
        .await
        .unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = entry.unwrap().path();
        let table = file.file_stem().unwrap().to_string_lossy().into_owned();
        let spec = DatasetSpec::new(file.display().to_string());
        engine.register(&table, spec).await.unwrap();
    }
    let mut r = engine.sql(sql).await.unwrap();
    let batches = r.collect().await.unwrap();
    let plan = Arc::clone(r.physical_plan().unwrap());
    let answer = strata::datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    (answer, plan)
}

#[tokio::test]
async fn join_filters_drop_rows_at_the_scan_only_when_selective() {
    let dir = tempfile::tempdir().unwrap();
    write_tables(
        dir.path(),
        &[
            (
                "big",
                "SELECT value % 50000 AS k, value AS v FROM generate_series(1, 400000)",
            ),
            (
                "few",
                "SELECT value * 1000 AS k FROM generate_series(1, 20)",
            ),
            ("all", "SELECT value AS k FROM generate_series(0, 49999)"),
        ],
    )
    .await;
    // Partial sums per key below the join: rows the join would drop are aggregated first
    // unless the scan drops them.
    let run = |filters: bool, other: &'static str| {
        let dir = dir.path();
        async move {
            let query = format!(
                "SELECT count(*), sum(s) FROM (SELECT k, sum(v) AS s FROM big GROUP BY k) g \
                 JOIN {other} o ON g.k = o.k"
            );
            let (answer, plan) =
                run_with(dir, "strata.join_filters_at_scan", filters, &query).await;
            let dropped = node_metric(plan.as_ref(), "RuntimeFilterExec", "rows_dropped");
            let unchecked = node_metric(plan.as_ref(), "RuntimeFilterExec", "rows_unchecked");
            (answer, dropped, unchecked)
        }
    };

    let (with, dropped, unchecked) = run(true, "few").await;
    let (without, none, _) = run(false, "few").await;
    assert_eq!(with, without);
    assert!(with.contains("| 20 "), "{with}");
    assert_eq!(none, None, "the setting turns the filter off");
    // 20 of 50,000 keys match, so at most all but 160 of the 400,000 rows are dropped at the
    // scan (rows read before the join's build side is done pass while the filter is empty).
    let dropped = dropped.unwrap();
    assert!(dropped > 0 && dropped <= 400_000 - 160, "{dropped}");
    assert_eq!(unchecked, Some(0));

    // Every key matches: after its sample each partition stops checking rows.
    let (with, dropped, unchecked) = run(true, "all").await;
    let (without, _, _) = run(false, "all").await;
    assert_eq!(with, without);
    assert_eq!(dropped, Some(0));
    assert!(unchecked.unwrap() > 0, "{unchecked:?}");
}

#[tokio::test]
async fn a_join_further_up_filters_a_scan_once_its_hash_table_is_built() {
    let dir = tempfile::tempdir().unwrap();
    write_tables(
        dir.path(),
        &[
            ("cust", "SELECT value AS ck FROM generate_series(1, 1000)"),
            ("few", "SELECT value AS ck FROM generate_series(1, 10)"),
            (
                "ord",
                "SELECT value AS ok, value % 1000 + 1 AS ck FROM generate_series(1, 200000)",
            ),
            (
                "pick",
                "SELECT value * 10000 AS ok FROM generate_series(1, 20)",
            ),
            // Each `ok` on 2,000 orders, 60 of its 100 values picked.
            (
                "ord100",
                "SELECT value % 100 AS ok, value % 1000 + 1 AS ck FROM generate_series(1, 200000)",
            ),
            ("pick60", "SELECT value AS ok FROM generate_series(0, 59)"),
        ],
    )
    .await;
    // The `IN` becomes a semi join above the customer join; its filter on `ok` reaches the
    // `ord` scan, whose nearest join is the customer one.
    let run = |early: bool, cust: &'static str, ord: &'static str, pick: &'static str| {
        let dir = dir.path();
        async move {
            let query = format!(
                "SELECT count(*), sum(ok) FROM {cust} c JOIN {ord} ON c.ck = {ord}.ck \
                 WHERE ok IN (SELECT ok FROM {pick})"
            );
            let (answer, plan) = run_with(dir, "strata.early_join_filters", early, &query).await;
            let dropped = node_metric(plan.as_ref(), "RuntimeFilterExec", "rows_dropped");
            let unchecked = node_metric(plan.as_ref(), "RuntimeFilterExec", "rows_unchecked");
            (answer, dropped, unchecked)
        }
    };
    let (with, dropped, unchecked) = run(true, "cust", "ord", "pick").await;
    let (without, none, _) = run(false, "cust", "ord", "pick").await;
    assert_eq!(with, without);
    assert!(
        with.contains("| 20 ") && with.contains("| 2100000 "),
        "{with}"
    );
    assert_eq!(none, None, "the setting turns the filter off");
    // The scan waits for the semi join's keys, so every row but the 20 is dropped there.
    assert_eq!(dropped, Some(200_000 - 20));
    assert_eq!(unchecked, Some(0));

    // With 10 customers the customer join itself drops 99% of the orders. Of the 1% it
    // keeps, the filter drops all but a few rows, more than it keeps: it goes on checking.
    let (with, _, unchecked) = run(true, "few", "ord", "pick").await;
    let (without, _, _) = run(false, "few", "ord", "pick").await;
    assert_eq!(with, without);
    assert!(
        with.contains("| 20 ") && with.contains("| 2100000 "),
        "{with}"
    );
    assert_eq!(unchecked, Some(0));

    // Keeping 60% of the orders, and every order of the customer join's 1%, it keeps far
    // more rows than it drops of those: after its sample each partition stops checking.
    let (with, _, unchecked) = run(true, "few", "ord100", "pick60").await;
    let (without, _, _) = run(false, "few", "ord100", "pick60").await;
    assert_eq!(with, without);
    assert!(with.contains("| 2000 "), "{with}");
    assert!(unchecked.unwrap() > 0, "{unchecked:?}");
}

#[tokio::test]
async fn a_join_on_a_group_key_and_its_aggregate_filters_the_rows_below_the_aggregation() {
    let dir = tempfile::tempdir().unwrap();
    write_tables(
        dir.path(),
        &[
            (
                "part",
                "SELECT value AS pk, value % 100 AS size FROM generate_series(1, 20000)",
            ),
            (
                "offer",
                "SELECT value % 20000 + 1 AS pk, value AS sk, (value * 7919) % 997 AS cost \
                 FROM generate_series(1, 200000)",
            ),
        ],
    )
    .await;
    // TPC-H q02's shape: the cheapest offers of the parts of one size. The subquery becomes
    // a join on both `pk` and the minimum; on `pk` alone its runtime filter passes the
    // aggregation by `pk`, down to the `offer` scan below it.
    let query = "SELECT count(*), sum(cost), sum(sk) FROM part p JOIN offer o ON p.pk = o.pk \
                 WHERE p.size = 7 AND o.cost = \
                 (SELECT min(cost) FROM offer o2 WHERE o2.pk = p.pk)";
    let (with, plan) = run_with(dir.path(), "strata.join_on_group_keys", true, query).await;
    let (without, plain) = run_with(dir.path(), "strata.join_on_group_keys", false, query).await;
    assert_eq!(with, without);
    let (shown, shown_plain) = (plan_text(&plan), plan_text(&plain));
    assert!(shown.contains("filter=cost@"), "{shown}");
    assert!(!shown_plain.contains("filter=cost@"), "{shown_plain}");
    // 200 of 20,000 parts have size 7: the aggregation sees their 2,000 offers, not all
    // 200,000 (rows read before the join's hash table is built pass unchecked).
    let grouped = |p: &Arc<dyn ExecutionPlan>| {
        let mut rows = Vec::new();
        collect_inputs(p.as_ref(), "AggregateExec", &mut rows);
        rows.into_iter().max().unwrap()
    };
    assert!(grouped(&plan) <= 20_000, "{}", grouped(&plan));
    assert_eq!(grouped(&plain), 200_000);
}

/// `plan` as EXPLAIN shows it, one operator per line.
fn plan_text(plan: &Arc<dyn ExecutionPlan>) -> String {
    strata::datafusion::physical_plan::displayable(plan.as_ref())
        .indent(false)
        .to_string()
}

/// The rows each `name` node's input returned.
fn collect_inputs(plan: &dyn ExecutionPlan, name: &str, rows: &mut Vec<usize>) {
    if plan.name() == name
        && let Some(input) = plan.children().first()
        && let Some(n) = input.metrics().and_then(|m| m.output_rows())
    {
        rows.push(n);
    }
    for child in plan.children() {
        collect_inputs(child.as_ref(), name, rows);
    }
}

#[tokio::test]
async fn a_build_side_waits_for_the_filter_of_a_small_join_further_up() {
    let dir = tempfile::tempdir().unwrap();
    write_tables(
        dir.path(),
        &[
            (
                "nat",
                "SELECT value AS nk, 'n' || value AS name FROM generate_series(0, 24)",
            ),
            (
                "sup",
                "SELECT value AS sk, value % 25 AS nk FROM generate_series(1, 10000)",
            ),
            (
                "fact",
                "SELECT value AS id, value % 10000 + 1 AS sk FROM generate_series(1, 200000)",
            ),
        ],
    )
    .await;
    // As in TPC-H q07: the suppliers are the build side of their join with the facts, and
    // the nation join above keeps those of one nation only.
    let query = "SELECT count(*), sum(id) FROM fact JOIN sup ON fact.sk = sup.sk \
                 JOIN nat ON sup.nk = nat.nk WHERE nat.name = 'n7'";
    let run = |on: bool| {
        let dir = dir.path();
        async move {
            let (answer, plan) = run_with(dir, "strata.build_side_join_filters", on, query).await;
            let dropped = node_metric(plan.as_ref(), "RuntimeFilterExec", "rows_dropped");
            (answer, dropped)
        }
    };
    let (with, dropped) = run(true).await;
    let (without, none) = run(false).await;
    assert_eq!(with, without);
    assert!(with.contains("| 8000 "), "{with}");
    assert_eq!(none, None, "the setting turns the filter off");
    // 400 of the 10,000 suppliers are of nation 7: the others never reach a hash table.
    assert_eq!(dropped, Some(10_000 - 400));
}

#[tokio::test]
async fn a_filter_checks_a_narrow_range_before_strings_and_guards_stay_first() {
    let dir = tempfile::tempdir().unwrap();
    write_tables(
        dir.path(),
        &[(
            "t",
            "SELECT value AS d, CASE value % 3 WHEN 0 THEN 'MAIL' WHEN 1 THEN 'SHIP' \
             ELSE 'AIR' END AS mode, value % 7 AS k FROM generate_series(1, 100000)",
        )],
    )
    .await;
    let filter = |plan: &Arc<dyn ExecutionPlan>| {
        let text = plan_text(plan);
        let line = text.lines().find(|l| l.contains("FilterExec")).unwrap();
        line.trim().to_string()
    };
    // As in TPC-H q12: a string condition written first, a range of 1% of the rows last.
    let sql = "SELECT count(*) FROM t WHERE mode = 'MAIL' AND d >= 1000 AND d < 2000";
    let (on, plan_on) = run_with(dir.path(), "strata.cheap_filters_first", true, sql).await;
    let (off, plan_off) = run_with(dir.path(), "strata.cheap_filters_first", false, sql).await;
    assert_eq!(on, off);
    assert!(on.contains("| 333 "), "{on}");
    let (on, off) = (filter(&plan_on), filter(&plan_off));
    let range = on.find("d@0 >= 1000").expect(&on);
    assert!(range < on.find("mode@1").unwrap(), "{on}");
    assert!(
        off.find("d@0 >= 1000").unwrap() > off.find("mode@1").unwrap(),
        "{off}"
    );
    // A condition that can fail stays after the ones written before it that cannot: here
    // `k <> 0` guards the division by `k`.
    let sql = "SELECT count(*) FROM t WHERE k <> 0 AND 100 / k > 20 AND d < 500";
    let (answer, plan) = run_with(dir.path(), "strata.cheap_filters_first", true, sql).await;
    assert!(answer.contains("| 286 "), "{answer}");
    let on = filter(&plan);
    let guard = on.find(" != 0").expect(&on);
    assert!(guard < on.find("100 / ").expect(&on), "{on}");
}

#[tokio::test]
async fn text_compared_with_literals_per_distinct_string_answers_as_row_by_row() {
    let dir = tempfile::tempdir().unwrap();
    // Few distinct strings, short and long, with NULLs and empty strings among them (an
    // empty string's view and a NULL's are both zero), and a column of many distinct ones.
    write_tables(
        dir.path(),
        &[(
            "t",
            "SELECT value AS id, CASE value % 6 WHEN 0 THEN 'AIR' WHEN 1 THEN 'AIR REG' \
             WHEN 2 THEN 'DELIVER IN PERSON' WHEN 3 THEN '' WHEN 4 THEN NULL \
             ELSE 'TAKE BACK RETURN' END AS mode, \
             'a comment longer than twelve bytes ' || (value % 5000) AS note \
             FROM generate_series(1, 30000)",
        )],
    )
    .await;
    let queries = [
        "SELECT count(*) FROM t WHERE mode = 'AIR'",
        "SELECT count(*) FROM t WHERE 'DELIVER IN PERSON' = mode",
        "SELECT count(*) FROM t WHERE mode <> 'DELIVER IN PERSON'",
        "SELECT count(*) FROM t WHERE mode = ''",
        "SELECT count(*) FROM t WHERE mode <> ''",
        "SELECT count(*) FROM t WHERE mode IN ('AIR', 'AIR REG', 'MAIL')",
        "SELECT count(*) FROM t WHERE mode NOT IN ('AIR', 'TAKE BACK RETURN', '')",
        "SELECT count(*) FROM t WHERE mode = 'AIR' OR mode = 'DELIVER IN PERSON'",
        "SELECT count(*) FROM t WHERE NOT (mode = 'AIR' OR mode = 'AIR REG')",
        "SELECT count(*) FROM t WHERE (mode = 'AIR' OR mode = 'AIR REG') AND id % 7 = 1",
        "SELECT count(*) FROM t WHERE mode = 'AIR' OR id < 10",
        "SELECT count(*) FROM t WHERE note = 'a comment longer than twelve bytes 17'",
        "SELECT count(*) FROM t WHERE note NOT IN ('a comment longer than twelve bytes 3')",
        "SELECT count(*) FROM t WHERE (mode = 'AIR') IS NULL",
        "SELECT count(*) FROM t WHERE mode IN ('AIR', NULL)",
    ];
    for sql in queries {
        let (on, plan) = run_with(dir.path(), "strata.text_matches", true, sql).await;
        let (off, plan_off) = run_with(dir.path(), "strata.text_matches", false, sql).await;
        assert_eq!(on, off, "{sql}");
        assert!(!plan_text(&plan_off).contains("strata_text_in"), "{sql}");
        let text = plan_text(&plan);
        assert!(text.contains("strata_text_in"), "{sql}\n{text}");
    }
    // The OR of equalities on one column is one lookup.
    let sql = "SELECT count(*) FROM t WHERE mode = 'AIR' OR mode = 'AIR REG'";
    let (answer, plan) = run_with(dir.path(), "strata.text_matches", true, sql).await;
    assert!(answer.contains("| 10000 "), "{answer}");
    assert_eq!(
        plan_text(&plan).matches("strata_text_in").count(),
        1,
        "{}",
        plan_text(&plan)
    );
}

#[tokio::test]
async fn a_subplan_used_twice_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    write_tables(
        dir.path(),
        &[(
            "t",
            "SELECT value % 1000 AS k, value AS v FROM generate_series(1, 100000)",
        )],
    )
    .await;
    let run = |share: bool, sql: &'static str| {
        let dir = dir.path();
        async move {
            let (answer, plan) = run_with(dir, "strata.share_subplans", share, sql).await;
            let read = node_metric(plan.as_ref(), "DataSourceExec", "output_rows");
            let shared = plan_text(&plan).contains("SharedExec");
            (answer, read, shared)
        }
    };

    // The common table expression is named three times, once in a scalar subquery. The join
    // with `b` only needs its keys, so the planner reads `t` again for those: three reads of
    // `t` become two.
    let cte = "WITH g AS (SELECT k, sum(v) AS s FROM t GROUP BY k) \
               SELECT count(*), sum(a.s) FROM g a JOIN g b ON a.k = b.k \
               WHERE a.s > (SELECT avg(s) FROM g)";
    let (with, read, shared) = run(true, cte).await;
    let (without, read_all, unshared) = run(false, cte).await;
    assert_eq!(with, without);
    assert!(with.contains("| 500 "), "{with}");
    assert!(shared && !unshared);
    assert_eq!(read, Some(200_000));
    assert_eq!(read_all, Some(300_000));

    // `random()` gives each use its own values: nothing is shared, and the sums differ.
    let volatile = "WITH g AS (SELECT k, sum(v * random()) AS s FROM t GROUP BY k) \
                    SELECT count(*) FROM g a JOIN g b ON a.k = b.k WHERE a.s <> b.s";
    let (answer, read, shared) = run(true, volatile).await;
    assert!(answer.contains("| 1000 "), "{answer}");
    assert!(!shared);
    assert_eq!(read, Some(200_000));
}

#[tokio::test]
async fn joins_broadcast_a_side_of_up_to_millions_of_rows() {
    let dir = tempfile::tempdir().unwrap();
    let file = |t: &str| {
        dir.path()
            .join(format!("{t}.parquet"))
            .display()
            .to_string()
    };
    let engine = Engine::new().await.unwrap();
    for (t, n) in [("small", 300_000), ("big", 1_000_000)] {
        engine
            .sql(&format!(
                "COPY (SELECT value AS k FROM generate_series(1, {n})) TO '{}'",
                file(t)
            ))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        engine.register(t, DatasetSpec::new(file(t))).await.unwrap();
    }
    let plan = |engine: Engine| async move {
        let sql = "EXPLAIN SELECT count(*) FROM big JOIN small ON big.k = small.k";
        let batches = engine.sql(sql).await.unwrap().collect().await.unwrap();
        strata::datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
    };
    // 300,000 rows are past DataFusion's 128 K-row limit but within Strata's.
    assert!(plan(engine).await.contains("mode=CollectLeft"));
    let stock = Engine::builder()
        .setting(
            "datafusion.optimizer.hash_join_single_partition_threshold_rows",
            "131072",
        )
        .setting(
            "datafusion.optimizer.hash_join_single_partition_threshold",
            "1048576",
        )
        .build()
        .await
        .unwrap();
    for t in ["small", "big"] {
        stock.register(t, DatasetSpec::new(file(t))).await.unwrap();
    }
    assert!(plan(stock).await.contains("mode=Partitioned"));
}

#[path = "common/panicking.rs"]
mod panicking;
use panicking::register_panicking_function;

#[tokio::test]
async fn a_panic_in_a_query_is_its_error_and_the_engine_goes_on() {
    let engine = engine().await;
    register_panicking_function(&engine);
    // While planning (constant folding calls the function) and while running, in the
    // partitions' own tasks.
    for sql in [
        "SELECT boom(1)",
        "SELECT sum(boom(violation_code)) FROM violations",
    ] {
        let outcome = match engine.sql(sql).await {
            Ok(mut result) => result.collect().await.map(|_| ()),
            Err(e) => Err(e),
        };
        let err = outcome.expect_err(sql).to_string();
        assert!(
            err.contains("internal error (boom went off)"),
            "{sql}: {err}"
        );
        assert_eq!(
            count(&engine, "SELECT count(*) FROM violations").await,
            7123
        );
    }
}

#[tokio::test]
async fn a_corrupt_parquet_footer_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trunc.parquet");
    std::fs::write(&path, b"PAR1\0\0\0garbage-not-a-footerPAR1").unwrap();
    let engine = engine().await;
    let sql = format!("SELECT * FROM '{}'", path.display());
    let err = engine.sql(&sql).await.expect_err("corrupt footer");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: corrupt Parquet footer: it gives a metadata length of 1919251567 bytes, but the file has 31",
            path.display()
        )
    );
    assert_eq!(count(&engine, "SELECT count(*) FROM people").await, 80);
}

#[tokio::test]
async fn progress_counts_the_rows_operators_produce_past_the_scans() {
    let engine = engine().await;
    let mut r = engine
        .sql("SELECT count(*) FROM violations a JOIN violations b ON a.violation_code = b.violation_code")
        .await
        .unwrap();
    let batches = r.collect().await.unwrap();
    let joined = single_i64(&batches) as u64;
    let stats = r.scan_stats();
    assert_eq!(stats.rows, 2 * 7123);
    // The join's output alone is more than the scans read.
    assert!(stats.operator_rows >= joined, "{stats:?} joined {joined}");
    assert!(joined > stats.rows);
}

#[tokio::test]
async fn arrow_ipc_streams_are_read_and_corrupt_ones_refused() {
    use strata::datafusion::arrow::array::Int64Array;
    use strata::datafusion::arrow::datatypes::{DataType, Field, Schema};
    use strata::datafusion::arrow::ipc::writer::StreamWriter;
    let dir = std::env::temp_dir().join(format!("strata-ipc-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
    )
    .unwrap();
    let path = dir.join("s.arrow");
    let mut writer = StreamWriter::try_new(std::fs::File::create(&path).unwrap(), &schema).unwrap();
    writer.write(&batch).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    let engine = Engine::new().await.unwrap();
    let sql = format!("SELECT count(*), sum(x) FROM '{}'", path.display());
    let batches = engine.sql(&sql).await.unwrap().collect().await.unwrap();
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 6);

    // A message whose length runs past the end of the file is refused before the reader
    // allocates what it says.
    let bytes = std::fs::read(&path).unwrap();
    let mut corrupt = bytes.clone();
    corrupt[4..8].copy_from_slice(&i32::MAX.to_le_bytes());
    let bad = dir.join("bad.arrow");
    std::fs::write(&bad, corrupt).unwrap();
    let err = engine
        .sql(&format!("SELECT * FROM '{}'", bad.display()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.arrow") && err.contains("corrupt Arrow IPC stream"),
        "{err}"
    );

    // A file whose opening magic is damaged but whose end is intact: the reader reads it as
    // a stream, and took the magic's bytes for a message length (1.3 GB allocated).
    let file = dir.join("f.arrow");
    let mut writer = strata::datafusion::arrow::ipc::writer::FileWriter::try_new(
        std::fs::File::create(&file).unwrap(),
        &schema,
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    let mut damaged = std::fs::read(&file).unwrap();
    assert_eq!(&damaged[..6], b"ARROW1");
    damaged[3] = b'M';
    let bad = dir.join("magic.arrow");
    std::fs::write(&bad, damaged).unwrap();
    let err = engine
        .sql(&format!("SELECT count(*) FROM '{}'", bad.display()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("magic.arrow") && err.contains("corrupt Arrow IPC stream"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn parameters_are_bound_by_number_or_in_order() {
    use strata::datafusion::scalar::ScalarValue;
    let engine = engine().await;
    let expected = count(
        &engine,
        "SELECT count(*) FROM violations WHERE registration_state = 'NJ' AND issue_date >= DATE '2023-06-01'",
    )
    .await;
    assert!(expected > 0);
    let run = |sql: &'static str, params: Vec<ScalarValue>| {
        let engine = &engine;
        async move {
            let batches = engine.sql_with_params(sql, params).await?.collect().await?;
            Ok::<i64, Error>(single_i64(&batches))
        }
    };
    let params = || {
        vec![
            ScalarValue::from("NJ"),
            ScalarValue::Date32(Some(19509)), // 2023-06-01
        ]
    };
    let numbered = run(
        "SELECT count(*) FROM violations WHERE registration_state = $1 AND issue_date >= $2",
        params(),
    );
    assert_eq!(numbered.await.unwrap(), expected);
    let ordered = run(
        "SELECT count(*) FROM violations WHERE registration_state = ? AND issue_date >= ?",
        params(),
    );
    assert_eq!(ordered.await.unwrap(), expected);
    // A value of another type is converted as a literal would be.
    let text = run(
        "SELECT count(*) FROM violations WHERE registration_state = ? AND issue_date >= ?",
        vec![ScalarValue::from("NJ"), ScalarValue::from("2023-06-01")],
    );
    assert_eq!(text.await.unwrap(), expected);
    let err = run("SELECT count(*) FROM violations WHERE year = ?", vec![])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the statement has 1 parameter and 0 values were given"
    );
    let err = run("SELECT 1", vec![ScalarValue::from(1i64)])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the statement has 0 parameters and 1 value was given"
    );
}

#[tokio::test]
async fn arrow_ipc_batches_are_checked_against_their_columns() {
    use strata::datafusion::arrow::array::{
        Array, DictionaryArray, Int32Array, Int64Array, ListArray, StringArray, StructArray,
    };
    use strata::datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema};
    use strata::datafusion::arrow::ipc::writer::{FileWriter, StreamWriter};
    let dir = std::env::temp_dir().join(format!("strata-ipc-rows-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Nested and dictionary columns have nodes of their own: the top-level ones are found
    // among them.
    let point = StructArray::from(vec![
        (
            Arc::new(Field::new("a", DataType::Int64, false)),
            Arc::new(Int64Array::from(vec![1, 2, 3])) as _,
        ),
        (
            Arc::new(Field::new("b", DataType::Utf8, true)),
            Arc::new(StringArray::from(vec![Some("x"), None, Some("z")])) as _,
        ),
    ]);
    let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
        Some(vec![Some(1), Some(2)]),
        None,
        Some(vec![]),
    ]);
    let dict: DictionaryArray<Int32Type> = vec!["p", "q", "p"].into_iter().collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("point", point.data_type().clone(), false),
        Field::new("list", list.data_type().clone(), true),
        Field::new("tag", dict.data_type().clone(), false),
        Field::new("n", DataType::Int32, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(point),
            Arc::new(list),
            Arc::new(dict),
            Arc::new(Int32Array::from(vec![7, 8, 9])),
        ],
    )
    .unwrap();
    let file = dir.join("nested.arrow");
    let mut writer = FileWriter::try_new(std::fs::File::create(&file).unwrap(), &schema).unwrap();
    writer.write(&batch).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    let stream = dir.join("nested-stream.arrow");
    let mut writer =
        StreamWriter::try_new(std::fs::File::create(&stream).unwrap(), &schema).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    let engine = Engine::new().await.unwrap();
    for (path, rows) in [(&file, 6), (&stream, 3)] {
        let sql = format!("SELECT count(*), sum(n) FROM '{}'", path.display());
        let batches = engine.sql(&sql).await.unwrap().collect().await.unwrap();
        assert_eq!(
            batches[0].column(0).as_primitive::<Int64Type>().value(0),
            rows
        );
    }

    // A 17 KB file whose record batch claims 271,579,372,060,848 rows for columns of 176:
    // `count(*)` reads no column and trusted the claim (minutes of counting, a wrong count).
    let bad = dir.join("claims.arrow");
    std::fs::copy(
        root().join("fuzz/regressions/ipc/batch-claiming-more-rows-than-its-columns.arrow"),
        &bad,
    )
    .unwrap();
    let err = engine
        .sql(&format!("SELECT count(*) FROM '{}'", bad.display()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("claims.arrow")
            && err.contains("a record batch says it has 271579372060848 rows but its column 'summons_number' has 176"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn statements_are_described_without_running() {
    use strata::datafusion::arrow::datatypes::DataType;
    let engine = engine().await;
    let d = engine
        .describe("SELECT plate_id, count(*) AS n FROM violations WHERE year = $1 AND registration_state = ? GROUP BY 1")
        .await
        .unwrap();
    let names: Vec<&str> = d
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["plate_id", "n"]);
    assert_eq!(
        d.parameters,
        [Some(DataType::Int64), Some(DataType::Utf8View)]
    );
    // Table functions are resolved for their columns, and a statement that writes is planned,
    // not run.
    let d = engine
        .describe("SELECT * FROM read_csv('data/people/*.csv', header = true)")
        .await
        .unwrap();
    assert!(!d.schema.fields().is_empty());
    engine
        .describe("CREATE VIEW described AS SELECT 1")
        .await
        .unwrap();
    assert!(!engine.table_names().contains(&"described".to_string()));
    let err = engine
        .describe("SELECT * FROM violation")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("did you mean 'violations'"),
        "{err}"
    );
}

/// What a join's rows add up to: how many, how many with each column NULL, and each
/// integer column's sum. Duplicated or dropped rows change it.
#[derive(Debug, PartialEq)]
struct Rows {
    rows: usize,
    nulls: Vec<usize>,
    sums: Vec<i64>,
}

/// Runs `sql` over the tables in `dir` at four partitions, under `limit` bytes of memory if
/// given: what its rows add up to, or the error.
async fn rows_under(dir: &Path, limit: Option<usize>, sql: &str) -> Result<Rows, Error> {
    let spill = tempfile::tempdir().unwrap();
    let mut builder = Engine::builder()
        .target_partitions(4)
        .spill_dir(spill.path());
    if let Some(limit) = limit {
        builder = builder.memory_limit(limit);
    }
    let engine = builder.build().await.unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = entry.unwrap().path();
        let table = file.file_stem().unwrap().to_string_lossy().into_owned();
        let spec = DatasetSpec::new(file.display().to_string());
        engine.register(&table, spec).await.unwrap();
    }
    let mut r = engine.sql(sql).await?;
    let mut out: Option<Rows> = None;
    while let Some(batch) = r.next_batch().await {
        let batch = batch?;
        let out = out.get_or_insert_with(|| Rows {
            rows: 0,
            nulls: vec![0; batch.num_columns()],
            sums: vec![0; batch.num_columns()],
        });
        out.rows += batch.num_rows();
        for (i, column) in batch.columns().iter().enumerate() {
            out.nulls[i] += column.null_count();
            if let Some(values) = column.as_primitive_opt::<Int64Type>() {
                out.sums[i] += values.iter().flatten().sum::<i64>();
            }
        }
    }
    Ok(out.expect("a result"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_loop_joins_under_a_memory_limit_answer_right_or_run_out_of_memory() {
    let dir = tempfile::tempdir().unwrap();
    write_tables(
        dir.path(),
        &[
            // About 30 MB in memory: the build side of every join below.
            (
                "l",
                "SELECT value AS x, repeat('a', 200) || value AS pad FROM generate_series(1, 100000)",
            ),
        ],
    )
    .await;
    // A CSV file has no statistics, so the planner keeps the Parquet file as the build side.
    let r = dir.path().join("r.csv");
    let engine = Engine::builder().build().await.unwrap();
    let copy = format!(
        "COPY (SELECT value AS y FROM generate_series(1, 1000)) TO '{}'",
        r.display()
    );
    engine.sql(&copy).await.unwrap().collect().await.unwrap();
    let on = "l.x * 7 % 50000 < r.y AND length(l.pad) > 0";
    let queries = [
        format!("SELECT l.x, r.y FROM l LEFT JOIN r ON {on}"),
        format!("SELECT x FROM l WHERE NOT EXISTS (SELECT 1 FROM r WHERE {on})"),
        format!("SELECT x FROM l WHERE EXISTS (SELECT 1 FROM r WHERE {on})"),
        format!("SELECT l.x, r.y FROM l FULL JOIN r ON {on}"),
        format!("SELECT l.x, r.y FROM r LEFT JOIN l ON {on}"),
        // The build side runs behind a repartition, which runs once only.
        format!(
            "WITH l AS (SELECT value AS x, repeat('a', 200) || value AS pad \
             FROM generate_series(1, 100000)) SELECT l.x, r.y FROM l LEFT JOIN r ON {on}"
        ),
    ];
    let (mut right, mut out_of_memory) = (0, 0);
    for sql in &queries {
        let expected = rows_under(dir.path(), None, sql).await.unwrap();
        // A limit the build side fits under, and one it does not.
        for limit in [512 << 20, 12 << 20] {
            match rows_under(dir.path(), Some(limit), sql).await {
                Ok(rows) => {
                    assert_eq!(rows, expected, "{sql} under {} MiB", limit >> 20);
                    right += 1;
                }
                Err(Error::ResourcesExhausted(message)) => {
                    assert!(limit < 512 << 20, "{sql}: {message}");
                    assert!(message.contains("NestedLoopJoin"), "{sql}: {message}");
                    out_of_memory += 1;
                }
                Err(e) => panic!("{sql} under {} MiB: {e}", limit >> 20),
            }
        }
    }
    assert!(
        right >= queries.len() && out_of_memory > 0,
        "{right} right, {out_of_memory} out of memory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_query_keeps_to_its_own_memory_limit_within_the_shared_one() {
    // `string_agg` keeps its input in memory and cannot spill: about 20 MB here.
    let big = "SELECT length(string_agg(repeat('x', 200) || value, ',')) AS n \
               FROM generate_series(1, 100000)";
    let small = "SELECT count(*) AS n FROM generate_series(1, 1000)";
    let answer = |engine: Arc<Engine>, sql: &'static str| async move {
        engine.sql(sql).await?.collect().await
    };
    let unlimited = Arc::new(Engine::builder().build().await.unwrap());
    let expected = answer(unlimited.clone(), big).await.unwrap();
    let limited = Arc::new(
        Engine::builder()
            .memory_limit(1 << 30)
            .query_memory_limit(8 << 20)
            .build()
            .await
            .unwrap(),
    );
    // Over its own limit the big query fails alone, with a one-line error that says so.
    let (big_result, small_result) =
        tokio::join!(answer(limited.clone(), big), answer(limited.clone(), small));
    let e = big_result.unwrap_err().to_string();
    assert!(
        e.contains("remain available for this query of 8.0 MB"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
    assert_eq!(
        small_result.unwrap()[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0),
        1000
    );
    // Under a larger limit of its own it gets the unlimited answer.
    let roomy = Arc::new(
        Engine::builder()
            .memory_limit(1 << 30)
            .query_memory_limit(256 << 20)
            .build()
            .await
            .unwrap(),
    );
    assert_eq!(answer(roomy, big).await.unwrap(), expected);
}

/// Every query lists its folders again: files written since a folder was first read (by a
/// `COPY`, or by another program) are in the next answer, for a registered dataset, a
/// `CREATE EXTERNAL TABLE` and a folder named in the query alike.
#[tokio::test]
async fn files_added_to_a_folder_are_seen_by_the_next_query() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().display().to_string();
    std::fs::write(dir.path().join("a.csv"), "x\n1\n").unwrap();
    let engine = Engine::new().await.unwrap();
    engine.register_location("t", &folder).await.unwrap();
    engine
        .sql(&format!(
            "CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '{folder}/'"
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    async fn counts(engine: &Engine, folder: &str) -> [i64; 3] {
        [
            count(engine, "SELECT count(*) FROM t").await,
            count(engine, "SELECT count(*) FROM e").await,
            count(engine, &format!("SELECT count(*) FROM '{folder}/'")).await,
        ]
    }
    assert_eq!(counts(&engine, &folder).await, [1, 1, 1]);
    engine
        .sql(&format!(
            "COPY (SELECT 2 AS x UNION ALL SELECT 3) TO '{folder}/b.csv'"
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(counts(&engine, &folder).await, [3, 3, 3]);
    std::fs::write(dir.path().join("c.csv"), "x\n4\n").unwrap();
    assert_eq!(counts(&engine, &folder).await, [4, 4, 4]);
}

/// Planning reads a Parquet file's footer for its statistics once and keeps them in the
/// runtime's cache; a file that changes is read again, so `count(*)`, which is answered from
/// those statistics, counts what the file holds now.
#[tokio::test]
async fn file_statistics_are_kept_between_queries_and_read_again_when_a_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let staging = tempfile::tempdir().unwrap();
    let engine = Engine::new().await.unwrap();
    async fn write(engine: &Engine, rows: usize, to: &Path) {
        let sql = format!(
            "COPY (SELECT value AS x FROM generate_series(1, {rows})) TO '{}'",
            to.join("a.parquet").display()
        );
        engine.sql(&sql).await.unwrap().collect().await.unwrap();
    }
    write(&engine, 10, dir.path()).await;
    engine
        .register_location("t", &dir.path().display().to_string())
        .await
        .unwrap();
    assert_eq!(count(&engine, "SELECT count(*) FROM t").await, 10);
    let cache = engine
        .session()
        .runtime_env()
        .cache_manager
        .get_file_statistic_cache()
        .expect("a statistics cache");
    assert_eq!(cache.len(), 1, "the file's statistics are cached");
    assert_eq!(count(&engine, "SELECT count(*) FROM t").await, 10);
    assert_eq!(
        count(&engine, "SELECT count(*) FROM t WHERE x > 5").await,
        5
    );

    // Replaced (another program's rename over it): the next answer counts it anew.
    write(&engine, 25, staging.path()).await;
    std::fs::rename(
        staging.path().join("a.parquet"),
        dir.path().join("a.parquet"),
    )
    .unwrap();
    assert_eq!(count(&engine, "SELECT count(*) FROM t").await, 25);
    assert_eq!(
        count(&engine, "SELECT count(*) FROM t WHERE x > 5").await,
        20
    );
}

#[tokio::test]
async fn an_inner_join_is_keyed_on_the_deepest_of_equal_columns_with_the_same_answer() {
    let dir = tempfile::tempdir().unwrap();
    write_tables(
        dir.path(),
        &[
            (
                "region",
                "SELECT value AS r_regionkey, 'R' || value AS r_name FROM generate_series(0, 4)",
            ),
            (
                "nation",
                "SELECT value AS n_nationkey, value % 5 AS n_regionkey, 'N' || value AS n_name \
                 FROM generate_series(0, 24)",
            ),
            (
                "customer",
                "SELECT value AS c_custkey, \
                 CASE WHEN value % 1000 = 7 THEN NULL ELSE value % 25 END AS c_nationkey \
                 FROM generate_series(1, 20000)",
            ),
            (
                "supplier",
                "SELECT value AS s_suppkey, \
                 CASE WHEN value % 97 = 3 THEN NULL ELSE value % 25 END AS s_nationkey \
                 FROM generate_series(1, 500)",
            ),
            (
                "orders",
                "SELECT value AS o_orderkey, value % 20000 + 1 AS o_custkey, \
                 value % 500 + 1 AS o_suppkey FROM generate_series(1, 200000)",
            ),
        ],
    )
    .await;
    let sql = "SELECT n_name, count(*) AS n FROM customer, orders, supplier, nation, region \
               WHERE c_custkey = o_custkey AND o_suppkey = s_suppkey \
               AND c_nationkey = s_nationkey AND s_nationkey = n_nationkey \
               AND n_regionkey = r_regionkey AND r_name = 'R2' \
               GROUP BY n_name ORDER BY n_name";
    let setting = "strata.deepest_join_keys";
    let (on, on_plan) = run_with(dir.path(), setting, true, sql).await;
    let (off, off_plan) = run_with(dir.path(), setting, false, sql).await;
    assert_eq!(on, off);
    assert!(on.contains("| N2     |"), "{on}");
    let nation_join = |plan: &Arc<dyn ExecutionPlan>| {
        plan_text(plan)
            .lines()
            .find(|l| l.contains("HashJoinExec") && l.contains("n_nationkey@"))
            .unwrap_or_else(|| panic!("a join on the nation key:\n{}", plan_text(plan)))
            .to_string()
    };
    // On, the nation join is keyed on the customer's nation (read at the bottom of the
    // chain), so its runtime filter reaches the customer scan; off, on the supplier's.
    let (keyed_on, keyed_off) = (nation_join(&on_plan), nation_join(&off_plan));
    assert!(keyed_on.contains("c_nationkey@"), "{keyed_on}");
    assert!(keyed_off.contains("s_nationkey@"), "{keyed_off}");
    assert!(!keyed_off.contains("c_nationkey@"), "{keyed_off}");
}
