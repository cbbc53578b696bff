//! Template expressions: the Python subset Tinybird templates use, tokenized and parsed into a
//! small tree. Anything outside the subset (attributes, subscripts, lambdas, comprehensions...)
//! is refused with a message saying so.

use super::value::Value;
use super::{MAX_EXPRESSION_DEPTH, MAX_LIST_ITEMS, TemplateError};

/// An expression.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Expr {
    Literal(Value),
    Name(String),
    List(Vec<Expr>),
    Call { function: String, args: Vec<Expr>, kwargs: Vec<(String, Expr)> },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Box<Expr>, CompareOp, Box<Expr>),
    Add(Box<Expr>, Box<Expr>),
    Subtract(Box<Expr>, Box<Expr>),
    Negate(Box<Expr>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CompareOp {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    In,
    NotIn,
    Is,
    IsNot,
}

/// Positional and keyword arguments (or a list's items, all positional).
type Arguments = (Vec<Expr>, Vec<(String, Expr)>);

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Name(String),
    Literal(Value),
    Symbol(&'static str),
}

const SYMBOLS: [&str; 15] = ["==", "!=", "<=", ">=", "<", ">", "(", ")", "[", "]", ",", "=", "+", "-", "."];

const KEYWORDS: [&str; 35] = [
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue", "def",
    "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is",
    "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

/// Python's keywords: never parameter names.
pub(super) fn is_keyword(name: &str) -> bool {
    KEYWORDS.contains(&name)
}

/// Names Tinybird refuses as variables (`"format" can not be used as a variable name`).
pub(super) fn is_reserved_variable(name: &str) -> bool {
    matches!(name, "format" | "q")
}

/// Parses `{{ code }}` or an `if` / `elif` condition.
pub(super) fn parse(code: &str, line: usize) -> Result<Expr, TemplateError> {
    let mut parser = Parser { tokens: tokenize(code, line)?, position: 0, line, depth: 0 };
    let expr = parser.expression()?;
    parser.finish(code)?;
    Ok(expr)
}

/// Parses `name = expr` (the body of `{% set %}`).
pub(super) fn parse_assignment(code: &str, line: usize) -> Result<(String, Expr), TemplateError> {
    let mut parser = Parser { tokens: tokenize(code, line)?, position: 0, line, depth: 0 };
    let Some(Token::Name(name)) = parser.next() else {
        return Err(invalid(line, "`set` needs `name = expression`"));
    };
    if is_keyword(&name) || parser.next() != Some(Token::Symbol("=")) {
        return Err(invalid(line, "`set` needs `name = expression`"));
    }
    let expr = parser.expression()?;
    parser.finish(code)?;
    Ok((name, expr))
}

fn invalid(line: usize, detail: &str) -> TemplateError {
    TemplateError::plain(format!("invalid syntax, line {line}: {detail}"))
}

fn tokenize(code: &str, line: usize) -> Result<Vec<Token>, TemplateError> {
    let mut tokens = Vec::new();
    let mut rest = code.trim_start();
    while !rest.is_empty() {
        let first = rest.chars().next().unwrap_or(' ');
        let (token, length) = if first.is_ascii_alphabetic() || first == '_' {
            let length = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            (Token::Name(rest[..length].to_owned()), length)
        } else if first.is_ascii_digit()
            || (first == '.' && rest[1..].starts_with(|c: char| c.is_ascii_digit()))
        {
            number(rest, line)?
        } else if first == '\'' || first == '"' {
            string(rest, first, line)?
        } else if let Some(symbol) = SYMBOLS.iter().find(|symbol| rest.starts_with(**symbol)) {
            (Token::Symbol(symbol), symbol.len())
        } else {
            return Err(invalid(line, &format!("the emulator's templates do not support {first:?}")));
        };
        tokens.push(token);
        rest = rest[length..].trim_start();
    }
    Ok(tokens)
}

fn number(text: &str, line: usize) -> Result<(Token, usize), TemplateError> {
    let bytes = text.as_bytes();
    let mut length = bytes.iter().take_while(|byte| byte.is_ascii_digit() || **byte == b'.').count();
    if matches!(bytes.get(length), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(length + 1), Some(b'+' | b'-')));
        let digits = bytes[length + 1 + sign..].iter().take_while(|byte| byte.is_ascii_digit()).count();
        if digits > 0 {
            length += 1 + sign + digits;
        }
    }
    let literal = &text[..length];
    let value = if literal.contains(['.', 'e', 'E']) {
        literal.parse::<f64>().ok().map(Value::Float)
    } else {
        literal.parse::<i128>().ok().map(Value::Int)
    };
    let value = value.ok_or_else(|| invalid(line, &format!("cannot read the number {literal}")))?;
    Ok((Token::Literal(value), length))
}

fn string(text: &str, quote: char, line: usize) -> Result<(Token, usize), TemplateError> {
    let mut value = String::new();
    let mut characters = text.char_indices().skip(1);
    while let Some((index, character)) = characters.next() {
        match character {
            '\\' => {
                let Some((_, escaped)) = characters.next() else { break };
                match escaped {
                    'n' => value.push('\n'),
                    't' => value.push('\t'),
                    'r' => value.push('\r'),
                    '0' => value.push('\0'),
                    '\\' | '\'' | '"' => value.push(escaped),
                    other => {
                        value.push('\\');
                        value.push(other);
                    }
                }
            }
            c if c == quote => return Ok((Token::Literal(Value::Str(value)), index + 1)),
            c => value.push(c),
        }
    }
    Err(invalid(line, "unterminated string"))
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
    line: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.position).cloned();
        self.position += 1;
        token
    }

    fn peek_is(&self, wanted: &str) -> bool {
        match self.peek() {
            Some(Token::Symbol(symbol)) => *symbol == wanted,
            Some(Token::Name(name)) => name == wanted,
            _ => false,
        }
    }

    fn eat(&mut self, wanted: &str) -> bool {
        let found = self.peek_is(wanted);
        if found {
            self.position += 1;
        }
        found
    }

    fn expect(&mut self, wanted: &str) -> Result<(), TemplateError> {
        if self.eat(wanted) { Ok(()) } else { Err(invalid(self.line, &format!("expected `{wanted}`"))) }
    }

    fn finish(&self, code: &str) -> Result<(), TemplateError> {
        match self.peek() {
            None => Ok(()),
            Some(Token::Symbol(".")) => {
                Err(invalid(self.line, "the emulator's templates support no attributes"))
            }
            Some(_) => Err(invalid(self.line, &format!("unexpected text in `{code}`"))),
        }
    }

    fn deeper(&mut self) -> Result<(), TemplateError> {
        self.depth += 1;
        if self.depth > MAX_EXPRESSION_DEPTH {
            return Err(TemplateError::plain(format!(
                "An expression nests deeper than {MAX_EXPRESSION_DEPTH} levels (emulator limit), line {}",
                self.line
            )));
        }
        Ok(())
    }

    fn expression(&mut self) -> Result<Expr, TemplateError> {
        self.deeper()?;
        let mut left = self.conjunction()?;
        while self.eat("or") {
            left = Expr::Or(Box::new(left), Box::new(self.conjunction()?));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn conjunction(&mut self) -> Result<Expr, TemplateError> {
        let mut left = self.negation()?;
        while self.eat("and") {
            left = Expr::And(Box::new(left), Box::new(self.negation()?));
        }
        Ok(left)
    }

    fn negation(&mut self) -> Result<Expr, TemplateError> {
        if self.eat("not") {
            self.deeper()?;
            let operand = self.negation()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(operand)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, TemplateError> {
        let left = self.sum()?;
        let Some(op) = self.compare_op() else { return Ok(left) };
        let right = self.sum()?;
        if self.compare_op().is_some() {
            return Err(invalid(self.line, "the emulator's templates do not chain comparisons"));
        }
        Ok(Expr::Compare(Box::new(left), op, Box::new(right)))
    }

    fn compare_op(&mut self) -> Option<CompareOp> {
        let op = match self.peek()? {
            Token::Symbol("==") => CompareOp::Equal,
            Token::Symbol("!=") => CompareOp::NotEqual,
            Token::Symbol("<") => CompareOp::Less,
            Token::Symbol("<=") => CompareOp::LessOrEqual,
            Token::Symbol(">") => CompareOp::Greater,
            Token::Symbol(">=") => CompareOp::GreaterOrEqual,
            Token::Name(name) if name == "in" => CompareOp::In,
            Token::Name(name) if name == "is" => {
                self.position += 1;
                return Some(if self.eat("not") { CompareOp::IsNot } else { CompareOp::Is });
            }
            Token::Name(name) if name == "not" => {
                if self.tokens.get(self.position + 1) != Some(&Token::Name("in".to_owned())) {
                    return None;
                }
                self.position += 1;
                CompareOp::NotIn
            }
            _ => return None,
        };
        self.position += 1;
        Some(op)
    }

    fn sum(&mut self) -> Result<Expr, TemplateError> {
        let mut left = self.unary()?;
        loop {
            if self.eat("+") {
                left = Expr::Add(Box::new(left), Box::new(self.unary()?));
            } else if self.eat("-") {
                left = Expr::Subtract(Box::new(left), Box::new(self.unary()?));
            } else {
                return Ok(left);
            }
        }
    }

    fn unary(&mut self) -> Result<Expr, TemplateError> {
        if self.eat("-") {
            self.deeper()?;
            let operand = self.unary()?;
            self.depth -= 1;
            return Ok(match operand {
                Expr::Literal(Value::Int(number)) => Expr::Literal(Value::Int(-number)),
                Expr::Literal(Value::Float(number)) => Expr::Literal(Value::Float(-number)),
                other => Expr::Negate(Box::new(other)),
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, TemplateError> {
        match self.next() {
            Some(Token::Literal(value)) => Ok(Expr::Literal(value)),
            Some(Token::Name(name)) => self.name(name),
            Some(Token::Symbol("(")) => {
                let inner = self.expression()?;
                self.expect(")")?;
                Ok(inner)
            }
            Some(Token::Symbol("[")) => Ok(Expr::List(self.items("]")?.0)),
            _ => Err(invalid(self.line, "expected a value")),
        }
    }

    fn name(&mut self, name: String) -> Result<Expr, TemplateError> {
        match name.as_str() {
            "None" => return Ok(Expr::Literal(Value::None)),
            "True" => return Ok(Expr::Literal(Value::Bool(true))),
            "False" => return Ok(Expr::Literal(Value::Bool(false))),
            keyword if is_keyword(keyword) => {
                return Err(invalid(self.line, &format!("`{keyword}` is not supported here")));
            }
            _ => {}
        }
        if self.eat("(") {
            let (args, kwargs) = self.items(")")?;
            return Ok(Expr::Call { function: name, args, kwargs });
        }
        if is_reserved_variable(&name) {
            return Err(TemplateError::plain(format!(
                "\"{name}\" can not be used as a variable name, line {}",
                self.line
            )));
        }
        Ok(Expr::Name(name))
    }

    /// Comma-separated items up to `close`: positional ones, then `name=value` ones (calls only).
    fn items(&mut self, close: &str) -> Result<Arguments, TemplateError> {
        self.deeper()?;
        let (mut args, mut kwargs) = (Vec::new(), Vec::new());
        while !self.eat(close) {
            if args.len() + kwargs.len() >= MAX_LIST_ITEMS {
                return Err(invalid(self.line, "too many items"));
            }
            let keyword = match (self.peek(), self.tokens.get(self.position + 1)) {
                (Some(Token::Name(name)), Some(Token::Symbol("="))) if close == ")" => Some(name.clone()),
                _ => None,
            };
            if let Some(keyword) = keyword {
                self.position += 2;
                kwargs.push((keyword, self.expression()?));
            } else if kwargs.is_empty() {
                args.push(self.expression()?);
            } else {
                return Err(invalid(self.line, "positional argument follows keyword argument"));
            }
            if !self.eat(",") {
                self.expect(close)?;
                break;
            }
        }
        self.depth -= 1;
        Ok((args, kwargs))
    }
}
