//! The running and recent queries of an engine and of every session made from it: SQL,
//! session, state, planning and execution times, rows, bytes read, peak memory, spill and
//! error, with each running query's plan and cancel handle. The dashboard shows them and
//! `strata.query_log` lists them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use serde::Serialize;

use crate::engine::{CancelHandle, Progress, ScanStats};
use crate::query_memory::QueryPool;
use crate::snapshot::SnapshotTable;

/// Ended queries kept by default, besides the running ones.
pub const KEEP: usize = 1000;

/// Where a query is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryState {
    /// Parsed, being planned.
    Planning,
    /// Executing; its result is being read.
    Running,
    /// Its result was read to the end.
    Finished,
    /// It failed; the entry holds the error.
    Failed,
    /// Cancelled, or its result dropped before the end.
    Cancelled,
}

impl QueryState {
    /// The state's name, as `strata.query_log` shows it.
    pub fn name(self) -> &'static str {
        match self {
            QueryState::Planning => "planning",
            QueryState::Running => "running",
            QueryState::Finished => "finished",
            QueryState::Failed => "failed",
            QueryState::Cancelled => "cancelled",
        }
    }

    /// Whether the query has ended.
    pub fn ended(self) -> bool {
        !matches!(self, QueryState::Planning | QueryState::Running)
    }
}

/// The running and recent queries: running ones are always kept, ended ones up to a bound.
#[derive(Debug)]
pub struct Monitor {
    queries: Mutex<VecDeque<Arc<Tracked>>>,
    keep: usize,
    next_id: AtomicU64,
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor::new(KEEP)
    }
}

impl Monitor {
    /// A monitor keeping the last `keep` ended queries.
    pub fn new(keep: usize) -> Self {
        Monitor {
            queries: Mutex::default(),
            keep,
            next_id: AtomicU64::new(1),
        }
    }

    fn queries(&self) -> MutexGuard<'_, VecDeque<Arc<Tracked>>> {
        self.queries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A statement was received: it is listed from now on, as being planned.
    pub fn begin(self: &Arc<Self>, session: &str, user: Option<&str>, sql: &str) -> Tracker {
        let query = Arc::new(Tracked {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            session: session.to_string(),
            user: user.map(str::to_string),
            sql: sql.to_string(),
            started: SystemTime::now(),
            clock: Instant::now(),
            rows: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                state: QueryState::Planning,
                planned: None,
                ended: None,
                error: None,
                live: None,
                last: Last::default(),
                last_plan: None,
                ended_job: None,
            }),
        });
        self.queries().push_back(query.clone());
        Tracker {
            query,
            monitor: self.clone(),
        }
    }

    /// Every listed query, oldest first.
    pub fn list(&self) -> Vec<QueryInfo> {
        let queries: Vec<_> = self.queries().iter().cloned().collect();
        queries.iter().map(|q| q.info()).collect()
    }

    /// The query `id`, if it is still listed.
    pub fn get(&self, id: u64) -> Option<Arc<Tracked>> {
        self.queries().iter().find(|q| q.id == id).cloned()
    }

    /// The plan of the latest query of `session` that has one, with its figures.
    pub fn last_plan(&self, session: &str) -> Option<PlanNode> {
        let queries: Vec<_> = self.queries().iter().rev().cloned().collect();
        queries
            .iter()
            .filter(|q| q.session == session)
            .find_map(|q| q.plan())
    }

    /// Cancel the running query `id`. `Err` says why not: it is not listed, or it has ended.
    pub fn cancel(&self, id: u64) -> Result<(), CancelRefused> {
        let query = self.get(id).ok_or(CancelRefused::Unknown)?;
        let inner = query.inner();
        match (&inner.live, inner.state) {
            (Some(live), QueryState::Running) => {
                live.cancel.cancel();
                Ok(())
            }
            (_, QueryState::Planning) => Err(CancelRefused::NotStarted),
            (_, state) => Err(CancelRefused::Ended(state)),
        }
    }

    /// Forget the oldest ended queries beyond the bound.
    fn trim(&self) {
        forget_oldest_ended(&mut self.queries(), self.keep, |q| q.state().ended());
    }

    /// `strata.query_log`: the listed queries, one row each, read when it is queried.
    pub fn table(self: &Arc<Self>) -> Arc<dyn TableProvider> {
        let monitor = self.clone();
        Arc::new(SnapshotTable::new(
            query_log_schema(),
            Arc::new(move || query_log_batch(&monitor.list())),
        ))
    }
}

/// Forget the oldest of `entries` (oldest first) that `ended` says have ended, beyond the
/// `keep` most recent of them; those still running stay whatever their number.
pub(crate) fn forget_oldest_ended<T>(
    entries: &mut VecDeque<T>,
    keep: usize,
    ended: impl Fn(&T) -> bool,
) {
    let mut extra = entries
        .iter()
        .filter(|e| ended(e))
        .count()
        .saturating_sub(keep);
    entries.retain(|e| {
        let forget = extra > 0 && ended(e);
        if forget {
            extra -= 1;
        }
        !forget
    });
}

/// Why a query could not be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CancelRefused {
    /// No such query is listed.
    #[error("no such query")]
    Unknown,
    /// It is still being planned.
    #[error("the query is still being planned")]
    NotStarted,
    /// It has ended.
    #[error("the query has already ended ({})", .0.name())]
    Ended(QueryState),
}

/// One query, as the monitor lists it.
#[derive(Debug)]
pub struct Tracked {
    id: u64,
    session: String,
    user: Option<String>,
    sql: String,
    started: SystemTime,
    clock: Instant,
    rows: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: QueryState,
    /// Time from the start to the end of planning.
    planned: Option<Duration>,
    /// Time from the start to the end.
    ended: Option<Duration>,
    error: Option<String>,
    /// The plan, its cluster job and its cancel handle while it runs; dropped at the end, as
    /// a finished plan may still hold data (a join's build side).
    live: Option<Live>,
    /// The figures taken at the end.
    last: Last,
    /// The plan with its figures, taken at the end.
    last_plan: Option<PlanNode>,
    /// Its cluster job, kept after the end for its stages and tasks.
    ended_job: Option<Progress>,
}

struct Live {
    progress: Progress,
    cancel: CancelHandle,
    pool: Option<Arc<QueryPool>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

/// A query's figures: read from its plan while it runs, kept when it ends.
#[derive(Debug, Default, Clone, Copy)]
struct Last {
    stats: ScanStats,
    peak_memory: Option<u64>,
    cluster: bool,
}

impl Live {
    fn figures(&self) -> Last {
        Last {
            stats: self.progress.scan_stats(),
            peak_memory: self.pool.as_ref().map(|p| p.peak() as u64),
            cluster: self.progress.is_cluster_job(),
        }
    }

    fn plan(&self) -> Option<PlanNode> {
        self.progress.plan().map(|p| PlanNode::of(p.as_ref()))
    }
}

impl Tracked {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The query's number in its monitor.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Where the query is.
    pub fn state(&self) -> QueryState {
        self.inner().state
    }

    /// A handle on the running query's progress (plan metrics, cluster job), while it runs.
    pub fn progress(&self) -> Option<Progress> {
        self.inner().live.as_ref().map(|l| l.progress.clone())
    }

    /// A handle on the query's cluster job, running or ended; `None` for a local query.
    pub fn cluster_job(&self) -> Option<Progress> {
        let inner = self.inner();
        match &inner.live {
            Some(live) => live.progress.job_only(),
            None => inner.ended_job.clone(),
        }
    }

    /// The query's figures at this moment.
    pub fn info(&self) -> QueryInfo {
        let inner = self.inner();
        let last = match &inner.live {
            Some(live) => live.figures(),
            None => inner.last,
        };
        let elapsed = inner.ended.unwrap_or_else(|| self.clock.elapsed());
        let stats = last.stats;
        QueryInfo {
            id: self.id,
            session: self.session.clone(),
            user: self.user.clone(),
            sql: self.sql.clone(),
            state: inner.state,
            started_ms: millis(self.started),
            planning_ms: inner.planned.unwrap_or(elapsed).as_secs_f64() * 1e3,
            execution_ms: inner
                .planned
                .map(|p| elapsed.saturating_sub(p).as_secs_f64() * 1e3),
            elapsed_ms: elapsed.as_secs_f64() * 1e3,
            rows: self.rows.load(Ordering::Relaxed),
            progress: match inner.state {
                QueryState::Finished => Some(1.0),
                QueryState::Running => stats.fraction(),
                _ => None,
            },
            files: stats.files as u64,
            file_bytes: stats.file_bytes,
            bytes_read: stats.bytes_scanned,
            rows_read: stats.rows,
            peak_memory: last.peak_memory,
            spilled_bytes: stats.spilled_bytes,
            cluster: last.cluster,
            error: inner.error.clone(),
        }
    }

    /// The query's plan with each operator's figures: live while it runs, as they were at
    /// the end after it.
    pub fn plan(&self) -> Option<PlanNode> {
        let inner = self.inner();
        match &inner.live {
            Some(live) => live.plan(),
            None => inner.last_plan.clone(),
        }
    }
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Follows one query from its start to its end; dropped before the end, the query is listed
/// as cancelled.
#[derive(Debug)]
pub struct Tracker {
    query: Arc<Tracked>,
    monitor: Arc<Monitor>,
}

impl Tracker {
    /// The query's number.
    pub fn id(&self) -> u64 {
        self.query.id
    }

    /// Planning is over: the query runs.
    pub(crate) fn running(
        &self,
        progress: Progress,
        cancel: CancelHandle,
        pool: Option<Arc<QueryPool>>,
    ) {
        let mut inner = self.query.inner();
        inner.state = QueryState::Running;
        inner.planned = Some(self.query.clock.elapsed());
        inner.live = Some(Live {
            progress,
            cancel,
            pool,
        });
    }

    /// `rows` more rows of the result were read.
    pub(crate) fn rows(&self, rows: usize) {
        self.query.rows.fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// The query ended (`error`: how it failed, if it did).
    pub(crate) fn end(&self, state: QueryState, error: Option<String>) {
        {
            let mut inner = self.query.inner();
            if inner.state.ended() {
                return;
            }
            let now = self.query.clock.elapsed();
            inner.planned.get_or_insert(now);
            inner.ended = Some(now);
            inner.state = state;
            inner.error = error;
            if let Some(live) = inner.live.take() {
                inner.last = live.figures();
                inner.last_plan = live.plan();
                inner.ended_job = live.progress.job_only();
            }
        }
        self.monitor.trim();
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.end(
            QueryState::Cancelled,
            Some("the result was dropped before its end".into()),
        );
    }
}

/// One query's figures, as the dashboard's JSON and `strata.query_log` give them.
#[derive(Debug, Clone, Serialize)]
pub struct QueryInfo {
    /// Its number in the monitor.
    pub id: u64,
    /// The session that ran it.
    pub session: String,
    /// The signed-in user that ran it, on a server.
    pub user: Option<String>,
    /// Its SQL.
    pub sql: String,
    /// Where it is.
    pub state: QueryState,
    /// When it started, in milliseconds since 1970 (UTC).
    pub started_ms: i64,
    /// Time spent planning (so far, while it is planned).
    pub planning_ms: f64,
    /// Time spent executing, once planned.
    pub execution_ms: Option<f64>,
    /// Time from the start to the end, or to now.
    pub elapsed_ms: f64,
    /// Rows of its result read so far.
    pub rows: u64,
    /// The share of its scans done, when it can be told.
    pub progress: Option<f64>,
    /// Files its scans read.
    pub files: u64,
    /// The size of those files.
    pub file_bytes: u64,
    /// Bytes read from them.
    pub bytes_read: u64,
    /// Rows its scans produced.
    pub rows_read: u64,
    /// The most memory its operators held at once (local queries).
    pub peak_memory: Option<u64>,
    /// Bytes its operators spilled to disk.
    pub spilled_bytes: u64,
    /// Whether it ran as a cluster job.
    pub cluster: bool,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
}

/// One operator of a plan with its figures, and its inputs.
#[derive(Debug, Clone, Serialize)]
pub struct PlanNode {
    /// The operator, e.g. `HashJoinExec`.
    pub operator: String,
    /// Its one-line description, as `EXPLAIN` shows it.
    pub detail: String,
    /// Rows it produced so far.
    pub output_rows: Option<u64>,
    /// CPU time it spent, in nanoseconds, added up over its partitions.
    pub compute_ns: Option<u64>,
    /// Bytes it spilled to disk.
    pub spilled_bytes: Option<u64>,
    /// The most memory it held (operators that report it).
    pub peak_memory: Option<u64>,
    /// Partitions it produces.
    pub partitions: usize,
    /// Its inputs.
    pub children: Vec<PlanNode>,
}

impl PlanNode {
    /// `plan` and its inputs with their metrics at this moment.
    pub fn of(plan: &dyn ExecutionPlan) -> PlanNode {
        let metrics = plan.metrics();
        let sum = |name: &str| {
            metrics
                .as_ref()
                .and_then(|m| m.sum_by_name(name))
                .map(|v| v.as_usize() as u64)
        };
        let detail = displayable(plan).one_line().to_string();
        PlanNode {
            operator: plan.name().to_string(),
            detail: detail.trim_end().to_string(),
            output_rows: metrics
                .as_ref()
                .and_then(|m| m.output_rows())
                .map(|n| n as u64),
            compute_ns: metrics
                .as_ref()
                .and_then(|m| m.elapsed_compute())
                .map(|n| n as u64),
            spilled_bytes: sum("spilled_bytes"),
            peak_memory: sum("peak_mem_used"),
            partitions: plan.properties().partitioning.partition_count(),
            children: plan
                .children()
                .into_iter()
                .map(|c| PlanNode::of(c.as_ref()))
                .collect(),
        }
    }

    /// Operators in the plan, this one included.
    pub fn count(&self) -> usize {
        1 + self.children.iter().map(PlanNode::count).sum::<usize>()
    }
}

/// The columns of `strata.query_log`.
fn query_log_schema() -> SchemaRef {
    let time = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("session", DataType::Utf8, false),
        Field::new("user_name", DataType::Utf8, true),
        Field::new("sql", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("started", time, false),
        Field::new("planning_seconds", DataType::Float64, false),
        Field::new("execution_seconds", DataType::Float64, true),
        Field::new("seconds", DataType::Float64, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("files", DataType::UInt64, false),
        Field::new("bytes_read", DataType::UInt64, false),
        Field::new("rows_read", DataType::UInt64, false),
        Field::new("peak_memory", DataType::UInt64, true),
        Field::new("spilled_bytes", DataType::UInt64, false),
        Field::new("cluster", DataType::Boolean, false),
        Field::new("error", DataType::Utf8, true),
    ]))
}

/// The rows of `strata.query_log`: one per query in `q`.
fn query_log_batch(q: &[QueryInfo]) -> datafusion::error::Result<RecordBatch> {
    let strings = |f: fn(&QueryInfo) -> Option<&str>| -> ArrayRef {
        Arc::new(StringArray::from_iter(q.iter().map(f)))
    };
    let counts = |f: fn(&QueryInfo) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(q.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(q.iter().map(|q| q.id as i64))),
        strings(|q| Some(&q.session)),
        strings(|q| q.user.as_deref()),
        strings(|q| Some(&q.sql)),
        strings(|q| Some(q.state.name())),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(q.iter().map(|q| q.started_ms * 1000))
                .with_timezone("UTC"),
        ),
        Arc::new(Float64Array::from_iter_values(
            q.iter().map(|q| q.planning_ms / 1e3),
        )),
        Arc::new(Float64Array::from_iter(
            q.iter().map(|q| q.execution_ms.map(|ms| ms / 1e3)),
        )),
        Arc::new(Float64Array::from_iter_values(
            q.iter().map(|q| q.elapsed_ms / 1e3),
        )),
        counts(|q| q.rows),
        counts(|q| q.files),
        counts(|q| q.bytes_read),
        counts(|q| q.rows_read),
        Arc::new(UInt64Array::from_iter(q.iter().map(|q| q.peak_memory))),
        counts(|q| q.spilled_bytes),
        Arc::new(BooleanArray::from_iter(q.iter().map(|q| Some(q.cluster)))),
        strings(|q| q.error.as_deref()),
    ];
    Ok(RecordBatch::try_new(query_log_schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_queries_stay_and_only_the_last_ended_ones_are_kept() {
        let monitor = Arc::new(Monitor::new(2));
        let running = monitor.begin("s", None, "SELECT 1");
        let ids: Vec<u64> = (2..=4)
            .map(|n| {
                let t = monitor.begin("s", Some("ana"), &format!("SELECT {n}"));
                t.end(QueryState::Finished, None);
                t.id()
            })
            .collect();
        let listed: Vec<u64> = monitor.list().iter().map(|q| q.id).collect();
        assert_eq!(listed, vec![running.id(), ids[1], ids[2]]);
        assert_eq!(monitor.list()[0].state, QueryState::Planning);
        assert_eq!(monitor.list()[1].user.as_deref(), Some("ana"));
    }

    #[test]
    fn a_dropped_tracker_ends_its_query_as_cancelled_and_an_ended_one_keeps_its_end() {
        let monitor = Arc::new(Monitor::default());
        let dropped = monitor.begin("s", None, "SELECT 1").id();
        let failed = monitor.begin("s", None, "SELECT x");
        failed.end(QueryState::Failed, Some("no column x".into()));
        let failed_id = failed.id();
        drop(failed);
        let dropped = monitor.get(dropped).unwrap().info();
        assert_eq!(dropped.state, QueryState::Cancelled);
        assert!(dropped.error.unwrap().contains("dropped"));
        let failed = monitor.get(failed_id).unwrap().info();
        assert_eq!(failed.state, QueryState::Failed);
        assert_eq!(failed.error.as_deref(), Some("no column x"));
        assert_eq!(
            monitor.cancel(failed_id),
            Err(CancelRefused::Ended(QueryState::Failed))
        );
        assert_eq!(monitor.cancel(12345), Err(CancelRefused::Unknown));
    }
}
