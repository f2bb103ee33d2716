//! Runs every `sql-tests/*.slt` file through Strata's engine with sqllogictest: a fresh engine
//! (with the repository's `strata.toml`) and scratch folder per file, once at 1 and once at 4
//! target partitions, so results must not depend on parallelism, and once on a cluster started
//! for the file (one scheduler, two executors, every shuffle read remotely), leaving out only
//! the records `sql-tests/cluster-differences.md` lists.
//!
//! `cargo test --test sql-tests -- FILTER` runs only files whose name contains FILTER;
//! `cargo test --test sql-tests -- --complete [FILTER]` rewrites expected results (review the diff).
//! `cargo test --test sql-tests -- --memory-limit 16M [FILTER]` runs the files locally under
//! that memory limit (spilling to the scratch folder): every record must give its answer, or
//! fail with the one-line out-of-memory error naming the operator that could not spill.
//! In SQL, `__SCRATCH__` stands for the file's scratch folder and `__TPCH__` for TPC-H data
//! at scale factor 0.01 (generated once into `sql-tests/scratch/`); a record whose SQL is
//! `INCLUDE 'path'` runs the SQL in that file (so the benchmark queries are tested as they are).
//! `__POSTGRES__`, `__MYSQL__` and `__SQLITE__` stand for the URL of a database made afresh
//! for each run of the file, holding what `sql-tests/fixtures/databases/<backend>.sql` makes
//! (PostgreSQL and MariaDB servers are started once, for the files that name them).

#[path = "../tests/common/databases.rs"]
mod databases;
#[path = "../benches/tpch/data.rs"]
mod tpch_data;

use std::path::PathBuf;
use std::time::Instant;

use async_trait::async_trait;
use sqllogictest::{DBOutput, DefaultColumnType};
use strata::Engine;
use strata::datafusion::arrow::array::{Array, AsArray};
use strata::datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};
use strata::datafusion::arrow::record_batch::RecordBatch;
use strata::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// How a file runs: locally at a number of target partitions, or on a cluster started in
/// this process (one scheduler, two executors on loopback, every shuffle read remotely).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Local(usize),
    Cluster,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Local(n) => write!(f, "{n} partitions"),
            Mode::Cluster => f.write_str("cluster"),
        }
    }
}

const MODES: [Mode; 3] = [Mode::Local(1), Mode::Local(4), Mode::Cluster];
const TPCH_SCALE: f64 = 0.01;

fn tpch_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("sql-tests/scratch/tpch-sf{TPCH_SCALE}"))
}

/// The SQL a record runs: placeholders filled in, `INCLUDE 'file'` replaced by the file.
fn expand(
    sql: &str,
    scratch: &std::path::Path,
    urls: &[(String, String)],
) -> Result<String, DbError> {
    let mut sql = sql
        .replace("__SCRATCH__", &scratch.display().to_string())
        .replace("__TPCH__", &tpch_dir().display().to_string());
    for (placeholder, url) in urls {
        sql = sql.replace(placeholder.as_str(), url);
    }
    match sql
        .trim()
        .strip_prefix("INCLUDE '")
        .and_then(|r| r.strip_suffix('\''))
    {
        Some(path) => std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path))
            .map_err(|e| DbError(format!("{path}: {e}"))),
        None => Ok(sql),
    }
}

struct StrataDb {
    engine: Engine,
    scratch: PathBuf,
    /// Database placeholders and the URLs they stand for in this run.
    urls: Vec<(String, String)>,
}

/// What a memory-limited run must see instead of an answer when a query cannot run in it.
const OUT_OF_MEMORY: &str = "out of memory: ";

#[derive(Debug)]
struct DbError(String);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DbError {}

#[async_trait]
impl sqllogictest::AsyncDB for StrataDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let sql = expand(sql, &self.scratch, &self.urls)?;
        let mut result = self.engine.sql(&sql).await.map_err(db_error)?;
        let batches = result.collect().await.map_err(db_error)?;
        let schema = result.schema();
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let is_count = schema.fields().len() == 1 && schema.field(0).name() == "count";
        let types = schema
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        let mut rows = Vec::new();
        for b in &batches {
            rows.extend(format_batch(b).map_err(DbError)?);
        }
        // A database's URL in an answer (EXPLAIN's scans show it without its options) as
        // the placeholder that named it.
        for cell in rows.iter_mut().flatten() {
            for (placeholder, url) in &self.urls {
                let shown = url.split('?').next().unwrap_or(url);
                if cell.contains(shown) {
                    *cell = cell.replace(shown, placeholder);
                }
            }
        }
        if is_count && !sql.trim_start().to_ascii_lowercase().starts_with("select") {
            // INSERT / COPY report a row count.
            let n = rows
                .first()
                .and_then(|r| r.first())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            return Ok(DBOutput::StatementComplete(n));
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "strata"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await
    }
}

fn db_error(e: strata::Error) -> DbError {
    let text = e.to_string();
    if matches!(e, strata::Error::ResourcesExhausted(_)) && text.contains('\n') {
        // Not the one line a user must see.
        return DbError(format!("out-of-memory error of several lines: {text}"));
    }
    DbError(text)
}

fn column_type(dt: &DataType) -> DefaultColumnType {
    match dt {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        // Whole numbers: a sum of BIGINT values (DECIMAL(38, 0), as PostgreSQL's numeric).
        | DataType::Decimal128(_, 0)
        | DataType::Decimal256(_, 0) => DefaultColumnType::Integer,
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => DefaultColumnType::FloatingPoint,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

/// Cells as text: NULL for nulls, (empty) for empty strings, floats to 12 significant digits
/// (so summation order across partitions cannot change the text).
fn format_batch(batch: &RecordBatch) -> Result<Vec<Vec<String>>, String> {
    let opts = FormatOptions::default().with_null("NULL");
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    for r in 0..batch.num_rows() {
        let mut row = Vec::with_capacity(batch.num_columns());
        for (c, col) in batch.columns().iter().enumerate() {
            let text = if col.is_null(r) {
                "NULL".to_string()
            } else {
                match col.data_type() {
                    DataType::Float64 => float(col.as_primitive::<Float64Type>().value(r)),
                    DataType::Float32 => float(col.as_primitive::<Float32Type>().value(r) as f64),
                    _ => formatters[c].value(r).to_string(),
                }
            };
            row.push(if text.is_empty() {
                "(empty)".to_string()
            } else {
                text
            });
        }
        // Multi-line cells (plans) become one row per line; continuation rows hold only the
        // cells that continue (sqllogictest joins cells with spaces, so blanks would show).
        let lines = row.iter().map(|c| c.lines().count()).max().unwrap_or(1);
        if lines <= 1 {
            rows.push(row);
        } else {
            for l in 0..lines {
                rows.push(
                    row.iter()
                        .filter_map(|c| {
                            if c.contains('\n') {
                                Some(c.lines().nth(l).unwrap_or("").trim_end().to_string())
                            } else {
                                (l == 0).then(|| c.clone())
                            }
                        })
                        .collect(),
                );
            }
        }
    }
    Ok(rows)
}

fn float(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == v.trunc() && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let digits = 12 - (v.abs().log10().floor() as i32 + 1);
    let s = format!("{:.*}", digits.clamp(0, 15) as usize, v);
    // Trailing zeros go only after a decimal point (1e17 is not "1").
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

async fn make_db(
    root: PathBuf,
    mode: Mode,
    scratch: PathBuf,
    memory: Option<usize>,
    urls: Vec<(String, String)>,
) -> Result<StrataDb, DbError> {
    let mut builder = Engine::builder()
        .catalog(root.join("strata.toml"))
        .store_timeout(std::time::Duration::from_secs(5));
    if let Some(bytes) = memory {
        let spill = scratch.join(".spill");
        std::fs::create_dir_all(&spill).map_err(|e| DbError(e.to_string()))?;
        builder = builder.memory_limit(bytes).spill_dir(spill);
    }
    let builder = match mode {
        Mode::Local(n) => builder.target_partitions(n),
        Mode::Cluster => builder
            .target_partitions(2)
            .cluster("local:2")
            .setting("ballista.shuffle.force_remote_read", "true")
            // Joins' large sides reduced by their filtered sides' keys at any size, so that
            // the files' small tables take that path too.
            .setting("strata.semi_join_reduction_min_rows", "0"),
    };
    let engine = builder.build().await.map_err(|e| DbError(e.to_string()))?;
    Ok(StrataDb {
        engine,
        scratch,
        urls,
    })
}

/// The database servers the files need, started once; `Err` says why one cannot be.
#[derive(Default)]
struct Servers {
    postgres: Option<Result<databases::Postgres, String>>,
    mariadb: Option<Result<databases::MariaDb, String>>,
    made: usize,
}

impl Servers {
    /// Fresh databases for one run of a file whose text is `text`, made as the fixtures say,
    /// as (placeholder, URL) pairs; `Err` says why they cannot be made.
    fn databases(
        &mut self,
        root: &std::path::Path,
        text: &str,
        scratch: &std::path::Path,
    ) -> Result<Vec<(String, String)>, String> {
        let fixture = |backend: &str| {
            std::fs::read_to_string(
                root.join(format!("sql-tests/fixtures/databases/{backend}.sql")),
            )
            .map_err(|e| format!("fixture for {backend}: {e}"))
        };
        let mut urls = Vec::new();
        self.made += 1;
        let name = format!("slt_{}", self.made);
        if text.contains("__POSTGRES__") {
            let pg = self
                .postgres
                .get_or_insert_with(databases::Postgres::start)
                .as_ref()
                .map_err(Clone::clone)?;
            pg.psql(&format!("CREATE DATABASE {name}"))?;
            pg.psql_in(&name, &fixture("postgres")?)?;
            urls.push(("__POSTGRES__".into(), pg.url_of(databases::PG_USER, &name)));
        }
        if text.contains("__MYSQL__") {
            let db = self
                .mariadb
                .get_or_insert_with(databases::MariaDb::start)
                .as_ref()
                .map_err(Clone::clone)?;
            db.sql(&format!(
                "CREATE DATABASE {name}; GRANT ALL ON {name}.* TO '{}'@'%'; USE {name}; {}",
                databases::PG_USER,
                fixture("mysql")?
            ))?;
            let url = db.url().replace("/shop", &format!("/{name}"));
            urls.push(("__MYSQL__".into(), url));
        }
        if text.contains("__SQLITE__") {
            let file = scratch.join("fixture.db");
            databases::sqlite_file(&file, &fixture("sqlite")?);
            urls.push(("__SQLITE__".into(), format!("sqlite:{}", file.display())));
        }
        Ok(urls)
    }
}

/// The records `sql-tests/cluster-differences.md` lists, as (file name, line or None for the
/// whole file).
fn cluster_skips(root: &std::path::Path) -> Vec<(String, Option<u32>)> {
    let text = std::fs::read_to_string(root.join("sql-tests/cluster-differences.md"))
        .expect("sql-tests/cluster-differences.md");
    text.lines()
        .filter_map(|l| l.strip_prefix("- `"))
        .filter_map(|l| l.split_once('`').map(|(entry, _)| entry))
        .filter_map(|entry| entry.split_once(':'))
        .map(|(file, line)| (file.to_string(), line.parse().ok()))
        .collect()
}

/// Run `file` record by record, leaving out the records `skips` lists for it. With
/// `out_of_memory`, a record that fails with the out-of-memory error is counted there (the
/// operator it names) instead of failing the file.
async fn run_records<D, M>(
    runner: &mut sqllogictest::Runner<D, M>,
    file: &std::path::Path,
    skips: &[(String, Option<u32>)],
    mut out_of_memory: Option<&mut Vec<String>>,
) -> Result<(), String>
where
    D: sqllogictest::AsyncDB<ColumnType = DefaultColumnType>,
    M: sqllogictest::MakeConnection<Conn = D>,
{
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    let listed: Vec<Option<u32>> = skips
        .iter()
        .filter(|(f, _)| *f == name)
        .map(|(_, l)| *l)
        .collect();
    if listed.contains(&None) {
        return Ok(());
    }
    let records = sqllogictest::parse_file::<DefaultColumnType>(file).map_err(|e| e.to_string())?;
    for record in records {
        let line = match &record {
            sqllogictest::Record::Statement { loc, .. }
            | sqllogictest::Record::Query { loc, .. } => Some(loc.line()),
            _ => None,
        };
        if line.is_some_and(|l| listed.contains(&Some(l))) {
            continue;
        }
        if let Err(e) = runner.run_async(record).await {
            let text = e.display(false).to_string();
            match (&mut out_of_memory, text.find(OUT_OF_MEMORY)) {
                (Some(seen), Some(at)) => {
                    let message = text[at..].lines().next().unwrap_or_default();
                    seen.push(format!("{name}:{}: {message}", line.unwrap_or(0)));
                }
                _ => return Err(e.display(true).to_string()),
            }
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let complete = args.iter().any(|a| a == "--complete");
    let memory = args.iter().position(|a| a == "--memory-limit").map(|i| {
        let text = args.get(i + 1).map(String::as_str).unwrap_or_default();
        strata::engine::parse_size(text)
            .unwrap_or_else(|| panic!("--memory-limit wants a size such as 16M, not {text:?}"))
    });
    let filters: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !(a.starts_with("--") || (*i > 0 && args[i - 1] == "--memory-limit")))
        .map(|(_, a)| a)
        .collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(&root).expect("repository root");

    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("sql-tests"))
        .expect("sql-tests folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
        })
        .collect();
    files.sort();
    if files
        .iter()
        .any(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains("__TPCH__")))
    {
        tpch_data::generate(&tpch_dir(), TPCH_SCALE, 2, false).expect("TPC-H data");
    }

    let skips = cluster_skips(&root);
    let mut servers = Servers::default();
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut out_of_memory: Vec<String> = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let runs: &[Mode] = if complete {
            &MODES[..1]
        } else if memory.is_some() {
            &MODES[..2]
        } else {
            &MODES
        };
        for &mode in runs {
            // A runtime per run, so a cluster started for it stops with it.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let scratch = tempfile::tempdir().expect("scratch dir");
            let scratch_path = scratch.path().to_path_buf();
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let urls = match servers.databases(&root, &text, &scratch_path) {
                Ok(urls) => urls,
                Err(reason) => {
                    // Under CI every server is installed: a file that cannot run fails.
                    if std::env::var_os("CI").is_some() {
                        failed += 1;
                        println!("FAIL {name} [{mode}]: {reason}");
                    } else {
                        println!("SKIPPED {name} [{mode}]: {reason}");
                    }
                    continue;
                }
            };
            let root2 = root.clone();
            let started = Instant::now();
            let mut file_out_of_memory = Vec::new();
            let outcome = runtime.block_on(async {
                let mut runner = sqllogictest::Runner::new(move || {
                    make_db(
                        root2.clone(),
                        mode,
                        scratch_path.clone(),
                        memory,
                        urls.clone(),
                    )
                });
                runner.with_column_validator(sqllogictest::strict_column_validator);
                if complete {
                    runner
                        .update_test_file(
                            file,
                            " ",
                            sqllogictest::default_validator,
                            sqllogictest::default_normalizer,
                            sqllogictest::strict_column_validator,
                        )
                        .await
                        .map_err(|e| e.to_string())
                } else if mode == Mode::Cluster {
                    run_records(&mut runner, file, &skips, None).await
                } else if memory.is_some() {
                    run_records(&mut runner, file, &[], Some(&mut file_out_of_memory)).await
                } else {
                    runner
                        .run_file_async(file)
                        .await
                        .map_err(|e| e.display(true).to_string())
                }
            });
            match outcome {
                Ok(()) => {
                    passed += 1;
                    let oom = match file_out_of_memory.len() {
                        0 => String::new(),
                        n => format!(" ({n} out of memory)"),
                    };
                    println!(
                        "PASS {name} [{mode}] in {:.2}s{oom}",
                        started.elapsed().as_secs_f64()
                    );
                    for m in &file_out_of_memory {
                        println!("  {m} [{mode}]");
                    }
                    out_of_memory.append(&mut file_out_of_memory);
                }
                Err(e) => {
                    failed += 1;
                    println!("FAIL {name} [{mode}]\n{e}\n");
                }
            }
        }
    }
    println!("\nsql-tests: {passed} passed, {failed} failed");
    if let Some(bytes) = memory {
        println!(
            "under a {} MiB memory limit: {} records failed with the out-of-memory error, none otherwise",
            bytes >> 20,
            out_of_memory.len()
        );
    }
    if failed > 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
