//! Reading ClickHouse SQL just enough to know which tables a query reads: the names after `FROM`
//! and `JOIN` (table functions, subqueries and the query's own `WITH name AS (...)` aside). A
//! pipe description's `dependencies` and the nodes a pipe query needs both come from here.

/// A token of SQL text; `end` is the byte offset just past it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// A bare word: keyword or identifier.
    Word(String),
    /// A backquoted or double-quoted identifier.
    Quoted(String),
    /// A string or number literal.
    Literal,
    Symbol(char),
}

/// Functions whose arguments use `FROM` without naming a table (`EXTRACT(DAY FROM d)`).
const FROM_IN_ARGUMENTS: [&str; 5] = ["extract", "trim", "substring", "overlay", "position"];

/// The tables `sql` reads, in order of first appearance: data sources, pipe nodes, anything
/// named after `FROM` or `JOIN` (`db.table` kept whole).
pub(crate) fn tables_read(sql: &str) -> Vec<String> {
    let tokens: Vec<Token> = tokenize(sql).into_iter().map(|(token, _)| token).collect();
    let defined_here = common_table_names(&tokens);
    let mut tables: Vec<String> = Vec::new();
    let mut index = 0;
    while index < tokens.len() {
        if let Token::Word(word) = &tokens[index] {
            let lower = word.to_ascii_lowercase();
            if FROM_IN_ARGUMENTS.contains(&lower.as_str())
                && tokens.get(index + 1) == Some(&Token::Symbol('('))
            {
                index = after_matching_parenthesis(&tokens, index + 1);
                continue;
            }
            let array_join = index > 0 && is_word(&tokens[index - 1], "array");
            if (lower == "from" || (lower == "join" && !array_join))
                && let Some(table) = table_at(&tokens, index + 1)
                && !defined_here.contains(&table)
                && !tables.contains(&table)
            {
                tables.push(table);
            }
        }
        index += 1;
    }
    tables
}

/// The text after a leading `WITH` keyword (comments and whitespace before it allowed).
pub(crate) fn after_leading_with(sql: &str) -> Option<&str> {
    match tokenize(sql).first() {
        Some((token, end)) if is_word(token, "with") => sql.get(*end..),
        _ => None,
    }
}

fn is_word(token: &Token, wanted: &str) -> bool {
    matches!(token, Token::Word(word) if word.eq_ignore_ascii_case(wanted))
}

fn identifier(token: Option<&Token>) -> Option<&str> {
    match token? {
        Token::Word(name) | Token::Quoted(name) => Some(name),
        _ => None,
    }
}

/// The table named at `index`, `None` for a subquery or a table function.
fn table_at(tokens: &[Token], index: usize) -> Option<String> {
    let first = identifier(tokens.get(index))?;
    let (name, next) = match (tokens.get(index + 1), identifier(tokens.get(index + 2))) {
        (Some(Token::Symbol('.')), Some(second)) => (format!("{first}.{second}"), index + 3),
        _ => (first.to_owned(), index + 1),
    };
    (tokens.get(next) != Some(&Token::Symbol('('))).then_some(name)
}

/// Names the query defines with `WITH name AS (...)` (or `, name AS (...)` in that list).
fn common_table_names(tokens: &[Token]) -> Vec<String> {
    tokens
        .windows(4)
        .filter(|window| {
            (is_word(&window[0], "with") || window[0] == Token::Symbol(','))
                && is_word(&window[2], "as")
                && window[3] == Token::Symbol('(')
        })
        .filter_map(|window| identifier(Some(&window[1])).map(str::to_owned))
        .collect()
}

fn after_matching_parenthesis(tokens: &[Token], open: usize) -> usize {
    let mut depth = 0_usize;
    for (index, token) in tokens.iter().enumerate().skip(open) {
        match token {
            Token::Symbol('(') => depth += 1,
            Token::Symbol(')') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return index + 1;
                }
            }
            _ => {}
        }
    }
    tokens.len()
}

/// Tokens with the byte offset just past each; comments are skipped.
fn tokenize(sql: &str) -> Vec<(Token, usize)> {
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < sql.len() {
        let (token, length) = next_token(&sql[index..]);
        index += length.max(1);
        if let Some(token) = token {
            tokens.push((token, index));
        }
    }
    tokens
}

/// The token `rest` starts with (`None` for whitespace or a comment) and its length.
fn next_token(rest: &str) -> (Option<Token>, usize) {
    let first = rest.chars().next().unwrap_or(' ');
    let run = |stop: fn(char) -> bool| rest.find(stop).unwrap_or(rest.len());
    if first.is_whitespace() {
        (None, first.len_utf8())
    } else if rest.starts_with("--") || rest.starts_with("# ") || rest.starts_with("#!") {
        (None, run(|c| c == '\n'))
    } else if let Some(comment) = rest.strip_prefix("/*") {
        (None, comment.find("*/").map_or(rest.len(), |end| end + 4))
    } else if let Some(heredoc) = rest.strip_prefix("$$") {
        (Some(Token::Literal), heredoc.find("$$").map_or(rest.len(), |end| end + 4))
    } else if first.is_ascii_alphabetic() || first == '_' {
        let length = run(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'));
        (Some(Token::Word(rest[..length].to_owned())), length)
    } else if first.is_ascii_digit() {
        (Some(Token::Literal), run(|c| !(c.is_ascii_alphanumeric() || c == '.')))
    } else if first == '\'' {
        (Some(Token::Literal), quoted_length(rest, first))
    } else if first == '`' || first == '"' {
        let length = quoted_length(rest, first);
        let inner = rest.get(1..length.saturating_sub(1)).unwrap_or_default();
        (Some(Token::Quoted(inner.replace('\\', ""))), length)
    } else {
        (Some(Token::Symbol(first)), first.len_utf8())
    }
}

/// The length of a quoted run starting at `text[0]`, backslash escapes and doubled quotes
/// included (the whole rest when it is never closed).
fn quoted_length(text: &str, quote: char) -> usize {
    let mut characters = text.char_indices().skip(1).peekable();
    while let Some((index, character)) = characters.next() {
        if character == '\\' {
            characters.next();
        } else if character == quote {
            if characters.peek().is_some_and(|(_, next)| *next == quote) {
                characters.next();
            } else {
                return index + character.len_utf8();
            }
        }
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_tables_after_from_and_join() {
        assert_eq!(
            tables_read(
                "SELECT a.x FROM events AS a JOIN `users` u USING id LEFT JOIN tinybird.pipe_stats s ON 1 \
                 WHERE a.y IN (SELECT y FROM other) AND EXTRACT(DAY FROM d) = 1 ARRAY JOIN arr"
            ),
            ["events", "users", "tinybird.pipe_stats", "other"]
        );
    }

    #[test]
    fn ignores_subqueries_table_functions_literals_comments_and_common_tables() {
        let sql = "WITH recent AS (SELECT * FROM events), x AS (SELECT 1) \
                   SELECT 'FROM fake', $$ FROM heredoc $$ FROM recent -- FROM commented\n \
                   JOIN numbers(10) n ON 1 /* FROM hidden */ JOIN (SELECT 1 FROM one) o ON 1";
        assert_eq!(tables_read(sql), ["events", "one"]);
    }

    #[test]
    fn finds_a_leading_with() {
        assert_eq!(
            after_leading_with("  -- c\n with a AS (SELECT 1) SELECT *"),
            Some(" a AS (SELECT 1) SELECT *")
        );
        assert_eq!(after_leading_with("SELECT 1 WITH TOTALS"), None);
        assert_eq!(after_leading_with("withdrawals"), None);
    }
}
