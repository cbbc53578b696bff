use super::*;

const VALID: &str = r"
workspaceRef: {name: analytics}
scopes:
  - resource: top_pages
    fixedParams: {org: acme}
limits: {rps: 10}
secret: {}
";

fn spec(yaml: &str) -> TenantAccessSpec {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("fixture does not parse: {e}"))
}

fn validate(yaml: &str) -> Result<ValidatedAccess, InvalidSpec> {
    validate_tenant_access("acme", "acme-reader", &spec(yaml))
}

/// The single problem a spec has: (field, problem).
fn only_problem(yaml: &str) -> (String, String) {
    match validate(yaml) {
        Ok(_) => panic!("expected a refusal for:\n{yaml}"),
        Err(InvalidSpec(errors)) => {
            assert_eq!(errors.len(), 1, "expected one problem, got {errors:?}");
            (errors[0].field.clone(), errors[0].problem.clone())
        }
    }
}

fn with(extra: &str) -> String {
    format!("{VALID}{extra}")
}

#[test]
fn applies_defaults_to_a_minimal_spec() {
    let access = validate(VALID).unwrap();
    assert_eq!(access.workspace_kind, WorkspaceKind::Namespaced);
    assert_eq!(access.token_name, "acme_acme-reader");
    assert_eq!(access.lifetime, SignedDuration::from_hours(1));
    assert_eq!(access.renew_before, SignedDuration::from_mins(20));
    assert_eq!(access.secret.as_ref().map(|s| s.name.as_str()), Some("acme-reader"));
    assert_eq!(access.health.interval, SignedDuration::from_mins(5));
    assert_eq!(access.health.timeout, SignedDuration::from_secs(5));
    assert_eq!(access.scopes[0].scope_type, "PIPES:READ");
    assert_eq!(access.rps, Some(10));
}

#[test]
fn default_token_names_never_collide_across_namespaces() {
    // "a_b" + "c" vs "a" + "b_c" cannot happen: namespaces and names have no '_'.
    assert_ne!(default_token_name("team-a", "x"), default_token_name("team", "a-x"));
}

#[test]
fn renews_one_third_before_expiry_by_default() {
    let access = validate(&with("lifetime: 15m\n")).unwrap();
    assert_eq!(access.renew_before, SignedDuration::from_mins(5));
}

#[test]
fn refuses_no_scopes() {
    let (field, problem) = only_problem("workspaceRef: {name: analytics}\nscopes: []\nsecret: {}\n");
    assert_eq!(field, "spec.scopes");
    assert!(problem.contains("at least one scope"), "{problem}");
}

#[test]
fn refuses_an_empty_resource() {
    let (field, _) = only_problem("workspaceRef: {name: a}\nscopes: [{resource: ''}]\nsecret: {}\n");
    assert_eq!(field, "spec.scopes[0].resource");
}

#[test]
fn refuses_unknown_and_append_scope_types() {
    let (field, problem) =
        only_problem("workspaceRef: {name: a}\nscopes: [{type: 'PIPES:WRITE', resource: p}]\nsecret: {}\n");
    assert_eq!(field, "spec.scopes[0].type");
    assert!(problem.contains("PIPES:READ or DATASOURCES:READ"), "{problem}");
    let (_, problem) = only_problem(
        "workspaceRef: {name: a}\nscopes: [{type: 'DATASOURCES:APPEND', resource: p}]\nsecret: {}\n",
    );
    assert!(problem.contains("only read"), "{problem}");
}

#[test]
fn refuses_null_and_empty_fixed_param_values() {
    let (field, problem) = only_problem(
        "workspaceRef: {name: a}\nscopes: [{resource: p, fixedParams: {org: null}}]\nsecret: {}\n",
    );
    assert_eq!(field, "spec.scopes[0].fixedParams.org");
    assert!(problem.contains("fail open"), "{problem}");
    let (field, _) = only_problem(
        "workspaceRef: {name: a}\nscopes: [{resource: p, fixedParams: {org: '  '}}]\nsecret: {}\n",
    );
    assert_eq!(field, "spec.scopes[0].fixedParams.org");
    let (_, problem) = only_problem(
        "workspaceRef: {name: a}\nscopes: [{resource: p, fixedParams: {org: [a, b]}}]\nsecret: {}\n",
    );
    assert!(problem.contains("string, number or boolean"), "{problem}");
}

#[test]
fn keeps_number_and_boolean_fixed_params() {
    let access =
        validate("workspaceRef: {name: a}\nscopes: [{resource: p, fixedParams: {year: 2026, paid: true}}]\nsecret: {}\n")
            .unwrap();
    assert_eq!(access.scopes[0].fixed_params["year"], serde_json::json!(2026));
    assert_eq!(access.scopes[0].fixed_params["paid"], serde_json::json!(true));
}

#[test]
fn refuses_a_clerk_shortcode_in_a_secret_output() {
    let (field, problem) = only_problem(
        "workspaceRef: {name: a}\nscopes: [{resource: p, fixedParams: {org: '{{org.slug}}'}}]\nsecret: {}\n",
    );
    assert_eq!(field, "spec.scopes[0].fixedParams.org");
    assert!(problem.contains("Clerk shortcode"), "{problem}");
}

#[test]
fn accepts_shortcodes_in_a_clerk_only_access_and_warns_about_org_without_fallback() {
    let access = validate(
        "workspaceRef: {name: a}\nscopes: [{resource: p, fixedParams: {org: '{{org.slug}}', user: '{{user.id}}'}}]\nclerkTemplate: {}\n",
    )
    .unwrap();
    assert!(access.has_shortcodes);
    assert_eq!(access.warnings.len(), 1, "{:?}", access.warnings);
    let clerk = access.clerk_template.unwrap();
    assert_eq!(clerk.name, "acme_acme-reader");
    assert_eq!((clerk.lifetime_seconds, clerk.allowed_clock_skew_seconds), (60, 5));
    assert_eq!(clerk.deletion_policy, DeletionPolicy::Delete);
}

#[test]
fn default_clerk_template_names_of_different_tenant_accesses_never_collide() {
    let spec = spec("workspaceRef: {name: a}\nscopes: [{resource: p}]\nclerkTemplate: {}\n");
    let name = |namespace: &str, access: &str| {
        validate_tenant_access(namespace, access, &spec).unwrap().clerk_template.unwrap().name
    };
    // With a `-` both would be `acme-corp-dash`; `_` is in no namespace and no TenantAccess name.
    assert_eq!(name("acme", "corp-dash"), "acme_corp-dash");
    assert_eq!(name("acme-corp", "dash"), "acme-corp_dash");
    assert_ne!(name("acme", "corp.dash"), name("acme.corp", "dash"));
}

#[test]
fn refuses_unknown_shortcodes() {
    let (_, problem) = only_problem(
        "workspaceRef: {name: a}\nscopes: [{resource: p, fixedParams: {org: '{{tenant.slug}}'}}]\nclerkTemplate: {}\n",
    );
    assert!(problem.contains("unknown to Clerk"), "{problem}");
}

#[test]
fn refuses_renew_before_not_shorter_than_lifetime() {
    let (field, problem) = only_problem(&with("lifetime: 10m\nrenewBefore: 10m\n"));
    assert_eq!(field, "spec.renewBefore");
    assert!(problem.contains("not shorter than lifetime"), "{problem}");
}

#[test]
fn refuses_a_lifetime_under_one_minute() {
    let (field, problem) = only_problem(&with("lifetime: 59s\n"));
    assert_eq!(field, "spec.lifetime");
    assert!(problem.contains("at least 1m"), "{problem}");
}

#[test]
fn refuses_bad_duration_syntax() {
    let (field, problem) = only_problem(&with("lifetime: 1d\n"));
    assert_eq!(field, "spec.lifetime");
    assert!(problem.contains("write it like"), "{problem}");
}

#[test]
fn refuses_invalid_token_name_characters() {
    let (field, _) = only_problem(&with("tokenName: 'acme reader!'\n"));
    assert_eq!(field, "spec.tokenName");
}

#[test]
fn refuses_a_filter_on_pipes_read() {
    let (field, problem) =
        only_problem("workspaceRef: {name: a}\nscopes: [{resource: p, filter: \"org = 'a'\"}]\nsecret: {}\n");
    assert_eq!(field, "spec.scopes[0].filter");
    assert!(problem.contains("only to DATASOURCES:READ"), "{problem}");
}

#[test]
fn refuses_fixed_params_on_datasources_read_because_they_would_fail_open() {
    let (field, _) = only_problem(
        "workspaceRef: {name: a}\nscopes: [{type: 'DATASOURCES:READ', resource: events, fixedParams: {org: a}}]\nsecret: {}\n",
    );
    assert_eq!(field, "spec.scopes[0].fixedParams");
}

#[test]
fn refuses_shortcodes_in_filters() {
    let (field, problem) = only_problem(
        "workspaceRef: {name: a}\nscopes: [{type: 'DATASOURCES:READ', resource: events, filter: \"org = '{{org.slug}}'\"}]\nclerkTemplate: {}\n",
    );
    assert_eq!(field, "spec.scopes[0].filter");
    assert!(problem.contains("SQL injection"), "{problem}");
}

#[test]
fn refuses_an_invalid_secret_name() {
    let (field, _) =
        only_problem("workspaceRef: {name: a}\nscopes: [{resource: p}]\nsecret: {name: Acme_Token}\n");
    assert_eq!(field, "spec.secret.name");
}

#[test]
fn refuses_labels_that_would_hijack_the_managed_by_label() {
    let (field, _) = only_problem(
        "workspaceRef: {name: a}\nscopes: [{resource: p}]\nsecret: {labels: {app.kubernetes.io/managed-by: me}}\n",
    );
    assert_eq!(field, "spec.secret.labels[app.kubernetes.io/managed-by]");
}

#[test]
fn refuses_no_output() {
    let (field, problem) = only_problem("workspaceRef: {name: a}\nscopes: [{resource: p}]\n");
    assert_eq!(field, "spec");
    assert!(problem.contains("no output"), "{problem}");
}

#[test]
fn refuses_zero_rps() {
    let (field, _) = only_problem(&with("").replace("rps: 10", "rps: 0"));
    assert_eq!(field, "spec.limits.rps");
}

#[test]
fn refuses_duplicate_scopes() {
    let (field, _) =
        only_problem("workspaceRef: {name: a}\nscopes: [{resource: p}, {resource: p}]\nsecret: {}\n");
    assert_eq!(field, "spec.scopes[1]");
}

#[test]
fn refuses_clerk_lifetime_and_skew_outside_clerks_bounds() {
    let (field, _) =
        only_problem("workspaceRef: {name: a}\nscopes: [{resource: p}]\nclerkTemplate: {lifetime: 10s}\n");
    assert_eq!(field, "spec.clerkTemplate.lifetime");
    let (field, _) = only_problem(
        "workspaceRef: {name: a}\nscopes: [{resource: p}]\nclerkTemplate: {allowedClockSkew: 10m}\n",
    );
    assert_eq!(field, "spec.clerkTemplate.allowedClockSkew");
}

#[test]
fn refuses_unknown_workspace_kind_and_rollout_kind() {
    let (field, _) =
        only_problem("workspaceRef: {kind: Workspace, name: a}\nscopes: [{resource: p}]\nsecret: {}\n");
    assert_eq!(field, "spec.workspaceRef.kind");
    let (field, _) = only_problem(
        "workspaceRef: {name: a}\nscopes: [{resource: p}]\nsecret: {rolloutRestartTargets: [{kind: Pod, name: x}]}\n",
    );
    assert_eq!(field, "spec.secret.rolloutRestartTargets[0].kind");
}

#[test]
fn refuses_a_health_timeout_longer_than_the_interval() {
    let (field, _) = only_problem(&with("healthCheck: {interval: 10s, timeout: 30s}\n"));
    assert_eq!(field, "spec.healthCheck.timeout");
}

#[test]
fn zero_interval_disables_health_checks() {
    let access = validate(&with("healthCheck: {interval: '0'}\n")).unwrap();
    assert!(access.health.interval.is_zero());
}

#[test]
fn reports_every_problem_at_once() {
    let errors = validate("workspaceRef: {name: a}\nscopes: [{resource: ''}]\nlifetime: 5s\n").unwrap_err().0;
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["spec.scopes[0].resource", "spec.lifetime", "spec"]);
}

#[test]
fn the_default_probe_timeout_fits_a_short_interval() {
    let access = validate(&with("healthCheck: {interval: 5s}\n")).unwrap();
    assert_eq!(access.health.timeout, SignedDuration::from_millis(2500));
}
