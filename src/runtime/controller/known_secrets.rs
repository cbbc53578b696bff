//! Which Secrets exist, from the metadata-only watch of Secrets the operator runs anyway (for
//! admin tokens). It lets the first issuance skip a GET: when the watch has synced and has never
//! seen `namespace/name`, the token Secret is created at once (a server-side apply that does not
//! force, so it still fails on a Secret that appeared in the meantime with conflicting fields).
//!
//! Only a 64-bit hash of each name is kept (8 bytes per Secret), since the answer is used in one
//! direction only: "certainly absent". A hash collision makes an absent Secret look present,
//! which costs a GET and nothing else.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt as _;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;

#[derive(Debug, Default)]
struct Names {
    present: HashSet<u64>,
    /// The list in progress (after a watch (re)start), swapped in when complete.
    relisting: Option<HashSet<u64>>,
}

/// The names of the Secrets in the watched namespaces; cheap to clone.
#[derive(Debug, Default, Clone)]
pub struct KnownSecrets {
    names: Arc<Mutex<Names>>,
    /// True once the watch has listed every Secret.
    synced: Arc<tokio::sync::watch::Sender<bool>>,
}

/// The 64-bit hash of `namespace/name` both Secret indexes key on.
pub(super) fn hash(namespace: &str, name: &str) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one((namespace, name))
}

impl KnownSecrets {
    /// Follows one event of the Secret watch.
    pub fn observe(&self, event: &watcher::Event<PartialObjectMeta<Secret>>) {
        let Ok(mut names) = self.names.lock() else { return };
        let key = |secret: &PartialObjectMeta<Secret>| {
            hash(&secret.namespace().unwrap_or_default(), &secret.name_any())
        };
        match event {
            watcher::Event::Init => names.relisting = Some(HashSet::new()),
            watcher::Event::InitApply(secret) => {
                let key = key(secret);
                if let Some(relisting) = names.relisting.as_mut() {
                    relisting.insert(key);
                }
            }
            watcher::Event::InitDone => {
                if let Some(relisting) = names.relisting.take() {
                    names.present = relisting;
                    names.present.shrink_to_fit();
                }
                self.synced.send_replace(true);
            }
            watcher::Event::Apply(secret) => {
                names.present.insert(key(secret));
            }
            watcher::Event::Delete(secret) => {
                names.present.remove(&key(secret));
            }
        }
    }

    /// Whether the Secret certainly does not exist (as of the watch): false until the watch has
    /// listed every Secret once.
    #[must_use]
    pub fn certainly_absent(&self, namespace: &str, name: &str) -> bool {
        *self.synced.borrow()
            && self.names.lock().is_ok_and(|names| !names.present.contains(&hash(namespace, name)))
    }

    /// Resolves once the watch has listed every Secret.
    pub async fn wait_until_synced(&self) {
        let mut synced = self.synced.subscribe();
        // An error means the sender is gone, which cannot happen while `self` holds it.
        let _ = synced.wait_for(|synced| *synced).await;
    }

    /// Records that a Secret exists (seen by a write before the watch tells).
    pub fn exists(&self, namespace: &str, name: &str) {
        if let Ok(mut names) = self.names.lock() {
            names.present.insert(hash(namespace, name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str) -> PartialObjectMeta<Secret> {
        let mut secret = PartialObjectMeta::<Secret>::default();
        secret.metadata.namespace = Some("ns".into());
        secret.metadata.name = Some(name.into());
        secret
    }

    #[test]
    fn absent_only_once_listed_and_follows_adds_deletes_and_relists() {
        let names = KnownSecrets::default();
        assert!(!names.certainly_absent("ns", "a"), "unknown before the first list");
        names.observe(&watcher::Event::Init);
        names.observe(&watcher::Event::InitApply(secret("a")));
        assert!(!names.certainly_absent("ns", "b"), "unknown until the list is complete");
        names.observe(&watcher::Event::InitDone);
        assert!(!names.certainly_absent("ns", "a"));
        assert!(names.certainly_absent("ns", "b"));
        assert!(names.certainly_absent("other", "a"));

        names.observe(&watcher::Event::Apply(secret("b")));
        assert!(!names.certainly_absent("ns", "b"));
        names.observe(&watcher::Event::Delete(secret("a")));
        assert!(names.certainly_absent("ns", "a"));

        // A relist replaces everything once complete; until then the old set answers.
        names.observe(&watcher::Event::Init);
        names.observe(&watcher::Event::InitApply(secret("c")));
        assert!(!names.certainly_absent("ns", "b"));
        names.observe(&watcher::Event::InitDone);
        assert!(names.certainly_absent("ns", "b"));
        assert!(!names.certainly_absent("ns", "c"));

        names.exists("ns", "d");
        assert!(!names.certainly_absent("ns", "d"));
    }
}
