//! Joins' runtime filters applied to the rows a Parquet scan returns: the rule and its operator.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::BatchCoalescer;
use datafusion::arrow::compute::kernels::boolean::and_not;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, PlanProperties, apply_expression_roots,
};
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::{FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
use datafusion::physical_expr::utils::{reassign_expr_columns, split_conjunction};
use datafusion::physical_expr::{PhysicalExpr, conjunction};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::HashJoinExec;

use super::{SharedExec, StrataOptions, estimated_rows, is_join, is_recursive, only_child};

/// Applies the runtime ("dynamic") filters that joins and top-k sorts push into Parquet
/// scans to the rows those scans return.
///
/// DataFusion hands such a filter to the scan, which then uses it only to skip whole files
/// and row groups unless row-level Parquet filtering (`pushdown_filters`) is on. That
/// setting also moves every static predicate into the decoder, which is slower for
/// unselective filters, so Strata leaves it off and instead puts a [`RuntimeFilterExec`]
/// with the runtime part alone just above the scan where it pays (see [`filter_scans`]):
/// below an aggregation (TPC-H q17), and for the filters of joins further up than the one
/// that reads the scan's rows (q18). The joins still check every row; the filter spares
/// the operators in between the rows that cannot match.
#[derive(Debug, Default)]
pub struct JoinFiltersAtScan;

impl PhysicalOptimizerRule for JoinFiltersAtScan {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(options) = config.extensions.get::<StrataOptions>() else {
            return Ok(plan);
        };
        if !options.join_filters_at_scan
            || config.execution.parquet.pushdown_filters
            || is_recursive(&plan)
        {
            return Ok(plan);
        }
        let above = Above {
            early: options.early_join_filters && waits_are_safe(config),
            build_sides: options.build_side_join_filters,
            ..Above::default()
        };
        filter_scans(plan, &above).map(|t| t.data)
    }

    fn name(&self) -> &str {
        "join_filters_at_scan"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether every hash join that pushed a runtime filter down will also fill it in: the
/// settings under which DataFusion may plan a filter and then skip computing it.
fn waits_are_safe(config: &ConfigOptions) -> bool {
    config.optimizer.enable_join_dynamic_filter_pushdown
        && config.optimizer.preserve_file_partitions == 0
}

/// What lies above a node, as far as runtime filters at its scans are concerned.
#[derive(Clone, Default)]
struct Above {
    /// An aggregation, and no join, between here and the nearest join above.
    under_aggregate: bool,
    /// The runtime filter of the nearest hash join above.
    nearest_join: Option<u64>,
    /// The runtime filters of the hash joins further up.
    far_joins: Vec<u64>,
    /// The estimated rows of the build side of each hash join above, by its filter.
    build_rows: Vec<(u64, usize)>,
    /// On the probe side of the nearest join (a hash join's right input).
    probe_side: bool,
    /// Whether filters from the far joins may be applied (waiting for them).
    early: bool,
    /// Whether they may be on a build side too, from joins with a small build side.
    build_sides: bool,
}

/// Puts a [`RuntimeFilterExec`] over the Parquet scans that carry a runtime filter worth
/// applying there:
///
/// - below an aggregation (and no join on the way), every runtime filter: an aggregation
///   in between must otherwise digest every row;
/// - on the probe side of the nearest hash join, the filters of the hash joins above it.
///   Their rows would otherwise flow through the joins in between (TPC-H q18: the 57 orders
///   of the `IN` subquery would be joined to their customers and lineitems before being
///   kept). The operator waits for these filters to be complete, which is safe because a
///   join builds its hash table from its other side, and costs little because the nearest
///   join reads its probe side only once its own hash table is built.
/// - on the build side of the nearest hash join, the filters of the hash joins above whose
///   own build side is estimated at a tenth of the scan's rows or fewer (see
///   [`small_next_to`]). Waiting there holds back a hash table that is otherwise built at
///   the same time as the others (q08 measured slower when every build side waited), so
///   only for a filter that comes soon and keeps the table small.
///
/// The nearest join's own filter is not applied between the scan and that join: it would
/// repeat the join's lookup, which measured slower on TPC-H (q03, q05, q08, q21). Scans in a
/// shared subplan get no waiting filter: its one run may feed the very join it would wait for.
fn filter_scans(
    plan: Arc<dyn ExecutionPlan>,
    above: &Above,
) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    // Above a scan's own filter, so that the cheaper static predicate goes first.
    let scan = match plan.downcast_ref::<FilterExec>() {
        Some(f) => f.input(),
        None => &plan,
    };
    if let Some(filter) = runtime_filter(scan, &plan, above) {
        return Ok(Transformed::yes(Arc::new(filter)));
    }
    let mut below = above.clone();
    below.early &= plan.downcast_ref::<SharedExec>().is_none();
    if !is_join(&plan) {
        below.under_aggregate |= plan.downcast_ref::<AggregateExec>().is_some();
        return plan.map_children(|child| filter_scans(child, &below));
    }
    below.under_aggregate = false;
    below.far_joins.extend(above.nearest_join);
    below.nearest_join = plan
        .dynamic_expressions_produced()
        .first()
        .and_then(|filter| filter.expression_id());
    // A hash join builds its table from its left input and probes it with its right one.
    let hash_join = plan.downcast_ref::<HashJoinExec>().is_some();
    // Only scans on build sides ask for these estimates.
    if let (true, Some(id)) = (
        hash_join && below.early && below.build_sides,
        below.nearest_join,
    ) && let Ok(Some(rows)) = estimated_rows(plan.children()[0])
    {
        below.build_rows.push((id, rows));
    }
    let mut index = 0;
    plan.map_children(|child| {
        below.probe_side = hash_join && index == 1;
        index += 1;
        filter_scans(child, &below)
    })
}

/// A [`RuntimeFilterExec`] over `plan` with the runtime part of the Parquet scan `node`'s
/// predicate worth applying to its rows (see [`filter_scans`]), if any.
fn runtime_filter(
    node: &Arc<dyn ExecutionPlan>,
    plan: &Arc<dyn ExecutionPlan>,
    above: &Above,
) -> Option<RuntimeFilterExec> {
    let scan = node.downcast_ref::<DataSourceExec>()?;
    let (_, parquet) = scan.downcast_to_file_source::<ParquetSource>()?;
    let predicate = parquet.filter()?;
    let schema = plan.schema();
    let mut parts = Vec::new();
    let mut wait = Vec::new();
    let mut nearest = None;
    for part in split_conjunction(&predicate) {
        if part.downcast_ref::<DynamicFilterPhysicalExpr>().is_none() {
            continue;
        }
        let id = part.expression_id();
        let far = above.early
            && id.is_some_and(|id| above.far_joins.contains(&id))
            && (above.probe_side || (above.build_sides && small_next_to(id, plan, above)));
        let is_nearest = !above.under_aggregate && id.is_some() && id == above.nearest_join;
        if !far && !is_nearest && !above.under_aggregate {
            continue;
        }
        // A filter over a column the scan does not return cannot be applied here.
        let Ok(part) = reassign_expr_columns(Arc::clone(part), &schema) else {
            continue;
        };
        if is_nearest {
            nearest = Some(part);
            continue;
        }
        if far {
            wait.push(Arc::clone(&part));
        }
        parts.push(part);
    }
    if parts.is_empty() {
        return None;
    }
    Some(
        RuntimeFilterExec::new(conjunction(parts), Arc::clone(plan))
            .waiting_for(wait)
            .judged_after(nearest),
    )
}

/// How many times fewer rows a join's build side must be estimated to hold than a scan on
/// the build side of a join below it, for that scan to wait for the join's filter.
const SMALL_BUILD_RATIO: usize = 10;

/// Whether the hash join that fills filter `id` builds its table from at most a tenth of
/// the rows estimated for the scan `node`: a scan on a build side may then wait for that
/// table, which is soon built, and keep only the rows it lets through in its own join's
/// table (TPC-H q07: suppliers and customers of two nations, and their orders, instead of
/// all of them).
fn small_next_to(id: Option<u64>, node: &Arc<dyn ExecutionPlan>, above: &Above) -> bool {
    let Some(build) = id.and_then(|id| above.build_rows.iter().find(|(b, _)| *b == id)) else {
        return false;
    };
    matches!(estimated_rows(node), Ok(Some(rows)) if build.1.saturating_mul(SMALL_BUILD_RATIO) <= rows)
}

/// Rows a runtime filter sees (once it holds more than `true`) before it judges whether
/// filtering pays.
const SAMPLE_ROWS: usize = 65_536;

/// Drops the rows a runtime filter rules out, as long as that pays.
///
/// Each partition checks its first [`SAMPLE_ROWS`] rows. A row the filter keeps costs one
/// check more than without it (about as much as a join's probe); a row it drops that the
/// joins above would have carried saves at least as much. So when it drops fewer such rows
/// than it keeps, the rest of that partition goes through unchecked (the joins above still
/// apply the condition). Without the runtime filter of the join that reads these rows next,
/// every row dropped counts: filtering stops when it drops less than half of them. With it
/// (see [`RuntimeFilterExec::judged_after`]), only the rows that join would keep count: a
/// row both drop costs one check here and saves one probe there. Kept rows are packed back
/// into full batches.
#[derive(Debug)]
pub struct RuntimeFilterExec {
    predicate: Arc<dyn PhysicalExpr>,
    input: Arc<dyn ExecutionPlan>,
    /// Runtime filters to wait for, until their join has filled them in, before reading.
    wait: Vec<Arc<dyn PhysicalExpr>>,
    /// The runtime filter of the join that reads these rows next, evaluated on the sample.
    nearest: Option<Arc<dyn PhysicalExpr>>,
    metrics: ExecutionPlanMetricsSet,
    /// Whether [`ExecutionPlan::metrics`] returns them (see [`RuntimeFilterExec::unreported`]).
    reported: bool,
}

impl RuntimeFilterExec {
    /// `predicate` (over `input`'s columns) applied to `input`.
    pub fn new(predicate: Arc<dyn PhysicalExpr>, input: Arc<dyn ExecutionPlan>) -> Self {
        Self {
            predicate,
            input,
            wait: Vec::new(),
            nearest: None,
            metrics: ExecutionPlanMetricsSet::new(),
            reported: true,
        }
    }

    /// The same filter, its metrics kept to itself: for a filter added to a plan whose
    /// metrics are matched node by node against a plan without it (a cluster's stage).
    pub(crate) fn unreported(&self) -> Self {
        Self {
            reported: false,
            ..self.over(Arc::clone(&self.input))
        }
    }

    /// The same filter over `input`, with metrics of its own.
    fn over(&self, input: Arc<dyn ExecutionPlan>) -> Self {
        Self {
            predicate: Arc::clone(&self.predicate),
            input,
            wait: self.wait.clone(),
            nearest: self.nearest.clone(),
            metrics: ExecutionPlanMetricsSet::new(),
            reported: self.reported,
        }
    }

    /// Judges the sample by the rows `nearest` (the runtime filter of the join that reads
    /// these rows next) keeps: a row that join drops anyway costs it one lookup, no more
    /// than dropping it here, so filtering pays only when it drops more of the others than
    /// it keeps rows. Without it, every row dropped counts.
    pub fn judged_after(mut self, nearest: Option<Arc<dyn PhysicalExpr>>) -> Self {
        self.nearest = nearest;
        self
    }

    /// Waits for `filters` (parts of the predicate) to be complete before reading any row.
    pub fn waiting_for(mut self, filters: Vec<Arc<dyn PhysicalExpr>>) -> Self {
        self.wait = filters;
        self
    }
}

impl DisplayAs for RuntimeFilterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "RuntimeFilterExec: {}", self.predicate)?;
        if !self.wait.is_empty() {
            write!(f, ", waits for the join")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for RuntimeFilterExec {
    fn name(&self) -> &str {
        "RuntimeFilterExec"
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

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_expression_roots(self.nearest.iter().chain([&self.predicate]), f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(self.over(only_child(self.name(), children)?)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let schema = input.schema();
        let filters = self.wait.clone();
        let ready = (!filters.is_empty() && waits_are_safe(context.session_config().options()))
            .then(|| {
                async move {
                    for filter in &filters {
                        if let Some(filter) = filter.downcast_ref::<DynamicFilterPhysicalExpr>() {
                            filter.wait_complete().await;
                        }
                    }
                }
                .boxed()
            });
        Ok(Box::pin(RuntimeFilterStream {
            ready,
            coalescer: BatchCoalescer::new(
                Arc::clone(&schema),
                context.session_config().batch_size(),
            ),
            schema,
            input,
            predicate: Arc::clone(&self.predicate),
            nearest: self.nearest.clone(),
            checked: 0,
            useful: 0,
            kept: 0,
            bypass: false,
            done: false,
            dropped: MetricBuilder::new(&self.metrics).counter("rows_dropped", partition),
            unchecked: MetricBuilder::new(&self.metrics).counter("rows_unchecked", partition),
            baseline: BaselineMetrics::new(&self.metrics, partition),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        self.reported.then(|| self.metrics.clone_inner())
    }
}

struct RuntimeFilterStream {
    /// Resolves once the filters to wait for are complete.
    ready: Option<BoxFuture<'static, ()>>,
    schema: SchemaRef,
    input: SendableRecordBatchStream,
    predicate: Arc<dyn PhysicalExpr>,
    nearest: Option<Arc<dyn PhysicalExpr>>,
    coalescer: BatchCoalescer,
    /// Rows of the sample checked so far.
    checked: usize,
    /// Rows of the sample dropped that the next join would have kept.
    useful: usize,
    /// Rows of the sample kept.
    kept: usize,
    bypass: bool,
    done: bool,
    dropped: Count,
    unchecked: Count,
    baseline: BaselineMetrics,
}

impl RuntimeFilterStream {
    /// Filters `batch` into the coalescer, or hands it back when it goes through whole.
    fn filter(&mut self, batch: RecordBatch) -> Result<Option<RecordBatch>> {
        let elapsed = self.baseline.elapsed_compute().clone();
        let _timer = elapsed.timer();
        let rows = batch.num_rows();
        if self.bypass {
            self.unchecked.add(rows);
            return self.pass_whole(batch);
        }
        let mask = match self.predicate.evaluate(&batch)? {
            // A filter not yet set (still `true`) keeps everything and says nothing.
            ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))) => {
                return self.pass_whole(batch);
            }
            value => value.into_array(rows)?,
        };
        let mask = mask.as_boolean();
        let kept = mask.true_count();
        self.checked += rows;
        self.kept += kept;
        self.useful += match &self.nearest {
            Some(nearest) => {
                let next = nearest.evaluate(&batch)?.into_array(rows)?;
                and_not(next.as_boolean(), mask)?.true_count()
            }
            None => rows - kept,
        };
        self.dropped.add(rows - kept);
        self.coalescer.push_batch_with_filter(batch, mask)?;
        if self.checked >= SAMPLE_ROWS && self.useful < self.kept {
            self.bypass = true;
            self.coalescer.finish_buffered_batch()?;
        }
        Ok(None)
    }

    fn pass_whole(&mut self, batch: RecordBatch) -> Result<Option<RecordBatch>> {
        if self.coalescer.get_buffered_rows() == 0 {
            return Ok(Some(batch));
        }
        self.coalescer.push_batch(batch)?;
        Ok(None)
    }
}

impl Stream for RuntimeFilterStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(ready) = &mut this.ready {
            ready!(ready.poll_unpin(cx));
            this.ready = None;
        }
        loop {
            if let Some(batch) = this.coalescer.next_completed_batch() {
                return this.baseline.record_poll(Poll::Ready(Some(Ok(batch))));
            }
            if this.done {
                return this.baseline.record_poll(Poll::Ready(None));
            }
            match ready!(this.input.poll_next_unpin(cx)) {
                None => {
                    this.done = true;
                    this.coalescer.finish_buffered_batch()?;
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(batch)) => match this.filter(batch) {
                    Ok(Some(batch)) => {
                        return this.baseline.record_poll(Poll::Ready(Some(Ok(batch))));
                    }
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
            }
        }
    }
}

impl RecordBatchStream for RuntimeFilterStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}
