//! Compressed CSV and JSON scans keep their compression on the way to an executor.
//!
//! DataFusion's plan serialization drops a text scan's compression, so an executor would
//! read gzip bytes as CSV. The scheduler marks such scans with [`CompressedScanExec`] (a
//! pass-through node that only records the compression); the codec turns it back into the
//! scan with its compression on the executor.

use std::fmt;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::parsers::CompressionTypeVariant;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::physical_plan::{FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

use crate::optimizer::only_child;

/// A compressed file scan (its only child), marked so that its compression is serialized.
#[derive(Debug)]
pub struct CompressedScanExec {
    scan: Arc<dyn ExecutionPlan>,
    compression: CompressionTypeVariant,
}

impl CompressedScanExec {
    /// The compression as text, for the codec.
    pub fn compression(&self) -> String {
        self.compression.to_string()
    }
}

/// `scan` (a file scan decoded without its compression) reading `compression` again.
pub fn restore(scan: &Arc<dyn ExecutionPlan>, compression: &str) -> Result<Arc<dyn ExecutionPlan>> {
    let variant: CompressionTypeVariant = compression.parse()?;
    let config = scan
        .downcast_ref::<DataSourceExec>()
        .and_then(|ds| ds.data_source().downcast_ref::<FileScanConfig>())
        .ok_or_else(|| {
            DataFusionError::Internal("a compressed scan marker without its file scan".into())
        })?;
    let config = FileScanConfigBuilder::from(config.clone())
        .with_file_compression_type(FileCompressionType::from(variant))
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

impl DisplayAs for CompressedScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CompressedScanExec: compression={}", self.compression)
    }
}

impl ExecutionPlan for CompressedScanExec {
    fn name(&self) -> &str {
        "CompressedScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.scan.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.scan]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    crate::optimizer::no_expressions!();

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(CompressedScanExec {
            scan: only_child(self.name(), children)?,
            compression: self.compression,
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.scan.execute(partition, context)
    }
}

/// Marks every compressed file scan with [`CompressedScanExec`]; runs last on schedulers.
#[derive(Debug, Default)]
pub struct MarkCompressedScans;

impl PhysicalOptimizerRule for MarkCompressedScans {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let compression = node
                .downcast_ref::<DataSourceExec>()
                .and_then(|ds| ds.data_source().downcast_ref::<FileScanConfig>())
                .map(|c| c.file_compression_type)
                .filter(|c| c.is_compressed());
            match compression {
                Some(c) => Ok(Transformed::yes(Arc::new(CompressedScanExec {
                    scan: node,
                    compression: *c.get_variant(),
                })
                    as Arc<dyn ExecutionPlan>)),
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "mark_compressed_scans"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
