//! Strata's additions to its scheduler's REST API, read from the scheduler's own state: a
//! job's progress with its stages and latest tasks, each with the executor it ran on
//! (`/api/strata/job/{id}`). Ballista's `/api/job/{id}/stages` names no executor and
//! takes time in the square of a stage's tasks (each task's rows are summed over every
//! partition's metrics); this answer takes time in proportion to the job's tasks and keeps
//! at most [`TASK_WINDOW`] of them. Also each executor's running tasks and spilled bytes
//! (`/api/strata/executors`): Ballista's executors report neither in their heartbeats.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ballista_core::execution_plans::{
    RangeShuffleReaderExec, ShuffleReaderExec, UnresolvedShuffleExec,
};
use ballista_core::serde::protobuf::{job_status, task_status};
use ballista_scheduler::cluster::JobState;
use ballista_scheduler::scheduler_server::SchedulerServer;
use ballista_scheduler::state::execution_graph::ExecutionGraph;
use ballista_scheduler::state::execution_stage::{ExecutionStage, TaskInfo};
use datafusion::common::human_readable_duration;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use serde::{Deserialize, Serialize};

use super::jobs::{JobStats, StageStats, TASK_WINDOW, TaskSpan, TaskState};

/// The path of a job's progress on the scheduler.
pub(crate) fn job_path(job_id: &str) -> String {
    format!("/api/strata/job/{job_id}")
}

/// The path of the executors' running tasks and spilled bytes on the scheduler.
pub(crate) const EXECUTORS_PATH: &str = "/api/strata/executors";

/// What the executors do, by executor id.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExecutorLoad {
    /// Tasks running now.
    pub running: BTreeMap<String, usize>,
    /// Bytes the operators of its finished tasks spilled to disk, over the jobs the
    /// scheduler keeps (running and finished). Spill an executor reported without a
    /// partition, or for a partition whose task is not known to have succeeded, is left out.
    pub spilled_bytes: BTreeMap<String, u64>,
}

type Scheduler = SchedulerServer<LogicalPlanNode, PhysicalPlanNode>;

struct Sources {
    scheduler: Scheduler,
    jobs: Arc<dyn JobState>,
    /// Bytes spilled per executor by each finished job, reckoned once: its graph no longer
    /// changes. Jobs the job state no longer keeps are forgotten.
    finished_spill: tokio::sync::Mutex<HashMap<String, BTreeMap<String, u64>>>,
}

/// The routes, read from `scheduler` (its running jobs) and `jobs` (the jobs it keeps).
pub(crate) fn routes(scheduler: Scheduler, jobs: Arc<dyn JobState>) -> Router {
    Router::new()
        .route("/api/strata/job/{id}", get(job))
        .route(EXECUTORS_PATH, get(executor_load))
        .with_state(Arc::new(Sources {
            scheduler,
            jobs,
            finished_spill: Default::default(),
        }))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn job(State(sources): State<Arc<Sources>>, Path(id): Path<String>) -> Response {
    let job_id = id.clone().into();
    // A running job's graph lives in the scheduler's cache; a finished one in the job state.
    let running = sources.scheduler.state.task_manager.get_running_job_cache();
    let stats = match running.get(&job_id) {
        Some(cached) => job_stats(cached.execution_graph.read().await.as_ref(), now_ms()),
        None => match sources.jobs.get_execution_graph(&job_id).await {
            Ok(Some(graph)) => job_stats(graph.as_ref(), now_ms()),
            Ok(None) => return (StatusCode::NOT_FOUND, format!("no job {id}")).into_response(),
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
    };
    Json(stats).into_response()
}

async fn executor_load(State(sources): State<Arc<Sources>>) -> Json<ExecutorLoad> {
    let mut load = ExecutorLoad::default();
    let running_jobs = sources.scheduler.state.task_manager.get_running_job_cache();
    for job in running_jobs.values() {
        let graph = job.execution_graph.read().await;
        for stage in graph.stages().values() {
            for task in task_infos(stage) {
                if let task_status::Status::Running(r) = &task.task_status {
                    *load.running.entry(r.executor_id.clone()).or_insert(0) += 1;
                }
            }
            spill_by_executor(
                stage_metrics(stage),
                task_infos(stage),
                &mut load.spilled_bytes,
            );
        }
    }
    // Finished jobs: each reckoned the first time it is seen finished.
    let kept = sources.jobs.get_jobs().await.unwrap_or_default();
    let mut finished = sources.finished_spill.lock().await;
    finished.retain(|id, _| kept.contains(id.as_str()));
    for id in kept {
        if finished.contains_key(id.as_str()) || running_jobs.contains_key(&id) {
            continue;
        }
        let Ok(Some(graph)) = sources.jobs.get_execution_graph(&id).await else {
            continue;
        };
        if matches!(
            graph.status().status,
            Some(job_status::Status::Successful(_) | job_status::Status::Failed(_))
        ) {
            let mut spill = BTreeMap::new();
            for stage in graph.stages().values() {
                spill_by_executor(stage_metrics(stage), task_infos(stage), &mut spill);
            }
            finished.insert(id.to_string(), spill);
        }
    }
    for spill in finished.values() {
        for (executor, bytes) in spill {
            *load.spilled_bytes.entry(executor.clone()).or_insert(0) += bytes;
        }
    }
    Json(load)
}

/// Adds the bytes each executor spilled for a stage to `into`, from the stage's `metrics`
/// (one value per partition) and `tasks`: a partition's executor is the one whose task for
/// it succeeded.
fn spill_by_executor(metrics: &[MetricsSet], tasks: &[TaskInfo], into: &mut BTreeMap<String, u64>) {
    let mut ran_on: Option<HashMap<usize, &str>> = None;
    for set in metrics {
        for metric in set.iter() {
            let value = metric.value();
            if value.name() != "spilled_bytes" || value.as_usize() == 0 {
                continue;
            }
            let ran_on = ran_on.get_or_insert_with(|| partitions_ran_on(tasks));
            if let Some(executor) = metric.partition().and_then(|p| ran_on.get(&p)) {
                *into.entry(executor.to_string()).or_insert(0) += value.as_usize() as u64;
            }
        }
    }
}

/// The executor each partition's successful task ran on.
fn partitions_ran_on(tasks: &[TaskInfo]) -> HashMap<usize, &str> {
    let mut ran_on = HashMap::new();
    for task in tasks {
        if let task_status::Status::Successful(s) = &task.task_status {
            for &p in &task.global_input_partition_ids {
                ran_on.insert(p, s.executor_id.as_str());
            }
        }
    }
    ran_on
}

/// The tasks of a stage that started.
fn task_infos(stage: &ExecutionStage) -> &[TaskInfo] {
    match stage {
        ExecutionStage::Running(s) => &s.task_infos,
        ExecutionStage::Successful(s) => &s.task_infos,
        ExecutionStage::Failed(s) => &s.task_infos,
        ExecutionStage::UnResolved(_) | ExecutionStage::Resolved(_) => &[],
    }
}

/// The merged metrics of a stage's finished tasks, one set per operator that reports any.
fn stage_metrics(stage: &ExecutionStage) -> &[MetricsSet] {
    match stage {
        ExecutionStage::Running(s) => s.stage_metrics.as_deref().unwrap_or(&[]),
        ExecutionStage::Successful(s) => &s.stage_metrics,
        ExecutionStage::Failed(s) => s.stage_metrics.as_deref().unwrap_or(&[]),
        ExecutionStage::UnResolved(_) | ExecutionStage::Resolved(_) => &[],
    }
}

/// What a stage reads from another: its id, and whether every task reads all of it (a
/// broadcast) rather than its own share.
struct Read {
    stage: usize,
    broadcast: bool,
    /// Its slot among the stage's metrics, once it reports them.
    slot: Option<usize>,
}

/// The parts of a stage's plan its figures come from.
#[derive(Default)]
struct PlanShape {
    /// Slot of the root operator's metrics (`None` if it reports none).
    root: Option<usize>,
    /// Slots of the leaf operators.
    leaves: Vec<usize>,
    /// Operators that report metrics: the length Ballista's stage metrics have.
    slots: usize,
    reads: Vec<Read>,
    scans_data: bool,
}

impl PlanShape {
    /// Walks the plan as Ballista collects its metrics: before the children, an operator
    /// without metrics taking no slot.
    fn of(plan: &dyn ExecutionPlan) -> Self {
        let mut shape = PlanShape::default();
        shape.visit(plan, true);
        shape
    }

    fn visit(&mut self, plan: &dyn ExecutionPlan, is_root: bool) {
        let slot = plan.metrics().is_some().then(|| {
            self.slots += 1;
            self.slots - 1
        });
        if is_root {
            self.root = slot;
        }
        if let Some(slot) = slot
            && plan.children().is_empty()
        {
            self.leaves.push(slot);
        }
        let read = if let Some(r) = plan.downcast_ref::<ShuffleReaderExec>() {
            Some((r.stage_id, r.broadcast))
        } else if let Some(r) = plan.downcast_ref::<RangeShuffleReaderExec>() {
            Some((r.stage_id, false))
        } else {
            plan.downcast_ref::<UnresolvedShuffleExec>()
                .map(|r| (r.stage_id, false))
        };
        if let Some((stage, broadcast)) = read {
            self.reads.push(Read {
                stage,
                broadcast,
                slot,
            });
        }
        self.scans_data |= plan.is::<DataSourceExec>();
        for child in plan.children() {
            self.visit(child.as_ref(), false);
        }
    }
}

/// The sum of the metric `name` of one operator over its partitions.
fn sum_of(metrics: &MetricsSet, name: &str) -> u64 {
    metrics
        .iter()
        .filter(|m| m.value().name() == name)
        .map(|m| m.value().as_usize() as u64)
        .sum()
}

/// The progress of the job whose graph is `graph`, at `now` (milliseconds since the Unix
/// epoch).
fn job_stats(graph: &dyn ExecutionGraph, now: u64) -> JobStats {
    let status = match &graph.status().status {
        None | Some(job_status::Status::Queued(_)) => "Queued",
        Some(job_status::Status::Running(_)) => "Running",
        Some(job_status::Status::Failed(_)) => "Failed",
        Some(job_status::Status::Successful(_)) => "Completed",
    };
    let mut ids: Vec<usize> = graph.stages().keys().copied().collect();
    ids.sort_unstable();
    let mut stats = JobStats {
        status: status.into(),
        stages: ids.len(),
        stages_done: graph.completed_stages(),
        job_id: graph.job_id().to_string(),
        ..JobStats::default()
    };
    // When each task started, with where it is: the latest are picked from these before
    // any task is copied, as this runs under the job's lock and a job may have 100,000.
    let mut starts: Vec<(u64, usize, usize)> = Vec::new();
    // Each stage's reads and whether it scans data, for the rows the scans read.
    let mut reads_of = Vec::with_capacity(ids.len());
    for &id in &ids {
        let stage = &graph.stages()[&id];
        let shape = PlanShape::of(stage.plan());
        let metrics = stage_metrics(stage);
        // Metrics that do not line up with the plan cannot be told apart: none counted.
        let lined_up = metrics.len() == shape.slots;
        let rows_of = |slot: usize| {
            if lined_up {
                sum_of(&metrics[slot], "output_rows")
            } else {
                0
            }
        };
        let tasks = task_infos(stage);
        let mut one = StageStats {
            id: id.to_string(),
            status: stage.variant_name().to_string(),
            tasks: tasks.len(),
            input_rows: shape.leaves.iter().map(|&s| rows_of(s)).sum(),
            output_rows: shape.root.map(rows_of).unwrap_or(0),
            spilled_bytes: metrics.iter().map(|m| sum_of(m, "spilled_bytes")).sum(),
            ..StageStats::default()
        };
        for read in &shape.reads {
            let upstream = read.stage.to_string();
            if !one.inputs.contains(&upstream) {
                one.inputs.push(upstream);
            }
            if let Some(slot) = read.slot.filter(|_| lined_up) {
                one.shuffle_bytes_fetched += sum_of(&metrics[slot], "decoded_bytes");
            }
        }
        let (mut first, mut last) = (u64::MAX, 0);
        for (index, task) in tasks.iter().enumerate() {
            let started = started_ms(task);
            let ended = task.end_exec_time as u64;
            first = first.min(started);
            match &task.task_status {
                task_status::Status::Running(_) => {
                    one.tasks_running += 1;
                    last = now;
                }
                task_status::Status::Successful(s) => {
                    one.tasks_done += 1;
                    one.shuffle_bytes_written +=
                        s.partitions.iter().map(|p| p.num_bytes).sum::<u64>();
                    last = last.max(ended);
                }
                task_status::Status::Failed(_) => {
                    one.tasks_failed += 1;
                    last = last.max(ended);
                }
            }
            starts.push((started, stats.stage_list.len(), index));
        }
        one.elapsed = (first != u64::MAX && last >= first)
            .then(|| human_readable_duration((last - first) * 1_000_000));
        stats.tasks_running += one.tasks_running;
        stats.tasks_done += one.tasks_done;
        reads_of.push((shape.scans_data, shape.reads));
        stats.stage_list.push(one);
    }
    stats.rows_scanned = rows_scanned(&stats.stage_list, &reads_of);
    stats.task_stream = latest(starts)
        .into_iter()
        .map(|(_, stage, index)| {
            let id = &stats.stage_list[stage].id;
            span(id, &task_infos(&graph.stages()[&ids[stage]])[index])
        })
        .collect();
    stats
}

/// When an executor started `task`, in milliseconds since the Unix epoch (when it was
/// launched, if it has not said).
fn started_ms(task: &TaskInfo) -> u64 {
    (if task.start_exec_time > 0 {
        task.start_exec_time
    } else {
        task.launch_time
    }) as u64
}

/// `task` of stage `stage` in the task stream.
fn span(stage: &str, task: &TaskInfo) -> TaskSpan {
    let started = started_ms(task);
    let ended = (task.end_exec_time as u64).max(started);
    let (state, executor, end_ms) = match &task.task_status {
        task_status::Status::Running(r) => (TaskState::Running, Some(r.executor_id.clone()), None),
        task_status::Status::Successful(s) => {
            (TaskState::Done, Some(s.executor_id.clone()), Some(ended))
        }
        // A failed task's status does not say where it ran.
        task_status::Status::Failed(_) => (TaskState::Failed, None, Some(ended)),
    };
    TaskSpan {
        stage: stage.to_string(),
        partitions: task
            .global_input_partition_ids
            .iter()
            .map(|&p| p as u32)
            .collect(),
        start_ms: started,
        end_ms,
        state,
        executor,
    }
}

/// Rows read from datasets: the input rows of the stages that scan one, less what they
/// read from other stages (a broadcast read once per task).
fn rows_scanned(stages: &[StageStats], reads_of: &[(bool, Vec<Read>)]) -> u64 {
    let output: HashMap<&str, u64> = stages
        .iter()
        .map(|s| (s.id.as_str(), s.output_rows))
        .collect();
    stages
        .iter()
        .zip(reads_of)
        .filter(|(_, (scans_data, _))| *scans_data)
        .map(|(stage, (_, reads))| {
            let tasks = stage.tasks.max(1) as u64;
            let from_stages: u64 = reads
                .iter()
                .map(|r| {
                    let rows = output.get(r.stage.to_string().as_str()).copied();
                    rows.unwrap_or(0) * if r.broadcast { tasks } else { 1 }
                })
                .sum();
            stage.input_rows.saturating_sub(from_stages)
        })
        .sum()
}

/// The greatest [`TASK_WINDOW`] of `tasks` (keyed by when they started first), in order:
/// the latest tasks, oldest first. Takes time in proportion to their number.
fn latest<T: Ord>(mut tasks: Vec<T>) -> Vec<T> {
    if let Some(cut) = tasks.len().checked_sub(TASK_WINDOW).filter(|&cut| cut > 0) {
        tasks.select_nth_unstable(cut);
        tasks.drain(..cut);
    }
    tasks.sort_unstable();
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballista_core::serde::protobuf::SuccessfulTask;
    use datafusion::physical_plan::metrics::{Count, Metric, MetricValue};

    fn stage(id: &str, tasks: usize, input_rows: u64, output_rows: u64) -> StageStats {
        StageStats {
            id: id.into(),
            tasks,
            input_rows,
            output_rows,
            ..StageStats::default()
        }
    }

    fn read(stage: usize, broadcast: bool) -> Read {
        Read {
            stage,
            broadcast,
            slot: None,
        }
    }

    #[test]
    fn rows_scanned_leave_out_what_scans_read_from_other_stages() {
        let stages = [
            stage("1", 2, 1000, 40),
            stage("2", 2, 300, 300),
            // Scans 750 rows and reads stage 1's 40 rows broadcast to each of its 2 tasks.
            stage("3", 2, 830, 10),
            // Reads stage 2 only: scans nothing.
            stage("4", 1, 300, 3),
        ];
        let reads_of = [
            (true, vec![]),
            (true, vec![]),
            (true, vec![read(1, true)]),
            (false, vec![read(2, false)]),
        ];
        assert_eq!(rows_scanned(&stages, &reads_of), 1000 + 300 + 750);
    }

    fn task(partitions: Vec<usize>, status: task_status::Status) -> TaskInfo {
        TaskInfo {
            task_id: 0,
            scheduled_time: 0,
            launch_time: 0,
            start_exec_time: 0,
            end_exec_time: 0,
            finish_time: 0,
            task_status: status,
            vcores_consumed: partitions.len() as u32,
            global_input_partition_ids: partitions,
        }
    }

    fn done_on(executor: &str) -> task_status::Status {
        task_status::Status::Successful(SuccessfulTask {
            executor_id: executor.into(),
            ..Default::default()
        })
    }

    fn spilled(partition: Option<usize>, bytes: usize) -> Arc<Metric> {
        let count = Count::new();
        count.add(bytes);
        Arc::new(Metric::new(MetricValue::SpilledBytes(count), partition))
    }

    #[test]
    fn spill_goes_to_the_executor_whose_task_succeeded_for_its_partition() {
        let tasks = [
            task(vec![0, 1], done_on("a")),
            task(vec![2], done_on("b")),
            // A task that failed and ran again on a: its partition is a's.
            task(vec![3], task_status::Status::Failed(Default::default())),
            task(vec![3], done_on("a")),
            task(vec![4], task_status::Status::Running(Default::default())),
        ];
        let mut sort = MetricsSet::new();
        for (partition, bytes) in [(0, 100), (1, 20), (2, 7), (3, 1000)] {
            sort.push(spilled(Some(partition), bytes));
        }
        // Unknown: a running task's partition, and a value without a partition.
        sort.push(spilled(Some(4), 5));
        sort.push(spilled(None, 9));
        let mut rows = MetricsSet::new();
        rows.push(Arc::new(Metric::new(
            MetricValue::OutputRows(Count::new()),
            Some(0),
        )));
        let mut into = BTreeMap::from([("b".to_string(), 1)]);
        spill_by_executor(&[rows, sort], &tasks, &mut into);
        assert_eq!(
            into,
            BTreeMap::from([("a".to_string(), 1120), ("b".to_string(), 8)])
        );
        // Nothing spilled, nothing added.
        let mut none = BTreeMap::new();
        spill_by_executor(&[MetricsSet::new()], &tasks, &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn the_task_stream_keeps_the_latest_tasks_oldest_first() {
        // Started in no order, two at each millisecond: 3 stages x 400 tasks.
        let mut starts: Vec<(u64, usize, usize)> = (0..1200)
            .map(|i| (1000 + (i * 7919 % 1200) as u64 / 2, i % 3, i / 3))
            .collect();
        let kept = latest(starts.clone());
        starts.sort_unstable();
        assert_eq!(kept, starts[200..]);
        assert_eq!(kept.len(), TASK_WINDOW);
        assert_eq!(kept[0].0, 1100);
        // Fewer than the window: all, in order.
        let few = vec![(5, 0, 1), (3, 1, 0), (5, 0, 0)];
        assert_eq!(latest(few), [(3, 1, 0), (5, 0, 0), (5, 0, 1)]);
    }
}
