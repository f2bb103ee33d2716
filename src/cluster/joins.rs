//! Joins whose build side cannot be broadcast on a cluster, made partitioned before the plan
//! takes its shape.

use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};

/// Makes partitioned the hash joins that build one hash table from their whole left side
/// (`CollectLeft`) and must emit that side's unmatched rows (LEFT, LEFT SEMI/ANTI/MARK, FULL).
///
/// In one process every partition of such a join shares which build rows were matched. On a
/// cluster each task would have its own copy, so Ballista's planner turns these joins into
/// partitioned ones when it cuts the plan into stages, but without the operators above them
/// noticing that they now have several partitions: an aggregate that needed one input
/// partition then answered once per partition (`count(*)` over an `EXCEPT` gave two rows).
/// Doing it here, before DataFusion's rules lay out distribution, lets those rules repartition
/// both sides and merge the join's output where its parent needs one partition. Null-aware
/// anti joins (`NOT IN`) are left to Ballista, which runs them as a single task.
#[derive(Debug, Default)]
pub struct PartitionedOuterBuilds;

impl PhysicalOptimizerRule for PartitionedOuterBuilds {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if *join.partition_mode() != PartitionMode::CollectLeft
                || join.null_aware
                || builds_are_broadcast_safe(*join.join_type())
            {
                return Ok(Transformed::no(node));
            }
            let partitioned = join
                .builder()
                .with_partition_mode(PartitionMode::Partitioned)
                .build_exec()?;
            Ok(Transformed::yes(partitioned))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "PartitionedOuterBuilds"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether every task can hold its own copy of the build side: the join emits rows of the
/// probe side only.
fn builds_are_broadcast_safe(join_type: JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Inner
            | JoinType::Right
            | JoinType::RightSemi
            | JoinType::RightAnti
            | JoinType::RightMark
    )
}
