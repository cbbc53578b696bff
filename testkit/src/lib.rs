//! Test support for tenant-access-operator: a real Kubernetes API server for integration tests.
//!
//! [`TestCluster`] gives a test a real cluster:
//!
//! - when `TEST_KUBECONFIG` is set (by `hack/with-cluster.sh`, or by a user pointing the tests at
//!   kind/k3d), that cluster is used and left running;
//! - otherwise a private etcd + kube-apiserver (v1.20.2) is started on loopback through
//!   `hack/cluster.sh up <tempdir> --owner-pid <this process>` and torn down when the last
//!   handle is dropped (also during a panic). If the test process dies without unwinding
//!   (SIGKILL, `abort`), the watchdog started by `cluster.sh` stops the cluster and removes its
//!   directory.
//!
//! A private cluster can also be faulted, for fault tests: [`TestCluster::stop_apiserver`] /
//! [`TestCluster::start_apiserver`], [`TestCluster::pause_etcd`] / [`TestCluster::resume_etcd`], and
//! its audited `operator` identity ([`TestCluster::operator_kubeconfig`], [`TestCluster::audit_log`]).
//!
//! Clients are created per call ([`TestCluster::client`]), so a cluster shared between
//! `#[tokio::test]`s (each with its own runtime) never hands out a client bound to a dead runtime.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tenant_access_testkit::Error> {
//! use tenant_access_testkit::TestCluster;
//! let cluster = TestCluster::shared().await?;
//! cluster.apply_crds().await?;
//! let ns = cluster.namespace("my-test").await?;
//! let out = cluster.kubectl(["get", "tenantaccesses", "-n", ns.name()]).await?;
//! assert!(out.success(), "{}", out.stderr);
//! # Ok(()) }
//! ```
//!
//! Environment: `TEST_KUBECONFIG` (admin kubeconfig of an existing cluster),
//! `TEST_TENANT_KUBECONFIG` (kubeconfig of an unprivileged user on that cluster; without it a
//! ServiceAccount `tenant-dev` in namespace `tenant-access-testkit` is provisioned on first use),
//! `TEST_TENANT_USER` (the user name in `TEST_TENANT_KUBECONFIG`, default `tenant-dev`),
//! `KUBECTL` (kubectl binary, default `kubectl` on `PATH`), `HELM`, `HELM3`, `PROMTOOL` (default:
//! the ones `hack/install-deps.sh` caches),
//! `TENANT_ACCESS_KEEP_CLUSTER_DIR=1` (keep a private cluster's directory with its logs).
//! Tokens are never logged or put into error messages.

mod cluster;
mod crds;
mod error;
mod faults;
mod kubectl;
mod names;
mod namespace;
mod paths;
mod waits;

use std::time::Duration;

pub use cluster::{TestCluster, client_from_kubeconfig};
pub use error::{Error, Result};
pub use kubectl::KubectlOutput;
pub use names::{random_suffix, unique_name};
pub use namespace::TestNamespace;
pub use paths::{
    crds_dir, examples_dir, helm_binary, helm3_binary, kubectl_binary, promtool_binary, repo_root,
};
pub use waits::{wait_crd_established, wait_for};

/// Default timeout for waits on the API server (CRD establishment, conditions).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Label put on every namespace the testkit creates.
pub const TESTKIT_LABEL: &str = "tenantaccess.dev/testkit";

/// Namespace holding the ServiceAccount used as the unprivileged user on external clusters.
pub const TENANT_SA_NAMESPACE: &str = "tenant-access-testkit";

/// Name of the unprivileged user (local cluster) or ServiceAccount (external cluster).
pub const TENANT_USER: &str = "tenant-dev";
