//! Test support for tenant-access-operator: a real Kubernetes API server for integration tests.
//!
//! [`TestCluster`] gives a test a real cluster:
//!
//! - when `TEST_KUBECONFIG` is set (by `hack/with-cluster.sh`, or by a user pointing the tests at
//!   kind/k3d), that cluster is used and left running;
//! - otherwise a private etcd + kube-apiserver (v1.20.2) is started on loopback through
//!   `hack/cluster.sh up <tempdir> --owner-pid <this process>` and torn down when the last
//!   handle is dropped (also during a panic). If the test process dies without unwinding
//!   (SIGKILL, `abort`), the watchdog started by `cluster.sh` stops the cluster and removes its
//!   directory.
//!
//! Clients are created per call ([`TestCluster::client`]), so a cluster shared between
//! `#[tokio::test]`s (each with its own runtime) never hands out a client bound to a dead runtime.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tenant_access_testkit::Error> {
//! use tenant_access_testkit::TestCluster;
//! let cluster = TestCluster::shared().await?;
//! cluster.apply_crds().await?;
//! let ns = cluster.namespace("my-test").await?;
//! let out = cluster.kubectl(["get", "tenantaccesses", "-n", ns.name()]).await?;
//! assert!(out.success(), "{}", out.stderr);
//! # Ok(()) }
//! ```
//!
//! Environment: `TEST_KUBECONFIG` (admin kubeconfig of an existing cluster),
//! `TEST_TENANT_KUBECONFIG` (kubeconfig of an unprivileged user on that cluster; without it a
//! ServiceAccount `tenant-dev` in namespace `tenant-access-testkit` is provisioned on first use),
//! `TEST_TENANT_USER` (the user name in `TEST_TENANT_KUBECONFIG`, default `tenant-dev`),
//! `KUBECTL` (kubectl binary, default `kubectl` on `PATH`), `HELM`,
//! `TENANT_ACCESS_KEEP_CLUSTER_DIR=1` (keep a private cluster's directory with its logs).
//! Tokens are never logged or put into error messages.

use std::collections::hash_map::RandomState;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::Subject;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Api, Client, Config, Resource};
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;

/// Default timeout for waits on the API server (CRD establishment, conditions).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Label put on every namespace the testkit creates.
pub const TESTKIT_LABEL: &str = "tenantaccess.dev/testkit";

/// Namespace holding the ServiceAccount used as the unprivileged user on external clusters.
pub const TENANT_SA_NAMESPACE: &str = "tenant-access-testkit";

/// Name of the unprivileged user (local cluster) or ServiceAccount (external cluster).
pub const TENANT_USER: &str = "tenant-dev";

/// Errors of the testkit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation (spawning a process, writing a file) failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A kubeconfig file could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: KubeconfigError,
    },
    /// A request to the API server failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// `hack/cluster.sh up` failed.
    #[error("starting the local cluster failed ({status}):\n{stderr}")]
    ClusterStart {
        /// Exit status of the script.
        status: String,
        /// Its standard error (logs tail; no tokens).
        stderr: String,
    },
    /// A kubectl invocation that had to succeed failed.
    #[error("`kubectl {args}` failed ({status}):\n{stderr}")]
    Kubectl {
        /// The arguments (without the kubeconfig).
        args: String,
        /// Exit status.
        status: String,
        /// Standard error.
        stderr: String,
    },
    /// A wait ran out of time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The timeout.
        timeout: Duration,
    },
    /// A watch used for waiting failed.
    #[error("waiting for {what}: {source}")]
    Wait {
        /// What was awaited.
        what: String,
        /// The underlying error.
        #[source]
        source: kube::runtime::wait::Error,
    },
    /// Something else went wrong.
    #[error("{0}")]
    Other(String),
}

/// Result with the testkit [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// The repository root (the parent of the testkit crate).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The `crds/` directory of the repository.
pub fn crds_dir() -> PathBuf {
    repo_root().join("crds")
}

/// The `examples/` directory of the repository.
pub fn examples_dir() -> PathBuf {
    repo_root().join("examples")
}

/// The kubectl binary: `$KUBECTL` or `kubectl` on `PATH`.
pub fn kubectl_binary() -> OsString {
    std::env::var_os("KUBECTL").filter(|v| !v.is_empty()).unwrap_or_else(|| OsString::from("kubectl"))
}

/// The helm (v4) binary: `$HELM`, else the one `hack/install-deps.sh` installs in the cache
/// directory, if present.
pub fn helm_binary() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("HELM").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(h));
    }
    let cache = match std::env::var_os("TENANT_ACCESS_CACHE").filter(|v| !v.is_empty()) {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/tenant-access-operator"),
    };
    let helm = cache.join("helm-v4/helm");
    helm.is_file().then_some(helm)
}

/// A random lowercase alphanumeric string (not cryptographic; for unique names).
pub fn random_suffix(len: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    let mut round = 0u64;
    while out.len() < len {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u64(round);
        h.write_u32(std::process::id());
        h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default());
        let mut v = h.finish();
        for _ in 0..12 {
            if out.len() >= len {
                break;
            }
            let idx = usize::try_from(v % 36).unwrap_or(0);
            out.push(char::from(ALPHABET[idx]));
            v /= 36;
        }
        round += 1;
    }
    out
}

/// `prefix-xxxxxx`, a valid DNS-1123 label (at most 63 characters).
pub fn unique_name(prefix: &str) -> String {
    let mut clean: String = prefix
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() { c } else { '-' }
        })
        .collect();
    clean.truncate(50);
    let clean = clean.trim_matches('-');
    let clean = if clean.is_empty() { "test" } else { clean };
    format!("{clean}-{}", random_suffix(6))
}

/// Build a client from a kubeconfig file (its current context).
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)
        .map_err(|source| Error::Kubeconfig { path: path.to_path_buf(), source })?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig { path: path.to_path_buf(), source })?;
    Ok(Client::try_from(config)?)
}

/// Wait until `cond` holds for the object `name` (watching it), at most `timeout`.
/// Returns the object as it was when the condition held.
pub async fn wait_for<K>(
    api: Api<K>,
    name: &str,
    cond: impl Condition<K>,
    timeout: Duration,
) -> Result<Option<K>>
where
    K: Clone + fmt::Debug + Send + DeserializeOwned + Resource + 'static,
{
    let what = format!("{} {name}", std::any::type_name::<K>());
    match tokio::time::timeout(timeout, await_condition(api, name, cond)).await {
        Ok(Ok(obj)) => Ok(obj),
        Ok(Err(source)) => Err(Error::Wait { what, source }),
        Err(_) => Err(Error::Timeout { what, timeout }),
    }
}

/// What a kubectl run produced. Never an error by itself: check [`KubectlOutput::success`].
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    /// The arguments kubectl ran with (without the kubeconfig).
    pub args: Vec<String>,
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl KubectlOutput {
    /// Whether kubectl exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// `Ok(self)` when kubectl succeeded, else [`Error::Kubectl`] with its stderr.
    pub fn ok(self) -> Result<Self> {
        if self.success() {
            Ok(self)
        } else {
            Err(Error::Kubectl {
                args: self.args.join(" "),
                status: self.status.to_string(),
                stderr: self.stderr,
            })
        }
    }
}

/// The unprivileged identity of a cluster.
#[derive(Debug, Clone)]
struct Tenant {
    kubeconfig: PathBuf,
    subject: Subject,
}

/// A private cluster started by this process; stopped (and its directory removed) on drop.
#[derive(Debug)]
struct OwnedCluster {
    dir: PathBuf,
    script: PathBuf,
}

impl Drop for OwnedCluster {
    fn drop(&mut self) {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(&self.script).arg("down").arg(&self.dir);
        if !keep_cluster_dir() {
            cmd.arg("--purge");
        }
        let result = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit()).status();
        match result {
            Ok(status) if status.success() => {
                tracing::debug!(dir = %self.dir.display(), "local cluster stopped");
            }
            Ok(status) => {
                tracing::warn!(dir = %self.dir.display(), %status, "cluster.sh down failed");
            }
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "could not run cluster.sh down");
            }
        }
    }
}

fn keep_cluster_dir() -> bool {
    std::env::var("TENANT_ACCESS_KEEP_CLUSTER_DIR").is_ok_and(|v| v == "1")
}

#[derive(Debug)]
struct Inner {
    admin_kubeconfig: PathBuf,
    /// Known up front (local cluster, or `TEST_TENANT_KUBECONFIG`), else provisioned lazily.
    tenant: OnceCell<Tenant>,
    /// Directory for files the testkit writes (the tenant kubeconfig on external clusters):
    /// inside the cluster directory for a private cluster, else a per-cluster temp directory.
    scratch: PathBuf,
    // Dropped last: the cluster must outlive everything else.
    owned: Option<OwnedCluster>,
}

/// A real Kubernetes API server for a test. Cheap to clone; the private cluster (if any) stops
/// when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct TestCluster {
    inner: Arc<Inner>,
}

static SHARED: OnceCell<TestCluster> = OnceCell::const_new();

impl TestCluster {
    /// A cluster shared by every test of this process (started on first use). A private
    /// shared cluster is never dropped: its watchdog stops it when the process exits.
    pub async fn shared() -> Result<Self> {
        SHARED.get_or_try_init(Self::start).await.cloned()
    }

    /// `TEST_KUBECONFIG`'s cluster if that variable is set, else a new private local cluster.
    pub async fn start() -> Result<Self> {
        match std::env::var_os("TEST_KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(kubeconfig) => Self::external(PathBuf::from(kubeconfig)),
            None => Self::start_local().await,
        }
    }

    /// Always start a new private etcd + kube-apiserver (needs the binaries of
    /// `hack/install-deps.sh`, which `cluster.sh` runs when they are missing).
    pub async fn start_local() -> Result<Self> {
        let script = repo_root().join("hack/cluster.sh");
        let dir = std::env::temp_dir().join(format!(
            "tenant-access-cluster-{}-{}",
            std::process::id(),
            random_suffix(8)
        ));
        std::fs::create_dir(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        // From here on, dropping `owned` stops whatever was started and removes `dir`.
        let owned = OwnedCluster { dir: dir.clone(), script: script.clone() };
        let started = std::time::Instant::now();
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg(&script).arg("up").arg(&dir).arg("--owner-pid").arg(std::process::id().to_string());
        if !keep_cluster_dir() {
            cmd.arg("--purge-on-owner-exit");
        }
        let output = cmd
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(io_err(format!("running {}", script.display())))?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            return Err(Error::ClusterStart { status: output.status.to_string(), stderr });
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let var = |key: &str| {
            stdout.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).map(PathBuf::from)
        };
        let (Some(admin), Some(tenant)) = (var("TEST_KUBECONFIG"), var("TEST_TENANT_KUBECONFIG")) else {
            return Err(Error::ClusterStart { status: "no kubeconfig paths printed".into(), stderr });
        };
        tracing::info!(
            dir = %dir.display(),
            elapsed_ms = started.elapsed().as_millis(),
            "local kube-apiserver ready"
        );
        let tenant = Tenant { kubeconfig: tenant, subject: user_subject(TENANT_USER) };
        Ok(Self {
            inner: Arc::new(Inner {
                admin_kubeconfig: admin,
                tenant: OnceCell::new_with(Some(tenant)),
                scratch: dir.join("testkit"),
                owned: Some(owned),
            }),
        })
    }

    /// Use an existing cluster through its admin kubeconfig.
    pub fn external(admin_kubeconfig: PathBuf) -> Result<Self> {
        let tenant =
            std::env::var_os("TEST_TENANT_KUBECONFIG").filter(|v| !v.is_empty()).map(|path| Tenant {
                kubeconfig: PathBuf::from(path),
                subject: user_subject(
                    &std::env::var("TEST_TENANT_USER").unwrap_or_else(|_| TENANT_USER.into()),
                ),
            });
        // One directory per external cluster (keyed by its kubeconfig path), shared by test
        // processes and reused, so nothing accumulates.
        let mut hasher = std::hash::DefaultHasher::new();
        hasher.write(admin_kubeconfig.as_os_str().as_encoded_bytes());
        let scratch = std::env::temp_dir().join(format!("tenant-access-testkit-{:016x}", hasher.finish()));
        Ok(Self {
            inner: Arc::new(Inner {
                admin_kubeconfig,
                tenant: OnceCell::new_with(tenant),
                scratch,
                owned: None,
            }),
        })
    }

    /// Whether this is a private cluster started by this process.
    pub fn is_local(&self) -> bool {
        self.inner.owned.is_some()
    }

    /// The directory of a private cluster (logs in `logs/`).
    pub fn local_dir(&self) -> Option<&Path> {
        self.inner.owned.as_ref().map(|o| o.dir.as_path())
    }

    /// The admin kubeconfig (user `admin` in `system:masters` on a local cluster).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.inner.admin_kubeconfig
    }

    /// A new admin client.
    pub async fn client(&self) -> Result<Client> {
        client_from_kubeconfig(&self.inner.admin_kubeconfig).await
    }

    /// The kubeconfig of the unprivileged tenant user (provisioned on first use on an
    /// external cluster without `TEST_TENANT_KUBECONFIG`).
    pub async fn tenant_kubeconfig(&self) -> Result<PathBuf> {
        Ok(self.tenant().await?.kubeconfig.clone())
    }

    /// The RBAC subject of the tenant user, for RoleBindings in tests: the user `tenant-dev`
    /// on a local cluster, the ServiceAccount `tenant-access-testkit/tenant-dev` elsewhere.
    pub async fn tenant_subject(&self) -> Result<Subject> {
        Ok(self.tenant().await?.subject.clone())
    }

    /// A new client for the unprivileged tenant user.
    pub async fn tenant_client(&self) -> Result<Client> {
        client_from_kubeconfig(&self.tenant().await?.kubeconfig).await
    }

    async fn tenant(&self) -> Result<&Tenant> {
        self.inner.tenant.get_or_try_init(|| self.provision_service_account_tenant()).await
    }

    /// External cluster without a tenant kubeconfig: a ServiceAccount and a TokenRequest token.
    async fn provision_service_account_tenant(&self) -> Result<Tenant> {
        let manifest = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {TENANT_SA_NAMESPACE}\n  labels:\n    {TESTKIT_LABEL}: \"true\"\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {TENANT_USER}\n  namespace: {TENANT_SA_NAMESPACE}\n"
        );
        self.kubectl_with_stdin(["apply", "-f", "-"], &manifest).await?.ok()?;
        let token_out = self
            .kubectl(["create", "token", TENANT_USER, "-n", TENANT_SA_NAMESPACE, "--duration=24h"])
            .await?;
        if !token_out.success() {
            return Err(Error::Kubectl {
                args: format!("create token {TENANT_USER} -n {TENANT_SA_NAMESPACE}"),
                status: token_out.status.to_string(),
                stderr: token_out.stderr,
            });
        }
        let token = token_out.stdout.trim().to_owned();

        let path = &self.inner.admin_kubeconfig;
        let admin =
            Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig { path: path.clone(), source })?;
        let context_name = admin
            .current_context
            .clone()
            .or_else(|| admin.contexts.first().map(|c| c.name.clone()))
            .ok_or_else(|| Error::Other(format!("{}: no context", path.display())))?;
        let cluster_name = admin
            .contexts
            .iter()
            .find(|c| c.name == context_name)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .ok_or_else(|| Error::Other(format!("{}: context {context_name} not found", path.display())))?;
        let cluster =
            admin.clusters.iter().find(|c| c.name == cluster_name).ok_or_else(|| {
                Error::Other(format!("{}: cluster {cluster_name} not found", path.display()))
            })?;
        let cluster = serde_json::to_value(cluster)
            .map_err(|e| Error::Other(format!("serializing kubeconfig cluster: {e}")))?;
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [{"name": TENANT_USER, "user": {"token": token}}],
            "contexts": [{
                "name": TENANT_USER,
                "context": {"cluster": cluster_name, "user": TENANT_USER, "namespace": "default"},
            }],
            "current-context": TENANT_USER,
        });
        let file = self.inner.scratch.join("tenant-dev.kubeconfig");
        write_private_file(&file, kubeconfig.to_string().as_bytes()).await?;
        Ok(Tenant {
            kubeconfig: file,
            subject: Subject {
                api_group: None,
                kind: "ServiceAccount".into(),
                name: TENANT_USER.into(),
                namespace: Some(TENANT_SA_NAMESPACE.into()),
            },
        })
    }

    /// A `kubectl` command preset with the admin kubeconfig (stdin null, output piped).
    pub fn kubectl_command(&self) -> tokio::process::Command {
        kubectl_command_for(&self.inner.admin_kubeconfig)
    }

    /// Run kubectl as admin. Non-zero exit is not an error: check the output.
    pub async fn kubectl<I, S>(&self, args: I) -> Result<KubectlOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_kubectl(&self.inner.admin_kubeconfig, args, None).await
    }

    /// Run kubectl as admin with `stdin` as standard input (e.g. `apply -f -`).
    pub async fn kubectl_with_stdin<I, S>(&self, args: I, stdin: &str) -> Result<KubectlOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_kubectl(&self.inner.admin_kubeconfig, args, Some(stdin)).await
    }

    /// Run kubectl as the unprivileged tenant user.
    pub async fn tenant_kubectl<I, S>(&self, args: I) -> Result<KubectlOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let kubeconfig = self.tenant_kubeconfig().await?;
        run_kubectl(&kubeconfig, args, None).await
    }

    /// Run kubectl as the tenant user with `stdin` as standard input.
    pub async fn tenant_kubectl_with_stdin<I, S>(&self, args: I, stdin: &str) -> Result<KubectlOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let kubeconfig = self.tenant_kubeconfig().await?;
        run_kubectl(&kubeconfig, args, Some(stdin)).await
    }

    /// `kubectl apply -f FILE` (a file or directory, multi-document YAML allowed), optionally
    /// with `-n NAMESPACE`. Fails with kubectl's stderr when kubectl fails.
    pub async fn apply_file(&self, path: impl AsRef<Path>, namespace: Option<&str>) -> Result<KubectlOutput> {
        let mut args: Vec<OsString> = vec!["apply".into(), "-f".into(), path.as_ref().into()];
        if let Some(ns) = namespace {
            args.push("-n".into());
            args.push(ns.into());
        }
        self.kubectl(args).await?.ok()
    }

    /// `kubectl apply -f -` with `yaml` (multi-document allowed). Fails when kubectl fails.
    pub async fn apply_yaml(&self, yaml: &str, namespace: Option<&str>) -> Result<KubectlOutput> {
        let mut args = vec!["apply", "-f", "-"];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        self.kubectl_with_stdin(args, yaml).await?.ok()
    }

    /// Apply every CRD in `<repo>/crds/` and wait until each is Established.
    /// Returns the CRD names.
    pub async fn apply_crds(&self) -> Result<Vec<String>> {
        self.apply_crds_from(&crds_dir(), DEFAULT_TIMEOUT).await
    }

    /// Apply the CRD manifests in `dir` with `kubectl apply` and wait until each is
    /// Established, at most `timeout` per CRD.
    ///
    /// Two concessions to old servers such as the local 1.20 one, which does not know
    /// `x-kubernetes-validations` (CEL rules, 1.23+): kubectl's client-side validation is off
    /// (`--validate=false`; without server-side field validation kubectl would check the CRD
    /// against the server's old OpenAPI and refuse it), and the apply is client-side (1.20's
    /// server-side apply refuses fields its typed schema lacks, while a plain create/patch
    /// drops them). Concurrent test processes applying the same CRDs may race (`AlreadyExists`,
    /// conflicts): those attempts are retried.
    pub async fn apply_crds_from(&self, dir: &Path, timeout: Duration) -> Result<Vec<String>> {
        let args: Vec<OsString> = vec![
            "apply".into(),
            "--validate=false".into(),
            "-o".into(),
            "name".into(),
            "-f".into(),
            dir.into(),
        ];
        let mut attempt = 0;
        let out = loop {
            attempt += 1;
            let out = self.kubectl(&args).await?;
            let racing = ["AlreadyExists", "already exists", "the object has been modified", "Conflict"]
                .iter()
                .any(|m| out.stderr.contains(m));
            if out.success() || !racing || attempt >= 5 {
                break out.ok()?;
            }
            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
        };
        let names: Vec<String> = out
            .stdout
            .lines()
            .filter_map(|l| {
                let (kind, name) = l.trim().split_once('/')?;
                kind.starts_with("customresourcedefinition").then(|| name.to_owned())
            })
            .collect();
        if names.is_empty() {
            return Err(Error::Other(format!("no CustomResourceDefinition applied from {}", dir.display())));
        }
        let client = self.client().await?;
        for name in &names {
            wait_crd_established(client.clone(), name, timeout).await?;
        }
        Ok(names)
    }

    /// Create a namespace `prefix-<random>`; it is deleted when the returned value is dropped
    /// (or explicitly with [`TestNamespace::delete`]).
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace> {
        let name = unique_name(prefix);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TESTKIT_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let api: Api<Namespace> = Api::all(self.client().await?);
        api.create(&PostParams::default(), &ns).await?;
        Ok(TestNamespace { name, cluster: self.clone(), deleted: false })
    }
}

/// Wait until the CRD `name` is Established.
pub async fn wait_crd_established(client: Client, name: &str, timeout: Duration) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    wait_for(api, name, conditions::is_crd_established(), timeout).await?;
    Ok(())
}

fn user_subject(name: &str) -> Subject {
    Subject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "User".into(),
        name: name.into(),
        namespace: None,
    }
}

/// Write a file only the current user can read, atomically (temp file + rename), so concurrent
/// test processes never see a partial file.
async fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    let writing = || format!("writing {}", path.display());
    if let Some(parent) = path.parent() {
        let mut builder = tokio::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(parent).await.map_err(io_err(format!("creating {}", parent.display())))?;
    }
    let tmp = path.with_extension(format!("tmp.{}.{}", std::process::id(), random_suffix(6)));
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    let mut file = options.open(&tmp).await.map_err(io_err(writing()))?;
    file.write_all(contents).await.map_err(io_err(writing()))?;
    file.flush().await.map_err(io_err(writing()))?;
    drop(file);
    tokio::fs::rename(&tmp, path).await.map_err(io_err(writing()))
}

fn kubectl_command_for(kubeconfig: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(kubectl_binary());
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn run_kubectl<I, S>(kubeconfig: &Path, args: I, stdin: Option<&str>) -> Result<KubectlOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let shown: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut cmd = kubectl_command_for(kubeconfig);
    cmd.args(&args);
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let context = || format!("running kubectl {}", shown.join(" "));
    let mut child = cmd.spawn().map_err(io_err(context()))?;
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        // Write concurrently with reading the output, so big inputs cannot deadlock.
        let input = input.to_owned();
        tokio::spawn(async move {
            let _ = pipe.write_all(input.as_bytes()).await;
            let _ = pipe.shutdown().await;
        });
    }
    let output = child.wait_with_output().await.map_err(io_err(context()))?;
    Ok(KubectlOutput {
        args: shown,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// A namespace created for one test; deleted on drop (without waiting: a local cluster has no
/// controller-manager, so the namespace stays Terminating until the cluster goes away).
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    cluster: TestCluster,
    deleted: bool,
}

impl TestNamespace {
    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster it lives in.
    pub fn cluster(&self) -> &TestCluster {
        &self.cluster
    }

    /// Delete the namespace now (does not wait for it to be gone).
    pub async fn delete(mut self) -> Result<()> {
        self.deleted = true;
        let api: Api<Namespace> = Api::all(self.cluster.client().await?);
        match api.delete(&self.name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl fmt::Display for TestNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl AsRef<str> for TestNamespace {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        // Synchronous and quick: works during a panic and outside any runtime.
        let _ = std::process::Command::new(kubectl_binary())
            .arg("--kubeconfig")
            .arg(self.cluster.admin_kubeconfig())
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
                "--request-timeout=10s",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_dns_labels() {
        let a = unique_name("My_Test.Case");
        let b = unique_name("My_Test.Case");
        assert_ne!(a, b);
        assert!(a.starts_with("my-test-case-"), "{a}");
        assert!(a.len() <= 63);
        assert!(a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        let long = unique_name(&"x".repeat(100));
        assert!(long.len() <= 63, "{long}");
        assert!(unique_name("--").starts_with("test-"));
    }

    #[test]
    fn random_suffix_has_requested_length() {
        assert_eq!(random_suffix(0).len(), 0);
        assert_eq!(random_suffix(6).len(), 6);
        assert_eq!(random_suffix(40).len(), 40);
    }

    #[test]
    fn repo_root_holds_the_hack_scripts() {
        assert!(repo_root().join("hack/cluster.sh").is_file());
        assert!(repo_root().join("Cargo.toml").is_file());
    }
}
