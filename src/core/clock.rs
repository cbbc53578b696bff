//! The wall clock, injected: every decision that compares a wall-clock time (a token's expiry,
//! a Lease's renew time, an event series' window, a `Retry-After` date) reads [`Clock::now`]
//! instead of `Timestamp::now()`, so that a test can drive it.
//!
//! Durations (timeouts, intervals, backoff) use `tokio::time::Instant` and `tokio::time::sleep`,
//! which follow tokio's paused time (`#[tokio::test(start_paused = true)]`,
//! `tokio::time::advance`). [`Clock::following_tokio`] makes the wall clock follow the same
//! paused time, so that one `advance` moves both consistently.

use jiff::{SignedDuration, Timestamp};
use tokio::time::Instant;

/// A source of wall-clock time; cheap to copy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    /// `None`: the system clock. `Some((at, since))`: `at` plus tokio's time elapsed since `since`.
    tokio_origin: Option<(Timestamp, Instant)>,
}

impl Clock {
    /// The system clock.
    #[must_use]
    pub const fn system() -> Self {
        Self { tokio_origin: None }
    }

    /// A clock that reads `origin` now and advances with tokio's clock (paused in tests).
    #[must_use]
    pub fn following_tokio(origin: Timestamp) -> Self {
        Self { tokio_origin: Some((origin, Instant::now())) }
    }

    /// The current time.
    #[must_use]
    pub fn now(&self) -> Timestamp {
        match self.tokio_origin {
            None => Timestamp::now(),
            Some((origin, since)) => {
                let elapsed = SignedDuration::try_from(since.elapsed()).unwrap_or(SignedDuration::MAX);
                origin.saturating_add(elapsed).unwrap_or(Timestamp::MAX)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_only_with_tokio_time() {
        let origin: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock = Clock::following_tokio(origin);
        assert_eq!(clock.now(), origin);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), "2026-01-01T00:01:30Z".parse::<Timestamp>().unwrap());
        let copy = clock;
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(copy.now(), "2026-01-01T00:02:00Z".parse::<Timestamp>().unwrap());
    }
}
