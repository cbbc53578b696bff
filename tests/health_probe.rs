//! Health probes against the in-process Tinybird emulator: each reason produced by the matching
//! Tinybird behaviour, recovery when the fault goes away, Clerk-only probes as a sample tenant,
//! and the token kept out of query strings and messages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tenant_access::adapters::health::{AuthRejection, HttpProber, ProbeOutcome, ProbePlan, ProbeReason};
use tenant_access::api::{SecretKeySelector, TenantAccessSpec, WorkspaceHealthChecks, WorkspaceSpec};
use tenant_access::core::admin_token::AdminToken;
use tenant_access::core::desired::issue_token;
use tenant_access::core::signing_workspace::{SigningWorkspace, resolve};
use tenant_access::core::validate::{ValidatedAccess, validate_tenant_access};
use tenant_access::runtime::health::{AccessKey, HealthChange, HealthConfig, HealthEvents, HealthScheduler};
use tenant_access_emulators::{Clock, Fault, TinybirdConfig, TinybirdEmulator};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const PATIENCE: Duration = Duration::from_secs(20);
const FAST: Duration = Duration::from_millis(100);

const ACME: &str = r"
workspaceRef: {name: analytics}
scopes:
  - resource: top_pages
    fixedParams: {org: acme}
  - resource: tenant_events
    fixedParams: {org: acme}
secret: {}
";

/// An emulator whose clock only moves when a test says so (rate-limit windows included).
async fn emulator() -> TinybirdEmulator {
    TinybirdEmulator::start(TinybirdConfig { clock: Clock::frozen_now(), ..TinybirdConfig::default() })
        .await
        .unwrap()
}

fn workspace_at(tinybird: &TinybirdEmulator, api_url: &str) -> SigningWorkspace {
    let spec = WorkspaceSpec {
        admin_token_secret_ref: SecretKeySelector { name: "tinybird-admin".into(), key: None },
        api_url: Some(api_url.to_owned()),
        // Unmetered: these probes are seconds apart.
        health_checks: Some(WorkspaceHealthChecks {
            max_queries_per_day: Some(100_000_000),
            max_queries_per_second: Some(1000),
            token_check_interval: None,
        }),
        ..WorkspaceSpec::default()
    };
    resolve(&spec, AdminToken::new(&tinybird.admin_token())).unwrap()
}

fn workspace(tinybird: &TinybirdEmulator) -> SigningWorkspace {
    workspace_at(tinybird, &tinybird.base_url())
}

fn access(name: &str, yaml: &str) -> ValidatedAccess {
    let spec: TenantAccessSpec = serde_saphyr::from_str(yaml).unwrap();
    validate_tenant_access("tenants", name, &spec).unwrap()
}

/// The plan of a Secret-output access, probing with the token the operator would issue.
fn issued_plan(workspace: &SigningWorkspace, access: &ValidatedAccess) -> (ProbePlan, String) {
    let token = issue_token(access, workspace, Timestamp::now()).unwrap().jwt;
    let plan = ProbePlan::for_access(access, workspace, Some(&token)).unwrap();
    (plan, token)
}

async fn probe(plan: &ProbePlan, resource: &str) -> ProbeOutcome {
    let request = plan.request_for(resource, Timestamp::now()).unwrap();
    HttpProber::new().unwrap().probe_once(&request).await
}

fn assert_secret_free(outcome: &ProbeOutcome, token: &str) {
    assert!(!outcome.message.contains(token), "token in message: {}", outcome.message);
    assert!(!outcome.message.contains("eyJ"), "token-shaped text in message: {}", outcome.message);
}

/// The next change matching `wanted`, skipping others.
async fn change_where(events: &mut HealthEvents, wanted: impl Fn(&HealthChange) -> bool) -> HealthChange {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let change = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the expected health change in time")
            .expect("the scheduler is running");
        if wanted(&change) {
            return change;
        }
    }
}

fn reason_of(change: &HealthChange, resource: &str) -> Option<ProbeReason> {
    change.endpoints.iter().find(|e| e.resource == resource).map(|e| e.reason)
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A TCP proxy in front of `upstream` that keeps the head of every request it forwards.
async fn capturing_proxy(upstream: SocketAddr) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let captured = Arc::clone(&heads);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let captured = Arc::clone(&captured);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0_u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(read) = client.read(&mut buffer).await else { return };
                    if read == 0 {
                        return;
                    }
                    head.extend_from_slice(&buffer[..read]);
                }
                captured.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                if server.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (url, heads)
}

#[tokio::test]
async fn healthy_probe_sends_the_token_only_in_the_authorization_header() {
    let tinybird = emulator().await;
    let (proxy_url, heads) = capturing_proxy(tinybird.local_addr()).await;
    let workspace = workspace_at(&tinybird, &proxy_url);
    let yaml = format!("{ACME}healthCheck:\n  params: {{pathname: /pricing}}\n");
    let (plan, token) = issued_plan(&workspace, &access("acme", &yaml));

    let outcome = probe(&plan, "top_pages").await;
    assert_eq!(outcome.reason, ProbeReason::Healthy, "{}", outcome.message);
    assert_eq!(outcome.status_code, Some(200));

    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1);
    let request_line = heads[0].lines().next().unwrap();
    assert_eq!(request_line, "GET /v0/pipes/top_pages.json?pathname=%2Fpricing HTTP/1.1");
    assert!(!request_line.contains("token"), "{request_line}");
    let authorization: Vec<&str> =
        heads[0].lines().filter(|line| line.to_ascii_lowercase().starts_with("authorization:")).collect();
    assert_eq!(authorization, [format!("authorization: Bearer {token}")]);
    // The emulator saw one authenticated pipe call on the plain path.
    let records = tinybird.request_log().records();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].path.as_str(), records[0].status), ("/v0/pipes/top_pages.json", 200));
}

#[tokio::test]
async fn missing_pipe_is_pipe_not_found_until_it_comes_back() {
    let tinybird = emulator().await;
    let (plan, token) = issued_plan(&workspace(&tinybird), &access("acme", ACME));
    let tenant_events = tinybird.pipes().into_iter().find(|p| p.name == "tenant_events").unwrap();

    assert!(tinybird.remove_pipe("tenant_events"));
    let outcome = probe(&plan, "tenant_events").await;
    assert_eq!(outcome.reason, ProbeReason::PipeNotFound);
    assert_eq!(outcome.status_code, Some(404));
    assert_eq!(outcome.message, "answered 404: The pipe 'tenant_events' does not exist");
    assert!(!outcome.healthy(Some(true)));
    assert_secret_free(&outcome, &token);

    tinybird.upsert_pipe(tenant_events).unwrap();
    assert_eq!(probe(&plan, "tenant_events").await.reason, ProbeReason::Healthy);
}

#[tokio::test]
async fn injected_errors_are_server_error_or_query_timeout_until_cleared() {
    let tinybird = emulator().await;
    let (plan, _) = issued_plan(&workspace(&tinybird), &access("acme", ACME));

    for status in [500, 503] {
        tinybird.add_fault(Fault::status(status).for_pipe("top_pages")).unwrap();
        let outcome = probe(&plan, "top_pages").await;
        assert_eq!((outcome.reason, outcome.status_code), (ProbeReason::ServerError, Some(status)));
        // Only the faulty pipe is affected.
        assert_eq!(probe(&plan, "tenant_events").await.reason, ProbeReason::Healthy);
        tinybird.clear_faults();
    }

    tinybird.add_fault(Fault::status(408).for_pipe("top_pages")).unwrap();
    let outcome = probe(&plan, "top_pages").await;
    assert_eq!(outcome.reason, ProbeReason::QueryTimeout);
    assert!(outcome.message.contains("Timeout exceeded"), "{}", outcome.message);

    tinybird.clear_faults();
    assert_eq!(probe(&plan, "top_pages").await.reason, ProbeReason::Healthy);
}

#[tokio::test]
async fn an_answer_slower_than_the_timeout_or_a_closed_port_is_unreachable() {
    let tinybird = emulator().await;
    let (mut plan, _) = issued_plan(&workspace(&tinybird), &access("acme", ACME));
    plan.timeout = Duration::from_millis(200);

    tinybird.add_fault(Fault::latency(Duration::from_secs(5)).for_pipe("top_pages").times(1)).unwrap();
    // A probe that waited for the slow answer would have seen it (healthy), not a timeout.
    let outcome = probe(&plan, "top_pages").await;
    assert_eq!(outcome.reason, ProbeReason::Unreachable, "{}", outcome.message);
    assert_eq!(outcome.status_code, None);
    // The fault was used up: the next probe is healthy.
    assert_eq!(probe(&plan, "top_pages").await.reason, ProbeReason::Healthy);

    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    plan.api_url = format!("http://{}", closed.local_addr().unwrap()).into();
    drop(closed);
    let outcome = probe(&plan, "top_pages").await;
    assert_eq!(outcome.reason, ProbeReason::Unreachable);
    assert!(outcome.message.starts_with("cannot connect"), "{}", outcome.message);
}

#[tokio::test]
async fn a_second_quick_probe_is_rate_limited_without_becoming_unhealthy() {
    let tinybird = emulator().await;
    let yaml = format!("{ACME}limits: {{rps: 1}}\n");
    let (plan, token) = issued_plan(&workspace(&tinybird), &access("acme", &yaml));

    assert_eq!(probe(&plan, "top_pages").await.reason, ProbeReason::Healthy);
    let limited = probe(&plan, "top_pages").await;
    assert_eq!(limited.reason, ProbeReason::RateLimited);
    assert_eq!(limited.status_code, Some(429));
    assert_eq!(limited.retry_after, Some(Duration::from_secs(1)));
    assert!(limited.healthy(Some(true)), "429 is not unhealthy");
    assert_secret_free(&limited, &token);

    tinybird.clock().advance(Duration::from_secs(1));
    assert_eq!(probe(&plan, "top_pages").await.reason, ProbeReason::Healthy);
}

#[tokio::test]
async fn a_token_without_the_pipe_in_its_scopes_is_scope_rejected() {
    let tinybird = emulator().await;
    let workspace = workspace(&tinybird);
    let acme = access("acme", ACME);
    // The Secret still holds a token from before tenant_events was granted.
    let narrow =
        access("acme", &ACME.replace("  - resource: tenant_events\n    fixedParams: {org: acme}\n", ""));
    let stale_token = issue_token(&narrow, &workspace, Timestamp::now()).unwrap().jwt;
    let plan = ProbePlan::for_access(&acme, &workspace, Some(&stale_token)).unwrap();

    let outcome = probe(&plan, "tenant_events").await;
    assert_eq!(outcome.reason, ProbeReason::ScopeRejected);
    assert_eq!(outcome.status_code, Some(403));
    assert_eq!(outcome.auth_rejection, None);
    assert_eq!(probe(&plan, "top_pages").await.reason, ProbeReason::Healthy);
}

#[tokio::test]
async fn a_refreshed_admin_token_is_signature_rejected_flags_a_key_check_and_recovers_when_re_signed() {
    let tinybird = emulator().await;
    let acme = access("acme", ACME);
    let (mut plan, old_token) = issued_plan(&workspace(&tinybird), &acme);
    plan.interval = FAST;
    let (scheduler, mut events) =
        HealthScheduler::start(HealthConfig::default(), Arc::new(HttpProber::new().unwrap()));
    let key = AccessKey::new("tenants", "acme");
    scheduler.register(key.clone(), plan);
    change_where(&mut events, |c| {
        c.endpoints.len() == 2 && c.endpoints.iter().all(|e| e.reason == ProbeReason::Healthy)
    })
    .await;

    tinybird.refresh_admin_token();
    let rejected =
        change_where(&mut events, |c| reason_of(c, "top_pages") == Some(ProbeReason::SignatureRejected))
            .await;
    assert!(rejected.key_check, "a token the operator believes valid was rejected: re-check the key");
    let endpoint = rejected.endpoints.iter().find(|e| e.resource == "top_pages").unwrap();
    assert!(!endpoint.healthy);
    assert_eq!(endpoint.status_code, Some(403));
    assert!(endpoint.message.contains("Signature verification failed"), "{}", endpoint.message);
    assert!(
        !endpoint.message.contains(&old_token) && !endpoint.message.contains("eyJ"),
        "{}",
        endpoint.message
    );
    assert!(scheduler.take_key_check(&key));

    // The controller re-signs with the refreshed key: the endpoints recover.
    let (mut plan, _) = issued_plan(&workspace(&tinybird), &acme);
    plan.interval = FAST;
    scheduler.register(key.clone(), plan);
    let recovered = change_where(&mut events, |c| {
        c.endpoints.len() == 2 && c.endpoints.iter().all(|e| e.healthy && e.reason == ProbeReason::Healthy)
    })
    .await;
    assert!(!recovered.key_check);
    assert_eq!(
        scheduler.endpoints(&key).unwrap().iter().map(|e| e.to_status().reason).collect::<Vec<_>>(),
        ["Healthy", "Healthy"]
    );
    scheduler.shutdown().await;
}

#[tokio::test]
async fn the_scheduler_reports_only_flips_and_recovery_from_a_server_error() {
    let tinybird = emulator().await;
    let (mut plan, _) = issued_plan(&workspace(&tinybird), &access("acme", ACME));
    plan.interval = FAST;
    plan.endpoints.truncate(1);
    let (scheduler, mut events) =
        HealthScheduler::start(HealthConfig::default(), Arc::new(HttpProber::new().unwrap()));
    let key = AccessKey::new("tenants", "acme");
    scheduler.register(key.clone(), plan);
    let probes = || tinybird.request_log().count_matching("GET", "/v0/pipes/top_pages.json");

    let first = change_where(&mut events, |change| !change.described).await;
    assert_eq!(reason_of(&first, "top_pages"), Some(ProbeReason::Healthy));

    tinybird.add_fault(Fault::status(503).for_pipe("top_pages")).unwrap();
    let failing = change_where(&mut events, |change| !change.described).await;
    assert_eq!(reason_of(&failing, "top_pages"), Some(ProbeReason::ServerError));
    assert!(!failing.endpoints[0].healthy);
    let failed_at = probes();
    wait_until("three more failing probes", || probes() >= failed_at + 3).await;
    assert_eq!(events.try_recv(), None, "no change while it keeps failing");

    tinybird.clear_faults();
    let recovered = change_where(&mut events, |change| !change.described).await;
    assert_eq!(reason_of(&recovered, "top_pages"), Some(ProbeReason::Healthy));
    let recovered_at = probes();
    wait_until("three more healthy probes", || probes() >= recovered_at + 3).await;
    assert_eq!(events.try_recv(), None, "no change while it stays healthy");

    let mut up = Vec::new();
    scheduler.endpoint_up(|key, resource, healthy| {
        up.push((key.namespace.to_string(), key.name.to_string(), resource.to_owned(), healthy));
    });
    assert_eq!(up, vec![("tenants".to_owned(), "acme".to_owned(), "top_pages".to_owned(), true)]);
    assert!(scheduler.metrics().probes(ProbeReason::ServerError) >= 4);
    assert!(scheduler.metrics().probes(ProbeReason::Healthy) >= 4);
    let latency = scheduler.metrics().latency_by_reason();
    assert!(latency.iter().map(|(_, histogram)| histogram.count).sum::<u64>() >= 8);
    scheduler.shutdown().await;
}

const CLERK_ONLY: &str = r#"
workspaceRef: {name: analytics}
scopes:
  - resource: top_pages
    fixedParams: {org: "{{org.slug}}"}
  - resource: tenant_events
    fixedParams: {org: "{{org.slug}}", user: "{{user.id}}"}
clerkTemplate: {}
healthCheck:
  sampleParams: {org: globex}
"#;

#[tokio::test]
async fn a_clerk_only_access_is_probed_as_the_sample_tenant() {
    let tinybird = emulator().await;
    let workspace = workspace(&tinybird);
    let mut plan = ProbePlan::for_access(&access("acme-clerk", CLERK_ONLY), &workspace, None).unwrap();
    plan.interval = FAST;

    // The probe token reads only the sample tenant's rows, whatever the query asks for.
    let request = plan.request_for("top_pages", Timestamp::now()).unwrap();
    let answer: serde_json::Value = reqwest::Client::new()
        .get(request.url())
        .query(&[("org", "acme")])
        .bearer_auth(request.bearer_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = answer["data"].as_array().unwrap();
    assert!(!rows.is_empty(), "{answer}");
    assert!(rows.iter().all(|row| row["org"] == "globex"), "{answer}");

    // Through the scheduler: top_pages is healthy, tenant_events is skipped (no sample user),
    // never requested, and not a failure.
    let (scheduler, mut events) =
        HealthScheduler::start(HealthConfig::default(), Arc::new(HttpProber::new().unwrap()));
    let key = AccessKey::new("tenants", "acme-clerk");
    scheduler.register(key.clone(), plan);
    let change = change_where(&mut events, |c| reason_of(c, "top_pages") == Some(ProbeReason::Healthy)).await;
    let skipped = change.endpoints.iter().find(|e| e.resource == "tenant_events").unwrap();
    assert_eq!(skipped.reason, ProbeReason::NoSampleParams);
    assert!(skipped.healthy);
    assert!(skipped.message.contains("sampleParams.user"), "{}", skipped.message);
    wait_until("a few probes", || {
        tinybird.request_log().count_matching("GET", "/v0/pipes/top_pages.json") >= 4
    })
    .await;
    assert_eq!(tinybird.request_log().count_matching("GET", "/v0/pipes/tenant_events"), 0);
    assert_eq!(tinybird.request_log().count_status(403), 0);
    scheduler.shutdown().await;
}

#[tokio::test]
async fn an_expired_issued_token_is_signature_rejected_without_a_key_check() {
    let tinybird = emulator().await;
    let workspace = workspace(&tinybird);
    let acme = access("acme", ACME);
    let (mut plan, token) = issued_plan(&workspace, &acme);
    plan.interval = FAST;
    // Past the token's expiry on Tinybird's clock (the operator's clock agrees only later).
    tinybird.clock().advance(Duration::from_secs(2 * 3600));

    let outcome = probe(&plan, "top_pages").await;
    assert_eq!(outcome.reason, ProbeReason::SignatureRejected);
    assert_eq!(outcome.auth_rejection, Some(AuthRejection::Expired));
    assert_secret_free(&outcome, &token);

    let (scheduler, mut events) =
        HealthScheduler::start(HealthConfig::default(), Arc::new(HttpProber::new().unwrap()));
    scheduler.register(AccessKey::new("tenants", "acme"), plan);
    let change =
        change_where(&mut events, |c| reason_of(c, "top_pages") == Some(ProbeReason::SignatureRejected))
            .await;
    assert!(!change.key_check, "an expired token is not a key problem");
    scheduler.shutdown().await;
}
