//! `tenant-access revoke --workspace [NS/]NAME`: the emergency revoke. Asks the operator to
//! rotate the workspace's admin token (the annotation `tenantaccess.dev/rotate`), then follows
//! `status.rotation` until every dependent token and Clerk template is on the new key.

use std::process::ExitCode;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use super::cluster::{Connection, api_error};
use super::status::CLI_FIELD_MANAGER;
use super::{CliError, block_on, exit};
use crate::api::{ClusterTinybirdWorkspace, RotationRecord, TinybirdWorkspace, WorkspaceStatus};
use crate::core::rotation::{CLI_PREFIX, phase};
use crate::core::well_known::ANNOTATION_ROTATE;

/// Exit codes of `revoke`, as `--help` lists them.
pub(super) const EXIT_CODES: &str = "Exit codes:
  0  every dependent token Secret and Clerk template is on the new admin token (or, with
     --wait 0, the rotation was requested)
  1  the workspace could not be read or annotated (not found; forbidden: revoking needs the
     right to patch the workspace), or a Kubernetes call failed
  2  usage error
  6  the rotation did not finish within --wait (it goes on: see the workspace's status.rotation)
  7  Tinybird did not refresh the admin token: nothing changed
  8  the refreshed admin token was lost: follow the runbook printed (README, \"Revoking access\")";

#[derive(Debug, clap::Args)]
pub(super) struct RevokeArgs {
    /// The workspace whose admin token to rotate: `NAMESPACE/NAME` for a TinybirdWorkspace;
    /// `NAME` alone for a ClusterTinybirdWorkspace, or for the TinybirdWorkspace NAME of the
    /// namespace `-n` names.
    #[arg(long, value_name = "[NS/]NAME")]
    workspace: String,
    #[command(flatten)]
    connection: Connection,
    /// Wait up to this many seconds for every dependent to be on the new key (0: only ask).
    #[arg(long, default_value_t = 300)]
    wait: u64,
}

/// Which workspace `--workspace` names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WorkspaceName {
    Namespaced { namespace: String, name: String },
    Cluster { name: String },
}

impl WorkspaceName {
    fn parse(text: &str, namespace: Option<&str>) -> Result<Self, CliError> {
        let bad = || {
            CliError::Input(format!(
                "--workspace {text:?}: expected NAMESPACE/NAME (a TinybirdWorkspace) or NAME (a ClusterTinybirdWorkspace, or with -n a TinybirdWorkspace)"
            ))
        };
        let valid = |part: &str| {
            !part.is_empty()
                && part.len() <= 253
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        };
        match (text.split_once('/'), namespace) {
            (Some((ns, name)), None) if valid(ns) && valid(name) => {
                Ok(Self::Namespaced { namespace: ns.to_owned(), name: name.to_owned() })
            }
            (Some(_), Some(_)) => Err(CliError::Input(format!(
                "--workspace {text:?} names a namespace: drop -n, or name the workspace alone"
            ))),
            (None, Some(ns)) if valid(text) => {
                Ok(Self::Namespaced { namespace: ns.to_owned(), name: text.to_owned() })
            }
            (None, None) if valid(text) => Ok(Self::Cluster { name: text.to_owned() }),
            _ => Err(bad()),
        }
    }

    fn label(&self) -> String {
        match self {
            Self::Namespaced { namespace, name } => format!("TinybirdWorkspace {namespace}/{name}"),
            Self::Cluster { name } => format!("ClusterTinybirdWorkspace {name}"),
        }
    }

    /// Sets the annotation; the error names the missing right when RBAC refuses.
    async fn annotate(&self, client: &Client, request: &str) -> Result<(), CliError> {
        let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_ROTATE: request}}});
        let params = PatchParams { field_manager: Some(CLI_FIELD_MANAGER.into()), ..PatchParams::default() };
        let result = match self {
            Self::Namespaced { namespace, name } => {
                Api::<TinybirdWorkspace>::namespaced(client.clone(), namespace)
                    .patch(name, &params, &Patch::Merge(&patch))
                    .await
                    .map(drop)
            }
            Self::Cluster { name } => Api::<ClusterTinybirdWorkspace>::all(client.clone())
                .patch(name, &params, &Patch::Merge(&patch))
                .await
                .map(drop),
        };
        result.map_err(|error| match &error {
            kube::Error::Api(status) if status.code == 403 => CliError::Input(format!(
                "you may not patch {} (Kubernetes RBAC refused: {}): revoking its admin token needs the right to patch it; ask whoever administers the workspace",
                self.label(),
                status.message
            )),
            _ => self.api_error("annotating", &error),
        })
    }

    async fn status(&self, client: &Client) -> Result<Option<WorkspaceStatus>, CliError> {
        match self {
            Self::Namespaced { namespace, name } => {
                Api::<TinybirdWorkspace>::namespaced(client.clone(), namespace)
                    .get(name)
                    .await
                    .map(|w| w.status)
                    .map_err(|e| self.api_error("reading", &e))
            }
            Self::Cluster { name } => Api::<ClusterTinybirdWorkspace>::all(client.clone())
                .get(name)
                .await
                .map(|w| w.status)
                .map_err(|e| self.api_error("reading", &e)),
        }
    }

    fn api_error(&self, what: &str, error: &kube::Error) -> CliError {
        match self {
            Self::Namespaced { namespace, name } => {
                api_error(what, "TinybirdWorkspace", namespace, name, error)
            }
            Self::Cluster { name } => match error {
                kube::Error::Api(status) if status.code == 404 => CliError::Input(format!(
                    "ClusterTinybirdWorkspace {name} not found (for a TinybirdWorkspace, write NAMESPACE/NAME)"
                )),
                other => CliError::Input(format!(
                    "{what} ClusterTinybirdWorkspace {name}: {}",
                    crate::adapters::kube_error::describe(other)
                )),
            },
        }
    }
}

/// A fresh request value: the time and a little noise, so that two revokes never share one.
fn fresh_request() -> String {
    let now = jiff::Timestamp::now();
    let noise = now.subsec_nanosecond().unsigned_abs() ^ std::process::id().rotate_left(16);
    format!("{CLI_PREFIX}{}-{noise:08x}", now.strftime("%Y%m%dT%H%M%SZ"))
}

pub(super) fn revoke(args: &RevokeArgs) -> Result<ExitCode, CliError> {
    let workspace = WorkspaceName::parse(&args.workspace, args.connection.namespace.as_deref())?;
    block_on(async {
        let (client, _) = args.connection.connect().await?;
        if workspace.status(&client).await?.and_then(|s| s.rotation).is_none() {
            eprintln!(
                "warning: {} has no status.rotation: is an operator that knows rotations running?",
                workspace.label()
            );
        }
        let request = fresh_request();
        workspace.annotate(&client, &request).await?;
        println!("{}: rotation requested ({ANNOTATION_ROTATE}={request})", workspace.label());
        if args.wait == 0 {
            return Ok(ExitCode::SUCCESS);
        }
        follow(&client, &workspace, &request, Duration::from_secs(args.wait)).await
    })
}

/// Prints the rotation's progress until it ends or `wait` passes.
async fn follow(
    client: &Client,
    workspace: &WorkspaceName,
    request: &str,
    wait: Duration,
) -> Result<ExitCode, CliError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut said = String::new();
    loop {
        let status = workspace.status(client).await?;
        let record = status
            .as_ref()
            .and_then(|s| s.rotation.as_ref())
            .and_then(|r| r.history.iter().find(|r| r.request == request).cloned());
        let (line, ended) = match &record {
            None => ("waiting for the operator to take up the request".to_owned(), None),
            Some(record) => progress_line(record),
        };
        if line != said {
            println!("{line}");
            said = line;
        }
        if let Some(code) = ended {
            let message = record.as_ref().and_then(|r| r.message.clone()).unwrap_or_default();
            if record.as_ref().is_some_and(|r| r.phase != phase::COMPLETE && r.phase != phase::SUPERSEDED) {
                eprintln!("error: {message}");
            } else if message.contains(crate::core::secret_writers::MANAGED_ELSEWHERE) {
                // Done, but another tool will write the old token back over the new one.
                eprintln!("warning: {message}");
            }
            return Ok(ExitCode::from(code));
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "error: the rotation did not finish within {}s ({said}); it goes on: follow status.rotation of {}",
                wait.as_secs(),
                workspace.label()
            );
            return Ok(ExitCode::from(exit::NOT_READY));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One line on a rotation's state, and its exit code once it has ended.
fn progress_line(record: &RotationRecord) -> (String, Option<u8>) {
    let counts = |p: Option<crate::api::RotationProgress>| {
        p.map_or("?".to_owned(), |p| format!("{}/{}", p.on_new_key, p.total))
    };
    match record.phase.as_str() {
        phase::REFRESHING => ("refreshing the admin token at Tinybird".to_owned(), None),
        phase::RESIGNING => (
            format!(
                "re-signing: token Secrets on the new key {}, Clerk templates {}",
                counts(record.tokens),
                counts(record.templates)
            ),
            None,
        ),
        phase::COMPLETE | phase::SUPERSEDED => (
            format!(
                "done ({}): key {} -> {}; every token Secret on the new key {} after the refresh ({}), every Clerk template {} after ({})",
                record.phase,
                record.old_key_fingerprint.as_deref().unwrap_or("?"),
                record.new_key_fingerprint.as_deref().unwrap_or("?"),
                record.secrets_on_new_key_after.as_deref().unwrap_or("?"),
                counts(record.tokens),
                record.templates_on_new_key_after.as_deref().unwrap_or("?"),
                counts(record.templates),
            ),
            Some(0),
        ),
        phase::NOT_REFRESHED => ("not refreshed".to_owned(), Some(exit::NOT_REFRESHED)),
        phase::KEY_LOST => ("the refreshed admin token was lost".to_owned(), Some(exit::KEY_LOST)),
        other => (format!("phase {other}"), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_is_named_as_namespace_slash_name_or_alone_for_the_cluster_kind() {
        assert_eq!(
            WorkspaceName::parse("team-a/analytics", None).unwrap(),
            WorkspaceName::Namespaced { namespace: "team-a".into(), name: "analytics".into() }
        );
        assert_eq!(
            WorkspaceName::parse("shared", None).unwrap(),
            WorkspaceName::Cluster { name: "shared".into() }
        );
        assert_eq!(
            WorkspaceName::parse("analytics", Some("team-a")).unwrap(),
            WorkspaceName::Namespaced { namespace: "team-a".into(), name: "analytics".into() }
        );
        for bad in ["", "/x", "a/", "a/b/c", "UPPER?"] {
            assert!(WorkspaceName::parse(bad, None).is_err(), "{bad}");
        }
        assert!(WorkspaceName::parse("a/b", Some("c")).is_err());
    }

    #[test]
    fn a_fresh_request_is_a_cli_request_short_enough_to_keep_as_it_is() {
        let request = fresh_request();
        assert!(request.starts_with(CLI_PREFIX));
        assert_eq!(crate::core::rotation::request_id(&request), request);
        assert_eq!(crate::core::rotation::trigger_of(&request), crate::core::rotation::trigger::CLI);
    }
}
