//! Read-your-writes: the caches fed by watches lag behind the operator's own writes by a few
//! milliseconds. A reconcile that starts in that window (triggered by the very write, e.g. the
//! status update) would see the old status and act twice: sign a second token, or PATCH Clerk a
//! second time. So the statuses the operator last wrote are remembered and preferred over an
//! older cached copy. (Written Secrets go straight into the digest index, `token_secrets`.)
//!
//! The same record tells the watches which events the operator caused itself: the watch event
//! of its own write (same resourceVersion) needs no reconcile, since the reconcile that wrote it
//! already acted on it. Dropping them cuts the reconciles per issuance from about 2.5 to 1. A
//! copy is forgotten once the watch has delivered its write (or anything newer), so the record
//! holds only writes in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;

use crate::api::TenantAccessStatus;

/// `(namespace, name)`.
type Key = (String, String);

fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_owned(), name.to_owned())
}

/// Whether resourceVersion `a` is older than `b`. Kubernetes documents resourceVersions as
/// opaque; every API server in use (etcd-backed) issues increasing integers, and anything
/// unparseable (or absent) counts as "not older" so that the cache wins.
fn older(a: Option<&str>, b: Option<&str>) -> bool {
    match (a.and_then(|a| a.parse::<u64>().ok()), b.and_then(|b| b.parse::<u64>().ok())) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}

/// The last writes of one kind: per object, the resourceVersion a write produced and what was
/// written.
#[derive(Debug)]
struct Written<V> {
    writes: Arc<Mutex<HashMap<Key, (String, V)>>>,
}

impl<V> Default for Written<V> {
    fn default() -> Self {
        Self { writes: Arc::default() }
    }
}

impl<V> Clone for Written<V> {
    fn clone(&self) -> Self {
        Self { writes: Arc::clone(&self.writes) }
    }
}

impl<V: Clone> Written<V> {
    fn wrote(&self, key: Key, resource_version: Option<String>, value: V) {
        if let (Ok(mut writes), Some(rv)) = (self.writes.lock(), resource_version) {
            writes.insert(key, (rv, value));
        }
    }

    /// The write when the cache (at `cached_rv`; `None` when the object is not cached) is older;
    /// otherwise the cache, and the write is forgotten (the cache caught up, or the object
    /// changed or went since).
    fn fresher(&self, key: &Key, cached_rv: Option<&str>, cached: Option<V>) -> Option<V> {
        let Ok(mut writes) = self.writes.lock() else { return cached };
        if let Some((rv, value)) = writes.get(key)
            && older(cached_rv, Some(rv))
        {
            return Some(value.clone());
        }
        writes.remove(key);
        cached
    }

    /// Whether a watch event at `resource_version` is the echo of the last write; a write the
    /// event makes redundant (its echo or anything newer) is forgotten.
    fn own_event(&self, key: &Key, resource_version: Option<&str>) -> bool {
        let Ok(mut writes) = self.writes.lock() else { return false };
        let Some((written_rv, _)) = writes.get(key) else { return false };
        if older(resource_version, Some(written_rv)) {
            return false;
        }
        let own = resource_version == Some(written_rv.as_str());
        writes.remove(key);
        own
    }

    fn forget(&self, key: &Key) {
        if let Ok(mut writes) = self.writes.lock() {
            writes.remove(key);
        }
    }
}

/// The last objects written, per key: statuses whole (read-your-writes), Secrets by
/// resourceVersion only (their digests are in [`super::token_secrets::TokenSecrets`]).
#[derive(Debug, Default, Clone)]
pub struct LastWrites {
    secrets: Written<()>,
    statuses: Written<TenantAccessStatus>,
}

impl LastWrites {
    /// Remembers the resourceVersion of a Secret the operator wrote (the API server's answer).
    pub fn wrote_secret(&self, secret: &Secret) {
        let key = key(
            secret.metadata.namespace.as_deref().unwrap_or_default(),
            secret.metadata.name.as_deref().unwrap_or_default(),
        );
        self.secrets.wrote(key, secret.metadata.resource_version.clone(), ());
    }

    /// Whether this watch event of a Secret is the operator's own last write (then nothing is
    /// left to do). Either way, a copy the event makes redundant is forgotten.
    #[must_use]
    pub fn own_secret_event(&self, namespace: &str, name: &str, resource_version: Option<&str>) -> bool {
        self.secrets.own_event(&key(namespace, name), resource_version)
    }

    /// Remembers a status written to a TenantAccess (with the resourceVersion it produced).
    pub fn wrote_status(
        &self,
        namespace: &str,
        name: &str,
        resource_version: Option<String>,
        status: TenantAccessStatus,
    ) {
        self.statuses.wrote(key(namespace, name), resource_version, status);
    }

    /// The fresher of a TenantAccess's cached status and the one last written.
    #[must_use]
    pub fn fresher_status(
        &self,
        namespace: &str,
        name: &str,
        cached_resource_version: Option<&str>,
        cached: Option<TenantAccessStatus>,
    ) -> Option<TenantAccessStatus> {
        self.statuses.fresher(&key(namespace, name), cached_resource_version, cached)
    }

    /// Whether this watch event of a TenantAccess is the operator's own status write. Either
    /// way, a status the event makes redundant is forgotten.
    #[must_use]
    pub fn own_status_event(&self, namespace: &str, name: &str, resource_version: Option<&str>) -> bool {
        self.statuses.own_event(&key(namespace, name), resource_version)
    }

    /// Forgets everything about a TenantAccess (deleted).
    pub fn forget_access(&self, namespace: &str, name: &str) {
        self.statuses.forget(&key(namespace, name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(rv: &str) -> Secret {
        let mut secret = Secret::default();
        secret.metadata.namespace = Some("ns".into());
        secret.metadata.name = Some("s".into());
        secret.metadata.resource_version = Some(rv.into());
        secret
    }

    #[test]
    fn prefers_its_own_newer_status_over_a_stale_cache() {
        let writes = LastWrites::default();
        let status = |revision: u32| TenantAccessStatus {
            failed_attempts: Some(revision),
            ..TenantAccessStatus::default()
        };
        writes.wrote_status("ns", "a", Some("20".into()), status(2));
        let fresher = |rv: &str, cached: u32| {
            writes.fresher_status("ns", "a", Some(rv), Some(status(cached))).and_then(|s| s.failed_attempts)
        };
        assert_eq!(fresher("10", 1), Some(2));
        assert_eq!(fresher("30", 3), Some(3));
        // Once the cache caught up, the copy is dropped (memory stays bounded).
        writes.wrote_status("ns", "a", Some("40".into()), status(4));
        assert_eq!(fresher("40", 4), Some(4));
        assert!(writes.statuses.writes.lock().unwrap().is_empty());
    }

    #[test]
    fn recognises_the_watch_event_of_its_own_write_once() {
        let writes = LastWrites::default();
        writes.wrote_secret(&secret("20"));
        // An older event (still in flight) is not ours and keeps the copy.
        assert!(!writes.own_secret_event("ns", "s", Some("10")));
        assert!(writes.own_secret_event("ns", "s", Some("20")));
        // Delivered: the copy is gone, a repeat of the event is not "ours" any more.
        assert!(!writes.own_secret_event("ns", "s", Some("20")));
        // Someone else's newer write is not ours, and drops the copy.
        writes.wrote_secret(&secret("30"));
        assert!(!writes.own_secret_event("ns", "s", Some("31")));
        assert!(writes.secrets.writes.lock().unwrap().is_empty());

        writes.wrote_status("ns", "a", Some("40".into()), TenantAccessStatus::default());
        assert!(!writes.own_status_event("ns", "a", Some("39")));
        assert!(!writes.own_status_event("ns", "b", Some("40")));
        assert!(writes.own_status_event("ns", "a", Some("40")));
        assert!(!writes.own_status_event("ns", "a", Some("40")));
    }
}
