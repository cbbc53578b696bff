//! What a TenantAccess reports of its pipes' isolation: for each granted pipe, whether its SQL
//! filters by each param the TenantAccess pins there (the keys of the scope's `fixedParams`,
//! which include every param the workspace's policy requires), judged by
//! [`crate::core::pipe_isolation`] from the description the free existence check read.
//! Pure: the runtime hands in the descriptions it has, and gets back the status entries, the
//! `PipesIsolated` condition and the verdicts that changed.

use std::collections::BTreeMap;

use crate::api::{EndpointStatus, ParamIsolation, SCOPE_PIPES_READ};
use crate::core::conditions::DesiredCondition;
use crate::core::pipe_isolation::{PipeDescription, Verdict, judge};
use crate::core::validate::ValidatedAccess;
use crate::core::well_known::{condition, reason};

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
    IsolationReport { condition: condition_of(endpoints), changed }
}

/// `PipesIsolated`: true when every judged param is `Enforced` or `Optional` (the operator's
/// tokens always carry a value); false naming the pipes whose SQL does not filter by a pinned
/// param (`PipeNotIsolated`), else those it could not analyse (`IsolationUnknown`).
fn condition_of(endpoints: &[EndpointStatus]) -> Option<DesiredCondition> {
    let verdicts =
        || endpoints.iter().flat_map(|e| e.isolation.iter().map(move |i| (e.resource.as_str(), i)));
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
