//! An API server outage, as the operator sees it: its connection to the API server cut for half a
//! minute (a TCP proxy that drops every connection, then lets them through again). Failing
//! reconciles back off, and everything catches up within seconds of the API server's return:
//! new TenantAccesses, and the writes that failed during the outage (a renewal, a status).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use support::{Env, Operator, has_condition, is_ready};
use tenant_access::api::TenantAccess;
use tenant_access_emulators::Fault;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const OUTAGE: Duration = Duration::from_secs(40);
/// How soon after the API server's return the operator must have caught up: the bound the README
/// states for every outage (measured 0.6-3 s).
const RECOVERY_BOUND: Duration = Duration::from_secs(10);

/// Probed every five seconds: its endpoint breaks during the outage, a status-only change.
const PROBED: &str = "  workspaceRef: {name: analytics}\n  scopes: [{resource: top_pages, fixedParams: {org: acme}}]\n  secret: {}\n  healthCheck: {interval: 5s, timeout: 1s}\n";
/// A token renewed every ten seconds or so: renewals fall due during the outage.
const RENEWING: &str = "  workspaceRef: {name: analytics}\n  scopes: [{resource: top_pages, fixedParams: {org: acme}}]\n  secret: {}\n  lifetime: 1m\n  renewBefore: 50s\n  healthCheck: {interval: '0'}\n";

/// A TCP proxy to the API server that can cut every connection and refuse new ones.
struct Proxy {
    port: u16,
    /// Whether connections go through; every forwarding ends the moment it turns false.
    open: Arc<tokio::sync::watch::Sender<bool>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(tokio::sync::watch::Sender::new(true));
        let accept = tokio::spawn({
            let open = open.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let mut state = open.subscribe();
                    let upstream = upstream.clone();
                    tokio::spawn(async move {
                        // A connection accepted while (or just before) the proxy is cut is
                        // closed at once: the check and the forwarding watch the same state.
                        let cut = state.wait_for(|open| !open);
                        let forward = async {
                            if let Ok(mut server) = TcpStream::connect(upstream).await {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        };
                        tokio::select! {
                            _ = cut => {},
                            () = forward => {},
                        }
                    });
                }
            }
        });
        Self { port, open, accept }
    }

    /// Cuts every connection and refuses new ones.
    fn cut(&self) {
        self.open.send_replace(false);
    }

    fn restore(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The `attempts` of each failed reconcile of TenantAccess `name` the operator recorded after
/// its first `since` events, in order: read from the events' fields (the error policy records
/// `attempts` and the error's `category`), never from their wording.
fn failed_attempts(env: &Env, name: &str, since: usize) -> Vec<u32> {
    support::logged_events()
        .into_iter()
        .skip(since)
        .filter(|event| {
            event.contains_key("category")
                && event.get("namespace").map(String::as_str) == Some(env.name())
                && event.get("name").map(String::as_str) == Some(name)
        })
        .filter_map(|event| event.get("attempts")?.parse().ok())
        .collect()
}

/// The TenantAccess reconciles that failed on a write to the API server, by the operator's
/// `reconciles` counter.
fn failed_writes(operator: &Operator) -> u64 {
    let labels =
        tenant_access::runtime::metrics::ReconcileLabels { kind: "TenantAccess", outcome: "kube_write" };
    operator.metrics.reconciles.get_or_create(&labels).get()
}

/// The token revision a TenantAccess's status reports.
fn revision_of(access: &TenantAccess) -> i64 {
    access.status.as_ref().and_then(|s| s.token.as_ref()).map(|t| t.revision).expect("a token")
}

/// An admin client of the test cluster that goes through `proxy`.
async fn client_through(env: &Env, proxy: &Proxy) -> Client {
    let kubeconfig = Kubeconfig::read_from(env.cluster.admin_kubeconfig()).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    let direct = config.cluster_url.clone();
    assert_eq!(direct.host(), Some("127.0.0.1"), "a local API server");
    config.cluster_url = format!("https://127.0.0.1:{}", proxy.port).parse().unwrap();
    Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_the_operator_catches_up_within_seconds_and_backed_off_meanwhile() {
    let env = Env::new("outage").await;
    let kubeconfig = Kubeconfig::read_from(env.cluster.admin_kubeconfig()).unwrap();
    let direct = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    let upstream =
        format!("{}:{}", direct.cluster_url.host().unwrap(), direct.cluster_url.port_u16().unwrap_or(443));
    let proxy = Proxy::start(upstream).await;
    let client = client_through(&env, &proxy).await;
    client.apiserver_version().await.expect("the API server answers through the proxy");
    let operator = Operator::start(client, Some(env.name()), env.name());
    env.tenant_access("renewing", RENEWING).await;
    env.tenant_access("probed", PROBED).await;
    env.wait_access("renewing", is_ready()).await;
    env.wait_access("probed", has_condition("EndpointsHealthy", "True", "Healthy")).await;

    // The outage: renewals fall due, and an endpoint breaks; neither can be written.
    let failed_before = failed_writes(&operator);
    proxy.cut();
    let cut_at = Instant::now();
    let logged = support::logged_events().len();
    let revision = revision_of(&env.wait_access("renewing", is_ready()).await);
    env.tinybird.add_fault(Fault::status(503).for_pipe("top_pages")).unwrap();
    // Synchronised on the operator's own reconcile counter, not on its log.
    support::eventually("a renewal and a status write failing during the outage", || async {
        failed_writes(&operator) >= failed_before + 2
    })
    .await;
    tokio::time::sleep(OUTAGE.saturating_sub(cut_at.elapsed())).await;
    let failed = failed_writes(&operator) - failed_before;
    proxy.restore();
    let restored_at = Instant::now();

    // Backoff during the outage: every failure counts (1, 2, 3, ...: the delay grows), a
    // handful of attempts in all, not one every second or two. A pass that has nothing to write
    // succeeds even during the outage (its status was already written, or nothing changed), and
    // the count starts again from 1 after it.
    for name in ["renewing", "probed"] {
        let attempts = failed_attempts(&env, name, logged);
        // Shown when an assertion fails: what the operator recorded of each failure.
        let failures: Vec<_> = support::logged_events()
            .into_iter()
            .skip(logged)
            .filter(|e| e.contains_key("category"))
            .collect();
        let counting = attempts.first() == Some(&1)
            && attempts.windows(2).all(|pair| pair[1] == pair[0] + 1 || pair[1] == 1);
        assert!(counting, "the failures of {name} during a {OUTAGE:?} outage: {attempts:?} {failures:#?}");
        assert!(
            attempts.iter().any(|attempt| *attempt >= 3),
            "the backoff of {name} never grew: {attempts:?} {failures:#?}"
        );
        assert!(attempts.len() <= 7, "{} failed reconciles of {name} in a {OUTAGE:?} outage", attempts.len());
    }
    assert!(failed <= 14, "{failed} failed reconciles of two TenantAccesses in a {OUTAGE:?} outage");

    // A TenantAccess created after the return is served within seconds, and what failed during
    // the outage is done within seconds too.
    env.tenant_access("fresh", RENEWING).await;
    env.wait_access("fresh", is_ready()).await;
    let fresh_after = restored_at.elapsed();
    env.wait_access("renewing", support::revision_at_least(revision + 1)).await;
    let renewed_after = restored_at.elapsed();
    env.wait_access("probed", has_condition("EndpointsHealthy", "False", "ServerError")).await;
    let flipped_after = restored_at.elapsed();
    for (what, after) in [
        ("a TenantAccess created after the outage was Ready", fresh_after),
        ("a renewal that failed during the outage was done", renewed_after),
        ("a status write that failed during the outage was done", flipped_after),
    ] {
        assert!(
            after <= RECOVERY_BOUND,
            "{what} {after:?} after the API server's return (bound {RECOVERY_BOUND:?})"
        );
    }
    operator.stop().await;
}
