//! Settings of mimalloc, the allocator of the `strata` binary and of the benchmarks, chosen at
//! startup by the programs that use it.

/// mimalloc's option number for its purge delay (`mi_option_purge_delay` in mimalloc 3's
/// `mimalloc.h`; the Rust bindings do not name it).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the process before mimalloc hands it back to the
/// system, unless `MIMALLOC_PURGE_DELAY` says otherwise.
///
/// mimalloc's default is one second. A query's hash tables and buffers are freed when it
/// ends; when the next query comes later than that, the kernel must zero every page of them
/// again on first write. TPC-H SF1 in a long-running engine took 0.95 of its time with ten
/// seconds, in two side-by-side runs (BENCHMARKS.md, "Freed memory kept ten seconds"); a
/// process at rest still gives its memory back.
pub const PURGE_DELAY_MS: i64 = 10_000;

/// Keep freed memory for [`PURGE_DELAY_MS`] before returning it to the system (see there).
/// For a program whose global allocator is mimalloc; call it first thing in `main`.
pub fn keep_freed_memory_a_while() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options; it reads them as it runs.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS as _) };
    }
}

/// mimalloc's purge delay now, in milliseconds.
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads one of mimalloc's options.
    unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_is_the_option_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // mimalloc 3's default for the option numbered here: the number names it.
        assert_eq!(purge_delay_ms(), 1000);
        keep_freed_memory_a_while();
        assert_eq!(purge_delay_ms(), PURGE_DELAY_MS);
    }
}
