//! One command-line session: the engine plus the settings that shape how statements run and
//! print (format, row limit, output file, timing, pager, progress), shared by the batch modes
//! and the prompt.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use strata::output::{OutputFormat, ResultWriter, WriteOptions};
use strata::{Engine, Error, QueryResult};

use super::CliError;

use super::progress::ProgressBar;

/// Where the dashboard listens unless told otherwise (Dask's port), and where when that one
/// is taken.
const DASHBOARD_ADDRESS: &str = "127.0.0.1:8787";
const DASHBOARD_FALLBACK: &str = "127.0.0.1:0";

/// Waits for Ctrl-C (SIGINT) without missing one that arrives between two waits.
pub struct Interrupts {
    ctrl_c: std::sync::Arc<tokio::sync::Notify>,
}

impl Interrupts {
    /// Watch for Ctrl-C on a thread of its own, with a runtime of its own: the query
    /// runtime's workers notice signals only between tasks, and a CPU-bound operator (a
    /// nested loop join's batch) can keep every one of them busy for seconds.
    pub fn new() -> Result<Self, CliError> {
        let ctrl_c = std::sync::Arc::new(tokio::sync::Notify::new());
        let notify = ctrl_c.clone();
        let (ready, started) = std::sync::mpsc::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name("strata-ctrl-c".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready.send(Err(e.to_string()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    #[cfg(unix)]
                    let mut signal = match tokio::signal::unix::signal(
                        tokio::signal::unix::SignalKind::interrupt(),
                    ) {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    loop {
                        #[cfg(unix)]
                        let got = signal.recv().await.is_some();
                        #[cfg(not(unix))]
                        let got = tokio::signal::ctrl_c().await.is_ok();
                        if !got {
                            break;
                        }
                        // At most one Ctrl-C waits for the next statement.
                        notify.notify_one();
                    }
                });
            })
            .map_err(|e| CliError::Usage(format!("cannot watch for Ctrl-C: {e}")))?;
        match started.recv() {
            Ok(Ok(())) => Ok(Interrupts { ctrl_c }),
            Ok(Err(e)) => Err(CliError::Usage(format!("cannot watch for Ctrl-C: {e}"))),
            Err(_) => Err(CliError::Usage("cannot watch for Ctrl-C".into())),
        }
    }

    pub async fn recv(&mut self) {
        self.ctrl_c.notified().await;
    }
}

/// A session's settings and state.
pub struct Shell {
    pub engine: Engine,
    pub options: WriteOptions,
    /// Print nothing but results.
    pub quiet: bool,
    /// Print the `N rows in X s` line.
    pub timing: bool,
    /// Show at most this many rows of a result on the terminal (0 = all).
    pub max_rows: usize,
    /// Draw a progress line on standard error (only ever when it is a terminal).
    pub progress: bool,
    /// Page results taller than the screen through this command (only on a terminal).
    pub pager: Option<String>,
    /// Colours in the prompt and in error messages.
    pub color: bool,
    /// Results go to this file instead of standard output.
    output: Option<PathBuf>,
    output_file: Option<BufWriter<File>>,
    interrupts: Interrupts,
    /// The dashboard of this session's queries, once opened.
    dashboard: Option<strata::dashboard::Serving>,
}

/// The output format a file's extension asks for, if any.
fn format_of_path(path: &Path) -> Option<OutputFormat> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "parquet" => Some(OutputFormat::Parquet),
        "arrow" | "ipc" | "feather" => Some(OutputFormat::Arrow),
        _ => None,
    }
}

fn io(e: std::io::Error) -> CliError {
    CliError::Usage(format!("cannot write output: {e}"))
}

impl Shell {
    pub fn new(engine: Engine, options: WriteOptions) -> Result<Self, CliError> {
        Ok(Shell {
            engine,
            options,
            quiet: false,
            timing: true,
            max_rows: 0,
            progress: false,
            pager: None,
            color: false,
            output: None,
            output_file: None,
            interrupts: Interrupts::new()?,
            dashboard: None,
        })
    }

    /// Send results to `path` (`None`: back to standard output). Text results are appended
    /// to the file one after the other; a Parquet or Arrow file holds the latest result.
    /// Serve the dashboard of this session's queries on `address` (the default address
    /// falls back to a free port when its own is taken), or keep the one already served;
    /// its link.
    pub async fn open_dashboard(&mut self, address: Option<&str>) -> Result<String, CliError> {
        if let Some(serving) = &self.dashboard {
            return Ok(serving.url());
        }
        let dashboard = || strata::dashboard::Dashboard::new(self.engine.new_session());
        let serving = match dashboard()
            .serve(address.unwrap_or(DASHBOARD_ADDRESS))
            .await
        {
            Err(strata::dashboard::DashboardError::Listen { .. }) if address.is_none() => {
                dashboard().serve(DASHBOARD_FALLBACK).await
            }
            other => other,
        }
        .map_err(|e| CliError::Usage(e.to_string()))?;
        let url = serving.url();
        self.dashboard = Some(serving);
        Ok(url)
    }

    pub fn set_output(&mut self, path: Option<PathBuf>) -> Result<(), CliError> {
        if let Some(f) = &mut self.output_file {
            f.flush().map_err(io)?;
        }
        self.output_file = None;
        if let Some(p) = &path
            && !self.format_for(Some(p)).is_binary()
        {
            let f = File::create(p)
                .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", p.display())))?;
            self.output_file = Some(BufWriter::new(f));
        }
        self.output = path;
        Ok(())
    }

    pub fn output(&self) -> Option<&Path> {
        self.output.as_deref()
    }

    fn format_for(&self, path: Option<&Path>) -> OutputFormat {
        match path.and_then(format_of_path) {
            Some(f) if !self.options.format.is_binary() => f,
            _ => self.options.format,
        }
    }

    /// Flush the output file.
    pub fn flush(&mut self) -> Result<(), CliError> {
        if let Some(f) = &mut self.output_file {
            f.flush().map_err(io)?;
        }
        std::io::stdout().flush().map_err(io)
    }

    /// Run one statement and print its result. Ctrl-C cancels it with [`Error::Cancelled`].
    pub async fn run(&mut self, stmt: &str) -> Result<(), CliError> {
        let started = Instant::now();
        let format = self.format_for(self.output.as_deref());
        let to_terminal = self.output.is_none();
        if format.is_binary() && to_terminal {
            return Err(CliError::Usage(format!(
                "{format} output goes to a file: use --output FILE or \\o FILE"
            )));
        }
        let result = tokio::select! {
            r = self.engine.execute(stmt) => r?,
            _ = self.interrupts.recv() => return Err(Error::Cancelled.into()),
        };
        self.show(result, started).await
    }

    /// Print a result that has started (`started` is when its statement began).
    pub async fn show(
        &mut self,
        mut result: QueryResult,
        started: Instant,
    ) -> Result<(), CliError> {
        let format = self.format_for(self.output.as_deref());
        let to_terminal = self.output.is_none();
        let schema = result.schema();
        let show_progress = self.progress && std::io::stderr().is_terminal();
        let bar = show_progress.then(|| ProgressBar::start(result.progress(), started));
        let stdout_terminal = std::io::stdout().is_terminal();
        let mut options = WriteOptions {
            format,
            ..self.options.clone()
        };
        if to_terminal && stdout_terminal {
            options.max_table_width = terminal_size().map(|(w, _)| w);
        }
        let limit = (to_terminal && self.max_rows > 0).then_some(self.max_rows);
        let paging = to_terminal && stdout_terminal && self.pager.is_some();

        // Where the result goes: the output file, a buffer for the pager, or standard output.
        let mut page: Vec<u8> = Vec::new();
        let mut fresh: Option<BufWriter<File>> = None;
        let mut stdout = BufWriter::new(std::io::stdout());
        let sink: &mut (dyn Write + Send) = match (&self.output, &mut self.output_file) {
            (Some(_), Some(f)) => f,
            (Some(path), None) => {
                fresh.insert(BufWriter::new(File::create(path).map_err(|e| {
                    CliError::Usage(format!("cannot write {}: {e}", path.display()))
                })?))
            }
            (None, _) if paging => &mut page,
            (None, _) => &mut stdout,
        };

        let counts = stream_result(
            &mut result,
            &mut self.interrupts,
            sink,
            &options,
            limit,
            bar,
        )
        .await;
        drop(stdout);
        let (rows, shown) = counts?;
        if paging {
            self.page(&page)?;
        }

        let elapsed = started.elapsed().as_secs_f64();
        let cut = shown < rows && limit.is_some();
        let plural = if rows == 1 { "" } else { "s" };
        let spilled = result.scan_stats().spilled_bytes;
        let mut note = String::new();
        if spilled > 0 {
            note += &format!(", {} spilled to disk", strata::output::bytes(spilled));
        }
        if cut {
            note += &format!(" ({shown} shown; \\set max_rows 0 shows all)");
        }
        let status_format = matches!(
            format,
            OutputFormat::Table | OutputFormat::Markdown | OutputFormat::Line
        ) || !to_terminal;
        if !self.quiet && self.timing && status_format && !schema.fields().is_empty() {
            println!("{rows} row{plural} in {elapsed:.3} s{note}");
        } else if cut && !self.quiet {
            eprintln!("{rows} row{plural}{note}");
        }
        Ok(())
    }

    /// Run a statement for a meta command: a table on the screen, no timing line.
    pub async fn run_plain(&mut self, stmt: &str) -> Result<(), CliError> {
        let saved = (
            self.options.format,
            self.timing,
            self.output.take(),
            self.output_file.take(),
        );
        self.options.format = OutputFormat::Table;
        self.timing = false;
        let outcome = self.run(stmt).await;
        (
            self.options.format,
            self.timing,
            self.output,
            self.output_file,
        ) = saved;
        outcome
    }

    /// Show `text` through the pager when it is taller than the screen.
    fn page(&self, text: &[u8]) -> Result<(), CliError> {
        let height = terminal_size().map(|(_, h)| h).unwrap_or(24);
        let lines = text.iter().filter(|b| **b == b'\n').count();
        let pager = self.pager.as_deref().filter(|_| lines + 2 > height);
        if let Some(cmd) = pager {
            let child = Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env(
                    "LESS",
                    std::env::var("LESS").unwrap_or_else(|_| "FRSX".into()),
                )
                .stdin(Stdio::piped())
                .spawn();
            if let Ok(mut child) = child {
                if let Some(mut input) = child.stdin.take() {
                    // The reader may quit early; that is not an error.
                    let _ = input.write_all(text);
                }
                let _ = child.wait();
                return Ok(());
            }
        }
        let mut out = std::io::stdout().lock();
        out.write_all(text).map_err(io)?;
        out.flush().map_err(io)
    }
}

/// Read a result to its end, writing (at most `limit` rows of) it to `sink`, and return the
/// rows read and the rows written.
async fn stream_result(
    result: &mut strata::QueryResult,
    interrupts: &mut Interrupts,
    sink: &mut (dyn Write + Send),
    options: &WriteOptions,
    limit: Option<usize>,
    mut bar: Option<ProgressBar>,
) -> Result<(usize, usize), CliError> {
    let schema = result.schema();
    let mut rows = 0usize;
    let mut shown = 0usize;
    let mut writer = if schema.fields().is_empty() {
        None
    } else {
        Some(ResultWriter::new(&mut *sink, &schema, options)?)
    };
    let outcome: Result<(), CliError> = async {
        loop {
            let next = tokio::select! {
                b = result.next_batch() => b,
                _ = interrupts.recv() => {
                    result.cancel_handle().cancel();
                    return Err(Error::Cancelled.into());
                }
            };
            let Some(batch) = next else { break };
            let batch = batch?;
            if let Some(bar) = bar.take() {
                bar.finish();
            }
            rows += batch.num_rows();
            let room = limit.map(|l| l - shown).unwrap_or(usize::MAX);
            let keep = batch.num_rows().min(room);
            if keep == 0 {
                continue;
            }
            let part = batch.slice(0, keep);
            shown += keep;
            if let Some(w) = &mut writer {
                w.write(&part)?;
            }
        }
        Ok(())
    }
    .await;
    if let Some(bar) = bar.take() {
        bar.finish();
    }
    outcome?;
    // Consumed on every path, so the writer's borrow of `sink` ends here.
    writer.map(ResultWriter::finish).transpose()?;
    sink.flush().map_err(io)?;
    Ok((rows, shown))
}

/// The terminal's width and height, from standard output.
pub fn terminal_size() -> Option<(usize, usize)> {
    let (terminal_size::Width(w), terminal_size::Height(h)) = terminal_size::terminal_size()?;
    Some((w as usize, h as usize))
}
