//! The end of a plan on a cluster: an aggregation's result merged into one partition in the
//! stage that finishes the aggregation, instead of a stage of its own.
//!
//! Ballista's planner ends a stage under every `SortPreservingMergeExec` and
//! `CoalescePartitionsExec`. Under the `ORDER BY` of a grouped query that costs a round of
//! scheduling, and a write and read of the result, for a merge of a few rows: q01 ran three
//! stages (partial aggregation, final aggregation and sort, merge). [`StageMergeExec`] hides
//! such a merge from that planner, so that the stage which finishes the aggregation runs as
//! one task over all its partitions (Ballista's planner packs a stage whose plan narrows to
//! one partition into one task) and merges them itself.

use std::fmt;
use std::sync::Arc;

use datafusion::common::Statistics;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{OrderingRequirements, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    InputDistributionRequirements, Partitioning, PlanProperties, StatisticsArgs,
};

use crate::optimizer::{only_child, setting_on, with_children};

/// A `SortPreservingMergeExec` or `CoalescePartitionsExec` that Ballista's planner does not
/// see as the end of a stage: it runs in the stage of its input.
#[derive(Debug)]
pub struct StageMergeExec {
    merge: Arc<dyn ExecutionPlan>,
}

impl StageMergeExec {
    /// The merge of `input`'s partitions: by its output ordering when `sorted` (it is sorted
    /// by what the merge it replaced needed), as they come otherwise, stopping after `fetch`
    /// rows.
    pub fn of(input: Arc<dyn ExecutionPlan>, sorted: bool, fetch: Option<usize>) -> Result<Self> {
        let merge: Arc<dyn ExecutionPlan> = if sorted {
            let ordering = input.output_ordering().cloned().ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "a sorted merge's input lost its order: {}",
                    input.name()
                ))
            })?;
            Arc::new(SortPreservingMergeExec::new(ordering, input).with_fetch(fetch))
        } else {
            Arc::new(CoalescePartitionsExec::new(input).with_fetch(fetch))
        };
        Ok(StageMergeExec { merge })
    }

    /// Whether it merges by an ordering (and is not a coalesce).
    pub fn sorted(&self) -> bool {
        self.merge.is::<SortPreservingMergeExec>()
    }
}

impl DisplayAs for StageMergeExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StageMergeExec: ")?;
        self.merge.fmt_as(t, f)
    }
}

impl ExecutionPlan for StageMergeExec {
    fn name(&self) -> &str {
        "StageMergeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.merge.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.merge.children()
    }

    /// One partition, where the merge itself asks for none: it consumes its input whole,
    /// and that is how Ballista's scheduler knows to give the stage's one task every
    /// partition of the stages it reads. Only Ballista reads it: the rule that makes this
    /// node runs after DataFusion's rules have laid out distribution.
    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        InputDistributionRequirements::new(vec![Distribution::SinglePartition])
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        self.merge.required_input_ordering()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        self.merge.maintains_input_order()
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn fetch(&self) -> Option<usize> {
        self.merge.fetch()
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        self.merge.child_stats_requests(partition)
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        self.merge.statistics_from_inputs(input_stats, args)
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.merge.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = only_child(self.name(), children)?;
        let merge = with_children(Arc::clone(&self.merge), vec![input])?;
        Ok(Arc::new(StageMergeExec { merge }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.merge.execute(partition, context)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        self.merge.metrics()
    }
}

/// Keeps the merge at the top of a plan in the stage below it ([`StageMergeExec`]) where
/// that stage finishes an aggregation (a final aggregation right above a shuffle, with only
/// projections, filters and sorts between it and the merge) or has one partition. A final
/// aggregation whose shuffle would split one partition is finished without that shuffle.
///
/// The merge's stage then runs as one task, its partitions side by side on one executor:
/// the final aggregation of a query with many groups is not spread over executors.
#[derive(Debug, Default)]
pub struct MergeFinalStages;

impl PhysicalOptimizerRule for MergeFinalStages {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !setting_on(config, |o| o.merge_final_stages) {
            return Ok(plan);
        }
        Ok(merged_at_top(&plan)?.unwrap_or(plan))
    }

    fn name(&self) -> &str {
        "MergeFinalStages"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with the first merge down its chain of one-input operators kept in its input's
/// stage, where it can be; `None` where nothing changed.
fn merged_at_top(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let merge = if let Some(m) = plan.downcast_ref::<SortPreservingMergeExec>() {
        Some((true, m.fetch()))
    } else {
        plan.downcast_ref::<CoalescePartitionsExec>()
            .map(|c| (false, c.fetch()))
    };
    let children = plan.children();
    let [child] = children.as_slice() else {
        return Ok(None);
    };
    let Some((sorted, fetch)) = merge else {
        // A repartition ends the top stage.
        if plan.is::<RepartitionExec>() {
            return Ok(None);
        }
        return match merged_at_top(child)? {
            Some(new) => Ok(Some(with_children(Arc::clone(plan), vec![new])?)),
            None => Ok(None),
        };
    };
    let input = match finished_aggregation(child)? {
        Some(input) => input,
        None if child.output_partitioning().partition_count() == 1 => Arc::clone(child),
        None => return Ok(None),
    };
    Ok(Some(Arc::new(StageMergeExec::of(input, sorted, fetch)?)))
}

/// Whether `plan` passes an aggregation's result on to a merge row by row or sorted
/// (and is no aggregation or window of its own, whose work a merged stage would take off
/// the other executors).
fn passes_result_on(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.is::<ProjectionExec>()
        || plan.is::<SortExec>()
        || plan.is::<FilterExec>()
        || plan.is::<CooperativeExec>()
}

/// `plan` where it is the result of a final aggregation right above a hash repartition,
/// passed on by projections, filters and sorts; the aggregation reads the repartition's
/// input directly where that is one partition (one partition meets any partitioning an
/// aggregation needs). `None` where `plan` is no such result.
fn finished_aggregation(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>()
        && *aggregate.mode() == AggregateMode::FinalPartitioned
        && let Some(shuffle) = aggregate.input().downcast_ref::<RepartitionExec>()
        && matches!(shuffle.partitioning(), Partitioning::Hash(_, _))
    {
        let input = shuffle.input();
        if input.output_partitioning().partition_count() != 1 {
            return Ok(Some(Arc::clone(plan)));
        }
        let unsplit = with_children(Arc::clone(plan), vec![Arc::clone(input)])?;
        return Ok(Some(unsplit));
    }
    let children = plan.children();
    let [child] = children.as_slice() else {
        return Ok(None);
    };
    if !passes_result_on(plan) {
        return Ok(None);
    }
    Ok(match finished_aggregation(child)? {
        Some(new) if Arc::ptr_eq(&new, child) => Some(Arc::clone(plan)),
        Some(new) => Some(with_children(Arc::clone(plan), vec![new])?),
        None => None,
    })
}
