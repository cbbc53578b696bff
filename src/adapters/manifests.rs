//! Reading resources from YAML manifests (as users write them for `kubectl apply`) and writing
//! objects back as YAML.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde::ser::Error as _;

use crate::api::{ClusterTinybirdWorkspace, TenantAccess, TinybirdWorkspace};
use crate::core::well_known::API_GROUP;

/// The resources of a manifest stream this crate understands; other documents are skipped.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    /// TenantAccess documents.
    pub tenant_accesses: Vec<TenantAccess>,
    /// TinybirdWorkspace documents.
    pub workspaces: Vec<TinybirdWorkspace>,
    /// ClusterTinybirdWorkspace documents.
    pub cluster_workspaces: Vec<ClusterTinybirdWorkspace>,
}

/// Why a manifest could not be read: one line naming the file, the document and the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(String);

impl Manifests {
    /// Parses a multi-document YAML stream; `source_name` names it in errors.
    ///
    /// # Errors
    /// Invalid YAML, or a document of a known kind whose fields have the wrong shape.
    pub fn parse(&mut self, source_name: &str, text: &str) -> Result<(), ManifestError> {
        let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(text).map_err(|e| {
            ManifestError(format!("{source_name}: not valid YAML: {}", first_line(&e.to_string())))
        })?;
        for (index, document) in documents.into_iter().enumerate() {
            let api_version = document.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default();
            if api_version.split('/').next() != Some(API_GROUP) {
                continue;
            }
            let kind = document.get("kind").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            let ctx = DocContext { source_name, index: index + 1, kind: &kind, document: &document };
            match kind.as_str() {
                "TenantAccess" => self.tenant_accesses.push(ctx.typed()?),
                "TinybirdWorkspace" => self.workspaces.push(ctx.typed()?),
                "ClusterTinybirdWorkspace" => self.cluster_workspaces.push(ctx.typed()?),
                _ => {}
            }
        }
        Ok(())
    }
}

struct DocContext<'a> {
    source_name: &'a str,
    index: usize,
    kind: &'a str,
    document: &'a serde_json::Value,
}

impl DocContext<'_> {
    fn typed<T: DeserializeOwned>(&self) -> Result<T, ManifestError> {
        serde_path_to_error::deserialize(self.document).map_err(|e| {
            let name = self.document.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or("");
            let message = first_line(&e.inner().to_string());
            // serde says "missing field `x`" at the parent: name the missing field itself.
            let (path, message) =
                match message.strip_prefix("missing field `").and_then(|m| m.split_once('`')) {
                    Some((field, _)) => (format!("{}.{field}", e.path()), "is required".to_owned()),
                    None => (e.path().to_string(), message),
                };
            ManifestError(format!(
                "{}: document {} ({} {name:?}): {path}: {message}",
                self.source_name, self.index, self.kind
            ))
        })
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// Serializes objects as a YAML stream (`---` between documents).
///
/// # Errors
/// Only if an object cannot be serialized.
pub fn to_yaml_stream<T: Serialize>(objects: &[T]) -> Result<String, serde_saphyr::ser::Error> {
    let mut out = String::new();
    for object in objects {
        // Through serde_json::Value: drops nulls the way kubectl shows objects.
        let value =
            serde_json::to_value(object).map_err(|e| serde_saphyr::ser::Error::custom(e.to_string()))?;
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&value)?);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}
