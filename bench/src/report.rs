//! The results: JSON (everything) and a Markdown summary against the targets (BENCHMARKS.md).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use crate::args::Args;
use crate::convergence::ConvergenceResult;
use crate::idle::IdleResult;
use crate::machine::Machine;
use crate::memory::MemoryResult;
use crate::operator::ReconcileCounters;
use crate::probe_cost::{ProbeCostResult, TARGET_QUERIES_PER_DAY_AT_1000};
use crate::token_core::TokenCoreResult;

/// Convergence and rotation: at most this times the floor.
pub const TARGET_RATIO: f64 = 1.5;
/// Revoke: every token Secret on the new key within this times the floor.
pub const TARGET_REVOKE_RATIO: f64 = 1.2;
/// RSS at 10,000 TenantAccess, MiB.
pub const TARGET_RSS_MIB: f64 = 64.0;
/// Unrelated Secrets: at most this much more RSS, percent.
pub const TARGET_UNRELATED_PERCENT: f64 = 10.0;
/// Admission: p99 of one review, milliseconds (the webhook adds it to every apply).
pub const TARGET_ADMISSION_P99_MS: f64 = 50.0;
/// Token core: signatures per second on one core.
pub const TARGET_SIGNATURES: f64 = 100_000.0;

/// Everything measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When (UTC).
    pub generated_at: String,
    /// The command line.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// The parameters.
    pub parameters: Args,
    /// The operator binary measured.
    pub operator_binary: String,
    /// The source tree it was built from (`git describe --always --dirty`), when known.
    pub source: Option<String>,
    /// Scenario 5.
    pub token_core: Option<TokenCoreResult>,
    /// Scenarios 1 and 2.
    pub convergence: Option<ConvergenceResult>,
    /// Scenario 3.
    pub idle: Option<IdleResult>,
    /// Scenario 4.
    pub memory: Option<MemoryResult>,
    /// Probe cost.
    pub probe_cost: Option<ProbeCostResult>,
    /// The admission webhook's latency.
    pub admission: Option<crate::admission::AdmissionResult>,
    /// Scenario "revoke".
    pub revoke: Option<crate::revoke::RevokeResult>,
    /// Scenario "scale" (issue 27).
    pub scale: Option<crate::scale::ScaleResult>,
    /// Scenarios that failed, with why (the others still ran).
    pub errors: Vec<String>,
}

fn verdict(met: bool) -> &'static str {
    if met { "yes" } else { "**no**" }
}

fn thousands(value: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let digits = (value.max(0.0).round() as u64).to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Report {
    /// The Markdown summary.
    #[must_use]
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(
            md,
            "Machine: {} CPUs ({}), {} MiB memory, Linux {}, kube-apiserver {}. Run at {} on source {}.\n",
            m.nproc,
            m.cpu_model,
            m.memory_mib,
            m.kernel,
            m.kube_apiserver.as_deref().unwrap_or("-"),
            self.generated_at,
            self.source.as_deref().unwrap_or("-")
        );
        md.push_str("| Scenario | Measured | Floor | Ratio | Target | Met |\n|---|---|---|---|---|---|\n");
        if let Some(c) = &self.convergence {
            let runs = c.convergence.len();
            let _ = writeln!(
                md,
                "| Convergence: {} TenantAccess, all applied → all Ready with a Secret (median of {runs}) | {:.2} s | {:.2} s | {:.2}x | ≤ {TARGET_RATIO}x | {} |",
                c.tenants,
                c.convergence_median_seconds,
                c.floor_convergence_median_seconds,
                c.convergence_ratio,
                verdict(c.convergence_ratio <= TARGET_RATIO)
            );
            let _ = writeln!(
                md,
                "| Convergence, first apply → all Ready (median of {runs}) | {:.2} s | {:.2} s | {:.2}x | (context) | |",
                c.convergence_from_first_apply_median_seconds,
                c.floor_convergence_median_seconds,
                c.convergence_from_first_apply_ratio
            );
            let _ = writeln!(
                md,
                "| Rotation: admin token changed → all {} tokens re-signed (median of {}) | {:.2} s | {:.2} s | {:.2}x | ≤ {TARGET_RATIO}x | {} |",
                c.tenants,
                c.rotation.len(),
                c.rotation_median_seconds,
                c.floor_rotation_median_seconds,
                c.rotation_ratio,
                verdict(c.rotation_ratio <= TARGET_RATIO)
            );
            let _ = writeln!(
                md,
                "| Rotation against the unthrottled floor (the same writes, no client-side limit: the API server's own pace) | {:.2} s | {:.2} s | {:.2}x | ≤ 1.3x | {} |",
                c.rotation_median_seconds,
                c.unthrottled_rotation_median_seconds,
                c.rotation_unthrottled_ratio,
                verdict(c.rotation_unthrottled_ratio <= 1.3)
            );
        }
        if let Some(r) = &self.revoke {
            let _ = writeln!(
                md,
                "| Revoke: refresh at Tinybird → all {} token Secrets on the new key (median of {}) | {:.2} s | {:.2} s | {:.2}x | ≤ {TARGET_REVOKE_RATIO}x | {} |",
                r.tenants,
                r.runs.len(),
                r.secrets_median_seconds,
                r.floor_median_seconds,
                r.secrets_ratio,
                verdict(r.secrets_ratio <= TARGET_REVOKE_RATIO)
            );
            let _ = writeln!(
                md,
                "| Revoke: refresh at Tinybird → all {} Clerk templates on the new key (median of {}) | {:.2} s | | | (context) | |",
                r.tenants,
                r.runs.len(),
                r.templates_median_seconds
            );
        }
        if let Some(i) = &self.idle {
            let writes = i.tenant_access_writes + i.secret_writes + i.api_writes;
            let _ = writeln!(
                md,
                "| Idle: {} tenants, probes every {} s, {:.0} s window: writes by the operator | {} (TenantAccess {}, Secret {}, API mutating requests {}) | | | 0 | {} |",
                i.tenants,
                i.health_interval_seconds,
                i.window_seconds,
                writes,
                i.tenant_access_writes,
                i.secret_writes,
                i.api_writes,
                verdict(writes == 0)
            );
            let reconciles =
                i.reconciles.map_or_else(String::new, |r| format!(", {:.0} reconciles", r.reconciles));
            let _ = writeln!(
                md,
                "| Idle: operator CPU | {:.2} CPU s/min ({:.0} probes/min{reconciles}) | | | (report) | |",
                i.cpu_seconds_per_minute, i.probes_per_minute
            );
            let _ = writeln!(
                md,
                "| Idle: operator RSS | {:.1} MiB (max {:.1}) | | | (report) | |",
                i.rss_mib_median, i.rss_mib_max
            );
        }
        if let Some(mem) = &self.memory {
            let _ = writeln!(
                md,
                "| Memory: RSS with {} TenantAccess Ready | {:.1} MiB (empty: {:.1}, peak {:.1}) | | | < {TARGET_RSS_MIB} MiB | {} |",
                mem.tenants,
                mem.rss_mib_tenants,
                mem.rss_mib_empty,
                mem.peak_rss_mib,
                verdict(mem.rss_mib_tenants < TARGET_RSS_MIB)
            );
            let _ = writeln!(
                md,
                "| Memory: + {} unrelated Secrets of {} KiB | {:.1} MiB ({:+.1}%) | | | ≤ +{TARGET_UNRELATED_PERCENT}% | {} |",
                mem.unrelated_secrets,
                mem.unrelated_secret_bytes / 1024,
                mem.rss_mib_with_unrelated,
                mem.unrelated_increase_percent,
                verdict(mem.unrelated_increase_percent <= TARGET_UNRELATED_PERCENT)
            );
            if let (Some(rss), Some(peak)) = (mem.rss_mib_after_restart, mem.peak_rss_mib_after_restart) {
                let _ = writeln!(
                    md,
                    "| Memory: operator restarted with all of it in place | {rss:.1} MiB (peak {peak:.1}) | | | < {TARGET_RSS_MIB} MiB | {} |",
                    verdict(rss < TARGET_RSS_MIB && peak < TARGET_RSS_MIB)
                );
            }
        }
        if let Some(p) = &self.probe_cost {
            md.push_str(&probe_cost_rows(p));
        }
        if let Some(t) = &self.token_core {
            let _ = writeln!(
                md,
                "| Token core: claims built and signed on one core | {} /s | | | > {} /s | {} |",
                thousands(t.per_second),
                thousands(TARGET_SIGNATURES),
                verdict(t.per_second > TARGET_SIGNATURES)
            );
        }
        if let Some(a) = &self.admission {
            let _ = writeln!(
                md,
                "| Admission: {} sequential AdmissionReviews over HTTPS ({} refused), p50 / p99 / max | {:.2} / {:.2} / {:.2} ms | | | p99 < {TARGET_ADMISSION_P99_MS} ms | {} |",
                a.reviews,
                a.refused,
                a.p50_ms,
                a.p99_ms,
                a.max_ms,
                verdict(a.p99_ms < TARGET_ADMISSION_P99_MS)
            );
        }
        if let Some(c) = &self.convergence {
            md.push_str(&convergence_details(c));
        }
        if let Some(mem) = &self.memory {
            let _ = writeln!(
                md,
                "\nMemory scenario: {} TenantAccess applied in {:.1} s, all Ready {:.1} s later; {} unrelated Secrets created in {:.1} s (operator CPU meanwhile and settling: {:.2} s).",
                mem.tenants,
                mem.apply_seconds,
                mem.ready_seconds,
                mem.unrelated_secrets,
                mem.unrelated_apply_seconds,
                mem.unrelated_cpu_seconds
            );
        }
        if let Some(i) = &self.idle
            && !i.api_requests.0.is_empty()
        {
            let _ = writeln!(
                md,
                "\nIdle window, API requests other than the harness's (the API server's own `GET namespaces`, about one per 7 s, included): {}.",
                inline_counts(&i.api_requests.0)
            );
        }
        if let Some(scale) = &self.scale {
            md.push_str(&crate::scale::markdown(scale));
        }
        for error in &self.errors {
            let _ = writeln!(md, "\n**Failed:** {error}");
        }
        md
    }
}

fn probe_cost_rows(p: &ProbeCostResult) -> String {
    let mut md = String::new();
    for run in &p.runs {
        let d = &run.defaults;
        let target = if run.tenants == 1000 {
            format!("< {} /day, detection ≤ 1 interval", thousands(TARGET_QUERIES_PER_DAY_AT_1000))
        } else {
            "(report)".to_owned()
        };
        let detected_in_interval = run
            .removal_detected_seconds
            .is_some_and(|s| s <= crate::probe_cost::DEFAULT_INTERVAL_SECONDS as f64 + 30.0);
        let met = if run.tenants == 1000 {
            verdict(d.requests_per_day < TARGET_QUERIES_PER_DAY_AT_1000 && detected_in_interval)
        } else {
            ""
        };
        let before = run.before.as_ref().map_or_else(
            || "-".to_owned(),
            |b| {
                format!(
                    "{} billed /day ({} in {:.0} s)",
                    thousands(b.pipe_queries_per_day),
                    b.pipe_queries,
                    b.window_seconds
                )
            },
        );
        let seconds = |s: Option<f64>| {
            s.map_or_else(|| format!("not within {} s", run.detection_bound_seconds), |s| format!("{s:.0} s"))
        };
        let _ = writeln!(
            md,
            "| Probe cost: {} tenants, 2 pipes each of 10, defaults | {} billed queries /day ({} in {:.0} s) + {} pipe descriptions /day + {} admin checks; all requests {} /day; a removed pipe reported by all {} granting it in {}, its return in {} | before: {before} | | {target} | {met} |",
            run.tenants,
            thousands(d.pipe_queries_per_day),
            d.pipe_queries,
            d.window_seconds,
            thousands(d.pipe_descriptions_per_day),
            d.admin_token_checks,
            thousands(d.requests_per_day),
            run.granting_removed_pipe,
            seconds(run.removal_detected_seconds),
            seconds(run.recovery_detected_seconds),
        );
    }
    md
}

fn inline_counts(counts: &std::collections::BTreeMap<String, u64>) -> String {
    counts.iter().map(|(k, v)| format!("`{k}` {v}")).collect::<Vec<_>>().join(", ")
}

/// Reconciles per tenant, with the mean reconcile time.
fn per_tenant(counters: Option<ReconcileCounters>, tenants: usize) -> String {
    let Some(counters) = counters else { return "-".into() };
    #[allow(clippy::cast_precision_loss)]
    let per_tenant = counters.reconciles / tenants.max(1) as f64;
    let mean_ms =
        if counters.reconciles > 0.0 { counters.seconds / counters.reconciles * 1000.0 } else { 0.0 };
    format!("{per_tenant:.2} ({mean_ms:.0} ms each)")
}

fn convergence_details(c: &ConvergenceResult) -> String {
    let mut md = String::new();
    md.push_str("\n| Run | Apply (s) | Applied → Ready (s) | First apply → Ready (s) | Floor (s) | Rotation (s) | Floor rotation (s) | Operator CPU conv. / rot. (s) | Reconciles per tenant conv. / rot. | RSS (MiB) |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for (i, phase) in c.convergence.iter().enumerate() {
        let floor = c.floor.get(i);
        let rotation = c.rotation.get(i);
        let _ = writeln!(
            md,
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} / {:.2} | {} / {} | {:.1} |",
            i + 1,
            phase.apply_seconds.unwrap_or_default(),
            phase.seconds,
            phase.seconds_from_first_apply.unwrap_or_default(),
            floor.map_or(0.0, |f| f.convergence_seconds),
            rotation.map_or(0.0, |r| r.seconds),
            floor.map_or(0.0, |f| f.rotation_seconds),
            phase.operator_cpu_seconds,
            rotation.map_or(0.0, |r| r.operator_cpu_seconds),
            per_tenant(phase.reconciles, c.tenants),
            per_tenant(rotation.and_then(|r| r.reconciles), c.tenants),
            rotation.map_or(phase.operator_rss_mib, |r| r.operator_rss_mib),
        );
    }
    // API requests per tenant, first run: what the operator does beyond the floor.
    let (Some(floor), Some(conv), Some(rot)) = (c.floor.first(), c.convergence.first(), c.rotation.first())
    else {
        return md;
    };
    let floor_per_tenant = floor.api_requests.per_tenant(c.tenants);
    let keys: BTreeSet<&String> = floor_per_tenant
        .keys()
        .chain(conv.api_requests_per_tenant.keys())
        .chain(rot.api_requests_per_tenant.keys())
        .collect();
    md.push_str("\nAPI requests per tenant (run 1, API server counters):\n\n| Request | Floor | Operator, convergence | Operator, rotation |\n|---|---|---|---|\n");
    let cell = |map: &std::collections::BTreeMap<String, f64>, key: &str| {
        map.get(key).map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
    };
    for key in keys {
        let _ = writeln!(
            md,
            "| `{key}` | {} | {} | {} |",
            cell(&floor_per_tenant, key),
            cell(&conv.api_requests_per_tenant, key),
            cell(&rot.api_requests_per_tenant, key)
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }
}
