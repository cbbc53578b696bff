//! Pipes defined by nodes of Tinybird template SQL, rendered with the request's parameters (a
//! JWT's `fixed_params` winning) and run by real ClickHouse (chdb), and their descriptions.
//!
//! These tests need `CHDB_PYTHON` (a Python with chdb 4.4.0; `hack/with-cluster.sh` exports it,
//! `hack/install-deps.sh --print-env` prints it) and fail, never skip, without it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Answer, assert_error, client, get_with_bearer, pipe_claims, sign};
use serde_json::{Value, json};
use tenant_access_emulators::{
    Clock, PipeDefinition, PipeNode, TinybirdConfig, TinybirdEmulator, chdb_python_from_env,
};

const REQUIRED_ORG: &str = "Template Syntax Error: Required parameter is not defined. Check the parameters org. \
                            Please provide a value or set a default value in the pipe code.";

fn config() -> TinybirdConfig {
    let chdb_python = chdb_python_from_env().unwrap_or_else(|error| panic!("{error}"));
    TinybirdConfig { chdb_python: Some(chdb_python), clock: Clock::frozen_now(), ..TinybirdConfig::default() }
}

async fn start() -> TinybirdEmulator {
    TinybirdEmulator::start(config()).await.unwrap()
}

/// A tenant's JWT reading `pipe` with `fixed_params`.
fn token(tinybird: &TinybirdEmulator, pipe: &str, fixed_params: &Value) -> String {
    let exp = tinybird.clock().now_secs() + 3600;
    sign(&pipe_claims(tinybird.workspace_id(), "tenant", exp, pipe, fixed_params), &tinybird.admin_token())
}

async fn query(tinybird: &TinybirdEmulator, pipe_and_query: &str, token: &str) -> Answer {
    get_with_bearer(&format!("{}/v0/pipes/{pipe_and_query}", tinybird.base_url()), token).await
}

async fn describe(tinybird: &TinybirdEmulator, pipe: &str) -> Answer {
    get_with_bearer(&format!("{}/v0/pipes/{pipe}", tinybird.base_url()), &tinybird.admin_token()).await
}

#[tokio::test]
async fn a_defined_guard_fails_open_on_real_clickhouse() {
    let tinybird = start().await;
    let acme = token(&tinybird, "org_events", &json!({"org": "acme"}));
    let answer = query(&tinybird, "org_events.json", &acme).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.column("org"), ["acme", "acme", "acme"]);
    assert_eq!(
        answer.body["meta"],
        json!([{"name": "org", "type": "String"}, {"name": "user", "type": "String"},
               {"name": "event", "type": "String"}, {"name": "amount", "type": "UInt32"}])
    );
    assert_eq!(
        answer.body["data"][0],
        json!({"org": "acme", "user": "user_alice", "event": "login", "amount": 1})
    );
    assert_eq!(answer.body["rows"], json!(3));
    let statistics = &answer.body["statistics"];
    assert!(
        statistics["elapsed"].is_f64()
            && statistics["rows_read"].is_u64()
            && statistics["bytes_read"].is_u64()
    );

    // Without `org` (no fixed param, or a null one), the guard drops the filter: every org's rows.
    let every_org = ["acme", "acme", "acme", "globex", "globex", "initech", "initech"];
    for fixed_params in [json!({}), json!({"org": null})] {
        let unpinned = token(&tinybird, "org_events", &fixed_params);
        assert_eq!(query(&tinybird, "org_events.json", &unpinned).await.column("org"), every_org);
    }
    let admin = tinybird.admin_token();
    assert_eq!(query(&tinybird, "org_events.json", &admin).await.column("org"), every_org);
    assert_eq!(
        query(&tinybird, "org_events.json?org=globex&event=invite", &admin).await.column("user"),
        ["user_alice"]
    );
}

#[tokio::test]
async fn a_token_fixed_param_beats_the_request_param() {
    let tinybird = start().await;
    let acme = token(&tinybird, "org_events", &json!({"org": "acme"}));
    let answer = query(&tinybird, "org_events.json?org=globex", &acme).await;
    assert_eq!(answer.column("org"), ["acme", "acme", "acme"], "{answer:?}");
    // Values are quoted, never pasted: an injection attempt is just an org that matches nothing.
    let admin = tinybird.admin_token();
    let injected = query(&tinybird, "org_events.json?org=x'%20OR%201=1%20--", &admin).await;
    assert_eq!((injected.status, injected.body["rows"].clone()), (200, json!(0)), "{injected:?}");
}

#[tokio::test]
async fn a_required_param_is_a_400_and_typed_params_are_checked() {
    let tinybird = start().await;
    let admin = tinybird.admin_token();
    assert_error(&query(&tinybird, "org_events_strict.json", &admin).await, 400, REQUIRED_ORG);
    let unpinned = token(&tinybird, "org_events_strict", &json!({"org": null}));
    assert_error(&query(&tinybird, "org_events_strict.json?org=acme", &unpinned).await, 400, REQUIRED_ORG);

    let globex = token(&tinybird, "org_events_strict", &json!({"org": "globex"}));
    let answer = query(&tinybird, "org_events_strict.json?min_amount=200&limit=5", &globex).await;
    assert_eq!(answer.column("user"), ["user_alice"], "{answer:?}");
    assert_eq!(answer.body["rows_before_limit_at_least"], json!(1));
    assert_error(
        &query(&tinybird, "org_events_strict.json?limit=ten", &globex).await,
        400,
        "Template Syntax Error: Error validating 'ten' to type Int32",
    );
    // Every answer of a pipe query is billed, refusals included; nothing else is.
    assert_eq!((tinybird.billed_queries(), tinybird.pipe_metadata_calls()), (4, 0));
}

#[tokio::test]
async fn an_upstream_node_reads_the_param_for_the_endpoint() {
    let tinybird = start().await;
    let initech = token(&tinybird, "org_event_totals", &json!({"org": "initech"}));
    let answer = query(&tinybird, "org_event_totals.json?org=acme", &initech).await;
    assert_eq!(
        answer.body["data"],
        json!([{"org": "initech", "event": "export", "events": 1, "total": 7000},
               {"org": "initech", "event": "login", "events": 1, "total": 300}]),
        "{answer:?}"
    );
    assert_error(
        &query(&tinybird, "org_event_totals.json", &tinybird.admin_token()).await,
        400,
        REQUIRED_ORG,
    );
    // The pipe that never reads org answers every org's totals, whatever the token pins.
    let pinned = token(&tinybird, "event_counts", &json!({"org": "acme"}));
    let counts = query(&tinybird, "event_counts.json", &pinned).await;
    assert_eq!(counts.body["data"][3], json!({"event": "login", "events": 3, "total": 401}), "{counts:?}");
}

#[tokio::test]
async fn the_description_is_tinybirds_pipe_api_answer() {
    let tinybird = start().await;
    let answer = describe(&tinybird, "org_event_totals").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let body = &answer.body;
    let nodes = body["nodes"].as_array().unwrap();
    assert_eq!(body["name"], "org_event_totals");
    assert_eq!(body["type"], "endpoint");
    assert!(body["id"].as_str().unwrap().starts_with("t_"));
    assert_eq!(body["endpoint"], nodes[1]["id"]);
    assert_eq!(
        nodes[0],
        json!({
            "id": nodes[0]["id"],
            "name": "org_rows",
            "sql": "%\nSELECT org, event, amount\nFROM tenant_events\nWHERE org = {{String(org, required=True)}}",
            "description": null,
            "materialized": null,
            "node_type": "standard",
            "dependencies": ["tenant_events"],
            "params": [{"name": "org", "type": "String", "default": null, "required": true}],
        })
    );
    assert_eq!(
        (nodes[1]["name"].as_str(), nodes[1]["node_type"].as_str()),
        (Some("totals"), Some("endpoint"))
    );
    assert_eq!(nodes[1]["dependencies"], json!(["org_rows"]));
    assert_eq!(nodes[1]["params"], json!([]));
    assert_ne!(nodes[0]["id"], nodes[1]["id"]);

    let guarded = describe(&tinybird, "org_events").await;
    assert_eq!(
        guarded.body["nodes"][0]["params"][0],
        json!({"name": "org", "type": "String", "default": null})
    );
    // A pipe defined by rows is one endpoint node whose SQL says how it filters.
    let rows = describe(&tinybird, "top_pages").await;
    let node = &rows.body["nodes"][0];
    assert!(
        node["sql"].as_str().unwrap().contains("{% if defined(org) %} AND org = {{String(org)}} {% end %}")
    );
    assert_eq!(node["dependencies"], json!(["top_pages_rows"]));
    assert_eq!(rows.body["endpoint"], node["id"]);
    // Descriptions are free: counted apart from billed queries.
    assert_eq!((tinybird.pipe_metadata_calls(), tinybird.billed_queries()), (3, 0));
    let counters = common::get(&format!("{}/_emulator/counters", tinybird.base_url())).await;
    assert_eq!(counters.body, json!({"billed_queries": 0, "pipe_metadata_calls": 3}));
    assert_eq!(tinybird.describe_pipe("org_events").unwrap(), guarded.body);
}

#[tokio::test]
async fn editing_a_node_changes_the_answer_and_the_description() {
    let tinybird = start().await;
    let acme = token(&tinybird, "org_events_strict", &json!({"org": "acme"}));
    assert_eq!(query(&tinybird, "org_events_strict.json", &acme).await.body["rows"], json!(3));

    // The pipe's author drops the filter: the same token now reads every org.
    let edited = tinybird
        .set_node_sql(
            "org_events_strict",
            "org_events_strict_endpoint",
            "SELECT org, user FROM tenant_events ORDER BY org",
        )
        .unwrap();
    assert_eq!(edited.nodes[0].sql, "SELECT org, user FROM tenant_events ORDER BY org");
    assert_eq!(query(&tinybird, "org_events_strict.json", &acme).await.body["rows"], json!(7));
    let node = &describe(&tinybird, "org_events_strict").await.body["nodes"][0];
    assert_eq!(node["sql"], "SELECT org, user FROM tenant_events ORDER BY org");
    assert_eq!(node["params"], json!([]));

    // Through the control API, a guard that fails open.
    let url =
        format!("{}/_emulator/pipes/org_events_strict/nodes/org_events_strict_endpoint", tinybird.base_url());
    let guarded =
        "%\nSELECT org FROM tenant_events {% if defined(org) %} WHERE org = {{String(org)}} {% end %}";
    let response = client().put(&url).json(&json!({"sql": guarded})).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(query(&tinybird, "org_events_strict.json", &acme).await.body["rows"], json!(3));
    let unpinned = token(&tinybird, "org_events_strict", &json!({}));
    assert_eq!(query(&tinybird, "org_events_strict.json", &unpinned).await.body["rows"], json!(7));
    assert_eq!(describe(&tinybird, "org_events_strict").await.body["nodes"][0]["sql"], guarded);

    // A template that does not parse is refused and changes nothing; unknown names are 404.
    let broken =
        client().put(&url).json(&json!({"sql": "% SELECT {% if defined(org) %}"})).send().await.unwrap();
    assert_eq!(broken.status(), 400);
    assert!(broken.text().await.unwrap().contains("Missing {% end %} block for if at line 1"));
    assert_eq!(describe(&tinybird, "org_events_strict").await.body["nodes"][0]["sql"], guarded);
    let missing = client().put(format!("{url}_nope")).json(&json!({"sql": "SELECT 1"})).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(tinybird.set_node_sql("top_pages", "top_pages_endpoint", "SELECT 1").is_err());
}

#[tokio::test]
async fn pipes_are_added_by_nodes_and_answer_every_format() {
    let tinybird = start().await;
    let admin = tinybird.admin_token();
    let pipe = json!({"name": "big_spenders", "description": "over a threshold", "nodes": [
        {"name": "spend", "sql": "%\nSELECT user, sum(amount) AS total FROM tenant_events WHERE {{sql_and(org=org, amount__gte=UInt32(min, 0))}} GROUP BY user"},
        {"name": "unused", "sql": "SELECT 1"},
        {"name": "ranked", "sql": "SELECT user, total FROM spend ORDER BY total DESC"}
    ], "endpoint": "ranked"});
    let added =
        client().put(format!("{}/_emulator/pipes", tinybird.base_url())).json(&pipe).send().await.unwrap();
    assert_eq!(added.status(), 200);
    let answer = query(&tinybird, "big_spenders.json?org=acme", &admin).await;
    assert_eq!(
        answer.body["data"],
        json!([{"user": "user_alice", "total": 43}, {"user": "user_bob", "total": 5}])
    );
    let csv = client()
        .get(format!("{}/v0/pipes/big_spenders.csv?min=100", tinybird.base_url()))
        .bearer_auth(&admin);
    assert_eq!(
        csv.send().await.unwrap().text().await.unwrap(),
        "user,total\nuser_dave,7300\nuser_alice,250\nuser_carol,100\n"
    );
    let ndjson = client()
        .get(format!("{}/v0/pipes/big_spenders.ndjson?org=globex", tinybird.base_url()))
        .bearer_auth(&admin);
    assert_eq!(
        ndjson.send().await.unwrap().text().await.unwrap(),
        "{\"user\":\"user_alice\",\"total\":250}\n{\"user\":\"user_carol\",\"total\":100}\n"
    );
    let description = describe(&tinybird, "big_spenders").await.body;
    assert_eq!(description["description"], "over a threshold");
    assert_eq!(description["endpoint"], description["nodes"][2]["id"]);
    assert_eq!(description["nodes"][1]["node_type"], "standard");
    // sql_and's keyword values are not listed as parameters (as at Tinybird); the typed ones are.
    assert_eq!(description["nodes"][0]["params"], json!([{"name": "min", "type": "UInt32", "default": 0}]));
}

#[tokio::test]
async fn clickhouse_and_template_failures_are_tinybirds_errors() {
    let tinybird = TinybirdEmulator::start(TinybirdConfig {
        clickhouse_timeout: Duration::from_millis(500),
        ..config()
    })
    .await
    .unwrap();
    let admin = tinybird.admin_token();
    let pipes = [
        ("unknown_column", "SELECT no_such_column FROM tenant_events"),
        ("slow", "SELECT sleep(2)"),
        (
            "forbidden",
            "%\n{% if not defined(org) %}{{ error('org is required', 403) }}{% end %}SELECT 1 AS one",
        ),
    ];
    for (name, sql) in pipes {
        tinybird.upsert_pipe(PipeDefinition::from_nodes(name, vec![PipeNode::new("n", sql)])).unwrap();
    }
    assert_error(&query(&tinybird, "unknown_column.json", &admin).await, 400, "[Error] ");
    assert_error(&query(&tinybird, "unknown_column.json", &admin).await, 400, "no_such_column");
    assert_error(&query(&tinybird, "slow.json", &admin).await, 408, "Timeout exceeded");
    assert_error(&query(&tinybird, "forbidden.json", &admin).await, 403, "org is required");
    assert_eq!(query(&tinybird, "forbidden.json?org=a", &admin).await.body["data"], json!([{"one": 1}]));
    // A template error in a node is refused when the pipe is created.
    let refused =
        tinybird.upsert_pipe(PipeDefinition::from_nodes("bad", vec![PipeNode::new("n", "% {{ x.y }}")]));
    assert!(refused.unwrap_err().to_string().contains("no attributes"));
}

#[tokio::test]
async fn without_clickhouse_node_pipes_say_how_to_get_it_and_rows_pipes_still_answer() {
    let tinybird = TinybirdEmulator::start(TinybirdConfig::default()).await.unwrap();
    let admin = tinybird.admin_token();
    assert_error(&query(&tinybird, "org_events.json", &admin).await, 500, "--chdb-python");
    assert_eq!(
        query(&tinybird, "top_pages.json?org=globex", &admin).await.column("org"),
        ["globex", "globex"]
    );
    assert_eq!(describe(&tinybird, "org_events").await.status, 200);
}
