//! The processes of a cluster: a scheduler (gRPC, REST API and Flight on one port) and
//! executors, started inside this process (`local:N`) or as `strata scheduler` and
//! `strata executor`. Both read data through Strata's store registry, so credentials come from
//! the process's own environment (or, in one process, from the engine's catalog).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::extension::{
    SessionConfigExt, ballista_aggregate_functions, ballista_scalar_functions,
    ballista_window_functions,
};
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::serde::BallistaCodec;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::{ConfigProducer, RuntimeProducer};
use ballista_executor::shutdown::ShutdownNotifier;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_server::{SchedulerServer, SessionBuilder};
use datafusion::execution::context::SessionState;
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use tempfile::TempDir;
use tokio::net::TcpListener;

use super::codec::{StrataLogicalCodec, StrataPhysicalCodec};
use super::compressed::MarkCompressedScans;
use super::restarts::RestartGuard;
use super::slots::{SlotLedger, reclaim_lost_slots};
use crate::error::{Error, Result};

fn cluster_error(what: &str) -> impl Fn(ballista_core::error::BallistaError) -> Error + '_ {
    move |e| Error::Execution(format!("{what}: {e}"))
}

/// The session a scheduler plans a job in: the job's settings, Strata's stores, a deep plan's
/// pieces put back together, outer joins' padded sides without their constants, build sides by
/// estimated rows, joins that emit their build side's unmatched rows partitioned, joins Ballista
/// broadcasts planned as such (and those it will not, partitioned), the rule that keeps compressed
/// scans compressed on executors, large TopKs as sorts that spill, filters' conditions ordered,
/// joins' large sides reduced by the keys of their small filtered sides where read (and such
/// reduced sides of `EXISTS` and `NOT EXISTS` broadcast), joins that
/// yield (so executors can stop a cancelled job's tasks), window sorts that hold in every stage,
/// the merge of an aggregation's result kept in the stage that finishes it, small tables read
/// by each task of the broadcast joins that build on them, string views compacted where a
/// stage writes its output, and deep stages sent in pieces.
///
/// Every job's session shares one runtime, so the statistics and footers of the files a job
/// plans over are read once, not once per job.
fn session_builder(stores: Arc<dyn ObjectStoreRegistry>) -> SessionBuilder {
    let shared = shared_runtime(move || crate::store::runtime_builder(stores.clone()).build_arc());
    Arc::new(move |config: SessionConfig| {
        let runtime = shared(&config)?;
        let mut rules = PhysicalOptimizer::new().rules;
        let at = rules
            .iter()
            .position(|r| r.name() == "join_selection")
            .map_or(0, |i| i + 1);
        // Build sides are corrected before joins that emit their build side's unmatched
        // rows are made partitioned, so that a swapped join is partitioned too.
        rules.insert(at, Arc::new(super::joins::BroadcastJoins));
        rules.insert(at, Arc::new(super::joins::PartitionedOuterBuilds));
        rules.insert(at, Arc::new(crate::optimizer::JoinSidesByRows));
        rules.insert(0, Arc::new(crate::optimizer::FilteredOuterJoinsByHash));
        rules.insert(1, Arc::new(crate::optimizer::NullableSides));
        rules.push(Arc::new(MarkCompressedScans));
        rules.push(Arc::new(crate::optimizer::LargeTopKAsSort));
        rules.push(Arc::new(crate::optimizer::CheapFiltersFirst));
        rules.push(Arc::new(super::reduce::SemiJoinsFirst));
        rules.push(Arc::new(super::reduce::SemiJoinReduction));
        rules.push(Arc::new(super::reduce::BroadcastReducedSides));
        rules.push(Arc::new(crate::optimizer::CooperativeJoins));
        rules.push(Arc::new(crate::optimizer::ExplicitWindowSorts));
        rules.push(Arc::new(super::joins::UnbroadcastJoinsPartitioned));
        rules.push(Arc::new(super::tails::MergeFinalStages));
        rules.push(Arc::new(super::inline_builds::InlineSmallBuilds));
        rules.push(Arc::new(super::views::CompactViewsAtStages));
        rules.push(Arc::new(super::pieces::StagesInPieces));
        rules.push(Arc::new(super::stage_reads::StageReads));
        // A deep plan arrives in pieces: they are put back together before anything else.
        let mut analyzer = datafusion::optimizer::Analyzer::new().rules;
        analyzer.insert(0, Arc::new(super::pieces::JoinPieces));
        Ok(SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_analyzer_rules(analyzer)
            .with_optimizer_rules(ballista_core::optimizer::ballista_default_optimizer_rules())
            .with_physical_optimizer_rules(rules)
            .with_scalar_functions(
                ballista_scalar_functions()
                    .into_iter()
                    .chain(crate::engine::plan_functions())
                    .collect(),
            )
            .with_aggregate_functions(
                ballista_aggregate_functions()
                    .into_iter()
                    .chain([crate::arithmetic::wide_sum()])
                    .collect(),
            )
            .with_window_functions(ballista_window_functions())
            .build())
    })
}

/// `config` made ready for a cluster, on clients and servers alike: the `ballista.*` and
/// `strata.*` settings registered (so SET accepts them and a job's settings reach the
/// scheduler and executors whole) with Ballista's required settings, and Strata's codecs.
///
/// Joins are hash joins, as in local mode. Ballista plans sort-merge joins instead, which can
/// spill but sort both sides of every join: TPC-H SF1 on two executors took 3.70 times local
/// mode's time with them and 1.92 times with hash joins (q09: 2.9 s against 0.42 s).
/// `SET datafusion.optimizer.prefer_hash_join = false` brings them back for joins whose sides
/// do not fit in the executors' memory.
/// Ballista's adaptive planner is off: it rewrites windows into wrong results
/// (sql-tests/windows.slt) and replaces the session's physical rules; the static planner
/// answers like local execution. `SET ballista.planner.adaptive.enabled = true` turns it on.
pub fn cluster_config(config: SessionConfig) -> SessionConfig {
    config
        .upgrade_for_ballista()
        .with_ballista_adaptive_query_planner(false)
        .with_ballista_logical_extension_codec(Arc::new(StrataLogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(StrataPhysicalCodec::default()))
        .with_option_extension(crate::optimizer::StrataOptions::default())
        .set_bool("datafusion.optimizer.prefer_hash_join", true)
}

/// The settings a job starts from, before the client's own.
fn config_producer() -> ConfigProducer {
    // One pool per database for all of this process's tasks.
    let pools = Arc::new(crate::databases::Pools::default());
    Arc::new(move || {
        cluster_config(SessionConfig::new_with_ballista()).with_extension(pools.clone())
    })
}

/// How executors get their tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheduling {
    /// The scheduler sends each task to an executor as soon as it can run, and executors
    /// report each finished task at once; the scheduler must reach executors on their task
    /// port.
    #[default]
    Push,
    /// Executors ask the scheduler for tasks (every 50 ms when idle) and report finished
    /// tasks with their next request; for executors the scheduler cannot reach.
    Pull,
}

impl Scheduling {
    fn policy(self) -> TaskSchedulingPolicy {
        match self {
            Scheduling::Push => TaskSchedulingPolicy::PushStaged,
            Scheduling::Pull => TaskSchedulingPolicy::PullStaged,
        }
    }
}

/// Serve a scheduler on `listener` until it fails; its executors must use the same
/// `scheduling`. `pages`, when given, are served on the same port beside the scheduler's
/// gRPC service and REST API (`/api/...`), at the paths they route (the dashboard).
pub async fn serve_scheduler(
    listener: TcpListener,
    stores: Arc<dyn ObjectStoreRegistry>,
    scheduling: Scheduling,
    pages: Option<axum::Router>,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Execution(format!("scheduler address: {e}")))?;
    // The scheduler's server takes connections as they come from the listener, without
    // turning off Nagle's algorithm: every small gRPC answer (a job's status, a task's) then
    // waited for the peer's delayed acknowledgement, about 40 ms per query. Accepted sockets
    // inherit the setting from the listening one.
    socket2::SockRef::from(&listener)
        .set_tcp_nodelay(true)
        .map_err(|e| Error::Execution(format!("scheduler socket: {e}")))?;
    let mut config = SchedulerConfig::default()
        .with_hostname(addr.ip().to_string())
        .with_port(addr.port())
        .with_scheduler_policy(scheduling.policy());
    // An executor that stops answering (it sends a heartbeat or polls at least every 5 s,
    // busy or not) is declared dead after 20 s and its tasks run elsewhere; Ballista's
    // default is 3 minutes.
    config.executor_timeout_seconds = 20;
    config.expire_dead_executor_interval_seconds = 2;
    config.no_executors_grace_period_seconds = 20;
    config.override_session_builder = Some(session_builder(stores));
    config.override_config_producer = Some(config_producer());
    config.override_logical_codec = Some(Arc::new(StrataLogicalCodec::default()));
    config.override_physical_codec = Some(Arc::new(StrataPhysicalCodec::default()));
    if pages.is_some() {
        // Ballista's `/` sends browsers to a page on the internet; the pages take `/`.
        config.web_tui_route = "/ballista".into();
    }
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(cluster_error("cannot start the scheduler"))?;
    let ledger = Arc::new(SlotLedger::new(cluster.cluster_state()));
    let job_state = cluster.job_state();
    let cluster = BallistaCluster::new(ledger.clone(), job_state.clone());
    // Ballista's own scheduler, with the task launcher that fails a job rather than let a
    // stage that starts over answer twice.
    let config = Arc::new(config);
    let metrics = ballista_scheduler::metrics::default_metrics_collector()
        .map_err(cluster_error("cannot start the scheduler"))?;
    let mut scheduler =
        SchedulerServer::<LogicalPlanNode, PhysicalPlanNode>::new_with_task_launcher(
            config.scheduler_endpoint(),
            cluster,
            codec(),
            config.clone(),
            metrics,
            Arc::new(RestartGuard::new(config.scheduler_endpoint())),
        );
    scheduler
        .init()
        .await
        .map_err(cluster_error("cannot start the scheduler"))?;
    tokio::spawn(reclaim_lost_slots(scheduler.clone(), ledger));
    // The scheduler's gRPC service and REST API, as Ballista serves them (without its
    // optional Flight proxy, which Strata's clients do not use), Strata's additions to the REST
    // API, and the pages beside them.
    use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer;
    let grpc = SchedulerGrpcServer::new(scheduler.clone())
        .max_encoding_message_size(config.grpc_server_max_encoding_message_size as usize)
        .max_decoding_message_size(config.grpc_server_max_decoding_message_size as usize);
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(grpc);
    let additions = super::scheduler_api::routes(scheduler.clone(), job_state);
    let rest = ballista_scheduler::api::get_routes(Arc::new(scheduler));
    let app = pages
        .unwrap_or_default()
        .merge(additions)
        .merge(rest)
        .merge(routes.routes().into_axum_router())
        .into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .await
        .map_err(|e| Error::Execution(format!("scheduler stopped: {e}")))
}

/// How an executor runs tasks.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Tasks run at once.
    pub slots: usize,
    /// Where shuffle files and spills go (default: a temporary folder).
    pub work_dir: Option<PathBuf>,
    /// Memory for all running tasks together, shared out per slot.
    pub memory_limit: Option<usize>,
    /// How the executor gets its tasks (as its scheduler does).
    pub scheduling: Scheduling,
    /// The port (on the bind address) the scheduler sends tasks to, with push scheduling.
    pub task_port: u16,
}

/// The runtime an executor's tasks start from: one for all of them, built by the first. Each
/// task still gets a memory pool of its own (Ballista puts it over this runtime). Sharing it
/// keeps the footers of the files tasks read in its cache from one query to the next, and
/// spares each task a spill folder of its own, made and removed in the work folder.
fn runtime_producer(stores: Arc<dyn ObjectStoreRegistry>, work_dir: String) -> RuntimeProducer {
    shared_runtime(move || {
        crate::store::runtime_builder(stores.clone())
            .with_temp_file_path(work_dir.clone())
            .build_arc()
    })
}

/// A producer that builds its runtime with `build` once, when first asked, and hands out
/// that one afterwards (a failed build is tried again on the next call).
fn shared_runtime(
    build: impl Fn() -> datafusion::error::Result<Arc<RuntimeEnv>> + Send + Sync + 'static,
) -> RuntimeProducer {
    let built = std::sync::OnceLock::new();
    Arc::new(move |_config: &SessionConfig| {
        if let Some(runtime) = built.get() {
            return Ok(Arc::clone(runtime));
        }
        let runtime = build()?;
        Ok(Arc::clone(built.get_or_init(|| runtime)))
    })
}

/// Every function a plan can name: DataFusion's, nested ones included, and Strata's.
fn functions() -> BallistaFunctionRegistry {
    use datafusion::execution::FunctionRegistry;
    let mut state = SessionStateBuilder::new().with_default_features().build();
    for udf in crate::engine::plan_functions() {
        // Registering a new name replaces nothing.
        let _ = state.register_udf(udf);
    }
    let _ = state.register_udaf(crate::arithmetic::wide_sum());
    BallistaFunctionRegistry::from(&state)
}

fn codec() -> BallistaCodec<LogicalPlanNode, PhysicalPlanNode> {
    BallistaCodec::new(
        Arc::new(StrataLogicalCodec::default()),
        Arc::new(StrataPhysicalCodec::default()),
    )
}

/// A scheduler and executors running in this process; the executors stop and their work
/// folders are removed when it is dropped.
#[derive(Debug)]
pub struct LocalCluster {
    /// The scheduler's `df://` address.
    pub url: String,
    _executors: Vec<LocalExecutor>,
}

/// An executor in this process: what it runs with, kept as long as it runs.
struct LocalExecutor {
    /// Dropping it stops the executor's servers and loops.
    _shutdown: ShutdownNotifier,
    /// Where the scheduler's requests to stop the executor arrive (they are ignored: the
    /// executor lives as long as its cluster).
    _stop: tokio::sync::mpsc::Receiver<bool>,
    _work_dir: TempDir,
}

impl std::fmt::Debug for LocalExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalExecutor")
            .field("work_dir", &self._work_dir.path())
            .finish_non_exhaustive()
    }
}

/// Start a scheduler and `executors` executors with `slots` task slots each in this process,
/// reading through `state`'s stores.
pub async fn start_local(
    state: &SessionState,
    executors: usize,
    slots: usize,
) -> Result<LocalCluster> {
    let failed = |e: String| Error::Execution(format!("cannot start the local cluster: {e}"));
    let stores = state.runtime_env().object_store_registry.clone();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| failed(e.to_string()))?;
    let addr = listener.local_addr().map_err(|e| failed(e.to_string()))?;
    // Pushed tasks: with executors polling instead, every stage waited up to 50 ms for its
    // tasks to be picked up and as long again for their end to be noticed.
    tokio::spawn(serve_scheduler(
        listener,
        stores.clone(),
        Scheduling::Push,
        None,
    ));
    // The listener is bound already: connecting waits for the scheduler to serve.
    let client = SchedulerGrpcClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut started = Vec::with_capacity(executors);
    for _ in 0..executors.max(1) {
        started.push(start_local_executor(client.clone(), stores.clone(), slots.max(1)).await?);
    }
    Ok(LocalCluster {
        url: format!("df://{addr}"),
        _executors: started,
    })
}

/// One executor in this process: a Flight server for its shuffle files and a task server the
/// scheduler pushes tasks to, both on free loopback ports.
async fn start_local_executor(
    scheduler: SchedulerGrpcClient<tonic::transport::Channel>,
    stores: Arc<dyn ObjectStoreRegistry>,
    slots: usize,
) -> Result<LocalExecutor> {
    use ballista_core::serde::protobuf::ExecutorRegistration;
    use ballista_core::serde::scheduler::{
        ExecutorOperatingSystemSpecification, ExecutorSpecification,
    };
    use ballista_core::utils::{GrpcServerConfig, create_grpc_server};
    use ballista_executor::executor::Executor;
    use ballista_executor::executor_process::ExecutorProcessConfig;
    use ballista_executor::flight_service::BallistaFlightService;
    use ballista_executor::metrics::LoggingMetricsCollector;

    let failed = |e: String| Error::Execution(format!("cannot start a local executor: {e}"));
    let work_dir = work_dir()?;
    let path = work_dir.path().display().to_string();
    let flight = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| failed(e.to_string()))?;
    let flight_port = flight
        .local_addr()
        .map_err(|e| failed(e.to_string()))?
        .port();
    // The task server binds its port itself once registered; find a free one for it.
    let task_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| failed(e.to_string()))?
        .port();
    let config = Arc::new(ExecutorProcessConfig {
        bind_host: "127.0.0.1".into(),
        port: flight_port,
        grpc_port: task_port,
        vcores: slots,
        task_scheduling_policy: TaskSchedulingPolicy::PushStaged,
        work_dir: Some(path.clone()),
        executor_heartbeat_interval_seconds: 5,
        ..Default::default()
    });
    let registration = ExecutorRegistration {
        id: config.executor_id.clone(),
        host: Some("127.0.0.1".into()),
        port: flight_port as u32,
        grpc_port: task_port as u32,
        specification: Some(
            ExecutorSpecification::default()
                .with_vcores(slots as u32)
                .into(),
        ),
        os_info: Some(ExecutorOperatingSystemSpecification::default().into()),
        ballista_protocol_version: ballista_core::BALLISTA_PROTOCOL_VERSION,
    };
    let executor = Arc::new(Executor::new(
        registration,
        &path,
        runtime_producer(stores, path.clone()),
        config_producer(),
        Arc::new(functions()),
        Arc::new(LoggingMetricsCollector::default()),
        slots,
        Arc::new(super::stop::StoppableEngine::new()),
    ));
    let shutdown = ShutdownNotifier::new();
    let mut flight_stopped = shutdown.subscribe_for_shutdown();
    let flight_service = arrow_flight::flight_service_server::FlightServiceServer::new(
        BallistaFlightService::new(path),
    );
    tokio::spawn(
        create_grpc_server(&GrpcServerConfig::default())
            .add_service(flight_service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(flight).with_nodelay(Some(true)),
                async move { flight_stopped.recv().await },
            ),
    );
    let (stop_send, stop) = tokio::sync::mpsc::channel(1);
    ballista_executor::executor_server::startup(
        scheduler,
        config,
        executor,
        codec(),
        stop_send,
        &shutdown,
        ballista_executor::health::ExecutorHealth::new(),
    )
    .await
    .map_err(cluster_error("cannot start a local executor"))?;
    Ok(LocalExecutor {
        _shutdown: shutdown,
        _stop: stop,
        _work_dir: work_dir,
    })
}

/// A new temporary folder for an executor's shuffle files and spills.
fn work_dir() -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix("strata-executor-")
        .tempdir()
        .map_err(|e| Error::Execution(format!("executor work folder: {e}")))
}

/// Run an executor process for the scheduler at `scheduler` (`host:port`), serving shuffle
/// data on `bind` and taking tasks on `options.task_port`, until it is stopped (Ctrl-C,
/// SIGTERM or the scheduler).
pub async fn run_executor(
    scheduler: &str,
    bind: SocketAddr,
    advertise: Option<String>,
    stores: Arc<dyn ObjectStoreRegistry>,
    options: ExecutorOptions,
) -> Result<()> {
    use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
    let (host, port) = scheduler
        .rsplit_once(':')
        .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_string(), p)))
        .ok_or_else(|| {
            Error::Config(format!(
                "scheduler address '{scheduler}' should be host:port"
            ))
        })?;
    // A temporary folder lives (and is removed) with this function's run.
    let (work_dir, _temporary) = match &options.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::Config(format!("work dir {}: {e}", d.display())))?;
            (d.display().to_string(), None)
        }
        None => {
            let t = work_dir()?;
            (t.path().display().to_string(), Some(t))
        }
    };
    let config = ExecutorProcessConfig {
        bind_host: bind.ip().to_string(),
        port: bind.port(),
        grpc_port: options.task_port,
        external_host: advertise,
        scheduler_host: host,
        scheduler_port: port,
        scheduler_connect_timeout_seconds: 10,
        vcores: options.slots,
        task_scheduling_policy: options.scheduling.policy(),
        work_dir: Some(work_dir.clone()),
        executor_heartbeat_interval_seconds: 5,
        memory_pool_size: options.memory_limit.map(|m| m as u64),
        override_config_producer: Some(config_producer()),
        override_function_registry: Some(Arc::new(functions())),
        override_runtime_producer: Some(runtime_producer(stores, work_dir)),
        override_logical_codec: Some(Arc::new(StrataLogicalCodec::default())),
        override_physical_codec: Some(Arc::new(StrataPhysicalCodec::default())),
        override_execution_engine: Some(Arc::new(super::stop::StoppableEngine::new())),
        ..Default::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(cluster_error("executor stopped"))
}
