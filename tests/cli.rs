//! The offline CLI as a user runs it: `render` and `inspect` on the shipped examples.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const NOW: &str = "2026-01-01T00:00:00Z";
const NOW_UNIX: i64 = 1_767_225_600;
const EXAMPLE_WORKSPACE_ID: &str = "00000000-0000-4000-8000-000000000000";

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn tenant_access(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenant-access"))
        .args(args)
        .env_remove("TENANT_ACCESS_ADMIN_TOKEN_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path).display().to_string()
}

/// The fake, well-formed admin token of `examples/offline/`, written to a temp file.
fn example_admin_token() -> (String, tempfile_path::TempFile) {
    let token = std::fs::read_to_string(repo("examples/offline/fake-admin-token")).unwrap().trim().to_owned();
    let file = tempfile_path::TempFile::with_content(&token);
    (token, file)
}

/// A tiny temp-file helper (std only) that deletes the file on drop.
mod tempfile_path {
    use super::PathBuf;

    pub struct TempFile(pub PathBuf);

    impl TempFile {
        pub fn with_content(content: &str) -> Self {
            static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("tenant-access-cli-{}-{n}", std::process::id()));
            std::fs::write(&path, content).unwrap();
            Self(path)
        }

        pub fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn documents(yaml: &str) -> Vec<serde_json::Value> {
    serde_saphyr::from_multiple(yaml).unwrap()
}

/// The JWT in the rendered Secret of the per-tenant example.
fn render_example_token(key_file: &str) -> String {
    let out = tenant_access(
        &[
            "render",
            "-f",
            &repo("examples/workspace.yaml"),
            "-f",
            &repo("examples/tenant-access.yaml"),
            "--admin-token-file",
            key_file,
            "--now",
            NOW,
            "-n",
            "acme",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let docs = documents(&out.stdout);
    assert_eq!(docs.len(), 1);
    let token_b64 = docs[0]["data"]["token"].as_str().unwrap();
    String::from_utf8(STANDARD.decode(token_b64).unwrap()).unwrap()
}

#[test]
fn rendered_secret_token_verifies_with_an_independent_hmac_and_has_exactly_tinybirds_claims() {
    let (admin_token, key_file) = example_admin_token();
    let jwt = render_example_token(key_file.path());

    // Independent verification: HMAC-SHA256 over "header.payload" keyed by the admin token's bytes.
    let (signing_input, signature) = jwt.rsplit_once('.').unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(admin_token.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap())
        .expect("HS256 signature with the admin token");

    let (header, payload) = signing_input.split_once('.').unwrap();
    let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["alg"], "HS256");
    let payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(
        payload,
        serde_json::json!({
            "workspace_id": EXAMPLE_WORKSPACE_ID,
            "name": "acme_acme",
            "scopes": [
                {"type": "PIPES:READ", "resource": "top_pages", "fixed_params": {"org": "acme"}},
                {"type": "PIPES:READ", "resource": "tenant_events", "fixed_params": {"org": "acme"}},
            ],
            "limits": {"rps": 10},
            "exp": NOW_UNIX + 3600,
            "iat": NOW_UNIX,
        })
    );
}

#[test]
fn rendered_secret_is_what_the_controller_writes() {
    let (_, key_file) = example_admin_token();
    let out = tenant_access(
        &[
            "render",
            "-f",
            &repo("examples/tenant-access.yaml"),
            "--admin-token-file",
            key_file.path(),
            "--now",
            NOW,
            "-n",
            "acme",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let secret = &documents(&out.stdout)[0];
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["metadata"]["name"], "acme-tinybird-token");
    assert_eq!(secret["metadata"]["namespace"], "acme");
    assert_eq!(secret["metadata"]["labels"]["app.kubernetes.io/managed-by"], "tenant-access-operator");
    let text = |key: &str| {
        String::from_utf8(STANDARD.decode(secret["data"][key].as_str().unwrap()).unwrap()).unwrap()
    };
    assert_eq!(text("api-url"), "https://api.tinybird.co");
    assert_eq!(text("workspace-id"), EXAMPLE_WORKSPACE_ID);
    assert_eq!(text("expires-at"), "2026-01-01T01:00:00Z");
    assert!(out.stderr.contains("not in the input"), "{}", out.stderr);
}

#[test]
fn rendered_clerk_template_never_contains_the_admin_token() {
    let (admin_token, key_file) = example_admin_token();
    let out = tenant_access(
        &[
            "render",
            "-f",
            &repo("examples/workspace.yaml"),
            "-f",
            &repo("examples/clerk-template.yaml"),
            "--admin-token-file",
            key_file.path(),
            "-n",
            "acme",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains(&admin_token) && !out.stderr.contains(&admin_token));
    let configmap = &documents(&out.stdout)[0];
    assert_eq!(configmap["metadata"]["name"], "tinybird-clerk-clerk-template");
    let template: serde_json::Value =
        serde_json::from_str(configmap["data"]["template.json"].as_str().unwrap()).unwrap();
    assert_eq!(template["claims"]["scopes"][0]["fixed_params"]["org"], "{{org.slug || '_none_'}}");
    assert_eq!(template["claims"]["name"], "frontend_jwt_{{user.id || '_none_'}}");
    assert_eq!(template["signing_algorithm"], "HS256");
    assert_eq!(template["custom_signing_key"], true);
    assert!(template.get("signing_key").is_none());
    assert!(!out.stderr.contains("warning:"), "the example sets limits.rps: {}", out.stderr);

    // Without limits.rps every signed-in user may query without limit: render says so.
    let unlimited = std::fs::read_to_string(repo("examples/clerk-template.yaml")).unwrap().replace(
        "  limits:\n    rps: 10                  # per user: each user's tokens carry a name of their own\n",
        "",
    );
    assert!(!unlimited.contains("limits:"), "{unlimited}");
    let out = tenant_access(
        &[
            "render",
            "-f",
            &repo("examples/workspace.yaml"),
            "-f",
            "-",
            "--admin-token-file",
            key_file.path(),
            "-n",
            "acme",
        ],
        Some(&unlimited),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("warning: TenantAccess acme/tinybird-clerk: spec.clerkTemplate: no limits.rps"),
        "{}",
        out.stderr
    );
}

#[test]
fn inspect_tells_valid_expired_and_wrongly_signed_tokens_apart() {
    let (_, key_file) = example_admin_token();
    let jwt = render_example_token(key_file.path());

    let valid = tenant_access(
        &["inspect", "-", "--admin-token-file", key_file.path(), "--now", "2026-01-01T00:30:00Z"],
        Some(&jwt),
    );
    assert_eq!(valid.code, 0, "{}{}", valid.stdout, valid.stderr);
    assert!(valid.stdout.contains("Verdict:    valid"), "{}", valid.stdout);
    assert!(valid.stdout.contains("PIPES:READ top_pages  fixed_params: org=\"acme\""), "{}", valid.stdout);
    assert!(valid.stdout.contains("10 requests/s"), "{}", valid.stdout);
    assert!(!valid.stdout.contains(&jwt));

    let expired = tenant_access(
        &["inspect", &jwt, "--admin-token-file", key_file.path(), "--now", "2026-01-01T01:00:00Z"],
        None,
    );
    assert_eq!(expired.code, 3, "{}", expired.stdout);
    assert!(expired.stdout.contains("Verdict:    EXPIRED"), "{}", expired.stdout);

    let other_key = tempfile_path::TempFile::with_content(
        "p.eyJ1IjoiMDAwMDAwMDAtMDAwMC00MDAwLTgwMDAtMDAwMDAwMDAwMDAwIn0.ROTATED",
    );
    let forged = tenant_access(
        &["inspect", "-", "--admin-token-file", other_key.path(), "--now", "2026-01-01T00:30:00Z"],
        Some(&jwt),
    );
    assert_eq!(forged.code, 4, "{}", forged.stdout);
    assert!(forged.stdout.contains("Verdict:    BAD SIGNATURE"), "{}", forged.stdout);

    let unverified = tenant_access(&["inspect", "-", "--now", "2026-01-01T00:30:00Z"], Some(&jwt));
    assert_eq!(unverified.code, 0);
    assert!(unverified.stdout.contains("signature NOT verified"), "{}", unverified.stdout);

    let garbage = tenant_access(&["inspect", "not-a-token"], None);
    assert_eq!(garbage.code, 1);
    assert_eq!(garbage.stderr.lines().count(), 1, "{}", garbage.stderr);
    assert!(garbage.stderr.starts_with("error: the token is not a JWT"), "{}", garbage.stderr);
}

const BASE: &str = "apiVersion: tenantaccess.dev/v1alpha1
kind: TenantAccess
metadata: {name: acme, namespace: acme}
spec:
";

/// Malformed TenantAccess specs and the field each one's error must name.
const MALFORMED: &[(&str, &str)] = &[
    ("workspaceRef: {name: a}\n  scopes: []\n  secret: {}", "spec.scopes:"),
    ("workspaceRef: {name: a}\n  scopes: [{resource: ''}]\n  secret: {}", "spec.scopes[0].resource"),
    (
        "workspaceRef: {name: a}\n  scopes: [{type: 'PIPES:WRITE', resource: p}]\n  secret: {}",
        "spec.scopes[0].type",
    ),
    (
        "workspaceRef: {name: a}\n  scopes: [{resource: p, fixedParams: {org: ''}}]\n  secret: {}",
        "spec.scopes[0].fixedParams.org",
    ),
    (
        "workspaceRef: {name: a}\n  scopes: [{resource: p, fixedParams: {org: null}}]\n  secret: {}",
        "spec.scopes[0].fixedParams.org",
    ),
    (
        "workspaceRef: {name: a}\n  scopes: [{resource: p, fixedParams: {org: '{{org.slug}}'}}]\n  secret: {}",
        "spec.scopes[0].fixedParams.org",
    ),
    (
        "workspaceRef: {name: a}\n  scopes: [{resource: p}]\n  lifetime: 10m\n  renewBefore: 15m\n  secret: {}",
        "spec.renewBefore",
    ),
    ("workspaceRef: {name: a}\n  scopes: [{resource: p}]\n  lifetime: 30s\n  secret: {}", "spec.lifetime"),
    (
        "workspaceRef: {name: a}\n  scopes: [{resource: p}]\n  lifetime: one hour\n  secret: {}",
        "spec.lifetime",
    ),
    (
        "workspaceRef: {name: a}\n  tokenName: 'a b'\n  scopes: [{resource: p}]\n  secret: {}",
        "spec.tokenName",
    ),
    (
        "workspaceRef: {name: a}\n  scopes: [{resource: p, filter: \"org = 'a'\"}]\n  secret: {}",
        "spec.scopes[0].filter",
    ),
    ("workspaceRef: {name: a}\n  scopes: [{resource: p}]\n  secret: {name: Not_Valid}", "spec.secret.name"),
    ("workspaceRef: {name: a}\n  scopes: [{resource: p}]", "spec: no output"),
    (
        "workspaceRef: {name: a}\n  scopes: [{resource: p}]\n  limits: {rps: -1}\n  secret: {}",
        "spec.limits.rps",
    ),
    (
        "workspaceRef: {name: a}\n  scopes: [{type: 'DATASOURCES:READ', resource: e, fixedParams: {org: a}}]\n  secret: {}",
        "spec.scopes[0].fixedParams",
    ),
    (
        "workspaceRef: {kind: Issuer, name: a}\n  scopes: [{resource: p}]\n  secret: {}",
        "spec.workspaceRef.kind",
    ),
    (
        "workspaceRef: {name: a}\n  scopes: [{resource: p}]\n  clerkTemplate: {lifetime: 5s}",
        "spec.clerkTemplate.lifetime",
    ),
    (
        "workspaceRef: {name: a}\n  scopes: [{resource: p}]\n  secret: {rolloutRestartTargets: [{kind: CronJob, name: x}]}",
        "spec.secret.rolloutRestartTargets[0].kind",
    ),
    (
        "workspaceRef: {name: a}\n  scopes: [{resource: p}]\n  secret: {}\n  healthCheck: {interval: 1m, timeout: 2m}",
        "spec.healthCheck.timeout",
    ),
    ("workspaceRef: {name: a}\n  scopes: not-a-list\n  secret: {}", "spec.scopes: invalid type"),
    (
        "workspaceRef: {name: a}\n  scopes: [{resource: p, fixedParams: {'bad-name': x}}]\n  secret: {}",
        "spec.scopes[0].fixedParams.bad-name",
    ),
    ("scopes: [{resource: p}]\n  secret: {}", "spec.workspaceRef"),
];

#[test]
fn every_malformed_input_gives_one_line_naming_the_field() {
    let (_, key_file) = example_admin_token();
    assert!(MALFORMED.len() >= 15);
    for (spec, field) in MALFORMED {
        let manifest = format!("{BASE}  {spec}\n");
        let out =
            tenant_access(&["render", "-f", "-", "--admin-token-file", key_file.path()], Some(&manifest));
        assert_eq!(out.code, 1, "should refuse:\n{manifest}\nstdout: {}", out.stdout);
        assert!(out.stdout.is_empty(), "nothing is issued for:\n{manifest}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line for:\n{manifest}\ngot: {}", out.stderr);
        assert!(lines[0].starts_with("error: "), "{}", lines[0]);
        assert!(lines[0].contains(field), "error for:\n{manifest}\nshould name {field}, got: {}", lines[0]);
    }
}

#[test]
fn refuses_a_workspace_of_another_namespace_and_a_garbage_admin_token() {
    let (_, key_file) = example_admin_token();
    let workspace = "apiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {name: a, namespace: globex}\nspec: {adminTokenSecretRef: {name: s}}\n---\n";
    let manifest = format!(
        "{workspace}{BASE}  workspaceRef: {{name: a}}\n  scopes: [{{resource: p}}]\n  secret: {{}}\n"
    );
    let out = tenant_access(&["render", "-f", "-", "--admin-token-file", key_file.path()], Some(&manifest));
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("own namespace"), "{}", out.stderr);

    let garbage = tempfile_path::TempFile::with_content("eyJhbGciOiJIUzI1NiJ9.e30.c2ln");
    let manifest =
        format!("{BASE}  workspaceRef: {{name: a}}\n  scopes: [{{resource: p}}]\n  secret: {{}}\n");
    let out = tenant_access(&["render", "-f", "-", "--admin-token-file", garbage.path()], Some(&manifest));
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("not of the form p.<payload>.<signature>"), "{}", out.stderr);
    assert!(!out.stderr.contains("eyJhbGciOiJIUzI1NiJ9"), "the token is not echoed: {}", out.stderr);

    let out =
        tenant_access(&["render", "-f", "-", "--admin-token-file", "/nonexistent/admin"], Some(&manifest));
    assert_eq!(out.code, 1);
    assert!(out.stderr.starts_with("error: reading /nonexistent/admin"), "{}", out.stderr);
}

#[test]
fn render_reads_manifests_as_strictly_as_the_api_server_and_accepts_kubectl_lists() {
    let (_, key_file) = example_admin_token();
    let render = |manifest: &str| {
        tenant_access(
            &["render", "-f", "-", "--admin-token-file", key_file.path(), "--now", NOW],
            Some(manifest),
        )
    };
    let spec = "  workspaceRef: {name: a}\n  lifetime: 1h\n  scopes: [{resource: p}]\n  secret: {name: s}\n";

    // A misspelt field, at the top of the spec or deep inside it, is named with the fix.
    for (right, wrong, path, hint) in [
        ("lifetime:", "lifetimee:", "spec.lifetimee", "lifetime"),
        ("{resource: p}", "{resourse: p}", "spec.scopes[0].resourse", "resource"),
        ("{name: s}", "{nme: s}", "spec.secret.nme", "name"),
    ] {
        let manifest = format!("{BASE}{}", spec.replacen(right, wrong, 1));
        let out = render(&manifest);
        assert_eq!(out.code, 1, "should refuse:\n{manifest}\nstdout: {}", out.stdout);
        let expected = format!("{path}: unknown field (did you mean \"{hint}\"?)");
        assert!(out.stderr.contains(&expected), "{manifest}\n{}", out.stderr);
    }

    // Another version of the API is named, not skipped.
    let other_version =
        format!("{BASE}{spec}").replace("tenantaccess.dev/v1alpha1", "tenantaccess.dev/v1beta1");
    let out = render(&other_version);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("apiVersion \"tenantaccess.dev/v1beta1\""), "{}", out.stderr);

    // What `kubectl get -o yaml` prints (a v1 List, with server fields) renders like the object.
    let object: serde_json::Value = serde_saphyr::from_str(&format!("{BASE}{spec}")).unwrap();
    let mut listed = object.clone();
    listed["metadata"]["uid"] = "0d6c6d4e-1111-4222-8333-444455556666".into();
    listed["metadata"]["resourceVersion"] = "42".into();
    listed["status"] = serde_json::json!({"conditions": []});
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [listed]});
    let from_list = render(&serde_json::to_string(&list).unwrap());
    assert_eq!(from_list.code, 0, "{}", from_list.stderr);
    let direct = render(&format!("{BASE}{spec}"));
    assert_eq!(direct.code, 0, "{}", direct.stderr);
    let token = |out: &Output| documents(&out.stdout)[0]["data"]["token"].clone();
    assert_eq!(token(&from_list), token(&direct));
}

#[test]
fn inspect_explains_an_admin_token_without_printing_it_and_help_lists_every_exit_code() {
    let (admin_token, _) = example_admin_token();
    let out = tenant_access(&["inspect", "-"], Some(&admin_token));
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("this is a Tinybird workspace admin token"), "{}", out.stderr);
    assert!(out.stderr.contains(EXAMPLE_WORKSPACE_ID), "{}", out.stderr);
    assert!(
        !out.stderr.contains(&admin_token) && !out.stdout.contains(&admin_token),
        "the admin token is echoed"
    );

    let help = tenant_access(&["--help"], None);
    assert_eq!(help.code, 0);
    for code in 0..=6 {
        assert!(
            help.stdout.contains(&format!("\n  {code}  ")),
            "exit code {code} is not listed:\n{}",
            help.stdout
        );
    }
}
