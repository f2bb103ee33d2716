//! Database tables through `datafusion-table-providers`: one connection pool per database and
//! user, the table's schema read from the database, and a wrapper that sends it only the
//! filters that mean there what they mean in Strata.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, TableReference};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion_table_providers_common::UnsupportedTypeAction;
use datafusion_table_providers_common::sql::db_connection_pool::{JoinPushDown, Mode};
use datafusion_table_providers_mysql::MySQLTableFactory;
use datafusion_table_providers_mysql::pool::MySQLConnectionPool;
use datafusion_table_providers_postgres::PostgresTableFactory;
use datafusion_table_providers_postgres::pool::PostgresConnectionPool;
use datafusion_table_providers_sqlite::SqliteTableFactory;
use datafusion_table_providers_sqlite::pool::SqliteConnectionPool;
use secrecy::SecretString;

use super::{Backend, DatabaseError, DatabaseUrl, Pools};

/// How long connecting may take unless the URL says `connect_timeout=N` (seconds).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An open connection pool to one database.
#[derive(Clone)]
pub(super) enum Pool {
    Postgres(Arc<PostgresConnectionPool>),
    MySql(Arc<MySQLConnectionPool>),
    Sqlite(Arc<SqliteConnectionPool>),
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pool::Postgres(_) => "Pool::Postgres",
            Pool::MySql(_) => "Pool::MySql",
            Pool::Sqlite(_) => "Pool::Sqlite",
        })
    }
}

/// Open `table` in the database `url` names, reusing `pools`' connection to it.
pub(super) async fn open(
    url: &DatabaseUrl,
    table: &str,
    pools: Option<&Pools>,
    password: Option<String>,
) -> Result<Arc<dyn TableProvider>, DatabaseError> {
    let target = url.display();
    let backend = url.backend.name();
    let seconds = match url.options.get("connect_timeout") {
        Some(s) => s.parse::<u64>().map_err(|_| DatabaseError::BadUrl {
            url: target.clone(),
            reason: format!("connect_timeout={s} is not a number of seconds"),
        })?,
        None => CONNECT_TIMEOUT.as_secs(),
    };
    let timeout = |_| DatabaseError::Timeout {
        backend,
        target: target.clone(),
        seconds,
    };
    let wait = Duration::from_secs(seconds);
    let pool = match pools {
        Some(pools) => {
            // The key holds the password so a changed one connects anew; it is never shown.
            let key = format!("{target}\n{}", password.as_deref().unwrap_or(""));
            let mut open = pools.open.lock().await;
            match open.get(&key) {
                Some(pool) => pool.clone(),
                None => {
                    let pool = tokio::time::timeout(wait, connect(url, password))
                        .await
                        .map_err(timeout)??;
                    open.insert(key, pool.clone());
                    pool
                }
            }
        }
        None => tokio::time::timeout(wait, connect(url, password))
            .await
            .map_err(timeout)??,
    };
    let reference = TableReference::from(table);
    let provider = match &pool {
        Pool::Postgres(p) => {
            tokio::time::timeout(
                wait,
                PostgresTableFactory::new(p.clone()).table_provider(reference),
            )
            .await
        }
        Pool::MySql(p) => {
            tokio::time::timeout(
                wait,
                MySQLTableFactory::new(p.clone()).table_provider(reference),
            )
            .await
        }
        Pool::Sqlite(p) => {
            tokio::time::timeout(
                wait,
                SqliteTableFactory::new(p.clone()).table_provider(reference),
            )
            .await
        }
    }
    .map_err(timeout)?
    .map_err(|e| DatabaseError::Table {
        backend,
        target: target.clone(),
        table: table.to_string(),
        message: root_message(e.as_ref()),
    })?;
    Ok(Arc::new(DatabaseTable {
        inner: provider,
        backend: url.backend,
    }))
}

async fn connect(url: &DatabaseUrl, password: Option<String>) -> Result<Pool, DatabaseError> {
    let failed = |e: &(dyn StdError + 'static)| DatabaseError::Connect {
        backend: url.backend.name(),
        target: url.display(),
        message: root_message(e),
    };
    let mut params: HashMap<String, SecretString> = HashMap::new();
    let mut put = |k: &str, v: &str| {
        params.insert(k.to_string(), SecretString::from(v.to_string()));
    };
    match url.backend {
        Backend::Postgres => {
            put("host", &url.host);
            put("port", &url.port.to_string());
            if let Some(user) = &url.user {
                put("user", user);
            }
            if let Some(db) = &url.database {
                put("db", db);
            }
            if let Some(pass) = &password {
                put("pass", pass);
            }
            // libpq's default: TLS when the server offers it.
            put(
                "sslmode",
                url.options.get("sslmode").map_or("prefer", String::as_str),
            );
            put("connection_pool_size", "4");
            PostgresConnectionPool::new(params)
                .await
                // jsonb (and any type without an Arrow one) is read as its text.
                .map(|p| {
                    Pool::Postgres(Arc::new(
                        p.with_unsupported_type_action(UnsupportedTypeAction::String),
                    ))
                })
                .map_err(|e| failed(&e))
        }
        Backend::MySql => {
            put("host", &url.host);
            put("tcp_port", &url.port.to_string());
            if let Some(user) = &url.user {
                put("user", user);
            }
            if let Some(db) = &url.database {
                put("db", db);
            }
            if let Some(pass) = &password {
                put("pass", pass);
            }
            let asked = url.options.get("ssl-mode").or(url.options.get("sslmode"));
            put(
                "sslmode",
                &asked.map_or("preferred".into(), |m| m.to_ascii_lowercase()),
            );
            let first = MySQLConnectionPool::new(params.clone()).await;
            // Like MySQL's own clients, TLS is preferred but not required unless asked for:
            // a server without it is connected to in the clear.
            let pool = match first {
                Err(e) if asked.is_none() && root_message(&e).contains("SSL") => {
                    params.insert("sslmode".into(), SecretString::from("disabled".to_string()));
                    MySQLConnectionPool::new(params).await
                }
                other => other,
            };
            pool.map(|p| Pool::MySql(Arc::new(p)))
                .map_err(|e| failed(&e))
        }
        Backend::Sqlite => {
            let path = url.path.as_deref().unwrap_or(std::path::Path::new(""));
            // SQLite would create a missing file; reading one must not.
            if let Err(e) = std::fs::metadata(path) {
                return Err(failed(&e));
            }
            let text = path.display().to_string();
            // Opened as it is: no journal mode or other setting of the file is changed.
            SqliteConnectionPool::new(
                &text,
                Mode::File,
                JoinPushDown::AllowedFor(text.clone()),
                Vec::new(),
                Duration::from_secs(5),
            )
            .await
            .map(|p| Pool::Sqlite(Arc::new(p)))
            .map_err(|e| failed(e.as_ref()))
        }
    }
}

/// The first line of the innermost error of a chain: the database's or the system's own words,
/// without the wrappers' advice.
fn root_message(e: &(dyn StdError + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    let text = inner.to_string();
    let line = text.lines().next().unwrap_or("").trim();
    line.strip_prefix("ERROR: ").unwrap_or(line).to_string()
}

/// A database table that hands the database only the filters whose meaning is the same there.
#[derive(Debug)]
struct DatabaseTable {
    inner: Arc<dyn TableProvider>,
    backend: Backend,
}

#[async_trait]
impl TableProvider for DatabaseTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let theirs = self.inner.supports_filters_pushdown(filters)?;
        let schema = DFSchema::try_from(self.inner.schema().as_ref().clone())?;
        Ok(filters
            .iter()
            .zip(theirs)
            .map(|(f, theirs)| match theirs {
                TableProviderFilterPushDown::Unsupported => theirs,
                _ if same_meaning(self.backend, f, &schema) => theirs,
                _ => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let scan = match projection {
            // No column (`count(*)`): the providers would answer a `SELECT 1` column the
            // plan does not expect; read the first column and keep only the row count.
            Some(columns) if columns.is_empty() && !self.schema().fields().is_empty() => {
                let rows = self
                    .inner
                    .scan(state, Some(&vec![0]), filters, limit)
                    .await?;
                Arc::new(ProjectionExec::try_new(Vec::<ProjectionExpr>::new(), rows)?)
            }
            _ => self.inner.scan(state, projection, filters, limit).await?,
        };
        Ok(Arc::new(DatabaseScanExec {
            backend: self.backend,
            properties: scan.properties().clone(),
            input: scan,
        }))
    }
}

/// The boundary of the database's work in a plan. The providers' scans take any filter and
/// sort order the physical optimizer offers them, whatever it means in the database (a text
/// order by collation, MySQL's case-blind equality); this node passes its input's rows and
/// lets nothing through, so only what [`same_meaning`] accepted at planning reaches the
/// database.
#[derive(Debug)]
struct DatabaseScanExec {
    backend: Backend,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl DisplayAs for DatabaseScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "DatabaseScanExec: {}", self.backend.name())
    }
}

impl ExecutionPlan for DatabaseScanExec {
    fn name(&self) -> &str {
        "DatabaseScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = children.pop().ok_or_else(|| {
            datafusion::error::DataFusionError::Internal("DatabaseScanExec without input".into())
        })?;
        Ok(Arc::new(DatabaseScanExec {
            backend: self.backend,
            properties: input.properties().clone(),
            input,
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}

/// Whether `expr` gives the same rows in the database as in Strata. Only plain comparisons of
/// columns with constants, NULL tests and their AND/OR/NOT are sent, and only over types whose
/// comparison the backend does as Strata does: text compares by collation in PostgreSQL
/// (equality only is the same), case-insensitively and blank-padded in MySQL (never sent), and
/// bytewise in SQLite, whose `LIKE` ignores case.
pub(super) fn same_meaning(backend: Backend, expr: &Expr, schema: &DFSchema) -> bool {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And | Operator::Or => {
                same_meaning(backend, left, schema) && same_meaning(backend, right, schema)
            }
            Operator::Eq | Operator::NotEq => comparable(backend, left, right, schema, false),
            Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq => {
                comparable(backend, left, right, schema, true)
            }
            _ => false,
        },
        Expr::Not(inner) => same_meaning(backend, inner, schema),
        Expr::IsNull(inner) | Expr::IsNotNull(inner) => matches!(inner.as_ref(), Expr::Column(_)),
        Expr::Between(Between {
            expr, low, high, ..
        }) => {
            comparable(backend, expr, low, schema, true)
                && comparable(backend, expr, high, schema, true)
        }
        Expr::InList(list) => list
            .list
            .iter()
            .all(|item| comparable(backend, &list.expr, item, schema, false)),
        Expr::Like(like) => {
            backend == Backend::Postgres
                && like.escape_char.is_none()
                && matches!(like.expr.as_ref(), Expr::Column(_))
                && matches!(like.pattern.as_ref(), Expr::Literal(..))
                && text(column_type(&like.expr, schema).as_ref())
        }
        _ => false,
    }
}

/// A column compared with a constant (either way round), over a type the backend compares as
/// Strata does (`ordered`: by `<`, `>`, not only `=`).
fn comparable(backend: Backend, a: &Expr, b: &Expr, schema: &DFSchema, ordered: bool) -> bool {
    let column = match (a, b) {
        (Expr::Column(_), Expr::Literal(..)) => a,
        (Expr::Literal(..), Expr::Column(_)) => b,
        _ => return false,
    };
    let Some(ty) = column_type(column, schema) else {
        return false;
    };
    match ty {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64
        | DataType::Boolean => true,
        // SQLite keeps decimals and dates as its own numbers or text.
        DataType::Decimal128(..) | DataType::Decimal256(..) | DataType::Date32 => {
            backend != Backend::Sqlite
        }
        ty if text(Some(&ty)) => match backend {
            Backend::Postgres => !ordered,
            Backend::Sqlite => true,
            Backend::MySql => false,
        },
        _ => false,
    }
}

fn column_type(e: &Expr, schema: &DFSchema) -> Option<DataType> {
    match e {
        Expr::Column(c) => schema
            .field_with_unqualified_name(&c.name)
            .ok()
            .map(|f| f.data_type().clone()),
        _ => None,
    }
}

fn text(ty: Option<&DataType>) -> bool {
    matches!(
        ty,
        Some(DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::logical_expr::{col, lit};

    fn schema() -> DFSchema {
        DFSchema::try_from(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("d", DataType::Date32, true),
        ]))
        .unwrap()
    }

    #[test]
    fn only_filters_with_the_same_meaning_in_the_database_are_sent() {
        let s = schema();
        let pg = Backend::Postgres;
        assert!(same_meaning(
            pg,
            &col("n").gt(lit(3)).and(col("s").eq(lit("a"))),
            &s
        ));
        assert!(same_meaning(pg, &col("s").like(lit("a%")), &s));
        assert!(same_meaning(pg, &col("d").is_null(), &s));
        assert!(same_meaning(
            pg,
            &col("n").in_list(vec![lit(1), lit(2)], true),
            &s
        ));
        // Text order follows the database's collation.
        assert!(!same_meaning(pg, &col("s").lt(lit("b")), &s));
        // Arithmetic and functions stay in Strata.
        assert!(!same_meaning(pg, &(col("n") + lit(1)).gt(lit(3)), &s));
        // MySQL compares text without case; SQLite's LIKE ignores case; SQLite dates are text.
        assert!(!same_meaning(Backend::MySql, &col("s").eq(lit("a")), &s));
        assert!(same_meaning(Backend::MySql, &col("n").eq(lit(1)), &s));
        assert!(!same_meaning(
            Backend::Sqlite,
            &col("s").like(lit("a%")),
            &s
        ));
        assert!(same_meaning(Backend::Sqlite, &col("s").lt(lit("b")), &s));
        assert!(!same_meaning(
            Backend::Sqlite,
            &col("d").gt(lit("2020-01-01")),
            &s
        ));
    }

    #[test]
    fn root_messages_are_the_innermost_first_line() {
        let io = std::io::Error::other("Connection refused (os error 111)");
        assert_eq!(root_message(&io), "Connection refused (os error 111)");
        #[derive(Debug, thiserror::Error)]
        #[error("PostgreSQL connection failed.\nsee the docs")]
        struct Outer(#[source] std::io::Error);
        let outer = Outer(std::io::Error::other(
            "ERROR: password authentication failed",
        ));
        assert_eq!(root_message(&outer), "password authentication failed");
    }
}
