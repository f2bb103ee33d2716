//! `strata scheduler` and `strata executor`: the two server roles of a cluster.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use strata::Catalog;
use strata::cluster::{ExecutorOptions, Scheduling};
use strata::dashboard::Dashboard;
use strata::server::Auth;
use strata::store::StoreRegistry;

use super::{CliError, EngineArgs, catalog_path, parse_size};

/// Options of `strata scheduler`.
#[derive(Debug, clap::Args)]
pub struct SchedulerArgs {
    /// Address to serve on (gRPC for clients and executors, and the REST API under /api).
    #[arg(
        long,
        env = "STRATA_BIND",
        default_value = "0.0.0.0:50050",
        value_name = "HOST:PORT"
    )]
    bind: String,
    /// How executors get tasks: pushed by the scheduler (it must reach their task port), or
    /// pulled by executors it cannot reach. Executors must say the same.
    #[arg(long, value_enum, default_value_t = Scheduling::Push)]
    scheduling: Scheduling,
    /// Users who may open the dashboard served on the scheduler's port (the same TOML file
    /// as `strata serve --users`). Without it the dashboard is served only when the
    /// scheduler listens on a loopback address.
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
}

/// Options of `strata executor`.
#[derive(Debug, clap::Args)]
pub struct ExecutorArgs {
    /// The scheduler to work for.
    #[arg(long, env = "STRATA_SCHEDULER", value_name = "HOST:PORT")]
    scheduler: String,
    /// Address to serve shuffle data on (port 0 picks a free one).
    #[arg(
        long,
        env = "STRATA_BIND",
        default_value = "0.0.0.0:50051",
        value_name = "HOST:PORT"
    )]
    bind: String,
    /// Port the scheduler sends tasks to, on the bind host (default: the shuffle port + 1, or a
    /// free one when that is 0).
    #[arg(long, value_name = "PORT")]
    task_port: Option<u16>,
    /// Host name other executors and clients reach this one by (default: the bind host).
    #[arg(long, value_name = "HOST")]
    advertise: Option<String>,
    /// How this executor gets tasks; as the scheduler's `--scheduling`.
    #[arg(long, value_enum, default_value_t = Scheduling::Push)]
    scheduling: Scheduling,
    /// Tasks run at once (default: the number of cores).
    #[arg(long)]
    slots: Option<usize>,
    /// Folder for shuffle files and spills (default: a new temporary folder).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
}

pub(crate) fn resolve(addr: &str) -> Result<SocketAddr, CliError> {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| CliError::Usage(format!("invalid address '{addr}'; use HOST:PORT")))
}

/// Object stores as the catalog's `[stores]` settings describe them; credentials come from
/// this process's environment (AWS_*, GOOGLE_*, AZURE_*), never from clients.
fn stores(engine: &EngineArgs) -> Result<Arc<StoreRegistry>, CliError> {
    let settings = match catalog_path(engine) {
        Some(path) => Catalog::load(&path).map_err(strata::Error::from)?.stores,
        None => Vec::new(),
    };
    Ok(Arc::new(StoreRegistry::new(
        settings,
        Duration::from_secs(30),
    )))
}

/// The server's log on standard error, when `STRATA_LOG` asks for one (`info`, `debug`, or
/// filters such as `ballista_executor=debug`); nothing is logged otherwise.
pub(crate) fn server_log() {
    if let Ok(filter) = std::env::var("STRATA_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// Run a scheduler until Ctrl-C or SIGTERM.
pub async fn scheduler(args: &SchedulerArgs, engine: &EngineArgs) -> Result<ExitCode, CliError> {
    server_log();
    let listener = tokio::net::TcpListener::bind(resolve(&args.bind)?)
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on {}: {e}", args.bind)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    eprintln!("strata scheduler listening on df://{addr} (REST API: http://{addr}/api/jobs)");
    let pages = dashboard(args, engine, addr).await?;
    let serve = strata::cluster::serve_scheduler(listener, stores(engine)?, args.scheduling, pages);
    tokio::select! {
        result = serve => result.map(|_| ExitCode::SUCCESS).map_err(CliError::from),
        _ = shutdown() => Ok(ExitCode::SUCCESS),
    }
}

/// The dashboard the scheduler serves on its port: its cluster's jobs, executors and the
/// catalog's datasets, through an engine of its own on the cluster. Off loopback, only for
/// the users of `--users`; without them, none (and a line says why).
async fn dashboard(
    args: &SchedulerArgs,
    engine: &EngineArgs,
    addr: SocketAddr,
) -> Result<Option<axum::Router>, CliError> {
    let auth = match &args.users {
        Some(path) => Some(Arc::new(
            Auth::load(path, Duration::from_secs(3600))
                .map_err(|e| CliError::Usage(e.to_string()))?,
        )),
        None if addr.ip().is_loopback() => None,
        None => {
            eprintln!(
                "strata scheduler: no dashboard, as {addr} is reachable from other machines; \
                 give --users FILE to serve it to signed-in users"
            );
            return Ok(None);
        }
    };
    let mut own = engine.clone();
    own.cluster = Some(format!("df://{addr}"));
    let mut dashboard = Dashboard::new(super::build_engine(&own).await?);
    if let Some(auth) = auth {
        dashboard = dashboard.with_auth(auth);
    }
    eprintln!("strata dashboard on http://{addr}/");
    Ok(Some(dashboard.router()))
}

/// Run an executor until Ctrl-C, SIGTERM or the scheduler stops it.
pub async fn executor(args: &ExecutorArgs, engine: &EngineArgs) -> Result<ExitCode, CliError> {
    server_log();
    let mut bind = resolve(&args.bind)?;
    // The executor advertises its ports before serving, so pick free ones now, holding each
    // until both are known so that they differ.
    let ip = bind.ip();
    let mut held = Vec::new();
    let mut free_port = || -> Result<u16, CliError> {
        let listener = std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr().map(|a| (a.port(), l)))
            .map_err(|e| CliError::Usage(format!("cannot listen on {ip}: {e}")))?;
        held.push(listener.1);
        Ok(listener.0)
    };
    let any_shuffle_port = bind.port() == 0;
    if any_shuffle_port {
        bind.set_port(free_port()?);
    }
    let task_port = match args.task_port {
        Some(0) => free_port()?,
        Some(port) => port,
        None if any_shuffle_port => free_port()?,
        None => bind.port().checked_add(1).ok_or_else(|| {
            CliError::Usage("no port after 65535 for tasks; give --task-port".into())
        })?,
    };
    drop(held);
    let slots = args
        .slots
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let memory_limit = engine.memory_limit.as_deref().map(parse_size).transpose()?;
    let advertise = args
        .advertise
        .clone()
        .or_else(|| (!bind.ip().is_unspecified()).then(|| bind.ip().to_string()));
    let scheduler = args.scheduler.trim_start_matches("df://").to_string();
    let tasks = match args.scheduling {
        Scheduling::Push => format!("taking tasks on port {task_port}"),
        Scheduling::Pull => "asking for tasks".to_string(),
    };
    eprintln!(
        "strata executor serving shuffle data on {bind} and {tasks} with {slots} slots, \
         working for df://{scheduler}"
    );
    let options = ExecutorOptions {
        slots,
        work_dir: args.work_dir.clone(),
        memory_limit,
        scheduling: args.scheduling,
        task_port,
    };
    strata::cluster::run_executor(&scheduler, bind, advertise, stores(engine)?, options).await?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
