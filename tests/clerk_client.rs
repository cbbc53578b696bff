//! The Clerk client against the in-process Clerk emulator: the template round trip, Clerk's
//! errors as typed errors, retries, and the request budget under hundreds of concurrent calls.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tenant_access::adapters::clerk::{
    ClerkClient, ClerkClientOptions, ClerkClients, ClerkError, ClerkTemplateBody, DeleteOutcome,
    RequestBudget,
};
use tenant_access::core::admin_token::AdminToken;
use tenant_access::core::backoff::Backoff;
use tenant_access::core::desired::ClerkTemplate;
use tenant_access::core::jwt::{AccessClaims, ClaimScope};
use tenant_access_emulators::{ClerkConfig, ClerkEmulator, Fault};

const SIGNING_KEY: &str =
    "p.eyJ1IjoiM2Y2YzFiMWUtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAwIiwiaWQiOiJ0b2stMSJ9.c2lnbmF0dXJlLW9uZQ";
const ROTATED_KEY: &str =
    "p.eyJ1IjoiM2Y2YzFiMWUtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAwIiwiaWQiOiJ0b2stMSJ9.c2lnbmF0dXJlLXR3bw";

fn template(name: &str) -> ClerkTemplate {
    ClerkTemplate {
        name: name.to_owned(),
        claims: tenant_access::core::desired::ClerkClaims {
            access: AccessClaims {
                workspace_id: "3f6c1b1e-0000-0000-0000-000000000000".into(),
                name: name.to_owned(),
                scopes: vec![ClaimScope {
                    scope_type: "PIPES:READ".into(),
                    resource: "top_pages".into(),
                    fixed_params: Some(BTreeMap::from([("org".to_owned(), json!("{{org.slug || 'none'}}"))])),
                    filter: None,
                }],
                limits: None,
            },
            owner: format!("test/{name}"),
            workspace: "TinybirdWorkspace/acme/analytics".into(),
            retain: false,
        },
        lifetime: 60,
        allowed_clock_skew: 5,
        custom_signing_key: true,
        signing_algorithm: "HS256",
    }
}

/// A body the operator never builds: for Clerk's validation errors.
struct RawTemplate(Value);

impl ClerkTemplateBody for RawTemplate {
    fn template_name(&self) -> &str {
        self.0["name"].as_str().unwrap_or_default()
    }

    fn body_without_key(&self) -> Value {
        self.0.clone()
    }
}

fn key() -> AdminToken {
    AdminToken::new(SIGNING_KEY)
}

fn fast_retries() -> ClerkClientOptions {
    ClerkClientOptions {
        backoff: Backoff { base: Duration::from_millis(20), cap: Duration::from_millis(100) },
        ..ClerkClientOptions::default()
    }
}

async fn emulator() -> ClerkEmulator {
    ClerkEmulator::start(ClerkConfig::default()).await.unwrap()
}

fn client(clerk: &ClerkEmulator, options: ClerkClientOptions) -> ClerkClient {
    ClerkClients::new(options).unwrap().get_or_create(&clerk.api_url(), clerk.secret_key()).unwrap()
}

/// Neither key may appear in an error's text or debug form.
fn assert_no_keys(error: &ClerkError, secret_key: &str) {
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(!text.contains(secret_key), "secret key in {text}");
        assert!(!text.contains(SIGNING_KEY), "signing key in {text}");
        assert!(!text.contains("c2lnbmF0dXJlLW9uZQ"), "signing key part in {text}");
        assert!(!text.contains('\n'), "several lines: {text}");
    }
}

#[tokio::test]
async fn creates_finds_updates_and_deletes_a_template() {
    let clerk = emulator().await;
    let client = client(&clerk, fast_retries());
    let desired = template("acme-reader");

    let created = client.create(&desired, &key()).await.unwrap();
    assert!(created.id.starts_with("jtmpl_"), "{}", created.id);
    assert!(created.matches(&desired));
    assert_eq!(created.signing_algorithm, "HS256");
    assert!(created.custom_signing_key);

    let found = client.find_by_name("acme-reader").await.unwrap().unwrap();
    assert_eq!(found, created);
    assert_eq!(client.get(&created.id).await.unwrap(), created);
    assert_eq!(client.find_by_name("globex-reader").await.unwrap(), None);

    let mut changed = desired.clone();
    changed.lifetime = 120;
    changed.claims.access.scopes[0].resource = "tenant_events".into();
    let updated = client.update(&created.id, &changed, &key()).await.unwrap();
    assert_eq!(updated.id, created.id);
    assert!(updated.matches(&changed) && !updated.matches(&desired));
    assert_eq!(clerk.template(&created.id).unwrap().lifetime, 120);

    assert_eq!(client.delete(&created.id).await.unwrap(), DeleteOutcome::Deleted);
    let gone = client.get(&created.id).await.unwrap_err();
    assert!(matches!(gone, ClerkError::NotFound { .. }), "{gone}");
    assert_eq!(gone.reason(), "NotFound");
    assert_eq!(client.update(&created.id, &desired, &key()).await.unwrap_err().reason(), "NotFound");
    assert_eq!(client.find_by_name("acme-reader").await.unwrap(), None);
}

#[tokio::test]
async fn lists_every_page() {
    let clerk = emulator().await;
    let client = client(&clerk, ClerkClientOptions { page_size: 2, ..fast_retries() });
    for i in 0..5 {
        client.create(&template(&format!("tenant-{i}")), &key()).await.unwrap();
    }
    let names: Vec<String> = client.list_templates().await.unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["tenant-0", "tenant-1", "tenant-2", "tenant-3", "tenant-4"]);
    // Pages of 2, 2 and 1.
    assert_eq!(clerk.request_log().count_matching("GET", "/v1/jwt_templates"), 3);
    assert_eq!(client.find_by_name("tenant-4").await.unwrap().unwrap().name, "tenant-4");
}

#[tokio::test]
async fn the_signing_key_is_stored_but_never_returned() {
    let clerk = emulator().await;
    let client = client(&clerk, fast_retries());
    let created = client.create(&template("acme-reader"), &key()).await.unwrap();
    assert_eq!(clerk.signing_key(&created.id).as_deref(), Some(SIGNING_KEY));
    assert!(!format!("{created:?}").contains(SIGNING_KEY));

    let raw = reqwest::Client::new()
        .get(format!("{}/jwt_templates/{}", clerk.api_url(), created.id))
        .bearer_auth(clerk.secret_key())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!raw.contains(SIGNING_KEY) && !raw.contains("\"signing_key\""), "{raw}");

    // A rotated key reaches Clerk through a PATCH of the whole body.
    client.update(&created.id, &template("acme-reader"), &AdminToken::new(ROTATED_KEY)).await.unwrap();
    assert_eq!(clerk.signing_key(&created.id).as_deref(), Some(ROTATED_KEY));
}

#[tokio::test]
async fn a_wrong_secret_key_is_unauthorized() {
    let clerk = emulator().await;
    let wrong_key = "sk_test_wrongwrongwrongwrongwrongwrong0000";
    let client =
        ClerkClients::new(fast_retries()).unwrap().get_or_create(&clerk.api_url(), wrong_key).unwrap();

    let error = client.list_templates().await.unwrap_err();
    assert!(matches!(error, ClerkError::Unauthorized { status: Some(401), .. }), "{error:?}");
    assert_eq!(error.reason(), "Unauthorized");
    assert_eq!(error.code(), Some("authentication_invalid"));
    assert_no_keys(&error, wrong_key);

    let error = client.create(&template("acme-reader"), &key()).await.unwrap_err();
    assert_eq!(error.reason(), "Unauthorized");
    assert_no_keys(&error, wrong_key);
    // Refused requests are not retried.
    assert_eq!(clerk.request_log().count_status(401), 2);
}

#[tokio::test]
async fn a_reserved_claim_is_an_invalid_template_with_clerks_code() {
    let clerk = emulator().await;
    let client = client(&clerk, fast_retries());
    let body = RawTemplate(json!({
        "name": "acme-reader",
        "claims": {"sub": "{{user.id}}", "workspace_id": "ws"},
        "lifetime": 60,
        "custom_signing_key": true,
        "signing_algorithm": "HS256",
    }));
    let error = client.create(&body, &key()).await.unwrap_err();
    assert!(matches!(error, ClerkError::InvalidTemplate { status: 400, .. }), "{error:?}");
    assert_eq!(error.reason(), "InvalidTemplate");
    assert_eq!(error.code(), Some("jwt_template_reserved_claim"));
    assert!(error.to_string().contains("'sub'"), "{error}");
    assert_no_keys(&error, clerk.secret_key());
    assert_eq!(clerk.request_log().count_matching("POST", "/v1/jwt_templates"), 1);
}

#[tokio::test]
async fn a_taken_name_is_an_invalid_template_form_identifier_exists() {
    let clerk = emulator().await;
    let client = client(&clerk, fast_retries());
    client.create(&template("acme-reader"), &key()).await.unwrap();
    let error = client.create(&template("acme-reader"), &key()).await.unwrap_err();
    assert!(matches!(error, ClerkError::InvalidTemplate { status: 422, .. }), "{error:?}");
    assert_eq!(error.code(), Some("form_identifier_exists"));
    assert_no_keys(&error, clerk.secret_key());

    let mut out_of_range = template("globex-reader");
    out_of_range.lifetime = 10;
    let error = client.create(&out_of_range, &key()).await.unwrap_err();
    assert_eq!(error.code(), Some("form_param_value_invalid"));
    assert_eq!(error.reason(), "InvalidTemplate");
}

#[tokio::test]
async fn deleting_a_missing_template_succeeds() {
    let clerk = emulator().await;
    let client = client(&clerk, fast_retries());
    assert_eq!(client.delete("jtmpl_doesnotexist").await.unwrap(), DeleteOutcome::AlreadyAbsent);
    let created = client.create(&template("acme-reader"), &key()).await.unwrap();
    assert_eq!(client.delete(&created.id).await.unwrap(), DeleteOutcome::Deleted);
    assert_eq!(client.delete(&created.id).await.unwrap(), DeleteOutcome::AlreadyAbsent);
}

#[tokio::test]
async fn server_errors_are_retried_for_reads_updates_and_deletes() {
    let clerk = emulator().await;
    let client = client(&clerk, fast_retries());
    let created = client.create(&template("acme-reader"), &key()).await.unwrap();

    clerk.add_fault(Fault::status(503).for_path_prefix("/v1/jwt_templates").times(2)).unwrap();
    assert_eq!(client.list_templates().await.unwrap().len(), 1);
    clerk.add_fault(Fault::status(500).for_path_prefix("/v1/jwt_templates").times(2)).unwrap();
    assert_eq!(client.get(&created.id).await.unwrap().id, created.id);
    clerk.add_fault(Fault::status(502).for_path_prefix("/v1/jwt_templates").times(1)).unwrap();
    client.update(&created.id, &template("acme-reader"), &key()).await.unwrap();
    clerk.add_fault(Fault::status(504).for_path_prefix("/v1/jwt_templates").times(1)).unwrap();
    assert_eq!(client.delete(&created.id).await.unwrap(), DeleteOutcome::Deleted);
    let log = clerk.request_log();
    assert_eq!(
        log.count_status(503) + log.count_status(500) + log.count_status(502) + log.count_status(504),
        6
    );

    // Bounded: a lasting outage ends in ClerkUnavailable after `max_attempts`.
    clerk.add_fault(Fault::status(503).for_path_prefix("/v1/jwt_templates")).unwrap();
    let error = client.list_templates().await.unwrap_err();
    assert_eq!(error.reason(), "ClerkUnavailable");
    assert!(error.is_transient());
    assert_no_keys(&error, clerk.secret_key());
    assert_eq!(clerk.request_log().count_status(503), 2 + 3);
}

#[tokio::test]
async fn a_create_refused_with_a_server_error_is_looked_up_before_it_is_sent_again() {
    let clerk = emulator().await;
    let client = client(&clerk, fast_retries());
    clerk.add_fault(Fault::status(503).for_path_prefix("/v1/jwt_templates").times(1)).unwrap();
    let created = client.create(&template("acme-reader"), &key()).await.unwrap();
    assert_eq!(clerk.templates().len(), 1);
    assert_eq!(clerk.signing_key(&created.id).as_deref(), Some(SIGNING_KEY));
    let calls: Vec<(String, u16)> =
        clerk.request_log().records().into_iter().map(|record| (record.method, record.status)).collect();
    assert_eq!(calls, [("POST".to_owned(), 503), ("GET".to_owned(), 200), ("POST".to_owned(), 200)]);
}

/// A TCP proxy in front of the emulator that forwards the first POST but never delivers its
/// answer: the template is created, and the client sees the connection drop.
async fn proxy_losing_the_first_create_answer(upstream: std::net::SocketAddr) -> String {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let armed = Arc::new(AtomicBool::new(true));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let armed = Arc::clone(&armed);
            tokio::spawn(async move {
                let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let lose_answer = Arc::new(AtomicBool::new(false));
                let lose = Arc::clone(&lose_answer);
                let requests = tokio::spawn(async move {
                    let mut buffer = vec![0_u8; 64 * 1024];
                    while let Ok(read) = client_read.read(&mut buffer).await {
                        if read == 0 {
                            break;
                        }
                        if buffer[..read].starts_with(b"POST ") && armed.swap(false, Ordering::SeqCst) {
                            lose.store(true, Ordering::SeqCst);
                        }
                        if server_write.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                });
                let mut buffer = vec![0_u8; 64 * 1024];
                while let Ok(read) = server_read.read(&mut buffer).await {
                    if read == 0 || lose_answer.load(Ordering::SeqCst) {
                        break;
                    }
                    if client_write.write_all(&buffer[..read]).await.is_err() {
                        break;
                    }
                }
                requests.abort();
            });
        }
    });
    format!("http://{address}/v1")
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_found_and_not_duplicated() {
    let clerk = emulator().await;
    let api_url = proxy_losing_the_first_create_answer(clerk.local_addr()).await;
    let client =
        ClerkClients::new(fast_retries()).unwrap().get_or_create(&api_url, clerk.secret_key()).unwrap();

    let created = client.create(&template("acme-reader"), &key()).await.unwrap();
    assert_eq!(clerk.templates().len(), 1);
    assert_eq!(clerk.template_by_name("acme-reader").unwrap().id, created.id);
    assert_eq!(clerk.signing_key(&created.id).as_deref(), Some(SIGNING_KEY));
    let calls: Vec<(String, u16)> =
        clerk.request_log().records().into_iter().map(|record| (record.method, record.status)).collect();
    // The lost create, the lookup, and a PATCH making sure of the key: never a second POST.
    assert_eq!(calls, [("POST".to_owned(), 200), ("GET".to_owned(), 200), ("PATCH".to_owned(), 200)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_concurrent_calls_never_exceed_clerks_budget() {
    // Clerk's development budget (100 requests) with a 1-second window, on both sides.
    let budget = RequestBudget { requests: 100, window: Duration::from_secs(1) };
    let clerk = ClerkEmulator::start(ClerkConfig {
        request_budget: budget.requests,
        budget_window: budget.window,
        ..ClerkConfig::default()
    })
    .await
    .unwrap();
    let clients = ClerkClients::new(ClerkClientOptions { budget, ..fast_retries() }).unwrap();

    let tasks: Vec<_> = (0..300)
        .map(|i| {
            // Each tenant gets its own client, as each reconcile would: they share the limiter.
            let client = clients.get_or_create(&clerk.api_url(), clerk.secret_key()).unwrap();
            tokio::spawn(async move {
                let desired = template(&format!("tenant-{i}"));
                let created = client.create(&desired, &key()).await?;
                let mut changed = desired.clone();
                changed.lifetime = 90;
                client.update(&created.id, &changed, &AdminToken::new(ROTATED_KEY)).await
            })
        })
        .collect();
    for task in tasks {
        let updated = task.await.unwrap().unwrap();
        assert_eq!(updated.lifetime, 90);
    }

    let log = clerk.request_log();
    assert_eq!(log.count_status(429), 0, "{:?}", log.counts_by_status());
    assert_eq!(log.count_matching("POST", "/v1/jwt_templates"), 300);
    assert_eq!(log.count_matching("PATCH", "/v1/jwt_templates"), 300);
    assert_eq!(clerk.templates().len(), 300);
    assert!(clerk.templates().iter().all(|t| t.signing_key.as_deref() == Some(ROTATED_KEY)));
    assert_eq!(clients.instance_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_every_caller_until_retry_after_then_they_succeed() {
    // Clerk allows 3 requests per 2 s; the client is configured far above that, so Clerk refuses.
    let clerk = ClerkEmulator::start(ClerkConfig {
        request_budget: 3,
        budget_window: Duration::from_secs(2),
        ..ClerkConfig::default()
    })
    .await
    .unwrap();
    let clients = ClerkClients::new(ClerkClientOptions {
        budget: RequestBudget { requests: 1000, window: Duration::from_secs(1) },
        ..fast_retries()
    })
    .unwrap();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let client = clients.get_or_create(&clerk.api_url(), clerk.secret_key()).unwrap();
            tokio::spawn(async move { client.list_templates().await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let log = clerk.request_log();
    assert_eq!(log.count_status(200), 6);
    let refused = log.count_status(429);
    // Only requests already in flight when the first 429 arrived were refused: the pause held
    // back every later one until Clerk's window ended.
    assert!((1..=3).contains(&refused), "{refused} refused: {:?}", log.counts_by_status());
}

#[tokio::test]
async fn a_retry_after_beyond_the_wait_limit_fails_fast_as_rate_limited() {
    let clerk = ClerkEmulator::start(ClerkConfig {
        request_budget: 1,
        budget_window: Duration::from_secs(60),
        ..ClerkConfig::default()
    })
    .await
    .unwrap();
    let client = client(&clerk, ClerkClientOptions { max_wait: Duration::from_secs(5), ..fast_retries() });
    client.list_templates().await.unwrap();
    let error = client.list_templates().await.unwrap_err();
    assert_eq!(error.reason(), "RateLimited");
    let retry_after = error.retry_after().unwrap();
    assert!(
        retry_after > Duration::from_secs(50) && retry_after <= Duration::from_secs(60),
        "{retry_after:?}"
    );
    assert_no_keys(&error, clerk.secret_key());
    // The instance stays paused for the other callers too: they fail fast without a request.
    let error = client.get("jtmpl_any").await.unwrap_err();
    assert_eq!(error.reason(), "RateLimited");
    assert_eq!(clerk.request_log().count_status(429), 1);
}

#[tokio::test]
async fn a_call_the_operators_own_budget_holds_back_is_not_counted_as_a_request() {
    use tenant_access::adapters::request_counts::{RequestLabels, clerk_family};
    let clerk = emulator().await;
    let budget = RequestBudget { requests: 1, window: Duration::from_secs(60) };
    let client = client(&clerk, ClerkClientOptions { budget, max_wait: Duration::ZERO, ..fast_retries() });
    client.list_templates().await.unwrap();
    // The budget's one request is spent: the next call is refused before it is sent.
    let error = client.list_templates().await.unwrap_err();
    assert_eq!(error.reason(), "RateLimited");
    let counted = |outcome| clerk_family().get_or_create(&RequestLabels { call: "list", outcome }).get();
    // Each test runs in its own process (nextest), so the process-wide counter is this test's.
    assert_eq!(clerk.request_log().total(), 1);
    assert_eq!((counted("ok"), counted("RateLimited")), (1, 0), "the counter says what Clerk received");
}
