//! Keeps the webhook's own certificate current on every replica: reads the Secret (creating it
//! when absent: the first replica wins, the others read what it wrote), renews what is due
//! (writes guarded by the resourceVersion: one replica renews, the others read its renewal),
//! writes the `caBundle` into the ValidatingWebhookConfiguration, then serves the certificate.
//! Looks again when the Secret or the configuration changes (a `helm upgrade` resetting the
//! bundle, a deleted Secret) and when the next renewal is due.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};

use super::certs::{Material, Renewal, Validity, renew};
use super::tls::ServingCert;

/// The label of the certificate Secret.
pub const COMPONENT: &str = "webhook-certificate";
/// Longest wait between two looks when nothing changes.
const CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// Wait after a failed look (API down, no rights yet).
const RETRY: Duration = Duration::from_secs(5);

/// Where the operator keeps its own webhook certificate.
#[derive(Debug, Clone)]
pub struct Managed {
    /// Namespace of the Secret (the operator's own).
    pub namespace: String,
    /// Name of the Secret.
    pub secret_name: String,
    /// The ValidatingWebhookConfiguration whose `caBundle` is kept current (`None`: none).
    pub configuration_name: Option<String>,
    /// The names the serving certificate is valid for (the Service's DNS names, IPs).
    pub hosts: Vec<String>,
    /// How long certificates are valid.
    pub validity: Validity,
}

/// Why one look failed (retried).
#[derive(Debug, thiserror::Error)]
enum LookError {
    #[error("the webhook certificate Secret {0}: {1}")]
    Secret(String, kube::Error),
    #[error("ValidatingWebhookConfiguration {0}: {1}")]
    Configuration(String, kube::Error),
    #[error(transparent)]
    Cert(#[from] super::certs::CertError),
    #[error(transparent)]
    Tls(#[from] super::tls::TlsError),
}

/// What a look found.
enum Looked {
    /// Served and published; look again at this time.
    Current(Timestamp),
    /// Another replica wrote first: read again at once.
    Raced,
}

/// Keeps the certificate of one replica current.
#[derive(Clone)]
pub struct Keeper {
    client: Client,
    managed: Managed,
    serving: Arc<ServingCert>,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper").field("managed", &self.managed).finish_non_exhaustive()
    }
}

impl Keeper {
    /// A keeper serving into `serving`.
    #[must_use]
    pub fn new(client: Client, managed: Managed, serving: Arc<ServingCert>) -> Self {
        Self { client, managed, serving }
    }

    /// Looks until a certificate is served (or `stop`).
    pub async fn first(&self, stop: impl Future<Output = ()>) {
        let until_served = async {
            loop {
                match self.look().await {
                    Ok(Looked::Current(_)) => return,
                    Ok(Looked::Raced) => {}
                    Err(error) => {
                        tracing::warn!(%error, "webhook certificate not ready; retrying");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        };
        tokio::select! {
            () = until_served => {},
            () = stop => {},
        }
    }

    /// Keeps the certificate current until `stop`.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.managed.namespace);
        let by_name = |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
        let secret_changes =
            watcher(secrets, by_name(&self.managed.secret_name)).default_backoff().map(|_| ()).boxed();
        let changes = match &self.managed.configuration_name {
            Some(name) => {
                let configurations: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
                let configuration_changes =
                    watcher(configurations, by_name(name)).default_backoff().map(|_| ());
                futures::stream::select(secret_changes, configuration_changes.boxed()).boxed()
            }
            None => secret_changes,
        };
        let keep = async {
            let mut changes = changes;
            loop {
                let wait = match self.look().await {
                    Ok(Looked::Current(next)) => Duration::try_from(next.duration_since(Timestamp::now()))
                        .unwrap_or_default()
                        .min(CHECK_INTERVAL),
                    Ok(Looked::Raced) => Duration::ZERO,
                    Err(error) => {
                        tracing::warn!(%error, "webhook certificate not checked; retrying");
                        RETRY
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {},
                    changed = changes.next() => if changed.is_none() {
                        tokio::time::sleep(wait).await;
                    },
                }
            }
        };
        tokio::select! {
            () = keep => {},
            () = stop => {},
        }
    }

    /// One look: read, renew what is due, publish the bundle, serve.
    async fn look(&self) -> Result<Looked, LookError> {
        let Managed { namespace, secret_name, hosts, validity, .. } = &self.managed;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret_error = |e| LookError::Secret(format!("{namespace}/{secret_name}"), e);
        let stored = secrets.get_opt(secret_name).await.map_err(secret_error)?;
        let now = Timestamp::now();
        let current = stored.as_ref().and_then(stored_material);
        let due = current.as_ref().map_or(Renewal::All, |c| c.due(hosts, now, *validity));
        let material = match (due, current) {
            (Renewal::None, Some(current)) => current,
            (due, current) => {
                let renewed = renew(current.as_ref(), due, hosts, now, *validity)?;
                let secret = self.secret(&renewed, stored.as_ref());
                let written = match &stored {
                    None => secrets.create(&PostParams::default(), &secret).await.map(|_| ()),
                    Some(_) => {
                        secrets.replace(secret_name, &PostParams::default(), &secret).await.map(|_| ())
                    }
                };
                match written {
                    Ok(()) => tracing::info!(
                        renewed = ?due, ca_expires = %renewed.ca_not_after, expires = %renewed.cert_not_after,
                        "webhook certificate written to Secret {namespace}/{secret_name}"
                    ),
                    // Another replica created or renewed it first: use what it wrote.
                    Err(kube::Error::Api(status)) if status.code == 409 => return Ok(Looked::Raced),
                    Err(error) => return Err(secret_error(error)),
                }
                renewed
            }
        };
        // The bundle first: the API server trusts the CA before any replica serves from it.
        if let Some(name) = &self.managed.configuration_name {
            self.publish_bundle(name, &material.ca_bundle(now)).await?;
        }
        if self.serving.load(material.cert.as_bytes(), material.key.as_bytes())? {
            tracing::info!(expires = %material.cert_not_after, "webhook serving certificate loaded");
        }
        Ok(Looked::Current(material.next_renewal(*validity)))
    }

    /// The Secret holding `material` (with the resourceVersion read, so that a concurrent
    /// renewal conflicts).
    fn secret(&self, material: &Material, stored: Option<&Secret>) -> Secret {
        let (data, annotations) = material.to_secret();
        Secret {
            metadata: ObjectMeta {
                name: Some(self.managed.secret_name.clone()),
                namespace: Some(self.managed.namespace.clone()),
                resource_version: stored.and_then(|s| s.metadata.resource_version.clone()),
                labels: Some([("app.kubernetes.io/component".to_owned(), COMPONENT.to_owned())].into()),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
            type_: Some("Opaque".to_owned()),
            ..Secret::default()
        }
    }

    /// Writes `bundle` as the `caBundle` of every webhook of the configuration, unless it is
    /// there already. A configuration that does not exist (yet) is left to the next look.
    async fn publish_bundle(&self, name: &str, bundle: &str) -> Result<(), LookError> {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        let error = |e| LookError::Configuration(name.to_owned(), e);
        let Some(mut configuration) = api.get_opt(name).await.map_err(error)? else {
            tracing::debug!(
                configuration = name,
                "ValidatingWebhookConfiguration not found: no caBundle written"
            );
            return Ok(());
        };
        let bundle = ByteString(bundle.as_bytes().to_vec());
        let mut changed = false;
        for webhook in configuration.webhooks.iter_mut().flatten() {
            if webhook.client_config.ca_bundle.as_ref() != Some(&bundle) {
                webhook.client_config.ca_bundle = Some(bundle.clone());
                changed = true;
            }
        }
        if changed {
            match api.replace(name, &PostParams::default(), &configuration).await {
                Ok(_) => tracing::info!(configuration = name, "webhook caBundle updated"),
                // Another replica wrote it meanwhile; the watch brings the next look.
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(e) => return Err(error(e)),
            }
        }
        Ok(())
    }
}

/// The material of a stored Secret, if complete.
fn stored_material(secret: &Secret) -> Option<Material> {
    let data = secret.data.as_ref()?.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    Material::from_secret(&data, secret.metadata.annotations.as_ref()?)
}
