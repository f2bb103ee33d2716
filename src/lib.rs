//! Strata: a SQL query engine over partitioned datasets, built on Apache DataFusion.
//!
//! Register datasets — files, directories, globs or URLs in Parquet, CSV, JSON, Arrow IPC
//! or Avro, with hive-style partitions — and query them with SQL:
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> strata::Result<()> {
//! use strata::{DatasetSpec, Engine};
//!
//! let engine = Engine::builder().threads(4).catalog("strata.toml").build().await?;
//! // A file, directory, glob or URL (`s3://bucket/trips/**/*.parquet`) is a dataset.
//! engine
//!     .register("tickets", DatasetSpec::new("data/violations/**/*.parquet"))
//!     .await?;
//! let mut result = engine.sql("SELECT count(*) FROM tickets WHERE year = 2024").await?;
//! while let Some(batch) = result.next_batch().await {
//!     println!("{} rows", batch?.num_rows());
//! }
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod allocator;
pub mod arithmetic;
pub mod casts;
/// The catalog file: datasets and stores declared in TOML.
pub mod catalog;
pub mod cluster;
/// Confinement: the files and stores a confined engine may read and write.
pub mod confine;
pub mod dashboard;
pub mod databases;
/// Datasets: locations, formats, options, hive partitions, listing tables.
pub mod dataset;
/// The embeddable engine and query results.
pub mod engine;
/// The library's error type.
pub mod error;
/// Table functions: `read_*`, `list_files`, `parquet_metadata`.
pub mod functions;
/// Entry points for fuzzing every input a user controls.
pub mod fuzzing;
pub mod inlists;
pub mod join_keys;
pub mod monitor;
pub mod optimizer;
/// Result formats written to any `Write`, and sizes and counts as people read them.
pub mod output;
pub mod plan_graph;
pub mod query_memory;
/// The execution seam: local and (later) distributed runners.
pub mod runner;
mod schema;
pub mod server;
pub mod snapshot;
/// SQL text handling before planning.
pub mod sql;
/// Object stores built on demand from URLs and settings.
pub mod store;
pub mod subquery;
#[cfg(test)]
mod testing;
pub mod types;
pub mod write;

pub use catalog::Catalog;
pub use dataset::{DatasetOptions, DatasetSpec, Format};
pub use engine::{
    CancelHandle, Description, Engine, EngineBuilder, Progress, QueryResult, ScanStats,
};
pub use error::{Error, Result};
pub use runner::{LocalRunner, Runner};

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Re-exported so embedders use the same Arrow and DataFusion versions.
pub use datafusion;
