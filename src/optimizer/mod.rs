//! Physical plan rules Strata adds to DataFusion's, and the settings that turn them off.

/// The statistics of an operator that passes its one input's rows on: its input's, either
/// `as_estimates` (it passes at most all of them on) or `as_they_are` (it passes all of them
/// on unchanged). Without them DataFusion sees nothing above the operator and cannot weigh
/// the sides of the joins above it, nor Ballista decide which to broadcast. Expands to the
/// two `ExecutionPlan` methods.
macro_rules! input_statistics {
    ($how:ident) => {
        fn child_stats_requests(
            &self,
            partition: Option<usize>,
        ) -> Vec<datafusion::physical_plan::ChildStats> {
            vec![datafusion::physical_plan::ChildStats::At(partition)]
        }

        fn statistics_from_inputs(
            &self,
            input_stats: &[std::sync::Arc<datafusion::common::Statistics>],
            _args: &datafusion::physical_plan::StatisticsArgs,
        ) -> datafusion::error::Result<std::sync::Arc<datafusion::common::Statistics>> {
            Ok($crate::optimizer::input_statistics!(@$how &input_stats[0]))
        }
    };
    (@as_estimates $input:expr) => {
        std::sync::Arc::new($input.as_ref().clone().to_inexact())
    };
    (@as_they_are $input:expr) => {
        std::sync::Arc::clone($input)
    };
}

/// The `apply_expressions` of an operator that holds no expressions of its own.
macro_rules! no_expressions {
    () => {
        fn apply_expressions(
            &self,
            _f: &mut dyn FnMut(
                &std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>,
            ) -> datafusion::error::Result<
                datafusion::common::tree_node::TreeNodeRecursion,
            >,
        ) -> datafusion::error::Result<datafusion::common::tree_node::TreeNodeRecursion> {
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        }
    };
}

pub(crate) use {input_statistics, no_expressions};

mod cooperative;
mod filter_order;
mod group_keys;
mod join_sides;
mod large_topk;
mod nested_loops;
mod nullable_sides;
mod outer_joins;
mod runtime_filter;
mod shared;
mod text_matches;
mod window_sorts;

use std::sync::Arc;

use datafusion::common::extensions_options;
use datafusion::common::tree_node::TreeNode;
use datafusion::config::{ConfigEntry, ConfigExtension, ConfigOptions, ExtensionOptions};
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, SortMergeJoinExec, SymmetricHashJoinExec,
};
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::prelude::SessionConfig;

pub use cooperative::CooperativeJoins;
pub use filter_order::CheapFiltersFirst;
pub use group_keys::JoinOnGroupKeys;
pub use join_sides::JoinSidesByRows;
pub use large_topk::LargeTopKAsSort;
pub use nested_loops::{InMemoryNestedLoopJoinExec, InMemoryNestedLoops};
pub use nullable_sides::{NullableSideExec, NullableSides};
pub use outer_joins::FilteredOuterJoinsByHash;
pub use runtime_filter::{JoinFiltersAtScan, RuntimeFilterExec};
pub use shared::{ShareSubplans, SharedExec};
pub(crate) use shared::{repeated, same_each_run};
pub use text_matches::{TextMatches, text_in};
pub use window_sorts::ExplicitWindowSorts;

extensions_options! {
    /// Strata's own settings, under `strata.` (e.g. `SET strata.join_filters_at_scan = false`).
    pub struct StrataSettings {
        /// Drop the rows a join's runtime filter rules out right where a Parquet scan reads
        /// them, before aggregations and repartitions above the scan see them.
        pub join_filters_at_scan: bool, default = true
        /// With `join_filters_at_scan`, also drop at a scan the rows that a join further
        /// up than the nearest one rules out, waiting for that join's hash table first.
        pub early_join_filters: bool, default = true
        /// With `early_join_filters`, also drop at a scan on a join's build side the rows a
        /// join further up rules out, when that join builds its table from a tenth of the
        /// scan's estimated rows or fewer.
        pub build_side_join_filters: bool, default = true
        /// Hash a join that matches both a group key and an aggregated value of the
        /// aggregation on its probe side on the group key alone, comparing the value in its
        /// join filter, so that its runtime filter reaches the rows below the aggregation.
        pub join_on_group_keys: bool, default = true
        /// Compute a subplan that a query uses more than once (a common table expression
        /// named twice) once, and replay its rows to each use.
        pub share_subplans: bool, default = true
        /// Write an integer or decimal literal added to or subtracted from a decimal at the
        /// decimal's scale (`1 - d` as `1.00 - d`), so that arrow need not rescale it on
        /// every row.
        pub decimal_literals_at_scale: bool, default = true
        /// Multiply two decimals with one 64-bit multiplication per row where both fit in
        /// 64 bits, failing on overflow either way (off: DataFusion's 128-bit product, which
        /// wraps around on overflow).
        pub decimal_products: bool, default = true
        /// After DataFusion picks each hash join's build side, swap the join where that
        /// side's estimated rows, times a row width read off its schema, are more than four
        /// times the other side's.
        pub join_sides_by_rows: bool, default = true
        /// Key each inner join on the column, among those that the inner joins below it
        /// make equal, that is read deepest, so that the join's runtime filter reaches the
        /// scan feeding the most work (TPC-H q05: the region's nations reach `customer`).
        pub deepest_join_keys: bool, default = true
        /// An `ORDER BY … LIMIT n` whose `n` rows take more than this many bytes (by a
        /// width read off the schema) sorts all its input, with spilling, and then takes
        /// `n` rows, instead of keeping the best `n` rows in memory as it reads, which
        /// cannot spill. Under a memory limit it is a quarter of each partition's share
        /// of the limit; without one, unset (always the latter).
        pub topk_max_bytes: Option<usize>, default = None
        /// Evaluate the conditions of a filter that cannot fail first, in the order that
        /// drops rows soonest for the least work (a date range before a string comparison),
        /// instead of the query's order.
        pub cheap_filters_first: bool, default = true
        /// Answer a filter's comparisons of a text column with literals (`=`, `<>`, `IN`,
        /// `NOT IN`, an `OR` of equalities on the column) once per distinct string of each
        /// batch, as text read from a Parquet dictionary repeats, instead of once per row.
        pub text_matches: bool, default = true
        /// On a cluster, plan as broadcast joins from the start the joins Ballista's planner
        /// would broadcast (`ballista.optimizer.broadcast_join_threshold_bytes`), so that
        /// their probe side is not shuffled for nothing, and as partitioned joins those it
        /// would not, so that their build side is not shuffled twice.
        pub broadcast_joins: bool, default = true
        /// On a cluster, drop the rows of a join's large side that no key of its small,
        /// filtered side can match where that side is read, before they are aggregated or
        /// shuffled: the filtered table is read once more and its keys broadcast there.
        pub semi_join_reduction: bool, default = true
        /// The fewest rows a scan must be estimated at for `semi_join_reduction` to reduce
        /// it: reading the keys' table again costs a stage of its own.
        pub semi_join_reduction_min_rows: usize, default = 500_000
        /// On a cluster, an `EXISTS` or `NOT EXISTS` whose other side `semi_join_reduction`
        /// reduced broadcasts that reduced side (when estimated under Ballista's broadcast
        /// threshold) instead of shuffling both sides by the key.
        pub broadcast_reduced_sides: bool, default = true
        /// On a cluster, move a broadcast semi or anti join down the other side of the join
        /// to where the column it tests is read (below inner joins, aggregations by that
        /// column and shuffles), so that the rows it drops are not joined, written and read
        /// back first.
        pub semi_joins_first: bool, default = true
        /// On a cluster, plan the runtime filters of the joins in each stage on the executor
        /// that runs it, and apply them to the scans of that stage as in one process (see
        /// `join_filters_at_scan`): a join and the scans it filters run in one task there.
        pub stage_join_filters: bool, default = true
        /// On a cluster, a broadcast join whose build side reads a table of at most this
        /// many rows (filtered and projected at most) has each task of its stage read that
        /// table itself, instead of reading it in a stage of its own and broadcasting it
        /// (0: never). Only joins whose rows all come from their probe side.
        pub inline_build_max_rows: usize, default = 50_000
        /// On a cluster, copy the strings a batch of string or binary views still uses into
        /// compact buffers before a stage writes it, where it holds more than twice as much.
        pub compact_views: bool, default = true
        /// On a cluster, merge the partitions of an aggregation's result into one (for its
        /// ORDER BY) in the stage that finishes the aggregation, run then as one task,
        /// instead of in a stage of its own; and finish an aggregation of one partition
        /// without shuffling it.
        pub merge_final_stages: bool, default = true
        /// Send a join or aggregation whose tables are all in one database to that database
        /// as one SELECT, where it gives the same rows there (see `EXPLAIN`), instead of
        /// reading the tables and joining or grouping here.
        pub database_pushdown: bool, default = true
    }
}

/// Whether the Strata setting that `flag` reads is on in `config` (off where Strata's
/// settings are not registered, as in a stock DataFusion session).
pub(crate) fn setting_on(config: &ConfigOptions, flag: impl Fn(&StrataSettings) -> bool) -> bool {
    config
        .extensions
        .get::<StrataOptions>()
        .is_some_and(|o| flag(o))
}

/// [`StrataSettings`] as registered with DataFusion, their entries named in full: the
/// generated entries are named without the `strata.` prefix, so that `SHOW strata.NAME`
/// found nothing, `SHOW ALL` listed bare names, and a cluster client sent them under names
/// the scheduler could not set.
#[derive(Debug, Clone, Default)]
pub struct StrataOptions(pub StrataSettings);

impl std::ops::Deref for StrataOptions {
    type Target = StrataSettings;
    fn deref(&self) -> &StrataSettings {
        &self.0
    }
}

impl std::ops::DerefMut for StrataOptions {
    fn deref_mut(&mut self) -> &mut StrataSettings {
        &mut self.0
    }
}

impl ConfigExtension for StrataOptions {
    const PREFIX: &'static str = "strata";
}

impl ExtensionOptions for StrataOptions {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    /// An empty value unsets a setting that may be unset.
    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        if value.is_empty() && key.trim_start_matches('.') == "topk_max_bytes" {
            self.0.topk_max_bytes = None;
            return Ok(());
        }
        self.0.set(key, value)
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        self.0
            .entries()
            .into_iter()
            .map(|mut e| {
                e.key = format!("{}.{}", Self::PREFIX, e.key.trim_start_matches('.'));
                e
            })
            .collect()
    }
}

/// `RESET name` as the `SET` of the value the session started with (`start`), as in
/// PostgreSQL. DataFusion resets its own settings to its own defaults (a session that
/// started with Strata's partitions and join thresholds lost them) and answered "Could not
/// find config namespace" for Strata's. A Strata setting that started unset is unset again
/// (`SET strata.name = ''`).
pub(crate) fn reset_as_set(
    stmt: &datafusion::sql::parser::Statement,
    start: &ConfigOptions,
) -> Option<String> {
    use datafusion::sql::parser::{ResetStatement, Statement};
    let Statement::Reset(ResetStatement::Variable(name)) = stmt else {
        return None;
    };
    let name = name.to_string();
    if name.to_ascii_lowercase().starts_with("datafusion.runtime.") {
        return None;
    }
    let is_strata = name
        .split_once('.')
        .is_some_and(|(prefix, _)| prefix.eq_ignore_ascii_case(StrataOptions::PREFIX));
    let Some(entry) = start
        .entries()
        .into_iter()
        .find(|e| e.key.eq_ignore_ascii_case(&name))
    else {
        // An unknown Strata setting: the SET names it in its error.
        return is_strata.then(|| format!("SET {name} = ''"));
    };
    match entry.value {
        Some(value) => Some(format!(
            "SET {} = '{}'",
            entry.key,
            value.replace('\'', "''")
        )),
        None if is_strata => Some(format!("SET {} = ''", entry.key)),
        None => None,
    }
}

/// `plan` over `children` in place of its own, its properties (partitioning, orderings)
/// worked out again from them.
pub(crate) fn with_children(
    plan: Arc<dyn ExecutionPlan>,
    children: Vec<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::physical_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
    plan.replace_children(
        children,
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
}

/// The one child a pass-through node (`name`) is rebuilt with.
pub(crate) fn only_child(
    name: &str,
    mut children: Vec<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    match children.len() {
        1 => Ok(children.swap_remove(0)),
        n => Err(datafusion::error::DataFusionError::Internal(format!(
            "{name} takes one child, not {n}"
        ))),
    }
}

/// The rows DataFusion estimates `plan` returns, if it has an estimate.
pub(crate) fn estimated_rows(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<usize>> {
    use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
    let stats = StatisticsContext::new().compute(plan.as_ref(), &StatisticsArgs::new())?;
    Ok(stats.num_rows.get_value().copied())
}

/// Bytes per row of `schema`: the width of fixed-size types, and a typical 32 bytes for
/// strings, binary and nested values.
pub(crate) fn row_width(schema: &datafusion::arrow::datatypes::Schema) -> usize {
    use datafusion::arrow::datatypes::DataType;
    schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Boolean | DataType::Null => 1,
            t => t.primitive_width().unwrap_or(32),
        })
        .sum::<usize>()
        .max(1)
}

pub(crate) fn is_join(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<HashJoinExec>().is_some()
        || plan.downcast_ref::<SortMergeJoinExec>().is_some()
        || plan.downcast_ref::<NestedLoopJoinExec>().is_some()
        || plan.downcast_ref::<InMemoryNestedLoopJoinExec>().is_some()
        || plan.downcast_ref::<CrossJoinExec>().is_some()
        || plan.downcast_ref::<SymmetricHashJoinExec>().is_some()
}

/// `context` with `config` and `runtime` in place of its own.
pub(crate) fn task_context_with(
    context: &TaskContext,
    config: SessionConfig,
    runtime: Arc<RuntimeEnv>,
) -> TaskContext {
    TaskContext::new(
        context.task_id(),
        context.session_id(),
        config,
        context.scalar_functions().clone(),
        context.higher_order_functions().clone(),
        context.aggregate_functions().clone(),
        context.window_functions().clone(),
        runtime,
    )
}

/// Recursive queries run their plan again for each step; a runtime filter from an earlier
/// step must not be applied to a later one.
pub(crate) fn is_recursive(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.exists(|node| Ok(node.downcast_ref::<RecursiveQueryExec>().is_some()))
        .unwrap_or(true)
}

/// DataFusion's physical rules with Strata's among them: filtered outer sort-merge joins
/// become hash joins first, outer joins' padded sides lose their constants next, build
/// sides corrected right after DataFusion picks them, subplan sharing and joins on group keys
/// alone before runtime filters are pushed down (the last rewrites that must see the plan
/// whole, and that decide which columns a join's runtime filter covers), runtime filters
/// at scans after everything else, then nested loop joins kept in memory, large TopKs
/// made sorts, filters' conditions ordered and their text comparisons answered per distinct
/// string; joins made to yield last.
pub fn physical_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules = PhysicalOptimizer::new().rules;
    let at = rules
        .iter()
        .position(|r| r.name() == "FilterPushdown(Post)")
        .unwrap_or(rules.len());
    rules.insert(at, Arc::new(ShareSubplans));
    rules.insert(at + 1, Arc::new(JoinOnGroupKeys));
    let at = rules
        .iter()
        .position(|r| r.name() == "join_selection")
        .map_or(rules.len(), |i| i + 1);
    rules.insert(at, Arc::new(JoinSidesByRows));
    rules.push(Arc::new(JoinFiltersAtScan));
    rules.insert(0, Arc::new(FilteredOuterJoinsByHash));
    rules.insert(1, Arc::new(NullableSides));
    rules.push(Arc::new(InMemoryNestedLoops));
    rules.push(Arc::new(LargeTopKAsSort));
    rules.push(Arc::new(CheapFiltersFirst));
    rules.push(Arc::new(TextMatches));
    rules.push(Arc::new(CooperativeJoins));
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn widths_come_from_the_schema() {
        let schema = Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("name", DataType::Utf8View, true),
            Field::new("flag", DataType::Boolean, true),
            Field::new("d", DataType::Date32, true),
        ]);
        assert_eq!(row_width(&schema), 8 + 32 + 1 + 4);
        assert_eq!(row_width(&Schema::empty()), 1);
    }
}
