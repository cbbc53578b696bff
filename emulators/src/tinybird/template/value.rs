//! Template values, with the Python behaviour Tinybird's renderer inherits: `str()`, `repr()`,
//! truthiness, `==` and ordering, and how `{{ value }}` is written into the SQL
//! (`expression_wrapper`): strings quoted with Tinybird's escaping, typed numbers as
//! `toInt32('5')`, SQL fragments (`columns()`, `Array()`, `sql_and()`) as they are.

use serde_json::Value as Json;

use super::TemplateError;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Value {
    /// A parameter that was not sent, or Python's `None`.
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    /// SQL written as is (Tinybird's `Expression` and `Symbol`).
    Sql(String),
    /// `Int32(x)` and friends: an integer written as `toInt32('5')`; `digits` may exceed i128.
    TypedInt {
        digits: String,
        type_name: &'static str,
    },
    /// `Float32(x)` and `Float64(x)`: written as `toFloat32('1.5')`.
    TypedFloat {
        value: f64,
        type_name: &'static str,
    },
}

impl Value {
    /// A parameter's value: JSON from a JWT's `fixed_params`, or a query-string string.
    pub(super) fn from_json(json: &Json) -> Self {
        match json {
            Json::Null => Self::None,
            Json::Bool(flag) => Self::Bool(*flag),
            Json::Number(number) => match (number.as_i64(), number.as_u64()) {
                (Some(int), _) => Self::Int(i128::from(int)),
                (None, Some(int)) => Self::Int(i128::from(int)),
                _ => Self::Float(number.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(text) => Self::Str(text.clone()),
            Json::Array(items) => Self::List(items.iter().map(Self::from_json).collect()),
            Json::Object(_) => Self::Str(json.to_string()),
        }
    }

    /// The literal as JSON (a node param's `default` in a pipe description).
    pub(super) fn to_json(&self) -> Json {
        match self {
            Self::None => Json::Null,
            Self::Bool(flag) => Json::Bool(*flag),
            Self::Int(int) => i64::try_from(*int).map_or_else(|_| Json::String(int.to_string()), Json::from),
            Self::Float(float) => serde_json::Number::from_f64(*float).map_or(Json::Null, Json::Number),
            Self::List(items) => Json::Array(items.iter().map(Self::to_json).collect()),
            other => Json::String(other.python_str()),
        }
    }

    pub(super) fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }

    /// Python's `str(value)`.
    pub(super) fn python_str(&self) -> String {
        match self {
            Self::None => "None".to_owned(),
            Self::Bool(true) => "True".to_owned(),
            Self::Bool(false) => "False".to_owned(),
            Self::Int(int) => int.to_string(),
            Self::Float(float) => python_float(*float),
            Self::Str(text) | Self::Sql(text) => text.clone(),
            Self::List(_) => self.python_repr(),
            Self::TypedInt { digits, type_name } => format!("to{type_name}('{digits}')"),
            Self::TypedFloat { value, type_name } => format!("to{type_name}('{}')", python_float(*value)),
        }
    }

    /// Python's `repr(value)` (lists show their items this way).
    fn python_repr(&self) -> String {
        match self {
            Self::Str(text) => python_string_repr(text),
            Self::List(items) => {
                let items: Vec<String> = items.iter().map(Self::python_repr).collect();
                format!("[{}]", items.join(", "))
            }
            other => other.python_str(),
        }
    }

    /// Python's type name, for error messages.
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Self::None => "NoneType",
            Self::Bool(_) => "bool",
            Self::Int(_) => "int",
            Self::Float(_) => "float",
            Self::Str(_) => "str",
            Self::List(_) => "list",
            Self::Sql(_) => "Expression",
            Self::TypedInt { .. } => "Integer",
            Self::TypedFloat { .. } => "Float",
        }
    }

    /// Python's truthiness.
    pub(super) fn truthy(&self) -> bool {
        match self {
            Self::None => false,
            Self::Bool(flag) => *flag,
            Self::Str(text) | Self::Sql(text) => !text.is_empty(),
            Self::List(items) => !items.is_empty(),
            other => other.number().is_some_and(|number| number != 0.0),
        }
    }

    /// The numeric value of numbers (bools count as 0 and 1, as in Python).
    pub(super) fn number(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)]
        match self {
            Self::Bool(flag) => Some(f64::from(u8::from(*flag))),
            Self::Int(int) => Some(*int as f64),
            Self::Float(float) | Self::TypedFloat { value: float, .. } => Some(*float),
            Self::TypedInt { digits, .. } => digits.parse::<f64>().ok(),
            _ => None,
        }
    }

    /// The exact integer of integral values.
    pub(super) fn integer(&self) -> Option<i128> {
        match self {
            Self::Bool(flag) => Some(i128::from(*flag)),
            Self::Int(int) => Some(*int),
            Self::TypedInt { digits, .. } => digits.parse().ok(),
            _ => None,
        }
    }

    /// The text of strings (Tinybird's `Expression` is a `str`).
    pub(super) fn text(&self) -> Option<&str> {
        match self {
            Self::Str(text) | Self::Sql(text) => Some(text),
            _ => None,
        }
    }

    /// Python's `==`.
    pub(super) fn python_eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::None, Self::None) => true,
            (Self::List(left), Self::List(right)) => {
                left.len() == right.len() && left.iter().zip(right).all(|(a, b)| a.python_eq(b))
            }
            _ => match (self.text(), other.text()) {
                (Some(left), Some(right)) => left == right,
                (None, None) => match (self.integer(), other.integer()) {
                    (Some(left), Some(right)) => left == right,
                    _ => self.number().zip(other.number()).is_some_and(|(left, right)| left == right),
                },
                _ => false,
            },
        }
    }

    /// Python's ordering of numbers and of strings; `TypeError` otherwise.
    pub(super) fn python_cmp(&self, other: &Self, symbol: &str) -> Result<std::cmp::Ordering, TemplateError> {
        let ordering = match (self.text(), other.text()) {
            (Some(left), Some(right)) => Some(left.cmp(right)),
            (None, None) => match (self.integer(), other.integer()) {
                (Some(left), Some(right)) => Some(left.cmp(&right)),
                _ => self.number().zip(other.number()).and_then(|(left, right)| left.partial_cmp(&right)),
            },
            _ => None,
        };
        ordering.ok_or_else(|| {
            TemplateError::plain(format!(
                "'{symbol}' not supported between instances of '{}' and '{}'",
                self.type_name(),
                other.type_name()
            ))
        })
    }

    /// How `{{ value }}` is written into the SQL; `source` names the expression in the error
    /// for a null value.
    pub(super) fn to_sql(&self, source: &str) -> Result<String, TemplateError> {
        match self {
            Self::Str(text) => Ok(quote_string(text)),
            Self::None => {
                let name: String = source.chars().take(20).collect();
                let name = if source.chars().count() > 20 { format!("{name}...") } else { name };
                Err(TemplateError::syntax(format!("expression \"{name}\" evaluated to null")))
            }
            other => Ok(other.python_str()),
        }
    }
}

/// `'text'` with Tinybird's `sqlescape_for_string_expression`.
pub(super) fn quote_string(text: &str) -> String {
    format!("'{}'", escape(text, "\\\""))
}

/// `` `name` `` with Tinybird's `sqlescape` (which drops double quotes).
pub(super) fn quote_identifier(text: &str) -> String {
    format!("`{}`", escape(text, ""))
}

/// Tinybird's SQL escaping; `double_quote` replaces `"`.
fn escape(text: &str, double_quote: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 2);
    for character in text.chars() {
        match character {
            '\0' => escaped.push_str("\\0"),
            '\r' => escaped.push_str("\\r"),
            '\u{8}' => escaped.push_str("\\b"),
            '\t' => escaped.push_str("\\t"),
            '\u{1a}' => escaped.push_str("\\z"),
            '\n' => escaped.push_str("\\n"),
            '"' => escaped.push_str(double_quote),
            '\'' => escaped.push_str("\\'"),
            '\\' => escaped.push_str("\\\\"),
            '%' => escaped.push_str("\\%"),
            '`' => escaped.push_str("\\`"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// Python's `repr()` of a string: single quotes unless the text has some and no double ones.
fn python_string_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') { '"' } else { '\'' };
    let mut repr = String::from(quote);
    for character in text.chars() {
        match character {
            '\\' => repr.push_str("\\\\"),
            '\n' => repr.push_str("\\n"),
            '\r' => repr.push_str("\\r"),
            '\t' => repr.push_str("\\t"),
            c if c == quote => {
                repr.push('\\');
                repr.push(c);
            }
            c if c.is_control() => repr.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => repr.push(c),
        }
    }
    repr.push(quote);
    repr
}

/// Python's `repr()` of a float: shortest round-trip digits, positional from 1e-4 to 1e16,
/// scientific (`1e+16`, `1.5e-07`) outside.
pub(super) fn python_float(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |rest| ("-", rest));
    if !(-4..16).contains(&exponent) {
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{mantissa}e{exponent_sign}{:02}", exponent.unsigned_abs());
    }
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let point = usize::try_from(exponent + 1).unwrap_or(0);
    if exponent < 0 {
        let zeros = "0".repeat(usize::try_from(-exponent - 1).unwrap_or(0));
        return format!("{sign}0.{zeros}{digits}");
    }
    let whole = format!("{digits:0<point$}");
    let (integer, fraction) = whole.split_at(point.min(whole.len()));
    let fraction = if fraction.is_empty() { "0" } else { fraction };
    format!("{sign}{integer}.{fraction}")
}
