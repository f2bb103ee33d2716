//! Queries on a Ballista cluster started inside the test process give the same answers as
//! local execution.

#[path = "../benches/tpch/data.rs"]
#[allow(dead_code)]
mod tpch_data;

#[path = "../benches/common/processes.rs"]
mod cluster_processes;

#[path = "common/http_client.rs"]
mod http_client;

#[path = "common/skip.rs"]
mod skip;

#[path = "common/browser.rs"]
mod browser;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata::Engine;
use strata::datafusion::arrow::util::pretty::pretty_format_batches;

async fn answer(engine: &Engine, sql: &str) -> String {
    let batches = engine.sql(sql).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_local_cluster_answers_like_local_execution() {
    let root = env!("CARGO_MANIFEST_DIR");
    let local = Engine::builder()
        .catalog(format!("{root}/strata.toml"))
        .build()
        .await
        .unwrap();
    let cluster = Engine::builder()
        .catalog(format!("{root}/strata.toml"))
        .cluster("local:2")
        .build()
        .await
        .unwrap();
    assert_eq!(cluster.runner().name(), "cluster");
    for sql in [
        "SELECT year, count(*) AS n FROM violations GROUP BY year ORDER BY year",
        "SELECT registration_state, count(DISTINCT plate_id) AS plates FROM violations GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5",
    ] {
        assert_eq!(
            answer(&cluster, sql).await,
            answer(&local, sql).await,
            "{sql}"
        );
    }
}

/// The scheduler keeps the statistics of the files it plans over from one job to the next,
/// and reads a file's again when it changes: `count(*)`, answered from them, stays right.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_counts_a_file_anew_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let staging = tempfile::tempdir().unwrap();
    let local = Engine::new().await.unwrap();
    let write = |rows: usize, to: &std::path::Path| {
        format!(
            "COPY (SELECT value AS x FROM generate_series(1, {rows})) TO '{}'",
            to.join("a.parquet").display()
        )
    };
    answer(&local, &write(10, dir.path())).await;
    let cluster = Engine::builder().cluster("local:2").build().await.unwrap();
    let folder = dir.path().display().to_string();
    let count = format!("SELECT count(*) AS n FROM '{folder}/'");
    let filtered = format!("SELECT count(*) AS n FROM '{folder}/' WHERE x > 5");
    assert!(answer(&cluster, &count).await.contains("| 10 |"));
    assert!(answer(&cluster, &count).await.contains("| 10 |"));
    assert!(answer(&cluster, &filtered).await.contains("| 5 |"));
    answer(&local, &write(25, staging.path())).await;
    std::fs::rename(
        staging.path().join("a.parquet"),
        dir.path().join("a.parquet"),
    )
    .unwrap();
    let now = answer(&cluster, &count).await;
    assert!(now.contains("| 25 |"), "{now}");
    assert!(answer(&cluster, &filtered).await.contains("| 20 |"));
}

mod processes {
    //! Helpers that run `strata` and talk to its servers.

    use std::io::{Read, Write};
    use std::process::{Command, Output};

    pub use super::cluster_processes::*;

    const ROOT: &str = env!("CARGO_MANIFEST_DIR");

    pub fn strata(args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .current_dir(ROOT)
            .output()
            .expect("run strata")
    }

    /// The body of `GET path` on `addr`.
    pub fn http_get(addr: &str, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        text.split_once("\r\n\r\n").unwrap().1.to_string()
    }
}

#[test]
fn scheduler_and_executor_processes_answer_like_local_execution() {
    processes_answer_like_local_execution("push");
}

#[test]
fn executors_that_pull_their_tasks_answer_like_local_execution() {
    processes_answer_like_local_execution("pull");
}

fn processes_answer_like_local_execution(scheduling: &str) {
    let (scheduler, _executors) = processes::cluster_scheduling(2, scheduling);
    let url = format!("df://{}", scheduler.addr);
    for sql in [
        "SELECT year, month, count(*) AS n, count(DISTINCT plate_id) AS plates FROM violations GROUP BY year, month ORDER BY year, month",
        "SELECT registration_state, sum(violation_precinct) AS s FROM violations_csv GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5",
        "SELECT v.registration_state, count(*) FROM violations v JOIN (VALUES ('NY'), ('NJ')) AS s(code) ON v.registration_state = s.code GROUP BY 1 ORDER BY 1",
    ] {
        let local = processes::strata(&["-q", "--format", "csv", "-c", sql]);
        let cluster = processes::strata(&["-q", "--format", "csv", "--cluster", &url, "-c", sql]);
        assert!(
            cluster.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&cluster.stderr)
        );
        assert!(!local.stdout.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&cluster.stdout),
            String::from_utf8_lossy(&local.stdout),
            "{sql}"
        );
    }

    // Every task of every query ran over its executor's one runtime: one spill folder each,
    // not one per task or per query.
    for executor in &_executors {
        let dir = executor.work_dir().unwrap();
        let spill_folders = std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("datafusion-")
            })
            .count();
        assert!(spill_folders <= 1, "{spill_folders} in {}", dir.display());
    }

    // The REST API knows both executors and the jobs; \jobs lists them.
    let executors = processes::http_get(&scheduler.addr, "/api/executors");
    assert_eq!(executors.matches("\"vcores\":2").count(), 2, "{executors}");
    let jobs = processes::strata(&["-q", "--format", "csv", "--cluster", &url, "-c", "\\jobs"]);
    let text = String::from_utf8_lossy(&jobs.stdout);
    assert!(
        jobs.status.success(),
        "{}",
        String::from_utf8_lossy(&jobs.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "job_id,name,status,stages,started,seconds");
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[1..].iter().all(|l| l.contains(",Completed,")),
        "{text}"
    );
    assert!(text.contains(",violations_csv ("), "{text}");
}

/// TPC-H at scale factor 0.1, generated once per test process into the scratch folder (the
/// tests using it run in parallel).
fn tpch_folder() -> &'static PathBuf {
    static DATA: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DATA.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sql-tests/scratch/tpch-sf0.1");
        tpch_data::generate(&dir, 0.1, 4, false).expect("TPC-H data");
        dir
    })
}

/// A join + group by over TPC-H at scale factor 0.1 that runs for seconds on a cluster of
/// debug builds.
fn long_query() -> String {
    let d = tpch_folder().display();
    format!(
        "SELECT o_orderpriority, count(*) AS n, sum(l_extendedprice) AS revenue, \
         count(DISTINCT l_partkey) AS parts \
         FROM '{d}/parquet/lineitem/' JOIN '{d}/parquet/orders/' ON l_orderkey = o_orderkey \
         GROUP BY 1 ORDER BY 1"
    )
}

/// What `check` returns once it returns something, asked every 10 ms; fails the test with
/// `what` after `deadline`.
fn eventually<T>(deadline: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < deadline, "{what} after {deadline:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Once the scheduler at `addr` lists `count` executors (those that registered, less those
/// it found dead).
fn wait_for_executors(addr: &str, count: usize) {
    eventually(
        Duration::from_secs(60),
        &format!("the scheduler does not list {count} executors"),
        || {
            let listed = processes::http_get(addr, "/api/executors");
            (listed.matches("\"vcores\"").count() == count).then_some(())
        },
    );
}

/// Once `ready` holds for the scheduler's one job.
fn wait_for_job(addr: &str, deadline: Duration, ready: impl Fn(&serde_json::Value) -> bool) {
    eventually(deadline, "the job never got there", || {
        let jobs: serde_json::Value =
            serde_json::from_str(&processes::http_get(addr, "/api/jobs")).unwrap();
        jobs.as_array()
            .and_then(|a| a.first())
            .is_some_and(&ready)
            .then_some(())
    })
}

/// A client running `sql` on the cluster of `scheduler`, returned once `ready` holds for its
/// job.
fn client_once(
    scheduler: &str,
    sql: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> std::process::Child {
    let url = format!("df://{scheduler}");
    let client = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["-q", "--format", "csv", "--cluster", &url, "-c", sql])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_job(scheduler, Duration::from_secs(120), ready);
    client
}

/// `sql`'s answer as CSV, run locally.
fn local_answer(sql: &str) -> String {
    let local = processes::strata(&["-q", "--format", "csv", "-c", sql]);
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );
    String::from_utf8_lossy(&local.stdout).into_owned()
}

/// `sql` run on an in-process cluster of two executors, its answer as CSV.
fn on_a_local_cluster(sql: &str) -> std::process::Output {
    processes::strata(&["-q", "--format", "csv", "--cluster", "local:2", "-c", sql])
}

/// A cluster client's output: it succeeded and printed `expected`.
fn assert_answered(out: &std::process::Output, expected: &str) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[test]
fn a_query_survives_losing_one_of_two_executors() {
    let sql = long_query();
    let local = local_answer(&sql);
    let (scheduler, mut executors) = processes::cluster(2);
    let started = Instant::now();
    // Kill an executor (SIGKILL: no goodbye) once the first stage's output exists.
    let client = client_once(&scheduler.addr, &sql, |job| {
        job["status"] == "Running" && job["completed_stages"].as_u64() >= Some(1)
    });
    let killed_at = started.elapsed();
    drop(executors.remove(0));
    let out = client.wait_with_output().unwrap();
    eprintln!(
        "executor killed after {:.1} s; query finished after {:.1} s",
        killed_at.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_answered(&out, &local);
    // The dead executor's slots are reclaimed: the scheduler lists one executor.
    wait_for_executors(&scheduler.addr, 1);
}

/// Losing an executor while a stage that reads shuffled data is half done makes the scheduler
/// run that stage again from the start. Its finished tasks' output used to stay registered
/// with the next stage, which read those partitions twice: 2,249,945 orders out of 1,500,000
/// at scale factor 1. And the slots of the surviving executor's tasks in that stage were
/// never given back, so with one slot per executor the query waited forever. The answer must
/// come, and be the right one.
#[test]
fn losing_an_executor_halfway_through_a_stage_does_not_count_rows_twice() {
    let d = tpch_folder();
    let sql = format!(
        "SET datafusion.execution.target_partitions = 8; \
         SELECT count(*) AS orders, sum(c) AS lines FROM (SELECT l_orderkey, count(*) AS c \
         FROM '{}/parquet/lineitem/' GROUP BY l_orderkey) t",
        d.display()
    );
    let local = local_answer(&sql);
    // One slot each: the grouping stage's eight tasks run two at a time.
    let (scheduler, mut executors) = processes::cluster_with(2, "push", 1);
    let mut client = client_once(&scheduler.addr, &sql, |job| job["status"] == "Running");
    // Kill an executor once a stage after the scan has finished some tasks but not all.
    let halfway = eventually(
        Duration::from_secs(120),
        "no stage after the scan was ever half done",
        || {
            let jobs: serde_json::Value =
                serde_json::from_str(&processes::http_get(&scheduler.addr, "/api/jobs")).ok()?;
            let job = jobs.as_array()?.first()?;
            if job["status"] != "Running" {
                return Some(Err(format!("the job ended first: {job}")));
            }
            let id = job["job_id"].as_str()?.to_string();
            let stages: serde_json::Value = serde_json::from_str(&processes::http_get(
                &scheduler.addr,
                &format!("/api/job/{id}/stages"),
            ))
            .ok()?;
            stages["stages"].as_array()?.iter().find_map(|stage| {
                let tasks = stage["tasks"].as_array()?;
                let done = tasks.iter().filter(|t| t["status"] == "Successful").count();
                (stage["stage_id"] != "1"
                    && stage["stage_status"] == "Running"
                    && done > 0
                    && done < tasks.len())
                .then(|| {
                    Ok(format!(
                        "stage {} with {done} of {} tasks done",
                        stage["stage_id"],
                        tasks.len()
                    ))
                })
            })
        },
    )
    .unwrap();
    drop(executors.remove(0));
    // The stage's tasks on the surviving executor used to keep its only slot for good.
    eventually(Duration::from_secs(120), "the query never finished", || {
        client.try_wait().unwrap()
    });
    let out = client.wait_with_output().unwrap();
    eprintln!("executor killed at {halfway}");
    assert_answered(&out, &local);
}

#[test]
fn a_stopped_scheduler_fails_the_query_with_a_clear_error() {
    let sql = long_query();
    let (scheduler, _executors) = processes::cluster(2);
    let mut client = client_once(&scheduler.addr, &sql, |job| job["status"] == "Running");
    let stopped = Instant::now();
    drop(scheduler);
    let status = eventually(Duration::from_secs(30), "the client still waits", || {
        client.try_wait().unwrap()
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(client.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    eprintln!(
        "client gave up {:.2} s after the scheduler stopped: {stderr}",
        stopped.elapsed().as_secs_f64()
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("scheduler"), "{stderr}");
}

#[test]
fn explain_analyze_on_a_cluster_shows_each_stage_with_its_shuffle_metrics() {
    let out = processes::strata(&[
        "--cluster",
        "local:2",
        "-c",
        "EXPLAIN ANALYZE SELECT registration_state, count(*) FROM violations GROUP BY 1",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.matches("SuccessfulStage[stage_id=").count(),
        2,
        "{text}"
    );
    assert!(text.contains("ShuffleReaderExec"), "{text}");
    assert!(text.contains("decoded_bytes="), "{text}");
    assert!(text.contains("write_time="), "{text}");
}

/// The stages of a cluster EXPLAIN (what follows the local plan).
fn stages(sql: &str) -> String {
    let out = processes::strata(&["--cluster", "local:2", "-c", sql]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at = text.find("Stage[stage_id=").expect("the stages");
    text[at..].to_string()
}

#[test]
fn a_cluster_joins_by_hash_as_local_mode_does_and_takes_the_settings_of_the_session() {
    let join = "EXPLAIN SELECT count(*) FROM violations a JOIN violations_csv b \
                ON a.summons_number = b.summons_number";
    let plan = stages(join);
    assert!(plan.contains("HashJoinExec"), "{plan}");
    assert!(!plan.contains("SortMergeJoinExec"), "{plan}");
    // Strata's and DataFusion's settings reach the scheduler with the job.
    let plan = stages(&format!(
        "SET strata.decimal_literals_at_scale = false; \
         SET datafusion.optimizer.prefer_hash_join = false; {join}"
    ));
    assert!(plan.contains("SortMergeJoinExec"), "{plan}");
    assert!(!plan.contains("HashJoinExec"), "{plan}");
}

#[test]
fn shuffles_are_written_with_the_codec_the_session_sets_and_a_wrong_one_is_named() {
    // A grouped count shuffles its partial aggregates between two stages.
    let query = "SELECT registration_state, count(*) AS n FROM violations \
                 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5";
    let expected = local_answer(query);
    // First Ballista's default, LZ4.
    for codec in [
        "",
        "SET ballista.shuffle.compression.codec = 'none';",
        "SET ballista.shuffle.compression.codec = 'zstd';",
    ] {
        let out = on_a_local_cluster(&format!("{codec} {query}"));
        assert_answered(&out, &expected);
    }
    let out = processes::strata(&[
        "--cluster",
        "local:2",
        "-c",
        &format!("SET ballista.shuffle.compression.codec = 'brotli'; {query}"),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid compression codec brotli") && err.contains("lz4, zstd and none"),
        "{err}"
    );
}

#[test]
fn a_join_ballista_broadcasts_reads_its_probe_side_where_it_lies() {
    // DataFusion's thresholds at zero plan the join partitioned; its small side is under
    // Ballista's broadcast threshold, so the scheduler broadcasts it.
    let join = "SET datafusion.optimizer.hash_join_single_partition_threshold = 0; \
                SET datafusion.optimizer.hash_join_single_partition_threshold_rows = 0; \
                EXPLAIN SELECT count(*) FROM violations a \
                JOIN (SELECT * FROM violations_csv LIMIT 10) b \
                ON a.summons_number = b.summons_number";
    let plan = stages(join);
    assert!(plan.contains("broadcast=true"), "{plan}");
    assert!(plan.contains("mode=CollectLeft"), "{plan}");
    // Neither side is shuffled by the join key: the probe side is read by the join's own
    // stage, the build side written once for the broadcast.
    assert!(!plan.contains("Hash([summons_number"), "{plan}");
    // Left to Ballista, the probe side was shuffled by the key first, for nothing.
    let plan = stages(&join.replace("EXPLAIN", "SET strata.broadcast_joins = false; EXPLAIN"));
    assert!(plan.contains("broadcast=true"), "{plan}");
    assert!(plan.contains("Hash([summons_number"), "{plan}");
}

#[test]
fn a_join_ballista_will_not_broadcast_shuffles_its_build_side_once() {
    // DataFusion's own thresholds make the join a broadcast join; Ballista's, at one byte,
    // will not broadcast it.
    let query = "SELECT count(*) AS n FROM violations a \
                 JOIN (SELECT * FROM violations_csv WHERE year > 2000) b \
                 ON a.summons_number = b.summons_number";
    let small = "SET ballista.optimizer.broadcast_join_threshold_bytes = 1;";
    let plan = stages(&format!("{small} EXPLAIN {query}"));
    assert!(plan.contains("mode=Partitioned"), "{plan}");
    // The build side is shuffled by key by the stage that reads it.
    assert!(!plan.contains("UnknownPartitioning(2)"), "{plan}");
    assert_eq!(plan.matches("Stage[stage_id=").count(), 4, "{plan}");
    // Left to Ballista, a stage wrote that side as it was read, and the next one only
    // shuffled it by key.
    let plan = stages(&format!(
        "SET strata.broadcast_joins = false; {small} EXPLAIN {query}"
    ));
    assert!(plan.contains("UnknownPartitioning(2)"), "{plan}");
    assert_eq!(plan.matches("Stage[stage_id=").count(), 5, "{plan}");
    let out = on_a_local_cluster(&format!("{small} {query}"));
    assert_answered(&out, &local_answer(query));
}

#[test]
fn a_joins_large_side_is_reduced_by_the_keys_of_its_filtered_side_before_it_is_aggregated() {
    // 600,000 rows over 50,000 keys, and a table of the keys.
    let dir = tempfile::tempdir().unwrap();
    let (large, keys) = (
        dir.path().join("large.parquet"),
        dir.path().join("keys.parquet"),
    );
    for (path, select) in [
        (
            &large,
            "SELECT value % 50000 AS k, value AS v FROM range(600000)",
        ),
        (&keys, "SELECT value AS k FROM range(50000)"),
    ] {
        let copy = format!("COPY ({select}) TO '{}'", path.display());
        assert!(processes::strata(&["-q", "-c", &copy]).status.success());
    }
    let join = |kind: &str| {
        format!(
            "SELECT count(*) AS n, sum(c) AS s FROM \
             (SELECT k, count(*) AS c FROM '{}' GROUP BY k) a \
             {kind} JOIN (SELECT k FROM '{}' WHERE k < 100) b ON a.k = b.k",
            large.display(),
            keys.display()
        )
    };
    let inner = join("");
    let plan = stages(&format!("EXPLAIN {inner}"));
    // The stage that reads the large table for the aggregation keeps only the rows whose
    // key the filtered side holds: a broadcast semi join over the scan, below the
    // aggregation.
    let reading = plan
        .split("Stage[stage_id=")
        .find(|stage| stage.contains("mode=Partial, gby=[k@"))
        .expect("the aggregation's stage");
    assert!(
        reading.contains("mode=CollectLeft, join_type=RightSemi"),
        "{plan}"
    );
    let off = stages(&format!(
        "SET strata.semi_join_reduction = false; EXPLAIN {inner}"
    ));
    assert!(!off.contains("join_type=RightSemi"), "{off}");
    // A LEFT JOIN keeps the aggregation's rows that match nothing: they are not dropped.
    let left = join("LEFT");
    let plan = stages(&format!("EXPLAIN {left}"));
    assert!(!plan.contains("join_type=RightSemi"), "{plan}");
    for sql in [inner, left] {
        let out = on_a_local_cluster(&sql);
        assert_answered(&out, &local_answer(&sql));
    }
}

#[test]
fn an_exists_over_a_reduced_side_broadcasts_that_side_instead_of_shuffling_both() {
    let d = tpch_folder().display();
    let t = |name: &str| format!("'{d}/parquet/{name}/'");
    // TPC-H q04, and its NOT EXISTS: one quarter's orders and their late lines.
    let exists = |not: &str| {
        format!(
            "SELECT o_orderpriority, count(*) AS n FROM {} WHERE o_orderdate >= DATE '1993-07-01' \
             AND o_orderdate < DATE '1993-10-01' AND {not} EXISTS (SELECT * FROM {} \
             WHERE l_orderkey = o_orderkey AND l_commitdate < l_receiptdate) \
             GROUP BY o_orderpriority ORDER BY o_orderpriority",
            t("orders"),
            t("lineitem")
        )
    };
    // The late lines are reduced by the quarter's orders at any size.
    let reduce = "SET strata.semi_join_reduction_min_rows = 0;";
    for (sql, kind) in [(exists(""), "RightSemi"), (exists("NOT"), "RightAnti")] {
        let plan = stages(&format!("{reduce} EXPLAIN {sql}"));
        // The reduced lines are broadcast to the stage that reads the orders, which keeps
        // (or drops) each order there: no side is shuffled by the key.
        let flipped =
            format!("mode=CollectLeft, join_type={kind}, on=[(l_orderkey@0, o_orderkey@0)]");
        assert!(plan.contains(&flipped), "{plan}");
        assert!(!plan.contains("mode=Partitioned"), "{plan}");
        let off = stages(&format!(
            "{reduce} SET strata.broadcast_reduced_sides = false; EXPLAIN {sql}"
        ));
        assert!(off.contains("mode=Partitioned"), "{off}");
        assert_eq!(
            off.matches("Stage[stage_id=").count(),
            plan.matches("Stage[stage_id=").count() + 1,
            "{plan}\n{off}"
        );
        let out = on_a_local_cluster(&format!("{reduce} {sql}"));
        assert_answered(&out, &local_answer(&sql));
    }
}

#[test]
fn small_tables_of_broadcast_joins_are_read_by_each_task_instead_of_a_stage_of_their_own() {
    let d = tpch_folder().display();
    let t = |name: &str| format!("'{d}/parquet/{name}/'");
    // Suppliers (1,000 rows), nations and regions, joined to `partsupp` (80,000 rows).
    let query = format!(
        "SELECT n_name, count(*) AS n, sum(ps_availqty) AS q FROM {} \
         JOIN {} ON ps_suppkey = s_suppkey JOIN {} ON s_nationkey = n_nationkey \
         JOIN {} ON n_regionkey = r_regionkey WHERE r_name = 'ASIA' GROUP BY n_name \
         ORDER BY n_name",
        t("partsupp"),
        t("supplier"),
        t("nation"),
        t("region")
    );
    let plan = stages(&format!("EXPLAIN {query}"));
    // The three small tables are read where the joins are, by each of their tasks.
    assert_eq!(plan.matches("InlineBuildExec").count(), 3, "{plan}");
    assert!(!plan.contains("broadcast=true"), "{plan}");
    let inline_stages = plan.matches("Stage[stage_id=").count();
    let off = stages(&format!(
        "SET strata.inline_build_max_rows = 0; EXPLAIN {query}"
    ));
    assert!(!off.contains("InlineBuildExec"), "{off}");
    assert_eq!(off.matches("broadcast=true").count(), 3, "{off}");
    assert_eq!(
        off.matches("Stage[stage_id=").count(),
        inline_stages + 3,
        "{off}"
    );
    // Under the limit by rows but not by Ballista's broadcast threshold: a stage of its own.
    let unbroadcast = stages(&format!(
        "SET ballista.optimizer.broadcast_join_threshold_bytes = 1; EXPLAIN {query}"
    ));
    assert!(!unbroadcast.contains("InlineBuildExec"), "{unbroadcast}");
    let expected = local_answer(&query);
    assert_eq!(expected.lines().count(), 6, "{expected}");
    assert_answered(&on_a_local_cluster(&query), &expected);
    // A join that also emits its build side's rows keeps them in one task: not inlined, and
    // no row comes back twice.
    let outer = format!(
        "SELECT count(*) AS n, count(s_suppkey) AS matched FROM {} LEFT JOIN \
         (SELECT * FROM {} WHERE s_acctbal > 9000) ON n_nationkey = s_nationkey",
        t("nation"),
        t("supplier")
    );
    let plan = stages(&format!("EXPLAIN {outer}"));
    assert!(!plan.contains("InlineBuildExec"), "{plan}");
    assert_answered(&on_a_local_cluster(&outer), &local_answer(&outer));
    // Semi and anti joins on a small table's keys.
    for test in ["EXISTS", "NOT EXISTS"] {
        let sql = format!(
            "SELECT count(*) AS n FROM {} WHERE {test} (SELECT 1 FROM {} \
             WHERE s_suppkey = ps_suppkey AND s_acctbal > 9000)",
            t("partsupp"),
            t("supplier")
        );
        let plan = stages(&format!("EXPLAIN {sql}"));
        assert!(plan.contains("InlineBuildExec"), "{plan}");
        assert_answered(&on_a_local_cluster(&sql), &local_answer(&sql));
    }
}

#[test]
fn a_subplan_used_twice_is_one_stage_that_both_uses_read() {
    let d = tpch_folder().display();
    let revenue = |value: &str| {
        format!(
            "WITH revenue AS (SELECT l_suppkey AS supplier_no, sum({value}) AS total \
             FROM '{d}/parquet/lineitem/' WHERE l_shipdate >= DATE '1996-01-01' \
             GROUP BY l_suppkey) SELECT supplier_no, total FROM revenue \
             WHERE total = (SELECT max(total) FROM revenue) ORDER BY supplier_no"
        )
    };
    let query = revenue("l_extendedprice");
    let plan = stages(&format!("EXPLAIN {query}"));
    assert_eq!(plan.matches("DataSourceExec").count(), 1, "{plan}");
    let shared = plan.matches("Stage[stage_id=").count();
    let off = stages(&format!(
        "SET strata.share_subplans = false; EXPLAIN {query}"
    ));
    assert_eq!(off.matches("DataSourceExec").count(), 2, "{off}");
    assert_eq!(off.matches("Stage[stage_id=").count(), shared + 1, "{off}");
    let expected = local_answer(&query);
    assert_eq!(expected.lines().count(), 2, "{expected}");
    assert_answered(&on_a_local_cluster(&query), &expected);
    assert_answered(
        &on_a_local_cluster(&format!("SET strata.share_subplans = false; {query}")),
        &expected,
    );
    // Each use of a volatile subplan computes its own rows.
    let plan = stages(&format!(
        "EXPLAIN {}",
        revenue("l_extendedprice * random()")
    ));
    assert_eq!(plan.matches("DataSourceExec").count(), 2, "{plan}");
}

#[test]
fn a_partitioned_joins_large_side_is_reduced_by_the_keys_its_small_side_writes() {
    let d = tpch_folder().display();
    // The orders of one nation's suppliers' items (about 24,000 of 600,000 rows), tested
    // against every `lineitem` row: a semi or anti join that Ballista cannot broadcast, as
    // it keeps rows of its small side.
    let query = |kind: &str| {
        format!(
            "SELECT count(*) AS n, sum(l1.l_quantity) AS q FROM '{d}/parquet/lineitem/' l1 \
             JOIN '{d}/parquet/supplier/' s ON l1.l_suppkey = s.s_suppkey \
             WHERE s.s_nationkey = 3 AND {kind} (SELECT 1 FROM '{d}/parquet/lineitem/' l2 \
             WHERE l2.l_orderkey = l1.l_orderkey AND l2.l_suppkey <> l1.l_suppkey)"
        )
    };
    for kind in ["EXISTS", "NOT EXISTS"] {
        let sql = query(kind);
        let plan = stages(&format!("EXPLAIN {sql}"));
        // The large side's stage broadcasts the keys of the small side's stage, read from
        // that stage's output, and keeps its rows that match one.
        let large = plan
            .split("Stage[stage_id=")
            .find(|stage| stage.contains("join_type=RightSemi"))
            .unwrap_or_else(|| panic!("no reduced stage in {plan}"));
        assert!(large.contains("broadcast=true"), "{plan}");
        assert!(large.contains("EstimatedExec"), "{plan}");
        let off = stages(&format!(
            "SET strata.semi_join_reduction = false; EXPLAIN {sql}"
        ));
        assert!(!off.contains("join_type=RightSemi"), "{off}");
        assert_eq!(
            off.matches("Stage[stage_id=").count() + 1,
            plan.matches("Stage[stage_id=").count(),
            "{off}"
        );
        let expected = local_answer(&sql);
        assert_answered(&on_a_local_cluster(&sql), &expected);
        assert_answered(
            &on_a_local_cluster(&format!("SET strata.semi_join_reduction = false; {sql}")),
            &expected,
        );
    }
}

#[test]
fn a_joins_runtime_filter_reaches_the_scans_of_its_stage() {
    // 600,000 rows; every row matches the first join, 100 of them the second.
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(format!("{name}.parquet"));
    for (name, select) in [
        (
            "large",
            "SELECT value % 50000 AS k, value AS v FROM range(600000)",
        ),
        ("keys", "SELECT value AS k FROM range(50000)"),
        ("few", "SELECT value AS v FROM range(1000)"),
    ] {
        let copy = format!("COPY ({select}) TO '{}'", path(name).display());
        assert!(processes::strata(&["-q", "-c", &copy]).status.success());
    }
    let query = format!(
        "SELECT count(*) AS n, sum(l.v) AS s FROM '{}' l JOIN '{}' a ON l.k = a.k \
         JOIN '{}' b ON l.v = b.v * 7 WHERE b.v < 100",
        path("large").display(),
        path("keys").display(),
        path("few").display()
    );
    // Without semi-join reduction, which would shrink the large side in a stage before.
    let settings = "SET strata.semi_join_reduction = false;";
    // The rows the first join (on `k`) reads, from the stages' metrics.
    let first_join_reads = |more: &str| {
        let out = processes::strata(&[
            "--cluster",
            "local:2",
            "-c",
            &format!("{settings} {more} EXPLAIN ANALYZE {query}"),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let join = text
            .lines()
            .find(|l| l.contains("HashJoinExec") && l.contains("on=[(k@0, k@0)]"))
            .unwrap_or_else(|| panic!("the join on k: {text}"))
            .to_string();
        let rows = join
            .split(", input_rows=")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or_else(|| panic!("its input rows: {join}"))
            .to_string();
        (rows, text)
    };
    // Both joins run in one stage, the large table's scan with them: the second join's
    // filter drops the rows it will not match before the first join reads them.
    let (on, plan) = first_join_reads("");
    let joins = plan
        .split("SuccessfulStage[")
        .find(|stage| stage.contains("on=[(k@0, k@0)]"))
        .expect("the stage of the join on k");
    assert!(joins.contains("b.v * Int64(7)"), "{plan}");
    assert!(!on.contains('K'), "{on} rows: {plan}");
    let (off, plan) = first_join_reads("SET strata.stage_join_filters = false;");
    assert_eq!(off, "600.0 K", "{plan}");
    for more in ["", "SET strata.stage_join_filters = false;"] {
        let out = on_a_local_cluster(&format!("{settings} {more} {query}"));
        assert_answered(&out, "n,s\n100,34650\n");
    }
    assert_eq!(local_answer(&query), "n,s\n100,34650\n");
}

#[test]
fn a_broadcast_semi_join_is_made_where_the_column_it_tests_is_read() {
    // Customers, their orders, and the orders' lines; the IN subquery keeps few orders.
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(format!("{name}.parquet"));
    for (name, select) in [
        (
            "c",
            "SELECT value AS c, 'n' || value AS name FROM range(1000)",
        ),
        (
            "o",
            "SELECT value AS k, value % 1000 AS c FROM range(100000)",
        ),
        (
            "l",
            "SELECT value % 100000 AS k, value % 7 AS q FROM range(400000)",
        ),
    ] {
        let copy = format!("COPY ({select}) TO '{}'", path(name).display());
        assert!(processes::strata(&["-q", "-c", &copy]).status.success());
    }
    let (c, o, l) = (
        path("c").display().to_string(),
        path("o").display().to_string(),
        path("l").display().to_string(),
    );
    let query = |test: &str| {
        format!(
            "SELECT c.name, o.k, sum(l.q) AS s FROM '{c}' c JOIN '{o}' o ON c.c = o.c \
             JOIN '{l}' l ON o.k = l.k WHERE {test} GROUP BY c.name, o.k ORDER BY o.k"
        )
    };
    let semi = query(&format!(
        "o.k IN (SELECT k FROM '{l}' GROUP BY k HAVING sum(q) > 21)"
    ));
    // The stage that reads the orders keeps only those the subquery returned, before they
    // are joined to their customers and broadcast to the join with their lines.
    let reading = |plan: &str| {
        plan.split("Stage[stage_id=")
            .find(|stage| stage.contains("o.parquet"))
            .expect("the stage that reads the orders")
            .to_string()
    };
    let plan = stages(&format!("EXPLAIN {semi}"));
    assert!(
        reading(&plan).contains("mode=CollectLeft, join_type=RightSemi"),
        "{plan}"
    );
    let off = stages(&format!(
        "SET strata.semi_joins_first = false; EXPLAIN {semi}"
    ));
    assert!(!reading(&off).contains("join_type=RightSemi"), "{off}");
    // An anti join moves as well; a test of the padded side of an outer join does not.
    let anti = query(&format!(
        "NOT EXISTS (SELECT 1 FROM '{c}' x WHERE x.c * 7 = o.k)"
    ));
    let plan = stages(&format!("EXPLAIN {anti}"));
    assert!(
        reading(&plan).contains("mode=CollectLeft, join_type=RightAnti"),
        "{plan}"
    );
    let padded = format!(
        "SELECT o.k, c.name FROM '{o}' o LEFT JOIN '{c}' c ON o.c = c.c AND o.k < 500 \
         WHERE c.name IN (SELECT name FROM '{c}' WHERE c < 3) ORDER BY o.k"
    );
    for sql in [semi, anti, padded] {
        let out = on_a_local_cluster(&sql);
        assert_answered(&out, &local_answer(&sql));
    }
}

#[test]
fn string_views_are_compacted_where_a_stage_writes_them_unless_turned_off() {
    let query = "SELECT arrow_cast(registration_state, 'Utf8View') AS s, count(*) \
                 FROM violations GROUP BY 1";
    let plan = stages(&format!("EXPLAIN {query}"));
    assert!(plan.contains("CompactViewsExec"), "{plan}");
    let plan = stages(&format!(
        "SET strata.compact_views = false; EXPLAIN {query}"
    ));
    assert!(!plan.contains("CompactViewsExec"), "{plan}");
    // Compacted or not, the answer is local mode's.
    let sorted = format!("{query} ORDER BY 1");
    let out = processes::strata(&[
        "--cluster",
        "local:2",
        "-q",
        "--format",
        "csv",
        "-c",
        &sorted,
    ]);
    assert_answered(&out, &local_answer(&sorted));
}

#[test]
fn an_ordered_aggregate_is_merged_in_the_stage_that_finishes_it() {
    let query = "SELECT registration_state, count(*) AS n FROM violations \
                 GROUP BY registration_state ORDER BY n DESC, registration_state";
    // Partial aggregation, then final aggregation, sort and merge in one stage.
    let plan = stages(&format!("EXPLAIN {query}"));
    assert_eq!(plan.matches("Stage[stage_id=").count(), 2, "{plan}");
    assert!(
        plan.contains("StageMergeExec: SortPreservingMergeExec"),
        "{plan}"
    );
    // Left to Ballista, the merge was a stage of its own.
    let plan = stages(&format!(
        "SET strata.merge_final_stages = false; EXPLAIN {query}"
    ));
    assert_eq!(plan.matches("Stage[stage_id=").count(), 3, "{plan}");
    assert!(!plan.contains("StageMergeExec"), "{plan}");
    // A merge of another aggregation's partial results is left to Ballista: merged, the
    // grouping below it would run as one task.
    let plan = stages(&format!("EXPLAIN SELECT count(*) FROM ({query}) t"));
    assert!(!plan.contains("StageMergeExec"), "{plan}");
    // The stage's one task reads every partition: all groups, in order, and a LIMIT's rows.
    for sql in [query.to_string(), format!("{query} LIMIT 3")] {
        let out = on_a_local_cluster(&sql);
        assert_answered(&out, &local_answer(&sql));
    }
}

#[test]
fn strata_settings_reach_the_scheduler_by_their_full_names() {
    // With the TopK threshold at one byte, the scheduler plans the sort and the limit apart.
    let topk = "EXPLAIN SELECT * FROM violations ORDER BY summons_number LIMIT 10";
    let plan = stages(topk);
    assert!(plan.contains("TopK(fetch=10)"), "{plan}");
    let plan = stages(&format!("SET strata.topk_max_bytes = 1; {topk}"));
    assert!(!plan.contains("TopK"), "{plan}");
    assert!(plan.contains("LocalLimitExec: fetch=10"), "{plan}");
}

#[test]
fn ctrl_c_at_the_client_cancels_the_job_on_the_cluster() {
    let sql = long_query();
    let (scheduler, _executors) = processes::cluster(2);
    let mut client = client_once(&scheduler.addr, &sql, |job| job["status"] == "Running");
    let interrupted = Instant::now();
    // SAFETY: signalling a child process we started and still own.
    unsafe { libc::kill(client.id() as i32, libc::SIGINT) };
    let status = client.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    // The job stops on the cluster too, well before it could have finished.
    wait_for_job(&scheduler.addr, Duration::from_secs(10), |job| {
        job["status"] != "Running" && job["status"] != "Queued"
    });
    let jobs = processes::http_get(&scheduler.addr, "/api/jobs");
    eprintln!(
        "job ended {:.2} s after Ctrl-C: {jobs}",
        interrupted.elapsed().as_secs_f64()
    );
    assert!(!jobs.contains("\"status\":\"Completed\""), "{jobs}");
}

#[test]
fn a_cancelled_job_stops_burning_the_executors_cpu() {
    // A cross join over a nested loop join: hours of work that makes its batches from memory.
    let sql = "SELECT count(*), sum(length(a.street_name || b.street_name)) FROM violations a, \
               violations b, people c WHERE a.plate_id <> b.plate_id";
    let (scheduler, executors) = processes::cluster(1);
    let busy = || -> u64 {
        executors
            .iter()
            .map(|e| processes::cpu_ticks(e.pid()))
            .sum()
    };
    let before = busy();
    let mut client = client_once(&scheduler.addr, sql, |job| job["status"] == "Running");
    // Once the executor has worked for a second, interrupt the client.
    let started = Instant::now();
    while busy() < before + 100 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling a child process we started and still own.
    unsafe { libc::kill(client.id() as i32, libc::SIGINT) };
    assert_eq!(client.wait().unwrap().code(), Some(130));
    // The executor goes quiet: its CPU time stops growing (it kept both cores busy for as
    // long as the job would have run).
    let interrupted = Instant::now();
    let mut last = busy();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = busy();
        if now.saturating_sub(last) <= 5 {
            break;
        }
        last = now;
        assert!(
            interrupted.elapsed() < Duration::from_secs(10),
            "the executor still works {:?} after the interrupt",
            interrupted.elapsed()
        );
    }
    eprintln!(
        "executor quiet {:?} after the interrupt",
        interrupted.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_query_reports_its_stages_and_tasks_while_it_runs() {
    let sql = long_query();
    let cluster = Engine::builder().cluster("local:2").build().await.unwrap();
    let mut result = cluster.sql(&sql).await.unwrap();
    let progress = result.progress();
    assert!(progress.is_cluster_job());
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            if let Some(stats) = progress.job_stats().await.unwrap() {
                let ended = stats.status != "Running" && stats.status != "Queued";
                seen.push(stats);
                if ended {
                    return seen;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let rows: usize = result
        .collect()
        .await
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 5);
    let seen = tokio::time::timeout(Duration::from_secs(60), watcher)
        .await
        .expect("the job never ended")
        .unwrap();
    let running = seen
        .iter()
        .find(|s| s.status == "Running" && s.stages_done < s.stages && s.tasks_running > 0);
    assert!(running.is_some(), "{seen:#?}");
    let last = seen.last().unwrap();
    assert_eq!(last.status, "Completed", "{seen:#?}");
    assert!(last.stages >= 2, "{last:?}");
    assert_eq!(last.stages_done, last.stages, "{last:?}");
    assert_eq!(last.tasks_running, 0, "{last:?}");

    // Every row the scans read is counted once.
    let local = Engine::builder().build().await.unwrap();
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sql-tests/scratch/tpch-sf0.1/parquet");
    let count = answer(
        &local,
        &format!(
            "SELECT (SELECT count(*) FROM '{0}/lineitem/') + (SELECT count(*) FROM '{0}/orders/') AS n",
            d.display()
        ),
    )
    .await;
    assert!(
        count.contains(&format!(" {} ", last.rows_scanned)),
        "{count} vs {last:?}"
    );

    let local_result = local.sql("SELECT 1").await.unwrap();
    assert!(!local_result.progress().is_cluster_job());
    assert_eq!(local_result.progress().job_stats().await.unwrap(), None);
}

/// A nested loop join whose build side does not fit under an executor's memory limit fails
/// with the out-of-memory error, or answers right; it used to spill in a mode that emitted
/// unmatched rows once per partition of the other side (1,397,500 rows instead of 1,199,000).
#[test]
fn a_nested_loop_join_under_an_executors_memory_limit_is_never_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display().to_string();
    let mut setup = vec![format!(
        "COPY (SELECT value AS x, repeat('a', 200) || value AS pad \
         FROM generate_series(1, 200000)) TO '{path}/l.parquet'"
    )];
    for i in 0..4 {
        setup.push(format!(
            "COPY (SELECT value AS y FROM generate_series({}, {})) TO '{path}/r/p{i}.csv'",
            i * 250 + 1,
            i * 250 + 250
        ));
    }
    for sql in &setup {
        let out = processes::strata(&["-q", "-c", sql]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sql = format!(
        "SELECT x, y FROM '{path}/l.parquet' l LEFT JOIN '{path}/r' r \
         ON l.x * 7 % 100000 < r.y AND length(pad) > 0"
    );
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let local = sorted(&local_answer(&sql));
    assert_eq!(local.len(), 1_199_001);

    let scheduler = processes::start(
        &["scheduler", "--bind", "127.0.0.1:0"],
        "listening on df://",
    );
    let work = tempfile::tempdir().unwrap();
    let _executor = processes::start(
        &[
            "--memory-limit",
            "20M",
            "executor",
            "--scheduler",
            &scheduler.addr,
            "--bind",
            "127.0.0.1:0",
            "--work-dir",
            work.path().to_str().unwrap(),
        ],
        "serving shuffle data on ",
    );
    let url = format!("df://{}", scheduler.addr);
    let out = processes::strata(&["-q", "--format", "csv", "--cluster", &url, "-c", &sql]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        let answer = sorted(&String::from_utf8_lossy(&out.stdout));
        assert!(
            answer == local,
            "{} rows instead of {}",
            answer.len(),
            local.len()
        );
    } else {
        assert!(stderr.contains("out of memory"), "{stderr}");
    }
}

/// The dashboard of a session on a cluster: its Workers page lists the scheduler's executors
/// and marks one that was killed dead; its queries show their job's stages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_clusters_executors_and_marks_a_killed_one_dead() {
    let (scheduler, mut executors) = processes::cluster(2);
    let engine = Engine::builder()
        .catalog(format!("{}/strata.toml", env!("CARGO_MANIFEST_DIR")))
        .cluster(format!("df://{}", scheduler.addr))
        .build()
        .await
        .unwrap();
    let serving = strata::dashboard::Dashboard::new(engine.new_session())
        .serve("127.0.0.1:0")
        .await
        .unwrap();
    let port = serving.address().port();
    let get = |path: &'static str| async move { http_client::http(port, "GET", path, &[]).await };

    // Once both executors have registered with the scheduler.
    let deadline = Instant::now() + Duration::from_secs(60);
    let workers = loop {
        let workers = get("/api/workers").await.json();
        if workers["workers"].as_array().map(Vec::len) == Some(2) {
            break workers;
        }
        assert!(Instant::now() < deadline, "executors not listed: {workers}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(workers["kind"], "cluster", "{workers}");
    assert_eq!(workers["scheduler"], scheduler.addr.as_str());
    let listed = workers["workers"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{workers}");
    assert!(
        listed
            .iter()
            .all(|w| w["state"] == "alive" && w["slots"] == 2),
        "{workers}"
    );
    assert!(
        listed.iter().all(|w| w["last_seen_ms"].as_u64().is_some()),
        "{workers}"
    );

    // A query run on the cluster is listed as such, with its job's stages.
    let mut result = engine
        .sql("SELECT count(*) FROM violations WHERE registration_state = 'NY'")
        .await
        .unwrap();
    let id = result.query_id().unwrap();
    result.collect().await.unwrap();
    let detail = http_client::http(port, "GET", &format!("/api/queries/{id}"), &[])
        .await
        .json();
    assert_eq!(detail["query"]["cluster"], true, "{detail}");
    assert_eq!(detail["query"]["state"], "finished", "{detail}");
    let job = &detail["job"];
    assert_eq!(job["status"], "Completed", "{detail}");
    assert!(job["stages"].as_u64().unwrap() >= 1, "{detail}");
    assert_eq!(job["stages"], job["stages_done"], "{detail}");

    // Kill one executor (no goodbye): once the scheduler gives up on it, it is marked dead.
    let before: Vec<String> = listed
        .iter()
        .map(|w| w["id"].as_str().unwrap().into())
        .collect();
    drop(executors.remove(0));
    let deadline = Instant::now() + Duration::from_secs(90);
    let workers = loop {
        let workers = get("/api/workers").await.json();
        let dead = workers["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["state"] == "dead")
            .count();
        if dead == 1 {
            break workers;
        }
        assert!(
            Instant::now() < deadline,
            "no executor marked dead: {workers}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let listed = workers["workers"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "the dead one is still shown: {workers}");
    let dead = listed.iter().find(|w| w["state"] == "dead").unwrap();
    assert!(before.contains(&dead["id"].as_str().unwrap().to_string()));
    assert!(dead["gone_ms"].as_u64().is_some(), "{workers}");
    assert_eq!(listed.iter().filter(|w| w["state"] == "alive").count(), 1);
}

/// `strata scheduler` serves the dashboard on its own port, beside its gRPC service and REST
/// API: the cluster's jobs with their stages and task stream, a Cancel that stops a job, and
/// the executors.
#[test]
fn the_scheduler_serves_the_dashboard_of_its_jobs_and_executors_on_its_port() {
    let (scheduler, _executors) = processes::cluster(2);
    let addr = &scheduler.addr;
    let page = processes::http_get(addr, "/");
    assert!(page.contains("data-page=\"queries\""), "{page}");
    assert!(processes::http_get(addr, "/jobs").contains("data-page=\"jobs\""));
    // Ballista's REST API is still there (once both executors have registered).
    wait_for_executors(addr, 2);
    let json = |path: &str| -> serde_json::Value {
        serde_json::from_str(&processes::http_get(addr, path)).unwrap()
    };
    let workers = json("/api/workers");
    assert_eq!(workers["kind"], "cluster");
    assert_eq!(workers["workers"].as_array().unwrap().len(), 2, "{workers}");

    // A job that ran: its stages, each read stage named, and its tasks in the stream.
    let sql =
        "SELECT registration_state, count(*) FROM violations GROUP BY 1 ORDER BY 2 DESC LIMIT 3";
    let done = processes::strata(&["-q", "--cluster", &format!("df://{addr}"), "-c", sql]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let jobs = json("/api/cluster/jobs");
    let job = &jobs[0];
    assert_eq!(job["status"], "Completed", "{jobs}");
    let id = job["job_id"].as_str().unwrap();
    let stats = json(&format!("/api/cluster/jobs/{id}"));
    let stages = stats["stage_list"].as_array().unwrap();
    assert!(stages.len() >= 2, "{stats}");
    assert!(
        stages.iter().all(|s| s["status"] == "Successful"),
        "{stats}"
    );
    assert!(
        stages
            .iter()
            .any(|s| !s["inputs"].as_array().unwrap().is_empty()),
        "{stats}"
    );
    assert!(
        stages
            .iter()
            .all(|s| s["shuffle_bytes_fetched"].as_u64().is_some()),
        "{stats}"
    );
    let tasks = stats["task_stream"].as_array().unwrap();
    let total: u64 = stages.iter().map(|s| s["tasks"].as_u64().unwrap()).sum();
    assert_eq!(tasks.len() as u64, total, "{stats}");
    assert!(
        tasks
            .iter()
            .all(|t| t["state"] == "done" && t["end_ms"].as_u64() >= t["start_ms"].as_u64())
    );
    // Each task names the executor that ran it; each stage what it wrote for the next.
    let executor_ids: Vec<&str> = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert!(
        tasks
            .iter()
            .all(|t| executor_ids.contains(&t["executor"].as_str().unwrap_or("none"))),
        "{stats}"
    );
    assert!(
        stages
            .iter()
            .all(|s| s["shuffle_bytes_written"].as_u64().is_some()),
        "{stats}"
    );
    assert!(
        stages
            .iter()
            .any(|s| s["shuffle_bytes_written"].as_u64() > Some(0)),
        "{stats}"
    );
    // Nothing spilled: the executors have memory to spare.
    assert!(stages.iter().all(|s| s["spilled_bytes"] == 0), "{stats}");
    // Idle executors run no tasks, and say so.
    let workers = json("/api/workers");
    assert!(
        workers["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["running"] == 0),
        "{workers}"
    );

    // Cancel from the dashboard stops a running job; its client gets the error.
    let client = client_once(addr, &long_query(), |job| job["status"] == "Running");
    let jobs = json("/api/cluster/jobs");
    let running = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["status"] == "Running")
        .unwrap_or_else(|| panic!("no running job: {jobs}"));
    let id = running["job_id"].as_str().unwrap().to_string();
    let cancel = format!("/api/cluster/jobs/{id}/cancel");
    let refused = http_post(addr, &cancel, false);
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    let cancelled = http_post(addr, &cancel, true);
    assert!(cancelled.starts_with("HTTP/1.1 200"), "{cancelled}");
    let out = client.wait_with_output().unwrap();
    assert!(!out.status.success());
    eventually(Duration::from_secs(30), "the job still runs", || {
        let stats = json(&format!("/api/cluster/jobs/{id}"));
        (stats["status"] != "Running").then_some(())
    });
}

/// What an executor's tasks spilled shows on the scheduler's Workers answer, and adds up to
/// what the job's stages spilled.
#[test]
fn the_workers_answer_says_what_each_executors_tasks_spilled() {
    let scheduler = processes::start(
        &["scheduler", "--bind", "127.0.0.1:0"],
        "listening on df://",
    );
    let addr = &scheduler.addr;
    let work = tempfile::tempdir().unwrap();
    let _executor = processes::start(
        &[
            "--memory-limit",
            "48M",
            "executor",
            "--scheduler",
            addr,
            "--bind",
            "127.0.0.1:0",
            "--work-dir",
            work.path().to_str().unwrap(),
        ],
        "serving shuffle data on ",
    );
    let json = |path: &str| -> serde_json::Value {
        serde_json::from_str(&processes::http_get(addr, path)).unwrap()
    };
    let workers = eventually(Duration::from_secs(60), "no executor", || {
        let workers = json("/api/workers");
        (workers["workers"].as_array().unwrap().len() == 1).then_some(workers)
    });
    assert_eq!(workers["workers"][0]["spilled_bytes"], 0, "{workers}");

    // A series alone runs in this process; a file goes to the cluster.
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("n.parquet");
    let copy = format!(
        "COPY (SELECT value FROM generate_series(1, 2000000)) TO '{}'",
        file.display()
    );
    let out = processes::strata(&["-q", "-c", &copy]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sql = format!("SELECT value FROM '{}' ORDER BY value DESC", file.display());
    let url = format!("df://{addr}");
    let out = processes::strata(&["-q", "--format", "csv", "--cluster", &url, "-c", &sql]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout.iter().filter(|&&b| b == b'\n').count(),
        2_000_001
    );

    let jobs = json("/api/cluster/jobs");
    let id = jobs[0]["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job: {jobs}"));
    let stats = json(&format!("/api/cluster/jobs/{id}"));
    let by_stages: u64 = stats["stage_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["spilled_bytes"].as_u64().unwrap())
        .sum();
    assert!(by_stages > 0, "the sort did not spill: {stats}");
    let workers = json("/api/workers");
    assert_eq!(
        workers["workers"][0]["spilled_bytes"].as_u64(),
        Some(by_stages),
        "{workers}"
    );
}

/// The dashboard a scheduler serves, in a real browser (tests/clients/dashboard_browser.py):
/// a finished job's page shows its stages and a task stream with a lane per executor, the
/// Workers page lists both executors, and one killed is marked dead.
#[test]
fn in_a_browser_a_cluster_job_shows_its_stages_and_executors_and_a_killed_one_dead() {
    if !browser::browser_or_skip(
        "in_a_browser_a_cluster_job_shows_its_stages_and_executors_and_a_killed_one_dead",
    ) {
        return;
    }
    let (scheduler, executors) = processes::cluster(2);
    let addr = &scheduler.addr;
    wait_for_executors(addr, 2);
    let sql = "SELECT registration_state, count(*) FROM violations GROUP BY 1 ORDER BY 2 DESC";
    let done = processes::strata(&["-q", "--cluster", &format!("df://{addr}"), "-c", sql]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let jobs: serde_json::Value =
        serde_json::from_str(&processes::http_get(addr, "/api/cluster/jobs")).unwrap();
    let job = jobs[0]["job_id"].as_str().unwrap();
    let stats: serde_json::Value = serde_json::from_str(&processes::http_get(
        addr,
        &format!("/api/cluster/jobs/{job}"),
    ))
    .unwrap();
    let stages = stats["stage_list"].as_array().unwrap().len();
    assert!(stages >= 2, "{stats}");
    let output = browser::scenarios(
        "cluster",
        &format!("http://{addr}"),
        &[
            job.to_string(),
            stages.to_string(),
            executors[0].pid().to_string(),
        ],
    )
    .output()
    .expect("run the browser scenarios");
    browser::check(&output, &["jobs", "job", "workers-alive", "workers-dead"]);
}

/// `POST path` on `addr`, with the dashboard's action header or without; the whole answer.
fn http_post(addr: &str, path: &str, action: bool) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let header = if action {
        "x-strata-dashboard: cancel\r\n"
    } else {
        ""
    };
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{header}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// A scheduler other machines can reach serves no dashboard unless users sign in, and says
/// so when it starts.
#[test]
fn a_scheduler_off_loopback_serves_no_dashboard_without_users() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["scheduler", "--bind", "0.0.0.0:0"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.contains("listening on df://0.0.0.0:"), "{first}");
    assert!(
        second.contains("no dashboard") && second.contains("--users FILE"),
        "{second}"
    );
}
