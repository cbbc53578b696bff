//! Tenant isolation of `DATASOURCES:READ` filters against real ClickHouse.
//!
//! A tenant team writes a SQL `filter`; the operator signs it with the tenant condition ANDed
//! (`(<filter>) AND org = 'acme'`), and Tinybird pastes the signed text into ClickHouse. Whether a
//! filter leaks another tenant's rows is therefore decided by ClickHouse's own parser, so every
//! filter the operator accepts is used as a JWT against the Tinybird emulator's `/v0/sql`, whose
//! data source lives in real ClickHouse (chdb). The answer must be 200 with acme's rows only, or
//! a 400 ClickHouse error: never a row of globex or initech.
//!
//! Needs `CHDB_PYTHON` (hack/with-cluster.sh exports it) and fails without it. The property
//! test's seed is printed; `FILTER_ISOLATION_SEED=<n>` replays one run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

mod support;

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use serde_json::{Value, json};
use support::{ClusterWideEnv, TIMEOUT, query_datasource, token_of};
use tenant_access::api::{TenantAccess, TenantAccessSpec, WorkspaceSpec};
use tenant_access::core::admin_token::AdminToken;
use tenant_access::core::desired::issue_token;
use tenant_access::core::jwt::ParsedToken;
use tenant_access::core::policy::{self, NamespaceFacts};
use tenant_access::core::signing_workspace::{self, SigningWorkspace};
use tenant_access::core::validate::validate_tenant_access;
use tenant_access_emulators::tinybird::default_datasources;
use tenant_access_emulators::{TinybirdConfig, TinybirdEmulator, chdb_python_from_env};
use tenant_access_testkit::wait_for;

/// The shared workspace's policy: data sources readable, `org` pinned from the namespace label.
const POLICY: &str = "  policy:
    allowedNamespaces: {matchExpressions: [{key: tenant, operator: Exists}]}
    allowedResources: [tenant_events]
    allowedScopeTypes: ['PIPES:READ', 'DATASOURCES:READ']
    requiredParams:
      org: {namespaceLabel: tenant}
";
const TENANT: &str = "acme";
const DEFAULT_SEED: u64 = 0x5EED_0F1E_7E25;
const GENERATED_FILTERS: usize = 500;

/// Known ways out of `(<filter>) AND org = 'acme'` in ClickHouse, and their neighbours.
const KNOWN_ESCAPES: &[(&str, &str)] = &[
    ("heredoc", "org = $$'$$) OR 1=1 OR (org = $$'$$"),
    ("tagged heredoc", "org = $t$'$t$) OR 1=1 OR (org = $t$'$t$"),
    ("heredoc literal", "org = $$globex$$"),
    ("unicode quotes U+2018/2019", "org = \u{2018}'\u{2019}) OR 1=1 OR (org = \u{2018}'\u{2019}"),
    ("unicode quote U+02BC", "org = \u{2bc}'\u{2bc}) OR 1=1 OR (org = \u{2bc}'\u{2bc}"),
    ("fullwidth quote U+FF07", "org = \u{ff07}'\u{ff07}) OR 1=1 OR (org = \u{ff07}'\u{ff07}"),
    ("alias in a function", "notEmpty('acme' AS org)"),
    ("bare alias", "'acme' AS org"),
    ("alias compared", "('acme' AS org) = 'acme'"),
    ("subquery", "org IN (SELECT org FROM tenant_events)"),
    ("table function numbers", "amount IN (SELECT number FROM numbers(10))"),
    ("table function url", "1 = (SELECT count() FROM url('http://127.0.0.1:1/x', CSV, 'a String'))"),
    ("line comment", "1=1) OR 1=1 --"),
    ("block comment", "1=1) OR 1=1 /*"),
    ("hash comment", "1=1) OR 1=1 #"),
    ("statement separator", "1=1; SELECT * FROM tenant_events"),
    ("backslash quote", r"org = 'a\' OR 1=1 --'"),
    ("backslash at the end", r"org = 'a\\') OR 1=1 OR (org = 'b'"),
    ("or 1=1", "org = 'globex' OR 1=1"),
    ("unbalanced close", "1=1) OR (1=1"),
    ("unbalanced open", "(org = 'globex'"),
    ("close open", ") OR ("),
    ("union", "1) UNION ALL SELECT * FROM tenant_events WHERE (1"),
    ("line break", "1=1\n) OR (1=1"),
    // No foreign row, but the answer tells whether other tenants' rows exist: an oracle.
    ("count oracle", "amount > 0 AND (SELECT count() FROM tenant_events) > 6"),
    ("exists oracle", "org IN (SELECT 'acme' FROM tenant_events WHERE org = 'globex' AND amount > 200)"),
];

// --- the operator's pure pipeline, exactly as the controller runs it ---------------------------

/// What the operator makes of a filter: refused (why), or a signed JWT and the filter it signed.
enum Verdict {
    Refused(String),
    Signed { jwt: String, signed_filter: String },
}

/// The shared workspace and its signer for an emulator.
struct Workspace {
    spec: WorkspaceSpec,
    signer: SigningWorkspace,
    labels: BTreeMap<String, String>,
}

impl Workspace {
    fn for_emulator(tinybird: &TinybirdEmulator) -> Self {
        let yaml = format!(
            "adminTokenSecretRef: {{name: shared-admin}}\napiUrl: {}\n{}",
            tinybird.base_url(),
            POLICY.lines().map(|line| line.strip_prefix("  ").unwrap_or(line)).collect::<Vec<_>>().join("\n")
        );
        let spec: WorkspaceSpec = serde_saphyr::from_str(&yaml).unwrap();
        let signer = signing_workspace::resolve(&spec, AdminToken::new(&tinybird.admin_token())).unwrap();
        Self { spec, signer, labels: BTreeMap::from([("tenant".to_owned(), TENANT.to_owned())]) }
    }

    /// validate -> policy -> issue, with the namespace `acme` labelled `tenant: acme`.
    fn verdict(&self, filter: &str) -> Verdict {
        let spec: TenantAccessSpec = serde_json::from_value(tenant_access_spec(filter)).unwrap();
        let validated = match validate_tenant_access(TENANT, "reader", &spec) {
            Ok(validated) => validated,
            Err(invalid) => return Verdict::Refused(invalid.to_string()),
        };
        let facts = NamespaceFacts { name: TENANT, labels: Some(&self.labels) };
        let validated = match policy::apply(validated, self.spec.policy.as_ref(), "shared", facts) {
            Ok(validated) => validated,
            Err(violation) => return Verdict::Refused(violation.to_string()),
        };
        let jwt = issue_token(&validated, &self.signer, Timestamp::now()).unwrap().jwt;
        let claims = ParsedToken::parse(&jwt).unwrap().claims().unwrap().access;
        let signed_filter = claims.scopes[0].filter.clone().unwrap_or_default();
        Verdict::Signed { jwt, signed_filter }
    }
}

fn tenant_access_spec(filter: &str) -> Value {
    json!({
        "workspaceRef": {"kind": "ClusterTinybirdWorkspace", "name": "shared"},
        "scopes": [{"type": "DATASOURCES:READ", "resource": "tenant_events", "filter": filter}],
        "secret": {},
        "healthCheck": {"interval": "0"},
    })
}

// --- what a token reads at Tinybird ------------------------------------------------------------

/// acme's rows of the seeded data source, each as its sorted cell texts (column names aside:
/// an alias can rename a column in the answer, it cannot make a foreign row look like acme's).
fn acme_rows() -> Vec<Vec<String>> {
    default_datasources()[0]
        .rows
        .iter()
        .filter(|row| row["org"] == TENANT)
        .map(|row| cells(&Value::Object(row.clone())))
        .collect()
}

fn cells(row: &Value) -> Vec<String> {
    let mut cells: Vec<String> = row
        .as_object()
        .map(|row| {
            row.values()
                .map(|cell| match cell {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    cells.sort();
    cells
}

/// Why an answer breaks isolation, if it does: a row that is not one of acme's, or an answer
/// that is neither 200 nor a 400 ClickHouse error.
fn isolation_breach(status: u16, body: &Value) -> Option<String> {
    match status {
        200 => {
            let acme = acme_rows();
            let foreign: Vec<&Value> =
                body["data"].as_array()?.iter().filter(|row| !acme.contains(&cells(row))).collect();
            (!foreign.is_empty()).then(|| {
                format!("foreign rows {}", Value::from(foreign.into_iter().cloned().collect::<Vec<_>>()))
            })
        }
        400 if body["error"].as_str().is_some_and(|error| error.starts_with("[Error]")) => None,
        other => Some(format!("unexpected answer {other}: {body}")),
    }
}

/// Two Tinybirds of one workspace (one admin token) whose `tenant_events` hold the same acme rows
/// and different rows for the other tenants. A token whose answers differ between them learns
/// something about other tenants' rows (non-interference), even when it gets no foreign row.
struct TwoWorlds {
    seeded: TinybirdEmulator,
    altered: TinybirdEmulator,
}

impl TwoWorlds {
    async fn start() -> Self {
        let chdb_python = chdb_python_from_env().unwrap_or_else(|error| panic!("{error}"));
        let config = TinybirdConfig { chdb_python: Some(chdb_python), ..TinybirdConfig::default() };
        let seeded = TinybirdEmulator::start(config.clone()).await.unwrap();
        let mut source = default_datasources().remove(0);
        source.rows.retain(|row| row["org"] == TENANT);
        for (org, user, event, amount) in [
            ("globex", "user_carol", "login", 10),
            ("globex", "user_erin", "signup", 20),
            ("initech", "user_dave", "login", 30),
        ] {
            source = source.with_row(json!({"org": org, "user": user, "event": event, "amount": amount}));
        }
        let altered = TinybirdEmulator::start(TinybirdConfig {
            admin_token: Some(seeded.admin_token()),
            datasources: vec![source],
            ..config
        })
        .await
        .unwrap();
        Self { seeded, altered }
    }

    /// Reads with `jwt` in both worlds: the breach, if any.
    async fn breach(&self, jwt: &str) -> Option<String> {
        let (status, body) = query_datasource(&self.seeded.base_url(), "tenant_events", jwt).await;
        let (altered_status, altered_body) =
            query_datasource(&self.altered.base_url(), "tenant_events", jwt).await;
        isolation_breach(status, &body).or_else(|| isolation_breach(altered_status, &altered_body)).or_else(
            || {
                (status != altered_status || body["data"] != altered_body["data"]).then(|| {
                    format!(
                        "the answer depends on other tenants' rows: {status} {} vs {altered_status} {}",
                        body["data"], altered_body["data"]
                    )
                })
            },
        )
    }
}

/// What became of one filter.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The operator signed nothing.
    Refused(String),
    /// Signed, and Tinybird answered acme's rows only or a ClickHouse error, the same whatever
    /// the other tenants' rows.
    Isolated { signed_filter: String },
    /// Signed, and the token read what it must not.
    Breach(String),
}

/// Runs one filter through the operator and, when signed, through Tinybird.
async fn check_filter(workspace: &Workspace, worlds: &TwoWorlds, filter: &str) -> Outcome {
    match workspace.verdict(filter) {
        Verdict::Refused(why) => Outcome::Refused(why),
        Verdict::Signed { jwt, signed_filter } => match worlds.breach(&jwt).await {
            None => Outcome::Isolated { signed_filter },
            Some(breach) => Outcome::Breach(format!("signed as {signed_filter:?}: {breach}")),
        },
    }
}

// --- the generator -----------------------------------------------------------------------------

/// xorshift64: deterministic, no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const ORGS: &[&str] = &["'acme'", "'globex'", "'initech'", "'ACME'", "'ac''me'", "'a\\'b'"];
const TEXT_COLUMNS: &[&str] = &["org", "user", "event"];
const TEXTS: &[&str] = &["'user_alice'", "'user_bob'", "'login'", "'export'", "'invite'", "''"];
const COMPARISONS: &[&str] = &["=", "!=", "<>", "<", "<=", ">", ">="];
const PATTERNS: &[&str] = &["'acme'", "'%e%'", "'log%'", "'%_bob'", "'gl_bex'", "'%'"];

/// Fragments that try to step out of the parentheses, or to read what the tenant may not.
const HOSTILE: &[&str] = &[
    "$$acme$$",
    "$$'$$) OR 1=1 OR (org = $$'$$",
    "$t$'$t$) OR 1=1 OR (org = $t$'$t$",
    "\u{2018}'\u{2019}) OR 1=1 OR (org = \u{2018}'\u{2019}",
    "$$'$$",
    "$t$globex$t$",
    "$t$'$t$",
    "\u{2018}acme\u{2019}",
    "\u{2018}'\u{2019}",
    "\u{2bc}acme\u{2bc}",
    "\u{ff07}acme\u{ff07}",
    "'acme' AS org",
    "notEmpty('acme' AS org)",
    "('globex' AS org) = org",
    "org IN (SELECT org FROM tenant_events)",
    "(SELECT 'acme') AS org",
    "url('http://127.0.0.1:1/x', CSV, 'a String')",
    "amount IN (SELECT number FROM numbers(10))",
    "numbers(10)",
    "--",
    "/*",
    "*/",
    "#",
    ";",
    r"'a\' OR 1=1 --'",
    r"'a\\'",
    "\\",
    "OR 1=1",
    "1=1",
    "(",
    ")",
    ") OR (",
    "'",
    "\"org\"",
    "`org`",
    "\n",
    "SETTINGS max_threads = 1",
    "UNION ALL SELECT * FROM tenant_events",
    "arrayJoin([1, 2])",
];

/// A valid condition over the data source's columns, `depth` levels of nesting at most.
fn valid_filter(rng: &mut XorShift, depth: usize) -> String {
    let choice = if depth == 0 { rng.below(5) } else { rng.below(9) };
    match choice {
        0 => format!("org {} {}", rng.pick(COMPARISONS), rng.pick(ORGS)),
        1 => format!("{} = {}", rng.pick(TEXT_COLUMNS), rng.pick(TEXTS)),
        2 => format!("amount {} {}", rng.pick(COMPARISONS), rng.below(400)),
        3 => {
            let list = (0..=rng.below(3)).map(|_| rng.pick(ORGS)).collect::<Vec<_>>().join(", ");
            let negated = if rng.below(2) == 0 { "" } else { "NOT " };
            format!("org {negated}IN ({list})")
        }
        4 => {
            let negated = if rng.below(2) == 0 { "" } else { "NOT " };
            format!("{} {negated}LIKE {}", rng.pick(TEXT_COLUMNS), rng.pick(PATTERNS))
        }
        5 => format!("NOT {}", valid_filter(rng, depth - 1)),
        6 => format!("({})", valid_filter(rng, depth - 1)),
        7 => format!("{} OR {}", valid_filter(rng, depth - 1), valid_filter(rng, depth - 1)),
        _ => format!("{} AND {}", valid_filter(rng, depth - 1), valid_filter(rng, depth - 1)),
    }
}

/// A valid filter with one or two hostile fragments spliced in: appended with AND / OR, put in
/// place of a literal, or inserted at a random space.
fn hostile_filter(rng: &mut XorShift) -> String {
    let mut filter = valid_filter(rng, 2);
    for _ in 0..=rng.below(2) {
        let fragment = rng.pick(HOSTILE);
        filter = match rng.below(5) {
            0 => format!("{filter} AND {fragment}"),
            1 => format!("{filter} OR {fragment}"),
            2 => format!("org = {fragment}"),
            3 => fragment.to_owned(),
            _ => {
                let spaces: Vec<usize> = filter.match_indices(' ').map(|(at, _)| at).collect();
                if spaces.is_empty() {
                    format!("{fragment} {filter}")
                } else {
                    let at = spaces[rng.below(spaces.len())];
                    format!("{} {fragment}{}", &filter[..at], &filter[at..])
                }
            }
        };
    }
    filter
}

fn seed() -> u64 {
    std::env::var("FILTER_ISOLATION_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(DEFAULT_SEED)
        .max(1)
}

// --- the tests ---------------------------------------------------------------------------------

#[tokio::test]
async fn no_accepted_filter_reads_another_tenants_rows() {
    let seed = seed();
    eprintln!("filter isolation: seed {seed} (replay with FILTER_ISOLATION_SEED={seed})");
    let worlds = TwoWorlds::start().await;
    let workspace = Workspace::for_emulator(&worlds.seeded);
    let mut rng = XorShift(seed);
    let (mut valid_total, mut valid_accepted, mut hostile_total, mut hostile_accepted) = (0, 0, 0, 0);
    let mut breaches = Vec::new();
    for _ in 0..GENERATED_FILTERS {
        let hostile = rng.below(2) == 0;
        let filter = if hostile { hostile_filter(&mut rng) } else { valid_filter(&mut rng, 3) };
        let accepted = match check_filter(&workspace, &worlds, &filter).await {
            Outcome::Refused(_) => false,
            Outcome::Isolated { .. } => true,
            Outcome::Breach(breach) => {
                breaches.push(format!("{filter:?}: {breach}"));
                true
            }
        };
        if hostile {
            hostile_total += 1;
            hostile_accepted += usize::from(accepted);
        } else {
            valid_total += 1;
            valid_accepted += usize::from(accepted);
        }
    }
    eprintln!(
        "filter isolation: valid filters accepted {valid_accepted}/{valid_total}, hostile filters accepted {hostile_accepted}/{hostile_total} (the rest refused), {} breaches",
        breaches.len()
    );
    for breach in &breaches {
        eprintln!("  BREACH {breach}");
    }
    assert!(
        breaches.is_empty(),
        "seed {seed}: {} accepted filters leak other tenants' data:\n{}",
        breaches.len(),
        breaches.join("\n")
    );
    // The test proves nothing if the operator refuses everything.
    assert!(valid_total > GENERATED_FILTERS / 3, "the generator makes valid filters too");
    assert!(
        valid_accepted * 4 >= valid_total * 3,
        "seed {seed}: only {valid_accepted} of {valid_total} valid filters were accepted"
    );
}

#[tokio::test]
async fn known_escapes_never_yield_a_foreign_row() {
    let worlds = TwoWorlds::start().await;
    let workspace = Workspace::for_emulator(&worlds.seeded);
    // The bed is live: a plain filter is accepted and reads acme's rows only.
    let plain = check_filter(&workspace, &worlds, "amount > 0").await;
    assert!(matches!(plain, Outcome::Isolated { .. }), "{plain:?}");
    let jwt = match workspace.verdict("amount > 0") {
        Verdict::Signed { jwt, .. } => jwt,
        Verdict::Refused(why) => panic!("a plain filter is refused: {why}"),
    };
    let (status, body) = query_datasource(&worlds.seeded.base_url(), "tenant_events", &jwt).await;
    assert_eq!((status, &body["rows"]), (200, &json!(3)), "a plain filter reads acme's three rows: {body}");
    let mut breaches = Vec::new();
    for (name, filter) in KNOWN_ESCAPES {
        let outcome = check_filter(&workspace, &worlds, filter).await;
        eprintln!("known escape {name}: {filter:?} -> {outcome:?}");
        if let Outcome::Breach(breach) = outcome {
            breaches.push(format!("{name} ({filter:?}): {breach}"));
        }
    }
    assert!(
        breaches.is_empty(),
        "{} known escapes leak other tenants' data:\n{}",
        breaches.len(),
        breaches.join("\n")
    );
}

/// Hostile filters applied with kubectl by a tenant team allowed only TenantAccess in `acme`,
/// signed by the real controller: any token it issues reads acme's rows only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_the_controller_signs_for_a_tenant_team_read_only_its_rows() {
    let mut env = ClusterWideEnv::new().await;
    // The same workspace (admin token), served with real ClickHouse behind its data sources.
    let chdb_python = chdb_python_from_env().unwrap_or_else(|error| panic!("{error}"));
    env.tinybird = TinybirdEmulator::start(TinybirdConfig {
        admin_token: Some(env.tinybird.admin_token()),
        chdb_python: Some(chdb_python),
        ..TinybirdConfig::default()
    })
    .await
    .unwrap();
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": TENANT, "labels": {"tenant": TENANT}}})).unwrap();
    Api::<Namespace>::all(env.client.clone()).create(&Default::default(), &namespace).await.unwrap();
    env.apply(&env.shared_workspace_yaml(POLICY), None).await;
    let subject = env.cluster.tenant_subject().await.unwrap();
    env.apply(
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: filter-writers}}\nrules:\n- apiGroups: [tenantaccess.dev]\n  resources: [tenantaccesses]\n  verbs: [get, create, patch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: filter-writers}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: filter-writers}}\nsubjects: [{}]\n",
            serde_json::to_string(&subject).unwrap()
        ),
        Some(TENANT),
    )
    .await;
    let operator = env.start_operator();

    let cases: Vec<(&str, &str)> = [("plain", "amount < 100 OR event = 'invite'")]
        .into_iter()
        .chain(KNOWN_ESCAPES.iter().copied().filter(|(name, _)| {
            [
                "heredoc",
                "unicode quotes U+2018/2019",
                "alias in a function",
                "subquery",
                "unbalanced close",
                "backslash quote",
            ]
            .contains(name)
        }))
        .collect();
    let mut applied = Vec::new();
    for (index, (_, filter)) in cases.iter().enumerate() {
        let name = format!("filter-{index}");
        let manifest = json!({
            "apiVersion": "tenantaccess.dev/v1alpha1",
            "kind": "TenantAccess",
            "metadata": {"name": name},
            "spec": tenant_access_spec(filter),
        });
        let out = env
            .cluster
            .tenant_kubectl_with_stdin(["-n", TENANT, "apply", "-f", "-"], &manifest.to_string())
            .await
            .unwrap();
        if out.success() {
            applied.push((name, *filter));
        } else {
            eprintln!("{filter:?}: refused by the API server: {}", out.stderr.trim());
        }
    }
    assert_eq!(applied.first().map(|(_, filter)| *filter), Some(cases[0].1), "the plain filter is applied");

    let accesses: Api<TenantAccess> = Api::namespaced(env.client.clone(), TENANT);
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), TENANT);
    let mut breaches = Vec::new();
    for (name, filter) in &applied {
        let decided = |access: Option<&TenantAccess>| {
            access.and_then(|access| access.status.as_ref()).is_some_and(|status| {
                status.observed_generation.is_some()
                    && status.conditions.iter().any(|condition| condition.type_ == "Ready")
            })
        };
        let access = wait_for(accesses.clone(), name, decided, TIMEOUT).await.unwrap().unwrap();
        let ready = access
            .status
            .unwrap()
            .conditions
            .into_iter()
            .find(|condition| condition.type_ == "Ready")
            .unwrap();
        if ready.status != "True" {
            eprintln!("{filter:?}: refused by the operator: {}", ready.message);
            assert!(secrets.get_opt(name).await.unwrap().is_none_or(|secret| token_of(&secret).is_none()));
            continue;
        }
        let token = token_of(&secrets.get(name).await.unwrap()).unwrap();
        let (status, body) = query_datasource(&env.tinybird.base_url(), "tenant_events", &token).await;
        eprintln!("{filter:?}: signed by the operator, Tinybird answered {status}");
        if *filter == cases[0].1 {
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["rows"], json!(3), "the plain filter reads acme's three rows: {body}");
        }
        if let Some(breach) = isolation_breach(status, &body) {
            breaches.push(format!("{filter:?}: {breach}"));
        }
    }
    operator.stop().await;
    assert!(
        breaches.is_empty(),
        "tokens the controller signed read other tenants' rows:\n{}",
        breaches.join("\n")
    );
}
