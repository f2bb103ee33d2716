//! Embedding Strata in a Rust program: build an engine from the sample catalog, register one
//! more dataset from a glob, run SQL and stream the result batches.
//!
//! Run from the repository root: `cargo run --example embed`

use strata::datafusion::arrow::util::pretty::pretty_format_batches;
use strata::{DatasetSpec, Engine};

#[tokio::main]
async fn main() -> strata::Result<()> {
    let engine = Engine::builder()
        .threads(2)
        .memory_limit(256 << 20)
        .catalog("strata.toml")
        .build()
        .await?;

    // Any file, directory, glob or URL can become a table; options are inferred.
    engine
        .register(
            "people_2",
            DatasetSpec::new("data/people/people-2.csv").option("header", "true")?,
        )
        .await?;

    let mut result = engine
        .sql(
            "SELECT registration_state, count(*) AS violations
             FROM violations
             WHERE year = 2024 AND month BETWEEN 6 AND 8
             GROUP BY registration_state
             ORDER BY violations DESC
             LIMIT 5",
        )
        .await?;
    let mut batches = Vec::new();
    while let Some(batch) = result.next_batch().await {
        batches.push(batch?);
    }
    println!("{}", pretty_format_batches(&batches).expect("printable"));
    let stats = result.scan_stats();
    println!(
        "scanned {} of the dataset's files ({} bytes read)",
        stats.files, stats.bytes_scanned
    );

    let people = engine
        .sql("SELECT count(*) AS n FROM people_2")
        .await?
        .collect()
        .await?;
    println!("{}", pretty_format_batches(&people).expect("printable"));
    Ok(())
}
