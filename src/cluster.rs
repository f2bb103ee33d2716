//! Distributed execution on Apache DataFusion Ballista: the runner that sends plans to a
//! scheduler, and a whole cluster (scheduler and executors) inside this process for trying
//! things out and for tests.

use async_trait::async_trait;
use ballista_core::extension::SessionStateExt;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execute_stream;

use crate::error::{Error, Result};
use crate::runner::{Execution, Runner};

/// Runs queries on a Ballista cluster through its scheduler.
#[derive(Debug, Clone)]
pub struct ClusterRunner {
    /// `http://host:port` of the scheduler.
    scheduler: String,
}

impl ClusterRunner {
    /// A runner for the scheduler at `url` (`df://host:port` or `http://host:port`).
    pub fn new(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("df://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| {
                Error::Config(format!(
                    "cluster address '{url}' should look like df://host:port"
                ))
            })?;
        Ok(ClusterRunner {
            scheduler: format!("http://{rest}"),
        })
    }

    /// The scheduler's address.
    pub fn scheduler(&self) -> &str {
        &self.scheduler
    }
}

#[async_trait]
impl Runner for ClusterRunner {
    fn name(&self) -> &str {
        "cluster"
    }

    async fn execute(&self, state: &SessionState, plan: LogicalPlan) -> Result<Execution> {
        // Rebuilding the state must not create a fresh (empty) default catalog in the catalog
        // list it shares with the engine.
        let mut state = state.clone();
        state
            .config_mut()
            .options_mut()
            .catalog
            .create_default_catalog_and_schema = false;
        let state = state.upgrade_for_ballista(self.scheduler.clone())?;
        let physical = state.create_physical_plan(&plan).await?;
        let stream = execute_stream(physical.clone(), state.task_ctx())?;
        Ok(Execution {
            plan: physical,
            stream,
        })
    }
}

/// Start a scheduler and `executors` executors (each with `slots` task slots) in this process,
/// sharing `state`'s stores and settings; returns the scheduler's `df://` address.
pub async fn start_local(state: &SessionState, executors: usize, slots: usize) -> Result<String> {
    let cluster_err = |e: ballista_core::error::BallistaError| {
        Error::Execution(format!("cannot start the local cluster: {e}"))
    };
    let addr = ballista_scheduler::standalone::new_standalone_scheduler_from_state(state)
        .await
        .map_err(cluster_err)?;
    let url = format!("http://localhost:{}", addr.port());
    let client = SchedulerGrpcClient::connect(url.clone())
        .await
        .map_err(|e| Error::Execution(format!("cannot reach the local scheduler: {e}")))?;
    for _ in 0..executors.max(1) {
        ballista_executor::new_standalone_executor_from_state(client.clone(), slots.max(1), state)
            .await
            .map_err(cluster_err)?;
    }
    Ok(format!("df://localhost:{}", addr.port()))
}
