use super::*;

/// A pipe of `(name, sql)` nodes; the last is the endpoint.
fn pipe(nodes: &[(&str, &str)]) -> PipeDescription {
    let nodes = nodes
        .iter()
        .map(|(name, sql)| Node {
            id: format!("t_{name}"),
            name: (*name).to_owned(),
            sql: (*sql).to_owned(),
            ..Node::default()
        })
        .collect();
    PipeDescription { id: "t_pipe".to_owned(), name: "pipe".to_owned(), endpoint: None, nodes }
}

fn verdict_of(nodes: &[(&str, &str)], param: &str) -> Verdict {
    let mut verdicts = judge(&pipe(nodes), &[param]);
    assert_eq!(verdicts.len(), 1);
    verdicts.remove(0).1
}

/// One case of the corpus: nodes (the last is the endpoint), the parameter, the expected
/// verdict label, and for `Unknown` a part of the reason.
struct Case {
    name: &'static str,
    nodes: &'static [(&'static str, &'static str)],
    param: &'static str,
    expected: &'static str,
    reason: &'static str,
}

const fn case(
    name: &'static str,
    nodes: &'static [(&'static str, &'static str)],
    param: &'static str,
    expected: &'static str,
    reason: &'static str,
) -> Case {
    Case { name, nodes, param, expected, reason }
}

fn check(cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let verdict = verdict_of(case.nodes, case.param);
        let reason_ok = match &verdict {
            Verdict::Unknown(reason) => reason.contains(case.reason),
            _ => case.reason.is_empty(),
        };
        if verdict.as_str() != case.expected || !reason_ok {
            failures.push(format!(
                "{}: expected {} ({:?}), got {verdict:?}",
                case.name, case.expected, case.reason
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const EVENTS_BY_ORG: &str = "%\nSELECT * FROM events WHERE org_id = {{String(org)}}";

const TYPED_PARAMS_IN_A_FILTER_ARE_ENFORCED: &[Case] = &[
    case(
        "pinning functions and value lists",
        &[(
            "ep",
            "%\nSELECT * FROM events WHERE has({{Array(orgs, 'String')}}, org_id) AND (lower({{String(org)}}) = \
             lower(org_id) AND org_id IN ({{String(org)}}, 'shared'));",
        )],
        "org",
        "Enforced",
        "",
    ),
    case("typed where", &[("ep", EVENTS_BY_ORG)], "org", "Enforced", ""),
    case(
        "typed among other filters",
        &[(
            "ep",
            "%\nSELECT pathname, count() AS views\nFROM page_views\nWHERE timestamp >= {{DateTime(start_date, '2024-01-01 00:00:00')}}\n  AND org_id = {{ String(org) }}\n  AND country = {{String(country, 'US')}}\nGROUP BY pathname\nORDER BY views DESC\nLIMIT {{Int32(limit, 10)}}",
        )],
        "org",
        "Enforced",
        "",
    ),
    case(
        "array in",
        &[("ep", "%\nSELECT * FROM events WHERE org_id IN {{Array(orgs, 'String')}}")],
        "orgs",
        "Enforced",
        "",
    ),
    case(
        "prewhere and having",
        &[(
            "ep",
            "%\nSELECT org_id, count() c FROM events PREWHERE org_id = {{String(org)}} GROUP BY org_id HAVING c > 0",
        )],
        "org",
        "Enforced",
        "",
    ),
    case(
        "inner join on",
        &[(
            "ep",
            "%\nSELECT * FROM events e INNER JOIN orgs o ON o.id = e.org_id AND o.slug = {{String(org)}}",
        )],
        "org",
        "Enforced",
        "",
    ),
    case("bare name", &[("ep", "%\nSELECT * FROM events WHERE org_id = {{org}}")], "org", "Enforced", ""),
    case(
        "leading max_threads",
        &[("ep", "%\n{{max_threads(2)}}\nSELECT * FROM events WHERE org_id = {{String(org)}}")],
        "org",
        "Enforced",
        "",
    ),
    case(
        "lower-case keywords and comments around",
        &[(
            "ep",
            "%\n-- per tenant\nselect /* all */ * from events where (deleted = 0 or restored = 1)\n  and org_id = {{String(org)}} -- pinned",
        )],
        "org",
        "Enforced",
        "",
    ),
];

#[test]
fn typed_params_in_a_filter_are_enforced() {
    check(TYPED_PARAMS_IN_A_FILTER_ARE_ENFORCED);
}

const REQUIRED_PARAMS_ARE_ENFORCED: &[Case] = &[
    case(
        "required in the where",
        &[(
            "ep",
            "%\nSELECT path, count() AS views FROM pageviews WHERE tenant_id = {{ String(tenant_id, required=True) }} GROUP BY path",
        )],
        "tenant_id",
        "Enforced",
        "",
    ),
    case(
        "required with a default inside defined()",
        &[(
            "ep",
            "%\nSELECT * FROM events WHERE 1\n{% if defined(org) %} AND org_id = {{String(org, 'none', required=True)}} {% end %}",
        )],
        "org",
        "Enforced",
        "",
    ),
];

#[test]
fn required_params_are_enforced() {
    check(REQUIRED_PARAMS_ARE_ENFORCED);
    let guarded = pipe(&[(
        "ep",
        "%\nSELECT * FROM events WHERE 1\n{% if defined(org) %} AND org_id = {{String(org, 'none', required=True)}} {% end %}",
    )]);
    let distrusting = Assumptions { required_refuses_missing: false };
    assert_eq!(judge_with(&guarded, &["org"], distrusting)[0].1, Verdict::Optional);
}

const DEFINED_GUARDS_TRUTHINESS_AND_DEFAULTS_ARE_OPTIONAL: &[Case] = &[
    case(
        "whole select per branch",
        &[(
            "ep",
            "%\n{% if defined(org) %} SELECT * FROM events WHERE org_id = {{String(org)}} {% else %} SELECT * FROM events {% end %}",
        )],
        "org",
        "Optional",
        "",
    ),
    case(
        "conditional expression",
        &[("ep", "%\nSELECT * FROM events WHERE org_id = {{ String(org) if defined(org) else 'public' }}")],
        "org",
        "Optional",
        "",
    ),
    case(
        "defined guard",
        &[(
            "ep",
            "%\nSELECT * FROM events WHERE 1 = 1\n{% if defined(org) %}\n  AND org_id = {{String(org)}}\n{% end %}",
        )],
        "org",
        "Optional",
        "",
    ),
    case(
        "truthiness guard",
        &[("ep", "%\nSELECT * FROM events\n{% if org %} WHERE org_id = {{String(org)}} {% end %}")],
        "org",
        "Optional",
        "",
    ),
    case(
        "default value",
        &[("ep", "%\nSELECT * FROM events WHERE org_id = {{String(org, 'acme')}}")],
        "org",
        "Optional",
        "",
    ),
    case(
        "set default",
        &[(
            "ep",
            "%\n{% if not defined(org) %}{% set org = 'public' %}{% end %}\nSELECT * FROM events WHERE org_id = {{String(org)}}",
        )],
        "org",
        "Optional",
        "",
    ),
    case(
        "defined with else without filter",
        &[(
            "ep",
            "%\nSELECT * FROM events\n{% if defined(org) %} WHERE org_id = {{String(org)}} {% else %} WHERE 1 {% end %}",
        )],
        "org",
        "Optional",
        "",
    ),
    case(
        "optional source by branch",
        &[
            ("by_org", EVENTS_BY_ORG),
            ("ep", "%\nSELECT * FROM {% if defined(org) %} by_org {% else %} events {% end %}"),
        ],
        "org",
        "Optional",
        "",
    ),
];

#[test]
fn defined_guards_truthiness_and_defaults_are_optional() {
    check(DEFINED_GUARDS_TRUTHINESS_AND_DEFAULTS_ARE_OPTIONAL);
}

const BRANCHES_THAT_ALL_FILTER_OR_REFUSE_ARE_ENFORCED: &[Case] = &[
    case(
        "condition set once, inserted later",
        &[("ep", "%\n{% set cond = sql_and(org_id=String(org)) %}\nSELECT * FROM events WHERE {{cond}}")],
        "org",
        "Enforced",
        "",
    ),
    case(
        "filter in both branches",
        &[(
            "ep",
            "%\nSELECT * FROM events\n{% if defined(day) %}\n WHERE org_id = {{String(org)}} AND toDate(ts) = {{Date(day)}}\n{% else %}\n WHERE org_id = {{String(org)}}\n{% end %}",
        )],
        "org",
        "Enforced",
        "",
    ),
    case(
        "error when missing",
        &[(
            "ep",
            "%\n{% if not defined(org) %}\n  {{ error('org is required', 400) }}\n{% end %}\nSELECT * FROM events WHERE org_id = {{String(org, 'x')}}",
        )],
        "org",
        "Enforced",
        "",
    ),
    case(
        "custom error in else",
        &[(
            "ep",
            "%\nSELECT * FROM events\n{% if defined(org) %} WHERE org_id = {{String(org)}}\n{% elif defined(admin) %} WHERE {{Int8(admin)}} = 1 AND org_id = {{String(org)}}\n{% else %} {{ custom_error({'error': 'org required', 'code': 403}) }} {% end %}",
        )],
        "org",
        "Enforced",
        "",
    ),
    case(
        "nested ifs on other params",
        &[(
            "ep",
            "%\nSELECT * FROM events WHERE org_id = {{String(org)}}\n{% if defined(a) %} AND a = {{String(a)}} {% if defined(b) %} AND b = {{Int32(b)}} {% end %}{% end %}\n{% for k in split_to_array(keys, '') %} AND has(tags, {{k}}) {% end %}",
        )],
        "org",
        "Enforced",
        "",
    ),
];

#[test]
fn branches_that_all_filter_or_refuse_are_enforced() {
    check(BRANCHES_THAT_ALL_FILTER_OR_REFUSE_ARE_ENFORCED);
}

const A_FILTER_ON_SOME_BRANCHES_ONLY_IS_UNKNOWN: &[Case] = &[
    case(
        "branch on another param",
        &[("ep", "%\nSELECT * FROM events\n{% if defined(day) %} WHERE org_id = {{String(org)}} {% end %}")],
        "org",
        "Unknown",
        "some template paths only",
    ),
    case(
        "and with another param",
        &[(
            "ep",
            "%\nSELECT * FROM events WHERE 1\n{% if defined(org) and defined(day) %} AND org_id = {{String(org)}} {% end %}",
        )],
        "org",
        "Unknown",
        "some template paths only",
    ),
];

#[test]
fn a_filter_on_some_branches_only_is_unknown() {
    check(A_FILTER_ON_SOME_BRANCHES_ONLY_IS_UNKNOWN);
}

const UPSTREAM_NODES_FILTER_WHEN_EVERY_SOURCE_PATH_DOES: &[Case] = &[
    case(
        "filtered scalar subqueries in the SELECT list and the WHERE",
        &[(
            "ep",
            "%\nSELECT (SELECT name FROM orgs WHERE id = {{String(org)}}) AS org_name, count() FROM events \
             WHERE org_id = {{String(org)}} AND kind IN (SELECT kind FROM kinds) GROUP BY org_name",
        )],
        "org",
        "Enforced",
        "",
    ),
    case(
        "filtered upstream node",
        &[("by_org", EVENTS_BY_ORG), ("ep", "SELECT pathname, count() FROM by_org GROUP BY pathname")],
        "org",
        "Enforced",
        "",
    ),
    case(
        "two levels and a cte",
        &[
            ("by_org", EVENTS_BY_ORG),
            ("daily", "SELECT toDate(ts) d, count() c FROM by_org GROUP BY d"),
            (
                "ep",
                "WITH recent AS (SELECT * FROM daily WHERE d > today() - 7) SELECT * FROM recent ORDER BY d",
            ),
        ],
        "org",
        "Enforced",
        "",
    ),
    case(
        "subquery in from",
        &[("ep", "%\nSELECT count() FROM (SELECT * FROM events WHERE org_id = {{String(org)}}) AS t")],
        "org",
        "Enforced",
        "",
    ),
    case(
        "union of filtered nodes",
        &[
            ("a", EVENTS_BY_ORG),
            ("b", "%\nSELECT * FROM archive WHERE org_id = {{String(org)}}"),
            ("ep", "SELECT * FROM a UNION ALL SELECT * FROM b"),
        ],
        "org",
        "Enforced",
        "",
    ),
    case(
        "join with the endpoint's own filter",
        &[(
            "ep",
            "%\nSELECT * FROM events e JOIN orgs o ON e.org_id = o.id WHERE e.org_id = {{String(org)}}",
        )],
        "org",
        "Enforced",
        "",
    ),
    case(
        "optional upstream",
        &[
            (
                "by_org",
                "%\nSELECT * FROM events {% if defined(org) %} WHERE org_id = {{String(org)}} {% end %}",
            ),
            ("ep", "SELECT * FROM by_org"),
        ],
        "org",
        "Optional",
        "",
    ),
];

#[test]
fn upstream_nodes_filter_when_every_source_path_does() {
    check(UPSTREAM_NODES_FILTER_WHEN_EVERY_SOURCE_PATH_DOES);
}

const AN_UNFILTERED_UNION_OR_JOIN_PARTNER_BREAKS_ENFORCEMENT: &[Case] = &[
    case(
        "a total over every tenant in the SELECT list",
        &[(
            "ep",
            "%\nSELECT count() * 100 / (SELECT count() FROM events) AS share FROM events WHERE org_id = {{String(org)}}",
        )],
        "org",
        "Unknown",
        "reads `events` without a filter",
    ),
    case(
        "comma join",
        &[("by_org", EVENTS_BY_ORG), ("ep", "SELECT * FROM by_org, events")],
        "org",
        "Unknown",
        "reads `events` without a filter on `org`",
    ),
    case(
        "union inside a subquery",
        &[(
            "ep",
            "%\nSELECT * FROM (SELECT * FROM a WHERE org_id = {{String(org)}} UNION ALL SELECT * FROM b)",
        )],
        "org",
        "Unknown",
        "reads `b` without a filter",
    ),
    case(
        "union all with an unfiltered node",
        &[
            ("by_org", EVENTS_BY_ORG),
            ("everyone", "SELECT * FROM events"),
            ("ep", "SELECT * FROM by_org UNION ALL SELECT * FROM everyone"),
        ],
        "org",
        "Unknown",
        "not every row it returns",
    ),
    case(
        "join with an unfiltered data source",
        &[("by_org", EVENTS_BY_ORG), ("ep", "SELECT * FROM by_org f JOIN dims d ON f.k = d.k")],
        "org",
        "Unknown",
        "reads `dims` without a filter",
    ),
    case(
        "only inside an IN subquery",
        &[(
            "ep",
            "%\nSELECT * FROM events WHERE session_id IN (SELECT session_id FROM sessions WHERE org_id = {{String(org)}})",
        )],
        "org",
        "Unknown",
        "not every row it returns",
    ),
    case(
        "filter in a node the endpoint does not read",
        &[("by_org", EVENTS_BY_ORG), ("ep", "SELECT * FROM events")],
        "org",
        "Unused",
        "",
    ),
];

#[test]
fn an_unfiltered_union_or_join_partner_breaks_enforcement() {
    check(AN_UNFILTERED_UNION_OR_JOIN_PARTNER_BREAKS_ENFORCEMENT);
}

const MENTIONS_OUTSIDE_FILTERS_ARE_UNUSED: &[Case] = &[
    case(
        "sql comment",
        &[("ep", "%\nSELECT * FROM events -- WHERE org_id = {{String(org)}}\n/* AND org_id = {{org}} */")],
        "org",
        "Unused",
        "",
    ),
    case(
        "string literal",
        &[(
            "ep",
            "%\nSELECT 'org' AS label, * FROM events WHERE kind = 'org_id = org' OR note = 'String(org)'",
        )],
        "org",
        "Unused",
        "",
    ),
    case(
        "template comment",
        &[("ep", "%\nSELECT * FROM events {# WHERE org_id = {{String(org)}} #}")],
        "org",
        "Unused",
        "",
    ),
    case(
        "select list",
        &[(
            "ep",
            "%\nSELECT {{String(org)}} AS org, count() FROM events GROUP BY {{columns(group_by, 'day')}}",
        )],
        "org",
        "Unused",
        "",
    ),
    case(
        "columns",
        &[("ep", "%\nSELECT {{columns(cols, 'a,b')}} FROM events ORDER BY {{column(sort, 'a')}}")],
        "cols",
        "Unused",
        "",
    ),
    case("not mentioned", &[("ep", "SELECT * FROM events")], "org", "Unused", ""),
    case(
        "plain sql, not a template",
        &[("ep", "SELECT * FROM events WHERE org_id = {{String(org)}}")],
        "org",
        "Unused",
        "",
    ),
];

#[test]
fn mentions_outside_filters_are_unused() {
    check(MENTIONS_OUTSIDE_FILTERS_ARE_UNUSED);
}

const SQL_AND_COUNTS_FOR_EACH_PARAM_IT_NAMES: &[Case] = &[
    case(
        "sql_and typed without default",
        &[(
            "ep",
            "%\nSELECT * FROM events WHERE {{sql_and(org_id=String(org), country__in=Array(countries, 'String', defined=False))}}",
        )],
        "org",
        "Enforced",
        "",
    ),
    case(
        "sql_and optional array",
        &[(
            "ep",
            "%\nSELECT * FROM events WHERE {{sql_and(org_id=String(org), country__in=Array(countries, 'String', defined=False))}}",
        )],
        "countries",
        "Optional",
        "",
    ),
    case(
        "sql_and bare name",
        &[("ep", "%\nSELECT * FROM events WHERE {{sql_and(org_id=org)}}")],
        "org",
        "Optional",
        "",
    ),
    case(
        "sql_and negated",
        &[("ep", "%\nSELECT * FROM events WHERE {{sql_and(org_id__not_in=Array(org, 'String'))}}")],
        "org",
        "Unknown",
        "negated or range",
    ),
];

#[test]
fn sql_and_counts_for_each_param_it_names() {
    check(SQL_AND_COUNTS_FOR_EACH_PARAM_IT_NAMES);
}

const LOOSE_USES_IN_FILTERS_ARE_UNKNOWN: &[Case] = &[
    case(
        "not around the condition",
        &[("ep", "%\nSELECT * FROM events WHERE NOT (org_id = {{String(org)}})")],
        "org",
        "Unknown",
        "under a NOT",
    ),
    case(
        "case",
        &[(
            "ep",
            "%\nSELECT * FROM events WHERE CASE WHEN is_admin THEN 1 ELSE org_id = {{String(org)}} END",
        )],
        "org",
        "Unknown",
        "inside a CASE",
    ),
    case(
        "or added by another branch",
        &[(
            "ep",
            "%\nSELECT * FROM events WHERE org_id = {{String(org)}} {% if defined(all) %} OR 1 {% end %}",
        )],
        "org",
        "Unknown",
        "under an OR",
    ),
    case(
        "inside a function that need not pin",
        &[("ep", "%\nSELECT * FROM events WHERE length(arrayFilter(x -> x = {{String(org)}}, tags)) >= 0")],
        "org",
        "Unknown",
        "inside length()",
    ),
    case(
        "a compared condition",
        &[("ep", "%\nSELECT * FROM events WHERE (org_id = {{String(org)}}) = 0")],
        "org",
        "Unknown",
        "in a filter",
    ),
    case(
        "a chained comparison",
        &[("ep", "%\nSELECT * FROM events WHERE org_id = {{String(org)}} = 0")],
        "org",
        "Unknown",
        "next to `=`",
    ),
    case(
        "or",
        &[("ep", "%\nSELECT * FROM events WHERE org_id = {{String(org)}} OR is_public = 1")],
        "org",
        "Unknown",
        "under an OR",
    ),
    case(
        "not equal",
        &[("ep", "%\nSELECT * FROM events WHERE org_id != {{String(org)}}")],
        "org",
        "Unknown",
        "next to `!=`",
    ),
    case(
        "not in",
        &[("ep", "%\nSELECT * FROM events WHERE org_id NOT IN {{Array(org, 'String')}}")],
        "org",
        "Unknown",
        "NOT IN",
    ),
    case(
        "outer join",
        &[(
            "ep",
            "%\nSELECT * FROM events LEFT JOIN orgs ON orgs.id = events.org_id AND orgs.slug = {{String(org)}}",
        )],
        "org",
        "Unknown",
        "outer join",
    ),
    case(
        "column chosen at request time",
        &[("ep", "%\nSELECT * FROM events WHERE {{column(col, 'org_id')}} = {{String(org)}}")],
        "org",
        "Unknown",
        "another template value",
    ),
    case(
        "if function",
        &[("ep", "%\nSELECT * FROM events WHERE if(is_admin, 1, org_id = {{String(org)}})")],
        "org",
        "Unknown",
        "inside if()",
    ),
];

#[test]
fn loose_uses_in_filters_are_unknown() {
    check(LOOSE_USES_IN_FILTERS_ARE_UNKNOWN);
}

const NOT_WHOLE: &str = "not a whole AND-ed condition";

const A_VALUE_NOT_COMPARED_WITH_A_COLUMN_AS_A_WHOLE_CONJUNCT_IS_UNKNOWN: &[Case] = &[
    case(
        "the value in a list of literals",
        &[(
            "ep",
            "%\nSELECT org, amount FROM tenant_events WHERE {{String(org)}} IN ('acme', 'globex', 'initech')",
        )],
        "org",
        "Unknown",
        NOT_WHOLE,
    ),
    case(
        "the value compared with a literal",
        &[("ep", "%\nSELECT org, amount FROM tenant_events WHERE {{String(org)}} = 'acme'")],
        "org",
        "Unknown",
        NOT_WHOLE,
    ),
    case(
        "another org listed beside the value",
        &[("ep", "%\nSELECT org, amount FROM tenant_events WHERE org IN ({{String(org)}}, 'globex')")],
        "org",
        "Unknown",
        NOT_WHOLE,
    ),
    case(
        "another org in an array beside the value",
        &[("ep", "%\nSELECT org, amount FROM tenant_events WHERE org IN [{{String(org)}}, 'globex']")],
        "org",
        "Unknown",
        NOT_WHOLE,
    ),
    case(
        "has() of an array with other orgs",
        &[("ep", "%\nSELECT org, amount FROM tenant_events WHERE has(['initech', {{String(org)}}], org)")],
        "org",
        "Unknown",
        NOT_WHOLE,
    ),
    case(
        "equals() compared again",
        &[("ep", "%\nSELECT org, amount FROM tenant_events WHERE equals(org, {{String(org)}}) = 0")],
        "org",
        "Unknown",
        NOT_WHOLE,
    ),
    case(
        "the comparison tested with IN",
        &[("ep", "%\nSELECT org, amount FROM tenant_events WHERE org = {{String(org)}} IN (0, 1)")],
        "org",
        "Unknown",
        NOT_WHOLE,
    ),
    case(
        "the comparison in a ternary",
        &[("ep", "%\nSELECT org, amount FROM tenant_events WHERE org = {{String(org)}} ? 1 : 1")],
        "org",
        "Unknown",
        NOT_WHOLE,
    ),
    case(
        "the comparison cast and compared",
        &[("ep", "%\nSELECT org, amount FROM tenant_events WHERE org = {{String(org)}}::String = '0'")],
        "org",
        "Unknown",
        NOT_WHOLE,
    ),
    case(
        "the comparison inside BETWEEN",
        &[(
            "ep",
            "%\nSELECT org, amount FROM tenant_events WHERE amount BETWEEN 0 AND org = {{String(org)}}",
        )],
        "org",
        "Unknown",
        NOT_WHOLE,
    ),
    case(
        "a tuple of conditions",
        &[("ep", "%\nSELECT org, amount FROM tenant_events WHERE (1, org = {{String(org)}}).2")],
        "org",
        "Unknown",
        NOT_WHOLE,
    ),
    case(
        "sql_and() compared",
        &[("ep", "%\nSELECT org, amount FROM tenant_events WHERE {{sql_and(org=String(org))}} = 0")],
        "org",
        "Unknown",
        NOT_WHOLE,
    ),
    case(
        "the value alias shadows the column",
        &[(
            "ep",
            "%\nSELECT {{String(org)}} AS org, user, event, amount FROM tenant_events WHERE org = {{String(org)}}",
        )],
        "org",
        "Unknown",
        "alias",
    ),
    case(
        "an alias without AS",
        &[("ep", "%\nSELECT 'acme' org, amount FROM tenant_events WHERE org = {{String(org)}}")],
        "org",
        "Unknown",
        "alias",
    ),
    case(
        "a WITH alias",
        &[("ep", "%\nWITH 'acme' AS org SELECT org, amount FROM tenant_events WHERE org = {{String(org)}}")],
        "org",
        "Unknown",
        "alias",
    ),
    case(
        "an alias chosen at request time",
        &[("ep", "%\nSELECT 1 AS {{symbol(name, 'x')}} FROM tenant_events WHERE org = {{String(org)}}")],
        "org",
        "Unknown",
        "alias",
    ),
    case(
        "an upstream node computes the column",
        &[
            ("n0", "%\nSELECT {{String(org)}} AS org, amount FROM tenant_events"),
            ("ep", "%\nSELECT * FROM (SELECT * FROM n0) WHERE org = {{String(org)}}"),
        ],
        "org",
        "Unknown",
        "computes as an alias",
    ),
];

#[test]
fn a_value_not_compared_with_a_column_as_a_whole_conjunct_is_unknown() {
    check(A_VALUE_NOT_COMPARED_WITH_A_COLUMN_AS_A_WHOLE_CONJUNCT_IS_UNKNOWN);
}

const WHOLE_CONJUNCTS_ON_A_COLUMN_ARE_ENFORCED: &[Case] = &[
    case(
        "value first",
        &[("ep", "%\nSELECT * FROM events WHERE {{String(org)}} = org_id AND x = 1")],
        "org",
        "Enforced",
        "",
    ),
    case(
        "in parentheses, among other groups",
        &[("ep", "%\nSELECT * FROM events WHERE (a = 1 OR b = 2) AND ((e.org_id = {{String(org)}}) AND c)")],
        "org",
        "Enforced",
        "",
    ),
    case(
        "equals and has with the value alone",
        &[(
            "ep",
            "%\nSELECT * FROM events WHERE equals({{String(org)}}, org_id) AND has({{Array(org, 'String')}}, org_id)",
        )],
        "org",
        "Enforced",
        "",
    ),
    case(
        "the column under its own name",
        &[(
            "ep",
            "%\nSELECT org AS org, t.org_id org_id, count() c FROM events t WHERE org = {{String(org)}} AND org_id = {{String(org)}} GROUP BY org, org_id",
        )],
        "org",
        "Enforced",
        "",
    ),
    case(
        "an upstream node passing the column through",
        &[
            ("n0", "SELECT org, amount * 2 AS doubled FROM tenant_events"),
            ("ep", "%\nSELECT * FROM n0 WHERE org = {{String(org)}}"),
        ],
        "org",
        "Enforced",
        "",
    ),
];

#[test]
fn whole_conjuncts_on_a_column_are_enforced() {
    check(WHOLE_CONJUNCTS_ON_A_COLUMN_ARE_ENFORCED);
}

const WHAT_IT_CANNOT_READ_IS_UNKNOWN_WITH_WHY: &[Case] = &[
    case(
        "table name glued from branches",
        &[(
            "ep",
            "%\nSELECT * FROM events_{% if defined(raw) %}raw{% else %}clean{% end %} WHERE org_id = {{String(org)}}",
        )],
        "org",
        "Unknown",
        "assembled from template pieces",
    ),
    case(
        "cte reading itself",
        &[("ep", "WITH a AS (SELECT * FROM a) SELECT * FROM a")],
        "org",
        "Unknown",
        "a CTE reads itself",
    ),
    case(
        "symbol table",
        &[("ep", "%\nSELECT * FROM {{symbol(table_name, 'events')}} WHERE org_id = {{String(org)}}")],
        "org",
        "Unknown",
        "table named at request time",
    ),
    case(
        "table() in FROM",
        &[("ep", "%\nSELECT * FROM {{TABLE(source)}} WHERE org_id = {{String(org)}}")],
        "org",
        "Unknown",
        "any SQL",
    ),
    case(
        "table() anywhere",
        &[("ep", "%\nSELECT {{table(col)}} FROM events WHERE org_id = {{String(org)}}")],
        "org",
        "Unknown",
        "any SQL",
    ),
    case(
        "cycle",
        &[("a", "SELECT * FROM b"), ("b", "SELECT * FROM a"), ("ep", "SELECT * FROM a")],
        "org",
        "Unknown",
        "cycle",
    ),
    case(
        "unbalanced if",
        &[("ep", "%\nSELECT * FROM events\n{% if defined(org) %} WHERE org_id = {{String(org)}}")],
        "org",
        "Unknown",
        "has no {% end %}",
    ),
    case(
        "unknown statement",
        &[("ep", "%\n{% while x %}{% end %}SELECT 1")],
        "org",
        "Unknown",
        "{% while %} is not analysed",
    ),
    case(
        "value inside a literal",
        &[("ep", "%\nSELECT * FROM events WHERE org_id = '{{String(org)}}'")],
        "org",
        "Unknown",
        "inside a SQL string literal",
    ),
    case("not a select", &[("ep", "%\nDESCRIBE events")], "org", "Unknown", "not a SELECT query"),
    case("garbage", &[("ep", "%\n}}{%%}{{ ((( ]]")], "org", "Unknown", "node `ep`"),
    case(
        "a broken upstream node",
        &[("a", "%\nSELECT * FROM events WHERE org_id = {{String(org}}"), ("ep", "SELECT * FROM a")],
        "org",
        "Unknown",
        "node `a`: line 2",
    ),
    case(
        "always fails",
        &[("ep", "%\nSELECT {{error('maintenance')}} FROM events")],
        "org",
        "Unknown",
        "fails the request",
    ),
    case("bad param name", &[("ep", EVENTS_BY_ORG)], "org-id", "Unknown", "not a template parameter name"),
];

#[test]
fn what_it_cannot_read_is_unknown_with_why() {
    check(WHAT_IT_CANNOT_READ_IS_UNKNOWN_WITH_WHY);
}

#[test]
fn a_broken_node_the_endpoint_does_not_read_is_ignored() {
    let nodes = [("draft", "%\n{% if %}"), ("ep", EVENTS_BY_ORG)];
    assert_eq!(verdict_of(&nodes, "org"), Verdict::Enforced);
}

#[test]
fn limits_are_refused_with_why() {
    let mut large = pipe(&[("ep", EVENTS_BY_ORG)]);
    large.nodes = vec![large.nodes[0].clone(); MAX_PIPE_NODES + 1];
    let Verdict::Unknown(reason) = &judge(&large, &["org"])[0].1 else { panic!("too many nodes") };
    assert!(reason.contains("at most 256"), "{reason}");

    let huge_sql = format!(
        "%\nSELECT * FROM events WHERE org_id = {{{{String(org)}}}} {}",
        " ".repeat(MAX_NODE_SQL_BYTES)
    );
    let huge = pipe(&[("ep", huge_sql.as_str())]);
    let Verdict::Unknown(reason) = &judge(&huge, &["org"])[0].1 else { panic!("too much sql") };
    assert!(reason.contains("bytes of SQL"), "{reason}");

    let mut lost = pipe(&[("ep", EVENTS_BY_ORG)]);
    lost.endpoint = Some("t_nowhere".to_owned());
    let Verdict::Unknown(reason) = &judge(&lost, &["org"])[0].1 else { panic!("lost endpoint") };
    assert!(reason.contains("names none of the pipe's nodes"), "{reason}");

    let empty = PipeDescription::default();
    assert!(matches!(&judge(&empty, &["org"])[0].1, Verdict::Unknown(reason) if reason.contains("no nodes")));

    let many_branches: String =
        (0..40).map(|at| format!("{{% if defined(p{at}) %}} AND c{at} = 1 {{% end %}}")).collect();
    let branchy = format!("%\nSELECT * FROM events WHERE org_id = {{{{String(org)}}}} {many_branches}");
    assert_eq!(verdict_of(&[("ep", branchy.as_str())], "org"), Verdict::Enforced);

    let optional_filters = |count: usize| -> String {
        let blocks: String = (0..count)
            .map(|at| format!("{{% if defined(p{at}) %}} AND c{at} = {{{{String(p{at})}}}} {{% end %}}\n"))
            .collect();
        format!("%\nSELECT * FROM events WHERE org_id = {{{{String(org)}}}}\n{blocks}")
    };
    assert_eq!(verdict_of(&[("ep", optional_filters(600).as_str())], "org"), Verdict::Enforced);
    let Verdict::Unknown(reason) = verdict_of(&[("ep", optional_filters(1500).as_str())], "org") else {
        panic!("1500 blocks")
    };
    assert!(reason.contains("wait for the SQL after them"), "{reason}");
}

#[test]
fn deep_chains_are_refused_not_overflowed() {
    let names: Vec<String> = (0..200).map(|at| format!("n{at}")).collect();
    let sqls: Vec<String> = (0..200)
        .map(|at| if at == 0 { EVENTS_BY_ORG.to_owned() } else { format!("SELECT * FROM n{}", at - 1) })
        .collect();
    let nodes: Vec<(&str, &str)> =
        names.iter().zip(&sqls).map(|(name, sql)| (name.as_str(), sql.as_str())).collect();
    let Verdict::Unknown(reason) = verdict_of(&nodes, "org") else { panic!("a chain of 200 nodes") };
    assert!(reason.contains("nest more than"), "{reason}");

    let nested = format!(
        "%\n{}SELECT * FROM events WHERE org_id = {{{{String(org)}}}}{}",
        "SELECT * FROM (".repeat(120),
        ")".repeat(120)
    );
    assert!(matches!(verdict_of(&[("ep", nested.as_str())], "org"), Verdict::Unknown(_)));

    let chain = format!(
        "%\nSELECT * FROM events WHERE 1 {{% if {} %}} AND 1 {{% end %}}",
        "a or ".repeat(50_000) + "b"
    );
    let Verdict::Unknown(reason) = verdict_of(&[("ep", chain.as_str())], "org") else {
        panic!("a long or chain")
    };
    assert!(reason.contains("nests deeper"), "{reason}");
}

#[test]
fn judges_every_param_in_order() {
    let nodes = pipe(&[(
        "ep",
        "%\nSELECT * FROM events WHERE org_id = {{String(org)}} {% if defined(team) %} AND team = {{String(team)}} {% end %}",
    )]);
    let verdicts = judge(&nodes, &["team", "org", "user"]);
    let labels: Vec<(&str, &str)> =
        verdicts.iter().map(|(param, verdict)| (param.as_str(), verdict.as_str())).collect();
    assert_eq!(labels, vec![("team", "Optional"), ("org", "Enforced"), ("user", "Unused")]);
}

#[test]
fn reads_a_description_as_tinybird_sends_it() {
    let json = r#"{
        "id": "t_8a1b", "name": "top_pages", "description": "Top pages per tenant", "type": "endpoint",
        "endpoint": "t_ep_2", "created_at": "2025-01-01 00:00:00", "updated_at": "2025-01-02 00:00:00",
        "parent": null, "url": "https://api.tinybird.co/v0/pipes/top_pages.json",
        "nodes": [
            {"id": "t_n_1", "name": "by_org", "description": null, "materialized": null, "cluster": null,
             "tags": {}, "created_at": "2025-01-01 00:00:00", "updated_at": "2025-01-01 00:00:00",
             "version": 0, "project": null, "result": null, "ignore_sql_errors": false,
             "node_type": "standard", "dependencies": ["page_views"],
             "params": [{"name": "org", "type": "String", "required": true}],
             "sql": "%\nSELECT * FROM page_views WHERE org_id = {{ String(org, required=True) }}"},
            {"id": "t_ep_2", "name": "endpoint", "description": null, "materialized": null,
             "node_type": "endpoint", "dependencies": ["by_org"], "params": [],
             "sql": "SELECT pathname, count() AS views FROM by_org GROUP BY pathname ORDER BY views DESC"},
            {"id": "t_n_3", "name": "scratch", "sql": "SELECT * FROM page_views", "dependencies": null}
        ]
    }"#;
    let described: PipeDescription = serde_json::from_str(json).unwrap();
    assert_eq!(described.endpoint_node().map(|node| node.name.as_str()), Some("endpoint"));
    assert_eq!(described.nodes[0].dependencies, vec!["page_views".to_owned()]);
    assert_eq!(judge(&described, &["org"]), vec![("org".to_owned(), Verdict::Enforced)]);

    let mut by_type = described.clone();
    by_type.endpoint = None;
    assert_eq!(by_type.endpoint_node().map(|node| node.name.as_str()), Some("endpoint"));
    by_type.nodes[1].node_type = None;
    assert_eq!(by_type.endpoint_node().map(|node| node.name.as_str()), Some("scratch"));
    assert_eq!(judge(&by_type, &["org"])[0].1, Verdict::Unused);
}

#[test]
fn labels_are_the_variant_names() {
    let labels: Vec<&str> =
        [Verdict::Enforced, Verdict::Optional, Verdict::Unused, Verdict::Unknown("x".to_owned())]
            .iter()
            .map(Verdict::as_str)
            .collect();
    assert_eq!(labels, ["Enforced", "Optional", "Unused", "Unknown"]);
}

/// A small deterministic generator (xorshift64*), so the fuzz test needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(bound.max(1)).unwrap()).unwrap()
    }
}

/// Pieces that matter to the lexers, spliced into the corpus.
const SHARDS: &[&str] = &[
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    "{% if defined(org) %}",
    "{% else %}",
    "{% end %}",
    "{% for x in y %}",
    "'",
    "\"",
    "`",
    "(",
    ")",
    "[",
    "]",
    "--",
    "\n",
    "/*",
    "*/",
    "$$",
    "SELECT",
    "FROM",
    "WHERE",
    "UNION ALL",
    "JOIN",
    "ON",
    "OR",
    "NOT",
    "String(org)",
    "{{String(org)}}",
    "error('x')",
    "%",
    "\\",
    ",",
    ".",
    "é",
    "\u{0}",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut out = text.to_owned();
    for _ in 0..=rng.below(4) {
        let boundaries: Vec<usize> = (0..=out.len()).filter(|at| out.is_char_boundary(*at)).collect();
        let at = boundaries[rng.below(boundaries.len())];
        match rng.below(3) {
            0 => out.truncate(at),
            1 => out.insert_str(at, SHARDS[rng.below(SHARDS.len())]),
            _ => {
                let end = boundaries[rng.below(boundaries.len())].max(at);
                out.replace_range(at..end, "");
            }
        }
    }
    out
}

fn corpus() -> Vec<&'static str> {
    let mut sqls = vec![EVENTS_BY_ORG];
    let all: &[&[Case]] = &[
        TYPED_PARAMS_IN_A_FILTER_ARE_ENFORCED,
        REQUIRED_PARAMS_ARE_ENFORCED,
        DEFINED_GUARDS_TRUTHINESS_AND_DEFAULTS_ARE_OPTIONAL,
        BRANCHES_THAT_ALL_FILTER_OR_REFUSE_ARE_ENFORCED,
        A_FILTER_ON_SOME_BRANCHES_ONLY_IS_UNKNOWN,
        UPSTREAM_NODES_FILTER_WHEN_EVERY_SOURCE_PATH_DOES,
        AN_UNFILTERED_UNION_OR_JOIN_PARTNER_BREAKS_ENFORCEMENT,
        MENTIONS_OUTSIDE_FILTERS_ARE_UNUSED,
        SQL_AND_COUNTS_FOR_EACH_PARAM_IT_NAMES,
        LOOSE_USES_IN_FILTERS_ARE_UNKNOWN,
        WHAT_IT_CANNOT_READ_IS_UNKNOWN_WITH_WHY,
        A_VALUE_NOT_COMPARED_WITH_A_COLUMN_AS_A_WHOLE_CONJUNCT_IS_UNKNOWN,
        WHOLE_CONJUNCTS_ON_A_COLUMN_ARE_ENFORCED,
    ];
    for cases in all {
        sqls.extend(cases.iter().flat_map(|case| case.nodes.iter().map(|(_, sql)| *sql)));
    }
    sqls.extend([
        "%\nSELECT * FROM events WHERE 1 {% if defined(org) %} AND org_id = {{String(org)}} {% else %}{{error('x')}}{% end %}",
        "%\nWITH a AS (SELECT * FROM events WHERE org_id = {{String(org)}}) SELECT * FROM a UNION ALL SELECT * FROM b",
        "%\nSELECT {{columns(c, 'a')}} FROM events LEFT JOIN x USING (k) WHERE {{sql_and(org_id=org)}} -- {{org}}",
        "%\n{% set o = String(org, 'x') %}{% for k in split_to_array(ks, '') %}{% end %}SELECT * FROM (SELECT 1) WHERE x IN (SELECT 1 FROM t WHERE org = {{o}})",
    ]);
    sqls
}

#[test]
fn random_bytes_and_truncations_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let corpus = corpus();
    for round in 0..3000 {
        let sql = if round % 5 == 0 {
            let bytes: Vec<u8> =
                (0..rng.below(200)).map(|_| u8::try_from(rng.next() % 256).unwrap()).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            let picked = corpus[rng.below(corpus.len())];
            mutate(&mut rng, picked)
        };
        let picked = corpus[rng.below(corpus.len())];
        let upstream = mutate(&mut rng, picked);
        let nodes = pipe(&[("by_org", upstream.as_str()), ("ep", sql.as_str())]);
        let verdicts = judge(&nodes, &["org", "ks"]);
        assert_eq!(verdicts.len(), 2);
        for (_, verdict) in verdicts {
            if let Verdict::Unknown(reason) = verdict {
                assert!(reason.chars().count() <= MAX_REASON_CHARS, "{reason}");
                assert!(!reason.is_empty());
            }
        }
    }
}

#[test]
fn every_truncation_of_the_corpus_is_judged() {
    for sql in corpus() {
        for end in (0..=sql.len()).filter(|end| sql.is_char_boundary(*end)) {
            let verdicts = judge(&pipe(&[("ep", &sql[..end])]), &["org"]);
            assert_eq!(verdicts.len(), 1, "{:?}", &sql[..end]);
        }
    }
}
