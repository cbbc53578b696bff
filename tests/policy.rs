//! Multi-tenant isolation on a shared ClusterTinybirdWorkspace: a team allowed to create
//! TenantAccess only in namespace `acme` (a real RBAC Role for the unprivileged user) cannot get
//! a token that reads another tenant's rows, by any spec. Every case runs through the controller
//! and through `tenant-access render`, which must agree.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Stdio;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use support::{ClusterWideEnv, TIMEOUT, query_pipe, token_of};
use tenant_access::api::TenantAccess;
use tenant_access::core::jwt::ParsedToken;
use tenant_access_testkit::wait_for;

const POLICY: &str = "  policy:
    allowedNamespaces: {matchExpressions: [{key: tenant, operator: Exists}]}
    allowedResources: [top_pages, tenant_events]
    allowedScopeTypes: ['PIPES:READ', 'DATASOURCES:READ']
    maxLifetime: 2h
    maxRps: 20
    requiredParams:
      org: {namespaceLabel: tenant, clerkShortcode: '{{org.slug}}'}
";

/// (name, spec body, None = allowed, Some(reason fragment) = refused)
fn cases() -> Vec<(&'static str, String, Option<&'static str>)> {
    let ws =
        "  workspaceRef: {kind: ClusterTinybirdWorkspace, name: shared}\n  healthCheck: {interval: '0'}\n";
    let pipe = |params: &str| format!("{ws}  scopes: [{{resource: top_pages{params}}}]\n  secret: {{}}\n");
    let source = |filter: &str| {
        format!(
            "{ws}  scopes: [{{type: 'DATASOURCES:READ', resource: tenant_events, filter: {}}}]\n  secret: {{}}\n",
            serde_json::to_string(filter).unwrap()
        )
    };
    vec![
        ("own-org", pipe(", fixedParams: {org: acme}"), None),
        ("no-org", pipe(""), None),
        ("other-param", pipe(", fixedParams: {user: user_bob}"), None),
        ("foreign-org", pipe(", fixedParams: {org: globex}"), Some("pins org to \"acme\"")),
        ("injection-value", pipe(", fixedParams: {org: \"acme' OR 1=1 --\"}"), Some("pins org")),
        ("empty-org", pipe(", fixedParams: {org: ''}"), Some("is empty")),
        ("null-org", pipe(", fixedParams: {org: null}"), Some("is null")),
        ("numeric-org", pipe(", fixedParams: {org: 7}"), Some("pins org")),
        ("case-org", pipe(", fixedParams: {org: ACME}"), Some("pins org")),
        (
            "other-resource",
            format!("{ws}  scopes: [{{resource: admin_stats}}]\n  secret: {{}}\n"),
            Some("allowedResources"),
        ),
        (
            "extra-scope",
            format!(
                "{ws}  scopes: [{{resource: top_pages}}, {{resource: internal_costs}}]\n  secret: {{}}\n"
            ),
            Some("allowedResources"),
        ),
        (
            "foreign-events",
            format!(
                "{ws}  scopes: [{{resource: tenant_events, fixedParams: {{org: globex}}}}]\n  secret: {{}}\n"
            ),
            Some("pins org"),
        ),
        ("filter-foreign", source("org = 'globex'"), None),
        ("filter-breakout", source("org = 'acme') OR (1=1"), Some("\")\" at byte 12 is not allowed")),
        ("filter-comment", source("org = 'acme' -- "), Some("\"--\" at byte 13 is not allowed")),
        ("filter-block-comment", source("org = 'acme' /* x */"), Some("\"/*\" at byte 13 is not allowed")),
        ("filter-statement", source("org = 'acme'; SELECT 1"), Some("\";\" at byte 12 is not allowed")),
        ("filter-newline", source("org = 'acme'\n) OR (1=1"), Some("\")\" at byte 13 is not allowed")),
        ("filter-quote", source("org = 'acme"), Some("unterminated string literal at byte 6")),
        ("filter-heredoc", source("org = $$acme$$"), Some("\"$\" at byte 6 is not allowed")),
        ("filter-alias", source("org = 'acme' AS org"), Some("an alias could shadow the tenant column")),
        ("filter-alias-function", source("notEmpty('acme' AS org)"), Some("\"notEmpty(\" at byte 0")),
        ("filter-subquery", source("org IN (SELECT org FROM tenant_events)"), Some("no subqueries")),
        ("filter-url", source("org IN url('http://x/', CSV)"), Some("\"url(\" at byte 7")),
        (
            "filter-look-alike-quote",
            source("org = \u{2019}acme\u{2019}"),
            Some("non-ASCII character U+2019 at byte 6"),
        ),
        (
            "long-lifetime",
            pipe("").replace("  secret: {}", "  lifetime: 24h\n  secret: {}"),
            Some("exceeds the workspace maximum"),
        ),
        (
            "high-rps",
            pipe("").replace("  secret: {}", "  limits: {rps: 1000}\n  secret: {}"),
            Some("exceeds the workspace maximum 20"),
        ),
        (
            "foreign-bucket",
            pipe("").replace("  scopes", "  tokenName: globex_reader\n  scopes"),
            Some("must start with"),
        ),
        (
            "append-scope",
            format!(
                "{ws}  scopes: [{{type: 'DATASOURCES:APPEND', resource: tenant_events}}]\n  secret: {{}}\n"
            ),
            Some("only read"),
        ),
        (
            "clerk-other-shortcode",
            format!(
                "{ws}  scopes: [{{resource: top_pages, fixedParams: {{org: '{{{{user.id}}}}'}}}}]\n  clerkTemplate: {{}}\n"
            ),
            Some("is not the shortcode"),
        ),
        (
            "clerk-omitted-org",
            format!("{ws}  scopes: [{{resource: top_pages}}]\n  clerkTemplate: {{}}\n"),
            None,
        ),
        (
            "clerk-literal-org",
            format!(
                "{ws}  scopes: [{{resource: top_pages, fixedParams: {{org: acme}}}}]\n  clerkTemplate: {{}}\n"
            ),
            Some("is not allowed in a Clerk template"),
        ),
        (
            "clerk-foreign-fallback",
            format!(
                "{ws}  scopes: [{{resource: top_pages, fixedParams: {{org: \"{{{{org.slug || 'globex'}}}}\"}}}}]\n  clerkTemplate: {{}}\n"
            ),
            Some("could be a tenant's org"),
        ),
        (
            "clerk-unsafe-metadata",
            format!(
                "{ws}  scopes: [{{resource: top_pages, fixedParams: {{user: '{{{{user.unsafe_metadata.id}}}}'}}}}]\n  clerkTemplate: {{}}\n"
            ),
            Some("written by the signed-in user"),
        ),
        (
            // Shortcodes in the token name reach the operator (the schema lets them through).
            "clerk-templated-token-name",
            format!(
                "{ws}  tokenName: 'acme_{{{{org.id}}}}'\n  scopes: [{{resource: top_pages}}]\n  clerkTemplate: {{}}\n"
            ),
            None,
        ),
        (
            "clerk-unsafe-token-name",
            format!(
                "{ws}  tokenName: 'acme_{{{{user.unsafe_metadata.bucket}}}}'\n  scopes: [{{resource: top_pages}}]\n  clerkTemplate: {{}}\n"
            ),
            Some("written by the signed-in user"),
        ),
        (
            "clerk-datasource",
            format!(
                "{ws}  scopes: [{{type: 'DATASOURCES:READ', resource: tenant_events, filter: 'hits > 1'}}]\n  clerkTemplate: {{}}\n"
            ),
            Some("a DATASOURCES:READ filter cannot hold a Clerk shortcode"),
        ),
        (
            "clerk-mapped-shortcode",
            format!(
                "{ws}  scopes: [{{resource: top_pages, fixedParams: {{org: '{{{{org.slug}}}}'}}}}]\n  clerkTemplate: {{}}\n"
            ),
            None,
        ),
    ]
}

fn manifest(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

/// The verdict of a TenantAccess once the operator has looked at it.
fn decided() -> impl kube::runtime::wait::Condition<TenantAccess> {
    |ta: Option<&TenantAccess>| {
        ta.and_then(|t| t.status.as_ref()).is_some_and(|s| {
            s.observed_generation.is_some() && s.conditions.iter().any(|c| c.type_ == "Ready")
        })
    }
}

async fn render(
    workspace_yaml: &str,
    name: &str,
    spec: &str,
    admin_token: &str,
    labels: &str,
) -> (i32, String, String) {
    let dir = std::env::temp_dir().join(format!("policy-render-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ws, ta, key) = (dir.join("ws.yaml"), dir.join("ta.yaml"), dir.join("admin"));
    std::fs::write(&ws, workspace_yaml).unwrap();
    std::fs::write(&ta, manifest(name, spec)).unwrap();
    std::fs::write(&key, admin_token).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenant-access"))
        .args(["render", "-n", "acme", "--namespace-labels", labels, "--admin-token-file"])
        .arg(&key)
        .arg("-f")
        .arg(&ws)
        .arg("-f")
        .arg(&ta)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_team_cannot_obtain_a_token_for_another_tenants_rows() {
    let env = ClusterWideEnv::new().await;
    let (cluster, client, tinybird, system) = (&env.cluster, &env.client, &env.tinybird, &env.system);
    // The tenant namespace must be called acme: the test user's Role lives there.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let acme: Namespace = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "acme", "labels": {"tenant": "acme"}}}),
    )
    .unwrap();
    namespaces.create(&Default::default(), &acme).await.unwrap();

    let workspace_yaml = env.shared_workspace_yaml(POLICY);
    env.apply(&workspace_yaml, None).await;
    // The team's rights: TenantAccess in acme, and reading its Secrets; nothing else.
    let subject = cluster.tenant_subject().await.unwrap();
    cluster
        .apply_yaml(
            &format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: tenant-team}}\nrules:\n- apiGroups: [tenantaccess.dev]\n  resources: [tenantaccesses]\n  verbs: [get, list, watch, create, update, patch, delete]\n- apiGroups: ['']\n  resources: [secrets]\n  verbs: [get, list]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: tenant-team}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: tenant-team}}\nsubjects: [{}]\n",
                serde_json::to_string(&subject).unwrap()
            ),
            Some("acme"),
        )
        .await
        .unwrap();
    let operator = env.start_operator();

    // The team may not touch the shared workspace or other namespaces.
    let denied = cluster.tenant_kubectl(["-n", system.name(), "get", "secrets"]).await.unwrap();
    assert!(!denied.success(), "the team must not read the operator namespace");
    let denied = cluster
        .tenant_kubectl_with_stdin(
            ["apply", "-f", "-"],
            &workspace_yaml.replace("maxRps: 20", "maxRps: 2000"),
        )
        .await
        .unwrap();
    assert!(!denied.success(), "the team must not edit the shared workspace");

    let cases = cases();
    assert!(cases.iter().filter(|c| c.2.is_some()).count() >= 20, "at least 20 refused attempts");
    let mut refused_by_the_api = std::collections::BTreeSet::new();
    for (name, spec, refusal) in &cases {
        let out = cluster
            .tenant_kubectl_with_stdin(["-n", "acme", "apply", "-f", "-"], &manifest(name, spec))
            .await
            .unwrap();
        if !out.success() {
            // Refused before it reaches the operator (kubectl or the API server's schema).
            assert!(refusal.is_some(), "{name}: the team can create TenantAccess: {}", out.stderr);
            refused_by_the_api.insert(*name);
        }
    }
    let accesses: Api<TenantAccess> = Api::namespaced(client.clone(), "acme");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "acme");
    let admin = tinybird.admin_token();
    for (name, spec, refusal) in &cases {
        if refused_by_the_api.contains(name) {
            let (code, _, stderr) =
                render(&workspace_yaml, name, spec, &tinybird.admin_token(), "tenant=acme").await;
            assert_eq!(code, 1, "{name}: render must refuse too");
            assert!(stderr.contains(refusal.unwrap_or_default()), "{name}: render says {stderr}");
            continue;
        }
        let access = wait_for(accesses.clone(), name, decided(), TIMEOUT).await.unwrap().unwrap();
        let ready =
            access.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Ready").unwrap().clone();
        let (code, stdout, stderr) = render(&workspace_yaml, name, spec, &admin, "tenant=acme").await;
        match refusal {
            Some(fragment) => {
                assert_eq!(ready.status, "False", "{name} must be refused");
                assert!(ready.message.contains(fragment), "{name}: {}", ready.message);
                assert!(
                    secrets.get_opt(name).await.unwrap().is_none_or(|s| token_of(&s).is_none()),
                    "{name}: no token"
                );
                assert_eq!(code, 1, "{name}: render must refuse too");
                assert!(stderr.contains(fragment), "{name}: render says {stderr}");
            }
            None => {
                assert_eq!(ready.status, "True", "{name}: {}", ready.message);
                assert_eq!(code, 0, "{name}: render must accept too: {stderr}");
                if spec.contains("clerkTemplate") {
                    assert!(stdout.contains("{{org.slug || '_none_'}}"), "{name}: {stdout}");
                    if spec.contains("tokenName: 'acme_{{org.id}}'") {
                        assert!(stdout.contains("acme_{{org.id || '_none_'}}"), "{name}: {stdout}");
                    }
                    assert!(
                        !stdout.contains("\"org\": \"acme\""),
                        "{name}: the template never carries the value: {stdout}"
                    );
                    continue;
                }
                let token = token_of(&secrets.get(name).await.unwrap()).unwrap();
                let claims = ParsedToken::parse(&token).unwrap().claims().unwrap().access;
                let rendered: serde_json::Value = serde_saphyr::from_str(&stdout).unwrap();
                let rendered_token = String::from_utf8(
                    base64::Engine::decode(
                        &base64::engine::general_purpose::STANDARD,
                        rendered["data"]["token"].as_str().unwrap(),
                    )
                    .unwrap(),
                )
                .unwrap();
                let rendered_claims = ParsedToken::parse(&rendered_token).unwrap().claims().unwrap().access;
                assert_eq!(
                    claims, rendered_claims,
                    "{name}: render and the controller issue the same access"
                );
                for scope in &claims.scopes {
                    match scope.scope_type.as_str() {
                        "PIPES:READ" => {
                            assert_eq!(scope.fixed_params.as_ref().unwrap()["org"], "acme", "{name}");
                        }
                        // The tenant condition is ANDed outside the tenant's own, re-serialised one.
                        _ => assert_eq!(
                            scope.filter.as_deref(),
                            Some("(org = 'globex') AND (org = 'acme')"),
                            "{name}"
                        ),
                    }
                }
                // At Tinybird: asking for globex's rows still returns only acme's.
                let (status, body) =
                    query_pipe(&tinybird.base_url(), "top_pages", &token, "org=globex").await;
                if status == 200 {
                    assert!(
                        body["data"].as_array().unwrap().iter().all(|r| r["org"] == "acme"),
                        "{name}: {body}"
                    );
                }
            }
        }
    }

    // A label change takes effect on existing tokens: injected values follow, explicit ones
    // that no longer comply lose their token.
    env.label_namespace("acme", serde_json::json!({"tenant": "acme-eu"})).await;
    wait_for(
        accesses.clone(),
        "own-org",
        support::has_condition("Ready", "False", "PolicyViolation"),
        TIMEOUT,
    )
    .await
    .unwrap();
    let revoked = secrets.get("own-org").await.unwrap();
    assert!(token_of(&revoked).is_none(), "the non-compliant token is revoked");
    wait_for(
        secrets.clone(),
        "no-org",
        |s: Option<&Secret>| {
            s.and_then(token_of).and_then(|t| ParsedToken::parse(&t).ok()?.claims().ok()).is_some_and(|c| {
                c.access.scopes[0].fixed_params.as_ref().is_some_and(|p| p["org"] == "acme-eu")
            })
        },
        TIMEOUT,
    )
    .await
    .unwrap();

    // A policy change takes effect too: tenant_events is no longer allowed.
    let narrower = workspace_yaml
        .replace("allowedResources: [top_pages, tenant_events]", "allowedResources: [top_pages]");
    env.apply(&narrower, None).await;
    wait_for(
        accesses.clone(),
        "filter-foreign",
        support::has_condition("Ready", "False", "PolicyViolation"),
        TIMEOUT,
    )
    .await
    .unwrap();
    assert!(token_of(&secrets.get("filter-foreign").await.unwrap()).is_none());
    assert!(wait_for(accesses, "no-org", support::is_ready(), TIMEOUT).await.is_ok());
    operator.stop().await;
}
