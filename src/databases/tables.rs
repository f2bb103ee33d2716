//! Database tables through `datafusion-table-providers`: one connection pool per database and
//! user, the table's schema read from the database, and Strata's own table and scan, which
//! send the database only the filters that mean there what they mean in Strata and travel to
//! a cluster's executors, which connect themselves.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, TableReference};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    Between, BinaryExpr, Expr, LogicalPlanBuilder, LogicalTableSource, Operator,
    TableProviderFilterPushDown,
};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SqliteDialect};
use datafusion_table_providers_common::UnsupportedTypeAction;
use datafusion_table_providers_common::sql::db_connection_pool::{JoinPushDown, Mode};
use datafusion_table_providers_common::sql::sql_provider_datafusion::get_stream;
use datafusion_table_providers_mysql::DynMySQLConnectionPool;
use datafusion_table_providers_mysql::MySQLTableFactory;
use datafusion_table_providers_mysql::pool::MySQLConnectionPool;
use datafusion_table_providers_postgres::DynPostgresConnectionPool;
use datafusion_table_providers_postgres::PostgresTableFactory;
use datafusion_table_providers_postgres::pool::PostgresConnectionPool;
use datafusion_table_providers_sqlite::DynSqliteConnectionPool;
use datafusion_table_providers_sqlite::SqliteTableFactory;
use datafusion_table_providers_sqlite::pool::SqliteConnectionPool;
use futures::TryStreamExt;
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

/// The schema of `table` in the database `url` names, read through the pool `pools` keeps
/// for it (or a new connection).
pub(super) async fn open(
    url: &DatabaseUrl,
    table: &str,
    pools: Option<&Pools>,
) -> Result<Arc<dyn TableProvider>, DatabaseError> {
    let target = url.display();
    let backend = url.backend.name();
    let pool = pool_for(url, pools).await?;
    let wait = connect_timeout(url)?;
    let reference = TableReference::from(table);
    let provider = match &pool {
        Pool::Postgres(p) => {
            tokio::time::timeout(
                wait,
                PostgresTableFactory::new(p.clone()).table_provider(reference.clone()),
            )
            .await
        }
        Pool::MySql(p) => {
            tokio::time::timeout(
                wait,
                MySQLTableFactory::new(p.clone()).table_provider(reference.clone()),
            )
            .await
        }
        Pool::Sqlite(p) => {
            tokio::time::timeout(
                wait,
                SqliteTableFactory::new(p.clone()).table_provider(reference.clone()),
            )
            .await
        }
    }
    .map_err(|_| DatabaseError::Timeout {
        backend,
        target: target.clone(),
        seconds: wait.as_secs(),
    })?
    .map_err(|e| DatabaseError::Table {
        backend,
        target: target.clone(),
        table: table.to_string(),
        message: root_message(e.as_ref()),
    })?;
    Ok(Arc::new(DatabaseTable {
        url: url.clone(),
        table: table.to_string(),
        reference,
        schema: provider.schema(),
    }))
}

fn connect_timeout(url: &DatabaseUrl) -> Result<Duration, DatabaseError> {
    match url.options.get("connect_timeout") {
        Some(s) => s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| DatabaseError::BadUrl {
                url: url.display(),
                reason: format!("connect_timeout={s} is not a number of seconds"),
            }),
        None => Ok(CONNECT_TIMEOUT),
    }
}

/// The pool `pools` keeps for `url` and this process's credentials, opened if need be; a
/// fresh one without `pools`.
async fn pool_for(url: &DatabaseUrl, pools: Option<&Pools>) -> Result<Pool, DatabaseError> {
    let password = url.password(&|name: &str| std::env::var(name).ok());
    let wait = connect_timeout(url)?;
    let connect = || async {
        tokio::time::timeout(wait, connect(url, password.clone()))
            .await
            .map_err(|_| DatabaseError::Timeout {
                backend: url.backend.name(),
                target: url.display(),
                seconds: wait.as_secs(),
            })?
    };
    let Some(pools) = pools else {
        return connect().await;
    };
    // The key holds the password so a changed one connects anew; it is never shown.
    let key = format!("{}\n{}", url.canonical(), password.as_deref().unwrap_or(""));
    let mut open = pools.open.lock().await;
    if let Some(pool) = open.get(&key) {
        return Ok(pool.clone());
    }
    let pool = connect().await?;
    open.insert(key, pool.clone());
    Ok(pool)
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

/// A driver's error text on one line: its lines joined, without links to documentation.
fn driver_message(text: &str) -> String {
    let text = text.strip_prefix("Execution error: ").unwrap_or(text);
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("https://"))
        .map(|l| l.strip_prefix("ERROR: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join(": ")
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

/// A table in a database: where it is, and its schema. Its scans send the database the
/// columns, filters and limit they can, as SQL in the backend's dialect, and connect when they
/// run, in whichever process runs them.
#[derive(Debug, Clone)]
pub(crate) struct DatabaseTable {
    url: DatabaseUrl,
    table: String,
    reference: TableReference,
    schema: SchemaRef,
}

impl DatabaseTable {
    /// The table as another process rebuilds it (with [`DatabaseTable::decode`]).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        put(&mut buf, self.url.canonical().as_bytes());
        put(&mut buf, self.table.as_bytes());
        buf
    }

    /// The table [`DatabaseTable::encode`] wrote, with its schema.
    pub(crate) fn decode(buf: &[u8], schema: SchemaRef) -> DfResult<DatabaseTable> {
        let mut rest = buf;
        let url = utf8(take(&mut rest)?)?;
        let table = utf8(take(&mut rest)?)?;
        let url = DatabaseUrl::parse(&url, None, &|_| None).map_err(external)?;
        Ok(DatabaseTable {
            url,
            reference: TableReference::from(table.as_str()),
            table,
            schema,
        })
    }

    fn dialect(&self) -> Arc<dyn Dialect + Send + Sync> {
        match self.url.backend {
            Backend::Postgres => Arc::new(PostgreSqlDialect {}),
            Backend::MySql => Arc::new(MySqlDialect {}),
            Backend::Sqlite => Arc::new(SqliteDialect {}),
        }
    }

    /// The SELECT that reads `projection` of the rows passing `filters`, at most `limit`.
    fn select(
        &self,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<String> {
        let source = LogicalTableSource::new(self.schema.clone());
        let plan = LogicalPlanBuilder::scan_with_filters(
            self.reference.clone(),
            Arc::new(source),
            projection.cloned(),
            filters.to_vec(),
        )?
        .limit(0, limit)?
        .build()?;
        Ok(Unparser::new(self.dialect().as_ref())
            .plan_to_sql(&plan)?
            .to_string())
    }
}

#[async_trait]
impl TableProvider for DatabaseTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let schema = DFSchema::try_from(self.schema.as_ref().clone())?;
        let dialect = self.dialect();
        let unparser = Unparser::new(dialect.as_ref());
        Ok(filters
            .iter()
            .map(|f| {
                if same_meaning(self.url.backend, f, &schema) && unparser.expr_to_sql(f).is_ok() {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // No column (`count(*)`): read the first and keep only the row count.
        let count_only =
            projection.is_some_and(|p| p.is_empty()) && !self.schema.fields().is_empty();
        let first = vec![0];
        let projection = if count_only { Some(&first) } else { projection };
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let scan = Arc::new(DatabaseScanExec::new(
            self.url.clone(),
            self.table.clone(),
            self.select(projection, filters, limit)?,
            schema,
        ));
        if count_only {
            return Ok(Arc::new(ProjectionExec::try_new(
                Vec::<ProjectionExpr>::new(),
                scan,
            )?));
        }
        Ok(scan)
    }
}

/// A SELECT run in a database. It takes no filter or sort order from the physical optimizer
/// (only what [`same_meaning`] accepted at planning reaches the database), and connects when
/// it runs, through the pool its session keeps: on an executor, with that process's
/// credentials.
#[derive(Debug)]
pub(crate) struct DatabaseScanExec {
    url: DatabaseUrl,
    table: String,
    sql: String,
    properties: Arc<PlanProperties>,
}

impl DatabaseScanExec {
    fn new(url: DatabaseUrl, table: String, sql: String, schema: SchemaRef) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        DatabaseScanExec {
            url,
            table,
            sql,
            properties,
        }
    }

    /// The scan as another process rebuilds it (with [`DatabaseScanExec::decode`]).
    pub(crate) fn encode(&self) -> DfResult<Vec<u8>> {
        let mut buf = Vec::new();
        put(&mut buf, self.url.canonical().as_bytes());
        put(&mut buf, self.table.as_bytes());
        put(&mut buf, self.sql.as_bytes());
        let mut schema = Vec::new();
        StreamWriter::try_new(&mut schema, &self.schema())?.finish()?;
        put(&mut buf, &schema);
        Ok(buf)
    }

    /// The scan [`DatabaseScanExec::encode`] wrote.
    pub(crate) fn decode(buf: &[u8]) -> DfResult<DatabaseScanExec> {
        let mut rest = buf;
        let url = utf8(take(&mut rest)?)?;
        let table = utf8(take(&mut rest)?)?;
        let sql = utf8(take(&mut rest)?)?;
        let schema = StreamReader::try_new(std::io::Cursor::new(take(&mut rest)?), None)?.schema();
        let url = DatabaseUrl::parse(&url, None, &|_| None).map_err(external)?;
        Ok(DatabaseScanExec::new(url, table, sql, schema))
    }
}

impl DisplayAs for DatabaseScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "DatabaseScanExec: {} {} sql={}",
            self.url.backend.name(),
            self.url.display(),
            self.sql
        )
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
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let pools = context.session_config().get_extension::<Pools>();
        let url = self.url.clone();
        let sql = self.sql.clone();
        let schema = self.schema();
        let failed = {
            let (url, table) = (self.url.clone(), self.table.clone());
            move |e: DataFusionError| {
                external(DatabaseError::Read {
                    backend: url.backend.name(),
                    target: url.display(),
                    table: table.clone(),
                    message: driver_message(&e.to_string()),
                })
            }
        };
        let rows_failed = failed.clone();
        let open = async move {
            let pool = pool_for(&url, pools.as_deref()).await.map_err(external)?;
            let projected = schema.clone();
            let rows = match pool {
                Pool::Postgres(p) => {
                    let p: Arc<DynPostgresConnectionPool> = p;
                    get_stream(p, sql, projected).await
                }
                Pool::MySql(p) => {
                    let p: Arc<DynMySQLConnectionPool> = p;
                    get_stream(p, sql, projected).await
                }
                Pool::Sqlite(p) => {
                    let p: Arc<DynSqliteConnectionPool> = p;
                    get_stream(p, sql, projected).await
                }
            }
            .map_err(&failed)?;
            // The drivers' batches may differ from the declared schema in field names,
            // nullability or metadata, which shuffles and unions do not accept.
            Ok::<_, DataFusionError>(rows.map_err(rows_failed).and_then(move |batch| {
                let schema = schema.clone();
                async move { conform(batch, &schema) }
            }))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            futures::stream::once(open).try_flatten(),
        )))
    }
}

/// `batch` with `schema`, columns cast where the driver chose another type.
fn conform(batch: RecordBatch, schema: &SchemaRef) -> DfResult<RecordBatch> {
    if batch.schema() == *schema {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(column.clone())
            } else {
                Ok(datafusion::arrow::compute::cast(column, field.data_type())?)
            }
        })
        .collect::<DfResult<Vec<_>>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}

fn external(e: DatabaseError) -> DataFusionError {
    DataFusionError::External(Box::new(crate::dataset::DatasetError::from(e)))
}

/// `bytes`, length first.
fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend((bytes.len() as u32).to_le_bytes());
    buf.extend(bytes);
}

/// The next field [`put`] wrote.
fn take<'a>(rest: &mut &'a [u8]) -> DfResult<&'a [u8]> {
    let truncated = || DataFusionError::Internal("database table: truncated".into());
    let (len, tail) = rest.split_at_checked(4).ok_or_else(truncated)?;
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    let (field, tail) = tail.split_at_checked(len).ok_or_else(truncated)?;
    *rest = tail;
    Ok(field)
}

fn utf8(bytes: &[u8]) -> DfResult<String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|e| DataFusionError::Internal(format!("database table: {e}")))
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
    fn scans_and_tables_travel_as_their_url_sql_and_schema() {
        use datafusion::arrow::datatypes::{Field, Schema};
        let url = DatabaseUrl::parse("postgres://ann@db:5433/shop?sslmode=disable", None, &|_| {
            None
        })
        .unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let scan = DatabaseScanExec::new(
            url.clone(),
            "public.t".into(),
            "SELECT \"t\".\"n\" FROM \"public\".\"t\" WHERE (\"t\".\"n\" > 1)".into(),
            schema.clone(),
        );
        let back = DatabaseScanExec::decode(&scan.encode().unwrap()).unwrap();
        assert_eq!(back.url, url);
        assert_eq!(
            (back.table.as_str(), back.sql.as_str()),
            ("public.t", scan.sql.as_str())
        );
        assert_eq!(back.schema(), schema);
        assert!(DatabaseScanExec::decode(&scan.encode().unwrap()[..9]).is_err());

        let table = DatabaseTable {
            url: url.clone(),
            table: "public.t".into(),
            reference: TableReference::from("public.t"),
            schema: schema.clone(),
        };
        let back = DatabaseTable::decode(&table.encode(), schema).unwrap();
        assert_eq!((back.url, back.table), (url, table.table));
        assert_eq!(back.reference, table.reference);
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
