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
    /// The most `used` has been.
    peak: AtomicUsize,
}

impl QueryPool {
    /// A pool of at most `limit` bytes (`None`: as much as `shared` has), taken from
    /// `shared`.
    pub fn new(shared: Arc<dyn MemoryPool>, limit: Option<usize>) -> Self {
        QueryPool {
            shared,
            limit: limit.unwrap_or(usize::MAX),
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// `runtime` with its memory pool replaced by a pool of `limit` bytes taken from it,
    /// and that pool.
    pub fn runtime(
        runtime: &RuntimeEnv,
        limit: Option<usize>,
    ) -> Result<(Arc<RuntimeEnv>, Arc<QueryPool>)> {
        let pool = Arc::new(QueryPool::new(runtime.memory_pool.clone(), limit));
        let runtime = RuntimeEnvBuilder::from_runtime_env(runtime)
            .with_memory_pool(pool.clone())
            .build_arc()?;
        Ok((runtime, pool))
    }

    /// The most memory the query has held at once, in bytes.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn note_peak(&self, used: usize) {
        self.peak.fetch_max(used, Ordering::Relaxed);
    }
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used = human_readable_size(self.reserved());
        if self.limit == usize::MAX {
            return write!(f, "query(used: {used}) within {}", self.shared);
        }
        let limit = human_readable_size(self.limit);
        write!(
            f,
            "query(used: {used}, limit: {limit}) within {}",
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
        let before = self.used.fetch_add(additional, Ordering::SeqCst);
        self.note_peak(before.saturating_add(additional));
        self.shared.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::SeqCst);
        self.shared.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let before = self
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
            })?;
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::SeqCst);
            return Err(e);
        }
        self.note_peak(before.saturating_add(additional));
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    fn memory_limit(&self) -> MemoryLimit {
        if self.limit == usize::MAX {
            return self.shared.memory_limit();
        }
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
        let first = Arc::new(QueryPool::new(shared.clone(), Some(600))) as Arc<dyn MemoryPool>;
        let second = Arc::new(QueryPool::new(shared.clone(), Some(600))) as Arc<dyn MemoryPool>;
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

    #[test]
    fn an_unlimited_pool_keeps_its_peak_and_the_shared_limit() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let pool = Arc::new(QueryPool::new(shared.clone(), None));
        let as_pool = pool.clone() as Arc<dyn MemoryPool>;
        assert!(matches!(as_pool.memory_limit(), MemoryLimit::Finite(1000)));
        let a = MemoryConsumer::new("a").register(&as_pool);
        a.try_grow(300).unwrap();
        a.grow(400);
        a.shrink(600);
        a.try_grow(100).unwrap();
        assert_eq!(pool.reserved(), 200);
        assert_eq!(pool.peak(), 700);
        // Beyond what the shared pool has, it fails there and nothing is counted.
        assert!(a.try_grow(900).is_err());
        assert_eq!(pool.reserved(), 200);
        assert_eq!(pool.peak(), 700);
    }
}
