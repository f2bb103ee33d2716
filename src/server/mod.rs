//! `strata serve`: the engine's datasets served to other programs over Arrow Flight SQL
//! (notebooks through ADBC or pyarrow, JDBC and ODBC drivers, other services) and over the
//! PostgreSQL protocol (`psql`, psycopg, BI tools). Queries run through the engine's runner,
//! locally or on a cluster, and stream back batch by batch.

pub mod auth;
mod connections;
mod flight;
pub mod history;
mod metadata;
mod postgres;
mod sessions;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use tokio::net::TcpListener;

use crate::Engine;
use connections::{Gate, Tracked};

pub use auth::{Auth, AuthError, Authenticated, User, hash_secret};
pub use flight::FlightSqlServer;
pub use sessions::messages as session_messages;
pub use tls::{HttpsListener, Tls};

/// Errors of the server itself (a client's failing query is that client's error).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listening socket could not be used.
    #[error("cannot serve on {address}: {message}")]
    Listen {
        /// The address asked for.
        address: String,
        /// Why not.
        message: String,
    },
    /// A TLS file could not be used.
    #[error("TLS: {file} {message}")]
    Tls {
        /// The certificate, key or authority file.
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// The gRPC server stopped with an error.
    #[error("the Flight SQL server stopped: {0}")]
    Stopped(String),
}

/// What clients may do, how long queries may run, and how long what clients leave behind
/// is kept.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Run only statements that read (queries, `EXPLAIN`, `SHOW`, `DESCRIBE`); the default.
    pub read_only: bool,
    /// A query running longer (from its `GetFlightInfo`) is cancelled; `None`: no limit.
    pub query_time: Option<Duration>,
    /// A query's result that was announced (`GetFlightInfo`) but never fetched (`DoGet`).
    pub unread_result: Duration,
    /// A prepared statement not used for this long.
    pub unused_prepared: Duration,
    /// Queries running at once, in all; more wait their turn. A query holds its place from
    /// its `GetFlightInfo` until its result is read (or dropped).
    pub max_queries: Option<usize>,
    /// Queries running at once per signed-in user.
    pub max_queries_per_user: Option<usize>,
    /// How long a query waits for a place before it fails.
    pub queue_timeout: Duration,
    /// Bytes of Arrow data one result may hold; a larger one fails and stops its query.
    pub max_result_bytes: Option<u64>,
    /// Connections open at once, per protocol; more are refused as they come.
    pub max_connections: Option<usize>,
    /// A connection with no request under way for this long is closed.
    pub idle_time: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            read_only: true,
            query_time: None,
            unread_result: Duration::from_secs(600),
            unused_prepared: Duration::from_secs(3600),
            max_queries: None,
            max_queries_per_user: None,
            queue_timeout: Duration::from_secs(60),
            max_result_bytes: None,
            max_connections: None,
            idle_time: None,
        }
    }
}

/// Serve Flight SQL on `listener` until `shutdown` completes. Connections are taken as they
/// come; each request runs on the runtime's threads.
pub async fn serve_flight(
    listener: TcpListener,
    engine: Arc<Engine>,
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    serve_flight_with(listener, engine, options, None, shutdown).await
}

/// [`serve_flight`], with users who must sign in when `auth` is given: the handshake takes
/// Basic credentials and answers with a bearer token, which every other call must carry.
pub async fn serve_flight_with(
    listener: TcpListener,
    engine: Arc<Engine>,
    options: Options,
    auth: Option<Arc<Auth>>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let listeners = Listeners {
        flight: listener,
        postgres: None,
        tls: None,
    };
    serve(listeners, engine, options, auth, shutdown).await
}

/// Where a server listens: for Flight SQL, and for the PostgreSQL protocol if given; with
/// `tls`, both take only encrypted connections.
#[derive(Debug)]
pub struct Listeners {
    /// Flight SQL clients connect here.
    pub flight: TcpListener,
    /// PostgreSQL clients connect here.
    pub postgres: Option<TcpListener>,
    /// The server's certificate and key, for both listeners.
    pub tls: Option<Tls>,
}

/// Serve Flight SQL, and the PostgreSQL protocol when it has a listener, until `shutdown`
/// completes. Both run queries through one service: the same limits, log and users (a
/// PostgreSQL client signs in with the password, or an API token as the password).
pub async fn serve(
    listeners: Listeners,
    engine: Arc<Engine>,
    options: Options,
    auth: Option<Arc<Auth>>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    use futures::FutureExt;
    let Listeners {
        flight: listener,
        postgres: pg_listener,
        tls,
    } = listeners;
    let shutdown = shutdown.boxed().shared();
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    socket2::SockRef::from(&listener)
        .set_tcp_nodelay(true)
        .map_err(|e| ServerError::Listen {
            address: address.clone(),
            message: e.to_string(),
        })?;
    let gate = |protocol| Gate::new(protocol, options.max_connections, options.idle_time);
    let (flight_gate, pg_gate) = (gate("Flight SQL"), gate("PostgreSQL"));
    let service = FlightSqlServer::new(engine, options);
    tokio::spawn(service.clone().expire_every(Duration::from_secs(10)));
    let pg_shutdown = shutdown.clone();
    let postgres = async {
        match pg_listener {
            Some(l) => {
                let auth = auth.clone();
                postgres::serve(l, pg_gate, service.clone(), auth, tls.as_ref(), pg_shutdown).await
            }
            None => Ok(()),
        }
    };
    let flight = async {
        match auth.clone() {
            Some(auth) => {
                run(
                    Authenticated::new(service.clone(), auth),
                    flight_gate.incoming(listener),
                    tls.as_ref(),
                    shutdown,
                )
                .await
            }
            None => {
                let incoming = flight_gate.incoming(listener);
                run(service.clone(), incoming, tls.as_ref(), shutdown).await
            }
        }
    };
    let (flight, postgres) = tokio::join!(flight, postgres);
    flight.and(postgres)
}

async fn run<S: FlightService>(
    service: S,
    incoming: impl futures::Stream<Item = std::io::Result<connections::Connection>> + Send + 'static,
    tls: Option<&Tls>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls.flight())
            .map_err(|e| ServerError::Stopped(e.to_string()))?;
    }
    builder
        .add_service(Tracked(
            FlightServiceServer::new(service)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| ServerError::Stopped(e.to_string()))
}
