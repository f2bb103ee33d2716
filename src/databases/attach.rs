//! Whole databases as catalogs (`ATTACH 'postgres://…' AS shop`, or `[databases.shop]` in the
//! catalog file): every table of the database appears as `shop.schema.table`, and those of
//! its default schema (PostgreSQL's `public`, MySQL's database, SQLite's `main`) also as
//! `shop.table`. The tables are listed when the database is attached; each is opened (its
//! columns read) when a statement first names it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::error::Result as DfResult;

use super::tables::{Pool, connect_timeout, fetch, open, pool_for, root_message, timed_out};
use super::{Backend, DatabaseError, DatabaseUrl, Pools};

/// A database attached as a catalog: its schemas and their tables as listed when attached.
#[derive(Debug)]
pub(crate) struct DatabaseCatalog {
    schemas: BTreeMap<String, Arc<DatabaseSchema>>,
    default: String,
}

impl DatabaseCatalog {
    /// The schema `name.table` reaches: the database's default one, whose tables are not
    /// listed a second time.
    pub(crate) fn default_schema(&self) -> Arc<dyn SchemaProvider> {
        // `attach` always makes the default schema, empty if need be.
        let schema = self.schemas[&self.default].clone();
        Arc::new(Unlisted(schema))
    }
}

impl CatalogProvider for DatabaseCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.schemas.keys().cloned().collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let name = spelled(self.schemas.keys(), name)?;
        Some(self.schemas[name].clone())
    }
}

/// Where a schema's tables are opened from.
#[derive(Debug, Clone)]
struct Source {
    url: DatabaseUrl,
    pools: Option<Arc<Pools>>,
    partitions: usize,
}

/// One schema of an attached database.
#[derive(Debug)]
pub(crate) struct DatabaseSchema {
    source: Source,
    /// The schema's name in the database (`None`: the one the connection is in).
    schema: Option<String>,
    /// The tables, as the database spells them.
    tables: Vec<String>,
    opened: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
}

impl DatabaseSchema {
    fn spelled(&self, name: &str) -> Option<&String> {
        spelled(&self.tables, name)
    }
}

/// The one of `names` that `name` names: spelled as written, or else the only one that
/// differs from it in case alone (SQL folds unquoted names to lower case).
fn spelled<'a>(
    names: impl IntoIterator<Item = &'a String> + Clone,
    name: &str,
) -> Option<&'a String> {
    names.clone().into_iter().find(|n| *n == name).or_else(|| {
        let mut found = names.into_iter().filter(|n| n.eq_ignore_ascii_case(name));
        match (found.next(), found.next()) {
            (Some(n), None) => Some(n),
            _ => None,
        }
    })
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[async_trait]
impl SchemaProvider for DatabaseSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.clone()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self.spelled(name) else {
            return Ok(None);
        };
        let source = &self.source;
        if let Some(open) = self
            .opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(table)
        {
            return Ok(Some(open.clone()));
        }
        let reference = match &self.schema {
            Some(schema) => format!("{}.{}", quoted(schema), quoted(table)),
            None => quoted(table),
        };
        let provider = Box::pin(open(
            &source.url,
            &reference,
            source.pools.as_deref(),
            source.partitions,
        ))
        .await
        .map_err(super::tables::external)?;
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(table.clone(), provider.clone());
        Ok(Some(provider))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.spelled(name).is_some()
    }
}

/// The default schema under the database's own name: it reaches the tables without listing
/// them again.
#[derive(Debug)]
struct Unlisted(Arc<DatabaseSchema>);

#[async_trait]
impl SchemaProvider for Unlisted {
    fn table_names(&self) -> Vec<String> {
        Vec::new()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        self.0.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.0.table_exist(name)
    }
}

/// The database at `url` as a catalog, its tables listed now.
pub(crate) async fn attach(
    url: &DatabaseUrl,
    pools: Option<Arc<Pools>>,
    partitions: usize,
) -> Result<DatabaseCatalog, DatabaseError> {
    let pool = pool_for(url, pools.as_deref()).await?;
    let wait = connect_timeout(url)?;
    let listed = tokio::time::timeout(wait, list(&pool, url))
        .await
        .map_err(|_| timed_out(url, wait))??;
    let default = match url.backend {
        Backend::Postgres => "public".to_string(),
        Backend::MySql => url.database.clone().unwrap_or_default(),
        Backend::Sqlite => "main".to_string(),
    };
    let source = Source {
        url: url.clone(),
        pools,
        partitions,
    };
    let mut schemas: BTreeMap<String, Vec<String>> = BTreeMap::new();
    schemas.entry(default.clone()).or_default();
    for (schema, table) in listed {
        schemas.entry(schema).or_default().push(table);
    }
    let schemas = schemas
        .into_iter()
        .map(|(name, mut tables)| {
            tables.sort();
            // MySQL and SQLite tables are named without their schema: the connection's
            // database, or the file's `main`.
            let schema = (url.backend == Backend::Postgres).then(|| name.clone());
            let schema = DatabaseSchema {
                source: source.clone(),
                schema,
                tables,
                opened: Mutex::default(),
            };
            (name, Arc::new(schema))
        })
        .collect();
    Ok(DatabaseCatalog { schemas, default })
}

/// Every (schema, table) of the database, system schemas left out.
async fn list(pool: &Pool, url: &DatabaseUrl) -> Result<Vec<(String, String)>, DatabaseError> {
    let sql = match url.backend {
        Backend::Postgres => {
            "SELECT CAST(table_schema AS text) AS s, CAST(table_name AS text) AS t \
             FROM information_schema.tables \
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema') \
             AND table_schema NOT LIKE 'pg\\_%'"
        }
        Backend::MySql => {
            "SELECT CAST(TABLE_SCHEMA AS CHAR) AS s, CAST(TABLE_NAME AS CHAR) AS t \
             FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
        }
        Backend::Sqlite => {
            "SELECT 'main' AS s, name AS t FROM sqlite_master \
             WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        }
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("s", DataType::Utf8, true),
        Field::new("t", DataType::Utf8, true),
    ]));
    let batches =
        fetch(pool, sql.to_string(), schema)
            .await
            .map_err(|e| DatabaseError::Connect {
                backend: url.backend.name(),
                target: url.display(),
                message: format!("cannot list its tables: {}", root_message(&e)),
            })?;
    let mut out = Vec::new();
    for batch in &batches {
        let (Some(s), Some(t)) = (
            batch.column(0).as_string_opt::<i32>(),
            batch.column(1).as_string_opt::<i32>(),
        ) else {
            continue;
        };
        for i in 0..batch.num_rows() {
            if !s.is_null(i) && !t.is_null(i) {
                out.push((s.value(i).to_string(), t.value(i).to_string()));
            }
        }
    }
    Ok(out)
}
