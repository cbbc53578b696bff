//! Pipe definitions: by nodes of (templated) SQL, or by typed columns and fixed rows.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::nodes::{self, PipeNode};
use super::template;
use crate::EmulatorError;
use crate::random;

/// One output column of a pipe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Column name; a query parameter with this name filters rows by equality.
    pub name: String,
    /// ClickHouse type shown in `meta`, e.g. `String`, `UInt64`, `DateTime`.
    #[serde(rename = "type")]
    pub column_type: String,
}

impl Column {
    /// A column.
    #[must_use]
    pub fn new(name: impl Into<String>, column_type: impl Into<String>) -> Self {
        Self { name: name.into(), column_type: column_type.into() }
    }
}

/// A pipe endpoint served by the emulator, defined one of two ways:
/// - by **nodes** (`nodes`, optionally `endpoint`): SQL in Tinybird's template language run by
///   real ClickHouse over the data sources, exactly as a Tinybird pipe;
/// - by **rows** (`columns`, `rows`, `required_params`): fixed rows, a query parameter named
///   like a column keeping the rows equal to it (no ClickHouse needed). Its description shows
///   that filter as the template SQL it amounts to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipeDefinition {
    /// Pipe name, used in `/v0/pipes/{name}.json`.
    pub name: String,
    /// Pipe id (`t_...`), also accepted in URLs and scopes; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Free text shown in the pipe's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Nodes, in order: each reads data sources and earlier nodes by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<PipeNode>,
    /// The node answering the pipe (its name); the last node when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Output columns of a pipe defined by rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<Column>,
    /// Rows of a pipe defined by rows, as objects keyed by column name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<Map<String, Value>>,
    /// Parameters a pipe defined by rows refuses to run without (400), like
    /// `{{String(org, required=True)}}`. Without this, a missing or null parameter simply drops
    /// its filter (fail open), like `{% if defined(org) %}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_params: Vec<String>,
}

impl PipeDefinition {
    /// A pipe defined by rows, with no rows yet.
    #[must_use]
    pub fn new(name: impl Into<String>, columns: Vec<Column>) -> Self {
        Self {
            name: name.into(),
            id: None,
            description: None,
            nodes: Vec::new(),
            endpoint: None,
            columns,
            rows: Vec::new(),
            required_params: Vec::new(),
        }
    }

    /// A pipe defined by nodes (the last one answers unless [`PipeDefinition::with_endpoint`]).
    #[must_use]
    pub fn from_nodes(name: impl Into<String>, nodes: Vec<PipeNode>) -> Self {
        Self { nodes, ..Self::new(name, Vec::new()) }
    }

    /// Adds a node (name and SQL) after the others.
    #[must_use]
    pub fn with_node(mut self, name: impl Into<String>, sql: impl Into<String>) -> Self {
        self.nodes.push(PipeNode::new(name, sql));
        self
    }

    /// Makes the node of this name the endpoint.
    #[must_use]
    pub fn with_endpoint(mut self, node: impl Into<String>) -> Self {
        self.endpoint = Some(node.into());
        self
    }

    /// Sets the pipe's description text.
    #[must_use]
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Adds a row (an object keyed by column name; non-objects are ignored).
    #[must_use]
    pub fn with_row(mut self, row: Value) -> Self {
        if let Value::Object(row) = row {
            self.rows.push(row);
        }
        self
    }

    /// Marks a parameter as required.
    #[must_use]
    pub fn with_required_param(mut self, param: impl Into<String>) -> Self {
        self.required_params.push(param.into());
        self
    }

    /// Whether the pipe is defined by nodes (run by ClickHouse) rather than by rows.
    #[must_use]
    pub fn is_defined_by_nodes(&self) -> bool {
        !self.nodes.is_empty()
    }

    /// Checks the definition and fills in generated ids.
    pub(crate) fn normalized(mut self) -> Result<Self, EmulatorError> {
        let valid_name = !self.name.is_empty()
            && self.name.chars().all(|character| character.is_ascii_alphanumeric() || character == '_');
        if !valid_name {
            return Err(EmulatorError::InvalidPipe(format!(
                "pipe name {:?} must be non-empty ASCII letters, digits and underscores",
                self.name
            )));
        }
        let id = self.id.get_or_insert_with(|| format!("t_{}", random::hex(16))).clone();
        if self.is_defined_by_nodes() {
            self.check_nodes(&id)?;
        } else if let Some(bad) = self.required_params.iter().find(|name| !template::is_param_name(name)) {
            return Err(EmulatorError::InvalidPipe(format!(
                "pipe {}: required parameter {bad:?} is not a name a template can read",
                self.name
            )));
        }
        Ok(self)
    }

    fn check_nodes(&mut self, id: &str) -> Result<(), EmulatorError> {
        if !self.columns.is_empty() || !self.rows.is_empty() || !self.required_params.is_empty() {
            return Err(EmulatorError::InvalidPipe(format!(
                "pipe {} has nodes and columns, rows or required_params: a pipe is defined by one or the other",
                self.name
            )));
        }
        nodes::normalize(&self.name, id, &mut self.nodes)?;
        if self.endpoint_index().is_none() {
            return Err(EmulatorError::InvalidPipe(format!(
                "pipe {}: the endpoint {:?} is none of its nodes",
                self.name, self.endpoint
            )));
        }
        Ok(())
    }

    /// The index of the endpoint node (`None` for a pipe defined by rows, or a dangling name).
    pub(crate) fn endpoint_index(&self) -> Option<usize> {
        match &self.endpoint {
            Some(name) => self.nodes.iter().position(|node| &node.name == name),
            None => self.nodes.len().checked_sub(1),
        }
    }

    /// Replaces a node's SQL, checked as on creation.
    pub(crate) fn with_node_sql(mut self, node: &str, sql: String) -> Result<Self, EmulatorError> {
        let Some(target) = self.nodes.iter_mut().find(|candidate| candidate.name == node) else {
            return Err(EmulatorError::UnknownNode { pipe: self.name, node: node.to_owned() });
        };
        target.sql = sql;
        self.normalized()
    }

    /// Whether the URL text names this pipe (by name or id).
    pub(crate) fn is_named(&self, url_name: &str) -> bool {
        self.name == url_name || self.id.as_deref() == Some(url_name)
    }
}

/// The demo pipes.
///
/// Defined by rows (served without ClickHouse): `top_pages` and `tenant_events`, with rows for
/// orgs acme, globex and initech and users `user_alice`, `user_bob`, `user_carol`, `user_dave`
/// (alice belongs to acme and globex); every column is an optional filter (fail open).
///
/// Defined by nodes, as Tinybird users write them, over the demo data source `tenant_events`
/// (run by ClickHouse: they need `chdb_python`):
/// - `org_events`: `{% if defined(org) %} AND org = {{String(org)}} {% end %}`: fails open, every
///   org's rows come back without `org`;
/// - `org_events_strict`: `org = {{String(org, required=True)}}`: 400 without `org`;
/// - `org_event_totals`: reads `org` only in its upstream node `org_rows` (required there), the
///   endpoint node aggregates that node;
/// - `event_counts`: never reads `org` (counts every org's events: not for tenant tokens).
#[must_use]
pub fn default_pipes() -> Vec<PipeDefinition> {
    vec![top_pages(), tenant_events(), org_events(), org_events_strict(), org_event_totals(), event_counts()]
}

fn org_events() -> PipeDefinition {
    PipeDefinition::from_nodes(
        "org_events",
        vec![PipeNode::new(
            "org_events_endpoint",
            "%\nSELECT org, user, event, amount\nFROM tenant_events\nWHERE 1\n    {% if defined(org) %} AND org = {{String(org)}} {% end %}\n    {% if defined(event) %} AND event = {{String(event)}} {% end %}\nORDER BY org, amount",
        )],
    )
    .with_description("Events of an organization; every organization's without `org` (a fail-open filter).")
}

fn org_events_strict() -> PipeDefinition {
    PipeDefinition::from_nodes(
        "org_events_strict",
        vec![PipeNode::new(
            "org_events_strict_endpoint",
            "%\nSELECT org, user, event, amount\nFROM tenant_events\nWHERE org = {{String(org, required=True)}}\n    AND amount >= {{UInt32(min_amount, 0)}}\nORDER BY amount\nLIMIT {{Int32(limit, 100)}}",
        )],
    )
    .with_description("Events of one organization; `org` is required.")
}

fn org_event_totals() -> PipeDefinition {
    PipeDefinition::from_nodes(
        "org_event_totals",
        vec![
            PipeNode::new(
                "org_rows",
                "%\nSELECT org, event, amount\nFROM tenant_events\nWHERE org = {{String(org, required=True)}}",
            ),
            PipeNode::new(
                "totals",
                "SELECT org, event, count() AS events, sum(amount) AS total\nFROM org_rows\nGROUP BY org, event\nORDER BY event",
            ),
        ],
    )
    .with_description("Totals per event of one organization; `org` is read by the upstream node `org_rows`.")
}

fn event_counts() -> PipeDefinition {
    PipeDefinition::from_nodes(
        "event_counts",
        vec![PipeNode::new(
            "event_counts_endpoint",
            "SELECT event, count() AS events, sum(amount) AS total\nFROM tenant_events\nGROUP BY event\nORDER BY event",
        )],
    )
    .with_description("Events of every organization, counted per event: reads no tenant parameter.")
}

fn top_pages() -> PipeDefinition {
    let mut pipe = PipeDefinition::new(
        "top_pages",
        vec![
            Column::new("org", "String"),
            Column::new("user", "String"),
            Column::new("pathname", "String"),
            Column::new("hits", "UInt64"),
        ],
    );
    for (org, user, pathname, hits) in [
        ("acme", "user_alice", "/", 120),
        ("acme", "user_alice", "/pricing", 40),
        ("acme", "user_bob", "/", 75),
        ("globex", "user_alice", "/docs", 33),
        ("globex", "user_carol", "/", 90),
        ("initech", "user_dave", "/tps-reports", 12),
    ] {
        pipe = pipe.with_row(json!({"org": org, "user": user, "pathname": pathname, "hits": hits}));
    }
    pipe
}

fn tenant_events() -> PipeDefinition {
    let mut pipe = PipeDefinition::new(
        "tenant_events",
        vec![
            Column::new("org", "String"),
            Column::new("user", "String"),
            Column::new("event", "String"),
            Column::new("timestamp", "DateTime"),
        ],
    );
    for (org, user, event, timestamp) in [
        ("acme", "user_alice", "login", "2026-01-05 09:00:00"),
        ("acme", "user_bob", "export", "2026-01-05 09:30:00"),
        ("globex", "user_carol", "login", "2026-01-05 10:00:00"),
        ("globex", "user_alice", "invite", "2026-01-05 10:15:00"),
        ("initech", "user_dave", "login", "2026-01-05 11:00:00"),
    ] {
        pipe = pipe.with_row(json!({"org": org, "user": user, "event": event, "timestamp": timestamp}));
    }
    pipe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizing_assigns_an_id_and_checks_the_name() {
        let pipe = PipeDefinition::new("a_pipe", vec![]).normalized().unwrap();
        assert!(pipe.id.as_deref().unwrap().starts_with("t_"));
        assert!(pipe.is_named("a_pipe"));
        assert!(pipe.is_named(pipe.id.as_deref().unwrap()));
        assert!(PipeDefinition::new("bad.name", vec![]).normalized().is_err());
        assert!(PipeDefinition::new("", vec![]).normalized().is_err());
    }
}
