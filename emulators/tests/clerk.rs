//! The Clerk emulator against external-apis.md section 3.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Answer, client, get};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde_json::{Value, json};
use tenant_access_emulators::{ClerkConfig, ClerkEmulator, Clock, Fault, Identity, TestOrg};

async fn start() -> ClerkEmulator {
    ClerkEmulator::start(ClerkConfig { clock: Clock::frozen_now(), ..ClerkConfig::default() }).await.unwrap()
}

/// A small Backend API client for the tests.
struct Api<'a> {
    clerk: &'a ClerkEmulator,
    http: reqwest::Client,
}

impl<'a> Api<'a> {
    fn new(clerk: &'a ClerkEmulator) -> Self {
        Self { clerk, http: client() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.clerk.api_url())
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        Answer::from(request.bearer_auth(self.clerk.secret_key()).send().await.unwrap()).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(self.url(path))).await
    }

    async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    async fn patch(&self, path: &str, body: &Value) -> Answer {
        self.send(self.http.patch(self.url(path)).json(body)).await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.send(self.http.delete(self.url(path))).await
    }

    async fn create(&self, body: &Value) -> Answer {
        self.post("/jwt_templates", body).await
    }
}

fn template(name: &str) -> Value {
    json!({"name": name, "claims": {"org": "{{org.slug}}"}})
}

fn keyed_template(name: &str, key: &str) -> Value {
    json!({"name": name, "claims": {"org": "{{org.slug}}", "user": "{{user.id}}"},
           "custom_signing_key": true, "signing_algorithm": "HS256", "signing_key": key})
}

fn assert_clerk_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    let error = &answer.body["errors"][0];
    assert_eq!(error["code"], json!(code), "{answer:?}");
    assert!(error["message"].is_string());
    assert!(error["long_message"].is_string());
    assert!(error["meta"].is_object());
    assert!(!answer.body["clerk_trace_id"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn requires_the_secret_key() {
    let clerk = start().await;
    assert!(clerk.secret_key().starts_with("sk_test_"));
    let url = format!("{}/jwt_templates", clerk.api_url());
    assert_clerk_error(&get(&url).await, 401, "authentication_invalid");
    let wrong = Answer::from(client().get(&url).bearer_auth("sk_test_wrong").send().await.unwrap()).await;
    assert_clerk_error(&wrong, 401, "authentication_invalid");
    let api = Api::new(&clerk);
    let listed = api.get("/jwt_templates").await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body, json!([]));
}

#[tokio::test]
async fn configured_secret_key_is_used() {
    let clerk = ClerkEmulator::start(ClerkConfig {
        secret_key: Some("sk_test_configured".into()),
        ..ClerkConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(clerk.secret_key(), "sk_test_configured");
}

#[tokio::test]
async fn creates_templates_with_defaults_and_clerks_answer_shape() {
    let clerk = start().await;
    let api = Api::new(&clerk);
    let created = api.create(&template("tinybird")).await;
    assert_eq!(created.status, 200);
    let body = &created.body;
    assert_eq!(body["object"], json!("jwt_template"));
    assert!(body["id"].as_str().unwrap().starts_with("jtmpl_"));
    assert_eq!(body["name"], json!("tinybird"));
    assert_eq!(body["claims"], json!({"org": "{{org.slug}}"}));
    assert_eq!(body["lifetime"], json!(60));
    assert_eq!(body["allowed_clock_skew"], json!(5));
    assert_eq!(body["custom_signing_key"], json!(false));
    assert_eq!(body["signing_algorithm"], json!("RS256"));
    assert_eq!(body["created_at"], json!(clerk.clock().now_millis()));
    assert_eq!(body["updated_at"], body["created_at"]);
    let mut keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "allowed_clock_skew",
            "claims",
            "created_at",
            "custom_signing_key",
            "id",
            "lifetime",
            "name",
            "object",
            "signing_algorithm",
            "updated_at"
        ]
    );
    let id = body["id"].as_str().unwrap();
    let fetched = api.get(&format!("/jwt_templates/{id}")).await;
    assert_eq!(&fetched.body, body);
}

#[tokio::test]
async fn signing_key_is_write_only() {
    let clerk = start().await;
    let api = Api::new(&clerk);
    let key = "p.secret-admin-token.sig";
    let created = api.create(&keyed_template("tinybird", key)).await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["custom_signing_key"], json!(true));
    assert_eq!(created.body["signing_algorithm"], json!("HS256"));
    let mut answers = vec![created];
    answers.push(api.get(&format!("/jwt_templates/{id}")).await);
    answers.push(api.get("/jwt_templates").await);
    answers.push(api.get("/jwt_templates?paginated=true").await);
    answers.push(
        api.patch(&format!("/jwt_templates/{id}"), &json!({"name": "tinybird", "claims": {"a": 1}})).await,
    );
    for answer in &answers {
        assert_eq!(answer.status, 200);
        let text = answer.body.to_string();
        assert!(!text.contains(key), "{text}");
        assert!(!text.contains("\"signing_key\""), "{text}");
    }
    // The test-only doors read it; a PATCH without a key keeps it, one with a key replaces it.
    assert_eq!(clerk.signing_key(&id).as_deref(), Some(key));
    let door = get(&format!("{}/_emulator/jwt_templates/{id}/signing-key", clerk.base_url())).await;
    assert_eq!(door.body["signing_key"], json!(key));
    api.patch(&format!("/jwt_templates/{id}"), &keyed_template("tinybird", "new-key")).await;
    assert_eq!(clerk.signing_key(&id).as_deref(), Some("new-key"));
    let missing = get(&format!("{}/_emulator/jwt_templates/jtmpl_nope/signing-key", clerk.base_url())).await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn reserved_claims_are_refused() {
    let clerk = start().await;
    let api = Api::new(&clerk);
    for claim in ["azp", "exp", "iat", "iss", "jti", "nbf", "sub"] {
        let answer = api.create(&json!({"name": format!("t_{claim}"), "claims": {claim: "x"}})).await;
        assert_clerk_error(&answer, 400, "jwt_template_reserved_claim");
    }
    let id = api.create(&template("ok")).await.body["id"].as_str().unwrap().to_owned();
    let patched =
        api.patch(&format!("/jwt_templates/{id}"), &json!({"name": "ok", "claims": {"exp": 1}})).await;
    assert_clerk_error(&patched, 400, "jwt_template_reserved_claim");
    assert!(clerk.templates().iter().all(|template| template.claims.get("exp").is_none()));
}

#[tokio::test]
async fn patch_needs_name_and_claims() {
    let clerk = start().await;
    let api = Api::new(&clerk);
    let id = api.create(&template("t")).await.body["id"].as_str().unwrap().to_owned();
    let path = format!("/jwt_templates/{id}");
    let no_name = api.patch(&path, &json!({"claims": {"a": 1}})).await;
    assert_clerk_error(&no_name, 422, "form_param_missing");
    assert_eq!(no_name.body["errors"][0]["meta"]["param_name"], json!("name"));
    let no_claims = api.patch(&path, &json!({"name": "t", "lifetime": 120})).await;
    assert_clerk_error(&no_claims, 422, "form_param_missing");
    assert_eq!(no_claims.body["errors"][0]["meta"]["param_name"], json!("claims"));
    let whole = api.patch(&path, &json!({"name": "t2", "claims": {"a": 1}, "lifetime": 120})).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body["name"], json!("t2"));
    assert_eq!(whole.body["lifetime"], json!(120));
    assert_eq!(whole.body["allowed_clock_skew"], json!(5));
}

#[tokio::test]
async fn duplicate_names_are_refused() {
    let clerk = start().await;
    let api = Api::new(&clerk);
    api.create(&template("a")).await;
    assert_clerk_error(&api.create(&template("a")).await, 422, "form_identifier_exists");
    let b = api.create(&template("b")).await.body["id"].as_str().unwrap().to_owned();
    let renamed = api.patch(&format!("/jwt_templates/{b}"), &template("a")).await;
    assert_clerk_error(&renamed, 422, "form_identifier_exists");
}

#[tokio::test]
async fn lifetime_and_clock_skew_must_be_in_range() {
    let clerk = start().await;
    let api = Api::new(&clerk);
    for (field, value) in
        [("lifetime", 29), ("lifetime", 315_360_001), ("allowed_clock_skew", 301), ("allowed_clock_skew", -1)]
    {
        let mut body = template(&format!("{field}_{value}"));
        body[field] = json!(value);
        let answer = api.create(&body).await;
        assert_clerk_error(&answer, 422, "form_param_value_invalid");
        assert_eq!(answer.body["errors"][0]["meta"]["param_name"], json!(field));
    }
    let mut edges = template("edges");
    edges["lifetime"] = json!(30);
    edges["allowed_clock_skew"] = json!(300);
    assert_eq!(api.create(&edges).await.status, 200);
    let mut longest = template("longest");
    longest["lifetime"] = json!(315_360_000);
    longest["allowed_clock_skew"] = json!(0);
    assert_eq!(api.create(&longest).await.status, 200);
}

#[tokio::test]
async fn unknown_templates_are_404() {
    let clerk = start().await;
    let api = Api::new(&clerk);
    assert_clerk_error(&api.get("/jwt_templates/jtmpl_nope").await, 404, "resource_not_found");
    assert_clerk_error(
        &api.patch("/jwt_templates/jtmpl_nope", &template("x")).await,
        404,
        "resource_not_found",
    );
    assert_clerk_error(&api.delete("/jwt_templates/jtmpl_nope").await, 404, "resource_not_found");
    assert_clerk_error(
        &api.post("/sessions/sess_1/tokens/nope", &json!({})).await,
        404,
        "resource_not_found",
    );
}

#[tokio::test]
async fn deletes_templates() {
    let clerk = start().await;
    let api = Api::new(&clerk);
    let id = api.create(&template("t")).await.body["id"].as_str().unwrap().to_owned();
    let deleted = api.delete(&format!("/jwt_templates/{id}")).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.body, json!({"object": "jwt_template", "id": id, "deleted": true}));
    assert_eq!(api.get(&format!("/jwt_templates/{id}")).await.status, 404);
}

#[tokio::test]
async fn lists_bare_or_paginated() {
    let clerk = start().await;
    let api = Api::new(&clerk);
    for name in ["a", "b", "c"] {
        api.create(&template(name)).await;
    }
    let bare = api.get("/jwt_templates").await;
    assert_eq!(bare.body.as_array().unwrap().len(), 3);
    let page = api.get("/jwt_templates?paginated=true&limit=2&offset=1").await;
    assert_eq!(page.body["total_count"], json!(3));
    let names: Vec<&str> =
        page.body["data"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["b", "c"]);
    let default_page = api.get("/jwt_templates?paginated=true").await;
    assert_eq!(default_page.body["data"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn default_budget_is_100_requests_per_10_seconds() {
    let clerk = start().await;
    let api = Api::new(&clerk);
    for _ in 0..100 {
        assert_eq!(api.get("/jwt_templates").await.status, 200);
    }
    let refused = api.get("/jwt_templates").await;
    assert_clerk_error(&refused, 429, "too_many_requests");
    assert_eq!(refused.header("retry-after"), Some("10"));
    clerk.clock().advance(Duration::from_secs(10));
    assert_eq!(api.get("/jwt_templates").await.status, 200);
}

#[tokio::test]
async fn budget_counts_only_authenticated_calls_and_is_configurable() {
    let clerk = start().await;
    let api = Api::new(&clerk);
    let set = client()
        .put(format!("{}/_emulator/request-budget", clerk.base_url()))
        .json(&json!({"requests": 2, "window_secs": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status().as_u16(), 200);
    for _ in 0..5 {
        assert_eq!(get(&format!("{}/jwt_templates", clerk.api_url())).await.status, 401);
    }
    assert_eq!(api.create(&template("a")).await.status, 200);
    assert_eq!(api.get("/jwt_templates").await.status, 200);
    clerk.clock().advance(Duration::from_secs(2));
    let refused = api.post("/sessions/sess_1/tokens/a", &json!({})).await;
    assert_clerk_error(&refused, 429, "too_many_requests");
    assert_eq!(refused.header("retry-after"), Some("3"));
    clerk.set_request_budget(0, Duration::from_secs(1));
    for _ in 0..3 {
        assert_eq!(api.get("/jwt_templates").await.status, 200);
    }
}

#[tokio::test]
async fn mints_tokens_with_clerks_claims_and_the_custom_key() {
    let clerk = start().await;
    let api = Api::new(&clerk);
    let mut body = keyed_template("tinybird", "the-key");
    body["lifetime"] = json!(300);
    body["allowed_clock_skew"] = json!(10);
    body["claims"]["nested"] =
        json!([{"meta": "{{user.public_metadata.plan}}", "slug": "{{org.slug || 'none'}}"}]);
    body["claims"]["unknown"] = json!("{{org.nope}}");
    api.create(&body).await;
    let minted = api.post("/sessions/sess_123/tokens/tinybird", &json!({})).await;
    assert_eq!(minted.status, 200);
    assert_eq!(minted.body["object"], json!("token"));
    let jwt = minted.body["jwt"].as_str().unwrap();
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let claims = decode::<Value>(jwt, &DecodingKey::from_secret(b"the-key"), &validation).unwrap().claims;
    let now = clerk.clock().now_secs();
    assert_eq!(claims["iat"], json!(now));
    assert_eq!(claims["exp"], json!(now + 300));
    assert_eq!(claims["nbf"], json!(now - 10));
    assert_eq!(claims["sub"], json!("user_alice"));
    assert_eq!(claims["iss"], json!(clerk.issuer()));
    assert_eq!(claims["azp"], json!("http://localhost:3000"));
    assert!(claims["jti"].is_string());
    assert_eq!(claims["org"], json!("acme"));
    assert_eq!(claims["user"], json!("user_alice"));
    assert_eq!(claims["nested"], json!([{"meta": "pro", "slug": "acme"}]));
    assert_eq!(claims["unknown"], Value::Null);
    assert!(decode::<Value>(jwt, &DecodingKey::from_secret(b"other"), &validation).is_err());
}

#[tokio::test]
async fn minting_follows_the_identity_switched_at_run_time() {
    let clerk = start().await;
    let api = Api::new(&clerk);
    api.create(&keyed_template("tinybird", "k")).await;
    let org_of = |answer: &Answer| {
        let jwt = answer.body["jwt"].as_str().unwrap();
        jsonwebtoken::dangerous::insecure_decode::<Value>(jwt).unwrap().claims["org"].clone()
    };
    let first = api.post("/sessions/sess_1/tokens/tinybird", &json!({})).await;
    assert_eq!(org_of(&first), json!("acme"));
    let switched = client()
        .put(format!("{}/_emulator/identity/org", clerk.base_url()))
        .json(&TestOrg::globex())
        .send()
        .await
        .unwrap();
    assert_eq!(switched.status().as_u16(), 200);
    assert_eq!(org_of(&api.post("/sessions/sess_1/tokens/tinybird", &json!({})).await), json!("globex"));
    clerk.set_org(None);
    assert_eq!(org_of(&api.post("/sessions/sess_1/tokens/tinybird", &json!({})).await), Value::Null);
    clerk.set_identity(Identity::default());
    let identity = get(&format!("{}/_emulator/identity", clerk.base_url())).await;
    assert_eq!(identity.body["org"]["slug"], json!("acme"));
}

#[tokio::test]
async fn refuses_to_mint_with_the_instance_key() {
    let clerk = start().await;
    let api = Api::new(&clerk);
    api.create(&template("plain")).await;
    let answer = api.post("/sessions/sess_1/tokens/plain", &json!({})).await;
    assert_clerk_error(&answer, 400, "emulator_unsupported");
}

#[tokio::test]
async fn custom_signing_key_needs_a_key() {
    let clerk = start().await;
    let api = Api::new(&clerk);
    let answer = api
        .create(&json!({"name": "t", "claims": {}, "custom_signing_key": true, "signing_algorithm": "HS256"}))
        .await;
    assert_clerk_error(&answer, 422, "form_param_missing");
    assert_eq!(answer.body["errors"][0]["meta"]["param_name"], json!("signing_key"));
}

#[tokio::test]
async fn logs_requests_for_call_counting() {
    let clerk = start().await;
    let api = Api::new(&clerk);
    let id = api.create(&template("t")).await.body["id"].as_str().unwrap().to_owned();
    api.patch(&format!("/jwt_templates/{id}"), &template("t")).await;
    api.get("/jwt_templates").await;
    get(&format!("{}/_emulator/identity", clerk.base_url())).await;
    let log = clerk.request_log();
    assert_eq!(log.count_matching("POST", "/v1/jwt_templates"), 1);
    assert_eq!(log.count_matching("PATCH", "/v1/jwt_templates/"), 1);
    assert_eq!(log.total(), 3);
    let records = log.records();
    assert_eq!(records[1].method, "PATCH");
    assert_eq!(records[1].path, format!("/v1/jwt_templates/{id}"));
    assert_eq!(records[1].status, 200);
}

#[tokio::test]
async fn faults_answer_in_clerks_error_shape() {
    let clerk = start().await;
    let api = Api::new(&clerk);
    clerk.add_fault(Fault::status(503).for_path_prefix("/v1/jwt_templates").times(1)).unwrap();
    assert_clerk_error(&api.get("/jwt_templates").await, 503, "internal_clerk_error");
    assert_eq!(api.get("/jwt_templates").await.status, 200);
}
