//! When each TenantAccess is looked at again once it is in order (its renewal, the resync, a
//! restart's delay), kept apart from kube-runtime's scheduler.
//!
//! Every TenantAccess has such a time, all the time. kube-runtime's scheduler holds a requeue as
//! a whole reconcile request (an `ObjectRef` with four optional strings and a reason) twice, in
//! its delay queue's slab and in its map: about 0.75 KiB per TenantAccess, measured at 10,000
//! (BENCHMARKS.md), the largest holder after the cache itself. Here a wake-up is its namespace
//! (one string per namespace, shared by its keys), its name and its time, in a map and an ordered
//! set: 218 bytes, under a third of that (`tests/cache_footprint.rs`). The reconciler returns
//! `await_change` and sets its wake-up here; [`Wakeups::run`] sends each due one to the
//! controller as a trigger. Short retries (a failure's backoff, a held Clerk push) stay with
//! kube-runtime: few at a time.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::runtime::health::AccessKey;

#[derive(Default)]
struct Inner {
    at: HashMap<AccessKey, Instant>,
    queue: BTreeSet<(Instant, AccessKey)>,
    /// One string per namespace with a wake-up.
    namespaces: HashSet<Arc<str>>,
}

/// The wake-ups of the TenantAccesses; clones share them.
#[derive(Clone, Default)]
#[allow(missing_debug_implementations)]
pub struct Wakeups {
    inner: Arc<Mutex<Inner>>,
    /// An earlier wake-up than the one [`Wakeups::run`] sleeps until was set.
    earlier: Arc<Notify>,
}

impl Wakeups {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding it cannot leave the maps half-updated in a way that matters.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `namespace/name` is looked at again `after` from now (replacing its earlier wake-up: the
    /// latest reconcile's decision stands).
    pub fn set(&self, namespace: &str, name: &str, after: Duration) {
        let when = Instant::now() + after;
        let mut inner = self.lock();
        let namespace = match inner.namespaces.get(namespace) {
            Some(shared) => Arc::clone(shared),
            None => {
                let shared: Arc<str> = namespace.into();
                inner.namespaces.insert(Arc::clone(&shared));
                shared
            }
        };
        let sleeper = AccessKey { namespace, name: name.into() };
        if let Some(previous) = inner.at.insert(sleeper.clone(), when) {
            inner.queue.remove(&(previous, sleeper.clone()));
        }
        let first = inner.queue.first().is_none_or(|(earliest, _)| when < *earliest);
        inner.queue.insert((when, sleeper));
        drop(inner);
        if first {
            self.earlier.notify_one();
        }
    }

    /// Forgets the wake-ups of the TenantAccesses `keep` says are gone.
    pub fn retain(&self, mut keep: impl FnMut(&str, &str) -> bool) {
        let mut inner = self.lock();
        let gone: Vec<(AccessKey, Instant)> = inner
            .at
            .iter()
            .filter(|(sleeper, _)| !keep(&sleeper.namespace, &sleeper.name))
            .map(|(sleeper, when)| (sleeper.clone(), *when))
            .collect();
        for (sleeper, when) in gone {
            inner.at.remove(&sleeper);
            inner.queue.remove(&(when, sleeper));
        }
        inner.forget_empty_namespaces();
    }

    /// How many TenantAccesses have a wake-up.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().at.len()
    }

    /// Whether none has.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The wake-ups due by `now`, removed, earliest first.
    fn take_due(&self, now: Instant) -> (Vec<AccessKey>, Option<Instant>) {
        let mut inner = self.lock();
        let mut due = Vec::new();
        while let Some((when, _)) = inner.queue.first()
            && *when <= now
        {
            let Some((_, sleeper)) = inner.queue.pop_first() else { break };
            inner.at.remove(&sleeper);
            due.push(sleeper);
        }
        if !due.is_empty() && inner.at.len() < inner.namespaces.len() {
            inner.forget_empty_namespaces();
        }
        (due, inner.queue.first().map(|(when, _)| *when))
    }

    /// Calls `wake` with each wake-up when it is due, until `stop` resolves.
    pub async fn run(self, mut wake: impl FnMut(AccessKey), stop: impl Future<Output = ()>) {
        let wakes = async {
            loop {
                // Registered before looking, so that a wake-up set in between is not missed.
                let earlier = self.earlier.notified();
                let (due, next) = self.take_due(Instant::now());
                for sleeper in due {
                    wake(sleeper);
                }
                match next {
                    Some(next) => {
                        tokio::select! {
                            () = tokio::time::sleep_until(next) => {}
                            () = earlier => {}
                        }
                    }
                    None => earlier.await,
                }
            }
        };
        tokio::select! {
            () = wakes => {}
            () = stop => {}
        }
    }
}

impl Inner {
    fn forget_empty_namespaces(&mut self) {
        let used: HashSet<&str> = self.at.keys().map(|sleeper| &*sleeper.namespace).collect();
        self.namespaces.retain(|namespace| used.contains(&**namespace));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use super::*;

    /// Each wake-up (`namespace/name`) with its time.
    type Woken = Arc<StdMutex<Vec<(String, Instant)>>>;

    /// Runs `wakeups` in the background, recording each wake-up with its time.
    fn record(wakeups: &Wakeups) -> (Woken, tokio::task::JoinHandle<()>) {
        let woken = Arc::new(StdMutex::new(Vec::new()));
        let sink = Arc::clone(&woken);
        let task = tokio::spawn(wakeups.clone().run(
            move |sleeper| {
                sink.lock()
                    .unwrap()
                    .push((format!("{}/{}", sleeper.namespace, sleeper.name), Instant::now()));
            },
            std::future::pending(),
        ));
        (woken, task)
    }

    fn names(woken: &StdMutex<Vec<(String, Instant)>>) -> Vec<String> {
        woken.lock().unwrap().iter().map(|(name, _)| name.clone()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn each_wakes_once_at_its_time_and_the_latest_setting_stands() {
        let wakeups = Wakeups::default();
        let (woken, task) = record(&wakeups);
        let start = Instant::now();
        wakeups.set("team-a", "late", Duration::from_secs(3600));
        wakeups.set("team-a", "soon", Duration::from_secs(60));
        wakeups.set("team-b", "moved", Duration::from_secs(10));
        // Set again by a later reconcile: the new time replaces the old one.
        wakeups.set("team-b", "moved", Duration::from_secs(120));
        assert_eq!(wakeups.len(), 3);

        tokio::time::sleep(Duration::from_secs(59)).await;
        assert!(names(&woken).is_empty(), "nothing before its time: {:?}", names(&woken));
        tokio::time::sleep(Duration::from_secs(7200)).await;
        assert_eq!(names(&woken), ["team-a/soon", "team-b/moved", "team-a/late"]);
        let at: Vec<Duration> =
            woken.lock().unwrap().iter().map(|(_, when)| when.duration_since(start)).collect();
        assert_eq!(at, [Duration::from_secs(60), Duration::from_secs(120), Duration::from_secs(3600)]);
        assert!(wakeups.is_empty());
        assert!(wakeups.lock().namespaces.is_empty(), "the namespaces go with their wake-ups");
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_wake_up_set_while_sleeping_is_not_missed() {
        let wakeups = Wakeups::default();
        let (woken, task) = record(&wakeups);
        let start = Instant::now();
        wakeups.set("team-a", "renewal", Duration::from_secs(86_400));
        tokio::time::sleep(Duration::from_secs(5)).await;
        wakeups.set("team-a", "restart", Duration::from_secs(30));
        tokio::time::sleep(Duration::from_secs(60)).await;
        let woken = woken.lock().unwrap().clone();
        assert_eq!(woken.len(), 1, "{woken:?}");
        assert_eq!(woken[0].0, "team-a/restart");
        assert_eq!(woken[0].1.duration_since(start), Duration::from_secs(35));
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn the_wake_ups_of_deleted_tenant_accesses_are_forgotten() {
        let wakeups = Wakeups::default();
        let (woken, task) = record(&wakeups);
        for i in 0..100 {
            wakeups.set(&format!("team-{}", i % 10), &format!("t{i}"), Duration::from_secs(60));
        }
        wakeups.retain(|_, name| name != "t7" && name != "t42");
        assert_eq!(wakeups.len(), 98);
        wakeups.retain(|namespace, _| namespace != "team-3");
        assert_eq!(wakeups.len(), 88);
        assert_eq!(wakeups.lock().namespaces.len(), 9);
        tokio::time::sleep(Duration::from_secs(61)).await;
        let names = names(&woken);
        assert_eq!(names.len(), 88);
        assert!(!names.iter().any(|name| name.ends_with("/t7") || name.starts_with("team-3/")));
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn it_stops_when_told() {
        let wakeups = Wakeups::default();
        wakeups.set("team-a", "t", Duration::from_secs(60));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(wakeups.clone().run(|_| {}, async move {
            let _ = stopped.await;
        }));
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(1), task).await.unwrap().unwrap();
        assert_eq!(wakeups.len(), 1, "nothing woke");
    }
}
