//! Joins and aggregations whose tables are all in one database, sent to that database whole
//! as one SELECT, so that it joins and groups next to its data and sends back only the
//! result (`SET strata.database_pushdown = false` turns it off).
//!
//! Only what gives the same rows there as in Strata is sent: inner and outer joins on
//! columns of the same type, groups and `count(DISTINCT …)` over types the backend compares
//! as Strata does, `count`, `sum` and `avg` of integers and decimals, `min` and `max` of
//! types it orders as Strata does, and the filters a single table's scan would send.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::internal_err;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, DFSchemaRef, NullEquality, TableReference};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::Result;
use datafusion::functions_aggregate::average::Avg;
use datafusion::functions_aggregate::count::Count;
use datafusion::functions_aggregate::min_max::{Max, Min};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Cast, Expr, JoinType, LogicalPlan, LogicalPlanBuilder, Projection, SubqueryAlias, TableScan,
    TableScanBuilder,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::sql::unparser::Unparser;

use super::tables::{DatabaseTable, column_type, compares_alike, same_meaning};
use super::{Backend, DatabaseUrl};
use crate::arithmetic::WideSum;
use crate::optimizer::StrataOptions;

/// The logical rule that replaces each largest subplan one database can run whole, and that
/// joins or aggregates, with a scan of its SELECT.
#[derive(Debug, Default)]
pub(crate) struct SendToDatabase;

impl OptimizerRule for SendToDatabase {
    fn name(&self) -> &str {
        "send_to_database"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let enabled = config
            .options()
            .extensions
            .get::<StrataOptions>()
            .is_none_or(|o| o.database_pushdown);
        // Most plans read no database table: nothing to look at.
        if !enabled || !plan.exists(|node| Ok(database_scan(node)))? {
            return Ok(Transformed::no(plan));
        }
        send(plan)
    }
}

fn database_scan(node: &LogicalPlan) -> bool {
    let LogicalPlan::TableScan(scan) = node else {
        return false;
    };
    source_as_provider(&scan.source).is_ok_and(|p| p.downcast_ref::<DatabaseTable>().is_some())
}

fn send(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    if let Some(found) = sendable(&plan)
        && found.joins_or_groups
        && let Some(query) = as_query(&plan, found)?
    {
        return Ok(Transformed::yes(query));
    }
    plan.map_children(send)
}

/// What a subplan the database can run whole reads, and what the SELECT can do with it next.
struct Sendable {
    url: DatabaseUrl,
    /// The tables it reads, as errors name them.
    tables: Vec<String>,
    /// The names its rows' columns are qualified by in the SELECT (two equal names would be
    /// ambiguous there).
    names: Vec<String>,
    joins_or_groups: bool,
    shape: Shape,
}

/// Where a subplan can go in a SELECT.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// Rows of tables: joined, filtered, grouped.
    Rows,
    /// Groups: filtered (HAVING), projected, limited.
    Groups,
    /// Projected or limited: only projected or limited again.
    Final,
}

fn sendable(plan: &LogicalPlan) -> Option<Sendable> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let provider = source_as_provider(&scan.source).ok()?;
            let table = provider.downcast_ref::<DatabaseTable>()?;
            let (_, name) = table.remote()?;
            let all: Vec<usize> = (0..scan.source.schema().fields().len()).collect();
            if scan.fetch.is_some()
                || table
                    .refused(scan.projection.as_ref().unwrap_or(&all))
                    .is_some()
            {
                return None;
            }
            Some(Sendable {
                url: table.url().clone(),
                tables: vec![name.to_string()],
                names: vec![scan.table_name.table().to_string()],
                joins_or_groups: false,
                shape: Shape::Rows,
            })
        }
        LogicalPlan::SubqueryAlias(alias) => {
            let mut inner = sendable(&alias.input)?;
            inner.names = vec![alias.alias.table().to_string()];
            inner.shape = Shape::Rows;
            Some(inner)
        }
        LogicalPlan::Filter(filter) => {
            let inner = sendable(&filter.input)?;
            let backend = inner.url.backend;
            let fits = inner.shape != Shape::Final
                && same_meaning(backend, &filter.predicate, filter.input.schema());
            fits.then_some(inner)
        }
        LogicalPlan::Projection(projection) => {
            let mut inner = sendable(&projection.input)?;
            if pruning(projection) {
                return Some(inner);
            }
            let plain = projection.expr.iter().all(|e| match e {
                Expr::Alias(alias) => matches!(alias.expr.as_ref(), Expr::Column(_)),
                e => matches!(e, Expr::Column(_)),
            });
            plain.then(|| {
                inner.shape = Shape::Final;
                inner
            })
        }
        LogicalPlan::Limit(limit) => {
            let mut inner = sendable(&limit.input)?;
            let literal = |e: &Option<Box<Expr>>| {
                e.as_deref()
                    .is_none_or(|e| matches!(e, Expr::Literal(v, _) if !v.is_null()))
            };
            (literal(&limit.skip) && literal(&limit.fetch)).then(|| {
                inner.shape = Shape::Final;
                inner
            })
        }
        LogicalPlan::Aggregate(aggregate) => {
            let mut inner = sendable(&aggregate.input)?;
            let backend = inner.url.backend;
            let schema = aggregate.input.schema();
            let fits = inner.shape == Shape::Rows
                && aggregate.group_expr.iter().all(|e| {
                    matches!(e, Expr::Column(_))
                        && column_type(e, schema).is_some_and(|t| groupable(backend, &t))
                })
                && aggregate
                    .aggr_expr
                    .iter()
                    .all(|e| same_aggregate(backend, e, schema));
            fits.then(|| {
                inner.shape = Shape::Groups;
                inner.joins_or_groups = true;
                inner
            })
        }
        LogicalPlan::Join(join) => {
            let mut left = sendable(&join.left)?;
            let right = sendable(&join.right)?;
            let backend = left.url.backend;
            let types = |l: &Expr, r: &Expr| {
                let lt = key_type(l, join.left.schema())?;
                let rt = key_type(r, join.right.schema())?;
                (lt == rt && groupable(backend, &lt)).then_some(())
            };
            let fits = left.url == right.url
                && left.shape == Shape::Rows
                && right.shape == Shape::Rows
                && !left.names.iter().any(|n| right.names.contains(n))
                && match join.join_type {
                    JoinType::Inner | JoinType::Left | JoinType::Right => true,
                    JoinType::Full => backend != Backend::MySql,
                    _ => false,
                }
                && join.null_equality == NullEquality::NullEqualsNothing
                && !join.null_aware
                && join.on.iter().all(|(l, r)| types(l, r).is_some())
                && join
                    .filter
                    .as_ref()
                    .is_none_or(|f| same_meaning(backend, f, &join.schema));
            fits.then(|| {
                left.tables.extend(right.tables);
                left.names.extend(right.names);
                left.joins_or_groups = true;
                left
            })
        }
        _ => None,
    }
}

/// The type a join compares key `e` as: a column's, or a wider integer's that an integer
/// column is cast to (`int = bigint`).
fn key_type(e: &Expr, schema: &DFSchema) -> Option<DataType> {
    match e {
        Expr::Cast(Cast { expr, field }) => {
            let from = column_type(expr, schema)?;
            let to = field.data_type();
            let widens = from.is_signed_integer() && to.is_signed_integer()
                || from.is_unsigned_integer() && to.is_integer();
            (widens && to.primitive_width() >= from.primitive_width()).then(|| to.clone())
        }
        e => column_type(e, schema),
    }
}

/// Whether `projection` only leaves columns out (the SELECT needs no such step).
fn pruning(projection: &Projection) -> bool {
    projection.expr.iter().all(|e| matches!(e, Expr::Column(_)))
}

/// Whether the backend finds equal what Strata finds equal in a column of type `ty` (group
/// keys, join keys, `count(DISTINCT …)`): as a filter's `=` compares, but not floats (`-0`
/// and `0`, NaN).
fn groupable(backend: Backend, ty: &DataType) -> bool {
    !ty.is_floating() && compares_alike(backend, ty, false)
}

/// Whether the backend orders values of type `ty` as Strata does (`min`, `max`): as a
/// filter's `<` compares, but not floats or booleans (PostgreSQL has no `min(boolean)`).
fn ordered(backend: Backend, ty: &DataType) -> bool {
    !ty.is_floating() && *ty != DataType::Boolean && compares_alike(backend, ty, true)
}

/// Whether aggregate `e` gives what Strata's would: `count`, `sum` of integers and
/// decimals, `avg` of integers (as doubles), `min` and `max` of [`ordered`] types; no
/// FILTER, ORDER BY or DISTINCT but `count(DISTINCT column)`.
fn same_aggregate(backend: Backend, e: &Expr, schema: &DFSchema) -> bool {
    let e = match e {
        Expr::Alias(alias) => alias.expr.as_ref(),
        e => e,
    };
    let Expr::AggregateFunction(AggregateFunction { func, params }) = e else {
        return false;
    };
    if params.filter.is_some() || !params.order_by.is_empty() || params.null_treatment.is_some() {
        return false;
    }
    let [arg] = params.args.as_slice() else {
        return false;
    };
    let column = |e: &Expr| column_type(e, schema);
    // A cast of a column to `to`, and the column's type.
    let cast_column = |e: &Expr| match e {
        Expr::Cast(Cast { expr, field }) => Some((column(expr)?, field.data_type().clone())),
        e => column(e).map(|t| (t.clone(), t)),
    };
    let f = func.inner();
    if f.is::<Count>() {
        return match arg {
            Expr::Literal(v, _) => !v.is_null() && !params.distinct,
            e => column(e).is_some_and(|t| !params.distinct || groupable(backend, &t)),
        };
    }
    if params.distinct {
        return false;
    }
    if f.is::<WideSum>() {
        return cast_column(arg).is_some_and(|(from, to)| {
            let exact = from.is_integer()
                || matches!(from, DataType::Decimal128(..)) && backend != Backend::Sqlite;
            exact && matches!(to, DataType::Int64 | DataType::Decimal128(..))
        });
    }
    if f.is::<Avg>() {
        return matches!(
            arg,
            Expr::Cast(Cast { expr, field })
                if field.data_type() == &DataType::Float64
                    && column(expr).is_some_and(|t| t.is_integer())
        );
    }
    if f.is::<Min>() || f.is::<Max>() {
        return column(arg).is_some_and(|t| ordered(backend, &t));
    }
    false
}

/// `plan` (which [`sendable`] accepted) as a scan of the SELECT that gives its rows, under a
/// projection that gives them back their names; `None` if the SELECT cannot be written.
fn as_query(plan: &LogicalPlan, found: Sendable) -> Result<Option<LogicalPlan>> {
    let backend = found.url.backend;
    // The SELECT's columns are c0, c1, ...: PostgreSQL cuts names at 63 bytes, and a join's
    // columns may share names.
    let outputs: Vec<(Option<TableReference>, Arc<Field>)> = plan
        .schema()
        .iter()
        .map(|(q, f)| (q.cloned(), f.clone()))
        .collect();
    let named = |i: usize| format!("c{i}");
    let selected: Vec<Expr> = outputs
        .iter()
        .enumerate()
        .map(|(i, (q, f))| {
            let column = Expr::Column(Column::new(q.clone(), f.name()));
            // The database's own type for a count, sum or average (bigint, numeric) is cast
            // to Strata's, so that the rows come back as Strata planned them.
            let typed = match f.data_type() {
                t @ (DataType::Int64 | DataType::Float64 | DataType::Decimal128(..)) => {
                    Expr::Cast(Cast::new(Box::new(column), t.clone()))
                }
                _ => column,
            };
            typed.alias(named(i))
        })
        .collect();
    let columns: Vec<Field> = outputs
        .iter()
        .enumerate()
        .map(|(i, (_, f))| Field::new(named(i), f.data_type().clone(), f.is_nullable()))
        .collect();
    let schema = Arc::new(Schema::new(columns));
    let columns = Arc::new(DFSchema::try_from(schema.as_ref().clone())?);
    let top = select_as(as_remote(plan.clone())?, selected, columns)?;
    let dialect = super::tables::dialect(backend);
    let Ok(sql) = Unparser::new(dialect.as_ref()).plan_to_sql(&top) else {
        return Ok(None);
    };
    let name = TableReference::bare(backend.scheme());
    let table = DatabaseTable::query(found.url, found.tables.join(", "), sql.to_string(), schema);
    let scan = LogicalPlanBuilder::scan(name.clone(), provider_as_source(Arc::new(table)), None)?
        .build()?;
    let renamed: Vec<Expr> = outputs
        .into_iter()
        .enumerate()
        .map(|(i, (q, f))| {
            Expr::Column(Column::new(Some(name.clone()), named(i))).alias_qualified(q, f.name())
        })
        .collect();
    Ok(Some(LogicalPlan::Projection(Projection::try_new(
        renamed,
        Arc::new(scan),
    )?)))
}

/// `plan`'s rows as `exprs` (over `plan`'s columns) with `schema`: the SELECT list of its
/// top projection, under its LIMIT.
fn select_as(plan: LogicalPlan, exprs: Vec<Expr>, schema: DFSchemaRef) -> Result<LogicalPlan> {
    match plan {
        LogicalPlan::Limit(mut limit) => {
            let input = Arc::unwrap_or_clone(limit.input);
            limit.input = Arc::new(select_as(input, exprs, schema)?);
            Ok(LogicalPlan::Limit(limit))
        }
        LogicalPlan::Projection(projection) => {
            // Each of `exprs` is a column of the projection, cast or not, renamed: the
            // projection's own expression for it, unnamed, in its place.
            let own = |e: Expr| -> Expr {
                let Expr::Column(c) = &e else { return e };
                let i = projection.schema.index_of_column(c).ok();
                match i.map(|i| projection.expr[i].clone()) {
                    Some(Expr::Alias(alias)) => *alias.expr,
                    Some(inner) => inner,
                    None => e,
                }
            };
            let exprs = exprs
                .into_iter()
                .map(|e| {
                    e.transform(|e| Ok(Transformed::yes(own(e))))
                        .map(|t| t.data)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(LogicalPlan::Projection(Projection::try_new_with_schema(
                exprs,
                projection.input,
                schema,
            )?))
        }
        plan => Ok(LogicalPlan::Projection(Projection::try_new_with_schema(
            exprs,
            Arc::new(plan),
            schema,
        )?)),
    }
}

/// `plan` with its scans reading the tables by their names in the database, each under the
/// name the plan's columns are qualified by (its alias, else the last part of the name Strata
/// knows it by), and their filters' columns unqualified (the alias qualifies them in the
/// SELECT).
fn as_remote(plan: LogicalPlan) -> Result<LogicalPlan> {
    let plan = plan
        .transform_up(|node| {
            if matches!(node, LogicalPlan::SubqueryAlias(_)) {
                return Ok(Transformed::no(node));
            }
            node.map_children(|child| match child {
                LogicalPlan::Projection(p) if pruning(&p) => {
                    Ok(Transformed::yes(Arc::unwrap_or_clone(p.input)))
                }
                child => Ok(Transformed::no(child)),
            })
        })?
        .data;
    plan.transform_down(|node| match node {
        LogicalPlan::SubqueryAlias(alias) if matches!(*alias.input, LogicalPlan::TableScan(_)) => {
            let scan = match Arc::unwrap_or_clone(alias.input) {
                LogicalPlan::TableScan(scan) => remote_scan(scan)?,
                _ => unreachable!("matched above"),
            };
            let aliased = SubqueryAlias::try_new(Arc::new(scan), alias.alias)?;
            Ok(Transformed::new(
                LogicalPlan::SubqueryAlias(aliased),
                true,
                TreeNodeRecursion::Jump,
            ))
        }
        LogicalPlan::TableScan(scan) => {
            let name = scan.table_name.table().to_string();
            let aliased = SubqueryAlias::try_new(Arc::new(remote_scan(scan)?), name)?;
            Ok(Transformed::new(
                LogicalPlan::SubqueryAlias(aliased),
                true,
                TreeNodeRecursion::Jump,
            ))
        }
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

/// `scan` reading its table by the database's name for it. A scan with filters becomes a
/// SELECT of its own, filtered there: the unparser would put them into the ON condition of
/// an outer join above, which keeps the rows they drop on the join's preserved side. So
/// does a scan of columns read through a cast, which the rest of the SELECT sees cast.
fn remote_scan(scan: TableScan) -> Result<LogicalPlan> {
    let provider = source_as_provider(&scan.source)?;
    let Some(table) = provider.downcast_ref::<DatabaseTable>() else {
        return internal_err!("a scan sent to a database reads a table of another kind");
    };
    let name = match table.remote() {
        Some((reference, _)) => reference.clone(),
        None => scan.table_name.clone(),
    };
    let shown: Vec<usize> = scan
        .projection
        .clone()
        .unwrap_or_else(|| (0..scan.source.schema().fields().len()).collect());
    let predicate = conjunction(scan.filters.into_iter().map(unnormalize_col));
    if predicate.is_none() && !table.casts_any(&shown) {
        let scan = TableScanBuilder::new(name, scan.source)
            .with_projection(scan.projection)
            .with_fetch(scan.fetch)
            .build()?;
        return Ok(LogicalPlan::TableScan(scan));
    }
    table.filtered_plan(name, scan.source, &shown, predicate)
}
