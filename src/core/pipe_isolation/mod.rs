//! Whether a Tinybird pipe filters its rows by a parameter: a pure analyser of the pipe
//! description that `GET /v0/pipes/{pipe}` returns (admin token, not billed). It answers, for a
//! parameter a token pins in `fixed_params` (say `org`), whether a request can read other
//! tenants' rows, without running a query. Entry points: [`judge()`] and [`judge_with()`].
//!
//! # How a node is read
//!
//! Each node's SQL is parsed, never searched as text ("parse, don't scan"):
//! 1. the template layer as Tornado reads it (a node is a template when its SQL starts with
//!    `%`; otherwise it is plain SQL and `{{ }}` in it is text): text, `{{ expr }}` insertions,
//!    `{% if %}/{% elif %}/{% else %}/{% end %}`, `{% for %}`, `{% set %}`, `{% raw %}`,
//!    `{# comments #}` (dropped, the text around them joined). Expressions become a tree: calls
//!    with positional and keyword arguments, names, literals, `not`/`and`/`or`, comparisons,
//!    `a if c else b`. Any other statement (`while`, `try`, `import`...) is not analysed;
//! 2. the SQL between the blocks, lexed as ClickHouse does (string literals, quoted names,
//!    `--`, `#` and nested `/* */` comments, heredocs) and read into its structure: the SELECTs
//!    of each query and its `UNION`/`EXCEPT`/`INTERSECT` members; each SELECT's FROM and JOIN
//!    items (a node of the pipe, a CTE, a subquery, a data source, `database.table`, a table
//!    function, or a table named at request time); and for each insertion the clause it sits in
//!    (SELECT list, FROM/JOIN, WHERE, PREWHERE, HAVING, QUALIFY, ON, USING, GROUP BY, ORDER BY,
//!    LIMIT, SETTINGS, or a comment). Every branch of a block is read from the same point, so
//!    the analyser knows which text writes which SELECT and FROM item; branches that leave the
//!    SQL in different states (a quote or a parenthesis opened in one branch only) are refused;
//! 3. every template path (combination of branches) is followed twice: with the parameter
//!    *given* (a non-empty value) and with it *missing* (absent or null), evaluating
//!    expressions as Tinybird's template functions do: a typed function (`String(org)`,
//!    `Array(orgs, 'String')`...) given no value fails the request unless it has a default
//!    (then it yields the default) or `defined=False`; inserting a null fails the request;
//!    `sql_and()` drops null arguments; `column()`/`columns()` fail without a value or default;
//!    `error()` and `custom_error()` fail the request; `{% set %}` binds values; `defined(x)`,
//!    truthiness, `not`, `and`, `or`, `==`, `!=`, `is None` are decided when they depend on the
//!    parameter alone, and both branches are followed otherwise. Paths that fail the request do
//!    not count. A `{% for %}` body is followed zero times and once.
//!
//! # Filtering uses
//!
//! A *filtering use* is an insertion of the parameter's own value (raw or typed) in a WHERE,
//! PREWHERE, HAVING, QUALIFY, or inner-join ON clause that forms, with the SQL around it, a
//! whole conjunct of that clause (the clause's conditions joined by `AND` at the top, or in
//! parenthesised `AND` groups) of one of these shapes, read token by token, never searched:
//! - `column = value` or `value = column` (also `==`), `column IN value`;
//! - the column wrapped in `lower`, `upper`, `lowerUTF8`, `upperUTF8` or `toString`, and so the
//!   value (`lower(org_id) = lower({{String(org)}})`);
//! - `equals(column, value)` (either order), `has(value, column)`;
//!
//! where the column is one plain name (`org_id`, `e.org_id`, quoted or not) and the value is
//! one `{{ }}` insertion with nothing else in its operand. An insertion of a `sql_and()`
//! condition on the parameter (`col=...`, `col__in=...`) filters when it is a whole conjunct by
//! itself. Anything else around the value is a *doubt*: a literal or another template value
//! compared with it (`{{String(org)}} = 'acme'`, `{{column(c)}} = {{String(org)}}`), a list or
//! array that holds other values (`org IN ({{String(org)}}, 'globex')`), the comparison's
//! result used again (`= 0`, `IN (0, 1)`, `? :`, `::String`, `BETWEEN`, a tuple, a function
//! other than the ones above), an `OR`, a prefix `NOT`, a `CASE`, `!=`, `<`, `LIKE`,
//! `NOT IN`, arithmetic, an outer join's ON, and template branches that end on different SQL.
//! So is a filter on a name the query also defines as an alias of another expression
//! (ClickHouse reads `org` as `{{String(org)}} AS org`, or `'acme' org`, or `WITH ... AS org`,
//! before the column; `org AS org` and `t.org AS org` are the column), or one that a node, CTE
//! or subquery the SELECT reads defines so; and the parameter reaching a filter through an
//! expression the analyser does not follow (a loop variable, a method call) or a `sql_and()`
//! operator such as `__not_in`. A doubt never filters: when no other use filters those rows,
//! the verdict is `Unknown` with the doubt as its reason. `columns()`, `column()`, `symbol()`
//! insert names, never filters; a parameter named in a comment, a string literal, a `{# #}`
//! comment, the SELECT list or ORDER BY does not filter.
//!
//! # Filtered rows
//!
//! On one path, a SELECT's rows are filtered when the path has a filtering use in that SELECT,
//! or when every FROM and JOIN item the path writes is filtered: a subquery or CTE that is, or
//! an upstream node that is on every one of its own paths. A data source, a `database.table`,
//! a table function or a SELECT without FROM is not; a table named at request time
//! (`{{symbol(t)}}` in FROM) makes the SELECT unknown even when it filters, and `{{table(t)}}`
//! anywhere makes the node unknown (Tinybird does not quote it: a request can write any SQL). A
//! query is filtered when every member the path writes is, and every subquery whose values it
//! returns (in its SELECT list, WITH, ORDER BY...) is too: `count() / (SELECT count() FROM
//! events)` exposes every tenant's count. Subqueries in filtering clauses (`IN (SELECT ...)`)
//! only narrow rows and are not followed. A part that fails the request fails its whole path.
//!
//! # Verdicts
//!
//! - [`Verdict::Enforced`]: with the parameter given, every path filters the endpoint's rows;
//!   and with it missing, every path fails the request (`String(org)` with no default,
//!   `error()` under `{% if not defined(org) %}`) or still filters, or the parameter is
//!   declared `required=True` in a node whose rows reach the endpoint (see [`Assumptions`]).
//! - [`Verdict::Optional`]: filtered when given, not (or not surely) when missing: the filter
//!   sits under `{% if defined(org) %}` or `{% if org %}`, or works through a default
//!   (`String(org, 'acme')` reads the default tenant's rows), a `{% set %}` default, or
//!   `sql_and()` (which drops a missing value). Safe for a token that always carries a
//!   non-empty value; unsafe for a Clerk template whose shortcode can be missing.
//! - [`Verdict::Unused`]: some rows reach the endpoint unfiltered, and the parameter has no
//!   filtering use and no doubt in any node the endpoint reads: every tenant reads every row.
//! - [`Verdict::Unknown`]: the analyser cannot vouch, and says why: a node it cannot read
//!   (unbalanced blocks, a statement it does not analyse, a value inside a string literal, a
//!   query that is not a SELECT), a table named at request time, a cycle of nodes, a limit
//!   exceeded, a doubt, a parameter that filters only some of the rows (an unfiltered
//!   `UNION ALL` member or JOIN partner, a filter in a branch chosen by another parameter, a
//!   filter only in an `IN (SELECT ...)` subquery), or an endpoint that always fails. When
//!   unsure, the answer is `Unknown`, never `Enforced`.
//!
//! Assumed, not checked: a given value is non-empty and truthy (the operator never pins empty
//! values); a condition on another parameter may go either way at each block, independently
//! (so an impossible combination can only make the verdict weaker).

mod conjunct;
mod cursor;
mod eval;
mod expr;
mod flow;
mod judge;
mod lexer;
mod sql;
mod template;

use serde::{Deserialize, Deserializer};

/// Most nodes analysed in one pipe.
pub const MAX_PIPE_NODES: usize = 256;

/// Most bytes of SQL analysed in one node.
pub const MAX_NODE_SQL_BYTES: usize = 256 * 1024;

/// Longest reason of a [`Verdict::Unknown`], in characters.
pub const MAX_REASON_CHARS: usize = 320;

/// A pipe description as `GET /v0/pipes/{pipe}` returns it; fields the analyser does not read
/// are ignored.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct PipeDescription {
    /// The pipe's id.
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    /// The pipe's name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// The endpoint node's id (or name); null when the pipe publishes none.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The nodes, in order.
    #[serde(default, deserialize_with = "null_as_default")]
    pub nodes: Vec<Node>,
}

/// One node of a pipe.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Node {
    /// The node's id.
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    /// The node's name: what other nodes' SQL reads it as.
    pub name: String,
    /// The node's SQL, a template when it starts with `%`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub sql: String,
    /// Data sources and earlier nodes the node reads, as Tinybird lists them (informational: the
    /// analyser reads the SQL).
    #[serde(default, deserialize_with = "null_as_default")]
    pub dependencies: Vec<String>,
    /// `endpoint`, `standard`, `materialized`, `copy`... when Tinybird says.
    #[serde(default)]
    pub node_type: Option<String>,
}

impl PipeDescription {
    /// The endpoint node: the one `endpoint` names (by id, else by name), else the one whose
    /// `node_type` is `endpoint`, else the last. `None` when `endpoint` names no node or there
    /// are no nodes.
    #[must_use]
    pub fn endpoint_node(&self) -> Option<&Node> {
        endpoint_index(self).ok().and_then(|at| self.nodes.get(at))
    }
}

fn endpoint_index(pipe: &PipeDescription) -> Result<usize, String> {
    if pipe.nodes.is_empty() {
        return Err("the pipe has no nodes".to_owned());
    }
    if let Some(endpoint) = pipe.endpoint.as_deref().filter(|endpoint| !endpoint.is_empty()) {
        let by_id = pipe.nodes.iter().position(|node| node.id == endpoint);
        return by_id.or_else(|| pipe.nodes.iter().position(|node| node.name == endpoint)).ok_or_else(|| {
            let shown = crate::core::redact::prefix(endpoint, 64);
            format!("the description's endpoint `{shown}` names none of the pipe's nodes")
        });
    }
    let typed = pipe.nodes.iter().position(|node| {
        node.node_type.as_deref().is_some_and(|node_type| node_type.eq_ignore_ascii_case("endpoint"))
    });
    Ok(typed.unwrap_or(pipe.nodes.len() - 1))
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Whether a pipe filters the rows it returns by a parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every request, with or without the parameter, reads only rows filtered by it (or fails).
    Enforced,
    /// Filtered when the parameter has a value; a request without it (or with null) reads
    /// unfiltered rows, or the default value's rows.
    Optional,
    /// The parameter filters nothing: every tenant reads every row.
    Unused,
    /// The analyser cannot tell; why, in words, at most [`MAX_REASON_CHARS`] characters.
    Unknown(String),
}

impl Verdict {
    /// `Enforced`, `Optional`, `Unused` or `Unknown`: a bounded label for conditions, events and
    /// metrics.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Enforced => "Enforced",
            Self::Optional => "Optional",
            Self::Unused => "Unused",
            Self::Unknown(_) => "Unknown",
        }
    }
}

/// Facts about Tinybird the analyser cannot confirm from its published code, made explicit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assumptions {
    /// Whether Tinybird refuses a request that lacks a parameter declared `required=True`
    /// (`{{String(org, required=True)}}`) even where the declaration is not evaluated or has a
    /// default. Tinybird's docs describe `required`; its published template code uses it only
    /// for the endpoint's documentation, and there a typed function without a default already
    /// fails on a missing value. Default: `true`, as the operator's design assumes.
    pub required_refuses_missing: bool,
}

impl Default for Assumptions {
    fn default() -> Self {
        Self { required_refuses_missing: true }
    }
}

/// Judges each of `params` on `pipe`, in the given order, under the default [`Assumptions`].
#[must_use]
pub fn judge(pipe: &PipeDescription, params: &[&str]) -> Vec<(String, Verdict)> {
    judge_with(pipe, params, Assumptions::default())
}

/// Judges each of `params` on `pipe`, in the given order.
#[must_use]
pub fn judge_with(
    pipe: &PipeDescription,
    params: &[&str],
    assumptions: Assumptions,
) -> Vec<(String, Verdict)> {
    match judge::Analysis::new(pipe, assumptions) {
        Ok(analysis) => params.iter().map(|param| ((*param).to_owned(), analysis.verdict(param))).collect(),
        Err(why) => {
            let verdict = Verdict::Unknown(judge::bounded(&why));
            params.iter().map(|param| ((*param).to_owned(), verdict.clone())).collect()
        }
    }
}

#[cfg(test)]
mod tests;
