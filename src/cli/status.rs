use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt as _};

use super::cluster::{Selection, api_error};
use super::{CliError, block_on, exit};
use crate::adapters::manifests::to_yaml_stream;
use crate::api::TenantAccess;
use crate::core::conditions::find;
use crate::core::well_known::{ANNOTATION_RENEW, condition};

/// Field manager of changes made by the CLI (a user's action, not the operator's).
pub(super) const CLI_FIELD_MANAGER: &str = "tenant-access-cli";

#[derive(Debug, clap::Args)]
pub(super) struct StatusArgs {
    /// Name of the TenantAccess; without it, every TenantAccess of the namespace (or of `-A`,
    /// `-l`) as a table.
    name: Option<String>,
    #[command(flatten)]
    selection: Selection,
    /// Output: `text` for people, or the TenantAccess objects as `json` or `yaml` (a `List`
    /// when none is named).
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    output: Format,
}

/// Output formats of `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
    Yaml,
}

#[derive(Debug, clap::Args)]
pub(super) struct RenewArgs {
    /// Name of the TenantAccess to renew; or select several with `--all`, `-A` or `-l`.
    name: Option<String>,
    /// Every TenantAccess of the namespace (with `-A`, of every namespace).
    #[arg(long, conflicts_with = "name")]
    all: bool,
    #[command(flatten)]
    selection: Selection,
    /// Wait up to this many seconds for the new tokens (0: do not wait).
    #[arg(long, default_value_t = 60)]
    wait: u64,
}

fn label(access: &TenantAccess) -> String {
    format!("{}/{}", access.namespace().unwrap_or_default(), access.name_any())
}

/// Why a renewal of this TenantAccess cannot give it a new token, if it cannot: it asks for no
/// Secret, or the operator refuses it (its `TokenIssued` condition is False for the current spec).
fn cannot_renew(access: &TenantAccess) -> Option<String> {
    if access.spec.secret.is_none() {
        return Some("has no spec.secret: there is no token to renew".to_owned());
    }
    let status = access.status.as_ref()?;
    if status.observed_generation != access.metadata.generation {
        return None;
    }
    let refused = find(&status.conditions, condition::TOKEN_ISSUED).filter(|c| c.status == "False")?;
    Some(format!(
        "is refused ({}): {}; a renewal cannot issue a token until that is fixed",
        refused.reason, refused.message
    ))
}

pub(super) fn renew(args: &RenewArgs) -> Result<ExitCode, CliError> {
    let selects = args.all || args.selection.is_selection();
    if args.name.is_none() && !selects {
        return Err(CliError::Input(
            "name a TenantAccess, or select several with --all (the namespace), -A or -l".into(),
        ));
    }
    block_on(async {
        let (client, selected) = args.selection.fetch::<TenantAccess>(args.name.as_deref()).await?;
        if selected.objects.is_empty() {
            eprintln!("No TenantAccess found in {}: nothing to renew.", selected.scope);
            return Ok(ExitCode::SUCCESS);
        }
        let request = jiff::Timestamp::now().to_string();
        let mut failed = 0usize;
        // (object, revision before the request) of each renewal requested.
        let mut pending: Vec<(TenantAccess, i64)> = Vec::new();
        for access in selected.objects {
            if let Some(why) = cannot_renew(&access) {
                // In a selection, a TenantAccess without a Secret is simply not one to renew.
                if selects && access.spec.secret.is_none() {
                    println!("{}: skipped: {why}", label(&access));
                } else {
                    eprintln!("error: TenantAccess {} {why}", label(&access));
                    failed += 1;
                }
                continue;
            }
            let (namespace, name) = (access.namespace().unwrap_or_default(), access.name_any());
            let api: Api<TenantAccess> = Api::namespaced(client.clone(), &namespace);
            let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_RENEW: request}}});
            let params =
                PatchParams { field_manager: Some(CLI_FIELD_MANAGER.into()), ..PatchParams::default() };
            api.patch(&name, &params, &Patch::Merge(&patch))
                .await
                .map_err(|e| api_error("annotating", "TenantAccess", &namespace, &name, &e))?;
            println!("{}: renewal requested ({ANNOTATION_RENEW}={request})", label(&access));
            let revision = access.status.as_ref().and_then(|s| s.token.as_ref()).map_or(0, |t| t.revision);
            pending.push((access, revision));
        }
        if args.wait > 0 {
            failed += wait_for_renewals(&client, pending, &request, Duration::from_secs(args.wait)).await?;
        }
        Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(exit::NOT_READY) })
    })
}

/// Waits for a new token in each pending TenantAccess, stopping early for one that is refused
/// meanwhile. Returns how many got none.
async fn wait_for_renewals(
    client: &kube::Client,
    mut pending: Vec<(TenantAccess, i64)>,
    request: &str,
    wait: Duration,
) -> Result<usize, CliError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut failed = 0;
    loop {
        let mut still = Vec::new();
        for (access, revision) in pending {
            let (namespace, name) = (access.namespace().unwrap_or_default(), access.name_any());
            let api: Api<TenantAccess> = Api::namespaced(client.clone(), &namespace);
            let now = api
                .get(&name)
                .await
                .map_err(|e| api_error("reading", "TenantAccess", &namespace, &name, &e))?;
            let token = now.status.as_ref().and_then(|s| s.token.as_ref());
            if let Some(token) =
                token.filter(|t| t.revision > revision && t.renew_request.as_deref() == Some(request))
            {
                println!(
                    "{}: new token: revision {} expires at {}",
                    label(&now),
                    token.revision,
                    token.expires_at.0
                );
            } else if let Some(why) = cannot_renew(&now) {
                eprintln!("error: TenantAccess {} {why}", label(&now));
                failed += 1;
            } else {
                still.push((now, revision));
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(failed);
        }
        if tokio::time::Instant::now() >= deadline {
            for (access, _) in &pending {
                eprintln!(
                    "error: {}: no new token after {}s: is the operator running? see `tenant-access status {} -n {}`",
                    label(access),
                    wait.as_secs(),
                    access.name_any(),
                    access.namespace().unwrap_or_default()
                );
            }
            return Ok(failed + pending.len());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(super) fn status(args: &StatusArgs) -> Result<ExitCode, CliError> {
    block_on(async {
        let (_, selected) = args.selection.fetch::<TenantAccess>(args.name.as_deref()).await?;
        let now = jiff::Timestamp::now();
        let all_ready = selected.objects.iter().all(is_ready);
        let text = match (args.output, args.name.is_some()) {
            (Format::Text, true) => selected.objects.iter().map(|a| describe(a, now)).collect(),
            (Format::Text, false) if selected.objects.is_empty() => {
                eprintln!("No TenantAccess found in {}.", selected.scope);
                String::new()
            }
            (Format::Text, false) => table(&selected.objects, args.selection.all_namespaces, now),
            (format, named) => serialise(&selected.objects, named, format)?,
        };
        print!("{text}");
        Ok(if all_ready { ExitCode::SUCCESS } else { ExitCode::from(exit::NOT_READY) })
    })
}

/// The objects as JSON or YAML: the named one, or a `List` (as `kubectl get -o` prints them).
fn serialise(objects: &[TenantAccess], named: bool, format: Format) -> Result<String, CliError> {
    let failed = |e: &dyn std::fmt::Display| CliError::Input(e.to_string());
    let value = match (named, objects) {
        (true, [one]) => serde_json::to_value(one),
        _ => serde_json::to_value(objects)
            .map(|items| serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})),
    }
    .map_err(|e| failed(&e))?;
    if format == Format::Json {
        return serde_json::to_string_pretty(&value).map(|text| text + "\n").map_err(|e| failed(&e));
    }
    let yaml = to_yaml_stream(std::slice::from_ref(&value)).map_err(|e| failed(&e))?;
    Ok(yaml.trim_start_matches("---\n").to_owned())
}

fn is_ready(access: &TenantAccess) -> bool {
    access.status.as_ref().is_some_and(|s| crate::core::conditions::is_true(&s.conditions, condition::READY))
}

/// One line per TenantAccess, laid out as `kubectl get` does.
fn table(accesses: &[TenantAccess], with_namespace: bool, now: jiff::Timestamp) -> String {
    const COLUMNS: usize = 7;
    let mut rows = vec![
        ["NAMESPACE", "NAME", "READY", "REASON", "REVISION", "RENEWS IN", "EXPIRES IN"].map(str::to_owned),
    ];
    for access in accesses {
        let status = access.status.clone().unwrap_or_default();
        let ready = find(&status.conditions, condition::READY);
        let token = status.token.as_ref();
        let until = |t: jiff::Timestamp| {
            crate::core::duration::format(jiff::SignedDuration::from_secs(t.as_second() - now.as_second()))
        };
        let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
        rows.push([
            access.namespace().unwrap_or_default(),
            access.name_any(),
            ready.map_or_else(|| "Unknown".to_owned(), |c| c.status.clone()),
            ready.map(|c| c.reason.clone()).unwrap_or_default(),
            or_dash(token.map(|t| t.revision.to_string())),
            or_dash(token.map(|t| until(t.renewal_time.0))),
            or_dash(token.map(|t| until(t.expires_at.0))),
        ]);
    }
    let first = usize::from(!with_namespace);
    let widths: Vec<usize> =
        (0..COLUMNS).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> =
            (first..COLUMNS).map(|i| format!("{:<width$}", row[i], width = widths[i])).collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// A readable description of a TenantAccess's state.
fn describe(access: &TenantAccess, now: jiff::Timestamp) -> String {
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
        for isolation in &endpoint.isolation {
            let verdict = match isolation.verdict.as_str() {
                "Unused" => "UNUSED",
                verdict => verdict,
            };
            let _ = writeln!(
                out,
                "  filters by {}: {verdict}{}",
                isolation.param,
                isolation.message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EndpointStatus, ParamIsolation, TenantAccessStatus};

    #[test]
    fn describes_each_endpoints_isolation_verdicts() {
        let mut access: TenantAccess =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "dash", "namespace": "acme"}, "spec": {"workspaceRef": {"name": "analytics"}, "scopes": [{"resource": "event_counts"}]}}))
                .unwrap();
        access.status = Some(TenantAccessStatus {
            endpoints: vec![EndpointStatus {
                resource: "event_counts".into(),
                healthy: true,
                reason: "Healthy".into(),
                isolation: vec![ParamIsolation {
                    param: "org".into(),
                    verdict: "Unused".into(),
                    message: Some("every tenant reads every row".into()),
                }],
                ..EndpointStatus::default()
            }],
            ..TenantAccessStatus::default()
        });
        let text = describe(&access, jiff::Timestamp::UNIX_EPOCH);
        assert!(text.contains("Endpoint:   event_counts healthy Healthy"), "{text}");
        assert!(text.contains("  filters by org: UNUSED (every tenant reads every row)"), "{text}");
    }
}
