//! Joins on a group key and an aggregated value hashed on the group key alone, so that their
//! runtime filter reaches below the aggregation.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::common::JoinSide;
use datafusion::common::NullEquality;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::logical_expr::{JoinType, Operator};
use datafusion::physical_expr::expressions::{BinaryExpr, Column};
use datafusion::physical_expr::{PhysicalExpr, conjunction};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateOutputMode};
use datafusion::physical_plan::joins::utils::{ColumnIndex, JoinFilter};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;

use super::setting_on;

/// A hash join that matches a group key *and* an aggregated value of the aggregation its
/// probe side reads (`ps_supplycost = (SELECT min(ps_supplycost) ... WHERE p_partkey =
/// ps_partkey)` in TPC-H q02, decorrelated into a join on both) hashes on the group key
/// alone and compares the value in its join filter.
///
/// DataFusion's runtime filter of a hash join covers all its keys, and it can pass an
/// aggregation only when all of them are group keys; with the aggregated value among them,
/// q02's aggregation digested the `partsupp` rows of all 200,000 parts for the 747 on the
/// join's other side. On the group key alone, the filter reaches the scan below the aggregation.
/// Only `CollectLeft` joins (one hash table, so the probe side's partitioning does not
/// depend on the keys), inner and semi joins (whose runtime filter DataFusion pushes down)
/// and keys that are plain columns with `=` semantics are changed.
/// `SET strata.join_on_group_keys = false` turns it off.
#[derive(Debug, Default)]
pub struct JoinOnGroupKeys;

impl PhysicalOptimizerRule for JoinOnGroupKeys {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !setting_on(config, |s| s.join_on_group_keys)
            || !config.optimizer.enable_join_dynamic_filter_pushdown
        {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            match on_group_keys(join)? {
                Some(changed) => Ok(Transformed::yes(changed)),
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "join_on_group_keys"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// What a column of a plan's output is, followed down to an aggregation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A group key of the aggregation (by its address).
    GroupKey(usize),
    /// An aggregated value of it.
    Value(usize),
}

/// Follows column `index` of `plan`'s output down through projections of plain columns and
/// operators that pass their input's columns on unchanged, to an aggregation.
fn origin(plan: &Arc<dyn ExecutionPlan>, index: usize) -> Option<Origin> {
    if let Some(agg) = plan.downcast_ref::<AggregateExec>() {
        let groups = agg.group_expr();
        // Grouping sets make some keys NULL in some rows; a partial aggregation's output is
        // not the groups' final values.
        if !groups.is_single() || agg.mode().output_mode() != AggregateOutputMode::Final {
            return None;
        }
        let at = Arc::as_ptr(plan) as *const () as usize;
        return Some(if index < groups.expr().len() {
            Origin::GroupKey(at)
        } else {
            Origin::Value(at)
        });
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let expr = &projection.expr().get(index)?.expr;
        let column = expr.downcast_ref::<Column>()?;
        return origin(projection.input(), column.index());
    }
    let [child] = plan.children()[..] else {
        return None;
    };
    // An operator whose output columns are its input's, in the same order.
    (child.schema().fields() == plan.schema().fields()).then_some(())?;
    origin(child, index)
}

/// `join` hashed on the group keys of its probe side's aggregation alone, with its keys on
/// that aggregation's values compared in its filter instead, if it has both.
fn on_group_keys(join: &HashJoinExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if *join.partition_mode() != PartitionMode::CollectLeft
        || !matches!(
            join.join_type(),
            JoinType::Inner | JoinType::LeftSemi | JoinType::RightSemi
        )
        || join.null_equality() != NullEquality::NullEqualsNothing
        || join.on().len() < 2
    {
        return Ok(None);
    }
    let probe = join.right();
    let mut keys = Vec::new();
    let mut values = Vec::new();
    let mut aggregation = None;
    let mut has_group_key = false;
    for (left, right) in join.on() {
        let traced = right
            .downcast_ref::<Column>()
            .and_then(|r| Some((r, origin(probe, r.index())?)));
        let Some((r, origin)) = traced else {
            keys.push((Arc::clone(left), Arc::clone(right)));
            continue;
        };
        let (Origin::GroupKey(at) | Origin::Value(at)) = origin;
        // Keys from two different aggregations: leave the join alone.
        if *aggregation.get_or_insert(at) != at {
            return Ok(None);
        }
        match (origin, left.downcast_ref::<Column>()) {
            (Origin::Value(_), Some(l)) => values.push((l.clone(), r.clone())),
            _ => {
                has_group_key |= matches!(origin, Origin::GroupKey(_));
                keys.push((Arc::clone(left), Arc::clone(right)));
            }
        }
    }
    if values.is_empty() || !has_group_key {
        return Ok(None);
    }
    let filter = with_equalities(join, &values);
    join.builder()
        .with_on(keys)
        .with_filter(Some(filter))
        .build_exec()
        .map(Some)
}

/// `join`'s filter (or none) with `left = right` for each pair of columns added.
fn with_equalities(join: &HashJoinExec, pairs: &[(Column, Column)]) -> JoinFilter {
    let (mut indices, mut fields, mut parts): (Vec<ColumnIndex>, Vec<Field>, Vec<_>) =
        match join.filter() {
            Some(f) => (
                f.column_indices().to_vec(),
                f.schema()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect(),
                vec![Arc::clone(f.expression())],
            ),
            None => (Vec::new(), Vec::new(), Vec::new()),
        };
    let (left_schema, right_schema) = (join.left().schema(), join.right().schema());
    for (l, r) in pairs {
        let at = indices.len();
        indices.push(ColumnIndex {
            index: l.index(),
            side: JoinSide::Left,
        });
        indices.push(ColumnIndex {
            index: r.index(),
            side: JoinSide::Right,
        });
        fields.push(left_schema.field(l.index()).clone());
        fields.push(right_schema.field(r.index()).clone());
        let eq: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(Column::new(l.name(), at)),
            Operator::Eq,
            Arc::new(Column::new(r.name(), at + 1)),
        ));
        parts.push(eq);
    }
    JoinFilter::new(conjunction(parts), indices, Arc::new(Schema::new(fields)))
}
