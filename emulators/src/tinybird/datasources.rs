//! Data source definitions: a name, an id, typed ClickHouse columns and rows, served by real
//! ClickHouse (chdb) as `ENGINE = Memory` tables.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::pipes::Column;
use crate::EmulatorError;
use crate::random;

/// Longest accepted column type text (`Nullable(LowCardinality(String))` is 31).
const MAX_TYPE_LEN: usize = 128;

/// A data source served by the emulator through the Query API (`/v0/sql`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSourceDefinition {
    /// Data source name: the ClickHouse table, and the `resource` of `DATASOURCES:READ` scopes.
    pub name: String,
    /// Data source id (`t_...`), also accepted in scopes; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Columns with their ClickHouse types (`String`, `UInt32`, `DateTime`, `Nullable(String)`...).
    pub columns: Vec<Column>,
    /// Rows, as objects keyed by column name (missing cells take the type's default).
    #[serde(default)]
    pub rows: Vec<Map<String, Value>>,
}

impl DataSourceDefinition {
    /// A data source with no rows.
    #[must_use]
    pub fn new(name: impl Into<String>, columns: Vec<Column>) -> Self {
        Self { name: name.into(), id: None, columns, rows: Vec::new() }
    }

    /// Adds a row (an object keyed by column name; non-objects are ignored).
    #[must_use]
    pub fn with_row(mut self, row: Value) -> Self {
        if let Value::Object(row) = row {
            self.rows.push(row);
        }
        self
    }

    /// Checks the definition (names are identifiers, types look like ClickHouse types) and fills
    /// in a generated id if needed. The checks keep the DDL built from it well-formed.
    pub(crate) fn normalized(mut self) -> Result<Self, EmulatorError> {
        let invalid = |why: String| Err(EmulatorError::InvalidDataSource(why));
        if !is_identifier(&self.name) {
            return invalid(format!(
                "data source name {:?} must be ASCII letters, digits and underscores, not starting with a digit",
                self.name
            ));
        }
        if self.columns.is_empty() {
            return invalid(format!("data source {} needs at least one column", self.name));
        }
        for column in &self.columns {
            if !is_identifier(&column.name) {
                return invalid(format!(
                    "column name {:?} of data source {} must be ASCII letters, digits and underscores",
                    column.name, self.name
                ));
            }
            if !is_type_text(&column.column_type) {
                return invalid(format!(
                    "column {} of data source {}: type {:?} must be a ClickHouse type such as String, UInt32 or Nullable(String)",
                    column.name, self.name, column.column_type
                ));
            }
        }
        if self.id.is_none() {
            self.id = Some(format!("t_{}", random::hex(16)));
        }
        Ok(self)
    }

    /// Whether a scope's `resource` names this data source (by name or id).
    pub(crate) fn is_named(&self, resource: &str) -> bool {
        self.name == resource || self.id.as_deref() == Some(resource)
    }

    /// The statements that (re)create the table with its rows, in order.
    pub(crate) fn ddl(&self) -> Vec<String> {
        let columns: Vec<String> =
            self.columns.iter().map(|column| format!("`{}` {}", column.name, column.column_type)).collect();
        let mut statements = vec![
            format!("DROP TABLE IF EXISTS `{}`", self.name),
            format!("CREATE TABLE `{}` ({}) ENGINE = Memory", self.name, columns.join(", ")),
        ];
        if !self.rows.is_empty() {
            // Rows go in as JSON data after FORMAT, never as SQL text.
            let rows: Vec<String> =
                self.rows.iter().map(|row| Value::Object(self.project(row)).to_string()).collect();
            statements.push(format!("INSERT INTO `{}` FORMAT JSONEachRow\n{}", self.name, rows.join("\n")));
        }
        statements
    }

    /// A row restricted to the defined columns (unknown keys would make the insert fail).
    fn project(&self, row: &Map<String, Value>) -> Map<String, Value> {
        self.columns
            .iter()
            .filter_map(|column| row.get(&column.name).map(|cell| (column.name.clone(), cell.clone())))
            .collect()
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn is_identifier(text: &str) -> bool {
    let mut characters = text.chars();
    characters.next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && characters.all(|character| character.is_ascii_alphanumeric() || character == '_')
}

/// Type names, parameters and nesting: letters, digits, `_`, `(`, `)`, `,`, spaces and quoted
/// parameters such as `DateTime('UTC')` (no backslashes, backticks or statement separators).
fn is_type_text(text: &str) -> bool {
    !text.trim().is_empty()
        && text.len() <= MAX_TYPE_LEN
        && text.starts_with(|character: char| character.is_ascii_alphabetic())
        && text.chars().all(|character| character.is_ascii_alphanumeric() || "_(), '".contains(character))
        && text.matches('\'').count().is_multiple_of(2)
}

/// The demo data source `tenant_events` (org, user, event, amount) with rows for orgs acme,
/// globex and initech; acme's rows are the ones whose `amount` is below 100.
#[must_use]
pub fn default_datasources() -> Vec<DataSourceDefinition> {
    let mut events = DataSourceDefinition::new(
        "tenant_events",
        vec![
            Column::new("org", "String"),
            Column::new("user", "String"),
            Column::new("event", "String"),
            Column::new("amount", "UInt32"),
        ],
    );
    for (org, user, event, amount) in [
        ("acme", "user_alice", "login", 1),
        ("acme", "user_bob", "export", 5),
        ("acme", "user_alice", "invoice", 42),
        ("globex", "user_carol", "login", 100),
        ("globex", "user_alice", "invite", 250),
        ("initech", "user_dave", "login", 300),
        ("initech", "user_dave", "export", 7000),
    ] {
        events = events.with_row(json!({"org": org, "user": user, "event": event, "amount": amount}));
    }
    vec![events]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizing_assigns_an_id_and_checks_names_and_types() {
        let source = default_datasources().remove(0).normalized().unwrap();
        assert!(source.id.as_deref().unwrap().starts_with("t_"));
        assert!(source.is_named("tenant_events"));
        let with_type = |column_type: &str| {
            DataSourceDefinition::new("a", vec![Column::new("c", column_type)]).normalized().is_ok()
        };
        assert!(with_type("Nullable(String)"));
        assert!(with_type("DateTime('UTC')"));
        for bad in ["", "String) ENGINE = Log; DROP TABLE x --", "String`", "DateTime('UTC)", "1x"] {
            assert!(!with_type(bad), "{bad}");
        }
        assert!(
            DataSourceDefinition::new("bad name", vec![Column::new("c", "String")]).normalized().is_err()
        );
        assert!(DataSourceDefinition::new("a", vec![Column::new("c-d", "String")]).normalized().is_err());
        assert!(DataSourceDefinition::new("a", vec![]).normalized().is_err());
    }

    #[test]
    fn ddl_recreates_the_table_and_inserts_known_columns_as_json() {
        let source = DataSourceDefinition::new("t", vec![Column::new("org", "String")])
            .with_row(json!({"org": "acme", "unknown": 1}));
        assert_eq!(
            source.ddl(),
            vec![
                "DROP TABLE IF EXISTS `t`".to_owned(),
                "CREATE TABLE `t` (`org` String) ENGINE = Memory".to_owned(),
                "INSERT INTO `t` FORMAT JSONEachRow\n{\"org\":\"acme\"}".to_owned(),
            ]
        );
    }
}
