//! Window sorts that name their partition keys. A window over `PARTITION BY k` needs its
//! input sorted on `k` first; when the planner knows `k` is constant (a filter `k = 1`
//! below) or equal to a column already sorted on, it leaves `k` out of the sort. On a cluster
//! that knowledge stays in the stage that had the filter: the window's stage reads shuffled
//! data, rebuilds the window from the sort alone, and fails with "Expects PARTITION BY
//! expression to be ordered". Putting the keys in front of the sort changes no order (they
//! are constant, or follow an earlier key) and keeps the requirement visible in every stage.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};

/// Puts each window's partition keys in front of the sort right below it, where missing.
#[derive(Debug, Default)]
pub struct ExplicitWindowSorts;

impl PhysicalOptimizerRule for ExplicitWindowSorts {
    fn name(&self) -> &str {
        "ExplicitWindowSorts"
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let keys = if let Some(w) = node.downcast_ref::<BoundedWindowAggExec>() {
                w.window_expr().first().map(|e| e.partition_by().to_vec())
            } else if let Some(w) = node.downcast_ref::<WindowAggExec>() {
                w.window_expr().first().map(|e| e.partition_by().to_vec())
            } else {
                None
            };
            let Some(keys) = keys.filter(|k| !k.is_empty()) else {
                return Ok(Transformed::no(node));
            };
            let input = node.children()[0].clone();
            let Some(sort) = input.downcast_ref::<SortExec>() else {
                return Ok(Transformed::no(node));
            };
            let missing: Vec<PhysicalSortExpr> = keys
                .iter()
                .filter(|k| !sort.expr().iter().any(|s| s.expr.eq(*k)))
                .map(|k| PhysicalSortExpr::new_default(k.clone()))
                .collect();
            if missing.is_empty() {
                return Ok(Transformed::no(node));
            }
            let Some(ordering) =
                LexOrdering::new(missing.into_iter().chain(sort.expr().iter().cloned()))
            else {
                return Ok(Transformed::no(node));
            };
            let sorted = SortExec::new(ordering, sort.input().clone())
                .with_preserve_partitioning(sort.preserve_partitioning())
                .with_fetch(sort.fetch());
            // The window works out again how its input is sorted.
            Ok(Transformed::yes(super::with_children(
                node,
                vec![Arc::new(sorted)],
            )?))
        })
        .map(|t| t.data)
    }

    fn schema_check(&self) -> bool {
        true
    }
}
