//! Command line: which emulators to run and how. Secrets go to files given by flags, never to logs.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tenant_access_emulators::tinybird::{default_datasources, default_pipes};
use tenant_access_emulators::{
    ClerkConfig, ClerkEmulator, DataSourceDefinition, EmulatorError, Identity, PipeDefinition,
    TinybirdConfig, TinybirdEmulator,
};

/// Tinybird and Clerk API emulators for tenant-access-operator's tests and demo.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Tinybird emulator.
    Tinybird {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7181")]
        listen: SocketAddr,
        #[command(flatten)]
        options: TinybirdOptions,
    },
    /// Run the Clerk emulator.
    Clerk {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7182")]
        listen: SocketAddr,
        #[command(flatten)]
        options: ClerkOptions,
    },
    /// Run both emulators.
    Both {
        /// Address of the Tinybird emulator.
        #[arg(long, default_value = "127.0.0.1:7181")]
        tinybird_listen: SocketAddr,
        /// Address of the Clerk emulator.
        #[arg(long, default_value = "127.0.0.1:7182")]
        clerk_listen: SocketAddr,
        #[command(flatten)]
        tinybird: TinybirdOptions,
        #[command(flatten)]
        clerk: ClerkOptions,
    },
}

#[derive(Debug, Args)]
struct TinybirdOptions {
    /// Workspace UUID (random by default; must match the `u` of --admin-token-from).
    #[arg(long)]
    workspace_id: Option<String>,
    /// Workspace name.
    #[arg(long, default_value = "emulated_workspace")]
    workspace_name: String,
    /// Region key written in the admin token's `host` field.
    #[arg(long, default_value = "eu_shared")]
    region: String,
    /// Read the admin token from this file instead of generating one.
    #[arg(long, value_name = "FILE")]
    admin_token_from: Option<PathBuf>,
    /// Write the admin token to this file (mode 0600), and again after every refresh.
    #[arg(long, value_name = "FILE")]
    write_admin_token: Option<PathBuf>,
    /// JSON file with a list of pipe definitions: `name` with `nodes` (`[{name, sql}]`, SQL in
    /// Tinybird's template language) and an optional `endpoint`, or with `columns`, `rows` and
    /// `required_params`.
    #[arg(long, value_name = "FILE")]
    pipes_file: Option<PathBuf>,
    /// Do not serve the demo pipes (`top_pages`, `tenant_events`, `org_events`,
    /// `org_events_strict`, `org_event_totals`, `event_counts`).
    #[arg(long)]
    no_default_pipes: bool,
    /// Python interpreter with chdb 4.4.0: real ClickHouse for the data sources and `/v0/sql`
    /// (`hack/install-deps.sh --print-env` prints one). Without it, data sources cannot be read.
    #[arg(long, value_name = "PYTHON", env = "CHDB_PYTHON")]
    chdb_python: Option<PathBuf>,
    /// JSON file with a list of data source definitions (`name`, `columns`, `rows`).
    #[arg(long, value_name = "FILE")]
    datasources_file: Option<PathBuf>,
    /// Do not create the demo data source `tenant_events`.
    #[arg(long)]
    no_default_datasources: bool,
    /// Longest a ClickHouse query may run, in seconds, before it is killed (408).
    #[arg(long, default_value_t = 10)]
    clickhouse_timeout_secs: u64,
}

#[derive(Debug, Args)]
struct ClerkOptions {
    /// Read the Backend API secret key from this file instead of generating one.
    #[arg(long, value_name = "FILE")]
    secret_key_from: Option<PathBuf>,
    /// Write the secret key to this file (mode 0600).
    #[arg(long, value_name = "FILE")]
    write_secret_key: Option<PathBuf>,
    /// Authenticated Backend API requests allowed per window (0 = unlimited).
    #[arg(long, default_value_t = tenant_access_emulators::clerk::DEFAULT_REQUEST_BUDGET)]
    request_budget: u32,
    /// Length of the request budget window, in seconds.
    #[arg(long, default_value_t = 10)]
    budget_window_secs: u64,
    /// JSON file with the identity used to mint tokens (`{"user": {...}, "org": {...}}`).
    #[arg(long, value_name = "FILE")]
    identity_file: Option<PathBuf>,
    /// `iss` of minted tokens (default: the emulator's URL).
    #[arg(long)]
    issuer: Option<String>,
    /// `azp` of minted tokens.
    #[arg(long, default_value = "http://localhost:3000")]
    authorized_party: String,
}

/// Why the binary failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Emulator(#[from] EmulatorError),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is not valid JSON for this option: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("cannot wait for a stop signal: {0}")]
    Signal(std::io::Error),
}

pub(crate) async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Tinybird { listen, options } => {
            let tinybird = start_tinybird(listen, options).await?;
            wait_for_stop().await?;
            tinybird.shutdown().await;
        }
        Command::Clerk { listen, options } => {
            let clerk = start_clerk(listen, options).await?;
            wait_for_stop().await?;
            clerk.shutdown().await;
        }
        Command::Both { tinybird_listen, clerk_listen, tinybird, clerk } => {
            let tinybird = start_tinybird(tinybird_listen, tinybird).await?;
            let clerk = start_clerk(clerk_listen, clerk).await?;
            wait_for_stop().await?;
            clerk.shutdown().await;
            tinybird.shutdown().await;
        }
    }
    Ok(())
}

async fn start_tinybird(listen: SocketAddr, options: TinybirdOptions) -> Result<TinybirdEmulator, CliError> {
    let mut pipes = if options.no_default_pipes { Vec::new() } else { default_pipes() };
    if let Some(path) = &options.pipes_file {
        let extra: Vec<PipeDefinition> = read_json(path)?;
        pipes.retain(|pipe| extra.iter().all(|other| other.name != pipe.name));
        pipes.extend(extra);
    }
    let mut datasources = if options.no_default_datasources { Vec::new() } else { default_datasources() };
    if let Some(path) = &options.datasources_file {
        let extra: Vec<DataSourceDefinition> = read_json(path)?;
        datasources.retain(|source| extra.iter().all(|other| other.name != source.name));
        datasources.extend(extra);
    }
    let admin_token = options.admin_token_from.as_deref().map(read_secret).transpose()?;
    let tinybird = TinybirdEmulator::start(TinybirdConfig {
        listen,
        workspace_id: options.workspace_id,
        workspace_name: options.workspace_name,
        region: options.region,
        admin_token,
        pipes,
        datasources,
        chdb_python: options.chdb_python.filter(|path| !path.as_os_str().is_empty()),
        clickhouse_timeout: Duration::from_secs(options.clickhouse_timeout_secs.max(1)),
        ..TinybirdConfig::default()
    })
    .await?;
    if let Some(path) = options.write_admin_token {
        write_secret(&path, &tinybird.admin_token())?;
        let mut tokens = tinybird.subscribe_admin_token();
        tokio::spawn(async move {
            while tokens.changed().await.is_ok() {
                let token = tokens.borrow_and_update().clone();
                match write_secret(&path, &token) {
                    Ok(()) => tracing::info!(path = %path.display(), "admin token file rewritten"),
                    Err(error) => tracing::error!(%error, "cannot rewrite the admin token file"),
                }
            }
        });
    }
    println!(
        "tinybird emulator: {} workspace {} ({})",
        tinybird.base_url(),
        tinybird.workspace_id(),
        tinybird.workspace_name()
    );
    Ok(tinybird)
}

async fn start_clerk(listen: SocketAddr, options: ClerkOptions) -> Result<ClerkEmulator, CliError> {
    let secret_key = options.secret_key_from.as_deref().map(read_secret).transpose()?;
    let identity = match &options.identity_file {
        Some(path) => read_json::<Identity>(path)?,
        None => Identity::default(),
    };
    let clerk = ClerkEmulator::start(ClerkConfig {
        listen,
        secret_key,
        request_budget: options.request_budget,
        budget_window: Duration::from_secs(options.budget_window_secs.max(1)),
        identity,
        issuer: options.issuer,
        authorized_party: options.authorized_party,
        ..ClerkConfig::default()
    })
    .await?;
    if let Some(path) = &options.write_secret_key {
        write_secret(path, clerk.secret_key())?;
    }
    println!("clerk emulator: {}", clerk.api_url());
    Ok(clerk)
}

fn read_secret(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .map_err(|source| CliError::Read { path: path.to_owned(), source })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CliError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| CliError::Read { path: path.to_owned(), source })?;
    serde_json::from_str(&text).map_err(|source| CliError::Json { path: path.to_owned(), source })
}

/// Writes a secret readable by the owner only, replacing the file atomically so a reader never
/// sees half a token.
fn write_secret(path: &Path, secret: &str) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let write_error = |source| CliError::Write { path: path.to_owned(), source };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(write_error)?;
    file.write_all(secret.as_bytes()).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    std::fs::rename(&temporary, path).map_err(write_error)
}

async fn wait_for_stop() -> Result<(), CliError> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(CliError::Signal)?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.map_err(CliError::Signal),
        _ = terminate.recv() => Ok(()),
    }
}
