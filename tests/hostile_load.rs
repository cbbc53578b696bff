//! A hostile tenant team against the operator (issue 25), with only the rights the README's
//! threat model gives a team (TenantAccess, and ordinary Secrets and ConfigMaps in its own
//! namespace, through its own RBAC user) or any pod (the webhook's port), against a real API
//! server and `tenant-access run` as a separate process. What the team must not make the
//! operator spend, and the bounds asserted (README, "What a hostile tenant cannot make the
//! operator spend"):
//!
//! - memory: peak RSS under [`BALLAST_RSS_BOUND`] (a third of the chart's memory limit) after a
//!   restart with about a hundred 1 MB labelled Secrets and a hundred 1 MB labelled ConfigMaps in
//!   the team's namespace: labelled objects are watched metadata-only; and under the chart's
//!   limit with a hundred Secrets carrying 0.8 MB of labels each (metadata as heavy as data):
//!   lists come in small pages;
//! - memory: the same with a hundred unfinished 4 MiB reviews sent to the webhook at once;
//! - the controllers' API budget: a TenantAccess of another namespace issued within
//!   [`ISSUANCE_BOUND`] during a flood of hand-made reviews on the webhook port (with a
//!   controllers' budget of [`CONTROLLER_QPS`], which this flood could exhaust before);
//! - connections: those with unfinished headers closed within the header timeout;
//! - the customer's Tinybird bill: no billed query with the admin token for a scope named
//!   `top_pages.json`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use support::{condition, eventually, eventually_some, free_port, http_get, tenant_access_yaml};
use tenant_access::api::TenantAccess;
use tenant_access::runtime::webhook::server::{HEADER_READ_TIMEOUT, MAX_CONCURRENT_REVIEWS};
use tenant_access::runtime::webhook::{MAX_REVIEW_BYTES, PATH};
use tenant_access_emulators::{TinybirdConfig, TinybirdEmulator};
use tenant_access_testkit::{TestCluster, TestNamespace};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

/// Labelled ballast objects of each kind (Secrets, ConfigMaps) the team creates.
const BALLAST_OBJECTS: usize = 100;
/// Bytes of each ballast object's data: just under the 1 MiB the API server stores.
const BALLAST_BYTES: usize = 1_000_000;
/// Labels of each label-padded ballast Secret: about 0.8 MB of metadata.
const PADDING_LABELS: usize = 10_000;
/// Peak RSS the labelled ballast may cause after a restart: 41 MiB measured with labelled
/// objects watched metadata-only; 130 MiB when they were listed with their data (in pages of 16),
/// 460 MiB in pages of 500.
const BALLAST_RSS_BOUND: u64 = 80 << 20;
/// Unfinished reviews sent at once.
const UNFINISHED_REVIEWS: usize = 100;
/// Generous bound on a new TenantAccess's issuance in another namespace during a review flood
/// (0.1 to 0.5 s measured; 6.2 s before the webhook had a budget of its own).
const ISSUANCE_BOUND: Duration = Duration::from_secs(5);
/// How long the review flood lasts.
const FLOOD: Duration = Duration::from_secs(40);
/// Concurrent senders of the flood.
const FLOODERS: usize = 64;
/// The controllers' API budget during the flood (`--kube-qps` and `--kube-burst`).
const CONTROLLER_QPS: &str = "20";
/// Generous slack on a stated timeout (a loaded 2-core machine).
const SLACK: Duration = Duration::from_secs(5);
/// The webhook's serving-certificate Secret (the flag's default).
const WEBHOOK_SECRET: &str = "tenant-access-operator-webhook-tls";

/// A private API server, a Tinybird emulator, the operator's namespace, the hostile team's
/// namespace and another team's; a TinybirdWorkspace `analytics` in both team namespaces.
struct Arena {
    cluster: TestCluster,
    admin: Client,
    tinybird: TinybirdEmulator,
    system: TestNamespace,
    team: TestNamespace,
    victim: TestNamespace,
}

impl Arena {
    async fn new() -> Self {
        let cluster = TestCluster::start_local().await.unwrap();
        cluster.apply_crds().await.unwrap();
        let admin = cluster.client().await.unwrap();
        let tinybird = TinybirdEmulator::start(TinybirdConfig::default()).await.unwrap();
        let system = cluster.namespace("system").await.unwrap();
        let team = cluster.namespace("hostile").await.unwrap();
        let victim = cluster.namespace("victim").await.unwrap();
        let arena = Self { cluster, admin, tinybird, system, team, victim };
        for namespace in [arena.team.name(), arena.victim.name()] {
            let workspace = format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: tinybird-admin, annotations: {{tenantaccess.dev/allowed-workspaces: '*'}}}}\nstringData: {{token: '{}'}}\n---\napiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {{name: analytics}}\nspec:\n  adminTokenSecretRef: {{name: tinybird-admin, key: token}}\n  apiUrl: {}\n{}",
                arena.tinybird.admin_token(),
                arena.tinybird.base_url(),
                support::UNMETERED
            );
            let out = arena.cluster.apply_yaml(&workspace, Some(namespace)).await.unwrap();
            assert!(out.success(), "{}", out.stderr);
        }
        arena.grant_hostile_team().await;
        arena
    }

    /// The tenant user gets what the threat model gives a team in its namespace: TenantAccess,
    /// Secrets and ConfigMaps (every verb).
    async fn grant_hostile_team(&self) {
        let subject = self.cluster.tenant_subject().await.unwrap();
        let rbac = format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: team}}\nrules:\n- apiGroups: [tenantaccess.dev]\n  resources: [tenantaccesses]\n  verbs: ['*']\n- apiGroups: ['']\n  resources: [secrets, configmaps]\n  verbs: ['*']\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: team}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: team}}\nsubjects: [{}]\n",
            serde_json::to_string(&subject).unwrap()
        );
        let out = self.cluster.apply_yaml(&rbac, Some(self.team.name())).await.unwrap();
        assert!(out.success(), "{}", out.stderr);
    }

    /// The team's own client (its RBAC user), once its Role is in force.
    async fn team_client(&self) -> Client {
        let client = self.cluster.tenant_client().await.unwrap();
        let probe: Api<ConfigMap> = Api::namespaced(client.clone(), self.team.name());
        eventually("the team's Role to be in force", || async {
            probe.list(&Default::default()).await.is_ok()
        })
        .await;
        client
    }

    /// `tenant-access run` as a separate process, cluster-wide, its admin server on a free port,
    /// the webhook on another when `webhook`.
    fn operator(&self, webhook: bool) -> Operator {
        self.operator_with(webhook, &[])
    }

    /// [`Arena::operator`] with more arguments.
    fn operator_with(&self, webhook: bool, args: &[&str]) -> Operator {
        let (admin_port, webhook_port) = (free_port(), free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_tenant-access"));
        command
            .args(["run", "--kubeconfig"])
            .arg(self.cluster.admin_kubeconfig())
            .args(["--cluster-resource-namespace", self.system.name()])
            .args(["--admin-address", &format!("127.0.0.1:{admin_port}")])
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if webhook {
            command.args(["--webhook-address", &format!("127.0.0.1:{webhook_port}")]).args([
                "--webhook-hosts",
                "127.0.0.1",
                "--webhook-namespace",
                self.system.name(),
            ]);
        }
        Operator {
            child: command.spawn().unwrap(),
            admin_port,
            webhook_port: webhook.then_some(webhook_port),
        }
    }

    /// Creates TenantAccess `name` in the other team's namespace (as its platform team) and
    /// waits until its token is issued: how long that took.
    async fn issue_in_victim(&self, name: &str) -> Duration {
        let api: Api<TenantAccess> = Api::namespaced(self.admin.clone(), self.victim.name());
        let access: TenantAccess = serde_saphyr::from_str(&tenant_access_yaml(
            name,
            "  workspaceRef: {name: analytics}\n  scopes: [{resource: top_pages, fixedParams: {org: victim}}]\n  secret: {}\n",
        ))
        .unwrap();
        let started = Instant::now();
        api.create(&PostParams::default(), &access).await.unwrap();
        eventually(&format!("{name} to be issued"), || async {
            let access = api.get_opt(name).await.unwrap();
            condition(access.as_ref(), "TokenIssued").is_some_and(|c| c.status == "True")
        })
        .await;
        started.elapsed()
    }

    /// The webhook's CA, from the Secret the operator keeps it in.
    async fn webhook_ca(&self) -> String {
        let secrets: Api<Secret> = Api::namespaced(self.admin.clone(), self.system.name());
        eventually_some("the webhook's certificate", || async {
            let secret = secrets.get_opt(WEBHOOK_SECRET).await.unwrap()?;
            let ca = secret.data?.get("ca.crt")?.0.clone();
            Some(String::from_utf8(ca).unwrap())
        })
        .await
    }
}

/// The operator process, killed when dropped.
struct Operator {
    child: Child,
    admin_port: u16,
    webhook_port: Option<u16>,
}

impl Operator {
    /// Waits until `/readyz` answers 200 (its caches are synced).
    async fn ready(&self) {
        eventually("the operator to be ready", || async {
            http_get(self.admin_port, "/readyz").await.is_some_and(|(status, _)| status == 200)
        })
        .await;
    }

    /// Peak resident memory of the process so far (VmHWM), in bytes.
    fn peak_rss(&self) -> u64 {
        let pid = self.child.id().expect("the operator runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    fn webhook_url(&self) -> String {
        format!("https://127.0.0.1:{}{PATH}", self.webhook_port.expect("a webhook"))
    }
}

/// The chart's memory limit (`resources.limits.memory` in values.yaml), in bytes.
fn chart_memory_limit() -> u64 {
    let values = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/tenant-access-operator/values.yaml"),
    )
    .unwrap();
    let after_limits = values.split_once("\n  limits:").unwrap().1;
    let memory = after_limits.lines().find_map(|l| l.trim().strip_prefix("memory:")).unwrap().trim();
    let mib: u64 = memory.strip_suffix("Mi").unwrap().parse().unwrap();
    mib * 1024 * 1024
}

fn mib(bytes: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let bytes = bytes as f64;
    bytes / (1024.0 * 1024.0)
}

/// A hand-made AdmissionReview creating a valid TenantAccess in `namespace`: judging it reads
/// the workspace and the namespace from the API server.
fn review(namespace: &str, uid: u64) -> serde_json::Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("flood-{uid}"), "operation": "CREATE", "namespace": namespace,
            "kind": {"group": "tenantaccess.dev", "version": "v1alpha1", "kind": "TenantAccess"},
            "object": {
                "apiVersion": "tenantaccess.dev/v1alpha1", "kind": "TenantAccess",
                "metadata": {"name": format!("flood-{uid}"), "namespace": namespace},
                "spec": {"workspaceRef": {"name": "analytics"}, "secret": {},
                         "scopes": [{"resource": "top_pages", "fixedParams": {"org": "victim"}}]},
            },
        },
    })
}

/// A TLS connection to the webhook at `port`, verified against `ca`.
async fn tls_connect(
    port: u16,
    ca: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await
}

/// Reads until the peer closes (a reset counts as closed).
async fn until_closed(stream: &mut (impl tokio::io::AsyncRead + Unpin)) {
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink).await;
}

/// Creates `count` objects in the team's namespace, `i` to each, with `team`'s rights.
async fn create_ballast(count: usize, create: impl Fn(usize) -> futures::future::BoxFuture<'static, ()>) {
    stream::iter(0..count).for_each_concurrent(4, create).await;
}

/// The labels anyone may set to be watched by the operator.
fn managed_by() -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/managed-by".to_owned(), "tenant-access-operator".to_owned())])
}

/// Starts the operator with the ballast in place, issues a token in another namespace, and
/// returns the operator's peak RSS.
async fn peak_after_a_restart(arena: &Arena, ballast: &str) -> u64 {
    let operator = arena.operator(false);
    operator.ready().await;
    let issued = arena.issue_in_victim("after-restart").await;
    let (peak, limit) = (operator.peak_rss(), chart_memory_limit());
    println!(
        "peak RSS with {ballast}: {:.1} MiB (limit {:.0} MiB); issued in {issued:?}",
        mib(peak),
        mib(limit)
    );
    assert!(peak < limit, "peak RSS {:.1} MiB is over the chart's limit {:.0} MiB", mib(peak), mib(limit));
    peak
}

#[tokio::test]
async fn labelled_ballast_does_not_take_the_operator_past_its_memory_limit_after_a_restart() {
    let arena = Arena::new().await;
    let team = arena.team_client().await;
    // The team's ballast: anyone may set the managed-by label.
    let secrets: Api<Secret> = Api::namespaced(team.clone(), arena.team.name());
    let configmaps: Api<ConfigMap> = Api::namespaced(team, arena.team.name());
    create_ballast(BALLAST_OBJECTS, |i| {
        let (secrets, configmaps) = (secrets.clone(), configmaps.clone());
        Box::pin(async move {
            let mut secret = Secret::default();
            secret.metadata.name = Some(format!("ballast-{i}"));
            secret.metadata.labels = Some(managed_by());
            secret.data = Some(BTreeMap::from([("b".to_owned(), ByteString(vec![b'x'; BALLAST_BYTES]))]));
            secrets.create(&PostParams::default(), &secret).await.unwrap();
            let mut configmap = ConfigMap::default();
            configmap.metadata.name = Some(format!("ballast-{i}"));
            configmap.metadata.labels = Some(managed_by());
            configmap.data = Some(BTreeMap::from([("b".to_owned(), "x".repeat(BALLAST_BYTES))]));
            configmaps.create(&PostParams::default(), &configmap).await.unwrap();
        })
    })
    .await;

    let ballast = format!("{BALLAST_OBJECTS} + {BALLAST_OBJECTS} labelled 1 MB Secrets and ConfigMaps");
    let peak = peak_after_a_restart(&arena, &ballast).await;
    assert!(
        peak < BALLAST_RSS_BOUND,
        "peak RSS {:.1} MiB is over {:.0} MiB: are labelled objects watched with their data?",
        mib(peak),
        mib(BALLAST_RSS_BOUND)
    );
}

#[tokio::test]
async fn secrets_padded_with_labels_do_not_take_the_operator_past_its_memory_limit_after_a_restart() {
    let arena = Arena::new().await;
    let secrets: Api<Secret> = Api::namespaced(arena.team_client().await, arena.team.name());
    // Metadata has no total bound for labels: as heavy as data, even to a metadata-only watch.
    // Only the page size bounds what a list holds at once.
    create_ballast(BALLAST_OBJECTS, |i| {
        let secrets = secrets.clone();
        Box::pin(async move {
            let mut padded = Secret::default();
            padded.metadata.name = Some(format!("padded-{i}"));
            let mut labels = managed_by();
            labels.extend((0..PADDING_LABELS).map(|j| (format!("l{j}"), "x".repeat(63))));
            padded.metadata.labels = Some(labels);
            secrets.create(&PostParams::default(), &padded).await.unwrap();
        })
    })
    .await;
    peak_after_a_restart(&arena, &format!("{BALLAST_OBJECTS} labelled Secrets of 0.8 MB of labels")).await;
}

#[tokio::test]
async fn a_review_flood_on_the_webhook_port_does_not_slow_issuance_in_another_namespace() {
    let arena = Arena::new().await;
    // A controllers' budget this machine's flood can exceed (the default, 200 requests per
    // second, takes more senders than 2 cores run): the flood must not spend any of it.
    let operator = arena.operator_with(true, &["--kube-qps", CONTROLLER_QPS, "--kube-burst", CONTROLLER_QPS]);
    operator.ready().await;
    let unloaded = arena.issue_in_victim("before-flood").await;
    let ca = arena.webhook_ca().await;

    let (answered, busy) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let deadline = Instant::now() + FLOOD;
    let flood: Vec<_> = (0..FLOODERS)
        .map(|flooder| {
            let client = reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
                .build()
                .unwrap();
            let (url, namespace) = (operator.webhook_url(), arena.victim.name().to_owned());
            let (answered, busy) = (answered.clone(), busy.clone());
            tokio::spawn(async move {
                let mut uid = u64::try_from(flooder).unwrap() * 1_000_000;
                while Instant::now() < deadline {
                    uid += 1;
                    match client
                        .post(&url)
                        .json(&review(&namespace, uid))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                    {
                        Ok(200) => answered.fetch_add(1, Ordering::Relaxed),
                        Ok(503) => busy.fetch_add(1, Ordering::Relaxed),
                        _ => 0,
                    };
                }
            })
        })
        .collect();
    // Issuance in another namespace while the flood runs, once it is under way (every sender
    // has had an answer).
    let answers = || answered.load(Ordering::Relaxed) + busy.load(Ordering::Relaxed);
    eventually("the flood to be under way", || async { answers() >= 4 * FLOODERS as u64 }).await;
    let during = arena.issue_in_victim("during-flood").await;
    let still_flooding = Instant::now() < deadline;
    for flooder in flood {
        flooder.await.unwrap();
    }
    let (answered, busy) = (answered.load(Ordering::Relaxed), busy.load(Ordering::Relaxed));
    println!(
        "issuance: {unloaded:?} unloaded, {during:?} during a {FLOOD:?} flood of {FLOODERS} senders ({answered} reviews answered, {busy} answered 503)"
    );
    assert!(during < ISSUANCE_BOUND, "issuance took {during:?} during the flood (bound {ISSUANCE_BOUND:?})");
    assert!(still_flooding, "the flood ended before the issuance did ({during:?})");
    assert!(answered > 0 && busy > 0, "answered {answered}, 503 {busy}: the flood did not reach the bound");
}

#[tokio::test]
async fn unfinished_requests_are_closed_within_the_timeouts_and_cannot_take_the_memory() {
    let arena = Arena::new().await;
    let operator = arena.operator(true);
    operator.ready().await;
    let ca = arena.webhook_ca().await;
    let port = operator.webhook_port.unwrap();

    // Unfinished headers: each connection is closed within the header timeout of its headers
    // being sent (those beyond the connection bound at once, or refused before).
    let closed = stream::iter(0..UNFINISHED_REVIEWS)
        .map(|_| {
            let ca = ca.clone();
            async move {
                let Ok(mut tls) = tls_connect(port, &ca).await else { return Duration::ZERO };
                let _ =
                    tls.write_all(format!("POST {PATH} HTTP/1.1\r\nHost: x\r\nX-Slow: ").as_bytes()).await;
                let _ = tls.flush().await;
                let sent = Instant::now();
                until_closed(&mut tls).await;
                sent.elapsed()
            }
        })
        .buffer_unordered(UNFINISHED_REVIEWS)
        .collect::<Vec<_>>();
    let closed = tokio::time::timeout(support::TIMEOUT, closed).await;
    let closed = closed.expect("connections with unfinished headers still open");
    let longest = closed.iter().max().copied().unwrap_or_default();
    println!("{UNFINISHED_REVIEWS} connections with unfinished headers: the longest open {longest:?}");
    assert!(longest < HEADER_READ_TIMEOUT + SLACK, "one stayed open {longest:?}");

    // Unfinished bodies of the largest size accepted, all at once: the reviews beyond the bound
    // are answered 503 unread, the others time out; the memory stays bounded.
    let body_start = format!(
        "POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {MAX_REVIEW_BYTES}\r\n\r\n"
    );
    let answers = stream::iter(0..UNFINISHED_REVIEWS)
        .map(|_| {
            let (ca, body_start) = (ca.clone(), body_start.clone());
            async move {
                let Ok(mut tls) = tls_connect(port, &ca).await else { return String::new() };
                let _ = tls.write_all(body_start.as_bytes()).await;
                let _ = tls.write_all(&vec![b' '; MAX_REVIEW_BYTES - 1]).await;
                let _ = tls.flush().await;
                let mut answer = Vec::new();
                let _ = tls.read_to_end(&mut answer).await;
                String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned()
            }
        })
        .buffer_unordered(UNFINISHED_REVIEWS)
        .collect::<Vec<_>>();
    let answers =
        tokio::time::timeout(support::TIMEOUT, answers).await.expect("unfinished bodies still open");
    // Beyond the bound a review is answered 503 before its body is read; the client may see
    // the connection closed under its unsent body instead.
    let busy = answers.iter().filter(|a| a.contains(" 503 ")).count();
    let (peak, limit) = (operator.peak_rss(), chart_memory_limit());
    println!(
        "{UNFINISHED_REVIEWS} unfinished 4 MiB reviews: {busy} seen answered 503 (at most {MAX_CONCURRENT_REVIEWS} read at once); peak RSS {:.1} MiB (limit {:.0} MiB)",
        mib(peak),
        mib(limit)
    );
    assert!(peak < limit, "peak RSS {:.1} MiB is over the chart's limit {:.0} MiB", mib(peak), mib(limit));

    // And it still answers.
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let answer =
        client.post(operator.webhook_url()).json(&review(arena.victim.name(), 1)).send().await.unwrap();
    assert_eq!(answer.status(), 200);
}

#[tokio::test]
async fn a_scope_named_with_a_format_suffix_costs_no_billed_admin_query() {
    let arena = Arena::new().await;
    let _operator = arena.operator(false);
    let team = arena.team_client().await;
    let api: Api<TenantAccess> = Api::namespaced(team, arena.team.name());
    for (name, resource) in [("suffix", "top_pages.json"), ("csv", "top_pages.csv"), ("path", "top_pages/x")]
    {
        let access: TenantAccess = serde_saphyr::from_str(&tenant_access_yaml(
            name,
            &format!(
                "  workspaceRef: {{name: analytics}}\n  scopes: [{{resource: '{resource}', fixedParams: {{org: hostile}}}}]\n  secret: {{}}\n  healthCheck: {{interval: 5s}}\n"
            ),
        ))
        .unwrap();
        api.create(&PostParams::default(), &access).await.unwrap();
    }
    // A well-named access of the same team, probed: the operator is probing by now.
    let good: TenantAccess = serde_saphyr::from_str(&tenant_access_yaml(
        "good",
        "  workspaceRef: {name: analytics}\n  scopes: [{resource: top_pages, fixedParams: {org: hostile}}]\n  secret: {}\n  healthCheck: {interval: 5s}\n",
    ))
    .unwrap();
    api.create(&PostParams::default(), &good).await.unwrap();
    eventually("good to be probed healthy, and the others judged", || async {
        let access = api.get_opt("good").await.unwrap();
        let mut judged = condition(access.as_ref(), "EndpointsHealthy").is_some_and(|c| c.status == "True");
        for name in ["suffix", "csv", "path"] {
            let access = api.get_opt(name).await.unwrap();
            judged &= condition(access.as_ref(), "Ready").is_some();
        }
        judged
    })
    .await;
    // No billed query was made with the admin token (recorded with its payload, `{u, id, host}`:
    // no scopes, unlike every JWT the operator signs), and nothing asked for the refused names.
    let records = arena.tinybird.request_log().records();
    let admin_billed: Vec<_> = records
        .iter()
        .filter(|r| r.bearer_claims.as_ref().is_none_or(|claims| claims.get("scopes").is_none()))
        .filter(|r| r.call.is_some_and(tenant_access_emulators::tinybird::is_billed))
        .collect();
    assert!(admin_billed.is_empty(), "billed admin queries: {admin_billed:?}");
    let refused_names: Vec<_> = records
        .iter()
        .filter(|r| {
            r.path.starts_with("/v0/pipes/top_pages")
                && !matches!(r.path.as_str(), "/v0/pipes/top_pages" | "/v0/pipes/top_pages.json")
        })
        .collect();
    assert!(refused_names.is_empty(), "requests for the refused names: {refused_names:?}");
    // Refused, and told why.
    for name in ["suffix", "csv", "path"] {
        let access = api.get_opt(name).await.unwrap();
        let ready = condition(access.as_ref(), "Ready").expect("a Ready condition");
        assert_eq!(ready.status, "False", "{name}: {ready:?}");
        assert!(ready.message.contains("is not a Tinybird resource name"), "{name}: {ready:?}");
    }
}
