//! The `strata` command line: runs SQL from `-c`, `-f` or standard input against an engine
//! built from the options and the catalog file, and prints results as tables.

mod repl;

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use strata::output::{OutputFormat, WriteOptions};
use strata::{Engine, Error};

/// Strata: SQL over partitioned datasets in Parquet, CSV, JSON, Arrow and Avro, local or in
/// object stores.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
struct Args {
    /// Run this SQL (repeatable; statements separated by `;`).
    #[arg(short = 'c', long = "command", env = "STRATA_COMMAND")]
    commands: Vec<String>,
    /// Run the SQL in this file (repeatable; `-` is standard input).
    #[arg(short = 'f', long = "file")]
    files: Vec<PathBuf>,
    /// The catalog file (default: ./strata.toml when present).
    #[arg(long, env = "STRATA_CATALOG")]
    catalog: Option<PathBuf>,
    /// Threads (target partitions) per query.
    #[arg(long, env = "STRATA_THREADS")]
    threads: Option<usize>,
    /// Memory limit for queries, e.g. 512M or 2G; beyond it operators spill to disk.
    #[arg(long, env = "STRATA_MEMORY_LIMIT")]
    memory_limit: Option<String>,
    /// Print nothing but query results.
    #[arg(short = 'q', long, env = "STRATA_QUIET")]
    quiet: bool,
    /// Result format: table, csv, tsv, json, ndjson, markdown or line.
    #[arg(long, env = "STRATA_FORMAT", default_value = "table")]
    format: String,
    /// Write results to this file instead of standard output.
    #[arg(short = 'o', long, env = "STRATA_OUTPUT")]
    output: Option<PathBuf>,
    /// In batch mode, report a failing statement and go on with the next one (the exit
    /// status is still 1).
    #[arg(long, env = "STRATA_CONTINUE_ON_ERROR")]
    continue_on_error: bool,
}

/// Parse `512M`, `2G`, `1024` into bytes.
fn parse_size(text: &str) -> Result<usize, Error> {
    let t = text.trim().to_ascii_uppercase();
    let t = t.trim_end_matches('B');
    let (num, mult) = match t.chars().last() {
        Some('K') => (&t[..t.len() - 1], 1usize << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .filter(|n| *n > 0.0)
        .map(|n| (n * mult as f64) as usize)
        .ok_or_else(|| Error::Config(format!("invalid size '{text}'; use e.g. 512M or 2G")))
}

/// Entry point of the binary.
pub fn main() -> Result<ExitCode, Error> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(args.threads.unwrap_or_else(num_cpus).max(1))
        .build()
        .map_err(|e| Error::Config(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(run(args))
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

async fn run(args: Args) -> Result<ExitCode, Error> {
    let mut builder = Engine::builder();
    if let Some(n) = args.threads {
        builder = builder.threads(n);
    }
    if let Some(m) = &args.memory_limit {
        builder = builder.memory_limit(parse_size(m)?);
    }
    let catalog = args.catalog.clone().or_else(|| {
        let p = PathBuf::from("strata.toml");
        p.exists().then_some(p)
    });
    if let Some(c) = catalog {
        builder = builder.catalog(c);
    }
    let engine = builder.build().await?;
    let options = WriteOptions {
        format: args.format.parse::<OutputFormat>()?,
        ..WriteOptions::default()
    };

    let mut scripts: Vec<String> = args.commands.clone();
    for f in &args.files {
        let text = if f.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Error::Config(format!("reading standard input: {e}")))?;
            s
        } else {
            std::fs::read_to_string(f)
                .map_err(|e| Error::Config(format!("cannot read {}: {e}", f.display())))?
        };
        scripts.push(text);
    }
    if scripts.is_empty() {
        if std::io::stdin().is_terminal() {
            return repl::run(&engine, options, args.quiet).await;
        }
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Error::Config(format!("reading standard input: {e}")))?;
        scripts.push(s);
    }
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut failed = false;
    for script in scripts {
        for stmt in Engine::split_statements(&script)? {
            if let Err(e) = run_statement(&engine, &stmt, &mut out, &options, args.quiet).await {
                let _ = out.flush();
                report(&mut std::io::stderr(), &e, &stmt);
                if matches!(e, Error::Cancelled) {
                    // Interrupted: stop the batch as a shell expects of Ctrl-C.
                    return Ok(ExitCode::from(130));
                }
                failed = true;
                if !args.continue_on_error {
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    out.flush()
        .map_err(|e| Error::Execution(format!("cannot write output: {e}")))?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn run_statement(
    engine: &Engine,
    stmt: &str,
    out: &mut impl Write,
    options: &WriteOptions,
    quiet: bool,
) -> Result<(), Error> {
    let start = Instant::now();
    // Ctrl-C cancels the statement (planning included), not the process.
    let run = async {
        let mut result = engine.sql(stmt).await?;
        let batches = result.collect().await?;
        Ok::<_, Error>((result, batches))
    };
    let (result, batches) = tokio::select! {
        done = run => done?,
        _ = tokio::signal::ctrl_c() => return Err(Error::Cancelled),
    };
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let schema = result.schema();
    if !schema.fields().is_empty() {
        strata::output::write_batches(out, &schema, &batches, options)?;
    }
    if !quiet && options.format == OutputFormat::Table {
        writeln!(
            out,
            "{rows} row{} in {:.3} s",
            if rows == 1 { "" } else { "s" },
            start.elapsed().as_secs_f64()
        )
        .map_err(|e| Error::Execution(e.to_string()))?;
    }
    Ok(())
}

/// Print an error as `Error: ...`; when it points into the statement, show that line with a
/// caret under the column.
fn report(err_out: &mut dyn Write, err: &Error, stmt: &str) {
    let _ = writeln!(err_out, "Error: {err}");
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
        report(&mut out, &err, "SELECT *\n  FORM t");
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
