//! The Tinybird emulator against external-apis.md sections 1 and 2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Answer, client, get, get_with_bearer, pipe_claims, sign, sign_with};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tenant_access_emulators::{
    AdminTokenParts, Clock, Column, Fault, PipeDefinition, TinybirdConfig, TinybirdEmulator,
};

const DOCS_PREFIX: &str = "https://www.tinybird.co/docs/";

async fn start() -> (TinybirdEmulator, i64) {
    let clock = Clock::frozen_now();
    let now = clock.now_secs();
    let tinybird =
        TinybirdEmulator::start(TinybirdConfig { clock, ..TinybirdConfig::default() }).await.unwrap();
    (tinybird, now)
}

fn pipe_url(tinybird: &TinybirdEmulator, pipe: &str) -> String {
    format!("{}/v0/pipes/{pipe}.json", tinybird.base_url())
}

fn acme_token(tinybird: &TinybirdEmulator, exp: i64) -> String {
    sign(
        &pipe_claims(tinybird.workspace_id(), "tenant_acme", exp, "top_pages", &json!({"org": "acme"})),
        &tinybird.admin_token(),
    )
}

fn assert_error(answer: &Answer, status: u16, message: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(answer.body["error"], json!(message), "{answer:?}");
    assert!(answer.body["documentation"].as_str().unwrap().starts_with(DOCS_PREFIX), "{answer:?}");
}

#[tokio::test]
async fn admin_token_is_shaped_like_tinybirds_and_names_the_workspace() {
    let (tinybird, _) = start().await;
    let token = tinybird.admin_token();
    let parts = AdminTokenParts::parse(&token).unwrap();
    assert_eq!(parts.workspace_id, tinybird.workspace_id());
    assert_eq!(parts.token_id, tinybird.admin_token_id());
    assert_eq!(parts.host, "eu_shared");
    let middle = token.split('.').nth(1).unwrap();
    let payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(middle).unwrap()).unwrap();
    assert_eq!(payload["u"], json!(tinybird.workspace_id()));
    assert_eq!(tinybird.workspace_id().len(), 36);
}

#[tokio::test]
async fn given_admin_token_is_used_and_checked_against_the_workspace_id() {
    let parts = AdminTokenParts {
        workspace_id: "3f6c1b1e-0000-0000-0000-000000000000".into(),
        token_id: "tok".into(),
        host: "us_east".into(),
    };
    let token = parts.mint();
    let tinybird = TinybirdEmulator::start(TinybirdConfig {
        admin_token: Some(token.clone()),
        ..TinybirdConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(tinybird.admin_token(), token);
    assert_eq!(tinybird.workspace_id(), parts.workspace_id);
    assert_eq!(tinybird.region(), "us_east");
    let mismatch = TinybirdEmulator::start(TinybirdConfig {
        admin_token: Some(token),
        workspace_id: Some("other".into()),
        ..TinybirdConfig::default()
    })
    .await;
    assert!(mismatch.is_err());
}

#[tokio::test]
async fn workspace_endpoint_requires_the_admin_token() {
    let (tinybird, now) = start().await;
    let url = format!("{}/v1/workspace", tinybird.base_url());
    let answer = get_with_bearer(&url, &tinybird.admin_token()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["id"], json!(tinybird.workspace_id()));
    assert_eq!(answer.body["name"], json!("emulated_workspace"));
    let jwt = get_with_bearer(&url, &acme_token(&tinybird, now + 60)).await;
    assert_error(&jwt, 403, "The token you have provided doesn't have access to this resource");
    let none = get(&url).await;
    assert_eq!(none.status, 403);
}

#[tokio::test]
async fn serves_pipe_rows_in_tinybirds_json_shape() {
    let (tinybird, now) = start().await;
    let answer = get_with_bearer(&pipe_url(&tinybird, "top_pages"), &acme_token(&tinybird, now + 60)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["meta"][0], json!({"name": "org", "type": "String"}));
    assert_eq!(answer.body["meta"][3], json!({"name": "hits", "type": "UInt64"}));
    assert_eq!(answer.body["rows"], json!(3));
    assert_eq!(answer.body["rows_before_limit_at_least"], json!(3));
    assert_eq!(answer.column("org"), vec!["acme"; 3]);
    let statistics = &answer.body["statistics"];
    assert!(statistics["elapsed"].is_f64(), "seconds, as a float, as Tinybird sends it: {statistics}");
    assert_eq!(statistics["rows_read"], json!(6));
    assert!(statistics["bytes_read"].as_u64().unwrap() > 0);
    // Not rate limited: no rate-limit headers.
    assert!(answer.header("x-ratelimit-limit").is_none());
}

#[tokio::test]
async fn fixed_params_beat_query_params() {
    let (tinybird, now) = start().await;
    let token = acme_token(&tinybird, now + 60);
    let url = format!("{}?org=globex", pipe_url(&tinybird, "top_pages"));
    let answer = get_with_bearer(&url, &token).await;
    assert_eq!(answer.column("org"), vec!["acme"; 3]);
    // Other query params still filter.
    let url = format!("{}?org=globex&user=user_bob", pipe_url(&tinybird, "top_pages"));
    let answer = get_with_bearer(&url, &token).await;
    assert_eq!(answer.column("user"), vec!["user_bob"]);
    assert_eq!(answer.column("org"), vec!["acme"]);
    // The admin token has no fixed params: the query param applies.
    let url = format!("{}?org=globex", pipe_url(&tinybird, "top_pages"));
    let answer = get_with_bearer(&url, &tinybird.admin_token()).await;
    assert_eq!(answer.column("org"), vec!["globex"; 2]);
}

#[tokio::test]
async fn null_fixed_param_fails_open_like_a_defined_check() {
    let (tinybird, now) = start().await;
    let claims = pipe_claims(tinybird.workspace_id(), "t", now + 60, "top_pages", &json!({"org": null}));
    let token = sign(&claims, &tinybird.admin_token());
    let answer = get_with_bearer(&pipe_url(&tinybird, "top_pages"), &token).await;
    assert_eq!(answer.body["rows"], json!(6));
}

#[tokio::test]
async fn accepts_the_token_in_the_query_string() {
    let (tinybird, now) = start().await;
    let url = format!("{}?token={}", pipe_url(&tinybird, "top_pages"), acme_token(&tinybird, now + 60));
    let answer = get(&url).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.column("org"), vec!["acme"; 3]);
    // The query string (and so the token) is never recorded.
    assert!(tinybird.request_log().records().iter().all(|record| !record.path.contains("token")));
}

#[tokio::test]
async fn missing_or_bad_tokens_are_403_never_401() {
    let (tinybird, _) = start().await;
    let url = pipe_url(&tinybird, "top_pages");
    let none = get(&url).await;
    assert_eq!(none.status, 403);
    assert!(none.body["error"].as_str().unwrap().starts_with("invalid authentication token"));
    assert!(none.body["documentation"].as_str().unwrap().starts_with(DOCS_PREFIX));
    for token in ["garbage", "a.b.c", "p.unknown.static"] {
        assert_error(&get_with_bearer(&url, token).await, 403, "invalid authentication token");
    }
    // `Authorization` must be exactly `Bearer <token>`.
    let lower = client()
        .get(&url)
        .header("Authorization", format!("bearer {}", tinybird.admin_token()))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status().as_u16(), 403);
    assert_eq!(tinybird.request_log().count_status(401), 0);
}

#[tokio::test]
async fn expired_token_is_refused_with_the_token_echoed_and_no_leeway() {
    let (tinybird, now) = start().await;
    let url = pipe_url(&tinybird, "top_pages");
    for exp in [now - 3600, now - 1, now] {
        let token = acme_token(&tinybird, exp);
        let answer = get_with_bearer(&url, &token).await;
        assert_error(
            &answer,
            403,
            &format!("invalid authentication token. Invalid token b'{token}': Signature has expired"),
        );
    }
    assert_eq!(get_with_bearer(&url, &acme_token(&tinybird, now + 1)).await.status, 200);
}

#[tokio::test]
async fn missing_exp_is_refused() {
    let (tinybird, _) = start().await;
    let claims = json!({"workspace_id": tinybird.workspace_id(), "name": "t",
                        "scopes": [{"type": "PIPES:READ", "resource": "top_pages"}]});
    let token = sign(&claims, &tinybird.admin_token());
    let answer = get_with_bearer(&pipe_url(&tinybird, "top_pages"), &token).await;
    assert_eq!(answer.status, 403);
    assert!(answer.body["error"].as_str().unwrap().contains(&token));
}

#[tokio::test]
async fn nbf_in_the_future_is_refused() {
    let (tinybird, now) = start().await;
    let url = pipe_url(&tinybird, "top_pages");
    let mut claims =
        pipe_claims(tinybird.workspace_id(), "t", now + 60, "top_pages", &json!({"org": "acme"}));
    claims["nbf"] = json!(now + 1);
    let token = sign(&claims, &tinybird.admin_token());
    assert_error(
        &get_with_bearer(&url, &token).await,
        403,
        &format!("invalid authentication token. Invalid token b'{token}': The token is not yet valid (nbf)"),
    );
    claims["nbf"] = json!(now);
    assert_eq!(get_with_bearer(&url, &sign(&claims, &tinybird.admin_token())).await.status, 200);
}

#[tokio::test]
async fn verifies_hs256_whatever_the_header_says() {
    let (tinybird, now) = start().await;
    let url = pipe_url(&tinybird, "top_pages");
    let claims = pipe_claims(tinybird.workspace_id(), "t", now + 60, "top_pages", &json!({"org": "acme"}));
    // Really signed HS512 with the right key: refused, Tinybird only checks an HS256 signature.
    let hs512 = sign_with(&claims, &tinybird.admin_token(), Algorithm::HS512);
    assert_error(
        &get_with_bearer(&url, &hs512).await,
        403,
        &format!("invalid authentication token. Invalid token b'{hs512}': Signature verification failed"),
    );
    // Header says `none` but the signature is HS256 with the admin token: accepted.
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let message = format!("{header}.{payload}");
    let key = jsonwebtoken::EncodingKey::from_secret(tinybird.admin_token().as_bytes());
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
    assert_eq!(get_with_bearer(&url, &format!("{message}.{signature}")).await.status, 200);
    // An unsigned `alg: none` token is refused.
    assert_eq!(get_with_bearer(&url, &format!("{message}.")).await.status, 403);
}

#[tokio::test]
async fn token_without_the_pipe_in_its_scopes_has_no_access() {
    let (tinybird, now) = start().await;
    let token = acme_token(&tinybird, now + 60);
    let answer = get_with_bearer(&pipe_url(&tinybird, "tenant_events"), &token).await;
    assert_error(&answer, 403, "The token you have provided doesn't have access to this resource");
    let claims = json!({"workspace_id": tinybird.workspace_id(), "name": "t", "exp": now + 60,
                        "scopes": [{"type": "DATASOURCES:READ", "resource": "top_pages"}]});
    let answer =
        get_with_bearer(&pipe_url(&tinybird, "top_pages"), &sign(&claims, &tinybird.admin_token())).await;
    assert_eq!(answer.status, 403);
}

#[tokio::test]
async fn scope_may_name_the_pipe_by_id() {
    let (tinybird, now) = start().await;
    let id = tinybird.pipes()[0].id.clone().unwrap();
    let claims = pipe_claims(tinybird.workspace_id(), "t", now + 60, &id, &json!({"org": "initech"}));
    let token = sign(&claims, &tinybird.admin_token());
    for pipe in ["top_pages", id.as_str()] {
        let answer = get_with_bearer(&pipe_url(&tinybird, pipe), &token).await;
        assert_eq!(answer.column("org"), vec!["initech"], "{pipe}");
    }
}

#[tokio::test]
async fn missing_pipe_is_404() {
    let (tinybird, now) = start().await;
    let admin = get_with_bearer(&pipe_url(&tinybird, "nope"), &tinybird.admin_token()).await;
    assert_error(&admin, 404, "The pipe 'nope' does not exist");
    let claims = pipe_claims(tinybird.workspace_id(), "t", now + 60, "nope", &json!({}));
    let jwt = get_with_bearer(&pipe_url(&tinybird, "nope"), &sign(&claims, &tinybird.admin_token())).await;
    assert_error(&jwt, 404, "The pipe 'nope' does not exist");
}

#[tokio::test]
async fn pipe_description_needs_the_admin_token() {
    let (tinybird, now) = start().await;
    let url = format!("{}/v0/pipes/top_pages", tinybird.base_url());
    let answer = get_with_bearer(&url, &tinybird.admin_token()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["name"], json!("top_pages"));
    assert!(answer.body["id"].as_str().unwrap().starts_with("t_"));
    let missing =
        get_with_bearer(&format!("{}/v0/pipes/nope", tinybird.base_url()), &tinybird.admin_token()).await;
    assert_error(&missing, 404, "The pipe 'nope' does not exist");
    let jwt = get_with_bearer(&url, &acme_token(&tinybird, now + 60)).await;
    assert_eq!(jwt.status, 403);
}

#[tokio::test]
async fn a_removed_pipe_is_described_as_missing_and_descriptions_are_counted_apart_from_billed_queries() {
    let (tinybird, now) = start().await;
    let admin = tinybird.admin_token();
    let description = format!("{}/v0/pipes/top_pages", tinybird.base_url());
    assert_eq!(get_with_bearer(&description, &admin).await.status, 200);
    assert_eq!(
        get_with_bearer(&pipe_url(&tinybird, "top_pages"), &acme_token(&tinybird, now + 60)).await.status,
        200
    );
    let removed =
        client().delete(format!("{}/_emulator/pipes/top_pages", tinybird.base_url())).send().await.unwrap();
    assert_eq!(removed.status().as_u16(), 204);
    assert_error(&get_with_bearer(&description, &admin).await, 404, "The pipe 'top_pages' does not exist");
    assert_eq!(get_with_bearer(&pipe_url(&tinybird, "top_pages"), &admin).await.status, 404);
    get_with_bearer(&format!("{}/v1/workspace", tinybird.base_url()), &admin).await;

    // Two descriptions (not billed), two pipe queries (billed, a 404 included), one workspace.
    assert_eq!((tinybird.pipe_metadata_calls(), tinybird.billed_queries()), (2, 2));
    let calls: Vec<Option<&str>> = tinybird.request_log().records().iter().map(|r| r.call).collect();
    assert_eq!(
        calls,
        [
            Some("pipe_metadata"),
            Some("pipe_query"),
            Some("pipe_metadata"),
            Some("pipe_query"),
            Some("workspace")
        ]
    );
    let over_http = get(&format!("{}/_emulator/requests", tinybird.base_url())).await;
    assert_eq!(
        over_http.body["counts_by_call"],
        json!({"pipe_metadata": 2, "pipe_query": 2, "workspace": 1})
    );
    assert_eq!(over_http.body["requests"][0]["call"], json!("pipe_metadata"));
    tinybird.request_log().clear();
    assert_eq!((tinybird.pipe_metadata_calls(), tinybird.billed_queries()), (0, 0));
}

#[tokio::test]
async fn serves_csv_and_ndjson() {
    let (tinybird, now) = start().await;
    let token = acme_token(&tinybird, now + 60);
    let csv = client()
        .get(format!("{}/v0/pipes/top_pages.csv?user=user_bob", tinybird.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv, "org,user,pathname,hits\nacme,user_bob,/,75\n");
    let ndjson = client()
        .get(format!("{}/v0/pipes/top_pages.ndjson", tinybird.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(ndjson.lines().count(), 3);
    let unsupported =
        get_with_bearer(&format!("{}/v0/pipes/top_pages.parquet", tinybird.base_url()), &token).await;
    assert_eq!(unsupported.status, 400);
}

#[tokio::test]
async fn rate_limits_per_pipe_and_token_name() {
    let (tinybird, now) = start().await;
    let limited = |name: &str, pipe: &str, rps: i64| {
        let mut claims =
            pipe_claims(tinybird.workspace_id(), name, now + 3600, pipe, &json!({"org": "acme"}));
        claims["limits"] = json!({"rps": rps});
        sign(&claims, &tinybird.admin_token())
    };
    let url = pipe_url(&tinybird, "top_pages");
    let token = limited("tenant_acme", "top_pages", 2);
    let first = get_with_bearer(&url, &token).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("1"));
    assert_eq!(first.header("x-ratelimit-reset"), Some("1"));
    let second = get_with_bearer(&url, &token).await;
    assert_eq!(second.header("x-ratelimit-remaining"), Some("0"));
    let third = get_with_bearer(&url, &token).await;
    assert_eq!(third.status, 429);
    assert_eq!(third.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(third.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(third.header("x-ratelimit-reset"), Some("1"));
    assert_eq!(third.header("retry-after"), Some("1"));
    assert!(third.body["documentation"].as_str().unwrap().starts_with(DOCS_PREFIX));
    // Another token with the same name shares the bucket; another name does not.
    let same_name = limited("tenant_acme", "top_pages", 2);
    assert_eq!(get_with_bearer(&url, &same_name).await.status, 429);
    let other_name = limited("tenant_globex", "top_pages", 2);
    assert_eq!(get_with_bearer(&url, &other_name).await.status, 200);
    // The next one-second window lets requests through again.
    tinybird.clock().advance(Duration::from_secs(1));
    assert_eq!(get_with_bearer(&url, &token).await.status, 200);
    // rps <= 0 means unlimited, and no headers.
    let unlimited = limited("tenant_free", "top_pages", 0);
    for _ in 0..5 {
        let answer = get_with_bearer(&url, &unlimited).await;
        assert_eq!(answer.status, 200);
        assert!(answer.header("x-ratelimit-limit").is_none());
    }
    assert_eq!(tinybird.request_log().count_status(429), 2);
}

#[tokio::test]
async fn rate_limit_bucket_is_the_pipe_as_written_in_the_url() {
    let (tinybird, now) = start().await;
    let id = tinybird.pipes()[0].id.clone().unwrap();
    let mut claims =
        pipe_claims(tinybird.workspace_id(), "n", now + 60, "top_pages", &json!({"org": "acme"}));
    claims["limits"] = json!({"rps": 1});
    let token = sign(&claims, &tinybird.admin_token());
    assert_eq!(get_with_bearer(&pipe_url(&tinybird, "top_pages"), &token).await.status, 200);
    assert_eq!(get_with_bearer(&pipe_url(&tinybird, "top_pages"), &token).await.status, 429);
    assert_eq!(get_with_bearer(&pipe_url(&tinybird, &id), &token).await.status, 200);
}

#[tokio::test]
async fn refreshing_the_admin_token_kills_every_old_jwt() {
    let (tinybird, now) = start().await;
    let old_admin = tinybird.admin_token();
    let old_jwt = acme_token(&tinybird, now + 60);
    let url = pipe_url(&tinybird, "top_pages");
    assert_eq!(get_with_bearer(&url, &old_jwt).await.status, 200);

    let refresh_url = format!("{}/v0/tokens/{}/refresh", tinybird.base_url(), tinybird.admin_token_id());
    let refreshed =
        Answer::from(client().post(&refresh_url).bearer_auth(&old_admin).send().await.unwrap()).await;
    assert_eq!(refreshed.status, 200);
    let new_admin = refreshed.body["token"].as_str().unwrap().to_owned();
    assert_ne!(new_admin, old_admin);
    assert_eq!(new_admin, tinybird.admin_token());
    assert_eq!(AdminTokenParts::parse(&new_admin).unwrap(), AdminTokenParts::parse(&old_admin).unwrap());

    assert_error(
        &get_with_bearer(&url, &old_jwt).await,
        403,
        &format!("invalid authentication token. Invalid token b'{old_jwt}': Signature verification failed"),
    );
    assert_error(&get_with_bearer(&url, &old_admin).await, 403, "invalid authentication token");
    assert_eq!(get_with_bearer(&url, &acme_token(&tinybird, now + 60)).await.status, 200);

    // The control endpoint shows the new token.
    let control = get(&format!("{}/_emulator/admin-token", tinybird.base_url())).await;
    assert_eq!(control.body["token"], json!(new_admin));
}

#[tokio::test]
async fn refresh_accepts_the_token_name_and_needs_the_admin_token() {
    let (tinybird, now) = start().await;
    let by_name = format!("{}/v0/tokens/admin%20token/refresh", tinybird.base_url());
    let jwt = Answer::from(
        client().post(&by_name).bearer_auth(acme_token(&tinybird, now + 60)).send().await.unwrap(),
    )
    .await;
    assert_eq!(jwt.status, 403);
    let before = tinybird.admin_token();
    let answer = Answer::from(client().post(&by_name).bearer_auth(&before).send().await.unwrap()).await;
    assert_eq!(answer.status, 200);
    assert_ne!(tinybird.admin_token(), before);
    let unknown = format!("{}/v0/tokens/nope/refresh", tinybird.base_url());
    let answer =
        Answer::from(client().post(&unknown).bearer_auth(tinybird.admin_token()).send().await.unwrap()).await;
    assert_eq!(answer.status, 404);
}

#[tokio::test]
async fn faults_are_switchable_over_http() {
    let (tinybird, now) = start().await;
    let token = acme_token(&tinybird, now + 60);
    let faults_url = format!("{}/_emulator/faults", tinybird.base_url());
    let added = client()
        .post(&faults_url)
        .json(&json!({"status": 503, "pipe": "top_pages", "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status().as_u16(), 201);
    let faulted = get_with_bearer(&pipe_url(&tinybird, "top_pages"), &token).await;
    assert_eq!(faulted.status, 503);
    assert!(faulted.body["error"].is_string());
    assert_eq!(get_with_bearer(&pipe_url(&tinybird, "top_pages"), &token).await.status, 200);

    client().post(&faults_url).json(&json!({"status": 408})).send().await.unwrap();
    assert_eq!(get_with_bearer(&pipe_url(&tinybird, "top_pages"), &token).await.status, 408);
    assert_eq!(get(&format!("{}/v1/workspace", tinybird.base_url())).await.status, 408);
    let cleared = client().delete(&faults_url).send().await.unwrap();
    assert_eq!(cleared.status().as_u16(), 204);
    assert_eq!(get_with_bearer(&pipe_url(&tinybird, "top_pages"), &token).await.status, 200);

    let refused = client().post(&faults_url).json(&json!({"status": 404})).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 400);
}

#[tokio::test]
async fn faults_only_hit_their_pipe() {
    let (tinybird, _) = start().await;
    tinybird.add_fault(Fault::status(500).for_pipe("tenant_events")).unwrap();
    let admin = tinybird.admin_token();
    assert_eq!(get_with_bearer(&pipe_url(&tinybird, "top_pages"), &admin).await.status, 200);
    assert_eq!(get_with_bearer(&pipe_url(&tinybird, "tenant_events"), &admin).await.status, 500);
    tinybird.clear_faults();
    assert_eq!(get_with_bearer(&pipe_url(&tinybird, "tenant_events"), &admin).await.status, 200);
}

#[tokio::test]
async fn latency_and_timeout_faults() {
    let (tinybird, _) = start().await;
    let admin = tinybird.admin_token();
    tinybird.add_fault(Fault::latency(Duration::from_millis(200)).times(1)).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(get_with_bearer(&pipe_url(&tinybird, "top_pages"), &admin).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(200));

    tinybird.add_fault(Fault::hang()).unwrap();
    let hung = reqwest::Client::new()
        .get(pipe_url(&tinybird, "top_pages"))
        .bearer_auth(&admin)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(hung.unwrap_err().is_timeout());
    // Shutting down releases the hung request instead of waiting for it.
    tokio::time::timeout(Duration::from_secs(10), tinybird.shutdown()).await.unwrap();
}

#[tokio::test]
async fn pipes_can_be_added_and_removed_at_run_time() {
    let (tinybird, _) = start().await;
    let admin = tinybird.admin_token();
    let pipe =
        PipeDefinition::new("invoices", vec![Column::new("org", "String"), Column::new("amount", "Float64")])
            .with_row(json!({"org": "acme", "amount": 10.5}))
            .with_required_param("org");
    let added =
        client().put(format!("{}/_emulator/pipes", tinybird.base_url())).json(&pipe).send().await.unwrap();
    assert_eq!(added.status().as_u16(), 200);
    let url = pipe_url(&tinybird, "invoices");
    let missing_param = get_with_bearer(&url, &admin).await;
    assert_eq!(missing_param.status, 400);
    let answer = get_with_bearer(&format!("{url}?org=acme"), &admin).await;
    assert_eq!(answer.body["data"], json!([{"org": "acme", "amount": 10.5}]));
    let removed =
        client().delete(format!("{}/_emulator/pipes/invoices", tinybird.base_url())).send().await.unwrap();
    assert_eq!(removed.status().as_u16(), 204);
    assert_eq!(get_with_bearer(&url, &admin).await.status, 404);
    assert!(tinybird.remove_pipe("tenant_events"));
    assert!(!tinybird.remove_pipe("tenant_events"));
}

#[tokio::test]
async fn counts_requests_per_status() {
    let (tinybird, now) = start().await;
    let token = acme_token(&tinybird, now + 60);
    get_with_bearer(&pipe_url(&tinybird, "top_pages"), &token).await;
    get_with_bearer(&pipe_url(&tinybird, "top_pages"), &token).await;
    get(&pipe_url(&tinybird, "top_pages")).await;
    get_with_bearer(&pipe_url(&tinybird, "nope"), &tinybird.admin_token()).await;
    let log = tinybird.request_log();
    assert_eq!(log.count_status(200), 2);
    assert_eq!(log.count_status(403), 1);
    assert_eq!(log.count_status(404), 1);
    assert_eq!(log.count_matching("GET", "/v0/pipes/top_pages"), 3);
    let over_http = get(&format!("{}/_emulator/requests", tinybird.base_url())).await;
    assert_eq!(over_http.body["total"], json!(4));
    assert_eq!(over_http.body["counts_by_status"]["200"], json!(2));
    assert_eq!(over_http.body["requests"][0]["path"], json!("/v0/pipes/top_pages.json"));
    client().delete(format!("{}/_emulator/requests", tinybird.base_url())).send().await.unwrap();
    assert_eq!(tinybird.request_log().total(), 0);
}

#[tokio::test]
async fn clock_control_endpoint_expires_tokens() {
    let (tinybird, now) = start().await;
    let token = acme_token(&tinybird, now + 30);
    assert_eq!(get_with_bearer(&pipe_url(&tinybird, "top_pages"), &token).await.status, 200);
    let moved = client()
        .post(format!("{}/_emulator/clock", tinybird.base_url()))
        .json(&json!({"advance_secs": 30}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(moved["now"], json!(now + 30));
    assert_eq!(get_with_bearer(&pipe_url(&tinybird, "top_pages"), &token).await.status, 403);
}

#[tokio::test]
async fn stops_on_shutdown_and_on_drop() {
    let (tinybird, _) = start().await;
    let url = pipe_url(&tinybird, "top_pages");
    tinybird.shutdown().await;
    assert!(reqwest::get(&url).await.is_err());

    let (tinybird, _) = start().await;
    let url = pipe_url(&tinybird, "top_pages");
    drop(tinybird);
    let mut refused = false;
    for _ in 0..100 {
        if reqwest::get(&url).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused);
}
