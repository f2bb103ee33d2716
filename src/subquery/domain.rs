//! The outer query's domain pushed down into a correlated subquery, for the shapes whose
//! correlated predicates cannot be lifted to its top: UNION, windows, LIMIT, aggregates and
//! outer joins below them, and subqueries nested deeper that refer to the outer query. Each
//! node then computes its rows once per domain value, carrying the domain's columns up.

use std::sync::Arc;

use datafusion::common::alias::AliasGenerator;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, NullEquality, Result};
use datafusion::functions::core::expr_fn::coalesce;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::expr::{Exists, InSubquery, SetComparison};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::logical_plan::{FetchType, SkipType};
use datafusion::logical_expr::{
    Aggregate, BinaryExpr, Distinct, Expr, ExprFunctionExt, Filter, Join, JoinType, LogicalPlan,
    LogicalPlanBuilder, Operator, Projection, SortExpr, Subquery, SubqueryAlias, Union, Window,
};
use datafusion::prelude::lit;

use super::{column_exprs, count_rows_not_nulls};

/// A plan with the domain's columns appended (the plan's own columns come first), and those
/// columns as the plan names them.
pub(super) type Pushed = (LogicalPlan, Vec<Column>);

/// The distinct values of the outer query's columns a subquery refers to.
pub(super) struct Domain<'a> {
    /// The outer query's rows.
    pub input: &'a LogicalPlan,
    /// The outer columns, in the order of the domain's columns.
    pub outer: &'a [Column],
    pub names: &'a AliasGenerator,
}

impl Domain<'_> {
    /// A copy of the domain under a name of its own, and its columns.
    fn copy(&self) -> Result<Pushed> {
        let alias = self.names.next("__strata_dom");
        let columns: Vec<String> = (0..self.outer.len())
            .map(|i| format!("{alias}_d{i}"))
            .collect();
        let keys: Vec<Expr> = self.outer.iter().cloned().map(Expr::Column).collect();
        let plan = LogicalPlanBuilder::from(self.input.clone())
            .aggregate(keys.clone(), Vec::<Expr>::new())?
            .project(
                keys.into_iter()
                    .zip(&columns)
                    .map(|(k, name)| k.alias(name))
                    .collect::<Vec<_>>(),
            )?
            .alias(alias.as_str())?
            .build()?;
        let columns = columns
            .iter()
            .map(|c| Column::new(Some(alias.as_str()), c))
            .collect();
        Ok((plan, columns))
    }

    /// Whether `plan` refers to the outer columns of this domain.
    fn refers(&self, plan: &LogicalPlan) -> bool {
        free_outer(plan).iter().any(|c| self.outer.contains(c))
    }

    fn refers_expr(&self, e: &Expr, local: &[&DFSchema]) -> bool {
        let mut found = Vec::new();
        collect_outer(e, local, &mut found);
        found.iter().any(|c| self.outer.contains(c))
    }

    /// `plan`'s rows for each domain value: its columns, then the domain's. `None` for a
    /// node this does not know how to carry the domain through.
    pub fn push(&self, plan: &LogicalPlan) -> Result<Option<Pushed>> {
        if !self.refers(plan) {
            // Every row belongs to every domain value.
            let (domain, columns) = self.copy()?;
            let joined = LogicalPlanBuilder::from(plan.clone())
                .cross_join(domain)?
                .build()?;
            return Ok(Some((joined, columns)));
        }
        match plan {
            LogicalPlan::Filter(f) => {
                let Some((input, dc)) = self.push(&f.input)? else {
                    return Ok(None);
                };
                let predicate =
                    self.replace(f.predicate.clone(), &dc, &input, &[f.input.schema()])?;
                let plan = LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(input))?);
                Ok(Some((plan, dc)))
            }
            LogicalPlan::Projection(p) => {
                let Some((input, dc)) = self.push(&p.input)? else {
                    return Ok(None);
                };
                self.project(p, NamePreserver::new(plan), input, dc)
                    .map(Some)
            }
            LogicalPlan::SubqueryAlias(a) => {
                let Some((input, dc)) = self.push(&a.input)? else {
                    return Ok(None);
                };
                let aliased = SubqueryAlias::try_new(Arc::new(input), a.alias.clone())?;
                let dc = dc
                    .into_iter()
                    .map(|c| Column::new(Some(a.alias.clone()), c.name))
                    .collect();
                Ok(Some((LogicalPlan::SubqueryAlias(aliased), dc)))
            }
            LogicalPlan::Aggregate(a) => self.push_aggregate(a),
            LogicalPlan::Window(w) => {
                let Some((input, dc)) = self.push(&w.input)? else {
                    return Ok(None);
                };
                let partition: Vec<Expr> = dc.iter().cloned().map(Expr::Column).collect();
                let mut exprs = Vec::with_capacity(w.window_expr.len());
                for e in &w.window_expr {
                    let e = self.replace(e.clone(), &dc, &input, &[w.input.schema()])?;
                    let partitioned = e.transform_down(|x| match x {
                        Expr::WindowFunction(mut f) => {
                            f.params.partition_by.extend(partition.iter().cloned());
                            Ok(Transformed::new(
                                Expr::WindowFunction(f),
                                true,
                                TreeNodeRecursion::Jump,
                            ))
                        }
                        other => Ok(Transformed::no(other)),
                    })?;
                    exprs.push(partitioned.data);
                }
                let window = Window::try_new(exprs.clone(), Arc::new(input.clone()))?;
                // The window's columns under their old names, then the domain's.
                let mut out = columns_but(&input, &dc);
                for (new, old) in exprs.iter().zip(&w.window_expr) {
                    let (q, n) = old.qualified_name();
                    let (nq, nn) = new.qualified_name();
                    out.push(Expr::Column(Column::new(nq, nn)).alias_qualified(q, n));
                }
                out.extend(dc.iter().cloned().map(Expr::Column));
                let plan = LogicalPlanBuilder::from(LogicalPlan::Window(window))
                    .project(out)?
                    .build()?;
                Ok(Some((plan, dc)))
            }
            LogicalPlan::Union(u) => {
                // Every input names the domain's columns alike (an input the optimizer
                // finds empty is dropped, and another then stands for the union).
                let mut inputs = Vec::with_capacity(u.inputs.len());
                let mut names: Option<Vec<String>> = None;
                for input in &u.inputs {
                    let Some((pushed, dc)) = self.push(input)? else {
                        return Ok(None);
                    };
                    let names = names.get_or_insert_with(|| {
                        dc.iter().map(|c| c.name.clone()).collect::<Vec<_>>()
                    });
                    let mut exprs = columns_but(&pushed, &dc);
                    for (c, name) in dc.iter().zip(names.iter()) {
                        exprs.push(Expr::Column(c.clone()).alias(name));
                    }
                    let named = LogicalPlanBuilder::from(pushed).project(exprs)?.build()?;
                    inputs.push(Arc::new(named));
                }
                let union = Union::try_new_with_loose_types(inputs)?;
                let columns = union.schema.columns();
                let dc = columns[columns.len() - self.outer.len()..].to_vec();
                Ok(Some((LogicalPlan::Union(union), dc)))
            }
            LogicalPlan::Sort(s) if s.fetch.is_none() => {
                let Some((input, dc)) = self.push(&s.input)? else {
                    return Ok(None);
                };
                let order = self.replace_order(&s.expr, &dc, &input, s.input.schema())?;
                let plan = LogicalPlanBuilder::from(input).sort(order)?.build()?;
                Ok(Some((plan, dc)))
            }
            LogicalPlan::Limit(l) => {
                let (skip, fetch) = match (l.get_skip_type()?, l.get_fetch_type()?) {
                    (SkipType::Literal(s), FetchType::Literal(f)) => (s, f),
                    _ => return Ok(None),
                };
                self.push_limit(&l.input, skip, fetch)
            }
            LogicalPlan::Distinct(Distinct::All(input)) => {
                let Some((input, dc)) = self.push(input)? else {
                    return Ok(None);
                };
                let plan = LogicalPlanBuilder::from(input).distinct()?.build()?;
                Ok(Some((plan, dc)))
            }
            LogicalPlan::Join(j) => self.push_join(j),
            _ => Ok(None),
        }
    }

    /// An aggregate's groups are formed per domain value; a scalar aggregate still answers
    /// once for a domain value without rows (`count(*)` is 0 there).
    fn push_aggregate(&self, a: &Aggregate) -> Result<Option<Pushed>> {
        let local = [a.input.schema().as_ref()];
        if a.group_expr.iter().any(|g| self.refers_expr(g, &local))
            || matches!(a.group_expr.first(), Some(Expr::GroupingSet(_)))
        {
            return Ok(None);
        }
        let Some((input, dc)) = self.push(&a.input)? else {
            return Ok(None);
        };
        let mut aggr = Vec::with_capacity(a.aggr_expr.len());
        for e in &a.aggr_expr {
            let (q, n) = e.qualified_name();
            let replaced = self.replace(e.clone(), &dc, &input, &[a.input.schema()])?;
            aggr.push(if replaced.qualified_name() == (q.clone(), n.clone()) {
                replaced
            } else {
                replaced.alias_qualified(q, n)
            });
        }
        let mut groups = a.group_expr.clone();
        if groups.is_empty() {
            let (domain, columns) = self.copy()?;
            let mark_name = format!("{}_mark", columns[0].name);
            let mut with_mark = column_exprs(&input);
            with_mark.push(lit(true).alias(&mark_name));
            let rows = LogicalPlanBuilder::from(input)
                .project(with_mark)?
                .build()?;
            let joined = LogicalPlanBuilder::from(domain)
                .join_detailed(
                    rows,
                    JoinType::Left,
                    (columns.clone(), dc),
                    None,
                    NullEquality::NullEqualsNull,
                )?
                .build()?;
            let mark = Expr::Column(Column::from_name(mark_name));
            let aggr = aggr
                .iter()
                .map(|e| count_rows_not_nulls(e, &mark))
                .collect::<Result<Vec<_>>>()?;
            let group: Vec<Expr> = columns.iter().cloned().map(Expr::Column).collect();
            let plan =
                LogicalPlan::Aggregate(Aggregate::try_new(Arc::new(joined), group.clone(), aggr)?);
            return Ok(Some((domain_last(plan, &columns)?, columns)));
        }
        groups.extend(dc.iter().cloned().map(Expr::Column));
        let plan = LogicalPlan::Aggregate(Aggregate::try_new(Arc::new(input), groups, aggr)?);
        Ok(Some((domain_last(plan, &dc)?, dc)))
    }

    /// The first rows of each domain value's rows (by the ORDER BY right below, if any),
    /// numbered per domain value.
    fn push_limit(
        &self,
        input: &LogicalPlan,
        skip: usize,
        fetch: Option<usize>,
    ) -> Result<Option<Pushed>> {
        // ORDER BY sits below the SELECT list's projection when it sorts by other columns.
        let (projection, sorted) = match input {
            LogicalPlan::Projection(p) if matches!(p.input.as_ref(), LogicalPlan::Sort(_)) => {
                (Some(p), p.input.as_ref())
            }
            other => (None, other),
        };
        let (rows, order) = match sorted {
            LogicalPlan::Sort(s) if s.fetch.is_none() => {
                let Some((rows, dc)) = self.push(&s.input)? else {
                    return Ok(None);
                };
                let order = self.replace_order(&s.expr, &dc, &rows, s.input.schema())?;
                ((rows, dc), order)
            }
            other => match self.push(other)? {
                Some(rows) => (rows, Vec::new()),
                None => return Ok(None),
            },
        };
        let (rows, dc) = rows;
        let rank_name = format!("{}_rank", dc[0].name);
        let rank = row_number()
            .partition_by(dc.iter().cloned().map(Expr::Column).collect())
            .order_by(order)
            .build()?
            .alias(&rank_name);
        let rank_col = Expr::Column(Column::from_name(rank_name));
        let mut keep = rank_col.clone().gt(lit(skip as u64));
        if let Some(n) = fetch {
            keep = keep.and(rank_col.lt_eq(lit((skip + n) as u64)));
        }
        let columns = column_exprs(&rows);
        let limited = LogicalPlanBuilder::from(rows)
            .window(vec![rank])?
            .filter(keep)?
            .project(columns)?
            .build()?;
        let Some(p) = projection else {
            return Ok(Some((limited, dc)));
        };
        self.project(p, NamePreserver::new_for_projection(), limited, dc)
            .map(Some)
    }

    /// `p`'s SELECT list over `input` (which carries the domain), its names kept, then the
    /// domain's columns.
    fn project(
        &self,
        p: &Projection,
        names: NamePreserver,
        input: LogicalPlan,
        dc: Vec<Column>,
    ) -> Result<Pushed> {
        let mut exprs = Vec::with_capacity(p.expr.len() + dc.len());
        for e in &p.expr {
            let name = names.save(e);
            let replaced = self.replace(e.clone(), &dc, &input, &[p.input.schema()])?;
            exprs.push(name.restore(replaced));
        }
        exprs.extend(dc.iter().cloned().map(Expr::Column));
        let plan = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(input))?);
        Ok((plan, dc))
    }

    /// A join carries the domain from the side whose rows it keeps; when the other side
    /// also refers to the outer query, both do and match on it.
    fn push_join(&self, j: &Join) -> Result<Option<Pushed>> {
        let local = [j.left.schema().as_ref(), j.right.schema().as_ref()];
        if j.on
            .iter()
            .any(|(l, r)| self.refers_expr(l, &local) || self.refers_expr(r, &local))
        {
            return Ok(None);
        }
        let left_refers = self.refers(&j.left);
        let right_refers = self.refers(&j.right);
        let (push_left, push_right) = match j.join_type {
            JoinType::Inner => (left_refers || !right_refers, right_refers),
            JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => {
                (true, right_refers)
            }
            JoinType::Right | JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => {
                (left_refers, true)
            }
            JoinType::Full => (true, true),
        };
        let side = |plan: &Arc<LogicalPlan>,
                    push: bool|
         -> Result<Option<(LogicalPlan, Option<Vec<Column>>)>> {
            if !push {
                return Ok(Some((plan.as_ref().clone(), None)));
            }
            Ok(self.push(plan)?.map(|(p, dc)| (p, Some(dc))))
        };
        let (Some((left, left_dc)), Some((right, right_dc))) =
            (side(&j.left, push_left)?, side(&j.right, push_right)?)
        else {
            return Ok(None);
        };
        let keeps_right = matches!(
            j.join_type,
            JoinType::Right | JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark
        );
        let dc = match (&left_dc, &right_dc) {
            (Some(l), _) if !keeps_right => l.clone(),
            (_, Some(r)) => r.clone(),
            (Some(l), None) => l.clone(),
            (None, None) => return Ok(None),
        };
        let joined_schema = {
            let mut s = left.schema().as_ref().clone();
            s.merge(right.schema());
            s
        };
        let mut filter = match &j.filter {
            Some(f) => Some(self.replace_in(f.clone(), &dc, &joined_schema, &local)?),
            None => None,
        };
        if let (Some(l), Some(r)) = (&left_dc, &right_dc) {
            for (a, b) in l.iter().zip(r) {
                let same = not_distinct(Expr::Column(a.clone()), Expr::Column(b.clone()));
                filter = Some(match filter {
                    Some(f) => f.and(same),
                    None => same,
                });
            }
        }
        let join = Join::try_new(
            Arc::new(left),
            Arc::new(right),
            j.on.clone(),
            filter,
            j.join_type,
            j.join_constraint,
            j.null_equality,
            j.null_aware,
        )?;
        let plan = LogicalPlan::Join(join);
        let all_dc: Vec<Column> = left_dc
            .iter()
            .chain(right_dc.iter())
            .flatten()
            .cloned()
            .collect();
        let mut out = columns_but(&plan, &all_dc);
        match (&left_dc, &right_dc) {
            // A row of either side without a match carries its domain value on its side.
            (Some(l), Some(r)) if j.join_type == JoinType::Full => {
                for (a, b) in l.iter().zip(r) {
                    let either = coalesce(vec![Expr::Column(a.clone()), Expr::Column(b.clone())]);
                    out.push(either.alias_qualified(a.relation.clone(), &a.name));
                }
            }
            _ => out.extend(dc.iter().cloned().map(Expr::Column)),
        }
        let plan = LogicalPlanBuilder::from(plan).project(out)?.build()?;
        Ok(Some((plan, dc)))
    }

    fn replace_order(
        &self,
        order: &[SortExpr],
        dc: &[Column],
        pushed: &LogicalPlan,
        local: &DFSchema,
    ) -> Result<Vec<SortExpr>> {
        order
            .iter()
            .map(|s| {
                self.replace(s.expr.clone(), dc, pushed, &[local])
                    .map(|e| s.with_expr(e))
            })
            .collect()
    }

    /// `e` over a node whose input is now `pushed`: outer references become the domain's
    /// columns, and so do those of subqueries nested in `e` (which then refer to the node's
    /// input instead of the outer query). `local` are the node's original input schemas:
    /// a nested reference to a column they have is the node's own.
    fn replace(
        &self,
        e: Expr,
        dc: &[Column],
        pushed: &LogicalPlan,
        local: &[&DFSchema],
    ) -> Result<Expr> {
        self.replace_in(e, dc, pushed.schema(), local)
    }

    fn replace_in(
        &self,
        e: Expr,
        dc: &[Column],
        pushed: &DFSchema,
        local: &[&DFSchema],
    ) -> Result<Expr> {
        let position = |c: &Column| self.outer.iter().position(|o| o == c);
        e.transform_up(|x| match x {
            Expr::OuterReferenceColumn(_, ref c) => match position(c) {
                Some(i) => Ok(Transformed::yes(Expr::Column(dc[i].clone()))),
                None => Ok(Transformed::no(x)),
            },
            Expr::ScalarSubquery(s) => Ok(Transformed::yes(Expr::ScalarSubquery(
                self.rebind(s, dc, pushed, local)?,
            ))),
            Expr::Exists(Exists { subquery, negated }) => {
                Ok(Transformed::yes(Expr::Exists(Exists {
                    subquery: self.rebind(subquery, dc, pushed, local)?,
                    negated,
                })))
            }
            Expr::InSubquery(InSubquery {
                expr,
                subquery,
                negated,
            }) => Ok(Transformed::yes(Expr::InSubquery(InSubquery {
                expr,
                subquery: self.rebind(subquery, dc, pushed, local)?,
                negated,
            }))),
            Expr::SetComparison(SetComparison {
                expr,
                subquery,
                op,
                quantifier,
            }) => Ok(Transformed::yes(Expr::SetComparison(SetComparison {
                expr,
                subquery: self.rebind(subquery, dc, pushed, local)?,
                op,
                quantifier,
            }))),
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
    }

    /// A nested subquery's references to the outer query, turned into references to the
    /// domain's columns of the node it sits in.
    fn rebind(
        &self,
        subquery: Subquery,
        dc: &[Column],
        pushed: &DFSchema,
        local: &[&DFSchema],
    ) -> Result<Subquery> {
        let mut failed = None;
        let plan = subquery
            .subquery
            .as_ref()
            .clone()
            .transform_up_with_subqueries(|node| {
                node.map_expressions(|e| {
                    e.transform_up(|x| match x {
                        Expr::OuterReferenceColumn(_, ref c)
                            if !local.iter().any(|s| s.has_column(c)) =>
                        {
                            match self.outer.iter().position(|o| o == c) {
                                Some(i) => match pushed.qualified_field_from_column(&dc[i]) {
                                    Ok((_, field)) => {
                                        Ok(Transformed::yes(Expr::OuterReferenceColumn(
                                            Arc::clone(field),
                                            dc[i].clone(),
                                        )))
                                    }
                                    Err(e) => {
                                        failed = Some(e);
                                        Ok(Transformed::no(x))
                                    }
                                },
                                None => Ok(Transformed::no(x)),
                            }
                        }
                        other => Ok(Transformed::no(other)),
                    })
                })
            })?
            .data;
        if let Some(e) = failed {
            return Err(e);
        }
        let plan = refresh_outer_refs(plan)?;
        Ok(Subquery {
            outer_ref_columns: plan.all_out_ref_exprs(),
            subquery: Arc::new(plan),
            spans: subquery.spans,
        })
    }
}

/// `a IS NOT DISTINCT FROM b`
pub(super) fn not_distinct(a: Expr, b: Expr) -> Expr {
    Expr::BinaryExpr(BinaryExpr::new(
        Box::new(a),
        Operator::IsNotDistinctFrom,
        Box::new(b),
    ))
}

/// `plan`'s columns but `skip`, as expressions.
fn columns_but(plan: &LogicalPlan, skip: &[Column]) -> Vec<Expr> {
    plan.schema()
        .columns()
        .into_iter()
        .filter(|c| !skip.contains(c))
        .map(Expr::Column)
        .collect()
}

/// `plan`'s columns with `domain` moved to the end.
fn domain_last(plan: LogicalPlan, domain: &[Column]) -> Result<LogicalPlan> {
    let mut out = columns_but(&plan, domain);
    out.extend(domain.iter().cloned().map(Expr::Column));
    LogicalPlanBuilder::from(plan).project(out)?.build()
}

/// Every subquery's list of outer references, recomputed after its plan changed.
fn refresh_outer_refs(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| match node {
        LogicalPlan::Subquery(mut sq) => {
            sq.outer_ref_columns = sq.subquery.all_out_ref_exprs();
            Ok(Transformed::yes(LogicalPlan::Subquery(sq)))
        }
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

/// The columns of queries further out that `plan` refers to: its own outer references and
/// those of its subqueries that `plan` itself does not have.
pub(super) fn free_outer(plan: &LogicalPlan) -> Vec<Column> {
    let mut out = Vec::new();
    let _ = plan.apply(|node| {
        let inputs = node.inputs();
        let local: Vec<&DFSchema> = inputs.iter().map(|i| i.schema().as_ref()).collect();
        for e in node.expressions() {
            collect_outer(&e, &local, &mut out);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

/// Whether a subquery nested in `plan` refers past `plan` to a query further out.
pub(super) fn deeply_correlated(plan: &LogicalPlan) -> bool {
    plan.exists(|node| {
        let inputs = node.inputs();
        let local: Vec<&DFSchema> = inputs.iter().map(|i| i.schema().as_ref()).collect();
        let mut found = false;
        for e in node.expressions() {
            e.apply(|x| {
                if let Some(sq) = subquery_of(x)
                    && free_outer(&sq.subquery)
                        .iter()
                        .any(|c| !local.iter().any(|s| s.has_column(c)))
                {
                    found = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
        }
        Ok(found)
    })
    .unwrap_or(false)
}

/// The outer references in `e` and in its subqueries, less the columns of `local`.
fn collect_outer(e: &Expr, local: &[&DFSchema], out: &mut Vec<Column>) {
    let _ = e.apply(|x| {
        if let Expr::OuterReferenceColumn(_, c) = x
            && !out.contains(c)
        {
            out.push(c.clone());
        }
        if let Some(sq) = subquery_of(x) {
            for c in free_outer(&sq.subquery) {
                if !local.iter().any(|s| s.has_column(&c)) && !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
}

fn subquery_of(e: &Expr) -> Option<&Subquery> {
    match e {
        Expr::ScalarSubquery(s) => Some(s),
        Expr::Exists(Exists { subquery, .. })
        | Expr::InSubquery(InSubquery { subquery, .. })
        | Expr::SetComparison(SetComparison { subquery, .. }) => Some(subquery),
        _ => None,
    }
}
