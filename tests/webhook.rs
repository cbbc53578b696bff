//! The validating admission webhook on a real API server: what the reconciler would refuse is
//! refused at `kubectl apply` (and `--dry-run=server`) with the reconciler's message, its
//! warnings are shown by kubectl, an unavailable webhook under `failurePolicy: Ignore` blocks
//! nothing, and certificate rotation keeps admission working.
//!
//! Each test with a ValidatingWebhookConfiguration runs its own API server: a configuration is
//! cluster-wide and must not judge other tests' objects. The API server reaches the in-process webhook at
//! `https://127.0.0.1:PORT/validate`, trusting the CA the operator publishes in `caBundle`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::json;
use support::{capture_logs, eventually_some};
use tenant_access::api::TenantAccessSpec;
use tenant_access::core::reconcile::admit;
use tenant_access::runtime::webhook::certs::{ANNOTATION_CERT_NOT_AFTER, Validity};
use tenant_access::runtime::webhook::rotation::Managed;
use tenant_access::runtime::webhook::{CertificateSource, PATH, WebhookConfig, serve_on};
use tenant_access_testkit::{KubectlOutput, TestCluster, TestNamespace};
use tokio::sync::oneshot;

const CONFIGURATION: &str = "tenant-access-test-webhook";
const SECRET: &str = "tenant-access-webhook-tls";

/// A private API server with the CRDs, a tenant namespace and the operator's namespace.
struct Setup {
    cluster: TestCluster,
    tenant: TestNamespace,
    system: TestNamespace,
}

impl Setup {
    async fn new() -> Self {
        capture_logs();
        let cluster = TestCluster::start_local().await.unwrap();
        cluster.apply_crds().await.unwrap();
        let tenant = cluster.namespace("tenant").await.unwrap();
        let system = cluster.namespace("system").await.unwrap();
        Self { cluster, tenant, system }
    }

    /// The webhook configuration for TenantAccess and both workspace kinds, at `port`.
    async fn configure(&self, port: u16, failure_policy: &str) {
        let configuration = json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": CONFIGURATION},
            "webhooks": [{
                "name": "validate.tenantaccess.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "timeoutSeconds": 5,
                "failurePolicy": failure_policy,
                "clientConfig": {"url": format!("https://127.0.0.1:{port}{PATH}")},
                "namespaceSelector": {"matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [self.system.name()]}
                ]},
                "rules": [{
                    "apiGroups": ["tenantaccess.dev"], "apiVersions": ["v1alpha1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["tenantaccesses", "tinybirdworkspaces", "clustertinybirdworkspaces"],
                }],
            }],
        });
        let applied = self.cluster.apply_yaml(&configuration.to_string(), None).await.unwrap();
        assert!(applied.success(), "{}", applied.stderr);
    }

    fn config(&self, validity: Validity) -> WebhookConfig {
        WebhookConfig {
            address: "127.0.0.1:0".parse().unwrap(),
            certificate: CertificateSource::Managed(Managed {
                namespace: self.system.name().to_owned(),
                secret_name: SECRET.to_owned(),
                configuration_name: Some(CONFIGURATION.to_owned()),
                hosts: vec!["127.0.0.1".to_owned()],
                validity,
            }),
            namespaces: None,
            cluster_wide: true,
            client_ca: None,
        }
    }

    /// `kubectl apply [--dry-run=server]` of `yaml` in the tenant namespace.
    async fn apply(&self, yaml: &str, dry_run: bool) -> KubectlOutput {
        let mut args = vec!["apply", "-n", self.tenant.name(), "-f", "-"];
        if dry_run {
            args.push("--dry-run=server");
        }
        self.cluster.kubectl_with_stdin(args, yaml).await.unwrap()
    }

    /// Waits until `yaml` is refused by the webhook (not by a TLS or connection failure), at
    /// `--dry-run=server`: the webhook serves and the API server trusts its certificate.
    async fn until_refused(&self, yaml: &str) -> String {
        eventually_some("the webhook to refuse", || async {
            let out = self.apply(yaml, true).await;
            (!out.success() && out.stderr.contains("denied the request")).then_some(out.stderr)
        })
        .await
    }
}

/// The webhook of one replica, running in this process until dropped.
struct Webhook {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Webhook {
    async fn start(setup: &Setup, config: WebhookConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = setup.cluster.client().await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = serve_on(listener, client, config, async {
                let _ = stopped.await;
            });
            served.await.unwrap();
        });
        Self { port, stop: Some(stop), task }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(support::TIMEOUT, &mut self.task).await;
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn tenant_access(name: &str, spec: &serde_json::Value) -> String {
    json!({"apiVersion": "tenantaccess.dev/v1alpha1", "kind": "TenantAccess", "metadata": {"name": name}, "spec": spec})
        .to_string()
}

fn analytics() -> String {
    json!({"apiVersion": "tenantaccess.dev/v1alpha1", "kind": "TinybirdWorkspace", "metadata": {"name": "analytics"},
           "spec": {"adminTokenSecretRef": {"name": "tinybird-admin", "key": "token"}}})
    .to_string()
}

/// A spec with a blank fixedParams value and a renewBefore longer than the lifetime (the CRD
/// schema refuses an empty string; a blank one is for the reconciler to refuse).
fn invalid_spec() -> serde_json::Value {
    json!({"workspaceRef": {"name": "analytics"}, "lifetime": "1h", "renewBefore": "2h",
           "scopes": [{"resource": "top_pages", "fixedParams": {"org": " "}}], "secret": {}})
}

/// What the reconciler says of `spec`: its InvalidSpec message.
fn reconciler_refusal(namespace: &str, name: &str, spec: &serde_json::Value) -> String {
    let spec: TenantAccessSpec = serde_json::from_value(spec.clone()).unwrap();
    admit::validate(namespace, name, &spec).unwrap_err().message
}

async fn absent(setup: &Setup, name: &str) -> bool {
    let api: Api<tenant_access::api::TenantAccess> =
        Api::namespaced(setup.cluster.client().await.unwrap(), setup.tenant.name());
    api.get_opt(name).await.unwrap().is_none()
}

#[tokio::test]
async fn each_refusal_class_is_refused_at_apply_and_at_dry_run_with_the_reconcilers_message() {
    let setup = Setup::new().await;
    let webhook = Webhook::start(&setup, setup.config(Validity::default())).await;
    setup.configure(webhook.port, "Fail").await;
    let tenant = setup.tenant.name().to_owned();

    // Invalid field values: the reconciler's InvalidSpec message, naming each field.
    let invalid = tenant_access("invalid", &invalid_spec());
    let expected = reconciler_refusal(&tenant, "invalid", &invalid_spec());
    assert!(expected.contains("spec.scopes[0].fixedParams.org") && expected.contains("spec.renewBefore"));
    assert!(setup.until_refused(&invalid).await.contains(&expected));
    let applied = setup.apply(&invalid, false).await;
    assert!(!applied.success() && applied.stderr.contains(&expected), "{}", applied.stderr);
    assert!(absent(&setup, "invalid").await);

    // A workspace that does not exist yet is no reason to refuse (GitOps applies in any
    // order): allowed, with a warning kubectl shows.
    let good = json!({"workspaceRef": {"name": "analytics"}, "scopes": [{"resource": "top_pages", "fixedParams": {"org": "acme"}}], "secret": {}});
    let early = setup.apply(&tenant_access("early", &good), false).await;
    assert!(early.success(), "{}", early.stderr);
    assert!(
        early.stderr.contains("Warning: TinybirdWorkspace analytics does not exist (yet)"),
        "{}",
        early.stderr
    );

    // A scope the workspace policy forbids (DATASOURCES:READ is not allowed by default).
    let applied = setup.apply(&analytics(), false).await;
    assert!(applied.success(), "{}", applied.stderr);
    let forbidden = json!({"workspaceRef": {"name": "analytics"}, "scopes": [{"type": "DATASOURCES:READ", "resource": "events"}], "secret": {}});
    let forbidden = tenant_access("forbidden", &forbidden);
    for dry_run in [true, false] {
        let out = setup.apply(&forbidden, dry_run).await;
        assert!(!out.success(), "dry run {dry_run}: applied");
        assert!(
            out.stderr.contains("refused by the workspace policy: spec.scopes[0].type: DATASOURCES:READ is not allowed by workspace analytics"),
            "{}",
            out.stderr
        );
    }
    assert!(absent(&setup, "forbidden").await);

    // A namespace the ClusterTinybirdWorkspace does not admit.
    let shared = json!({"apiVersion": "tenantaccess.dev/v1alpha1", "kind": "ClusterTinybirdWorkspace", "metadata": {"name": "shared"},
        "spec": {"adminTokenSecretRef": {"name": "tinybird-admin"}, "policy": {"allowedNamespaces": {"matchLabels": {"tenants": "enabled"}}}}});
    let applied = setup.apply(&shared.to_string(), false).await;
    assert!(applied.success(), "{}", applied.stderr);
    let outsider = json!({"workspaceRef": {"kind": "ClusterTinybirdWorkspace", "name": "shared"},
        "scopes": [{"resource": "top_pages"}], "tokenName": format!("{tenant}_outsider"), "secret": {}});
    let outsider = tenant_access("outsider", &outsider);
    let message = format!("ClusterTinybirdWorkspace shared does not admit namespace {tenant}");
    for dry_run in [true, false] {
        let out = setup.apply(&outsider, dry_run).await;
        assert!(!out.success() && out.stderr.contains(&message), "dry run {dry_run}: {}", out.stderr);
    }

    // Warnings the reconciler reports are shown by kubectl, and do not refuse.
    let shortcode = json!({"workspaceRef": {"name": "analytics"},
        "scopes": [{"resource": "top_pages", "fixedParams": {"org": "{{org.id}}"}}], "clerkTemplate": {}});
    let warned = setup.apply(&tenant_access("shortcode", &shortcode), false).await;
    assert!(warned.success(), "{}", warned.stderr);
    assert!(
        warned
            .stderr
            .contains("Warning: spec.clerkTemplate: no limits.rps, so every signed-in user may query"),
        "{}",
        warned.stderr
    );

    // On a workspace that pins org, a Clerk fallback that another tenant's org could equal, and
    // a shortcode the end user writes, are refused at apply time.
    let pinned = json!({"apiVersion": "tenantaccess.dev/v1alpha1", "kind": "TinybirdWorkspace", "metadata": {"name": "pinned"},
        "spec": {"adminTokenSecretRef": {"name": "tinybird-admin"}, "policy": {"maxRps": 10, "requiredParams":
            {"org": {"namespaceName": true, "clerkShortcode": "{{org.slug}}"}}}}});
    let applied = setup.apply(&pinned.to_string(), false).await;
    assert!(applied.success(), "{}", applied.stderr);
    let fallback = json!({"workspaceRef": {"name": "pinned"}, "tokenName": format!("{tenant}_fallback"),
        "scopes": [{"resource": "top_pages", "fixedParams": {"org": "{{org.slug || 'globex'}}"}}], "clerkTemplate": {}});
    let out = setup.apply(&tenant_access("fallback", &fallback), false).await;
    assert!(
        !out.success() && out.stderr.contains("the fallback \"globex\" could be a tenant's org"),
        "{}",
        out.stderr
    );
    let unsafe_code = json!({"workspaceRef": {"name": "pinned"}, "tokenName": format!("{tenant}_unsafe"),
        "scopes": [{"resource": "top_pages", "fixedParams": {"user": "{{user.unsafe_metadata.id}}"}}], "clerkTemplate": {}});
    let out = setup.apply(&tenant_access("unsafe", &unsafe_code), false).await;
    assert!(!out.success() && out.stderr.contains("written by the signed-in user"), "{}", out.stderr);
    assert!(absent(&setup, "fallback").await && absent(&setup, "unsafe").await);

    // A workspace whose policy no TenantAccess can meet is refused too.
    let broken = json!({"apiVersion": "tenantaccess.dev/v1alpha1", "kind": "TinybirdWorkspace", "metadata": {"name": "broken"},
        "spec": {"adminTokenSecretRef": {"name": "tinybird-admin"}, "policy": {"requiredParams": {"org": {}}}}});
    let out = setup.apply(&broken.to_string(), false).await;
    assert!(
        !out.success()
            && out.stderr.contains(
                "spec.policy.requiredParams.org: set exactly one of namespaceLabel and namespaceName"
            ),
        "{}",
        out.stderr
    );

    // Deleting an object that no longer passes is never refused.
    let deleted = setup.cluster.kubectl(["delete", "tenantaccess", "early", "-n", &tenant]).await.unwrap();
    assert!(deleted.success(), "{}", deleted.stderr);
    webhook.stop().await;
}

#[tokio::test]
async fn with_the_webhook_down_and_failure_policy_ignore_nothing_is_blocked() {
    let setup = Setup::new().await;
    // Nothing listens at this port.
    let port = support::free_port();
    setup.configure(port, "Ignore").await;
    let applied = setup.apply(&tenant_access("invalid", &invalid_spec()), false).await;
    assert!(applied.success(), "{}", applied.stderr);
    assert!(!absent(&setup, "invalid").await);
}

#[tokio::test]
async fn certificate_rotation_keeps_admission_working() {
    let setup = Setup::new().await;
    // Serving certificates of 45 s: renewed 30 s after they are made.
    let validity = Validity { ca: Duration::from_secs(86_400), serving: Duration::from_secs(45) };
    let webhook = Webhook::start(&setup, setup.config(validity)).await;
    setup.configure(webhook.port, "Fail").await;
    let invalid = tenant_access("invalid", &invalid_spec());
    let expected = reconciler_refusal(setup.tenant.name(), "invalid", &invalid_spec());
    assert!(setup.until_refused(&invalid).await.contains(&expected));

    let client = setup.cluster.client().await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), setup.system.name());
    let expiry = |secret: &Secret| {
        secret.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_CERT_NOT_AFTER)).cloned()
    };
    let first = secrets.get(SECRET).await.unwrap();
    // The serving certificate is renewed before it expires, and served without a restart.
    let first_expiry = expiry(&first);
    eventually_some("the serving certificate to be renewed", || async {
        let now = secrets.get(SECRET).await.ok()?;
        (expiry(&now) != first_expiry).then_some(())
    })
    .await;
    assert!(setup.until_refused(&invalid).await.contains(&expected));

    // A new CA (here: the Secret deleted): the caBundle follows and admission keeps working.
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let bundle = |c: &ValidatingWebhookConfiguration| {
        c.webhooks.as_ref().and_then(|w| w.first()).and_then(|w| w.client_config.ca_bundle.clone())
    };
    let first_bundle = bundle(&configurations.get(CONFIGURATION).await.unwrap());
    assert!(first_bundle.is_some(), "the operator publishes its CA");
    secrets.delete(SECRET, &Default::default()).await.unwrap();
    eventually_some("a new CA in the caBundle", || async {
        let now = configurations.get(CONFIGURATION).await.ok()?;
        (bundle(&now).is_some() && bundle(&now) != first_bundle).then_some(())
    })
    .await;
    assert!(setup.until_refused(&invalid).await.contains(&expected));
    webhook.stop().await;
}

/// `tenant-access run` as a separate process, one replica of two under leader election, with
/// the webhook on `webhook_port` and its admin server on `admin_port`.
fn replica(
    cluster: &TestCluster,
    tenant: &str,
    system: &str,
    identity: &str,
    ports: (u16, u16),
) -> tokio::process::Child {
    let (webhook_port, admin_port) = ports;
    tokio::process::Command::new(env!("CARGO_BIN_EXE_tenant-access"))
        .args(["run", "--kubeconfig"])
        .arg(cluster.admin_kubeconfig())
        .args(["--namespaces", tenant, "--cluster-resource-namespace", system])
        .args(["--admin-address", &format!("127.0.0.1:{admin_port}")])
        // A lease long enough that a loaded machine does not lose it: a replica that loses its
        // lease exits, and this test wants one leader and one standby, not a failover.
        .args(["--leader-election", "--leader-election-lease-duration-seconds", "30"])
        .args(["--webhook-address", &format!("127.0.0.1:{webhook_port}"), "--webhook-hosts", "127.0.0.1"])
        .env("POD_NAME", identity)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn every_replica_serves_the_webhook_the_standby_too_with_one_certificate() {
    // No configuration: the reviews are sent here directly, so the shared API server will do.
    let cluster = TestCluster::shared().await.unwrap();
    cluster.apply_crds().await.unwrap();
    let tenant = cluster.namespace("replicas").await.unwrap();
    let system = cluster.namespace("replicas-system").await.unwrap();
    let ports = [(support::free_port(), support::free_port()), (support::free_port(), support::free_port())];
    // Both start at once: both may try to create the certificate Secret; one wins, both serve it.
    let _a = replica(&cluster, tenant.name(), system.name(), "replica-a", ports[0]);
    let _b = replica(&cluster, tenant.name(), system.name(), "replica-b", ports[1]);

    let secrets: Api<Secret> = Api::namespaced(cluster.client().await.unwrap(), system.name());
    let ca = eventually_some("the webhook certificate Secret", || async {
        let secret = secrets.get_opt("tenant-access-operator-webhook-tls").await.ok()??;
        let ca = secret.data?.get("ca.crt")?.0.clone();
        Some(reqwest::Certificate::from_pem(&ca).unwrap())
    })
    .await;
    let client = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    let object: serde_json::Value = serde_json::from_str(&tenant_access("invalid", &invalid_spec())).unwrap();
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u1", "kind": {"group": "tenantaccess.dev", "version": "v1alpha1", "kind": "TenantAccess"},
                    "operation": "CREATE", "namespace": tenant.name(), "name": "invalid", "object": object},
    });
    let expected = reconciler_refusal(tenant.name(), "invalid", &invalid_spec());
    for (webhook_port, admin_port) in ports {
        let answer = eventually_some("each replica to answer", || async {
            let response = client
                .post(format!("https://127.0.0.1:{webhook_port}{PATH}"))
                .json(&review)
                .send()
                .await
                .ok()?;
            response.json::<serde_json::Value>().await.ok()
        })
        .await;
        assert_eq!(answer["response"]["allowed"], false, "{answer}");
        assert_eq!(answer["response"]["status"]["message"], expected);
        assert!(support::http_get(admin_port, "/readyz").await.is_some());
    }
    // One of them leads; the other, a standby, answered all the same.
    let standby = eventually_some("a standby", || async {
        for (index, (_, admin_port)) in ports.iter().enumerate() {
            if support::http_get(*admin_port, "/readyz")
                .await
                .is_some_and(|(_, body)| body.contains("standby"))
            {
                return Some(index);
            }
        }
        None
    })
    .await;
    assert!(standby < 2);
}
