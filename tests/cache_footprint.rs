//! Heap taken per TenantAccess by what the operator keeps of it and of its token Secret (the
//! memory target and the figures are in BENCHMARKS.md). Measured with dhat's heap statistics over 1000
//! objects built from real ones (a TenantAccess and its Secret as the API server served them in
//! `make bench`, managedFields included, as a watch delivers them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{reflector, watcher};
use tenant_access::adapters::health::{
    EndpointProber, PlannedEndpoint, ProbeCredential, ProbeOutcome, ProbePlan, ProbeReason, ProbeRequest,
};
use tenant_access::api::TenantAccess;
use tenant_access::core::admin_token::AdminToken;
use tenant_access::core::signing_workspace::HealthBudget;
use tenant_access::runtime::controller::cached_access::CachedTenantAccess;
use tenant_access::runtime::controller::token_secrets::TokenSecrets;
use tenant_access::runtime::controller::wakeups::Wakeups;
use tenant_access::runtime::health::{AccessKey, HealthConfig, HealthScheduler};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const COUNT: usize = 1000;
/// An admin token of Tinybird's length (its signature segment is 43 characters).
const ADMIN_TOKEN: &str = "p.eyJ1IjogIjNmNmMxYjFlLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMCIsICJpZCI6ICI5YzNlNGQ1Ni0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDAiLCAiaG9zdCI6ICJldV9zaGFyZWQifQ.wVYJ6m7eKFq0hOtqPqZ9pQyG4Z5i1cUu0a7LqK8sV2c";

fn fixture(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `COUNT` copies of a fixture as JSON, each with its own name, uid and resourceVersion.
fn copies(name: &str) -> Vec<String> {
    let template = fixture(name);
    (0..COUNT)
        .map(|i| {
            let mut object = template.clone();
            object["metadata"]["name"] = format!("t-{i:05}").into();
            object["metadata"]["uid"] = format!("01321691-1412-4fda-b1da-{i:012}").into();
            object["metadata"]["resourceVersion"] = format!("{}", 1000 + i).into();
            object.to_string()
        })
        .collect()
}

/// Heap bytes per object that `keep` adds when given every copy.
fn bytes_per_object(jsons: &[String], mut keep: impl FnMut(&str)) -> usize {
    let before = dhat::HeapStats::get().curr_bytes;
    for json in jsons {
        keep(json);
    }
    (dhat::HeapStats::get().curr_bytes - before) / jsons.len()
}

/// Heap bytes per object of a kube-runtime store of whole objects (managedFields dropped), as the
/// operator kept them before.
fn full_objects_bytes<K>(jsons: &[String]) -> usize
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
{
    let (store, mut writer) = reflector::store::<K>();
    let bytes = bytes_per_object(jsons, |json| {
        let mut object: K = serde_json::from_str(json).unwrap();
        object.meta_mut().managed_fields = None;
        writer.apply_watcher_event(&watcher::Event::Apply(object));
    });
    assert_eq!(store.state().len(), jsons.len());
    bytes
}

// One test, since dhat allows one profiler at a time.
#[test]
fn what_is_kept_per_tenant_access_stays_small() {
    let _profiler = dhat::Profiler::builder().testing().build();

    let accesses = copies("cached-tenant-access.json");
    let full = full_objects_bytes::<TenantAccess>(&accesses);
    let (store, mut writer) = reflector::store::<CachedTenantAccess>();
    let compact = bytes_per_object(&accesses, |json| {
        writer.apply_watcher_event(&watcher::Event::Apply(serde_json::from_str(json).unwrap()));
    });
    assert_eq!(store.state().len(), COUNT);

    let secrets = copies("cached-token-secret.json");
    let full_secret = full_objects_bytes::<Secret>(&secrets);
    let digests = TokenSecrets::default();
    let digest = bytes_per_object(&secrets, |json| {
        digests.observe(&watcher::Event::Apply(serde_json::from_str(json).unwrap()));
    });
    assert!(digests.get("bench-qv5xhu-memory-0", "t-00999").is_some());

    let health = health_bytes_per_access(&secrets[0]);

    // One wake-up per TenantAccess (its renewal or the resync), over 10 namespaces.
    let wakeups = Wakeups::default();
    let wakeup = bytes_per_object(&accesses, |json| {
        let access: serde_json::Value = serde_json::from_str(json).unwrap();
        let name = access["metadata"]["name"].as_str().unwrap();
        let namespace =
            format!("{}-{}", access["metadata"]["namespace"].as_str().unwrap(), &name[name.len() - 1..]);
        wakeups.set(&namespace, name, Duration::from_secs(3600));
    });
    assert_eq!(wakeups.len(), COUNT);

    println!(
        "heap per object: TenantAccess {full} B decoded, {compact} B cached; token Secret {full_secret} B \
         decoded, {digest} B as a digest; health checks {health} B; wake-up {wakeup} B"
    );
    assert!(compact <= 1024, "a cached TenantAccess takes {compact} bytes");
    assert!(digest <= 256, "a token Secret's digest takes {digest} bytes");
    // Its endpoint states, plus its place in its pipe's shared probe (one probe per pipe for all
    // the TenantAccesses granting it).
    assert!(health <= 900, "the health checks of a TenantAccess take {health} bytes");
    // kube-runtime's scheduler held about 750 bytes per requeue at 10,000 (BENCHMARKS.md): a
    // third of that at most.
    assert!(wakeup <= 256, "a wake-up takes {wakeup} bytes");
}

/// Always healthy, at once.
struct Healthy;

impl EndpointProber for Healthy {
    fn probe(&self, _: ProbeRequest) -> BoxFuture<'static, ProbeOutcome> {
        Box::pin(async {
            ProbeOutcome {
                reason: ProbeReason::Healthy,
                status_code: Some(200),
                message: String::new(),
                retry_after: None,
                auth_rejection: None,
                rate_limit: None,
                description: None,
            }
        })
    }
}

/// The fixture's token as the operator issues it to the `i`-th tenant: its own name, params and
/// times, and a signature of its own (random bytes, as a signature is: they do not compress).
fn token_of(template: &str, i: usize) -> String {
    let mut segments = template.split('.');
    let (header, payload) = (segments.next().unwrap(), segments.next().unwrap());
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert!(payload.contains("t-00000") && payload.contains("1795687753"), "{payload}");
    let payload = payload
        .replace("t-00000", &format!("t-{i:05}"))
        .replace("1795687753", &(1_795_687_753 + i * 37).to_string())
        .replace("1795684153", &(1_795_684_153 + i * 37).to_string());
    // xorshift64
    let mut state = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let signature: Vec<u8> = (0..32)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    format!("{header}.{}.{}", URL_SAFE_NO_PAD.encode(payload), URL_SAFE_NO_PAD.encode(signature))
}

/// Heap per TenantAccess registered with the health scheduler, once each endpoint was probed.
fn health_bytes_per_access(secret_json: &str) -> usize {
    let secret: Secret = serde_json::from_str(secret_json).unwrap();
    let template = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
    let tokens: Vec<String> = (0..COUNT).map(|i| token_of(&template, i)).collect();
    // On paused time with a long interval: once every first probe has reported, no probe is in
    // flight when the heap is measured, however loaded the machine (what stays is what is kept).
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    runtime.block_on(async {
        let (health, mut events) = HealthScheduler::start(HealthConfig::default(), Arc::new(Healthy));
        // The controller consumes the changes as they come.
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        let keys: Vec<AccessKey> =
            (0..COUNT).map(|i| AccessKey::new("bench-qv5xhu-memory-0", &format!("t-{i:05}"))).collect();
        let before = dhat::HeapStats::get().curr_bytes;
        for (key, token) in keys.iter().zip(&tokens) {
            let plan = ProbePlan {
                api_url: "http://127.0.0.1:37403".into(),
                workspace_id: "ws".into(),
                interval: Duration::from_secs(3600),
                timeout: Duration::from_secs(5),
                budget: HealthBudget {
                    max_queries_per_day: 100_000_000,
                    max_queries_per_second: 1000,
                    token_check_interval: Duration::ZERO,
                },
                token_rps: None,
                params: BTreeMap::new(),
                endpoints: vec![PlannedEndpoint { resource: "top_pages".into(), skipped: None }],
                credential: ProbeCredential::issued(token),
                // A copy per plan, as `ProbePlan::for_access` makes it: the scheduler keeps one
                // per workspace.
                admin_token: Arc::new(AdminToken::new(ADMIN_TOKEN)),
            };
            health.register(key.clone(), plan);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2 * 3600);
        while keys.iter().any(|key| health.endpoints(key).is_none_or(|e| e.is_empty())) {
            assert!(tokio::time::Instant::now() < deadline, "the probes did not all report");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let bytes = (dhat::HeapStats::get().curr_bytes - before) / COUNT;
        health.shutdown().await;
        bytes
    })
}
