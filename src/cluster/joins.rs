//! How joins are laid out on a cluster, decided before the plan takes its shape: build sides
//! that cannot be broadcast made partitioned, and those Ballista will broadcast made
//! broadcast joins from the start; and, once it has, broadcast joins Ballista will not
//! broadcast made partitioned without a stage of their own.

use std::sync::Arc;

use ballista_core::config::BallistaConfig;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::JoinType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};

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

/// Makes broadcast joins (`CollectLeft`) of the partitioned hash joins whose smaller side is
/// under `ballista.optimizer.broadcast_join_threshold_bytes`, by the same estimate Ballista's
/// planner uses, which would broadcast them anyway when it cuts the plan into stages.
///
/// Ballista does so after the plan has taken its shape, keeping the repartitions laid out for
/// a partitioned join: the probe side was still shuffled by the join key, for nothing, and
/// the build side shuffled twice before being broadcast (TPC-H q18: 6 M `lineitem` rows
/// written and read back, one stage more, 3.9 times local mode's time). Decided here, right
/// after DataFusion picks each join's mode, the probe side stays where it is read and the
/// build side is written once.
#[derive(Debug, Default)]
pub struct BroadcastJoins;

impl PhysicalOptimizerRule for BroadcastJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !crate::optimizer::setting_on(config, |o| o.broadcast_joins) {
            return Ok(plan);
        }
        let threshold = broadcast_threshold(config);
        if threshold == 0 {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if *join.partition_mode() != PartitionMode::Partitioned || join.null_aware {
                return Ok(Transformed::no(node));
            }
            let left = broadcast_bytes(join.left())?;
            let right = broadcast_bytes(join.right())?;
            let under = |b: Option<usize>| b.is_some_and(|b| b < threshold);
            let swap = match (under(left), under(right)) {
                (false, false) => return Ok(Transformed::no(node)),
                (true, true) => left > right,
                (_, right_under) => right_under,
            };
            let join_type = *join.join_type();
            if swap {
                if !join_type.supports_swap() || !builds_are_broadcast_safe(join_type.swap()) {
                    return Ok(Transformed::no(node));
                }
                return Ok(Transformed::yes(
                    join.swap_inputs(PartitionMode::CollectLeft)?,
                ));
            }
            if !builds_are_broadcast_safe(join_type) {
                return Ok(Transformed::no(node));
            }
            let broadcast = join
                .builder()
                .with_partition_mode(PartitionMode::CollectLeft)
                .build_exec()?;
            Ok(Transformed::yes(broadcast))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "BroadcastJoins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Makes partitioned, as the last rule, the broadcast joins (`CollectLeft`) whose build side
/// Ballista's planner will not broadcast: over `ballista.optimizer.broadcast_join_threshold_bytes`
/// by its estimate of the plan as it receives it, or of unknown size.
///
/// Ballista demotes such a join itself, by putting a hash repartition of each side above the
/// join's inputs as they are, so the build side's merge into one partition stays below the
/// new repartition: that side was written by its stage, read back by a stage that does
/// nothing but shuffle it by key, and written again (TPC-H q21: the 3.8 M `lineitem` rows of
/// its `NOT EXISTS` twice; DataFusion's estimate for that side changed between the rules that
/// pick join modes and the end of planning). Here the merge is left out, so the side is
/// shuffled by key where it is read.
#[derive(Debug, Default)]
pub struct UnbroadcastJoinsPartitioned;

impl PhysicalOptimizerRule for UnbroadcastJoinsPartitioned {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !crate::optimizer::setting_on(config, |o| o.broadcast_joins) {
            return Ok(plan);
        }
        let threshold = broadcast_threshold(config);
        let partitions = config.execution.target_partitions;
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if *join.partition_mode() != PartitionMode::CollectLeft
                || join.null_aware
                || !builds_are_broadcast_safe(*join.join_type())
                // The join's output keeps its number of partitions, which the operators
                // above were laid out for.
                || join.right().output_partitioning().partition_count() != partitions
                || (threshold > 0 && broadcast_bytes(join.left())?.is_some_and(|b| b < threshold))
            {
                return Ok(Transformed::no(node));
            }
            let build = match join.left().downcast_ref::<CoalescePartitionsExec>() {
                Some(merge) if merge.fetch().is_none() => Arc::clone(merge.input()),
                _ => Arc::clone(join.left()),
            };
            let (left_keys, right_keys): (Vec<_>, Vec<_>) = join
                .on()
                .iter()
                .map(|(l, r)| (Arc::clone(l), Arc::clone(r)))
                .unzip();
            // A side already partitioned by its keys (the output of a partitioned join on
            // the same keys) stays in its stage.
            let by_key = |side: Arc<dyn ExecutionPlan>, keys| -> Result<Arc<dyn ExecutionPlan>> {
                let wanted = Partitioning::Hash(keys, partitions);
                if *side.output_partitioning() == wanted {
                    return Ok(side);
                }
                Ok(Arc::new(RepartitionExec::try_new(side, wanted)?))
            };
            let left = by_key(build, left_keys)?;
            let right = by_key(Arc::clone(join.right()), right_keys)?;
            debug_assert_eq!(
                left.output_partitioning().partition_count(),
                right.output_partitioning().partition_count()
            );
            let partitioned = join
                .builder()
                .with_partition_mode(PartitionMode::Partitioned)
                .with_new_children(vec![left, right])?
                .build_exec()?;
            Ok(Transformed::yes(partitioned))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "UnbroadcastJoinsPartitioned"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The size up to which Ballista broadcasts a join's build side, as the session sets it.
pub(super) fn broadcast_threshold(config: &ConfigOptions) -> usize {
    config.extensions.get::<BallistaConfig>().map_or_else(
        || BallistaConfig::default().broadcast_join_threshold_bytes(),
        |c| c.broadcast_join_threshold_bytes(),
    )
}

/// The bytes Ballista's planner estimates `plan` returns when it decides whether to
/// broadcast it: the statistics' bytes, or else their rows times a width per column type.
/// `None` without an estimate (or an estimate of nothing), which Ballista never broadcasts.
pub(super) fn broadcast_bytes(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<usize>> {
    let stats = StatisticsContext::new().compute(plan.as_ref(), &StatisticsArgs::new())?;
    if let Some(&bytes) = stats.total_byte_size.get_value()
        && bytes != 0
    {
        return Ok(Some(bytes));
    }
    let Some(&rows) = stats.num_rows.get_value().filter(|r| **r != 0) else {
        return Ok(None);
    };
    let width: usize = plan
        .schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Boolean | DataType::Int8 | DataType::UInt8 => 1,
            DataType::Int16 | DataType::UInt16 => 2,
            DataType::Int32 | DataType::UInt32 | DataType::Float32 | DataType::Date32 => 4,
            DataType::Int64 | DataType::UInt64 | DataType::Float64 | DataType::Date64 => 8,
            DataType::Decimal128(_, _) => 16,
            _ => 32,
        })
        .sum();
    Ok(Some(rows.saturating_mul(width.max(8))))
}
