//! The h2o.ai db-benchmark on Strata: the 10 groupby and 5 join questions over generated data
//! (`benches/h2o/groupby.sql`, `benches/h2o/join.sql`).
//!
//! ```text
//! cargo bench --bench h2o -- gen [--rows 10000000]
//! cargo bench --bench h2o -- run [--rows 10000000] [--runs 3] [--only groupby|join]
//! cargo bench --bench h2o -- serve --only groupby|join   (for benches/side_by_side.py)
//! ```
//!
//! Data follows the benchmark's generator in shape: for groupby, `id1`/`id2` strings with 100
//! values, `id3` strings with rows/100 values, `id4`/`id5`/`id6` the same as integers, `v1` in
//! 1..5, `v2` in 1..15, `v3` a float in [0, 100); for join, `x` against `small` (rows/1e6),
//! `medium` (rows/1e3) and `big` (rows) tables on keys of which about 90% match.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use common::Rng;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use strata::datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use strata::datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use strata::datafusion::arrow::record_batch::RecordBatch;
use strata::{DatasetSpec, Engine};

#[derive(Parser)]
struct Args {
    /// gen, run or serve (questions by number, see `common::serve`).
    command: String,
    /// Rows of the main table.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Folder of the data (default: bench-data/h2o-<rows>).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Timed runs after the first.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Only `groupby` or `join` (for serve: the suite served).
    #[arg(long)]
    only: Option<String>,
    #[arg(long)]
    threads: Option<usize>,
}

const FILES: u64 = 4;
const BATCH: u64 = 1 << 20;

/// One value of a generated row.
enum Val {
    Int(u64),
    Text(String),
    Float(f64),
}

/// A column being filled; its type follows the values pushed into it.
enum Col {
    Int(Vec<i64>),
    Text(Vec<String>),
    Float(Vec<f64>),
}

impl Col {
    fn for_value(v: &Val) -> Col {
        match v {
            Val::Int(_) => Col::Int(Vec::new()),
            Val::Text(_) => Col::Text(Vec::new()),
            Val::Float(_) => Col::Float(Vec::new()),
        }
    }

    fn push(&mut self, v: Val) {
        match (self, v) {
            (Col::Int(c), Val::Int(x)) => c.push(x as i64),
            (Col::Text(c), Val::Text(x)) => c.push(x),
            (Col::Float(c), Val::Float(x)) => c.push(x),
            _ => panic!("a row's values must keep their column's type"),
        }
    }

    fn array(self) -> (DataType, ArrayRef) {
        match self {
            Col::Int(v) => (DataType::Int64, Arc::new(Int64Array::from(v))),
            Col::Text(v) => (DataType::Utf8, Arc::new(StringArray::from(v))),
            Col::Float(v) => (DataType::Float64, Arc::new(Float64Array::from(v))),
        }
    }
}

/// A value column: a float in [0, 100) with 6 decimals.
fn amount(rng: &mut Rng) -> Val {
    Val::Float((rng.unit() * 100.0 * 1e6).round() / 1e6)
}

/// Write `rows` rows made by `make` (row number to values, one per column of `names`) as
/// `FILES` Parquet files.
fn write_table(dir: &Path, names: &[&str], rows: u64, mut make: impl FnMut(u64) -> Vec<Val>) {
    std::fs::create_dir_all(dir).expect("folder");
    let per_file = rows.div_ceil(FILES).max(1);
    let mut next = 0u64;
    let mut file_no = 0;
    while next < rows {
        let end = (next + per_file).min(rows);
        let mut writer: Option<ArrowWriter<std::fs::File>> = None;
        let mut schema: Option<SchemaRef> = None;
        while next < end {
            let stop = (next + BATCH).min(end);
            let mut cols: Vec<Col> = Vec::new();
            for i in next..stop {
                let row = make(i);
                if cols.is_empty() {
                    cols = row.iter().map(Col::for_value).collect();
                }
                for (c, v) in cols.iter_mut().zip(row) {
                    c.push(v);
                }
            }
            let (types, arrays): (Vec<DataType>, Vec<ArrayRef>) =
                cols.into_iter().map(Col::array).unzip();
            let s = schema.get_or_insert_with(|| {
                Arc::new(Schema::new(
                    names
                        .iter()
                        .zip(&types)
                        .map(|(n, t)| Field::new(*n, t.clone(), false))
                        .collect::<Vec<_>>(),
                ))
            });
            let batch = RecordBatch::try_new(s.clone(), arrays).expect("batch");
            let w = writer.get_or_insert_with(|| {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                let f = std::fs::File::create(dir.join(format!("part-{file_no}.parquet")))
                    .expect("file");
                ArrowWriter::try_new(f, s.clone(), Some(props)).expect("writer")
            });
            w.write(&batch).expect("write");
            next = stop;
        }
        if let Some(w) = writer {
            w.close().expect("close");
        }
        file_no += 1;
    }
}

fn generate(dir: &Path, n: u64) {
    let stamp = dir.join("GENERATED");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == format!("{n}\n")) {
        return;
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).expect("clean");
    }
    let id = |v: u64| Val::Text(format!("id{v}"));
    // groupby: x
    let k = 100u64;
    let mut rng = Rng::new(1);
    write_table(
        &dir.join("groupby/x"),
        &["id1", "id2", "id3", "id4", "id5", "id6", "v1", "v2", "v3"],
        n,
        |_| {
            vec![
                Val::Text(format!("id{:03}", rng.pick(k))),
                Val::Text(format!("id{:03}", rng.pick(k))),
                Val::Text(format!("id{:010}", rng.pick(n / k))),
                Val::Int(rng.pick(k)),
                Val::Int(rng.pick(k)),
                Val::Int(rng.pick(n / k)),
                Val::Int(rng.pick(5)),
                Val::Int(rng.pick(15)),
                amount(&mut rng),
            ]
        },
    );
    // join: keys of x match about 90% of the time (the rest fall outside the others' ranges).
    let (k1, k2, k3) = ((n / 1_000_000).max(1), (n / 1_000).max(1), n);
    let miss = |rng: &mut Rng, k: u64| rng.pick(k + k / 9);
    let mut rng = Rng::new(2);
    write_table(
        &dir.join("join/x"),
        &["id1", "id2", "id3", "id4", "id5", "id6", "v1"],
        n,
        |_| {
            let (a, b, d) = (miss(&mut rng, k1), miss(&mut rng, k2), miss(&mut rng, k3));
            let v1 = amount(&mut rng);
            vec![
                Val::Int(a),
                Val::Int(b),
                Val::Int(d),
                id(a),
                id(b),
                id(d),
                v1,
            ]
        },
    );
    let mut rng = Rng::new(3);
    write_table(&dir.join("join/small"), &["id1", "id4", "v2"], k1, |i| {
        vec![Val::Int(i + 1), id(i + 1), amount(&mut rng)]
    });
    let mut rng = Rng::new(4);
    write_table(
        &dir.join("join/medium"),
        &["id1", "id2", "id4", "id5", "v2"],
        k2,
        |i| {
            let a = rng.pick(k1);
            let v2 = amount(&mut rng);
            vec![Val::Int(a), Val::Int(i + 1), id(a), id(i + 1), v2]
        },
    );
    let mut rng = Rng::new(5);
    write_table(
        &dir.join("join/big"),
        &["id1", "id2", "id3", "id4", "id5", "id6", "v2"],
        k3,
        |i| {
            let (a, b) = (rng.pick(k1), rng.pick(k2));
            let v2 = amount(&mut rng);
            vec![
                Val::Int(a),
                Val::Int(b),
                Val::Int(i + 1),
                id(a),
                id(b),
                id(i + 1),
                v2,
            ]
        },
    );
    std::fs::write(stamp, format!("{n}\n")).expect("stamp");
}

/// The tables of a suite.
fn tables(suite: &str) -> &'static [&'static str] {
    match suite {
        "groupby" => &["x"],
        "join" => &["x", "small", "medium", "big"],
        other => panic!("unknown suite {other}; use groupby or join"),
    }
}

/// An engine with the tables of `suite` registered.
async fn suite_engine(dir: &Path, suite: &str, args: &Args) -> Engine {
    let mut b = Engine::builder();
    if let Some(t) = args.threads {
        b = b.threads(t);
    }
    let engine = b.build().await.expect("engine");
    for t in tables(suite) {
        let loc = format!("{}/", dir.join(suite).join(t).display());
        engine
            .register(t, DatasetSpec::new(loc))
            .await
            .expect("table");
    }
    engine
}

/// The questions of a suite.
fn questions(suite: &str) -> Vec<String> {
    common::statements(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("benches/h2o/{suite}.sql")),
    )
}

async fn run_suite(dir: &Path, suite: &str, args: &Args) {
    let engine = suite_engine(dir, suite, args).await;
    for (i, sql) in questions(suite).iter().enumerate() {
        common::reset_peak();
        let (first, rows) = common::time_query(&engine, sql).await;
        let mut times: Vec<Duration> = Vec::new();
        for _ in 0..args.runs {
            times.push(common::time_query(&engine, sql).await.0);
        }
        let (median, min) = common::median_min(if times.is_empty() { vec![first] } else { times });
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{suite:>7} q{:<2} {:>10.1} {:>10.1} {:>10.1} {:>10} {:>9.1}",
            i + 1,
            ms(first),
            ms(min),
            ms(median),
            rows,
            common::peak_rss().unwrap_or(0) as f64 / (1 << 20) as f64
        );
    }
}

fn check_data(dir: &Path) {
    assert!(
        dir.join("GENERATED").exists(),
        "no data in {}: run `cargo bench --bench h2o -- gen` first",
        dir.display()
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

fn main() {
    strata::allocator::keep_freed_memory_a_while();
    let args = Args::parse_from(std::env::args().filter(|a| a != "--bench"));
    let dir = args.dir.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("bench-data")
            .join(format!("h2o-{}", args.rows))
    });
    match args.command.as_str() {
        "gen" => generate(&dir, args.rows),
        "run" => {
            check_data(&dir);
            println!(
                "{:>11} {:>10} {:>10} {:>10} {:>10} {:>9}",
                "question", "first ms", "min ms", "median ms", "rows", "peak MiB"
            );
            runtime().block_on(async {
                if args.only.as_deref() != Some("join") {
                    run_suite(&dir, "groupby", &args).await;
                }
                if args.only.as_deref() != Some("groupby") {
                    run_suite(&dir, "join", &args).await;
                }
            });
        }
        "serve" => {
            check_data(&dir);
            let suite = args
                .only
                .as_deref()
                .expect("serve needs --only groupby|join");
            let questions = questions(suite);
            runtime().block_on(async {
                let engine = suite_engine(&dir, suite, &args).await;
                common::serve(&engine, common::by_number(&questions)).await;
            });
        }
        other => panic!("unknown command {other}; use gen, run or serve"),
    }
}
