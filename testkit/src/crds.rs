//! Applying the repository's CustomResourceDefinitions and waiting until they are Established.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crate::paths::crds_dir;
use crate::waits::wait_crd_established;
use crate::{DEFAULT_TIMEOUT, Error, Result, TestCluster};

impl TestCluster {
    /// Apply every CRD in `<repo>/crds/` and wait until each is Established.
    /// Returns the CRD names.
    pub async fn apply_crds(&self) -> Result<Vec<String>> {
        self.apply_crds_from(&crds_dir(), DEFAULT_TIMEOUT).await
    }

    /// Apply the CRD manifests in `dir` with `kubectl apply` and wait until each is
    /// Established, at most `timeout` per CRD.
    ///
    /// Two concessions to old servers such as the local 1.20 one, which does not know
    /// `x-kubernetes-validations` (CEL rules, 1.23+): kubectl's client-side validation is off
    /// (`--validate=false`; without server-side field validation kubectl would check the CRD
    /// against the server's old OpenAPI and refuse it), and the apply is client-side (1.20's
    /// server-side apply refuses fields its typed schema lacks, while a plain create/patch
    /// drops them). Concurrent test processes applying the same CRDs may race (`AlreadyExists`,
    /// conflicts): those attempts are retried.
    pub async fn apply_crds_from(&self, dir: &Path, timeout: Duration) -> Result<Vec<String>> {
        let args: Vec<OsString> = vec![
            "apply".into(),
            "--validate=false".into(),
            "-o".into(),
            "name".into(),
            "-f".into(),
            dir.into(),
        ];
        let mut attempt = 0;
        let out = loop {
            attempt += 1;
            let out = self.kubectl(&args).await?;
            let racing = ["AlreadyExists", "already exists", "the object has been modified", "Conflict"]
                .iter()
                .any(|m| out.stderr.contains(m));
            if out.success() || !racing || attempt >= 5 {
                break out.ok()?;
            }
            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
        };
        let names: Vec<String> = out
            .stdout
            .lines()
            .filter_map(|l| {
                let (kind, name) = l.trim().split_once('/')?;
                kind.starts_with("customresourcedefinition").then(|| name.to_owned())
            })
            .collect();
        if names.is_empty() {
            return Err(Error::Other(format!("no CustomResourceDefinition applied from {}", dir.display())));
        }
        let client = self.client().await?;
        for name in &names {
            wait_crd_established(client.clone(), name, timeout).await?;
        }
        Ok(names)
    }
}
