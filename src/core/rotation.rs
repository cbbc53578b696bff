//! Rotation of a workspace's admin token, as plain functions of the workspace's rotation status
//! and `now`: which request to act upon (annotation or schedule), the record of each rotation
//! through its phases, and the `KeyRotation` condition.
//!
//! The sequence that never loses the new token (driven by
//! `crate::runtime::controller::rotation`): the request is recorded as `Refreshing` before the
//! refresh is sent (conditional on the object's resourceVersion, so one request is refreshed
//! once, whatever restarts or leader changes come), Tinybird's answer is held in memory until it
//! is in the admin-token Secret, then the record says `Resigning` until every dependent token
//! and Clerk template is on the new key. A `Refreshing` record that this process does not hold
//! a key for is never refreshed again: the Secret's token is checked with Tinybird instead
//! ([`recovered`]).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{RotationProgress, RotationRecord, RotationSpec, RotationStatus};
use crate::core::conditions::DesiredCondition;
use crate::core::well_known::condition;

/// Phases of a rotation record.
pub mod phase {
    /// Recorded before the refresh is sent; the new token may exist only in memory.
    pub const REFRESHING: &str = "Refreshing";
    /// The new token is in the Secret; dependents are being re-signed.
    pub const RESIGNING: &str = "Resigning";
    /// Every dependent token and template is on the new key.
    pub const COMPLETE: &str = "Complete";
    /// A newer rotation began first.
    pub const SUPERSEDED: &str = "Superseded";
    /// Tinybird did not refresh: nothing changed.
    pub const NOT_REFRESHED: &str = "NotRefreshed";
    /// Tinybird refreshed and the new token never reached the Secret.
    pub const KEY_LOST: &str = "KeyLost";
}

/// What asked for a rotation.
pub mod trigger {
    /// The `tenantaccess.dev/rotate` annotation, set by a person or a GitOps tool.
    pub const ANNOTATION: &str = "Annotation";
    /// The annotation, set by `tenant-access revoke` (its value starts with [`super::CLI_PREFIX`]).
    pub const CLI: &str = "CLI";
    /// `spec.rotation.interval`.
    pub const SCHEDULE: &str = "Schedule";
}

/// Reasons of the `KeyRotation` condition.
pub mod reason {
    /// A rotation is under way.
    pub const IN_PROGRESS: &str = "RotationInProgress";
    /// The last rotation finished: every dependent is on the new key.
    pub const COMPLETE: &str = "RotationComplete";
    /// Tinybird did not refresh the token.
    pub const NOT_REFRESHED: &str = "NotRefreshed";
    /// The refreshed token was lost.
    pub const KEY_LOST: &str = "KeyLost";
    /// `spec.rotation` is not usable.
    pub const INVALID_SPEC: &str = "InvalidSpec";
}

/// Prefix of the annotation values `tenant-access revoke` sets.
pub const CLI_PREFIX: &str = "cli-";
/// Prefix of the request of a scheduled rotation.
pub const SCHEDULE_PREFIX: &str = "schedule-";
/// Rotations kept in `status.rotation.history`.
pub const MAX_HISTORY: usize = 5;
/// Shortest `spec.rotation.interval`.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// Longest annotation value kept as it is in status (longer ones are kept as a hash).
const MAX_REQUEST_LEN: usize = 63;

/// The form in which an annotation value is kept in status: as it is when short and printable,
/// else a short hash (the value is a user's input: its size and characters are bounded here).
#[must_use]
pub fn request_id(annotation_value: &str) -> String {
    let plain = annotation_value.len() <= MAX_REQUEST_LEN
        && annotation_value.chars().all(|c| c.is_ascii_graphic() || c == ' ');
    if plain {
        annotation_value.to_owned()
    } else {
        crate::core::admin_token::fingerprint(annotation_value.as_bytes())
    }
}

/// What asked for a request, from its form.
#[must_use]
pub fn trigger_of(request: &str) -> &'static str {
    if request.starts_with(CLI_PREFIX) {
        trigger::CLI
    } else if request.starts_with(SCHEDULE_PREFIX) {
        trigger::SCHEDULE
    } else {
        trigger::ANNOTATION
    }
}

/// `spec.rotation.interval`: `None` when unset or zero.
///
/// # Errors
/// A message naming the field when it is not a duration or is shorter than [`MIN_INTERVAL`].
pub fn interval(spec: Option<&RotationSpec>) -> Result<Option<Duration>, String> {
    let Some(text) = spec.and_then(|s| s.interval.as_deref()) else { return Ok(None) };
    let parsed = crate::core::duration::parse(text).map_err(|e| format!("spec.rotation.interval: {e}"))?;
    let interval = Duration::try_from(parsed).unwrap_or_default();
    if interval.is_zero() {
        return Ok(None);
    }
    if interval < MIN_INTERVAL {
        return Err(format!(
            "spec.rotation.interval {text:?} is shorter than 1m: every rotation invalidates every token of the workspace until it is re-signed; use 1m or more, or 0 to turn the schedule off"
        ));
    }
    Ok(Some(interval))
}

/// What the rotation of a workspace needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing.
    Idle,
    /// Record this request as `Refreshing`, then refresh.
    Start {
        /// The request (stored form).
        request: String,
        /// What asked for it.
        trigger: &'static str,
    },
    /// The newest record is `Refreshing`: its new token is held by this process, or the
    /// Secret's token must be checked with Tinybird (never refreshed again).
    Refreshing,
    /// The newest record is `Resigning`: count the dependents on the new key.
    Track,
    /// The newest record is `KeyLost`: a token put into the Secret since (the runbook, or a
    /// write that landed late) ends it once Tinybird accepts it.
    Lost,
}

/// The next step, from the annotation's value, the status and the schedule. A `Refreshing`
/// record comes first (nothing new starts while a new token may be held only in memory), then
/// a request, then the tracking of a rotation under way.
#[must_use]
pub fn next_step(annotation: Option<&str>, status: &RotationStatus, now: Timestamp) -> Step {
    let newest = status.history.first();
    match newest.map(|r| r.phase.as_str()) {
        Some(phase::REFRESHING) => return Step::Refreshing,
        Some(phase::KEY_LOST) => return Step::Lost,
        _ => {}
    }
    if let Some(value) = annotation {
        let request = request_id(value);
        if status.handled_request.as_deref() != Some(request.as_str()) {
            let trigger = trigger_of(&request);
            // An annotation cannot pass for the schedule.
            let trigger = if trigger == trigger::SCHEDULE { trigger::ANNOTATION } else { trigger };
            return Step::Start { request, trigger };
        }
    }
    if let Some(due) = status.next_rotation_time.as_ref().filter(|due| due.0 <= now) {
        return Step::Start { request: format!("{SCHEDULE_PREFIX}{}", due.0), trigger: trigger::SCHEDULE };
    }
    if newest.is_some_and(|r| r.phase == phase::RESIGNING) {
        return Step::Track;
    }
    Step::Idle
}

/// The status when the operator first sees a workspace: the annotation's current value counts
/// as handled (a manifest applied again elsewhere does not refresh), and the schedule starts.
#[must_use]
pub fn baseline(
    annotation: Option<&str>,
    interval: Option<(&str, Duration)>,
    now: Timestamp,
) -> RotationStatus {
    let mut status =
        RotationStatus { handled_request: annotation.map(request_id), ..RotationStatus::default() };
    reschedule(&mut status, interval, now);
    status
}

/// Keeps `next_rotation_time` in line with `spec.rotation.interval` (`text` as written, and
/// parsed): set from the last refresh (or now) when the interval is new or changed, cleared when
/// it is gone. Returns whether anything changed.
pub fn reschedule(status: &mut RotationStatus, interval: Option<(&str, Duration)>, now: Timestamp) -> bool {
    let before = (status.interval.clone(), status.next_rotation_time.clone());
    match interval {
        None => {
            status.interval = None;
            status.next_rotation_time = None;
        }
        Some((text, every))
            if status.interval.as_deref() != Some(text) || status.next_rotation_time.is_none() =>
        {
            let last = status.history.iter().find_map(|r| r.refreshed_at.as_ref()).map_or(now, |t| t.0);
            status.interval = Some(text.to_owned());
            status.next_rotation_time = Some(Time(after(last, every).max(now)));
        }
        Some(_) => {}
    }
    before != (status.interval.clone(), status.next_rotation_time.clone())
}

fn after(at: Timestamp, every: Duration) -> Timestamp {
    SignedDuration::try_from(every).ok().and_then(|d| at.checked_add(d).ok()).unwrap_or(Timestamp::MAX)
}

/// The status once `request` is taken up: a `Refreshing` record first (a rotation still
/// re-signing is superseded), the request handled, and the next scheduled rotation moved one
/// interval on (so that the schedule never fires twice for one time).
#[must_use]
pub fn started(
    status: &RotationStatus,
    (request, trigger): (&str, &'static str),
    old_key_fingerprint: Option<&str>,
    interval: Option<Duration>,
    now: Timestamp,
) -> RotationStatus {
    let mut next = status.clone();
    if let Some(previous) = next.history.first_mut().filter(|r| r.phase == phase::RESIGNING) {
        previous.phase = phase::SUPERSEDED.to_owned();
        previous.message =
            Some(format!("a newer rotation ({request}) began before every dependent was re-signed"));
    }
    if trigger != trigger::SCHEDULE {
        next.handled_request = Some(request.to_owned());
    }
    if let Some(every) = interval {
        next.next_rotation_time = Some(Time(after(now, every)));
    }
    next.history.insert(
        0,
        RotationRecord {
            request: request.to_owned(),
            trigger: trigger.to_owned(),
            phase: phase::REFRESHING.to_owned(),
            message: Some("refreshing the admin token at Tinybird".to_owned()),
            requested_at: Time(now),
            refreshed_at: None,
            old_key_fingerprint: old_key_fingerprint.map(str::to_owned),
            new_key_fingerprint: None,
            tokens: None,
            templates: None,
            secrets_on_new_key_after: None,
            templates_on_new_key_after: None,
        },
    );
    next.history.truncate(MAX_HISTORY);
    next
}

/// The newest record moved to `Resigning`: the new token (`new_key_fingerprint`) is in the
/// Secret since Tinybird answered at `refreshed_at`.
#[must_use]
pub fn landed(status: &RotationStatus, new_key_fingerprint: &str, refreshed_at: Timestamp) -> RotationStatus {
    with_newest(status, |record| {
        record.phase = phase::RESIGNING.to_owned();
        record.refreshed_at = Some(Time(refreshed_at));
        record.new_key_fingerprint = Some(new_key_fingerprint.to_owned());
        record.message = Some(
            "the new admin token is in the Secret: re-signing every dependent token and Clerk template"
                .to_owned(),
        );
    })
}

/// The newest record ended without a refresh (`NotRefreshed`) or with the key lost (`KeyLost`).
#[must_use]
pub fn ended(status: &RotationStatus, phase: &'static str, message: String) -> RotationStatus {
    with_newest(status, |record| {
        record.phase = phase.to_owned();
        record.message = Some(message);
    })
}

/// The newest record with the dependents counted at `now`: the time until every token Secret
/// (every template) was on the new key is recorded when they all are, and the record is
/// `Complete` when both are.
#[must_use]
pub fn progressed(
    status: &RotationStatus,
    (tokens, templates): (RotationProgress, RotationProgress),
    admin_secret_manager: Option<&str>,
    now: Timestamp,
) -> RotationStatus {
    with_newest(status, |record| {
        let since = |record: &RotationRecord| {
            let from = record.refreshed_at.as_ref().map_or(now, |t| t.0);
            let took = now.duration_since(from).max(SignedDuration::ZERO);
            format!("{:.1}s", took.as_secs_f64())
        };
        record.tokens = Some(tokens);
        record.templates = Some(templates);
        if tokens.on_new_key >= tokens.total && record.secrets_on_new_key_after.is_none() {
            record.secrets_on_new_key_after = Some(since(record));
        }
        if templates.on_new_key >= templates.total && record.templates_on_new_key_after.is_none() {
            record.templates_on_new_key_after = Some(since(record));
        }
        if record.secrets_on_new_key_after.is_some() && record.templates_on_new_key_after.is_some() {
            record.phase = phase::COMPLETE.to_owned();
            let done = format!(
                "every token Secret ({}) and Clerk template ({}) is on the new key",
                tokens.total, templates.total
            );
            record.message = Some(match admin_secret_manager {
                None => done,
                Some(manager) => {
                    format!("{done}. But {}", crate::core::secret_writers::rotation_note(manager))
                }
            });
        }
    })
}

fn with_newest(status: &RotationStatus, change: impl FnOnce(&mut RotationRecord)) -> RotationStatus {
    let mut next = status.clone();
    if let Some(record) = next.history.first_mut() {
        change(record);
    }
    next
}

/// What the check of the Secret's token says about a `Refreshing` record this process holds no
/// key for (it stopped between the record and the Secret write, or the refresh got no answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Tinybird accepts a new token in the Secret: the write landed.
    Landed,
    /// Tinybird still accepts the old token: the refresh did not happen.
    NotRefreshed,
    /// Tinybird refuses the Secret's token: refreshed, and the new token is lost.
    KeyLost,
}

/// Judges a `Refreshing` record from the Secret's token fingerprint and whether Tinybird
/// accepts that token. Never a reason to refresh again.
#[must_use]
pub fn recovered(record: &RotationRecord, secret_fingerprint: &str, accepted: bool) -> Recovery {
    match (accepted, record.old_key_fingerprint.as_deref() == Some(secret_fingerprint)) {
        (false, _) => Recovery::KeyLost,
        (true, true) => Recovery::NotRefreshed,
        (true, false) => Recovery::Landed,
    }
}

/// Longest a rotation holds Clerk template pushes back for its token Secrets (a dependent that
/// never reaches the new key must not keep every template on the dead one).
pub const CLERK_HOLD_LIMIT: Duration = Duration::from_secs(60);

/// Secrets first: whether a Clerk push of the key `fingerprint` waits, because the rotation to
/// that key is still re-signing token Secrets (every Secret first, then every template; the
/// tracker marks the moment with `secretsOnNewKeyAfter`, which the dependents follow).
#[must_use]
pub fn holds_clerk(status: &RotationStatus, fingerprint: &str, now: Timestamp) -> bool {
    status.history.first().is_some_and(|record| {
        record.phase == phase::RESIGNING
            && record.new_key_fingerprint.as_deref() == Some(fingerprint)
            && record.secrets_on_new_key_after.is_none()
            && record.refreshed_at.as_ref().is_none_or(|at| {
                now.duration_since(at.0) < SignedDuration::try_from(CLERK_HOLD_LIMIT).unwrap_or_default()
            })
    })
}

/// Whether a workspace's status tells its dependents that the rotation's token Secrets are
/// done (their held Clerk pushes may go).
#[must_use]
pub fn secrets_done(status: &RotationStatus) -> bool {
    status.history.first().is_some_and(|r| r.secrets_on_new_key_after.is_some())
}

/// Whether a `KeyLost` record is over: the Secret holds another token than the lost rotation's
/// old one, and Tinybird accepts it.
#[must_use]
pub fn found_again(record: &RotationRecord, secret_fingerprint: &str, accepted: bool) -> bool {
    accepted && record.old_key_fingerprint.as_deref() != Some(secret_fingerprint)
}

/// The message of a lost key: what happened and the runbook.
#[must_use]
pub fn key_lost_message(request: &str, secret: &str) -> String {
    format!(
        "rotation {request}: Tinybird refuses the admin token in Secret {secret}: the token was refreshed and the new one never reached the Secret, so nobody holds the workspace's admin token and every token of the workspace is refused. The operator cannot refresh again (that needs a valid admin token). Recover: refresh the admin token in the Tinybird UI (Tokens, admin token, Refresh) or with `tb token refresh \"admin token\"`, put it into Secret {secret}; every dependent token and Clerk template is re-signed within seconds"
    )
}

/// The `KeyRotation` condition: the newest rotation's state, or the schedule's problem.
#[must_use]
pub fn condition(status: &RotationStatus, schedule_problem: Option<&str>) -> Option<DesiredCondition> {
    if let Some(problem) = schedule_problem {
        return Some(DesiredCondition::fails(condition::KEY_ROTATION, reason::INVALID_SPEC, problem));
    }
    let record = status.history.first()?;
    let message = format!(
        "rotation {} ({}): {}",
        record.request,
        record.trigger,
        record.message.as_deref().unwrap_or(record.phase.as_str())
    );
    Some(match record.phase.as_str() {
        phase::COMPLETE | phase::SUPERSEDED => {
            DesiredCondition::holds(condition::KEY_ROTATION, reason::COMPLETE, message)
        }
        phase::NOT_REFRESHED => {
            DesiredCondition::fails(condition::KEY_ROTATION, reason::NOT_REFRESHED, message)
        }
        phase::KEY_LOST => DesiredCondition::fails(condition::KEY_ROTATION, reason::KEY_LOST, message),
        _ => DesiredCondition::fails(condition::KEY_ROTATION, reason::IN_PROGRESS, message),
    })
}

#[cfg(test)]
mod tests;
