//! Large `ORDER BY … LIMIT` as a sort that can spill. DataFusion keeps the first `n` rows of
//! a sort with a limit in a heap (TopK) that lives in memory whole; for a limit of millions
//! of rows (`LIMIT 3 OFFSET 1999997`) that heap does not fit under a memory limit and the
//! query failed where a full sort would have spilled to disk. Sorts whose `n` rows would
//! take more than `strata.topk_max_bytes` are planned as a full sort followed by the limit.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};

use super::{StrataOptions, row_width};

/// Replaces each sort whose limited rows would take more than `strata.topk_max_bytes` by a
/// sort without a limit and a limit above it (per partition where the sort keeps its
/// partitions).
#[derive(Debug, Default)]
pub struct LargeTopKAsSort;

impl PhysicalOptimizerRule for LargeTopKAsSort {
    fn name(&self) -> &str {
        "LargeTopKAsSort"
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(max) = config
            .extensions
            .get::<StrataOptions>()
            .and_then(|o| o.topk_max_bytes)
        else {
            return Ok(plan);
        };
        plan.transform_up(|node| {
            let Some(sort) = node.downcast_ref::<SortExec>() else {
                return Ok(Transformed::no(node));
            };
            let width = row_width(&sort.schema());
            let Some(fetch) = sort.fetch().filter(|f| f.saturating_mul(width) > max) else {
                return Ok(Transformed::no(node));
            };
            // A sort whose input already comes in order reads only `fetch` rows and keeps
            // none of them; it is no TopK.
            if sort
                .input()
                .equivalence_properties()
                .ordering_satisfy(sort.expr().clone())?
            {
                return Ok(Transformed::no(node));
            }
            let full: Arc<dyn ExecutionPlan> = Arc::new(sort.with_fetch(None));
            let limited: Arc<dyn ExecutionPlan> = if sort.preserve_partitioning() {
                Arc::new(LocalLimitExec::new(full, fetch))
            } else {
                Arc::new(GlobalLimitExec::new(full, 0, Some(fetch)))
            };
            Ok(Transformed::yes(limited))
        })
        .map(|t| t.data)
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimizer::StrataSettings;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr, expressions::col};
    use datafusion::physical_plan::displayable;

    fn sort_with_fetch(fetch: usize, preserve: bool) -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![3, 1, 2]))],
        )
        .unwrap();
        let input = MemorySourceConfig::try_new_exec(&[vec![batch]], schema.clone(), None).unwrap();
        let ordering =
            LexOrdering::new([PhysicalSortExpr::new_default(col("a", &schema).unwrap())]).unwrap();
        Arc::new(
            SortExec::new(ordering, input)
                .with_preserve_partitioning(preserve)
                .with_fetch(Some(fetch)),
        )
    }

    fn rewritten(plan: Arc<dyn ExecutionPlan>, max: usize) -> String {
        let mut config = ConfigOptions::new();
        let options = StrataOptions(StrataSettings {
            topk_max_bytes: Some(max),
            ..StrataSettings::default()
        });
        config.extensions.insert(options);
        let plan = LargeTopKAsSort.optimize(plan, &config).unwrap();
        displayable(plan.as_ref()).indent(false).to_string()
    }

    #[test]
    fn a_limit_above_the_threshold_becomes_a_full_sort_and_a_limit() {
        // 2,000,000 rows of one BIGINT: 16 MB.
        let plan = rewritten(sort_with_fetch(2_000_000, false), 8_000_000);
        assert!(
            plan.starts_with("GlobalLimitExec: skip=0, fetch=2000000"),
            "{plan}"
        );
        assert!(plan.contains("SortExec: expr=[a@0 ASC], preserve_partitioning=[false]"));
        assert!(!plan.contains("TopK"), "{plan}");

        let plan = rewritten(sort_with_fetch(2_000_000, true), 8_000_000);
        assert!(plan.starts_with("LocalLimitExec: fetch=2000000"), "{plan}");
    }

    #[test]
    fn a_limit_within_the_threshold_stays_a_topk() {
        let plan = rewritten(sort_with_fetch(1_000_000, false), 8_000_000);
        assert!(plan.starts_with("SortExec: TopK(fetch=1000000)"), "{plan}");
    }
}
