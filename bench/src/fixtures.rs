//! The objects a benchmark needs, created fast: the cluster, the Tinybird emulator, a
//! ClusterTinybirdWorkspace, tenant namespaces, TenantAccess resources (concurrent server-side
//! applies from an unthrottled client) and unrelated Secrets.

use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde_json::json;
use tenant_access::api::{ClusterTinybirdWorkspace, KIND_CLUSTER_WORKSPACE, TenantAccess};
use tenant_access::core::well_known::ANNOTATION_ALLOWED_WORKSPACES;
use tenant_access_emulators::{TinybirdConfig, TinybirdEmulator};
use tenant_access_testkit::TestCluster;

use crate::error::{BenchError, Result};

/// Field manager of the harness's own writes.
pub const BENCH_MANAGER: &str = "tenant-access-bench";
/// Label on every TenantAccess (and, through `spec.secret.labels`, every token Secret) of a
/// group of tenants created together.
pub const GROUP_LABEL: &str = "bench.tenantaccess.dev/group";
/// Namespace label admitted by the benchmark's ClusterTinybirdWorkspace.
pub const TENANTS_LABEL: &str = "bench.tenantaccess.dev/tenants";
/// Key of the admin token in its Secret.
const ADMIN_TOKEN_KEY: &str = "token";
/// Attempts per apply (429, 5xx, conflicts and timeouts are retried).
const APPLY_ATTEMPTS: u32 = 5;

/// A cluster with the CRDs, the Tinybird emulator and a ClusterTinybirdWorkspace pointing at it.
#[allow(missing_debug_implementations)]
pub struct BenchEnv {
    /// The API server.
    pub cluster: TestCluster,
    /// Unthrottled admin client of the harness.
    pub client: Client,
    /// The Tinybird emulator, in this process.
    pub tinybird: TinybirdEmulator,
    /// Prefix of every name this run creates.
    pub prefix: String,
    /// The operator's own namespace (`--cluster-resource-namespace`), holding the admin token.
    pub system_namespace: String,
    /// The ClusterTinybirdWorkspace every tenant uses.
    pub workspace: String,
    /// The admin-token Secret (in `system_namespace`).
    pub admin_secret: String,
    /// Every namespace created, for clean-up.
    pub created_namespaces: Vec<String>,
}

/// One TenantAccess to create.
#[derive(Debug, Clone)]
pub struct TenantRef {
    /// Namespace.
    pub namespace: String,
    /// Name (also the Secret's name).
    pub name: String,
}

impl BenchEnv {
    /// Starts (or reuses, with `TEST_KUBECONFIG`) the API server, applies the CRDs, starts the
    /// emulator and creates the workspace.
    ///
    /// # Errors
    /// Any step failing.
    pub async fn setup() -> Result<Self> {
        let cluster = TestCluster::start().await?;
        cluster.apply_crds().await?;
        let client = cluster.client().await?;
        let tinybird = TinybirdEmulator::start(TinybirdConfig::default())
            .await
            .map_err(|e| BenchError::Emulator(e.to_string()))?;
        let prefix = tenant_access_testkit::unique_name("bench");
        let mut env = Self {
            cluster,
            client,
            tinybird,
            system_namespace: format!("{prefix}-system"),
            workspace: prefix.clone(),
            admin_secret: "tinybird-admin".into(),
            prefix,
            created_namespaces: Vec::new(),
        };
        let system = env.system_namespace.clone();
        env.create_namespace(&system, false).await?;
        env.put_admin_token(&env.tinybird.admin_token()).await?;
        let workspace = json!({
            "apiVersion": "tenantaccess.dev/v1alpha1",
            "kind": "ClusterTinybirdWorkspace",
            "metadata": {"name": env.workspace},
            "spec": {
                "adminTokenSecretRef": {"name": env.admin_secret, "key": ADMIN_TOKEN_KEY},
                "apiUrl": env.tinybird.base_url(),
                "policy": {"allowedNamespaces": {"matchLabels": {TENANTS_LABEL: env.prefix}}},
            },
        });
        let api: Api<ClusterTinybirdWorkspace> = Api::all(env.client.clone());
        api.patch(&env.workspace, &PatchParams::apply(BENCH_MANAGER).force(), &Patch::Apply(&workspace))
            .await
            .map_err(BenchError::kube("creating the ClusterTinybirdWorkspace"))?;
        Ok(env)
    }

    /// Writes the admin token into the workspace's Secret (creation and rotation), allowing the
    /// ClusterTinybirdWorkspace to use it.
    ///
    /// # Errors
    /// The write failed.
    pub async fn put_admin_token(&self, token: &str) -> Result<()> {
        let allowed = format!("{KIND_CLUSTER_WORKSPACE}/{}", self.workspace);
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": self.admin_secret, "annotations": {ANNOTATION_ALLOWED_WORKSPACES: allowed}},
            "stringData": {ADMIN_TOKEN_KEY: token},
        });
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.system_namespace);
        api.patch(&self.admin_secret, &PatchParams::apply(BENCH_MANAGER).force(), &Patch::Apply(&secret))
            .await
            .map_err(BenchError::kube("writing the admin-token Secret"))?;
        Ok(())
    }

    /// Creates a namespace (admitted by the workspace when `tenants`).
    ///
    /// # Errors
    /// The write failed.
    pub async fn create_namespace(&mut self, name: &str, tenants: bool) -> Result<()> {
        let mut labels = serde_json::Map::new();
        labels.insert(tenant_access_testkit::TESTKIT_LABEL.into(), json!("true"));
        if tenants {
            labels.insert(TENANTS_LABEL.into(), json!(self.prefix));
        }
        let namespace = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        });
        let api: Api<Namespace> = Api::all(self.client.clone());
        api.patch(name, &PatchParams::apply(BENCH_MANAGER).force(), &Patch::Apply(&namespace))
            .await
            .map_err(BenchError::kube(format!("creating namespace {name}")))?;
        self.created_namespaces.push(name.to_owned());
        Ok(())
    }

    /// Creates `count` tenant namespaces `<prefix>-<group>-<i>`.
    ///
    /// # Errors
    /// A write failed.
    pub async fn tenant_namespaces(&mut self, group: &str, count: usize) -> Result<Vec<String>> {
        let mut names = Vec::with_capacity(count);
        for i in 0..count.max(1) {
            let name = format!("{}-{group}-{i}", self.prefix);
            self.create_namespace(&name, true).await?;
            names.push(name);
        }
        Ok(names)
    }

    /// `count` tenants spread round-robin over `namespaces`.
    #[must_use]
    pub fn tenants(namespaces: &[String], count: usize) -> Vec<TenantRef> {
        (0..count)
            .filter_map(|i| {
                let namespace = namespaces.get(i % namespaces.len().max(1))?.clone();
                Some(TenantRef { namespace, name: format!("t-{i:05}") })
            })
            .collect()
    }

    /// A TenantAccess manifest: one scope on the demo pipe `top_pages` pinned to the tenant's
    /// org, a token Secret labelled with the group, health checks every `health_interval` (the
    /// default, 5m, when None).
    #[must_use]
    pub fn tenant_manifest(
        &self,
        tenant: &TenantRef,
        group: &str,
        health_interval: Option<&str>,
    ) -> serde_json::Value {
        let mut spec = json!({
            "workspaceRef": {"kind": "ClusterTinybirdWorkspace", "name": self.workspace},
            "scopes": [{"resource": "top_pages", "fixedParams": {"org": tenant.name}}],
            "limits": {"rps": 10},
            "secret": {"labels": {GROUP_LABEL: group}},
        });
        if let (Some(interval), Some(object)) = (health_interval, spec.as_object_mut()) {
            object.insert("healthCheck".into(), json!({"interval": interval}));
        }
        json!({
            "apiVersion": "tenantaccess.dev/v1alpha1",
            "kind": "TenantAccess",
            "metadata": {"name": tenant.name, "namespace": tenant.namespace, "labels": {GROUP_LABEL: group}},
            "spec": spec,
        })
    }

    /// Applies the TenantAccess of every tenant, `concurrency` at a time. Returns the time taken.
    ///
    /// # Errors
    /// An apply failed after its retries.
    pub async fn apply_tenants(
        &self,
        tenants: &[TenantRef],
        group: &str,
        health_interval: Option<&str>,
        concurrency: usize,
    ) -> Result<Duration> {
        let objects = tenants
            .iter()
            .map(|t| (t.namespace.clone(), t.name.clone(), self.tenant_manifest(t, group, health_interval)))
            .collect();
        apply_many::<TenantAccess>(&self.client, objects, concurrency).await
    }

    /// Creates `count` Secrets of `bytes` bytes each, unrelated to the operator (no label it
    /// selects, referenced by nothing), spread over `namespaces`.
    ///
    /// # Errors
    /// An apply failed after its retries.
    pub async fn create_unrelated_secrets(
        &self,
        namespaces: &[String],
        count: usize,
        bytes: usize,
        concurrency: usize,
    ) -> Result<Duration> {
        // Incompressible-looking content, so no layer can shrink it: the Secret is what a
        // real certificate bundle or credentials file would weigh.
        let payload: String =
            (0..bytes).map(|i| char::from(b'a' + u8::try_from((i * 7 + i / 26) % 26).unwrap_or(0))).collect();
        let objects = (0..count)
            .filter_map(|i| {
                let namespace = namespaces.get(i % namespaces.len().max(1))?.clone();
                let name = format!("unrelated-{i:05}");
                let secret = json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": name, "namespace": namespace, "labels": {"app": "unrelated"}},
                    "stringData": {"payload": payload},
                });
                Some((namespace, name, secret))
            })
            .collect();
        apply_many::<Secret>(&self.client, objects, concurrency).await
    }

    /// Deletes a group's TenantAccess resources and token Secrets (there is no garbage
    /// collector on the local API server, and namespaces never finish terminating there).
    ///
    /// # Errors
    /// A delete failed.
    pub async fn delete_group(&self, namespaces: &[String], group: &str) -> Result<()> {
        let selector = ListParams::default().labels(&format!("{GROUP_LABEL}={group}"));
        for namespace in namespaces {
            let accesses: Api<TenantAccess> = Api::namespaced(self.client.clone(), namespace);
            accesses
                .delete_collection(&DeleteParams::background(), &selector)
                .await
                .map_err(BenchError::kube(format!("deleting TenantAccess resources in {namespace}")))?;
            let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            secrets
                .delete_collection(&DeleteParams::background(), &selector)
                .await
                .map_err(BenchError::kube(format!("deleting token Secrets in {namespace}")))?;
        }
        Ok(())
    }

    /// Deletes every Secret in these namespaces (the unrelated ones).
    ///
    /// # Errors
    /// A delete failed.
    pub async fn delete_all_secrets(&self, namespaces: &[String]) -> Result<()> {
        for namespace in namespaces {
            let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            secrets
                .delete_collection(
                    &DeleteParams::background(),
                    &ListParams::default().labels("app=unrelated"),
                )
                .await
                .map_err(BenchError::kube(format!("deleting Secrets in {namespace}")))?;
        }
        Ok(())
    }

    /// Best-effort removal of everything this run created.
    pub async fn cleanup(&self) {
        let workspaces: Api<ClusterTinybirdWorkspace> = Api::all(self.client.clone());
        let _ = workspaces.delete(&self.workspace, &DeleteParams::background()).await;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        for name in &self.created_namespaces {
            let _ = namespaces.delete(name, &DeleteParams::background()).await;
        }
    }
}

/// Server-side applies `(namespace, name, object)` triples, `concurrency` at a time, from an
/// unthrottled client; retries 429, 409, 5xx and transport errors.
pub(crate) async fn apply_many<K>(
    client: &Client,
    objects: Vec<(String, String, serde_json::Value)>,
    concurrency: usize,
) -> Result<Duration>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let started = Instant::now();
    let params = PatchParams::apply(BENCH_MANAGER).force();
    futures::stream::iter(objects)
        .map(|(namespace, name, object)| {
            let api: Api<K> = Api::namespaced(client.clone(), &namespace);
            let params = params.clone();
            async move {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match api.patch(&name, &params, &Patch::Apply(&object)).await {
                        Ok(_) => return Ok(()),
                        Err(error) if attempt < APPLY_ATTEMPTS && retryable(&error) => {
                            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                        }
                        Err(error) => {
                            return Err(BenchError::Kube {
                                action: format!("applying {namespace}/{name}"),
                                source: error,
                            });
                        }
                    }
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed())
}

fn retryable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 409 || status.code == 429 || status.code >= 500,
        _ => true,
    }
}
