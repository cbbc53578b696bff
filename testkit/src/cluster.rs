//! [`TestCluster`]: a private etcd + kube-apiserver on loopback, or an existing cluster, with
//! an admin and an unprivileged tenant identity.

use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use k8s_openapi::api::rbac::v1::Subject;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;

use crate::error::io_err;
use crate::names::random_suffix;
use crate::paths::repo_root;
use crate::{Error, Result, TENANT_SA_NAMESPACE, TENANT_USER, TESTKIT_LABEL};

/// Build a client from a kubeconfig file (its current context).
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)
        .map_err(|source| Error::Kubeconfig { path: path.to_path_buf(), source })?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig { path: path.to_path_buf(), source })?;
    Ok(Client::try_from(config)?)
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
