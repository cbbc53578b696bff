//! The committed CRD YAML in `crds/` is what the Rust types generate, and documents every field.

use std::path::Path;

use tenant_access::adapters::manifests::to_yaml_stream;
use tenant_access::api::{crd_file_name, crds};

#[test]
fn committed_crds_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for crd in crds() {
        let path = dir.join(crd_file_name(&crd));
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `make crds`", path.display()));
        let generated = to_yaml_stream(std::slice::from_ref(&crd)).unwrap();
        assert!(committed == generated, "{} is stale: run `make crds` and commit the result", path.display());
    }
}

/// Every property below `spec` (and `status`) carries a description: `kubectl explain` shows it.
#[test]
fn every_field_has_a_description() {
    let mut missing = Vec::new();
    for crd in crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let root = &schema["openAPIV3Schema"]["properties"];
        for part in ["spec", "status"] {
            walk(&root[part], &format!("{}.{part}", crd.spec.names.kind), &mut missing);
        }
    }
    assert!(missing.is_empty(), "fields without a description: {missing:#?}");
}

fn walk(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
    if let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) {
        for (name, property) in properties {
            let field = format!("{path}.{name}");
            if property.get("description").and_then(|d| d.as_str()).is_none_or(str::is_empty) {
                missing.push(field.clone());
            }
            walk(property, &field, missing);
        }
    }
    if let Some(items) = schema.get("items") {
        walk(items, &format!("{path}[]"), missing);
    }
}

#[test]
fn crds_have_short_names_status_and_printer_columns() {
    let expected =
        [("TenantAccess", "ta"), ("TinybirdWorkspace", "tbws"), ("ClusterTinybirdWorkspace", "ctbws")];
    for (crd, (kind, short)) in crds().iter().zip(expected) {
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(crd.spec.group, "tenantaccess.dev");
        assert_eq!(crd.spec.names.short_names.as_deref(), Some(&[short.to_owned()][..]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
            "{kind}: status subresource"
        );
        let columns: Vec<&str> =
            version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
        assert!(columns.contains(&"Ready") && columns.contains(&"Age"), "{kind}: {columns:?}");
    }
    let ta = &crds()[0].spec.versions[0];
    let columns: Vec<&str> =
        ta.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(columns, ["Ready", "Workspace", "Secret", "Expires", "Healthy", "Age", "Reason", "Message"]);
    // Why a resource is not Ready is shown by `kubectl get -o wide` (priority 1), as cert-manager does.
    for crd in crds() {
        let wide: Vec<(&str, Option<i32>)> = crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .filter(|c| c.name == "Reason" || c.name == "Message")
            .map(|c| (c.name.as_str(), c.priority))
            .collect();
        assert_eq!(wide, [("Reason", Some(1)), ("Message", Some(1))], "{}", crd.spec.names.kind);
    }
}
