//! The Workers page's figures: the executors of the engine's cluster as its scheduler reports
//! them, those that left marked dead; or, for a local engine, this process.

use std::collections::BTreeMap;
use std::sync::Mutex;

use datafusion::execution::memory_pool::MemoryLimit;
use serde::Serialize;

use super::now_ms;
use crate::Engine;
use crate::cluster::ExecutorInfo;
use crate::monitor::QueryState;

/// Where the engine's queries run, and each worker's figures.
#[derive(Debug, Serialize)]
pub(super) struct Workers {
    /// `cluster` or `local`.
    kind: &'static str,
    /// The scheduler's address, on a cluster.
    scheduler: Option<String>,
    workers: Vec<Worker>,
    /// Why the scheduler could not be asked, if it could not (the workers are then those
    /// last seen).
    error: Option<String>,
}

/// One worker: an executor of the cluster, or this process.
#[derive(Debug, Clone, Serialize)]
struct Worker {
    id: String,
    host: String,
    port: Option<u16>,
    /// `alive`, or `dead` for an executor the scheduler no longer lists.
    state: &'static str,
    slots: Option<u64>,
    /// Tasks running on an executor, or queries running in this process.
    running: Option<u64>,
    memory_used: Option<u64>,
    memory_total: Option<u64>,
    memory_peak: Option<u64>,
    spilled_bytes: Option<u64>,
    /// Last heartbeat, in milliseconds since the Unix epoch.
    last_seen_ms: Option<u64>,
    /// When the dashboard first saw it not listed, for a dead executor.
    gone_ms: Option<u64>,
}

/// The executors seen so far, so that one that left can still be shown, marked dead.
#[derive(Debug, Default)]
pub(super) struct Seen(Mutex<BTreeMap<String, Worker>>);

/// Executors remembered after they left, at most.
const KEEP_DEAD: usize = 100;

impl Seen {
    /// The workers of `engine` now.
    pub(super) async fn workers(&self, engine: &Engine) -> Workers {
        let Some(scheduler) = engine.runner().scheduler() else {
            return Workers {
                kind: "local",
                scheduler: None,
                workers: vec![this_process(engine)],
                error: None,
            };
        };
        let listed = crate::cluster::executors(scheduler).await;
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let error = match listed {
            Ok(listed) => {
                self.update(&mut seen, listed, now_ms());
                None
            }
            Err(e) => Some(e.to_string()),
        };
        Workers {
            kind: "cluster",
            scheduler: Some(scheduler.trim_start_matches("http://").to_string()),
            workers: seen.values().cloned().collect(),
            error,
        }
    }

    /// Record the executors listed at `now`; those seen before and not listed are dead.
    fn update(&self, seen: &mut BTreeMap<String, Worker>, listed: Vec<ExecutorInfo>, now: u64) {
        for worker in seen.values_mut() {
            if worker.state == "alive" && !listed.iter().any(|e| e.id == worker.id) {
                worker.state = "dead";
                worker.gone_ms = Some(now);
            }
        }
        for e in listed {
            seen.insert(
                e.id.clone(),
                Worker {
                    id: e.id,
                    host: e.host,
                    port: Some(e.port),
                    state: "alive",
                    slots: e.slots,
                    running: e.running_tasks,
                    memory_used: e.memory_used,
                    memory_total: e.memory_total,
                    memory_peak: e.memory_peak,
                    spilled_bytes: e.spilled_bytes,
                    last_seen_ms: e.last_seen_ms,
                    gone_ms: None,
                },
            );
        }
        // Forget the longest dead beyond the bound.
        let mut dead: Vec<(u64, String)> = seen
            .values()
            .filter(|w| w.state == "dead")
            .map(|w| (w.gone_ms.unwrap_or(0), w.id.clone()))
            .collect();
        if dead.len() > KEEP_DEAD {
            dead.sort();
            for (_, id) in &dead[..dead.len() - KEEP_DEAD] {
                seen.remove(id);
            }
        }
    }
}

/// This process as the one worker of a local engine: its threads, running queries, the
/// memory its queries hold, and what they spilled.
fn this_process(engine: &Engine) -> Worker {
    let runtime = engine.session().runtime_env();
    let pool = &runtime.memory_pool;
    let queries = engine.monitor().list();
    let running = queries
        .iter()
        .filter(|q| matches!(q.state, QueryState::Planning | QueryState::Running))
        .count() as u64;
    let spilled = queries.iter().map(|q| q.spilled_bytes).sum();
    Worker {
        id: "local".into(),
        host: "this process".into(),
        port: None,
        state: "alive",
        slots: Some(engine.session().state().config().target_partitions() as u64),
        running: Some(running),
        memory_used: Some(pool.reserved() as u64),
        memory_total: match pool.memory_limit() {
            MemoryLimit::Finite(n) => Some(n as u64),
            _ => None,
        },
        memory_peak: None,
        spilled_bytes: Some(spilled),
        last_seen_ms: Some(now_ms()),
        gone_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executor(id: &str) -> ExecutorInfo {
        ExecutorInfo {
            id: id.into(),
            host: "127.0.0.1".into(),
            port: 1,
            slots: Some(2),
            last_seen_ms: Some(5),
            memory_used: None,
            memory_total: None,
            memory_peak: None,
            running_tasks: Some(1),
            spilled_bytes: None,
        }
    }

    #[test]
    fn an_executor_that_leaves_is_marked_dead_and_one_that_returns_alive() {
        let seen = Seen::default();
        let mut map = BTreeMap::new();
        seen.update(&mut map, vec![executor("a"), executor("b")], 10);
        seen.update(&mut map, vec![executor("b")], 20);
        assert_eq!(map["a"].state, "dead");
        assert_eq!(map["a"].gone_ms, Some(20));
        assert_eq!(map["b"].state, "alive");
        seen.update(&mut map, vec![executor("a"), executor("b")], 30);
        assert_eq!(map["a"].state, "alive");
        assert_eq!(map["a"].gone_ms, None);
    }

    #[test]
    fn dead_executors_are_remembered_up_to_a_bound() {
        let seen = Seen::default();
        let mut map = BTreeMap::new();
        for i in 0..KEEP_DEAD + 5 {
            seen.update(&mut map, vec![executor(&format!("e{i:04}"))], i as u64);
        }
        seen.update(&mut map, vec![], 10_000);
        assert_eq!(map.len(), KEEP_DEAD);
        assert!(map.values().all(|w| w.state == "dead"));
    }
}
