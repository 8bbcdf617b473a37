//! Send-rate control for the C2D sender: a fixed limit (GCRA token bucket plus a sliding-window cap,
//! so no 1-second window ever holds more sends than the limit), AIMD adaptation on throttling, and a
//! capped exponential backoff with jitter.
//!
//! Everything takes `now` explicitly (`tokio::time::Instant`), so it follows tokio's clock in the
//! client (and its paused clock in tests) and can be tested on a virtual clock.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// The window of the hard cap: one second plus a 10 ms margin, so that send-time jitter on the way
/// to the hub (sends leaving a few ms late and arriving together) cannot put more than the limit into
/// any 1-second window as the hub sees it. It costs at most 1% of the rate.
const WINDOW: Duration = Duration::from_millis(1010);
/// Lowest adaptive rate (sends/s) AIMD goes down to.
pub const MIN_ADAPTIVE_RATE: f64 = 1.0;
/// After a decrease, further throttling replies within this time do not decrease again (a burst
/// of in-flight messages all throttled is one congestion signal).
pub const DECREASE_HOLDOFF: Duration = Duration::from_secs(1);
/// Additive increase happens once per this period without throttling.
pub const INCREASE_PERIOD: Duration = Duration::from_secs(1);

/// Rate limiter: `None` limits mean "no limit".
#[derive(Debug)]
pub struct RateLimiter {
    fixed: Option<f64>,
    adaptive: Option<f64>,
    /// Additive-increase step, set at each decrease.
    step: f64,
    last_decrease: Option<Instant>,
    last_increase: Instant,
    /// GCRA theoretical arrival time.
    tat: Option<Instant>,
    /// Send instants of the last second.
    recent: VecDeque<Instant>,
}

impl RateLimiter {
    /// `max_per_second == 0` means no fixed limit (adapt to throttling only).
    pub fn new(max_per_second: u32, now: Instant) -> Self {
        RateLimiter {
            fixed: (max_per_second > 0).then_some(max_per_second as f64),
            adaptive: None,
            step: 1.0,
            last_decrease: None,
            last_increase: now,
            tat: None,
            recent: VecDeque::new(),
        }
    }

    /// The rate in force (sends/s), `None` when unlimited.
    pub fn rate(&self) -> Option<f64> {
        match (self.fixed, self.adaptive) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn trim(&mut self, now: Instant) {
        while let Some(&t) = self.recent.front() {
            if now.duration_since(t) >= WINDOW {
                self.recent.pop_front();
            } else {
                break;
            }
        }
    }

    /// Sends recorded during the last second.
    pub fn sends_last_second(&mut self, now: Instant) -> usize {
        self.trim(now);
        self.recent.len()
    }

    /// `Ok(())` when a send may go now, else the instant to try again.
    pub fn check(&mut self, now: Instant) -> Result<(), Instant> {
        self.maybe_increase(now);
        self.trim(now);
        let Some(rate) = self.rate() else {
            return Ok(());
        };
        // Hard cap: never more than floor(rate) sends in any 1-second window.
        let cap = (rate.floor() as usize).max(1);
        if self.recent.len() >= cap {
            let oldest = self.recent[self.recent.len() - cap];
            return Err(oldest + WINDOW);
        }
        // GCRA: sends spaced 1/rate apart on average, with a small burst tolerance so late timer
        // wake-ups are caught up instead of lost.
        let interval = Duration::from_secs_f64(1.0 / rate);
        let tolerance = interval.mul_f64((rate / 50.0).floor().max(0.0));
        if let Some(tat) = self.tat {
            if tat > now + tolerance {
                return Err(tat - tolerance);
            }
        }
        Ok(())
    }

    /// Records one send at `now` (call after a successful `check`).
    pub fn record(&mut self, now: Instant) {
        self.recent.push_back(now);
        if let Some(rate) = self.rate() {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let base = match self.tat {
                Some(t) if t > now => t,
                _ => now,
            };
            self.tat = Some(base + interval);
        } else {
            self.tat = None;
        }
        // Keep memory bounded when unlimited.
        if self.rate().is_none() && self.recent.len() > 1_000_000 {
            self.recent.pop_front();
        }
    }

    /// The peer throttled us: multiplicative decrease (halve the rate actually achieved).
    pub fn on_throttled(&mut self, now: Instant) {
        if let Some(t) = self.last_decrease {
            if now.duration_since(t) < DECREASE_HOLDOFF {
                return;
            }
        }
        let observed = self.sends_last_second(now) as f64;
        let current = self.rate().unwrap_or(f64::INFINITY).min(observed.max(1.0));
        let new = (current / 2.0).max(MIN_ADAPTIVE_RATE);
        self.adaptive = Some(new);
        self.step = (current * 0.05).max(1.0);
        self.last_decrease = Some(now);
        self.last_increase = now;
        // Re-space from now at the new rate.
        self.tat = None;
    }

    fn maybe_increase(&mut self, now: Instant) {
        let Some(r) = self.adaptive else { return };
        let elapsed = now.duration_since(self.last_increase);
        if elapsed >= INCREASE_PERIOD {
            let periods = (elapsed.as_secs_f64() / INCREASE_PERIOD.as_secs_f64()).floor();
            self.adaptive = Some(r + self.step * periods);
            self.last_increase += INCREASE_PERIOD.mul_f64(periods);
        }
    }

    /// The adaptive rate, if throttling has set one.
    pub fn adaptive_rate(&self) -> Option<f64> {
        self.adaptive
    }
}

/// The shared backoff (`worker::backoff`), re-exported where the C2D client always found it.
pub use crate::worker::backoff::Backoff;

#[cfg(test)]
mod tests {
    //! The limiter takes `now` as an argument, so these tests run on a virtual clock (equivalent to
    //! tokio's paused clock, without needing tokio's `test-util` feature).
    use super::*;

    /// Sends as fast as the limiter allows for `dur` of virtual time from `t0`; every wake-up comes
    /// 0.7 ms late, as a real timer's would. Returns the send instants.
    fn drive(lim: &mut RateLimiter, t0: Instant, dur: Duration) -> Vec<Instant> {
        let mut now = t0;
        let mut sent = Vec::new();
        while now - t0 < dur {
            match lim.check(now) {
                Ok(()) => {
                    lim.record(now);
                    sent.push(now);
                }
                Err(at) => {
                    assert!(at > now, "wake time must be in the future");
                    now = at + Duration::from_micros(700);
                }
            }
        }
        sent
    }

    fn max_window(sent: &[Instant]) -> usize {
        let mut best = 0;
        let mut j = 0;
        for i in 0..sent.len() {
            while sent[i] - sent[j] >= WINDOW {
                j += 1;
            }
            best = best.max(i - j + 1);
        }
        best
    }

    #[test]
    fn fixed_rate_is_met_and_never_exceeded_in_any_window() {
        let t0 = Instant::now();
        let mut lim = RateLimiter::new(500, t0);
        let sent = drive(&mut lim, t0, Duration::from_secs(10));
        let rate = sent.len() as f64 / 10.0;
        assert!((rate - 500.0).abs() / 500.0 < 0.02, "rate {rate}");
        assert!(max_window(&sent) <= 500, "window {}", max_window(&sent));
    }

    #[test]
    fn small_fixed_rate_is_spaced() {
        let t0 = Instant::now();
        let mut lim = RateLimiter::new(3, t0);
        let sent = drive(&mut lim, t0, Duration::from_secs(3));
        assert!(max_window(&sent) <= 3);
        assert!((8..=10).contains(&sent.len()), "{}", sent.len());
        for w in sent.windows(2) {
            assert!(
                w[1] - w[0] >= Duration::from_millis(300),
                "{:?}",
                w[1] - w[0]
            );
        }
    }

    #[test]
    fn unlimited_until_throttled_then_aimd() {
        let t0 = Instant::now();
        let mut lim = RateLimiter::new(0, t0);
        assert_eq!(lim.rate(), None);
        for _ in 0..1000 {
            assert!(lim.check(t0).is_ok());
            lim.record(t0);
        }
        let now = t0 + Duration::from_millis(500);
        lim.on_throttled(now);
        // 1000 sends in the last second observed -> halved.
        assert_eq!(lim.rate(), Some(500.0));
        // A second signal right away is the same congestion event.
        lim.on_throttled(now);
        assert_eq!(lim.rate(), Some(500.0));
        // Additive increase: +5% of 1000 per second without throttling.
        let later = now + Duration::from_secs(2);
        let _ = lim.check(later);
        assert_eq!(lim.rate(), Some(600.0));
        // Throttled again: halves what was achieved (nothing sent in the last second -> floor).
        lim.on_throttled(later);
        assert_eq!(lim.rate(), Some(MIN_ADAPTIVE_RATE));
    }

    #[test]
    fn adaptive_never_exceeds_fixed() {
        let t0 = Instant::now();
        let mut lim = RateLimiter::new(100, t0);
        let sent = drive(&mut lim, t0, Duration::from_secs(2));
        assert!(max_window(&sent) <= 100);
        let t1 = *sent.last().unwrap();
        lim.on_throttled(t1);
        assert!(lim.rate().unwrap() <= 50.0, "{:?}", lim.rate());
        let _ = lim.check(t1 + Duration::from_secs(100));
        assert_eq!(lim.rate(), Some(100.0), "capped by the fixed limit");
    }

    #[test]
    fn adaptive_rate_is_enforced_after_throttling() {
        let t0 = Instant::now();
        let mut lim = RateLimiter::new(0, t0);
        for _ in 0..200 {
            lim.record(t0);
        }
        lim.on_throttled(t0 + Duration::from_millis(10));
        assert_eq!(lim.rate(), Some(100.0));
        let t1 = t0 + Duration::from_secs(1);
        let sent = drive(&mut lim, t1, Duration::from_millis(900));
        // One additive step (+10/s) happened at t1: ~110/s for 0.9 s plus the small burst allowance.
        assert!((85..=105).contains(&sent.len()), "{}", sent.len());
    }
}
