//! Helpers shared by the library's unit tests.

/// A repeatable stream of pseudo-random numbers (xorshift from `seed`, not zero): each call
/// `next(n)` gives one below `n`.
pub(crate) fn numbers(seed: u64) -> impl Fn(u64) -> u64 {
    let state = std::cell::Cell::new(seed);
    move |n| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x % n
    }
}
