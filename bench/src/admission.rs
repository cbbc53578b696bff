//! The admission webhook's latency: sequential AdmissionReviews of a TenantAccess sent over
//! HTTPS to the operator's own webhook server (its TLS, its router, the reconciler's validation
//! and workspace policy), as the API server sends them. The facts (the workspace and the
//! namespace's labels) are handed in, so that what is measured is the webhook, not the API
//! server it would read them from.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tenant_access::api::WorkspaceSpec;
use tenant_access::core::validate::WorkspaceKind;
use tenant_access::runtime::webhook::certs::{Renewal, Validity, renew};
use tenant_access::runtime::webhook::tls::ServingCert;
use tenant_access::runtime::webhook::{PATH, StaticFacts, serve_reviews};

use crate::error::{BenchError, Result};

/// Latency of sequential reviews.
#[derive(Debug, Clone, Serialize)]
pub struct AdmissionResult {
    /// Reviews sent (after a warm-up that opens the connection).
    pub reviews: usize,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
    /// Of them refused (every other review is a policy violation).
    pub refused: usize,
}

/// One review of a typical TenantAccess (two pipes), allowed or (`forbidden`) asking for a
/// scope type the policy does not allow.
fn review(index: usize, forbidden: bool) -> serde_json::Value {
    let second_type = if forbidden { "DATASOURCES:READ" } else { "PIPES:READ" };
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-0000-0000-{index:012}"),
            "kind": {"group": "tenantaccess.dev", "version": "v1alpha1", "kind": "TenantAccess"},
            "resource": {"group": "tenantaccess.dev", "version": "v1alpha1", "resource": "tenantaccesses"},
            "operation": "CREATE", "namespace": "acme", "name": format!("tenant-{index}"),
            "object": {
                "apiVersion": "tenantaccess.dev/v1alpha1", "kind": "TenantAccess",
                "metadata": {"name": format!("tenant-{index}"), "namespace": "acme"},
                "spec": {
                    "workspaceRef": {"kind": "ClusterTinybirdWorkspace", "name": "shared"},
                    "scopes": [
                        {"resource": "top_pages"},
                        {"type": second_type, "resource": "tenant_events"},
                    ],
                    "limits": {"rps": 10}, "lifetime": "1h", "secret": {},
                },
            },
        },
    })
}

/// Sends `reviews` sequential reviews (plus one to warm up) and measures each.
///
/// # Errors
/// The server or the client cannot be set up, or a review is not answered.
pub async fn run(reviews: usize) -> Result<AdmissionResult> {
    let fixture = |e: &dyn std::fmt::Display| BenchError::Fixture(format!("admission: {e}"));
    let hosts = vec!["127.0.0.1".to_owned()];
    let material = renew(None, Renewal::All, &hosts, jiff::Timestamp::now(), Validity::default())
        .map_err(|e| fixture(&e))?;
    let serving = Arc::new(ServingCert::default());
    serving.load(material.cert.as_bytes(), material.key.as_bytes()).map_err(|e| fixture(&e))?;
    let workspace: WorkspaceSpec = serde_json::from_value(serde_json::json!({
        "adminTokenSecretRef": {"name": "shared-admin"},
        "policy": {"allowedNamespaces": {"matchLabels": {"tenants": "enabled"}},
                   "allowedResources": ["top_*", "tenant_*"], "maxRps": 50,
                   "requiredParams": {"org": {"namespaceName": true}}},
    }))?;
    let facts = Arc::new(
        StaticFacts::cluster_wide()
            .with_workspace(WorkspaceKind::Cluster, "", "shared", workspace)
            .with_labels("acme", [("tenants".to_owned(), "enabled".to_owned())].into()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| fixture(&e))?;
    let address = listener.local_addr().map_err(|e| fixture(&e))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_reviews(listener, serving, facts, async {
        let _ = stopped.await;
    }));

    let ca = reqwest::Certificate::from_pem(material.ca_cert.as_bytes()).map_err(|e| fixture(&e))?;
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| fixture(&e))?;
    let url = format!("https://{address}{PATH}");
    let mut latencies = Vec::with_capacity(reviews);
    let mut refused = 0;
    for index in 0..=reviews {
        let body = serde_json::to_vec(&review(index, index % 2 == 1))?;
        let started = Instant::now();
        let answer: serde_json::Value = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| fixture(&e))?
            .error_for_status()
            .map_err(|e| fixture(&e))?
            .json()
            .await
            .map_err(|e| fixture(&e))?;
        let elapsed = started.elapsed();
        let allowed = answer["response"]["allowed"].as_bool();
        if allowed != Some(index % 2 == 0) {
            return Err(fixture(&format!("review {index}: unexpected answer {answer}")));
        }
        // The first opens the connection (TCP and TLS): not a review's latency.
        if index > 0 {
            latencies.push(elapsed);
            refused += usize::from(allowed == Some(false));
        }
    }
    let _ = stop.send(());
    let _ = server.await;
    latencies.sort_unstable();
    let at = |fraction: f64| {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let index = ((latencies.len() as f64 * fraction).ceil() as usize).saturating_sub(1);
        latencies.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(AdmissionResult {
        reviews: latencies.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: at(1.0),
        refused,
    })
}
