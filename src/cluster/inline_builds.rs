//! Small build sides of broadcast joins read by every task of the join's stage, instead of
//! in a stage of their own.
//!
//! Ballista's planner gives the build side of every broadcast join a stage of its own, whose
//! output each task of the join's stage then fetches. For a table of a few thousand rows
//! (TPC-H's `nation`, `region`, `supplier`) that stage costs more than the reading: a round
//! of scheduling, a shuffle file written and read back, and a slot taken from the stages
//! that run beside it (q02 ran 12 stages, six of them such tables). Where a broadcast join's
//! build side is a scan of a small table, perhaps filtered and projected, the scheduler now
//! hides it inside the join ([`InlineBuildExec`], which shows Ballista's planner only the
//! probe side), and each task reads it itself.

use std::fmt;
use std::sync::Arc;

use datafusion::common::Statistics;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{Distribution, OrderingRequirements};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, displayable,
};
use datafusion::prelude::JoinType;

use super::joins::{broadcast_bytes, broadcast_threshold};
use super::views::CompactViewsExec;
use crate::optimizer::{StrataOptions, estimated_rows, only_child, with_children};

/// Hides the build side of each broadcast join that reads a table of at most
/// `strata.inline_build_max_rows` rows (filtered and projected at most) inside the join.
#[derive(Debug, Default)]
pub struct InlineSmallBuilds;

impl PhysicalOptimizerRule for InlineSmallBuilds {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let max_rows = config
            .extensions
            .get::<StrataOptions>()
            .map_or(0, |o| o.inline_build_max_rows);
        let threshold = broadcast_threshold(config);
        if max_rows == 0 || threshold == 0 {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            if inlinable(&node, max_rows, threshold)? {
                Ok(Transformed::yes(
                    Arc::new(InlineBuildExec { join: node }) as Arc<dyn ExecutionPlan>
                ))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "inline_small_builds"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `node` is a broadcast hash join whose every output row comes from its probe
/// side (so that tasks reading the build side each in full emit no row twice), with a
/// small table's scan for a build side that Ballista would broadcast (under `threshold`
/// bytes by its estimate).
fn inlinable(node: &Arc<dyn ExecutionPlan>, max_rows: usize, threshold: usize) -> Result<bool> {
    let Some(join) = node.downcast_ref::<HashJoinExec>() else {
        return Ok(false);
    };
    let probe_side_rows_only = matches!(
        join.join_type(),
        JoinType::Inner
            | JoinType::Right
            | JoinType::RightSemi
            | JoinType::RightAnti
            | JoinType::RightMark
    );
    if *join.partition_mode() != PartitionMode::CollectLeft
        || !probe_side_rows_only
        || join.null_aware
    {
        return Ok(false);
    }
    let mut build = Arc::clone(join.left());
    if build.is::<CoalescePartitionsExec>() {
        build = Arc::clone(build.children()[0]);
    }
    Ok(small_scan(&build, max_rows)
        && broadcast_bytes(join.left())?.is_some_and(|bytes| bytes < threshold))
}

/// Whether `plan` is a scan of at most `max_rows` rows (by its statistics), under filters,
/// projections and the like alone.
fn small_scan(plan: &Arc<dyn ExecutionPlan>, max_rows: usize) -> bool {
    if plan.is::<DataSourceExec>() {
        return matches!(estimated_rows(plan), Ok(Some(rows)) if rows <= max_rows);
    }
    let passes_rows_on = plan.is::<FilterExec>()
        || plan.is::<ProjectionExec>()
        || plan.is::<CooperativeExec>()
        || plan.is::<CompactViewsExec>();
    passes_rows_on && plan.children().len() == 1 && small_scan(plan.children()[0], max_rows)
}

/// A broadcast hash join whose build side each task reads itself. Its only input is the
/// join's probe side, so Ballista's planner neither makes a stage of the build side nor
/// narrows its scan to a task's partitions; executors decode it as the join, its build side
/// behind a [`TaskBuildExec`].
#[derive(Debug)]
pub struct InlineBuildExec {
    join: Arc<dyn ExecutionPlan>,
}

impl InlineBuildExec {
    fn probe(&self) -> &Arc<dyn ExecutionPlan> {
        self.join.children()[1]
    }

    fn build(&self) -> &Arc<dyn ExecutionPlan> {
        self.join.children()[0]
    }

    /// The join with an empty stand-in for its probe side: what a task decodes its build side
    /// and settings from.
    pub(crate) fn without_probe(&self) -> Result<Arc<dyn ExecutionPlan>> {
        let stand_in = Arc::new(EmptyExec::new(self.probe().schema()));
        with_children(
            Arc::clone(&self.join),
            vec![Arc::clone(self.build()), stand_in],
        )
    }
}

/// The join decoded on an executor: `without_probe` (see [`InlineBuildExec::without_probe`])
/// with its build side behind a [`TaskBuildExec`] and `probe` in place of the stand-in.
pub(crate) fn join_in_task(
    without_probe: Arc<dyn ExecutionPlan>,
    probe: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if !without_probe.is::<HashJoinExec>() {
        return Err(DataFusionError::Internal(format!(
            "a join with its build side read by each task decoded as {}",
            without_probe.name()
        )));
    }
    let build = Arc::new(TaskBuildExec {
        input: Arc::clone(without_probe.children()[0]),
    });
    with_children(without_probe, vec![build, probe])
}

impl DisplayAs for InlineBuildExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "InlineBuildExec: {}, build side read by each task: ",
            displayable(self.join.as_ref())
                .one_line()
                .to_string()
                .trim_end()
        )?;
        let mut node = Arc::clone(self.build());
        loop {
            let line = displayable(node.as_ref()).one_line().to_string();
            f.write_str(line.trim_end())?;
            match node.children().first() {
                Some(child) => {
                    f.write_str(" <- ")?;
                    node = Arc::clone(child);
                }
                None => return Ok(()),
            }
        }
    }
}

impl ExecutionPlan for InlineBuildExec {
    fn name(&self) -> &str {
        "InlineBuildExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.join.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.probe()]
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        let probe = self
            .join
            .input_distribution_requirements()
            .child_distribution(1)
            .cloned()
            .unwrap_or(Distribution::UnspecifiedDistribution);
        InputDistributionRequirements::new(vec![probe])
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        let mut each = self.join.required_input_ordering();
        vec![each.pop().flatten()]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![self.join.maintains_input_order().pop().unwrap_or(false)]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        StatisticsContext::new().compute(self.join.as_ref(), args)
    }

    crate::optimizer::no_expressions!();

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let probe = only_child(self.name(), children)?;
        let join = with_children(
            Arc::clone(&self.join),
            vec![Arc::clone(self.build()), probe],
        )?;
        Ok(Arc::new(InlineBuildExec { join }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.join.execute(partition, context)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        self.join.metrics()
    }
}

/// A join's build side as one task reads it. It has no inputs as far as plan walks go, so
/// the metrics a task reports match the scheduler's plan, in which the build side is hidden.
#[derive(Debug)]
pub(crate) struct TaskBuildExec {
    input: Arc<dyn ExecutionPlan>,
}

impl DisplayAs for TaskBuildExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "TaskBuildExec: read by this task")
    }
}

impl ExecutionPlan for TaskBuildExec {
    fn name(&self) -> &str {
        "TaskBuildExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        StatisticsContext::new().compute(self.input.as_ref(), args)
    }

    crate::optimizer::no_expressions!();

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "TaskBuildExec takes no inputs".to_string(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
