//! The Kubernetes client the operator uses: kubeconfig or in-cluster config, with a client-side
//! QPS / burst limit (a token bucket in front of every request) so that a burst of reconciles
//! cannot flood the API server.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Client-side rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub qps: f64,
    /// Requests allowed at once before the rate applies.
    pub burst: u32,
}

/// A token bucket: `burst` tokens, refilled at `qps` per second.
#[derive(Debug)]
struct Bucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(limit: RateLimit, now: Instant) -> Self {
        Self { limit, tokens: f64::from(limit.burst), last: now }
    }

    /// Reserves one token; returns how long the caller must wait before using it.
    fn reserve(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.limit.qps).min(f64::from(self.limit.burst));
        self.tokens -= 1.0;
        if self.tokens >= 0.0 || self.limit.qps <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.limit.qps)
        }
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

/// Builds a client from a kube config with the rate limit in front.
///
/// # Errors
/// When the config cannot produce a client (TLS, auth).
pub fn build(config: kube::Config, limit: RateLimit) -> Result<kube::Client, kube::Error> {
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder.with_layer(&RateLimitLayer::new(limit)).build())
}

#[cfg(test)]
mod tests {
    use super::*;

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
