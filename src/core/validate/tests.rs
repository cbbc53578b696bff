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
fn accepts_shortcodes_in_a_clerk_only_access() {
    let access = validate(
        "workspaceRef: {name: a}\nscopes: [{resource: p, fixedParams: {org: '{{org.slug}}', user: '{{user.id}}'}}]\nclerkTemplate: {}\n",
    )
    .unwrap();
    assert!(access.has_shortcodes);
    // A shortcode without a fallback is no risk any more: the operator adds one.
    assert!(access.warnings.is_empty(), "{:?}", access.warnings);
    let clerk = access.clerk_template.unwrap();
    assert_eq!(clerk.name, "acme_acme-reader");
    assert_eq!((clerk.lifetime_seconds, clerk.allowed_clock_skew_seconds), (60, 5));
    assert_eq!(clerk.deletion_policy, DeletionPolicy::Delete);
}

fn clerk_token_name(yaml: &str) -> String {
    let clerk = validate(yaml).unwrap().clerk_template.unwrap();
    clerk.token_name.render(&clerk.missing_identity_value)
}

#[test]
fn a_clerk_template_gives_each_user_a_rate_limit_bucket_by_default() {
    let base = "workspaceRef: {name: a}\nscopes: [{resource: p}]\nlimits: {rps: 5}\n";
    assert_eq!(
        clerk_token_name(&format!("{base}clerkTemplate: {{}}\n")),
        "acme_acme-reader_{{user.id || '_none_'}}"
    );
    assert_eq!(
        clerk_token_name(&format!("{base}clerkTemplate: {{rateLimitKey: Organization}}\n")),
        "acme_acme-reader_{{org.id || '_none_'}}"
    );
    assert_eq!(
        clerk_token_name(&format!("{base}clerkTemplate: {{rateLimitKey: Shared}}\n")),
        "acme_acme-reader"
    );
    assert_eq!(
        clerk_token_name(&format!("{base}tokenName: frontend_jwt\nclerkTemplate: {{}}\n")),
        "frontend_jwt_{{user.id || '_none_'}}"
    );
    // The Secret's token keeps its one name: it is one token.
    let both = validate(&format!("{base}secret: {{}}\nclerkTemplate: {{}}\n")).unwrap();
    assert_eq!(both.token_name, "acme_acme-reader");
}

#[test]
fn a_token_name_may_hold_shortcodes_in_a_clerk_only_access() {
    let yaml = "workspaceRef: {name: a}\ntokenName: 'acme_{{org.id}}_{{user.id}}'\nscopes: [{resource: p}]\nclerkTemplate: {}\n";
    assert_eq!(clerk_token_name(yaml), "acme_{{org.id || '_none_'}}_{{user.id || '_none_'}}");
    // Probe tokens, signed in memory, carry the name with the shortcodes filled.
    assert_eq!(validate(yaml).unwrap().token_name, "acme__none___none_");

    let (field, problem) = only_problem(
        "workspaceRef: {name: a}\ntokenName: 'acme_{{user.id}}'\nscopes: [{resource: p}]\nsecret: {}\n",
    );
    assert_eq!(field, "spec.tokenName");
    assert!(problem.contains("a Secret token needs a literal name"), "{problem}");

    let (field, problem) = only_problem(
        "workspaceRef: {name: a}\ntokenName: 'acme_{{user.id}}'\nscopes: [{resource: p}]\nclerkTemplate: {rateLimitKey: Shared}\n",
    );
    assert_eq!(field, "spec.clerkTemplate.rateLimitKey");
    assert!(problem.contains("remove rateLimitKey or the shortcodes"), "{problem}");

    let (field, problem) = only_problem(&format!(
        "workspaceRef: {{name: a}}\ntokenName: '{}_{{{{user.id}}}}'\nscopes: [{{resource: p}}]\nclerkTemplate: {{}}\n",
        "n".repeat(200)
    ));
    assert_eq!(field, "spec.tokenName");
    assert!(problem.contains("may render 265 bytes"), "{problem}");

    let (_, problem) = only_problem(
        "workspaceRef: {name: a}\ntokenName: 'a b{{user.id}}'\nscopes: [{resource: p}]\nclerkTemplate: {}\n",
    );
    assert!(problem.contains("outside its shortcodes"), "{problem}");
}

#[test]
fn refuses_shortcodes_the_end_user_writes() {
    let (field, problem) = only_problem(
        "workspaceRef: {name: a}\nscopes: [{resource: p, fixedParams: {org: '{{user.unsafe_metadata.org}}'}}]\nclerkTemplate: {}\n",
    );
    assert_eq!(field, "spec.scopes[0].fixedParams.org");
    assert!(problem.contains("written by the signed-in user"), "{problem}");
    assert!(problem.contains("public_metadata"), "{problem}");

    let (field, problem) = only_problem(
        "workspaceRef: {name: a}\ntokenName: 'acme_{{user.unsafe_metadata.bucket}}'\nscopes: [{resource: p}]\nclerkTemplate: {}\n",
    );
    assert_eq!(field, "spec.tokenName");
    assert!(problem.contains("written by the signed-in user"), "{problem}");

    assert!(validate(
        "workspaceRef: {name: a}\nscopes: [{resource: p, fixedParams: {org: '{{user.public_metadata.org}}'}}]\nclerkTemplate: {}\n"
    )
    .is_ok());
}

#[test]
fn refuses_an_unknown_rate_limit_key() {
    let (field, _) = only_problem(
        "workspaceRef: {name: a}\nscopes: [{resource: p}]\nclerkTemplate: {rateLimitKey: Session}\n",
    );
    assert_eq!(field, "spec.clerkTemplate.rateLimitKey");
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

fn datasource_filter(filter: &str) -> String {
    format!(
        "workspaceRef: {{name: a}}\nscopes: [{{type: 'DATASOURCES:READ', resource: events, filter: {}}}]\nsecret: {{}}\n",
        serde_json::to_string(filter).unwrap()
    )
}

#[test]
fn parses_a_filter_into_the_operators_own_form() {
    let access = validate(&datasource_filter("kind in ('click','view') and not deleted is null")).unwrap();
    let filter = access.scopes[0].filter.as_ref().unwrap();
    assert_eq!(filter.to_sql(), "(kind IN ('click', 'view')) AND (NOT (deleted IS NULL))");
}

#[test]
fn refuses_a_filter_outside_the_grammar_naming_the_part() {
    for (filter, part) in [
        ("org = $$acme$$", "\"$\" at byte 6"),
        ("notEmpty('acme' AS org)", "\"notEmpty(\" at byte 0"),
        ("org = \u{2019}acme\u{2019}", "non-ASCII character U+2019 at byte 6"),
        ("org IN (SELECT org FROM t)", "\"SELECT\" at byte 8"),
    ] {
        let (field, problem) = only_problem(&datasource_filter(filter));
        assert_eq!(field, "spec.scopes[0].filter");
        assert!(problem.starts_with(part), "{filter:?}: {problem}");
    }
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
    let (field, _) = only_problem(
        "workspaceRef: {name: a}\nscopes: [{resource: p}, {resource: q}, {resource: p}]\nsecret: {}\n",
    );
    assert_eq!(field, "spec.scopes[2]");
    // The same name as a pipe and as a data source is two grants.
    assert!(
        validate("workspaceRef: {name: a}\nscopes: [{resource: p}, {type: 'DATASOURCES:READ', resource: p}]\nsecret: {}\n")
            .is_ok()
    );
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

fn scopes_yaml(count: usize) -> String {
    let scopes: String = (0..count).map(|i| format!("{{resource: pipe_{i}}}, ")).collect();
    format!("workspaceRef: {{name: analytics}}\nscopes: [{scopes}]\nsecret: {{}}\n")
}

#[test]
fn refuses_more_scopes_than_the_limit_without_looking_at_them() {
    assert!(validate(&scopes_yaml(crate::api::limits::MAX_SCOPES)).is_ok());
    // 45,000 scopes, every one of them invalid: one problem, about the count.
    let scopes: String = (0..45_000).map(|_| "{resource: 'bad name'}, ").collect();
    let (field, problem) =
        only_problem(&format!("workspaceRef: {{name: analytics}}\nscopes: [{scopes}]\nsecret: {{}}\n"));
    assert_eq!(field, "spec.scopes");
    assert!(problem.contains("45000 scopes: at most 64"), "{problem}");
}

#[test]
fn refuses_oversized_fixed_params_names_and_values() {
    let many: String = (0..33).map(|i| format!("p{i}: x, ")).collect();
    let (field, problem) = only_problem(&format!(
        "workspaceRef: {{name: a}}\nscopes: [{{resource: top_pages, fixedParams: {{{many}}}}}]\nsecret: {{}}\n"
    ));
    assert_eq!(field, "spec.scopes[0].fixedParams");
    assert!(problem.contains("33 params: at most 32"), "{problem}");

    let (field, problem) = only_problem(&format!(
        "workspaceRef: {{name: a}}\nscopes: [{{resource: top_pages, fixedParams: {{org: '{}'}}}}]\nsecret: {{}}\n",
        "x".repeat(1025)
    ));
    assert_eq!(field, "spec.scopes[0].fixedParams.org");
    assert!(problem.contains("1025 bytes long"), "{problem}");

    let long_name = "p".repeat(65);
    let (_, problem) = only_problem(&format!(
        "workspaceRef: {{name: a}}\nscopes: [{{resource: top_pages, fixedParams: {{{long_name}: x}}}}]\nsecret: {{}}\n"
    ));
    assert!(problem.contains("at most 64 bytes"), "{problem}");
    assert!(problem.len() < 300, "the refused name is not echoed whole: {problem}");
}

#[test]
fn refuses_an_oversized_resource_name() {
    let (field, problem) = only_problem(&format!(
        "workspaceRef: {{name: a}}\nscopes: [{{resource: {}}}]\nsecret: {{}}\n",
        "r".repeat(129)
    ));
    assert_eq!(field, "spec.scopes[0].resource");
    assert!(problem.contains("at most 128"), "{problem}");
}

#[test]
fn refuses_oversized_secret_metadata_and_rollout_lists() {
    let labels: String = (0..33).map(|i| format!("l{i}: v, ")).collect();
    let (field, problem) = only_problem(&format!(
        "workspaceRef: {{name: a}}\nscopes: [{{resource: top_pages}}]\nsecret: {{labels: {{{labels}}}}}\n"
    ));
    assert_eq!(field, "spec.secret.labels");
    assert!(problem.contains("at most 32"), "{problem}");

    let (field, problem) = only_problem(&format!(
        "workspaceRef: {{name: a}}\nscopes: [{{resource: top_pages}}]\nsecret: {{annotations: {{note: '{}'}}}}\n",
        "x".repeat(4097)
    ));
    assert_eq!(field, "spec.secret.annotations[note]");
    assert!(problem.contains("at most 4096"), "{problem}");

    let targets: String = (0..17).map(|i| format!("{{kind: Deployment, name: app-{i}}}, ")).collect();
    let (field, problem) = only_problem(&format!(
        "workspaceRef: {{name: a}}\nscopes: [{{resource: top_pages}}]\nsecret: {{rolloutRestartTargets: [{targets}]}}\n"
    ));
    assert_eq!(field, "spec.secret.rolloutRestartTargets");
    assert!(problem.contains("17 targets: at most 16"), "{problem}");
}

#[test]
fn probe_params_may_not_be_reserved_by_tinybird() {
    for name in
        ["q", "Q", "token", "format", "pipeline", "from", "debug", "explain", "_internal", "__tb__semver"]
    {
        let (field, problem) = only_problem(&with(&format!("healthCheck: {{params: {{{name}: 'x'}}}}\n")));
        assert_eq!(field, format!("spec.healthCheck.params.{name}"));
        assert!(problem.contains("reserved by Tinybird"), "{name}: {problem}");
    }
    assert!(validate(&with("healthCheck: {params: {limit: '1', date_from: '2024-01-01'}}\n")).is_ok());
}

#[test]
fn probe_params_may_not_name_a_fixed_param() {
    let (field, problem) = only_problem(&with("healthCheck: {params: {org: globex}}\n"));
    assert_eq!(field, "spec.healthCheck.params.org");
    assert!(problem.contains("fixed param"), "{problem}");
}

#[test]
fn probe_params_and_samples_are_bounded_in_number_and_size() {
    for map in ["params", "sampleParams"] {
        let many: Vec<String> = (0..=MAX_PROBE_PARAMS).map(|i| format!("p{i}: 'x'")).collect();
        let (field, problem) =
            only_problem(&with(&format!("healthCheck: {{{map}: {{{}}}}}\n", many.join(", "))));
        assert_eq!(field, format!("spec.healthCheck.{map}"));
        assert!(problem.contains("at most 16"), "{problem}");

        let long = "x".repeat(MAX_PROBE_PARAM_BYTES + 1);
        let (field, problem) = only_problem(&with(&format!("healthCheck: {{{map}: {{day: '{long}'}}}}\n")));
        assert_eq!(field, format!("spec.healthCheck.{map}.day"));
        assert!(problem.contains("at most 256"), "{problem}");

        let (_, problem) = only_problem(&with(&format!("healthCheck: {{{map}: {{day: \"a\\nb\"}}}}\n")));
        assert!(problem.contains("control character"), "{problem}");
    }
    let most: Vec<String> = (0..MAX_PROBE_PARAMS).map(|i| format!("p{i}: 'x'")).collect();
    assert!(validate(&with(&format!("healthCheck: {{params: {{{}}}}}\n", most.join(", ")))).is_ok());
}

#[test]
fn sample_params_may_name_fixed_params_they_stand_in_for() {
    let clerk_only = "workspaceRef: {name: analytics}\nscopes: [{resource: top_pages, fixedParams: {org: '{{org.slug}}'}}]\nclerkTemplate: {}\nhealthCheck: {sampleParams: {org: acme}}\n";
    assert!(validate(clerk_only).is_ok());
}
