//! Pipe definitions: a name, an id, typed columns and the rows the endpoint serves.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

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

/// A pipe endpoint served by the emulator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipeDefinition {
    /// Pipe name, used in `/v0/pipes/{name}.json`.
    pub name: String,
    /// Pipe id (`t_...`), also accepted in URLs and scopes; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Output columns.
    pub columns: Vec<Column>,
    /// Rows, as objects keyed by column name.
    #[serde(default)]
    pub rows: Vec<Map<String, Value>>,
    /// Parameters the endpoint refuses to run without (400), like `{{String(org, required=True)}}`.
    /// Without this, a missing or null parameter simply drops its filter (fail open), like
    /// `{% if defined(org) %}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_params: Vec<String>,
}

impl PipeDefinition {
    /// A pipe with no rows.
    #[must_use]
    pub fn new(name: impl Into<String>, columns: Vec<Column>) -> Self {
        Self { name: name.into(), id: None, columns, rows: Vec::new(), required_params: Vec::new() }
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

    /// Checks the definition and fills in a generated id if needed.
    pub(crate) fn normalized(mut self) -> Result<Self, EmulatorError> {
        let valid_name = !self.name.is_empty()
            && self.name.chars().all(|character| character.is_ascii_alphanumeric() || character == '_');
        if !valid_name {
            return Err(EmulatorError::InvalidPipe(format!(
                "pipe name {:?} must be non-empty ASCII letters, digits and underscores",
                self.name
            )));
        }
        if self.id.is_none() {
            self.id = Some(format!("t_{}", random::hex(16)));
        }
        Ok(self)
    }

    /// Whether the URL text names this pipe (by name or id).
    pub(crate) fn is_named(&self, url_name: &str) -> bool {
        self.name == url_name || self.id.as_deref() == Some(url_name)
    }

    /// The description `GET /v0/pipes/{name}` answers.
    pub(crate) fn description(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "type": "endpoint",
            "endpoint": self.id,
            "description": null,
            "nodes": [{
                "name": format!("{}_endpoint", self.name),
                "columns": self.columns,
                "node_type": "endpoint",
            }],
            "url": format!("/v0/pipes/{}.json", self.name),
            "required_params": self.required_params,
        })
    }
}

/// The demo pipes: `top_pages` and `tenant_events`, with rows for orgs acme, globex and initech
/// and users `user_alice`, `user_bob`, `user_carol`, `user_dave` (alice belongs to acme and globex).
#[must_use]
pub fn default_pipes() -> Vec<PipeDefinition> {
    vec![top_pages(), tenant_events()]
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
