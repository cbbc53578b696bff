//! The probe itself: `GET {api}/v0/pipes/{pipe}.json` with the token in the `Authorization`
//! header (never `?token=`, which ends up in access logs), through the one pooled HTTP client.
//! And the free existence check of a pipe: `GET {api}/v0/pipes/{pipe}` (no format suffix) with
//! the workspace admin token, a metadata call Tinybird does not bill (it bills pipe endpoint
//! calls and the Query API).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::header::{AUTHORIZATION, HeaderMap};

use super::classify::{PipeDescribed, ProbeOutcome, TransportError, classify};
use crate::adapters::http;
use crate::api::limits::is_tinybird_name;
use crate::core::admin_token::AdminToken;
use crate::core::pipe_isolation::PipeDescription;

/// Upper bound of any probe timeout (the validated `healthCheck.timeout` is at most 1m); each
/// request sets its own, shorter, timeout.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer read: a probe must stay cheap for the operator. Give `healthCheck.params` that
/// make a big endpoint answer small.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Tinybird's credential parameter: never sent as a query parameter.
const TOKEN_PARAM: &str = "token";

/// What a request to Tinybird is for: the `call` label of its count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbePurpose {
    /// A pipe's shared probe: a billed query.
    Pipe,
    /// A token's own check: a billed query.
    TokenCheck,
    /// Whether the pipe exists (`GET /v0/pipes/{pipe}` with the admin token): a metadata call
    /// Tinybird does not bill.
    Existence,
}

impl ProbePurpose {
    /// The `call` label of `tenant_access_tinybird_requests_total`.
    #[must_use]
    pub const fn call_label(self) -> &'static str {
        match self {
            Self::Pipe => "probe",
            Self::TokenCheck => "token_check",
            Self::Existence => "pipe_exists",
        }
    }

    /// Whether Tinybird bills the request (and the workspace's budget counts it).
    #[must_use]
    pub const fn is_billed(self) -> bool {
        !matches!(self, Self::Existence)
    }
}

/// One probe, ready to send. `Debug` never shows the token.
#[derive(Clone)]
pub struct ProbeRequest {
    url: String,
    resource: String,
    params: Vec<(String, String)>,
    token: String,
    timeout: Duration,
    /// What it is for: the purpose label of the request count, and how its answer reads.
    purpose: ProbePurpose,
}

impl ProbeRequest {
    /// A probe of `resource` at `api_url` with `params` as query parameters (a `token` param is
    /// dropped: the token goes in the header).
    #[must_use]
    pub fn new(
        api_url: &str,
        resource: &str,
        params: &BTreeMap<String, String>,
        token: String,
        timeout: Duration,
    ) -> Self {
        Self {
            url: endpoint_url(api_url, resource),
            resource: resource.to_owned(),
            params: params
                .iter()
                .filter(|(name, _)| name.as_str() != TOKEN_PARAM)
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            token,
            timeout,
            purpose: ProbePurpose::Pipe,
        }
    }

    /// The existence check of `resource` at `api_url`: `GET {api}/v0/pipes/{resource}` with the
    /// admin token `key`, no parameters. A 200 says the pipe exists, a 404 that it does not.
    #[must_use]
    pub fn existence(api_url: &str, resource: &str, key: &AdminToken, timeout: Duration) -> Self {
        Self {
            url: pipe_url(api_url, resource, ""),
            resource: resource.to_owned(),
            params: Vec::new(),
            token: key.expose().to_owned(),
            timeout,
            purpose: ProbePurpose::Existence,
        }
    }

    /// The same probe, counted as a token's own check rather than a pipe's probe.
    #[must_use]
    pub fn as_token_check(mut self) -> Self {
        self.purpose = ProbePurpose::TokenCheck;
        self
    }

    /// What the request is for.
    #[must_use]
    pub fn purpose(&self) -> ProbePurpose {
        self.purpose
    }

    /// `{api}/v0/pipes/{resource}.json` (`{api}/v0/pipes/{resource}` for an existence check),
    /// without query string.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The pipe probed.
    #[must_use]
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The query parameters.
    #[must_use]
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// The bearer token: send it in the `Authorization` header, never log or store it.
    #[must_use]
    pub fn bearer_token(&self) -> &str {
        &self.token
    }

    /// The probe timeout.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The HTTP request over `client`: each param percent-encoded into the query string (a value
    /// cannot add a parameter or end the query), the token in the `Authorization` header.
    ///
    /// # Errors
    /// When the URL cannot be parsed.
    pub fn to_http(&self, client: &reqwest::Client) -> Result<reqwest::Request, reqwest::Error> {
        client
            .get(&self.url)
            .query(&self.params)
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .timeout(self.timeout)
            .build()
    }
}

impl fmt::Debug for ProbeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeRequest")
            .field("url", &self.url)
            .field("params", &self.params)
            .field("token", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("purpose", &self.purpose)
            .finish()
    }
}

/// `{api}/v0/pipes/{resource}.json`.
#[must_use]
pub fn endpoint_url(api_url: &str, resource: &str) -> String {
    pipe_url(api_url, resource, ".json")
}

/// `{api}/v0/pipes/{resource}{suffix}`, with every byte of `resource` outside Tinybird's name
/// alphabet percent-encoded (`.` and `-` included), so a resource can neither add a format suffix
/// (`top_pages.json` would make the admin-token existence check a billed query with admin
/// rights) nor leave the pipe's path. [`HttpProber`] sends nothing for such a resource anyway:
/// a server may decode `%2E` back into `.`.
fn pipe_url(api_url: &str, resource: &str, suffix: &str) -> String {
    use std::fmt::Write as _;
    let mut url = format!("{}/v0/pipes/", api_url.trim_end_matches('/'));
    for byte in resource.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' {
            url.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(url, "%{byte:02X}");
        }
    }
    url.push_str(suffix);
    url
}

/// Sends probes. The scheduler owns one; tests substitute a fake.
pub trait EndpointProber: Send + Sync + 'static {
    /// Probes once and classifies the answer (never fails: a failure is an outcome). For an
    /// existence check ([`ProbeRequest::purpose`] is [`ProbePurpose::Existence`]), any 200 is
    /// `Healthy` (the pipe exists) and the other answers are classified as a probe's.
    fn probe(&self, request: ProbeRequest) -> BoxFuture<'static, ProbeOutcome>;
}

/// The real prober: one pooled client for every probe.
#[derive(Debug, Clone)]
pub struct HttpProber {
    client: reqwest::Client,
}

impl HttpProber {
    /// A prober with the operator's HTTP client setup ([`crate::adapters::http::client`]).
    ///
    /// # Errors
    /// When the TLS backend cannot be initialised.
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(Self { client: http::client(CLIENT_TIMEOUT)? })
    }

    /// A prober over an existing client (its per-request timeout is overridden by each probe's).
    #[must_use]
    pub fn with_client(client: reqwest::Client) -> Self {
        Self { client }
    }

    /// Sends one probe and classifies the answer. The message never contains the token. A
    /// request for a resource that is not a Tinybird name is never sent (a server may decode a
    /// percent-encoded `.` back into a format suffix).
    pub async fn probe_once(&self, request: &ProbeRequest) -> ProbeOutcome {
        if !is_tinybird_name(&request.resource) {
            return ProbeOutcome::not_sent(&format!(
                "{:?} is not a Tinybird resource name (letters, digits, '_'): not sent",
                request.resource
            ));
        }
        let sent = match request.to_http(&self.client) {
            Ok(http) => self.client.execute(http).await,
            Err(error) => Err(error),
        };
        let outcome = match sent {
            Err(error) => {
                let status = error.status().map(|s| s.as_u16());
                classify(status, b"", &HeaderMap::new(), Some(&TransportError::from_reqwest(&error)))
            }
            Ok(mut response)
                if request.purpose == ProbePurpose::Existence && response.status().as_u16() == 200 =>
            {
                // The pipe exists; its description (its nodes' SQL) tells whether it filters by
                // the params tokens pin (`crate::core::pipe_isolation`).
                ProbeOutcome::pipe_described(read_description(&mut response).await)
            }
            Ok(mut response) => {
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                match read_body(&mut response).await {
                    Ok(Some(body)) => classify(Some(status), &body, &headers, None),
                    Ok(None) => ProbeOutcome {
                        status_code: Some(status),
                        ..ProbeOutcome::not_sent(&format!(
                            "answered {status} with more than {} MiB: set spec.healthCheck.params that make the answer small",
                            MAX_BODY_BYTES / (1024 * 1024)
                        ))
                    },
                    Err(error) => {
                        classify(Some(status), b"", &headers, Some(&TransportError::from_reqwest(&error)))
                    }
                }
            }
        };
        crate::adapters::request_counts::probe(outcome.reason, request.purpose);
        outcome.redacted_with(&[&request.token])
    }

    /// Reads the description of pipe `resource` with the admin token `key` (the free existence
    /// check, counted as one) and judges whether its SQL filters by each of `params`
    /// ([`crate::core::isolation_report::judge_pipe`]). `Err`: why it was not described
    /// (missing, unreachable, refused), never containing the key.
    ///
    /// # Errors
    /// When no description came back.
    pub async fn judge_pipe(
        &self,
        api_url: &str,
        resource: &str,
        (key, timeout): (&AdminToken, Duration),
        params: &[&str],
    ) -> Result<Vec<crate::api::ParamIsolation>, String> {
        let outcome = self.probe_once(&ProbeRequest::existence(api_url, resource, key, timeout)).await;
        let described = outcome.description.ok_or(outcome.message)?;
        let description = described.as_ref().map(AsRef::as_ref).map_err(String::as_str);
        Ok(crate::core::isolation_report::judge_pipe(Some(description), params).unwrap_or_default())
    }
}

impl EndpointProber for HttpProber {
    fn probe(&self, request: ProbeRequest) -> BoxFuture<'static, ProbeOutcome> {
        let prober = self.clone();
        Box::pin(async move { prober.probe_once(&request).await })
    }
}

/// Most bytes of a pipe description read (its nodes' SQL): beyond, the description is not
/// analysed.
pub const MAX_DESCRIPTION_BYTES: usize = 1024 * 1024;

/// The pipe description an existence check answered, parsed, or why it could not be.
async fn read_description(response: &mut reqwest::Response) -> PipeDescribed {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > MAX_DESCRIPTION_BYTES => {
                return Err(format!(
                    "the pipe's description is larger than {} KiB: not analysed",
                    MAX_DESCRIPTION_BYTES / 1024
                ));
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(error) => {
                return Err(format!("the pipe's description could not be read: {}", error.without_url()));
            }
        }
    }
    serde_json::from_slice::<PipeDescription>(&body)
        .map(Arc::new)
        .map_err(|error| format!("the pipe's description is not the JSON Tinybird sends: {error}"))
}

/// The body, or `None` when it is larger than [`MAX_BODY_BYTES`].
async fn read_body(response: &mut reqwest::Response) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

#[cfg(test)]
mod tests;
