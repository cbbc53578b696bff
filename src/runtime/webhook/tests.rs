//! The webhook server in this process: TLS with its own certificate, swapped while serving;
//! bounded bodies; malformed reviews.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

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

/// A serving certificate loaded with `material`'s.
fn serving_cert(material: &Material) -> Arc<ServingCert> {
    let serving = Arc::new(ServingCert::default());
    serving.load(material.cert.as_bytes(), material.key.as_bytes()).unwrap();
    serving
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
    let serving = serving_cert(&material);
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

/// Serves reviews within `bounds` on a free port until the returned sender is dropped.
async fn serve_within(
    serving: Arc<ServingCert>,
    bounds: server::Bounds,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let facts = Arc::new(StaticFacts::cluster_wide());
    tokio::spawn(server::serve(listener, serving, facts, bounds, None, async {
        let _ = stopped.await;
    }));
    (address, stop)
}

/// A TLS connection to the webhook, verified against `ca`.
async fn connect(address: SocketAddr, ca: &str) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
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
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap()
}

/// Reads until the server closes the connection; what it sent.
async fn read_to_close(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut answer = Vec::new();
    // A reset counts as closed too.
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Bounds short enough for a unit test.
fn short_bounds() -> server::Bounds {
    server::Bounds {
        max_connections: 4,
        max_concurrent_reviews: 2,
        handshake_timeout: Duration::from_millis(500),
        header_read_timeout: Duration::from_millis(500),
        body_read_timeout: Duration::from_millis(500),
    }
}

/// Generous: the bound itself plus scheduling slack on a loaded machine.
const SLACK: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_connection_with_unfinished_headers_is_closed_within_the_header_timeout() {
    use tokio::io::AsyncWriteExt as _;
    let material = material();
    let serving = serving_cert(&material);
    let bounds = short_bounds();
    let (address, _stop) = serve_within(serving, bounds).await;
    let mut stream = connect(address, &material.ca_cert).await;
    stream.write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    stream.flush().await.unwrap();
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(bounds.header_read_timeout + SLACK, read_to_close(&mut stream)).await;
    assert!(closed.is_ok(), "still open after {:?}", started.elapsed());

    // An idle connection (no request at all) is closed in the same time.
    let mut idle = connect(address, &material.ca_cert).await;
    assert!(tokio::time::timeout(bounds.header_read_timeout + SLACK, read_to_close(&mut idle)).await.is_ok());
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    use tokio::io::AsyncWriteExt as _;
    let material = material();
    let serving = serving_cert(&material);
    let bounds = short_bounds();
    let (address, _stop) = serve_within(serving, bounds).await;
    let mut stream = connect(address, &material.ca_cert).await;
    stream
        .write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        .await
        .unwrap();
    stream.flush().await.unwrap();
    let answer =
        tokio::time::timeout(bounds.body_read_timeout + SLACK, read_to_close(&mut stream)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn reviews_beyond_the_bound_get_503_before_their_body_is_read() {
    use tokio::io::AsyncWriteExt as _;
    let material = material();
    let serving = serving_cert(&material);
    let bounds = server::Bounds { body_read_timeout: Duration::from_secs(30), ..short_bounds() };
    let (address, _stop) = serve_within(serving, bounds).await;
    // As many reviews as the bound allows, each holding its place with a body never finished.
    let mut holding = Vec::new();
    for _ in 0..bounds.max_concurrent_reviews {
        let mut stream = connect(address, &material.ca_cert).await;
        stream
            .write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
            .await
            .unwrap();
        stream.flush().await.unwrap();
        holding.push(stream);
    }
    let client = client(&material.ca_cert);
    let url = format!("https://{address}{PATH}");
    // The holders' headers reach the server in their own time: wait for the bound to be full.
    let busy = tokio::time::timeout(SLACK, async {
        loop {
            let answer = client.post(&url).body("{}").send().await.unwrap();
            if answer.status() == 503 {
                break answer;
            }
        }
    })
    .await
    .expect("no 503 while every place is held");
    assert!(busy.text().await.unwrap().contains("retry"));
    drop(holding);
    // The places free up with the connections.
    let freed = tokio::time::timeout(SLACK, async {
        loop {
            if client.post(&url).body("{}").send().await.unwrap().status() == 400 {
                break;
            }
        }
    })
    .await;
    assert!(freed.is_ok(), "the places were not freed");
}

#[tokio::test]
async fn connections_beyond_the_bound_are_closed_at_once() {
    let material = material();
    let serving = serving_cert(&material);
    let bounds = server::Bounds { header_read_timeout: Duration::from_secs(30), ..short_bounds() };
    let (address, _stop) = serve_within(serving, bounds).await;
    let mut open = Vec::new();
    for _ in 0..bounds.max_connections {
        open.push(connect(address, &material.ca_cert).await);
    }
    let mut one_more = tokio::net::TcpStream::connect(address).await.unwrap();
    let closed = tokio::time::timeout(SLACK, read_to_close(&mut one_more)).await;
    assert_eq!(closed.as_deref(), Ok(""), "the connection beyond the bound was served");
    drop(open);
}

/// A CA and a client certificate it signed (as an API server's admission configuration would
/// give the API server): (CA PEM, client certificate DER, client key DER).
fn client_identity()
-> (String, CertificateDer<'static>, tokio_rustls::rustls::pki_types::PrivateKeyDer<'static>) {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["kube-apiserver".to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
        .unwrap();
    (ca_cert.pem(), cert.der().clone(), key)
}

/// Sends a malformed review over a new connection, with the client certificate `identity` when
/// given: the status line of the answer, if any came.
async fn status_line(
    address: SocketAddr,
    ca: &str,
    identity: Option<(CertificateDer<'static>, tokio_rustls::rustls::pki_types::PrivateKeyDer<'static>)>,
) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder.with_client_auth_cert(vec![cert], key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.ok()?;
    let request =
        format!("POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
    tls.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.ok()?;
    String::from_utf8_lossy(&answer).lines().next().map(str::to_owned)
}

#[tokio::test]
async fn with_client_cas_only_a_client_with_a_certificate_they_signed_is_served() {
    let material = material();
    let serving = serving_cert(&material);
    let (client_ca, cert, key) = client_identity();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let clients = Some(tls::client_roots(client_ca.as_bytes()).unwrap());
    let facts = Arc::new(StaticFacts::cluster_wide());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve(listener, serving, facts, server::Bounds::default(), clients, async {
        let _ = stopped.await;
    }));

    let served = status_line(address, &material.ca_cert, Some((cert, key))).await;
    assert_eq!(served.as_deref(), Some("HTTP/1.1 400 Bad Request"));
    // A pod without that certificate gets no answer at all.
    assert_eq!(status_line(address, &material.ca_cert, None).await, None);
    let (_, other_cert, other_key) = client_identity();
    assert_eq!(status_line(address, &material.ca_cert, Some((other_cert, other_key))).await, None);
}

#[test]
fn a_client_ca_file_without_a_certificate_is_refused() {
    assert!(tls::client_roots(b"not a certificate").is_err());
}
