//! The CLI against a real API server, as a person who lives in kubectl uses it: the kubeconfig
//! context's namespace and `--context`, `status` of a selection and as JSON or YAML, `renew` of a
//! selection and failing fast for a refused TenantAccess, `inspect secret`, and the binary run by
//! kubectl as the plugin `kubectl tenant-access`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{Env, assert_no_secrets, has_condition, is_ready};

const CLI: &str = env!("CARGO_BIN_EXE_tenant-access");

/// A token Secret, a label `team` and the emulator's pipe.
fn spec(secret: &str) -> String {
    format!(
        "  workspaceRef: {{name: analytics}}\n  scopes:\n    - resource: top_pages\n      fixedParams: {{org: acme}}\n  secret: {{name: {secret}}}\n"
    )
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `program args` with `KUBECONFIG` set to `kubeconfig` (and PATH prefixed by `path`),
/// giving up after a generous timeout: a command that should fail fast must not wait out `--wait`.
async fn run(program: &str, args: &[&str], kubeconfig: &Path, path: Option<&Path>) -> Run {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("TENANT_ACCESS_KUBECONFIG")
        .kill_on_drop(true);
    if let Some(dir) = path {
        let old = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![dir.to_path_buf()];
        paths.extend(std::env::split_paths(&old));
        command.env("PATH", std::env::join_paths(paths).unwrap());
    }
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish within 120 s"))
        .unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A copy of the admin kubeconfig with two contexts: `ours`, whose namespace is the test's, and
/// `elsewhere` (namespace `default`), current.
fn kubeconfig_with_contexts(env: &Env, dir: &Path) -> PathBuf {
    let mut config = kube::config::Kubeconfig::read_from(env.cluster.admin_kubeconfig()).unwrap();
    let current = config.current_context.clone().unwrap();
    let named = config.contexts.iter().find(|c| c.name == current).unwrap().clone();
    let mut ours = named.clone();
    ours.name = "ours".into();
    ours.context.as_mut().unwrap().namespace = Some(env.name().to_owned());
    let mut elsewhere = named;
    elsewhere.name = "elsewhere".into();
    elsewhere.context.as_mut().unwrap().namespace = Some("default".into());
    config.contexts = vec![ours, elsewhere];
    config.current_context = Some("elsewhere".into());
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    path
}

/// alpha (label team=a) and beta (team=b), Ready, and gamma, refused (its workspace does not
/// exist); all labelled `test: <namespace>`, so that a selection across namespaces finds only them.
async fn three_tenants(env: &Env) {
    for (name, team) in [("alpha", "a"), ("beta", "b")] {
        env.apply_yaml(&format!(
            "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: {name}, labels: {{team: {team}, test: {}}}}}\nspec:\n{}",
            env.name(),
            spec(&format!("{name}-token"))
        ))
        .await;
    }
    env.tenant_access("gamma", &spec("gamma-token").replace("analytics", "missing")).await;
    env.wait_access("alpha", is_ready()).await;
    env.wait_access("beta", is_ready()).await;
    env.wait_access("gamma", has_condition("TokenIssued", "False", "WorkspaceNotFound")).await;
}

fn scratch_dir(env: &Env) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tenant-access-cli-{}", env.name()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_finds_the_context_namespace_selects_and_prints_like_kubectl() {
    let mut env = Env::new("cli-select").await;
    env.start_operator();
    three_tenants(&env).await;
    let dir = scratch_dir(&env);
    let kubeconfig = kubeconfig_with_contexts(&env, &dir);

    // The current context's namespace is `default`: alpha is not there; --context ours finds it
    // without -n.
    let elsewhere = run(CLI, &["status", "alpha"], &kubeconfig, None).await;
    assert_eq!(elsewhere.code, Some(1), "{}", elsewhere.stderr);
    assert!(elsewhere.stderr.contains("TenantAccess default/alpha not found"), "{}", elsewhere.stderr);
    let ours = run(CLI, &["status", "alpha", "--context", "ours"], &kubeconfig, None).await;
    assert_eq!(ours.code, Some(0), "{}{}", ours.stdout, ours.stderr);
    assert!(ours.stdout.contains(&format!("TenantAccess {}/alpha", env.name())), "{}", ours.stdout);

    // A table of the namespace: one row each, not Ready (exit 6) because gamma is refused.
    let table = run(CLI, &["status", "--context", "ours"], &kubeconfig, None).await;
    assert_eq!(table.code, Some(6), "{}{}", table.stdout, table.stderr);
    let rows: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(rows.len(), 4, "{}", table.stdout);
    assert!(rows[0].starts_with("NAME") && rows[0].contains("REASON"), "{}", table.stdout);
    assert!(rows[1].starts_with("alpha") && rows[1].contains("True"), "{}", table.stdout);
    assert!(rows[3].starts_with("gamma") && rows[3].contains("WorkspaceNotFound"), "{}", table.stdout);

    // -l selects; -A adds the namespace column (the label `test` keeps other tests' out).
    let selector = format!("team=a,test={}", env.name());
    let team_a = run(CLI, &["status", "-A", "-l", &selector], &kubeconfig, None).await;
    assert_eq!(team_a.code, Some(0), "{}{}", team_a.stdout, team_a.stderr);
    let rows: Vec<&str> = team_a.stdout.lines().collect();
    assert_eq!(rows.len(), 2, "{}", team_a.stdout);
    assert!(rows[0].starts_with("NAMESPACE"), "{}", team_a.stdout);
    assert!(rows[1].starts_with(env.name()) && rows[1].contains("alpha"), "{}", team_a.stdout);

    // -o json of one object; -o yaml of a selection is a List.
    let json = run(CLI, &["status", "beta", "-n", env.name(), "-o", "json"], &kubeconfig, None).await;
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let object: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(object["kind"], "TenantAccess");
    assert_eq!(object["metadata"]["name"], "beta");
    assert_eq!(object["status"]["token"]["revision"], 1);
    let yaml = run(CLI, &["status", "-n", env.name(), "-l", "team=b", "-o", "yaml"], &kubeconfig, None).await;
    assert_eq!(yaml.code, Some(0), "{}", yaml.stderr);
    let list: serde_json::Value = serde_saphyr::from_str(&yaml.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["metadata"]["name"], "beta");

    // A name with -A is refused with a reason, as kubectl does.
    let ambiguous = run(CLI, &["status", "alpha", "-A"], &kubeconfig, None).await;
    assert_eq!(ambiguous.code, Some(1));
    assert!(ambiguous.stderr.contains("across all namespaces"), "{}", ambiguous.stderr);
    for output in [&ours, &table, &team_a, &json, &yaml] {
        assert_no_secrets("status output", &output.stdout, &[env.tinybird.admin_token()]);
    }
    env.stop_operator().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_renews_a_selection_and_fails_fast_for_a_refused_tenant_access() {
    let mut env = Env::new("cli-renew").await;
    env.start_operator();
    three_tenants(&env).await;
    let kubeconfig = env.cluster.admin_kubeconfig().to_path_buf();
    let ns = env.name().to_owned();

    // A refused TenantAccess: an error naming why, at once (not after --wait 600).
    let refused = run(CLI, &["renew", "gamma", "-n", &ns, "--wait", "600"], &kubeconfig, None).await;
    assert_eq!(refused.code, Some(6), "{}{}", refused.stdout, refused.stderr);
    assert!(refused.stderr.contains("is refused (WorkspaceNotFound)"), "{}", refused.stderr);

    // No name and no selection: told how to select.
    let nothing = run(CLI, &["renew", "-n", &ns], &kubeconfig, None).await;
    assert_eq!(nothing.code, Some(1));
    assert!(nothing.stderr.contains("--all"), "{}", nothing.stderr);

    // -l renews only the selected TenantAccess.
    let team_a = run(CLI, &["renew", "-n", &ns, "-l", "team=a", "--wait", "60"], &kubeconfig, None).await;
    assert_eq!(team_a.code, Some(0), "{}{}", team_a.stdout, team_a.stderr);
    assert!(team_a.stdout.contains(&format!("{ns}/alpha: new token: revision 2")), "{}", team_a.stdout);
    assert!(!team_a.stdout.contains("beta"), "{}", team_a.stdout);
    let beta = env.tenant_accesses().get("beta").await.unwrap();
    assert_eq!(beta.status.unwrap().token.unwrap().revision, 1, "beta was renewed too");

    // --all: every TenantAccess of the namespace; the refused one is reported and makes it fail.
    let all = run(CLI, &["renew", "-n", &ns, "--all", "--wait", "60"], &kubeconfig, None).await;
    assert_eq!(all.code, Some(6), "{}{}", all.stdout, all.stderr);
    assert!(all.stdout.contains(&format!("{ns}/alpha: new token: revision 3")), "{}", all.stdout);
    assert!(all.stdout.contains(&format!("{ns}/beta: new token: revision 2")), "{}", all.stdout);
    assert!(all.stderr.contains(&format!("{ns}/gamma is refused (WorkspaceNotFound)")), "{}", all.stderr);
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reads_a_secret_and_kubectl_runs_the_binary_as_a_plugin() {
    let mut env = Env::new("cli-plugin").await;
    env.start_operator();
    env.tenant_access("alpha", &spec("alpha-token")).await;
    env.wait_access("alpha", is_ready()).await;
    let dir = scratch_dir(&env);
    let kubeconfig = kubeconfig_with_contexts(&env, &dir);
    let admin_token_file = dir.join("admin-token");
    std::fs::write(&admin_token_file, env.tinybird.admin_token()).unwrap();

    // inspect secret: the context's namespace, verified with the admin token; the JWT itself
    // is never printed.
    let inspected = run(
        CLI,
        &[
            "inspect",
            "secret",
            "alpha-token",
            "--context",
            "ours",
            "--admin-token-file",
            admin_token_file.to_str().unwrap(),
        ],
        &kubeconfig,
        None,
    )
    .await;
    assert_eq!(inspected.code, Some(0), "{}{}", inspected.stdout, inspected.stderr);
    assert!(inspected.stdout.contains("Verdict:    valid"), "{}", inspected.stdout);
    assert!(inspected.stdout.contains("top_pages"), "{}", inspected.stdout);
    assert_no_secrets("inspect output", &inspected.stdout, &[env.tinybird.admin_token()]);
    let wrong_key = run(
        CLI,
        &["inspect", "secret", "alpha-token", "--context", "ours", "--key", "nope"],
        &kubeconfig,
        None,
    )
    .await;
    assert_eq!(wrong_key.code, Some(1));
    assert!(wrong_key.stderr.contains("has no key \"nope\" (its keys: "), "{}", wrong_key.stderr);

    // kubectl finds `kubectl-tenant_access` on PATH and runs it for `kubectl tenant-access`.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let plugin = bin.join(tenant_access::cli::KUBECTL_PLUGIN_NAME);
    let _ = std::fs::remove_file(&plugin);
    std::os::unix::fs::symlink(CLI, &plugin).unwrap();
    let kubectl = tenant_access_testkit::kubectl_binary().into_string().unwrap();
    let kubectl = kubectl.as_str();
    let listed = run(kubectl, &["plugin", "list"], &kubeconfig, Some(&bin)).await;
    assert!(listed.stdout.contains(plugin.to_str().unwrap()), "{}{}", listed.stdout, listed.stderr);
    let status =
        run(kubectl, &["tenant-access", "status", "alpha", "--context", "ours"], &kubeconfig, Some(&bin))
            .await;
    assert_eq!(status.code, Some(0), "{}{}", status.stdout, status.stderr);
    assert!(status.stdout.contains(&format!("TenantAccess {}/alpha", env.name())), "{}", status.stdout);
    let help = run(kubectl, &["tenant-access", "--help"], &kubeconfig, Some(&bin)).await;
    assert!(help.stdout.contains("Usage: kubectl tenant-access"), "{}", help.stdout);
    env.stop_operator().await;
    let _ = std::fs::remove_dir_all(dir);
}
