//! Distributed execution on Apache DataFusion Ballista: the runner that sends plans to a
//! scheduler, and a whole cluster (scheduler and executors) inside this process for trying
//! things out and for tests.

mod codec;
mod compressed;
mod inline_builds;
mod jobs;
mod joins;
mod pieces;
mod reduce;
mod restarts;
mod scheduler_api;
mod server;
mod slots;
mod stage_filters;
mod stage_reads;
mod stop;
mod tails;
mod views;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use ballista_core::extension::SessionStateExt;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::datasource::{DefaultTableSource, MemTable, source_as_provider};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{LogicalPlan, TableScan, TableScanBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{collect, execute_stream};
use futures::{Stream, StreamExt};

pub use codec::{StrataLogicalCodec, StrataPhysicalCodec};
pub use jobs::{
    ClusterJob, ExecutorInfo, JobStats, JobSummary, StageStats, TASK_WINDOW, TaskSpan, TaskState,
    cancel_job, executors, job_list, job_stats, recent_jobs,
};
pub use server::{
    ExecutorOptions, LocalCluster, Scheduling, cluster_config, run_executor, serve_scheduler,
    start_local,
};

use crate::dataset::DatasetTable;
use crate::error::{Error, Result};
use crate::runner::{Execution, LocalRunner, Runner};

/// Runs queries on a Ballista cluster through its scheduler.
#[derive(Debug, Clone)]
pub struct ClusterRunner {
    /// `http://host:port` of the scheduler.
    scheduler: String,
    /// The cluster in this process the runner uses, if it started one.
    local: Option<Arc<LocalCluster>>,
}

impl ClusterRunner {
    /// A runner for the scheduler at `url` (`df://host:port` or `http://host:port`).
    pub fn new(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("df://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| {
                Error::Config(format!(
                    "cluster address '{url}' should look like df://host:port"
                ))
            })?;
        Ok(ClusterRunner {
            scheduler: format!("http://{rest}"),
            local: None,
        })
    }

    /// A runner for a new cluster in this process (see [`start_local`]).
    pub async fn start_local(state: &SessionState, executors: usize, slots: usize) -> Result<Self> {
        let cluster = start_local(state, executors, slots).await?;
        let mut runner = ClusterRunner::new(&cluster.url)?;
        runner.local = Some(Arc::new(cluster));
        Ok(runner)
    }

    /// A one-line error when `message` says the scheduler cannot be reached or went away.
    fn unreachable(&self, message: &str) -> Option<Error> {
        let m = message.to_ascii_lowercase();
        let reason = if m.contains("connection refused") || m.contains("tcp connect error") {
            "connection refused"
        } else if m.contains("dns error") || m.contains("failed to lookup address") {
            "unknown host"
        } else if [
            "h2 protocol error",
            "broken pipe",
            "connection reset",
            "transport error",
        ]
        .iter()
        .any(|k| m.contains(k))
        {
            "connection lost"
        } else {
            return None;
        };
        let addr = self.scheduler.trim_start_matches("http://");
        Some(Error::Execution(format!(
            "cluster scheduler at df://{addr} is unreachable ({reason})"
        )))
    }
}

#[async_trait]
impl Runner for ClusterRunner {
    fn name(&self) -> &str {
        "cluster"
    }

    fn scheduler(&self) -> Option<&str> {
        Some(&self.scheduler)
    }

    async fn execute(&self, state: &SessionState, plan: LogicalPlan) -> Result<Execution> {
        // Statements that read no dataset (`SELECT 1`, VALUES, DESCRIBE, the information
        // schema, in-memory tables alone) have nothing to distribute.
        if !reads_datasets(&plan)? || writes_csv(&plan) || writes_database(&plan) {
            return LocalRunner.execute(state, plan).await;
        }
        let plan = materialize_other_tables(state, plan).await?;
        let plan = spell_out_empty_relations(plan)?;
        // Rebuilding the state must not create a fresh (empty) default catalog in the catalog
        // list it shares with the engine.
        let mut cluster = state.clone();
        cluster
            .config_mut()
            .options_mut()
            .catalog
            .create_default_catalog_and_schema = false;
        // Jobs are named after the tables they read, for `\jobs` and the REST API, plus a
        // number unique to this query so that dropping the query can cancel its job.
        let name = format!(
            "{} ({}.{})",
            table_names(&plan)?.join(", "),
            std::process::id(),
            NEXT_JOB.fetch_add(1, Ordering::Relaxed)
        );
        cluster
            .config_mut()
            .options_mut()
            .set("ballista.job.name", &name)?;
        let cluster = cluster.upgrade_for_ballista(self.scheduler.clone())?;
        // The plan is optimized already (and the scheduler optimizes it again); optimizing
        // here would undo the rewrites above.
        let cluster =
            datafusion::execution::session_state::SessionStateBuilder::new_from_existing(cluster)
                .with_optimizer_rules(Vec::new())
                .build();
        // A plan too deep for one protobuf message travels in pieces.
        let physical = cluster
            .create_physical_plan(&pieces::in_pieces(plan.clone())?)
            .await
            .map_err(|e| self.unreachable(&e.to_string()).unwrap_or_else(|| e.into()))?;
        let stream = execute_stream(physical.clone(), cluster.task_ctx())?;
        let schema = stream.schema();
        let stream = rerun_restarted_jobs(physical.clone(), cluster.task_ctx(), stream);
        let handle = Arc::new(ClusterJob::new(&self.scheduler, &name));
        let job = Arc::new(Job {
            state: state.clone(),
            plan,
            runner: self.clone(),
            handle: handle.clone(),
            finished: AtomicBool::new(false),
        });
        let end = job.clone();
        let stream = stream
            .then(move |item| {
                let job = job.clone();
                async move {
                    match item {
                        Ok(batch) => Ok(batch),
                        Err(e) => {
                            job.finished.store(true, Ordering::Relaxed);
                            Err(DataFusionError::External(Box::new(job.error(e).await)))
                        }
                    }
                }
            })
            .chain(
                futures::stream::once(async move { end.finished.store(true, Ordering::Relaxed) })
                    .filter_map(|_| async { None }),
            );
        Ok(Execution {
            plan: physical,
            stream: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
            job: Some(handle),
        })
    }
}

static NEXT_JOB: AtomicU64 = AtomicU64::new(1);

/// How many more times a query runs when its job failed because a stage had to start over.
const RERUNS: usize = 2;

/// Whether `text` says a result could not be fetched from the executor holding it.
fn result_lost(text: &str) -> bool {
    text.contains("FetchFailed")
}

/// Whether a query whose job failed with `text` is worth running again: a stage of its
/// job had to start over ([`restarts`]), or the executor holding its result was lost.
fn runs_again(text: &str) -> bool {
    restarts::is_restart_failure(text) || result_lost(text)
}

/// `stream`, except that a query whose job fails in a way [`runs_again`] accepts before any
/// row arrived runs again, up to [`RERUNS`] times.
fn rerun_restarted_jobs(
    plan: Arc<dyn ExecutionPlan>,
    ctx: Arc<TaskContext>,
    stream: SendableRecordBatchStream,
) -> impl Stream<Item = datafusion::error::Result<RecordBatch>> + Send {
    futures::stream::unfold(Some((stream, RERUNS)), move |state| {
        let (plan, ctx) = (plan.clone(), ctx.clone());
        async move {
            let (mut stream, mut reruns) = state?;
            loop {
                match stream.next().await {
                    None => return None,
                    // After the first batch the job has succeeded: nothing runs again.
                    Some(Ok(batch)) => return Some((Ok(batch), Some((stream, 0)))),
                    Some(Err(e)) if reruns > 0 && runs_again(&e.to_string()) => {
                        reruns -= 1;
                        match execute_stream(plan.clone(), ctx.clone()) {
                            Ok(next) => stream = next,
                            Err(e) => return Some((Err(e), None)),
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), None)),
                }
            }
        }
    })
}

/// A query running on the cluster. Its errors read as the task's own; dropped before its end
/// (Ctrl-C, a reader that stops early), it cancels its job, which would otherwise keep the
/// executors busy.
struct Job {
    state: SessionState,
    plan: LogicalPlan,
    runner: ClusterRunner,
    /// The job on the scheduler, named uniquely for this query.
    handle: Arc<ClusterJob>,
    /// Set once the result has ended, with its last batch or an error.
    finished: AtomicBool,
}

impl Drop for Job {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::Relaxed) {
            // Best effort: a scheduler that is gone has no job to cancel.
            let _ = self.handle.cancel();
        }
    }
}

impl Job {
    /// A failed job as a user would want to read it: the task's own error, not the layers of
    /// job, stage and task wrapping; a file that fails to decode is named, as in local runs.
    async fn error(&self, err: DataFusionError) -> Error {
        let text = err.strip_backtrace();
        if result_lost(&text) {
            return Error::Execution(format!(
                "an executor holding part of the result was lost before the result was read: {}",
                task_message(&text)
            ));
        }
        // A job that failed was reported by a scheduler that answered: only other errors
        // are about reaching it.
        let job_failed = text.contains("Job ") && text.contains(" failed: ");
        if !job_failed && let Some(e) = self.runner.unreachable(&text) {
            return e;
        }
        let message = task_message(&text);
        // Ballista words both causes alike.
        if restarts::is_restart_failure(&message) {
            return Error::Execution(format!(
                "the cluster stopped the query's job {} times in a row: executors were lost and \
                 a stage had to start over after its output was read, or an executor could not \
                 take the job's tasks (its log says why); run the query again",
                RERUNS + 1
            ));
        }
        if text.contains("ResourcesExhausted(") {
            return Error::ResourcesExhausted(crate::error::out_of_memory(&message));
        }
        if message.contains("Task cancelled") || message.contains("job cancelled") {
            return Error::Cancelled;
        }
        // The client reads the same storage as the executors: plan the scans here to find
        // the file.
        let local = self.state.create_physical_plan(&self.plan).await.ok();
        crate::engine::diagnose(local, Some(self.state.task_ctx()), message).await
    }
}

/// Whether `plan` (subqueries included) scans a dataset.
fn reads_datasets(plan: &LogicalPlan) -> Result<bool> {
    let mut found = false;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && source_as_provider(&scan.source).is_ok_and(|p| {
                p.is::<DatasetTable>() || crate::databases::is_database_table(p.as_ref())
            })
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(found)
}

/// The tables `plan` scans, in order of first appearance.
fn table_names(plan: &LogicalPlan) -> Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let name = scan.table_name.table().to_string();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(names)
}

/// Whether `plan` writes CSV files. Those run here: a CSV writer's options do not survive
/// the trip to an executor in DataFusion 55 (dates come out empty, every field quoted;
/// apache/datafusion#24623, fixed in 56).
fn writes_csv(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Copy(copy) if copy.file_type.get_ext().eq_ignore_ascii_case("csv"))
}

/// Whether `plan` writes into a database table. Those run here: the write is one
/// transaction, on one connection of this process.
fn writes_database(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Dml(dml)
        if source_as_provider(&dml.target)
            .is_ok_and(|p| crate::databases::is_database_table(p.as_ref())))
}

/// Spell out empty relations the optimizer left behind (a subquery proven empty) as a
/// filtered-out row of typed nulls under the same names. A plan's empty relation travels
/// without its columns, and a mark join above one then loses its mark column's qualifier: two
/// bare `mark` columns, and the scheduler rejects the plan.
fn spell_out_empty_relations(plan: LogicalPlan) -> Result<LogicalPlan> {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{EmptyRelation, LogicalPlanBuilder, lit};
    let plan = plan.transform_up_with_subqueries(|node| {
        let LogicalPlan::EmptyRelation(empty) = &node else {
            return Ok(Transformed::no(node));
        };
        if empty.produce_one_row || empty.schema.fields().is_empty() {
            return Ok(Transformed::no(node));
        }
        let qualifiers: Vec<_> = empty.schema.iter().map(|(q, _)| q.cloned()).collect();
        if qualifiers.iter().any(|q| *q != qualifiers[0]) {
            return Ok(Transformed::no(node));
        }
        let columns: Option<Vec<_>> = empty
            .schema
            .iter()
            .map(|(_, f)| {
                ScalarValue::try_from(f.data_type())
                    .ok()
                    .map(|null| lit(null).alias(f.name()))
            })
            .collect();
        let Some(columns) = columns else {
            return Ok(Transformed::no(node));
        };
        let one_row = LogicalPlan::EmptyRelation(EmptyRelation {
            produce_one_row: true,
            schema: Arc::new(datafusion::common::DFSchema::empty()),
        });
        let mut builder = LogicalPlanBuilder::from(one_row)
            .project(columns)?
            .filter(lit(false))?;
        if let Some(q) = qualifiers[0].clone() {
            builder = builder.alias(q)?;
        }
        Ok(Transformed::yes(builder.build()?))
    })?;
    Ok(plan.data)
}

/// Whether a scanned table travels to the cluster as it is: datasets as their recipe,
/// in-memory tables as their data.
fn travels(scan: &TableScan) -> bool {
    source_as_provider(&scan.source).is_ok_and(|p| {
        p.is::<DatasetTable>()
            || p.is::<MemTable>()
            || crate::databases::is_database_table(p.as_ref())
    })
}

/// Replace scans of tables that cannot be described to another process (table functions
/// such as `generate_series`, the information schema) by their rows, read here.
async fn materialize_other_tables(state: &SessionState, plan: LogicalPlan) -> Result<LogicalPlan> {
    let mut scans = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && !travels(scan)
        {
            scans.push(scan.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if scans.is_empty() {
        return Ok(plan);
    }
    let mut replacements = Vec::with_capacity(scans.len());
    for scan in scans {
        let provider = source_as_provider(&scan.source)?;
        let exec = provider
            .scan(state, None, &scan.filters, scan.fetch)
            .await?;
        let batches = collect(exec, state.task_ctx()).await?;
        let table = MemTable::try_new(provider.schema(), vec![batches])?;
        let source: Arc<DefaultTableSource> = Arc::new(DefaultTableSource::new(Arc::new(table)));
        // The rows already had the scan's filters and limit applied.
        let replaced = TableScanBuilder::new(scan.table_name.clone(), source)
            .with_projection(scan.projection.clone())
            .build()?;
        replacements.push((scan, replaced));
    }
    let plan = plan
        .transform_up_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = &node
                && let Some((_, new)) = replacements.iter().find(|(old, _)| old == scan)
            {
                return Ok(Transformed::yes(LogicalPlan::TableScan(new.clone())));
            }
            Ok(Transformed::no(node))
        })?
        .data;
    Ok(plan)
}

/// A debug-printed protobuf `DecodeError` in `message` (its description and the path of
/// every message it was nested in) as its description in words.
fn short_decode_error(message: &str) -> String {
    let Some(i) = message.find("DecodeError { description: ") else {
        return message.to_string();
    };
    let rest = &message[i + "DecodeError { description: ".len()..];
    let end = rest
        .find(", stack: ")
        .or_else(|| rest.find(" }"))
        .unwrap_or(rest.len());
    let description = rest[..end].trim_matches('"');
    let description = match description {
        "RecursionLimitReached" => "it nests more than the 100 messages protobuf allows",
        other => other,
    };
    format!("{}{description}", &message[..i])
}

/// The innermost message of Ballista's "Job J failed: Job failed due to stage S failed: Task
/// failed due to runtime execution error: DataFusionError(...(\"message\"))" text.
fn task_message(text: &str) -> String {
    let mut s = text.trim();
    for marker in [
        "Task failed due to runtime execution error: ",
        "Task failed due to IO error: ",
        "Job failed due to stage ",
    ] {
        if let Some(i) = s.rfind(marker) {
            s = &s[i + marker.len()..];
            if marker.starts_with("Job") {
                s = s.split_once("failed: ").map(|(_, r)| r).unwrap_or(s);
            }
            break;
        }
    }
    if s.starts_with("Job ") {
        s = s.split_once(" failed: ").map(|(_, r)| r).unwrap_or(s);
    }
    // A request the scheduler answered with an error status, debug-printed: its message.
    if let Some(i) = s.find("Status { code: ")
        && let Some(j) = s[i..].find(", message: \"")
    {
        let message = unescape_literal(&s[i + j + ", message: \"".len()..]);
        let message = message
            .strip_prefix("Could not parse plan: ")
            .unwrap_or(&message);
        let message = message
            .strip_prefix("DataFusion error: ")
            .unwrap_or(message);
        return format!(
            "the cluster's scheduler refused the query: {}",
            short_decode_error(&crate::error::clean_message(message))
        );
    }
    // Debug-printed errors: variant names and parentheses around one string literal.
    let wrapped = s.find("(\"").is_some_and(|i| {
        s[..i]
            .chars()
            .all(|c| c.is_alphanumeric() || c == '(' || c == '_')
    });
    if wrapped && let Some(i) = s.find("(\"") {
        return crate::error::clean_message(&unescape_literal(&s[i + 2..]));
    }
    crate::error::clean_message(s.trim_end())
}

/// The text of a Rust string literal (after its opening quote) up to its closing quote.
fn unescape_literal(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('0') => out.push('\0'),
                Some('u') => {
                    let code: String = chars.by_ref().skip(1).take_while(|&c| c != '}').collect();
                    if let Some(ch) = u32::from_str_radix(&code, 16).ok().and_then(char::from_u32) {
                        out.push(ch);
                    }
                }
                Some(other) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{runs_again, task_message};

    #[test]
    fn lost_executors_make_a_query_run_again_and_other_failures_do_not() {
        assert!(runs_again(
            "Execution error: Job 1 failed: task could not be prepared or was rejected by executor"
        ));
        assert!(runs_again(
            "Execution error: FetchFailed(\"e1\", 2, 0, \"transport error\")"
        ));
        assert!(!runs_again(
            "Execution error: Job 1 failed: Job failed due to stage 2 failed: Divide by zero error"
        ));
    }

    #[test]
    fn job_failures_read_as_the_task_error() {
        let text = "Execution error: Job 038G2DJFM8000 failed: Job failed due to stage 0 failed: Task failed due to runtime execution error: DataFusionError(Shared(External(ArrowError(ParseError(\"Error while parsing value 'abc' as type 'Int64' for column 1 at line 3. Row data: '[3,abc]'\")))))\n";
        assert_eq!(
            task_message(text),
            "Error while parsing value 'abc' as type 'Int64' for column 1 at line 3. Row data: '[3,abc]'"
        );
        assert_eq!(
            task_message(
                "Job 1 failed: Job failed due to stage 2 failed: Stage 2 has failed 4 times\n"
            ),
            "Stage 2 has failed 4 times"
        );
        assert_eq!(task_message("something else"), "something else");
        assert_eq!(
            task_message(
                "Execution error: Status { code: InvalidArgument, message: \"Could not parse plan: DataFusion error: Internal error: failed to decode logical plan: DecodeError { description: \\\"unexpected end\\\" }.\\nThis issue was likely caused by a bug in DataFusion's code. Please help us.\", metadata: MetadataMap { headers: {} }, source: None }"
            ),
            "the cluster's scheduler refused the query: failed to decode logical plan: unexpected end"
        );
        // A plan nested too deeply, without the path of messages prost prints with it.
        assert_eq!(
            task_message(
                "Execution error: Status { code: InvalidArgument, message: \"Could not parse plan: DataFusion error: Internal error: failed to decode logical plan: DecodeError { description: RecursionLimitReached, stack: [(\\\"LogicalExprNode\\\", \\\"expr_type\\\"), (\\\"ProjectionNode\\\", \\\"input\\\")] }.\", metadata: MetadataMap { headers: {} }, source: None }"
            ),
            "the cluster's scheduler refused the query: failed to decode logical plan: it nests more than the 100 messages protobuf allows"
        );
    }
}
