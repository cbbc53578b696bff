//! The one redaction function: every path that writes text out (status, events, logs, errors,
//! metrics labels) passes it through here first.
//!
//! It removes known secrets given by the caller and anything shaped like a JWT (`eyJ...`) or a
//! Tinybird static token (`p.eyJ...`), since Tinybird echoes tokens in its error bodies.

/// Placeholder that replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// Redacts `secrets` and every token-shaped word from `text`.
#[must_use]
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        if out.contains(secret) {
            out = out.replace(secret, REDACTED);
        }
    }
    redact_token_shapes(&out)
}

/// The first `max_chars` characters of `text`: a user-written part short enough to quote in a
/// message (a refused name or word may be megabytes long).
#[must_use]
pub fn prefix(text: &str, max_chars: usize) -> &str {
    text.char_indices().nth(max_chars).map_or(text, |(end, _)| &text[..end])
}

/// Cuts `text` to at most `max` bytes, on a character boundary (API servers cap condition
/// messages and event notes).
pub fn truncate(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=')
}

fn redact_token_shapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if looks_like_token(word) {
            out.push_str(REDACTED);
        } else if let Some(glued) = glued_token_start(word) {
            // `token=eyJ...`: a token glued to its name by `=` (query strings, env dumps).
            out.push_str(&word[..glued]);
            out.push_str(REDACTED);
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if is_token_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Where a token glued after a `=` starts in `word`, if one is.
fn glued_token_start(word: &str) -> Option<usize> {
    word.match_indices('=').map(|(at, _)| at + 1).find(|&start| looks_like_token(&word[start..]))
}

/// A JWT (`eyJ<...>.<...>.<...>`) or a Tinybird token (`p.eyJ<...>.<...>`), possibly truncated.
fn looks_like_token(word: &str) -> bool {
    let word = word.trim_matches('.');
    let body = word.strip_prefix("p.").unwrap_or(word);
    body.starts_with("eyJ") && body.contains('.') && body.len() >= 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_tinybird_echoed_tokens() {
        let body = "invalid authentication token. Invalid token b'eyJhbGciOiJIUzI1NiJ9.eyJuYW1lIjoiYSJ9.c2ln': Signature has expired";
        let redacted = redact(body, &[]);
        assert_eq!(
            redacted,
            "invalid authentication token. Invalid token b'<redacted>': Signature has expired"
        );
    }

    #[test]
    fn removes_admin_tokens_and_known_secrets() {
        let text = "key p.eyJ1IjoiYWJjIn0.c2lnbmF0dXJl and sk_test_abcdefgh1234 here";
        let redacted = redact(text, &["sk_test_abcdefgh1234"]);
        assert_eq!(redacted, "key <redacted> and <redacted> here");
    }

    #[test]
    fn removes_tokens_glued_to_their_name() {
        let text = "GET /v0/pipes/x.json?token=eyJhbGciOiJIUzI1NiJ9.eyJuYW1lIjoiYSJ9.c2ln&q=1 TB_TOKEN=p.eyJ1IjoiYWJjIn0.c2lnbmF0dXJl";
        assert_eq!(redact(text, &[]), "GET /v0/pipes/x.json?token=<redacted>&q=1 TB_TOKEN=<redacted>");
        assert_eq!(redact("a=b c==d", &[]), "a=b c==d");
    }

    #[test]
    fn truncates_on_a_character_boundary() {
        let mut text = "héllo".to_owned();
        truncate(&mut text, 2);
        assert_eq!(text, "h");
        let mut text = "hello".to_owned();
        truncate(&mut text, 10);
        assert_eq!(text, "hello");
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        let text = "pipe 'top_pages' does not exist (status 404) at https://api.tinybird.co/v0/pipes/x.json";
        assert_eq!(redact(text, &[]), text);
    }
}
