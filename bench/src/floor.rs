//! The floor: a tight client making exactly the API writes the operator must make per tenant
//! (server-side apply of the token Secret, then a server-side apply of the TenantAccess status),
//! with the operator's concurrency and client-side QPS limit, and nothing else: no reads, no
//! events, no watches. Tokens are signed with the library, like the operator does.

use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, Resource, ResourceExt};
use tenant_access::adapters::apply::{Ownership, apply_secret, apply_status};
use tenant_access::api::TenantAccess;
use tenant_access::core::conditions::{DesiredCondition, set_condition};
use tenant_access::core::desired::{desired_secret, issue_token};
use tenant_access::core::signing_workspace::SigningWorkspace;
use tenant_access::core::validate::validate_tenant_access;
use tenant_access::core::well_known::{condition, reason};

use crate::error::{BenchError, Result};

/// How the floor client runs.
#[derive(Debug, Clone, Copy)]
pub struct FloorSettings {
    /// Tenants in flight at once (the operator's `--concurrency`).
    pub concurrency: usize,
}

/// Writes a Secret and a status for every TenantAccess, signed with `signer` as revision
/// `revision`. Returns the wall time.
///
/// # Errors
/// A write failed, or a fixture was refused by validation.
pub async fn write_all(
    client: &Client,
    accesses: Vec<TenantAccess>,
    signer: &SigningWorkspace,
    revision: i64,
    settings: FloorSettings,
) -> Result<Duration> {
    let started = Instant::now();
    futures::stream::iter(accesses)
        .map(|access| write_one(client, access, signer, revision))
        .buffer_unordered(settings.concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed())
}

async fn write_one(
    client: &Client,
    access: TenantAccess,
    signer: &SigningWorkspace,
    revision: i64,
) -> Result<()> {
    let namespace = access.namespace().unwrap_or_default();
    let name = access.name_any();
    let validated = validate_tenant_access(&namespace, &name, &access.spec)
        .map_err(|e| BenchError::Fixture(format!("TenantAccess {namespace}/{name}: {e}")))?;
    let now = Timestamp::now();
    let token =
        issue_token(&validated, signer, now).map_err(|e| BenchError::Fixture(format!("signing: {e}")))?;
    let secret = desired_secret(&validated, signer, &token, revision, access.controller_owner_ref(&()))
        .ok_or_else(|| {
            BenchError::Fixture(format!("TenantAccess {namespace}/{name} has no secret output"))
        })?;
    let secret_name = secret.metadata.name.clone().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    apply_secret(&secrets, &secret, Ownership::Force)
        .await
        .map_err(BenchError::kube(format!("floor: applying Secret {namespace}/{secret_name}")))?;

    let generation = access.meta().generation;
    let mut status = access.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let issued = format!(
        "token revision {revision} expires at {}, renews at {}",
        token.expires_at, token.renewal_time
    );
    set_condition(
        &mut status.conditions,
        DesiredCondition::holds(condition::TOKEN_ISSUED, reason::ISSUED, issued),
        generation,
        now,
    );
    set_condition(
        &mut status.conditions,
        DesiredCondition::holds(condition::READY, reason::READY, format!("token in Secret {secret_name}")),
        generation,
        now,
    );
    status.token = Some(token.status(&validated, signer, revision, None));
    let api: Api<TenantAccess> = Api::namespaced(client.clone(), &namespace);
    apply_status(&api, &name, &status)
        .await
        .map_err(BenchError::kube(format!("floor: writing the status of {namespace}/{name}")))?;
    Ok(())
}
