//! Recent jobs of a cluster, read from its scheduler's REST API.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, Float64Array, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use super::scheduler_api;
use crate::error::{Error, Result};

#[derive(Debug, Deserialize)]
struct Job {
    job_id: String,
    #[serde(default)]
    job_name: String,
    status: String,
    num_stages: usize,
    completed_stages: usize,
    start_time: u64,
    end_time: u64,
}

impl Job {
    /// Whether it is queued or running.
    fn live(&self) -> bool {
        self.status == "Running" || self.status == "Queued"
    }
}

/// `f` (blocking requests to a scheduler) on a thread that may block.
async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Execution(e.to_string()))?
}

/// Cancel `job` if it is queued or running; whether it was. Blocking.
fn cancel_if_live(scheduler: &str, job: &Job) -> Result<bool> {
    if job.live() {
        request(scheduler, "PATCH", &format!("/api/job/{}", job.job_id))?;
    }
    Ok(job.live())
}

/// `METHOD path` on the scheduler at `http://host:port`; the body of a 200 answer. Blocking,
/// with a 10 s bound, so that it also works while a query is being dropped.
fn request(scheduler: &str, method: &str, path: &str) -> Result<String> {
    request_if_found(scheduler, method, path)?.ok_or_else(|| {
        Error::Execution(format!(
            "{method} {path} on {scheduler}: HTTP/1.1 404 Not Found"
        ))
    })
}

/// As [`request`], with `None` for a 404 answer.
fn request_if_found(scheduler: &str, method: &str, path: &str) -> Result<Option<String>> {
    use std::io::{Read, Write};
    let host = scheduler
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let failed = |e: String| Error::Execution(format!("{method} {path} on {host}: {e}"));
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| failed("unknown host".into()))?;
    let limit = Duration::from_secs(10);
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, limit).map_err(|e| failed(e.to_string()))?;
    stream
        .set_read_timeout(Some(limit))
        .and_then(|_| stream.set_write_timeout(Some(limit)))
        .map_err(|e| failed(e.to_string()))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| failed(e.to_string()))?;
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .map_err(|e| failed(e.to_string()))?;
    let text = String::from_utf8_lossy(&bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| failed("not an HTTP answer".into()))?;
    let status = head.lines().next().unwrap_or("");
    if status.contains(" 404") {
        return Ok(None);
    }
    if !status.contains(" 200") {
        return Err(failed(status.to_string()));
    }
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Ok(Some(if chunked {
        dechunk(body)
    } else {
        body.to_string()
    }))
}

fn jobs(scheduler: &str) -> Result<Vec<Job>> {
    let body = request(scheduler, "GET", "/api/jobs")?;
    serde_json::from_str(&body)
        .map_err(|e| Error::Execution(format!("unexpected job list from the scheduler: {e}")))
}

/// A job on a cluster, known by the unique name its query gave it; reads the job's progress
/// from the scheduler.
#[derive(Debug)]
pub struct ClusterJob {
    scheduler: String,
    name: String,
}

/// How far a cluster job has got, from its scheduler.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStats {
    /// `Queued`, `Running`, `Completed`, `Failed`.
    pub status: String,
    /// Stages in the job.
    pub stages: usize,
    /// Stages finished.
    pub stages_done: usize,
    /// Tasks running now.
    pub tasks_running: usize,
    /// Tasks finished.
    pub tasks_done: usize,
    /// Rows read from datasets: the input rows of the stages that scan one, less what they
    /// read from other stages (a broadcast join's build side, once per task).
    pub rows_scanned: u64,
    /// The scheduler's id of the job.
    pub job_id: String,
    /// Each stage that the scheduler has planned, in stage order.
    pub stage_list: Vec<StageStats>,
    /// The job's latest tasks (at most [`TASK_WINDOW`]), for a task stream.
    pub task_stream: Vec<TaskSpan>,
}

/// Tasks a job's task stream keeps: its latest, so that a job of 100,000 tasks sends a
/// bounded answer.
pub const TASK_WINDOW: usize = 1000;

/// One stage of a cluster job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageStats {
    /// Its id within the job.
    pub id: String,
    /// `UnResolved`, `Resolved`, `Running`, `Successful`, `Failed`.
    pub status: String,
    /// Its tasks, once it started.
    pub tasks: usize,
    /// Tasks running now.
    pub tasks_running: usize,
    /// Tasks finished.
    pub tasks_done: usize,
    /// Tasks that failed.
    pub tasks_failed: usize,
    /// Rows its tasks read.
    pub input_rows: u64,
    /// Rows it wrote for the next stage.
    pub output_rows: u64,
    /// Shuffled bytes it fetched from other executors (decoded). Ballista counts no bytes for
    /// the shuffle files a task reads on its own executor, so a stage that reads only those
    /// shows 0.
    pub shuffle_bytes_fetched: u64,
    /// The stages it reads from.
    pub inputs: Vec<String>,
    /// From its first task's start to its last task's end (or now), as plans show times.
    pub elapsed: Option<String>,
    /// Bytes its finished tasks wrote for the next stage.
    pub shuffle_bytes_written: u64,
    /// Bytes its finished tasks' operators spilled to disk.
    pub spilled_bytes: u64,
}

/// One task of a job's task stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpan {
    /// The stage it belongs to.
    pub stage: String,
    /// Its partitions.
    pub partitions: Vec<u32>,
    /// When an executor started it, in milliseconds since the Unix epoch.
    pub start_ms: u64,
    /// When it ended; `None` while it runs.
    pub end_ms: Option<u64>,
    /// Running, done or failed.
    pub state: TaskState,
    /// The executor that runs or ran it (a failed task's status does not say).
    pub executor: Option<String>,
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// An executor runs it.
    Running,
    /// It finished and wrote its output.
    Done,
    /// It failed (and may run again).
    Failed,
}

impl ClusterJob {
    pub(crate) fn new(scheduler: &str, name: &str) -> Self {
        ClusterJob {
            scheduler: scheduler.to_string(),
            name: name.to_string(),
        }
    }

    /// The scheduler's entry for the job, found by its name (unique per query; a query
    /// that ran again has several, and the one still running is the one that counts).
    fn find(&self) -> Result<Option<Job>> {
        let mut named: Vec<Job> = jobs(&self.scheduler)?
            .into_iter()
            .filter(|j| j.job_name == self.name)
            .collect();
        let live = named.iter().position(Job::live);
        Ok(match live {
            Some(i) => Some(named.swap_remove(i)),
            None => named.pop(),
        })
    }

    /// Cancel the job if it is queued or running. Blocking.
    pub(crate) fn cancel(&self) -> Result<()> {
        if let Some(job) = self.find()? {
            cancel_if_live(&self.scheduler, &job)?;
        }
        Ok(())
    }

    /// The job's progress now; `None` until the scheduler knows the job. Blocking (two
    /// requests to the scheduler, each bounded).
    pub fn stats(&self) -> Result<Option<JobStats>> {
        match self.find()? {
            Some(job) => stats_of(&self.scheduler, &job).map(Some),
            None => Ok(None),
        }
    }
}

/// `job`'s progress, with its stages read from the scheduler now. Blocking.
fn stats_of(scheduler: &str, job: &Job) -> Result<JobStats> {
    match request_if_found(scheduler, "GET", &scheduler_api::job_path(&job.job_id))? {
        Some(body) => serde_json::from_str(&body).map_err(|e| {
            Error::Execution(format!("unexpected job progress from the scheduler: {e}"))
        }),
        // A job still being planned has no stages yet.
        None => Ok(JobStats {
            status: job.status.clone(),
            stages: job.num_stages,
            stages_done: job.completed_stages,
            job_id: job.job_id.clone(),
            ..JobStats::default()
        }),
    }
}

/// A job of the cluster, as its list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobSummary {
    /// The scheduler's id of the job.
    pub job_id: String,
    /// Its name (Strata names a job after its query).
    pub name: String,
    /// `Queued`, `Running`, `Completed`, `Failed`.
    pub status: String,
    /// Stages in the job.
    pub stages: usize,
    /// Stages finished.
    pub stages_done: usize,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// When it ended, once it has.
    pub ended_ms: Option<u64>,
}

/// The scheduler's jobs, newest first.
pub async fn job_list(scheduler: &str) -> Result<Vec<JobSummary>> {
    let scheduler = scheduler.to_string();
    let mut jobs = off_thread(move || jobs(&scheduler)).await?;
    jobs.sort_by_key(|j| std::cmp::Reverse(j.start_time));
    Ok(jobs
        .into_iter()
        .map(|j| JobSummary {
            job_id: j.job_id,
            name: j.job_name,
            status: j.status,
            stages: j.num_stages,
            stages_done: j.completed_stages,
            started_ms: j.start_time,
            ended_ms: (j.end_time > 0).then_some(j.end_time),
        })
        .collect())
}

/// The progress of the job `job_id` of the scheduler, with its stages and latest tasks;
/// `None` for a job it does not know.
pub async fn job_stats(scheduler: &str, job_id: &str) -> Result<Option<JobStats>> {
    let (scheduler, job_id) = (scheduler.to_string(), job_id.to_string());
    off_thread(
        move || match jobs(&scheduler)?.iter().find(|j| j.job_id == job_id) {
            Some(job) => stats_of(&scheduler, job).map(Some),
            None => Ok(None),
        },
    )
    .await
}

/// Cancel the job `job_id` if it is queued or running; whether it was.
pub async fn cancel_job(scheduler: &str, job_id: &str) -> Result<bool> {
    let (scheduler, job_id) = (scheduler.to_string(), job_id.to_string());
    off_thread(
        move || match jobs(&scheduler)?.iter().find(|j| j.job_id == job_id) {
            Some(job) => cancel_if_live(&scheduler, job),
            None => Ok(false),
        },
    )
    .await
}

/// The payload of a chunked HTTP body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The scheduler's jobs, newest first: id, name, status, stages done, start, seconds taken
/// (so far, for a running job).
pub async fn recent_jobs(scheduler: &str) -> Result<RecordBatch> {
    let jobs = job_list(scheduler).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let schema = Arc::new(Schema::new(vec![
        Field::new("job_id", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("stages", DataType::Utf8, false),
        Field::new(
            "started",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("seconds", DataType::Float64, true),
    ]));
    let text = |f: fn(&JobSummary) -> String| -> ArrayRef {
        Arc::new(StringArray::from(jobs.iter().map(f).collect::<Vec<_>>()))
    };
    let columns: Vec<ArrayRef> = vec![
        text(|j| j.job_id.clone()),
        text(|j| j.name.clone()),
        text(|j| j.status.clone()),
        text(|j| format!("{}/{}", j.stages_done, j.stages)),
        Arc::new(
            TimestampMillisecondArray::from(
                jobs.iter()
                    .map(|j| (j.started_ms > 0).then_some(j.started_ms as i64))
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(Float64Array::from(
            jobs.iter()
                .map(|j| {
                    (j.started_ms > 0).then(|| {
                        let end = j.ended_ms.unwrap_or(now);
                        end.saturating_sub(j.started_ms) as f64 / 1000.0
                    })
                })
                .collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema, columns).map_err(|e| Error::Execution(e.to_string()))
}

/// An executor its scheduler knows, from the scheduler's REST API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecutorInfo {
    /// The executor's id.
    pub id: String,
    /// Where it serves its shuffle files.
    pub host: String,
    /// Its Flight port.
    pub port: u16,
    /// Tasks it runs at once, as it announced.
    pub slots: Option<u64>,
    /// Its last heartbeat, in milliseconds since the Unix epoch (second precision).
    pub last_seen_ms: Option<u64>,
    /// Memory its process uses, from its last heartbeat.
    pub memory_used: Option<u64>,
    /// The memory of its machine.
    pub memory_total: Option<u64>,
    /// The most memory its process has used.
    pub memory_peak: Option<u64>,
    /// Tasks it runs now.
    pub running_tasks: Option<u64>,
    /// Bytes its tasks spilled to disk, over the jobs the scheduler keeps.
    pub spilled_bytes: Option<u64>,
}

/// The executors the scheduler at `scheduler` (`http://host:port`) knows now; an executor it
/// declared dead is no longer among them.
pub async fn executors(scheduler: &str) -> Result<Vec<ExecutorInfo>> {
    let scheduler = scheduler.to_string();
    let (body, load) = off_thread(move || {
        let body = request(&scheduler, "GET", "/api/executors")?;
        // Tasks and spill per executor, from a Strata scheduler (another has no such route).
        let load = request_if_found(&scheduler, "GET", scheduler_api::EXECUTORS_PATH)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_str::<scheduler_api::ExecutorLoad>(&b).ok());
        Ok((body, load))
    })
    .await?;
    let unexpected =
        |e: String| Error::Execution(format!("unexpected executor list from the scheduler: {e}"));
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&body).map_err(|e| unexpected(e.to_string()))?;
    listed
        .iter()
        .map(|e| {
            let metric = |name: &str| {
                e["metrics"].as_array().and_then(|ms| {
                    ms.iter()
                        .find(|m| m["type"] == name)
                        .and_then(|m| m["value"].as_u64())
                })
            };
            let id = e["id"]
                .as_str()
                .ok_or_else(|| unexpected("an executor without an id".into()))?
                .to_string();
            Ok(ExecutorInfo {
                running_tasks: load
                    .as_ref()
                    .map(|l| l.running.get(&id).copied().unwrap_or(0) as u64),
                spilled_bytes: load
                    .as_ref()
                    .map(|l| l.spilled_bytes.get(&id).copied().unwrap_or(0)),
                id,
                host: e["host"].as_str().unwrap_or_default().to_string(),
                port: e["port"].as_u64().unwrap_or_default() as u16,
                slots: e["specification"]["vcores"].as_u64(),
                last_seen_ms: e["last_seen"].as_u64(),
                memory_used: metric("proc_physical_memory"),
                memory_total: metric("total_memory"),
                memory_peak: metric("peak_physical_memory"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk("4\r\n[{\"a\r\n3\r\n\":1\r\n2\r\n}]\r\n0\r\n\r\n"),
            "[{\"a\":1}]"
        );
    }
}
