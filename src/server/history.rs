//! The `strata.queries` table: the server's running and recent queries — who ran them, their
//! SQL, state, times, rows and bytes sent, and the error of those that failed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::error::Result;

use crate::Engine;
use crate::monitor::forget_oldest_ended;
use crate::snapshot::SnapshotTable;

/// How a query ended, or that it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Started, its result not yet read to the end.
    Running,
    /// Its result was read to the end.
    Finished,
    /// It failed; the entry holds the error.
    Failed,
    /// Cancelled by the client, a time limit, or the client leaving.
    Cancelled,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Finished => "finished",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    user: Option<String>,
    sql: String,
    state: State,
    started: SystemTime,
    ended: Option<SystemTime>,
    rows: u64,
    bytes: u64,
    error: Option<String>,
}

/// The running queries and the most recent ended ones.
#[derive(Debug)]
pub struct QueryLog {
    entries: Mutex<VecDeque<Entry>>,
    keep: usize,
}

impl QueryLog {
    /// A log keeping the last `keep` ended queries (running ones are always kept).
    pub fn new(keep: usize) -> Self {
        QueryLog {
            entries: Mutex::default(),
            keep,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A query started.
    pub fn started(&self, id: u64, user: Option<&str>, sql: &str) {
        let mut entries = self.entries();
        entries.push_back(Entry {
            id,
            user: user.map(str::to_string),
            sql: sql.to_string(),
            state: State::Running,
            started: SystemTime::now(),
            ended: None,
            rows: 0,
            bytes: 0,
            error: None,
        });
        forget_oldest_ended(&mut entries, self.keep, |e| e.state != State::Running);
    }

    /// A query ended, having sent `rows` rows and `bytes` bytes.
    pub fn ended(&self, id: u64, state: State, rows: u64, bytes: u64, error: Option<String>) {
        if let Some(e) = self.entries().iter_mut().find(|e| e.id == id) {
            e.state = state;
            e.ended = Some(SystemTime::now());
            e.rows = rows;
            e.bytes = bytes;
            e.error = error;
        }
        forget_oldest_ended(&mut self.entries(), self.keep, |e| {
            e.state != State::Running
        });
    }

    fn schema() -> SchemaRef {
        let time = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("user_name", DataType::Utf8, true),
            Field::new("sql", DataType::Utf8, false),
            Field::new("state", DataType::Utf8, false),
            Field::new("started", time.clone(), false),
            Field::new("ended", time, true),
            Field::new("seconds", DataType::Float64, false),
            Field::new("rows_sent", DataType::Int64, false),
            Field::new("bytes_sent", DataType::Int64, false),
            Field::new("error", DataType::Utf8, true),
        ]))
    }

    pub(super) fn batch(&self) -> Result<RecordBatch> {
        let entries: Vec<Entry> = self.entries().iter().cloned().collect();
        let micros = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0)
        };
        let now = SystemTime::now();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(
                entries.iter().map(|e| e.id as i64),
            )),
            Arc::new(StringArray::from_iter(
                entries.iter().map(|e| e.user.clone()),
            )),
            Arc::new(StringArray::from_iter_values(
                entries.iter().map(|e| &e.sql),
            )),
            Arc::new(StringArray::from_iter_values(
                entries.iter().map(|e| e.state.name()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    entries.iter().map(|e| micros(e.started)),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(
                TimestampMicrosecondArray::from_iter(entries.iter().map(|e| e.ended.map(micros)))
                    .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from_iter_values(entries.iter().map(|e| {
                e.ended
                    .unwrap_or(now)
                    .duration_since(e.started)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0)
            }))),
            Arc::new(Int64Array::from_iter_values(
                entries.iter().map(|e| e.rows as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                entries.iter().map(|e| e.bytes as i64),
            )),
            Arc::new(StringArray::from_iter(
                entries.iter().map(|e| e.error.clone()),
            )),
        ];
        Ok(RecordBatch::try_new(Self::schema(), columns)?)
    }

    /// Make the log queryable as `strata.queries` in `engine`.
    pub fn register(self: &Arc<Self>, engine: &Engine) -> Result<()> {
        let Some(catalog) = engine.session().catalog("datafusion") else {
            return Ok(());
        };
        let schema = match catalog.schema("strata") {
            Some(s) => s,
            None => {
                let s = Arc::new(MemorySchemaProvider::new());
                catalog.register_schema("strata", s.clone())?;
                s
            }
        };
        schema.register_table(
            "queries".into(),
            Arc::new(SnapshotTable::new(QueryLog::schema(), {
                let log = self.clone();
                Arc::new(move || log.batch())
            })),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_queries_stay_and_old_ended_ones_go() {
        let log = QueryLog::new(2);
        log.started(1, Some("ana"), "SELECT 1");
        log.started(2, None, "SELECT 2");
        log.ended(2, State::Finished, 1, 8, None);
        log.started(3, None, "SELECT 3");
        log.ended(3, State::Failed, 0, 0, Some("boom".into()));
        log.started(4, None, "SELECT 4");
        log.ended(4, State::Cancelled, 0, 0, None);
        let batch = log.batch().unwrap();
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .values()
            .to_vec();
        // 1 still runs; of the ended ones the last two are kept.
        assert_eq!(ids, vec![1, 3, 4]);
        let states = batch
            .column(3)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(states.value(0), "running");
        assert_eq!(states.value(1), "failed");
    }
}
