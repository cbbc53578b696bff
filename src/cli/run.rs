use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::CliError;
use crate::runtime::controller::{RotationBoost, RunConfig, StartError, run_with_event_client};
use crate::runtime::leader::LeadLost;

#[derive(Debug, clap::Args)]
pub(super) struct RunArgs {
    /// Namespaces to serve, comma-separated (default: all). With exactly one, the operator
    /// needs rights in that namespace only and ClusterTinybirdWorkspaces are not used.
    #[arg(long = "namespaces", env = "TENANT_ACCESS_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Namespace holding ClusterTinybirdWorkspace admin tokens (the operator's own).
    #[arg(long, env = "TENANT_ACCESS_CLUSTER_RESOURCE_NAMESPACE", default_value = "tenant-access-system")]
    cluster_resource_namespace: String,
    /// Concurrent reconciles per controller.
    #[arg(long, env = "TENANT_ACCESS_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Re-check every object at least this often (seconds).
    #[arg(long, env = "TENANT_ACCESS_RESYNC_SECONDS", default_value_t = 600)]
    resync_seconds: u64,
    /// Client-side limit on Kubernetes API requests per second.
    #[arg(long, env = "TENANT_ACCESS_KUBE_QPS", default_value_t = 200.0)]
    kube_qps: f64,
    /// Requests allowed at once before --kube-qps applies.
    #[arg(long, env = "TENANT_ACCESS_KUBE_BURST", default_value_t = 400)]
    kube_burst: u32,
    /// Client-side limit while an admin-token rotation re-signs the token Secrets (every tenant
    /// holds a dead token until its Secret is rewritten): the writes then go at the API
    /// server's pace, bounded by --concurrency and its flow control (429 Retry-After is
    /// honoured). At or below --kube-qps: no lift.
    #[arg(long, env = "TENANT_ACCESS_ROTATION_KUBE_QPS", default_value_t = 1000.0)]
    rotation_kube_qps: f64,
    /// Longest time a Kubernetes request (other than a watch) may take, answer included; a
    /// request cut by it is counted and retried.
    #[arg(long, env = "TENANT_ACCESS_KUBE_REQUEST_TIMEOUT_SECONDS", default_value_t = 15)]
    kube_request_timeout_seconds: u64,
    /// Client-side limit on Kubernetes events per second (sent apart from the other requests,
    /// so that events never delay a token; when more queue up, the excess is dropped and counted).
    #[arg(long, env = "TENANT_ACCESS_EVENT_QPS", default_value_t = 50.0)]
    event_qps: f64,
    /// Events allowed at once before --event-qps applies.
    #[arg(long, env = "TENANT_ACCESS_EVENT_BURST", default_value_t = 100)]
    event_burst: u32,
    /// Requests the operator may make to one Clerk instance per --clerk-budget-window (Clerk
    /// allows 100 per 10 s on development instances, 1000 on production ones).
    #[arg(long, env = "TENANT_ACCESS_CLERK_REQUEST_BUDGET", default_value_t = 90)]
    clerk_request_budget: u32,
    /// Window of --clerk-request-budget, in seconds.
    #[arg(long, env = "TENANT_ACCESS_CLERK_BUDGET_WINDOW_SECONDS", default_value_t = 10)]
    clerk_budget_window_seconds: u64,
    /// Health probes in flight at once, over all TenantAccess resources.
    #[arg(long, env = "TENANT_ACCESS_PROBE_CONCURRENCY", default_value_t = 8)]
    probe_concurrency: usize,
    /// Log format.
    #[arg(long, env = "TENANT_ACCESS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level or filter (e.g. `info`, `tenant_access=debug`); RUST_LOG overrides it.
    #[arg(long, env = "TENANT_ACCESS_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Kubeconfig file (default: in-cluster config, then $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "TENANT_ACCESS_KUBECONFIG")]
    kubeconfig: Option<String>,
    #[command(flatten)]
    leadership: Leadership,
    #[command(flatten)]
    webhook: super::webhook::WebhookArgs,
    /// Name of this replica, for events (the pod name).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

pub(super) fn run(args: RunArgs) -> Result<ExitCode, CliError> {
    init_logging(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Input(format!("starting the async runtime: {e}")))?;
    let outcome = runtime.block_on(async move {
        let limit = crate::adapters::kube_client::RateLimit { qps: args.kube_qps, burst: args.kube_burst };
        let kube_config = super::kube_config(args.kubeconfig.as_deref(), None).await?;
        let events_limit =
            crate::adapters::kube_client::RateLimit { qps: args.event_qps, burst: args.event_burst };
        let metrics = crate::runtime::metrics::Metrics::default();
        let bounds = crate::adapters::kube_client::RequestBounds {
            request_timeout: Duration::from_secs(args.kube_request_timeout_seconds.max(1)),
            timeouts: metrics.kube_request_timeouts.clone(),
        };
        let events_client = super::limited_client(kube_config.clone(), events_limit, bounds.clone())?;
        let namespaces: Vec<String> =
            args.namespaces.iter().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect();
        // The webhook reads with a client and budget of its own: a flood of reviews (any pod
        // can send them) must not spend the controllers' budget.
        let webhook = match args.webhook.config(&args.cluster_resource_namespace, &namespaces)? {
            Some(webhook) => {
                let limit = args.webhook.api_rate_limit();
                Some((webhook, super::limited_client(kube_config.clone(), limit, bounds.clone())?))
            }
            None => None,
        };
        let (client, pace) = crate::adapters::kube_client::build_paced(kube_config, limit, bounds)
            .map_err(|e| CliError::Input(format!("creating the Kubernetes client: {e}")))?;
        let rotation_boost = (args.rotation_kube_qps > args.kube_qps).then(|| RotationBoost {
            pace,
            limit: crate::adapters::kube_client::RateLimit {
                qps: args.rotation_kube_qps,
                // A second's worth at once, at least the steady burst.
                burst: args.kube_burst.max(args.rotation_kube_qps.min(f64::from(u32::MAX)) as u32),
            },
        });
        let config = RunConfig {
            namespaces,
            cluster_resource_namespace: args.cluster_resource_namespace,
            concurrency: args.concurrency,
            resync: Duration::from_secs(args.resync_seconds.max(10)),
            instance: args.instance,
            probe_concurrency: args.probe_concurrency,
            clerk_budget: crate::adapters::clerk::RequestBudget {
                requests: args.clerk_request_budget.max(1),
                window: Duration::from_secs(args.clerk_budget_window_seconds.max(1)),
            },
            metrics,
            synced: Arc::default(),
            rotation_boost,
        };
        supervise(client, events_client, config, &args.leadership, webhook).await
    });
    // What is left (event sending, probes, a DNS lookup on a blocking thread) must not hold the
    // exit, least of all after a lost lease.
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome
}

/// Runs the admin server and the controllers, under leader election when enabled.
async fn supervise(
    client: kube::Client,
    events_client: kube::Client,
    config: RunConfig,
    leadership: &Leadership,
    webhook: Option<(crate::runtime::webhook::WebhookConfig, kube::Client)>,
) -> Result<ExitCode, CliError> {
    // One shutdown signal for everything on SIGTERM/Ctrl-C (a lost lease stops at once instead).
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let on_stop = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });

    let standby = Arc::new(AtomicBool::new(leadership.enabled));
    if let Some(address) = parse_address(&leadership.admin_address).map_err(CliError::Input)? {
        let state = crate::runtime::admin_server::AdminState {
            registry: Arc::new(config.metrics.registry()),
            synced: config.synced.clone(),
            standby: standby.clone(),
        };
        let server = crate::runtime::admin_server::serve(address, state, on_stop());
        tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::error!(%error, "the admin server stopped");
            }
        });
    }

    // Every replica serves the webhook, leader or not.
    if let Some((webhook, webhook_client)) = webhook {
        let server = crate::runtime::webhook::serve(webhook_client, webhook, on_stop());
        tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::error!(%error, "the admission webhook stopped");
            }
        });
    }

    // A refreshed admin token held in memory (key_custody) outlives the controllers, a lost
    // lease included: the process exits only once it is in its Secret.
    let custody = crate::runtime::controller::key_custody::KeyCustody::process();
    if !leadership.enabled {
        let ran =
            bounded_shutdown(run_with_event_client(client, events_client, config, on_stop()), on_stop())
                .await;
        custody.drained().await;
        return Ok(exit_of(ran));
    }
    let namespace = leadership.namespace.clone().unwrap_or_else(|| config.cluster_resource_namespace.clone());
    let identity = config.instance.clone().unwrap_or_else(default_identity);
    let election = crate::runtime::leader::LeaderElection::new(
        client.clone(),
        &namespace,
        &leadership.lease_name,
        &identity,
        Duration::from_secs(leadership.lease_duration_seconds),
    );
    let renewed_at = tokio::select! {
        renewed_at = election.acquire() => renewed_at,
        () = on_stop() => return Ok(ExitCode::SUCCESS),
    };
    standby.store(false, Ordering::SeqCst);
    let controllers =
        bounded_shutdown(run_with_event_client(client.clone(), events_client, config, on_stop()), on_stop());
    let lead = run_while_leading(controllers, election.keep(renewed_at)).await;
    custody.drained().await;
    let lead = match lead {
        Ok(lead) => lead,
        Err(error) => {
            election.release().await;
            return Ok(exit_of(Err(error)));
        }
    };
    if let Some(lost) = lead {
        let why = match lost {
            LeadLost::TakenOver => "another replica took it over",
            LeadLost::NotRenewed => "it could not be renewed in time",
        };
        eprintln!(
            "error: lost the leader lease {namespace}/{} ({why}): stopped reconciling; exiting so that a restart stands by",
            leadership.lease_name
        );
        return Ok(ExitCode::from(super::exit::FAILURE));
    }
    election.release().await;
    Ok(ExitCode::SUCCESS)
}

/// Runs `controllers` while `keep` holds the lead (renewing during a graceful shutdown too). When
/// the lead is lost, drops the controllers at once (every in-flight reconcile is cancelled: a
/// standby may take over soon) and says why.
async fn run_while_leading(
    controllers: impl Future<Output = Result<(), StartError>>,
    keep: impl Future<Output = LeadLost>,
) -> Result<Option<LeadLost>, StartError> {
    tokio::select! {
        ran = controllers => ran.map(|()| None),
        lost = keep => Ok(Some(lost)),
    }
}

/// The exit code of controllers that ran (or could not start: said on stderr, exit 1).
fn exit_of(ran: Result<(), StartError>) -> ExitCode {
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(super::exit::FAILURE)
        }
    }
}

/// How long in-flight work may take after a shutdown request before the process exits anyway
/// (a watch that keeps failing, e.g. for lack of RBAC, would otherwise hold it until SIGKILL).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs `work`; once `stop` fires, gives it [`SHUTDOWN_GRACE`] to finish.
async fn bounded_shutdown(
    work: impl Future<Output = Result<(), StartError>>,
    stop: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let deadline = async {
        stop.await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        tracing::warn!("in-flight work did not finish in time after the shutdown request; exiting");
    };
    tokio::select! {
        ran = work => ran,
        () = deadline => Ok(()),
    }
}

/// A lease identity when POD_NAME is not set: host name and process id.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

/// Admin server and leader-election settings.
#[derive(Debug, clap::Args)]
struct Leadership {
    /// Address of the admin server (/metrics, /livez, /readyz); empty disables it.
    #[arg(long, env = "TENANT_ACCESS_ADMIN_ADDRESS", default_value = "0.0.0.0:8080")]
    admin_address: String,
    /// Run under leader election (for more than one replica).
    #[arg(long = "leader-election", env = "TENANT_ACCESS_LEADER_ELECTION")]
    enabled: bool,
    /// Namespace of the leader Lease (default: the cluster-resource namespace).
    #[arg(long = "leader-election-namespace", env = "TENANT_ACCESS_LEADER_ELECTION_NAMESPACE")]
    namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long = "leader-election-lease-name", default_value = "tenant-access-operator")]
    lease_name: String,
    /// Seconds a standby waits for an unrenewed Lease before taking over.
    #[arg(long = "leader-election-lease-duration-seconds", default_value_t = 15)]
    lease_duration_seconds: u64,
}

fn parse_address(text: &str) -> Result<Option<SocketAddr>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e| format!("--admin-address {text:?} is not an address such as 0.0.0.0:8080: {e}"))
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested: finishing in-flight reconciles");
}

fn init_logging(args: &RunArgs) -> Result<(), CliError> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&args.log_level))
        .map_err(|e| CliError::Input(format!("--log-level {:?}: {e}", args.log_level)))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| CliError::Input(format!("initialising logging: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets its flag when dropped.
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn losing_the_lead_cancels_the_controllers_at_once() {
        let cancelled = Arc::new(AtomicBool::new(false));
        let controllers = {
            let flag = DropFlag(cancelled.clone());
            async move {
                let _flag = flag;
                std::future::pending::<()>().await;
                Ok(())
            }
        };
        let keep = async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            LeadLost::NotRenewed
        };
        let started = tokio::time::Instant::now();
        assert_eq!(run_while_leading(controllers, keep).await.unwrap(), Some(LeadLost::NotRenewed));
        assert!(cancelled.load(Ordering::SeqCst), "a reconcile outlived the lead");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn controllers_that_finish_while_leading_keep_the_lease_for_its_release() {
        let keep = std::future::pending::<LeadLost>();
        assert_eq!(run_while_leading(async { Ok(()) }, keep).await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn controllers_that_cannot_start_exit_non_zero() {
        let keep = std::future::pending::<LeadLost>();
        let failed = async { Err(StartError("the Tinybird HTTP client could not be built: no TLS".into())) };
        let error = run_while_leading(failed, keep).await.unwrap_err();
        assert!(error.to_string().starts_with("cannot start: the Tinybird HTTP client"), "{error}");
        assert_eq!(exit_of(Err(error)), ExitCode::from(super::super::exit::FAILURE));
        let failed = async { Err(StartError("no client".into())) };
        assert!(bounded_shutdown(failed, std::future::pending()).await.is_err(), "not an exit 0");
        assert_eq!(exit_of(Ok(())), ExitCode::SUCCESS);
    }
}
