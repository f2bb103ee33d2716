//! Inner joins keyed on the column, of those their inputs' inner joins make equal, that is
//! read deepest, so that the join's runtime filter reaches the scan that feeds the most work.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, ExprSchema, NullEquality, Result};
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use crate::optimizer::StrataOptions;

/// `rules` with [`DeepestJoinKeys`] just before DataFusion's projection pruning, which would
/// otherwise drop the deeper columns from the joins' inputs first.
pub fn before_projections(
    mut rules: Vec<Arc<dyn OptimizerRule + Send + Sync>>,
) -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    let at = rules
        .iter()
        .position(|r| r.name() == "optimize_projections")
        .unwrap_or(rules.len());
    rules.insert(at, Arc::new(DeepestJoinKeys));
    rules
}

/// In TPC-H q05, `c_nationkey = s_nationkey` holds in every row that reaches the join with
/// `nation`, which the query keys on `s_nationkey`. The runtime filter of that join (the
/// region's five nations) then reaches `supplier`'s scan alone. Keyed on `c_nationkey`, the
/// same join's filter reaches `customer`'s scan, at the bottom of the chain, and cuts the
/// orders and `lineitem` rows joined above it to a fifth.
///
/// A key is replaced only by a column of the same type that the input's inner joins (through
/// filters, which only drop rows) equate with it, and that comes from a table further down
/// that input. Inner equality joins drop NULL keys, so the two are equal in every row.
#[derive(Debug, Default)]
pub struct DeepestJoinKeys;

impl OptimizerRule for DeepestJoinKeys {
    fn name(&self) -> &str {
        "strata_deepest_join_keys"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Join(mut join) = plan else {
            return Ok(Transformed::no(plan));
        };
        let on = config
            .options()
            .extensions
            .get::<StrataOptions>()
            .is_none_or(|o| o.deepest_join_keys);
        if !on || !strict_inner(join.join_type, join.null_equality) || join.on.is_empty() {
            return Ok(Transformed::no(LogicalPlan::Join(join)));
        }
        // Each side's equalities are gathered once, for all of the join's keys.
        let (left, right) = (Equalities::of(&join.left), Equalities::of(&join.right));
        let mut changed = false;
        for (left_key, right_key) in join.on.iter_mut() {
            for (side, input, key) in [
                (&left, &join.left, left_key),
                (&right, &join.right, right_key),
            ] {
                if let Some(deeper) = side.deepest_equal(input, key) {
                    *key = deeper;
                    changed = true;
                }
            }
        }
        let plan = LogicalPlan::Join(join);
        Ok(if changed {
            Transformed::yes(plan)
        } else {
            Transformed::no(plan)
        })
    }
}

fn strict_inner(join_type: JoinType, nulls: NullEquality) -> bool {
    join_type == JoinType::Inner && nulls == NullEquality::NullEqualsNothing
}

/// The column pairs that the inner equality joins of one input equate, and how deep under
/// that input each column of their inputs is read.
#[derive(Default)]
struct Equalities {
    pairs: Vec<(Column, Column)>,
    depth: HashMap<Column, usize>,
}

impl Equalities {
    fn of(input: &LogicalPlan) -> Self {
        let mut found = Equalities::default();
        found.gather(input, 0);
        found
    }

    /// Walks down inner joins and filters; anything else is where its columns are read.
    fn gather(&mut self, plan: &LogicalPlan, level: usize) {
        match plan {
            LogicalPlan::Join(j) if strict_inner(j.join_type, j.null_equality) => {
                for (l, r) in &j.on {
                    if let (Expr::Column(l), Expr::Column(r)) = (l, r) {
                        self.pairs.push((l.clone(), r.clone()));
                    }
                }
                self.gather(&j.left, level + 1);
                self.gather(&j.right, level + 1);
            }
            LogicalPlan::Filter(f) => self.gather(&f.input, level),
            other => {
                for c in other.schema().columns() {
                    self.depth.insert(c, level);
                }
            }
        }
    }

    /// The column of `input`'s output, equal to `key` in every row, that is read furthest
    /// down `input` (and further down than `key`), if there is one.
    fn deepest_equal(&self, input: &LogicalPlan, key: &Expr) -> Option<Expr> {
        let Expr::Column(key) = key else {
            return None;
        };
        let key_depth = *self.depth.get(key)?;
        let mut class = vec![key.clone()];
        let mut grew = true;
        while grew {
            grew = false;
            for (a, b) in &self.pairs {
                for (from, to) in [(a, b), (b, a)] {
                    if class.contains(from) && !class.contains(to) {
                        class.push(to.clone());
                        grew = true;
                    }
                }
            }
        }
        let schema = input.schema();
        let key_type = schema.field_from_column(key).ok()?.data_type();
        class
            .into_iter()
            .filter(|c| {
                schema
                    .field_from_column(c)
                    .is_ok_and(|f| f.data_type() == key_type)
            })
            .filter_map(|c| self.depth.get(&c).map(|d| (*d, c)))
            .filter(|(d, _)| *d > key_depth)
            .max_by_key(|(d, _)| *d)
            .map(|(_, c)| Expr::Column(c))
    }
}
