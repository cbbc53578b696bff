//! Reading resources from YAML manifests (as users write them for `kubectl apply`) and writing
//! objects back as YAML.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde::ser::Error as _;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};

use crate::api::{ClusterTinybirdWorkspace, TenantAccess, TinybirdWorkspace};
use crate::core::well_known::{API_GROUP, API_VERSION};

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
    /// Parses a multi-document YAML stream; `source_name` names it in errors. A `kind: List`
    /// (what `kubectl get -o yaml` prints) is read item by item. Documents of other API groups
    /// are skipped; those of this group are read strictly, as the API server reads them: another
    /// version, an unknown kind or a field the schema does not have is an error naming it.
    ///
    /// # Errors
    /// Invalid YAML, or a document of this group that the API server would refuse.
    pub fn parse(&mut self, source_name: &str, text: &str) -> Result<(), ManifestError> {
        let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(text).map_err(|e| {
            ManifestError(format!("{source_name}: not valid YAML: {}", first_line(&e.to_string())))
        })?;
        for (index, document) in documents.iter().enumerate() {
            let place = format!("{source_name}: document {}", index + 1);
            match document.get("kind").and_then(|v| v.as_str()) {
                Some("List") if document.get("apiVersion").and_then(|v| v.as_str()) == Some("v1") => {
                    let items =
                        document.get("items").and_then(|v| v.as_array()).map_or(&[][..], Vec::as_slice);
                    for (item_index, item) in items.iter().enumerate() {
                        self.add(&format!("{place}, item {}", item_index + 1), item)?;
                    }
                }
                _ => self.add(&place, document)?,
            }
        }
        Ok(())
    }

    fn add(&mut self, place: &str, document: &serde_json::Value) -> Result<(), ManifestError> {
        let api_version = document.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default();
        if api_version.split('/').next() != Some(API_GROUP) {
            return Ok(());
        }
        let kind = document.get("kind").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let name = document.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or("");
        let wanted = format!("{API_GROUP}/{API_VERSION}");
        if api_version != wanted {
            return Err(ManifestError(format!(
                "{place} ({kind} {name:?}): apiVersion {api_version:?} is not one this tenant-access knows: use {wanted:?}"
            )));
        }
        let ctx = DocContext { place, kind: &kind, name, document };
        match kind.as_str() {
            "TenantAccess" => self.tenant_accesses.push(ctx.typed()?),
            "TinybirdWorkspace" => self.workspaces.push(ctx.typed()?),
            "ClusterTinybirdWorkspace" => self.cluster_workspaces.push(ctx.typed()?),
            other => {
                return Err(ManifestError(format!(
                    "{place}: kind {other:?} is not a kind of {API_GROUP} (TenantAccess, TinybirdWorkspace, ClusterTinybirdWorkspace)"
                )));
            }
        }
        Ok(())
    }
}

/// The first field of `value` that `schema` does not have (where the schema lists its
/// properties and keeps no unknown fields): its path, and the closest known name.
fn unknown_field(
    schema: &JSONSchemaProps,
    value: &serde_json::Value,
    path: &str,
) -> Option<(String, Option<String>)> {
    match value {
        serde_json::Value::Object(fields) => {
            if schema.x_kubernetes_preserve_unknown_fields == Some(true) {
                return None;
            }
            for (key, child) in fields {
                let child_path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                let child_schema = match (&schema.properties, &schema.additional_properties) {
                    (Some(properties), _) => match properties.get(key) {
                        Some(known) => known,
                        None => {
                            let closest = properties
                                .keys()
                                .map(|known| (strsim::jaro_winkler(known, key), known))
                                .filter(|(score, _)| *score > 0.8)
                                .max_by(|a, b| a.0.total_cmp(&b.0))
                                .map(|(_, known)| known.clone());
                            return Some((child_path, closest));
                        }
                    },
                    (None, Some(JSONSchemaPropsOrBool::Schema(values))) => values,
                    // An object without listed properties (metadata, free-form maps) is not checked.
                    (None, _) => continue,
                };
                if let Some(found) = unknown_field(child_schema, child, &child_path) {
                    return Some(found);
                }
            }
            None
        }
        serde_json::Value::Array(items) => {
            let Some(JSONSchemaPropsOrArray::Schema(item_schema)) = &schema.items else { return None };
            items
                .iter()
                .enumerate()
                .find_map(|(i, item)| unknown_field(item_schema, item, &format!("{path}[{i}]")))
        }
        _ => None,
    }
}

/// The schema the API server checks `kind` of this group against (the CRDs are generated once,
/// not for every document read).
fn schema_of(kind: &str) -> Option<&'static JSONSchemaProps> {
    static SCHEMAS: std::sync::OnceLock<Vec<(String, JSONSchemaProps)>> = std::sync::OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        crate::api::crds()
            .into_iter()
            .filter_map(|crd| {
                let kind = crd.spec.names.kind;
                let version = crd.spec.versions.into_iter().find(|version| version.name == API_VERSION)?;
                Some((kind, version.schema?.open_api_v3_schema?))
            })
            .collect()
    });
    schemas.iter().find(|(known, _)| known == kind).map(|(_, schema)| schema)
}

struct DocContext<'a> {
    place: &'a str,
    kind: &'a str,
    name: &'a str,
    document: &'a serde_json::Value,
}

impl DocContext<'_> {
    fn typed<T: DeserializeOwned>(&self) -> Result<T, ManifestError> {
        let (place, kind, name) = (self.place, self.kind, self.name);
        // The API server checks apiVersion, kind and metadata itself; the CRD's schema the rest.
        let mut checked = self.document.clone();
        if let Some(fields) = checked.as_object_mut() {
            for implicit in ["apiVersion", "kind", "metadata"] {
                fields.remove(implicit);
            }
        }
        if let Some((path, closest)) = schema_of(kind).and_then(|schema| unknown_field(schema, &checked, ""))
        {
            let hint = closest.map(|c| format!(" (did you mean {c:?}?)")).unwrap_or_default();
            return Err(ManifestError(format!(
                "{place} ({kind} {name:?}): {path}: unknown field{hint}; the API server would refuse it"
            )));
        }
        serde_path_to_error::deserialize(self.document).map_err(|e| {
            let message = first_line(&e.inner().to_string());
            // serde says "missing field `x`" at the parent: name the missing field itself.
            let (path, message) =
                match message.strip_prefix("missing field `").and_then(|m| m.split_once('`')) {
                    Some((field, _)) => (format!("{}.{field}", e.path()), "is required".to_owned()),
                    None => (e.path().to_string(), message),
                };
            ManifestError(format!("{place} ({kind} {name:?}): {path}: {message}"))
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
