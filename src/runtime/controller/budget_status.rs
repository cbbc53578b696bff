//! Keeps each workspace's `status.healthChecks` and `status.pipes` current: the health
//! scheduler's budget use changes as TenantAccesses register and leave, and its pipes' verdicts
//! as their descriptions are read, not when the workspace changes, so a watch on the workspace
//! never sees them. Every [`PERIOD`] the budget each workspace's status shows
//! is compared, in memory, with the scheduler's; a workspace whose status is out of date is
//! reconciled (which writes it). No API request unless something changed, and at most one
//! status write per workspace per period while TenantAccesses keep arriving.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::reflector::{ObjectRef, Store};

use super::context::Context;
use super::workspace_reconciler::Workspace;
use crate::api::{
    ClusterTinybirdWorkspace, HealthCheckBudgetStatus, TinybirdWorkspace, WorkspacePipeStatus,
    WorkspaceStatus,
};
#[cfg(doc)]
use crate::runtime::health::HealthScheduler;
use crate::runtime::health::{BudgetUse, DescribedPipes};

/// How often the statuses are compared with the scheduler's budget use.
pub const PERIOD: Duration = Duration::from_secs(10);

/// How long after a start the pipes a workspace's status lists stay listed without being
/// judged again.
pub const RESTART_GRACE: Duration = Duration::from_secs(15 * 60);

/// What `status.healthChecks` says for this budget use: set only while probes were cut.
#[must_use]
pub fn budget_status(budget: &BudgetUse) -> Option<HealthCheckBudgetStatus> {
    budget.cut().map(|cut| HealthCheckBudgetStatus {
        max_queries_per_day: budget.max_queries_per_day,
        planned_queries_per_day: budget.planned_queries_per_day,
        pipes: budget.pipes,
        cut: Some(cut),
    })
}

/// What a workspace's status should say of what the health checks see: `status.healthChecks`
/// and `status.pipes` (`None` for a part not known, as after a start: kept as it is).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Wanted {
    /// `status.healthChecks`.
    pub health_checks: Option<Option<HealthCheckBudgetStatus>>,
    /// `status.pipes` and `status.pipesNotListed`.
    pub pipes: Option<(Vec<WorkspacePipeStatus>, Option<u32>)>,
}

impl Wanted {
    /// What the status should say of the workspace at `api_url` with `workspace_id`; `described`
    /// is the scheduler's [`HealthScheduler::described_pipes`] when the caller has it for every
    /// workspace (`None`: this workspace's are looked up alone).
    ///
    /// A pipe `previous` lists and nobody has judged since this process started stays listed
    /// for [`RESTART_GRACE`] (every probed pipe is described within moments of its first
    /// registration): a restart, registering the TenantAccesses one by one, writes nothing.
    #[must_use]
    pub fn of(
        ctx: &Context,
        (api_url, workspace_id): (&str, &str),
        described: Option<&DescribedPipes>,
        previous: &WorkspaceStatus,
    ) -> Self {
        let health_checks = ctx.health.budget(api_url, workspace_id).map(|budget| budget_status(&budget));
        let name = crate::runtime::health::workspace_name(api_url, workspace_id);
        let now = ctx.now();
        let mut judged = match described {
            Some(described) => described.get(name.as_str()).cloned().unwrap_or_default(),
            None => ctx.health.described_pipes_of(&name),
        };
        judged.extend(ctx.isolation_gate.recent(&name, now));
        let warming_up = ctx.isolation_gate.uptime(now) < RESTART_GRACE;
        let pipes = crate::core::isolation_report::pipes_wanted(judged, &previous.pipes, warming_up);
        Self { health_checks, pipes }
    }

    /// Writes what is known into `status`.
    pub fn apply(self, status: &mut WorkspaceStatus) {
        if let Some(health_checks) = self.health_checks {
            status.health_checks = health_checks;
        }
        if let Some((pipes, not_listed)) = self.pipes {
            status.pipes = pipes;
            status.pipes_not_listed = not_listed;
        }
    }

    /// Whether `status` says something else.
    #[must_use]
    pub fn differs_from(&self, status: &WorkspaceStatus) -> bool {
        let mut written = status.clone();
        self.clone().apply(&mut written);
        written != *status
    }
}

/// What the workspace's status should say when it says something else; `None` when it is
/// current, or while nothing of the workspace is known (a start writes nothing).
#[must_use]
pub fn wanted<W: Workspace>(workspace: &W, ctx: &Context, described: &DescribedPipes) -> Option<Wanted> {
    let status = workspace.workspace_status()?;
    let (Some(api_url), Some(workspace_id)) = (&status.api_url, &status.workspace_id) else { return None };
    let wanted = Wanted::of(ctx, (api_url, workspace_id), Some(described), status);
    wanted.differs_from(status).then_some(wanted)
}

/// Remembers what each out-of-date workspace should say, and answers whether it said the same
/// one period earlier: only a budget use that held still for a period is written, so neither
/// TenantAccesses arriving by the thousand nor a restart (re-registering them all) writes the
/// numbers on their way.
#[derive(Debug, Default)]
struct Settled {
    previous: HashMap<String, Wanted>,
    current: HashMap<String, Wanted>,
}

impl Settled {
    fn held_still(&mut self, key: String, wanted: Wanted) -> bool {
        let still = self.previous.get(&key) == Some(&wanted);
        self.current.insert(key, wanted);
        still
    }

    fn next_period(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }
}

/// Compares every [`PERIOD`] and asks for the reconcile of each workspace out of date whose
/// budget use held still for a period (a kind whose controller does not run, namespace-scoped,
/// has no workspaces in its store).
pub async fn run(
    ctx: Arc<Context>,
    workspaces: Store<TinybirdWorkspace>,
    cluster_workspaces: Store<ClusterTinybirdWorkspace>,
) {
    let mut ticks = tokio::time::interval(PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut settled = Settled::default();
    loop {
        ticks.tick().await;
        let described = ctx.health.described_pipes();
        for workspace in workspaces.state() {
            let object = ObjectRef::from_obj(workspace.as_ref());
            if let Some(wanted) = wanted(workspace.as_ref(), &ctx, &described)
                && settled.held_still(format!("{object}"), wanted)
            {
                let _ = ctx.workspace_rechecks.namespaced.send(object);
            }
        }
        for workspace in cluster_workspaces.state() {
            let object = ObjectRef::from_obj(workspace.as_ref());
            if let Some(wanted) = wanted(workspace.as_ref(), &ctx, &described)
                && settled.held_still(format!("cluster/{object}"), wanted)
            {
                let _ = ctx.workspace_rechecks.cluster.send(object);
            }
        }
        settled.next_period();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(planned: u64) -> Wanted {
        Wanted {
            health_checks: Some(Some(HealthCheckBudgetStatus {
                max_queries_per_day: 200,
                planned_queries_per_day: planned,
                pipes: 1,
                cut: None,
            })),
            pipes: None,
        }
    }

    #[test]
    fn only_a_budget_use_that_held_still_for_a_period_is_written() {
        let mut settled = Settled::default();
        // Arriving TenantAccesses: the planned figure moves every period.
        for planned in [100, 200, 300] {
            assert!(!settled.held_still("ws".into(), budget(planned)));
            settled.next_period();
        }
        // It holds still: written once.
        assert!(settled.held_still("ws".into(), budget(300)));
        settled.next_period();
        // Current again (not out of date: not asked about), then out of date anew.
        settled.next_period();
        assert!(!settled.held_still("ws".into(), budget(400)));
        settled.next_period();
        assert!(settled.held_still("ws".into(), budget(400)));
    }

    #[test]
    fn workspaces_settle_apart() {
        let mut settled = Settled::default();
        assert!(!settled.held_still("a".into(), budget(1)));
        assert!(!settled.held_still("b".into(), budget(1)));
        settled.next_period();
        assert!(settled.held_still("a".into(), budget(1)));
        assert!(!settled.held_still("b".into(), budget(2)));
    }
}
