//! What the database tests share: an engine, a statement's answer as text or its one-line
//! error, and the `strata` binary run from the repository's folder with no password in its
//! environment.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use strata::Engine;
use strata::datafusion::arrow::util::pretty::pretty_format_batches;

/// The repository's folder.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An engine at two target partitions, without a catalog.
pub async fn engine() -> Engine {
    Engine::builder()
        .target_partitions(2)
        .build()
        .await
        .expect("an engine")
}

/// The answer as a table of text, rows in the order given.
pub async fn answer(engine: &Engine, sql: &str) -> String {
    let batches = engine
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pretty_format_batches(&batches).unwrap().to_string()
}

/// The error of `sql`, which must be one line.
pub async fn failure(engine: &Engine, sql: &str) -> String {
    let e = match engine.sql(sql).await {
        Ok(mut r) => r.collect().await.expect_err(sql),
        Err(e) => e,
    };
    let text = e.to_string();
    assert!(!text.contains('\n'), "one line: {text}");
    text
}

/// `strata ARGS` run in the repository's folder, with `env` set and no PostgreSQL password
/// variables.
pub fn strata(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.args(args).current_dir(root());
    cmd.env_remove("PGPASSWORD").env_remove("PGPASSFILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("strata runs")
}
