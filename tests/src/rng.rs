//! A seeded xorshift generator for tests that try many random inputs:
//! repeatable, and no dependency for it.

/// `next(m)`: the next number below `m` (`m` > 0).
pub fn below(mut seed: u64) -> impl FnMut(u64) -> u64 {
    seed |= 1;
    move |m| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m
    }
}
