//! Template shortcodes: `{{user.id}}`, `{{org.slug}}`, `{{org.public_metadata.a.b}}`,
//! fallbacks `{{org.slug || 'none'}}`. Unknown shortcodes and missing values are null.
//!
//! A string that is exactly one shortcode becomes the typed value (null, number, object...);
//! shortcodes inside a longer string are interpolated as text (null as the empty string, which is
//! *unconfirmed* against real Clerk). Strings nested anywhere in objects and arrays are rendered.

use serde_json::{Map, Value};

/// Renders every string in `claims` against `context` (`{"user": ..., "org": ...}`).
pub(crate) fn render(claims: &Value, context: &Value) -> Value {
    match claims {
        Value::String(text) => render_string(text, context),
        Value::Array(items) => Value::Array(items.iter().map(|item| render(item, context)).collect()),
        Value::Object(object) => Value::Object(
            object
                .iter()
                .map(|(key, value)| (key.clone(), render(value, context)))
                .collect::<Map<String, Value>>(),
        ),
        other => other.clone(),
    }
}

fn render_string(text: &str, context: &Value) -> Value {
    if let Some(inner) = whole_shortcode(text) {
        return evaluate(inner, context);
    }
    if !text.contains("{{") {
        return Value::String(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(length) = rest[start + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        match evaluate(&rest[start + 2..start + 2 + length], context) {
            Value::Null => {}
            Value::String(value) => out.push_str(&value),
            other => out.push_str(&other.to_string()),
        }
        rest = &rest[start + 2 + length + 2..];
    }
    out.push_str(rest);
    Value::String(out)
}

/// The expression of a string that is exactly `{{ expression }}`.
fn whole_shortcode(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner)
}

/// `a || b || 'literal'`: the first alternative that is neither null nor an empty string, else
/// the last one.
fn evaluate(expression: &str, context: &Value) -> Value {
    let alternatives = split_alternatives(expression);
    let mut value = Value::Null;
    for alternative in alternatives {
        value = operand(alternative.trim(), context);
        let falsy = value.is_null() || value.as_str() == Some("");
        if !falsy {
            break;
        }
    }
    value
}

/// Splits on `||` outside quotes.
fn split_alternatives(expression: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quote: Option<char> = None;
    let mut start = 0;
    let mut previous_pipe = false;
    for (index, character) in expression.char_indices() {
        match (quote, character) {
            (Some(open), _) if character == open => quote = None,
            (None, '\'' | '"') => quote = Some(character),
            (None, '|') if previous_pipe => {
                parts.push(&expression[start..index - 1]);
                start = index + 1;
                previous_pipe = false;
                continue;
            }
            _ => {}
        }
        previous_pipe = quote.is_none() && character == '|';
    }
    parts.push(&expression[start..]);
    parts
}

fn operand(text: &str, context: &Value) -> Value {
    for quote in ['\'', '"'] {
        if let Some(literal) = text.strip_prefix(quote).and_then(|rest| rest.strip_suffix(quote)) {
            return Value::String(literal.to_owned());
        }
    }
    match text {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        "null" => return Value::Null,
        _ => {}
    }
    if let Ok(number) = text.parse::<i64>() {
        return Value::from(number);
    }
    if let Ok(number) = text.parse::<f64>() {
        return Value::from(number);
    }
    lookup(text, context)
}

/// `user.public_metadata.a.b` walked through the context; anything missing is null.
fn lookup(path: &str, context: &Value) -> Value {
    let mut current = context;
    for segment in path.split('.') {
        match current.get(segment.trim()) {
            Some(next) => current = next,
            None => return Value::Null,
        }
    }
    current.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context() -> Value {
        json!({
            "user": {"id": "user_alice", "public_metadata": {"a": {"b": 7}, "tier": ""}},
            "org": {"id": "org_acme", "slug": "acme", "role": "org:admin", "name": "Acme",
                    "public_metadata": {"region": "eu"}},
        })
    }

    #[test]
    fn whole_shortcode_keeps_the_type() {
        let rendered =
            render(&json!({"n": "{{user.public_metadata.a.b}}", "s": "{{ org.slug }}"}), &context());
        assert_eq!(rendered, json!({"n": 7, "s": "acme"}));
    }

    #[test]
    fn unknown_and_missing_become_null() {
        let rendered =
            render(&json!(["{{user.nope}}", "{{session.id}}", "{{org.public_metadata.x}}"]), &context());
        assert_eq!(rendered, json!([null, null, null]));
        let no_org = json!({"user": {"id": "u"}, "org": null});
        assert_eq!(render(&json!("{{org.slug}}"), &no_org), Value::Null);
    }

    #[test]
    fn fallbacks_take_the_first_present_value() {
        let no_org = json!({"user": {"id": "u"}, "org": null});
        assert_eq!(render(&json!("{{org.slug || 'none'}}"), &no_org), json!("none"));
        assert_eq!(render(&json!("{{org.slug || 'none'}}"), &context()), json!("acme"));
        assert_eq!(
            render(&json!("{{user.public_metadata.tier || org.public_metadata.region}}"), &context()),
            json!("eu")
        );
        assert_eq!(render(&json!("{{org.x || \"a||b\"}}"), &context()), json!("a||b"));
        assert_eq!(render(&json!("{{org.x || org.y}}"), &context()), Value::Null);
    }

    #[test]
    fn interpolates_inside_longer_strings_and_nested_values() {
        let claims = json!({
            "scopes": [{"type": "PIPES:READ", "resource": "top_pages",
                        "fixed_params": {"org": "{{org.slug}}", "label": "org-{{org.slug}}-{{org.nope}}!"}}],
            "count": 3,
        });
        let rendered = render(&claims, &context());
        assert_eq!(rendered["scopes"][0]["fixed_params"], json!({"org": "acme", "label": "org-acme-!"}));
        assert_eq!(rendered["scopes"][0]["resource"], json!("top_pages"));
        assert_eq!(rendered["count"], json!(3));
    }

    #[test]
    fn splits_alternatives_outside_quotes() {
        assert_eq!(split_alternatives("a || 'x||y' || b"), vec!["a ", " 'x||y' ", " b"]);
        assert_eq!(split_alternatives("a"), vec!["a"]);
    }
}
