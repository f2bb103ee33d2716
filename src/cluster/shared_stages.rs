//! A subplan that a query computes more than once (a common table expression used twice) run
//! as one stage on a cluster, whose output each use reads.
//!
//! Ballista's planner gives every copy of such a subplan a stage of its own, so TPC-H q15
//! aggregated `lineitem` twice on a cluster where one process aggregates it once (see
//! [`crate::optimizer::ShareSubplans`]). The planner cannot be told to share, but a stage can
//! have several readers: a use that reads the output of the stage that computes the first
//! copy is planned as that read. Which number the planner gives that stage is found by
//! planning the query once beforehand, with each later copy replaced by a placeholder read.

use std::collections::HashMap;
use std::sync::Arc;

use ballista_core::JobId;
use ballista_core::execution_plans::{ShuffleWriter, UnresolvedShuffleExec};
use ballista_scheduler::planner::{DefaultDistributedPlanner, DistributedPlanner};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, Partitioning, displayable,
};

use crate::optimizer::{is_recursive, same_each_run, setting_on};

/// Placeholder stage numbers start here, far above any a planner gives.
const PLACEHOLDER: usize = 1 << 40;

/// Makes every later copy of a hash-shuffled subplan read the stage that the first copy is
/// planned as, instead of being a stage of its own.
///
/// Only subplans that run as one stage of their own, whole (no stage boundary inside them),
/// whose copies print the same and compute the same rows (see
/// [`crate::optimizer::ShareSubplans`]: files only, nothing volatile), and only where the
/// planner, asked beforehand, puts the first copy in exactly one stage of the same
/// partitioning. Otherwise the plan is left as it is. `SET strata.share_subplans = false`
/// turns it off, as in local mode.
///
/// The scheduler's last physical rule: the plan it returns is the one Ballista's planner
/// splits into stages.
#[derive(Debug, Default)]
pub struct SharedStages;

impl PhysicalOptimizerRule for SharedStages {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !setting_on(config, |o| o.share_subplans) || is_recursive(&plan) {
            return Ok(plan);
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        plan.apply(|node| {
            if let Some(key) = shuffled_subplan(node) {
                *seen.entry(key).or_default() += 1;
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        seen.retain(|_, n| *n > 1);
        if seen.is_empty() {
            return Ok(plan);
        }
        // Later copies become placeholder reads, numbered in the order they are met.
        let mut firsts: Vec<String> = Vec::new();
        let mut later: Vec<String> = Vec::new();
        let placeheld = Arc::clone(&plan)
            .transform_down(|node| {
                let Some(key) = shuffled_subplan(&node).filter(|k| seen.contains_key(k)) else {
                    return Ok(Transformed::no(node));
                };
                if !firsts.contains(&key) {
                    firsts.push(key);
                    return Ok(Transformed::new(node, false, TreeNodeRecursion::Jump));
                }
                let read = UnresolvedShuffleExec::new(
                    PLACEHOLDER + later.len(),
                    node.schema(),
                    node.output_partitioning().clone(),
                );
                later.push(key);
                Ok(Transformed::new(
                    Arc::new(read),
                    true,
                    TreeNodeRecursion::Jump,
                ))
            })?
            .data;
        let Some(stages) = first_copies(&placeheld, config) else {
            return Ok(plan);
        };
        if later.iter().any(|key| !stages.contains_key(key)) {
            return Ok(plan);
        }
        let shared = placeheld
            .transform_up(|node| {
                let Some(read) = node.downcast_ref::<UnresolvedShuffleExec>() else {
                    return Ok(Transformed::no(node));
                };
                let Some(key) = read
                    .stage_id
                    .checked_sub(PLACEHOLDER)
                    .and_then(|i| later.get(i))
                else {
                    return Ok(Transformed::no(node));
                };
                let read = UnresolvedShuffleExec::new(
                    stages[key],
                    read.schema(),
                    read.properties().output_partitioning().clone(),
                );
                Ok(Transformed::yes(Arc::new(read) as Arc<dyn ExecutionPlan>))
            })?
            .data;
        // The placeholders took no stage numbers, so the planner numbers the plan with the
        // real reads as it did with the placeholders; checked all the same.
        match first_copies(&shared, config) {
            Some(again) if later.iter().all(|key| again.get(key) == stages.get(key)) => Ok(shared),
            _ => Ok(plan),
        }
    }

    fn name(&self) -> &str {
        "shared_stages"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The stage each hash-shuffled subplan of `plan` is planned as, by what it prints; `None`
/// when Ballista's planner fails on the plan or plans one such subplan as two stages.
fn first_copies(
    plan: &Arc<dyn ExecutionPlan>,
    config: &ConfigOptions,
) -> Option<HashMap<String, usize>> {
    let job = JobId::new("strata-shared-stages");
    let stages = DefaultDistributedPlanner::new()
        .plan_query_stages(&job, Arc::clone(plan), config)
        .ok()?;
    let mut ids = HashMap::new();
    for stage in &stages {
        let Some(key) = written(stage.as_ref()) else {
            continue;
        };
        if ids.insert(key, stage.stage_id()).is_some() {
            return None;
        }
    }
    Some(ids)
}

/// What identifies a stage that writes its input shuffled by hash, as [`shuffled_subplan`]
/// identifies the subplan it was planned from.
fn written(stage: &dyn ShuffleWriter) -> Option<String> {
    let partitioning = stage.shuffle_output_partitioning()?;
    let input = stage.children().into_iter().next()?;
    key(partitioning, input.as_ref())
}

/// What identifies `node` when it is a hash shuffle of a subplan that is a stage of its own
/// as a whole and computes the same rows each time it runs.
fn shuffled_subplan(node: &Arc<dyn ExecutionPlan>) -> Option<String> {
    let shuffle = node.downcast_ref::<RepartitionExec>()?;
    let input = shuffle.input();
    if !same_each_run(input) || input.exists(|n| Ok(starts_a_stage(n.as_ref()))).ok()? {
        return None;
    }
    key(shuffle.partitioning(), input.as_ref())
}

fn key(partitioning: &Partitioning, input: &dyn ExecutionPlan) -> Option<String> {
    matches!(partitioning, Partitioning::Hash(_, _)).then(|| {
        format!(
            "{partitioning}\n{:?}\n{}",
            input.schema(),
            displayable(input).indent(true)
        )
    })
}

/// Whether Ballista's planner starts a stage at `plan` or below it.
fn starts_a_stage(plan: &dyn ExecutionPlan) -> bool {
    plan.is::<CoalescePartitionsExec>()
        || plan.is::<SortPreservingMergeExec>()
        || plan.is::<UnionExec>()
        || plan.is::<UnresolvedShuffleExec>()
        || plan
            .downcast_ref::<RepartitionExec>()
            .is_some_and(|r| matches!(r.partitioning(), Partitioning::Hash(_, _)))
        || plan
            .downcast_ref::<HashJoinExec>()
            .is_some_and(|j| *j.partition_mode() == PartitionMode::CollectLeft)
}
