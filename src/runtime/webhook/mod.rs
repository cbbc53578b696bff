//! The validating admission webhook: every replica serves it (not only the leader), over TLS,
//! on its own port. It refuses at apply time what the reconciler would refuse, with the same
//! message ([`review`]); its certificate is the operator's own ([`rotation`]: a CA and a
//! serving certificate kept in a Secret, rotated before expiry, the configuration's `caBundle`
//! kept current) or one mounted from files (cert-manager), reloaded without a restart.

pub mod certs;
pub mod review;
pub mod rotation;
pub mod server;
pub mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;

use crate::api::{ClusterTinybirdWorkspace, TinybirdWorkspace, WorkspaceSpec};
use crate::core::validate::WorkspaceKind;
pub use review::{AdmissionFacts, MAX_REVIEW_BYTES, StaticFacts};

/// The path the API server posts reviews to.
pub const PATH: &str = "/validate";

/// How long reading one fact (a workspace, a namespace) may take: well within the
/// configuration's timeoutSeconds; past it, the object is allowed with a warning.
pub const FACT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    /// `tls.crt` and `tls.key` in this directory (e.g. a cert-manager Secret mounted), read
    /// again when they change.
    Files(PathBuf),
    /// The operator's own CA and certificate, in a Secret.
    Managed(rotation::Managed),
}

/// How the webhook runs.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Address to listen on (HTTPS).
    pub address: SocketAddr,
    /// The serving certificate.
    pub certificate: CertificateSource,
    /// The namespaces served (`None`: all).
    pub namespaces: Option<BTreeSet<String>>,
    /// Whether the operator serves every namespace (reads namespace labels, may use
    /// ClusterTinybirdWorkspaces); false for a one-namespace install.
    pub cluster_wide: bool,
    /// A PEM file of the CAs that sign the API server's webhook client certificate: when set,
    /// only a client presenting such a certificate is served (nothing else can send a review).
    pub client_ca: Option<PathBuf>,
}

/// Why the webhook cannot run.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The address cannot be bound.
    #[error("webhook address {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate cannot be loaded or made.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// The facts admission reads, from the API server (every replica can, leader or not).
#[derive(Clone)]
pub struct ApiFacts {
    client: kube::Client,
    namespaces: Option<BTreeSet<String>>,
    cluster_wide: bool,
}

impl std::fmt::Debug for ApiFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiFacts").field("cluster_wide", &self.cluster_wide).finish_non_exhaustive()
    }
}

impl ApiFacts {
    /// Facts read with `client`, for the namespaces of `config`.
    #[must_use]
    pub fn new(client: kube::Client, config: &WebhookConfig) -> Self {
        Self { client, namespaces: config.namespaces.clone(), cluster_wide: config.cluster_wide }
    }
}

/// `read` within [`FACT_TIMEOUT`], its error as one line.
async fn bounded<T>(what: String, read: impl Future<Output = Result<T, kube::Error>>) -> Result<T, String> {
    match tokio::time::timeout(FACT_TIMEOUT, read).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("reading {what}: {error}")),
        Err(_) => Err(format!("reading {what} took longer than {}s", FACT_TIMEOUT.as_secs())),
    }
}

impl AdmissionFacts for ApiFacts {
    fn serves(&self, namespace: &str) -> bool {
        self.namespaces.as_ref().is_none_or(|set| set.contains(namespace))
    }

    fn uses_cluster_workspaces(&self) -> bool {
        self.cluster_wide
    }

    fn workspace<'a>(
        &'a self,
        kind: WorkspaceKind,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<WorkspaceSpec>, String>> {
        async move {
            match kind {
                WorkspaceKind::Namespaced => {
                    let api: Api<TinybirdWorkspace> = Api::namespaced(self.client.clone(), namespace);
                    let what = format!("TinybirdWorkspace {namespace}/{name}");
                    Ok(bounded(what, api.get_opt(name)).await?.map(|w| w.spec.workspace))
                }
                WorkspaceKind::Cluster if !self.cluster_wide => Err(format!(
                    "this operator is installed for one namespace and cannot use ClusterTinybirdWorkspace {name}: use a TinybirdWorkspace in {namespace}, or install the operator cluster-wide"
                )),
                WorkspaceKind::Cluster => {
                    let api: Api<ClusterTinybirdWorkspace> = Api::all(self.client.clone());
                    let what = format!("ClusterTinybirdWorkspace {name}");
                    Ok(bounded(what, api.get_opt(name)).await?.map(|w| w.spec.workspace))
                }
            }
        }
        .boxed()
    }

    fn namespace_labels<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Option<BTreeMap<String, String>>, String>> {
        async move {
            if !self.cluster_wide {
                return Ok(None);
            }
            let api: Api<Namespace> = Api::all(self.client.clone());
            let found = bounded(format!("namespace {namespace}"), api.get_metadata_opt(namespace)).await?;
            Ok(Some(found.and_then(|n| n.metadata.labels).unwrap_or_default()))
        }
        .boxed()
    }
}

/// Serves the webhook until `shutdown` resolves: loads (or makes) the certificate, keeps it
/// current, and answers reviews on `config.address`.
///
/// # Errors
/// When the address cannot be bound or the certificate files cannot be read.
pub async fn serve(
    client: kube::Client,
    config: WebhookConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WebhookError> {
    let listener = tokio::net::TcpListener::bind(config.address)
        .await
        .map_err(|source| WebhookError::Bind { address: config.address, source })?;
    serve_on(listener, client, config, shutdown).await
}

/// [`serve`] on a listener already bound (`config.address` is not used).
///
/// # Errors
/// When the certificate files cannot be read.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    client: kube::Client,
    config: WebhookConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WebhookError> {
    let address = listener.local_addr().unwrap_or(config.address);
    let serving = Arc::new(tls::ServingCert::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    match &config.certificate {
        CertificateSource::Files(dir) => {
            tls::load_files(&serving, dir).await?;
            tokio::spawn(tls::reload_files(serving.clone(), dir.clone(), stopped()));
        }
        CertificateSource::Managed(managed) => {
            let keeper = rotation::Keeper::new(client.clone(), managed.clone(), serving.clone());
            // The first certificate before the port opens; then kept current.
            keeper.first(stopped()).await;
            tokio::spawn(keeper.run(stopped()));
        }
    }
    let clients = match &config.client_ca {
        None => None,
        Some(path) => {
            let pem = tokio::fs::read(path)
                .await
                .map_err(|source| tls::TlsError::Read { path: path.display().to_string(), source })?;
            Some(tls::client_roots(&pem)?)
        }
    };
    tracing::info!(%address, client_certificates = clients.is_some(), "admission webhook listening ({PATH})");
    let facts: Arc<dyn AdmissionFacts> = Arc::new(ApiFacts::new(client, &config));
    let served = server::serve(listener, serving, facts, server::Bounds::default(), clients, shutdown).await;
    let _ = stop_tx.send(true);
    served.map_err(|source| WebhookError::Bind { address, source })
}

/// Answers reviews over TLS on `listener` with the certificate `serving` holds (swapped while
/// serving) and `facts`, until `shutdown`, within the default [`server::Bounds`].
///
/// # Errors
/// When rustls refuses the configuration.
pub async fn serve_reviews(
    listener: tokio::net::TcpListener,
    serving: Arc<tls::ServingCert>,
    facts: Arc<dyn AdmissionFacts>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, serving, facts, server::Bounds::default(), None, shutdown).await
}

#[cfg(test)]
mod tests;
