//! The webhook server in this process: TLS with its own certificate, swapped while serving;
//! bounded bodies; malformed reviews.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;

use jiff::Timestamp;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::certs::{Material, Renewal, Validity, renew};
use super::tls::ServingCert;
use super::*;

fn material() -> Material {
    renew(None, Renewal::All, &["127.0.0.1".to_owned()], Timestamp::now(), Validity::default()).unwrap()
}

/// Serves reviews on a free port until the returned sender is dropped.
async fn serve(serving: Arc<ServingCert>) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_reviews(listener, serving, Arc::new(StaticFacts::cluster_wide()), async {
        let _ = stopped.await;
    }));
    (address, stop)
}

/// The leaf certificate a new TLS connection is served, verified against `ca`.
async fn served_leaf(address: SocketAddr, ca: &str) -> CertificateDer<'static> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

fn client(ca: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_renewed_certificate_is_served_from_the_next_handshake_without_a_restart() {
    let first = material();
    let serving = Arc::new(ServingCert::default());
    serving.load(first.cert.as_bytes(), first.key.as_bytes()).unwrap();
    let (address, _stop) = serve(serving.clone()).await;
    let leaf = served_leaf(address, &first.ca_cert).await;
    assert_eq!(Some(leaf.clone()), serving.leaf());

    let renewed =
        renew(Some(&first), Renewal::Serving, &first.hosts, Timestamp::now(), Validity::default()).unwrap();
    assert!(serving.load(renewed.cert.as_bytes(), renewed.key.as_bytes()).unwrap());
    let now_served = served_leaf(address, &first.ca_cert).await;
    assert_ne!(now_served, leaf);
    assert_eq!(Some(now_served), serving.leaf());
}

#[tokio::test]
async fn bodies_are_bounded_and_malformed_reviews_get_a_clear_error() {
    let material = material();
    let serving = Arc::new(ServingCert::default());
    serving.load(material.cert.as_bytes(), material.key.as_bytes()).unwrap();
    let (address, _stop) = serve(serving).await;
    let url = format!("https://{address}{PATH}");
    let client = client(&material.ca_cert);

    let too_large = client.post(&url).body(vec![b' '; MAX_REVIEW_BYTES + 1]).send().await.unwrap();
    assert_eq!(too_large.status(), 413);

    let malformed = client.post(&url).body("{\"apiVersion\": \"admission.k8s.io/v1\"}").send().await.unwrap();
    assert_eq!(malformed.status(), 400);
    assert!(malformed.text().await.unwrap().starts_with("the body is not an AdmissionReview"));

    // The server still answers a good review after both.
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE"},
    });
    let answer: serde_json::Value =
        client.post(&url).json(&review).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["response"], serde_json::json!({"uid": "u1", "allowed": true}));
}
