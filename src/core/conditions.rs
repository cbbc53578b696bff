//! Standard `metav1.Condition` handling: [`set_condition`] moves `lastTransitionTime` only when
//! the status flips, so a condition set again unchanged is equal (`==`, timestamps included) to
//! the one observed, and the controllers skip no-op status writes by comparing whole statuses.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::core::redact::redact;

/// Maximum length of a condition message (the API server refuses longer ones).
const MAX_MESSAGE_LEN: usize = 32_000;

/// A desired condition, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredCondition {
    /// Condition type.
    pub type_: &'static str,
    /// `True` (`true`) or `False` (`false`).
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human message (redacted on the way in).
    pub message: String,
}

impl DesiredCondition {
    /// A condition that holds.
    #[must_use]
    pub fn holds(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self { type_, status: true, reason, message: message.into() }
    }

    /// A condition that does not hold.
    #[must_use]
    pub fn fails(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self { type_, status: false, reason, message: message.into() }
    }
}

/// Sets `desired` in `conditions`: keeps `lastTransitionTime` unless the status flips.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    desired: DesiredCondition,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    let DesiredCondition { type_, status, reason, message } = desired;
    let status = if status { "True" } else { "False" }.to_owned();
    let mut message = redact(&message, &[]);
    crate::core::redact::truncate(&mut message, MAX_MESSAGE_LEN);
    let existing = conditions.iter_mut().find(|c| c.type_ == type_);
    let last_transition_time = match &existing {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation,
        last_transition_time,
    };
    match existing {
        Some(slot) => *slot = condition,
        None => conditions.push(condition),
    }
}

/// Removes a condition type.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// The condition of a type, if set.
#[must_use]
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether a condition of this type is `True`.
#[must_use]
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// How one output of a TenantAccess stands, for its `Ready` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputState {
    /// The spec asks for none.
    NotRequested,
    /// Current and usable; what it is, for the message (e.g. `token in Secret acme-token`).
    Usable(String),
    /// Not current: the reason and message of its own condition (`TokenIssued`,
    /// `ClerkTemplateSynced`).
    Failed {
        /// The output's condition reason.
        reason: &'static str,
        /// The output's condition message.
        message: String,
    },
}

/// The `Ready` condition of a TenantAccess from its two outputs, the token Secret and the Clerk
/// template. `Ready` says whether what the TenantAccess's workloads use is usable now, in the
/// spirit of cert-manager's Certificate:
///
/// - the token Secret, when the spec asks for one, decides: `Ready=False` with the token's
///   reason when it is not current;
/// - a Clerk template that is not synced (Clerk unreachable or throttled, its key refused, a
///   conflict) leaves a current token Secret usable: `Ready=True` with reason `Degraded`, whose
///   message names the Clerk failure (also on `ClerkTemplateSynced=False`, with its own reason);
/// - a TenantAccess with only a Clerk template is `Ready` when the template is synced, and
///   `Ready=False` with the Clerk reason when not;
/// - otherwise `Ready=True`, reason `Ready`, listing the outputs.
#[must_use]
pub fn ready_condition(token: &OutputState, clerk: &OutputState) -> DesiredCondition {
    use crate::core::well_known::{condition::READY, reason};
    match (token, clerk) {
        (OutputState::Failed { reason, message }, _)
        | (OutputState::NotRequested, OutputState::Failed { reason, message }) => {
            DesiredCondition::fails(READY, reason, message.clone())
        }
        (OutputState::Usable(token), OutputState::Failed { reason, message }) => DesiredCondition::holds(
            READY,
            reason::DEGRADED,
            format!("{token} is current; the Clerk template is not synced ({reason}: {message})"),
        ),
        (token, clerk) => {
            let usable: Vec<&str> = [token, clerk]
                .into_iter()
                .filter_map(|output| match output {
                    OutputState::Usable(what) => Some(what.as_str()),
                    _ => None,
                })
                .collect();
            DesiredCondition::holds(READY, reason::READY, usable.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, DesiredCondition::holds("Ready", "Issued", "ok"), Some(1), at(100));
        set_condition(
            &mut conditions,
            DesiredCondition::holds("Ready", "Renewed", "renewed"),
            Some(2),
            at(200),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, Time(at(100)));
        assert_eq!(conditions[0].reason, "Renewed");
        assert_eq!(conditions[0].observed_generation, Some(2));
        set_condition(
            &mut conditions,
            DesiredCondition::fails("Ready", "SecretConflict", "no"),
            Some(2),
            at(300),
        );
        assert_eq!(conditions[0].last_transition_time, Time(at(300)));
        assert!(!is_true(&conditions, "Ready"));
    }

    fn usable(what: &str) -> OutputState {
        OutputState::Usable(what.to_owned())
    }

    fn failed(reason: &'static str, message: &str) -> OutputState {
        OutputState::Failed { reason, message: message.to_owned() }
    }

    const TOKEN: &str = "token in Secret acme-token";
    const CLERK: &str = "Clerk template in ConfigMap acme-clerk-template";

    #[test]
    fn both_outputs_usable_is_ready_listing_them() {
        assert_eq!(
            ready_condition(&usable(TOKEN), &usable(CLERK)),
            DesiredCondition::holds("Ready", "Ready", format!("{TOKEN}; {CLERK}"))
        );
        assert_eq!(
            ready_condition(&usable(TOKEN), &OutputState::NotRequested),
            DesiredCondition::holds("Ready", "Ready", TOKEN)
        );
        assert_eq!(
            ready_condition(&OutputState::NotRequested, &usable(CLERK)),
            DesiredCondition::holds("Ready", "Ready", CLERK)
        );
    }

    #[test]
    fn a_token_that_is_not_current_is_not_ready_whatever_clerk_does() {
        let refused = failed("SecretConflict", "Secret acme/acme-token exists");
        for clerk in [usable(CLERK), OutputState::NotRequested, failed("ClerkUnavailable", "503")] {
            assert_eq!(
                ready_condition(&refused, &clerk),
                DesiredCondition::fails("Ready", "SecretConflict", "Secret acme/acme-token exists"),
                "{clerk:?}"
            );
        }
    }

    #[test]
    fn a_clerk_outage_leaves_a_current_token_ready_but_degraded() {
        let ready = ready_condition(&usable(TOKEN), &failed("ClerkUnavailable", "Clerk answered 503"));
        assert!(ready.status, "the token Secret the workloads use is current");
        assert_eq!(ready.reason, "Degraded");
        assert_eq!(
            ready.message,
            "token in Secret acme-token is current; the Clerk template is not synced (ClerkUnavailable: Clerk answered 503)"
        );
    }

    #[test]
    fn a_clerk_only_access_whose_template_is_not_synced_is_not_ready() {
        assert_eq!(
            ready_condition(&OutputState::NotRequested, &failed("RateLimited", "Clerk throttled")),
            DesiredCondition::fails("Ready", "RateLimited", "Clerk throttled")
        );
    }

    #[test]
    fn messages_are_redacted() {
        let mut conditions = Vec::new();
        let leaky = "Invalid token b'eyJhbGciOiJIUzI1NiJ9.eyJuYW1lIjoiYSJ9.c2ln'";
        set_condition(&mut conditions, DesiredCondition::fails("Ready", "X", leaky), None, at(1));
        assert!(!conditions[0].message.contains("eyJ"));
    }
}
