//! The PostgreSQL wire protocol (`strata serve --postgres`): `psql`, psycopg, JDBC and BI
//! tools query the same datasets as Flight SQL clients, through the same service, so the same
//! read-only rule, limits, query log and users apply. Simple and extended queries (with `$1`
//! parameters, in text or binary) are answered; users sign in with their password, or with an
//! API token as the password. Transaction statements are accepted and do nothing (every
//! statement stands alone), as are the session settings drivers send on connecting. The
//! server's engine gets PostgreSQL's catalog (`pg_catalog`), and statements that read it
//! (`psql`'s `\dt` and `\d`, BI tools' schema browsers) are rewritten into SQL the engine
//! plans; other statements reach the engine as they were sent.

use std::fmt::Debug;
use std::sync::Arc;

use arrow_pg::datatypes::df::deserialize_parameters;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ParamValues;
use datafusion::scalar::ScalarValue;
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::query::{send_execution_response, send_query_response};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::Entry;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionGuard, ConnectionHandle, ConnectionManager,
    DEFAULT_NAME, PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::extendedquery::Execute;
use pgwire::messages::response::EmptyQueryResponse;
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;
use tonic::{Code, Status};

use super::auth::Auth;
use super::connections::{Activity, Gate};
use super::flight::FlightSqlServer;
use super::sessions::Session;
use super::tls::Tls;
use super::{ServerError, User};
use crate::Error;

/// How long a refused connection is kept open for its client to be told why.
const REFUSAL_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Where a connection keeps the name of the user who signed in.
const SIGNED_IN: &str = "strata.user";

/// Serve the PostgreSQL protocol on `listener` until `shutdown` completes, running queries
/// through `service`. With `auth`, clients sign in with a user's password or API token.
pub(super) async fn serve(
    listener: TcpListener,
    gate: Gate,
    service: FlightSqlServer,
    auth: Option<Arc<Auth>>,
    tls: Option<&Tls>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let session = service.engine().session().clone();
    let catalog = session
        .state()
        .config()
        .options()
        .catalog
        .default_catalog
        .clone();
    if let Err(e) = datafusion_pg_catalog::setup_pg_catalog(
        &session,
        &catalog,
        datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
    ) {
        log::warn!(target: "strata::server", "postgres: no pg_catalog: {e}");
    }
    let handlers = Arc::new(Postgres {
        service,
        auth,
        parser: Arc::new(Sql),
        encrypted_only: tls.is_some(),
        connection: Connection::default(),
        cancels: Arc::new(Cancels::default()),
    });
    let acceptor = tls.map(Tls::postgres);
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    log::warn!(target: "strata::server", "postgres: cannot accept: {e}");
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let _ = socket.set_nodelay(true);
        let admitted = gate.admit(Some(peer));
        let mut handlers = (*handlers).clone();
        handlers.connection = Connection {
            activity: admitted.as_ref().map(|a| a.activity.clone()),
            refused: admitted.is_none().then_some(gate.max()),
            session: Some(Session::new(handlers.service.engine().clone(), None)),
            ..Connection::default()
        };
        let handlers = Arc::new(handlers);
        let acceptor = acceptor.clone();
        let idle = gate.idle;
        tokio::spawn(async move {
            let connection = pgwire::tokio::process_socket(socket, acceptor, handlers);
            let idle = async {
                match (&admitted, idle) {
                    (Some(admitted), Some(idle)) => admitted.activity.idle_for(idle).await,
                    // A refused client is told why as soon as it has said who it is.
                    (None, _) => tokio::time::sleep(REFUSAL_TIME).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                done = connection => if let Err(e) = done {
                    log::debug!(target: "strata::server", "postgres connection: {e}");
                },
                _ = idle => log::info!(
                    target: "strata::server",
                    "closing an idle PostgreSQL connection from {peer}"
                ),
            }
            drop(admitted);
        });
    }
}

/// The handlers of every connection.
#[derive(Clone)]
struct Postgres {
    service: FlightSqlServer,
    auth: Option<Arc<Auth>>,
    parser: Arc<Sql>,
    /// With TLS configured, connections that did not ask for it are refused.
    encrypted_only: bool,
    /// The connection these handlers serve.
    connection: Connection,
    /// Every started connection, by the process number and key its cancel requests name.
    cancels: Arc<Cancels>,
}

/// The connections cancel requests can reach, and the numbers and keys they are given.
#[derive(Default)]
struct Cancels {
    connections: Arc<ConnectionManager>,
    keys: RandomPidSecretKeyGenerator,
}

/// What the handlers of one connection know of it.
#[derive(Clone, Default)]
struct Connection {
    /// Its requests, for closing it once idle.
    activity: Option<Arc<Activity>>,
    /// With as many connections open as allowed (this number), it is refused at startup.
    refused: Option<usize>,
    /// Where a cancel request for it arrives, once it has started (it is registered under
    /// the process number and secret key it was given until it closes).
    cancel: Arc<parking_lot::Mutex<Option<Registered>>>,
    /// Its session: the settings its client changes are its own.
    session: Option<Arc<Session>>,
}

/// A connection's handle for cancel requests, and its place among the connections they reach.
type Registered = (Arc<ConnectionHandle>, ConnectionGuard);

impl Connection {
    /// Give the client its process number and secret key for cancel requests, and register
    /// the connection under them.
    fn register<C: ClientInfo>(&self, client: &mut C, cancels: &Cancels) {
        let (pid, key) = cancels.keys.generate(&*client);
        client.set_pid_and_secret_key(pid, key.clone());
        *self.cancel.lock() = Some(cancels.connections.register(pid, key));
    }

    /// Completes when a cancel request for the statement starting now arrives.
    async fn cancelled(&self) -> futures::future::BoxFuture<'static, ()> {
        let handle = self.cancel.lock().as_ref().map(|(h, _)| h.clone());
        let receiver = match handle {
            Some(handle) => Some(handle.start_query().await),
            None => None,
        };
        Box::pin(async move {
            // The sender is dropped, not fired, when the next statement starts.
            let fired = match receiver {
                Some(receiver) => receiver.await.is_ok(),
                None => false,
            };
            if !fired {
                std::future::pending::<()>().await
            }
        })
    }
}

/// The error of a statement a cancel request stopped, as PostgreSQL words it.
fn cancelled_error() -> PgWireError {
    user_error(
        "57014",
        "canceling statement due to user request".to_string(),
    )
}

impl PgWireServerHandlers for Postgres {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::new(self.clone())
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::new(self.clone())
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(self.clone())
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.cancels.connections.clone()))
    }
}

impl Postgres {
    /// The engine `sql` runs on: the connection's session's.
    fn engine_for(&self, sql: &str) -> Arc<crate::Engine> {
        match &self.connection.session {
            Some(session) => session.engine_for(sql),
            None => self.service.engine().clone(),
        }
    }

    /// Answer one statement: `params` bound, rows in `format`.
    async fn answer<C: ClientInfo>(
        &self,
        client: &C,
        sql: &str,
        params: Vec<ScalarValue>,
        format: &Format,
    ) -> PgWireResult<Response> {
        if let Some(response) = session_statement(sql) {
            return Ok(response);
        }
        let busy = self.connection.activity.as_ref().map(|a| a.begin());
        let mut cancelled = self.connection.cancelled().await;
        let user = client.metadata().get(SIGNED_IN).cloned().map(User);
        let engine = self.engine_for(sql);
        if !engine.only_reads(sql).map_err(engine_error)? {
            self.service.allowed(&engine, sql).map_err(status_error)?;
            let rows = tokio::select! {
                rows = self.service.update(&engine, sql, params, user.as_ref()) => rows.map_err(status_error)?,
                _ = &mut cancelled => return Err(cancelled_error()),
            };
            return Ok(Response::Execution(
                Tag::new(&command(sql)).with_rows(rows.max(0) as usize),
            ));
        }
        // The statement starts even when a cancel request came first, so that the log lists
        // it (as cancelled) like every statement a client sent.
        let (schema, batches) = tokio::select! {
            biased;
            run = self.service.run(&engine, sql, params, user.as_ref()) => run.map_err(status_error)?,
            _ = &mut cancelled => return Err(cancelled_error()),
        };
        // A cancel request ends the rows with PostgreSQL's error; dropping the batches stops
        // the query.
        let batches = futures::stream::unfold(Some((batches, cancelled)), |state| async move {
            let (mut batches, mut cancelled) = state?;
            tokio::select! {
                batch = batches.next() => batch.map(|b| (Ok(b), Some((batches, cancelled)))),
                _ = &mut cancelled => Some((Err(()), None)),
            }
        });
        let fields = Arc::new(arrow_schema_to_pg_fields(&schema, format, None)?);
        let rows_of = fields.clone();
        let rows = batches.flat_map(move |batch| {
            // The connection is busy until its rows are sent.
            let _busy = &busy;
            let rows: Vec<PgWireResult<_>> = match batch {
                Ok(Ok(batch)) => encode_recordbatch(rows_of.clone(), batch).collect(),
                Ok(Err(status)) => vec![Err(status_error(status))],
                Err(()) => vec![Err(cancelled_error())],
            };
            futures::stream::iter(rows)
        });
        Ok(Response::Query(QueryResponse::new(fields, rows)))
    }
}

/// The statements of `text`: as sent, or, where they read PostgreSQL's catalog, rewritten
/// into SQL the engine plans (operators, casts to `regclass` and collations as `psql`
/// writes them).
fn statements(text: &str) -> PgWireResult<Vec<String>> {
    crate::sql::check_expression_depth(text).map_err(engine_error)?;
    if !text.to_ascii_lowercase().contains("pg_catalog") {
        return crate::Engine::split_statements(text).map_err(engine_error);
    }
    let parser = datafusion_pg_catalog::sql::PostgresCompatibilityParser::new();
    let parsed = parser
        .parse(text)
        .map_err(|e| user_error("42601", format!("syntax error: {e}")))?;
    Ok(parsed.into_iter().map(|s| s.to_string()).collect())
}

/// Answers for the statements of a session that Strata has no use for: transactions (every
/// statement stands alone) and the settings drivers send when they connect.
fn session_statement(sql: &str) -> Option<Response> {
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == ';' || c == '=')
        .filter(|w| !w.is_empty())
        .take(3)
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let first = words.first()?.as_str();
    match first {
        "begin" | "start" => Some(Response::TransactionStart(Tag::new("BEGIN"))),
        "commit" | "end" => Some(Response::TransactionEnd(Tag::new("COMMIT"))),
        "rollback" | "abort" => Some(Response::TransactionEnd(Tag::new("ROLLBACK"))),
        "set" => {
            let name = match words.get(1).map(String::as_str) {
                Some("session") | Some("local") => words.get(2),
                _ => words.get(1),
            }?;
            let client_setting = matches!(
                name.trim_matches('"'),
                "application_name"
                    | "extra_float_digits"
                    | "client_encoding"
                    | "datestyle"
                    | "intervalstyle"
                    | "search_path"
                    | "statement_timeout"
                    | "lock_timeout"
                    | "idle_in_transaction_session_timeout"
                    | "client_min_messages"
                    | "standard_conforming_strings"
                    | "bytea_output"
            );
            client_setting.then(|| Response::Execution(Tag::new("SET")))
        }
        _ => None,
    }
}

/// The command tag of a statement that changes something: its first word.
fn command(sql: &str) -> String {
    sql.split_whitespace()
        .next()
        .unwrap_or("OK")
        .to_ascii_uppercase()
}

/// The SQLSTATE of a planning error: an unknown column or table has its own.
fn plan_code(message: &str) -> &'static str {
    if message.contains("not found") && message.starts_with("column") {
        "42703"
    } else if message.contains("not found") && message.starts_with("table") {
        "42P01"
    } else {
        "42000"
    }
}

/// A PostgreSQL error for an error of the engine, with the SQLSTATE of its kind.
fn engine_error(error: Error) -> PgWireError {
    let message = error.to_string();
    let code = match &error {
        Error::Syntax { .. } => "42601",
        Error::Plan { .. } => plan_code(&message),
        Error::Config(_) => "22023",
        Error::Dataset(_) | Error::Catalog(_) => "58030",
        Error::NotAllowed(_) => "42501",
        Error::Cancelled => "57014",
        Error::ResourcesExhausted(_) => "53200",
        Error::Execution(_) => "XX000",
    };
    user_error(code, message)
}

/// A PostgreSQL error for the status the service answered with.
fn status_error(status: Status) -> PgWireError {
    let code = match status.code() {
        Code::InvalidArgument if status.message().starts_with("syntax error") => "42601",
        Code::InvalidArgument => plan_code(status.message()),
        Code::FailedPrecondition => "58030",
        Code::NotFound => "42704",
        Code::PermissionDenied => "42501",
        Code::Unauthenticated => "28000",
        Code::Cancelled | Code::DeadlineExceeded => "57014",
        Code::ResourceExhausted => "53000",
        _ => "XX000",
    };
    user_error(code, status.message().to_string())
}

/// End a connection at startup with a FATAL error: its SQLSTATE `code` and `message`.
async fn refuse<C>(client: &mut C, code: &str, message: String) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let error = ErrorInfo::new("FATAL".to_string(), code.to_string(), message);
    client
        .send(PgWireBackendMessage::ErrorResponse(error.into()))
        .await?;
    client.close().await?;
    Ok(())
}

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message,
    )))
}

#[async_trait]
impl StartupHandler for Postgres {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let parameters = DefaultServerParameterProvider::default();
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                if let Some(max) = self.connection.refused {
                    let message = format!("too many connections: this server takes {max} at once");
                    return refuse(client, "53300", message).await;
                }
                if self.encrypted_only && !client.is_secure() {
                    let message = "this server takes only encrypted connections; connect with \
                                   sslmode=require (or verify-full)";
                    return refuse(client, "28000", message.to_string()).await;
                }
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if self.auth.is_some() {
                    client.set_state(PgWireConnectionState::AuthenticationInProgress);
                    client
                        .send(PgWireBackendMessage::Authentication(
                            Authentication::CleartextPassword,
                        ))
                        .await?;
                } else {
                    self.connection.register(client, &self.cancels);
                    finish_authentication(client, &parameters).await?;
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                let Some(auth) = &self.auth else {
                    return Ok(());
                };
                let password = password.into_password()?;
                let user = client.metadata().get("user").cloned().unwrap_or_default();
                let signed_in = {
                    let auth = auth.clone();
                    let (user, password) = (user.clone(), password.password.clone());
                    // Checking a hash takes a while; not on the connection's task.
                    tokio::task::spawn_blocking(move || auth.sign_in(&user, &password))
                        .await
                        .ok()
                        .flatten()
                };
                match signed_in {
                    Some(name) => {
                        log::info!(target: "strata::auth", "{name} signed in (postgres)");
                        client.metadata_mut().insert(SIGNED_IN.to_string(), name);
                        self.connection.register(client, &self.cancels);
                        finish_authentication(client, &parameters).await?;
                    }
                    None => {
                        let message = format!("password authentication failed for user \"{user}\"");
                        refuse(client, "28P01", message).await?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[async_trait]
impl SimpleQueryHandler for Postgres {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = statements(query)?;
        let mut responses = Vec::with_capacity(statements.len());
        for sql in statements {
            // A failing statement ends the batch, as in PostgreSQL.
            responses.push(
                self.answer(client, &sql, Vec::new(), &Format::UnifiedText)
                    .await?,
            );
        }
        if responses.is_empty() {
            responses.push(Response::EmptyQuery);
        }
        Ok(responses)
    }
}

/// Statements of the extended protocol are kept as their SQL; the engine plans them when
/// they are described or run.
#[derive(Debug)]
struct Sql;

#[async_trait]
impl QueryParser for Sql {
    type Statement = String;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<String>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        match statements(sql)?.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            _ => Err(user_error(
                "42601",
                "cannot insert multiple commands into a prepared statement".to_string(),
            )),
        }
    }

    fn get_parameter_types(&self, _stmt: &String) -> PgWireResult<Vec<Type>> {
        Ok(Vec::new())
    }

    fn get_result_schema(
        &self,
        _stmt: &String,
        _column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(Vec::new())
    }
}

impl Postgres {
    /// What `sql` returns and takes, planned but not run; `None` for a statement that
    /// returns no rows.
    async fn describe(
        &self,
        sql: &str,
        format: &Format,
    ) -> PgWireResult<Option<(Vec<FieldInfo>, Vec<Option<DataType>>)>> {
        if session_statement(sql).is_some() {
            return Ok(None);
        }
        let engine = self.engine_for(sql);
        let description = engine.describe(sql).await.map_err(engine_error)?;
        if !engine.only_reads(sql).map_err(engine_error)? {
            return Ok(Some((Vec::new(), description.parameters)));
        }
        let fields = arrow_schema_to_pg_fields(&description.schema, format, None)?;
        Ok(Some((fields, description.parameters)))
    }
}

/// The values bound to a portal's parameters, read as the types the statement gives them
/// (or the client says).
fn bound<S: Clone>(
    portal: &Portal<S>,
    types: &[Option<DataType>],
) -> PgWireResult<Vec<ScalarValue>> {
    if portal.parameters.is_empty() {
        return Ok(Vec::new());
    }
    let types: Vec<Option<&DataType>> = types.iter().map(Option::as_ref).collect();
    match deserialize_parameters(portal, &types)? {
        ParamValues::List(values) => Ok(values.into_iter().map(|v| v.value).collect()),
        ParamValues::Map(_) => Err(user_error(
            "42P02",
            "parameters are numbered ($1, $2, ...)".to_string(),
        )),
    }
}

#[async_trait]
impl ExtendedQueryHandler for Postgres {
    type Statement = String;
    type QueryParser = Sql;

    fn query_parser(&self) -> Arc<Sql> {
        self.parser.clone()
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<String>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some((fields, parameters)) = self
            .describe(&target.statement, &Format::UnifiedBinary)
            .await?
        else {
            return Ok(DescribeStatementResponse::new(Vec::new(), Vec::new()));
        };
        let parameters = parameters
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let given = target.parameter_types.get(i).cloned().flatten();
                match (given, t) {
                    (Some(given), _) => Ok(given),
                    (None, Some(t)) => into_pg_type(t),
                    (None, None) => Ok(Type::UNKNOWN),
                }
            })
            .collect::<PgWireResult<Vec<_>>>()?;
        Ok(DescribeStatementResponse::new(parameters, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        target: &Portal<String>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fields = self
            .describe(&target.statement.statement, &target.result_column_format)
            .await?
            .map(|(fields, _)| fields)
            .unwrap_or_default();
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<String>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let sql = &portal.statement.statement;
        if crate::Engine::split_statements(sql)
            .map_err(engine_error)?
            .is_empty()
        {
            return Ok(Response::EmptyQuery);
        }
        let params = if portal.parameters.is_empty() {
            Vec::new()
        } else {
            let description = self
                .engine_for(sql)
                .describe(sql)
                .await
                .map_err(engine_error)?;
            bound(portal, &description.parameters)?
        };
        self.answer(client, sql, params, &portal.result_column_format)
            .await
    }

    /// An `Execute` of a whole result streams its rows as the query makes them (pgwire
    /// gathers a whole result in memory first, and goes on gathering after a client has
    /// gone). An `Execute` of so many rows at a time is pgwire's.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(portal)) if message.max_rows == 0 => portal,
            _ => return self._on_execute(client, message).await,
        };
        if !matches!(*portal.state().lock().await, PortalExecutionState::Initial) {
            return self._on_execute(client, message).await;
        }
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let mut status = client.transaction_status();
        client.set_state(PgWireConnectionState::QueryInProgress);
        let response = ExtendedQueryHandler::do_query(self, client, &portal, 0).await?;
        *portal.state().lock().await = PortalExecutionState::Finished;
        match response {
            Response::Query(results) => send_query_response(client, results, false).await?,
            Response::Execution(tag) => send_execution_response(client, tag).await?,
            Response::TransactionStart(tag) => {
                send_execution_response(client, tag).await?;
                status = status.to_in_transaction_state();
            }
            Response::TransactionEnd(tag) => {
                send_execution_response(client, tag).await?;
                status = status.to_idle_state();
                client.portal_store().rm_portal(DEFAULT_NAME);
            }
            Response::EmptyQuery => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?
            }
            Response::Error(error) => {
                client
                    .send(PgWireBackendMessage::ErrorResponse((*error).into()))
                    .await?;
                status = status.to_error_state();
            }
            Response::CopyIn(_) | Response::CopyOut(_) | Response::CopyBoth(_) => {
                return Err(user_error(
                    "0A000",
                    "COPY with clients is not supported".into(),
                ));
            }
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Schema;

    #[test]
    fn sessions_statements_are_answered_without_the_engine() {
        for sql in ["BEGIN", "begin transaction", "START TRANSACTION READ ONLY"] {
            assert!(matches!(
                session_statement(sql),
                Some(Response::TransactionStart(_))
            ));
        }
        for sql in ["COMMIT", "rollback;", "END"] {
            assert!(matches!(
                session_statement(sql),
                Some(Response::TransactionEnd(_))
            ));
        }
        for sql in [
            "SET extra_float_digits = 3",
            "SET application_name = 'x'",
            "set SESSION DateStyle TO ISO",
        ] {
            assert!(
                matches!(session_statement(sql), Some(Response::Execution(_))),
                "{sql}"
            );
        }
        for sql in [
            "SET datafusion.execution.batch_size = 1",
            "SELECT 1",
            "settle",
        ] {
            assert!(session_statement(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn schemas_map_to_postgres_types() {
        let schema = Schema::new(vec![datafusion::arrow::datatypes::Field::new(
            "n",
            DataType::Int64,
            true,
        )]);
        let fields = arrow_schema_to_pg_fields(&schema, &Format::UnifiedText, None).unwrap();
        assert_eq!(fields[0].datatype(), &Type::INT8);
        assert_eq!(fields[0].name(), "n");
    }
}
