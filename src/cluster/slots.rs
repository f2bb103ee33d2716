//! Executor slots that the scheduler loses track of are given back. When an executor is lost,
//! Ballista's scheduler rolls back the stages that read from it and asks the other executors
//! to stop those stages' tasks, but it returns a task's slot only when the task's status
//! arrives and the task is still found in its stage, which a rolled-back stage no longer
//! lists. Each such task took one slot of a surviving executor with it for good; with one
//! slot per executor the job then waited forever for a slot.
//!
//! [`SlotLedger`] keeps the scheduler's slot accounting as Ballista's in-memory state does,
//! plus a copy of each executor's free slots. [`reclaim_lost_slots`] compares them, every
//! second, with the tasks the jobs' stages say are running, and gives back what has been
//! missing for two checks in a row.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballista_core::JobId;
use ballista_core::error::Result;
use ballista_core::serde::protobuf::ExecutorHeartbeat;
use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpc;
use ballista_core::serde::protobuf::{UpdateTaskStatusParams, task_status};
use ballista_core::serde::scheduler::{ExecutorData, ExecutorMetadata};
use ballista_scheduler::cluster::{BoundTask, ClusterState, ClusterStateEventStream, ExecutorSlot};
use ballista_scheduler::config::TaskDistributionPolicy;
use ballista_scheduler::scheduler_server::SchedulerServer;
use ballista_scheduler::state::task_manager::JobInfoCache;
use datafusion_proto::logical_plan::AsLogicalPlan;
use datafusion_proto::physical_plan::AsExecutionPlan;

/// One executor's slots as the scheduler counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slots {
    total: u32,
    free: u32,
    /// Slots found missing at the last check.
    missing: u32,
}

/// The executors' slots, kept alongside the scheduler's own count.
#[derive(Debug, Default)]
struct Book {
    executors: HashMap<String, Slots>,
}

impl Book {
    fn register(&mut self, spec: &ExecutorData) {
        self.executors.insert(
            spec.executor_id.clone(),
            Slots {
                total: spec.total_vcores,
                free: spec.available_vcores,
                missing: 0,
            },
        );
    }

    fn bind(&mut self, executor: &str, slots: u32) {
        if let Some(s) = self.executors.get_mut(executor) {
            s.free = s.free.saturating_sub(slots);
        }
    }

    fn unbind(&mut self, executor: &str, slots: u32) {
        if let Some(s) = self.executors.get_mut(executor) {
            s.free += slots;
        }
    }

    /// Given the slots the jobs' running tasks hold per executor, the slots to give back
    /// now: those missing (neither free nor held) at this check and the one before.
    fn check(&mut self, held: &HashMap<String, u32>) -> Vec<ExecutorSlot> {
        let mut back = Vec::new();
        for (id, s) in self.executors.iter_mut() {
            let held = held.get(id).copied().unwrap_or(0);
            let missing = s.total.saturating_sub(held).saturating_sub(s.free);
            let give = missing.min(s.missing);
            s.missing = missing;
            if give > 0 {
                back.push((id.clone(), give));
            }
        }
        back
    }
}

/// Ballista's cluster state, with a copy of the slot count (see the module documentation).
pub(crate) struct SlotLedger {
    inner: Arc<dyn ClusterState>,
    book: Mutex<Book>,
}

impl SlotLedger {
    pub(crate) fn new(inner: Arc<dyn ClusterState>) -> Self {
        SlotLedger {
            inner,
            book: Mutex::new(Book::default()),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl ClusterState for SlotLedger {
    async fn init(&self) -> Result<()> {
        self.inner.init().await
    }

    async fn bind_schedulable_tasks(
        &self,
        distribution: TaskDistributionPolicy,
        active_jobs: Arc<HashMap<JobId, JobInfoCache>>,
        executors: Option<HashSet<String>>,
    ) -> Result<Vec<BoundTask>> {
        let bound = self
            .inner
            .bind_schedulable_tasks(distribution, active_jobs, executors)
            .await?;
        let mut book = self.book();
        for (executor, task) in &bound {
            book.bind(executor, task.vcores_consumed);
        }
        Ok(bound)
    }

    async fn unbind_tasks(&self, executor_slots: Vec<ExecutorSlot>) -> Result<()> {
        self.inner.unbind_tasks(executor_slots.clone()).await?;
        let mut book = self.book();
        for (executor, slots) in &executor_slots {
            book.unbind(executor, *slots);
        }
        Ok(())
    }

    async fn register_executor(
        &self,
        metadata: ExecutorMetadata,
        spec: ExecutorData,
    ) -> Result<()> {
        self.inner.register_executor(metadata, spec.clone()).await?;
        self.book().register(&spec);
        Ok(())
    }

    async fn save_executor_metadata(&self, metadata: ExecutorMetadata) -> Result<()> {
        self.inner.save_executor_metadata(metadata).await
    }

    async fn get_executor_metadata(&self, executor_id: &str) -> Result<ExecutorMetadata> {
        self.inner.get_executor_metadata(executor_id).await
    }

    async fn registered_executor_metadata(&self) -> Vec<ExecutorMetadata> {
        self.inner.registered_executor_metadata().await
    }

    async fn save_executor_heartbeat(&self, heartbeat: ExecutorHeartbeat) -> Result<()> {
        self.inner.save_executor_heartbeat(heartbeat).await
    }

    async fn remove_executor(&self, executor_id: &str) -> Result<()> {
        self.inner.remove_executor(executor_id).await?;
        self.book().executors.remove(executor_id);
        Ok(())
    }

    fn executor_heartbeats(&self) -> HashMap<String, ExecutorHeartbeat> {
        self.inner.executor_heartbeats()
    }

    fn get_executor_heartbeat(&self, executor_id: &str) -> Option<ExecutorHeartbeat> {
        self.inner.get_executor_heartbeat(executor_id)
    }

    async fn cluster_state_events(&self) -> Result<ClusterStateEventStream> {
        self.inner.cluster_state_events().await
    }
}

/// The slots held by the running tasks of the scheduler's active jobs, per executor.
async fn held_slots<T: AsLogicalPlan, U: AsExecutionPlan>(
    scheduler: &SchedulerServer<T, U>,
) -> HashMap<String, u32> {
    let mut held: HashMap<String, u32> = HashMap::new();
    let jobs = scheduler.state.task_manager.get_running_job_cache();
    for job in jobs.values() {
        let graph = job.execution_graph.read().await;
        for stage in graph.stages().values() {
            for task in stage.task_infos().unwrap_or_default() {
                if let task_status::Status::Running(running) = &task.task_status {
                    *held.entry(running.executor_id.clone()).or_default() += task.vcores_consumed;
                }
            }
        }
    }
    held
}

/// Every second, give back the slots `ledger` finds lost, and have the scheduler offer
/// them to waiting tasks. Runs as long as the scheduler does.
pub(crate) async fn reclaim_lost_slots<T: AsLogicalPlan, U: AsExecutionPlan>(
    scheduler: SchedulerServer<T, U>,
    ledger: Arc<SlotLedger>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        // A task bound or ended between the two reads can make a slot look missing once;
        // only slots missing at two checks in a row are given back.
        let held = held_slots(&scheduler).await;
        let back = ledger.book().check(&held);
        for (executor, slots) in back {
            log::warn!("giving back {slots} slot(s) of executor {executor} that no task holds");
            if ledger
                .unbind_tasks(vec![(executor.clone(), slots)])
                .await
                .is_err()
            {
                continue;
            }
            // An empty status report from the executor makes the scheduler offer its free
            // slots to the tasks waiting for one.
            let nudge = tonic::Request::new(UpdateTaskStatusParams {
                executor_id: executor,
                task_status: Vec::new(),
            });
            let _ = SchedulerGrpc::update_task_status(&scheduler, nudge).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(total: u32) -> Book {
        let mut b = Book::default();
        b.register(&ExecutorData {
            executor_id: "e".into(),
            total_vcores: total,
            available_vcores: total,
        });
        b
    }

    fn held(n: u32) -> HashMap<String, u32> {
        HashMap::from([("e".to_string(), n)])
    }

    #[test]
    fn slots_held_or_free_are_not_missing() {
        let mut b = book(2);
        b.bind("e", 2);
        assert!(b.check(&held(2)).is_empty());
        b.unbind("e", 1);
        assert!(b.check(&held(1)).is_empty());
        assert!(b.check(&held(1)).is_empty());
    }

    #[test]
    fn a_slot_missing_twice_in_a_row_is_given_back_once() {
        let mut b = book(1);
        b.bind("e", 1);
        // The task's stage was rolled back: no stage lists it, and its slot never came back.
        assert!(b.check(&held(0)).is_empty());
        assert_eq!(b.check(&held(0)), vec![("e".to_string(), 1)]);
        b.unbind("e", 1);
        assert!(b.check(&held(0)).is_empty());
    }

    #[test]
    fn a_slot_missing_only_for_a_moment_is_left_alone() {
        let mut b = book(2);
        b.bind("e", 2);
        // A task ended between the two reads: its slot looks missing once.
        assert!(b.check(&held(1)).is_empty());
        b.unbind("e", 1);
        assert!(b.check(&held(1)).is_empty());
    }

    #[test]
    fn removed_executors_are_forgotten() {
        let mut b = book(1);
        b.bind("e", 1);
        b.executors.remove("e");
        assert!(b.check(&held(0)).is_empty());
        assert!(b.check(&held(0)).is_empty());
    }
}
