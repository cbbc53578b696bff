//! The scheduler against a scripted prober, with short real intervals. Assertions wait on
//! conditions (events, call counts), never on a sleep.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use jiff::Timestamp;

use super::dispatch::TOKEN_PICKS;
use super::*;
use crate::adapters::health::IssuedToken;
use crate::adapters::health::classify::AuthRejection;
use crate::adapters::health::plan::{PlannedEndpoint, ProbeCredential};
use crate::adapters::health::probe::{ProbePurpose, ProbeRequest};
use crate::core::admin_token::AdminToken;
use crate::core::signing_workspace::HealthBudget;
use crate::runtime::health::probe_timing::RECHECK_SPREAD;

const PATIENCE: Duration = Duration::from_secs(10);

fn outcome(reason: ProbeReason) -> ProbeOutcome {
    let status = match reason {
        ProbeReason::Healthy => Some(200),
        ProbeReason::RateLimited => Some(429),
        ProbeReason::ServerError => Some(503),
        ProbeReason::SignatureRejected => Some(403),
        _ => None,
    };
    ProbeOutcome {
        reason,
        status_code: status,
        message: format!("scripted {reason}"),
        retry_after: None,
        auth_rejection: None,
        rate_limit: None,
        description: None,
    }
}

#[derive(Default)]
struct Script {
    /// Outcomes per resource, in order; then Healthy.
    outcomes: Mutex<HashMap<String, VecDeque<ProbeOutcome>>>,
    /// The outcome for every probe with this token (before the per-resource script).
    by_token: Mutex<HashMap<String, ProbeOutcome>>,
    /// Every billed call (a pipe's probe or a token's check): resource, token, when.
    calls: Mutex<Vec<(String, String, Instant)>>,
    /// Pipes removed: a billed probe and an existence check of them answer 404.
    gone: Mutex<HashSet<String>>,
    /// The answer of every existence check of a pipe (else 200, or 404 when it is gone).
    exists_answers: Mutex<HashMap<String, ProbeOutcome>>,
    /// Every existence check: resource, token, when.
    exists_calls: Mutex<Vec<(String, String, Instant)>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    hold: Duration,
}

impl Script {
    fn with_hold(hold: Duration) -> Arc<Self> {
        Arc::new(Self { hold, ..Self::default() })
    }

    fn push(&self, resource: &str, outcomes: impl IntoIterator<Item = ProbeOutcome>) {
        self.outcomes.lock().unwrap().entry(resource.to_owned()).or_default().extend(outcomes);
    }

    fn calls_for(&self, resource: &str) -> Vec<Instant> {
        self.calls.lock().unwrap().iter().filter(|(r, _, _)| r == resource).map(|(_, _, at)| *at).collect()
    }

    fn total_calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    fn existence_checks_of(&self, resource: &str) -> Vec<Instant> {
        self.exists_calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _, _)| r == resource)
            .map(|(_, _, at)| *at)
            .collect()
    }

    /// The pipe is removed (`true`) or restored (`false`).
    fn set_gone(&self, resource: &str, gone: bool) {
        let mut set = self.gone.lock().unwrap();
        if gone {
            set.insert(resource.to_owned());
        } else {
            set.remove(resource);
        }
    }

    /// The answer of an existence check of `resource`: 404 when it is gone, else the scripted
    /// one or 200.
    fn existence_answer(&self, resource: &str) -> ProbeOutcome {
        if self.gone.lock().unwrap().contains(resource) {
            return not_found(resource);
        }
        self.exists_answers.lock().unwrap().get(resource).cloned().unwrap_or_else(ProbeOutcome::pipe_exists)
    }
}

fn not_found(resource: &str) -> ProbeOutcome {
    ProbeOutcome {
        status_code: Some(404),
        message: format!("answered 404: The pipe '{resource}' does not exist"),
        ..outcome(ProbeReason::PipeNotFound)
    }
}

struct ScriptedProber(Arc<Script>);

impl EndpointProber for ScriptedProber {
    fn probe(&self, request: ProbeRequest) -> BoxFuture<'static, ProbeOutcome> {
        let script = Arc::clone(&self.0);
        Box::pin(async move {
            if request.purpose() == ProbePurpose::Existence {
                script.exists_calls.lock().unwrap().push((
                    request.resource().to_owned(),
                    request.bearer_token().to_owned(),
                    Instant::now(),
                ));
                return script.existence_answer(request.resource());
            }
            let now_in_flight = script.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            script.max_in_flight.fetch_max(now_in_flight, Ordering::SeqCst);
            script.calls.lock().unwrap().push((
                request.resource().to_owned(),
                request.bearer_token().to_owned(),
                Instant::now(),
            ));
            if !script.hold.is_zero() {
                tokio::time::sleep(script.hold).await;
            }
            let by_token = script.by_token.lock().unwrap().get(request.bearer_token()).cloned();
            let gone = script
                .gone
                .lock()
                .unwrap()
                .contains(request.resource())
                .then(|| not_found(request.resource()));
            let next = by_token.or(gone).or_else(|| {
                script.outcomes.lock().unwrap().get_mut(request.resource()).and_then(VecDeque::pop_front)
            });
            script.in_flight.fetch_sub(1, Ordering::SeqCst);
            next.unwrap_or_else(|| outcome(ProbeReason::Healthy))
        })
    }
}

fn start(script: &Arc<Script>, concurrency: usize) -> (HealthScheduler, HealthEvents) {
    HealthScheduler::start(
        HealthConfig { concurrency, clock: Clock::following_tokio(Timestamp::now()) },
        Arc::new(ScriptedProber(Arc::clone(script))),
    )
}

fn plan(resources: &[&str], interval: Duration, token: &str) -> ProbePlan {
    ProbePlan {
        api_url: "http://tinybird.invalid".into(),
        workspace_id: token.into(),
        interval,
        timeout: Duration::from_secs(1),
        budget: generous(),
        token_rps: None,
        params: BTreeMap::new(),
        endpoints: resources
            .iter()
            .map(|resource| PlannedEndpoint { resource: (*resource).to_owned(), skipped: None })
            .collect(),
        credential: ProbeCredential::issued(token),
        admin_token: Arc::new(AdminToken::new(ADMIN_TOKEN)),
    }
}

/// The admin token of the test plans.
const ADMIN_TOKEN: &str = "p.admin-token";

async fn next_change(events: &mut HealthEvents) -> HealthChange {
    tokio::time::timeout(PATIENCE, events.recv())
        .await
        .expect("a health change in time")
        .expect("the scheduler is running")
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn verdicts(change: &HealthChange) -> Vec<(String, bool, ProbeReason)> {
    change.endpoints.iter().map(|e| (e.resource.clone(), e.healthy, e.reason)).collect()
}

#[tokio::test(start_paused = true)]
async fn reports_only_when_health_flips() {
    let script = Script::with_hold(Duration::ZERO);
    script.push(
        "top_pages",
        [
            outcome(ProbeReason::Healthy),
            outcome(ProbeReason::Healthy),
            outcome(ProbeReason::ServerError),
            outcome(ProbeReason::ServerError),
            outcome(ProbeReason::ServerError),
        ],
    );
    let (scheduler, mut events) = start(&script, 8);
    let key = AccessKey::new("tenants", "acme");
    scheduler.register(key.clone(), plan(&["top_pages"], Duration::from_millis(20), "token-1"));

    let first = next_change(&mut events).await;
    assert_eq!(first.key, key);
    assert_eq!(verdicts(&first), [("top_pages".into(), true, ProbeReason::Healthy)]);
    let second = next_change(&mut events).await;
    assert_eq!(verdicts(&second), [("top_pages".into(), false, ProbeReason::ServerError)]);
    assert_eq!(second.endpoints[0].status_code, Some(503));
    let third = next_change(&mut events).await;
    assert_eq!(verdicts(&third), [("top_pages".into(), true, ProbeReason::Healthy)]);
    assert!(script.calls_for("top_pages").len() >= 6, "two healthy, three failing, one recovery");

    // Many more healthy probes: no more changes.
    wait_until("ten more probes", || script.calls_for("top_pages").len() >= 16).await;
    assert_eq!(events.try_recv(), None);
    assert_eq!(scheduler.endpoints(&key).map(|e| e[0].reason), Some(ProbeReason::Healthy));
    assert!(!third.key_check);
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn first_probes_are_spread_over_the_interval() {
    let script = Script::with_hold(Duration::ZERO);
    let (scheduler, _events) = start(&script, 64);
    let interval = Duration::from_secs(1);
    let resources: Vec<String> = (0..20).map(|i| format!("pipe_{i}")).collect();
    let names: Vec<&str> = resources.iter().map(String::as_str).collect();
    let registered_at = Instant::now();
    scheduler.register(AccessKey::new("tenants", "many"), plan(&names, interval, "token"));
    wait_until("every first probe", || names.iter().all(|r| !script.calls_for(r).is_empty())).await;

    let firsts: Vec<Duration> =
        names.iter().map(|r| script.calls_for(r)[0].duration_since(registered_at)).collect();
    let earliest = firsts.iter().min().copied().unwrap_or_default();
    let latest = firsts.iter().max().copied().unwrap_or_default();
    assert!(latest - earliest >= interval / 4, "first probes bunched together: {firsts:?}");
    // Due times are served on the dispatch tick.
    assert!(latest <= interval + DISPATCH_TICK, "a first probe came after the first interval: {firsts:?}");
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_bounded_over_all_accesses() {
    let script = Script::with_hold(Duration::from_millis(15));
    let (scheduler, _events) = start(&script, 3);
    let resources: Vec<String> = (0..8).map(|i| format!("pipe_{i}")).collect();
    let names: Vec<&str> = resources.iter().map(String::as_str).collect();
    for tenant in ["acme", "globex", "initech"] {
        scheduler
            .register(AccessKey::new("tenants", tenant), plan(&names, Duration::from_millis(30), tenant));
    }
    wait_until("72 probes", || script.total_calls() >= 72).await;
    let max = script.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 3, "{max} probes in flight at once");
    assert!(max >= 2, "probes were not concurrent at all");
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn rate_limit_keeps_the_previous_health_and_waits_for_retry_after() {
    let script = Script::with_hold(Duration::ZERO);
    let retry_after = Duration::from_millis(400);
    script.push(
        "top_pages",
        [
            outcome(ProbeReason::ServerError),
            ProbeOutcome { retry_after: Some(retry_after), ..outcome(ProbeReason::RateLimited) },
        ],
    );
    let (scheduler, mut events) = start(&script, 8);
    // The token has its own limits.rps: the 429 is its own.
    let limited = ProbePlan { token_rps: Some(1), ..plan(&["top_pages"], Duration::from_millis(20), "t") };
    scheduler.register(AccessKey::new("tenants", "acme"), limited);

    assert_eq!(
        verdicts(&next_change(&mut events).await)[0],
        ("top_pages".into(), false, ProbeReason::ServerError)
    );
    // The 429 is reported (a new reason) but keeps "unhealthy": it says nothing about health.
    assert_eq!(
        verdicts(&next_change(&mut events).await)[0],
        ("top_pages".into(), false, ProbeReason::RateLimited)
    );
    assert_eq!(
        verdicts(&next_change(&mut events).await)[0],
        ("top_pages".into(), true, ProbeReason::Healthy)
    );
    let calls = script.calls_for("top_pages");
    assert!(
        calls[2].duration_since(calls[1]) >= retry_after,
        "probed again {:?} after a 429 asking for {retry_after:?}",
        calls[2].duration_since(calls[1])
    );
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn signature_rejection_of_a_token_believed_valid_requests_a_key_check() {
    let script = Script::with_hold(Duration::ZERO);
    let rejected = ProbeOutcome {
        auth_rejection: Some(AuthRejection::SignatureFailed),
        ..outcome(ProbeReason::SignatureRejected)
    };
    script.by_token.lock().unwrap().insert("old-token".into(), rejected);
    let (scheduler, mut events) = start(&script, 8);
    let key = AccessKey::new("tenants", "acme");
    scheduler.register(key.clone(), plan(&["top_pages"], Duration::from_millis(20), "old-token"));

    // The first rejection asks for the key check at once and holds the verdict (a rotation the
    // controller is re-signing for would otherwise flip the endpoint to unhealthy and back).
    let suspected = next_change(&mut events).await;
    assert!(suspected.key_check);
    assert!(suspected.endpoints.is_empty(), "no verdict yet: {:?}", verdicts(&suspected));
    // The second rejection, with the same token, is the verdict.
    let change = next_change(&mut events).await;
    assert_eq!(verdicts(&change)[0], ("top_pages".into(), false, ProbeReason::SignatureRejected));
    assert!(change.key_check);
    assert_eq!(script.calls_for("top_pages").len(), 2);
    assert!(scheduler.take_key_check(&key));
    assert!(!scheduler.take_key_check(&key), "the flag is taken once");

    // The controller re-signs with the new key: the health is kept until the next probe, which
    // comes soon and succeeds.
    scheduler.register(key.clone(), plan(&["top_pages"], Duration::from_millis(20), "new-token"));
    let recovered = next_change(&mut events).await;
    assert_eq!(verdicts(&recovered)[0], ("top_pages".into(), true, ProbeReason::Healthy));
    assert!(!recovered.key_check);
    let tokens: Vec<String> = script.calls.lock().unwrap().iter().map(|(_, t, _)| t.clone()).collect();
    assert_eq!(tokens.last().map(String::as_str), Some("new-token"));
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_signature_rejection_during_a_re_sign_never_flips_the_endpoint() {
    let script = Script::with_hold(Duration::ZERO);
    let (scheduler, mut events) = start(&script, 8);
    // A name whose confirming re-probe comes at least 300 ms after the rejection, so that the
    // re-signed token is registered before it (as the controller does within milliseconds).
    let name = (0..)
        .map(|i| format!("acme-{i}"))
        .find(|name| jitter(&format!("tenants/{name}/top_pages/suspect")) > 0.3)
        .unwrap();
    let key = AccessKey::new("tenants", &name);
    let interval = Duration::from_secs(1);
    scheduler.register(key.clone(), plan(&["top_pages"], interval, "old-token"));
    let first = next_change(&mut events).await;
    assert_eq!(verdicts(&first)[0], ("top_pages".into(), true, ProbeReason::Healthy));

    // The key rotated at Tinybird: the same token is now rejected.
    let rejected = ProbeOutcome {
        auth_rejection: Some(AuthRejection::SignatureFailed),
        ..outcome(ProbeReason::SignatureRejected)
    };
    script.by_token.lock().unwrap().insert("old-token".into(), rejected);
    let suspected = next_change(&mut events).await;
    assert!(suspected.key_check);
    assert_eq!(verdicts(&suspected)[0], ("top_pages".into(), true, ProbeReason::Healthy), "held");

    // The controller re-signs: the next probe uses the new token, and nothing ever flipped.
    scheduler.register(key.clone(), plan(&["top_pages"], interval, "new-token"));
    wait_until("the re-signed token's probe", || scheduler.metrics().probes(ProbeReason::Healthy) >= 2).await;
    assert!(events.try_recv().is_none(), "no flip was reported");
    assert_eq!(scheduler.endpoints(&key).unwrap()[0].reason, ProbeReason::Healthy);
    let tokens: Vec<String> = script.calls.lock().unwrap().iter().map(|(_, t, _)| t.clone()).collect();
    // The pipe's probe and the new token's own check may both be due at once: one or two probes
    // with the new token, never the old one again.
    assert_eq!(tokens[..2], ["old-token", "old-token"], "{tokens:?}");
    assert!(!tokens[2..].is_empty() && tokens[2..].iter().all(|t| t == "new-token"), "{tokens:?}");
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn expired_tokens_do_not_request_a_key_check() {
    let script = Script::with_hold(Duration::ZERO);
    let expired_answer = ProbeOutcome {
        auth_rejection: Some(AuthRejection::Expired),
        ..outcome(ProbeReason::SignatureRejected)
    };
    let bad_signature = ProbeOutcome {
        auth_rejection: Some(AuthRejection::SignatureFailed),
        ..outcome(ProbeReason::SignatureRejected)
    };
    script.push("a", std::iter::repeat_n(expired_answer, 1000));
    script.push("b", std::iter::repeat_n(bad_signature, 1000));
    let (scheduler, mut events) = start(&script, 8);

    // Tinybird says "expired": not a key problem.
    scheduler.register(AccessKey::new("tenants", "a"), plan(&["a"], Duration::from_millis(20), "t"));
    let change = next_change(&mut events).await;
    assert_eq!(change.endpoints[0].reason, ProbeReason::SignatureRejected);
    assert!(!change.key_check);

    // The operator knows its token expired: whatever Tinybird says, the key is not suspect.
    let mut expired = plan(&["b"], Duration::from_millis(20), "t");
    expired.credential =
        ProbeCredential::Issued { token: IssuedToken::new("t"), expires_at: Some(Timestamp::UNIX_EPOCH) };
    scheduler.register(AccessKey::new("tenants", "b"), expired);
    let change = next_change(&mut events).await;
    assert_eq!(&*change.key.name, "b");
    assert!(!change.key_check);
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn skipped_endpoints_are_reported_at_once_and_never_probed() {
    let script = Script::with_hold(Duration::ZERO);
    let (scheduler, mut events) = start(&script, 8);
    let key = AccessKey::new("tenants", "clerk-only");
    let mut with_skip = plan(&["top_pages", "tenant_events"], Duration::from_millis(20), "t");
    with_skip.endpoints[1].skipped = Some("not probed: no sample".into());
    scheduler.register(key.clone(), with_skip);

    let first = next_change(&mut events).await;
    assert_eq!(verdicts(&first), [("tenant_events".into(), true, ProbeReason::NoSampleParams)]);
    let second = next_change(&mut events).await;
    assert_eq!(
        verdicts(&second),
        [
            ("top_pages".into(), true, ProbeReason::Healthy),
            ("tenant_events".into(), true, ProbeReason::NoSampleParams)
        ]
    );
    wait_until("a few probes", || script.calls_for("top_pages").len() >= 5).await;
    assert!(script.calls_for("tenant_events").is_empty());
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn unregistered_accesses_are_no_longer_probed_or_reported() {
    let script = Script::with_hold(Duration::ZERO);
    let (scheduler, mut events) = start(&script, 8);
    let gone = AccessKey::new("tenants", "gone");
    scheduler.register(gone.clone(), plan(&["gone_pipe"], Duration::from_millis(20), "t"));
    next_change(&mut events).await;
    assert!(scheduler.endpoints(&gone).is_some());
    scheduler.unregister(&gone);
    assert_eq!(scheduler.endpoints(&gone), None);
    let calls_at_unregister = script.calls_for("gone_pipe").len();

    // Another access probes many times over: the unregistered one stays silent.
    scheduler
        .register(AccessKey::new("tenants", "stays"), plan(&["stays_pipe"], Duration::from_millis(20), "t"));
    assert_eq!(&*next_change(&mut events).await.key.name, "stays");
    wait_until("ten probes of the other access", || script.calls_for("stays_pipe").len() >= 10).await;
    assert!(script.calls_for("gone_pipe").len() <= calls_at_unregister + 1, "at most the probe in flight");
    assert_eq!(scheduler.endpoints(&gone), None);
    let mut up = Vec::new();
    scheduler.endpoint_up(|key, resource, healthy| up.push((key.clone(), resource.to_owned(), healthy)));
    assert_eq!(up, vec![(AccessKey::new("tenants", "stays"), "stays_pipe".to_owned(), true)]);
    assert_eq!(events.try_recv(), None);
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn re_registering_the_same_plan_changes_nothing_and_shutdown_ends_the_events() {
    let script = Script::with_hold(Duration::ZERO);
    let (scheduler, mut events) = start(&script, 8);
    let key = AccessKey::new("tenants", "acme");
    scheduler.register(key.clone(), plan(&["top_pages"], Duration::from_millis(20), "t"));
    next_change(&mut events).await;
    for _ in 0..10 {
        scheduler.register(key.clone(), plan(&["top_pages"], Duration::from_millis(20), "t"));
    }
    wait_until("more probes", || script.calls_for("top_pages").len() >= 5).await;
    assert_eq!(events.try_recv(), None);
    let mut up = Vec::new();
    scheduler.endpoint_up(|_, resource, healthy| up.push((resource.to_owned(), healthy)));
    assert_eq!(up, vec![("top_pages".to_owned(), true)]);
    assert!(scheduler.metrics().probes(ProbeReason::Healthy) >= 5);

    scheduler.shutdown().await;
    assert_eq!(tokio::time::timeout(PATIENCE, events.recv()).await.expect("events end"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_access_never_reads_as_unregistered_while_it_is_registered_again() {
    let script = Script::with_hold(Duration::ZERO);
    let (scheduler, mut events) = start(&script, 8);
    let key = AccessKey::new("tenants", "acme");
    let hourly = |token: &str| plan(&["top_pages"], Duration::from_secs(3600), token);
    // A first report (the first probe is due within the interval: make that now), then hourly.
    scheduler.register(key.clone(), plan(&["top_pages"], Duration::from_millis(1), "t"));
    next_change(&mut events).await;
    scheduler.register(key.clone(), hourly("t"));

    // Every reconcile registers its plan again (unchanged, mostly) and then reads the health:
    // the read must never fall into the re-registration.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (scheduler, key, stop) = (scheduler.clone(), key.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut reads = 0_u64;
            while !stop.load(Ordering::SeqCst) {
                assert!(scheduler.endpoints(&key).is_some(), "read as unregistered after {reads} reads");
                reads += 1;
            }
            reads
        })
    };
    for round in 0..20_000 {
        // Alternate between the same plan and another token, as renewals do.
        let token = if round % 100 == 0 { "t2" } else { "t" };
        scheduler.register(key.clone(), hourly(token));
        if round % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let reads = reader.join().expect("the reader saw the access registered throughout");
    assert!(reads > 0);
    scheduler.shutdown().await;
}

/// Waits, on paused time, until `condition` holds (tokio advances the clock whenever every task
/// is idle, so minutes of probing pass at once).
async fn simulate_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(24 * 3600);
    while !condition() {
        assert!(Instant::now() < deadline, "never happened (a simulated day): {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn one_access_with_hundreds_of_slow_failing_endpoints_does_not_delay_another() {
    // Every probe takes 2 s (the interval is 5 s): the noisy access alone could keep the eight
    // shared places busy forever.
    let script = Script::with_hold(Duration::from_secs(2));
    script.by_token.lock().unwrap().insert("noisy".into(), outcome(ProbeReason::ServerError));
    let (scheduler, _events) = start(&script, 8);
    let interval = Duration::from_secs(5);
    let pipes: Vec<String> = (0..300).map(|i| format!("missing_{i}")).collect();
    let names: Vec<&str> = pipes.iter().map(String::as_str).collect();
    scheduler.register(AccessKey::new("hostile", "noisy"), plan(&names, interval, "noisy"));
    scheduler.register(AccessKey::new("tenants", "lone"), plan(&["lone_pipe"], interval, "lone"));

    simulate_until("300 probes of the noisy access", || {
        script.calls.lock().unwrap().iter().filter(|(_, token, _)| token == "noisy").count() >= 300
    })
    .await;
    let calls = script.calls.lock().unwrap().clone();
    let lone: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, (resource, _, _))| resource == "lone_pipe")
        .map(|(i, _)| i)
        .collect();
    // 300 noisy probes at most 2 at a time take 300 s: the lone endpoint is probed every interval
    // meanwhile (about 60 times). Without a per-access bound it waits behind ~300 queued probes
    // (75 s) each time: a handful of probes at most.
    assert!(lone.len() >= 50, "the lone endpoint was probed {} times during 300 noisy probes", lone.len());
    let most_between = lone.windows(2).map(|pair| pair[1] - pair[0] - 1).max().unwrap_or(usize::MAX);
    assert!(most_between <= 10, "up to {most_between} noisy probes between two probes of the lone endpoint");
    // Neither access ever held more than its places (the lone one may have its pipe's probe
    // and its token's check in flight at once); without the bound the noisy one takes all 8.
    let max = script.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 2 * PER_ACCESS_IN_FLIGHT, "{max} probes in flight with one lone endpoint");
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_replaced_plan_drops_its_queued_probes() {
    let script = Script::with_hold(Duration::from_secs(60));
    let (scheduler, _events) = start(&script, 8);
    let key = AccessKey::new("tenants", "many");
    let pipes: Vec<String> = (0..50).map(|i| format!("pipe_{i}")).collect();
    let names: Vec<&str> = pipes.iter().map(String::as_str).collect();
    let interval = Duration::from_secs(5);
    scheduler.register(key.clone(), plan(&names, interval, "old"));
    // Simulated time: every first probe is due, and all but the first few wait for a place.
    tokio::time::sleep(interval).await;
    assert_eq!(script.total_calls(), PER_ACCESS_IN_FLIGHT);
    // Replaced: the waiting probes are dropped, never sent with the old token.
    scheduler.register(key.clone(), plan(&names, interval, "new"));
    simulate_until("every pipe probed with the new token", || {
        let calls = script.calls.lock().unwrap();
        names.iter().all(|pipe| calls.iter().any(|(r, token, _)| r == pipe && token == "new"))
    })
    .await;
    let old = script.calls.lock().unwrap().iter().filter(|(_, token, _)| token == "old").count();
    assert_eq!(old, PER_ACCESS_IN_FLIGHT, "probes sent with the replaced plan's token");
    scheduler.shutdown().await;
}

#[tokio::test]
async fn a_resumed_access_keeps_the_reported_health_until_a_probe_says_otherwise() {
    let script = Script::with_hold(Duration::ZERO);
    // Still unhealthy at the first probe after the restart, healthy from the second.
    script.push("broken", [outcome(ProbeReason::ServerError)]);
    let (scheduler, mut events) = start(&script, 8);
    let key = AccessKey::new("tenants", "restarted");
    let mut with_skip = plan(&["top_pages", "broken", "tenant_events"], Duration::from_millis(20), "t");
    with_skip.endpoints[2].skipped = Some("not probed: no sample".into());
    let failing = EndpointHealth::from_outcome("broken", &outcome(ProbeReason::ServerError), Some(false));
    let last_reported = vec![
        EndpointHealth::from_outcome("top_pages", &outcome(ProbeReason::Healthy), None),
        failing.clone(),
        EndpointHealth::skipped("tenant_events", "not probed: no sample"),
    ];
    scheduler.resume(key.clone(), with_skip, last_reported.clone());

    // The status's verdicts, at once and without a change to report.
    wait_until("the access registered", || scheduler.endpoints(&key).is_some()).await;
    let reported = scheduler.endpoints(&key).unwrap_or_default();
    assert!(same_health(&reported, &last_reported), "{reported:?}");
    // The same verdicts from the first probes: still nothing to report.
    wait_until("a first probe of each", || {
        !script.calls_for("top_pages").is_empty() && !script.calls_for("broken").is_empty()
    })
    .await;
    // Then `broken` recovers: that is news, with the kept verdict of `top_pages` beside it.
    let change = next_change(&mut events).await;
    assert_eq!(
        verdicts(&change),
        [
            ("top_pages".into(), true, ProbeReason::Healthy),
            ("broken".into(), true, ProbeReason::Healthy),
            ("tenant_events".into(), true, ProbeReason::NoSampleParams)
        ]
    );

    // An access already registered keeps its own verdicts over a stale status.
    scheduler.resume(
        key.clone(),
        plan(&["top_pages", "broken"], Duration::from_millis(20), "t"),
        vec![failing],
    );
    let change = next_change(&mut events).await;
    assert_eq!(
        verdicts(&change),
        [("top_pages".into(), true, ProbeReason::Healthy), ("broken".into(), true, ProbeReason::Healthy)]
    );
    scheduler.shutdown().await;
}

/// A budget that holds nothing back (the budget's own tests set theirs).
fn generous() -> HealthBudget {
    HealthBudget {
        max_queries_per_day: 100_000_000,
        max_queries_per_second: 1000,
        token_check_interval: Duration::ZERO,
    }
}

/// A plan of the workspace `ws` that every access of these tests shares.
fn shared_plan(resources: &[&str], interval: Duration, token: &str) -> ProbePlan {
    ProbePlan { workspace_id: "ws".into(), ..plan(resources, interval, token) }
}

/// Registers `count` accesses, each granting one of `pipes` (round robin) with its own token.
fn register_many(
    scheduler: &HealthScheduler,
    count: usize,
    pipes: &[&str],
    interval: Duration,
) -> Vec<AccessKey> {
    (0..count)
        .map(|i| {
            let key = AccessKey::new("tenants", &format!("t{i}"));
            scheduler.register(
                key.clone(),
                shared_plan(&[pipes[i % pipes.len()]], interval, &format!("token-{i}")),
            );
            key
        })
        .collect()
}

fn reported(scheduler: &HealthScheduler, key: &AccessKey) -> Option<(bool, ProbeReason)> {
    scheduler.endpoints(key)?.first().map(|e| (e.healthy, e.reason))
}

#[tokio::test(start_paused = true)]
async fn a_pipe_shared_by_many_accesses_is_probed_once_per_interval() {
    const PIPES: [&str; 5] = ["p0", "p1", "p2", "p3", "p4"];
    let script = Script::with_hold(Duration::ZERO);
    let (scheduler, _events) = start(&script, 8);
    let interval = Duration::from_secs(60);
    let keys = register_many(&scheduler, 300, &PIPES, interval);
    // Each new token is verified once, soon after it is written.
    simulate_until("every access reports", || keys.iter().all(|key| reported(&scheduler, key).is_some()))
        .await;
    simulate_until("every new token verified", || script.total_calls() >= 300).await;
    tokio::time::sleep(interval).await;

    let before = script.total_calls();
    tokio::time::sleep(interval * 10).await;
    let spent = script.total_calls() - before;
    // One probe per pipe and interval (the window may hold an eleventh), not one per access.
    assert!(spent <= PIPES.len() * 11, "{spent} probes in 10 intervals for 5 pipes");
    assert!(spent >= PIPES.len() * 9, "{spent} probes in 10 intervals: the pipes are still probed");
    // Every token takes its turn: the pipe's probes carry different tokens.
    let calls = script.calls.lock().unwrap().split_off(before);
    let tokens: HashSet<&str> =
        calls.iter().filter(|(r, _, _)| r == "p0").map(|(_, t, _)| t.as_str()).collect();
    assert!(tokens.len() >= 9, "p0 was probed with {} distinct tokens", tokens.len());
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_pipe_level_failure_flips_every_access_granting_it_and_recovery_flips_them_back() {
    let script = Script::with_hold(Duration::ZERO);
    let (scheduler, _events) = start(&script, 8);
    let interval = Duration::from_secs(60);
    let keys = register_many(&scheduler, 40, &["gone", "kept"], interval);
    simulate_until("every access healthy", || {
        keys.iter().all(|key| reported(&scheduler, key) == Some((true, ProbeReason::Healthy)))
    })
    .await;
    simulate_until("every new token verified", || script.total_calls() >= 40).await;

    // The pipe is removed: its next probe, with any one token, flips all twenty.
    let removed_at = Instant::now();
    script.push("gone", [outcome(ProbeReason::PipeNotFound)]);
    let granting: Vec<&AccessKey> = keys.iter().step_by(2).collect();
    simulate_until("every access granting the pipe is unhealthy", || {
        granting.iter().all(|key| reported(&scheduler, key) == Some((false, ProbeReason::PipeNotFound)))
    })
    .await;
    assert!(Instant::now().duration_since(removed_at) <= interval + DISPATCH_TICK * 2, "within one interval");
    assert_eq!(
        script.calls_for("gone").iter().filter(|at| **at >= removed_at).count(),
        1,
        "one probe told them all"
    );
    assert!(
        keys.iter()
            .skip(1)
            .step_by(2)
            .all(|key| reported(&scheduler, key) == Some((true, ProbeReason::Healthy)))
    );
    // Back: the next probe flips them all back.
    simulate_until("every access recovered", || {
        granting.iter().all(|key| reported(&scheduler, key) == Some((true, ProbeReason::Healthy)))
    })
    .await;
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_fault_of_one_token_stays_with_its_access() {
    let script = Script::with_hold(Duration::ZERO);
    script.by_token.lock().unwrap().insert("token-3".into(), outcome(ProbeReason::ScopeRejected));
    let (scheduler, _events) = start(&script, 8);
    let interval = Duration::from_secs(60);
    let keys = register_many(&scheduler, 10, &["shared"], interval);
    simulate_until("the bad token reported", || {
        reported(&scheduler, &keys[3]) == Some((false, ProbeReason::ScopeRejected))
    })
    .await;
    // Many pipe probes later (with every token in turn), the fault is still its own.
    tokio::time::sleep(interval * 20).await;
    assert_eq!(reported(&scheduler, &keys[3]), Some((false, ProbeReason::ScopeRejected)));
    for (i, key) in keys.iter().enumerate().filter(|(i, _)| *i != 3) {
        assert_eq!(reported(&scheduler, key), Some((true, ProbeReason::Healthy)), "t{i}");
    }
    // A new token for it is verified within seconds, and clears the fault.
    let written = Instant::now();
    scheduler.register(keys[3].clone(), shared_plan(&["shared"], interval, "token-3-renewed"));
    simulate_until("the new token reported healthy", || {
        reported(&scheduler, &keys[3]) == Some((true, ProbeReason::Healthy))
    })
    .await;
    assert!(Instant::now().duration_since(written) <= RECHECK_SPREAD + DISPATCH_TICK * 2);
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_token_is_verified_once_and_then_only_at_the_token_interval() {
    let script = Script::with_hold(Duration::ZERO);
    let (scheduler, _events) = start(&script, 8);
    let interval = Duration::from_secs(60);
    let token_interval = Duration::from_secs(3600);
    // Two pipes shared with many others: the new token's turn in their probes is rare.
    let _others = register_many(&scheduler, 50, &["a"], interval);
    let key = AccessKey::new("tenants", "new");
    let with_token = |token: &str| ProbePlan {
        budget: HealthBudget { token_check_interval: token_interval, ..generous() },
        ..shared_plan(&["a"], interval, token)
    };
    scheduler.register(key.clone(), with_token("first"));
    let by = |token: &'static str| {
        let script = Arc::clone(&script);
        move || script.calls.lock().unwrap().iter().filter(|(_, t, _)| t == token).count()
    };
    let first = by("first");
    simulate_until("the new token verified", || first() >= 1).await;
    let verified_at = Instant::now();
    // Re-registering the same token verifies nothing again.
    scheduler.register(key.clone(), with_token("first"));
    tokio::time::sleep(interval * 5).await;
    assert!(first() <= 2, "{} probes with the token in 5 intervals (one is its turn in the pipe's)", first());
    // A renewal is verified within seconds.
    scheduler.register(key.clone(), with_token("second"));
    let second = by("second");
    let renewed = Instant::now();
    simulate_until("the renewed token verified", || second() >= 1).await;
    assert!(Instant::now().duration_since(renewed) <= RECHECK_SPREAD + DISPATCH_TICK * 2);
    let _ = verified_at;
    scheduler.shutdown().await;
}

/// The token checks of a workspace's tokens (`{workspace}-{wave}-{i}`), in the order sent.
fn token_checks(script: &Script, workspace: &str) -> Vec<String> {
    let prefix = format!("{workspace}-");
    let calls = script.calls.lock().unwrap();
    calls
        .iter()
        .filter(|(_, token, _)| token.starts_with(&prefix))
        .map(|(_, token, _)| token.clone())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_backlog_of_new_tokens_goes_most_overdue_first_without_starving_another_workspace() {
    // A key rotation's backlog: many more new tokens than one scan picks, in two waves, held
    // back by a budget of 4 queries a second; another workspace has a few new tokens of its own.
    let script = Script::with_hold(Duration::ZERO);
    let (scheduler, _events) = start(&script, 8);
    let interval = Duration::from_secs(24 * 3600);
    let budget = HealthBudget { max_queries_per_second: 4, ..generous() };
    let register = |workspace: &str, wave: usize, count: usize| {
        for i in 0..count {
            let token = format!("{workspace}-{wave}-{i}");
            let plan = ProbePlan { workspace_id: workspace.into(), budget, ..plan(&["p"], interval, &token) };
            scheduler.register(AccessKey::new(workspace, &format!("t{wave}-{i}")), plan);
        }
    };
    const WAVE: usize = 3 * TOKEN_PICKS;
    register("a", 1, WAVE);
    // The first wave is due within RECHECK_SPREAD; the second comes after all of it is due and
    // before a quarter of it could be checked.
    tokio::time::sleep(RECHECK_SPREAD * 2).await;
    register("a", 2, WAVE);
    register("b", 1, 10);
    let b_registered = Instant::now();
    simulate_until("the other workspace's tokens checked", || token_checks(&script, "b").len() >= 10).await;
    let b_took = Instant::now().duration_since(b_registered);
    let a_meanwhile = token_checks(&script, "a").len();
    simulate_until("every token of the backlog checked", || token_checks(&script, "a").len() >= 2 * WAVE)
        .await;

    // Each token once; the whole first wave before any of the second.
    let a = token_checks(&script, "a");
    assert_eq!(a.iter().collect::<HashSet<_>>().len(), 2 * WAVE, "each token checked once");
    let first_of_second = a.iter().position(|token| token.starts_with("a-2-")).unwrap();
    assert_eq!(first_of_second, WAVE, "the second wave went before the first was done: {a:?}");
    // The other workspace went at its own pace (ten slots and the spread), not after the backlog.
    assert!(a_meanwhile < 2 * WAVE, "the other workspace waited for the whole backlog");
    assert!(b_took <= RECHECK_SPREAD + budget.spacing(DISPATCH_TICK) * 12, "{b_took:?} for 10 checks at 4/s");
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_plan_rate_limit_holds_every_probe_to_the_workspace_and_flips_nothing() {
    let script = Script::with_hold(Duration::ZERO);
    let (scheduler, mut events) = start(&script, 8);
    let interval = Duration::from_secs(10);
    let keys = register_many(&scheduler, 20, &["p0", "p1", "p2", "p3"], interval);
    simulate_until("every access healthy", || {
        keys.iter().all(|key| reported(&scheduler, key) == Some((true, ProbeReason::Healthy)))
    })
    .await;
    simulate_until("every new token verified", || script.total_calls() >= 20).await;
    while events.try_recv().is_some() {}

    // The plan's ceiling (no token has limits.rps): the next probe is refused for 5 minutes.
    let retry_after = Duration::from_secs(300);
    let limited = ProbeOutcome {
        retry_after: Some(retry_after),
        rate_limit: Some(40),
        ..outcome(ProbeReason::RateLimited)
    };
    for pipe in ["p0", "p1", "p2", "p3"] {
        script.push(pipe, [limited.clone()]);
    }
    let before = script.total_calls();
    simulate_until("a 429", || script.total_calls() > before).await;
    let refused_at = Instant::now();
    let after_429 = script.total_calls();
    tokio::time::sleep(retry_after - Duration::from_secs(1)).await;
    assert_eq!(script.total_calls(), after_429, "no probe to the workspace before Retry-After");
    simulate_until("probes resume", || script.total_calls() > after_429).await;
    assert!(Instant::now().duration_since(refused_at) >= retry_after);
    assert!(keys.iter().all(|key| reported(&scheduler, key) == Some((true, ProbeReason::Healthy))));
    assert!(events.try_recv().is_none(), "a plan-level 429 is no health change");
    scheduler.shutdown().await;
}

/// A budget of `per_day` queries a day and one a second, tokens checked daily.
fn small_budget(per_day: u32) -> HealthBudget {
    HealthBudget {
        max_queries_per_day: per_day,
        max_queries_per_second: 1,
        token_check_interval: Duration::from_secs(24 * 3600),
    }
}

/// The most calls in any window of `width`.
fn busiest(calls: &[Instant], width: Duration) -> usize {
    let mut sorted = calls.to_vec();
    sorted.sort();
    sorted
        .iter()
        .enumerate()
        .map(|(i, start)| sorted[i..].iter().take_while(|t| **t < *start + width).count())
        .max()
        .unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn a_small_budget_is_never_exceeded_and_says_what_was_cut() {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let script = Script::with_hold(Duration::ZERO);
    let (scheduler, _events) = start(&script, 8);
    let interval = Duration::from_secs(300);
    // 300 accesses over 5 pipes at 5 minutes: 5 x 288 pipe probes + 300 token checks a day
    // wanted, against 1,000 (a Free plan's whole day; the default is 200).
    let keys: Vec<AccessKey> = (0..300)
        .map(|i| {
            let key = AccessKey::new("tenants", &format!("t{i}"));
            let plan = ProbePlan {
                budget: small_budget(1000),
                ..shared_plan(&[["p0", "p1", "p2", "p3", "p4"][i % 5]], interval, &format!("token-{i}"))
            };
            scheduler.register(key.clone(), plan);
            key
        })
        .collect();
    tokio::time::sleep(DAY * 2).await;

    let calls: Vec<Instant> = script.calls.lock().unwrap().iter().map(|(_, _, at)| *at).collect();
    assert!(busiest(&calls, DAY) <= 1000, "{} probes in one day", busiest(&calls, DAY));
    assert!(
        busiest(&calls, Duration::from_secs(1)) <= 1,
        "{} probes in one second",
        busiest(&calls, Duration::from_secs(1))
    );
    // Most of it: the planned probes take their share, new tokens the rest.
    assert!(calls.len() >= 1400, "the budget is used: {} probes in two days", calls.len());
    // Every pipe is still probed, less often than asked.
    for pipe in ["p0", "p1", "p2", "p3", "p4"] {
        let probes = script.calls_for(pipe).len();
        assert!(probes >= 200, "{pipe} probed {probes} times in two days");
    }
    assert!(keys.iter().all(|key| reported(&scheduler, key) == Some((true, ProbeReason::Healthy))));
    let budget = scheduler.budget("http://tinybird.invalid", "ws").expect("the workspace's budget use");
    assert_eq!((budget.max_queries_per_day, budget.pipes, budget.tokens), (1000, 5, 300));
    assert_eq!(budget.planned_queries_per_day, 5 * 288 + 300);
    assert!(budget.stretch > 2.0, "{budget:?}");
    let cut = budget.cut().expect("what was cut");
    assert!(cut.contains("1740 queries a day") && cut.contains("maxQueriesPerDay 1000"), "{cut}");
    assert!((budget.ratio() - 1.0).abs() < f64::EPSILON);
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_starts_paced_instead_of_bursting() {
    let script = Script::with_hold(Duration::ZERO);
    let budget = small_budget(200);
    let register = |scheduler: &HealthScheduler| {
        for i in 0..50 {
            let plan =
                ProbePlan { budget, ..shared_plan(&["p0"], Duration::from_secs(60), &format!("token-{i}")) };
            scheduler.register(AccessKey::new("tenants", &format!("t{i}")), plan);
        }
    };
    let (first, _events) = start(&script, 8);
    register(&first);
    simulate_until("a first probe", || script.total_calls() >= 1).await;
    first.shutdown().await;
    let restarted_at = Instant::now();
    let (second, _events) = start(&script, 8);
    register(&second);
    simulate_until("a probe after the restart", || script.total_calls() >= 2).await;
    let calls = script.calls.lock().unwrap().iter().map(|(_, _, at)| *at).collect::<Vec<_>>();
    // One probe per 432 s (200 a day), restart or not.
    assert!(calls[1].duration_since(restarted_at) >= budget.spacing(DISPATCH_TICK) - DISPATCH_TICK);
    assert!(calls[1].duration_since(calls[0]) >= budget.spacing(DISPATCH_TICK) - DISPATCH_TICK);
    second.shutdown().await;
}

/// `count` accesses of the workspace `ws` with `budget`, each granting one of `pipes` (round
/// robin) with its own token, at `interval`.
fn register_budgeted(
    scheduler: &HealthScheduler,
    count: usize,
    pipes: &[String],
    interval: Duration,
    budget: HealthBudget,
) -> Vec<AccessKey> {
    (0..count)
        .map(|i| {
            let key = AccessKey::new("tenants", &format!("t{i}"));
            let plan = ProbePlan {
                budget,
                ..shared_plan(&[&pipes[i % pipes.len()]], interval, &format!("token-{i}"))
            };
            scheduler.register(key.clone(), plan);
            key
        })
        .collect()
}

/// 100 pipes `p0`..`p99` at 5 minutes against 2,000 billed queries a day: they want 28,800 (plus
/// the token checks), so each pipe's billed probe comes about every 1.5 hours, and a round of
/// their first billed probes takes over an hour. The interval, budget and pipes.
fn hundred_pipes_over_budget() -> (Duration, HealthBudget, Vec<String>) {
    (Duration::from_secs(300), small_budget(2000), (0..100).map(|i| format!("p{i}")).collect())
}

#[tokio::test(start_paused = true)]
async fn a_removed_pipe_flips_every_access_within_one_interval_while_billed_probes_are_hours_apart() {
    let script = Script::with_hold(Duration::ZERO);
    let (scheduler, _events) = start(&script, 8);
    let (interval, budget, pipes) = hundred_pipes_over_budget();
    let keys = register_budgeted(&scheduler, 300, &pipes, interval, budget);
    let started = Instant::now();
    let granting: Vec<&AccessKey> = keys.iter().skip(7).step_by(100).collect();
    assert_eq!(granting.len(), 3);
    tokio::time::sleep(interval).await;
    let budget_use = scheduler.budget("http://tinybird.invalid", "ws").expect("the workspace's budget use");
    assert!(budget_use.stretch > 15.0, "billed probes hours apart: {budget_use:?}");
    assert_eq!(budget_use.existence_checks_per_day, 100 * 288, "one existence check per pipe and interval");

    // Removed: its next existence check (no billed probe) flips the three accesses granting it.
    script.set_gone("p7", true);
    let removed_at = Instant::now();
    let billed_before = script.calls_for("p7").len();
    simulate_until("every access granting the removed pipe is unhealthy", || {
        granting.iter().all(|key| reported(&scheduler, key) == Some((false, ProbeReason::PipeNotFound)))
    })
    .await;
    let flipped_after = Instant::now().duration_since(removed_at);
    assert!(
        flipped_after <= interval + Duration::from_secs(10),
        "flipped {flipped_after:?} after the removal"
    );
    // Found by the existence check: a billed probe of the pipe (1 of 100, hours apart) may
    // have fallen into the window by chance, but no more than one.
    assert!(script.calls_for("p7").len() <= billed_before + 1, "found by the existence check");
    let message = scheduler.endpoints(granting[0]).unwrap_or_default()[0].message.clone();
    assert!(message.contains("does not exist"), "{message}");
    // Every other access is untouched.
    for key in keys.iter().filter(|key| !granting.contains(key)) {
        assert_ne!(
            reported(&scheduler, key).map(|(_, reason)| reason),
            Some(ProbeReason::PipeNotFound),
            "{key}"
        );
    }
    // While it is missing, no billed probe is spent on it (nor on its tokens' checks).
    let billed_while_missing = script.calls_for("p7").len();
    tokio::time::sleep(interval * 3).await;
    assert_eq!(script.calls_for("p7").len(), billed_while_missing, "billed probes of a pipe known missing");

    // Restored: the next existence check finds it, and its billed probe, first in line for the
    // budget's next slot, flips them back.
    script.set_gone("p7", false);
    let restored_at = Instant::now();
    simulate_until("every access granting the restored pipe is healthy", || {
        granting.iter().all(|key| reported(&scheduler, key) == Some((true, ProbeReason::Healthy)))
    })
    .await;
    let recovered_after = Instant::now().duration_since(restored_at);
    let slot = budget.spacing(DISPATCH_TICK);
    assert!(
        recovered_after <= interval + slot + Duration::from_secs(10),
        "recovered {recovered_after:?} after the restore (interval {interval:?}, a budget slot {slot:?})"
    );

    // The billed probes stayed within the budget's pace all along.
    let billed: Vec<Instant> = script.calls.lock().unwrap().iter().map(|(_, _, at)| *at).collect();
    let elapsed = Instant::now().duration_since(started);
    let allowed = (elapsed.as_secs_f64() / slot.as_secs_f64()).ceil() as usize + 1;
    assert!(billed.len() <= allowed, "{} billed probes in {elapsed:?}: at most {allowed}", billed.len());
    assert!(busiest(&billed, slot - DISPATCH_TICK * 2) <= 1, "two billed probes within one budget slot");
    // The existence checks: about one per pipe and interval, at most one a second.
    let checks: Vec<Instant> = script.exists_calls.lock().unwrap().iter().map(|(_, _, at)| *at).collect();
    assert!(
        busiest(&checks, Duration::from_secs(1)) <= 1,
        "existence checks faster than maxQueriesPerSecond"
    );
    // Counted over whole intervals from the start: a partial last interval would count a round's
    // first checks against a fraction of its time (where the removed pipe falls in the round
    // decides how long the test runs).
    let rounds = (elapsed.as_secs_f64() / interval.as_secs_f64()).floor();
    let counted = checks.iter().filter(|at| at.duration_since(started) < interval.mul_f64(rounds)).count();
    #[allow(clippy::cast_precision_loss)]
    let per_round = counted as f64 / rounds;
    assert!(
        (95.0..=105.0).contains(&per_round),
        "{per_round:.0} existence checks per interval for 100 pipes"
    );
    let tokens: HashSet<String> =
        script.exists_calls.lock().unwrap().iter().map(|(_, t, _)| t.clone()).collect();
    assert_eq!(tokens, HashSet::from([ADMIN_TOKEN.to_owned()]), "existence checks use the admin token only");
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_existence_check_reports_nothing_but_a_missing_pipe() {
    let script = Script::with_hold(Duration::ZERO);
    let (scheduler, mut events) = start(&script, 8);
    let interval = Duration::from_secs(10);
    let keys = register_many(&scheduler, 3, &["p0"], interval);
    simulate_until("every access healthy", || {
        keys.iter().all(|key| reported(&scheduler, key) == Some((true, ProbeReason::Healthy)))
    })
    .await;
    while events.try_recv().is_some() {}
    let checks = || script.existence_checks_of("p0").len();

    // Tinybird fails the existence checks (5xx, no answer): no verdict, the billed probes decide.
    for reason in [ProbeReason::ServerError, ProbeReason::Unreachable, ProbeReason::QueryTimeout] {
        script.exists_answers.lock().unwrap().insert("p0".into(), outcome(reason));
        let before = checks();
        simulate_until("two more existence checks", || checks() >= before + 2).await;
        assert!(events.try_recv().is_none(), "{reason} of an existence check is no health change");
    }

    // Rate-limited: no verdict, and no existence check of the workspace before Retry-After.
    let retry_after = Duration::from_secs(120);
    let limited = ProbeOutcome { retry_after: Some(retry_after), ..outcome(ProbeReason::RateLimited) };
    script.exists_answers.lock().unwrap().insert("p0".into(), limited);
    let before = checks();
    simulate_until("a rate-limited existence check", || checks() > before).await;
    let limited_at = Instant::now();
    let after_429 = checks();
    script.exists_answers.lock().unwrap().remove("p0");
    tokio::time::sleep(retry_after - Duration::from_secs(1)).await;
    assert_eq!(checks(), after_429, "an existence check before Retry-After");
    simulate_until("existence checks resume", || checks() > after_429).await;
    assert!(Instant::now().duration_since(limited_at) >= retry_after);
    assert!(events.try_recv().is_none(), "a 429 of an existence check is no health change");

    // The admin token refused: the key check is asked for, once, and nothing flips.
    let refused = ProbeOutcome {
        auth_rejection: Some(AuthRejection::SignatureFailed),
        ..outcome(ProbeReason::SignatureRejected)
    };
    script.exists_answers.lock().unwrap().insert("p0".into(), refused);
    let change = next_change(&mut events).await;
    assert!(change.key_check);
    assert!(keys.contains(&change.key));
    assert!(change.endpoints.iter().all(|e| e.healthy && e.reason == ProbeReason::Healthy), "{change:?}");
    assert!(scheduler.take_key_check(&change.key));
    assert!(keys.iter().all(|key| reported(&scheduler, key) == Some((true, ProbeReason::Healthy))));
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn after_a_restart_a_pipe_reported_missing_that_exists_again_is_confirmed_within_one_interval() {
    let script = Script::with_hold(Duration::ZERO);
    let (scheduler, _events) = start(&script, 8);
    let (interval, budget, pipes) = hundred_pipes_over_budget();
    let mut keys = register_budgeted(&scheduler, 99, &pipes[..99], interval, budget);
    // One interval on, the other pipes' first billed probes are queued far beyond one interval
    // (about 7 fit in it), so p99's own turn in that queue cannot confirm it in time: only its
    // existence check can.
    tokio::time::sleep(interval).await;
    // The access granting p99 was reported missing by the previous run; the pipe is back.
    let key = AccessKey::new("tenants", "restarted");
    let plan = ProbePlan { budget, ..shared_plan(&["p99"], interval, "token-restarted") };
    let missing = EndpointHealth::from_outcome("p99", &not_found("p99"), Some(false));
    scheduler.resume(key.clone(), plan, vec![missing]);
    keys.push(key.clone());
    let restarted_at = Instant::now();
    simulate_until("the access reported healthy", || {
        reported(&scheduler, &key) == Some((true, ProbeReason::Healthy))
    })
    .await;
    let after = Instant::now().duration_since(restarted_at);
    let slot = budget.spacing(DISPATCH_TICK);
    assert!(after <= interval + slot + Duration::from_secs(10), "recovered {after:?} after the restart");
    assert!(!script.existence_checks_of("p99").is_empty(), "found by its existence check");
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn existence_checks_beyond_the_pace_allowed_are_said_in_what_was_cut() {
    let script = Script::with_hold(Duration::ZERO);
    let (scheduler, _events) = start(&script, 8);
    let interval = Duration::from_secs(300);
    // A budget the billed probes fit: only the existence lane can fall behind.
    let budget = small_budget(10_000_000);
    let pipes: Vec<String> = (0..400).map(|i| format!("p{i}")).collect();

    // 200 pipes at 5 minutes: 57,600 checks a day, within one a second.
    register_budgeted(&scheduler, 200, &pipes[..200], interval, budget);
    tokio::time::sleep(interval).await;
    let within = scheduler.budget("http://tinybird.invalid", "ws").expect("the workspace's budget use");
    assert!((within.existence_lag() - 1.0).abs() < f64::EPSILON, "{within:?}");
    assert_eq!(within.cut(), None, "nothing was cut: {within:?}");

    // 400 pipes: 115,200 checks a day against about 82,000 that one a second allows.
    let keys = register_budgeted(&scheduler, 400, &pipes, interval, budget);
    let counted_from = script.exists_calls.lock().unwrap().len();
    tokio::time::sleep(interval * 2).await;
    let behind = scheduler.budget("http://tinybird.invalid", "ws").expect("the workspace's budget use");
    assert_eq!(behind.existence_checks_per_day, 400 * 288);
    assert!(behind.existence_lag() > 1.3, "{behind:?}");
    let cut = behind.cut().expect("the existence checks are behind");
    assert!(cut.contains("existence checks of 400 pipes") && cut.contains("maxQueriesPerSecond 1"), "{cut}");
    // What the status says is what the lane does: no more checks than the pace allows.
    let checks = script.exists_calls.lock().unwrap().len() - counted_from;
    #[allow(clippy::cast_precision_loss)]
    let allowed = (behind.existence_capacity_per_day as f64 * 600.0 / 86_400.0).ceil() as usize + 1;
    assert!(checks <= allowed, "{checks} existence checks in 10 minutes, {allowed} allowed");
    assert!(checks + 10 >= allowed, "the lane keeps its pace: {checks} of {allowed}");
    assert_eq!(keys.len(), 400);
    scheduler.shutdown().await;
}
