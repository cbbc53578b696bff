//! Where things are: the repository, its `crds/` and `examples/`, the kubectl, helm and promtool
//! binaries.

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
    cached_tool("HELM", "helm-v4/helm")
}

/// The helm v3 binary (the chart is tested with both majors): `$HELM3`, else the one
/// `hack/install-deps.sh` installs in the cache directory, if present.
pub fn helm3_binary() -> Option<PathBuf> {
    cached_tool("HELM3", "helm-v3/helm")
}

/// Prometheus's promtool (`check metrics`, `test rules`): `$PROMTOOL`, else the one
/// `hack/install-deps.sh` installs in the cache directory, if present.
pub fn promtool_binary() -> Option<PathBuf> {
    cached_tool("PROMTOOL", "promtool/promtool")
}

/// `$variable` when set and non-empty, else `relative` under the install-deps cache directory
/// (`$TENANT_ACCESS_CACHE`, default `~/.cache/tenant-access-operator`) when it is a file.
fn cached_tool(variable: &str, relative: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let cache = match std::env::var_os("TENANT_ACCESS_CACHE").filter(|v| !v.is_empty()) {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/tenant-access-operator"),
    };
    let tool = cache.join(relative);
    tool.is_file().then_some(tool)
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
