//! Watching progress: when did every object reach a state, and how many times did objects
//! change during a window. Both from watches, so the harness adds no polling load.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tenant_access::api::TenantAccess;
use tenant_access::core::well_known::condition;
use tokio::task::JoinHandle;

use crate::error::{BenchError, Result};

/// Waits until at least `expected` objects selected by `labels` satisfy `done`. Returns the
/// instant the last one was seen doing so.
///
/// # Errors
/// [`BenchError::Timeout`] (with how many were done) after `timeout`.
pub async fn wait_all<K, F>(
    api: Api<K>,
    labels: &str,
    expected: usize,
    timeout: Duration,
    what: &str,
    done: F,
) -> Result<Instant>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
    F: Fn(&K) -> bool,
{
    let mut stream = watcher::watcher(api, watcher::Config::default().labels(labels)).boxed();
    let mut state: HashMap<String, bool> = HashMap::new();
    let mut satisfied = 0usize;
    let deadline = tokio::time::Instant::now() + timeout;
    let key = |o: &K| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let event = match next {
            Err(_) => {
                return Err(BenchError::Timeout {
                    what: format!("{what} ({satisfied} of {expected} done)"),
                    timeout,
                });
            }
            Ok(None) => {
                return Err(BenchError::Fixture(format!("the watch for {what} ended")));
            }
            Ok(Some(Err(error))) => {
                tracing::debug!(%error, "watch error (the watcher retries)");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Ok(Some(Ok(event))) => event,
        };
        match event {
            Event::Apply(object) | Event::InitApply(object) => {
                let now = done(&object);
                let before = state.insert(key(&object), now).unwrap_or(false);
                match (before, now) {
                    (false, true) => satisfied += 1,
                    (true, false) => satisfied -= 1,
                    _ => {}
                }
            }
            Event::Delete(object) => {
                if state.remove(&key(&object)) == Some(true) {
                    satisfied -= 1;
                }
            }
            Event::Init => {
                state.clear();
                satisfied = 0;
            }
            Event::InitDone => {}
        }
        if satisfied >= expected {
            return Ok(Instant::now());
        }
    }
}

/// Ready=True with a token in status (signed with `fingerprint` when given).
#[must_use]
pub fn is_ready_with_token(access: &TenantAccess, fingerprint: Option<&str>) -> bool {
    let Some(status) = access.status.as_ref() else { return false };
    let ready = status.conditions.iter().any(|c| c.type_ == condition::READY && c.status == "True");
    let Some(token) = status.token.as_ref() else { return false };
    ready && fingerprint.is_none_or(|fp| token.signing_key_fingerprint == fp)
}

/// The first health report is in status (`EndpointsHealthy` set).
#[must_use]
pub fn has_health_report(access: &TenantAccess) -> bool {
    access
        .status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == condition::ENDPOINTS_HEALTHY))
}

/// Counts the changes (added, modified, deleted) of the objects selected by `labels` from the
/// moment the watch is established until [`ChangeCounter::finish`].
#[derive(Debug)]
pub struct ChangeCounter {
    changes: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl ChangeCounter {
    /// Starts watching; returns once the initial list is done (bounded by `timeout`).
    ///
    /// # Errors
    /// The initial list did not finish in time.
    pub async fn start<K>(api: Api<K>, labels: &str, timeout: Duration) -> Result<Self>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
        K::DynamicType: Default,
    {
        let changes = Arc::new(AtomicU64::new(0));
        let synced = Arc::new(tokio::sync::Notify::new());
        let stream = watcher::watcher(api, watcher::Config::default().labels(labels));
        let task = {
            let changes = changes.clone();
            let synced = synced.clone();
            tokio::spawn(async move {
                let mut stream = stream.boxed();
                let mut listed = false;
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(Event::InitDone) if !listed => {
                            listed = true;
                            synced.notify_one();
                        }
                        // A re-list after the watch expired replays objects: not changes.
                        Ok(Event::Apply(_) | Event::Delete(_)) if listed => {
                            changes.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            })
        };
        tokio::time::timeout(timeout, synced.notified()).await.map_err(|_| BenchError::Timeout {
            what: "the initial list of a change watch".into(),
            timeout,
        })?;
        Ok(Self { changes, task })
    }

    /// Changes seen so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Stops watching and returns the count.
    #[must_use]
    pub fn finish(self) -> u64 {
        self.task.abort();
        self.count()
    }
}
