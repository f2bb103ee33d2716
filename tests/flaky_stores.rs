//! Reads from a store that fails some requests (503s, connections reset, bodies cut short)
//! retry and give the right answer; a store that never answers or always cuts its answers
//! short fails the query with one line naming the URL, within the configured timeout.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use strata::Engine;
use strata::datafusion::arrow::array::AsArray;
use strata::datafusion::arrow::datatypes::Int64Type;

#[path = "common/file_server.rs"]
mod file_server;
use file_server::{Fault, serve_files};

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

async fn engine(timeout: Duration) -> Engine {
    Engine::builder()
        .store_timeout(timeout)
        .build()
        .await
        .unwrap()
}

async fn count(engine: &Engine, sql: &str) -> strata::Result<i64> {
    let batches = engine.sql(sql).await?.collect().await?;
    Ok(batches[0].column(0).as_primitive::<Int64Type>().value(0))
}

/// Every format, each read through the faulty server, must give the right count.
async fn answers_through(fault: Fault) {
    let server = serve_files(data(), fault).await;
    let base = format!("http://127.0.0.1:{}", server.port);
    let engine = engine(Duration::from_secs(10)).await;
    for (sql, expected) in [
        (
            format!("SELECT count(*) FROM '{base}/violations/year=2023/month=1/part-0.parquet'"),
            176,
        ),
        (
            format!("SELECT count(*) FROM read_csv('{base}/people/people-1.csv')"),
            40,
        ),
        (
            format!("SELECT count(*) FROM read_json('{base}/events/events-0.ndjson')"),
            100,
        ),
        (
            format!("SELECT count(*) FROM '{base}/formats/violations_2023_01.arrow'"),
            176,
        ),
    ] {
        match count(&engine, &sql).await {
            Ok(n) => assert_eq!(n, expected, "{fault:?}: {sql}"),
            Err(e) => panic!("{fault:?}: {sql}: {e}"),
        }
    }
    assert!(server.requests.load(Ordering::SeqCst) > 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried() {
    answers_through(Fault::Unavailable).await;
    answers_through(Fault::Reset).await;
    answers_through(Fault::Truncate).await;
}

/// The one-line error a query through `fault` gives, and how long it took.
async fn failure(fault: Fault, timeout: Duration) -> (String, String, Duration) {
    let server = serve_files(data(), fault).await;
    let url = format!("http://127.0.0.1:{}/people/people-1.csv", server.port);
    let engine = engine(timeout).await;
    let started = Instant::now();
    let err = count(&engine, &format!("SELECT count(*) FROM read_csv('{url}')"))
        .await
        .expect_err("the query must fail");
    let took = started.elapsed();
    eprintln!("{fault:?}: {err} (after {took:?})");
    (err.to_string(), url, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_never_answers_fails_with_the_url() {
    let (message, url, took) = failure(Fault::Stall, Duration::from_secs(1)).await;
    assert!(!message.contains('\n'), "{message}");
    assert!(message.contains(&url), "{message}");
    // The timeout bounds the whole read, retries included (with room for a slow machine).
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_always_cut_short_fail_with_the_url() {
    let (message, url, _) = failure(Fault::TruncateAlways, Duration::from_secs(5)).await;
    assert!(!message.contains('\n'), "{message}");
    assert!(message.contains(&url), "{message}");
}
