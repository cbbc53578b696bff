//! The filter lexer: ASCII words, numbers, ClickHouse single-quoted strings, parentheses,
//! commas and comparisons; everything else is refused where it stands, with why.

use super::{Comparison, FilterError, MAX_COLUMN_BYTES, MAX_NUMBER_BYTES, RESERVED_WORDS};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Token<'a> {
    /// A column or a keyword (the parser tells which).
    Word(&'a str),
    Number(String),
    /// A string literal's value, escapes resolved.
    String(String),
    LParen,
    RParen,
    Comma,
    Compare(Comparison),
}

impl Token<'_> {
    /// How a message names this token.
    pub(super) fn describe(&self) -> String {
        match self {
            Self::Word(word) => format!("{:?}", super::truncated(word)),
            Self::Number(number) => format!("{:?}", super::truncated(number)),
            Self::String(_) => "a string literal".to_owned(),
            Self::LParen => "\"(\"".to_owned(),
            Self::RParen => "\")\"".to_owned(),
            Self::Comma => "\",\"".to_owned(),
            Self::Compare(comparison) => format!("{:?}", comparison.sql()),
        }
    }
}

/// A token and the byte where it starts.
#[derive(Clone, Debug)]
pub(super) struct Lexed<'a> {
    pub(super) token: Token<'a>,
    pub(super) at: usize,
}

/// The tokens of `text` up to the first part outside the grammar, and that part's refusal.
/// The parser reports the refusal when it reaches it, so the first offending part is named.
pub(super) fn lex(text: &str) -> (Vec<Lexed<'_>>, Option<FilterError>) {
    let mut tokens = Vec::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        let next = bytes.get(at + 1).copied();
        let (token, len) = match byte {
            b' ' | b'\t' | b'\n' | b'\r' => {
                at += 1;
                continue;
            }
            b'(' => (Token::LParen, 1),
            b')' => (Token::RParen, 1),
            b',' => (Token::Comma, 1),
            b'=' if next == Some(b'=') => (Token::Compare(Comparison::Equal), 2),
            b'=' => (Token::Compare(Comparison::Equal), 1),
            b'!' if next == Some(b'=') => (Token::Compare(Comparison::NotEqual), 2),
            b'<' if next == Some(b'>') => (Token::Compare(Comparison::NotEqual), 2),
            b'<' if next == Some(b'=') => (Token::Compare(Comparison::LessOrEqual), 2),
            b'<' => (Token::Compare(Comparison::Less), 1),
            b'>' if next == Some(b'=') => (Token::Compare(Comparison::GreaterOrEqual), 2),
            b'>' => (Token::Compare(Comparison::Greater), 1),
            b'\'' => match string(text, at) {
                Ok((value, len)) => (Token::String(value), len),
                Err(error) => return (tokens, Some(error)),
            },
            b'0'..=b'9' => match number(text, at) {
                Ok(len) => (Token::Number(text[at..at + len].replace('E', "e")), len),
                Err(error) => return (tokens, Some(error)),
            },
            b'-' if next.is_some_and(|b| b.is_ascii_digit()) => match number(text, at) {
                Ok(len) => (Token::Number(text[at..at + len].replace('E', "e")), len),
                Err(error) => return (tokens, Some(error)),
            },
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let len = bytes[at..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
                (Token::Word(&text[at..at + len]), len)
            }
            _ => return (tokens, Some(refusal(text, at))),
        };
        tokens.push(Lexed { token, at });
        at += len;
    }
    (tokens, None)
}

/// Why the character at `at` cannot start a token.
fn refusal(text: &str, at: usize) -> FilterError {
    let rest = &text[at..];
    let Some(c) = rest.chars().next() else {
        return FilterError::new("the end of the filter", at, "expected more");
    };
    let part = |p: &str| format!("{p:?}");
    match c {
        '$' => FilterError::new(
            part("$"),
            at,
            "heredoc strings ($$...$$) and query parameters are not literals here",
        ),
        '-' if rest.starts_with("--") => {
            FilterError::new(part("--"), at, "comments could hide the rest of the query")
        }
        '/' if rest.starts_with("/*") => {
            FilterError::new(part("/*"), at, "comments could hide the rest of the query")
        }
        '#' => FilterError::new(part("#"), at, "comments could hide the rest of the query"),
        ';' => FilterError::new(part(";"), at, "a filter is one condition, not statements"),
        '"' | '`' => FilterError::new(
            part(&c.to_string()),
            at,
            "write the column bare, e.g. org = 'acme' (no quoted identifiers)",
        ),
        '{' | '}' => FilterError::new(
            part(&c.to_string()),
            at,
            "query parameters and templates ({...}) are not literals: write the value itself",
        ),
        '?' => FilterError::new(part("?"), at, "placeholders are not literals: write the value itself"),
        '.' => FilterError::new(
            part("."),
            at,
            "a column is one bare name (no table prefix) and a number starts with a digit",
        ),
        c if !c.is_ascii() => FilterError::new(
            format!("non-ASCII character U+{:04X}", u32::from(c)),
            at,
            "outside string literals a filter is ASCII (a look-alike of a quote or parenthesis is not one)",
        ),
        c if c.is_ascii_control() => FilterError::new(
            format!("control character U+{:04X}", u32::from(c)),
            at,
            "only spaces, tabs and line breaks separate words",
        ),
        c => FilterError::new(part(&c.to_string()), at, "the only operators are comparisons"),
    }
}

/// A single-quoted literal starting at `start`, lexed as ClickHouse lexes it: `''` is a quote
/// and a backslash escapes the next character. Returns its value and its length in bytes.
fn string(text: &str, start: usize) -> Result<(String, usize), FilterError> {
    let mut value = String::new();
    let mut chars = text[start + 1..].char_indices().map(|(i, c)| (start + 1 + i, c)).peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '\'' if chars.peek().is_some_and(|(_, c)| *c == '\'') => {
                chars.next();
                value.push('\'');
            }
            '\'' => return Ok((value, at + 1 - start)),
            '\\' => {
                let Some((_, escaped)) = chars.next() else {
                    return Err(FilterError::new(
                        "\"\\\"",
                        at,
                        "a backslash escapes the next character and none follows: write \\\\ for a backslash and close the literal with '",
                    ));
                };
                value.push(match escaped {
                    '\\' | '\'' | '"' | '`' => escaped,
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'a' => '\u{7}',
                    'v' => '\u{b}',
                    'e' => '\u{1b}',
                    'x' => hex_escape(text, at)?,
                    other => {
                        return Err(FilterError::new(
                            format!("escape {:?}", format!("\\{other}")),
                            at,
                            "ClickHouse would read it as a bare character: the escapes are \\\\ \\' \\\" \\` \\n \\t \\r \\0 \\b \\f \\a \\v \\e \\xHH",
                        ));
                    }
                });
                if escaped == 'x' {
                    chars.next();
                    chars.next();
                }
            }
            c => value.push(c),
        }
    }
    Err(FilterError::new(
        "an unterminated string literal",
        start,
        "close it with ' (write '' or \\' for a quote inside it)",
    ))
}

/// The character of `\xHH` at `at` (the backslash): two hex digits below 80.
fn hex_escape(text: &str, at: usize) -> Result<char, FilterError> {
    let digits = text.get(at + 2..at + 4).filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()));
    match digits.and_then(|d| u8::from_str_radix(d, 16).ok()) {
        Some(byte) if byte.is_ascii() => Ok(char::from(byte)),
        Some(_) => Err(FilterError::new(
            format!("escape {:?}", &text[at..at + 4]),
            at,
            "\\x escapes stop at \\x7F: write a non-ASCII character as itself (UTF-8)",
        )),
        None => Err(FilterError::new("escape \"\\x\"", at, "\\x takes exactly two hex digits, e.g. \\x41")),
    }
}

/// The length of the number at `start`: `-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?`, no leading
/// zeros, not run into a word.
fn number(text: &str, start: usize) -> Result<usize, FilterError> {
    let bytes = text.as_bytes();
    let digits =
        |from: usize| bytes[from.min(bytes.len())..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut end = start + usize::from(bytes[start] == b'-');
    let integer = digits(end);
    if integer > 1 && bytes[end] == b'0' {
        return Err(FilterError::new(
            format!("number {:?}", super::truncated(&text[start..start + integer])),
            start,
            "a number has no leading zeros (ClickHouse may read them differently)",
        ));
    }
    end += integer;
    if bytes.get(end) == Some(&b'.') && digits(end + 1) > 0 {
        end += 1 + digits(end + 1);
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(end + 1), Some(b'+' | b'-')));
        let exponent = digits(end + 1 + sign);
        if exponent > 0 {
            end += 1 + sign + exponent;
        }
    }
    if bytes.get(end).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.') {
        let word_end = end
            + bytes[end..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'.')
                .count();
        return Err(FilterError::new(
            format!("number {:?}", super::truncated(&text[start..word_end])),
            start,
            "a number is -?[0-9]+(.[0-9]+)?(e[+-]?[0-9]+)? (no hex, no trailing dot, no letters)",
        ));
    }
    if end - start > MAX_NUMBER_BYTES {
        return Err(FilterError::new(
            format!("a number of {} bytes", end - start),
            start,
            format!("numbers have at most {MAX_NUMBER_BYTES} bytes"),
        ));
    }
    check_round_trip(&text[start..end], start)?;
    Ok(end - start)
}

/// Refuses a well-formed number that ClickHouse would not read as written. ClickHouse reads a
/// number with `strtod` and refuses the literal when it overflows or underflows (`ERANGE`):
/// `1e309` or `1e-400` would make a filter, and so a token, that every query fails with (a dead
/// token reporting Ready). An integer beyond 64 bits would be read as an inexact Float64.
fn check_round_trip(number: &str, at: usize) -> Result<(), FilterError> {
    let refuse =
        |reason: &str| Err(FilterError::new(format!("number {:?}", super::truncated(number)), at, reason));
    let is_integer = !number.contains(['.', 'e', 'E']);
    if is_integer {
        let fits = number.parse::<i64>().is_ok() || number.parse::<u64>().is_ok();
        return if fits {
            Ok(())
        } else {
            refuse(
                "an integer has at most 64 bits (from -9223372036854775808 to 18446744073709551615): ClickHouse would read it as an inexact Float64",
            )
        };
    }
    let Ok(value) = number.parse::<f64>() else {
        return refuse("not a number ClickHouse reads");
    };
    let mantissa = number.split(['e', 'E']).next().unwrap_or(number);
    let is_zero = mantissa.bytes().all(|b| matches!(b, b'0' | b'.' | b'-'));
    if !value.is_finite() || (!is_zero && value.abs() < f64::MIN_POSITIVE) {
        return refuse(
            "out of Float64's range (about 2.2e-308 to 1.8e308): ClickHouse refuses it, so every query with the token would fail",
        );
    }
    Ok(())
}

/// The reason a word is never allowed anywhere in a filter, when it has one.
pub(super) fn forbidden_word(word: &str) -> Option<&'static str> {
    match word.to_ascii_uppercase().as_str() {
        "AS" => Some("an alias could shadow the tenant column"),
        "SELECT" | "WITH" | "FROM" | "EXISTS" => {
            Some("a filter has no subqueries (it reads only the row it is given)")
        }
        _ => None,
    }
}

/// Refuses a word that is not a column name of the grammar.
pub(super) fn check_column(word: &str, at: usize) -> Result<(), FilterError> {
    let mut bytes = word.bytes();
    let well_formed = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let part = format!("column {:?}", super::truncated(word));
    if !well_formed {
        return Err(FilterError::new(part, at, "a column is [A-Za-z_][A-Za-z0-9_]*"));
    }
    if word.len() > MAX_COLUMN_BYTES {
        return Err(FilterError::new(
            part,
            at,
            format!("column names have at most {MAX_COLUMN_BYTES} bytes"),
        ));
    }
    if let Some(reason) = forbidden_word(word) {
        return Err(FilterError::new(format!("{word:?}"), at, reason));
    }
    if RESERVED_WORDS.iter().any(|r| r.eq_ignore_ascii_case(word)) {
        return Err(FilterError::new(
            part,
            at,
            "it is a keyword (of this grammar, or one ClickHouse reads as something other than a column)",
        ));
    }
    Ok(())
}
