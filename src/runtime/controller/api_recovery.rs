//! Retries, within seconds of the API server's return, the reconciles that failed because it
//! could not be reached.
//!
//! A reconcile that fails backs off per object (exponential, with jitter, up to minutes: kind to
//! an API server in trouble). After an outage of half a minute the failed objects would then
//! wait up to another minute before their next attempt, renewals included. Instead, the objects
//! whose reconcile failed for want of the API server (unreachable, 5xx, 429) are remembered, and
//! while there are any, one cheap request (`GET /version`) every second or two watches for the
//! API server: once it answers again after it did not, every remembered object is reconciled at
//! once. An object failing for any other reason keeps its backoff, and so does one failing with
//! a 5xx while the API server otherwise answers (that is not an outage): no busy loop.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::Client;
use kube::runtime::reflector::ObjectRef;

use super::cached_access::CachedTenantAccess;
use super::context::WorkspaceRechecks;
use crate::api::{ClusterTinybirdWorkspace, TinybirdWorkspace};
use crate::core::backoff::jitter;

/// Time between two checks of the API server while objects wait for it (spread over
/// `[PROBE_INTERVAL / 2, PROBE_INTERVAL)`).
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Longest a check of the API server may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// An object whose reconcile failed for want of the API server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Waiting {
    /// A TenantAccess.
    TenantAccess {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A TinybirdWorkspace.
    Workspace {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A ClusterTinybirdWorkspace.
    ClusterWorkspace {
        /// Name.
        name: String,
    },
}

/// The objects waiting for the API server; cheap to clone.
#[derive(Debug, Default, Clone)]
pub struct OutageRetries {
    waiting: Arc<Mutex<HashSet<Waiting>>>,
}

impl OutageRetries {
    /// Remembers an object whose reconcile failed for want of the API server.
    pub fn wait_for_api(&self, object: Waiting) {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).insert(object);
    }

    fn is_empty(&self) -> bool {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    fn take(&self) -> HashSet<Waiting> {
        std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// What the watch for the API server's return does after one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Nothing waits: nothing to check.
    Idle,
    /// The API server does not answer.
    Down,
    /// It answers again after it did not: reconcile every waiting object now.
    Recovered,
    /// It answers and was not seen down: the failures were not an outage, and keep their
    /// backoff.
    Up,
}

/// The step after a check (`answered`: `None` when nothing waits).
fn step(was_down: bool, answered: Option<bool>) -> Step {
    match answered {
        None => Step::Idle,
        Some(false) => Step::Down,
        Some(true) if was_down => Step::Recovered,
        Some(true) => Step::Up,
    }
}

/// Watches for the API server while objects wait for it, and reconciles them once it is back:
/// TenantAccesses through `tenants`, workspaces through `workspaces`. Runs until dropped.
pub(super) async fn run(
    client: Client,
    outage: OutageRetries,
    tenants: tokio::sync::mpsc::UnboundedSender<ObjectRef<CachedTenantAccess>>,
    workspaces: WorkspaceRechecks,
) {
    let mut down = false;
    loop {
        tokio::time::sleep(PROBE_INTERVAL.mul_f64(0.5 + jitter("api-recovery") / 2.0)).await;
        let answered = if outage.is_empty() {
            None
        } else {
            let check = tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await;
            Some(matches!(check, Ok(Ok(_))))
        };
        match step(down, answered) {
            Step::Idle => down = false,
            Step::Down => down = true,
            Step::Up => {
                outage.take();
            }
            Step::Recovered => {
                down = false;
                let waiting = outage.take();
                tracing::info!(
                    objects = waiting.len(),
                    "the API server answers again: reconciling the objects that failed for want of it"
                );
                for object in waiting {
                    // A closed channel means the controller stopped: nothing left to retry.
                    let _ = match object {
                        Waiting::TenantAccess { namespace, name } => {
                            tenants.send(ObjectRef::new(&name).within(&namespace)).is_ok()
                        }
                        Waiting::Workspace { namespace, name } => workspaces
                            .namespaced
                            .send(ObjectRef::<TinybirdWorkspace>::new(&name).within(&namespace))
                            .is_ok(),
                        Waiting::ClusterWorkspace { name } => {
                            workspaces.cluster.send(ObjectRef::<ClusterTinybirdWorkspace>::new(&name)).is_ok()
                        }
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_objects_are_retried_only_once_the_api_server_is_seen_coming_back() {
        assert_eq!(step(false, None), Step::Idle);
        assert_eq!(step(true, None), Step::Idle);
        // Down, still down, back: retried.
        assert_eq!(step(false, Some(false)), Step::Down);
        assert_eq!(step(true, Some(false)), Step::Down);
        assert_eq!(step(true, Some(true)), Step::Recovered);
        // Failures while the API server answers were not an outage: no retry before their
        // backoff (else an object the API server keeps refusing with a 5xx would loop).
        assert_eq!(step(false, Some(true)), Step::Up);
    }

    #[test]
    fn taking_the_waiting_objects_empties_the_set() {
        let outage = OutageRetries::default();
        assert!(outage.is_empty());
        let access = Waiting::TenantAccess { namespace: "team".into(), name: "a".into() };
        outage.wait_for_api(access.clone());
        outage.wait_for_api(access.clone());
        outage.wait_for_api(Waiting::ClusterWorkspace { name: "shared".into() });
        assert_eq!(outage.take().len(), 2);
        assert!(outage.is_empty());
    }
}
