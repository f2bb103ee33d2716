//! Subplans a query computes more than once (a common table expression used twice), run
//! once and replayed to each use.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::runtime::JoinSet;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Volatility;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    displayable,
};
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt, TryStreamExt, stream};

use super::{is_join, is_recursive, only_child, setting_on};

/// Runs each subplan that appears more than once in a query once, and hands its result to
/// every place that uses it.
///
/// DataFusion inlines a common table expression wherever it is named, so TPC-H q15 (its
/// `revenue0` view is read by the query and by a scalar subquery) aggregates `lineitem`
/// twice. Two subtrees are the same when they print the same, read only files (whose paths
/// and byte ranges are part of what is printed), and call no volatile function (`random()`
/// gives each use its own values). The rule runs before DataFusion pushes runtime filters
/// down, so that no join's filter for one use ends up in the shared subplan.
///
/// `SET strata.share_subplans = false` turns it off.
#[derive(Debug, Default)]
pub struct ShareSubplans;

impl PhysicalOptimizerRule for ShareSubplans {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let enabled = setting_on(config, |o| o.share_subplans);
        if !enabled || is_recursive(&plan) {
            return Ok(plan);
        }
        let seen = repeated(&plan, shareable)?;
        if seen.is_empty() {
            return Ok(plan);
        }
        let mut states: HashMap<String, Arc<SharedState>> = HashMap::new();
        let shared = plan
            .transform_down(|node| {
                let Some(key) = shareable(&node).filter(|k| seen.contains(k)) else {
                    return Ok(Transformed::no(node));
                };
                let id = states.len() + 1;
                let state = states
                    .entry(key)
                    .or_insert_with(|| Arc::new(SharedState::new(id)));
                state.uses.fetch_add(1, Ordering::Relaxed);
                let node: Arc<dyn ExecutionPlan> =
                    Arc::new(SharedExec::new(node, Arc::clone(state)));
                Ok(Transformed::new(node, true, TreeNodeRecursion::Jump))
            })?
            .data;
        // A subtree seen twice only inside two copies of a larger shared one is left with
        // one use: it needs no sharing.
        shared
            .transform_up(|node| match node.downcast_ref::<SharedExec>() {
                Some(s) if s.state.use_count() < 2 => Ok(Transformed::yes(Arc::clone(&s.input))),
                _ => Ok(Transformed::no(node)),
            })
            .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "share_subplans"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// What identifies `node`'s subtree, when it is worth sharing and safe to share.
///
/// Worth it: an aggregation's final step or a join, over at least one file scan.
fn shareable(node: &Arc<dyn ExecutionPlan>) -> Option<String> {
    let worth = match node.downcast_ref::<AggregateExec>() {
        Some(agg) => !matches!(agg.mode(), AggregateMode::Partial),
        None => is_join(node),
    };
    (worth && same_each_run(node)).then(|| {
        format!(
            "{:?}\n{}",
            node.schema(),
            displayable(node.as_ref()).indent(true)
        )
    })
}

/// The keys that `key` gives to more than one node of `plan`.
pub(crate) fn repeated(
    plan: &Arc<dyn ExecutionPlan>,
    key: impl Fn(&Arc<dyn ExecutionPlan>) -> Option<String>,
) -> Result<HashSet<String>> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    plan.apply(|node| {
        if let Some(k) = key(node) {
            *seen.entry(k).or_default() += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, _)| k)
        .collect())
}

/// Whether two copies of `node`'s subtree that print the same compute the same rows, and it
/// reads at least one file: every node is one of DataFusion's, whose printed form covers
/// what it computes; every leaf is a file scan or yields fixed rows; no expression is
/// volatile or refers to a scalar subquery (printed the same before it runs, whatever it
/// computes).
pub(crate) fn same_each_run(node: &Arc<dyn ExecutionPlan>) -> bool {
    let mut safe = true;
    let mut scans = 0;
    let walked = node.apply(|n| {
        if !KNOWN.contains(&n.name()) {
            safe = false;
        } else if let Some(scan) = n.downcast_ref::<DataSourceExec>() {
            safe &= scan
                .data_source()
                .downcast_ref::<FileScanConfig>()
                .is_some();
            scans += 1;
        }
        n.apply_expressions(&mut |e| {
            safe &= !e.exists(|e| Ok(volatile(e)))?;
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(if safe {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    walked.is_ok() && safe && scans > 0
}

/// Operators whose printed form says all they compute from their input.
const KNOWN: &[&str] = &[
    "AggregateExec",
    "BoundedWindowAggExec",
    "BufferExec",
    "CoalesceBatchesExec",
    "CoalescePartitionsExec",
    "CooperativeExec",
    "CrossJoinExec",
    "DataSourceExec",
    "EmptyExec",
    "FilterExec",
    "GlobalLimitExec",
    "HashJoinExec",
    "InterleaveExec",
    "LocalLimitExec",
    "NestedLoopJoinExec",
    "NullableSideExec",
    "PlaceholderRowExec",
    "ProjectionExec",
    "RepartitionExec",
    "SortExec",
    "SortMergeJoinExec",
    "SortPreservingMergeExec",
    "UnionExec",
    "WindowAggExec",
];

fn volatile(e: &Arc<dyn PhysicalExpr>) -> bool {
    if let Some(f) = e.downcast_ref::<ScalarFunctionExpr>() {
        return f.fun().signature().volatility == Volatility::Volatile;
    }
    // A scalar subquery's value prints as `<pending>` until it is known.
    e.to_string().starts_with("scalar_subquery(")
}

/// The rows of every partition of a shared subplan, or why there are none.
type Outcome = std::result::Result<Option<Arc<Rows>>, Arc<DataFusionError>>;

/// The result of a shared subplan, held for its uses.
struct Rows {
    partitions: Vec<Vec<RecordBatch>>,
    _reservation: MemoryReservation,
}

/// What the uses of one shared subplan have in common.
struct SharedState {
    id: usize,
    uses: AtomicUsize,
    /// Started by the first use to run: the subplan's partitions, each collected by its own
    /// task. `None` in the outcome: they did not fit in memory.
    run: Mutex<Option<Shared<BoxFuture<'static, Outcome>>>>,
}

impl SharedState {
    fn new(id: usize) -> Self {
        Self {
            id,
            uses: AtomicUsize::new(0),
            run: Mutex::new(None),
        }
    }

    fn use_count(&self) -> usize {
        self.uses.load(Ordering::Relaxed)
    }

    /// The run of `input`, started now unless another use started it.
    ///
    /// All partitions start together and in tasks of their own: a join inside may wait for
    /// all of its partitions, and a use must not wait for another use to be polled.
    fn run(
        &self,
        input: &Arc<dyn ExecutionPlan>,
        context: &Arc<TaskContext>,
    ) -> Result<Shared<BoxFuture<'static, Outcome>>> {
        let mut run = self
            .run
            .lock()
            .map_err(|_| DataFusionError::Internal("shared subplan lock poisoned".into()))?;
        if let Some(run) = &*run {
            return Ok(run.clone());
        }
        let count = input.output_partitioning().partition_count();
        let streams = (0..count)
            .map(|p| input.execute(p, Arc::clone(context)))
            .collect::<Result<Vec<_>>>()?;
        let reservation =
            MemoryConsumer::new(format!("SharedExec[{}]", self.id)).register(context.memory_pool());
        let future = collect_all(streams, reservation).boxed().shared();
        *run = Some(future.clone());
        Ok(future)
    }
}

async fn collect_all(
    streams: Vec<SendableRecordBatchStream>,
    reservation: MemoryReservation,
) -> Outcome {
    let mut tasks = JoinSet::new();
    for (p, mut stream) in streams.into_iter().enumerate() {
        let reservation = reservation.new_empty();
        tasks.spawn(async move {
            let mut batches = vec![];
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                if reservation.try_grow(batch.get_array_memory_size()).is_err() {
                    return Ok((p, None));
                }
                batches.push(batch);
            }
            Ok::<_, DataFusionError>((p, Some((batches, reservation))))
        });
    }
    let mut partitions = vec![vec![]; tasks.len()];
    while let Some(done) = tasks.join_next().await {
        let done = done.map_err(|e| Arc::new(DataFusionError::External(Box::new(e))))?;
        match done.map_err(Arc::new)? {
            (p, Some((batches, part))) => {
                reservation.grow(part.free());
                partitions[p] = batches;
            }
            // Each use computes the subplan itself; the other partitions' tasks stop here.
            (_, None) => return Ok(None),
        }
    }
    Ok(Some(Arc::new(Rows {
        partitions,
        _reservation: reservation,
    })))
}

/// One use of a subplan that the query computes once (see [`ShareSubplans`]).
///
/// The first use to run starts the subplan, and every use replays its rows once it has
/// finished. When they do not fit in the memory limit, each use runs its own copy instead.
pub struct SharedExec {
    input: Arc<dyn ExecutionPlan>,
    state: Arc<SharedState>,
    /// This use's own copy of the subplan, made when the shared rows did not fit.
    own: Arc<Mutex<Option<Arc<dyn ExecutionPlan>>>>,
}

impl SharedExec {
    fn new(input: Arc<dyn ExecutionPlan>, state: Arc<SharedState>) -> Self {
        Self {
            input,
            state,
            own: Arc::default(),
        }
    }
}

impl fmt::Debug for SharedExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedExec")
            .field("id", &self.state.id)
            .finish()
    }
}

impl DisplayAs for SharedExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "SharedExec: subplan={}, uses={}",
            self.state.id,
            self.state.use_count()
        )
    }
}

impl ExecutionPlan for SharedExec {
    fn name(&self) -> &str {
        "SharedExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    input_statistics!(as_estimates);

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    no_expressions!();

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = only_child(self.name(), children)?;
        Ok(Arc::new(SharedExec::new(input, Arc::clone(&self.state))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let run = self.state.run(&self.input, &context)?;
        let input = Arc::clone(&self.input);
        let own = Arc::clone(&self.own);
        let batches = async move {
            let rows = run.await.map_err(DataFusionError::Shared)?;
            if let Some(rows) = rows {
                let batches = rows.partitions.get(partition).cloned().unwrap_or_default();
                return Ok(stream::iter(batches.into_iter().map(Ok)).boxed());
            }
            let plan = {
                let mut own = own.lock().map_err(|_| {
                    DataFusionError::Internal("shared subplan lock poisoned".into())
                })?;
                match &*own {
                    Some(plan) => Arc::clone(plan),
                    None => Arc::clone(own.insert(reset_plan_states(input)?)),
                }
            };
            plan.execute(partition, context).map(|s| s.boxed())
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream::once(batches).try_flatten(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_plan::common::collect;

    /// Two uses of one 200,000-row subplan in two partitions, run under `limit` bytes: what
    /// each use read (row count and sum), and whether the rows were shared.
    async fn two_uses(limit: usize) -> (Vec<(usize, i64)>, bool) {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let part = |p: i64| -> Vec<RecordBatch> {
            (0..10)
                .map(|b| {
                    let start = p * 100_000 + b * 10_000;
                    let values = Int64Array::from_iter_values(start..start + 10_000);
                    RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(values)]).unwrap()
                })
                .collect()
        };
        let input: Arc<dyn ExecutionPlan> =
            MemorySourceConfig::try_new_exec(&[part(0), part(1)], Arc::clone(&schema), None)
                .unwrap();
        let state = Arc::new(SharedState::new(1));
        let uses = [
            SharedExec::new(Arc::clone(&input), Arc::clone(&state)),
            SharedExec::new(input, Arc::clone(&state)),
        ];
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(limit, 1.0)
            .build_arc()
            .unwrap();
        let context = Arc::new(TaskContext::default().with_runtime(runtime));
        let mut read = vec![];
        for exec in &uses {
            let (mut rows, mut sum) = (0, 0);
            for p in 0..2 {
                let batches = collect(exec.execute(p, Arc::clone(&context)).unwrap())
                    .await
                    .unwrap();
                for b in batches {
                    rows += b.num_rows();
                    sum += b
                        .column(0)
                        .as_primitive::<Int64Type>()
                        .values()
                        .iter()
                        .sum::<i64>();
                }
            }
            read.push((rows, sum));
        }
        let run = state.run.lock().unwrap().clone().unwrap();
        let shared = run.await.unwrap().is_some();
        (read, shared)
    }

    #[tokio::test]
    async fn uses_replay_one_run_or_each_run_their_own_copy() {
        let whole = (200_000, (0..200_000i64).sum::<i64>());
        assert_eq!(two_uses(64 << 20).await, (vec![whole, whole], true));
        // 1.6 MB of rows do not fit in 100 KB: each use computes them itself.
        assert_eq!(two_uses(100 << 10).await, (vec![whole, whole], false));
    }
}
