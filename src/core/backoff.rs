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

/// A jitter value in `[0, 1)` from the system clock's sub-second noise and a key, cheap and good
/// enough to spread retries (not for cryptography).
#[must_use]
pub fn jitter(key: &str) -> f64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(key.as_bytes());
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
    fn jitter_is_a_fraction() {
        for i in 0..100 {
            let j = jitter(&i.to_string());
            assert!((0.0..1.0).contains(&j));
        }
    }
}
