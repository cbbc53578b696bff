//! The JWT template calls of one Clerk instance, each under a timeout, through the instance's
//! limiter, with bounded retries.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{ClerkCall, ClerkError, clean_message, error_from_answer};
use super::limiter::{RequestBudget, RequestLimiter, Requester};
use super::template::{ClerkTemplateBody, DeleteOutcome, RemoteTemplate, TemplatePage};
use crate::core::admin_token::{AdminToken, fingerprint};
use crate::core::backoff::{Backoff, jitter};
use crate::core::clock::Clock;

/// Clerk's Backend API base URL.
pub const DEFAULT_API_URL: &str = "https://api.clerk.com/v1";
/// The `Clerk-API-Version` the template schema was checked against.
pub const DEFAULT_API_VERSION: &str = "2025-11-10";
/// Header pinning the Backend API version.
const API_VERSION_HEADER: HeaderName = HeaderName::from_static("clerk-api-version");
/// Upper bound on list pages, against a server that never stops paginating.
const MAX_PAGES: u32 = 1000;

/// How clients talk to Clerk. `Default`: 90 requests per 10 s per instance, 10 s per request,
/// at most 60 s of waiting for the limiter, 3 attempts on outages, API version pinned.
#[derive(Debug, Clone)]
pub struct ClerkClientOptions {
    /// Requests per window per instance (default 90 per 10 s: the development budget with a
    /// margin for the application's own calls).
    pub budget: RequestBudget,
    /// Timeout of each HTTP request.
    pub request_timeout: Duration,
    /// Longest a call waits for the limiter (queue, window, `Retry-After` pause) before failing
    /// with [`ClerkError::RateLimited`]; a `Retry-After` beyond it fails at once.
    ///
    /// Zero: never wait (what a reconcile needs, so that a throttled Clerk holds no worker). A
    /// call that cannot have a slot at once, or that Clerk answers 429, fails at once with
    /// [`ClerkError::RateLimited`] whose `retry_after` is when to come back, spread at the
    /// budget's pace among the callers refused (see [`RequestLimiter::try_acquire_now`]).
    pub max_wait: Duration,
    /// Attempts of an idempotent call (and of a create, see [`ClerkClient::create`]) on 5xx,
    /// timeouts and connection errors.
    pub max_attempts: u32,
    /// Attempts of a call answered 429 (each after the instance's pause).
    pub max_rate_limited_attempts: u32,
    /// Delay between attempts on outages.
    pub backoff: Backoff,
    /// `Clerk-API-Version` header; `None` sends none (Clerk's default version).
    pub api_version: Option<String>,
    /// Templates per list page (Clerk allows 1..=500).
    pub page_size: u32,
    /// The wall clock (`Retry-After` given as a date).
    pub clock: Clock,
}

impl Default for ClerkClientOptions {
    fn default() -> Self {
        Self {
            budget: RequestBudget::default(),
            request_timeout: Duration::from_secs(10),
            max_wait: Duration::from_secs(60),
            max_attempts: 3,
            max_rate_limited_attempts: 5,
            backoff: Backoff { base: Duration::from_millis(250), cap: Duration::from_secs(5) },
            api_version: Some(DEFAULT_API_VERSION.to_owned()),
            page_size: 500,
            clock: Clock::system(),
        }
    }
}

/// A client of one Clerk instance: cheap to clone (one pooled HTTP client and one limiter shared
/// by every clone and by every client of the same instance, see
/// [`ClerkClients`](super::ClerkClients)). The secret key is never printed.
#[derive(Clone)]
pub struct ClerkClient {
    inner: Arc<ClientInner>,
    /// Whose share of the instance's budget the calls count against.
    requester: Requester,
}

struct ClientInner {
    http: reqwest::Client,
    api_url: Url,
    secret_key: String,
    authorization: HeaderValue,
    api_version: Option<HeaderValue>,
    limiter: Arc<RequestLimiter>,
    options: Arc<ClerkClientOptions>,
}

impl std::fmt::Debug for ClerkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClerkClient")
            .field("api_url", &self.inner.api_url.as_str())
            .field("secret_key", &"<redacted>")
            .field("secret_key_fingerprint", &fingerprint(self.inner.secret_key.as_bytes()))
            .field("api_version", &self.inner.options.api_version)
            .finish_non_exhaustive()
    }
}

/// Whether Clerk may have seen a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Never sent (no limiter slot in time, connection refused): safe to send again.
    NotSent,
    /// Sent, outcome unknown (timeout, broken connection).
    Unknown,
    /// Clerk answered with this error.
    Answered,
}

#[derive(Debug)]
struct Failure {
    error: ClerkError,
    delivery: Delivery,
}

impl From<Failure> for ClerkError {
    fn from(failure: Failure) -> Self {
        failure.error
    }
}

/// One request to send (possibly several times).
struct Call<'a> {
    call: ClerkCall,
    method: Method,
    url: Url,
    query: &'a [(&'a str, String)],
    body: Option<&'a Value>,
    /// Secrets in the body (the signing key), redacted from every message.
    body_secret: Option<&'a str>,
}

/// Parses the API URL: http(s), no credentials, query or fragment; trailing slashes dropped.
pub(crate) fn parse_api_url(api_url: &str) -> Result<Url, ClerkError> {
    let invalid =
        |message: &str| ClerkError::InvalidApiUrl { call: ClerkCall::Setup, message: message.into() };
    let mut url = Url::parse(api_url.trim()).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(invalid("must be an http or https URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not contain credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or fragment"));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

/// Clerk template ids are `jtmpl_` and base62; anything else cannot name a template (and must not
/// reach the URL path).
fn is_template_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl ClerkClient {
    /// Built by [`ClerkClients::get_or_create`](super::ClerkClients::get_or_create).
    pub(crate) fn from_parts(
        http: reqwest::Client,
        api_url: Url,
        secret_key: &str,
        limiter: Arc<RequestLimiter>,
        options: Arc<ClerkClientOptions>,
    ) -> Result<Self, ClerkError> {
        let secret_key = secret_key.trim().to_owned();
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {secret_key}")).map_err(|_| ClerkError::Unauthorized {
                call: ClerkCall::Setup,
                status: None,
                code: "clerk_key_invalid".into(),
                message: "the secret key holds characters not allowed in an HTTP header".into(),
            })?;
        authorization.set_sensitive(true);
        let api_version = match &options.api_version {
            Some(version) => Some(HeaderValue::from_str(version).map_err(|_| ClerkError::InvalidApiUrl {
                call: ClerkCall::Setup,
                message: "the Clerk API version is not a valid header value".into(),
            })?),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(ClientInner {
                http,
                api_url,
                secret_key,
                authorization,
                api_version,
                limiter,
                options,
            }),
            requester: Requester::default(),
        })
    }

    /// The same client, its calls counted against `requester`'s fair share of the instance's
    /// budget (see [`RequestLimiter`]).
    #[must_use]
    pub fn on_behalf_of(&self, requester: Requester) -> Self {
        Self { inner: Arc::clone(&self.inner), requester }
    }

    /// The API base URL as used (trailing slashes of the path removed).
    #[must_use]
    pub fn api_url(&self) -> &str {
        self.inner.api_url.as_str()
    }

    /// Whether both clients talk to the same instance through one limiter.
    #[must_use]
    pub fn shares_limiter_with(&self, other: &ClerkClient) -> bool {
        Arc::ptr_eq(&self.inner.limiter, &other.inner.limiter)
    }

    /// Every template of the instance, following pages.
    ///
    /// # Errors
    /// Any [`ClerkError`] of a page request.
    pub async fn list_templates(&self) -> Result<Vec<RemoteTemplate>, ClerkError> {
        let page_size = self.inner.options.page_size.clamp(1, 500);
        let mut templates = Vec::new();
        for _ in 0..MAX_PAGES {
            let offset = templates.len();
            let query = [
                ("paginated", "true".to_owned()),
                ("limit", page_size.to_string()),
                ("offset", offset.to_string()),
            ];
            let call = Call {
                call: ClerkCall::List,
                method: Method::GET,
                url: self.endpoint(None),
                query: &query,
                body: None,
                body_secret: None,
            };
            let bytes = self.execute(&call, true).await?;
            match self.parse::<TemplatePage>(ClerkCall::List, &bytes, None)? {
                TemplatePage::All(all) => return Ok(all),
                TemplatePage::Paginated { data, total_count } => {
                    let received = data.len();
                    templates.extend(data);
                    let complete = total_count.is_some_and(|total| templates.len() as u64 >= total);
                    if received == 0 || received < page_size as usize || complete {
                        return Ok(templates);
                    }
                }
            }
        }
        Ok(templates)
    }

    /// The template named `name`, if any.
    ///
    /// # Errors
    /// Any [`ClerkError`] of the list.
    pub async fn find_by_name(&self, name: &str) -> Result<Option<RemoteTemplate>, ClerkError> {
        Ok(self.list_templates().await?.into_iter().find(|template| template.name == name))
    }

    /// The template with this id.
    ///
    /// # Errors
    /// [`ClerkError::NotFound`] when there is none; any other [`ClerkError`].
    pub async fn get(&self, id: &str) -> Result<RemoteTemplate, ClerkError> {
        let url = self.template_url(ClerkCall::Get, id)?;
        let call = Call {
            call: ClerkCall::Get,
            method: Method::GET,
            url,
            query: &[],
            body: None,
            body_secret: None,
        };
        let bytes = self.execute(&call, true).await?;
        self.parse(ClerkCall::Get, &bytes, None)
    }

    /// Creates the template signed with `signing_key`.
    ///
    /// A create is not blindly retried: when Clerk may have created the template but the answer
    /// was lost (timeout, 5xx), the client looks the name up first. A template with that name
    /// and the desired content is taken as the lost create and PATCHed with the key (so the key
    /// is certain); one with other content is reported as `form_identifier_exists`, as Clerk
    /// would; no template means the create is sent again.
    ///
    /// # Errors
    /// [`ClerkError::InvalidTemplate`] (e.g. `form_identifier_exists` for a taken name,
    /// `jwt_template_reserved_claim`); any other [`ClerkError`].
    pub async fn create(
        &self,
        template: &impl ClerkTemplateBody,
        signing_key: &AdminToken,
    ) -> Result<RemoteTemplate, ClerkError> {
        let body = template.request_body(signing_key);
        let call = Call {
            call: ClerkCall::Create,
            method: Method::POST,
            url: self.endpoint(None),
            query: &[],
            body: Some(&body),
            body_secret: Some(signing_key.expose()),
        };
        let mut attempts = 0_u32;
        loop {
            attempts += 1;
            let failure = match self.execute(&call, false).await {
                Ok(bytes) => return self.parse(ClerkCall::Create, &bytes, Some(signing_key.expose())),
                Err(failure) => failure,
            };
            let outcome_unknown = matches!(failure.error, ClerkError::ClerkUnavailable { .. })
                && failure.delivery != Delivery::NotSent;
            if !outcome_unknown || attempts >= self.inner.options.max_attempts {
                return Err(failure.error);
            }
            tracing::debug!(
                attempts,
                "Clerk create outcome unknown; looking the template up before retrying"
            );
            self.pause_before_retry(attempts, &call.url).await;
            match self.find_by_name(template.template_name()).await? {
                Some(found) if found.matches(template) => {
                    return self.update(&found.id, template, signing_key).await;
                }
                Some(_) => {
                    return Err(ClerkError::InvalidTemplate {
                        call: ClerkCall::Create,
                        status: 422,
                        code: "form_identifier_exists".into(),
                        message:
                            "a different template with this name appeared while the create's outcome was \
                                  unknown"
                                .into(),
                    });
                }
                None => {}
            }
        }
    }

    /// Replaces the template `id` with the whole desired body (Clerk requires `name` and
    /// `claims` on every PATCH) and `signing_key`. Retried on outages: the same PATCH twice is
    /// harmless.
    ///
    /// # Errors
    /// [`ClerkError::NotFound`] when the template is gone; any other [`ClerkError`].
    pub async fn update(
        &self,
        id: &str,
        template: &impl ClerkTemplateBody,
        signing_key: &AdminToken,
    ) -> Result<RemoteTemplate, ClerkError> {
        let url = self.template_url(ClerkCall::Update, id)?;
        let body = template.request_body(signing_key);
        let call = Call {
            call: ClerkCall::Update,
            method: Method::PATCH,
            url,
            query: &[],
            body: Some(&body),
            body_secret: Some(signing_key.expose()),
        };
        let bytes = self.execute(&call, true).await?;
        self.parse(ClerkCall::Update, &bytes, Some(signing_key.expose()))
    }

    /// Deletes the template `id`; a template that is already gone (404) is a success.
    ///
    /// # Errors
    /// Any [`ClerkError`] but [`ClerkError::NotFound`].
    pub async fn delete(&self, id: &str) -> Result<DeleteOutcome, ClerkError> {
        let url = match self.template_url(ClerkCall::Delete, id) {
            Ok(url) => url,
            Err(ClerkError::NotFound { .. }) => return Ok(DeleteOutcome::AlreadyAbsent),
            Err(error) => return Err(error),
        };
        let call = Call {
            call: ClerkCall::Delete,
            method: Method::DELETE,
            url,
            query: &[],
            body: None,
            body_secret: None,
        };
        match self.execute(&call, true).await {
            Ok(_) => Ok(DeleteOutcome::Deleted),
            Err(Failure { error: ClerkError::NotFound { .. }, .. }) => Ok(DeleteOutcome::AlreadyAbsent),
            Err(failure) => Err(failure.error),
        }
    }

    fn endpoint(&self, id: Option<&str>) -> Url {
        let mut url = self.inner.api_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push("jwt_templates");
            if let Some(id) = id {
                segments.push(id);
            }
        }
        url
    }

    fn template_url(&self, call: ClerkCall, id: &str) -> Result<Url, ClerkError> {
        if !is_template_id(id) {
            return Err(ClerkError::NotFound { call, message: "not a Clerk template id".into() });
        }
        Ok(self.endpoint(Some(id)))
    }

    fn secrets<'a>(&'a self, body_secret: Option<&'a str>) -> [&'a str; 2] {
        [self.inner.secret_key.as_str(), body_secret.unwrap_or_default()]
    }

    fn parse<T: DeserializeOwned>(
        &self,
        call: ClerkCall,
        bytes: &[u8],
        body_secret: Option<&str>,
    ) -> Result<T, ClerkError> {
        serde_json::from_slice(bytes).map_err(|error| ClerkError::ClerkUnavailable {
            call,
            status: None,
            message: clean_message(&format!("unparseable answer: {error}"), &self.secrets(body_secret)),
        })
    }

    async fn pause_before_retry(&self, attempts: u32, url: &Url) {
        tokio::time::sleep(self.inner.options.backoff.delay(attempts, jitter(url.path()))).await;
    }

    /// Sends `call` until it succeeds or fails for good: 429 waits out the instance's pause and
    /// retries (the request was refused, so even a create is safe); outages are retried when
    /// `idempotent` or when the request surely never left.
    async fn execute(&self, call: &Call<'_>, idempotent: bool) -> Result<Vec<u8>, Failure> {
        let options = &self.inner.options;
        let mut outage_attempts = 0_u32;
        let mut rate_limited_attempts = 0_u32;
        loop {
            let sent = self.send_once(call).await;
            // A call the instance's own budget holds back was never sent: not a request.
            let held_back = matches!(
                &sent,
                Err(Failure { error: ClerkError::RateLimited { .. }, delivery: Delivery::NotSent })
            );
            if !held_back {
                crate::adapters::request_counts::clerk(call.call, sent.as_ref().err().map(|f| &f.error));
            }
            let failure = match sent {
                Ok(bytes) => return Ok(bytes),
                Err(failure) => failure,
            };
            match (&failure.error, failure.delivery) {
                (ClerkError::RateLimited { retry_after, .. }, Delivery::Answered)
                    if options.max_wait.is_zero() =>
                {
                    let comeback = self.inner.limiter.pause_and_comeback(*retry_after);
                    tracing::info!(
                        call = %call.call,
                        retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
                        comeback_ms = u64::try_from(comeback.as_millis()).unwrap_or(u64::MAX),
                        "Clerk answered 429; pausing every request to this instance, this call comes back later"
                    );
                    return Err(Failure {
                        error: ClerkError::RateLimited { call: call.call, retry_after: comeback },
                        delivery: Delivery::Answered,
                    });
                }
                (ClerkError::RateLimited { retry_after, .. }, Delivery::Answered) => {
                    self.inner.limiter.pause_for(*retry_after);
                    rate_limited_attempts += 1;
                    tracing::warn!(
                        call = %call.call,
                        retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
                        "Clerk answered 429; pausing every request to this instance"
                    );
                    if *retry_after > options.max_wait
                        || rate_limited_attempts >= options.max_rate_limited_attempts
                    {
                        return Err(failure);
                    }
                }
                (ClerkError::ClerkUnavailable { .. }, delivery)
                    if idempotent || delivery == Delivery::NotSent =>
                {
                    outage_attempts += 1;
                    if outage_attempts >= options.max_attempts {
                        return Err(failure);
                    }
                    tracing::debug!(call = %call.call, attempt = outage_attempts, error = %failure.error, "retrying");
                    self.pause_before_retry(outage_attempts, &call.url).await;
                }
                _ => return Err(failure),
            }
        }
    }

    /// One request through the limiter: the slot is held until the answer is read.
    async fn send_once(&self, call: &Call<'_>) -> Result<Vec<u8>, Failure> {
        let inner = &self.inner;
        let secrets = self.secrets(call.body_secret);
        let slot = if inner.options.max_wait.is_zero() {
            inner.limiter.try_acquire_now_for(&self.requester)
        } else {
            inner.limiter.acquire_within(inner.options.max_wait).await
        };
        let permit = slot.map_err(|retry_after| Failure {
            error: ClerkError::RateLimited { call: call.call, retry_after },
            delivery: Delivery::NotSent,
        })?;
        let mut request = inner
            .http
            .request(call.method.clone(), call.url.clone())
            .header(AUTHORIZATION, inner.authorization.clone());
        if let Some(version) = &inner.api_version {
            request = request.header(API_VERSION_HEADER, version.clone());
        }
        if !call.query.is_empty() {
            request = request.query(call.query);
        }
        if let Some(body) = call.body {
            request = request.json(body);
        }
        let response =
            request.send().await.map_err(|error| self.transport_failure(call.call, &error, &secrets))?;
        let status = response.status();
        let retry_after =
            response.headers().get(RETRY_AFTER).and_then(|value| value.to_str().ok()).map(str::to_owned);
        let bytes = response
            .bytes()
            .await
            .map_err(|error| self.transport_failure(call.call, &error, &secrets))?
            .to_vec();
        drop(permit);
        tracing::debug!(call = %call.call, method = %call.method, status = status.as_u16(), "Clerk answered");
        if status.is_success() {
            return Ok(bytes);
        }
        Err(Failure {
            error: error_from_answer(
                call.call,
                status,
                retry_after.as_deref(),
                &bytes,
                &secrets,
                self.inner.options.clock.now(),
            ),
            delivery: Delivery::Answered,
        })
    }

    fn transport_failure(&self, call: ClerkCall, error: &reqwest::Error, secrets: &[&str]) -> Failure {
        let delivery = if error.is_connect() { Delivery::NotSent } else { Delivery::Unknown };
        let what = if error.is_timeout() {
            format!("no answer within {}s", self.inner.options.request_timeout.as_secs_f64())
        } else if error.is_connect() {
            "could not connect".to_owned()
        } else {
            "request failed".to_owned()
        };
        let mut text = format!("{what} ({})", self.inner.api_url.host_str().unwrap_or_default());
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        Failure {
            error: ClerkError::ClerkUnavailable {
                call,
                status: None,
                message: clean_message(&text, secrets),
            },
            delivery,
        }
    }
}
