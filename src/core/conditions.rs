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

    #[test]
    fn messages_are_redacted() {
        let mut conditions = Vec::new();
        let leaky = "Invalid token b'eyJhbGciOiJIUzI1NiJ9.eyJuYW1lIjoiYSJ9.c2ln'";
        set_condition(&mut conditions, DesiredCondition::fails("Ready", "X", leaky), None, at(1));
        assert!(!conditions[0].message.contains("eyJ"));
    }
}
