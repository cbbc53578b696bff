//! The testkit against a real API server: a private local cluster, or `TEST_KUBECONFIG`'s.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tenant_access_testkit::TestCluster;

#[tokio::test]
async fn admin_client_reaches_the_server() {
    let cluster = TestCluster::shared().await.expect("cluster");
    let client = cluster.client().await.expect("admin client");
    let version = client.apiserver_version().await.expect("version");
    assert!(!version.git_version.is_empty());
    if cluster.is_local() {
        assert_eq!(version.git_version, "v1.20.2");
    }
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces.get("default").await.expect("default namespace");
}

#[tokio::test]
async fn tenant_user_is_authenticated_but_not_authorized() {
    let cluster = TestCluster::shared().await.expect("cluster");
    let ns = cluster.namespace("testkit-rbac").await.expect("namespace");

    // kube client: 403 Forbidden (authenticated, no RBAC), not 401.
    let tenant = cluster.tenant_client().await.expect("tenant client");
    let cms: Api<ConfigMap> = Api::namespaced(tenant, ns.name());
    match cms.list(&Default::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403 for the tenant user, got {other:?}"),
    }

    // kubectl: same answer, as a non-zero exit, not a panic.
    let out = cluster
        .tenant_kubectl(["auth", "can-i", "create", "configmaps", "-n", ns.name()])
        .await
        .expect("kubectl runs");
    assert!(!out.success());
    assert_eq!(out.stdout.trim(), "no");

    // Grant it through a Role and RoleBinding on the tenant's subject: now allowed.
    let subject = cluster.tenant_subject().await.expect("subject");
    let grant = format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: cm-writer
rules:
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: cm-writer
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: cm-writer
subjects:
- kind: {kind}
  name: {name}
{namespace}"#,
        kind = subject.kind,
        name = subject.name,
        namespace = subject.namespace.as_ref().map(|n| format!("  namespace: {n}\n")).unwrap_or_default(),
    );
    cluster.apply_yaml(&grant, Some(ns.name())).await.expect("apply role");
    let cm = ConfigMap {
        metadata: ObjectMeta { name: Some("hello".into()), ..ObjectMeta::default() },
        ..ConfigMap::default()
    };
    // RBAC changes are visible immediately on the apiserver that stored them, but be lenient
    // for external clusters with several apiservers: retry until allowed.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match cms.create(&PostParams::default(), &cm).await {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 403 && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => panic!("tenant create after grant: {e}"),
        }
    }
}

#[tokio::test]
async fn kubectl_reports_failures_without_panicking() {
    let cluster = TestCluster::shared().await.expect("cluster");
    let out =
        cluster.kubectl(["get", "configmap", "does-not-exist", "-n", "default"]).await.expect("kubectl runs");
    assert!(!out.success());
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("NotFound"), "{}", out.stderr);
    assert!(out.ok().is_err());
}

#[tokio::test]
async fn namespaces_are_unique_and_deleted_on_drop() {
    let cluster = TestCluster::shared().await.expect("cluster");
    let a = cluster.namespace("testkit-ns").await.expect("a");
    let b = cluster.namespace("testkit-ns").await.expect("b");
    assert_ne!(a.name(), b.name());
    let name = a.name().to_owned();
    drop(a);
    b.delete().await.expect("delete b");

    let api: Api<Namespace> = Api::all(cluster.client().await.expect("client"));
    // Deletion was requested: the namespace is gone or Terminating (no controller-manager on
    // the local cluster to finish it).
    let ns = api.get_opt(&name).await.expect("get");
    if let Some(ns) = ns {
        assert!(ns.metadata.deletion_timestamp.is_some());
    }
}

#[tokio::test]
async fn apply_yaml_applies_multi_document_manifests() {
    let cluster = TestCluster::shared().await.expect("cluster");
    let ns = cluster.namespace("testkit-apply").await.expect("namespace");
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\ndata:\n  k: v\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: two\n";
    let out = cluster.apply_yaml(yaml, Some(ns.name())).await.expect("apply");
    assert!(out.stdout.contains("configmap/one"), "{}", out.stdout);
    assert!(out.stdout.contains("configmap/two"), "{}", out.stdout);
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client().await.expect("client"), ns.name());
    assert_eq!(cms.get("one").await.expect("one").data.unwrap()["k"], "v".to_owned());
}

fn process_gone(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Gone, or a zombie waiting for its (foreign) parent to reap it.
    stat.is_empty() || stat.contains(") Z")
}

fn apiserver_pid(dir: &std::path::Path) -> u32 {
    std::fs::read_to_string(dir.join("kube-apiserver.pid")).expect("pid file").trim().parse().expect("pid")
}

/// A private cluster (never the shared or external one) goes away with its last handle.
/// Private clusters can always be started: `hack/cluster.sh` installs the local binaries
/// (`hack/install-deps.sh`) when they are missing, and a failure to do so fails the test.
#[tokio::test]
async fn private_cluster_stops_on_drop() {
    let cluster = TestCluster::start_local().await.expect("cluster");
    let dir = cluster.local_dir().expect("local").to_path_buf();
    let pid = apiserver_pid(&dir);
    assert!(!process_gone(pid));
    let clone = cluster.clone();
    drop(cluster);
    assert!(dir.exists(), "a clone keeps the cluster alive");
    drop(clone);
    assert!(!dir.exists(), "cluster dir removed");
    // `down` waited for the process to exit.
    assert!(process_gone(pid), "apiserver {pid} still running");
}

/// A test that panics still tears its private cluster down (drop during unwinding).
#[tokio::test]
async fn private_cluster_stops_when_the_test_panics() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let cluster = TestCluster::start_local().await.expect("cluster");
        let dir = cluster.local_dir().expect("local").to_path_buf();
        tx.send((dir.clone(), apiserver_pid(&dir))).expect("send");
        panic!("deliberate test failure");
    });
    let joined = task.await;
    assert!(joined.as_ref().is_err_and(tokio::task::JoinError::is_panic), "{joined:?}");
    let (dir, pid) = rx.await.expect("cluster was started");
    assert!(!dir.exists(), "cluster dir removed");
    assert!(process_gone(pid), "apiserver {pid} still running");
}
