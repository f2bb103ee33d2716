//! Database tables through `datafusion-table-providers`: one connection pool per database and
//! user, the table's schema read from the database, and Strata's own table and scan, which
//! send the database only the filters that mean there what they mean in Strata and travel to
//! a cluster's executors, which connect themselves.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Column, DFSchema, TableReference};
use datafusion::datasource::TableType;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Between, BinaryExpr, Cast, Expr, LogicalPlan, LogicalPlanBuilder, LogicalTableSource, Operator,
    TableProviderFilterPushDown, TableSource, lit,
};
use datafusion::physical_expr::EquivalenceProperties;
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
use datafusion_table_providers_mysql::pool::MySQLConnectionPool;
use datafusion_table_providers_postgres::DynPostgresConnectionPool;
use datafusion_table_providers_postgres::pool::PostgresConnectionPool;
use datafusion_table_providers_sqlite::DynSqliteConnectionPool;
use datafusion_table_providers_sqlite::SqliteTableFactory;
use datafusion_table_providers_sqlite::pool::SqliteConnectionPool;
use futures::TryStreamExt;
use secrecy::SecretString;

use super::types::{Reading, Readings, mysql_schema, postgres_schema, sqlite_schema};
use super::write::{DatabaseSink, WriteMode};
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
    partitions: usize,
) -> Result<Arc<dyn TableProvider>, DatabaseError> {
    let target = url.display();
    let backend = url.backend.name();
    let pool = pool_for(url, pools).await?;
    let wait = connect_timeout(url)?;
    let reference = TableReference::from(table);
    // Messages name the table as written, without the quotes that keep its case.
    let table = &reference.to_string();
    let failed = |message: String| DatabaseError::Table {
        backend,
        target: target.clone(),
        table: table.to_string(),
        message,
    };
    let (schema, casts) = match &pool {
        // PostgreSQL's catalog gives each column's type, which says how to read it.
        Pool::Postgres(_) => tokio::time::timeout(wait, postgres_schema(&pool, &reference))
            .await
            .map_err(|_| timed_out(url, wait))?
            .map_err(failed)?,
        Pool::MySql(_) => tokio::time::timeout(wait, mysql_schema(&pool, &reference))
            .await
            .map_err(|_| timed_out(url, wait))?
            .map_err(failed)?,
        Pool::Sqlite(p) => {
            let provider = tokio::time::timeout(
                wait,
                SqliteTableFactory::new(p.clone()).table_provider(reference.clone()),
            )
            .await
            .map_err(|_| timed_out(url, wait))?
            .map_err(|e| failed(root_message(e.as_ref())))?;
            // SQLite's provider takes the types of the first row's values (none for an
            // empty table, Null for a NULL): the columns' declared types say what they hold.
            let schema = sqlite_schema(&pool, &reference, &provider.schema())
                .await
                .map_err(failed)?;
            (schema, Vec::new())
        }
    };
    // A table that cannot be measured is read as one stream.
    let split = tokio::time::timeout(
        wait,
        plan_split(&pool, url, &reference, &schema, partitions),
    )
    .await
    .ok()
    .flatten();
    Ok(Arc::new(DatabaseTable {
        url: url.clone(),
        table: table.to_string(),
        reference,
        schema,
        split,
        create: false,
        query: None,
        casts,
    }))
}

/// Table `table` of the database `url` names, to write rows of `schema` into: the table as
/// it is, or, when it does not exist, one the first write creates with the columns of
/// `schema` (as the backend holds them). The second value tells whether it exists.
pub(super) async fn open_for_writing(
    url: &DatabaseUrl,
    table: &str,
    schema: &Schema,
    pools: Option<&Pools>,
    partitions: usize,
) -> Result<(Arc<dyn TableProvider>, bool), DatabaseError> {
    let reference = TableReference::from(table);
    let written = table;
    let table = &reference.to_string();
    let exists = match url.backend {
        // A missing SQLite file is made by the write.
        Backend::Sqlite if !url.path.as_ref().is_some_and(|p| p.exists()) => false,
        _ => {
            let pool = pool_for(url, pools).await?;
            let wait = connect_timeout(url)?;
            tokio::time::timeout(wait, super::write::exists(&pool, url, &reference))
                .await
                .map_err(|_| timed_out(url, wait))??
        }
    };
    if exists {
        return Ok((open(url, written, pools, partitions).await?, true));
    }
    let schema = super::write::storable(url.backend, schema, |message| DatabaseError::Write {
        backend: url.backend.name(),
        target: url.display(),
        table: table.to_string(),
        message,
    })?;
    let new = DatabaseTable {
        url: url.clone(),
        table: table.to_string(),
        reference,
        schema,
        split: None,
        create: true,
        query: None,
        casts: Vec::new(),
    };
    Ok((Arc::new(new), false))
}

/// `text` as an SQL string literal.
pub(super) fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `name` quoted as an identifier for `backend`: backquotes in MySQL, double quotes elsewhere.
pub(super) fn quote_ident(backend: Backend, name: &str) -> String {
    match backend {
        Backend::MySql => format!("`{}`", name.replace('`', "``")),
        _ => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// `reference` quoted for `backend`, schema first if it has one.
pub(super) fn quote_table(backend: Backend, reference: &TableReference) -> String {
    let table = quote_ident(backend, reference.table());
    match reference.schema() {
        Some(schema) => format!("{}.{table}", quote_ident(backend, schema)),
        None => table,
    }
}

/// The MySQL database `reference` is in, as SQL: its schema, or the connection's database.
pub(super) fn mysql_database(reference: &TableReference) -> String {
    reference
        .schema()
        .map_or("DATABASE()".to_string(), sql_literal)
}

/// Rows per partition below which a table is read as one stream.
const ROWS_PER_PARTITION: f64 = 250_000.0;

/// How a large table is read in parallel: one SELECT per range of its integer primary key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Split {
    /// The key column.
    column: String,
    /// Where each range after the first starts.
    bounds: Vec<i64>,
}

impl Split {
    /// The condition of each range: below the first bound (or NULL), between two bounds,
    /// from the last bound on. Together they take every row exactly once.
    fn ranges(&self) -> Vec<Expr> {
        let key = || Expr::Column(Column::new_unqualified(&self.column));
        let n = self.bounds.len();
        (0..=n)
            .map(|i| match i {
                0 => key().lt(lit(self.bounds[0])).or(key().is_null()),
                i if i == n => key().gt_eq(lit(self.bounds[n - 1])),
                i => key()
                    .gt_eq(lit(self.bounds[i - 1]))
                    .and(key().lt(lit(self.bounds[i]))),
            })
            .collect()
    }
}

/// Ranges of `reference`'s single-column integer primary key that split it into at most
/// `partitions` parts of at least [`ROWS_PER_PARTITION`] rows (PostgreSQL and MySQL: SQLite
/// answers on one connection), or `None`.
async fn plan_split(
    pool: &Pool,
    url: &DatabaseUrl,
    reference: &TableReference,
    schema: &SchemaRef,
    partitions: usize,
) -> Option<Split> {
    if partitions < 2 {
        return None;
    }
    let key_sql = match url.backend {
        Backend::Postgres => format!(
            "SELECT a.attname::text AS k, c.reltuples::float8 AS n FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
             WHERE i.indrelid = to_regclass({}) AND i.indisprimary AND i.indnatts = 1",
            sql_literal(&reference.to_quoted_string())
        ),
        Backend::MySql => format!(
            "SELECT MIN(k.COLUMN_NAME) AS k, CAST(MIN(t.TABLE_ROWS) AS DOUBLE) AS n \
             FROM information_schema.KEY_COLUMN_USAGE k JOIN information_schema.TABLES t \
             ON t.TABLE_SCHEMA = k.TABLE_SCHEMA AND t.TABLE_NAME = k.TABLE_NAME \
             WHERE k.CONSTRAINT_NAME = 'PRIMARY' AND k.TABLE_SCHEMA = {} \
             AND k.TABLE_NAME = {} GROUP BY k.TABLE_NAME HAVING COUNT(*) = 1",
            mysql_database(reference),
            sql_literal(reference.table())
        ),
        Backend::Sqlite => return None,
    };
    let found = fetch(
        pool,
        key_sql,
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Float64, true),
        ])),
    )
    .await
    .ok()?;
    let row = found.iter().find(|b| b.num_rows() > 0)?;
    let column = row.column(0).as_string_opt::<i32>()?.value(0).to_string();
    let estimate = row.column(1).as_primitive_opt::<Float64Type>()?.value(0);
    let integer = schema.field_with_name(&column).ok().is_some_and(|f| {
        matches!(
            f.data_type(),
            DataType::Int16 | DataType::Int32 | DataType::Int64
        )
    });
    if !integer {
        return None;
    }
    let cast = if url.backend == Backend::MySql {
        "SIGNED"
    } else {
        "BIGINT"
    };
    let table = quote_table(url.backend, reference);
    let k = quote_ident(url.backend, &column);
    let bounds = fetch(
        pool,
        format!(
            "SELECT CAST(MIN({k}) AS {cast}) AS lo, CAST(MAX({k}) AS {cast}) AS hi FROM {table}"
        ),
        Arc::new(Schema::new(vec![
            Field::new("lo", DataType::Int64, true),
            Field::new("hi", DataType::Int64, true),
        ])),
    )
    .await
    .ok()?;
    let row = bounds.iter().find(|b| b.num_rows() > 0)?;
    let lo = row.column(0).as_primitive_opt::<Int64Type>()?;
    let hi = row.column(1).as_primitive_opt::<Int64Type>()?;
    if lo.is_null(0) || hi.is_null(0) {
        return None;
    }
    let (lo, hi) = (lo.value(0) as i128, hi.value(0) as i128);
    // Statistics never gathered (PostgreSQL says -1): the key's span stands for the rows.
    let rows = if estimate > 0.0 {
        estimate
    } else {
        (hi - lo + 1) as f64
    };
    let parts = ((rows / ROWS_PER_PARTITION).ceil() as usize).min(partitions);
    if parts < 2 || hi - lo + 1 < parts as i128 {
        return None;
    }
    let bounds = (1..parts as i128)
        .map(|i| (lo + (hi - lo + 1) * i / parts as i128) as i64)
        .collect();
    Some(Split { column, bounds })
}

/// The rows of `sql`, with `schema`.
pub(super) async fn fetch(
    pool: &Pool,
    sql: String,
    schema: SchemaRef,
) -> DfResult<Vec<RecordBatch>> {
    let rows = run(pool.clone(), sql, schema.clone()).await?;
    rows.and_then(|b| {
        let schema = schema.clone();
        async move { conform(b, &schema) }
    })
    .try_collect()
    .await
}

/// The stream of `sql`'s rows from `pool`.
async fn run(pool: Pool, sql: String, schema: SchemaRef) -> DfResult<SendableRecordBatchStream> {
    match pool {
        Pool::Postgres(p) => {
            let p: Arc<DynPostgresConnectionPool> = p;
            get_stream(p, sql, schema).await
        }
        Pool::MySql(p) => {
            let p: Arc<DynMySQLConnectionPool> = p;
            get_stream(p, sql, schema).await
        }
        Pool::Sqlite(p) => {
            let p: Arc<DynSqliteConnectionPool> = p;
            get_stream(p, sql, schema).await
        }
    }
}

/// How `backend` spells SQL, for the SELECTs Strata writes.
pub(super) fn dialect(backend: Backend) -> Arc<dyn Dialect + Send + Sync> {
    match backend {
        Backend::Postgres => Arc::new(PostgreSqlDialect {}),
        Backend::MySql => Arc::new(MySqlDialect {}),
        Backend::Sqlite => Arc::new(SqliteDialect {}),
    }
}

/// The error of `url`'s database not answering within `wait`.
pub(super) fn timed_out(url: &DatabaseUrl, wait: Duration) -> DatabaseError {
    DatabaseError::Timeout {
        backend: url.backend.name(),
        target: url.display(),
        seconds: wait.as_secs(),
    }
}

pub(super) fn connect_timeout(url: &DatabaseUrl) -> Result<Duration, DatabaseError> {
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
pub(super) async fn pool_for(
    url: &DatabaseUrl,
    pools: Option<&Pools>,
) -> Result<Pool, DatabaseError> {
    let password = url.password(&|name: &str| std::env::var(name).ok());
    let wait = connect_timeout(url)?;
    let connect = || async {
        tokio::time::timeout(wait, connect(url, password.clone()))
            .await
            .map_err(|_| timed_out(url, wait))?
    };
    let Some(pools) = pools else {
        return connect().await;
    };
    // The key holds the password so a changed one connects anew; it is never shown.
    let key = format!("{}\n{}", url.canonical(), password.as_deref().unwrap_or(""));
    let cell = pools
        .open
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default()
        .clone();
    // A failed connection leaves the cell empty: the next statement tries again.
    cell.get_or_try_init(connect).await.cloned()
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
    if url.backend != Backend::Sqlite {
        put("host", &url.host);
        let port = if url.backend == Backend::Postgres {
            "port"
        } else {
            "tcp_port"
        };
        put(port, &url.port.to_string());
        for (key, value) in [
            ("user", &url.user),
            ("db", &url.database),
            ("pass", &password),
        ] {
            if let Some(value) = value {
                put(key, value);
            }
        }
    }
    match url.backend {
        Backend::Postgres => {
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
pub(super) fn driver_message(text: &str) -> String {
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
pub(super) fn root_message(e: &(dyn StdError + 'static)) -> String {
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
    split: Option<Split>,
    /// The table does not exist yet: the first write creates it with this schema.
    create: bool,
    /// Not a table but a SELECT over tables of the database (a join or aggregation sent
    /// whole, see `pushdown`); its columns are `schema`'s, in order.
    query: Option<String>,
    /// The columns read through a cast to their type in `schema`, or not read at all.
    casts: Readings,
}

impl DatabaseTable {
    /// The table as another process rebuilds it (with [`DatabaseTable::decode`]).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        put(&mut buf, self.url.canonical().as_bytes());
        put(&mut buf, self.reference.to_quoted_string().as_bytes());
        put(&mut buf, self.query.as_deref().unwrap_or("").as_bytes());
        put(&mut buf, &(self.casts.len() as u32).to_le_bytes());
        for (column, reading) in &self.casts {
            put(&mut buf, &(*column as u32).to_le_bytes());
            let refused = match reading {
                Reading::Cast => "",
                Reading::Refused(ty) => ty.as_str(),
            };
            put(&mut buf, refused.as_bytes());
        }
        if let Some(split) = &self.split {
            put(&mut buf, split.column.as_bytes());
            let bounds: Vec<u8> = split.bounds.iter().flat_map(|b| b.to_le_bytes()).collect();
            put(&mut buf, &bounds);
        }
        buf
    }

    /// The table [`DatabaseTable::encode`] wrote, with its schema.
    pub(crate) fn decode(buf: &[u8], schema: SchemaRef) -> DfResult<DatabaseTable> {
        let mut rest = buf;
        let url = utf8(take(&mut rest)?)?;
        let reference = TableReference::from(utf8(take(&mut rest)?)?.as_str());
        let query = Some(utf8(take(&mut rest)?)?).filter(|q| !q.is_empty());
        let mut casts = Vec::new();
        for _ in 0..number(take(&mut rest)?)? {
            let column = number(take(&mut rest)?)? as usize;
            let reading = match utf8(take(&mut rest)?)? {
                refused if !refused.is_empty() => Reading::Refused(refused),
                _ => Reading::Cast,
            };
            casts.push((column, reading));
        }
        let url = DatabaseUrl::parse(&url, None, &|_| None).map_err(external)?;
        let split = match rest.is_empty() {
            true => None,
            false => Some(Split {
                column: utf8(take(&mut rest)?)?,
                bounds: take(&mut rest)?
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect(),
            }),
        };
        Ok(DatabaseTable {
            url,
            table: reference.to_string(),
            reference,
            schema,
            split,
            create: false,
            query,
            casts,
        })
    }

    /// The SELECT `sql` over tables of the database at `url` (named `tables` in errors) as a
    /// table whose columns are `schema`'s, in the order `sql` gives them.
    pub(crate) fn query(url: DatabaseUrl, tables: String, sql: String, schema: SchemaRef) -> Self {
        DatabaseTable {
            url,
            reference: TableReference::bare(tables.as_str()),
            table: tables,
            schema,
            split: None,
            create: false,
            query: Some(sql),
            casts: Vec::new(),
        }
    }

    /// The database the table is in.
    pub(crate) fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// The table's name in the database, and the name errors give it; `None` for a query
    /// or a table a write has yet to create.
    pub(crate) fn remote(&self) -> Option<(&TableReference, &str)> {
        match self.query.is_none() && !self.create {
            true => Some((&self.reference, self.table.as_str())),
            false => None,
        }
    }

    /// The SELECT that reads `projection` of the rows passing `filters`, at most `limit`.
    fn select(
        &self,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<String> {
        if let Some(query) = &self.query {
            return Ok(self.select_from_query(query, projection, limit));
        }
        let source: Arc<dyn TableSource> = Arc::new(LogicalTableSource::new(self.schema.clone()));
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        let shown = projection.unwrap_or(&all);
        let predicate = conjunction(filters.iter().cloned().map(unnormalize_col));
        let plan = if self.casts_any(&self.columns_read(shown, predicate.as_ref())) {
            LogicalPlanBuilder::from(self.filtered_plan(
                self.reference.clone(),
                source,
                shown,
                predicate,
            )?)
            .limit(0, limit)?
            .build()?
        } else {
            LogicalPlanBuilder::scan_with_filters(
                self.reference.clone(),
                source,
                projection.cloned(),
                filters.to_vec(),
            )?
            .limit(0, limit)?
            .build()?
        };
        Ok(Unparser::new(dialect(self.url.backend).as_ref())
            .plan_to_sql(&plan)?
            .to_string())
    }

    /// How column `i` is read, if not as it is.
    fn reading(&self, i: usize) -> Option<&Reading> {
        self.casts.iter().find(|(c, _)| *c == i).map(|(_, r)| r)
    }

    /// Whether any of `columns` is read through a cast.
    pub(crate) fn casts_any(&self, columns: &[usize]) -> bool {
        columns
            .iter()
            .any(|i| self.reading(*i) == Some(&Reading::Cast))
    }

    /// The first of `columns` whose type cannot be read, as an error naming it and its type.
    pub(crate) fn refused(&self, columns: &[usize]) -> Option<DataFusionError> {
        columns.iter().find_map(|&i| match self.reading(i) {
            Some(Reading::Refused(ty)) => Some(external(DatabaseError::Table {
                backend: self.url.backend.name(),
                target: self.url.display(),
                table: self.table.clone(),
                message: format!(
                    "column '{}' is of type {ty}, which Strata cannot read; leave it out of \
                     the query",
                    self.schema.field(i).name()
                ),
            })),
            _ => None,
        })
    }

    /// `shown` and the columns `predicate` reads, in that order, each once.
    fn columns_read(&self, shown: &[usize], predicate: Option<&Expr>) -> Vec<usize> {
        let mut read = shown.to_vec();
        for column in predicate.iter().flat_map(|p| p.column_refs()) {
            if let Ok(i) = self.schema.index_of(&column.name)
                && !read.contains(&i)
            {
                read.push(i);
            }
        }
        read
    }

    /// The `shown` columns of the rows passing `predicate` (over unqualified columns), read by
    /// `name` from `source` through [`DatabaseTable::read_plan`]: the predicate's columns are
    /// read too, then left out again.
    pub(crate) fn filtered_plan(
        &self,
        name: TableReference,
        source: Arc<dyn TableSource>,
        shown: &[usize],
        predicate: Option<Expr>,
    ) -> DfResult<LogicalPlan> {
        let read = self.columns_read(shown, predicate.as_ref());
        let mut plan = LogicalPlanBuilder::from(self.read_plan(name, source, &read)?);
        if let Some(predicate) = predicate {
            plan = plan.filter(predicate)?;
        }
        let columns = shown
            .iter()
            .map(|&i| Expr::Column(Column::from_name(self.schema.field(i).name())));
        plan.project(columns)?.build()
    }

    /// The plan that reads `columns` of the table (by `name` in the database, from `source`)
    /// with their types in Strata: the scan itself, or, where a column is read through a
    /// cast, a SELECT of its own, named as the table, that casts them.
    pub(crate) fn read_plan(
        &self,
        name: TableReference,
        source: Arc<dyn TableSource>,
        columns: &[usize],
    ) -> DfResult<LogicalPlan> {
        let scan = LogicalPlanBuilder::scan(name.clone(), source, Some(columns.to_vec()))?;
        if !self.casts_any(columns) {
            return scan.build();
        }
        let exprs = columns.iter().map(|&i| {
            let field = self.schema.field(i);
            let column = Expr::Column(Column::new(Some(name.clone()), field.name()));
            match self.reading(i) {
                Some(Reading::Cast) => {
                    Expr::Cast(Cast::new(Box::new(column), field.data_type().clone()))
                        .alias(field.name())
                }
                _ => column,
            }
        });
        scan.project(exprs)?.alias(name.table())?.build()
    }

    /// `projection` of the first `limit` rows of `query` (which takes no filter).
    fn select_from_query(
        &self,
        query: &str,
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
    ) -> String {
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        let mut sql = match projection.filter(|p| **p != all) {
            None if limit.is_none() => return query.to_string(),
            None => format!("SELECT * FROM ({query}) AS q"),
            Some(p) => {
                let columns: Vec<String> = p
                    .iter()
                    .map(|&i| quote_ident(self.url.backend, self.schema.field(i).name()))
                    .collect();
                format!("SELECT {} FROM ({query}) AS q", columns.join(", "))
            }
        };
        if let Some(n) = limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        sql
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
        if self.query.is_some() {
            return Ok(vec![
                TableProviderFilterPushDown::Unsupported;
                filters.len()
            ]);
        }
        let schema = DFSchema::try_from(self.schema.as_ref().clone())?;
        let dialect = dialect(self.url.backend);
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

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mode = match op {
            _ if self.query.is_some() => {
                return Err(DataFusionError::Plan(format!(
                    "cannot write into a query over {}",
                    self.table
                )));
            }
            _ if self.create => WriteMode::Create,
            InsertOp::Append => WriteMode::Append,
            InsertOp::Overwrite => WriteMode::Overwrite,
            InsertOp::Replace => {
                return Err(DataFusionError::Plan(format!(
                    "REPLACE INTO is not supported for the {} table '{}'; use INSERT INTO",
                    self.url.backend.name(),
                    self.table
                )));
            }
        };
        let sink = DatabaseSink::new(
            self.url.clone(),
            self.table.clone(),
            self.reference.clone(),
            self.schema.clone(),
            mode,
        );
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
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
        let readable = (0..self.schema.fields().len()).find(|&i| self.refused(&[i]).is_none());
        let first = vec![readable.unwrap_or(0)];
        let projection = if count_only { Some(&first) } else { projection };
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        if let Some(e) = self.refused(projection.unwrap_or(&all)) {
            return Err(e);
        }
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        // A LIMIT is one SELECT; otherwise a large table is one SELECT per key range.
        let (sqls, split) = match (&self.split, limit) {
            (Some(split), None) => (
                split
                    .ranges()
                    .into_iter()
                    .map(|range| {
                        let mut filters = filters.to_vec();
                        filters.push(range);
                        self.select(projection, &filters, None)
                    })
                    .collect::<DfResult<Vec<_>>>()?,
                Some(split.column.clone()),
            ),
            _ => (vec![self.select(projection, filters, limit)?], None),
        };
        let scan = Arc::new(DatabaseScanExec::new(
            self.url.clone(),
            self.table.clone(),
            sqls,
            split,
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
    /// One SELECT per partition.
    sqls: Vec<String>,
    /// The key whose ranges the SELECTs read, if more than one.
    split: Option<String>,
    properties: Arc<PlanProperties>,
}

impl DatabaseScanExec {
    fn new(
        url: DatabaseUrl,
        table: String,
        sqls: Vec<String>,
        split: Option<String>,
        schema: SchemaRef,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(sqls.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        DatabaseScanExec {
            url,
            table,
            sqls,
            split,
            properties,
        }
    }

    /// The scan as another process rebuilds it (with [`DatabaseScanExec::decode`]).
    pub(crate) fn encode(&self) -> DfResult<Vec<u8>> {
        let mut buf = Vec::new();
        put(&mut buf, self.url.canonical().as_bytes());
        put(&mut buf, self.table.as_bytes());
        put(&mut buf, self.split.as_deref().unwrap_or("").as_bytes());
        put(&mut buf, &(self.sqls.len() as u32).to_le_bytes());
        for sql in &self.sqls {
            put(&mut buf, sql.as_bytes());
        }
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
        let split = Some(utf8(take(&mut rest)?)?).filter(|s| !s.is_empty());
        let count = take(&mut rest)?;
        let count = u32::from_le_bytes(count.try_into().map_err(|_| truncated())?);
        let sqls = (0..count)
            .map(|_| utf8(take(&mut rest)?))
            .collect::<DfResult<Vec<_>>>()?;
        let schema = StreamReader::try_new(std::io::Cursor::new(take(&mut rest)?), None)?.schema();
        let url = DatabaseUrl::parse(&url, None, &|_| None).map_err(external)?;
        Ok(DatabaseScanExec::new(url, table, sqls, split, schema))
    }
}

impl DisplayAs for DatabaseScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "DatabaseScanExec: {} {}",
            self.url.backend.name(),
            self.url.display()
        )?;
        if let Some(key) = &self.split {
            write!(f, " partitions={} by ranges of {key}", self.sqls.len())?;
        }
        write!(f, " sql={}", self.sqls.first().map_or("", String::as_str))
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

    crate::optimizer::no_expressions!();

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let pools = context.session_config().get_extension::<Pools>();
        let url = self.url.clone();
        let sql = self.sqls.get(partition).cloned().ok_or_else(|| {
            DataFusionError::Internal(format!("database scan has no partition {partition}"))
        })?;
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
            let rows = run(pool, sql, schema.clone()).await.map_err(&failed)?;
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

pub(super) fn external(e: DatabaseError) -> DataFusionError {
    DataFusionError::External(Box::new(crate::dataset::DatasetError::from(e)))
}

/// `bytes`, length first.
fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend((bytes.len() as u32).to_le_bytes());
    buf.extend(bytes);
}

fn truncated() -> DataFusionError {
    DataFusionError::Internal("database table: truncated".into())
}

/// The next field [`put`] wrote.
fn take<'a>(rest: &mut &'a [u8]) -> DfResult<&'a [u8]> {
    let (len, tail) = rest.split_at_checked(4).ok_or_else(truncated)?;
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    let (field, tail) = tail.split_at_checked(len).ok_or_else(truncated)?;
    *rest = tail;
    Ok(field)
}

fn number(bytes: &[u8]) -> DfResult<u32> {
    Ok(u32::from_le_bytes(
        bytes.try_into().map_err(|_| truncated())?,
    ))
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
    column_type(column, schema).is_some_and(|ty| compares_alike(backend, &ty, ordered))
}

/// Whether `backend` compares values of type `ty` as Strata does (`ordered`: by `<`, `>`,
/// not only `=`): numbers and booleans; decimals and dates but in SQLite (which keeps them
/// as its own numbers or text); text by equality in PostgreSQL (its order follows the
/// collation), bytewise in SQLite, never in MySQL (without case and trailing blanks).
pub(super) fn compares_alike(backend: Backend, ty: &DataType, ordered: bool) -> bool {
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
        DataType::Decimal128(..) | DataType::Decimal256(..) | DataType::Date32 => {
            backend != Backend::Sqlite
        }
        ty if text(Some(ty)) => match backend {
            Backend::Postgres => !ordered,
            Backend::Sqlite => true,
            Backend::MySql => false,
        },
        _ => false,
    }
}

/// The type of column `e` in `schema` (found by its qualified name, else by its bare name).
pub(super) fn column_type(e: &Expr, schema: &DFSchema) -> Option<DataType> {
    match e {
        Expr::Column(c) => schema
            .qualified_field_from_column(c)
            .map(|(_, f)| f)
            .or_else(|_| schema.field_with_unqualified_name(&c.name))
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
            vec![
                "SELECT \"t\".\"n\" FROM \"public\".\"t\" WHERE (\"t\".\"n\" < 1)".into(),
                "SELECT \"t\".\"n\" FROM \"public\".\"t\" WHERE (\"t\".\"n\" >= 1)".into(),
            ],
            Some("n".into()),
            schema.clone(),
        );
        let back = DatabaseScanExec::decode(&scan.encode().unwrap()).unwrap();
        assert_eq!(back.url, url);
        assert_eq!((back.table.as_str(), &back.sqls), ("public.t", &scan.sqls));
        assert_eq!(back.split.as_deref(), Some("n"));
        assert_eq!(back.properties().partitioning.partition_count(), 2);
        assert_eq!(back.schema(), schema);
        assert!(DatabaseScanExec::decode(&scan.encode().unwrap()[..9]).is_err());

        let mut table = DatabaseTable {
            url: url.clone(),
            table: "public.t".into(),
            reference: TableReference::from("public.t"),
            schema: schema.clone(),
            split: None,
            create: false,
            query: None,
            casts: Vec::new(),
        };
        let back = DatabaseTable::decode(&table.encode(), schema.clone()).unwrap();
        assert_eq!((&back.url, &back.table), (&url, &table.table));
        assert_eq!(
            (back.reference, back.split),
            (table.reference.clone(), None)
        );
        table.split = Some(Split {
            column: "n".into(),
            bounds: vec![-5, 100, i64::MAX],
        });
        table.casts = vec![(0, Reading::Cast), (7, Reading::Refused("point".into()))];
        let back = DatabaseTable::decode(&table.encode(), schema.clone()).unwrap();
        assert_eq!(
            (back.split, &back.casts),
            (table.split.clone(), &table.casts)
        );
        table.casts.pop();
        // A cast column is read through a SELECT of its own, filtered outside it.
        let sql = table
            .select(None, &[col("n").lt(lit(3i64))], Some(2))
            .unwrap();
        assert_eq!(
            sql,
            "SELECT \"t\".\"n\" FROM (SELECT CAST(\"t\".\"n\" AS BIGINT) AS \"n\" \
             FROM \"public\".\"t\" AS \"t\") AS \"t\" WHERE (\"t\".\"n\" < 3) LIMIT 2"
        );
        let query = DatabaseTable::query(url, "public.t".into(), "SELECT 1".into(), schema);
        let back = DatabaseTable::decode(&query.encode(), query.schema()).unwrap();
        assert_eq!(back.query.as_deref(), Some("SELECT 1"));
        assert!(back.split.is_none() && back.remote().is_none());
    }

    #[test]
    fn key_ranges_take_every_row_once() {
        let split = Split {
            column: "k".into(),
            bounds: vec![10, 20],
        };
        let ranges: Vec<String> = split.ranges().iter().map(|e| e.to_string()).collect();
        assert_eq!(
            ranges,
            [
                "k < Int64(10) OR k IS NULL",
                "k >= Int64(10) AND k < Int64(20)",
                "k >= Int64(20)"
            ]
        );
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
