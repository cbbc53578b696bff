//! The functions templates call, as Tinybird's renderer defines them: typed functions
//! (`String`, `Int32`, `Date`, `Array`...), `Boolean`, `defined`, `column`, `columns`, `sql_and`
//! and `error`.

use super::scalar::Scalar;
use super::value::{Value, quote_identifier};
use super::{MAX_LIST_ITEMS, TemplateError};

/// Typed functions' parameters (`transform_type` in Tinybird's renderer); `Array`'s add the item type.
const TYPED: [&str; 8] = ["x", "default", "defined", "required", "description", "enum", "example", "format"];
const ARRAY: [&str; 9] =
    ["x", "_type", "default", "defined", "required", "description", "enum", "example", "format"];

/// Calls `function` with evaluated arguments.
pub(super) fn call(
    function: &str,
    args: Vec<Value>,
    kwargs: Vec<(String, Value)>,
    line: usize,
) -> Result<Value, TemplateError> {
    if let Some(scalar) = Scalar::named(function) {
        let mut bound = Bound::new(function, &TYPED, args, kwargs, true)?;
        let (x, default, defined) = (bound.take(0), bound.take(1), bound.is_defined_required(2));
        return typed(scalar, x, default, defined, true);
    }
    match function {
        // `Int` and `Integer` check an Int32 but give a plain int, written without `toInt32`.
        "Int" | "Integer" => {
            let mut bound = Bound::new(function, &TYPED, args, kwargs, true)?;
            let (x, default, defined) = (bound.take(0), bound.take(1), bound.is_defined_required(2));
            typed(Scalar::INT32, x, default, defined, false)
        }
        "Boolean" | "bool" => {
            let mut bound = Bound::new(function, &["x", "default"], args, kwargs, true)?;
            Ok(boolean(bound.value(0), bound.value(1)))
        }
        "Array" => {
            let mut bound = Bound::new(function, &ARRAY, args, kwargs, true)?;
            let defined = bound.is_defined_required(3);
            array(bound.value(0), bound.take(1), bound.value(2), defined)
        }
        "defined" => {
            let mut bound = Bound::new(function, &["x"], args, kwargs, false)?;
            Ok(Value::Bool(!bound.value(0).is_none()))
        }
        "column" => {
            let mut bound = Bound::new(function, &["x", "default"], args, kwargs, true)?;
            column(bound.value(0), bound.value(1)).map(Value::Sql)
        }
        "columns" => {
            let mut bound = Bound::new(function, &["x", "default", "fn"], args, kwargs, true)?;
            columns(bound.value(0), bound.value(1), &bound.value(2))
        }
        "sql_and" => sql_and(kwargs),
        "error" | "custom_error" => {
            let mut bound = Bound::new(function, &["s", "code"], args, kwargs, true)?;
            Err(raised_error(&bound.value(0), bound.take(1)))
        }
        other => Err(TemplateError::syntax(format!("'{other}' is not a valid function, line {line}"))),
    }
}

/// Arguments bound to parameter names, Python-style; a parameter not given is `None`.
struct Bound(Vec<Option<Value>>);

impl Bound {
    /// Binds `args` then `kwargs` to `names`; `first_required` refuses a call without the first
    /// argument, with the message Tinybird gives for Python's missing positional argument.
    fn new(
        function: &str,
        names: &[&str],
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
        first_required: bool,
    ) -> Result<Self, TemplateError> {
        if args.len() > names.len() {
            return Err(TemplateError::plain(format!(
                "{function}() takes at most {} positional arguments but {} were given",
                names.len(),
                args.len()
            )));
        }
        let mut bound: Vec<Option<Value>> = vec![None; names.len()];
        for (slot, value) in bound.iter_mut().zip(args) {
            *slot = Some(value);
        }
        for (name, value) in kwargs {
            let Some(index) = names.iter().position(|known| *known == name) else {
                return Err(TemplateError::plain(format!(
                    "{function}() got an unexpected keyword argument '{name}'"
                )));
            };
            if bound[index].replace(value).is_some() {
                return Err(TemplateError::plain(format!(
                    "{function}() got multiple values for argument '{name}'"
                )));
            }
        }
        if first_required && bound.first().is_some_and(Option::is_none) {
            return Err(TemplateError::syntax("one of the transform type functions is missing an argument"));
        }
        Ok(Self(bound))
    }

    fn take(&mut self, index: usize) -> Option<Value> {
        self.0.get_mut(index).and_then(Option::take)
    }

    /// The argument, `None` when not given.
    fn value(&mut self, index: usize) -> Value {
        self.take(index).unwrap_or(Value::None)
    }

    /// `defined=False` lets a typed function return `None` for a missing value.
    fn is_defined_required(&mut self, index: usize) -> bool {
        self.take(index).is_none_or(|defined| defined.truthy())
    }
}

/// `transform_type`: the value (or the default when it is `None`), checked against the type.
fn typed(
    scalar: Scalar,
    x: Option<Value>,
    default: Option<Value>,
    must_be_defined: bool,
    as_typed: bool,
) -> Result<Value, TemplateError> {
    let mut value = x.unwrap_or(Value::None);
    if value.is_none() {
        value = default.unwrap_or(Value::None);
        if value.is_none() {
            return if must_be_defined { Err(TemplateError::required_param()) } else { Ok(Value::None) };
        }
    }
    let text = value.python_str();
    if !scalar.accepts(&text) {
        return Err(TemplateError::syntax(format!("Error validating '{text}' to type {}", scalar.name())));
    }
    Ok(scalar.convert(&text, as_typed))
}

/// `Boolean(x, default)`: 0 or 1 (`'0'` and `'false'` in any case are false).
fn boolean(x: Value, default: Value) -> Value {
    let value = if x.is_none() { default } else { x };
    let truth = match &value {
        Value::None => false,
        Value::Str(text) => !(text == "0" || text.eq_ignore_ascii_case("false") || text.is_empty()),
        other => other.truthy(),
    };
    Value::Int(i128::from(truth))
}

/// `Array(x, 'Type', default)`: a comma-separated string or a list, each item checked against
/// the type and written as a ClickHouse array literal.
fn array(
    x: Value,
    item_type: Option<Value>,
    default: Value,
    must_be_defined: bool,
) -> Result<Value, TemplateError> {
    let mut value = x;
    if value.is_none() {
        value = default;
        if value.is_none() {
            return if must_be_defined { Err(TemplateError::required_param()) } else { Ok(Value::None) };
        }
    }
    let items: Vec<Value> = match &value {
        Value::List(items) => items.clone(),
        Value::Str(text) | Value::Sql(text) => {
            text.split(',').map(|item| Value::Str(item.to_owned())).collect()
        }
        _ => return Err(TemplateError::syntax("transform type function Array is not well defined")),
    };
    if items.len() > MAX_LIST_ITEMS {
        return Err(TemplateError::plain(format!(
            "An Array has more than {MAX_LIST_ITEMS} items (emulator limit)"
        )));
    }
    let item_type = item_type.map(|name| name.python_str());
    let scalar = item_type.as_deref().and_then(Scalar::named);
    let mut written = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let text = item.python_str();
        let converted = match scalar {
            Some(Scalar::String) => Value::Str(text),
            Some(scalar) if scalar.accepts(&text) => scalar.convert(&text, false),
            Some(scalar) => {
                let shown = if text.is_empty() { "empty string".to_owned() } else { text };
                return Err(TemplateError::syntax(format!(
                    "Error validating [{}][{index}] ({shown}) to type {}",
                    value.python_str(),
                    scalar.name()
                )));
            }
            None if matches!(item_type.as_deref(), Some("Boolean" | "bool")) => boolean(item, Value::None),
            None => item,
        };
        let source = converted.python_str();
        written.push(converted.to_sql(&source)?);
    }
    Ok(Value::Sql(format!("[{}]", written.join(","))))
}

/// `column(x, default)`: a backquoted column name (`a.b` becomes `` `a`.`b` ``).
fn column(x: Value, default: Value) -> Result<String, TemplateError> {
    let name = if x.is_none() { default } else { x };
    if name.is_none() {
        return Err(TemplateError::syntax(
            "Missing column() default value, use `column(column_name, 'default_column_name')`",
        ));
    }
    let parts: Vec<String> = name.python_str().split('.').map(quote_identifier).collect();
    Ok(parts.join("."))
}

/// `columns(x, default, fn)`: comma-separated column names, each backquoted (and wrapped in
/// `fn(...) as name` when `fn` is given).
fn columns(x: Value, default: Value, wrapper: &Value) -> Result<Value, TemplateError> {
    let names = if x.is_none() { default } else { x };
    let names = match names {
        Value::None => {
            return Err(TemplateError::syntax(
                "Missing columns() default value, use `columns(column_names, 'default_column_name')`",
            ));
        }
        Value::List(_) => {
            return Err(TemplateError::syntax("The 'columns' function expects a String not an Array"));
        }
        other => other.python_str(),
    };
    let mut written = Vec::new();
    for name in names.split(',').map(str::trim) {
        let quoted = column(Value::Str(name.to_owned()), Value::None)?;
        written.push(if wrapper.is_none() {
            quoted
        } else {
            format!("{}({quoted}) as {name}", wrapper.python_str())
        });
    }
    Ok(Value::Sql(written.join(",")))
}

/// `sql_and(a=..., b__in=...)`: `a = 'x' and b in [...]`, leaving out `None` values.
fn sql_and(kwargs: Vec<(String, Value)>) -> Result<Value, TemplateError> {
    let mut conditions = Vec::new();
    for (key, value) in kwargs {
        if value.is_none() {
            continue;
        }
        let (column, operator) = match key.rsplit_once("__") {
            None => (key.as_str(), "="),
            Some((column, suffix)) => match suffix {
                "in" => (column, "in"),
                "not_in" => (column, "not in"),
                "gt" => (column, ">"),
                "lt" => (column, "<"),
                "gte" => (column, ">="),
                "lte" => (column, "<="),
                other => return Err(TemplateError::syntax(format!("operand {other} not supported"))),
            },
        };
        conditions.push(format!("{column} {operator} {}", value.to_sql(&key)?));
    }
    Ok(Value::Sql(conditions.join(" and ")))
}

/// `error('message', code)`: the request fails with the message and the code (400 by default;
/// a code outside 400..=599 is 400).
fn raised_error(message: &Value, code: Option<Value>) -> TemplateError {
    let status = code
        .and_then(|code| code.integer())
        .and_then(|code| u16::try_from(code).ok())
        .filter(|code| (400..=599).contains(code))
        .unwrap_or(400);
    let message = message.python_str();
    TemplateError { status, ..TemplateError::plain(message) }
}
