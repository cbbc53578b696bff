//! Running a pipe endpoint: parameters (with `fixed_params` winning), the rows of a pipe
//! defined by rows, and the `.json` / `.ndjson` / `.csv` answer shapes.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::clickhouse::QueryRows;
use super::errors::TinybirdError;
use super::pipes::PipeDefinition;
use super::{describe, template};

/// Query-string parameters that are not pipe parameters.
const RESERVED_PARAMS: [&str; 2] = ["token", "q"];
/// Most query-string parameters a pipe query may carry.
const MAX_PARAMS: usize = 128;
/// Longest query-string parameter (name and value).
const MAX_PARAM_BYTES: usize = 16 * 1024;

/// Output formats of a pipe endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Ndjson,
    Csv,
}

/// Splits `top_pages.json` into the pipe as written and its format; `None` format for a bare
/// name (the pipe description), `Err` for an unsupported extension.
pub(crate) fn split_format(segment: &str) -> (&str, Option<Result<Format, TinybirdError>>) {
    let Some((name, extension)) = segment.rsplit_once('.') else {
        return (segment, None);
    };
    let format = match extension {
        "json" => Ok(Format::Json),
        "ndjson" => Ok(Format::Ndjson),
        "csv" => Ok(Format::Csv),
        other => Err(TinybirdError::bad_request(format!(
            "Format '{other}' is not supported by the emulator (json, ndjson, csv)"
        ))),
    };
    (name, Some(format))
}

/// The pipe name as written in a request path, without extension (for faults and rate limits).
pub(crate) fn pipe_in_path(path: &str) -> Option<String> {
    let segment = path.strip_prefix("/v0/pipes/")?;
    let segment = segment.split('/').next()?;
    Some(split_format(segment).0.to_owned())
}

/// Query parameters overridden by the scope's `fixed_params`. A null fixed param removes the
/// parameter altogether: the pipe then behaves as if it was never given, so `{% if defined(org) %}`
/// drops its filter (the fail-open case). Source: the project's external-apis.md, "Fail-open
/// pitfall" (from Tinybird's template docs: a missing or null param is not `defined`), which is
/// also why a Clerk shortcode rendering `null` for a user without an organization leaks.
pub(crate) fn effective_params(
    query: &[(String, String)],
    fixed_params: Option<&Map<String, Value>>,
) -> Result<BTreeMap<String, Value>, TinybirdError> {
    let too_long = query.iter().find(|(name, value)| name.len() + value.len() > MAX_PARAM_BYTES);
    if query.len() > MAX_PARAMS || too_long.is_some() {
        return Err(TinybirdError::bad_request(format!(
            "[Error] At most {MAX_PARAMS} parameters of at most {MAX_PARAM_BYTES} bytes each (emulator limit)"
        )));
    }
    let mut params: BTreeMap<String, Value> = query
        .iter()
        .filter(|(name, _)| !RESERVED_PARAMS.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    for (name, value) in fixed_params.into_iter().flatten() {
        if value.is_null() {
            params.remove(name);
        } else {
            params.insert(name.clone(), value.clone());
        }
    }
    Ok(params)
}

/// What a pipe query answers, whatever the pipe is defined by.
#[derive(Debug)]
pub(crate) struct PipeAnswer {
    /// `{"name", "type"}` of each column, in order.
    pub(crate) meta: Vec<Value>,
    /// Rows, as objects keyed by column name.
    pub(crate) data: Vec<Value>,
    pub(crate) rows_before_limit_at_least: Option<Value>,
    pub(crate) rows_read: Value,
    pub(crate) bytes_read: Value,
}

impl From<QueryRows> for PipeAnswer {
    fn from(rows: QueryRows) -> Self {
        let statistic = |name: &str| rows.statistics.get(name).cloned().unwrap_or(json!(0));
        Self {
            meta: rows.meta.clone(),
            rows_before_limit_at_least: rows.rows_before_limit_at_least.clone(),
            rows_read: statistic("rows_read"),
            bytes_read: statistic("bytes_read"),
            data: rows.rows,
        }
    }
}

/// The answer of a pipe defined by rows. Its description's template is rendered first, so a
/// missing required parameter fails exactly as that template does; then the rows equal (as
/// text) to each column parameter are kept.
pub(crate) fn run_rows(
    pipe: &PipeDefinition,
    params: &BTreeMap<String, Value>,
) -> Result<PipeAnswer, TinybirdError> {
    template::render_node_sql(&describe::rows_sql(pipe), params).map_err(TinybirdError::from_template)?;
    let filters: Vec<(&str, &Value)> = describe::filter_columns(pipe)
        .filter_map(|column| params.get_key_value(&column.name))
        .map(|(name, value)| (name.as_str(), value))
        .collect();
    let data: Vec<Value> = pipe
        .rows
        .iter()
        .filter(|row| {
            filters.iter().all(|(column, wanted)| row.get(*column).is_some_and(|cell| matches(cell, wanted)))
        })
        .map(|row| Value::Object(project(pipe, row)))
        .collect();
    let bytes_read: usize = pipe.rows.iter().map(|row| Value::Object(row.clone()).to_string().len()).sum();
    Ok(PipeAnswer {
        meta: pipe.columns.iter().map(|column| json!(column)).collect(),
        rows_before_limit_at_least: Some(json!(data.len())),
        data,
        rows_read: json!(pipe.rows.len()),
        bytes_read: json!(bytes_read),
    })
}

/// A row restricted to the pipe's columns (missing cells become null).
fn project(pipe: &PipeDefinition, row: &Map<String, Value>) -> Map<String, Value> {
    pipe.columns
        .iter()
        .map(|column| (column.name.clone(), row.get(&column.name).cloned().unwrap_or(Value::Null)))
        .collect()
}

/// Equality as a pipe parameter sees it: compared as text; an array parameter matches any item.
fn matches(cell: &Value, wanted: &Value) -> bool {
    match wanted {
        Value::Array(options) => options.iter().any(|option| matches(cell, option)),
        _ => as_text(cell) == as_text(wanted),
    }
}

fn as_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

impl PipeAnswer {
    pub(crate) fn into_response(self, format: Format, elapsed_secs: f64) -> Response {
        match format {
            Format::Json => self.json(elapsed_secs).into_response(),
            Format::Ndjson => {
                let body: String = self.data.iter().map(|row| format!("{row}\n")).collect();
                ([(CONTENT_TYPE, "application/x-ndjson")], body).into_response()
            }
            Format::Csv => ([(CONTENT_TYPE, "text/csv; charset=utf-8")], self.csv()).into_response(),
        }
    }

    fn json(self, elapsed_secs: f64) -> Json<Value> {
        let mut body = json!({
            "meta": self.meta,
            "data": self.data,
            "rows": self.data.len(),
            "statistics": {
                "elapsed": elapsed_secs,
                "rows_read": self.rows_read,
                "bytes_read": self.bytes_read,
            },
        });
        if let Some(rows) = self.rows_before_limit_at_least {
            body["rows_before_limit_at_least"] = rows;
        }
        Json(body)
    }

    fn column_names(&self) -> Vec<String> {
        self.meta.iter().map(|column| column["name"].as_str().unwrap_or_default().to_owned()).collect()
    }

    fn csv(&self) -> String {
        let names = self.column_names();
        let header: Vec<String> = names.iter().map(|name| csv_field(name)).collect();
        let mut out = header.join(",");
        out.push('\n');
        for row in &self.data {
            let fields: Vec<String> = names
                .iter()
                .map(|name| match row.get(name) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(text)) => csv_field(text),
                    Some(other) => csv_field(&other.to_string()),
                })
                .collect();
            out.push_str(&fields.join(","));
            out.push('\n');
        }
        out
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tinybird::pipes::default_pipes;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
    }

    #[test]
    fn fixed_params_beat_query_params() {
        let fixed = json!({"org": "acme"});
        let params = effective_params(
            &query(&[("org", "globex"), ("token", "x"), ("pathname", "/")]),
            fixed.as_object(),
        )
        .unwrap();
        assert_eq!(params["org"], json!("acme"));
        assert_eq!(params["pathname"], json!("/"));
        assert!(!params.contains_key("token"));
    }

    #[test]
    fn null_fixed_param_drops_the_filter() {
        let fixed = json!({"org": null});
        let params = effective_params(&query(&[("org", "globex")]), fixed.as_object()).unwrap();
        assert!(!params.contains_key("org"));
    }

    #[test]
    fn filters_rows_by_column_params_and_ignores_others() {
        let pipes = default_pipes();
        let mut params = effective_params(&query(&[("org", "acme"), ("unrelated", "1")]), None).unwrap();
        let result = run_rows(&pipes[0], &params).unwrap();
        assert_eq!(result.data.len(), 3);
        params.insert("hits".into(), json!(120));
        assert_eq!(run_rows(&pipes[0], &params).unwrap().data.len(), 1);
        params.insert("org".into(), json!(["globex", "initech"]));
        params.remove("hits");
        assert_eq!(run_rows(&pipes[0], &params).unwrap().data.len(), 3);
    }

    #[test]
    fn required_params_are_enforced_as_the_description_template_does() {
        let pipe = default_pipes().remove(0).with_required_param("org");
        let error = run_rows(&pipe, &BTreeMap::new()).err().unwrap();
        assert_eq!(error.status(), 400);
        assert!(
            error.message().starts_with("Template Syntax Error: Required parameter is not defined."),
            "{error:?}"
        );
        let params = effective_params(&query(&[("org", "acme")]), None).unwrap();
        assert_eq!(run_rows(&pipe, &params).unwrap().data.len(), 3);
    }

    #[test]
    fn splits_formats_and_paths() {
        assert_eq!(split_format("top_pages").0, "top_pages");
        assert!(split_format("top_pages").1.is_none());
        assert!(matches!(split_format("top_pages.csv").1, Some(Ok(Format::Csv))));
        assert!(matches!(split_format("top_pages.parquet").1, Some(Err(_))));
        assert_eq!(pipe_in_path("/v0/pipes/top_pages.json").as_deref(), Some("top_pages"));
        assert_eq!(pipe_in_path("/v1/workspace"), None);
    }

    #[test]
    fn csv_quotes_awkward_fields() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
