//! Joins that yield to the runtime: a join can make many batches from one input batch (a
//! cross or nested loop join over a large side, a hash join on a skewed key) without polling
//! anything that gives way, and a task that never gives way cannot be cancelled, locally or on
//! an executor. Each join's output is wrapped so that it spends the task's budget per batch.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;

use super::is_join;

/// Wraps every join in a [`CooperativeExec`].
#[derive(Debug, Default)]
pub struct CooperativeJoins;

impl PhysicalOptimizerRule for CooperativeJoins {
    fn name(&self) -> &str {
        "CooperativeJoins"
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            // A plan optimized twice keeps one wrapper per join.
            if let Some(outer) = node.downcast_ref::<CooperativeExec>()
                && outer.input().downcast_ref::<CooperativeExec>().is_some()
            {
                return Ok(Transformed::yes(outer.input().clone()));
            }
            if is_join(&node) {
                Ok(Transformed::yes(
                    Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>
                ))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn schema_check(&self) -> bool {
        true
    }
}
