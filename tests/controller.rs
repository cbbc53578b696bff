//! The controller against a real API server and the Tinybird emulator: issuance, renewal,
//! rotation, drift repair, refusals, restarts, and no secret in logs, events or status.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, WatchEvent, WatchParams};
use support::{
    Env, TIMEOUT, assert_no_secrets, eventually, has_condition, is_ready, logs, revision_at_least, token_of,
};
use tenant_access::core::admin_token::AdminToken;
use tenant_access::core::jwt::ParsedToken;

const TENANT: &str = "  workspaceRef: {name: analytics}\n  scopes:\n    - resource: top_pages\n      fixedParams: {org: acme}\n  limits: {rps: 50}\n  secret: {name: acme-token}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_tenant_gets_a_verified_token_that_reads_only_its_rows() {
    let mut env = Env::new("issue").await;
    env.start_operator();
    // The shipped example, pointed at the emulator's workspace (already created by Env).
    env.cluster
        .apply_file(tenant_access_testkit::examples_dir().join("tenant-access.yaml"), Some(env.name()))
        .await
        .unwrap();
    let access = env.wait_access("acme", is_ready()).await;
    let status = access.status.unwrap();
    let token_status = status.token.unwrap();
    assert_eq!(token_status.revision, 1);
    assert_eq!(token_status.secret_name, "acme-tinybird-token");

    let secret = env.secrets().get("acme-tinybird-token").await.unwrap();
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "tenant-access-operator");
    assert_eq!(labels["team"], "acme");
    let owner = &secret.metadata.owner_references.clone().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("TenantAccess", Some(true)));
    let data = secret.data.clone().unwrap();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    assert_eq!(text("api-url"), env.tinybird.base_url().trim_end_matches('/'));
    assert_eq!(text("workspace-id"), env.tinybird.workspace_id());

    let jwt = token_of(&secret).unwrap();
    let key = AdminToken::new(&env.tinybird.admin_token());
    let claims = ParsedToken::parse(&jwt).unwrap().verify(&key, jiff::Timestamp::now()).unwrap();
    assert_eq!(claims.access.name, format!("{}_acme", env.name()));
    assert_eq!(claims.exp - claims.iat, 3600);
    assert_eq!(text("expires-at"), jiff::Timestamp::from_second(claims.exp).unwrap().to_string());

    // Another tenant's org in the query string loses against the fixed param.
    let (status, body) = env.query("top_pages", &jwt, "org=globex").await;
    assert_eq!(status, 200, "{body}");
    let rows = body["data"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|row| row["org"] == "acme"), "{body}");
    // A pipe outside the scopes is refused.
    let (status, _) = env.query("tenant_events_private", &jwt, "").await;
    assert_eq!(status, 403);

    let events = env.events_with(&["\"reason\":\"Issued\""]).await;
    assert_no_secrets("events", &events, &[env.tinybird.admin_token()]);
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renews_at_the_renewal_time_not_before_never_after_expiry_with_no_writes_between() {
    let mut env = Env::new("renew").await;
    env.start_operator();
    // Renewal 15 s after issuance. No health checks: the first probe's result is a status write
    // of its own (endpoints, EndpointsHealthy) at a random point of the interval, and it would
    // land between the two issuances in some runs.
    env.tenant_access(
        "short",
        &TENANT.replace("acme-token", "short-token").replace(
            "  limits",
            "  lifetime: 1m\n  renewBefore: 45s\n  healthCheck: {interval: '0'}\n  limits",
        ),
    )
    .await;
    let first = env.wait_access("short", revision_at_least(1)).await;
    let first_token = first.status.unwrap().token.unwrap();
    let first_jwt = env.token("short-token").await;
    let secret_rv = env.secrets().get("short-token").await.unwrap().metadata.resource_version.unwrap();
    let access_rv = first.metadata.resource_version.clone().unwrap();

    let renewed = env.wait_access("short", revision_at_least(2)).await;
    let seen_at = jiff::Timestamp::now();
    let renewed_token = renewed.status.unwrap().token.unwrap();

    assert!(renewed_token.issued_at.0 >= first_token.renewal_time.0, "renewed before the renewal time");
    assert!(seen_at < first_token.expires_at.0, "renewed only after expiry");
    let new_jwt = env.token("short-token").await;
    assert_ne!(new_jwt, first_jwt);
    let (status, _) = env.query("top_pages", &new_jwt, "").await;
    assert_eq!(status, 200);

    // Between the two issuances: exactly one Secret write (the renewal) and one status write.
    // Replayed from the versions seen after the first issuance up to the renewed objects.
    let renewed_secret_rv =
        env.secrets().get("short-token").await.unwrap().metadata.resource_version.unwrap();
    let secret_writes = writes_between(env.secrets(), "short-token", &secret_rv, &renewed_secret_rv).await;
    assert_eq!(secret_writes.len(), 1, "Secret writes between issuance and renewal: {secret_writes:#?}");
    let renewed_access_rv = renewed.metadata.resource_version.clone().unwrap();
    let status_writes = writes_between(env.tenant_accesses(), "short", &access_rv, &renewed_access_rv).await;
    let statuses: Vec<_> = status_writes.iter().map(|a| (&a.metadata.resource_version, &a.status)).collect();
    assert_eq!(status_writes.len(), 1, "status writes between issuance and renewal: {statuses:#?}");
    env.events_with(&["\"reason\":\"Renewed\""]).await;
    env.stop_operator().await;
}

/// Every version of the object `name` written after `from` up to and including `to` (a watch
/// replayed from `from`: only writes after it are seen, never the current state as a list).
async fn writes_between<K>(api: Api<K>, name: &str, from: &str, to: &str) -> Vec<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = WatchParams::default().fields(&format!("metadata.name={name}"));
    let mut stream = api.watch(&params, from).await.unwrap().boxed();
    let mut writes = Vec::new();
    let replay = async {
        while let Some(event) = stream.next().await {
            match event.unwrap() {
                WatchEvent::Added(object) | WatchEvent::Modified(object) | WatchEvent::Deleted(object) => {
                    let done = object.meta().resource_version.as_deref() == Some(to);
                    writes.push(object);
                    if done {
                        return;
                    }
                }
                WatchEvent::Bookmark(_) => {}
                WatchEvent::Error(error) => panic!("watching {name} from {from}: {error:?}"),
            }
        }
        panic!("the watch of {name} ended before version {to}");
    };
    tokio::time::timeout(TIMEOUT, replay).await.unwrap();
    writes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_admin_token_resigns_every_dependent_token() {
    let mut env = Env::new("rotate").await;
    env.start_operator();
    const N: usize = 50;
    let mut all = String::new();
    for i in 0..N {
        all.push_str(&format!(
            "---\napiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: t{i}}}\nspec:\n  workspaceRef: {{name: analytics}}\n  scopes: [{{resource: top_pages, fixedParams: {{org: acme}}}}]\n  secret: {{}}\n  healthCheck: {{interval: '0'}}\n"
        ));
    }
    env.apply_yaml(&all).await;
    let mut old_tokens = Vec::new();
    for i in 0..N {
        env.wait_access(&format!("t{i}"), is_ready()).await;
        old_tokens.push(env.token(&format!("t{i}")).await);
    }
    let old_admin = env.tinybird.admin_token();
    let new_admin = env.tinybird.refresh_admin_token();
    env.put_admin_token("tinybird-admin", &new_admin).await;

    for (i, old) in old_tokens.iter().enumerate() {
        let name = format!("t{i}");
        let access = env.wait_access(&name, revision_at_least(2)).await;
        assert_eq!(
            access.status.unwrap().token.unwrap().signing_key_fingerprint,
            AdminToken::new(&new_admin).fingerprint()
        );
        let new = env.token(&name).await;
        assert_eq!(env.query("top_pages", &new, "").await.0, 200, "{name}: new token refused");
        let (status, body) = env.query("top_pages", old, "").await;
        assert_eq!(status, 403, "{name}: old token still accepted");
        assert!(body["error"].as_str().unwrap().contains("Signature verification failed"), "{body}");
    }
    let events = env.events_with(&["\"reason\":\"Resigned\"", "\"reason\":\"KeyRotated\""]).await;
    let statuses =
        serde_json::to_string(&env.tenant_accesses().list(&Default::default()).await.unwrap().items).unwrap();
    for (what, text) in [("events", &events), ("status", &statuses), ("logs", &logs())] {
        assert_no_secrets(what, text, &[old_admin.clone(), new_admin.clone()]);
        for token in &old_tokens {
            assert!(!text.contains(token.as_str()), "{what} contains a tenant token");
        }
    }
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_repaired_and_a_label_edit_does_not_resign() {
    let mut env = Env::new("drift").await;
    env.start_operator();
    env.tenant_access("acme", TENANT).await;
    env.wait_access("acme", is_ready()).await;
    let secrets = env.secrets();

    // A user label added and a managed label removed: repaired, token kept.
    let original = env.token("acme-token").await;
    let patch =
        serde_json::json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null, "mine": "yes"}}});
    secrets.patch("acme-token", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let repaired = env
        .wait_secret("acme-token", |s: Option<&Secret>| {
            s.and_then(|s| s.metadata.labels.as_ref())
                .is_some_and(|l| l.contains_key("app.kubernetes.io/managed-by"))
        })
        .await;
    assert_eq!(repaired.metadata.labels.as_ref().unwrap()["mine"], "yes");
    assert_eq!(token_of(&repaired).unwrap(), original, "a metadata edit must not re-sign");
    assert_eq!(env.tenant_accesses().get("acme").await.unwrap().status.unwrap().token.unwrap().revision, 1);

    // The token edited: re-signed.
    let patch =
        serde_json::json!({"stringData": {"token": "eyJhbGciOiJIUzI1NiJ9.eyJmb3JnZWQiOnRydWV9.c2ln"}});
    secrets.patch("acme-token", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    env.wait_access("acme", revision_at_least(2)).await;
    // The token key deleted: re-signed.
    let patch = serde_json::json!({"data": {"token": null}});
    secrets.patch("acme-token", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    env.wait_access("acme", revision_at_least(3)).await;
    // The Secret deleted: re-created.
    secrets.delete("acme-token", &DeleteParams::default()).await.unwrap();
    env.wait_access("acme", revision_at_least(4)).await;
    let token = env.token("acme-token").await;
    assert_eq!(env.query("top_pages", &token, "").await.0, 200);
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_get_a_condition_an_event_and_no_secret() {
    let mut env = Env::new("refuse").await;
    env.start_operator();
    // A missing admin Secret and a malformed admin token.
    env.apply_yaml("apiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {name: nokey}\nspec: {adminTokenSecretRef: {name: absent}}\n").await;
    env.put_admin_token("garbage-admin", "not-a-tinybird-token").await;
    env.apply_yaml("apiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {name: garbage}\nspec: {adminTokenSecretRef: {name: garbage-admin}}\n").await;
    // A foreign Secret in the way.
    env.apply_yaml(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: taken}\nstringData: {token: someone-elses}\n",
    )
    .await;

    let cases: [(&str, String, &str, &str); 6] = [
        (
            "other-ns",
            TENANT.replace("name: analytics", "name: elsewhere").replace("acme-token", "a1"),
            "WorkspaceNotFound",
            "own namespace",
        ),
        (
            "cluster-ws",
            TENANT
                .replace("{name: analytics}", "{kind: ClusterTinybirdWorkspace, name: shared}")
                .replace("acme-token", "a2"),
            "WorkspaceNotFound",
            "one namespace",
        ),
        (
            "no-admin",
            TENANT.replace("name: analytics", "name: nokey").replace("acme-token", "a3"),
            "WorkspaceNotReady",
            "SecretNotFound",
        ),
        (
            "bad-admin",
            TENANT.replace("name: analytics", "name: garbage").replace("acme-token", "a4"),
            "WorkspaceNotReady",
            "MalformedToken",
        ),
        ("conflict", TENANT.replace("acme-token", "taken"), "SecretConflict", "left alone"),
        (
            // What the schema cannot say (an empty fixed param is refused at apply time).
            "invalid",
            format!("{}  lifetime: 1h\n  renewBefore: 2h\n", TENANT.replace("acme-token", "a6")),
            "InvalidSpec",
            "spec.renewBefore",
        ),
    ];
    for (name, spec, _, _) in &cases {
        env.tenant_access(name, spec).await;
    }
    for (name, _, reason, fragment) in &cases {
        let access = env.wait_access(name, has_condition("Ready", "False", reason)).await;
        let ready = access.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
        assert!(ready.message.contains(fragment), "{name}: {}", ready.message);
    }
    for secret in ["a1", "a2", "a3", "a4", "a6"] {
        assert!(env.secrets().get_opt(secret).await.unwrap().is_none(), "{secret} must not be issued");
    }
    assert_eq!(
        token_of(&env.secrets().get("taken").await.unwrap()).as_deref(),
        Some("someone-elses"),
        "the foreign Secret is untouched"
    );
    // Refused objects are not rewritten over and over (a status write triggers a reconcile).
    let from =
        env.tenant_accesses().list(&Default::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut stream = env
        .tenant_accesses()
        .watch(&kube::api::WatchParams::default().timeout(5), &from)
        .await
        .unwrap()
        .boxed();
    let mut rewrites = Vec::new();
    while let Some(Ok(event)) = stream.next().await {
        if let kube::api::WatchEvent::Modified(ta) = event {
            rewrites.push(ta.metadata.name.unwrap_or_default());
        }
    }
    assert!(rewrites.is_empty(), "refused TenantAccess rewritten: {rewrites:?}");
    env.events_with(&[
        "\"reason\":\"WorkspaceNotFound\"",
        "\"reason\":\"WorkspaceNotReady\"",
        "\"reason\":\"SecretConflict\"",
        "\"reason\":\"InvalidSpec\"",
    ])
    .await;
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_issues_nothing_new() {
    let mut env = Env::new("restart").await;
    env.start_operator();
    env.tenant_access("acme", TENANT).await;
    env.wait_access("acme", is_ready()).await;
    let before = env.secrets().get("acme-token").await.unwrap();
    env.stop_operator().await;

    env.start_operator();
    // Wait until the new operator has reconciled the TenantAccess (and so kept its token).
    let operator = env.operator.as_ref().unwrap();
    eventually("the restarted operator to reconcile the TenantAccess", || async {
        operator.reconciles("TenantAccess", "success") >= 1
    })
    .await;
    let after = env.secrets().get("acme-token").await.unwrap();
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version, "the Secret was rewritten");
    assert_eq!(env.tenant_accesses().get("acme").await.unwrap().status.unwrap().token.unwrap().revision, 1);
    let _ = BTreeMap::<String, String>::new();
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_renew_forces_a_resign_and_status_reports_it() {
    let mut env = Env::new("cli").await;
    env.start_operator();
    env.tenant_access("acme", TENANT).await;
    env.wait_access("acme", is_ready()).await;
    let kubeconfig = env.cluster.admin_kubeconfig().display().to_string();
    let bin = env!("CARGO_BIN_EXE_tenant-access");
    let renew = tokio::process::Command::new(bin)
        .args(["renew", "acme", "-n", env.name(), "--kubeconfig", &kubeconfig, "--wait", "60"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&renew.stdout);
    assert!(renew.status.success(), "{stdout}{}", String::from_utf8_lossy(&renew.stderr));
    assert!(stdout.contains("new token: revision 2"), "{stdout}");
    env.events_with(&["renewal was requested"]).await;

    let status = tokio::process::Command::new(bin)
        .args(["status", "acme", "-n", env.name(), "--kubeconfig", &kubeconfig])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{stdout}");
    assert!(
        stdout.contains("revision 2") && stdout.contains("Ready") && stdout.contains("renews"),
        "{stdout}"
    );
    assert_no_secrets("status output", &stdout, &[env.tinybird.admin_token()]);

    let missing = tokio::process::Command::new(bin)
        .args(["status", "nope", "-n", env.name(), "--kubeconfig", &kubeconfig])
        .output()
        .await
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_revisions_restart_listed_workloads_once() {
    use k8s_openapi::api::apps::v1::Deployment;
    let mut env = Env::new("rollout").await;
    env.start_operator();
    env.apply_yaml(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: dashboard, labels: {tenantaccess.dev/restart-on-token-change: 'true'}}\nspec:\n  selector: {matchLabels: {app: d}}\n  template:\n    metadata: {labels: {app: d}}\n    spec: {containers: [{name: c, image: busybox}]}\n",
    )
    .await;
    env.tenant_access(
        "acme",
        &TENANT.replace("secret: {name: acme-token}", "secret: {name: acme-token, rolloutRestartTargets: [{kind: Deployment, name: dashboard}, {kind: StatefulSet, name: missing}]}"),
    )
    .await;
    env.wait_access("acme", is_ready()).await;
    let deployments: kube::Api<Deployment> = kube::Api::namespaced(env.client.clone(), env.name());
    let revision_of = |d: Option<&Deployment>| {
        d.and_then(|d| {
            d.spec
                .as_ref()?
                .template
                .metadata
                .as_ref()?
                .annotations
                .as_ref()?
                .get("tenantaccess.dev/revision")
                .cloned()
        })
    };
    tenant_access_testkit::wait_for(
        deployments.clone(),
        "dashboard",
        move |d: Option<&Deployment>| revision_of(d).as_deref() == Some("1"),
        TIMEOUT,
    )
    .await
    .unwrap();
    let rv = deployments.get("dashboard").await.unwrap().metadata.resource_version;

    // A rotation makes revision 2 and restarts again; the missing workload only warns.
    env.put_admin_token("tinybird-admin", &env.tinybird.refresh_admin_token()).await;
    env.wait_access("acme", revision_at_least(2)).await;
    tenant_access_testkit::wait_for(
        deployments.clone(),
        "dashboard",
        move |d: Option<&Deployment>| revision_of(d).as_deref() == Some("2"),
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_ne!(deployments.get("dashboard").await.unwrap().metadata.resource_version, rv);
    // Written for people: the workload by its kind and name, no Rust error structure; reported
    // by a DNS-style controller name.
    let events = env
        .events_with(&[
            "RolloutRestartFailed",
            "restarting StatefulSet missing: StatefulSet missing not found",
        ])
        .await;
    assert!(!events.contains("ErrorResponse") && !events.contains("Status {"), "{events}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&events).unwrap();
    assert!(list.iter().all(|e| e["reportingController"] == "tenantaccess.dev/operator"), "{events}");
    env.stop_operator().await;
}

/// The pod-template annotation `key` of Deployment `name`.
async fn template_annotation(
    deployments: &Api<k8s_openapi::api::apps::v1::Deployment>,
    name: &str,
    key: &str,
) -> Option<String> {
    let deployment = deployments.get(name).await.unwrap();
    deployment.spec?.template.metadata?.annotations?.get(key).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_follow_restart_on_and_are_paced_by_the_minimum_interval() {
    use k8s_openapi::api::apps::v1::Deployment;
    let mut env = Env::new("restart-policy").await;
    env.start_operator();
    for name in ["file-reader", "env-reader"] {
        env.apply_yaml(&format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, labels: {{tenantaccess.dev/restart-on-token-change: 'true'}}}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: c, image: busybox}}]}}\n"
        ))
        .await;
    }
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), env.name());
    let revision = |name: &'static str| {
        let deployments = deployments.clone();
        async move { template_annotation(&deployments, name, "tenantaccess.dev/revision").await }
    };

    // An app that re-reads the mounted file: restarted once (to record what it runs with), then
    // only for a new key or new claims, never for a renewal.
    let file_reader = |org: &str| {
        TENANT.replace("org: acme", &format!("org: {org}")).replace(
            "secret: {name: acme-token}",
            "secret: {name: file-token, restartOn: KeyOrClaimsChange, rolloutRestartTargets: [{kind: Deployment, name: file-reader}]}",
        )
    };
    env.tenant_access("files", &file_reader("acme")).await;
    env.wait_access("files", is_ready()).await;
    eventually("file-reader restarted for revision 1", || async {
        revision("file-reader").await.as_deref() == Some("1")
    })
    .await;
    let patch = serde_json::json!({"metadata": {"annotations": {"tenantaccess.dev/renew": "r1"}}});
    env.tenant_accesses().patch("files", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    env.wait_access("files", revision_at_least(2)).await;
    env.tenant_access("files", &file_reader("acme-renamed")).await;
    env.wait_access("files", revision_at_least(3)).await;
    eventually("file-reader restarted for the new claims", || async {
        revision("file-reader").await.as_deref() == Some("3")
    })
    .await;
    let events = env.events_text().await;
    assert!(
        !events.contains("file-reader restarted for token revision 2"),
        "a renewal restarted it: {events}"
    );

    // An app that reads the token at start, paced to one restart per 20 s: a second token
    // within the interval restarts it once the interval has passed.
    env.tenant_access(
        "env",
        &TENANT.replace(
            "secret: {name: acme-token}",
            "secret: {name: env-token, restartMinInterval: 20s, rolloutRestartTargets: [{kind: Deployment, name: env-reader}]}",
        ),
    )
    .await;
    env.wait_access("env", is_ready()).await;
    eventually("env-reader restarted for revision 1", || async {
        revision("env-reader").await.as_deref() == Some("1")
    })
    .await;
    let restarted_at = || async {
        let at = template_annotation(&deployments, "env-reader", "tenantaccess.dev/restarted-at").await;
        let at = at.expect("a restart records when it happened");
        at.parse::<jiff::Timestamp>().unwrap_or_else(|e| panic!("restarted-at {at:?}: {e}"))
    };
    let first = restarted_at().await;
    let patch = serde_json::json!({"metadata": {"annotations": {"tenantaccess.dev/renew": "r1"}}});
    env.tenant_accesses().patch("env", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    env.wait_access("env", revision_at_least(2)).await;
    env.events_with(&["RolloutRestartDeferred", "Deployment env-reader restarts for token revision 2 in"])
        .await;
    eventually("env-reader restarted for revision 2 once the interval passed", || async {
        revision("env-reader").await.as_deref() == Some("2")
    })
    .await;
    // The pacing is read from the operator's own record of both restarts, not from how fast this
    // test looked: the second came no sooner than the minimum interval after the first.
    let second = restarted_at().await;
    let apart = second.duration_since(first);
    assert!(apart >= jiff::SignedDuration::from_secs(20), "restarted {apart:?} after the previous restart");
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routine_rotation_raises_no_alarm_while_the_refreshed_key_reaches_the_secret() {
    use tenant_access::api::TinybirdWorkspace;
    let mut env = Env::new("routine").await;
    env.start_operator();
    env.tenant_access("acme", &TENANT.replace("  limits", "  healthCheck: {interval: 5s}\n  limits")).await;
    let before = env.wait_access("acme", has_condition("EndpointsHealthy", "True", "Healthy")).await;
    let workspaces: Api<TinybirdWorkspace> = Api::namespaced(env.client.clone(), env.name());
    let workspace_rv = workspaces.get("analytics").await.unwrap().metadata.resource_version.unwrap();
    let access_rv = before.metadata.resource_version.unwrap();
    env.tinybird.request_log().clear();

    // The key is refreshed at Tinybird; the Secret still holds the old one. A probe is rejected,
    // and the operator checks the key it has with Tinybird, which refuses it.
    let current = env.tinybird.refresh_admin_token();
    eventually("Tinybird refused the key the Secret still holds", || async {
        env.tinybird.request_log().records().iter().any(|r| r.path == "/v1/workspace" && r.status >= 400)
    })
    .await;
    // A moment later the rotation writes the new key to the Secret.
    env.put_admin_token("tinybird-admin", &current).await;
    let after = env.wait_access("acme", revision_at_least(2)).await;
    let rotated = tenant_access_testkit::wait_for(
        workspaces.clone(),
        "analytics",
        |w: Option<&TinybirdWorkspace>| {
            w.and_then(|w| w.status.as_ref()?.signing_key_fingerprint.clone())
                .is_some_and(|fingerprint| fingerprint == AdminToken::new(&current).fingerprint())
        },
        TIMEOUT,
    )
    .await
    .unwrap()
    .unwrap();

    // The workspace never reported the refusal, so no TenantAccess was refused either.
    let not_ready = |conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]| {
        conditions.iter().find(|c| c.type_ == "Ready" && c.status == "False").map(|c| c.reason.clone())
    };
    let workspace_writes =
        writes_between(workspaces, "analytics", &workspace_rv, &rotated.metadata.resource_version.unwrap())
            .await;
    for write in &workspace_writes {
        let reason = not_ready(&write.status.as_ref().unwrap().conditions);
        assert_eq!(reason, None, "the workspace reported {reason:?} during a routine rotation");
    }
    let access_writes =
        writes_between(env.tenant_accesses(), "acme", &access_rv, &after.metadata.resource_version.unwrap())
            .await;
    for write in &access_writes {
        let reason = not_ready(&write.status.as_ref().unwrap().conditions);
        assert_eq!(reason, None, "the TenantAccess reported {reason:?} during a routine rotation");
    }
    let events = env.events_with(&["KeyRotated"]).await;
    for reason in ["Unauthorized", "WorkspaceNotReady", "SignatureRejected"] {
        let alarm = format!("\"reason\":\"{reason}\"");
        assert!(!events.contains(&alarm), "no {reason} event for a routine rotation: {events}");
    }
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_whose_admin_token_tinybird_refuses_is_unauthorized_and_signs_nothing() {
    use tenant_access::api::TinybirdWorkspace;
    let mut env = Env::new("verify").await;
    env.start_operator();
    let stale = env.tinybird.admin_token();
    let current = env.tinybird.refresh_admin_token();
    env.put_admin_token("stale-admin", &stale).await;
    env.apply_yaml(&format!(
        "apiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {{name: verified}}\nspec:\n  adminTokenSecretRef: {{name: stale-admin}}\n  apiUrl: {}\n  verifyInterval: 10m\n",
        env.tinybird.base_url()
    ))
    .await;
    let workspaces: kube::Api<TinybirdWorkspace> = kube::Api::namespaced(env.client.clone(), env.name());
    tenant_access_testkit::wait_for(workspaces.clone(), "verified", ready_reason("Unauthorized"), TIMEOUT)
        .await
        .unwrap();
    env.tenant_access("acme", &TENANT.replace("name: analytics", "name: verified")).await;
    let access = env.wait_access("acme", has_condition("Ready", "False", "WorkspaceNotReady")).await;
    assert!(format!("{:?}", access.status).contains("Unauthorized"));
    assert!(env.secrets().get_opt("acme-token").await.unwrap().is_none());

    env.put_admin_token("stale-admin", &current).await;
    tenant_access_testkit::wait_for(workspaces, "verified", ready_reason("Ready"), TIMEOUT).await.unwrap();
    env.wait_access("acme", is_ready()).await;
    let token = env.token("acme-token").await;
    assert_eq!(env.query("top_pages", &token, "").await.0, 200);
    assert_no_secrets("logs", &logs(), &[stale, current]);
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_admin_token_is_checked_once_so_a_refused_key_never_reports_ready() {
    use futures::TryStreamExt as _;
    use kube::runtime::{WatchStreamExt as _, watcher};
    use tenant_access::api::TinybirdWorkspace;
    let mut env = Env::new("verify-once").await;
    env.start_operator();
    let stale = env.tinybird.admin_token();
    let current = env.tinybird.refresh_admin_token();
    env.put_admin_token("stale-admin", &stale).await;
    let workspaces: Api<TinybirdWorkspace> = Api::namespaced(env.client.clone(), env.name());
    // Every Ready status the workspace shows, from before it exists up to the first Ready=True.
    let recorder = tokio::spawn({
        let stream =
            watcher(workspaces.clone(), watcher::Config::default().fields("metadata.name=unverified"))
                .applied_objects();
        async move {
            let mut stream = std::pin::pin!(stream);
            let mut seen = Vec::<(String, String)>::new();
            while let Some(ws) = stream.try_next().await.expect("the workspace watch") {
                let ready: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> =
                    ws.status.iter().flat_map(|s| s.conditions.iter()).find(|c| c.type_ == "Ready");
                if let Some(c) = ready {
                    seen.push((c.status.clone(), c.reason.clone()));
                    if c.status == "True" {
                        break;
                    }
                }
            }
            seen
        }
    });
    // No verifyInterval: the key is still checked when it is loaded.
    env.apply_yaml(&format!(
        "apiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {{name: unverified}}\nspec:\n  adminTokenSecretRef: {{name: stale-admin}}\n  apiUrl: {}\n",
        env.tinybird.base_url()
    ))
    .await;
    tenant_access_testkit::wait_for(workspaces.clone(), "unverified", ready_reason("Unauthorized"), TIMEOUT)
        .await
        .unwrap();
    // The key Tinybird accepts: Ready, after one more check.
    env.put_admin_token("stale-admin", &current).await;
    tenant_access_testkit::wait_for(workspaces, "unverified", ready_reason("Ready"), TIMEOUT).await.unwrap();
    // The recorder's own watch may see Ready a moment after `wait_for` did: await its history.
    let seen = tokio::time::timeout(TIMEOUT, recorder).await.expect("the recorder saw Ready=True").unwrap();
    let first_ready = seen.iter().position(|(status, _)| status == "True").unwrap();
    assert!(
        seen[..first_ready].iter().any(|(_, reason)| reason == "Unauthorized"),
        "the refused key reported Ready before Unauthorized: {seen:?}"
    );
    assert_no_secrets("logs", &logs(), &[stale, current]);
    env.stop_operator().await;
}

/// Condition: a TinybirdWorkspace's Ready condition has this reason.
fn ready_reason(reason: &'static str) -> impl Fn(Option<&tenant_access::api::TinybirdWorkspace>) -> bool {
    move |ws| {
        ws.and_then(|w| w.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == reason))
    }
}
