//! `DATASOURCES:READ` row filters: parsed into an owned tree and signed as the operator's own
//! serialisation, never as the tenant wrote them ("parse, don't scan"). Pure.
//!
//! Tinybird pastes the signed filter into ClickHouse SQL, so anything ClickHouse reads in it
//! beyond a plain condition (a heredoc string, an alias shadowing the tenant column, a subquery,
//! a table function, a comment, a look-alike quote) could undo the tenant condition the policy
//! ANDs to it. The grammar below has none of those; [`Filter::to_sql`] writes the tree back fully
//! parenthesised with literals escaped by one function, and the policy ANDs the tenant condition
//! to the tree ([`Filter::and`], [`Filter::equals`]), never to text.
//!
//! ```text
//! filter    := or
//! or        := and ( OR and )*
//! and       := unary ( AND unary )*
//! unary     := NOT unary | '(' or ')' | predicate
//! predicate := column cmp literal
//!            | column [NOT] IN '(' literal ( ',' literal )* ')'
//!            | column IS [NOT] NULL
//!            | column [NOT] (LIKE | ILIKE) string
//!            | column [NOT] BETWEEN literal AND literal
//! cmp       := = | == | != | <> | < | <= | > | >=
//! column    := [A-Za-z_][A-Za-z0-9_]*, at most 64 bytes, not a keyword (see RESERVED_WORDS)
//! literal   := string | number | TRUE | FALSE
//! string    := '...' as ClickHouse lexes it: '' is a quote; escapes \\ \' \" \` \n \t \r \0 \b
//!              \f \a \v \e \xHH (up to \x7F: a non-ASCII character is written as itself)
//! number    := -?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?, no leading zeros, at most 40 bytes;
//!              an integer within 64 bits, any other number within Float64's normal range
//!              (what ClickHouse parses as written: `1e309` and `1e-400` are refused)
//! ```
//!
//! Keywords are case-insensitive, columns case-sensitive. Whitespace is ASCII space, tab, CR
//! and LF (harmless: the filter is re-serialised). Outside string literals only ASCII is
//! allowed. Byte positions in errors count from 0.

mod lex;

use std::fmt;

use lex::{Lexed, Token};

/// Longest filter text accepted, in bytes (the CRD schema's bound too).
pub use crate::api::limits::MAX_FILTER_BYTES;
/// Deepest nesting of NOT, AND and OR in the parsed tree. The text may nest parentheses and
/// NOTs twice as deep (the serialisation writes `NOT (...)`, two levels per NOT).
pub const MAX_FILTER_DEPTH: usize = 32;
/// Most predicates (comparisons, IN, IS NULL, LIKE, BETWEEN) in one filter.
pub const MAX_FILTER_PREDICATES: usize = 64;
/// Most values in one IN list.
pub const MAX_IN_LIST_VALUES: usize = 256;
/// Longest column name, in bytes.
pub const MAX_COLUMN_BYTES: usize = 64;
/// Longest number literal, in bytes.
pub const MAX_NUMBER_BYTES: usize = 40;

/// Words that are never a column: the keywords of the grammar, and SQL words ClickHouse would
/// read as something other than a column (a subquery, a cast, a literal such as `inf`).
pub const RESERVED_WORDS: &[&str] = &[
    "AND",
    "OR",
    "NOT",
    "IN",
    "IS",
    "NULL",
    "LIKE",
    "ILIKE",
    "BETWEEN",
    "TRUE",
    "FALSE",
    "AS",
    "SELECT",
    "WITH",
    "FROM",
    "WHERE",
    "EXISTS",
    "CASE",
    "CAST",
    "INTERVAL",
    "DATE",
    "TIMESTAMP",
    "GLOBAL",
    "ANY",
    "ALL",
    "INF",
    "INFINITY",
    "NAN",
];

/// What every refusal reminds the author of.
const ALLOWED: &str = "a filter compares columns with literals (=, !=, <, <=, >, >=, [NOT] IN (...), IS [NOT] NULL, [NOT] LIKE or ILIKE '...', [NOT] BETWEEN ... AND ...), joined by AND, OR, NOT and parentheses";

/// Why a filter text is refused: the offending part, where it is and what is allowed instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part} at byte {position} is not allowed: {reason}; {ALLOWED}")]
pub struct FilterError {
    /// The offending part, e.g. `"$"` or `non-ASCII character U+2019` (at most a few dozen bytes).
    pub part: String,
    /// Its byte offset in the filter text, from 0.
    pub position: usize,
    /// Why it is refused.
    pub reason: String,
}

impl FilterError {
    fn new(part: impl Into<String>, position: usize, reason: impl Into<String>) -> Self {
        Self { part: part.into(), position, reason: reason.into() }
    }
}

/// A parsed filter: a condition over one row, owned, with nothing of the text it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    root: Condition,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Condition {
    /// Two or more alternatives.
    Or(Vec<Condition>),
    /// Two or more conditions that must all hold.
    And(Vec<Condition>),
    Not(Box<Condition>),
    Predicate(Predicate),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Predicate {
    column: String,
    test: Test,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Test {
    Compare(Comparison, Literal),
    In { negated: bool, values: Vec<Literal> },
    IsNull { negated: bool },
    Like { negated: bool, case_insensitive: bool, pattern: String },
    Between { negated: bool, low: Literal, high: Literal },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Comparison {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl Comparison {
    fn sql(self) -> &'static str {
        match self {
            Self::Equal => "=",
            Self::NotEqual => "!=",
            Self::Less => "<",
            Self::LessOrEqual => "<=",
            Self::Greater => ">",
            Self::GreaterOrEqual => ">=",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Literal {
    String(String),
    /// The number as lexed (already in the grammar's form), with a lower-case `e`.
    Number(String),
    Bool(bool),
}

impl Filter {
    /// Parses a tenant's filter text.
    ///
    /// # Errors
    /// [`FilterError`] naming the first part outside the grammar, or the limit exceeded.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        if text.len() > MAX_FILTER_BYTES {
            return Err(FilterError::new(
                format!("a filter of {} bytes", text.len()),
                MAX_FILTER_BYTES,
                format!("the limit is {MAX_FILTER_BYTES} bytes"),
            ));
        }
        let (tokens, lex_error) = lex::lex(text);
        if tokens.is_empty() && lex_error.is_none() {
            return Err(FilterError::new("an empty filter", 0, "write a condition such as org = 'acme'"));
        }
        let mut parser = Parser { tokens, next: 0, end: text.len(), lex_error, nesting: 0, predicates: 0 };
        let (root, _) = parser.or()?;
        match parser.peek() {
            None => parser.lex_error.map_or(Ok(Self { root }), Err),
            Some(Lexed { token: Token::RParen, at }) => {
                Err(FilterError::new("\")\"", *at, "it closes a parenthesis that was never opened"))
            }
            Some(other) => Err(parser.unexpected(other, "AND, OR or the end of the filter")),
        }
    }

    /// `column = 'value'`: the tenant condition the policy ANDs to a filter.
    ///
    /// # Errors
    /// [`FilterError`] when `column` is not a column name of the grammar.
    pub fn equals(column: &str, value: &str) -> Result<Self, FilterError> {
        lex::check_column(column, 0)?;
        Ok(Self {
            root: Condition::Predicate(Predicate {
                column: column.to_owned(),
                test: Test::Compare(Comparison::Equal, Literal::String(value.to_owned())),
            }),
        })
    }

    /// Both conditions: `(self) AND (other)`, each kept whole as one operand. The result may be
    /// one level deeper than [`MAX_FILTER_DEPTH`]; it is serialised, not parsed again.
    #[must_use]
    pub fn and(self, other: Self) -> Self {
        Self { root: Condition::And(vec![self.root, other.root]) }
    }

    /// The operator's serialisation: every operand of AND, OR and NOT in parentheses, keywords
    /// upper-case, literals escaped by [`sql_string`]. `Filter::parse(&f.to_sql())` is `f`.
    #[must_use]
    pub fn to_sql(&self) -> String {
        let mut out = String::new();
        write_condition(&mut out, &self.root);
        out
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_sql())
    }
}

/// A ClickHouse string literal for any text: `\` and `'` escaped, control characters written as
/// escapes (`\n`, `\t`, `\r`, `\0`, otherwise `\xHH`), everything else as itself.
#[must_use]
pub fn sql_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    write_string(&mut out, value);
    out
}

fn write_string(out: &mut String, value: &str) {
    out.push('\'');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('\'');
}

fn write_condition(out: &mut String, condition: &Condition) {
    match condition {
        Condition::Or(operands) | Condition::And(operands) => {
            let joiner = if matches!(condition, Condition::Or(_)) { " OR " } else { " AND " };
            for (i, operand) in operands.iter().enumerate() {
                if i > 0 {
                    out.push_str(joiner);
                }
                out.push('(');
                write_condition(out, operand);
                out.push(')');
            }
        }
        Condition::Not(operand) => {
            out.push_str("NOT (");
            write_condition(out, operand);
            out.push(')');
        }
        Condition::Predicate(predicate) => write_predicate(out, predicate),
    }
}

fn write_predicate(out: &mut String, Predicate { column, test }: &Predicate) {
    out.push_str(column);
    let not = |negated: &bool| if *negated { " NOT" } else { "" };
    match test {
        Test::Compare(comparison, literal) => {
            out.push(' ');
            out.push_str(comparison.sql());
            out.push(' ');
            write_literal(out, literal);
        }
        Test::In { negated, values } => {
            out.push_str(not(negated));
            out.push_str(" IN (");
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_literal(out, value);
            }
            out.push(')');
        }
        Test::IsNull { negated } => {
            out.push_str(" IS");
            out.push_str(not(negated));
            out.push_str(" NULL");
        }
        Test::Like { negated, case_insensitive, pattern } => {
            out.push_str(not(negated));
            out.push_str(if *case_insensitive { " ILIKE " } else { " LIKE " });
            write_string(out, pattern);
        }
        Test::Between { negated, low, high } => {
            out.push_str(not(negated));
            out.push_str(" BETWEEN ");
            write_literal(out, low);
            out.push_str(" AND ");
            write_literal(out, high);
        }
    }
}

fn write_literal(out: &mut String, literal: &Literal) {
    match literal {
        Literal::String(text) => write_string(out, text),
        Literal::Number(number) => out.push_str(number),
        Literal::Bool(true) => out.push_str("TRUE"),
        Literal::Bool(false) => out.push_str("FALSE"),
    }
}

/// Recursive descent over the tokens. Every `(` and `NOT` counts towards `nesting`, bounded by
/// twice [`MAX_FILTER_DEPTH`], so recursion stays shallow whatever the text; each function
/// returns the tree depth of what it parsed.
struct Parser<'a> {
    tokens: Vec<Lexed<'a>>,
    next: usize,
    end: usize,
    /// Where the tokens stop when the lexer refused something: reported on reaching it.
    lex_error: Option<FilterError>,
    nesting: usize,
    predicates: usize,
}

type Parsed = Result<(Condition, usize), FilterError>;

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Lexed<'a>> {
        self.tokens.get(self.next)
    }

    fn position(&self) -> usize {
        self.peek().map_or(self.end, |t| t.at)
    }

    fn advance(&mut self) -> Option<Lexed<'a>> {
        let token = self.tokens.get(self.next).cloned();
        self.next += 1;
        token
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Lexed { token: Token::Word(w), .. }) if w.eq_ignore_ascii_case(keyword))
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = self.at_keyword(keyword);
        if found {
            self.next += 1;
        }
        found
    }

    fn or(&mut self) -> Parsed {
        self.joined("OR", Self::and, Condition::Or)
    }

    fn and(&mut self) -> Parsed {
        self.joined("AND", Self::unary, Condition::And)
    }

    /// `operand ( keyword operand )*`, one node when there are two or more operands.
    fn joined(
        &mut self,
        keyword: &str,
        operand: fn(&mut Self) -> Parsed,
        node: fn(Vec<Condition>) -> Condition,
    ) -> Parsed {
        let start = self.position();
        let (first, mut depth) = operand(self)?;
        if !self.at_keyword(keyword) {
            return Ok((first, depth));
        }
        let mut operands = vec![first];
        while self.eat_keyword(keyword) {
            let (next, next_depth) = operand(self)?;
            operands.push(next);
            depth = depth.max(next_depth);
        }
        deeper(node(operands), depth, start)
    }

    fn unary(&mut self) -> Parsed {
        let start = self.position();
        if self.at_keyword("NOT") {
            self.enter(start)?;
            self.next += 1;
            let (operand, depth) = self.unary()?;
            self.nesting -= 1;
            return deeper(Condition::Not(Box::new(operand)), depth, start);
        }
        if matches!(self.peek(), Some(Lexed { token: Token::LParen, .. })) {
            self.enter(start)?;
            self.next += 1;
            let inner = self.or()?;
            match self.advance() {
                Some(Lexed { token: Token::RParen, .. }) => {}
                None => {
                    return Err(self.lex_error.clone().unwrap_or_else(|| {
                        FilterError::new("\"(\"", start, "it is never closed: add the missing \")\"")
                    }));
                }
                Some(other) => return Err(self.unexpected(&other, "AND, OR or \")\"")),
            }
            self.nesting -= 1;
            return Ok(inner);
        }
        self.predicate()
    }

    fn enter(&mut self, at: usize) -> Result<(), FilterError> {
        self.nesting += 1;
        if self.nesting > 2 * MAX_FILTER_DEPTH {
            return Err(FilterError::new(
                "nesting",
                at,
                format!("parentheses and NOTs nest at most {} deep", 2 * MAX_FILTER_DEPTH),
            ));
        }
        Ok(())
    }

    fn predicate(&mut self) -> Parsed {
        let start = self.position();
        let column = self.column()?;
        self.predicates += 1;
        if self.predicates > MAX_FILTER_PREDICATES {
            return Err(FilterError::new(
                format!("predicate {}", self.predicates),
                start,
                format!("a filter has at most {MAX_FILTER_PREDICATES} predicates"),
            ));
        }
        let test = match self.advance() {
            Some(Lexed { token: Token::Compare(comparison), .. }) => {
                Test::Compare(comparison, self.literal("a literal")?)
            }
            Some(Lexed { token: Token::Word(w), .. }) if w.eq_ignore_ascii_case("IS") => {
                let negated = self.eat_keyword("NOT");
                self.keyword("NULL", "NULL after IS")?;
                Test::IsNull { negated }
            }
            Some(Lexed { token: Token::Word(w), .. }) if w.eq_ignore_ascii_case("NOT") => {
                match self.advance() {
                    Some(Lexed { token: Token::Word(w), at }) => self.negatable(w, at, true)?,
                    other => {
                        return Err(
                            self.unexpected_or_end(other.as_ref(), "IN, LIKE, ILIKE or BETWEEN after NOT")
                        );
                    }
                }
            }
            Some(Lexed { token: Token::Word(w), at }) => self.negatable(w, at, false)?,
            other => {
                return Err(self.unexpected_or_end(
                    other.as_ref(),
                    &format!("a comparison (=, !=, <, <=, >, >=, IN, IS, LIKE, ILIKE, BETWEEN) after column {column}"),
                ));
            }
        };
        Ok((Condition::Predicate(Predicate { column, test }), 0))
    }

    /// The predicates that may follow `NOT`: `IN`, `LIKE`, `ILIKE`, `BETWEEN`.
    fn negatable(&mut self, word: &str, at: usize, negated: bool) -> Result<Test, FilterError> {
        let upper = word.to_ascii_uppercase();
        match upper.as_str() {
            "IN" => Ok(Test::In { negated, values: self.in_list()? }),
            "LIKE" | "ILIKE" => match self.advance() {
                Some(Lexed { token: Token::String(pattern), .. }) => {
                    Ok(Test::Like { negated, case_insensitive: upper == "ILIKE", pattern })
                }
                other => {
                    Err(self.unexpected_or_end(other.as_ref(), &format!("a string literal after {upper}")))
                }
            },
            "BETWEEN" => {
                let low = self.literal("a literal after BETWEEN")?;
                self.keyword("AND", "AND between the bounds of BETWEEN")?;
                let high = self.literal("a literal after BETWEEN ... AND")?;
                Ok(Test::Between { negated, low, high })
            }
            _ => Err(self.unexpected(
                &Lexed { token: Token::Word(word), at },
                if negated {
                    "IN, LIKE, ILIKE or BETWEEN after NOT"
                } else {
                    "a comparison after the column"
                },
            )),
        }
    }

    fn in_list(&mut self) -> Result<Vec<Literal>, FilterError> {
        match self.advance() {
            Some(Lexed { token: Token::LParen, .. }) => {}
            other => return Err(self.unexpected_or_end(other.as_ref(), "\"(\" opening the IN list")),
        }
        let mut values = Vec::new();
        loop {
            let at = self.position();
            values.push(self.literal("a literal in the IN list")?);
            if values.len() > MAX_IN_LIST_VALUES {
                return Err(FilterError::new(
                    format!("IN list value {}", values.len()),
                    at,
                    format!("an IN list holds at most {MAX_IN_LIST_VALUES} values"),
                ));
            }
            match self.advance() {
                Some(Lexed { token: Token::Comma, .. }) => {}
                Some(Lexed { token: Token::RParen, .. }) => return Ok(values),
                other => return Err(self.unexpected_or_end(other.as_ref(), "\",\" or \")\" in the IN list")),
            }
        }
    }

    fn keyword(&mut self, keyword: &str, expected: &str) -> Result<(), FilterError> {
        if self.eat_keyword(keyword) {
            return Ok(());
        }
        let next = self.advance();
        Err(self.unexpected_or_end(next.as_ref(), expected))
    }

    fn column(&mut self) -> Result<String, FilterError> {
        match self.advance() {
            Some(Lexed { token: Token::Word(word), at }) => {
                if matches!(self.peek(), Some(Lexed { token: Token::LParen, .. })) {
                    return Err(function_call(word, at));
                }
                lex::check_column(word, at)?;
                Ok(word.to_owned())
            }
            other => Err(self.unexpected_or_end(other.as_ref(), "a column name")),
        }
    }

    fn literal(&mut self, expected: &str) -> Result<Literal, FilterError> {
        match self.advance() {
            Some(Lexed { token: Token::String(text), .. }) => Ok(Literal::String(text)),
            Some(Lexed { token: Token::Number(number), .. }) => Ok(Literal::Number(number)),
            Some(Lexed { token: Token::Word(w), .. }) if w.eq_ignore_ascii_case("TRUE") => {
                Ok(Literal::Bool(true))
            }
            Some(Lexed { token: Token::Word(w), .. }) if w.eq_ignore_ascii_case("FALSE") => {
                Ok(Literal::Bool(false))
            }
            Some(Lexed { token: Token::Word(w), at }) if w.eq_ignore_ascii_case("NULL") => {
                Err(FilterError::new(
                    "NULL",
                    at,
                    "NULL is not a value to compare with: use IS NULL or IS NOT NULL",
                ))
            }
            other => Err(self.unexpected_or_end(other.as_ref(), expected)),
        }
    }

    fn unexpected_or_end(&self, token: Option<&Lexed<'a>>, expected: &str) -> FilterError {
        match token {
            Some(token) => self.unexpected(token, expected),
            None => self.lex_error.clone().unwrap_or_else(|| {
                FilterError::new("the end of the filter", self.end, format!("expected {expected}"))
            }),
        }
    }

    /// A token where it does not belong, with the reason its kind is never allowed when it has one.
    fn unexpected(&self, lexed: &Lexed<'a>, expected: &str) -> FilterError {
        let at = lexed.at;
        match &lexed.token {
            Token::Word(word) => {
                let next_is_paren =
                    self.tokens.iter().find(|t| t.at > at).is_some_and(|t| t.token == Token::LParen);
                if next_is_paren && !is_keyword(word) {
                    return function_call(word, at);
                }
                let reason =
                    lex::forbidden_word(word).map_or_else(|| format!("expected {expected}"), str::to_owned);
                FilterError::new(lexed.token.describe(), at, reason)
            }
            other => FilterError::new(other.describe(), at, format!("expected {expected}")),
        }
    }
}

fn is_keyword(word: &str) -> bool {
    ["AND", "OR", "NOT", "IN"].iter().any(|k| word.eq_ignore_ascii_case(k))
}

fn function_call(name: &str, at: usize) -> FilterError {
    let reason = lex::forbidden_word(name)
        .unwrap_or("a filter calls no functions or table functions (it reads only the row it is given)");
    FilterError::new(format!("\"{}(\"", truncated(name)), at, reason)
}

/// A part of the text short enough to quote in a message.
fn truncated(text: &str) -> &str {
    crate::core::redact::prefix(text, 32)
}

/// The tree depth of a new AND, OR or NOT node over operands of depth `operand_depth`.
fn deeper(node: Condition, operand_depth: usize, at: usize) -> Parsed {
    let depth = operand_depth + 1;
    if depth > MAX_FILTER_DEPTH {
        return Err(FilterError::new(
            "nesting",
            at,
            format!("NOT, AND and OR nest at most {MAX_FILTER_DEPTH} deep"),
        ));
    }
    Ok((node, depth))
}

#[cfg(test)]
mod tests;
