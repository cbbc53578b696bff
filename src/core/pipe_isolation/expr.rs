//! Expressions of Tinybird's template language (`{{ expr }}`, `{% if expr %}`, `{% set x = expr %}`,
//! `{% for x in expr %}`): the subset of Python that pipes use, parsed into an owned tree.
//! Anything outside the subset (lambdas, comprehensions, `**`, f-strings) is refused with why.
//!
//! ```text
//! expr       := or [ 'if' or 'else' expr ]
//! or         := and ( 'or' and )*
//! and        := not ( 'and' not )*
//! not        := 'not' not | comparison
//! comparison := arith ( cmp arith )*          cmp: == != < > <= >= in, not in, is, is not
//! arith      := term ( ('+' | '-') term )*
//! term       := unary ( ('*' | '/' | '//' | '%') unary )*
//! unary      := ('-' | '+' | '~') unary | postfix
//! postfix    := atom ( '(' args ')' | '.' name | '[' subscript ']' )*
//! atom       := name | string+ | number | '(' [expr (',' expr)*] ')' | '[' ... ']' | '{' ... '}'
//! args       := ( expr | name '=' expr ) separated by ','
//! ```

/// Deepest nesting of an expression's tree: parentheses, calls, subscripts, and each operand of
/// a chain of `or`, `and` or comparisons (which nest as they are built).
const MAX_DEPTH: usize = 64;

/// A parsed template expression.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Expr {
    Name(String),
    Str(String),
    Num(String),
    True,
    False,
    None,
    /// A list, tuple, set or dict literal (the analyser needs only its items).
    Items(Vec<Expr>),
    Call {
        func: Box<Expr>,
        args: Vec<Expr>,
        kwargs: Vec<(String, Expr)>,
    },
    /// `obj.name`, `obj[index]`, or a slice: the analyser does not follow them.
    Member(Box<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Box<Expr>, CmpOp, Box<Expr>),
    /// Arithmetic, concatenation, negation.
    Arith(Vec<Expr>),
    IfElse {
        then: Box<Expr>,
        cond: Box<Expr>,
        otherwise: Box<Expr>,
    },
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CmpOp {
    Eq,
    NotEq,
    Is,
    IsNot,
    /// `<`, `>`, `<=`, `>=`, `in`, `not in`: never decided by the analyser.
    Other,
}

impl Expr {
    /// Calls `visit` on this expression and every expression inside it.
    pub(super) fn walk(&self, visit: &mut dyn FnMut(&Expr)) {
        visit(self);
        match self {
            Self::Items(items) | Self::Arith(items) => items.iter().for_each(|item| item.walk(visit)),
            Self::Call { func, args, kwargs } => {
                func.walk(visit);
                args.iter().for_each(|arg| arg.walk(visit));
                kwargs.iter().for_each(|(_, arg)| arg.walk(visit));
            }
            Self::Member(inner) | Self::Not(inner) => inner.walk(visit),
            Self::And(left, right) | Self::Or(left, right) | Self::Compare(left, _, right) => {
                left.walk(visit);
                right.walk(visit);
            }
            Self::IfElse { then, cond, otherwise } => {
                then.walk(visit);
                cond.walk(visit);
                otherwise.walk(visit);
            }
            Self::Name(_) | Self::Str(_) | Self::Num(_) | Self::True | Self::False | Self::None => {}
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Name(String),
    Str(String),
    Num(String),
    Op(&'static str),
}

/// Operators, longest first so that `//` wins over `/`.
const OPERATORS: &[&str] = &[
    "**", "//", "==", "!=", "<=", ">=", "<<", ">>", "(", ")", "[", "]", "{", "}", ",", ":", ".", "=", "<",
    ">", "+", "-", "*", "/", "%", "~", "&", "|", "^",
];

/// Parses a whole expression.
pub(super) fn parse_expr(text: &str) -> Result<Expr, String> {
    let mut parser = Parser::new(text)?;
    let expr = parser.expr()?;
    parser.finish()?;
    Ok(expr)
}

/// Parses the part of `{% for a, b in expr %}` after `for`: the loop names and the iterable.
pub(super) fn parse_for(text: &str) -> Result<(Vec<String>, Expr), String> {
    let mut parser = Parser::new(text)?;
    let mut targets = Vec::new();
    loop {
        match parser.next() {
            Some(Tok::Name(name)) if !is_keyword(&name) => targets.push(name),
            _ => return Err("a {% for %} loop names its variables before `in`".to_owned()),
        }
        if !parser.eat_op(",") {
            break;
        }
    }
    if !parser.eat_name("in") {
        return Err("a {% for %} loop reads `for name in expression`".to_owned());
    }
    let iter = parser.expr()?;
    parser.finish()?;
    Ok((targets, iter))
}

/// Parses the part of `{% set name = expr %}` after `set`.
pub(super) fn parse_set(text: &str) -> Result<(String, Expr), String> {
    let mut parser = Parser::new(text)?;
    let target = match parser.next() {
        Some(Tok::Name(name)) if !is_keyword(&name) => name,
        _ => return Err("a {% set %} statement reads `set name = expression`".to_owned()),
    };
    if !parser.eat_op("=") {
        return Err("a {% set %} statement reads `set name = expression`".to_owned());
    }
    let value = parser.expr()?;
    parser.finish()?;
    Ok((target, value))
}

fn is_keyword(word: &str) -> bool {
    matches!(
        word,
        "and" | "or" | "not" | "in" | "is" | "if" | "else" | "for" | "lambda" | "None" | "True" | "False"
    )
}

/// A call's positional and keyword arguments.
type CallArgs = (Vec<Expr>, Vec<(String, Expr)>);

struct Parser {
    tokens: Vec<Tok>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn new(text: &str) -> Result<Self, String> {
        Ok(Self { tokens: lex(text)?, at: 0, depth: 0 })
    }

    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Tok> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn peek_op(&self, op: &str) -> bool {
        matches!(self.peek(), Some(Tok::Op(found)) if *found == op)
    }

    fn peek_name(&self, name: &str) -> bool {
        matches!(self.peek(), Some(Tok::Name(found)) if found == name)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        let found = self.peek_op(op);
        if found {
            self.at += 1;
        }
        found
    }

    fn eat_name(&mut self, name: &str) -> bool {
        let found = self.peek_name(name);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect_op(&mut self, op: &str) -> Result<(), String> {
        if self.eat_op(op) { Ok(()) } else { Err(format!("expected `{op}` in a template expression")) }
    }

    fn finish(&self) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err("a template expression continues after its end".to_owned()),
        }
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("a template expression nests deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, String> {
        self.enter()?;
        let then = self.or()?;
        let expr = if self.eat_name("if") {
            let cond = self.or()?;
            if !self.eat_name("else") {
                return Err("a conditional expression `a if c else b` lacks its `else`".to_owned());
            }
            let otherwise = self.expr()?;
            Expr::IfElse { then: Box::new(then), cond: Box::new(cond), otherwise: Box::new(otherwise) }
        } else {
            then
        };
        if self.peek_name("for") {
            return Err("comprehensions (`for` inside an expression) are not analysed".to_owned());
        }
        self.depth -= 1;
        Ok(expr)
    }

    fn or(&mut self) -> Result<Expr, String> {
        let depth = self.depth;
        let mut left = self.and()?;
        while self.eat_name("or") {
            self.enter()?;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        self.depth = depth;
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let depth = self.depth;
        let mut left = self.not()?;
        while self.eat_name("and") {
            self.enter()?;
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        self.depth = depth;
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.eat_name("not") {
            self.enter()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        let first = self.arith()?;
        let mut pairs: Vec<Expr> = Vec::new();
        let mut left = first.clone();
        let depth = self.depth;
        while let Some(op) = self.cmp_op() {
            self.enter()?;
            let right = self.arith()?;
            pairs.push(Expr::Compare(Box::new(left), op, Box::new(right.clone())));
            left = right;
        }
        self.depth = depth;
        // `a < b < c` is `a < b and b < c`, as in Python.
        let mut pairs = pairs.into_iter();
        let Some(mut expr) = pairs.next() else { return Ok(first) };
        for pair in pairs {
            expr = Expr::And(Box::new(expr), Box::new(pair));
        }
        Ok(expr)
    }

    fn cmp_op(&mut self) -> Option<CmpOp> {
        let op = match self.peek()? {
            Tok::Op("==") => CmpOp::Eq,
            Tok::Op("!=") => CmpOp::NotEq,
            Tok::Op("<" | ">" | "<=" | ">=") => CmpOp::Other,
            Tok::Name(name) if name == "in" => CmpOp::Other,
            Tok::Name(name) if name == "is" => {
                self.at += 1;
                return Some(if self.eat_name("not") { CmpOp::IsNot } else { CmpOp::Is });
            }
            Tok::Name(name) if name == "not" => {
                if !matches!(self.tokens.get(self.at + 1), Some(Tok::Name(next)) if next == "in") {
                    return None;
                }
                self.at += 2;
                return Some(CmpOp::Other);
            }
            _ => return None,
        };
        self.at += 1;
        Some(op)
    }

    fn arith(&mut self) -> Result<Expr, String> {
        let first = self.term()?;
        let mut operands = vec![first];
        while self.eat_op("+") || self.eat_op("-") {
            operands.push(self.term()?);
        }
        Ok(single_or_arith(operands))
    }

    fn term(&mut self) -> Result<Expr, String> {
        let first = self.unary()?;
        let mut operands = vec![first];
        while self.eat_op("*") || self.eat_op("/") || self.eat_op("//") || self.eat_op("%") {
            operands.push(self.unary()?);
        }
        Ok(single_or_arith(operands))
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat_op("-") || self.eat_op("+") || self.eat_op("~") {
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Arith(vec![inner]));
        }
        let expr = self.postfix()?;
        if self.peek_op("**") {
            return Err("the power operator `**` is refused by Tinybird".to_owned());
        }
        Ok(expr)
    }

    fn postfix(&mut self) -> Result<Expr, String> {
        let depth = self.depth;
        let mut expr = self.atom()?;
        loop {
            if self.peek_op("(") || self.peek_op(".") || self.peek_op("[") {
                // Each call, member or subscript wraps the expression one level deeper.
                self.enter()?;
            }
            if self.eat_op("(") {
                self.enter()?;
                let (args, kwargs) = self.call_args()?;
                self.depth -= 1;
                expr = Expr::Call { func: Box::new(expr), args, kwargs };
            } else if self.eat_op(".") {
                match self.next() {
                    Some(Tok::Name(_)) => expr = Expr::Member(Box::new(expr)),
                    _ => return Err("a `.` is not followed by a name".to_owned()),
                }
            } else if self.eat_op("[") {
                self.enter()?;
                let index = self.sequence("]")?;
                self.depth -= 1;
                expr = Expr::Member(Box::new(Expr::Items(vec![expr, Expr::Items(index)])));
            } else {
                self.depth = depth;
                return Ok(expr);
            }
        }
    }

    /// Arguments up to the closing `)`, which it consumes.
    fn call_args(&mut self) -> Result<CallArgs, String> {
        let mut args = Vec::new();
        let mut kwargs = Vec::new();
        while !self.eat_op(")") {
            if self.peek_op("*") || self.peek_op("**") {
                return Err("`*args` and `**kwargs` in a call are not analysed".to_owned());
            }
            let keyword = match (self.peek(), self.tokens.get(self.at + 1)) {
                (Some(Tok::Name(name)), Some(Tok::Op("="))) if !is_keyword(name) => Some(name.clone()),
                _ => None,
            };
            if let Some(name) = keyword {
                self.at += 2;
                kwargs.push((name, self.expr()?));
            } else if kwargs.is_empty() {
                args.push(self.expr()?);
            } else {
                return Err("a positional argument follows a keyword argument".to_owned());
            }
            if !self.eat_op(",") {
                self.expect_op(")")?;
                break;
            }
        }
        Ok((args, kwargs))
    }

    /// Expressions separated by `,` or `:` up to `close`, which it consumes (lists, tuples,
    /// dicts, subscripts and slices alike: the analyser needs only the items).
    fn sequence(&mut self, close: &str) -> Result<Vec<Expr>, String> {
        let mut items = Vec::new();
        while !self.eat_op(close) {
            if self.eat_op(",") || self.eat_op(":") {
                continue;
            }
            if self.peek().is_none() {
                return Err(format!("expected `{close}` in a template expression"));
            }
            items.push(self.expr()?);
        }
        Ok(items)
    }

    fn atom(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Name(name)) => match name.as_str() {
                "None" => Ok(Expr::None),
                "True" => Ok(Expr::True),
                "False" => Ok(Expr::False),
                "lambda" => Err("lambdas are not analysed".to_owned()),
                _ if is_keyword(&name) => Err(format!("unexpected `{name}` in a template expression")),
                _ => Ok(Expr::Name(name)),
            },
            Some(Tok::Str(mut text)) => {
                while let Some(Tok::Str(more)) = self.peek() {
                    text.push_str(more);
                    self.at += 1;
                }
                Ok(Expr::Str(text))
            }
            Some(Tok::Num(number)) => Ok(Expr::Num(number)),
            Some(Tok::Op(open @ ("(" | "[" | "{"))) => {
                let close = match open {
                    "(" => ")",
                    "[" => "]",
                    _ => "}",
                };
                self.enter()?;
                let mut items = self.sequence(close)?;
                self.depth -= 1;
                if open == "(" && items.len() == 1 {
                    return Ok(items.remove(0));
                }
                Ok(Expr::Items(items))
            }
            Some(Tok::Op(op)) => Err(format!("unexpected `{op}` in a template expression")),
            None => Err("a template expression ends too early".to_owned()),
        }
    }
}

fn single_or_arith(mut operands: Vec<Expr>) -> Expr {
    if operands.len() == 1 { operands.remove(0) } else { Expr::Arith(operands) }
}

fn lex(text: &str) -> Result<Vec<Tok>, String> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        if byte.is_ascii_whitespace() || byte == b'\\' && bytes.get(at + 1) == Some(&b'\n') {
            at += if byte == b'\\' { 2 } else { 1 };
            continue;
        }
        let rest = &text[at..];
        if let Some((token, len)) = string_literal(rest)? {
            tokens.push(token);
            at += len;
        } else if byte.is_ascii_alphabetic() || byte == b'_' {
            let len = rest.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
            tokens.push(Tok::Name(rest[..len].to_owned()));
            at += len;
        } else if byte.is_ascii_digit() || byte == b'.' && bytes.get(at + 1).is_some_and(u8::is_ascii_digit) {
            let len = number_len(rest);
            tokens.push(Tok::Num(rest[..len].to_owned()));
            at += len;
        } else if let Some(op) = OPERATORS.iter().find(|op| rest.starts_with(**op)) {
            tokens.push(Tok::Op(op));
            at += op.len();
        } else {
            let shown = rest.chars().next().unwrap_or(' ');
            return Err(format!("unexpected character {shown:?} in a template expression"));
        }
    }
    Ok(tokens)
}

fn number_len(rest: &str) -> usize {
    let bytes = rest.as_bytes();
    let mut len = 0;
    while let Some(&byte) = bytes.get(len) {
        let exponent_sign = matches!(byte, b'+' | b'-')
            && len > 0
            && matches!(bytes.get(len - 1), Some(b'e' | b'E'))
            && !rest.starts_with("0x");
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'.' || exponent_sign {
            len += 1;
        } else {
            break;
        }
    }
    len
}

/// A string literal at the start of `rest` (with an optional `r`, `u` or `b` prefix) and its
/// length, or `None` when `rest` does not start with one.
fn string_literal(rest: &str) -> Result<Option<(Tok, usize)>, String> {
    let head: Vec<u8> = rest.bytes().take(3).map(|byte| byte.to_ascii_lowercase()).collect();
    let prefix = ["rb", "br", "r", "u", "b", "f", ""].into_iter().find(|prefix| {
        head.starts_with(prefix.as_bytes()) && matches!(head.get(prefix.len()), Some(b'\'' | b'"'))
    });
    let Some(prefix) = prefix else { return Ok(None) };
    if prefix.contains('f') {
        return Err("f-strings are not analysed".to_owned());
    }
    let body = &rest[prefix.len()..];
    let quote = &body[..1];
    let triple = quote.repeat(3);
    let delimiter = if body.starts_with(&triple) { triple.as_str() } else { quote };
    let raw = prefix.contains('r');
    let mut value = String::new();
    let mut chars = body[delimiter.len()..].char_indices();
    while let Some((at, ch)) = chars.next() {
        let inner = &body[delimiter.len() + at..];
        if inner.starts_with(delimiter) {
            return Ok(Some((Tok::Str(value), prefix.len() + delimiter.len() * 2 + at)));
        }
        if ch == '\\' {
            let escaped = chars.next().map_or('\\', |(_, next)| next);
            if raw {
                value.push('\\');
            }
            value.push(match escaped {
                'n' if !raw => '\n',
                't' if !raw => '\t',
                other => other,
            });
        } else if ch == '\n' && delimiter.len() == 1 {
            break;
        } else {
            value.push(ch);
        }
    }
    Err("a string in a template expression is not closed".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Expr {
        Expr::Name(text.to_owned())
    }

    #[test]
    fn parses_typed_calls_with_positional_and_keyword_arguments() {
        let expr = parse_expr("String(org, 'acme', required=True)").unwrap();
        assert_eq!(
            expr,
            Expr::Call {
                func: Box::new(name("String")),
                args: vec![name("org"), Expr::Str("acme".to_owned())],
                kwargs: vec![("required".to_owned(), Expr::True)],
            }
        );
    }

    #[test]
    fn parses_boolean_conditions_with_python_precedence() {
        let expr = parse_expr("not defined(a) or b and c == 'x'").unwrap();
        let Expr::Or(left, right) = expr else { panic!("or at the top") };
        assert!(matches!(*left, Expr::Not(_)));
        let Expr::And(_, compare) = *right else { panic!("and on the right") };
        assert!(matches!(*compare, Expr::Compare(_, CmpOp::Eq, _)));
        assert!(matches!(parse_expr("x is not None").unwrap(), Expr::Compare(_, CmpOp::IsNot, _)));
        assert!(matches!(parse_expr("x not in [1, 2]").unwrap(), Expr::Compare(_, CmpOp::Other, _)));
    }

    #[test]
    fn parses_literals_members_and_conditional_expressions() {
        assert_eq!(parse_expr("'a' \"b\"").unwrap(), Expr::Str("ab".to_owned()));
        assert_eq!(parse_expr("r'\\d' '\\n'").unwrap(), Expr::Str("\\d\n".to_owned()));
        assert!(matches!(parse_expr("split_to_array(x, '')[0]").unwrap(), Expr::Member(_)));
        assert!(matches!(parse_expr("a if defined(a) else 'b'").unwrap(), Expr::IfElse { .. }));
        assert!(
            matches!(parse_expr("{'error': 'x', 'code': 400}").unwrap(), Expr::Items(items) if items.len() == 4)
        );
        assert_eq!(parse_expr("(1)").unwrap(), Expr::Num("1".to_owned()));
        assert!(matches!(parse_expr("1.5e-3 + -x").unwrap(), Expr::Arith(_)));
    }

    #[test]
    fn parses_for_and_set_statements() {
        let (targets, iter) = parse_for("is_last, x in enumerate_with_last(items)").unwrap();
        assert_eq!(targets, vec!["is_last".to_owned(), "x".to_owned()]);
        assert!(matches!(iter, Expr::Call { .. }));
        let (target, value) = parse_set("org = String(org, 'none')").unwrap();
        assert_eq!(target, "org");
        assert!(matches!(value, Expr::Call { .. }));
        assert!(parse_set("a == 1").is_err());
        assert!(parse_for("in x").is_err());
    }

    #[test]
    fn refuses_what_it_does_not_analyse() {
        for text in [
            "",
            "f(",
            "x ** 2",
            "lambda: 1",
            "[x for x in y]",
            "f'{x}'",
            "'open",
            "a $ b",
            "f(a=1, 2)",
            "f(*a)",
            "(((",
            "a if b",
        ] {
            assert!(parse_expr(text).is_err(), "{text:?}");
        }
        let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
        assert!(parse_expr(&deep).unwrap_err().contains("nests deeper"));
        for chain in [" or a", " and a", " < a", "()", ".a", "[0]"] {
            let long = format!("a{}", chain.repeat(100_000));
            assert!(parse_expr(&long).unwrap_err().contains("nests deeper"), "{chain}");
        }
        assert!(parse_expr(&format!("f({})", "a or ".repeat(40) + "b")).is_ok());
    }
}
