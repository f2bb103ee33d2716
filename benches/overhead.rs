//! The fixed cost of a query on a cluster: `SELECT 1`, a count over a tiny table and a small
//! group by, run locally, on a cluster inside this process (`local:2`) and on a scheduler and
//! two executor processes on loopback (tasks pushed, and tasks pulled), interleaved in one
//! run.
//!
//! `cargo bench --bench overhead` prints the median and minimum per query and place, and the
//! median's excess over local execution.

#[path = "common/processes.rs"]
#[allow(dead_code)]
mod processes;

use std::time::{Duration, Instant};

use strata::Engine;

const QUERIES: &[(&str, &str)] = &[
    ("select 1", "SELECT 1"),
    ("tiny scan", "SELECT count(*) FROM people"),
    (
        "group by",
        "SELECT registration_state, count(*) FROM violations GROUP BY 1 ORDER BY 2 DESC LIMIT 3",
    ),
];

async fn engine(cluster: Option<&str>) -> Engine {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut builder = Engine::builder().catalog(format!("{root}/strata.toml"));
    if let Some(url) = cluster {
        builder = builder.cluster(url);
    }
    builder.build().await.expect("engine")
}

async fn time(engine: &Engine, sql: &str) -> Duration {
    let start = Instant::now();
    let mut result = engine.sql(sql).await.expect("query plans");
    result.collect().await.expect("query runs");
    start.elapsed()
}

fn main() {
    let runs: usize = std::env::var("STRATA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let (push, _push_executors) = processes::cluster_scheduling(2, "push");
    let (pull, _pull_executors) = processes::cluster_scheduling(2, "pull");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let push_url = format!("df://{}", push.addr);
        let pull_url = format!("df://{}", pull.addr);
        let places = [
            ("local", engine(None).await),
            ("local:2", engine(Some("local:2")).await),
            ("push", engine(Some(&push_url)).await),
            ("pull", engine(Some(&pull_url)).await),
        ];
        // Once each to warm up connections and caches.
        for (_, engine) in &places {
            for (_, sql) in QUERIES {
                time(engine, sql).await;
            }
        }
        let mut times = vec![vec![Vec::new(); places.len()]; QUERIES.len()];
        for _ in 0..runs {
            for (q, (_, sql)) in QUERIES.iter().enumerate() {
                for (p, (_, engine)) in places.iter().enumerate() {
                    times[q][p].push(time(engine, sql).await);
                }
            }
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!("{runs} runs each, interleaved; milliseconds");
        println!(
            "{:<10} {:<10} {:>8} {:>8} {:>14}",
            "query", "where", "median", "min", "over local"
        );
        for (q, (name, _)) in QUERIES.iter().enumerate() {
            let mut local_median = Duration::ZERO;
            for (p, (place, _)) in places.iter().enumerate() {
                let t = &mut times[q][p];
                t.sort();
                let median = t[t.len() / 2];
                if p == 0 {
                    local_median = median;
                }
                println!(
                    "{name:<10} {place:<10} {:>8.1} {:>8.1} {:>+14.1}",
                    ms(median),
                    ms(t[0]),
                    ms(median) - ms(local_median)
                );
            }
        }
    });
}
