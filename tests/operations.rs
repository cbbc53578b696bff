//! The operator as a process: /metrics (checked by promtool, in both text formats), /livez and /readyz, leader election with two replicas,
//! takeover when the leader dies, release of the lease on SIGTERM, requests bounded in time
//! without cutting watches.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use support::{Env, TIMEOUT, eventually, free_port, http_get, is_ready};
use tokio::process::{Child, Command};

const TENANT: &str = "  workspaceRef: {name: analytics}\n  scopes: [{resource: top_pages, fixedParams: {org: acme}}]\n  secret: {}\n  healthCheck: {interval: 5s}\n";

/// `tenant-access run` as a separate process: serving `namespace` with the credentials of
/// `kubeconfig`, its admin server (metrics and probes) on `127.0.0.1:{port}`, its output
/// discarded, killed when dropped.
fn run_command(kubeconfig: &Path, namespace: &str, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tenant-access"));
    command
        .args(["run", "--kubeconfig"])
        .arg(kubeconfig)
        .args(["--namespaces", namespace, "--admin-address", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Starts `tenant-access run` as a separate process serving the test namespace (also its
/// cluster-resource namespace) as replica `identity`.
fn operator_process(env: &Env, port: u16, identity: &str, leader_election: bool) -> Child {
    operator_process_logging_to(env, port, identity, leader_election, Stdio::null())
}

/// [`operator_process`], its JSON log written to `log`.
fn operator_process_logging_to(
    env: &Env,
    port: u16,
    identity: &str,
    leader_election: bool,
    log: Stdio,
) -> Child {
    let mut command = run_command(env.cluster.admin_kubeconfig(), env.name(), port);
    command
        .args(["--cluster-resource-namespace", env.name()])
        .args(["--log-format", "json"])
        .env("POD_NAME", identity)
        .env_remove("RUST_LOG")
        .stderr(log);
    if leader_election {
        command.args(["--leader-election", "--leader-election-lease-duration-seconds", "6"]);
    }
    command.spawn().unwrap()
}

/// TenantAccess `acme`, Ready, and `broken`, whose workspace does not exist.
async fn acme_and_broken(env: &Env) {
    env.tenant_access("acme", TENANT).await;
    env.tenant_access(
        "broken",
        "  workspaceRef: {name: missing}\n  scopes: [{resource: top_pages}]\n  secret: {}\n",
    )
    .await;
    env.wait_access("acme", is_ready()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_probes_describe_the_running_operator() {
    let env = Env::new("metrics").await;
    let port = free_port();
    let mut operator = operator_process(&env, port, "metrics-test", false);
    eventually("/livez", || async { http_get(port, "/livez").await.is_some_and(|(code, _)| code == 200) })
        .await;
    eventually("/readyz", || async { http_get(port, "/readyz").await.is_some_and(|(code, _)| code == 200) })
        .await;
    acme_and_broken(&env).await;
    let ns = env.name().to_owned();
    let series = |name: &str| format!("{name}{{namespace=\"{ns}\",name=\"acme\"");
    let wanted = [
        series("tenant_access_token_expiry_timestamp_seconds"),
        series("tenant_access_token_renewal_timestamp_seconds"),
        series("tenant_access_ready"),
        series("tenant_access_endpoint_up"),
        "tenant_access_reconciles_total{kind=\"TenantAccess\",outcome=\"success\"}".to_owned(),
        "tenant_access_reconcile_duration_seconds_count{kind=\"TenantAccess\"}".to_owned(),
        "tenant_access_tokens_signed_total{reason=\"Issued\"}".to_owned(),
        "tenant_access_probes_total{reason=\"Healthy\"}".to_owned(),
        "tenant_access_health_budget_use_ratio{api_url=".to_owned(),
        "tenant_access_health_planned_queries_per_day{api_url=".to_owned(),
        "tenant_access_health_existence_checks_per_day{api_url=".to_owned(),
    ];
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let text = http_get(port, "/metrics").await.map(|(_, text)| text).unwrap_or_default();
        let missing: Vec<&String> = wanted.iter().filter(|w| !text.contains(w.as_str())).collect();
        if missing.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "missing metrics {missing:?} in:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = http_get(port, "/metrics").await.unwrap().1;
    assert!(
        text.contains(&format!(
            "tenant_access_ready{{namespace=\"{ns}\",name=\"broken\",kind=\"TenantAccess\"}} 0"
        )),
        "{text}"
    );
    support::assert_no_secrets("metrics", &text, &[env.tinybird.admin_token()]);

    // A deleted TenantAccess leaves no series behind.
    env.tenant_accesses().delete("acme", &Default::default()).await.unwrap();
    eventually("no series of the deleted TenantAccess", || async {
        let text = http_get(port, "/metrics").await.map(|(_, text)| text).unwrap_or_default();
        !text.contains("name=\"acme\"") && text.contains("name=\"broken\"")
    })
    .await;
    operator.kill().await.unwrap();
}

/// What Prometheus sends: OpenMetrics preferred, the Prometheus text format accepted.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// `GET /metrics` with `accept` (none: no `Accept` header at all): the `Content-Type` and the body.
async fn scrape(port: u16, accept: Option<&str>) -> (String, String) {
    let client = reqwest::Client::new();
    let mut request = client.get(format!("http://127.0.0.1:{port}/metrics"));
    if let Some(accept) = accept {
        request = request.header(reqwest::header::ACCEPT, accept);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type =
        response.headers().get(reqwest::header::CONTENT_TYPE).unwrap().to_str().unwrap().to_owned();
    (content_type, response.text().await.unwrap())
}

/// `promtool check metrics` on `text`: its exit status and what it said.
async fn promtool_check_metrics(text: &str) -> (bool, String) {
    use tokio::io::AsyncWriteExt as _;
    let promtool = tenant_access_testkit::promtool_binary()
        .expect("promtool not found: run hack/install-deps.sh (or set PROMTOOL)");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let said =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), said)
}

/// The value of the sample line that starts with `series` (name and labels), if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The series (name and labels, without values) of an exposition.
fn series_keys(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once(' ').map_or(l, |(key, _)| key).to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_in_both_formats_and_count_every_tinybird_and_clerk_request() {
    let mut env = Env::new("promtool").await;
    env.connect_clerk().await;
    let port = free_port();
    let mut operator = operator_process(&env, port, "promtool-test", false);
    env.tenant_access(
        "acme",
        "  workspaceRef: {name: analytics}\n  scopes: [{resource: top_pages, fixedParams: {org: acme}}]\n  secret: {}\n  clerkTemplate: {name: acme-dashboard}\n  healthCheck: {interval: 5s}\n",
    )
    .await;
    env.wait_access("acme", is_ready()).await;
    env.wait_access("acme", support::clerk_synced()).await;

    // Successful requests are counted too: the admin-token check, a probe, the Clerk calls.
    let ok = |name: &str, call: &str| format!("{name}{{call=\"{call}\",outcome=\"ok\"}}");
    let wanted = [
        ok("tenant_access_tinybird_requests_total", "verify"),
        ok("tenant_access_tinybird_requests_total", "probe"),
        ok("tenant_access_clerk_requests_total", "create"),
    ];
    eventually("every successful request counted", || async {
        let (_, text) = scrape(port, None).await;
        wanted.iter().all(|series| sample(&text, series).is_some_and(|n| n >= 1.0))
    })
    .await;

    // Without an Accept header (curl, promtool): the Prometheus text format, which promtool
    // accepts as is, HELP for every family included.
    let (content_type, text) = scrape(port, None).await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!text.contains("# EOF"), "{text}");
    let (passed, said) = promtool_check_metrics(&text).await;
    assert!(passed && said.trim().is_empty(), "promtool check metrics:\n{said}\non:\n{text}");
    assert_eq!(
        sample(&text, &format!("tenant_access_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))),
        Some(1.0),
        "{text}"
    );
    for process in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(sample(&text, process).is_some_and(|v| v > 0.0), "{process} in:\n{text}");
        assert!(text.contains(&format!("# HELP {process} ")), "{process} has HELP:\n{text}");
    }
    let (_, curl_like) = scrape(port, Some("*/*")).await;
    assert!(!curl_like.contains("# EOF"), "*/* gets the Prometheus text format:\n{curl_like}");

    // Prometheus asks for OpenMetrics and gets it: the same series, counters as `_total`
    // samples of families named without it, and the `# EOF` terminator.
    let (content_type, openmetrics) = scrape(port, Some(PROMETHEUS_ACCEPT)).await;
    let (_, after) = scrape(port, None).await;
    assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    assert!(openmetrics.contains("# TYPE tenant_access_tinybird_requests counter\n"), "{openmetrics}");
    let missing: Vec<String> = series_keys(&openmetrics).difference(&series_keys(&after)).cloned().collect();
    assert!(missing.is_empty(), "series only in the OpenMetrics scrape: {missing:?}");
    // promtool reads only the Prometheus text format; the OpenMetrics answer passes once
    // converted the way the endpoint converts it.
    let converted = tenant_access::runtime::exposition::openmetrics_to_prometheus(&openmetrics);
    let (passed, said) = promtool_check_metrics(&converted).await;
    assert!(passed && said.trim().is_empty(), "promtool check metrics (OpenMetrics scrape):\n{said}");
    eprintln!(
        "scrape: {} bytes Prometheus text, {} bytes OpenMetrics, {} series",
        text.len(),
        openmetrics.len(),
        series_keys(&text).len()
    );

    // A Clerk call counted as it happens: deleting the TenantAccess deletes its template.
    let deletes = ok("tenant_access_clerk_requests_total", "delete");
    let before = sample(&scrape(port, None).await.1, &deletes).unwrap_or(0.0);
    env.tenant_accesses().delete("acme", &Default::default()).await.unwrap();
    eventually("the Clerk delete counted", || async {
        sample(&scrape(port, None).await.1, &deletes).is_some_and(|n| n > before)
    })
    .await;
    support::assert_no_secrets(
        "metrics",
        &text,
        &[env.tinybird.admin_token(), env.clerk().secret_key().to_owned()],
    );
    operator.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leader_a_standby_takes_over_and_sigterm_releases_the_lease() {
    let env = Env::new("leader").await;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), env.name());
    let holder = || {
        let leases = leases.clone();
        async move {
            leases
                .get_opt("tenant-access-operator")
                .await
                .ok()
                .flatten()
                .and_then(|l| l.spec?.holder_identity)
        }
    };
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = operator_process(&env, port_a, "replica-a", true);
    eventually("replica-a leads", || async { holder().await.as_deref() == Some("replica-a") }).await;
    let standby_log = std::env::temp_dir().join(format!("standby-{}.log", env.name()));
    let log = Stdio::from(std::fs::File::create(&standby_log).unwrap());
    let mut b = operator_process_logging_to(&env, port_b, "replica-b", true, log);
    // The standby is ready (healthy) but does not lead.
    eventually("replica-b ready as standby", || async {
        http_get(port_b, "/readyz").await.is_some_and(|(code, body)| code == 200 && body.contains("standby"))
    })
    .await;
    env.tenant_access("first", TENANT).await;
    env.wait_access("first", is_ready()).await;
    assert_eq!(holder().await.as_deref(), Some("replica-a"));
    // Only the leader works: the standby has reconciled and signed nothing.
    let standby_metrics = http_get(port_b, "/metrics").await.unwrap().1;
    assert!(!standby_metrics.contains("tenant_access_reconciles_total{"), "{standby_metrics}");

    // A standby says, once, at info level, that it waits for the lease (naming it and itself).
    let said = std::fs::read_to_string(&standby_log).unwrap();
    let records: Vec<serde_json::Value> = said.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let waiting = records
        .iter()
        .filter(|r| {
            r["level"] == "INFO" && r["lease"] == "tenant-access-operator" && r["identity"] == "replica-b"
        })
        .count();
    assert_eq!(waiting, 1, "the standby's log:\n{said}");

    // The leader dies without releasing: the standby takes over after the lease duration.
    a.kill().await.unwrap();
    eventually("replica-b takes over", || async { holder().await.as_deref() == Some("replica-b") }).await;
    env.tenant_access("second", TENANT).await;
    env.wait_access("second", is_ready()).await;
    // The new leader kept the first token: nothing is issued twice for one reason.
    let first = env.tenant_accesses().get("first").await.unwrap();
    assert_eq!(first.status.unwrap().token.unwrap().revision, 1);

    // SIGTERM: in-flight work finishes and the lease is released for the next replica.
    let pid = b.id().unwrap();
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().await.unwrap();
    let status = tokio::time::timeout(TIMEOUT, b.wait()).await.unwrap().unwrap();
    let _ = std::fs::remove_file(&standby_log);
    assert!(status.success(), "graceful shutdown exits 0: {status}");
    assert_eq!(holder().await, None, "the lease is released on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_stays_false_while_the_caches_cannot_sync() {
    let env = Env::new("unsynced").await;
    // The same credentials, pointed at a port where no API server listens.
    let kubeconfig = std::fs::read_to_string(env.cluster.admin_kubeconfig()).unwrap();
    let dead = free_port();
    let broken: String = kubeconfig
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("server:") {
                format!("    server: https://127.0.0.1:{dead}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = std::env::temp_dir().join(format!("unsynced-{}.kubeconfig", std::process::id()));
    std::fs::write(&path, broken).unwrap();
    let port = free_port();
    let mut operator = run_command(&path, env.name(), port).spawn().unwrap();
    eventually("/livez", || async { http_get(port, "/livez").await.is_some_and(|(code, _)| code == 200) })
        .await;
    // Several checks over a few seconds: never ready without an API server.
    for _ in 0..5 {
        let (code, body) = http_get(port, "/readyz").await.unwrap();
        assert_eq!(code, 503, "{body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    operator.kill().await.unwrap();
    let _ = std::fs::remove_file(path);
}

/// A JSON value in which no object repeats a key (serde_json keeps the last of duplicates
/// silently, so the check is made while parsing).
struct NoDuplicateKeys;

impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoDuplicateKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeys {
    type Value = Self;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut keys = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value::<NoDuplicateKeys>()?;
        }
        Ok(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(self)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }
}

/// The operator's count of successful TenantAccess reconciles, from /metrics.
async fn successful_reconciles(port: u16) -> u64 {
    let text = http_get(port, "/metrics").await.map(|(_, text)| text).unwrap_or_default();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("tenant_access_reconciles_total{kind=\"TenantAccess\",outcome=\"success\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_no_duplicate_keys_and_a_refusal_is_warned_once() {
    let env = Env::new("json-logs").await;
    let port = free_port();
    let log_path = std::env::temp_dir().join(format!("json-logs-{}.log", env.name()));
    let log = Stdio::from(std::fs::File::create(&log_path).unwrap());
    let mut operator = operator_process_logging_to(&env, port, "json-logs", false, log);
    acme_and_broken(&env).await;
    env.wait_access("broken", support::has_condition("Ready", "False", "WorkspaceNotFound")).await;
    // Reconciles of the refused TenantAccess that find nothing new to say.
    for round in 0..3 {
        let before = successful_reconciles(port).await;
        env.apply_yaml(&format!(
            "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: broken, annotations: {{touched: '{round}'}}}}\nspec:\n  workspaceRef: {{name: missing}}\n  scopes: [{{resource: top_pages}}]\n  secret: {{}}\n"
        ))
        .await;
        eventually("the refused TenantAccess to be reconciled again", || async {
            successful_reconciles(port).await > before
        })
        .await;
    }
    operator.kill().await.unwrap();
    let text = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut refusal_warnings = 0;
    let mut about_acme = 0;
    for line in &lines {
        serde_json::from_str::<NoDuplicateKeys>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        about_acme += usize::from(record["span"]["object"] == "acme");
        if record["level"] == "WARN" && record["reason"] == "WorkspaceNotFound" {
            refusal_warnings += 1;
            assert_eq!(record["span"]["object"], "broken", "{line}");
            assert!(record["detail"].as_str().unwrap_or_default().contains("missing"), "{line}");
        }
        if let Some(status) = record.get("status") {
            assert!(status.is_number(), "a status code is a number: {line}");
        }
    }
    assert_eq!(refusal_warnings, 1, "the refusal is warned about once:\n{text}");
    assert!(about_acme > 0, "a reconcile's records name their object in the span:\n{text}");
    support::assert_no_secrets("logs", &text, &[env.tinybird.admin_token()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_request_timeout_bounds_requests_but_never_cuts_a_quiet_watch() {
    let env = Env::new("bounded").await;
    let port = free_port();
    let mut command = run_command(env.cluster.admin_kubeconfig(), env.name(), port);
    command.args(["--cluster-resource-namespace", env.name(), "--kube-request-timeout-seconds", "1"]);
    let mut operator = command.spawn().unwrap();
    eventually("/readyz", || async { http_get(port, "/readyz").await.is_some_and(|(code, _)| code == 200) })
        .await;
    env.tenant_access("first", TENANT).await;
    env.wait_access("first", is_ready()).await;

    // Quiet watches for several request timeouts: none is cut, no request timed out.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let text = http_get(port, "/metrics").await.unwrap().1;
        let timeouts: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("tenant_access_kube_request_timeouts_total{"))
            .collect();
        assert!(timeouts.iter().any(|line| line.contains("verb=\"watch\"")), "{text}");
        assert!(timeouts.iter().all(|line| line.ends_with(" 0")), "{timeouts:?}");
    }
    // The watches still deliver.
    env.tenant_access("second", TENANT).await;
    env.wait_access("second", is_ready()).await;
    operator.kill().await.unwrap();
}
