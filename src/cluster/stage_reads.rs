//! Stages whose output more than one later stage reads. Ballista's planner gives each stage
//! the one reader its place in the plan gives it; two kinds of plans get a second one here:
//!
//! - a subplan computed more than once (a common table expression used twice) runs as one
//!   stage, whose output each use reads (TPC-H q15 aggregated `lineitem` twice on a cluster
//!   where one process aggregates it once, see [`crate::optimizer::ShareSubplans`]);
//! - the keys that the small side of a partitioned join writes to its shuffle are read once
//!   more, by the stage that reads the join's large side, which drops the rows they cannot
//!   match before it shuffles them (TPC-H q21 shuffled all 6 M `lineitem` rows by order for a
//!   join that keeps those of 76,000 orders).
//!
//! The planner cannot be told which stage a read names: a read of a stage's output is an
//! `UnresolvedShuffleExec` with the stage's number. Which number the planner gives a stage
//! is found by planning the query once beforehand with placeholder reads in their places,
//! which take no number of their own.

use std::fmt;
use std::sync::Arc;

use ballista_core::JobId;
use ballista_core::execution_plans::{ShuffleWriter, UnresolvedShuffleExec};
use ballista_scheduler::planner::{DefaultDistributedPlanner, DistributedPlanner};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinSide, NullEquality, Statistics};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, StatisticsArgs, StatisticsContext, displayable,
};

use super::reduce::{
    column, droppable_sides, input_column, join_input_column, keeping_matches, passes_rows_on,
};
use crate::optimizer::{
    StrataOptions, estimated_rows, is_recursive, only_child, repeated, row_width, same_each_run,
    setting_on, with_children,
};

/// Placeholder stage numbers start here, far above any a planner gives.
const PLACEHOLDER: usize = 1 << 40;

/// How many times the rows of a join's large side must outnumber its small side's.
const MIN_RATIO: usize = 10;

/// Plans reads of a stage's output by more than one later stage (see the module).
///
/// Subplans read twice: only those that run as one stage of their own, whole (no stage
/// boundary inside them), ending in a hash shuffle, whose copies print the same and compute
/// the same rows (files only, nothing volatile; see [`crate::optimizer::ShareSubplans`]).
/// `SET strata.share_subplans = false` turns this off, as in local mode.
///
/// Keys read twice: for a partitioned hash join (one Ballista would not broadcast) whose
/// large side is a hash shuffle estimated at `strata.semi_join_reduction_min_rows` rows or
/// more and ten times the small side, where the join drops that side's rows that no key
/// matches (as [`super::reduce::SemiJoinReduction`] asks) and the small side's keys can be
/// followed down to the shuffle that writes them, estimated under Ballista's broadcast
/// threshold. The large side's stage then broadcasts those keys and keeps its rows that
/// match one. `SET strata.semi_join_reduction = false` turns this off with the other
/// reductions.
///
/// Only where the planner, asked beforehand, plans each stage read this way as one stage;
/// otherwise the plan is left as it is. The scheduler's last physical rule: the plan it
/// returns is the one Ballista's planner splits into stages.
#[derive(Debug, Default)]
pub struct StageReads;

/// Where a placeholder read's stage is.
#[derive(Debug, Clone)]
enum Source {
    /// The stage that writes a hash shuffle printing as this (see [`shuffled_subplan`]).
    Copy(String),
    /// The stage read at `path` (child by child) below the one node printing as `node`.
    Below { node: String, path: Vec<usize> },
}

impl PhysicalOptimizerRule for StageReads {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if is_recursive(&plan) {
            return Ok(plan);
        }
        let mut sources = Vec::new();
        let mut placeheld = Arc::clone(&plan);
        // Reductions first: a large side they reduce is no longer a copy of anything, so no
        // stage comes to read its own reader.
        if let Some((min_rows, threshold)) = reducing(config) {
            placeheld = reduced_by_stages(placeheld, min_rows, threshold, &mut sources)?;
        }
        if setting_on(config, |o| o.share_subplans) {
            placeheld = shared_copies(placeheld, &mut sources)?;
        }
        if sources.is_empty() {
            return Ok(plan);
        }
        let Some(numbers) = stage_numbers(&placeheld, &sources, config) else {
            return Ok(plan);
        };
        let planned = placeheld
            .transform_up(|node| {
                let Some(read) = node.downcast_ref::<UnresolvedShuffleExec>() else {
                    return Ok(Transformed::no(node));
                };
                let Some(stage) = read
                    .stage_id
                    .checked_sub(PLACEHOLDER)
                    .and_then(|i| numbers.get(i))
                else {
                    return Ok(Transformed::no(node));
                };
                let read = UnresolvedShuffleExec::new(
                    *stage,
                    read.schema(),
                    read.properties().output_partitioning().clone(),
                );
                Ok(Transformed::yes(Arc::new(read) as Arc<dyn ExecutionPlan>))
            })?
            .data;
        // Placeholders take no stage numbers, so the planner numbers the plan with the real
        // reads as it did with the placeholders; checked all the same.
        match stage_numbers(&planned, &sources, config) {
            Some(again) if again == numbers => Ok(planned),
            _ => Ok(plan),
        }
    }

    fn name(&self) -> &str {
        "stage_reads"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A placeholder read of the stage that `source` is planned as, for a node of `like`'s
/// schema and partitioning.
fn placeholder(
    sources: &mut Vec<Source>,
    source: Source,
    like: &Arc<dyn ExecutionPlan>,
) -> Arc<dyn ExecutionPlan> {
    let read = UnresolvedShuffleExec::new(
        PLACEHOLDER + sources.len(),
        like.schema(),
        like.output_partitioning().clone(),
    );
    sources.push(source);
    Arc::new(read)
}

/// The number of the stage each of `sources` is planned as, in `plan`; `None` when
/// Ballista's planner fails on the plan or one of them is not found exactly once.
fn stage_numbers(
    plan: &Arc<dyn ExecutionPlan>,
    sources: &[Source],
    config: &ConfigOptions,
) -> Option<Vec<usize>> {
    let job = JobId::new("strata-stage-reads");
    let stages = DefaultDistributedPlanner::new()
        .plan_query_stages(&job, Arc::clone(plan), config)
        .ok()?;
    sources
        .iter()
        .map(|source| match source {
            Source::Copy(key) => {
                let mut found = stages
                    .iter()
                    .filter(|s| written(s.as_ref()).as_ref() == Some(key));
                let stage = found.next()?;
                found.next().is_none().then(|| stage.stage_id())
            }
            Source::Below { node, path } => {
                let mut found = Vec::new();
                for stage in &stages {
                    for input in stage.children() {
                        input
                            .apply(|n| {
                                if one_line(n.as_ref()) == *node {
                                    found.push(Arc::clone(n));
                                }
                                Ok(TreeNodeRecursion::Continue)
                            })
                            .ok()?;
                    }
                }
                let [mut at] = <[_; 1]>::try_from(found).ok()?;
                for &child in path {
                    at = Arc::clone(at.children().get(child)?);
                }
                at.downcast_ref::<UnresolvedShuffleExec>()
                    .map(|r| r.stage_id)
            }
        })
        .collect()
}

fn one_line(plan: &dyn ExecutionPlan) -> String {
    displayable(plan).one_line().to_string()
}

// Subplans read twice.

/// `plan` with every later copy of a hash-shuffled subplan a placeholder read of the first.
fn shared_copies(
    plan: Arc<dyn ExecutionPlan>,
    sources: &mut Vec<Source>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let seen = repeated(&plan, shuffled_subplan)?;
    if seen.is_empty() {
        return Ok(plan);
    }
    let mut firsts: Vec<String> = Vec::new();
    Ok(plan
        .transform_down(|node| {
            let Some(key) = shuffled_subplan(&node).filter(|k| seen.contains(k)) else {
                return Ok(Transformed::no(node));
            };
            if !firsts.contains(&key) {
                firsts.push(key);
                return Ok(Transformed::new(node, false, TreeNodeRecursion::Jump));
            }
            let read = placeholder(sources, Source::Copy(key), &node);
            Ok(Transformed::new(read, true, TreeNodeRecursion::Jump))
        })?
        .data)
}

/// What identifies a stage that writes its input shuffled by hash, as [`shuffled_subplan`]
/// identifies the subplan it was planned from.
fn written(stage: &dyn ShuffleWriter) -> Option<String> {
    let partitioning = stage.shuffle_output_partitioning()?;
    let input = stage.children().into_iter().next()?;
    key(partitioning, input.as_ref())
}

/// What identifies `node` when it is a hash shuffle of a subplan that is a stage of its own
/// as a whole and computes the same rows each time it runs.
fn shuffled_subplan(node: &Arc<dyn ExecutionPlan>) -> Option<String> {
    let shuffle = node.downcast_ref::<RepartitionExec>()?;
    let input = shuffle.input();
    if !same_each_run(input) || input.exists(|n| Ok(starts_a_stage(n.as_ref()))).ok()? {
        return None;
    }
    key(shuffle.partitioning(), input.as_ref())
}

fn key(partitioning: &Partitioning, input: &dyn ExecutionPlan) -> Option<String> {
    matches!(partitioning, Partitioning::Hash(_, _)).then(|| {
        format!(
            "{partitioning}\n{:?}\n{}",
            input.schema(),
            displayable(input).indent(true)
        )
    })
}

/// Whether Ballista's planner starts a stage at `plan` or below it.
fn starts_a_stage(plan: &dyn ExecutionPlan) -> bool {
    plan.is::<CoalescePartitionsExec>()
        || plan.is::<SortPreservingMergeExec>()
        || plan.is::<UnionExec>()
        || plan.is::<UnresolvedShuffleExec>()
        || plan
            .downcast_ref::<RepartitionExec>()
            .is_some_and(|r| matches!(r.partitioning(), Partitioning::Hash(_, _)))
        || plan
            .downcast_ref::<HashJoinExec>()
            .is_some_and(|j| *j.partition_mode() == PartitionMode::CollectLeft)
}

// Keys read twice.

/// The smallest large side and Ballista's broadcast threshold, when reductions are on and
/// Ballista broadcasts at all.
fn reducing(config: &ConfigOptions) -> Option<(usize, usize)> {
    let options = config.extensions.get::<StrataOptions>()?;
    let threshold = super::joins::broadcast_threshold(config);
    (options.semi_join_reduction && threshold > 0)
        .then_some((options.semi_join_reduction_min_rows, threshold))
}

/// `plan` with the large side of each partitioned join it can reduce reduced by the keys
/// its small side's stage writes (read through a placeholder).
fn reduced_by_stages(
    plan: Arc<dyn ExecutionPlan>,
    min_rows: usize,
    threshold: usize,
    sources: &mut Vec<Source>,
) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if *join.partition_mode() != PartitionMode::Partitioned
                || join.null_equality() != NullEquality::NullEqualsNothing
            {
                return Ok(Transformed::no(node));
            }
            for large in [JoinSide::Left, JoinSide::Right] {
                if let Some(reduced) = reduced_side(join, large, min_rows, threshold, sources)? {
                    let mut children: Vec<_> = join.children().into_iter().cloned().collect();
                    children[side_index(large)] = reduced;
                    let join = join.builder().with_new_children(children)?.build_exec()?;
                    return Ok(Transformed::yes(join));
                }
            }
            Ok(Transformed::no(node))
        })?
        .data)
}

fn side_index(side: JoinSide) -> usize {
    match side {
        JoinSide::Right => 1,
        _ => 0,
    }
}

/// `join`'s `large` side (a hash shuffle) with its input reduced by the keys of the other
/// side's stage, where it pays (see [`StageReads`]).
fn reduced_side(
    join: &HashJoinExec,
    large: JoinSide,
    min_rows: usize,
    threshold: usize,
    sources: &mut Vec<Source>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let (left, right) = droppable_sides(*join.join_type());
    let (droppable, shuffle, small) = match large {
        JoinSide::Left => (left, join.left(), join.right()),
        _ => (right, join.right(), join.left()),
    };
    if !droppable {
        return Ok(None);
    }
    let Some(shuffled) = shuffle.downcast_ref::<RepartitionExec>() else {
        return Ok(None);
    };
    let input = shuffled.input();
    if !matches!(shuffled.partitioning(), Partitioning::Hash(..)) || shuffled.preserve_order() {
        return Ok(None);
    }
    // The key columns on each side.
    let pairs: Option<Vec<(usize, Arc<dyn PhysicalExpr>)>> = join
        .on()
        .iter()
        .map(|(l, r)| match large {
            JoinSide::Left => Some((column(r)?, Arc::clone(l))),
            _ => Some((column(l)?, Arc::clone(r))),
        })
        .collect();
    let Some(pairs) = pairs else {
        return Ok(None);
    };
    let small_cols: Vec<usize> = pairs.iter().map(|(c, _)| *c).collect();
    let mut path = vec![1 - side_index(large)];
    let Some((writer, cols)) = key_stage(small, small_cols, &mut path) else {
        return Ok(None);
    };
    let (Some(rows), Some(key_rows)) = (estimated_rows(input)?, estimated_rows(&writer)?) else {
        return Ok(None);
    };
    if rows < min_rows || rows < key_rows.max(1).saturating_mul(MIN_RATIO) {
        return Ok(None);
    }
    let schema = writer.schema();
    let mut exprs = Vec::with_capacity(cols.len());
    let mut on = Vec::with_capacity(cols.len());
    for (i, (&col, (_, large_key))) in cols.iter().zip(&pairs).enumerate() {
        let field = schema.field(col);
        match large_key.data_type(&input.schema()) {
            Ok(t) if &t == field.data_type() => {}
            _ => return Ok(None),
        }
        exprs.push(ProjectionExpr {
            expr: Arc::new(Column::new(field.name(), col)),
            alias: field.name().clone(),
        });
        on.push((
            Arc::new(Column::new(field.name(), i)) as Arc<dyn PhysicalExpr>,
            Arc::clone(large_key),
        ));
    }
    let bytes = key_rows.saturating_mul(row_width(&schema.project(&cols)?));
    if bytes >= threshold {
        return Ok(None);
    }
    let source = Source::Below {
        node: one_line(join),
        path,
    };
    let read = placeholder(sources, source, &writer);
    let keys: Arc<dyn ExecutionPlan> = Arc::new(ProjectionExec::try_new(exprs, read)?);
    let mut key_stats = Statistics::new_unknown(&keys.schema());
    key_stats.num_rows = Precision::Inexact(key_rows);
    key_stats.total_byte_size = Precision::Inexact(bytes);
    let build = Arc::new(CoalescePartitionsExec::new(Arc::new(EstimatedExec::new(
        keys,
        Arc::new(key_stats),
    ))));
    let reduced = keeping_matches(build, Arc::clone(input), on)?;
    let stats = StatisticsContext::new().compute(input.as_ref(), &StatisticsArgs::new())?;
    let reduced = Arc::new(EstimatedExec::new(Arc::new(reduced), stats));
    Ok(Some(with_children(Arc::clone(shuffle), vec![reduced])?))
}

/// The hash shuffle that writes the values of `plan`'s columns `cols` (or more of them),
/// with those columns in its output; `path` gets the child taken at each step.
fn key_stage(
    plan: &Arc<dyn ExecutionPlan>,
    cols: Vec<usize>,
    path: &mut Vec<usize>,
) -> Option<(Arc<dyn ExecutionPlan>, Vec<usize>)> {
    if let Some(shuffle) = plan.downcast_ref::<RepartitionExec>()
        && matches!(shuffle.partitioning(), Partitioning::Hash(..))
    {
        return Some((Arc::clone(plan), cols));
    }
    let (child, cols) = if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        let sides: Option<Vec<(JoinSide, usize)>> =
            cols.iter().map(|&c| join_input_column(join, c)).collect();
        let sides = sides?;
        let side = sides.first()?.0;
        if sides.iter().any(|(s, _)| *s != side) {
            return None;
        }
        (
            side_index(side),
            sides.into_iter().map(|(_, c)| c).collect(),
        )
    } else if passes_rows_on(plan) {
        (0, cols)
    } else {
        let mapped: Option<Vec<usize>> = cols.iter().map(|&c| input_column(plan, c)).collect();
        (0, mapped?)
    };
    path.push(child);
    key_stage(plan.children().get(child)?, cols, path)
}

/// A plan with the size estimate the scheduler's planner is to see for it: a build side of
/// keys read from another stage, with the size that stage was estimated at, so that it is
/// broadcast; a large side reduced by such keys, with the size it had before, so that the
/// joins above it are planned as they were. Executors get its input alone.
#[derive(Debug)]
pub(crate) struct EstimatedExec {
    input: Arc<dyn ExecutionPlan>,
    stats: Arc<Statistics>,
}

impl EstimatedExec {
    fn new(input: Arc<dyn ExecutionPlan>, stats: Arc<Statistics>) -> Self {
        EstimatedExec { input, stats }
    }
}

impl DisplayAs for EstimatedExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "EstimatedExec: rows={}, bytes={}",
            self.stats.num_rows, self.stats.total_byte_size
        )
    }
}

impl ExecutionPlan for EstimatedExec {
    fn name(&self) -> &str {
        "EstimatedExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn child_stats_requests(&self, _partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::Skip]
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(match args.partition() {
            None => Arc::clone(&self.stats),
            Some(_) => Arc::new(Statistics::new_unknown(&self.schema())),
        })
    }

    crate::optimizer::no_expressions!();

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(EstimatedExec::new(
            only_child(self.name(), children)?,
            Arc::clone(&self.stats),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
