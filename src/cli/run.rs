use std::process::ExitCode;
use std::time::Duration;

use super::CliError;
use crate::controller::{RunConfig, run as run_controllers};

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
    runtime.block_on(async move {
        let limit = crate::kube_client::RateLimit { qps: args.kube_qps, burst: args.kube_burst };
        let client = super::kube_client_limited(args.kubeconfig.as_deref(), limit).await?;
        let config = RunConfig {
            namespaces: args
                .namespaces
                .into_iter()
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect(),
            cluster_resource_namespace: args.cluster_resource_namespace,
            concurrency: args.concurrency,
            resync: Duration::from_secs(args.resync_seconds.max(10)),
            instance: args.instance,
            probe_concurrency: args.probe_concurrency,
            clerk_budget: crate::clerk::RequestBudget {
                requests: args.clerk_request_budget.max(1),
                window: Duration::from_secs(args.clerk_budget_window_seconds.max(1)),
            },
        };
        run_controllers(client, config, shutdown_signal()).await;
        Ok(ExitCode::SUCCESS)
    })
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
