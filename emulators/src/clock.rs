//! The emulators' time source. Tests move it instead of sleeping: token expiry, `nbf`, rate-limit
//! windows and the Clerk request budget all read this clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::sync::lock;

/// A shareable clock: the system time plus an offset, or frozen at an instant.
///
/// Clones share state, so one clock can drive both emulators and the test that signs tokens.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    mode: Arc<Mutex<Mode>>,
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    System { offset_ms: i64 },
    Frozen { at_ms: i64 },
}

impl Default for Mode {
    fn default() -> Self {
        Mode::System { offset_ms: 0 }
    }
}

impl Clock {
    /// The real time.
    #[must_use]
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock frozen at `unix_secs`; it moves only through [`Clock::advance`] and [`Clock::set`].
    #[must_use]
    pub fn frozen_at(unix_secs: i64) -> Self {
        let clock = Self::default();
        clock.set(unix_secs);
        clock
    }

    /// A clock frozen at the current whole second.
    #[must_use]
    pub fn frozen_now() -> Self {
        Self::frozen_at(system_millis().div_euclid(1000))
    }

    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub fn now_millis(&self) -> i64 {
        match *lock(&self.mode) {
            Mode::System { offset_ms } => system_millis().saturating_add(offset_ms),
            Mode::Frozen { at_ms } => at_ms,
        }
    }

    /// Whole seconds since the Unix epoch (rounded down).
    #[must_use]
    pub fn now_secs(&self) -> i64 {
        self.now_millis().div_euclid(1000)
    }

    /// Moves the clock forward (a frozen clock stays frozen, a running one gains an offset).
    pub fn advance(&self, by: Duration) {
        let by_ms = duration_millis(by);
        let mut mode = lock(&self.mode);
        *mode = match *mode {
            Mode::System { offset_ms } => Mode::System { offset_ms: offset_ms.saturating_add(by_ms) },
            Mode::Frozen { at_ms } => Mode::Frozen { at_ms: at_ms.saturating_add(by_ms) },
        };
    }

    /// Freezes the clock at `unix_secs`.
    pub fn set(&self, unix_secs: i64) {
        self.set_millis(unix_secs.saturating_mul(1000));
    }

    /// Freezes the clock at `unix_millis`.
    pub fn set_millis(&self, unix_millis: i64) {
        *lock(&self.mode) = Mode::Frozen { at_ms: unix_millis };
    }

    /// Lets the clock run with the system time again (dropping any offset).
    pub fn resume_system(&self) {
        *lock(&self.mode) = Mode::default();
    }

    /// Whether the clock is frozen.
    #[must_use]
    pub fn is_frozen(&self) -> bool {
        matches!(*lock(&self.mode), Mode::Frozen { .. })
    }
}

pub(crate) fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn system_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, duration_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_clock_moves_only_when_told() {
        let clock = Clock::frozen_at(1_000);
        assert_eq!(clock.now_secs(), 1_000);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now_millis(), 1_001_500);
        assert_eq!(clock.now_secs(), 1_001);
    }

    #[test]
    fn clones_share_time() {
        let clock = Clock::frozen_at(5);
        let other = clock.clone();
        other.set(42);
        assert_eq!(clock.now_secs(), 42);
    }

    #[test]
    fn system_clock_advances_by_offset() {
        let clock = Clock::system();
        let before = clock.now_secs();
        clock.advance(Duration::from_secs(3600));
        assert!(clock.now_secs() >= before + 3600);
        assert!(!clock.is_frozen());
    }
}
