//! A memory pool of one query: its operators' reservations count against the query's own
//! limit and against the engine's pool, which all queries share. A query over its limit spills
//! or fails alone; the others keep what they have.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, human_readable_size,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};

/// One query's share of the engine's memory pool.
#[derive(Debug)]
pub struct QueryPool {
    shared: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
}

impl QueryPool {
    /// A pool of at most `limit` bytes, taken from `shared`.
    pub fn new(shared: Arc<dyn MemoryPool>, limit: usize) -> Self {
        QueryPool {
            shared,
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// `runtime` with its memory pool replaced by a pool of `limit` bytes taken from it.
    pub fn runtime(runtime: &RuntimeEnv, limit: usize) -> Result<Arc<RuntimeEnv>> {
        let pool = Arc::new(QueryPool::new(runtime.memory_pool.clone(), limit));
        RuntimeEnvBuilder::from_runtime_env(runtime)
            .with_memory_pool(pool)
            .build_arc()
    }
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "query(used: {}, limit: {}) within {}",
            human_readable_size(self.reserved()),
            human_readable_size(self.limit),
            self.shared
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::SeqCst);
        self.shared.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::SeqCst);
        self.shared.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let taken = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(additional).filter(|n| *n <= self.limit)
            })
            .map_err(|used| {
                DataFusionError::ResourcesExhausted(format!(
                    "Failed to allocate additional {} for {} with {} already allocated for this \
                     reservation - {} remain available for this query of {}",
                    human_readable_size(additional),
                    reservation.consumer().name(),
                    human_readable_size(reservation.size()),
                    human_readable_size(self.limit.saturating_sub(used)),
                    human_readable_size(self.limit),
                ))
            });
        taken?;
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::SeqCst);
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    fn memory_limit(&self) -> MemoryLimit {
        match self.shared.memory_limit() {
            MemoryLimit::Finite(shared) => MemoryLimit::Finite(shared.min(self.limit)),
            _ => MemoryLimit::Finite(self.limit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    #[test]
    fn a_query_takes_no_more_than_its_limit_and_gives_back_what_it_frees() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let first = Arc::new(QueryPool::new(shared.clone(), 600)) as Arc<dyn MemoryPool>;
        let second = Arc::new(QueryPool::new(shared.clone(), 600)) as Arc<dyn MemoryPool>;
        let a = MemoryConsumer::new("a").register(&first);
        let b = MemoryConsumer::new("b").register(&second);
        a.try_grow(500).unwrap();
        let e = a.try_grow(200).unwrap_err().to_string();
        assert!(e.contains("remain available for this query"), "{e}");
        assert_eq!(first.reserved(), 500);
        // The shared pool has 500 left; the second query is held by it, then by its own.
        b.try_grow(500).unwrap();
        assert!(b.try_grow(100).is_err());
        assert_eq!(shared.reserved(), 1000);
        assert_eq!(second.reserved(), 500);
        a.shrink(300);
        b.try_grow(100).unwrap();
        assert!(
            b.try_grow(1).is_err(),
            "the second query's own limit is 600"
        );
        drop(a);
        assert_eq!(first.reserved(), 0);
        assert_eq!(shared.reserved(), 600);
    }
}
