//! Pipe nodes: named SQL queries (Tinybird templates when they start with `%`), each reading
//! data sources and earlier nodes by name, the endpoint node answering the pipe. A pipe query
//! renders the endpoint node and the earlier nodes it reads (transitively), and hands ClickHouse
//! one query: the nodes as `WITH name AS (...)` common tables, then the endpoint's SQL.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::sql_scan;
use super::template::{self, TemplateError};
use crate::EmulatorError;

/// Most nodes a pipe may have.
pub(crate) const MAX_NODES: usize = 32;

/// One node of a pipe defined by nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeNode {
    /// Node name: an identifier, unique in the pipe; later nodes read this node by it.
    pub name: String,
    /// The node's SQL; a template when it starts with `%`.
    pub sql: String,
    /// Node id (`t_...`); derived from the pipe's id and the node's name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Free text shown in the pipe's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl PipeNode {
    /// A node.
    #[must_use]
    pub fn new(name: impl Into<String>, sql: impl Into<String>) -> Self {
        Self { name: name.into(), sql: sql.into(), id: None, description: None }
    }
}

/// A stable node id: the same pipe id and node name always give the same id.
pub(crate) fn node_id(pipe_id: &str, node_name: &str) -> String {
    let digest = Sha256::digest(format!("{pipe_id}/{node_name}").as_bytes());
    let hex: String = digest.iter().take(16).map(|byte| format!("{byte:02x}")).collect();
    format!("t_{hex}")
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_identifier(text: &str) -> bool {
    let mut characters = text.chars();
    characters.next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && characters.all(|character| character.is_ascii_alphanumeric() || character == '_')
}

/// Checks a pipe's nodes (names, sizes, template syntax) and fills in their ids.
pub(crate) fn normalize(pipe_name: &str, pipe_id: &str, nodes: &mut [PipeNode]) -> Result<(), EmulatorError> {
    let invalid = |why: String| Err(EmulatorError::InvalidPipe(format!("pipe {pipe_name}: {why}")));
    if nodes.len() > MAX_NODES {
        return invalid(format!("{} nodes, more than {MAX_NODES}", nodes.len()));
    }
    for index in 0..nodes.len() {
        let node = &nodes[index];
        if !is_identifier(&node.name) {
            return invalid(format!(
                "node name {:?} must be ASCII letters, digits and underscores",
                node.name
            ));
        }
        if nodes[..index].iter().any(|earlier| earlier.name == node.name) {
            return invalid(format!("two nodes are named {}", node.name));
        }
        if node.sql.len() > template::MAX_TEMPLATE_BYTES {
            return invalid(format!(
                "node {}: SQL longer than {} bytes",
                node.name,
                template::MAX_TEMPLATE_BYTES
            ));
        }
        if let Err(error) = template::node_template(&node.sql) {
            return invalid(format!("node {}: {}", node.name, error.message));
        }
        if node.id.is_none() {
            nodes[index].id = Some(node_id(pipe_id, &nodes[index].name));
        }
    }
    Ok(())
}

/// The query that answers a pipe: the endpoint node (`endpoint` is its index) rendered with
/// `params`, preceded by the earlier nodes it reads as common tables.
pub(crate) fn pipe_query(
    nodes: &[PipeNode],
    endpoint: usize,
    params: &BTreeMap<String, Value>,
) -> Result<String, TemplateError> {
    let mut rendered: BTreeMap<usize, String> = BTreeMap::new();
    let mut pending = vec![endpoint];
    while let Some(index) = pending.pop() {
        if rendered.contains_key(&index) {
            continue;
        }
        let sql = template::render_node_sql(&nodes[index].sql, params)?;
        for table in sql_scan::tables_read(&sql) {
            // A node reads only the nodes before it.
            if let Some(read) = nodes[..index].iter().position(|node| node.name == table) {
                pending.push(read);
            }
        }
        rendered.insert(index, sql);
    }
    let endpoint_sql = rendered.remove(&endpoint).unwrap_or_default();
    if rendered.is_empty() {
        return Ok(endpoint_sql);
    }
    let common_tables: Vec<String> = rendered
        .iter()
        .map(|(index, sql)| format!("`{}` AS (\n{}\n)", nodes[*index].name, strip_statement_end(sql)))
        .collect();
    let common_tables = common_tables.join(",\n");
    Ok(match sql_scan::after_leading_with(&endpoint_sql) {
        // The endpoint has its own WITH list: the nodes go first in it.
        Some(rest) => format!("WITH {common_tables},{rest}"),
        None => format!("WITH {common_tables}\n{endpoint_sql}"),
    })
}

/// A node's SQL without a trailing `;` (it goes inside parentheses).
fn strip_statement_end(sql: &str) -> &str {
    let trimmed = sql.trim_end();
    trimmed.strip_suffix(';').unwrap_or(trimmed)
}

/// The tables each node reads, whatever the parameters: every branch of a template counted.
pub(crate) fn dependencies(sql: &str) -> Vec<String> {
    match template::node_template(sql) {
        Ok(Some(template)) => {
            let mut tables: Vec<String> = Vec::new();
            for text in template.sql_variants() {
                for table in sql_scan::tables_read(&text) {
                    if !tables.contains(&table) {
                        tables.push(table);
                    }
                }
            }
            tables
        }
        Ok(None) => sql_scan::tables_read(sql),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(value: &Value) -> BTreeMap<String, Value> {
        value.as_object().into_iter().flatten().map(|(name, value)| (name.clone(), value.clone())).collect()
    }

    #[test]
    fn the_endpoint_reads_earlier_nodes_as_common_tables() {
        let nodes = vec![
            PipeNode::new("unused", "%\nSELECT {{String(never, required=True)}}"),
            PipeNode::new("org_rows", "%\nSELECT * FROM tenant_events WHERE org = {{String(org)}}"),
            PipeNode::new("totals", "SELECT org, sum(amount) AS total FROM org_rows GROUP BY org"),
        ];
        let sql = pipe_query(&nodes, 2, &params(&json!({"org": "acme"}))).unwrap();
        assert_eq!(
            sql,
            "WITH `org_rows` AS (\n\nSELECT * FROM tenant_events WHERE org = 'acme'\n)\n\
             SELECT org, sum(amount) AS total FROM org_rows GROUP BY org"
        );
        let missing = pipe_query(&nodes, 2, &BTreeMap::new()).unwrap_err();
        assert!(missing.message.contains("Required parameter is not defined"), "{missing:?}");
    }

    #[test]
    fn an_endpoint_with_its_own_with_list_gets_the_nodes_first() {
        let nodes = vec![
            PipeNode::new("base", "SELECT 1 AS one"),
            PipeNode::new("endpoint", "WITH 2 AS two SELECT one, two FROM base;"),
        ];
        assert_eq!(
            pipe_query(&nodes, 1, &BTreeMap::new()).unwrap(),
            "WITH `base` AS (\nSELECT 1 AS one\n), 2 AS two SELECT one, two FROM base;"
        );
    }

    #[test]
    fn dependencies_count_every_branch() {
        let sql = "%\nSELECT * FROM {% if defined(archive) %} old_events {% else %} events {% end %} JOIN users USING id\n\
                   {% if defined(a) %}{% if defined(b) %} JOIN b_table USING id {% end %}{% elif defined(c) %} JOIN c_table USING id{% end %}";
        assert_eq!(dependencies(sql), ["old_events", "users", "b_table", "events", "c_table"]);
    }

    #[test]
    fn normalizing_checks_names_and_templates_and_derives_ids() {
        let mut nodes = vec![PipeNode::new("a", "SELECT 1")];
        normalize("p", "t_1", &mut nodes).unwrap();
        assert_eq!(nodes[0].id.as_deref(), Some(node_id("t_1", "a").as_str()));
        for bad in [
            vec![PipeNode::new("a b", "SELECT 1")],
            vec![PipeNode::new("a", "SELECT 1"), PipeNode::new("a", "SELECT 2")],
            vec![PipeNode::new("a", "% SELECT {% if x %}")],
        ] {
            let mut bad = bad;
            assert!(normalize("p", "t_1", &mut bad).is_err());
        }
    }
}
