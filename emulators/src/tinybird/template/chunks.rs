//! Splitting template text into text, `{{ expressions }}` and `{% statements %}`, as tornado's
//! template reader does (Tinybird's templates are tornado templates): `{# ... #}` is dropped,
//! `{{!`, `{%!` and `{#!` stand for a literal `{{`, `{%` and `{#`, and whitespace is kept.

use super::TemplateError;

/// A piece of template text; `line` is where it starts (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Chunk {
    Text(String),
    Expression { code: String, line: usize },
    Statement { code: String, line: usize },
}

/// The chunks of `text`, in order.
pub(super) fn split(text: &str) -> Result<Vec<Chunk>, TemplateError> {
    let mut chunks = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    let mut line = 1;
    while let Some(start) = find_tag(rest) {
        let (before, tag) = rest.split_at(start);
        literal.push_str(before);
        line += before.matches('\n').count();
        let opener = &tag[..2];
        if tag[2..].starts_with('!') {
            // `{{!` is a literal `{{`.
            literal.push_str(opener);
            rest = &tag[3..];
            continue;
        }
        let closer = match opener {
            "{{" => "}}",
            "{%" => "%}",
            _ => "#}",
        };
        let body_and_rest = &tag[2..];
        let Some(end) = body_and_rest.find(closer) else {
            return Err(TemplateError::plain(format!(
                "Missing end {} {closer} at <string>:{line}",
                kind(opener)
            )));
        };
        let body = &body_and_rest[..end];
        if opener != "{#" {
            if !literal.is_empty() {
                chunks.push(Chunk::Text(std::mem::take(&mut literal)));
            }
            chunks.push(code_chunk(opener, body.trim(), line)?);
        }
        line += body.matches('\n').count();
        rest = &body_and_rest[end + 2..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        chunks.push(Chunk::Text(literal));
    }
    Ok(chunks)
}

/// The offset of the next `{{`, `{%` or `{#`.
fn find_tag(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(1))
        .find(|&index| bytes[index] == b'{' && matches!(bytes[index + 1], b'{' | b'%' | b'#'))
}

fn kind(opener: &str) -> &'static str {
    match opener {
        "{{" => "expression",
        "{%" => "block",
        _ => "comment",
    }
}

fn code_chunk(opener: &str, code: &str, line: usize) -> Result<Chunk, TemplateError> {
    if code.is_empty() {
        return Err(TemplateError::plain(if opener == "{{" {
            format!("Empty expression at <string>:{line}")
        } else {
            format!("Empty block tag ({{% %}}) at <string>:{line}")
        }));
    }
    let code = code.to_owned();
    Ok(if opener == "{{" { Chunk::Expression { code, line } } else { Chunk::Statement { code, line } })
}
