//! The one retry/backoff helper: exponential with full jitter, capped.

use std::time::Duration;

/// Backoff policy.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay after the first failure.
    pub base: Duration,
    /// Upper bound of the delay.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_secs(2), cap: Duration::from_secs(300) }
    }
}

impl Backoff {
    /// The delay after `attempts` consecutive failures (1-based), with `jitter` in `[0, 1)`
    /// spreading it over `[delay/2, delay)` so that many objects failing together do not retry
    /// together.
    #[must_use]
    pub fn delay(&self, attempts: u32, jitter: f64) -> Duration {
        let exponent = attempts.saturating_sub(1).min(20);
        let uncapped = self.base.saturating_mul(1_u32 << exponent);
        let delay = uncapped.min(self.cap);
        let jitter = jitter.clamp(0.0, 1.0);
        delay.mul_f64(0.5 + jitter / 2.0)
    }
}

/// Backoff of the watch streams after an error (the API server unreachable, a watch refused):
/// short, so that the operator sees the cluster again within seconds of the API server's return.
/// (Watches are retried by one stream each; an outage costs one request per stream per delay.)
pub const WATCH: Backoff = Backoff { base: Duration::from_millis(250), cap: Duration::from_secs(2) };

/// Backoff of a controller whose watch streams each have their own [`WATCH`] backoff: short and
/// constant, so that the streams' delays are not added up.
pub const WATCH_MERGED: Backoff =
    Backoff { base: Duration::from_millis(100), cap: Duration::from_millis(100) };

/// The delays of a sequence of consecutive failures under a policy: the iterator a retry loop
/// (or a watch stream) takes its next delay from. [`Retries::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Retries {
    policy: Backoff,
    attempts: u32,
}

impl Retries {
    /// No failure yet.
    #[must_use]
    pub const fn new(policy: Backoff) -> Self {
        Self { policy, attempts: 0 }
    }

    /// A success: the next failure starts from the base delay again.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }

    /// Consecutive failures so far.
    #[must_use]
    pub const fn attempts(&self) -> u32 {
        self.attempts
    }
}

impl Iterator for Retries {
    type Item = Duration;

    /// Records one more failure: the delay before the next attempt. Never ends.
    fn next(&mut self) -> Option<Duration> {
        self.attempts = self.attempts.saturating_add(1);
        Some(self.policy.delay(self.attempts, jitter(&format!("retries/{}", self.attempts))))
    }
}

/// A jitter value in `[0, 1)` from the system clock's sub-second noise and a key, cheap and good
/// enough to spread retries (not for cryptography).
///
/// In this crate's unit tests it depends on the key alone, so that a timing test is the same on
/// every run (a test may compute where a key falls) instead of failing on one run in many.
#[must_use]
pub fn jitter(key: &str) -> f64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    #[cfg(not(test))]
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    #[cfg(test)]
    let mut hasher =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().build_hasher();
    hasher.write(key.as_bytes());
    #[cfg(not(test))]
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    #[allow(clippy::cast_precision_loss)]
    let fraction = (hasher.finish() >> 11) as f64 / (1_u64 << 53) as f64;
    fraction
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_and_caps() {
        let backoff = Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(60) };
        assert_eq!(backoff.delay(1, 0.999_999), Duration::from_secs(1).mul_f64(0.999_999_5));
        assert_eq!(backoff.delay(3, 0.0), Duration::from_secs(2));
        assert_eq!(backoff.delay(100, 0.0), Duration::from_secs(30));
        assert!(backoff.delay(100, 0.999) < Duration::from_secs(60));
    }

    #[test]
    fn each_delay_lies_in_the_upper_half_of_its_doubling_step_up_to_the_cap() {
        let backoff = Backoff { base: Duration::from_secs(2), cap: Duration::from_secs(300) };
        let steps = [2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300];
        for (attempts, step) in (1..).zip(steps) {
            let step = Duration::from_secs(step);
            for jitter in [0.0, 0.25, 0.5, 0.999] {
                let delay = backoff.delay(attempts, jitter);
                assert!(delay >= step / 2 && delay < step, "attempt {attempts}: {delay:?} for {step:?}");
            }
        }
        // Out-of-range jitter is clamped, and huge attempt counts do not overflow.
        assert_eq!(backoff.delay(1, -3.0), Duration::from_secs(1));
        assert_eq!(backoff.delay(1, 7.0), Duration::from_secs(2));
        assert!(backoff.delay(u32::MAX, 0.5) <= Duration::from_secs(300));
    }

    #[test]
    fn retries_grow_with_each_failure_and_start_over_after_a_success() {
        let mut retries = Retries::new(Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(8) });
        let delays: Vec<Duration> = retries.by_ref().take(6).collect();
        let steps = [1, 2, 4, 8, 8, 8].map(Duration::from_secs);
        for (delay, step) in delays.iter().zip(steps) {
            assert!(*delay >= step / 2 && *delay < step, "{delays:?}");
        }
        assert_eq!(retries.attempts(), 6);
        retries.reset();
        assert_eq!(retries.attempts(), 0);
        let first = retries.next().unwrap_or_default();
        assert!(first >= Duration::from_millis(500) && first < Duration::from_secs(1), "{first:?}");
    }

    #[test]
    fn a_watch_retries_within_seconds_however_long_the_outage() {
        let mut retries = Retries::new(WATCH);
        // A long outage: hundreds of failed attempts in a row.
        let delays: Vec<Duration> = retries.by_ref().take(500).collect();
        assert!(delays.iter().all(|d| *d < WATCH.cap), "{:?}", delays.iter().max());
        assert!(delays[0] < Duration::from_millis(250));
        // Spread, not lockstep: the capped delays differ.
        let capped: std::collections::BTreeSet<Duration> = delays[10..].iter().copied().collect();
        assert!(capped.len() > 100, "only {} distinct delays", capped.len());
    }

    #[test]
    fn jitter_is_a_fraction() {
        for i in 0..100 {
            let j = jitter(&i.to_string());
            assert!((0.0..1.0).contains(&j));
        }
    }
}
