//! The table provider of a dataset: DataFusion's listing table, plus the recipe it was built
//! from, so that a plan naming it can be sent to another process and rebuilt there exactly
//! (globs, compression and CSV options included).

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::config::TableOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Constraints, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::cache::cache_manager::FileStatisticsCache;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};

use super::{Compression, DatasetOptions, Format, Location, build_format, listing_table};

/// What a dataset's listing table is made from, minus its schema.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Recipe {
    pub locations: Vec<String>,
    pub base_dir: Option<PathBuf>,
    pub options: DatasetOptions,
    pub format: Format,
    pub compression: Compression,
    pub extension: String,
    /// Names of the partition columns, which follow the file columns in the schema.
    pub partitions: Vec<String>,
}

/// A dataset as a DataFusion table: reads like the listing table it wraps.
#[derive(Debug)]
pub struct DatasetTable {
    inner: Arc<ListingTable>,
    recipe: Recipe,
    /// The recipe's locations when one is a glob (whose files scans filter); else empty.
    globs: Vec<Location>,
}

impl DatasetTable {
    pub(crate) fn new(inner: Arc<ListingTable>, recipe: Recipe) -> Self {
        let base = recipe
            .base_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("."));
        let mut globs: Vec<Location> = recipe
            .locations
            .iter()
            .filter_map(|l| Location::parse(l, &base).ok())
            .collect();
        if !globs.iter().any(|l| l.has_glob) {
            globs.clear();
        }
        DatasetTable {
            inner,
            recipe,
            globs,
        }
    }

    /// What it was made from.
    pub(crate) fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    /// The listing table it wraps.
    pub fn listing(&self) -> &ListingTable {
        &self.inner
    }

    /// `plan` reading only the files the table's globs name: DataFusion's listing lets a
    /// glob's `*` cross folders, Strata's does not (see [`Location::names`]).
    fn only_named_files(&self, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        let locations = &self.globs;
        if locations.is_empty() {
            return Ok(plan);
        }
        plan.transform_down(|node| {
            let Some(config) = node
                .downcast_ref::<DataSourceExec>()
                .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
            else {
                return Ok(Transformed::no(node));
            };
            let groups: Vec<FileGroup> = config
                .file_groups
                .iter()
                .map(|group| {
                    let named = group
                        .files()
                        .iter()
                        .filter(|f| locations.iter().any(|l| l.names(&f.object_meta.location)));
                    FileGroup::new(named.cloned().collect())
                })
                .collect();
            let config = FileScanConfigBuilder::from(config.clone())
                .with_file_groups(groups)
                .build();
            let exec: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
            Ok(Transformed::yes(exec))
        })
        .map(|t| t.data)
    }

    /// The table's description as bytes, for [`DatasetTable::decode`] in another process.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&self.recipe).expect("a recipe serializes")
    }

    /// Rebuild a table from [`DatasetTable::encode`]'s bytes and its full schema (file columns
    /// then partition columns), reading with `table_options` where the recipe leaves a choice
    /// and keeping its files' statistics in `statistics`.
    pub fn decode(
        bytes: &[u8],
        schema: SchemaRef,
        table_options: &TableOptions,
        statistics: Option<Arc<FileStatisticsCache>>,
    ) -> Result<Self> {
        let recipe: Recipe = serde_json::from_slice(bytes)
            .map_err(|e| DataFusionError::Internal(format!("invalid dataset description: {e}")))?;
        let base_dir = recipe
            .base_dir
            .clone()
            .unwrap_or_else(|| std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")));
        let locations = recipe
            .locations
            .iter()
            .map(|l| Location::parse(l, &base_dir))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let mut partition_cols = Vec::with_capacity(recipe.partitions.len());
        for name in &recipe.partitions {
            let field = schema.field_with_name(name)?;
            partition_cols.push((name.clone(), field.data_type().clone()));
        }
        let file_fields = schema
            .fields()
            .iter()
            .filter(|f| !recipe.partitions.contains(f.name()))
            .cloned()
            .collect::<Vec<_>>();
        let file_schema = Arc::new(Schema::new_with_metadata(
            file_fields,
            schema.metadata().clone(),
        ));
        let format = build_format(
            recipe.format,
            recipe.compression,
            &recipe.options,
            table_options,
        );
        let table = listing_table(
            &locations,
            format,
            &recipe.extension,
            partition_cols,
            file_schema,
            statistics,
        )?;
        Ok(DatasetTable::new(Arc::new(table), recipe))
    }
}

#[async_trait]
impl TableProvider for DatasetTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.inner.get_table_definition()
    }

    fn get_logical_plan(&'_ self) -> Option<Cow<'_, LogicalPlan>> {
        self.inner.get_logical_plan()
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.inner.get_column_default(column)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.scan(state, projection, filters, limit).await?;
        self.only_named_files(plan)
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> Result<ScanResult> {
        let scanned = self.inner.scan_with_args(state, args).await?;
        Ok(ScanResult::new(
            self.only_named_files(scanned.into_inner())?,
        ))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.inner.insert_into(state, input, insert_op).await
    }
}
