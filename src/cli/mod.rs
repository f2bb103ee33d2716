//! The `strata` command line: runs SQL from `-c`, `-f` or standard input against an engine
//! built from the options and the catalog file, opens the prompt on a terminal, and converts
//! datasets between formats and stores.

mod cluster;
mod convert;
mod meta;
mod progress;
mod repl;
mod serve;
mod shell;

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata::output::{OutputFormat, WriteOptions};
use strata::{Engine, Error};

use shell::Shell;

/// What can go wrong in the command line: the engine's errors, and the command line's own
/// (bad options, unreadable script files, unwritable output).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An error from the engine.
    #[error(transparent)]
    Engine(#[from] Error),
    /// A bad option or setting, or a file the command line cannot read or write.
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    fn position(&self) -> Option<strata::error::Position> {
        match self {
            CliError::Engine(e) => e.position(),
            CliError::Usage(_) => None,
        }
    }

    fn is_cancelled(&self) -> bool {
        matches!(self, CliError::Engine(Error::Cancelled))
    }
}

const EXAMPLES: &str = "\
Examples:
  strata                                   open the prompt (tables from ./strata.toml)
  strata -c \"SELECT count(*) FROM 'data/violations'\"
  strata -q --format csv -c \"SELECT * FROM people\" > people.csv
  strata -f report.sql --output report.md --format markdown
  strata -o top.parquet -c \"SELECT * FROM violations ORDER BY issue_date DESC LIMIT 100\"
  echo \"SELECT 1;\" | strata --format json
  strata convert 'data/violations_csv' s3://bucket/violations/ --partition-by year,month
  strata --memory-limit 2G --threads 8 -f heavy.sql
  strata --dashboard                       the prompt, with a dashboard at 127.0.0.1:8787

Every option can also be set in the environment: STRATA_FORMAT=csv, STRATA_MAX_ROWS=100,
STRATA_CATALOG=..., and so on (see each option). NO_COLOR turns colour off.";

/// Strata: SQL over partitioned datasets in Parquet, CSV, JSON, Arrow and Avro, local or in
/// object stores.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, after_help = EXAMPLES)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Run this SQL (repeatable; statements separated by `;`). It may start with `-`, as a
    /// file's text that opens with a `--` comment does.
    #[arg(
        short = 'c',
        long = "command",
        env = "STRATA_COMMAND",
        allow_hyphen_values = true
    )]
    commands: Vec<String>,
    /// Run the SQL in this file (repeatable; `-` is standard input).
    #[arg(short = 'f', long = "file", env = "STRATA_FILE")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
    /// Print nothing but query results.
    #[arg(short = 'q', long, env = "STRATA_QUIET", global = true)]
    quiet: bool,
    /// Result format: table, csv, tsv, json, ndjson, markdown, line; with --output also
    /// parquet or arrow (chosen by the file's extension when it is .parquet or .arrow).
    #[arg(long, env = "STRATA_FORMAT", default_value = "table")]
    format: String,
    /// Show at most N rows of each result on the terminal (0 = all; default 40 at the
    /// prompt, all otherwise). Results written with --output are never cut.
    #[arg(long, env = "STRATA_MAX_ROWS", value_name = "N")]
    max_rows: Option<usize>,
    /// Write results to this file instead of standard output.
    #[arg(short = 'o', long, env = "STRATA_OUTPUT")]
    output: Option<PathBuf>,
    /// In batch mode, report a failing statement and go on with the next one (the exit
    /// status is still 1).
    #[arg(long, env = "STRATA_CONTINUE_ON_ERROR")]
    continue_on_error: bool,
    /// No colours (also when NO_COLOR is set).
    #[arg(long, env = "STRATA_NO_COLOR")]
    no_color: bool,
    /// No progress line on standard error.
    #[arg(long, env = "STRATA_NO_PROGRESS", global = true)]
    no_progress: bool,
    /// Serve a dashboard of this session's queries (their progress, plans and figures, with
    /// a Cancel button) on ADDR, by default 127.0.0.1:8787, and print its link.
    #[arg(
        long,
        env = "STRATA_DASHBOARD",
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = ""
    )]
    dashboard: Option<String>,
}

/// Options that shape the engine, shared by every mode.
#[derive(Debug, Clone, clap::Args)]
struct EngineArgs {
    /// The catalog file (default: ./strata.toml when present).
    #[arg(long, env = "STRATA_CATALOG", global = true)]
    catalog: Option<PathBuf>,
    /// Threads (target partitions) per query [default: twice the cores for partitions, the
    /// cores for threads].
    #[arg(long, env = "STRATA_THREADS", global = true)]
    threads: Option<usize>,
    /// Memory limit for queries, e.g. 512M or 2G; beyond it operators spill to disk.
    #[arg(long, env = "STRATA_MEMORY_LIMIT", global = true)]
    memory_limit: Option<String>,
    /// Run queries on a Ballista cluster: df://HOST:PORT, or local:N for a scheduler and N
    /// executors inside this process.
    #[arg(long, env = "STRATA_CLUSTER", global = true, value_name = "URL")]
    cluster: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Copy a dataset to another format, store or partitioning, then check the row count.
    ///
    /// SRC is a table from the catalog, or a file, directory, glob or URL; DST is a file or a
    /// directory (end it with `/`) on any store, or a database table, which is appended to
    /// (or created) in one transaction. The copy streams, so memory stays bounded.
    #[command(after_help = "Examples:
  strata convert data/people people.parquet
  strata convert 'data/violations_csv' out/violations/ --partition-by year,month
  strata convert violations s3://bucket/v.csv.gz --format csv
  strata convert data/people 'sqlite:shop.db?table=people'")]
    Convert(convert::ConvertArgs),
    /// Run a cluster scheduler: clients connect with --cluster df://HOST:PORT, executors with
    /// `strata executor --scheduler HOST:PORT`. Its REST API is served on the same port.
    #[command(after_help = "Examples:
  strata scheduler
  strata scheduler --bind 127.0.0.1:50050")]
    Scheduler(cluster::SchedulerArgs),
    /// Run a cluster executor for a scheduler. Object store credentials come from this
    /// process's environment; `--catalog` supplies store settings such as endpoints.
    #[command(after_help = "Examples:
  strata executor --scheduler 10.0.0.5:50050
  strata executor --scheduler localhost:50050 --bind 127.0.0.1:0 --slots 4 --memory-limit 8G")]
    Executor(cluster::ExecutorArgs),
    /// Serve the catalog's datasets to other programs over Arrow Flight SQL (ADBC, pyarrow,
    /// JDBC and ODBC drivers), and over the PostgreSQL protocol with --postgres (psql,
    /// psycopg, BI tools). Queries run with this command's engine options (`--cluster`,
    /// `--memory-limit`, `--threads`). Off the loopback address it needs --users and TLS
    /// (--tls-cert, --tls-key).
    #[command(after_help = "Examples:
  strata serve
  strata serve --flight 127.0.0.1:0 --catalog strata.toml
  strata serve --root data --allow-writes --write-root /tmp
  strata serve --postgres 127.0.0.1:5432
  strata serve --max-connections 64 --idle-timeout 300 --query-memory 1G")]
    Serve(Box<serve::ServeArgs>),
    /// Read a password or API token on standard input and print its hash, for the users
    /// file of `strata serve --users`.
    #[command(after_help = "Examples:
  echo 'a long passphrase' | strata hash-secret")]
    HashSecret,
}

/// Parse `512M`, `2G`, `1024` into bytes.
fn parse_size(text: &str) -> Result<usize, CliError> {
    strata::engine::parse_size(text)
        .ok_or_else(|| CliError::Usage(format!("invalid size '{text}'; use e.g. 512M or 2G")))
}

/// Entry point of the binary.
pub fn main() -> Result<ExitCode, CliError> {
    let args = Args::parse();
    quiet_panics();
    strata::allocator::keep_freed_memory_a_while();
    if runs_and_exits(&args) {
        no_transparent_huge_pages();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Planning, and encoding and decoding plans for a cluster, recurse once per plan
        // node: a query with nested subqueries over views overflowed the default 2 MiB of a
        // debug build's worker. The memory is reserved, and used only as deep as it goes.
        .thread_stack_size(16 << 20)
        .worker_threads(
            args.engine
                .threads
                .unwrap_or_else(strata::engine::num_cpus)
                .max(1),
        )
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the runtime: {e}")))?;
    let outcome = runtime.block_on(run(args));
    // An operator of a cancelled query may still be inside one long computation (a nested
    // loop join's batch); the process exits without waiting for it to come back.
    runtime.shutdown_background();
    outcome
}

/// Whether this process runs its statements (`-c`, `-f`, piped input) or a `convert` and
/// then exits, as opposed to a prompt, a server or a cluster process that runs queries for as
/// long as it lives.
fn runs_and_exits(args: &Args) -> bool {
    match args.command {
        Some(Command::Convert(_)) => true,
        Some(_) => false,
        None => !opens_the_prompt(args),
    }
}

/// Whether this run is the prompt: no `-c` or `-f`, and a terminal on standard input (piped
/// input runs in batch).
fn opens_the_prompt(args: &Args) -> bool {
    args.commands.is_empty() && args.files.is_empty() && std::io::stdin().is_terminal()
}

/// Back this process's memory with 4 KiB pages only, unless `MIMALLOC_ALLOW_THP` chooses.
///
/// mimalloc asks for transparent huge pages, and the kernel zeroes (and, short of free huge
/// pages, first compacts memory for) all 2 MiB of one on the first write to any byte of it.
/// A long-running process touches those pages once and gains from them on large hash tables;
/// a process that runs a few queries and exits pays that cost for pages it mostly does not
/// use: TPC-H SF1 through `strata -f`, one process per query, ran in 0.94 of the time with
/// them off (BENCHMARKS.md, "Transparent huge pages in a process that runs and exits").
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // The kernel reads each argument as an unsigned long (and refuses the call unless
        // the last three are 0), so they are passed at that width.
        let (on, unused): (libc::c_ulong, libc::c_ulong) = (1, 0);
        // SAFETY: PR_SET_THP_DISABLE sets one flag of this process and takes no pointers.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, on, unused, unused, unused);
        }
    }
}

/// Panics inside a query become that query's one-line error (the library catches them), so
/// the default report with its backtrace is printed only when `STRATA_BACKTRACE` is set.
/// A panic nothing catches is reported by `main` as an internal error.
fn quiet_panics() {
    if std::env::var_os("STRATA_BACKTRACE").is_none() {
        std::panic::set_hook(Box::new(|_| {}));
    }
}

/// The catalog file: `--catalog`, else `./strata.toml` when present.
fn catalog_path(args: &EngineArgs) -> Option<PathBuf> {
    args.catalog.clone().or_else(|| {
        let p = PathBuf::from("strata.toml");
        p.exists().then_some(p)
    })
}

async fn build_engine(args: &EngineArgs) -> Result<Engine, CliError> {
    Ok(engine_builder(args)?.build().await?)
}

/// The engine the options describe, to be built.
fn engine_builder(args: &EngineArgs) -> Result<strata::EngineBuilder, CliError> {
    let mut builder = Engine::builder();
    if let Some(n) = args.threads {
        builder = builder.threads(n);
    }
    if let Some(m) = &args.memory_limit {
        builder = builder.memory_limit(parse_size(m)?);
    }
    if let Some(c) = catalog_path(args) {
        builder = builder.catalog(c);
    }
    if let Some(url) = &args.cluster {
        builder = builder.cluster(url);
    }
    Ok(builder)
}

/// Colours are on unless `--no-color` or `NO_COLOR` (any non-empty value) says otherwise.
fn color_enabled(no_color: bool) -> bool {
    !no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

async fn run(args: Args) -> Result<ExitCode, CliError> {
    let color = color_enabled(args.no_color);
    match &args.command {
        Some(Command::Scheduler(s)) => return cluster::scheduler(s, &args.engine).await,
        Some(Command::Executor(e)) => return cluster::executor(e, &args.engine).await,
        Some(Command::Serve(s)) => return serve::run(s, &args.engine).await,
        Some(Command::HashSecret) => return serve::hash_secret(),
        _ => {}
    }
    if let Some(Command::Convert(c)) = &args.command {
        if !args.commands.is_empty() || !args.files.is_empty() {
            return Err(CliError::Usage(
                "convert runs on its own; drop -c and -f".into(),
            ));
        }
        let engine = build_engine(&args.engine).await?;
        return convert::run(&engine, c, args.quiet, !args.no_progress).await;
    }
    let engine = build_engine(&args.engine).await?;
    let options = WriteOptions {
        format: args.format.parse::<OutputFormat>()?,
        ..WriteOptions::default()
    };
    let mut shell = Shell::new(engine, options)?;
    shell.quiet = args.quiet;
    shell.timing = !args.quiet;
    shell.color = color;
    shell.progress = !args.no_progress;
    shell.set_output(args.output.clone())?;
    if let Some(address) = &args.dashboard {
        let url = shell
            .open_dashboard(Some(address.as_str()).filter(|a| !a.is_empty()))
            .await?;
        eprintln!("Dashboard: {url}");
    }

    let mut scripts: Vec<String> = args.commands.clone();
    for f in &args.files {
        let text = if f.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| CliError::Usage(format!("reading standard input: {e}")))?;
            s
        } else {
            std::fs::read_to_string(f)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", f.display())))?
        };
        scripts.push(text);
    }
    if scripts.is_empty() {
        if opens_the_prompt(&args) {
            shell.max_rows = args.max_rows.unwrap_or(40);
            shell.pager = pager_command();
            return repl::run(&mut shell).await;
        }
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::Usage(format!("reading standard input: {e}")))?;
        scripts.push(s);
    }
    shell.max_rows = args.max_rows.unwrap_or(0);
    let mut failed = false;
    for script in scripts {
        match meta::run_script(&mut shell, &script, args.continue_on_error).await {
            meta::Flow::Done => {}
            meta::Flow::Quit => break,
            // Interrupted: stop the batch as a shell expects of Ctrl-C.
            meta::Flow::Cancelled => return Ok(ExitCode::from(130)),
            meta::Flow::Failed if args.continue_on_error => failed = true,
            meta::Flow::Failed => return Ok(ExitCode::FAILURE),
        }
    }
    shell.flush()?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The pager: `$PAGER` when set (empty turns paging off), else `less` when installed.
fn pager_command() -> Option<String> {
    match std::env::var("PAGER") {
        Ok(p) => (!p.trim().is_empty()).then_some(p),
        Err(_) => {
            let found = std::env::var_os("PATH")
                .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("less").is_file()));
            found.then(|| "less".to_string())
        }
    }
}

/// Print an error as `Error: ...`; when it points into the statement, show that line with a
/// caret under the column.
fn report(err_out: &mut dyn Write, err: &CliError, stmt: &str, color: bool) {
    if color && std::io::stderr().is_terminal() {
        let _ = writeln!(err_out, "\x1b[1;31mError:\x1b[0m {err}");
    } else {
        let _ = writeln!(err_out, "Error: {err}");
    }
    if let Some(p) = err.position()
        && let Some(line) = stmt.lines().nth(p.line.saturating_sub(1))
    {
        let caret_at: usize = line
            .chars()
            .take(p.column.saturating_sub(1))
            .map(|c| if c == '\t' { 4 } else { 1 })
            .sum();
        let shown = line.replace('\t', "    ");
        let _ = writeln!(err_out, "  {shown}");
        let _ = writeln!(err_out, "  {}^", " ".repeat(caret_at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_the_line_with_a_caret() {
        let err = Error::Syntax {
            message: "Expected: end of statement, found: FORM".into(),
            position: Some(strata::error::Position { line: 2, column: 3 }),
        };
        let mut out = Vec::new();
        report(&mut out, &err.into(), "SELECT *\n  FORM t", false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Error: syntax error at 2:3: Expected: end of statement, found: FORM\n    FORM t\n    ^\n"
        );
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("lots").is_err());
    }
}
