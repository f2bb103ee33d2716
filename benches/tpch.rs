//! TPC-H on Strata: generate the data, run the 22 queries, report per-query times and peak
//! memory.
//!
//! ```text
//! cargo bench --bench tpch -- gen --scale 1 --parts 4 [--csv]
//! cargo bench --bench tpch -- run --scale 1 [--format csv] [--runs 5] [--queries 1,6]
//!     [--threads N] [--memory-limit 512M] [--set key=value]... [--cluster df://HOST:PORT]
//!     [--json out.json]
//! cargo bench --bench tpch -- serve --scale 1      (for benches/compare.py)
//! ```
//!
//! `run` prints, per query, the first (cold) run, then the minimum and median of `--runs`
//! further runs, the rows returned and the process's peak resident memory during the query.

#[path = "common/mod.rs"]
mod common;
#[path = "tpch/data.rs"]
mod data;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use strata::{DatasetSpec, Engine};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct DataArgs {
    /// Scale factor (1 = about 1 GB of CSV).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Folder of the data (default: bench-data/tpch-sf<scale>).
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl DataArgs {
    fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("bench-data")
                .join(format!("tpch-sf{}", self.scale))
        })
    }
}

#[derive(clap::Args, Clone)]
struct EngineArgs {
    /// parquet or csv.
    #[arg(long, default_value = "parquet")]
    format: String,
    #[arg(long)]
    threads: Option<usize>,
    /// e.g. 512M.
    #[arg(long)]
    memory_limit: Option<String>,
    /// Any engine setting, `key=value` (repeatable).
    #[arg(long = "set")]
    settings: Vec<String>,
    /// Run the queries on this cluster (`df://HOST:PORT` or `local:N`).
    #[arg(long)]
    cluster: Option<String>,
    /// Serve the engine's dashboard on this address (`HOST:PORT`, port 0 for a free one);
    /// its URL is printed on stderr as `dashboard: URL`.
    #[arg(long)]
    dashboard: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the data.
    Gen {
        #[command(flatten)]
        data: DataArgs,
        /// Files per large table.
        #[arg(long, default_value_t = 4)]
        parts: usize,
        /// Also write CSV.
        #[arg(long)]
        csv: bool,
    },
    /// Run the queries and report.
    Run {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        engine: EngineArgs,
        /// Timed runs after the first.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Query numbers, e.g. 1,6,18 (default: all 22).
        #[arg(long, value_delimiter = ',')]
        queries: Vec<usize>,
        /// Write the measurements to this JSON file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Read `qNN OUTPUT` lines on stdin; run each query once and write its answer (see
    /// `common::serve`; one engine for the whole session).
    Serve {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        engine: EngineArgs,
    },
}

async fn engine(data: &DataArgs, args: &EngineArgs) -> Engine {
    let mut b = Engine::builder();
    if let Some(n) = args.threads {
        b = b.threads(n);
    }
    if let Some(m) = &args.memory_limit {
        b = b.memory_limit(strata::engine::parse_size(m).expect("a size such as 512M"));
    }
    // Runtime settings (`datafusion.runtime.*`) are set by statement once the engine runs.
    let (runtime, settings): (Vec<&String>, Vec<&String>) = args
        .settings
        .iter()
        .partition(|s| s.starts_with("datafusion.runtime."));
    for s in settings {
        let (k, v) = s.split_once('=').expect("--set key=value");
        b = b.setting(k, v);
    }
    if let Some(url) = &args.cluster {
        b = b.cluster(url.as_str());
    }
    let engine = b.build().await.expect("engine");
    for s in runtime {
        let (k, v) = s.split_once('=').expect("--set key=value");
        let mut set = engine
            .sql(&format!("SET {k} = '{v}'"))
            .await
            .expect("runtime setting");
        set.collect().await.expect("runtime setting");
    }
    for table in data::TABLES {
        let dir = data::table_dir(&data.dir(), &args.format, table);
        assert!(
            dir.is_dir(),
            "{} is missing: run `cargo bench --bench tpch -- gen` first",
            dir.display()
        );
        let mut spec = DatasetSpec::new(format!("{}/", dir.display()));
        if args.format == "csv" {
            spec = spec.option("format", "csv").expect("format");
        }
        engine.register(table, spec).await.expect("table");
    }
    engine
}

/// The query files, by number.
pub fn query(n: usize) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("benches/tpch/q{n:02}.sql"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn main() {
    strata::allocator::keep_freed_memory_a_while();
    let args = Args::parse_from(std::env::args().filter(|a| a != "--bench"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    match args.command {
        Command::Gen { data, parts, csv } => {
            let start = Instant::now();
            data::generate(&data.dir(), data.scale, parts, csv).expect("generate");
            eprintln!(
                "TPC-H SF{} in {} ({:.1} s)",
                data.scale,
                data.dir().display(),
                start.elapsed().as_secs_f64()
            );
        }
        Command::Run {
            data,
            engine: eargs,
            runs,
            queries,
            json,
        } => rt.block_on(async {
            let engine = engine(&data, &eargs).await;
            let queries = if queries.is_empty() {
                (1..=22).collect()
            } else {
                queries
            };
            let mut records = Vec::new();
            println!(
                "{:>5} {:>10} {:>10} {:>10} {:>8} {:>10}",
                "query", "first ms", "min ms", "median ms", "rows", "peak MiB"
            );
            for q in queries {
                let sql = query(q);
                common::reset_peak();
                let (first, rows) = common::time_query(&engine, &sql).await;
                let mut times = Vec::new();
                for _ in 0..runs {
                    times.push(common::time_query(&engine, &sql).await.0);
                }
                let peak = common::peak_rss().unwrap_or(0);
                times.sort();
                let min = times.first().copied().unwrap_or(first);
                let median = times.get(times.len() / 2).copied().unwrap_or(first);
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                println!(
                    "{:>5} {:>10.1} {:>10.1} {:>10.1} {:>8} {:>10.1}",
                    format!("q{q:02}"),
                    ms(first),
                    ms(min),
                    ms(median),
                    rows,
                    peak as f64 / (1 << 20) as f64
                );
                records.push(format!(
                    "{{\"query\":\"q{q:02}\",\"first_ms\":{:.3},\"min_ms\":{:.3},\"median_ms\":{:.3},\"rows\":{rows},\"peak_rss_bytes\":{peak}}}",
                    ms(first),
                    ms(min),
                    ms(median)
                ));
            }
            if let Some(path) = json {
                let body = format!(
                    "{{\"engine\":\"strata\",\"scale\":{},\"format\":\"{}\",\"runs\":{runs},\"queries\":[\n  {}\n]}}\n",
                    data.scale,
                    eargs.format,
                    records.join(",\n  ")
                );
                std::fs::write(&path, body).expect("json");
            }
        }),
        Command::Serve {
            data,
            engine: eargs,
        } => rt.block_on(async {
            let engine = engine(&data, &eargs).await;
            let _dashboard = match &eargs.dashboard {
                Some(address) => {
                    let serving = strata::dashboard::Dashboard::new(engine.new_session())
                        .serve(address)
                        .await
                        .expect("dashboard");
                    eprintln!("dashboard: {}", serving.url());
                    Some(serving)
                }
                None => None,
            };
            let number = |name: &str| name.strip_prefix('q')?.parse::<usize>().ok();
            common::serve(&engine, |name| number(name).filter(|n| (1..=22).contains(n)).map(query)).await;
        }),
    }
}
