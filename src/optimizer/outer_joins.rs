//! Outer sort-merge joins with a join filter are planned as hash joins: DataFusion 55's
//! sort-merge join fails them when the filter reads a non-nullable column of the side that
//! gets null-extended ("Column 'a' is declared as non-nullable but contains null values",
//! the cause of apache/datafusion#21197). Ballista plans every join as a sort-merge join.

use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode, SortMergeJoinExec};

/// Replaces each outer [`SortMergeJoinExec`] that has a join filter with a partitioned
/// [`HashJoinExec`] on the same keys; runs first, so the rules after it give the hash join
/// its partitioning and drop the sorts the merge join needed.
#[derive(Debug, Default)]
pub struct FilteredOuterJoinsByHash;

impl PhysicalOptimizerRule for FilteredOuterJoinsByHash {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<SortMergeJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            let outer = matches!(
                join.join_type(),
                JoinType::Left | JoinType::Right | JoinType::Full
            );
            if !outer || join.filter().is_none() {
                return Ok(Transformed::no(node));
            }
            let hash = HashJoinExec::try_new(
                join.left().clone(),
                join.right().clone(),
                join.on().to_vec(),
                join.filter().clone(),
                &join.join_type(),
                None,
                PartitionMode::Partitioned,
                join.null_equality(),
                false,
            )?;
            Ok(Transformed::yes(Arc::new(hash) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "strata_filtered_outer_joins_by_hash"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
