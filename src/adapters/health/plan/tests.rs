use jiff::Timestamp;

use super::*;
use crate::api::{SecretKeySelector, TenantAccessSpec, WorkspaceSpec};
use crate::core::admin_token::tests::fake_admin_token;
use crate::core::jwt::ParsedToken;
use crate::core::signing_workspace::resolve;
use crate::core::validate::validate_tenant_access;

const WORKSPACE_ID: &str = "3f6c1b1e-0000-0000-0000-000000000000";

fn access(yaml: &str) -> ValidatedAccess {
    let spec: TenantAccessSpec = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("fixture: {e}"));
    validate_tenant_access("tenants", "acme", &spec).unwrap_or_else(|e| panic!("invalid fixture: {e}"))
}

fn workspace() -> SigningWorkspace {
    let spec = WorkspaceSpec {
        admin_token_secret_ref: SecretKeySelector { name: "tinybird-admin".into(), key: None },
        api_url: Some("http://tinybird.local:7181/".into()),
        ..WorkspaceSpec::default()
    };
    resolve(&spec, AdminToken::new(&fake_admin_token(WORKSPACE_ID, None))).unwrap_or_else(|e| panic!("{e}"))
}

const SECRET_ACCESS: &str = r"
workspaceRef: {name: analytics}
scopes:
  - resource: top_pages
    fixedParams: {org: acme}
  - type: DATASOURCES:READ
    resource: events
    filter: org = 'acme'
secret: {}
healthCheck:
  interval: 2m
  timeout: 3s
  params: {limit: '1', day: '2024-01-01 & q=SELECT 1'}
";

const CLERK_ONLY: &str = r#"
workspaceRef: {name: analytics}
scopes:
  - resource: top_pages
    fixedParams: {org: "{{org.slug}}"}
  - resource: tenant_events
    fixedParams: {org: "{{org.slug}}", user: "{{user.id}}"}
clerkTemplate: {}
healthCheck:
  sampleParams: {org: globex}
"#;

#[test]
fn a_secret_access_is_probed_with_its_issued_token_on_each_pipe_scope() {
    let plan = ProbePlan::for_access(&access(SECRET_ACCESS), &workspace(), Some("eyJ.issued.token\n"))
        .unwrap_or_else(|| panic!("a plan"));
    assert_eq!(&*plan.api_url, "http://tinybird.local:7181");
    assert_eq!(plan.interval, Duration::from_secs(120));
    assert_eq!(plan.timeout, Duration::from_secs(3));
    assert_eq!(plan.endpoints, [PlannedEndpoint { resource: "top_pages".into(), skipped: None }]);
    assert!(
        matches!(&plan.credential, ProbeCredential::Issued { token, .. } if token.to_jwt().as_deref() == Some("eyJ.issued.token"))
    );

    let request = plan.request_for("top_pages", Timestamp::now()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(request.url(), "http://tinybird.local:7181/v0/pipes/top_pages.json");
    assert_eq!(
        request.params(),
        [("day".to_owned(), "2024-01-01 & q=SELECT 1".to_owned()), ("limit".to_owned(), "1".to_owned())],
        "sent as parsed, one value each"
    );
    assert_eq!(request.bearer_token(), "eyJ.issued.token");
    assert!(!format!("{request:?}{plan:?}").contains("issued.token"), "Debug shows no token");
}

#[test]
fn a_pipe_existence_is_checked_with_the_admin_token_on_the_unbilled_metadata_call() {
    let ws = workspace();
    let plan = ProbePlan::for_access(&access(SECRET_ACCESS), &ws, Some("eyJ.issued.token"))
        .unwrap_or_else(|| panic!("a plan"));
    let request = plan.existence_request("top_pages");
    // No format suffix: the pipe's description, not a (billed) query of its endpoint.
    assert_eq!(request.url(), "http://tinybird.local:7181/v0/pipes/top_pages");
    assert!(request.params().is_empty(), "healthCheck.params are for the endpoint, not its description");
    assert_eq!(request.bearer_token(), ws.key.expose());
    assert_eq!(request.timeout(), Duration::from_secs(3));
    assert!(!request.purpose().is_billed());
    assert!(!format!("{request:?}{plan:?}").contains(ws.key.expose()), "Debug shows no admin token");
}

#[test]
fn disabled_health_checks_have_no_plan() {
    let yaml = SECRET_ACCESS.replace("interval: 2m", "interval: '0'").replace("timeout: 3s", "");
    assert_eq!(ProbePlan::for_access(&access(&yaml), &workspace(), Some("t")), None);
}

#[test]
fn a_clerk_only_access_gets_short_lived_probe_tokens_with_sample_values() {
    let ws = workspace();
    let plan = ProbePlan::for_access(&access(CLERK_ONLY), &ws, None).unwrap_or_else(|| panic!("a plan"));
    assert_eq!(plan.interval, Duration::from_secs(300), "default interval");
    assert_eq!(plan.endpoints[0], PlannedEndpoint { resource: "top_pages".into(), skipped: None });
    let now = Timestamp::now();
    let request = plan.request_for("top_pages", now).unwrap_or_else(|e| panic!("{e}"));
    let parsed = ParsedToken::parse(request.bearer_token()).unwrap_or_else(|e| panic!("{e}"));
    let claims = parsed.verify(&ws.key, now).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claims.exp - claims.iat, 300, "five minutes");
    assert!(parsed.payload.get("nbf").is_none());
    assert_eq!(claims.access.name, "tenants_acme", "the tenant's own rate-limit bucket");
    assert_eq!(claims.access.scopes.len(), 1, "the unprobeable scope is left out");
    let fixed = claims.access.scopes[0].fixed_params.clone().unwrap_or_default();
    assert_eq!(fixed["org"], "globex");
    assert!(plan.credential.believed_valid_at(now));
}

#[test]
fn a_shortcode_without_a_sample_value_skips_its_scope_with_a_reason() {
    let plan =
        ProbePlan::for_access(&access(CLERK_ONLY), &workspace(), None).unwrap_or_else(|| panic!("a plan"));
    let skipped = &plan.endpoints[1];
    assert_eq!(skipped.resource, "tenant_events");
    let message = skipped.skipped.clone().unwrap_or_default();
    assert!(message.contains("spec.healthCheck.sampleParams.user"), "{message}");
    assert!(!message.contains("sampleParams.org"), "org has a sample: {message}");
    assert_eq!(plan.probed_resources().collect::<Vec<_>>(), ["top_pages"]);
}

#[test]
fn credentials_compare_by_identity_and_know_their_expiry() {
    let expired =
        ProbeCredential::Issued { token: IssuedToken::new("a"), expires_at: Some(Timestamp::UNIX_EPOCH) };
    assert!(!expired.believed_valid_at(Timestamp::now()));
    assert_eq!(ProbeCredential::issued("a"), expired);
    assert_ne!(ProbeCredential::issued("a"), ProbeCredential::issued("b"));
    assert!(ProbeCredential::issued("not a jwt").believed_valid_at(Timestamp::now()));
}

/// The Clerk-only access checked against a shared workspace's policy pinning `org` to the
/// namespace's `tenant` label (`acme`).
fn pinned_clerk_only(yaml: &str) -> ValidatedAccess {
    let policy: crate::api::WorkspacePolicy = serde_saphyr::from_str(
        "requiredParams: {org: {namespaceLabel: tenant, clerkShortcode: '{{org.slug}}'}}",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let labels = BTreeMap::from([("tenant".to_owned(), "acme".to_owned())]);
    let namespace = crate::core::policy::NamespaceFacts { name: "tenants", labels: Some(&labels) };
    crate::core::policy::apply(access(yaml), Some(&policy), "shared", namespace)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn probe_token_org(plan: &ProbePlan, ws: &SigningWorkspace) -> serde_json::Value {
    let now = Timestamp::now();
    let request = plan.request_for("top_pages", now).unwrap_or_else(|e| panic!("{e}"));
    let parsed = ParsedToken::parse(request.bearer_token()).unwrap_or_else(|e| panic!("{e}"));
    let claims = parsed.verify(&ws.key, now).unwrap_or_else(|e| panic!("{e}"));
    let scope = claims.access.scopes.iter().find(|s| s.resource == "top_pages").cloned();
    scope.and_then(|s| s.fixed_params).unwrap_or_default()["org"].clone()
}

#[test]
fn a_param_the_policy_pins_takes_the_policys_value_in_probe_tokens_whatever_the_sample_says() {
    let ws = workspace();
    // No sample needed: the pinned value stands in for the shortcode.
    let unsampled = pinned_clerk_only(&CLERK_ONLY.replace("  sampleParams: {org: globex}\n", ""));
    assert_eq!(unsampled.pinned_params, BTreeMap::from([("org".to_owned(), "acme".to_owned())]));
    let plan = ProbePlan::for_access(&unsampled, &ws, None).unwrap_or_else(|| panic!("a plan"));
    assert_eq!(plan.endpoints[0], PlannedEndpoint { resource: "top_pages".into(), skipped: None });
    assert_eq!(probe_token_org(&plan, &ws), "acme");

    // A foreign sample that got past the policy (it refuses one) still never reaches a token.
    let mut foreign = unsampled;
    foreign.health.sample_params.insert("org".into(), "globex".into());
    let plan = ProbePlan::for_access(&foreign, &ws, None).unwrap_or_else(|| panic!("a plan"));
    assert_eq!(probe_token_org(&plan, &ws), "acme");
    let skipped = plan.endpoints[1].skipped.clone().unwrap_or_default();
    assert!(skipped.contains("sampleParams.user") && !skipped.contains("sampleParams.org"), "{skipped}");
}

#[test]
fn without_a_policy_a_sample_stands_in_for_the_shortcode() {
    let ws = workspace();
    let unpinned = access(CLERK_ONLY);
    assert!(unpinned.pinned_params.is_empty());
    let plan = ProbePlan::for_access(&unpinned, &ws, None).unwrap_or_else(|| panic!("a plan"));
    assert_eq!(probe_token_org(&plan, &ws), "globex");
}
