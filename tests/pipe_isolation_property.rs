//! The pipe isolation analyser's verdict, tied to what the pipe does (issue 26, "How it is
//! shown"). Generated pipes over `tenant_events` are registered at the Tinybird emulator,
//! judged from the description `GET /v0/pipes/{pipe}` returns, and run in real ClickHouse
//! (chdb) as a tenant runs them: a JWT pinning `org: acme`, one pinning `org: globex`, and one
//! pinning nothing. The property:
//! - a pipe judged `Enforced` never returns a row of another org than the pinned one, and a
//!   request without `org` fails (4xx) or returns no rows;
//! - a pipe judged `Optional` returns only the pinned org's rows;
//! - so a pipe that returned another org's rows with `org` pinned was judged neither.
//!
//! How many `Unused` pipes leaked and how many pipes are `Unknown` is reported, not asserted.
//! Needs `CHDB_PYTHON` (hack/with-cluster.sh exports it) and fails without it.
//! `PIPE_ISOLATION_SEED=<n>` runs another seed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use tenant_access::core::admin_token::AdminToken;
use tenant_access::core::jwt::{self, AccessClaims, ClaimScope, TinybirdClaims};
use tenant_access::core::pipe_isolation::{PipeDescription, Verdict, judge};
use tenant_access_emulators::tinybird::default_datasources;
use tenant_access_emulators::{
    PipeDefinition, PipeNode, TinybirdConfig, TinybirdEmulator, chdb_python_from_env,
};

const DEFAULT_SEED: u64 = 0x0026_5EED_B1AD;
const GENERATED_PIPES: usize = 320;
/// Pipes run at once (ClickHouse runs one query at a time behind the emulator anyway).
const CONCURRENT_PIPES: usize = 4;
const PARAM: &str = "org";
/// The tenants whose tokens pin `org`; `tenant_events` also holds initech's rows.
const TENANTS: [&str; 2] = ["acme", "globex"];
/// What every node selects, so that any node can read any earlier one.
const COLUMNS: &str = "org, user, event, amount";
/// Failing pipes shown in full when the property breaks.
const SHOWN_VIOLATIONS: usize = 12;

// --- the generator -----------------------------------------------------------------------------

/// splitmix64: deterministic, no dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % bound as u64).unwrap()
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// What follows a FROM item: how a SELECT filters its rows by `org`, or seems to.
const FILTERS: &[&str] = &[
    "",
    "",
    "",
    "WHERE org = {{String(org)}}",
    "WHERE org = {{String(org, required=True)}}",
    "WHERE org = {{String(org, 'acme')}}",
    "WHERE org = {{String(org, defined=False)}}",
    "WHERE org = {{String(org)}} AND amount >= {{UInt32(min_amount, 0)}}",
    "WHERE lower(org) = lower({{String(org)}})",
    "WHERE 1 {% if defined(org) %} AND org = {{String(org)}} {% end %}",
    "WHERE 1 {% if org %} AND org = {{String(org)}} {% end %}",
    "WHERE 1 {% if defined(org) %} AND org = {{String(org)}} {% else %} AND 0 {% end %}",
    "WHERE 1 {% if defined(org) %} AND org = {{String(org)}} {% else %} AND event = 'login' {% end %}",
    "WHERE 1 {% if defined(org) %} AND org = {{String(org)}} {% else %} AND org = {{String(org, 'acme')}} {% end %}",
    "WHERE 1 {% if defined(org) %} AND org = {{String(org)}} {% else %} {{error('org is required', 403)}} {% end %}",
    "{% if not defined(org) %} {{error('org is required', 403)}} {% end %} WHERE org = {{String(org, 'acme')}}",
    "WHERE 1 {% if defined(event) %} AND org = {{String(org)}} {% end %}",
    "WHERE {{sql_and(org=String(org))}}",
    "WHERE {{sql_and(org=String(org, defined=False), amount__gte=UInt32(min_amount, 0))}}",
    "WHERE {{sql_and(org=org, amount__gte=UInt32(min_amount, 0))}}",
    "WHERE org IN {{Array(orgs, 'String', 'acme,globex,initech')}}",
    "WHERE 1 -- org = {{String(org)}}\n",
    "WHERE 1 /* org = {{String(org, 'acme')}} */",
    "WHERE event != 'org={{String(org)}}'",
    "WHERE event != $$org={{String(org)}}$$",
    "WHERE org = {{String(org)}} OR 1=1",
    "WHERE org != {{String(org)}}",
    "WHERE NOT org = {{String(org)}}",
    "WHERE (org = {{String(org)}}) = 0",
    "WHERE org IN (SELECT org FROM tenant_events WHERE org = {{String(org)}})",
    // Filters that look pinned and are not: a condition on the value alone (an allow-list),
    // another org let in beside it, the comparison's result compared or tested again.
    "WHERE {{String(org)}} IN ('acme', 'globex', 'initech')",
    "WHERE org IN ({{String(org)}}, 'globex')",
    "WHERE has(['initech', {{String(org)}}], org)",
    "WHERE equals(org, {{String(org)}}) = 0",
    "WHERE org = {{String(org)}} IN (0, 1)",
    "WHERE org = {{String(org)}} ? 1 : 1",
];

/// What an aggregating endpoint may filter its groups with.
const HAVING: &[&str] = &[
    "HAVING org = {{String(org)}}",
    "HAVING 1 {% if defined(org) %} AND org = {{String(org)}} {% end %}",
    "HAVING org = {{String(org)}} OR count() > 0",
];

/// SELECT lists naming the parameter: it filters nothing there. The last one names the value
/// `org`, so a WHERE on `org` in that SELECT compares the value with itself (ClickHouse
/// resolves an alias before a column), and the rows' `org` says the pinned tenant whoever they
/// belong to.
const SELECTED_PARAM: &[&str] = &[
    "{{String(org)}} AS asked, org, user, event, amount",
    "concat('for ', {{String(org, 'nobody')}}) AS asked, org, user, event, amount",
    "{{String(org)}} AS org, user, event, amount",
];

/// One generated pipe: its nodes in order, the last one the endpoint.
struct GeneratedPipe {
    name: String,
    nodes: Vec<PipeNode>,
}

impl GeneratedPipe {
    fn sql(&self) -> String {
        let mut text = String::new();
        for node in &self.nodes {
            let _ = writeln!(text, "  node {}:\n    {}", node.name, node.sql.replace('\n', "\n    "));
        }
        text
    }
}

/// Builds one pipe. Each pipe has a favourite filter most of its SELECTs use, so that whole
/// pipes (not only single nodes) come out strict, optional, unfiltered or muddled.
struct PipeBuilder<'a> {
    rng: &'a mut SplitMix64,
    favourite: &'static str,
}

impl PipeBuilder<'_> {
    fn pipe(rng: &mut SplitMix64, index: usize) -> GeneratedPipe {
        let favourite = rng.pick(FILTERS);
        let mut builder = PipeBuilder { rng, favourite };
        let node_count = 1 + builder.rng.below(3);
        let nodes = (0..node_count)
            .map(|at| {
                let sql = builder.node_sql(at, at + 1 == node_count);
                let sql = if sql.contains("{{") || sql.contains("{%") { format!("%\n{sql}") } else { sql };
                PipeNode::new(format!("n{at}"), sql)
            })
            .collect();
        GeneratedPipe { name: format!("generated_{index:03}"), nodes }
    }

    fn filter(&mut self) -> &'static str {
        if self.rng.chance(60) { self.favourite } else { self.rng.pick(FILTERS) }
    }

    /// The data source or an earlier node.
    fn table(&mut self, earlier_nodes: usize) -> String {
        if earlier_nodes > 0 && self.rng.chance(75) {
            format!("n{}", self.rng.below(earlier_nodes))
        } else {
            "tenant_events".to_owned()
        }
    }

    /// A FROM item: a table, a filtered subquery, or a `UNION ALL` of two.
    fn source(&mut self, earlier_nodes: usize) -> String {
        match self.rng.below(10) {
            0..=5 => self.table(earlier_nodes),
            6 | 7 => {
                let (table, filter) = (self.table(earlier_nodes), self.filter());
                format!("(SELECT {COLUMNS} FROM {table} {filter})")
            }
            _ => {
                let (left, left_filter) = (self.table(earlier_nodes), self.filter());
                let (right, right_filter) = (self.table(earlier_nodes), self.filter());
                format!(
                    "(SELECT {COLUMNS} FROM {left} {left_filter}\n UNION ALL SELECT {COLUMNS} FROM {right} {right_filter})"
                )
            }
        }
    }

    fn node_sql(&mut self, at: usize, is_endpoint: bool) -> String {
        let source = self.source(at);
        if is_endpoint && self.rng.chance(20) {
            let (filter, having) =
                if self.rng.chance(40) { ("", self.rng.pick(HAVING)) } else { (self.filter(), "") };
            return format!(
                "SELECT org, count() AS events, sum(amount) AS total\nFROM {source}\n{filter}\nGROUP BY org {having}\nORDER BY org"
            );
        }
        let select = if self.rng.chance(12) { self.rng.pick(SELECTED_PARAM) } else { COLUMNS };
        let filter = self.filter();
        let order = if is_endpoint { "\nORDER BY org, amount" } else { "" };
        format!("SELECT {select}\nFROM {source}\n{filter}{order}")
    }
}

fn seed() -> u64 {
    std::env::var("PIPE_ISOLATION_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or(DEFAULT_SEED)
}

// --- what a tenant reads -----------------------------------------------------------------------

/// Whose row each `amount` is: amounts are unique in `tenant_events`, so a row that carries
/// one is known even when its `org` column says otherwise.
fn owners_by_amount() -> BTreeMap<u64, String> {
    let source = default_datasources().into_iter().find(|source| source.name == "tenant_events").unwrap();
    let owners: BTreeMap<u64, String> = source
        .rows
        .iter()
        .map(|row| (row["amount"].as_u64().unwrap(), row["org"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(owners.len(), source.rows.len(), "amounts are unique in tenant_events");
    owners
}

/// One request's answer: its status and, for a 200, whose every row is (its `amount`'s owner
/// when it has an amount, else its `org`).
#[derive(Debug)]
struct Answer {
    status: u16,
    orgs: Vec<String>,
    error: String,
}

impl Answer {
    /// Rows of other orgs than `tenant` (all rows when `tenant` is `None`).
    fn foreign(&self, tenant: Option<&str>) -> Vec<&str> {
        self.orgs.iter().map(String::as_str).filter(|org| Some(*org) != tenant).collect()
    }
}

/// What a pipe answered: per pinned tenant, and without `org` in the token.
#[derive(Debug)]
struct Runs {
    pinned: Vec<(&'static str, Answer)>,
    unpinned: Answer,
}

impl Runs {
    /// `tenant: orgs` for every pinned run that returned another org's rows.
    fn leaks(&self) -> Vec<String> {
        self.pinned
            .iter()
            .filter(|(tenant, answer)| !answer.foreign(Some(tenant)).is_empty())
            .map(|(tenant, answer)| format!("{tenant} read {:?}", answer.orgs))
            .collect()
    }

    fn failures(&self) -> impl Iterator<Item = &Answer> {
        self.pinned
            .iter()
            .map(|(_, answer)| answer)
            .chain([&self.unpinned])
            .filter(|answer| answer.status != 200)
    }
}

struct Tenant {
    base_url: String,
    workspace_id: String,
    admin_token: AdminToken,
    http: reqwest::Client,
    owners: BTreeMap<u64, String>,
}

impl Tenant {
    /// A JWT reading `pipe`, signed by the operator's signer with the emulator's admin token.
    fn token(&self, pipe: &str, fixed_params: Option<BTreeMap<String, Value>>) -> String {
        let access = AccessClaims {
            workspace_id: self.workspace_id.clone(),
            name: "pipe_isolation_property".to_owned(),
            scopes: vec![ClaimScope {
                scope_type: "PIPES:READ".to_owned(),
                resource: pipe.to_owned(),
                fixed_params,
                filter: None,
            }],
            limits: None,
        };
        let claims = TinybirdClaims::new(access, Timestamp::now(), SignedDuration::from_hours(1));
        jwt::sign(&claims, &self.admin_token).unwrap()
    }

    async fn read(&self, pipe: &str, pinned: Option<&str>) -> Answer {
        let fixed_params = pinned.map(|org| BTreeMap::from([(PARAM.to_owned(), json!(org))]));
        let response = self
            .http
            .get(format!("{}/v0/pipes/{pipe}.json", self.base_url))
            .bearer_auth(self.token(pipe, fixed_params))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or_default();
        assert!(
            status == 200 || (400..500).contains(&status),
            "pipe {pipe}: the emulator answered {status} (neither 200 nor a refusal): {body}"
        );
        if status != 200 {
            return Answer {
                status,
                orgs: Vec::new(),
                error: body["error"].as_str().unwrap_or_default().to_owned(),
            };
        }
        let orgs = body["data"]
            .as_array()
            .unwrap_or_else(|| panic!("pipe {pipe}: a 200 without data: {body}"))
            .iter()
            .map(|row| {
                let labelled = row["org"].as_str();
                let labelled = labelled.unwrap_or_else(|| panic!("pipe {pipe}: a row without org: {row}"));
                match row["amount"].as_u64().and_then(|amount| self.owners.get(&amount)) {
                    Some(owner) if owner != labelled => format!("{owner} (labelled {labelled})"),
                    _ => labelled.to_owned(),
                }
            })
            .collect();
        Answer { status, orgs, error: String::new() }
    }

    async fn runs(&self, pipe: &str) -> Runs {
        let mut pinned = Vec::new();
        for tenant in TENANTS {
            pinned.push((tenant, self.read(pipe, Some(tenant)).await));
        }
        Runs { pinned, unpinned: self.read(pipe, None).await }
    }
}

fn start_config() -> TinybirdConfig {
    let chdb_python = chdb_python_from_env().unwrap_or_else(|error| {
        panic!(
            "{error}: this test runs pipes in real ClickHouse; run it under hack/with-cluster.sh, or export \
             CHDB_PYTHON as `hack/install-deps.sh --print-env` prints it"
        )
    });
    TinybirdConfig { chdb_python: Some(chdb_python), ..TinybirdConfig::default() }
}

fn verdict_of(tinybird: &TinybirdEmulator, pipe: &str) -> Verdict {
    let description = tinybird.describe_pipe(pipe).unwrap_or_else(|| panic!("pipe {pipe} is not described"));
    let description: PipeDescription = serde_json::from_value(description).unwrap();
    judge(&description, &[PARAM]).remove(0).1
}

// --- the property ------------------------------------------------------------------------------

/// Counts for one verdict.
#[derive(Default)]
struct Tally {
    generated: usize,
    /// Both pinned runs answered 200.
    ran: usize,
    /// A pinned run was refused (4xx): a template or ClickHouse error, or `error()`.
    failed: usize,
    /// A pinned run returned another org's rows.
    leaked: usize,
    /// The run without `org` was refused.
    unpinned_refused: usize,
    /// The run without `org` answered rows.
    unpinned_rows: usize,
}

/// A refusal's message without what varies from pipe to pipe (positions, rendered SQL).
fn refusal_kind(answer: &Answer) -> String {
    let message = answer.error.lines().next().unwrap_or_default();
    let message = message.split(" failed at position").next().unwrap_or_default();
    format!("{} {}", answer.status, message.chars().take(100).collect::<String>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipe_judged_enforced_or_optional_never_returns_another_tenants_rows() {
    let started = Instant::now();
    let seed = seed();
    let tinybird = TinybirdEmulator::start(start_config()).await.unwrap();
    let tenant = Tenant {
        base_url: tinybird.base_url(),
        workspace_id: tinybird.workspace_id().to_owned(),
        admin_token: AdminToken::new(&tinybird.admin_token()),
        http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        owners: owners_by_amount(),
    };

    // The bed is live: an unfiltered pipe leaks and a filtered one does not, as seen here.
    for (name, sql, acme_reads) in [
        (
            "control_unfiltered",
            "SELECT org FROM tenant_events ORDER BY org",
            &["acme", "globex", "initech"][..],
        ),
        ("control_filtered", "%\nSELECT org FROM tenant_events WHERE org = {{String(org)}}", &["acme"][..]),
    ] {
        tinybird.upsert_pipe(PipeDefinition::from_nodes(name, vec![PipeNode::new("n0", sql)])).unwrap();
        let mut orgs = tenant.read(name, Some("acme")).await.orgs;
        orgs.dedup();
        assert_eq!(orgs, acme_reads, "{name}");
    }

    let mut rng = SplitMix64(seed);
    let pipes: Vec<GeneratedPipe> =
        (0..GENERATED_PIPES).map(|index| PipeBuilder::pipe(&mut rng, index)).collect();
    let mut judged = Vec::with_capacity(pipes.len());
    for pipe in pipes {
        tinybird
            .upsert_pipe(PipeDefinition::from_nodes(pipe.name.clone(), pipe.nodes.clone()))
            .unwrap_or_else(|error| panic!("{} is refused: {error}\n{}", pipe.name, pipe.sql()));
        let verdict = verdict_of(&tinybird, &pipe.name);
        judged.push((pipe, verdict));
    }

    let results: Vec<(GeneratedPipe, Verdict, Runs)> = futures::stream::iter(judged)
        .map(|(pipe, verdict)| {
            let tenant = &tenant;
            async move {
                let runs = tenant.runs(&pipe.name).await;
                (pipe, verdict, runs)
            }
        })
        .buffer_unordered(CONCURRENT_PIPES)
        .collect()
        .await;

    let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
    let mut unknown_reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    let mut violations = Vec::new();
    for (pipe, verdict, runs) in &results {
        let tally = tallies.entry(verdict.as_str()).or_default();
        tally.generated += 1;
        let ran = runs.pinned.iter().all(|(_, answer)| answer.status == 200);
        tally.ran += usize::from(ran);
        tally.failed += usize::from(!ran);
        let leaks = runs.leaks();
        tally.leaked += usize::from(!leaks.is_empty());
        tally.unpinned_refused += usize::from(runs.unpinned.status != 200);
        tally.unpinned_rows += usize::from(!runs.unpinned.orgs.is_empty());
        for failure in runs.failures() {
            *refusals.entry(refusal_kind(failure)).or_default() += 1;
        }
        if let Verdict::Unknown(reason) = verdict {
            *unknown_reasons.entry(reason.clone()).or_default() += 1;
        }

        let mut broken = Vec::new();
        if matches!(verdict, Verdict::Enforced | Verdict::Optional) && !leaks.is_empty() {
            broken.push(format!("with org pinned: {}", leaks.join("; ")));
        }
        if *verdict == Verdict::Enforced && !runs.unpinned.foreign(None).is_empty() {
            broken.push(format!("without org: read {:?}", runs.unpinned.orgs));
        }
        if !broken.is_empty() {
            let sql = pipe.sql();
            let shown =
                format!("{} judged {} but {}\n{sql}", pipe.name, verdict.as_str(), broken.join(", and "));
            violations.push((sql, shown));
        }
    }

    for (verdict, tally) in &tallies {
        println!(
            "{verdict}: generated {}, ran {} (failed {}), leaked {}; without org: refused {}, answered rows {}",
            tally.generated,
            tally.ran,
            tally.failed,
            tally.leaked,
            tally.unpinned_refused,
            tally.unpinned_rows
        );
    }
    println!("Unknown, why (count):");
    for (reason, count) in &unknown_reasons {
        println!("  {count:3}  {reason}");
    }
    println!("Refused runs, pinned or not (count):");
    for (refusal, count) in &refusals {
        println!("  {count:3}  {refusal}");
    }
    println!("seed {seed}, {} pipes, {:.1} s", results.len(), started.elapsed().as_secs_f64());

    // Not vacuous: every verdict was generated, and strict pipes did answer rows.
    for verdict in ["Enforced", "Optional", "Unused", "Unknown"] {
        let generated = tallies.get(verdict).map_or(0, |tally| tally.generated);
        assert!(generated >= 10, "seed {seed}: only {generated} pipes judged {verdict}");
    }
    let enforced_answered = results
        .iter()
        .filter(|(_, verdict, runs)| {
            *verdict == Verdict::Enforced && runs.pinned.iter().all(|(_, answer)| !answer.orgs.is_empty())
        })
        .count();
    assert!(enforced_answered >= 10, "seed {seed}: only {enforced_answered} Enforced pipes answered rows");

    // The shortest SQL first, each once: the closest to a minimal reproduction.
    let violating_pipes = violations.len();
    violations.sort_by(|(sql, _), (other, _)| (sql.len(), sql).cmp(&(other.len(), other)));
    violations.dedup_by(|(sql, _), (other, _)| sql == other);
    let shown: Vec<&str> =
        violations.iter().take(SHOWN_VIOLATIONS).map(|(_, shown)| shown.as_str()).collect();
    assert!(
        violating_pipes == 0,
        "seed {seed}: {violating_pipes} pipes judged Enforced or Optional read other tenants' rows; the {} shortest:\n{}",
        shown.len(),
        shown.join("\n")
    );
}
