//! One AdmissionReview (`admission.k8s.io/v1`) in, its answer out: the reconciler's own
//! validation, workspace policy and namespace admission ([`crate::core::reconcile::admit`]),
//! refusing with the reconciler's message and passing its warnings on.
//!
//! What is never refused: deletes, subresources (status), objects being deleted (their
//! finalizers must come off), updates that leave the spec as it is (the operator's own
//! finalizer and annotation writes), and anything decided on facts that are not known yet (a
//! workspace that does not exist yet: GitOps applies in any order; facts that cannot be read):
//! those are allowed with a warning, and the reconciler reports them on the object.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{KIND_CLUSTER_WORKSPACE, KIND_WORKSPACE, TenantAccess, WorkspaceSpec};
use crate::core::policy::NamespaceFacts;
use crate::core::reconcile::admit::{self, Facts};
use crate::core::validate::WorkspaceKind;

/// Largest request body accepted: an object and its old version, each at most the 1.5 MiB
/// etcd stores, with room for the review around them.
pub const MAX_REVIEW_BYTES: usize = 4 * 1024 * 1024;

/// Longest request uid echoed back (Kubernetes sends a UUID).
const MAX_UID_BYTES: usize = 128;

/// The API group of the reviewed kinds.
const GROUP: &str = "tenantaccess.dev";

/// The review's apiVersion, the only one answered.
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// What admission reads besides the object: the workspace a TenantAccess names and the labels
/// of its namespace. The operator reads them from the API on every replica; the benchmark and
/// unit tests hand them in.
pub trait AdmissionFacts: Send + Sync {
    /// Whether this operator serves the namespace (others are not its to judge).
    fn serves(&self, namespace: &str) -> bool;

    /// Whether this operator uses ClusterTinybirdWorkspaces (a one-namespace install does not,
    /// and so does not judge them).
    fn uses_cluster_workspaces(&self) -> bool {
        true
    }

    /// The spec of a workspace: `Ok(None)` when it does not exist; `Err(why)` when it cannot be
    /// read (or this install cannot use the kind).
    fn workspace<'a>(
        &'a self,
        kind: WorkspaceKind,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<WorkspaceSpec>, String>>;

    /// The labels of a namespace: `Ok(None)` when this install does not read namespaces (one
    /// namespace), as the reconciler; `Err(why)` when they cannot be read.
    fn namespace_labels<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Option<BTreeMap<String, String>>, String>>;
}

/// Admission facts given up front instead of read from the cluster: what the webhook's tests and
/// the admission benchmark judge reviews against.
#[derive(Debug, Clone, Default)]
pub struct StaticFacts {
    /// The namespaces served (`None`: every namespace).
    pub served: Option<BTreeSet<String>>,
    /// Whether ClusterTinybirdWorkspaces are used (not by a one-namespace install).
    pub cluster_workspaces: bool,
    /// Workspaces by kind, namespace (empty for cluster workspaces) and name.
    pub workspaces: BTreeMap<(WorkspaceKind, String, String), WorkspaceSpec>,
    /// Namespace labels (a namespace not listed has none); `None`: namespaces are not read, as
    /// in a one-namespace install.
    pub labels: Option<BTreeMap<String, BTreeMap<String, String>>>,
    /// When set, every workspace read fails with this (the API server not answering).
    pub unreadable: Option<String>,
}

impl StaticFacts {
    /// A cluster-wide install that knows no workspace yet and reads namespace labels.
    #[must_use]
    pub fn cluster_wide() -> Self {
        Self { cluster_workspaces: true, labels: Some(BTreeMap::new()), ..Self::default() }
    }

    /// A one-namespace install serving `namespace`: no cluster workspaces, no namespace reads.
    #[must_use]
    pub fn one_namespace(namespace: &str) -> Self {
        Self { served: Some(BTreeSet::from([namespace.to_owned()])), ..Self::default() }
    }

    /// With a workspace (`namespace` is ignored for a cluster workspace).
    #[must_use]
    pub fn with_workspace(
        mut self,
        kind: WorkspaceKind,
        namespace: &str,
        name: &str,
        spec: WorkspaceSpec,
    ) -> Self {
        let namespace = if kind == WorkspaceKind::Cluster { "" } else { namespace };
        self.workspaces.insert((kind, namespace.to_owned(), name.to_owned()), spec);
        self
    }

    /// With the labels of a namespace.
    #[must_use]
    pub fn with_labels(mut self, namespace: &str, labels: BTreeMap<String, String>) -> Self {
        self.labels.get_or_insert_with(BTreeMap::new).insert(namespace.to_owned(), labels);
        self
    }
}

impl AdmissionFacts for StaticFacts {
    fn serves(&self, namespace: &str) -> bool {
        self.served.as_ref().is_none_or(|served| served.contains(namespace))
    }

    fn uses_cluster_workspaces(&self) -> bool {
        self.cluster_workspaces
    }

    fn workspace<'a>(
        &'a self,
        kind: WorkspaceKind,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<WorkspaceSpec>, String>> {
        let namespace = if kind == WorkspaceKind::Cluster { "" } else { namespace };
        let found = match &self.unreadable {
            Some(why) => Err(why.clone()),
            None => Ok(self.workspaces.get(&(kind, namespace.to_owned(), name.to_owned())).cloned()),
        };
        async move { found }.boxed()
    }

    fn namespace_labels<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Option<BTreeMap<String, String>>, String>> {
        let labels = self.labels.as_ref().map(|labels| labels.get(namespace).cloned().unwrap_or_default());
        async move { Ok(labels) }.boxed()
    }
}

/// A request that is not an AdmissionReview this webhook can answer (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum MalformedReview {
    /// Not JSON, or not the shape of a review.
    #[error("the body is not an AdmissionReview: {0}")]
    Shape(String),
    /// Another apiVersion.
    #[error(
        "AdmissionReview apiVersion {0:?} is not supported: send admission.k8s.io/v1 (admissionReviewVersions: [v1])"
    )]
    Version(String),
    /// No `request`.
    #[error("the AdmissionReview has no request")]
    NoRequest,
    /// A uid that is no uid.
    #[error("the AdmissionReview request uid is longer than {MAX_UID_BYTES} bytes")]
    Uid,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    api_version: String,
    kind: String,
    request: Option<Request>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    uid: String,
    kind: Gvk,
    #[serde(default)]
    sub_resource: Option<String>,
    operation: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    old_object: Option<Value>,
}

#[derive(Deserialize)]
struct Gvk {
    group: String,
    kind: String,
}

/// The answer to one review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the object is admitted.
    pub allowed: bool,
    /// Why not (the reconciler's message), when refused.
    pub message: Option<String>,
    /// Warnings (kubectl prints them), refused or not.
    pub warnings: Vec<String>,
}

impl Verdict {
    fn allow(warnings: Vec<String>) -> Self {
        Self { allowed: true, message: None, warnings }
    }

    fn deny(message: String, warnings: Vec<String>) -> Self {
        Self { allowed: false, message: Some(message), warnings }
    }
}

/// Answers a review body: the AdmissionReview to send back.
///
/// # Errors
/// [`MalformedReview`] when the body is not a v1 AdmissionReview with a request.
pub async fn answer(body: &[u8], facts: &dyn AdmissionFacts) -> Result<Value, MalformedReview> {
    let review: Review = serde_json::from_slice(body).map_err(|e| MalformedReview::Shape(e.to_string()))?;
    if review.kind != "AdmissionReview" {
        return Err(MalformedReview::Shape(format!("kind is {:?}, not AdmissionReview", review.kind)));
    }
    if review.api_version != API_VERSION {
        return Err(MalformedReview::Version(review.api_version));
    }
    let request = review.request.ok_or(MalformedReview::NoRequest)?;
    if request.uid.len() > MAX_UID_BYTES {
        return Err(MalformedReview::Uid);
    }
    let verdict = decide(&request, facts).await;
    count(&request.kind.kind, &verdict);
    Ok(response(&request.uid, &verdict))
}

/// Labels of `tenant_access_webhook_reviews_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    /// `TenantAccess`, `TinybirdWorkspace`, `ClusterTinybirdWorkspace`, or `other` (a kind the
    /// webhook is not registered for: never refused).
    pub kind: &'static str,
    /// `allowed`, `warned` (allowed with warnings) or `refused`.
    pub verdict: &'static str,
}

static REVIEWS: LazyLock<Family<ReviewLabels, Counter>> = LazyLock::new(Family::default);

/// The counter of answered reviews (shared by every registry of the process; malformed
/// requests, answered 400, are not reviews and are not in it).
#[must_use]
pub fn reviews_family() -> Family<ReviewLabels, Counter> {
    REVIEWS.clone()
}

/// Counts one answered review, under a kind label of bounded values.
fn count(kind: &str, verdict: &Verdict) {
    let kind = match kind {
        "TenantAccess" => "TenantAccess",
        KIND_WORKSPACE => KIND_WORKSPACE,
        KIND_CLUSTER_WORKSPACE => KIND_CLUSTER_WORKSPACE,
        _ => "other",
    };
    let verdict = match (verdict.allowed, verdict.warnings.is_empty()) {
        (false, _) => "refused",
        (true, false) => "warned",
        (true, true) => "allowed",
    };
    REVIEWS.get_or_create(&ReviewLabels { kind, verdict }).inc();
}

/// The AdmissionReview carrying a verdict.
fn response(uid: &str, verdict: &Verdict) -> Value {
    let mut response = json!({ "uid": uid, "allowed": verdict.allowed });
    if let Some(message) = &verdict.message {
        response["status"] = json!({ "code": 403, "reason": "Forbidden", "message": message });
    }
    if !verdict.warnings.is_empty() {
        response["warnings"] = json!(verdict.warnings);
    }
    json!({ "apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response })
}

async fn decide(request: &Request, facts: &dyn AdmissionFacts) -> Verdict {
    let Some(object) = &request.object else { return Verdict::allow(Vec::new()) };
    let judged = matches!(request.operation.as_str(), "CREATE" | "UPDATE")
        && request.sub_resource.as_deref().is_none_or(str::is_empty)
        && request.kind.group == GROUP
        && object.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null)
        && !(request.operation == "UPDATE"
            && request.old_object.as_ref().is_some_and(|old| old.get("spec") == object.get("spec")));
    if !judged {
        return Verdict::allow(Vec::new());
    }
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .or(request.name.as_deref())
        .unwrap_or_default();
    match request.kind.kind.as_str() {
        "TenantAccess" => {
            let namespace = request
                .namespace
                .as_deref()
                .or_else(|| object.pointer("/metadata/namespace").and_then(Value::as_str))
                .unwrap_or_default();
            tenant_access(object, namespace, name, facts).await
        }
        KIND_WORKSPACE if facts.serves(request.namespace.as_deref().unwrap_or_default()) => {
            workspace(object, KIND_WORKSPACE, name)
        }
        KIND_CLUSTER_WORKSPACE if facts.uses_cluster_workspaces() => {
            workspace(object, KIND_CLUSTER_WORKSPACE, name)
        }
        _ => Verdict::allow(Vec::new()),
    }
}

async fn tenant_access(object: &Value, namespace: &str, name: &str, facts: &dyn AdmissionFacts) -> Verdict {
    if !facts.serves(namespace) {
        return Verdict::allow(Vec::new());
    }
    let access: TenantAccess = match serde_path_to_error::deserialize(object) {
        Ok(access) => access,
        Err(error) => {
            return Verdict::deny(format!("{}: {}", error.path(), error.inner()), Vec::new());
        }
    };
    // A name the API server generates (generateName) is not known yet: the reconciler checks
    // what depends on it.
    let name = if name.is_empty() { "generated" } else { name };
    let validated = match admit::validate(namespace, name, &access.spec) {
        Ok(validated) => validated,
        Err(refusal) => return Verdict::deny(refusal.message, Vec::new()),
    };
    let mut warnings = validated.warnings.clone();
    let (kind, workspace) = (validated.workspace_kind, validated.workspace_name.clone());
    let spec = match facts.workspace(kind, namespace, &workspace).await {
        Ok(Some(spec)) => spec,
        Ok(None) => {
            warnings.push(format!(
                "{} {workspace} does not exist (yet): the policy and namespace admission are checked by the operator once it does (see the TenantAccess's conditions)",
                kind.kind_name()
            ));
            return Verdict::allow(warnings);
        }
        Err(why) => {
            warnings.push(format!("not checked against {} {workspace}: {why}", kind.kind_name()));
            return Verdict::allow(warnings);
        }
    };
    let labels = match facts.namespace_labels(namespace).await {
        Ok(labels) => labels,
        Err(why) => {
            warnings.push(format!("not checked against the workspace policy: namespace {namespace}: {why}"));
            return Verdict::allow(warnings);
        }
    };
    let facts = Facts {
        namespace: NamespaceFacts { name: namespace, labels: labels.as_ref() },
        labels_are_facts: true,
        workspace: Some(&spec),
    };
    match admit::admit_without_signer(validated, facts) {
        // The admitted access carries the spec's warnings and the policy's (a Clerk template
        // without a rate limit once the policy's maxRps is known).
        Ok(admitted) => Verdict::allow(admitted.warnings),
        Err(refusal) => Verdict::deny(refusal.message, warnings),
    }
}

fn workspace(object: &Value, kind: &str, name: &str) -> Verdict {
    let spec: WorkspaceSpec = match object.get("spec").map(serde_path_to_error::deserialize).transpose() {
        Ok(spec) => spec.unwrap_or_default(),
        Err(error) => return Verdict::deny(format!("spec.{}: {}", error.path(), error.inner()), Vec::new()),
    };
    let problems = crate::core::signing_workspace::spec_problems(&spec, name);
    if problems.is_empty() {
        Verdict::allow(Vec::new())
    } else {
        Verdict::deny(format!("{kind} {name}: {}", problems.join("; ")), Vec::new())
    }
}

#[cfg(test)]
mod tests;
