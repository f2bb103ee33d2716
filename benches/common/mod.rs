//! What the benchmarks share: timing a statement to its last batch, answering statements
//! for the side-by-side scripts (`serve`), peak memory, statement files, and a small
//! deterministic random generator for data.

#![allow(dead_code)]

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use strata::Engine;
use strata::datafusion::arrow::datatypes::SchemaRef;
use strata::datafusion::arrow::record_batch::RecordBatch;
use strata::output::{OutputFormat, WriteOptions, write_batches};

/// The allocator the `strata` binary uses (see src/main.rs), so figures match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run `sql` to its last batch, dropping each batch as it comes; the time and the rows
/// returned.
pub async fn time_query(engine: &Engine, sql: &str) -> (Duration, usize) {
    let start = Instant::now();
    let mut result = engine.sql(sql).await.expect("query plans");
    let mut rows = 0;
    while let Some(b) = result.next_batch().await {
        rows += b.expect("query runs").num_rows();
    }
    (start.elapsed(), rows)
}

/// Write an answer to `path`: an Arrow IPC file when its name ends `.arrow`, CSV otherwise.
fn write_answer(path: &Path, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<(), String> {
    let format = if path.extension().is_some_and(|e| e == "arrow") {
        OutputFormat::Arrow
    } else {
        OutputFormat::Csv
    };
    let mut file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let options = WriteOptions {
        format,
        ..WriteOptions::default()
    };
    write_batches(&mut file, schema, batches, &options).map_err(|e| e.to_string())
}

/// Run `sql` and keep its whole answer in memory, as the engines it is compared with do; the
/// time to the last batch, and the answer.
async fn run_kept(
    engine: &Engine,
    sql: &str,
) -> Result<(Duration, SchemaRef, Vec<RecordBatch>), String> {
    let start = Instant::now();
    let mut result = engine.sql(sql).await.map_err(|e| e.to_string())?;
    let schema = result.schema();
    let mut kept = Vec::new();
    while let Some(b) = result.next_batch().await {
        kept.push(b.map_err(|e| e.to_string())?);
    }
    Ok((start.elapsed(), schema, kept))
}

/// Answer `NAME OUTPUT` lines on stdin, for the side-by-side scripts (`benches/compare.py`,
/// `benches/side_by_side.py`): run the statement `statement(NAME)` once with its answer kept
/// in memory, stop the clock, write the answer to OUTPUT (see `write_answer`; `-` writes
/// nothing), and print
/// `{"query":NAME,"seconds":..,"rows":..}`, or `{"query":NAME,"error":..}` when it fails.
pub async fn serve(engine: &Engine, statement: impl Fn(&str) -> Option<String>) {
    let mut stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let Some((name, out)) = line.trim().split_once(' ') else {
            continue;
        };
        let answer = match statement(name) {
            Some(sql) => run_kept(engine, &sql).await,
            None => Err(format!("no statement named {name}")),
        };
        let report = answer.and_then(|(elapsed, schema, batches)| {
            if out != "-" {
                write_answer(Path::new(out), &schema, &batches)?;
            }
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            Ok(format!(
                "\"seconds\":{:.6},\"rows\":{rows}",
                elapsed.as_secs_f64()
            ))
        });
        let body = report.unwrap_or_else(|e| format!("\"error\":{}", serde_json::Value::String(e)));
        writeln!(stdout, "{{\"query\":\"{name}\",{body}}}").expect("stdout");
        stdout.flush().expect("stdout");
    }
}

/// For `serve`: statements by their number, from 1.
pub fn by_number(statements: &[String]) -> impl Fn(&str) -> Option<String> + '_ {
    |name| {
        let n = name.parse::<usize>().ok()?;
        statements.get(n.checked_sub(1)?).cloned()
    }
}

/// The statements of a `.sql` file with their titles: the text of the last `--` comment line
/// before each (or its position, `1`, `2`, ..., where there is none).
pub fn titled_statements(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Engine::split_statements(&text)
        .expect("statements")
        .into_iter()
        .filter_map(|s| {
            let title = s
                .lines()
                .filter_map(|l| l.trim_start().strip_prefix("--"))
                .next_back()
                .map(|t| t.trim().to_string());
            let body: Vec<&str> = s
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect();
            let body = body.join("\n");
            (!body.trim().is_empty()).then_some((title, body))
        })
        .enumerate()
        .map(|(i, (title, body))| (title.unwrap_or_else(|| (i + 1).to_string()), body))
        .collect()
}

/// Reset the peak resident memory counter (Linux), so the next reading covers what follows.
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The peak resident memory since the last reset, in bytes (Linux). Memory the allocator kept
/// from earlier work counts too, so this is an upper bound per query.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The statements of a `.sql` file, comments dropped.
pub fn statements(path: &Path) -> Vec<String> {
    titled_statements(path)
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

/// The median and minimum of some durations.
pub fn median_min(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (times[times.len() / 2], times[0])
}

/// splitmix64: a small, fast, deterministic generator for benchmark data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `1..=n`.
    pub fn pick(&mut self, n: u64) -> u64 {
        1 + self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
