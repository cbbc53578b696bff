//! Leader election against an in-memory Lease API, on paused time.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use jiff::Timestamp;
use kube::client::Body;
use tower::BoxError;

use super::*;

const DURATION: Duration = Duration::from_secs(15);

/// The Lease as the API server stores it.
#[derive(Default)]
struct Store {
    lease: Mutex<Option<Lease>>,
    version: AtomicU64,
}

/// One replica's view of the API server: the shared store, behind switches for faults.
#[derive(Clone)]
struct ApiServer {
    store: Arc<Store>,
    /// Requests are never answered (a partition, a hung connection).
    hangs: Arc<AtomicBool>,
    /// Requests fail with 500.
    fails: Arc<AtomicBool>,
}

impl ApiServer {
    fn new(store: &Arc<Store>) -> Self {
        Self { store: Arc::clone(store), hangs: Arc::default(), fails: Arc::default() }
    }

    fn answer(&self, method: &http::Method, body: &[u8]) -> (u16, Vec<u8>) {
        let status = |code: u16| {
            let reason = match code {
                404 => "NotFound",
                409 => "Conflict",
                _ => "InternalError",
            };
            let status = serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
                "message": "fake",
            });
            (code, serde_json::to_vec(&status).unwrap())
        };
        if self.fails.load(Ordering::SeqCst) {
            return status(500);
        }
        let mut stored = self.store.lease.lock().unwrap();
        match *method {
            http::Method::GET => match stored.as_ref() {
                Some(lease) => (200, serde_json::to_vec(lease).unwrap()),
                None => status(404),
            },
            http::Method::POST | http::Method::PUT => {
                let mut lease: Lease = serde_json::from_slice(body).unwrap();
                let current = stored.as_ref().and_then(|l| l.metadata.resource_version.clone());
                let expected = if *method == http::Method::POST {
                    None
                } else {
                    lease.metadata.resource_version.clone()
                };
                if current != expected {
                    return status(409);
                }
                let version = self.store.version.fetch_add(1, Ordering::SeqCst) + 1;
                lease.metadata.resource_version = Some(version.to_string());
                *stored = Some(lease.clone());
                (if *method == http::Method::POST { 201 } else { 200 }, serde_json::to_vec(&lease).unwrap())
            }
            _ => status(405),
        }
    }
}

impl tower::Service<http::Request<Body>> for ApiServer {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let server = self.clone();
        Box::pin(async move {
            if server.hangs.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            let method = request.method().clone();
            let body = request.into_body().collect_bytes().await?;
            let (code, answer) = server.answer(&method, &body);
            Ok(http::Response::builder().status(code).body(Body::from(answer))?)
        })
    }
}

fn candidate(server: &ApiServer, identity: &str, clock: Clock) -> LeaderElection {
    let client = kube::Client::new(server.clone(), "default");
    LeaderElection::new(client, "ops", "operator", identity, DURATION).with_clock(clock)
}

fn holder(store: &Store) -> Option<String> {
    store.lease.lock().unwrap().as_ref()?.spec.as_ref()?.holder_identity.clone()
}

/// Two replicas on one Lease, with one wall clock that follows tokio's paused time.
fn replicas() -> (Arc<Store>, (ApiServer, LeaderElection), (ApiServer, LeaderElection)) {
    let store = Arc::new(Store::default());
    let clock = Clock::following_tokio("2026-01-01T00:00:00Z".parse::<Timestamp>().unwrap());
    let (a, b) = (ApiServer::new(&store), ApiServer::new(&store));
    let (leader, standby) = (candidate(&a, "a", clock), candidate(&b, "b", clock));
    (store, (a, leader), (b, standby))
}

#[tokio::test(start_paused = true)]
async fn a_renewal_that_never_answers_ends_the_lead_at_the_renew_deadline() {
    let (store, (server, leader), _) = replicas();
    let renewed_at = leader.acquire().await;
    assert_eq!(holder(&store).as_deref(), Some("a"));

    server.hangs.store(true, Ordering::SeqCst);
    let lost = tokio::time::timeout(10 * DURATION, leader.keep(renewed_at)).await;
    assert_eq!(lost, Ok(LeadLost::NotRenewed));
    assert_eq!(renewed_at.elapsed(), leader.renew_deadline());
    assert!(leader.renew_deadline() < DURATION);
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_stops_before_a_standby_can_take_over() {
    let (store, (server, leader), (_, standby)) = replicas();
    let renewed_at = leader.acquire().await;
    let start = Instant::now();

    let keeping = tokio::spawn(async move {
        let lost = leader.keep(renewed_at).await;
        (lost, Instant::now())
    });
    let standing_by = tokio::spawn(async move { standby.acquire().await });
    // The leader renews for a while, then its connection hangs.
    tokio::time::sleep(Duration::from_secs(22)).await;
    assert_eq!(holder(&store).as_deref(), Some("a"));
    server.hangs.store(true, Ordering::SeqCst);

    let (lost, stopped_at) = tokio::time::timeout(10 * DURATION, keeping).await.unwrap().unwrap();
    let took_over_at = standing_by.await.unwrap();
    assert_eq!(lost, LeadLost::NotRenewed);
    assert_eq!(holder(&store).as_deref(), Some("b"));
    // The last renewal started at 20 s: the leader stops at 30 s, the standby may take over
    // from 35 s on (a third of the duration later).
    assert_eq!(stopped_at - start, Duration::from_secs(30));
    assert!(stopped_at + DURATION / 3 <= took_over_at, "stopped {stopped_at:?}, taken over {took_over_at:?}");
}

#[tokio::test(start_paused = true)]
async fn a_renewal_that_fails_briefly_is_retried_and_keeps_the_lead() {
    let (store, (server, leader), (_, standby)) = replicas();
    let renewed_at = leader.acquire().await;
    let keeping = tokio::spawn(async move { leader.keep(renewed_at).await });
    let standing_by = tokio::spawn(async move { standby.acquire().await });

    tokio::time::sleep(Duration::from_secs(4)).await;
    server.fails.store(true, Ordering::SeqCst);
    // Failures from 4 s to 8 s: the renewal due at 5 s succeeds on a retry after 8 s, before the
    // renew deadline (10 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    server.fails.store(false, Ordering::SeqCst);

    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(!keeping.is_finished(), "the leader gave up");
    assert!(!standing_by.is_finished(), "the standby took over");
    assert_eq!(holder(&store).as_deref(), Some("a"));
    keeping.abort();
    standing_by.abort();
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_lease_was_taken_stops_at_its_next_renewal() {
    let (store, (_, leader), _) = replicas();
    let renewed_at = leader.acquire().await;
    if let Some(spec) = store.lease.lock().unwrap().as_mut().and_then(|l| l.spec.as_mut()) {
        spec.holder_identity = Some("b".into());
    }
    assert_eq!(leader.keep(renewed_at).await, LeadLost::TakenOver);
    assert_eq!(renewed_at.elapsed(), DURATION / 3);
}
