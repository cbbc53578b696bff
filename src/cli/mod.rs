//! The `tenant-access` command line. `main` parses [`Cli`] and calls [`run`]; each subcommand
//! lives in its own module and returns an [`ExitCode`].

mod cluster;
mod crd;
mod inspect;
mod render;
mod revoke;
mod run;
mod status;
mod webhook;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes shared by the subcommands (2 is clap's usage error).
pub mod exit {
    /// An input could not be read or is invalid.
    pub const FAILURE: u8 = 1;
    /// `inspect`: the token has expired.
    pub const EXPIRED: u8 = 3;
    /// `inspect`: the signature does not verify with the admin token.
    pub const BAD_SIGNATURE: u8 = 4;
    /// `inspect`: the token is not valid yet (`nbf` in the future).
    pub const NOT_YET_VALID: u8 = 5;
    /// `status`: the TenantAccess is not Ready; `renew --wait`: no new token in time.
    pub const NOT_READY: u8 = 6;
    /// `revoke`: Tinybird did not refresh the admin token (nothing changed).
    pub const NOT_REFRESHED: u8 = 7;
    /// `revoke`: the refreshed admin token was lost (the runbook is printed).
    pub const KEY_LOST: u8 = 8;
    /// `inspect --pipes`: a granted pipe's SQL never filters by a fixed param of the token.
    pub const NOT_ISOLATED: u8 = 9;
}

/// Exit codes, as `--help` lists them.
const EXIT_CODES: &str = "Exit codes:
  0  success (inspect: valid, or decoded without a key and not expired)
  1  an input could not be read or is invalid, or a Kubernetes call failed
  2  usage error (unknown flag, missing argument)
  3  inspect: the token has expired
  4  inspect: the signature does not verify with the admin token
  5  inspect: the token is not valid yet (nbf in the future)
  6  status: a TenantAccess is not Ready; renew: a TenantAccess got no new token (refused, no
     spec.secret, or not within --wait); revoke: the rotation did not finish within --wait
  7  revoke: Tinybird did not refresh the admin token (nothing changed)
  8  revoke: the refreshed admin token was lost (the runbook is printed)
  9  inspect --pipes: a granted pipe's SQL never filters by a fixed param of the token (every
     tenant reads every row)";

/// The name of the executable when kubectl runs it as a plugin (`kubectl tenant-access ...`).
pub const KUBECTL_PLUGIN_NAME: &str = "kubectl-tenant_access";

/// Issues, renews and re-signs Tinybird JWTs and Clerk JWT templates for Kubernetes tenants.
#[derive(Debug, Parser)]
#[command(name = "tenant-access", version, about, propagate_version = true, after_long_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML.
    Crd(crd::CrdArgs),
    /// Offline: print the Secret and the Clerk template exactly as the controller would write them.
    Render(render::RenderArgs),
    /// Decode and explain a Tinybird JWT; verify it with --admin-token-file.
    Inspect(inspect::InspectArgs),
    /// Run the operator (the controllers) against the cluster.
    Run(Box<run::RunArgs>),
    /// Force a re-sign of a TenantAccess's token now.
    Renew(status::RenewArgs),
    /// Show a TenantAccess's state: conditions, token schedule, Clerk template, endpoints.
    Status(status::StatusArgs),
    /// Emergency revoke: rotate a workspace's admin token now (every token of the workspace dies
    /// at once) and wait until every dependent token and Clerk template is on the new one.
    #[command(after_long_help = revoke::EXIT_CODES)]
    Revoke(revoke::RevokeArgs),
}

/// Parses the process's arguments. Run as `kubectl-tenant_access` (kubectl's plugin name for
/// `kubectl tenant-access`), help and errors name the command as kubectl users type it.
#[must_use]
pub fn parse_args() -> Cli {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let plugin = std::env::args_os().next().is_some_and(|arg0| {
        std::path::Path::new(&arg0).file_name().is_some_and(|name| name == KUBECTL_PLUGIN_NAME)
    });
    if !plugin {
        return Cli::parse();
    }
    let matches = Cli::command().bin_name("kubectl tenant-access").get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

/// Runs a parsed command line. Errors are printed as one line on stderr.
#[must_use]
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Crd(args) => crd::run(&args),
        Command::Render(args) => render::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Run(args) => run::run(*args),
        Command::Renew(args) => status::renew(&args),
        Command::Status(args) => status::status(&args),
        Command::Revoke(args) => revoke::revoke(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// A failed CLI action: one line, no secret.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{0}")]
    Input(String),
}

/// Reads a file, or stdin for `-`.
fn read_input(path: &str) -> Result<String, CliError> {
    let result =
        if path == "-" { std::io::read_to_string(std::io::stdin()) } else { std::fs::read_to_string(path) };
    result.map_err(|source| CliError::Read { path: path.to_owned(), source })
}

/// Parses `--now`.
fn parse_now(now: Option<&str>) -> Result<jiff::Timestamp, CliError> {
    match now {
        None => Ok(jiff::Timestamp::now()),
        Some(text) => text.parse().map_err(|_| {
            CliError::Input(format!("--now {text:?} is not an RFC 3339 time such as 2026-01-01T00:00:00Z"))
        }),
    }
}

/// Reads an admin token file.
fn read_admin_token(path: &str) -> Result<crate::core::admin_token::AdminToken, CliError> {
    let token = crate::core::admin_token::AdminToken::new(&read_input(path)?);
    if token.expose().is_empty() {
        return Err(CliError::Input(format!("--admin-token-file {path}: the file is empty")));
    }
    Ok(token)
}

/// A Kubernetes client from `--kubeconfig` and `--context`, or the usual inference (in-cluster,
/// `$KUBECONFIG`, `~/.kube/config`), at the rate a person's command needs, requests bounded.
async fn kube_client_with(kubeconfig: Option<&str>, context: Option<&str>) -> Result<kube::Client, CliError> {
    let limit = crate::adapters::kube_client::RateLimit { qps: 20.0, burst: 40 };
    limited_client(
        kube_config(kubeconfig, context).await?,
        limit,
        crate::adapters::kube_client::RequestBounds::default(),
    )
}

/// The Kubernetes configuration: `kubeconfig` (else `$KUBECONFIG` or ~/.kube/config, else
/// in-cluster), at `context` (else the current context).
async fn kube_config(kubeconfig: Option<&str>, context: Option<&str>) -> Result<kube::Config, CliError> {
    let options =
        kube::config::KubeConfigOptions { context: context.map(str::to_owned), ..Default::default() };
    let named =
        |what: String| move |e: kube::config::KubeconfigError| CliError::Input(format!("{what}: {e}"));
    match (kubeconfig, context) {
        (Some(path), _) => {
            let file =
                kube::config::Kubeconfig::read_from(path).map_err(named(format!("--kubeconfig {path}")))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(named(format!("--kubeconfig {path}")))
        }
        (None, Some(context)) => {
            kube::Config::from_kubeconfig(&options).await.map_err(named(format!("--context {context}")))
        }
        (None, None) => kube::Config::infer()
            .await
            .map_err(|e| CliError::Input(format!("no Kubernetes configuration found: {e}"))),
    }
}

/// A client with a client-side rate limit and bounded requests.
fn limited_client(
    config: kube::Config,
    limit: crate::adapters::kube_client::RateLimit,
    bounds: crate::adapters::kube_client::RequestBounds,
) -> Result<kube::Client, CliError> {
    crate::adapters::kube_client::build(config, limit, bounds)
        .map_err(|e| CliError::Input(format!("creating the Kubernetes client: {e}")))
}

/// A small runtime for the one-shot commands that talk to the cluster.
fn block_on<T>(future: impl Future<Output = Result<T, CliError>>) -> Result<T, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Input(format!("starting the async runtime: {e}")))?
        .block_on(future)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_parse_into_their_types() {
        let cli = Cli::try_parse_from([
            "tenant-access",
            "run",
            "--namespaces",
            "a,b",
            "--admin-address",
            "127.0.0.1:9000",
            "--leader-election",
            "--kube-qps",
            "50",
        ]);
        assert!(cli.is_ok(), "{cli:?}");
    }
}
