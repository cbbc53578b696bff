//! The statement structure of a template: text, `{{ }}` outputs, `{% if %}` chains and
//! `{% set %}`, with tornado's error messages for blocks left open or closed twice.

use super::chunks::Chunk;
use super::expr::{self, Expr};
use super::{MAX_BLOCK_DEPTH, TemplateError};

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Block {
    Text(String),
    /// `{{ expr }}`; `source` is the expression's text (named in the "evaluated to null" error).
    Output {
        expr: Expr,
        source: String,
        line: usize,
    },
    /// `{% if %}` with its `{% elif %}` branches and an optional `{% else %}`.
    If {
        branches: Vec<Branch>,
        otherwise: Option<Vec<Block>>,
    },
    Set {
        name: String,
        expr: Expr,
        line: usize,
    },
}

/// An `if` or `elif` condition (on `line`) and the blocks it guards.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Branch {
    pub(super) condition: Expr,
    pub(super) line: usize,
    pub(super) body: Vec<Block>,
}

/// What ended a run of blocks.
enum Ending {
    EndOfText,
    End,
    Elif(Expr, usize),
    Else(usize),
}

/// Parses the chunks of a template.
pub(super) fn parse(chunks: &[Chunk]) -> Result<Vec<Block>, TemplateError> {
    let mut position = 0;
    let (blocks, ending) = parse_run(chunks, &mut position, 0)?;
    match ending {
        Ending::EndOfText => Ok(blocks),
        Ending::End => Err(TemplateError::plain(format!(
            "Extra {{% end %}} block at <string>:{}",
            line_before(chunks, position)
        ))),
        Ending::Elif(..) | Ending::Else(_) => Err(TemplateError::plain(format!(
            "else outside if block at <string>:{}",
            line_before(chunks, position)
        ))),
    }
}

fn line_before(chunks: &[Chunk], position: usize) -> usize {
    match chunks.get(position.saturating_sub(1)) {
        Some(Chunk::Expression { line, .. } | Chunk::Statement { line, .. }) => *line,
        _ => 1,
    }
}

/// Blocks up to the next `end`, `elif` or `else` (or the end of the text).
fn parse_run(
    chunks: &[Chunk],
    position: &mut usize,
    depth: usize,
) -> Result<(Vec<Block>, Ending), TemplateError> {
    let mut blocks = Vec::new();
    while let Some(chunk) = chunks.get(*position) {
        *position += 1;
        match chunk {
            Chunk::Text(text) => blocks.push(Block::Text(text.clone())),
            Chunk::Expression { code, line } => {
                blocks.push(Block::Output {
                    expr: expr::parse(code, *line)?,
                    source: code.clone(),
                    line: *line,
                });
            }
            Chunk::Statement { code, line } => {
                let (keyword, rest) = code.split_once(char::is_whitespace).unwrap_or((code, ""));
                match keyword {
                    "end" => return Ok((blocks, Ending::End)),
                    "else" => return Ok((blocks, Ending::Else(*line))),
                    "elif" => return Ok((blocks, Ending::Elif(expr::parse(rest, *line)?, *line))),
                    "if" => blocks.push(parse_if(chunks, position, depth, expr::parse(rest, *line)?, *line)?),
                    "set" => {
                        let (name, expr) = expr::parse_assignment(rest, *line)?;
                        blocks.push(Block::Set { name, expr, line: *line });
                    }
                    other => return Err(unsupported(other, *line)),
                }
            }
        }
    }
    Ok((blocks, Ending::EndOfText))
}

fn parse_if(
    chunks: &[Chunk],
    position: &mut usize,
    depth: usize,
    condition: Expr,
    line: usize,
) -> Result<Block, TemplateError> {
    if depth >= MAX_BLOCK_DEPTH {
        return Err(TemplateError::plain(format!(
            "Blocks nest deeper than {MAX_BLOCK_DEPTH} levels (emulator limit), line {line}"
        )));
    }
    let mut branches = Vec::new();
    let (mut condition, mut condition_line) = (condition, line);
    loop {
        let (body, ending) = parse_run(chunks, position, depth + 1)?;
        branches.push(Branch { condition, line: condition_line, body });
        match ending {
            Ending::End => return Ok(Block::If { branches, otherwise: None }),
            Ending::Elif(next, next_line) => (condition, condition_line) = (next, next_line),
            Ending::Else(else_line) => {
                let (otherwise, ending) = parse_run(chunks, position, depth + 1)?;
                return match ending {
                    Ending::End => Ok(Block::If { branches, otherwise: Some(otherwise) }),
                    Ending::EndOfText => Err(unclosed(line)),
                    Ending::Elif(..) | Ending::Else(_) => Err(TemplateError::plain(format!(
                        "else after else in the if block at <string>:{else_line}"
                    ))),
                };
            }
            Ending::EndOfText => return Err(unclosed(line)),
        }
    }
}

fn unclosed(line: usize) -> TemplateError {
    TemplateError::plain(format!("Missing {{% end %}} block for if at line {line}"))
}

fn unsupported(keyword: &str, line: usize) -> TemplateError {
    TemplateError::plain(format!(
        "The emulator's templates support {{% if %}}, {{% elif %}}, {{% else %}}, {{% end %}} and {{% set %}}, not {{% {keyword} %}}, line {line}"
    ))
}

/// The SQL text of the template with every `{% if %}` taking its first branch, then one text per
/// other branch of each `{% if %}` (the others taking their first): every branch's text is read
/// in context (`FROM {% if a %} t1 {% else %} t2 {% end %}` gives `FROM t1` and `FROM t2`).
/// `{{ }}` are written as a string literal. At most `limit` texts.
pub(super) fn sql_variants(blocks: &[Block], limit: usize) -> Vec<String> {
    let mut option_counts = Vec::new();
    count_options(blocks, &mut option_counts);
    let choices = option_counts
        .iter()
        .enumerate()
        .flat_map(|(block, count)| (1..*count).map(move |option| Some((block, option))));
    std::iter::once(None)
        .chain(choices)
        .take(limit)
        .map(|choice| {
            let mut text = String::new();
            write_variant(blocks, choice, &mut 0, &mut text);
            text
        })
        .collect()
}

/// The options of an `if` block: its branches, then its `else` (empty when absent).
fn options<'a>(branches: &'a [Branch], otherwise: Option<&'a Vec<Block>>) -> Vec<&'a [Block]> {
    let mut options: Vec<&'a [Block]> = branches.iter().map(|branch| branch.body.as_slice()).collect();
    options.push(otherwise.map_or(&[], Vec::as_slice));
    options
}

/// The number of options of each `if` block, in document order (outer before inner).
fn count_options(blocks: &[Block], counts: &mut Vec<usize>) {
    for block in blocks {
        if let Block::If { branches, otherwise } = block {
            let options = options(branches, otherwise.as_ref());
            counts.push(options.len());
            for body in options {
                count_options(body, counts);
            }
        }
    }
}

fn write_variant(blocks: &[Block], choice: Option<(usize, usize)>, next_if: &mut usize, out: &mut String) {
    for block in blocks {
        match block {
            Block::Text(text) => out.push_str(text),
            Block::Output { .. } => out.push_str(" '__value__' "),
            Block::If { branches, otherwise } => {
                let id = *next_if;
                *next_if += 1;
                let chosen = match choice {
                    Some((block, option)) if block == id => option,
                    _ => 0,
                };
                for (index, body) in options(branches, otherwise.as_ref()).into_iter().enumerate() {
                    if index == chosen {
                        write_variant(body, choice, next_if, out);
                    } else {
                        let mut skipped = Vec::new();
                        count_options(body, &mut skipped);
                        *next_if += skipped.len();
                    }
                }
            }
            Block::Set { .. } => {}
        }
    }
}
