//! Process-wide source metrics: enqueued-time → Kafka-acknowledgement latency, recorded when enabled
//! (the benchmark turns it on; it costs two atomic adds per record).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Buckets of 1 ms up to 10 s, then one overflow bucket.
const BUCKETS: usize = 10_001;

static ENABLED: AtomicBool = AtomicBool::new(false);
static HIST: [AtomicU64; BUCKETS] = [const { AtomicU64::new(0) }; BUCKETS];
static ACKED: AtomicU64 = AtomicU64::new(0);

/// Starts recording (and clears what was recorded).
pub fn enable_latency() {
    reset();
    ENABLED.store(true, Ordering::SeqCst);
}

pub fn reset() {
    for b in HIST.iter() {
        b.store(0, Ordering::Relaxed);
    }
    ACKED.store(0, Ordering::SeqCst);
}

/// Records one acknowledged record enqueued (in the hub) at `enqueued_ms` since the epoch.
pub fn record_ack_latency(enqueued_ms: i64) {
    ACKED.fetch_add(1, Ordering::Relaxed);
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let ms = (now - enqueued_ms).clamp(0, (BUCKETS - 1) as i64) as usize;
    HIST[ms].fetch_add(1, Ordering::Relaxed);
}

/// Records acknowledged by Kafka since start (or the last reset), all source tasks of the process.
pub fn acked() -> u64 {
    ACKED.load(Ordering::SeqCst)
}

/// The `q` quantile (0..=1) of the recorded latencies in ms, None when nothing was recorded.
pub fn latency_quantile_ms(q: f64) -> Option<u64> {
    let counts: Vec<u64> = HIST.iter().map(|b| b.load(Ordering::Relaxed)).collect();
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (ms, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(ms as u64);
        }
    }
    None
}
