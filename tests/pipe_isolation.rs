//! Whether the pipes a TenantAccess is granted filter by the params it pins (issue 26), judged
//! from the description the free existence check reads (`GET /v0/pipes/{pipe}`, admin token),
//! on a real API server, against the Tinybird emulator's pipes written as Tinybird users write
//! them: `org_events_strict` (`String(org, required=True)`), `org_events` (`{% if defined(org)
//! %}`), `org_event_totals` (`org` read in an upstream node) and `event_counts` (never reads it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{Env, has_condition};
use tenant_access::api::TenantAccess;

/// One TenantAccess over the four pipes, each with `org: acme` pinned, checked every 5 s.
const ACCESS: &str = "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {name: dash}\nspec:\n  workspaceRef: {name: analytics}\n  scopes:\n    - {resource: org_events_strict, fixedParams: {org: acme}}\n    - {resource: org_events, fixedParams: {org: acme}}\n    - {resource: org_event_totals, fixedParams: {org: acme}}\n    - {resource: event_counts, fixedParams: {org: acme}}\n  secret: {}\n  healthCheck: {interval: 5s}\n";

/// Whether the TenantAccess reports `verdict` for `org` on `pipe`.
fn verdict_is(
    pipe: &'static str,
    verdict: &'static str,
) -> impl kube::runtime::wait::Condition<TenantAccess> {
    move |ta: Option<&TenantAccess>| {
        ta.and_then(|t| t.status.as_ref()).is_some_and(|s| {
            s.endpoints.iter().any(|e| {
                e.resource == pipe && e.isolation.iter().any(|i| i.param == "org" && i.verdict == verdict)
            })
        })
    }
}

/// Edits `org_events_strict` at the emulator so that it no longer filters by `org`.
fn drop_strict_filter(env: &Env) {
    env.tinybird
        .set_node_sql(
            "org_events_strict",
            "org_events_strict_endpoint",
            "SELECT org, user, event, amount FROM tenant_events ORDER BY amount",
        )
        .unwrap();
}

/// Puts `org_events_strict`'s filter back (`required=True`).
fn restore_strict_filter(env: &Env) {
    env.tinybird
        .set_node_sql(
            "org_events_strict",
            "org_events_strict_endpoint",
            "%\nSELECT org, user, event, amount FROM tenant_events WHERE org = {{String(org, required=True)}}",
        )
        .unwrap();
}

#[tokio::test]
async fn each_granted_pipe_is_judged_from_its_sql_and_an_edit_that_drops_the_filter_is_caught() {
    let mut env = Env::new("isolation").await;
    env.start_operator();
    env.apply_yaml(ACCESS).await;

    for (pipe, verdict) in [
        ("org_events_strict", "Enforced"),
        ("org_events", "Optional"),
        ("org_event_totals", "Enforced"),
        ("event_counts", "Unused"),
    ] {
        env.wait_access("dash", verdict_is(pipe, verdict)).await;
    }
    env.wait_access("dash", has_condition("PipesIsolated", "False", "PipeNotIsolated")).await;
    let access = env.tenant_accesses().get("dash").await.unwrap();
    let isolated =
        access.status.unwrap().conditions.into_iter().find(|c| c.type_ == "PipesIsolated").unwrap();
    assert!(isolated.message.contains("event_counts (org)"), "{}", isolated.message);
    assert!(!isolated.message.contains("org_events_strict"), "{}", isolated.message);
    env.events_with(&["PipeNotIsolated", "pipe event_counts: param org is Unused"]).await;
    // The workspace lists its pipes' verdicts, the one that leaks first.
    let workspace = wait_workspace_pipes(&env, 4).await;
    let listed: Vec<(&str, &str)> =
        workspace.pipes.iter().map(|p| (p.name.as_str(), p.isolation[0].verdict.as_str())).collect();
    assert_eq!(
        listed,
        [
            ("event_counts", "Unused"),
            ("org_events", "Optional"),
            ("org_event_totals", "Enforced"),
            ("org_events_strict", "Enforced")
        ]
    );

    // The pipe is edited at Tinybird to drop its filter: the next existence check (free) reads
    // the new SQL, and no billed query is needed to see it.
    let billed = env.tinybird.billed_queries();
    let described = env.tinybird.pipe_metadata_calls();
    drop_strict_filter(&env);
    env.wait_access("dash", verdict_is("org_events_strict", "Unused")).await;
    env.events_with(&["pipe org_events_strict: param org is Unused (was Enforced)"]).await;
    assert!(env.tinybird.pipe_metadata_calls() > described, "seen through an existence check");
    let access = env.tenant_accesses().get("dash").await.unwrap();
    let isolated =
        access.status.unwrap().conditions.into_iter().find(|c| c.type_ == "PipesIsolated").unwrap();
    assert!(isolated.message.contains("org_events_strict (org)"), "{}", isolated.message);
    println!(
        "billed queries meanwhile: {} (health probes at their own pace); existence checks: {}",
        env.tinybird.billed_queries() - billed,
        env.tinybird.pipe_metadata_calls() - described
    );

    // Fixed again: back to Enforced, and the condition holds once every pipe filters.
    restore_strict_filter(&env);
    env.wait_access("dash", verdict_is("org_events_strict", "Enforced")).await;
    env.events_with(&["pipe org_events_strict: param org is Enforced (was Unused)"]).await;
}

/// The `analytics` workspace's status once it lists `count` pipes.
async fn wait_workspace_pipes(env: &Env, count: usize) -> tenant_access::api::WorkspaceStatus {
    let workspaces: kube::Api<tenant_access::api::TinybirdWorkspace> =
        kube::Api::namespaced(env.client.clone(), env.name());
    let listed = move |w: Option<&tenant_access::api::TinybirdWorkspace>| {
        w.and_then(|w| w.status.as_ref()).is_some_and(|s| s.pipes.len() == count)
    };
    let workspace = tenant_access_testkit::wait_for(workspaces, "analytics", listed, support::TIMEOUT)
        .await
        .unwrap()
        .unwrap();
    workspace.status.unwrap()
}

/// The `analytics` workspace with its Clerk connection and `pipeIsolation: Enforce`.
async fn enforce_isolation(env: &mut Env) {
    env.connect_clerk().await;
    env.apply_yaml(&format!(
        "apiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {{name: analytics}}\nspec:\n  adminTokenSecretRef: {{name: tinybird-admin, key: token}}\n  apiUrl: {}\n{}  clerk:\n    secretKeySecretRef: {{name: clerk-key, key: secret-key}}\n    apiUrl: {}\n  policy: {{pipeIsolation: Enforce}}\n",
        env.tinybird.base_url(),
        support::UNMETERED,
        env.clerk().api_url()
    ))
    .await;
}

/// Billed queries of `pipe` the emulator answered.
fn billed_queries_of(env: &Env, pipe: &str) -> usize {
    let path = format!("/v0/pipes/{pipe}.json");
    env.tinybird.request_log().records().iter().filter(|r| r.path == path).count()
}

#[tokio::test]
async fn under_enforce_nothing_is_issued_over_a_pipe_that_ignores_the_param_and_an_edit_withdraws_it() {
    let mut env = Env::new("enforce").await;
    enforce_isolation(&mut env).await;
    env.start_operator();

    // A pipe that never reads org: refused before anything is issued, and said so.
    env.tenant_access(
        "open",
        "  workspaceRef: {name: analytics}\n  scopes:\n    - {resource: event_counts, fixedParams: {org: acme}}\n  secret: {}\n  healthCheck: {interval: 5s}\n",
    )
    .await;
    let open = env.wait_access("open", has_condition("Ready", "False", "PipeNotIsolated")).await;
    let status = open.status.unwrap();
    let isolated = status.conditions.iter().find(|c| c.type_ == "PipesIsolated").unwrap();
    assert_eq!((isolated.status.as_str(), isolated.reason.as_str()), ("False", "PipeNotIsolated"));
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(
        ready.message.contains("event_counts (org)") && ready.message.contains("Enforce"),
        "{}",
        ready.message
    );
    assert!(status.token.is_none());
    assert!(env.secrets().get_opt("open").await.unwrap().is_none(), "no token Secret");
    env.events_with(&["PipeNotIsolated", "event_counts (org)"]).await;
    // Refused, it is probed by nobody: the workspace lists the pipe from the gate's reading.
    let workspace = wait_workspace_pipes(&env, 1).await;
    assert_eq!(workspace.pipes[0].name, "event_counts");
    assert_eq!(workspace.pipes[0].isolation[0].verdict, "Unused");

    // Pipes that filter (`required=True`; `defined()` for a Clerk template, whose shortcode the
    // operator renders with a fallback): issued.
    env.tenant_access(
        "dash",
        "  workspaceRef: {name: analytics}\n  scopes:\n    - {resource: org_events_strict, fixedParams: {org: acme}}\n  secret: {}\n  healthCheck: {interval: 5s}\n",
    )
    .await;
    env.tenant_access(
        "users",
        "  workspaceRef: {name: analytics}\n  scopes:\n    - {resource: org_events, fixedParams: {org: '{{org.slug}}'}}\n  clerkTemplate: {}\n  limits: {rps: 5}\n  healthCheck: {interval: 5s, sampleParams: {org: acme}}\n",
    )
    .await;
    env.wait_access("dash", support::is_ready()).await;
    env.wait_access("dash", has_condition("PipesIsolated", "True", "Isolated")).await;
    let token = env.token("dash").await;
    env.wait_access("users", support::clerk_synced()).await;
    let template_name = format!("{}_users", env.name());
    let template = env.clerk().template_by_name(&template_name).expect("pushed to Clerk");
    let claims = serde_json::to_string(&template.claims).unwrap();
    assert!(
        claims.contains("{{org.slug || '_none_'}}"),
        "a missing organization matches no tenant: {claims}"
    );
    env.wait_access("users", has_condition("PipesIsolated", "True", "Isolated")).await;

    // Each pipe edited at Tinybird to drop its filter: the next existence check sees it, the
    // token leaves its Secret and the template leaves Clerk.
    drop_strict_filter(&env);
    env.wait_access("dash", has_condition("Ready", "False", "PipeNotIsolated")).await;
    env.wait_secret("dash", |s: Option<&k8s_openapi::api::core::v1::Secret>| {
        s.is_some_and(|s| support::token_of(s).is_none())
    })
    .await;
    env.tinybird
        .set_node_sql("org_events", "org_events_endpoint", "SELECT org, user, event FROM tenant_events")
        .unwrap();
    env.wait_access("users", has_condition("Ready", "False", "PipeNotIsolated")).await;
    support::eventually("the template leaves Clerk", || async {
        env.clerk().template_by_name(&template_name).is_none()
    })
    .await;
    env.events_with(&["pipe org_events_strict", "PipeNotIsolated"]).await;

    // Fixed: the token comes back (a new one), and so does the template.
    restore_strict_filter(&env);
    // Refused, it is out of the health checks: its pipe is described again within the recheck
    // interval (30 s), so the wait is longer than most.
    let recheck = support::TIMEOUT * 2;
    tenant_access_testkit::wait_for(env.tenant_accesses(), "dash", support::is_ready(), recheck)
        .await
        .unwrap();
    let again = env.token("dash").await;
    assert_ne!(again, token, "a new token");
    assert_eq!(billed_queries_of(&env, "event_counts"), 0, "a refused access's pipe is never queried");
}

/// `tenant-access inspect --pipes` on a token, with the emulator's admin token in a file (the
/// CLI blocks: it runs off the runtime that serves the emulator).
async fn inspect_pipes(tinybird: &tenant_access_emulators::TinybirdEmulator, jwt: &str) -> (i32, String) {
    let (url, key, jwt) = (tinybird.base_url(), tinybird.admin_token(), jwt.to_owned());
    tokio::task::spawn_blocking(move || run_inspect(&url, &key, &jwt)).await.unwrap()
}

fn run_inspect(api_url: &str, admin_token: &str, jwt: &str) -> (i32, String) {
    use std::io::Write as _;
    let key_file =
        std::env::temp_dir().join(format!("inspect-key-{}-{}", std::process::id(), support::free_port()));
    std::fs::write(&key_file, admin_token).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tenant-access"))
        .args(["inspect", "-", "--pipes", "--api-url", api_url, "--admin-token-file"])
        .arg(&key_file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(jwt.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&key_file);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn inspect_pipes_judges_each_granted_pipe_with_one_free_request_each() {
    let tinybird = tenant_access_emulators::TinybirdEmulator::start(Default::default()).await.unwrap();
    let key = tenant_access::core::admin_token::AdminToken::new(&tinybird.admin_token());
    let sign = |pipes: &[&str]| {
        let scopes: Vec<serde_json::Value> = pipes
            .iter()
            .map(
                |p| serde_json::json!({"type": "PIPES:READ", "resource": p, "fixed_params": {"org": "acme"}}),
            )
            .collect();
        let now = jiff::Timestamp::now().as_second();
        let claims = serde_json::json!({"workspace_id": tinybird.workspace_id(), "name": "acme_dash",
            "iat": now, "exp": now + 600, "scopes": scopes});
        tenant_access::core::jwt::sign_value(&claims, &key).unwrap()
    };
    let billed = tinybird.billed_queries();
    let described = tinybird.pipe_metadata_calls();

    let leaky = sign(&["org_events_strict", "org_events", "event_counts"]);
    let (code, text) = inspect_pipes(&tinybird, &leaky).await;
    assert_eq!(code, 9, "{text}");
    assert!(text.contains("Verdict:    valid"), "{text}");
    assert!(text.contains("- org_events_strict  org: Enforced"), "{text}");
    assert!(text.contains("- org_events  org: Optional"), "{text}");
    assert!(text.contains("- event_counts  org: Unused (the pipe's SQL never filters by org"), "{text}");
    assert!(!text.contains(&leaky) && !text.contains(&tinybird.admin_token()), "nothing secret printed");

    let (code, text) = inspect_pipes(&tinybird, &sign(&["org_events_strict", "org_event_totals"])).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("- org_event_totals  org: Enforced"), "{text}");
    assert_eq!(tinybird.billed_queries(), billed, "describing is never billed");
    assert_eq!(tinybird.pipe_metadata_calls() - described, 5, "one description per pipe");
}

#[tokio::test]
async fn a_clerk_templates_pipe_without_sample_params_is_judged_though_never_probed() {
    let mut env = Env::new("unprobed").await;
    env.connect_clerk().await;
    env.start_operator();
    // No sampleParams: the shortcode cannot be filled, so the pipe is never probed; its
    // description is read at the TenantAccess's reconciles instead.
    env.tenant_access(
        "users",
        "  workspaceRef: {name: analytics}\n  scopes:\n    - {resource: event_counts, fixedParams: {org: '{{org.slug}}'}}\n  clerkTemplate: {}\n  limits: {rps: 5}\n  healthCheck: {interval: 5s}\n",
    )
    .await;
    let access = env.wait_access("users", verdict_is("event_counts", "Unused")).await;
    let status = access.status.unwrap();
    let endpoint = status.endpoints.iter().find(|e| e.resource == "event_counts").unwrap();
    assert_eq!(endpoint.reason, "NoSampleParams", "never probed: {endpoint:?}");
    let isolated = status.conditions.iter().find(|c| c.type_ == "PipesIsolated").unwrap();
    assert_eq!((isolated.status.as_str(), isolated.reason.as_str()), ("False", "PipeNotIsolated"));
    assert_eq!(env.tinybird.billed_queries(), 0, "nothing billed");
}
