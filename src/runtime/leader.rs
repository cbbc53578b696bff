//! Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas run with one active.
//!
//! The leader renews the Lease every third of its duration; a standby takes over when the
//! Lease has not been renewed for a whole duration (the leader died). A leader that cannot
//! renew within two thirds of the duration (each attempt is cut at that deadline, however the
//! API server behaves) gives up the lead: [`LeaderElection::keep`] returns, and the caller
//! stops reconciling at once, a third of the duration before a standby may take over. On
//! graceful shutdown the leader releases the Lease so that the standby takes over at once.
//!
//! The renew time written to the Lease and compared by a standby comes from the injected
//! [`Clock`]; the deadlines from tokio's clock (both follow paused time in tests).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;

use crate::core::clock::Clock;

/// One candidate for a Lease.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    clock: Clock,
}

/// Why a leader stopped leading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadLost {
    /// Another replica holds the Lease (or changed it under this one).
    TakenOver,
    /// The Lease could not be renewed before the renew deadline.
    NotRenewed,
}

fn conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

impl LeaderElection {
    /// A candidate `identity` for Lease `namespace/name`.
    #[must_use]
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration: duration.max(Duration::from_secs(2)),
            clock: Clock::system(),
        }
    }

    /// The same candidate with another wall clock (for tests).
    #[must_use]
    pub fn with_clock(self, clock: Clock) -> Self {
        Self { clock, ..self }
    }

    /// Time between renewals, and between attempts to acquire.
    fn retry_period(&self) -> Duration {
        self.duration / 3
    }

    /// How long after the start of its last successful renewal a leader keeps leading: a third
    /// of the duration before a standby may take over, the time to stop reconciling.
    #[must_use]
    pub fn renew_deadline(&self) -> Duration {
        self.duration - self.duration / 3
    }

    /// Time between renewal attempts after a failed one.
    fn failure_retry(&self) -> Duration {
        (self.duration / 15).max(Duration::from_millis(200))
    }

    /// One attempt to take or renew the Lease. `Ok(true)` when this candidate holds it.
    ///
    /// # Errors
    /// API errors other than an optimistic-concurrency conflict.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = self.clock.now();
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(error) if conflict(&error) => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != self.identity {
            let held_for = spec
                .lease_duration_seconds
                .map_or(self.duration, |s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
            let expires = spec.renew_time.as_ref().and_then(|t| {
                t.0.checked_add(jiff::SignedDuration::try_from(held_for).unwrap_or_default()).ok()
            });
            if !holder.is_empty() && expires.is_some_and(|e| e > now) {
                return Ok(false);
            }
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            tracing::info!(lease = %self.name, previous = %holder, "taking over the lease");
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        // replace carries the resourceVersion: a concurrent change makes it fail with 409.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(error) if conflict(&error) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Waits until this candidate leads. Retries every third of the lease duration; each
    /// attempt is cut after the renew deadline. Returns when the winning attempt started (the
    /// renew time it wrote), for [`Self::keep`].
    pub async fn acquire(&self) -> Instant {
        let mut said = false;
        loop {
            let started = Instant::now();
            match tokio::time::timeout(self.renew_deadline(), self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "leading");
                    return started;
                }
                Ok(Ok(false)) if !said => {
                    said = true;
                    tracing::info!(lease = %self.name, identity = %self.identity, "standing by: another replica holds the lease; waiting for it");
                }
                Ok(Ok(false)) => tracing::debug!(lease = %self.name, "standing by"),
                Ok(Err(error)) => {
                    tracing::warn!(lease = %self.name, %error, "leader election failed; retrying");
                }
                Err(_) => tracing::warn!(lease = %self.name, "leader election timed out; retrying"),
            }
            tokio::time::sleep_until(started + self.retry_period()).await;
        }
    }

    /// Renews the Lease, last renewed by an attempt that started at `renewed_at`, until it
    /// cannot; returns then, by the renew deadline at the latest, whatever the API server does.
    pub async fn keep(&self, mut renewed_at: Instant) -> LeadLost {
        let mut next_attempt = renewed_at + self.retry_period();
        loop {
            let deadline = renewed_at + self.renew_deadline();
            tokio::time::sleep_until(next_attempt.min(deadline)).await;
            let started = Instant::now();
            if started >= deadline {
                break;
            }
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {
                    renewed_at = started;
                    next_attempt = started + self.retry_period();
                }
                Ok(Ok(false)) => {
                    tracing::error!(lease = %self.name, "another replica holds the lease");
                    return LeadLost::TakenOver;
                }
                Ok(Err(error)) => {
                    tracing::warn!(lease = %self.name, %error, "renewing the lease failed; retrying");
                    next_attempt = Instant::now() + self.failure_retry();
                }
                Err(_) => break,
            }
        }
        tracing::error!(
            lease = %self.name,
            deadline_seconds = self.renew_deadline().as_secs_f64(),
            "could not renew the lease in time: stopping before a standby may take over"
        );
        LeadLost::NotRenewed
    }

    /// Gives the Lease up (graceful shutdown) so that a standby takes over at once. Bounded by
    /// the renew deadline (a standby takes over at the Lease's expiry anyway).
    pub async fn release(&self) {
        if tokio::time::timeout(self.renew_deadline(), self.try_release()).await.is_err() {
            tracing::warn!(lease = %self.name, "could not release the lease in time");
        }
    }

    async fn try_release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %self.name, "lease released"),
            Err(error) => tracing::warn!(lease = %self.name, %error, "could not release the lease"),
        }
    }
}

#[cfg(test)]
mod tests;
