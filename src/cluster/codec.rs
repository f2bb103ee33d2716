//! How Strata's tables travel to a scheduler inside a logical plan: datasets as their recipe
//! (rebuilt there, globs and options included), in-memory tables as Arrow IPC, database tables
//! as their URL and name (executors connect themselves), pieces of deep plans as bytes of
//! their own. Everything else is left to Ballista's codec.

use std::io::Cursor;
use std::sync::Arc;

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::common::config::TableOptions;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan, ScalarUDF};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr_common::physical_expr::proto_decode::PhysicalExprDecodeCtx;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanNodeExt, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::PhysicalPlanNode;
use prost::Message;

use super::compressed::{self, CompressedScanExec};
use super::inline_builds::{self, InlineBuildExec};
use super::pieces;
use super::stage_reads::EstimatedExec;
use super::tails::StageMergeExec;
use super::views::CompactViewsExec;
use crate::optimizer::NullableSideExec;

use crate::dataset::DatasetTable;

const DATASET: u8 = 1;
const MEMORY: u8 = 2;
const DATABASE: u8 = 3;

/// The logical codec of Strata's clients and schedulers.
#[derive(Debug, Default)]
pub struct StrataLogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
}

fn internal(what: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("{what}: {e}"))
}

/// A memory table's partitions as length-prefixed Arrow IPC streams.
fn encode_memory(table: &MemTable, buf: &mut Vec<u8>) -> Result<()> {
    buf.extend((table.batches.len() as u32).to_le_bytes());
    for partition in &table.batches {
        let batches: Vec<RecordBatch> = partition
            .try_read()
            .map_err(|_| internal("memory table", "is being written to"))?
            .clone();
        let mut bytes = Vec::new();
        {
            let mut writer = StreamWriter::try_new(&mut bytes, &table.schema())?;
            for b in &batches {
                writer.write(b)?;
            }
            writer.finish()?;
        }
        buf.extend((bytes.len() as u64).to_le_bytes());
        buf.extend(bytes);
    }
    Ok(())
}

fn decode_memory(mut buf: &[u8], schema: SchemaRef) -> Result<MemTable> {
    let mut take = |n: usize| -> Result<&[u8]> {
        if buf.len() < n {
            return Err(internal("memory table", "truncated"));
        }
        let (head, rest) = buf.split_at(n);
        buf = rest;
        Ok(head)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
    let mut partitions = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes")) as usize;
        let reader = StreamReader::try_new(Cursor::new(take(len)?), None)?;
        partitions.push(reader.collect::<std::result::Result<Vec<_>, _>>()?);
    }
    MemTable::try_new(schema, partitions)
}

impl LogicalExtensionCodec for StrataLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        match buf.strip_prefix(pieces::PLAN_PIECE) {
            Some(rest) => pieces::decode(rest, ctx, self),
            None => self.ballista.try_decode(buf, inputs, ctx),
        }
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        match pieces::as_piece(node) {
            Some(plan) => pieces::encode(plan, self, buf),
            None => self.ballista.try_encode(node, buf),
        }
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        match pieces::encode_udf(node, buf) {
            Some(done) => done,
            None => self.ballista.try_encode_udf(node, buf),
        }
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        match buf.strip_prefix(pieces::EXPR_PIECE) {
            Some(rest) => pieces::decode_udf(rest),
            None => self.ballista.try_decode_udf(name, buf),
        }
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match buf.split_first() {
            Some((&DATASET, rest)) => {
                let options =
                    TableOptions::default_from_session_config(ctx.session_config().options());
                let statistics = ctx.runtime_env().cache_manager.get_file_statistic_cache();
                Ok(Arc::new(DatasetTable::decode(
                    rest, schema, &options, statistics,
                )?))
            }
            Some((&MEMORY, rest)) => Ok(Arc::new(decode_memory(rest, schema)?)),
            Some((&DATABASE, rest)) => crate::databases::decode_table(rest, schema),
            _ => self
                .ballista
                .try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(table) = node.downcast_ref::<DatasetTable>() {
            buf.push(DATASET);
            buf.extend(table.encode());
            Ok(())
        } else if let Some(table) = node.downcast_ref::<MemTable>() {
            buf.push(MEMORY);
            encode_memory(table, buf)
        } else if let Some(bytes) = crate::databases::encode_table(node.as_ref()) {
            buf.push(DATABASE);
            buf.extend(bytes);
            Ok(())
        } else {
            self.ballista
                .try_encode_table_provider(table_ref, node, buf)
        }
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }
}

/// Marks Strata's own plan nodes among Ballista's protobuf messages (no protobuf message
/// starts with the byte 0xFF).
const COMPRESSED_SCAN: &[u8] = b"\xFFstrata-compressed-scan:";
const NULLABLE_SIDE: &[u8] = b"\xFFstrata-nullable-side";
const COMPACT_VIEWS: &[u8] = b"\xFFstrata-compact-views";
const DATABASE_SCAN: &[u8] = b"\xFFstrata-database-scan:";
/// Followed by the join's message with an empty stand-in for its probe side (the node's
/// input).
const INLINE_BUILD: &[u8] = b"\xFFstrata-inline-build:";
/// Followed by `s` (sorted) or `c` (coalesced), then the fetch in decimal if any.
const STAGE_MERGE: &[u8] = b"\xFFstrata-stage-merge:";
/// A size estimate for the scheduler's planner alone: decoded as its input.
const ESTIMATED: &[u8] = b"\xFFstrata-estimated";

/// The physical codec of Strata's schedulers and executors.
#[derive(Debug, Default)]
pub struct StrataPhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for StrataPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = |what: &str| {
            inputs
                .first()
                .map(Arc::clone)
                .ok_or_else(|| internal(what, "without its input"))
        };
        if buf == NULLABLE_SIDE {
            return Ok(Arc::new(NullableSideExec::new(input("nullable side")?)));
        }
        if buf == ESTIMATED {
            return input("estimate");
        }
        if buf == COMPACT_VIEWS {
            return Ok(Arc::new(CompactViewsExec::new(input("view compaction")?)));
        }
        if let Some(rest) = buf.strip_prefix(DATABASE_SCAN) {
            return crate::databases::decode_scan(rest);
        }
        if let Some(rest) = buf.strip_prefix(STAGE_MERGE) {
            return decode_stage_merge(rest, input("stage merge")?);
        }
        if let Some(rest) = buf.strip_prefix(INLINE_BUILD) {
            let join = pieces::decode_plan(rest, ctx, self, proto_converter)?;
            return inline_builds::join_in_task(join, input("join with its build side")?);
        }
        if let Some(rest) = buf.strip_prefix(pieces::STAGE_PIECE) {
            return pieces::decode_plan(rest, ctx, self, proto_converter);
        }
        match buf.strip_prefix(COMPRESSED_SCAN) {
            Some(rest) => {
                let compression = std::str::from_utf8(rest).map_err(|e| internal("scan", e))?;
                let scan = inputs
                    .first()
                    .ok_or_else(|| internal("compressed scan", "without its scan"))?;
                compressed::restore(scan, compression)
            }
            None => self.ballista.try_decode(buf, inputs, ctx, proto_converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if node.downcast_ref::<NullableSideExec>().is_some() {
            buf.extend(NULLABLE_SIDE);
            return Ok(());
        }
        if node.downcast_ref::<EstimatedExec>().is_some() {
            buf.extend(ESTIMATED);
            return Ok(());
        }
        if node.downcast_ref::<CompactViewsExec>().is_some() {
            buf.extend(COMPACT_VIEWS);
            return Ok(());
        }
        if let Some(merge) = node.downcast_ref::<StageMergeExec>() {
            buf.extend(STAGE_MERGE);
            buf.push(if merge.sorted() { b's' } else { b'c' });
            if let Some(fetch) = merge.fetch() {
                buf.extend(fetch.to_string().as_bytes());
            }
            return Ok(());
        }
        if let Some(inline) = node.downcast_ref::<InlineBuildExec>() {
            buf.extend(INLINE_BUILD);
            return PhysicalPlanNode::try_from_physical_plan_with_converter(
                inline.without_probe()?,
                self,
                proto_converter,
            )?
            .encode(buf)
            .map_err(|e| internal("join with its build side", e));
        }
        if let Some(bytes) = crate::databases::encode_scan(node.as_ref()) {
            buf.extend(DATABASE_SCAN);
            buf.extend(bytes?);
            return Ok(());
        }
        if let Some(scan) = node.downcast_ref::<CompressedScanExec>() {
            buf.extend(COMPRESSED_SCAN);
            buf.extend(scan.compression().as_bytes());
            return Ok(());
        }
        self.ballista.try_encode(node, buf, proto_converter)
    }

    fn try_decode_expr(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn PhysicalExpr>],
        ctx: &PhysicalExprDecodeCtx<'_>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        match buf.strip_prefix(pieces::STAGE_EXPR_PIECE) {
            Some(rest) => pieces::decode_stage_expr_piece(rest, ctx),
            None => self.ballista.try_decode_expr(buf, inputs, ctx),
        }
    }
}

fn decode_stage_merge(buf: &[u8], input: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let (&kind, fetch) = buf
        .split_first()
        .ok_or_else(|| internal("stage merge", "without its kind"))?;
    let fetch = match fetch {
        [] => None,
        digits => Some(
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| internal("stage merge", "a fetch that is not a number"))?,
        ),
    };
    Ok(Arc::new(StageMergeExec::of(input, kind == b's', fetch)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn stage_merges_round_trip_with_their_order_and_fetch() {
        use datafusion::physical_expr::expressions::col;
        use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
        use datafusion::physical_plan::empty::EmptyExec;
        use datafusion::physical_plan::sorts::sort::SortExec;
        use datafusion::physical_plan::{ExecutionPlanProperties, Partitioning};
        use datafusion_proto::physical_plan::DefaultPhysicalProtoConverter;

        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let ordering =
            LexOrdering::new([PhysicalSortExpr::new_default(col("n", &schema).unwrap()).desc()])
                .unwrap();
        let parts = Arc::new(EmptyExec::new(schema).with_partitions(2));
        let sorted: Arc<dyn ExecutionPlan> = Arc::new(
            SortExec::new(ordering.clone(), parts.clone()).with_preserve_partitioning(true),
        );
        let codec = StrataPhysicalCodec::default();
        for (input, is_sorted, fetch) in [(sorted, true, Some(7)), (parts as _, false, None)] {
            let merge = Arc::new(StageMergeExec::of(input.clone(), is_sorted, fetch).unwrap());
            let mut buf = Vec::new();
            codec
                .try_encode(merge, &mut buf, &DefaultPhysicalProtoConverter {})
                .unwrap();
            let back = codec
                .try_decode(
                    &buf,
                    &[input],
                    &TaskContext::default(),
                    &DefaultPhysicalProtoConverter {},
                )
                .unwrap();
            let merge = back.downcast_ref::<StageMergeExec>().unwrap();
            assert_eq!(merge.sorted(), is_sorted);
            assert_eq!(merge.fetch(), fetch);
            assert!(matches!(
                back.output_partitioning(),
                Partitioning::UnknownPartitioning(1)
            ));
            let expected = is_sorted.then_some(&ordering);
            assert_eq!(back.output_ordering(), expected);
        }
    }

    #[test]
    fn memory_tables_round_trip_with_their_partitions() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = |v: Vec<i64>, s: Vec<Option<&str>>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(v)),
                    Arc::new(StringArray::from(s)),
                ],
            )
            .unwrap()
        };
        let parts = vec![
            vec![batch(vec![1, 2], vec![Some("a"), None])],
            vec![],
            vec![batch(vec![3], vec![Some("c")]), batch(vec![4], vec![None])],
        ];
        let table = Arc::new(MemTable::try_new(schema.clone(), parts.clone()).unwrap());
        let codec = StrataLogicalCodec::default();
        let mut buf = Vec::new();
        codec
            .try_encode_table_provider(&TableReference::bare("t"), table, &mut buf)
            .unwrap();
        let back = codec
            .try_decode_table_provider(
                &buf,
                &TableReference::bare("t"),
                schema,
                &TaskContext::default(),
            )
            .unwrap();
        let back = back.downcast_ref::<MemTable>().unwrap();
        let got: Vec<Vec<RecordBatch>> = back
            .batches
            .iter()
            .map(|p| p.try_read().unwrap().clone())
            .collect();
        assert_eq!(got, parts);
    }
}
