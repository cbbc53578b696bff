//! Abstract evaluation of template expressions for one parameter, in one of two worlds: the
//! request carries the parameter (a non-empty value), or it does not (missing or null). The
//! rules follow Tinybird's template functions (its published `sql_template.py`): an undefined
//! parameter is `None`; a typed function (`String`, `Int32`, `Array`...) given `None` returns
//! its default, or returns `None` with `defined=False`, or else fails the request ("Required
//! parameter is not defined"); inserting `None` fails the request; `sql_and` drops `None`
//! arguments; `defined(x)` is `x is not None`; `column()`/`columns()` fail without a default.

use super::expr::{CmpOp, Expr};
use super::lexer::listed;

/// Whether the request carries the parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum World {
    /// The parameter has a non-empty value (a pinned tenant).
    Given,
    /// The parameter is missing or null.
    Missing,
}

/// Three-valued truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Tri {
    True,
    False,
    Unknown,
}

impl Tri {
    fn not(self) -> Self {
        match self {
            Self::True => Self::False,
            Self::False => Self::True,
            Self::Unknown => Self::Unknown,
        }
    }

    fn or(self, other: Self) -> Self {
        match (self, other) {
            (Self::True, _) | (_, Self::True) => Self::True,
            (Self::False, Self::False) => Self::False,
            _ => Self::Unknown,
        }
    }

    fn and(self, other: Self) -> Self {
        self.not().or(other.not()).not()
    }
}

/// What an expression evaluates to, as far as the parameter is concerned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Val {
    /// The parameter's own value (raw or typed, a list of them for `Array`).
    Tenant,
    /// `None`.
    Null,
    /// A boolean.
    Truth(Tri),
    /// A non-null value that is not the parameter's (a literal, a default), with its truthiness.
    Plain(Tri),
    /// A condition written by `sql_and`: whether it pins rows to the parameter's value, and
    /// whether it uses the parameter in a way that does not (`__not_in`, `__gt`...).
    Cond { pins: bool, loose: bool },
    /// A quoted name chosen at request time (`column()`, `columns()`, `symbol()`).
    Ident,
    /// An unquoted name chosen at request time (`table()`): any SQL a request writes.
    Raw,
    /// Anything else, with its truthiness.
    Unknown(Tri),
}

/// A value and whether it is derived from the parameter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Value {
    pub val: Val,
    pub tainted: bool,
}

/// Evaluation fails the request (`error()`, a missing required value...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Fails;

/// What an expression sees.
#[derive(Clone, Copy, Debug)]
pub(super) struct Env<'a> {
    pub param: &'a str,
    pub world: World,
    /// `{% set %}` and loop names, sorted by name.
    pub bindings: &'a [(String, Value)],
}

/// Typed functions that fail on `None` without a default.
const TYPED: &str = "String DateTime64 DateTime Date Float32 Float64 Int Integer Int8 Int16 Int32 Int64 \
     Int128 Int256 UInt8 UInt16 UInt32 UInt64 UInt128 UInt256 Array";

/// Functions that write a comment or a setting and return nothing the query reads.
const SETTINGS: &[&str] = &["max_threads", "cache_ttl", "backend_hint", "tb_secret", "tb_var"];

/// Whether `name` is a typed parameter function.
pub(super) fn is_typed(name: &str) -> bool {
    listed(TYPED, name) || matches!(name, "Boolean" | "bool")
}

/// Whether a leading `{{ }}` only writes a setting (`{{max_threads(2)}}`).
pub(super) fn is_setting(expr: &Expr) -> bool {
    let Expr::Call { func, .. } = expr else { return false };
    matches!(&**func, Expr::Name(name) if SETTINGS.contains(&name.as_str()))
}

/// The truthiness of a value.
pub(super) fn truth(val: &Val) -> Tri {
    match val {
        Val::Tenant => Tri::True,
        Val::Null => Tri::False,
        Val::Truth(tri) | Val::Plain(tri) | Val::Unknown(tri) => *tri,
        Val::Cond { .. } | Val::Ident | Val::Raw => Tri::Unknown,
    }
}

fn value(val: Val, tainted: bool) -> Value {
    Value { val, tainted }
}

/// Evaluates `expr`.
pub(super) fn eval(expr: &Expr, env: &Env<'_>) -> Result<Value, Fails> {
    Ok(match expr {
        Expr::Name(name) => lookup(name, env),
        Expr::Str(text) => value(Val::Plain(if text.is_empty() { Tri::False } else { Tri::True }), false),
        Expr::Num(number) => value(Val::Plain(number_truth(number)), false),
        Expr::True => value(Val::Truth(Tri::True), false),
        Expr::False => value(Val::Truth(Tri::False), false),
        Expr::None => value(Val::Null, false),
        Expr::Items(items) => {
            let tainted = all_tainted(items.iter(), env)?;
            value(Val::Plain(if items.is_empty() { Tri::False } else { Tri::True }), tainted)
        }
        Expr::Call { func, args, kwargs } => call(func, args, kwargs, env)?,
        Expr::Member(inner) => value(Val::Unknown(Tri::Unknown), eval(inner, env)?.tainted),
        Expr::Arith(items) => value(Val::Unknown(Tri::Unknown), all_tainted(items.iter(), env)?),
        Expr::Not(inner) => {
            let inner = eval(inner, env)?;
            value(Val::Truth(truth(&inner.val).not()), inner.tainted)
        }
        Expr::And(left, right) => short_circuit(left, right, false, env)?,
        Expr::Or(left, right) => short_circuit(left, right, true, env)?,
        Expr::Compare(left, op, right) => compare(left, *op, right, env)?,
        Expr::IfElse { then, cond, otherwise } => {
            let cond = eval(cond, env)?;
            let picked = match truth(&cond.val) {
                Tri::True => eval(then, env)?,
                Tri::False => eval(otherwise, env)?,
                Tri::Unknown => join(eval(then, env), eval(otherwise, env)),
            };
            value(picked.val, picked.tainted || cond.tainted)
        }
    })
}

fn lookup(name: &str, env: &Env<'_>) -> Value {
    if let Ok(found) = env.bindings.binary_search_by(|(bound, _)| bound.as_str().cmp(name)) {
        return env.bindings[found].1.clone();
    }
    if name == env.param {
        let val = match env.world {
            World::Given => Val::Tenant,
            World::Missing => Val::Null,
        };
        return value(val, true);
    }
    value(Val::Unknown(Tri::Unknown), false)
}

fn number_truth(number: &str) -> Tri {
    let digits = number.trim_start_matches("0x").trim_start_matches("0X");
    if digits.chars().all(|ch| matches!(ch, '0' | '.' | '_')) {
        Tri::False
    } else if number.starts_with("0x") || number.contains(['e', 'E']) {
        Tri::Unknown
    } else {
        Tri::True
    }
}

fn all_tainted<'e>(items: impl Iterator<Item = &'e Expr>, env: &Env<'_>) -> Result<bool, Fails> {
    let mut tainted = false;
    for item in items {
        tainted |= eval(item, env)?.tainted;
    }
    Ok(tainted)
}

/// One of two values (a branch not known): what both share, or unknown.
fn join(first: Result<Value, Fails>, second: Result<Value, Fails>) -> Value {
    match (first, second) {
        (Ok(first), Ok(second)) if first.val == second.val => {
            value(first.val, first.tainted || second.tainted)
        }
        (Ok(first), Ok(second)) => {
            let tri = if truth(&first.val) == truth(&second.val) { truth(&first.val) } else { Tri::Unknown };
            value(Val::Unknown(tri), first.tainted || second.tainted)
        }
        (Ok(one), Err(Fails)) | (Err(Fails), Ok(one)) => value(Val::Unknown(Tri::Unknown), one.tainted),
        (Err(Fails), Err(Fails)) => value(Val::Unknown(Tri::Unknown), true),
    }
}

/// Python's `and` and `or`: they return an operand.
fn short_circuit(left: &Expr, right: &Expr, is_or: bool, env: &Env<'_>) -> Result<Value, Fails> {
    let left = eval(left, env)?;
    let decided = if is_or { Tri::True } else { Tri::False };
    let left_truth = truth(&left.val);
    if left_truth == decided {
        return Ok(left);
    }
    if left_truth != Tri::Unknown {
        let right = eval(right, env)?;
        return Ok(value(right.val, right.tainted || left.tainted));
    }
    let Ok(right) = eval(right, env) else { return Ok(value(Val::Unknown(Tri::Unknown), true)) };
    let tainted = left.tainted || right.tainted;
    if left.val == right.val {
        return Ok(value(left.val, tainted));
    }
    let tri = if is_or { left_truth.or(truth(&right.val)) } else { left_truth.and(truth(&right.val)) };
    Ok(value(Val::Unknown(tri), tainted))
}

fn compare(left: &Expr, op: CmpOp, right: &Expr, env: &Env<'_>) -> Result<Value, Fails> {
    let left = eval(left, env)?;
    let right = eval(right, env)?;
    let non_null = |val: &Val| matches!(val, Val::Tenant | Val::Plain(_) | Val::Truth(_));
    let equal = match (&left.val, &right.val) {
        (Val::Null, Val::Null) => Tri::True,
        (Val::Null, other) | (other, Val::Null) if non_null(other) => Tri::False,
        _ => Tri::Unknown,
    };
    let tri = match op {
        CmpOp::Eq | CmpOp::Is => equal,
        CmpOp::NotEq | CmpOp::IsNot => equal.not(),
        CmpOp::Other => Tri::Unknown,
    };
    Ok(value(Val::Truth(tri), left.tainted || right.tainted))
}

fn call(func: &Expr, args: &[Expr], kwargs: &[(String, Expr)], env: &Env<'_>) -> Result<Value, Fails> {
    let Expr::Name(name) = func else {
        // A method call (`x.upper()`): evaluated, not followed.
        let tainted =
            eval(func, env)?.tainted | all_tainted(args.iter().chain(kwargs.iter().map(|(_, e)| e)), env)?;
        return Ok(value(Val::Unknown(Tri::Unknown), tainted));
    };
    if name == "sql_and" {
        return sql_and(kwargs, env);
    }
    if name == "defined" {
        let Some(first) = args.first() else { return Ok(value(Val::Truth(Tri::False), false)) };
        let seen = eval(first, env)?;
        let tri = match seen.val {
            Val::Null => Tri::False,
            Val::Tenant | Val::Plain(_) | Val::Truth(_) | Val::Ident | Val::Raw | Val::Cond { .. } => {
                Tri::True
            }
            Val::Unknown(_) => Tri::Unknown,
        };
        return Ok(value(Val::Truth(tri), seen.tainted));
    }
    let first = args.first().map(|arg| eval(arg, env)).transpose()?;
    let tainted = first.as_ref().is_some_and(|first| first.tainted)
        | all_tainted(args.iter().skip(1), env)?
        | kwargs_tainted(kwargs, env)?;
    let kwarg = |key: &str| kwargs.iter().find(|(name, _)| name == key).map(|(_, expr)| expr);
    let first_val = first.map(|first| first.val);
    Ok(match name.as_str() {
        "error" | "custom_error" => return Err(Fails),
        "Boolean" | "bool" => value(Val::Plain(Tri::Unknown), tainted),
        typed if listed(TYPED, typed) => {
            let default_at = if typed == "Array" { 2 } else { 1 };
            let default = kwarg("default").or_else(|| args.get(default_at));
            let defined = kwarg("defined").or_else(|| args.get(default_at + 1));
            typed_value(first_val.as_ref(), default, defined, tainted)?
        }
        "column" | "columns" => {
            let default = kwarg("default").or_else(|| args.get(1));
            if first_val == Some(Val::Null) && default.is_none_or(|default| *default == Expr::None) {
                return Err(Fails);
            }
            value(Val::Ident, tainted)
        }
        "symbol" => value(Val::Ident, tainted),
        "table" | "TABLE" => value(Val::Raw, tainted),
        "split_to_array" | "sql_unescape" if first_val == Some(Val::Tenant) => value(Val::Tenant, tainted),
        "split_to_array" => value(Val::Plain(Tri::True), tainted),
        _ if SETTINGS.contains(&name.as_str()) || name.starts_with("date_diff_in_") || name == "day_diff" => {
            value(Val::Plain(Tri::Unknown), tainted)
        }
        _ => value(Val::Unknown(Tri::Unknown), tainted),
    })
}

fn kwargs_tainted(kwargs: &[(String, Expr)], env: &Env<'_>) -> Result<bool, Fails> {
    all_tainted(kwargs.iter().map(|(_, expr)| expr), env)
}

fn typed_value(
    first: Option<&Val>,
    default: Option<&Expr>,
    defined: Option<&Expr>,
    tainted: bool,
) -> Result<Value, Fails> {
    let has_default = default.is_some_and(|default| *default != Expr::None);
    let val = match first {
        Some(Val::Tenant) => Val::Tenant,
        Some(Val::Null) if has_default => Val::Plain(Tri::Unknown),
        Some(Val::Null) if defined == Some(&Expr::False) => Val::Null,
        Some(Val::Null) => return Err(Fails),
        Some(Val::Plain(_) | Val::Truth(_)) => Val::Plain(Tri::Unknown),
        _ => Val::Unknown(Tri::Unknown),
    };
    Ok(value(val, tainted))
}

/// `sql_and(column=value, column__in=values, ...)`: one condition per argument whose value is
/// not `None`; an unknown `__suffix` fails the request.
fn sql_and(kwargs: &[(String, Expr)], env: &Env<'_>) -> Result<Value, Fails> {
    let mut pins = false;
    let mut loose = false;
    let mut tainted = false;
    for (key, expr) in kwargs {
        let seen = eval(expr, env)?;
        tainted |= seen.tainted;
        if seen.val == Val::Null {
            continue;
        }
        let operator = key.rsplit_once("__").map(|(_, op)| op);
        let pinning = match operator {
            None | Some("in") => true,
            Some("not_in" | "gt" | "lt" | "gte" | "lte") => false,
            Some(_) => return Err(Fails),
        };
        match seen.val {
            Val::Tenant if pinning => pins = true,
            _ if seen.tainted => loose = true,
            _ => {}
        }
    }
    Ok(value(Val::Cond { pins, loose }, tainted))
}

#[cfg(test)]
mod tests {
    use super::super::expr::parse_expr;
    use super::*;

    fn eval_in(text: &str, world: World) -> Result<Val, Fails> {
        let env = Env { param: "org", world, bindings: &[] };
        eval(&parse_expr(text).unwrap(), &env).map(|value| value.val)
    }

    #[test]
    fn typed_functions_fail_without_the_value_unless_given_a_default() {
        assert_eq!(eval_in("String(org)", World::Given), Ok(Val::Tenant));
        assert_eq!(eval_in("String(org)", World::Missing), Err(Fails));
        assert_eq!(eval_in("String(org, 'acme')", World::Missing), Ok(Val::Plain(Tri::Unknown)));
        assert_eq!(eval_in("String(org, default='acme')", World::Missing), Ok(Val::Plain(Tri::Unknown)));
        assert_eq!(eval_in("Array(org, 'String', defined=False)", World::Missing), Ok(Val::Null));
        assert_eq!(eval_in("Array(org, 'String')", World::Given), Ok(Val::Tenant));
        assert_eq!(eval_in("Int32(limit, 10)", World::Missing), Ok(Val::Unknown(Tri::Unknown)));
        assert_eq!(eval_in("error('no')", World::Given), Err(Fails));
    }

    #[test]
    fn conditions_follow_python_with_three_valued_truth() {
        assert_eq!(eval_in("defined(org)", World::Missing), Ok(Val::Truth(Tri::False)));
        assert_eq!(eval_in("not defined(org)", World::Given), Ok(Val::Truth(Tri::False)));
        assert_eq!(eval_in("defined(other)", World::Given), Ok(Val::Truth(Tri::Unknown)));
        assert_eq!(truth(&eval_in("defined(other) and defined(org)", World::Missing).unwrap()), Tri::False);
        assert_eq!(truth(&eval_in("defined(other) or defined(org)", World::Given).unwrap()), Tri::True);
        assert_eq!(eval_in("org is None", World::Missing), Ok(Val::Truth(Tri::True)));
        assert_eq!(eval_in("org == ''", World::Given), Ok(Val::Truth(Tri::Unknown)));
        assert_eq!(eval_in("org or 'none'", World::Missing), Ok(Val::Plain(Tri::True)));
    }

    #[test]
    fn sql_and_drops_missing_values_and_tells_pinning_from_loose_uses() {
        assert_eq!(eval_in("sql_and(org=org)", World::Missing), Ok(Val::Cond { pins: false, loose: false }));
        assert_eq!(
            eval_in("sql_and(org__in=Array(org, 'String'))", World::Given),
            Ok(Val::Cond { pins: true, loose: false })
        );
        assert_eq!(
            eval_in("sql_and(org__not_in=org)", World::Given),
            Ok(Val::Cond { pins: false, loose: true })
        );
        assert_eq!(eval_in("sql_and(org__like=org)", World::Given), Err(Fails));
        assert_eq!(eval_in("columns(org)", World::Missing), Err(Fails));
        assert_eq!(eval_in("column(org, 'x')", World::Given), Ok(Val::Ident));
    }
}
