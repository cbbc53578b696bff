//! API requests counted by the API server itself (`apiserver_request_total` on its /metrics):
//! during a measured window the harness makes no request but its watches, so the difference
//! between two snapshots is what the operator asked for.

use std::collections::BTreeMap;

use kube::Client;
use serde::Serialize;

use crate::error::{BenchError, Result};

/// Resources whose requests are reported.
const RESOURCES: &[&str] = &[
    "tenantaccesses",
    "tinybirdworkspaces",
    "clustertinybirdworkspaces",
    "secrets",
    "configmaps",
    "events",
    "namespaces",
    "leases",
];

/// The API server's /metrics, as text.
///
/// # Errors
/// /metrics cannot be read (the user needs `get` on the non-resource URL; admin has it).
pub async fn metrics_text(client: &Client) -> Result<String> {
    let request = kube::core::Request::new("")
        .get("metrics", &kube::api::GetParams::default())
        .map_err(|e| BenchError::Fixture(format!("building GET /metrics: {e}")))?;
    client.request_text(request).await.map_err(BenchError::kube("reading the API server's /metrics"))
}

/// `VERB resource[/subresource]` -> count.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestCounts(pub BTreeMap<String, u64>);

impl RequestCounts {
    /// Reads the API server's counters now.
    ///
    /// # Errors
    /// /metrics cannot be read (the user needs `get` on the non-resource URL; admin has it).
    pub async fn snapshot(client: &Client) -> Result<Self> {
        Ok(Self::parse(&metrics_text(client).await?))
    }

    /// Parses `apiserver_request_total` samples.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_total{") else { continue };
            let Some((labels, value)) = rest.split_once('}') else { continue };
            let label = |key: &str| {
                labels.split(',').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    (k == key).then(|| v.trim_matches('"').to_owned())
                })
            };
            let (Some(verb), Some(resource)) = (label("verb"), label("resource")) else { continue };
            if !RESOURCES.contains(&resource.as_str()) || verb == "WATCH" {
                continue;
            }
            let subresource = label("subresource").unwrap_or_default();
            let key = if subresource.is_empty() {
                format!("{verb} {resource}")
            } else {
                format!("{verb} {resource}/{subresource}")
            };
            let Some(value) = value.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let value = value.max(0.0) as u64;
            *counts.entry(key).or_insert(0) += value;
        }
        Self(counts)
    }

    /// `self - earlier`, zero entries dropped.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        Self(
            self.0
                .iter()
                .filter_map(|(key, now)| {
                    let delta = now.saturating_sub(earlier.0.get(key).copied().unwrap_or(0));
                    (delta > 0).then(|| (key.clone(), delta))
                })
                .collect(),
        )
    }

    /// Removes `count` requests of `VERB resource` (the harness's own, known in advance). A
    /// server-side apply is counted as `APPLY` by newer API servers and as `PATCH` by others.
    pub fn subtract(&mut self, key: &str, count: u64) {
        let mut left = count;
        let aliases: Vec<String> = match key.split_once(' ') {
            Some(("APPLY" | "PATCH", resource)) => {
                vec![format!("APPLY {resource}"), format!("PATCH {resource}")]
            }
            _ => vec![key.to_owned()],
        };
        for alias in aliases {
            if let Some(value) = self.0.get_mut(&alias) {
                let taken = left.min(*value);
                *value -= taken;
                left -= taken;
                if *value == 0 {
                    self.0.remove(&alias);
                }
            }
        }
    }

    /// Requests that change something (everything but GET and LIST).
    #[must_use]
    pub fn writes(&self) -> u64 {
        self.0
            .iter()
            .filter(|(key, _)| !key.starts_with("GET ") && !key.starts_with("LIST "))
            .map(|(_, v)| v)
            .sum()
    }

    /// `VERB resource: n (x per tenant), ...`.
    #[must_use]
    pub fn per_tenant(&self, tenants: usize) -> BTreeMap<String, f64> {
        #[allow(clippy::cast_precision_loss)]
        let tenants = tenants.max(1) as f64;
        #[allow(clippy::cast_precision_loss)]
        self.0.iter().map(|(k, v)| (k.clone(), (*v as f64 / tenants * 100.0).round() / 100.0)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP apiserver_request_total x
apiserver_request_total{code="200",component="apiserver",contentType="application/json",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="PATCH",version="v1"} 7
apiserver_request_total{code="201",component="apiserver",contentType="application/json",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="PATCH",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",contentType="application/json",dry_run="",group="tenantaccess.dev",resource="tenantaccesses",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 4
apiserver_request_total{code="200",component="apiserver",contentType="application/json",dry_run="",group="",resource="secrets",scope="cluster",subresource="",verb="WATCH",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",contentType="application/json",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="LIST",version="v1"} 2
"#;

    #[test]
    fn counts_requests_by_verb_and_resource_without_watches() {
        let counts = RequestCounts::parse(TEXT);
        assert_eq!(counts.0.get("PATCH secrets"), Some(&10));
        assert_eq!(counts.0.get("PATCH tenantaccesses/status"), Some(&4));
        assert_eq!(counts.0.len(), 2);
        assert_eq!(counts.writes(), 14);
    }

    #[test]
    fn differences_drop_unchanged_entries() {
        let before = RequestCounts::parse(TEXT);
        let mut after = before.clone();
        after.0.insert("PATCH secrets".into(), 15);
        let mut delta = after.since(&before);
        assert_eq!(delta.0.len(), 1);
        assert_eq!(delta.0.get("PATCH secrets"), Some(&5));
        delta.subtract("PATCH secrets", 5);
        assert_eq!(delta.writes(), 0);
        let mut applied = RequestCounts([("APPLY secrets".to_owned(), 3)].into());
        applied.subtract("APPLY secrets", 1);
        assert_eq!(applied.0.get("APPLY secrets"), Some(&2));
        applied.subtract("PATCH secrets", 5);
        assert!(applied.0.is_empty());
    }
}
