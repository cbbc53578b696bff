//! `tenant-access run`'s webhook flags.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::CliError;
use crate::adapters::kube_client::RateLimit;
use crate::runtime::webhook::rotation::Managed;
use crate::runtime::webhook::{CertificateSource, WebhookConfig};

#[derive(Debug, clap::Args)]
pub(super) struct WebhookArgs {
    /// Address of the validating admission webhook (HTTPS), e.g. 0.0.0.0:9443; empty: no webhook.
    /// Every replica serves it, leader or not.
    #[arg(long = "webhook-address", env = "TENANT_ACCESS_WEBHOOK_ADDRESS", default_value = "")]
    webhook_address: String,
    /// Directory holding tls.crt and tls.key (e.g. a cert-manager certificate mounted), served
    /// and read again when they change; without it the operator makes and rotates its own.
    #[arg(long = "webhook-cert-dir", env = "TENANT_ACCESS_WEBHOOK_CERT_DIR")]
    webhook_cert_dir: Option<PathBuf>,
    /// Secret holding the operator's own webhook CA and certificate.
    #[arg(
        long = "webhook-secret-name",
        env = "TENANT_ACCESS_WEBHOOK_SECRET_NAME",
        default_value = "tenant-access-operator-webhook-tls"
    )]
    webhook_secret_name: String,
    /// Namespace of that Secret, the operator's own (default: the cluster-resource namespace).
    #[arg(long = "webhook-namespace", env = "TENANT_ACCESS_WEBHOOK_NAMESPACE")]
    webhook_namespace: Option<String>,
    /// ValidatingWebhookConfiguration whose caBundle the operator keeps current (empty: none).
    #[arg(
        long = "webhook-configuration-name",
        env = "TENANT_ACCESS_WEBHOOK_CONFIGURATION_NAME",
        default_value = ""
    )]
    webhook_configuration_name: String,
    /// Names the serving certificate is valid for, comma-separated: the webhook Service's DNS
    /// names (`<service>.<namespace>.svc`), or IP addresses.
    #[arg(long = "webhook-hosts", env = "TENANT_ACCESS_WEBHOOK_HOSTS", value_delimiter = ',')]
    webhook_hosts: Vec<String>,
    /// A PEM file of the CAs that sign the client certificate the API server presents to this
    /// webhook (its admission configuration, `--admission-control-config-file`); when set, only
    /// such a client is served. Without it, anyone who reaches the port can send reviews.
    #[arg(long = "webhook-client-ca-file", env = "TENANT_ACCESS_WEBHOOK_CLIENT_CA_FILE")]
    webhook_client_ca_file: Option<PathBuf>,
    /// The webhook's own Kubernetes API budget (requests per second), apart from the
    /// controllers' (--kube-qps): a flood of reviews cannot slow issuance or renewal. Past it,
    /// reviews wait up to 3 s per read and are then admitted with a warning.
    #[arg(long = "webhook-kube-qps", env = "TENANT_ACCESS_WEBHOOK_KUBE_QPS", default_value_t = WEBHOOK_KUBE_QPS)]
    webhook_kube_qps: f64,
    /// Requests of the webhook's budget allowed at once before --webhook-kube-qps applies.
    #[arg(long = "webhook-kube-burst", env = "TENANT_ACCESS_WEBHOOK_KUBE_BURST", default_value_t = WEBHOOK_KUBE_BURST)]
    webhook_kube_burst: u32,
}

/// Default of --webhook-kube-qps: two reads per review, reviews at the pace of people and
/// GitOps syncs; a tenth of the controllers' default.
const WEBHOOK_KUBE_QPS: f64 = 20.0;
/// Default of --webhook-kube-burst.
const WEBHOOK_KUBE_BURST: u32 = 40;

impl WebhookArgs {
    /// The webhook's own client-side rate limit (its client is not the controllers').
    pub(super) fn api_rate_limit(&self) -> RateLimit {
        RateLimit { qps: self.webhook_kube_qps, burst: self.webhook_kube_burst.max(1) }
    }

    /// The webhook's configuration, `None` when it is off.
    pub(super) fn config(
        &self,
        cluster_resource_namespace: &str,
        namespaces: &[String],
    ) -> Result<Option<WebhookConfig>, CliError> {
        if self.webhook_address.is_empty() {
            return Ok(None);
        }
        let address = self.webhook_address.parse().map_err(|e| {
            CliError::Input(format!(
                "--webhook-address {:?} is not an address such as 0.0.0.0:9443: {e}",
                self.webhook_address
            ))
        })?;
        let certificate = match &self.webhook_cert_dir {
            Some(dir) => CertificateSource::Files(dir.clone()),
            None => {
                let hosts: Vec<String> = self
                    .webhook_hosts
                    .iter()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
                    .collect();
                if hosts.is_empty() {
                    return Err(CliError::Input(
                        "--webhook-hosts is empty: name the webhook Service (<service>.<namespace>.svc), or give --webhook-cert-dir".into(),
                    ));
                }
                CertificateSource::Managed(Managed {
                    namespace: self
                        .webhook_namespace
                        .clone()
                        .unwrap_or_else(|| cluster_resource_namespace.to_owned()),
                    secret_name: self.webhook_secret_name.clone(),
                    configuration_name: Some(self.webhook_configuration_name.clone())
                        .filter(|n| !n.is_empty()),
                    hosts,
                    validity: crate::runtime::webhook::certs::Validity::default(),
                })
            }
        };
        let served: BTreeSet<String> = namespaces.iter().cloned().collect();
        Ok(Some(WebhookConfig {
            address,
            certificate,
            cluster_wide: served.len() != 1,
            namespaces: (!served.is_empty()).then_some(served),
            client_ca: self.webhook_client_ca_file.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[command(flatten)]
        webhook: WebhookArgs,
    }

    fn config(flags: &[&str], namespaces: &[&str]) -> Result<Option<WebhookConfig>, CliError> {
        let flags = Flags::try_parse_from(std::iter::once("run").chain(flags.iter().copied()))
            .map_err(|e| CliError::Input(e.to_string()))?;
        let namespaces: Vec<String> = namespaces.iter().map(|n| (*n).to_owned()).collect();
        flags.webhook.config("tenant-access-system", &namespaces)
    }

    #[test]
    fn without_an_address_there_is_no_webhook() {
        assert!(matches!(config(&[], &[]), Ok(None)));
    }

    #[test]
    fn its_own_certificate_needs_the_names_it_is_for() {
        let error = config(&["--webhook-address", "0.0.0.0:9443"], &[]).map(|_| ()).unwrap_err();
        assert!(error.to_string().contains("--webhook-hosts"), "{error}");
        let Ok(Some(webhook)) =
            config(&["--webhook-address", "0.0.0.0:9443", "--webhook-hosts", "w.ops.svc, 10.0.0.1"], &[])
        else {
            panic!("no webhook");
        };
        let CertificateSource::Managed(managed) = webhook.certificate else { panic!("not managed") };
        assert_eq!(managed.hosts, ["w.ops.svc", "10.0.0.1"]);
        assert_eq!(managed.namespace, "tenant-access-system");
        assert_eq!(managed.configuration_name, None);
        assert!(webhook.cluster_wide && webhook.namespaces.is_none());
    }

    #[test]
    fn a_one_namespace_install_reads_no_namespace_labels() {
        let flags = ["--webhook-address", "0.0.0.0:9443", "--webhook-cert-dir", "/tls"];
        let Ok(Some(webhook)) = config(&flags, &["acme"]) else { panic!("no webhook") };
        assert!(!webhook.cluster_wide);
        assert!(matches!(webhook.certificate, CertificateSource::Files(_)));
        let Ok(Some(webhook)) = config(&flags, &["acme", "globex"]) else { panic!("no webhook") };
        assert!(webhook.cluster_wide);
        assert_eq!(webhook.namespaces.map(|n| n.len()), Some(2));
    }

    #[test]
    fn a_bad_address_is_refused_naming_the_flag() {
        let error = config(&["--webhook-address", "everywhere"], &[]).map(|_| ()).unwrap_err();
        assert!(error.to_string().contains("--webhook-address \"everywhere\""), "{error}");
    }
}
