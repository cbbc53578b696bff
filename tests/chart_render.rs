//! The Helm chart with real tools and no API server: `helm lint` and `helm template` (defaults
//! and every option, with Helm 4 and Helm 3), the values' documentation and schema, the chart's
//! copy of the CRDs, the alerting rules (`promtool test rules`), the Argo CD health check (Lua)
//! and the Deployment's flags against the binary. Runs under `make unit-test`; what needs a
//! cluster is in `tests/chart.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helm;

use std::path::{Path, PathBuf};

use helm::{
    EVERY_OPTION, FULLNAME, Helm, RELEASE, chart, chart_dir, container, container_args, documents, helm,
    helm_with, kinds, raw_documents, render, render_with, rules, the, with_values,
};
use serde_json::{Value, json};
use tenant_access_testkit::repo_root;

// ---------------------------------------------------------------------------------------------
// 1. lint and render, no cluster

#[tokio::test]
async fn chart_lints_and_renders_with_defaults_and_with_every_option() {
    let chart = chart();
    for version in Helm::BOTH {
        for set in OPTION_SETS {
            let out = helm_with(version, &with_values(vec!["lint", "--strict", &chart], set), None).await;
            assert!(out.success, "helm {version:?} lint --strict {set:?}:\n{}{}", out.stdout, out.stderr);
        }
    }

    // Defaults: a cluster-wide install, one replica, no leader election, no extras.
    let docs = documents(&render("tenant-access-system", &[], &[]).await);
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "Service",
            "ServiceAccount",
            "ValidatingWebhookConfiguration"
        ]
    );
    let args = container_args(&docs);
    assert_eq!(args[0], "run");
    for expected in [
        "--cluster-resource-namespace=tenant-access-system",
        "--admin-address=0.0.0.0:8080",
        "--log-format=json",
        "--concurrency=16",
        "--kube-qps=200",
        "--kube-burst=400",
        "--resync-seconds=600",
        "--clerk-request-budget=90",
        "--clerk-budget-window-seconds=10",
        "--event-qps=50",
        "--event-burst=100",
    ] {
        assert!(args.iter().any(|a| a == expected), "{expected} not in {args:?}");
    }
    assert!(!args.iter().any(|a| a.starts_with("--namespaces") || a.starts_with("--leader-election")));
    assert_eq!(the(&docs, "Deployment")["spec"]["revisionHistoryLimit"], 10);
    assert_restricted_pod(&docs);
    let deployment = the(&docs, "Deployment");
    assert_eq!(deployment["spec"]["template"]["spec"]["serviceAccountName"], FULLNAME);
    assert_eq!(the(&docs, "ServiceAccount")["metadata"]["name"], FULLNAME);
    let binding = named(&docs, "ClusterRoleBinding", FULLNAME);
    assert_eq!(
        binding["subjects"][0],
        json!({"kind": "ServiceAccount", "name": FULLNAME, "namespace": "tenant-access-system"})
    );
    let service = named(&docs, "Service", FULLNAME);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "admin");
    assert_eq!(service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"]);
    // Server-side apply creates token Secrets: a PATCH that needs "create" as well.
    let cluster_rules = rules(&docs, "ClusterRole", FULLNAME);
    let secrets = cluster_rules.iter().find(|(g, r, _)| g.is_empty() && r == "secrets").unwrap();
    assert_eq!(secrets.2, ["get", "list", "watch", "create", "patch"]);
    for (group, resource, _) in &cluster_rules {
        assert!(!group.is_empty() || ["secrets", "configmaps", "namespaces"].contains(&resource.as_str()));
    }

    // Every option on.
    let rendered = render("tenant-access-system", EVERY_OPTION, &[]).await;
    let docs = documents(&rendered);
    for kind in
        ["ServiceMonitor", "PrometheusRule", "PodDisruptionBudget", "NetworkPolicy", "Role", "RoleBinding"]
    {
        assert!(kinds(&docs).iter().any(|k| k == kind), "{kind} missing");
    }
    let deployment = the(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["revisionHistoryLimit"], 3);
    assert_eq!(deployment["metadata"]["annotations"]["owner"], "platform-team");
    for document in &docs {
        assert_eq!(
            document["metadata"]["labels"]["team"], "platform",
            "commonLabels on {}",
            document["kind"]
        );
    }
    assert_eq!(deployment["spec"]["template"]["metadata"]["labels"]["team"], "platform");
    assert!(
        deployment["spec"]["selector"]["matchLabels"].get("team").is_none(),
        "the selector never changes"
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["volumes"],
        json!([{"name": "private-ca", "configMap": {"name": "private-ca-bundle"}}])
    );
    assert_eq!(
        container(&docs)["volumeMounts"],
        json!([{"name": "private-ca", "mountPath": "/etc/ssl/certs/private-ca", "readOnly": true}])
    );
    let args = container_args(&docs);
    for expected in [
        "--event-qps=5",
        "--event-burst=10",
        "--leader-election",
        "--leader-election-namespace=tenant-access-system",
        "--leader-election-lease-name=tao-tenant-access-operator",
        "--leader-election-lease-duration-seconds=15",
    ] {
        assert!(args.iter().any(|a| a == expected), "{expected} not in {args:?}");
    }
    let lease_rules = rules(&docs, "Role", "tao-tenant-access-operator-leader-election");
    assert_eq!(
        lease_rules,
        [
            ("coordination.k8s.io".to_owned(), "leases".to_owned(), vec!["create".to_owned()]),
            (
                "coordination.k8s.io".to_owned(),
                "leases".to_owned(),
                vec!["get".to_owned(), "update".to_owned()]
            ),
        ]
    );
    let monitor = the(&docs, "ServiceMonitor");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        named(&docs, "Service", FULLNAME)["spec"]["ports"][0]["name"]
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        the(&docs, "Deployment")["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["metadata"]["namespace"], "tenant-access-system");
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true, "series keep their object's namespace");
    let rule = the(&docs, "PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(rule["metadata"]["namespace"], "tenant-access-system");
    let alerts = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    assert!(alerts.iter().all(|a| a["labels"]["team"] == "platform"), "{alerts:?}");

    // The ServiceMonitor and the rules where Prometheus looks for them; the scrape stays on
    // the release namespace.
    let placed = documents(
        &render(
            "tenant-access-system",
            &[
                "serviceMonitor.enabled=true",
                "serviceMonitor.namespace=monitoring",
                "prometheusRule.enabled=true",
                "prometheusRule.namespace=monitoring",
            ],
            &[],
        )
        .await,
    );
    let monitor = the(&placed, "ServiceMonitor");
    assert_eq!(monitor["metadata"]["namespace"], "monitoring");
    assert_eq!(monitor["spec"]["namespaceSelector"]["matchNames"], json!(["tenant-access-system"]));
    assert_eq!(the(&placed, "PrometheusRule")["metadata"]["namespace"], "monitoring");
    let policy = the(&docs, "NetworkPolicy");
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], "admin");
    assert!(the(&docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1);
    assert_every_rule_is_explained(&rendered);

    // Leader election on request with one replica.
    let docs = documents(
        &render("ops", &["leaderElection.enabled=true", "leaderElection.leaseName=ta-lease"], &[]).await,
    );
    assert!(container_args(&docs).iter().any(|a| a == "--leader-election-lease-name=ta-lease"));
    assert!(
        rules(&docs, "Role", "tao-tenant-access-operator-leader-election")[1].2.contains(&"get".to_owned())
    );

    // Single namespace: a Role in that namespace and no cluster-scoped permission at all.
    let rendered = render("ops", &["watchNamespace=acme"], &[]).await;
    let docs = documents(&rendered);
    assert!(!kinds(&docs).iter().any(|k| k == "ClusterRole" || k == "ClusterRoleBinding"));
    let role = docs.iter().find(|d| d["kind"] == "Role").unwrap();
    assert_eq!(role["metadata"]["namespace"], "acme");
    let namespaced_rules = rules(&docs, "Role", FULLNAME);
    assert!(
        namespaced_rules
            .iter()
            .all(|(_, r, _)| r != "namespaces" && !r.starts_with("clustertinybirdworkspaces")),
        "{namespaced_rules:?}"
    );
    let binding = docs.iter().find(|d| d["kind"] == "RoleBinding").unwrap();
    assert_eq!(binding["metadata"]["namespace"], "acme");
    assert_eq!(binding["subjects"][0]["namespace"], "ops");
    assert!(container_args(&docs).iter().any(|a| a == "--namespaces=acme"));
    assert_every_rule_is_explained(&rendered);

    // Several served namespaces: cluster-wide rules, the operator filters.
    let docs = documents(&render("ops", &["servedNamespaces={acme,globex}"], &[]).await);
    assert!(container_args(&docs).iter().any(|a| a == "--namespaces=acme,globex"));
    assert!(kinds(&docs).iter().any(|k| k == "ClusterRole"));

    // Optional parts off.
    let docs = documents(
        &render(
            "ops",
            &[
                "crds.install=false",
                "service.enabled=false",
                "rbac.rolloutRestarts=false",
                "webhook.enabled=false",
            ],
            &[],
        )
        .await,
    );
    assert!(!kinds(&docs).iter().any(|k| k == "CustomResourceDefinition" || k == "Service"));
    assert!(rules(&docs, "ClusterRole", FULLNAME).iter().all(|(g, _, _)| g != "apps"));
    let docs = documents(&render("ops", &["crds.keep=false"], &[]).await);
    let crd = docs.iter().find(|d| d["kind"] == "CustomResourceDefinition").unwrap();
    assert!(crd["metadata"]["annotations"].get("helm.sh/resource-policy").is_none());

    // Mistakes are refused by the schema or the templates, not silently ignored.
    for (set, expected) in [
        ("operator.logFormat=xml", "logFormat"),
        ("servedNamespaces={acme}", "servedNamespaces"),
        ("watchNamespace=Not_A_Namespace", "watchNamespace"),
        ("replicas=2", "replicas"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("prometheusRule.enable=true", "enable"),
        ("revisionHistoryLimit=-1", "revisionHistoryLimit"),
        ("extraVolumeMounts[0].name=ca", "mountPath"),
    ] {
        let out = helm(&["template", RELEASE, &chart, "--set", set], None).await;
        assert!(!out.success && out.stderr.contains(expected), "--set {set}: {}", out.stderr);
    }
    let out = helm(
        &["template", RELEASE, &chart, "--set", "watchNamespace=a", "--set", "servedNamespaces={b,c}"],
        None,
    )
    .await;
    assert!(!out.success && out.stderr.contains("not both"), "{}", out.stderr);
}

/// The value sets lint, render and compare tests go through.
const OPTION_SETS: [&[&str]; 6] = [
    &[],
    EVERY_OPTION,
    &["watchNamespace=acme"],
    &["servedNamespaces={acme,globex}"],
    &["webhook.certManager.enabled=true", "webhook.failurePolicy=Fail"],
    &["watchNamespace=acme", "webhook.certManager.enabled=true"],
];

/// The one object of `kind` named `name`.
fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

// ---------------------------------------------------------------------------------------------
// 2b. the admission webhook

const WEBHOOK: &str = "tao-tenant-access-operator-webhook";

#[tokio::test]
async fn the_webhook_is_installed_with_its_own_certificate_by_default() {
    let rendered = render("ops", &[], &[]).await;
    let docs = documents(&rendered);
    let configuration = the(&docs, "ValidatingWebhookConfiguration");
    assert_eq!(configuration["metadata"]["name"], format!("{FULLNAME}-ops"));
    let webhook = &configuration["webhooks"][0];
    assert_eq!(webhook["failurePolicy"], "Ignore");
    assert_eq!(webhook["sideEffects"], "None");
    assert_eq!(webhook["timeoutSeconds"], 5);
    assert_eq!(webhook["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(
        webhook["clientConfig"]["service"],
        json!({"name": WEBHOOK, "namespace": "ops", "path": "/validate", "port": 443})
    );
    assert_eq!(
        webhook["rules"][0]["resources"],
        json!(["tenantaccesses", "tinybirdworkspaces", "clustertinybirdworkspaces"])
    );
    assert_eq!(webhook["rules"][0]["operations"], json!(["CREATE", "UPDATE"]));
    // The operator's own namespace is never judged.
    assert_eq!(
        webhook["namespaceSelector"]["matchExpressions"],
        json!([{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["ops"]}])
    );
    let service = named(&docs, "Service", WEBHOOK);
    assert_eq!(
        service["spec"]["ports"][0],
        json!({"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"})
    );
    let ports = container(&docs)["ports"].as_array().unwrap();
    assert!(ports.iter().any(|p| p["name"] == "webhook" && p["containerPort"] == 9443));
    let args = container_args(&docs);
    for expected in [
        "--webhook-address=0.0.0.0:9443".to_owned(),
        // Its reads on a budget of its own, never the controllers'.
        "--webhook-kube-qps=20".to_owned(),
        "--webhook-kube-burst=40".to_owned(),
        "--webhook-namespace=ops".to_owned(),
        format!("--webhook-secret-name={WEBHOOK}-tls"),
        format!("--webhook-configuration-name={FULLNAME}-ops"),
        format!("--webhook-hosts={WEBHOOK}.ops.svc,{WEBHOOK}.ops.svc.cluster.local"),
    ] {
        assert!(args.contains(&expected), "{expected} not in {args:?}");
    }
    // Its certificate Secret in the release namespace, its configuration's caBundle, and what
    // admission reads.
    let secret_rules = rules(&docs, "Role", WEBHOOK);
    assert_eq!(named(&docs, "Role", WEBHOOK)["metadata"]["namespace"], "ops");
    assert_eq!(
        secret_rules,
        [(
            String::new(),
            "secrets".to_owned(),
            ["get", "list", "watch", "create", "update"].map(String::from).to_vec()
        )]
    );
    let read_rules = rules(&docs, "ClusterRole", WEBHOOK);
    for (group, resource) in [
        ("tenantaccess.dev", "tinybirdworkspaces"),
        ("tenantaccess.dev", "clustertinybirdworkspaces"),
        ("", "namespaces"),
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
    ] {
        assert!(
            read_rules.iter().any(|(g, r, _)| g == group && r == resource),
            "{resource} missing: {read_rules:?}"
        );
    }
    let update = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == WEBHOOK)
        .unwrap()["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["verbs"].as_array().unwrap().iter().any(|v| v == "update"))
        .unwrap()
        .clone();
    assert_eq!(
        update["resourceNames"],
        json!([format!("{FULLNAME}-ops")]),
        "update only its own configuration"
    );
    assert_every_rule_is_explained(&rendered);

    // The network policy lets the API server in.
    let docs = documents(&render("ops", &["networkPolicy.enabled=true"], &[]).await);
    let ingress = &the(&docs, "NetworkPolicy")["spec"]["ingress"];
    assert_eq!(ingress[1]["ports"][0]["port"], "webhook");
}

#[tokio::test]
async fn webhook_enabled_false_turns_it_off() {
    let docs = documents(&render("ops", &["webhook.enabled=false"], &[]).await);
    assert!(!kinds(&docs).iter().any(|k| k == "ValidatingWebhookConfiguration"));
    assert!(!docs.iter().any(|d| d["metadata"]["name"] == WEBHOOK));
    assert!(!container_args(&docs).iter().any(|a| a.starts_with("--webhook")));
    assert!(!container(&docs)["ports"].as_array().unwrap().iter().any(|p| p["name"] == "webhook"));
    let docs = documents(&render("ops", &["webhook.enabled=false", "networkPolicy.enabled=true"], &[]).await);
    assert_eq!(the(&docs, "NetworkPolicy")["spec"]["ingress"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn with_cert_manager_the_operator_serves_the_mounted_certificate() {
    let docs = documents(
        &render("ops", &["webhook.certManager.enabled=true", "webhook.failurePolicy=Fail"], &[]).await,
    );
    let configuration = the(&docs, "ValidatingWebhookConfiguration");
    assert_eq!(
        configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("ops/{WEBHOOK}")
    );
    assert_eq!(configuration["webhooks"][0]["failurePolicy"], "Fail");
    let certificate = the(&docs, "Certificate");
    assert_eq!(certificate["spec"]["secretName"], format!("{WEBHOOK}-tls"));
    assert_eq!(certificate["spec"]["dnsNames"][0], format!("{WEBHOOK}.ops.svc"));
    assert_eq!(the(&docs, "Issuer")["spec"], json!({"selfSigned": {}}));
    let args = container_args(&docs);
    assert!(args.iter().any(|a| a == "--webhook-cert-dir=/etc/tenant-access/webhook-tls"));
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--webhook-configuration-name") || a.starts_with("--webhook-secret-name"))
    );
    let pod = &the(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], format!("{WEBHOOK}-tls"));
    assert_eq!(container(&docs)["volumeMounts"][0]["mountPath"], "/etc/tenant-access/webhook-tls");
    // No Secret or configuration rights: cert-manager writes both.
    assert!(!docs.iter().any(|d| d["kind"] == "Role" && d["metadata"]["name"] == WEBHOOK));
    assert!(rules(&docs, "ClusterRole", WEBHOOK).iter().all(|(g, _, _)| g != "admissionregistration.k8s.io"));

    // A namespace-scoped install gets the webhook only with cert-manager, and then still no
    // cluster-scoped permission; it judges its namespace only.
    let docs = documents(&render("ops", &["watchNamespace=acme"], &[]).await);
    assert!(!kinds(&docs).iter().any(|k| k == "ValidatingWebhookConfiguration"));
    let docs =
        documents(&render("ops", &["watchNamespace=acme", "webhook.certManager.enabled=true"], &[]).await);
    assert!(!kinds(&docs).iter().any(|k| k == "ClusterRole" || k == "ClusterRoleBinding"));
    assert_eq!(named(&docs, "Role", WEBHOOK)["metadata"]["namespace"], "acme");
    let selector = &the(&docs, "ValidatingWebhookConfiguration")["webhooks"][0]["namespaceSelector"];
    assert_eq!(
        selector["matchExpressions"][0],
        json!({"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["acme"]})
    );
}

#[tokio::test]
async fn helm3_renders_the_chart_exactly_as_helm4_does() {
    for version in Helm::BOTH {
        let out = helm_with(version, &["version", "--short"], None).await;
        assert!(
            out.success && out.stdout.starts_with(version.version_prefix()),
            "{version:?} is {}{}",
            out.stdout,
            out.stderr
        );
    }
    for set in OPTION_SETS {
        // The same objects; the order may differ (Helm 4 installs a ValidatingWebhookConfiguration
        // before the kinds it does not know, Helm 3 after them).
        let by_kind_and_name = |mut docs: Vec<Value>| {
            docs.sort_by_key(|d| (d["kind"].to_string(), d["metadata"]["name"].to_string()));
            docs
        };
        let helm4 =
            by_kind_and_name(documents(&render_with(Helm::V4, "tenant-access-system", set, &[]).await));
        let helm3 =
            by_kind_and_name(documents(&render_with(Helm::V3, "tenant-access-system", set, &[]).await));
        assert_eq!(kinds(&helm3), kinds(&helm4), "{set:?}");
        assert_eq!(helm3, helm4, "helm 3 and helm 4 render {set:?} differently");
    }
    // Helm 3 enforces the schema too.
    let chart = chart();
    let out =
        helm_with(Helm::V3, &["template", RELEASE, &chart, "--set", "prometheusRule.enable=true"], None)
            .await;
    assert!(!out.success && out.stderr.contains("enable"), "{}", out.stderr);
}

#[tokio::test]
async fn prometheus_rule_alerts_pass_promtool_unit_tests() {
    let promtool = tenant_access_testkit::promtool_binary()
        .expect("promtool not found: run hack/install-deps.sh (or set PROMTOOL)");
    let docs = documents(&render("tenant-access", &["prometheusRule.enabled=true"], &[]).await);
    let rule = the(&docs, "PrometheusRule");
    let dir = std::env::temp_dir().join(format!("chart-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A Prometheus rule file is the PrometheusRule's spec (JSON is YAML).
    std::fs::write(dir.join("rules.yaml"), serde_json::to_string_pretty(&rule["spec"]).unwrap()).unwrap();
    std::fs::copy(repo_root().join("tests/fixtures/prometheus-rules.test.yaml"), dir.join("test.yaml"))
        .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&promtool).args(args).current_dir(&dir).output().unwrap();
        let said =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), said)
    };
    let (checked, check_said) = run(&["check", "rules", "rules.yaml"]);
    let (tested, test_said) = run(&["test", "rules", "test.yaml"]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(checked, "promtool check rules:\n{check_said}");
    assert!(tested && test_said.contains("SUCCESS"), "promtool test rules:\n{test_said}");
    // Every alert of the chart is exercised by the unit tests.
    let fixture =
        std::fs::read_to_string(repo_root().join("tests/fixtures/prometheus-rules.test.yaml")).unwrap();
    for alert in rule["spec"]["groups"][0]["rules"].as_array().unwrap() {
        let name = alert["alert"].as_str().unwrap();
        assert!(fixture.contains(&format!("alertname: {name}")), "{name} has no promtool test");
    }
}

fn assert_restricted_pod(docs: &[Value]) {
    let pod = &the(docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let container = container(docs);
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert_eq!(container["livenessProbe"]["httpGet"], json!({"path": "/livez", "port": "admin"}));
    assert_eq!(container["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "admin"}));
    assert_eq!(container["ports"][0], json!({"name": "admin", "containerPort": 8080, "protocol": "TCP"}));
    let env = container["env"].as_array().unwrap();
    for (name, field) in [("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")] {
        let var = env.iter().find(|e| e["name"] == name).unwrap();
        assert_eq!(var["valueFrom"]["fieldRef"]["fieldPath"], field);
    }
}

/// Every RBAC rule in the rendered text has a comment right above it saying why.
fn assert_every_rule_is_explained(rendered: &str) {
    for document in raw_documents(rendered) {
        if !document.lines().any(|l| l == "kind: ClusterRole" || l == "kind: Role") {
            continue;
        }
        let lines: Vec<&str> = document.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("- apiGroups:") {
                assert!(
                    index > 0 && lines[index - 1].trim_start().starts_with('#'),
                    "RBAC rule without a comment saying why:\n{}",
                    lines[index.saturating_sub(2)..(index + 3).min(lines.len())].join("\n")
                );
            }
        }
    }
}

#[test]
fn every_value_is_commented_and_described_in_the_schema() {
    let text = std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap();
    let (undocumented, documented) = value_comments(&text);
    assert!(undocumented.is_empty(), "values.yaml keys without a comment: {undocumented:?}");
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    let unlisted: Vec<&String> =
        documented.iter().filter(|path| !readme.contains(&format!("| `{path}` |"))).collect();
    assert!(unlisted.is_empty(), "values missing from the chart README's table: {unlisted:?}");

    let values: Value = serde_saphyr::from_str(&text).unwrap();
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap())
            .unwrap();
    let mut missing = Vec::new();
    schema_descriptions(&values, &schema, "", &mut missing);
    assert!(missing.is_empty(), "values without a described schema entry: {missing:?}");
}

/// Keys of values.yaml without a comment right above them, unless they are maps whose keys all
/// have one (a commented key documents its whole value, e.g. `resources`); and the paths of the
/// commented keys.
fn value_comments(text: &str) -> (Vec<String>, Vec<String>) {
    struct Entry {
        indent: usize,
        key: Option<String>,
        commented: bool,
    }
    let mut entries = Vec::new();
    let mut previous_is_comment = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            previous_is_comment = false;
            continue;
        }
        if trimmed.starts_with('#') {
            previous_is_comment = true;
            continue;
        }
        let key = (!trimmed.starts_with('-')).then(|| trimmed.split(':').next().unwrap_or("").to_owned());
        entries.push(Entry { indent: line.len() - trimmed.len(), key, commented: previous_is_comment });
        previous_is_comment = false;
    }
    fn check(entries: &[Entry], path: &str, out: &mut Vec<String>, documented: &mut Vec<String>) {
        let mut index = 0;
        while index < entries.len() {
            let entry = &entries[index];
            let end = entries[index + 1..]
                .iter()
                .position(|e| e.indent <= entry.indent)
                .map_or(entries.len(), |p| index + 1 + p);
            let children = &entries[index + 1..end];
            let name = format!("{path}{}", entry.key.as_deref().unwrap_or("-"));
            if entry.commented {
                documented.push(name);
            } else if children.first().is_some_and(|first| {
                children.iter().filter(|c| c.indent == first.indent).all(|c| c.key.is_some())
            }) {
                check(children, &format!("{name}."), out, documented);
            } else {
                out.push(name);
            }
            index = end;
        }
    }
    let (mut out, mut documented) = (Vec::new(), Vec::new());
    check(&entries, "", &mut out, &mut documented);
    (out, documented)
}

fn schema_descriptions(values: &Value, schema: &Value, path: &str, missing: &mut Vec<String>) {
    let Some(map) = values.as_object() else { return };
    for (key, value) in map {
        let field = format!("{path}{key}");
        let node = &schema["properties"][key];
        if node["description"].as_str().is_none_or(str::is_empty) {
            missing.push(field.clone());
        }
        if node.get("properties").is_some() {
            schema_descriptions(value, node, &format!("{field}."), missing);
        }
    }
}

#[tokio::test]
async fn chart_crds_are_the_generated_crds() {
    let generated = repo_root().join("crds");
    let copy = chart_dir().join("files/crds");
    let names = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        names.sort();
        names
    };
    let fix = "cp crds/*.yaml charts/tenant-access-operator/files/crds/";
    assert_eq!(names(&generated), names(&copy), "the chart's CRD files differ from crds/: {fix}");
    for name in names(&generated) {
        let a = std::fs::read_to_string(generated.join(&name)).unwrap();
        let b = std::fs::read_to_string(copy.join(&name)).unwrap();
        assert!(a == b, "charts/tenant-access-operator/files/crds/{name} differs from crds/{name}: {fix}");
    }

    // What the chart installs is those CRDs, plus its labels and the keep annotation.
    let rendered = documents(&render("ops", &[], &[]).await);
    let mut crds: Vec<&Value> = rendered.iter().filter(|d| d["kind"] == "CustomResourceDefinition").collect();
    crds.sort_by_key(|d| d["metadata"]["name"].as_str().unwrap().to_owned());
    assert_eq!(crds.len(), names(&generated).len());
    for crd in crds {
        let name = crd["metadata"]["name"].as_str().unwrap();
        let file = std::fs::read_to_string(generated.join(format!("{name}.yaml"))).unwrap();
        let mut expected = documents(&file).remove(0);
        let mut actual = crd.clone();
        assert_eq!(actual["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
        assert_eq!(actual["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm");
        for object in [&mut expected, &mut actual] {
            let metadata = object["metadata"].as_object_mut().unwrap();
            metadata.remove("labels");
            metadata.remove("annotations");
            // Helm re-serializes `minimum: 1.0` as `1`: the same JSON number to the server.
            numbers_as_floats(object);
        }
        assert!(actual == expected, "the chart renders {name} differently from crds/");
    }
}

fn numbers_as_floats(value: &mut Value) {
    match value {
        Value::Number(number) => {
            if let Some(float) = number.as_f64().and_then(serde_json::Number::from_f64) {
                *number = float;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(numbers_as_floats),
        Value::Object(map) => map.values_mut().for_each(numbers_as_floats),
        _ => {}
    }
}

#[test]
fn argocd_health_check_passes_its_fixtures() {
    // Lua 5.1, the dialect of Argo CD's gopher-lua: `$LUA` (hack/with-cluster.sh exports the one
    // hack/install-deps.sh installs), else Debian's `lua5.1` on PATH.
    let lua =
        std::env::var_os("LUA").filter(|l| !l.is_empty()).map_or_else(|| "lua5.1".into(), PathBuf::from);
    let script = repo_root().join("contrib/argocd-health-test.lua");
    let out = std::process::Command::new(&lua).arg(&script).output().unwrap_or_else(|error| {
        panic!(
            "running {} {}: {error}; install Lua 5.1 with hack/install-deps.sh",
            lua.display(),
            script.display()
        )
    });
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn deployment_args_are_accepted_by_the_binary() {
    let single: &[&str] = &["watchNamespace=acme"];
    let cert_manager: &[&str] = &["webhook.certManager.enabled=true"];
    for set in [&[][..], EVERY_OPTION, single, cert_manager] {
        let args = container_args(&documents(&render("ops", set, &[]).await));
        // clap parses (and checks) every argument before it acts on the trailing --help.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenant-access"))
            .args(&args)
            .arg("--help")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(out.status.success(), "tenant-access {args:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    // And a wrong one would be caught.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenant-access"))
        .args(["run", "--no-such-flag", "--help"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

// ---------------------------------------------------------------------------------------------
// 4. what a user follows: NOTES and examples never replace a real admin token

/// NOTES as `helm install` prints them (rendered offline with `--dry-run=client`).
async fn notes(set: &[&str]) -> String {
    let chart = chart();
    let args = with_values(vec!["install", RELEASE, &chart, "--namespace", "ops", "--dry-run=client"], set);
    let out = helm(&args, Some(Path::new("/nonexistent/kubeconfig"))).await;
    assert!(out.success, "helm install --dry-run=client {set:?}:\n{}", out.stderr);
    let start = out.stdout.find("NOTES:").unwrap_or_else(|| panic!("no NOTES in:\n{}", out.stdout));
    out.stdout[start..].to_owned()
}

/// The manifests of every `kubectl apply -f - <<'EOF' ... EOF` in `text`, unindented.
fn heredoc_manifests(text: &str) -> Vec<String> {
    let mut manifests = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if !(line.contains("kubectl apply") && line.trim_end().ends_with("<<'EOF'")) {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| l.trim() != "EOF")
            .map(|l| l.get(indent..).unwrap_or_default())
            .collect();
        manifests.push(body.join("\n") + "\n");
    }
    manifests
}

#[tokio::test]
async fn notes_are_self_contained_and_nothing_a_user_applies_carries_an_admin_token() {
    for set in [&[][..], &["watchNamespace=acme"]] {
        let notes = notes(set).await;
        // The chart does not ship examples/: NOTES cannot send a user there.
        assert!(!notes.contains("examples/"), "NOTES refer to files the chart does not ship:\n{notes}");
        // Every manifest NOTES apply is complete and valid as the API server reads it; none is a
        // Secret (the admin token is created from the user's own value, never from a file).
        let manifests = heredoc_manifests(&notes);
        assert_eq!(manifests.len(), 2, "a workspace and a TenantAccess in:\n{notes}");
        let mut parsed = tenant_access::adapters::manifests::Manifests::default();
        for manifest in &manifests {
            parsed.parse("NOTES", manifest).unwrap_or_else(|e| panic!("{e}\n{manifest}"));
            assert!(!manifest.contains("kind: Secret"), "{manifest}");
        }
        assert_eq!((parsed.workspaces.len(), parsed.tenant_accesses.len()), (1, 1), "{notes}");
        assert!(notes.contains("--from-literal=token=\"$TB_ADMIN_TOKEN\""), "{notes}");
        assert!(notes.contains("Uninstalling"), "NOTES say where the uninstall order is:\n{notes}");
        assert!(notes.contains("tenantaccess.dev/rotate="), "NOTES say how to revoke:\n{notes}");
    }
    // No example manifest is a Secret: applying examples/ after creating the real admin-token
    // Secret cannot replace it.
    for entry in std::fs::read_dir(repo_root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
            assert!(docs.iter().all(|d| d["kind"] != "Secret"), "{} holds a Secret manifest", path.display());
        }
    }
}
