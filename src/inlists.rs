//! `IN` lists over the same expression joined by AND or OR are kept apart: DataFusion's
//! simplifier merges them into one list (`x NOT IN (1) OR x NOT IN (2)` becomes TRUE), which
//! loses the NULL PostgreSQL answers when `x` is NULL or a list holds NULL.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, internal_err};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// Gives every `IN` list after the first over the same expression (anywhere in one
/// expression: constant folding can bring two lists side by side) its expression through
/// [`same`], which DataFusion does not see through. A list repeated exactly is left alone:
/// merging it with itself is right, and the simplifier can then take it out of an `OR` of
/// conditions that all hold it (as in TPC-H q19), so it is checked once per row.
#[derive(Debug, Default)]
pub struct KeepInListsApart;

impl AnalyzerRule for KeepInListsApart {
    fn name(&self) -> &str {
        "strata_keep_in_lists_apart"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| node.map_expressions(keep_apart))
            .map(|t| t.data)
    }
}

fn keep_apart(e: Expr) -> Result<Transformed<Expr>> {
    // The first list seen over each expression, kept as it is.
    let mut seen: Vec<InList> = Vec::new();
    e.transform_down(|x| {
        let Expr::InList(in_list) = x else {
            return Ok(Transformed::no(x));
        };
        match seen.iter().find(|s| s.expr == in_list.expr) {
            None => {
                seen.push(in_list.clone());
                return Ok(Transformed::no(Expr::InList(in_list)));
            }
            Some(first) if *first == in_list => {
                return Ok(Transformed::no(Expr::InList(in_list)));
            }
            Some(_) => {}
        }
        let InList {
            expr,
            list,
            negated,
        } = in_list;
        Ok(Transformed::yes(Expr::InList(InList {
            expr: Box::new(same().call(vec![*expr])),
            list,
            negated,
        })))
    })
}

/// `strata_same(x)`: `x`, named as `x`, in a form DataFusion's simplifier does not match.
pub fn same() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(Same {
        signature: Signature::any(1, Volatility::Immutable),
    }))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Same {
    signature: Signature,
}

impl ScalarUDFImpl for Same {
    fn name(&self) -> &str {
        "strata_same"
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        match args {
            [one] => Ok(one.schema_name().to_string()),
            _ => internal_err!("strata_same takes one argument"),
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [one] => Ok(one.clone()),
            _ => internal_err!("strata_same takes one argument"),
        }
    }

    fn return_field_from_args(
        &self,
        args: ReturnFieldArgs,
    ) -> Result<datafusion::arrow::datatypes::FieldRef> {
        match args.arg_fields {
            [one] => Ok(one.clone()),
            _ => internal_err!("strata_same takes one argument"),
        }
    }

    /// Its argument's range (the default's type is NULL, which functions above it that
    /// reason about ranges fail on).
    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        match input {
            [one] => Ok((*one).clone()),
            _ => internal_err!("strata_same takes one argument"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match args.args.into_iter().next() {
            Some(v) => Ok(v),
            None => internal_err!("strata_same takes one argument"),
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{col, lit};

    use super::*;

    fn wrapped(e: Expr) -> usize {
        let mut n = 0;
        keep_apart(e)
            .unwrap()
            .data
            .apply(|x| {
                if matches!(x, Expr::ScalarFunction(f) if f.name() == "strata_same") {
                    n += 1;
                }
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
            })
            .unwrap();
        n
    }

    #[test]
    fn only_lists_that_differ_are_kept_apart() {
        let air = || col("mode").in_list(vec![lit("AIR"), lit("REG AIR")], false);
        let q = |v: i64| col("q").gt(lit(v));
        // The same list in each branch of an OR: left for the simplifier to take out.
        assert_eq!(wrapped(air().and(q(1)).or(air().and(q(2)))), 0);
        // Another list, or the same one negated, over the same column is kept apart.
        let other = col("mode").in_list(vec![lit("MAIL")], false);
        assert_eq!(wrapped(air().or(other)), 1);
        let negated = col("mode").in_list(vec![lit("AIR"), lit("REG AIR")], true);
        assert_eq!(wrapped(air().and(negated).or(air())), 1);
    }
}
