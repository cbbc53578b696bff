//! A watcher of every token Secret of a test namespace, as an SRE would run it during a fault:
//! it lists the Secrets every [`POLL`] and checks each token against the workspace's CURRENT
//! admin token (the Tinybird emulator's) and the clock.
//!
//! A token is *stale* when it is expired or signed with a key other than the current one. A
//! stale stretch starts when the key changed (a token signed with an older key) or when the token
//! expired, and ends at the first poll that finds a current token in that Secret: measured that
//! way, a stretch is an upper bound (by at most one poll and one list). While the API server
//! cannot be read (stopped, or etcd paused: each list is bounded by [`LIST_TIMEOUT`]), the last
//! tokens seen are judged at the current time: nobody can change them meanwhile.
//!
//! A Secret seen once is *lost* when a later successful list no longer has it, or has it
//! without a token.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::ListParams;
use tenant_access::core::admin_token::AdminToken;
use tenant_access::core::jwt::ParsedToken;
use tenant_access::core::well_known::LABEL_TENANT_ACCESS;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::support::{TIMEOUT, token_of};

/// How often the Secrets are listed.
pub const POLL: Duration = Duration::from_millis(300);
/// Longest a list may take before the poll judges the last tokens seen.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(2);

/// What the watcher found so far.
#[derive(Debug, Clone, Default)]
pub struct WatchReport {
    /// Token Secrets seen.
    pub secrets: usize,
    /// The longest stale stretch of any Secret (ongoing ones up to now).
    pub max_stale: Duration,
    /// The Secret with that stretch.
    pub worst: Option<String>,
    /// Secrets deleted or emptied after they were seen with a token.
    pub lost: Vec<String>,
    /// Secrets whose last token seen is stale.
    pub stale_now: Vec<String>,
    /// Per Secret: how many different tokens it held while watched.
    pub tokens_seen: BTreeMap<String, usize>,
    /// The earliest `exp` of the last tokens seen (unix seconds).
    pub earliest_expiry: Option<i64>,
    /// Successful and failed (or timed-out) lists.
    pub polls: u64,
    pub failed_polls: u64,
}

impl WatchReport {
    /// Asserts nothing was lost and no Secret was stale longer than `bound` (`fault` names the
    /// fault in the message).
    pub fn assert_within(&self, bound: Duration, fault: &str) {
        assert!(self.lost.is_empty(), "{fault}: token Secrets lost: {:?}", self.lost);
        assert!(
            self.max_stale <= bound,
            "{fault}: Secret {:?} held an expired token or one signed with a non-current key for {:.1}s \
             (bound {}s)",
            self.worst,
            self.max_stale.as_secs_f64(),
            bound.as_secs()
        );
    }

    /// The most tokens any one Secret held while watched.
    pub fn most_tokens(&self) -> usize {
        self.tokens_seen.values().copied().max().unwrap_or(0)
    }
}

#[derive(Debug, Default)]
struct Watched {
    token: Option<String>,
    tokens: BTreeSet<String>,
    stale_since: Option<f64>,
    max_stale: f64,
    lost: bool,
}

#[derive(Debug)]
struct State {
    key: AdminToken,
    /// When the current key became current (unix seconds).
    key_since: f64,
    secrets: BTreeMap<String, Watched>,
    polls: u64,
    failed_polls: u64,
}

/// Watches the token Secrets of one namespace until dropped.
pub struct Watcher {
    state: Arc<Mutex<State>>,
    tasks: Vec<JoinHandle<()>>,
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

impl Watcher {
    /// Starts watching the Secrets of `secrets` (a namespaced API) labelled as token Secrets,
    /// against the key `admin_token` follows (the Tinybird emulator's current admin token).
    pub async fn start(secrets: Api<Secret>, mut admin_token: watch::Receiver<String>) -> Self {
        let key = AdminToken::new(&admin_token.borrow_and_update());
        let state = Arc::new(Mutex::new(State {
            key,
            key_since: now_secs(),
            secrets: BTreeMap::new(),
            polls: 0,
            failed_polls: 0,
        }));
        let keys = {
            let state = state.clone();
            tokio::spawn(async move {
                while admin_token.changed().await.is_ok() {
                    let key = AdminToken::new(&admin_token.borrow_and_update());
                    let mut state = state.lock().unwrap();
                    state.key = key;
                    state.key_since = now_secs();
                }
            })
        };
        let polls = {
            let state = state.clone();
            tokio::spawn(async move {
                let params = ListParams::default().labels(LABEL_TENANT_ACCESS);
                loop {
                    let listed = tokio::time::timeout(LIST_TIMEOUT, secrets.list(&params)).await;
                    let listed = listed.ok().and_then(Result::ok).map(|list| list.items);
                    state.lock().unwrap().observe(listed.as_deref(), now_secs());
                    tokio::time::sleep(POLL).await;
                }
            })
        };
        let watcher = Self { state, tasks: vec![keys, polls] };
        // The first poll has happened before anything else does.
        crate::support::eventually("the watcher's first list", || async { watcher.report().polls > 0 }).await;
        watcher
    }

    /// What the watcher found so far.
    pub fn report(&self) -> WatchReport {
        self.state.lock().unwrap().report(now_secs())
    }

    /// Waits until the watcher has seen `count` Secrets, each with a current token (not stale),
    /// on a successful list that began after this call: the report then.
    pub async fn wait_all_current(&self, count: usize) -> WatchReport {
        let since = self.report().polls;
        let deadline = tokio::time::Instant::now() + TIMEOUT * 2;
        loop {
            let report = self.report();
            if report.polls > since + 1 && report.secrets >= count && report.stale_now.is_empty() {
                return report;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {count} current token Secrets: {report:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every one of `count` Secrets holds a current token that expires at or after
    /// `expiry` (unix seconds): with `expiry` = a moment + `renewBefore`, every renewal due by
    /// that moment has happened. Returns when that was first seen.
    pub async fn wait_all_expiring_after(&self, count: usize, expiry: i64) -> std::time::Instant {
        let deadline = tokio::time::Instant::now() + TIMEOUT * 2;
        loop {
            let report = self.report();
            if report.secrets >= count
                && report.stale_now.is_empty()
                && report.earliest_expiry.is_some_and(|exp| exp >= expiry)
            {
                return std::time::Instant::now();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {count} token Secrets expiring after {expiry}: {report:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops watching; the final report.
    pub fn stop(self) -> WatchReport {
        self.report()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl State {
    /// Since when (unix seconds) `token` has been stale, or `None` while it is current.
    fn stale_since(&self, token: &str, now: f64, first_seen: f64) -> Option<f64> {
        let Ok(parsed) = ParsedToken::parse(token) else {
            return Some(first_seen);
        };
        let expired_at = parsed.expires_at().map_or(f64::MIN, |exp| exp.as_second() as f64);
        let expired = (expired_at <= now).then_some(expired_at);
        let foreign = (!parsed.signature_matches(&self.key)).then_some(self.key_since);
        match (expired, foreign) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn observe(&mut self, listed: Option<&[Secret]>, now: f64) {
        match listed {
            Some(items) => {
                self.polls += 1;
                let mut present = BTreeSet::new();
                for secret in items {
                    let name = secret.metadata.name.clone().unwrap_or_default();
                    present.insert(name.clone());
                    let token = token_of(secret).filter(|t| !t.is_empty());
                    let watched = self.secrets.entry(name).or_default();
                    match token {
                        Some(token) => {
                            watched.tokens.insert(token.clone());
                            watched.token = Some(token);
                        }
                        None if watched.token.is_some() => watched.lost = true,
                        None => {}
                    }
                }
                for (name, watched) in &mut self.secrets {
                    if !present.contains(name) && watched.token.is_some() {
                        watched.lost = true;
                    }
                }
            }
            None => self.failed_polls += 1,
        }
        let verdicts: Vec<(String, Option<f64>)> = self
            .secrets
            .iter()
            .filter_map(|(name, w)| {
                let token = w.token.as_deref()?;
                Some((name.clone(), self.stale_since(token, now, w.stale_since.unwrap_or(now))))
            })
            .collect();
        for (name, since) in verdicts {
            let watched = self.secrets.get_mut(&name).unwrap();
            match since {
                Some(since) => {
                    let since = watched.stale_since.map_or(since, |s| s.min(since));
                    watched.stale_since = Some(since);
                    watched.max_stale = watched.max_stale.max(now - since);
                }
                None => {
                    // The stretch ends at this poll (an upper bound of its true end).
                    if let Some(since) = watched.stale_since.take() {
                        watched.max_stale = watched.max_stale.max(now - since);
                    }
                }
            }
        }
    }

    fn report(&self, now: f64) -> WatchReport {
        let mut report = WatchReport {
            secrets: self.secrets.len(),
            polls: self.polls,
            failed_polls: self.failed_polls,
            ..WatchReport::default()
        };
        let mut worst = 0.0_f64;
        for (name, watched) in &self.secrets {
            let ongoing = watched.stale_since.map_or(0.0, |since| now - since);
            let stale = watched.max_stale.max(ongoing);
            if stale > worst {
                worst = stale;
                report.worst = Some(name.clone());
            }
            if watched.lost {
                report.lost.push(name.clone());
            }
            if watched.stale_since.is_some() {
                report.stale_now.push(name.clone());
            }
            report.tokens_seen.insert(name.clone(), watched.tokens.len());
            if let Some(parsed) = watched.token.as_deref().and_then(|t| ParsedToken::parse(t).ok()) {
                let exp = parsed.expires_at().map(jiff::Timestamp::as_second);
                report.earliest_expiry = min_some(report.earliest_expiry, exp);
            }
        }
        report.max_stale = Duration::from_secs_f64(worst.max(0.0));
        report
    }
}

fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
