//! Per-test namespaces, deleted when dropped.

use std::fmt;
use std::process::Stdio;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};

use crate::names::unique_name;
use crate::paths::kubectl_binary;
use crate::{Result, TESTKIT_LABEL, TestCluster};

impl TestCluster {
    /// Create a namespace `prefix-<random>`; it is deleted when the returned value is dropped
    /// (or explicitly with [`TestNamespace::delete`]).
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace> {
        let name = unique_name(prefix);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TESTKIT_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let api: Api<Namespace> = Api::all(self.client().await?);
        api.create(&PostParams::default(), &ns).await?;
        Ok(TestNamespace { name, cluster: self.clone(), deleted: false })
    }
}

/// A namespace created for one test; deleted on drop (without waiting: a local cluster has no
/// controller-manager, so the namespace stays Terminating until the cluster goes away).
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    cluster: TestCluster,
    deleted: bool,
}

impl TestNamespace {
    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster it lives in.
    pub fn cluster(&self) -> &TestCluster {
        &self.cluster
    }

    /// Delete the namespace now (does not wait for it to be gone).
    pub async fn delete(mut self) -> Result<()> {
        self.deleted = true;
        let api: Api<Namespace> = Api::all(self.cluster.client().await?);
        match api.delete(&self.name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl fmt::Display for TestNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl AsRef<str> for TestNamespace {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        // Synchronous and quick: works during a panic and outside any runtime.
        let _ = std::process::Command::new(kubectl_binary())
            .arg("--kubeconfig")
            .arg(self.cluster.admin_kubeconfig())
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
                "--request-timeout=10s",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
