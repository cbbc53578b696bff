//! Rendering: walking the blocks with the request's parameters, evaluating expressions with
//! Python's semantics and writing each `{{ }}` as its SQL text.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::blocks::Block;
use super::expr::{CompareOp, Expr};
use super::value::Value;
use super::{MAX_LIST_ITEMS, MAX_RENDERED_BYTES, TemplateError, functions};

/// Names visible to expressions: `{% set %}` variables, then the parameters.
struct Scope<'a> {
    params: &'a BTreeMap<String, Json>,
    variables: BTreeMap<String, Value>,
}

impl Scope<'_> {
    /// A name's value; a parameter that was not sent is `None`.
    fn lookup(&self, name: &str) -> Value {
        if let Some(value) = self.variables.get(name) {
            return value.clone();
        }
        self.params.get(name).map_or(Value::None, Value::from_json)
    }
}

/// Renders `blocks` with `params`.
pub(super) fn render(blocks: &[Block], params: &BTreeMap<String, Json>) -> Result<String, TemplateError> {
    let mut scope = Scope { params, variables: BTreeMap::new() };
    let mut out = String::new();
    write_blocks(blocks, &mut scope, &mut out)?;
    Ok(out)
}

fn write_blocks(blocks: &[Block], scope: &mut Scope<'_>, out: &mut String) -> Result<(), TemplateError> {
    for block in blocks {
        match block {
            Block::Text(text) => out.push_str(text),
            Block::Output { expr, source, line } => {
                let value = evaluate(expr, scope, *line)?;
                out.push_str(&value.to_sql(source)?);
            }
            Block::If { branches, otherwise } => {
                let mut chosen = otherwise.as_deref();
                for branch in branches {
                    if evaluate(&branch.condition, scope, branch.line)?.truthy() {
                        chosen = Some(&branch.body);
                        break;
                    }
                }
                if let Some(body) = chosen {
                    write_blocks(body, scope, out)?;
                }
            }
            Block::Set { name, expr, line } => {
                let value = evaluate(expr, scope, *line)?;
                scope.variables.insert(name.clone(), value);
            }
        }
        if out.len() > MAX_RENDERED_BYTES {
            return Err(TemplateError::plain(format!(
                "The rendered SQL is longer than {MAX_RENDERED_BYTES} bytes (emulator limit)"
            )));
        }
    }
    Ok(())
}

fn evaluate(expr: &Expr, scope: &Scope<'_>, line: usize) -> Result<Value, TemplateError> {
    Ok(match expr {
        Expr::Literal(value) => value.clone(),
        Expr::Name(name) => scope.lookup(name),
        Expr::List(items) => {
            Value::List(items.iter().map(|item| evaluate(item, scope, line)).collect::<Result<_, _>>()?)
        }
        Expr::Call { function, args, kwargs } => {
            let args = args.iter().map(|arg| evaluate(arg, scope, line)).collect::<Result<_, _>>()?;
            let kwargs = kwargs
                .iter()
                .map(|(name, arg)| Ok((name.clone(), evaluate(arg, scope, line)?)))
                .collect::<Result<_, TemplateError>>()?;
            functions::call(function, args, kwargs, line)?
        }
        Expr::Not(operand) => Value::Bool(!evaluate(operand, scope, line)?.truthy()),
        Expr::And(left, right) => {
            let left = evaluate(left, scope, line)?;
            if left.truthy() { evaluate(right, scope, line)? } else { left }
        }
        Expr::Or(left, right) => {
            let left = evaluate(left, scope, line)?;
            if left.truthy() { left } else { evaluate(right, scope, line)? }
        }
        Expr::Compare(left, op, right) => {
            Value::Bool(compare(&evaluate(left, scope, line)?, *op, &evaluate(right, scope, line)?)?)
        }
        Expr::Add(left, right) => add(&evaluate(left, scope, line)?, &evaluate(right, scope, line)?)?,
        Expr::Subtract(left, right) => {
            let (left, right) = (evaluate(left, scope, line)?, evaluate(right, scope, line)?);
            arithmetic(&left, &right, "-", i128::checked_sub, |a, b| a - b)?
        }
        Expr::Negate(operand) => {
            let operand = evaluate(operand, scope, line)?;
            arithmetic(&Value::Int(0), &operand, "-", i128::checked_sub, |a, b| a - b)?
        }
    })
}

fn compare(left: &Value, op: CompareOp, right: &Value) -> Result<bool, TemplateError> {
    use std::cmp::Ordering::{Greater, Less};
    Ok(match op {
        CompareOp::Equal => left.python_eq(right),
        CompareOp::NotEqual => !left.python_eq(right),
        CompareOp::Less => left.python_cmp(right, "<")? == Less,
        CompareOp::LessOrEqual => left.python_cmp(right, "<=")? != Greater,
        CompareOp::Greater => left.python_cmp(right, ">")? == Greater,
        CompareOp::GreaterOrEqual => left.python_cmp(right, ">=")? != Less,
        CompareOp::In => contains(right, left)?,
        CompareOp::NotIn => !contains(right, left)?,
        // Identity: only `None`, `True` and `False` are singletons worth testing.
        CompareOp::Is => is_same(left, right),
        CompareOp::IsNot => !is_same(left, right),
    })
}

fn is_same(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::None, Value::None) => true,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        _ => false,
    }
}

/// Python's `needle in container`.
fn contains(container: &Value, needle: &Value) -> Result<bool, TemplateError> {
    match container {
        Value::List(items) => Ok(items.iter().any(|item| item.python_eq(needle))),
        Value::Str(text) | Value::Sql(text) => match needle.text() {
            Some(part) => Ok(text.contains(part)),
            None => Err(TemplateError::plain(format!(
                "'in <string>' requires string as left operand, not {}",
                needle.type_name()
            ))),
        },
        other => {
            Err(TemplateError::plain(format!("argument of type '{}' is not iterable", other.type_name())))
        }
    }
}

fn add(left: &Value, right: &Value) -> Result<Value, TemplateError> {
    match (left, right) {
        (Value::Str(a), Value::Str(b)) => Ok(Value::Str(format!("{a}{b}"))),
        (Value::List(a), Value::List(b)) if a.len() + b.len() <= MAX_LIST_ITEMS => {
            Ok(Value::List(a.iter().chain(b).cloned().collect()))
        }
        _ => arithmetic(left, right, "+", i128::checked_add, |a, b| a + b),
    }
}

fn arithmetic(
    left: &Value,
    right: &Value,
    symbol: &str,
    integers: fn(i128, i128) -> Option<i128>,
    floats: fn(f64, f64) -> f64,
) -> Result<Value, TemplateError> {
    let numeric =
        |value: &Value| !matches!(value, Value::Str(_) | Value::Sql(_) | Value::List(_) | Value::None);
    if numeric(left) && numeric(right) {
        if let (Some(a), Some(b)) = (left.integer(), right.integer())
            && let Some(result) = integers(a, b)
        {
            return Ok(Value::Int(result));
        }
        if let (Some(a), Some(b)) = (left.number(), right.number()) {
            return Ok(Value::Float(floats(a, b)));
        }
    }
    Err(TemplateError::plain(format!(
        "unsupported operand type(s) for {symbol}: '{}' and '{}'",
        left.type_name(),
        right.type_name()
    )))
}
