//! What a running Tinybird emulator knows: its workspace, the current admin token, the pipes.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderName};
use tokio::sync::watch;

use super::admin_token;
use super::auth::{self, Access, JwtClaims, Scope};
use super::clickhouse::{ClickHouse, QueryError, QueryRows};
use super::datasources::DataSourceDefinition;
use super::errors::TinybirdError;
use super::pipes::PipeDefinition;
use super::ratelimit::RateLimiter;
use crate::faults::FaultSet;
use crate::request_log::RequestLog;
use crate::sync::lock;
use crate::{Clock, EmulatorError};

/// `X-RateLimit-*` headers to add to an answer.
pub(crate) type RateHeaders = Vec<(HeaderName, String)>;

/// Name of the workspace admin token (usable in `/v0/tokens/{name}/refresh`).
pub(crate) const ADMIN_TOKEN_NAME: &str = "admin token";

#[derive(Debug)]
pub(crate) struct Workspace {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) region: String,
    pub(crate) created_at_secs: i64,
}

pub(crate) struct TinybirdState {
    pub(crate) workspace: Workspace,
    pub(crate) admin_token_id: String,
    /// The current admin token; a watch channel so that the binary can rewrite its token file
    /// when a refresh rotates it.
    pub(crate) admin_token: watch::Sender<String>,
    pub(crate) pipes: Mutex<Vec<PipeDefinition>>,
    pub(crate) datasources: Mutex<Vec<DataSourceDefinition>>,
    /// Real ClickHouse holding the data sources; `None` when no chdb interpreter was given.
    pub(crate) clickhouse: Option<ClickHouse>,
    pub(crate) rate_limiter: RateLimiter,
    pub(crate) faults: Arc<FaultSet>,
    pub(crate) request_log: Arc<RequestLog>,
    pub(crate) clock: Clock,
}

impl std::fmt::Debug for TinybirdState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TinybirdState")
            .field("workspace", &self.workspace)
            .field("admin_token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl TinybirdState {
    pub(crate) fn current_admin_token(&self) -> String {
        self.admin_token.borrow().clone()
    }

    /// Rotates the admin token's signature segment; every JWT signed with the old one dies.
    pub(crate) fn refresh_admin_token(&self) -> String {
        let mut refreshed = String::new();
        self.admin_token.send_modify(|token| {
            *token = admin_token::with_new_signature(token);
            refreshed.clone_from(token);
        });
        refreshed
    }

    pub(crate) fn authenticate(
        &self,
        headers: &HeaderMap,
        query: &[(String, String)],
    ) -> Result<Access, TinybirdError> {
        let token = auth::request_token(headers, query);
        let admin_token = self.admin_token.borrow();
        auth::authenticate(token, &admin_token, &self.workspace.id, self.clock.now_millis())
    }

    /// What a caller may do with a resource (`written` as in the request; `known` its name and
    /// id when it exists): the JWT's scope of `scope_type` covering it (`None` for the admin
    /// token) and the `X-RateLimit-*` headers to send; 403 without such a scope, 429 past the
    /// rate limit.
    pub(crate) fn authorize<'a>(
        &self,
        access: &'a Access,
        scope_type: &str,
        written: &str,
        known: Option<(&str, Option<&str>)>,
    ) -> Result<(Option<&'a Scope>, RateHeaders), TinybirdError> {
        let Access::Jwt(claims) = access else {
            return Ok((None, Vec::new()));
        };
        let mut names = vec![written];
        if let Some((name, id)) = known {
            names.push(name);
            names.extend(id);
        }
        let scope = claims.scope(scope_type, &names).ok_or_else(TinybirdError::no_access)?;
        Ok((Some(scope), self.count_request(written, claims)?))
    }

    /// Counts a JWT's request against its rate limit on `resource` (as written in the request):
    /// the `X-RateLimit-*` headers to send, or the 429 answer.
    fn count_request(&self, resource: &str, claims: &JwtClaims) -> Result<RateHeaders, TinybirdError> {
        let Some(limit) = claims.rps_limit() else {
            return Ok(Vec::new());
        };
        let decision = self.rate_limiter.check(
            &self.workspace.id,
            resource,
            &claims.name,
            limit,
            self.clock.now_millis(),
        );
        if decision.allowed {
            Ok(decision.headers())
        } else {
            Err(TinybirdError::rate_limited(decision.reset_secs).with_headers(decision.headers()))
        }
    }

    /// Billed queries answered since the start (or the request log's last clear).
    pub(crate) fn billed_queries(&self) -> u64 {
        self.request_log.count_call(super::CALL_PIPE_QUERY)
            + self.request_log.count_call(super::CALL_QUERY_API)
    }

    /// Free pipe descriptions answered since the start (or the request log's last clear).
    pub(crate) fn pipe_metadata_calls(&self) -> u64 {
        self.request_log.count_call(super::CALL_PIPE_METADATA)
    }

    pub(crate) fn find_pipe(&self, url_name: &str) -> Option<PipeDefinition> {
        lock(&self.pipes).iter().find(|pipe| pipe.is_named(url_name)).cloned()
    }

    pub(crate) fn pipes(&self) -> Vec<PipeDefinition> {
        lock(&self.pipes).clone()
    }

    /// Adds a pipe, replacing one with the same name (keeping its id unless a new one is given).
    pub(crate) fn upsert_pipe(&self, pipe: PipeDefinition) -> Result<PipeDefinition, EmulatorError> {
        let mut pipes = lock(&self.pipes);
        let mut pipe = pipe;
        if pipe.id.is_none() {
            pipe.id = pipes
                .iter()
                .find(|existing| existing.name == pipe.name)
                .and_then(|existing| existing.id.clone());
        }
        let pipe = pipe.normalized()?;
        pipes.retain(|existing| existing.name != pipe.name);
        pipes.push(pipe.clone());
        Ok(pipe)
    }

    /// Replaces the SQL of one node of a pipe defined by nodes (checked as on creation): the
    /// next query and description see it.
    pub(crate) fn set_node_sql(
        &self,
        url_name: &str,
        node: &str,
        sql: String,
    ) -> Result<PipeDefinition, EmulatorError> {
        let mut pipes = lock(&self.pipes);
        let Some(slot) = pipes.iter_mut().find(|pipe| pipe.is_named(url_name)) else {
            return Err(EmulatorError::UnknownPipe(url_name.to_owned()));
        };
        if !slot.is_defined_by_nodes() {
            return Err(EmulatorError::InvalidPipe(format!(
                "pipe {} is defined by rows: its SQL follows from its columns and required_params (define it by nodes to edit SQL)",
                slot.name
            )));
        }
        let edited = slot.clone().with_node_sql(node, sql)?;
        *slot = edited.clone();
        Ok(edited)
    }

    pub(crate) fn remove_pipe(&self, url_name: &str) -> bool {
        let mut pipes = lock(&self.pipes);
        let before = pipes.len();
        pipes.retain(|pipe| !pipe.is_named(url_name));
        pipes.len() != before
    }

    pub(crate) fn datasources(&self) -> Vec<DataSourceDefinition> {
        lock(&self.datasources).clone()
    }

    pub(crate) fn find_datasource(&self, resource: &str) -> Option<DataSourceDefinition> {
        lock(&self.datasources).iter().find(|source| source.is_named(resource)).cloned()
    }

    /// Adds a data source, replacing one with the same name (keeping its id unless a new one is
    /// given); its table is created in ClickHouse first, so a definition ClickHouse refuses is
    /// not kept.
    pub(crate) async fn upsert_datasource(
        &self,
        source: DataSourceDefinition,
    ) -> Result<DataSourceDefinition, EmulatorError> {
        let mut source = source;
        if source.id.is_none() {
            source.id = self.find_datasource(&source.name).and_then(|existing| existing.id);
        }
        let source = source.normalized()?;
        if let Some(clickhouse) = &self.clickhouse {
            clickhouse.load(&source, &self.datasources()).await.map_err(|error| {
                EmulatorError::InvalidDataSource(format!(
                    "ClickHouse refused data source {}: {error}",
                    source.name
                ))
            })?;
        }
        let mut sources = lock(&self.datasources);
        sources.retain(|existing| existing.name != source.name);
        sources.push(source.clone());
        Ok(source)
    }

    /// Removes a data source by name or id; whether it existed.
    pub(crate) async fn remove_datasource(&self, resource: &str) -> bool {
        let Some(source) = self.find_datasource(resource) else {
            return false;
        };
        lock(&self.datasources).retain(|existing| existing.name != source.name);
        if let Some(clickhouse) = &self.clickhouse
            && let Err(error) = clickhouse.drop_table(&source.name, &self.datasources()).await
        {
            tracing::warn!(%error, datasource = %source.name, "cannot drop the data source's table");
        }
        true
    }

    /// Runs SQL on the data sources' ClickHouse; errors in Tinybird's shapes.
    pub(crate) async fn query(&self, sql: &str) -> Result<QueryRows, TinybirdError> {
        let Some(clickhouse) = &self.clickhouse else {
            return Err(TinybirdError::clickhouse_unavailable(
                "The emulator runs no ClickHouse: start it with --chdb-python (or CHDB_PYTHON) to serve data sources",
            ));
        };
        clickhouse.query(sql, &self.datasources()).await.map_err(|error| match error {
            QueryError::ClickHouse(message) => TinybirdError::query_refused(format!("[Error] {message}")),
            QueryError::Timeout(limit) => TinybirdError::query_timeout(limit),
            QueryError::Worker(_) => {
                tracing::error!(%error, "ClickHouse worker failure");
                TinybirdError::clickhouse_unavailable(error.to_string())
            }
        })
    }
}
