//! The execution seam: every caller (library, CLI, sql-tests, later the server) runs planned
//! queries through a [`Runner`]. [`LocalRunner`] executes on this process's threads; a
//! distributed runner implements the same trait without any caller changing.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};

use crate::cluster::ClusterJob;
use crate::error::Result;

/// A query that has started: its physical plan (for metrics) and its result stream.
pub struct Execution {
    /// The physical plan being executed; its metrics fill in as the stream is consumed.
    pub plan: Arc<dyn ExecutionPlan>,
    /// The result batches.
    pub stream: SendableRecordBatchStream,
    /// The cluster job running the query, for runners that send queries to a cluster.
    pub job: Option<Arc<ClusterJob>>,
}

/// Executes optimized logical plans.
#[async_trait]
pub trait Runner: Send + Sync + Debug {
    /// A short name for messages (`local`, `cluster`).
    fn name(&self) -> &str;

    /// The `http://host:port` of the scheduler jobs go to, for runners that use one.
    fn scheduler(&self) -> Option<&str> {
        None
    }

    /// Plan `plan` physically and start executing it.
    async fn execute(&self, state: &SessionState, plan: LogicalPlan) -> Result<Execution>;
}

/// Runs queries on the local Tokio runtime, partitioned across its threads.
#[derive(Debug, Default)]
pub struct LocalRunner;

#[async_trait]
impl Runner for LocalRunner {
    fn name(&self) -> &str {
        "local"
    }

    async fn execute(&self, state: &SessionState, plan: LogicalPlan) -> Result<Execution> {
        let physical = state.create_physical_plan(&plan).await?;
        let stream = execute_stream(physical.clone(), state.task_ctx())?;
        Ok(Execution {
            plan: physical,
            stream,
            job: None,
        })
    }
}
