//! Kubernetes events, published off the reconcile path.
//!
//! A reconcile never waits for an event: [`EventPublisher::publish`] puts it on a bounded queue
//! that one background task drains, the way client-go's event broadcaster does. The task may
//! use its own client (with its own rate limit, `--event-qps`), so that events never take the
//! request budget of the writes that make a TenantAccess Ready. When the queue is full (a mass
//! issuance), events are dropped and counted (`tenant_access_events_dropped_total`); the status
//! conditions say the same thing.
//!
//! Repeats of an event (same object, type, reason and action) within [`SERIES_WINDOW`] update
//! the first one's `series` (a PATCH) instead of creating another object, as the kube-runtime
//! recorder does; the memory for that is bounded by [`SERIES_CACHE`] entries, unlike the
//! recorder's, which keeps every event of the last six minutes.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::core::clock::Clock;
use crate::core::redact::{redact, truncate};

/// Events waiting to be sent; more are dropped (client-go's broadcaster also queues 1000).
pub const QUEUE_CAPACITY: usize = 1000;
/// Repeats within this window become a series of the first event.
pub const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// Most recent events remembered for series.
pub const SERIES_CACHE: usize = 1024;
/// Longest note the API server accepts (events.k8s.io/v1).
const NOTE_LIMIT: usize = 1024;

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something needs attention.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// One event to publish about `regarding`.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    /// The object the event is about.
    pub regarding: ObjectReference,
    /// Normal or Warning.
    pub type_: EventType,
    /// Machine-readable reason (CamelCase).
    pub reason: String,
    /// What the operator did or tried (CamelCase).
    pub action: String,
    /// Human-readable note (redacted and cut to 1 KiB before it is queued).
    pub note: String,
}

/// Queues events for the background sender; cheap to clone.
/// What the publisher's queue carries: events, and requests to be told once every event queued
/// before them was sent.
#[derive(Debug)]
enum Queued {
    Event(Box<PendingEvent>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

#[derive(Debug, Clone)]
pub struct EventPublisher {
    sender: mpsc::Sender<Queued>,
    dropped: Counter,
}

impl EventPublisher {
    /// Starts the sender task on the current tokio runtime. It stops once every publisher is
    /// dropped and the queue is drained. `dropped` counts events the full queue turned away,
    /// `failed` events the API server refused or that could not be sent. `clock` times the
    /// events and their series windows.
    #[must_use]
    pub fn start(
        client: Client,
        controller: &str,
        instance: Option<String>,
        dropped: Counter,
        failed: Counter,
        clock: Clock,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let sender_task = Sender {
            client,
            controller: controller.to_owned(),
            instance: instance.unwrap_or_else(|| crate::core::well_known::OPERATOR_NAME.to_owned()),
            series: HashMap::new(),
            failed,
            clock,
        };
        tokio::spawn(sender_task.run(receiver));
        Self { sender, dropped }
    }

    /// Queues an event about `object`; never waits. The note is redacted.
    pub fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let mut note = redact(note, &[]);
        truncate(&mut note, NOTE_LIMIT);
        let event = PendingEvent {
            regarding: object.object_ref(&()),
            type_,
            reason: reason.to_owned(),
            action: action.to_owned(),
            note,
        };
        // Closed only after shutdown, when events no longer matter.
        if let Err(mpsc::error::TrySendError::Full(Queued::Event(event))) =
            self.sender.try_send(Queued::Event(Box::new(event)))
        {
            self.dropped.inc();
            tracing::debug!(reason = %event.reason, "event queue full: event dropped");
        }
    }

    /// Waits (at most `within`) until every event queued before the call was sent or given up:
    /// a graceful shutdown publishes what it decided before it exits.
    pub async fn flush(&self, within: std::time::Duration) {
        let (done, sent) = tokio::sync::oneshot::channel();
        let flushed = async {
            if self.sender.send(Queued::Flush(done)).await.is_ok() {
                let _ = sent.await;
            }
        };
        if tokio::time::timeout(within, flushed).await.is_err() {
            tracing::info!("events still queued at shutdown were not all sent");
        }
    }
}

/// Identity of a series: what makes two events "the same".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
    type_: EventType,
    reason: String,
    action: String,
}

impl SeriesKey {
    fn of(event: &PendingEvent) -> Self {
        Self {
            kind: event.regarding.kind.clone(),
            namespace: event.regarding.namespace.clone(),
            name: event.regarding.name.clone(),
            uid: event.regarding.uid.clone(),
            type_: event.type_,
            reason: event.reason.clone(),
            action: event.action.clone(),
        }
    }
}

/// An event already sent, for series.
#[derive(Debug, Clone)]
struct Sent {
    namespace: String,
    name: String,
    count: i32,
    last: Timestamp,
}

struct Sender {
    client: Client,
    controller: String,
    instance: String,
    series: HashMap<SeriesKey, Sent>,
    failed: Counter,
    clock: Clock,
}

impl Sender {
    async fn run(mut self, mut receiver: mpsc::Receiver<Queued>) {
        while let Some(queued) = receiver.recv().await {
            let event = match queued {
                Queued::Event(event) => event,
                Queued::Flush(done) => {
                    let _ = done.send(());
                    continue;
                }
            };
            if let Err(error) = self.send(&event, self.clock.now()).await {
                self.failed.inc();
                tracing::warn!(reason = %event.reason, error = %redact(&error.to_string(), &[]), "could not publish event");
            }
        }
    }

    async fn send(&mut self, event: &PendingEvent, now: Timestamp) -> Result<(), kube::Error> {
        let key = SeriesKey::of(event);
        if let Some(sent) = self.series.get_mut(&key).filter(|sent| sent.last + SERIES_WINDOW > now) {
            sent.count = sent.count.saturating_add(1);
            sent.last = now;
            let patch = serde_json::json!({
                "series": EventSeries { count: sent.count, last_observed_time: MicroTime(now) },
                "note": event.note,
            });
            let api: Api<Event> = Api::namespaced(self.client.clone(), &sent.namespace);
            let result = api.patch(&sent.name, &PatchParams::default(), &Patch::Merge(&patch)).await;
            match result {
                Ok(_) => return Ok(()),
                // Deleted meanwhile (events have a TTL): start a new one.
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    self.series.remove(&key);
                }
                Err(error) => return Err(error),
            }
        }
        let created = build_event(event, &self.controller, &self.instance, now);
        let namespace = created.metadata.namespace.clone().unwrap_or_default();
        let name = created.metadata.name.clone().unwrap_or_default();
        Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &created)
            .await?;
        self.remember(key, Sent { namespace, name, count: 1, last: now }, now);
        Ok(())
    }

    /// Remembers a sent event, keeping at most [`SERIES_CACHE`] (the expired first, then the
    /// oldest).
    fn remember(&mut self, key: SeriesKey, sent: Sent, now: Timestamp) {
        if self.series.len() >= SERIES_CACHE {
            self.series.retain(|_, s| s.last + SERIES_WINDOW > now);
        }
        if self.series.len() >= SERIES_CACHE
            && let Some(oldest) = self.series.iter().min_by_key(|(_, s)| s.last).map(|(k, _)| k.clone())
        {
            self.series.remove(&oldest);
        }
        self.series.insert(key, sent);
    }
}

/// Where events about cluster-scoped objects go. The API server refuses an empty namespace for
/// events.k8s.io/v1 events; Kubernetes up to 1.21 accepts only `kube-system` for them, later
/// versions `default` or `kube-system`: so `kube-system` works everywhere.
pub const CLUSTER_SCOPED_EVENT_NAMESPACE: &str = "kube-system";

/// The events.k8s.io/v1 Event for `pending` (a cluster-scoped object's in
/// [`CLUSTER_SCOPED_EVENT_NAMESPACE`]).
fn build_event(pending: &PendingEvent, controller: &str, instance: &str, now: Timestamp) -> Event {
    let mut regarding = pending.regarding.clone();
    regarding.namespace = regarding.namespace.filter(|ns| !ns.is_empty());
    let namespace = regarding.namespace.clone().unwrap_or_else(|| CLUSTER_SCOPED_EVENT_NAMESPACE.to_owned());
    let object_name =
        regarding.name.clone().unwrap_or_else(|| crate::core::well_known::OPERATOR_NAME.to_owned());
    Event {
        metadata: ObjectMeta {
            namespace: Some(namespace),
            name: Some(format!("{object_name}.{:x}", now.as_nanosecond())),
            ..ObjectMeta::default()
        },
        action: Some(pending.action.clone()),
        reason: Some(pending.reason.clone()),
        note: Some(pending.note.clone()),
        type_: Some(pending.type_.as_str().to_owned()),
        event_time: Some(MicroTime(now)),
        reporting_controller: Some(controller.to_owned()),
        reporting_instance: Some(instance.to_owned()),
        regarding: Some(regarding),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(namespace: Option<&str>) -> PendingEvent {
        PendingEvent {
            regarding: ObjectReference {
                kind: Some("ClusterTinybirdWorkspace".into()),
                name: Some("shared".into()),
                namespace: namespace.map(str::to_owned),
                ..ObjectReference::default()
            },
            type_: EventType::Normal,
            reason: "KeyRotated".into(),
            action: "RotateKey".into(),
            note: "note".into(),
        }
    }

    #[test]
    fn a_cluster_scoped_objects_event_goes_to_kube_system_and_keeps_an_empty_regarding_namespace() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        for namespace in [None, Some("")] {
            let event = build_event(&pending(namespace), "op", "op-0", now);
            assert_eq!(event.metadata.namespace.as_deref(), Some("kube-system"));
            assert_eq!(event.regarding.unwrap().namespace, None);
        }
        let event = build_event(&pending(Some("tenants")), "op", "op-0", now);
        assert_eq!(event.metadata.namespace.as_deref(), Some("tenants"));
        assert_eq!(
            event.metadata.name.as_deref(),
            Some(format!("shared.{:x}", now.as_nanosecond()).as_str())
        );
        assert_eq!(event.reporting_instance.as_deref(), Some("op-0"));
        assert_eq!(event.type_.as_deref(), Some("Normal"));
    }

    #[tokio::test]
    async fn publish_never_waits_and_counts_what_a_full_queue_drops() {
        let (sender, mut receiver) = mpsc::channel(2);
        let publisher = EventPublisher { sender, dropped: Counter::default() };
        let mut secret = k8s_openapi::api::core::v1::Secret::default();
        secret.metadata.name = Some("s".into());
        secret.metadata.namespace = Some("ns".into());
        for _ in 0..5 {
            publisher.publish(&secret, EventType::Warning, "R", "A", "token eyJhbGciOiJIUzI1NiJ9.e30.sig");
        }
        assert_eq!(publisher.dropped.get(), 3);
        let Some(Queued::Event(first)) = receiver.recv().await else { panic!("an event first") };
        assert!(!first.note.contains("eyJhbGciOiJIUzI1NiJ9.e30.sig"), "notes are redacted: {}", first.note);
    }

    #[tokio::test]
    async fn flush_returns_once_every_event_queued_before_it_was_handled() {
        let (sender, mut receiver) = mpsc::channel(8);
        let publisher = EventPublisher { sender, dropped: Counter::default() };
        let mut secret = k8s_openapi::api::core::v1::Secret::default();
        secret.metadata.name = Some("s".into());
        publisher.publish(&secret, EventType::Normal, "R", "A", "first");
        let handled = tokio::spawn(async move {
            let mut events = 0;
            while let Some(queued) = receiver.recv().await {
                match queued {
                    Queued::Event(_) => events += 1,
                    Queued::Flush(done) => {
                        let _ = done.send(());
                        return events;
                    }
                }
            }
            events
        });
        publisher.flush(std::time::Duration::from_secs(30)).await;
        assert_eq!(handled.await.unwrap(), 1, "the event queued before the flush was handled first");
    }
}
