//! Scan benchmark on the sample data: the same aggregate over every file, over one partition
//! (pruned by directory), and over the gzip CSV copy, timed side by side in one run.
//!
//! `cargo bench --bench scan` prints the median of N runs per query and the ratios.

use std::time::{Duration, Instant};

use strata::Engine;

const QUERIES: &[(&str, &str)] = &[
    ("all files", "SELECT sum(length(plate_id)) FROM violations"),
    (
        "one partition",
        "SELECT sum(length(plate_id)) FROM violations WHERE year = 2024 AND month = 7",
    ),
    (
        "gzip csv",
        "SELECT sum(length(plate_id)) FROM violations_csv",
    ),
];

fn main() {
    let runs: usize = std::env::var("STRATA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let root = env!("CARGO_MANIFEST_DIR");
        let engine = Engine::builder()
            .catalog(format!("{root}/strata.toml"))
            .build()
            .await
            .expect("engine");
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); QUERIES.len()];
        // Interleave the queries so machine noise hits them alike.
        for _ in 0..runs {
            for (i, (_, sql)) in QUERIES.iter().enumerate() {
                let start = Instant::now();
                let mut r = engine.sql(sql).await.expect("query");
                r.collect().await.expect("results");
                times[i].push(start.elapsed());
            }
        }
        let medians: Vec<Duration> = times
            .iter_mut()
            .map(|t| {
                t.sort();
                t[t.len() / 2]
            })
            .collect();
        for ((name, _), m) in QUERIES.iter().zip(&medians) {
            println!(
                "{name:>14}: median {:>8.3} ms over {runs} runs ({:.2}x all files)",
                m.as_secs_f64() * 1e3,
                m.as_secs_f64() / medians[0].as_secs_f64()
            );
        }
    });
}
