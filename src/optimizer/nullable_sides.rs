//! The side of an outer join that rows are padded with NULLs for keeps none of its input's
//! constants. DataFusion 55 carries a join input's equivalence properties into the join's
//! output unchanged for LEFT, RIGHT and FULL joins, so after `LEFT JOIN b ON a.k = b.k AND
//! b.k = 2` it takes `b.k` for the constant 2 although unmatched rows hold NULL there: a
//! sort on `b.k` was dropped (`ORDER BY b.k NULLS FIRST` put the NULLs last) and a sort-merge
//! join read such a column unsorted (an `EXCEPT` over it kept rows it should remove). Here
//! each padded input is seen through [`NullableSideExec`], which passes its rows and
//! orderings on but neither its constants, its equal columns nor its unique keys.

use std::fmt;
use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterDescription, FilterPushdownPhase, FilterPushdownPropagation,
};
use datafusion::physical_plan::joins::{
    HashJoinExec, NestedLoopJoinExec, SortMergeJoinExec, SymmetricHashJoinExec,
};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

use super::only_child;

/// An outer join's input whose rows the join pads with NULLs: the same rows, with only the
/// input's orderings for properties.
#[derive(Debug)]
pub struct NullableSideExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl NullableSideExec {
    /// `input`, seen as the padded side of an outer join.
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let given = input.properties();
        let orderings = given.eq_properties.oeq_class().iter().cloned();
        let eq_properties = EquivalenceProperties::new_with_orderings(input.schema(), orderings);
        let properties = Arc::new(given.as_ref().clone().with_eq_properties(eq_properties));
        NullableSideExec { input, properties }
    }

    /// The input.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }
}

impl DisplayAs for NullableSideExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "NullableSideExec")
    }
}

impl ExecutionPlan for NullableSideExec {
    fn name(&self) -> &str {
        "NullableSideExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    input_statistics!(as_estimates);

    fn maintains_input_order(&self) -> Vec<bool> {
        // It does, but a sort asked of it must stay above it: pushed below, it would be
        // met by the very constants this node hides, and the sort would be dropped.
        vec![false]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    no_expressions!();

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(NullableSideExec::new(only_child(
            self.name(),
            children,
        )?)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }

    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        // Filters (a join's dynamic filter among them) reach the input as they would
        // without this node.
        FilterDescription::from_children(parent_filters, &self.children())
    }

    fn handle_child_pushdown_result(
        &self,
        _phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        Ok(FilterPushdownPropagation::if_all(child_pushdown_result))
    }
}

/// Which inputs of `join` it pads with NULLs: `(left, right)`; `None` if it is not a join.
fn padded_sides(join: &Arc<dyn ExecutionPlan>) -> Option<(bool, bool)> {
    let join_type = if let Some(j) = join.downcast_ref::<HashJoinExec>() {
        *j.join_type()
    } else if let Some(j) = join.downcast_ref::<SortMergeJoinExec>() {
        j.join_type()
    } else if let Some(j) = join.downcast_ref::<NestedLoopJoinExec>() {
        *j.join_type()
    } else if let Some(j) = join.downcast_ref::<SymmetricHashJoinExec>() {
        *j.join_type()
    } else {
        return None;
    };
    Some(match join_type {
        JoinType::Left => (false, true),
        JoinType::Right => (true, false),
        JoinType::Full => (true, true),
        _ => (false, false),
    })
}

/// Puts a [`NullableSideExec`] above each input an outer join pads with NULLs. Runs first,
/// so that every later rule sees the join's output properties without the padded side's
/// constants.
#[derive(Debug, Default)]
pub struct NullableSides;

impl PhysicalOptimizerRule for NullableSides {
    fn name(&self) -> &str {
        "NullableSides"
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some((left, right)) = padded_sides(&node) else {
                return Ok(Transformed::no(node));
            };
            let children: Vec<Arc<dyn ExecutionPlan>> =
                node.children().into_iter().cloned().collect();
            let [l, r] = children.as_slice() else {
                return Ok(Transformed::no(node));
            };
            let wrap = |side: bool, child: &Arc<dyn ExecutionPlan>| -> Arc<dyn ExecutionPlan> {
                if side && child.downcast_ref::<NullableSideExec>().is_none() {
                    Arc::new(NullableSideExec::new(Arc::clone(child)))
                } else {
                    Arc::clone(child)
                }
            };
            let (new_l, new_r) = (wrap(left, l), wrap(right, r));
            if Arc::ptr_eq(&new_l, l) && Arc::ptr_eq(&new_r, r) {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(super::with_children(
                node,
                vec![new_l, new_r],
            )?))
        })
        .map(|t| t.data)
    }

    fn schema_check(&self) -> bool {
        true
    }
}
