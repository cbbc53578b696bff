use super::*;

fn canonical(text: &str) -> String {
    match Filter::parse(text) {
        Ok(filter) => filter.to_sql(),
        Err(error) => panic!("{text:?} should parse: {error}"),
    }
}

fn refusal(text: &str) -> FilterError {
    match Filter::parse(text) {
        Ok(filter) => panic!("{text:?} should be refused, parsed as {}", filter.to_sql()),
        Err(error) => error,
    }
}

/// Refused, naming `part` at byte `position`.
fn assert_refused(text: &str, part: &str, position: usize) {
    let error = refusal(text);
    assert_eq!((error.part.as_str(), error.position), (part, position), "{text:?}: {error}");
    assert!(error.to_string().contains("a filter compares columns with literals"), "{error}");
}

#[test]
fn accepts_every_form_of_the_grammar_and_writes_it_canonically() {
    for (text, sql) in [
        ("org = 'acme'", "org = 'acme'"),
        ("org == 'acme'", "org = 'acme'"),
        ("n != 1", "n != 1"),
        ("n <> 1", "n != 1"),
        ("n < 1", "n < 1"),
        ("n <= -1.5", "n <= -1.5"),
        ("n > 1E3", "n > 1e3"),
        ("n >= 2.5e-3", "n >= 2.5e-3"),
        ("n>=0", "n >= 0"),
        ("ok = true", "ok = TRUE"),
        ("ok = False", "ok = FALSE"),
        ("kind IN ('a', 'b')", "kind IN ('a', 'b')"),
        ("kind in (1)", "kind IN (1)"),
        ("kind NOT IN ('a',2,TRUE)", "kind NOT IN ('a', 2, TRUE)"),
        ("deleted IS NULL", "deleted IS NULL"),
        ("deleted is not null", "deleted IS NOT NULL"),
        ("path LIKE '/a%'", "path LIKE '/a%'"),
        ("path not like '/a%'", "path NOT LIKE '/a%'"),
        ("path ILIKE '%x'", "path ILIKE '%x'"),
        ("path NOT ILIKE '%x'", "path NOT ILIKE '%x'"),
        ("n BETWEEN 1 AND 10", "n BETWEEN 1 AND 10"),
        ("n NOT BETWEEN 'a' AND 'b'", "n NOT BETWEEN 'a' AND 'b'"),
        ("NOT a = 1", "NOT (a = 1)"),
        ("not not a = 1", "NOT (NOT (a = 1))"),
        ("a = 1 AND b = 2 AND c = 3", "(a = 1) AND (b = 2) AND (c = 3)"),
        ("a = 1 OR b = 2 AND c = 3", "(a = 1) OR ((b = 2) AND (c = 3))"),
        ("(a = 1 OR b = 2) AND c = 3", "((a = 1) OR (b = 2)) AND (c = 3)"),
        ("a = 1 AND (b = 2 AND c = 3)", "(a = 1) AND ((b = 2) AND (c = 3))"),
        ("((a = 1))", "a = 1"),
        ("a = 1 AND NOT b IN ('x', 'y')", "(a = 1) AND (NOT (b IN ('x', 'y')))"),
        ("n BETWEEN 1 AND 2 AND m = 3", "(n BETWEEN 1 AND 2) AND (m = 3)"),
        ("_Col_9 = 'x'", "_Col_9 = 'x'"),
        ("a = 1\n\tAND\r\nb = 2", "(a = 1) AND (b = 2)"),
        ("org = 'globex'", "org = 'globex'"),
    ] {
        assert_eq!(canonical(text), sql, "{text:?}");
    }
}

#[test]
fn lexes_string_literals_as_clickhouse_does_and_escapes_them_its_own_way() {
    for (text, sql) in [
        ("s = 'a''b'", "s = 'a\\'b'"),
        ("s = 'a\\'b'", "s = 'a\\'b'"),
        ("s = '\\x41\\x7f'", "s = 'A\\x7F'"),
        ("s = 'Zürich ✓ 東京'", "s = 'Zürich ✓ 東京'"),
        ("s = '\\\\'", "s = '\\\\'"),
        ("s = '\\\"\\`'", "s = '\"`'"),
        ("s = '\\n\\t\\r\\0'", "s = '\\n\\t\\r\\0'"),
        ("s = '\\b\\f\\a\\v\\e'", "s = '\\x08\\x0C\\x07\\x0B\\x1B'"),
        ("s = 'line\nbreak'", "s = 'line\\nbreak'"),
        ("s = ''", "s = ''"),
        ("s = ')--;$$/*'", "s = ')--;$$/*'"),
        ("s LIKE 'it''s%'", "s LIKE 'it\\'s%'"),
    ] {
        assert_eq!(canonical(text), sql, "{text:?}");
    }
    assert_eq!(sql_string("o'brien\\"), "'o\\'brien\\\\'");
    assert_eq!(sql_string("\u{1}\u{7f}é"), "'\\x01\\x7Fé'");
}

#[test]
fn refuses_heredoc_strings() {
    assert_refused("org = $$acme$$", "\"$\"", 6);
    assert_refused("org = $tag$acme$tag$", "\"$\"", 6);
    assert!(refusal("org = $$x$$").to_string().contains("heredoc"));
}

#[test]
fn refuses_look_alike_quotes_and_any_non_ascii_outside_literals() {
    assert_refused("org = \u{2019}acme\u{2019}", "non-ASCII character U+2019", 6);
    assert_refused("org = \u{2bc}acme\u{2bc}", "non-ASCII character U+02BC", 6);
    assert_refused("org = \u{ff07}acme\u{ff07}", "non-ASCII character U+FF07", 6);
    assert_refused("org = 'a' AND \u{ff08}b = 1\u{ff09}", "non-ASCII character U+FF08", 14);
    assert!(refusal("org = \u{2019}x").to_string().starts_with("non-ASCII character U+2019 at byte 6"));
}

#[test]
fn refuses_aliases_that_could_shadow_the_tenant_column() {
    let error = refusal("notEmpty('acme' AS org)");
    assert_eq!((error.part.as_str(), error.position), ("\"notEmpty(\"", 0), "{error}");
    assert_refused("org = 'a' AS org", "\"AS\"", 10);
    assert!(refusal("org = 'a' AS org").to_string().contains("shadow the tenant column"));
    assert_refused("org IN ('a' AS org)", "\"AS\"", 12);
}

#[test]
fn refuses_subqueries() {
    assert_refused("(SELECT 1)", "\"SELECT\"", 1);
    assert_refused("org IN (SELECT org FROM t)", "\"SELECT\"", 8);
    assert_refused("EXISTS(SELECT 1)", "\"EXISTS(\"", 0);
    assert_refused("a = 1 OR (WITH x AS (SELECT 1) SELECT 1)", "\"WITH\"", 10);
    assert!(refusal("(SELECT 1)").to_string().contains("no subqueries"));
}

#[test]
fn refuses_functions_and_table_functions() {
    assert_refused("url('http://x') = 1", "\"url(\"", 0);
    assert_refused("file('/etc/passwd')", "\"file(\"", 0);
    assert_refused("org = lower('ACME')", "\"lower(\"", 6);
    assert_refused("a = 1 AND remote('h', db.t)", "\"remote(\"", 10);
    assert!(refusal("url('x')").to_string().contains("calls no functions or table functions"));
}

#[test]
fn refuses_comments_separators_and_quoted_identifiers() {
    assert_refused("org = 'a' -- c", "\"--\"", 10);
    assert_refused("org = 'a' /* c */", "\"/*\"", 10);
    assert_refused("org = 'a' # c", "\"#\"", 10);
    assert_refused("org = 'a'; DROP TABLE t", "\";\"", 9);
    assert_refused("\"org\" = 'x'", "\"\\\"\"", 0);
    assert_refused("`org` = 'x'", "\"`\"", 0);
    assert_refused("org = {{org.id}}", "\"{\"", 6);
    assert_refused("org = {org:String}", "\"{\"", 6);
    assert_refused("org = ?", "\"?\"", 6);
    assert_refused("t.org = 'x'", "\".\"", 1);
    assert_refused("n = 1 + 1", "\"+\"", 6);
    assert_refused("n = -x", "\"-\"", 4);
    assert_refused("a = 1\u{c}", "control character U+000C", 5);
}

#[test]
fn refuses_escapes_clickhouse_would_read_differently() {
    assert_refused("org = 'a\\q'", "escape \"\\\\q\"", 8);
    assert_refused("org = 'a\\x4'", "escape \"\\x\"", 8);
    assert_refused("org = 'a\\xFF'", "escape \"\\\\xFF\"", 8);
    assert_refused("org = 'a\\", "\"\\\"", 8);
    assert_refused("org = 'a\\'", "an unterminated string literal", 6);
    assert_refused("org = 'acme", "an unterminated string literal", 6);
    assert_refused("org = 'a''", "an unterminated string literal", 6);
}

#[test]
fn refuses_malformed_numbers() {
    assert_refused("n = 0x1F", "number \"0x1F\"", 4);
    assert_refused("n = 1.", "number \"1.\"", 4);
    assert_refused("n = 1e", "number \"1e\"", 4);
    assert_refused("n = 007", "number \"007\"", 4);
    assert_refused("n = 1abc", "number \"1abc\"", 4);
    assert_refused(&format!("n = {}", "9".repeat(41)), "a number of 41 bytes", 4);
    assert_eq!(canonical("n = 0.5"), "n = 0.5");
}

#[test]
fn refuses_numbers_clickhouse_would_not_read_as_written() {
    assert_refused("n = 1e309", "number \"1e309\"", 4);
    assert_refused("n > -1e309", "number \"-1e309\"", 4);
    assert_refused("n < 1e-400", "number \"1e-400\"", 4);
    assert_refused("n IN (1, 2.5e-320)", "number \"2.5e-320\"", 9);
    assert_refused("n = 18446744073709551616", "number \"18446744073709551616\"", 4);
    assert_refused("n = -9223372036854775809", "number \"-9223372036854775809\"", 4);
    for kept in [
        "n = 18446744073709551615",
        "n = -9223372036854775808",
        "n = 1.7976931348623157e308",
        "n = 2.2250738585072014e-308",
        "n = 0e-400",
        "n = 0.0",
    ] {
        assert_eq!(canonical(kept), kept);
    }
}

#[test]
fn refuses_what_is_not_a_condition() {
    assert_refused("1 = 1", "\"1\"", 0);
    assert_refused("org", "the end of the filter", 3);
    assert_refused("org = ", "the end of the filter", 6);
    assert_refused("org = NULL", "NULL", 6);
    assert_refused("org = 'a' AND", "the end of the filter", 13);
    assert_refused("org = 'a' 'b'", "a string literal", 10);
    assert_refused("org = other_column", "\"other_column\"", 6);
    assert_refused("org LIKE 1", "\"1\"", 9);
    assert_refused("org IN ()", "\")\"", 8);
    assert_refused("org IN 'a'", "a string literal", 7);
    assert_refused("n BETWEEN 1 OR 2", "\"OR\"", 12);
    assert_refused("select = 1", "\"select\"", 0);
    assert_refused("and = 1", "column \"and\"", 0);
    assert_refused("inf = 1", "column \"inf\"", 0);
    assert_refused("", "an empty filter", 0);
}

#[test]
fn refuses_unbalanced_parentheses() {
    assert_refused("org = 'a') OR (1 = 1", "\")\"", 9);
    assert_refused("(org = 'a'", "\"(\"", 0);
    assert_refused("((org = 'a')", "\"(\"", 0);
    assert_refused("org = 'a')", "\")\"", 9);
}

#[test]
fn refuses_filters_beyond_the_limits() {
    let long = format!("org = '{}'", "a".repeat(MAX_FILTER_BYTES));
    assert_refused(&long, &format!("a filter of {} bytes", long.len()), MAX_FILTER_BYTES);

    let parens = 2 * MAX_FILTER_DEPTH;
    assert!(Filter::parse(&format!("{}a = 1{}", "(".repeat(parens), ")".repeat(parens))).is_ok());
    assert_refused(&format!("{}a = 1{}", "(".repeat(parens + 1), ")".repeat(parens + 1)), "nesting", parens);

    assert!(Filter::parse(&format!("{}a = 1", "NOT ".repeat(MAX_FILTER_DEPTH))).is_ok());
    assert_refused(&format!("{}a = 1", "NOT ".repeat(MAX_FILTER_DEPTH + 1)), "nesting", 0);

    // Alternating AND and OR: each level one tree level, each in one pair of parentheses.
    let mut nested = "a = 1".to_owned();
    for level in 0..MAX_FILTER_DEPTH {
        nested = format!("b = 1 {} ({nested})", if level % 2 == 0 { "AND" } else { "OR" });
    }
    assert!(Filter::parse(&nested).is_ok());
    assert_refused(&format!("c = 1 OR ({nested})"), "nesting", 0);

    let predicates = vec!["a = 1"; MAX_FILTER_PREDICATES];
    assert!(Filter::parse(&predicates.join(" AND ")).is_ok());
    let one_more = format!("{} AND b = 1", predicates.join(" AND "));
    assert_refused(&one_more, &format!("predicate {}", MAX_FILTER_PREDICATES + 1), one_more.len() - 5);

    let values = vec!["1"; MAX_IN_LIST_VALUES];
    assert!(Filter::parse(&format!("a IN ({})", values.join(","))).is_ok());
    let too_many = format!("a IN ({},2)", values.join(","));
    assert_refused(&too_many, &format!("IN list value {}", MAX_IN_LIST_VALUES + 1), too_many.len() - 2);

    let column = "c".repeat(MAX_COLUMN_BYTES + 1);
    assert_refused(&format!("{column} = 1"), &format!("column \"{}\"", &column[..32]), 0);
}

#[test]
fn reports_the_first_offending_part() {
    // The parser meets the function call before the lexer's refusal of "$" later on.
    assert_refused("f(1) = $$x$$", "\"f(\"", 0);
    assert_refused("a = 1 AND $$x$$", "\"$\"", 10);
    assert_refused("(a = 1 $", "\"$\"", 7);
}

#[test]
fn the_tenant_condition_is_anded_outside_the_tenant_tree() {
    let tenant = Filter::equals("org", "acme").unwrap();
    assert_eq!(tenant.to_sql(), "org = 'acme'");
    let user = Filter::parse("org = 'globex' OR x = 1").unwrap();
    assert_eq!(user.and(tenant.clone()).to_sql(), "((org = 'globex') OR (x = 1)) AND (org = 'acme')");
    assert_eq!(Filter::equals("org", "o'brien\\ ')--").unwrap().to_sql(), "org = 'o\\'brien\\\\ \\')--'");
    for column in ["", "1org", "org name", "AND", "select", "org;"] {
        assert!(Filter::equals(column, "acme").is_err(), "{column:?}");
    }
    // The result parses back to the same tree.
    let both = Filter::parse("a IN (1, 2) OR NOT b = 'x'").unwrap().and(tenant);
    assert_eq!(Filter::parse(&both.to_sql()).unwrap(), both);
}

#[test]
fn parsing_the_canonical_form_gives_the_same_filter() {
    for text in [
        "org = 'acme'",
        "a = 1 OR b = 2 AND NOT c IN ('x', 'y''z')",
        "((a = 1 OR b IS NULL) AND (c NOT LIKE '%\\\\%' OR d BETWEEN -1 AND 2.5e10))",
        "NOT NOT (s = 'Zürich\\n\\x01')",
    ] {
        let parsed = Filter::parse(text).unwrap();
        assert_eq!(Filter::parse(&parsed.to_sql()).unwrap(), parsed, "{text:?}");
    }
}

/// A tiny deterministic generator (xorshift64) of valid filter trees.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn text(&mut self) -> String {
        const CHARS: &[char] = &[
            'a', 'Z', ' ', '\'', '\\', '"', '`', '\n', '\t', '\r', '\0', '\u{1}', '\u{7f}', '%', ')', '$',
            'é', '✓', '\u{2019}',
        ];
        (0..self.below(8)).map(|_| self.pick(CHARS)).collect()
    }

    fn literal(&mut self) -> Literal {
        match self.below(4) {
            0 => Literal::Number(self.pick(&["0", "-1", "42", "3.25", "-0.5e-7", "1e10"]).to_owned()),
            1 => Literal::Bool(self.below(2) == 0),
            _ => Literal::String(self.text()),
        }
    }

    fn predicate(&mut self) -> Condition {
        let column = self.pick(&["org", "kind", "_x", "Path2", "n"]).to_owned();
        let negated = self.below(2) == 0;
        let test = match self.below(5) {
            0 => Test::Compare(
                self.pick(&[
                    Comparison::Equal,
                    Comparison::NotEqual,
                    Comparison::Less,
                    Comparison::LessOrEqual,
                    Comparison::Greater,
                    Comparison::GreaterOrEqual,
                ]),
                self.literal(),
            ),
            1 => Test::In { negated, values: (0..=self.below(4)).map(|_| self.literal()).collect() },
            2 => Test::IsNull { negated },
            3 => Test::Like { negated, case_insensitive: self.below(2) == 0, pattern: self.text() },
            _ => Test::Between { negated, low: self.literal(), high: self.literal() },
        };
        Condition::Predicate(Predicate { column, test })
    }

    fn condition(&mut self, depth: usize) -> Condition {
        if depth == 0 {
            return self.predicate();
        }
        match self.below(4) {
            0 => self.predicate(),
            1 => Condition::Not(Box::new(self.condition(depth - 1))),
            kind => {
                let operands = (0..2 + self.below(2)).map(|_| self.condition(depth - 1)).collect();
                if kind == 2 { Condition::And(operands) } else { Condition::Or(operands) }
            }
        }
    }
}

#[test]
fn random_filters_survive_serialisation_and_parsing() {
    let mut random = Random(0x9E37_79B9_7F4A_7C15);
    let mut round_trips = 0;
    for _ in 0..2000 {
        let filter = Filter { root: random.condition(4) };
        let sql = filter.to_sql();
        match Filter::parse(&sql) {
            Ok(parsed) => {
                assert_eq!(parsed, filter, "{sql}");
                round_trips += 1;
            }
            // Only the predicate limit can refuse a generated tree.
            Err(error) => assert!(error.part.starts_with("predicate"), "{sql}: {error}"),
        }
    }
    assert!(round_trips > 1500, "only {round_trips} trees within the limits");
    // Deep trees, at the depth limit, survive too.
    let mut deep =
        Condition::Predicate(Predicate { column: "a".into(), test: Test::IsNull { negated: false } });
    for level in 0..MAX_FILTER_DEPTH {
        deep = match level % 3 {
            0 => Condition::Not(Box::new(deep)),
            1 => Condition::And(vec![deep, random.predicate()]),
            _ => Condition::Or(vec![random.predicate(), deep]),
        };
    }
    let filter = Filter { root: deep };
    assert_eq!(Filter::parse(&filter.to_sql()).unwrap(), filter);
}
