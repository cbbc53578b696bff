use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams};

use super::{CliError, block_on, exit, kube_client};
use crate::api::TenantAccess;
use crate::core::well_known::ANNOTATION_RENEW;

/// Field manager of changes made by the CLI (a user's action, not the operator's).
const CLI_FIELD_MANAGER: &str = "tenant-access-cli";

#[derive(Debug, clap::Args)]
pub(super) struct StatusArgs {
    /// Name of the TenantAccess.
    name: String,
    /// Its namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "TENANT_ACCESS_KUBECONFIG")]
    kubeconfig: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(super) struct RenewArgs {
    /// Name of the TenantAccess.
    name: String,
    /// Its namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "TENANT_ACCESS_KUBECONFIG")]
    kubeconfig: Option<String>,
    /// Wait up to this many seconds for the new token (0: do not wait).
    #[arg(long, default_value_t = 60)]
    wait: u64,
}

fn api_error(what: &str, namespace: &str, name: &str, error: &kube::Error) -> CliError {
    match error {
        kube::Error::Api(status) if status.code == 404 => {
            CliError::Input(format!("TenantAccess {namespace}/{name} not found"))
        }
        other => CliError::Input(format!("{what} TenantAccess {namespace}/{name}: {other}")),
    }
}

pub(super) fn renew(args: &RenewArgs) -> Result<ExitCode, CliError> {
    block_on(async {
        let client = kube_client(args.kubeconfig.as_deref()).await?;
        let api: Api<TenantAccess> = Api::namespaced(client, &args.namespace);
        let before =
            api.get(&args.name).await.map_err(|e| api_error("reading", &args.namespace, &args.name, &e))?;
        let revision = before.status.as_ref().and_then(|s| s.token.as_ref()).map_or(0, |t| t.revision);
        let request = jiff::Timestamp::now().to_string();
        let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_RENEW: request}}});
        api.patch(
            &args.name,
            &PatchParams { field_manager: Some(CLI_FIELD_MANAGER.into()), ..PatchParams::default() },
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| api_error("annotating", &args.namespace, &args.name, &e))?;
        println!("renewal of {}/{} requested ({ANNOTATION_RENEW}={request})", args.namespace, args.name);
        if args.wait == 0 {
            return Ok(ExitCode::SUCCESS);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait);
        loop {
            let now = api
                .get(&args.name)
                .await
                .map_err(|e| api_error("reading", &args.namespace, &args.name, &e))?;
            let token = now.status.as_ref().and_then(|s| s.token.as_ref());
            if let Some(token) = token
                .filter(|t| t.revision > revision && t.renew_request.as_deref() == Some(request.as_str()))
            {
                println!("new token: revision {} expires at {}", token.revision, token.expires_at.0);
                return Ok(ExitCode::SUCCESS);
            }
            if tokio::time::Instant::now() >= deadline {
                eprintln!(
                    "error: no new token after {}s: is the operator running? see `tenant-access status {} -n {}`",
                    args.wait, args.name, args.namespace
                );
                return Ok(ExitCode::from(exit::NOT_READY));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

pub(super) fn status(args: &StatusArgs) -> Result<ExitCode, CliError> {
    block_on(async {
        let client = kube_client(args.kubeconfig.as_deref()).await?;
        let api: Api<TenantAccess> = Api::namespaced(client, &args.namespace);
        let access =
            api.get(&args.name).await.map_err(|e| api_error("reading", &args.namespace, &args.name, &e))?;
        let (text, ready) = describe(&access, jiff::Timestamp::now());
        print!("{text}");
        Ok(if ready { ExitCode::SUCCESS } else { ExitCode::from(exit::NOT_READY) })
    })
}

/// A readable description of a TenantAccess's state, and whether it is Ready.
fn describe(access: &TenantAccess, now: jiff::Timestamp) -> (String, bool) {
    let mut out = String::new();
    let namespace = access.metadata.namespace.as_deref().unwrap_or_default();
    let name = access.metadata.name.as_deref().unwrap_or_default();
    let _ = writeln!(out, "TenantAccess {namespace}/{name}");
    let _ = writeln!(
        out,
        "Workspace:  {} {}",
        access.spec.workspace_ref.kind.as_deref().unwrap_or("TinybirdWorkspace"),
        access.spec.workspace_ref.name
    );
    let status = access.status.clone().unwrap_or_default();
    if status.observed_generation != access.metadata.generation {
        out.push_str("Note:       the operator has not processed the latest spec yet\n");
    }
    out.push_str("Conditions:\n");
    if status.conditions.is_empty() {
        out.push_str("  (none yet: is the operator running?)\n");
    }
    for c in &status.conditions {
        let _ = writeln!(out, "  {:<20} {:<6} {:<18} {}", c.type_, c.status, c.reason, c.message);
    }
    if let Some(token) = &status.token {
        let until = |t: jiff::Timestamp| {
            crate::core::duration::format(jiff::SignedDuration::from_secs(t.as_second() - now.as_second()))
        };
        let _ = writeln!(
            out,
            "Token:      {} in Secret {} (revision {})",
            token.name, token.secret_name, token.revision
        );
        let _ = writeln!(out, "  issued    {}", token.issued_at.0);
        let _ = writeln!(out, "  renews    {} (in {})", token.renewal_time.0, until(token.renewal_time.0));
        let _ = writeln!(out, "  expires   {} (in {})", token.expires_at.0, until(token.expires_at.0));
        let _ = writeln!(out, "  key       {}", token.signing_key_fingerprint);
    }
    if let Some(template) = &status.clerk_template {
        let _ = writeln!(
            out,
            "Clerk:      template {} ({}) key {}",
            template.name,
            template.id.as_deref().unwrap_or("not pushed"),
            template.signing_key_fingerprint
        );
    }
    for endpoint in &status.endpoints {
        let _ = writeln!(
            out,
            "Endpoint:   {} {} {}",
            endpoint.resource,
            if endpoint.healthy { "healthy" } else { "UNHEALTHY" },
            endpoint.message.as_deref().unwrap_or(&endpoint.reason)
        );
    }
    let ready =
        crate::core::conditions::is_true(&status.conditions, crate::core::well_known::condition::READY);
    (out, ready)
}
