//! Running kubectl (as admin or as the tenant user) and applying manifests with it.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use tokio::io::AsyncWriteExt;

use crate::error::io_err;
use crate::paths::kubectl_binary;
use crate::{Error, Result, TestCluster};

/// What a kubectl run produced. Never an error by itself: check [`KubectlOutput::success`].
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    /// The arguments kubectl ran with (without the kubeconfig).
    pub args: Vec<String>,
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl KubectlOutput {
    /// Whether kubectl exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// `Ok(self)` when kubectl succeeded, else [`Error::Kubectl`] with its stderr.
    pub fn ok(self) -> Result<Self> {
        if self.success() {
            Ok(self)
        } else {
            Err(Error::Kubectl {
                args: self.args.join(" "),
                status: self.status.to_string(),
                stderr: self.stderr,
            })
        }
    }
}

impl TestCluster {
    /// A `kubectl` command preset with the admin kubeconfig (stdin null, output piped).
    pub fn kubectl_command(&self) -> tokio::process::Command {
        kubectl_command_for(self.admin_kubeconfig())
    }

    /// Run kubectl as admin. Non-zero exit is not an error: check the output.
    pub async fn kubectl<I, S>(&self, args: I) -> Result<KubectlOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_kubectl(self.admin_kubeconfig(), args, None).await
    }

    /// Run kubectl as admin with `stdin` as standard input (e.g. `apply -f -`).
    pub async fn kubectl_with_stdin<I, S>(&self, args: I, stdin: &str) -> Result<KubectlOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_kubectl(self.admin_kubeconfig(), args, Some(stdin)).await
    }

    /// Run kubectl as the unprivileged tenant user.
    pub async fn tenant_kubectl<I, S>(&self, args: I) -> Result<KubectlOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let kubeconfig = self.tenant_kubeconfig().await?;
        run_kubectl(&kubeconfig, args, None).await
    }

    /// Run kubectl as the tenant user with `stdin` as standard input.
    pub async fn tenant_kubectl_with_stdin<I, S>(&self, args: I, stdin: &str) -> Result<KubectlOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let kubeconfig = self.tenant_kubeconfig().await?;
        run_kubectl(&kubeconfig, args, Some(stdin)).await
    }

    /// `kubectl apply -f FILE` (a file or directory, multi-document YAML allowed), optionally
    /// with `-n NAMESPACE`. Fails with kubectl's stderr when kubectl fails.
    pub async fn apply_file(&self, path: impl AsRef<Path>, namespace: Option<&str>) -> Result<KubectlOutput> {
        let mut args: Vec<OsString> = vec!["apply".into(), "-f".into(), path.as_ref().into()];
        if let Some(ns) = namespace {
            args.push("-n".into());
            args.push(ns.into());
        }
        self.kubectl(args).await?.ok()
    }

    /// `kubectl apply -f -` with `yaml` (multi-document allowed). Fails when kubectl fails.
    pub async fn apply_yaml(&self, yaml: &str, namespace: Option<&str>) -> Result<KubectlOutput> {
        let mut args = vec!["apply", "-f", "-"];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        self.kubectl_with_stdin(args, yaml).await?.ok()
    }
}

pub(crate) fn kubectl_command_for(kubeconfig: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(kubectl_binary());
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn run_kubectl<I, S>(kubeconfig: &Path, args: I, stdin: Option<&str>) -> Result<KubectlOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let shown: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut cmd = kubectl_command_for(kubeconfig);
    cmd.args(&args);
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let context = || format!("running kubectl {}", shown.join(" "));
    let mut child = cmd.spawn().map_err(io_err(context()))?;
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        // Write concurrently with reading the output, so big inputs cannot deadlock.
        let input = input.to_owned();
        tokio::spawn(async move {
            let _ = pipe.write_all(input.as_bytes()).await;
            let _ = pipe.shutdown().await;
        });
    }
    let output = child.wait_with_output().await.map_err(io_err(context()))?;
    Ok(KubectlOutput {
        args: shown,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}
