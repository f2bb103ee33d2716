//! Joins' runtime filters applied to the rows a Parquet scan returns: the rule and its operator.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::BatchCoalescer;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, PlanProperties};
use futures::{Stream, StreamExt};

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

use super::{StrataOptions, is_join, is_recursive, only_child};

/// Applies the runtime ("dynamic") filters that joins and top-k sorts push into Parquet
/// scans to the rows those scans return.
///
/// DataFusion hands such a filter to the scan, which then uses it only to skip whole files
/// and row groups unless row-level Parquet filtering (`pushdown_filters`) is on. That
/// setting also moves every static predicate into the decoder, which is slower for
/// unselective filters, so Strata leaves it off and instead puts a [`RuntimeFilterExec`]
/// with the runtime part alone just above the scan, where an aggregation lies between the
/// scan and the join (TPC-H q17, q18). The join still checks every row; the filter spares
/// the aggregation the rows that cannot match.
#[derive(Debug, Default)]
pub struct JoinFiltersAtScan;

impl PhysicalOptimizerRule for JoinFiltersAtScan {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let enabled = config
            .extensions
            .get::<StrataOptions>()
            .is_some_and(|o| o.join_filters_at_scan);
        if !enabled || config.execution.parquet.pushdown_filters || is_recursive(&plan) {
            return Ok(plan);
        }
        filter_scans(plan, false).map(|t| t.data)
    }

    fn name(&self) -> &str {
        "join_filters_at_scan"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Puts a [`RuntimeFilterExec`] over the Parquet scans below an aggregation (and no join
/// on the way) that carry a runtime filter.
///
/// Only there does dropping rows early pay: between a scan and the join that will probe
/// with its rows, the filter would repeat the join's own lookup, which measured slower on
/// TPC-H (q03, q05, q08, q21); an aggregation in between must otherwise digest every row.
fn filter_scans(
    plan: Arc<dyn ExecutionPlan>,
    under_aggregate: bool,
) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    if under_aggregate {
        // Above a scan's own filter, so that the cheaper static predicate goes first.
        let scan = match plan.downcast_ref::<FilterExec>() {
            Some(f) => f.input(),
            None => &plan,
        };
        if let Some(filter) = runtime_filter(scan, &plan.schema()) {
            return Ok(Transformed::yes(Arc::new(RuntimeFilterExec::new(
                filter, plan,
            ))));
        }
    }
    let below = if plan.downcast_ref::<AggregateExec>().is_some() {
        true
    } else {
        under_aggregate && !is_join(&plan)
    };
    plan.map_children(|child| filter_scans(child, below))
}

/// The runtime part of a Parquet scan's predicate, over the columns of `schema`.
fn runtime_filter(node: &Arc<dyn ExecutionPlan>, schema: &Schema) -> Option<Arc<dyn PhysicalExpr>> {
    let scan = node.downcast_ref::<DataSourceExec>()?;
    let (_, parquet) = scan.downcast_to_file_source::<ParquetSource>()?;
    let predicate = parquet.filter()?;
    let parts: Vec<_> = split_conjunction(&predicate)
        .into_iter()
        .filter(|e| e.downcast_ref::<DynamicFilterPhysicalExpr>().is_some())
        // A filter over a column the scan does not return cannot be applied here.
        .filter_map(|e| reassign_expr_columns(Arc::clone(e), schema).ok())
        .collect();
    (!parts.is_empty()).then(|| conjunction(parts))
}

/// Rows a runtime filter sees (once it holds more than `true`) before it judges whether
/// filtering pays.
const SAMPLE_ROWS: usize = 65_536;

/// Above this share of rows passing, a runtime filter stops filtering: checking a row costs
/// about as much as the join's own probe, so it pays only when it drops most rows.
const MAX_PASS_SHARE: f64 = 0.5;

/// Drops the rows a runtime filter rules out, as long as it drops enough of them.
///
/// Each partition checks its first [`SAMPLE_ROWS`] rows; when more than [`MAX_PASS_SHARE`]
/// of them pass, the rest of that partition goes through unchecked (the join above still
/// applies the condition). Kept rows are packed back into full batches.
#[derive(Debug)]
pub struct RuntimeFilterExec {
    predicate: Arc<dyn PhysicalExpr>,
    input: Arc<dyn ExecutionPlan>,
    metrics: ExecutionPlanMetricsSet,
}

impl RuntimeFilterExec {
    /// `predicate` (over `input`'s columns) applied to `input`.
    pub fn new(predicate: Arc<dyn PhysicalExpr>, input: Arc<dyn ExecutionPlan>) -> Self {
        Self {
            predicate,
            input,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for RuntimeFilterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "RuntimeFilterExec: {}", self.predicate)
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

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        f(&self.predicate)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = only_child(self.name(), children)?;
        Ok(Arc::new(RuntimeFilterExec::new(
            Arc::clone(&self.predicate),
            input,
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let schema = input.schema();
        Ok(Box::pin(RuntimeFilterStream {
            coalescer: BatchCoalescer::new(
                Arc::clone(&schema),
                context.session_config().batch_size(),
            ),
            schema,
            input,
            predicate: Arc::clone(&self.predicate),
            checked: 0,
            passed: 0,
            bypass: false,
            done: false,
            dropped: MetricBuilder::new(&self.metrics).counter("rows_dropped", partition),
            unchecked: MetricBuilder::new(&self.metrics).counter("rows_unchecked", partition),
            baseline: BaselineMetrics::new(&self.metrics, partition),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

struct RuntimeFilterStream {
    schema: SchemaRef,
    input: SendableRecordBatchStream,
    predicate: Arc<dyn PhysicalExpr>,
    coalescer: BatchCoalescer,
    checked: usize,
    passed: usize,
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
        self.passed += kept;
        self.dropped.add(rows - kept);
        self.coalescer.push_batch_with_filter(batch, mask)?;
        if self.checked >= SAMPLE_ROWS && self.passed as f64 > self.checked as f64 * MAX_PASS_SHARE
        {
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
