//! The Tinybird emulator: one workspace, its admin token, pipe endpoints verifying JWTs exactly as
//! Tinybird does, per-name rate limits, admin token refresh and fault injection, and data sources
//! held by real ClickHouse (chdb) read through the Query API with `DATASOURCES:READ` filters.
//!
//! Pipes are real: a pipe defined by nodes is SQL in Tinybird's template language, rendered with
//! the request's parameters (a JWT's `fixed_params` winning) and run by ClickHouse, and
//! `GET /v0/pipes/{pipe}` describes it as Tinybird's Pipe API does. Pipes defined by fixed rows
//! (no ClickHouse needed) remain, described as the template their filtering amounts to.

mod admin_token;
mod auth;
mod clickhouse;
mod control;
mod datasources;
mod describe;
mod errors;
mod nodes;
mod pipes;
mod query;
mod ratelimit;
mod routes;
mod sql;
mod sql_scan;
mod state;
mod template;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::middleware::from_fn_with_state;
use tokio::sync::watch;

pub use admin_token::AdminTokenParts;
pub use clickhouse::{CHDB_PYTHON_ENV, chdb_python_from_env};
pub use datasources::{DataSourceDefinition, default_datasources};
pub use nodes::PipeNode;
pub use pipes::{Column, PipeDefinition, default_pipes};

use crate::faults::{Fault, FaultInjector, FaultSet, inject_faults};
use crate::request_log::{RequestLog, record_requests};
use crate::server::{RunningServer, ShutdownSignal};
use crate::{Clock, EmulatorError, random};
use ratelimit::RateLimiter;
use state::{TinybirdState, Workspace};

/// [`RequestRecord::call`](crate::RequestRecord::call) of a pipe endpoint query, `GET
/// /v0/pipes/{pipe}.{json|ndjson|csv}`: billed by Tinybird, counted against the plan.
pub const CALL_PIPE_QUERY: &str = "pipe_query";
/// The call of a pipe's description, `GET /v0/pipes/{pipe}` (no format suffix; admin token): a
/// metadata call Tinybird does not bill (what the operator's existence checks send).
pub const CALL_PIPE_METADATA: &str = "pipe_metadata";
/// The call of a Query API request, `GET /v0/sql`: billed.
pub const CALL_QUERY_API: &str = "query_api";
/// The call of `GET /v1/workspace` (the admin-token check): not billed.
pub const CALL_WORKSPACE: &str = "workspace";
/// The call of `POST /v0/tokens/{token}/refresh`: not billed.
pub const CALL_TOKEN_REFRESH: &str = "token_refresh";

/// What a request to the Tinybird API is, from its method and path: one of the `CALL_*`
/// constants (`None` for a path the API does not serve).
#[must_use]
pub fn call_of(method: &str, path: &str) -> Option<&'static str> {
    match (method, path) {
        ("GET", "/v0/sql") => Some(CALL_QUERY_API),
        ("GET", "/v1/workspace") => Some(CALL_WORKSPACE),
        ("POST", path) if path.starts_with("/v0/tokens/") && path.ends_with("/refresh") => {
            Some(CALL_TOKEN_REFRESH)
        }
        ("GET", path) => {
            let segment = path.strip_prefix("/v0/pipes/").filter(|segment| !segment.contains('/'))?;
            Some(match query::split_format(segment).1 {
                Some(_) => CALL_PIPE_QUERY,
                None => CALL_PIPE_METADATA,
            })
        }
        _ => None,
    }
}

/// Whether Tinybird bills a call of [`call_of`] (pipe endpoint queries and the Query API).
#[must_use]
pub fn is_billed(call: &str) -> bool {
    call == CALL_PIPE_QUERY || call == CALL_QUERY_API
}

/// Default per-query ClickHouse timeout.
pub const DEFAULT_CLICKHOUSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How to start a Tinybird emulator. `Default` gives a random workspace on `127.0.0.1:0` with the
/// demo pipes (see [`default_pipes`]), the demo data source (see [`default_datasources`]), no
/// ClickHouse (so the data sources cannot be read: set `chdb_python`) and the system clock.
#[derive(Clone)]
pub struct TinybirdConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Workspace UUID; random when absent (or taken from `admin_token`).
    pub workspace_id: Option<String>,
    /// Workspace name.
    pub workspace_name: String,
    /// Region key written into the admin token's `host` field (ignored when `admin_token` is given).
    pub region: String,
    /// Use this admin token instead of generating one (its `u` must match `workspace_id` if set).
    pub admin_token: Option<String>,
    /// Pipes served at start.
    pub pipes: Vec<PipeDefinition>,
    /// Data sources created in ClickHouse at start.
    pub datasources: Vec<DataSourceDefinition>,
    /// A Python interpreter with chdb 4.4.0 (`CHDB_PYTHON`); the data sources are served only
    /// with one (see [`chdb_python_from_env`]).
    pub chdb_python: Option<PathBuf>,
    /// Longest a ClickHouse query may run before the emulator kills it (408).
    pub clickhouse_timeout: Duration,
    /// Time source for `exp`/`nbf` checks and rate-limit windows.
    pub clock: Clock,
}

impl Default for TinybirdConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            workspace_id: None,
            workspace_name: "emulated_workspace".to_owned(),
            region: "eu_shared".to_owned(),
            admin_token: None,
            pipes: default_pipes(),
            datasources: default_datasources(),
            chdb_python: None,
            clickhouse_timeout: DEFAULT_CLICKHOUSE_TIMEOUT,
            clock: Clock::system(),
        }
    }
}

impl std::fmt::Debug for TinybirdConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TinybirdConfig")
            .field("listen", &self.listen)
            .field("workspace_id", &self.workspace_id)
            .field("workspace_name", &self.workspace_name)
            .field("region", &self.region)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<redacted>"))
            .field("pipes", &self.pipes.len())
            .field("datasources", &self.datasources.len())
            .field("chdb_python", &self.chdb_python)
            .finish_non_exhaustive()
    }
}

/// A running Tinybird emulator. Stops when dropped or on [`TinybirdEmulator::shutdown`].
#[derive(Debug)]
pub struct TinybirdEmulator {
    server: RunningServer,
    state: Arc<TinybirdState>,
}

impl TinybirdEmulator {
    /// Starts an emulator on the current tokio runtime.
    ///
    /// # Errors
    /// A malformed or mismatching admin token, an invalid pipe or data source, a chdb
    /// interpreter that cannot run ClickHouse, or a listen address that cannot be bound.
    pub async fn start(config: TinybirdConfig) -> Result<Self, EmulatorError> {
        let clock = config.clock.clone();
        let (parts, token) = match config.admin_token {
            Some(token) => {
                let parts = AdminTokenParts::parse(&token)?;
                if let Some(configured) = config.workspace_id
                    && configured != parts.workspace_id
                {
                    return Err(EmulatorError::WorkspaceMismatch {
                        configured,
                        in_token: parts.workspace_id,
                    });
                }
                (parts, token)
            }
            None => {
                let parts = AdminTokenParts {
                    workspace_id: config.workspace_id.unwrap_or_else(random::uuid_v4),
                    token_id: random::uuid_v4(),
                    host: config.region,
                };
                let token = parts.mint();
                (parts, token)
            }
        };
        let pipes =
            config.pipes.into_iter().map(PipeDefinition::normalized).collect::<Result<Vec<_>, _>>()?;
        let datasources = config
            .datasources
            .into_iter()
            .map(DataSourceDefinition::normalized)
            .collect::<Result<Vec<_>, _>>()?;
        let clickhouse = match &config.chdb_python {
            Some(python) => {
                Some(clickhouse::ClickHouse::start(python, config.clickhouse_timeout, &datasources).await?)
            }
            None => None,
        };
        let state = Arc::new(TinybirdState {
            workspace: Workspace {
                id: parts.workspace_id,
                name: config.workspace_name,
                region: parts.host,
                created_at_secs: clock.now_secs(),
            },
            admin_token_id: parts.token_id,
            admin_token: watch::Sender::new(token),
            pipes: Mutex::new(pipes),
            datasources: Mutex::new(datasources),
            clickhouse,
            rate_limiter: RateLimiter::default(),
            faults: Arc::new(FaultSet::default()),
            request_log: Arc::new(RequestLog::naming_calls(call_of)),
            clock,
        });
        let shutdown = ShutdownSignal::new();
        let injector = FaultInjector {
            faults: Arc::clone(&state.faults),
            shutdown: shutdown.clone(),
            pipe_of: query::pipe_in_path,
            error_response: errors::injected_fault_response,
        };
        let shared_controls = crate::control::SharedControls {
            clock: state.clock.clone(),
            faults: Arc::clone(&state.faults),
            request_log: Arc::clone(&state.request_log),
        };
        let router = routes::router(Arc::clone(&state))
            .layer(from_fn_with_state(injector, inject_faults))
            .merge(crate::control::router(shared_controls))
            .merge(control::router(Arc::clone(&state)))
            .layer(from_fn_with_state(Arc::clone(&state.request_log), record_requests));
        let server = RunningServer::bind(config.listen).await?.serve(router, shutdown);
        tracing::info!(addr = %server.local_addr(), workspace = %state.workspace.id, "tinybird emulator listening");
        Ok(Self { server, state })
    }

    /// `http://127.0.0.1:<port>`: the API URL to give clients (no trailing slash).
    #[must_use]
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The bound socket address.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The workspace UUID (the admin token's `u`, the JWTs' `workspace_id`).
    #[must_use]
    pub fn workspace_id(&self) -> &str {
        &self.state.workspace.id
    }

    /// The workspace name.
    #[must_use]
    pub fn workspace_name(&self) -> &str {
        &self.state.workspace.name
    }

    /// The region key in the admin token's `host` field.
    #[must_use]
    pub fn region(&self) -> &str {
        &self.state.workspace.region
    }

    /// The current admin token (the HS256 key of every valid JWT).
    #[must_use]
    pub fn admin_token(&self) -> String {
        self.state.current_admin_token()
    }

    /// The admin token's id (the admin token's `id`; usable in `/v0/tokens/{id}/refresh`).
    #[must_use]
    pub fn admin_token_id(&self) -> &str {
        &self.state.admin_token_id
    }

    /// Rotates the admin token as `POST /v0/tokens/{id}/refresh` does and returns the new one.
    pub fn refresh_admin_token(&self) -> String {
        self.state.refresh_admin_token()
    }

    /// Follows the current admin token (it changes on every refresh).
    #[must_use]
    pub fn subscribe_admin_token(&self) -> watch::Receiver<String> {
        self.state.admin_token.subscribe()
    }

    /// Adds or replaces a pipe (by name) and returns it with its id.
    ///
    /// # Errors
    /// [`EmulatorError::InvalidPipe`] for an unusable name.
    pub fn upsert_pipe(&self, pipe: PipeDefinition) -> Result<PipeDefinition, EmulatorError> {
        self.state.upsert_pipe(pipe)
    }

    /// Removes a pipe by name or id; whether it existed.
    pub fn remove_pipe(&self, name: &str) -> bool {
        self.state.remove_pipe(name)
    }

    /// Replaces the SQL of a node of a pipe defined by nodes (`pipe` by name or id), as a pipe
    /// author editing it at Tinybird: the next query runs it and the next description shows it.
    /// Returns the edited pipe.
    ///
    /// # Errors
    /// [`EmulatorError::UnknownPipe`], [`EmulatorError::UnknownNode`], or
    /// [`EmulatorError::InvalidPipe`] for a template that does not parse or a pipe defined by rows.
    pub fn set_node_sql(
        &self,
        pipe: &str,
        node: &str,
        sql: impl Into<String>,
    ) -> Result<PipeDefinition, EmulatorError> {
        self.state.set_node_sql(pipe, node, sql.into())
    }

    /// What `GET /v0/pipes/{pipe}` answers (Tinybird's Pipe API description), without a request
    /// (so without counting a metadata call); `None` for no such pipe.
    #[must_use]
    pub fn describe_pipe(&self, pipe: &str) -> Option<serde_json::Value> {
        self.state.find_pipe(pipe).map(|pipe| describe::describe(&pipe))
    }

    /// The served pipes.
    #[must_use]
    pub fn pipes(&self) -> Vec<PipeDefinition> {
        self.state.pipes()
    }

    /// Adds or replaces a data source (by name), creating its table in ClickHouse, and returns
    /// it with its id.
    ///
    /// # Errors
    /// [`EmulatorError::InvalidDataSource`] for an unusable definition or one ClickHouse refuses.
    pub async fn upsert_datasource(
        &self,
        source: DataSourceDefinition,
    ) -> Result<DataSourceDefinition, EmulatorError> {
        self.state.upsert_datasource(source).await
    }

    /// Removes a data source by name or id (and its table); whether it existed.
    pub async fn remove_datasource(&self, name: &str) -> bool {
        self.state.remove_datasource(name).await
    }

    /// The served data sources.
    #[must_use]
    pub fn datasources(&self) -> Vec<DataSourceDefinition> {
        self.state.datasources()
    }

    /// Adds a fault rule.
    ///
    /// # Errors
    /// [`EmulatorError::InvalidFault`] for a status other than 408, 429 (the plan's QPS ceiling, `Retry-After: 1`) or 5xx.
    pub fn add_fault(&self, fault: Fault) -> Result<(), EmulatorError> {
        self.state.faults.add(fault)
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.state.faults.clear();
    }

    /// Forgets all rate-limit windows.
    pub fn reset_rate_limits(&self) {
        self.state.rate_limiter.clear();
    }

    /// The API requests answered so far.
    #[must_use]
    pub fn request_log(&self) -> &RequestLog {
        &self.state.request_log
    }

    /// Billed queries answered since the start (or the log's last clear): pipe endpoint queries
    /// (`GET /v0/pipes/{pipe}.json`, ...) and Query API requests, every answer included. Counted
    /// apart from the records kept, so a long window is counted whole.
    #[must_use]
    pub fn billed_queries(&self) -> u64 {
        self.state.billed_queries()
    }

    /// Pipe descriptions answered since the start (or the log's last clear): `GET
    /// /v0/pipes/{pipe}` with the admin token, the existence checks Tinybird does not bill.
    #[must_use]
    pub fn pipe_metadata_calls(&self) -> u64 {
        self.state.pipe_metadata_calls()
    }

    /// The emulator's clock (shared with the config's clock).
    #[must_use]
    pub fn clock(&self) -> &Clock {
        &self.state.clock
    }

    /// Stops the server, letting in-flight requests finish (hung ones are released).
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_named_by_what_tinybird_bills() {
        assert_eq!(call_of("GET", "/v0/pipes/top_pages.json"), Some(CALL_PIPE_QUERY));
        assert_eq!(call_of("GET", "/v0/pipes/t_0123.csv"), Some(CALL_PIPE_QUERY));
        assert_eq!(call_of("GET", "/v0/pipes/top_pages"), Some(CALL_PIPE_METADATA));
        assert_eq!(call_of("GET", "/v0/sql"), Some(CALL_QUERY_API));
        assert_eq!(call_of("GET", "/v1/workspace"), Some(CALL_WORKSPACE));
        assert_eq!(call_of("POST", "/v0/tokens/abc/refresh"), Some(CALL_TOKEN_REFRESH));
        assert_eq!(call_of("GET", "/v0/pipes/top_pages/nodes"), None);
        assert_eq!(call_of("DELETE", "/v0/pipes/top_pages"), None);
        assert!(is_billed(CALL_PIPE_QUERY) && is_billed(CALL_QUERY_API));
        assert!(!is_billed(CALL_PIPE_METADATA) && !is_billed(CALL_WORKSPACE));
    }
}
