//! Clerk JWT-template shortcodes in claim values: `{{user.id}}`, `{{org.slug || 'none'}}`.
//!
//! A claim value is parsed into [`Segment`]s (literal text and shortcodes) and written back by
//! [`Template::render`], the operator's own serialisation: a user's text is never passed through
//! as written. Rendering adds the workspace's missing-identity value as the fallback of every
//! shortcode that has none, so a user without an organization (Clerk renders `{{org.slug}}` as
//! `null`) never gets a null, empty or missing tenant value.

/// Roots of the shortcodes Clerk fills from the session (anything else becomes `null`).
const ROOTS: &[&str] = &["user", "org", "session"];

/// Shortcodes whose value the signed-in end user writes: from the browser
/// (`user.unsafe_metadata`, Clerk's docs: "can be read and updated from the frontend") or in
/// their own profile (names and image, editable through Clerk's `<UserProfile/>` and the
/// Frontend API, and unique to no one). A claim built from one is chosen by the user.
const USER_WRITABLE: &[&str] = &[
    "user.unsafe_metadata",
    "user.first_name",
    "user.last_name",
    "user.full_name",
    "user.image_url",
    "user.profile_image_url",
];

/// Longest value assumed for a shortcode when bounding a rendered token name: Clerk ids are
/// `user_`/`org_` plus 27 characters; slugs, roles and metadata values are bounded by this
/// assumption, which the README states.
pub const MAX_RENDERED_SHORTCODE_BYTES: usize = 64;

/// One `{{...}}` found in a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortcode {
    /// Dotted path such as `org.slug`.
    pub path: String,
    /// The `|| 'fallback'` value, if any.
    pub fallback: Option<String>,
}

impl Shortcode {
    /// Whether the end user writes this shortcode's value (`user.unsafe_metadata`, their names).
    #[must_use]
    pub fn is_user_writable(&self) -> bool {
        USER_WRITABLE
            .iter()
            .any(|writable| self.path == *writable || self.path.starts_with(&format!("{writable}.")))
    }

    /// `{{path || 'fallback'}}`, with `default_fallback` when the shortcode has none.
    #[must_use]
    pub fn render(&self, default_fallback: &str) -> String {
        let fallback = self.fallback.as_deref().unwrap_or(default_fallback);
        format!("{{{{{} || '{fallback}'}}}}", self.path)
    }
}

/// A piece of a claim value: literal text or a shortcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Text as written.
    Literal(String),
    /// A shortcode Clerk fills per session.
    Code(Shortcode),
}

/// A claim value parsed into segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub Vec<Segment>);

impl Template {
    /// Parses a claim value.
    ///
    /// # Errors
    /// On an unclosed or malformed shortcode, or one Clerk does not know.
    pub fn parse(text: &str) -> Result<Self, ShortcodeError> {
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or(ShortcodeError::Unclosed)?;
            if start > 0 {
                segments.push(Segment::Literal(rest[..start].to_owned()));
            }
            segments.push(Segment::Code(parse_one(after[..end].trim())?));
            rest = &after[end + 2..];
        }
        if rest.contains("}}") {
            return Err(ShortcodeError::Syntax(crate::core::redact::prefix(rest, 40).to_owned()));
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_owned()));
        }
        Ok(Self(segments))
    }

    /// The shortcodes, in order.
    pub fn shortcodes(&self) -> impl Iterator<Item = &Shortcode> {
        self.0.iter().filter_map(|segment| match segment {
            Segment::Code(code) => Some(code),
            Segment::Literal(_) => None,
        })
    }

    /// The literal texts, in order.
    pub fn literals(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|segment| match segment {
            Segment::Literal(text) => Some(text.as_str()),
            Segment::Code(_) => None,
        })
    }

    /// Whether the value holds any shortcode.
    #[must_use]
    pub fn has_shortcodes(&self) -> bool {
        self.shortcodes().next().is_some()
    }

    /// The value as Clerk gets it: every shortcode with a fallback (`default_fallback` where it
    /// has none), so a missing identity renders that value, never `null` or an empty string.
    #[must_use]
    pub fn render(&self, default_fallback: &str) -> String {
        self.0
            .iter()
            .map(|segment| match segment {
                Segment::Literal(text) => text.clone(),
                Segment::Code(code) => code.render(default_fallback),
            })
            .collect()
    }

    /// The value with every shortcode replaced by `stand_in` (probe tokens signed in memory).
    #[must_use]
    pub fn fill(&self, stand_in: &str) -> String {
        self.0
            .iter()
            .map(|segment| match segment {
                Segment::Literal(text) => text.as_str(),
                Segment::Code(_) => stand_in,
            })
            .collect()
    }

    /// The longest text Clerk can render from it, each shortcode counted at its fallback or
    /// [`MAX_RENDERED_SHORTCODE_BYTES`], whichever is longer.
    #[must_use]
    pub fn max_rendered_len(&self, default_fallback: &str) -> usize {
        self.0
            .iter()
            .map(|segment| match segment {
                Segment::Literal(text) => text.len(),
                Segment::Code(code) => MAX_RENDERED_SHORTCODE_BYTES
                    .max(code.fallback.as_deref().unwrap_or(default_fallback).len()),
            })
            .sum()
    }
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
    Ok(Template::parse(text)?.shortcodes().cloned().collect())
}

/// Parses a value that must be exactly one shortcode (a policy's `clerkShortcode`).
///
/// # Errors
/// When it is not one well-formed shortcode and nothing else.
pub fn parse_single(text: &str) -> Result<Shortcode, ShortcodeError> {
    match Template::parse(text.trim())?.0.as_slice() {
        [Segment::Code(code)] => Ok(code.clone()),
        _ => Err(ShortcodeError::Syntax(crate::core::redact::prefix(text, 80).to_owned())),
    }
}

fn parse_one(inner: &str) -> Result<Shortcode, ShortcodeError> {
    let syntax = || ShortcodeError::Syntax(crate::core::redact::prefix(inner, 80).to_owned());
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
        return Err(ShortcodeError::UnknownRoot(crate::core::redact::prefix(inner, 80).to_owned()));
    }
    Ok(Shortcode { path: path.to_owned(), fallback })
}

/// A quoted fallback: the operator writes every fallback back in single quotes, so it may hold
/// only characters that need no escaping anywhere (no quotes, braces or backslashes).
fn parse_fallback(text: &str) -> Option<String> {
    let quote = text.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let inner = text.strip_prefix(quote)?.strip_suffix(quote)?;
    (!inner.is_empty() && !inner.contains(['\'', '"', '\\', '{', '}', '|'])).then(|| inner.to_owned())
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
        assert!(matches!(parse_all("{{org.slug || ''}}"), Err(ShortcodeError::Syntax(_))));
        assert!(matches!(parse_all("{{org.slug || 'a}}b'}}"), Err(ShortcodeError::Syntax(_))));
        assert!(matches!(parse_all("a}}b"), Err(ShortcodeError::Syntax(_))));
        assert!(matches!(parse_all("{{tenant.id}}"), Err(ShortcodeError::UnknownRoot(_))));
    }

    #[test]
    fn renders_a_fallback_for_every_shortcode_that_has_none() {
        let template = Template::parse("acme_{{user.id}}-{{org.slug || 'solo'}}").unwrap();
        assert_eq!(template.render("_none_"), "acme_{{user.id || '_none_'}}-{{org.slug || 'solo'}}");
        assert_eq!(template.fill("x"), "acme_x-x");
        assert_eq!(template.literals().collect::<Vec<_>>(), ["acme_", "-"]);
        // Whitespace and quotes are the operator's own, whatever was written.
        assert_eq!(Template::parse("{{  org.slug ||\"z\" }}").unwrap().render("_"), "{{org.slug || 'z'}}");
    }

    #[test]
    fn bounds_the_rendered_length_of_each_shortcode() {
        let template = Template::parse("ns_dash_{{user.id}}").unwrap();
        assert_eq!(template.max_rendered_len("_none_"), 8 + MAX_RENDERED_SHORTCODE_BYTES);
    }

    #[test]
    fn knows_the_shortcodes_the_end_user_writes() {
        for writable in ["{{user.unsafe_metadata.org}}", "{{user.unsafe_metadata}}", "{{user.first_name}}"] {
            assert!(parse_single(writable).unwrap().is_user_writable(), "{writable}");
        }
        for backend in
            ["{{user.public_metadata.org}}", "{{user.id}}", "{{org.slug}}", "{{user.unsafe_metadataX}}"]
        {
            assert!(!parse_single(backend).unwrap().is_user_writable(), "{backend}");
        }
    }

    #[test]
    fn a_single_shortcode_is_nothing_but_one_shortcode() {
        assert!(parse_single(" {{org.slug}} ").is_ok());
        assert!(parse_single("x{{org.slug}}").is_err());
        assert!(parse_single("{{org.slug}}{{user.id}}").is_err());
        assert!(parse_single("acme").is_err());
    }
}
