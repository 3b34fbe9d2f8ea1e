//! The one wall-clock seam. Record timestamps (segment age, LogAppendTime) come from here, never
//! from `SystemTime::now()` elsewhere. Under madsim the system clock is the simulator's, so a seed
//! replays the same timestamps.

/// Milliseconds since the Unix epoch. Under madsim, on the current node's own clock, which the
/// simulation may set running fast or slow (`crate::rt::drift`).
pub fn wall_clock_ms() -> i64 {
    let ms = match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    };
    #[cfg(madsim)]
    let ms = ms.saturating_add(crate::rt::drift::offset_ms());
    ms
}
