//! TLS of the webhook: a serving certificate that can be swapped while serving (rotation
//! without a restart), and the reload of a certificate mounted from files.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_rustls::rustls::crypto::{CryptoProvider, aws_lc_rs};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

/// How often a certificate mounted from files is read again.
pub const FILE_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// A certificate that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The PEM is not a certificate chain and its key.
    #[error("the webhook certificate {what}: {problem}")]
    Pem {
        /// Which part.
        what: &'static str,
        /// Why.
        problem: String,
    },
    /// A file cannot be read.
    #[error("reading the webhook certificate {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// rustls refuses the configuration.
    #[error("the webhook TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The serving certificate, replaced while serving: each new handshake gets the current one.
#[derive(Debug, Default)]
pub struct ServingCert {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl ServingCert {
    /// Loads a PEM chain (leaf first) and its PEM private key; returns whether it differs from
    /// the certificate served so far.
    ///
    /// # Errors
    /// When the PEM cannot be parsed or the key does not match the certificate.
    pub fn load(&self, chain_pem: &[u8], key_pem: &[u8]) -> Result<bool, TlsError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem { what: "chain", problem: e.to_string() })?;
        if chain.is_empty() {
            return Err(TlsError::Pem { what: "chain", problem: "no certificate in it".into() });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| TlsError::Pem { what: "key", problem: e.to_string() })?;
        let changed = self.current().is_none_or(|current| current.cert != chain);
        if changed {
            let certified = CertifiedKey::from_der(chain, key, &provider())
                .map_err(|e| TlsError::Pem { what: "key", problem: e.to_string() })?;
            if let Ok(mut current) = self.current.write() {
                *current = Some(Arc::new(certified));
            }
        }
        Ok(changed)
    }

    /// The certificate served now, if any.
    #[must_use]
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// The leaf certificate served now (DER), if any.
    #[must_use]
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current().and_then(|c| c.cert.first().cloned())
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

fn provider() -> CryptoProvider {
    aws_lc_rs::default_provider()
}

/// The server configuration: aws-lc-rs, safe default versions, HTTP/1.1, certificate from
/// `serving`; with `clients`, only a client presenting a certificate that one of them signed
/// (the API server's, when the cluster's admission configuration gives it one) gets past the
/// handshake.
///
/// # Errors
/// When rustls refuses the protocol versions (it does not), or the client CAs.
pub fn server_config(
    serving: Arc<ServingCert>,
    clients: Option<Arc<RootCertStore>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(provider());
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::Pem { what: "client CA", problem: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(serving);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The CAs whose client certificates the webhook accepts, from a PEM bundle.
///
/// # Errors
/// When the PEM holds no certificate, or one rustls cannot use.
pub fn client_roots(pem: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let problem = |problem: String| TlsError::Pem { what: "client CA", problem };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert.map_err(|e| problem(e.to_string()))?).map_err(|e| problem(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(problem("no certificate in it".into()));
    }
    Ok(Arc::new(roots))
}

/// Reads `tls.crt` and `tls.key` of `dir` into `serving` (a mounted Secret: the kubelet starts
/// the pod only once cert-manager has written it); returns whether the certificate changed.
///
/// # Errors
/// When the files cannot be read or are unusable.
pub async fn load_files(serving: &ServingCert, dir: &Path) -> Result<bool, TlsError> {
    let read = |name: &str| {
        let path = dir.join(name);
        async move {
            tokio::fs::read(&path)
                .await
                .map_err(|source| TlsError::Read { path: path.display().to_string(), source })
        }
    };
    let (chain, key) = (read("tls.crt").await?, read("tls.key").await?);
    serving.load(&chain, &key)
}

/// Reads the files again every [`FILE_RELOAD_INTERVAL`] until `stop`; a change is served from
/// the next handshake on.
pub async fn reload_files(
    serving: Arc<ServingCert>,
    dir: std::path::PathBuf,
    stop: impl Future<Output = ()>,
) {
    let reload = async {
        loop {
            tokio::time::sleep(FILE_RELOAD_INTERVAL).await;
            match load_files(&serving, &dir).await {
                Ok(true) => tracing::info!(dir = %dir.display(), "webhook certificate reloaded"),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "webhook certificate not reloaded; serving the previous one");
                }
            }
        }
    };
    tokio::select! {
        () = reload => {},
        () = stop => {},
    }
}
