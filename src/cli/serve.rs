//! `strata serve`: the catalog's datasets over Arrow Flight SQL, and over the PostgreSQL
//! protocol with `--postgres`, until Ctrl-C or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use strata::confine::Confinement;
use strata::server::{Auth, Listeners, Options, serve};

use super::cluster::{resolve, server_log, shutdown};
use super::{CliError, EngineArgs, engine_builder};

/// Options of `strata serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to serve Arrow Flight SQL on (port 0 picks a free one, printed at start).
    #[arg(
        long,
        env = "STRATA_FLIGHT",
        default_value = "127.0.0.1:50051",
        value_name = "HOST:PORT"
    )]
    flight: String,
    /// Also serve the PostgreSQL protocol here, for `psql`, psycopg, JDBC and BI tools
    /// (port 0 picks a free one, printed at start).
    #[arg(long, env = "STRATA_POSTGRES", value_name = "HOST:PORT")]
    postgres: Option<String>,
    /// Serve on an address other machines can reach although clients are not authenticated
    /// and the connection is not encrypted.
    #[arg(long)]
    insecure: bool,
    /// Also run statements that write or change what clients share (`COPY`, `INSERT`,
    /// `CREATE`, `DROP`, `SET`); by default the server runs only statements that read.
    #[arg(long)]
    allow_writes: bool,
    /// Users who may sign in: a TOML file of users with hashed passwords and API tokens
    /// (`strata hash-secret` makes the hashes), read again whenever it changes.
    #[arg(long, env = "STRATA_USERS", value_name = "FILE")]
    users: Option<std::path::PathBuf>,
    /// How long a token from signing in stays valid.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    token_ttl: u64,
    /// Queries running at once; more wait in line (see --queue-timeout). A query holds its
    /// place until its result is read.
    #[arg(long, env = "STRATA_MAX_QUERIES", value_name = "N")]
    max_queries: Option<usize>,
    /// Queries running at once per signed-in user.
    #[arg(long, value_name = "N")]
    max_queries_per_user: Option<usize>,
    /// How long a query waits in line before it fails.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    queue_timeout: u64,
    /// The largest result a query may send, e.g. 512M or 2G (in Arrow's memory).
    #[arg(long, value_name = "SIZE")]
    max_result_size: Option<String>,
    /// Let clients read files under this folder too (repeatable); by default they reach only
    /// the catalog's datasets and the stores its catalog names.
    #[arg(long = "root", value_name = "DIR")]
    roots: Vec<std::path::PathBuf>,
    /// Let clients write under this folder (with --allow-writes; repeatable).
    #[arg(long = "write-root", value_name = "DIR")]
    write_roots: Vec<std::path::PathBuf>,
    /// On Ctrl-C or SIGTERM, let running queries finish for at most this many seconds.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    grace: u64,
    /// Cancel a query that runs longer than this many seconds (0: no limit).
    #[arg(
        long,
        env = "STRATA_QUERY_TIMEOUT",
        default_value_t = 0,
        value_name = "SECONDS"
    )]
    query_timeout: u64,
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
    let address = resolve(&args.flight)?;
    let pg_address = args.postgres.as_deref().map(resolve).transpose()?;
    for address in std::iter::once(address).chain(pg_address) {
        if !address.ip().is_loopback() && !args.insecure {
            let missing = if args.users.is_some() {
                "TLS"
            } else {
                "authentication (--users) or TLS"
            };
            return Err(CliError::Usage(format!(
                "{address} can be reached from other machines, and this server has no \
                 {missing}; serve on 127.0.0.1, or pass --insecure"
            )));
        }
    }
    let mut confinement = Confinement::new();
    for root in &args.roots {
        confinement = confinement
            .read_root(root)
            .map_err(|e| CliError::Usage(e.to_string()))?;
    }
    for root in &args.write_roots {
        confinement = confinement
            .write_root(root)
            .map_err(|e| CliError::Usage(e.to_string()))?;
    }
    let auth = match &args.users {
        Some(path) => Some(Arc::new(
            Auth::load(path, Duration::from_secs(args.token_ttl))
                .map_err(|e| CliError::Usage(e.to_string()))?,
        )),
        None => None,
    };
    let engine = engine_builder(engine)?.confine(confinement).build().await?;
    let engine = Arc::new(engine);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on {address}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError::Usage(e.to_string()))?;
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
            let a = l.local_addr().map_err(|e| CliError::Usage(e.to_string()))?;
            format!(" and PostgreSQL on postgres://{a}")
        }
        None => String::new(),
    };
    eprintln!(
        "strata serving {} tables over Flight SQL on grpc://{bound}{postgres} ({} runner{})",
        engine.table_names().len(),
        engine.runner().name(),
        if auth.is_some() {
            ", users sign in"
        } else {
            ""
        }
    );
    let options = Options {
        read_only: !args.allow_writes,
        query_time: (args.query_timeout > 0).then(|| Duration::from_secs(args.query_timeout)),
        max_queries: args.max_queries,
        max_queries_per_user: args.max_queries_per_user,
        queue_timeout: Duration::from_secs(args.queue_timeout),
        max_result_bytes: match &args.max_result_size {
            Some(size) => Some(super::parse_size(size)? as u64),
            None => None,
        },
        ..Options::default()
    };
    // A signal stops new requests; those under way get the grace period, then are cut.
    let (stopping, stopped) = tokio::sync::oneshot::channel();
    let signal = async {
        shutdown().await;
        eprintln!(
            "strata serve: stopping; running queries get {} s",
            args.grace
        );
        let _ = stopping.send(());
    };
    let listeners = Listeners {
        flight: listener,
        postgres: pg_listener,
    };
    let server = serve(listeners, engine, options, auth, signal);
    let grace = Duration::from_secs(args.grace);
    tokio::select! {
        served = server => served.map_err(|e| CliError::Usage(e.to_string()))?,
        _ = async { if stopped.await.is_ok() { tokio::time::sleep(grace).await } else { std::future::pending().await } } => {
            eprintln!("strata serve: queries still running after {} s were cut off", args.grace);
        }
    }
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
