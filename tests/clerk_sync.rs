//! Clerk template sync against the real API server and the Clerk and Tinybird emulators.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::wait::Condition as _;
use support::{
    Env, TIMEOUT, assert_no_secrets, clerk_fingerprint_is, clerk_synced, condition, condition_is_true,
    has_condition, is_ready, logs, revision_at_least,
};
use tenant_access::api::TenantAccess;
use tenant_access_emulators::{Fault, TestOrg};

/// A test namespace (see [`Env`]) whose workspace is connected to a Clerk emulator, with a
/// namespaced operator running.
async fn clerk_env(prefix: &str) -> Env {
    let mut env = Env::new(prefix).await;
    env.connect_clerk().await;
    env.start_operator();
    env
}

/// Applies `examples/clerk-template.yaml` (TenantAccess `tinybird-clerk`, Clerk template
/// `tinybird`) and waits until its template is synced.
async fn apply_clerk_example(env: &Env) -> TenantAccess {
    env.cluster
        .apply_file(tenant_access_testkit::examples_dir().join("clerk-template.yaml"), Some(env.name()))
        .await
        .unwrap();
    env.wait_access("tinybird-clerk", clerk_synced()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clerk_example_creates_the_guides_template_and_its_tokens_read_only_their_org() {
    let mut env = clerk_env("clerk").await;
    let access = apply_clerk_example(&env).await;
    let access = if condition_is_true(Some(&access), "Ready") {
        access
    } else {
        env.wait_access("tinybird-clerk", is_ready()).await
    };
    let status = access.status.unwrap().clerk_template.unwrap();

    let template = env.clerk().template_by_name("tinybird").expect("template created in Clerk");
    assert_eq!(Some(template.id.clone()), status.id);
    assert_eq!(
        template.claims,
        serde_json::json!({
            "workspace_id": env.tinybird.workspace_id(),
            "name": "frontend_jwt_{{user.id || '_none_'}}",
            "scopes": [{"type": "PIPES:READ", "resource": "top_pages",
                        "fixed_params": {"org": "{{org.slug || '_none_'}}", "user": "{{user.id || '_none_'}}"}}],
            "limits": {"rps": 10},
            "tenant_access": format!("{}/tinybird-clerk", env.name()),
            "tenant_access_workspace": format!("TinybirdWorkspace/{}/analytics", env.name()),
        })
    );
    assert_eq!((template.lifetime, template.allowed_clock_skew), (60, 5));
    assert!(template.custom_signing_key);
    assert_eq!(template.signing_algorithm, "HS256");
    assert_eq!(env.clerk().signing_key(&template.id).as_deref(), Some(env.tinybird.admin_token().as_str()));

    // A session token minted by Clerk is accepted by Tinybird and pinned to the session's org.
    let jwt = env.mint_clerk_token("tinybird").await;
    let (status_code, body) = env.query("top_pages", &jwt, "org=globex").await;
    assert_eq!(status_code, 200, "{body}");
    let rows = body["data"].as_array().unwrap();
    assert!(!rows.is_empty() && rows.iter().all(|r| r["org"] == "acme"), "{body}");
    env.clerk().set_org(Some(TestOrg::globex()));
    let jwt = env.mint_clerk_token("tinybird").await;
    let (_, body) = env.query("top_pages", &jwt, "org=acme").await;
    assert!(body["data"].as_array().unwrap().iter().all(|r| r["org"] == "globex"), "{body}");

    // The ConfigMap holds the rendered template, never the key.
    let configmaps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(env.client.clone(), env.name());
    let configmap =
        serde_json::to_string(&configmaps.get("tinybird-clerk-clerk-template").await.unwrap()).unwrap();
    let secrets = [env.tinybird.admin_token(), env.clerk().secret_key().to_owned()];
    for (what, text) in [
        ("configmap", configmap),
        ("events", env.events_text().await),
        ("logs", logs()),
        (
            "status",
            serde_json::to_string(&env.tenant_accesses().get("tinybird-clerk").await.unwrap().status)
                .unwrap(),
        ),
    ] {
        assert_no_secrets(what, &text, &secrets);
    }
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_pushes_the_new_key_and_old_clerk_tokens_stop_working() {
    let mut env = clerk_env("clerk-rotate").await;
    apply_clerk_example(&env).await;
    let before = env.mint_clerk_token("tinybird").await;
    assert_eq!(env.query("top_pages", &before, "").await.0, 200);

    let new_admin = env.tinybird.refresh_admin_token();
    env.put_admin_token("tinybird-admin", &new_admin).await;
    let fingerprint = tenant_access::core::admin_token::AdminToken::new(&new_admin).fingerprint();
    env.wait_access("tinybird-clerk", clerk_fingerprint_is(fingerprint)).await;
    let template = env.clerk().template_by_name("tinybird").unwrap();
    assert_eq!(env.clerk().signing_key(&template.id).as_deref(), Some(new_admin.as_str()));

    let after = env.mint_clerk_token("tinybird").await;
    assert_eq!(env.query("top_pages", &after, "").await.0, 200, "a token minted after rotation works");
    assert_eq!(env.query("top_pages", &before, "").await.0, 403, "a token minted before rotation fails");
    env.events_with(&["the signing key rotated"]).await;
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerk_outage_leaves_a_tenant_access_whose_token_secret_is_current_ready_but_degraded() {
    let mut env = clerk_env("clerk-outage").await;
    let spec = "  workspaceRef: {name: analytics}\n  scopes: [{resource: top_pages, fixedParams: {org: acme}}]\n  secret: {}\n  clerkTemplate: {name: both}\n  healthCheck: {interval: '0'}\n";
    env.tenant_access("both", spec).await;
    env.wait_access("both", is_ready()).await;

    // Clerk goes down, and a rotation has to push the new key to it.
    env.clerk().add_fault(Fault::status(503).for_path_prefix("/v1/jwt_templates")).unwrap();
    let new_admin = env.tinybird.refresh_admin_token();
    env.put_admin_token("tinybird-admin", &new_admin).await;
    let re_signed_but_degraded = has_condition("Ready", "True", "Degraded").and(revision_at_least(2));
    let degraded = env.wait_access("both", re_signed_but_degraded).await;
    // The Secret holds a current token, re-signed with the new key: what the workloads use works.
    assert!(condition_is_true(Some(&degraded), "TokenIssued"), "{:?}", degraded.status);
    let token = env.token("both").await;
    assert_eq!(env.query("top_pages", &token, "").await.0, 200);
    // The Clerk failure is on its own condition, and named by Ready's message.
    let synced = condition(Some(&degraded), "ClerkTemplateSynced").unwrap();
    assert_eq!(synced.status, "False");
    let ready = condition(Some(&degraded), "Ready").unwrap();
    assert!(ready.message.contains("Clerk template is not synced") && ready.message.contains(&synced.reason));

    // Clerk is back: the new key is pushed and the TenantAccess is plainly Ready again.
    env.clerk().clear_faults();
    let fingerprint = tenant_access::core::admin_token::AdminToken::new(&new_admin).fingerprint();
    env.wait_access("both", clerk_fingerprint_is(fingerprint)).await;
    env.wait_access("both", is_ready()).await;
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claims_change_patches_once_and_an_unchanged_reconcile_calls_clerk_not_at_all() {
    let mut env = clerk_env("clerk-patch").await;
    let spec = "  workspaceRef: {name: analytics}\n  scopes: [{resource: top_pages, fixedParams: {org: '{{org.slug}}'}}]\n  clerkTemplate: {name: dash}\n  healthCheck: {interval: '0'}\n";
    env.tenant_access("dash", spec).await;
    env.wait_access("dash", clerk_synced()).await;
    let log = env.clerk().request_log();
    let calls = |log: &tenant_access_emulators::RequestLog| log.total();
    let after_create = calls(log);

    // A metadata-only change triggers a reconcile: no Clerk call.
    let annotate = serde_json::json!({"metadata": {"annotations": {"touched": "1"}}});
    env.tenant_accesses().patch("dash", &PatchParams::default(), &Patch::Merge(&annotate)).await.unwrap();
    // Then a claims change: exactly one PATCH.
    env.tenant_access("dash", &spec.replace("top_pages", "tenant_events")).await;
    env.wait_access("dash", |ta: Option<&TenantAccess>| {
        ta.and_then(|t| t.status.as_ref()).is_some_and(|s| s.observed_generation == Some(2))
            && condition_is_true(ta, "ClerkTemplateSynced")
    })
    .await;
    let template = env.clerk().template_by_name("dash").unwrap();
    assert_eq!(template.claims["scopes"][0]["resource"], "tenant_events");
    assert_eq!(log.count_matching("PATCH", "/v1/jwt_templates/"), 1);
    assert_eq!(calls(log), after_create + 1, "only the PATCH: {:?}", log.records());
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_templates_sync_without_a_429_and_a_429_storm_is_ridden_out() {
    let mut env = clerk_env("clerk-many").await;
    let mut all = String::new();
    for i in 0..200 {
        all.push_str(&format!(
            "---\napiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: t{i}}}\nspec:\n  workspaceRef: {{name: analytics}}\n  scopes: [{{resource: top_pages, fixedParams: {{org: '{{{{org.slug}}}}'}}}}]\n  clerkTemplate: {{name: t{i}}}\n  healthCheck: {{interval: '0'}}\n"
        ));
    }
    env.apply_yaml(&all).await;
    for i in 0..200 {
        env.wait_access(&format!("t{i}"), clerk_synced()).await;
    }
    assert_eq!(env.clerk().request_log().count_status(429), 0, "the operator exceeded Clerk's budget");
    assert_eq!(env.clerk().templates().len(), 200);

    // A storm: Clerk's budget drops far below the operator's; rotation needs 200 PATCHes.
    env.clerk().set_request_budget(10, std::time::Duration::from_secs(1));
    let new_admin = env.tinybird.refresh_admin_token();
    env.put_admin_token("tinybird-admin", &new_admin).await;
    let fingerprint = tenant_access::core::admin_token::AdminToken::new(&new_admin).fingerprint();
    env.wait_clerk_keys(200, &fingerprint).await;
    assert!(env.clerk().request_log().count_status(429) > 0, "the storm happened");
    for template in env.clerk().templates() {
        assert_eq!(env.clerk().signing_key(&template.id).as_deref(), Some(new_admin.as_str()));
    }
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_follows_the_policy_and_a_hand_made_template_is_not_taken_over() {
    let mut env = clerk_env("clerk-delete").await;
    let spec = |name: &str, policy: &str| {
        format!(
            "  workspaceRef: {{name: analytics}}\n  scopes: [{{resource: top_pages, fixedParams: {{org: '{{{{org.slug}}}}'}}}}]\n  clerkTemplate: {{name: {name}, deletionPolicy: {policy}}}\n  healthCheck: {{interval: '0'}}\n"
        )
    };
    // A template made by hand in the Clerk dashboard.
    let manual = reqwest::Client::new()
        .post(format!("{}/jwt_templates", env.clerk().api_url()))
        .bearer_auth(env.clerk().secret_key())
        .json(&serde_json::json!({"name": "handmade", "claims": {"org": "{{org.slug}}"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(manual.status().as_u16(), 200);
    env.tenant_access("intruder", &spec("handmade", "Delete")).await;
    env.tenant_access("deleted", &spec("gone", "Delete")).await;
    env.tenant_access("retained", &spec("kept", "Retain")).await;

    let refused = env
        .wait_access("intruder", has_condition("ClerkTemplateSynced", "False", "ClerkTemplateConflict"))
        .await;
    assert!(format!("{:?}", refused.status).contains("not managed by this TenantAccess"));
    assert_eq!(
        env.clerk().template_by_name("handmade").unwrap().claims,
        serde_json::json!({"org": "{{org.slug}}"}),
        "untouched"
    );
    env.wait_access("deleted", clerk_synced()).await;
    env.wait_access("retained", clerk_synced()).await;

    let mut uids = Vec::new();
    for name in ["deleted", "retained", "intruder"] {
        uids.push(env.tenant_accesses().get(name).await.unwrap().metadata.uid.unwrap());
        env.tenant_accesses().delete(name, &DeleteParams::default()).await.unwrap();
    }
    for (name, uid) in ["deleted", "retained", "intruder"].into_iter().zip(&uids) {
        tenant_access_testkit::wait_for(
            env.tenant_accesses(),
            name,
            kube::runtime::conditions::is_deleted(uid),
            TIMEOUT,
        )
        .await
        .unwrap();
    }
    assert!(env.clerk().template_by_name("gone").is_none(), "Delete policy removes the template");
    assert!(env.clerk().template_by_name("kept").is_some(), "Retain policy keeps it");
    assert!(env.clerk().template_by_name("handmade").is_some(), "a template it never owned is never deleted");
    env.events_with(&["ClerkTemplateDeleted"]).await;
    env.stop_operator().await;
}

/// The shell block of the chart README's "Uninstalling" section that follows `marker`.
fn chart_readme_block(marker: &str) -> String {
    let readme = std::fs::read_to_string(
        tenant_access_testkit::repo_root().join("charts/tenant-access-operator/README.md"),
    )
    .unwrap();
    let section = &readme[readme.find("## Uninstalling").expect("an Uninstalling section")..];
    let after =
        &section[section.find(marker).unwrap_or_else(|| panic!("{marker:?} in the Uninstalling section"))..];
    let start = after.find("```sh\n").unwrap() + "```sh\n".len();
    after[start..start + after[start..].find("```").unwrap()].to_owned()
}

/// Runs a README shell snippet with the admin kubeconfig, scoped to the test's namespace.
async fn run_snippet(env: &Env, snippet: &str) -> std::process::Output {
    let scoped = snippet.replace(" -A", &format!(" -n {}", env.name()));
    let kubectl_dir = std::path::PathBuf::from(tenant_access_testkit::kubectl_binary());
    let path = format!(
        "{}:{}",
        kubectl_dir.parent().map(|p| p.display().to_string()).unwrap_or_default(),
        std::env::var("PATH").unwrap_or_default()
    );
    tokio::time::timeout(
        TIMEOUT,
        tokio::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &scoped])
            .env("KUBECONFIG", env.cluster.admin_kubeconfig())
            .env("PATH", path)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("the README's commands hung:\n{scoped}"))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_readmes_uninstall_order_strands_no_finalizer() {
    let mut env = clerk_env("uninstall").await;
    let access = apply_clerk_example(&env).await;
    assert!(
        access
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"tenantaccess.dev/clerk-template".to_owned())
    );

    // Step 1, with the operator running: the template leaves Clerk, the TenantAccess goes.
    let step1: String = chart_readme_block("Uninstall in this order")
        .lines()
        .filter(|l| l.starts_with("kubectl delete tenantaccess"))
        .collect();
    assert!(!step1.is_empty(), "step 1 deletes the TenantAccesses");
    let out = run_snippet(&env, &step1).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(env.clerk().template_by_name("tinybird").is_none(), "the template was left in Clerk");
    assert!(env.tenant_accesses().get_opt("tinybird-clerk").await.unwrap().is_none());

    // With the operator gone, the README's finalizer removal lets a deletion finish. (Another
    // name: the local API server has no garbage collector to delete the first one's ConfigMap.)
    let example =
        std::fs::read_to_string(tenant_access_testkit::examples_dir().join("clerk-template.yaml")).unwrap();
    env.apply_yaml(
        &example
            .replace("name: tinybird-clerk", "name: second")
            .replace("name: tinybird\n", "name: second\n"),
    )
    .await;
    let second = env.wait_access("second", clerk_synced()).await;
    assert!(
        second
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"tenantaccess.dev/clerk-template".to_owned())
    );
    env.stop_operator().await;
    env.tenant_accesses().delete("second", &DeleteParams::default()).await.unwrap();
    let stuck = env.tenant_accesses().get("second").await.unwrap();
    assert!(stuck.metadata.deletion_timestamp.is_some(), "held by its finalizer");
    let out = run_snippet(&env, &chart_readme_block("If the operator is already gone")).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    tenant_access_testkit::wait_for(
        env.tenant_accesses(),
        "second",
        |ta: Option<&TenantAccess>| ta.is_none(),
        TIMEOUT,
    )
    .await
    .unwrap();
    assert!(env.clerk().template_by_name("second").is_some(), "as the README says, it stays in Clerk");
}
