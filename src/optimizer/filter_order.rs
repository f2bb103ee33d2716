//! The conjuncts of a filter in the order that drops rows soonest for the least work.
//! DataFusion evaluates `a AND b AND c` from the left, and evaluates a conjunct on the rows
//! that passed the ones before it once few do; it keeps the order of the query text. A
//! selective range on a date evaluated before a string comparison spares the comparison
//! most rows (TPC-H q12 compared `l_shipmode` on every `lineitem` row first).

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{
    BinaryExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, Literal, NotExpr,
};
use datafusion::physical_expr::intervals::utils::check_support;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr, conjunction, split_conjunction};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};

use super::{estimated_rows, setting_on};

type Conjuncts = Vec<Arc<dyn PhysicalExpr>>;

/// The share of rows a conjunct is taken to keep when DataFusion cannot estimate it.
const UNKNOWN_SELECTIVITY: f64 = 0.5;

/// Puts the conjuncts of each filter that cannot fail first, those over the same columns
/// together, ordered by the rows they drop per unit of work; conjuncts that can fail (a
/// division, a cast) follow in their own order, so a condition written to guard another
/// still comes before it.
#[derive(Debug, Default)]
pub struct CheapFiltersFirst;

impl PhysicalOptimizerRule for CheapFiltersFirst {
    fn name(&self) -> &str {
        "CheapFiltersFirst"
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let enabled = setting_on(config, |o| o.cheap_filters_first);
        if !enabled {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else {
                return Ok(Transformed::no(node));
            };
            match reordered(filter)? {
                Some(predicate) => {
                    let rebuilt = FilterExecBuilder::from(filter)
                        .with_predicate(predicate)
                        .build()?;
                    Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
                }
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `filter`'s predicate with its conjuncts reordered, if that changes their order.
fn reordered(filter: &FilterExec) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let conjuncts = split_conjunction(filter.predicate());
    if conjuncts.len() < 2 {
        return Ok(None);
    }
    let input = filter.input();
    let schema = input.schema();
    let (safe, unsafe_): (Vec<_>, Vec<_>) = conjuncts
        .iter()
        .map(|c| Arc::clone(*c))
        .partition(|c| cannot_fail(c, &schema));
    if safe.is_empty() {
        return Ok(None);
    }
    // Conjuncts over the same columns (the two ends of a range) are judged together: alone
    // each end keeps most rows.
    let mut groups: Vec<(BTreeSet<usize>, Conjuncts)> = Vec::new();
    for c in safe {
        let columns: BTreeSet<usize> = collect_columns(&c).iter().map(Column::index).collect();
        match groups.iter_mut().find(|(cols, _)| *cols == columns) {
            Some((_, members)) => members.push(c),
            None => groups.push((columns, vec![c])),
        }
    }
    let input_rows = estimated_rows(input)?.filter(|n| *n > 0);
    let mut ranked = Vec::with_capacity(groups.len());
    for (_, members) in groups {
        let kept = match input_rows {
            Some(rows) => kept_share(&members, input, rows)?,
            None => UNKNOWN_SELECTIVITY,
        };
        let work: f64 = members.iter().map(|m| cost(m, &schema)).sum();
        ranked.push(((1.0 - kept) / work.max(0.1), members));
    }
    // A stable sort: groups that rank the same keep the query's order.
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let order: Vec<Arc<dyn PhysicalExpr>> = ranked
        .into_iter()
        .flat_map(|(_, members)| members)
        .chain(unsafe_)
        .collect();
    let unchanged = order
        .iter()
        .zip(conjuncts.iter())
        .all(|(a, b)| Arc::ptr_eq(a, b));
    Ok((!unchanged).then(|| conjunction(order)))
}

/// The share of `input`'s `rows` that DataFusion estimates `conjuncts` keep together.
fn kept_share(conjuncts: &Conjuncts, input: &Arc<dyn ExecutionPlan>, rows: usize) -> Result<f64> {
    let predicate = conjunction(conjuncts.iter().cloned());
    if !check_support(&predicate, &input.schema()) {
        return Ok(UNKNOWN_SELECTIVITY);
    }
    let filtered: Arc<dyn ExecutionPlan> =
        Arc::new(FilterExec::try_new(predicate, Arc::clone(input))?);
    Ok(estimated_rows(&filtered)?
        .map_or(UNKNOWN_SELECTIVITY, |n| (n as f64 / rows as f64).min(1.0)))
}

/// Whether `expr` always evaluates, whatever the row: every node of it evaluates alone.
fn cannot_fail(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> bool {
    !expr
        .exists(|e| Ok(!node_cannot_fail(e, schema)))
        .unwrap_or(true)
}

/// Comparisons, `AND`, `OR`, `NOT`, `IN` lists of literals and `IS [NOT] NULL` over columns
/// and literals of types compared directly.
fn node_cannot_fail(e: &Arc<dyn PhysicalExpr>, schema: &Schema) -> bool {
    if let Some(b) = e.downcast_ref::<BinaryExpr>() {
        match b.op() {
            Operator::And | Operator::Or => true,
            Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom => {
                let (l, r) = (b.left().data_type(schema), b.right().data_type(schema));
                matches!((l, r), (Ok(l), Ok(r)) if l == r && comparable(&l))
            }
            _ => false,
        }
    } else if let Some(list) = e.downcast_ref::<InListExpr>() {
        list.list()
            .iter()
            .all(|i| i.downcast_ref::<Literal>().is_some())
    } else if let Some(f) = e.downcast_ref::<ScalarFunctionExpr>() {
        // Strata's identity function that keeps IN lists apart.
        f.name() == "strata_same"
    } else {
        e.downcast_ref::<Column>().is_some()
            || e.downcast_ref::<Literal>().is_some()
            || e.downcast_ref::<IsNullExpr>().is_some()
            || e.downcast_ref::<IsNotNullExpr>().is_some()
            || e.downcast_ref::<NotExpr>().is_some()
    }
}

/// Types whose values arrow compares without converting them.
fn comparable(t: &DataType) -> bool {
    t.is_primitive()
        || matches!(
            t,
            DataType::Boolean
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
        )
}

/// The work of evaluating `expr` on a row, in comparisons of fixed-width values.
fn cost(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> f64 {
    let text = |e: &Arc<dyn PhysicalExpr>| {
        e.data_type(schema)
            .is_ok_and(|t| !t.is_primitive() && t != DataType::Boolean)
    };
    if let Some(b) = expr.downcast_ref::<BinaryExpr>() {
        match b.op() {
            Operator::And | Operator::Or => cost(b.left(), schema) + cost(b.right(), schema),
            _ if text(b.left()) => 2.0,
            _ => 1.0,
        }
    } else if let Some(list) = expr.downcast_ref::<InListExpr>() {
        if text(list.expr()) { 3.0 } else { 2.0 }
    } else if expr.downcast_ref::<IsNullExpr>().is_some()
        || expr.downcast_ref::<IsNotNullExpr>().is_some()
    {
        0.5
    } else if let Some(not) = expr.downcast_ref::<NotExpr>() {
        cost(not.arg(), schema)
    } else {
        1.0
    }
}
