//! Clerk template sync: create, adopt (only with the operator's marker), update when the body or
//! the signing key changed, delete on TenantAccess deletion with `deletionPolicy: Delete`.

use std::time::Duration;

use kube::ResourceExt as _;

use crate::adapters::events::EventType;

use super::context::Context;
use super::workspace_cache::{ClerkCredentials, WorkspaceProblem};
use crate::adapters::clerk::{ClerkClient, ClerkError, RemoteTemplate, Requester};
use crate::api::{ClerkTemplateStatus, TenantAccess};
use crate::core::conditions::DesiredCondition;
use crate::core::desired::{CLERK_OWNER_CLAIM, ClerkTemplate};
use crate::core::signing_workspace::SigningWorkspace;
use crate::core::well_known::{clerk_reason, condition};

/// What the sync did.
#[derive(Debug)]
pub(super) enum SyncOutcome {
    /// In sync (or nothing to push); the condition and status to record.
    Done { condition: DesiredCondition, status: Option<ClerkTemplateStatus> },
    /// Not in sync; retry after the delay.
    Failed { condition: DesiredCondition, retry_after: Duration },
    /// Not in sync yet: Clerk's rate limit (or the operator's share of it) has no room now, and
    /// the sync comes back after the delay. Not a failure: nothing is wrong with the template.
    Waiting { condition: DesiredCondition, retry_after: Duration },
}

/// Clerk's error code for a template name already in use.
const NAME_TAKEN: &str = "form_identifier_exists";

fn failed(reason: &'static str, message: String, retry_after: Duration) -> SyncOutcome {
    SyncOutcome::Failed {
        condition: DesiredCondition::fails(condition::CLERK_TEMPLATE_SYNCED, reason, message),
        retry_after,
    }
}

fn from_error(error: &ClerkError, ctx: &Context, access: &TenantAccess) -> SyncOutcome {
    if let ClerkError::RateLimited { retry_after, .. } = error {
        // No countdown in the message: it would change the status at every pass.
        let message = "waiting for Clerk's rate limit: the template is pushed as soon as the budget allows (the operator's requests to this Clerk instance are at their --clerk-request-budget, or Clerk answered 429); not a failure, and the token Secret is not held back";
        return SyncOutcome::Waiting {
            condition: DesiredCondition::fails(
                condition::CLERK_TEMPLATE_SYNCED,
                crate::adapters::clerk::reason::RATE_LIMITED,
                message,
            ),
            retry_after: *retry_after,
        };
    }
    let retry_after = error.retry_after().unwrap_or_else(|| ctx.retries.failed(access).1);
    failed(error.reason(), error.to_string(), retry_after)
}

/// The status of a template pushed to Clerk as `id` with this body and key.
fn pushed_status(id: &str, template: &ClerkTemplate, signer: &SigningWorkspace) -> ClerkTemplateStatus {
    ClerkTemplateStatus {
        id: Some(id.to_owned()),
        name: template.name.clone(),
        claims_hash: template.hash(),
        signing_key_fingerprint: signer.signing_key_fingerprint.clone(),
        token_name: Some(template.claims.access.name.clone()),
    }
}

/// Tells the team, at each push, that the template's tokens have no rate limit.
fn warn_if_unlimited(access: &TenantAccess, template: &ClerkTemplate, ctx: &Context) {
    if template.claims.access.limits.is_none() {
        ctx.events.publish(
            access,
            EventType::Warning,
            "ClerkTemplateUnlimited",
            "SyncClerkTemplate",
            &format!(
                "Clerk template {} has no limits.rps: every signed-in user may query its pipes without limit; set spec.limits.rps",
                template.name
            ),
        );
    }
}

/// Whose share of the Clerk budget a push counts against: its namespace's, and urgent when it
/// carries a rotated signing key (every token the template mints fails until it lands).
fn requester(
    access: &TenantAccess,
    previous: Option<&ClerkTemplateStatus>,
    signer: &SigningWorkspace,
) -> Requester {
    let rotated = previous.is_some_and(|p| p.signing_key_fingerprint != signer.signing_key_fingerprint);
    Requester::new(&access.namespace().unwrap_or_default(), rotated)
}

/// Whether [`sync`] would call Clerk: the workspace has a usable Clerk connection and the
/// template last pushed (`previous`) is not `template` signed with the signer's key.
pub(super) fn needs_push(
    template: &ClerkTemplate,
    signer: &SigningWorkspace,
    connection: Option<&Result<ClerkCredentials, WorkspaceProblem>>,
    previous: Option<&ClerkTemplateStatus>,
) -> bool {
    let in_sync = previous.and_then(|previous| {
        previous.id.as_deref().map(|id| *previous == pushed_status(id, template, signer))
    });
    matches!(connection, Some(Ok(_))) && in_sync != Some(true)
}

/// Brings the remote template in line with `template`.
pub(super) async fn sync(
    access: &TenantAccess,
    template: &ClerkTemplate,
    signer: &SigningWorkspace,
    connection: Option<&Result<ClerkCredentials, WorkspaceProblem>>,
    previous: Option<&ClerkTemplateStatus>,
    ctx: &Context,
) -> SyncOutcome {
    let credentials = match connection {
        None => {
            return SyncOutcome::Done {
                condition: DesiredCondition::holds(
                    condition::CLERK_TEMPLATE_SYNCED,
                    clerk_reason::RENDERED_ONLY,
                    "rendered to the ConfigMap only: the workspace has no Clerk connection (spec.clerk)",
                ),
                // Keep the record of what was pushed: a lost connection deletes nothing.
                status: previous.cloned(),
            };
        }
        Some(Err(problem)) => {
            let retry = ctx.retries.failed(access).1;
            return failed(problem.reason, format!("Clerk connection: {}", problem.message), retry);
        }
        Some(Ok(credentials)) => credentials,
    };
    let client = match ctx.apis.clerk.get_or_create(&credentials.api_url, credentials.secret_key()) {
        Ok(client) => client.on_behalf_of(requester(access, previous, signer)),
        Err(error) => return from_error(&error, ctx, access),
    };
    let desired_status = |id: &str| pushed_status(id, template, signer);
    let synced = |status: ClerkTemplateStatus, how: &str| SyncOutcome::Done {
        condition: DesiredCondition::holds(
            condition::CLERK_TEMPLATE_SYNCED,
            clerk_reason::SYNCED,
            format!(
                "template {} ({}) {how} with key {}",
                status.name,
                status.id.as_deref().unwrap_or("?"),
                status.signing_key_fingerprint
            ),
        ),
        status: Some(status),
    };

    // Known template: in sync, or PATCH the whole body. The name is part of that body, so a
    // renamed template (a new spec.clerkTemplate.name, or the default name of an older release)
    // keeps its id and is renamed in place: never a second template, never a moment with none.
    if let Some(previous) = previous
        && let Some(id) = previous.id.as_deref()
    {
        if *previous == desired_status(id) {
            return synced(previous.clone(), "is in sync");
        }
        match client.update(id, template, &signer.key).await {
            Ok(remote) => {
                let token_name = &template.claims.access.name;
                let why = if previous.name != template.name {
                    format!("it was renamed from {:?}", previous.name)
                } else if previous.token_name.as_ref() != Some(token_name) {
                    // Templates pushed before rate-limit keys existed carry no token name in
                    // status: their tokens shared one name, and one rate limit.
                    format!(
                        "its token name (the Tinybird rate-limit bucket) is now {token_name:?}, was {}",
                        previous.token_name.as_deref().map_or_else(
                            || "one name shared by every user (templates of earlier releases)".to_owned(),
                            |old| format!("{old:?}")
                        )
                    )
                } else if previous.signing_key_fingerprint == signer.signing_key_fingerprint {
                    "the template changed".to_owned()
                } else {
                    "the signing key rotated".to_owned()
                };
                ctx.events.publish(
                    access,
                    EventType::Normal,
                    "ClerkTemplateUpdated",
                    "SyncClerkTemplate",
                    &format!("updated Clerk template {} ({}) because {why}", remote.name, remote.id),
                );
                warn_if_unlimited(access, template, ctx);
                return synced(desired_status(&remote.id), "updated");
            }
            Err(error) if error.reason() == crate::adapters::clerk::reason::NOT_FOUND => {
                tracing::info!(template = %template.name, "the Clerk template was deleted outside the operator; creating it again");
            }
            Err(error) if previous.name != template.name && error.code() == Some(NAME_TAKEN) => {
                let message = format!(
                    "Clerk template {id} cannot be renamed from {:?} to {:?}: another Clerk template has that name; it was left alone: delete or rename it in Clerk, or choose another spec.clerkTemplate.name",
                    previous.name, template.name
                );
                let retry = ctx.retries.failed(access).1.max(Duration::from_secs(60));
                return failed(clerk_reason::CONFLICT, message, retry);
            }
            Err(error) => return from_error(&error, ctx, access),
        }
    }
    create_or_adopt(access, template, signer, &client, ctx, &desired_status)
        .await
        .unwrap_or_else(|outcome| outcome)
}

async fn create_or_adopt(
    access: &TenantAccess,
    template: &ClerkTemplate,
    signer: &SigningWorkspace,
    client: &ClerkClient,
    ctx: &Context,
    desired_status: &(dyn Fn(&str) -> ClerkTemplateStatus + Sync),
) -> Result<SyncOutcome, SyncOutcome> {
    let existing = client.find_by_name(&template.name).await.map_err(|e| from_error(&e, ctx, access))?;
    let (remote, event, how): (RemoteTemplate, &str, &str) = match existing {
        Some(remote) if owner_of(&remote) == Some(template.claims.owner.as_str()) => {
            let remote = client
                .update(&remote.id, template, &signer.key)
                .await
                .map_err(|e| from_error(&e, ctx, access))?;
            (remote, "ClerkTemplateAdopted", "adopted")
        }
        Some(remote) => {
            let message = format!(
                "a Clerk template named {:?} ({}) already exists and is not managed by this TenantAccess (its claims lack {CLERK_OWNER_CLAIM}: {:?}); it was left alone: delete or rename it in Clerk, or choose another spec.clerkTemplate.name",
                remote.name, remote.id, template.claims.owner
            );
            let retry = ctx.retries.failed(access).1.max(Duration::from_secs(60));
            return Err(failed(clerk_reason::CONFLICT, message, retry));
        }
        None => {
            let remote =
                client.create(template, &signer.key).await.map_err(|e| from_error(&e, ctx, access))?;
            (remote, "ClerkTemplateCreated", "created")
        }
    };
    ctx.events.publish(
        access,
        EventType::Normal,
        event,
        "SyncClerkTemplate",
        &format!(
            "{how} Clerk template {} ({}) with key {}",
            remote.name, remote.id, signer.signing_key_fingerprint
        ),
    );
    warn_if_unlimited(access, template, ctx);
    let status = desired_status(&remote.id);
    Ok(SyncOutcome::Done {
        condition: DesiredCondition::holds(
            condition::CLERK_TEMPLATE_SYNCED,
            clerk_reason::SYNCED,
            format!(
                "template {} ({}) {how} with key {}",
                status.name, remote.id, status.signing_key_fingerprint
            ),
        ),
        status: Some(status),
    })
}

/// The operator's marker in a remote template's claims.
fn owner_of(remote: &RemoteTemplate) -> Option<&str> {
    remote.claims.get(CLERK_OWNER_CLAIM).and_then(|v| v.as_str())
}

/// Whether the TenantAccess carries the Clerk finalizer.
pub(super) fn has_finalizer(access: &TenantAccess) -> bool {
    access.metadata.finalizers.iter().flatten().any(|f| f == crate::core::well_known::FINALIZER)
}

/// Deletes the remote template (404 is success); `why` ends the event's message. `urgent`: a
/// withdrawal's deletion, ahead of routine pushes.
///
/// # Errors
/// Clerk failures other than "not found" (the deletion is retried).
pub(super) async fn delete_remote(
    access: &TenantAccess,
    credentials: &ClerkCredentials,
    id: &str,
    ctx: &Context,
    why: &str,
    urgent: bool,
) -> Result<(), ClerkError> {
    let requester = Requester::new(&access.namespace().unwrap_or_default(), urgent);
    let client =
        ctx.apis.clerk.get_or_create(&credentials.api_url, credentials.secret_key())?.on_behalf_of(requester);
    client.delete(id).await?;
    ctx.events.publish(
        access,
        EventType::Normal,
        "ClerkTemplateDeleted",
        "DeleteClerkTemplate",
        &format!("deleted Clerk template {id} ({why})"),
    );
    Ok(())
}
