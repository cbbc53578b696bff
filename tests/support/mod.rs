//! Integration-test harness: a real API server (testkit), the Tinybird emulator and the operator
//! running in-process, with its logs captured so tests can search them for secrets.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::Condition;
use kube::{Api, Client};
use tenant_access::api::TenantAccess;
use tenant_access::core::well_known::ANNOTATION_ALLOWED_WORKSPACES;
use tenant_access::runtime::controller::{RunConfig, run};
use tenant_access_emulators::{TinybirdConfig, TinybirdEmulator};
use tenant_access_testkit::{TestCluster, TestNamespace, wait_for};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generous: tests wait for conditions, they do not time things.
pub const TIMEOUT: Duration = Duration::from_secs(60);

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every event of this process with its fields (not its wording), for tests that read what the
/// operator recorded (e.g. the `attempts` of each failed reconcile).
static EVENTS: OnceLock<Arc<Mutex<Vec<LoggedEvent>>>> = OnceLock::new();

/// One logged event's fields, by name (the message under `message`), as text.
pub type LoggedEvent = std::collections::BTreeMap<String, String>;

/// A layer keeping each event's fields.
struct FieldCapture(Arc<Mutex<Vec<LoggedEvent>>>);

struct FieldVisitor<'a>(&'a mut LoggedEvent);

impl tracing::field::Visit for FieldVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for FieldCapture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = LoggedEvent::new();
        event.record(&mut FieldVisitor(&mut fields));
        self.0.lock().unwrap().push(fields);
    }
}

/// Captures every log line of this process (the operator's included), at debug level, and
/// each event's fields ([`logged_events`]).
pub fn capture_logs() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let events = EVENTS.get_or_init(Arc::default).clone();
        let writer = LogWriter(buffer.clone());
        let filter = tracing_subscriber::EnvFilter::new("tenant_access=debug,kube_runtime=info,warn");
        let text = tracing_subscriber::fmt::layer().with_ansi(false).with_writer(move || writer.clone());
        let _ = tracing_subscriber::registry().with(filter).with(text).with(FieldCapture(events)).try_init();
        buffer
    });
}

/// Every event logged so far, with its fields.
pub fn logged_events() -> Vec<LoggedEvent> {
    EVENTS.get().map(|events| events.lock().unwrap().clone()).unwrap_or_default()
}

/// Everything logged so far.
pub fn logs() -> String {
    LOGS.get().map(|b| String::from_utf8_lossy(&b.lock().unwrap()).into_owned()).unwrap_or_default()
}

/// The operator's Clerk budget in tests: Clerk's development budget scaled to a 1 s window, so
/// that tests of hundreds of templates take seconds (the emulator is set to the same scale).
pub fn clerk_budget() -> tenant_access::adapters::clerk::RequestBudget {
    tenant_access::adapters::clerk::RequestBudget { requests: 90, window: Duration::from_secs(1) }
}

/// The operator, running in this process until stopped.
pub struct Operator {
    /// Its metrics (shared with the running operator).
    pub metrics: tenant_access::runtime::metrics::Metrics,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Operator {
    /// Starts the operator for one namespace (or cluster-wide with `None`).
    pub fn start(client: Client, namespace: Option<&str>, cluster_resource_namespace: &str) -> Self {
        Self::start_with_clerk_budget(client, namespace, cluster_resource_namespace, clerk_budget())
    }

    /// [`Operator::start`] with its own Clerk request budget.
    pub fn start_with_clerk_budget(
        client: Client,
        namespace: Option<&str>,
        cluster_resource_namespace: &str,
        clerk_budget: tenant_access::adapters::clerk::RequestBudget,
    ) -> Self {
        let (tx, rx) = oneshot::channel::<()>();
        let metrics = tenant_access::runtime::metrics::Metrics::default();
        let config = RunConfig {
            namespaces: namespace.map(str::to_owned).into_iter().collect(),
            cluster_resource_namespace: cluster_resource_namespace.to_owned(),
            concurrency: 8,
            resync: Duration::from_secs(600),
            instance: Some("test".into()),
            clerk_budget,
            probe_concurrency: 8,
            metrics: metrics.clone(),
            synced: Arc::default(),
            rotation_boost: None,
        };
        let task = tokio::spawn(async move {
            run(client, config, async move {
                let _ = rx.await;
            })
            .await
            .expect("the operator starts");
        });
        Self { metrics, shutdown: Some(tx), task: Some(task) }
    }

    /// How many reconciles of `kind` (`TenantAccess`, `TinybirdWorkspace`, ...) finished with
    /// `outcome` (`success` or an error category).
    pub fn reconciles(&self, kind: &'static str, outcome: &'static str) -> u64 {
        self.metrics
            .reconciles
            .get_or_create(&tenant_access::runtime::metrics::ReconcileLabels { kind, outcome })
            .get()
    }

    /// Stops it and waits for in-flight reconciles.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(TIMEOUT, task).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A namespace with the CRDs, a Tinybird emulator, its admin token in a Secret, a
/// The `analytics` workspace's health-check budget in tests: second-long intervals, no pacing
/// (the budget's own tests set a small one).
pub const UNMETERED: &str = "  healthChecks: {maxQueriesPerDay: 100000000, maxQueriesPerSecond: 1000}\n";

/// TinybirdWorkspace `analytics` pointing at the emulator, and a namespaced operator.
pub struct Env {
    pub cluster: TestCluster,
    pub ns: TestNamespace,
    pub client: Client,
    pub tinybird: TinybirdEmulator,
    pub clerk: Option<tenant_access_emulators::ClerkEmulator>,
    pub operator: Option<Operator>,
}

impl Env {
    pub async fn new(prefix: &str) -> Self {
        Self::on(TestCluster::shared().await.unwrap(), prefix).await
    }

    /// [`Env::new`] on a private API server of its own (for tests that stop or pause it).
    pub async fn new_private(prefix: &str) -> Self {
        Self::on(TestCluster::start_local().await.unwrap(), prefix).await
    }

    async fn on(cluster: TestCluster, prefix: &str) -> Self {
        capture_logs();
        cluster.apply_crds().await.unwrap();
        let ns = cluster.namespace(prefix).await.unwrap();
        let client = cluster.client().await.unwrap();
        let tinybird = TinybirdEmulator::start(TinybirdConfig::default()).await.unwrap();
        let env = Self { cluster, ns, client, tinybird, clerk: None, operator: None };
        env.put_admin_token("tinybird-admin", &env.tinybird.admin_token()).await;
        env.apply_yaml(&format!(
            "apiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {{name: analytics}}\nspec:\n  adminTokenSecretRef: {{name: tinybird-admin, key: token}}\n  apiUrl: {}\n{UNMETERED}",
            env.tinybird.base_url()
        ))
        .await;
        env
    }

    /// Starts a Clerk emulator (budget: Clerk's development budget scaled to a 1 s window) and
    /// connects the `analytics` workspace to it.
    pub async fn connect_clerk(&mut self) {
        let config = tenant_access_emulators::ClerkConfig {
            request_budget: 100,
            budget_window: Duration::from_secs(1),
            ..Default::default()
        };
        let clerk = tenant_access_emulators::ClerkEmulator::start(config).await.unwrap();
        self.put_secret_allowing("clerk-key", "secret-key", clerk.secret_key(), Some("analytics")).await;
        self.apply_yaml(&format!(
            "apiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {{name: analytics}}\nspec:\n  adminTokenSecretRef: {{name: tinybird-admin, key: token}}\n  apiUrl: {}\n{UNMETERED}  clerk:\n    secretKeySecretRef: {{name: clerk-key, key: secret-key}}\n    apiUrl: {}\n",
            self.tinybird.base_url(),
            clerk.api_url()
        ))
        .await;
        self.clerk = Some(clerk);
    }

    /// The Clerk emulator.
    pub fn clerk(&self) -> &tenant_access_emulators::ClerkEmulator {
        self.clerk.as_ref().expect("connect_clerk first")
    }

    /// Mints a session token from a Clerk template, as a frontend would.
    pub async fn mint_clerk_token(&self, template: &str) -> String {
        mint_clerk_token(self.clerk(), template).await
    }

    /// Starts a namespaced operator.
    pub fn start_operator(&mut self) {
        self.operator = Some(Operator::start(self.client.clone(), Some(self.ns.name()), self.ns.name()));
    }

    pub async fn stop_operator(&mut self) {
        if let Some(operator) = self.operator.take() {
            operator.stop().await;
        }
    }

    pub fn name(&self) -> &str {
        self.ns.name()
    }

    /// Server-side applies YAML documents into the test namespace with kubectl.
    pub async fn apply_yaml(&self, yaml: &str) {
        let out = self.cluster.apply_yaml(yaml, Some(self.ns.name())).await.unwrap();
        assert!(out.success(), "kubectl apply failed: {}", out.stderr);
    }

    /// Writes (creates or replaces) a Secret holding an admin token under `token`, usable by
    /// every workspace of the namespace (`tenantaccess.dev/allowed-workspaces: *`).
    pub async fn put_admin_token(&self, name: &str, token: &str) {
        self.put_secret_allowing(name, "token", token, Some("*")).await;
    }

    /// Writes (creates or replaces) a Secret holding `value` under `key`, with the annotation
    /// `tenantaccess.dev/allowed-workspaces: <allowed>` (None: without that annotation).
    pub async fn put_secret_allowing(&self, name: &str, key: &str, value: &str, allowed: Option<&str>) {
        let annotations = match allowed {
            Some(allowed) => serde_json::json!({ANNOTATION_ALLOWED_WORKSPACES: allowed}),
            None => serde_json::json!({}),
        };
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "annotations": annotations},
            "stringData": {key: value},
        }))
        .unwrap();
        self.secrets()
            .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&secret))
            .await
            .unwrap();
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), self.ns.name())
    }

    pub fn tenant_accesses(&self) -> Api<TenantAccess> {
        Api::namespaced(self.client.clone(), self.ns.name())
    }

    /// Applies a TenantAccess with this spec (YAML, indented by two spaces).
    pub async fn tenant_access(&self, name: &str, spec: &str) {
        self.apply_yaml(&format!(
            "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: {name}}}\nspec:\n{spec}"
        ))
        .await;
    }

    /// Waits until a TenantAccess satisfies `cond`.
    pub async fn wait_access(&self, name: &str, cond: impl Condition<TenantAccess>) -> TenantAccess {
        wait_for(self.tenant_accesses(), name, cond, TIMEOUT).await.unwrap().expect("TenantAccess exists")
    }

    /// Waits until TenantAccesses `t0`..`t{count-1}` have pushed their Clerk templates with the
    /// key of this fingerprint (generously: Clerk may be throttled).
    pub async fn wait_clerk_keys(&self, count: usize, fingerprint: &str) {
        for i in 0..count {
            wait_for(
                self.tenant_accesses(),
                &format!("t{i}"),
                clerk_fingerprint_is(fingerprint.to_owned()),
                TIMEOUT * 3,
            )
            .await
            .unwrap();
        }
    }

    /// Waits until a Secret satisfies `cond`.
    pub async fn wait_secret(&self, name: &str, cond: impl Condition<Secret>) -> Secret {
        wait_for(self.secrets(), name, cond, TIMEOUT).await.unwrap().expect("Secret exists")
    }

    /// The token in a Secret.
    pub async fn token(&self, secret: &str) -> String {
        let secret = self.secrets().get(secret).await.unwrap();
        token_of(&secret).expect("the Secret holds a token")
    }

    /// GET a pipe at the emulator with a token in the Authorization header.
    pub async fn query(&self, pipe: &str, token: &str, query: &str) -> (u16, serde_json::Value) {
        query_pipe(&self.tinybird.base_url(), pipe, token, query).await
    }

    /// Every event in the test namespace, as text.
    pub async fn events_text(&self) -> String {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), self.ns.name());
        let list = events.list(&Default::default()).await.unwrap();
        serde_json::to_string(&list.items).unwrap()
    }

    /// Every event in the test namespace, as text, once it contains each of `needles` (events are
    /// sent in the background, so they may land just after the status that reports the same).
    pub async fn events_with(&self, needles: &[&str]) -> String {
        eventually_some(&format!("events containing each of {needles:?}"), || async {
            let text = self.events_text().await;
            needles.iter().all(|needle| text.contains(needle)).then_some(text)
        })
        .await
    }
}

/// GET a pipe at a Tinybird (emulator) at `base_url` with a token in the Authorization header:
/// the status code and the JSON body (`null` when the body is not JSON).
pub async fn query_pipe(base_url: &str, pipe: &str, token: &str, query: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(format!("{base_url}/v0/pipes/{pipe}.json?{query}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// A private API server for a cluster-wide operator (which must not meet other tests'
/// resources): the CRDs, a Tinybird emulator, and the operator's namespace (`system`, the
/// cluster-resource namespace) holding the emulator's admin token in Secret `shared-admin` (which
/// allows `ClusterTinybirdWorkspace/shared`).
/// [`ClusterWideEnv::shared_workspace_yaml`] is a ClusterTinybirdWorkspace `shared` using it.
pub struct ClusterWideEnv {
    pub cluster: TestCluster,
    pub client: Client,
    pub tinybird: TinybirdEmulator,
    pub system: TestNamespace,
}

impl ClusterWideEnv {
    pub async fn new() -> Self {
        capture_logs();
        let cluster = TestCluster::start_local().await.unwrap();
        cluster.apply_crds().await.unwrap();
        let client = cluster.client().await.unwrap();
        let tinybird = TinybirdEmulator::start(TinybirdConfig::default()).await.unwrap();
        let system = cluster.namespace("operator").await.unwrap();
        let env = Self { cluster, client, tinybird, system };
        let admin = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: shared-admin, annotations: {{{ANNOTATION_ALLOWED_WORKSPACES}: ClusterTinybirdWorkspace/shared}}}}\nstringData: {{token: '{}'}}\n",
            env.tinybird.admin_token()
        );
        env.apply(&admin, Some(env.system.name())).await;
        env
    }

    /// Applies YAML documents with kubectl (client-side), into `namespace` or cluster-scoped;
    /// fails the test when kubectl does.
    pub async fn apply(&self, yaml: &str, namespace: Option<&str>) {
        self.cluster.apply_yaml(yaml, namespace).await.unwrap();
    }

    /// The ClusterTinybirdWorkspace `shared`: the admin token from Secret `shared-admin` of the
    /// operator's namespace, the emulator's URL, then `policy` (YAML lines of its spec, indented
    /// by two spaces, each ending in a newline).
    pub fn shared_workspace_yaml(&self, policy: &str) -> String {
        format!(
            "apiVersion: tenantaccess.dev/v1alpha1\nkind: ClusterTinybirdWorkspace\nmetadata: {{name: shared}}\nspec:\n  adminTokenSecretRef: {{name: shared-admin}}\n  apiUrl: {}\n{UNMETERED}{policy}",
            self.tinybird.base_url()
        )
    }

    /// Merges `labels` (a JSON object; a `null` value removes that label) into a namespace's.
    pub async fn label_namespace(&self, name: &str, labels: serde_json::Value) {
        let patch = serde_json::json!({"metadata": {"labels": labels}});
        Api::<Namespace>::all(self.client.clone())
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// Starts a cluster-wide operator whose cluster-resource namespace is `system`.
    pub fn start_operator(&self) -> Operator {
        Operator::start(self.client.clone(), None, self.system.name())
    }

    /// [`ClusterWideEnv::start_operator`] as the audited user `operator` ([`audited_since`]).
    pub async fn start_audited_operator(&self) -> Operator {
        let kubeconfig = self.cluster.operator_kubeconfig().unwrap();
        let client = tenant_access_testkit::client_from_kubeconfig(&kubeconfig).await.unwrap();
        Operator::start(client, None, self.system.name())
    }
}

/// Polls `check` every 200 ms until it holds (a wait for a condition, not an assertion); fails
/// the test naming `what` when it still does not hold after [`TIMEOUT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_some(what, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await;
}

/// [`eventually`] for a check that yields a value once it holds: the value.
pub async fn eventually_some<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {TIMEOUT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A loaded machine: one thread per CPU spinning until dropped, for promises that must hold
/// when the operator, the API server and etcd get less CPU than they want (a CI machine running
/// other tests, a node under pressure).
pub struct CpuBurner {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl CpuBurner {
    /// Starts the threads.
    pub fn start() -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        let threads = (0..cpus)
            .map(|i| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = u64::try_from(i).unwrap() | 1;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(
                                x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1),
                            );
                        }
                    }
                    x
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for CpuBurner {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for a process's listen address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET `http://127.0.0.1:{port}{path}`: the status code and the body, or `None` while nothing
/// answers there.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}")).await.ok()?;
    Some((response.status().as_u16(), response.text().await.unwrap_or_default()))
}

/// The token in a Secret's data, if any.
pub fn token_of(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get("token")?;
    Some(String::from_utf8(bytes.0.clone()).unwrap())
}

/// A TenantAccess's status condition `type_`, if it has one.
pub fn condition<'a>(
    access: Option<&'a TenantAccess>,
    type_: &str,
) -> Option<&'a tenant_access::api::Condition> {
    access?.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

/// Whether a TenantAccess's condition `type_` is True (whatever its reason).
pub fn condition_is_true(access: Option<&TenantAccess>, type_: &str) -> bool {
    condition(access, type_).is_some_and(|c| c.status == "True")
}

/// Condition: a TenantAccess's condition `type_` has `status` and `reason`.
pub fn has_condition(
    type_: &'static str,
    status: &'static str,
    reason: &'static str,
) -> impl Condition<TenantAccess> {
    move |obj: Option<&TenantAccess>| {
        condition(obj, type_).is_some_and(|c| c.status == status && c.reason == reason)
    }
}

/// Condition: the pipes' isolation is judged (`PipesIsolated` is set, whatever its status): the
/// first existence check of each pipe has been reported, so no status write of it is to come.
pub fn isolation_judged() -> impl Condition<TenantAccess> {
    |obj: Option<&TenantAccess>| condition(obj, "PipesIsolated").is_some()
}

/// Condition: Ready=True.
pub fn is_ready() -> impl Condition<TenantAccess> {
    has_condition("Ready", "True", "Ready")
}

/// Condition: ClerkTemplateSynced=True (reason Synced): the Clerk template is up to date.
pub fn clerk_synced() -> impl Condition<TenantAccess> {
    has_condition("ClerkTemplateSynced", "True", "Synced")
}

/// Condition: the Clerk template was last pushed with the signing key of this fingerprint.
pub fn clerk_fingerprint_is(fingerprint: String) -> impl Condition<TenantAccess> {
    move |ta: Option<&TenantAccess>| {
        ta.and_then(|ta| ta.status.as_ref()?.clerk_template.as_ref())
            .is_some_and(|t| t.signing_key_fingerprint == fingerprint)
    }
}

/// Condition: token revision at least `revision`.
pub fn revision_at_least(revision: i64) -> impl Condition<TenantAccess> {
    move |obj: Option<&TenantAccess>| {
        obj.and_then(|ta| ta.status.as_ref()?.token.as_ref()).is_some_and(|t| t.revision >= revision)
    }
}

/// Asserts that no admin token and no JWT appears in `text`.
pub fn assert_no_secrets(what: &str, text: &str, admin_tokens: &[String]) {
    for token in admin_tokens {
        assert!(!text.contains(token.as_str()), "{what} contains an admin token");
    }
    assert!(!text.contains("eyJ0eXAi") && !text.contains("eyJhbGci"), "{what} contains a JWT");
}

impl ClusterWideEnv {
    /// Creates namespace `name` with `labels` (a JSON object) and grants the unprivileged tenant
    /// user (the test's tenant kubeconfig) what a tenant team has there: TenantAccess, and
    /// reading Secrets; nothing else.
    pub async fn tenant_namespace(&self, name: &str, labels: serde_json::Value) {
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": labels}}))
                .unwrap();
        Api::<Namespace>::all(self.client.clone()).create(&Default::default(), &namespace).await.unwrap();
        grant_tenant_team(&self.cluster, name).await;
    }

    /// Applies a TenantAccess (`spec`: YAML lines indented by two spaces) into `namespace` as the
    /// tenant user; fails the test when the API server refuses it.
    pub async fn tenant_applies(&self, namespace: &str, name: &str, spec: &str) {
        let out = self
            .cluster
            .tenant_kubectl_with_stdin(["-n", namespace, "apply", "-f", "-"], &tenant_access_yaml(name, spec))
            .await
            .unwrap();
        assert!(out.success(), "the tenant could not apply {name}: {}", out.stderr);
    }
}

/// The fixed params of every scope of the bearer JWT a recorded request carried.
pub fn recorded_fixed_params(record: &tenant_access_emulators::RequestRecord) -> Vec<serde_json::Value> {
    let scopes = record.bearer_claims.as_ref().and_then(|claims| claims["scopes"].as_array().cloned());
    scopes.unwrap_or_default().into_iter().map(|scope| scope["fixed_params"].clone()).collect()
}

/// Gives the unprivileged tenant user a tenant team's rights in `namespace`: TenantAccess (every
/// verb) and reading Secrets; nothing else (no ConfigMaps, no workloads).
pub async fn grant_tenant_team(cluster: &TestCluster, namespace: &str) {
    let subject = cluster.tenant_subject().await.unwrap();
    let rbac = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: tenant-team}}\nrules:\n- apiGroups: [tenantaccess.dev]\n  resources: [tenantaccesses]\n  verbs: [get, list, watch, create, update, patch, delete]\n- apiGroups: ['']\n  resources: [secrets]\n  verbs: [get, list]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: tenant-team}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: tenant-team}}\nsubjects: [{}]\n",
        serde_json::to_string(&subject).unwrap()
    );
    let out = cluster.apply_yaml(&rbac, Some(namespace)).await.unwrap();
    assert!(out.success(), "granting the tenant team: {}", out.stderr);
}

/// Applies YAML into `namespace` as the tenant user (kubectl apply), once its Role is in force.
pub async fn tenant_apply(cluster: &TestCluster, namespace: &str, yaml: &str) {
    eventually(&format!("the tenant user to apply into {namespace}:\n{yaml}"), || async {
        cluster
            .tenant_kubectl_with_stdin(["-n", namespace, "apply", "-f", "-"], yaml)
            .await
            .unwrap()
            .success()
    })
    .await;
}

/// The TenantAccess manifest `name` with this spec (YAML lines indented by two spaces).
pub fn tenant_access_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

/// Reads a data source through a Tinybird (emulator) Query API at `base_url`,
/// `GET /v0/sql?q=SELECT * FROM <datasource> FORMAT JSON`, with a token in the Authorization
/// header: the status code and the JSON body (`null` when the body is not JSON).
pub async fn query_datasource(base_url: &str, datasource: &str, token: &str) -> (u16, serde_json::Value) {
    let q = format!("SELECT * FROM {datasource} FORMAT JSON");
    let request =
        reqwest::Client::new().get(format!("{base_url}/v0/sql")).query(&[("q", q)]).bearer_auth(token);
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or_default())
}

/// Mints a session token from template `template` of a Clerk emulator for whoever it has signed
/// in, as a frontend would.
pub async fn mint_clerk_token(clerk: &tenant_access_emulators::ClerkEmulator, template: &str) -> String {
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/sessions/sess_test/tokens/{template}", clerk.api_url()))
        .bearer_auth(clerk.secret_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["jwt"].as_str().unwrap_or_else(|| panic!("no jwt in {answer}")).to_owned()
}

/// One request in the audit log of a private cluster (`hack/cluster.sh` audits ServiceAccounts
/// and user `operator`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audited {
    /// Who made it.
    pub user: String,
    /// `get`, `list`, `watch`, `create`, `patch`, ...
    pub verb: String,
    /// As RBAC names it (`tenantaccesses/status`).
    pub resource: String,
    /// The object's namespace (empty for a cluster-scoped one).
    pub namespace: String,
    /// The object's name (empty for a collection).
    pub name: String,
    /// The answer's HTTP status.
    pub code: u16,
}

/// How far the audit log of a private cluster goes now.
pub fn audit_mark(cluster: &TestCluster) -> usize {
    let log = cluster.audit_log().unwrap();
    std::fs::metadata(log).map_or(0, |m| usize::try_from(m.len()).unwrap())
}

/// The audited requests after `mark`. A line still being written does not parse yet; it is
/// read again on the next call.
pub fn audited_since(cluster: &TestCluster, mark: usize) -> Vec<Audited> {
    let text = std::fs::read_to_string(cluster.audit_log().unwrap()).unwrap_or_default();
    let text = text.get(mark..).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|event| {
            let object = &event["objectRef"];
            let resource = object["resource"].as_str().unwrap_or_default();
            let resource = match object["subresource"].as_str() {
                Some(subresource) => format!("{resource}/{subresource}"),
                None => resource.to_owned(),
            };
            let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
            Audited {
                user: text(&event["user"]["username"]),
                verb: text(&event["verb"]),
                resource,
                namespace: text(&object["namespace"]),
                name: text(&object["name"]),
                code: event["responseStatus"]["code"]
                    .as_u64()
                    .and_then(|c| u16::try_from(c).ok())
                    .unwrap_or(0),
            }
        })
        .collect()
}
