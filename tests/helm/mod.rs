//! The Helm chart's test helpers, shared by `tests/chart_render.rs` (no cluster) and
//! `tests/chart.rs` (a real API server): running helm, rendering the chart, reading YAML streams.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use tenant_access_testkit::repo_root;

/// The release name the tests install; the chart names its objects after it.
pub const RELEASE: &str = "tao";
/// The chart's full name for that release: ServiceAccount, ClusterRole, Deployment, ...
pub const FULLNAME: &str = "tao-tenant-access-operator";
pub const CRD_NAMES: [&str; 3] = [
    "tenantaccesses.tenantaccess.dev",
    "tinybirdworkspaces.tenantaccess.dev",
    "clustertinybirdworkspaces.tenantaccess.dev",
];
/// Every optional feature of the chart at once.
pub const EVERY_OPTION: &[&str] = &[
    "replicaCount=2",
    "serviceMonitor.enabled=true",
    "serviceMonitor.labels.release=prometheus",
    "prometheusRule.enabled=true",
    "prometheusRule.labels.release=prometheus",
    "prometheusRule.alertLabels.team=platform",
    "commonLabels.team=platform",
    "deploymentAnnotations.owner=platform-team",
    "revisionHistoryLimit=3",
    "extraVolumes[0].name=private-ca",
    "extraVolumes[0].configMap.name=private-ca-bundle",
    "extraVolumeMounts[0].name=private-ca",
    "extraVolumeMounts[0].mountPath=/etc/ssl/certs/private-ca",
    "extraVolumeMounts[0].readOnly=true",
    "operator.eventQps=5",
    "operator.eventBurst=10",
    "podDisruptionBudget.enabled=true",
    "networkPolicy.enabled=true",
    "networkPolicy.egress.enabled=true",
    "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring",
];

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/tenant-access-operator")
}

pub fn chart() -> String {
    chart_dir().to_string_lossy().into_owned()
}

#[derive(Debug)]
pub struct HelmOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// The Helm major versions the chart supports (and is tested with).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Helm {
    /// Helm 4: `$HELM` or the one `hack/install-deps.sh` caches.
    V4,
    /// Helm 3: `$HELM3` or the one `hack/install-deps.sh` caches.
    V3,
}

impl Helm {
    pub const BOTH: [Self; 2] = [Self::V4, Self::V3];

    /// The binary; panics (the test fails, it is not skipped) when it is missing.
    pub fn binary(self) -> PathBuf {
        match self {
            Self::V4 => tenant_access_testkit::helm_binary()
                .expect("helm v4 not found: run hack/install-deps.sh (or set HELM to a helm v4 binary)"),
            Self::V3 => tenant_access_testkit::helm3_binary()
                .expect("helm v3 not found: run hack/install-deps.sh (or set HELM3 to a helm v3 binary)"),
        }
    }

    /// What `helm version --short` must start with.
    pub fn version_prefix(self) -> &'static str {
        match self {
            Self::V4 => "v4.",
            Self::V3 => "v3.",
        }
    }
}

/// Runs helm v4.
pub async fn helm(args: &[&str], kubeconfig: Option<&Path>) -> HelmOutput {
    helm_with(Helm::V4, args, kubeconfig).await
}

/// Runs helm of major version `version`.
pub async fn helm_with(version: Helm, args: &[&str], kubeconfig: Option<&Path>) -> HelmOutput {
    let mut command = tokio::process::Command::new(version.binary());
    command.args(args).stdin(Stdio::null()).kill_on_drop(true);
    if let Some(kubeconfig) = kubeconfig {
        command.arg("--kubeconfig").arg(kubeconfig);
    }
    let output = command.output().await.unwrap();
    HelmOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub fn with_values<'a>(mut args: Vec<&'a str>, set: &[&'a str]) -> Vec<&'a str> {
    for value in set {
        args.extend(["--set", value]);
    }
    args
}

/// `helm template` (helm v4) of the chart as release `tao` in `namespace`; panics with helm's
/// error.
pub async fn render(namespace: &str, set: &[&str], extra: &[&str]) -> String {
    render_with(Helm::V4, namespace, set, extra).await
}

/// `helm template` with helm `version`.
pub async fn render_with(version: Helm, namespace: &str, set: &[&str], extra: &[&str]) -> String {
    let chart = chart();
    let mut args = with_values(vec!["template", RELEASE, &chart, "--namespace", namespace], set);
    args.extend(extra);
    let out = helm_with(version, &args, None).await;
    assert!(out.success, "helm {version:?} template {set:?} failed:\n{}", out.stderr);
    out.stdout
}

/// The documents of a YAML stream (empty ones dropped).
pub fn documents(yaml: &str) -> Vec<Value> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(yaml).unwrap();
    documents.into_iter().filter(|d| !d.is_null()).collect()
}

/// The documents of a YAML stream as text, comments included (helm separates them by `---`).
pub fn raw_documents(yaml: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    for line in yaml.lines() {
        if line == "---" {
            out.push(String::new());
        } else if let Some(current) = out.last_mut() {
            current.push_str(line);
            current.push('\n');
        }
    }
    out.into_iter().filter(|d| d.lines().any(|l| l.starts_with("kind:"))).collect()
}

pub fn kinds(docs: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = docs.iter().map(|d| d["kind"].as_str().unwrap().to_owned()).collect();
    kinds.sort();
    kinds
}

pub fn the<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "exactly one {kind} expected");
    found[0]
}

pub fn container(docs: &[Value]) -> &Value {
    &the(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

pub fn container_args(docs: &[Value]) -> Vec<String> {
    container(docs)["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect()
}

/// `(apiGroup, resource, verbs)` of every rule of the (Cluster)Role named `name`.
pub fn rules(docs: &[Value], kind: &str, name: &str) -> Vec<(String, String, Vec<String>)> {
    let role = docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).unwrap();
    let text = |v: &Value| v.as_str().unwrap().to_owned();
    let mut out = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                let verbs = rule["verbs"].as_array().unwrap().iter().map(text).collect();
                out.push((text(group), text(resource), verbs));
            }
        }
    }
    out
}
