//! An API server outage, as the operator sees it: its connection to the API server cut for half a
//! minute (a TCP proxy that drops every connection, then lets them through again). Failing
//! reconciles back off, and everything catches up within seconds of the API server's return:
//! new TenantAccesses, and what failed during the outage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use support::{Env, Operator, has_condition, is_ready};
use tenant_access_emulators::Fault;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const OUTAGE: Duration = Duration::from_secs(30);
/// How soon after the API server's return the operator must have caught up.
const RECOVERY_BOUND: Duration = Duration::from_secs(8);

const PROBED: &str = "  workspaceRef: {name: analytics}\n  scopes: [{resource: top_pages, fixedParams: {org: acme}}]\n  secret: {}\n  healthCheck: {interval: 5s, timeout: 1s}\n";

/// A TCP proxy to the API server that can cut every connection and refuse new ones.
struct Proxy {
    port: u16,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (open, connections) = (open.clone(), connections.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is closed at once
                    }
                    let upstream = upstream.clone();
                    let forward = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    connections.lock().unwrap().push(forward);
                }
            }
        });
        Self { port, open, connections, accept }
    }

    /// Cuts every connection and refuses new ones.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
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
    env.tenant_access("probed", PROBED).await;
    env.wait_access("probed", has_condition("EndpointsHealthy", "True", "Healthy")).await;

    // The outage. Meanwhile the endpoint breaks: its reconcile cannot write the status.
    proxy.cut();
    let cut_at = Instant::now();
    let failed_before = operator.reconciles("TenantAccess", "kube_write");
    env.tinybird.add_fault(Fault::status(503).for_pipe("top_pages")).unwrap();
    support::eventually("a status write failing during the outage", || async {
        operator.reconciles("TenantAccess", "kube_write") > failed_before
    })
    .await;
    tokio::time::sleep(OUTAGE.saturating_sub(cut_at.elapsed())).await;
    let failed = operator.reconciles("TenantAccess", "kube_write") - failed_before;
    proxy.restore();
    let restored_at = Instant::now();

    // Backoff during the outage: a handful of attempts, not one every second or two.
    assert!(failed <= 8, "{failed} failed reconciles of one TenantAccess in a {OUTAGE:?} outage");

    // A TenantAccess created after the return is served within seconds, and what failed during
    // the outage is done within seconds too.
    env.tenant_access("fresh", PROBED).await;
    env.wait_access("fresh", is_ready()).await;
    let fresh_after = restored_at.elapsed();
    env.wait_access("probed", has_condition("EndpointsHealthy", "False", "ServerError")).await;
    let flip_after = restored_at.elapsed();
    assert!(
        fresh_after <= RECOVERY_BOUND,
        "a TenantAccess created after the outage was Ready {fresh_after:?} after the API server's return (bound {RECOVERY_BOUND:?})"
    );
    assert!(
        flip_after <= RECOVERY_BOUND,
        "a status write that failed during the outage was done {flip_after:?} after the API server's return (bound {RECOVERY_BOUND:?})"
    );
    operator.stop().await;
}
