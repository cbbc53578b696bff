//! When Tinybird's refusal of an admin token becomes the workspace's verdict (`Unauthorized`).
//!
//! A routine rotation refreshes the admin token at Tinybird a moment before the new one reaches
//! the Secret: in between, Tinybird refuses the key the Secret still holds, although nothing is
//! wrong that the next seconds will not fix. A refusal is therefore a verdict only once it is
//! confirmed: the same key (the Secret did not change) still refused [`REFUSAL_GRACE`] after it
//! was first refused. Until then the workspace keeps its last verdict, raises no alarm and checks
//! again when the grace ends; a new key in the Secret starts afresh. The grace costs nothing in
//! safety: tokens signed with a refused key are refused by Tinybird anyway.

use std::time::Duration;

use jiff::Timestamp;

/// How long a refused key may stay in its Secret before the refusal is the workspace's verdict:
/// a rotation writes the new key within seconds of refreshing it at Tinybird.
pub const REFUSAL_GRACE: Duration = Duration::from_secs(10);

/// What Tinybird answered when asked about a key (`GET /v1/workspace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAnswer {
    /// The key is accepted.
    Accepted,
    /// The key is refused (401/403).
    Refused,
}

/// A refusal not confirmed yet: the key refused and when it was first refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRefusal {
    /// Fingerprint of the refused key.
    pub fingerprint: String,
    /// When Tinybird first refused it.
    pub since: Timestamp,
}

/// The verdict on a key after one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyVerdict {
    /// Accepted: any pending refusal is forgotten.
    Accepted,
    /// Refused, possibly mid-rotation: keep the last verdict, remember `pending`, and ask again
    /// in `recheck_in` (when the grace ends).
    Pending {
        /// The refusal to remember.
        pending: PendingRefusal,
        /// When to ask Tinybird again.
        recheck_in: Duration,
    },
    /// Refused for the whole grace with the key unchanged: the workspace is `Unauthorized`.
    Refused,
}

/// Judges Tinybird's `answer` about the key `fingerprint` at `now`, given the refusal pending
/// for the workspace, if any.
#[must_use]
pub fn judge(
    answer: KeyAnswer,
    fingerprint: &str,
    pending: Option<&PendingRefusal>,
    now: Timestamp,
    grace: Duration,
) -> KeyVerdict {
    if answer == KeyAnswer::Accepted {
        return KeyVerdict::Accepted;
    }
    // A refusal of another key (the Secret changed since) says nothing about this one.
    let since = pending.filter(|p| p.fingerprint == fingerprint).map_or(now, |p| p.since);
    let refused_for = Duration::try_from(now.duration_since(since)).unwrap_or_default();
    if refused_for >= grace {
        return KeyVerdict::Refused;
    }
    KeyVerdict::Pending {
        pending: PendingRefusal { fingerprint: fingerprint.to_owned(), since },
        recheck_in: grace - refused_for,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + second).unwrap()
    }

    fn pending(fingerprint: &str, since: Timestamp) -> PendingRefusal {
        PendingRefusal { fingerprint: fingerprint.to_owned(), since }
    }

    #[test]
    fn an_accepted_key_is_accepted_whatever_was_pending() {
        assert_eq!(judge(KeyAnswer::Accepted, "sha256:a", None, at(0), REFUSAL_GRACE), KeyVerdict::Accepted);
        let old = pending("sha256:a", at(0));
        assert_eq!(
            judge(KeyAnswer::Accepted, "sha256:a", Some(&old), at(30), REFUSAL_GRACE),
            KeyVerdict::Accepted
        );
    }

    #[test]
    fn a_first_refusal_is_not_a_verdict_and_is_checked_again_when_the_grace_ends() {
        assert_eq!(
            judge(KeyAnswer::Refused, "sha256:a", None, at(0), REFUSAL_GRACE),
            KeyVerdict::Pending { pending: pending("sha256:a", at(0)), recheck_in: REFUSAL_GRACE }
        );
    }

    #[test]
    fn a_refusal_within_the_grace_keeps_the_first_refusal_time() {
        let first = pending("sha256:a", at(0));
        assert_eq!(
            judge(KeyAnswer::Refused, "sha256:a", Some(&first), at(4), REFUSAL_GRACE),
            KeyVerdict::Pending { pending: first, recheck_in: REFUSAL_GRACE - Duration::from_secs(4) }
        );
    }

    #[test]
    fn the_same_key_still_refused_after_the_grace_is_the_verdict() {
        let first = pending("sha256:a", at(0));
        let end = i64::try_from(REFUSAL_GRACE.as_secs()).unwrap();
        assert_eq!(
            judge(KeyAnswer::Refused, "sha256:a", Some(&first), at(end), REFUSAL_GRACE),
            KeyVerdict::Refused
        );
        assert_eq!(
            judge(KeyAnswer::Refused, "sha256:a", Some(&first), at(end + 600), REFUSAL_GRACE),
            KeyVerdict::Refused
        );
    }

    #[test]
    fn a_new_key_in_the_secret_starts_its_own_grace() {
        let old_key = pending("sha256:old", at(0));
        assert_eq!(
            judge(KeyAnswer::Refused, "sha256:new", Some(&old_key), at(60), REFUSAL_GRACE),
            KeyVerdict::Pending { pending: pending("sha256:new", at(60)), recheck_in: REFUSAL_GRACE }
        );
    }

    #[test]
    fn without_a_grace_a_refusal_is_the_verdict_at_once() {
        assert_eq!(judge(KeyAnswer::Refused, "sha256:a", None, at(0), Duration::ZERO), KeyVerdict::Refused);
    }
}
