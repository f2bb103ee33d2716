//! Views over state held in memory (the query lists behind `strata.query_log` and
//! `strata.queries`): one batch made afresh each time the view is scanned.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

/// Makes the view's rows, as one batch of the view's schema.
pub type Snapshot = Arc<dyn Fn() -> Result<RecordBatch> + Send + Sync>;

/// A view whose rows are whatever `snapshot` returns when a query scans it.
pub struct SnapshotTable {
    schema: SchemaRef,
    snapshot: Snapshot,
}

impl SnapshotTable {
    /// A view of `schema` read through `snapshot`.
    pub fn new(schema: SchemaRef, snapshot: Snapshot) -> Self {
        Self { schema, snapshot }
    }
}

impl fmt::Debug for SnapshotTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotTable")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = (self.snapshot)()?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::SessionContext;

    use super::*;

    #[tokio::test]
    async fn each_scan_reads_the_state_as_it_is_then() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let counter = Arc::new(AtomicI64::new(0));
        let (s, c) = (schema.clone(), counter.clone());
        let table = SnapshotTable::new(
            schema,
            Arc::new(move || {
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                let values = Int64Array::from_iter_values(0..n);
                Ok(RecordBatch::try_new(s.clone(), vec![Arc::new(values)])?)
            }),
        );
        let ctx = SessionContext::new();
        ctx.register_table("t", Arc::new(table)).unwrap();
        for expected in 1..=3 {
            let batches = ctx
                .sql("SELECT count(*) FROM t")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let count = batches[0]
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0);
            assert_eq!(count, expected);
        }
    }
}
