//! The verdicts a workspace's `pipeIsolation: Enforce` policy decides on, before anything is
//! issued ([`crate::core::isolation_report::enforce`]).
//!
//! A pipe some registered TenantAccess probes is judged from the description its last existence
//! check read (the health scheduler's). A pipe nobody probes (a new TenantAccess, one refused
//! under `Enforce`, health checks disabled) is described here, with the same free request
//! (`GET /v0/pipes/{pipe}` with the admin token, counted as an existence check, never billed),
//! and its verdicts are kept for [`ENFORCE_RECHECK`]: one request per pipe and interval,
//! whatever the number of TenantAccesses granting it. A verdict of the health checks is kept
//! here too, so that the newest reading stands when a TenantAccess refused for it leaves the
//! health checks (an older reading of this gate would admit it again, and the next existence
//! check refuse it, in a loop). Only verdicts are kept (never the description), in at most
//! [`MAX_JUDGED_PIPES`] entries.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;

use super::context::Context;
use crate::adapters::health::HttpProber;
use crate::api::ParamIsolation;
use crate::core::isolation_report::{ENFORCE_RECHECK, merge_params, pinned_params};
use crate::core::signing_workspace::SigningWorkspace;
use crate::core::validate::ValidatedAccess;

/// Most pipes whose verdicts are kept (a few hundred bytes each).
pub const MAX_JUDGED_PIPES: usize = 4096;

/// Verdicts read outside the health checks, by workspace (`api_url#workspace_id`) and pipe.
#[derive(Debug)]
pub struct IsolationGate {
    judged: Mutex<HashMap<(String, String), Judged>>,
    /// When this process started judging.
    started: Timestamp,
    /// How long a reading stays in its workspace's list ([`IsolationGate::recent`]).
    list_window: Duration,
}

#[derive(Debug)]
struct Judged {
    read_at: Timestamp,
    /// By the params judged.
    verdicts: HashMap<Vec<String>, Vec<ParamIsolation>>,
}

impl IsolationGate {
    /// A gate of a process started at `started`, whose TenantAccesses are reconciled at least
    /// every `resync`: a pipe read here is read again within that (at every reconcile of a
    /// TenantAccess that grants it and does not probe it, every [`ENFORCE_RECHECK`] for a refused
    /// one), so its reading stays listed for `resync` and a margin.
    #[must_use]
    pub fn new(started: Timestamp, resync: Duration) -> Self {
        Self { judged: Mutex::default(), started, list_window: resync + ENFORCE_RECHECK * 2 }
    }

    /// How long since this process started judging.
    #[must_use]
    pub fn uptime(&self, now: Timestamp) -> Duration {
        now.duration_since(self.started).unsigned_abs()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Judged>> {
        self.judged.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn kept(&self, key: &(String, String), params: &[String], now: Timestamp) -> Option<Vec<ParamIsolation>> {
        let judged = self.lock();
        let entry = judged.get(key)?;
        let fresh = now.duration_since(entry.read_at).unsigned_abs() < ENFORCE_RECHECK;
        fresh.then(|| entry.verdicts.get(params).cloned()).flatten()
    }

    fn keep(
        &self,
        key: (String, String),
        params: Vec<String>,
        verdicts: Vec<ParamIsolation>,
        now: Timestamp,
    ) {
        let mut judged = self.lock();
        if judged.len() >= MAX_JUDGED_PIPES && !judged.contains_key(&key) {
            judged.retain(|_, entry| now.duration_since(entry.read_at).unsigned_abs() < ENFORCE_RECHECK);
            if judged.len() >= MAX_JUDGED_PIPES
                && let Some(oldest) = judged.iter().min_by_key(|(_, e)| e.read_at).map(|(k, _)| k.clone())
            {
                judged.remove(&oldest);
            }
        }
        let entry = judged.entry(key).or_insert_with(|| Judged { read_at: now, verdicts: HashMap::new() });
        if entry.read_at != now {
            // A new reading replaces what an older one judged.
            entry.verdicts.clear();
            entry.read_at = now;
        }
        entry.verdicts.insert(params, verdicts);
    }

    /// The pipes of `workspace` (`api_url#workspace_id`) read here within the list window (see
    /// [`IsolationGate::new`]), with their verdicts on every param judged: a pipe still granted
    /// never drops out between two readings, one no longer granted leaves after the window.
    #[must_use]
    pub fn recent(&self, workspace: &str, now: Timestamp) -> crate::runtime::health::PipeVerdicts {
        let recent = self.list_window;
        self.lock()
            .iter()
            .filter(|((w, _), entry)| {
                w == workspace && now.duration_since(entry.read_at).unsigned_abs() < recent
            })
            .map(|((_, pipe), entry)| (pipe.clone(), merge_params(entry.verdicts.values())))
            .collect()
    }

    /// How many pipes' verdicts are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The verdicts on the params `access` pins, by pipe: those of the health checks' descriptions,
/// else read now (or kept from a reading less than [`ENFORCE_RECHECK`] old). A pipe that could
/// not be described (unreachable, missing) is left out: not judged.
pub(super) async fn judged<'a>(
    access: &'a ValidatedAccess,
    signer: &SigningWorkspace,
    ctx: &Context,
) -> BTreeMap<&'a str, Vec<ParamIsolation>> {
    let mut judged = BTreeMap::new();
    for (pipe, params) in pinned_params(access) {
        if let Some(verdicts) = judge_one(access, signer, ctx, pipe, &params).await {
            judged.insert(pipe, verdicts);
        }
    }
    judged
}

/// The verdicts a TenantAccess's status reports, by pipe: for a pipe its health checks probe
/// (`probed`), the scheduler's, from its existence checks (none yet after a restart: the status
/// keeps its verdicts until the first check); for a pipe they skip (a Clerk template's scope
/// without `sampleParams`), read here as [`judge_one`] does, at most once per pipe every
/// [`ENFORCE_RECHECK`]. With health checks off (`probed` is `None`) nothing is reported.
pub(super) async fn reported<'a>(
    access: &'a ValidatedAccess,
    signer: &SigningWorkspace,
    probed: Option<&std::collections::HashSet<String>>,
    ctx: &Context,
) -> BTreeMap<&'a str, Vec<ParamIsolation>> {
    let mut judged = BTreeMap::new();
    let Some(probed) = probed else { return judged };
    let key = crate::runtime::health::AccessKey::new(&access.namespace, &access.name);
    for (pipe, params) in pinned_params(access) {
        let verdicts = match ctx.health.pipe_verdicts(&key, pipe, &params) {
            Some(verdicts) => Some(verdicts),
            None if !probed.contains(pipe) => judge_one(access, signer, ctx, pipe, &params).await,
            None => None,
        };
        if let Some(verdicts) = verdicts {
            judged.insert(pipe, verdicts);
        }
    }
    judged
}

/// The verdicts on `params` of `pipe`, as [`judged`] finds them.
pub(super) async fn judge_one(
    access: &ValidatedAccess,
    signer: &SigningWorkspace,
    ctx: &Context,
    pipe: &str,
    params: &[&str],
) -> Option<Vec<ParamIsolation>> {
    let workspace = crate::runtime::health::workspace_name(&signer.api_url, &signer.workspace_id);
    let key = (workspace, pipe.to_owned());
    let wanted: Vec<String> = params.iter().map(|p| (*p).to_owned()).collect();
    if let Some(verdicts) =
        ctx.health.workspace_pipe_verdicts(&signer.api_url, &signer.workspace_id, pipe, params)
    {
        // The newest reading: what this gate answers once nobody probes the pipe any more (the
        // TenantAccess refused for it), not an older reading of its own.
        ctx.isolation_gate.keep(key, wanted, verdicts.clone(), ctx.now());
        return Some(verdicts);
    }
    if let Some(verdicts) = ctx.isolation_gate.kept(&key, &wanted, ctx.now()) {
        return Some(verdicts);
    }
    let timeout = Duration::try_from(access.health.timeout).unwrap_or(Duration::from_secs(5));
    let prober = HttpProber::with_client(ctx.apis.tinybird.clone());
    match prober.judge_pipe(&signer.api_url, pipe, (&signer.key, timeout), params).await {
        Ok(verdicts) => {
            ctx.isolation_gate.keep(key, wanted, verdicts.clone(), ctx.now());
            Some(verdicts)
        }
        Err(why) => {
            tracing::debug!(%pipe, %why, "pipe not described: its isolation is not judged");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(v: &str) -> Vec<ParamIsolation> {
        vec![ParamIsolation { param: "org".into(), verdict: v.into(), message: None }]
    }

    #[test]
    fn verdicts_are_kept_for_the_recheck_interval_and_bounded() {
        let t0: Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
        let gate = IsolationGate::new(t0, Duration::from_secs(600));
        let key = ("https://api#w".to_owned(), "p".to_owned());
        let org = vec!["org".to_owned()];
        gate.keep(key.clone(), org.clone(), verdict("Unused"), t0);
        assert_eq!(gate.kept(&key, &org, t0 + jiff::SignedDuration::from_secs(29)), Some(verdict("Unused")));
        assert_eq!(gate.kept(&key, &org, t0 + jiff::SignedDuration::from_secs(30)), None, "read again");
        assert_eq!(gate.kept(&key, &["tenant".to_owned()], t0), None, "other params: not judged yet");
        // A newer reading replaces the older verdicts.
        let t1 = t0 + jiff::SignedDuration::from_secs(31);
        gate.keep(key.clone(), org.clone(), verdict("Enforced"), t1);
        assert_eq!(gate.kept(&key, &org, t1), Some(verdict("Enforced")));

        // Listed for the resync and a margin (600 + 60 s), whatever the recheck interval.
        let listed = |at: Timestamp| gate.recent("https://api#w", at).len();
        assert_eq!(listed(t1 + jiff::SignedDuration::from_secs(659)), 1, "still granted: still listed");
        assert_eq!(listed(t1 + jiff::SignedDuration::from_secs(660)), 0, "no longer read: gone");

        for i in 0..MAX_JUDGED_PIPES + 10 {
            gate.keep(("w".into(), format!("p{i}")), org.clone(), verdict("Enforced"), t1);
        }
        assert!(gate.len() <= MAX_JUDGED_PIPES, "{}", gate.len());
    }
}
