//! `strata serve`: the catalog's datasets over Arrow Flight SQL, and over the PostgreSQL
//! protocol with `--postgres`, until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use strata::catalog::{Catalog, ServerSettings};
use strata::confine::Confinement;
use strata::dashboard::Dashboard;
use strata::server::{Auth, Listeners, Options, Tls, serve};

use super::cluster::{resolve, server_log, shutdown};
use super::{CliError, EngineArgs, engine_builder};

/// Options of `strata serve`. Each can also come from a `STRATA_*` variable, or from the
/// `[server]` section of the catalog file (the command line wins, then the variable).
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to serve Arrow Flight SQL on (port 0 picks a free one, printed at start)
    /// [default: 127.0.0.1:50051].
    #[arg(long, env = "STRATA_FLIGHT", value_name = "HOST:PORT")]
    flight: Option<String>,
    /// Also serve the PostgreSQL protocol here, for `psql`, psycopg, JDBC and BI tools
    /// (port 0 picks a free one, printed at start).
    #[arg(long, env = "STRATA_POSTGRES", value_name = "HOST:PORT")]
    postgres: Option<String>,
    /// Also serve the dashboard of the server's queries here (port 0 picks a free one,
    /// printed at start), over HTTPS with --tls-cert. Off the loopback address it needs
    /// --users, and TLS or --insecure.
    #[arg(long, env = "STRATA_DASHBOARD", value_name = "HOST:PORT")]
    dashboard: Option<String>,
    /// Serve on an address other machines can reach although clients are not authenticated
    /// or the connection is not encrypted.
    #[arg(long)]
    insecure: bool,
    /// Also run statements that write or change what clients share (`COPY`, `INSERT`,
    /// `CREATE`, `DROP`, `SET`); by default the server runs only statements that read.
    #[arg(long)]
    allow_writes: bool,
    /// Users who may sign in: a TOML file of users with hashed passwords and API tokens
    /// (`strata hash-secret` makes the hashes), read again whenever it changes.
    #[arg(long, env = "STRATA_USERS", value_name = "FILE")]
    users: Option<PathBuf>,
    /// Encrypt both protocols with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "STRATA_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "STRATA_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Require every client to present a certificate signed by this authority (PEM).
    #[arg(long, env = "STRATA_TLS_CLIENT_CA", value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// How long a token from signing in stays valid [default: 3600].
    #[arg(long, env = "STRATA_TOKEN_TTL", value_name = "SECONDS")]
    token_ttl: Option<u64>,
    /// Queries running at once; more wait in line (see --queue-timeout). A query holds its
    /// place until its result is read.
    #[arg(long, env = "STRATA_MAX_QUERIES", value_name = "N")]
    max_queries: Option<usize>,
    /// Queries running at once per signed-in user.
    #[arg(long, env = "STRATA_MAX_QUERIES_PER_USER", value_name = "N")]
    max_queries_per_user: Option<usize>,
    /// How long a query waits in line before it fails [default: 60].
    #[arg(long, env = "STRATA_QUEUE_TIMEOUT", value_name = "SECONDS")]
    queue_timeout: Option<u64>,
    /// The largest result a query may send, e.g. 512M or 2G (in Arrow's memory).
    #[arg(long, env = "STRATA_MAX_RESULT_SIZE", value_name = "SIZE")]
    max_result_size: Option<String>,
    /// Memory one query may use, e.g. 1G; beyond it its operators spill, or it fails alone
    /// (within --memory-limit, which all queries share).
    #[arg(long, env = "STRATA_QUERY_MEMORY", value_name = "SIZE")]
    query_memory: Option<String>,
    /// Connections open at once, per protocol; more are refused [default: 1024].
    #[arg(long, env = "STRATA_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// Close a connection that has had no request for this long (0: never) [default: 900].
    #[arg(long, env = "STRATA_IDLE_TIMEOUT", value_name = "SECONDS")]
    idle_timeout: Option<u64>,
    /// Let clients read files under this folder too (repeatable); by default they reach only
    /// the catalog's datasets and the stores its catalog names.
    #[arg(long = "root", value_name = "DIR")]
    roots: Vec<PathBuf>,
    /// Let clients write under this folder (with --allow-writes; repeatable).
    #[arg(long = "write-root", value_name = "DIR")]
    write_roots: Vec<PathBuf>,
    /// On Ctrl-C or SIGTERM, let running queries finish for at most this many seconds
    /// [default: 30].
    #[arg(long, env = "STRATA_GRACE", value_name = "SECONDS")]
    grace: Option<u64>,
    /// Cancel a query that runs longer than this many seconds (0: no limit) [default: 0].
    #[arg(long, env = "STRATA_QUERY_TIMEOUT", value_name = "SECONDS")]
    query_timeout: Option<u64>,
}

/// The options of `strata serve`, the command line's over the catalog's `[server]` section.
fn settings(args: &ServeArgs, engine: &EngineArgs) -> Result<ServerSettings, CliError> {
    let file = match super::catalog_path(engine) {
        Some(path) => {
            Catalog::load(&path)
                .map_err(|e| CliError::Usage(e.to_string()))?
                .server
        }
        None => ServerSettings::default(),
    };
    let or = |given: &Option<String>, file: Option<String>| given.clone().or(file);
    let or_path = |given: &Option<PathBuf>, file: Option<PathBuf>| given.clone().or(file);
    let many = |given: &Vec<PathBuf>, file: Vec<PathBuf>| {
        if given.is_empty() {
            file
        } else {
            given.clone()
        }
    };
    Ok(ServerSettings {
        flight: or(&args.flight, file.flight),
        postgres: or(&args.postgres, file.postgres),
        dashboard: or(&args.dashboard, file.dashboard),
        users: or_path(&args.users, file.users),
        tls_cert: or_path(&args.tls_cert, file.tls_cert),
        tls_key: or_path(&args.tls_key, file.tls_key),
        tls_client_ca: or_path(&args.tls_client_ca, file.tls_client_ca),
        token_ttl: args.token_ttl.or(file.token_ttl),
        max_queries: args.max_queries.or(file.max_queries),
        max_queries_per_user: args.max_queries_per_user.or(file.max_queries_per_user),
        queue_timeout: args.queue_timeout.or(file.queue_timeout),
        max_result_size: or(&args.max_result_size, file.max_result_size),
        query_memory: or(&args.query_memory, file.query_memory),
        max_connections: args.max_connections.or(file.max_connections),
        idle_timeout: args.idle_timeout.or(file.idle_timeout),
        roots: many(&args.roots, file.roots),
        write_roots: many(&args.write_roots, file.write_roots),
        allow_writes: Some(args.allow_writes || file.allow_writes.unwrap_or(false)),
        grace: args.grace.or(file.grace),
        query_timeout: args.query_timeout.or(file.query_timeout),
    })
}

/// Serve until Ctrl-C or SIGTERM; requests under way finish first.
pub async fn run(args: &ServeArgs, engine: &EngineArgs) -> Result<ExitCode, CliError> {
    // Each query's start and end go to standard error, unless STRATA_LOG says otherwise.
    if std::env::var_os("STRATA_LOG").is_none() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("strata::queries=info"))
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init();
    }
    server_log();
    let usage = |e: &dyn std::fmt::Display| CliError::Usage(e.to_string());
    let set = settings(args, engine)?;
    let address = resolve(set.flight.as_deref().unwrap_or("127.0.0.1:50051"))?;
    let pg_address = set.postgres.as_deref().map(resolve).transpose()?;
    let tls = match (&set.tls_cert, &set.tls_key) {
        (Some(cert), Some(key)) => {
            Some(Tls::load(cert, key, set.tls_client_ca.as_deref()).map_err(|e| usage(&e))?)
        }
        (None, None) if set.tls_client_ca.is_none() => None,
        _ => {
            return Err(CliError::Usage(
                "TLS needs both --tls-cert and --tls-key".into(),
            ));
        }
    };
    for address in std::iter::once(address).chain(pg_address) {
        let missing = match (set.users.is_some(), tls.is_some()) {
            (true, true) => continue,
            (true, false) => "TLS (--tls-cert, --tls-key)",
            (false, true) => "authentication (--users)",
            (false, false) => "authentication (--users) or TLS (--tls-cert, --tls-key)",
        };
        if !address.ip().is_loopback() && !args.insecure {
            return Err(CliError::Usage(format!(
                "{address} can be reached from other machines, and this server has no \
                 {missing}; serve on 127.0.0.1, or pass --insecure"
            )));
        }
    }
    if let Some(address) = set.dashboard.as_deref().map(resolve).transpose()?
        && !address.ip().is_loopback()
        && !(set.users.is_some() && (tls.is_some() || args.insecure))
    {
        return Err(CliError::Usage(format!(
            "the dashboard on {address} can be reached from other machines; it needs \
             --users, and TLS (--tls-cert, --tls-key) or --insecure to send its pages \
             unencrypted; or serve it on 127.0.0.1"
        )));
    }
    let mut confinement = Confinement::new();
    for root in &set.roots {
        confinement = confinement.read_root(root).map_err(|e| usage(&e))?;
    }
    for root in &set.write_roots {
        confinement = confinement.write_root(root).map_err(|e| usage(&e))?;
    }
    let token_ttl = Duration::from_secs(set.token_ttl.unwrap_or(3600));
    let auth = match &set.users {
        Some(path) => Some(Arc::new(
            Auth::load(path, token_ttl).map_err(|e| usage(&e))?,
        )),
        None => None,
    };
    let size = |text: &Option<String>| -> Result<Option<usize>, CliError> {
        text.as_deref().map(super::parse_size).transpose()
    };
    let seconds = |s: Option<u64>| s.filter(|s| *s > 0).map(Duration::from_secs);
    let options = Options {
        read_only: set.allow_writes != Some(true),
        query_time: seconds(set.query_timeout),
        max_queries: set.max_queries,
        max_queries_per_user: set.max_queries_per_user,
        queue_timeout: Duration::from_secs(set.queue_timeout.unwrap_or(60)),
        max_result_bytes: size(&set.max_result_size)?.map(|n| n as u64),
        max_connections: set.max_connections.or(Some(1024)).filter(|n| *n > 0),
        idle_time: seconds(Some(set.idle_timeout.unwrap_or(900))),
        ..Options::default()
    };
    let mut builder = engine_builder(engine)?.confine(confinement);
    if let Some(bytes) = size(&set.query_memory)? {
        builder = builder.query_memory_limit(bytes);
    }
    let engine = builder.build().await?;
    let engine = Arc::new(engine);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on {address}: {e}")))?;
    let bound = listener.local_addr().map_err(|e| usage(&e))?;
    let pg_listener = match pg_address {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| CliError::Usage(format!("cannot listen on {address}: {e}")))?,
        ),
        None => None,
    };
    let postgres = match &pg_listener {
        Some(l) => {
            let a = l.local_addr().map_err(|e| usage(&e))?;
            format!(" and PostgreSQL on postgres://{a}")
        }
        None => String::new(),
    };
    let scheme = if tls.is_some() { "grpc+tls" } else { "grpc" };
    eprintln!(
        "strata serving {} tables over Flight SQL on {scheme}://{bound}{postgres} ({} runner{}{})",
        engine.table_names().len(),
        engine.runner().name(),
        if auth.is_some() {
            ", users sign in"
        } else {
            ""
        },
        match &tls {
            Some(t) if t.requires_client_certificates() => ", TLS with client certificates",
            Some(_) => ", TLS",
            None => "",
        }
    );
    // The dashboard sees every client's queries: they share the engine's monitor.
    let dashboard = match &set.dashboard {
        Some(address) => {
            let mut dashboard = Dashboard::new(engine.new_session());
            if let Some(auth) = &auth {
                dashboard = dashboard.with_auth(auth.clone());
            }
            if let Some(tls) = &tls {
                dashboard = dashboard.with_tls(tls.clone());
            }
            let serving = dashboard.serve(address).await.map_err(|e| usage(&e))?;
            eprintln!("strata dashboard on {}", serving.url());
            Some(serving)
        }
        None => None,
    };
    // A signal stops new requests; those under way get the grace period, then are cut.
    let grace = set.grace.unwrap_or(30);
    let (stopping, stopped) = tokio::sync::oneshot::channel();
    let signal = async {
        shutdown().await;
        eprintln!("strata serve: stopping; running queries get {grace} s");
        let _ = stopping.send(());
    };
    let listeners = Listeners {
        flight: listener,
        postgres: pg_listener,
        tls,
    };
    let server = serve(listeners, engine, options, auth, signal);
    tokio::select! {
        served = server => served.map_err(|e| usage(&e))?,
        _ = async { if stopped.await.is_ok() { tokio::time::sleep(Duration::from_secs(grace)).await } else { std::future::pending().await } } => {
            eprintln!("strata serve: queries still running after {grace} s were cut off");
        }
    }
    drop(dashboard);
    eprintln!("strata serve stopped");
    Ok(ExitCode::SUCCESS)
}

/// `strata hash-secret`: the hash of the first line of standard input.
pub fn hash_secret() -> Result<ExitCode, CliError> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| CliError::Usage(format!("cannot read standard input: {e}")))?;
    let secret = line.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(CliError::Usage(
            "give the password or token on standard input".into(),
        ));
    }
    println!("{}", strata::server::hash_secret(secret));
    Ok(ExitCode::SUCCESS)
}
