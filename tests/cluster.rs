//! The CRDs and examples against a real API server (the local kube-apiserver 1.20 started by the
//! testkit or by `hack/with-cluster.sh`, or any cluster given through `TEST_KUBECONFIG`).
//!
//! What a 1.20 server can refuse is checked here: wrong types, missing required fields, enum
//! violations, patterns and lengths. The server prunes unknown fields (strict server-side field
//! validation is newer); kubectl's own validation refuses them, at any depth, because no field's
//! schema is dropped from the OpenAPI it reads. What a schema cannot say, the operator validates.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};
use tenant_access_testkit::{TestCluster, TestNamespace, crds_dir, examples_dir};

const GROUP: &str = "tenantaccess.dev";
const VERSION: &str = "v1alpha1";
const TIMEOUT: Duration = Duration::from_secs(60);

async fn cluster_with_crds() -> TestCluster {
    let cluster = TestCluster::shared().await.expect("test cluster");
    cluster.apply_crds().await.expect("apply CRDs");
    cluster
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json"))
        .collect();
    files.sort();
    files
}

/// The non-empty documents of a (multi-document) YAML file.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read manifest");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn api_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), plural)
}

fn tenant_access_api(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, ns, &api_resource("TenantAccess", "tenantaccesses"))
}

/// Retry `f` until it returns `Some`, at most `timeout` (a wait on a condition, not a sleep).
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn every_crd_applies_and_becomes_established() {
    let cluster = cluster_with_crds().await;
    let files = yaml_files(&crds_dir());
    assert!(!files.is_empty(), "no CRD manifests in crds/");
    for file in &files {
        for doc in documents(file) {
            assert_eq!(
                doc["kind"],
                "CustomResourceDefinition",
                "{}: only CRDs belong in crds/",
                file.display()
            );
        }
    }

    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client().await.expect("client"));
    let expected = [
        ("tenantaccesses", "TenantAccess", "Namespaced", "ta"),
        ("tinybirdworkspaces", "TinybirdWorkspace", "Namespaced", "tbws"),
        ("clustertinybirdworkspaces", "ClusterTinybirdWorkspace", "Cluster", "ctbws"),
    ];
    for (plural, kind, scope, short) in expected {
        let name = format!("{plural}.{GROUP}");
        let crd = crds.get(&name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Established"))
            .map(|c| c.status.clone());
        assert_eq!(established.as_deref(), Some("True"), "{name} established");
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(crd.spec.scope, scope);
        assert!(
            crd.spec.names.short_names.as_ref().is_some_and(|s| s.iter().any(|n| n == short)),
            "{name} has short name {short}"
        );
        assert!(
            crd.spec.versions.iter().any(|v| v.name == VERSION && v.served && v.storage),
            "{name} serves and stores {VERSION}"
        );
        // Short names resolve through discovery, as a user types them.
        let out = cluster.kubectl(["get", short, "-A", "-o", "name"]).await.expect("kubectl");
        assert!(out.success(), "kubectl get {short}: {}", out.stderr);
    }
}

#[tokio::test]
async fn examples_apply_with_kubectl() {
    let cluster = cluster_with_crds().await;
    let files = yaml_files(&examples_dir());
    assert!(!files.is_empty(), "no manifests in examples/");
    let ns = cluster.namespace("examples").await.expect("namespace");

    for file in &files {
        let docs = documents(file);
        if docs.iter().any(|d| d.get("kind").is_none()) {
            // Not a Kubernetes manifest (e.g. Helm values): nothing to apply.
            continue;
        }
        // Objects that name their namespace go there (created if missing); the rest go into the
        // test namespace.
        let mut explicit: Vec<String> =
            docs.iter().filter_map(|d| d["metadata"]["namespace"].as_str().map(str::to_owned)).collect();
        explicit.sort();
        explicit.dedup();
        for n in &explicit {
            let out = cluster.kubectl(["create", "namespace", n]).await.expect("kubectl");
            assert!(
                out.success() || out.stderr.contains("AlreadyExists"),
                "create namespace {n}: {}",
                out.stderr
            );
        }
        let namespace = explicit.is_empty().then(|| ns.name());
        let out =
            cluster.apply_file(file, namespace).await.unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(!out.stdout.trim().is_empty(), "{}: kubectl applied nothing", file.display());
    }
}

#[tokio::test]
async fn kubectl_explain_shows_field_documentation() {
    let cluster = cluster_with_crds().await;
    // The published OpenAPI is rebuilt asynchronously after a CRD changes: wait for it.
    let out = eventually("kubectl explain tenantaccess.spec.scopes", TIMEOUT, || {
        let cluster = cluster.clone();
        async move {
            let out = cluster.kubectl(["explain", "tenantaccess.spec.scopes"]).await.expect("kubectl");
            (out.success() && out.stdout.contains("FIELDS")).then_some(out)
        }
    })
    .await;
    let text = out.stdout;
    assert!(text.contains("DESCRIPTION"), "{text}");
    // The description of `scopes` itself is there, not an empty placeholder.
    let description = text
        .split("DESCRIPTION:")
        .nth(1)
        .and_then(|s| s.split("FIELDS:").next())
        .unwrap_or_default()
        .trim()
        .to_owned();
    assert!(
        description.len() > 10 && !description.contains("<empty>"),
        "scopes has no documentation: {text}"
    );
    assert!(text.contains("-required-"), "required fields are marked: {text}");
    for field in ["resource", "type", "fixedParams"] {
        assert!(text.contains(field), "field {field} missing: {text}");
    }
    // Nested fields are documented too.
    let out = cluster.kubectl(["explain", "tenantaccess.spec.workspaceRef"]).await.expect("kubectl");
    assert!(out.success(), "{}", out.stderr);
    assert!(out.stdout.contains("name"), "{}", out.stdout);
}

/// A TenantAccess the schema accepts; the invalid variants below change one thing each.
fn valid_tenant_access(name: &str) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "TenantAccess",
        "metadata": {"name": name},
        "spec": {
            "workspaceRef": {"name": "analytics"},
            "scopes": [{"type": "PIPES:READ", "resource": "events_by_org", "fixedParams": {"org_id": "acme"}}],
            "lifetime": "1h",
            "secret": {"name": format!("{name}-token")},
        }
    })
}

async fn create(api: &Api<DynamicObject>, obj: &Value) -> Result<DynamicObject, kube::Error> {
    let obj: DynamicObject = serde_json::from_value(obj.clone()).expect("dynamic object");
    api.create(&PostParams::default(), &obj).await
}

fn expect_invalid(result: Result<DynamicObject, kube::Error>, case: &str, field: &str) {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{case}: {status:?}");
            assert!(
                status.message.contains(field),
                "{case}: message does not name {field}: {}",
                status.message
            );
        }
        Ok(obj) => panic!("{case}: the server accepted it: {obj:?}"),
        Err(e) => panic!("{case}: unexpected error {e}"),
    }
}

#[tokio::test]
async fn schema_invalid_tenant_access_is_refused_by_the_server() {
    let cluster = cluster_with_crds().await;
    let ns: TestNamespace = cluster.namespace("schema").await.expect("namespace");
    let api = tenant_access_api(cluster.client().await.expect("client"), ns.name());

    // Baseline: accepted, so each refusal below is about the one change.
    create(&api, &valid_tenant_access("valid")).await.expect("the valid TenantAccess is accepted");

    let mut wrong_type = valid_tenant_access("wrong-type");
    wrong_type["spec"]["scopes"] = json!("events_by_org");
    expect_invalid(create(&api, &wrong_type).await, "scopes as a string", "spec.scopes");

    let mut wrong_item_type = valid_tenant_access("wrong-item-type");
    wrong_item_type["spec"]["scopes"][0]["resource"] = json!(["a", "b"]);
    expect_invalid(create(&api, &wrong_item_type).await, "scope resource as a list", "spec.scopes");

    let mut missing_ref_name = valid_tenant_access("missing-ref-name");
    missing_ref_name["spec"]["workspaceRef"] = json!({});
    expect_invalid(
        create(&api, &missing_ref_name).await,
        "workspaceRef without name",
        "spec.workspaceRef.name",
    );

    let mut missing_ref = valid_tenant_access("missing-ref");
    missing_ref["spec"].as_object_mut().expect("spec").remove("workspaceRef");
    expect_invalid(create(&api, &missing_ref).await, "no workspaceRef", "spec.workspaceRef");

    let mut bad_kind = valid_tenant_access("bad-kind");
    bad_kind["spec"]["workspaceRef"]["kind"] = json!("Workspace");
    expect_invalid(
        create(&api, &bad_kind).await,
        "workspaceRef.kind outside the enum",
        "spec.workspaceRef.kind",
    );

    let mut bad_scope_type = valid_tenant_access("bad-scope-type");
    bad_scope_type["spec"]["scopes"][0]["type"] = json!("PIPES:WRITE");
    expect_invalid(create(&api, &bad_scope_type).await, "scope type outside the enum", "spec.scopes");

    let mut bad_policy = valid_tenant_access("bad-policy");
    bad_policy["spec"]["clerkTemplate"] = json!({"deletionPolicy": "Orphan"});
    expect_invalid(
        create(&api, &bad_policy).await,
        "deletionPolicy outside the enum",
        "spec.clerkTemplate.deletionPolicy",
    );

    let mut bad_target = valid_tenant_access("bad-target");
    bad_target["spec"]["secret"]["rolloutRestartTargets"] = json!([{"kind": "Pod", "name": "web"}]);
    expect_invalid(
        create(&api, &bad_target).await,
        "rollout target kind outside the enum",
        "rolloutRestartTargets",
    );

    let mut no_scopes = valid_tenant_access("no-scopes");
    no_scopes["spec"]["scopes"] = json!([]);
    expect_invalid(create(&api, &no_scopes).await, "empty scopes", "spec.scopes");

    let mut missing_scopes = valid_tenant_access("missing-scopes");
    missing_scopes["spec"].as_object_mut().expect("spec").remove("scopes");
    expect_invalid(create(&api, &missing_scopes).await, "no scopes", "spec.scopes");

    let mut no_resource = valid_tenant_access("no-resource");
    no_resource["spec"]["scopes"][0].as_object_mut().expect("scope").remove("resource");
    expect_invalid(create(&api, &no_resource).await, "scope without resource", "resource");

    let mut empty_resource = valid_tenant_access("empty-resource");
    empty_resource["spec"]["scopes"][0]["resource"] = json!("");
    expect_invalid(create(&api, &empty_resource).await, "empty resource", "resource");

    let mut bad_lifetime = valid_tenant_access("bad-lifetime");
    bad_lifetime["spec"]["lifetime"] = json!("one hour");
    expect_invalid(create(&api, &bad_lifetime).await, "lifetime not a duration", "spec.lifetime");

    let mut bad_rps = valid_tenant_access("bad-rps");
    bad_rps["spec"]["limits"] = json!({"rps": 0});
    expect_invalid(create(&api, &bad_rps).await, "rps below the minimum", "spec.limits.rps");

    let mut rps_string = valid_tenant_access("rps-string");
    rps_string["spec"]["limits"] = json!({"rps": "ten"});
    expect_invalid(create(&api, &rps_string).await, "rps as a string", "spec.limits.rps");

    // Nothing invalid was stored.
    let names: Vec<String> = api
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    assert_eq!(names, vec!["valid".to_owned()]);

    // kubectl users see the refusal too (server-side: client validation off).
    let mut yaml_case = valid_tenant_access("kubectl-wrong-type");
    yaml_case["spec"]["scopes"] = json!(42);
    let out = cluster
        .kubectl_with_stdin(["apply", "--validate=false", "-n", ns.name(), "-f", "-"], &yaml_case.to_string())
        .await
        .expect("kubectl");
    assert!(!out.success(), "kubectl apply accepted: {}", out.stdout);
    assert!(out.stderr.contains("spec.scopes"), "{}", out.stderr);
}

#[tokio::test]
async fn schema_invalid_workspaces_are_refused_by_the_server() {
    let cluster = cluster_with_crds().await;
    let ns = cluster.namespace("schema-ws").await.expect("namespace");
    let client = cluster.client().await.expect("client");
    let workspaces: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns.name(),
        &api_resource("TinybirdWorkspace", "tinybirdworkspaces"),
    );
    let valid = |name: &str| {
        json!({
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": "TinybirdWorkspace",
            "metadata": {"name": name},
            "spec": {"adminTokenSecretRef": {"name": "tinybird-admin", "key": "token"}},
        })
    };
    create(&workspaces, &valid("valid")).await.expect("the valid TinybirdWorkspace is accepted");

    let mut no_ref = valid("no-ref");
    no_ref["spec"] = json!({});
    expect_invalid(create(&workspaces, &no_ref).await, "no adminTokenSecretRef", "spec.adminTokenSecretRef");

    let mut no_name = valid("no-name");
    no_name["spec"]["adminTokenSecretRef"] = json!({"key": "token"});
    expect_invalid(
        create(&workspaces, &no_name).await,
        "secret ref without name",
        "spec.adminTokenSecretRef.name",
    );

    let mut bad_url = valid("bad-url");
    bad_url["spec"]["apiUrl"] = json!("api.tinybird.co");
    expect_invalid(create(&workspaces, &bad_url).await, "apiUrl without scheme", "spec.apiUrl");

    let mut no_spec = valid("no-spec");
    no_spec.as_object_mut().expect("object").remove("spec");
    expect_invalid(create(&workspaces, &no_spec).await, "no spec", "spec");

    // The cluster-scoped kind has the same schema for its spec.
    let cluster_workspaces: Api<DynamicObject> =
        Api::all_with(client, &api_resource("ClusterTinybirdWorkspace", "clustertinybirdworkspaces"));
    let mut cluster_bad = valid(&tenant_access_testkit::unique_name("ctbws-invalid"));
    cluster_bad["kind"] = json!("ClusterTinybirdWorkspace");
    cluster_bad["spec"]["adminTokenSecretRef"] = json!({"key": 7});
    expect_invalid(
        create(&cluster_workspaces, &cluster_bad).await,
        "cluster workspace secret ref with a numeric key and no name",
        "spec.adminTokenSecretRef",
    );
}

#[tokio::test]
async fn unknown_fields_are_pruned_on_this_server() {
    let cluster = cluster_with_crds().await;
    let ns = cluster.namespace("prune").await.expect("namespace");
    let api = tenant_access_api(cluster.client().await.expect("client"), ns.name());
    let mut obj = valid_tenant_access("pruned");
    obj["spec"]["notAField"] = json!("dropped");
    let created = create(&api, &obj).await.expect("accepted (pruned)");
    assert!(created.data["spec"].get("notAField").is_none());
    assert_eq!(created.data["spec"]["workspaceRef"]["name"], "analytics");
}

#[tokio::test]
async fn kubectl_explains_every_field_and_refuses_a_typo_at_any_depth() {
    let cluster = cluster_with_crds().await;
    // Every spec field, at every depth, has a type kubectl can show: none is an empty `<>`
    // (a nullable field's schema is dropped from OpenAPI v2).
    let out = eventually("kubectl explain --recursive shows healthCheck's fields", TIMEOUT, || {
        let cluster = cluster.clone();
        async move {
            let out =
                cluster.kubectl(["explain", "tenantaccess.spec", "--recursive"]).await.expect("kubectl");
            (out.success() && out.stdout.contains("sampleParams")).then_some(out)
        }
    })
    .await;
    let fields: Vec<&str> = out.stdout.lines().filter(|l| l.contains('\t')).collect();
    assert!(fields.len() > 25, "{}", out.stdout);
    let blank: Vec<&&str> = fields.iter().filter(|l| l.contains("<>")).collect();
    assert!(blank.is_empty(), "fields kubectl cannot explain: {blank:?}");
    for kind in ["tinybirdworkspace.spec", "clustertinybirdworkspace.spec"] {
        let out = cluster.kubectl(["explain", kind, "--recursive"]).await.expect("kubectl");
        assert!(out.success() && !out.stdout.contains("<>"), "{kind}: {}", out.stdout);
    }
    let out = cluster.kubectl(["explain", "tenantaccess.spec.secret"]).await.expect("kubectl");
    assert!(out.stdout.contains("rolloutRestartTargets"), "{}", out.stdout);

    // kubectl's own validation refuses a misspelt field inside `secret:` and `healthCheck:`,
    // as it does at the top of the spec.
    let ns = cluster.namespace("typos").await.expect("namespace");
    for (typo, field) in [
        ("  secret: {name: acme-token, nme: x}\n", "nme"),
        ("  secret: {name: acme-token}\n  healthCheck: {intervall: 5m}\n", "intervall"),
        ("  secret: {name: acme-token}\n  scopes: [{resource: p, resourse: q}]\n", "resourse"),
    ] {
        let manifest = format!(
            "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: typo}}\nspec:\n  workspaceRef: {{name: analytics}}\n{}{}",
            if typo.contains("scopes") { "" } else { "  scopes: [{resource: p}]\n" },
            typo
        );
        let out = cluster
            .kubectl_with_stdin(["apply", "-n", ns.name(), "-f", "-"], &manifest)
            .await
            .expect("kubectl");
        assert!(!out.success(), "kubectl accepted:\n{manifest}");
        assert!(out.stderr.contains(&format!("unknown field \"{field}\"")), "{manifest}\n{}", out.stderr);
    }
}

#[tokio::test]
async fn the_server_refuses_bad_names_and_empty_fixed_params_at_apply_time() {
    let cluster = cluster_with_crds().await;
    let ns = cluster.namespace("static").await.expect("namespace");
    let api = tenant_access_api(cluster.client().await.expect("client"), ns.name());
    let mut bad_secret = valid_tenant_access("bad-secret");
    bad_secret["spec"]["secret"]["name"] = json!("Bad_Name");
    expect_invalid(create(&api, &bad_secret).await, "a Secret name that is no DNS name", "spec.secret.name");
    let mut bad_workspace = valid_tenant_access("bad-workspace");
    bad_workspace["spec"]["workspaceRef"]["name"] = json!("Analytics");
    expect_invalid(
        create(&api, &bad_workspace).await,
        "a workspace name that is no DNS name",
        "spec.workspaceRef.name",
    );
    let mut empty_param = valid_tenant_access("empty-param");
    empty_param["spec"]["scopes"][0]["fixedParams"] = json!({"org_id": ""});
    expect_invalid(create(&api, &empty_param).await, "an empty fixed param", "fixedParams.org_id");
    let mut bad_duration = valid_tenant_access("bad-duration");
    bad_duration["spec"]["renewBefore"] = json!("twenty minutes");
    expect_invalid(create(&api, &bad_duration).await, "a duration that is none", "spec.renewBefore");
    // Numbers and booleans stay valid fixed params.
    let mut typed = valid_tenant_access("typed-params");
    typed["spec"]["scopes"][0]["fixedParams"] = json!({"org_id": "acme", "year": 2026, "public": false});
    create(&api, &typed).await.expect("numbers and booleans are fixed params");
}

#[tokio::test]
async fn kubectl_get_wide_says_why_a_tenant_access_is_not_ready() {
    let cluster = cluster_with_crds().await;
    let ns = cluster.namespace("wide").await.expect("namespace");
    let api = tenant_access_api(cluster.client().await.expect("client"), ns.name());
    create(&api, &valid_tenant_access("refused")).await.expect("created");
    // The status the operator writes for a refusal.
    let status = json!({"status": {"conditions": [{
        "type": "Ready", "status": "False", "reason": "WorkspaceNotFound",
        "message": "TinybirdWorkspace analytics does not exist", "lastTransitionTime": "2026-01-01T00:00:00Z",
    }]}});
    api.patch_status("refused", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&status))
        .await
        .expect("status written");
    let plain = cluster.kubectl(["get", "ta", "-n", ns.name()]).await.expect("kubectl");
    assert!(
        plain.success() && !plain.stdout.contains("REASON"),
        "priority 1 only with -o wide: {}",
        plain.stdout
    );
    let wide = cluster.kubectl(["get", "ta", "-n", ns.name(), "-o", "wide"]).await.expect("kubectl");
    assert!(wide.success(), "{}", wide.stderr);
    let header = wide.stdout.lines().next().unwrap_or_default();
    assert!(header.contains("REASON") && header.contains("MESSAGE"), "{}", wide.stdout);
    assert!(
        wide.stdout.contains("WorkspaceNotFound") && wide.stdout.contains("does not exist"),
        "{}",
        wide.stdout
    );
}
