//! Tables in databases (PostgreSQL, MySQL/MariaDB, SQLite) next to files: URLs and their
//! credentials ([`url`]), and the tables read through `datafusion-table-providers` with the
//! filters, projections and limits that mean the same there sent to the database
//! (`tables`), whole joins and aggregations within one database sent to it (`pushdown`),
//! and written in one transaction (`write`; all three behind the `databases` feature).

mod url;

#[cfg(feature = "databases")]
mod attach;
#[cfg(feature = "databases")]
mod pushdown;
#[cfg(feature = "databases")]
mod tables;
#[cfg(feature = "databases")]
mod types;
#[cfg(feature = "databases")]
mod write;

use std::path::Path;
use std::sync::Arc;

use datafusion::catalog::{Session, TableProvider};

pub use url::{Backend, DatabaseUrl, is_database_url, split_table_option};

/// What is wrong with a database, its URL, its credentials or one of its tables. Every
/// message names the backend and the server or file, never a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseError {
    /// The text is not a URL of a backend Strata reads.
    #[error("'{url}' is not a database URL: {reason}")]
    BadUrl {
        /// The URL as written.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A password written in the URL.
    #[error(
        "{url}: write no password in the URL (it would show in queries and on the dashboard); \
         set {variable} or use {file}"
    )]
    InlinePassword {
        /// The URL with the password left out.
        url: String,
        /// The environment variable the backend's clients read.
        variable: &'static str,
        /// The backend's password file.
        file: &'static str,
    },
    /// The database cannot be reached, or refused the connection.
    #[error("{backend} {target}: cannot connect: {message}")]
    Connect {
        /// The backend's name.
        backend: &'static str,
        /// The server and database, or the file (no password).
        target: String,
        /// Why, in the backend's words.
        message: String,
    },
    /// The database did not answer in time.
    #[error("{backend} {target}: no answer within {seconds} s (set connect_timeout=N in the URL)")]
    Timeout {
        /// The backend's name.
        backend: &'static str,
        /// The server and database (no password).
        target: String,
        /// How long Strata waited.
        seconds: u64,
    },
    /// A table cannot be read: missing, no permission, or a column of a type Strata cannot map.
    #[error("{backend} {target}: table '{table}': {message}")]
    Table {
        /// The backend's name.
        backend: &'static str,
        /// The server and database, or the file (no password).
        target: String,
        /// The table as named.
        table: String,
        /// Why, in the backend's words.
        message: String,
    },
    /// The database failed while sending a table's rows.
    #[error("{backend} {target}: reading '{table}': {message}")]
    Read {
        /// The backend's name.
        backend: &'static str,
        /// The server and database, or the file (no password).
        target: String,
        /// The table as named.
        table: String,
        /// Why, in the backend's words.
        message: String,
    },
    /// A write into a table failed; the table is as it was before.
    #[error("{backend} {target}: writing '{table}': {message}; the table is unchanged")]
    Write {
        /// The backend's name.
        backend: &'static str,
        /// The server and database, or the file (no password).
        target: String,
        /// The table as named.
        table: String,
        /// Why, in the backend's words.
        message: String,
    },
    /// This build has no database support.
    #[error("{url}: this strata was built without database support (the `databases` feature)")]
    NotBuilt {
        /// The URL as written.
        url: String,
    },
}

/// The database connections an engine keeps open, one pool per database and user, so each
/// query does not connect anew. Kept in the session's configuration.
#[derive(Debug, Default)]
pub struct Pools {
    #[cfg(feature = "databases")]
    /// One cell per database and user: the first statement to need it connects, the others
    /// wait for that (and statements for other databases do not).
    open: std::sync::Mutex<
        std::collections::HashMap<String, Arc<tokio::sync::OnceCell<tables::Pool>>>,
    >,
}

/// Table `table` (`name` or `schema.name`) of the database at `url`: a `postgres://`,
/// `mysql://` or `mariadb://` URL, or an SQLite file (`sqlite:path` or a plain path, relative
/// to `base_dir`). Passwords come from the backend's environment variables and files.
pub async fn open_table(
    url: &str,
    table: &str,
    base_dir: Option<&Path>,
    state: &dyn Session,
) -> Result<Arc<dyn TableProvider>, DatabaseError> {
    let parsed = DatabaseUrl::parse(url, base_dir, &|name: &str| std::env::var(name).ok())?;
    #[cfg(feature = "databases")]
    {
        let pools = state.config().get_extension::<Pools>();
        // Boxed: the drivers' futures are deep, and every statement's future holds this one.
        let partitions = state.config().target_partitions();
        Box::pin(tables::open(&parsed, table, pools.as_deref(), partitions)).await
    }
    #[cfg(not(feature = "databases"))]
    {
        let _ = (parsed, table, state);
        Err(DatabaseError::NotBuilt { url: url.into() })
    }
}

/// Table `table` of the database at `url`, to write rows of `schema` into (with `INSERT
/// INTO`): the table as it is, or, when it does not exist, one whose first write creates it
/// with `schema`'s columns, in the same transaction as the rows (an SQLite file is made too).
/// The second value tells whether the table exists.
pub async fn open_for_writing(
    url: &str,
    table: &str,
    schema: &datafusion::arrow::datatypes::Schema,
    base_dir: Option<&Path>,
    state: &dyn Session,
) -> Result<(Arc<dyn TableProvider>, bool), DatabaseError> {
    let parsed = DatabaseUrl::parse(url, base_dir, &|name: &str| std::env::var(name).ok())?;
    #[cfg(feature = "databases")]
    {
        let pools = state.config().get_extension::<Pools>();
        let partitions = state.config().target_partitions();
        Box::pin(tables::open_for_writing(
            &parsed,
            table,
            schema,
            pools.as_deref(),
            partitions,
        ))
        .await
    }
    #[cfg(not(feature = "databases"))]
    {
        let _ = (parsed, table, schema, state);
        Err(DatabaseError::NotBuilt { url: url.into() })
    }
}

/// The database at `url` as a catalog (its schemas and their tables, listed now), and the
/// schema that reaches its default schema's tables under the catalog's own name (PostgreSQL's
/// `public`, MySQL's database, SQLite's `main`).
pub async fn attach(
    url: &str,
    base_dir: Option<&Path>,
    state: &dyn Session,
) -> Result<
    (
        Arc<dyn datafusion::catalog::CatalogProvider>,
        Arc<dyn datafusion::catalog::SchemaProvider>,
    ),
    DatabaseError,
> {
    let parsed = DatabaseUrl::parse(url, base_dir, &|name: &str| std::env::var(name).ok())?;
    #[cfg(feature = "databases")]
    {
        let pools = state.config().get_extension::<Pools>();
        let partitions = state.config().target_partitions();
        let catalog = Box::pin(attach::attach(&parsed, pools, partitions)).await?;
        let default = catalog.default_schema();
        Ok((Arc::new(catalog), default))
    }
    #[cfg(not(feature = "databases"))]
    {
        let _ = (parsed, state);
        Err(DatabaseError::NotBuilt { url: url.into() })
    }
}

/// A database table as bytes another process turns back into it ([`decode_table`]), or
/// `None` if `table` is not one.
pub fn encode_table(table: &dyn TableProvider) -> Option<Vec<u8>> {
    #[cfg(feature = "databases")]
    return table
        .downcast_ref::<tables::DatabaseTable>()
        .map(tables::DatabaseTable::encode);
    #[cfg(not(feature = "databases"))]
    {
        let _ = table;
        None
    }
}

/// The table [`encode_table`] wrote, with its schema.
pub fn decode_table(
    buf: &[u8],
    schema: datafusion::arrow::datatypes::SchemaRef,
) -> datafusion::error::Result<Arc<dyn TableProvider>> {
    #[cfg(feature = "databases")]
    return Ok(Arc::new(tables::DatabaseTable::decode(buf, schema)?));
    #[cfg(not(feature = "databases"))]
    {
        let _ = (buf, schema);
        Err(datafusion::error::DataFusionError::Plan(
            "this strata was built without database support (the `databases` feature)".into(),
        ))
    }
}

/// A database scan as bytes another process turns back into it ([`decode_scan`]), or `None`
/// if `plan` is not one.
pub fn encode_scan(
    plan: &dyn datafusion::physical_plan::ExecutionPlan,
) -> Option<datafusion::error::Result<Vec<u8>>> {
    #[cfg(feature = "databases")]
    return plan
        .downcast_ref::<tables::DatabaseScanExec>()
        .map(tables::DatabaseScanExec::encode);
    #[cfg(not(feature = "databases"))]
    {
        let _ = plan;
        None
    }
}

/// The scan [`encode_scan`] wrote.
pub fn decode_scan(
    buf: &[u8],
) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    #[cfg(feature = "databases")]
    return Ok(Arc::new(tables::DatabaseScanExec::decode(buf)?));
    #[cfg(not(feature = "databases"))]
    {
        let _ = buf;
        Err(datafusion::error::DataFusionError::Plan(
            "this strata was built without database support (the `databases` feature)".into(),
        ))
    }
}

/// The logical rules that send joins and aggregations to databases (none without the
/// `databases` feature).
pub fn optimizer_rules() -> Vec<Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>> {
    #[cfg(feature = "databases")]
    return vec![Arc::new(pushdown::SendToDatabase)];
    #[cfg(not(feature = "databases"))]
    Vec::new()
}

/// Whether `table` is a database table (which travels to a cluster's executors).
pub fn is_database_table(table: &dyn TableProvider) -> bool {
    #[cfg(feature = "databases")]
    return table.is::<tables::DatabaseTable>();
    #[cfg(not(feature = "databases"))]
    {
        let _ = table;
        false
    }
}
