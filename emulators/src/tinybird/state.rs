//! What a running Tinybird emulator knows: its workspace, the current admin token, the pipes.

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use tokio::sync::watch;

use super::admin_token;
use super::auth::{self, Access};
use super::errors::TinybirdError;
use super::pipes::PipeDefinition;
use super::ratelimit::RateLimiter;
use crate::faults::FaultSet;
use crate::request_log::RequestLog;
use crate::sync::lock;
use crate::{Clock, EmulatorError};

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

    pub(crate) fn remove_pipe(&self, url_name: &str) -> bool {
        let mut pipes = lock(&self.pipes);
        let before = pipes.len();
        pipes.retain(|pipe| !pipe.is_named(url_name));
        pipes.len() != before
    }
}
