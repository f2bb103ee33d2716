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
    if !status.contains(" 200") {
        return Err(failed(status.to_string()));
    }
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Ok(if chunked {
        dechunk(body)
    } else {
        body.to_string()
    })
}

fn jobs(scheduler: &str) -> Result<Vec<Job>> {
    let body = request(scheduler, "GET", "/api/jobs")?;
    serde_json::from_str(&body)
        .map_err(|e| Error::Execution(format!("unexpected job list from the scheduler: {e}")))
}

/// Cancel the queued or running jobs named `name` (names are unique per query). Blocking.
pub(crate) fn cancel_named(scheduler: &str, name: &str) -> Result<usize> {
    let mut cancelled = 0;
    for job in jobs(scheduler)? {
        if job.job_name == name && (job.status == "Running" || job.status == "Queued") {
            request(scheduler, "PATCH", &format!("/api/job/{}", job.job_id))?;
            cancelled += 1;
        }
    }
    Ok(cancelled)
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
    use super::dechunk;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk("4\r\n[{\"a\r\n3\r\n\":1\r\n2\r\n}]\r\n0\r\n\r\n"),
            "[{\"a\":1}]"
        );
    }
}
