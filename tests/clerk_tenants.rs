//! The tokens Clerk mints from the templates the operator manages, through the demo's path: a
//! TenantAccess on the real API server, its template pushed to the Clerk emulator, a session
//! token minted there for a signed-in user and sent to the Tinybird emulator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::{ClusterWideEnv, Env, clerk_synced, eventually, mint_clerk_token, query_pipe};
use tenant_access::api::TenantAccess;
use tenant_access::core::well_known::ANNOTATION_ALLOWED_WORKSPACES;
use tenant_access_emulators::{ClerkConfig, ClerkEmulator, Identity, TestOrg, TestUser};

/// Creates template `name` with `claims` in the Env's Clerk, signed with its admin token, as a
/// person (or an earlier release) would; its id.
async fn create_template_by_hand(env: &Env, name: &str, claims: Value) -> String {
    let answer = reqwest::Client::new()
        .post(format!("{}/jwt_templates", env.clerk().api_url()))
        .bearer_auth(env.clerk().secret_key())
        .json(&json!({"name": name, "claims": claims, "custom_signing_key": true,
            "signing_algorithm": "HS256", "signing_key": env.tinybird.admin_token()}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let created: Value = answer.json().await.unwrap();
    created["id"].as_str().unwrap().to_owned()
}

fn orgs(body: &Value) -> Vec<String> {
    body["data"].as_array().unwrap().iter().map(|row| row["org"].as_str().unwrap().to_owned()).collect()
}

async fn clerk_env(prefix: &str) -> Env {
    let mut env = Env::new(prefix).await;
    env.connect_clerk().await;
    env.start_operator();
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_of_a_template_has_a_rate_limit_of_their_own() {
    let mut env = clerk_env("clerk-rps").await;
    env.tenant_access(
        "dash",
        "  workspaceRef: {name: analytics}\n  scopes: [{resource: top_pages, fixedParams: {org: '{{org.slug}}'}}]\n  limits: {rps: 1}\n  clerkTemplate: {name: dash}\n  healthCheck: {interval: '0'}\n",
    )
    .await;
    let access = env.wait_access("dash", clerk_synced()).await;
    let pushed = env.clerk().template_by_name("dash").unwrap();
    let name = format!("{}_dash_{{{{user.id || '_none_'}}}}", env.name());
    assert_eq!(pushed.claims["name"], json!(name));
    assert_eq!(access.status.unwrap().clerk_template.unwrap().token_name.as_deref(), Some(name.as_str()));

    env.clerk().set_identity(Identity { user: TestUser::alice(), org: Some(TestOrg::acme()) });
    let alice = mint_clerk_token(env.clerk(), "dash").await;
    env.clerk().set_identity(Identity { user: TestUser::new("user_bob"), org: Some(TestOrg::acme()) });
    let bob = mint_clerk_token(env.clerk(), "dash").await;

    // One rate-limit window for all the requests below: Tinybird's clock stands still.
    let clock = env.tinybird.clock().clone();
    clock.set_millis(clock.now_millis());
    env.tinybird.reset_rate_limits();
    assert_eq!(env.query("top_pages", &alice, "").await.0, 200);
    let (status, _) = env.query("top_pages", &alice, "").await;
    assert_eq!(status, 429, "alice is at her limit of 1 request per second");
    let (status, body) = env.query("top_pages", &bob, "").await;
    assert_eq!(status, 200, "bob has a bucket of his own: {body}");
    assert_eq!(orgs(&body), ["acme"; 3]);
    clock.resume_system();
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_with_no_active_organization_reads_no_rows_from_a_pipe_that_guards_with_defined() {
    let mut env = clerk_env("clerk-noorg").await;
    env.tenant_access(
        "dash",
        "  workspaceRef: {name: analytics}\n  scopes: [{resource: top_pages, fixedParams: {org: '{{org.slug}}'}}]\n  limits: {rps: 100}\n  clerkTemplate: {name: dash}\n  healthCheck: {interval: '0'}\n",
    )
    .await;
    env.wait_access("dash", clerk_synced()).await;
    env.clerk().set_org(None);
    let jwt = mint_clerk_token(env.clerk(), "dash").await;
    let (status, body) = env.query("top_pages", &jwt, "org=globex").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(orgs(&body), Vec::<String>::new(), "the missing identity matches no tenant: {body}");

    // The guide's form, a bare {{org.slug}} (what the operator pushed before): Clerk renders
    // null, and the pipe's `defined(org)` guard drops its filter: every organization's rows.
    let bare = json!({"workspace_id": env.tinybird.workspace_id(), "name": "bare",
        "scopes": [{"type": "PIPES:READ", "resource": "top_pages", "fixed_params": {"org": "{{org.slug}}"}}]});
    create_template_by_hand(&env, "bare", bare).await;
    let leaky = mint_clerk_token(env.clerk(), "bare").await;
    let (_, body) = env.query("top_pages", &leaky, "").await;
    assert!(orgs(&body).len() > 3, "the emulator fails open on null as Tinybird does: {body}");
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_pushed_before_rate_limit_keys_is_updated_in_place_once_and_an_event_says_why() {
    let mut env = Env::new("clerk-upgrade").await;
    env.connect_clerk().await;
    // What an earlier release pushed and recorded: one shared name, shortcodes without fallbacks.
    let old_claims = json!({"workspace_id": env.tinybird.workspace_id(), "name": "frontend_jwt",
        "scopes": [{"type": "PIPES:READ", "resource": "top_pages", "fixed_params": {"org": "{{org.slug}}"}}],
        "tenant_access": format!("{}/dash", env.name())});
    let id = create_template_by_hand(&env, "dash", old_claims).await;
    env.tenant_access(
        "dash",
        "  workspaceRef: {name: analytics}\n  tokenName: frontend_jwt\n  scopes: [{resource: top_pages, fixedParams: {org: '{{org.slug}}'}}]\n  limits: {rps: 10}\n  clerkTemplate: {name: dash}\n  healthCheck: {interval: '0'}\n",
    )
    .await;
    let fingerprint =
        tenant_access::core::admin_token::AdminToken::new(&env.tinybird.admin_token()).fingerprint();
    let old_status = json!({"status": {"clerkTemplate": {"id": id, "name": "dash",
        "claimsHash": "from-an-earlier-release", "signingKeyFingerprint": fingerprint}}});
    env.tenant_accesses()
        .patch_status("dash", &PatchParams::default(), &Patch::Merge(&old_status))
        .await
        .unwrap();
    env.clerk().request_log().clear();

    env.start_operator();
    let access = env.wait_access("dash", clerk_synced()).await;
    let status = access.status.unwrap().clerk_template.unwrap();
    assert_eq!(status.id.as_deref(), Some(id.as_str()), "the same template, updated in place");
    let templates = env.clerk().templates();
    assert_eq!(templates.len(), 1, "no second template");
    assert_eq!(templates[0].claims["name"], "frontend_jwt_{{user.id || '_none_'}}");
    env.events_with(&["token name (the Tinybird rate-limit bucket) is now", "templates of earlier releases"])
        .await;
    let patches = env.clerk().request_log().count_matching("PATCH", &format!("/v1/jwt_templates/{id}"));
    assert_eq!(patches, 1, "{:?}", env.clerk().request_log().records());
    env.stop_operator().await;
}

/// A ClusterTinybirdWorkspace `shared` that pins `org` to namespace label `tenant` (Clerk
/// templates: `{{org.slug}}`), connected to a Clerk emulator, and a namespace per tenant.
struct PinnedClerk {
    env: ClusterWideEnv,
    clerk: ClerkEmulator,
}

impl PinnedClerk {
    async fn new() -> Self {
        let env = ClusterWideEnv::new().await;
        // Clerk's own budget is not what these tests exercise: the operator's is.
        let config = ClerkConfig {
            request_budget: 10_000,
            budget_window: Duration::from_secs(1),
            ..ClerkConfig::default()
        };
        let clerk = ClerkEmulator::start(config).await.unwrap();
        let key = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: shared-clerk, annotations: {{{ANNOTATION_ALLOWED_WORKSPACES}: ClusterTinybirdWorkspace/shared}}}}\nstringData: {{key: '{}'}}\n",
            clerk.secret_key()
        );
        env.apply(&key, Some(env.system.name())).await;
        let policy = format!(
            "  clerk:\n    secretKeySecretRef: {{name: shared-clerk, key: key}}\n    apiUrl: {}\n  policy:\n    allowedNamespaces: {{matchExpressions: [{{key: tenant, operator: Exists}}]}}\n    maxRps: 20\n    requiredParams:\n      org: {{namespaceLabel: tenant, clerkShortcode: '{{{{org.slug}}}}'}}\n",
            clerk.api_url()
        );
        env.apply(&env.shared_workspace_yaml(&policy), None).await;
        Self { env, clerk }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_of_another_organization_minting_a_pinned_workspaces_template_reads_only_their_own_rows() {
    let pinned = PinnedClerk::new().await;
    pinned.env.tenant_namespace("acme", json!({"tenant": "acme"})).await;
    let operator = pinned.env.start_operator();
    // The org param omitted (as the PolicyViolation message advises), and written as the
    // policy's shortcode: both templates carry the shortcode, never "acme".
    let specs = [
        ("omitted", "  scopes: [{resource: top_pages}]\n"),
        ("written", "  scopes: [{resource: top_pages, fixedParams: {org: '{{org.slug}}'}}]\n"),
    ];
    let accesses: Api<TenantAccess> = Api::namespaced(pinned.env.client.clone(), "acme");
    for (name, scopes) in specs {
        let yaml = format!(
            "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: {name}}}\nspec:\n  workspaceRef: {{kind: ClusterTinybirdWorkspace, name: shared}}\n{scopes}  clerkTemplate: {{name: {name}}}\n  healthCheck: {{interval: '0'}}\n"
        );
        pinned.env.apply(&yaml, Some("acme")).await;
        tenant_access_testkit::wait_for(accesses.clone(), name, clerk_synced(), support::TIMEOUT)
            .await
            .unwrap();
        let template = pinned.clerk.template_by_name(name).unwrap();
        assert_eq!(template.claims["scopes"][0]["fixed_params"]["org"], "{{org.slug || '_none_'}}", "{name}");
        assert!(!template.claims.to_string().contains("\"acme\""), "{name}: {}", template.claims);

        for (org, expected) in [(TestOrg::globex(), "globex"), (TestOrg::acme(), "acme")] {
            pinned.clerk.set_identity(Identity { user: TestUser::alice(), org: Some(org) });
            let jwt = mint_clerk_token(&pinned.clerk, name).await;
            let (status, body) =
                query_pipe(&pinned.env.tinybird.base_url(), "top_pages", &jwt, "org=acme").await;
            assert_eq!(status, 200, "{body}");
            let seen = orgs(&body);
            assert!(!seen.is_empty() && seen.iter().all(|o| o == expected), "{name}, {expected}: {body}");
        }
    }
    // The shortcode has a fallback no tenant can have: nothing for a user without an org.
    pinned.clerk.set_org(None);
    let jwt = mint_clerk_token(&pinned.clerk, "omitted").await;
    let (_, body) = query_pipe(&pinned.env.tinybird.base_url(), "top_pages", &jwt, "").await;
    assert!(orgs(&body).is_empty(), "{body}");
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_template_is_removed_and_a_retained_one_when_its_namespace_is_withdrawn() {
    let pinned = PinnedClerk::new().await;
    pinned.env.tenant_namespace("acme", json!({"tenant": "acme"})).await;
    let operator = pinned.env.start_operator();
    let accesses: Api<TenantAccess> = Api::namespaced(pinned.env.client.clone(), "acme");
    for (name, policy) in [("kept", "Retain"), ("orphan", "Delete"), ("live", "Delete")] {
        let yaml = format!(
            "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: {name}}}\nspec:\n  workspaceRef: {{kind: ClusterTinybirdWorkspace, name: shared}}\n  scopes: [{{resource: top_pages}}]\n  clerkTemplate: {{name: {name}, deletionPolicy: {policy}}}\n  healthCheck: {{interval: '0'}}\n"
        );
        pinned.env.apply(&yaml, Some("acme")).await;
        tenant_access_testkit::wait_for(accesses.clone(), name, clerk_synced(), support::TIMEOUT)
            .await
            .unwrap();
    }
    // `kept` is deleted by its team and stays in Clerk (Retain).
    accesses.delete("kept", &Default::default()).await.unwrap();
    tenant_access_testkit::wait_for(
        accesses.clone(),
        "kept",
        |a: Option<&TenantAccess>| a.is_none(),
        support::TIMEOUT,
    )
    .await
    .unwrap();
    // `orphan` disappears while the operator cannot finish (it is stopped, and its finalizer
    // removed by hand): its template is left behind with deletionPolicy Delete.
    operator.stop().await;
    let unfinalized = json!({"metadata": {"finalizers": null}});
    accesses.patch("orphan", &PatchParams::default(), &Patch::Merge(&unfinalized)).await.unwrap();
    accesses.delete("orphan", &Default::default()).await.unwrap();
    assert!(
        pinned.clerk.template_by_name("orphan").is_some() && pinned.clerk.template_by_name("kept").is_some()
    );

    let operator = pinned.env.start_operator();
    eventually("the orphaned template to be removed", || async {
        pinned.clerk.template_by_name("orphan").is_none()
    })
    .await;
    assert!(
        pinned.clerk.template_by_name("kept").is_some(),
        "a retained template stays while its namespace is admitted"
    );
    assert!(pinned.clerk.template_by_name("live").is_some());

    // The platform withdraws the namespace: every template of it goes, retained or not.
    pinned.env.label_namespace("acme", json!({"tenant": null})).await;
    eventually("the retained template to be removed at the withdrawal", || async {
        pinned.clerk.template_by_name("kept").is_none() && pinned.clerk.template_by_name("live").is_none()
    })
    .await;
    let workspaces: Api<tenant_access::api::ClusterTinybirdWorkspace> = Api::all(pinned.env.client.clone());
    let removed = support::eventually_some("the removals in the workspace's status", || async {
        let status = workspaces.get("shared").await.unwrap().status?.clerk_templates?;
        let accesses: BTreeSet<String> = status.removed.iter().map(|r| r.tenant_access.clone()).collect();
        accesses
            .is_superset(&BTreeSet::from(["acme/kept".to_owned(), "acme/orphan".to_owned()]))
            .then_some(status.removed)
    })
    .await;
    let reason = |access: &str| removed.iter().find(|r| r.tenant_access == access).map(|r| r.reason.clone());
    assert_eq!(reason("acme/orphan").as_deref(), Some("TenantAccessDeleted"));
    assert_eq!(reason("acme/kept").as_deref(), Some("NamespaceWithdrawn"));
    operator.stop().await;
}

/// Applies a TenantAccess of the pinned workspace whose Clerk template is `name` with `lifetime`.
async fn apply_template_access(pinned: &PinnedClerk, namespace: &str, name: &str, lifetime: u32) {
    let yaml = format!(
        "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: {name}}}\nspec:\n  workspaceRef: {{kind: ClusterTinybirdWorkspace, name: shared}}\n  scopes: [{{resource: top_pages}}]\n  clerkTemplate: {{name: {namespace}-{name}, lifetime: {lifetime}s}}\n  healthCheck: {{interval: '0'}}\n"
    );
    pinned.env.apply(&yaml, Some(namespace)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_rewriting_its_templates_in_a_loop_holds_back_another_namespaces_new_template_by_one_window_at_most()
 {
    // The operator's Clerk budget: 10 requests a second (routine requests 9, one in reserve).
    const BUDGET: u32 = 10;
    let pinned = PinnedClerk::new().await;
    pinned.env.tenant_namespace("looping", json!({"tenant": "looping"})).await;
    pinned.env.tenant_namespace("fresh", json!({"tenant": "fresh"})).await;
    let budget =
        tenant_access::adapters::clerk::RequestBudget { requests: BUDGET, window: Duration::from_secs(1) };
    let operator = support::Operator::start_with_clerk_budget(
        pinned.env.client.clone(),
        None,
        pinned.env.system.name(),
        budget,
    );
    let looping: Api<TenantAccess> = Api::namespaced(pinned.env.client.clone(), "looping");
    let names: Vec<String> = (0..24).map(|i| format!("t{i}")).collect();
    for name in &names {
        apply_template_access(&pinned, "looping", name, 60).await;
    }
    for name in &names {
        tenant_access_testkit::wait_for(looping.clone(), name, clerk_synced(), support::TIMEOUT)
            .await
            .unwrap();
    }

    // The looping team rewrites every template, again and again, far faster than the budget.
    let stop = Arc::new(AtomicBool::new(false));
    let rewriter = tokio::spawn({
        let (looping, names, stop) = (looping.clone(), names.clone(), stop.clone());
        async move {
            let (mut round, mut rewrites) = (0_u32, 0_usize);
            while !stop.load(Ordering::SeqCst) {
                round += 1;
                for name in &names {
                    let patch =
                        json!({"spec": {"clerkTemplate": {"lifetime": format!("{}s", 60 + round % 2)}}});
                    if looping.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok() {
                        rewrites += 1;
                    }
                }
            }
            rewrites
        }
    });
    let log = pinned.clerk.request_log();
    let patches = |records: &[tenant_access_emulators::RequestRecord]| {
        records.iter().filter(|r| r.method == "PATCH").count()
    };
    let before = patches(&log.records());
    eventually("the loop to fill the budget", || async {
        patches(&log.records()) >= before + 3 * BUDGET as usize
    })
    .await;

    let start = log.records().len();
    apply_template_access(&pinned, "fresh", "first", 60).await;
    let fresh: Api<TenantAccess> = Api::namespaced(pinned.env.client.clone(), "fresh");
    tenant_access_testkit::wait_for(fresh, "first", clerk_synced(), support::TIMEOUT).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let rewrites = rewriter.await.unwrap();
    // A TenantAccess's pending pushes are one: each push carries its latest spec.
    let pushed = patches(&log.records()) - before;
    println!("{rewrites} rewrites of the loop's templates, {pushed} pushed");
    assert!(pushed < rewrites, "{pushed} pushes for {rewrites} rewrites");

    // From the new namespace's first request (its list) to its template's creation, the slots
    // that freed were the newcomer's as soon as it asked, the loop being over its share: the
    // loop got at most its share of the windows the newcomer's reconciles span, bounded here by
    // two windows of the routine budget (a loaded machine may need a second pass of list and
    // create). Measured: 0. Without fair shares: 130.
    let records = log.records()[start..].to_vec();
    let first_list =
        records.iter().position(|r| r.method == "GET" && r.path.ends_with("/jwt_templates")).unwrap();
    let created =
        records.iter().position(|r| r.method == "POST" && r.path.ends_with("/jwt_templates")).unwrap();
    let loop_requests = patches(&records[first_list..created]);
    println!("loop requests while the new namespace waited: {loop_requests}");
    assert!(
        loop_requests <= 2 * (BUDGET - BUDGET / 10) as usize,
        "{loop_requests} of the loop's requests went first"
    );
    assert!(pinned.clerk.template_by_name("fresh-first").is_some());
    operator.stop().await;
}
