//! Custody of refreshed admin tokens: from Tinybird's answer until the token is in its Secret,
//! the only copy of a workspace's admin token is in this process's memory. Each one is written
//! by a task of its own, retried with bounded backoff for as long as the process lives: not a
//! reconcile (which the controller may cancel, e.g. when the leader lease is lost), and the
//! process does not exit before every held token has landed ([`KeyCustody::drained`]). The
//! Secret write is the truth: whoever leads afterwards reads the token from there.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use base64::Engine as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

use super::workspace_cache::WorkspaceKey;
use crate::core::admin_token::AdminToken;
use crate::core::backoff::{Backoff, Retries};
use crate::core::clock::Clock;
use crate::core::well_known::{ANNOTATION_ALLOWED_WORKSPACES, FIELD_MANAGER};

/// Delays between attempts to write a held token: short (every second of it is an outage for
/// every tenant), bounded.
const WRITE_BACKOFF: Backoff = Backoff { base: Duration::from_millis(100), cap: Duration::from_secs(2) };

/// Where a held token goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretTarget {
    /// Namespace of the admin-token Secret.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The data key.
    pub key: String,
    /// How the Secret's `tenantaccess.dev/allowed-workspaces` annotation names the workspace
    /// (used only if the Secret must be created again: it was deleted meanwhile).
    pub allowed_as: String,
}

impl std::fmt::Display for SecretTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} (key {})", self.namespace, self.name, self.key)
    }
}

/// A held token's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Custody {
    /// Not in the Secret yet: being written.
    Holding {
        /// The rotation request it answers.
        request: String,
    },
    /// In the Secret.
    Landed {
        /// The rotation request it answers.
        request: String,
        /// Fingerprint of the new token.
        fingerprint: String,
        /// When Tinybird answered the refresh.
        refreshed_at: Timestamp,
    },
}

/// The refreshed tokens of this process, by workspace.
#[derive(Clone, Debug)]
pub struct KeyCustody {
    held: Arc<Mutex<HashMap<WorkspaceKey, Custody>>>,
    /// How many tokens are held and not landed.
    holding: Arc<tokio::sync::watch::Sender<usize>>,
}

static PROCESS: LazyLock<KeyCustody> = LazyLock::new(|| KeyCustody {
    held: Arc::default(),
    holding: Arc::new(tokio::sync::watch::Sender::new(0)),
});

impl KeyCustody {
    /// The custody of this process (one, whatever runs the controllers: a held token outlives
    /// them).
    #[must_use]
    pub fn process() -> Self {
        PROCESS.clone()
    }

    /// The state of the token held for `workspace`, if any.
    #[must_use]
    pub fn state(&self, workspace: &WorkspaceKey) -> Option<Custody> {
        self.held.lock().ok()?.get(workspace).cloned()
    }

    /// Forgets a landed token (its record says so now).
    pub fn release(&self, workspace: &WorkspaceKey) {
        if let Ok(mut held) = self.held.lock()
            && matches!(held.get(workspace), Some(Custody::Landed { .. }))
        {
            held.remove(workspace);
        }
    }

    /// Takes `token` into custody and writes it into `target` until it lands (a task of its
    /// own). Returns at once.
    pub fn hold(
        &self,
        client: kube::Client,
        (workspace, request): (WorkspaceKey, String),
        target: SecretTarget,
        token: AdminToken,
        clock: Clock,
    ) {
        let refreshed_at = clock.now();
        if let Ok(mut held) = self.held.lock() {
            held.insert(workspace.clone(), Custody::Holding { request: request.clone() });
        }
        self.holding.send_modify(|n| *n += 1);
        let custody = self.clone();
        tokio::spawn(async move {
            write_until_landed(&client, &target, &token).await;
            if let Ok(mut held) = custody.held.lock() {
                held.insert(
                    workspace,
                    Custody::Landed { request, fingerprint: token.fingerprint(), refreshed_at },
                );
            }
            custody.holding.send_modify(|n| *n = n.saturating_sub(1));
        });
    }

    /// Resolves once no token is held outside its Secret (at once when none is).
    pub async fn drained(&self) {
        let mut holding = self.holding.subscribe();
        if *holding.borrow_and_update() > 0 {
            tracing::warn!(
                "a refreshed admin token is not in its Secret yet: waiting for the write before exiting (it is the only copy)"
            );
        }
        let _ = holding.wait_for(|n| *n == 0).await;
    }

    /// Waits up to `limit` for the token held for `workspace` to land; whether it has.
    pub async fn wait_landed(&self, workspace: &WorkspaceKey, limit: Duration) -> bool {
        let mut holding = self.holding.subscribe();
        let landed = || !matches!(self.state(workspace), Some(Custody::Holding { .. }));
        tokio::time::timeout(limit, async {
            while !landed() {
                if holding.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
            && landed()
    }
}

/// Writes the token into the Secret, retrying every failure with bounded backoff until it lands.
async fn write_until_landed(client: &kube::Client, target: &SecretTarget, token: &AdminToken) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &target.namespace);
    let mut retries = Retries::new(WRITE_BACKOFF);
    loop {
        match write_once(&secrets, target, token).await {
            Ok(()) => {
                tracing::info!(secret = %target, key = %token.fingerprint(), attempts = retries.attempts() + 1, "the refreshed admin token is in its Secret");
                return;
            }
            Err(error) => {
                let delay = retries.next().unwrap_or(WRITE_BACKOFF.cap);
                tracing::error!(
                    secret = %target,
                    attempts = retries.attempts(),
                    error = %crate::adapters::kube_error::describe(&error),
                    "the refreshed admin token (held in memory only) could not be written into its Secret: retrying"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn write_once(
    secrets: &Api<Secret>,
    target: &SecretTarget,
    token: &AdminToken,
) -> Result<(), kube::Error> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(token.expose());
    let patch = serde_json::json!({"data": {target.key.as_str(): encoded}});
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
    match secrets.patch(&target.name, &params, &Patch::Merge(&patch)).await {
        Err(kube::Error::Api(status)) if status.code == 404 => {
            // Deleted meanwhile: the token must be kept somewhere the workspace reads.
            let secret: Secret = serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": target.name,
                    "annotations": {ANNOTATION_ALLOWED_WORKSPACES: target.allowed_as},
                },
                "data": {target.key.as_str(): encoded},
            }))
            .map_err(kube::Error::SerdeError)?;
            let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
            secrets.create(&params, &secret).await.map(drop)
        }
        other => other.map(drop),
    }
}
