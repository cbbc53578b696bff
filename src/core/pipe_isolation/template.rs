//! The template layer of a node's SQL, parsed as Tornado (which Tinybird uses) reads it: text,
//! `{{ expr }}` insertions, `{% if %}/{% elif %}/{% else %}/{% end %}`, `{% for %}`,
//! `{% set %}`, and `{# comments #}` (dropped, the text around them joined). A node is a template
//! only when its SQL starts with `%`; otherwise its text is plain SQL.

use super::expr::{Expr, parse_expr, parse_for, parse_set};

/// Deepest nesting of `{% if %}` and `{% for %}` blocks.
const MAX_BLOCK_DEPTH: usize = 32;

/// One piece of a parsed template. Text and insertions are "leaves", numbered in order of
/// appearance: the SQL pass records what each leaf adds to the query.
#[derive(Clone, Debug)]
pub(super) enum Item {
    Text { leaf: usize, text: String },
    Insert { leaf: usize, expr: Expr },
    If { branches: Vec<(Expr, Vec<Item>)>, otherwise: Option<Vec<Item>> },
    For { targets: Vec<String>, iter: Expr, body: Vec<Item> },
    Set { target: String, value: Expr },
}

/// A parsed node.
#[derive(Clone, Debug)]
pub(super) struct Template {
    pub items: Vec<Item>,
    /// How many leaves the items hold.
    pub leaves: usize,
}

impl Template {
    /// Calls `visit` on every expression of the template, in every branch.
    pub(super) fn walk_exprs(&self, visit: &mut dyn FnMut(&Expr)) {
        walk_items(&self.items, visit);
    }
}

fn walk_items(items: &[Item], visit: &mut dyn FnMut(&Expr)) {
    for item in items {
        match item {
            Item::Text { .. } => {}
            Item::Insert { expr, .. } | Item::Set { value: expr, .. } => expr.walk(visit),
            Item::If { branches, otherwise } => {
                for (cond, body) in branches {
                    cond.walk(visit);
                    walk_items(body, visit);
                }
                if let Some(body) = otherwise {
                    walk_items(body, visit);
                }
            }
            Item::For { iter, body, .. } => {
                iter.walk(visit);
                walk_items(body, visit);
            }
        }
    }
}

/// Parses a node's SQL. Errors say what is wrong and on which line.
pub(super) fn parse(sql: &str) -> Result<Template, String> {
    let trimmed = sql.trim_start();
    let Some(body) = trimmed.strip_prefix('%') else {
        let items = vec![Item::Text { leaf: 0, text: sql.to_owned() }];
        return Ok(Template { items, leaves: 1 });
    };
    let mut parser = Parser { text: body, at: 0, leaves: 0, depth: 0 };
    let (items, end) = parser.block()?;
    match end {
        Closer::Eof => Ok(Template { items, leaves: parser.leaves }),
        Closer::End | Closer::Else | Closer::Elif(_) => {
            Err(parser.located("a {% end %}, {% else %} or {% elif %} has no opening {% if %} or {% for %}"))
        }
    }
}

/// What ended a block.
enum Closer {
    Eof,
    End,
    Else,
    Elif(Expr),
}

/// One lexical piece of the template text.
enum Piece<'a> {
    Text(&'a str),
    Expr(&'a str),
    Statement(&'a str),
    Comment,
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
    leaves: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn located(&self, message: &str) -> String {
        let line = self.text.get(..self.at).map_or(1, |done| done.matches('\n').count() + 1);
        format!("line {line}: {message}")
    }

    fn expr(&self, code: &str) -> Result<Expr, String> {
        parse_expr(code).map_err(|why| self.located(&why))
    }

    fn next_leaf(&mut self) -> usize {
        self.leaves += 1;
        self.leaves - 1
    }

    /// Items up to the statement that ends the block (or the end of the text).
    fn block(&mut self) -> Result<(Vec<Item>, Closer), String> {
        let mut items: Vec<Item> = Vec::new();
        while let Some(piece) = self.piece()? {
            match piece {
                Piece::Text(text) => self.push_text(&mut items, text),
                Piece::Comment => {}
                Piece::Expr(code) => {
                    let expr = self.expr(code)?;
                    items.push(Item::Insert { leaf: self.next_leaf(), expr });
                }
                Piece::Statement(code) => {
                    if let Some(end) = self.statement(code, &mut items)? {
                        return Ok((items, end));
                    }
                }
            }
        }
        Ok((items, Closer::Eof))
    }

    /// Text joins the text before it (a removed comment must not split a SQL word in two).
    fn push_text(&mut self, items: &mut Vec<Item>, text: &str) {
        if let Some(Item::Text { text: last, .. }) = items.last_mut() {
            last.push_str(text);
        } else {
            let leaf = self.next_leaf();
            items.push(Item::Text { leaf, text: text.to_owned() });
        }
    }

    /// Handles one `{% %}`: pushes an item, or returns the end of the current block.
    fn statement(&mut self, code: &str, items: &mut Vec<Item>) -> Result<Option<Closer>, String> {
        let (keyword, rest) = code.split_once(char::is_whitespace).unwrap_or((code, ""));
        let rest = rest.trim();
        match keyword {
            "end" if rest.is_empty() => return Ok(Some(Closer::End)),
            "else" if rest.is_empty() => return Ok(Some(Closer::Else)),
            "elif" => return Ok(Some(Closer::Elif(self.expr(rest)?))),
            "if" => {
                let cond = self.expr(rest)?;
                items.push(self.if_block(cond)?);
            }
            "for" => {
                let (targets, iter) = parse_for(rest).map_err(|why| self.located(&why))?;
                let body = self.nested(Self::block)?;
                match body.1 {
                    Closer::End => items.push(Item::For { targets, iter, body: body.0 }),
                    Closer::Eof => return Err(self.located("a {% for %} has no {% end %}")),
                    Closer::Else | Closer::Elif(_) => {
                        return Err(self.located("{% for %} ... {% else %} is not analysed"));
                    }
                }
            }
            "set" => {
                let (target, value) = parse_set(rest).map_err(|why| self.located(&why))?;
                items.push(Item::Set { target, value });
            }
            "raw" => {
                let expr = self.expr(rest)?;
                items.push(Item::Insert { leaf: self.next_leaf(), expr });
            }
            "comment" => {}
            "" => return Err(self.located("an empty {% %} statement")),
            other => {
                let shown = crate::core::redact::prefix(other, 24);
                return Err(self.located(&format!("the template statement {{% {shown} %}} is not analysed")));
            }
        }
        Ok(None)
    }

    fn if_block(&mut self, first: Expr) -> Result<Item, String> {
        let mut branches = Vec::new();
        let mut cond = first;
        loop {
            let (body, end) = self.nested(Self::block)?;
            branches.push((cond, body));
            match end {
                Closer::End => return Ok(Item::If { branches, otherwise: None }),
                Closer::Elif(next) => cond = next,
                Closer::Else => {
                    let (body, end) = self.nested(Self::block)?;
                    return match end {
                        Closer::End => Ok(Item::If { branches, otherwise: Some(body) }),
                        Closer::Eof => Err(self.located("an {% if %} has no {% end %}")),
                        Closer::Else | Closer::Elif(_) => {
                            Err(self.located("an {% else %} is followed by another branch"))
                        }
                    };
                }
                Closer::Eof => return Err(self.located("an {% if %} has no {% end %}")),
            }
        }
    }

    fn nested<T>(&mut self, inner: impl FnOnce(&mut Self) -> Result<T, String>) -> Result<T, String> {
        self.depth += 1;
        if self.depth > MAX_BLOCK_DEPTH {
            return Err(self.located(&format!("template blocks nest deeper than {MAX_BLOCK_DEPTH}")));
        }
        let result = inner(self);
        self.depth -= 1;
        result
    }

    /// The next piece, as Tornado's reader splits it.
    fn piece(&mut self) -> Result<Option<Piece<'a>>, String> {
        let text: &'a str = self.text;
        let rest = text.get(self.at..).unwrap_or("");
        if rest.is_empty() {
            return Ok(None);
        }
        let Some(open) = find_opening(rest) else {
            self.at = self.text.len();
            return Ok(Some(Piece::Text(rest)));
        };
        if open > 0 {
            self.at += open;
            return Ok(Some(Piece::Text(&rest[..open])));
        }
        let kind = rest.as_bytes().get(1).copied().unwrap_or(b'{');
        if rest.as_bytes().get(2) == Some(&b'!') {
            // `{{!`, `{%!` and `{#!` write `{{`, `{%` and `{#` as text.
            self.at += 3;
            return Ok(Some(Piece::Text(&rest[..2])));
        }
        let close = match kind {
            b'{' => "}}",
            b'%' => "%}",
            _ => "#}",
        };
        let Some(len) = rest[2..].find(close) else {
            let opening = &rest[..2];
            return Err(self.located(&format!("a {opening} has no closing {close}")));
        };
        let inner = rest[2..2 + len].trim();
        self.at += 2 + len + 2;
        Ok(Some(match kind {
            b'{' if inner.is_empty() => return Err(self.located("an empty {{ }} expression")),
            b'{' => Piece::Expr(inner),
            b'%' => Piece::Statement(inner),
            _ => Piece::Comment,
        }))
    }
}

/// Where the next `{{`, `{%` or `{#` starts. With more than two braces in a row, the last two
/// open the expression (Tornado's rule).
fn find_opening(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(found) = text.get(from..)?.find('{') {
        let at = from + found;
        match bytes.get(at + 1) {
            Some(b'{') if bytes.get(at + 2) == Some(&b'{') => from = at + 1,
            Some(b'{' | b'%' | b'#') => return Some(at),
            _ => from = at + 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .filter_map(|item| match item {
                Item::Text { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn plain_sql_is_one_text_leaf() {
        let template = parse("SELECT {{x}} FROM t").unwrap();
        assert_eq!(template.leaves, 1);
        assert_eq!(texts(&template.items), vec!["SELECT {{x}} FROM t".to_owned()]);
    }

    #[test]
    fn parses_branches_loops_sets_and_insertions() {
        let sql = "%\nSELECT * FROM t WHERE 1\n{% if defined(a) %} AND a = {{String(a)}}\n{% elif b %} AND b = 1\n\
                   {% else %}{{ error('no') }}{% end %}\n\
                   {% for x in split_to_array(xs, '') %} AND {{x}} {% end %}{% set y = 1 %}";
        let template = parse(sql).unwrap();
        assert!(
            matches!(&template.items[1], Item::If { branches, otherwise: Some(_) } if branches.len() == 2)
        );
        assert!(matches!(&template.items[3], Item::For { targets, .. } if targets == &["x".to_owned()]));
        assert!(matches!(&template.items[4], Item::Set { target, .. } if target == "y"));
        assert_eq!(template.leaves, 10);
    }

    #[test]
    fn drops_comments_and_joins_the_text_around_them() {
        let template = parse("% SELECT * FROM ev{# a comment with {{ org }} #}ents {# #}").unwrap();
        assert_eq!(texts(&template.items), vec![" SELECT * FROM events ".to_owned()]);
        let escaped = parse("% SELECT '{{!x}}'").unwrap();
        assert_eq!(texts(&escaped.items), vec![" SELECT '{{x}}'".to_owned()]);
        let braces = parse("% SELECT {{{x}}}").unwrap();
        assert!(matches!(&braces.items[1], Item::Insert { .. }));
    }

    #[test]
    fn refuses_unbalanced_or_unknown_blocks_with_the_line() {
        for (sql, part) in [
            ("% SELECT {% if a %} 1", "has no {% end %}"),
            ("% SELECT 1 {% end %}", "no opening"),
            ("% SELECT {{ a ", "has no closing }}"),
            ("% SELECT {{ }}", "empty {{ }}"),
            (
                "% SELECT\n{% while a %}{% end %}",
                "line 2: the template statement {% while %} is not analysed",
            ),
            ("% {% for x in y %}{% else %}{% end %}", "not analysed"),
            ("% {% if a %}{% else %}{% elif b %}{% end %}", "followed by another branch"),
            ("% {% import os %}", "not analysed"),
        ] {
            let error = parse(sql).unwrap_err();
            assert!(error.contains(part), "{sql:?}: {error}");
        }
        let deep = format!("% {}{}", "{% if a %}".repeat(40), "{% end %}".repeat(40));
        assert!(parse(&deep).unwrap_err().contains("nest deeper"));
    }
}
