//! String and binary views made compact before they cross a stage boundary.
//!
//! A view column that a join or a filter made from another one keeps every data buffer of the
//! original, however few of its strings it still points to. In one process that costs
//! nothing, but Ballista writes each batch of a stage's output whole, buffers included: on
//! TPC-H q18 the 1.5 M rows of `customer ⋈ orders` that a broadcast join reads took 4.5 s to
//! write and 6.2 s to fetch, each batch carrying all 150 K customer names. [`CompactViewsExec`]
//! copies the strings a batch still uses into buffers of their own where the buffers it holds
//! are more than twice that size, and the scheduler puts one under each operator where
//! Ballista cuts the plan into stages.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, GenericByteViewArray};
use datafusion::arrow::datatypes::{ByteViewType, DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;

use crate::optimizer::{only_child, setting_on};

/// Buffers held beyond what the strings use, under which a column is left as it is.
const SLACK_BYTES: usize = 64 << 10;

/// Its input's rows, with each string or binary view column that holds more than twice the
/// bytes it uses (plus 64 KiB) copied into compact buffers.
#[derive(Debug)]
pub struct CompactViewsExec {
    input: Arc<dyn ExecutionPlan>,
}

impl CompactViewsExec {
    /// `input`, its view columns compacted.
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        CompactViewsExec { input }
    }
}

impl DisplayAs for CompactViewsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CompactViewsExec")
    }
}

impl ExecutionPlan for CompactViewsExec {
    fn name(&self) -> &str {
        "CompactViewsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    crate::optimizer::input_statistics!(as_they_are);

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    crate::optimizer::no_expressions!();

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(CompactViewsExec::new(only_child(
            self.name(),
            children,
        )?)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let compacted = input.map(|batch| batch.and_then(|b| compact(b).map_err(Into::into)));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, compacted)))
    }
}

/// `batch` with its wasteful view columns compacted; the batch itself when none is.
fn compact(batch: RecordBatch) -> datafusion::arrow::error::Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    let mut changed = false;
    for column in &mut columns {
        let compacted = match column.data_type() {
            DataType::Utf8View => compacted(column.as_string_view()),
            DataType::BinaryView => compacted(column.as_binary_view()),
            _ => None,
        };
        if let Some(c) = compacted {
            *column = c;
            changed = true;
        }
    }
    if !changed {
        return Ok(batch);
    }
    RecordBatch::try_new(batch.schema(), columns)
}

/// `views` copied into compact buffers when its buffers hold more than twice the bytes its
/// strings use, and by more than [`SLACK_BYTES`].
fn compacted<T: ByteViewType + ?Sized>(views: &GenericByteViewArray<T>) -> Option<ArrayRef> {
    let held: usize = views.data_buffers().iter().map(|b| b.len()).sum();
    (held > 2 * views.total_buffer_bytes_used() + SLACK_BYTES)
        .then(|| Arc::new(views.gc()) as ArrayRef)
}

fn has_views(schema: &Schema) -> bool {
    schema
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Utf8View | DataType::BinaryView))
}

/// Puts a [`CompactViewsExec`] under each operator where Ballista's planner ends a stage (a
/// hash repartition, a merge into one partition, a broadcast join's build side) and at the
/// root, wherever the rows there have view columns.
#[derive(Debug, Default)]
pub struct CompactViewsAtStages;

impl PhysicalOptimizerRule for CompactViewsAtStages {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !setting_on(config, |o| o.compact_views) {
            return Ok(plan);
        }
        let plan = plan
            .transform_up(|node| {
                let ends_stage: Vec<bool> = if let Some(r) = node.downcast_ref::<RepartitionExec>()
                {
                    vec![matches!(r.partitioning(), Partitioning::Hash(_, _))]
                } else if node.downcast_ref::<CoalescePartitionsExec>().is_some()
                    || node.downcast_ref::<SortPreservingMergeExec>().is_some()
                {
                    vec![true]
                } else if let Some(j) = node.downcast_ref::<HashJoinExec>() {
                    let broadcast = *j.partition_mode() == PartitionMode::CollectLeft
                        && j.left().downcast_ref::<CoalescePartitionsExec>().is_none();
                    vec![broadcast, false]
                } else {
                    return Ok(Transformed::no(node));
                };
                let mut changed = false;
                let children = node
                    .children()
                    .into_iter()
                    .cloned()
                    .zip(ends_stage)
                    .map(|(child, ends)| {
                        if ends && needs_compacting(&child) {
                            changed = true;
                            Arc::new(CompactViewsExec::new(child)) as Arc<dyn ExecutionPlan>
                        } else {
                            child
                        }
                    })
                    .collect();
                if !changed {
                    return Ok(Transformed::no(node));
                }
                Ok(Transformed::yes(crate::optimizer::with_children(
                    node, children,
                )?))
            })?
            .data;
        Ok(if needs_compacting(&plan) {
            Arc::new(CompactViewsExec::new(plan))
        } else {
            plan
        })
    }

    fn name(&self) -> &str {
        "CompactViewsAtStages"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

fn needs_compacting(plan: &Arc<dyn ExecutionPlan>) -> bool {
    has_views(&plan.schema()) && plan.downcast_ref::<CompactViewsExec>().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringViewArray;
    use datafusion::arrow::array::UInt32Array;
    use datafusion::arrow::compute::take;
    use datafusion::arrow::datatypes::Field;

    fn names(n: usize) -> StringViewArray {
        (0..n)
            .map(|i| Some(format!("a name long enough not to be inlined #{i}")))
            .collect()
    }

    #[test]
    fn a_few_rows_taken_from_many_are_copied_out() {
        let all = names(10_000);
        let few = take(&all, &UInt32Array::from(vec![3, 5]), None).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8View, true)]));
        let batch = RecordBatch::try_new(schema, vec![few.clone()]).unwrap();
        let out = compact(batch).unwrap();
        let s = out.column(0).as_string_view();
        let held: usize = s.data_buffers().iter().map(|b| b.len()).sum();
        assert_eq!(held, s.total_buffer_bytes_used());
        assert!(held < 200, "{held} bytes held for two strings");
        assert_eq!(out.column(0).as_ref(), few.as_ref());
    }

    #[test]
    fn compact_columns_are_left_as_they_are() {
        let all: ArrayRef = Arc::new(names(10_000));
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8View, true)]));
        let batch = RecordBatch::try_new(schema, vec![all.clone()]).unwrap();
        let out = compact(batch).unwrap();
        assert!(Arc::ptr_eq(out.column(0), &all));
    }
}
