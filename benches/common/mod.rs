//! What the benchmarks share: timing a statement to its last batch, peak memory, statement
//! files, and a small deterministic random generator for data.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use strata::Engine;
use strata::output::{OutputFormat, WriteOptions, write_batches};

/// The allocator the `strata` binary uses (see src/main.rs), so figures match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run `sql` to its last batch, writing the result as CSV to `csv` when given (after the
/// clock stops); the time and the rows returned.
pub async fn time_query(engine: &Engine, sql: &str, csv: Option<&Path>) -> (Duration, usize) {
    let start = Instant::now();
    let mut result = engine.sql(sql).await.expect("query plans");
    let schema = result.schema();
    let mut rows = 0;
    let mut kept = Vec::new();
    while let Some(b) = result.next_batch().await {
        let b = b.expect("query runs");
        rows += b.num_rows();
        if csv.is_some() {
            kept.push(b);
        }
    }
    let elapsed = start.elapsed();
    if let Some(path) = csv {
        let mut file = std::fs::File::create(path).expect("output file");
        let options = WriteOptions {
            format: OutputFormat::Csv,
            ..WriteOptions::default()
        };
        write_batches(&mut file, &schema, &kept, &options).expect("write");
    }
    (elapsed, rows)
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
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Engine::split_statements(&text)
        .expect("statements")
        .into_iter()
        .map(|s| {
            s.lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|s| !s.trim().is_empty())
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
