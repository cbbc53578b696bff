//! Helpers shared by the emulator integration tests. Test JWTs are signed with jsonwebtoken
//! directly, never with operator code.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(std::time::Duration::from_secs(20)).build().unwrap()
}

/// HS256 with the raw bytes of `key`, as Tinybird expects.
pub fn sign(claims: &Value, key: &str) -> String {
    sign_with(claims, key, Algorithm::HS256)
}

pub fn sign_with(claims: &Value, key: &str, algorithm: Algorithm) -> String {
    encode(&Header::new(algorithm), claims, &EncodingKey::from_secret(key.as_bytes())).unwrap()
}

/// Tinybird claims reading `pipe` with `fixed_params`.
pub fn pipe_claims(workspace_id: &str, name: &str, exp: i64, pipe: &str, fixed_params: &Value) -> Value {
    json!({
        "workspace_id": workspace_id,
        "name": name,
        "exp": exp,
        "iat": exp - 3600,
        "scopes": [{"type": "PIPES:READ", "resource": pipe, "fixed_params": fixed_params}],
    })
}

/// A decoded JSON answer with its status and headers.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub async fn from(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Self { status, headers, body }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The values of `column` in a Tinybird `data` array.
    pub fn column(&self, column: &str) -> Vec<String> {
        self.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row[column].as_str().unwrap().to_owned())
            .collect()
    }
}

pub async fn get_with_bearer(url: &str, token: &str) -> Answer {
    Answer::from(client().get(url).bearer_auth(token).send().await.unwrap()).await
}

pub async fn get(url: &str) -> Answer {
    Answer::from(client().get(url).send().await.unwrap()).await
}

/// Asserts a Tinybird error answer: `status`, an `error` containing `fragment`, and a link to
/// Tinybird's documentation.
pub fn assert_error(answer: &Answer, status: u16, fragment: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    let message = answer.body["error"].as_str().unwrap();
    assert!(message.contains(fragment), "{message:?} should contain {fragment:?}");
    assert!(answer.body["documentation"].as_str().unwrap().starts_with("https://www.tinybird.co/docs/"));
}
