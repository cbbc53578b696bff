//! Running a pipe endpoint: parameters (with `fixed_params` winning), row filtering and the
//! `.json` / `.ndjson` / `.csv` answer shapes.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::errors::TinybirdError;
use super::pipes::PipeDefinition;

/// Query-string parameters that are not pipe parameters.
const RESERVED_PARAMS: [&str; 2] = ["token", "q"];

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
) -> BTreeMap<String, Value> {
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
    params
}

/// The rows a pipe returns for these parameters.
pub(crate) struct QueryResult<'a> {
    pipe: &'a PipeDefinition,
    rows: Vec<&'a Map<String, Value>>,
}

pub(crate) fn run<'a>(
    pipe: &'a PipeDefinition,
    params: &BTreeMap<String, Value>,
) -> Result<QueryResult<'a>, TinybirdError> {
    if let Some(missing) = pipe.required_params.iter().find(|name| !params.contains_key(name.as_str())) {
        return Err(TinybirdError::bad_request(format!("[Error] Missing required parameter '{missing}'")));
    }
    let filters: Vec<(&str, &Value)> = params
        .iter()
        .filter(|(name, _)| pipe.columns.iter().any(|column| &column.name == *name))
        .map(|(name, value)| (name.as_str(), value))
        .collect();
    let rows = pipe
        .rows
        .iter()
        .filter(|row| {
            filters.iter().all(|(column, wanted)| row.get(*column).is_some_and(|cell| matches(cell, wanted)))
        })
        .collect();
    Ok(QueryResult { pipe, rows })
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

impl QueryResult<'_> {
    pub(crate) fn into_response(self, format: Format, elapsed_secs: f64) -> Response {
        match format {
            Format::Json => self.json(elapsed_secs).into_response(),
            Format::Ndjson => {
                let body: String =
                    self.rows.iter().map(|row| format!("{}\n", Value::Object(self.project(row)))).collect();
                ([(CONTENT_TYPE, "application/x-ndjson")], body).into_response()
            }
            Format::Csv => ([(CONTENT_TYPE, "text/csv; charset=utf-8")], self.csv()).into_response(),
        }
    }

    fn json(&self, elapsed_secs: f64) -> Json<Value> {
        let data: Vec<Value> = self.rows.iter().map(|row| Value::Object(self.project(row))).collect();
        let bytes_read: usize =
            self.pipe.rows.iter().map(|row| Value::Object(row.clone()).to_string().len()).sum();
        Json(json!({
            "meta": self.pipe.columns,
            "data": data,
            "rows": self.rows.len(),
            "rows_before_limit_at_least": self.rows.len(),
            "statistics": {
                "elapsed": elapsed_secs,
                "rows_read": self.pipe.rows.len(),
                "bytes_read": bytes_read,
            },
        }))
    }

    /// A row restricted to the pipe's columns (missing cells become null).
    fn project(&self, row: &Map<String, Value>) -> Map<String, Value> {
        self.pipe
            .columns
            .iter()
            .map(|column| {
                let cell = row.get(&column.name).cloned().unwrap_or(Value::Null);
                (column.name.clone(), cell)
            })
            .collect()
    }

    fn csv(&self) -> String {
        let header: Vec<String> = self.pipe.columns.iter().map(|column| csv_field(&column.name)).collect();
        let mut out = header.join(",");
        out.push('\n');
        for row in &self.rows {
            let fields: Vec<String> = self
                .pipe
                .columns
                .iter()
                .map(|column| match row.get(&column.name) {
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
        );
        assert_eq!(params["org"], json!("acme"));
        assert_eq!(params["pathname"], json!("/"));
        assert!(!params.contains_key("token"));
    }

    #[test]
    fn null_fixed_param_drops_the_filter() {
        let fixed = json!({"org": null});
        let params = effective_params(&query(&[("org", "globex")]), fixed.as_object());
        assert!(!params.contains_key("org"));
    }

    #[test]
    fn filters_rows_by_column_params_and_ignores_others() {
        let pipes = default_pipes();
        let mut params = effective_params(&query(&[("org", "acme"), ("unrelated", "1")]), None);
        let result = run(&pipes[0], &params).unwrap();
        assert_eq!(result.rows.len(), 3);
        params.insert("hits".into(), json!(120));
        assert_eq!(run(&pipes[0], &params).unwrap().rows.len(), 1);
        params.insert("org".into(), json!(["globex", "initech"]));
        params.remove("hits");
        assert_eq!(run(&pipes[0], &params).unwrap().rows.len(), 3);
    }

    #[test]
    fn required_params_are_enforced() {
        let pipe = default_pipes().remove(0).with_required_param("org");
        let error = run(&pipe, &BTreeMap::new()).err().unwrap();
        assert_eq!(error.status(), 400);
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
