//! Label selectors: whether a set of labels matches a Service's
//! `spec.selector` (equality only) or a workload's `LabelSelector`
//! (matchLabels and matchExpressions).
//!
//! Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::meta::{LabelSet, Labels};

/// `LabelSelector` semantics: every matchLabels pair and every expression
/// must hold. An empty selector matches everything, as in Kubernetes.
pub fn matches(selector: &LabelSelector, labels: &impl LabelSet) -> bool {
    let pairs = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.label(k) == Some(v.as_str()));
    pairs
        && selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.label(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
                "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// A Service's `spec.selector`: every pair must be present. An empty or
/// missing selector selects nothing (the Service's endpoints are managed by
/// hand), as the EndpointSlice controller treats it.
pub fn service_selects(selector: Option<&Labels>, labels: &impl LabelSet) -> bool {
    match selector {
        Some(sel) if !sel.is_empty() => sel.iter().all(|(k, v)| labels.label(k) == Some(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn match_labels_and_expressions_must_all_hold() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["a".into(), "b".into()]),
            }]),
        };
        assert!(matches(&sel, &labels(&[("app", "web"), ("tier", "b")])));
        assert!(!matches(&sel, &labels(&[("app", "web"), ("tier", "c")])));
        assert!(!matches(&sel, &labels(&[("tier", "a")])));
        assert!(matches(&LabelSelector::default(), &labels(&[])));
    }

    #[test]
    fn a_service_without_selector_selects_no_pods() {
        assert!(!service_selects(None, &labels(&[("app", "web")])));
        assert!(service_selects(
            Some(&Labels::from(labels(&[("app", "web")]))),
            &labels(&[("app", "web"), ("x", "y")])
        ));
    }
}
