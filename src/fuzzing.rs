//! Arbitrary bytes fed to every input a user controls — SQL text, the catalog file, and the
//! bytes of a Parquet, CSV, NDJSON, Arrow IPC or Avro file — for the fuzz targets in `fuzz/`
//! and the tests that replay what they found. An error is a fine answer; a panic (even one
//! the engine turns into an error) or a hang is a bug. One exception: the readers of the
//! file formats (arrow, parquet, avro crates) panic on some malformed files, which Strata
//! catches and reports as a one-line error naming the file; those are counted and printed
//! once per place, not failed (set `STRATA_FUZZ_STRICT=1` to fail them too).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use crate::{Catalog, DatasetSpec, Engine, Error, Format, Result};

/// The inputs a fuzz target can feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// SQL text, planned and run against small sample tables.
    Sql,
    /// The text of a catalog file.
    Catalog,
    /// The bytes of a data file, read as this format.
    File(Format),
}

impl Target {
    /// Every target, by the name of its fuzz target and corpus directory.
    pub const ALL: [(&'static str, Target); 7] = [
        ("sql", Target::Sql),
        ("catalog", Target::Catalog),
        ("parquet", Target::File(Format::Parquet)),
        ("csv", Target::File(Format::Csv)),
        ("ndjson", Target::File(Format::Json)),
        ("ipc", Target::File(Format::Arrow)),
        ("avro", Target::File(Format::Avro)),
    ];
}

/// How long one query may run before it is cancelled (a slow query is not a bug; one that
/// ignores cancellation shows up as the fuzzer's own timeout).
const QUERY_TIME: Duration = Duration::from_secs(2);
/// Batches read from a result: enough to run every operator of most plans.
const BATCHES: usize = 16;

/// Where the panics of the current input happened (`file:line`).
static PLACES: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// The reader panics seen so far, once each.
static GUARDED: Mutex<Vec<String>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

/// Crates whose panics on malformed files Strata guards (see the module's notes).
const READERS: [&str; 6] = [
    "/arrow-",
    "/parquet-",
    "/apache-avro-",
    "/avro-",
    "/datafusion-datasource",
    // The readers slice their byte buffers with lengths read from the file.
    "/bytes-",
];

/// An engine over small sample tables, and a runtime to drive it.
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    engine: Engine,
    dir: PathBuf,
    files: AtomicU64,
}

impl Harness {
    /// A harness whose files go to a directory of its own under the system's temporary
    /// directory.
    pub fn new() -> Result<Harness> {
        HOOK.call_once(|| {
            // Replaces the fuzzer's hook, which aborts at every panic, caught or not: whether
            // a panic is a failure is decided once the input has run (see `run`), and a panic
            // that escapes `run` still ends the fuzz target.
            std::panic::set_hook(Box::new(move |info| {
                let place = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let message = crate::error::panic_message(info.payload());
                eprintln!("strata-fuzz: panic at {place}: {message}");
                PLACES.lock().unwrap_or_else(|p| p.into_inner()).push(place);
            }));
        });
        // One thread: every task of an input runs (or is dropped) before the next input, so
        // a panic is never put down to the wrong input.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Execution(format!("cannot start a runtime: {e}")))?;
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
        let engine = runtime.block_on(async {
            let engine = Engine::builder()
                .threads(2)
                .target_partitions(2)
                .memory_limit(512 << 20)
                .build()
                .await?;
            for (name, location) in [
                ("people", "people/"),
                ("events", "events/"),
                ("violations", "violations/"),
            ] {
                let path = data.join(location);
                engine
                    .register(name, DatasetSpec::new(path.to_string_lossy()))
                    .await?;
            }
            let setup = "CREATE TABLE t AS SELECT * FROM (VALUES (1, 10, 'x', 1.5), (2, NULL, 'y', NULL), (3, -7, NULL, 2.25)) AS v(a, b, s, d)";
            engine.sql(setup).await?.collect().await?;
            Ok::<_, Error>(engine)
        })?;
        let dir = std::env::temp_dir().join(format!("strata-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Execution(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Harness {
            runtime,
            engine,
            dir,
            files: AtomicU64::new(0),
        })
    }

    /// The engine inputs run on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Feed `bytes` to `target`. Panics when anything panicked on the way, caught or not.
    pub fn run(&self, target: Target, bytes: &[u8]) {
        PLACES.lock().unwrap_or_else(|p| p.into_inner()).clear();
        match target {
            Target::Sql => {
                if let Ok(text) = std::str::from_utf8(bytes) {
                    self.sql(text);
                }
            }
            Target::Catalog => {
                if let Ok(text) = std::str::from_utf8(bytes) {
                    let _ = Catalog::parse(text, "fuzz.toml", &self.dir, &|_| None);
                }
            }
            Target::File(format) => self.file(format, bytes),
        }
        let places = std::mem::take(&mut *PLACES.lock().unwrap_or_else(|p| p.into_inner()));
        if places.is_empty() {
            return;
        }
        let strict = std::env::var_os("STRATA_FUZZ_STRICT").is_some();
        let in_reader = |p: &String| READERS.iter().any(|r| p.contains(r));
        if !strict && matches!(target, Target::File(_)) && places.iter().all(in_reader) {
            let mut seen = GUARDED.lock().unwrap_or_else(|p| p.into_inner());
            for p in places {
                if !seen.contains(&p) {
                    eprintln!(
                        "strata-fuzz: a reader panicked at {p}; Strata reported it as an error"
                    );
                    seen.push(p);
                }
            }
            return;
        }
        panic!("a panic was caught while running this input (at {places:?})");
    }

    /// The places in the file readers that panicked (and were guarded) so far.
    pub fn guarded_reader_panics() -> Vec<String> {
        GUARDED.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Each statement that only reads (statements that write files or change the session
    /// are skipped: the fuzzer must not write where it pleases).
    fn sql(&self, text: &str) {
        let Ok(statements) = Engine::split_statements(text) else {
            return;
        };
        for statement in statements {
            let head = statement.trim_start().to_ascii_uppercase();
            let reads = [
                "SELECT", "WITH", "VALUES", "EXPLAIN", "DESCRIBE", "SHOW", "(",
            ]
            .iter()
            .any(|k| head.starts_with(k));
            let writes = ["COPY", "INSERT", "EXTERNAL", "CREATE", "DROP", "SET "]
                .iter()
                .any(|k| head.contains(k));
            if reads && !writes {
                let _ = self.query(&statement);
            }
        }
    }

    fn file(&self, format: Format, bytes: &[u8]) {
        let _ = self.read_file(format, bytes);
    }

    /// Write `bytes` to a file of `format` and read it twice (every row, and a count): the
    /// outcome of each read.
    pub fn read_file(&self, format: Format, bytes: &[u8]) -> Vec<Result<()>> {
        let n = self.files.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("input-{n}.{}", extension(format)));
        if let Err(e) = std::fs::write(&path, bytes) {
            return vec![Err(Error::Execution(format!(
                "cannot write {}: {e}",
                path.display()
            )))];
        }
        let location = path.to_string_lossy().replace('\'', "''");
        let outcomes = vec![
            self.query(&format!("SELECT * FROM '{location}'")),
            self.query(&format!("SELECT count(*) FROM '{location}'")),
        ];
        let _ = std::fs::remove_file(&path);
        outcomes
    }

    /// Plan and run one statement, reading at most [`BATCHES`] batches for at most
    /// [`QUERY_TIME`].
    fn query(&self, sql: &str) -> Result<()> {
        self.runtime.block_on(async {
            let run = async {
                let mut result = self.engine.sql(sql).await?;
                let mut batches = 0;
                while let Some(batch) = result.next_batch().await {
                    batch?;
                    batches += 1;
                    if batches == BATCHES {
                        break;
                    }
                }
                Ok(())
            };
            tokio::time::timeout(QUERY_TIME, run)
                .await
                .unwrap_or(Err(Error::Cancelled))
        })
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn extension(format: Format) -> &'static str {
    match format {
        Format::Parquet => "parquet",
        Format::Csv => "csv",
        Format::Json => "ndjson",
        Format::Arrow => "arrow",
        Format::Avro => "avro",
    }
}
