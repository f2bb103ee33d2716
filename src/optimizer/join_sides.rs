//! Hash joins built on the side with fewer estimated rows. DataFusion picks a join's build
//! side by comparing the estimated byte sizes of its inputs first. The byte size of a join's
//! output is summed from its columns' sizes in the scans below, without scaling them down to
//! the rows the join keeps: in TPC-H q21, the supplier-lineitem-orders-nation side (60 K
//! rows estimated at SF1) is "95 MB" and the filtered lineitem (5.9 M rows) 95 MB too, so
//! the NOT EXISTS join builds its hash table on lineitem (1.6 GB at SF10). This rule runs
//! right after DataFusion's choice and swaps a join back where the row estimates, times a
//! width taken from the schema, say that the build side is clearly the larger one.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};

use super::{estimated_rows, row_width, setting_on};

/// How much larger the build side's estimate must be before the join is swapped: the
/// estimates are rough, and a near tie is left as DataFusion chose it.
const CLEARLY_LARGER: usize = 4;

/// Swaps hash joins whose build side is estimated at more than four times the bytes of the
/// probe side (`strata.join_sides_by_rows`).
#[derive(Debug, Default)]
pub struct JoinSidesByRows;

impl PhysicalOptimizerRule for JoinSidesByRows {
    fn name(&self) -> &str {
        "JoinSidesByRows"
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let enabled = setting_on(config, |o| o.join_sides_by_rows);
        if !enabled || !config.optimizer.join_reordering {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            let mode = *join.partition_mode();
            if !matches!(
                mode,
                PartitionMode::CollectLeft | PartitionMode::Partitioned
            ) || !join.join_type().supports_swap()
                || join.null_aware
            {
                return Ok(Transformed::no(node));
            }
            let (Some(build), Some(probe)) = (
                estimated_bytes(join.left())?,
                estimated_bytes(join.right())?,
            ) else {
                return Ok(Transformed::no(node));
            };
            if build > probe.saturating_mul(CLEARLY_LARGER) {
                Ok(Transformed::yes(join.swap_inputs(mode)?))
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

/// Estimated rows times a row width read off the schema; `None` without a row estimate.
fn estimated_bytes(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<usize>> {
    Ok(estimated_rows(plan)?.map(|rows| rows.saturating_mul(row_width(&plan.schema()))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimizer::{StrataOptions, StrataSettings};
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::common::{JoinType, NullEquality};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::physical_expr::expressions::col;

    /// A table of `rows` rows with one column `k`, whose statistics are exact.
    fn table(rows: i64) -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..rows))],
        )
        .unwrap();
        MemorySourceConfig::try_new_exec(&[vec![batch]], schema, None).unwrap()
    }

    /// `left` anti-joined with `right` on `k`, built on `left`.
    fn anti_join(left: i64, right: i64) -> Arc<dyn ExecutionPlan> {
        let (left, right) = (table(left), table(right));
        let on = vec![(
            col("k", &left.schema()).unwrap(),
            col("k", &right.schema()).unwrap(),
        )];
        Arc::new(
            HashJoinExec::try_new(
                left,
                right,
                on,
                None,
                &JoinType::LeftAnti,
                None,
                PartitionMode::CollectLeft,
                NullEquality::NullEqualsNothing,
                false,
            )
            .unwrap(),
        )
    }

    fn optimized(plan: Arc<dyn ExecutionPlan>, enabled: bool) -> String {
        let mut config = ConfigOptions::new();
        let options = StrataOptions(StrataSettings {
            join_sides_by_rows: enabled,
            ..StrataSettings::default()
        });
        config.extensions.insert(options);
        let plan = JoinSidesByRows.optimize(plan, &config).unwrap();
        datafusion::physical_plan::displayable(plan.as_ref())
            .indent(false)
            .to_string()
    }

    #[test]
    fn a_join_built_on_a_clearly_larger_side_is_swapped() {
        let plan = optimized(anti_join(10_000, 100), true);
        assert!(plan.contains("join_type=RightAnti"), "{plan}");
        // Off, the join stays as it was.
        let plan = optimized(anti_join(10_000, 100), false);
        assert!(plan.contains("join_type=LeftAnti"), "{plan}");
    }

    #[test]
    fn a_near_tie_and_a_smaller_build_side_are_left_alone() {
        for (left, right) in [(300, 100), (100, 10_000)] {
            let plan = optimized(anti_join(left, right), true);
            assert!(
                plan.contains("join_type=LeftAnti"),
                "{left} {right}: {plan}"
            );
        }
    }
}
