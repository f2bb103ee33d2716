//! The progress line drawn on standard error while a statement runs: files, bytes and rows
//! scanned, partitions done, elapsed time and an estimate of the time left; for a cluster job,
//! its stages and tasks as the scheduler reports them.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata::cluster::JobStats;
use strata::output::{bytes, thousands};
use strata::{Progress, ScanStats};
use tokio::task::JoinHandle;

/// How long a statement runs before the progress line appears.
const DELAY: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(200);
/// How often a cluster job's progress is asked of its scheduler.
const JOB_POLL: Duration = Duration::from_millis(600);
const BAR: usize = 20;

/// A progress line that draws itself until [`ProgressBar::finish`] clears it.
pub struct ProgressBar {
    line: Arc<Mutex<Line>>,
    task: JoinHandle<()>,
}

/// Whether the line may still be drawn, and whether it is on the screen.
#[derive(Default)]
struct Line {
    finished: bool,
    shown: bool,
}

impl ProgressBar {
    /// Start watching `progress`; nothing is drawn before a second has passed.
    pub fn start(progress: Progress, started: Instant) -> Self {
        let line = Arc::new(Mutex::new(Line::default()));
        let shared = line.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(started) + DELAY).await;
            let mut ticks = 0usize;
            let mut job: Option<JobStats> = None;
            let mut asked: Option<Instant> = None;
            loop {
                let text = if progress.is_cluster_job() {
                    if asked.is_none_or(|t| t.elapsed() >= JOB_POLL) {
                        asked = Some(Instant::now());
                        // A scheduler that does not answer leaves the last figures up.
                        if let Ok(Some(stats)) = progress.job_stats().await {
                            job = Some(stats);
                        }
                    }
                    render_job(job.as_ref(), started.elapsed(), ticks)
                } else {
                    render(&progress.scan_stats(), started.elapsed(), ticks)
                };
                {
                    let mut line = shared.lock().unwrap_or_else(|p| p.into_inner());
                    if line.finished {
                        return;
                    }
                    draw(&format!("\r\x1b[2K{text}"));
                    line.shown = true;
                }
                ticks += 1;
                tokio::time::sleep(TICK).await;
            }
        });
        ProgressBar { line, task }
    }

    /// Stop drawing and clear the line. This does not wait for the drawing task: when a
    /// cancelled query keeps the runtime's workers busy, that task may not run for a while.
    pub fn finish(self) {
        let mut line = self.line.lock().unwrap_or_else(|p| p.into_inner());
        line.finished = true;
        if line.shown {
            draw("\r\x1b[2K");
            line.shown = false;
        }
        self.task.abort();
    }
}

fn draw(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// One progress line, e.g.
/// `⠹ [#######·············] 35% 12/48 files 3.1 MiB/9.0 MiB 1,204,332 rows 2/8 partitions 2.4 s ETA 4 s`.
pub fn render(s: &ScanStats, elapsed: Duration, tick: usize) -> String {
    let mut parts = vec![SPIN[tick % SPIN.len()].to_string()];
    let frac = s.fraction();
    if let Some(f) = frac {
        parts.push(bar(f));
    }
    if s.files > 0 {
        // Files split into ranges count as done in proportion to their ranges.
        let done = (s.files_done * s.files).div_ceil(s.file_ranges.max(1));
        parts.push(format!("{}/{} files", done.min(s.files), s.files));
        let read = if s.bytes_scanned > 0 {
            format!("{} read of {}", bytes(s.bytes_scanned), bytes(s.file_bytes))
        } else {
            bytes(s.file_bytes)
        };
        parts.push(read);
    }
    parts.push(format!("{} rows", thousands(s.rows)));
    if s.operator_rows > 0 {
        parts.push(format!("{} rows processed", thousands(s.operator_rows)));
    }
    if s.partitions > 0 {
        parts.push(format!("{}/{} partitions", s.partitions_done, s.partitions));
    }
    if s.spilled_bytes > 0 {
        parts.push(format!("{} spilled", bytes(s.spilled_bytes)));
    }
    let secs = elapsed.as_secs_f64();
    parts.push(format!("{secs:.1} s"));
    if let Some(f) = frac.filter(|f| *f >= 0.05 && *f < 1.0) {
        parts.push(format!("ETA {:.0} s", secs * (1.0 - f) / f));
    }
    parts.join(" ")
}

/// One progress line for a cluster job, e.g.
/// `⠹ [#######·············] 33% 1/3 stages 4 tasks running 12 done 1,204,332 rows 2.4 s`.
pub fn render_job(s: Option<&JobStats>, elapsed: Duration, tick: usize) -> String {
    let mut parts = vec![SPIN[tick % SPIN.len()].to_string()];
    match s {
        Some(s) if s.stages > 0 => {
            let f = s.stages_done as f64 / s.stages as f64;
            parts.push(bar(f));
            parts.push(format!("{}/{} stages", s.stages_done, s.stages));
            let tasks = if s.tasks_running == 1 {
                "task"
            } else {
                "tasks"
            };
            parts.push(format!(
                "{} {tasks} running {} done",
                s.tasks_running, s.tasks_done
            ));
            parts.push(format!("{} rows", thousands(s.rows_scanned)));
        }
        Some(s) => parts.push(s.status.to_lowercase()),
        None => parts.push("submitted".into()),
    }
    parts.push(format!("{:.1} s", elapsed.as_secs_f64()));
    parts.join(" ")
}

const SPIN: [char; 8] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧'];

/// `[#####···············]  25%`
fn bar(f: f64) -> String {
    let filled = (f * BAR as f64).round() as usize;
    format!(
        "[{}{}] {:>3.0}%",
        "#".repeat(filled),
        "·".repeat(BAR - filled),
        f * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_counts_and_an_estimate() {
        let s = ScanStats {
            files: 48,
            file_bytes: 9 * 1024 * 1024,
            bytes_scanned: 3 * 1024 * 1024 + 100_000,
            rows: 1_204_332,
            file_ranges: 48,
            files_done: 12,
            partitions: 8,
            partitions_done: 2,
            operator_rows: 0,
            spilled_bytes: 0,
        };
        let line = render(&s, Duration::from_millis(2400), 2);
        assert_eq!(
            line,
            "⠹ [#####···············]  25% 12/48 files 3.1 MiB read of 9.0 MiB 1,204,332 rows 2/8 partitions 2.4 s ETA 7 s"
        );
        // Past its scans, a join's output keeps the line moving.
        let joining = ScanStats {
            files_done: 48,
            partitions_done: 8,
            operator_rows: 50_730_004,
            ..s
        };
        assert!(
            render(&joining, Duration::from_secs(5), 0)
                .contains("1,204,332 rows 50,730,004 rows processed 8/8 partitions 5.0 s"),
            "{}",
            render(&joining, Duration::from_secs(5), 0)
        );
        // A sort or aggregation past its memory says how much it wrote to disk.
        let spilling = ScanStats {
            spilled_bytes: 3 << 30,
            ..joining
        };
        assert!(
            render(&spilling, Duration::from_secs(5), 0)
                .contains("8/8 partitions 3.0 GiB spilled 5.0 s"),
            "{}",
            render(&spilling, Duration::from_secs(5), 0)
        );
        let none = render(&ScanStats::default(), Duration::from_secs(3), 0);
        assert_eq!(none, "⠋ 0 rows 3.0 s");
    }

    #[test]
    fn a_cluster_job_shows_stages_and_tasks() {
        let s = JobStats {
            status: "Running".into(),
            stages: 4,
            stages_done: 1,
            tasks_running: 3,
            tasks_done: 9,
            rows_scanned: 1_500_000,
            ..JobStats::default()
        };
        assert_eq!(
            render_job(Some(&s), Duration::from_millis(1500), 1),
            "⠙ [#####···············]  25% 1/4 stages 3 tasks running 9 done 1,500,000 rows 1.5 s"
        );
        let queued = JobStats {
            status: "Queued".into(),
            ..JobStats::default()
        };
        assert_eq!(
            render_job(Some(&queued), Duration::from_secs(2), 0),
            "⠋ queued 2.0 s"
        );
        assert_eq!(
            render_job(None, Duration::from_secs(2), 0),
            "⠋ submitted 2.0 s"
        );
    }
}
