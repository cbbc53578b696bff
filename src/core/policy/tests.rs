use super::*;
use crate::api::TenantAccessSpec;
use crate::core::validate::validate_tenant_access;

fn access(yaml: &str) -> ValidatedAccess {
    let spec: TenantAccessSpec = serde_saphyr::from_str(yaml).unwrap();
    validate_tenant_access("acme", "reader", &spec).unwrap()
}

fn policy(yaml: &str) -> WorkspacePolicy {
    serde_saphyr::from_str(yaml).unwrap()
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("tenant".to_owned(), "acme".to_owned())])
}

fn check(spec: &str, policy_yaml: &str) -> Result<ValidatedAccess, PolicyViolation> {
    let labels = labels();
    apply(
        access(spec),
        Some(&policy(policy_yaml)),
        "shared",
        NamespaceFacts { name: "acme", labels: Some(&labels) },
    )
}

const ORG_FROM_LABEL: &str =
    "requiredParams: {org: {namespaceLabel: tenant, clerkShortcode: '{{org.slug}}'}}";

#[test]
fn injects_a_required_param_into_pipe_scopes() {
    let checked =
        check("workspaceRef: {name: s}\nscopes: [{resource: top_pages}]\nsecret: {}\n", ORG_FROM_LABEL)
            .unwrap();
    assert_eq!(checked.scopes[0].fixed_params["org"], "acme");
}

#[test]
fn refuses_a_foreign_tenant_value() {
    let error = check(
        "workspaceRef: {name: s}\nscopes: [{resource: p, fixedParams: {org: globex}}]\nsecret: {}\n",
        ORG_FROM_LABEL,
    )
    .unwrap_err();
    assert!(error.to_string().contains("pins org to \"acme\""), "{error}");
}

#[test]
fn refuses_when_the_namespace_lacks_the_label() {
    let empty = BTreeMap::new();
    let error = apply(
        access("workspaceRef: {name: s}\nscopes: [{resource: p}]\nsecret: {}\n"),
        Some(&policy(ORG_FROM_LABEL)),
        "shared",
        NamespaceFacts { name: "acme", labels: Some(&empty) },
    )
    .unwrap_err();
    assert!(error.to_string().contains("which it lacks"), "{error}");
}

#[test]
fn allows_only_the_mapped_clerk_shortcode() {
    assert!(check("workspaceRef: {name: s}\nscopes: [{resource: p, fixedParams: {org: '{{org.slug}}'}}]\nclerkTemplate: {}\n", ORG_FROM_LABEL).is_ok());
    let error = check("workspaceRef: {name: s}\nscopes: [{resource: p, fixedParams: {org: '{{user.id}}'}}]\nclerkTemplate: {}\n", ORG_FROM_LABEL).unwrap_err();
    assert!(error.to_string().contains("is not the shortcode"), "{error}");
    assert!(error.to_string().contains("write {{org.slug}} or omit the param"), "{error}");
}

#[test]
fn a_clerk_template_on_a_pinned_workspace_gets_the_policys_shortcode_never_the_namespaces_value() {
    // Omitted: the Secret's token gets the namespace's value, the template the shortcode.
    let both = "workspaceRef: {name: s}\nscopes: [{resource: top_pages}]\nsecret: {}\nclerkTemplate: {}\nlimits: {rps: 5}\n";
    let checked = check(both, ORG_FROM_LABEL).unwrap();
    assert_eq!(checked.scopes[0].fixed_params["org"], "acme");
    let clerk = checked.clerk_template.as_ref().unwrap();
    assert_eq!(clerk.pinned["org"].path, "org.slug");
    let claims = crate::core::desired::clerk_access_claims(&checked, clerk, "ws");
    assert_eq!(claims.scopes[0].fixed_params.as_ref().unwrap()["org"], "{{org.slug || '_none_'}}");

    // Written as the namespace's literal value: refused, advising what is accepted.
    let literal = "workspaceRef: {name: s}\nscopes: [{resource: top_pages, fixedParams: {org: acme}}]\nsecret: {}\nclerkTemplate: {}\n";
    let error = check(literal, ORG_FROM_LABEL).unwrap_err().to_string();
    assert!(error.contains("\"acme\" is not allowed in a Clerk template"), "{error}");
    assert!(error.contains("omit fixedParams.org"), "{error}");
    // The same literal without a Clerk output is the Secret's own value: fine.
    assert!(check(&literal.replace("clerkTemplate: {}\n", ""), ORG_FROM_LABEL).is_ok());
}

#[test]
fn a_pinned_workspace_without_a_shortcode_for_the_param_refuses_clerk_outputs() {
    let no_shortcode = "requiredParams: {org: {namespaceLabel: tenant}}";
    let error = check("workspaceRef: {name: s}\nscopes: [{resource: p}]\nclerkTemplate: {}\n", no_shortcode)
        .unwrap_err()
        .to_string();
    assert!(error.contains("maps no Clerk shortcode"), "{error}");
    assert!(error.contains("remove spec.clerkTemplate"), "{error}");
    assert!(check("workspaceRef: {name: s}\nscopes: [{resource: p}]\nsecret: {}\n", no_shortcode).is_ok());
}

#[test]
fn refuses_datasource_scopes_in_a_clerk_template_on_a_pinned_workspace() {
    let spec = "workspaceRef: {name: s}\nscopes: [{type: 'DATASOURCES:READ', resource: events, filter: 'n > 1'}]\nclerkTemplate: {}\n";
    let policy = format!("{ORG_FROM_LABEL}\nallowedScopeTypes: ['PIPES:READ', 'DATASOURCES:READ']");
    let error = check(spec, &policy).unwrap_err().to_string();
    assert!(error.contains("a DATASOURCES:READ filter cannot hold a Clerk shortcode"), "{error}");
    assert!(check(&spec.replace("clerkTemplate", "secret"), &policy).is_ok());
}

#[test]
fn refuses_a_fallback_that_could_be_another_tenants_value() {
    let with_fallback = |fallback: &str| {
        format!(
            "workspaceRef: {{name: s}}\nscopes: [{{resource: p, fixedParams: {{org: \"{{{{org.slug || '{fallback}'}}}}\"}}}}]\nclerkTemplate: {{}}\n"
        )
    };
    let error = check(&with_fallback("globex"), ORG_FROM_LABEL).unwrap_err().to_string();
    assert!(error.contains("the fallback \"globex\" could be a tenant's org"), "{error}");
    assert!(check(&with_fallback("_nobody_"), ORG_FROM_LABEL).is_ok());

    let policy_fallback =
        "requiredParams: {org: {namespaceLabel: tenant, clerkShortcode: \"{{org.slug || 'public'}}\"}}";
    let problems = super::check(&policy(policy_fallback), "shared").unwrap_err().to_string();
    assert!(problems.contains("the fallback \"public\" could be a tenant's org"), "{problems}");
}

#[test]
fn the_workspace_checks_its_clerk_shortcodes_and_missing_identity_value() {
    let unsafe_code =
        "requiredParams: {org: {namespaceLabel: tenant, clerkShortcode: '{{user.unsafe_metadata.org}}'}}";
    let problems = super::check(&policy(unsafe_code), "shared").unwrap_err().to_string();
    assert!(problems.contains("written by the signed-in user"), "{problems}");
    let tenant_like = super::check(&policy("clerkMissingIdentityValue: nobody"), "shared").unwrap_err();
    assert!(
        tenant_like.to_string().contains("so no namespace name or label value can equal it"),
        "{tenant_like}"
    );
    assert!(super::check(&policy("clerkMissingIdentityValue: '-nobody-'"), "shared").is_ok());

    let checked = check(
        "workspaceRef: {name: s}\nscopes: [{resource: p, fixedParams: {user: '{{user.id}}'}}]\nclerkTemplate: {}\n",
        "clerkMissingIdentityValue: '-nobody-'",
    )
    .unwrap();
    let clerk = checked.clerk_template.as_ref().unwrap();
    let claims = crate::core::desired::clerk_access_claims(&checked, clerk, "ws");
    assert_eq!(claims.scopes[0].fixed_params.as_ref().unwrap()["user"], "{{user.id || '-nobody-'}}");
    assert_eq!(claims.name, "acme_reader_{{user.id || '-nobody-'}}");
}

#[test]
fn a_fixed_value_in_a_clerk_template_is_warned_about_unless_the_workspace_pins_it() {
    let spec = "workspaceRef: {name: s}\nscopes: [{resource: p, fixedParams: {org: acme, user: '{{user.id}}'}}]\nlimits: {rps: 5}\nclerkTemplate: {}\n";
    let warned = check(spec, "maxScopes: 3").unwrap();
    assert!(
        warned.warnings.iter().any(|w| w.contains("fixedParams org are fixed values in the template")),
        "{:?}",
        warned.warnings
    );
    let pinned = check(&spec.replace("org: acme, ", ""), ORG_FROM_LABEL).unwrap();
    assert!(pinned.warnings.is_empty(), "{:?}", pinned.warnings);
}

#[test]
fn a_clerk_template_without_a_rate_limit_is_warned_about() {
    let spec = "workspaceRef: {name: s}\nscopes: [{resource: p}]\nclerkTemplate: {}\n";
    let warned = check(spec, "maxScopes: 3").unwrap();
    assert!(warned.warnings.iter().any(|w| w.contains("no limits.rps")), "{:?}", warned.warnings);
    let limited = check(spec, "maxRps: 5").unwrap();
    assert!(limited.warnings.is_empty(), "{:?}", limited.warnings);
}

fn datasource_spec(filter: &str) -> String {
    format!(
        "workspaceRef: {{name: s}}\nscopes: [{{type: 'DATASOURCES:READ', resource: events, filter: {}}}]\nsecret: {{}}\n",
        serde_json::to_string(filter).unwrap()
    )
}

fn signed_filter(checked: &ValidatedAccess) -> String {
    checked.scopes[0].filter.as_ref().map(crate::core::filter::Filter::to_sql).unwrap()
}

#[test]
fn ands_the_tenant_condition_outside_the_parsed_filter() {
    let policy_yaml = format!("allowedScopeTypes: ['PIPES:READ', 'DATASOURCES:READ']\n{ORG_FROM_LABEL}");
    let checked = check(&datasource_spec("kind = 'click' OR kind = 'view'"), &policy_yaml).unwrap();
    assert_eq!(signed_filter(&checked), "((kind = 'click') OR (kind = 'view')) AND (org = 'acme')");
    // Another tenant's value is no escape: it is ANDed with the namespace's own.
    let checked = check(&datasource_spec("org = 'globex'"), &policy_yaml).unwrap();
    assert_eq!(signed_filter(&checked), "(org = 'globex') AND (org = 'acme')");
    // No filter: the tenant condition alone.
    let spec =
        "workspaceRef: {name: s}\nscopes: [{type: 'DATASOURCES:READ', resource: events}]\nsecret: {}\n";
    assert_eq!(signed_filter(&check(spec, &policy_yaml).unwrap()), "org = 'acme'");
}

#[test]
fn escapes_the_tenant_value_as_a_string_literal() {
    let policy_yaml =
        "allowedScopeTypes: ['DATASOURCES:READ']\nrequiredParams: {org: {namespaceLabel: tenant}}";
    let labels = BTreeMap::from([("tenant".to_owned(), "o'brien\\".to_owned())]);
    let checked = apply(
        access(
            "workspaceRef: {name: s}\nscopes: [{type: 'DATASOURCES:READ', resource: events}]\nsecret: {}\n",
        ),
        Some(&policy(policy_yaml)),
        "shared",
        NamespaceFacts { name: "acme", labels: Some(&labels) },
    )
    .unwrap();
    assert_eq!(signed_filter(&checked), "org = 'o\\'brien\\\\'");
}

#[test]
fn refuses_a_required_param_that_is_not_a_column_name_for_data_sources() {
    let policy_yaml =
        "allowedScopeTypes: ['DATASOURCES:READ']\nrequiredParams: {'org) OR (1': {namespaceName: true}}";
    let error = check(&datasource_spec("kind = 'click'"), policy_yaml).unwrap_err();
    assert!(
        error.to_string().contains("requiredParams.org) OR (1: cannot filter data sources by it"),
        "{error}"
    );
}

#[test]
fn datasources_read_needs_explicit_permission() {
    let error = check(
        "workspaceRef: {name: s}\nscopes: [{type: 'DATASOURCES:READ', resource: events}]\nsecret: {}\n",
        "{}",
    )
    .unwrap_err();
    assert!(error.to_string().contains("allowedScopeTypes"), "{error}");
    let labels = labels();
    let no_policy = apply(
        access(
            "workspaceRef: {name: s}\nscopes: [{type: 'DATASOURCES:READ', resource: events}]\nsecret: {}\n",
        ),
        None,
        "plain",
        NamespaceFacts { name: "acme", labels: Some(&labels) },
    );
    assert!(no_policy.is_err());
}

#[test]
fn enforces_resources_lifetime_and_rps() {
    let policy_yaml = "allowedResources: ['tenant_*', top_pages]\nmaxLifetime: 2h\nmaxRps: 20\n";
    assert!(
        check("workspaceRef: {name: s}\nscopes: [{resource: tenant_events}]\nsecret: {}\n", policy_yaml)
            .is_ok()
    );
    assert!(
        check("workspaceRef: {name: s}\nscopes: [{resource: admin_stats}]\nsecret: {}\n", policy_yaml)
            .is_err()
    );
    assert!(
        check(
            "workspaceRef: {name: s}\nscopes: [{resource: top_pages}]\nlifetime: 3h\nsecret: {}\n",
            policy_yaml
        )
        .is_err()
    );
    assert!(
        check(
            "workspaceRef: {name: s}\nscopes: [{resource: top_pages}]\nlimits: {rps: 100}\nsecret: {}\n",
            policy_yaml
        )
        .is_err()
    );
    let defaulted =
        check("workspaceRef: {name: s}\nscopes: [{resource: top_pages}]\nsecret: {}\n", policy_yaml).unwrap();
    assert_eq!(defaulted.rps, Some(20));
}

#[test]
fn globs_match_like_shell_patterns() {
    assert!(glob_matches("tenant_*", "tenant_events"));
    assert!(glob_matches("*_pages", "top_pages"));
    assert!(glob_matches("t?p_pages", "top_pages"));
    assert!(!glob_matches("tenant_*", "admin_tenant_x"));
    assert!(glob_matches("*", "anything"));
}

#[test]
fn a_shared_workspace_keeps_token_names_in_the_namespace() {
    assert!(
        check(
            "workspaceRef: {name: s}\ntokenName: globex_reader\nscopes: [{resource: p}]\nsecret: {}\n",
            ORG_FROM_LABEL
        )
        .is_err()
    );
    assert!(
        check(
            "workspaceRef: {name: s}\ntokenName: acme_dashboard\nscopes: [{resource: p}]\nsecret: {}\n",
            ORG_FROM_LABEL
        )
        .is_ok()
    );
}

#[test]
fn refuses_more_scopes_than_the_workspace_allows() {
    let spec = "workspaceRef: {name: s}\nscopes: [{resource: a}, {resource: b}, {resource: c}]\nsecret: {}\n";
    let refused = check(spec, "maxScopes: 2").unwrap_err();
    assert!(refused.to_string().contains("3 scopes exceed the workspace maximum 2"), "{refused}");
    assert!(check(spec, "maxScopes: 3").is_ok());
}

const CLERK_ONLY: &str = "workspaceRef: {name: s}\nscopes: [{resource: top_pages, fixedParams: {org: '{{org.slug}}'}}]\nclerkTemplate: {}\n";

#[test]
fn a_sample_param_may_not_stand_in_for_another_tenant_in_probe_tokens() {
    let error =
        check(&format!("{CLERK_ONLY}healthCheck: {{sampleParams: {{org: globex}}}}\n"), ORG_FROM_LABEL)
            .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("spec.healthCheck.sampleParams.org: \"globex\" is not allowed"), "{message}");
    assert!(message.contains("pins org to \"acme\""), "{message}");
}

#[test]
fn a_sample_param_equal_to_the_pinned_value_is_fine_and_the_pin_is_recorded() {
    let checked =
        check(&format!("{CLERK_ONLY}healthCheck: {{sampleParams: {{org: acme}}}}\n"), ORG_FROM_LABEL)
            .unwrap();
    assert_eq!(checked.pinned_params, BTreeMap::from([("org".to_owned(), "acme".to_owned())]));
    let unsampled = check(CLERK_ONLY, ORG_FROM_LABEL).unwrap();
    assert_eq!(unsampled.pinned_params["org"], "acme", "pinned without a sample too");
}

#[test]
fn a_probe_param_may_not_name_a_pinned_param() {
    let unpinned_in_spec = "workspaceRef: {name: s}\nscopes: [{resource: top_pages}]\nsecret: {}\n";
    let error =
        check(&format!("{unpinned_in_spec}healthCheck: {{params: {{org: globex}}}}\n"), ORG_FROM_LABEL)
            .unwrap_err();
    assert!(error.to_string().contains("spec.healthCheck.params.org: workspace shared pins org"), "{error}");
}

#[test]
fn nothing_is_pinned_without_required_params() {
    let checked =
        check(&format!("{CLERK_ONLY}healthCheck: {{sampleParams: {{org: globex}}}}\n"), "maxRps: 5").unwrap();
    assert!(checked.pinned_params.is_empty());
}

#[test]
fn reads_the_pipe_isolation_policy_and_refuses_one_it_does_not_know() {
    use crate::core::isolation_report::IsolationPolicy;
    let spec = "workspaceRef: {name: s}\nscopes: [{resource: p, fixedParams: {org: acme}}]\nsecret: {}\n";
    assert_eq!(check(spec, "{}").unwrap().isolation_policy, IsolationPolicy::Warn, "the default");
    assert_eq!(check(spec, "pipeIsolation: Warn").unwrap().isolation_policy, IsolationPolicy::Warn);
    assert_eq!(check(spec, "pipeIsolation: Enforce").unwrap().isolation_policy, IsolationPolicy::Enforce);
    let error = check(spec, "pipeIsolation: enforce").unwrap_err().to_string();
    assert!(error.contains("spec.policy.pipeIsolation") && error.contains("use Enforce or Warn"), "{error}");
}
