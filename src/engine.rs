//! The embeddable API: [`Engine`] owns a DataFusion session configured for Strata, the
//! registered datasets and a [`Runner`]; [`QueryResult`] streams or collects a query's batches
//! and can be cancelled from another task.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionContext;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{CreateExternalTable, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricValue;
use datafusion::prelude::SessionConfig;
use datafusion::scalar::ScalarValue;
use futures::{FutureExt, Stream, StreamExt};

use crate::catalog::Catalog;
use crate::cluster::{ClusterJob, ClusterRunner, JobStats};
use crate::confine::Confinement;
use crate::dataset::{Dataset, DatasetError, DatasetOptions, DatasetSpec, DatasetTable, Format};
use crate::error::{Error, Result};
use crate::functions::{PreparedFunction, PreparedTables, resolve_call};
use crate::monitor::{Monitor, PlanNode, QueryState, Tracker};
use crate::optimizer::StrataOptions;
use crate::query_memory::QueryPool;
use crate::runner::{Execution, LocalRunner, Runner};
use crate::schema::{LazySchema, PendingTable};
use crate::sql;
use crate::store::{StoreRegistry, StoreSettings};

/// How an [`Engine`] is set up. Build one with [`Engine::builder`].
#[derive(Debug)]
pub struct EngineBuilder {
    target_partitions: Option<usize>,
    batch_size: Option<usize>,
    memory_limit: Option<usize>,
    query_memory_limit: Option<usize>,
    spill_dir: Option<PathBuf>,
    catalog: Option<PathBuf>,
    stores: Vec<StoreSettings>,
    store_timeout: Duration,
    settings: Vec<(String, String)>,
    runner: Option<Arc<dyn Runner>>,
    cluster: Option<String>,
    confinement: Option<Confinement>,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            target_partitions: None,
            batch_size: None,
            memory_limit: None,
            query_memory_limit: None,
            spill_dir: None,
            catalog: None,
            stores: Vec::new(),
            store_timeout: Duration::from_secs(30),
            settings: Vec::new(),
            runner: None,
            cluster: None,
            confinement: None,
        }
    }
}

impl EngineBuilder {
    /// How many threads a query may use: sets the number of partitions plans are split into.
    /// Without it, plans are split into twice as many partitions as there are cores.
    pub fn threads(mut self, n: usize) -> Self {
        self.target_partitions = Some(n.max(1));
        self
    }

    /// The number of partitions plans are split into (same as [`EngineBuilder::threads`]).
    pub fn target_partitions(mut self, n: usize) -> Self {
        self.target_partitions = Some(n.max(1));
        self
    }

    /// Rows per batch (default 8192).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = Some(n.max(1));
        self
    }

    /// Cap the memory queries may use, in bytes; sorts, joins and aggregations spill to disk
    /// beyond it.
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Cap the memory each query may use, in bytes, within [`EngineBuilder::memory_limit`]
    /// (which all queries share): a query over it spills or fails, and the others go on.
    /// Applies to queries run on this process's threads.
    pub fn query_memory_limit(mut self, bytes: usize) -> Self {
        self.query_memory_limit = Some(bytes);
        self
    }

    /// Where spill files go (default: the system temporary folder).
    pub fn spill_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spill_dir = Some(dir.into());
        self
    }

    /// Register the datasets and stores of a catalog file at build time.
    pub fn catalog(mut self, path: impl Into<PathBuf>) -> Self {
        self.catalog = Some(path.into());
        self
    }

    /// Settings for object stores whose URLs start with `prefix` (e.g. `s3://bucket`):
    /// `endpoint`, `region`, `access_key_id`, `allow_http`, ... as `object_store` names them.
    pub fn store<K: Into<String>, V: Into<String>>(
        mut self,
        prefix: impl Into<String>,
        options: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.stores.push(StoreSettings {
            prefix: prefix.into(),
            options: options
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        });
        self
    }

    /// How long a request to an object store may take, retries included (default 30 s).
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// Set any DataFusion configuration key (e.g. `datafusion.execution.batch_size`).
    pub fn setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((key.into(), value.into()));
        self
    }

    /// Run queries on a Ballista cluster: `df://host:port` for a running scheduler, or
    /// `local:N` to start a scheduler and N executors inside this process.
    pub fn cluster(mut self, url: impl Into<String>) -> Self {
        self.cluster = Some(url.into());
        self
    }

    /// Confine statements to the catalog's datasets and what `confinement` allows (as
    /// `strata serve` does): anything else a statement would read or write is refused before
    /// it runs, and the local file store checks every path again.
    pub fn confine(mut self, confinement: Confinement) -> Self {
        self.confinement = Some(confinement);
        self
    }

    /// Execute through `runner` instead of the local threads.
    pub fn runner(mut self, runner: Arc<dyn Runner>) -> Self {
        self.runner = Some(runner);
        self
    }

    /// Build the engine, registering the catalog's datasets.
    pub async fn build(self) -> Result<Engine> {
        let catalog = match &self.catalog {
            Some(p) => Some(Catalog::load(p)?),
            None => None,
        };
        let mut stores = catalog
            .as_ref()
            .map(|c| c.stores.clone())
            .unwrap_or_default();
        stores.extend(self.stores.clone());

        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(true)
            // The database connections this engine's tables keep open.
            .with_extension(Arc::new(crate::databases::Pools::default()));
        let partitions = match (self.target_partitions, &self.cluster) {
            (Some(n), _) => Some(n),
            // Twice the cores: a thread whose part of a scan or join finishes early takes
            // another instead of idling (TPC-H SF1 on 2 cores: 8% faster, geometric mean).
            (None, None) => Some(2 * num_cpus()),
            (None, Some(_)) => None,
        };
        if let Some(n) = partitions {
            config = config.with_target_partitions(n);
        }
        if let Some(n) = self.batch_size {
            config = config.with_batch_size(n);
        }
        {
            let o = config.options_mut();
            o.sql_parser.collect_spans = true;
            // `1077.17` is an exact decimal, as in PostgreSQL and DuckDB: compared with a
            // DECIMAL column it matches the rows that hold that value (as a float it is
            // 1077.1699999999999, and `= 1077.17` finds nothing).
            o.sql_parser.parse_float_as_decimal = true;
            // `**` in a glob crosses directories, as users expect.
            o.execution.listing_table_ignore_subdirectory = false;
            o.execution.parquet.pushdown_filters = false;
            o.execution.parquet.enable_page_index = true;
            o.execution.parquet.pruning = true;
        }
        if self.cluster.is_some() {
            // Strata's settings are registered there too (the scheduler and executors take
            // them with the job's other settings). A join's build side is broadcast to
            // every task of the probe side under Ballista's own limit
            // (`ballista.optimizer.broadcast_join_threshold_bytes`, 128 MiB).
            config = crate::cluster::cluster_config(config);
        } else {
            let o = config.options_mut();
            // A join whose smaller side holds up to 4 M rows or 100 MB builds one hash table
            // that every partition of the other side probes, instead of repartitioning both
            // sides by key (DataFusion's limits are 128 K rows and 1 MB).
            o.optimizer.hash_join_single_partition_threshold = 100 << 20;
            o.optimizer.hash_join_single_partition_threshold_rows = 4_000_000;
            config = config.with_option_extension(StrataOptions::default());
        }
        if let Some(limit) = self.memory_limit {
            // Each sort that may spill reserves room for merging its runs up front (10 MB
            // by default, per partition): under a small limit that reservation alone failed
            // sorts of a few rows. It takes a quarter of each partition's share instead.
            let n = config.options().execution.target_partitions.max(1);
            let quarter_share = limit / (4 * n);
            config.options_mut().execution.sort_spill_reservation_bytes =
                quarter_share.clamp(64 << 10, 10 << 20);
            // A TopK cannot spill: one that may not fit in a quarter of its partition's
            // share becomes a sort that can.
            if let Some(o) = config.options_mut().extensions.get_mut::<StrataOptions>() {
                o.topk_max_bytes = Some(quarter_share);
            }
        }
        for (k, v) in &self.settings {
            config.options_mut().set(k, v).map_err(|e| {
                Error::Config(format!(
                    "{k} = {v}: {}",
                    crate::error::clean_message(&e.to_string())
                ))
            })?;
        }

        let confinement = self.confinement.clone().map(|mut c| {
            for (_, spec) in catalog.iter().flat_map(|c| c.tables.iter()) {
                for location in &spec.locations {
                    let local = !location.contains("://");
                    match &spec.base_dir {
                        Some(base) if local => {
                            c.allow_dataset(&base.join(location).display().to_string())
                        }
                        _ => c.allow_dataset(location),
                    }
                }
            }
            for store in &stores {
                c = c.store(store.prefix.clone());
            }
            Arc::new(c)
        });
        let mut registry = StoreRegistry::new(stores, self.store_timeout);
        if let Some(c) = &confinement {
            registry = registry.confined(c.clone());
        }
        let registry = Arc::new(registry);
        let mut runtime = crate::store::runtime_builder(registry);
        if let Some(limit) = self.memory_limit {
            runtime = runtime.with_memory_limit(limit, 1.0);
        }
        if let Some(dir) = &self.spill_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Config(format!("spill directory {}: {e}", dir.display())))?;
            runtime = runtime.with_disk_manager_builder(
                DiskManagerBuilder::default()
                    .with_mode(DiskManagerMode::Directories(vec![dir.clone()])),
            );
        }
        let runtime = runtime.build_arc()?;

        let prepared = Arc::new(PreparedTables::default());
        let datasets: Arc<Mutex<HashMap<String, DatasetSpec>>> = Arc::default();
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_type_planner(Arc::new(crate::types::StrataTypes))
            .with_analyzer_rule(Arc::new(crate::arithmetic::PostgresArithmetic))
            .with_analyzer_rule(Arc::new(crate::inlists::KeepInListsApart))
            .with_analyzer_rule(Arc::new(crate::subquery::DecorrelateSubqueries))
            .with_optimizer_rules(crate::join_keys::before_projections(
                [
                    crate::subquery::optimizer_rules(),
                    crate::databases::optimizer_rules(),
                ]
                .concat(),
            ))
            .with_physical_optimizer_rules(crate::optimizer::physical_rules());
        for format in [
            "PARQUET", "CSV", "JSON", "NDJSON", "ARROW", "AVRO", "TSV", "POSTGRES", "MYSQL",
            "SQLITE",
        ] {
            builder = builder.with_table_factory(format.to_string(), Arc::new(DatasetTableFactory));
        }
        let state = builder.build();
        let ctx = SessionContext::new_with_state(state);
        for udf in plan_functions() {
            ctx.register_udf(udf.as_ref().clone());
        }
        ctx.register_udaf(crate::arithmetic::wide_sum().as_ref().clone());
        for name in sql::TABLE_FUNCTIONS {
            ctx.register_udtf(
                name,
                Arc::new(PreparedFunction {
                    name,
                    prepared: prepared.clone(),
                }),
            );
        }

        let runner: Arc<dyn Runner> = match (&self.cluster, self.runner) {
            (Some(url), _) => match url.strip_prefix("local:") {
                Some(n) => {
                    let n: usize = n.parse().map_err(|_| {
                        Error::Config(format!("local:{n}: expected a number of executors"))
                    })?;
                    let slots = self.target_partitions.unwrap_or(2);
                    Arc::new(ClusterRunner::start_local(&ctx.state(), n, slots).await?)
                }
                None => Arc::new(ClusterRunner::new(url)?),
            },
            (None, Some(r)) => r,
            (None, None) => Arc::new(LocalRunner),
        };
        // Copied on write: a later SET leaves this one as it was.
        let start = Arc::clone(ctx.copied_config().options());
        let engine = Engine {
            ctx,
            start,
            runner,
            prepared,
            datasets,
            next_key: Arc::new(AtomicU64::new(0)),
            catalog_path: self.catalog.clone(),
            confinement,
            query_memory_limit: self.query_memory_limit,
            monitor: Arc::new(Monitor::default()),
            user: None,
        };
        if let Some(default) = engine.ctx.catalog("datafusion") {
            use datafusion::catalog::SchemaProvider;
            let own = Arc::new(datafusion::catalog::MemorySchemaProvider::new());
            own.register_table("query_log".into(), engine.monitor.table())?;
            default.register_schema("strata", own)?;
        }
        // Catalog tables are resolved when first used (see `schema.rs`); whole databases
        // are attached now, their tables listed.
        let databases = catalog
            .as_ref()
            .map_or_else(Vec::new, |c| c.databases.clone());
        let catalog_path = self
            .catalog
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if let Some(default) = engine.ctx.catalog("datafusion")
            && let Some(public) = default.schema("public")
        {
            let mut pending = HashMap::new();
            if let Some(cat) = catalog {
                let path = cat
                    .path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                let mut known = engine.datasets.lock().unwrap_or_else(|p| p.into_inner());
                for (name, spec) in cat.tables {
                    known.insert(name.clone(), spec.clone());
                    pending.insert(
                        name,
                        PendingTable {
                            spec,
                            catalog: path.clone(),
                        },
                    );
                }
            }
            let lazy = LazySchema::new(public, pending, engine.ctx.state_weak_ref());
            default.register_schema("public", Arc::new(lazy))?;
        }
        for db in databases {
            engine
                .attach_from(&db.name, &db.location, Some(&db.base_dir))
                .await
                .map_err(|e| {
                    Error::Catalog(crate::catalog::CatalogError::Database {
                        path: catalog_path.clone(),
                        name: db.name.clone(),
                        message: e.to_string(),
                    })
                })?;
        }
        Ok(engine)
    }
}

/// The scalar functions Strata's rewrites put into plans; every session that plans or decodes
/// a plan (clients, schedulers, executors) registers them.
pub(crate) fn plan_functions() -> Vec<Arc<datafusion::logical_expr::ScalarUDF>> {
    let mut all = crate::arithmetic::functions();
    all.extend(crate::subquery::functions());
    all.push(crate::inlists::same());
    all.push(crate::optimizer::text_in());
    all.push(crate::casts::named_cast());
    all
}

/// Parse a size such as `512M`, `2G`, `1.5g`, `64KB` or `1024` into bytes; `None` when it is
/// not one.
pub fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim().to_ascii_uppercase();
    let t = t.trim_end_matches('B');
    let (num, mult) = match t.chars().last() {
        Some('K') => (&t[..t.len() - 1], 1usize << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .filter(|n| *n > 0.0)
        .map(|n| (n * mult as f64) as usize)
}

/// A Strata query engine: register datasets, run SQL, get Arrow batches.
///
/// ```
/// # tokio_test_block_on(async {
/// let engine = strata::Engine::builder().threads(2).build().await?;
/// let batches = engine.sql("SELECT 1 + 1 AS two").await?.collect().await?;
/// assert_eq!(batches[0].num_rows(), 1);
/// # Ok::<(), strata::Error>(())
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Runtime::new().unwrap().block_on(f)
/// # }
/// ```
pub struct Engine {
    ctx: SessionContext,
    runner: Arc<dyn Runner>,
    prepared: Arc<PreparedTables>,
    datasets: Arc<Mutex<HashMap<String, DatasetSpec>>>,
    next_key: Arc<AtomicU64>,
    catalog_path: Option<PathBuf>,
    confinement: Option<Arc<Confinement>>,
    query_memory_limit: Option<usize>,
    /// The settings the engine started with, which `RESET` returns to.
    start: Arc<datafusion::config::ConfigOptions>,
    /// The running and recent queries of this engine and its sessions.
    monitor: Arc<Monitor>,
    /// Who runs this engine's queries, as the monitor lists them (a server's signed-in user).
    user: Option<Arc<str>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("runner", &self.runner.name())
            .field("tables", &self.table_names())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Start configuring an engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// An engine with default settings and no catalog.
    pub async fn new() -> Result<Engine> {
        Engine::builder().build().await
    }

    /// The underlying DataFusion session, for what Strata does not wrap.
    pub fn session(&self) -> &SessionContext {
        &self.ctx
    }

    /// A session of its own over this engine's datasets, runner and memory: the settings one
    /// changes (`SET`, `RESET`) are not seen by the other, while a table registered in either
    /// is seen by both. Servers give each client one.
    pub fn new_session(&self) -> Engine {
        let state = SessionStateBuilder::new_from_existing(self.ctx.state())
            .with_session_id(uuid::Uuid::new_v4().to_string())
            .build();
        self.sharing(SessionContext::new_with_state(state), self.user.clone())
    }

    /// This engine, in the same session, with its queries listed as run by `user`.
    pub fn for_user(&self, user: &str) -> Engine {
        self.sharing(self.ctx.clone(), Some(user.into()))
    }

    /// An engine over `ctx` that shares everything else with this one.
    fn sharing(&self, ctx: SessionContext, user: Option<Arc<str>>) -> Engine {
        Engine {
            ctx,
            runner: self.runner.clone(),
            prepared: self.prepared.clone(),
            datasets: self.datasets.clone(),
            next_key: self.next_key.clone(),
            catalog_path: self.catalog_path.clone(),
            confinement: self.confinement.clone(),
            query_memory_limit: self.query_memory_limit,
            start: self.start.clone(),
            monitor: self.monitor.clone(),
            user,
        }
    }

    /// The settings of this engine's session (`SET`), by full name; `None` for a setting
    /// that has no value.
    pub fn settings(&self) -> Vec<(String, Option<String>)> {
        self.ctx
            .copied_config()
            .options()
            .entries()
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect()
    }

    /// The setting `text`, one statement, changes in the session (`SET`, `RESET`), if any
    /// (see [`sql::changed_setting`]).
    pub fn changed_setting(&self, text: &str) -> Result<Option<String>> {
        let (stmt, _) = self.parse_one(text)?;
        Ok(sql::changed_setting(&stmt))
    }

    /// The cluster's recent jobs, newest first (see [`crate::cluster::recent_jobs`]).
    pub async fn cluster_jobs(&self) -> Result<QueryResult> {
        let scheduler = self.runner.scheduler().ok_or_else(|| {
            Error::Execution("not running on a cluster; start strata with --cluster URL".into())
        })?;
        let batch = crate::cluster::recent_jobs(scheduler).await?;
        Ok(QueryResult::from_batches(batch.schema(), vec![batch]))
    }

    /// The runner queries execute through.
    pub fn runner(&self) -> &Arc<dyn Runner> {
        &self.runner
    }

    /// The running and recent queries of this engine and of the sessions made from it.
    pub fn monitor(&self) -> &Arc<Monitor> {
        &self.monitor
    }

    /// The catalog file this engine was built with, if any.
    pub fn catalog_path(&self) -> Option<&std::path::Path> {
        self.catalog_path.as_deref()
    }

    /// Register a dataset under `name`: lists its files, infers format, partitions and schema.
    /// Replaces a table of the same name.
    pub async fn register(&self, name: &str, spec: DatasetSpec) -> Result<Dataset> {
        let state = self.ctx.state();
        let ds = Dataset::resolve(spec.clone(), &state).await?;
        self.ctx.deregister_table(name)?;
        self.ctx.register_table(name, ds.provider())?;
        self.datasets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), spec);
        Ok(ds)
    }

    /// Attach the database at `url` (`postgres://…`, `mysql://…`, `sqlite:file.db`) as catalog
    /// `name`, as `ATTACH 'url' AS name` does: each of its tables is `name.schema.table`, and
    /// those of its default schema also `name.table`. Its tables are listed now and opened
    /// when first used. Attaching a name again replaces the database it stands for.
    pub async fn attach(&self, name: &str, url: &str) -> Result<()> {
        self.attach_from(name, url, None).await
    }

    /// [`Engine::attach`], with relative SQLite paths resolved against `base_dir`.
    async fn attach_from(
        &self,
        name: &str,
        url: &str,
        base_dir: Option<&std::path::Path>,
    ) -> Result<()> {
        let taken = ["datafusion", "public", "strata", "information_schema"];
        if taken.iter().any(|t| t.eq_ignore_ascii_case(name)) || name.is_empty() {
            return Err(Error::plan(format!(
                "'{name}' cannot name an attached database: {} are taken",
                taken.join(", ")
            )));
        }
        let state = self.ctx.state();
        let (catalog, default) = crate::databases::attach(url, base_dir, &state).await?;
        self.ctx.register_catalog(name, catalog);
        if let Some(own) = self.ctx.catalog("datafusion") {
            own.register_schema(name, default)?;
        }
        Ok(())
    }

    /// Register a dataset at `location` with options inferred.
    pub async fn register_location(&self, name: &str, location: &str) -> Result<Dataset> {
        self.register(name, DatasetSpec::new(location)).await
    }

    /// The schema of table `name` if it is known without reading anything: a catalog table
    /// that no statement has used yet is not resolved here (see [`Engine::table_names`]).
    pub async fn loaded_table_schema(&self, name: &str) -> Option<SchemaRef> {
        let schema = self.ctx.catalog("datafusion")?.schema("public")?;
        if schema
            .downcast_ref::<LazySchema>()
            .is_some_and(|l| l.is_pending(name))
        {
            return None;
        }
        schema.table(name).await.ok().flatten().map(|t| t.schema())
    }

    /// The names of the tables in the default schema, sorted.
    pub fn table_names(&self) -> Vec<String> {
        let mut names = self
            .ctx
            .catalog("datafusion")
            .and_then(|c| c.schema("public"))
            .map(|s| s.table_names())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Every table of the default schema with what it holds: for datasets, their format,
    /// locations, files, bytes, partitions and schema, listed from their stores now (so this
    /// reads footers and lists folders); for tables made by SQL and views, their columns.
    /// Sorted by name; a dataset that cannot be read carries its error.
    pub async fn datasets(&self) -> Vec<crate::dataset::DatasetSummary> {
        use crate::dataset::DatasetSummary;
        use futures::StreamExt;
        let state = self.ctx.state();
        let schema = self
            .ctx
            .catalog("datafusion")
            .and_then(|c| c.schema("public"));
        // A catalog table no statement has used yet is resolved here, as a query would.
        futures::stream::iter(self.table_names())
            .map(|name| {
                let (state, schema) = (&state, schema.clone());
                async move {
                    let table = match schema?.table(&name).await {
                        Ok(table) => table?,
                        Err(e) => return Some(DatasetSummary::unreadable(&name, e.to_string())),
                    };
                    if let Some(dataset) = table.downcast_ref::<DatasetTable>() {
                        return Some(DatasetSummary::of_dataset(&name, dataset, state).await);
                    }
                    let kind = match table.table_type() {
                        datafusion::datasource::TableType::View => "view",
                        _ => "table",
                    };
                    Some(DatasetSummary::of_table(&name, kind, &table.schema()))
                }
            })
            .buffered(4)
            .filter_map(futures::future::ready)
            .collect()
            .await
    }

    /// Split SQL text into statements (on `;` outside quotes and comments).
    pub fn split_statements(text: &str) -> Result<Vec<String>> {
        sql::split_statements(text)
    }

    /// Run one SQL statement. Queries start executing and stream their results; statements
    /// such as `CREATE`, `COPY` or `INSERT` run to completion before the result is returned
    /// (their result is a row count, or nothing).
    pub async fn sql(&self, text: &str) -> Result<QueryResult> {
        self.run_sql(text, true, None).await
    }

    /// Like [`Engine::sql`], with values for the statement's parameters: `$1`, `$2`, … or
    /// `?` (numbered in the order they appear). A value is converted to the type its place
    /// in the statement asks for, as a literal would be.
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() -> strata::Result<()> {
    /// # let engine = strata::Engine::builder().catalog("strata.toml").build().await?;
    /// use strata::datafusion::scalar::ScalarValue;
    /// let params = vec![ScalarValue::from("NY"), ScalarValue::from(100i64)];
    /// let mut result = engine
    ///     .sql_with_params("SELECT * FROM violations WHERE registration_state = ? LIMIT ?", params)
    ///     .await?;
    /// let rows: usize = result.collect().await?.iter().map(|b| b.num_rows()).sum();
    /// assert!(rows > 0 && rows <= 100);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn sql_with_params(
        &self,
        text: &str,
        params: Vec<ScalarValue>,
    ) -> Result<QueryResult> {
        self.run_sql(text, true, Some(&params)).await
    }

    /// Like [`Engine::sql`], but statements such as `COPY` and `INSERT` do their work as the
    /// result is read rather than before it is returned, so a caller can watch their progress
    /// ([`QueryResult::progress`]) and cancel them. Read the result to the end to complete them.
    pub async fn execute(&self, text: &str) -> Result<QueryResult> {
        self.run_sql(text, false, None).await
    }

    /// One statement of `text`, parsed and rewritten as Strata plans it, with the table
    /// function calls taken out of it.
    #[allow(clippy::type_complexity)]
    fn parse_one(
        &self,
        text: &str,
    ) -> Result<(
        datafusion::sql::parser::Statement,
        Vec<(String, sql::TableFunctionCall)>,
    )> {
        let text = sql::rewrite_copy_options(&sql::rewrite_describe_path(text))?;
        let text = crate::types::struct_types_in_angle_brackets(&text);
        let dialect = self
            .ctx
            .state()
            .config()
            .options()
            .sql_parser
            .dialect
            .to_string();
        let mut statements = match sql::parse_statements(&text, &dialect) {
            // A statement that ends too early points at its end.
            Err(Error::Syntax {
                message,
                position: None,
            }) if message.ends_with("EOF") => {
                return Err(Error::Syntax {
                    message,
                    position: Some(sql::end_position(&text)),
                });
            }
            other => other?,
        };
        let mut stmt = match statements.len() {
            1 => statements.remove(0),
            0 => return Err(Error::plan("empty statement")),
            n => {
                return Err(Error::plan(format!(
                    "expected one statement, found {n}; run them one at a time (see Engine::split_statements)"
                )));
            }
        };

        let calls = sql::extract_table_functions(&mut stmt, || {
            format!("__strata_{}", self.next_key.fetch_add(1, Ordering::Relaxed))
        })?;
        sql::expand_setting_alias(&mut stmt);
        if let Some(set) = crate::optimizer::reset_as_set(&stmt, &self.start) {
            return self.parse_one(&set);
        }
        sql::exponent_literals_as_double(&mut stmt);
        sql::distinct_from_precedence(&mut stmt);
        sql::expand_row_in_subqueries(&mut stmt)?;
        sql::number_placeholders(&mut stmt);
        if let Some(confinement) = &self.confinement {
            let names = self.table_names();
            let is_dataset = |n: &str| names.iter().any(|t| t.eq_ignore_ascii_case(n));
            confinement.check_statement(&stmt, &calls, &is_dataset)?;
        }
        Ok((stmt, calls))
    }

    /// Whether `text`, one statement, only reads (a query, `EXPLAIN` of one, `SHOW`,
    /// `DESCRIBE`): a server that is read-only runs nothing else.
    pub fn only_reads(&self, text: &str) -> Result<bool> {
        if let Some(explain) = picture_explain(text)? {
            return self.only_reads(&explain.query);
        }
        let (stmt, _) = self.parse_one(text)?;
        Ok(sql::only_reads(&stmt))
    }

    /// What one statement returns (its columns) and the types of its parameters (`$1` first;
    /// `None` where the statement does not say), planned but not run.
    pub async fn describe(&self, text: &str) -> Result<Description> {
        if picture_explain(text)?.is_some() {
            return Ok(Description {
                schema: picture_schema(),
                parameters: Vec::new(),
            });
        }
        let (stmt, calls) = self.parse_one(text)?;
        let keys: Vec<String> = calls.iter().map(|(k, _)| k.clone()).collect();
        let planned = async {
            let state = self.ctx.state();
            self.resolve_calls(&state, &calls).await?;
            let plan = state.statement_to_plan(stmt).await?;
            Ok::<_, Error>(crate::types::with_sql_type_names(plan)?)
        }
        .await;
        self.prepared.remove(&keys);
        let plan = planned.map_err(|e| self.explain_error(e))?;
        let mut parameters: Vec<(usize, Option<DataType>)> = plan
            .get_parameter_fields()?
            .into_iter()
            .filter_map(|(id, field)| {
                let n = id.strip_prefix('$')?.parse::<usize>().ok()?;
                Some((n, field.map(|f| f.data_type().clone())))
            })
            .collect();
        parameters.sort_by_key(|(n, _)| *n);
        Ok(Description {
            schema: Arc::new(plan.schema().as_arrow().clone()),
            parameters: parameters.into_iter().map(|(_, t)| t).collect(),
        })
    }

    async fn run_sql(
        &self,
        text: &str,
        complete_commands: bool,
        params: Option<&[ScalarValue]>,
    ) -> Result<QueryResult> {
        let tracker =
            self.monitor
                .begin(self.ctx.session_id().as_str(), self.user.as_deref(), text);
        match self.plan_sql(text, complete_commands, params).await {
            Ok(mut result) => {
                tracker.running(
                    result.progress(),
                    result.cancel_handle(),
                    result.pool.clone(),
                );
                result.tracker = Some(tracker);
                Ok(result)
            }
            Err(e) => {
                tracker.end(QueryState::Failed, Some(e.to_string()));
                Err(e)
            }
        }
    }

    /// Plan `text` and start it, trying again with the rewrites that let DataFusion plan
    /// what it refused.
    async fn plan_sql(
        &self,
        text: &str,
        complete_commands: bool,
        params: Option<&[ScalarValue]>,
    ) -> Result<QueryResult> {
        if let Some(explain) = picture_explain(text)? {
            return self.draw_plan(explain).await;
        }
        let (stmt, calls) = self.parse_one(text)?;
        if let Some((name, url)) = sql::attach_statement(&stmt)? {
            if self.confinement.is_some() {
                return Err(Error::NotAllowed(
                    "ATTACH here; declare databases in the catalog file ([databases.NAME])".into(),
                ));
            }
            self.attach(&name, &url).await?;
            let schema = Arc::new(datafusion::arrow::datatypes::Schema::empty());
            return Ok(QueryResult::from_batches(schema, Vec::new()));
        }
        let keys: Vec<String> = calls.iter().map(|(k, _)| k.clone()).collect();
        let mut renamed = stmt.clone();
        let mut result = self
            .run_statement(stmt, calls.clone(), complete_commands, params)
            .await;
        // An aggregate of the outer query's columns inside a subquery is the outer query's.
        if let Err(Error::Plan { message, .. }) = &result
            && message.contains("Aggregate functions are not allowed")
        {
            let mut hoisted = renamed.clone();
            if sql::hoist_outer_aggregates(&mut hoisted) {
                result = self
                    .run_statement(hoisted, calls.clone(), complete_commands, params)
                    .await;
            }
        }
        // A SELECT list that repeats a name runs with names of its own, shown as written.
        let mut names = None;
        if let Err(Error::Plan { message, .. }) = &result
            && (message.contains("unique expression names")
                || message.contains("would be ambiguous"))
        {
            names = sql::alias_duplicate_names(&mut renamed);
            if let Some(names) = &names {
                result = self
                    .run_statement(renamed.clone(), calls.clone(), complete_commands, params)
                    .await
                    .map(|r| r.with_column_names(names));
            }
        }
        // Two casts named alike inside aggregates' arguments (`sum(d)`, `sum(CAST(d AS
        // BIGINT))`) get names of their own; the items show their SQL text.
        if let Err(Error::Plan { message, .. }) = &result
            && message.contains("duplicate unqualified field name")
        {
            if names.is_none() {
                names = sql::alias_duplicate_names(&mut renamed);
            }
            if crate::casts::name_casts_in_arguments(&mut renamed) {
                result = self
                    .run_statement(renamed, calls, complete_commands, params)
                    .await
                    .map(|r| match &names {
                        Some(names) => r.with_column_names(names),
                        None => r,
                    });
            }
        }
        self.prepared.remove(&keys);
        result.map_err(|e| self.explain_error(e))
    }

    /// `EXPLAIN ... FORMAT svg|dot`: the query's physical plan drawn, one row of one column
    /// `plan`. With ANALYZE the query runs to its end first, and each operator shows what it
    /// did.
    async fn draw_plan(&self, explain: sql::PictureExplain) -> Result<QueryResult> {
        // Only a query: EXPLAIN ANALYZE of any other statement would do what it says.
        let (stmt, _) = self.parse_one(&explain.query)?;
        if !matches!(
            stmt,
            datafusion::sql::parser::Statement::Statement(ref s)
                if matches!(**s, datafusion::sql::sqlparser::ast::Statement::Query(_))
        ) {
            return Err(Error::plan(
                "only queries have plans to draw; this statement is not one",
            ));
        }
        let plan = if explain.analyze {
            let mut result = Box::pin(self.sql(&explain.query)).await?;
            result.collect().await?;
            result.physical_plan().cloned()
        } else {
            Some(self.physical_plan(&explain.query).await?)
        };
        let plan = plan.ok_or_else(|| Error::plan("the query ran without a plan to draw"))?;
        let node = PlanNode::of(plan.as_ref());
        let text = match explain.picture {
            sql::PlanPicture::Svg => crate::plan_graph::svg(&node),
            sql::PlanPicture::Dot => crate::plan_graph::dot(&node),
        };
        let schema = picture_schema();
        let column = Arc::new(datafusion::arrow::array::StringArray::from(vec![text]));
        let batch = RecordBatch::try_new(schema.clone(), vec![column])
            .map_err(|e| Error::Execution(e.to_string()))?;
        Ok(QueryResult::from_batches(schema, vec![batch]))
    }

    /// The physical plan of one query, as it would run here, without running it.
    async fn physical_plan(&self, text: &str) -> Result<Arc<dyn ExecutionPlan>> {
        let (stmt, calls) = self.parse_one(text)?;
        let keys: Vec<String> = calls.iter().map(|(k, _)| k.clone()).collect();
        let planned = async {
            let state = self.ctx.state();
            self.resolve_calls(&state, &calls).await?;
            let plan = state.statement_to_plan(stmt).await?;
            let plan = crate::types::with_sql_type_names(plan)?;
            Ok::<_, Error>(state.create_physical_plan(&plan).await?)
        }
        .await;
        self.prepared.remove(&keys);
        planned.map_err(|e| self.explain_error(e))
    }

    /// Plan and run one statement; a panic while planning (in DataFusion's rules or a reader)
    /// fails this statement only.
    async fn run_statement(
        &self,
        stmt: datafusion::sql::parser::Statement,
        calls: Vec<(String, sql::TableFunctionCall)>,
        complete_commands: bool,
        params: Option<&[ScalarValue]>,
    ) -> Result<QueryResult> {
        let mut isolated = stmt.clone();
        let fallback = sql::isolate_quantified_subqueries(&mut isolated).then_some(stmt);
        std::panic::AssertUnwindSafe(self.plan_and_run(
            isolated,
            fallback,
            calls,
            complete_commands,
            params,
        ))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(Error::Execution(crate::error::panic_message(
                panic.as_ref(),
            )))
        })
    }

    /// Resolve a statement's table function calls into the tables its keys stand for.
    async fn resolve_calls(
        &self,
        state: &datafusion::execution::session_state::SessionState,
        calls: &[(String, sql::TableFunctionCall)],
    ) -> Result<()> {
        let lookup = |name: &str| {
            self.datasets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .cloned()
        };
        for (key, call) in calls {
            let table = resolve_call(call, state, &lookup).await?;
            self.prepared.insert(key.clone(), table);
        }
        Ok(())
    }

    async fn plan_and_run(
        &self,
        stmt: datafusion::sql::parser::Statement,
        fallback: Option<datafusion::sql::parser::Statement>,
        calls: Vec<(String, sql::TableFunctionCall)>,
        complete_commands: bool,
        params: Option<&[ScalarValue]>,
    ) -> Result<QueryResult> {
        let state = self.ctx.state();
        self.resolve_calls(&state, &calls).await?;
        let plan = match fallback {
            None => state.statement_to_plan(stmt).await?,
            // The rewritten statement must plan and optimize, or the original is used.
            Some(original) => match state.statement_to_plan(stmt).await {
                Ok(plan) if state.optimize(&plan).is_ok() => plan,
                _ => state.statement_to_plan(original).await?,
            },
        };
        let plan = crate::types::with_sql_type_names(bind_parameters(plan, params)?)?;
        let is_query = !matches!(
            plan,
            LogicalPlan::Ddl(_)
                | LogicalPlan::Statement(_)
                | LogicalPlan::Copy(_)
                | LogicalPlan::Dml(_)
        );
        // COPY to a local path writes under a temporary name until it completes.
        let (plan, staged) = crate::write::stage(plan);
        let df = self.ctx.execute_logical_plan(plan).await?;
        let (state, plan) = df.into_parts();
        // The query's own pool: it holds the query to its limit, and tells its peak.
        let (runtime, pool) =
            crate::query_memory::QueryPool::runtime(state.runtime_env(), self.query_memory_limit)?;
        // The session keeps its id (a cluster's scheduler knows the session by it).
        let session_id = state.session_id().to_string();
        let state = SessionStateBuilder::new_from_existing(state)
            .with_session_id(session_id)
            .with_runtime_env(runtime)
            .build();
        let optimized = state.optimize(&plan)?;
        let execution = self.runner.execute(&state, optimized).await?;
        let mut result = QueryResult::new(execution, state.task_ctx());
        result.staged = staged;
        result.pool = Some(pool);
        if !is_query && complete_commands {
            // Run commands to completion now, so errors surface here and effects are visible.
            let batches = result.collect().await?;
            result = QueryResult::from_batches(result.schema.clone(), batches);
        }
        Ok(result)
    }

    /// The tables beside the one a "table 'x' not found" message names: those of its schema
    /// when it is qualified (in an attached database: of the schema, or of the whole
    /// database for `db.table`), else those of the default schema.
    fn tables_beside(&self, message: &str) -> Vec<String> {
        let full = not_found_name(message).unwrap_or("");
        let listed = |catalog: &str, schema: Option<&str>| -> Option<Vec<String>> {
            let catalog = self.ctx.catalog(catalog)?;
            let schemas = match schema {
                Some(s) => vec![s.to_string()],
                None => catalog.schema_names(),
            };
            let mut names: Vec<String> = schemas
                .iter()
                .filter(|s| s.as_str() != "information_schema")
                .filter_map(|s| catalog.schema(s))
                .flat_map(|s| s.table_names())
                .collect();
            names.sort();
            names.dedup();
            Some(names)
        };
        use datafusion::common::TableReference;
        let found = match TableReference::parse_str(full) {
            // `db.table` of an attached database `db`, as DataFusion qualifies it.
            TableReference::Full {
                catalog, schema, ..
            } if &*catalog == "datafusion" && self.ctx.catalog(&schema).is_some() => {
                listed(&schema, None)
            }
            TableReference::Full {
                catalog, schema, ..
            } => listed(&catalog, Some(&schema)),
            TableReference::Partial { schema, .. } if &*schema != "public" => {
                listed(&schema, None).or_else(|| listed("datafusion", Some(&schema)))
            }
            _ => None,
        };
        found.unwrap_or_else(|| self.table_names())
    }

    /// Add suggestions to "not found" errors.
    fn explain_error(&self, err: Error) -> Error {
        match err {
            Error::Plan { message, position } => {
                let mut message = message;
                if let Some(name) = not_found_table(&message) {
                    let names = self.tables_beside(&message);
                    if let Some(c) = crate::error::closest(&name, names.iter().map(String::as_str))
                    {
                        message = format!("table '{name}' not found; did you mean '{c}'?");
                    } else if names.is_empty() {
                        message = format!("table '{name}' not found; no tables are registered");
                    } else {
                        message =
                            format!("table '{name}' not found; tables are: {}", names.join(", "));
                    }
                } else if let Some(fixed) = column_suggestion(&message) {
                    message = fixed;
                }
                Error::Plan { message, position }
            }
            other => other,
        }
    }
}

/// The picture `text` asks for, if it is `EXPLAIN ... FORMAT svg|dot`; one that ends before
/// its query is a syntax error at its end.
fn picture_explain(text: &str) -> Result<Option<sql::PictureExplain>> {
    match sql::picture_explain(text) {
        Some(explain) if explain.query.is_empty() => Err(Error::Syntax {
            message: "Expected: a query to draw, found: EOF".into(),
            position: Some(sql::end_position(text)),
        }),
        picture => Ok(picture),
    }
}

/// The result of `EXPLAIN ... FORMAT svg|dot`: the drawing, as one text value.
fn picture_schema() -> SchemaRef {
    Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
        datafusion::arrow::datatypes::Field::new("plan", DataType::Utf8, false),
    ]))
}

/// What a statement returns and takes, from [`Engine::describe`].
#[derive(Debug, Clone)]
pub struct Description {
    /// The columns of its result.
    pub schema: SchemaRef,
    /// The type of each parameter, `$1` first; `None` where the statement does not say.
    pub parameters: Vec<Option<DataType>>,
}

/// `plan` with `params` in place of its parameters; a parameter without a value, or a value
/// without a parameter, is an error. Without `params` (plain SQL text), and for `PREPARE`
/// without values (`EXECUTE` binds its parameters), the plan is left as it is.
fn bind_parameters(plan: LogicalPlan, params: Option<&[ScalarValue]>) -> Result<LogicalPlan> {
    let Some(params) = params else {
        return Ok(plan);
    };
    if matches!(
        plan,
        LogicalPlan::Statement(datafusion::logical_expr::Statement::Prepare(_))
    ) {
        if params.is_empty() {
            return Ok(plan);
        }
        return Err(Error::plan(
            "PREPARE takes no parameter values; bind them with EXECUTE",
        ));
    }
    let wanted = plan.get_parameter_fields()?;
    if wanted.is_empty() && params.is_empty() {
        return Ok(plan);
    }
    let highest = wanted
        .keys()
        .filter_map(|id| id.strip_prefix('$')?.parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    if highest != params.len() || wanted.len() != highest {
        return Err(Error::plan(format!(
            "the statement has {} parameter{} and {} {} given",
            wanted.len(),
            if wanted.len() == 1 { "" } else { "s" },
            params.len(),
            if params.len() == 1 {
                "value was"
            } else {
                "values were"
            },
        )));
    }
    Ok(plan.with_param_values(params.to_vec())?)
}

fn not_found_table(message: &str) -> Option<String> {
    let name = not_found_name(message)?;
    Some(name.rsplit('.').next().unwrap_or(name).to_string())
}

/// The table, qualified as written, of DataFusion's "table 'x' not found".
fn not_found_name(message: &str) -> Option<&str> {
    message.strip_prefix("table '")?.strip_suffix("' not found")
}

/// Rewrite DataFusion's "No field named x. [Did you mean ...?] Valid fields are a, b." into
/// one line with the closest field suggested.
fn column_suggestion(message: &str) -> Option<String> {
    let start = message.find("No field named ")?;
    let rest = &message[start + "No field named ".len()..];
    let name_end = rest.find(['\n', ' ']).unwrap_or(rest.len());
    let name = rest[..name_end].trim_end_matches('.');
    let name = name.trim_matches('"').trim_matches('\'');
    let bare = name.rsplit('.').next().unwrap_or(name).trim_matches('"');
    let valid = rest
        .split_once("Valid fields are ")
        .map(|(_, v)| v)
        .unwrap_or("");
    let valid = valid.split(" (at ").next().unwrap_or(valid);
    let bare_fields: Vec<String> = valid
        .trim()
        .trim_end_matches('.')
        .split(", ")
        .filter(|f| !f.is_empty())
        .map(|f| {
            f.rsplit('.')
                .next()
                .unwrap_or(f)
                .trim_matches('"')
                .to_string()
        })
        .collect();
    let hint = match crate::error::closest(bare, bare_fields.iter().map(String::as_str)) {
        Some(c) => format!("; did you mean '{c}'?"),
        None if bare_fields.is_empty() => String::new(),
        None => format!("; columns are: {}", bare_fields.join(", ")),
    };
    Some(format!("column '{bare}' not found{hint}"))
}

/// Statistics of the scans in a query, read from the plan's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Files the scans were planned to read (after partition pruning).
    pub files: usize,
    /// Total size of those files, in bytes.
    pub file_bytes: u64,
    /// Bytes actually read from Parquet files (after row-group and page pruning).
    pub bytes_scanned: u64,
    /// Rows the scans produced.
    pub rows: u64,
    /// Pieces the scans read: a large file may be split into byte ranges read in parallel, so
    /// this can exceed `files`.
    pub file_ranges: usize,
    /// File ranges read to the end so far (out of `file_ranges`).
    pub files_done: usize,
    /// Partitions (parallel streams) of the scans.
    pub partitions: usize,
    /// Scan partitions finished so far.
    pub partitions_done: usize,
    /// Rows the operators above the scans (joins, aggregates, sorts, ...) have produced so
    /// far, added up over the operators: it keeps moving after the scans are done.
    pub operator_rows: u64,
    /// Bytes the operators wrote to spill files so far (sorts, aggregations and joins that
    /// ran out of memory), added up over the operators.
    pub spilled_bytes: u64,
}

impl ScanStats {
    /// The share of the work done, when it can be told: file ranges read, or scan
    /// partitions finished, whichever is further.
    pub fn fraction(&self) -> Option<f64> {
        let files =
            (self.file_ranges > 0).then(|| self.files_done as f64 / self.file_ranges as f64);
        let parts =
            (self.partitions > 0).then(|| self.partitions_done as f64 / self.partitions as f64);
        match (files, parts) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
        .map(|f| f.clamp(0.0, 1.0))
    }
}

/// Reads a running query's [`ScanStats`]; see [`QueryResult::progress`].
#[derive(Clone)]
pub struct Progress {
    plan: Option<Arc<dyn ExecutionPlan>>,
    job: Option<Arc<ClusterJob>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").finish_non_exhaustive()
    }
}

impl Progress {
    /// The plan whose metrics these figures are read from, for a local query.
    pub fn plan(&self) -> Option<&Arc<dyn ExecutionPlan>> {
        self.plan.as_ref()
    }

    /// Whether the query runs as a job on a cluster, whose progress [`Progress::job_stats`]
    /// reads (its scans run on the executors, so [`Progress::scan_stats`] sees none).
    pub fn is_cluster_job(&self) -> bool {
        self.job.is_some()
    }

    /// The handle on its cluster job alone (none for a local query): what is worth keeping
    /// once the query ended, as the scheduler still knows the job.
    pub(crate) fn job_only(&self) -> Option<Progress> {
        self.job.as_ref().map(|job| Progress {
            plan: None,
            job: Some(job.clone()),
        })
    }

    /// The cluster job's stages and tasks at this moment, from the scheduler; `None` for a
    /// local query, or before the scheduler knows the job.
    pub async fn job_stats(&self) -> Result<Option<JobStats>> {
        let Some(job) = self.job.clone() else {
            return Ok(None);
        };
        tokio::task::spawn_blocking(move || job.stats())
            .await
            .map_err(|e| Error::Execution(e.to_string()))?
    }

    /// The scans' statistics at this moment.
    pub fn scan_stats(&self) -> ScanStats {
        let mut stats = ScanStats::default();
        let Some(plan) = &self.plan else {
            return stats;
        };
        let mut seen = std::collections::HashSet::new();
        for ds in scans(plan.as_ref()) {
            for f in file_scan(ds)
                .iter()
                .flat_map(|c| c.file_groups.iter())
                .flat_map(|g| g.iter())
            {
                stats.file_ranges += 1;
                if seen.insert(f.object_meta.location.clone()) {
                    stats.files += 1;
                    stats.file_bytes += f.object_meta.size;
                }
            }
            stats.partitions += ds.properties().partitioning.partition_count();
            if let Some(m) = ds.metrics() {
                if let Some(v) = m.sum_by_name("bytes_scanned") {
                    stats.bytes_scanned += v.as_usize() as u64;
                }
                stats.rows += m.output_rows().unwrap_or(0) as u64;
                // A partition has ended when every end time it holds is set: the scan's
                // own, and those of the file readers it ran (set as each file ends).
                let mut ends: HashMap<Option<usize>, bool> = HashMap::new();
                for metric in m.iter() {
                    if let MetricValue::EndTimestamp(t) = metric.value() {
                        *ends.entry(metric.partition()).or_insert(true) &= t.value().is_some();
                    }
                }
                let ended: std::collections::HashSet<Option<usize>> = ends
                    .into_iter()
                    .filter(|(_, e)| *e)
                    .map(|(p, _)| p)
                    .collect();
                stats.partitions_done += ended.len();
                // A partition has read to the end every file it opened but the one it reads
                // now. (`files_processed` cannot tell: DataFusion counts a file there both
                // when its reader ends and when its planner has nothing left.)
                for metric in m.iter() {
                    if let MetricValue::Count { name, count } = metric.value()
                        && name == "files_opened"
                    {
                        let reading = !ended.contains(&metric.partition());
                        stats.files_done += count.value().saturating_sub(usize::from(reading));
                    }
                }
            }
        }
        (stats.operator_rows, stats.spilled_bytes) = operator_totals(plan.as_ref());
        stats
    }
}

/// Output rows of every operator of `plan` but its scans, and bytes spilled by all of them,
/// added up.
fn operator_totals(plan: &dyn ExecutionPlan) -> (u64, u64) {
    let (mut rows, mut spilled) = (0, 0);
    let mut stack = vec![plan];
    while let Some(node) = stack.pop() {
        if let Some(m) = node.metrics() {
            if node.downcast_ref::<DataSourceExec>().is_none() {
                rows += m.output_rows().unwrap_or(0) as u64;
            }
            spilled += m.spilled_bytes().unwrap_or(0) as u64;
        }
        stack.extend(node.children().into_iter().map(|c| c.as_ref()));
    }
    (rows, spilled)
}

/// A running (or finished) query. Stream it with [`QueryResult::next_batch`] or
/// [`QueryResult::into_stream`], or [`QueryResult::collect`] it; cancel it from anywhere with
/// the handle from [`QueryResult::cancel_handle`].
pub struct QueryResult {
    schema: SchemaRef,
    plan: Option<Arc<dyn ExecutionPlan>>,
    job: Option<Arc<ClusterJob>>,
    task_ctx: Option<Arc<TaskContext>>,
    stream: CancellableStream,
    /// Batches are given `schema` (its names differ from the plan's).
    relabel: bool,
    /// Output to publish when the stream ends (see [`crate::write`]).
    staged: Option<crate::write::Staged>,
    /// The query's memory pool.
    pool: Option<Arc<QueryPool>>,
    /// Its entry in the engine's monitor, ended with the stream.
    tracker: Option<Tracker>,
}

impl std::fmt::Debug for QueryResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryResult")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl QueryResult {
    fn new(execution: Execution, task_ctx: Arc<TaskContext>) -> Self {
        QueryResult {
            schema: execution.stream.schema(),
            plan: Some(execution.plan),
            job: execution.job,
            task_ctx: Some(task_ctx),
            stream: CancellableStream::new(execution.stream),
            relabel: false,
            staged: None,
            pool: None,
            tracker: None,
        }
    }

    fn from_batches(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        let s = schema.clone();
        let inner = futures::stream::iter(batches.into_iter().map(Ok));
        let stream: SendableRecordBatchStream =
            Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(s, inner));
        QueryResult {
            schema,
            plan: None,
            job: None,
            task_ctx: None,
            stream: CancellableStream::new(stream),
            relabel: false,
            staged: None,
            pool: None,
            tracker: None,
        }
    }

    /// The result with its columns shown under other names (`(internal, shown)` pairs); the
    /// names may repeat, as a SELECT list's may.
    fn with_column_names(mut self, names: &[(String, String)]) -> Self {
        let fields: Vec<_> = self
            .schema
            .fields()
            .iter()
            .map(
                |f| match names.iter().find(|(internal, _)| internal == f.name()) {
                    Some((_, shown)) => Arc::new(f.as_ref().clone().with_name(shown)),
                    // A repeated name of a derived table, shown through `*`.
                    None => match f.name().split_once(sql::DUPLICATE_MARK) {
                        Some((shown, _)) => Arc::new(f.as_ref().clone().with_name(shown)),
                        None => f.clone(),
                    },
                },
            )
            .collect();
        self.schema = Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(
            fields,
            self.schema.metadata().clone(),
        ));
        self.relabel = true;
        self
    }

    /// The result's schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The physical plan that produced (or is producing) the result, if it was a query.
    pub fn physical_plan(&self) -> Option<&Arc<dyn ExecutionPlan>> {
        self.plan.as_ref()
    }

    /// A handle that cancels this query from another task or thread.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.stream.handle.clone()
    }

    /// The next batch, or `None` at the end. A failure to decode a file names the file.
    pub async fn next_batch(&mut self) -> Option<Result<RecordBatch>> {
        let next = self.next_relabelled().await;
        if let Some(tracker) = &self.tracker {
            match &next {
                Some(Ok(batch)) => tracker.rows(batch.num_rows()),
                Some(Err(Error::Cancelled)) => {
                    tracker.end(QueryState::Cancelled, Some(Error::Cancelled.to_string()))
                }
                Some(Err(e)) => tracker.end(QueryState::Failed, Some(e.to_string())),
                None => tracker.end(QueryState::Finished, None),
            }
        }
        next
    }

    /// The query's number in the engine's monitor ([`Engine::monitor`]), if it is listed.
    pub fn query_id(&self) -> Option<u64> {
        self.tracker.as_ref().map(Tracker::id)
    }

    async fn next_relabelled(&mut self) -> Option<Result<RecordBatch>> {
        let next = self.stream.next().await;
        match (&next, self.staged.as_mut()) {
            // The output is complete: it appears under its name now.
            (None, Some(staged)) => {
                let published = staged.publish();
                self.staged = None;
                if let Err(e) = published {
                    return Some(Err(e));
                }
            }
            (Some(Err(_)), Some(staged)) => {
                staged.discard();
                if let Some(Err(e)) = next {
                    let explained = staged.explain(e);
                    self.staged = None;
                    return Some(Err(explained));
                }
            }
            _ => {}
        }
        match next {
            Some(Err(Error::Execution(message))) => {
                let (plan, ctx) = (self.plan.clone(), self.task_ctx.clone());
                Some(Err(diagnose(plan, ctx, message).await))
            }
            Some(Ok(batch)) if self.relabel => Some(
                RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())
                    .map_err(|e| Error::Execution(e.to_string())),
            ),
            other => other,
        }
    }

    /// Scan statistics so far (complete once the stream is exhausted).
    pub fn scan_stats(&self) -> ScanStats {
        self.progress().scan_stats()
    }

    /// A handle that reads this query's scan statistics while it runs, from any task.
    pub fn progress(&self) -> Progress {
        Progress {
            plan: self.plan.clone(),
            job: self.job.clone(),
        }
    }

    /// Read every batch.
    pub async fn collect(&mut self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        while let Some(b) = self.next_batch().await {
            out.push(b?);
        }
        Ok(out)
    }

    /// The batches as a stream.
    pub fn into_stream(self) -> impl Stream<Item = Result<RecordBatch>> + Send {
        futures::stream::unfold(
            self,
            |mut r| async move { r.next_batch().await.map(|b| (b, r)) },
        )
    }
}

/// Find which file a decoding error comes from by scanning the query's files one by one.
pub(crate) async fn diagnose(
    plan: Option<Arc<dyn ExecutionPlan>>,
    task_ctx: Option<Arc<TaskContext>>,
    message: String,
) -> Error {
    let (Some(plan), Some(task_ctx)) = (plan, task_ctx) else {
        return Error::Execution(message);
    };
    if !looks_like_decode_error(&message) {
        return Error::Execution(message);
    }
    match find_failing_file(&plan, &task_ctx).await {
        Some(file) => Error::Dataset(DatasetError::Read {
            location: file.clone(),
            file: Some(file),
            message,
        }),
        None => Error::Execution(message),
    }
}

fn looks_like_decode_error(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "csv",
        "json",
        "parquet",
        "parser error",
        "avro",
        "ipc",
        "arrow file",
        "io error",
        "eof",
        "corrupt",
        "invalid",
        "unequal lengths",
        "parsing value",
        "decompress",
        "internal error",
    ]
    .iter()
    .any(|k| m.contains(k))
}

/// Scan each file of the plan's file scans alone (at most 256) and return the first that fails.
async fn find_failing_file(
    plan: &Arc<dyn ExecutionPlan>,
    task_ctx: &Arc<TaskContext>,
) -> Option<String> {
    let configs: Vec<FileScanConfig> = scans(plan.as_ref())
        .into_iter()
        .filter_map(file_scan)
        .cloned()
        .collect();
    let mut tried = 0;
    for config in configs {
        let base = config.object_store_url.as_str().to_string();
        for group in &config.file_groups {
            for file in group.iter() {
                tried += 1;
                if tried > 256 {
                    return None;
                }
                let single = FileScanConfigBuilder::from(config.clone())
                    .with_file_groups(vec![FileGroup::new(vec![file.clone()])])
                    .with_limit(None)
                    .build();
                let exec = DataSourceExec::from_data_source(single);
                let Ok(mut stream) = exec.execute(0, task_ctx.clone()) else {
                    continue;
                };
                loop {
                    let item = std::panic::AssertUnwindSafe(stream.next())
                        .catch_unwind()
                        .await;
                    let failed = match item {
                        Ok(None) => break,
                        Ok(Some(batch)) => batch.is_err(),
                        Err(_panic) => true,
                    };
                    if failed {
                        let path = file.object_meta.location.as_ref();
                        return Some(if base.starts_with("file://") {
                            format!("/{path}")
                        } else {
                            format!("{}{path}", base)
                        });
                    }
                }
            }
        }
    }
    None
}

/// Every scan node of a plan, depth first.
fn scans(plan: &dyn ExecutionPlan) -> Vec<&DataSourceExec> {
    let mut out = Vec::new();
    let mut stack = vec![plan];
    while let Some(node) = stack.pop() {
        if let Some(ds) = node.downcast_ref::<DataSourceExec>() {
            out.push(ds);
        }
        stack.extend(node.children().into_iter().rev().map(|c| c.as_ref()));
    }
    out
}

fn file_scan(ds: &DataSourceExec) -> Option<&FileScanConfig> {
    ds.data_source().downcast_ref::<FileScanConfig>()
}

/// Cancels a running query: its stream ends with [`Error::Cancelled`] and its work stops.
#[derive(Debug, Clone, Default)]
pub struct CancelHandle {
    inner: Arc<CancelState>,
}

#[derive(Debug, Default)]
struct CancelState {
    cancelled: AtomicBool,
    waker: futures::task::AtomicWaker,
}

impl CancelHandle {
    /// Cancel the query.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        self.inner.waker.wake();
    }

    /// Whether [`CancelHandle::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }
}

struct CancellableStream {
    inner: Option<SendableRecordBatchStream>,
    handle: CancelHandle,
}

impl CancellableStream {
    fn new(inner: SendableRecordBatchStream) -> Self {
        CancellableStream {
            inner: Some(inner),
            handle: CancelHandle::default(),
        }
    }
}

impl Stream for CancellableStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.handle.inner.waker.register(cx.waker());
        if self.handle.is_cancelled() {
            // Dropping the DataFusion stream stops its tasks.
            return Poll::Ready(self.inner.take().map(|_| Err(Error::Cancelled)));
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // A panic in an operator (or a reader it calls) ends this query with an error; the
        // panics of DataFusion's spawned tasks are raised again here, where they are polled.
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll_next_unpin(cx)));
        let polled = match polled {
            Ok(p) => p,
            Err(panic) => {
                self.inner = None;
                let message = crate::error::panic_message(panic.as_ref());
                return Poll::Ready(Some(Err(Error::Execution(message))));
            }
        };
        match polled {
            Poll::Ready(Some(Err(e))) => {
                self.inner = None;
                Poll::Ready(Some(Err(Error::from(e))))
            }
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(b))),
            Poll::Ready(None) => {
                self.inner = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `CREATE EXTERNAL TABLE` through Strata's dataset resolution (globs on every store, typed
/// partitions, format options with Strata's names).
#[derive(Debug)]
struct DatasetTableFactory;

#[async_trait]
impl TableProviderFactory for DatasetTableFactory {
    async fn create(
        &self,
        state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let mut options = DatasetOptions::default();
        // `STORED AS postgres|mysql|sqlite LOCATION 'url' OPTIONS ('table' 'name')`; an SQLite
        // file may be a plain path.
        let database = match cmd.locations.as_slice() {
            [url] if crate::databases::is_database_url(url) => Some(url.clone()),
            [path] if cmd.file_type.eq_ignore_ascii_case("sqlite") => {
                Some(format!("sqlite:{path}"))
            }
            _ => None,
        };
        if let Some(url) = database {
            if let Some(table) = cmd.options.get("table").or(cmd.options.get("format.table")) {
                options.set("table", table).map_err(ext)?;
            }
            let spec = DatasetSpec::new(url).with_options(options);
            return spec.open(state).await.map_err(ext);
        }
        options.set("format", &cmd.file_type).map_err(ext)?;
        let mut keys: Vec<_> = cmd.options.iter().collect();
        keys.sort();
        for (k, v) in keys {
            options.set(k, v).map_err(ext)?;
        }
        let declared: Vec<_> = cmd.schema.fields().iter().cloned().collect();
        if declared.is_empty() {
            let spec = DatasetSpec {
                locations: cmd.locations.clone(),
                options,
                base_dir: None,
            };
            return Ok(Dataset::resolve(spec, state).await.map_err(ext)?.provider());
        }
        // A declared schema: the location may be empty or not exist yet (for INSERT INTO).
        let partition_cols: Vec<(String, datafusion::arrow::datatypes::DataType)> = cmd
            .table_partition_cols
            .iter()
            .map(|c| {
                declared
                    .iter()
                    .find(|f| f.name() == c)
                    .map(|f| (c.clone(), f.data_type().clone()))
                    .ok_or_else(|| {
                        DataFusionError::Plan(format!(
                            "partition column '{c}' must also be declared as a column"
                        ))
                    })
            })
            .collect::<DfResult<_>>()?;
        let file_fields: Vec<_> = declared
            .iter()
            .filter(|f| !cmd.table_partition_cols.contains(f.name()))
            .map(|f| f.as_ref().clone())
            .collect();
        let format = options.format.unwrap_or(Format::Parquet);
        let file_format = crate::dataset::file_format(format, &options, state.table_options());
        let ext_name = match format {
            Format::Json => ".json".to_string(),
            f => format!(".{}", f.name()),
        };
        let compression = options
            .compression
            .map(|c| c.suffix().to_string())
            .unwrap_or_default();
        let urls = cmd
            .locations
            .iter()
            .map(|l| crate::dataset::Location::parse_for_write(l).map(|l| l.url))
            .collect::<std::result::Result<Vec<_>, DatasetError>>()
            .map_err(ext)?;
        let listing = ListingOptions::new(file_format)
            .with_file_extension(format!("{ext_name}{compression}"))
            .with_table_partition_cols(partition_cols);
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(listing)
            .with_schema(Arc::new(datafusion::arrow::datatypes::Schema::new(
                file_fields,
            )));
        Ok(Arc::new(ListingTable::try_new(config)?))
    }
}

fn ext(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The cores this process may use.
pub fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_messages_are_recognised() {
        assert_eq!(
            not_found_table("table 'datafusion.public.peple' not found").as_deref(),
            Some("peple")
        );
        let m = column_suggestion(
            "Schema error: No field named lst_name. Did you mean 'people.last_name'?\nValid fields are people.last_name, people.first_name.",
        )
        .unwrap();
        assert_eq!(m, "column 'lst_name' not found; did you mean 'last_name'?");
        let m = column_suggestion("No field named qq.\nValid fields are t.a, t.\"b c\".").unwrap();
        assert_eq!(m, "column 'qq' not found; columns are: a, b c");
    }
}
