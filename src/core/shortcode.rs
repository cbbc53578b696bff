//! Clerk JWT-template shortcodes in claim values: `{{user.id}}`, `{{org.slug || 'none'}}`.

/// Roots of the shortcodes Clerk fills from the session (anything else becomes `null`).
const ROOTS: &[&str] = &["user", "org", "session"];

/// One `{{...}}` found in a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortcode {
    /// Dotted path such as `org.slug`.
    pub path: String,
    /// The `|| 'fallback'` value, if any.
    pub fallback: Option<String>,
}

/// Why a string's shortcodes are not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShortcodeError {
    #[error("unclosed shortcode: a '{{{{' without '}}}}'")]
    Unclosed,
    #[error("shortcode {{{{{0}}}}} is not of the form {{{{user.id}}}} or {{{{org.slug || 'fallback'}}}}")]
    Syntax(String),
    #[error(
        "shortcode {{{{{0}}}}} is unknown to Clerk (known roots: user, org, session): Clerk would put null here"
    )]
    UnknownRoot(String),
}

/// Whether the text contains any shortcode marker.
#[must_use]
pub fn contains_shortcode(text: &str) -> bool {
    text.contains("{{")
}

/// Finds and checks every shortcode in the text.
///
/// # Errors
/// On an unclosed or malformed shortcode, or one Clerk does not know.
pub fn parse_all(text: &str) -> Result<Vec<Shortcode>, ShortcodeError> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(ShortcodeError::Unclosed)?;
        found.push(parse_one(after[..end].trim())?);
        rest = &after[end + 2..];
    }
    Ok(found)
}

fn parse_one(inner: &str) -> Result<Shortcode, ShortcodeError> {
    let syntax = || ShortcodeError::Syntax(inner.to_owned());
    let (path, fallback) = match inner.split_once("||") {
        Some((path, fallback)) => (path.trim(), Some(parse_fallback(fallback.trim()).ok_or_else(syntax)?)),
        None => (inner, None),
    };
    let mut segments = path.split('.');
    let root = segments.next().unwrap_or_default();
    let rest: Vec<&str> = segments.collect();
    let segment_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if rest.is_empty() || !segment_ok(root) || !rest.iter().all(|s| segment_ok(s)) {
        return Err(syntax());
    }
    if !ROOTS.contains(&root) {
        return Err(ShortcodeError::UnknownRoot(inner.to_owned()));
    }
    Ok(Shortcode { path: path.to_owned(), fallback })
}

fn parse_fallback(text: &str) -> Option<String> {
    let quote = text.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let inner = text.strip_prefix(quote)?.strip_suffix(quote)?;
    (!inner.contains(quote)).then(|| inner.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_clerk_shortcodes_with_fallbacks() {
        assert_eq!(
            parse_all("{{org.slug}}"),
            Ok(vec![Shortcode { path: "org.slug".into(), fallback: None }])
        );
        assert_eq!(
            parse_all("{{ org.slug || 'none' }}"),
            Ok(vec![Shortcode { path: "org.slug".into(), fallback: Some("none".into()) }])
        );
        assert_eq!(parse_all("{{user.public_metadata.tenant.id}}-x").map(|v| v.len()), Ok(1));
        assert_eq!(parse_all("plain"), Ok(vec![]));
    }

    #[test]
    fn refuses_broken_or_unknown_shortcodes() {
        assert_eq!(parse_all("{{org.slug"), Err(ShortcodeError::Unclosed));
        assert!(matches!(parse_all("{{org}}"), Err(ShortcodeError::Syntax(_))));
        assert!(matches!(parse_all("{{org.slug || none}}"), Err(ShortcodeError::Syntax(_))));
        assert!(matches!(parse_all("{{tenant.id}}"), Err(ShortcodeError::UnknownRoot(_))));
    }
}
