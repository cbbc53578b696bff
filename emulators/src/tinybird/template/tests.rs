//! The renderer against the behaviour of Tinybird's (`tinybird/sql_template.py`, whose doctests
//! several of these cases come from).

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

use super::{Template, TemplateError, render_node_sql};

fn params(value: &Json) -> BTreeMap<String, Json> {
    value.as_object().into_iter().flatten().map(|(name, value)| (name.clone(), value.clone())).collect()
}

fn render(text: &str, with: &Json) -> Result<String, TemplateError> {
    Template::parse(text)?.render(&params(with))
}

fn ok(text: &str, with: &Json) -> String {
    render(text, with).unwrap_or_else(|error| panic!("{text}: {error:?}"))
}

fn message(text: &str, with: &Json) -> String {
    render(text, with).expect_err(text).message
}

#[test]
fn text_comments_and_literal_braces_pass_through() {
    assert_eq!(ok("SELECT 1 {# a comment #}FROM t", &json!({})), "SELECT 1 FROM t");
    assert_eq!(ok("SELECT '{{!x}}', '{%!y%}'", &json!({})), "SELECT '{{x}}', '{%y%}'");
    assert_eq!(ok("SELECT\n  1\n", &json!({})), "SELECT\n  1\n");
}

#[test]
fn only_sql_starting_with_percent_is_a_template() {
    let org = params(&json!({"org": "acme"}));
    assert_eq!(render_node_sql("%\nSELECT {{String(org)}}", &org).unwrap(), "\nSELECT 'acme'");
    assert_eq!(render_node_sql("SELECT {{String(org)}}", &org).unwrap(), "SELECT {{String(org)}}");
}

#[test]
fn strings_are_quoted_with_tinybirds_escaping() {
    assert_eq!(ok("{{String(org)}}", &json!({"org": "acme"})), "'acme'");
    assert_eq!(ok("{{org}}", &json!({"org": "acme"})), "'acme'");
    assert_eq!(ok("{{String(x)}}", &json!({"x": "';drop table users;"})), "'\\';drop table users;'");
    assert_eq!(ok("{{String(x)}}", &json!({"x": "a\\b\"c%d`e\nf"})), "'a\\\\b\\\"c\\%d\\`e\\nf'");
    assert_eq!(ok("{{String(x)}}", &json!({"x": 5})), "'5'");
    assert_eq!(ok("{{String(x)}}", &json!({"x": true})), "'True'");
    assert_eq!(ok("{{String(org, 'none')}}", &json!({})), "'none'");
}

#[test]
fn typed_integers_and_floats_are_checked_and_cast() {
    assert_eq!(ok("{{Int32(n)}}", &json!({"n": "+007"})), "toInt32('7')");
    assert_eq!(
        ok("{{UInt64(n)}}", &json!({"n": 18_446_744_073_709_551_615_u64})),
        "toUInt64('18446744073709551615')"
    );
    assert_eq!(ok("{{Int8(n)}}", &json!({"n": "-128"})), "toInt8('-128')");
    assert_eq!(ok("{{Int32(limit, 10)}}", &json!({})), "toInt32('10')");
    assert_eq!(ok("{{Int(limit, 10)}}", &json!({})), "10");
    let big = "57896044618658097711785492504343953926634992332820282019728792003956564819967";
    assert_eq!(ok("{{Int256(n)}}", &json!({"n": big})), format!("toInt256('{big}')"));
    for (text, value) in [
        ("{{Int32(n)}}", "non_int"),
        ("{{Int32(n)}}", "1.5"),
        ("{{Int8(n)}}", "128"),
        ("{{UInt8(n)}}", "-1"),
        ("{{UInt8(n)}}", "256"),
        ("{{Int256(n)}}", "57896044618658097711785492504343953926634992332820282019728792003956564819968"),
    ] {
        let error = render(text, &json!({"n": value})).unwrap_err();
        assert_eq!(error.status, 400);
        assert!(
            error.message.starts_with(&format!("Template Syntax Error: Error validating '{value}' to type")),
            "{error:?}"
        );
    }
    assert_eq!(ok("{{Float32(f)}}", &json!({"f": -1})), "toFloat32('-1.0')");
    assert_eq!(ok("{{Float64(f)}}", &json!({"f": "1e20"})), "toFloat64('1e+20')");
    assert_eq!(ok("{{Float64(f)}}", &json!({"f": "0.00001"})), "toFloat64('1e-05')");
    assert!(
        message("{{Float64(f)}}", &json!({"f": "1_000"}))
            .contains("Error validating '1_000' to type Float64")
    );
}

#[test]
fn dates_booleans_and_arrays() {
    assert_eq!(ok("{{Date(d)}}", &json!({"d": "2024-01-31"})), "'2024-01-31'");
    assert!(message("{{Date(d)}}", &json!({"d": "2024-01-31 10:00:00"})).contains("to type Date"));
    assert_eq!(ok("{{DateTime(d)}}", &json!({"d": "2018-09-07 23:55:00"})), "'2018-09-07 23:55:00'");
    assert_eq!(ok("{{DateTime64(d, '2020-09-09 10:10:10.000')}}", &json!({})), "'2020-09-09 10:10:10.000'");
    assert!(message("{{DateTime(d)}}", &json!({"d": "yesterday"})).contains("to type DateTime"));
    assert_eq!(
        ok(
            "{{Boolean(b)}} {{Boolean(c)}} {{Boolean(d)}} {{Boolean(e, True)}}",
            &json!({"b": "FALSE", "c": "yes", "d": "0"})
        ),
        "0 1 0 1"
    );
    assert_eq!(ok("{{Array(ids, 'Int32')}}", &json!({"ids": "1,2,3"})), "[1,2,3]");
    assert_eq!(ok("{{Array(tags)}}", &json!({"tags": "a,b'c"})), "['a','b\\'c']");
    assert_eq!(ok("{{Array(tags, 'String', 'x,y')}}", &json!({})), "['x','y']");
    assert_eq!(ok("{{Array(orgs, 'String')}}", &json!({"orgs": ["acme", "globex"]})), "['acme','globex']");
    assert_eq!(
        message("{{Array(ids, 'Int32')}}", &json!({"ids": "1,x"})),
        "Template Syntax Error: Error validating [1,x][1] (x) to type Int32"
    );
}

#[test]
fn defined_guards_branches_with_and_or_not_elif_else() {
    let text = "WHERE 1{% if defined(org) and not defined(user) %} AND org = {{String(org)}}\
                {% elif defined(user) or defined(team) %} AND user = {{String(user, 'x')}}\
                {% else %} AND 0{% end %}";
    assert_eq!(ok(text, &json!({"org": "acme"})), "WHERE 1 AND org = 'acme'");
    assert_eq!(ok(text, &json!({"org": "acme", "user": "u"})), "WHERE 1 AND user = 'u'");
    assert_eq!(ok(text, &json!({"team": "t"})), "WHERE 1 AND user = 'x'");
    assert_eq!(ok(text, &json!({})), "WHERE 1 AND 0");
    // A null value (a null fixed param) is not defined; an empty string is.
    assert_eq!(ok("{% if defined(org) %}yes{% else %}no{% end %}", &json!({"org": null})), "no");
    assert_eq!(ok("{% if defined(org) %}yes{% else %}no{% end %}", &json!({"org": ""})), "yes");
    assert_eq!(
        ok(
            "{% if org == 'acme' %}A{% end %}{% if Int32(n, 1) > 5 %}B{% end %}",
            &json!({"org": "acme", "n": "9"})
        ),
        "AB"
    );
    assert_eq!(
        ok("{% if org in ['a', 'b'] %}in{% end %}{% if org is None %}none{% end %}", &json!({"org": "b"})),
        "in"
    );
}

#[test]
fn a_missing_value_without_default_is_tinybirds_required_parameter_error() {
    let text = "SELECT * FROM t WHERE org = {{String(org, required=True)}} AND c = {{String(c, 'x')}} {% if defined(u) %}{{String(u)}}{% end %} AND n = {{Int32(n)}}";
    let error = render(text, &json!({"n": "1"})).unwrap_err();
    assert_eq!(error.status, 400);
    assert_eq!(
        error.message,
        "Template Syntax Error: Required parameter is not defined. Check the parameters org, u and n. \
         Please provide a value or set a default value in the pipe code."
    );
    assert_eq!(
        ok(text, &json!({"org": "acme", "n": "1"})),
        "SELECT * FROM t WHERE org = 'acme' AND c = 'x'  AND n = toInt32('1')"
    );
    assert_eq!(
        message("SELECT {{test}}", &json!({})),
        "Template Syntax Error: expression \"test\" evaluated to null"
    );
    assert_eq!(
        ok("{{sql_and(a=Int(a, defined=False), b=Int(b, defined=False))}}", &json!({"b": "2"})),
        "b = 2"
    );
}

#[test]
fn columns_column_and_sql_and() {
    assert_eq!(ok("SELECT {{columns(cols, 'a,b')}}", &json!({})), "SELECT `a`,`b`");
    assert_eq!(ok("SELECT {{columns(cols, 'a,b')}}", &json!({"cols": "x, y"})), "SELECT `x`,`y`");
    assert_eq!(ok("SELECT {{columns(cols, 'a', 'sum')}}", &json!({})), "SELECT sum(`a`) as a");
    assert_eq!(ok("SELECT {{column(c, 'a')}}", &json!({"c": "json.a"})), "SELECT `json`.`a`");
    assert_eq!(
        ok("SELECT {{column(c, 'a')}}", &json!({"c": "x` FROM secrets --\"y"})),
        "SELECT `x\\` FROM secrets --y`"
    );
    assert!(message("SELECT {{column(c)}}", &json!({})).contains("Missing column() default value"));
    assert!(
        message("SELECT {{columns(c, 'a')}}", &json!({"c": ["a"]})).contains("expects a String not an Array")
    );
    assert_eq!(
        ok(
            "WHERE {{sql_and(org=org, amount__gte=Int32(min, 0), event__in=Array(events), user=user)}}",
            &json!({"org": "acme", "events": "a,b"})
        ),
        "WHERE org = 'acme' and amount >= toInt32('0') and event in ['a','b']"
    );
    assert!(message("{{sql_and(a__like=x)}}", &json!({"x": "1"})).contains("operand like not supported"));
}

#[test]
fn error_fails_the_request_with_its_code() {
    let text = "{% if not defined(org) %}{{ error('org is required', 403) }}{% end %}SELECT 1";
    let error = render(text, &json!({})).unwrap_err();
    assert_eq!((error.status, error.message.as_str()), (403, "org is required"));
    assert_eq!(render("{{error('bad')}}", &json!({})).unwrap_err().status, 400);
    assert_eq!(ok(text, &json!({"org": "a"})), "SELECT 1");
}

#[test]
fn set_assigns_a_variable() {
    let text =
        "{% set limit = Int32(l, 5) + 1 %}{% set who = String(org, 'all') %}LIMIT {{limit}} -- {{who}}";
    assert_eq!(ok(text, &json!({})), "LIMIT 6 -- 'all'");
    assert_eq!(
        Template::parse(text).unwrap().params().iter().map(|param| param.name.as_str()).collect::<Vec<_>>(),
        ["l", "org"]
    );
}

#[test]
fn syntax_errors_and_limits() {
    assert_eq!(
        message("SELECT {% if defined(x) %} x, 1", &json!({})),
        "Missing {% end %} block for if at line 1"
    );
    assert!(message("SELECT 1 {% end %}", &json!({})).starts_with("Extra {% end %} block"));
    assert!(message("SELECT {{ 1", &json!({})).starts_with("Missing end expression }}"));
    assert_eq!(
        message("{{whatever(x)}}", &json!({})),
        "Template Syntax Error: 'whatever' is not a valid function, line 1"
    );
    assert_eq!(
        message("\n{{String(format, 'x')}}", &json!({})),
        "\"format\" can not be used as a variable name, line 2"
    );
    assert!(message("{% for x in y %}{% end %}", &json!({})).contains("not {% for %}"));
    assert!(message("{{ x.y }}", &json!({})).contains("no attributes"));
    let deep = format!("{}x{}", "{% if 1 %}".repeat(17), "{% end %}".repeat(17));
    assert!(message(&deep, &json!({})).contains("emulator limit"));
    let nested = format!("{{{{ {}1{} }}}}", "(".repeat(40), ")".repeat(40));
    assert!(message(&nested, &json!({})).contains("emulator limit"));
    assert!(message(&"x".repeat(super::MAX_TEMPLATE_BYTES + 1), &json!({})).contains("emulator limit"));
}

#[test]
fn params_are_listed_as_tinybird_lists_them() {
    let template = Template::parse(
        "SELECT * FROM t WHERE 1 {% if defined(org) %} AND org = {{String(org, required=True, description='the org')}}{% end %} \
         {% if defined(flag) %}1{% end %} AND d > {{Date(since, '2024-01-01')}} AND id IN {{Array(ids, 'Int32', '1,2')}}",
    )
    .unwrap();
    let listed: Vec<Json> = template.params().iter().map(super::ParamInfo::to_json).collect();
    assert_eq!(
        listed,
        [
            json!({"name": "org", "type": "String", "default": null, "required": true, "description": "the org"}),
            json!({"name": "flag", "type": "String", "default": null, "used_in": "function_call"}),
            json!({"name": "since", "type": "Date", "default": "2024-01-01"}),
            json!({"name": "ids", "type": "Array(Int32)", "default": "1,2"}),
        ]
    );
}

/// Arbitrary text (tags, quotes, brackets, operators and multi-byte characters mixed) never
/// panics the parser, the renderer, the parameter listing or the table scan.
#[test]
fn arbitrary_text_never_panics() {
    const PIECES: [&str; 32] = [
        "{{", "}}", "{%", "%}", "{#", "#}", "!", "if ", "elif ", "else", "end", "set ", "x", " = ", "'",
        "\"", "\\", "(", ")", "[", "]", ",", "String(", "Array(", "defined(", "sql_and(", "1.5e", "-",
        " and ", "é", "\n", "FROM `",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let params = params(&json!({"x": "v", "y": ["a", 1, null]}));
    for _ in 0..5000 {
        let mut text = String::new();
        for _ in 0..12 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push_str(PIECES[usize::try_from(state % 32).unwrap()]);
        }
        if let Ok(template) = Template::parse(&text) {
            let _ = template.render(&params);
            let _ = template.params();
            for variant in template.sql_variants() {
                let _ = crate::tinybird::sql_scan::tables_read(&variant);
            }
        }
        let _ = crate::tinybird::sql_scan::tables_read(&text);
        let _ = crate::tinybird::sql_scan::after_leading_with(&text);
    }
}
