//! Jobs whose stage starts over fail rather than answer twice. When an executor is lost,
//! Ballista's scheduler rolls a running stage back and runs all of its partitions again, but
//! the output of the tasks that had already finished stays registered with the next stage,
//! which then reads those partitions twice: a wrong answer (duplicated rows, inflated sums).
//! The scheduler's task launcher here recognises such a restart and fails the job instead;
//! the client then runs the query again ([`is_restart_failure`]). Reruns that only replace
//! lost tasks (a finished stage whose output was on the lost executor) go on as before.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use ballista_core::JobId;
use ballista_core::error::Result;
use ballista_core::serde::protobuf::MultiTaskDefinition;
use ballista_core::serde::scheduler::ExecutorMetadata;
use ballista_scheduler::state::executor_manager::ExecutorManager;
use ballista_scheduler::state::task_manager::TaskLauncher;

/// How many jobs' stage attempts are remembered (the oldest are forgotten first).
const JOBS_REMEMBERED: usize = 4096;

/// The text a job failed by [`RestartGuard`] fails with, as Ballista words a rejected launch.
const REJECTED: &str = "task could not be prepared or was rejected by executor";

/// Whether a cluster job's error says that the job was stopped because a stage had to start
/// over (its answer would have been wrong), so running the query again is the remedy. An
/// executor that rejects a job's tasks fails it with the same words.
pub(crate) fn is_restart_failure(message: &str) -> bool {
    message.contains(REJECTED)
}

/// The latest attempt of one stage that launched tasks, and the highest task number it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attempt {
    number: u32,
    last_task: u32,
}

/// What launching one stage's tasks means for its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The first attempt, or more of the current one, or a rerun of lost tasks only.
    Launch,
    /// A new attempt that numbers its tasks from the start again: the stage runs all of its
    /// partitions a second time.
    Restart,
}

/// The stage attempts seen so far, per job.
#[derive(Debug, Default)]
struct Attempts {
    stages: HashMap<JobId, HashMap<u32, Attempt>>,
    order: VecDeque<JobId>,
    failed: HashSet<JobId>,
}

impl Attempts {
    /// Record that `job`'s `stage`, attempt `number`, launches the tasks numbered `tasks`.
    ///
    /// Ballista numbers a stage's tasks in the order it creates them. A stage that reruns the
    /// tasks an executor took with it keeps its earlier tasks and numbers new ones after
    /// them; a stage rolled back starts an attempt with no tasks and numbers from 0 again.
    fn launch(&mut self, job: &JobId, stage: u32, number: u32, tasks: &[u32]) -> Verdict {
        if self.failed.contains(job) {
            return Verdict::Restart;
        }
        let (Some(&first), Some(&last)) = (tasks.iter().min(), tasks.iter().max()) else {
            return Verdict::Launch;
        };
        if !self.stages.contains_key(job) {
            self.order.push_back(job.clone());
            if self.order.len() > JOBS_REMEMBERED
                && let Some(old) = self.order.pop_front()
            {
                self.stages.remove(&old);
                self.failed.remove(&old);
            }
        }
        let stages = self.stages.entry(job.clone()).or_default();
        let seen = stages.entry(stage).or_insert(Attempt {
            number,
            last_task: last,
        });
        if number > seen.number && first <= seen.last_task {
            self.failed.insert(job.clone());
            return Verdict::Restart;
        }
        if number >= seen.number {
            seen.number = number;
            seen.last_task = seen.last_task.max(last);
        }
        Verdict::Launch
    }
}

/// The scheduler's task launcher: Ballista's, except that a job whose stage starts over is
/// failed instead of launched.
pub(crate) struct RestartGuard {
    /// The scheduler's address as executors reach it, sent with every launch.
    scheduler_endpoint: String,
    attempts: Mutex<Attempts>,
}

impl RestartGuard {
    pub(crate) fn new(scheduler_endpoint: String) -> Self {
        RestartGuard {
            scheduler_endpoint,
            attempts: Mutex::new(Attempts::default()),
        }
    }
}

#[async_trait::async_trait]
impl TaskLauncher for RestartGuard {
    async fn launch_tasks(
        &self,
        executor: &ExecutorMetadata,
        tasks: Vec<MultiTaskDefinition>,
        executor_manager: &ExecutorManager,
    ) -> Result<HashSet<JobId>> {
        let mut failed = HashSet::new();
        let tasks: Vec<MultiTaskDefinition> = {
            let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
            tasks
                .into_iter()
                .filter(|t| {
                    let job = JobId::from(t.job_id.clone());
                    let numbers: Vec<u32> = t.task_ids.iter().map(|id| id.task_id).collect();
                    match attempts.launch(&job, t.stage_id, t.stage_attempt_num, &numbers) {
                        Verdict::Launch => true,
                        Verdict::Restart => {
                            log::warn!(
                                "job {job}: stage {} starts over (attempt {}) after some of its \
                                 output was read; failing the job so that it runs again",
                                t.stage_id,
                                t.stage_attempt_num
                            );
                            failed.insert(job);
                            false
                        }
                    }
                })
                .collect()
        };
        if !tasks.is_empty() {
            failed.extend(
                executor_manager
                    .launch_multi_task(&executor.id, tasks, self.scheduler_endpoint.clone())
                    .await?,
            );
        }
        Ok(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str) -> JobId {
        JobId::from(name.to_string())
    }

    #[test]
    fn a_first_attempt_and_its_retried_tasks_launch() {
        let mut a = Attempts::default();
        assert_eq!(a.launch(&job("j"), 1, 0, &[0, 1]), Verdict::Launch);
        assert_eq!(a.launch(&job("j"), 1, 0, &[2, 3]), Verdict::Launch);
        // A task lost with its executor runs again under a new number.
        assert_eq!(a.launch(&job("j"), 1, 0, &[4]), Verdict::Launch);
    }

    #[test]
    fn a_finished_stage_rerunning_lost_tasks_launches() {
        let mut a = Attempts::default();
        assert_eq!(a.launch(&job("j"), 2, 0, &[0, 1, 2, 3]), Verdict::Launch);
        assert_eq!(a.launch(&job("j"), 2, 1, &[4, 5]), Verdict::Launch);
        assert_eq!(a.launch(&job("j"), 2, 2, &[6]), Verdict::Launch);
    }

    #[test]
    fn a_stage_numbering_its_tasks_from_zero_again_fails_its_job_for_good() {
        let mut a = Attempts::default();
        assert_eq!(a.launch(&job("j"), 3, 0, &[0, 1, 2]), Verdict::Launch);
        assert_eq!(a.launch(&job("j"), 3, 1, &[0, 1]), Verdict::Restart);
        // Every later launch of that job fails too; other jobs are unaffected.
        assert_eq!(a.launch(&job("j"), 4, 0, &[0]), Verdict::Restart);
        assert_eq!(a.launch(&job("k"), 3, 0, &[0, 1, 2]), Verdict::Launch);
        assert_eq!(a.launch(&job("k"), 3, 0, &[3]), Verdict::Launch);
    }

    #[test]
    fn a_stage_rolled_back_before_any_task_launched_runs() {
        let mut a = Attempts::default();
        // Attempt 0 never launched a task: nothing of it can have been read.
        assert_eq!(a.launch(&job("j"), 5, 1, &[0, 1]), Verdict::Launch);
    }

    #[test]
    fn late_launches_of_an_older_attempt_do_not_count_as_restarts() {
        let mut a = Attempts::default();
        assert_eq!(a.launch(&job("j"), 6, 1, &[7, 8]), Verdict::Launch);
        assert_eq!(a.launch(&job("j"), 6, 0, &[0]), Verdict::Launch);
        assert_eq!(a.launch(&job("j"), 6, 1, &[9]), Verdict::Launch);
    }

    #[test]
    fn old_jobs_are_forgotten() {
        let mut a = Attempts::default();
        for i in 0..JOBS_REMEMBERED + 10 {
            a.launch(&job(&i.to_string()), 1, 0, &[0]);
        }
        assert_eq!(a.stages.len(), JOBS_REMEMBERED);
        assert!(!a.stages.contains_key(&job("0")));
    }

    #[test]
    fn the_failure_text_is_recognised() {
        assert!(is_restart_failure(&format!("Job j failed: {REJECTED}")));
        assert!(!is_restart_failure("Job j failed: division by zero"));
    }
}
