//! What a TenantAccess reports of its pipes' isolation: for each granted pipe, whether its SQL
//! filters by each param the TenantAccess pins there (the keys of the scope's `fixedParams`,
//! which include every param the workspace's policy requires), judged by
//! [`crate::core::pipe_isolation`] from the description the free existence check read.
//! Pure: the runtime hands in the descriptions it has, and gets back the status entries, the
//! `PipesIsolated` condition and the verdicts that changed.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::api::{EndpointStatus, ParamIsolation, SCOPE_PIPES_READ};
use crate::core::conditions::DesiredCondition;
use crate::core::pipe_isolation::{PipeDescription, Verdict, judge};
use crate::core::reconcile::admit::{Refusal, Retry, revoke_why};
use crate::core::validate::ValidatedAccess;
use crate::core::well_known::{condition, reason};

/// What a workspace's policy does with a granted pipe whose SQL never filters by a param the
/// TenantAccess pins (`spec.policy.pipeIsolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationPolicy {
    /// Reported; the token is issued (the default).
    #[default]
    Warn,
    /// Nothing is issued, and what was issued is withdrawn, until the pipe filters again.
    Enforce,
}

impl IsolationPolicy {
    /// `spec.policy.pipeIsolation` read (`None` when it is not a policy).
    #[must_use]
    pub fn parse(text: Option<&str>) -> Option<Self> {
        match text {
            None | Some("Warn") => Some(Self::Warn),
            Some("Enforce") => Some(Self::Enforce),
            Some(_) => None,
        }
    }
}

/// How often the pipes of a TenantAccess refused under `Enforce` are described again (they are
/// out of the health checks while it is refused): a fixed pipe is noticed within this long.
pub const ENFORCE_RECHECK: Duration = Duration::from_secs(30);

/// Whether the workspace's policy refuses `access` for what its pipes' SQL does (`judged`: the
/// verdicts known of its pinned params, by pipe). Under `Enforce`, a pinned param a granted
/// pipe never filters by (`Unused`) refuses the whole TenantAccess, both outputs, and withdraws
/// what was issued. `Optional` refuses neither output: the operator's tokens always carry the
/// param, and so do the Clerk templates it writes (every shortcode is rendered with a fallback,
/// the shortcode's own or the workspace's `clerkMissingIdentityValue`, so a user without the
/// identity gets a value matching no tenant, never a missing param). `Unknown`, or a pipe not
/// judged, refuses nothing: the analyser's doubts are reported, not enforced.
#[must_use]
pub fn enforce(access: &ValidatedAccess, judged: &BTreeMap<&str, Vec<ParamIsolation>>) -> Option<Refusal> {
    if access.isolation_policy != IsolationPolicy::Enforce {
        return None;
    }
    let unused: Vec<String> = judged
        .iter()
        .flat_map(|(pipe, verdicts)| {
            verdicts
                .iter()
                .filter(|i| i.verdict == Verdict::Unused.as_str())
                .map(move |i| format!("{pipe} ({})", i.param))
        })
        .collect();
    if unused.is_empty() {
        return None;
    }
    Some(Refusal {
        reason: reason::PIPE_NOT_ISOLATED,
        message: format!(
            "the SQL of {} never filters by the pinned param, so every tenant would read every row, and workspace {} enforces pipe isolation (spec.policy.pipeIsolation: Enforce): nothing is issued, and what was issued is withdrawn, until the pipe filters by it (e.g. WHERE org = {{{{String(org, required=True)}}}}) or the scope is removed; the pipe is described again every {}s",
            unused.join(", "),
            access.workspace_name,
            ENFORCE_RECHECK.as_secs()
        ),
        revoke: Some(revoke_why::PIPE_NOT_ISOLATED),
        retry: Retry::After(ENFORCE_RECHECK),
    })
}

/// The `PipesIsolated` condition of verdicts judged outside the health checks (a TenantAccess
/// refused under `Enforce` has no probed endpoints to carry them).
#[must_use]
pub fn condition_of_judged(judged: &BTreeMap<&str, Vec<ParamIsolation>>) -> Option<DesiredCondition> {
    let verdicts: Vec<(&str, &ParamIsolation)> =
        judged.iter().flat_map(|(pipe, verdicts)| verdicts.iter().map(move |i| (*pipe, i))).collect();
    condition_of(&verdicts)
}

/// A pipe's description as the runtime knows it: read, or why it could not be.
pub type Described<'a> = Option<Result<&'a PipeDescription, &'a str>>;

/// The params `access` pins on each pipe it is granted, in spec order (pipes without pinned
/// params are left out: nothing to judge).
#[must_use]
pub fn pinned_params(access: &ValidatedAccess) -> Vec<(&str, Vec<&str>)> {
    access
        .scopes
        .iter()
        .filter(|scope| scope.scope_type == SCOPE_PIPES_READ && !scope.fixed_params.is_empty())
        .map(|scope| (scope.resource.as_str(), scope.fixed_params.keys().map(String::as_str).collect()))
        .collect()
}

/// Judges the pinned params of one pipe (`None`: its description is not known yet).
#[must_use]
pub fn judge_pipe(described: Described<'_>, params: &[&str]) -> Option<Vec<ParamIsolation>> {
    let judged = match described? {
        Ok(description) => judge(description, params),
        Err(why) => {
            params.iter().map(|param| ((*param).to_owned(), Verdict::Unknown(why.to_owned()))).collect()
        }
    };
    Some(judged.into_iter().map(|(param, verdict)| entry(param, &verdict)).collect())
}

fn entry(param: String, verdict: &Verdict) -> ParamIsolation {
    let message = match verdict {
        Verdict::Enforced => None,
        Verdict::Optional => Some(format!(
            "filters only when {param} has a value: safe for the operator's tokens, which always carry one (a Clerk template's shortcodes get a fallback), unsafe for a request without it"
        )),
        Verdict::Unused => {
            Some(format!("the pipe's SQL never filters by {param}: every tenant reads every row"))
        }
        Verdict::Unknown(why) => Some(why.clone()),
    };
    ParamIsolation { param, verdict: verdict.as_str().to_owned(), message }
}

/// One verdict per param from verdicts judged for several sets of params (a param judged in
/// more than one set has the same verdict in each: the verdict of a param does not depend on
/// the others), by param name.
pub fn merge_params<'a>(judged: impl Iterator<Item = &'a Vec<ParamIsolation>>) -> Vec<ParamIsolation> {
    let mut by_param: BTreeMap<&str, &ParamIsolation> = BTreeMap::new();
    for verdict in judged.flatten() {
        by_param.entry(verdict.param.as_str()).or_insert(verdict);
    }
    by_param.into_values().cloned().collect()
}

/// How bad a verdict is, worst first (for lists).
fn severity(verdict: &str) -> u8 {
    match verdict {
        "Unused" => 0,
        "Unknown" => 1,
        "Optional" => 2,
        _ => 3,
    }
}

/// A workspace's `status.pipes` (and `pipesNotListed`) from its judged pipes: one entry per
/// pipe (the first reading given wins), the worst first, then by name, at most
/// [`crate::api::limits::MAX_LISTED_PIPES`].
#[must_use]
pub fn workspace_pipes(
    judged: impl IntoIterator<Item = (String, Vec<ParamIsolation>)>,
) -> (Vec<crate::api::WorkspacePipeStatus>, Option<u32>) {
    let mut by_pipe: BTreeMap<String, Vec<ParamIsolation>> = BTreeMap::new();
    for (pipe, verdicts) in judged {
        by_pipe.entry(pipe).or_insert(verdicts);
    }
    let mut pipes: Vec<crate::api::WorkspacePipeStatus> = by_pipe
        .into_iter()
        .map(|(name, isolation)| crate::api::WorkspacePipeStatus { name, isolation })
        .collect();
    pipes.sort_by(|a, b| {
        let worst =
            |p: &crate::api::WorkspacePipeStatus| p.isolation.iter().map(|i| severity(&i.verdict)).min();
        worst(a).cmp(&worst(b)).then_with(|| a.name.cmp(&b.name))
    });
    let max = crate::api::limits::MAX_LISTED_PIPES;
    let not_listed = pipes.len().checked_sub(max).filter(|n| *n > 0);
    pipes.truncate(max);
    (pipes, not_listed.map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
}

/// What a workspace's `status.pipes` should become (`None`: kept as it is): the pipes judged
/// now, and while `warming_up` (just after a start, before every pipe is described again) the
/// pipes `previous` lists that are not judged yet, as they were.
#[must_use]
pub fn pipes_wanted(
    judged: Vec<(String, Vec<ParamIsolation>)>,
    previous: &[crate::api::WorkspacePipeStatus],
    warming_up: bool,
) -> Option<(Vec<crate::api::WorkspacePipeStatus>, Option<u32>)> {
    if judged.is_empty() && (warming_up || previous.is_empty()) {
        return None;
    }
    let kept = previous.iter().filter(|_| warming_up).map(|p| (p.name.clone(), p.isolation.clone()));
    // The judged first: the first reading given of a pipe wins.
    Some(workspace_pipes(judged.into_iter().chain(kept)))
}

/// What the isolation stage reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationReport {
    /// The `PipesIsolated` condition (`None`: no pipe judged yet).
    pub condition: Option<DesiredCondition>,
    /// `(pipe, param, verdict before, verdict now)` for each verdict that changed (a first
    /// verdict has no "before").
    pub changed: Vec<(String, String, Option<String>, String)>,
}

/// Writes each judged pipe's verdicts into `endpoints`; a pipe not judged now (its description
/// not read yet, as after a restart) keeps the verdicts `previous` had for it. Says what
/// changed since `previous`, and the condition.
pub fn report(
    endpoints: &mut [EndpointStatus],
    previous: &[EndpointStatus],
    judged: &BTreeMap<&str, Vec<ParamIsolation>>,
) -> IsolationReport {
    let before: BTreeMap<(&str, &str), &str> = previous
        .iter()
        .flat_map(|e| {
            e.isolation.iter().map(move |i| ((e.resource.as_str(), i.param.as_str()), i.verdict.as_str()))
        })
        .collect();
    let mut changed = Vec::new();
    for endpoint in endpoints.iter_mut() {
        if let Some(verdicts) = judged.get(endpoint.resource.as_str()) {
            endpoint.isolation.clone_from(verdicts);
        } else if endpoint.isolation.is_empty()
            && let Some(kept) = previous.iter().find(|e| e.resource == endpoint.resource)
        {
            endpoint.isolation.clone_from(&kept.isolation);
        }
        for isolation in &endpoint.isolation {
            let was = before.get(&(endpoint.resource.as_str(), isolation.param.as_str())).copied();
            if was != Some(isolation.verdict.as_str()) {
                changed.push((
                    endpoint.resource.clone(),
                    isolation.param.clone(),
                    was.map(str::to_owned),
                    isolation.verdict.clone(),
                ));
            }
        }
    }
    let verdicts: Vec<(&str, &ParamIsolation)> =
        endpoints.iter().flat_map(|e| e.isolation.iter().map(move |i| (e.resource.as_str(), i))).collect();
    IsolationReport { condition: condition_of(&verdicts), changed }
}

/// `PipesIsolated`: true when every judged param is `Enforced` or `Optional` (the operator's
/// tokens always carry a value); false naming the pipes whose SQL does not filter by a pinned
/// param (`PipeNotIsolated`), else those it could not analyse (`IsolationUnknown`).
fn condition_of(judged: &[(&str, &ParamIsolation)]) -> Option<DesiredCondition> {
    let verdicts = || judged.iter().copied();
    verdicts().next()?;
    let listed = |verdict: &str| {
        let pipes: Vec<String> = verdicts()
            .filter(|(_, i)| i.verdict == verdict)
            .map(|(pipe, i)| format!("{pipe} ({})", i.param))
            .collect();
        (!pipes.is_empty()).then(|| pipes.join(", "))
    };
    Some(if let Some(unused) = listed("Unused") {
        DesiredCondition::fails(
            condition::PIPES_ISOLATED,
            reason::PIPE_NOT_ISOLATED,
            format!(
                "the SQL of {unused} never filters by the pinned param: every tenant reads every row; add the filter to the pipe (e.g. WHERE org = {{{{String(org, required=True)}}}}) or remove the scope"
            ),
        )
    } else if let Some(unknown) = listed("Unknown") {
        let why = verdicts()
            .find(|(_, i)| i.verdict == "Unknown")
            .and_then(|(_, i)| i.message.clone())
            .unwrap_or_default();
        DesiredCondition::fails(
            condition::PIPES_ISOLATED,
            reason::ISOLATION_UNKNOWN,
            format!("the operator cannot tell whether {unknown} filters by the pinned param: {why}"),
        )
    } else {
        DesiredCondition::holds(
            condition::PIPES_ISOLATED,
            reason::ISOLATED,
            "every granted pipe's SQL filters by the params this TenantAccess pins",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe(sql: &str) -> PipeDescription {
        serde_json::from_value(serde_json::json!({
            "id": "t_1", "name": "p", "endpoint": "n_1",
            "nodes": [{"id": "n_1", "name": "endpoint", "sql": sql, "dependencies": ["events"]}],
        }))
        .unwrap()
    }

    fn endpoint(resource: &str) -> EndpointStatus {
        EndpointStatus {
            resource: resource.into(),
            healthy: true,
            reason: "Healthy".into(),
            ..Default::default()
        }
    }

    #[test]
    fn reports_each_verdict_the_condition_and_what_changed() {
        let strict = pipe("%\nSELECT * FROM events WHERE org = {{String(org, required=True)}}");
        let open = pipe("%\nSELECT * FROM events");
        let judged = BTreeMap::from([
            ("strict", judge_pipe(Some(Ok(&strict)), &["org"]).unwrap()),
            ("open", judge_pipe(Some(Ok(&open)), &["org"]).unwrap()),
        ]);
        let mut endpoints = vec![endpoint("strict"), endpoint("open"), endpoint("unchecked")];
        let first = report(&mut endpoints, &[], &judged);
        assert_eq!(endpoints[0].isolation[0].verdict, "Enforced");
        assert_eq!(endpoints[1].isolation[0].verdict, "Unused");
        assert!(endpoints[2].isolation.is_empty(), "not checked yet: nothing said");
        let condition = first.condition.unwrap();
        assert!(!condition.status);
        assert_eq!(condition.reason, reason::PIPE_NOT_ISOLATED);
        assert!(
            condition.message.contains("open (org)") && !condition.message.contains("strict"),
            "{condition:?}"
        );
        assert_eq!(first.changed.len(), 2, "two first verdicts");

        // Not judged now (a restart, the descriptions not read yet): the verdicts stay.
        let mut fresh: Vec<EndpointStatus> = endpoints.iter().map(|e| endpoint(&e.resource)).collect();
        let kept = report(&mut fresh, &endpoints, &BTreeMap::new());
        assert_eq!(fresh, endpoints, "a restart keeps the verdicts");
        assert!(kept.changed.is_empty() && kept.condition == Some(condition.clone()));

        // Judged again, unchanged: nothing to tell. The open pipe fixed: one change.
        let previous = endpoints.clone();
        let again = report_again(&previous, &judged);
        assert!(again.changed.is_empty());
        let fixed = BTreeMap::from([("open", judge_pipe(Some(Ok(&strict)), &["org"]).unwrap())]);
        let mut endpoints = previous.clone();
        let after = report(&mut endpoints, &previous, &fixed);
        assert_eq!(
            after.changed,
            vec![("open".into(), "org".into(), Some("Unused".into()), "Enforced".into())]
        );
        assert!(after.condition.unwrap().status);
    }

    fn report_again(
        previous: &[EndpointStatus],
        judged: &BTreeMap<&str, Vec<ParamIsolation>>,
    ) -> IsolationReport {
        let mut endpoints = previous.to_vec();
        report(&mut endpoints, previous, judged)
    }

    fn access(policy: IsolationPolicy) -> ValidatedAccess {
        let spec: crate::api::TenantAccessSpec = serde_json::from_value(serde_json::json!({
            "workspaceRef": {"name": "shared"},
            "scopes": [{"resource": "open", "fixedParams": {"org": "acme"}}, {"resource": "guarded", "fixedParams": {"org": "acme"}}],
            "secret": {},
        }))
        .unwrap();
        let mut access = crate::core::validate::validate_tenant_access("acme", "dash", &spec).unwrap();
        access.isolation_policy = policy;
        access
    }

    #[test]
    fn enforce_refuses_and_withdraws_for_an_unused_param_only() {
        let open = pipe("%\nSELECT * FROM events");
        let guarded = pipe("%\nSELECT * FROM events {% if defined(org) %} WHERE org = {{org}} {% end %}");
        let doubtful = pipe("%\nSELECT * FROM events WHERE org = {{org}} OR 1");
        let verdicts = |description: &PipeDescription| judge_pipe(Some(Ok(description)), &["org"]).unwrap();
        let judged = BTreeMap::from([("open", verdicts(&open)), ("guarded", verdicts(&guarded))]);

        assert_eq!(enforce(&access(IsolationPolicy::Warn), &judged), None, "Warn reports, never refuses");
        let refusal = enforce(&access(IsolationPolicy::Enforce), &judged).unwrap();
        assert_eq!(refusal.reason, reason::PIPE_NOT_ISOLATED);
        assert_eq!(refusal.revoke, Some(revoke_why::PIPE_NOT_ISOLATED), "what was issued is withdrawn");
        assert_eq!(refusal.retry, Retry::After(ENFORCE_RECHECK), "the pipe is looked at again");
        assert!(
            refusal.message.contains("open (org)") && !refusal.message.contains("guarded"),
            "{}",
            refusal.message
        );
        let condition = condition_of_judged(&judged).unwrap();
        assert!(!condition.status && condition.reason == reason::PIPE_NOT_ISOLATED);

        // Optional (the operator's tokens and templates always carry the param), Unknown (a
        // doubt, reported) and not judged yet: nothing refused.
        let judged = BTreeMap::from([("guarded", verdicts(&guarded)), ("open", verdicts(&doubtful))]);
        assert_eq!(judged["guarded"][0].verdict, "Optional");
        assert_eq!(judged["open"][0].verdict, "Unknown");
        assert_eq!(enforce(&access(IsolationPolicy::Enforce), &judged), None);
        assert_eq!(enforce(&access(IsolationPolicy::Enforce), &BTreeMap::new()), None);
    }

    #[test]
    fn a_workspace_lists_its_pipes_worst_first_and_bounded() {
        let verdict = |param: &str, verdict: &str| ParamIsolation {
            param: param.into(),
            verdict: verdict.into(),
            message: None,
        };
        let merged = merge_params(
            [vec![verdict("org", "Enforced")], vec![verdict("org", "Enforced"), verdict("region", "Unused")]]
                .iter(),
        );
        assert_eq!(merged, vec![verdict("org", "Enforced"), verdict("region", "Unused")], "one per param");

        let judged = vec![
            ("b_strict".to_owned(), vec![verdict("org", "Enforced")]),
            ("a_guarded".to_owned(), vec![verdict("org", "Optional")]),
            ("z_open".to_owned(), merged),
            ("c_doubt".to_owned(), vec![verdict("org", "Unknown")]),
            // A second reading of a pipe already listed (the gate's, after the scheduler's).
            ("b_strict".to_owned(), vec![verdict("org", "Unused")]),
        ];
        let (pipes, not_listed) = workspace_pipes(judged);
        let names: Vec<&str> = pipes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["z_open", "c_doubt", "a_guarded", "b_strict"]);
        assert_eq!(pipes[3].isolation[0].verdict, "Enforced", "the first reading given wins");
        assert_eq!(not_listed, None);

        let many = (0..100).map(|i| (format!("p{i:03}"), vec![verdict("org", "Enforced")]));
        let (pipes, not_listed) =
            workspace_pipes(many.chain([("zz".to_owned(), vec![verdict("org", "Unused")])]));
        assert_eq!(pipes.len(), crate::api::limits::MAX_LISTED_PIPES);
        assert_eq!(pipes[0].name, "zz", "the pipe that leaks is never cut");
        assert_eq!(not_listed, Some(101 - 64));
    }

    #[test]
    fn after_a_start_the_listed_pipes_stay_until_judged_and_go_once_warmed_up() {
        let verdict =
            |v: &str| vec![ParamIsolation { param: "org".into(), verdict: v.into(), message: None }];
        let (previous, _) =
            workspace_pipes([("a".to_owned(), verdict("Enforced")), ("b".to_owned(), verdict("Unused"))]);
        // Nothing judged yet: kept as it is (no write).
        assert_eq!(pipes_wanted(Vec::new(), &previous, true), None);
        // One judged, as before: the same list (no write); judged otherwise: the new verdict.
        assert_eq!(
            pipes_wanted(vec![("a".into(), verdict("Enforced"))], &previous, true).unwrap().0,
            previous
        );
        let changed = pipes_wanted(vec![("b".into(), verdict("Enforced"))], &previous, true).unwrap().0;
        assert_eq!(
            changed.iter().map(|p| p.isolation[0].verdict.as_str()).collect::<Vec<_>>(),
            ["Enforced", "Enforced"]
        );
        // Warmed up: what nobody judges any more leaves the list.
        let (only_a, _) = pipes_wanted(vec![("a".into(), verdict("Enforced"))], &previous, false).unwrap();
        assert_eq!(only_a.len(), 1);
        assert_eq!(pipes_wanted(Vec::new(), &previous, false), Some((Vec::new(), None)));
        assert_eq!(pipes_wanted(Vec::new(), &[], false), None);
    }

    #[test]
    fn an_unreadable_description_is_unknown_and_nothing_judged_says_nothing() {
        let judged = BTreeMap::from([("p", judge_pipe(Some(Err("too large")), &["org"]).unwrap())]);
        let mut endpoints = vec![endpoint("p")];
        let condition = report(&mut endpoints, &[], &judged).condition.unwrap();
        assert_eq!(condition.reason, reason::ISOLATION_UNKNOWN);
        assert!(condition.message.contains("too large"));
        assert_eq!(judge_pipe(None, &["org"]), None);
        let mut unjudged = vec![endpoint("p")];
        assert_eq!(report(&mut unjudged, &[], &BTreeMap::new()).condition, None);
    }
}
