use super::*;
use crate::api::TenantAccessSpec;
use crate::core::reconcile::decide::tests::{SPEC, access, workspace};

const CLUSTER_SPEC: &str = "workspaceRef: {kind: ClusterTinybirdWorkspace, name: shared}\nscopes: [{resource: top_pages}]\nlifetime: 1h\nsecret: {}\n";

fn now() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn spec(yaml: &str) -> WorkspaceSpec {
    serde_saphyr::from_str(&format!("adminTokenSecretRef: {{name: admin}}\n{yaml}")).unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn facts<'a>(
    labels: Option<&'a BTreeMap<String, String>>,
    labels_are_facts: bool,
    workspace: Option<&'a WorkspaceSpec>,
) -> Facts<'a> {
    Facts { namespace: NamespaceFacts { name: "acme", labels }, labels_are_facts, workspace }
}

fn refusal(result: Result<Admitted<'_>, Refusal>) -> Refusal {
    result.map(|a| a.access.name).unwrap_err()
}

#[test]
fn an_invalid_spec_is_refused_until_it_is_fixed() {
    let spec: TenantAccessSpec =
        serde_saphyr::from_str("workspaceRef: {name: a}\nscopes: []\nsecret: {}\n").unwrap();
    let refused = validate("acme", "acme", &spec).unwrap_err();
    assert_eq!(
        (refused.reason, refused.retry, refused.revoke),
        (reason::INVALID_SPEC, Retry::OnChange, None)
    );
    assert!(refused.message.ends_with("nothing is issued until the spec is fixed"), "{}", refused.message);
}

#[test]
fn admits_a_namespaced_workspace_with_its_policy_applied() {
    let (ws, team) = (workspace("k1"), labels(&[("tenant", "acme")]));
    let policy = spec("policy: {maxRps: 7}");
    let admitted = admit(access(SPEC), facts(Some(&team), true, Some(&policy)), Ok(&ws), now()).unwrap();
    assert_eq!(admitted.access.rps, Some(7), "maxRps applied");
    assert_eq!(admitted.signer.signing_key_fingerprint, ws.signing_key_fingerprint);
}

#[test]
fn a_cluster_workspace_admits_only_the_namespaces_its_selector_matches() {
    let ws = workspace("k1");
    let selecting = spec("policy: {allowedNamespaces: {matchLabels: {tenant: acme}}}");
    let (matching, other) = (labels(&[("tenant", "acme")]), labels(&[("tenant", "globex")]));
    assert!(
        admit(access(CLUSTER_SPEC), facts(Some(&matching), true, Some(&selecting)), Ok(&ws), now()).is_ok()
    );

    let refused =
        refusal(admit(access(CLUSTER_SPEC), facts(Some(&other), true, Some(&selecting)), Ok(&ws), now()));
    assert_eq!(refused.reason, reason::NAMESPACE_NOT_ALLOWED);
    assert_eq!(refused.revoke, Some(revoke_why::NAMESPACE), "a definite refusal withdraws access");
    assert_eq!(refused.retry, Retry::Backoff);
    assert!(refused.message.contains("does not admit namespace acme"), "{}", refused.message);

    let unsynced =
        refusal(admit(access(CLUSTER_SPEC), facts(Some(&other), false, Some(&selecting)), Ok(&ws), now()));
    assert_eq!(unsynced.revoke, None, "labels not yet read revoke nothing");
}

#[test]
fn a_cluster_workspace_without_allowed_namespaces_admits_none() {
    let (ws, team, bare) = (workspace("k1"), labels(&[("tenant", "acme")]), spec(""));
    let refused = refusal(admit(access(CLUSTER_SPEC), facts(Some(&team), true, Some(&bare)), Ok(&ws), now()));
    assert_eq!(
        (refused.reason, refused.revoke),
        (reason::NAMESPACE_NOT_ALLOWED, Some(revoke_why::NAMESPACE))
    );
    assert!(refused.message.contains("admits no namespace"), "{}", refused.message);
}

#[test]
fn a_selector_that_cannot_be_evaluated_refuses_without_revoking() {
    let (ws, team) = (workspace("k1"), labels(&[("tenant", "acme")]));
    let broken =
        spec("policy: {allowedNamespaces: {matchExpressions: [{key: tenant, operator: Sometimes}]}}");
    let refused =
        refusal(admit(access(CLUSTER_SPEC), facts(Some(&team), true, Some(&broken)), Ok(&ws), now()));
    assert_eq!((refused.reason, refused.revoke), (reason::NAMESPACE_NOT_ALLOWED, None));
}

#[test]
fn a_workspace_not_in_the_input_is_not_checked_for_namespaces() {
    let ws = workspace("k1");
    assert!(admit(access(CLUSTER_SPEC), facts(None, true, None), Ok(&ws), now()).is_ok());
}

#[test]
fn the_namespace_is_admitted_before_the_signer_is_looked_at() {
    let bare = spec("");
    let not_ready = cannot_sign(&access(CLUSTER_SPEC), "KeyMissing", "the Secret has no key");
    let refused =
        refusal(admit(access(CLUSTER_SPEC), facts(None, true, Some(&bare)), Err(not_ready.clone()), now()));
    assert_eq!(refused.reason, reason::NAMESPACE_NOT_ALLOWED);

    let refused = refusal(admit(access(SPEC), facts(None, true, Some(&bare)), Err(not_ready.clone()), now()));
    assert_eq!(refused, not_ready);
    assert_eq!(
        (refused.reason, refused.retry, refused.revoke),
        (reason::WORKSPACE_NOT_READY, Retry::Backoff, None)
    );
    assert_eq!(
        refused.message,
        "ClusterTinybirdWorkspace shared cannot sign (KeyMissing): the Secret has no key"
    );
}

#[test]
fn a_policy_violation_revokes_only_when_the_namespace_is_known() {
    let ws = workspace("k1");
    let strict = spec("policy: {allowedResources: ['tenant_*']}");
    let refused = refusal(admit(access(SPEC), facts(None, true, Some(&strict)), Ok(&ws), now()));
    assert_eq!(refused.reason, reason::POLICY_VIOLATION);
    assert!(refused.message.starts_with("refused by the workspace policy: "), "{}", refused.message);
    assert_eq!((refused.revoke, refused.retry), (Some(revoke_why::POLICY), Retry::OnChange));

    let unsynced = refusal(admit(access(SPEC), facts(None, false, Some(&strict)), Ok(&ws), now()));
    assert_eq!(
        (unsynced.revoke, unsynced.retry),
        (None, Retry::Backoff),
        "decided again once the namespace is read"
    );
}

#[test]
fn a_token_too_large_to_send_is_refused_until_the_spec_changes() {
    let ws = workspace("k1");
    let params: String = (0..32).map(|i| format!("p{i}: '{}', ", "x".repeat(1000))).collect();
    let scopes: String =
        (0..4).map(|i| format!("{{resource: pipe_{i}, fixedParams: {{{params}}}}}, ")).collect();
    let yaml = format!("workspaceRef: {{name: a}}\nscopes: [{scopes}]\nsecret: {{}}\n");
    let refused = refusal(admit(access(&yaml), facts(None, true, None), Ok(&ws), now()));
    assert_eq!(
        (refused.reason, refused.retry, refused.revoke),
        (reason::TOKEN_TOO_LARGE, Retry::OnChange, None)
    );
}

#[test]
fn without_a_signer_the_namespace_and_the_policy_refuse_exactly_as_with_one() {
    let ws = workspace("k1");
    let (other, team) = (labels(&[("tenant", "globex")]), labels(&[("tenant", "acme")]));
    let selecting = spec("policy: {allowedNamespaces: {matchLabels: {tenant: acme}}, maxRps: 5}");
    let greedy = access(&CLUSTER_SPEC.replace("lifetime: 1h", "lifetime: 1h\nlimits: {rps: 50}"));
    for (labels, access) in [(&other, access(CLUSTER_SPEC)), (&team, greedy)] {
        let facts = facts(Some(labels), true, Some(&selecting));
        let with_signer = refusal(admit(access.clone(), facts, Ok(&ws), now()));
        let without = admit_without_signer(access, facts).map(|a| a.name).unwrap_err();
        assert_eq!(without, with_signer);
    }
    // Admitted: the policy applied, as admit applies it.
    let admitted =
        admit_without_signer(access(CLUSTER_SPEC), facts(Some(&team), true, Some(&selecting))).unwrap();
    assert_eq!(admitted.rps, Some(5));
}
