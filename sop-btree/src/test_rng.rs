//! A seeded xorshift generator for the unit tests' random cases.

/// Numbers below `n` from a xorshift64 sequence started at `seed`
/// (nonzero): the same cases on every run.
pub(crate) fn below(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}
