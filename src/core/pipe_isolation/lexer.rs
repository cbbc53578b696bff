//! The ClickHouse lexer of the SQL between template blocks. It is resumable: a string literal, a
//! quoted name or a comment may continue in the next piece of text, so its state is kept in a
//! [`Mode`] between calls. Text inside string literals and comments yields no tokens.

/// Where the lexer stands between two pieces of text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Code,
    LineComment,
    /// Nesting depth: ClickHouse nests `/* */` comments.
    BlockComment(u32),
    /// Inside `'...'`; `escaped` after a backslash.
    Literal {
        escaped: bool,
    },
    /// Inside `"..."` or `` `...` ``: the name read so far.
    QuotedName {
        quote: u8,
        name: String,
        escaped: bool,
    },
    /// Inside `$tag$ ... $tag$`.
    Heredoc(String),
}

/// A significant token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Tok<'t> {
    /// A keyword or a bare name, as written.
    Word(&'t str),
    /// A quoted name's content.
    Name(String),
    /// A string or number literal.
    Value,
    Op(&'t str),
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    Comma,
    Dot,
    /// A `{{ }}` insertion (the leaf number), emitted by the caller, never by [`lex`].
    Insert(usize),
}

/// Operators of two characters; any other punctuation is an operator of one.
const TWO_CHAR_OPERATORS: &[&str] = &["!=", "<>", "<=", ">=", "==", "||", "->", "::"];

/// Whether `word` is one of the space-separated words of `list`.
pub(super) fn listed(list: &str, word: &str) -> bool {
    list.split_ascii_whitespace().any(|listed| listed == word)
}

/// Whether `byte` continues a bare word (ClickHouse allows `$` after the first character, and
/// any non-ASCII byte).
pub(super) fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$' || byte >= 0x80
}

/// Lexes `text` starting in `mode`, calling `emit` for every token; leaves `mode` where the text
/// ends.
pub(super) fn lex(
    text: &str,
    mode: &mut Mode,
    emit: &mut dyn FnMut(Tok<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let mut at = 0;
    while at < text.len() {
        at = match mode {
            Mode::Code => code(text, at, mode, emit)?,
            Mode::LineComment => match text[at..].find('\n') {
                Some(end) => {
                    *mode = Mode::Code;
                    at + end + 1
                }
                None => text.len(),
            },
            Mode::BlockComment(_) => block_comment(text, at, mode),
            Mode::Literal { .. } | Mode::QuotedName { .. } => quoted(text, at, mode, emit)?,
            Mode::Heredoc(tag) => {
                let closing = format!("${tag}$");
                match text[at..].find(&closing) {
                    Some(end) => {
                        *mode = Mode::Code;
                        emit(Tok::Value)?;
                        at + end + closing.len()
                    }
                    None => text.len(),
                }
            }
        };
    }
    Ok(())
}

fn block_comment(text: &str, mut at: usize, mode: &mut Mode) -> usize {
    let Mode::BlockComment(depth) = mode else { return at };
    let bytes = text.as_bytes();
    while let Some(&byte) = bytes.get(at) {
        let next = bytes.get(at + 1).copied();
        if byte == b'/' && next == Some(b'*') {
            *depth = depth.saturating_add(1);
            at += 2;
        } else if byte == b'*' && next == Some(b'/') {
            *depth -= 1;
            at += 2;
            if *depth == 0 {
                *mode = Mode::Code;
                return at;
            }
        } else {
            at += 1;
        }
    }
    at
}

/// Continues a string literal or quoted name; emits its token when it closes.
fn quoted(
    text: &str,
    mut at: usize,
    mode: &mut Mode,
    emit: &mut dyn FnMut(Tok<'_>) -> Result<(), String>,
) -> Result<usize, String> {
    let bytes = text.as_bytes();
    let quote = match mode {
        Mode::QuotedName { quote, .. } => *quote,
        _ => b'\'',
    };
    let start = at;
    while let Some(&byte) = bytes.get(at) {
        let (Mode::Literal { escaped } | Mode::QuotedName { escaped, .. }) = mode else { return Ok(at) };
        if *escaped {
            *escaped = false;
        } else if byte == b'\\' {
            *escaped = true;
        } else if byte == quote && bytes.get(at + 1) == Some(&quote) {
            at += 1;
        } else if byte == quote {
            let finished = std::mem::replace(mode, Mode::Code);
            if let Mode::QuotedName { mut name, .. } = finished {
                name.push_str(&text[start..at]);
                emit(Tok::Name(name))?;
            } else {
                emit(Tok::Value)?;
            }
            return Ok(at + 1);
        }
        at += 1;
    }
    if let Mode::QuotedName { name, .. } = mode {
        name.push_str(&text[start..]);
    }
    Ok(at)
}

/// Lexes from `at` in code until the text ends or a literal or comment starts.
fn code(
    text: &str,
    mut at: usize,
    mode: &mut Mode,
    emit: &mut dyn FnMut(Tok<'_>) -> Result<(), String>,
) -> Result<usize, String> {
    let bytes = text.as_bytes();
    while let Some(&byte) = bytes.get(at) {
        let next = bytes.get(at + 1).copied();
        let (token, len) = match byte {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                at += 1;
                continue;
            }
            b'-' if next == Some(b'-') => return Ok(switch(mode, Mode::LineComment, at + 2)),
            b'#' if matches!(next, Some(b' ' | b'!')) => return Ok(switch(mode, Mode::LineComment, at + 2)),
            b'/' if next == Some(b'*') => return Ok(switch(mode, Mode::BlockComment(1), at + 2)),
            b'\'' => return Ok(switch(mode, Mode::Literal { escaped: false }, at + 1)),
            b'"' | b'`' => {
                let quoted = Mode::QuotedName { quote: byte, name: String::new(), escaped: false };
                return Ok(switch(mode, quoted, at + 1));
            }
            b'$' => match heredoc_tag(&text[at..]) {
                Some(tag) => {
                    let len = tag.len() + 2;
                    return Ok(switch(mode, Mode::Heredoc(tag.to_owned()), at + len));
                }
                None => (Tok::Op("$"), 1),
            },
            b'0'..=b'9' => (Tok::Value, number_len(&bytes[at..])),
            _ if is_word_byte(byte) => {
                let len = bytes[at..].iter().take_while(|b| is_word_byte(**b)).count();
                (Tok::Word(&text[at..at + len]), len)
            }
            b'(' => (Tok::Open, 1),
            b')' => (Tok::Close, 1),
            b'[' => (Tok::OpenBracket, 1),
            b']' => (Tok::CloseBracket, 1),
            b',' => (Tok::Comma, 1),
            b'.' => (Tok::Dot, 1),
            _ => match TWO_CHAR_OPERATORS.iter().find(|op| text[at..].starts_with(**op)) {
                Some(op) => (Tok::Op(op), 2),
                None => (Tok::Op(&text[at..=at]), 1),
            },
        };
        emit(token)?;
        at += len;
    }
    Ok(at)
}

fn switch(mode: &mut Mode, to: Mode, at: usize) -> usize {
    *mode = to;
    at
}

fn number_len(bytes: &[u8]) -> usize {
    let mut len = 0;
    while let Some(&byte) = bytes.get(len) {
        let exponent_sign = matches!(byte, b'+' | b'-') && len > 0 && matches!(bytes[len - 1], b'e' | b'E');
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'.' || exponent_sign {
            len += 1;
        } else {
            break;
        }
    }
    len
}

/// The tag of a heredoc opening `$tag$` at the start of `text` (possibly empty: `$$`).
fn heredoc_tag(text: &str) -> Option<&str> {
    let rest = text.get(1..)?;
    let len = rest.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
    (rest.as_bytes().get(len) == Some(&b'$')).then(|| &rest[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(pieces: &[&str]) -> (Vec<String>, Mode) {
        let mut mode = Mode::Code;
        let mut out = Vec::new();
        for piece in pieces {
            lex(piece, &mut mode, &mut |token| {
                out.push(format!("{token:?}"));
                Ok(())
            })
            .unwrap();
        }
        (out, mode)
    }

    #[test]
    fn skips_comments_and_literals() {
        let (out, mode) =
            tokens(&["SELECT 'org = x' -- org\n, /* a /* nested */ org */ `t`.\"c\" $$org$$ 1e-3"]);
        assert_eq!(
            out,
            ["Word(\"SELECT\")", "Value", "Comma", "Name(\"t\")", "Dot", "Name(\"c\")", "Value", "Value"]
        );
        assert_eq!(mode, Mode::Code);
    }

    #[test]
    fn keeps_its_state_between_pieces() {
        let (out, mode) = tokens(&["SELECT 'it\\", "'s' AS `a", "b` FROM t -- x", " y"]);
        assert_eq!(
            out,
            ["Word(\"SELECT\")", "Value", "Word(\"AS\")", "Name(\"ab\")", "Word(\"FROM\")", "Word(\"t\")"]
        );
        assert_eq!(mode, Mode::LineComment);
        let (_, mode) = tokens(&["SELECT /* open"]);
        assert_eq!(mode, Mode::BlockComment(1));
    }

    #[test]
    fn reads_operators_and_doubled_quotes() {
        let (out, _) = tokens(&["a != 'it''s' <> b [1] # comment"]);
        assert_eq!(
            out,
            [
                "Word(\"a\")",
                "Op(\"!=\")",
                "Value",
                "Op(\"<>\")",
                "Word(\"b\")",
                "OpenBracket",
                "Value",
                "CloseBracket"
            ]
        );
    }
}
