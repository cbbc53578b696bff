//! Durations as users write them in specs: `90s`, `15m`, `1h`, `1h30m`, `500ms`, or `0`.
//!
//! A deliberately small Go-style subset (integers with `h`, `m`, `s`, `ms`), the same syntax the
//! CRD schema's pattern accepts, so what the API server lets through always parses here.

use jiff::SignedDuration;

/// Regular expression (RE2/ECMA) for the CRD schema. Must accept exactly what [`parse`] accepts.
pub const DURATION_PATTERN: &str = r"^(0|([0-9]+(ms|s|m|h))+)$";

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration: write it like 90s, 15m, 1h or 1h30m")]
pub struct ParseDurationError(pub String);

/// Parses a duration such as `1h30m`.
///
/// # Errors
/// When the text is not a sequence of `<integer><unit>` with unit `h`, `m`, `s` or `ms` (or `0`).
pub fn parse(text: &str) -> Result<SignedDuration, ParseDurationError> {
    let err = || ParseDurationError(text.to_owned());
    if text == "0" {
        return Ok(SignedDuration::ZERO);
    }
    if text.is_empty() {
        return Err(err());
    }
    let mut total_ms: i64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let value: i64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let (unit_ms, unit_len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return Err(err());
        };
        rest = &rest[unit_len..];
        total_ms = value.checked_mul(unit_ms).and_then(|ms| total_ms.checked_add(ms)).ok_or_else(err)?;
    }
    Ok(SignedDuration::from_millis(total_ms))
}

/// Formats a duration in the same syntax, e.g. `1h20m`, `45s`, `0`.
#[must_use]
pub fn format(duration: SignedDuration) -> String {
    let mut ms = duration.as_millis();
    if ms == 0 {
        return "0".to_owned();
    }
    let mut out = String::new();
    if ms < 0 {
        out.push('-');
        ms = -ms;
    }
    for (unit, size) in [("h", 3_600_000_i128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(parse("90s"), Ok(SignedDuration::from_secs(90)));
        assert_eq!(parse("15m"), Ok(SignedDuration::from_mins(15)));
        assert_eq!(parse("1h30m"), Ok(SignedDuration::from_mins(90)));
        assert_eq!(parse("1h0m5s"), Ok(SignedDuration::from_secs(3605)));
        assert_eq!(parse("250ms"), Ok(SignedDuration::from_millis(250)));
        assert_eq!(parse("0"), Ok(SignedDuration::ZERO));
    }

    #[test]
    fn refuses_other_syntax() {
        for bad in ["", "1", "1d", "-1h", "1.5h", "1 h", "h", "1hm", "PT1H", "9999999999999999h"] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn formats_back() {
        assert_eq!(format(SignedDuration::from_mins(80)), "1h20m");
        assert_eq!(format(SignedDuration::from_secs(45)), "45s");
        assert_eq!(format(SignedDuration::ZERO), "0");
        for text in ["1h", "20m", "1h0m1s", "1500ms"] {
            let parsed = parse(text).unwrap_or_default();
            assert_eq!(parse(&format(parsed)), Ok(parsed));
        }
    }
}
