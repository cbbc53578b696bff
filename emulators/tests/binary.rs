//! The `tenant-access-emulators` binary: `both` serves the two emulators and writes the secrets
//! to files (rewriting the admin token file on refresh), never to its output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{Answer, client, get, get_with_bearer};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::Command;

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tenant-access-emulators-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The URL printed after `label` on one of the first stdout lines.
async fn url_after(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    label: &str,
) -> String {
    let line =
        tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    assert!(line.starts_with(label), "{line}");
    let rest = &line[label.len()..];
    rest.split_whitespace().next().unwrap().to_owned()
}

#[tokio::test]
async fn both_writes_secrets_to_files_and_rewrites_the_token_on_refresh() {
    let dir = scratch_dir();
    let token_file = dir.join("admin-token");
    let key_file = dir.join("clerk-key");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenant-access-emulators"))
        .args(["both", "--tinybird-listen", "127.0.0.1:0", "--clerk-listen", "127.0.0.1:0"])
        .arg("--write-admin-token")
        .arg(&token_file)
        .arg("--write-secret-key")
        .arg(&key_file)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let tinybird_url = url_after(&mut lines, "tinybird emulator: ").await;
    let clerk_api = url_after(&mut lines, "clerk emulator: ").await;

    let admin_token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    let control = get(&format!("{tinybird_url}/_emulator/admin-token")).await;
    assert_eq!(control.body["token"].as_str(), Some(admin_token.as_str()));
    let workspace = get_with_bearer(&format!("{tinybird_url}/v1/workspace"), &admin_token).await;
    assert_eq!(workspace.status, 200);

    let secret_key = std::fs::read_to_string(&key_file).unwrap();
    let templates = get_with_bearer(&format!("{clerk_api}/jwt_templates"), &secret_key).await;
    assert_eq!(templates.status, 200);

    let refresh = client()
        .post(format!("{tinybird_url}/v0/tokens/admin%20token/refresh"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    let new_token = Answer::from(refresh).await.body["token"].as_str().unwrap().to_owned();
    let mut rewritten = false;
    for _ in 0..200 {
        if std::fs::read_to_string(&token_file).unwrap() == new_token {
            rewritten = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(rewritten, "the admin token file was not rewritten");

    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let mut logs = String::new();
    child.stderr.take().unwrap().read_to_string(&mut logs).await.unwrap();
    for secret in [&admin_token, &new_token, &secret_key] {
        assert!(!logs.contains(secret.as_str()), "a secret reached the logs");
    }
    while let Ok(Some(line)) = lines.next_line().await {
        for secret in [&admin_token, &new_token, &secret_key] {
            assert!(!line.contains(secret.as_str()), "a secret reached stdout");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn uses_a_given_admin_token_and_pipes_file() {
    let dir = scratch_dir();
    let token = tenant_access_emulators::AdminTokenParts {
        workspace_id: "3f6c1b1e-0000-0000-0000-000000000000".into(),
        token_id: "t1".into(),
        host: "eu_shared".into(),
    }
    .mint();
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
    std::fs::write(
        dir.join("pipes.json"),
        r#"[{"name": "only_pipe", "columns": [{"name": "org", "type": "String"}], "rows": [{"org": "acme"}]}]"#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenant-access-emulators"))
        .args(["tinybird", "--listen", "127.0.0.1:0", "--no-default-pipes"])
        .arg("--admin-token-from")
        .arg(dir.join("token"))
        .arg("--pipes-file")
        .arg(dir.join("pipes.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = url_after(&mut lines, "tinybird emulator: ").await;
    let only = get_with_bearer(&format!("{url}/v0/pipes/only_pipe.json"), &token).await;
    assert_eq!(only.body["rows"], 1);
    let gone = get_with_bearer(&format!("{url}/v0/pipes/top_pages.json"), &token).await;
    assert_eq!(gone.status, 404);
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
