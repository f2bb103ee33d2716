//! Nested loop joins that keep their build side in memory. When that side does not fit under
//! the memory limit, DataFusion 55's nested loop join falls back to a mode that spills it and
//! replays the other side, and that mode gives wrong answers: LEFT, SEMI, ANTI and MARK joins
//! over a partitioned probe side emit unmatched rows once per partition and rows matched in
//! another partition as unmatched (apache/datafusion#22641), unmatched rows of swapped joins
//! are dropped (apache/datafusion#24745), and the build side is executed a second time, which
//! fails inside a repartition (apache/datafusion#24676). Here the join runs where temporary
//! files are off, so it never takes that mode: the query gets the right answer or the
//! out-of-memory error naming `NestedLoopJoinLoad`. The join's inputs run with the query's own
//! context and spill as before.

use std::fmt;
use std::sync::{Arc, LazyLock};

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::execution::disk_manager::{DiskManager, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::NestedLoopJoinExec;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputDistributionRequirements, PlanProperties,
};

use super::{only_child, with_children};

/// A disk manager that makes no temporary files.
static NO_TEMP_FILES: LazyLock<Arc<DiskManager>> = LazyLock::new(|| {
    Arc::new(
        DiskManager::builder()
            .with_mode(DiskManagerMode::Disabled)
            .build()
            .expect("a disabled disk manager needs no folders"),
    )
});

/// The context a guarded join was executed with, handed through to its inputs.
#[derive(Debug)]
struct QueryContext(Arc<TaskContext>);

/// A nested loop join that never spills its build side (see the module doc). Its children are
/// the join's inputs, so plans and metrics read as the join's own.
#[derive(Debug)]
pub struct InMemoryNestedLoopJoinExec {
    /// The join, over its inputs each wrapped in [`QueryContextExec`].
    join: Arc<dyn ExecutionPlan>,
    /// The join's inputs as they are.
    inputs: Vec<Arc<dyn ExecutionPlan>>,
}

impl InMemoryNestedLoopJoinExec {
    /// Guards `join`, a [`NestedLoopJoinExec`].
    pub fn new(join: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let inputs: Vec<_> = join.children().into_iter().cloned().collect();
        let wrapped = inputs
            .iter()
            .map(|input| Arc::new(QueryContextExec(Arc::clone(input))) as Arc<dyn ExecutionPlan>)
            .collect();
        Ok(InMemoryNestedLoopJoinExec {
            join: with_children(join, wrapped)?,
            inputs,
        })
    }

    /// The join this guards.
    pub fn join(&self) -> &Arc<dyn ExecutionPlan> {
        &self.join
    }
}

impl DisplayAs for InMemoryNestedLoopJoinExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        // Shown as the join it is.
        match self.join.downcast_ref::<NestedLoopJoinExec>() {
            Some(join) => join.fmt_as(t, f),
            None => write!(f, "{}", self.join.name()),
        }
    }
}

impl ExecutionPlan for InMemoryNestedLoopJoinExec {
    fn name(&self) -> &str {
        "NestedLoopJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.join.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.inputs.iter().collect()
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.join.input_distribution_requirements()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        self.join.maintains_input_order()
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        self.join.benefits_from_input_partitioning()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.join.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let join = with_children(Arc::clone(&self.join), children)?;
        Ok(Arc::new(InMemoryNestedLoopJoinExec::new(join)?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let runtime = RuntimeEnv {
            disk_manager: Arc::clone(&NO_TEMP_FILES),
            ..context.runtime_env().as_ref().clone()
        };
        let config = context
            .session_config()
            .clone()
            .with_extension(Arc::new(QueryContext(Arc::clone(&context))));
        let join_context = super::task_context_with(&context, config, Arc::new(runtime));
        self.join.execute(partition, Arc::new(join_context))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        self.join.metrics()
    }
}

/// One input of a guarded join: runs with the query's context rather than the join's.
#[derive(Debug)]
struct QueryContextExec(Arc<dyn ExecutionPlan>);

impl DisplayAs for QueryContextExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "QueryContextExec")
    }
}

impl ExecutionPlan for QueryContextExec {
    fn name(&self) -> &str {
        "QueryContextExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.0.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.0]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    no_expressions!();

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(QueryContextExec(only_child(
            self.name(),
            children,
        )?)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let context = match context.session_config().get_extension::<QueryContext>() {
            Some(query) => Arc::clone(&query.0),
            None => context,
        };
        self.0.execute(partition, context)
    }
}

/// Puts every nested loop join in an [`InMemoryNestedLoopJoinExec`]. Runs after the rules
/// that look for nested loop joins by type.
#[derive(Debug, Default)]
pub struct InMemoryNestedLoops;

impl InMemoryNestedLoops {
    /// `plan` with every nested loop join guarded.
    pub fn guard(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if node.downcast_ref::<NestedLoopJoinExec>().is_some() {
                Ok(Transformed::yes(
                    Arc::new(InMemoryNestedLoopJoinExec::new(node)?) as Arc<dyn ExecutionPlan>,
                ))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }
}

impl PhysicalOptimizerRule for InMemoryNestedLoops {
    fn name(&self) -> &str {
        "InMemoryNestedLoops"
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Self::guard(plan)
    }

    fn schema_check(&self) -> bool {
        true
    }
}
