//! Plans deeper than a protobuf decoder accepts travel in pieces: every few levels, the rest
//! of the plan is encoded as bytes of its own and decoded separately. Logical plans go to the
//! scheduler so, which puts the pieces back together before planning; a stage's plan goes to
//! executors so, which decode each piece in its place.
//!
//! Protobuf decoders stop at 100 nested messages, and every level of a plan costs two (the
//! plan node and the operator inside it). A query over views with three levels of correlated
//! subqueries went past that on its way to the scheduler, and a join of 24 small tables in
//! one stage on its way to executors. Turning the limit off instead would let any client of a
//! Strata server crash it with a deeply nested message.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchemaRef, DataFusionError, Result};
use datafusion::config::ConfigOptions;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, UserDefinedLogicalNodeCore};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::proto::ExecutionPlanEncodeCtx;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::scalar_subquery::ScalarSubqueryExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion_proto::logical_plan::{AsLogicalPlan, LogicalExtensionCodec};
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanNodeExt, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::physical_plan_node::PhysicalPlanType;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalExtensionNode, PhysicalPlanNode};
use prost::Message;

use crate::optimizer::only_child;

mod exprs;

pub(crate) use exprs::{
    EXPR_PIECE, STAGE_EXPR_PIECE, decode_stage_expr_piece, decode_udf, encode_udf,
};

/// Plan levels one piece holds. With the levels of expressions and schemas inside them, a
/// piece stays well below the decoder's 100 messages; and its conversion to a plan, which
/// recurses once per level, stays within a thread's stack (about 80 KiB a level in a debug
/// build).
const LEVELS: usize = 8;

/// The levels a subquery inside an expression starts below its plan node (the expression
/// messages that hold it).
const SUBQUERY_LEVELS: usize = 4;

/// Levels of a stage's plan one piece holds (a physical operator's message holds more than a
/// logical one's: its schema, partitioning and statistics).
const STAGE_LEVELS: usize = 12;

/// Mark a piece of a logical plan, and of a stage's plan, among the extension nodes the
/// scheduler and executors decode (no protobuf message starts with the byte 0xFF).
pub(crate) const PLAN_PIECE: &[u8] = b"\xFFstrata-piece:";
pub(crate) const STAGE_PIECE: &[u8] = b"\xFFstrata-stage-piece:";

/// Stack a piece's encoding or decoding may need; with less left, it runs on a fresh segment.
const RED_ZONE: usize = 2 * 1024 * 1024;
const SEGMENT: usize = 8 * 1024 * 1024;

/// The rest of a plan, encoded apart from the plan above it. To DataFusion it is a leaf: it
/// exists only between the client's planning and the scheduler's analysis.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Hash)]
pub(crate) struct Piece {
    plan: LogicalPlan,
}

impl UserDefinedLogicalNodeCore for Piece {
    fn name(&self) -> &str {
        "Piece"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        Vec::new()
    }

    fn schema(&self) -> &DFSchemaRef {
        self.plan.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Piece: {}", self.plan.display())
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, _inputs: Vec<LogicalPlan>) -> Result<Self> {
        Ok(self.clone())
    }
}

/// `plan` with every part below [`LEVELS`] levels (counted from the top or from the piece
/// above) made a piece of its own. Plans less deep come back unchanged.
/// So are expressions below [`exprs::EXPR_LEVELS`] levels; the root is then a piece too, because
/// a piece puts back the pieces of expressions in it when it is decoded.
pub(crate) fn in_pieces(plan: LogicalPlan) -> Result<LogicalPlan> {
    let mut cut_expressions = false;
    let plan = cut(plan, 0, &mut cut_expressions)?;
    Ok(if cut_expressions { piece(plan) } else { plan })
}

fn piece(plan: LogicalPlan) -> LogicalPlan {
    LogicalPlan::Extension(Extension {
        node: Arc::new(Piece { plan }),
    })
}

fn cut(plan: LogicalPlan, depth: usize, cut_expressions: &mut bool) -> Result<LogicalPlan> {
    if depth >= LEVELS {
        return Ok(piece(cut(plan, 0, cut_expressions)?));
    }
    let plan = plan
        .map_subqueries(|sub| {
            cut(sub, depth + SUBQUERY_LEVELS, cut_expressions).map(Transformed::yes)
        })?
        .data;
    let plan = plan
        .map_children(|child| cut(child, depth + 1, cut_expressions).map(Transformed::yes))?
        .data;
    exprs::cut_expressions(plan, cut_expressions)
}

/// The piece inside an extension node, if it is one.
pub(crate) fn as_piece(node: &Extension) -> Option<&LogicalPlan> {
    node.node.as_any().downcast_ref::<Piece>().map(|p| &p.plan)
}

/// What a protobuf encoding or decoding error of a piece says.
fn protobuf_error(what: &str, e: impl fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("failed to {what}: {e}"))
}

/// [`PLAN_PIECE`] and a piece's plan as protobuf bytes, encoded with `codec` (which encodes
/// the pieces within).
pub(crate) fn encode(
    plan: &LogicalPlan,
    codec: &dyn LogicalExtensionCodec,
    buf: &mut Vec<u8>,
) -> Result<()> {
    buf.extend(PLAN_PIECE);
    stacker::maybe_grow(RED_ZONE, SEGMENT, || {
        LogicalPlanNode::try_from_logical_plan(plan, codec)?
            .encode(buf)
            .map_err(|e| protobuf_error("encode a piece of a logical plan", e))
    })
}

/// A piece read back from [`encode`]'s bytes after the marker.
pub(crate) fn decode(
    buf: &[u8],
    ctx: &TaskContext,
    codec: &dyn LogicalExtensionCodec,
) -> Result<Extension> {
    stacker::maybe_grow(RED_ZONE, SEGMENT, || {
        let plan = LogicalPlanNode::decode(buf)
            .map_err(|e| protobuf_error("decode a piece of a logical plan", e))?
            .try_into_logical_plan(ctx, codec)?;
        let plan = exprs::put_back(plan, ctx, codec)?;
        Ok(Extension {
            node: Arc::new(Piece { plan }),
        })
    })
}

/// The scheduler's first analyzer rule: every piece put back in its place.
#[derive(Debug, Default)]
pub(crate) struct JoinPieces;

impl AnalyzerRule for JoinPieces {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        whole(plan)
    }

    fn name(&self) -> &str {
        "join_pieces"
    }
}

fn whole(plan: LogicalPlan) -> Result<LogicalPlan> {
    Ok(plan
        .transform_up_with_subqueries(|node| match &node {
            LogicalPlan::Extension(ext) => match as_piece(ext) {
                Some(piece) => Ok(Transformed::yes(whole(piece.clone())?)),
                None => Ok(Transformed::no(node)),
            },
            _ => Ok(Transformed::no(node)),
        })?
        .data)
}

/// The rest of a stage's plan, sent to executors as a message of its own. On the scheduler it
/// stands in the plan like its input (the same properties, rows and statistics); executors
/// decode its input in its place.
#[derive(Debug)]
pub(crate) struct PieceExec {
    input: Arc<dyn ExecutionPlan>,
}

impl DisplayAs for PieceExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PieceExec: sent as a message of its own")
    }
}

impl ExecutionPlan for PieceExec {
    fn name(&self) -> &str {
        "PieceExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    crate::optimizer::input_statistics!(as_they_are);

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    crate::optimizer::no_expressions!();

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(PieceExec {
            input: only_child(self.name(), children)?,
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }

    /// An extension node with no inputs: the marker and the input's own message as bytes,
    /// with deep expressions in pieces of their own.
    fn try_to_proto(&self, _ctx: &ExecutionPlanEncodeCtx<'_>) -> Result<Option<PhysicalPlanNode>> {
        let mut node = STAGE_PIECE.to_vec();
        stacker::maybe_grow(RED_ZONE, SEGMENT, || {
            PhysicalPlanNode::try_from_physical_plan_with_converter(
                Arc::clone(&self.input),
                &super::StrataPhysicalCodec::default(),
                &exprs::ExprsInPieces::default(),
            )?
            .encode(&mut node)
            .map_err(|e| protobuf_error("encode a piece of a physical plan", e))
        })?;
        Ok(Some(PhysicalPlanNode {
            physical_plan_type: Some(PhysicalPlanType::Extension(PhysicalExtensionNode {
                node,
                inputs: Vec::new(),
            })),
        }))
    }
}

/// A plan sent as a message of its own (a [`PieceExec`]'s input, the join of an inline
/// build side), read back from the bytes after its marker.
pub(crate) fn decode_plan(
    buf: &[u8],
    ctx: &TaskContext,
    codec: &dyn PhysicalExtensionCodec,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<Arc<dyn ExecutionPlan>> {
    stacker::maybe_grow(RED_ZONE, SEGMENT, || {
        PhysicalPlanNode::decode(buf)
            .map_err(|e| protobuf_error("decode a piece of a physical plan", e))?
            .try_into_physical_plan_with_converter(ctx, codec, converter)
    })
}

/// The scheduler's last physical rule but one (before [`super::stage_reads::StageReads`],
/// which leaves stage boundaries where they are): within each part of the plan that will run as one
/// stage, every part below [`STAGE_LEVELS`] levels made a [`PieceExec`]. Plans whose stages
/// are less deep come back unchanged.
#[derive(Debug, Default)]
pub(crate) struct StagesInPieces;

impl PhysicalOptimizerRule for StagesInPieces {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        cut_node(plan, 0, true)
    }

    fn name(&self) -> &str {
        "stages_in_pieces"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether Ballista starts a new stage below `plan` (its inputs are read from a shuffle).
fn ends_a_stage(plan: &dyn ExecutionPlan) -> bool {
    plan.is::<CoalescePartitionsExec>()
        || plan.is::<SortPreservingMergeExec>()
        || plan.downcast_ref::<RepartitionExec>().is_some_and(|r| {
            matches!(
                r.properties().output_partitioning(),
                Partitioning::Hash(_, _)
            )
        })
}

/// `plan`, a piece of its own when `depth` reaches [`STAGE_LEVELS`] and it `may_be_cut`.
fn cut_node(
    plan: Arc<dyn ExecutionPlan>,
    depth: usize,
    may_be_cut: bool,
) -> Result<Arc<dyn ExecutionPlan>> {
    // Subquery results are shared through the decoder, which a piece's own decoding would
    // not see.
    if plan.is::<ScalarSubqueryExec>() {
        return Ok(plan);
    }
    // Ballista looks at stage boundaries as they are, so they are not cut; it starts a new
    // stage under them and under a broadcast join's build side. A leaf is cut only for a deep
    // expression (an operator holding one is a piece, whose encoding cuts the expression).
    let ends_stage = ends_a_stage(plan.as_ref());
    let too_deep = depth >= STAGE_LEVELS && !plan.children().is_empty();
    let cut =
        may_be_cut && !ends_stage && (too_deep || exprs::holds_deep_expression(plan.as_ref()));
    let depth = if cut { 0 } else { depth };
    let broadcast = plan
        .downcast_ref::<HashJoinExec>()
        .is_some_and(|j| *j.partition_mode() == PartitionMode::CollectLeft);
    // Ballista decides a union's branches' stages by what the branches are.
    let union = plan.is::<UnionExec>();
    let old = plan.children();
    let mut children = Vec::with_capacity(old.len());
    let mut changed = false;
    for (i, child) in old.into_iter().enumerate() {
        let below = if ends_stage || (broadcast && i == 0) {
            0
        } else {
            depth + 1
        };
        let new = cut_node(Arc::clone(child), below, !union)?;
        changed |= !Arc::ptr_eq(&new, child);
        children.push(new);
    }
    let plan = if changed {
        crate::optimizer::with_children(plan, children)?
    } else {
        plan
    };
    Ok(if cut {
        Arc::new(PieceExec { input: plan })
    } else {
        plan
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::StrataLogicalCodec;
    use datafusion::prelude::SessionContext;

    fn height(plan: &LogicalPlan) -> usize {
        1 + plan.inputs().iter().map(|p| height(p)).max().unwrap_or(0)
    }

    /// 60 projections and filters on each other: 121 plan levels, 242 messages in one.
    fn deep_plan() -> LogicalPlan {
        use datafusion::logical_expr::{LogicalPlanBuilder, col, lit};
        let mut plan = LogicalPlanBuilder::empty(true)
            .project([lit(1i64).alias("x")])
            .unwrap();
        for i in 0..60i64 {
            plan = plan
                .filter(col("x").gt(lit(i)))
                .unwrap()
                .project([(col("x") + lit(1i64)).alias("x")])
                .unwrap();
        }
        plan.build().unwrap()
    }

    /// `f` on a thread with `stack` bytes of stack.
    fn on_stack<T: Send + 'static>(stack: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(stack)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    /// That the decoder refuses `plan` in one message (encoding it so needs a large stack).
    fn assert_refused_in_one_message(plan: &LogicalPlan) {
        let one = plan.clone();
        let err = on_stack(64 << 20, move || {
            let bytes =
                LogicalPlanNode::try_from_logical_plan(&one, &StrataLogicalCodec::default())
                    .unwrap()
                    .encode_to_vec();
            LogicalPlanNode::decode(bytes.as_slice()).unwrap_err()
        });
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }

    /// `pieces` sent by a client and analyzed by a scheduler, on threads with tokio's default
    /// stack of 2 MiB.
    fn through_scheduler(pieces: LogicalPlan) -> LogicalPlan {
        on_stack(2 << 20, move || {
            let codec = StrataLogicalCodec::default();
            let bytes = LogicalPlanNode::try_from_logical_plan(&pieces, &codec)
                .unwrap()
                .encode_to_vec();
            let back = LogicalPlanNode::decode(bytes.as_slice())
                .unwrap()
                .try_into_logical_plan(&SessionContext::new().task_ctx(), &codec)
                .unwrap();
            JoinPieces.analyze(back, &ConfigOptions::default()).unwrap()
        })
    }

    /// `plan` encoded on a scheduler and decoded on an executor, on threads with tokio's stack.
    fn through_executor(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        use datafusion_proto::physical_plan::AsExecutionPlan;
        on_stack(2 << 20, move || {
            let codec = crate::cluster::StrataPhysicalCodec::default();
            let bytes = PhysicalPlanNode::try_from_physical_plan(plan, &codec)
                .unwrap()
                .encode_to_vec();
            PhysicalPlanNode::decode(bytes.as_slice())
                .unwrap()
                .try_into_physical_plan(&TaskContext::default(), &codec)
                .unwrap()
        })
    }

    fn shown(plan: &Arc<dyn ExecutionPlan>) -> String {
        datafusion::physical_plan::displayable(plan.as_ref())
            .indent(false)
            .to_string()
    }

    /// The first value of `plan`'s first column, an `Int64`.
    fn first_value(plan: Arc<dyn ExecutionPlan>) -> i64 {
        let rows = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(datafusion::physical_plan::collect(
                plan,
                Arc::new(TaskContext::default()),
            ))
            .unwrap();
        rows[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .unwrap()
            .value(0)
    }

    #[test]
    fn a_plan_too_deep_for_one_message_travels_in_pieces_and_comes_back_whole() {
        let plan = deep_plan();
        assert!(height(&plan) > 100, "{} levels", height(&plan));

        // In one message the decoder refuses it.
        assert_refused_in_one_message(&plan);

        // In pieces it travels.
        let pieces = in_pieces(plan.clone()).unwrap();
        assert!(height(&pieces) <= LEVELS + 1, "{}", height(&pieces));
        assert_eq!(through_scheduler(pieces), plan);
    }

    /// `levels` projections of column `x` plus one on each other over `input`.
    fn projections(levels: usize, input: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        use datafusion::logical_expr::Operator;
        use datafusion::physical_expr::PhysicalExpr;
        use datafusion::physical_expr::expressions::{Column, binary, lit};
        use datafusion::physical_plan::projection::ProjectionExec;
        let schema = input.schema();
        let mut plan = input;
        for _ in 0..levels {
            let x: Arc<dyn PhysicalExpr> = Arc::new(Column::new("x", 0));
            let plus = binary(x, Operator::Plus, lit(1i64), &schema).unwrap();
            plan = Arc::new(ProjectionExec::try_new([(plus, "x".to_string())], plan).unwrap());
        }
        plan
    }

    /// `levels` projections over a row with `x` = 1, in one partition.
    fn deep_stage(levels: usize) -> Arc<dyn ExecutionPlan> {
        use datafusion::arrow::datatypes::Schema;
        use datafusion::physical_expr::expressions::lit;
        use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
        use datafusion::physical_plan::projection::ProjectionExec;
        let row = Arc::new(PlaceholderRowExec::new(Arc::new(Schema::empty())));
        let one = ProjectionExec::try_new([(lit(1i64), "x".to_string())], row).unwrap();
        projections(levels, Arc::new(one))
    }

    /// The longest run of levels without a piece between them.
    fn longest_run(plan: &Arc<dyn ExecutionPlan>) -> usize {
        let below = plan
            .children()
            .into_iter()
            .map(longest_run)
            .max()
            .unwrap_or(0);
        if plan.is::<PieceExec>() { 0 } else { below + 1 }
    }

    #[test]
    fn a_deep_stage_reaches_executors_in_pieces_and_is_decoded_whole() {
        let plan = deep_stage(100);
        let cut = StagesInPieces
            .optimize(Arc::clone(&plan), &ConfigOptions::default())
            .unwrap();
        assert!(
            longest_run(&cut) <= STAGE_LEVELS + 1,
            "{}",
            longest_run(&cut)
        );
        // No piece is left: each was decoded in its place.
        let back = through_executor(cut);
        assert_eq!(shown(&back), shown(&plan));
        assert_eq!(first_value(back), 101);
    }

    #[test]
    fn a_stage_boundary_starts_the_count_again() {
        use datafusion::physical_expr::expressions::Column;
        let rule = |plan: &Arc<dyn ExecutionPlan>| {
            StagesInPieces
                .optimize(Arc::clone(plan), &ConfigOptions::default())
                .unwrap()
        };
        let levels = STAGE_LEVELS - 2;
        // Too deep for one piece in one stage...
        let one_stage = projections(levels, deep_stage(levels));
        assert!(longest_run(&rule(&one_stage)) < longest_run(&one_stage));
        // ...but not when a shuffle splits it in two.
        let hash = Partitioning::Hash(vec![Arc::new(Column::new("x", 0))], 2);
        let shuffle = Arc::new(RepartitionExec::try_new(deep_stage(levels), hash).unwrap());
        let two_stages = projections(levels, shuffle);
        assert!(Arc::ptr_eq(&rule(&two_stages), &two_stages));
    }

    /// `x` plus one and times one in turns, `levels` levels deep (protobuf flattens runs of
    /// one operator, not these).
    fn deep_sum(x: Expr, levels: usize) -> Expr {
        use datafusion::logical_expr::lit;
        (0..levels).fold(x, |e, i| {
            if i % 2 == 0 {
                e + lit(1i64)
            } else {
                e * lit(1i64)
            }
        })
    }

    fn physical_deep_sum(
        x: Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        levels: usize,
    ) -> Arc<dyn datafusion::physical_expr::PhysicalExpr> {
        use datafusion::logical_expr::Operator;
        use datafusion::physical_expr::expressions::{BinaryExpr, lit};
        (0..levels).fold(x, |e, i| {
            let op = if i % 2 == 0 {
                Operator::Plus
            } else {
                Operator::Multiply
            };
            Arc::new(BinaryExpr::new(e, op, lit(1i64)))
        })
    }

    #[test]
    fn a_deep_expression_travels_to_the_scheduler_in_pieces_and_comes_back_whole() {
        use datafusion::common::Column;
        use datafusion::logical_expr::{LogicalPlanBuilder, col, lit};
        // A filter and an unnamed projection 60 levels deep: the projection's column is
        // named after its expression, which the plan above refers to.
        let plan = LogicalPlanBuilder::empty(true)
            .project([lit(1i64).alias("x")])
            .unwrap()
            .filter(deep_sum(col("x"), 60).gt(lit(0i64)))
            .unwrap()
            .project([deep_sum(col("x"), 60)])
            .unwrap()
            .sort([Expr::Column(Column::from_name(
                deep_sum(col("x"), 60).schema_name().to_string(),
            ))
            .sort(true, false)])
            .unwrap()
            .build()
            .unwrap();

        assert_refused_in_one_message(&plan);
        assert_eq!(through_scheduler(in_pieces(plan.clone()).unwrap()), plan);
    }

    #[test]
    fn a_deep_expression_reaches_executors_in_pieces_and_is_decoded_whole() {
        use datafusion::physical_expr::expressions::Column;
        use datafusion::physical_plan::projection::ProjectionExec;
        let row = deep_stage(0);
        let x = Arc::new(Column::new("x", 0));
        let plan: Arc<dyn ExecutionPlan> = Arc::new(
            ProjectionExec::try_new([(physical_deep_sum(x, 60), "y".to_string())], row).unwrap(),
        );
        let cut = StagesInPieces
            .optimize(Arc::clone(&plan), &ConfigOptions::default())
            .unwrap();
        assert!(cut.is::<PieceExec>(), "{}", shown(&cut));
        let back = through_executor(cut);
        assert_eq!(shown(&back), shown(&plan));
        assert_eq!(first_value(back), 31);
    }

    #[test]
    fn a_shallow_plan_is_left_as_it_is() {
        let plan = datafusion::logical_expr::LogicalPlanBuilder::empty(true)
            .build()
            .unwrap();
        assert_eq!(in_pieces(plan.clone()).unwrap(), plan);
    }
}
