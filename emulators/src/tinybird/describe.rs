//! A pipe's description, `GET /v0/pipes/{pipe}` (Tinybird's Pipe API): the pipe and its nodes in
//! order, each with its SQL, the tables it reads (`dependencies`) and the parameters its
//! template reads (`params`). A pipe defined by rows is described as the single templated node
//! its filtering amounts to.

use serde_json::{Value, json};

use super::nodes::{self, PipeNode};
use super::pipes::PipeDefinition;
use super::template::{self, ParamInfo};

/// The description of a (normalized) pipe.
pub(crate) fn describe(pipe: &PipeDefinition) -> Value {
    let pipe_id = pipe.id.clone().unwrap_or_default();
    let (nodes, endpoint) = if pipe.is_defined_by_nodes() {
        (pipe.nodes.clone(), pipe.endpoint_index().unwrap_or(0))
    } else {
        let mut node = PipeNode::new(rows_node_name(pipe), rows_sql(pipe));
        node.id = Some(nodes::node_id(&pipe_id, &node.name));
        (vec![node], 0)
    };
    let described: Vec<Value> = nodes
        .iter()
        .enumerate()
        .map(|(index, node)| {
            let mut node_description = describe_node(node, index == endpoint);
            if !pipe.is_defined_by_nodes() {
                node_description["columns"] = json!(pipe.columns);
            }
            node_description
        })
        .collect();
    json!({
        "id": pipe_id,
        "name": pipe.name,
        "description": pipe.description,
        "type": "endpoint",
        "endpoint": nodes.get(endpoint).and_then(|node| node.id.clone()),
        "nodes": described,
    })
}

fn describe_node(node: &PipeNode, is_endpoint: bool) -> Value {
    let params: Vec<Value> = match template::node_template(&node.sql) {
        Ok(Some(template)) => template.params().iter().map(ParamInfo::to_json).collect(),
        Ok(None) | Err(_) => Vec::new(),
    };
    json!({
        "id": node.id,
        "name": node.name,
        "sql": node.sql,
        "description": node.description,
        "materialized": null,
        "node_type": if is_endpoint { "endpoint" } else { "standard" },
        "dependencies": nodes::dependencies(&node.sql),
        "params": params,
    })
}

fn rows_node_name(pipe: &PipeDefinition) -> String {
    format!("{}_endpoint", pipe.name)
}

/// The columns of a pipe defined by rows that filter it: those a template can name.
pub(crate) fn filter_columns(pipe: &PipeDefinition) -> impl Iterator<Item = &super::pipes::Column> {
    pipe.columns.iter().filter(|column| template::is_param_name(&column.name))
}

/// The template a pipe defined by rows amounts to, reading its rows as the table `<pipe>_rows`:
/// a required column parameter filters with `{{String(x, required=True)}}`, any other column
/// parameter with a `{% if defined(x) %}` guard (fail open); a required parameter that is no
/// column is read in a comment only (required, filtering nothing). Values are compared as text.
pub(crate) fn rows_sql(pipe: &PipeDefinition) -> String {
    let selected: Vec<String> =
        pipe.columns.iter().map(|column| format!("`{}`", column.name.replace('`', ""))).collect();
    let selected = if selected.is_empty() { "*".to_owned() } else { selected.join(", ") };
    let mut sql = format!("%\nSELECT {selected}\nFROM {}_rows\nWHERE 1", pipe.name);
    for column in filter_columns(pipe) {
        let name = &column.name;
        let compared =
            if column.column_type == "String" { name.clone() } else { format!("toString({name})") };
        if pipe.required_params.contains(name) {
            sql.push_str(&format!("\n    AND {compared} = {{{{String({name}, required=True)}}}}"));
        } else {
            sql.push_str(&format!(
                "\n    {{% if defined({name}) %}} AND {compared} = {{{{String({name})}}}} {{% end %}}"
            ));
        }
    }
    for name in &pipe.required_params {
        if !filter_columns(pipe).any(|column| &column.name == name) {
            sql.push_str(&format!(
                "\n    -- {{{{String({name}, required=True)}}}}: required, filters nothing"
            ));
        }
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tinybird::pipes::{Column, default_pipes};

    #[test]
    fn a_rows_pipe_is_described_as_the_template_its_filter_amounts_to() {
        let pipe =
            PipeDefinition::new("sales", vec![Column::new("org", "String"), Column::new("hits", "UInt64")])
                .with_required_param("org")
                .with_required_param("region")
                .normalized()
                .unwrap();
        let description = describe(&pipe);
        let node = &description["nodes"][0];
        assert_eq!(
            node["sql"],
            "%\nSELECT `org`, `hits`\nFROM sales_rows\nWHERE 1\n    AND org = {{String(org, required=True)}}\n    \
             {% if defined(hits) %} AND toString(hits) = {{String(hits)}} {% end %}\n    \
             -- {{String(region, required=True)}}: required, filters nothing"
        );
        assert_eq!(node["node_type"], "endpoint");
        assert_eq!(node["dependencies"], json!(["sales_rows"]));
        assert_eq!(description["endpoint"], node["id"]);
        assert_eq!(
            node["params"],
            json!([
                {"name": "org", "type": "String", "default": null, "required": true},
                {"name": "hits", "type": "String", "default": null},
                {"name": "region", "type": "String", "default": null, "required": true},
            ])
        );
    }

    #[test]
    fn a_nodes_pipe_lists_its_nodes_dependencies_and_params() {
        let pipe = default_pipes().into_iter().find(|pipe| pipe.name == "org_event_totals").unwrap();
        let description = describe(&pipe.normalized().unwrap());
        assert_eq!(description["type"], "endpoint");
        let nodes = description["nodes"].as_array().unwrap();
        assert_eq!(
            (nodes[0]["name"].as_str(), nodes[0]["node_type"].as_str()),
            (Some("org_rows"), Some("standard"))
        );
        assert_eq!(nodes[0]["dependencies"], json!(["tenant_events"]));
        assert_eq!(nodes[1]["dependencies"], json!(["org_rows"]));
        assert_eq!(nodes[1]["node_type"], "endpoint");
        assert_eq!(nodes[1]["params"], json!([]));
        assert_eq!(description["endpoint"], nodes[1]["id"]);
        assert_eq!(nodes[0]["materialized"], Value::Null);
    }
}
