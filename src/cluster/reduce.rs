//! Semi-join reduction on a cluster: the rows of a join's large side that no key of its
//! small, filtered side can match are dropped where that large side is read, before they are
//! aggregated and shuffled to the join.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{JoinSide, JoinType, NullEquality};
use datafusion::config::ConfigOptions;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_expr_common::physical_expr::is_volatile;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::utils::build_join_schema;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};

use super::views::CompactViewsExec;
use crate::optimizer::{StrataOptions, estimated_rows, with_children};

/// How many times the rows of the large side's scan must outnumber the filtered keys.
const MIN_RATIO: usize = 10;

/// Puts a broadcast semi join with the keys of a small filtered table right above the scan
/// that the other side of a hash join reads its key from, where a stage boundary or an
/// aggregation lies between that scan and the join.
///
/// In one process a join's runtime filter reaches such a scan (see
/// [`crate::optimizer::JoinFiltersAtScan`]). On a cluster it cannot: the scan runs in an
/// earlier stage than the join, so every row is read, aggregated and shuffled before the
/// join drops it (TPC-H q17 aggregates all 6 M `lineitem` rows by part for the 204 parts it
/// keeps; q20 its 0.9 M rows of 1994). The keys the join can match come from a table read
/// under a filter (`part WHERE p_brand = ...`): the rule finds that table by following the
/// join key down the other side, through projections, filters, aggregations (a group key)
/// and inner or semi joins (either side of an equality), reads it once more in a stage of its
/// own, and broadcasts its keys to the scan's stage. Only where the join drops the rows
/// (one side of an inner or semi join, the non-preserved side of an outer join, the filter
/// side of an anti join), keys compare without `NULL` matching `NULL`, the keys fit under
/// Ballista's broadcast threshold, the scan is estimated at 500,000 rows or more and ten
/// times the keys' rows, and no limit lies between it and the join. Joins between the scan
/// and the join do not count as a reason: they drop their own rows in the same stage.
#[derive(Debug, Default)]
pub struct SemiJoinReduction;

impl PhysicalOptimizerRule for SemiJoinReduction {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some((options, threshold)) = broadcasting(config, |o| o.semi_join_reduction) else {
            return Ok(plan);
        };
        // Reading the keys' table again costs a stage of its own: TPC-H q07's 150,000
        // customers reduced by two nations took longer.
        let min_rows = options.semi_join_reduction_min_rows;
        each_hash_join(plan, |join| reduced(join, threshold, min_rows))
    }

    fn name(&self) -> &str {
        "SemiJoinReduction"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Strata's settings and Ballista's broadcast threshold, when the rule that `on` reads is
/// on and Ballista broadcasts at all.
fn broadcasting(
    config: &ConfigOptions,
    on: impl Fn(&StrataOptions) -> bool,
) -> Option<(&StrataOptions, usize)> {
    let options = config.extensions.get::<StrataOptions>()?;
    let threshold = super::joins::broadcast_threshold(config);
    (on(options) && threshold > 0).then_some((options, threshold))
}

/// `plan` with each hash join, from the top down, replaced by what `rewrite` makes of it
/// (the join as it was where it returns `None`).
fn each_hash_join(
    plan: Arc<dyn ExecutionPlan>,
    rewrite: impl Fn(&HashJoinExec) -> Result<Option<Arc<dyn ExecutionPlan>>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_down(|node| {
        let Some(join) = node.downcast_ref::<HashJoinExec>() else {
            return Ok(Transformed::no(node));
        };
        match rewrite(join)? {
            Some(plan) => Ok(Transformed::yes(plan)),
            None => Ok(Transformed::no(node)),
        }
    })
    .map(|t| t.data)
}

/// `plan` over a new input `child`, if there is one.
fn rebuilt(
    plan: &Arc<dyn ExecutionPlan>,
    child: Option<Arc<dyn ExecutionPlan>>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    match child {
        Some(child) => Ok(Some(with_children(Arc::clone(plan), vec![child])?)),
        None => Ok(None),
    }
}

/// Whether the join drops the rows of its (left, right) side whose key matches nothing on
/// the other side, so that they may be dropped sooner.
pub(super) fn droppable_sides(join_type: JoinType) -> (bool, bool) {
    match join_type {
        JoinType::Inner | JoinType::LeftSemi | JoinType::RightSemi => (true, true),
        JoinType::Left | JoinType::LeftAnti | JoinType::LeftMark => (false, true),
        JoinType::Right | JoinType::RightAnti | JoinType::RightMark => (true, false),
        JoinType::Full => (false, false),
    }
}

/// `join` with one of its sides reduced by the keys of the other, if a key pair allows it.
fn reduced(
    join: &HashJoinExec,
    threshold: usize,
    min_rows: usize,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if join.null_equality() != NullEquality::NullEqualsNothing || join.null_aware {
        return Ok(None);
    }
    let (left_droppable, right_droppable) = droppable_sides(*join.join_type());
    for (l, r) in join.on() {
        let (Some(l), Some(r)) = (column(l), column(r)) else {
            continue;
        };
        for (reduce_right, droppable) in [(true, right_droppable), (false, left_droppable)] {
            if !droppable {
                continue;
            }
            let (target, key, other, other_key) = if reduce_right {
                (join.right(), r, join.left(), l)
            } else {
                (join.left(), l, join.right(), r)
            };
            let Some((source, source_key)) = keys_source(other, other_key) else {
                continue;
            };
            // Only the key column is broadcast.
            let (plan, column): (Arc<dyn ExecutionPlan>, usize) = if source.schema().fields().len()
                == 1
            {
                (source, source_key)
            } else {
                let name = source.schema().field(source_key).name().clone();
                let key = Arc::new(Column::new(&name, source_key));
                let projection = ProjectionExec::try_new([ProjectionExpr::new(key, name)], source)?;
                (Arc::new(projection), 0)
            };
            let keys = Keys {
                plan,
                column,
                min_rows,
            };
            let Some(keys_bytes) = super::joins::broadcast_bytes(&keys.plan)? else {
                continue;
            };
            if keys_bytes >= threshold {
                continue;
            }
            let Some(side) = reduce(target, key, false, &keys)? else {
                continue;
            };
            let children = if reduce_right {
                vec![Arc::clone(join.left()), side]
            } else {
                vec![side, Arc::clone(join.right())]
            };
            return Ok(Some(
                join.builder().with_new_children(children)?.build_exec()?,
            ));
        }
    }
    Ok(None)
}

/// The index of a plain column reference.
pub(super) fn column(expr: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    expr.downcast_ref::<Column>().map(Column::index)
}

/// Nodes that pass their input's rows on unchanged, column for column.
pub(super) fn passes_rows_on(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<RepartitionExec>().is_some()
        || plan.downcast_ref::<CoalescePartitionsExec>().is_some()
        || plan.downcast_ref::<CooperativeExec>().is_some()
        || plan.downcast_ref::<CompactViewsExec>().is_some()
}

/// The column of `plan`'s input that its output column `col` is, for projections and
/// filters that pass it on as it is.
pub(super) fn input_column(plan: &Arc<dyn ExecutionPlan>, col: usize) -> Option<usize> {
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let expr = &projection.expr().get(col)?.expr;
        return column(expr);
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        return match filter.projection() {
            Some(p) => p.get(col).copied(),
            None => Some(col),
        };
    }
    None
}

/// The side and column of a join's input that its output column `col` comes from.
pub(super) fn join_input_column(join: &HashJoinExec, col: usize) -> Option<(JoinSide, usize)> {
    let (_, indices) = build_join_schema(
        &join.left().schema(),
        &join.right().schema(),
        join.join_type(),
    );
    let at = match &join.projection {
        Some(p) => *p.get(col)?,
        None => col,
    };
    let index = indices.get(at)?;
    Some((index.side, index.index))
}

/// A plan that reads one table under a filter, with only projections and filters over the
/// scan, none of them volatile: cheap to read twice, and likely to keep few keys.
fn is_filtered_scan(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut node = plan;
    let mut filtered = false;
    loop {
        if node.downcast_ref::<DataSourceExec>().is_some() {
            return filtered;
        }
        if let Some(filter) = node.downcast_ref::<FilterExec>() {
            if is_volatile(filter.predicate()) {
                return false;
            }
            filtered = true;
            node = filter.input();
        } else if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
            if projection.expr().iter().any(|e| is_volatile(&e.expr)) {
                return false;
            }
            node = projection.input();
        } else {
            return false;
        }
    }
}

/// A filtered scan (see [`is_filtered_scan`]) whose column holds every value other than
/// `NULL` that column `col` of `plan` can hold, found by following `col` down `plan`.
fn keys_source(
    plan: &Arc<dyn ExecutionPlan>,
    col: usize,
) -> Option<(Arc<dyn ExecutionPlan>, usize)> {
    if passes_rows_on(plan) {
        return keys_source(plan.children()[0], col);
    }
    if is_filtered_scan(plan) {
        return Some((Arc::clone(plan), col));
    }
    if let Some(input) = input_column(plan, col) {
        return keys_source(plan.children()[0], input);
    }
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        let groups = aggregate.group_expr();
        if !groups.is_single() {
            return None;
        }
        let expr = &groups.expr().get(col)?.0;
        return keys_source(aggregate.input(), column(expr)?);
    }
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        let (side, index) = join_input_column(join, col)?;
        let input = match side {
            JoinSide::Left => join.left(),
            JoinSide::Right => join.right(),
            JoinSide::None => return None,
        };
        if let Some(found) = keys_source(input, index) {
            return Some(found);
        }
        // A key of a join whose output rows all found a match on the other side holds only
        // values of the other side's key too.
        let matched = matches!(
            join.join_type(),
            JoinType::Inner | JoinType::LeftSemi | JoinType::RightSemi
        ) && join.null_equality() == NullEquality::NullEqualsNothing;
        if !matched {
            return None;
        }
        let other = join.on().iter().find_map(|(l, r)| match side {
            JoinSide::Left if column(l) == Some(index) => column(r),
            JoinSide::Right if column(r) == Some(index) => column(l),
            _ => None,
        })?;
        let other_side = if side == JoinSide::Left {
            join.right()
        } else {
            join.left()
        };
        return keys_source(other_side, other);
    }
    None
}

/// The keys a side is reduced by: a column of a filtered scan, and the fewest rows a scan
/// must be estimated at to be reduced.
struct Keys {
    plan: Arc<dyn ExecutionPlan>,
    column: usize,
    min_rows: usize,
}

/// A semi join reduction inserted earlier: a broadcast right semi join over a scan.
fn is_reduction(join: &HashJoinExec) -> bool {
    *join.partition_mode() == PartitionMode::CollectLeft
        && *join.join_type() == JoinType::RightSemi
        && (join.right().downcast_ref::<DataSourceExec>().is_some()
            || join.right().downcast_ref::<FilterExec>().is_some())
}

/// `plan` with the rows whose column `col` holds no key of `keys` dropped right above the
/// scan that column comes from, if a stage boundary or an aggregation lies between
/// (`crossed`) and the scan is large enough for it to pay.
fn reduce(
    plan: &Arc<dyn ExecutionPlan>,
    col: usize,
    crossed: bool,
    keys: &Keys,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let scan = plan.downcast_ref::<DataSourceExec>().is_some()
        || plan
            .downcast_ref::<FilterExec>()
            .is_some_and(|f| f.input().downcast_ref::<DataSourceExec>().is_some());
    if scan {
        return semi_join(plan, col, crossed, keys);
    }
    // Rows dropped below a limit would change which rows it keeps.
    if plan.fetch().is_some() {
        return Ok(None);
    }
    if passes_rows_on(plan) {
        let crossed = crossed
            || plan.downcast_ref::<RepartitionExec>().is_some()
            || plan.downcast_ref::<CoalescePartitionsExec>().is_some();
        return rebuilt(plan, reduce(plan.children()[0], col, crossed, keys)?);
    }
    if let Some(input) = input_column(plan, col) {
        return rebuilt(plan, reduce(plan.children()[0], input, crossed, keys)?);
    }
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        let groups = aggregate.group_expr();
        if !groups.is_single() || aggregate.limit_options().is_some() {
            return Ok(None);
        }
        let Some(input) = groups.expr().get(col).and_then(|(e, _)| column(e)) else {
            return Ok(None);
        };
        return rebuilt(plan, reduce(aggregate.input(), input, true, keys)?);
    }
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        if is_reduction(join) {
            return Ok(None);
        }
        let Some((side, index)) = join_input_column(join, col) else {
            return Ok(None);
        };
        let (target, other) = match side {
            JoinSide::Left => (join.left(), join.right()),
            JoinSide::Right => (join.right(), join.left()),
            JoinSide::None => return Ok(None),
        };
        // A join in between, in the same stage, does not make the reduction pay: it drops
        // its own rows (TPC-H q08's `lineitem` reduced by two years of orders before its
        // join with 0.7% of the parts took longer).
        let Some(target) = reduce(target, index, crossed, keys)? else {
            return Ok(None);
        };
        let children = match side {
            JoinSide::Left => vec![target, Arc::clone(other)],
            _ => vec![Arc::clone(other), target],
        };
        return Ok(Some(
            join.builder().with_new_children(children)?.build_exec()?,
        ));
    }
    Ok(None)
}

/// `scan` under a broadcast right semi join with the keys of `keys`, where it pays.
fn semi_join(
    scan: &Arc<dyn ExecutionPlan>,
    col: usize,
    crossed: bool,
    keys: &Keys,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Keys {
        plan: source,
        column: key,
        min_rows,
    } = keys;
    if !crossed || scan.output_ordering().is_some() {
        return Ok(None);
    }
    let (field, key_field) = (
        scan.schema().field(col).clone(),
        source.schema().field(*key).clone(),
    );
    if field.data_type() != key_field.data_type() {
        return Ok(None);
    }
    let (Some(rows), Some(key_rows)) = (estimated_rows(scan)?, estimated_rows(source)?) else {
        return Ok(None);
    };
    if rows < *min_rows || rows < key_rows.max(1).saturating_mul(MIN_RATIO) {
        return Ok(None);
    }
    let build: Arc<dyn ExecutionPlan> = if source.output_partitioning().partition_count() > 1 {
        Arc::new(CoalescePartitionsExec::new(Arc::clone(source)))
    } else {
        Arc::clone(source)
    };
    let on = vec![(
        Arc::new(Column::new(key_field.name(), *key)) as Arc<dyn PhysicalExpr>,
        Arc::new(Column::new(field.name(), col)) as Arc<dyn PhysicalExpr>,
    )];
    Ok(Some(Arc::new(keeping_matches(
        build,
        Arc::clone(scan),
        on,
    )?)))
}

/// A join that keeps the rows of `rows` whose keys match one of `keys` (a right semi join
/// that builds its table from `keys`, whole, in each task).
pub(super) fn keeping_matches(
    keys: Arc<dyn ExecutionPlan>,
    rows: Arc<dyn ExecutionPlan>,
    on: Vec<(Arc<dyn PhysicalExpr>, Arc<dyn PhysicalExpr>)>,
) -> Result<HashJoinExec> {
    HashJoinExec::try_new(
        keys,
        rows,
        on,
        None,
        &JoinType::RightSemi,
        None,
        PartitionMode::CollectLeft,
        NullEquality::NullEqualsNothing,
        false,
    )
}

/// Turns a partitioned semi or anti join whose filter side was reduced (see
/// [`SemiJoinReduction`]) into a broadcast of that reduced side, with the kept side read
/// where it lies.
///
/// An `EXISTS` or `NOT EXISTS` keeps rows of its outer side, so DataFusion builds on that
/// side, and on a cluster such a join is partitioned: both sides are shuffled by the key.
/// Once the other side is reduced by the outer side's keys it holds few rows (TPC-H q04:
/// the late lines of one quarter's orders; q22: the orders of one set of customers), and
/// it can be the side that is broadcast instead, as a right semi or anti join that keeps
/// the rows of its probe side: the outer side is then neither shuffled nor a stage of its
/// own. Only where the reduced side is estimated under Ballista's broadcast threshold (its
/// scan's bytes, times the share of its table that the keys' filter keeps), for joins
/// whose `NULL` keys match nothing, and where a shuffle or a merge into one partition above
/// the join means nothing relies on its partitioning.
#[derive(Debug, Default)]
pub struct BroadcastReducedSides;

impl PhysicalOptimizerRule for BroadcastReducedSides {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some((_, threshold)) = broadcasting(config, |o| o.broadcast_reduced_sides) else {
            return Ok(plan);
        };
        plan.transform_up(|node| {
            let redistributes = node.downcast_ref::<RepartitionExec>().is_some()
                || node.downcast_ref::<CoalescePartitionsExec>().is_some();
            if !redistributes {
                return Ok(Transformed::no(node));
            }
            match flipped_below(node.children()[0], threshold)? {
                Some(child) => Ok(Transformed::yes(with_children(node, vec![child])?)),
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "BroadcastReducedSides"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with the join [`flipped`] makes of the first hash join under it, through nodes
/// that neither need nor pass on a partitioning of their own.
fn flipped_below(
    plan: &Arc<dyn ExecutionPlan>,
    threshold: usize,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        return flipped(join, threshold);
    }
    let partial = plan
        .downcast_ref::<AggregateExec>()
        .is_some_and(|a| *a.mode() == AggregateMode::Partial);
    if !partial && !row_by_row(plan) {
        return Ok(None);
    }
    rebuilt(plan, flipped_below(plan.children()[0], threshold)?)
}

/// Projections, filters and cooperative yields: nodes that take their input's rows one by
/// one, in the input's partitions.
fn row_by_row(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<ProjectionExec>().is_some()
        || plan.downcast_ref::<FilterExec>().is_some()
        || plan.downcast_ref::<CooperativeExec>().is_some()
}

/// A partitioned left semi or anti join over a reduced right side, as a right semi or anti
/// join that broadcasts that side and reads its left side unshuffled.
fn flipped(join: &HashJoinExec, threshold: usize) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if *join.partition_mode() != PartitionMode::Partitioned
        || !matches!(join.join_type(), JoinType::LeftSemi | JoinType::LeftAnti)
        || join.null_aware
        || join.null_equality() != NullEquality::NullEqualsNothing
    {
        return Ok(None);
    }
    let (Some(kept), Some(reduced)) = (unshuffled(join.left()), unshuffled(join.right())) else {
        return Ok(None);
    };
    match reduced_bytes(&reduced)? {
        Some(bytes) if bytes < threshold => {}
        _ => return Ok(None),
    }
    let build: Arc<dyn ExecutionPlan> = if reduced.output_partitioning().partition_count() > 1 {
        Arc::new(CoalescePartitionsExec::new(reduced))
    } else {
        reduced
    };
    // The same join with its build side collected, then its sides swapped.
    let collected = join
        .builder()
        .with_new_children(vec![kept, build])?
        .with_partition_mode(PartitionMode::CollectLeft)
        .build()?;
    Ok(Some(collected.swap_inputs(PartitionMode::CollectLeft)?))
}

/// The input of a hash shuffle.
fn unshuffled(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    let shuffle = plan.downcast_ref::<RepartitionExec>()?;
    matches!(shuffle.partitioning(), Partitioning::Hash(..)).then(|| Arc::clone(shuffle.input()))
}

/// The bytes `plan` is estimated to return once the semi join reduction at its bottom has
/// dropped its rows: the reduced scan's bytes times the share of the keys' table that its
/// filter keeps. `None` where `plan` is not such a reduction under projections and filters.
fn reduced_bytes(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<usize>> {
    let mut node = Arc::clone(plan);
    loop {
        if let Some(join) = node.downcast_ref::<HashJoinExec>() {
            if !is_reduction(join) {
                return Ok(None);
            }
            let keys = join.left();
            let (Some(kept), Some(table), Some(bytes)) = (
                estimated_rows(keys)?,
                scan_rows(keys)?,
                super::joins::broadcast_bytes(join.right())?,
            ) else {
                return Ok(None);
            };
            return Ok(Some(bytes.saturating_mul(kept) / table.max(1)));
        }
        if !row_by_row(&node) {
            return Ok(None);
        }
        node = Arc::clone(node.children()[0]);
    }
}

/// The estimated rows of the table `plan` reads, before any filter over its scan.
fn scan_rows(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<usize>> {
    let mut node = Arc::clone(plan);
    while node.downcast_ref::<DataSourceExec>().is_none() {
        match node.children().as_slice() {
            [child] => node = Arc::clone(child),
            _ => return Ok(None),
        }
    }
    estimated_rows(&node)
}

/// Moves a broadcast semi or anti join down the other side of the join, to where the
/// columns it tests are read: below inner joins (either side), the kept side of outer, semi
/// and anti joins, aggregations grouped by those columns, projections, filters and shuffles.
///
/// DataFusion keeps such a join where the query's `IN`, `EXISTS` or `NOT EXISTS` put it,
/// above the joins of the query's other tables. In one process the joins below it see its
/// runtime filter (see [`crate::optimizer::JoinFiltersAtScan`]); on a cluster they run in
/// earlier stages, so every row it is about to drop is joined, written and read back first
/// (TPC-H q18: its 57 orders out of 1.5 M were known after the first stage, but all 1.5 M
/// orders were joined to their customers, written, and broadcast to the stage that joins
/// them to `lineitem`). The join tests each row on its own columns against keys already
/// collected, so testing it earlier drops the same rows. Only joins whose keys Ballista
/// broadcasts, without a filter of their own; never below a limit, nor where a sorted
/// input would lose its order.
#[derive(Debug, Default)]
pub struct SemiJoinsFirst;

impl PhysicalOptimizerRule for SemiJoinsFirst {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some((_, threshold)) = broadcasting(config, |o| o.semi_joins_first) else {
            return Ok(plan);
        };
        each_hash_join(plan, |join| moved_down(join, threshold))
    }

    fn name(&self) -> &str {
        "SemiJoinsFirst"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The sides of a join whose rows reach its output unchanged and only there, so that a
/// test of their own columns may be made before the join: (left, right).
fn kept_sides(join_type: JoinType) -> (bool, bool) {
    match join_type {
        JoinType::Inner => (true, true),
        JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => {
            (true, false)
        }
        JoinType::Right | JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => {
            (false, true)
        }
        JoinType::Full => (false, false),
    }
}

/// `join` (a broadcast semi or anti join) testing `plan` on its columns `cols` instead of the
/// rows it tested.
fn tested_at(
    join: &HashJoinExec,
    plan: &Arc<dyn ExecutionPlan>,
    cols: &[usize],
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let schema = plan.schema();
    let right = join.right().schema();
    let mut on = Vec::with_capacity(cols.len());
    for ((keys, tested), &col) in join.on().iter().zip(cols) {
        let field = schema.field(col);
        let Some(was) = column(tested) else {
            return Ok(None);
        };
        if field.data_type() != right.field(was).data_type() {
            return Ok(None);
        }
        let tested: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), col));
        on.push((Arc::clone(keys), tested));
    }
    let moved: Arc<dyn ExecutionPlan> = Arc::new(HashJoinExec::try_new(
        Arc::clone(join.left()),
        Arc::clone(plan),
        on,
        None,
        join.join_type(),
        None,
        PartitionMode::CollectLeft,
        join.null_equality(),
        false,
    )?);
    // A sorted input stays sorted through the join, where what is above relies on it.
    if moved.output_ordering() != plan.output_ordering() {
        return Ok(None);
    }
    Ok(Some(moved))
}

/// `join` moved below the plan it tests, if it is a broadcast semi or anti join that can
/// move at all.
fn moved_down(join: &HashJoinExec, threshold: usize) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if *join.partition_mode() != PartitionMode::CollectLeft
        || !matches!(join.join_type(), JoinType::RightSemi | JoinType::RightAnti)
        || join.filter().is_some()
        || join.null_aware
        || is_reduction(join)
    {
        return Ok(None);
    }
    let Some(cols) = join
        .on()
        .iter()
        .map(|(_, r)| column(r))
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    match super::joins::broadcast_bytes(join.left())? {
        Some(bytes) if bytes < threshold => {}
        _ => return Ok(None),
    }
    let Some(moved) = sink(join.right(), &cols, join)? else {
        return Ok(None);
    };
    match &join.projection {
        None => Ok(Some(moved)),
        Some(columns) => {
            let schema = moved.schema();
            let exprs = columns.iter().map(|&i| {
                let name = schema.field(i).name().clone();
                let col: Arc<dyn PhysicalExpr> = Arc::new(Column::new(&name, i));
                ProjectionExpr::new(col, name)
            });
            Ok(Some(Arc::new(ProjectionExec::try_new(exprs, moved)?)))
        }
    }
}

/// `plan` with `test` (a broadcast semi or anti join) made on its input below it instead of
/// on its output columns `cols`, as far down as the columns can be followed; `None` where it
/// cannot go below `plan`.
fn sink(
    plan: &Arc<dyn ExecutionPlan>,
    cols: &[usize],
    test: &HashJoinExec,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    // The test at `child`'s columns `cols`: further down if it can go, else right above it.
    let below = |child: &Arc<dyn ExecutionPlan>, cols: &[usize]| match sink(child, cols, test)? {
        Some(moved) => Ok(Some(moved)),
        None => tested_at(test, child, cols),
    };
    // Rows dropped below a limit would change which rows it keeps.
    if plan.fetch().is_some() {
        return Ok(None);
    }
    if passes_rows_on(plan) {
        return rebuilt(plan, below(plan.children()[0], cols)?);
    }
    if let Some(inputs) = cols
        .iter()
        .map(|&c| input_column(plan, c))
        .collect::<Option<Vec<_>>>()
    {
        return rebuilt(plan, below(plan.children()[0], &inputs)?);
    }
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        let groups = aggregate.group_expr();
        if !groups.is_single() || aggregate.limit_options().is_some() {
            return Ok(None);
        }
        let Some(inputs) = cols
            .iter()
            .map(|&c| groups.expr().get(c).and_then(|(e, _)| column(e)))
            .collect::<Option<Vec<_>>>()
        else {
            return Ok(None);
        };
        return rebuilt(plan, below(aggregate.input(), &inputs)?);
    }
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        let Some(found) = cols
            .iter()
            .map(|&c| join_input_column(join, c))
            .collect::<Option<Vec<_>>>()
        else {
            return Ok(None);
        };
        let side = found[0].0;
        if found.iter().any(|(s, _)| *s != side) {
            return Ok(None);
        }
        let inputs: Vec<usize> = found.iter().map(|(_, i)| *i).collect();
        let (left_kept, right_kept) = kept_sides(*join.join_type());
        let mut children = vec![Arc::clone(join.left()), Arc::clone(join.right())];
        let at = match side {
            JoinSide::Left if left_kept => 0,
            JoinSide::Right if right_kept => 1,
            _ => return Ok(None),
        };
        let Some(moved) = below(&children[at], &inputs)? else {
            return Ok(None);
        };
        children[at] = moved;
        return Ok(Some(
            join.builder().with_new_children(children)?.build_exec()?,
        ));
    }
    Ok(None)
}
