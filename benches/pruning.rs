//! Partition pruning over many files: a hive-partitioned dataset of one Parquet file per day
//! for three years (1,096 files), queried with and without a WHERE on the partition column.
//!
//! ```text
//! cargo bench --bench pruning [-- --runs 5]
//! cargo bench --bench pruning -- gen        (only write the data)
//! cargo bench --bench pruning -- serve      (for benches/side_by_side.py)
//! ```
//!
//! The questions are in `benches/pruning/queries.sql`. Prints, per query, the files the scan
//! planned (after pruning), the median time, and the ratio to the full scan; all measured side
//! by side in one run.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::Rng;
use parquet::arrow::ArrowWriter;
use strata::datafusion::arrow::array::{Float64Array, Int64Array};
use strata::datafusion::arrow::datatypes::{DataType, Field, Schema};
use strata::datafusion::arrow::record_batch::RecordBatch;
use strata::{DatasetSpec, Engine};

const DAYS: u64 = 1096;
const ROWS_PER_FILE: usize = 2_000;

/// The questions, with their titles.
fn queries() -> Vec<(String, String)> {
    common::titled_statements(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pruning/queries.sql"),
    )
}

fn generate(dir: &Path) {
    let stamp = dir.with_extension("generated");
    if stamp.exists() {
        return;
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    let start = chrono::NaiveDate::from_ymd_opt(2022, 1, 1).expect("date");
    let mut rng = Rng::new(7);
    for d in 0..DAYS {
        let day = start + chrono::Days::new(d);
        let folder = dir.join(format!("day={day}"));
        std::fs::create_dir_all(&folder).expect("folder");
        let users: Vec<i64> = (0..ROWS_PER_FILE).map(|_| rng.pick(1000) as i64).collect();
        let amounts: Vec<f64> = (0..ROWS_PER_FILE).map(|_| rng.unit() * 100.0).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(users)),
                Arc::new(Float64Array::from(amounts)),
            ],
        )
        .expect("batch");
        let f = std::fs::File::create(folder.join("part-0.parquet")).expect("file");
        let mut w = ArrowWriter::try_new(f, schema.clone(), None).expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
    }
    std::fs::write(stamp, "ok\n").expect("stamp");
}

fn main() {
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-data/pruning-days");
    generate(&dir);
    if std::env::args().any(|a| a == "gen") {
        return;
    }
    let queries = queries();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let engine = Engine::builder().build().await.expect("engine");
        engine
            .register("events", DatasetSpec::new(format!("{}/", dir.display())))
            .await
            .expect("table");
        if std::env::args().any(|a| a == "serve") {
            let sqls: Vec<String> = queries.iter().map(|(_, sql)| sql.clone()).collect();
            common::serve(&engine, common::by_number(&sqls)).await;
            return;
        }
        // Interleave the queries so machine noise hits them alike.
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); queries.len()];
        let mut files = vec![0; queries.len()];
        for run in 0..=runs {
            for (i, (_, sql)) in queries.iter().enumerate() {
                let start = std::time::Instant::now();
                let mut r = engine.sql(sql).await.expect("query");
                r.collect().await.expect("rows");
                if run > 0 {
                    times[i].push(start.elapsed());
                }
                files[i] = r.scan_stats().files;
            }
        }
        let medians: Vec<Duration> = times.into_iter().map(|t| common::median_min(t).0).collect();
        println!("{DAYS} files, {ROWS_PER_FILE} rows each; median of {runs} runs");
        for (i, (name, _)) in queries.iter().enumerate() {
            println!(
                "{name:>22}: {:>5} files planned, median {:>8.2} ms ({:.3}x the full scan)",
                files[i],
                medians[i].as_secs_f64() * 1e3,
                medians[i].as_secs_f64() / medians[0].as_secs_f64()
            );
        }
    });
}
