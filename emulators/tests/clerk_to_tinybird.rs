//! The Clerk + Tinybird pattern end to end: a Clerk template signed with the Tinybird admin token
//! mints tokens that the Tinybird emulator accepts, pinned to the signed-in org and user.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Answer, client, get_with_bearer};
use serde_json::{Value, json};
use tenant_access_emulators::{ClerkConfig, ClerkEmulator, Clock, TestOrg, TinybirdConfig, TinybirdEmulator};

struct Pair {
    tinybird: TinybirdEmulator,
    clerk: ClerkEmulator,
}

impl Pair {
    async fn start() -> Self {
        let clock = Clock::frozen_now();
        let tinybird =
            TinybirdEmulator::start(TinybirdConfig { clock: clock.clone(), ..TinybirdConfig::default() })
                .await
                .unwrap();
        let clerk = ClerkEmulator::start(ClerkConfig { clock, ..ClerkConfig::default() }).await.unwrap();
        Self { tinybird, clerk }
    }

    /// The template from the Clerk + Tinybird guide.
    fn guide_template(&self, org_param: &str) -> Value {
        json!({
            "name": "tinybird",
            "claims": {
                "workspace_id": self.tinybird.workspace_id(),
                "name": "frontend_jwt",
                "scopes": [{
                    "type": "PIPES:READ",
                    "resource": "top_pages",
                    "fixed_params": {"org": org_param, "user": "{{user.id}}"},
                }],
            },
            "lifetime": 60,
            "custom_signing_key": true,
            "signing_algorithm": "HS256",
            "signing_key": self.tinybird.admin_token(),
        })
    }

    async fn clerk_send(&self, request: reqwest::RequestBuilder) -> Answer {
        Answer::from(request.bearer_auth(self.clerk.secret_key()).send().await.unwrap()).await
    }

    async fn create_template(&self, body: &Value) -> String {
        let url = format!("{}/jwt_templates", self.clerk.api_url());
        let answer = self.clerk_send(client().post(url).json(body)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body["id"].as_str().unwrap().to_owned()
    }

    async fn mint(&self) -> String {
        let url = format!("{}/sessions/sess_demo/tokens/tinybird", self.clerk.api_url());
        let answer = self.clerk_send(client().post(url)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body["jwt"].as_str().unwrap().to_owned()
    }

    async fn top_pages(&self, jwt: &str, query: &str) -> Answer {
        let url = format!("{}/v0/pipes/top_pages.json{query}", self.tinybird.base_url());
        get_with_bearer(&url, jwt).await
    }
}

fn orgs_and_users(answer: &Answer) -> Vec<(String, String)> {
    let orgs = answer.column("org");
    let users = answer.column("user");
    orgs.into_iter().zip(users).collect()
}

#[tokio::test]
async fn clerk_minted_token_sees_only_its_org_and_user_rows() {
    let pair = Pair::start().await;
    pair.create_template(&pair.guide_template("{{org.slug}}")).await;

    let acme = pair.mint().await;
    let answer = pair.top_pages(&acme, "").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(orgs_and_users(&answer), vec![("acme".into(), "user_alice".into()); 2]);
    // Asking for another tenant in the query string changes nothing.
    let answer = pair.top_pages(&acme, "?org=globex&user=user_carol").await;
    assert_eq!(orgs_and_users(&answer), vec![("acme".into(), "user_alice".into()); 2]);

    pair.clerk.set_org(Some(TestOrg::globex()));
    let globex = pair.mint().await;
    let answer = pair.top_pages(&globex, "").await;
    assert_eq!(orgs_and_users(&answer), vec![("globex".into(), "user_alice".into())]);
}

#[tokio::test]
async fn clerk_tokens_expire_after_the_template_lifetime() {
    let pair = Pair::start().await;
    pair.create_template(&pair.guide_template("{{org.slug}}")).await;
    let jwt = pair.mint().await;
    pair.tinybird.clock().advance(Duration::from_secs(59));
    assert_eq!(pair.top_pages(&jwt, "").await.status, 200);
    pair.tinybird.clock().advance(Duration::from_secs(1));
    let expired = pair.top_pages(&jwt, "").await;
    assert_eq!(expired.status, 403);
    assert!(expired.body["error"].as_str().unwrap().ends_with("Signature has expired"));
}

#[tokio::test]
async fn admin_token_refresh_breaks_clerk_tokens_until_the_template_key_is_replaced() {
    let pair = Pair::start().await;
    let id = pair.create_template(&pair.guide_template("{{org.slug}}")).await;
    let before = pair.mint().await;
    assert_eq!(pair.top_pages(&before, "").await.status, 200);

    pair.tinybird.refresh_admin_token();
    let stale = pair.mint().await;
    for jwt in [&before, &stale] {
        let answer = pair.top_pages(jwt, "").await;
        assert_eq!(answer.status, 403);
        assert!(answer.body["error"].as_str().unwrap().ends_with("Signature verification failed"));
    }

    let url = format!("{}/jwt_templates/{id}", pair.clerk.api_url());
    let patched = pair.clerk_send(client().patch(url).json(&pair.guide_template("{{org.slug}}"))).await;
    assert_eq!(patched.status, 200);
    assert_eq!(pair.clerk.signing_key(&id), Some(pair.tinybird.admin_token()));
    assert_eq!(pair.top_pages(&pair.mint().await, "").await.status, 200);
}

#[tokio::test]
async fn a_null_tenant_param_fails_open_and_a_fallback_closes_it() {
    let pair = Pair::start().await;
    pair.clerk.set_org(None);
    pair.create_template(&pair.guide_template("{{org.slug}}")).await;
    // No active org: `org` is null, the filter is dropped and alice sees every org's rows.
    let open = pair.top_pages(&pair.mint().await, "").await;
    let orgs = open.column("org");
    assert!(orgs.contains(&"acme".to_owned()) && orgs.contains(&"globex".to_owned()));

    let url = format!("{}/jwt_templates", pair.clerk.api_url());
    let list = pair.clerk_send(client().get(url)).await;
    let id = list.body[0]["id"].as_str().unwrap();
    let url = format!("{}/jwt_templates/{id}", pair.clerk.api_url());
    pair.clerk_send(client().patch(url).json(&pair.guide_template("{{org.slug || 'none'}}"))).await;
    let closed = pair.top_pages(&pair.mint().await, "").await;
    assert_eq!(closed.body["rows"], json!(0));
}
