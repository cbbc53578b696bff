//! The plan stage: from what is observed of a TenantAccess's outputs and its admitted access at
//! `now`, the writes a reconcile makes (the token decision with its reason, the Secret to write
//! or repair, the Clerk template and its ConfigMap) and what the status reports. Pure: the
//! controller runs it on what it observed, `tenant-access render` on nothing observed, so
//! render prints what the controller writes for a first issuance.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference};

use crate::api::TokenStatus;
use crate::core::conditions::{DesiredCondition, find};
use crate::core::desired::{
    ClerkTemplate, IssuedToken, access_claims, clerk_template, desired_clerk_configmap, desired_secret,
    issue_token,
};
use crate::core::jwt::SignError;
use crate::core::reconcile::decide::{
    IssueReason, Observed, ObservedToken, TokenDecision, decide_token, renew_request, spread_fraction,
};
use crate::core::signing_workspace::SigningWorkspace;
use crate::core::validate::ValidatedAccess;
use crate::core::well_known::{ANNOTATION_REVISION, condition, reason};

/// Everything the plan looks at.
pub struct Inputs<'a> {
    /// The admitted access (the workspace's policy applied).
    pub access: &'a ValidatedAccess,
    /// The workspace that signs.
    pub signer: &'a SigningWorkspace,
    /// The TenantAccess's uid (the controller of its outputs).
    pub owner_uid: &'a str,
    /// The controller reference its outputs carry.
    pub owner: Option<OwnerReference>,
    /// What is known of the token Secret.
    pub secret: ObservedToken<'a>,
    /// Whether the Secret as observed lacks something of the desired one (a label, an
    /// annotation, a key, the owner): the caller knows how it observed it (read, or a digest).
    pub secret_lacks: &'a dyn Fn(&Secret) -> bool,
    /// `status.token` as last written.
    pub status_token: Option<&'a TokenStatus>,
    /// The status's conditions as last written.
    pub previous_conditions: &'a [Condition],
    /// The TenantAccess's annotations (the renew request).
    pub annotations: Option<&'a BTreeMap<String, String>>,
    /// The last token revision used, besides those observed (`None`: only those count).
    pub revision_floor: Option<i64>,
    /// The time of the plan.
    pub now: Timestamp,
}

impl std::fmt::Debug for Inputs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inputs")
            .field("access", &self.access.name)
            .field("revision_floor", &self.revision_floor)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// The writes of one reconcile.
#[derive(Debug)]
pub struct Plan {
    /// The token Secret, when the spec asks for one.
    pub token: Option<TokenPlan>,
    /// The Clerk template and its ConfigMap, when the spec asks for one.
    pub clerk: Option<ClerkPlan>,
}

/// What happens to the token Secret.
#[derive(Debug)]
pub enum TokenPlan {
    /// A Secret of that name is someone else's: it is left alone, and the token is refused with
    /// this message (reason `SecretConflict`).
    Conflict {
        /// The message for the conditions.
        message: String,
    },
    /// A new token is signed and written.
    Issue(Box<Issued>),
    /// The token stays.
    Keep(Box<Kept>),
}

/// A token to sign and write.
#[derive(Debug)]
pub struct Issued {
    /// Why.
    pub reason: IssueReason,
    /// The event (and condition) reason: `Issued`, `Renewed` or `Resigned`.
    pub event_reason: &'static str,
    /// The new token.
    pub token: IssuedToken,
    /// Its revision.
    pub revision: i64,
    /// The Secret to write.
    pub secret: Secret,
    /// `status.token` once written.
    pub status: TokenStatus,
    /// The TokenIssued condition once written.
    pub condition: DesiredCondition,
}

/// A token that stays.
#[derive(Debug)]
pub struct Kept {
    /// The token the Secret holds.
    pub token: IssuedToken,
    /// Its revision.
    pub revision: i64,
    /// The Secret to write back when the observed one lacks something of it (token kept).
    pub repair: Option<Secret>,
    /// `status.token`.
    pub status: TokenStatus,
    /// The TokenIssued condition.
    pub condition: DesiredCondition,
}

impl TokenPlan {
    /// When the token is next renewed, and its JWT (for probes), unless refused.
    #[must_use]
    pub fn token(&self) -> Option<&IssuedToken> {
        match self {
            Self::Conflict { .. } => None,
            Self::Issue(issued) => Some(&issued.token),
            Self::Keep(kept) => Some(&kept.token),
        }
    }
}

/// The Clerk template a TenantAccess asks for, and the ConfigMap that shows it.
#[derive(Debug)]
pub struct ClerkPlan {
    /// The template (without its signing key).
    pub template: ClerkTemplate,
    /// Its ConfigMap.
    pub configmap: ConfigMap,
}

/// Plans the writes of one reconcile.
///
/// # Errors
/// Only if signing fails.
pub fn plan(inputs: &Inputs<'_>) -> Result<Plan, SignError> {
    let token = plan_token(inputs)?;
    let clerk = inputs.access.clerk_template.as_ref().map(|output| {
        let template = clerk_template(inputs.access, output, &inputs.signer.workspace_id);
        let configmap = desired_clerk_configmap(inputs.access, &template, inputs.owner.clone());
        ClerkPlan { template, configmap }
    });
    Ok(Plan { token, clerk })
}

/// The token's plan; `None` when the spec asks for no Secret.
fn plan_token(inputs: &Inputs<'_>) -> Result<Option<TokenPlan>, SignError> {
    let Inputs { access, signer, status_token, now, .. } = *inputs;
    let Some(output) = &access.secret else { return Ok(None) };
    let desired_claims_hash = access_claims(access, &signer.workspace_id).hash();
    let decision = decide_token(
        access,
        signer,
        Observed {
            owner_uid: inputs.owner_uid,
            token: inputs.secret,
            desired_claims_hash: &desired_claims_hash,
            status_token,
            annotations: inputs.annotations,
        },
        now,
    );
    let existing = match inputs.secret {
        ObservedToken::Absent => None,
        ObservedToken::Read(secret) | ObservedToken::Digest { secret, .. } => Some(secret),
    };
    let secret_revision =
        existing.and_then(|s| s.metadata.annotations.as_ref()?.get(ANNOTATION_REVISION)?.parse::<i64>().ok());
    let known_revision =
        status_token.map(|t| t.revision).max(secret_revision).max(inputs.revision_floor).unwrap_or(0);
    Ok(Some(match decision {
        TokenDecision::Conflict => TokenPlan::Conflict {
            message: format!(
                "Secret {}/{} exists and is not managed by this TenantAccess: it was left alone; delete it or choose another spec.secret.name",
                access.namespace, output.name
            ),
        },
        TokenDecision::Issue(issue_reason) => {
            let token = issue_token(access, signer, now)?;
            let revision = known_revision + 1;
            let Some(secret) = desired_secret(access, signer, &token, revision, inputs.owner.clone()) else {
                return Ok(None);
            };
            let event_reason = issue_reason.event_reason(status_token.is_none() && existing.is_none());
            Box::new(Issued {
                reason: issue_reason,
                event_reason,
                status: token.status(access, signer, revision, renew_request(inputs.annotations).as_deref()),
                condition: token_condition(event_reason, revision, &token),
                token,
                revision,
                secret,
            })
            .into()
        }
        TokenDecision::Keep(current) => {
            let revision = known_revision.max(1);
            let token = IssuedToken {
                jwt: current.jwt,
                claims_hash: current.claims_hash,
                issued_at: current.issued_at,
                expires_at: current.expires_at,
                renewal_time: current.renewal_time,
            };
            let repair = desired_secret(access, signer, &token, revision, inputs.owner.clone())
                .filter(|desired| (inputs.secret_lacks)(desired));
            let requested = status_token.and_then(|t| t.renew_request.as_deref());
            // A kept token keeps the reason it was last written for.
            let kept_reason = find(inputs.previous_conditions, condition::TOKEN_ISSUED)
                .filter(|c| c.status == "True")
                .map_or(reason::ISSUED, |c| match c.reason.as_str() {
                    reason::RENEWED => reason::RENEWED,
                    reason::RESIGNED => reason::RESIGNED,
                    _ => reason::ISSUED,
                });
            Box::new(Kept {
                status: token.status(access, signer, revision, requested),
                condition: token_condition(kept_reason, revision, &token),
                token,
                revision,
                repair,
            })
            .into()
        }
    }))
}

impl From<Box<Issued>> for TokenPlan {
    fn from(issued: Box<Issued>) -> Self {
        Self::Issue(issued)
    }
}

impl From<Box<Kept>> for TokenPlan {
    fn from(kept: Box<Kept>) -> Self {
        Self::Keep(kept)
    }
}

/// The share of the resync interval over which TenantAccesses' resyncs are spread: a tenth.
const RESYNC_SPREAD_DIVISOR: u32 = 10;

/// When to look at a TenantAccess again after a reconcile at `now` that went through: when its
/// token (`renewal_time`, if it has one) is due for renewal, or at the resync, whichever comes
/// first. The renewal time is already spread per object ([`renewal_time`]), so the reconcile is
/// due exactly then; the resync falls in the last tenth of `resync`, at a point fixed per
/// object, so that objects reconciled together (at start-up) do not all resync together, and
/// each is still looked at within `resync`.
///
/// [`renewal_time`]: crate::core::reconcile::decide::renewal_time
#[must_use]
pub fn look_again(
    renewal_time: Option<Timestamp>,
    access: &ValidatedAccess,
    now: Timestamp,
    resync: Duration,
) -> Duration {
    let spread = resync / RESYNC_SPREAD_DIVISOR;
    let resync = resync.saturating_sub(spread.mul_f64(spread_fraction(&access.namespace, &access.name)));
    match renewal_time {
        // A renewal time already past: at once.
        Some(at) => Duration::try_from(at.duration_since(now)).unwrap_or_default().min(resync),
        None => resync,
    }
}

fn token_condition(reason: &'static str, revision: i64, token: &IssuedToken) -> DesiredCondition {
    DesiredCondition::holds(
        condition::TOKEN_ISSUED,
        reason,
        format!(
            "token revision {revision} expires at {}, renews at {}",
            token.expires_at, token.renewal_time
        ),
    )
}

#[cfg(test)]
mod tests;
