//! When to probe: pure functions of the interval, the last schedule, `now` and a jitter value in
//! `[0, 1)` (from [`crate::core::backoff::jitter`]), so that the spread is a unit test.

use std::time::Duration;

use tokio::time::Instant;

use crate::core::backoff::Backoff;

/// Longest wait before re-probing an unhealthy endpoint whose credential was just replaced
/// (a re-signed token should show as healthy promptly).
pub const RECHECK_SPREAD: Duration = Duration::from_secs(5);
/// First delay after a 429 without `Retry-After` (the interval, if shorter).
pub const RATE_LIMIT_BASE: Duration = Duration::from_secs(2);

/// Offset of an endpoint's first probe within its interval: spread uniformly, so that many
/// TenantAccesses registered together (operator start) do not probe at once.
#[must_use]
pub fn first_probe_offset(interval: Duration, jitter: f64) -> Duration {
    interval.mul_f64(jitter.clamp(0.0, 1.0))
}

/// The next probe after one scheduled at `scheduled` (finished by `now`): one interval later,
/// skipping the slots already missed, so the endpoint keeps its place in the spread.
#[must_use]
pub fn next_due(scheduled: Instant, interval: Duration, now: Instant) -> Instant {
    let next = scheduled + interval;
    if next > now || interval.is_zero() {
        return next.max(now);
    }
    let missed = (now.duration_since(next).as_secs_f64() / interval.as_secs_f64()).floor() + 1.0;
    next + interval.mul_f64(missed)
}

/// The delay after the `consecutive`-th 429 in a row (1-based): at least `Retry-After`, growing
/// exponentially with jitter, but not beyond the interval unless `Retry-After` says so.
#[must_use]
pub fn rate_limited_delay(
    retry_after: Option<Duration>,
    consecutive: u32,
    interval: Duration,
    jitter: f64,
) -> Duration {
    let retry_after = retry_after.unwrap_or_default();
    let base = retry_after.max(RATE_LIMIT_BASE.min(interval));
    let backoff = Backoff { base, cap: interval.max(base) };
    backoff.delay(consecutive.max(1), jitter).max(retry_after)
}

/// The delay before re-probing an unhealthy endpoint after its credential changed.
#[must_use]
pub fn recheck_delay(interval: Duration, jitter: f64) -> Duration {
    interval.min(RECHECK_SPREAD).mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::backoff::jitter;

    const INTERVAL: Duration = Duration::from_secs(300);

    #[test]
    fn first_probes_spread_over_the_whole_interval() {
        let offsets: Vec<Duration> =
            (0..1000).map(|i| first_probe_offset(INTERVAL, jitter(&format!("ns/access-{i}")))).collect();
        assert!(offsets.iter().all(|o| *o < INTERVAL));
        // Every tenth of the interval gets some of the 1000 first probes, none gets most of them.
        let mut per_tenth = [0_u32; 10];
        for offset in &offsets {
            let tenth = (offset.as_secs_f64() / INTERVAL.as_secs_f64() * 10.0).floor();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let tenth = (tenth as usize).min(9);
            per_tenth[tenth] += 1;
        }
        assert!(per_tenth.iter().all(|n| (40..=200).contains(n)), "{per_tenth:?}");
    }

    #[test]
    fn next_probe_keeps_its_place_in_the_interval() {
        let start = Instant::now();
        let scheduled = start + Duration::from_secs(17);
        // Finished quickly: one interval after the scheduled time, not after the finish.
        assert_eq!(next_due(scheduled, INTERVAL, scheduled + Duration::from_secs(2)), scheduled + INTERVAL);
        // Finished (or queued) past several slots: the next slot still in the future.
        let late = scheduled + INTERVAL * 2 + Duration::from_secs(1);
        assert_eq!(next_due(scheduled, INTERVAL, late), scheduled + INTERVAL * 3);
    }

    #[test]
    fn rate_limits_back_off_from_retry_after_up_to_the_interval() {
        let one = Duration::from_secs(1);
        let first = rate_limited_delay(Some(one), 1, INTERVAL, 0.0);
        assert!(first >= one && first <= RATE_LIMIT_BASE, "{first:?}");
        let later = rate_limited_delay(Some(one), 4, INTERVAL, 0.0);
        assert!(later > first, "{later:?} after {first:?}");
        assert!(rate_limited_delay(Some(one), 30, INTERVAL, 0.999) <= INTERVAL);
        // A long Retry-After is honoured even beyond the interval.
        let long = Duration::from_secs(900);
        assert!(rate_limited_delay(Some(long), 1, INTERVAL, 0.0) >= long);
        // No header: the base delay.
        assert!(rate_limited_delay(None, 1, INTERVAL, 0.0) >= one);
    }

    #[test]
    fn rechecks_after_a_new_credential_come_within_seconds() {
        assert!(recheck_delay(INTERVAL, 0.999) <= RECHECK_SPREAD);
        assert!(recheck_delay(Duration::from_secs(1), 0.999) <= Duration::from_secs(1));
    }
}
