//! The scalar types of typed functions (`Int32(x)`, `Date(x)`...) and Tinybird's checks of a
//! value's text against them (`tinybird/datatypes.py`'s `testers`).

use super::value::{Value, python_float};

/// A type a typed function converts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scalar {
    String,
    /// `Int8` ... `UInt256`: signed, width in bits.
    Integer {
        name: &'static str,
        signed: bool,
        bits: u32,
    },
    Float(&'static str),
    Date,
    DateTime,
    DateTime64,
}

const INTEGERS: [(&str, bool, u32); 12] = [
    ("Int8", true, 8),
    ("Int16", true, 16),
    ("Int32", true, 32),
    ("Int64", true, 64),
    ("Int128", true, 128),
    ("Int256", true, 256),
    ("UInt8", false, 8),
    ("UInt16", false, 16),
    ("UInt32", false, 32),
    ("UInt64", false, 64),
    ("UInt128", false, 128),
    ("UInt256", false, 256),
];

impl Scalar {
    /// What `Int` and `Integer` check their value against.
    pub(super) const INT32: Self = Self::Integer { name: "Int32", signed: true, bits: 32 };

    /// The type a function or an `Array` item type names.
    pub(super) fn named(name: &str) -> Option<Self> {
        if let Some((name, signed, bits)) = INTEGERS.iter().find(|(known, ..)| *known == name) {
            return Some(Self::Integer { name, signed: *signed, bits: *bits });
        }
        match name {
            "String" => Some(Self::String),
            "Float32" => Some(Self::Float("Float32")),
            "Float64" => Some(Self::Float("Float64")),
            "Date" => Some(Self::Date),
            "DateTime" => Some(Self::DateTime),
            "DateTime64" => Some(Self::DateTime64),
            _ => None,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::String => "String",
            Self::Integer { name, .. } | Self::Float(name) => name,
            Self::Date => "Date",
            Self::DateTime => "DateTime",
            Self::DateTime64 => "DateTime64",
        }
    }

    /// Whether Tinybird accepts this text for the type.
    pub(super) fn accepts(self, text: &str) -> bool {
        match self {
            Self::String => true,
            Self::Integer { signed, bits, .. } => integer_in_range(text, signed, bits),
            Self::Float(_) => !text.contains('_') && parse_python_float(text).is_some(),
            Self::Date => matches_pattern(text, "dddd-dd-dd$"),
            Self::DateTime => {
                matches_pattern(text, "dddd.dd.dd?dd:dd:dd") || matches_pattern(text, "dd.dd.dddd.D:D:D")
            }
            Self::DateTime64 => {
                matches_pattern(text, "dddd.dd.dd?dd:dd:dd.ddd")
                    || matches_pattern(text, "dd.dd.dddd.D:D:D.E")
            }
        }
    }

    /// The value a typed function returns for accepted `text` (as a top-level function when
    /// `typed`, as an `Array` item otherwise, where Tinybird uses plain `int` and `float`).
    pub(super) fn convert(self, text: &str, typed: bool) -> Value {
        match self {
            Self::String | Self::Date | Self::DateTime | Self::DateTime64 => Value::Str(text.to_owned()),
            Self::Integer { name, .. } => {
                let digits = normalize_integer(text);
                match (typed, digits.parse::<i128>()) {
                    (false, Ok(int)) => Value::Int(int),
                    _ => Value::TypedInt { digits, type_name: name },
                }
            }
            Self::Float(name) => {
                let value = parse_python_float(text).unwrap_or(f64::NAN);
                if typed {
                    Value::TypedFloat { value, type_name: name }
                } else {
                    Value::Sql(python_float(value))
                }
            }
        }
    }
}

/// Python's `float()` of text: surrounding whitespace allowed, `inf` and `nan` accepted.
fn parse_python_float(text: &str) -> Option<f64> {
    let trimmed = text.trim();
    let lower = trimmed.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    if matches!(unsigned, "inf" | "infinity" | "nan") {
        return lower.parse().ok();
    }
    let numeric = !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c));
    if numeric { trimmed.parse().ok() } else { None }
}

/// `^[+-]?\d+$` (unsigned: `^\d+$`) within the type's range, decided on the digits so that 256
/// bits need no big integers.
fn integer_in_range(text: &str, signed: bool, bits: u32) -> bool {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) if signed || bits >= 128 => (true, rest),
        Some(_) => return false,
        None => (false, if signed || bits >= 128 { text.strip_prefix('+').unwrap_or(text) } else { text }),
    };
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return false;
    }
    let magnitude = digits.trim_start_matches('0');
    if !signed {
        // `0 <= x < 2**bits`: a negative zero is still zero.
        return (!negative || magnitude.is_empty()) && less_than(magnitude, &power_of_two(bits));
    }
    let limit = power_of_two(bits - 1);
    // `-2**(bits-1) <= x < 2**(bits-1)`.
    if negative { !greater_than(magnitude, &limit) } else { less_than(magnitude, &limit) }
}

fn normalize_integer(text: &str) -> String {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.strip_prefix('+').unwrap_or(text)),
    };
    let magnitude = digits.trim_start_matches('0');
    if magnitude.is_empty() { "0".to_owned() } else { format!("{sign}{magnitude}") }
}

/// Compares two decimal magnitudes without leading zeros.
fn less_than(left: &str, right: &str) -> bool {
    (left.len(), left) < (right.len(), right)
}

fn greater_than(left: &str, right: &str) -> bool {
    (left.len(), left) > (right.len(), right)
}

/// `2**exponent` in decimal.
fn power_of_two(exponent: u32) -> String {
    let mut digits = vec![1_u8]; // little-endian
    for _ in 0..exponent {
        let mut carry = 0;
        for digit in &mut digits {
            let doubled = *digit * 2 + carry;
            *digit = doubled % 10;
            carry = doubled / 10;
        }
        if carry > 0 {
            digits.push(carry);
        }
    }
    digits.iter().rev().map(|digit| char::from(b'0' + digit)).collect()
}

/// A tiny regular-expression subset matched at the start (Python's `re.match`): `d` a digit,
/// `D` one or two digits, `E` one to three digits, `.` any character, `?` `T` or whitespace,
/// `$` the end; anything else is itself.
fn matches_pattern(text: &str, pattern: &str) -> bool {
    let characters: Vec<char> = text.chars().collect();
    let mut position = 0;
    for token in pattern.chars() {
        let digits = |max: usize, position: usize| {
            characters[position..].iter().take(max).take_while(|c| c.is_ascii_digit()).count()
        };
        let advance = match token {
            'd' => usize::from(characters.get(position).is_some_and(char::is_ascii_digit)),
            'D' => digits(2, position),
            'E' => digits(3, position),
            '.' => usize::from(position < characters.len()),
            '?' => usize::from(characters.get(position).is_some_and(|c| *c == 'T' || c.is_whitespace())),
            '$' => return position == characters.len(),
            literal => usize::from(characters.get(position) == Some(&literal)),
        };
        if advance == 0 {
            return false;
        }
        position += advance;
    }
    true
}
