//! Expressions deeper than a protobuf decoder accepts travel in pieces too: every few levels,
//! the rest of the expression is encoded as bytes of its own and decoded in its place.
//!
//! The optimizer merges chained projections into one expression, so a query over many
//! views or common table expressions that each compute on the last one's column can hold a
//! single filter or projection more than 50 levels deep, past the decoder's 100 messages.
//!
//! - Logical plans: the part is a function of no arguments ([`ExprPiece`]) with the part's name
//!   and type, so that the plan around it decodes unchanged; the piece of plan holding it puts
//!   the part back when the scheduler decodes it (the root is made a piece for that).
//! - Stages: plan operators holding a deep expression are sent as pieces of their own
//!   ([`super::PieceExec`]), encoded with [`ExprsInPieces`], which makes the part an extension
//!   expression; executors decode it in its place.

use std::cell::Cell;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr_common::physical_expr::proto_decode::PhysicalExprDecodeCtx;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::logical_plan::from_proto::parse_expr;
use datafusion_proto::logical_plan::to_proto::serialize_expr;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr_with_converter;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalPlanNodeExt,
    PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::physical_expr_node::ExprType;
use datafusion_proto::protobuf::{
    LogicalExprNode, PhysicalExprNode, PhysicalExtensionExprNode, PhysicalPlanNode,
};
use prost::Message;

use super::{RED_ZONE, SEGMENT, protobuf_error};

/// Expression levels one piece of an expression holds. Each level costs two messages (the
/// expression and the operator inside it), and a piece sits under at most a piece of plan.
pub(crate) const EXPR_LEVELS: usize = 16;

/// Mark a piece of an expression of a logical plan, and of a stage's plan.
pub(crate) const EXPR_PIECE: &[u8] = b"\xFFstrata-expr-piece:";
pub(crate) const STAGE_EXPR_PIECE: &[u8] = b"\xFFstrata-stage-expr-piece:";

/// The rest of an expression, encoded apart from the expression above it: to DataFusion, a
/// function of no arguments with the part's name and type.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct ExprPiece {
    name: String,
    field: FieldRef,
    expr: Vec<u8>,
    signature: Signature,
}

impl ExprPiece {
    fn udf(name: String, field: FieldRef, expr: Vec<u8>) -> ScalarUDF {
        ScalarUDF::new_from_impl(ExprPiece {
            name,
            field,
            expr,
            signature: Signature::nullary(Volatility::Volatile),
        })
    }
}

impl ScalarUDFImpl for ExprPiece {
    fn name(&self) -> &str {
        "strata_expr_piece"
    }

    fn display_name(&self, _args: &[Expr]) -> Result<String> {
        Ok(self.name.clone())
    }

    fn schema_name(&self, _args: &[Expr]) -> Result<String> {
        Ok(self.name.clone())
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.field.data_type().clone())
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(Arc::clone(&self.field))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        internal_err!("a piece of an expression was not put back in its place")
    }
}

/// How an [`ExprPiece`] travels, after [`EXPR_PIECE`].
#[derive(Clone, PartialEq, prost::Message)]
struct ExprPieceMessage {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    field: Option<datafusion_proto::protobuf::Field>,
    /// The part as a `LogicalExprNode`.
    #[prost(bytes = "vec", tag = "3")]
    expr: Vec<u8>,
}

/// [`EXPR_PIECE`] and the piece, if `udf` is one.
pub(crate) fn encode_udf(udf: &ScalarUDF, buf: &mut Vec<u8>) -> Option<Result<()>> {
    let piece = udf.inner().downcast_ref::<ExprPiece>()?;
    Some(encode_piece(piece, buf))
}

fn encode_piece(piece: &ExprPiece, buf: &mut Vec<u8>) -> Result<()> {
    let message = ExprPieceMessage {
        name: piece.name.clone(),
        field: Some(piece.field.as_ref().try_into()?),
        expr: piece.expr.clone(),
    };
    buf.extend(EXPR_PIECE);
    message
        .encode(buf)
        .map_err(|e| protobuf_error("encode a piece of an expression", e))
}

/// The piece read back from [`encode_udf`]'s bytes after the marker.
pub(crate) fn decode_udf(buf: &[u8]) -> Result<Arc<ScalarUDF>> {
    let message = ExprPieceMessage::decode(buf)
        .map_err(|e| protobuf_error("decode a piece of an expression", e))?;
    let field = message
        .field
        .as_ref()
        .ok_or_else(|| protobuf_error("decode a piece of an expression", "no type"))?;
    let field = Arc::new(Field::try_from(field)?);
    Ok(Arc::new(ExprPiece::udf(message.name, field, message.expr)))
}

/// Whether `expr` computes a value from its operands, and so may be sent apart from the
/// expression above it (an alias, an aggregate or window function, or a grouping set must
/// stay where its plan node looks for it).
fn may_be_cut(expr: &Expr) -> bool {
    match expr {
        Expr::ScalarFunction(f) => !f.func.inner().is::<ExprPiece>(),
        Expr::BinaryExpr(_)
        | Expr::Cast(_)
        | Expr::TryCast(_)
        | Expr::Not(_)
        | Expr::Negative(_)
        | Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::IsTrue(_)
        | Expr::IsFalse(_)
        | Expr::IsUnknown(_)
        | Expr::IsNotTrue(_)
        | Expr::IsNotFalse(_)
        | Expr::IsNotUnknown(_)
        | Expr::Like(_)
        | Expr::SimilarTo(_)
        | Expr::Between(_)
        | Expr::Case(_)
        | Expr::InList(_) => true,
        _ => false,
    }
}

/// `plan`'s expressions with every part below [`EXPR_LEVELS`] levels made a piece of its own;
/// `cut` is set when one was.
pub(crate) fn cut_expressions(plan: LogicalPlan, cut: &mut bool) -> Result<LogicalPlan> {
    let mut deep = false;
    plan.apply_expressions(|expr| {
        deep = height(expr) > EXPR_LEVELS;
        Ok(stop_if(deep))
    })?;
    if !deep {
        return Ok(plan);
    }
    // The schema the expressions are typed against: the inputs', or a scan's table.
    let schema = match &plan {
        LogicalPlan::TableScan(scan) => {
            DFSchema::try_from_qualified_schema(scan.table_name.clone(), &scan.source.schema())?
        }
        _ => merge_schema(&plan.inputs()),
    };
    Ok(plan
        .map_expressions(|expr| cut_expr(expr, 0, &schema, cut))?
        .data)
}

fn cut_expr(
    expr: Expr,
    level: usize,
    schema: &DFSchema,
    cut: &mut bool,
) -> Result<Transformed<Expr>> {
    if level >= EXPR_LEVELS && may_be_cut(&expr) {
        // An expression whose type cannot be told here travels as it is.
        if let Ok((_, field)) = expr.to_field(schema) {
            let name = expr.schema_name().to_string();
            let rest = cut_expr(expr, 0, schema, cut)?.data;
            let expr = stacker::maybe_grow(RED_ZONE, SEGMENT, || {
                serialize_expr(&rest, &super::super::StrataLogicalCodec::default())
                    .map_err(|e| protobuf_error("encode a piece of an expression", e))
            })?
            .encode_to_vec();
            *cut = true;
            let piece = ExprPiece::udf(name, field, expr);
            return Ok(Transformed::yes(Expr::ScalarFunction(
                ScalarFunction::new_udf(Arc::new(piece), Vec::new()),
            )));
        }
    }
    expr.map_children(|child| cut_expr(child, level + 1, schema, cut))
}

/// `plan` (a piece of a plan just decoded) with each piece of an expression in it put back,
/// in its subqueries too. Pieces of plan within are leaves here: they did that themselves.
pub(crate) fn put_back(
    plan: LogicalPlan,
    ctx: &TaskContext,
    codec: &dyn LogicalExtensionCodec,
) -> Result<LogicalPlan> {
    Ok(plan
        .transform_down_with_subqueries(|node| {
            node.map_expressions(|expr| put_back_expr(expr, ctx, codec))
        })?
        .data)
}

fn put_back_expr(
    expr: Expr,
    ctx: &TaskContext,
    codec: &dyn LogicalExtensionCodec,
) -> Result<Transformed<Expr>> {
    expr.transform_up(|expr| {
        let piece = match &expr {
            Expr::ScalarFunction(f) => f.func.inner().downcast_ref::<ExprPiece>(),
            _ => None,
        };
        let Some(piece) = piece else {
            return Ok(Transformed::no(expr));
        };
        let part = stacker::maybe_grow(RED_ZONE, SEGMENT, || {
            let node = LogicalExprNode::decode(piece.expr.as_slice())
                .map_err(|e| protobuf_error("decode a piece of an expression", e))?;
            let part = parse_expr(&node, ctx, codec)
                .map_err(|e| protobuf_error("decode a piece of an expression", e))?;
            put_back_expr(part, ctx, codec)
        })?;
        Ok(Transformed::yes(part.data))
    })
}

/// The number of levels of `expr`'s deepest part (a logical or a physical expression).
fn height<T: TreeNode>(expr: &T) -> usize {
    let mut below = 0;
    let _ = expr.apply_children(|child| {
        below = below.max(height(child));
        Ok(TreeNodeRecursion::Continue)
    });
    below + 1
}

fn stop_if(found: bool) -> TreeNodeRecursion {
    if found {
        TreeNodeRecursion::Stop
    } else {
        TreeNodeRecursion::Continue
    }
}

/// Whether one of `plan`'s own expressions is deeper than [`EXPR_LEVELS`].
pub(crate) fn holds_deep_expression(plan: &dyn ExecutionPlan) -> bool {
    let mut deep = false;
    let _ = plan.apply_expressions(&mut |expr| {
        deep = height(expr) > EXPR_LEVELS;
        Ok(stop_if(deep))
    });
    deep
}

/// Encodes a piece of a stage's plan with every part of an expression below [`EXPR_LEVELS`]
/// levels as an extension expression holding the part's own message.
#[derive(Default)]
pub(crate) struct ExprsInPieces {
    level: Cell<usize>,
}

impl PhysicalProtoConverterExtension for ExprsInPieces {
    fn proto_to_execution_plan(
        &self,
        proto: &PhysicalPlanNode,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.default_proto_to_execution_plan(proto, ctx)
    }

    fn execution_plan_to_proto(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> Result<PhysicalPlanNode> {
        // An expression's level counts from its plan node.
        let level = self.level.replace(0);
        let node =
            PhysicalPlanNode::try_from_physical_plan_with_converter(Arc::clone(plan), codec, self);
        self.level.set(level);
        node
    }

    fn proto_to_physical_expr(
        &self,
        proto: &PhysicalExprNode,
        input_schema: &datafusion::arrow::datatypes::Schema,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        self.default_proto_to_physical_expr(proto, input_schema, ctx)
    }

    fn physical_expr_to_proto(
        &self,
        expr: &Arc<dyn PhysicalExpr>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> Result<PhysicalExprNode> {
        let level = self.level.get();
        let cut = level >= EXPR_LEVELS && !expr.children().is_empty();
        // A part sent apart is the first level of its own message.
        self.level.set(if cut { 1 } else { level + 1 });
        let node = stacker::maybe_grow(RED_ZONE, SEGMENT, || {
            serialize_physical_expr_with_converter(expr, codec, self)
        });
        self.level.set(level);
        let node = node?;
        if !cut {
            return Ok(node);
        }
        let mut bytes = STAGE_EXPR_PIECE.to_vec();
        node.encode(&mut bytes)
            .map_err(|e| protobuf_error("encode a piece of an expression", e))?;
        Ok(PhysicalExprNode {
            expr_id: None,
            expr_type: Some(ExprType::Extension(PhysicalExtensionExprNode {
                expr: bytes,
                inputs: Vec::new(),
            })),
        })
    }
}

/// The part of an expression [`ExprsInPieces`] sent, read back from the bytes after
/// [`STAGE_EXPR_PIECE`] against the schema where it stands.
pub(crate) fn decode_stage_expr_piece(
    buf: &[u8],
    ctx: &PhysicalExprDecodeCtx<'_>,
) -> Result<Arc<dyn PhysicalExpr>> {
    stacker::maybe_grow(RED_ZONE, SEGMENT, || {
        let node = PhysicalExprNode::decode(buf)
            .map_err(|e| protobuf_error("decode a piece of an expression", e))?;
        ctx.decode(&node)
    })
}
