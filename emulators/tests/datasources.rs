//! Data sources in real ClickHouse (chdb) read through the Query API, `/v0/sql`, exactly as
//! Tinybird applies a `DATASOURCES:READ` scope: the JWT's filter goes into ClickHouse verbatim.
//!
//! These tests need `CHDB_PYTHON` (a Python with chdb 4.4.0; `hack/with-cluster.sh` exports it,
//! `hack/install-deps.sh --print-env` prints it) and fail, never skip, without it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Answer, assert_error, client, get, get_with_bearer, sign};
use serde_json::{Value, json};
use tenant_access_emulators::{
    Clock, Column, DataSourceDefinition, TinybirdConfig, TinybirdEmulator, chdb_python_from_env,
};

const NO_ACCESS: &str = "The token you have provided doesn't have access to this resource";

fn config() -> TinybirdConfig {
    let chdb_python = chdb_python_from_env().unwrap_or_else(|error| panic!("{error}"));
    TinybirdConfig { chdb_python: Some(chdb_python), clock: Clock::frozen_now(), ..TinybirdConfig::default() }
}

async fn start() -> TinybirdEmulator {
    TinybirdEmulator::start(config()).await.unwrap()
}

/// A JWT whose only scope is `scope` (type, resource and optional filter).
fn token(tinybird: &TinybirdEmulator, scope: &Value) -> String {
    let exp = tinybird.clock().now_secs() + 3600;
    let claims = json!({"workspace_id": tinybird.workspace_id(), "name": "tenant_acme", "exp": exp, "scopes": [scope]});
    sign(&claims, &tinybird.admin_token())
}

fn read_scope(filter: &str) -> Value {
    json!({"type": "DATASOURCES:READ", "resource": "tenant_events", "filter": filter})
}

async fn sql(tinybird: &TinybirdEmulator, q: &str, token: &str) -> Answer {
    let request =
        client().get(format!("{}/v0/sql", tinybird.base_url())).query(&[("q", q)]).bearer_auth(token);
    Answer::from(request.send().await.unwrap()).await
}

#[tokio::test]
async fn a_jwt_filter_restricts_the_rows_clickhouse_returns() {
    let tinybird = start().await;
    let acme = token(&tinybird, &read_scope("org = 'acme'"));
    let answer = sql(&tinybird, "SELECT * FROM tenant_events FORMAT JSON", &acme).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.column("org"), ["acme", "acme", "acme"]);
    assert_eq!(answer.body["rows"], json!(3));
    assert_eq!(
        answer.body["meta"],
        json!([{"name": "org", "type": "String"}, {"name": "user", "type": "String"},
               {"name": "event", "type": "String"}, {"name": "amount", "type": "UInt32"}])
    );
    assert_eq!(
        answer.body["data"][0],
        json!({"org": "acme", "user": "user_alice", "event": "login", "amount": 1})
    );
    let statistics = &answer.body["statistics"];
    assert!(
        statistics["elapsed"].is_f64()
            && statistics["rows_read"].is_u64()
            && statistics["bytes_read"].is_u64()
    );

    // Any ClickHouse expression works, as at Tinybird: the filter is SQL, not a parameter.
    let big = token(
        &tinybird,
        &read_scope("amount >= 100 AND org IN ('globex', 'initech') AND NOT event LIKE 'inv%'"),
    );
    let answer = sql(&tinybird, "select * from tenant_events", &big).await;
    assert_eq!(answer.column("org"), ["globex", "initech", "initech"], "{answer:?}");
}

#[tokio::test]
async fn the_filter_is_pasted_verbatim_so_a_heredoc_breaks_out_as_it_would_at_tinybird() {
    // The operator's job is to never sign this; the emulator must behave like Tinybird when it
    // is signed anyway, or the operator's isolation tests would prove nothing.
    let tinybird = start().await;
    let escape = token(&tinybird, &read_scope("(org = $$'$$) OR 1=1 OR ('$$' = '$$') AND org = 'acme'"));
    let answer = sql(&tinybird, "SELECT * FROM tenant_events", &escape).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["rows"], json!(7));
}

#[tokio::test]
async fn the_admin_token_reads_every_row() {
    let tinybird = start().await;
    let answer = sql(&tinybird, "SELECT * FROM tenant_events FORMAT JSON", &tinybird.admin_token()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.column("org"), ["acme", "acme", "acme", "globex", "globex", "initech", "initech"]);
}

#[tokio::test]
async fn a_token_without_a_read_scope_on_the_data_source_is_refused() {
    let tinybird = start().await;
    let refused = [
        json!({"type": "PIPES:READ", "resource": "tenant_events", "fixed_params": {"org": "acme"}}),
        json!({"type": "DATASOURCES:READ", "resource": "other_source", "filter": "1=1"}),
        json!({"type": "DATASOURCES:APPEND", "resource": "tenant_events"}),
    ];
    for scope in refused {
        let answer = sql(&tinybird, "SELECT * FROM tenant_events", &token(&tinybird, &scope)).await;
        assert_error(&answer, 403, NO_ACCESS);
        assert_eq!(answer.body["error"], json!(NO_ACCESS));
    }
    // Scopes name a data source by id as well as by name.
    let id = tinybird.datasources()[0].id.clone().unwrap();
    let by_id =
        token(&tinybird, &json!({"type": "DATASOURCES:READ", "resource": id, "filter": "org = 'globex'"}));
    assert_eq!(
        sql(&tinybird, "SELECT * FROM tenant_events", &by_id).await.column("org"),
        ["globex", "globex"]
    );
    // Authentication is the pipes' one: no token, a bad token.
    assert_error(
        &get(&format!("{}/v0/sql?q=SELECT+*+FROM+tenant_events", tinybird.base_url())).await,
        403,
        "invalid authentication token",
    );
    assert_error(
        &sql(&tinybird, "SELECT * FROM tenant_events", "garbage").await,
        403,
        "invalid authentication token",
    );
    assert_eq!(tinybird.request_log().count_matching("GET", "/v0/sql"), 6);
    assert_eq!(tinybird.request_log().count_status(403), 5);
}

#[tokio::test]
async fn a_clickhouse_error_is_a_400_with_clickhouses_message() {
    let tinybird = start().await;
    for (filter, fragment) in [
        ("no_such_column = 1", "no_such_column"),
        ("org = 'acme') OR (1=1", "Syntax error"),
        ("1 = (SELECT count() FROM url('http://127.0.0.1:1/x', CSV, 'a String'))", "Connection refused"),
    ] {
        let answer =
            sql(&tinybird, "SELECT * FROM tenant_events", &token(&tinybird, &read_scope(filter))).await;
        assert_error(&answer, 400, fragment);
        assert!(answer.body["error"].as_str().unwrap().starts_with("[Error] "), "{answer:?}");
    }
    // The worker survives errors.
    let acme = token(&tinybird, &read_scope("org = 'acme'"));
    assert_eq!(sql(&tinybird, "SELECT * FROM tenant_events", &acme).await.body["rows"], json!(3));
}

#[tokio::test]
async fn only_select_star_from_a_data_source_is_run() {
    let tinybird = start().await;
    let admin = tinybird.admin_token();
    for q in [
        "SELECT org FROM tenant_events",
        "SELECT * FROM tenant_events WHERE org = 'globex'",
        "SELECT * FROM tenant_events FORMAT CSV",
        "SELECT * FROM numbers(3)",
        "DROP TABLE tenant_events",
    ] {
        assert_error(&sql(&tinybird, q, &admin).await, 400, "runs only `SELECT * FROM <data source>`");
    }
    let missing =
        client().get(format!("{}/v0/sql", tinybird.base_url())).bearer_auth(&admin).send().await.unwrap();
    assert_error(&Answer::from(missing).await, 400, "q parameter");
    assert_error(&sql(&tinybird, "SELECT * FROM nowhere", &admin).await, 400, "Resource 'nowhere' not found");
    // The table is untouched.
    assert_eq!(sql(&tinybird, "SELECT * FROM tenant_events", &admin).await.body["rows"], json!(7));
}

#[tokio::test]
async fn data_sources_are_added_replaced_and_removed_at_run_time() {
    let tinybird = start().await;
    let admin = tinybird.admin_token();
    let invoices = DataSourceDefinition::new(
        "invoices",
        vec![Column::new("org", "LowCardinality(String)"), Column::new("total", "Decimal(10, 2)")],
    )
    .with_row(json!({"org": "acme", "total": 12.5}))
    .with_row(json!({"org": "globex"}));
    let created = tinybird.upsert_datasource(invoices).await.unwrap();
    let answer = sql(&tinybird, "SELECT * FROM invoices", &admin).await;
    assert_eq!(answer.body["rows"], json!(2), "{answer:?}");
    assert_eq!(answer.body["meta"][1], json!({"name": "total", "type": "Decimal(10, 2)"}));

    // Through the control API: replacing keeps the id; ClickHouse refuses an unknown type.
    let url = format!("{}/_emulator/datasources", tinybird.base_url());
    let replaced = client()
        .put(&url)
        .json(&json!({"name": "invoices", "columns": [{"name": "org", "type": "String"}], "rows": [{"org": "initech"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), 200);
    assert_eq!(replaced.json::<Value>().await.unwrap()["id"], json!(created.id));
    assert_eq!(sql(&tinybird, "SELECT * FROM invoices", &admin).await.column("org"), ["initech"]);
    let refused = client()
        .put(&url)
        .json(&json!({"name": "broken", "columns": [{"name": "a", "type": "NoSuchType"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("NoSuchType"));
    assert!(tinybird.datasources().iter().all(|source| source.name != "broken"));

    assert_eq!(client().delete(format!("{url}/invoices")).send().await.unwrap().status(), 204);
    assert_error(
        &sql(&tinybird, "SELECT * FROM invoices", &admin).await,
        400,
        "Resource 'invoices' not found",
    );
    assert_eq!(client().delete(format!("{url}/invoices")).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn a_query_past_the_timeout_is_a_408_and_the_next_one_gets_a_fresh_worker() {
    let tinybird = TinybirdEmulator::start(TinybirdConfig {
        clickhouse_timeout: Duration::from_millis(500),
        ..config()
    })
    .await
    .unwrap();
    let slow = token(&tinybird, &read_scope("sleep(2) = 0"));
    assert_error(&sql(&tinybird, "SELECT * FROM tenant_events", &slow).await, 408, "Timeout exceeded");
    // The replacement worker has every data source loaded again.
    let acme = token(&tinybird, &read_scope("org = 'acme'"));
    assert_eq!(
        sql(&tinybird, "SELECT * FROM tenant_events", &acme).await.column("org"),
        ["acme", "acme", "acme"]
    );
}

#[tokio::test]
async fn without_chdb_the_data_sources_say_how_to_get_it() {
    let tinybird = TinybirdEmulator::start(TinybirdConfig::default()).await.unwrap();
    let answer = sql(&tinybird, "SELECT * FROM tenant_events", &tinybird.admin_token()).await;
    assert_error(&answer, 500, "--chdb-python");
    // A bad interpreter fails the start, naming it.
    let broken =
        TinybirdConfig { chdb_python: Some("/nonexistent/python".into()), ..TinybirdConfig::default() };
    let error = TinybirdEmulator::start(broken).await.unwrap_err().to_string();
    assert!(error.contains("/nonexistent/python"), "{error}");
}

#[tokio::test]
async fn rate_limits_apply_per_data_source_and_token_name() {
    let tinybird = start().await;
    let exp = tinybird.clock().now_secs() + 3600;
    let claims = json!({"workspace_id": tinybird.workspace_id(), "name": "tenant_acme", "exp": exp,
                        "scopes": [read_scope("org = 'acme'")], "limits": {"rps": 1}});
    let limited = sign(&claims, &tinybird.admin_token());
    let first = sql(&tinybird, "SELECT * FROM tenant_events", &limited).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ratelimit-limit"), Some("1"));
    let second = sql(&tinybird, "SELECT * FROM tenant_events", &limited).await;
    assert_eq!(second.status, 429);
    assert!(second.header("retry-after").is_some());
    // The frozen clock moves past the window instead of the test sleeping.
    tinybird.clock().advance(Duration::from_secs(1));
    assert_eq!(
        get_with_bearer(
            &format!("{}/v0/sql?q=SELECT%20*%20FROM%20tenant_events", tinybird.base_url()),
            &limited
        )
        .await
        .status,
        200
    );
}
