//! The Kubernetes client the operator uses: kubeconfig or in-cluster config, with a client-side
//! QPS / burst limit (a token bucket in front of every request) so that a burst of reconciles
//! cannot flood the API server, and every request bounded in time.
//!
//! Bounds, from the outside in:
//! - [`TimeoutLayer`]: every request other than a watch must be answered, body included, within
//!   [`RequestBounds::request_timeout`] (15 s by default); a watch must send its headers in that
//!   time (the API server sends them at once), and its stream is then left alone: it is a
//!   long poll that lasts up to the watcher's server-side `timeoutSeconds` (290 s), and
//!   kube-runtime's watcher drops a stream idle for longer than that plus 5 s. A request cut by
//!   the timeout fails with [`RequestTimedOut`] (as `kube::Error::Service`), is counted
//!   (`tenant_access_kube_request_timeouts_total{verb}`) and is retried like any other failure.
//! - The connection: a connect timeout ([`CONNECT_TIMEOUT`]) and a read timeout
//!   ([`READ_TIMEOUT`]) above the watcher's idle timeout, so that it never cuts a quiet watch
//!   but does end a half-open connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::time::{Instant, Sleep};
use tower::BoxError;

/// Client-side rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub qps: f64,
    /// Requests allowed at once before the rate applies.
    pub burst: u32,
}

/// A token bucket: `burst` tokens, refilled at `qps` per second; while boosted, at the boost's
/// limit instead.
#[derive(Debug)]
struct Bucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
    /// A higher limit, until an instant ([`Pace::boost`]).
    boost: Option<(RateLimit, Instant)>,
}

impl Bucket {
    fn new(limit: RateLimit, now: Instant) -> Self {
        Self { limit, tokens: f64::from(limit.burst), last: now, boost: None }
    }

    /// The limit in force at `now`.
    fn limit_at(&self, now: Instant) -> RateLimit {
        match self.boost {
            Some((boosted, until)) if now < until => boosted,
            _ => self.limit,
        }
    }

    /// Reserves one token; returns how long the caller must wait before using it.
    fn reserve(&mut self, now: Instant) -> Duration {
        let limit = self.limit_at(now);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * limit.qps).min(f64::from(limit.burst));
        self.tokens -= 1.0;
        if self.tokens >= 0.0 || limit.qps <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / limit.qps)
        }
    }

    fn boost(&mut self, limit: RateLimit, until: Instant, now: Instant) {
        let until = match self.boost {
            Some((_, current)) if current > until => current,
            _ => until,
        };
        if self.limit_at(now) != limit {
            // The new burst at once: a rotation starts writing without waiting for a refill.
            self.tokens = self.tokens.max(f64::from(limit.burst));
            self.last = now;
        }
        self.boost = Some((limit, until));
    }
}

/// A handle on a client's rate limit: [`Pace::boost`] lifts it for a while.
///
/// A rotation must rewrite every token Secret, and every tenant holds a dead token until its
/// own is rewritten: the window is set by how fast the writes go. In steady state the
/// client-side limit keeps a burst of reconciles from flooding the API server; during a
/// rotation it is lifted to a ceiling, and the pace is the API server's: the writes come from
/// a bounded number of reconcile workers, each waiting for its answer, so a server that slows
/// down (API Priority and Fairness queues) slows them; a server that refuses (429) names when
/// to come back (`Retry-After`), which the client's retry policy honours
/// (`kube::client::retry::RetryPolicy::server_retry`, on by default).
#[derive(Debug, Clone)]
pub struct Pace {
    bucket: Arc<Mutex<Bucket>>,
}

impl Pace {
    /// Uses `limit` instead of the steady one for `duration` from now (or longer, if an earlier
    /// boost lasts longer).
    pub fn boost(&self, limit: RateLimit, duration: Duration) {
        let now = Instant::now();
        if let Ok(mut bucket) = self.bucket.lock() {
            bucket.boost(limit, now + duration, now);
        }
    }

    /// Whether a boost is in force now.
    #[must_use]
    pub fn boosted(&self) -> bool {
        let now = Instant::now();
        self.bucket.lock().is_ok_and(|bucket| bucket.boost.is_some_and(|(_, until)| now < until))
    }
}

/// Tower layer applying a shared [`RateLimit`].
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    bucket: Arc<Mutex<Bucket>>,
}

impl RateLimitLayer {
    /// A layer with its own bucket.
    #[must_use]
    pub fn new(limit: RateLimit) -> Self {
        Self { bucket: Arc::new(Mutex::new(Bucket::new(limit, Instant::now()))) }
    }

    /// The handle that boosts this layer's limit.
    #[must_use]
    pub fn pace(&self) -> Pace {
        Pace { bucket: Arc::clone(&self.bucket) }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited { inner, bucket: self.bucket.clone(), sleep: None, reserved: false }
    }
}

/// The rate-limited service: waits in `poll_ready` until its token is due.
#[derive(Debug)]
pub struct RateLimited<S> {
    inner: S,
    bucket: Arc<Mutex<Bucket>>,
    sleep: Option<Pin<Box<Sleep>>>,
    reserved: bool,
}

impl<S, Req> tower::Service<Req> for RateLimited<S>
where
    S: tower::Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.reserved {
            let now = Instant::now();
            let wait = self.bucket.lock().map_or(Duration::ZERO, |mut bucket| bucket.reserve(now));
            self.reserved = true;
            if !wait.is_zero() {
                self.sleep = Some(Box::pin(tokio::time::sleep_until(now + wait)));
            }
        }
        if let Some(sleep) = self.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        self.reserved = false;
        self.inner.call(request)
    }
}

/// Default of [`RequestBounds::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for a TCP and TLS connection to the API server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence of a connection while an answer is awaited: above kube-runtime's watch idle
/// timeout (290 s server-side plus a 5 s margin), so that it only ends half-open connections.
pub const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Labels of the request-timeout counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// `get` (get and list), `create`, `update`, `patch`, `delete`, `watch` (its headers) or
    /// `other`.
    pub verb: &'static str,
}

/// How long a Kubernetes request may take, and where timeouts are counted.
#[derive(Debug, Clone)]
pub struct RequestBounds {
    /// Longest time a request other than a watch may take, answer body included; for a watch,
    /// longest wait for its headers.
    pub request_timeout: Duration,
    /// Requests cut by the timeout, by verb.
    pub timeouts: Family<VerbLabels, Counter>,
}

impl Default for RequestBounds {
    fn default() -> Self {
        Self { request_timeout: DEFAULT_REQUEST_TIMEOUT, timeouts: Family::default() }
    }
}

/// A Kubernetes request that did not complete within [`RequestBounds::request_timeout`].
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the Kubernetes API server did not answer {verb} {path} within {}s (--kube-request-timeout-seconds); the call is retried",
    after.as_secs_f64()
)]
pub struct RequestTimedOut {
    /// The verb, as in [`VerbLabels`].
    pub verb: &'static str,
    /// The request path (no query).
    pub path: String,
    /// The timeout that passed.
    pub after: Duration,
}

/// Whether a kube error is a [`RequestTimedOut`].
#[must_use]
pub fn timed_out(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Service(source) if source.is::<RequestTimedOut>())
}

/// Whether a request is a watch (a long poll, left unbounded once its headers arrived).
fn is_watch(uri: &http::Uri) -> bool {
    uri.query().is_some_and(|query| query.split('&').any(|pair| pair == "watch=true" || pair == "watch=1"))
}

fn verb(method: &http::Method, watch: bool) -> &'static str {
    match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// Tower layer applying [`RequestBounds`] to every request.
#[derive(Debug, Clone)]
pub struct TimeoutLayer {
    bounds: RequestBounds,
}

impl TimeoutLayer {
    /// A layer with these bounds.
    #[must_use]
    pub fn new(bounds: RequestBounds) -> Self {
        Self { bounds }
    }
}

impl<S> tower::Layer<S> for TimeoutLayer {
    type Service = Bounded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bounded { inner, bounds: self.bounds.clone() }
    }
}

/// The bounded service (see [`TimeoutLayer`]).
#[derive(Debug, Clone)]
pub struct Bounded<S> {
    inner: S,
    bounds: RequestBounds,
}

/// The future of a [`Bounded`] request.
pub type BoundedFuture<B> =
    Pin<Box<dyn Future<Output = Result<http::Response<TimedBody<B>>, BoxError>> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Bounded<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ResBody: Body + Unpin + Send + 'static,
{
    type Response = http::Response<TimedBody<ResBody>>;
    type Error = BoxError;
    type Future = BoundedFuture<ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let watch = is_watch(request.uri());
        let timed_out = RequestTimedOut {
            verb: verb(request.method(), watch),
            path: request.uri().path().to_owned(),
            after: self.bounds.request_timeout,
        };
        let counter = self.bounds.timeouts.get_or_create(&VerbLabels { verb: timed_out.verb }).clone();
        let deadline = Instant::now() + self.bounds.request_timeout;
        let answer = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(response)) => Ok(response.map(|inner| TimedBody {
                    inner,
                    deadline: (!watch)
                        .then(|| (Box::pin(tokio::time::sleep_until(deadline)), timed_out, counter)),
                })),
                Ok(Err(error)) => Err(error.into()),
                Err(_) => {
                    counter.inc();
                    Err(timed_out.into())
                }
            }
        })
    }
}

/// An answer body that fails with [`RequestTimedOut`] once the request's deadline passes
/// (unbounded for a watch).
#[derive(Debug)]
pub struct TimedBody<B> {
    inner: B,
    deadline: Option<(Pin<Box<Sleep>>, RequestTimedOut, Counter)>,
}

impl<B> Body for TimedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.get_mut();
        if let Some((sleep, _, _)) = this.deadline.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
            && let Some((_, timed_out, counter)) = this.deadline.take()
        {
            counter.inc();
            return Poll::Ready(Some(Err(timed_out.into())));
        }
        Pin::new(&mut this.inner).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Builds a client from a kube config with the rate limit and the [`RequestBounds`] in front.
///
/// # Errors
/// When the config cannot produce a client (TLS, auth).
pub fn build(
    config: kube::Config,
    limit: RateLimit,
    bounds: RequestBounds,
) -> Result<kube::Client, kube::Error> {
    build_paced(config, limit, bounds).map(|(client, _)| client)
}

/// [`build`], with the handle that boosts its rate limit.
///
/// # Errors
/// As [`build`].
pub fn build_paced(
    mut config: kube::Config,
    limit: RateLimit,
    bounds: RequestBounds,
) -> Result<(kube::Client, Pace), kube::Error> {
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    // The read timeout counts from the request, not from when its pooled connection went idle.
    config.reset_reader_on_write = true;
    // 429 and 503 are retried after the server's Retry-After (kube's server-aware policy).
    config.default_retry = true;
    let builder = kube::client::ClientBuilder::try_from(config)?;
    let limiter = RateLimitLayer::new(limit);
    let pace = limiter.pace();
    // The rate limit waits in `poll_ready`, before the timeout starts.
    Ok((builder.with_layer(&TimeoutLayer::new(bounds)).with_layer(&limiter).build(), pace))
}

#[cfg(test)]
mod tests {
    use tower::{Layer as _, Service as _};

    use super::*;

    type Bytes = <kube::client::Body as Body>::Data;

    /// An answer body: `data` (if any), then the end, or silence when `ends` is false.
    struct TestBody {
        data: Option<Bytes>,
        ends: bool,
    }

    impl Body for TestBody {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let this = self.get_mut();
            match this.data.take() {
                Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                None if this.ends => Poll::Ready(None),
                None => Poll::Pending,
            }
        }
    }

    /// What the fake API server does with a request.
    #[derive(Clone, Copy)]
    enum Server {
        /// Never answers.
        Hangs,
        /// Sends the headers at once, then nothing.
        SendsHeadersOnly,
        /// Answers at once.
        Answers,
    }

    impl<B> tower::Service<http::Request<B>> for Server {
        type Response = http::Response<Box<dyn Body<Data = Bytes, Error = BoxError> + Send + Unpin>>;
        type Error = BoxError;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<B>) -> Self::Future {
            let server = *self;
            Box::pin(async move {
                match server {
                    Server::Hangs => std::future::pending().await,
                    Server::SendsHeadersOnly => {
                        Ok(http::Response::new(Box::new(TestBody { data: None, ends: false }) as _))
                    }
                    Server::Answers => Ok(http::Response::new(Box::new(TestBody {
                        data: Some(Bytes::from_static(b"{}")),
                        ends: true,
                    }) as _)),
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_boost_lifts_the_steady_limit_for_its_duration_then_the_steady_one_holds_again() {
        let steady = RateLimit { qps: 10.0, burst: 2 };
        let limiter = RateLimitLayer::new(steady);
        let pace = limiter.pace();
        let reserve = || limiter.bucket.lock().unwrap().reserve(Instant::now());
        assert_eq!((reserve(), reserve()), (Duration::ZERO, Duration::ZERO), "the steady burst");
        assert_eq!(reserve(), Duration::from_millis(100), "then 10 a second");

        // A rotation: 1,000 writes go without waiting, the next ones at the ceiling's rate.
        let ceiling = RateLimit { qps: 1000.0, burst: 1000 };
        pace.boost(ceiling, Duration::from_secs(60));
        assert!(pace.boosted());
        let waits: Vec<Duration> = (0..1000).map(|_| reserve()).collect();
        assert!(waits.iter().all(Duration::is_zero), "the ceiling's burst at once");
        assert_eq!(reserve(), Duration::from_millis(1));
        // A shorter boost asked meanwhile does not cut the longer one.
        pace.boost(ceiling, Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(pace.boosted());

        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(!pace.boosted(), "over after its duration");
        let steady_again: Vec<Duration> = (0..4).map(|_| reserve()).collect();
        assert_eq!(
            steady_again,
            [Duration::ZERO, Duration::ZERO, Duration::from_millis(100), Duration::from_millis(200)],
            "the steady limit, its burst refilled and no more"
        );
    }

    /// A fake API server that answers 429 with `Retry-After: 3` to the first `refusals`
    /// requests, then 200.
    #[derive(Clone)]
    struct Refusing {
        refusals: Arc<Mutex<u32>>,
    }

    impl tower::Service<http::Request<kube::client::Body>> for Refusing {
        type Response = http::Response<String>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Self::Response, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<kube::client::Body>) -> Self::Future {
            let mut refusals = self.refusals.lock().unwrap();
            let answer = if *refusals > 0 {
                *refusals -= 1;
                http::Response::builder().status(429).header("Retry-After", "3").body(String::new())
            } else {
                http::Response::builder().status(200).body("{}".to_owned())
            };
            std::future::ready(Ok(answer.unwrap()))
        }
    }

    /// How long a write takes through the client's retry policy against a server that refuses
    /// it `refusals` times.
    async fn write_against(refusals: u32) -> (u16, Duration) {
        use tower::ServiceExt as _;
        let server = Refusing { refusals: Arc::new(Mutex::new(refusals)) };
        let retry = kube::client::retry::RetryPolicy::server_retry();
        let service =
            tower::ServiceBuilder::new().layer(tower::retry::RetryLayer::new(retry)).service(server);
        let request = http::Request::builder()
            .method(http::Method::PATCH)
            .uri("/api/v1/namespaces/a/secrets/token")
            .body(kube::client::Body::from(b"{}".to_vec()))
            .unwrap();
        let started = Instant::now();
        let answer = service.oneshot(request).await.unwrap();
        (answer.status().as_u16(), started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_with_retry_after_holds_the_write_that_long_and_none_lets_it_go_at_once() {
        assert_eq!(write_against(0).await, (200, Duration::ZERO), "no 429: at full speed");
        let (status, took) = write_against(2).await;
        assert_eq!(status, 200, "written once the server takes it");
        assert!(took >= Duration::from_secs(6), "twice Retry-After: 3, waited {took:?}");
        assert!(took < Duration::from_secs(7), "no more than the server asked: {took:?}");
    }

    fn bounded(server: Server) -> (Bounded<Server>, Family<VerbLabels, Counter>) {
        let bounds = RequestBounds::default();
        let timeouts = bounds.timeouts.clone();
        (TimeoutLayer::new(bounds).layer(server), timeouts)
    }

    fn request(method: http::Method, uri: &str) -> http::Request<()> {
        http::Request::builder().method(method).uri(uri).body(()).unwrap()
    }

    async fn next_frame<B: Body + Unpin>(body: &mut B) -> Option<Result<Frame<B::Data>, B::Error>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
    }

    fn count(timeouts: &Family<VerbLabels, Counter>, verb: &'static str) -> u64 {
        timeouts.get_or_create(&VerbLabels { verb }).get()
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_without_an_answer_times_out_with_a_message_that_says_so() {
        let (mut service, timeouts) = bounded(Server::Hangs);
        let started = Instant::now();
        let call =
            service.call(request(http::Method::PATCH, "/api/v1/namespaces/a/secrets/token?fieldManager=x"));
        let error = call.await.err().unwrap();
        assert_eq!(started.elapsed(), DEFAULT_REQUEST_TIMEOUT);
        let cut = error.downcast_ref::<RequestTimedOut>().unwrap();
        assert_eq!((cut.verb, cut.path.as_str()), ("patch", "/api/v1/namespaces/a/secrets/token"));
        assert_eq!(
            error.to_string(),
            "the Kubernetes API server did not answer patch /api/v1/namespaces/a/secrets/token within 15s \
             (--kube-request-timeout-seconds); the call is retried"
        );
        assert_eq!(count(&timeouts, "patch"), 1);
        assert!(timed_out(&kube::Error::Service(error)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_kube_call_that_times_out_is_a_recognisable_kube_error() {
        let (service, timeouts) = bounded(Server::Hangs);
        let client = kube::Client::new(service, "default");
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(client, "a");
        let error = secrets.get("token").await.err().unwrap();
        assert!(timed_out(&error), "{error}");
        assert!(
            error.to_string().contains("did not answer get /api/v1/namespaces/a/secrets/token within 15s")
        );
        assert_eq!(count(&timeouts, "get"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_body_that_stalls_times_out_at_the_same_deadline() {
        let (mut service, timeouts) = bounded(Server::SendsHeadersOnly);
        let started = Instant::now();
        let response =
            service.call(request(http::Method::GET, "/api/v1/namespaces/a/secrets")).await.unwrap();
        let mut body = response.into_body();
        let error = next_frame(&mut body).await.unwrap().err().unwrap();
        assert_eq!(started.elapsed(), DEFAULT_REQUEST_TIMEOUT);
        assert!(error.is::<RequestTimedOut>(), "{error}");
        assert_eq!(count(&timeouts, "get"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_stream_is_not_cut() {
        let (mut service, timeouts) = bounded(Server::SendsHeadersOnly);
        for uri in
            ["/api/v1/secrets?watch=true&timeoutSeconds=290", "/api/v1/secrets?resourceVersion=1&watch=1"]
        {
            let response = service.call(request(http::Method::GET, uri)).await.unwrap();
            let mut body = response.into_body();
            let quiet = tokio::time::timeout(Duration::from_secs(290), next_frame(&mut body)).await;
            assert!(quiet.is_err(), "the watch of {uri} was cut");
        }
        assert_eq!(count(&timeouts, "watch"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_without_headers_times_out() {
        let (mut service, timeouts) = bounded(Server::Hangs);
        let error =
            service.call(request(http::Method::GET, "/api/v1/secrets?watch=true")).await.err().unwrap();
        assert!(error.is::<RequestTimedOut>(), "{error}");
        assert_eq!(count(&timeouts, "watch"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_in_time_passes_through() {
        let (mut service, timeouts) = bounded(Server::Answers);
        let response = service.call(request(http::Method::PUT, "/apis/x/v1/leases/l")).await.unwrap();
        let mut body = response.into_body();
        let frame = next_frame(&mut body).await.unwrap().unwrap();
        assert_eq!(frame.into_data().ok().as_deref(), Some(&b"{}"[..]));
        assert!(next_frame(&mut body).await.is_none());
        assert_eq!(count(&timeouts, "update"), 0);
    }

    #[test]
    fn allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(RateLimit { qps: 10.0, burst: 3 }, start);
        for _ in 0..3 {
            assert_eq!(bucket.reserve(start), Duration::ZERO);
        }
        assert_eq!(bucket.reserve(start), Duration::from_millis(100));
        assert_eq!(bucket.reserve(start), Duration::from_millis(200));
        // After a second of quiet the bucket is full again (capped at the burst).
        let later = start + Duration::from_secs(10);
        for _ in 0..3 {
            assert_eq!(bucket.reserve(later), Duration::ZERO);
        }
        assert!(bucket.reserve(later) > Duration::ZERO);
    }
}
