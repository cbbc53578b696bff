//! Tinybird's template language, for the subset pipe authors write: a node whose SQL starts with
//! `%` is a template; `{{ expr }}` inserts a value quoted as a ClickHouse literal, `{% if %}` /
//! `{% elif %}` / `{% else %}` / `{% end %}` branch, `{% set name = expr %}` assigns, `{# #}` is a
//! comment. Expressions are the Python subset templates use: names, literals, lists, calls with
//! keyword arguments, `and` / `or` / `not`, comparisons, `+` and `-`.
//!
//! The semantics follow Tinybird's own renderer (`tinybird/sql_template.py` in the `tinybird`
//! Python package): a parameter that was not sent (or a null fixed param) is `None`, `defined(x)`
//! is `x is not None`, a typed function (`String`, `Int32`, ...) refuses a missing value without
//! default ("Required parameter is not defined") and a value its type does not accept, strings
//! are quoted with Tinybird's escaping, integers become `toInt32('5')`, and so on.

mod blocks;
mod chunks;
mod eval;
mod expr;
mod functions;
mod params;
mod scalar;
#[cfg(test)]
mod tests;
mod value;

use std::collections::BTreeMap;

use serde_json::Value as Json;

pub(crate) use params::ParamInfo;

/// Longest template (a node's SQL) accepted.
pub(crate) const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// Deepest nesting of `{% if %}` blocks.
pub(crate) const MAX_BLOCK_DEPTH: usize = 16;
/// Deepest nesting of an expression (parentheses, calls, lists, operators).
pub(crate) const MAX_EXPRESSION_DEPTH: usize = 32;
/// Longest rendered SQL.
pub(crate) const MAX_RENDERED_BYTES: usize = 1024 * 1024;
/// Most items an `Array(...)` value or a list may hold.
pub(crate) const MAX_LIST_ITEMS: usize = 1024;

/// Most texts [`Template::sql_variants`] gives.
const MAX_SQL_VARIANTS: usize = 256;

/// Where Tinybird's template errors point.
pub(crate) const TEMPLATE_DOCS: &str = "https://www.tinybird.co/docs/cli/advanced-templates.html";

/// Tinybird's message when a typed function gets no value and has no default.
const REQUIRED_PARAM_NOT_DEFINED: &str = "Required parameter is not defined";

/// Why a template could not be rendered: an HTTP status (400, or the code given to `error()`)
/// and Tinybird's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TemplateError {
    pub(crate) status: u16,
    pub(crate) message: String,
    /// Set while evaluating when a typed function lacked a value; [`Template::render`] turns it
    /// into Tinybird's message naming the template's parameters.
    required_param_missing: bool,
}

impl TemplateError {
    /// A `SQLTemplateException`: `Template Syntax Error: ...`.
    pub(crate) fn syntax(message: impl std::fmt::Display) -> Self {
        Self::plain(format!("Template Syntax Error: {message}"))
    }

    /// An error shown as is (tornado's parse errors, `ValueError`s, `error()`).
    pub(crate) fn plain(message: impl Into<String>) -> Self {
        Self { status: 400, message: message.into(), required_param_missing: false }
    }

    fn required_param() -> Self {
        Self { required_param_missing: true, ..Self::syntax(REQUIRED_PARAM_NOT_DEFINED) }
    }
}

/// A parsed template.
#[derive(Clone, Debug)]
pub(crate) struct Template {
    blocks: Vec<blocks::Block>,
}

impl Template {
    /// Parses template text (without the leading `%`).
    pub(crate) fn parse(text: &str) -> Result<Self, TemplateError> {
        if text.len() > MAX_TEMPLATE_BYTES {
            return Err(TemplateError::plain(format!(
                "The template is longer than {MAX_TEMPLATE_BYTES} bytes (emulator limit)"
            )));
        }
        Ok(Self { blocks: blocks::parse(&chunks::split(text)?)? })
    }

    /// Renders with `params` (each parameter's value; absent means not sent).
    pub(crate) fn render(&self, params: &BTreeMap<String, Json>) -> Result<String, TemplateError> {
        eval::render(&self.blocks, params)
            .map_err(|error| if error.required_param_missing { self.required_param_error() } else { error })
    }

    /// The parameters the template reads, as Tinybird lists them in a node's `params`.
    pub(crate) fn params(&self) -> Vec<ParamInfo> {
        params::collect(&self.blocks)
    }

    /// SQL texts covering every branch of the template (see [`blocks::sql_variants`]), values
    /// replaced by a string literal: what the tables a template may read are found in.
    pub(crate) fn sql_variants(&self) -> Vec<String> {
        blocks::sql_variants(&self.blocks, MAX_SQL_VARIANTS)
    }

    /// Tinybird's message names every parameter read without a default (those only tested with
    /// `defined()` aside), not only the missing one.
    fn required_param_error(&self) -> TemplateError {
        let names: Vec<String> = self
            .params()
            .into_iter()
            .filter(|param| param.default.is_null() && !param.only_tested)
            .map(|param| param.name)
            .collect();
        if names.is_empty() {
            return TemplateError::syntax(REQUIRED_PARAM_NOT_DEFINED);
        }
        TemplateError::syntax(format!(
            "{REQUIRED_PARAM_NOT_DEFINED}. Check the parameters {}. Please provide a value or set a default value in the pipe code.",
            join_with_and(&names)
        ))
    }
}

/// A node's SQL as ClickHouse receives it: rendered when it starts with `%`, as is otherwise.
pub(crate) fn render_node_sql(sql: &str, params: &BTreeMap<String, Json>) -> Result<String, TemplateError> {
    match sql.strip_prefix('%') {
        Some(text) => Template::parse(text)?.render(params),
        None => Ok(sql.to_owned()),
    }
}

/// The parsed template of a node's SQL, `None` for plain SQL.
pub(crate) fn node_template(sql: &str) -> Result<Option<Template>, TemplateError> {
    sql.strip_prefix('%').map(Template::parse).transpose()
}

/// Whether a template can read a parameter of this name: an identifier that is neither a
/// Python keyword nor one of the names Tinybird reserves (`format`, `q`).
pub(crate) fn is_param_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters.next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && characters.all(|character| character.is_ascii_alphanumeric() || character == '_')
        && !expr::is_keyword(name)
        && !expr::is_reserved_variable(name)
}

/// `a`, `a and b`, `a, b and c`: how Tinybird lists parameters.
fn join_with_and(names: &[String]) -> String {
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}
