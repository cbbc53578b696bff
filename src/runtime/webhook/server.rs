//! The webhook's HTTPS server, and what a client can make it spend. Any pod that reaches the
//! port can open connections and send reviews, so every resource a client holds is bounded, and
//! beyond a bound the webhook refuses (a closed connection, an HTTP 503) instead of queueing:
//! the API server then applies the configuration's `failurePolicy` (`Ignore` by default: the
//! object is admitted, and the reconciler still refuses what the webhook would have).
//!
//! - Connections: at most [`Bounds::max_connections`] open (handshaking, idle or busy); one
//!   more is closed at once.
//! - Time: the TLS handshake within [`Bounds::handshake_timeout`], each request's headers (and
//!   the wait for the next request on a kept-alive connection) within
//!   [`Bounds::header_read_timeout`], the body within [`Bounds::body_read_timeout`]; past any of
//!   them the connection is closed (a body too slow gets 408 first).
//! - Memory: at most [`Bounds::max_concurrent_reviews`] reviews are read and judged at once,
//!   each body at most [`MAX_REVIEW_BYTES`]; one more gets 503 before its body is read. A
//!   connection's header buffer is at most [`MAX_HEADER_BUFFER_BYTES`].
//! - The API server: reviews read workspaces and namespaces with the webhook's own client and
//!   budget (see `tenant-access run`), never the controllers'.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header::CONTENT_LENGTH};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls::RootCertStore;

use super::review::{self, AdmissionFacts, MAX_REVIEW_BYTES};
use super::{PATH, tls};

/// Connections open at once (each holds at most a header buffer and a TLS session, about
/// 100 KiB): the API server needs a few.
pub const MAX_CONNECTIONS: usize = 64;
/// Reviews read and judged at once (each holds its body, at most [`MAX_REVIEW_BYTES`]): 8 x
/// 4 MiB bound the webhook's review memory to 32 MiB.
pub const MAX_CONCURRENT_REVIEWS: usize = 8;
/// Longest TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a request's headers, and for the next request on an idle connection.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a request's body, from the end of its headers. The API server sends a
/// review at once and waits at most the configuration's `timeoutSeconds` (5) for the answer.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest header buffer of one connection (hyper's minimum is 8 KiB).
pub const MAX_HEADER_BUFFER_BYTES: usize = 64 * 1024;
/// How long a graceful shutdown waits for the reviews in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What one server lets its clients hold. [`Bounds::default`] is the constants above; tests
/// shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Connections open at once.
    pub max_connections: usize,
    /// Reviews read and judged at once.
    pub max_concurrent_reviews: usize,
    /// Longest TLS handshake.
    pub handshake_timeout: Duration,
    /// Longest wait for headers (and between requests).
    pub header_read_timeout: Duration,
    /// Longest wait for a body.
    pub body_read_timeout: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            max_concurrent_reviews: MAX_CONCURRENT_REVIEWS,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            header_read_timeout: HEADER_READ_TIMEOUT,
            body_read_timeout: BODY_READ_TIMEOUT,
        }
    }
}

/// What the review route needs.
#[derive(Clone)]
struct Reviewer {
    facts: Arc<dyn AdmissionFacts>,
    reviews: Arc<Semaphore>,
    body_read_timeout: Duration,
}

/// The webhook's routes: `POST /validate`, at most `bounds.max_concurrent_reviews` at once.
pub fn router(facts: Arc<dyn AdmissionFacts>, bounds: Bounds) -> Router {
    let reviewer = Reviewer {
        facts,
        reviews: Arc::new(Semaphore::new(bounds.max_concurrent_reviews.max(1))),
        body_read_timeout: bounds.body_read_timeout,
    };
    Router::new().route(PATH, post(validate)).with_state(reviewer)
}

async fn validate(State(reviewer): State<Reviewer>, request: Request) -> Response {
    // Before the body is read: a review beyond the bound costs nothing but this answer.
    let Ok(_permit) = reviewer.reviews.clone().try_acquire_owned() else {
        count_unread("busy");
        return (StatusCode::SERVICE_UNAVAILABLE, "the webhook is judging as many reviews as it may: retry")
            .into_response();
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_REVIEW_BYTES as u64) {
        return too_large();
    }
    let body = match tokio::time::timeout(reviewer.body_read_timeout, read_body(request.into_body())).await {
        Err(_) => {
            return (
                StatusCode::REQUEST_TIMEOUT,
                format!("the review body was not received within {}s", reviewer.body_read_timeout.as_secs()),
            )
                .into_response();
        }
        Ok(Err(BodyError::TooLarge)) => return too_large(),
        Ok(Err(BodyError::Broken(why))) => return (StatusCode::BAD_REQUEST, why).into_response(),
        Ok(Ok(body)) => body,
    };
    match review::answer(&body, reviewer.facts.as_ref()).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(malformed) => {
            tracing::debug!(error = %malformed, "malformed admission review");
            (StatusCode::BAD_REQUEST, malformed.to_string()).into_response()
        }
    }
}

/// Counts what was refused before anything was read, in `tenant_access_webhook_reviews_total`
/// as `{kind="unread", verdict}`: `busy` (a review answered 503, too many in flight) or
/// `connection_refused` (a connection closed, too many open).
fn count_unread(verdict: &'static str) {
    review::reviews_family().get_or_create(&review::ReviewLabels { kind: "unread", verdict }).inc();
}

fn too_large() -> Response {
    (StatusCode::PAYLOAD_TOO_LARGE, format!("a review has at most {MAX_REVIEW_BYTES} bytes")).into_response()
}

enum BodyError {
    TooLarge,
    Broken(String),
}

/// The body, at most [`MAX_REVIEW_BYTES`] (read no further).
async fn read_body(body: Body) -> Result<Bytes, BodyError> {
    let mut chunks = body.into_data_stream();
    let mut body = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| BodyError::Broken(format!("reading the review: {e}")))?;
        if body.len() + chunk.len() > MAX_REVIEW_BYTES {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// Answers reviews over TLS on `listener` within `bounds`, with the certificate `serving`
/// holds (swapped while serving) and `facts`, until `shutdown` (then waits a few seconds for
/// the reviews in flight). With `clients`, only a client whose certificate one of them signed is
/// served (the TLS handshake fails for any other).
///
/// # Errors
/// When rustls refuses the configuration.
pub async fn serve(
    listener: TcpListener,
    serving: Arc<tls::ServingCert>,
    facts: Arc<dyn AdmissionFacts>,
    bounds: Bounds,
    clients: Option<Arc<RootCertStore>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = tls::server_config(serving, clients).map_err(std::io::Error::other)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let app = router(facts, bounds);
    let connections = Arc::new(Semaphore::new(bounds.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(bounds.header_read_timeout)
        .max_buf_size(MAX_HEADER_BUFFER_BYTES);
    let http = Arc::new(http);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "webhook connection refused: {} open", bounds.max_connections);
            count_unread("connection_refused");
            drop(stream);
            continue;
        };
        let (acceptor, http, watcher) = (acceptor.clone(), http.clone(), graceful.watcher());
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(bounds.handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => return tracing::debug!(%peer, %error, "webhook TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "webhook TLS handshake timed out"),
            };
            let connection = http.serve_connection(TokioIo::new(tls), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "webhook connection closed");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
    Ok(())
}
