//! Scenario "revoke": N tenants, each with a token Secret and a Clerk template; the workspace's
//! admin token is revoked through the annotation `tenantaccess.dev/rotate`. Measured from the
//! refresh at Tinybird (the moment every old token dies) until every token Secret is signed with
//! the new key (the tenants' outage), and until every Clerk template carries it; against the
//! floor of the convergence scenario (the same Secret and status writes by a tight client under
//! the same QPS limit, with the key in hand).

use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde::Serialize;
use serde_json::json;
use tenant_access::api::{ClusterTinybirdWorkspace, KIND_CLUSTER_WORKSPACE, TenantAccess};
use tenant_access::core::admin_token::AdminToken;
use tenant_access::core::jwt::ParsedToken;
use tenant_access::core::well_known::{ANNOTATION_ALLOWED_WORKSPACES, ANNOTATION_ROTATE};
use tenant_access_emulators::{ClerkConfig, ClerkEmulator};

use crate::bench::{Bench, group_selector, median};
use crate::error::{BenchError, Result};
use crate::fixtures::{BENCH_MANAGER, BenchEnv};
use crate::progress::wait_all;

/// Clerk's production budget (1000 requests per 10 s), the emulator's and (90 % of it) the
/// operator's: a revoke of many tenants on a development instance waits for Clerk's 100 per 10 s.
const CLERK_BUDGET: u32 = 1000;
const CLERK_OPERATOR_BUDGET: &str = "900";
const CLERK_WINDOW_SECONDS: u64 = 10;
/// The Clerk secret-key Secret (in the operator's namespace).
const CLERK_SECRET: &str = "clerk-key";

/// One revoke by the operator.
#[derive(Debug, Clone, Serialize)]
pub struct RevokeRun {
    /// Annotation written -> Tinybird refreshed the admin token.
    pub request_to_refresh_seconds: f64,
    /// Refresh -> every token Secret signed with the new key.
    pub secrets_seconds: f64,
    /// Refresh -> every TenantAccess status on the new key (what the floor's time includes).
    pub statuses_seconds: f64,
    /// Refresh -> every Clerk template carrying the new key.
    pub templates_seconds: f64,
    /// The workspace's own record (`status.rotation`): every Secret on the new key after...
    pub recorded_secrets_after: Option<String>,
    /// ... and every template after.
    pub recorded_templates_after: Option<String>,
}

/// The scenario's results.
#[derive(Debug, Clone, Serialize)]
pub struct RevokeResult {
    /// Tenants per run.
    pub tenants: usize,
    /// Operator runs.
    pub runs: Vec<RevokeRun>,
    /// Floor runs: the re-signing writes of every tenant with the key in hand, seconds.
    pub floor_seconds: Vec<f64>,
    /// Median of `runs[].secrets_seconds`.
    pub secrets_median_seconds: f64,
    /// Median of `runs[].templates_seconds`.
    pub templates_median_seconds: f64,
    /// Median of `floor_seconds`.
    pub floor_median_seconds: f64,
    /// Secrets / floor.
    pub secrets_ratio: f64,
}

/// Runs the floor, then the operator, `runs` times each.
///
/// # Errors
/// Any step failing or timing out.
pub async fn run(bench: &mut Bench) -> Result<RevokeResult> {
    let runs = bench.args.runs.max(1);
    let mut floor_seconds = Vec::with_capacity(runs);
    for run in 0..runs {
        let floor = crate::convergence::floor_run(bench, run).await?;
        tracing::info!(run, seconds = floor.rotation_seconds, "revoke floor run done");
        floor_seconds.push(floor.rotation_seconds);
    }
    let clerk = connect_clerk(&bench.env).await?;
    let extra_args = bench.operator.extra_args.clone();
    bench.operator.extra_args.extend(
        ["--clerk-request-budget", CLERK_OPERATOR_BUDGET, "--clerk-budget-window-seconds", "10"]
            .map(str::to_owned),
    );
    let mut measured = Vec::with_capacity(runs);
    let mut outcome = Ok(());
    for run in 0..runs {
        match operator_run(bench, run).await {
            Ok(result) => {
                tracing::info!(
                    run,
                    secrets_s = result.secrets_seconds,
                    templates_s = result.templates_seconds,
                    "revoke run done"
                );
                measured.push(result);
            }
            Err(error) => {
                outcome = Err(error);
                break;
            }
        }
    }
    bench.operator.extra_args = extra_args;
    disconnect_clerk(&bench.env).await?;
    drop(clerk);
    outcome?;
    let secrets_median_seconds = median(&measured.iter().map(|r| r.secrets_seconds).collect::<Vec<_>>());
    let floor_median_seconds = median(&floor_seconds);
    Ok(RevokeResult {
        tenants: bench.args.tenants,
        templates_median_seconds: median(&measured.iter().map(|r| r.templates_seconds).collect::<Vec<_>>()),
        secrets_ratio: if floor_median_seconds > 0.0 {
            secrets_median_seconds / floor_median_seconds
        } else {
            0.0
        },
        runs: measured,
        floor_seconds,
        secrets_median_seconds,
        floor_median_seconds,
    })
}

/// Starts a Clerk emulator with a production budget and connects the workspace to it.
async fn connect_clerk(env: &BenchEnv) -> Result<ClerkEmulator> {
    let config = ClerkConfig {
        request_budget: CLERK_BUDGET,
        budget_window: std::time::Duration::from_secs(CLERK_WINDOW_SECONDS),
        ..ClerkConfig::default()
    };
    let clerk = ClerkEmulator::start(config).await.map_err(|e| BenchError::Emulator(e.to_string()))?;
    let allowed = format!("{KIND_CLUSTER_WORKSPACE}/{}", env.workspace);
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": CLERK_SECRET, "annotations": {ANNOTATION_ALLOWED_WORKSPACES: allowed}},
        "stringData": {"key": clerk.secret_key()},
    });
    let params = PatchParams::apply(BENCH_MANAGER).force();
    Api::<Secret>::namespaced(env.client.clone(), &env.system_namespace)
        .patch(CLERK_SECRET, &params, &Patch::Apply(&secret))
        .await
        .map_err(BenchError::kube("writing the Clerk key Secret"))?;
    let patch = json!({"spec": {"clerk": {"secretKeySecretRef": {"name": CLERK_SECRET, "key": "key"}, "apiUrl": clerk.api_url()}}});
    workspaces(env)
        .patch(&env.workspace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(BenchError::kube("connecting the workspace to Clerk"))?;
    Ok(clerk)
}

/// Takes the Clerk connection off the workspace again (the other scenarios have none).
async fn disconnect_clerk(env: &BenchEnv) -> Result<()> {
    let patch = json!({"spec": {"clerk": null}});
    workspaces(env)
        .patch(&env.workspace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(BenchError::kube("disconnecting the workspace from Clerk"))?;
    Ok(())
}

fn workspaces(env: &BenchEnv) -> Api<ClusterTinybirdWorkspace> {
    Api::all(env.client.clone())
}

async fn operator_run(bench: &mut Bench, run: usize) -> Result<RevokeRun> {
    let tag = format!("revoke-{run}");
    let group = format!("revoke-{run}");
    let n = bench.args.tenants;
    let namespaces = bench.env.tenant_namespaces(&group, bench.args.tenant_namespaces).await?;
    let tenants = BenchEnv::tenants(&namespaces, n);
    let operator = bench.start_operator(&tag).await?;
    let objects = tenants
        .iter()
        .map(|tenant| {
            let mut manifest = bench.env.tenant_manifest(tenant, &group, Some("0"));
            manifest["spec"]["clerkTemplate"] = json!({});
            (tenant.namespace.clone(), tenant.name.clone(), manifest)
        })
        .collect();
    crate::fixtures::apply_many::<TenantAccess>(&bench.env.client, objects, bench.args.apply_concurrency)
        .await?;
    let old = AdminToken::new(&bench.env.tinybird.admin_token()).fingerprint();
    bench.wait_ready(&group, n, None).await?;
    wait_templates(bench, &group, n, &old).await?;

    // The revoke: the annotation, then the refresh at Tinybird.
    let mut admin_token = bench.env.tinybird.subscribe_admin_token();
    admin_token.borrow_and_update();
    let request = format!("bench-{}-{run}", bench.env.prefix);
    let patch = json!({"metadata": {"annotations": {ANNOTATION_ROTATE: request}}});
    let requested = Instant::now();
    workspaces(&bench.env)
        .patch(&bench.env.workspace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(BenchError::kube("annotating the workspace"))?;
    tokio::time::timeout(bench.timeout, admin_token.changed())
        .await
        .map_err(|_| BenchError::Timeout { what: "the refresh at Tinybird".into(), timeout: bench.timeout })?
        .map_err(|_| BenchError::Fixture("the emulator stopped".into()))?;
    let refreshed = Instant::now();
    let new_key = AdminToken::new(&admin_token.borrow().clone());
    let fingerprint = new_key.fingerprint();

    let (selector, what) = (group_selector(&group), format!("{n} token Secrets of {group} on the new key"));
    let secrets = wait_all(
        Api::<Secret>::all(bench.env.client.clone()),
        &selector,
        n,
        bench.timeout,
        &what,
        |secret: &Secret| {
            let token = secret
                .data
                .as_ref()
                .and_then(|d| d.get("token"))
                .and_then(|b| std::str::from_utf8(&b.0).ok());
            token.is_some_and(|t| ParsedToken::parse(t).is_ok_and(|p| p.signature_matches(&new_key)))
        },
    );
    let (secrets, statuses, templates) = tokio::join!(
        secrets,
        bench.wait_ready(&group, n, Some(&fingerprint)),
        wait_templates(bench, &group, n, &fingerprint)
    );
    let seconds = |done: Instant| done.saturating_duration_since(refreshed).as_secs_f64();
    let (secrets, statuses, templates) = (seconds(secrets?), seconds(statuses?), seconds(templates?));
    let record = completed_record(bench, &request).await?;
    bench.save_operator_metrics(&operator, &tag).await;
    operator.stop().await?;
    bench.env.delete_group(&namespaces, &group).await?;
    bench.delete_canary(&tag).await?;
    Ok(RevokeRun {
        request_to_refresh_seconds: refreshed.saturating_duration_since(requested).as_secs_f64(),
        secrets_seconds: secrets,
        statuses_seconds: statuses,
        templates_seconds: templates,
        recorded_secrets_after: record.as_ref().and_then(|r| r.secrets_on_new_key_after.clone()),
        recorded_templates_after: record.and_then(|r| r.templates_on_new_key_after),
    })
}

/// The workspace's record of `request` once it is complete (the operator counts its dependents
/// every second).
async fn completed_record(
    bench: &Bench,
    request: &str,
) -> Result<Option<tenant_access::api::RotationRecord>> {
    let deadline = Instant::now() + bench.timeout;
    loop {
        let record = workspaces(&bench.env)
            .get(&bench.env.workspace)
            .await
            .map_err(BenchError::kube("reading the workspace"))?
            .status
            .and_then(|s| s.rotation)
            .and_then(|r| r.history.into_iter().find(|r| r.request == request));
        let complete = record.as_ref().is_some_and(|r| r.phase == "Complete");
        if complete || Instant::now() >= deadline {
            return Ok(record);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Waits until `expected` TenantAccess of `group` have pushed their Clerk template with the key
/// of `fingerprint`.
async fn wait_templates(bench: &Bench, group: &str, expected: usize, fingerprint: &str) -> Result<Instant> {
    wait_all(
        Api::<TenantAccess>::all(bench.env.client.clone()),
        &group_selector(group),
        expected,
        bench.timeout,
        &format!("{expected} Clerk templates of {group} on key {fingerprint}"),
        |access: &TenantAccess| {
            access
                .status
                .as_ref()
                .and_then(|s| s.clerk_template.as_ref())
                .is_some_and(|t| t.id.is_some() && t.signing_key_fingerprint == fingerprint)
        },
    )
    .await
}
