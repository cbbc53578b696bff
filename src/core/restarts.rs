//! When the workloads that read a token restart: the pure decision behind
//! `spec.secret.rolloutRestartTargets`, `restartOn` and `restartMinInterval`.
//!
//! A workload's pod template records what it was last restarted for (annotations: the token
//! revision, the signing key's fingerprint, the claims hash, the time). Each reconcile compares
//! that record with the token in the Secret: the workload converges to the token like any other
//! output, a restart that failed or was deferred is made later, and nothing else is remembered.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

/// Pod-template annotation: the token revision the workload was restarted for.
pub const ANNOTATION_REVISION: &str = crate::core::well_known::ANNOTATION_REVISION;
/// Pod-template annotation: the fingerprint of the key that signed that token.
pub const ANNOTATION_KEY: &str = "tenantaccess.dev/restarted-for-key";
/// Pod-template annotation: the claims hash of that token.
pub const ANNOTATION_CLAIMS: &str = "tenantaccess.dev/restarted-for-claims";
/// Pod-template annotation: when the operator restarted the workload (RFC 3339).
pub const ANNOTATION_AT: &str = "tenantaccess.dev/restarted-at";

/// Which new tokens restart the workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartOn {
    /// Every new token: for apps that read the token once, at start (an environment variable).
    #[default]
    EveryToken,
    /// Only a new signing key or new claims: for apps that re-read the mounted file, for which
    /// a renewal needs no restart.
    KeyOrClaimsChange,
}

impl RestartOn {
    /// The spec's spelling.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "EveryToken" => Some(Self::EveryToken),
            "KeyOrClaimsChange" => Some(Self::KeyOrClaimsChange),
            _ => None,
        }
    }
}

/// A TenantAccess's restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestartPolicy {
    /// Which new tokens restart the workloads.
    pub on: RestartOn,
    /// The least time between two restarts of one workload.
    pub min_interval: Duration,
}

/// The token in the Secret, as a workload restart records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenIdentity<'a> {
    /// `status.token.revision`.
    pub revision: i64,
    /// The fingerprint of the signing key.
    pub key: &'a str,
    /// The claims hash.
    pub claims: &'a str,
}

/// What a workload's pod template says it was last restarted for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartedFor {
    /// Token revision.
    pub revision: Option<i64>,
    /// Key fingerprint.
    pub key: Option<String>,
    /// Claims hash.
    pub claims: Option<String>,
    /// When.
    pub at: Option<Timestamp>,
}

impl RestartedFor {
    /// Reads the record from a pod template's annotations (missing or unreadable parts are
    /// `None`).
    #[must_use]
    pub fn from_annotations(annotations: Option<&BTreeMap<String, String>>) -> Self {
        let get = |key: &str| annotations.and_then(|a| a.get(key)).cloned();
        Self {
            revision: get(ANNOTATION_REVISION).and_then(|v| v.parse().ok()),
            key: get(ANNOTATION_KEY),
            claims: get(ANNOTATION_CLAIMS),
            at: get(ANNOTATION_AT).and_then(|v| v.parse().ok()),
        }
    }
}

/// What to do with one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// It runs with what the policy asks for: nothing to do.
    UpToDate,
    /// Restart it now.
    Now,
    /// Restart it once this has passed (the minimum interval since its last restart).
    After(Duration),
}

/// Whether and when a workload restarts for `token`.
#[must_use]
pub fn decide(
    policy: RestartPolicy,
    token: TokenIdentity<'_>,
    restarted: &RestartedFor,
    now: Timestamp,
) -> RestartDecision {
    let wanted = match policy.on {
        RestartOn::EveryToken => restarted.revision != Some(token.revision),
        RestartOn::KeyOrClaimsChange => {
            restarted.key.as_deref() != Some(token.key) || restarted.claims.as_deref() != Some(token.claims)
        }
    };
    if !wanted {
        return RestartDecision::UpToDate;
    }
    let since = restarted.at.map(|at| Duration::try_from(now.duration_since(at)).unwrap_or_default());
    match since.and_then(|since| policy.min_interval.checked_sub(since)).filter(|left| !left.is_zero()) {
        Some(left) => RestartDecision::After(left),
        None => RestartDecision::Now,
    }
}

/// The pod-template annotations a restart for `token` writes.
#[must_use]
pub fn annotations(token: TokenIdentity<'_>, now: Timestamp) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ANNOTATION_REVISION.to_owned(), token.revision.to_string()),
        (ANNOTATION_KEY.to_owned(), token.key.to_owned()),
        (ANNOTATION_CLAIMS.to_owned(), token.claims.to_owned()),
        (ANNOTATION_AT.to_owned(), now.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap_or_default()
    }

    fn token(revision: i64, key: &'static str, claims: &'static str) -> TokenIdentity<'static> {
        TokenIdentity { revision, key, claims }
    }

    fn restarted_for(t: TokenIdentity<'_>, minutes_ago: i64) -> RestartedFor {
        let at = now().checked_sub(jiff::SignedDuration::from_mins(minutes_ago)).unwrap_or_default();
        RestartedFor::from_annotations(Some(&annotations(t, at)))
    }

    fn policy(on: RestartOn, min_minutes: u64) -> RestartPolicy {
        RestartPolicy { on, min_interval: Duration::from_secs(min_minutes * 60) }
    }

    #[test]
    fn every_token_restarts_for_each_new_revision_and_once_only() {
        let every = policy(RestartOn::EveryToken, 0);
        let first = token(1, "k1", "c1");
        assert_eq!(decide(every, first, &RestartedFor::default(), now()), RestartDecision::Now);
        assert_eq!(decide(every, first, &restarted_for(first, 1), now()), RestartDecision::UpToDate);
        // A renewal: same key and claims, a new revision.
        assert_eq!(
            decide(every, token(2, "k1", "c1"), &restarted_for(first, 40), now()),
            RestartDecision::Now
        );
    }

    #[test]
    fn key_or_claims_change_ignores_renewals_and_restarts_for_a_new_key_or_new_claims() {
        let on_change = policy(RestartOn::KeyOrClaimsChange, 0);
        let first = token(1, "k1", "c1");
        let was = restarted_for(first, 40);
        assert_eq!(decide(on_change, token(2, "k1", "c1"), &was, now()), RestartDecision::UpToDate);
        assert_eq!(decide(on_change, token(3, "k2", "c1"), &was, now()), RestartDecision::Now);
        assert_eq!(decide(on_change, token(3, "k1", "c2"), &was, now()), RestartDecision::Now);
        // Never restarted by the operator: once, to record what it runs with.
        assert_eq!(decide(on_change, first, &RestartedFor::default(), now()), RestartDecision::Now);
    }

    #[test]
    fn a_restart_sooner_than_the_minimum_interval_waits_for_the_rest_of_it() {
        let paced = policy(RestartOn::EveryToken, 10);
        let was = restarted_for(token(1, "k1", "c1"), 4);
        assert_eq!(
            decide(paced, token(2, "k1", "c1"), &was, now()),
            RestartDecision::After(Duration::from_secs(360))
        );
        let long_ago = restarted_for(token(1, "k1", "c1"), 11);
        assert_eq!(decide(paced, token(2, "k1", "c1"), &long_ago, now()), RestartDecision::Now);
        // Up to date is up to date, however recent.
        let just_now = restarted_for(token(2, "k1", "c1"), 0);
        assert_eq!(decide(paced, token(2, "k1", "c1"), &just_now, now()), RestartDecision::UpToDate);
    }

    #[test]
    fn the_record_reads_back_what_a_restart_writes_and_tolerates_garbage() {
        let t = token(7, "sha256:abc", "sha256:def");
        let record = RestartedFor::from_annotations(Some(&annotations(t, now())));
        assert_eq!(
            record,
            RestartedFor {
                revision: Some(7),
                key: Some("sha256:abc".into()),
                claims: Some("sha256:def".into()),
                at: Some(now())
            }
        );
        let garbage = BTreeMap::from([
            (ANNOTATION_REVISION.to_owned(), "x".to_owned()),
            (ANNOTATION_AT.to_owned(), "yesterday".to_owned()),
        ]);
        assert_eq!(RestartedFor::from_annotations(Some(&garbage)), RestartedFor::default());
        assert_eq!(RestartOn::parse("KeyOrClaimsChange"), Some(RestartOn::KeyOrClaimsChange));
        assert_eq!(RestartOn::parse("keyorclaimschange"), None);
    }
}
