//! The Arrow Flight SQL service: statements, prepared statements with bound parameters,
//! and the catalog's metadata. A query starts when its `FlightInfo` is asked for, so the
//! schema announced is the schema streamed; `DoGet` then streams its batches as they come.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightDescriptor,
    FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::scalar::ScalarValue;
use std::sync::atomic::Ordering;

use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status};

use super::connections::connection_info;
use super::history::{QueryLog, State};
use super::sessions::{self, Session, Sessions, messages};
use super::{Options, metadata};
use crate::{CancelHandle, Engine, Error, QueryResult};

/// The schema PostgreSQL clients read their catalog from (`--postgres`): not Flight SQL's.
const POSTGRES_CATALOG: &str = "pg_catalog";

/// Table types a catalog lists.
const TABLE_TYPES: [&str; 2] = ["TABLE", "VIEW"];

type FlightStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

/// A query's batches as they come, or the status it failed with.
pub(super) type Batches = Pin<Box<dyn Stream<Item = Result<RecordBatch, Status>> + Send>>;

/// A query started for a `FlightInfo`: its result until a `DoGet` takes it, and what stops
/// it. It is forgotten when its `DoGet` stream ends, or when nobody came for its result.
struct Query {
    result: Option<QueryResult>,
    control: Arc<Control>,
    since: Instant,
    id: u64,
    /// Its places under the server's limits, given back when it is forgotten.
    _places: Places,
    log: Arc<QueryLog>,
}

impl Drop for Query {
    /// A result nobody read (cancelled, expired) ends the query's entry in the log; one that
    /// was read is ended by its stream.
    fn drop(&mut self) {
        if self.result.is_some() {
            self.log.ended(self.id, State::Cancelled, 0, 0, None);
        }
    }
}

/// A query being planned: dropped there (its client left, or a cancel request came), it is
/// ended in the log as cancelled instead of being listed as running for ever.
struct Planning<'a> {
    log: &'a QueryLog,
    id: u64,
}

impl Drop for Planning<'_> {
    fn drop(&mut self) {
        log::info!(target: "strata::queries", "query {} cancelled while planned", self.id);
        self.log.ended(
            self.id,
            State::Cancelled,
            0,
            0,
            Some("cancelled before it ran".to_string()),
        );
    }
}

/// Places held under the limits on queries running at once.
type Places = Vec<tokio::sync::OwnedSemaphorePermit>;

/// Stops a query, and remembers why.
struct Control {
    cancel: CancelHandle,
    timed_out: std::sync::atomic::AtomicBool,
}

/// A prepared statement: its SQL and the values last bound to its parameters.
struct Prepared {
    sql: String,
    params: Vec<ScalarValue>,
    used: Instant,
}

/// The Flight SQL service over one engine.
#[derive(Clone)]
pub struct FlightSqlServer {
    engine: Arc<Engine>,
    queries: Arc<Mutex<HashMap<Vec<u8>, Query>>>,
    prepared: Arc<Mutex<HashMap<Vec<u8>, Prepared>>>,
    options: Options,
    info: Arc<SqlInfoData>,
    types: Arc<XdbcTypeInfoData>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
    /// Places for queries in all, and per user.
    places: Option<Arc<tokio::sync::Semaphore>>,
    user_places: Arc<Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>>,
    /// Running and recent queries, also the `strata.queries` table.
    log: Arc<QueryLog>,
    /// Sessions clients name in their cookie.
    sessions: Arc<Sessions>,
}

impl std::fmt::Debug for FlightSqlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightSqlServer").finish_non_exhaustive()
    }
}

/// A fresh, unguessable handle for a result or a prepared statement.
fn handle() -> Vec<u8> {
    uuid::Uuid::new_v4().as_bytes().to_vec()
}

/// The gRPC status for an engine error: the client's mistakes are invalid arguments.
fn status(error: Error) -> Status {
    let message = error.to_string();
    match error {
        Error::Syntax { .. } | Error::Plan { .. } | Error::Config(_) => {
            Status::invalid_argument(message)
        }
        Error::Dataset(_) | Error::Catalog(_) => Status::failed_precondition(message),
        Error::NotAllowed(_) => Status::permission_denied(message),
        Error::Cancelled => Status::cancelled(message),
        Error::ResourcesExhausted(_) => Status::resource_exhausted(message),
        Error::Execution(_) => Status::internal(message),
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// A stream of Flight data for `batches` of `schema`, announced first.
fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> Response<FlightStream> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Response::new(Box::pin(stream))
}

/// One batch, as a stream of Flight data.
fn encode_batch(batch: RecordBatch) -> Response<FlightStream> {
    encode(batch.schema(), futures::stream::once(async { Ok(batch) }))
}

/// A `FlightInfo` whose one endpoint's ticket is `ticket`.
fn flight_info(schema: &Schema, ticket: impl ProstMessageExt) -> Result<FlightInfo, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
    Ok(FlightInfo::new()
        .try_with_schema(schema)
        .map_err(internal)?
        .with_endpoint(endpoint)
        .with_total_records(-1)
        .with_total_bytes(-1))
}

/// A schema in the IPC form Flight SQL messages carry.
fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(internal)?;
    Ok(bytes)
}

impl FlightSqlServer {
    /// The service for `engine`, with `options`.
    pub fn new(engine: Arc<Engine>, options: Options) -> Self {
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "Strata");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "59.3.2");
        info.append(SqlInfo::FlightSqlServerReadOnly, options.read_only);
        info.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        let log = Arc::new(QueryLog::new(1000));
        if let Err(e) = log.register(&engine) {
            log::warn!(target: "strata::queries", "strata.queries is not available: {e}");
        }
        FlightSqlServer {
            log,
            engine,
            queries: Arc::default(),
            prepared: Arc::default(),
            options,
            info: Arc::new(info.build().expect("the server's SQL info is well formed")),
            types: Arc::new(metadata::xdbc_types()),
            next_id: Arc::new(1.into()),
            places: options
                .max_queries
                .map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
            user_places: Arc::default(),
            sessions: Arc::default(),
        }
    }

    /// A request's session: the one its cookie names (if it is the user's and still open),
    /// else its connection's; with `start`, one is started when there is none.
    fn session_of<T>(&self, request: &Request<T>, start: bool) -> Option<Arc<Session>> {
        let user = request
            .extensions()
            .get::<super::User>()
            .map(|u| u.0.as_str());
        let slot = connection_info(request.extensions()).map(|c| c.session.clone());
        let cookie = request
            .metadata()
            .get("cookie")
            .and_then(|v| v.to_str().ok());
        if let Some(session) = cookie.and_then(|c| self.sessions.find(c, user)) {
            if let Some(slot) = &slot {
                *slot.lock() = Some(session.clone());
            }
            return Some(session);
        }
        if let Some(slot) = &slot {
            let mut slot = slot.lock();
            match slot.as_ref() {
                Some(session) if session.is_closed() => *slot = None,
                Some(session) => return Some(session.clone()),
                None => {}
            }
        }
        if !start {
            return None;
        }
        let session = Session::new(self.engine.clone(), user.map(str::to_string));
        self.sessions.add(&session);
        if let Some(slot) = &slot {
            *slot.lock() = Some(session.clone());
        }
        Some(session)
    }

    /// The engine a request's statement `sql` runs on: its session's, or the server's when
    /// it has none (a statement that changes a setting starts one).
    fn engine_for<T>(&self, request: &Request<T>, sql: &str) -> Arc<Engine> {
        let changes = matches!(self.engine.changed_setting(sql), Ok(Some(_)));
        match self.session_of(request, changes) {
            Some(session) if changes => session.own_engine(),
            Some(session) => session.engine(),
            None => self.engine.clone(),
        }
    }

    /// The engine queries run on.
    pub(super) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Wait for a place under the limits on queries running at once (per user, then in
    /// all), for at most the queue timeout.
    async fn take_places(&self, user: Option<&super::User>) -> Result<Places, Status> {
        let mut places = Vec::new();
        let wait = self.options.queue_timeout;
        if let (Some(n), Some(user)) = (self.options.max_queries_per_user, user) {
            let semaphore = lock(&self.user_places)
                .entry(user.0.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(n)))
                .clone();
            let what = format!("{} already runs {n} queries", user.0);
            places.push(take_place(semaphore, wait, what).await?);
        }
        if let (Some(semaphore), Some(n)) = (&self.places, self.options.max_queries) {
            let what = format!("the server already runs {n} queries");
            places.push(take_place(semaphore.clone(), wait, what).await?);
        }
        Ok(places)
    }

    /// Forget results and prepared statements left behind, every `period`.
    pub(super) async fn expire_every(self, period: Duration) {
        let mut ticks = tokio::time::interval(period);
        loop {
            ticks.tick().await;
            self.expire(Instant::now());
        }
    }

    fn expire(&self, now: Instant) {
        let unread = self.options.unread_result;
        lock(&self.queries)
            .retain(|_, q| q.result.is_none() || now.duration_since(q.since) < unread);
        let unused = self.options.unused_prepared;
        lock(&self.prepared).retain(|_, p| now.duration_since(p.used) < unused);
    }

    /// Cancel the query a `FlightInfo` announced; whether it was still there to cancel.
    fn cancel(&self, info: &FlightInfo) -> bool {
        let handles: Vec<Vec<u8>> = info
            .endpoint
            .iter()
            .filter_map(|e| e.ticket.as_ref())
            .filter_map(|t| Any::decode(t.ticket.as_ref()).ok())
            .filter_map(|any| any.unpack::<TicketStatementQuery>().ok().flatten())
            .map(|t| t.statement_handle.to_vec())
            .collect();
        let mut queries = lock(&self.queries);
        let mut found = false;
        for handle in handles {
            if let Some(query) = queries.get(&handle) {
                found = true;
                query.control.cancel.cancel();
                // A result nobody reads yet is dropped, which stops its work.
                if query.result.is_some() {
                    queries.remove(&handle);
                }
            }
        }
        found
    }

    /// Refuse a statement that writes when the server is read-only.
    /// A session's own settings (`SET`, `RESET`) may change on a read-only server too, but
    /// never those that widen what the server reaches or uses (see
    /// [`crate::confine::check_setting`]).
    pub(super) fn allowed(&self, engine: &Engine, sql: &str) -> Result<(), Status> {
        if let Some(name) = engine.changed_setting(sql).map_err(status)? {
            return crate::confine::check_setting(&name)
                .map_err(|e| Status::permission_denied(format!("not allowed: {e}")));
        }
        if !self.options.read_only || engine.only_reads(sql).map_err(status)? {
            return Ok(());
        }
        let what: Vec<&str> = sql.split_whitespace().take(2).collect();
        Err(Status::permission_denied(format!(
            "this server is read-only: it runs queries, EXPLAIN, SHOW and DESCRIBE, not {}",
            what.join(" ").to_uppercase()
        )))
    }

    /// Start `sql` with `params` and keep its result for the `DoGet` that `FlightInfo` names.
    async fn start(
        &self,
        engine: &Engine,
        sql: &str,
        params: Vec<ScalarValue>,
        user: Option<&super::User>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (statement_handle, schema) = self.begin(engine, sql, params, user).await?;
        let info = flight_info(
            &schema,
            TicketStatementQuery {
                statement_handle: statement_handle.into(),
            },
        )?;
        Ok(Response::new(info))
    }

    /// Run `sql` for a client of another protocol, with the checks, limits and log of a
    /// Flight SQL query: its columns, and its batches as they come.
    pub(super) async fn run(
        &self,
        engine: &Engine,
        sql: &str,
        params: Vec<ScalarValue>,
        user: Option<&super::User>,
    ) -> Result<(SchemaRef, Batches), Status> {
        let (handle, _) = self.begin(engine, sql, params, user).await?;
        self.take(handle)
    }

    /// Start `sql` with `params` (once it is allowed and has its places) and keep its result
    /// under a new handle, which is returned with the result's schema.
    async fn begin(
        &self,
        engine: &Engine,
        sql: &str,
        params: Vec<ScalarValue>,
        user: Option<&super::User>,
    ) -> Result<(Vec<u8>, SchemaRef), Status> {
        self.allowed(engine, sql)?;
        let places = self.take_places(user).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let by = user.map(|u| format!(" by {}", u.0)).unwrap_or_default();
        log::info!(target: "strata::queries", "query {id} started{by}: {}", one_line(sql));
        self.log.started(id, user.map(|u| u.0.as_str()), sql);
        let planning = Planning { log: &self.log, id };
        let planned = match user {
            Some(user) => engine.for_user(&user.0).sql_with_params(sql, params).await,
            None => engine.sql_with_params(sql, params).await,
        };
        std::mem::forget(planning);
        let result = match planned {
            Ok(result) => result,
            Err(e) => {
                log::info!(target: "strata::queries", "query {id} failed: {e}");
                self.log.ended(id, State::Failed, 0, 0, Some(e.to_string()));
                return Err(status(e));
            }
        };
        let schema = result.schema();
        let statement_handle = handle();
        let control = Arc::new(Control {
            cancel: result.cancel_handle(),
            timed_out: Default::default(),
        });
        if let Some(limit) = self.options.query_time {
            let control = Arc::downgrade(&control);
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                if let Some(control) = control.upgrade() {
                    control.timed_out.store(true, Ordering::SeqCst);
                    control.cancel.cancel();
                }
            });
        }
        lock(&self.queries).insert(
            statement_handle.clone(),
            Query {
                result: Some(result),
                control,
                since: Instant::now(),
                id,
                _places: places,
                log: self.log.clone(),
            },
        );
        Ok((statement_handle, schema))
    }

    /// Take the result kept under `handle`: its schema and its batches, each counted and
    /// checked against the result size limit; the query is forgotten once they end or are
    /// dropped.
    fn take(&self, handle: Vec<u8>) -> Result<(SchemaRef, Batches), Status> {
        let (result, control, id, since) = {
            let mut queries = lock(&self.queries);
            let query = queries
                .get_mut(&handle)
                .filter(|q| q.result.is_some())
                .ok_or_else(|| {
                    Status::not_found("no such result (already read, cancelled or expired)")
                })?;
            let result = query.result.take().expect("checked");
            (result, query.control.clone(), query.id, query.since)
        };
        let schema = result.schema();
        let done = Forget {
            queries: self.queries.clone(),
            log: self.log.clone(),
            bytes: Default::default(),
            handle,
            id,
            since,
            rows: Default::default(),
            outcome: Default::default(),
        };
        let limit = self.options.query_time;
        let max_bytes = self.options.max_result_bytes;
        let done = Arc::new(done);
        let end = done.clone();
        let mut bytes = 0u64;
        let batches = result.into_stream().map(move |batch| {
            if let Ok(batch) = &batch {
                done.rows
                    .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                bytes += batch.get_array_memory_size() as u64;
                done.bytes.store(bytes, Ordering::Relaxed);
                if let Some(max) = max_bytes.filter(|max| bytes > *max) {
                    control.cancel.cancel();
                    let status = Status::resource_exhausted(format!(
                        "the result is larger than this server's limit of {max} bytes; \
                         ask for fewer rows or columns"
                    ));
                    done.end(status.message());
                    return Err(status);
                }
            }
            batch.map_err(|e| {
                let status = match (&e, limit) {
                    (Error::Cancelled, Some(limit)) if control.timed_out.load(Ordering::SeqCst) => {
                        Status::deadline_exceeded(format!(
                            "query cancelled: it ran longer than the server's limit of {} s",
                            limit.as_secs_f64()
                        ))
                    }
                    _ => status(e),
                };
                done.end(status.message());
                status
            })
        });
        // Once every batch was sent, the query finished (unless it failed on the way).
        let finished = futures::stream::once(async move {
            end.end("finished");
            None
        })
        .filter_map(futures::future::ready);
        Ok((schema, Box::pin(batches.chain(finished))))
    }

    /// Answer a `CancelFlightInfo` action.
    fn cancel_flight_info(&self, action: &Action) -> Result<Vec<u8>, Status> {
        let request = CancelFlightInfoRequest::decode(action.body.as_ref())
            .map_err(|e| Status::invalid_argument(format!("invalid CancelFlightInfo: {e}")))?;
        let info = request
            .info
            .ok_or_else(|| Status::invalid_argument("CancelFlightInfo without a FlightInfo"))?;
        let status = if self.cancel(&info) {
            CancelStatus::Cancelled
        } else {
            CancelStatus::NotCancellable
        };
        let result = CancelFlightInfoResult {
            status: status as i32,
        };
        Ok(result.encode_to_vec())
    }

    fn prepared(&self, handle: &[u8]) -> Result<(String, Vec<ScalarValue>), Status> {
        let mut prepared = lock(&self.prepared);
        let p = prepared
            .get_mut(handle)
            .ok_or_else(|| Status::not_found("no such prepared statement (closed or expired)"))?;
        p.used = Instant::now();
        Ok((p.sql.clone(), p.params.clone()))
    }

    /// Run a statement that changes something, to its end; the rows it changed, when it
    /// says (`INSERT` and `COPY` do), else 0.
    pub(super) async fn update(
        &self,
        engine: &Engine,
        sql: &str,
        params: Vec<ScalarValue>,
        user: Option<&super::User>,
    ) -> Result<i64, Status> {
        self.allowed(engine, sql)?;
        let _places = self.take_places(user).await?;
        let mut result = engine.sql_with_params(sql, params).await.map_err(status)?;
        let batches = result.collect().await.map_err(status)?;
        let count = batches
            .iter()
            .filter(|b| b.num_columns() == 1 && b.schema().field(0).name() == "count")
            .filter_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().cloned())
            .flat_map(|a| a.iter().flatten().collect::<Vec<_>>())
            .sum();
        Ok(count)
    }

    /// The catalog's tables as `(catalog, schema, table, type, columns)`; the columns only
    /// `with_columns` (finding them reads each dataset's files or footers).
    async fn tables(
        &self,
        with_columns: bool,
    ) -> Vec<(String, String, String, &'static str, SchemaRef)> {
        let kind_of = |t: Option<datafusion::datasource::TableType>| match t {
            Some(datafusion::datasource::TableType::View) => "VIEW",
            _ => "TABLE",
        };
        let ctx = self.engine.session();
        let mut out = Vec::new();
        for catalog_name in ctx.catalog_names() {
            let Some(catalog) = ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                if schema_name == POSTGRES_CATALOG {
                    continue;
                }
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                let mut names = schema.table_names();
                names.sort();
                for name in names {
                    // A dataset that cannot be read right now is still listed, without columns.
                    let (kind, columns) = if with_columns {
                        match schema.table(&name).await {
                            Ok(Some(t)) => (kind_of(Some(t.table_type())), t.schema()),
                            _ => ("TABLE", Arc::new(Schema::empty())),
                        }
                    } else {
                        let kind = kind_of(schema.table_type(&name).await.ok().flatten());
                        (kind, Arc::new(Schema::empty()))
                    };
                    out.push((
                        catalog_name.clone(),
                        schema_name.clone(),
                        name,
                        kind,
                        columns,
                    ));
                }
            }
        }
        out
    }
}

/// Forgets a query when its `DoGet` stream ends, or is dropped because the client left
/// (which also stops the query's work), and logs how it ended.
struct Forget {
    queries: Arc<Mutex<HashMap<Vec<u8>, Query>>>,
    log: Arc<QueryLog>,
    handle: Vec<u8>,
    id: u64,
    since: Instant,
    rows: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
    /// "finished", or the error the client was sent; `None` while the client reads.
    outcome: Mutex<Option<String>>,
}

impl Forget {
    /// Record how the query ended, the first time only, and forget its handle now: the
    /// client learns the end right after this, and a cancel sent then finds nothing to cancel.
    fn end(&self, outcome: &str) {
        lock(&self.outcome).get_or_insert_with(|| outcome.to_string());
        lock(&self.queries).remove(&self.handle);
    }
}

impl Drop for Forget {
    fn drop(&mut self) {
        lock(&self.queries).remove(&self.handle);
        let outcome = lock(&self.outcome)
            .take()
            .unwrap_or_else(|| "cancelled: the client stopped reading".to_string());
        let (state, error) = match outcome.as_str() {
            "finished" => (State::Finished, None),
            o if o.contains("cancelled") => (State::Cancelled, Some(outcome.clone())),
            _ => (State::Failed, Some(outcome.clone())),
        };
        self.log.ended(
            self.id,
            state,
            self.rows.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            error,
        );
        log::info!(
            target: "strata::queries",
            "query {} {outcome} after {:.3} s, {} rows",
            self.id,
            self.since.elapsed().as_secs_f64(),
            self.rows.load(Ordering::Relaxed)
        );
    }
}

/// A place from `semaphore`, waiting at most `wait`.
async fn take_place(
    semaphore: Arc<tokio::sync::Semaphore>,
    wait: Duration,
    what: String,
) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
    match tokio::time::timeout(wait, semaphore.acquire_owned()).await {
        Ok(Ok(place)) => Ok(place),
        _ => Err(Status::resource_exhausted(format!(
            "{what}; this one waited {} s for one to finish",
            wait.as_secs_f64()
        ))),
    }
}

/// SQL on one line, for the log.
fn one_line(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The one row of parameter values a client bound, as scalars in column order.
/// Answer a `SetSessionOptions` action for `session`: each option is set, or named in the
/// result's errors (the reason is logged; the protocol has no place for it).
async fn set_session_options(session: &Session, action: &Action) -> Result<Vec<u8>, Status> {
    use messages::ErrorValue;
    let request = messages::SetSessionOptionsRequest::decode(action.body.as_ref())
        .map_err(|e| Status::invalid_argument(format!("invalid SetSessionOptions: {e}")))?;
    let mut errors = HashMap::new();
    for (name, value) in request.session_options {
        let outcome = match sessions::option_text(&value) {
            Ok(text) => session.set_option(&name, text).await,
            Err(message) => Err(sessions::OptionError::Value(message)),
        };
        if let Err(error) = outcome {
            log::info!(target: "strata::server", "session option {name} not set: {error}");
            let value = match error {
                sessions::OptionError::Name(_) => ErrorValue::InvalidName,
                sessions::OptionError::Value(_) => ErrorValue::InvalidValue,
                sessions::OptionError::Refused(_) => ErrorValue::Error,
            };
            errors.insert(
                name,
                messages::SetError {
                    value: value as i32,
                },
            );
        }
    }
    Ok(messages::SetSessionOptionsResult { errors }.encode_to_vec())
}

async fn bound_values(stream: PeekableFlightDataStream) -> Result<Vec<ScalarValue>, Status> {
    let batches: Vec<RecordBatch> =
        FlightRecordBatchStream::new_from_flight_data(stream.map_err(FlightError::from))
            .try_collect()
            .await
            .map_err(|e| {
                Status::invalid_argument(format!("cannot read the bound parameters: {e}"))
            })?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(Vec::new());
    };
    if rows > 1 {
        return Err(Status::invalid_argument(format!(
            "{rows} rows of parameters were bound; a query takes one row"
        )));
    }
    batch
        .columns()
        .iter()
        .map(|c| ScalarValue::try_from_array(c, 0))
        .collect::<Result<_, _>>()
        .map_err(|e| Status::invalid_argument(format!("unsupported parameter value: {e}")))
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlServer {
    type FlightService = FlightSqlServer;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let engine = self.engine_for(&request, &query.query);
        let user = request.extensions().get::<super::User>();
        self.start(&engine, &query.query, Vec::new(), user).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (sql, params) = self.prepared(&query.prepared_statement_handle)?;
        let engine = self.engine_for(&request, &sql);
        let user = request.extensions().get::<super::User>();
        self.start(&engine, &sql, params, user).await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let (schema, batches) = self.take(ticket.statement_handle.to_vec())?;
        Ok(encode(
            schema,
            batches.map_err(|status| FlightError::Tonic(Box::new(status))),
        ))
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(Status::invalid_argument(format!(
            "unknown ticket type {}",
            message.type_url
        )))
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let engine = self.engine_for(&request, &command.query);
        let user = request.extensions().get::<super::User>();
        self.update(&engine, &command.query, Vec::new(), user).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let engine = self.engine_for(&request, &query.query);
        self.allowed(&engine, &query.query)?;
        // A statement that does not parse fails now; one that plans tells its result's
        // columns and its parameters' types (the FlightInfo announces the schema streamed).
        let (dataset_schema, parameter_schema) = match engine.describe(&query.query).await {
            Ok(d) => {
                let parameters = Schema::new(
                    d.parameters
                        .iter()
                        .enumerate()
                        .map(|(i, t)| {
                            Field::new(
                                format!("${}", i + 1),
                                t.clone().unwrap_or(DataType::Null),
                                true,
                            )
                        })
                        .collect::<Vec<_>>(),
                );
                (schema_bytes(&d.schema)?, schema_bytes(&parameters)?)
            }
            Err(e @ Error::Syntax { .. }) => return Err(status(e)),
            Err(_) => (bytes::Bytes::new(), bytes::Bytes::new()),
        };
        let prepared_statement_handle = handle();
        lock(&self.prepared).insert(
            prepared_statement_handle.clone(),
            Prepared {
                sql: query.query,
                params: Vec::new(),
                used: Instant::now(),
            },
        );
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: prepared_statement_handle.into(),
            dataset_schema,
            parameter_schema,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let values = bound_values(request.into_inner()).await?;
        let handle = query.prepared_statement_handle;
        let mut prepared = lock(&self.prepared);
        let p = prepared
            .get_mut(handle.as_ref())
            .ok_or_else(|| Status::not_found("no such prepared statement (closed or expired)"))?;
        p.params = values;
        p.used = Instant::now();
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle),
        })
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let (sql, mut params) = self.prepared(&query.prepared_statement_handle)?;
        let engine = self.engine_for(&request, &sql);
        let user = request.extensions().get::<super::User>().cloned();
        let values = bound_values(request.into_inner()).await?;
        if !values.is_empty() {
            params = values;
        }
        self.update(&engine, &sql, params, user.as_ref()).await
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let kind = request.get_ref().r#type.clone();
        let (body, cookie) = match kind.as_str() {
            "CancelFlightInfo" => (self.cancel_flight_info(request.get_ref())?, None),
            "SetSessionOptions" => {
                let session = self.session_of(&request, true).expect("started");
                let body = set_session_options(&session, request.get_ref()).await?;
                (body, Some(session.id().to_string()))
            }
            "GetSessionOptions" => {
                let options = match self.session_of(&request, false) {
                    Some(session) => session.options(),
                    None => Session::new(self.engine.clone(), None).options(),
                };
                let session_options = options
                    .into_iter()
                    .map(|(name, value)| {
                        let value = messages::OptionValue::StringValue(value);
                        let value = messages::SessionOptionValue {
                            option_value: Some(value),
                        };
                        (name, value)
                    })
                    .collect();
                let result = messages::GetSessionOptionsResult { session_options };
                (result.encode_to_vec(), None)
            }
            "CloseSession" => {
                // The connection goes back to the server's settings; the cookie names nothing.
                if let Some(session) = self.session_of(&request, false) {
                    self.sessions.close(&session);
                }
                let result = messages::CloseSessionResult {
                    status: messages::CloseStatus::Closed as i32,
                };
                (result.encode_to_vec(), None)
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown action {other:?}"
                )));
            }
        };
        let body = arrow_flight::Result { body: body.into() };
        let mut response: Response<<Self as FlightService>::DoActionStream> =
            Response::new(Box::pin(futures::stream::once(async { Ok(body) })));
        if let Some(id) = cookie {
            let value = format!("{}={id}", sessions::COOKIE);
            if let Ok(value) = value.parse() {
                response.metadata_mut().insert("set-cookie", value);
            }
        }
        Ok(response)
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        lock(&self.prepared).remove(query.prepared_statement_handle.as_ref());
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        Ok(Response::new(flight_info(&schema, query)?))
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for name in self.engine.session().catalog_names() {
            builder.append(name);
        }
        Ok(encode_batch(builder.build().map_err(internal)?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        Ok(Response::new(flight_info(&schema, query)?))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        let ctx = self.engine.session();
        for catalog_name in ctx.catalog_names() {
            if let Some(catalog) = ctx.catalog(&catalog_name) {
                for schema_name in catalog.schema_names() {
                    if schema_name != POSTGRES_CATALOG {
                        builder.append(&catalog_name, schema_name);
                    }
                }
            }
        }
        Ok(encode_batch(builder.build().map_err(internal)?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        Ok(Response::new(flight_info(&schema, query)?))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let with_columns = query.include_schema;
        let mut builder = query.into_builder();
        for (catalog, schema, table, kind, columns) in self.tables(with_columns).await {
            builder
                .append(catalog, schema, table, kind, &columns)
                .map_err(internal)?;
        }
        Ok(encode_batch(builder.build().map_err(internal)?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        Ok(Response::new(flight_info(&schema, query)?))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for kind in TABLE_TYPES {
            builder.append(kind);
        }
        Ok(encode_batch(builder.build().map_err(internal)?))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.info).schema();
        Ok(Response::new(flight_info(&schema, query)?))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let batch = query.into_builder(&self.info).build().map_err(internal)?;
        Ok(encode_batch(batch))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(&self.types).schema();
        Ok(Response::new(flight_info(&schema, query)?))
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let batch = query.into_builder(&self.types).build().map_err(internal)?;
        Ok(encode_batch(batch))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Ok(Response::new(flight_info(
            &metadata::primary_keys_schema(),
            query,
        )?))
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(encode_batch(RecordBatch::new_empty(
            metadata::primary_keys_schema(),
        )))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Ok(Response::new(flight_info(
            &metadata::foreign_keys_schema(),
            query,
        )?))
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(encode_batch(RecordBatch::new_empty(
            metadata::foreign_keys_schema(),
        )))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Ok(Response::new(flight_info(
            &metadata::foreign_keys_schema(),
            query,
        )?))
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(encode_batch(RecordBatch::new_empty(
            metadata::foreign_keys_schema(),
        )))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Ok(Response::new(flight_info(
            &metadata::foreign_keys_schema(),
            query,
        )?))
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(encode_batch(RecordBatch::new_empty(
            metadata::foreign_keys_schema(),
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_and_statements_left_behind_expire() {
        let engine = Arc::new(Engine::new().await.unwrap());
        let options = Options {
            unread_result: Duration::from_secs(60),
            unused_prepared: Duration::from_secs(600),
            ..Options::default()
        };
        let server = FlightSqlServer::new(engine.clone(), options);
        server
            .start(&engine, "SELECT 1", Vec::new(), None)
            .await
            .unwrap();
        lock(&server.prepared).insert(
            vec![1],
            Prepared {
                sql: "SELECT 1".into(),
                params: Vec::new(),
                used: Instant::now(),
            },
        );
        let now = Instant::now();
        server.expire(now + Duration::from_secs(59));
        assert_eq!(
            (lock(&server.queries).len(), lock(&server.prepared).len()),
            (1, 1)
        );
        server.expire(now + Duration::from_secs(61));
        assert_eq!(
            (lock(&server.queries).len(), lock(&server.prepared).len()),
            (0, 1)
        );
        server.expire(now + Duration::from_secs(601));
        assert_eq!(lock(&server.prepared).len(), 0);
    }

    /// A table whose scan never completes: a query over it stays in planning.
    #[derive(Debug)]
    struct Stalled;

    #[async_trait::async_trait]
    impl datafusion::catalog::TableProvider for Stalled {
        fn schema(&self) -> SchemaRef {
            Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
                datafusion::arrow::datatypes::Field::new("x", DataType::Int64, false),
            ]))
        }

        fn table_type(&self) -> datafusion::datasource::TableType {
            datafusion::datasource::TableType::Base
        }

        async fn scan(
            &self,
            _state: &dyn datafusion::catalog::Session,
            _projection: Option<&Vec<usize>>,
            _filters: &[datafusion::logical_expr::Expr],
            _limit: Option<usize>,
        ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_query_dropped_while_planned_is_logged_as_cancelled() {
        let engine = Arc::new(Engine::new().await.unwrap());
        engine
            .session()
            .register_table("stalled", Arc::new(Stalled))
            .unwrap();
        let server = FlightSqlServer::new(engine.clone(), Options::default());
        let states = || {
            let batch = server.log.batch().unwrap();
            let column = datafusion::arrow::array::AsArray::as_string::<i32>(batch.column(3));
            column
                .iter()
                .map(|s| s.unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let mut run = Box::pin(server.run(&engine, "SELECT x FROM stalled", Vec::new(), None));
        assert!(futures::poll!(&mut run).is_pending());
        assert_eq!(states(), ["running"]);
        drop(run);
        assert_eq!(states(), ["cancelled"]);
    }

    #[tokio::test]
    async fn a_query_is_forgotten_once_its_stream_is_dropped() {
        let engine = Arc::new(Engine::new().await.unwrap());
        let server = FlightSqlServer::new(engine.clone(), Options::default());
        let info = server
            .start(
                &engine,
                "SELECT value FROM generate_series(1, 10000000000)",
                Vec::new(),
                None,
            )
            .await
            .unwrap()
            .into_inner();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let any = Any::decode(ticket.ticket.as_ref()).unwrap();
        let query: TicketStatementQuery = any.unpack().unwrap().unwrap();
        let stream = server
            .do_get_statement(query.clone(), Request::new(ticket.clone()))
            .await
            .unwrap()
            .into_inner();
        // Read but not finished: the query is still known (and cancellable).
        assert_eq!(lock(&server.queries).len(), 1);
        let err = server
            .do_get_statement(query, Request::new(ticket))
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "a result is read once");
        // The client goes away: its stream is dropped, and the query with it.
        drop(stream);
        assert_eq!(lock(&server.queries).len(), 0);
    }
}
