//! Recent jobs of a cluster, read from its scheduler's REST API.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, Float64Array, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use serde::Deserialize;

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
}

#[derive(Debug, Deserialize)]
struct Stages {
    stages: Vec<Stage>,
}

#[derive(Debug, Deserialize)]
struct Stage {
    #[serde(default)]
    stage_id: String,
    input_rows: u64,
    #[serde(default)]
    output_rows: u64,
    #[serde(default)]
    stage_plan: Option<String>,
    #[serde(default)]
    tasks: Vec<Option<Task>>,
}

#[derive(Debug, Deserialize)]
struct Task {
    /// `"Running"`, `"Successful"` or `{"Failed": {...}}`.
    status: serde_json::Value,
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
        let live = named
            .iter()
            .position(|j| j.status == "Running" || j.status == "Queued");
        Ok(match live {
            Some(i) => Some(named.swap_remove(i)),
            None => named.pop(),
        })
    }

    /// Cancel the job if it is queued or running. Blocking.
    pub(crate) fn cancel(&self) -> Result<()> {
        if let Some(job) = self.find()?
            && (job.status == "Running" || job.status == "Queued")
        {
            request(
                &self.scheduler,
                "PATCH",
                &format!("/api/job/{}", job.job_id),
            )?;
        }
        Ok(())
    }

    /// The job's progress now; `None` until the scheduler knows the job. Blocking (two
    /// requests to the scheduler, each bounded).
    pub fn stats(&self) -> Result<Option<JobStats>> {
        let Some(job) = self.find()? else {
            return Ok(None);
        };
        // A job still being planned has no stages yet.
        let path = format!("/api/job/{}/stages", job.job_id);
        let stages = match request_if_found(&self.scheduler, "GET", &path)? {
            Some(body) => serde_json::from_str(&body).map_err(|e| {
                Error::Execution(format!("unexpected stages from the scheduler: {e}"))
            })?,
            None => Stages { stages: Vec::new() },
        };
        Ok(Some(summarize(&job, &stages)))
    }
}

fn summarize(job: &Job, stages: &Stages) -> JobStats {
    let mut stats = JobStats {
        status: job.status.clone(),
        stages: job.num_stages.max(stages.stages.len()),
        stages_done: job.completed_stages,
        ..JobStats::default()
    };
    for stage in &stages.stages {
        for task in stage.tasks.iter().flatten() {
            match task.status.as_str() {
                Some("Running") => stats.tasks_running += 1,
                Some("Successful") => stats.tasks_done += 1,
                _ => {}
            }
        }
        // Only stages that have started have a plan.
        if let Some(plan) = stage.stage_plan.as_deref()
            && plan.contains("DataSourceExec")
        {
            let tasks = stage.tasks.len().max(1) as u64;
            let from_stages: u64 = plan
                .lines()
                .filter_map(|line| {
                    let rest = line.split("ShuffleReaderExec: upstream_stage: ").nth(1)?;
                    let id = rest.split(',').next()?.trim();
                    let upstream = stages.stages.iter().find(|s| s.stage_id == id)?;
                    // A broadcast is read whole by every task; a shuffle once in all.
                    let reads = if rest.contains("broadcast: true") {
                        tasks
                    } else {
                        1
                    };
                    Some(upstream.output_rows * reads)
                })
                .sum();
            stats.rows_scanned += stage.input_rows.saturating_sub(from_stages);
        }
    }
    stats
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
    let scheduler_owned = scheduler.to_string();
    let mut jobs = tokio::task::spawn_blocking(move || jobs(&scheduler_owned))
        .await
        .map_err(|e| Error::Execution(e.to_string()))??;
    jobs.sort_by_key(|j| std::cmp::Reverse(j.start_time));
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
    let text = |f: fn(&Job) -> String| -> ArrayRef {
        Arc::new(StringArray::from(jobs.iter().map(f).collect::<Vec<_>>()))
    };
    let columns: Vec<ArrayRef> = vec![
        text(|j| j.job_id.clone()),
        text(|j| j.job_name.clone()),
        text(|j| j.status.clone()),
        text(|j| format!("{}/{}", j.completed_stages, j.num_stages)),
        Arc::new(
            TimestampMillisecondArray::from(
                jobs.iter()
                    .map(|j| (j.start_time > 0).then_some(j.start_time as i64))
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(Float64Array::from(
            jobs.iter()
                .map(|j| {
                    (j.start_time > 0).then(|| {
                        let end = if j.end_time > 0 { j.end_time } else { now };
                        end.saturating_sub(j.start_time) as f64 / 1000.0
                    })
                })
                .collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema, columns).map_err(|e| Error::Execution(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_add_up_to_job_progress() {
        let job: Job = serde_json::from_str(
            r#"{"job_id":"a1","job_name":"t (1.1)","job_status":"Running","status":"Running",
                "num_stages":3,"completed_stages":1,"percent_complete":33,
                "start_time":5,"end_time":0}"#,
        )
        .unwrap();
        let stages: Stages = serde_json::from_str(
            r#"{"stages":[
              {"stage_id":"1","stage_status":"Successful","input_rows":1000,"output_rows":40,
               "stage_plan":"ShuffleWriterExec\n  DataSourceExec: file_groups={2 groups}",
               "tasks":[{"id":0,"status":"Successful"},{"id":1,"status":"Successful"}]},
              {"stage_id":"2","stage_status":"Running","input_rows":300,"output_rows":0,
               "stage_plan":"ShuffleWriterExec\n  DataSourceExec: file_groups={2 groups}",
               "tasks":[{"id":2,"status":"Running"},
                        {"id":3,"status":{"Failed":{"reason":"x","error":"y"}}}]},
              {"stage_id":"3","stage_status":"Running","input_rows":750,"output_rows":0,
               "stage_plan":"ShuffleWriterExec\n  HashJoinExec\n    ShuffleReaderExec: upstream_stage: 1, broadcast: true, upstream_partitions: 2\n    DataSourceExec: file_groups={1 group}",
               "tasks":[{"id":4,"status":"Running"},{"id":5,"status":"Running"}]},
              {"stage_id":"4","stage_status":"Unresolved","input_rows":0,"output_rows":0,
               "tasks":[]}]}"#,
        )
        .unwrap();
        assert_eq!(
            summarize(&job, &stages),
            JobStats {
                status: "Running".into(),
                stages: 4,
                stages_done: 1,
                tasks_running: 3,
                tasks_done: 2,
                // Stage 3 read stage 1's 40 rows in each of its 2 tasks.
                rows_scanned: 1000 + 300 + 750 - 80,
            }
        );
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk("4\r\n[{\"a\r\n3\r\n\":1\r\n2\r\n}]\r\n0\r\n\r\n"),
            "[{\"a\":1}]"
        );
    }
}
