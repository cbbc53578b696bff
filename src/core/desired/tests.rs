use super::*;
use crate::api::{SecretKeySelector, TenantAccessSpec, WorkspaceSpec};
use crate::core::admin_token::tests::fake_admin_token;
use crate::core::signing_workspace::resolve;
use crate::core::validate::validate_tenant_access;

const WORKSPACE_ID: &str = "3f6c1b1e-0000-0000-0000-000000000000";

fn workspace() -> SigningWorkspace {
    let spec = WorkspaceSpec {
        admin_token_secret_ref: SecretKeySelector { name: "tinybird-admin".into(), key: None },
        ..WorkspaceSpec::default()
    };
    resolve(&spec, AdminToken::new(&fake_admin_token(WORKSPACE_ID, Some("eu_shared")))).unwrap()
}

fn access(yaml: &str) -> ValidatedAccess {
    let spec: TenantAccessSpec = serde_saphyr::from_str(yaml).unwrap();
    validate_tenant_access("acme", "acme-reader", &spec).unwrap()
}

fn now() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

#[test]
fn issues_a_token_with_exactly_tinybirds_claims() {
    let access = access(
        "workspaceRef: {name: a}\nscopes: [{resource: top_pages, fixedParams: {org: acme}}]\nlimits: {rps: 10}\nsecret: {}\n",
    );
    let token = issue_token(&access, &workspace(), now()).unwrap();
    let parsed = jwt::ParsedToken::parse(&token.jwt).unwrap();
    assert_eq!(
        parsed.payload,
        serde_json::json!({
            "workspace_id": WORKSPACE_ID, "name": "acme_acme-reader",
            "scopes": [{"type": "PIPES:READ", "resource": "top_pages", "fixed_params": {"org": "acme"}}],
            "limits": {"rps": 10},
            "iat": 1_767_225_600, "exp": 1_767_229_200,
        })
    );
    assert_eq!(token.issued_at, now());
    let nominal: Timestamp = "2026-01-01T00:40:00Z".parse().unwrap();
    assert_eq!(token.renewal_time, nominal - crate::core::reconcile::decide::renewal_offset(&access));
    assert!(
        token.renewal_time > nominal - jiff::SignedDuration::from_mins(5),
        "brought forward by under renewBefore / 4"
    );
    assert!(!format!("{token:?}").contains(&token.jwt));
}

#[test]
fn omits_limits_and_fixed_params_when_not_asked() {
    let access = access("workspaceRef: {name: a}\nscopes: [{resource: top_pages}]\nsecret: {}\n");
    let claims = serde_json::to_value(access_claims(&access, WORKSPACE_ID)).unwrap();
    assert_eq!(
        claims,
        serde_json::json!({"workspace_id": WORKSPACE_ID, "name": "acme_acme-reader",
            "scopes": [{"type": "PIPES:READ", "resource": "top_pages"}]})
    );
}

#[test]
fn secret_carries_token_url_workspace_expiry_labels_and_owner() {
    let access = access(
        "workspaceRef: {name: a}\nscopes: [{resource: top_pages}]\nsecret: {name: acme-token, labels: {team: acme}, annotations: {reloader.stakater.com/match: 'true'}}\n",
    );
    let token = issue_token(&access, &workspace(), now()).unwrap();
    let owner = OwnerReference {
        name: "acme-reader".into(),
        uid: "u-1".into(),
        controller: Some(true),
        ..OwnerReference::default()
    };
    let secret = desired_secret(&access, &workspace(), &token, 7, Some(owner)).unwrap();
    let data = secret.data.unwrap();
    let text = |key: &str| String::from_utf8(data[key].0.clone()).unwrap();
    assert_eq!(text("token"), token.jwt);
    assert_eq!(text("api-url"), "https://api.tinybird.co");
    assert_eq!(text("workspace-id"), WORKSPACE_ID);
    assert_eq!(text("expires-at"), "2026-01-01T01:00:00Z");
    let labels = secret.metadata.labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "tenant-access-operator");
    assert_eq!(labels["tenantaccess.dev/tenant-access"], "acme-reader");
    assert_eq!(labels["team"], "acme");
    let annotations = secret.metadata.annotations.unwrap();
    assert_eq!(annotations["tenantaccess.dev/revision"], "7");
    assert_eq!(annotations["reloader.stakater.com/match"], "true");
    assert_eq!(secret.metadata.name.as_deref(), Some("acme-token"));
    assert_eq!(secret.metadata.namespace.as_deref(), Some("acme"));
    assert_eq!(secret.metadata.owner_references.unwrap()[0].controller, Some(true));
}

#[test]
fn clerk_template_keeps_shortcodes_with_a_fallback_for_a_missing_identity_and_never_the_key() {
    let access = access(
        "workspaceRef: {name: a}\nscopes: [{resource: top_pages, fixedParams: {org: '{{org.slug}}', user: \"{{ user.id||'_none_' }}\"}}]\nclerkTemplate: {name: tinybird}\n",
    );
    let template = clerk_template(&access, access.clerk_template.as_ref().unwrap(), WORKSPACE_ID);
    let json = serde_json::to_value(&template).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "name": "tinybird",
            "claims": {"workspace_id": WORKSPACE_ID, "name": "acme_acme-reader_{{user.id || '_none_'}}",
                "scopes": [{"type": "PIPES:READ", "resource": "top_pages",
                    "fixed_params": {"org": "{{org.slug || '_none_'}}", "user": "{{user.id || '_none_'}}"}}],
                "tenant_access": "acme/acme-reader", "tenant_access_workspace": "TinybirdWorkspace/acme/a"},
            "lifetime": 60, "allowed_clock_skew": 5,
            "custom_signing_key": true, "signing_algorithm": "HS256",
        })
    );
    for reserved in ["azp", "exp", "iat", "iss", "jti", "nbf", "sub"] {
        assert!(json["claims"].get(reserved).is_none(), "{reserved}");
    }
    let key = workspace().key;
    let configmap = desired_clerk_configmap(&access, &template, None);
    let stored = &configmap.data.unwrap()["template.json"];
    assert!(!stored.contains(key.expose()));
    assert_eq!(configmap.metadata.name.as_deref(), Some("acme-reader-clerk-template"));
    assert_eq!(template.request_body(&key)["signing_key"], key.expose());
}

#[test]
fn template_hash_changes_with_lifetime_not_with_the_key() {
    let a = access("workspaceRef: {name: a}\nscopes: [{resource: p}]\nclerkTemplate: {}\n");
    let b = access("workspaceRef: {name: a}\nscopes: [{resource: p}]\nclerkTemplate: {lifetime: 120s}\n");
    let ta = clerk_template(&a, a.clerk_template.as_ref().unwrap(), WORKSPACE_ID);
    let tb = clerk_template(&b, b.clerk_template.as_ref().unwrap(), WORKSPACE_ID);
    assert_ne!(ta.hash(), tb.hash());
    assert_eq!(ta.hash(), ta.clone().hash());
}

#[test]
fn refuses_a_token_larger_than_an_http_header_takes() {
    let params: String = (0..32).map(|i| format!("p{i}: '{}', ", "x".repeat(1000))).collect();
    let scopes: String =
        (0..4).map(|i| format!("{{resource: pipe_{i}, fixedParams: {{{params}}}}}, ")).collect();
    let large = access(&format!("workspaceRef: {{name: a}}\nscopes: [{scopes}]\nsecret: {{}}\n"));
    let error = check_token_size(&large, &workspace(), now()).unwrap_err();
    assert!(error.bytes > crate::api::limits::MAX_TOKEN_BYTES, "{error}");
    assert!(error.to_string().contains("use fewer scopes"), "{error}");

    let small = access("workspaceRef: {name: a}\nscopes: [{resource: top_pages}]\nsecret: {}\n");
    assert_eq!(check_token_size(&small, &workspace(), now()), Ok(()));
}
