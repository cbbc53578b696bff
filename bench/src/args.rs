//! Command-line parameters of the harness.

use std::path::PathBuf;

/// The scenarios (BENCHMARKS.md describes each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Claims built and signed per second on one core (no cluster needed).
    TokenCore,
    /// N TenantAccess applied at once until all are Ready, then an admin-token rotation until
    /// all are re-signed; each against the floor client.
    Convergence,
    /// N tenants with health checks on and nothing changing: writes, CPU, RSS.
    Idle,
    /// RSS with many TenantAccess, then with many unrelated Secrets added.
    Memory,
    /// What the health checks cost the Tinybird plan, per day, at defaults and before the
    /// budget; how fast a removed pipe is detected (not in the default list: it measures
    /// windows of several minutes).
    ProbeCost,
    /// Latency of sequential AdmissionReviews to the webhook, over HTTPS (no cluster needed).
    Admission,
    /// N tenants with a Secret and a Clerk template; the admin token revoked by annotation:
    /// refresh -> every Secret, every template on the new key, against the floor.
    Revoke,
    /// Issue 27: 10,000 and 100,000 TenantAccesses over 1,000 namespaces: time to all Ready,
    /// RSS and cost per tenant, a restart with everything in place, a rotation against both
    /// floors with another client's latency (not in the default list: about an hour).
    Scale,
}

/// Benchmarks tenant-access-operator (a separate release process) against a real API server and
/// the Tinybird emulator, and prints a Markdown table (and writes JSON).
#[derive(Debug, Clone, clap::Parser, serde::Serialize)]
#[command(name = "tenant-access-bench", version)]
pub struct Args {
    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "token-core,convergence,idle,memory,admission,revoke"
    )]
    pub scenarios: Vec<Scenario>,
    /// TenantAccess resources in the convergence, rotation and idle scenarios.
    #[arg(long, default_value_t = 1000)]
    pub tenants: usize,
    /// Namespaces the tenants are spread over.
    #[arg(long, default_value_t = 10)]
    pub tenant_namespaces: usize,
    /// Runs of each timed scenario (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Length of the idle window, seconds.
    #[arg(long, default_value_t = 240)]
    pub idle_seconds: u64,
    /// Health-check interval of the idle scenario's tenants, seconds (probes happen during the
    /// window; none may cause a write).
    #[arg(long, default_value_t = 60)]
    pub idle_health_interval_seconds: u64,
    /// TenantAccess resources in the memory scenario.
    #[arg(long, default_value_t = 10_000)]
    pub memory_tenants: usize,
    /// Unrelated Secrets added in the memory scenario.
    #[arg(long, default_value_t = 10_000)]
    pub unrelated_secrets: usize,
    /// Size of each unrelated Secret, bytes.
    #[arg(long, default_value_t = 10_240)]
    pub unrelated_secret_bytes: usize,
    /// Whether the memory scenario also restarts the operator with everything in place and
    /// measures again (initial lists included).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub memory_restart: bool,
    /// Quiet time before memory is sampled, seconds.
    #[arg(long, default_value_t = 30)]
    pub settle_seconds: u64,
    /// Tenant counts of the probe-cost scenario (2 pipes each out of 10), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub probe_cost_tenants: Vec<usize>,
    /// Length of each measured window of the probe-cost scenario, seconds (two at each count).
    #[arg(long, default_value_t = 600)]
    pub probe_cost_seconds: u64,
    /// Bound of the probe-cost scenario's wait for a removed (and then restored) pipe to be
    /// reported, seconds (a return is reported within an interval and one budget slot: 732 s
    /// at the defaults).
    #[arg(long, default_value_t = 900)]
    pub probe_cost_detection_bound_seconds: u64,
    /// Tenant counts of the scale scenario, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub scale_tenants: Vec<usize>,
    /// Namespaces the scale scenario's tenants are spread over.
    #[arg(long, default_value_t = 1000)]
    pub scale_namespaces: usize,
    /// Length of the token-core loop, seconds.
    #[arg(long, default_value_t = 5)]
    pub token_core_seconds: u64,
    /// Bound of every wait (all Ready, all re-signed, ...), seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_seconds: u64,
    /// The operator's `--concurrency`, also the floor client's.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
    /// The operator's `--kube-qps`, also the floor client's.
    #[arg(long, default_value_t = 200.0)]
    pub kube_qps: f64,
    /// The operator's `--kube-burst`, also the floor client's.
    #[arg(long, default_value_t = 400)]
    pub kube_burst: u32,
    /// Concurrent server-side applies when the harness creates objects (no client-side limit).
    #[arg(long, default_value_t = 64)]
    pub apply_concurrency: usize,
    /// The operator binary (default: target/release/tenant-access in the repository).
    #[arg(long)]
    pub operator_bin: Option<PathBuf>,
    /// More arguments for `tenant-access run` (repeat the flag; e.g. `--operator-arg=--resync-seconds=60`).
    #[arg(long = "operator-arg", allow_hyphen_values = true)]
    pub operator_args: Vec<String>,
    /// Environment for `tenant-access run`, `KEY=VALUE` (repeat the flag; e.g.
    /// `--operator-env MALLOC_ARENA_MAX=2`).
    #[arg(long = "operator-env", value_parser = parse_key_value)]
    pub operator_env: Vec<(String, String)>,
    /// AdmissionReviews sent one after another in the admission scenario.
    #[arg(long, default_value_t = 1000)]
    pub admission_reviews: usize,
    /// Where results.json, results.md and the operator logs go.
    #[arg(long, default_value = "target/bench")]
    pub output_dir: PathBuf,
}

impl Args {
    /// Whether a scenario was asked for.
    #[must_use]
    pub fn wants(&self, scenario: Scenario) -> bool {
        self.scenarios.contains(&scenario)
    }
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}
