//! Size limits: one team cannot starve or crash the operator with a large TenantAccess. The API
//! server refuses oversized objects at apply time (the CRD schema), and a spec within the schema
//! whose token would be too large to send gets a clear condition instead of endless retries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{Env, grant_tenant_team, has_condition, tenant_apply};

fn manifest(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: {name}}}\nspec:\n  workspaceRef: {{name: analytics}}\n  secret: {{}}\n{spec}"
    )
}

/// Applies with kubectl as the tenant user (and with `--dry-run=server` first): both must be refused by the API
/// server with a message naming `field` (a 1.20 server names list items without their index).
async fn assert_refused_at_apply(env: &Env, name: &str, spec: &str, field: &str) {
    let manifest = manifest(name, spec);
    for dry_run in [true, false] {
        let mut args = vec!["-n", env.name(), "apply", "-f", "-"];
        if dry_run {
            args.push("--dry-run=server");
        }
        let out = env.cluster.tenant_kubectl_with_stdin(args, &manifest).await.unwrap();
        assert!(!out.success(), "{name} (dry run {dry_run}) was accepted");
        assert!(out.stderr.contains(field), "{name}: {field} not named in: {}", out.stderr);
    }
    assert!(env.tenant_accesses().get_opt(name).await.unwrap().is_none(), "{name} was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_refuses_oversized_tenant_accesses() {
    let env = Env::new("limits").await;
    // A tenant team: TenantAccess in its namespace, nothing else. Its first apply (within every
    // limit) also waits for its Role to be in force.
    grant_tenant_team(&env.cluster, env.name()).await;
    let scopes: String = (0..64).map(|i| format!("{{resource: pipe_{i}}}, ")).collect();
    tenant_apply(&env.cluster, env.name(), &manifest("at-limit", &format!("  scopes: [{scopes}]\n"))).await;

    let scopes: String = (0..65).map(|i| format!("{{resource: pipe_{i}}}, ")).collect();
    assert_refused_at_apply(&env, "many-scopes", &format!("  scopes: [{scopes}]\n"), "spec.scopes").await;

    let params: String = (0..33).map(|i| format!("p{i}: x, ")).collect();
    assert_refused_at_apply(
        &env,
        "many-params",
        &format!("  scopes: [{{resource: top_pages, fixedParams: {{{params}}}}}]\n"),
        "spec.scopes.fixedParams",
    )
    .await;

    assert_refused_at_apply(
        &env,
        "long-filter",
        &format!(
            "  scopes: [{{type: 'DATASOURCES:READ', resource: tenant_events, filter: \"org = '{}'\"}}]\n",
            "x".repeat(4096)
        ),
        "spec.scopes.filter",
    )
    .await;

    let health: String = (0..17).map(|i| format!("p{i}: x, ")).collect();
    assert_refused_at_apply(
        &env,
        "many-probe-params",
        &format!("  scopes: [{{resource: top_pages}}]\n  healthCheck: {{params: {{{health}}}}}\n"),
        "spec.healthCheck.params",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_too_large_to_send_is_refused_with_a_condition_and_nothing_is_written() {
    let mut env = Env::new("large-token").await;
    env.start_operator();
    // Within every schema limit, but the token would be about 40 KiB.
    let params: String = (0..32).map(|i| format!("p{i}: '{}', ", "v".repeat(300))).collect();
    let scopes: String =
        (0..4).map(|i| format!("{{resource: pipe_{i}, fixedParams: {{{params}}}}}, ")).collect();
    env.apply_yaml(&manifest("large", &format!("  scopes: [{scopes}]\n  healthCheck: {{interval: '0'}}\n")))
        .await;
    let access = env.wait_access("large", has_condition("Ready", "False", "TokenTooLarge")).await;
    let ready = support::condition(Some(&access), "Ready").unwrap();
    assert!(ready.message.contains("over the 16384-byte limit"), "{}", ready.message);
    assert!(env.secrets().get_opt("large").await.unwrap().is_none(), "a Secret was written");
    env.events_with(&["TokenTooLarge"]).await;

    // Fixing the spec issues the token.
    env.apply_yaml(&manifest("large", "  scopes: [{resource: top_pages}]\n  healthCheck: {interval: '0'}\n"))
        .await;
    env.wait_access("large", support::is_ready()).await;
    env.stop_operator().await;
}
