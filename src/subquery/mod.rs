//! Subqueries DataFusion's own rules leave in a plan: a correlation other than equality
//! (`(SELECT count(*) FROM t x WHERE x.b < t.b)`), or `EXISTS`, `IN`, `ANY` and `ALL` inside
//! a SELECT list or a CASE. Each is joined once with the outer query's distinct correlated
//! values (its "domain", after Neumann & Kemper's unnesting of dependent joins) and
//! aggregated per value, so it runs where DataFusion would fail to plan it.

use std::ops::Not;
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{
    Column, NullEquality, Result, ScalarValue, exec_err, not_impl_err, plan_err,
};
use datafusion::config::ConfigOptions;
use datafusion::functions_aggregate::expr_fn::{any_value, bool_or, count, first_value};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::ExprFunctionExt;
use datafusion::logical_expr::expr::{Exists, InSubquery, SetComparison, SetQuantifier};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::logical_plan::{FetchType, SkipType};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    Aggregate, BinaryExpr, ColumnarValue, Expr, Filter, JoinType, LogicalPlan, LogicalPlanBuilder,
    Operator, Projection, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, SortExpr,
    Subquery, SubqueryAlias, Volatility, when,
};
use datafusion::optimizer::decorrelate_lateral_join::DecorrelateLateralJoin;
use datafusion::optimizer::decorrelate_predicate_subquery::DecorrelatePredicateSubquery;
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::rewrite_set_comparison::RewriteSetComparison;
use datafusion::optimizer::scalar_subquery_to_join::ScalarSubqueryToJoin;
use datafusion::optimizer::{
    AnalyzerRule, Optimizer, OptimizerConfig, OptimizerContext, OptimizerRule,
};
use datafusion::prelude::lit;

mod domain;

/// Decorrelates a query's subqueries while its scopes are as written: DataFusion's own rules
/// first (they turn equality correlations into joins), then [`UnnestSubqueries`] for what
/// they leave. Later optimizer passes move filters below table aliases, where an inner `t.a`
/// and the outer query's `t.a` can no longer be told apart.
#[derive(Debug, Default)]
pub struct DecorrelateSubqueries;

impl AnalyzerRule for DecorrelateSubqueries {
    fn name(&self) -> &str {
        "strata_decorrelate_subqueries"
    }

    fn analyze(&self, plan: LogicalPlan, config: &ConfigOptions) -> Result<LogicalPlan> {
        let has_subqueries = plan
            .exists(|node| {
                Ok(matches!(node, LogicalPlan::Subquery(_))
                    || node.expressions().iter().any(has_subquery))
            })
            .unwrap_or(true);
        if !has_subqueries {
            return Ok(plan);
        }
        let plan = sort_by_subquery_columns(keep_subquery_names(plan)?)?;
        let plan = aggregate_subquery_columns(plan)?;
        let rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = vec![
            Arc::new(RewriteSetComparison::new()),
            // LATERAL first: the subqueries above it then see its rows as a join.
            Arc::new(DecorrelateLateralJoin::new()),
            // Then what DataFusion's rules would answer wrongly (see
            // `datafusion_gets_wrong`): its join for a scalar subquery that is not an
            // aggregate repeats an outer row for each row the subquery returns, its mark join
            // loses IN's NULL, its anti join for a correlated NOT IN looks for NULLs in all
            // of the subquery's rows.
            Arc::new(UnnestSubqueries {
                before_datafusion: true,
            }),
            Arc::new(DecorrelatePredicateSubquery::new()),
            Arc::new(ScalarSubqueryToJoin::new()),
            Arc::new(UnnestSubqueries::default()),
        ];
        let context = OptimizerContext::new_with_config_options(Arc::new(config.clone()));
        let mut plan = plan;
        for rule in rules {
            // Unnesting a subquery can leave one nested in it referring to the domain it
            // was joined with: Strata's rule runs again until nothing changes.
            let passes = if rule.name() == "strata_unnest_subqueries" {
                8
            } else {
                1
            };
            for _ in 0..passes {
                // A rule that cannot rewrite a subquery leaves it to the next one.
                // (DataFusion's optimizer would first refuse the plan: it checks that a
                // correlated scalar subquery is an aggregate, which the last rule here does
                // not need.)
                let rewritten = match rule.apply_order() {
                    Some(ApplyOrder::TopDown) => plan
                        .clone()
                        .transform_down_with_subqueries(|p| rule.rewrite(p, &context)),
                    Some(ApplyOrder::BottomUp) => plan
                        .clone()
                        .transform_up_with_subqueries(|p| rule.rewrite(p, &context)),
                    None => rule.rewrite(plan.clone(), &context),
                };
                let Ok(t) = rewritten else { break };
                if !t.transformed {
                    break;
                }
                // A rewritten input can change its parents' schemas (a decorrelated LATERAL
                // adds columns under a window); DataFusion's optimizer would refresh them.
                let refreshed = t
                    .data
                    .clone()
                    .transform_up_with_subqueries(|p| p.recompute_schema().map(Transformed::yes));
                plan = refreshed.map(|r| r.data).unwrap_or(t.data);
            }
        }
        refuse_correlated(&plan)?;
        Ok(plan)
    }
}

/// A correlated subquery still in the plan cannot run: DataFusion would fail to plan it, or
/// (when only a subquery inside it is correlated) run it once with the reference bound to
/// the wrong table. Refused here with the columns it refers to.
fn refuse_correlated(plan: &LogicalPlan) -> Result<()> {
    // Subqueries in expressions are visited as `LogicalPlan::Subquery` nodes too.
    let mut found: Option<Vec<Column>> = None;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::Subquery(sq) = node {
            let outer = outer_columns(&sq.subquery);
            if !outer.is_empty() {
                found = Some(outer);
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match found {
        None => Ok(()),
        Some(columns) => {
            let names: Vec<String> = columns.iter().map(|c| c.flat_name()).collect();
            not_impl_err!(
                "this correlated subquery (referring to {} of the query around it) has a shape Strata cannot run yet: the outer query's columns reach an operator it cannot carry them through (GROUPING SETS, ROLLUP, CUBE, DISTINCT ON, a recursive query or a table function)",
                names.join(", ")
            )
        }
    }
}

/// DataFusion's logical optimizer rules without its subquery decorrelation, which
/// [`DecorrelateSubqueries`] has done before them: run again after filters have moved below
/// table aliases, it can bind a subquery's reference to an outer `t.a` to an inner `t.a`
/// and answer wrongly.
pub fn optimizer_rules() -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    const DONE: [&str; 4] = [
        "rewrite_set_comparison",
        "decorrelate_predicate_subquery",
        "scalar_subquery_to_join",
        "decorrelate_lateral_join",
    ];
    Optimizer::new()
        .rules
        .into_iter()
        .filter(|r| !DONE.contains(&r.name()))
        .collect()
}

/// Aliases each SELECT-list item that holds a subquery with its own name, so DataFusion's
/// rewrite of `x > ALL (...)` into a CASE keeps the column's name (without it the plan is
/// rejected as having changed its schema).
fn keep_subquery_names(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let LogicalPlan::Projection(p) = node else {
            return Ok(Transformed::no(node));
        };
        let unnamed = |e: &Expr| !is_alias(e) && has_subquery(e);
        if !p.expr.iter().any(unnamed) {
            return Ok(Transformed::no(LogicalPlan::Projection(p)));
        }
        let exprs = p
            .expr
            .into_iter()
            .map(|e| {
                if !unnamed(&e) {
                    return e;
                }
                let (qualifier, name) = e.qualified_name();
                e.alias_qualified(qualifier, name)
            })
            .collect();
        Projection::try_new(exprs, p.input).map(|p| Transformed::yes(LogicalPlan::Projection(p)))
    })
    .map(|t| t.data)
}

/// Moves subqueries out of ORDER BY into a column of the rows being sorted (DataFusion runs
/// subqueries only in projections, filters and aggregates), then drops that column again.
fn sort_by_subquery_columns(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let LogicalPlan::Sort(sort) = node else {
            return Ok(Transformed::no(node));
        };
        if !sort.expr.iter().any(|s| has_subquery(&s.expr)) {
            return Ok(Transformed::no(LogicalPlan::Sort(sort)));
        }
        let columns = column_exprs(&sort.input);
        // Below the SELECT list's projection when there is one: the subquery may refer to
        // columns the SELECT list does not show.
        let (base, mut with_keys) = match sort.input.as_ref() {
            LogicalPlan::Projection(p) => (p.input.as_ref().clone(), p.expr.clone()),
            other => (other.clone(), columns.clone()),
        };
        let mut keys = Vec::with_capacity(sort.expr.len());
        for (i, s) in sort.expr.into_iter().enumerate() {
            if has_subquery(&s.expr) {
                let name = format!("__strata_order_{i}");
                with_keys.push(s.expr.clone().alias(&name));
                keys.push(s.with_expr(Expr::Column(Column::from_name(name))));
            } else {
                keys.push(s);
            }
        }
        LogicalPlanBuilder::from(base)
            .project(with_keys)?
            .sort_with_limit(keys, sort.fetch)?
            .project(columns)?
            .build()
            .map(Transformed::yes)
    })
    .map(|t| t.data)
}

/// Moves subqueries out of GROUP BY and aggregate arguments into columns of the rows being
/// aggregated (`GROUP BY (SELECT ... WHERE x.k = t.k)`), where the rules that run
/// subqueries find them; the aggregate's columns keep their names.
fn aggregate_subquery_columns(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let LogicalPlan::Aggregate(agg) = node else {
            return Ok(Transformed::no(node));
        };
        let exprs = agg.group_expr.iter().chain(&agg.aggr_expr);
        if !exprs.clone().any(has_subquery)
            || matches!(agg.group_expr.first(), Some(Expr::GroupingSet(_)))
        {
            return Ok(Transformed::no(LogicalPlan::Aggregate(agg)));
        }
        let mut below = column_exprs(&agg.input);
        let mut to_column = |e: Expr| -> Result<Expr> {
            let (qualifier, name) = e.qualified_name();
            let moved = e
                .transform_down(|x| {
                    if !is_subquery(&x) {
                        return Ok(Transformed::no(x));
                    }
                    let column = format!("__strata_agg_sq_{}", below.len());
                    below.push(x.alias(&column));
                    Ok(Transformed::new(
                        Expr::Column(Column::from_name(column)),
                        true,
                        TreeNodeRecursion::Jump,
                    ))
                })?
                .data;
            Ok(match moved {
                Expr::Alias(_) => moved,
                other if other.qualified_name() == (qualifier.clone(), name.clone()) => other,
                other => other.alias_qualified(qualifier, name),
            })
        };
        let group = agg
            .group_expr
            .iter()
            .cloned()
            .map(&mut to_column)
            .collect::<Result<Vec<_>>>()?;
        let aggr = agg
            .aggr_expr
            .iter()
            .cloned()
            .map(&mut to_column)
            .collect::<Result<Vec<_>>>()?;
        let input = LogicalPlanBuilder::from(agg.input.as_ref().clone())
            .project(below)?
            .build()?;
        Aggregate::try_new(Arc::new(input), group, aggr)
            .map(|a| Transformed::yes(LogicalPlan::Aggregate(a)))
    })
    .map(|t| t.data)
}

/// Every column of `plan`, as expressions.
fn column_exprs(plan: &LogicalPlan) -> Vec<Expr> {
    plan.schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect()
}

fn is_alias(e: &Expr) -> bool {
    matches!(e, Expr::Alias(_))
}

fn has_subquery(e: &Expr) -> bool {
    e.exists(|e| Ok(is_subquery(e))).unwrap_or(false)
}

/// Rewrites the subquery expressions left in `Projection` and `Filter` nodes into joins with
/// their domain. Runs after DataFusion's decorrelation rules (see [`DecorrelateSubqueries`]),
/// so what they turn into plain joins (TPC-H's correlated subqueries) stays as they made it.
#[derive(Debug, Default)]
pub struct UnnestSubqueries {
    /// Only the subqueries DataFusion's rules would answer wrongly (scalar subqueries that
    /// are not aggregates, `IN` as a value, correlated `NOT IN`).
    pub before_datafusion: bool,
}

impl OptimizerRule for UnnestSubqueries {
    fn name(&self) -> &str {
        "strata_unnest_subqueries"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        None
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let only = self.before_datafusion;
        plan.transform_up_with_subqueries(|node| unnest_node(node, only, config))
    }
}

/// What a subquery expression asks of its rows.
enum Ask {
    /// `(SELECT agg ... )`: the value of a scalar aggregate.
    Scalar,
    /// `[NOT] EXISTS (...)`
    Exists { negated: bool },
    /// `x op ANY (...)` (`x IN (...)` is `x = ANY (...)`), negated for `NOT IN`.
    Any {
        left: Expr,
        op: Operator,
        negated: bool,
    },
    /// `x op ALL (...)`
    All { left: Expr, op: Operator },
    /// `FROM t, LATERAL (...)`: every row and column of the subquery, per outer row (the
    /// join keeps outer rows with no subquery row when `keep_unmatched`).
    Rows { keep_unmatched: bool },
}

fn unnest_node(
    node: LogicalPlan,
    before_datafusion: bool,
    config: &dyn OptimizerConfig,
) -> Result<Transformed<LogicalPlan>> {
    if let LogicalPlan::Join(_) = &node
        && !before_datafusion
    {
        return Ok(match unnest_lateral(&node, config)? {
            Some(plan) => Transformed::yes(plan),
            None => Transformed::no(node),
        });
    }
    if !matches!(node, LogicalPlan::Projection(_) | LogicalPlan::Filter(_)) {
        return Ok(Transformed::no(node));
    }
    let mut node = node;
    let mut changed = false;
    // One subquery at a time: each rewrite gives the node a new input.
    while let Some(next) = unnest_one(&node, before_datafusion, config)? {
        node = next;
        changed = true;
    }
    Ok(if changed {
        Transformed::yes(node)
    } else {
        Transformed::no(node)
    })
}

/// The first subquery expression of `node` that can be unnested, unnested.
fn unnest_one(
    node: &LogicalPlan,
    before_datafusion: bool,
    config: &dyn OptimizerConfig,
) -> Result<Option<LogicalPlan>> {
    let input = node.inputs()[0].clone();
    let conjuncts = match node {
        LogicalPlan::Filter(f) => split_conjunction(&f.predicate),
        _ => Vec::new(),
    };
    let mut candidates = Vec::new();
    for e in node.expressions() {
        e.apply(|x| {
            if let Some(c) = as_candidate(x, &input)
                && (!before_datafusion || datafusion_gets_wrong(&c, conjuncts.contains(&x)))
            {
                candidates.push((x.clone(), c));
                // Its own subqueries are part of it.
                return Ok(TreeNodeRecursion::Jump);
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
    }
    // The first one whose shape this rule handles.
    let mut found = None;
    for (expr, (subquery, ask)) in candidates {
        if let Some((joined, mut values)) = join_with_domain(&input, &subquery, &ask, config)? {
            found = Some((expr, (joined, values.remove(0))));
            break;
        }
    }
    let Some((expr, (joined, value))) = found else {
        return Ok(None);
    };
    let replace = |e: Expr| {
        e.transform_down(|x| {
            Ok(if x == expr {
                Transformed::new(value.clone(), true, TreeNodeRecursion::Jump)
            } else {
                Transformed::no(x)
            })
        })
        .map(|t| t.data)
    };
    let original_columns = column_exprs(&input);
    let rebuilt = match node {
        LogicalPlan::Projection(p) => {
            let names = NamePreserver::new(node);
            let exprs = p
                .expr
                .iter()
                .map(|e| {
                    let name = names.save(e);
                    replace(e.clone()).map(|x| name.restore(x))
                })
                .collect::<Result<Vec<_>>>()?;
            LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(joined))?)
        }
        LogicalPlan::Filter(f) => {
            let predicate = replace(f.predicate.clone())?;
            let filtered = LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(joined))?);
            // The filter's parents see the columns they saw before.
            LogicalPlanBuilder::from(filtered)
                .project(original_columns)?
                .build()?
        }
        _ => return Ok(None),
    };
    Ok(Some(rebuilt))
}

/// `FROM t, LATERAL (...)` and `t LEFT JOIN LATERAL (...) ON true` whose subquery refers to
/// `t`: `t` joined with the subquery's rows per domain value, its columns under the
/// subquery's alias.
fn unnest_lateral(node: &LogicalPlan, config: &dyn OptimizerConfig) -> Result<Option<LogicalPlan>> {
    let LogicalPlan::Join(join) = node else {
        return Ok(None);
    };
    let keep_unmatched = match join.join_type {
        JoinType::Inner => false,
        JoinType::Left => true,
        _ => return Ok(None),
    };
    let on_true = join
        .filter
        .as_ref()
        .is_none_or(|f| matches!(f, Expr::Literal(ScalarValue::Boolean(Some(true)), _)));
    if !join.on.is_empty() || !on_true {
        return Ok(None);
    }
    let subquery = match join.right.as_ref() {
        LogicalPlan::SubqueryAlias(a) => match a.input.as_ref() {
            LogicalPlan::Subquery(sq) => sq,
            _ => return Ok(None),
        },
        LogicalPlan::Subquery(sq) => sq,
        _ => return Ok(None),
    };
    let left = join.left.as_ref();
    let outer = outer_columns(&subquery.subquery);
    if outer.is_empty() || !outer.iter().all(|c| left.schema().has_column(c)) {
        return Ok(None);
    }
    let ask = Ask::Rows { keep_unmatched };
    let Some((joined, values)) = join_with_domain(left, subquery, &ask, config)? else {
        return Ok(None);
    };
    let mut exprs = column_exprs(left);
    for (value, (qualifier, field)) in values.into_iter().zip(join.right.schema().iter()) {
        exprs.push(value.alias_qualified(qualifier.cloned(), field.name()));
    }
    Ok(Some(LogicalPlan::Projection(Projection::try_new(
        exprs,
        Arc::new(joined),
    )?)))
}

/// A subquery expression this rule rewrites, if `e` is one. Whatever DataFusion's rules left
/// is one they could not turn into a join; only an uncorrelated scalar subquery is left for
/// DataFusion to run itself.
fn as_candidate(e: &Expr, input: &LogicalPlan) -> Option<(Subquery, Ask)> {
    let (subquery, ask) = match e {
        Expr::ScalarSubquery(s) if !outer_columns(&s.subquery).is_empty() => {
            (s.clone(), Ask::Scalar)
        }
        Expr::Exists(Exists { subquery, negated }) => {
            (subquery.clone(), Ask::Exists { negated: *negated })
        }
        Expr::InSubquery(InSubquery {
            expr,
            subquery,
            negated,
        }) => (
            subquery.clone(),
            Ask::Any {
                left: (**expr).clone(),
                op: Operator::Eq,
                negated: *negated,
            },
        ),
        Expr::SetComparison(SetComparison {
            expr,
            subquery,
            op,
            quantifier,
        }) => {
            let left = (**expr).clone();
            let ask = match quantifier {
                SetQuantifier::All => Ask::All { left, op: *op },
                _ => Ask::Any {
                    left,
                    op: *op,
                    negated: false,
                },
            };
            (subquery.clone(), ask)
        }
        _ => return None,
    };
    // Every outer reference must be to this node's input (not to a query further out).
    let outer = outer_columns(&subquery.subquery);
    outer
        .iter()
        .all(|c| input.schema().has_column(c))
        .then_some((subquery, ask))
}

/// A subquery DataFusion's rules would answer wrongly: a scalar subquery that is not an
/// aggregate; `IN` anywhere but as a filter's conjunct (DataFusion's mark join answers TRUE
/// or FALSE where `IN` is NULL); a correlated `NOT IN` (its null-aware anti join looks for
/// NULLs in all of the subquery's rows, not in each outer row's).
fn datafusion_gets_wrong((subquery, ask): &(Subquery, Ask), conjunct: bool) -> bool {
    // A subquery nested in it that refers to this query: DataFusion would decorrelate that
    // one first, binding its reference to the wrong table.
    if domain::deeply_correlated(&subquery.subquery) {
        return true;
    }
    match ask {
        Ask::Scalar => !matches!(
            split_scalar(&subquery.subquery),
            Some((_, LogicalPlan::Aggregate(a))) if a.group_expr.is_empty()
        ),
        Ask::Any { negated, .. } => {
            !conjunct || (*negated && !outer_columns(&subquery.subquery).is_empty())
        }
        _ => false,
    }
}

/// The columns of queries further out that a plan refers to, anywhere in it (its own
/// subqueries included, less what they refer to in the plan itself).
fn outer_columns(plan: &LogicalPlan) -> Vec<Column> {
    domain::free_outer(plan)
}

fn has_outer(e: &Expr) -> bool {
    e.exists(|x| Ok(matches!(x, Expr::OuterReferenceColumn(..))))
        .unwrap_or(true)
}

fn plan_has_outer(plan: &LogicalPlan) -> bool {
    !outer_columns(plan).is_empty()
}

/// `input` left-joined with the subquery's answer per domain value, and the expression that
/// stands for the subquery expression over that join. `None` when the subquery's shape is
/// not one this rule handles (it is then left as it was).
fn join_with_domain(
    input: &LogicalPlan,
    subquery: &Subquery,
    ask: &Ask,
    config: &dyn OptimizerConfig,
) -> Result<Option<(LogicalPlan, Vec<Expr>)>> {
    let names = config.alias_generator();
    let domain_name = names.next("__strata_domain");
    let answer_name = names.next("__strata_sq");

    // The domain: the distinct values of the outer columns (and of `x` in `x IN ...`).
    let mut keys: Vec<Expr> = outer_columns(&subquery.subquery)
        .into_iter()
        .map(Expr::Column)
        .collect();
    let left = match ask {
        Ask::Any { left, .. } | Ask::All { left, .. } => {
            if has_outer(left) || has_subquery(left) {
                return Ok(None);
            }
            keys.push(left.clone());
            Some(keys.len() - 1)
        }
        _ => None,
    };
    let domain_cols: Vec<String> = (0..keys.len()).map(|i| format!("__d{i}")).collect();
    let domain = if keys.is_empty() {
        LogicalPlanBuilder::empty(true)
            .project(vec![lit(true).alias("__d")])?
            .alias(domain_name.as_str())?
            .build()?
    } else {
        LogicalPlanBuilder::from(input.clone())
            .aggregate(keys.clone(), Vec::<Expr>::new())?
            .project(
                keys.iter()
                    .zip(&domain_cols)
                    .map(|(k, name)| {
                        let (q, n) = k.qualified_name();
                        Expr::Column(Column::new(q, n)).alias(name)
                    })
                    .collect::<Vec<_>>(),
            )?
            .alias(domain_name.as_str())?
            .build()?
    };
    let domain_col =
        |i: usize| Expr::Column(Column::new(Some(domain_name.as_str()), &domain_cols[i]));
    let outer = outer_columns(&subquery.subquery);
    let to_domain = |e: Expr| -> Result<Expr> {
        e.transform_up(|x| match &x {
            Expr::OuterReferenceColumn(_, c) => {
                let i = outer.iter().position(|o| o == c).unwrap_or(0);
                Ok(Transformed::yes(domain_col(i)))
            }
            _ => Ok(Transformed::no(x)),
        })
        .map(|t| t.data)
    };

    // The subquery's rows with its correlated predicates lifted out, plus a marker column
    // that is NULL on the rows the left join adds for a domain value with no match.
    // A scalar subquery is a scalar aggregate (with its HAVING and SELECT list above it), or
    // rows of which at most one may match each outer row.
    let scalar_aggregate = match ask {
        Ask::Scalar | Ask::Rows { .. } => split_scalar(&subquery.subquery),
        _ => None,
    };
    let lateral = matches!(ask, Ask::Rows { .. });
    let (top, aggregate, below) = match scalar_aggregate {
        // A lateral subquery may group: its groups are formed per domain value.
        Some((top, LogicalPlan::Aggregate(a))) if a.group_expr.is_empty() || lateral => {
            let below = a.input.as_ref().clone();
            (top, Some(a), below)
        }
        _ => (Vec::new(), None, subquery.subquery.as_ref().clone()),
    };
    let grouped = aggregate.as_ref().is_some_and(|a| !a.group_expr.is_empty());
    // `... ORDER BY k LIMIT n`: the first rows by `k` of each domain value's rows (for a
    // scalar subquery, n = 1).
    let (below, first_by) = match (ask, &aggregate) {
        (Ask::Scalar | Ask::Rows { .. }, None) => match first_rows(&below)? {
            Some((rows, order, n)) if n == 1 || lateral => (rows, Some((order, n))),
            _ => (below, None),
        },
        _ => (below, None),
    };
    // A SELECT list may compute with the outer row's columns (`SELECT t.a * 10`): it is
    // applied after the join, with the domain's columns in their place.
    let (below, outer_select) = match (&below, aggregate.is_none() && first_by.is_none()) {
        (LogicalPlan::Projection(p), true) if p.expr.iter().any(has_outer) => {
            (p.input.as_ref().clone(), Some(p.expr.clone()))
        }
        _ => (below, None),
    };
    let lifted = lift_predicates(below.clone())?.filter(|(rows, _)| !plan_has_outer(rows));
    let (rows, predicates) = match lifted {
        Some(lifted) => lifted,
        None => {
            // The domain goes down into the subquery instead, and its rows match the
            // domain value they were computed for.
            let pushing = domain::Domain {
                input,
                outer: &outer,
                names,
            };
            let Some((rows, dc)) = pushing.push(&below)? else {
                return Ok(None);
            };
            let same = (0..outer.len())
                .map(|i| domain::not_distinct(domain_col(i), Expr::Column(dc[i].clone())))
                .collect();
            (rows, same)
        }
    };
    let value_of_rows = rows.schema().columns().first().cloned();
    let rows_schema_columns = rows.schema().columns();
    let mut row_exprs = column_exprs(&rows);
    row_exprs.push(lit(true).alias("__strata_mark"));
    let rows = LogicalPlanBuilder::from(rows).project(row_exprs)?.build()?;
    let mark = Expr::Column(Column::from_name("__strata_mark"));
    let mut on = predicates
        .into_iter()
        .map(&to_domain)
        .collect::<Result<Vec<_>>>()?;
    if on.is_empty() {
        // Uncorrelated: every row belongs to every domain value.
        on.push(lit(true));
    }
    // A lateral subquery's own rows: only those that match (an outer row without any is
    // dropped, or kept by the final join for LEFT JOIN LATERAL).
    let plain_rows = lateral && (aggregate.is_none() || grouped);
    let width = subquery.subquery.schema().fields().len();
    let joined = LogicalPlanBuilder::from(domain.clone())
        .join_on(
            rows,
            if plain_rows {
                JoinType::Inner
            } else {
                JoinType::Left
            },
            on,
        )?
        .build()?;

    let group: Vec<Expr> = (0..domain_cols.len().max(1))
        .map(|i| {
            if domain_cols.is_empty() {
                Expr::Column(Column::new(Some(domain_name.as_str()), "__d"))
            } else {
                domain_col(i)
            }
        })
        .collect();
    // One row per domain value, with the subquery's answer in `__v`.
    let answer = match ask {
        Ask::Rows { .. } if plain_rows && aggregate.is_none() => {
            // The domain's columns, then the subquery's (the first `width` of its rows, or
            // its SELECT list over them).
            let mut out = group.clone();
            match outer_select {
                Some(exprs) => {
                    for e in exprs {
                        out.push(to_domain(e)?);
                    }
                }
                None => {
                    let columns = rows_schema_columns.clone();
                    out.extend(columns.into_iter().take(width).map(Expr::Column));
                }
            }
            let mut plan = LogicalPlanBuilder::from(joined);
            if let Some((order, n)) = first_by {
                // Number each domain value's rows in order and keep the first n.
                let rank = row_number()
                    .partition_by(group.clone())
                    .order_by(order)
                    .build()?
                    .alias("__strata_rank");
                plan = plan.window(vec![rank])?.filter(
                    Expr::Column(Column::from_name("__strata_rank")).lt_eq(lit(n as u64)),
                )?;
            }
            plan.project(out)?.build()?
        }
        Ask::Scalar if first_by.is_some() => {
            let (Some(value), Some((order, _))) = (value_of_rows, first_by) else {
                return Ok(None);
            };
            let mut out = group.clone();
            out.push(Expr::Column(Column::from_name("__first")).alias("__v"));
            LogicalPlanBuilder::from(joined)
                .aggregate(
                    group.clone(),
                    vec![first_value(Expr::Column(value), order).alias("__first")],
                )?
                .project(out)?
                .build()?
        }
        Ask::Scalar if aggregate.is_none() => {
            let value = match (outer_select, value_of_rows) {
                // Computed only on rows that matched: with none the answer is NULL.
                (Some(exprs), _) => match exprs.into_iter().next() {
                    Some(e) => when(mark.clone().is_not_null(), to_domain(e)?)
                        .otherwise(lit(ScalarValue::Null))?,
                    None => return Ok(None),
                },
                (None, Some(column)) => Expr::Column(column),
                (None, None) => return Ok(None),
            };
            let rows = count(mark.clone()).alias("__n");
            let first = any_value(value).alias("__first");
            let single = single_row().call(vec![
                Expr::Column(Column::from_name("__n")),
                Expr::Column(Column::from_name("__first")),
            ]);
            let mut out = group.clone();
            out.push(single.alias("__v"));
            LogicalPlanBuilder::from(joined)
                .aggregate(group.clone(), vec![rows, first])?
                .project(out)?
                .build()?
        }
        Ask::Scalar | Ask::Rows { .. } => {
            let Some(agg) = aggregate else {
                return Ok(None);
            };
            let aggr = agg
                .aggr_expr
                .iter()
                .map(|e| count_rows_not_nulls(e, &mark))
                .collect::<Result<Vec<_>>>()?;
            let mut groups = group.clone();
            groups.extend(agg.group_expr.iter().cloned());
            let mut plan =
                LogicalPlan::Aggregate(Aggregate::try_new(Arc::new(joined), groups, aggr)?);
            // The subquery's own HAVING and SELECT list, over the aggregate, in order.
            for node in top.into_iter().rev() {
                plan = match node {
                    Top::Filter(predicate) => LogicalPlanBuilder::from(plan)
                        .filter(to_domain(predicate)?)?
                        .build()?,
                    Top::Projection(exprs) => {
                        let mut all = group.clone();
                        for e in exprs {
                            all.push(to_domain(e)?);
                        }
                        LogicalPlanBuilder::from(plan).project(all)?.build()?
                    }
                };
            }
            let mut out = group.clone();
            let values = plan.schema().columns().into_iter().skip(group.len());
            if matches!(ask, Ask::Rows { .. }) {
                out.extend(values.map(Expr::Column));
            } else {
                let Some(value) = values.into_iter().next() else {
                    return Ok(None);
                };
                out.push(Expr::Column(value).alias("__v"));
            }
            LogicalPlanBuilder::from(plan).project(out)?.build()?
        }
        Ask::Exists { negated } => {
            let found = count(mark.clone()).gt(lit(0i64));
            let v = if *negated { found.not() } else { found };
            LogicalPlanBuilder::from(joined)
                .aggregate(group.clone(), vec![v.alias("__v")])?
                .build()?
        }
        Ask::Any { op, .. } | Ask::All { op, .. } => {
            let (Some(i), Some(value)) = (left, value_of_rows) else {
                return Ok(None);
            };
            let cmp = Expr::BinaryExpr(BinaryExpr::new(
                Box::new(domain_col(i)),
                *op,
                Box::new(Expr::Column(value)),
            ));
            let unknown = bool_or(mark.clone().and(cmp.clone().is_null()));
            let v = match ask {
                Ask::All { .. } => when(bool_or(mark.clone().and(cmp.clone().not())), lit(false))
                    .when(unknown, lit(ScalarValue::Boolean(None)))
                    .otherwise(lit(true))?,
                _ => {
                    let any = when(bool_or(cmp.clone()), lit(true))
                        .when(unknown, lit(ScalarValue::Boolean(None)))
                        .otherwise(lit(false))?;
                    match ask {
                        Ask::Any { negated: true, .. } => any.not(),
                        _ => any,
                    }
                }
            };
            LogicalPlanBuilder::from(joined)
                .aggregate(group.clone(), vec![v.alias("__v")])?
                .build()?
        }
    };
    let answer = LogicalPlanBuilder::from(answer)
        .alias(answer_name.as_str())?
        .build()?;

    // Each input row finds its domain value's answer (NULL keys match NULL keys).
    let (join_type, values) = match ask {
        Ask::Rows { keep_unmatched } => {
            let values = answer
                .schema()
                .columns()
                .into_iter()
                .skip(group.len())
                .map(Expr::Column)
                .collect();
            let join_type = if *keep_unmatched {
                JoinType::Left
            } else {
                JoinType::Inner
            };
            (join_type, values)
        }
        _ => (
            JoinType::Left,
            vec![Expr::Column(Column::new(Some(answer_name.as_str()), "__v"))],
        ),
    };
    let joined = join_answer(input, answer, &keys, &domain_cols, &answer_name, join_type)?;
    Ok(Some((joined, values)))
}

/// `input` left-joined with `answer` on the domain keys; a key that is an expression (`x` in
/// `x + 1 IN (...)`) becomes a column of the input first (the node above projects its own
/// columns, so the extra one goes no further).
fn join_answer(
    input: &LogicalPlan,
    answer: LogicalPlan,
    keys: &[Expr],
    domain_cols: &[String],
    answer_name: &str,
    join_type: JoinType,
) -> Result<LogicalPlan> {
    let mut exprs = column_exprs(input);
    let mut left_keys = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        match k {
            Expr::Column(c) => left_keys.push(c.clone()),
            other => {
                let name = format!("{answer_name}_k{i}");
                exprs.push(other.clone().alias(&name));
                left_keys.push(Column::from_name(name));
            }
        }
    }
    let right_keys: Vec<Column> = domain_cols
        .iter()
        .map(|d| Column::new(Some(answer_name), d))
        .collect();
    let mut left = LogicalPlanBuilder::from(input.clone());
    if exprs.len() > input.schema().fields().len() {
        left = left.project(exprs)?;
    }
    // Without keys (an uncorrelated subquery) the one answer row goes to every input row.
    let filter = left_keys.is_empty().then(|| lit(true));
    left.join_detailed(
        answer,
        join_type,
        (left_keys, right_keys),
        filter,
        NullEquality::NullEqualsNull,
    )?
    .build()
}

fn is_subquery(e: &Expr) -> bool {
    matches!(
        e,
        Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) | Expr::SetComparison(_)
    )
}

/// `Limit n` over a `Sort` (under the SELECT list's projection), as the rows to take the
/// first n of (the SELECT list's values, then the sort keys), the order over those keys,
/// and n.
fn first_rows(plan: &LogicalPlan) -> Result<Option<(LogicalPlan, Vec<SortExpr>, usize)>> {
    let LogicalPlan::Limit(limit) = plan else {
        return Ok(None);
    };
    let n = match (limit.get_skip_type()?, limit.get_fetch_type()?) {
        (SkipType::Literal(0), FetchType::Literal(Some(n))) => n,
        _ => return Ok(None),
    };
    let (values, sort) = match limit.input.as_ref() {
        LogicalPlan::Projection(p) => match p.input.as_ref() {
            LogicalPlan::Sort(s) => (p.expr.clone(), s),
            _ => return Ok(None),
        },
        // The keys are among the SELECT list: the sort is above its projection.
        LogicalPlan::Sort(s) => {
            let columns = s.input.schema().columns();
            (columns.into_iter().map(Expr::Column).collect(), s)
        }
        _ => return Ok(None),
    };
    if sort.fetch.is_some() || sort.expr.iter().any(|k| has_outer(&k.expr)) {
        return Ok(None);
    }
    let mut exprs = values;
    let mut order = Vec::with_capacity(sort.expr.len());
    for (i, key) in sort.expr.iter().enumerate() {
        let name = format!("__strata_key_{i}");
        exprs.push(key.expr.clone().alias(&name));
        order.push(key.with_expr(Expr::Column(Column::from_name(name))));
    }
    let rows = LogicalPlanBuilder::from(sort.input.as_ref().clone())
        .project(exprs)?
        .build()?;
    Ok(Some((rows, order, n)))
}

/// A node between a scalar subquery's root and its aggregate.
enum Top {
    Filter(Expr),
    Projection(Vec<Expr>),
}

/// A scalar subquery as the nodes above its aggregate (outermost first) and the aggregate.
fn split_scalar(plan: &LogicalPlan) -> Option<(Vec<Top>, LogicalPlan)> {
    let mut top = Vec::new();
    let mut node = plan;
    loop {
        match node {
            LogicalPlan::Projection(p) => {
                top.push(Top::Projection(p.expr.clone()));
                node = p.input.as_ref();
            }
            LogicalPlan::Filter(f) => {
                top.push(Top::Filter(f.predicate.clone()));
                node = f.input.as_ref();
            }
            LogicalPlan::Aggregate(_) => return Some((top, node.clone())),
            _ => return None,
        }
    }
}

/// `count(*)` and `count(1)` count the rows that matched (the marker), not the row a left
/// join adds for a domain value that matched none; other aggregates ignore that row's NULLs.
fn count_rows_not_nulls(e: &Expr, mark: &Expr) -> Result<Expr> {
    let (qualifier, name) = e.qualified_name();
    let fixed = e
        .clone()
        .transform_up(|x| match x {
            Expr::AggregateFunction(mut f)
                if f.func.name() == "count"
                    && !f.params.distinct
                    && f.params
                        .args
                        .iter()
                        .all(|a| matches!(a, Expr::Literal(v, _) if !v.is_null())) =>
            {
                f.params.args = vec![mark.clone()];
                Ok(Transformed::yes(Expr::AggregateFunction(f)))
            }
            other => Ok(Transformed::no(other)),
        })?
        .data;
    Ok(match fixed {
        Expr::Alias(_) => fixed,
        other => other.alias_qualified(qualifier, name),
    })
}

/// The subquery's rows without the predicates that refer to the outer query, and those
/// predicates (over the rows' columns). `None` when an outer reference sits anywhere else.
fn lift_predicates(plan: LogicalPlan) -> Result<Option<(LogicalPlan, Vec<Expr>)>> {
    if !plan_has_outer(&plan) {
        return Ok(Some((plan, Vec::new())));
    }
    match plan {
        LogicalPlan::Filter(f) => {
            let (outer, inner): (Vec<Expr>, Vec<Expr>) = split_conjunction(&f.predicate)
                .into_iter()
                .cloned()
                .partition(has_outer);
            if outer.iter().any(has_subquery) {
                return Ok(None);
            }
            let Some((input, mut lifted)) = lift_predicates(f.input.as_ref().clone())? else {
                return Ok(None);
            };
            lifted.extend(outer);
            let plan = match inner.into_iter().reduce(Expr::and) {
                Some(p) => LogicalPlanBuilder::from(input).filter(p)?.build()?,
                None => input,
            };
            Ok(Some((plan, lifted)))
        }
        LogicalPlan::Projection(p) => {
            if p.expr.iter().any(has_outer) {
                return Ok(None);
            }
            let Some((input, lifted)) = lift_predicates(p.input.as_ref().clone())? else {
                return Ok(None);
            };
            // Keep the columns the lifted predicates need.
            let mut exprs = p.expr.clone();
            for e in &lifted {
                for c in e.column_refs() {
                    let shown = exprs.iter().any(|x| matches!(x, Expr::Column(y) if y == c));
                    if !shown && input.schema().has_column(c) {
                        exprs.push(Expr::Column(c.clone()));
                    }
                }
            }
            let plan = LogicalPlanBuilder::from(input).project(exprs)?.build()?;
            Ok(Some((plan, lifted)))
        }
        LogicalPlan::SubqueryAlias(a) => {
            let Some((input, lifted)) = lift_predicates(a.input.as_ref().clone())? else {
                return Ok(None);
            };
            let aliased = SubqueryAlias::try_new(Arc::new(input), a.alias.clone())?;
            // The lifted predicates now see the input's columns under the alias.
            let inner_schema = aliased.input.schema().clone();
            let outer_schema = aliased.schema.clone();
            let mut renamed = Vec::new();
            for e in lifted {
                let r = e
                    .transform_up(|x| match &x {
                        Expr::Column(c) => match inner_schema.index_of_column(c) {
                            Ok(i) => {
                                let (q, f) = outer_schema.qualified_field(i);
                                Ok(Transformed::yes(Expr::Column(Column::new(
                                    q.cloned(),
                                    f.name(),
                                ))))
                            }
                            Err(_) => Ok(Transformed::no(x)),
                        },
                        _ => Ok(Transformed::no(x)),
                    })?
                    .data;
                renamed.push(r);
            }
            Ok(Some((LogicalPlan::SubqueryAlias(aliased), renamed)))
        }
        LogicalPlan::Join(j)
            if j.join_type == JoinType::Inner
                && j.filter.as_ref().is_none_or(|f| !has_outer(f))
                && j.on.iter().all(|(l, r)| !has_outer(l) && !has_outer(r)) =>
        {
            let Some((left, mut lifted)) = lift_predicates(j.left.as_ref().clone())? else {
                return Ok(None);
            };
            let Some((right, more)) = lift_predicates(j.right.as_ref().clone())? else {
                return Ok(None);
            };
            lifted.extend(more);
            let mut join = j.clone();
            join.left = Arc::new(left);
            join.right = Arc::new(right);
            let plan = LogicalPlan::Join(join).recompute_schema()?;
            Ok(Some((plan, lifted)))
        }
        _ => Ok(None),
    }
}

/// `strata_single_row(n, v)`: `v`, or the error PostgreSQL gives when a subquery used as an
/// expression returns `n` > 1 rows.
pub fn single_row() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(SingleRow {
        signature: Signature::any(2, Volatility::Immutable),
    }))
}

/// The functions plans made by this module call, for sessions that decode plans.
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    vec![single_row()]
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SingleRow {
    signature: Signature,
}

impl ScalarUDFImpl for SingleRow {
    fn name(&self) -> &str {
        "strata_single_row"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [_, v] => Ok(v.clone()),
            _ => plan_err!("strata_single_row takes a count and a value"),
        }
    }

    /// Unbounded, of the value's type (the default's type is NULL, which functions above it
    /// that reason about ranges fail on).
    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        match input {
            [_, v] => Interval::make_unbounded(&v.data_type()),
            _ => plan_err!("strata_single_row takes a count and a value"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [n, v] = args.args.as_slice() else {
            return exec_err!("strata_single_row takes a count and a value");
        };
        let counts = n.to_array(args.number_rows)?;
        let counts = counts.as_primitive::<Int64Type>();
        if counts.iter().any(|c| c.is_some_and(|c| c > 1)) {
            return exec_err!("more than one row returned by a subquery used as an expression");
        }
        Ok(v.clone())
    }
}
