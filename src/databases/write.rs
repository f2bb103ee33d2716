//! Writing into database tables: `INSERT INTO` a database table, and `strata convert` into
//! one, which may create it. Every write is one transaction: a failed or cancelled write
//! leaves the table as it was (MySQL commits a `CREATE TABLE` at once, so a table created for
//! a write that then fails is dropped again).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::datasource::sink::DataSink;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType};
use datafusion_table_providers_common::sql::arrow_sql_gen::statement::{
    CreateTableBuilder, InsertBuilder,
};
use datafusion_table_providers_common::sql::db_connection_pool::DbConnectionPool;
use datafusion_table_providers_mysql::conn::MySQLConnection;
use datafusion_table_providers_mysql::pool::MySQLConnectionPool;
use datafusion_table_providers_postgres::arrow_sql_gen::statement_ext::CreateTableBuilderPostgresExt;
use datafusion_table_providers_postgres::conn::PostgresConnection;
use datafusion_table_providers_postgres::pool::PostgresConnectionPool;
use futures::StreamExt;
use futures::stream::BoxStream;
use mysql_async::prelude::Queryable;

use super::tables::{
    Pool, external, fetch, mysql_database, pool_for, quote_table, root_message, sql_literal,
};
use super::{Backend, DatabaseError, DatabaseUrl, Pools};

/// Bytes of SQL text one INSERT statement is kept under (MySQL refuses packets over its
/// `max_allowed_packet`, 16 MiB by default in MariaDB, 64 MiB in MySQL 8).
const STATEMENT_BYTES: usize = 4 << 20;

/// What a write does besides appending rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// Append to the table as it is.
    Append,
    /// Delete every row first (`INSERT OVERWRITE`).
    Overwrite,
    /// Create the table first (it did not exist when the write was planned).
    Create,
}

/// The rows of a write sent to a database table, in one transaction.
#[derive(Debug)]
pub(crate) struct DatabaseSink {
    url: DatabaseUrl,
    table: String,
    reference: TableReference,
    schema: SchemaRef,
    mode: WriteMode,
}

impl DatabaseSink {
    pub(crate) fn new(
        url: DatabaseUrl,
        table: String,
        reference: TableReference,
        schema: SchemaRef,
        mode: WriteMode,
    ) -> Self {
        // Every column may hold NULL as far as DataFusion checks: the database refuses a
        // NULL in a NOT NULL column itself, in a message that names the column.
        let schema = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        DatabaseSink {
            url,
            table,
            reference,
            schema,
            mode,
        }
    }

    fn failed(&self, message: String) -> DatabaseError {
        DatabaseError::Write {
            backend: self.url.backend.name(),
            target: self.url.display(),
            table: self.table.clone(),
            message,
        }
    }

    /// The statements that come before the rows: the table's creation, or the deletion of
    /// its rows.
    fn before(&self) -> Result<Vec<String>, DatabaseError> {
        let quoted = quote_table(self.url.backend, &self.reference);
        Ok(match self.mode {
            WriteMode::Append => Vec::new(),
            WriteMode::Overwrite => vec![format!("DELETE FROM {quoted}")],
            WriteMode::Create => {
                let builder = CreateTableBuilder::new(self.schema.clone(), self.reference.table());
                match self.url.backend {
                    Backend::Postgres => {
                        // The builder names the table without its schema: the schema is put
                        // first on the search path for the transaction.
                        let mut statements = Vec::new();
                        if let Some(schema) = self.reference.schema() {
                            statements.push(format!(
                                "SET LOCAL search_path TO \"{}\"",
                                schema.replace('"', "\"\"")
                            ));
                        }
                        statements.extend(builder.build_postgres());
                        statements
                    }
                    Backend::MySql => {
                        if self.reference.schema().is_some() {
                            return Err(self.failed(
                                "name the new table without a database: the URL names the \
                                 database it is created in"
                                    .into(),
                            ));
                        }
                        vec![builder.build_mysql()]
                    }
                    Backend::Sqlite => vec![builder.build_sqlite()],
                }
            }
        })
    }

    /// The INSERT statements of `batch`, each under [`STATEMENT_BYTES`] as far as its
    /// columns' sizes tell.
    fn inserts(&self, batch: &RecordBatch) -> DfResult<Vec<String>> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(Vec::new());
        }
        // Literals take about twice the bytes of the values.
        let bytes = 2 * batch.get_array_memory_size() + 16 * rows * batch.num_columns();
        let per_statement = (rows * STATEMENT_BYTES / bytes.max(1)).clamp(1, rows);
        let mut statements = Vec::new();
        let mut start = 0;
        while start < rows {
            let len = per_statement.min(rows - start);
            let part = vec![batch.slice(start, len)];
            let builder = InsertBuilder::new(&self.reference, &part);
            let sql = match self.url.backend {
                Backend::Postgres => builder.build_postgres(None),
                Backend::MySql => builder.build_mysql(None),
                Backend::Sqlite => builder.build_sqlite(None),
            }
            .map_err(|e| external(self.failed(root_message(&e))))?;
            statements.push(sql);
            start += len;
        }
        Ok(statements)
    }
}

impl DisplayAs for DatabaseSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let mode = match self.mode {
            WriteMode::Append => "append",
            WriteMode::Overwrite => "overwrite",
            WriteMode::Create => "create",
        };
        write!(
            f,
            "DatabaseSink: {} {} table={} ({mode}, one transaction)",
            self.url.backend.name(),
            self.url.display(),
            self.table
        )
    }
}

/// Why a write stopped.
enum Stop {
    /// The rows to write failed to come.
    Input(DataFusionError),
    /// The database refused, in its words.
    Database(String),
}

fn database(e: &(dyn std::error::Error + 'static)) -> Stop {
    Stop::Database(root_message(e))
}

#[async_trait]
impl DataSink for DatabaseSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        context: &Arc<TaskContext>,
    ) -> DfResult<u64> {
        let rows = Arc::new(AtomicU64::new(0));
        let before = self.before().map_err(external)?;
        let counted = rows.clone();
        let inserts = data
            .map(move |batch| {
                let batch = batch?;
                counted.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                self.inserts(&batch)
            })
            .flat_map(|statements| {
                futures::stream::iter(match statements {
                    Ok(statements) => statements.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(e) => vec![Err(e)],
                })
            });
        // MySQL commits DDL at once: its table is created before the transaction.
        let (create, before) = match (self.url.backend, self.mode) {
            (Backend::MySql, WriteMode::Create) => (before, Vec::new()),
            _ => (Vec::new(), before),
        };
        let statements: BoxStream<'_, DfResult<String>> =
            futures::stream::iter(before.into_iter().map(Ok))
                .chain(inserts)
                .boxed();
        let outcome = match self.url.backend {
            Backend::Sqlite => sqlite(&self.url, self.mode == WriteMode::Create, statements).await,
            _ => {
                let pools = context.session_config().get_extension::<Pools>();
                let pool = pool_for(&self.url, pools.as_deref())
                    .await
                    .map_err(external)?;
                match pool {
                    Pool::Postgres(p) => postgres(&p, statements).await,
                    Pool::MySql(ref p) => {
                        // A table made since the write was planned is neither made nor
                        // dropped here.
                        let create = match create.is_empty() {
                            false
                                if !exists(&pool, &self.url, &self.reference)
                                    .await
                                    .map_err(external)? =>
                            {
                                create
                            }
                            _ => Vec::new(),
                        };
                        let drop = format!(
                            "DROP TABLE {}",
                            quote_table(Backend::MySql, &self.reference)
                        );
                        mysql(p, &create, statements, &drop).await
                    }
                    Pool::Sqlite(_) => {
                        Err(Stop::Database("SQLite writes open their own file".into()))
                    }
                }
            }
        };
        match outcome {
            Ok(()) => Ok(rows.load(Ordering::Relaxed)),
            Err(Stop::Input(e)) => Err(e),
            Err(Stop::Database(message)) => Err(external(self.failed(message))),
        }
    }
}

/// Runs `statements` in one PostgreSQL transaction; dropped before the end (a cancelled
/// query), the transaction rolls back.
async fn postgres(
    pool: &PostgresConnectionPool,
    mut statements: BoxStream<'_, DfResult<String>>,
) -> Result<(), Stop> {
    let mut conn = pool.connect().await.map_err(|e| database(e.as_ref()))?;
    let pg = conn
        .as_any_mut()
        .downcast_mut::<PostgresConnection>()
        .ok_or_else(|| Stop::Database("not a PostgreSQL connection".into()))?;
    let tx = pg.conn.transaction().await.map_err(|e| database(&e))?;
    while let Some(sql) = statements.next().await {
        tx.batch_execute(&sql.map_err(Stop::Input)?)
            .await
            .map_err(|e| database(&e))?;
    }
    tx.commit().await.map_err(|e| database(&e))
}

/// Runs `create` (MySQL commits it at once), then `statements` in one transaction; when they
/// fail after a table was created, runs `drop`.
async fn mysql(
    pool: &MySQLConnectionPool,
    create: &[String],
    statements: BoxStream<'_, DfResult<String>>,
    drop: &str,
) -> Result<(), Stop> {
    let mut conn = pool.connect().await.map_err(|e| database(e.as_ref()))?;
    let my = conn
        .as_any_mut()
        .downcast_mut::<MySQLConnection>()
        .ok_or_else(|| Stop::Database("not a MySQL connection".into()))?;
    let mut guard = my.conn.lock().await;
    for sql in create {
        guard.query_drop(sql).await.map_err(|e| database(&e))?;
    }
    let written = async {
        let mut statements = statements;
        let mut tx = guard
            .start_transaction(mysql_async::TxOpts::default())
            .await
            .map_err(|e| database(&e))?;
        while let Some(sql) = statements.next().await {
            tx.query_drop(sql.map_err(Stop::Input)?)
                .await
                .map_err(|e| database(&e))?;
        }
        tx.commit().await.map_err(|e| database(&e))
    }
    .await;
    if written.is_err() && !create.is_empty() {
        // Best effort: the error that stopped the write is the one to report.
        let _ = guard.query_drop(drop).await;
    }
    written
}

/// A statement for the SQLite writer, or the word to commit.
enum Step {
    Run(String),
    Commit,
}

/// Runs `statements` in one SQLite transaction on a connection of its own (the pool's
/// single connection may be reading the rows being written). Creates the file only when the
/// table is created, and removes a file it created when the write fails.
async fn sqlite(
    url: &DatabaseUrl,
    create: bool,
    mut statements: BoxStream<'_, DfResult<String>>,
) -> Result<(), Stop> {
    use rusqlite::OpenFlags;
    let path: PathBuf = url.path.clone().unwrap_or_default();
    let new_file = create && !path.exists();
    let (send, mut receive) = tokio::sync::mpsc::channel::<Step>(2);
    let file = path.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let mut conn =
            rusqlite::Connection::open_with_flags(&file, flags).map_err(|e| e.to_string())?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        // A closed channel without the word to commit (an error, a cancelled query) rolls
        // the transaction back as it is dropped.
        while let Some(step) = receive.blocking_recv() {
            match step {
                Step::Run(sql) => tx.execute_batch(&sql).map_err(|e| e.to_string())?,
                Step::Commit => return tx.commit().map_err(|e| e.to_string()),
            }
        }
        Err("the write was stopped".into())
    });
    let fed = async {
        while let Some(sql) = statements.next().await {
            if send
                .send(Step::Run(sql.map_err(Stop::Input)?))
                .await
                .is_err()
            {
                // The writer stopped: its error is below.
                return Ok(());
            }
        }
        let _ = send.send(Step::Commit).await;
        Ok(())
    }
    .await;
    drop(send);
    let written = writer
        .await
        .map_err(|e| Stop::Database(format!("the writer failed: {e}")))
        .and_then(|r| r.map_err(Stop::Database));
    let outcome = fed.and(written);
    if outcome.is_err() && new_file {
        let _ = std::fs::remove_file(&path);
    }
    outcome
}

/// Whether `reference` exists in the database `pool` reaches.
pub(super) async fn exists(
    pool: &Pool,
    url: &DatabaseUrl,
    reference: &TableReference,
) -> Result<bool, DatabaseError> {
    let sql = match url.backend {
        Backend::Postgres => format!(
            "SELECT CAST(COUNT(*) AS BIGINT) AS e FROM (SELECT to_regclass({}) AS r) t \
             WHERE r IS NOT NULL",
            sql_literal(&reference.to_quoted_string())
        ),
        Backend::MySql => format!(
            "SELECT CAST(COUNT(*) AS SIGNED) AS e FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
            mysql_database(reference),
            sql_literal(reference.table())
        ),
        Backend::Sqlite => format!(
            "SELECT COUNT(*) AS e FROM sqlite_master WHERE type IN ('table', 'view') \
             AND name = {}",
            sql_literal(reference.table())
        ),
    };
    let schema = Arc::new(Schema::new(vec![Field::new("e", DataType::Int64, true)]));
    let found = fetch(pool, sql, schema)
        .await
        .map_err(|e| DatabaseError::Table {
            backend: url.backend.name(),
            target: url.display(),
            table: reference.to_string(),
            message: root_message(&e),
        })?;
    Ok(found.iter().any(|b| {
        b.num_rows() > 0
            && b.column(0)
                .as_primitive_opt::<Int64Type>()
                .is_some_and(|c| !c.is_null(0) && c.value(0) > 0)
    }))
}

/// The schema a new table gets for rows of `schema`: each column's type as the backend can
/// hold it (unsigned integers widened, text and binary of any layout as plain text and
/// binary, dictionaries as their values), or an error naming a column it cannot hold.
pub(super) fn storable(
    backend: Backend,
    schema: &Schema,
    fail: impl Fn(String) -> DatabaseError,
) -> Result<SchemaRef, DatabaseError> {
    fn store(backend: Backend, ty: &DataType) -> Option<DataType> {
        use DataType::*;
        Some(match ty {
            Int8 | Int16 | Int32 | Int64 | Float32 | Float64 | Boolean | Date32 => ty.clone(),
            UInt8 => Int16,
            UInt16 => Int32,
            UInt32 => Int64,
            UInt64 => Decimal128(20, 0),
            Float16 => Float32,
            Utf8 | LargeUtf8 | Utf8View => Utf8,
            Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => Binary,
            Date64 => Date32,
            Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) => Decimal128(*p, *s),
            Decimal256(p, s) if *p <= 38 => Decimal128(*p, *s),
            Timestamp(unit, zone) => Timestamp(*unit, zone.clone()),
            Time32(_) | Time64(_) => ty.clone(),
            Null => Utf8,
            Dictionary(_, values) => store(backend, values)?,
            // Arrays are PostgreSQL's; elsewhere lists are stored as JSON text.
            List(item) | LargeList(item) | FixedSizeList(item, _) => {
                let inner = store(backend, item.data_type())?;
                if matches!(inner, List(_)) {
                    return None;
                }
                List(Arc::new(Field::new("item", inner, true)))
            }
            Interval(_) if backend == Backend::Postgres => ty.clone(),
            _ => return None,
        })
    }
    let fields = schema
        .fields()
        .iter()
        .map(|f| match store(backend, f.data_type()) {
            Some(ty) => Ok(Field::new(f.name(), ty, f.is_nullable())),
            None => Err(fail(format!(
                "column '{}' has type {}, which a {} table cannot hold",
                f.name(),
                f.data_type(),
                backend.name()
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::TimeUnit;

    fn fail(message: String) -> DatabaseError {
        DatabaseError::Write {
            backend: "PostgreSQL",
            target: "h".into(),
            table: "t".into(),
            message,
        }
    }

    #[test]
    fn new_tables_take_types_the_database_holds() {
        let schema = Schema::new(vec![
            Field::new("u", DataType::UInt32, false),
            Field::new("v", DataType::Utf8View, true),
            Field::new(
                "d",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            ),
            Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("n", DataType::Null, true),
        ]);
        let stored = storable(Backend::Postgres, &schema, fail).unwrap();
        let types: Vec<_> = stored
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(
            types,
            vec![
                DataType::Int64,
                DataType::Utf8,
                DataType::Utf8,
                DataType::Timestamp(TimeUnit::Microsecond, None),
                DataType::Utf8
            ]
        );
        assert!(!stored.field(0).is_nullable());
        let map = Schema::new(vec![Field::new(
            "m",
            DataType::Struct(vec![Field::new("a", DataType::Int32, true)].into()),
            true,
        )]);
        let err = storable(Backend::MySql, &map, fail)
            .unwrap_err()
            .to_string();
        assert!(err.contains("column 'm' has type Struct"), "{err}");
        assert!(err.contains("MySQL table cannot hold"), "{err}");
    }
}
