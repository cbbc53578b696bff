//! What the operator knows of the data of its Clerk template ConfigMaps. The ConfigMap watch is
//! metadata-only (anyone may label a ConfigMap of up to 1 MiB as managed); the data of a
//! ConfigMap a TenantAccess controls is known from the operator's own write or read of it, as a
//! hash of its template key ([`crate::core::desired::configmap_data_hash`]) at that
//! resourceVersion. A watch event of another resourceVersion makes it unknown again (the next
//! reconcile reads the ConfigMap), as does a restart.
//!
//! One entry per Clerk template ConfigMap the operator wrote or read (one per TenantAccess with
//! a Clerk output), forgotten when the watch sees the ConfigMap deleted.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;

fn key(namespace: &str, name: &str) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one((namespace, name))
}

/// The hashes of the Clerk template ConfigMaps' data, by resourceVersion; cheap to clone.
#[derive(Debug, Default, Clone)]
pub struct TemplateConfigMaps {
    seen: Arc<Mutex<HashMap<u64, (String, String)>>>,
}

impl TemplateConfigMaps {
    /// Records a ConfigMap the operator wrote or read whole.
    pub fn seen(&self, configmap: &ConfigMap) {
        let meta = &configmap.metadata;
        let (Some(namespace), Some(name), Some(rv)) = (&meta.namespace, &meta.name, &meta.resource_version)
        else {
            return;
        };
        if let Ok(mut seen) = self.seen.lock() {
            let hash = crate::core::desired::configmap_data_hash(configmap);
            seen.insert(key(namespace, name), (rv.clone(), hash));
        }
    }

    /// The hash of `namespace/name`'s template key, if the operator saw it at `resource_version`.
    #[must_use]
    pub fn data_hash(&self, namespace: &str, name: &str, resource_version: Option<&str>) -> Option<String> {
        let seen = self.seen.lock().ok()?;
        let (rv, hash) = seen.get(&key(namespace, name))?;
        (Some(rv.as_str()) == resource_version).then(|| hash.clone())
    }

    /// Follows the ConfigMap watch: a deleted ConfigMap is forgotten.
    pub fn observe(&self, event: &watcher::Event<PartialObjectMeta<ConfigMap>>) {
        if let watcher::Event::Delete(configmap) = event
            && let (Some(namespace), Some(name)) = (&configmap.metadata.namespace, &configmap.metadata.name)
            && let Ok(mut seen) = self.seen.lock()
        {
            seen.remove(&key(namespace, name));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn configmap(rv: &str, template: &str) -> ConfigMap {
        let mut configmap = ConfigMap::default();
        configmap.metadata.namespace = Some("ns".into());
        configmap.metadata.name = Some("a-clerk-template".into());
        configmap.metadata.resource_version = Some(rv.into());
        configmap.data = Some(BTreeMap::from([("template.json".to_owned(), template.to_owned())]));
        configmap
    }

    #[test]
    fn knows_the_data_only_at_the_resource_version_it_saw() {
        let known = TemplateConfigMaps::default();
        assert_eq!(known.data_hash("ns", "a-clerk-template", Some("5")), None);
        let seen = configmap("5", "{}");
        known.seen(&seen);
        let hash = crate::core::desired::configmap_data_hash(&seen);
        assert_eq!(known.data_hash("ns", "a-clerk-template", Some("5")), Some(hash));
        assert_eq!(known.data_hash("ns", "a-clerk-template", Some("6")), None, "changed since");
        assert_eq!(known.data_hash("other", "a-clerk-template", Some("5")), None);

        let deleted =
            PartialObjectMeta::<ConfigMap> { metadata: seen.metadata.clone(), ..Default::default() };
        known.observe(&watcher::Event::Delete(deleted));
        assert_eq!(known.data_hash("ns", "a-clerk-template", Some("5")), None);
    }
}
