//! Stopping a cancelled task's work on an executor. The executor cancels a task by dropping
//! the future that waits for it, but the task's partitions run in tasks of their own that
//! nothing stops: a cancelled job kept its executor's cores busy until its stages ended.
//! Here each stage's operators check a flag that dropping the task's future sets, and fail
//! at their next batch once it is set.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use ballista_core::JobId;
use ballista_core::client::BallistaClient;
use ballista_core::client_pool::{BallistaClientPool, PooledClient};
use ballista_core::extension::BallistaConfigGrpcEndpoint;
use ballista_core::serde::protobuf::{
    RuntimeStatsReport, ShuffleWritePartition, TaskColumnStats, WindowStateReport,
};
use ballista_core::utils::GrpcClientConfig;
use ballista_executor::execution_engine::{
    DefaultExecutionEngine, ExecutionEngine, QueryStageExecutor,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::unnest::UnnestExec;
use datafusion::physical_plan::work_table::WorkTableExec;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::prelude::SessionConfig;
use futures::{Stream, StreamExt};

/// The executor's engine: Ballista's, with every stage made to stop when its task is
/// cancelled, and the runtime filters of its joins planned where it runs
/// (see [`super::stage_filters`]).
pub(crate) struct StoppableEngine {
    inner: DefaultExecutionEngine,
}

impl StoppableEngine {
    pub(crate) fn new() -> Self {
        StoppableEngine {
            inner: DefaultExecutionEngine::with_client_pool(Arc::new(ClientPool::default())),
        }
    }
}

impl ExecutionEngine for StoppableEngine {
    fn create_query_stage_exec(
        &self,
        job_id: JobId,
        stage_id: usize,
        task_id: usize,
        global_output_partition_ids: Vec<usize>,
        plan: Arc<dyn ExecutionPlan>,
        work_dir: &str,
        config: &SessionConfig,
    ) -> Result<Arc<dyn QueryStageExecutor>> {
        let stop = Arc::new(AtomicBool::new(false));
        let filters = super::stage_filters::with_stage_filters(config);
        // The writer at the top stays as it is (the engine looks for it); what it drains
        // plans its runtime filters and checks the flag.
        let children = plan
            .children()
            .into_iter()
            .map(|child| {
                let child = match &filters {
                    Some(filters) => super::stage_filters::plan_stage_filters(
                        Arc::clone(child),
                        filters.options(),
                    )?,
                    None => Arc::clone(child),
                };
                let child = crate::optimizer::InMemoryNestedLoops::guard(child)?;
                with_stop_checks(child, &stop)
            })
            .collect::<Result<Vec<_>>>()?;
        let plan = if children.is_empty() {
            plan
        } else {
            crate::optimizer::with_children(plan, children)?
        };
        let inner = self.inner.create_query_stage_exec(
            job_id,
            stage_id,
            task_id,
            global_output_partition_ids,
            plan,
            work_dir,
            config,
        )?;
        Ok(Arc::new(StoppableStage {
            inner,
            stop,
            filters: filters.is_some(),
        }))
    }
}

/// Whether a node makes batches of its own (a scan, a join, a sort's output, an unnest)
/// rather than passing on what it polls: where a busy consumer's polling ends up.
fn makes_batches(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if plan.downcast_ref::<WorkTableExec>().is_some() {
        // A recursive query finds its work table by type when it runs.
        return false;
    }
    plan.children().is_empty()
        || crate::optimizer::is_join(plan)
        || plan.downcast_ref::<SortExec>().is_some()
        || plan.downcast_ref::<UnnestExec>().is_some()
}

/// `plan` with a check of `stop` above it and above every node that makes batches.
fn with_stop_checks(
    plan: Arc<dyn ExecutionPlan>,
    stop: &Arc<AtomicBool>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let wrap = |node: Arc<dyn ExecutionPlan>| -> Arc<dyn ExecutionPlan> {
        Arc::new(StopOnCancelExec {
            input: node,
            stop: Arc::clone(stop),
        })
    };
    let checked = plan
        .transform_up(|node| {
            if makes_batches(&node) {
                Ok(Transformed::yes(wrap(node)))
            } else {
                Ok(Transformed::no(node))
            }
        })?
        .data;
    if checked.downcast_ref::<StopOnCancelExec>().is_some() {
        Ok(checked)
    } else {
        Ok(wrap(checked))
    }
}

/// A stage whose operators stop once the future running it is dropped (the task cancelled).
struct StoppableStage {
    inner: Arc<dyn QueryStageExecutor>,
    stop: Arc<AtomicBool>,
    /// Whether its runtime filters were planned, and so must be filled in as it runs.
    filters: bool,
}

/// Sets the flag when dropped before [`StopWhenDropped::finished`].
struct StopWhenDropped(Option<Arc<AtomicBool>>);

impl StopWhenDropped {
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for StopWhenDropped {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for StoppableStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl fmt::Display for StoppableStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait::async_trait]
impl QueryStageExecutor for StoppableStage {
    async fn execute_query_stage(
        &self,
        task_id: usize,
        context: Arc<TaskContext>,
    ) -> Result<Vec<ShuffleWritePartition>> {
        let guard = StopWhenDropped(Some(Arc::clone(&self.stop)));
        let context = if self.filters {
            // Run with the runtime filters on, as they were planned.
            let config = super::stage_filters::filters_on(context.session_config());
            let runtime = context.runtime_env();
            Arc::new(crate::optimizer::task_context_with(
                &context, config, runtime,
            ))
        } else {
            context
        };
        let result = self.inner.execute_query_stage(task_id, context).await;
        guard.finished();
        result
    }

    fn collect_plan_metrics(&self) -> Vec<MetricsSet> {
        self.inner.collect_plan_metrics()
    }

    fn collect_runtime_stats_reports(&self) -> Vec<RuntimeStatsReport> {
        self.inner.collect_runtime_stats_reports()
    }

    fn collect_window_state_reports(&self) -> Result<Vec<WindowStateReport>> {
        self.inner.collect_window_state_reports()
    }

    fn collect_column_stats(&self) -> Vec<TaskColumnStats> {
        self.inner.collect_column_stats()
    }
}

/// Passes its input's batches on until `stop` is set, then fails.
#[derive(Debug)]
struct StopOnCancelExec {
    input: Arc<dyn ExecutionPlan>,
    stop: Arc<AtomicBool>,
}

impl DisplayAs for StopOnCancelExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("StopOnCancelExec")
    }
}

impl ExecutionPlan for StopOnCancelExec {
    fn name(&self) -> &str {
        "StopOnCancelExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    crate::optimizer::no_expressions!();

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(StopOnCancelExec {
            input: crate::optimizer::only_child("StopOnCancelExec", children)?,
            stop: Arc::clone(&self.stop),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Ok(Box::pin(StopOnCancelStream {
            input: self.input.execute(partition, context)?,
            stop: Arc::clone(&self.stop),
            stopped: false,
        }))
    }
}

struct StopOnCancelStream {
    input: SendableRecordBatchStream,
    stop: Arc<AtomicBool>,
    stopped: bool,
}

impl Stream for StopOnCancelStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.stopped {
            return Poll::Ready(None);
        }
        if self.stop.load(Ordering::Relaxed) {
            self.stopped = true;
            return Poll::Ready(Some(Err(DataFusionError::Execution(
                "task cancelled".into(),
            ))));
        }
        self.input.poll_next_unpin(cx)
    }
}

impl RecordBatchStream for StopOnCancelStream {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}

/// Connections to other executors for shuffle reads, kept for reuse (Ballista's own pool
/// is private to its executor process).
#[derive(Default)]
struct ClientPool {
    idle: Arc<Mutex<IdleClients>>,
}

/// Idle connections by executor host, port and settings.
type IdleClients = HashMap<(String, u16, GrpcClientConfig), Vec<BallistaClient>>;

impl fmt::Debug for ClientPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientPool")
    }
}

/// Idle connections kept per executor.
const IDLE_PER_PEER: usize = 8;

#[async_trait::async_trait]
impl BallistaClientPool for ClientPool {
    async fn acquire(
        &self,
        host: &str,
        port: u16,
        config: &GrpcClientConfig,
        customize_endpoint: Option<Arc<BallistaConfigGrpcEndpoint>>,
    ) -> ballista_core::error::Result<PooledClient> {
        let key = (host.to_string(), port, config.clone());
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&key)
            .and_then(Vec::pop);
        let client = match idle {
            Some(client) => client,
            None => {
                BallistaClient::try_new(
                    host,
                    port,
                    config.max_message_size,
                    config.use_tls,
                    customize_endpoint,
                    config.io_retries_times,
                    config.io_retry_wait_time_ms,
                    config.initial_connection_window_size,
                    config.initial_stream_window_size,
                )
                .await?
            }
        };
        let pool = Arc::clone(&self.idle);
        Ok(PooledClient::new(
            client,
            Box::new(move |client| {
                let mut idle = pool.lock().unwrap_or_else(|p| p.into_inner());
                let kept = idle.entry(key).or_default();
                if kept.len() < IDLE_PER_PEER {
                    kept.push(client);
                }
            }),
        ))
    }

    async fn evict_idle(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
