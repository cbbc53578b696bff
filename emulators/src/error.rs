//! Errors raised while configuring or starting an emulator (request errors are HTTP answers).

use std::net::SocketAddr;

/// Why an emulator could not be started or reconfigured.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A given Tinybird admin token is not shaped `p.<b64url json>.<signature>`.
    #[error("malformed admin token: {0}")]
    MalformedAdminToken(&'static str),
    /// The configured workspace id and the admin token's `u` field differ.
    #[error("workspace id {configured} does not match the admin token's workspace {in_token}")]
    WorkspaceMismatch {
        /// The workspace id from the configuration.
        configured: String,
        /// The workspace id read from the admin token.
        in_token: String,
    },
    /// A pipe definition is unusable (empty name, dots in the name, a node's template that does
    /// not parse...).
    #[error("invalid pipe definition: {0}")]
    InvalidPipe(String),
    /// No pipe has this name (or id).
    #[error("no pipe {0}")]
    UnknownPipe(String),
    /// The pipe has no node of this name.
    #[error("pipe {pipe} has no node {node}")]
    UnknownNode {
        /// The pipe.
        pipe: String,
        /// The node asked for.
        node: String,
    },
    /// A data source definition is unusable (bad name, column or type).
    #[error("invalid data source definition: {0}")]
    InvalidDataSource(String),
    /// ClickHouse (the chdb worker) could not be started or could not load the data sources.
    #[error("cannot start ClickHouse (chdb) for the data sources with {0}")]
    ClickHouse(String),
    /// No Python interpreter with chdb was given.
    #[error(
        "CHDB_PYTHON is not set: data sources need a Python with chdb 4.4.0; run through hack/with-cluster.sh, or export CHDB_PYTHON=\"$(hack/install-deps.sh --print-env | sed -n 's/^CHDB_PYTHON=//p')\""
    )]
    ClickHouseNotConfigured,
    /// A fault rule is unusable (status outside 408 and 5xx).
    #[error("invalid fault: {0}")]
    InvalidFault(String),
}
