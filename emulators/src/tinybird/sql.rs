//! The Query API, `GET /v0/sql?q=SELECT * FROM <data source> [FORMAT JSON]`, as Tinybird applies
//! a `DATASOURCES:READ` scope: the scope's `filter` is pasted verbatim into a `WHERE` around the
//! data source, and real ClickHouse runs the result. Only that shape of `q` is run.

use std::time::Instant;

use axum::response::{IntoResponse, Json, Response};
use serde_json::json;

use super::auth::{Access, DATASOURCES_READ};
use super::errors::TinybirdError;
use super::state::TinybirdState;

/// The only query shape the emulator runs.
const SUPPORTED: &str =
    "the emulator's /v0/sql runs only `SELECT * FROM <data source>` with an optional `FORMAT JSON`";

/// The data source a supported `q` reads: `SELECT * FROM <name> [FORMAT JSON]`, keywords in any
/// case, separated by any whitespace.
pub(crate) fn datasource_in_query(q: &str) -> Result<&str, TinybirdError> {
    let words: Vec<&str> = q.split_whitespace().collect();
    let keyword =
        |index: usize, wanted: &str| words.get(index).is_some_and(|word| word.eq_ignore_ascii_case(wanted));
    let shape_ok = keyword(0, "SELECT")
        && words.get(1) == Some(&"*")
        && keyword(2, "FROM")
        && match words.len() {
            4 => true,
            6 => keyword(4, "FORMAT") && keyword(5, "JSON"),
            _ => false,
        };
    let name = words.get(3).copied().unwrap_or_default();
    let name_ok = !name.is_empty()
        && name.chars().all(|character| character.is_ascii_alphanumeric() || character == '_');
    if shape_ok && name_ok {
        Ok(name)
    } else {
        Err(TinybirdError::query_refused(format!("[Error] {SUPPORTED}")))
    }
}

/// The SQL run for a read with an optional scope filter, as Tinybird builds it: the filter text
/// goes into ClickHouse unchanged.
pub(crate) fn filtered_read(table: &str, filter: Option<&str>) -> String {
    match filter.map(str::trim).filter(|filter| !filter.is_empty()) {
        Some(filter) => format!("SELECT * FROM (SELECT * FROM `{table}` WHERE {filter})"),
        None => format!("SELECT * FROM `{table}`"),
    }
}

/// Answers `GET /v0/sql` for an authenticated caller.
pub(crate) async fn run_query(
    state: &TinybirdState,
    access: &Access,
    query: &[(String, String)],
    started: Instant,
) -> Result<Response, TinybirdError> {
    let q = query.iter().find(|(name, _)| name == "q").map(|(_, value)| value.as_str());
    let Some(q) = q.filter(|q| !q.trim().is_empty()) else {
        return Err(TinybirdError::query_refused("[Error] The q parameter (the SQL query) is required"));
    };
    let resource = datasource_in_query(q)?;
    let source = state.find_datasource(resource);
    let known = source.as_ref().map(|source| (source.name.as_str(), source.id.as_deref()));
    let (scope, rate_headers) = state.authorize(access, DATASOURCES_READ, resource, known)?;
    let filter = scope.and_then(|scope| scope.filter.clone());
    let source = source
        .ok_or_else(|| TinybirdError::query_refused(format!("[Error] Resource '{resource}' not found")))?;
    let sql = filtered_read(&source.name, filter.as_deref());
    let rows = state.query(&sql).await.map_err(|error| error.with_headers(rate_headers.clone()))?;
    let body = json!({
        "meta": rows.meta,
        "rows": rows.rows.len(),
        "data": rows.rows,
        "statistics": {
            "elapsed": started.elapsed().as_secs_f64(),
            "rows_read": rows.statistics.get("rows_read").cloned().unwrap_or(json!(0)),
            "bytes_read": rows.statistics.get("bytes_read").cloned().unwrap_or(json!(0)),
        },
    });
    Ok(super::routes::with_headers(Json(body).into_response(), rate_headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_only_select_star_from_a_data_source() {
        for q in [
            "SELECT * FROM tenant_events",
            "select *\n from tenant_events  format json",
            "SELECT * FROM t1 FORMAT JSON",
        ] {
            assert!(datasource_in_query(q).is_ok(), "{q}");
        }
        for q in [
            "",
            "SELECT org FROM tenant_events",
            "SELECT * FROM tenant_events WHERE 1=1",
            "SELECT * FROM tenant_events FORMAT CSV",
            "SELECT * FROM tenant_events;",
            "SELECT * FROM `tenant_events`",
            "SELECT * FROM numbers(10)",
            "SELECT * FROM a.b",
        ] {
            let error = datasource_in_query(q).unwrap_err();
            assert_eq!(error.status(), 400, "{q}");
            assert!(error.message().contains("SELECT * FROM <data source>"), "{q}");
        }
    }

    #[test]
    fn pastes_the_filter_verbatim_and_reads_everything_without_one() {
        assert_eq!(
            filtered_read("t", Some("(x) AND org = 'acme'")),
            "SELECT * FROM (SELECT * FROM `t` WHERE (x) AND org = 'acme')"
        );
        assert_eq!(filtered_read("t", None), "SELECT * FROM `t`");
        assert_eq!(filtered_read("t", Some("  ")), "SELECT * FROM `t`");
    }
}
