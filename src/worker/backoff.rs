//! The one capped exponential backoff of the code base (reconnects, retries, queue-full waits).
//!
//! Invariants: attempt `n` (0-based) never waits more than `min(max, initial · 2^n)` (the
//! *ceiling*); [`Backoff::delay`] adds "equal jitter" (a value in `[ceiling/2, ceiling]`) so that many
//! clients retrying at once spread out; [`Attempts`] is the stateful form for loops that reset on
//! success.

use std::time::Duration;

/// Capped exponential backoff with "equal jitter": attempt n waits in `[d/2, d]` where
/// `d = min(max, initial * 2^n)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max }
    }

    /// The upper bound for `attempt` (0-based), without jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(30));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// A jittered delay for `attempt`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let d = self.ceiling(attempt);
        let half = d / 2;
        let extra = if half.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(rand::random_range(0..=half.as_nanos() as u64))
        };
        half + extra
    }

    /// A stateful counter over this policy.
    pub fn attempts(self) -> Attempts {
        Attempts {
            policy: self,
            attempt: 0,
        }
    }
}

/// A retry loop's position in a [`Backoff`]: [`Attempts::step`] returns the next wait (the
/// un-jittered ceiling) and advances; [`Attempts::reset`] starts over after a success.
#[derive(Clone, Copy, Debug)]
pub struct Attempts {
    policy: Backoff,
    attempt: u32,
}

impl Attempts {
    /// The next wait (the ceiling of the current attempt), then advances.
    pub fn step(&mut self) -> Duration {
        let d = self.policy.ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// The next wait with jitter, then advances.
    pub fn step_jittered(&mut self) -> Duration {
        let d = self.policy.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// How many waits were taken since the last reset.
    pub fn count(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(10), Duration::from_secs(5));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(5));
        for attempt in 0..12 {
            for _ in 0..50 {
                let d = b.delay(attempt);
                assert!(d >= b.ceiling(attempt) / 2 && d <= b.ceiling(attempt));
            }
        }
    }

    #[test]
    fn attempts_double_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30)).attempts();
        let v: Vec<u128> = (0..12).map(|_| b.step().as_millis()).collect();
        assert_eq!(&v[..5], &[100, 200, 400, 800, 1600]);
        assert_eq!(*v.last().unwrap(), 30_000);
        assert_eq!(b.count(), 12);
        b.reset();
        assert_eq!(b.step().as_millis(), 100);
        let j = b.step_jittered();
        assert!(j >= Duration::from_millis(100) && j <= Duration::from_millis(200));
    }
}
