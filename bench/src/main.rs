//! `tenant-access-bench`: the benchmark harness. It starts (or reuses, through
//! `TEST_KUBECONFIG`) a real API server, runs the Tinybird emulator in-process and the operator
//! as a separate release process, and reports convergence and rotation against a floor client,
//! idle cost, memory at scale and the token core's speed, as Markdown and JSON.

mod admission;
mod apiserver;
mod args;
mod bench;
mod convergence;
mod error;
mod fixtures;
mod floor;
mod idle;
mod machine;
mod memory;
mod operator;
mod probe_cost;
mod progress;
mod report;
mod revoke;
mod scale;
mod token_core;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;

use crate::args::{Args, Scenario};
use crate::bench::Bench;
use crate::error::{BenchError, Result};
use crate::machine::Machine;
use crate::report::Report;

/// Most signatures in the token-core loop (its time bound usually ends it first).
const TOKEN_CORE_MAX_SIGNATURES: u64 = 100_000_000;

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube=warn,kube_runtime=warn,kube_client=warn")
    });
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tenant-access-bench: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) if report.errors.is_empty() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("tenant-access-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<Report> {
    let mut machine = Machine::describe();
    let operator_binary = args
        .operator_bin
        .clone()
        .unwrap_or_else(|| tenant_access_testkit::repo_root().join("target/release/tenant-access"));
    std::fs::create_dir_all(&args.output_dir)
        .map_err(BenchError::io(format!("creating {}", args.output_dir.display())))?;
    let mut report = Report {
        generated_at: jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now())
            .to_string(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: machine.clone(),
        parameters: args.clone(),
        operator_binary: operator_binary.display().to_string(),
        source: source_revision(),
        token_core: None,
        convergence: None,
        idle: None,
        memory: None,
        probe_cost: None,
        admission: None,
        revoke: None,
        scale: None,
        errors: Vec::new(),
    };

    if args.wants(Scenario::TokenCore) {
        tracing::info!(seconds = args.token_core_seconds, "token core: signing on one thread");
        let seconds = Duration::from_secs(args.token_core_seconds.max(1));
        let result = tokio::task::spawn_blocking(move || token_core::run(seconds, TOKEN_CORE_MAX_SIGNATURES))
            .await
            .map_err(|e| BenchError::Fixture(format!("the token-core thread failed: {e}")))?;
        match result {
            Ok(result) => report.token_core = Some(result),
            Err(error) => report.errors.push(format!("token core: {error}")),
        }
    }

    if args.wants(Scenario::Admission) {
        tracing::info!(reviews = args.admission_reviews, "admission: sequential reviews over HTTPS");
        match admission::run(args.admission_reviews).await {
            Ok(result) => report.admission = Some(result),
            Err(error) => report.errors.push(format!("admission: {error}")),
        }
    }

    let cluster_scenarios = [
        Scenario::Convergence,
        Scenario::Idle,
        Scenario::Memory,
        Scenario::ProbeCost,
        Scenario::Revoke,
        Scenario::Scale,
    ];
    if cluster_scenarios.iter().any(|s| args.wants(*s)) {
        if !operator_binary.is_file() {
            return Err(BenchError::Fixture(format!(
                "no operator binary at {}: build it with `cargo build --release --bin tenant-access` (or pass --operator-bin)",
                operator_binary.display()
            )));
        }
        let mut bench = Bench::setup(args.clone(), &operator_binary).await?;
        machine.kube_apiserver = bench.env.client.apiserver_version().await.ok().map(|v| v.git_version);
        report.machine = machine;
        run_cluster_scenarios(&mut bench, &mut report).await;
        bench.env.cleanup().await;
    }

    write_outputs(&args.output_dir, &report)?;
    Ok(report)
}

async fn run_cluster_scenarios(bench: &mut Bench, report: &mut Report) {
    if bench.args.wants(Scenario::Convergence) {
        tracing::info!(tenants = bench.args.tenants, runs = bench.args.runs, "convergence and rotation");
        match convergence::run(bench).await {
            Ok(result) => report.convergence = Some(result),
            Err(error) => report.errors.push(format!("convergence: {error}")),
        }
    }
    if bench.args.wants(Scenario::Idle) {
        tracing::info!(tenants = bench.args.tenants, seconds = bench.args.idle_seconds, "idle");
        match idle::run(bench).await {
            Ok(result) => report.idle = Some(result),
            Err(error) => report.errors.push(format!("idle: {error}")),
        }
    }
    if bench.args.wants(Scenario::Memory) {
        tracing::info!(
            tenants = bench.args.memory_tenants,
            unrelated = bench.args.unrelated_secrets,
            "memory"
        );
        match memory::run(bench).await {
            Ok(result) => report.memory = Some(result),
            Err(error) => report.errors.push(format!("memory: {error}")),
        }
    }
    if bench.args.wants(Scenario::ProbeCost) {
        tracing::info!(tenants = ?bench.args.probe_cost_tenants, "probe cost");
        match probe_cost::run(bench).await {
            Ok(result) => report.probe_cost = Some(result),
            Err(error) => report.errors.push(format!("probe cost: {error}")),
        }
    }
    if bench.args.wants(Scenario::Revoke) {
        tracing::info!(tenants = bench.args.tenants, runs = bench.args.runs, "revoke");
        match revoke::run(bench).await {
            Ok(result) => report.revoke = Some(result),
            Err(error) => report.errors.push(format!("revoke: {error}")),
        }
    }
    if bench.args.wants(Scenario::Scale) {
        tracing::info!(tenants = ?bench.args.scale_tenants, namespaces = bench.args.scale_namespaces, "scale");
        match scale::run(bench).await {
            Ok(result) => report.scale = Some(result),
            Err(error) => report.errors.push(format!("scale: {error}")),
        }
    }
}

/// `git describe --always --dirty` of the repository, when git is there.
fn source_revision() -> Option<String> {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(tenant_access_testkit::repo_root())
        .args(["describe", "--always", "--dirty"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    output.status.success().then(|| text.trim().to_owned())
}

/// Writes results.json and results.md, and prints the Markdown.
fn write_outputs(dir: &std::path::Path, report: &Report) -> Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    let json_path: PathBuf = dir.join("results.json");
    std::fs::write(&json_path, json).map_err(BenchError::io(format!("writing {}", json_path.display())))?;
    let markdown = report.markdown();
    let md_path = dir.join("results.md");
    std::fs::write(&md_path, &markdown).map_err(BenchError::io(format!("writing {}", md_path.display())))?;
    println!("{markdown}");
    println!("JSON: {}", json_path.display());
    Ok(())
}
