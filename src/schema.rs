//! The schema Strata's tables live in. Tables declared in the catalog file are listed at once
//! but resolved (files listed, schema inferred) only when a statement first uses them, so
//! start-up stays fast and one unreachable table does not stop the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::session_state::SessionState;
use parking_lot::RwLock;

use crate::catalog::CatalogError;
use crate::dataset::DatasetSpec;
use crate::error::Error;

/// A table declared in the catalog file and not resolved yet.
#[derive(Debug, Clone)]
pub(crate) struct PendingTable {
    pub spec: DatasetSpec,
    /// The catalog file, for error messages.
    pub catalog: String,
}

/// Wraps the session's default schema and resolves catalog tables on first use.
pub(crate) struct LazySchema {
    inner: Arc<dyn SchemaProvider>,
    pending: Mutex<HashMap<String, PendingTable>>,
    state: Weak<RwLock<SessionState>>,
}

impl std::fmt::Debug for LazySchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazySchema")
            .field("pending", &self.pending_names())
            .finish_non_exhaustive()
    }
}

impl LazySchema {
    pub fn new(
        inner: Arc<dyn SchemaProvider>,
        pending: HashMap<String, PendingTable>,
        state: Weak<RwLock<SessionState>>,
    ) -> Self {
        LazySchema {
            inner,
            pending: Mutex::new(pending),
            state,
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, PendingTable>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `name` is a catalog table not resolved yet.
    pub fn is_pending(&self, name: &str) -> bool {
        self.pending().contains_key(name)
    }

    fn pending_names(&self) -> Vec<String> {
        self.pending().keys().cloned().collect()
    }

    async fn resolve(&self, name: &str, table: PendingTable) -> DfResult<Arc<dyn TableProvider>> {
        let state = self
            .state
            .upgrade()
            .map(|s| s.read().clone())
            .ok_or_else(|| DataFusionError::Internal("the session has ended".into()))?;
        let provider = table.spec.open(&state).await.map_err(|source| {
            DataFusionError::from(Error::Catalog(CatalogError::Table {
                path: table.catalog.clone(),
                table: name.to_string(),
                source,
            }))
        })?;
        // Registered unless the table was dropped or replaced meanwhile.
        if self.pending().remove(name).is_some() {
            self.inner
                .register_table(name.to_string(), provider.clone())?;
        }
        Ok(provider)
    }
}

#[async_trait]
impl SchemaProvider for LazySchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.extend(self.pending_names());
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self.inner.table(name).await? {
            return Ok(Some(t));
        }
        let pending = self.pending().get(name).cloned();
        match pending {
            Some(p) => self.resolve(name, p).await.map(Some),
            None => Ok(None),
        }
    }

    async fn table_type(&self, name: &str) -> DfResult<Option<TableType>> {
        if self.pending().contains_key(name) {
            return Ok(Some(TableType::Base));
        }
        self.inner.table_type(name).await
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        self.pending().remove(&name);
        self.inner.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        self.pending().remove(name);
        self.inner.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name) || self.pending().contains_key(name)
    }
}
