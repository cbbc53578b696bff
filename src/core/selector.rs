//! Label selector matching (`matchLabels`, `matchExpressions`), pure.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A selector the operator cannot evaluate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector: {0}")]
pub struct InvalidSelector(pub String);

/// Whether `labels` match `selector`. The empty selector matches everything.
///
/// # Errors
/// On an unknown operator, or `In`/`NotIn` without values.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> Result<bool, InvalidSelector> {
    for (key, value) in selector.match_labels.iter().flatten() {
        if labels.get(key) != Some(value) {
            return Ok(false);
        }
    }
    for expression in selector.match_expressions.iter().flatten() {
        let values = expression.values.as_deref().unwrap_or_default();
        let actual = labels.get(&expression.key);
        let ok = match operator(expression)? {
            Operator::In => actual.is_some_and(|v| values.contains(v)),
            Operator::NotIn => actual.is_none_or(|v| !values.contains(v)),
            Operator::Exists => actual.is_some(),
            Operator::DoesNotExist => actual.is_none(),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Checks that every expression of a selector can be evaluated, whatever the labels.
///
/// # Errors
/// The first expression [`matches()`] would refuse.
pub fn validate(selector: &LabelSelector) -> Result<(), InvalidSelector> {
    selector.match_expressions.iter().flatten().try_for_each(|expression| operator(expression).map(|_| ()))
}

/// The operators of `matchExpressions`.
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

fn operator(
    expression: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement,
) -> Result<Operator, InvalidSelector> {
    let no_values = expression.values.as_deref().unwrap_or_default().is_empty();
    match expression.operator.as_str() {
        "In" | "NotIn" if no_values => Err(InvalidSelector(format!(
            "{} {} needs at least one value",
            expression.key, expression.operator
        ))),
        "In" => Ok(Operator::In),
        "NotIn" => Ok(Operator::NotIn),
        "Exists" => Ok(Operator::Exists),
        "DoesNotExist" => Ok(Operator::DoesNotExist),
        other => Err(InvalidSelector(format!("unknown operator {other:?} for {}", expression.key))),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn expression(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert_eq!(matches(&LabelSelector::default(), &labels(&[])), Ok(true));
    }

    #[test]
    fn match_labels_and_expressions_all_must_hold() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("tenants", "enabled")])),
            match_expressions: Some(vec![
                expression("tier", "In", &["gold", "silver"]),
                expression("frozen", "DoesNotExist", &[]),
            ]),
        };
        assert_eq!(matches(&selector, &labels(&[("tenants", "enabled"), ("tier", "gold")])), Ok(true));
        assert_eq!(matches(&selector, &labels(&[("tenants", "enabled"), ("tier", "bronze")])), Ok(false));
        assert_eq!(
            matches(&selector, &labels(&[("tenants", "enabled"), ("tier", "gold"), ("frozen", "1")])),
            Ok(false)
        );
        assert_eq!(matches(&selector, &labels(&[("tier", "gold")])), Ok(false));
    }

    #[test]
    fn refuses_unknown_operators() {
        let selector = LabelSelector {
            match_expressions: Some(vec![expression("a", "Like", &["x"])]),
            ..Default::default()
        };
        assert!(matches(&selector, &labels(&[])).is_err());
    }
}
