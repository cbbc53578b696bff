//! Where things are: the repository, its `crds/` and `examples/`, the kubectl and helm binaries.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The repository root (the parent of the testkit crate).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The `crds/` directory of the repository.
pub fn crds_dir() -> PathBuf {
    repo_root().join("crds")
}

/// The `examples/` directory of the repository.
pub fn examples_dir() -> PathBuf {
    repo_root().join("examples")
}

/// The kubectl binary: `$KUBECTL` or `kubectl` on `PATH`.
pub fn kubectl_binary() -> OsString {
    std::env::var_os("KUBECTL").filter(|v| !v.is_empty()).unwrap_or_else(|| OsString::from("kubectl"))
}

/// The helm (v4) binary: `$HELM`, else the one `hack/install-deps.sh` installs in the cache
/// directory, if present.
pub fn helm_binary() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("HELM").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(h));
    }
    let cache = match std::env::var_os("TENANT_ACCESS_CACHE").filter(|v| !v.is_empty()) {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/tenant-access-operator"),
    };
    let helm = cache.join("helm-v4/helm");
    helm.is_file().then_some(helm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_root_holds_the_hack_scripts() {
        assert!(repo_root().join("hack/cluster.sh").is_file());
        assert!(repo_root().join("Cargo.toml").is_file());
    }
}
