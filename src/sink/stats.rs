//! Optional recording of send latencies (time from the last transfer of a message to its
//! settlement), off by default; the sink benchmark turns it on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

static ENABLED: AtomicBool = AtomicBool::new(false);
static SAMPLES: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Starts or stops recording (process-wide, all sink tasks).
pub fn record_latencies(on: bool) {
    ENABLED.store(on, Ordering::SeqCst);
}

pub(crate) fn record(d: Duration) {
    if ENABLED.load(Ordering::Relaxed) {
        let us = d.as_micros().min(u32::MAX as u128) as u32;
        SAMPLES.lock().unwrap().push(us);
    }
}

/// The recorded latencies in microseconds (and forgets them).
pub fn take_latencies() -> Vec<u32> {
    std::mem::take(&mut *SAMPLES.lock().unwrap())
}

/// The `q` quantile (0..=1) of `samples` in milliseconds (0 when empty).
pub fn quantile_ms(samples: &mut [u32], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let i = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[i] as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let mut s: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(quantile_ms(&mut s, 0.5), 51.0);
        assert_eq!(quantile_ms(&mut s, 0.99), 99.0);
        assert_eq!(quantile_ms(&mut [], 0.5), 0.0);
    }
}
