// Fixtures are built as JSON values and handed over whole.
#![allow(clippy::unwrap_used, clippy::panic, clippy::needless_pass_by_value)]

use serde_json::json;

use super::*;

fn workspace_spec(policy: serde_json::Value) -> WorkspaceSpec {
    serde_json::from_value(json!({"adminTokenSecretRef": {"name": "tb"}, "policy": policy})).unwrap()
}

fn with_analytics(policy: serde_json::Value) -> StaticFacts {
    StaticFacts::cluster_wide().with_workspace(
        WorkspaceKind::Namespaced,
        "acme",
        "analytics",
        workspace_spec(policy),
    )
}

fn access(spec: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "tenantaccess.dev/v1alpha1", "kind": "TenantAccess",
        "metadata": {"name": "dash", "namespace": "acme"},
        "spec": spec,
    })
}

fn good_spec() -> serde_json::Value {
    json!({"workspaceRef": {"name": "analytics"}, "scopes": [{"resource": "top_pages", "fixedParams": {"org": "acme"}}], "secret": {}})
}

fn review(kind: &str, operation: &str, object: serde_json::Value, old: Option<serde_json::Value>) -> Vec<u8> {
    let mut request = json!({
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "tenantaccess.dev", "version": "v1alpha1", "kind": kind},
        "resource": {"group": "tenantaccess.dev", "version": "v1alpha1", "resource": "x"},
        "operation": operation, "namespace": "acme", "name": "dash", "object": object,
    });
    if let Some(old) = old {
        request["oldObject"] = old;
    }
    serde_json::to_vec(&json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": request}))
        .unwrap()
}

async fn verdict(body: &[u8], facts: &StaticFacts) -> serde_json::Value {
    let answer = answer(body, facts).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer["apiVersion"], API_VERSION);
    assert_eq!(answer["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    answer["response"].clone()
}

fn message(response: &serde_json::Value) -> &str {
    response["status"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_valid_tenant_access_is_allowed_without_warnings() {
    let response =
        verdict(&review("TenantAccess", "CREATE", access(good_spec()), None), &with_analytics(json!({})))
            .await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("warnings").is_none(), "{response}");
}

#[tokio::test]
async fn an_invalid_spec_is_refused_with_the_reconcilers_message() {
    let mut spec = good_spec();
    spec["scopes"][0]["fixedParams"]["org"] = json!("");
    spec["lifetime"] = json!("1h");
    spec["renewBefore"] = json!("2h");
    let response =
        verdict(&review("TenantAccess", "CREATE", access(spec.clone()), None), &StaticFacts::cluster_wide())
            .await;
    assert_eq!(response["allowed"], false);
    let expected =
        admit::validate("acme", "dash", &serde_json::from_value(spec).unwrap()).unwrap_err().message;
    assert_eq!(message(&response), expected);
    assert!(
        expected.contains("spec.scopes[0].fixedParams.org") && expected.contains("spec.renewBefore"),
        "{expected}"
    );
}

#[tokio::test]
async fn a_scope_the_policy_forbids_is_refused() {
    let mut spec = good_spec();
    spec["scopes"][0]["type"] = json!("DATASOURCES:READ");
    spec["scopes"][0].as_object_mut().unwrap().remove("fixedParams");
    let response =
        verdict(&review("TenantAccess", "CREATE", access(spec), None), &with_analytics(json!({}))).await;
    assert_eq!(response["allowed"], false);
    assert!(
        message(&response).starts_with("refused by the workspace policy: spec.scopes[0].type"),
        "{response}"
    );
}

#[tokio::test]
async fn a_namespace_the_cluster_workspace_does_not_admit_is_refused() {
    let known = StaticFacts::cluster_wide().with_workspace(
        WorkspaceKind::Cluster,
        "",
        "shared",
        workspace_spec(json!({"allowedNamespaces": {"matchLabels": {"tenants": "enabled"}}})),
    );
    let mut spec = good_spec();
    spec["workspaceRef"] = json!({"kind": "ClusterTinybirdWorkspace", "name": "shared"});
    let body = review("TenantAccess", "CREATE", access(spec), None);
    let refused = verdict(&body, &known).await;
    assert_eq!(refused["allowed"], false);
    assert!(message(&refused).contains("does not admit namespace acme"), "{refused}");

    let known = known.with_labels("acme", [("tenants".to_owned(), "enabled".to_owned())].into());
    assert_eq!(verdict(&body, &known).await["allowed"], true);
}

#[tokio::test]
async fn a_workspace_that_does_not_exist_yet_is_no_reason_to_refuse() {
    let response =
        verdict(&review("TenantAccess", "CREATE", access(good_spec()), None), &StaticFacts::cluster_wide())
            .await;
    assert_eq!(response["allowed"], true);
    assert!(
        response["warnings"][0]
            .as_str()
            .unwrap()
            .contains("TinybirdWorkspace analytics does not exist (yet)")
    );
}

#[tokio::test]
async fn facts_that_cannot_be_read_allow_with_a_warning() {
    let known = StaticFacts {
        unreadable: Some("the API server did not answer".to_owned()),
        ..StaticFacts::cluster_wide()
    };
    let response = verdict(&review("TenantAccess", "CREATE", access(good_spec()), None), &known).await;
    assert_eq!(response["allowed"], true);
    assert!(
        response["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("not checked against TinybirdWorkspace analytics")
    );
}

#[tokio::test]
async fn the_reconcilers_warnings_become_admission_warnings() {
    let spec = json!({
        "workspaceRef": {"name": "analytics"},
        "scopes": [{"resource": "top_pages", "fixedParams": {"org": "{{org.id}}"}}],
        "clerkTemplate": {},
    });
    let response =
        verdict(&review("TenantAccess", "CREATE", access(spec.clone()), None), &with_analytics(json!({})))
            .await;
    assert_eq!(response["allowed"], true, "{response}");
    let expected = admit::validate("acme", "dash", &serde_json::from_value(spec).unwrap()).unwrap().warnings;
    assert!(expected.is_empty(), "the spec alone is fine: {expected:?}");
    // Without limits.rps (and no policy maxRps), every user of the template is unlimited.
    assert_eq!(response["warnings"].as_array().map(Vec::len), Some(1), "{response}");
    assert!(response["warnings"][0].as_str().unwrap().contains("no limits.rps"), "{response}");
}

#[tokio::test]
async fn deletes_status_updates_deleting_objects_and_unchanged_specs_are_never_refused() {
    let mut bad = good_spec();
    bad["scopes"][0]["fixedParams"]["org"] = json!("");
    let known = StaticFacts::cluster_wide();
    assert_eq!(
        verdict(&review("TenantAccess", "DELETE", access(bad.clone()), None), &known).await["allowed"],
        true
    );
    let mut deleting = access(bad.clone());
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    assert_eq!(verdict(&review("TenantAccess", "UPDATE", deleting, None), &known).await["allowed"], true);
    let mut finalized = access(bad.clone());
    finalized["metadata"]["finalizers"] = json!(["tenantaccess.dev/cleanup"]);
    let unchanged = review("TenantAccess", "UPDATE", finalized, Some(access(bad.clone())));
    assert_eq!(verdict(&unchanged, &known).await["allowed"], true);
    let mut status = serde_json::from_slice::<serde_json::Value>(&review(
        "TenantAccess",
        "UPDATE",
        access(bad.clone()),
        None,
    ))
    .unwrap();
    status["request"]["subResource"] = json!("status");
    assert_eq!(verdict(&serde_json::to_vec(&status).unwrap(), &known).await["allowed"], true);
    // A changed spec is judged.
    let changed = review("TenantAccess", "UPDATE", access(bad), Some(access(good_spec())));
    assert_eq!(verdict(&changed, &known).await["allowed"], false);
}

#[tokio::test]
async fn namespaces_the_operator_does_not_serve_are_not_judged() {
    let mut bad = access(json!({"workspaceRef": {"name": "analytics"}, "scopes": []}));
    bad["metadata"]["namespace"] = json!("elsewhere");
    let mut body: serde_json::Value =
        serde_json::from_slice(&review("TenantAccess", "CREATE", bad, None)).unwrap();
    body["request"]["namespace"] = json!("elsewhere");
    let acme_only = StaticFacts { served: Some(["acme".to_owned()].into()), ..StaticFacts::cluster_wide() };
    assert_eq!(verdict(&serde_json::to_vec(&body).unwrap(), &acme_only).await["allowed"], true);
}

#[tokio::test]
async fn workspaces_the_operator_does_not_use_are_not_judged() {
    let one_namespace = StaticFacts::one_namespace("acme");
    let broken = json!({"adminTokenSecretRef": {"name": "tb"}, "verifyInterval": "often"});
    let object = |kind: &str| json!({"apiVersion": "tenantaccess.dev/v1alpha1", "kind": kind, "metadata": {"name": "w"}, "spec": broken});
    let cluster = review("ClusterTinybirdWorkspace", "CREATE", object("ClusterTinybirdWorkspace"), None);
    assert_eq!(answer(&cluster, &one_namespace).await.unwrap()["response"]["allowed"], true);
    // A TinybirdWorkspace of its namespace is judged; of another, not.
    let served = review("TinybirdWorkspace", "CREATE", object("TinybirdWorkspace"), None);
    assert_eq!(answer(&served, &one_namespace).await.unwrap()["response"]["allowed"], false);
    let mut elsewhere: serde_json::Value = serde_json::from_slice(&served).unwrap();
    elsewhere["request"]["namespace"] = json!("globex");
    let elsewhere = serde_json::to_vec(&elsewhere).unwrap();
    assert_eq!(answer(&elsewhere, &one_namespace).await.unwrap()["response"]["allowed"], true);
}

#[tokio::test]
async fn a_workspace_with_a_policy_no_tenant_access_can_meet_is_refused() {
    let object = json!({
        "apiVersion": "tenantaccess.dev/v1alpha1", "kind": "ClusterTinybirdWorkspace", "metadata": {"name": "shared"},
        "spec": {"adminTokenSecretRef": {"name": "tb"}, "verifyInterval": "often", "rotation": {"interval": "30s"},
                 "policy": {"requiredParams": {"org": {}}, "allowedNamespaces": {"matchExpressions": [{"key": "tier", "operator": "Near"}]}}},
    });
    let response =
        verdict(&review("ClusterTinybirdWorkspace", "CREATE", object, None), &StaticFacts::cluster_wide())
            .await;
    assert_eq!(response["allowed"], false);
    let message = message(&response);
    for field in [
        "spec.verifyInterval",
        "spec.rotation.interval",
        "spec.policy.requiredParams.org",
        "spec.policy.allowedNamespaces",
    ] {
        assert!(message.contains(field), "{field} missing from {message}");
    }
    let fine = json!({"apiVersion": "tenantaccess.dev/v1alpha1", "kind": "TinybirdWorkspace", "metadata": {"name": "analytics"}, "spec": {"adminTokenSecretRef": {"name": "tb"}}});
    assert_eq!(
        verdict(&review("TinybirdWorkspace", "CREATE", fine, None), &StaticFacts::cluster_wide()).await["allowed"],
        true
    );
}

#[tokio::test]
async fn malformed_reviews_get_a_clear_error() {
    let known = StaticFacts::cluster_wide();
    let cases: [(&[u8], &str); 4] = [
        (b"not json", "not an AdmissionReview"),
        (
            br#"{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": null}"#,
            "send admission.k8s.io/v1",
        ),
        (br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#, "has no request"),
        (br#"{"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}"#, "not AdmissionReview"),
    ];
    for (body, expected) in cases {
        let error = answer(body, &known).await.map(|_| ()).unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
    }
}

#[tokio::test]
async fn an_object_that_is_not_a_tenant_access_is_refused_naming_the_field() {
    let object = access(json!({"workspaceRef": {"name": "analytics"}, "scopes": "all"}));
    let response =
        verdict(&review("TenantAccess", "CREATE", object, None), &StaticFacts::cluster_wide()).await;
    assert_eq!(response["allowed"], false);
    assert!(message(&response).starts_with("spec.scopes"), "{response}");
}

#[tokio::test]
async fn every_answered_review_is_counted_by_kind_and_verdict() {
    let counted = |kind: &'static str, verdict: &'static str| {
        reviews_family().get_or_create(&ReviewLabels { kind, verdict }).get()
    };
    let before = [
        counted("TenantAccess", "allowed"),
        counted("TenantAccess", "warned"),
        counted("TenantAccess", "refused"),
        counted("other", "allowed"),
    ];
    let facts = with_analytics(json!({}));
    let allowed = verdict(&review("TenantAccess", "CREATE", access(good_spec()), None), &facts).await;
    assert_eq!(allowed["allowed"], true);
    let mut bad = good_spec();
    bad["scopes"][0]["fixedParams"]["org"] = json!("");
    let refused = verdict(&review("TenantAccess", "CREATE", access(bad), None), &facts).await;
    assert_eq!(refused["allowed"], false);
    let shortcode = json!({
        "workspaceRef": {"name": "analytics"},
        "scopes": [{"resource": "top_pages", "fixedParams": {"org": "{{org.id}}"}}],
        "clerkTemplate": {},
    });
    let warned = verdict(&review("TenantAccess", "CREATE", access(shortcode), None), &facts).await;
    assert!(warned["warnings"].is_array(), "{warned}");
    // A kind the webhook is not registered for gets a label of its own, not its name.
    let foreign =
        verdict(&review("Deployment", "CREATE", json!({"metadata": {"name": "x"}}), None), &facts).await;
    assert_eq!(foreign["allowed"], true);
    // A malformed request is no review.
    assert!(answer(b"{}", &facts).await.is_err());
    let after = [
        counted("TenantAccess", "allowed"),
        counted("TenantAccess", "warned"),
        counted("TenantAccess", "refused"),
        counted("other", "allowed"),
    ];
    assert_eq!(after, before.map(|count| count + 1));
}
