//! Joins' runtime filters within a stage, planned on the executor that runs the stage.
//!
//! Ballista turns DataFusion's runtime ("dynamic") filters off for the whole job: a join and a
//! scan it would filter may be in different stages, and the filter cannot cross from one to
//! the other. Within a stage they can. A task runs every partition of its stage's plan at
//! once (Ballista narrows the plan to the task's partitions first), so a join there fills in
//! its filter as in one process. The executor therefore plans the filters of each stage's
//! joins itself, on the plan it was sent, and runs the task with them on.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::filter_pushdown::FilterPushdown;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;

use crate::optimizer::{JoinFiltersAtScan, RuntimeFilterExec, is_recursive, setting_on};

/// `config` with the runtime filters of joins, top-k sorts and aggregations on, if
/// `strata.stage_join_filters` is; `None` if it is off.
pub(crate) fn with_stage_filters(config: &SessionConfig) -> Option<SessionConfig> {
    setting_on(config.options(), |s| s.stage_join_filters).then(|| filters_on(config))
}

/// `config` with the runtime filters of joins, top-k sorts and aggregations on.
pub(crate) fn filters_on(config: &SessionConfig) -> SessionConfig {
    let mut config = config.clone();
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.enable_dynamic_filter_pushdown = true;
    optimizer.enable_join_dynamic_filter_pushdown = true;
    optimizer.enable_topk_dynamic_filter_pushdown = true;
    optimizer.enable_aggregate_dynamic_filter_pushdown = true;
    config
}

/// The plan of one stage (below its shuffle writer) with its joins' runtime filters pushed
/// to its scans, and applied there where that pays ([`JoinFiltersAtScan`]), under `options`
/// (from [`with_stage_filters`]).
///
/// The scheduler matches the metrics a task reports to the nodes of the plan it sent, one
/// by one, so the filters added here keep theirs to themselves; should the plan's metrics
/// still differ in number, it is left as it was sent.
pub(crate) fn plan_stage_filters(
    plan: Arc<dyn ExecutionPlan>,
    options: &ConfigOptions,
) -> Result<Arc<dyn ExecutionPlan>> {
    if is_recursive(&plan) {
        return Ok(plan);
    }
    let pushed = FilterPushdown::new_post_optimization().optimize(Arc::clone(&plan), options)?;
    let filtered = JoinFiltersAtScan.optimize(pushed, options)?;
    let planned = filtered
        .transform_up(|node| match node.downcast_ref::<RuntimeFilterExec>() {
            Some(filter) => Ok(Transformed::yes(
                Arc::new(filter.unreported()) as Arc<dyn ExecutionPlan>
            )),
            None => Ok(Transformed::no(node)),
        })?
        .data;
    if metered_nodes(&planned) == metered_nodes(&plan) {
        Ok(planned)
    } else {
        log::warn!("a stage's runtime filters would change its metrics; planned without them");
        Ok(plan)
    }
}

/// How many nodes of `plan` report metrics.
fn metered_nodes(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let mut count = 0;
    let _ = plan.apply(|node| {
        count += usize::from(node.metrics().is_some());
        Ok(TreeNodeRecursion::Continue)
    });
    count
}
