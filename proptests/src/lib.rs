//! keel-proptests: property tests live in `tests/`; this crate holds only what they share.

/// A suite's case count: `PROPTEST_CASES` when set (a longer hunt), else the suite's `default`,
/// chosen so that `./test` stays quick and still finds the canary bugs of the suite's piece.
pub fn cases(default: u32) -> u32 {
    env_or("PROPTEST_CASES", default)
}

/// A suite's bound on shrinking time in milliseconds: `PROPTEST_MAX_SHRINK_TIME` when set, else
/// `default`.
pub fn max_shrink_time_ms(default: u32) -> u32 {
    env_or("PROPTEST_MAX_SHRINK_TIME", default)
}

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
